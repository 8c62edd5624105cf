/**
 * Property tests of the first look at a connection: ClientHellos built from generated fields
 * parse back to those fields however they are cut into records and however little of them has
 * arrived; random and mutated bytes give `null`, a hello or a SyntaxError (and the classifier
 * never throws); a decision made on a prefix is the decision on the whole. Seeded (see _fuzz.ts).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { classifyFirstBytes, type ClientHello, parseClientHello } from "./client_hello.ts";
import { check, concatBytes, hostile, onlyThrows } from "./_fuzz.ts";

const u16 = (n: number) => [n >> 8, n & 0xff];
const u24 = (n: number) => [n >> 16, (n >> 8) & 0xff, n & 0xff];
const vec8 = (b: Uint8Array | number[]) => [b.length, ...b];
const vec16 = (b: Uint8Array | number[]) => [...u16(b.length), ...b];

/** The fields of a hello, and extensions the parser skips. */
const helloFields = fc.record({
  legacyVersion: fc.oneof(fc.constant(0x0303), fc.integer({ min: 0, max: 0xffff })),
  random: fc.uint8Array({ minLength: 32, maxLength: 32 }),
  sessionId: fc.uint8Array({ maxLength: 32 }),
  cipherSuites: fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 1, maxLength: 20 }),
  compression: fc.uint8Array({ minLength: 1, maxLength: 3 }),
  sni: fc.option(
    fc.array(fc.integer({ min: 0x21, max: 0x7e }), { minLength: 1, maxLength: 80 })
      .map((c) => String.fromCharCode(...c)),
    { nil: undefined },
  ),
  alpn: fc.option(
    fc.array(
      fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 12 }).map((c) =>
        String.fromCharCode(...c)
      ),
      { minLength: 1, maxLength: 4 },
    ),
    { nil: undefined },
  ),
  supportedVersions: fc.option(
    fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 1, maxLength: 8 }),
    {
      nil: undefined,
    },
  ),
  supportedGroups: fc.option(fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 8 }), {
    nil: undefined,
  }),
  signatureSchemes: fc.option(fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 8 }), {
    nil: undefined,
  }),
  others: fc.uniqueArray(
    fc.record({
      type: fc.integer({ min: 1, max: 0xffff }).filter((t) => ![10, 13, 16, 43].includes(t)),
      data: fc.uint8Array({ maxLength: 40 }),
    }),
    { selector: (e) => e.type, maxLength: 5 },
  ),
  order: fc.nat(),
  noExtensions: fc.boolean(),
}, { noNullPrototype: true });

type Fields = typeof helloFields extends fc.Arbitrary<infer T> ? T : never;

/** The handshake message (type, length, body) of a hello with these fields. */
function helloMessage(f: Fields): Uint8Array {
  const exts: number[][] = [];
  if (f.sni !== undefined) {
    const name = [...f.sni].map((c) => c.charCodeAt(0));
    exts.push([...u16(0), ...vec16(vec16([0, ...vec16(name)]))]);
  }
  if (f.alpn !== undefined) {
    const list = f.alpn.flatMap((p) => vec8([...p].map((c) => c.charCodeAt(0))));
    exts.push([...u16(16), ...vec16(vec16(list))]);
  }
  if (f.supportedVersions !== undefined) {
    exts.push([...u16(43), ...vec16(vec8(f.supportedVersions.flatMap(u16)))]);
  }
  if (f.supportedGroups !== undefined) {
    exts.push([...u16(10), ...vec16(vec16(f.supportedGroups.flatMap(u16)))]);
  }
  if (f.signatureSchemes !== undefined) {
    exts.push([...u16(13), ...vec16(vec16(f.signatureSchemes.flatMap(u16)))]);
  }
  for (const e of f.others) exts.push([...u16(e.type), ...vec16(e.data)]);
  // Rotate, so the extensions the parser reads are not always first.
  const shift = exts.length === 0 ? 0 : f.order % exts.length;
  const ordered = [...exts.slice(shift), ...exts.slice(0, shift)].flat();
  const body = [
    ...u16(f.legacyVersion),
    ...f.random,
    ...vec8(f.sessionId),
    ...vec16(f.cipherSuites.flatMap(u16)),
    ...vec8(f.compression),
    ...(exts.length === 0 && f.noExtensions ? [] : vec16(ordered)),
  ];
  return new Uint8Array([1, ...u24(body.length), ...body]);
}

