/**
 * The client side of the bench: each workload runs a real client (iperf3, wrk, curl,
 * tests/ns_client.ts) inside the client namespace, with a time bound, and throws when the
 * server did not carry the traffic (no bytes, failed requests, a wrong digest): a figure
 * measured over errors is not a result.
 * @module
 */

/** Where the client runs and what it trusts. */
export interface ClientContext {
  ns: string;
  /** The tunnel's target address (the origins). */
  target: string;
  /** The host name nginx's certificate covers, resolved to `target` in the client namespace. */
  host: string;
  /** The CA to trust for HTTPS (the proxy's, or the origin's for wireguard-go). */
  caFile: string;
}

const root = new URL("..", import.meta.url).pathname;
const decoder = new TextDecoder();

/** Runs `cmd` in the client namespace, killed after `seconds`; throws unless it succeeds. */
export async function inClient(
  ctx: ClientContext,
  cmd: string[],
  seconds: number,
  opts: { allowFail?: boolean } = {},
): Promise<{ stdout: string; stderr: string; code: number }> {
  const out = await new Deno.Command("ip", {
    args: ["netns", "exec", ctx.ns, "timeout", "-k", "5", String(Math.ceil(seconds)), ...cmd],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    cwd: root,
  }).output();
  const res = { stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr), code: out.code };
  if (!out.success && !opts.allowFail) {
    const why = out.code === 124 ? `timed out after ${seconds} s` : `failed (${out.code})`;
    throw new Error(
      `${cmd.slice(0, 3).join(" ")}... ${why}: ${(res.stderr || res.stdout).trim().slice(-800)}`,
    );
  }
  return res;
}

/** tests/ns_client.ts with one mode; its JSON line. */
export async function nsClient(
  ctx: ClientContext,
  args: string[],
  seconds: number,
): Promise<Record<string, number>> {
  const { stdout } = await inClient(
    ctx,
    [Deno.execPath(), "run", "-A", "--quiet", `${root}tests/ns_client.ts`, ...args],
    seconds,
  );
  return JSON.parse(stdout.trim().split("\n").pop()!);
}

/** One small echo through the tunnel, retried (bounded) until it works: handshake and warm-up. */
export async function warmUp(ctx: ClientContext, seconds: number): Promise<number> {
  const t0 = performance.now();
  const deadline = Date.now() + seconds * 1000;
  let last = "";
  for (let i = 0; i < 20 && Date.now() < deadline; i++) {
    try {
      const r = await nsClient(ctx, ["echo", ctx.target, "7", "1000"], Math.min(15, seconds));
      if (r.sent === r.got) return performance.now() - t0;
      last = "echo returned other bytes";
    } catch (e) {
      last = (e as Error).message;
    }
  }
  throw new Error(`no echo through the tunnel within ${seconds} s: ${last}`);
}

/** Sequential round trips of `size` bytes on one connection to the echo port. */
export async function echoRoundTrips(ctx: ClientContext, count: number, size: number): Promise<number> {
  const r = await nsClient(ctx, ["rtt", ctx.target, "7", String(count), String(size)], 60 + count / 200);
  if (!(r.perSecond! > 0)) throw new Error(`echo: ${JSON.stringify(r)}`);
  return r.perSecond!;
}

/**
 * `count` pings to the target, one every 2 ms (answered by the server itself where it can: the
 * wasm core answers ICMP echo, mitmproxy and the kernel do too); the mean round trip in ms.
 */
export async function ping(ctx: ClientContext, count: number): Promise<number> {
  const { stdout } = await inClient(
    ctx,
    ["ping", "-q", "-n", "-c", String(count), "-i", "0.002", ctx.target],
    30,
  );
  const m = /= [\d.]+\/([\d.]+)\//.exec(stdout);
  if (!m || !/ 0% packet loss/.test(stdout)) throw new Error(`ping: ${stdout.trim()}`);
  return Number(m[1]);
}

/** iperf3 for `seconds`, upload (client to origin) or download (-R); Mbit/s and bytes received. */
export async function iperf(
  ctx: ClientContext,
  seconds: number,
  download: boolean,
): Promise<{ mbps: number; bytes: number }> {
  const { stdout } = await inClient(
    ctx,
    ["iperf3", "-c", ctx.target, "-p", "5201", "-t", String(seconds), "-J", ...(download ? ["-R"] : [])],
    seconds + 60,
    { allowFail: true },
  );
  let j;
  try {
    j = JSON.parse(stdout);
  } catch {
    throw new Error(`iperf3 printed no JSON: ${stdout.slice(0, 400)}`);
  }
  if (j.error) throw new Error(`iperf3: ${j.error}`);
  const bps = j.end?.sum_received?.bits_per_second ?? 0, bytes = j.end?.sum_received?.bytes ?? 0;
  if (!(bps > 0) || !(bytes > 0)) throw new Error(`iperf3 carried nothing: ${JSON.stringify(j.end ?? {})}`);
  return { mbps: bps / 1e6, bytes };
}

