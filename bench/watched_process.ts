/**
 * A child process the bench starts and stops: both output pipes drained for the whole run (a
 * full pipe would stall the child) with the last lines kept for error messages, and a `stop()`
 * that sends SIGTERM, then SIGKILL after 10 s, and waits for the end.
 * @module
 */

/** A running child. */
export interface WatchedProcess {
  child: Deno.ChildProcess;
  /** The last lines of its stdout and stderr. */
  tail: string[];
  /** Stops it (once; later calls wait for the same stop). */
  stop(): Promise<void>;
  exited(): boolean;
}

/** Spawns `cmd` (program and arguments) and watches it. */
export function spawnWatched(
  cmd: string[],
  options: { cwd?: string; env?: Record<string, string>; tailLines?: number } = {},
): WatchedProcess {
  const child = new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(options.cwd ? { cwd: options.cwd } : {}),
    env: options.env ?? {},
  }).spawn();
  const keep = options.tailLines ?? 200;
  const tail: string[] = [];
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    let rest = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + text).split("\n");
      rest = parts.pop()!;
      tail.push(...parts.filter((l) => l));
      if (tail.length > keep) tail.splice(0, tail.length - keep);
    }
    if (rest) tail.push(rest);
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]).catch(() => {});
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  let stopping: Promise<void> | undefined;
  const stop = () =>
    stopping ??= (async () => {
      if (!exited) {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        let timer: ReturnType<typeof setTimeout> | undefined;
        const killed = new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            try {
              child.kill("SIGKILL");
            } catch { /* gone */ }
            resolve();
          }, 10_000);
        });
        await Promise.race([status, killed]);
        clearTimeout(timer);
      }
      await status;
      await drained;
    })();
  return { child, tail, stop, exited: () => exited };
}

/**
 * Spawns `cmd` inside network namespace `ns` (`ip netns exec` execs it, so the pid is the
 * program's) and waits, bounded (60 s), until `ready` says it is up; stops it and throws with its
 * last output lines when it exits or never gets ready.
 */
export async function startInNamespace(
  ns: string,
  what: string,
  cmd: string[],
  ready: (p: WatchedProcess) => Promise<boolean> | boolean,
  cwd: string,
): Promise<WatchedProcess> {
  const p = spawnWatched(["ip", "netns", "exec", ns, ...cmd], { cwd });
  for (let i = 0; !(await ready(p)); i++) {
    if (p.exited() || i >= 600) {
      await p.stop();
      throw new Error(`${what} did not start; its output:\n${p.tail.slice(-20).join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return p;
}
