/**
 * Conformance: h2spec (all its HTTP/2 and HPACK cases, `--strict`) against the h2c test server
 * driven by `Http2Connection` (`_test_server.ts`). scripts/setup.sh builds h2spec with `go install`.
 * The proxy's own client-facing side gets the same run once the layer is wired (a later phase).
 */
import assert from "node:assert/strict";
import { serve } from "./_test_server.ts";

async function h2specPath(): Promise<string> {
  const out = await new Deno.Command("go", { args: ["env", "GOPATH"], stdout: "piped", stderr: "null" })
    .output()
    .catch(() => null);
  const gopath = out?.success ? new TextDecoder().decode(out.stdout).trim() : `${Deno.env.get("HOME")}/go`;
  return `${gopath}/bin/h2spec`;
}

Deno.test("h2spec --strict: every case passes against the Http2Connection server", async () => {
  const bin = await h2specPath();
  try {
    await Deno.stat(bin);
  } catch {
    throw new Error(`h2spec not found at ${bin}: run scripts/setup.sh (go install)`);
  }
  const server = serve();
  try {
    const out = await new Deno.Command(bin, {
      args: ["-h", "127.0.0.1", "-p", String(server.port), "--strict", "--timeout", "5"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const summary = text.match(/(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed/);
    assert.ok(summary, text.slice(-2000));
    const failures = text.slice(text.indexOf("Failures:"));
    assert.equal(summary[4], "0", failures);
    assert.ok(Number(summary[1]) >= 146, summary[0]);
  } finally {
    await server.close();
  }
});
