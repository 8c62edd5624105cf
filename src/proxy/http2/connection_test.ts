import assert from "node:assert/strict";
import fc from "fast-check";
import { type ConnectionOptions, Http2Connection, type Http2Event } from "./connection.ts";
import {
  ErrorCode,
  errorName,
  type Frame,
  FrameReader,
  MAX_WINDOW,
  PREFACE,
  serializeFrame,
} from "./frames.ts";
import { Encoder, type HeaderField } from "./hpack.ts";

// ---- helpers ----------------------------------------------------------------------------------

const GET: HeaderField[] = [[":method", "GET"], [":scheme", "https"], [":path", "/"], [
  ":authority",
  "example.com",
]];

function join(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
const f = (frame: Frame) => serializeFrame(frame);
const SETTINGS: Frame = { type: "settings", ack: false, settings: [] };

/** All frames in `bytes` (a server's output). */
function frames(bytes: Uint8Array): Frame[] {
  const r = new FrameReader(1 << 24);
  r.push(bytes);
  const out: Frame[] = [];
  for (let fr = r.next(); fr; fr = r.next()) out.push(fr);
  return out;
}

/** A hand-driven client talking raw frames to a server connection. */
class RawClient {
  readonly server: Http2Connection;
  readonly enc = new Encoder();
  now = 0;
  constructor(options: ConnectionOptions = {}) {
    this.server = new Http2Connection("server", options);
    this.server.output(); // its SETTINGS (checked in the handshake test)
    this.send(PREFACE, f(SETTINGS));
    this.server.output();
  }
  send(...parts: Uint8Array[]): Http2Event[] {
    return this.server.receive(join(parts), this.now);
  }
  headers(streamId: number, fields: HeaderField[] = GET, endStream = true): Uint8Array {
    return f({ type: "headers", streamId, block: this.enc.encode(fields), endStream, endHeaders: true });
  }
  /** The GOAWAY the server wrote, if any. */
  goaway(): { lastStreamId: number; code: number } | undefined {
    const g = frames(this.server.output()).find((x) => x.type === "goaway");
    return g && g.type === "goaway" ? { lastStreamId: g.lastStreamId, code: g.code } : undefined;
  }
}

/** Client and server connections wired in memory; `pump()` moves bytes until both are quiet. */
class Pair {
  readonly client: Http2Connection;
  readonly server: Http2Connection;
  readonly clientEvents: Http2Event[] = [];
  readonly serverEvents: Http2Event[] = [];
  constructor(clientOptions: ConnectionOptions = {}, serverOptions: ConnectionOptions = {}) {
    this.client = new Http2Connection("client", clientOptions);
    this.server = new Http2Connection("server", serverOptions);
    this.pump();
  }
  pump(): void {
    for (let i = 0; i < 1000; i++) {
      const a = this.client.output(), b = this.server.output();
      if (a.length === 0 && b.length === 0) return;
      if (a.length) this.serverEvents.push(...this.server.receive(a, 0));
      if (b.length) this.clientEvents.push(...this.client.receive(b, 0));
    }
    throw new Error("pump did not settle");
  }
}

function dataOf(events: Http2Event[], streamId: number): number {
  return events.filter((e) => e.type === "data" && e.streamId === streamId).reduce(
    (n, e) => n + (e.type === "data" ? e.data.length : 0),
    0,
  );
}

// ---- behaviour --------------------------------------------------------------------------------

Deno.test("h2 connection: server handshake answers the preface with SETTINGS, window and ACK", () => {
  const server = new Http2Connection("server");
  const first = frames(server.output());
  assert.deepEqual(first, [
    { type: "settings", ack: false, settings: [[3, 100], [6, 65536]] },
    { type: "window_update", streamId: 0, increment: (1 << 20) - 65535 },
  ]);
  // Preface split across reads, then the client's SETTINGS.
  assert.deepEqual(server.receive(PREFACE.subarray(0, 10), 0), []);
  const ev = server.receive(
    join([PREFACE.subarray(10), f({ type: "settings", ack: false, settings: [[4, 1000]] })]),
    0,
  );
  assert.deepEqual(ev, [{ type: "settings", settings: [[4, 1000]] }]);
  assert.deepEqual(frames(server.output()), [{ type: "settings", ack: true, settings: [] }]);
  const client = new Http2Connection("client");
  const out = client.output();
  assert.deepEqual(out.subarray(0, 24), PREFACE);
  assert.deepEqual(frames(out.subarray(24))[0], {
    type: "settings",
    ack: false,
    settings: [[2, 0], [3, 100], [6, 65536]],
  });
});

Deno.test("h2 connection: a bad preface or a first frame other than SETTINGS is PROTOCOL_ERROR", () => {
  const s = new Http2Connection("server");
  s.output();
  s.receive(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"), 0);
  assert.equal(frames(s.output()).find((x) => x.type === "goaway")?.type, "goaway");
  assert.equal(s.failed?.code, ErrorCode.PROTOCOL_ERROR);
  const t = new Http2Connection("server");
  t.receive(join([PREFACE, f({ type: "ping", ack: false, data: new Uint8Array(8) })]), 0);
  assert.equal(t.failed?.code, ErrorCode.PROTOCOL_ERROR);
});

Deno.test("h2 connection: request, response, body, trailers and PING between two endpoints", () => {
  const p = new Pair({ autoConsume: true }, { autoConsume: true });
  const id = p.client.request(
    [...GET.slice(0, 2), [":path", "/upload"], [":authority", "a"], ["X-Not", "x"]],
    false,
  );
  p.pump();
  // Uppercase field name: malformed (§8.2.1), the stream is reset, the connection lives.
  assert.deepEqual(p.clientEvents.at(-1), {
    type: "reset",
    streamId: id,
    code: ErrorCode.PROTOCOL_ERROR,
    remote: true,
  });
  const id2 = p.client.request([[":method", "POST"], [":scheme", "https"], [":path", "/u"], [
    ":authority",
    "a",
  ], [
    "Content-Type".toLowerCase(),
    "text/plain",
  ]], false);
  p.client.sendData(id2, new TextEncoder().encode("hello "));
  p.client.sendData(id2, new TextEncoder().encode("world"));
  p.client.sendTrailers(id2, [["x-checksum", "42"]]);
  p.pump();
  const got = p.serverEvents.filter((e) => "streamId" in e && e.streamId === id2);
  assert.deepEqual(got.map((e) => e.type === "headers" ? `${e.kind}${e.endStream ? "!" : ""}` : e.type), [
    "request",
    "data",
    "data",
    "trailers!",
  ]);
  p.server.sendHeaders(id2, [[":status", "200"], ["content-length", "2"]], false);
  p.server.sendData(id2, new TextEncoder().encode("ok"), true);
  p.client.ping(Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
  p.pump();
  const resp = p.clientEvents.filter((e) => "streamId" in e && e.streamId === id2);
  assert.deepEqual(resp.map((e) => e.type), ["headers", "data"]);
  assert.equal(resp[1]!.type === "data" && resp[1]!.endStream, true);
  assert.deepEqual(p.clientEvents.at(-1), { type: "ping-ack", data: Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8) });
  assert.equal(p.client.openStreams, 0);
  assert.equal(p.server.openStreams, 0);
});

Deno.test("h2 connection: flow control waits for the peer's windows and resumes on consume()", () => {
  const p = new Pair({}, {});
  const id = p.client.request([[":method", "POST"], [":scheme", "https"], [":path", "/"], [
    ":authority",
    "a",
  ]], false);
  const body = new Uint8Array(300_000).fill(1);
  p.client.sendData(id, body, true);
  p.pump();
  // The stream window (65535) bounds what crossed; the rest waits in the client.
  assert.equal(dataOf(p.serverEvents, id), 65535);
  assert.equal(p.client.bufferedData(id), 300_000 - 65535);
  // The application takes what arrived; each consume() re-opens the windows for more.
  let consumed = 0;
  for (let i = 0; i < 20 && consumed < 300_000; i++) {
    const arrived = dataOf(p.serverEvents, id);
    p.server.consume(id, arrived - consumed);
    consumed = arrived;
    p.pump();
  }
  assert.equal(dataOf(p.serverEvents, id), 300_000);
  assert.ok(p.clientEvents.some((e) => e.type === "writable" && e.streamId === id));
});

Deno.test("h2 connection: the peer's SETTINGS_INITIAL_WINDOW_SIZE and MAX_FRAME_SIZE shape what is sent", () => {
  const p = new Pair({ initialWindowSize: 1000, maxFrameSize: 20000, autoConsume: true }, {});
  const id = p.client.request(GET, true);
  p.pump();
  p.server.sendHeaders(id, [[":status", "200"]], false);
  p.server.sendData(id, new Uint8Array(5000), true);
  const sent = frames(p.server.output()).filter((x) => x.type === "data");
  assert.deepEqual(sent.map((x) => x.type === "data" ? x.data.length : 0), [1000]);
  assert.equal(p.server.bufferedData(id), 4000);
});

// ---- attacks ----------------------------------------------------------------------------------

Deno.test("h2 attack: a malformed frame ends the connection with GOAWAY FRAME_SIZE_ERROR", () => {
  const c = new RawClient();
  c.send(join([f({ type: "unknown", frameType: 4, flags: 0, streamId: 0, payload: new Uint8Array(5) })]));
  assert.deepEqual(c.goaway(), { lastStreamId: 0, code: ErrorCode.FRAME_SIZE_ERROR });
  // Nothing more is read.
  assert.deepEqual(c.send(c.headers(1)), []);
});

Deno.test("h2 attack: HPACK bomb resets the stream with ENHANCE_YOUR_CALM and keeps the connection", () => {
  const c = new RawClient({ maxHeaderListSize: 16384 });
  const bombEnc = new Encoder({ huffman: false });
  const first = bombEnc.encode([...GET, ["x", "a".repeat(4000)]]);
  const block = join([first, new Uint8Array(10_000).fill(0x80 | 62)]); // 40 MB of fields from 14 KB
  const ev = c.send(f({ type: "headers", streamId: 1, block, endStream: true, endHeaders: true }));
  assert.deepEqual(ev.map((e) => e.type), ["reset"]);
  assert.deepEqual(frames(c.server.output()), [{
    type: "rst_stream",
    streamId: 1,
    code: ErrorCode.ENHANCE_YOUR_CALM,
  }]);
  assert.equal(c.server.stats().headerListsTooLarge, 1);
  // The HPACK state stayed in step: the next request, from the bomb's encoder, decodes.
  const c2 = new RawClient({ maxHeaderListSize: 16384 });
  c2.send(f({ type: "headers", streamId: 1, block, endStream: true, endHeaders: true }));
  const next = bombEnc.encode(GET);
  const ev2 = c2.send(f({ type: "headers", streamId: 3, block: next, endStream: true, endHeaders: true }));
  assert.deepEqual(ev2.map((e) => e.type === "headers" ? e.kind : e.type), ["request"]);
});

Deno.test("h2 attack: a table size update above the advertised size is GOAWAY COMPRESSION_ERROR", () => {
  const c = new RawClient();
  c.send(
    f({
      type: "headers",
      streamId: 1,
      block: Uint8Array.of(0x3f, 0xe2, 0x7f, 0x82),
      endStream: true,
      endHeaders: true,
    }),
  );
  assert.deepEqual(c.goaway(), { lastStreamId: 0, code: ErrorCode.COMPRESSION_ERROR });
});

Deno.test("h2 attack: CONTINUATION flood is stopped at the header block bound with GOAWAY ENHANCE_YOUR_CALM", () => {
  const c = new RawClient({ maxHeaderListSize: 16384 });
  c.send(f({ type: "headers", streamId: 1, block: c.enc.encode(GET), endStream: true, endHeaders: false }));
  const junk = f({
    type: "continuation",
    streamId: 1,
    block: new Uint8Array(1024).fill(0x40),
    endHeaders: false,
  });
  let sent = 0;
  for (let i = 0; i < 20_000 && !c.server.failed; i++) {
    c.send(junk);
    sent += junk.length;
  }
  assert.equal(c.server.failed?.code, ErrorCode.ENHANCE_YOUR_CALM);
  // Stopped once the block passed 16 KiB + 16 KiB, not after the 20 MB.
  assert.ok(sent < 40 * 1024, `read ${sent} bytes first`);
  assert.deepEqual(c.goaway(), { lastStreamId: 0, code: ErrorCode.ENHANCE_YOUR_CALM });
  // Many empty CONTINUATION frames: the frame count bound.
  const d = new RawClient();
  d.send(f({ type: "headers", streamId: 1, block: d.enc.encode(GET), endStream: true, endHeaders: false }));
  const empty = f({ type: "continuation", streamId: 1, block: new Uint8Array(0), endHeaders: false });
  d.send(join(Array.from({ length: 100 }, () => empty)));
  assert.equal(d.server.failed?.code, ErrorCode.ENHANCE_YOUR_CALM);
  // A CONTINUATION that does not follow a header block, or one on another stream: PROTOCOL_ERROR.
  const e = new RawClient();
  e.send(f({ type: "continuation", streamId: 1, block: new Uint8Array(0), endHeaders: true }));
  assert.equal(e.server.failed?.code, ErrorCode.PROTOCOL_ERROR);
});

Deno.test("h2 attack: rapid reset (HEADERS + RST_STREAM) past the budget is GOAWAY ENHANCE_YOUR_CALM", () => {
  const c = new RawClient();
  const burst: Uint8Array[] = [];
  for (let i = 0, id = 1; i < 1000; i++, id += 2) {
    burst.push(c.headers(id), f({ type: "rst_stream", streamId: id, code: ErrorCode.CANCEL }));
  }
  const ev = c.send(join(burst));
  assert.equal(ev.filter((e) => e.type === "reset").length, 201);
  const g = c.goaway();
  assert.deepEqual(g, { lastStreamId: 401, code: ErrorCode.ENHANCE_YOUR_CALM });
  assert.equal(c.server.openStreams, 0);
  // At the allowed rate (100/s) resets go on for ever.
  const d = new RawClient();
  for (let i = 0, id = 1; i < 1000; i++, id += 2) {
    d.now = i * 11;
    d.send(d.headers(id), f({ type: "rst_stream", streamId: id, code: ErrorCode.CANCEL }));
  }
  assert.equal(d.server.failed, null);
  // Provoked stream errors count too (malformed requests reset by us).
  const e = new RawClient();
  const bad: Uint8Array[] = [];
  for (let i = 0, id = 1; i < 300; i++, id += 2) bad.push(e.headers(id, [...GET, ["connection", "close"]]));
  e.send(join(bad));
  assert.equal(e.server.failed?.code, ErrorCode.ENHANCE_YOUR_CALM);
});

Deno.test("h2 attack: SETTINGS and PING floods past the queued-answer bound are GOAWAY ENHANCE_YOUR_CALM", () => {
  for (
    const frame of [
      f({ type: "ping", ack: false, data: new Uint8Array(8) }),
      f({ type: "settings", ack: false, settings: [[3, 100]] }),
    ]
  ) {
    const c = new RawClient();
    c.send(join(Array.from({ length: 5000 }, () => frame)));
    assert.equal(c.server.failed?.code, ErrorCode.ENHANCE_YOUR_CALM);
    const out = frames(c.server.output());
    assert.ok(out.length <= 1002, `${out.length} frames queued`);
    assert.deepEqual(out.at(-1), {
      type: "goaway",
      lastStreamId: 0,
      code: ErrorCode.ENHANCE_YOUR_CALM,
      debug: (out.at(-1) as { debug: Uint8Array }).debug,
    });
    // The same frames read in small batches, with the answers taken in between, are fine.
    const d = new RawClient();
    for (let i = 0; i < 5000; i += 10) {
      d.send(join(Array.from({ length: 10 }, () => frame)));
      d.server.output();
    }
    assert.equal(d.server.failed, null);
  }
});

Deno.test("h2 attack: a stream id going backwards or an even client stream is GOAWAY PROTOCOL_ERROR", () => {
  const c = new RawClient();
  c.send(c.headers(5), c.headers(3));
  assert.deepEqual(c.goaway(), { lastStreamId: 5, code: ErrorCode.PROTOCOL_ERROR });
  const d = new RawClient();
  d.send(d.headers(2));
  assert.deepEqual(d.goaway(), { lastStreamId: 0, code: ErrorCode.PROTOCOL_ERROR });
  // HEADERS again on a stream the client ended: STREAM_CLOSED.
  const e = new RawClient({ autoConsume: true });
  e.send(e.headers(1));
  e.server.sendHeaders(1, [[":status", "204"]], true);
  e.server.output();
  e.send(e.headers(1));
  assert.deepEqual(e.goaway(), { lastStreamId: 1, code: ErrorCode.STREAM_CLOSED });
});

Deno.test("h2 attack: flow-control violations get FLOW_CONTROL_ERROR on the stream or the connection", () => {
  const post: HeaderField[] = [[":method", "POST"], [":scheme", "https"], [":path", "/"], [
    ":authority",
    "a",
  ]];
  // Past the stream window (65535): RST_STREAM, the connection goes on.
  const c = new RawClient({ maxFrameSize: 1 << 17 });
  c.send(c.headers(1, post, false));
  c.send(f({ type: "data", streamId: 1, data: new Uint8Array(70_000), endStream: false }));
  assert.deepEqual(frames(c.server.output()).filter((x) => x.type === "rst_stream"), [
    { type: "rst_stream", streamId: 1, code: ErrorCode.FLOW_CONTROL_ERROR },
  ]);
  assert.equal(c.server.failed, null);
  // Past the connection window (1 MiB): GOAWAY.
  const d = new RawClient({ maxFrameSize: 1 << 17, initialWindowSize: 1 << 30 });
  d.send(f({ type: "settings", ack: true, settings: [] }));
  d.send(d.headers(1, post, false));
  for (let i = 0; i < 9; i++) {
    d.send(f({ type: "data", streamId: 1, data: new Uint8Array(1 << 17), endStream: false }));
  }
  assert.deepEqual(d.goaway(), { lastStreamId: 1, code: ErrorCode.FLOW_CONTROL_ERROR });
  // WINDOW_UPDATE taking the connection window past 2^31-1.
  const e = new RawClient();
  e.send(f({ type: "window_update", streamId: 0, increment: 0x7fffffff }));
  assert.deepEqual(e.goaway(), { lastStreamId: 0, code: ErrorCode.FLOW_CONTROL_ERROR });
  // DATA on an idle stream.
  const g = new RawClient();
  g.send(f({ type: "data", streamId: 9, data: new Uint8Array(1), endStream: false }));
  assert.deepEqual(g.goaway(), { lastStreamId: 0, code: ErrorCode.PROTOCOL_ERROR });
});

Deno.test("h2 attack: PUSH_PROMISE to a client that disabled push is GOAWAY PROTOCOL_ERROR", () => {
  const client = new Http2Connection("client");
  client.output();
  client.receive(f(SETTINGS), 0);
  const id = client.request(GET, true);
  client.output();
  client.receive(
    f({
      type: "push_promise",
      streamId: id,
      promisedStreamId: 2,
      block: Uint8Array.of(0x82),
      endHeaders: true,
    }),
    0,
  );
  assert.equal(client.failed?.code, ErrorCode.PROTOCOL_ERROR);
});

Deno.test("h2 property: random and mutated frame streams only end in events and GOAWAY/RST (seeded)", () => {
  const enc = new Encoder();
  const valid = join([
    f(SETTINGS),
    f({ type: "headers", streamId: 1, block: enc.encode(GET), endStream: false, endHeaders: false }),
    f({ type: "continuation", streamId: 1, block: enc.encode([["x-a", "b"]]), endHeaders: true }),
    f({ type: "data", streamId: 1, data: new Uint8Array(10), endStream: false, padLength: 3 }),
    f({ type: "window_update", streamId: 1, increment: 100 }),
    f({ type: "ping", ack: false, data: new Uint8Array(8) }),
    f({ type: "rst_stream", streamId: 1, code: 8 }),
    f({ type: "priority", streamId: 3, priority: { exclusive: false, dependency: 1, weight: 1 } }),
    f({ type: "goaway", lastStreamId: 0, code: 0, debug: new Uint8Array(0) }),
  ]);
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
      fc.uint8Array({ maxLength: 64 }),
      fc.integer({ min: 1, max: 64 }),
      (mutations, tail, chunk) => {
        const bytes = join([PREFACE, valid, tail]);
        for (const [i, v] of mutations) bytes[24 + i] = v;
        const s = new Http2Connection("server");
        for (let o = 0; o < bytes.length; o += chunk) {
          s.receive(bytes.subarray(o, o + chunk), o);
          // Whatever it writes is well-formed frames.
          frames(s.output());
        }
        assert.ok(s.openStreams <= 1);
      },
    ),
    { seed: 44487, numRuns: 2000 },
  );
});

