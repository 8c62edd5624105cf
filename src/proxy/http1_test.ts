import assert from "node:assert/strict";
import {
  BodyDecoder,
  type BodyFraming,
  DEFAULT_HEAD_LIMITS,
  headerValue,
  headerValues,
  Http1Error,
  mayHoldHead,
  parseRequestHead,
  parseResponseHead,
  requestFraming,
  type RequestHead,
  responseFraming,
  type ResponseHead,
  serializeRequestHead,
  serializeResponseHead,
} from "./http1.ts";
import { seededRandom } from "./_seeded_random.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const latin1 = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function assertHttpError(fn: () => unknown, status: number, message?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof Http1Error, `expected Http1Error, got ${e}`);
    assert.ok(e instanceof SyntaxError);
    assert.equal(e.status, status, e.message);
    if (message) assert.match(e.message, message);
    return true;
  });
}

function request(text: string): RequestHead {
  const parsed = parseRequestHead(latin1(text));
  assert.ok(parsed, "head is complete");
  return parsed.head;
}

function response(text: string): ResponseHead {
  const parsed = parseResponseHead(latin1(text));
  assert.ok(parsed, "head is complete");
  return parsed.head;
}

const TYPICAL_REQUEST = "POST /api/v1/items?id=7&x=%20 HTTP/1.1\r\n" +
  "Host: example.com:8443\r\n" +
  "user-agent: curl/8.5.0\r\n" +
  "Accept: */*\r\n" +
  "X-Custom-HEADER: Some Value; with=params\r\n" +
  "Cookie: a=1\r\n" +
  "cookie: b=2\r\n" +
  "Content-Length: 5\r\n" +
  "\r\n";

const TYPICAL_RESPONSE = "HTTP/1.1 200 OK\r\n" +
  "Date: Mon, 27 Jul 2009 12:28:53 GMT\r\n" +
  "set-cookie: a=1; Path=/\r\n" +
  "Set-Cookie: b=2; HttpOnly\r\n" +
  "Content-Type: text/html; charset=utf-8\r\n" +
  "Transfer-Encoding: chunked\r\n" +
  "\r\n";

Deno.test("parseRequestHead() keeps header case and order", () => {
  const parsed = parseRequestHead(enc(TYPICAL_REQUEST + "hello"));
  assert.ok(parsed);
  assert.equal(parsed.size, TYPICAL_REQUEST.length);
  assert.deepEqual(parsed.head, {
    method: "POST",
    target: "/api/v1/items?id=7&x=%20",
    version: "HTTP/1.1",
    headers: [
      ["Host", "example.com:8443"],
      ["user-agent", "curl/8.5.0"],
      ["Accept", "*/*"],
      ["X-Custom-HEADER", "Some Value; with=params"],
      ["Cookie", "a=1"],
      ["cookie", "b=2"],
      ["Content-Length", "5"],
    ],
  });
});

Deno.test("parseRequestHead() trims whitespace around values and keeps empty values", () => {
  const head = request("GET / HTTP/1.1\r\nA:x\r\nB: \t y z \t\r\nC:\r\nD: \r\n\r\n");
  assert.deepEqual(head.headers, [["A", "x"], ["B", "y z"], ["C", ""], ["D", ""]]);
});

Deno.test("serializeRequestHead() and serializeResponseHead() reproduce typical heads byte for byte", () => {
  const heads = [
    TYPICAL_REQUEST,
    "GET http://example.com/ HTTP/1.0\r\n\r\n",
    "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Connection: keep-alive\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
  ];
  for (const text of heads) {
    const wire = enc(text);
    const parsed = parseRequestHead(wire);
    assert.ok(parsed);
    assert.deepEqual(serializeRequestHead(parsed.head), wire, text);
  }
  for (const text of [TYPICAL_RESPONSE, "HTTP/1.0 404 Not Found\r\n\r\n", "HTTP/1.1 599 \r\nX: y\r\n\r\n"]) {
    const wire = enc(text);
    const parsed = parseResponseHead(wire);
    assert.ok(parsed);
    assert.deepEqual(serializeResponseHead(parsed.head), wire, text);
  }
});

