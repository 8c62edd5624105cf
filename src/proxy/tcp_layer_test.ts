import assert from "node:assert/strict";
import {
  close,
  connected,
  eof,
  error,
  failed,
  flow,
  fromClient,
  fromServer,
  openServer,
  play,
  send,
  shutdown,
} from "./_playbook.ts";
import type { ClientInfo, HostPort } from "../flows/flow.ts";
import { TcpLayer, type TcpLayerOptions } from "./tcp_layer.ts";

const CLIENT: ClientInfo = { address: { hostname: "10.0.0.2", port: 50000 }, mode: "wireguard" };
const SERVER: HostPort = { hostname: "93.184.216.34", port: 443 };
const PEER: HostPort = { hostname: "93.184.216.34", port: 443 };

function tcpLayer(options: Partial<TcpLayerOptions> = {}): TcpLayer {
  return new TcpLayer({
    id: "tcp-1",
    client: CLIENT,
    server: { address: SERVER },
    serverConnected: true,
    messageLimit: 1024,
    maxMessages: 100,
    now: 1000,
    ...options,
  });
}

Deno.test("TcpLayer.start() emits the flow start and opens the server when not connected", () => {
  const layer = tcpLayer({ serverConnected: false });
  const commands = layer.start();
  assert.equal(commands.length, 2);
  assert.deepEqual(commands[1], { type: "open-server", address: SERVER });
  const [start] = commands;
  assert.equal(start?.type, "flow");
  if (start?.type !== "flow") return;
  assert.equal(start.event, "start");
  assert.equal(start.flow, layer.flow);
  assert.deepEqual(
    { id: layer.flow.id, type: layer.flow.type, timestampStart: layer.flow.timestampStart },
    { id: "tcp-1", type: "tcp", timestampStart: 1000 },
  );
});

Deno.test("TcpLayer.start() does not open a server the driver already has", () => {
  const layer = tcpLayer();
  assert.deepEqual(layer.start().map((c) => c.type), ["flow"]);
});

Deno.test("TcpLayer.handle() starts the relay itself when start() was not called", () => {
  play(tcpLayer({ serverConnected: false }), [
    fromClient("hi", 1001),
    [flow("start", { id: "tcp-1", type: "tcp" }), openServer(SERVER)],
  ]);
});

Deno.test("TcpLayer holds client bytes until the server is up and flushes them in order", () => {
  const layer = tcpLayer({ serverConnected: false });
  layer.start();
  play(layer, [
    fromClient("one ", 1001),
    [],
    fromClient("two ", 1002),
    [],
    connected(PEER, 1003),
    [send("server", "one two ")],
    fromClient("three", 1004),
    [send("server", "three")],
    fromServer("reply", 1005),
    [send("client", "reply")],
  ]);
  assert.deepEqual(layer.flow.server, { address: SERVER, timestampConnected: 1003, peerAddress: PEER });
  assert.equal(layer.flow.bytesFromClient, 13);
  assert.equal(layer.flow.bytesFromServer, 5);
  assert.deepEqual(
    layer.flow.messages.map((m) => [m.fromClient, m.kind, new TextDecoder().decode(m.content), m.timestamp]),
    [
      [true, "data", "one ", 1001],
      [true, "data", "two ", 1002],
      [true, "data", "three", 1004],
      [false, "data", "reply", 1005],
    ],
  );
});

Deno.test("TcpLayer turns each FIN into a half-close and ends the flow when both sides finished", () => {
  const layer = tcpLayer();
  layer.start();
  play(layer, [
    fromClient("request", 1001),
    [send("server", "request")],
    eof("client", 1002),
    [shutdown("server")],
    fromServer("response", 1003),
    [send("client", "response")],
    eof("server", 1004),
    [
      shutdown("client"),
      flow("end", { timestampEnd: 1004, error: undefined, bytesFromClient: 7, bytesFromServer: 8 }),
      close("client"),
      close("server"),
    ],
    fromServer("late", 1005),
    [],
  ]);
});

Deno.test("TcpLayer half-closes toward the client when the server finishes first", () => {
  const layer = tcpLayer();
  layer.start();
  play(layer, [
    eof("server", 1001),
    [shutdown("client")],
    fromClient("still talking", 1002),
    [send("server", "still talking")],
    eof("client", 1003),
    [shutdown("server"), flow("end", { timestampEnd: 1003 }), close("client"), close("server")],
  ]);
});

Deno.test("TcpLayer sends the FIN of a client that finished before the server was up", () => {
  const layer = tcpLayer({ serverConnected: false });
  layer.start();
  play(layer, [
    fromClient("all of it", 1001),
    [],
    eof("client", 1002),
    [],
    connected(PEER, 1003),
    [send("server", "all of it"), shutdown("server")],
  ]);
});

Deno.test("TcpLayer resets the client and records the cause when the server cannot be reached", () => {
  const layer = tcpLayer({ serverConnected: false });
  layer.start();
  play(layer, [
    fromClient("hello", 1001),
    [],
    failed("connection refused", 1002),
    [
      flow("end", {
        timestampEnd: 1002,
        error: { message: "cannot connect to 93.184.216.34:443: connection refused", timestamp: 1002 },
      }),
      close("client", true),
    ],
    fromClient("more", 1003),
    [],
  ]);
});

Deno.test("TcpLayer resets the client when the server connection fails", () => {
  const layer = tcpLayer();
  layer.start();
  play(layer, [
    error("server", "ECONNRESET", 1001),
    [
      flow("end", { error: { message: "server connection failed: ECONNRESET", timestamp: 1001 } }),
      close("client", true),
      close("server", true),
    ],
    eof("client", 1002),
    [],
  ]);
});

Deno.test("TcpLayer resets the server and closes the client when the client connection fails", () => {
  const layer = tcpLayer();
  layer.start();
  play(layer, [
    fromClient("partial", 1001),
    [send("server", "partial")],
    error("client", "broken pipe", 1002),
    [
      flow("end", { error: { message: "client connection failed: broken pipe", timestamp: 1002 } }),
      close("server", true),
      // Without this the driver, which runs until the client is closed, would never finish.
      close("client", true),
    ],
  ]);
});

Deno.test("TcpLayer keeps a bounded prefix of the traffic and counts messages past the limit", () => {
  const layer = tcpLayer({ messageLimit: 4, maxMessages: 2 });
  layer.start();
  play(layer, [
    fromClient("hello", 1001),
    [send("server", "hello")],
    fromServer("x", 1002),
    [send("client", "x")],
    fromClient("more", 1003),
    [send("server", "more")],
  ]);
  assert.deepEqual(layer.flow.messages, [
    { fromClient: true, kind: "data", content: new TextEncoder().encode("hell"), size: 5, timestamp: 1001 },
    // The content budget (4 bytes over the whole flow) is spent: size and time only.
    { fromClient: false, kind: "data", content: new Uint8Array(0), size: 1, timestamp: 1002 },
  ]);
  assert.equal(layer.flow.messagesDropped, 1);
  assert.equal(layer.flow.bytesFromClient, 9);
});
