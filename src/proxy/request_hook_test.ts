import assert from "node:assert/strict";
import {
  askHook,
  close,
  connected,
  counter,
  eof,
  flow,
  fromClient,
  fromServer,
  hookResult,
  openServer,
  play,
  send,
} from "./_playbook.ts";
import type { ClientInfo, HostPort } from "../flows/flow.ts";
import { Http1Layer, type Http1LayerOptions } from "./http1_layer.ts";
import type { HookResponse } from "./request_hook.ts";

const CLIENT: ClientInfo = { address: { hostname: "10.0.0.2", port: 50000 }, mode: "wireguard" };
const SERVER: HostPort = { hostname: "10.9.0.1", port: 80 };

function hooked(options: Partial<Http1LayerOptions> = {}): Http1Layer {
  return new Http1Layer({
    mode: "transparent",
    scheme: "http",
    client: CLIENT,
    server: { address: SERVER },
    serverState: "none",
    bodyLimit: 1024,
    maxMessages: 100,
    newId: counter(),
    requestHook: true,
    ...options,
  });
}

const ANSWER: HookResponse = {
  status: 200,
  reason: "OK",
  headers: [["content-length", "5"]],
  body: new TextEncoder().encode("hello"),
  replay: "server",
};
const ANSWER_WIRE = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\nhello";

Deno.test("request hook: an answer goes to the client and the server is never dialed", () => {
  play(hooked(), [
    fromClient("GET /a HTTP/1.1\r\nHost: h\r\n\r\n", 1),
    [flow("start", { id: "flow-1" }), askHook({ id: "flow-1", request: { method: "GET", path: "/a" } })],
    hookResult(ANSWER, 2),
    [
      send("client", ANSWER_WIRE),
      flow("end", { replay: "server", response: { status: 200, body: { size: 5 } } }),
    ],
    // The connection is kept alive: the next request is asked about too.
    fromClient("GET /b HTTP/1.1\r\nHost: h\r\n\r\n", 3),
    [flow("start", { id: "flow-2" }), askHook({ request: { path: "/b" } })],
    hookResult(ANSWER, 4),
    [send("client", ANSWER_WIRE), flow("end", { id: "flow-2" })],
  ]);
});

Deno.test("request hook: the body is read before asking; going on sends head and body together", () => {
  play(hooked(), [
    fromClient("POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabc", 1),
    [flow("start", { request: { method: "POST" } })],
    fromClient("def", 2),
    [askHook({ request: { body: { content: "abcdef", size: 6, truncated: false } } })],
    hookResult(undefined, 3),
    [openServer(SERVER)],
    connected(SERVER, 4),
    [send("server", "POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabcdef")],
    fromServer("HTTP/1.1 204 No Content\r\n\r\n", 5),
    [
      send("client", "HTTP/1.1 204 No Content\r\n\r\n"),
      flow("update", {}),
      flow("end", { response: { status: 204 } }),
    ],
  ]);
});

Deno.test("request hook: a body longer than the flow keeps is judged on its start, the rest streams", () => {
  play(hooked({ bodyLimit: 4 }), [
    fromClient("POST /u HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456", 1),
    [flow("start", {}), askHook({ request: { body: { content: "0123", truncated: true } } })],
    fromClient("789", 2),
    [],
    hookResult(undefined, 3),
    [openServer(SERVER)],
    connected(SERVER, 4),
    [
      send("server", "POST /u HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456"),
      send("server", "789"),
    ],
  ]);
});

Deno.test("request hook: an answer before the body's end closes the connection after it", () => {
  const commands = play(hooked({ bodyLimit: 2 }), [
    fromClient("POST /u HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123", 1),
    [flow("start", {}), askHook({})],
    hookResult(ANSWER, 2),
    [
      send("client", ANSWER_WIRE.replace("keep-alive", "close")),
      flow("end", { replay: "server" }),
      close("client"),
    ],
  ]);
  assert.ok(!commands.some((c) => c.type === "open-server"));
});

Deno.test("request hook: kill resets the client and records the flow as killed", () => {
  play(hooked(), [
    fromClient("GET / HTTP/1.1\r\n\r\n", 1),
    [flow("start", {}), askHook({})],
    hookResult("kill", 2),
    [flow("end", { error: { message: "killed by the request hook" } }), close("client", true)],
  ]);
});

Deno.test("request hook: an answer for a destination that could not be reached (no 502)", () => {
  play(hooked({ serverState: { failed: "no route to host" }, scheme: "https" }), [
    fromClient("GET /x HTTP/1.1\r\nHost: h\r\n\r\n", 1),
    [flow("start", {}), askHook({ request: { url: "https://h:80/x" } })],
    hookResult(ANSWER, 2),
    [send("client", ANSWER_WIRE), flow("end", { response: { status: 200 } })],
  ]);
});

Deno.test("request hook: going on to a destination that could not be reached is a 502", () => {
  const commands = play(hooked({ serverState: { failed: "no route to host" } }), [
    fromClient("GET /x HTTP/1.1\r\n\r\n", 1),
    [flow("start", {}), askHook({})],
    hookResult(undefined, 2),
    [send("client", /./ as unknown as string), flow("end", {}), close("client")],
  ]);
  const sent = commands.find((c) => c.type === "send");
  assert.ok(sent && new TextDecoder().decode(sent.data).startsWith("HTTP/1.1 502 "));
});

Deno.test("request hook: a client that ends its side while the hook is asked still gets its answer", () => {
  play(hooked(), [
    fromClient("GET / HTTP/1.1\r\n\r\n", 1),
    [flow("start", {}), askHook({})],
    eof("client", 2),
    [],
    hookResult(ANSWER, 3),
    [send("client", ANSWER_WIRE.replace("keep-alive", "close")), flow("end", {}), close("client")],
  ]);
});

Deno.test("request hook: a request that expects 100-continue gets it from the proxy; the server gets no Expect", () => {
  play(hooked(), [
    fromClient("PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", 1),
    [flow("start", {}), send("client", "HTTP/1.1 100 Continue\r\n\r\n")],
    fromClient("abc", 2),
    [askHook({ request: { body: { content: "abc" } } })],
    hookResult(undefined, 3),
    [openServer(SERVER)],
    connected(SERVER, 4),
    [send("server", "PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")],
  ]);
  // Explicit-proxy mode: the rewritten target and the dropped proxy headers stay as they were.
  play(hooked({ mode: "regular", server: { address: { hostname: "", port: 0 } } }), [
    fromClient(
      "POST http://h:8080/p HTTP/1.1\r\nHost: h:8080\r\nProxy-Connection: keep-alive\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
      1,
    ),
    [flow("start", {}), send("client", "HTTP/1.1 100 Continue\r\n\r\n")],
    fromClient("z", 2),
    [askHook({})],
    hookResult(undefined, 3),
    [openServer({ hostname: "h", port: 8080 })],
    connected({ hostname: "h", port: 8080 }, 4),
    [send("server", "POST /p HTTP/1.1\r\nHost: h:8080\r\nContent-Length: 1\r\n\r\nz")],
  ]);
});
