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

  const measure = async (store: boolean, round: number): Promise<number> => {
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
      return await curl(REQUESTS);
    } finally {
      proxy.kill("SIGTERM");
      await proxy.status;
    }
  };

  const off: number[] = [];
  const on: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    off.push(await measure(false, i));
    on.push(await measure(true, i));
    console.log(
      `round ${i + 1}: store off ${off.at(-1)!.toFixed(0)} req/s, on ${on.at(-1)!.toFixed(0)} req/s`,
    );
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const a = median(off), b = median(on);
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
