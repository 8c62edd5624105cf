import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import type { DnsFlow, Flow, HttpFlow, TcpFlow, UdpFlow } from "./flow.ts";
import { flowToHarEntry } from "./har.ts";
import { HarRecorder, HarSpool } from "./har_file.ts";
import { FlowLogWriter, flowToJson } from "./json_lines.ts";

const T0 = Date.UTC(2024, 4, 1, 12, 0, 0);
const utf8 = new TextEncoder();
const PNG_HEAD = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48]);

function record(content: Uint8Array, size = content.byteLength) {
  return { content, size, truncated: size > content.byteLength };
}

/** An HTTPS POST on a fresh connection: JSON in, gzip JSON out, cookies both ways. */
function postFlow(): HttpFlow {
  const requestBody = utf8.encode('{"name":"Zoë"}');
  const responseJson = utf8.encode('{"ok":true,"items":[1,2,3]}');
  const gz = new Uint8Array(gzipSync(responseJson));
  return {
    type: "http",
    id: "6b0e6f0a-1111-4000-8000-000000000001",
    client: {
      address: { hostname: "10.0.0.2", port: 51234 },
      mode: "wireguard",
      peer: { publicKey: "cGVlcjE=", endpoint: "198.51.100.7:51820" },
    },
    server: {
      address: { hostname: "api.example.com", port: 443 },
      hostname: "api.example.com",
      peerAddress: { hostname: "93.184.215.14", port: 443 },
      timestampConnected: T0 + 20,
      timestampTlsSetup: T0 + 45,
    },
    tls: {
      sni: "api.example.com",
      alpnOffered: ["h2", "http/1.1"],
      alpn: "http/1.1",
      clientVersion: "TLSv1.3",
      serverVersion: "TLSv1.3",
      serverCipher: "TLS_AES_128_GCM_SHA256",
      passthrough: false,
    },
    timestampStart: T0,
    timestampEnd: T0 + 120,
    request: {
      method: "POST",
      scheme: "https",
      host: "api.example.com",
      port: 443,
      path: "/v1/items?tag=a&tag=b%20c&empty=#frag",
      url: "https://api.example.com/v1/items?tag=a&tag=b%20c&empty=#frag",
      httpVersion: "HTTP/1.1",
      headers: [
        ["Host", "api.example.com"],
        ["Content-Type", "application/json"],
        ["Content-Length", String(requestBody.byteLength)],
        ["Cookie", "session=abc123; theme=dark"],
        ["cookie", "flag"],
      ],
      body: record(requestBody),
      timestampStart: T0,
      timestampEnd: T0 + 5,
    },
    response: {
      status: 201,
      reason: "Created",
      httpVersion: "HTTP/1.1",
      headers: [
        ["Content-Type", "application/json; charset=utf-8"],
        ["Content-Encoding", "gzip"],
        ["Content-Length", String(gz.byteLength)],
        ["Set-Cookie", "session=xyz; Path=/; Domain=example.com; HttpOnly; Secure; SameSite=Lax"],
        ["Set-Cookie", "short=1; Max-Age=60; Expires=Wed, 21 Oct 2015 07:28:00 GMT"],
        ["Location", "/v1/items/42"],
      ],
      body: record(gz),
      timestampStart: T0 + 100,
      timestampEnd: T0 + 120,
    },
  };
}

/** A GET on a reused connection whose binary response was cut at the body limit. */
function imageFlow(): HttpFlow {
  return {
    type: "http",
    id: "6b0e6f0a-1111-4000-8000-000000000002",
    client: { address: { hostname: "10.0.0.2", port: 51234 }, mode: "regular" },
    server: {
      address: { hostname: "img.example.com", port: 443 },
      peerAddress: { hostname: "2001:db8::7", port: 443 },
      timestampConnected: T0 - 5000,
      timestampTlsSetup: T0 - 4950,
    },
    timestampStart: T0 + 200,
    timestampEnd: T0 + 260,
    request: {
      method: "GET",
      scheme: "https",
      host: "img.example.com",
      port: 443,
      path: "/logo.png",
      url: "https://img.example.com/logo.png",
      httpVersion: "HTTP/2.0",
      headers: [[":method", "GET"], ["accept", "image/png"]],
      body: record(new Uint8Array(0)),
      timestampStart: T0 + 200,
      timestampEnd: T0 + 200,
    },
    response: {
      status: 200,
      reason: "",
      httpVersion: "HTTP/2.0",
      headers: [["content-type", "image/png"]],
      body: record(PNG_HEAD, 50_000),
      timestampStart: T0 + 230,
      timestampEnd: T0 + 260,
    },
  };
}

