/**
 * Stream transforms on HTTP/1 responses: `responseheaders` runs on the head alone, and a
 * transform it sets takes each body chunk on its way to the client (reframed chunked, or
 * close-delimited for an HTTP/1.0 client), with a last call at the end of the body.
 */
import assert from "node:assert/strict";
import { bytes, counter, latin1 } from "./_playbook.ts";
import type { ClientInfo, HostPort, HttpFlow } from "../flows/flow.ts";
import { Http1Layer } from "./http1_layer.ts";
import type { LayerCommand, LayerEvent } from "./layer.ts";
import type { ResponseVerdict } from "./request_hook.ts";
import type { BodyTransform } from "../addons/types.ts";

const CLIENT: ClientInfo = { address: { hostname: "10.0.0.2", port: 50000 }, mode: "wireguard" };
const SERVER: HostPort = { hostname: "93.184.216.34", port: 80 };

/** Plays a layer with a driver of its own: answers hooks and runs transforms, in order. */
class Harness {
  layer = new Http1Layer({
    mode: "transparent",
    scheme: "http",
    client: CLIENT,
    server: { address: SERVER },
    serverState: "open",
    bodyLimit: 64,
    maxMessages: 100,
    newId: counter(),
    responseHook: true,
  });
  toClient = "";
  toServer = "";
  closed: { to: string; reset: boolean }[] = [];
  ended: HttpFlow[] = [];
  phases: string[] = [];
  transformCalls = 0;
  constructor(
    readonly headers: (flow: HttpFlow) => ResponseVerdict,
    readonly holdBody = false,
    readonly body: (flow: HttpFlow) => ResponseVerdict = () => undefined,
  ) {}

  async feed(event: LayerEvent): Promise<void> {
    const queue: LayerCommand[] = [...this.layer.handle(event)];
    while (queue.length > 0) {
      const cmd = queue.shift()!;
      switch (cmd.type) {
        case "send":
          if (cmd.to === "client") this.toClient += latin1(cmd.data);
          else this.toServer += latin1(cmd.data);
          break;
        case "close":
          this.closed.push({ to: cmd.to, reset: cmd.reset });
          break;
        case "flow":
          if (cmd.event === "end" && cmd.flow.type === "http") this.ended.push(cmd.flow);
          break;
        case "response-hook": {
          this.phases.push(cmd.phase ?? "whole");
          const verdict = cmd.phase === "headers" ? this.headers(cmd.flow) : this.body(cmd.flow);
          queue.push(
            ...this.layer.handle({
              type: "response-hook-result",
              verdict,
              now: 2,
              ...(cmd.phase === "headers" ? { holdBody: this.holdBody } : {}),
            }),
          );
          break;
        }
        case "transform": {
          this.transformCalls++;
          let data: Uint8Array = new Uint8Array(0);
          let error: string | undefined;
          try {
            data = await cmd.fn(cmd.data);
          } catch (e) {
            error = String(e);
          }
          queue.push(
            ...this.layer.handle({
              type: "transform-result",
              id: cmd.id,
              data,
              now: 3,
              ...(error !== undefined ? { error } : {}),
            }),
          );
          break;
        }
      }
    }
  }
}

/** A `change` verdict that keeps the head as it came and sets a transform. */
function streamThrough(fn: BodyTransform): (flow: HttpFlow) => ResponseVerdict {
  return (flow) => ({
    change: {
      status: flow.response!.status,
      reason: flow.response!.reason,
      headers: flow.response!.headers,
      stream: fn,
    },
  });
}

const upper: BodyTransform = (chunk) => bytes(latin1(chunk).toUpperCase());

async function request(h: Harness, version = "HTTP/1.1"): Promise<void> {
  await h.feed({ type: "data", from: "client", data: bytes(`GET /a ${version}\r\nHost: x\r\n\r\n`), now: 1 });
}

