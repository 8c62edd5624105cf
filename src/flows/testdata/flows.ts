/**
 * Small realistic flows of every type for the filter and store tests, and a generator of many
 * synthetic ones (store tests, bench/store.ts).
 * @module
 */
import type { DnsMessage } from "../../proxy/dns_message.ts";
import type {
  ClientInfo,
  DnsFlow,
  Flow,
  HttpFlow,
  HttpResponseRecord,
  MessageRecord,
  TcpFlow,
  UdpFlow,
} from "../flow.ts";

const te = new TextEncoder();
/** Bytes of a string. */
export const bytes = (s: string): Uint8Array => te.encode(s);

const T0 = 1_764_000_000_000;

/** Alice's peer key (base64, with `+` and `/` as real keys have). */
export const ALICE_KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
/** Bob's peer key. */
export const BOB_KEY = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

function wgClient(address: string, port: number, key: string, name?: string): ClientInfo {
  const peer = name === undefined ? { publicKey: key } : { publicKey: key, name };
  return { address: { hostname: address, port }, mode: "wireguard", peer };
}

function response(
  status: number,
  reason: string,
  headers: [string, string][],
  body: string,
  t: number,
): HttpResponseRecord {
  const content = bytes(body);
  return {
    status,
    reason,
    httpVersion: "HTTP/1.1",
    headers: [...headers, ["Content-Length", String(content.byteLength)]],
    body: { content, size: content.byteLength, truncated: false },
    timestampStart: t,
    timestampEnd: t + 2,
  };
}

function http(options: {
  id: string;
  t: number;
  client: ClientInfo;
  method: string;
  scheme: string;
  host: string;
  port: number;
  path: string;
  headers: [string, string][];
  body?: string;
  hostHeader?: string;
  response?: HttpResponseRecord;
}): HttpFlow {
  const content = bytes(options.body ?? "");
  const defaultPort = options.scheme === "https" ? 443 : 80;
  const authority = options.port === defaultPort ? options.host : `${options.host}:${options.port}`;
  const flow: HttpFlow = {
    id: options.id,
    type: "http",
    client: options.client,
    server: {
      address: { hostname: options.host, port: options.port },
      hostname: options.host,
      peerAddress: { hostname: "93.184.216.34", port: options.port },
    },
    timestampStart: options.t,
    timestampEnd: options.t + 20,
    request: {
      method: options.method,
      scheme: options.scheme,
      host: options.host,
      port: options.port,
      path: options.path,
      url: `${options.scheme}://${authority}${options.path}`,
      httpVersion: "HTTP/1.1",
      headers: options.headers,
      body: { content, size: content.byteLength, truncated: false },
      timestampStart: options.t,
      timestampEnd: options.t + 1,
    },
  };
  if (options.hostHeader !== undefined) flow.request.hostHeader = options.hostHeader;
  if (options.response) flow.response = options.response;
  if (options.scheme === "https") {
    flow.tls = { sni: options.host, alpnOffered: ["h2", "http/1.1"], alpn: "http/1.1", passthrough: false };
  }
  return flow;
}

function message(fromClient: boolean, kind: MessageRecord["kind"], text: string, t: number): MessageRecord {
  const content = bytes(text);
  return { fromClient, kind, content, size: content.byteLength, timestamp: t };
}

function dnsMessage(name: string, response: boolean, answers: string[]): DnsMessage {
  return {
    id: 0x1234,
    response,
    opcode: 0,
    rcode: response && answers.length === 0 ? 3 : 0,
    rcodeName: response && answers.length === 0 ? "NXDOMAIN" : "NOERROR",
    flags: { aa: false, tc: false, rd: true, ra: response, ad: false, cd: false },
    questions: [{ name, type: 1, typeName: "A", class: 1 }],
    answers: answers.map((data) => ({ name, type: 1, typeName: "A", class: 1, ttl: 300, data })),
    authorities: [],
    additionals: [],
  };
}

