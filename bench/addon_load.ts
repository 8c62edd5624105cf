/**
 * HTTPS requests per second through the explicit proxy with an addon that reads a request header
 * and sets one on every request and every response, against no addon: the cost of the HTTP
 * hooks (issue 15's "within 10%" figure).
 *
 *   deno run -A bench/addon_load.ts [--requests 5000] [--connections 10] [--rounds 5] [--h2]
 *
 * Three processes on loopback: an HTTPS origin (Deno.serve, a self-signed certificate made with
 * openssl, a 100-byte body), the CLI (`mod.ts --mode regular@127.0.0.1:PORT -q --no-store`, with
 * `-s addon.ts` or without), and curl (`--parallel --parallel-max N`, keep-alive, HTTP/1.1 or with
 * `--h2` HTTP/2, through the proxy) fetching the origin's one URL `--requests` times after 1,000
 * for warm-up. Runs alternate without/with for `--rounds` rounds; medians and the median of each
 * round's ratio are printed, with the proxy's CPU per request.
 * @module
 */
const args = Deno.args;
const option = (name: string, fallback: number) =>
  args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback;
const REQUESTS = option("--requests", 5_000);
const CONNECTIONS = option("--connections", 10);
const ROUNDS = option("--rounds", 5);
const H2 = args.includes("--h2");
/** With `--prof DIR`, the proxies run with `--cpu-prof` into DIR/on and DIR/off. */
const PROF = args.includes("--prof") ? args[args.indexOf("--prof") + 1] : undefined;
const root = new URL("..", import.meta.url).pathname;

const ADDON = `export default {
  name: "bench-tagger",
  request(flow) {
    const agent = flow.request.headers.get("user-agent") ?? "";
    flow.request.headers.set("x-bench", agent.length > 0 ? "agent" : "none");
  },
  response(flow) {
    flow.response.headers.set("x-bench-seen", flow.request.headers.get("x-bench") ?? "?");
  },
};
`;

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

const dir = await Deno.makeTempDir({ prefix: "wirescope-addon-load-" });
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
  await Deno.writeTextFile(`${dir}/addon.ts`, ADDON);
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
    /** Proxy CPU per request (µs). */
    cpu: number;
  }
  const measure = async (addon: boolean): Promise<Figures> => {
    const port = freePort();
    const confdir = `${dir}/conf`;
    const proxy = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        ...(PROF ? ["--cpu-prof", "--cpu-prof-dir", `${PROF}/${addon ? "on" : "off"}`] : []),
        `${root}mod.ts`,
        "-q",
        "--confdir",
        confdir,
        "--mode",
        `regular@127.0.0.1:${port}`,
        "--upstream-ca",
        `${dir}/cert.pem`,
        "--allow-local-destinations",
        "--no-store",
        ...(addon ? ["-s", `${dir}/addon.ts`] : []),
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
            H2 ? "--http2" : "--http1.1",
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
      const rate = await curl(REQUESTS);
      return { rate, cpu: ((cpuMs(proxy.pid) - cpu0) * 1000) / REQUESTS };
    } finally {
      proxy.kill("SIGTERM");
      await proxy.status;
    }
  };

  const off: Figures[] = [];
  const on: Figures[] = [];
  const show = (x: Figures) => `${x.rate.toFixed(0)} req/s, proxy ${x.cpu.toFixed(0)} µs CPU/req`;
  for (let i = 0; i < ROUNDS; i++) {
    // Which goes first alternates: a machine that gets busier or quieter favours neither.
    if (i % 2 === 0) {
      off.push(await measure(false));
      on.push(await measure(true));
    } else {
      on.push(await measure(true));
      off.push(await measure(false));
    }
    console.log(`round ${i + 1}: no addon ${show(off.at(-1)!)}; addon ${show(on.at(-1)!)}`);
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const a = median(off.map((r) => r.rate)), b = median(on.map((r) => r.rate));
  const ratios = on.map((r, i) => r.rate / off[i]!.rate);
  console.log(
    `HTTPS req/s through the explicit proxy (curl ${
      H2 ? "HTTP/2" : "HTTP/1.1"
    }, ${CONNECTIONS} connections, ` +
      `${REQUESTS} requests, median of ${ROUNDS} interleaved rounds): no addon ${a.toFixed(0)}, ` +
      `addon ${b.toFixed(0)} (${((b / a - 1) * 100).toFixed(1)}%; median of the rounds' ratios ` +
      `${((median(ratios) - 1) * 100).toFixed(1)}%); proxy CPU per request (medians): no addon ` +
      `${median(off.map((r) => r.cpu)).toFixed(0)} µs, addon ${median(on.map((r) => r.cpu)).toFixed(0)} µs`,
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
