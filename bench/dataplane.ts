/**
 * `deno task bench:dataplane`: wirescope's WireGuard data plane alone — `listenWireGuard()` with
 * the origin workloads served in its own process (bench/dataplane_server.ts), no proxy layers —
 * against wireguard-go as the server with kernel routing to the same workloads in another process
 * (the ceiling), in one run, on one namespace rig, with one real wireguard-go client. Needs root.
 * `deno task bench` measures the whole proxy (interception, a socket to each origin) instead.
 *
 * A third server takes the echo rows only: mitmproxy-wireguard 0.1.23, the library the
 * mitmproxy-wireguard thesis built and measured (bench/mitmproxy_wireguard_server.py, a TCP echo on
 * its tunnel in a Python process of its own; .venv-mitmproxy-wireguard from
 * scripts/setup_mitmproxy_wireguard.sh, run first unless --no-setup). The thesis's workload is the
 * echo rows' own: 1000-byte messages, sequential round trips on one connection.
 *
 * Prints, and writes to bench/DATAPLANE.md: ping; bulk TCP up and down; sequential 1000-byte
 * round trips (the mitmproxy-wireguard thesis' echo workload); CPU seconds per GB; wirescope's RSS
 * after each further GiB each way (it must stay flat); its idle CPU with a connected peer.
 *
 *   deno task bench:dataplane [--quick] [--profile DIR] [--no-setup]
 * @module
 */
import { generatePrivateKey, publicKeyOf } from "../mod.ts";
import { BenchRig } from "./bench_rig.ts";
import { median } from "./report.ts";
import { withWireguardGoCeiling } from "./servers.ts";
import { udpBound } from "./mitmproxy_server.ts";
import { type ProcessUsage, processUsage } from "./usage.ts";
import { startInNamespace, type WatchedProcess } from "./watched_process.ts";
import { type ClientContext, echoRoundTrips, nsClient, ping } from "./workloads.ts";

const quick = Deno.args.includes("--quick");
const profileDir = Deno.args.includes("--profile")
  ? Deno.args[Deno.args.indexOf("--profile") + 1]
  : undefined;
const REPEAT = quick ? 1 : 3;
const BULK = (quick ? 100 : 400) * 2 ** 20;
const ECHO_COUNTS = quick ? [1_000, 10_000] : [1_000, 10_000, 100_000];
const GIB = 2 ** 30;
const GIB_STEPS = quick ? 1 : 4;
const SERVER_NS = "wsdS", CLIENT_NS = "wsdC";
const PORTS = { wirescope: 51830, "wireguard-go": 51831, "mitmproxy-wireguard": 51832 };
/** The thesis's figures for its echo workload (1000 B, sequential, on localhost, its machine). */
const THESIS = { asyncio: 9_500, "mitmproxy-wireguard": 3_730 };
const TARGET = "10.0.0.1", CLIENT_TUNNEL = "10.0.0.2";
const rig = new BenchRig({
  serverNs: SERVER_NS,
  clientNs: CLIENT_NS,
  serverVeth: "wsdv0",
  clientVeth: "wsdv1",
  serverAddr: "172.31.249.1",
  clientAddr: "172.31.249.2",
  clientWg: "wsdcw0",
  clientTunnel: CLIENT_TUNNEL,
  target: TARGET,
});
const root = new URL("..", import.meta.url).pathname;
const ctx: ClientContext = { ns: CLIENT_NS, target: TARGET, host: "", caFile: "" };
const log = (msg: string) => console.error(`bench:dataplane: ${msg}`);

/** Spawns `cmd` in the server namespace and waits (bounded) until `ready`. */
const startInServerNs = (
  what: string,
  cmd: string[],
  ready: (p: WatchedProcess) => Promise<boolean> | boolean,
) => startInNamespace(SERVER_NS, what, cmd, ready, root);

type Figures = Record<string, number[]>;
/** The 1-minute load average. */
const loadAverage = async () => (await Deno.readTextFile("/proc/loadavg")).split(" ")[0]!;
const echoRow = (n: number) => `echo, ${n.toLocaleString("en")} × 1000 B round trips (per s)`;

/** The workloads, `REPEAT` times; CPU per GB from `usage` around the bulk transfers. */
async function workloads(
  name: string,
  usage: () => ProcessUsage,
  fig: Figures,
  echoOnly = false,
): Promise<void> {
  const push = (k: string, x: number) => (fig[k] ??= []).push(x);
  // Warm-up, not measured (as in `deno task bench`).
  await echoRoundTrips(ctx, 2000, 1000);
  for (let r = 0; r < REPEAT; r++) {
    if (echoOnly) {
      for (const n of ECHO_COUNTS) push(echoRow(n), await echoRoundTrips(ctx, n, 1000));
      log(`${name}: round ${r + 1}/${REPEAT} done`);
      continue;
    }
    push("ping round trip, mean (ms)", await ping(ctx, 500));
    const before = usage().cpuSeconds;
    push("upload (Mbit/s)", (await nsClient(ctx, ["sink", TARGET, "10", String(BULK)], 300)).mbps!);
    push("download (Mbit/s)", (await nsClient(ctx, ["source", TARGET, "19", String(BULK)], 300)).mbps!);
    push("server CPU per GB carried (s)", (usage().cpuSeconds - before) / (2 * BULK / 1e9));
    for (const n of ECHO_COUNTS) {
      push(echoRow(n), await echoRoundTrips(ctx, n, 1000));
    }
    log(`${name}: round ${r + 1}/${REPEAT} done`);
  }
}

