import assert from "node:assert/strict";
import {
  bytes,
  close,
  connected,
  counter,
  eof,
  error,
  failed,
  flow,
  fromClient,
  fromServer,
  latin1,
  log,
  openServer,
  play,
  type Script,
  send,
  shutdown,
  timer,
  timerFired,
  tunnel,
} from "./_playbook.ts";
import type { ClientInfo, HostPort, HttpFlow } from "../flows/flow.ts";
import { Http1Layer, type Http1LayerOptions } from "./http1_layer.ts";
import type { LayerCommand } from "./layer.ts";

const CLIENT: ClientInfo = { address: { hostname: "10.0.0.2", port: 50000 }, mode: "wireguard" };
const SERVER: HostPort = { hostname: "93.184.216.34", port: 80 };

function http1Layer(options: Partial<Http1LayerOptions> = {}): Http1Layer {
  return new Http1Layer({
    mode: "transparent",
    scheme: "http",
    client: CLIENT,
    server: { address: SERVER },
    serverState: "open",
    bodyLimit: 1024,
    maxMessages: 100,
    newId: counter(),
    ...options,
  });
}

/** The error response the layer writes itself (status line, three headers, one-line body). */
function errorResponse(status: number, reason: string, text: string): string {
  const body = `wirescope: ${text}\n`;
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain; charset=utf-8\r\n` +
    `content-length: ${new TextEncoder().encode(body).byteLength}\r\nconnection: close\r\n\r\n${body}`;
}

/** The last flow the commands carried. */
function lastFlow(commands: LayerCommand[]): HttpFlow {
  const flows = commands.flatMap((c) => c.type === "flow" && c.flow.type === "http" ? [c.flow] : []);
  const last = flows.at(-1);
  assert.ok(last, "no HTTP flow was emitted");
  return last;
}

/** A body record as the playbook shows it. */
function body(content: string, size = content.length, truncated = false) {
  return { content, size, truncated };
}

/** A WebSocket frame (FIN set), masked when a key is given. */
function frame(opcode: number, payload: Uint8Array, mask?: [number, number, number, number]): string {
  const head = [0x80 | opcode];
  if (payload.byteLength >= 126) throw new RangeError("frame() builds short frames only");
  head.push((mask ? 0x80 : 0) | payload.byteLength);
  const data = payload.slice();
  if (mask) {
    head.push(...mask);
    for (let i = 0; i < data.length; i++) data[i] = data[i]! ^ mask[i % 4]!;
  }
  return latin1(new Uint8Array(head)) + latin1(data);
}

const utf8 = (text: string) => new TextEncoder().encode(text);

// ---- exchanges ----------------------------------------------------------------------------

Deno.test("Http1Layer relays a transparent GET verbatim and records request, response and times", () => {
  const request = "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
  const responseHead = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n";
  play(http1Layer(), [
    fromClient(request, 1000),
    [
      flow("start", {
        id: "flow-1",
        type: "http",
        client: CLIENT,
        server: { address: SERVER, hostname: "example.com" },
        timestampStart: 1000,
        request: {
          method: "GET",
          scheme: "http",
          host: "example.com",
          port: 80,
          path: "/a?b=1",
          url: "http://example.com/a?b=1",
          httpVersion: "HTTP/1.1",
          headers: [["Host", "example.com"], ["Accept", "*/*"]],
          body: body(""),
          timestampStart: 1000,
          timestampEnd: 1000,
        },
        response: undefined,
      }),
      send("server", request),
    ],
    fromServer(responseHead, 1010),
    [
      send("client", responseHead),
      flow("update", {
        id: "flow-1",
        response: {
          status: 200,
          reason: "OK",
          httpVersion: "HTTP/1.1",
          headers: [["Content-Length", "5"], ["Content-Type", "text/plain"]],
          body: body(""),
          timestampStart: 1010,
        },
        timestampEnd: undefined,
      }),
    ],
    fromServer("hel", 1020),
    [send("client", "hel")],
    fromServer("lo", 1030),
    [
      send("client", "lo"),
      flow("end", {
        id: "flow-1",
        timestampEnd: 1030,
        error: undefined,
        response: { status: 200, body: body("hello"), timestampStart: 1010, timestampEnd: 1030 },
      }),
    ],
  ]);
});

Deno.test("Http1Layer builds the URL from the Host header port and a non-default server port", () => {
  const layer = http1Layer({ scheme: "https", server: { address: { hostname: "10.1.1.1", port: 8443 } } });
  play(layer, [
    fromClient("GET / HTTP/1.1\r\nHost: api.example.com:8443\r\n\r\n", 1000),
    [
      flow("start", {
        request: {
          scheme: "https",
          host: "api.example.com",
          port: 8443,
          url: "https://api.example.com:8443/",
        },
      }),
      send("server", "GET / HTTP/1.1\r\nHost: api.example.com:8443\r\n\r\n"),
    ],
  ]);
});

Deno.test("Http1Layer opens the original destination and holds the request head until it is up", () => {
  const request = "POST /form HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\n";
  const peer = { hostname: "93.184.216.34", port: 80 };
  const commands = play(http1Layer({ serverState: "none" }), [
    fromClient(request + "a", 1000),
    [flow("start", { request: { method: "POST", url: "http://example.com/form" } }), openServer(SERVER)],
    fromClient("bc", 1001),
    [],
    connected(peer, 1005),
    [send("server", request), send("server", "abc")],
    fromServer("HTTP/1.1 204 No Content\r\n\r\n", 1010),
    [
      send("client", "HTTP/1.1 204 No Content\r\n\r\n"),
      flow("update", { response: { status: 204 } }),
      flow("end", { request: { body: body("abc"), timestampEnd: 1005 }, timestampEnd: 1010 }),
    ],
  ]);
  assert.deepEqual(lastFlow(commands).server, {
    address: SERVER,
    hostname: "example.com",
    timestampConnected: 1005,
    peerAddress: peer,
  });
});

Deno.test("Http1Layer answers 502 naming the cause when the server cannot be reached", () => {
  const text = "cannot connect to 93.184.216.34:80: connection refused (ECONNREFUSED)";
  play(http1Layer({ serverState: "none" }), [
    fromClient("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 1000),
    [flow("start", { id: "flow-1" }), openServer(SERVER)],
    failed("connection refused (ECONNREFUSED)", 1003),
    [
      send("client", errorResponse(502, "Bad Gateway", text)),
      flow("end", {
        timestampEnd: 1003,
        error: { message: text, timestamp: 1003 },
        response: { status: 502, reason: "Bad Gateway", body: body(`wirescope: ${text}\n`) },
      }),
      close("client"),
    ],
    fromClient("GET /again HTTP/1.1\r\n\r\n", 1004),
    [],
  ]);
});

Deno.test("Http1Layer answers 502 at once when the driver could not connect before the layer started", () => {
  const text = "cannot connect to 93.184.216.34:80: timed out";
  play(http1Layer({ serverState: { failed: "timed out" } }), [
    fromClient("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 1000),
    [
      flow("start", { id: "flow-1" }),
      send("client", errorResponse(502, "Bad Gateway", text)),
      flow("end", { error: { message: text, timestamp: 1000 } }),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer records each request of a keep-alive connection as its own flow", () => {
  play(http1Layer(), [
    fromClient("GET /1 HTTP/1.1\r\nHost: example.com\r\n\r\n", 1000),
    [
      flow("start", { id: "flow-1", request: { path: "/1" } }),
      send("server", "GET /1 HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    ],
    fromServer("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1", 1001),
    [
      send("client", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"),
      flow("update", { id: "flow-1" }),
      send("client", "1"),
      flow("end", { id: "flow-1", response: { body: body("1") } }),
    ],
    fromClient("GET /2 HTTP/1.1\r\nHost: example.com\r\n\r\n", 1002),
    [
      flow("start", { id: "flow-2", request: { path: "/2" } }),
      send("server", "GET /2 HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    ],
    fromServer("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2", 1003),
    [
      send("client", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"),
      flow("update", { id: "flow-2" }),
      send("client", "2"),
      flow("end", { id: "flow-2", response: { body: body("2") }, timestampStart: 1002, timestampEnd: 1003 }),
    ],
  ]);
});

Deno.test("Http1Layer holds a pipelined request until the response before it is complete", () => {
  const first = "GET /1 HTTP/1.1\r\nHost: example.com\r\n\r\n";
  const second = "GET /2 HTTP/1.1\r\nHost: example.com\r\n\r\n";
  play(http1Layer(), [
    fromClient(first + second, 1000),
    [flow("start", { id: "flow-1" }), send("server", first)],
    fromServer("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfi", 1001),
    [
      send("client", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"),
      flow("update", { id: "flow-1" }),
      send("client", "fi"),
    ],
    fromServer("rst", 1002),
    [
      send("client", "rs"),
      flow("end", { id: "flow-1", timestampEnd: 1002 }),
      flow("start", { id: "flow-2", timestampStart: 1002, request: { path: "/2", timestampStart: 1002 } }),
      send("server", second),
    ],
  ]);
});

// ---- bodies -------------------------------------------------------------------------------

Deno.test("Http1Layer streams a chunked request fed one byte at a time and records it decoded", () => {
  const head = "POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n";
  const chunked = "4\r\nWiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Sum: 1\r\n\r\n";
  const script: Script = [];
  let now = 1000;
  for (let i = 0; i < head.length; i++) {
    script.push(
      fromClient(head[i]!, now++),
      i < head.length - 1 ? [] : [flow("start", { request: { method: "POST" } }), send("server", head)],
    );
  }
  for (const c of chunked) script.push(fromClient(c, now++), [send("server", c)]);
  const layer = http1Layer();
  const commands = play(layer, script);
  const request = lastFlow(commands).request;
  assert.equal(new TextDecoder().decode(request.body.content), "Wikipedia in\r\n\r\nchunks.");
  assert.deepEqual([request.body.size, request.body.truncated], [23, false]);
  assert.deepEqual([request.timestampStart, request.timestampEnd], [1000 + head.length - 1, now - 1]);

  play(layer, [
    fromServer("HTTP/1.1 200 OK\r\nTransfer-En", 2000),
    [],
    fromServer("coding: chunked\r\n\r\n3\r", 2001),
    [
      send("client", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
      flow("update", {}),
      send("client", "3\r"),
    ],
    fromServer("\nab", 2002),
    [send("client", "\nab")],
    fromServer("c\r\n0\r\n", 2003),
    [send("client", "c\r\n0\r\n")],
    fromServer("\r\n", 2004),
    [send("client", "\r\n"), flow("end", { response: { body: body("abc"), timestampEnd: 2004 } })],
  ]);
});

Deno.test("Http1Layer streams a chunked response fed one byte at a time", () => {
  const head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  const chunked = "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n";
  const layer = http1Layer();
  play(layer, [
    fromClient("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 1000),
    [flow("start", {}), send("server", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")],
  ]);
  const script: Script = [];
  for (let i = 0; i < head.length; i++) {
    script.push(
      fromServer(head[i]!, 2000),
      i < head.length - 1 ? [] : [send("client", head), flow("update", {})],
    );
  }
  for (let i = 0; i < chunked.length; i++) {
    const c = chunked[i]!;
    script.push(
      fromServer(c, 3000 + i),
      i < chunked.length - 1 ? [send("client", c)] : [
        send("client", c),
        flow("end", { response: { body: body("hello world"), timestampEnd: 3000 + i } }),
      ],
    );
  }
  play(layer, script);
});

Deno.test("Http1Layer keeps a bounded prefix of each body and records the full size", () => {
  const layer = http1Layer({ bodyLimit: 4 });
  const head = "PUT /f HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\n";
  play(layer, [
    fromClient(head + "012", 1000),
    [flow("start", {}), send("server", head), send("server", "012")],
    fromClient("3456789", 1001),
    [send("server", "3456789")],
    fromServer(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
      1002,
    ),
    [
      send("client", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
      flow("update", {}),
      send("client", "6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"),
      flow("end", {
        request: { body: body("0123", 10, true) },
        response: { body: body("hell", 11, true) },
      }),
    ],
  ]);
});

// ---- malformed requests -------------------------------------------------------------------

Deno.test("Http1Layer refuses a request with both Content-Length and Transfer-Encoding with 400", () => {
  const text =
    "malformed request: Cannot frame request: both Transfer-Encoding and Content-Length are present";
  play(http1Layer(), [
    fromClient(
      "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      1000,
    ),
    [
      flow("start", { request: { method: "POST", url: "http://example.com/" } }),
      send("client", errorResponse(400, "Bad Request", text)),
      flow("end", { error: { message: text, timestamp: 1000 }, response: { status: 400 } }),
      close("server"),
      close("client"),
    ],
    fromClient("GET / HTTP/1.1\r\n\r\n", 1001),
    [],
  ]);
});

Deno.test("Http1Layer answers 431 when a request head outgrows the limit", () => {
  const text = "malformed request: Cannot parse request head: no end within 64 bytes";
  play(http1Layer({ limits: { maxHeadBytes: 64, maxHeaders: 10 } }), [
    fromClient("GET / HTTP/1.1\r\nHost: example.com\r\n", 1000),
    [],
    fromClient("X-Padding: " + "a".repeat(40), 1001),
    [
      flow("start", { id: "flow-1", request: { method: "", url: "http://93.184.216.34" } }),
      send("client", errorResponse(431, "Request Header Fields Too Large", text)),
      flow("end", { error: { message: text, timestamp: 1001 }, response: { status: 431 } }),
      close("server"),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer answers 431 when a request has more header fields than allowed", () => {
  const text = "malformed request: Cannot parse request head: more than 2 header fields";
  play(http1Layer({ limits: { maxHeadBytes: 1024, maxHeaders: 2 } }), [
    fromClient("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 1000),
    [
      flow("start", {}),
      send("client", errorResponse(431, "Request Header Fields Too Large", text)),
      flow("end", { error: { message: text, timestamp: 1000 } }),
      close("server"),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer answers 400 to a request line that is not HTTP", () => {
  const text = 'malformed request: Cannot parse request line "HELLO": expected three parts';
  play(http1Layer({ serverState: "none" }), [
    fromClient("HELLO\r\n\r\n", 1000),
    [
      flow("start", {}),
      send("client", errorResponse(400, "Bad Request", text)),
      flow("end", { error: { message: text, timestamp: 1000 } }),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer answers 400 and closes both sides when a chunked request body is malformed", () => {
  const head = "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n";
  const text = 'malformed request: Cannot decode chunked body: invalid chunk size line "zz"';
  play(http1Layer(), [
    fromClient(head, 1000),
    [flow("start", {}), send("server", head)],
    fromClient("zz\r\n", 1001),
    [
      send("client", errorResponse(400, "Bad Request", text)),
      flow("end", { error: { message: text, timestamp: 1001 } }),
      close("server"),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer resets both sides when a chunked request body turns bad after the response began", () => {
  const head = "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n";
  const responseHead = "HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\n\r\n";
  play(http1Layer(), [
    fromClient(head + "3\r\nabc\r\n", 1000),
    [flow("start", {}), send("server", head), send("server", "3\r\nabc\r\n")],
    fromServer(responseHead + "no", 1001),
    [send("client", responseHead), flow("update", { response: { status: 413 } }), send("client", "no")],
    fromClient("3\r\nabcX", 1002),
    [
      flow("end", {
        error: {
          message: "malformed request: Cannot decode chunked body: chunk data not followed by CRLF",
          timestamp: 1002,
        },
      }),
      close("client", true),
      close("server", true),
    ],
  ]);
});

Deno.test("Http1Layer forwards a whole request body the client sent before the server was up", () => {
  const head = "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\n";
  play(http1Layer({ serverState: "none" }), [
    fromClient(head + "abc", 1000),
    [flow("start", {}), openServer(SERVER)],
    eof("client", 1001),
    [],
    connected(SERVER, 1002),
    [send("server", head), send("server", "abc")],
    fromServer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1003),
    [
      send("client", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
      flow("update", {}),
      flow("end", { error: undefined, request: { body: body("abc") } }),
      close("server"),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer fails the flow once connected when the held request body was cut short", () => {
  const head = "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\n";
  play(http1Layer({ serverState: "none" }), [
    fromClient(head + "abc", 1000),
    [flow("start", {}), openServer(SERVER)],
    eof("client", 1001),
    [],
    connected(SERVER, 1002),
    [
      send("server", head),
      send("server", "abc"),
      flow("end", {
        error: {
          message: "client closed the connection before the request body was complete",
          timestamp: 1002,
        },
      }),
      close("server", true),
      close("client"),
    ],
  ]);
});

// ---- responses without bodies, interim responses, closing ---------------------------------

Deno.test("Http1Layer expects no body after a HEAD request even with Content-Length", () => {
  const responseHead = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
  play(http1Layer(), [
    fromClient("HEAD /big HTTP/1.1\r\nHost: example.com\r\n\r\n", 1000),
    [
      flow("start", { request: { method: "HEAD" } }),
      send("server", "HEAD /big HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    ],
    fromServer(responseHead, 1001),
    [send("client", responseHead), flow("update", {}), flow("end", { response: { body: body("") } })],
    fromClient("GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n", 1002),
    [flow("start", { id: "flow-2" }), send("server", "GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n")],
  ]);
});

Deno.test("Http1Layer ends the exchange at the head of a 204 or a 304", () => {
  for (const status of ["204 No Content", "304 Not Modified\r\nContent-Length: 10"]) {
    const responseHead = `HTTP/1.1 ${status}\r\n\r\n`;
    play(http1Layer(), [
      fromClient("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 1000),
      [flow("start", {}), send("server", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")],
      fromServer(responseHead, 1001),
      [
        send("client", responseHead),
        flow("update", { response: { status: Number(status.slice(0, 3)) } }),
        flow("end", { error: undefined, response: { body: body("") } }),
      ],
    ]);
  }
});

Deno.test("Http1Layer relays a 100 Continue before the final response", () => {
  const head = "PUT /f HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
  play(http1Layer(), [
    fromClient(head, 1000),
    [flow("start", {}), send("server", head)],
    fromServer("HTTP/1.1 100 Continue\r\n\r\n", 1001),
    [send("client", "HTTP/1.1 100 Continue\r\n\r\n")],
    fromClient("hello", 1002),
    [send("server", "hello")],
    fromServer("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 1003),
    [
      send("client", "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
      flow("update", { response: { status: 201, headers: [["Content-Length", "0"]] } }),
      flow("end", { request: { body: body("hello"), timestampEnd: 1002 }, error: undefined }),
    ],
  ]);
});

Deno.test("Http1Layer closes the connection after the response to an HTTP/1.0 request", () => {
  play(http1Layer(), [
    fromClient("GET / HTTP/1.0\r\nHost: example.com\r\n\r\n", 1000),
    [
      flow("start", { request: { httpVersion: "HTTP/1.0" } }),
      send("server", "GET / HTTP/1.0\r\nHost: example.com\r\n\r\n"),
    ],
    fromServer("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 1001),
    [
      send("client", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n"),
      flow("update", {}),
      send("client", "ok"),
      flow("end", { error: undefined }),
      close("server"),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer closes the connection after a response with Connection: close", () => {
  const responseHead = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
  play(http1Layer(), [
    fromClient("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 1000),
    [flow("start", {}), send("server", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")],
    fromServer(responseHead, 1001),
    [send("client", responseHead), flow("update", {}), flow("end", {}), close("server"), close("client")],
  ]);
});

Deno.test("Http1Layer reads an unframed response until the server closes", () => {
  const responseHead = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n";
  play(http1Layer(), [
    fromClient("GET /stream HTTP/1.1\r\nHost: example.com\r\n\r\n", 1000),
    [flow("start", {}), send("server", "GET /stream HTTP/1.1\r\nHost: example.com\r\n\r\n")],
    fromServer(responseHead + "stream", 1001),
    [send("client", responseHead), flow("update", {}), send("client", "stream")],
    fromServer("ing", 1002),
    [send("client", "ing")],
    eof("server", 1003),
    [
      flow("end", {
        timestampEnd: 1003,
        error: undefined,
        response: { body: body("streaming"), timestampEnd: 1003 },
      }),
      close("client"),
      close("server"),
    ],
  ]);
});

// ---- broken connections -------------------------------------------------------------------

Deno.test("Http1Layer closes the client, as the server did, when it closes in the middle of a body", () => {
  const responseHead = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
  play(http1Layer(), [
    fromClient("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 1000),
    [flow("start", {}), send("server", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")],
    fromServer(responseHead + "abc", 1001),
    [send("client", responseHead), flow("update", {}), send("client", "abc")],
    eof("server", 1002),
    [
      flow("end", {
        error: {
          message: "server closed the connection in the middle of the response body",
          timestamp: 1002,
        },
        response: { body: body("abc") },
      }),
      close("client"),
      close("server"),
    ],
    fromServer("late", 1003),
    [],
  ]);
});

Deno.test("Http1Layer resets the client when the server connection fails in the middle of a body", () => {
  const responseHead = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
  play(http1Layer(), [
    fromClient("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 1000),
    [flow("start", {}), send("server", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")],
    fromServer(responseHead + "abc", 1001),
    [send("client", responseHead), flow("update", {}), send("client", "abc")],
    error("server", "ECONNRESET", 1002),
    [
      flow("end", {
        error: {
          message: "server connection failed: ECONNRESET in the middle of the response body",
          timestamp: 1002,
        },
      }),
      close("client", true),
      close("server"),
    ],
  ]);
});

Deno.test("Http1Layer answers 502 when the server closes before responding", () => {
  const text = "server closed the connection before sending a response";
  play(http1Layer(), [
    fromClient("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 1000),
    [flow("start", {}), send("server", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")],
    eof("server", 1001),
    [
      send("client", errorResponse(502, "Bad Gateway", text)),
      flow("end", { error: { message: text, timestamp: 1001 }, response: { status: 502 } }),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer opens a new server connection after the server closed an idle one", () => {
  play(http1Layer(), [
    eof("server", 1000),
    [close("server")],
    fromClient("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 1001),
    [flow("start", {}), openServer(SERVER)],
    connected(SERVER, 1002),
    [send("server", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")],
  ]);
});

Deno.test("Http1Layer drops bytes a server sends with no request pending", () => {
  play(http1Layer(), [
    fromServer("surprise", 1000),
    [log("warn", "93.184.216.34:80 sent 8 bytes with no request pending; dropped")],
  ]);
});

Deno.test("Http1Layer closes both sides when the client finishes while idle", () => {
  play(http1Layer(), [
    eof("client", 1000),
    [close("server"), close("client")],
  ]);
  play(http1Layer({ serverState: "none" }), [
    eof("client", 1000),
    [close("client")],
  ]);
  play(http1Layer(), [
    fromClient("GET / HT", 1000),
    [],
    eof("client", 1001),
    [
      log("info", "10.0.0.2:50000: client closed the connection inside a request head (8 bytes)"),
      close("server"),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer fails the flow when the client finishes in the middle of a request body", () => {
  const head = "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\n";
  play(http1Layer(), [
    fromClient(head + "abc", 1000),
    [flow("start", {}), send("server", head), send("server", "abc")],
    eof("client", 1001),
    [
      flow("end", {
        error: {
          message: "client closed the connection before the request body was complete",
          timestamp: 1001,
        },
        request: { body: body("abc") },
      }),
      close("server", true),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer delivers the response to a client that finished sending, then closes", () => {
  play(http1Layer(), [
    fromClient("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 1000),
    [flow("start", {}), send("server", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")],
    eof("client", 1001),
    [],
    fromServer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1002),
    [
      send("client", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"),
      flow("update", {}),
      send("client", "ok"),
      flow("end", { error: undefined }),
      close("server"),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer resets both sides when the client connection fails", () => {
  play(http1Layer(), [
    fromClient("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 1000),
    [flow("start", {}), send("server", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")],
    error("client", "ECONNRESET", 1001),
    [
      flow("end", { error: { message: "client connection failed: ECONNRESET", timestamp: 1001 } }),
      close("server", true),
      close("client", true),
    ],
  ]);
});

// ---- WebSocket ----------------------------------------------------------------------------

const UPGRADE_REQUEST = "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n" +
  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const UPGRADE_RESPONSE = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
const MASK: [number, number, number, number] = [0x37, 0xfa, 0x21, 0x3d];

Deno.test("Http1Layer relays WebSocket frames after an upgrade and records their messages", () => {
  const hello = frame(1, utf8("Hello"), MASK);
  // RFC 6455 §5.7 gives these bytes for a masked "Hello".
  assert.equal(
    hello,
    latin1(new Uint8Array([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58])),
  );
  const reply = frame(2, new Uint8Array([0, 1, 2, 0xff]));
  const bye = frame(8, new Uint8Array([0x03, 0xe8, ...utf8("bye")]), MASK);
  play(http1Layer(), [
    fromClient(UPGRADE_REQUEST, 1000),
    [flow("start", { request: { url: "http://example.com/chat" } }), send("server", UPGRADE_REQUEST)],
    fromServer(UPGRADE_RESPONSE, 1001),
    [
      send("client", UPGRADE_RESPONSE),
      flow("update", { response: { status: 101 }, websocket: { messages: [], messagesDropped: 0 } }),
    ],
    fromClient(hello.slice(0, 4), 1002),
    [send("server", hello.slice(0, 4))],
    fromClient(hello.slice(4), 1003),
    [send("server", hello.slice(4))],
    fromServer(reply, 1004),
    [send("client", reply)],
    fromClient(bye, 1005),
    [send("server", bye)],
    eof("client", 1006),
    [
      flow("end", {
        timestampEnd: 1006,
        error: undefined,
        websocket: {
          messages: [
            { fromClient: true, kind: "text", content: "Hello", size: 5, timestamp: 1003 },
            { fromClient: false, kind: "binary", content: "\x00\x01\x02\xff", size: 4, timestamp: 1004 },
            { fromClient: true, kind: "close", content: "\x03\xe8bye", size: 5, timestamp: 1005 },
          ],
          messagesDropped: 0,
          closeCode: 1000,
          closeReason: "bye",
        },
      }),
      close("server"),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer relays WebSocket bytes that arrive with the upgrade heads", () => {
  const early = frame(1, utf8("early"), MASK);
  const greeting = frame(1, utf8("welcome"));
  const ping = frame(9, new Uint8Array(0));
  play(http1Layer({ maxMessages: 2 }), [
    fromClient(UPGRADE_REQUEST + early, 1000),
    [flow("start", {}), send("server", UPGRADE_REQUEST)],
    fromServer(UPGRADE_RESPONSE + greeting + ping, 1001),
    [
      send("client", UPGRADE_RESPONSE),
      flow("update", {}),
      send("server", early),
      send("client", greeting + ping),
    ],
    eof("server", 1002),
    [
      flow("end", {
        websocket: {
          messages: [
            { fromClient: true, kind: "text", content: "early" },
            { fromClient: false, kind: "text", content: "welcome" },
          ],
          messagesDropped: 1,
        },
      }),
      close("server"),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer keeps relaying WebSocket bytes it cannot parse", () => {
  play(http1Layer(), [
    fromClient(UPGRADE_REQUEST, 1000),
    [flow("start", {}), send("server", UPGRADE_REQUEST)],
    fromServer(UPGRADE_RESPONSE, 1001),
    [send("client", UPGRADE_RESPONSE), flow("update", {})],
    fromServer("\x83\x00", 1002),
    [
      send("client", "\x83\x00"),
      log("warn", /^WebSocket frames from the server cannot be parsed: .*opcode 3/),
    ],
    fromServer("anything", 1003),
    [send("client", "anything")],
  ]);
});

// ---- regular (explicit proxy) mode --------------------------------------------------------

function regularLayer(): Http1Layer {
  return http1Layer({ mode: "regular", serverState: "none", server: { address: { hostname: "", port: 0 } } });
}

Deno.test("Http1Layer in regular mode opens the host of an absolute URL and sends origin form", () => {
  const target = { hostname: "example.com", port: 8080 };
  play(regularLayer(), [
    fromClient(
      "GET http://example.com:8080/x?y HTTP/1.1\r\nHost: example.com:8080\r\nProxy-Connection: keep-alive\r\n" +
        "Accept: */*\r\n\r\n",
      1000,
    ),
    [
      flow("start", {
        server: { address: target, hostname: "example.com" },
        request: { host: "example.com", port: 8080, path: "/x?y", url: "http://example.com:8080/x?y" },
      }),
      openServer(target),
    ],
    connected({ hostname: "192.0.2.7", port: 8080 }, 1001),
    [send("server", "GET /x?y HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\n\r\n")],
    fromServer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1002),
    [send("client", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), flow("update", {}), flow("end", {})],
    // The same host reuses the connection.
    fromClient("GET http://example.com:8080 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", 1003),
    [
      flow("start", { id: "flow-2", request: { path: "/" } }),
      send("server", "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"),
    ],
    fromServer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1004),
    [send("client", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), flow("update", {}), flow("end", {})],
    // Another host replaces it.
    fromClient("GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n", 1005),
    [
      flow("start", { id: "flow-3", request: { url: "http://other.test/" } }),
      close("server"),
      openServer({ hostname: "other.test", port: 80 }),
    ],
    connected({ hostname: "192.0.2.8", port: 80 }, 1006),
    [send("server", "GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")],
  ]);
});

Deno.test("Http1Layer behind an upstream HTTP proxy sends absolute form with the upstream's credentials", () => {
  const target = { hostname: "example.com", port: 8080 };
  const layer = http1Layer({
    mode: "regular",
    serverState: "none",
    server: { address: { hostname: "", port: 0 } },
    absoluteForm: { headers: [["Proxy-Authorization", "Basic dTpw"]] },
  });
  play(layer, [
    fromClient(
      "GET http://example.com:8080/x?y HTTP/1.1\r\nHost: example.com:8080\r\nProxy-Authorization: Basic bWU6eA==\r\n" +
        "Accept: */*\r\n\r\n",
      1000,
    ),
    [flow("start", { request: { path: "/x?y", url: "http://example.com:8080/x?y" } }), openServer(target)],
    connected({ hostname: "127.0.0.1", port: 3128 }, 1001),
    [
      send(
        "server",
        "GET http://example.com:8080/x?y HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\n" +
          "Proxy-Authorization: Basic dTpw\r\n\r\n",
      ),
    ],
  ]);
});

Deno.test("Http1Layer in regular mode refuses an origin-form request with 400", () => {
  const text = "wirescope is a proxy: requests must carry an absolute http:// URL or use CONNECT (got /x)";
  play(regularLayer(), [
    fromClient("GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n", 1000),
    [
      flow("start", { request: { method: "GET", path: "/x" } }),
      send("client", errorResponse(400, "Bad Request", text)),
      flow("end", { error: { message: text, timestamp: 1000 } }),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer in regular mode hands a CONNECT over as a tunnel (unanswered) with the bytes after it", () => {
  play(regularLayer(), [
    fromClient(
      "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01\x00\x05hello",
      1000,
    ),
    [
      // The driver answers once it has reached the target.
      tunnel({ hostname: "example.com", port: 443 }, "\x16\x03\x01\x00\x05hello"),
    ],
    fromClient("more", 1001),
    [],
  ]);
});

Deno.test("Http1Layer in regular mode refuses a CONNECT target it cannot parse", () => {
  const text = "cannot parse CONNECT target example.com:https";
  play(regularLayer(), [
    fromClient("CONNECT example.com:https HTTP/1.1\r\n\r\n", 1000),
    [
      flow("start", { request: { method: "CONNECT" } }),
      send("client", errorResponse(400, "Bad Request", text)),
      flow("end", { error: { message: text, timestamp: 1000 } }),
      close("client"),
    ],
  ]);
});

Deno.test("playbook bytes() and latin1() round-trip every byte value", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.deepEqual(bytes(latin1(all)), all);
});

Deno.test("Http1Layer resets a client that pipelines more than 1 MiB ahead of a response", () => {
  const layer = new Http1Layer({
    mode: "transparent",
    scheme: "http",
    client: { address: { hostname: "10.0.0.2", port: 40000 }, mode: "wireguard" },
    server: { address: { hostname: "10.99.0.1", port: 80 } },
    serverState: "open",
    bodyLimit: 1024,
    maxMessages: 10,
    newId: () => "f1",
  });
  layer.handle({
    type: "data",
    from: "client",
    data: new TextEncoder().encode("GET / HTTP/1.1\r\nhost: a\r\n\r\n"),
    now: 1,
  });
  let out = layer.handle({ type: "data", from: "client", data: new Uint8Array(512 * 1024), now: 2 });
  assert.ok(!out.some((c) => c.type === "close"), "half a MiB ahead is held");
  out = layer.handle({ type: "data", from: "client", data: new Uint8Array(600 * 1024), now: 3 });
  assert.deepEqual(out.filter((c) => c.type === "close"), [
    { type: "close", to: "server", reset: true },
    { type: "close", to: "client", reset: true },
  ]);
  const end = out.find((c) => c.type === "flow" && c.event === "end");
  assert.ok(end && end.type === "flow" && /ahead of the response/.test(end.flow.error?.message ?? ""));
});

// ---- recording cost -----------------------------------------------------------------------

/**
 * Runs `fn` while counting the bytes copied with `Uint8Array.prototype.set` (how bodies are
 * buffered and recorded). Throws as soon as the count passes `bound`, so a quadratic copy fails
 * in milliseconds instead of running for minutes.
 */
function withCopyCount<T>(bound: number, fn: () => T): { result: T; copied: number } {
  const original = Uint8Array.prototype.set;
  let copied = 0;
  Uint8Array.prototype.set = function (this: Uint8Array, source: ArrayLike<number>, offset?: number) {
    copied += source.length;
    if (copied > bound) throw new Error(`more than ${bound} bytes copied`);
    return original.call(this, source, offset);
  } as typeof original;
  try {
    return { result: fn(), copied };
  } finally {
    Uint8Array.prototype.set = original;
  }
}

Deno.test("Http1Layer records a 3 MB body sent in small chunks with a linear number of copies", () => {
  const size = 3 * 1000 * 1000;
  const piece = 16;
  const head = "POST /big HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n";
  // The whole chunked body as wire bytes: `10\r\n` + 16 bytes + `\r\n` per chunk.
  const wire = new Uint8Array((size / piece) * (4 + piece + 2) + 5);
  let at = 0;
  for (let i = 0; i < size / piece; i++) {
    wire.set(bytes("10\r\n"), at);
    for (let j = 0; j < piece; j++) wire[at + 4 + j] = 0x61 + ((i * piece + j) % 26);
    wire.set(bytes("\r\n"), at + 4 + piece);
    at += 4 + piece + 2;
  }
  wire.set(bytes("0\r\n\r\n"), at);
  const layer = http1Layer({ bodyLimit: 4 * 1000 * 1000 });
  play(layer, [fromClient(head, 1), [flow("start", {}), send("server", head)]]);
  // Fed as the network would hand it over: 16 KiB reads, each holding hundreds of chunks.
  const { copied } = withCopyCount(4 * size, () => {
    for (let off = 0; off < wire.byteLength; off += 16384) {
      const out = layer.handle(fromClient(wire.subarray(off, off + 16384), 2));
      assert.deepEqual(out.map((c) => c.type), ["send"]);
    }
  });
  // Each byte is copied once on the way in; growing by doubling copies less than twice the body
  // in total. Copying the prefix for every piece, as before, would be ~280 GB here.
  assert.ok(copied <= 3 * size, `${copied} bytes copied for a ${size}-byte body`);
  const commands = play(layer, [
    fromServer("HTTP/1.1 204 No Content\r\n\r\n", 3),
    [send("client", "HTTP/1.1 204 No Content\r\n\r\n"), flow("update", {}), flow("end", {})],
  ]);
  const recorded = lastFlow(commands).request.body;
  assert.deepEqual([recorded.size, recorded.truncated, recorded.content.byteLength], [size, false, size]);
  assert.equal(recorded.content[size - 1], 0x61 + ((size - 1) % 26));
});

// ---- a server that answers before the request body is complete ----------------------------

Deno.test("Http1Layer keeps relaying the request body after an early answer and ends the exchange with it", () => {
  const head = "POST /up HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\n";
  const answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  const layer = http1Layer();
  play(layer, [
    fromClient(head + "0123", 1000),
    [flow("start", {}), send("server", head), send("server", "0123")],
    fromServer(answer, 1001),
    // The answer goes to the client at once; the exchange is not over until the body is.
    [
      send("client", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"),
      flow("update", {}),
      send("client", "ok"),
    ],
    fromClient("456", 1002),
    [send("server", "456")],
    fromClient("789", 1003),
    [
      send("server", "789"),
      flow("end", {
        error: undefined,
        timestampEnd: 1003,
        request: { body: body("0123456789"), timestampEnd: 1003 },
        response: { status: 200, body: body("ok"), timestampEnd: 1001 },
      }),
    ],
    // The connection stays usable.
    fromClient("GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n", 1004),
    [flow("start", { id: "flow-2" }), send("server", "GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n")],
  ]);
});

Deno.test("Http1Layer reads and drops the rest of the body when the server answers early and closes", () => {
  const head = "PUT /up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n";
  const answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n";
  play(http1Layer(), [
    fromClient(head + "3\r\nabc\r\n", 1000),
    [flow("start", {}), send("server", head), send("server", "3\r\nabc\r\n")],
    fromServer(answer + "ok", 1001),
    [send("client", answer), flow("update", {}), send("client", "ok")],
    eof("server", 1002),
    [close("server")],
    // Nothing goes to the server any more, but the client can finish sending.
    fromClient("3\r\ndef\r\n", 1003),
    [],
    fromClient("0\r\n\r\n", 1004),
    [
      flow("end", {
        error: undefined,
        request: { body: body("abcdef"), timestampEnd: 1004 },
        response: { status: 200 },
      }),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer ends the exchange when the client stops sending after an early answer", () => {
  const head = "POST /up HTTP/1.1\r\nHost: example.com\r\nContent-Length: 100\r\n\r\n";
  const answer = "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n";
  play(http1Layer(), [
    fromClient(head + "0123", 1000),
    [flow("start", {}), send("server", head), send("server", "0123")],
    fromServer(answer, 1001),
    [send("client", answer), flow("update", {})],
    eof("client", 1002),
    [flow("end", { error: undefined, response: { status: 413 } }), close("server"), close("client")],
  ]);
});

// ---- a server that stalls -----------------------------------------------------------------

Deno.test("Http1Layer answers 504 when the server sends nothing for the server timeout", () => {
  const request = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
  const text = "93.184.216.34:80 sent no response for 5 s";
  play(http1Layer({ serverTimeout: 5000 }), [
    fromClient(request, 1000),
    [flow("start", {}), send("server", request), timer(5000)],
    timerFired(6000),
    [
      log("info", "10.0.0.2:50000: server timeout (5 s) hit on 93.184.216.34:80"),
      close("server", true),
      send("client", errorResponse(504, "Gateway Timeout", text)),
      flow("end", { error: { message: text, timestamp: 6000 }, response: { status: 504 } }),
      close("client"),
    ],
  ]);
});

Deno.test("Http1Layer counts server progress and re-arms its timer for the time left", () => {
  const head = "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\n";
  const responseHead = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n";
  const text = "93.184.216.34:80 sent nothing for 5 s in the middle of the response body";
  play(http1Layer({ serverTimeout: 5000 }), [
    fromClient(head + "ab", 1000),
    [flow("start", {}), send("server", head), timer(5000), send("server", "ab")],
    // Each request byte that comes shows the server took the ones before.
    fromClient("cd", 4000),
    [send("server", "cd")],
    timerFired(6000),
    [timer(3000)],
    fromServer(responseHead + "xy", 8000),
    [send("client", responseHead), flow("update", {}), send("client", "xy")],
    timerFired(9000),
    [timer(4000)],
    timerFired(13000),
    [
      log("info", /server timeout \(5 s\) hit/),
      close("server", true),
      flow("end", { error: { message: text, timestamp: 13000 }, response: { body: body("xy") } }),
      close("client", true),
    ],
  ]);
});

Deno.test("Http1Layer lets its timer lapse on an idle keep-alive connection", () => {
  const request = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
  const response = "HTTP/1.1 204 No Content\r\n\r\n";
  play(http1Layer({ serverTimeout: 5000 }), [
    fromClient(request, 1000),
    [flow("start", {}), send("server", request), timer(5000)],
    fromServer(response, 1001),
    [send("client", response), flow("update", {}), flow("end", {})],
    timerFired(6000),
    [],
    fromClient(request, 7000),
    [flow("start", {}), send("server", request), timer(5000)],
  ]);
});

// ---- tunnels the client asks for ----------------------------------------------------------

Deno.test("Http1Layer relays raw bytes after a 2xx to the client's own CONNECT and records them", () => {
  const connect = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
  const established = "HTTP/1.1 200 Connection established\r\n\r\n";
  const commands = play(http1Layer({ server: { address: { hostname: "10.9.9.9", port: 3128 } } }), [
    fromClient(connect + "\x16\x03\x01hello", 1000),
    [flow("start", { request: { method: "CONNECT" } }), send("server", connect)],
    fromServer(established, 1001),
    [
      send("client", established),
      flow("end", { error: undefined, response: { status: 200 } }),
      flow("start", {
        id: "flow-2",
        type: "tcp",
        server: { address: { hostname: "10.9.9.9", port: 3128 }, hostname: "example.com" },
      }),
      send("server", "\x16\x03\x01hello"),
    ],
    fromServer("\x16\x03\x03server", 1002),
    [send("client", "\x16\x03\x03server")],
    eof("client", 1003),
    [shutdown("server")],
    eof("server", 1004),
    [
      shutdown("client"),
      flow("end", { id: "flow-2", bytesFromClient: 8, bytesFromServer: 9 }),
      close("client"),
      close("server"),
    ],
  ]);
  const tcp = commands.flatMap((c) => c.type === "flow" && c.flow.type === "tcp" ? [c.flow] : []).at(-1)!;
  assert.deepEqual(
    tcp.type === "tcp" && tcp.messages.map((m) => [m.fromClient, latin1(m.content)]),
    [[true, "\x16\x03\x01hello"], [false, "\x16\x03\x03server"]],
  );
});

Deno.test("Http1Layer relays raw bytes after a 101 to a protocol other than WebSocket", () => {
  const request = "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
  const switching = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
  play(http1Layer(), [
    fromClient(request, 1000),
    [flow("start", {}), send("server", request)],
    fromServer(switching + "\x00\x00\x00\x04", 1001),
    [
      send("client", switching),
      flow("end", { error: undefined, response: { status: 101 } }),
      flow("start", { id: "flow-2", type: "tcp" }),
      send("client", "\x00\x00\x00\x04"),
    ],
    // Not parsed as HTTP any more: a request line would have been a head.
    fromClient("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 1002),
    [send("server", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")],
  ]);
});

// ---- heads as they are forwarded ----------------------------------------------------------

Deno.test("Http1Layer drops Content-Length from a response that also has Transfer-Encoding", () => {
  const request = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
  play(http1Layer(), [
    fromClient(request, 1000),
    [flow("start", {}), send("server", request)],
    fromServer(
      "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n2\r\nok\r\n0\r\n\r\n",
      1001,
    ),
    [
      send("client", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"),
      flow("update", {}),
      send("client", "2\r\nok\r\n0\r\n\r\n"),
      flow("end", { error: undefined, response: { body: body("ok") } }),
    ],
  ]);
});

Deno.test("Http1Layer forwards heads with bare LF line endings as CRLF in transparent mode", () => {
  play(http1Layer(), [
    fromClient("\r\nGET /a HTTP/1.1\nHost: example.com\r\nX-B:  2\n\n", 1000),
    [flow("start", {}), send("server", "GET /a HTTP/1.1\r\nHost: example.com\r\nX-B: 2\r\n\r\n")],
    fromServer("HTTP/1.1 200 OK\nContent-Length: 0\n\n", 1001),
    [send("client", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), flow("update", {}), flow("end", {})],
  ]);
});

// ---- the URL names where the request really went -------------------------------------------

Deno.test("Http1Layer records the SNI in the URL when the Host header names another host", () => {
  const request = "GET /x HTTP/1.1\r\nHost: other.example:8443\r\n\r\n";
  play(
    http1Layer({
      scheme: "https",
      server: { address: { hostname: "10.1.1.1", port: 443 }, hostname: "api.example.com" },
      tls: { sni: "api.example.com", alpnOffered: [], passthrough: false },
    }),
    [
      fromClient(request, 1000),
      [
        flow("start", {
          server: { address: { hostname: "10.1.1.1", port: 443 }, hostname: "api.example.com" },
          request: {
            host: "api.example.com",
            url: "https://api.example.com/x",
            hostHeader: "other.example:8443",
            headers: [["Host", "other.example:8443"]],
          },
        }),
        send("server", request),
      ],
    ],
  );
});

Deno.test("Http1Layer records the dialed address when the Host header holds another address", () => {
  const request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  play(http1Layer(), [
    fromClient(request, 1000),
    [
      flow("start", {
        request: { host: SERVER.hostname, url: `http://${SERVER.hostname}/`, hostHeader: "127.0.0.1" },
      }),
      send("server", request),
    ],
  ]);
  // A name that agrees with the SNI, or a name against a bare address, is taken as it is.
  const agreeing = "GET / HTTP/1.1\r\nHost: API.example.com\r\n\r\n";
  play(
    http1Layer({
      scheme: "https",
      server: { address: { hostname: "10.1.1.1", port: 443 } },
      tls: { sni: "api.example.com", alpnOffered: [], passthrough: false },
    }),
    [
      fromClient(agreeing, 1000),
      [
        flow("start", { request: { url: "https://API.example.com/", hostHeader: undefined } }),
        send("server", agreeing),
      ],
    ],
  );
});