Deno.test("h2 connection: a request and its RST_STREAM in one read; answering it is a no-op, the connection lives", () => {
  // h2spec generic/2.4: the events of one receive() hold the request and its reset.
  const c = new RawClient();
  const ev = c.send(c.headers(1), f({ type: "rst_stream", streamId: 1, code: ErrorCode.CANCEL }));
  assert.deepEqual(ev.map((e) => e.type), ["headers", "reset"]);
  assert.equal(c.server.sendHeaders(1, [[":status", "200"]], true), false);
  assert.equal(c.server.sendData(1, new Uint8Array(3), true), false);
  assert.throws(() => c.server.sendHeaders(3, [[":status", "200"]], true), /never opened/);
  c.send(f({ type: "ping", ack: false, data: new Uint8Array(8) }));
  assert.deepEqual(frames(c.server.output()).map((x) => x.type), ["ping"]);
});

Deno.test("h2 attack: floods of frames that do nothing (empty DATA, PRIORITY, unknown) are GOAWAY ENHANCE_YOUR_CALM", () => {
  const post: HeaderField[] = [[":method", "POST"], [":scheme", "https"], [":path", "/"], [
    ":authority",
    "a",
  ]];
  const floods = [
    f({ type: "data", streamId: 1, data: new Uint8Array(0), endStream: false }),
    f({ type: "priority", streamId: 1, priority: { exclusive: false, dependency: 0, weight: 16 } }),
    f({ type: "unknown", frameType: 0x42, flags: 0, streamId: 0, payload: new Uint8Array(0) }),
  ];
  for (const frame of floods) {
    const c = new RawClient();
    c.send(c.headers(1, post, false));
    c.send(join(Array.from({ length: 5000 }, () => frame)));
    assert.equal(c.server.failed?.code, ErrorCode.ENHANCE_YOUR_CALM);
    // A few of them, spread out in time, are fine.
    const d = new RawClient();
    d.send(d.headers(1, post, false));
    for (let i = 0; i < 3000; i++) {
      d.now = i * 2;
      d.send(frame);
    }
    assert.equal(d.server.failed, null);
  }
});