Deno.test("parseRequestHead() keeps every latin1 byte of a value, including 0x80-0x9f", () => {
  const value = String.fromCharCode(...Array.from({ length: 0x80 }, (_, i) => 0x80 + i));
  const wire = latin1(`GET / HTTP/1.1\r\nX-Bytes: a${value}z\r\n\r\n`);
  const parsed = parseRequestHead(wire);
  assert.ok(parsed);
  assert.equal(headerValue(parsed.head.headers, "x-bytes"), `a${value}z`);
  assert.deepEqual(serializeRequestHead(parsed.head), wire);
});

Deno.test("parseRequestHead() returns null until the head is complete", () => {
  const wire = enc(TYPICAL_REQUEST);
  for (let i = 0; i < wire.length; i++) {
    assert.equal(parseRequestHead(wire.subarray(0, i)), null, `prefix of ${i} bytes`);
  }
  assert.equal(parseRequestHead(wire)?.size, wire.length);
  assert.equal(parseResponseHead(enc("HTTP/1.1 200 OK\r\nA: b\r\n\r")), null);
  assert.equal(parseResponseHead(enc("")), null);
});

Deno.test("parseRequestHead() skips empty lines before the request line and counts them in size", () => {
  const parsed = parseRequestHead(enc("\r\n\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\nnext"));
  assert.ok(parsed);
  assert.equal(parsed.head.method, "GET");
  assert.equal(parsed.size, 5 + 16 + 9 + 2);
  assert.equal(parseRequestHead(enc("\r\n\r\n")), null);
  assert.equal(parseRequestHead(enc("\r\n\r")), null);
  assertHttpError(() => parseRequestHead(enc("\r\rGET / HTTP/1.1\r\n\r\n")), 400, /bare CR/);
});

Deno.test("parseRequestHead() accepts bare LF line endings", () => {
  const head = "GET /x HTTP/1.1\nHost: a\nAccept: b\n\n";
  const parsed = parseRequestHead(enc(head + "rest"));
  assert.ok(parsed);
  assert.equal(parsed.size, head.length);
  assert.deepEqual(parsed.head.headers, [["Host", "a"], ["Accept", "b"]]);
  const mixed = "GET /x HTTP/1.1\r\nHost: a\n\r\n";
  assert.equal(parseRequestHead(enc(mixed + "rest"))?.size, mixed.length);
});

