/**
 * `deno task bench`: wirescope's WireGuard mode against mitmproxy's WireGuard mode and against
 * wireguard-go with kernel routing (no interception: the ceiling), one after the other in one
 * run, on one namespace rig, with one real wireguard-go client, against the same origins.
 * Needs root; runs scripts/setup_bench.sh first (packages, mitmproxy, matplotlib).
 *
 * Rig: namespace `wsbS` (the server under test and the origins) and `wsbC` (the client) joined by
 * a veth pair on 172.31.250.0/30. The tunnel's target 10.0.0.1 is an address on `wsbS`'s
 * loopback where the origins listen (nginx HTTPS, iperf3, tests/origin.ts): the proxies connect
 * to it as to any local address, and wireguard-go's packets to it are delivered locally. The
 * client (`wsbcw0`, 10.0.0.2, every route through the tunnel) keeps its keys; between servers only
 * its peer is removed and added again with the new endpoint.
 *
 *   deno task bench [--quick] [--servers wirescope,mitmproxy,wireguard-go] [--wirescope-library]
 *                   [--profile DIR] [--no-setup]
 *                   [--workloads ping,echo,iperf,bidir,wrk,download,h2,h2download,hosts]
 *     --quick              fewer repetitions and shorter workloads (for development)
 *     --servers            which servers to measure (default all: wirescope, mitmproxy12, mitmproxy,
 *                          wireguard-go)
 *     --wirescope-library  run wirescope through bench/wirescope_server.ts instead of the CLI
 *     --profile DIR        write a V8 CPU profile of the wirescope server into DIR
 *     --no-setup           skip scripts/setup_bench.sh
 *     --workloads          run only these workloads (default all); their rows replace those of the
 *                          previous bench/results.json, the other rows are kept (a note says so)
 *
 * Writes bench/RESULTS.md (also printed), bench/results.json and bench/results.png.
 * @module
 */
import { generatePrivateKey, publicKeyOf } from "../src/core/keys.ts";
import { BenchRig } from "./bench_rig.ts";
import { startOrigins } from "./origins.ts";
import { type BenchResults, median, mergeResults, type Metric, toMarkdown } from "./report.ts";
import { type BenchServer, SERVER_NAMES, type ServerName, startServer } from "./servers.ts";
import { MITMPROXY12_VENV, TRIXIE_ROOT } from "./mitmproxy_server.ts";
import {
  bidirEcho,
  type ClientContext,
  download,
  downloadH2,
  echoRoundTrips,
  h2load,
  httpsRejected,
  httpsSanity,
  iperf,
  iperfBidir,
  ping,
  requestTo,
  warmUp,
  wrk,
} from "./workloads.ts";

const args = Deno.args;
const flag = (name: string) => args.includes(name);
const option = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const quick = flag("--quick");
const servers = (option("--servers")?.split(",") ?? [...SERVER_NAMES]) as ServerName[];
for (const s of servers) if (!SERVER_NAMES.includes(s)) throw new Error(`unknown server ${s}`);
const profileDir = option("--profile");
const WORKLOADS = ["ping", "echo", "iperf", "bidir", "wrk", "download", "h2", "h2download", "hosts"] as const;
const workloads = new Set(option("--workloads")?.split(",") ?? WORKLOADS);
for (const w of workloads) {
  if (!(WORKLOADS as readonly string[]).includes(w)) throw new Error(`unknown workload ${w}`);
}

const CONFIG = {
  quick,
  repetitions: quick ? 1 : 3,
  iperfSeconds: quick ? 3 : 5,
  echoCounts: quick ? [1_000, 10_000] : [1_000, 10_000, 100_000],
  echoBytes: 1000,
  /** Both directions at once (echo of this many MB, iperf3 --bidir), repeated for medians of 5. */
  bidirMB: quick ? 20 : 100,
  bidirRepetitions: quick ? 1 : 5,
  wrkSeconds: quick ? 3 : 5,
  wrkConnections: [1, 10],
  /** h2load: connections × concurrent streams each. */
  h2Connections: 10,
  h2Streams: 10,
  downloadMiB: 100,
  newHosts: quick ? 3 : 5,
};

