import assert from "node:assert/strict";
import { colonHex, formatIpAddress, ipAddressBytes, randomSerial, toPem } from "./_der.ts";

Deno.test("randomSerial() makes positive serials without a leading zero byte", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const serial = randomSerial();
    assert.equal(serial.length, 16);
    assert.ok(serial[0]! >= 0x40 && serial[0]! < 0x80, `first byte ${serial[0]}`);
    seen.add(colonHex(serial));
  }
  assert.equal(seen.size, 1000);
});

Deno.test("ipAddressBytes() and formatIpAddress() convert both address families", () => {
  const cases: [string, number[], string][] = [
    ["10.1.2.3", [10, 1, 2, 3], "10.1.2.3"],
    ["[::1]", [...Array(15).fill(0), 1], "::1"],
    ["2001:DB8::7", [0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 7], "2001:db8::7"],
    ["::ffff:1.2.3.4", [...Array(10).fill(0), 0xff, 0xff, 1, 2, 3, 4], "::ffff:1.2.3.4"],
  ];
  for (const [text, bytes, canonical] of cases) {
    const encoded = ipAddressBytes(text);
    assert.deepEqual(encoded, new Uint8Array(bytes), text);
    assert.equal(formatIpAddress(encoded!), canonical);
  }
  for (const text of ["example.test", "1.2.3", "256.1.1.1", "1::2::3", ""]) {
    assert.equal(ipAddressBytes(text), undefined, text);
  }
  assert.equal(formatIpAddress(new Uint8Array(8)), undefined);
});

Deno.test("toPem() wraps base64 at 64 characters", () => {
  const pem = toPem("TEST", new Uint8Array(100).fill(0xff));
  const lines = pem.trimEnd().split("\n");
  assert.equal(lines[0], "-----BEGIN TEST-----");
  assert.equal(lines.at(-1), "-----END TEST-----");
  assert.deepEqual(lines.slice(1, -1).map((line) => line.length), [64, 64, 8]);
});