Deno.test("h2 client: 1xx then the final response, trailers, and GOAWAY refusing the streams above its last id", () => {
  const client = new Http2Connection("client", { autoConsume: true });
  client.output();
  const enc = new Encoder();
  client.receive(f(SETTINGS), 0);
  const a = client.request(GET, true), b = client.request(GET, true), c = client.request(GET, true);
  assert.deepEqual([a, b, c], [1, 3, 5]);
  const resp = (id: number, fields: HeaderField[], endStream: boolean) =>
    f({ type: "headers", streamId: id, block: enc.encode(fields), endStream, endHeaders: true });
  const ev = client.receive(
    join([
      resp(1, [[":status", "103"], ["link", "</a.css>; rel=preload"]], false),
      resp(1, [[":status", "200"]], false),
      f({ type: "data", streamId: 1, data: Uint8Array.of(1, 2), endStream: false }),
      resp(1, [["grpc-status", "0"]], true),
      f({ type: "goaway", lastStreamId: 3, code: ErrorCode.NO_ERROR, debug: new Uint8Array(0) }),
    ]),
    0,
  );
  assert.deepEqual(
    ev.map((e) => e.type === "headers" ? e.kind : e.type === "reset" ? `reset ${e.streamId}` : e.type),
    [
      "informational",
      "response",
      "data",
      "trailers",
      "goaway",
      "reset 5",
    ],
  );
  assert.throws(() => client.request(GET, true), /going away/);
  // A server that turns push on: PROTOCOL_ERROR.
  const d = new Http2Connection("client");
  d.receive(f({ type: "settings", ack: false, settings: [[2, 1]] }), 0);
  assert.equal(d.failed?.code, ErrorCode.PROTOCOL_ERROR);
});