const SERVER_NS = "wsbS", CLIENT_NS = "wsbC";
const TARGET = "10.0.0.1", CLIENT_TUNNEL = "10.0.0.2", HOST = "bench.test";
const rig = new BenchRig({
  serverNs: SERVER_NS,
  clientNs: CLIENT_NS,
  serverVeth: "wsbv0",
  clientVeth: "wsbv1",
  serverAddr: "172.31.250.1",
  clientAddr: "172.31.250.2",
  clientWg: "wsbcw0",
  clientTunnel: CLIENT_TUNNEL,
  target: TARGET,
});
const PORTS: Record<ServerName, number> = {
  wirescope: 51820,
  mitmproxy: 51821,
  "wireguard-go": 51822,
  mitmproxy12: 51823,
};
const HOSTS_DIR = `/etc/netns/${CLIENT_NS}`; // `ip netns exec` mounts its hosts file over /etc/hosts
const root = new URL("..", import.meta.url).pathname;

const METRICS: Metric[] = [
  { id: "ping", label: "ping through the tunnel, 500 × every 2 ms, mean", unit: "ms", better: "lower" },
  ...CONFIG.echoCounts.map((n): Metric => ({
    id: `echo${n}`,
    label: `echo, ${n.toLocaleString("en")} × 1000 B sequential round trips`,
    unit: "round trips/s",
    better: "higher",
  })),
  { id: "iperfUp", label: "iperf3 upload, client → origin", unit: "Mbit/s", better: "higher" },
  { id: "iperfDown", label: "iperf3 download (-R), origin → client", unit: "Mbit/s", better: "higher" },
  { id: "cpuPerGbTcp", label: "server CPU per GB carried, iperf3", unit: "CPU s/GB", better: "lower" },
  {
    id: "bidirEcho",
    label: `both ways at once: echo of ${CONFIG.bidirMB} MB (sent and echoed back concurrently), each way`,
    unit: "Mbit/s",
    better: "higher",
  },
  {
    id: "iperfBidirUp",
    label: "both ways at once: iperf3 --bidir, client → origin",
    unit: "Mbit/s",
    better: "higher",
  },
  {
    id: "iperfBidirDown",
    label: "both ways at once: iperf3 --bidir, origin → client",
    unit: "Mbit/s",
    better: "higher",
  },
  {
    id: "cpuPerGbBidir",
    label: "server CPU per GB carried, iperf3 --bidir",
    unit: "CPU s/GB",
    better: "lower",
  },
  ...CONFIG.wrkConnections.flatMap((c): Metric[] => [
    { id: `rps${c}`, label: `HTTPS small GET, keep-alive, ${c} conn.`, unit: "req/s", better: "higher" },
    { id: `p50_${c}`, label: `HTTPS small GET, ${c} conn., p50 latency`, unit: "ms", better: "lower" },
    { id: `p99_${c}`, label: `HTTPS small GET, ${c} conn., p99 latency`, unit: "ms", better: "lower" },
  ]),
  { id: "download", label: `HTTPS download of ${CONFIG.downloadMiB} MiB (curl)`, unit: "s", better: "lower" },
  {
    id: "cpuPerGbHttps",
    label: "server CPU per GB carried, HTTPS download",
    unit: "CPU s/GB",
    better: "lower",
  },
  {
    id: "h2rps",
    label: `HTTP/2 small GET, ${CONFIG.h2Connections} conn. × ${CONFIG.h2Streams} streams (h2load)`,
    unit: "req/s",
    better: "higher",
  },
  { id: "h2p50", label: "HTTP/2 small GET, p50 latency", unit: "ms", better: "lower" },
  { id: "h2p99", label: "HTTP/2 small GET, p99 latency", unit: "ms", better: "lower" },
  { id: "h2cpuPerRequest", label: "server CPU per HTTP/2 small GET", unit: "CPU µs", better: "lower" },
  {
    id: "h2download",
    label: `HTTP/2 download of ${CONFIG.downloadMiB} MiB (curl --http2)`,
    unit: "s",
    better: "lower",
  },
  {
    id: "cpuPerGbH2",
    label: "server CPU per GB carried, HTTP/2 download",
    unit: "CPU s/GB",
    better: "lower",
  },
  { id: "firstRequest", label: "first HTTPS request to a new host", unit: "ms", better: "lower" },
  {
    id: "repeatRequest",
    label: "repeat HTTPS request, same host, new connection",
    unit: "ms",
    better: "lower",
  },
  { id: "rssStart", label: "server RSS after the first handshake", unit: "MiB", better: "lower" },
  { id: "rssPeak", label: "server peak RSS (VmHWM)", unit: "MiB", better: "lower" },
  { id: "rssEnd", label: "server RSS after the run", unit: "MiB", better: "lower" },
];

