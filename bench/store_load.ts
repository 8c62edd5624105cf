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
function cpuMs(pid: number, thread = false): number {
  // With `thread`, the main thread alone (its task id is the process id).
  const stat = Deno.readTextFileSync(thread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 (1-based) of the whole line, in clock ticks (100 Hz).
  return (Number(fields[11]) + Number(fields[12])) * 10;
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

  const measure = async (
    store: boolean,
    round: number,
  ): Promise<{ rate: number; cpu: number; main: number }> => {
    const port = freePort();
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
      await curl(1000); // warm-up: connections, certificates, JIT
      const cpu0 = cpuMs(proxy.pid);
      const main0 = cpuMs(proxy.pid, true);
      const rate = await curl(REQUESTS);
      // The proxy's CPU per request (µs), worker included, and its main thread's alone: steadier
      // than req/s on a shared machine.
      return {
        rate,
        cpu: ((cpuMs(proxy.pid) - cpu0) * 1000) / REQUESTS,
        main: ((cpuMs(proxy.pid, true) - main0) * 1000) / REQUESTS,
      };
    } finally {
      proxy.kill("SIGTERM");
      await proxy.status;
    }
  };

  const off: { rate: number; cpu: number; main: number }[] = [];
  const on: { rate: number; cpu: number; main: number }[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    off.push(await measure(false, i));
    on.push(await measure(true, i));
    const [x, y] = [off.at(-1)!, on.at(-1)!];
    console.log(
      `round ${i + 1}: store off ${x.rate.toFixed(0)} req/s ${x.cpu.toFixed(0)} µs CPU/req ` +
        `(main thread ${x.main.toFixed(0)}), on ${y.rate.toFixed(0)} req/s ${y.cpu.toFixed(0)} µs CPU/req ` +
        `(main thread ${y.main.toFixed(0)})`,
    );
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const a = median(off.map((r) => r.rate)), b = median(on.map((r) => r.rate));
  const ca = median(off.map((r) => r.cpu)), cb = median(on.map((r) => r.cpu));
  const ma = median(off.map((r) => r.main)), mb = median(on.map((r) => r.main));
  console.log(
    `proxy CPU per request (median): store off ${ca.toFixed(0)} µs, on ${cb.toFixed(0)} µs; ` +
      `main thread alone: off ${ma.toFixed(0)} µs, on ${mb.toFixed(0)} µs`,
  );
  console.log(
    `HTTPS req/s through the explicit proxy (curl, ${CONNECTIONS} connections, ${REQUESTS} requests, median of ${ROUNDS}): ` +
      `store off ${a.toFixed(0)}, store on ${b.toFixed(0)} (${((b / a - 1) * 100).toFixed(1)}%)`,
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
