/**
 * What silent clients cost the explicit proxy, and what the limits give back: runs the CLI
 * (`mod.ts --mode regular`) in a child process, opens N connections that never speak and N that
 * send half a request head, and reads the child's RSS and open descriptors from /proc before,
 * while they are open, and after the head timeout; then opens N more past a per-client cap.
 *
 *   deno run -A bench/client_limits.ts [--connections 1500] [--head-timeout 5] [--cap 1000]
 *
 * Prints one line per stage. Loopback only; bounded in count and time.
 * @module
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    connections: { type: "string", default: "1500" },
    "head-timeout": { type: "string", default: "5" },
    cap: { type: "string", default: "1000" },
  },
});
const n = Number(values.connections);
const headTimeout = Number(values["head-timeout"]);
const cap = Number(values.cap);
const enc = new TextEncoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function usage(pid: number): string {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const rss = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
  let fds = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) fds++;
  return `RSS ${rss.toFixed(0)} MB, ${fds} descriptors`;
}

async function startCli(extra: string[]): Promise<{ child: Deno.ChildProcess; port: number; dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-client-limits-" });
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "mod.ts", "-q", "--confdir", dir, "--mode", `regular@127.0.0.1:${port}`, ...extra],
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0; i < 300; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return { child, port, dir };
    } catch {
      await sleep(100);
    }
  }
  child.kill("SIGKILL");
  throw new Error("the proxy did not start");
}

async function flood(port: number, count: number): Promise<Deno.Conn[]> {
  const conns: Deno.Conn[] = [];
  for (let i = 0; i < count; i++) {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    if (i % 2 === 1) {
      await c.write(enc.encode(`GET http://example.test/${i} HTTP/1.1\r\nHost: example.test\r\n`));
    }
    conns.push(c);
  }
  return conns;
}

async function stop(cli: { child: Deno.ChildProcess; dir: string }, conns: Deno.Conn[]) {
  for (const c of conns) {
    try {
      c.close();
    } catch { /* closed */ }
  }
  cli.child.kill("SIGKILL");
  await cli.child.status;
  await Deno.remove(cli.dir, { recursive: true });
}

// 1. Timeouts: silent and half-head connections are held until the head timeout, then let go.
{
  const cli = await startCli(["--head-timeout", String(headTimeout), "--max-connections-per-client", "0"]);
  const pid = cli.child.pid;
  await sleep(500);
  console.log(`idle proxy:                         ${usage(pid)}`);
  const conns = await flood(cli.port, n);
  await sleep(1000);
  console.log(`${n} silent/half-head connections:  ${usage(pid)}`);
  await sleep(headTimeout * 1000 + 2000);
  console.log(`after the head timeout (${headTimeout} s):      ${usage(pid)}`);
  await stop(cli, conns);
}
// 2. The per-client cap: what is beyond it is refused at once.
{
  const cli = await startCli(["--head-timeout", "0", "--max-connections-per-client", String(cap)]);
  const conns = await flood(cli.port, n);
  await sleep(1000);
  console.log(`${n} connections, cap ${cap}:          ${usage(cli.child.pid)}`);
  await stop(cli, conns);
}