async function main(): Promise<void> {
  if (Deno.uid() !== 0) throw new Error("bench:dataplane needs root (network namespaces)");
  if (!Deno.args.includes("--no-setup")) {
    const setup = await new Deno.Command("bash", {
      args: [`${root}scripts/setup_mitmproxy_wireguard.sh`],
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    if (!setup.success) throw new Error("scripts/setup_mitmproxy_wireguard.sh failed");
  }
  const serverKey = generatePrivateKey(), clientKey = generatePrivateKey();
  const serverPub = publicKeyOf(serverKey), clientPub = publicKeyOf(clientKey);
  const dir = await Deno.makeTempDir({ prefix: "wirescope-dataplane-" });
  const clientKeyFile = `${dir}/client.key`;
  await Deno.writeTextFile(clientKeyFile, clientKey + "\n", { mode: 0o600 });
  const results: Record<string, Figures> = { wirescope: {}, "mitmproxy-wireguard": {}, "wireguard-go": {} };
  const notes: string[] = [];
  const loadStart = await loadAverage();
  const mib = (u: ProcessUsage) => (u.rss / 2 ** 20).toFixed(0);
  try {
    await rig.remove();
    await rig.create(clientKeyFile);

    // 1. wirescope: the API with the workloads in its own process.
    await rig.pointClientAt(serverPub, PORTS.wirescope);
    const profile = profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [];
    const ws = await startInServerNs(
      "the wirescope data-plane server",
      [Deno.execPath(), "run", "-A", ...profile, "bench/dataplane_server.ts", String(PORTS.wirescope)]
        .concat([serverKey, clientPub]),
      (p) => udpBound(p.child.pid, PORTS.wirescope),
    );
    const usage = () => processUsage(ws.child.pid);
    try {
      await nsClient(ctx, ["echo", TARGET, "7", "1000"], 60); // handshake
      const start = usage();
      await workloads("wirescope", usage, results.wirescope!);
      const after = usage();
      // Then 1 GiB up and 1 GiB down per step: past warm-up, RSS must not grow with the bytes.
      const steps: ProcessUsage[] = [];
      for (let i = 0; i < GIB_STEPS; i++) {
        await nsClient(ctx, ["sink", TARGET, "10", String(GIB)], 600);
        await nsClient(ctx, ["source", TARGET, "19", String(GIB)], 600);
        steps.push(usage());
      }
      const afterDown = steps.at(-1)!;
      await new Promise((r) => setTimeout(r, 10_000));
      const idle = usage();
      notes.push(
        `wirescope RSS (MiB): ${mib(start)} after the handshake, ${
          mib(after)
        } after the workloads, then after ` +
          `each further 1 GiB up + 1 GiB down: ${steps.map(mib).join(", ")} (peak ${
            (afterDown.peakRss / 2 ** 20).toFixed(0)
          })`,
        `wirescope idle CPU with a connected peer (persistent keepalive 25 s): ${
          ((idle.cpuSeconds - afterDown.cpuSeconds) / 10 * 100).toFixed(2)
        }% of a core over 10 s`,
      );
      if (ws.exited()) throw new Error("the wirescope data-plane server exited during the run");
    } finally {
      await ws.stop();
    }

    // 2. mitmproxy-wireguard: its own echo on its tunnel, the echo rows only.
    await rig.pointClientAt(serverPub, PORTS["mitmproxy-wireguard"]);
    const mw = await startInServerNs(
      "the mitmproxy-wireguard echo server",
      [`${root}.venv-mitmproxy-wireguard/bin/python`, "bench/mitmproxy_wireguard_server.py"]
        .concat([String(PORTS["mitmproxy-wireguard"]), serverKey, clientPub]),
      (p) => p.tail.includes("ready") && udpBound(p.child.pid, PORTS["mitmproxy-wireguard"]),
    );
    try {
      await nsClient(ctx, ["echo", TARGET, "7", "1000"], 60); // handshake
      await workloads(
        "mitmproxy-wireguard",
        () => processUsage(mw.child.pid),
        results["mitmproxy-wireguard"]!,
        true,
      );
      if (mw.exited()) throw new Error("the mitmproxy-wireguard server exited during the run");
      const rss = processUsage(mw.child.pid);
      notes.push(`mitmproxy-wireguard RSS after its workloads: ${mib(rss)} MiB`);
    } finally {
      await mw.stop();
    }
    const failed = mw.tail.find((l) => l.startsWith("stopped after"));
    if (failed && !/\(0 failed\)/.test(failed)) notes.push(`mitmproxy-wireguard: ${failed}`);

    // 3. wireguard-go as the server; the same workloads in a process of their own.
    const setup = {
      ns: SERVER_NS,
      port: PORTS["wireguard-go"],
      serverPrivateKey: serverKey,
      clientPrivateKey: clientKey,
      clientPublicKey: clientPub,
      dir,
      clientTunnelAddress: CLIENT_TUNNEL,
    };
    await withWireguardGoCeiling(setup, async (wg) => {
      await rig.pointClientAt(serverPub, PORTS["wireguard-go"]);
      await nsClient(ctx, ["echo", TARGET, "7", "1000"], 60);
      await workloads("wireguard-go", () => processUsage(wg.pid), results["wireguard-go"]!);
    });
  } finally {
    await rig.remove();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }

  const fmt = (x: number) => (x >= 100 ? Math.round(x).toLocaleString("en") : x.toPrecision(3));
  const span = (xs: number[]) =>
    xs.length === 1
      ? fmt(xs[0]!)
      : `${fmt(Math.min(...xs))} / **${fmt(median(xs))}** / ${fmt(Math.max(...xs))}`;
  const rows = Object.keys(results.wirescope!);
  const ratio = (a: number[] | undefined, b: number[] | undefined) =>
    a?.length && b?.length ? `${(median(a) / median(b)).toFixed(2)}×` : "—";
  const cell = (xs: number[] | undefined) => (xs?.length ? span(xs) : "—");
  const mw = results["mitmproxy-wireguard"]!, ceiling = results["wireguard-go"]!;
  const echo1k = (name: string) => results[name]![echoRow(ECHO_COUNTS.at(-1)!)];
  const text = [
    "# Data plane: wirescope's listenWireGuard() vs mitmproxy-wireguard vs wireguard-go as the server",
    "",
    `Written by \`deno task bench:dataplane${quick ? " --quick" : ""}\` on ${new Date().toISOString()} ` +
    `(${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}). One wireguard-go client in a ` +
    "namespace; the workloads of tests/origin.ts served in wirescope's own process, and for wireguard-go " +
    "in a Deno process of their own reached through kernel routing; mitmproxy-wireguard 0.1.23 serves its own " +
    "TCP echo (bench/mitmproxy_wireguard_server.py, Python 3.11 asyncio) and takes the echo rows only. " +
    `Cells: min / **median** / max of ${REPEAT}; bulk ${BULK / 2 ** 20} MiB each way.`,
    "",
    "| workload | wirescope | mitmproxy-wireguard 0.1.23 | wireguard-go (ceiling) | wirescope ÷ ceiling | " +
    "wirescope ÷ mitmproxy-wireguard |",
    "| --- | --- | --- | --- | --- | --- |",
    ...rows.map((row) => {
      const a = results.wirescope![row]!;
      return `| ${row} | ${span(a)} | ${cell(mw[row])} | ${cell(ceiling[row])} | ${
        ratio(a, ceiling[row])
      } | ${ratio(a, mw[row])} |`;
    }),
    "",
    `- The mitmproxy-wireguard thesis's own echo benchmark (1000-byte messages, sequential round trips on ` +
    `localhost, its machine): asyncio alone ${THESIS.asyncio.toLocaleString("en")}/s, mitmproxy-wireguard ` +
    `${THESIS["mitmproxy-wireguard"].toLocaleString("en")}/s (${
      (THESIS["mitmproxy-wireguard"] / THESIS.asyncio).toFixed(2)
    } of asyncio). Here, the same workload through a real WireGuard client in another namespace ` +
    `(${ECHO_COUNTS.at(-1)!.toLocaleString("en")} round trips, medians): wirescope ${
      fmt(median(echo1k("wirescope") ?? [0]))
    }/s, mitmproxy-wireguard ${fmt(median(echo1k("mitmproxy-wireguard") ?? [0]))}/s, wireguard-go + kernel ${
      fmt(median(echo1k("wireguard-go") ?? [0]))
    }/s.`,
    ...notes.map((n) => `- ${n}`),
    `- Machine load (1-minute load average, /proc/loadavg) at the start ${loadStart} and the end ${await loadAverage()} ` +
    `of the run, on ${navigator.hardwareConcurrency} cores shared with other work: figures vary with it.`,
    "",
  ].join("\n");
  console.log(text);
  await Deno.writeTextFile(`${root}bench/DATAPLANE.md`, text);
  // In the repository's markdown style (deno fmt --check in `deno task ok`).
  await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", `${root}bench/DATAPLANE.md`] }).output();
  log("wrote bench/DATAPLANE.md");
}

if (import.meta.main) await main();
