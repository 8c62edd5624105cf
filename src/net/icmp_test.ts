import assert from "node:assert/strict";
import { checksum, udpPacket, udpPortUnreachable } from "./icmp.ts";
import { writeIp } from "./ip.ts";
import { CorePair } from "../core/testing.ts";

const u16 = (b: Uint8Array, at: number) => (b[at]! << 8) | b[at + 1]!;

/** The one's-complement sum of an IPv6 pseudo-header (as a checksum's starting value). */
function pseudo6(src: Uint8Array, dst: Uint8Array, proto: number, length: number): number {
  let sum = proto + (length >>> 16) + (length & 0xffff);
  for (const a of [src, dst]) for (let i = 0; i < 16; i += 2) sum += u16(a, i);
  return sum;
}

Deno.test("udpPortUnreachable() over IPv4: ICMP 3/3 from the destination, quoting the header and 8 bytes", () => {
  const payload = new TextEncoder().encode("a QUIC initial, or so it says");
  const pkt = udpPortUnreachable({
    src: { hostname: "10.0.0.2", port: 50123 },
    dst: { hostname: "10.9.8.7", port: 443 },
    data: payload,
  });
  assert.equal(pkt.length, 20 + 8 + 20 + 8);
  // Outer header: version 4, length, protocol ICMP, addresses swapped, valid checksum.
  assert.equal(pkt[0], 0x45);
  assert.equal(u16(pkt, 2), pkt.length);
  assert.equal(pkt[9], 1);
  assert.deepEqual([...pkt.subarray(12, 16)], [10, 9, 8, 7]);
  assert.deepEqual([...pkt.subarray(16, 20)], [10, 0, 0, 2]);
  assert.equal(checksum(pkt.subarray(0, 20), 0), 0);
  // ICMP: type 3 code 3, unused word zero, checksum over the whole message.
  const icmp = pkt.subarray(20);
  assert.deepEqual([...icmp.subarray(0, 2)], [3, 3]);
  assert.deepEqual([...icmp.subarray(4, 8)], [0, 0, 0, 0]);
  assert.equal(checksum(icmp, 0), 0);
  // Quoted: the original header (client → destination, UDP, full length) and the UDP header.
  const quoted = icmp.subarray(8);
  assert.equal(quoted[0], 0x45);
  assert.equal(quoted[9], 17);
  assert.equal(u16(quoted, 2), 20 + 8 + payload.length);
  assert.deepEqual([...quoted.subarray(12, 16)], [10, 0, 0, 2]);
  assert.deepEqual([...quoted.subarray(16, 20)], [10, 9, 8, 7]);
  assert.equal(checksum(quoted.subarray(0, 20), 0), 0);
  assert.equal(u16(quoted, 20), 50123);
  assert.equal(u16(quoted, 22), 443);
  assert.equal(u16(quoted, 24), 8 + payload.length);
  // The quoted UDP checksum is the one of the whole original datagram.
  const original = udpPacket(
    new Uint8Array([10, 0, 0, 2]),
    50123,
    new Uint8Array([10, 9, 8, 7]),
    443,
    payload,
  );
  assert.deepEqual([...quoted], [...original.subarray(0, 28)]);
  const udp = original.subarray(20);
  const sum = 17 + udp.length + u16(original, 12) + u16(original, 14) + u16(original, 16) + u16(original, 18);
  assert.equal(checksum(udp, sum), 0);
});

Deno.test("udpPortUnreachable() over IPv6: ICMPv6 1/4 with a pseudo-header checksum, quoting up to 1280 bytes", () => {
  const src = { hostname: "fd00:1::2", port: 40000 };
  const dst = { hostname: "fd00:2::1", port: 443 };
  const srcB = new Uint8Array([0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
  const dstB = new Uint8Array([0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  for (const size of [0, 100, 1200, 1232]) {
    const data = new Uint8Array(size).map((_, i) => i * 7);
    const pkt = udpPortUnreachable({ src, dst, data });
    const quotedLen = Math.min(40 + 8 + size, 1280 - 48);
    assert.equal(pkt.length, 40 + 8 + quotedLen, `size ${size}`);
    assert.ok(pkt.length <= 1280);
    assert.equal(pkt[0]! >> 4, 6);
    assert.equal(u16(pkt, 4), pkt.length - 40);
    assert.equal(pkt[6], 58);
    assert.deepEqual([...pkt.subarray(8, 24)], [...dstB]);
    assert.deepEqual([...pkt.subarray(24, 40)], [...srcB]);
    const icmp = pkt.subarray(40);
    assert.deepEqual([...icmp.subarray(0, 2)], [1, 4]);
    assert.equal(checksum(icmp, pseudo6(dstB, srcB, 58, icmp.length)), 0, `size ${size}`);
    const original = udpPacket(srcB, 40000, dstB, 443, data);
    assert.deepEqual([...icmp.subarray(8)], [...original.subarray(0, quotedLen)]);
    assert.equal(checksum(original.subarray(40), pseudo6(srcB, dstB, 17, 8 + size)), 0);
  }
});

Deno.test("udpPortUnreachable() refuses mixed families and names", () => {
  const data = new Uint8Array(1);
  assert.throws(
    () =>
      udpPortUnreachable({
        src: { hostname: "10.0.0.2", port: 1 },
        dst: { hostname: "fd00:2::1", port: 443 },
        data,
      }),
    SyntaxError,
  );
  assert.throws(
    () =>
      udpPortUnreachable({
        src: { hostname: "10.0.0.2", port: 1 },
        dst: { hostname: "example.com", port: 443 },
        data,
      }),
    SyntaxError,
  );
});

Deno.test("the core takes udpPacket()'s checksum as valid and carries the ICMP error back to the client", () => {
  const pair = new CorePair();
  for (
    const [client, origin] of [["10.0.0.2", "198.51.100.7"], ["fd77:7769:7265::2", "2001:db8::7"]] as const
  ) {
    const src = { hostname: client, port: 50123 };
    const dst = { hostname: origin, port: 443 };
    const data = new TextEncoder().encode(`hello from ${client}`);
    const bytes = (ip: string) => {
      const b = new Uint8Array(16);
      writeIp(ip, b);
      return client.includes(":") ? b : b.slice(12);
    };
    pair.client.ipSend(udpPacket(bytes(client), src.port, bytes(origin), dst.port, data), pair.now);
    pair.pump();
    const got = pair.serverRec.records.findLast((r) => r.kind === "udp");
    assert.ok(got?.kind === "udp", `the server core accepted the datagram from ${client}`);
    assert.equal(got.dst.port, 443);
    assert.deepEqual([...got.data], [...data]);

    const error = udpPortUnreachable({ src, dst, data });
    pair.server.ipSend(error, pair.now);
    pair.pump();
    const back = pair.clientRec.records.findLast((r) => r.kind === "ipPacket");
    assert.ok(back?.kind === "ipPacket", `the error reached ${client}`);
    assert.deepEqual([...back.data], [...error]);
  }
  assert.equal(pair.server.stats().malformedInner, 0);
});