Deno.test("Http1Layer buffers a head or a pipelined request sent a byte at a time with linear copies", () => {
  const head = `GET / HTTP/1.1\r\nHost: example.com\r\nX-Pad: ${"p".repeat(60_000)}\r\n\r\n`;
  const layer = http1Layer({ limits: { maxHeadBytes: 64 * 1024, maxHeaders: 10 } });
  const wire = bytes(head);
  const { copied } = withCopyCount(4 * wire.length, () => {
    for (let i = 0; i < wire.length - 1; i++) {
      assert.deepEqual(layer.handle(fromClient(wire.subarray(i, i + 1), 1)), []);
    }
  });
  assert.ok(copied <= 4 * wire.length, `${copied} bytes copied for a ${wire.length}-byte head`);
  const started = layer.handle(fromClient(wire.subarray(wire.length - 1), 2));
  assert.deepEqual(started.map((c) => c.type), ["flow", "send"]);
  // Held while the response is pending: 512 KiB ahead, 64 bytes at a time.
  const ahead = new Uint8Array(64);
  const held = withCopyCount(4 * 512 * 1024, () => {
    for (let i = 0; i < 8192; i++) assert.deepEqual(layer.handle(fromClient(ahead, 3)), []);
  });
  assert.ok(held.copied <= 4 * 512 * 1024, `${held.copied} bytes copied to hold 512 KiB`);
});

