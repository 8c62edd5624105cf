import assert from "node:assert/strict";
import type { ByteStream } from "./byte_stream.ts";
import { FlowBus } from "../flows/flow.ts";
import { Http1Layer } from "./http1_layer.ts";
import { type HeadTimeout, runLayer } from "./layer_runner.ts";
import type { Layer, LayerCommand, LayerEvent } from "./layer.ts";
import { TcpLayer } from "./tcp_layer.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** An in-memory stream: the test pushes what the peer sends and reads what was written. */
class MemoryStream implements ByteStream {
  #queue: (Uint8Array | null)[] = [];
  #wake: (() => void) | null = null;
  written = "";
  closedWith: { reset: boolean; at: number } | null = null;

  push(text: string | null): void {
    this.#queue.push(text === null ? null : enc.encode(text));
    this.#wake?.();
  }

  async read(): Promise<Uint8Array | null> {
    for (;;) {
      if (this.closedWith) return null;
      if (this.#queue.length > 0) return this.#queue.shift()!;
      await new Promise<void>((r) => (this.#wake = r));
      this.#wake = null;
    }
  }

  write(data: Uint8Array): Promise<void> {
    this.written += new TextDecoder().decode(data);
    return Promise.resolve();
  }

  closeWrite(): Promise<void> {
    return Promise.resolve();
  }

  close(reset: boolean): void {
    this.closedWith ??= { reset, at: Date.now() };
    this.#wake?.();
  }
}

function setup(ms: number) {
  const client = new MemoryStream();
  const server = new MemoryStream();
  const expiries: { partial: boolean; afterRequest: boolean; at: number }[] = [];
  const headTimeout: HeadTimeout = { ms, expired: (info) => expiries.push({ ...info, at: Date.now() }) };
  const layer = new Http1Layer({
    mode: "transparent",
    scheme: "http",
    client: { address: { hostname: "10.0.0.2", port: 40000 }, mode: "wireguard" },
    server: { address: { hostname: "10.9.9.9", port: 80 } },
    serverState: "open",
    bodyLimit: 1024,
    maxMessages: 10,
    newId: () => "flow-1",
  });
  const started = Date.now();
  const run = runLayer({
    layer,
    client,
    server,
    openServer: () => Promise.reject(new Error("not in this test")),
    bus: new FlowBus(),
    headTimeout,
  });
  return { client, server, expiries, run, started };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits for `run` to end, failing (instead of hanging) when it does not within `ms`. */
async function ended(run: Promise<unknown>, ms = 3000): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    run.then(() => "ended"),
    new Promise((r) => (timer = setTimeout(() => r("still running"), ms))),
  ]);
  clearTimeout(timer);
  assert.equal(outcome, "ended", `the connection was not closed within ${ms} ms`);
}

Deno.test("runLayer() closes a client that leaves its request head unfinished past the head timeout", async () => {
  const { client, expiries, run, started } = setup(150);
  client.push("GET /slow HTTP/1.1\r\nHost: a\r\n");
  await sleep(60);
  client.push("X-Trickle: 1\r\n"); // More bytes do not restart the clock.
  await ended(run);
  const elapsed = client.closedWith!.at - started;
  assert.ok(elapsed >= 140 && elapsed < 1000, `closed after ${elapsed} ms`);
  assert.deepEqual(client.closedWith?.reset, false);
  assert.equal(expiries.length, 1);
  assert.equal(expiries[0]!.partial, true);
  assert.equal(expiries[0]!.afterRequest, false);
});

Deno.test("runLayer() times the wait for the next head from the end of the response, not during one", async () => {
  const { client, server, expiries, run } = setup(150);
  client.push("GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
  // The server takes longer than the head timeout to answer: that is not the client's wait.
  await sleep(300);
  assert.equal(client.closedWith, null, "still open while the response is awaited");
  assert.match(server.written, /^GET \/a HTTP\/1\.1/);
  server.push("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
  const responded = Date.now();
  await ended(run);
  assert.match(client.written, /200 OK[^]*ok$/);
  const idle = client.closedWith!.at - responded;
  assert.ok(idle >= 140 && idle < 1000, `keep-alive connection closed ${idle} ms after the response`);
  assert.deepEqual(expiries.map(({ partial, afterRequest }) => ({ partial, afterRequest })), [
    { partial: false, afterRequest: true },
  ]);
});

Deno.test("runLayer() without a head timeout leaves a silent client alone", async () => {
  const client = new MemoryStream();
  const layer = new Http1Layer({
    mode: "regular",
    scheme: "http",
    client: { address: { hostname: "127.0.0.1", port: 40000 }, mode: "regular" },
    server: { address: { hostname: "", port: 0 } },
    serverState: "none",
    bodyLimit: 1024,
    maxMessages: 10,
    newId: () => "flow-1",
  });
  const run = runLayer({
    layer,
    client,
    server: null,
    openServer: () => Promise.reject(new Error("unused")),
    bus: new FlowBus(),
  });
  client.push("GET http://a/ HTTP/1.1\r\n");
  await sleep(200);
  assert.equal(client.closedWith, null);
  client.push(null);
  await run;
});

Deno.test("runLayer() reads a server connection handed over at once with one loop, not two", async () => {
  // A CONNECT tunnel's server connection is made before the layer runs and handed over as soon
  // as the layer asks: two read loops on it split its bytes between them, out of order.
  const client = new MemoryStream();
  const server = new MemoryStream();
  let reading = 0, most = 0;
  const read = server.read.bind(server);
  server.read = async () => {
    most = Math.max(most, ++reading);
    try {
      return await read();
    } finally {
      reading--;
    }
  };
  const layer = new TcpLayer({
    id: "flow-1",
    client: { address: { hostname: "127.0.0.1", port: 40000 }, mode: "regular" },
    server: { address: { hostname: "10.9.9.9", port: 7 } },
    serverConnected: false,
    messageLimit: 1024,
    maxMessages: 10,
    now: Date.now(),
  });
  const run = runLayer({
    layer,
    client,
    server: null,
    openServer: () => Promise.resolve({ stream: server, remote: { hostname: "10.9.9.9", port: 7 } }),
    bus: new FlowBus(),
    initialCommands: layer.start(),
    initialEvents: [{ type: "data", from: "client", data: enc.encode("hello"), now: Date.now() }],
  });
  await sleep(50);
  server.push("one");
  server.push("two");
  await sleep(50);
  assert.equal(client.written, "onetwo");
  assert.equal(most, 1, "one read at a time on the server connection");
  client.push(null);
  server.push(null);
  await ended(run);
});

Deno.test("runLayer() keeps numbered server connections apart, pauses one on request, closes the rest at the end", async () => {
  const client = new MemoryStream();
  const written = () => client.written;
  const servers = [new MemoryStream(), new MemoryStream()];
  const events: string[] = [];
  // A toy pooled layer: two connections; what each sends goes to the client tagged with its
  // number; the first bytes from connection 2 pause it until the client says "go".
  const layer: Layer = {
    handle(e: LayerEvent): LayerCommand[] {
      const conn = "conn" in e ? e.conn : undefined;
      events.push(`${e.type}${conn === undefined ? "" : ` ${conn}`}`);
      if (e.type === "server-connected") {
        return [{ type: "send", to: "server", data: enc.encode(`hello ${conn}`), conn: conn! }];
      }
      if (e.type === "data" && e.from === "server") {
        const out: LayerCommand[] = [{
          type: "send",
          to: "client",
          data: enc.encode(`${conn}:${dec.decode(e.data)};`),
        }];
        if (conn === 2) out.push({ type: "pause-reading", from: "server", conn: 2, paused: true });
        return out;
      }
      if (e.type === "data" && e.from === "client") {
        const text = dec.decode(e.data);
        if (text === "go") return [{ type: "pause-reading", from: "server", conn: 2, paused: false }];
        if (text === "close 1") return [{ type: "close", to: "server", reset: false, conn: 1 }];
      }
      if (e.type === "eof" && e.from === "client") return [{ type: "close", to: "client", reset: false }];
      return [];
    },
  };
  let opened = 0;
  const run = runLayer({
    layer,
    client,
    server: null,
    openServer: () =>
      Promise.resolve({ stream: servers[opened++]!, remote: { hostname: "10.9.9.9", port: 80 } }),
    bus: new FlowBus(),
    initialCommands: [
      { type: "open-server", address: { hostname: "10.9.9.9", port: 80 }, conn: 1 },
      { type: "open-server", address: { hostname: "10.9.9.9", port: 80 }, conn: 2 },
    ],
  });
  await sleep(30);
  assert.deepEqual(servers.map((s) => s.written), ["hello 1", "hello 2"]);
  servers[0]!.push("a");
  servers[1]!.push("b");
  await sleep(30);
  servers[1]!.push("c"); // connection 2 is paused: this waits
  servers[0]!.push("d");
  await sleep(50);
  assert.equal(written(), "1:a;2:b;1:d;");
  client.push("go");
  await sleep(30);
  assert.equal(written(), "1:a;2:b;1:d;2:c;");
  client.push("close 1");
  await sleep(30);
  assert.deepEqual(servers[0]!.closedWith?.reset, false);
  assert.equal(servers[1]!.closedWith, null, "only connection 1 was closed");
  servers[0]!.push("late"); // nothing is read from a closed connection
  client.push(null);
  await ended(run);
  assert.notEqual(servers[1]!.closedWith, null, "the run's end closes the pooled connection left");
  assert.deepEqual(events.filter((e) => e.startsWith("server-connected")), [
    "server-connected 1",
    "server-connected 2",
  ]);
  assert.equal(written(), "1:a;2:b;1:d;2:c;");
});
