import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ErrorCode,
  type Frame,
  FrameReader,
  headerFrames,
  Http2Error,
  parseFrame,
  readFrameHeader,
  serializeFrame,
} from "./frames.ts";

function roundTrip(f: Frame): Frame {
  const bytes = serializeFrame(f);
  const h = readFrameHeader(bytes);
  assert.equal(h.length, bytes.length - 9);
  return parseFrame(h, bytes.subarray(9));
}
const b = (...xs: number[]) => Uint8Array.from(xs);
/** A raw frame from its parts. */
function raw(type: number, flags: number, streamId: number, payload: Uint8Array): Uint8Array {
  return serializeFrame({ type: "unknown", frameType: type, flags, streamId, payload });
}
function parseRaw(bytes: Uint8Array): Frame {
  return parseFrame(readFrameHeader(bytes), bytes.subarray(9));
}
function expectError(bytes: Uint8Array, code: number, streamId: number): void {
  assert.throws(() => parseRaw(bytes), (e: unknown) => {
    assert.ok(e instanceof Http2Error, String(e));
    assert.equal(e.code, code, e.message);
    assert.equal(e.streamId, streamId, e.message);
    return true;
  });
}

Deno.test("frames: every type round-trips", () => {
  const frames: Frame[] = [
    { type: "data", streamId: 1, data: b(1, 2, 3), endStream: true },
    { type: "data", streamId: 3, data: b(9), endStream: false, padLength: 5 },
    { type: "headers", streamId: 5, block: b(0x82, 0x84), endStream: false, endHeaders: true },
    {
      type: "headers",
      streamId: 7,
      block: b(0x82),
      endStream: true,
      endHeaders: false,
      priority: { exclusive: true, dependency: 3, weight: 256 },
      padLength: 3,
    },
    { type: "priority", streamId: 9, priority: { exclusive: false, dependency: 0, weight: 16 } },
    { type: "rst_stream", streamId: 11, code: ErrorCode.CANCEL },
    { type: "settings", ack: false, settings: [[1, 4096], [3, 100], [4, 65535], [5, 16384], [0x99, 7]] },
    { type: "settings", ack: true, settings: [] },
    { type: "push_promise", streamId: 1, promisedStreamId: 2, block: b(0x82), endHeaders: true },
    { type: "ping", ack: true, data: b(1, 2, 3, 4, 5, 6, 7, 8) },
    { type: "goaway", lastStreamId: 13, code: ErrorCode.ENHANCE_YOUR_CALM, debug: b(0x68, 0x69) },
    { type: "window_update", streamId: 0, increment: 0x7fffffff },
    { type: "continuation", streamId: 5, block: b(0x86), endHeaders: true },
    { type: "unknown", frameType: 0xfa, flags: 0xff, streamId: 3, payload: b(1) },
  ];
  for (const f of frames) assert.deepEqual(roundTrip(f), f);
});