/** A request the server never answered. */
function failedFlow(): HttpFlow {
  return {
    type: "http",
    id: "6b0e6f0a-1111-4000-8000-000000000003",
    client: { address: { hostname: "127.0.0.1", port: 40001 }, mode: "regular" },
    server: { address: { hostname: "down.example", port: 80 } },
    timestampStart: T0 + 300,
    timestampEnd: T0 + 1300,
    error: { message: "connect to down.example:80 failed: connection refused", timestamp: T0 + 1300 },
    request: {
      method: "PUT",
      scheme: "http",
      host: "down.example",
      port: 80,
      path: "/upload",
      url: "http://down.example/upload",
      httpVersion: "HTTP/1.1",
      headers: [["Host", "down.example"], ["Content-Type", "application/octet-stream"]],
      body: record(new Uint8Array([0, 1, 2, 0xff]), 4),
      timestampStart: T0 + 300,
      timestampEnd: T0 + 310,
    },
  };
}

function websocketFlow(): HttpFlow {
  const flow = imageFlow();
  flow.id = "6b0e6f0a-1111-4000-8000-000000000004";
  flow.request.url = "wss://img.example.com/socket";
  flow.request.httpVersion = "HTTP/1.1";
  flow.request.path = "/socket";
  flow.request.headers = [["Host", "img.example.com"], ["Upgrade", "websocket"], ["Connection", "Upgrade"]];
  flow.response = {
    status: 101,
    reason: "Switching Protocols",
    httpVersion: "HTTP/1.1",
    headers: [["Upgrade", "websocket"], ["Connection", "Upgrade"]],
    body: record(new Uint8Array(0)),
    timestampStart: T0 + 210,
  };
  flow.websocket = {
    messages: [
      { fromClient: true, kind: "text", content: utf8.encode("hello"), size: 5, timestamp: T0 + 220 },
      { fromClient: false, kind: "binary", content: utf8.encode("AB"), size: 2, timestamp: T0 + 230 },
      {
        fromClient: false,
        kind: "text",
        content: utf8.encode("€").subarray(0, 2),
        size: 3,
        timestamp: T0 + 240,
      },
    ],
    messagesDropped: 4,
    closeCode: 1000,
    closeReason: "bye",
  };
  return flow;
}

function tcpFlow(): TcpFlow {
  return {
    type: "tcp",
    id: "6b0e6f0a-1111-4000-8000-000000000005",
    client: { address: { hostname: "10.0.0.2", port: 40000 }, mode: "wireguard" },
    server: { address: { hostname: "192.0.2.10", port: 5432 }, timestampConnected: T0 + 2 },
    timestampStart: T0,
    timestampEnd: T0 + 900,
    bytesFromClient: 8,
    bytesFromServer: 70000,
    messages: [
      {
        fromClient: true,
        kind: "data",
        content: new Uint8Array([0, 0, 0, 8, 4, 210, 22, 47]),
        size: 8,
        timestamp: T0 + 3,
      },
      { fromClient: false, kind: "data", content: utf8.encode("N"), size: 70000, timestamp: T0 + 4 },
    ],
    messagesDropped: 0,
  };
}

function udpFlow(): UdpFlow {
  return {
    type: "udp",
    id: "6b0e6f0a-1111-4000-8000-000000000006",
    client: { address: { hostname: "10.0.0.2", port: 40002 }, mode: "wireguard" },
    server: { address: { hostname: "192.0.2.123", port: 123 } },
    timestampStart: T0,
    error: { message: "no reply", timestamp: T0 + 5000 },
    bytesFromClient: 48,
    bytesFromServer: 0,
    messages: [{ fromClient: true, kind: "data", content: new Uint8Array(48), size: 48, timestamp: T0 }],
    messagesDropped: 0,
  };
}

