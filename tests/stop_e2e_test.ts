/**
 * Stopping the command a newcomer runs: README's run command (minus its `npm install` part, which
 * the test setup has done) is started as a child process, as a shell or a service manager would,
 * and signalled. SIGTERM and SIGINT must each end the whole process tree with the proxy's own exit
 * code and free its ports; through npx's `deno` (a Node script that spawns Deno) SIGTERM left the
 * proxy running, orphaned, holding its ports.
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;

/** The command of README's "Run" section, after `npm install ... &&`, as argv. */
async function readmeCommand(): Promise<string[]> {
  const readme = await Deno.readTextFile(`${ROOT}/README.md`);
  const run = readme.split(/^## Run$/m)[1] ?? "";
  const block = /```sh\n(.*)\n```/.exec(run)?.[1];
  assert.ok(block, "README's Run section has a sh block");
  const parts = block.split(" && ");
  assert.match(parts[0]!, /^npm install\b/, "the command starts with npm install");
  assert.equal(parts.length, 2, "one command after npm install");
  return parts[1]!.trim().split(/\s+/);
}

/** Pids of `pid` and all its descendants (from /proc). */
function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    let stat;
    try {
      stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
    } catch {
      continue; // gone meanwhile
    }
    // pid (comm) state ppid ...; comm may hold spaces and parentheses.
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(entry.name));
    children.set(ppid, list);
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) out.push(...(children.get(out[i]!) ?? []));
  return out;
}

/** Whether a process exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

function tcpFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

function udpFree(port: number): boolean {
  try {
    Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

async function waitUntil(what: string, check: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test({
    name: `README's run command: ${signal} stops the proxy, frees its ports, exits with its code`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const [program, ...args] = await readmeCommand();
      const confdir = await Deno.makeTempDir({ prefix: "wirescope-stop-" });
      const tcp = freePort(), udp = freePort();
      // The documented command with its modes on loopback ports of this test's choosing.
      const argv = args.map((a) => (a === "wireguard" ? `wireguard@127.0.0.1:${udp}` : a));
      const child = new Deno.Command(program!, {
        args: [
          ...argv,
          "--mode",
          `regular@127.0.0.1:${tcp}`,
          "--confdir",
          confdir,
          "--wg-endpoint",
          "127.0.0.1",
          "-q",
        ],
        cwd: ROOT,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const stderr = new Response(child.stderr).text();
      let tree: number[] = [];
      try {
        await waitUntil("the proxy listens", () => !tcpFree(tcp) && !udpFree(udp), 30_000);
        tree = processTree(child.pid);
        child.kill(signal);
        const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
        const status = await child.status;
        clearTimeout(timer);
        // The proxy's own code for a clean stop; a launcher that died of the signal gives 128+n.
        assert.equal(status.code, 0, "the exit code of a clean stop");
        await waitUntil("every process of the tree is gone", () => tree.every((p) => !alive(p)), 5000)
          .catch(() => {
            throw new Error(`still running after ${signal}: ${tree.filter(alive).join(", ")}`);
          });
        assert.ok(tcpFree(tcp), "the TCP port is free");
        assert.ok(udpFree(udp), "the UDP port is free");
      } finally {
        for (const pid of tree.filter(alive)) {
          try {
            Deno.kill(pid, "SIGKILL");
          } catch { /* gone */ }
        }
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
        await child.status;
        await stderr.catch(() => "");
        await Deno.remove(confdir, { recursive: true });
      }
    },
  });
}

Deno.test("README's run command exits with wirescope's own code", async () => {
  const [program] = await readmeCommand();
  for (const [args, code] of [[["--version"], 0], [["--peers", "0"], 2]] as const) {
    const out = await new Deno.Command(program!, {
      args: [...args],
      cwd: ROOT,
      stdout: "null",
      stderr: "null",
    })
      .output();
    assert.equal(out.code, code, args.join(" "));
  }
});
