/**
 * `deno task bench:long`: wirescope's memory and CPU over a long run of small HTTPS requests
 * through the WireGuard rig (one wireguard-go client in its own namespace, the CLI in the server
 * namespace, nginx as the origin). h2load (HTTP/1.1, `--connections` keep-alive connections) runs
 * in slices of `--sample-seconds`; after each slice the server's RSS and CPU time are read from
 * /proc. Stops after `--requests` requests or `--minutes`, whichever comes first, then prints a
 * table of the samples and the slope of RSS against requests (least squares over the samples
 * after the first tenth, which hold the warm-up).
 *
 *   deno task bench:long [--requests 1000000] [--minutes 30] [--sample-seconds 10] [--connections 10]
 *                        [--json FILE]
 *
 * Rig: namespaces `wslS` (server, origins on 10.0.0.1) and `wslC` (client), veth 172.31.233.0/30.
 * Needs root, nginx, h2load and wireguard-go (scripts/setup_bench.sh installs them).
 * @module
 */
import { parseArgs } from "node:util";
import { generatePrivateKey, publicKeyOf } from "../src/core/keys.ts";
import { BenchRig } from "./bench_rig.ts";
import { startOrigins } from "./origins.ts";
import { type BenchServer, startServer } from "./servers.ts";
import { type ClientContext, inClient, warmUp } from "./workloads.ts";

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "1000000" },
    minutes: { type: "string", default: "30" },
    "sample-seconds": { type: "string", default: "10" },
    connections: { type: "string", default: "10" },
    json: { type: "string" },
  },
});
const REQUESTS = Number(values.requests);
const MINUTES = Number(values.minutes);
const SLICE = Number(values["sample-seconds"]);
const CONNECTIONS = Number(values.connections);
for (const [name, v] of [["requests", REQUESTS], ["minutes", MINUTES], ["sample-seconds", SLICE]] as const) {
  if (!(v > 0)) throw new Error(`--${name} must be a positive number`);
}

const SERVER_NS = "wslS", CLIENT_NS = "wslC", TARGET = "10.0.0.1", CLIENT_TUNNEL = "10.0.0.2";
const HOST = "bench.test", PORT = 51830, MiB = 1024 * 1024;
const HOSTS_DIR = `/etc/netns/${CLIENT_NS}`;
const rig = new BenchRig({
  serverNs: SERVER_NS,
  clientNs: CLIENT_NS,
  serverVeth: "wslv0",
  clientVeth: "wslv1",
  serverAddr: "172.31.233.1",
  clientAddr: "172.31.233.2",
  clientWg: "wslcw0",
  clientTunnel: CLIENT_TUNNEL,
  target: TARGET,
});

/** One slice of the run. */
export interface LongRunSample {
  /** Seconds since the first slice began. */
  t: number;
  /** Requests completed so far (all slices). */
  requests: number;
  /** Failed or errored requests so far. */
  failures: number;
  /** Requests per second in this slice. */
  rps: number;
  /** Server RSS at the end of the slice, MiB. */
  rssMiB: number;
  /** Server CPU time per request in this slice, µs. */
  cpuUsPerRequest: number;
  /** Load average (1 min) at the end of the slice. */
  load1: number;
}

function log(text: string): void {
  console.error(`[long ${new Date().toISOString().slice(11, 19)}] ${text}`);
}

function loadAverage(): number[] {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).map(Number);
}

/** Least-squares slope of y against x. */
export function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n, my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0, den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? NaN : num / den;
}

/** One h2load slice: requests that succeeded and those that did not. */
async function slice(ctx: ClientContext, seconds: number): Promise<{ ok: number; failed: number }> {
  const { stdout } = await inClient(
    ctx,
    [
      "h2load",
      "--h1",
      "-c",
      String(CONNECTIONS),
      "-D",
      String(seconds),
      `https://${ctx.host}/small.txt`,
    ],
    seconds + 60,
    { allowFail: true },
  );
  const done = /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/
    .exec(stdout);
  if (!done) throw new Error(`h2load printed no summary: ${stdout.slice(-600)}`);
  return { ok: Number(done[3]), failed: Number(done[4]) + Number(done[5]) };
}

async function cleanup(): Promise<void> {
  await rig.remove();
  await Deno.remove(HOSTS_DIR, { recursive: true }).catch(() => {});
}

