/**
 * Property tests of the HTTP/1 codec: random and mutated bytes only ever give `null`, a result
 * or an Http1Error; serialized heads and chunked bodies decode to what was encoded, however the
 * bytes are split. Seeded (see _fuzz.ts).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  BodyDecoder,
  type BodyFraming,
  type Headers1,
  Http1Error,
  parseRequestHead,
  parseResponseHead,
  requestFraming,
  type RequestHead,
  responseFraming,
  type ResponseHead,
  serializeRequestHead,
  serializeResponseHead,
} from "./http1.ts";
import { check, concatBytes, hostile, latin1, mutated, onlyThrows, splitAt } from "./_fuzz.ts";

const token = fc.stringMatching(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}$/);
const trimOws = (s: string) => s.replace(/^[ \t]+|[ \t]+$/g, "");
/** Latin1 text without the bytes a value may not hold (NUL, CR, LF), trimmed as parsed. */
const fieldValue = fc.array(
  fc.integer({ min: 1, max: 255 }).filter((c) => c !== 0x0a && c !== 0x0d),
  { maxLength: 40 },
).map((codes) => trimOws(String.fromCharCode(...codes)));
const wellKnownName = fc.constantFrom("Host", "Content-Length", "Transfer-Encoding", "Connection", "X-A");
const headers: fc.Arbitrary<Headers1> = fc.array(
  fc.tuple(fc.oneof(token, wellKnownName), fieldValue),
  { maxLength: 16 },
);
const target = fc.array(
  fc.integer({ min: 0x21, max: 0xff }).filter((c) => c !== 0x7f),
  { minLength: 1, maxLength: 60 },
).map((codes) => String.fromCharCode(...codes));
const version = fc.constantFrom("HTTP/1.0", "HTTP/1.1");

const requestHead: fc.Arbitrary<RequestHead> = fc.record({ method: token, target, version, headers }, {
  noNullPrototype: true,
});
const responseHead: fc.Arbitrary<ResponseHead> = fc.record({
  version,
  status: fc.integer({ min: 100, max: 999 }),
  reason: fc.array(
    fc.integer({ min: 0x09, max: 0xff }).filter((c) => c === 0x09 || (c >= 0x20 && c !== 0x7f)),
    { maxLength: 30 },
  ).map((codes) => String.fromCharCode(...codes)),
  headers,
}, { noNullPrototype: true });

/** A request head as sent, sometimes with bare LF line endings and empty lines before it. */
const requestBytes = fc.tuple(requestHead, fc.boolean(), fc.nat({ max: 2 })).map(([head, bareLf, lead]) => {
  const bytes = serializeRequestHead(head);
  const text = "\r\n".repeat(lead) + String.fromCharCode(...bytes);
  return latin1(bareLf ? text.replaceAll("\r\n", "\n") : text);
});
const responseBytes = responseHead.map(serializeResponseHead);

/** The framings a decoder may be given. */
const framing: fc.Arbitrary<BodyFraming> = fc.oneof(
  fc.constant({ kind: "chunked" as const }),
  fc.constant({ kind: "close" as const }),
  fc.constant({ kind: "none" as const }),
  fc.nat({ max: 4096 }).map((length) => ({ kind: "length" as const, length })),
);

/** A chunked body: its payload pieces, the wire bytes, and the trailers. */
interface Chunked {
  pieces: Uint8Array[];
  wire: Uint8Array;
  trailers: Headers1;
}

const chunked: fc.Arbitrary<Chunked> = fc.record({
  pieces: fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 6 }),
  sizes: fc.array(fc.record({ zeros: fc.nat({ max: 3 }), upper: fc.boolean() }), {
    minLength: 7,
    maxLength: 7,
  }),
  extensions: fc.array(fc.constantFrom("", ";a=b", " ;x", ';q="1 2"', ";\tv"), {
    minLength: 7,
    maxLength: 7,
  }),
  trailers: fc.array(fc.tuple(token, fieldValue), { maxLength: 3 }),
}).map(({ pieces, sizes, extensions, trailers }) => {
  const parts: Uint8Array[] = [];
  const sizeLine = (n: number, i: number) => {
    const hex = n.toString(16);
    return latin1(
      "0".repeat(sizes[i]!.zeros) + (sizes[i]!.upper ? hex.toUpperCase() : hex) + extensions[i]! + "\r\n",
    );
  };
  pieces.forEach((p, i) => parts.push(sizeLine(p.length, i), p, latin1("\r\n")));
  parts.push(sizeLine(0, 6));
  for (const [name, value] of trailers) parts.push(latin1(`${name}: ${value}\r\n`));
  parts.push(latin1("\r\n"));
  return { pieces, wire: concatBytes(parts), trailers };
});

