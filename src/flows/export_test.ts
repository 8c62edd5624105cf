/**
 * Exports: the `curl` command of a flow, run by a real curl against a loopback origin that echoes
 * what it received, sends the recorded request again (method, headers, body byte for byte,
 * HTTP/2 when the flow was); `raw` output parses back with the proxy's own HTTP/1 parser; HAR
 * and JSON lines written by `exportFlows` read back with `openFlowFile`.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import * as http from "node:http";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import type { Flow, HttpFlow } from "./flow.ts";
import { exportFlows, flowToCurl, flowToRaw, shellQuote } from "./export.ts";
import { openFlowFile } from "./flow_file.ts";
import {
  BodyDecoder,
  type Headers1,
  parseRequestHead,
  parseResponseHead,
  requestFraming,
  responseFraming,
} from "../proxy/http1.ts";
import { sampleFlows } from "./testdata/flows.ts";

const enc = new TextEncoder();

function httpFlow(o: {
  method: string;
  url: string;
  headers: Headers1;
  body?: Uint8Array;
  version?: string;
  response?: { status: number; reason: string; headers: Headers1; body: Uint8Array };
}): HttpFlow {
  const u = new URL(o.url);
  const body = o.body ?? new Uint8Array(0);
  const port = Number(u.port || (u.protocol === "https:" ? 443 : 80));
  const flow: HttpFlow = {
    id: crypto.randomUUID(),
    type: "http",
    client: { address: { hostname: "10.0.0.2", port: 50000 }, mode: "regular" },
    server: { address: { hostname: u.hostname.replace(/^\[(.*)\]$/, "$1"), port } },
    timestampStart: 1_700_000_000_000,
    timestampEnd: 1_700_000_000_050,
    request: {
      method: o.method,
      scheme: u.protocol.slice(0, -1),
      host: u.hostname.replace(/^\[(.*)\]$/, "$1"),
      port,
      // As sent (URL would percent-encode some characters).
      path: o.url.replace(/^[a-z]+:\/\/[^/]+/, ""),
      url: o.url,
      httpVersion: o.version ?? "HTTP/1.1",
      headers: o.headers,
      body: { content: body, size: body.byteLength, truncated: false },
      timestampStart: 1_700_000_000_000,
    },
  };
  if (o.response) {
    flow.response = {
      status: o.response.status,
      reason: o.response.reason,
      httpVersion: o.version ?? "HTTP/1.1",
      headers: o.response.headers,
      body: { content: o.response.body, size: o.response.body.byteLength, truncated: false },
      timestampStart: 1_700_000_000_010,
    };
  }
  return flow;
}

interface Echo {
  method: string;
  url: string;
  version: string;
  headers: [string, string][];
  sha256: string;
  length: number;
}

/** Starts an origin on loopback that answers each request with what it received, as JSON. */
async function echoOrigin(kind: "h1" | "h2c") {
  const handler = (
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
  ) => {
    const parts: Uint8Array[] = [];
    req.on("data", (c: Uint8Array) => parts.push(c));
    req.on("end", () => {
      const body = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
      let at = 0;
      for (const p of parts) {
        body.set(p, at);
        at += p.byteLength;
      }
      const headers: [string, string][] = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        headers.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
      }
      const echo: Echo = {
        method: req.method!,
        url: req.url!,
        version: req.httpVersion,
        headers,
        sha256: createHash("sha256").update(body).digest("hex"),
        length: body.byteLength,
      };
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(echo));
    });
  };
  const server = kind === "h1" ? http.createServer(handler) : http2.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Runs a command line in sh; its stdout. */
