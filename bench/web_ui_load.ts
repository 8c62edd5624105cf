/**
 * What the web UI costs a busy proxy (issue 14: its WebSocket must not take more than 10% of the
 * proxy's req/s): HTTPS requests through the explicit proxy (the CLI with its flow store) with no
 * web UI, and with `--web` and a headless Chromium page on it receiving every flow's summary live.
 *
 *   deno run -A bench/web_ui_load.ts [--requests 20000] [--connections 10] [--rounds 3]
 *
 * The origin, the load (curl `--parallel`, keep-alive) and the CPU readings are those of
 * bench/store_load.ts. Runs alternate without/with the page; medians are printed. On a small
 * machine Chromium's own CPU competes with the proxy, so the proxy's CPU per request is printed
 * beside req/s (the steadier figure of what the UI costs the proxy itself).
 * @module
 */
import { Chromium } from "../tests/chromium.ts";

const args = Deno.args;
const option = (name: string, fallback: number) =>
  args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback;
const REQUESTS = option("--requests", 20_000);
const CONNECTIONS = option("--connections", 10);
const ROUNDS = option("--rounds", 3);
const root = new URL("..", import.meta.url).pathname;
const PASSWORD = "bench-web-ui-load";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

async function run(cmd: string, cmdArgs: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args: cmdArgs, stdout: "null", stderr: "piped" }).output();
  if (!out.success) throw new Error(`${cmd} failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** CPU time (user + system, all threads) of a process so far, in ms. */
function cpuMs(pid: number, thread = false, path?: string): number {
  // With `thread`, the main thread alone (its task id is the process id).
  const stat = Deno.readTextFileSync(
    path ?? (thread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`),
  );
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 (1-based) of the whole line, in clock ticks (100 Hz).
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** The CPU time (ms) of every process of the browser whose profile is under `home` (its whole tree). */
function browserCpuMs(home: string): number {
  const parent = new Map<number, number>();
  let root = -1;
  for (const e of Deno.readDirSync("/proc")) {
    const pid = Number(e.name);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      parent.set(pid, Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
      const cmd = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
      // The browser process itself: its children (renderers, GPU, network) carry the flags too.
      if (cmd.includes(`${home}/profile`) && !cmd.includes("--type=")) root = pid;
    } catch { /* gone */ }
  }
  let ms = 0;
  for (const pid of parent.keys()) {
    let p: number | undefined = pid;
    for (let depth = 0; depth < 10 && p !== undefined && p !== root && p > 1; depth++) p = parent.get(p);
    if (p !== root) continue;
    try {
      ms += cpuMs(pid);
    } catch { /* gone */ }
  }
  return ms;
}

async function waitForPort(port: number, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`nothing listens on ${port}`);
}

