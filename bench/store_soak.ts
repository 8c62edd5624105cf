/**
 * The store soak (`deno task soak:store`): small HTTPS requests through the `wirescope` command
 * with its default flow store (a new file under `<confdir>/flows/`) for a long time, watching
 * whether the process's memory grows with the flows it has recorded.
 *
 * Three processes on loopback: an HTTPS origin (Deno.serve in a child process, a self-signed
 * certificate made with openssl, bodies of 100 to 300 bytes), the command as a user runs it
 * (`scripts/wirescope --mode regular@127.0.0.1:PORT`, flow lines on stdout, counted), and this
 * process as the client: `--loops` fetch loops through the explicit proxy, paced to `--rate`
 * requests a second in all, each loop on a new connection every 50 requests; at most
 * `rate × seconds` requests in all. Every `--sample` seconds the command's RSS (from /proc), its
 * JS heap and the recorder's backlog (from its SIGUSR2 stats line) and the store's size on disk
 * (file and WAL) are sampled. The RSS slope is a least-squares fit over the second half of the
 * run, in MiB per hour. At the end the command is stopped (SIGINT) and the store is opened and
 * counted: every request that got its response must be a flow in it, and every printed line too.
 *
 *   deno run -A bench/store_soak.ts [--minutes 30] [--sample 10] [--rate 200] [--loops 8] [--no-store]
 *
 * (`--no-store`: the same without the store, to compare; `--v8-flags F`: DENO_V8_FLAGS of the
 * command, e.g. `--max-old-space-size=64` to make the heap collect often.)
 * @module
 */
import { parseArgs } from "node:util";
import { SqliteFlowStore } from "../src/flows/store.ts";

const LAUNCHER = new URL("../scripts/wirescope", import.meta.url).pathname;
const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What to run. */
export interface StoreSoakOptions {
  seconds: number;
  sampleSeconds: number;
  /** Requests a second, all loops together. */
  rate: number;
  /** Concurrent request loops. */
  loops: number;
  /** False: the command runs with `--no-store`, for comparison (default true). */
  store?: boolean;
  /** V8 flags for the command (`DENO_V8_FLAGS`), e.g. a small `--max-old-space-size`. */
  v8Flags?: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** One sample of the command. */
export interface StoreSoakSample {
  /** Seconds since the load started. */
  t: number;
  /** Requests answered so far. */
  requests: number;
  rssMiB: number;
  heapMiB: number;
  /** Flows the recorder holds that are not yet committed. */
  pending: number;
  /** The store's file and WAL. */
  storeMiB: number;
}

/** What a store soak measured. */
export interface StoreSoakResult {
  options: StoreSoakOptions;
  samples: StoreSoakSample[];
  /** Least-squares RSS slope over the second half of the run (MiB per hour). */
  rssSlopeMiBPerHour: number;
  /** Requests that got their response, and those that failed (with the first messages). */
  ok: number;
  failed: number;
  failures: string[];
  /** Flow lines the command printed. */
  printed: number;
  /** Flows in the store after the command stopped, and of them ended ones. */
  stored: number;
  /** The store's size after the command stopped (the WAL is checkpointed into it). */
  storeMiB: number;
  /** Warnings and errors the command logged (first 50). */
  logLines: string[];
  cliExitCode: number;
  /** Seconds the load ran. */
  elapsed: number;
}

/** Least-squares slope of y over x. */
export function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((a, b) => a + b, 0) / n, my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0, den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

async function waitForPort(port: number, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await sleep(100);
    }
  }
  throw new Error(`nothing listens on ${port}`);
}

function rssMiB(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

function sizeOf(path: string): number {
  try {
    return Deno.statSync(path).size;
  } catch {
    return 0;
  }
}

/** The `wirescope` process: flow lines counted, stats lines parsed, other stderr lines kept. */
class Command {
  readonly child: Deno.ChildProcess;
  /** Lines on stdout naming `#origin` (the banner's do not). */
  printed = 0;
  stats: Record<string, unknown> | null = null;
  statsCount = 0;
  logLines: string[] = [];
  #done: Promise<void>;

  constructor(args: string[], origin: string, v8Flags?: string) {
    const child = new Deno.Command(LAUNCHER, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", ...(v8Flags ? { DENO_V8_FLAGS: v8Flags } : {}) },
    }).spawn();
    this.child = child;
    const out = (async () => {
      let rest = "";
      for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
        const lines = (rest + text).split("\n");
        rest = lines.pop()!;
        for (const line of lines) if (line.includes(origin)) this.printed++;
      }
    })();
    const err = (async () => {
      let rest = "";
      for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
        const lines = (rest + text).split("\n");
        rest = lines.pop()!;
        for (const line of lines) {
          if (line.startsWith("wirescope: stats ")) {
            this.stats = JSON.parse(line.slice("wirescope: stats ".length));
            this.statsCount++;
          } else if (this.logLines.length < 50) this.logLines.push(line);
        }
      }
    })();
    this.#done = Promise.all([out, err]).then(() => {});
  }

  /** Asks for a stats line and waits (bounded) for it. */
  async sampleStats(): Promise<Record<string, unknown> | null> {
    const before = this.statsCount;
    this.child.kill("SIGUSR2");
    for (let i = 0; i < 100 && this.statsCount === before; i++) await sleep(20);
    return this.statsCount === before ? null : this.stats;
  }

  async stop(): Promise<number> {
    try {
      this.child.kill("SIGINT");
    } catch { /* gone */ }
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 30_000);
    const status = await this.child.status;
    clearTimeout(timer);
    await this.#done;
    return status.code;
  }
}

