/** Keys are interchangeable with the real `wg` tool (wireguard-tools, installed by setup.sh). */
import assert from "node:assert/strict";
import { generatePrivateKey, publicKeyOf } from "../mod.ts";

async function wg(args: string[], input?: string): Promise<string> {
  const child = new Deno.Command("wg", { args, stdin: "piped", stdout: "piped", stderr: "piped" }).spawn();
  const writer = child.stdin.getWriter();
  if (input !== undefined) await writer.write(new TextEncoder().encode(input));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  return new TextDecoder().decode(stdout).trim();
}

Deno.test("publicKeyOf() matches `wg pubkey` for keys from `wg genkey`", async () => {
  for (let i = 0; i < 5; i++) {
    const key = await wg(["genkey"]);
    assert.equal(publicKeyOf(key), await wg(["pubkey"], key + "\n"));
  }
});

Deno.test("`wg pubkey` accepts keys from generatePrivateKey()", async () => {
  const key = generatePrivateKey();
  assert.equal(await wg(["pubkey"], key + "\n"), publicKeyOf(key));
});
