import assert from "node:assert/strict";
import {
  Http2ToHttp1Layer,
  type Http2ToHttp1LayerOptions,
  PAUSE_AT,
  requestHead,
  responseFields,
} from "./http2_to_http1_layer.ts";
import { type ConnectionOptions, Http2Connection, type Http2Event } from "./http2/connection.ts";
import { Http2Counters } from "./http2_layer.ts";
import { ErrorCode, serializeFrame } from "./http2/frames.ts";
import type { HeaderField } from "./http2/hpack.ts";
import type { HttpFlow } from "../flows/flow.ts";
import type { LayerCommand, LayerEvent } from "./layer.ts";
import { bytes, counter, type Expected, flow, fromClient, latin1, play, send } from "./_playbook.ts";

const SERVER = { hostname: "10.9.9.9", port: 443 };
const REMOTE = { hostname: "10.9.9.9", port: 443 };

function options(extra: Partial<Http2ToHttp1LayerOptions> = {}): Http2ToHttp1LayerOptions {
  return {
    scheme: "https",
    client: { address: { hostname: "10.0.0.2", port: 50000 }, mode: "wireguard" },
    server: { address: SERVER, hostname: "origin.test" },
    bodyLimit: 1024,
    newId: counter(),
    now: 0,
    ...extra,
  };
}

function get(path: string, extra: HeaderField[] = []): HeaderField[] {
  return [[":method", "GET"], [":scheme", "https"], [":authority", "origin.test"], [":path", path], ...extra];
}

/** One upstream connection as the test sees it: what the layer wrote to it, and its state. */
interface FakeConn {
  written: string;
  state: "opening" | "open" | "closed";
  reset: boolean;
  paused: boolean;
}

/**
 * The layer between a real HTTP/2 client codec (the app) and fake HTTP/1.1 upstream connections
 * the test answers by hand. `pump()` moves the client's bytes until it is quiet.
 */
class Rig {
  readonly layer: Http2ToHttp1Layer;
  readonly client: Http2Connection;
  readonly events: Http2Event[] = [];
  readonly flows: { event: string; flow: HttpFlow }[] = [];
  readonly conns = new Map<number, FakeConn>();
  readonly commands: LayerCommand[] = [];
  clientClosed = false;
  now = 1;

  constructor(extra: Partial<Http2ToHttp1LayerOptions> = {}, client: ConnectionOptions = {}) {
    this.client = new Http2Connection("client", client);
    this.layer = new Http2ToHttp1Layer(options(extra));
    this.apply(this.layer.start());
    this.pump();
  }

  apply(commands: LayerCommand[]): void {
    for (const c of commands) {
      this.commands.push(c);
      switch (c.type) {
        case "send":
          if (c.to === "client") {
            assert.ok(!this.clientClosed, "send to a closed client");
            this.events.push(...this.client.receive(c.data, this.now));
          } else {
            const conn = this.conns.get(c.conn!);
            assert.ok(conn && conn.state === "open", `send to connection ${c.conn} in state ${conn?.state}`);
            conn.written += latin1(c.data);
          }
          break;
        case "open-server":
          assert.ok(c.conn !== undefined);
          this.conns.set(c.conn, { written: "", state: "opening", reset: false, paused: false });
          break;
        case "close":
          if (c.to === "client") this.clientClosed = true;
          else {
            const conn = this.conns.get(c.conn!)!;
            conn.state = "closed";
            conn.reset = c.reset;
          }
          break;
        case "pause-reading":
          this.conns.get(c.conn)!.paused = c.paused;
          break;
        case "flow":
          this.flows.push({ event: c.event, flow: c.flow as HttpFlow });
          break;
        default:
          break;
      }
    }
  }

  event(e: LayerEvent): void {
    this.apply(this.layer.handle(e));
  }