Deno.test("stream transform: content-length body goes out chunked, chunk by chunk, in order", async () => {
  const h = new Harness(streamThrough(upper));
  await request(h);
  await h.feed({
    type: "data",
    from: "server",
    data: bytes("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-A: 1\r\n\r\nabc"),
    now: 2,
  });
  assert.deepEqual(h.phases, ["headers"]);
  assert.equal(h.toClient, "HTTP/1.1 200 OK\r\nX-A: 1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nABC\r\n");
  await h.feed({ type: "data", from: "server", data: bytes("defg"), now: 3 });
  await h.feed({ type: "data", from: "server", data: bytes("hij"), now: 4 });
  assert.ok(h.toClient.endsWith("3\r\nABC\r\n4\r\nDEFG\r\n3\r\nHIJ\r\n0\r\n\r\n"), h.toClient);
  assert.equal(h.ended.length, 1);
  assert.equal(latin1(h.ended[0]!.response!.body.content), "ABCDEFGHIJ");
  assert.equal(h.ended[0]!.response!.body.size, 10);
  assert.equal(h.transformCalls, 4); // three chunks and the end
  // Keep-alive: the next request goes through as usual.
  h.toServer = "";
  await request(h);
  assert.equal(h.toServer, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
});

Deno.test("stream transform: chunked body reframed; empty outputs send nothing; the end call adds a tail", async () => {
  let calls = 0;
  const h = new Harness(streamThrough(async (chunk) => {
    await new Promise((r) => setTimeout(r, 1));
    calls++;
    if (chunk.byteLength === 0) return bytes("<end>");
    return calls === 2 ? new Uint8Array(0) : chunk;
  }));
  await request(h);
  await h.feed({
    type: "data",
    from: "server",
    data: bytes(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n1\r\ne\r\n0\r\n\r\n",
    ),
    now: 2,
  });
  assert.equal(
    h.toClient,
    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n1\r\ne\r\n5\r\n<end>\r\n0\r\n\r\n",
  );
  assert.equal(latin1(h.ended[0]!.response!.body.content), "abe<end>");
});

Deno.test("stream transform: an HTTP/1.0 client gets a close-delimited body", async () => {
  const h = new Harness(streamThrough(upper));
  await request(h, "HTTP/1.0");
  await h.feed({
    type: "data",
    from: "server",
    data: bytes("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nxyz"),
    now: 2,
  });
  assert.equal(h.toClient, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nXYZ");
  assert.deepEqual(h.closed.find((c) => c.to === "client"), { to: "client", reset: false });
});

Deno.test("stream transform: a close-delimited server body gets its end call when the server closes", async () => {
  const h = new Harness(streamThrough(upper));
  await request(h);
  await h.feed({ type: "data", from: "server", data: bytes("HTTP/1.1 200 OK\r\n\r\nab"), now: 2 });
  await h.feed({ type: "eof", from: "server", now: 3 });
  assert.equal(h.toClient, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nAB\r\n0\r\n\r\n");
  assert.equal(h.ended.length, 1);
});

Deno.test("stream transform: a transform that throws fails the flow and resets both sides", async () => {
  const h = new Harness(streamThrough(() => {
    throw new Error("boom");
  }));
  await request(h);
  await h.feed({
    type: "data",
    from: "server",
    data: bytes("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab"),
    now: 2,
  });
  assert.match(h.ended[0]!.error!.message, /stream transform failed: .*boom/);
  assert.ok(h.closed.some((c) => c.to === "client" && c.reset));
});

Deno.test("headers phase: without a transform the body is held for the body phase only when asked", async () => {
  const held = new Harness(() => undefined, true, (flow) => ({
    change: {
      status: 201,
      reason: "Made",
      headers: flow.response!.headers,
      body: bytes(latin1(flow.response!.body.content) + "!"),
    },
  }));
  await request(held);
  await held.feed({
    type: "data",
    from: "server",
    data: bytes("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"),
    now: 2,
  });
  assert.equal(held.toClient, "");
  await held.feed({ type: "data", from: "server", data: bytes("ab"), now: 3 });
  assert.deepEqual(held.phases, ["headers", "body"]);
  assert.equal(held.toClient, "HTTP/1.1 201 Made\r\ncontent-length: 3\r\n\r\nab!");

  const free = new Harness(() => undefined, false);
  await request(free);
  await free.feed({
    type: "data",
    from: "server",
    data: bytes("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"),
    now: 2,
  });
  assert.equal(free.toClient, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
  await free.feed({ type: "data", from: "server", data: bytes("ab"), now: 3 });
  assert.deepEqual(free.phases, ["headers"]);
  assert.equal(free.ended.length, 1);
});

Deno.test("headers phase: a HEAD response with a transform keeps its framing and calls nothing", async () => {
  const h = new Harness(streamThrough(upper));
  await h.feed({ type: "data", from: "client", data: bytes("HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n"), now: 1 });
  await h.feed({
    type: "data",
    from: "server",
    data: bytes("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
    now: 2,
  });
  assert.equal(h.toClient, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n");
  assert.equal(h.transformCalls, 0);
  assert.equal(h.ended.length, 1);
});
