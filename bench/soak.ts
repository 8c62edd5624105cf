/**
 * The soak (`deno task soak`, root): mixed traffic through the `wirescope` command for a long
 * time, watching whether anything grows.
 *
 * The command runs as a user runs it (`scripts/wirescope --mode wireguard --peers N -w FILE`);
 * real wireguard-go clients in namespaces (tests/rig.ts) import the configurations it writes and
 * run bench/soak_client.ts (HTTPS with and without SNI, a larger HTTPS download, HTTP, uploads,
 * WebSocket, raw TCP and UDP echo, DNS) against an origin namespace (tests/origin_ns.ts). Peers
 * come and go: every `churn` seconds one client stops its workload, takes its WireGuard interface
 * down, and comes back as a peer that is not in use (so the configured peers rotate).
 *
 * Every `sample` seconds: RSS and open descriptors of the process (from /proc), and its SIGUSR1
 * stats line (wasm memory, JS heap, pending timers — counted with WIRESCOPE_COUNT_TIMERS=1 —,
 * open connections). After the warm-up, each gets a least-squares slope per minute. Flows come
 * from the -w file; error flows are listed with their messages, and the workload's own failures
 * (what a client saw) beside them.
 *
 *   deno run -A bench/soak.ts [--minutes 20] [--warmup 3] [--sample 5] [--clients 3] [--peers 5]
 *                             [--churn 40] [--loops 2] [--out bench/SOAK.md]
 * @module
 */
import { parseArgs } from "node:util";
import { Rig, type RigClient, sh } from "../tests/rig.ts";
import { OriginNamespace } from "../tests/origin_ns.ts";

const LAUNCHER = new URL("../scripts/wirescope", import.meta.url).pathname;
const CLIENT = new URL("./soak_client.ts", import.meta.url).pathname;

/** What to run. */
export interface SoakOptions {
  seconds: number;
  warmupSeconds: number;
  sampleSeconds: number;
  /** Client namespaces at a time. */
  clients: number;
  /** Peers configured (`--peers`), more than `clients` so that peers rotate. */
  peers: number;
  /** Seconds between peers leaving and coming back. */
  churnSeconds: number;
  /** Concurrent operation loops per client. */
  loops: number;
  /** Progress lines on stderr. */
  log?: (line: string) => void;
}

/** One sample of the process. */
export interface SoakSample {
  /** Seconds since the start. */
  t: number;
  rssMiB: number;
  fds: number;
  wasmMiB: number;
  heapMiB: number;
  /** Memory of ArrayBuffers and other objects outside the JS heap. */
  externalMiB: number;
  timers: number;
  connections: number;
}

/** The metrics given slopes, with their units. */
export const METRICS = {
  rssMiB: "MiB",
  wasmMiB: "MiB",
  heapMiB: "MiB",
  externalMiB: "MiB",
  fds: "descriptors",
  timers: "timers",
  connections: "connections",
} as const;
export type Metric = keyof typeof METRICS;

/** What a soak measured. */
export interface SoakResult {
  options: SoakOptions;
  samples: SoakSample[];
  /** Least-squares slope per minute of each metric after the warm-up. */
  slopes: Record<Metric, number>;
  /** Operations of the workload: per kind, those that worked and failed. */
  ops: Record<string, { ok: number; failed: number }>;
  /** The workload's failures (first ones of each client run). */
  opFailures: string[];
  flows: number;
  /** Flows with an error, grouped by kind and message (numbers blanked). */
  errorFlows: Record<string, number>;
  /** Peers that left and came back. */
  churns: number;
  /** Warnings and errors the command logged (first 50). */
  logLines: string[];
  cliExitCode: number;
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

const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The `wirescope` process, its stderr lines kept (stats lines parsed), stdout counted. */
class Command {
  readonly child: Deno.ChildProcess;
  stats: Record<string, unknown> | null = null;
  statsCount = 0;
  logLines: string[] = [];
  stdoutLines = 0;
  stderrText = "";
  #done: Promise<void>;

