import assert from "node:assert/strict";
import type { DnsFlow, HttpFlow, MessageRecord, TcpFlow, UdpFlow } from "../flows/flow.ts";
import type { DnsMessage } from "../proxy/dns_message.ts";
import { formatDuration, formatFlowLine, formatLogLine, formatSize, truncateMiddle } from "./flow_line.ts";

const T0 = Date.UTC(2024, 4, 1, 12, 0, 0);
const text = new TextEncoder();
// deno-lint-ignore no-control-regex
const ANSI_CODE = /\x1b\[[0-9;]*m/;

function body(content: string, size = content.length) {
  const bytes = text.encode(content);
  return { content: bytes, size, truncated: size > bytes.byteLength };
}

function httpFlow(overrides: Partial<HttpFlow> = {}): HttpFlow {
  return {
    type: "http",
    id: "3f1c2d4e-0000-4000-8000-000000000001",
    client: { address: { hostname: "10.0.0.2", port: 51234 }, mode: "regular" },
    server: { address: { hostname: "example.com", port: 443 } },
    timestampStart: T0,
    timestampEnd: T0 + 12,
    request: {
      method: "GET",
      scheme: "https",
      host: "example.com",
      port: 443,
      path: "/a?b=1",
      url: "https://example.com/a?b=1",
      httpVersion: "HTTP/1.1",
      headers: [["Host", "example.com"]],
      body: body(""),
      timestampStart: T0,
      timestampEnd: T0 + 1,
    },
    response: {
      status: 200,
      reason: "OK",
      httpVersion: "HTTP/1.1",
      headers: [["Content-Length", "1234"]],
      body: body("x".repeat(1234)),
      timestampStart: T0 + 10,
      timestampEnd: T0 + 12,
    },
    ...overrides,
  };
}

function streamFlow<T extends "tcp" | "udp">(type: T): TcpFlow | UdpFlow {
  const messages: MessageRecord[] = [
    { fromClient: true, kind: "data", content: text.encode("hi"), size: 2, timestamp: T0 + 1 },
  ];
  return {
    type,
    id: "3f1c2d4e-0000-4000-8000-000000000002",
    client: {
      address: { hostname: "10.0.0.2", port: 40000 },
      mode: "wireguard",
      peer: { publicKey: "cGVlcjE=", endpoint: "198.51.100.7:51820" },
    },
    server: { address: { hostname: "93.184.215.14", port: 443 } },
    tls: { sni: "example.com", alpnOffered: ["h2"], passthrough: false },
    timestampStart: T0,
    timestampEnd: T0 + 1200,
    bytesFromClient: 517,
    bytesFromServer: 4200,
    messages,
    messagesDropped: 0,
  };
}

function dnsMessage(response: boolean, answers: string[], rcode = 0, rcodeName = "NOERROR"): DnsMessage {
  return {
    id: 7,
    response,
    opcode: 0,
    rcode,
    rcodeName,
    flags: { aa: false, tc: false, rd: true, ra: response, ad: false, cd: false },
    questions: [{ name: "example.com", type: 1, typeName: "A", class: 1 }],
    answers: answers.map((data) => ({
      name: "example.com",
      type: 1,
      typeName: "A",
      class: 1,
      ttl: 60,
      data,
    })),
    authorities: [],
    additionals: [],
  };
}

function dnsFlow(overrides: Partial<DnsFlow> = {}): DnsFlow {
  return {
    type: "dns",
    id: "3f1c2d4e-0000-4000-8000-000000000003",
    client: { address: { hostname: "10.0.0.2", port: 5353 }, mode: "wireguard" },
    server: { address: { hostname: "10.0.0.53", port: 53 } },
    timestampStart: T0,
    timestampEnd: T0 + 3,
    request: dnsMessage(false, []),
    response: dnsMessage(true, ["1.2.3.4", "5.6.7.8"]),
    resolver: { hostname: "192.0.2.53", port: 53 },
    ...overrides,
  };
}

Deno.test("formatFlowLine() shows an HTTP exchange: client, method, URL, status, size, duration", () => {
  assert.equal(
    formatFlowLine(httpFlow()),
    "10.0.0.2:51234: GET https://example.com/a?b=1 << 200 OK 1.2k 12ms",
  );
});

Deno.test("formatFlowLine() shows HTTP/2.0 beside the URL (HTTP/1.x is not shown)", () => {
  const flow = httpFlow();
  flow.request.httpVersion = "HTTP/2.0";
  flow.response!.httpVersion = "HTTP/2.0";
  flow.response!.reason = "";
  flow.streamId = 3;
  assert.equal(
    formatFlowLine(flow),
    "10.0.0.2:51234: GET https://example.com/a?b=1 HTTP/2.0 << 200 1.2k 12ms",
  );
});

Deno.test("formatFlowLine() names a WireGuard peer from peerNames and falls back to the address", () => {
  const flow = streamFlow("tcp");
  const names = new Map([["cGVlcjE=", "peer 1"]]);
  assert.match(formatFlowLine(flow, { peerNames: names }), /^peer 1: TCP /);
  assert.match(formatFlowLine(flow, { peerNames: new Map() }), /^10\.0\.0\.2:40000: TCP /);
  assert.match(formatFlowLine(flow), /^10\.0\.0\.2:40000: TCP /);
});

Deno.test("formatFlowLine() shows an HTTP flow that failed before a response as an error", () => {
  const flow = httpFlow({ error: { message: "connection refused", timestamp: T0 + 30 } });
  delete flow.response;
  delete flow.timestampEnd;
  assert.equal(
    formatFlowLine(flow),
    "10.0.0.2:51234: GET https://example.com/a?b=1 30ms << ERROR: connection refused",
  );
});

Deno.test("formatFlowLine() keeps the response and adds the error when a body broke off", () => {
  const flow = httpFlow({ error: { message: "server closed mid-body", timestamp: T0 + 12 } });
  assert.equal(
    formatFlowLine(flow),
    "10.0.0.2:51234: GET https://example.com/a?b=1 << 200 OK 1.2k 12ms << ERROR: server closed mid-body",
  );
});

Deno.test("formatFlowLine() counts the messages of a WebSocket flow", () => {
  const message: MessageRecord = {
    fromClient: true,
    kind: "text",
    content: text.encode("hello"),
    size: 5,
    timestamp: T0 + 20,
  };
  const flow = httpFlow({
    timestampEnd: T0 + 2500,
    websocket: {
      messages: [message, { ...message, fromClient: false }],
      messagesDropped: 1,
      closeCode: 1000,
    },
  });
  flow.response = {
    status: 101,
    reason: "Switching Protocols",
    httpVersion: "HTTP/1.1",
    headers: [["Upgrade", "websocket"]],
    body: body(""),
    timestampStart: T0 + 10,
  };
  assert.equal(
    formatFlowLine(flow),
    "10.0.0.2:51234: GET https://example.com/a?b=1 << 101 Switching Protocols 0b 2.5s WebSocket 3 messages, closed 1000",
  );
});

Deno.test("formatFlowLine() shortens a long URL in the middle", () => {
  const url = "https://example.com/" + "a".repeat(200) + "?last=1";
  const flow = httpFlow();
  flow.request.url = url;
  const shown = formatFlowLine(flow).split(" ")[2]!;
  assert.equal(shown.length, 120);
  assert(shown.startsWith("https://example.com/aaa"), shown);
  assert(shown.endsWith("aaa?last=1"), shown);
  assert(shown.includes("…"));
});

Deno.test("formatFlowLine() escapes control characters from the wire", () => {
  const flow = httpFlow();
  flow.request.url = "https://example.com/\x1b[2J";
  flow.response!.reason = "OK\r\nX";
  const line = formatFlowLine(flow);
  assert(![...line].some((c) => c.charCodeAt(0) < 0x20), line);
  assert(line.includes("\\x1b[2J"), line);
  assert(line.includes("OK\\x0d\\x0aX"), line);
});

Deno.test("formatFlowLine() shows a TCP flow with SNI, bytes each way and duration", () => {
  assert.equal(
    formatFlowLine(streamFlow("tcp")),
    "10.0.0.2:40000: TCP 93.184.215.14:443 (example.com) ↑517b ↓4.1k 1.2s",
  );
});

Deno.test("formatFlowLine() shows a UDP flow and its error", () => {
  const flow = streamFlow("udp");
  delete flow.tls;
  flow.error = { message: "ICMP port unreachable", timestamp: T0 + 1200 };
  assert.equal(
    formatFlowLine(flow),
    "10.0.0.2:40000: UDP 93.184.215.14:443 ↑517b ↓4.1k 1.2s << ERROR: ICMP port unreachable",
  );
});

Deno.test("formatFlowLine() marks a passed-through TLS connection", () => {
  const flow = streamFlow("tcp");
  flow.tls!.passthrough = true;
  assert.match(formatFlowLine(flow), / \(example\.com, TLS passthrough\) /);
});

Deno.test("formatFlowLine() shows a DNS query with its answers, rcode and duration", () => {
  assert.equal(
    formatFlowLine(dnsFlow()),
    "10.0.0.2:5353: DNS A example.com → 1.2.3.4, 5.6.7.8 (NOERROR) 3ms",
  );
  const nx = dnsFlow({ response: dnsMessage(true, [], 3, "NXDOMAIN") });
  assert.equal(formatFlowLine(nx), "10.0.0.2:5353: DNS A example.com (NXDOMAIN) 3ms");
});

Deno.test("formatFlowLine() shows a DNS query without an answer as an error", () => {
  const flow = dnsFlow({ error: { message: "resolver timed out", timestamp: T0 + 5000 } });
  delete flow.response;
  assert.equal(
    formatFlowLine(flow),
    "10.0.0.2:5353: DNS A example.com 3ms << ERROR: resolver timed out",
  );
  delete flow.request;
  assert.match(formatFlowLine(flow), /: DNS \? 3ms << ERROR: /);
});

Deno.test("formatFlowLine() lists at most six DNS answers", () => {
  const many = ["1", "2", "3", "4", "5", "6", "7", "8"].map((n) => `192.0.2.${n}`);
  assert.match(formatFlowLine(dnsFlow({ response: dnsMessage(true, many) })), /192\.0\.2\.6, \+2 more \(/);
});

Deno.test("formatFlowLine() adds ANSI colors only when asked", () => {
  const flows = [httpFlow(), streamFlow("tcp"), dnsFlow()];
  for (const flow of flows) {
    assert.doesNotMatch(formatFlowLine(flow), ANSI_CODE);
    assert.match(formatFlowLine(flow, { color: true }), ANSI_CODE);
  }
  // 2xx green, 5xx red, errors red.
  assert(formatFlowLine(httpFlow(), { color: true }).includes("\x1b[32m200 OK\x1b[0m"));
  const failed = httpFlow();
  failed.response!.status = 503;
  failed.response!.reason = "Service Unavailable";
  assert(formatFlowLine(failed, { color: true }).includes("\x1b[31m503 Service Unavailable\x1b[0m"));
  const errored = httpFlow({ error: { message: "reset", timestamp: T0 } });
  assert(formatFlowLine(errored, { color: true }).includes("\x1b[31m\x1b[1m<< ERROR: reset\x1b[0m"));
  // Without color, the plain text is the same as the colored line minus its codes.
  // deno-lint-ignore no-control-regex
  const strip = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, "");
  for (const flow of flows) assert.equal(strip(formatFlowLine(flow, { color: true })), formatFlowLine(flow));
});

Deno.test("formatLogLine() prefixes the level and colors warnings and errors", () => {
  assert.equal(
    formatLogLine({ level: "info", message: "client connected" }, false),
    "info: client connected",
  );
  assert.equal(formatLogLine({ level: "error", message: "bad\nthing" }, false), "error: bad\\x0athing");
  assert.equal(formatLogLine({ level: "info", message: "plain" }, true), "info: plain");
  assert.equal(formatLogLine({ level: "warn", message: "w" }, true), "\x1b[33mwarn: w\x1b[0m");
  assert(formatLogLine({ level: "error", message: "e" }, true).startsWith("\x1b[31m"));
  assert.equal(formatLogLine({ level: "debug", message: "d" }, true), "\x1b[2mdebug: d\x1b[0m");
});

Deno.test("formatSize() writes sizes like mitmdump", () => {
  assert.equal(formatSize(0), "0b");
  assert.equal(formatSize(1023), "1023b");
  assert.equal(formatSize(1024), "1.0k");
  assert.equal(formatSize(1234), "1.2k");
  assert.equal(formatSize(150 * 1024), "150k");
  assert.equal(formatSize(100 * 1024 * 1024), "100m");
  assert.equal(formatSize(3.5 * 1024 ** 3), "3.5g");
});

Deno.test("formatDuration() writes ms below a second, then seconds, minutes, hours", () => {
  assert.equal(formatDuration(0), "0ms");
  assert.equal(formatDuration(12.4), "12ms");
  assert.equal(formatDuration(999), "999ms");
  assert.equal(formatDuration(1234), "1.2s");
  assert.equal(formatDuration(59_000), "59.0s");
  assert.equal(formatDuration(245_000), "4m05s");
  assert.equal(formatDuration(2 * 3600_000 + 7 * 60_000), "2h07m");
  assert.equal(formatDuration(-5), "0ms");
});

Deno.test("truncateMiddle() keeps short text and cuts long text to the limit", () => {
  assert.equal(truncateMiddle("abc", 5), "abc");
  assert.equal(truncateMiddle("abcdefghij", 5), "ab…ij");
});

Deno.test("formatFlowLine() shows a Host header that names another host than the URL", () => {
  const flow = httpFlow();
  flow.request.hostHeader = "other.example";
  assert.equal(
    formatFlowLine(flow),
    "10.0.0.2:51234: GET https://example.com/a?b=1 (Host: other.example) << 200 OK 1.2k 12ms",
  );
});
