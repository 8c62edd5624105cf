/**
 * `deno task bench:peers`: many real WireGuard devices at once. `--peers` (default 20) client
 * namespaces, each with its own wireguard-go interface, keys and tunnel address, all send small
 * HTTPS requests at the same time (h2load --h1, `--conns` keep-alive connections each, for
 * `--seconds`) through one server: wirescope's CLI (`--peers N`, the keys written beforehand) and
 * then wireguard-go with kernel routing (no interception: the ceiling), in the same run against
 * the same nginx origin. Prints aggregate req/s, p50/p99 over every request of every client,
 * handshakes, and the server's RSS and CPU.
 *
 *   deno task bench:peers [--peers 20] [--seconds 10] [--conns 1] [--servers wirescope,wireguard-go]
 *                         [--json FILE]
 *
 * Rig: namespace `wspS` holds the server, the origins (on 10.0.0.1, local there) and a bridge on
 * 172.31.232.1/24; client `i` is namespace `wspC<i>` on 172.31.232.<10+i>, WireGuard interface
 * `wspw<i>`, tunnel address 10.0.0.<i+2> (the CLI's plan for client i+1). Needs root, nginx,
 * h2load, wireguard-go and wg (scripts/setup_bench.sh installs them).
 * @module
 */
import { parseArgs } from "node:util";
import { generatePrivateKey, publicKeyOf } from "../src/core/keys.ts";
import { sh } from "../tests/rig.ts";
import { udpBound } from "./mitmproxy_server.ts";
import { startOrigins } from "./origins.ts";
import { processUsage } from "./usage.ts";
import { spawnWatched, type WatchedProcess } from "./watched_process.ts";

const { values } = parseArgs({
  options: {
    peers: { type: "string", default: "20" },
    seconds: { type: "string", default: "10" },
    conns: { type: "string", default: "1" },
    servers: { type: "string", default: "wirescope,wireguard-go" },
    json: { type: "string" },
  },
});
const PEERS = Number(values.peers), SECONDS = Number(values.seconds), CONNS = Number(values.conns);
const SERVERS = values.servers.split(",");
if (!(PEERS >= 1 && PEERS <= 200 && SECONDS > 0 && CONNS >= 1)) throw new Error("bad arguments");
for (const s of SERVERS) {
  if (s !== "wirescope" && s !== "wireguard-go") throw new Error(`unknown server ${s}`);
}

const SERVER_NS = "wspS", BRIDGE = "wspbr0", SERVER_ADDR = "172.31.232.1", TARGET = "10.0.0.1";
const HOST = "bench.test", SERVER_WG = "wspsw0", MiB = 1024 * 1024;
const PORTS: Record<string, number> = { wirescope: 51850, "wireguard-go": 51851 };
const root = new URL("..", import.meta.url).pathname;

interface Client {
  ns: string;
  wg: string;
  privateKey: string;
  tunnel: string;
}

const clients: Client[] = Array.from({ length: PEERS }, (_, i) => ({
  ns: `wspC${i}`,
  wg: `wspw${i}`,
  privateKey: generatePrivateKey(),
  tunnel: `10.0.0.${i + 2}`,
}));

const inNs = (ns: string, cmd: string[], opts?: { allowFail?: boolean }) =>
  sh(["ip", "netns", "exec", ns, ...cmd], opts);

function log(text: string): void {
  console.error(`[peers ${new Date().toISOString().slice(11, 19)}] ${text}`);
}

