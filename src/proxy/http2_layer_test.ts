import assert from "node:assert/strict";
import { Http2Counters, Http2Layer, type Http2LayerOptions } from "./http2_layer.ts";
import { type ConnectionOptions, Http2Connection, type Http2Event } from "./http2/connection.ts";
import { ErrorCode, PREFACE, serializeFrame } from "./http2/frames.ts";
import type { HeaderField } from "./http2/hpack.ts";
import type { HttpFlow } from "../flows/flow.ts";
import type { LayerCommand, LayerEvent, Side } from "./layer.ts";
import { counter, fromClient, latin1, play, send, timer } from "./_playbook.ts";

const SERVER = { hostname: "origin.test", port: 443 };
const GET: HeaderField[] = [
  [":method", "GET"],
  [":scheme", "https"],
  [":authority", "origin.test"],
  [":path", "/a?b=1"],
  ["user-agent", "t/1"],
  ["x-second", "2"],
  ["accept", "*/*"],
];
const POST: HeaderField[] = [
  [":method", "POST"],
  [":scheme", "https"],
  [":authority", "origin.test"],
  [":path", "/up"],
  ["content-type", "application/grpc"],
  ["te", "trailers"],
];

function options(extra: Partial<Http2LayerOptions> = {}): Http2LayerOptions {
  return {
    scheme: "https",
    client: { address: { hostname: "10.0.0.2", port: 50000 }, mode: "wireguard" },
    server: { address: SERVER, hostname: "origin.test" },
    serverConnected: true,
    bodyLimit: 1024,
    newId: counter(),
    now: 0,
    ...extra,
  };
}

/**
 * The layer between two real codec endpoints: a client (the app) and a server (the origin).
 * `pump()` moves bytes until everyone is quiet; what each endpoint saw is kept.
 */
class Rig {
  readonly layer: Http2Layer;
  readonly client = new Http2Connection("client");
  readonly server: Http2Connection;
  readonly clientEvents: Http2Event[] = [];
  readonly serverEvents: Http2Event[] = [];
  readonly flows: { event: string; flow: HttpFlow }[] = [];
  readonly closed = new Set<Side>();
  readonly commands: LayerCommand[] = [];
  /** Bytes the layer sent to the server before it was connected would be a bug. */
  serverUp: boolean;
  now = 1;

  constructor(extra: Partial<Http2LayerOptions> = {}, origin: ConnectionOptions = {}) {
    this.server = new Http2Connection("server", origin);
    this.layer = new Http2Layer(options(extra));
    this.serverUp = extra.serverConnected ?? true;
    this.apply(this.layer.start());
  }

  apply(commands: LayerCommand[]): void {
    for (const c of commands) {
      this.commands.push(c);
      if (c.type === "send") {
        assert.ok(!this.closed.has(c.to), `send to closed ${c.to}`);
        if (c.to === "client") this.clientEvents.push(...this.client.receive(c.data, this.now));
        else {
          assert.ok(this.serverUp, "bytes sent to a server not yet connected");
          this.serverEvents.push(...this.server.receive(c.data, this.now));
        }
      } else if (c.type === "flow") this.flows.push({ event: c.event, flow: c.flow as HttpFlow });
      else if (c.type === "close") this.closed.add(c.to);
    }
  }

  event(e: LayerEvent): void {
    this.apply(this.layer.handle(e));
  }

  /** Moves bytes both ways until neither endpoint has anything to say. */
  pump(): void {
    for (let i = 0; i < 10_000; i++) {
      this.now++;
      const c = this.client.output();
      const s = this.serverUp ? this.server.output() : new Uint8Array(0);
      if (c.byteLength === 0 && s.byteLength === 0) return;
      if (c.byteLength > 0 && !this.closed.has("client")) this.event(fromClient(c, this.now));
      if (s.byteLength > 0 && this.serverUp && !this.closed.has("server")) {
        this.event({ type: "data", from: "server", data: s, now: this.now });
      }
    }
    throw new Error("pump did not settle");
  }

  of<T extends Http2Event["type"]>(events: Http2Event[], type: T): Extract<Http2Event, { type: T }>[] {
    return events.filter((e): e is Extract<Http2Event, { type: T }> => e.type === type);
  }

