/**
 * `deno task bench:synthetic`: many WireGuard devices on one wirescope port. `--peers`
 * synthetic peers (bench/synthetic_load.ts: each a client-role wasm core with its own key, tunnel
 * address and UDP source address, so each makes a real handshake and real TCP) run in
 * `--generators` processes against one wirescope server; every peer completes a handshake, then
 * `--requests` HTTP GETs on one keep-alive connection through the proxy to a loopback origin.
 * Prints handshakes/s, the time until all peers are up, req/s, request latency, failures and
 * wirescope's RSS (with the peers configured but idle, with all of them up, peak) and CPU.
 *
 *   deno task bench:synthetic [--peers 1000] [--requests 3] [--generators 2]
 *                                  [--start-rate 0] [--seconds 120] [--json FILE]
 *     --start-rate  peers started per second over all generators (0: all at once)
 *     --seconds     the run's bound: peers not done by then count as failures
 *
 * Everything runs in namespace `wsyS` (its own loopback: no port of the host is touched). The
 * server is bench/wirescope_server.ts (the library's `startProxy()`): the CLI's `--peers` plan
 * stops at 250 clients (10.0.0.2-251), the library takes any number. Peer `i` sends from
 * 127.1.k.j and uses tunnel address 10.1.k.j (k = i div 250, j = i mod 250 + 2): distinct sources,
 * as distinct devices would be (the server limits handshakes per source address). Needs root.
 * @module
 */
import { parseArgs } from "node:util";
import { generatePrivateKey, publicKeyOf } from "../src/core/keys.ts";
import { sh } from "../tests/rig.ts";
import { type LoadTarget, type PeerResult, type PeerSpec, runPeers } from "./synthetic_load.ts";
import { processUsage } from "./usage.ts";
import { spawnWatched } from "./watched_process.ts";
import { udpBound } from "./mitmproxy_server.ts";

const NS = "wsyS", PORT = 51840, ORIGIN_PORT = 8080, MiB = 1024 * 1024;
const root = new URL("..", import.meta.url).pathname;

/** What a generator process is given (as a JSON file). */
interface GeneratorJob {
  specs: PeerSpec[];
  target: LoadTarget;
  startAt: number;
  startRate: number;
  deadline: number;
}

/** Peer `i`'s source and tunnel addresses. */
export function peerAddresses(i: number): { bindAddress: string; address4: string } {
  const k = Math.floor(i / 250), j = (i % 250) + 2;
  if (k > 255) throw new RangeError(`peer ${i}: at most 64,000 peers`);
  return { bindAddress: `127.1.${k}.${j}`, address4: `10.1.${k}.${j}` };
}

function log(text: string): void {
  console.error(`[synthetic ${new Date().toISOString().slice(11, 19)}] ${text}`);
}