/** What the parser should return for these fields. */
function expected(f: Fields): ClientHello {
  const hello: ClientHello = {
    alpn: f.alpn ?? [],
    legacyVersion: f.legacyVersion,
    supportedVersions: f.supportedVersions ?? [],
    cipherSuites: f.cipherSuites,
    supportedGroups: f.supportedGroups ?? [],
    signatureSchemes: f.signatureSchemes ?? [],
  };
  if (f.sni !== undefined) hello.sni = f.sni;
  return hello;
}

/** A message cut into TLS handshake records of the given sizes (the last takes the rest). */
function inRecords(message: Uint8Array, sizes: number[], minor: number): Uint8Array {
  const records: Uint8Array[] = [];
  let at = 0;
  for (let i = 0; at < message.length; i++) {
    const size = Math.min(message.length - at, 1 + (sizes[i] ?? 16383) % 16384);
    records.push(new Uint8Array([22, 3, minor, ...u16(size)]), message.subarray(at, at + size));
    at += size;
  }
  return concatBytes(records);
}

const helloBytes = fc.tuple(
  helloFields,
  fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 4 }),
  fc.integer({ min: 0, max: 4 }),
).map(([f, sizes, minor]) => ({ fields: f, bytes: inRecords(helloMessage(f), sizes, minor) }));

/** An HTTP request line and head, for the other branch of the classifier. */
const httpBytes = fc.tuple(
  fc.constantFrom("GET", "POST", "CONNECT", "M-SEARCH"),
  fc.stringMatching(/^[!-~]{1,30}$/),
  fc.constantFrom("\r\n", "\n"),
).map(([m, t, eol]) => new TextEncoder().encode(`${m} ${t} HTTP/1.1${eol}Host: a${eol}${eol}`));

const firstBytes = fc.oneof(helloBytes.map((h) => h.bytes), httpBytes);

Deno.test("client_hello fuzz: generated hellos parse back to their fields, in any records", () => {
  check(
    fc.property(helloBytes, fc.uint8Array({ maxLength: 8 }), ({ fields, bytes }, after) => {
      const want = expected(fields);
      assert.deepEqual(parseClientHello(concatBytes([bytes, after])), want);
      assert.deepEqual(classifyFirstBytes(bytes), { kind: "tls", hello: want });
    }),
    500,
  );
});

Deno.test("client_hello fuzz: every prefix of a hello asks for more bytes", () => {
  check(
    fc.property(helloBytes, ({ bytes }) => {
      for (let n = 0; n < bytes.length; n += 1 + (n >> 4)) {
        const prefix = bytes.subarray(0, n);
        assert.equal(parseClientHello(prefix), null, `prefix of ${n} bytes`);
        assert.deepEqual(classifyFirstBytes(prefix), { kind: "need-more" });
      }
    }),
    300,
  );
});

Deno.test("client_hello fuzz: random and mutated bytes give null, a hello or a SyntaxError", () => {
  check(
    fc.property(hostile(helloBytes.map((h) => h.bytes), 300), (bytes) => {
      const hello = onlyThrows([SyntaxError], () => parseClientHello(bytes));
      if (hello) {
        assert.ok(hello.cipherSuites.length > 0);
        if (hello.sni !== undefined) assert.match(hello.sni, /^[!-~]+$/);
      }
    }),
    4000,
  );
});

Deno.test("client_hello fuzz: the classifier never throws and a decision on a prefix is final", () => {
  check(
    fc.property(hostile(firstBytes, 300), fc.nat(), (bytes, cut) => {
      const whole = classifyFirstBytes(bytes);
      assert.ok(["need-more", "tls", "http", "tcp"].includes(whole.kind));
      const prefix = classifyFirstBytes(bytes.subarray(0, cut % (bytes.length + 1)));
      if (prefix.kind !== "need-more") assert.deepEqual(whole, prefix);
    }),
    4000,
  );
});