  pump(): void {
    for (let i = 0; i < 1000; i++) {
      this.now++;
      const c = this.client.output();
      if (c.byteLength === 0) return;
      if (!this.clientClosed) this.event({ type: "data", from: "client", data: c, now: this.now });
    }
    throw new Error("pump did not settle");
  }

  connect(conn: number): void {
    this.conns.get(conn)!.state = "open";
    this.event({ type: "server-connected", address: REMOTE, now: ++this.now, conn });
    this.pump();
  }

  answer(conn: number, text: string | Uint8Array): void {
    const data = typeof text === "string" ? bytes(text) : text;
    this.event({ type: "data", from: "server", data, now: ++this.now, conn });
    this.pump();
  }

  upstreamEnd(conn: number, how: "eof" | "error"): void {
    const e: LayerEvent = how === "eof"
      ? { type: "eof", from: "server", now: ++this.now, conn }
      : { type: "error", from: "server", message: "connection reset by peer", now: ++this.now, conn };
    this.event(e);
    this.pump();
  }

  /** Takes what was written to `conn` so far. */
  take(conn: number): string {
    const c = this.conns.get(conn)!;
    const text = c.written;
    c.written = "";
    return text;
  }

  request(headers: HeaderField[], end = true): number {
    const id = this.client.request(headers, end);
    this.pump();
    return id;
  }

  of<T extends Http2Event["type"]>(type: T, streamId?: number): Extract<Http2Event, { type: T }>[] {
    return this.events.filter((e): e is Extract<Http2Event, { type: T }> =>
      e.type === type && (streamId === undefined || (e as { streamId?: number }).streamId === streamId)
    );
  }

  body(streamId: number): string {
    const out = this.of("data", streamId).map((e) => latin1(e.data)).join("");
    this.client.consume(streamId, out.length);
    return out;
  }

  ended(): HttpFlow[] {
    return this.flows.filter((f) => f.event === "end").map((f) => f.flow);
  }
}

Deno.test("h2→h1: a GET becomes a request line and host; the response loses hop-by-hop fields", () => {
  const rig = new Rig();
  assert.deepEqual([...rig.conns.keys()], [1], "the first connection is opened at the start");
  rig.connect(1);
  const id = rig.request(get("/a?b=1", [
    ["user-agent", "t/1"],
    ["cookie", "a=1"],
    ["accept", "*/*"],
    ["cookie", "b=2"],
    ["te", "trailers"],
  ]));
  assert.equal(
    rig.take(1),
    "GET /a?b=1 HTTP/1.1\r\nhost: origin.test\r\nuser-agent: t/1\r\ncookie: a=1; b=2\r\naccept: */*\r\n" +
      "te: trailers\r\n\r\n",
  );
  rig.answer(
    1,
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n" +
      "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nContent-Length: 5\r\n" +
      "X-Kept: yes\r\n\r\nhello",
  );
  const [head] = rig.of("headers", id);
  assert.deepEqual(head!.headers, [
    [":status", "200"],
    ["content-type", "text/plain"],
    ["content-length", "5"],
    ["x-kept", "yes"],
  ]);
  assert.equal(rig.body(id), "hello");
  // One DATA frame, with END_STREAM (no empty frame after it).
  assert.deepEqual(rig.of("data", id).map((d) => [latin1(d.data), d.endStream]), [["hello", true]]);
  const [flow] = rig.ended();
  assert.equal(flow!.request.httpVersion, "HTTP/2.0");
  assert.equal(flow!.streamId, id);
  assert.equal(flow!.request.url, "https://origin.test/a?b=1");
  assert.deepEqual(flow!.request.headers.filter(([n]) => n === "cookie"), [["cookie", "a=1"], [
    "cookie",
    "b=2",
  ]]);
  assert.equal(flow!.response!.httpVersion, "HTTP/1.1");
  assert.equal(flow!.response!.reason, "OK");
  assert.equal(latin1(flow!.response!.body.content), "hello");
  assert.equal(flow!.error, undefined);
  assert.deepEqual(flow!.server.peerAddress, REMOTE);
  // The connection is kept and carries the next request.
  assert.equal(rig.conns.get(1)!.state, "open");
  rig.request(get("/next"));
  assert.equal(rig.take(1), "GET /next HTTP/1.1\r\nhost: origin.test\r\n\r\n");
  assert.equal(rig.conns.size, 1);
});

