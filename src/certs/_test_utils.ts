/**
 * Helpers for the tests of this folder: temporary directories and external tools (openssl, curl).
 * @module
 */

/**
 * Runs a program and returns what it printed.
 *
 * @param program The program, e.g. `openssl`.
 * @param args Its arguments.
 * @returns Standard output followed by standard error.
 * @throws {Error} When the program exits with a status other than 0, with its output.
 */
export async function run(program: string, args: string[]): Promise<string> {
  const result = await new Deno.Command(program, { args, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  if (!result.success) throw new Error(`${program} ${args.join(" ")} exited with ${result.code}:\n${text}`);
  return text;
}

/**
 * Calls `fn` with a new temporary directory and removes the directory afterwards.
 *
 * @param fn The work.
 * @returns What `fn` returns.
 */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "wirescope_certs_" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
