import assert from "node:assert/strict";

Deno.test("src/web/assets.generated.ts was built from the current sources of src/web/ui (deno task build:web)", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../../scripts/build_web.ts", import.meta.url).pathname, "--check"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
});