Deno.test("h2 connection: SETTINGS not acknowledged in time is GOAWAY SETTINGS_TIMEOUT", () => {
  const s = new Http2Connection("server", { settingsTimeout: 5000 }, 1000);
  s.output();
  assert.equal(s.deadline(), 6000);
  s.receive(join([PREFACE, f(SETTINGS)]), 2000);
  assert.deepEqual(s.timer(5999), []);
  const ev = s.timer(6000);
  assert.deepEqual(ev.map((e) => e.type === "goaway" ? errorName(e.code) : e.type), ["SETTINGS_TIMEOUT"]);
  assert.deepEqual(frames(s.output()).map((x) => x.type), ["settings", "goaway"]);
  assert.equal(s.deadline(), null);
  // Acknowledged: no deadline any more.
  const t = new Http2Connection("server", {}, 0);
  t.receive(join([PREFACE, f(SETTINGS), f({ type: "settings", ack: true, settings: [] })]), 10);
  assert.equal(t.deadline(), null);
  assert.deepEqual(t.timer(1e9), []);
});

Deno.test("h2 attack: a WINDOW_UPDATE flood (tiny increments, nothing sent to earn them) is GOAWAY ENHANCE_YOUR_CALM", () => {
  const floods = [
    f({ type: "window_update", streamId: 0, increment: 1 }),
    f({ type: "window_update", streamId: 1, increment: 1 }),
  ];
  for (const frame of floods) {
    const c = new RawClient();
    c.send(c.headers(1, GET, true));
    c.send(join(Array.from({ length: 5000 }, () => frame)));
    assert.equal(c.server.failed?.code, ErrorCode.ENHANCE_YOUR_CALM);
    assert.match(c.server.failed?.message ?? "", /WINDOW_UPDATE/);
    assert.deepEqual(c.goaway(), { lastStreamId: 1, code: ErrorCode.ENHANCE_YOUR_CALM });
    const stats = c.server.stats();
    assert.deepEqual(stats.floods, { "window-updates": 1 });
    assert.deepEqual(stats.goawaysSent, { ENHANCE_YOUR_CALM: 1 });
    // The same updates at a pace the bucket refills (1,000/s) are fine.
    const d = new RawClient();
    d.send(d.headers(1, GET, true));
    for (let i = 0; i < 3000; i++) {
      d.now = i * 2;
      d.send(frame);
    }
    assert.equal(d.server.failed, null);
  }
});