  body(events: Http2Event[], streamId: number): string {
    return this.of(events, "data").filter((e) => e.streamId === streamId).map((e) => latin1(e.data)).join("");
  }

  ended(): HttpFlow[] {
    return this.flows.filter((f) => f.event === "end").map((f) => f.flow);
  }
}

Deno.test("http2 layer: start writes SETTINGS both ways and arms the SETTINGS timer (playbook)", () => {
  const layer = new Http2Layer(options());
  const ours = new Http2Connection("server", { initialWindowSize: 256 * 1024 }).output();
  const theirs = new Http2Connection("client", { initialWindowSize: 256 * 1024 }).output();
  const settingsAck = serializeFrame({ type: "settings", ack: true, settings: [] });
  play(layer, [
    // The client's preface and empty SETTINGS: the layer starts (our SETTINGS to both sides, the
    // upstream's with the preface) and acknowledges the client's.
    fromClient(latin1(PREFACE) + latin1(serializeFrame({ type: "settings", ack: false, settings: [] })), 0),
    [
      send("client", latin1(ours)),
      send("server", latin1(theirs)),
      timer(10_000),
      send("client", latin1(settingsAck)),
    ],
  ]);
});

Deno.test("http2 layer: a request and its response cross with header lists in wire order, one flow", () => {
  const r = new Rig();
  const id = r.client.request(GET, true);
  r.pump();
  const req = r.of(r.serverEvents, "headers");
  assert.equal(req.length, 1);
  assert.deepEqual(req[0]!.headers, GET);
  assert.equal(req[0]!.endStream, true);
  const response: HeaderField[] = [[":status", "200"], ["x-b", "1"], ["content-type", "text/plain"], [
    "x-a",
    "2",
  ]];
  r.server.sendHeaders(req[0]!.streamId, response, false);
  r.server.sendData(req[0]!.streamId, new TextEncoder().encode("hello"), true);
  r.pump();
  const resp = r.of(r.clientEvents, "headers");
  assert.deepEqual(resp.map((h) => h.headers), [response]);
  assert.equal(r.body(r.clientEvents, id), "hello");
  assert.deepEqual(r.flows.map((f) => f.event), ["start", "update", "end"]);
  const flow = r.flows[0]!.flow;
  assert.equal(flow.streamId, id);
  assert.equal(flow.request.httpVersion, "HTTP/2.0");
  assert.equal(flow.request.method, "GET");
  assert.equal(flow.request.url, "https://origin.test/a?b=1");
  assert.deepEqual(flow.request.headers, [["user-agent", "t/1"], ["x-second", "2"], ["accept", "*/*"]]);
  assert.equal(flow.response?.status, 200);
  assert.equal(flow.response?.httpVersion, "HTTP/2.0");
  assert.equal(latin1(flow.response!.body.content), "hello");
  assert.equal(flow.error, undefined);
  assert.equal(r.closed.size, 0);
});

Deno.test("http2 layer: a stream reset by the client resets the upstream stream; the flow records it", () => {
  const r = new Rig();
  const id = r.client.request(POST, false);
  r.client.sendData(id, new TextEncoder().encode("part"));
  r.pump();
  const up = r.of(r.serverEvents, "headers")[0]!.streamId;
  r.client.reset(id, ErrorCode.CANCEL);
  r.pump();
  assert.deepEqual(r.of(r.serverEvents, "reset").map((e) => [e.streamId, e.code, e.remote]), [[
    up,
    ErrorCode.CANCEL,
    true,
  ]]);
  const [flow] = r.ended();
  assert.match(flow!.error!.message, /client reset the stream \(CANCEL\)/);
  assert.equal(latin1(flow!.request.body.content), "part");
  // The connection keeps serving.
  const next = r.client.request(GET, true);
  r.pump();
  r.server.sendHeaders(r.of(r.serverEvents, "headers")[1]!.streamId, [[":status", "204"]], true);
  r.pump();
  assert.equal(r.of(r.clientEvents, "headers").find((h) => h.streamId === next)?.headers[0]?.[1], "204");
});

