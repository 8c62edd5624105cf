/**
 * Running the `wirescope` command in end-to-end tests: the README's launcher with its output
 * collected, free loopback ports, and small tmpfs mounts for full-disk cases (root).
 * @module
 */

export const LAUNCHER = new URL("../scripts/wirescope", import.meta.url).pathname;
export const decoder = new TextDecoder();

export async function sh(cmd: string[]): Promise<void> {
  const out = await new Deno.Command(cmd[0]!, { args: cmd.slice(1), stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`${cmd.join(" ")}: ${decoder.decode(out.stderr)}`);
}

/** A tmpfs of `size` at a new directory; `options` e.g. "ro". Unmounted and removed by `close`. */
export async function tmpfs(size: string, options = ""): Promise<{ dir: string; close(): Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-tmpfs-" });
  await sh(["mount", "-t", "tmpfs", "-o", `size=${size}${options ? `,${options}` : ""}`, "tmpfs", dir]);
  return {
    dir,
    async close() {
      await sh(["umount", dir]).catch(() => sh(["umount", "-l", dir]));
      await Deno.remove(dir, { recursive: true });
    },
  };
}

export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/** `scripts/wirescope` with its output collected. */
export class Cli {
  readonly child: Deno.ChildProcess;
  stdout = "";
  stderr = "";
  #done: Promise<void>;

  constructor(args: string[]) {
    this.child = new Deno.Command(LAUNCHER, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const collect = async (stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr") => {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) this[key] += text;
    };
    this.#done = Promise.all([collect(this.child.stdout, "stdout"), collect(this.child.stderr, "stderr")])
      .then(() => {});
  }

  async waitFor(test: () => boolean, what: string, ms = 30_000): Promise<void> {
    const end = Date.now() + ms;
    while (!test()) {
      if (Date.now() > end) {
        throw new Error(`timed out waiting for ${what}\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async stop(signal: Deno.Signal = "SIGINT", ms = 15_000): Promise<number> {
    try {
      this.child.kill(signal);
    } catch { /* gone */ }
    const timer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch { /* gone */ }
    }, ms);
    const status = await this.child.status;
    clearTimeout(timer);
    await this.#done;
    return status.code;
  }
}