function dnsFlow(): DnsFlow {
  const question = { name: "example.com", type: 1, typeName: "A", class: 1 };
  const flags = { aa: false, tc: false, rd: true, ra: true, ad: false, cd: false };
  return {
    type: "dns",
    id: "6b0e6f0a-1111-4000-8000-000000000007",
    client: { address: { hostname: "10.0.0.2", port: 5353 }, mode: "wireguard" },
    server: { address: { hostname: "10.0.0.53", port: 53 } },
    timestampStart: T0,
    timestampEnd: T0 + 3,
    request: {
      id: 4660,
      response: false,
      opcode: 0,
      rcode: 0,
      rcodeName: "NOERROR",
      flags: { ...flags, ra: false },
      questions: [question],
      answers: [],
      authorities: [],
      additionals: [],
    },
    response: {
      id: 4660,
      response: true,
      opcode: 0,
      rcode: 0,
      rcodeName: "NOERROR",
      flags,
      questions: [question],
      answers: [{ name: "example.com", type: 1, typeName: "A", class: 1, ttl: 300, data: "93.184.215.14" }],
      authorities: [],
      additionals: [],
    },
    resolver: { hostname: "2001:4860:4860::8888", port: 53 },
  };
}

// ---- a HAR 1.2 checker, after the spec's list of fields -------------------------------------

type Json = Record<string, unknown>;

function check(ok: boolean, path: string, what: string): void {
  if (!ok) throw new assert.AssertionError({ message: `${path}: ${what}` });
}

function obj(v: unknown, path: string): Json {
  check(typeof v === "object" && v !== null && !Array.isArray(v), path, "must be an object");
  return v as Json;
}

function arr(v: unknown, path: string): unknown[] {
  check(Array.isArray(v), path, "must be an array");
  return v as unknown[];
}

function field(o: Json, key: string, type: "string" | "number" | "boolean", path: string, optional = false) {
  const v = o[key];
  if (v === undefined && optional) return;
  const actual: string = typeof v;
  check(actual === type, `${path}.${key}`, `must be a ${type}, is ${JSON.stringify(v)}`);
  if (type === "number") check(Number.isFinite(v), `${path}.${key}`, "must be finite");
}

const ISO_8601 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

function nameValues(v: unknown, path: string): void {
  arr(v, path).forEach((item, i) => {
    const o = obj(item, `${path}[${i}]`);
    field(o, "name", "string", `${path}[${i}]`);
    field(o, "value", "string", `${path}[${i}]`);
  });
}

function cookies(v: unknown, path: string): void {
  arr(v, path).forEach((item, i) => {
    const p = `${path}[${i}]`;
    const o = obj(item, p);
    field(o, "name", "string", p);
    field(o, "value", "string", p);
    field(o, "path", "string", p, true);
    field(o, "domain", "string", p, true);
    field(o, "expires", "string", p, true);
    if (o.expires !== undefined) {
      check(ISO_8601.test(o.expires as string), `${p}.expires`, "must be ISO 8601");
    }
    field(o, "httpOnly", "boolean", p, true);
    field(o, "secure", "boolean", p, true);
  });
}

function validateHar(har: unknown): void {
  const log = obj(obj(har, "har").log, "log");
  field(log, "version", "string", "log");
  const creator = obj(log.creator, "log.creator");
  field(creator, "name", "string", "log.creator");
  field(creator, "version", "string", "log.creator");
  if (log.pages !== undefined) arr(log.pages, "log.pages");
  field(log, "comment", "string", "log", true);
  arr(log.entries, "log.entries").forEach((e, i) => validateEntry(e, `log.entries[${i}]`));
}