Deno.test("http2 layer: an upstream reset mid-body reaches the client with its code", () => {
  const r = new Rig();
  const id = r.client.request(GET, true);
  r.pump();
  const up = r.of(r.serverEvents, "headers")[0]!.streamId;
  r.server.sendHeaders(up, [[":status", "200"]], false);
  r.server.sendData(up, new Uint8Array(3000).fill(65));
  r.pump();
  r.server.reset(up, ErrorCode.INTERNAL_ERROR);
  r.pump();
  assert.equal(r.body(r.clientEvents, id).length, 3000);
  assert.deepEqual(r.of(r.clientEvents, "reset").map((e) => [e.streamId, e.code, e.remote]), [[
    id,
    ErrorCode.INTERNAL_ERROR,
    true,
  ]]);
  const [flow] = r.ended();
  assert.match(flow!.error!.message, /server reset the stream \(INTERNAL_ERROR\)/);
  assert.equal(flow!.response!.body.size, 3000);
});

Deno.test("http2 layer: trailers cross both ways and are recorded", () => {
  const r = new Rig();
  const id = r.client.request(POST, false);
  r.client.sendData(id, new Uint8Array([0, 0, 0, 0, 2, 8, 1]));
  r.client.sendTrailers(id, [["x-req-trailer", "yes"]]);
  r.pump();
  const up = r.of(r.serverEvents, "headers")[0]!.streamId;
  assert.deepEqual(
    r.of(r.serverEvents, "headers").map((h) => h.kind),
    ["request", "trailers"],
  );
  r.server.sendHeaders(up, [[":status", "200"], ["content-type", "application/grpc"]], false);
  r.server.sendData(up, new Uint8Array([0, 0, 0, 0, 0]));
  r.server.sendTrailers(up, [["grpc-status", "0"], ["grpc-message", "ok"]]);
  r.pump();
  const got = r.of(r.clientEvents, "headers");
  assert.deepEqual(got.map((h) => h.kind), ["response", "trailers"]);
  assert.deepEqual(got[1]!.headers, [["grpc-status", "0"], ["grpc-message", "ok"]]);
  const [flow] = r.ended();
  assert.equal(flow!.error, undefined);
  assert.deepEqual(flow!.request.trailers, [["x-req-trailer", "yes"]]);
  assert.deepEqual(flow!.response!.trailers, [["grpc-status", "0"], ["grpc-message", "ok"]]);
  assert.equal(flow!.request.body.size, 7);
});

Deno.test("http2 layer: a client that does not read holds the upstream at the windows (backpressure)", () => {
  const r = new Rig();
  const id = r.client.request(GET, true);
  r.pump();
  const up = r.of(r.serverEvents, "headers")[0]!.streamId;
  const size = 4 * 1024 * 1024;
  const body = new Uint8Array(size);
  for (let i = 0; i < size; i++) body[i] = (i * 7 + 3) & 0xff;
  r.server.sendHeaders(up, [[":status", "200"]], false);
  r.server.sendData(up, body, true);
  r.pump();
  // The client never consumed: it has its 64 KiB stream window's worth; the proxy holds at most
  // its own 256 KiB stream window; the rest waits in the origin.
  const atClient = r.body(r.clientEvents, id).length;
  assert.equal(atClient, 65535);
  const inProxy = r.layer.down.bufferedData(id);
  assert.ok(inProxy <= 256 * 1024, `proxy holds ${inProxy}`);
  assert.ok(r.server.bufferedData(up) >= size - atClient - 256 * 1024, "the origin still holds the rest");
  // Now the client reads: everything arrives, intact.
  let consumed = 0;
  for (let i = 0; i < 1000 && consumed < size; i++) {
    const seen = r.of(r.clientEvents, "data").reduce((n, e) => n + e.data.byteLength, 0);
    r.client.consume(id, seen - consumed);
    consumed = seen;
    r.pump();
  }
  const all = r.of(r.clientEvents, "data").filter((e) => e.streamId === id);
  const joined = new Uint8Array(all.reduce((n, e) => n + e.data.byteLength, 0));
  let o = 0;
  for (const e of all) {
    joined.set(e.data, o);
    o += e.data.byteLength;
  }
  assert.equal(joined.byteLength, size);
  assert.deepEqual(joined, body);
  assert.equal(r.ended()[0]!.response!.body.size, size);
  assert.equal(r.ended()[0]!.response!.body.content.byteLength, 1024, "recording bounded by bodyLimit");
});