/** The sample flows, by name. Each call builds fresh objects. */
export function sampleFlows(): Record<string, Flow> {
  const alice = wgClient("10.0.0.2", 51000, ALICE_KEY, "alice-laptop");
  const bob = wgClient("10.0.0.3", 40000, BOB_KEY);
  const regular: ClientInfo = { address: { hostname: "::1", port: 60000 }, mode: "regular" };

  const get = http({
    id: "00000000-0000-4000-8000-000000000001",
    t: T0,
    client: alice,
    method: "GET",
    scheme: "https",
    host: "example.com",
    port: 443,
    path: "/index.html?lang=en",
    headers: [["Host", "example.com"], ["User-Agent", "curl/8.5.0"], ["Accept", "*/*"]],
    response: response(
      200,
      "OK",
      [["Content-Type", "text/html; charset=utf-8"]],
      "<html>hello world</html>",
      T0 + 5,
    ),
  });
  const post = http({
    id: "00000000-0000-4000-8000-000000000002",
    t: T0 + 1000,
    client: bob,
    method: "POST",
    scheme: "https",
    host: "api.example.org",
    port: 8443,
    path: "/v1/login",
    headers: [["Host", "api.example.org:8443"], ["Content-Type", "application/json"], [
      "X-Trace-Id",
      "abc123",
    ]],
    body: '{"user":"bob","password":"hunter2"}',
    response: response(
      401,
      "Unauthorized",
      [["Content-Type", "application/json"], ["WWW-Authenticate", "Bearer"]],
      '{"error":"denied"}',
      T0 + 1010,
    ),
  });
  const pending = http({
    id: "00000000-0000-4000-8000-000000000003",
    t: T0 + 2000,
    client: regular,
    method: "GET",
    scheme: "http",
    host: "news.test",
    port: 80,
    path: "/feed.xml",
    headers: [["Host", "news.test"]],
  });
  pending.error = { message: "connection reset by server", timestamp: T0 + 2050 };
  const asset = http({
    id: "00000000-0000-4000-8000-000000000004",
    t: T0 + 3000,
    client: alice,
    method: "GET",
    scheme: "https",
    host: "cdn.example.net",
    port: 443,
    path: "/static/app.js",
    headers: [["Host", "static.example.net"]],
    hostHeader: "static.example.net",
    response: response(
      200,
      "OK",
      [["Content-Type", "application/javascript"]],
      "console.log('hi')",
      T0 + 3005,
    ),
  });
  const ws = http({
    id: "00000000-0000-4000-8000-000000000005",
    t: T0 + 4000,
    client: alice,
    method: "GET",
    scheme: "https",
    host: "chat.example.com",
    port: 443,
    path: "/socket",
    headers: [["Host", "chat.example.com"], ["Upgrade", "websocket"], ["Connection", "Upgrade"]],
    response: response(101, "Switching Protocols", [["Upgrade", "websocket"]], "", T0 + 4002),
  });
  ws.websocket = {
    messages: [
      message(true, "text", "hello from the client", T0 + 4010),
      message(false, "text", "welcome, stranger", T0 + 4011),
    ],
    messagesDropped: 0,
    closeCode: 1000,
  };
  const tcp: TcpFlow = {
    id: "00000000-0000-4000-8000-000000000006",
    type: "tcp",
    client: bob,
    server: { address: { hostname: "192.168.7.5", port: 5432 } },
    timestampStart: T0 + 5000,
    timestampEnd: T0 + 6000,
    bytesFromClient: 8,
    bytesFromServer: 2,
    messages: [message(true, "data", "SELECT 1", T0 + 5001), message(false, "data", "ok", T0 + 5002)],
    messagesDropped: 0,
  };
  const udp: UdpFlow = {
    id: "00000000-0000-4000-8000-000000000007",
    type: "udp",
    client: alice,
    server: { address: { hostname: "10.9.9.9", port: 4000 } },
    timestampStart: T0 + 6000,
    timestampEnd: T0 + 7000,
    bytesFromClient: 4,
    bytesFromServer: 4,
    messages: [message(true, "data", "ping", T0 + 6001), message(false, "data", "pong", T0 + 6002)],
    messagesDropped: 0,
  };
  const dns: DnsFlow = {
    id: "00000000-0000-4000-8000-000000000008",
    type: "dns",
    client: alice,
    server: { address: { hostname: "10.0.0.1", port: 53 } },
    timestampStart: T0 + 7000,
    timestampEnd: T0 + 7003,
    request: dnsMessage("example.com", false, []),
    response: dnsMessage("example.com", true, ["93.184.216.34"]),
    resolver: { hostname: "1.1.1.1", port: 53 },
  };
  const dnsPending: DnsFlow = {
    id: "00000000-0000-4000-8000-000000000009",
    type: "dns",
    client: bob,
    server: { address: { hostname: "10.0.0.1", port: 53 } },
    timestampStart: T0 + 8000,
    request: dnsMessage("nothing.invalid", false, []),
  };
  const binary = http({
    id: "00000000-0000-4000-8000-00000000000a",
    t: T0 + 9000,
    client: regular,
    method: "PUT",
    scheme: "http",
    host: "127.0.0.1",
    port: 8080,
    path: "/upload",
    headers: [["Host", "127.0.0.1:8080"], ["Content-Type", "application/octet-stream"]],
    response: response(204, "No Content", [], "", T0 + 9010),
  });
  const raw = new Uint8Array(256);
  for (let i = 0; i < raw.length; i++) raw[i] = 255 - i;
  binary.request.body = { content: raw, size: 10_000, truncated: true };
  return { get, post, pending, asset, ws, tcp, udp, dns, dnsPending, binary };
}