function validateEntry(e: unknown, path: string): void {
  const entry = obj(e, path);
  field(entry, "pageref", "string", path, true);
  field(entry, "startedDateTime", "string", path);
  check(ISO_8601.test(entry.startedDateTime as string), `${path}.startedDateTime`, "must be ISO 8601");
  field(entry, "time", "number", path);
  check((entry.time as number) >= 0, `${path}.time`, "must be ≥ 0");
  field(entry, "serverIPAddress", "string", path, true);
  field(entry, "connection", "string", path, true);

  const rp = `${path}.request`;
  const request = obj(entry.request, rp);
  for (const key of ["method", "url", "httpVersion"]) field(request, key, "string", rp);
  cookies(request.cookies, `${rp}.cookies`);
  nameValues(request.headers, `${rp}.headers`);
  nameValues(request.queryString, `${rp}.queryString`);
  field(request, "headersSize", "number", rp);
  field(request, "bodySize", "number", rp);
  if (request.postData !== undefined) {
    const post = obj(request.postData, `${rp}.postData`);
    field(post, "mimeType", "string", `${rp}.postData`);
    field(post, "text", "string", `${rp}.postData`, true);
    if (post.params !== undefined) arr(post.params, `${rp}.postData.params`);
  }

  const sp = `${path}.response`;
  const response = obj(entry.response, sp);
  field(response, "status", "number", sp);
  for (const key of ["statusText", "httpVersion", "redirectURL"]) field(response, key, "string", sp);
  cookies(response.cookies, `${sp}.cookies`);
  nameValues(response.headers, `${sp}.headers`);
  field(response, "headersSize", "number", sp);
  field(response, "bodySize", "number", sp);
  const cp = `${sp}.content`;
  const content = obj(response.content, cp);
  field(content, "size", "number", cp);
  field(content, "compression", "number", cp, true);
  field(content, "mimeType", "string", cp);
  field(content, "text", "string", cp, true);
  field(content, "encoding", "string", cp, true);
  field(content, "comment", "string", cp, true);

  const cache = obj(entry.cache, `${path}.cache`);
  for (const key of ["beforeRequest", "afterRequest"]) {
    if (cache[key] !== undefined && cache[key] !== null) obj(cache[key], `${path}.cache.${key}`);
  }

  const tp = `${path}.timings`;
  const timings = obj(entry.timings, tp);
  for (const key of ["send", "wait", "receive"]) {
    field(timings, key, "number", tp);
    check((timings[key] as number) >= 0, `${tp}.${key}`, "must be ≥ 0");
  }
  let sum = (timings.send as number) + (timings.wait as number) + (timings.receive as number);
  for (const key of ["blocked", "dns", "connect", "ssl"]) {
    field(timings, key, "number", tp, true);
    const v = timings[key] as number | undefined;
    if (v === undefined) continue;
    check(v === -1 || v >= 0, `${tp}.${key}`, "must be -1 or ≥ 0");
    if (key !== "ssl" && v >= 0) sum += v;
  }
  const ssl = timings.ssl as number | undefined;
  if (ssl !== undefined && ssl >= 0) {
    check((timings.connect as number) >= ssl, `${tp}.connect`, "must include ssl");
  }
  check(Math.abs(sum - (entry.time as number)) < 1e-6, `${path}.time`, `must be the sum of timings (${sum})`);
}

// ---- HAR entries ----------------------------------------------------------------------------

Deno.test("flowToHarEntry() fills the request: cookies, query string, text postData, head size", () => {
  const flow = postFlow();
  const entry = flowToHarEntry(flow);
  validateHar({ log: { version: "1.2", creator: { name: "t", version: "0" }, entries: [entry] } });
  assert.equal(entry.startedDateTime, "2024-05-01T12:00:00.000Z");
  assert.equal(entry.request.method, "POST");
  assert.equal(entry.request.url, flow.request.url);
  assert.equal(entry.request.httpVersion, "HTTP/1.1");
  assert.deepEqual(entry.request.cookies, [
    { name: "session", value: "abc123" },
    { name: "theme", value: "dark" },
    { name: "flag", value: "" },
  ]);
  assert.deepEqual(entry.request.headers[1], { name: "Content-Type", value: "application/json" });
  assert.equal(entry.request.headers.length, 5);
  assert.deepEqual(entry.request.queryString, [
    { name: "tag", value: "a" },
    { name: "tag", value: "b c" },
    { name: "empty", value: "" },
  ]);
  assert.deepEqual(entry.request.postData, { mimeType: "application/json", text: '{"name":"Zoë"}' });
  assert.equal(entry.request.bodySize, 15);
  const head = `POST ${flow.request.path} HTTP/1.1\r\n` +
    flow.request.headers.map(([n, v]) => `${n}: ${v}\r\n`).join("") + "\r\n";
  assert.equal(entry.request.headersSize, head.length);
});