Deno.test("http2 layer: a slow upstream holds a client upload at the windows (backpressure)", () => {
  const r = new Rig();
  const id = r.client.request(POST, false);
  const size = 2 * 1024 * 1024;
  r.client.sendData(id, new Uint8Array(size).fill(9), true);
  r.pump();
  const up = r.of(r.serverEvents, "headers")[0]!.streamId;
  const atServer = r.body(r.serverEvents, up).length;
  assert.equal(atServer, 65535);
  assert.ok(r.layer.up.bufferedData(up) <= 256 * 1024);
  assert.ok(r.client.bufferedData(id) >= size - atServer - 256 * 1024);
});

Deno.test("http2 layer: upstream GOAWAY refuses streams past its last id, finishes the rest, then closes", () => {
  const r = new Rig();
  const a = r.client.request(GET, true);
  const b = r.client.request(GET, true);
  r.pump();
  const [upA] = r.of(r.serverEvents, "headers").map((h) => h.streamId);
  // The origin says it processed only the first stream.
  r.server.output();
  r.event({
    type: "data",
    from: "server",
    data: serializeFrame({
      type: "goaway",
      lastStreamId: upA!,
      code: ErrorCode.NO_ERROR,
      debug: new Uint8Array(),
    }),
    now: r.now,
  });
  r.pump();
  assert.deepEqual(r.of(r.clientEvents, "reset").map((e) => [e.streamId, e.code]), [[
    b,
    ErrorCode.REFUSED_STREAM,
  ]]);
  assert.equal(r.of(r.clientEvents, "goaway").length, 1);
  assert.equal(r.closed.size, 0, "stream 1 still open");
  // A stream the client opens now is refused by the proxy's own GOAWAY (the client peer knows).
  assert.throws(() => r.client.request(GET, true), /going away/);
  r.server.sendHeaders(upA!, [[":status", "200"]], true);
  r.pump();
  assert.equal(r.of(r.clientEvents, "headers").find((h) => h.streamId === a)?.headers[0]?.[1], "200");
  assert.deepEqual([...r.closed].sort(), ["client", "server"]);
  const ended = r.ended();
  assert.equal(ended.length, 2);
  assert.match(ended.find((f) => f.streamId === b)!.error!.message, /REFUSED_STREAM/);
  assert.equal(ended.find((f) => f.streamId === a)!.error, undefined);
});

Deno.test("http2 layer: client GOAWAY lets open streams finish, then both sides close", () => {
  const r = new Rig();
  const a = r.client.request(GET, true);
  r.pump();
  r.client.goaway(ErrorCode.NO_ERROR);
  r.pump();
  assert.equal(r.closed.size, 0);
  r.server.sendHeaders(r.of(r.serverEvents, "headers")[0]!.streamId, [[":status", "200"]], true);
  r.pump();
  assert.equal(r.of(r.clientEvents, "headers").find((h) => h.streamId === a)?.headers[0]?.[1], "200");
  assert.deepEqual([...r.closed].sort(), ["client", "server"]);
});

Deno.test("http2 layer: a client breaking the protocol gets GOAWAY; its upstream streams are reset", () => {
  const r = new Rig();
  r.client.request(POST, false);
  r.pump();
  // DATA on stream 0 is a connection error (PROTOCOL_ERROR).
  r.event(
    fromClient(
      serializeFrame({ type: "data", streamId: 0, data: new Uint8Array(1), endStream: false }),
      r.now,
    ),
  );
  const goaway = r.of(r.clientEvents, "goaway");
  assert.deepEqual(goaway.map((g) => [g.code, g.remote]), [[ErrorCode.PROTOCOL_ERROR, true]]);
  assert.deepEqual(r.of(r.serverEvents, "reset").map((e) => e.code), [ErrorCode.CANCEL]);
  assert.deepEqual([...r.closed].sort(), ["client", "server"]);
  assert.match(r.ended()[0]!.error!.message, /client connection error: PROTOCOL_ERROR/);
  assert.ok(r.commands.some((c) => c.type === "log" && /connection error from client/.test(c.message)));
});

