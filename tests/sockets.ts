/**
 * Counting this process's open sockets that belong to one test. `deno test --parallel` runs test
 * files side by side in one process, so a plain count of /proc/self/fd also counts another file's
 * connections (a load test holds 2,000 at a time); only sockets with a local or remote TCP port
 * among the test's own ports are counted here.
 * @module
 */

/** Open socket descriptors of this process whose TCP connection or listener uses one of `ports`. */
export function socketsOnPorts(ports: number[]): number {
  const wanted = new Set(ports);
  const inodes = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(table);
    } catch {
      continue; // no IPv6 here
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const local = parseInt(f[1]!.split(":")[1]!, 16), remote = parseInt(f[2]!.split(":")[1]!, 16);
      if (wanted.has(local) || wanted.has(remote)) inodes.add(f[9]!);
    }
  }
  let n = 0;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(Deno.readLinkSync(`/proc/self/fd/${entry.name}`));
      if (m && inodes.has(m[1]!)) n++;
    } catch { /* closed meanwhile */ }
  }
  return n;
}