/** Feeds `pieces` to a decoder; checks it consumes every byte until done; returns what it gave. */
function decodeAll(decoder: BodyDecoder, pieces: Uint8Array[]): { data: Uint8Array; used: number } {
  const data: Uint8Array[] = [];
  let used = 0;
  for (const piece of pieces) {
    const r = decoder.push(piece);
    assert.ok(r.used >= 0 && r.used <= piece.length, `used ${r.used} of ${piece.length}`);
    if (!r.done) assert.equal(r.used, piece.length, "a decoder that is not done consumes all it is given");
    data.push(...r.data);
    used += r.used;
    if (r.done) break;
  }
  return { data: concatBytes(data), used };
}

Deno.test("http1 fuzz: request heads round-trip through serialize and parse, split anywhere", () => {
  check(
    fc.property(requestHead, fc.uint8Array({ maxLength: 8 }), (head, next) => {
      const bytes = serializeRequestHead(head);
      assert.deepEqual(parseRequestHead(concatBytes([bytes, next])), { head, size: bytes.length });
      // Every strict prefix only asks for more bytes.
      for (let n = 0; n < bytes.length; n += 1 + (n >> 3)) {
        assert.equal(parseRequestHead(bytes.subarray(0, n)), null);
      }
    }),
    300,
  );
});

Deno.test("http1 fuzz: response heads round-trip through serialize and parse", () => {
  check(
    fc.property(responseHead, (head) => {
      const bytes = serializeResponseHead(head);
      assert.deepEqual(parseResponseHead(bytes), { head, size: bytes.length });
      for (let n = 0; n < bytes.length; n += 1 + (n >> 3)) {
        assert.equal(parseResponseHead(bytes.subarray(0, n)), null);
      }
    }),
    300,
  );
});

Deno.test("http1 fuzz: random and mutated request heads give null, a head or an Http1Error", () => {
  check(
    fc.property(hostile(requestBytes), (bytes) => {
      const r = onlyThrows(
        [Http1Error],
        () => parseRequestHead(bytes, { maxHeadBytes: 400, maxHeaders: 10 }),
      );
      if (!r) return;
      assert.ok(r.size > 0 && r.size <= bytes.length);
      onlyThrows([Http1Error], () => requestFraming(r.head));
      // What was parsed serializes (it holds no byte that would break framing).
      assert.deepEqual(parseRequestHead(serializeRequestHead(r.head))?.head, r.head);
    }),
    3000,
  );
});

Deno.test("http1 fuzz: random and mutated response heads give null, a head or an Http1Error", () => {
  check(
    fc.property(hostile(responseBytes), fc.constantFrom("GET", "HEAD", "CONNECT"), (bytes, method) => {
      const r = onlyThrows(
        [Http1Error],
        () => parseResponseHead(bytes, { maxHeadBytes: 400, maxHeaders: 10 }),
      );
      if (!r) return;
      assert.ok(r.size > 0 && r.size <= bytes.length);
      onlyThrows([Http1Error], () => responseFraming(method, r.head));
      assert.deepEqual(parseResponseHead(serializeResponseHead(r.head))?.head, r.head);
    }),
    3000,
  );
});

