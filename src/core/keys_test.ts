import assert from "node:assert/strict";
import { decodeKey, encodeKey, generatePrivateKey, publicKeyOf } from "./keys.ts";

Deno.test("generatePrivateKey() makes clamped 32-byte keys", () => {
  const k = decodeKey(generatePrivateKey());
  assert.equal(k.length, 32);
  assert.equal(k[0]! & 7, 0);
  assert.equal(k[31]! & 0xc0, 0x40);
});

Deno.test("publicKeyOf() matches the RFC 7748 X25519 test vector", () => {
  const hex = (s: string) => new Uint8Array(s.match(/../g)!.map((b) => parseInt(b, 16)));
  const alicePrivate = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  const alicePublic = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  assert.equal(publicKeyOf(encodeKey(alicePrivate)), encodeKey(alicePublic));
});

Deno.test("decodeKey() rejects text that is not a 32-byte base64 key", () => {
  for (const bad of ["", "abc", "A".repeat(44), "A".repeat(43), `${"A".repeat(42)}B=`]) {
    assert.throws(() => decodeKey(bad), SyntaxError, bad);
  }
});