function loadAverage(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

async function removeRig(): Promise<void> {
  for (const c of clients) {
    await inNs(c.ns, ["ip", "link", "del", c.wg], { allowFail: true });
    await sh(["ip", "netns", "del", c.ns], { allowFail: true });
    await Deno.remove(`/etc/netns/${c.ns}`, { recursive: true }).catch(() => {});
  }
  await inNs(SERVER_NS, ["ip", "link", "del", SERVER_WG], { allowFail: true });
  await sh(["ip", "netns", "del", SERVER_NS], { allowFail: true });
}

async function makeRig(dir: string): Promise<void> {
  await sh(["ip", "netns", "add", SERVER_NS]);
  await inNs(SERVER_NS, ["ip", "link", "set", "lo", "up"]);
  await inNs(SERVER_NS, ["ip", "addr", "add", `${TARGET}/32`, "dev", "lo"]);
  await inNs(SERVER_NS, ["ip", "link", "add", BRIDGE, "type", "bridge"]);
  await inNs(SERVER_NS, ["ip", "addr", "add", `${SERVER_ADDR}/24`, "dev", BRIDGE]);
  await inNs(SERVER_NS, ["ip", "link", "set", BRIDGE, "up"]);
  for (const [i, c] of clients.entries()) {
    await sh(["ip", "netns", "add", c.ns]);
    await sh(["ip", "link", "add", `wspv${i}`, "netns", SERVER_NS, "type", "veth", "peer", "name", "eth0"]
      .concat(["netns", c.ns]));
    await inNs(SERVER_NS, ["ip", "link", "set", `wspv${i}`, "master", BRIDGE, "up"]);
    await inNs(c.ns, ["ip", "addr", "add", `172.31.232.${10 + i}/24`, "dev", "eth0"]);
    await inNs(c.ns, ["ip", "link", "set", "eth0", "up"]);
    await inNs(c.ns, ["ip", "link", "set", "lo", "up"]);
    await Deno.mkdir(`/etc/netns/${c.ns}`, { recursive: true });
    await Deno.writeTextFile(`/etc/netns/${c.ns}/hosts`, `127.0.0.1 localhost\n${TARGET} ${HOST}\n`);
    await inNs(c.ns, ["env", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "wireguard-go", c.wg]);
    const keyFile = `${dir}/client${i}.key`;
    await Deno.writeTextFile(keyFile, c.privateKey + "\n", { mode: 0o600 });
    await inNs(c.ns, ["wg", "set", c.wg, "private-key", keyFile]);
    await inNs(c.ns, ["ip", "addr", "add", `${c.tunnel}/32`, "dev", c.wg]);
    await inNs(c.ns, ["ip", "link", "set", c.wg, "mtu", "1420", "up"]);
    await inNs(c.ns, ["ip", "route", "add", "default", "dev", c.wg]);
  }
}

/** Points every client's one peer at a server (removed and added again: no old session kept). */
async function pointClients(serverPublicKey: string, port: number): Promise<void> {
  await Promise.all(clients.map(async (c) => {
    await inNs(c.ns, ["wg", "set", c.wg, "peer", serverPublicKey, "remove"]);
    await inNs(
      c.ns,
      ["wg", "set", c.wg, "peer", serverPublicKey, "endpoint", `${SERVER_ADDR}:${port}`]
        .concat(["allowed-ips", "0.0.0.0/0"]),
    );
  }));
}

interface Running {
  proc: WatchedProcess;
  caFile: string;
  stop(): Promise<void>;
}

async function waitBound(proc: WatchedProcess, port: number, what: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (!(await udpBound(proc.child.pid, port))) {
    if (proc.exited() || Date.now() > deadline) {
      await proc.stop();
      throw new Error(`${what} did not bind UDP ${port}: ${proc.tail.slice(-20).join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function startWirescope(dir: string, serverKey: string, caFile: string): Promise<Running> {
  const confdir = `${dir}/wirescope`;
  await Deno.mkdir(confdir, { recursive: true });
  await Deno.writeTextFile(
    `${confdir}/wireguard.json`,
    JSON.stringify({
      serverPrivateKey: serverKey,
      clientPrivateKeys: clients.map((c) => c.privateKey),
      ulaPrefix: "fd77:6273:6265:6e63",
    }),
    { mode: 0o600 },
  );
  const proc = spawnWatched([
    "ip",
    "netns",
    "exec",
    SERVER_NS,
    Deno.execPath(),
    "run",
    "-A",
    "mod.ts",
    "--mode",
    `wireguard@${PORTS.wirescope}`,
    "--peers",
    String(PEERS),
    "--confdir",
    confdir,
    "--upstream-ca",
    caFile,
    "--allow-local-destinations",
    "-q",
  ], { cwd: root, env: {}, tailLines: 100 });
  await waitBound(proc, PORTS.wirescope!, "wirescope");
  return { proc, caFile: `${confdir}/wirescope-ca-cert.pem`, stop: proc.stop };
}

async function startWireguardGo(dir: string, serverKey: string, originCa: string): Promise<Running> {
  await inNs(SERVER_NS, ["ip", "link", "del", SERVER_WG], { allowFail: true });
  const proc = spawnWatched(["ip", "netns", "exec", SERVER_NS, "wireguard-go", "-f", SERVER_WG], {
    cwd: root,
    env: { WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: "1" },
    tailLines: 100,
  });
  const deadline = Date.now() + 20_000;
  while (!(await inNs(SERVER_NS, ["ip", "link", "show", SERVER_WG]).then(() => true, () => false))) {
    if (proc.exited() || Date.now() > deadline) throw new Error("wireguard-go made no interface");
    await new Promise((r) => setTimeout(r, 100));
  }
  const keyFile = `${dir}/server.key`;
  await Deno.writeTextFile(keyFile, serverKey + "\n", { mode: 0o600 });
  const peerArgs = clients.flatMap((
    c,
  ) => ["peer", publicKeyOf(c.privateKey), "allowed-ips", `${c.tunnel}/32`]);
  await inNs(
    SERVER_NS,
    ["wg", "set", SERVER_WG, "private-key", keyFile, "listen-port", String(PORTS["wireguard-go"])]
      .concat(peerArgs),
  );
  await inNs(SERVER_NS, ["ip", "link", "set", SERVER_WG, "mtu", "1420", "up"]);
  for (const c of clients) await inNs(SERVER_NS, ["ip", "route", "add", `${c.tunnel}/32`, "dev", SERVER_WG]);
  await waitBound(proc, PORTS["wireguard-go"]!, "wireguard-go");
  return {
    proc,
    caFile: originCa,
    stop: async () => {
      await proc.stop();
      await inNs(SERVER_NS, ["ip", "link", "del", SERVER_WG], { allowFail: true });
    },
  };
}

/** One curl per client until each gets the small file, verified against `caFile` (bounded). */
async function warmUp(caFile: string): Promise<number> {
  const t0 = performance.now();
  await Promise.all(clients.map(async (c) => {
    let last = "";
    for (let i = 0; i < 30; i++) {
      const out = await new Deno.Command("ip", {
        args: ["netns", "exec", c.ns, "curl", "-sS", "--fail", "-m", "5", "--cacert", caFile]
          .concat([`https://${HOST}/small.txt`]),
        stdout: "null",
        stderr: "piped",
      }).output();
      if (out.success) return;
      last = new TextDecoder().decode(out.stderr).trim();
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`${c.ns}: no HTTPS through the tunnel: ${last}`);
  }));
  return performance.now() - t0;
}