Deno.test("http2 layer: a malformed upstream response becomes a 502 for the client", () => {
  const r = new Rig();
  const id = r.client.request(GET, true);
  r.pump();
  const up = r.of(r.serverEvents, "headers")[0]!.streamId;
  // An uppercase field name is malformed (RFC 9113 §8.2.1): the proxy's codec resets the stream.
  r.server.sendHeaders(up, [[":status", "200"], ["X-Upper", "1"]], true);
  r.pump();
  const h = r.of(r.clientEvents, "headers").find((e) => e.streamId === id);
  assert.equal(h?.headers[0]?.[1], "502");
  assert.match(r.body(r.clientEvents, id), /server broke HTTP\/2/);
  assert.match(r.ended()[0]!.error!.message, /server broke HTTP\/2/);
});

Deno.test("http2 layer: h2c opens the upstream itself; an unreachable one answers 502 and closes", () => {
  const r = new Rig({ serverConnected: false, scheme: "http" });
  assert.deepEqual(r.commands.filter((c) => c.type === "open-server"), [{
    type: "open-server",
    address: SERVER,
  }]);
  const id = r.client.request(GET, true);
  r.pump();
  r.event({ type: "server-failed", message: "connection refused", now: r.now });
  r.pump();
  assert.equal(r.of(r.clientEvents, "headers").find((h) => h.streamId === id)?.headers[0]?.[1], "502");
  assert.match(r.body(r.clientEvents, id), /cannot connect to origin\.test:443: connection refused/);
  assert.equal(r.of(r.clientEvents, "goaway").length, 1);
  assert.ok(r.closed.has("client"));
});

Deno.test("http2 layer: a gRPC call with no upstream gets a trailers-only UNAVAILABLE with the reason", () => {
  const r = new Rig({ serverConnected: false, scheme: "http" });
  const id = r.client.request(POST, true);
  r.pump();
  r.event({ type: "server-failed", message: "connection refused", now: r.now });
  r.pump();
  const heads = r.of(r.clientEvents, "headers").filter((h) => h.streamId === id);
  assert.equal(heads.length, 1);
  assert.equal(heads[0]!.endStream, true, "one HEADERS frame ending the stream");
  assert.deepEqual(heads[0]!.headers.slice(0, 3), [
    [":status", "200"],
    ["content-type", "application/grpc"],
    ["grpc-status", "14"],
  ]);
  assert.equal(
    heads[0]!.headers[3]![1],
    "wirescope: cannot connect to origin.test:443: connection refused",
  );
  assert.equal(r.body(r.clientEvents, id), "");
  const f = r.ended()[0]!;
  assert.equal(f.response?.status, 200);
  assert.equal(f.response?.grpc?.status, 14);
  assert.match(f.error!.message, /connection refused/);
});

Deno.test("http2 layer: extended CONNECT (RFC 8441) is offered when the upstream offers it and relayed both ways", () => {
  const r = new Rig({}, { enableConnectProtocol: true });
  r.pump();
  assert.equal(r.client.peerConnectProtocol, true, "the upstream's setting reached the client");
  const ws: HeaderField[] = [
    [":method", "CONNECT"],
    [":protocol", "websocket"],
    [":scheme", "https"],
    [":authority", "origin.test"],
    [":path", "/chat"],
    ["sec-websocket-version", "13"],
  ];
  const id = r.client.request(ws, false);
  r.pump();
  const req = r.of(r.serverEvents, "headers")[0]!;
  assert.deepEqual(req.headers, ws);
  r.server.sendHeaders(req.streamId, [[":status", "200"]], false);
  r.client.sendData(id, Uint8Array.from("\x81\x05hello", (c) => c.charCodeAt(0)));
  r.pump();
  assert.equal(r.body(r.serverEvents, req.streamId), "\x81\x05hello");
  r.server.sendData(req.streamId, Uint8Array.from("\x81\x02hi", (c) => c.charCodeAt(0)));
  r.pump();
  assert.equal(r.of(r.clientEvents, "headers").find((h) => h.streamId === id)?.headers[0]?.[1], "200");
  assert.equal(r.body(r.clientEvents, id), "\x81\x02hi");
  r.client.sendData(id, new Uint8Array(0), true);
  r.server.sendData(req.streamId, new Uint8Array(0), true);
  r.pump();
  const f = r.ended()[0]!;
  assert.equal(f.error, undefined);
  assert.equal(f.request.method, "CONNECT");
  assert.equal(f.request.protocol, "websocket");
  assert.equal(f.request.url, "https://origin.test/chat");
  assert.equal(f.request.body.size, 7);
  assert.equal(f.response?.body.size, 4);
});

