import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeProtobuf, formatProtobuf, type ProtoField, splitGrpcFrames } from "./ui/protobuf.ts";
import { charsetOf, decodeText, pickView, prettyMarkup, protobufText } from "./ui/content_views.ts";

const bytes = (...b: number[]) => Uint8Array.from(b);
const enc = new TextEncoder();

function varint(v: bigint): number[] {
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}

/** The wire encoding of fields (the test's own encoder, after the protobuf spec). */
function encode(fields: ProtoField[]): number[] {
  const out: number[] = [];
  for (const f of fields) {
    const wire = { varint: 0, fixed64: 1, string: 2, message: 2, bytes: 2, fixed32: 5 }[f.wire];
    out.push(...varint(BigInt(f.field) << 3n | BigInt(wire)));
    if (f.wire === "varint") out.push(...varint(f.value));
    else if (f.wire === "fixed64") {
      const d = new DataView(new ArrayBuffer(8));
      d.setBigUint64(0, f.value, true);
      out.push(...new Uint8Array(d.buffer));
    } else if (f.wire === "fixed32") {
      const d = new DataView(new ArrayBuffer(4));
      d.setUint32(0, f.value, true);
      out.push(...new Uint8Array(d.buffer));
    } else {
      const data = f.wire === "string"
        ? [...enc.encode(f.value)]
        : f.wire === "message"
        ? encode(f.value)
        : [...f.value];
      out.push(...varint(BigInt(data.length)), ...data);
    }
  }
  return out;
}

Deno.test("protobuf: the wire types, nesting, text, bytes and a negative int64", () => {
  const msg = bytes(
    0x08,
    0x96,
    0x01, // 1: 150
    0x12,
    0x07,
    ...enc.encode("testing"), // 2: "testing"
    0x1a,
    0x02,
    0x08,
    0x02, // 3 { 1: 2 }
    0x21,
    0,
    0,
    0,
    0,
    0,
    0,
    0xf8,
    0x3f, // 4: double 1.5
    0x2d,
    0,
    0,
    0x20,
    0x40, // 5: float 2.5
    0x32,
    0x02,
    0xff,
    0x00, // 6: bytes that are no message
    0x38,
    ...varint(0xffffffffffffffffn), // 7: int64 -1
  );
  const fields = decodeProtobuf(msg);
  assert.deepEqual(fields, [
    { field: 1, wire: "varint", value: 150n },
    { field: 2, wire: "string", value: "testing" },
    { field: 3, wire: "message", value: [{ field: 1, wire: "varint", value: 2n }] },
    { field: 4, wire: "fixed64", value: 0x3ff8000000000000n },
    { field: 5, wire: "fixed32", value: 0x40200000 },
    { field: 6, wire: "bytes", value: bytes(0xff, 0x00) },
    { field: 7, wire: "varint", value: 0xffffffffffffffffn },
  ]);
  assert.equal(
    formatProtobuf(fields!),
    [
      "1: 150",
      '2: "testing"',
      "3 {",
      "  1: 2",
      "}",
      "4: 0x3ff8000000000000 (double 1.5)",
      "5: 0x40200000 (float 2.5)",
      "6: bytes ff 00",
      "7: 18446744073709551615 (int64 -1)",
    ].join("\n"),
  );
});

Deno.test("protobuf: what is not a message is null (truncated, field 0, groups, a length past the end)", () => {
  assert.equal(decodeProtobuf(bytes(0x08)), null, "a tag without its value");
  assert.equal(decodeProtobuf(bytes(0x08, 0x96)), null, "a truncated varint");
  assert.equal(decodeProtobuf(bytes(0x00, 0x01)), null, "field number 0");
  assert.equal(decodeProtobuf(bytes(0x0b, 0x0c)), null, "a group (wire types 3, 4)");
  assert.equal(decodeProtobuf(bytes(0x12, 0x05, 0x61)), null, "a length past the end");
  assert.equal(decodeProtobuf(bytes(0x09, 1, 2, 3)), null, "a short fixed64");
  assert.equal(decodeProtobuf(bytes(0x08, ...Array(11).fill(0x80))), null, "a varint over ten bytes");
  assert.deepEqual(decodeProtobuf(bytes()), [], "the empty message");
});