const log = (msg: string) => console.error(`bench: ${msg}`);
/** Why the bench warms each server up first, as RESULTS.md says it. */
const WARM_UP_NOTE =
  "Before the measured workloads each server carries 2,000 echo round trips, not counted: a proxy " +
  "runs for hours, and wirescope's JavaScript and wasm are compiled by V8 as they run (the first thousand or so " +
  "round trips of a cold process take ~25% longer).";
const MiB = 2 ** 20;

async function cleanupRig(): Promise<void> {
  await rig.remove();
  await Deno.remove(`${HOSTS_DIR}/hosts`).catch(() => {});
  await Deno.remove(HOSTS_DIR).catch(() => {});
}

async function makeRig(clientKeyFile: string, firstPeer: string): Promise<void> {
  await Deno.mkdir(HOSTS_DIR, { recursive: true });
  await Deno.writeTextFile(`${HOSTS_DIR}/hosts`, `127.0.0.1 localhost\n${TARGET} ${HOST}\n`);
  await rig.create(clientKeyFile);
  await rig.pointClientAt(firstPeer, PORTS[servers[0]!]);
}

async function versions(): Promise<Record<string, string>> {
  // The first non-empty line a command prints (on stdout or, as nginx -v, on stderr).
  const first = async (cmd: string[]) => {
    const out = await new Deno.Command(cmd[0]!, { args: cmd.slice(1), stdout: "piped", stderr: "piped" })
      .output().catch(() => null);
    if (!out) return "?";
    const text = new TextDecoder().decode(out.stdout) + "\n" + new TextDecoder().decode(out.stderr);
    return text.split("\n").find((l) => l.trim())?.trim() ?? "?";
  };
  const denoJson = JSON.parse(await Deno.readTextFile(`${root}deno.json`));
  const commit = await first(["git", "-C", root, "rev-parse", "--short", "HEAD"]);
  // --no-optional-locks: a read that never touches the index.
  const dirty =
    (await first(["git", "--no-optional-locks", "-C", root, "status", "--porcelain", "-uno"])) !== "?";
  const mitm = await first([
    `${root}.venv-mitmproxy/bin/python`,
    "-c",
    'from importlib.metadata import version as v; print(v("mitmproxy"), "(mitmproxy_rs", v("mitmproxy_rs") + ")")',
  ]);
  // mitmproxy 12 in its Debian trixie root (scripts/setup_mitmproxy12.sh), asked with a clean environment.
  const mitm12 = await first([
    "chroot",
    TRIXIE_ROOT,
    "env",
    "-i",
    `${MITMPROXY12_VENV}/bin/python`,
    "-c",
    'import platform; from importlib.metadata import version as v; print(v("mitmproxy"), "(mitmproxy_rs", ' +
    'v("mitmproxy_rs") + ", Python " + platform.python_version() + " in a Debian trixie root)")',
  ]);
  const matplotlib = await first([
    `${root}.venv-mitmproxy/bin/python`,
    "-c",
    "import matplotlib; print(matplotlib.__version__)",
  ]);
  return {
    wirescope: `${denoJson.version} (commit ${commit}${dirty ? " with uncommitted changes" : ""})`,
    deno: `${Deno.version.deno} (V8 ${Deno.version.v8})`,
    mitmproxy12: mitm12,
    mitmproxy: mitm,
    "wireguard-go": await first(["wireguard-go", "--version"]),
    "client tools": [
      await first(["iperf3", "--version"]),
      (await first(["wrk", "--version"])).split(" [")[0]!,
      (await first(["curl", "--version"])).split(" (")[0]!,
      (await first(["nginx", "-v"])).replace(/^nginx version: /, ""),
    ].join(", "),
    matplotlib,
  };
}