function loadAverage(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/** The generator process: runs its share of peers and prints `UP i ms` lines, then `RESULT json`. */
async function generator(jobFile: string): Promise<void> {
  const job = JSON.parse(await Deno.readTextFile(jobFile)) as GeneratorJob;
  const results = await runPeers(job.specs, job.target, {
    startAt: job.startAt,
    startRate: job.startRate,
    deadline: job.deadline,
    onUp: (i, ms) => console.log(`UP ${i} ${ms}`),
  });
  console.log(`RESULT ${JSON.stringify(results)}`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      peers: { type: "string", default: "1000" },
      requests: { type: "string", default: "3" },
      generators: { type: "string", default: "2" },
      "start-rate": { type: "string", default: "0" },
      seconds: { type: "string", default: "120" },
      json: { type: "string" },
    },
  });
  const PEERS = Number(values.peers), REQUESTS = Number(values.requests);
  const GENERATORS = Number(values.generators), RATE = Number(values["start-rate"]);
  const SECONDS = Number(values.seconds);
  if (!(PEERS >= 1 && PEERS <= 10_000)) throw new Error("--peers: 1 to 10,000");
  if (!(REQUESTS >= 1 && GENERATORS >= 1 && RATE >= 0 && SECONDS > 0)) throw new Error("bad arguments");
  if (Deno.uid() !== 0) throw new Error("bench:synthetic needs root (a network namespace)");

  const dir = await Deno.makeTempDir({ prefix: "wirescope-synthetic-" });
  await Deno.chmod(dir, 0o755);
  const inNs = (cmd: string[]) => ["ip", "netns", "exec", NS, ...cmd];
  const procs: { stop(): Promise<void> }[] = [];
  const teardown = async () => {
    for (const p of procs.reverse()) await p.stop().catch(() => {});
    await sh(["ip", "netns", "del", NS], { allowFail: true });
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const onSignal = async () => {
    await teardown();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const load0 = loadAverage();
  try {
    await sh(["ip", "netns", "del", NS], { allowFail: true });
    await sh(["ip", "netns", "add", NS]);
    await sh(inNs(["ip", "link", "set", "lo", "up"]));

    // The keys: the server's and one per peer, in the CLI's keys file shape.
    const serverKey = generatePrivateKey();
    const specs: PeerSpec[] = Array.from(
      { length: PEERS },
      (_, i) => ({ index: i, privateKey: generatePrivateKey(), ...peerAddresses(i) }),
    );
    await Deno.mkdir(`${dir}/server`);
    await Deno.writeTextFile(
      `${dir}/server/wireguard.json`,
      JSON.stringify({ serverPrivateKey: serverKey, clientPrivateKeys: specs.map((s) => s.privateKey) }),
      { mode: 0o600 },
    );

    // The origin: a small HTTP server on the namespace's loopback.
    const origin = spawnWatched(
      inNs([
        "timeout",
        String(SECONDS + 300),
        Deno.execPath(),
        "eval",
        `Deno.serve({ hostname: "127.0.0.1", port: ${ORIGIN_PORT}, onListen() { console.log("origin ready"); } },` +
        ` () => new Response("hello from the synthetic origin\\n"));`,
      ]),
      { cwd: root, env: {}, tailLines: 20 },
    );
    procs.push(origin);
    const server = spawnWatched(
      inNs([
        Deno.execPath(),
        "run",
        "-A",
        "bench/wirescope_server.ts",
        "--mode",
        `wireguard@${PORT}`,
        "--confdir",
        `${dir}/server`,
        "--allow-local-destinations",
      ]),
      { cwd: root, env: {}, tailLines: 50 },
    );
    procs.push(server);
    const readyBy = Date.now() + 120_000;
    while (!(await udpBound(server.child.pid, PORT)) || !origin.tail.includes("origin ready")) {
      if (server.exited() || origin.exited() || Date.now() > readyBy) {
        throw new Error(
          `the server or the origin did not start: ${[...server.tail, ...origin.tail].join("\n")}`,
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 1_000));
    const idle = processUsage(server.child.pid);
    log(`server up with ${PEERS} peers configured: RSS ${(idle.rss / MiB).toFixed(1)} MiB`);

    const target: LoadTarget = {
      serverHost: "127.0.0.1",
      serverPort: PORT,
      serverPublicKey: publicKeyOf(serverKey),
      origin: { hostname: "127.0.0.1", port: ORIGIN_PORT },
      host: `127.0.0.1:${ORIGIN_PORT}`,
      path: "/small",
      requests: REQUESTS,
    };
    // Generators need a few seconds to make their cores; all begin at the same moment.
    const startAt = Date.now() + 5_000 + PEERS * 5;
    const deadline = startAt + SECONDS * 1000;
    let up = 0, allUpAt = 0, rssAllUp = 0;
    const results: PeerResult[] = [];
    const gens = [];
    for (let g = 0; g < GENERATORS; g++) {
      const job: GeneratorJob = {
        specs: specs.filter((_, i) => i % GENERATORS === g),
        target,
        startAt,
        startRate: RATE / GENERATORS,
        deadline,
      };
      await Deno.writeTextFile(`${dir}/job${g}.json`, JSON.stringify(job));
      const child = new Deno.Command("ip", {
        args: inNs([
          "timeout",
          String(SECONDS + 120),
          Deno.execPath(),
          "run",
          "-A",
          "--quiet",
          `${root}bench/synthetic_peers.ts`,
          "--generator",
          `${dir}/job${g}.json`,
        ]).slice(1),
        stdin: "null",
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      procs.push({
        stop: async () => {
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
          await child.status;
        },
      });
      gens.push((async () => {
        let rest = "";
        for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
          rest += text;
          const lines = rest.split("\n");
          rest = lines.pop()!;
          for (const line of lines) {
            if (line.startsWith("UP ")) {
              if (++up === PEERS) {
                allUpAt = Number(line.split(" ")[2]);
                rssAllUp = processUsage(server.child.pid).rss;
              }
            } else if (line.startsWith("RESULT ")) {
              results.push(...JSON.parse(line.slice(7)) as PeerResult[]);
            }
          }
        }
        await child.status;
      })());
    }
    let peakSampled = 0;
    const sampler = setInterval(() => {
      peakSampled = Math.max(peakSampled, processUsage(server.child.pid).rss);
    }, 250);
    const cpu0 = processUsage(server.child.pid).cpuSeconds;
    await Promise.all(gens);
    clearInterval(sampler);
    const end = processUsage(server.child.pid);
    const load1 = loadAverage();

    // The figures.
    const upTimes = results.map((r) => r.handshakeMs).filter((t): t is number => t !== null).sort((a, b) =>
      a - b
    );
    // Each peer's handshake from its own first packet (a generator that started late starts late).
    const handshakeLatency = results.filter((r) => r.handshakeMs !== null).map((r) =>
      r.handshakeMs! - r.startMs
    )
      .sort((a, b) => a - b);
    const latencies = results.flatMap((r) => r.requestMs).sort((a, b) => a - b);
    const failures = results.filter((r) => r.failure !== undefined || r.requestMs.length < REQUESTS);
    const reasons = new Map<string, number>();
    for (const f of failures) reasons.set(f.failure ?? "?", (reasons.get(f.failure ?? "?") ?? 0) + 1);
    const firstStart = Math.min(...results.map((r) => r.startMs));
    const lastUp = upTimes.at(-1) ?? NaN;
    const doneTimes = results.map((r) => r.doneMs).filter((t): t is number => t !== null);
    const lastDone = Math.max(...doneTimes);
    const firstUp = upTimes[0] ?? NaN;
    const requests = latencies.length;
    const perPeerKiB = rssAllUp > 0 ? (rssAllUp - idle.rss) / PEERS / 1024 : NaN;
    const summary = {
      peers: PEERS,
      requestsPerPeer: REQUESTS,
      generators: GENERATORS,
      startRate: RATE,
      handshakes: upTimes.length,
      handshakesPerSecond: upTimes.length / ((lastUp - firstStart) / 1000),
      allUpSeconds: allUpAt > 0 ? (allUpAt - firstStart) / 1000 : null,
      handshakeP50Ms: percentile(handshakeLatency, 0.5),
      handshakeP99Ms: percentile(handshakeLatency, 0.99),
      requests,
      requestsPerSecond: requests / ((lastDone - firstUp) / 1000),
      requestP50Ms: percentile(latencies, 0.5),
      requestP99Ms: percentile(latencies, 0.99),
      failures: failures.length,
      failureReasons: Object.fromEntries(reasons),
      rssIdleMiB: idle.rss / MiB,
      rssAllUpMiB: rssAllUp / MiB,
      rssEndMiB: end.rss / MiB,
      rssPeakMiB: Math.max(peakSampled, end.peakRss) / MiB,
      rssPerPeerKiB: perPeerKiB,
      serverCpuSeconds: end.cpuSeconds - cpu0,
      serverCpuMsPerPeer: (end.cpuSeconds - cpu0) * 1000 / PEERS,
      loadBefore: load0,
      loadAfter: load1,
    };
    const f1 = (n: number) => n.toLocaleString("en", { maximumFractionDigits: 1 });
    console.log([
      `# ${PEERS} synthetic WireGuard peers on one wirescope port (${GENERATORS} generator processes, ` +
      `start ${RATE > 0 ? `${RATE}/s` : "all at once"}, ${REQUESTS} HTTP GETs each)`,
      "",
      "| figure | value |",
      "|---|---:|",
      `| handshakes completed | ${upTimes.length} of ${PEERS} |`,
      `| handshakes/s (first start to last handshake) | ${f1(summary.handshakesPerSecond)} |`,
      `| time until all peers are up (from the first peer's start) | ${
        summary.allUpSeconds === null ? "not all" : `${f1(summary.allUpSeconds)} s`
      } |`,
      `| handshake time per peer p50 / p99 (its first packet to its session) | ${
        f1(summary.handshakeP50Ms)
      } / ${f1(summary.handshakeP99Ms)} ms |`,
      `| requests completed | ${requests} of ${PEERS * REQUESTS} |`,
      `| req/s (first handshake to last response) | ${f1(summary.requestsPerSecond)} |`,
      `| request latency p50 / p99 | ${f1(summary.requestP50Ms)} / ${f1(summary.requestP99Ms)} ms |`,
      `| peers that failed | ${failures.length}${
        failures.length ? ` (${JSON.stringify(summary.failureReasons)})` : ""
      } |`,
      `| wirescope RSS, peers configured, none connected | ${f1(summary.rssIdleMiB)} MiB |`,
      `| wirescope RSS, all peers up | ${f1(summary.rssAllUpMiB)} MiB (${f1(perPeerKiB)} KiB per peer) |`,
      `| wirescope RSS, end / peak | ${f1(summary.rssEndMiB)} / ${f1(summary.rssPeakMiB)} MiB |`,
      `| wirescope CPU during the run | ${f1(summary.serverCpuSeconds)} s (${
        f1(summary.serverCpuMsPerPeer)
      } ms per peer) |`,
      `| load average before / after | ${load0} / ${load1} |`,
    ].join("\n"));
    if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(summary, null, 1));
  } finally {
    await teardown();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}

if (import.meta.main) {
  const g = Deno.args.indexOf("--generator");
  if (g >= 0) await generator(Deno.args[g + 1]!);
  else await main();
}
