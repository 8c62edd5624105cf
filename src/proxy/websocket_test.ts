import assert from "node:assert/strict";
import { closeCodeOf, type WebSocketMessage, WebSocketReader } from "./websocket.ts";
import { seededRandom } from "./_seeded_random.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Builds one frame: 7, 16 or 64-bit length as needed, masked when a key is given. */
function frame(
  opcode: number,
  payload: Uint8Array,
  { fin = true, rsv1 = false, mask }: { fin?: boolean; rsv1?: boolean; mask?: number[] } = {},
): Uint8Array {
  const head = [(fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode];
  const m = mask ? 0x80 : 0;
  const n = payload.length;
  if (n < 126) head.push(m | n);
  else if (n < 0x10000) head.push(m | 126, n >> 8, n & 0xff);
  else head.push(m | 127, 0, 0, 0, 0, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
  const body = payload.slice();
  if (mask) {
    head.push(...mask);
    for (let i = 0; i < body.length; i++) body[i] = body[i]! ^ mask[i % 4]!;
  }
  return concat([new Uint8Array(head), body]);
}

/** The fields of a message to compare: text as text, binary as its length, close as code and reason. */
function summary(m: WebSocketMessage) {
  return {
    opcode: m.opcode,
    text: m.opcode === 2
      ? `${m.data.length} bytes`
      : m.opcode === 8
      ? `${closeCodeOf(m).code} ${closeCodeOf(m).reason}`
      : dec(m.data),
    size: m.size,
    truncated: m.truncated,
    compressed: m.compressed,
  };
}

const msg = (opcode: number, text: string, extra: { truncated?: boolean; compressed?: boolean } = {}) => ({
  opcode,
  text,
  size: enc(text).length,
  truncated: extra.truncated ?? false,
  compressed: extra.compressed ?? false,
});

Deno.test("WebSocketReader reads the RFC 6455 §5.7 examples", () => {
  const examples: [number[], ReturnType<typeof msg>[]][] = [
    // A single-frame unmasked text message.
    [[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f], [msg(1, "Hello")]],
    // A single-frame masked text message.
    [[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58], [msg(1, "Hello")]],
    // A fragmented unmasked text message.
    [[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f], [msg(1, "Hello")]],
    // An unmasked ping and a masked pong.
    [[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f], [msg(9, "Hello")]],
    [[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58], [msg(10, "Hello")]],
  ];
  for (const [bytes, expected] of examples) {
    assert.deepEqual(new WebSocketReader().push(new Uint8Array(bytes)).map(summary), expected, `${bytes}`);
  }
});

Deno.test("WebSocketReader reads 16-bit and 64-bit payload lengths", () => {
  const pattern = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7) & 0xff);
  for (const n of [125, 126, 256, 65535, 65536, 100_000]) {
    for (const mask of [undefined, [1, 2, 3, 4]]) {
      const wire = frame(2, pattern(n), mask ? { mask } : {});
      assert.equal(wire.length, n + 2 + (n < 126 ? 0 : n < 65536 ? 2 : 8) + (mask ? 4 : 0));
      const [m, ...rest] = new WebSocketReader({ maxRecord: 1 << 20 }).push(wire);
      assert.equal(rest.length, 0);
      assert.deepEqual(m?.data, pattern(n), `${n} bytes, mask ${mask}`);
      assert.equal(m?.size, n);
    }
  }
});

Deno.test("WebSocketReader returns control frames found between fragments as their own messages", () => {
  const mask = [0xde, 0xad, 0xbe, 0xef];
  const wire = concat([
    frame(1, enc("Hel"), { fin: false, mask }),
    frame(9, enc("ping!"), { mask }),
    frame(0, enc(""), { fin: false, mask }),
    frame(0, enc("lo, "), { fin: false, mask }),
    frame(10, enc(""), { mask }),
    frame(0, enc("world"), { mask }),
    frame(8, concat([new Uint8Array([0x03, 0xe8]), enc("bye")]), { mask }),
  ]);
  const messages = new WebSocketReader().push(wire);
  assert.deepEqual(messages.map(summary), [
    msg(9, "ping!"),
    msg(10, ""),
    msg(1, "Hello, world"),
    { ...msg(8, "1000 bye"), size: 5 },
  ]);
  assert.deepEqual(closeCodeOf(messages[3]!), { code: 1000, reason: "bye" });
});