Deno.test("protobuf: what an encoder writes decodes back (random messages)", () => {
  const leaf = fc.oneof(
    fc.record({
      field: fc.integer({ min: 1, max: 0x1fffffff }),
      wire: fc.constant("varint" as const),
      value: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    }),
    fc.record({
      field: fc.integer({ min: 1, max: 1000 }),
      wire: fc.constant("fixed64" as const),
      value: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    }),
    fc.record({
      field: fc.integer({ min: 1, max: 1000 }),
      wire: fc.constant("fixed32" as const),
      value: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
    }),
    fc.record({
      field: fc.integer({ min: 1, max: 1000 }),
      wire: fc.constant("string" as const),
      value: fc.string({ minLength: 1, unit: fc.constantFrom(..."abc xyz-_.:/ é€") }),
    }),
  ) as fc.Arbitrary<ProtoField>;
  const message = fc.letrec<{ msg: ProtoField[] }>((tie) => ({
    msg: fc.array(
      fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        leaf,
        fc.record({
          field: fc.integer({ min: 1, max: 100 }),
          wire: fc.constant("message" as const),
          value: tie("msg"),
        }).filter((f) => (f.value as ProtoField[]).length > 0) as fc.Arbitrary<ProtoField>,
      ),
      { maxLength: 6 },
    ),
  })).msg;
  fc.assert(
    fc.property(message, (fields) => {
      // A nested message whose bytes happen to be printable UTF-8 reads as text: compare the re-encoding.
      const wire = Uint8Array.from(encode(fields));
      const back = decodeProtobuf(wire);
      assert.ok(back);
      assert.deepEqual(Uint8Array.from(encode(back)), wire);
    }),
    { numRuns: 300 },
  );
});

Deno.test("gRPC bodies: length-prefixed messages split, a partial one is not a body", async () => {
  const one = bytes(0x08, 0x01);
  const two = bytes(0x12, 0x02, 0x68, 0x69);
  const body = bytes(0, 0, 0, 0, 2, ...one, 0, 0, 0, 0, 4, ...two, 0, 0, 0, 0, 0);
  assert.deepEqual(splitGrpcFrames(body), [
    { compressed: false, data: one },
    { compressed: false, data: two },
    { compressed: false, data: bytes() },
  ]);
  assert.equal(splitGrpcFrames(body.subarray(0, body.length - 2)), null);
  assert.equal(splitGrpcFrames(bytes(2, 0, 0, 0, 0)), null, "a flag other than 0 and 1");
  assert.equal(
    await protobufText(body, "application/grpc+proto"),
    'message 1 (2 bytes):\n  1: 1\n\nmessage 2 (4 bytes):\n  2: "hi"\n\nmessage 3 (0 bytes):\n  (empty)',
  );
  // A compressed message (grpc-encoding: gzip) is unzipped first.
  const zipped = new Uint8Array(
    await new Response(new Blob([two]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer(),
  );
  const framed = bytes(1, ...new Uint8Array(new Uint32Array([zipped.length]).buffer).reverse(), ...zipped);
  assert.match(
    await protobufText(framed, "application/grpc"),
    /^message 1 \(\d+ bytes, gzip\):\n {2}2: "hi"$/,
  );
});

Deno.test("content views: picked by type; charset from Content-Type; markup indented", () => {
  assert.equal(pickView("application/grpc", undefined), "protobuf");
  assert.equal(pickView("application/x-protobuf", undefined), "protobuf");
  assert.equal(pickView("application/problem+json", "{}"), "json");
  assert.equal(pickView("text/html; charset=utf-8", "<p>"), "markup");
  assert.equal(pickView("application/xml", "<a/>"), "markup");
  assert.equal(pickView("image/svg+xml", undefined), "image");
  assert.equal(pickView("text/plain; charset=windows-1251", "x"), "text");
  assert.equal(pickView("application/octet-stream", undefined), "hex");
  assert.equal(charsetOf('text/plain; charset="Windows-1251"'), "windows-1251");
  assert.equal(charsetOf("text/plain"), "");
  // "Привет" in windows-1251, and Latin-1's é.
  assert.equal(decodeText(bytes(0xcf, 0xf0, 0xe8, 0xe2, 0xe5, 0xf2), "windows-1251"), "Привет");
  assert.equal(decodeText(bytes(0x63, 0x61, 0x66, 0xe9), "iso-8859-1"), "café");
  assert.equal(decodeText(bytes(0x68, 0x69), "no-such-charset"), "hi");
  assert.equal(
    prettyMarkup(
      '<!doctype html><html><head><meta charset="utf-8"><script>if (a<b) x()</script></head>' +
        "<body><p>Hello <b>there</b></p><br/></body></html>",
    ),
    [
      "<!doctype html>",
      "<html>",
      "  <head>",
      '    <meta charset="utf-8">',
      "    <script>if (a<b) x()</script>",
      "  </head>",
      "  <body>",
      "    <p>",
      "      Hello",
      "      <b>",
      "        there",
      "      </b>",
      "    </p>",
      "    <br/>",
      "  </body>",
      "</html>",
    ].join("\n"),
  );
  assert.equal(
    prettyMarkup('<?xml version="1.0"?><a><b x="1"/><c>t</c></a>'),
    [
      '<?xml version="1.0"?>',
      "<a>",
      '  <b x="1"/>',
      "  <c>",
      "    t",
      "  </c>",
      "</a>",
    ].join("\n"),
  );
});