Deno.test("Http1Layer names a stalled request body neutrally, before and after an early answer", () => {
  const head = "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\n";
  const before = "no request body byte went to 93.184.216.34:80 and no response came for 2 s";
  play(http1Layer({ serverTimeout: 2000 }), [
    fromClient(head + "01", 1000),
    [flow("start", {}), send("server", head), timer(2000), send("server", "01")],
    timerFired(3000),
    [
      log("info", /server timeout \(2 s\) hit/),
      close("server", true),
      send("client", errorResponse(504, "Gateway Timeout", before)),
      flow("end", { error: { message: before, timestamp: 3000 } }),
      close("client"),
    ],
  ]);
  const after = "no request body byte went to 93.184.216.34:80 for 2 s after it answered";
  const answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  play(http1Layer({ serverTimeout: 2000 }), [
    fromClient(head + "01", 1000),
    [flow("start", {}), send("server", head), timer(2000), send("server", "01")],
    fromServer(answer, 1500),
    [send("client", answer), flow("update", {})],
    timerFired(3000),
    [timer(500)],
    timerFired(3500),
    [
      log("info", /server timeout \(2 s\) hit/),
      close("server", true),
      flow("end", { error: { message: after, timestamp: 3500 }, response: { status: 200 } }),
      close("client"),
    ],
  ]);
});