/** A small deterministic generator (xorshift32). */
export function seeded(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

const HOSTS = [
  "example.com",
  "api.example.com",
  "cdn.example.net",
  "static.test",
  "news.test",
  "shop.example.org",
];
const METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"];
const STATUSES = [200, 200, 200, 201, 204, 301, 304, 400, 401, 404, 500];

/**
 * Synthetic flow number `n` (deterministic in `n`): mostly HTTP, some TCP, UDP and DNS, with small
 * bodies (`bodySize` bytes of request body for POST/PUT) and a few hundred hosts.
 */
export function syntheticFlow(n: number, bodySize = 64): Flow {
  const r = seeded(n * 2654435761);
  const pick = <T>(a: T[]): T => a[Math.floor(r() * a.length)]!;
  const id = `${n.toString(16).padStart(8, "0")}-0000-4000-8000-${
    (n * 7919).toString(16).padStart(12, "0").slice(-12)
  }`;
  const t = T0 + n * 10;
  const client = wgClient(
    `10.0.${(n >> 8) & 255}.${n & 255}`,
    40000 + (n % 20000),
    n % 2 ? ALICE_KEY : BOB_KEY,
  );
  const kind = r();
  if (kind < 0.85) {
    const base = pick(HOSTS);
    const host = r() < 0.5 ? base : `h${Math.floor(r() * 300)}.${base}`;
    const method = pick(METHODS);
    const body = method === "POST" || method === "PUT" ? "x".repeat(bodySize) : "";
    const status = pick(STATUSES);
    const flow = http({
      id,
      t,
      client,
      method,
      scheme: "https",
      host,
      port: 443,
      path: `/item/${n}?q=${Math.floor(r() * 1000)}`,
      headers: [["Host", host], ["User-Agent", "synthetic/1.0"], ["X-Request", String(n)]],
      body,
      response: response(
        status,
        "Reason",
        [["Content-Type", r() < 0.3 ? "image/png" : "application/json"]],
        `{"n":${n}}`,
        t + 5,
      ),
    });
    return flow;
  }
  if (kind < 0.9) {
    return {
      id,
      type: "tcp",
      client,
      server: { address: { hostname: "192.168.7.5", port: 5432 } },
      timestampStart: t,
      timestampEnd: t + 100,
      bytesFromClient: 8,
      bytesFromServer: 2,
      messages: [message(true, "data", "SELECT 1", t + 1), message(false, "data", "ok", t + 2)],
      messagesDropped: 0,
    };
  }
  if (kind < 0.93) {
    return {
      id,
      type: "udp",
      client,
      server: { address: { hostname: "10.9.9.9", port: 4000 } },
      timestampStart: t,
      timestampEnd: t + 100,
      bytesFromClient: 4,
      bytesFromServer: 4,
      messages: [message(true, "data", "ping", t + 1), message(false, "data", "pong", t + 2)],
      messagesDropped: 0,
    };
  }
  const name = pick(HOSTS);
  return {
    id,
    type: "dns",
    client,
    server: { address: { hostname: "10.0.0.1", port: 53 } },
    timestampStart: t,
    timestampEnd: t + 3,
    request: dnsMessage(name, false, []),
    response: dnsMessage(name, true, ["93.184.216.34"]),
  };
}