Deno.test("http2 layer: without the upstream's SETTINGS_ENABLE_CONNECT_PROTOCOL an extended CONNECT is refused", () => {
  const r = new Rig();
  r.pump();
  assert.equal(r.client.peerConnectProtocol, false);
  const id = r.client.request([
    [":method", "CONNECT"],
    [":protocol", "websocket"],
    [":scheme", "https"],
    [":authority", "origin.test"],
    [":path", "/chat"],
  ], false);
  r.pump();
  assert.deepEqual(r.of(r.clientEvents, "reset").map((e) => [e.streamId, e.code]), [[
    id,
    ErrorCode.PROTOCOL_ERROR,
  ]]);
  assert.equal(r.of(r.serverEvents, "headers").length, 0);
});

Deno.test("http2 layer: h2c requests made before the upstream is up go out once it is", () => {
  const r = new Rig({ serverConnected: false, scheme: "http" });
  const id = r.client.request(GET, true);
  r.pump();
  assert.equal(r.serverEvents.length, 0);
  r.serverUp = true;
  r.event({ type: "server-connected", address: { hostname: "127.0.0.1", port: 443 }, now: r.now });
  r.pump();
  const up = r.of(r.serverEvents, "headers")[0]!.streamId;
  r.server.sendHeaders(up, [[":status", "200"]], true);
  r.pump();
  assert.equal(r.of(r.clientEvents, "headers").find((h) => h.streamId === id)?.headers[0]?.[1], "200");
  assert.equal(r.ended()[0]!.error, undefined);
});

Deno.test("http2 layer: the upstream closing mid-response resets the client stream and goes away", () => {
  const r = new Rig();
  const id = r.client.request(GET, true);
  r.pump();
  const up = r.of(r.serverEvents, "headers")[0]!.streamId;
  r.server.sendHeaders(up, [[":status", "200"]], false);
  r.server.sendData(up, new Uint8Array(10));
  r.pump();
  r.event({ type: "eof", from: "server", now: r.now });
  assert.deepEqual(r.of(r.clientEvents, "reset").map((e) => [e.streamId, e.code]), [[
    id,
    ErrorCode.INTERNAL_ERROR,
  ]]);
  assert.equal(r.of(r.clientEvents, "goaway").length, 1);
  assert.deepEqual([...r.closed].sort(), ["client", "server"]);
  assert.match(r.ended()[0]!.error!.message, /server closed the connection/);
});

Deno.test("http2 layer: an internal failure ends that connection's flows with the reason and closes both sides", () => {
  const r = new Rig();
  r.client.request(POST, false);
  r.pump();
  r.layer.up.sendData = () => {
    throw new Error("boom");
  };
  r.client.sendData(1, new Uint8Array(5));
  r.pump();
  assert.deepEqual([...r.closed].sort(), ["client", "server"]);
  assert.match(r.ended()[0]!.error!.message, /HTTP\/2 relay failed: boom/);
  assert.ok(r.commands.some((c) => c.type === "close" && c.reset));
  assert.ok(r.commands.some((c) => c.type === "log" && c.level === "error"));
});

Deno.test("http2 layer: requests past the upstream's concurrency limit wait, body and trailers kept, then go", () => {
  const r = new Rig({}, { maxConcurrentStreams: 1 });
  r.pump(); // SETTINGS both ways: the layer learns the origin's limit of 1
  const a = r.client.request(GET, true);
  const b = r.client.request(POST, false);
  r.client.sendData(b, new TextEncoder().encode("body"));
  r.client.sendTrailers(b, [["x-t", "1"]]);
  r.pump();
  assert.equal(r.of(r.serverEvents, "headers").length, 1, "only one stream at the origin");
  assert.equal(r.flows.filter((f) => f.event === "start").length, 2);
  r.server.sendHeaders(r.of(r.serverEvents, "headers")[0]!.streamId, [[":status", "200"]], true);
  r.pump();
  const heads = r.of(r.serverEvents, "headers");
  assert.deepEqual(heads.map((h) => h.kind), ["request", "request", "trailers"]);
  assert.deepEqual(heads[1]!.headers, POST);
  const upB = heads[1]!.streamId;
  assert.equal(r.body(r.serverEvents, upB), "body");
  r.server.sendHeaders(upB, [[":status", "201"]], true);
  r.pump();
  const answers = r.of(r.clientEvents, "headers");
  assert.equal(answers.find((h) => h.streamId === a)?.headers[0]?.[1], "200");
  assert.equal(answers.find((h) => h.streamId === b)?.headers[0]?.[1], "201");
  assert.deepEqual(r.ended().map((f) => f.error), [undefined, undefined]);
});

