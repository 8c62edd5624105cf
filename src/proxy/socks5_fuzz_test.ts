/**
 * Property tests of the SOCKS5 codec: any bytes, and mutations of valid handshakes, fed in any
 * split, give a request, a one-line failure, or a wait for more, never an exception; valid
 * handshakes give the same request however they are split; UDP headers round-trip or fail with
 * {@link Socks5Error}. Seeded (see _fuzz.ts).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { encodeAddress, encodeSocks5Udp, parseSocks5Udp, Socks5Error, Socks5Handshake } from "./socks5.ts";
import { check, hostile, onlyThrows, splitAt } from "./_fuzz.ts";

const host = fc.oneof(
  fc.ipV4(),
  fc.ipV6(),
  fc.domain().filter((d) => d.length <= 255),
);
const port = fc.integer({ min: 0, max: 65535 });
const credentials = { username: "user", password: "pass" };

/** A valid client handshake: greeting, optional login, CONNECT or UDP ASSOCIATE. */
const handshake = fc.record({ host, port, auth: fc.boolean(), command: fc.constantFrom(1, 3) }).map((h) => ({
  ...h,
  bytes: Uint8Array.of(
    5,
    1,
    h.auth ? 2 : 0,
    ...(h.auth ? [1, 4, ...new TextEncoder().encode("user"), 4, ...new TextEncoder().encode("pass")] : []),
    5,
    h.command,
    0,
    ...encodeAddress({ hostname: h.host, port: h.port }),
  ),
}));

function run(input: Uint8Array, cuts: number[], auth: boolean) {
  const h = new Socks5Handshake(auth ? { credentials } : {});
  let request, error;
  for (const part of splitAt(input, cuts)) {
    const step = h.feed(part);
    request ??= step.request;
    error ??= step.error;
    if (step.error !== undefined) assert.ok(!step.error.includes("\n") && step.error.length > 0);
  }
  return { request, error };
}

Deno.test("SOCKS5 handshakes give the same request in any split", () => {
  check(
    fc.property(handshake, fc.array(fc.nat(), { maxLength: 6 }), (h, cuts) => {
      const { request, error } = run(h.bytes, cuts, h.auth);
      assert.equal(error, undefined);
      assert.equal(request?.command, h.command === 1 ? "connect" : "udp-associate");
      assert.equal(request?.address.port, h.port);
    }),
    300,
  );
});

Deno.test("SOCKS5 handshakes of random and mutated bytes never throw", () => {
  check(
    fc.property(
      hostile(handshake.map((h) => h.bytes)),
      fc.array(fc.nat(), { maxLength: 6 }),
      fc.boolean(),
      (bytes, cuts, auth) => {
        run(bytes, cuts, auth);
      },
    ),
    1000,
  );
});

Deno.test("SOCKS5 UDP headers round-trip; damaged ones fail with Socks5Error only", () => {
  check(
    fc.property(host, port, fc.uint8Array({ maxLength: 64 }), (hostname, p, data) => {
      const parsed = parseSocks5Udp(encodeSocks5Udp({ hostname, port: p }, data));
      assert.equal(parsed.address.port, p);
      assert.deepEqual(parsed.data, data);
    }),
    300,
  );
  check(
    fc.property(
      hostile(
        fc.uint8Array({ maxLength: 40 }).map((d) => encodeSocks5Udp({ hostname: "1.2.3.4", port: 53 }, d)),
      ),
      (bytes) => {
        onlyThrows([Socks5Error], () => parseSocks5Udp(bytes));
      },
    ),
    1000,
  );
});