/** The 1-minute load average. */
const loadAverage = async () => (await Deno.readTextFile("/proc/loadavg")).split(" ")[0]!;

async function machine(): Promise<BenchResults["machine"]> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo");
  const meminfo = await Deno.readTextFile("/proc/meminfo");
  const memKiB = Number(/MemTotal:\s+(\d+)/.exec(meminfo)?.[1] ?? 0);
  return {
    cpu: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? "?",
    cores: navigator.hardwareConcurrency,
    kernel: Deno.osRelease(),
    memory: `${(memKiB / 2 ** 20).toFixed(1)} GiB`,
  };
}

/** Runs every workload through `server`; figures into `fig`. */
async function measure(
  server: BenchServer,
  ctx: ClientContext,
  origins: {
    caFile: string;
    bigPath: string;
    bigSize: number;
    bigSha256: string;
    smallPath: string;
    smallBody: string;
    h2Port: number;
  },
  fig: Record<string, number[]>,
  runId: string,
): Promise<void> {
  const push = (id: string, x: number) => (fig[id] ??= []).push(x);
  const usage = () => {
    try {
      return server.usage();
    } catch {
      throw new Error(`${server.name} is gone; its output:\n${server.output().slice(-20).join("\n")}`);
    }
  };

  /**
   * Waits (at most 30 s) until the server is nearly idle: after tens of thousands of requests
   * (wrk, h2load) a proxy still writes their flows out for seconds, and that CPU landed in the
   * next download's CPU per GB (HTTP/1.1: 11.4 in the first round, 16.7 and 20.9 after h2load).
   */
  const settle = async () => {
    for (let i = 0; i < 60; i++) {
      const before = usage().cpuSeconds;
      await new Promise((r) => setTimeout(r, 500));
      if (usage().cpuSeconds - before < 0.05) return;
    }
  };

  const ms = await warmUp(ctx, 90);
  log(`${server.name}: tunnel up (first echo after ${Math.round(ms)} ms)`);
  // Fail loudly unless HTTPS works through this server with its CA, and, for the proxies, unless
  // the certificate the client sees is the proxy's (the origin's CA alone must not verify it).
  await httpsSanity(ctx, origins.smallPath, origins.smallBody);
  if (server.intercepts && !(await httpsRejected(ctx, origins.smallPath, origins.caFile))) {
    throw new Error(`${server.name} did not intercept HTTPS: the origin's certificate reached the client`);
  }
  push("rssStart", usage().rss / MiB);
  // Warm-up, not measured, the same for every server (WARM_UP_NOTE).
  await echoRoundTrips(ctx, 2000, CONFIG.echoBytes);

  for (let r = 0; r < CONFIG.repetitions; r++) {
    if (workloads.has("ping")) push("ping", await ping(ctx, 500));
    for (const n of workloads.has("echo") ? CONFIG.echoCounts : []) {
      push(`echo${n}`, await echoRoundTrips(ctx, n, CONFIG.echoBytes));
    }
    for (const down of workloads.has("iperf") ? [false, true] : []) {
      const before = usage().cpuSeconds;
      const res = await iperf(ctx, CONFIG.iperfSeconds, down);
      push(down ? "iperfDown" : "iperfUp", res.mbps);
      push("cpuPerGbTcp", (usage().cpuSeconds - before) / (res.bytes / 1e9));
    }
    // Both directions at once: medians of 5 (bidirRepetitions), spread over the rounds.
    const bidirRounds = Math.ceil(CONFIG.bidirRepetitions / CONFIG.repetitions);
    for (let i = 0; i < (workloads.has("bidir") ? bidirRounds : 0); i++) {
      if ((fig.bidirEcho?.length ?? 0) >= CONFIG.bidirRepetitions) break;
      push("bidirEcho", (await bidirEcho(ctx, CONFIG.bidirMB * 1e6)).mbps);
      const before = usage().cpuSeconds;
      const b = await iperfBidir(ctx, CONFIG.iperfSeconds);
      push("iperfBidirUp", b.upMbps);
      push("iperfBidirDown", b.downMbps);
      push("cpuPerGbBidir", (usage().cpuSeconds - before) / (b.bytes / 1e9));
    }
    for (const c of workloads.has("wrk") ? CONFIG.wrkConnections : []) {
      const w = await wrk(ctx, origins.smallPath, c, CONFIG.wrkSeconds);
      push(`rps${c}`, w.requestsPerSecond);
      push(`p50_${c}`, w.p50Ms);
      push(`p99_${c}`, w.p99Ms);
    }
    if (workloads.has("download")) {
      await settle();
      const before = usage().cpuSeconds;
      const d = await download(ctx, origins.bigPath, origins.bigSize, origins.bigSha256);
      push("download", d.seconds);
      push("cpuPerGbHttps", (usage().cpuSeconds - before) / (origins.bigSize / 1e9));
    }
    if (workloads.has("h2download")) {
      await settle();
      const before = usage().cpuSeconds;
      const d = await downloadH2(ctx, origins.bigPath, origins.h2Port, origins.bigSize, origins.bigSha256);
      push("h2download", d.seconds);
      push("cpuPerGbH2", (usage().cpuSeconds - before) / (origins.bigSize / 1e9));
    }
    if (workloads.has("h2")) {
      const before = usage().cpuSeconds;
      const h = await h2load(
        ctx,
        origins.smallPath,
        origins.h2Port,
        CONFIG.h2Connections,
        CONFIG.h2Streams,
        CONFIG.wrkSeconds,
      );
      push("h2rps", h.requestsPerSecond);
      push("h2p50", h.p50Ms);
      push("h2p99", h.p99Ms);
      // With what the server still does for those requests afterwards (writing their flows out).
      await settle();
      push("h2cpuPerRequest", (usage().cpuSeconds - before) * 1e6 / h.requests);
    }
    log(`${server.name}: round ${r + 1}/${CONFIG.repetitions} done`);
  }
  for (let i = 0; i < (workloads.has("hosts") ? CONFIG.newHosts : 0); i++) {
    const name = `h${runId}-${server.name}-${i}.${HOST}`;
    push("firstRequest", await requestTo(ctx, name, origins.smallPath));
    push("repeatRequest", await requestTo(ctx, name, origins.smallPath));
  }
  // Let closed connections be released before the last reading.
  await new Promise((r) => setTimeout(r, 3000));
  const end = usage();
  push("rssEnd", end.rss / MiB);
  push("rssPeak", end.peakRss / MiB);
}