async function sh(command: string): Promise<string> {
  const out = await new Deno.Command("sh", { args: ["-c", command], stdout: "piped", stderr: "piped" })
    .output();
  assert.equal(out.code, 0, `${command}\n${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function lower(headers: [string, string][]): [string, string][] {
  return headers.map(([n, v]) => [n.toLowerCase(), v]);
}

Deno.test("export: shellQuote makes one word of anything", async () => {
  const nasty = ["plain", "", "it's", '$HOME `id` $(id) \\ " ! * ?', "a\nb\tc", "--x", "-H"];
  const out = await sh(`for a in ${nasty.map(shellQuote).join(" ")}; do printf '[%s]' "$a"; done`);
  assert.equal(out, nasty.map((a) => `[${a}]`).join(""));
});

Deno.test("export: the curl command sends the recorded request again (real curl, loopback origin)", async () => {
  const origin = await echoOrigin("h1");
  try {
    const base = `http://127.0.0.1:${origin.port}`;
    const binary = new Uint8Array(4096).map((_, i) => (i * 151 + 7) & 255); // NULs and all
    const cases: { flow: HttpFlow; body: Uint8Array }[] = [];
    const add = (flow: HttpFlow) => cases.push({ flow, body: flow.request.body.content });
    add(httpFlow({
      method: "GET",
      url: `${base}/search?q=a%20b&x='y'`,
      headers: [
        ["Host", `127.0.0.1:${origin.port}`],
        ["User-Agent", 'Mozilla/5.0 (it\'s "quoted")'],
        ["Accept", "*/*"],
        ["X-Shell", "$HOME `id` $(id) \\n !"],
        ["X-Empty", ""],
        ["Connection", "keep-alive"],
        ["Proxy-Connection", "keep-alive"],
      ],
    }));
    add(httpFlow({
      method: "POST",
      url: `${base}/form`,
      headers: [["Host", `127.0.0.1:${origin.port}`], ["Content-Type", "application/json"], [
        "Content-Length",
        "999",
      ]],
      body: enc.encode(`{"name": "O'Brien", "note": "line 1\nline 2 $USER ü"}`),
    }));
    add(httpFlow({
      method: "PUT",
      url: `${base}/blob`,
      headers: [["Host", `127.0.0.1:${origin.port}`], ["Content-Type", "application/octet-stream"], [
        "Transfer-Encoding",
        "chunked",
      ]],
      body: binary,
    }));
    add(
      httpFlow({ method: "DELETE", url: `${base}/item/7`, headers: [["Host", `127.0.0.1:${origin.port}`]] }),
    );
    add(httpFlow({ method: "PATCH", url: `${base}/p`, headers: [["X-A", "1"], ["X-A", "2"]] }));
    for (const { flow, body } of cases) {
      const command = flowToCurl(flow);
      const echo = JSON.parse(await sh(command)) as Echo;
      assert.equal(echo.method, flow.request.method, command);
      assert.equal(echo.url, flow.request.path, command);
      assert.equal(echo.length, body.byteLength, command);
      assert.equal(echo.sha256, sha256(body), command);
      // Every recorded header but the hop-by-hop ones and the length arrives as it was, in order;
      // curl adds only the framing of the body it sends.
      const dropped = new Set(["connection", "proxy-connection", "transfer-encoding", "content-length"]);
      const expected = lower(flow.request.headers).filter(([n]) => !dropped.has(n));
      const got = lower(echo.headers).filter(([n]) => !dropped.has(n));
      if (!flow.request.headers.some(([n]) => n.toLowerCase() === "host")) {
        expected.unshift(["host", `127.0.0.1:${origin.port}`]);
      }
      assert.deepEqual(got, expected, command);
    }
  } finally {
    await origin.close();
  }
});

Deno.test("export: the curl command of an HTTP/2 flow speaks HTTP/2", async () => {
  const origin = await echoOrigin("h2c");
  try {
    const body = enc.encode("hello over h2");
    const flow = httpFlow({
      method: "POST",
      url: `http://127.0.0.1:${origin.port}/h2?x=1`,
      headers: [["content-type", "text/plain"], ["x-trace", "abc"]],
      body,
      version: "HTTP/2.0",
    });
    const command = flowToCurl(flow);
    assert.match(command, /--http2-prior-knowledge/);
    const echo = JSON.parse(await sh(command)) as Echo;
    assert.equal(echo.version, "2.0");
    assert.equal(echo.method, "POST");
    assert.equal(echo.url, "/h2?x=1");
    assert.equal(echo.sha256, sha256(body));
    assert.deepEqual(lower(echo.headers).filter(([n]) => n.startsWith("x-")), [["x-trace", "abc"]]);
    assert.match(flowToCurl({ ...flow, request: { ...flow.request, scheme: "https" } }), / --http2 /);
  } finally {
    await origin.close();
  }
});

