/**
 * Deno 2.9.2 and later start the V8 inspector on 127.0.0.1:9229 when the process gets SIGUSR1 (as
 * Node does), even when the program listens for SIGUSR1 itself. An inspector port is a way into
 * the process for any local user, and wirescope holds every intercepted secret: a stray
 * `kill -USR1` must not open it. Deno offers no switch for this, so the command sets SIGUSR1 to
 * "ignore" through libc once Deno has installed its handler (it does so 500 ms after start), and
 * prints its stats line on SIGUSR2 instead.
 * @module
 */

/** How long after start Deno installs its SIGUSR1 handler, with a margin. */
const DENO_HANDLER_DELAY_MS = 1_000;
const SIGUSR1 = 10; // Linux; other systems are not handled
const SIG_IGN = 1n;

/**
 * Makes SIGUSR1 ignored by the process once Deno's inspector trigger is in place (Linux only; a
 * no-op elsewhere or without FFI). Returns a function that cancels a pending change.
 *
 * @param onError Called with a one-line reason when libc cannot be used.
 */
export function ignoreInspectorSignal(onError: (reason: string) => void): () => void {
  if (Deno.build.os !== "linux") return () => {};
  const apply = () => {
    let lib: Deno.DynamicLibrary<{ signal: { parameters: ["i32", "usize"]; result: "usize" } }>;
    try {
      lib = Deno.dlopen("libc.so.6", { signal: { parameters: ["i32", "usize"], result: "usize" } });
    } catch (e) {
      onError(`cannot load libc to ignore SIGUSR1: ${(e as Error).message}`);
      return;
    }
    try {
      // SIG_ERR is (size_t)-1.
      if (lib.symbols.signal(SIGUSR1, SIG_IGN) === 0xffff_ffff_ffff_ffffn) onError("signal(SIGUSR1) failed");
    } finally {
      lib.close();
    }
  };
  const timer = setTimeout(apply, DENO_HANDLER_DELAY_MS);
  Deno.unrefTimer(timer);
  return () => clearTimeout(timer);
}
