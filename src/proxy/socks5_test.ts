import assert from "node:assert/strict";
import {
  encodeSocks5Reply,
  encodeSocks5Udp,
  parseSocks5Udp,
  Socks5Error,
  Socks5Handshake,
  type Socks5Step,
} from "./socks5.ts";

const b = (...bytes: number[]) => Uint8Array.of(...bytes);
const text = (s: string) => [...new TextEncoder().encode(s)];

/** Feeds `input` one byte at a time and merges the steps. */
function byteByByte(h: Socks5Handshake, input: Uint8Array): Socks5Step {
  const merged: Socks5Step = { send: [] };
  for (const byte of input) {
    const step = h.feed(b(byte));
    merged.send.push(...step.send);
    if (step.request) merged.request = step.request;
    if (step.error) merged.error = step.error;
    if (step.rest) merged.rest = step.rest;
  }
  return merged;
}

Deno.test("SOCKS5 no-auth CONNECT to an IPv4 address, in one piece and byte by byte", () => {
  const input = b(5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 1, 0x01, 0xbb);
  const whole = new Socks5Handshake().feed(input);
  assert.deepEqual(whole.send, [b(5, 0)]);
  assert.deepEqual(whole.request, {
    command: "connect",
    address: { hostname: "10.0.0.1", port: 443 },
    addressType: "ipv4",
  });
  const split = byteByByte(new Socks5Handshake(), input);
  assert.deepEqual(split.send, [b(5, 0)]);
  assert.deepEqual(split.request, whole.request);
});

Deno.test("SOCKS5 CONNECT to a domain and to IPv6; bytes after the request are handed on", () => {
  const domain = new Socks5Handshake().feed(
    b(5, 2, 0, 2, 5, 1, 0, 3, 11, ...text("example.com"), 0, 80, 0x16, 3, 1),
  );
  assert.deepEqual(domain.request?.address, { hostname: "example.com", port: 80 });
  assert.equal(domain.request?.addressType, "domain");
  assert.deepEqual(domain.rest, b(0x16, 3, 1));
  const v6 = new Socks5Handshake().feed(b(5, 1, 0, 5, 1, 0, 4, ...new Array(15).fill(0), 1, 0x1f, 0x90));
  assert.deepEqual(v6.request?.address, { hostname: "::1", port: 8080 });
  assert.equal(v6.request?.addressType, "ipv6");
});

Deno.test("SOCKS5 username/password (RFC 1929): right and wrong credentials", () => {
  const credentials = { username: "alice", password: "s3cret" };
  const good = byteByByte(
    new Socks5Handshake({ credentials }),
    b(5, 2, 0, 2, 1, 5, ...text("alice"), 6, ...text("s3cret"), 5, 3, 0, 1, 0, 0, 0, 0, 0, 0),
  );
  assert.deepEqual(good.send, [b(5, 2), b(1, 0)]);
  assert.equal(good.request?.command, "udp-associate");
  assert.equal(good.request?.username, "alice");
  const bad = new Socks5Handshake({ credentials }).feed(
    b(5, 1, 2, 1, 5, ...text("alice"), 5, ...text("wrong")),
  );
  assert.deepEqual(bad.send, [b(5, 2), b(1, 1)]);
  assert.match(bad.error!, /authentication failed for user "alice"/);
  // A client that cannot authenticate gets "no acceptable methods".
  const none = new Socks5Handshake({ credentials }).feed(b(5, 1, 0));
  assert.deepEqual(none.send, [b(5, 0xff)]);
  assert.match(none.error!, /requires it/);
});

Deno.test("SOCKS5 refusals: BIND and unknown commands (0x07), unknown address types (0x08)", () => {
  const bind = new Socks5Handshake().feed(b(5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80));
  assert.deepEqual(bind.send, [b(5, 0), encodeSocks5Reply(7)]);
  assert.match(bind.error!, /BIND is not supported/);
  const cmd = new Socks5Handshake().feed(b(5, 1, 0, 5, 9, 0, 1, 1, 2, 3, 4, 0, 80));
  assert.match(cmd.error!, /command 0x09 is not supported/);
  const atyp = new Socks5Handshake().feed(b(5, 1, 0, 5, 1, 0, 7, 1, 2, 3, 4, 0, 80));
  assert.deepEqual(atyp.send[1], encodeSocks5Reply(8));
  assert.match(atyp.error!, /address type 0x07/);
});

Deno.test("SOCKS5 malformed greetings and addresses give one-line reasons", () => {
  const cases: [Uint8Array, RegExp][] = [
    [new TextEncoder().encode("GET / HTTP/1.1\r\n"), /not a SOCKS5 greeting.*looks like HTTP/],
    [b(4, 1, 0, 80, 1, 2, 3, 4, 0), /SOCKS4 is not supported/],
    [b(0x16, 3, 1), /a TLS hello/],
    [b(5, 0), /offers no authentication method/],
    [b(5, 1, 0x80), /only authentication methods the proxy does not use \(80\)/],
    [b(5, 1, 0, 5, 1, 0, 3, 0, 0, 80), /domain name is empty/],
    [b(5, 1, 0, 5, 1, 0, 3, 3, 0x61, 0, 0x62, 0, 80), /domain name holds byte 0x00/],
    [b(5, 1, 0, 4, 1, 0, 1), /bad SOCKS5 request version 0x04/],
  ];
  for (const [input, reason] of cases) {
    const step = new Socks5Handshake().feed(input);
    assert.match(step.error ?? "", reason, `input ${[...input]}`);
  }
  // Cut short: nothing is decided yet.
  const cut = new Socks5Handshake().feed(b(5, 1, 0, 5, 1, 0, 3, 20, 0x61));
  assert.equal(cut.error, undefined);
  assert.equal(cut.request, undefined);
});

Deno.test("SOCKS5 UDP header (RFC 1928 §7) round-trips for IPv4, IPv6 and names", () => {
  for (const hostname of ["192.168.1.2", "2001:db8::5", "resolver.test"]) {
    const data = b(1, 2, 3);
    const parsed = parseSocks5Udp(encodeSocks5Udp({ hostname, port: 53 }, data));
    assert.deepEqual(parsed.address, { hostname, port: 53 });
    assert.equal(parsed.fragment, 0);
    assert.deepEqual(parsed.data, data);
  }
  assert.throws(() => parseSocks5Udp(b(0, 0, 0)), Socks5Error);
  assert.throws(() => parseSocks5Udp(b(0, 0, 0, 1, 1, 2)), /cut short/);
  assert.throws(() => parseSocks5Udp(b(0, 0, 0, 9, 1, 2)), /address type 0x09/);
});