Deno.test("export: a cut-short body is said so on a # line", () => {
  const flow = httpFlow({ method: "POST", url: "http://example.com/", headers: [], body: enc.encode("abc") });
  flow.request.body.size = 10;
  flow.request.body.truncated = true;
  assert.match(flowToCurl(flow), /^# the recorded request body was cut short: 3 of 10 bytes are sent\ncurl /);
});

/** Parses a request then a response from `bytes` with src/proxy/http1.ts; what they say. */
function parseRaw(bytes: Uint8Array) {
  const req = parseRequestHead(bytes)!;
  assert.ok(req, "a whole request head");
  let rest = bytes.subarray(req.size);
  const reqBody = new BodyDecoder(requestFraming(req.head));
  const r = reqBody.push(rest);
  assert.equal(reqBody.done, true, "a whole request body");
  rest = rest.subarray(r.used);
  const reqData = Buffer.concat(r.data);
  if (rest.byteLength === 0) return { req: req.head, reqData, reqTrailers: reqBody.trailers };
  const res = parseResponseHead(rest)!;
  assert.ok(res, "a whole response head");
  rest = rest.subarray(res.size);
  const resBody = new BodyDecoder(responseFraming(req.head.method, res.head));
  const s = resBody.push(rest);
  assert.equal(resBody.done, true, "a whole response body");
  assert.equal(rest.byteLength, s.used, "nothing after the response");
  return {
    req: req.head,
    reqData,
    reqTrailers: reqBody.trailers,
    res: res.head,
    resData: Buffer.concat(s.data),
    resTrailers: resBody.trailers,
  };
}

Deno.test("export: raw output parses back with the proxy's HTTP/1 parser (HTTP/1.1, chunked, HTTP/2, HEAD)", () => {
  const binary = new Uint8Array(1000).map((_, i) => (i * 31) & 255);
  // HTTP/1.1 with a Content-Length that the cut body no longer matches.
  const h1 = httpFlow({
    method: "POST",
    url: "http://example.com:8080/upload?a=1",
    headers: [["Host", "example.com:8080"], ["Content-Length", "5000"], ["Content-Type", "x/y"]],
    body: binary,
    response: { status: 201, reason: "Created", headers: [["Content-Length", "2"]], body: enc.encode("ok") },
  });
  let p = parseRaw(flowToRaw(h1));
  assert.equal(p.req.method, "POST");
  assert.equal(p.req.target, "/upload?a=1");
  assert.deepEqual(p.req.headers, [["Host", "example.com:8080"], ["Content-Length", "1000"], [
    "Content-Type",
    "x/y",
  ]]);
  assert.deepEqual(new Uint8Array(p.reqData), binary);
  assert.equal(p.res!.status, 201);
  assert.equal(p.res!.reason, "Created");
  assert.equal(p.resData!.toString(), "ok");

  // Chunked both ways, with trailers.
  const chunked = httpFlow({
    method: "PUT",
    url: "http://example.com/c",
    headers: [["Host", "example.com"], ["Transfer-Encoding", "chunked"]],
    body: enc.encode("chunk body"),
    response: {
      status: 200,
      reason: "OK",
      headers: [["Transfer-Encoding", "chunked"], ["Trailer", "X-Sum"]],
      body: enc.encode("answer"),
    },
  });
  chunked.response!.trailers = [["X-Sum", "42"]];
  p = parseRaw(flowToRaw(chunked));
  assert.equal(p.reqData.toString(), "chunk body");
  assert.equal(p.resData!.toString(), "answer");
  assert.deepEqual(p.resTrailers, [["X-Sum", "42"]]);

  // HTTP/2: no Host header, no reason phrase, no lengths.
  const h2 = httpFlow({
    method: "GET",
    url: "https://[2001:db8::1]:8443/x",
    headers: [["accept", "*/*"]],
    version: "HTTP/2.0",
    response: {
      status: 404,
      reason: "",
      headers: [["content-type", "text/plain"]],
      body: enc.encode("nope"),
    },
  });
  p = parseRaw(flowToRaw(h2));
  assert.equal(p.req.version, "HTTP/1.1");
  assert.deepEqual(p.req.headers, [["Host", "[2001:db8::1]:8443"], ["accept", "*/*"]]);
  assert.equal(p.res!.status, 404);
  assert.equal(p.res!.reason, "Not Found");
  assert.equal(p.resData!.toString(), "nope");

  // HEAD: the response's Content-Length describes the GET; nothing follows.
  const head = httpFlow({
    method: "HEAD",
    url: "http://example.com/",
    headers: [["Host", "example.com"]],
    response: { status: 200, reason: "OK", headers: [["Content-Length", "1234"]], body: new Uint8Array(0) },
  });
  p = parseRaw(flowToRaw(head));
  assert.deepEqual(p.res!.headers, [["Content-Length", "1234"]]);
  assert.equal(p.resData!.byteLength, 0);

  // Without a response: the request alone.
  const pending = httpFlow({ method: "GET", url: "http://example.com/", headers: [["Host", "example.com"]] });
  p = parseRaw(flowToRaw(pending));
  assert.equal(p.res, undefined);
});

Deno.test("export: HAR and JSON lines written by exportFlows read back; curl and raw skip other flows", async () => {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-export-" });
  try {
    const flows: Flow[] = Object.values(sampleFlows());
    const http = flows.filter((f) => f.type === "http");
    for (const format of ["har", "jsonl"] as const) {
      const path = `${dir}/out.${format}`;
      const file = await Deno.open(path, { write: true, create: true, truncate: true });
      const result = await exportFlows(flows, format, async (chunk) => {
        let done = 0;
        while (done < chunk.byteLength) done += await file.write(chunk.subarray(done));
      });
      file.close();
      const expected = format === "har" ? http : flows;
      assert.deepEqual(result, { written: expected.length, skipped: flows.length - expected.length });
      const back = await openFlowFile(path);
      assert.equal(back.format, format);
      const ids = [];
      for await (const f of back.flows()) ids.push(f.id);
      back.close();
      assert.deepEqual(ids.sort(), expected.map((f) => f.id).sort());
    }
    const chunks: Uint8Array[] = [];
    const curl = await exportFlows(flows, "curl", (c) => void chunks.push(c));
    assert.equal(curl.written, http.length);
    // A command per HTTP flow (a body may span lines inside its quotes).
    const text = new TextDecoder().decode(Buffer.concat(chunks));
    assert.equal(text.match(/(^|\| )curl /gm)?.length, http.length);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
