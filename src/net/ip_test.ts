import assert from "node:assert/strict";
import { formatIp, isIp, writeIp } from "./ip.ts";

function roundTrip(text: string): string {
  const b = new Uint8Array(16);
  writeIp(text, b);
  return formatIp(b);
}

Deno.test("writeIp() and formatIp() round-trip IPv4 through the mapped form", () => {
  const b = new Uint8Array(16);
  writeIp("10.0.0.2", b);
  assert.deepEqual([...b], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 10, 0, 0, 2]);
  assert.equal(formatIp(b), "10.0.0.2");
});

Deno.test("writeIp() and formatIp() compress IPv6 the canonical way", () => {
  assert.equal(roundTrip("fd00:0:0:0:0:0:0:1"), "fd00::1");
  assert.equal(roundTrip("[::1]"), "::1");
  assert.equal(roundTrip("::"), "::");
  assert.equal(roundTrip("2001:db8:0:1:0:0:0:1"), "2001:db8:0:1::1");
  assert.equal(roundTrip("1:2:3:4:5:6:7:8"), "1:2:3:4:5:6:7:8");
  assert.equal(roundTrip("::ffff:1.2.3.4"), "1.2.3.4");
  assert.equal(roundTrip("fe80::1%eth0"), "fe80::1");
});

Deno.test("writeIp() rejects what is not an address", () => {
  for (const bad of ["", "1.2.3", "256.1.1.1", "1::2::3", "fd00:1", "example.com", "1:2:3:4:5:6:7:8:9"]) {
    assert.throws(() => writeIp(bad, new Uint8Array(16)), SyntaxError, bad);
    assert.equal(isIp(bad), false);
  }
});