Deno.test("http1 fuzz: framing of arbitrary header lists is a framing or an Http1Error", () => {
  const framingValue = fc.oneof(
    fc.constantFrom("chunked", "gzip, chunked", "chunked, gzip", "identity", ",", "", " chunked ;a=1"),
    fc.stringMatching(/^[0-9 ,]{0,25}$/),
    fc.string({ maxLength: 12 }),
  );
  const framingHeaders = fc.array(
    fc.tuple(fc.constantFrom("Content-Length", "transfer-encoding", "TRANSFER-ENCODING", "X"), framingValue),
    { maxLength: 4 },
  );
  check(
    fc.property(
      framingHeaders,
      version,
      fc.integer({ min: 100, max: 999 }),
      fc.constantFrom("GET", "HEAD", "CONNECT"),
      (hs, v, status, method) => {
        for (
          const f of [
            onlyThrows([Http1Error], () => requestFraming({ method, target: "/", version: v, headers: hs })),
            onlyThrows(
              [Http1Error],
              () => responseFraming(method, { version: v, status, reason: "", headers: hs }),
            ),
          ]
        ) {
          if (f?.kind === "length") assert.ok(Number.isSafeInteger(f.length) && f.length >= 0);
          // Every framing a parser returns is one a decoder accepts.
          if (f) new BodyDecoder(f);
        }
      },
    ),
    3000,
  );
});

Deno.test("http1 fuzz: chunked bodies decode to their payload and trailers, split anywhere", () => {
  check(
    fc.property(
      chunked,
      fc.array(fc.nat(), { maxLength: 6 }),
      fc.uint8Array({ maxLength: 8 }),
      (c, cuts, next) => {
        const decoder = new BodyDecoder({ kind: "chunked" });
        const { data, used } = decodeAll(decoder, splitAt(concatBytes([c.wire, next]), cuts));
        assert.ok(decoder.done);
        assert.equal(used, c.wire.length, "bytes after the body are left for the next message");
        assert.deepEqual(data, concatBytes(c.pieces));
        assert.deepEqual(decoder.trailers, c.trailers);
      },
    ),
    500,
  );
});

Deno.test("http1 fuzz: random and mutated bodies give pieces or an Http1Error, never a stall", () => {
  const body = fc.oneof(chunked.map((c) => c.wire), fc.uint8Array({ maxLength: 64 }));
  check(
    fc.property(
      framing,
      hostile(body),
      fc.array(fc.nat(), { maxLength: 4 }),
      fc.boolean(),
      (f, bytes, cuts, end) => {
        const decoder = new BodyDecoder(f);
        const r = onlyThrows([Http1Error], () => decodeAll(decoder, splitAt(bytes, cuts)));
        if (r && end) onlyThrows([Http1Error], () => decoder.end());
        if (r && f.kind === "length") assert.ok(r.used <= f.length);
      },
    ),
    3000,
  );
});

Deno.test("http1 fuzz: serializing arbitrary heads gives bytes that parse back, or a TypeError", () => {
  const anyText = fc.string({ maxLength: 12, unit: "binary" });
  check(
    fc.property(
      fc.record({ method: anyText, target: anyText, version: fc.oneof(version, anyText) }),
      fc.array(fc.tuple(anyText, anyText), { maxLength: 3 }),
      (start, hs) => {
        const bytes = onlyThrows([TypeError], () => serializeRequestHead({ ...start, headers: hs }));
        if (bytes) {
          const r = onlyThrows([Http1Error], () => parseRequestHead(bytes));
          // A serialized head is complete; only the version may be refused (505).
          if (r === undefined) assert.ok(start.version !== "HTTP/1.0" && start.version !== "HTTP/1.1");
          else assert.equal(r?.size, bytes.length);
        }
      },
    ),
    1000,
  );
});

Deno.test("http1 fuzz: mutated valid heads keep parsing to the same result when split", () => {
  // A parser that is called again with more bytes must agree with one that got them at once.
  check(
    fc.property(mutated(requestBytes), fc.nat(), (bytes, cut) => {
      const whole = onlyThrows([Http1Error], () => parseRequestHead(bytes));
      const prefix = onlyThrows(
        [Http1Error],
        () => parseRequestHead(bytes.subarray(0, cut % (bytes.length + 1))),
      );
      if (prefix) assert.deepEqual(whole, prefix);
    }),
    800,
  );
});