/** One curl GET of `path` through the tunnel, trusting only `caFile`. */
function curlTrusting(ctx: ClientContext, path: string, caFile: string) {
  const args = ["curl", "-sS", "--fail", "--http1.1", "--max-time", "20", "--cacert", caFile];
  return inClient(ctx, [...args, `https://${ctx.host}${path}`], 30, { allowFail: true });
}

/** curl of a small HTTPS response trusting `caFile`; throws unless it gets `body`. */
export async function httpsSanity(ctx: ClientContext, path: string, body: string, caFile = ctx.caFile) {
  const { stdout, stderr, code } = await curlTrusting(ctx, path, caFile);
  if (code !== 0 || stdout !== body) {
    const got = code !== 0 ? `curl exit ${code}: ${stderr.trim()}` : JSON.stringify(stdout.slice(0, 200));
    throw new Error(`HTTPS through the tunnel failed: ${got}`);
  }
}

/** Whether curl trusting `caFile` (only) fails: proves the certificate is someone else's. */
export async function httpsRejected(ctx: ClientContext, path: string, caFile: string): Promise<boolean> {
  return (await curlTrusting(ctx, path, caFile)).code !== 0;
}

/** What {@link wrk} reports. */
export interface WrkResult {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
}

/** wrk: keep-alive HTTPS GETs of `path` on `connections` connections for `seconds`. */
export async function wrk(
  ctx: ClientContext,
  path: string,
  connections: number,
  seconds: number,
): Promise<WrkResult> {
  const threads = Math.min(2, connections);
  const { stdout } = await inClient(ctx, [
    "wrk",
    "-t",
    String(threads),
    "-c",
    String(connections),
    "-d",
    `${seconds}s`,
    "--timeout",
    "10s",
    "-s",
    `${root}bench/wrk_report.lua`,
    `https://${ctx.host}${path}`,
  ], seconds + 60);
  const line = stdout.split("\n").find((l) => l.startsWith("WRK_JSON "));
  if (!line) throw new Error(`wrk printed no report: ${stdout.slice(-400)}`);
  const r = JSON.parse(line.slice(9));
  const errors = r.connect + r.read + r.write + r.status + r.timeout;
  if (r.requests === 0 || errors > 0) {
    throw new Error(`wrk: ${r.requests} requests with errors ${JSON.stringify(r)}`);
  }
  return {
    requestsPerSecond: r.requests / (r.durationUs / 1e6),
    p50Ms: r.p50Us / 1000,
    p99Ms: r.p99Us / 1000,
    requests: r.requests,
  };
}

/** curl of the large file: seconds, and a check of its size and sha256. */
export async function download(
  ctx: ClientContext,
  path: string,
  size: number,
  sha256: string,
): Promise<{ seconds: number; mbps: number }> {
  const { stdout, stderr } = await inClient(ctx, [
    "bash",
    "-c",
    'set -o pipefail; curl -sS --fail --http1.1 --cacert "$1" -w "%{stderr}TIME %{time_total} %{size_download}\\n" ' +
    '"$2" | sha256sum',
    "download",
    ctx.caFile,
    `https://${ctx.host}${path}`,
  ], 600);
  const m = /TIME ([\d.]+) (\d+)/.exec(stderr);
  const got = stdout.split(" ")[0];
  if (!m || Number(m[2]) !== size || got !== sha256) {
    throw new Error(
      `download: ${m ? m[2] : "?"} of ${size} bytes, sha256 ${got} (want ${sha256}); ${stderr}`,
    );
  }
  const seconds = Number(m[1]);
  return { seconds, mbps: size * 8 / seconds / 1e6 };
}

/** One HTTPS request to `name` (resolved to the target) on a new connection; curl's time_total. */
export async function requestTo(ctx: ClientContext, name: string, path: string): Promise<number> {
  const { stdout } = await inClient(ctx, [
    "curl",
    "-sS",
    "--fail",
    "--http1.1",
    "--max-time",
    "20",
    "-o",
    "/dev/null",
    "-w",
    "%{time_total} %{http_code}",
    "--cacert",
    ctx.caFile,
    "--resolve",
    `${name}:443:${ctx.target}`,
    `https://${name}${path}`,
  ], 30);
  const [time, code] = stdout.trim().split(" ");
  if (code !== "200") throw new Error(`GET https://${name}${path}: ${stdout}`);
  return Number(time) * 1000;
}

/** What {@link h2load} reports. */
export interface H2loadResult {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
}

/**
 * h2load (nghttp2): HTTP/2 GETs of `path` on `connections` TLS connections with `streams`
 * concurrent streams each, for `seconds`. Throws unless h2 was agreed,
 * every request answered 2xx, and none failed. Percentiles come from h2load's per-request log.
 */
