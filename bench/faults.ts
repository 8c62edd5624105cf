/**
 * `deno task bench:faults`: 100 MiB through the tunnel each way, behind the seeded impairment
 * relay (tests/impair_relay.ts) at each setting — none, 1% and 5% loss, reordering, duplication,
 * 50 ms delay — for wirescope's data plane (`listenWireGuard()` serving the origin workloads in
 * its own process, bench/dataplane_server.ts) and for wireguard-go as the server with kernel
 * routing to the same workloads, through the same relay, on one namespace rig with one real
 * wireguard-go client. Every transfer is checked with sha256 (a figure measured over corrupt
 * bytes is not a result). Needs root. Prints, and writes to bench/FAULTS.md, the throughput.
 *
 *   deno task bench:faults [--quick] [--mib N] [--only NAME,...] [--servers wirescope,wireguard-go]
 *
 * The relay runs in the server namespace, in a process of its own: the client's endpoint is the
 * relay, the relay forwards to the server on the namespace's loopback.
 * @module
 */
import { generatePrivateKey, publicKeyOf } from "../mod.ts";
import {
  type ImpairSettings,
  NO_IMPAIRMENT,
  type RelayStats,
  startImpairRelay,
} from "../tests/impair_relay.ts";
import { BenchRig } from "./bench_rig.ts";
import { udpBound } from "./mitmproxy_server.ts";
import { withWireguardGoCeiling } from "./servers.ts";
import { startInNamespace, type WatchedProcess } from "./watched_process.ts";
import { type ClientContext, nsClient } from "./workloads.ts";

/** One impairment setting of the bench. */
export interface FaultSetting {
  name: string;
  label: string;
  settings: Partial<ImpairSettings>;
}

/** The settings, in the order they run; each applies to both directions. */
export const FAULT_SETTINGS: FaultSetting[] = [
  { name: "none", label: "relay, no impairment", settings: {} },
  { name: "loss1", label: "1% loss", settings: { loss: 0.01 } },
  { name: "loss5", label: "5% loss", settings: { loss: 0.05 } },
  { name: "reorder", label: "5% held back 5 ms (reordered)", settings: { reorder: 0.05, reorderMs: 5 } },
  { name: "dup", label: "5% duplicated", settings: { duplicate: 0.05 } },
  { name: "delay", label: "50 ms delay each way (100 ms round trip)", settings: { delayMs: 50 } },
];

const argValue = (name: string) => {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : undefined;
};
const quick = Deno.args.includes("--quick");
const MIB = Number(argValue("mib") ?? (quick ? 20 : 100));
const BYTES = MIB * 2 ** 20;
const only = argValue("only")?.split(",");
const servers = (argValue("servers") ?? "wirescope,wireguard-go").split(",");
const SEED = 20261126;
const SERVER_NS = "wsfS", CLIENT_NS = "wsfC";
const PORTS = { wirescope: 51840, "wireguard-go": 51841 };
const TARGET = "10.0.0.1", CLIENT_TUNNEL = "10.0.0.2";
const rig = new BenchRig({
  serverNs: SERVER_NS,
  clientNs: CLIENT_NS,
  serverVeth: "wsfv0",
  clientVeth: "wsfv1",
  serverAddr: "172.31.251.1",
  clientAddr: "172.31.251.2",
  clientWg: "wsfcw0",
  clientTunnel: CLIENT_TUNNEL,
  target: TARGET,
});
const root = new URL("..", import.meta.url).pathname;
const ctx: ClientContext = { ns: CLIENT_NS, target: TARGET, host: "", caFile: "" };
const log = (msg: string) => console.error(`bench:faults: ${msg}`);

/** Spawns `cmd` in the server namespace and waits (bounded) until `ready`. */
const startInServerNs = (
  what: string,
  cmd: string[],
  ready: (p: WatchedProcess) => Promise<boolean> | boolean,
) => startInNamespace(SERVER_NS, what, cmd, ready, root);

/** A small echo, retried (bounded) until it works: the handshake (lost datagrams are retried every 5 s). */
async function handshake(): Promise<void> {
  let last = "";
  for (let i = 0; i < 8; i++) {
    try {
      const r = await nsClient(ctx, ["echo", TARGET, "7", "1000"], 15);
      if (r.sent === r.got) return;
    } catch (e) {
      last = (e as Error).message;
    }
  }
  throw new Error(`no echo through the tunnel: ${last}`);
}

/** One result row. */
interface Row {
  server: string;
  setting: string;
  downMbps: number;
  upMbps: number;
  relay: RelayStats;
}

/** The settings for `server`, each behind a fresh relay; the client is pointed at each relay. */
async function runSettings(server: string, port: number, serverPub: string, rows: Row[]): Promise<void> {
  for (const f of FAULT_SETTINGS) {
    if (only && !only.includes(f.name)) continue;
    const relay = await startImpairRelay({
      netns: SERVER_NS,
      listen: `${rig.names.serverAddr}:0`,
      upstream: `127.0.0.1:${port}`,
      ...NO_IMPAIRMENT,
      seed: SEED,
      ...f.settings,
    });
    try {
      await rig.pointClientAt(serverPub, relay.port);
      await handshake();
      // Timeouts allow for ~0.5 Mbit/s: slower than that is a failure, not a figure.
      const limit = 60 + BYTES / 60_000;
      const down = await nsClient(ctx, ["download", TARGET, "19", String(BYTES)], limit) as unknown as {
        bytes: number;
        seconds: number;
        got: string;
        want: string;
      };
      if (down.bytes !== BYTES || down.got !== down.want) {
        throw new Error(`${server}, ${f.label}: download arrived corrupt: ${JSON.stringify(down)}`);
      }
      const up = await nsClient(ctx, ["upload", TARGET, "9", String(BYTES)], limit) as unknown as {
        sent: string;
        reply: string;
        seconds: number;
      };
      if (up.reply !== up.sent) {
        throw new Error(`${server}, ${f.label}: upload arrived corrupt: ${JSON.stringify(up)}`);
      }
      const mbps = (s: number) => BYTES * 8 / s / 1e6;
      const stats = await relay.stop();
      rows.push({
        server,
        setting: f.name,
        downMbps: mbps(down.seconds),
        upMbps: mbps(up.seconds),
        relay: stats,
      });
      log(
        `${server}, ${f.label}: down ${mbps(down.seconds).toFixed(1)} Mbit/s, up ${
          mbps(up.seconds).toFixed(1)
        } Mbit/s; relay ${JSON.stringify(stats)}`,
      );
    } finally {
      await relay.stop().catch(() => {});
    }
  }
}

