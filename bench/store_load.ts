/**
 * HTTPS requests per second through the explicit proxy with the flow store on and off: the cost
 * of recording every flow (issue 13's "within 10%" figure) without the namespace rig.
 *
 *   deno run -A bench/store_load.ts [--requests 20000] [--connections 10] [--rounds 3]
 *
 * Three processes on loopback: an HTTPS origin (Deno.serve, a self-signed certificate made with
 * openssl, a 100-byte body), the CLI (`mod.ts --mode regular@127.0.0.1:PORT -q`, with `--no-store`
 * or `--store FILE`), and curl (`--parallel --parallel-max N`, keep-alive, through the proxy)
 * fetching the origin's one URL `--requests` times after 1,000 for warm-up. Runs alternate off/on for `--rounds` rounds; the medians are printed.
 * @module
 */
const args = Deno.args;
const option = (name: string, fallback: number) =>
  args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback;
const REQUESTS = option("--requests", 20_000);
const CONNECTIONS = option("--connections", 10);
const ROUNDS = option("--rounds", 3);
/** With `--prof DIR`, the proxies run with `--cpu-prof` into DIR/on and DIR/off (main thread and worker). */
const PROF = args.includes("--prof") ? args[args.indexOf("--prof") + 1] : undefined;
const root = new URL("..", import.meta.url).pathname;

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
function cpuMs(pid: number, thread = false, path?: string, part: "all" | "system" = "all"): number {
  // With `thread`, the main thread alone (its task id is the process id); `system`: kernel time only.
  const stat = Deno.readTextFileSync(
    path ?? (thread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`),
  );
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 (1-based) of the whole line, in clock ticks (100 Hz).
  return ((part === "system" ? 0 : Number(fields[11])) + Number(fields[12])) * 10;
}

/** CPU time (ms) of the threads of `pid` whose name starts with `prefix` (e.g. "worker-"). */
function threadsCpuMs(pid: number, prefix: string): number {
  let ms = 0;
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      if (!Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/comm`).startsWith(prefix)) continue;
      ms += cpuMs(Number(t.name), false, `/proc/${pid}/task/${t.name}/stat`);
    } catch { /* the thread is gone */ }
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

const dir = await Deno.makeTempDir({ prefix: "wirescope-store-load-" });
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
    main: number;
    /** Of `main`, the kernel's part (socket writes and reads, waking other threads). */
    mainSystem: number;
    worker: number;
    others: number;
  }
  const measure = async (
    store: boolean,
    round: number,
  ): Promise<Figures> => {
    const port = freePort();
    const confdir = `${dir}/conf`;
    const proxy = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        ...(PROF ? ["--cpu-prof", "--cpu-prof-dir", `${PROF}/${store ? "on" : "off"}`] : []),
        `${root}mod.ts`,
        "-q",
        "--confdir",
        confdir,
        "--mode",
        `regular@127.0.0.1:${port}`,
        "--upstream-ca",
        `${dir}/cert.pem`,
        "--allow-local-destinations",
        ...(store ? ["--store", `${dir}/run-${round}.db`] : ["--no-store"]),
      ],
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    try {
      await waitForPort(port);
      const ca = `${confdir}/wirescope-ca-cert.pem`;
      const curl = async (n: number) => {
        await Deno.writeTextFile(
          `${dir}/urls.cfg`,
          `url = "https://127.0.0.1:${originPort}/"\noutput = "/dev/null"\n`.repeat(n),
        );
        const t0 = performance.now();
        const child = new Deno.Command("curl", {
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
        }).spawn();
        // curl's CPU, read until it exits (the last reading is at most 20 ms short).
        let curlMs = 0;
        let running = true;
        const watch = (async () => {
          while (running) {
            try {
              curlMs = cpuMs(child.pid);
            } catch { /* exited */ }
            await new Promise((r) => setTimeout(r, 20));
          }
        })();
        const out = await child.output();
        running = false;
        await watch;
        if (!out.success) throw new Error(`curl: ${new TextDecoder().decode(out.stderr)}`);
        return { rate: n / ((performance.now() - t0) / 1000), curlMs };
      };
      await curl(1000); // warm-up: connections, certificates, JIT
      const cpu0 = cpuMs(proxy.pid);
      const main0 = cpuMs(proxy.pid, true);
      const mainSystem0 = cpuMs(proxy.pid, true, undefined, "system");
      const worker0 = threadsCpuMs(proxy.pid, "worker-");
      const origin0 = cpuMs(origin.pid);
      const { rate, curlMs } = await curl(REQUESTS);
      // CPU per request (µs): the proxy's (worker included), its main thread's and its store
      // worker's alone (steadier than req/s on a shared machine), and the other two processes'.
      const per = (ms: number) => (ms * 1000) / REQUESTS;
      return {
        rate,
        cpu: per(cpuMs(proxy.pid) - cpu0),
        main: per(cpuMs(proxy.pid, true) - main0),
        mainSystem: per(cpuMs(proxy.pid, true, undefined, "system") - mainSystem0),
        worker: per(threadsCpuMs(proxy.pid, "worker-") - worker0),
        others: per(curlMs + cpuMs(origin.pid) - origin0),
      };
    } finally {
      proxy.kill("SIGTERM");
      await proxy.status;
    }
  };

  const off: Figures[] = [];
  const on: Figures[] = [];
  const show = (x: Figures) =>
    `${x.rate.toFixed(0)} req/s, proxy ${x.cpu.toFixed(0)} µs CPU/req (main thread ${x.main.toFixed(0)}, ` +
    `${x.mainSystem.toFixed(0)} of it in the kernel, ` +
    `store worker ${x.worker.toFixed(0)}), curl + origin ${x.others.toFixed(0)}`;
  for (let i = 0; i < ROUNDS; i++) {
    // Which goes first alternates: a machine that gets busier or quieter favours neither.
    if (i % 2 === 0) {
      off.push(await measure(false, i));
      on.push(await measure(true, i));
    } else {
      on.push(await measure(true, i));
      off.push(await measure(false, i));
    }
    console.log(`round ${i + 1}: store off ${show(off.at(-1)!)}; on ${show(on.at(-1)!)}`);
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const m = (rs: Figures[], key: keyof Figures) => median(rs.map((r) => r[key]));
  const a = m(off, "rate"), b = m(on, "rate");
  const cpu = (rs: Figures[]) =>
    `proxy ${m(rs, "cpu").toFixed(0)} (main thread ${m(rs, "main").toFixed(0)}, ${
      m(rs, "mainSystem").toFixed(0)
    } of it in the kernel; store worker ${m(rs, "worker").toFixed(0)}), curl + origin ${
      m(rs, "others").toFixed(0)
    }`;
  console.log(`CPU per request (medians, µs): store off: ${cpu(off)}; store on: ${cpu(on)}`);
  // Each round's on/off ratio: the two runs of a round are next to each other in time.
  const ratios = on.map((r, i) => r.rate / off[i]!.rate);
  console.log(
    `HTTPS req/s through the explicit proxy (curl, ${CONNECTIONS} connections, ${REQUESTS} requests, median of ${ROUNDS}): ` +
      `store off ${a.toFixed(0)}, store on ${b.toFixed(0)} (${((b / a - 1) * 100).toFixed(1)}%; ` +
      `median of the rounds' ratios ${((median(ratios) - 1) * 100).toFixed(1)}%)`,
  );
} finally {
  for (const c of children) {
    try {
      c.kill("SIGTERM");
    } catch { /* gone */ }
    await c.status;
  }
  if (Deno.env.get("KEEP")) console.log(dir);
  else await Deno.remove(dir, { recursive: true });
}