export async function h2load(
  ctx: ClientContext,
  path: string,
  port: number,
  connections: number,
  streams: number,
  seconds: number,
): Promise<H2loadResult> {
  const logDir = await Deno.makeTempDir({ prefix: "wirescope-bench-h2load-" });
  const logFile = `${logDir}/requests.tsv`;
  try {
    const { stdout } = await inClient(ctx, [
      "h2load",
      "-c",
      String(connections),
      "-m",
      String(streams),
      "-D",
      String(seconds),
      `--log-file=${logFile}`,
      `https://${ctx.host}:${port}${path}`,
    ], seconds + 60);
    if (!/Application protocol: h2\b/.test(stdout)) throw new Error(`h2load did not agree on h2: ${stdout}`);
    const done =
      /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/
        .exec(stdout);
    const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
    const finished = /finished in ([\d.]+)(m?s), ([\d.]+) req\/s/.exec(stdout);
    if (!done || !codes || !finished) throw new Error(`h2load printed no summary: ${stdout.slice(-600)}`);
    const succeeded = Number(done[3]), failed = Number(done[4]) + Number(done[5]);
    // With -D the status counts also take in requests that ended after the measured time.
    const not2xx = Number(codes[2]) + Number(codes[3]) + Number(codes[4]);
    if (succeeded === 0 || failed > 0 || not2xx > 0 || Number(codes[1]) < succeeded) {
      throw new Error(`h2load: ${succeeded} succeeded, ${failed} failed or errored: ${stdout.slice(-600)}`);
    }
    const latencies = (await Deno.readTextFile(logFile)).split("\n").filter((l) => l !== "")
      .map((l) => Number(l.split("\t")[2])).filter((us) => us >= 0).sort((a, b) => a - b);
    if (latencies.length === 0) throw new Error("h2load logged no requests");
    const pct = (p: number) =>
      latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]! / 1000;
    return {
      requestsPerSecond: Number(finished[3]),
      p50Ms: pct(0.5),
      p99Ms: pct(0.99),
      requests: succeeded,
    };
  } finally {
    await Deno.remove(logDir, { recursive: true }).catch(() => {});
  }
}

/** curl --http2 of the large file at `port`: seconds, checked as {@link download} checks, and that h2 was used. */
export async function downloadH2(
  ctx: ClientContext,
  path: string,
  port: number,
  size: number,
  sha256: string,
): Promise<{ seconds: number; mbps: number }> {
  const { stdout, stderr } = await inClient(ctx, [
    "bash",
    "-c",
    'set -o pipefail; curl -sS --fail --http2 --cacert "$1" ' +
    '-w "%{stderr}TIME %{time_total} %{size_download} %{http_version}\\n" "$2" | sha256sum',
    "download",
    ctx.caFile,
    `https://${ctx.host}:${port}${path}`,
  ], 600);
  const m = /TIME ([\d.]+) (\d+) (\S+)/.exec(stderr);
  const got = stdout.split(" ")[0];
  if (!m || Number(m[2]) !== size || got !== sha256 || m[3] !== "2") {
    throw new Error(
      `h2 download: ${m ? m[2] : "?"} of ${size} bytes over HTTP/${m?.[3] ?? "?"}, sha256 ${got} ` +
        `(want ${sha256}); ${stderr}`,
    );
  }
  const seconds = Number(m[1]);
  return { seconds, mbps: size * 8 / seconds / 1e6 };
}

/**
 * Both directions at once through the tunnel: `bytes` sent to the echo port while the origin sends
 * each byte back (tests/ns_client.ts `echo`: the client writes and reads concurrently, checks the
 * returned bytes' sha256). Seconds from connect to the last byte back, and Mbit/s each way.
 */
export async function bidirEcho(
  ctx: ClientContext,
  bytes: number,
): Promise<{ seconds: number; mbps: number }> {
  const r = await nsClient(ctx, ["echo", ctx.target, "7", String(bytes)], 300) as unknown as {
    sent: string;
    got: string;
    ms: number;
  };
  if (r.sent !== r.got) throw new Error(`echo of ${bytes} bytes returned other bytes`);
  const seconds = r.ms / 1000;
  return { seconds, mbps: bytes * 8 / seconds / 1e6 };
}

/**
 * iperf3 `--bidir` for `seconds`: one stream each way at once. Mbit/s received each way (up: at the
 * origin, down: at the client) and the bytes received in all.
 */
export async function iperfBidir(
  ctx: ClientContext,
  seconds: number,
): Promise<{ upMbps: number; downMbps: number; bytes: number }> {
  const { stdout } = await inClient(
    ctx,
    ["iperf3", "-c", ctx.target, "-p", "5201", "-t", String(seconds), "-J", "--bidir"],
    seconds + 60,
    { allowFail: true },
  );
  let j;
  try {
    j = JSON.parse(stdout);
  } catch {
    throw new Error(`iperf3 printed no JSON: ${stdout.slice(0, 400)}`);
  }
  if (j.error) throw new Error(`iperf3 --bidir: ${j.error}`);
  const up = j.end?.sum_received, down = j.end?.sum_received_bidir_reverse;
  if (!(up?.bytes > 0) || !(down?.bytes > 0)) {
    throw new Error(`iperf3 --bidir carried nothing one way: ${JSON.stringify(j.end ?? {}).slice(0, 600)}`);
  }
  return {
    upMbps: up.bits_per_second / 1e6,
    downMbps: down.bits_per_second / 1e6,
    bytes: up.bytes + down.bytes,
  };
}