async function makeCertificate(dir: string): Promise<void> {
  const out = await new Deno.Command("openssl", {
    args: [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
      ...["-keyout", `${dir}/key.pem`, "-out", `${dir}/cert.pem`, "-days", "2", "-subj", "/CN=127.0.0.1"],
      ...["-addext", "subjectAltName=IP:127.0.0.1"],
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`openssl: ${new TextDecoder().decode(out.stderr)}`);
}

/** Runs the store soak; the command and the origin are stopped and the files removed. */
export async function runStoreSoak(o: StoreSoakOptions): Promise<StoreSoakResult> {
  const log = o.log ?? (() => {});
  const dir = await Deno.makeTempDir({ prefix: "wirescope-store-soak-" });
  let origin: Deno.ChildProcess | undefined;
  let cli: Command | undefined;
  try {
    await makeCertificate(dir);
    const originPort = freePort();
    origin = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `Deno.serve({ hostname: "127.0.0.1", port: ${originPort}, cert: Deno.readTextFileSync("${dir}/cert.pem"),
           key: Deno.readTextFileSync("${dir}/key.pem"), onListen() {} },
           (req) => new Response("x".repeat(100 + (new URL(req.url).pathname.length * 37) % 200)));`,
      ],
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    await waitForPort(originPort);

    const port = freePort();
    const confdir = `${dir}/conf`;
    cli = new Command(
      [
        ...["--confdir", confdir, "--mode", `regular@127.0.0.1:${port}`],
        ...["--upstream-ca", `${dir}/cert.pem`, "--allow-local-destinations"],
        ...(o.store === false ? ["--no-store"] : []),
      ],
      `127.0.0.1:${originPort}`,
      o.v8Flags,
    );
    await waitForPort(port);
    const storeFiles = o.store === false
      ? []
      : [...Deno.readDirSync(`${confdir}/flows`)].filter((e) => e.name.endsWith(".db"));
    if (o.store !== false && storeFiles.length !== 1) {
      throw new Error(`expected one store in ${confdir}/flows`);
    }
    const storePath = o.store === false ? `${dir}/no-store` : `${confdir}/flows/${storeFiles[0]!.name}`;
    const ca = Deno.readTextFileSync(`${confdir}/wirescope-ca-cert.pem`);

    const total = Math.floor(o.rate * o.seconds);
    let started = 0;
    let ok = 0;
    let failed = 0;
    const failures: string[] = [];
    const t0 = performance.now();
    const deadline = t0 + o.seconds * 1000;
    const loop = async (k: number) => {
      let client: Deno.HttpClient | undefined;
      let onClient = 0;
      try {
        while (started < total && performance.now() < deadline) {
          const n = started++;
          // Paced: request n starts n / rate seconds after the start (or at once when late).
          const due = t0 + (n * 1000) / o.rate - performance.now();
          if (due > 0) await sleep(due);
          if (client === undefined || onClient >= 50) {
            client?.close();
            client = Deno.createHttpClient({ proxy: { url: `http://127.0.0.1:${port}` }, caCerts: [ca] });
            onClient = 0;
          }
          onClient++;
          try {
            const response = await fetch(`https://127.0.0.1:${originPort}/${k}/${n}`, {
              client,
              signal: AbortSignal.timeout(10_000),
            });
            await response.arrayBuffer();
            if (response.status === 200) ok++;
            else throw new Error(`status ${response.status}`);
          } catch (e) {
            failed++;
            if (failures.length < 20) failures.push((e as Error).message);
            client?.close();
            client = undefined;
          }
        }
      } finally {
        client?.close();
      }
    };

    const samples: StoreSoakSample[] = [];
    let loading = true;
    const sampler = (async () => {
      const count = Math.floor(o.seconds / o.sampleSeconds);
      for (let i = 1; i <= count && loading; i++) {
        // Slept in short steps, so that the end of the load is seen soon.
        while (loading && performance.now() < t0 + i * o.sampleSeconds * 1000) await sleep(100);
        if (!loading) break;
        const stats = await cli!.sampleStats();
        const store = (stats?.proxy as { store?: { pending?: number } } | undefined)?.store;
        const sample: StoreSoakSample = {
          t: (performance.now() - t0) / 1000,
          requests: ok,
          rssMiB: rssMiB(cli!.child.pid),
          heapMiB: Number(stats?.heapUsedBytes ?? 0) / MiB,
          pending: store?.pending ?? -1,
          storeMiB: (sizeOf(storePath) + sizeOf(`${storePath}-wal`)) / MiB,
        };
        samples.push(sample);
        log(
          `store soak: ${sample.t.toFixed(0)} s, ${ok} requests, rss ${sample.rssMiB.toFixed(1)} MiB, ` +
            `heap ${sample.heapMiB.toFixed(1)} MiB, pending ${sample.pending}, store ${
              sample.storeMiB.toFixed(1)
            } MiB`,
        );
      }
    })();
    await Promise.all(Array.from({ length: o.loops }, (_, k) => loop(k)));
    loading = false;
    await sampler;
    const elapsed = (performance.now() - t0) / 1000;
    // The last lines are printed once their batch is committed: a moment after the last response.
    for (let i = 0; i < 100 && cli.printed < ok; i++) await sleep(50);
    const cliExitCode = await cli.stop();
    const printed = cli.printed;
    const logLines = cli.logLines;
    cli = undefined;

    let stored = 0;
    if (o.store !== false) {
      const store = SqliteFlowStore.open(storePath, { readOnly: true });
      try {
        stored = await store.count();
      } finally {
        store.closeSync();
      }
    }
    const half = samples.filter((s) => s.t >= elapsed / 2);
    return {
      options: o,
      samples,
      rssSlopeMiBPerHour: slope(half.map((s) => s.t / 3600), half.map((s) => s.rssMiB)),
      ok,
      failed,
      failures,
      printed,
      stored,
      storeMiB: sizeOf(storePath) / MiB,
      logLines,
      cliExitCode,
      elapsed,
    };
  } finally {
    await cli?.stop();
    if (origin) {
      try {
        origin.kill("SIGTERM");
      } catch { /* gone */ }
      await origin.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
}

/** The result as Markdown: the samples (at most `rows` of them, evenly spread) and the figures. */
export function formatStoreSoak(r: StoreSoakResult, command: string, rows = 40): string {
  const o = r.options;
  const step = Math.max(1, Math.ceil(r.samples.length / rows));
  const shown = r.samples.filter((_, i) => i % step === 0 || i === r.samples.length - 1);
  const first = r.samples.find((s) => s.t >= r.elapsed / 2);
  const last = r.samples.at(-1);
  return [
    `Store soak (\`${command}\`): ${r.elapsed.toFixed(0)} s of small HTTPS requests through the explicit ` +
    `proxy at ${o.rate}/s (${o.loops} loops), ${o.store === false ? "no flow store" : "default flow store"}${
      o.v8Flags ? `, DENO_V8_FLAGS=${o.v8Flags}` : ""
    }.`,
    "",
    "| s | requests | RSS MiB | JS heap MiB | recorder backlog | store MiB |",
    "|---:|---:|---:|---:|---:|---:|",
    ...shown.map((s) =>
      `| ${s.t.toFixed(0)} | ${s.requests} | ${s.rssMiB.toFixed(1)} | ${
        s.heapMiB.toFixed(1)
      } | ${s.pending} | ${s.storeMiB.toFixed(1)} |`
    ),
    "",
    `Requests: ${r.ok} answered, ${r.failed} failed${
      r.failures.length ? ` (${r.failures.slice(0, 3).join("; ")})` : ""
    }; ` +
    `flow lines printed: ${r.printed}; flows in the store: ${r.stored}; store file ${
      r.storeMiB.toFixed(1)
    } MiB ` +
    `(${
      r.stored > 0 ? ((r.storeMiB * MiB) / r.stored).toFixed(0) : "-"
    } bytes per flow); exit code ${r.cliExitCode}.`,
    `RSS over the second half: ${first?.rssMiB.toFixed(1) ?? "-"} → ${last?.rssMiB.toFixed(1) ?? "-"} MiB, ` +
    `slope ${r.rssSlopeMiBPerHour.toFixed(1)} MiB/hour (least squares); peak ${
      Math.max(0, ...r.samples.map((s) => s.rssMiB)).toFixed(1)
    } MiB.`,
    ...(r.logLines.length ? ["", "Logged:", ...r.logLines.slice(0, 10).map((l) => `    ${l}`)] : []),
  ].join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      minutes: { type: "string", default: "30" },
      sample: { type: "string", default: "10" },
      rate: { type: "string", default: "200" },
      loops: { type: "string", default: "8" },
      "no-store": { type: "boolean", default: false },
      "v8-flags": { type: "string" },
    },
  });
  const result = await runStoreSoak({
    seconds: Number(values.minutes) * 60,
    sampleSeconds: Number(values.sample),
    rate: Number(values.rate),
    loops: Number(values.loops),
    store: !values["no-store"],
    ...(values["v8-flags"] ? { v8Flags: values["v8-flags"] } : {}),
    log: (line) => console.error(line),
  });
  console.log(formatStoreSoak(result, `deno task soak:store ${Deno.args.join(" ")}`.trim()));
  const unstored = !values["no-store"] && result.stored < result.ok;
  if (result.failed > 0 || unstored || result.cliExitCode !== 0) Deno.exitCode = 1;
}