Deno.test("http2 layer: a waiting request reset by the client is dropped; the next one goes", () => {
  const r = new Rig({}, { maxConcurrentStreams: 1 });
  r.pump();
  r.client.request(GET, true);
  const b = r.client.request(POST, false);
  const c = r.client.request(GET, true);
  r.client.sendData(b, new Uint8Array(1000));
  r.pump();
  r.client.reset(b, ErrorCode.CANCEL);
  r.pump();
  r.server.sendHeaders(r.of(r.serverEvents, "headers")[0]!.streamId, [[":status", "200"]], true);
  r.pump();
  const heads = r.of(r.serverEvents, "headers");
  assert.equal(heads.length, 2);
  assert.deepEqual(heads[1]!.headers, GET);
  r.server.sendHeaders(heads[1]!.streamId, [[":status", "204"]], true);
  r.pump();
  assert.equal(r.of(r.clientEvents, "headers").find((h) => h.streamId === c)?.headers[0]?.[1], "204");
  assert.match(r.ended().find((f) => f.streamId === b)!.error!.message, /client reset/);
});

Deno.test("http2 layer: an :authority naming another host than the SNI is kept beside the real URL", () => {
  const r = new Rig({ tls: { sni: "origin.test", alpnOffered: ["h2"], alpn: "h2", passthrough: false } });
  const fronted: HeaderField[] = [
    [":method", "GET"],
    [":scheme", "https"],
    [":authority", "hidden.test"],
    [":path", "/x"],
  ];
  r.client.request(fronted, true);
  r.client.request(GET, true);
  r.pump();
  // Forwarded as sent: the proxy records, it does not rewrite.
  assert.deepEqual(r.of(r.serverEvents, "headers")[0]!.headers, fronted);
  const [a, b] = r.flows.filter((f) => f.event === "start").map((f) => f.flow);
  assert.equal(a!.request.url, "https://origin.test/x");
  assert.equal(a!.request.host, "origin.test");
  assert.equal(a!.request.hostHeader, "hidden.test");
  assert.equal(b!.request.url, "https://origin.test/a?b=1");
  assert.equal(b!.request.hostHeader, undefined);
});

