/**
 * The request and response hooks in the h2↔h2 relay, played between two codec endpoints: per
 * stream `request-hook`/`response-hook` commands naming the stream, verdicts as events with the
 * stream's id, other streams going on while one waits; changes, local answers and kills.
 */
import assert from "node:assert/strict";
import { Http2Layer, type Http2LayerOptions } from "./http2_layer.ts";
import { Http2Connection, type Http2Event } from "./http2/connection.ts";
import { ErrorCode } from "./http2/frames.ts";
import type { HeaderField } from "./http2/hpack.ts";
import type { HttpFlow } from "../flows/flow.ts";
import type { LayerCommand, LayerEvent } from "./layer.ts";
import type { RequestVerdict, ResponseVerdict } from "./request_hook.ts";
import { counter, fromClient, latin1 } from "./_playbook.ts";

const encoder = new TextEncoder();
const GET = (path: string): HeaderField[] => [
  [":method", "GET"],
  [":scheme", "https"],
  [":authority", "origin.test"],
  [":path", path],
  ["accept", "*/*"],
];
const POST: HeaderField[] = [
  [":method", "POST"],
  [":scheme", "https"],
  [":authority", "origin.test"],
  [":path", "/up"],
  ["content-length", "5"],
];

/** The layer (with both hooks) between a client codec and an origin codec. */
class Rig {
  readonly layer: Http2Layer;
  readonly client = new Http2Connection("client");
  readonly server = new Http2Connection("server", { autoConsume: true });
  readonly clientEvents: Http2Event[] = [];
  readonly serverEvents: Http2Event[] = [];
  readonly asked: { type: "request-hook" | "response-hook"; stream: number; flow: HttpFlow }[] = [];
  readonly ended: HttpFlow[] = [];
  now = 1;

  constructor(extra: Partial<Http2LayerOptions> = {}) {
    this.layer = new Http2Layer({
      scheme: "https",
      client: { address: { hostname: "10.0.0.2", port: 50000 }, mode: "wireguard" },
      server: { address: { hostname: "origin.test", port: 443 }, hostname: "origin.test" },
      serverConnected: true,
      bodyLimit: 1024,
      newId: counter(),
      now: 0,
      requestHook: true,
      responseHook: true,
      ...extra,
    });
    this.apply(this.layer.start());
  }

  apply(commands: LayerCommand[]): void {
    for (const c of commands) {
      if (c.type === "send") {
        if (c.to === "client") this.clientEvents.push(...this.client.receive(c.data, this.now));
        else this.serverEvents.push(...this.server.receive(c.data, this.now));
      } else if (c.type === "request-hook" || c.type === "response-hook") {
        assert.equal(typeof c.stream, "number", "an HTTP/2 hook command names its stream");
        this.asked.push({ type: c.type, stream: c.stream!, flow: c.flow });
      } else if (c.type === "flow" && c.event === "end") this.ended.push(c.flow as HttpFlow);
      else if (c.type === "close") throw new Error(`unexpected close of the ${c.to}`);
    }
  }

  event(e: LayerEvent): void {
    this.apply(this.layer.handle(e));
  }

  pump(): void {
    for (let i = 0; i < 10_000; i++) {
      this.now++;
      const c = this.client.output();
      const s = this.server.output();
      if (c.byteLength === 0 && s.byteLength === 0) return;
      if (c.byteLength > 0) this.event(fromClient(c, this.now));
      if (s.byteLength > 0) this.event({ type: "data", from: "server", data: s, now: this.now });
    }
    throw new Error("pump did not settle");
  }

  verdict(stream: number, verdict: RequestVerdict): void {
    this.event({ type: "hook-result", verdict, now: this.now, stream });
    this.pump();
  }

  responseVerdict(stream: number, verdict: ResponseVerdict): void {
    this.event({ type: "response-hook-result", verdict, now: this.now, stream });
    this.pump();
  }

  of<T extends Http2Event["type"]>(events: Http2Event[], type: T): Extract<Http2Event, { type: T }>[] {
    return events.filter((e): e is Extract<Http2Event, { type: T }> => e.type === type);
  }

  body(events: Http2Event[], streamId: number): string {
    return this.of(events, "data").filter((e) => e.streamId === streamId).map((e) => latin1(e.data)).join("");
  }
}

