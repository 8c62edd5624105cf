/**
 * Property tests of the WebSocket frame reader: generated streams (masked or not, fragmented,
 * control frames between fragments, every length encoding) give back their messages however the
 * bytes are split; random and mutated streams give messages or a SyntaxError/RangeError, and
 * every message returned keeps the reader's invariants. Seeded (see _fuzz.ts).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { closeCodeOf, type WebSocketMessage, WebSocketReader } from "./websocket.ts";
import { check, concatBytes, hostile, onlyThrows, splitAt } from "./_fuzz.ts";

interface Frame {
  fin: boolean;
  rsv1: boolean;
  opcode: number;
  payload: Uint8Array;
  /** How to write the length: 0 the shortest form, 1 the 16-bit form, 2 the 64-bit form. */
  form: number;
}

/** One frame on the wire, masked with `mask` when given. */
function encodeFrame(f: Frame, mask: Uint8Array | null): Uint8Array {
  const n = f.payload.length;
  const form = n > 0xffff ? 2 : n > 125 ? Math.max(f.form, 1) : f.form;
  const head = [(f.fin ? 0x80 : 0) | (f.rsv1 ? 0x40 : 0) | f.opcode];
  const maskBit = mask ? 0x80 : 0;
  if (form === 0) head.push(maskBit | n);
  else if (form === 1) head.push(maskBit | 126, n >> 8, n & 0xff);
  else head.push(maskBit | 127, 0, 0, 0, 0, n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
  const body = f.payload.slice();
  if (mask) {
    head.push(...mask);
    for (let i = 0; i < body.length; i++) body[i] = body[i]! ^ mask[i & 3]!;
  }
  return concatBytes([new Uint8Array(head), body]);
}

const form = fc.integer({ min: 0, max: 2 });
const control = fc.record({
  opcode: fc.constantFrom(8, 9, 10),
  payload: fc.uint8Array({ maxLength: 125 }),
  form,
});
/** A data message: its fragments, and control frames to send after some of them. */
const dataMessage = fc.record({
  opcode: fc.constantFrom(1, 2),
  rsv1: fc.boolean(),
  fragments: fc.array(fc.record({ payload: fc.uint8Array({ maxLength: 200 }), form }), {
    minLength: 1,
    maxLength: 4,
  }),
  between: fc.array(fc.option(control, { nil: null }), { maxLength: 3 }),
});
const stream = fc.record({
  items: fc.array(fc.oneof(dataMessage, control), { maxLength: 6 }),
  masks: fc.option(fc.array(fc.uint8Array({ minLength: 4, maxLength: 4 }), { minLength: 1, maxLength: 8 }), {
    nil: null,
  }),
  maxRecord: fc.oneof(fc.constant(64 * 1024), fc.nat({ max: 300 })),
}).map(({ items, masks, maxRecord }) => {
  const frames: Uint8Array[] = [];
  const want: WebSocketMessage[] = [];
  let k = 0;
  const emit = (f: Frame) => frames.push(encodeFrame(f, masks ? masks[k++ % masks.length]! : null));
  const expect = (opcode: number, payload: Uint8Array, compressed: boolean) =>
    want.push({
      opcode,
      data: payload.slice(0, maxRecord),
      size: payload.length,
      truncated: payload.length > maxRecord,
      compressed,
    });
  for (const item of items) {
    if ("fragments" in item) {
      item.fragments.forEach((frag, i) => {
        const last = i === item.fragments.length - 1;
        emit({ fin: last, rsv1: i === 0 && item.rsv1, opcode: i === 0 ? item.opcode : 0, ...frag });
        const c = last ? null : item.between[i];
        if (c) {
          emit({ fin: true, rsv1: false, ...c });
          expect(c.opcode, c.payload, false);
        }
      });
      expect(item.opcode, concatBytes(item.fragments.map((f) => f.payload)), item.rsv1);
    } else {
      emit({ fin: true, rsv1: false, ...item });
      expect(item.opcode, item.payload, false);
    }
  }
  return { bytes: concatBytes(frames), want, maxRecord };
});

/** Pushes the pieces and collects the messages. */
function readAll(reader: WebSocketReader, pieces: Uint8Array[]): WebSocketMessage[] {
  return pieces.flatMap((p) => reader.push(p));
}

Deno.test("websocket fuzz: generated streams give back their messages, split anywhere", () => {
  check(
    fc.property(stream, fc.array(fc.nat(), { maxLength: 8 }), ({ bytes, want, maxRecord }, cuts) => {
      const reader = new WebSocketReader({ maxRecord });
      assert.deepEqual(readAll(reader, splitAt(bytes, cuts)), want);
    }),
    500,
  );
});

Deno.test("websocket fuzz: random and mutated streams give messages or a SyntaxError/RangeError", () => {
  check(
    fc.property(
      hostile(stream.map((s) => s.bytes), 600),
      fc.array(fc.nat(), { maxLength: 6 }),
      fc.nat({ max: 200 }),
      (bytes, cuts, maxRecord) => {
        const reader = new WebSocketReader({ maxRecord, maxFrame: 4096 });
        const messages = onlyThrows([SyntaxError, RangeError], () => readAll(reader, splitAt(bytes, cuts))) ??
          [];
        let total = 0;
        for (const m of messages) {
          assert.ok([1, 2, 8, 9, 10].includes(m.opcode), `opcode ${m.opcode}`);
          assert.ok(m.data.length <= maxRecord && m.data.length <= m.size);
          assert.equal(m.truncated, m.data.length < m.size);
          if (m.opcode >= 8) assert.ok(m.size <= 125);
          if (m.opcode === 8) closeCodeOf(m);
          total += m.size;
        }
        assert.ok(total <= bytes.length, "no message is larger than the bytes it came from");
      },
    ),
    4000,
  );
});