Deno.test("http2 layer: floods from the client end it with GOAWAY ENHANCE_YOUR_CALM, a log line, failed flows and counters", () => {
  const f = serializeFrame;
  const many = (n: number, frame: Uint8Array) => {
    const out = new Uint8Array(n * frame.length);
    for (let i = 0; i < n; i++) out.set(frame, i * frame.length);
    return out;
  };
  // HEADERS (GET, indexed fields and a literal :authority) and RST_STREAM on 500 new streams.
  const head = new Uint8Array([0x82, 0x87, 0x84, 0x41, 0x01, 0x61]);
  const rapidReset = new Uint8Array(
    Array.from({ length: 500 }, (_, i) => [
      ...f({ type: "headers", streamId: 3 + 2 * i, block: head, endStream: true, endHeaders: true }),
      ...f({ type: "rst_stream", streamId: 3 + 2 * i, code: ErrorCode.CANCEL }),
    ]).flat(),
  );
  const floods: [kind: string, bytes: Uint8Array][] = [
    ["window-updates", many(5000, f({ type: "window_update", streamId: 0, increment: 1 }))],
    [
      "idle-frames",
      many(
        5000,
        f({ type: "priority", streamId: 1, priority: { exclusive: false, dependency: 0, weight: 16 } }),
      ),
    ],
    ["control-queue", many(5000, f({ type: "ping", ack: false, data: new Uint8Array(8) }))],
    ["resets", rapidReset],
    [
      "continuation",
      new Uint8Array([
        ...f({
          type: "headers",
          streamId: 101,
          block: new Uint8Array([0x82]),
          endStream: true,
          endHeaders: false,
        }),
        ...many(100, f({ type: "continuation", streamId: 101, block: new Uint8Array(0), endHeaders: false })),
      ]),
    ],
  ];
  const counters = new Http2Counters();
  for (const [kind, bytes] of floods) {
    const r = new Rig({ counters });
    r.client.request(POST, false); // stream 1, left open: its flow must end with the reason
    r.pump();
    r.event(fromClient(bytes, r.now));
    const goaway = r.of(r.clientEvents, "goaway");
    assert.deepEqual(goaway.map((g) => [g.code, g.remote]), [[ErrorCode.ENHANCE_YOUR_CALM, true]], kind);
    assert.deepEqual([...r.closed].sort(), ["client", "server"], kind);
    const log = r.commands.find((c) => c.type === "log" && /connection error from client/.test(c.message));
    assert.match(log?.type === "log" ? log.message : "", /ENHANCE_YOUR_CALM/, kind);
    const first = r.ended().find((flow) => flow.streamId === 1);
    assert.match(first?.error?.message ?? "", /client connection error: ENHANCE_YOUR_CALM/, kind);
    assert.deepEqual(r.layer.stats().client.floods, { [kind]: 1 }, kind);
  }
  // The proxy's totals: every relay ended, each flood counted once, each GOAWAY by its reason.
  const total = counters.snapshot();
  assert.equal(total.connections, floods.length);
  assert.deepEqual(total.client.floods, Object.fromEntries(floods.map(([kind]) => [kind, 1])));
  assert.equal(total.client.floodsStopped, floods.length);
  assert.equal(total.client.goawaysSent.ENHANCE_YOUR_CALM, floods.length);
  assert.ok(total.client.streamsOpened >= floods.length);
  assert.ok(total.client.resetsReceived >= 200);
  assert.equal(total.upstream.goawaysSent.NO_ERROR, floods.length);
});

Deno.test("http2 layer: live relays count in the proxy's HTTP/2 totals until they end", () => {
  const counters = new Http2Counters();
  const r = new Rig({ counters });
  r.client.request(GET, true);
  r.pump();
  const live = counters.snapshot();
  assert.equal(live.connections, 1);
  assert.equal(live.client.streamsOpened, 1);
  assert.equal(live.upstream.streamsOpened, 1);
  // The client goes away; the answer ends the last stream and the relay.
  r.client.goaway(ErrorCode.NO_ERROR);
  r.pump();
  r.server.sendHeaders(r.of(r.serverEvents, "headers")[0]!.streamId, [[":status", "200"]], true);
  r.pump();
  assert.deepEqual([...r.closed].sort(), ["client", "server"]);
  const ended = counters.snapshot();
  assert.equal(ended.client.streamsOpened, 1);
  assert.equal(ended.client.goawaysReceived, 1);
  // Ended relays are added once: asking again gives the same totals.
  assert.deepEqual(counters.snapshot(), ended);
});

Deno.test("http2 layer: the limits offered to clients (clientSide) are advertised and enforced", () => {
  const r = new Rig({ clientSide: { maxConcurrentStreams: 2, maxHeaderListSize: 1024 } });
  r.pump();
  const settings = r.of(r.clientEvents, "settings")[0]!.settings;
  assert.ok(settings.some(([id, v]) => id === 3 && v === 2), "SETTINGS_MAX_CONCURRENT_STREAMS 2");
  assert.ok(settings.some(([id, v]) => id === 6 && v === 1024), "SETTINGS_MAX_HEADER_LIST_SIZE 1024");
  // A header list past 1,024 bytes resets its stream (ENHANCE_YOUR_CALM); the connection goes on.
  const big = r.client.request([...GET, ["x-big", "a".repeat(2000)]], true);
  r.pump();
  assert.deepEqual(
    r.of(r.clientEvents, "reset").filter((e) => e.streamId === big).map((e) => e.code),
    [ErrorCode.ENHANCE_YOUR_CALM],
  );
  assert.equal(r.client.failed, null);
});