Deno.test("http2 layer hooks: requests held per stream; one changed and sent while another waits, then killed", () => {
  const r = new Rig();
  const a = r.client.request(POST, false);
  r.client.sendData(a, encoder.encode("hello"), true);
  const b = r.client.request(GET("/b"), true);
  r.pump();
  // Both held: nothing reached the origin, both streams asked about, by id.
  assert.equal(r.of(r.serverEvents, "headers").length, 0);
  assert.deepEqual(r.asked.map((q) => [q.type, q.stream]), [["request-hook", a], ["request-hook", b]]);
  assert.equal(
    latin1(r.asked[0]!.flow.request.body.content),
    "hello",
    "the body is in when the hook is asked",
  );

  // Stream b goes on changed while a still waits: pseudo-fields rebuilt, names lowercased.
  r.verdict(b, {
    change: {
      method: "GET",
      host: "origin.test",
      port: 443,
      path: "/b2?x=1",
      headers: [["Accept", "*/*"], ["X-Tag", "blue"], ["Connection", "close"]],
    },
  });
  const sent = r.of(r.serverEvents, "headers");
  assert.equal(sent.length, 1);
  assert.deepEqual(sent[0]!.headers, [
    [":method", "GET"],
    [":scheme", "https"],
    [":authority", "origin.test"],
    [":path", "/b2?x=1"],
    ["accept", "*/*"],
    ["x-tag", "blue"],
  ]);
  assert.equal(r.asked[1]!.flow.request.url, "https://origin.test/b2?x=1");

  // Stream a is killed: RST_STREAM for it alone; the connection and stream b go on.
  r.verdict(a, "kill");
  assert.deepEqual(r.of(r.clientEvents, "reset").map((e) => [e.streamId, e.code]), [[a, ErrorCode.CANCEL]]);
  assert.match(r.ended.find((f) => f.streamId === a)!.error!.message, /killed/);
  assert.equal(r.of(r.serverEvents, "headers").length, 1, "the killed request never reached the origin");

  // The response to b is held for the response hook, then its body replaced (content-length fixed).
  const up = sent[0]!.streamId;
  r.server.sendHeaders(up, [[":status", "200"], ["content-length", "5"]], false);
  r.server.sendData(up, encoder.encode("world"), true);
  r.pump();
  assert.equal(r.of(r.clientEvents, "headers").length, 0, "nothing before the response hook's verdict");
  assert.deepEqual(r.asked.at(-1)!.type, "response-hook");
  assert.equal(r.asked.at(-1)!.stream, b);
  r.responseVerdict(b, {
    change: {
      status: 201,
      reason: "",
      headers: [["Content-Length", "5"], ["X-Seen", "1"]],
      body: encoder.encode("WORLD!!"),
    },
  });
  assert.deepEqual(r.of(r.clientEvents, "headers").map((h) => h.headers), [[
    [":status", "201"],
    ["x-seen", "1"],
    ["content-length", "7"],
  ]]);
  assert.equal(r.body(r.clientEvents, b), "WORLD!!");
  const flowB = r.ended.find((f) => f.streamId === b)!;
  assert.equal(flowB.error, undefined);
  assert.equal(flowB.response?.status, 201);
  assert.equal(latin1(flowB.response!.body.content), "WORLD!!");
});

Deno.test("http2 layer hooks: a local answer (the origin never asked) and a response replaced", () => {
  const r = new Rig({ bodyLimit: 4 });
  const a = r.client.request(GET("/local"), true);
  r.pump();
  r.verdict(a, {
    status: 418,
    reason: "I'm a teapot",
    headers: [["Content-Type", "text/plain"]],
    body: encoder.encode("tea"),
  });
  assert.equal(r.of(r.serverEvents, "headers").length, 0);
  assert.deepEqual(r.of(r.clientEvents, "headers").map((h) => h.headers), [[[":status", "418"], [
    "content-type",
    "text/plain",
  ]]]);
  assert.equal(r.body(r.clientEvents, a), "tea");
  assert.equal(r.ended[0]!.response?.status, 418);
  assert.equal(r.ended[0]!.error, undefined);

  // Let through, then the response replaced by the response hook: the upstream stream is cancelled.
  const b = r.client.request(GET("/replace"), true);
  r.pump();
  r.verdict(b, undefined);
  const up = r.of(r.serverEvents, "headers")[0]!.streamId;
  r.server.sendHeaders(up, [[":status", "200"]], false);
  r.server.sendData(up, encoder.encode("partial"), false);
  r.pump();
  // Past the body limit (4 bytes here) the hook is asked with the response not ended.
  assert.deepEqual(r.asked.at(-1)!.type, "response-hook");
  assert.equal(r.asked.at(-1)!.flow.response!.timestampEnd, undefined);
  r.responseVerdict(b, { respond: { status: 503, reason: "", headers: [], body: encoder.encode("no") } });
  assert.equal(r.of(r.clientEvents, "headers").at(-1)!.headers[0]![1], "503");
  assert.equal(r.body(r.clientEvents, b), "no");
  assert.deepEqual(r.of(r.serverEvents, "reset").map((e) => [e.streamId, e.code]), [[up, ErrorCode.CANCEL]]);
  // A verdict for a stream that is gone is ignored.
  r.verdict(99, "kill");
  assert.equal(r.of(r.clientEvents, "goaway").length, 0);
});

Deno.test("http2 layer hooks: a body longer than the client's stream window reaches the hook whole (up to bodyLimit)", () => {
  const r = new Rig({ bodyLimit: 400_000 });
  const id = r.client.request([...POST.slice(0, 4), ["content-length", "300000"]], false);
  const body = new Uint8Array(300_000).fill(7);
  // The client codec sends what its windows allow; pumping lets the layer's credit through.
  r.client.sendData(id, body, true);
  for (let i = 0; i < 50 && r.asked.length === 0; i++) r.pump();
  assert.equal(r.asked.length, 1);
  assert.equal(r.asked[0]!.flow.request.body.size, 300_000);
  r.verdict(id, undefined);
  assert.equal(r.of(r.serverEvents, "data").reduce((n, e) => n + e.data.byteLength, 0), 300_000);
});