Deno.test("parseRequestHead() throws 431 over maxHeadBytes or maxHeaders", () => {
  const limits = { maxHeadBytes: 64, maxHeaders: 3 };
  const partial = enc("GET / HTTP/1.1\r\nX: " + "a".repeat(50));
  assert.equal(parseRequestHead(partial.subarray(0, 63), limits), null);
  assertHttpError(() => parseRequestHead(partial.subarray(0, 64), limits), 431);
  assertHttpError(
    () => parseRequestHead(enc("GET / HTTP/1.1\r\nX: " + "a".repeat(50) + "\r\n\r\n"), limits),
    431,
  );
  const exact = "GET / HTTP/1.1\r\nX: " + "a".repeat(64 - 23) + "\r\n\r\n";
  assert.equal(exact.length, 64);
  assert.equal(parseRequestHead(enc(exact), limits)?.size, 64);
  assert.ok(parseRequestHead(enc("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), limits));
  assertHttpError(
    () => parseRequestHead(enc("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n"), limits),
    431,
  );
  assertHttpError(() => parseRequestHead(new Uint8Array(DEFAULT_HEAD_LIMITS.maxHeadBytes).fill(0x41)), 431);
  assertHttpError(() => parseResponseHead(new Uint8Array(DEFAULT_HEAD_LIMITS.maxHeadBytes).fill(0x41)), 502);
});

Deno.test("parseRequestHead() rejects malformed field lines with 400", () => {
  const cases: [string, RegExp][] = [
    ["GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", /obsolete line folding/],
    ["GET / HTTP/1.1\r\nX: a\r\n\tfolded\r\n\r\n", /obsolete line folding/],
    ["GET / HTTP/1.1\r\n Host: a\r\n\r\n", /obsolete line folding/],
    ["GET / HTTP/1.1\r\nHost : a\r\n\r\n", /invalid header name/],
    ["GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", /invalid header name/],
    ["GET / HTTP/1.1\r\nX(y): a\r\n\r\n", /invalid header name/],
    ["GET / HTTP/1.1\r\n: a\r\n\r\n", /invalid header name/],
    ["GET / HTTP/1.1\r\nNoColon\r\n\r\n", /no colon/],
    ["GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", /NUL or bare CR/],
    ["GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", /bare CR/],
    ["GET / HTTP/1.1\r\nX: a\r\r\n\r\n", /bare CR/],
  ];
  for (const [text, message] of cases) {
    assertHttpError(() => parseRequestHead(latin1(text)), 400, message);
  }
});

Deno.test("parseRequestHead() rejects bad request lines with 400 and other versions with 505", () => {
  for (
    const line of [
      "GET /",
      "GET  / HTTP/1.1",
      "GET / HTTP/1.1 ",
      "GET / x HTTP/1.1",
      "G(T / HTTP/1.1",
      " GET / HTTP/1.1",
      "GET / http/1.1",
      "GET / HTTP/1",
      "GET / HTTP/1.10",
      "GET /\x7f HTTP/1.1",
    ]
  ) {
    assertHttpError(() => parseRequestHead(latin1(`${line}\r\nHost: a\r\n\r\n`)), 400);
  }
  for (const version of ["HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "HTTP/3.0"]) {
    assertHttpError(() => parseRequestHead(enc(`GET / ${version}\r\n\r\n`)), 505, new RegExp(version));
  }
});

Deno.test("parseResponseHead() reads the status line, allowing an empty reason", () => {
  assert.deepEqual(response("HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n"), {
    version: "HTTP/1.1",
    status: 204,
    reason: "No Content",
    headers: [["Server", "x"]],
  });
  assert.equal(response("HTTP/1.0 200 \r\n\r\n").reason, "");
  assert.equal(response("HTTP/1.1 200\r\n\r\n").reason, "");
  assert.equal(response("HTTP/1.1 500 Oops: it broke\tbadly\r\n\r\n").reason, "Oops: it broke\tbadly");
});

Deno.test("parseResponseHead() rejects malformed status lines and fields with 502", () => {
  for (
    const text of [
      "HTTP/1.1 20 OK\r\n\r\n",
      "HTTP/1.1 2000 OK\r\n\r\n",
      "HTTP/1.1 099 Low\r\n\r\n",
      "HTTP/1.1 abc OK\r\n\r\n",
      "HTTP/1.1  200 OK\r\n\r\n",
      "HTTP/2 200 OK\r\n\r\n",
      "HTTP/2.0 200 OK\r\n\r\n",
      "ICY 200 OK\r\n\r\n",
      "\r\nHTTP/1.1 200 OK\r\n\r\n",
      "HTTP/1.1 200 OK\x01\r\n\r\n",
      "HTTP/1.1 200 OK\r\n folded\r\n\r\n",
      "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    ]
  ) {
    assertHttpError(() => parseResponseHead(latin1(text)), 502);
  }
});

Deno.test("parseRequestHead() reads pipelined requests from one buffer", () => {
  const wire = enc(
    "GET /a HTTP/1.1\r\nHost: h\r\n\r\n" +
      "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz" +
      "PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nab\r\n0\r\nT: 1\r\n\r\n" +
      "DELETE /d HTTP/1.1\r\nHost: h\r\n\r\n",
  );
  const seen: string[] = [];
  let rest = wire;
  while (rest.length > 0) {
    const parsed = parseRequestHead(rest);
    assert.ok(parsed);
    rest = rest.subarray(parsed.size);
    const decoder = new BodyDecoder(requestFraming(parsed.head));
    const { used, data, done } = decoder.push(rest);
    assert.ok(done);
    rest = rest.subarray(used);
    seen.push(`${parsed.head.method} ${parsed.head.target} ${dec(concat(data))}`);
  }
  assert.deepEqual(seen, ["GET /a ", "POST /b xyz", "PUT /c ab", "DELETE /d "]);
});

Deno.test("headerValue() and headerValues() match names case-insensitively", () => {
  const headers = request(TYPICAL_REQUEST).headers;
  assert.equal(headerValue(headers, "HOST"), "example.com:8443");
  assert.equal(headerValue(headers, "cookie"), "a=1");
  assert.deepEqual(headerValues(headers, "COOKIE"), ["a=1", "b=2"]);
  assert.equal(headerValue(headers, "missing"), undefined);
  assert.deepEqual(headerValues(headers, "missing"), []);
});

Deno.test("requestFraming() reads Content-Length and chunked Transfer-Encoding", () => {
  const framing = (fields: string, version = "HTTP/1.1") =>
    requestFraming(request(`POST / ${version}\r\nHost: a\r\n${fields}\r\n`));
  assert.deepEqual(framing(""), { kind: "none" });
  assert.deepEqual(framing("Content-Length: 0\r\n"), { kind: "length", length: 0 });
  assert.deepEqual(framing("content-length: 42\r\n"), { kind: "length", length: 42 });
  assert.deepEqual(framing("Content-Length: 42\r\nContent-Length: 42\r\n"), { kind: "length", length: 42 });
  assert.deepEqual(framing("Content-Length: 42, 42\r\n"), { kind: "length", length: 42 });
  assert.deepEqual(framing("Content-Length: 9007199254740991\r\n"), {
    kind: "length",
    length: Number.MAX_SAFE_INTEGER,
  });
  assert.deepEqual(framing("Transfer-Encoding: chunked\r\n"), { kind: "chunked" });
  assert.deepEqual(framing("Transfer-Encoding: Chunked\r\n"), { kind: "chunked" });
  // Our choice: another coding before chunked is accepted; the decoded payload stays gzip.
  assert.deepEqual(framing("Transfer-Encoding: gzip, chunked\r\n"), { kind: "chunked" });
  assert.deepEqual(framing("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"), { kind: "chunked" });
  assert.deepEqual(framing("Content-Length: 3\r\n", "HTTP/1.0"), { kind: "length", length: 3 });
});

Deno.test("requestFraming() refuses smuggling risks with 400", () => {
  const cases: [string, RegExp][] = [
    ["Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", /both/],
    ["Transfer-Encoding: chunked\r\nContent-Length: 0\r\n", /both/],
    ["Content-Length: 5\r\nContent-Length: 6\r\n", /conflicting/],
    ["Content-Length: 5, 6\r\n", /conflicting/],
    ["Content-Length: 5,\r\n", /invalid Content-Length/],
    ["Content-Length: +5\r\n", /invalid Content-Length/],
    ["Content-Length: 0x5\r\n", /invalid Content-Length/],
    ["Content-Length: 5 5\r\n", /invalid Content-Length/],
    ["Content-Length: \r\n", /invalid Content-Length/],
    ["Content-Length: -1\r\n", /invalid Content-Length/],
    ["Content-Length: 9007199254740992\r\n", /invalid Content-Length/],
    ["Content-Length: 99999999999999999999999\r\n", /invalid Content-Length/],
    ["Transfer-Encoding: identity\r\n", /must end in a single chunked/],
    ["Transfer-Encoding: gzip\r\n", /must end in a single chunked/],
    ["Transfer-Encoding: chunked, gzip\r\n", /must end in a single chunked/],
    ["Transfer-Encoding: chunked, chunked\r\n", /must end in a single chunked/],
    ["Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", /must end in a single chunked/],
    ["Transfer-Encoding: xchunked\r\n", /must end in a single chunked/],
    ["Transfer-Encoding: chunked;x=1\r\n", /must end in a single chunked/],
    ["Transfer-Encoding: \r\n", /empty Transfer-Encoding/],
    ['Transfer-Encoding: chu"nked\r\n', /invalid transfer coding/],
  ];
  for (const [fields, message] of cases) {
    const head = request(`POST / HTTP/1.1\r\nHost: a\r\n${fields}\r\n`);
    assertHttpError(() => requestFraming(head), 400, message);
  }
  const old = request("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
  assertHttpError(() => requestFraming(old), 400, /HTTP\/1\.0/);
});

Deno.test("responseFraming() knows which responses have no body", () => {
  const chunked = "Transfer-Encoding: chunked\r\n";
  const cases: [string, string, BodyFraming][] = [
    ["HEAD", `HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n`, { kind: "none" }],
    ["GET", `HTTP/1.1 100 Continue\r\n\r\n`, { kind: "none" }],
    ["GET", `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n`, { kind: "none" }],
    ["GET", `HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n`, { kind: "none" }],
    ["GET", `HTTP/1.1 204 No Content\r\n${chunked}\r\n`, { kind: "none" }],
    ["GET", `HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n`, { kind: "none" }],
    ["CONNECT", `HTTP/1.1 200 Connection established\r\n\r\n`, { kind: "none" }],
    ["CONNECT", `HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 2\r\n\r\n`, {
      kind: "length",
      length: 2,
    }],
    ["GET", `HTTP/1.1 200 OK\r\n${chunked}\r\n`, { kind: "chunked" }],
    ["GET", `HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n`, { kind: "chunked" }],
    ["GET", `HTTP/1.1 200 OK\r\n${chunked}Content-Length: 10\r\n\r\n`, { kind: "chunked" }],
    ["GET", `HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n`, { kind: "close" }],
    ["GET", `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n`, { kind: "close" }],
    ["GET", `HTTP/1.0 200 OK\r\n${chunked}\r\n`, { kind: "close" }],
    ["GET", `HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 10\r\n\r\n`, {
      kind: "length",
      length: 10,
    }],
    ["POST", `HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n`, { kind: "length", length: 0 }],
    ["GET", `HTTP/1.1 200 OK\r\n\r\n`, { kind: "close" }],
    ["GET", `HTTP/1.0 200 OK\r\n\r\n`, { kind: "close" }],
  ];
  for (const [method, text, expected] of cases) {
    assert.deepEqual(responseFraming(method, response(text)), expected, `${method} ${text}`);
  }
});

Deno.test("responseFraming() throws 502 for conflicting or invalid Content-Length", () => {
  for (
    const fields of [
      "Content-Length: 1\r\nContent-Length: 2\r\n",
      "Content-Length: 1, 2\r\n",
      "Content-Length: x\r\n",
    ]
  ) {
    assertHttpError(() => responseFraming("GET", response(`HTTP/1.1 200 OK\r\n${fields}\r\n`)), 502);
  }
});

/** Feeds `pieces` to a decoder as a driver would: stops at `done`, checks `used`, gathers data. */
function feed(framing: BodyFraming, pieces: Uint8Array[]): { body: Uint8Array; used: number; done: boolean } {
  const decoder = new BodyDecoder(framing);
  const data: Uint8Array[] = [];
  let used = 0;
  for (const piece of pieces) {
    const r = decoder.push(piece);
    assert.ok(r.used >= 0 && r.used <= piece.length);
    assert.equal(r.done, decoder.done);
    data.push(...r.data);
    used += r.used;
    if (r.done) break;
    assert.equal(r.used, piece.length, "a body that is not done takes all it is given");
  }
  return { body: concat(data), used, done: decoder.done };
}

/** Splits `bytes` at the given cut points. */
function splitAt(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [0, ...cuts.toSorted((a, b) => a - b), bytes.length];
  return points.slice(1).map((end, i) => bytes.subarray(points[i], end));
}

const CHUNKED_BODY = '5;name=value;quoted="a;b"\r\nHello\r\n' +
  "1A\r\nabcdefghijklmnopqrstuvwxyz\r\n" +
  "00007 ; ext\r\n, world\r\n" +
  "0;last\r\nExpires: never\r\nX-Trailer: 1\r\n\r\n";
const CHUNKED_PAYLOAD = "Hello" + "abcdefghijklmnopqrstuvwxyz" + ", world";
const NEXT_MESSAGE = "GET /next HTTP/1.1\r\n\r\n";

Deno.test("BodyDecoder decodes chunks with extensions and trailers, stopping at the final CRLF", () => {
  const wire = enc(CHUNKED_BODY + NEXT_MESSAGE);
  const decoder = new BodyDecoder({ kind: "chunked" });
  const { used, data, done } = decoder.push(wire);
  assert.ok(done);
  assert.equal(used, CHUNKED_BODY.length);
  assert.equal(dec(concat(data)), CHUNKED_PAYLOAD);
  assert.deepEqual(decoder.trailers, [["Expires", "never"], ["X-Trailer", "1"]]);
  for (const piece of data) assert.equal(piece.buffer, wire.buffer, "pieces are views of the input");
  assert.deepEqual(decoder.push(enc("more")), { used: 0, data: [], done: true });
  decoder.end();
});

Deno.test("BodyDecoder gives the same result for input split at every byte boundary", () => {
  const wire = enc(CHUNKED_BODY + NEXT_MESSAGE);
  const check = (pieces: Uint8Array[], label: string) => {
    const r = feed({ kind: "chunked" }, pieces);
    assert.ok(r.done, label);
    assert.equal(r.used, CHUNKED_BODY.length, label);
    assert.equal(dec(r.body), CHUNKED_PAYLOAD, label);
  };
  check(Array.from(wire, (_, i) => wire.subarray(i, i + 1)), "one byte at a time");
  for (let i = 0; i <= wire.length; i++) check(splitAt(wire, [i]), `split at ${i}`);
  for (let i = 0; i <= wire.length; i++) {
    for (let j = i; j <= wire.length; j += 3) check(splitAt(wire, [i, j]), `split at ${i} and ${j}`);
  }
  const next = seededRandom(1);
  for (let round = 0; round < 300; round++) {
    const cuts = Array.from({ length: 1 + Math.floor(next() * 12) }, () => Math.floor(next() * wire.length));
    check(splitAt(wire, cuts), `cuts ${cuts}`);
  }
});

Deno.test("BodyDecoder handles length framing split anywhere and leaves the next message", () => {
  const body = "0123456789";
  const wire = enc(body + NEXT_MESSAGE);
  for (let i = 0; i <= wire.length; i++) {
    const r = feed({ kind: "length", length: 10 }, splitAt(wire, [i]));
    assert.deepEqual([r.done, r.used, dec(r.body)], [true, 10, body], `split at ${i}`);
  }
  const one = feed({ kind: "length", length: 10 }, Array.from(wire, (_, i) => wire.subarray(i, i + 1)));
  assert.deepEqual([one.done, one.used, dec(one.body)], [true, 10, body]);
  const decoder = new BodyDecoder({ kind: "length", length: 10 });
  const r = decoder.push(wire);
  assert.equal(r.data[0]!.buffer, wire.buffer, "pieces are views of the input");
});

Deno.test("BodyDecoder treats none and zero length as already done", () => {
  for (const framing of [{ kind: "none" }, { kind: "length", length: 0 }] as BodyFraming[]) {
    const decoder = new BodyDecoder(framing);
    assert.ok(decoder.done);
    assert.deepEqual(decoder.push(enc("GET")), { used: 0, data: [], done: true });
    decoder.end();
  }
});

Deno.test("BodyDecoder.end() completes a close-delimited body and refuses truncated ones", () => {
  const close = new BodyDecoder({ kind: "close" });
  assert.deepEqual(close.push(enc("abc")).used, 3);
  assert.equal(close.done, false);
  close.end();
  assert.equal(close.done, true);

  const length = new BodyDecoder({ kind: "length", length: 5 });
  length.push(enc("abc"));
  assertHttpError(() => length.end(), 400, /length body/);

  const chunked = new BodyDecoder({ kind: "chunked" });
  chunked.push(enc("3\r\nabc\r\n0\r\n"));
  assert.equal(chunked.done, false, "the empty line after the last chunk is still missing");
  assertHttpError(() => chunked.end(), 400, /chunked body/);
});

Deno.test("BodyDecoder rejects malformed chunked coding with 400", () => {
  const cases: [string, RegExp][] = [
    ["g\r\n", /invalid chunk size/],
    ["\r\n", /invalid chunk size/],
    [" 5\r\nhello\r\n", /invalid chunk size/],
    ["0x5\r\nhello\r\n", /invalid chunk size/],
    ["-5\r\n", /invalid chunk size/],
    ["5 \r\nhello\r\n", /invalid chunk size/],
    ["5\nhello\r\n", /CRLF/],
    ["5\r\nhello\n0\r\n\r\n", /CRLF/],
    ["5\r\nhelloX\r\n", /CRLF/],
    ["5\r\nhello\rX", /CRLF/],
    ["5\r\x00\r\n", /bare CR/],
    ["5;a\x01b\r\nhello\r\n", /control character/],
    ["20000000000000\r\n", /too large/],
    ["10000000000000000000\r\n", /too large/],
    [`${"1".repeat(5000)}\r\n`, /longer than 4096/],
    [`1;${"x".repeat(5000)}`, /longer than 4096/],
    ["0\r\nBad Trailer: x\r\n\r\n", /invalid header name/],
    ["0\r\n folded\r\n\r\n", /obsolete line folding/],
    ["0\r\nX: y\n\r\n", /CRLF/],
    [`0\r\n${"X: y\r\n".repeat(20000)}`, /trailers longer/],
  ];
  for (const [text, message] of cases) {
    assertHttpError(() => new BodyDecoder({ kind: "chunked" }).push(latin1(text)), 400, message);
  }
  // The largest safe size is accepted (its data simply never arrives here).
  assert.equal(new BodyDecoder({ kind: "chunked" }).push(enc("1fffffffffffff\r\nab")).used, 18);
  assert.equal(new BodyDecoder({ kind: "chunked" }).push(enc("00000000000000000001\r\na\r\n")).used, 25);
});

Deno.test("serializeRequestHead() refuses parts that would break the framing", () => {
  const base: RequestHead = { method: "GET", target: "/", version: "HTTP/1.1", headers: [] };
  const bad: RequestHead[] = [
    { ...base, method: "GET /x" },
    { ...base, target: "/ HTTP/1.1\r\nX: y" },
    { ...base, target: "" },
    { ...base, version: "HTTP/1.1\r\n" },
    { ...base, headers: [["X", "a\r\nInjected: 1"]] },
    { ...base, headers: [["X: y", "a"]] },
    { ...base, headers: [["X", "\u20ac"]] },
  ];
  for (const head of bad) assert.throws(() => serializeRequestHead(head), TypeError, JSON.stringify(head));
  const res: ResponseHead = { version: "HTTP/1.1", status: 200, reason: "OK\r\nX: y", headers: [] };
  assert.throws(() => serializeResponseHead(res), TypeError);
  assert.throws(() => serializeResponseHead({ ...res, reason: "OK", status: 42 }), TypeError);
});

Deno.test("mayHoldHead() finds an empty line at or just before where the last check stopped", () => {
  const enc = (t: string) => new TextEncoder().encode(t);
  const limits = { maxHeadBytes: 100, maxHeaders: 10 };
  assert.equal(mayHoldHead(enc("GET / HTTP/1.1\r\nHost: a\r\n"), 0, limits), false);
  assert.equal(mayHoldHead(enc("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 0, limits), true);
  assert.equal(mayHoldHead(enc("GET / HTTP/1.1\nHost: a\n\n"), 0, limits), true);
  // The empty line began before `from`: LF CR | LF, and LF | LF.
  const crlf = enc("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  assert.equal(mayHoldHead(crlf, crlf.length - 1, limits), true);
  const lf = enc("GET / HTTP/1.1\nHost: a\n\n");
  assert.equal(mayHoldHead(lf, lf.length - 1, limits), true);
  // At the limit, or with a CR that cannot start an empty line, the parser decides.
  assert.equal(mayHoldHead(new Uint8Array(100).fill(0x61), 99, limits), true);
  assert.equal(mayHoldHead(enc("\rGET"), 0, limits), true);
  assert.equal(mayHoldHead(enc("\r"), 0, limits), false);
});

Deno.test("BodyDecoder reads plain size lines in any case, with leading zeros, split anywhere", () => {
  const wire = new TextEncoder().encode(
    "000A\r\n0123456789\r\na\r\nabcdefghij\r\nF\r\n" + "z".repeat(15) + "\r\n0\r\n\r\n",
  );
  for (const step of [wire.length, 7, 1]) {
    const decoder = new BodyDecoder({ kind: "chunked" });
    const pieces: Uint8Array[] = [];
    for (let off = 0; off < wire.length; off += step) {
      pieces.push(...decoder.push(wire.subarray(off, off + step)).data);
    }
    assert.equal(decoder.done, true);
    assert.equal(new TextDecoder().decode(concat(pieces)), "0123456789abcdefghij" + "z".repeat(15));
  }
  // Thirteen digits still fit; fourteen go the long way and are refused as too large.
  const big = new BodyDecoder({ kind: "chunked" });
  big.push(new TextEncoder().encode("0000000000001\r\nx\r\n"));
  assert.throws(() => big.push(new TextEncoder().encode("20000000000000\r\n")), /too large/);
});