  constructor(args: string[]) {
    const child = new Deno.Command(LAUNCHER, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", WIRESCOPE_COUNT_TIMERS: "1" },
    }).spawn();
    this.child = child;
    const out = (async () => {
      for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
        for (const c of text) if (c === "\n") this.stdoutLines++;
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
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 20_000);
    const status = await this.child.status;
    clearTimeout(timer);
    await this.#done;
    return status.code;
  }
}

/** The workload running in one namespace. */
interface Driver {
  child: Deno.ChildProcess;
  output: Promise<string>;
}

function readProc(pid: number): { rssMiB: number; fds: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const rssKb = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  return { rssMiB: rssKb / 1024, fds: [...Deno.readDirSync(`/proc/${pid}/fd`)].length };
}

/** Runs a soak; needs root. */
export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const log = options.log ?? (() => {});
  const origin = await OriginNamespace.create(["origin.test"], 256 * 1024);
  const dir = await Deno.makeTempDir({ prefix: "wirescope-soak-" });
  const save = `${dir}/flows.jsonl`;
  const port = 20000 + ((Deno.pid + 13) % 20000);
  let cli: Command | null = null;
  let rig: Rig | null = null;
  let hosts: string[] = [];
  const drivers = new Map<RigClient, Driver>();
  const ops: SoakResult["ops"] = {};
  const opFailures: string[] = [];
  const samples: SoakSample[] = [];
  let churns = 0;
  let seed = 1;
  const confOf = async (peer: number, host: string) =>
    (await Deno.readTextFile(`${dir}/conf/wireguard-client-${peer}.conf`))
      .replace(/^Endpoint = .*$/m, `Endpoint = ${host}:${port}`);

  const startDriver = (c: RigClient, seconds: number) => {
    const child = c.spawn([
      // Deno's update check would go through the tunnel to dl.deno.land (not a rig address).
      "env",
      "DENO_NO_UPDATE_CHECK=1",
      "timeout",
      String(seconds + 60),
      Deno.execPath(),
      "run",
      "-A",
      "--quiet",
      CLIENT,
      JSON.stringify({
        origin: origin.address,
        ca: `${dir}/conf/wirescope-ca-cert.pem`,
        bigSha256: origin.bigSha256,
        seconds,
        loops: options.loops,
        seed: seed++,
      }),
    ]);
    const output = (async () => {
      const [out] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
      return out;
    })();
    drivers.set(c, { child, output });
  };
  const stopDriver = async (c: RigClient) => {
    const d = drivers.get(c);
    if (!d) return;
    drivers.delete(c);
    try {
      d.child.kill("SIGTERM");
    } catch { /* ended */ }
    // `ip netns exec` passes the signal on to timeout, which passes it to deno.
    const timer = setTimeout(() => d.child.kill("SIGKILL"), 30_000);
    await d.child.status;
    clearTimeout(timer);
    const line = (await d.output).trim().split("\n").pop() ?? "";
    try {
      const r = JSON.parse(line) as { counts: SoakResult["ops"]; failures: string[] };
      for (const [k, v] of Object.entries(r.counts)) {
        const sum = ops[k] ??= { ok: 0, failed: 0 };
        sum.ok += v.ok;
        sum.failed += v.failed;
      }
      opFailures.push(...r.failures.map((f) => `${c.ns}: ${f}`));
    } catch {
      opFailures.push(`${c.ns}: the workload printed no result (${line.slice(0, 200)})`);
    }
  };