Deno.test("h2 connection: WINDOW_UPDATEs answering DATA are earned: a long body with an update per frame is no flood", () => {
  // The client acknowledges every DATA frame at once with a stream and a connection update, in
  // one read at one instant (no refill): 4,000 updates, far past the idle-frame burst of 1,000.
  // The client's windows hold the whole body: only the hand-made updates below reach the server.
  const p = new Pair({ initialWindowSize: MAX_WINDOW, connectionWindowSize: MAX_WINDOW }, {});
  const id = p.client.request([...GET.slice(0, 3), [":authority", "a"]], true);
  p.pump();
  assert.ok(p.server.sendHeaders(id, [[":status", "200"]], false));
  p.server.sendData(id, new Uint8Array(2000 * 16384), true);
  let sent = 0;
  for (let i = 0; i < 10_000; i++) {
    const out = p.server.output();
    if (out.length === 0) break;
    for (const ev of p.client.receive(out, 0)) {
      if (ev.type === "data" && ev.data.length > 0) p.client.consume(ev.streamId, ev.data.length);
    }
    // Every DATA frame answered with its own pair of updates (the codec batches; a peer may not).
    const data = frames(out).filter((x) => x.type === "data" && x.data.length > 0) as { streamId: number }[];
    p.client.output();
    const updates = data.flatMap((d) => [
      f({ type: "window_update", streamId: d.streamId, increment: 1 }),
      f({ type: "window_update", streamId: 0, increment: 1 }),
    ]);
    if (updates.length > 0) p.server.receive(join(updates), 0);
    sent += updates.length;
    assert.equal(p.server.failed, null);
  }
  assert.equal(p.server.failed, null);
  assert.ok(sent >= 4000, `${sent} updates`);
  assert.equal(p.server.stats().floodsStopped, 0);
});