async function main(): Promise<void> {
  if (Deno.uid() !== 0) throw new Error("the bench needs root (network namespaces)");
  if (!flag("--no-setup")) {
    const setup = await new Deno.Command("bash", {
      args: [`${root}scripts/setup_bench.sh`],
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    if (!setup.success) {
      throw new Error(
        "scripts/setup_bench.sh failed: run `bash scripts/setup_bench.sh` (as root) and fix what it says",
      );
    }
  }
  const started = Date.now();
  const runId = started.toString(36).slice(-5);
  const serverKey = generatePrivateKey(), clientKey = generatePrivateKey();
  const serverPub = publicKeyOf(serverKey);
  const dir = await Deno.makeTempDir({ prefix: "wirescope-bench-" });
  await Deno.chmod(dir, 0o755);
  const clientKeyFile = `${dir}/client.key`;
  await Deno.writeTextFile(clientKeyFile, clientKey + "\n", { mode: 0o600 });

  const results: BenchResults["results"] = {};
  let running: BenchServer | undefined;
  let closeOrigins: (() => Promise<void>) | undefined;
  const teardown = async () => {
    await running?.stop().catch(() => {});
    running = undefined;
    await closeOrigins?.().catch(() => {});
    closeOrigins = undefined;
    await cleanupRig();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const onSignal = async () => {
    log("interrupted; cleaning up");
    await teardown();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  const [ver, mach] = await Promise.all([versions(), machine()]);
  const loadStart = await loadAverage();
  try {
    await cleanupRig();
    await makeRig(clientKeyFile, serverPub);
    log("rig up; starting the origins");
    const origins = await startOrigins(SERVER_NS, TARGET, {
      bigSize: CONFIG.downloadMiB * MiB,
      lifetimeSeconds: 3 * 3600,
    });
    closeOrigins = origins.close;
    for (const name of servers) {
      log(`${name}: starting`);
      running = await startServer(name, {
        ns: SERVER_NS,
        port: PORTS[name],
        serverPrivateKey: serverKey,
        clientPrivateKey: clientKey,
        clientPublicKey: publicKeyOf(clientKey),
        originCaFile: origins.caFile,
        dir: `${dir}/${name}`,
        clientTunnelAddress: CLIENT_TUNNEL,
        wirescopeLibrary: flag("--wirescope-library"),
        denoFlags: profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [],
      });
      await rig.pointClientAt(serverPub, PORTS[name]);
      const ctx: ClientContext = { ns: CLIENT_NS, target: TARGET, host: HOST, caFile: running.clientCaFile };
      const fig: Record<string, number[]> = {};
      try {
        await measure(running, ctx, origins, fig, runId);
      } catch (e) {
        throw new Error(`${name}: ${(e as Error).message}`, { cause: e });
      }
      results[name] = fig;
      await running.stop();
      running = undefined;
      log(`${name}: done`);
    }
  } finally {
    await teardown();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }

  const report: BenchResults = {
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    machine: mach,
    versions: ver,
    config: {
      ...CONFIG,
      wirescope: flag("--wirescope-library") ? "library (bench/wirescope_server.ts)" : "CLI (mod.ts)",
    },
    servers,
    metrics: METRICS,
    results,
    notes: [
      "All servers run in the same namespace, one at a time, with the same client, keys and origins " +
      "(nginx 1 worker, iperf3, tests/origin.ts echo) on 10.0.0.1, local to the server namespace.",
      "wireguard-go (ceiling): no interception; HTTPS reaches nginx end to end, the client trusts the origin CA. " +
      "Its CPU and RSS are the wireguard-go process only (the kernel's TCP/IP and forwarding are not in them).",
      "The proxies: HTTPS is intercepted (checked: the origin CA alone does not verify what the client sees); " +
      "the proxy trusts the origin CA upstream. mitmproxy runs stock (it keeps raw TCP messages of a connection in memory).",
      "mitmproxy 12 needs Python >= 3.12: it runs from a Debian trixie root (Python 3.13, made by " +
      "scripts/setup_mitmproxy12.sh with debootstrap) with chroot, in the same network namespace; mitmproxy 11.0.2 " +
      "is the newest for this machine's Python 3.11 (.venv-mitmproxy).",
      `Both ways at once: the echo row is tests/ns_client.ts sending ${CONFIG.bidirMB} MB to the echo port while ` +
      "reading the echo back on the same connection (both directions full at once; the client hashes what it " +
      "sends and gets, the same work for every server), Mbit/s each way from connect to the last byte back; " +
      `iperf3 --bidir runs one stream each way for ${CONFIG.iperfSeconds} s. ${CONFIG.bidirRepetitions} ` +
      "repetitions each, spread over the rounds.",
      "CPU per GB: utime+stime of the server process during the transfer, per 10^9 bytes the client received.",
      "HTTPS latency percentiles are wrk's (closed loop, not corrected for coordinated omission).",
      "HTTP/2 rows: nginx's h2 port (ALPN h2, 9443), the client is offered h2 by each proxy. h2load's " +
      "percentiles come from its per-request log; it does not verify certificates (interception is checked " +
      "with curl on 443 first, and the h2 download verifies against the client's CA and checks HTTP/2 was used). " +
      "CPU per request: server CPU from the start of the h2load run until the server is idle again ÷ requests " +
      "completed. Downloads start once the server is idle (the flows of earlier workloads written out).",
      "first/repeat request: curl's time_total for one GET on a new connection to a fresh name " +
      "(the proxy makes a certificate), then again to the same name.",
      WARM_UP_NOTE,
      "Everything here goes through the whole proxy (a second socket to each origin). The WireGuard data plane " +
      "alone against the same ceiling: `deno task bench:dataplane`, bench/DATAPLANE.md.",
    ],
    durationSeconds: (Date.now() - started) / 1000,
  };
  report.notes.push(
    `Machine load (1-minute load average) at the start ${loadStart} and the end ${await loadAverage()} of this ` +
      `run, on ${mach.cores} cores shared with other work: figures vary with it.`,
  );
  const mitmP50 = results.mitmproxy?.p50_1 ?? results.mitmproxy12?.p50_1;
  if (mitmP50 && median(mitmP50) > 35 && median(mitmP50) < 50) {
    report.notes.push(
      "mitmproxy's one-connection HTTPS latency sits near 40 ms, Linux's minimum delayed-ACK time: most likely " +
        "its tunnel TCP stack holds back the second segment of a response (Nagle) until the client acknowledges " +
        "the first. That is what its clients get, so it is measured as is.",
    );
  }
  let written = report;
  if (option("--workloads")) {
    // A partial run: its rows go into the last full report (the memory rows are kept from that
    // run: they describe a whole run, not one workload).
    const previous = await Deno.readTextFile(`${root}bench/results.json`).then(
      (t) => JSON.parse(t) as BenchResults,
      () => null,
    );
    const measured = new Set(
      Object.values(results).flatMap((fig) => Object.keys(fig ?? {})).filter((id) => !id.startsWith("rss")),
    );
    if (previous) written = mergeResults(previous, report, measured);
  }
  const md = toMarkdown(written);
  await Deno.writeTextFile(`${root}bench/RESULTS.md`, md);
  // In the repository's markdown style, so that `deno task ok` (deno fmt --check) accepts the file.
  await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", `${root}bench/RESULTS.md`] }).output();
  await Deno.writeTextFile(`${root}bench/results.json`, JSON.stringify(written, null, 2) + "\n");
  console.log(await Deno.readTextFile(`${root}bench/RESULTS.md`).catch(() => md));
  const chart = await new Deno.Command(`${root}.venv-mitmproxy/bin/python`, {
    args: [`${root}bench/chart.py`, `${root}bench/results.json`, `${root}bench/results.png`],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!chart.success) {
    throw new Error("bench/chart.py failed (is matplotlib in .venv-mitmproxy? bash scripts/setup_bench.sh)");
  }
  log(
    `wrote bench/RESULTS.md, bench/results.json, bench/results.png (${
      median([report.durationSeconds]).toFixed(0)
    } s)`,
  );
}

if (import.meta.main) await main();