Deno.test("WebSocketReader gives the same messages for input split at any byte", () => {
  const wire = concat([
    frame(1, enc("first"), { mask: [9, 8, 7, 6] }),
    frame(2, new Uint8Array(300).fill(5), { fin: false }),
    frame(9, enc("p"), {}),
    frame(0, new Uint8Array(70_000).fill(6), {}),
    frame(1, enc(""), {}),
    frame(1, enc("ü text"), { mask: [0, 0xff, 0x10, 0x80], rsv1: true }),
    frame(8, new Uint8Array([0x0f, 0xa0]), { mask: [1, 1, 1, 1] }),
  ]);
  const expected = new WebSocketReader({ maxRecord: 1 << 20 }).push(wire);
  assert.deepEqual(expected.map(summary), [
    msg(1, "first"),
    msg(9, "p"),
    { opcode: 2, text: "70300 bytes", size: 70_300, truncated: false, compressed: false },
    msg(1, ""),
    msg(1, "ü text", { compressed: true }),
    { ...msg(8, "4000 "), size: 2 },
  ]);
  const run = (pieces: Uint8Array[]) => {
    const reader = new WebSocketReader({ maxRecord: 1 << 20 });
    return pieces.flatMap((piece) => reader.push(piece));
  };
  assert.deepEqual(run(Array.from(wire, (_, i) => wire.subarray(i, i + 1))), expected, "one byte at a time");
  const next = seededRandom(7);
  for (let round = 0; round < 100; round++) {
    const cuts = Array.from({ length: 1 + Math.floor(next() * 20) }, () => Math.floor(next() * wire.length))
      .toSorted((a, b) => a - b);
    const points = [0, ...cuts, wire.length];
    assert.deepEqual(
      run(points.slice(1).map((end, i) => wire.subarray(points[i], end))),
      expected,
      `${cuts}`,
    );
  }
});

Deno.test("WebSocketReader truncates records to maxRecord but keeps the full size", () => {
  const text = "abcdefghijklmnopqrstuvwxyz";
  const reader = new WebSocketReader({ maxRecord: 10 });
  const wire = concat([
    frame(1, enc(text.slice(0, 4)), { fin: false, mask: [1, 2, 3, 4] }),
    frame(0, enc(text.slice(4)), { mask: [5, 6, 7, 8] }),
    frame(2, new Uint8Array(1000).fill(1)),
    frame(1, enc("short")),
  ]);
  const messages = Array.from(wire, (_, i) => reader.push(wire.subarray(i, i + 1))).flat();
  assert.deepEqual(messages.map(summary), [
    { ...msg(1, text.slice(0, 10), { truncated: true }), size: 26 },
    { opcode: 2, text: "10 bytes", size: 1000, truncated: true, compressed: false },
    msg(1, "short"),
  ]);
});

Deno.test("WebSocketReader copies payloads, so the caller may reuse its buffer", () => {
  const wire = frame(2, new Uint8Array([1, 2, 3]));
  const [m] = new WebSocketReader().push(wire);
  wire.fill(0);
  assert.deepEqual(m?.data, new Uint8Array([1, 2, 3]));
});

Deno.test("WebSocketReader throws SyntaxError on protocol errors", () => {
  const cases: [Uint8Array[], RegExp][] = [
    [[frame(9, new Uint8Array(126))], /control frame of 126 bytes/],
    [[frame(8, new Uint8Array(2), { fin: false })], /fragmented control frame/],
    [[frame(0, enc("lo"))], /continuation without a start/],
    [[frame(1, enc("a"), { fin: false }), frame(1, enc("b"))], /new message/],
    [[frame(1, enc("a")), frame(0, enc("b"))], /continuation without a start/],
    [[frame(3, enc("a"))], /reserved opcode 3/],
    [[frame(7, enc("a"))], /reserved opcode 7/],
    [[frame(11, enc("a"))], /reserved opcode 11/],
    [[frame(15, enc("a"))], /reserved opcode 15/],
    [[frame(9, enc("a"), { rsv1: true })], /RSV1 set on control/],
    [[frame(1, enc("a"), { fin: false }), frame(0, enc("b"), { rsv1: true })], /RSV1 set on a continuation/],
    [[new Uint8Array([0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1])], /top bit/],
  ];
  for (const [frames, message] of cases) {
    assert.throws(() => new WebSocketReader().push(concat(frames)), SyntaxError, String(message));
    assert.throws(() => new WebSocketReader().push(concat(frames)), message);
  }
});

Deno.test("WebSocketReader throws RangeError for frames over maxFrame", () => {
  const reader = new WebSocketReader({ maxFrame: 1000 });
  assert.equal(reader.push(frame(2, new Uint8Array(1000))).length, 1);
  assert.throws(() => reader.push(frame(2, new Uint8Array(1001)).subarray(0, 4)), RangeError);
  const huge = new Uint8Array([0x82, 0x7f, 0, 0, 0x01, 0, 0, 0, 0, 0]);
  assert.throws(() => new WebSocketReader().push(huge), /exceeds 67108864/);
});

Deno.test("closeCodeOf() reads the status code and reason of a close message", () => {
  const close = (payload: Uint8Array) => new WebSocketReader().push(frame(8, payload))[0]!;
  assert.deepEqual(closeCodeOf(close(concat([new Uint8Array([0x03, 0xe9]), enc("going ✈")]))), {
    code: 1001,
    reason: "going ✈",
  });
  assert.deepEqual(closeCodeOf(close(new Uint8Array([0x0f, 0xa0]))), { code: 4000, reason: "" });
  assert.deepEqual(closeCodeOf(close(new Uint8Array(0))), { reason: "" });
  assert.throws(() => closeCodeOf(new WebSocketReader().push(frame(1, enc("x")))[0]!), TypeError);
});