Deno.test("frames: exact bytes of a SETTINGS, a PING ACK and a GOAWAY", () => {
  assert.deepEqual(
    serializeFrame({ type: "settings", ack: false, settings: [[3, 100]] }),
    b(0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100),
  );
  assert.deepEqual(
    serializeFrame({ type: "ping", ack: true, data: new Uint8Array(8) }),
    b(0, 0, 8, 6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
  );
  assert.deepEqual(
    serializeFrame({ type: "goaway", lastStreamId: 5, code: 11, debug: new Uint8Array(0) }),
    b(0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 11),
  );
});

Deno.test("frames: size, stream-id and value rules map to the RFC's errors and scope", () => {
  // SETTINGS: length not a multiple of 6, ACK with payload, on a stream, bad values.
  expectError(raw(4, 0, 0, new Uint8Array(5)), ErrorCode.FRAME_SIZE_ERROR, 0);
  expectError(raw(4, 1, 0, new Uint8Array(6)), ErrorCode.FRAME_SIZE_ERROR, 0);
  expectError(raw(4, 0, 1, new Uint8Array(0)), ErrorCode.PROTOCOL_ERROR, 0);
  expectError(raw(4, 0, 0, b(0, 2, 0, 0, 0, 2)), ErrorCode.PROTOCOL_ERROR, 0); // ENABLE_PUSH 2
  expectError(raw(4, 0, 0, b(0, 4, 0x80, 0, 0, 0)), ErrorCode.FLOW_CONTROL_ERROR, 0); // window 2^31
  expectError(raw(4, 0, 0, b(0, 5, 0, 0, 0x3f, 0xff)), ErrorCode.PROTOCOL_ERROR, 0); // frame size 16383
  expectError(raw(4, 0, 0, b(0, 5, 1, 0, 0, 0)), ErrorCode.PROTOCOL_ERROR, 0); // frame size 2^24
  // DATA / HEADERS / CONTINUATION / RST_STREAM / PRIORITY / PUSH_PROMISE on stream 0.
  for (const type of [0, 1, 2, 3, 5, 9]) {
    expectError(raw(type, 0, 0, new Uint8Array(5)), ErrorCode.PROTOCOL_ERROR, 0);
  }
  // PING / GOAWAY on a stream, wrong lengths.
  expectError(raw(6, 0, 1, new Uint8Array(8)), ErrorCode.PROTOCOL_ERROR, 0);
  expectError(raw(6, 0, 0, new Uint8Array(7)), ErrorCode.FRAME_SIZE_ERROR, 0);
  expectError(raw(7, 0, 3, new Uint8Array(8)), ErrorCode.PROTOCOL_ERROR, 0);
  expectError(raw(7, 0, 0, new Uint8Array(7)), ErrorCode.FRAME_SIZE_ERROR, 0);
  expectError(raw(3, 0, 1, new Uint8Array(3)), ErrorCode.FRAME_SIZE_ERROR, 0);
  // PRIORITY of the wrong length or depending on itself: stream errors.
  expectError(raw(2, 0, 3, new Uint8Array(4)), ErrorCode.FRAME_SIZE_ERROR, 3);
  expectError(raw(2, 0, 3, b(0, 0, 0, 3, 15)), ErrorCode.PROTOCOL_ERROR, 3);
  expectError(raw(1, 0x24, 3, b(0, 0, 0, 3, 15, 0x82)), ErrorCode.PROTOCOL_ERROR, 3);
  // WINDOW_UPDATE: zero increment is a stream error on a stream, a connection error on 0.
  expectError(raw(8, 0, 5, new Uint8Array(4)), ErrorCode.PROTOCOL_ERROR, 5);
  expectError(raw(8, 0, 0, new Uint8Array(4)), ErrorCode.PROTOCOL_ERROR, 0);
  expectError(raw(8, 0, 0, new Uint8Array(5)), ErrorCode.FRAME_SIZE_ERROR, 0);
  // Padding as long as the payload.
  expectError(raw(0, 0x8, 1, b(3, 0, 0)), ErrorCode.PROTOCOL_ERROR, 0);
  expectError(raw(1, 0x8, 1, b(2, 0x82)), ErrorCode.PROTOCOL_ERROR, 0);
  // The reserved bit of the stream id is ignored.
  const withReserved = raw(8, 0, 1, b(0, 0, 0, 1));
  withReserved[5]! |= 0x80;
  assert.deepEqual(parseRaw(withReserved), { type: "window_update", streamId: 1, increment: 1 });
});

Deno.test("frames: the reader splits a byte-at-a-time stream and refuses oversized frames at the header", () => {
  const stream = [
    serializeFrame({ type: "ping", ack: false, data: new Uint8Array(8) }),
    serializeFrame({ type: "data", streamId: 1, data: new Uint8Array(1000).fill(7), endStream: true }),
  ];
  const all = new Uint8Array(stream[0]!.length + stream[1]!.length);
  all.set(stream[0]!);
  all.set(stream[1]!, stream[0]!.length);
  const r = new FrameReader();
  const got: Frame[] = [];
  for (const byte of all) {
    r.push(Uint8Array.of(byte));
    for (let f = r.next(); f; f = r.next()) got.push(f);
  }
  assert.deepEqual(got.map((f) => f.type), ["ping", "data"]);
  assert.equal((got[1] as { data: Uint8Array }).data.length, 1000);
  const big = new FrameReader(16384);
  big.push(raw(0, 0, 1, new Uint8Array(0)).subarray(0, 3)); // nothing yet
  assert.equal(big.next(), null);
  const header = b(0, 0x40, 1, 0, 0, 0, 0, 0, 1); // 16385 bytes announced
  const r2 = new FrameReader(16384);
  r2.push(header);
  assert.throws(
    () => r2.next(),
    (e: unknown) => e instanceof Http2Error && e.code === ErrorCode.FRAME_SIZE_ERROR,
  );
});

Deno.test("frames: a header block over CONTINUATION frames at the peer's frame size", () => {
  const block = new Uint8Array(40000).fill(0x82);
  const frames = headerFrames(1, block, true, 16384);
  assert.equal(frames.length, 3);
  const parsed = frames.map(parseRaw);
  assert.deepEqual(parsed.map((f) => f.type), ["headers", "continuation", "continuation"]);
  assert.deepEqual(parsed.map((f) => (f as { endHeaders: boolean }).endHeaders), [false, false, true]);
  assert.equal((parsed[0] as { endStream: boolean }).endStream, true);
});

Deno.test("frames property: random and mutated frames only ever raise Http2Error (seeded)", () => {
  const valid = serializeFrame({
    type: "headers",
    streamId: 1,
    block: b(0x82, 0x86),
    endStream: true,
    endHeaders: true,
    priority: { exclusive: false, dependency: 0, weight: 16 },
    padLength: 4,
  });
  fc.assert(
    fc.property(
      fc.oneof(
        fc.tuple(
          fc.integer({ min: 0, max: 12 }),
          fc.integer({ min: 0, max: 255 }),
          fc.nat(9),
          fc.uint8Array({ maxLength: 40 }),
        )
          .map(([t, fl, s, p]) => raw(t, fl, s, p)),
        fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })).map(([i, v]) => {
          const m = valid.slice();
          m[i] = v;
          return m;
        }),
      ),
      (bytes) => {
        const r = new FrameReader();
        r.push(bytes);
        try {
          while (r.next());
        } catch (e) {
          if (!(e instanceof Http2Error)) throw e;
        }
      },
    ),
    { seed: 9113, numRuns: 5000 },
  );
});