async function main(): Promise<void> {
  if (Deno.uid() !== 0) throw new Error("bench:long needs root (network namespaces)");
  const dir = await Deno.makeTempDir({ prefix: "wirescope-long-" });
  await Deno.chmod(dir, 0o755);
  const serverKey = generatePrivateKey(), clientKey = generatePrivateKey();
  await Deno.writeTextFile(`${dir}/client.key`, clientKey + "\n", { mode: 0o600 });
  let server: BenchServer | undefined;
  let closeOrigins: (() => Promise<void>) | undefined;
  const teardown = async () => {
    await server?.stop().catch(() => {});
    await closeOrigins?.().catch(() => {});
    await cleanup();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const onSignal = async () => {
    await teardown();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const samples: LongRunSample[] = [];
  let idleRss = 0, peakRss = 0, endRss = 0;
  const load0 = loadAverage();
  try {
    await cleanup();
    await Deno.mkdir(HOSTS_DIR, { recursive: true });
    await Deno.writeTextFile(`${HOSTS_DIR}/hosts`, `127.0.0.1 localhost\n${TARGET} ${HOST}\n`);
    await rig.create(`${dir}/client.key`);
    const origins = await startOrigins(SERVER_NS, TARGET, {
      bigSize: MiB,
      lifetimeSeconds: MINUTES * 60 + 600,
    });
    closeOrigins = origins.close;
    server = await startServer("wirescope", {
      ns: SERVER_NS,
      port: PORT,
      serverPrivateKey: serverKey,
      clientPrivateKey: clientKey,
      clientPublicKey: publicKeyOf(clientKey),
      originCaFile: origins.caFile,
      dir: `${dir}/server`,
      clientTunnelAddress: CLIENT_TUNNEL,
    });
    await rig.pointClientAt(publicKeyOf(serverKey), PORT);
    const ctx: ClientContext = { ns: CLIENT_NS, target: TARGET, host: HOST, caFile: server.clientCaFile };
    await warmUp(ctx, 60);
    // Interception is on: the proxy's CA verifies what the client sees.
    await inClient(ctx, ["curl", "-sS", "--fail", "--cacert", ctx.caFile, `https://${HOST}/small.txt`], 30);
    idleRss = server.usage().rss;
    log(
      `server up, RSS ${(idleRss / MiB).toFixed(1)} MiB; running to ${REQUESTS} requests or ${MINUTES} min`,
    );
    const t0 = performance.now(), deadline = Date.now() + MINUTES * 60_000;
    let requests = 0, failures = 0;
    while (requests < REQUESTS && Date.now() < deadline) {
      const before = server.usage();
      const s0 = performance.now();
      const r = await slice(ctx, SLICE);
      const after = server.usage();
      const wall = (performance.now() - s0) / 1000;
      if (r.ok === 0) throw new Error(`a slice completed no request (${r.failed} failed)`);
      requests += r.ok;
      failures += r.failed;
      peakRss = after.peakRss;
      const sample: LongRunSample = {
        t: (performance.now() - t0) / 1000,
        requests,
        failures,
        rps: r.ok / wall,
        rssMiB: after.rss / MiB,
        cpuUsPerRequest: (after.cpuSeconds - before.cpuSeconds) * 1e6 / r.ok,
        load1: loadAverage()[0]!,
      };
      samples.push(sample);
      log(
        `${requests} requests, ${sample.rps.toFixed(0)} req/s, RSS ${sample.rssMiB.toFixed(1)} MiB, ` +
          `${sample.cpuUsPerRequest.toFixed(0)} µs CPU/request, ${failures} failed, load ${sample.load1}`,
      );
    }
    await new Promise((r) => setTimeout(r, 5_000));
    endRss = server.usage().rss;
  } finally {
    await teardown();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
  report(samples, { idleRss, peakRss, endRss, load0, load1: loadAverage() });
}

function report(
  samples: LongRunSample[],
  m: { idleRss: number; peakRss: number; endRss: number; load0: number[]; load1: number[] },
): void {
  const last = samples.at(-1);
  if (!last) throw new Error("no samples");
  const lines = [
    `# wirescope long run: ${last.requests.toLocaleString("en")} small HTTPS requests ` +
    `(h2load --h1, ${CONNECTIONS} connections, one wireguard-go client)`,
    "",
    "| t (s) | requests | req/s | RSS (MiB) | CPU µs/request | failed | load 1 min |",
    "|---:|---:|---:|---:|---:|---:|---:|",
    ...samples.map((s) =>
      `| ${s.t.toFixed(0)} | ${s.requests} | ${s.rps.toFixed(0)} | ${s.rssMiB.toFixed(1)} | ` +
      `${s.cpuUsPerRequest.toFixed(0)} | ${s.failures} | ${s.load1} |`
    ),
    "",
  ];
  const kept = samples.slice(Math.floor(samples.length / 10));
  const perRequest = slope(kept.map((s) => s.requests), kept.map((s) => s.rssMiB * MiB));
  const cpuAll = samples.reduce((a, s, i) => {
    const n = s.requests - (i > 0 ? samples[i - 1]!.requests : 0);
    return a + s.cpuUsPerRequest * n;
  }, 0) / last.requests;
  lines.push(
    `RSS: ${(m.idleRss / MiB).toFixed(1)} MiB before, ${last.rssMiB.toFixed(1)} MiB at the last sample, ` +
      `${(m.endRss / MiB).toFixed(1)} MiB idle 5 s after, peak ${(m.peakRss / MiB).toFixed(1)} MiB.`,
    `Slope of RSS against requests (samples after the first tenth): ${
      (perRequest * 1e5 / 1024).toFixed(1)
    } KiB per 100,000 requests (${perRequest.toFixed(2)} B/request).`,
    `CPU per request over the run: ${cpuAll.toFixed(0)} µs. Failed requests: ${last.failures}.`,
    `Load average before: ${m.load0.join(" ")}, after: ${m.load1.join(" ")}.`,
  );
  console.log(lines.join("\n"));
  if (values.json) {
    Deno.writeTextFileSync(
      values.json,
      JSON.stringify({ samples, ...m, slopeBytesPerRequest: perRequest, cpuUsPerRequest: cpuAll }, null, 1),
    );
  }
}

if (import.meta.main) await main();