/** Clients whose interface reports a completed handshake. */
async function handshakes(): Promise<number> {
  const done = await Promise.all(clients.map(async (c) => {
    const out = await inNs(c.ns, ["wg", "show", c.wg, "latest-handshakes"], { allowFail: true });
    return out.split("\n").some((l) => Number(l.split("\t")[1] ?? 0) > 0);
  }));
  return done.filter(Boolean).length;
}

/** h2load in every client namespace at once; merged figures. */
async function loadAll(dir: string): Promise<Record<string, number>> {
  const runs = await Promise.all(clients.map(async (c, i) => {
    const logFile = `${dir}/h2load${i}.tsv`;
    const out = await new Deno.Command("ip", {
      args: ["netns", "exec", c.ns, "timeout", String(SECONDS + 60), "h2load", "--h1", "-c", String(CONNS)]
        .concat(["-D", String(SECONDS), `--log-file=${logFile}`, `https://${HOST}/small.txt`]),
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const done = /requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/
      .exec(text);
    const rps = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(text);
    if (!done || !rps) throw new Error(`${c.ns}: h2load printed no summary: ${text.slice(-400)}`);
    const latencies = (await Deno.readTextFile(logFile)).split("\n").filter((l) => l !== "")
      .map((l) => l.split("\t")).filter((f) => Number(f[1]) === 200).map((f) => Number(f[2]) / 1000);
    return { ok: Number(done[2]), failed: Number(done[3]) + Number(done[4]), rps: Number(rps[1]), latencies };
  }));
  const all = runs.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const pct = (p: number) => all[Math.min(all.length - 1, Math.floor(p * all.length))] ?? NaN;
  const perClient = runs.map((r) => r.rps).sort((a, b) => a - b);
  return {
    requests: runs.reduce((a, r) => a + r.ok, 0),
    failed: runs.reduce((a, r) => a + r.failed, 0),
    rps: runs.reduce((a, r) => a + r.rps, 0),
    p50Ms: pct(0.5),
    p99Ms: pct(0.99),
    slowestClientRps: perClient[0]!,
    fastestClientRps: perClient.at(-1)!,
  };
}

async function main(): Promise<void> {
  if (Deno.uid() !== 0) throw new Error("bench:peers needs root (network namespaces)");
  const dir = await Deno.makeTempDir({ prefix: "wirescope-peers-" });
  await Deno.chmod(dir, 0o755);
  let running: Running | undefined;
  let closeOrigins: (() => Promise<void>) | undefined;
  const teardown = async () => {
    await running?.stop().catch(() => {});
    await closeOrigins?.().catch(() => {});
    await removeRig();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const onSignal = async () => {
    await teardown();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const results: Record<string, Record<string, number | string>> = {};
  try {
    await removeRig();
    log(`making ${PEERS} client namespaces`);
    await makeRig(dir);
    const origins = await startOrigins(SERVER_NS, TARGET, { bigSize: MiB, lifetimeSeconds: 1800 });
    closeOrigins = origins.close;
    const serverKey = generatePrivateKey();
    for (const name of SERVERS) {
      log(`${name}: starting`);
      running = name === "wirescope"
        ? await startWirescope(`${dir}/${name}`, serverKey, origins.caFile)
        : await startWireguardGo(dir, serverKey, origins.caFile);
      const pid = running.proc.child.pid;
      const idle = processUsage(pid);
      await pointClients(publicKeyOf(serverKey), PORTS[name]!);
      const warmMs = await warmUp(running.caFile);
      const up = await handshakes();
      const before = processUsage(pid);
      const load0 = loadAverage();
      log(`${name}: ${up} of ${PEERS} handshakes, all peers served in ${warmMs.toFixed(0)} ms; loading`);
      const r = await loadAll(`${dir}`);
      const after = processUsage(pid);
      results[name] = {
        ...r,
        handshakes: up,
        firstRequestAllPeersMs: warmMs,
        rssIdleMiB: idle.rss / MiB,
        rssPeersUpMiB: before.rss / MiB,
        rssAfterMiB: after.rss / MiB,
        rssPeakMiB: after.peakRss / MiB,
        rssPerPeerKiB: (before.rss - idle.rss) / PEERS / 1024,
        cpuUsPerRequest: (after.cpuSeconds - before.cpuSeconds) * 1e6 / r.requests!,
        loadBefore: load0,
        loadAfter: loadAverage(),
      };
      log(`${name}: ${r.rps!.toFixed(0)} req/s, p99 ${r.p99Ms!.toFixed(1)} ms, ${r.failed} failed`);
      await running.stop();
      running = undefined;
    }
  } finally {
    await teardown();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
  report(results);
}

function report(results: Record<string, Record<string, number | string>>): void {
  const names = Object.keys(results);
  const f = (v: number | string | undefined, d = 1) =>
    typeof v === "number" ? v.toLocaleString("en", { maximumFractionDigits: d }) : String(v ?? "");
  const rows: [string, string, number][] = [
    ["aggregate req/s", "rps", 0],
    ["p50 latency, all requests (ms)", "p50Ms", 1],
    ["p99 latency, all requests (ms)", "p99Ms", 1],
    ["slowest / fastest client req/s", "slowestClientRps", 0],
    ["failed requests", "failed", 0],
    ["clients with a handshake", "handshakes", 0],
    ["first HTTPS request on every client, all done (ms)", "firstRequestAllPeersMs", 0],
    ["server RSS before any peer connected (MiB)", "rssIdleMiB", 1],
    ["server RSS with all peers up (MiB)", "rssPeersUpMiB", 1],
    ["server RSS per peer, up minus before (KiB)", "rssPerPeerKiB", 0],
    ["server RSS after the load / peak (MiB)", "rssAfterMiB", 1],
    ["server CPU per request (µs)", "cpuUsPerRequest", 0],
    ["load average before / after", "loadBefore", 0],
  ];
  const cell = (name: string, key: string, d: number) => {
    const r = results[name]!;
    if (key === "slowestClientRps") return `${f(r.slowestClientRps, 0)} / ${f(r.fastestClientRps, 0)}`;
    if (key === "rssAfterMiB") return `${f(r.rssAfterMiB)} / ${f(r.rssPeakMiB)}`;
    if (key === "loadBefore") return `${r.loadBefore} / ${r.loadAfter}`;
    return f(r[key], d);
  };
  console.log([
    `# ${PEERS} real WireGuard peers (wireguard-go, one namespace each), small HTTPS GETs at once ` +
    `(h2load --h1, ${CONNS} conn. each, ${SECONDS} s)`,
    "",
    `| | ${names.join(" | ")} |`,
    `|---|${names.map(() => "---:").join("|")}|`,
    ...rows.map(([label, key, d]) => `| ${label} | ${names.map((n) => cell(n, key, d)).join(" | ")} |`),
  ].join("\n"));
  if (values.json) Deno.writeTextFileSync(values.json, JSON.stringify(results, null, 1));
}

if (import.meta.main) await main();
