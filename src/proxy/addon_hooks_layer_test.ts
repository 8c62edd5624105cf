/**
 * Playbook tests of the addon hooks inside layers: TCP chunks and WebSocket messages held for
 * `addon-hook` commands and sent as the addons left them; no command at all for hooks nobody has.
 */
import assert from "node:assert/strict";
import {
  addonHook,
  addonResult,
  bytes,
  close,
  flow,
  fromClient,
  fromServer,
  latin1,
  play,
  send,
} from "./_playbook.ts";
import type { ClientInfo, HostPort } from "../flows/flow.ts";
import type { EventHookName } from "../addons/types.ts";
import type { LayerCommand } from "./layer.ts";
import { TcpLayer } from "./tcp_layer.ts";
import { Http1Layer } from "./http1_layer.ts";
import type { TcpFlowView, WebSocketFlowView } from "../addons/handles.ts";
import { encodeWebSocketFrame, WebSocketReader } from "./websocket.ts";

const CLIENT: ClientInfo = { address: { hostname: "10.0.0.2", port: 50000 }, mode: "wireguard" };
const SERVER: HostPort = { hostname: "10.9.0.1", port: 7 };

function hooks(...names: EventHookName[]) {
  const set = new Set<EventHookName>(names);
  return { has: (n: EventHookName) => set.has(n) };
}

function tcp(names: EventHookName[]): TcpLayer {
  return new TcpLayer({
    id: "tcp-1",
    client: CLIENT,
    server: { address: SERVER },
    serverConnected: true,
    messageLimit: 1024,
    maxMessages: 100,
    now: 1000,
    hooks: hooks(...names),
  });
}

function payload<T>(commands: LayerCommand[], id: number): T {
  const c = commands.find((c) => c.type === "addon-hook" && c.id === id);
  assert.ok(c && c.type === "addon-hook", `addon-hook ${id}`);
  return c.call.payload as T;
}

Deno.test("TcpLayer: tcpMessage holds each chunk; the changed content goes on, a dropped one does not", () => {
  const layer = tcp(["tcpStart", "tcpMessage", "tcpEnd"]);
  const start = layer.start();
  assert.deepEqual(start.map((c) => c.type), ["flow", "addon-hook"]);
  const all = play(layer, [
    fromClient("hello", 1001),
    [addonHook(2, "tcpMessage")],
    fromServer("world", 1002),
    [addonHook(3, "tcpMessage")],
  ]);
  payload<TcpFlowView>(all, 2).message!.text = "HELLO!";
  payload<TcpFlowView>(all, 3).message!.drop();
  play(layer, [
    addonResult(1, 1003),
    [],
    addonResult(2, 1003),
    [send("server", "HELLO!")],
    addonResult(3, 1004),
    [],
  ]);
  assert.equal(layer.flow.bytesFromClient, 6);
  assert.equal(layer.flow.bytesFromServer, 0);
  assert.deepEqual(layer.flow.messages.map((m) => latin1(m.content)), ["HELLO!"]);
});

Deno.test("TcpLayer: a hook that kills ends the flow and resets both sides; tcpEnd follows", () => {
  const layer = tcp(["tcpMessage", "tcpEnd"]);
  layer.start();
  const all = play(layer, [fromClient("x", 1001), [addonHook(1, "tcpMessage")]]);
  payload<TcpFlowView>(all, 1).kill();
  play(layer, [
    addonResult(1, 1002),
    [
      flow("end", { error: { message: "killed by an addon" } }),
      addonHook(2, "tcpEnd"),
      close("server", true),
      close("client", true),
    ],
  ]);
});

Deno.test("TcpLayer: without hooks nothing is held and no addon command is issued", () => {
  const layer = tcp([]);
  assert.deepEqual(layer.start().map((c) => c.type), ["flow"]);
  play(layer, [fromClient("abc", 1001), [send("server", "abc")]]);
});

Deno.test("Http1Layer: websocketMessage holds a message; the changed text goes on as one frame", () => {
  const layer = new Http1Layer({
    mode: "transparent",
    scheme: "http",
    client: CLIENT,
    server: { address: SERVER },
    serverState: "open",
    bodyLimit: 1 << 20,
    maxMessages: 100,
    newId: () => "ws-1",
    hooks: hooks("websocketStart", "websocketMessage", "websocketEnd"),
  });
  const upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  layer.handle(fromClient(upgrade, 1));
  const switched = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
  const started = layer.handle(fromServer(switched, 2));
  assert.ok(started.some((c) => c.type === "addon-hook" && c.call.hook === "websocketStart"));
  const frame = encodeWebSocketFrame(1, new TextEncoder().encode("ping me"), { mask: true });
  const asked = layer.handle(fromClient(latin1(frame), 3));
  assert.deepEqual(asked.map((c) => c.type), ["addon-hook"]);
  const hook = asked[0]!;
  assert.ok(hook.type === "addon-hook");
  const view = hook.call.payload as WebSocketFlowView;
  assert.equal(view.message!.text, "ping me");
  view.message!.text = "changed";
  const sent = layer.handle(addonResult(hook.id, 4));
  assert.equal(sent.length, 1);
  const out = sent[0]!;
  assert.ok(out.type === "send" && out.to === "server");
  const [m] = new WebSocketReader().push(out.data);
  assert.equal(new TextDecoder().decode(m!.data), "changed");
  assert.equal(out.data[1]! & 0x80, 0x80, "client frames stay masked");
  // A server message dropped by the hook never reaches the client.
  const back = layer.handle(fromServer(latin1(encodeWebSocketFrame(1, bytes("x"))), 5));
  const h2 = back[0]!;
  assert.ok(h2.type === "addon-hook");
  (h2.call.payload as WebSocketFlowView).message!.drop();
  assert.deepEqual(layer.handle(addonResult(h2.id, 6)), []);
});

Deno.test("TcpLayer: a tcpStart hook that kills ends the flow before any byte goes on", () => {
  const layer = tcp(["tcpStart"]);
  const start = layer.start();
  payload<TcpFlowView>(start, 1).kill();
  play(layer, [
    addonResult(1, 1001),
    [flow("end", { error: { message: "killed by an addon" } }), close("server", true), close("client", true)],
  ]);
});