Deno.test("flowToHarEntry() and flowToJson() carry an HTTP/2 flow: version, stream id, trailers", () => {
  const flow = postFlow();
  flow.streamId = 5;
  flow.request.httpVersion = "HTTP/2.0";
  flow.request.trailers = [["x-checksum", "1"]];
  flow.response!.httpVersion = "HTTP/2.0";
  flow.response!.reason = "";
  flow.response!.trailers = [["grpc-status", "0"]];
  const entry = flowToHarEntry(flow);
  validateHar({ log: { version: "1.2", creator: { name: "t", version: "0" }, entries: [entry] } });
  assert.equal(entry.request.httpVersion, "HTTP/2.0");
  assert.equal(entry.response.httpVersion, "HTTP/2.0");
  assert.equal(entry.request.headersSize, -1);
  assert.equal(entry.response.headersSize, -1);
  assert.equal(entry._streamId, 5);
  assert.deepEqual(entry.request._trailers, [{ name: "x-checksum", value: "1" }]);
  assert.deepEqual(entry.response._trailers, [{ name: "grpc-status", value: "0" }]);
  const json = JSON.parse(JSON.stringify(flowToJson(flow)));
  assert.equal(json.streamId, 5);
  assert.equal(json.request.httpVersion, "HTTP/2.0");
  assert.deepEqual(json.response._trailers, [{ name: "grpc-status", value: "0" }]);
});

Deno.test("flowToHarEntry() fills the response: decoded gzip content, Set-Cookie, redirect", () => {
  const flow = postFlow();
  const { response } = flowToHarEntry(flow);
  assert.equal(response.status, 201);
  assert.equal(response.statusText, "Created");
  assert.equal(response.redirectURL, "/v1/items/42");
  assert.deepEqual(response.content, {
    size: 27,
    compression: 27 - flow.response!.body.size,
    mimeType: "application/json; charset=utf-8",
    text: '{"ok":true,"items":[1,2,3]}',
  });
  assert.equal(response.bodySize, flow.response!.body.size);
  assert.deepEqual(response.cookies, [
    { name: "session", value: "xyz", path: "/", domain: "example.com", httpOnly: true, secure: true },
    // Max-Age counts from when the response arrived and wins over Expires.
    { name: "short", value: "1", expires: "2024-05-01T12:01:00.100Z" },
  ]);
});

Deno.test("flowToHarEntry() lays timings end to end with connect and ssl on a fresh connection", () => {
  const entry = flowToHarEntry(postFlow());
  // Request from 0 to 5, connected at 20, TLS done at 45, response from 100 to 120.
  assert.deepEqual(entry.timings, {
    blocked: -1,
    dns: -1,
    connect: 45,
    ssl: 25,
    send: 0,
    wait: 55,
    receive: 20,
  });
  assert.equal(entry.time, 120);
  assert.equal(entry.serverIPAddress, "93.184.215.14");
  assert.equal(entry.connection, "51234");
});

Deno.test("flowToHarEntry() carries wirescope's client, server and TLS details under _ names", () => {
  const entry = flowToHarEntry(postFlow());
  assert.equal(entry._id, "6b0e6f0a-1111-4000-8000-000000000001");
  assert.deepEqual(entry._client, {
    address: "10.0.0.2:51234",
    mode: "wireguard",
    peer: { publicKey: "cGVlcjE=", endpoint: "198.51.100.7:51820" },
  });
  assert.deepEqual(entry._server, {
    address: "api.example.com:443",
    hostname: "api.example.com",
    peerAddress: "93.184.215.14:443",
    timestampConnected: "2024-05-01T12:00:00.020Z",
    timestampTlsSetup: "2024-05-01T12:00:00.045Z",
  });
  assert.equal(entry._tls?.alpn, "http/1.1");
  assert.equal(entry._error, undefined);
});

Deno.test("flowToHarEntry() gives a truncated binary body as base64 and marks it", () => {
  const entry = flowToHarEntry(imageFlow());
  validateHar({ log: { version: "1.2", creator: { name: "t", version: "0" }, entries: [entry] } });
  assert.deepEqual(entry.response.content, {
    size: 50_000,
    mimeType: "image/png",
    text: btoa(String.fromCharCode(...PNG_HEAD)),
    encoding: "base64",
    _truncated: true,
  });
  assert.equal(entry.request.postData, undefined);
  assert.equal(entry.request.bodySize, 0);
  // HTTP/2 heads have no byte size worth giving.
  assert.equal(entry.request.headersSize, -1);
  assert.equal(entry.response.headersSize, -1);
  // A reused connection: no connect or ssl for this entry.
  assert.deepEqual(entry.timings, {
    blocked: -1,
    dns: -1,
    connect: -1,
    ssl: -1,
    send: 0,
    wait: 30,
    receive: 30,
  });
  assert.equal(entry.time, 60);
  assert.equal(entry.serverIPAddress, "2001:db8::7");
});