async function main(): Promise<void> {
  if (Deno.uid() !== 0) throw new Error("bench:faults needs root (network namespaces)");
  const serverKey = generatePrivateKey(), clientKey = generatePrivateKey();
  const serverPub = publicKeyOf(serverKey), clientPub = publicKeyOf(clientKey);
  const dir = await Deno.makeTempDir({ prefix: "wirescope-faults-" });
  const clientKeyFile = `${dir}/client.key`;
  await Deno.writeTextFile(clientKeyFile, clientKey + "\n", { mode: 0o600 });
  const rows: Row[] = [];
  const t0 = performance.now();
  const loadAverage = () => Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
  const commit =
    (await new Deno.Command("git", { args: ["rev-parse", "--short", "HEAD"], cwd: root }).output()
      .then((o) => new TextDecoder().decode(o.stdout).trim()).catch(() => "")) || "unknown";
  const loadBefore = loadAverage();
  try {
    await rig.remove();
    await rig.create(clientKeyFile);
    if (servers.includes("wirescope")) {
      const ws = await startInServerNs(
        "the wirescope data-plane server",
        [
          Deno.execPath(),
          "run",
          "-A",
          "bench/dataplane_server.ts",
          String(PORTS.wirescope),
          serverKey,
          clientPub,
        ],
        (p) => udpBound(p.child.pid, PORTS.wirescope),
      );
      try {
        await runSettings("wirescope", PORTS.wirescope, serverPub, rows);
        if (ws.exited()) throw new Error("the wirescope data-plane server exited during the run");
      } finally {
        await ws.stop();
      }
    }
    if (servers.includes("wireguard-go")) {
      const setup = {
        ns: SERVER_NS,
        port: PORTS["wireguard-go"],
        serverPrivateKey: serverKey,
        clientPrivateKey: clientKey,
        clientPublicKey: clientPub,
        dir,
        clientTunnelAddress: CLIENT_TUNNEL,
      };
      await withWireguardGoCeiling(
        setup,
        () => runSettings("wireguard-go", PORTS["wireguard-go"], serverPub, rows),
      );
    }
  } finally {
    await rig.remove();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }

  const cell = (server: string, name: string, k: "downMbps" | "upMbps") => {
    const r = rows.find((r) => r.server === server && r.setting === name);
    return r ? r[k].toFixed(r[k] >= 100 ? 0 : 1) : "—";
  };
  const drops = rows.reduce((n, r) => n + r.relay.kernelDrops + r.relay.overflow + r.relay.sendErrors, 0);
  const text = [
    "# Faults: throughput through the impairment relay, wirescope vs wireguard-go as the server",
    "",
    `Written by \`deno task bench:faults${Deno.args.length ? " " + Deno.args.join(" ") : ""}\` on ${
      new Date().toISOString()
    } ` +
    `(${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}, ${
      ((performance.now() - t0) / 60_000).toFixed(1)
    } min). ` +
    `One wireguard-go client in a namespace sends through tests/impair_relay.ts (seed ${SEED}, its own ` +
    "process, in the server's namespace) to wirescope's `listenWireGuard()` (bench/dataplane_server.ts: the " +
    "workloads served in its own process, TCP ended by the wasm core's smoltcp) or to wireguard-go with kernel " +
    `routing to the same workloads (TCP ended by Linux). ${MIB} MiB each way per cell, one run; every ` +
    "transfer arrived intact (sha256 of the bytes received equals the sender's; a mismatch ends the bench). " +
    "Impairments apply to every datagram in both directions, so handshakes and ACKs are impaired too. " +
    `Commit ${commit}; load average ${loadBefore} at the start, ${loadAverage()} at the end (other work on ` +
    "the machine shares its cores; figures vary with it).",
    "",
    "| setting | wirescope down (Mbit/s) | wireguard-go down | wirescope up (Mbit/s) | wireguard-go up |",
    "| --- | --- | --- | --- | --- |",
    ...FAULT_SETTINGS.filter((f) => !only || only.includes(f.name)).map((f) =>
      `| ${f.label} | ${cell("wirescope", f.name, "downMbps")} | ${
        cell("wireguard-go", f.name, "downMbps")
      } | ${cell("wirescope", f.name, "upMbps")} | ${cell("wireguard-go", f.name, "upMbps")} |`
    ),
    "",
    "Down: the server sends (for wirescope, smoltcp's sender and loss recovery); up: the client's Linux sends.",
    `Datagrams the relay lost that were not configured (kernel queue, its own queue, refused sends): ${drops}.`,
    "",
  ].join("\n");
  console.log(text);
  if (!only && MIB >= 100) {
    await Deno.writeTextFile(`${root}bench/FAULTS.md`, text);
    log("wrote bench/FAULTS.md");
  } else {
    log("a partial run: bench/FAULTS.md left as it is");
  }
}

if (import.meta.main) await main();