const dir = await Deno.makeTempDir({ prefix: "wirescope-web-load-" });
const home = await Deno.makeTempDir({ prefix: "wirescope-web-load-chromium-" });
const children: Deno.ChildProcess[] = [];
try {
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    `${dir}/key.pem`,
    "-out",
    `${dir}/cert.pem`,
    "-days",
    "2",
    "-subj",
    "/CN=127.0.0.1",
    "-addext",
    "subjectAltName=IP:127.0.0.1",
  ]);
  const originPort = freePort();
  const origin = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `Deno.serve({ hostname: "127.0.0.1", port: ${originPort}, cert: Deno.readTextFileSync("${dir}/cert.pem"),
         key: Deno.readTextFileSync("${dir}/key.pem"), onListen() {} }, () => new Response("x".repeat(100)));`,
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  children.push(origin);
  await waitForPort(originPort);

  interface Figures {
    rate: number;
    cpu: number;
    browser: number;
    summaries: number;
  }
  const measure = async (web: boolean, round: number): Promise<Figures> => {
    const port = freePort();
    const webPort = freePort();
    const confdir = `${dir}/conf`;
    const proxy = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${root}mod.ts`,
        "-q",
        "--confdir",
        confdir,
        "--mode",
        `regular@127.0.0.1:${port}`,
        "--upstream-ca",
        `${dir}/cert.pem`,
        "--allow-local-destinations",
        "--store",
        `${dir}/run-${round}-${web}.db`,
        ...(web ? ["--web", `127.0.0.1:${webPort}`, "--web-password", PASSWORD] : []),
      ],
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    let browser: Chromium | undefined;
    try {
      await waitForPort(port);
      let page: string | undefined;
      if (web) {
        await waitForPort(webPort);
        browser = await Chromium.launch({ home });
        page = await browser.newPage();
        await browser.load(page, `http://127.0.0.1:${webPort}/?token=${PASSWORD}`);
        for (let i = 0; i < 100; i++) {
          if (
            await browser.evaluate<boolean>(page, "document.getElementById('conn')?.textContent === 'live'")
          ) break;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      const ca = `${confdir}/wirescope-ca-cert.pem`;
      const curl = async (n: number) => {
        await Deno.writeTextFile(
          `${dir}/urls.cfg`,
          `url = "https://127.0.0.1:${originPort}/"\noutput = "/dev/null"\n`.repeat(n),
        );
        const t0 = performance.now();
        const out = await new Deno.Command("curl", {
          args: [
            "-sS",
            "--fail",
            "-x",
            `http://127.0.0.1:${port}`,
            "--cacert",
            ca,
            "--parallel",
            "--parallel-max",
            String(CONNECTIONS),
            "-K",
            `${dir}/urls.cfg`,
          ],
          stdout: "null",
          stderr: "piped",
        }).output();
        if (!out.success) throw new Error(`curl: ${new TextDecoder().decode(out.stderr)}`);
        return n / ((performance.now() - t0) / 1000);
      };
      await curl(1000); // warm-up
      const cpu0 = cpuMs(proxy.pid);
      const browser0 = web ? browserCpuMs(home) : 0;
      const rate = await curl(REQUESTS);
      const cpu = ((cpuMs(proxy.pid) - cpu0) * 1000) / REQUESTS;
      const browserCpu = web ? ((browserCpuMs(home) - browser0) * 1000) / REQUESTS : 0;
      let summaries = 0;
      if (browser && page) {
        await new Promise((r) => setTimeout(r, 1000)); // the last batch
        summaries = await browser.evaluate<number>(page, "Number(document.body.dataset.loaded ?? 0)");
      }
      return { rate, cpu, browser: browserCpu, summaries };
    } finally {
      await browser?.close();
      proxy.kill("SIGTERM");
      await proxy.status;
    }
  };

  const off: Figures[] = [];
  const on: Figures[] = [];
  const show = (x: Figures) =>
    `${x.rate.toFixed(0)} req/s, proxy ${x.cpu.toFixed(0)} µs CPU/req` +
    (x.summaries
      ? `, Chromium ${x.browser.toFixed(0)} µs CPU/req, ${x.summaries} flows listed by the page`
      : "");
  for (let i = 0; i < ROUNDS; i++) {
    if (i % 2 === 0) {
      off.push(await measure(false, i));
      on.push(await measure(true, i));
    } else {
      on.push(await measure(true, i));
      off.push(await measure(false, i));
    }
    console.log(`round ${i + 1}: no web UI ${show(off.at(-1)!)}; web UI + page ${show(on.at(-1)!)}`);
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const a = median(off.map((r) => r.rate)), b = median(on.map((r) => r.rate));
  const ca = median(off.map((r) => r.cpu)), cb = median(on.map((r) => r.cpu));
  console.log(
    `HTTPS req/s through the explicit proxy with its store (curl, ${CONNECTIONS} connections, ${REQUESTS} requests, ` +
      `median of ${ROUNDS}): no web UI ${a.toFixed(0)}, web UI with a live page ${b.toFixed(0)} ` +
      `(${((b / a - 1) * 100).toFixed(1)}%); proxy CPU per request ${ca.toFixed(0)} → ${cb.toFixed(0)} µs ` +
      `(${((cb / ca - 1) * 100).toFixed(1)}%); Chromium's page ${
        median(on.map((r) => r.browser)).toFixed(0)
      } µs CPU/req`,
  );
} finally {
  for (const c of children) {
    try {
      c.kill("SIGTERM");
    } catch { /* gone */ }
    await c.status;
  }
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(home, { recursive: true });
}