Deno.test("flowToHarEntry() keeps a truncated gzip body encoded and says so", () => {
  const flow = postFlow();
  const gz = flow.response!.body.content;
  flow.response!.body = { content: gz.slice(0, 10), size: gz.byteLength, truncated: true };
  const content = flowToHarEntry(flow).response.content;
  assert.equal(content.size, gz.byteLength);
  assert.equal(content.encoding, "base64");
  assert.equal(content._truncated, true);
  assert.match(content.comment ?? "", /gzip/);
});

Deno.test("flowToHarEntry() cuts a truncated UTF-8 text at a whole character", () => {
  const flow = postFlow();
  const text = utf8.encode("naïve €uro");
  flow.response!.headers = [["Content-Type", "text/plain"]];
  flow.response!.body = { content: text.slice(0, 9), size: text.byteLength, truncated: true };
  const content = flowToHarEntry(flow).response.content;
  assert.equal(content.text, "naïve ");
  assert.equal(content.encoding, undefined);
  assert.equal(content._truncated, true);
});

Deno.test("flowToHarEntry() gives a flow without response status 0 and _error", () => {
  const entry = flowToHarEntry(failedFlow());
  validateHar({ log: { version: "1.2", creator: { name: "t", version: "0" }, entries: [entry] } });
  assert.equal(entry.response.status, 0);
  assert.equal(entry.response.content.size, 0);
  assert.deepEqual(entry._error, {
    message: "connect to down.example:80 failed: connection refused",
    timestamp: "2024-05-01T12:00:01.300Z",
  });
  assert.deepEqual(entry.request.postData, {
    mimeType: "application/octet-stream",
    text: "AAEC/w==",
    _encoding: "base64",
  });
  assert.deepEqual(entry.timings, {
    blocked: -1,
    dns: -1,
    connect: -1,
    ssl: -1,
    send: 10,
    wait: 990,
    receive: 0,
  });
  assert.equal(entry.serverIPAddress, undefined);
});

Deno.test("flowToHarEntry() lists WebSocket messages, binary ones as base64", () => {
  const entry = flowToHarEntry(websocketFlow());
  validateHar({ log: { version: "1.2", creator: { name: "t", version: "0" }, entries: [entry] } });
  assert.deepEqual(entry._websocketMessages, [
    { kind: "text", fromClient: true, size: 5, time: "2024-05-01T12:00:00.220Z", content: "hello" },
    {
      kind: "binary",
      fromClient: false,
      size: 2,
      time: "2024-05-01T12:00:00.230Z",
      content: "QUI=",
      encoding: "base64",
    },
    {
      kind: "text",
      fromClient: false,
      size: 3,
      time: "2024-05-01T12:00:00.240Z",
      content: "",
      truncated: true,
    },
  ]);
  assert.equal(entry._websocketMessagesDropped, 4);
  assert.deepEqual(entry._websocketClose, { code: 1000, reason: "bye" });
  assert.equal(entry.response.status, 101);
  assert.equal(entry.response.bodySize, 0);
  assert.equal(entry.timings.receive, 0);
});

// ---- JSON lines -----------------------------------------------------------------------------

function allFlows(): Flow[] {
  return [postFlow(), imageFlow(), failedFlow(), websocketFlow(), tcpFlow(), udpFlow(), dnsFlow()];
}

Deno.test("flowToJson() gives plain JSON values for every kind of flow", () => {
  for (const flow of allFlows()) {
    const json = flowToJson(flow);
    // Deep equality after a round trip fails for Uint8Array, Date, undefined and the like.
    assert.deepEqual(JSON.parse(JSON.stringify(json)), json, flow.id);
    assert.equal(json.type, flow.type);
    assert.equal(json.id, flow.id);
    assert.equal(typeof json.timestampStart, "string");
    for (const key of ["client", "server", "tls", "error", "timestampEnd"]) {
      assert(key in json, `${flow.id} ${key}`);
    }
  }
});