Deno.test("h2→h1: requestHead drops connection-specific fields and te other than trailers", () => {
  const r = requestHead(
    [
      [":method", "POST"],
      [":scheme", "https"],
      [":path", "/x"],
      ["host", "h.test"],
      ["connection", "close"],
      ["keep-alive", "1"],
      ["proxy-connection", "x"],
      ["transfer-encoding", "gzip"],
      ["upgrade", "websocket"],
      ["te", "gzip"],
      ["x-a", "1"],
    ],
    true,
    { address: SERVER },
    "POST",
  );
  assert.ok(typeof r !== "string");
  assert.equal(latin1(r.head), "POST /x HTTP/1.1\r\nhost: h.test\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n");
  assert.equal(r.framing, "none");
  assert.match(
    requestHead([[":path", "/"], ["x", "a\nb"]], true, { address: SERVER }, "GET") as string,
    /HTTP\/1.1/,
  );
  assert.deepEqual(
    responseFields([["Connection", "close, X-Hop"], ["X-Hop", "1"], ["TE", "x"], [
      "Transfer-Encoding",
      "chunked",
    ], [
      "Vary",
      "A",
    ]]),
    [["vary", "A"]],
  );
});

Deno.test("h2→h1: a body without length goes chunked with trailers; chunked trailers come back as h2 trailers", () => {
  const rig = new Rig();
  rig.connect(1);
  const id = rig.client.request(
    [[":method", "POST"], [":scheme", "https"], [":authority", "origin.test"], [":path", "/up"], [
      "te",
      "trailers",
    ]],
    false,
  );
  rig.client.sendData(id, bytes("abc"));
  rig.client.sendData(id, bytes("defgh"));
  rig.client.sendTrailers(id, [["grpc-status", "0"], ["x-sum", "8"]]);
  rig.pump();
  assert.equal(
    rig.take(1),
    "POST /up HTTP/1.1\r\nhost: origin.test\r\nte: trailers\r\ntransfer-encoding: chunked\r\n\r\n" +
      "3\r\nabc\r\n5\r\ndefgh\r\n0\r\ngrpc-status: 0\r\nx-sum: 8\r\n\r\n",
  );
  rig.answer(1, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Done\r\n\r\n4\r\nwxyz\r\n");
  assert.equal(rig.body(id), "wxyz");
  rig.answer(1, "0\r\nX-Done: 1\r\nContent-Length: 9\r\n\r\n");
  const heads = rig.of("headers", id);
  assert.deepEqual(heads.map((h) => h.kind), ["response", "trailers"]);
  assert.deepEqual(heads[1]!.headers, [["x-done", "1"]]);
  assert.equal(heads[1]!.endStream, true);
  const [flow] = rig.ended();
  assert.equal(latin1(flow!.request.body.content), "abcdefgh");
  assert.deepEqual(flow!.request.trailers, [["grpc-status", "0"], ["x-sum", "8"]]);
  assert.deepEqual(flow!.response!.trailers, [["X-Done", "1"], ["Content-Length", "9"]]);
  assert.equal(rig.conns.get(1)!.state, "open");
});

Deno.test("h2→h1: more streams than the pool wait and go out in order as connections free up", () => {
  const rig = new Rig({ poolSize: 3 });
  const ids: number[] = [];
  for (let i = 0; i < 8; i++) ids.push(rig.client.request(get(`/r${i}`), true));
  rig.pump();
  assert.deepEqual([...rig.conns.keys()], [1, 2, 3], "the pool stops at its size");
  for (const c of [1, 2, 3]) rig.connect(c);
  const sent = [1, 2, 3].map((c) => rig.take(c).split(" ")[1]);
  assert.deepEqual(sent, ["/r0", "/r1", "/r2"]);
  // Each answer frees its connection for the next waiting request.
  const order: string[] = [];
  for (let round = 0; round < 10 && rig.ended().length < 8; round++) {
    for (const c of [1, 2, 3]) {
      if (rig.conns.get(c)!.state !== "open") continue;
      rig.answer(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      const next = rig.take(c);
      if (next) order.push(next.split(" ")[1]!);
    }
  }
  assert.deepEqual(order, ["/r3", "/r4", "/r5", "/r6", "/r7"]);
  assert.equal(rig.ended().length, 8);
  for (const id of ids) assert.equal(rig.body(id), "ok");
  assert.ok(rig.ended().every((f) => f.error === undefined));
  assert.equal(rig.conns.size, 3);
  assert.equal(rig.layer.stats().waiting, 0);
});

Deno.test("h2→h1: an upstream reset mid-body resets the stream; before the head it is a 502", () => {
  const rig = new Rig();
  rig.connect(1);
  const a = rig.request(get("/big"));
  rig.take(1);
  rig.answer(1, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
  rig.upstreamEnd(1, "error");
  assert.equal(rig.body(a), "0123456789");
  const [reset] = rig.of("reset", a);
  assert.equal(reset!.code, ErrorCode.INTERNAL_ERROR);
  assert.equal(rig.conns.get(1)!.state, "closed");
  assert.match(rig.ended()[0]!.error!.message, /connection reset by peer in the response body/);

  // The next stream opens a new connection; that one closes before answering.
  const b = rig.request(get("/b"));
  assert.deepEqual([...rig.conns.keys()], [1, 2]);
  rig.connect(2);
  rig.take(2);
  rig.upstreamEnd(2, "eof");
  const [head] = rig.of("headers", b);
  assert.equal(head!.headers[0]![1], "502");
  assert.match(rig.body(b), /server closed the connection before answering/);
  assert.match(rig.ended()[1]!.error!.message, /before answering/);
  assert.ok(!rig.clientClosed, "the client connection stays");
});

Deno.test("h2→h1: a body cut short by FIN resets the stream; a close-delimited body ends at FIN", () => {
  const rig = new Rig();
  rig.connect(1);
  const a = rig.request(get("/a"));
  rig.answer(1, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
  rig.upstreamEnd(1, "eof");
  assert.equal(rig.of("reset", a)[0]!.code, ErrorCode.INTERNAL_ERROR);
  const b = rig.request(get("/b"));
  rig.connect(2);
  rig.take(2);
  rig.answer(2, "HTTP/1.1 200 OK\r\n\r\nuntil the end");
  rig.upstreamEnd(2, "eof");
  assert.equal(rig.body(b), "until the end");
  assert.equal(rig.of("data", b).at(-1)!.endStream, true);
  assert.equal(rig.ended()[1]!.error, undefined);
});

Deno.test("h2→h1: 1xx are passed on; HEAD, 204 and 304 end with the headers", () => {
  const rig = new Rig();
  rig.connect(1);
  const a = rig.request(get("/early"));
  rig.take(1);
  rig.answer(
    1,
    "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
  );
  const heads = rig.of("headers", a);
  assert.deepEqual(heads.map((h) => [h.kind, h.headers[0]![1], h.endStream]), [
    ["informational", "103", false],
    ["response", "204", true],
  ]);
  const b = rig.request([[":method", "HEAD"], [":scheme", "https"], [":authority", "origin.test"], [
    ":path",
    "/h",
  ]]);
  assert.equal(rig.take(1), "HEAD /h HTTP/1.1\r\nhost: origin.test\r\n\r\n");
  rig.answer(1, "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
  assert.equal(rig.of("headers", b)[0]!.endStream, true);
  const c = rig.request(get("/c"));
  rig.take(1);
  rig.answer(1, 'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n');
  assert.equal(rig.of("headers", c)[0]!.endStream, true);
  assert.equal(rig.ended().length, 3);
  assert.equal(rig.conns.size, 1, "one connection carried all three");
});

Deno.test("h2→h1: a reused connection closed before answering is retried once on a new one", () => {
  const rig = new Rig();
  rig.connect(1);
  rig.request(get("/1"));
  rig.take(1);
  rig.answer(1, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  const b = rig.request(get("/2"));
  assert.equal(rig.take(1), "GET /2 HTTP/1.1\r\nhost: origin.test\r\n\r\n");
  rig.upstreamEnd(1, "eof");
  assert.ok(rig.conns.has(2), "a new connection for the retry");
  rig.connect(2);
  assert.equal(rig.take(2), "GET /2 HTTP/1.1\r\nhost: origin.test\r\n\r\n");
  rig.answer(2, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  assert.equal(rig.body(b), "ok");
  assert.equal(rig.ended()[1]!.error, undefined);
});

Deno.test("h2→h1: Connection: close and HTTP/1.0 responses are not reused", () => {
  const rig = new Rig();
  rig.connect(1);
  rig.request(get("/1"));
  rig.answer(1, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx");
  assert.equal(rig.conns.get(1)!.state, "closed");
  rig.request(get("/2"));
  rig.connect(2);
  rig.take(2);
  rig.answer(2, "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\ny");
  assert.equal(rig.conns.get(2)!.state, "closed");
  assert.equal(rig.ended().length, 2);
});

Deno.test("h2→h1: a response the client does not read pauses its connection until it drains", () => {
  // The client's stream window is the codec's default 64 KiB: the rest waits in the layer.
  const rig = new Rig();
  rig.connect(1);
  const a = rig.request(get("/big"));
  const total = PAUSE_AT + 200_000;
  rig.answer(1, `HTTP/1.1 200 OK\r\nContent-Length: ${total}\r\n\r\n`);
  rig.answer(1, new Uint8Array(PAUSE_AT + 100_000));
  assert.equal(rig.conns.get(1)!.paused, true);
  let got = 0;
  for (let i = 0; i < 100 && got < PAUSE_AT + 100_000; i++) {
    got += rig.body(a).length;
    rig.events.length = 0;
    rig.pump();
  }
  assert.equal(got, PAUSE_AT + 100_000);
  assert.equal(rig.conns.get(1)!.paused, false);
  rig.answer(1, new Uint8Array(100_000));
  for (let i = 0; i < 100 && got < total; i++) {
    got += rig.body(a).length;
    rig.events.length = 0;
    rig.pump();
  }
  assert.equal(got, total);
  assert.equal(rig.ended()[0]!.response!.body.size, total);
});

Deno.test("h2→h1: an answer before the upload ended resets the stream with NO_ERROR after it", () => {
  const rig = new Rig();
  rig.connect(1);
  const id = rig.client.request(
    [[":method", "PUT"], [":scheme", "https"], [":authority", "origin.test"], [":path", "/u"], [
      "content-length",
      "100",
    ]],
    false,
  );
  rig.client.sendData(id, bytes("0123456789"));
  rig.pump();
  assert.equal(
    rig.take(1),
    "PUT /u HTTP/1.1\r\nhost: origin.test\r\ncontent-length: 100\r\n\r\n0123456789",
  );
  rig.answer(1, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig");
  assert.equal(rig.body(id), "big");
  assert.equal(rig.of("reset", id)[0]!.code, ErrorCode.NO_ERROR);
  assert.equal(rig.conns.get(1)!.state, "closed", "the half-sent request makes the connection unusable");
  assert.equal(rig.ended()[0]!.response!.status, 413);
});

Deno.test("h2→h1: a failed connect answers the waiting streams with 502", () => {
  const rig = new Rig();
  const a = rig.request(get("/a"));
  rig.event({ type: "server-failed", message: "connection refused", now: ++rig.now, conn: 1 });
  rig.pump();
  assert.equal(rig.of("headers", a)[0]!.headers[0]![1], "502");
  assert.match(rig.body(a), /cannot connect to 10\.9\.9\.9:443: connection refused/);
  assert.match(rig.ended()[0]!.error!.message, /connection refused/);
});

Deno.test("h2→h1: a gRPC call whose upstream cannot be reached gets grpc-status 14 (trailers-only)", () => {
  const rig = new Rig();
  const post: HeaderField[] = [
    [":method", "POST"],
    [":scheme", "https"],
    [":authority", "origin.test"],
    [":path", "/pkg.Svc/Call"],
    ["content-type", "application/grpc+proto"],
    ["te", "trailers"],
  ];
  const a = rig.request(post);
  rig.event({ type: "server-failed", message: "connection refused (100%)", now: ++rig.now, conn: 1 });
  rig.pump();
  const [h] = rig.of("headers", a);
  assert.equal(h!.endStream, true);
  assert.deepEqual(h!.headers, [
    [":status", "200"],
    ["content-type", "application/grpc"],
    ["grpc-status", "14"],
    ["grpc-message", "wirescope: cannot connect to 10.9.9.9:443: connection refused (100%25)"],
  ]);
  assert.equal(rig.body(a), "");
  assert.equal(rig.ended()[0]!.response?.grpc?.status, 14);
});

Deno.test("h2→h1: a client reset mid-exchange closes that upstream connection only", () => {
  const rig = new Rig({ poolSize: 2 });
  const a = rig.request(get("/a"));
  const b = rig.request(get("/b"));
  rig.connect(1);
  rig.connect(2);
  rig.client.reset(a, ErrorCode.CANCEL);
  rig.pump();
  assert.equal(rig.conns.get(1)!.state, "closed");
  assert.equal(rig.conns.get(2)!.state, "open");
  rig.answer(2, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb");
  assert.equal(rig.body(b), "b");
  assert.match(rig.ended()[0]!.error!.message, /client reset the stream/);
});

Deno.test("h2→h1: a bad response head is a 502 and the connection is reset", () => {
  const rig = new Rig();
  rig.connect(1);
  const a = rig.request(get("/a"));
  rig.answer(1, "SSH-2.0-OpenSSH\r\n\r\n");
  assert.equal(rig.of("headers", a)[0]!.headers[0]![1], "502");
  assert.equal(rig.conns.get(1)!.reset, true);
});

Deno.test("h2→h1: the client's GOAWAY closes everything once the streams are done", () => {
  const rig = new Rig();
  rig.connect(1);
  const a = rig.request(get("/a"));
  rig.client.goaway();
  rig.pump();
  assert.ok(!rig.clientClosed);
  rig.answer(1, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz");
  assert.equal(rig.body(a), "z");
  assert.ok(rig.clientClosed);
  assert.equal(rig.conns.get(1)!.state, "closed");
});

Deno.test("h2→h1: a server that makes no progress for serverTimeout: 504, or a reset mid-body", () => {
  const rig = new Rig({ serverTimeout: 1000 });
  rig.connect(1);
  const timers = () => rig.commands.filter((c) => c.type === "timer");
  const a = rig.request(get("/slow"));
  rig.take(1);
  assert.ok(timers().length > 0, "a timer is armed for the exchange");
  rig.now += 997; // the request went out a tick or two before rig.now
  rig.event({ type: "timer", now: rig.now });
  assert.equal(rig.conns.get(1)!.state, "open", "not yet");
  rig.now += 4;
  rig.event({ type: "timer", now: rig.now });
  rig.pump();
  assert.equal(rig.conns.get(1)!.state, "closed");
  assert.equal(rig.conns.get(1)!.reset, true);
  assert.equal(rig.of("headers", a)[0]!.headers[0]![1], "504");
  assert.match(rig.ended()[0]!.error!.message, /sent no response for 1 s/);
  const b = rig.request(get("/stall"));
  rig.connect(2);
  rig.take(2);
  rig.answer(2, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
  rig.now += 1001;
  rig.event({ type: "timer", now: rig.now });
  rig.pump();
  assert.equal(rig.of("reset", b)[0]!.code, ErrorCode.INTERNAL_ERROR);
  assert.match(rig.ended()[1]!.error!.message, /in the middle of the response body/);
});

Deno.test("h2→h1: uploads waiting for the pool do not take the window of uploads in progress", () => {
  // Pool of 2, 8 uploads: 6 wait with a full stream window of body each; the 2 in progress
  // must still get 1 MB through (with a connection window smaller than what the waiting
  // streams hold, they would stall for good, and no connection would ever free up).
  const rig = new Rig({ poolSize: 2 });
  rig.connect(1);
  const ids: number[] = [];
  for (let i = 0; i < 8; i++) {
    ids.push(rig.client.request(
      [[":method", "POST"], [":scheme", "https"], [":authority", "origin.test"], [":path", `/u${i}`]],
      false,
    ));
  }
  rig.pump();
  rig.connect(2);
  // The waiting streams fill their windows first, then the two in progress send.
  for (const id of ids.slice(2)) rig.client.sendData(id, new Uint8Array(1 << 20));
  for (let i = 0; i < 50; i++) rig.pump();
  for (const id of ids.slice(0, 2)) rig.client.sendData(id, new Uint8Array(1 << 20));
  for (let i = 0; i < 200; i++) rig.pump();
  const sizes = [1, 2].map((c) => rig.take(c).length);
  for (const size of sizes) assert.ok(size > 1 << 20, `${size} bytes went up`);
  assert.equal(rig.layer.stats().waiting, 6);
});

Deno.test("h2→h1: the exact commands of one exchange on a pooled connection (playbook)", () => {
  const layer = new Http2ToHttp1Layer(options());
  const start = layer.start();
  assert.deepEqual(start.map((c) => c.type), ["open-server", "send", "timer"]);
  assert.deepEqual(start[0], { type: "open-server", address: SERVER, conn: 1 });
  const client = new Http2Connection("client");
  client.receive((start[1] as { data: Uint8Array }).data, 1);
  client.request(get("/p", [["accept", "*/*"]]), true);
  const hello = client.output();
  // What the layer's codec must write for the answer: a fresh server endpoint that saw the same.
  const reference = new Http2Connection("server");
  reference.receive(hello, 1);
  reference.output();
  reference.sendHeaders(
    1,
    [[":status", "200"], ["content-type", "text/plain"], ["content-length", "2"]],
    false,
  );
  reference.sendData(1, bytes("ok"), true);
  const answer = latin1(reference.output());
  const toServer = (data: string): Expected => ({ type: "send", to: "server", data, conn: 1 });
  play(layer, [
    { type: "server-connected", address: REMOTE, now: 2, conn: 1 },
    [],
    fromClient(hello, 3),
    [
      flow("start", { streamId: 1, request: { method: "GET", path: "/p", httpVersion: "HTTP/2.0" } }),
      toServer("GET /p HTTP/1.1\r\nhost: origin.test\r\naccept: */*\r\n\r\n"),
      send("client", latin1(serializeFrame({ type: "settings", ack: true, settings: [] }))),
    ],
    {
      type: "data",
      from: "server",
      data: bytes(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
      ),
      now: 4,
      conn: 1,
    },
    [
      flow("update", { response: { status: 200, reason: "OK", httpVersion: "HTTP/1.1" } }),
      flow("end", { response: { body: { content: "ok", size: 2 } } }),
      send("client", answer),
    ],
    // The connection stayed for the next request; the server closing it idle just drops it.
    { type: "eof", from: "server", now: 5, conn: 1 },
    [{ type: "close", to: "server", reset: false, conn: 1 }],
  ]);
});

Deno.test("h2→h1: the client side's codec counters are summed into the proxy's (live, then ended)", () => {
  const counters = new Http2Counters();
  const rig = new Rig({ counters });
  rig.connect(1);
  rig.request(get("/a"));
  rig.answer(1, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz");
  const live = counters.snapshot();
  assert.equal(live.connections, 1);
  assert.ok(live.client.framesIn > 0, "a live connection is read when asked");
  rig.event({ type: "eof", from: "client", now: ++rig.now });
  assert.ok(rig.clientClosed);
  assert.deepEqual(counters.snapshot().client, live.client, "the ended connection's counters are kept");
});

Deno.test("h2→h1 hooks: requests held per stream; one changed and sent while another waits, then killed; response replaced", () => {
  const r = new Rig({ requestHook: true, responseHook: true });
  r.connect(1);
  const asked = () =>
    r.commands.filter((c): c is Extract<LayerCommand, { type: "request-hook" | "response-hook" }> =>
      c.type === "request-hook" || c.type === "response-hook"
    );
  const a = r.request([[":method", "POST"], [":scheme", "https"], [":authority", "origin.test"], [
    ":path",
    "/up",
  ]], false);
  r.client.sendData(a, bytes("hello"), true);
  r.pump();
  const b = r.request(get("/b", [["accept", "*/*"]]));
  assert.deepEqual(asked().map((c) => [c.type, c.stream]), [["request-hook", a], ["request-hook", b]]);
  assert.equal(r.take(1), "", "nothing upstream before a verdict");
  assert.equal(latin1(asked()[0]!.flow.request.body.content), "hello");

  r.event({
    type: "hook-result",
    stream: b,
    now: ++r.now,
    verdict: {
      change: {
        method: "GET",
        host: "origin.test",
        port: 443,
        path: "/b2",
        headers: [["Accept", "*/*"], ["X-Tag", "blue"]],
      },
    },
  });
  r.pump();
  assert.equal(r.take(1), "GET /b2 HTTP/1.1\r\nhost: origin.test\r\naccept: */*\r\nx-tag: blue\r\n\r\n");

  r.event({ type: "hook-result", stream: a, now: ++r.now, verdict: "kill" });
  r.pump();
  assert.deepEqual(r.of("reset").map((e) => [e.streamId, e.code]), [[a, ErrorCode.CANCEL]]);

  r.answer(1, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nworld");
  assert.equal(r.of("headers", b).length, 0, "the response waits for the response hook");
  assert.deepEqual(asked().map((c) => [c.type, c.stream]).at(-1), ["response-hook", b]);
  r.event({
    type: "response-hook-result",
    stream: b,
    now: ++r.now,
    verdict: {
      change: { status: 200, reason: "OK", headers: [["Content-Length", "5"]], body: bytes("WORLD!!") },
    },
  });
  r.pump();
  assert.deepEqual(r.of("headers", b)[0]!.headers, [[":status", "200"], ["content-length", "7"]]);
  assert.equal(r.body(b), "WORLD!!");
  const ended = r.flows.filter((f) => f.event === "end").map((f) => f.flow);
  assert.match(ended.find((f) => f.streamId === a)!.error!.message, /killed/);
  assert.equal(ended.find((f) => f.streamId === b)!.error, undefined);
  assert.equal(r.clientClosed, false);
});

Deno.test("h2→h1 hooks: a local answer never reaches the upstream", () => {
  const r = new Rig({ requestHook: true });
  r.connect(1);
  const id = r.request(get("/local"));
  r.event({
    type: "hook-result",
    stream: id,
    now: ++r.now,
    verdict: {
      status: 418,
      reason: "I'm a teapot",
      headers: [["Content-Type", "text/plain"]],
      body: bytes("tea"),
    },
  });
  r.pump();
  assert.equal(r.take(1), "");
  assert.deepEqual(r.of("headers", id)[0]!.headers, [[":status", "418"], ["content-type", "text/plain"]]);
  assert.equal(r.body(id), "tea");
});