  try {
    rig = await Rig.fromConfigs(options.clients, async (hostAddresses) => {
      hosts = hostAddresses;
      cli = new Command([
        "--mode",
        `wireguard@${port}`,
        "--confdir",
        `${dir}/conf`,
        "--peers",
        String(options.peers),
        "--wg-endpoint",
        hosts[0]!,
        "--upstream-ca",
        origin.caFile,
        "--dns-server",
        origin.address,
        "-w",
        save,
      ]);
      for (let i = 0; i < 600; i++) {
        if (
          await Deno.stat(`${dir}/conf/wireguard-client-${options.peers}.conf`).then(() => true, () => false)
        ) {
          break;
        }
        if (i === 599) throw new Error(`wirescope did not start: ${(cli as Command).logLines.join("\n")}`);
        await sleep(50);
      }
      return await Promise.all(hosts.map((h, i) => confOf(i + 1, h)));
    });
    const command = cli! as Command;
    const pid = command.child.pid;
    const inUse = new Map<RigClient, number>(rig.clients.map((c, i) => [c, i + 1]));
    const t0 = Date.now();
    const end = t0 + options.seconds * 1000;
    for (const c of rig.clients) startDriver(c, options.seconds);
    log(`soak: ${options.clients} clients, ${options.peers} peers, ${options.seconds} s`);

    let nextSample = t0, nextChurn = t0 + options.churnSeconds * 1000, turn = 0;
    while (Date.now() < end) {
      const now = Date.now();
      if (now >= nextSample) {
        nextSample += options.sampleSeconds * 1000;
        const proc = readProc(pid);
        const s = await command.sampleStats();
        const sample: SoakSample = {
          t: (now - t0) / 1000,
          rssMiB: proc.rssMiB,
          fds: proc.fds,
          wasmMiB: ((s?.wasmMemoryBytes as number[] | undefined) ?? [0]).reduce((a, b) => a + b, 0) / MiB,
          heapMiB: Number(s?.heapUsedBytes ?? 0) / MiB,
          externalMiB: Number(s?.externalBytes ?? 0) / MiB,
          timers: Number(s?.timers ?? -1),
          connections: Number(
            (s?.proxy as { activeConnections?: number } | undefined)?.activeConnections ?? -1,
          ),
        };
        samples.push(sample);
        log(
          `soak: ${sample.t.toFixed(0)} s rss ${sample.rssMiB.toFixed(1)} MiB, wasm ${
            sample.wasmMiB.toFixed(1)
          } MiB, ` +
            `heap ${sample.heapMiB.toFixed(1)} MiB, ext ${
              sample.externalMiB.toFixed(1)
            } MiB, fds ${sample.fds}, timers ${sample.timers}, ` +
            `conns ${sample.connections}, flows ${s?.flows ?? "?"} (errors ${s?.errorFlows ?? "?"})`,
        );
      }
      if (now >= nextChurn && end - now > 15_000) {
        nextChurn += options.churnSeconds * 1000;
        // One client leaves and comes back as a peer nobody uses now.
        const c = rig.clients[turn++ % rig.clients.length]!;
        const used = new Set(inUse.values());
        const free = Array.from({ length: options.peers }, (_, i) => i + 1).filter((p) => !used.has(p));
        const peer = free[Math.floor(Math.random() * free.length)] ?? inUse.get(c)!;
        await stopDriver(c);
        await leave(c);
        await sleep(1000);
        await join(c, await confOf(peer, hosts[rig.clients.indexOf(c)]!));
        inUse.set(c, peer);
        churns++;
        log(`soak: ${c.ns} came back as peer ${peer}`);
        startDriver(c, Math.max(1, Math.ceil((end - Date.now()) / 1000)));
      }
      await sleep(Math.max(10, Math.min(nextSample, nextChurn, end) - Date.now()));
    }
    for (const c of rig.clients) await stopDriver(c);
    const cliExitCode = await command.stop();
    cli = null;
    const { flows, errorFlows } = await readFlows(save);
    const after = samples.filter((s) => s.t >= options.warmupSeconds);
    const slopes = Object.fromEntries(
      (Object.keys(METRICS) as Metric[]).map((
        m,
      ) => [m, slope(after.map((s) => s.t / 60), after.map((s) => s[m]))]),
    ) as Record<Metric, number>;
    return {
      options,
      samples,
      slopes,
      ops,
      opFailures,
      flows,
      errorFlows,
      churns,
      logLines: command.logLines,
      cliExitCode,
    };
  } finally {
    for (const c of drivers.keys()) {
      try {
        drivers.get(c)!.child.kill("SIGKILL");
      } catch { /* ended */ }
    }
    if (cli) await (cli as Command).stop().catch(() => {});
    await rig?.close();
    await origin.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** A client's WireGuard interface goes away (wireguard-go ends with it). */
async function leave(c: RigClient): Promise<void> {
  await c.exec(["ip", "link", "del", c.wg], { allowFail: true });
}

/** A client brings up a new wireguard-go from a wg-quick config, as tests/rig.ts does. */
async function join(c: RigClient, conf: string): Promise<void> {
  const field = (name: string) =>
    new RegExp(`^\\s*${name}\\s*=\\s*(.+)$`, "mi").exec(conf)?.[1]?.trim() ?? "";
  const addresses = field("Address").split(",").map((a) => a.trim());
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/wsjoin.conf`, conf);
    const stripped = await sh(["wg-quick", "strip", `${dir}/wsjoin.conf`]);
    await Deno.writeTextFile(`${dir}/stripped.conf`, stripped);
    await c.exec(["env", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "wireguard-go", c.wg]);
    await c.exec(["wg", "setconf", c.wg, `${dir}/stripped.conf`]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  for (const a of addresses) {
    if (a.includes(":")) await c.exec(["ip", "-6", "addr", "add", a, "dev", c.wg, "nodad"]);
    else await c.exec(["ip", "addr", "add", a, "dev", c.wg]);
  }
  await c.exec(["ip", "link", "set", c.wg, "mtu", "1420", "up"]);
  await c.exec(["ip", "route", "add", "default", "dev", c.wg]);
  await c.exec(["ip", "-6", "route", "add", "default", "dev", c.wg]);
}

/** Counts the flows of a -w file and groups its error flows by kind and message. */
async function readFlows(path: string): Promise<{ flows: number; errorFlows: Record<string, number> }> {
  let flows = 0;
  const errorFlows: Record<string, number> = {};
  const file = await Deno.open(path, { read: true });
  let rest = "";
  const take = (line: string) => {
    if (line === "") return;
    flows++;
    const f = JSON.parse(line) as { type: string; error: { message: string } | null };
    if (f.error) {
      const key = `${f.type}: ${f.error.message.replace(/\d+(\.\d+)*/g, "N")}`;
      errorFlows[key] = (errorFlows[key] ?? 0) + 1;
    }
  };
  for await (const text of file.readable.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + text).split("\n");
    rest = lines.pop()!;
    lines.forEach(take);
  }
  take(rest);
  return { flows, errorFlows };
}

/** The summary as Markdown. */
export function formatSoak(r: SoakResult, command: string): string {
  const o = r.options;
  const after = r.samples.filter((s) => s.t >= o.warmupSeconds);
  const first = after[0], last = after[after.length - 1];
  const opsTotal = Object.values(r.ops).reduce((n, v) => n + v.ok + v.failed, 0);
  const lines = [
    `Command: \`${command}\` (${
      new Date().toISOString().slice(0, 10)
    }, ${navigator.hardwareConcurrency} cores)`,
    "",
    `${
      (o.seconds / 60).toFixed(1)
    } minutes, ${o.clients} wireguard-go clients at a time rotating among ${o.peers} ` +
    `peers (${r.churns} leaves and joins), ${o.loops} operation loops per client; samples every ` +
    `${o.sampleSeconds} s, slopes from ${o.warmupSeconds} s on (${after.length} samples).`,
    "",
    "| metric | after warm-up | at the end | slope per minute |",
    "| --- | --- | --- | --- |",
    ...(Object.keys(METRICS) as Metric[]).map((m) =>
      `| ${m.replace(/MiB$/, "")} (${METRICS[m]}) | ${fmt(first?.[m])} | ${fmt(last?.[m])} | ${
        r.slopes[m].toFixed(m.endsWith("MiB") ? 3 : 2)
      } |`
    ),
    "",
    `Operations: ${opsTotal} (${
      Object.entries(r.ops).sort().map(([k, v]) => `${k} ${v.ok}${v.failed ? `, ${v.failed} failed` : ""}`)
        .join("; ")
    }).`,
    "",
    `Flows: ${r.flows}; with an error: ${Object.values(r.errorFlows).reduce((a, b) => a + b, 0)}.`,
    ...Object.entries(r.errorFlows).map(([k, n]) => `- ${n} × ${k}`),
    "",
    `Workload failures (${r.opFailures.length}):`,
    ...r.opFailures.slice(0, 20).map((f) => `- ${f}`),
    "",
    `Warnings and errors the command printed (${r.logLines.length}):`,
    ...r.logLines.slice(0, 20).map((l) => `- \`${l}\``),
    "",
    `Exit code after SIGINT: ${r.cliExitCode}.`,
    "",
    "How measured: RSS and descriptors from /proc/PID of the command (`scripts/wirescope` execs Deno, so that " +
    "is the proxy); wasm memory (linear memory of the core: it grows, never shrinks), JS heap, external memory, " +
    "pending timers (global setTimeout/setInterval, counted with WIRESCOPE_COUNT_TIMERS=1) and open client " +
    "connections from its SIGUSR2 stats line. Flows and their errors from its -w file; workload failures are " +
    "operations whose bytes or answer were wrong, or that failed or timed out (20 s).",
  ];
  return lines.join("\n") + "\n";
}

function fmt(x: number | undefined): string {
  return x === undefined ? "-" : Number.isInteger(x) ? String(x) : x.toFixed(1);
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      minutes: { type: "string", default: "20" },
      warmup: { type: "string", default: "3" },
      sample: { type: "string", default: "5" },
      clients: { type: "string", default: "3" },
      peers: { type: "string", default: "5" },
      churn: { type: "string", default: "40" },
      loops: { type: "string", default: "2" },
      out: { type: "string", default: new URL("./SOAK.md", import.meta.url).pathname },
    },
  });
  const options: SoakOptions = {
    seconds: Math.round(Number(values.minutes) * 60),
    warmupSeconds: Math.round(Number(values.warmup) * 60),
    sampleSeconds: Number(values.sample),
    clients: Number(values.clients),
    peers: Number(values.peers),
    churnSeconds: Number(values.churn),
    loops: Number(values.loops),
    log: (l) => console.error(l),
  };
  const result = await runSoak(options);
  const command = `deno task soak${Deno.args.length ? " " + Deno.args.join(" ") : ""}`;
  const text = formatSoak(result, command);
  console.log(text);
  await Deno.writeTextFile(values.out, `# Soak\n\n${text}`);
  await Deno.writeTextFile(values.out.replace(/\.md$/, ".json"), JSON.stringify(result, null, 2) + "\n");
  console.error(`soak: wrote ${values.out}`);
}