Deno.test("flowToJson() names HTTP fields as HAR does and adds wirescope's", () => {
  const flow = postFlow();
  const json = flowToJson(flow);
  const entry = flowToHarEntry(flow);
  for (
    const key of ["startedDateTime", "time", "request", "response", "timings", "serverIPAddress"] as const
  ) {
    assert.deepEqual(json[key], entry[key], key);
  }
  assert.deepEqual(json.client, entry._client);
  assert.deepEqual(json.server, entry._server);
  assert.deepEqual(json.tls, flow.tls);
  assert.equal(json.error, null);
  assert.equal(json.websocket, null);

  const failed = flowToJson(failedFlow());
  assert.equal(failed.response, null);
  assert.deepEqual(failed.error, {
    message: "connect to down.example:80 failed: connection refused",
    timestamp: "2024-05-01T12:00:01.300Z",
  });
  const ws = flowToJson(websocketFlow()).websocket as Record<string, unknown>;
  assert.equal((ws.messages as unknown[]).length, 3);
  assert.equal(ws.messagesDropped, 4);
  assert.equal(ws.closeCode, 1000);
});

Deno.test("flowToJson() records TCP and UDP byte counts and messages", () => {
  const tcp = flowToJson(tcpFlow());
  assert.equal(tcp.bytesFromClient, 8);
  assert.equal(tcp.bytesFromServer, 70000);
  assert.deepEqual(tcp.messages, [
    {
      fromClient: true,
      kind: "data",
      size: 8,
      timestamp: "2024-05-01T12:00:00.003Z",
      content: "AAAACATSFi8=",
      encoding: "base64",
      truncated: false,
    },
    {
      fromClient: false,
      kind: "data",
      size: 70000,
      timestamp: "2024-05-01T12:00:00.004Z",
      content: "N",
      encoding: "text",
      truncated: true,
    },
  ]);
  assert.equal(tcp.timestampEnd, "2024-05-01T12:00:00.900Z");
  assert.equal((tcp.server as Record<string, unknown>).timestampConnected, "2024-05-01T12:00:00.002Z");
  const udp = flowToJson(udpFlow());
  assert.equal(udp.type, "udp");
  assert.equal(udp.timestampEnd, null);
  assert.deepEqual(udp.error, { message: "no reply", timestamp: "2024-05-01T12:00:05.000Z" });
});

Deno.test("flowToJson() records a DNS question, its answers, rcode and resolver", () => {
  const json = flowToJson(dnsFlow());
  assert.deepEqual(json.questions, [{ name: "example.com", type: 1, typeName: "A", class: 1 }]);
  assert.deepEqual(json.answers, [
    { name: "example.com", type: 1, typeName: "A", class: 1, ttl: 300, data: "93.184.215.14" },
  ]);
  assert.equal(json.rcode, "NOERROR");
  assert.equal(json.transactionId, 4660);
  assert.equal(json.resolver, "[2001:4860:4860::8888]:53");
  const unanswered = dnsFlow();
  delete unanswered.response;
  unanswered.error = { message: "timeout", timestamp: T0 + 2000 };
  const json2 = flowToJson(unanswered);
  assert.deepEqual(json2.answers, []);
  assert.equal(json2.rcode, null);
  assert.deepEqual(json2.error, { message: "timeout", timestamp: "2024-05-01T12:00:02.000Z" });
});

Deno.test("FlowLogWriter writes one JSON object per line and appends when reopened", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/flows.jsonl`;
    const flows = allFlows();
    const writer = await FlowLogWriter.open(path);
    for (const flow of flows.slice(0, 4)) writer.write(flow);
    // Written at once, not when closed.
    assert.equal((await Deno.readTextFile(path)).split("\n").length, 5);
    await writer.close();
    assert.throws(() => writer.write(flows[0]!), /closed/);

    const again = await FlowLogWriter.open(path);
    for (const flow of flows.slice(4)) again.write(flow);
    await again.close();

    const text = await Deno.readTextFile(path);
    assert(text.endsWith("\n"));
    const lines = text.slice(0, -1).split("\n");
    assert.equal(lines.length, flows.length);
    lines.forEach((line, i) => {
      const parsed = JSON.parse(line);
      assert.equal(parsed.id, flows[i]!.id);
      assert.deepEqual(parsed, flowToJson(flows[i]!));
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---- HAR files ------------------------------------------------------------------------------

const CREATOR = { name: "wirescope", version: "0.1.0" };

Deno.test("HarRecorder keeps HTTP flows only and builds a valid HAR 1.2 log in start order", () => {
  const recorder = new HarRecorder();
  for (const flow of allFlows().reverse()) recorder.add(flow);
  assert.equal(recorder.size, 4);
  const har = recorder.toHar(CREATOR);
  validateHar(har);
  assert.equal(har.log.version, "1.2");
  assert.deepEqual(har.log.creator, CREATOR);
  assert.deepEqual(har.log.pages, []);
  assert.equal(har.log.comment, undefined);
  // 4 and 2 start in the same millisecond and keep the order they were added in.
  assert.deepEqual(har.log.entries.map((e) => e._id.slice(-1)), ["1", "4", "2", "3"]);
});

Deno.test("HarRecorder drops the oldest flows past maxEntries and counts them", () => {
  const recorder = new HarRecorder({ maxEntries: 3 });
  for (let i = 0; i < 5; i++) {
    const flow = imageFlow();
    flow.id = `flow-${i}`;
    flow.request.timestampStart = T0 + i;
    recorder.add(flow);
  }
  assert.equal(recorder.size, 3);
  assert.equal(recorder.dropped, 2);
  const har = recorder.toHar(CREATOR);
  assert.deepEqual(har.log.entries.map((e) => e._id), ["flow-2", "flow-3", "flow-4"]);
  assert.match(har.log.comment ?? "", /^2 older flows/);
  assert.throws(() => new HarRecorder({ maxEntries: 0 }), RangeError);
});

Deno.test("HarRecorder.writeTo() writes the same HAR through a temporary file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/session.har`;
    await Deno.writeTextFile(path, "old contents");
    const recorder = new HarRecorder({ maxEntries: 3 });
    for (const flow of allFlows()) recorder.add(flow);
    await recorder.writeTo(path, CREATOR);
    const parsed = JSON.parse(await Deno.readTextFile(path));
    validateHar(parsed);
    assert.deepEqual(parsed, JSON.parse(JSON.stringify(recorder.toHar(CREATOR))));
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["session.har"]);

    const empty = new HarRecorder();
    await empty.writeTo(path, CREATOR);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(path)), {
      log: { version: "1.2", creator: CREATOR, pages: [], entries: [] },
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("HarSpool spools entries to disk as flows end and finishes a valid HAR", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/long.har`;
    const spool = await HarSpool.open(path);
    const flows = allFlows();
    for (const flow of flows) spool.add(flow);
    const http = flows.filter((f): f is HttpFlow => f.type === "http");
    assert.equal(spool.entries, http.length);
    // Each entry is on disk before the HAR is finished (a crash keeps them).
    const spooled = (await Deno.readTextFile(spool.spoolPath)).trim().split("\n");
    assert.equal(spooled.length, http.length);
    await spool.finish(CREATOR);
    const parsed = JSON.parse(await Deno.readTextFile(path));
    validateHar(parsed);
    assert.deepEqual(parsed.log.entries, http.map((f) => JSON.parse(JSON.stringify(flowToHarEntry(f)))));
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["long.har"]);

    const empty = await HarSpool.open(path);
    await empty.finish(CREATOR);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(path)), {
      log: { version: "1.2", creator: CREATOR, pages: [], entries: [] },
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("validateHar() in this file rejects what HAR 1.2 forbids", () => {
  const good = new HarRecorder();
  good.add(postFlow());
  const har = JSON.parse(JSON.stringify(good.toHar(CREATOR)));
  validateHar(har);
  const broken = structuredClone(har);
  delete broken.log.entries[0].response.content.mimeType;
  assert.throws(() => validateHar(broken), /content\.mimeType/);
  const negative = structuredClone(har);
  negative.log.entries[0].timings.wait = -1;
  assert.throws(() => validateHar(negative), /timings\.wait/);
  const noCache = structuredClone(har);
  delete noCache.log.entries[0].cache;
  assert.throws(() => validateHar(noCache), /cache/);
});
