/**
 * Flows as the web UI's API sends them: a small summary for the list (no bodies, no headers) and
 * the whole flow for the detail view, with bodies as text when short and readable and as URLs
 * otherwise; and the decoding of a body's `Content-Encoding` for `?decode=1`.
 * @module
 */
import { brotliDecompressSync, gunzipSync, inflateRawSync, inflateSync } from "node:zlib";
import * as zlib from "node:zlib";
import { type BodyRecord, type Flow, formatHostPort, type MessageRecord } from "../flows/flow.ts";
import type { BodyJson, FlowDetailJson, FlowSummary, MessageJson } from "./api_types.ts";

/** Bodies at most this long come inline as text in the detail JSON. */
const INLINE_TEXT = 256 * 1024;
/** Message contents sent with the detail, at most, each. */
const MESSAGE_PREVIEW = 4096;
/** Messages sent with the detail, at most. */
const MAX_MESSAGES = 1000;

function header(headers: [string, string][], name: string): string {
  const lower = name.toLowerCase();
  for (const [n, v] of headers) if (n.toLowerCase() === lower) return v;
  return "";
}

function typeOf(flow: Flow): string {
  switch (flow.type) {
    case "http":
      if (flow.websocket) return "WebSocket";
      return flow.request.httpVersion === "HTTP/2.0" ? "HTTP/2" : "HTTP/1";
    case "tcp":
      return "TCP";
    case "udp":
      return "UDP";
    case "dns":
      return "DNS";
  }
}

/** The list's view of a flow. */
export function flowSummary(flow: Flow, extra: { cursor?: string; marked?: boolean; live?: boolean } = {}) {
  const s: FlowSummary = {
    id: flow.id,
    ts: flow.timestampStart,
    client: formatHostPort(flow.client.address),
    type: typeOf(flow),
    method: "",
    host: flow.server.hostname ?? flow.server.address.hostname,
    path: "",
    status: 0,
    requestSize: 0,
    responseSize: 0,
  };
  if (extra.cursor !== undefined) s.cursor = extra.cursor;
  if (extra.marked) s.marked = true;
  if (extra.live) s.live = true;
  if (flow.timestampEnd !== undefined) s.duration = flow.timestampEnd - flow.timestampStart;
  if (flow.client.peer) s.peer = flow.client.peer.publicKey;
  if (flow.error) s.error = flow.error.message;
  switch (flow.type) {
    case "http": {
      s.method = flow.request.method;
      s.host = flow.request.host;
      s.path = flow.request.path;
      s.requestSize = flow.request.body.size;
      if (flow.response) {
        s.status = flow.response.status;
        s.responseSize = flow.response.body.size;
        const ct = header(flow.response.headers, "content-type").split(";")[0]!.trim();
        if (ct) s.contentType = ct;
      }
      break;
    }
    case "tcp":
    case "udp":
      s.requestSize = flow.bytesFromClient;
      s.responseSize = flow.bytesFromServer;
      s.path = `:${flow.server.address.port}`;
      break;
    case "dns": {
      const q = flow.request?.questions[0];
      s.method = q?.typeName ?? "";
      s.path = q?.name ?? "";
      s.host = flow.resolver ? formatHostPort(flow.resolver) : s.host;
      if (flow.response) s.status = flow.response.rcode;
      break;
    }
  }
  return s;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function asText(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

function bodyJson(body: BodyRecord, headers: [string, string][], url: string): BodyJson {
  const json: BodyJson = {
    size: body.size,
    truncated: body.truncated,
    contentType: header(headers, "content-type"),
    contentEncoding: header(headers, "content-encoding"),
    url,
  };
  const encoded = json.contentEncoding !== "" && json.contentEncoding.toLowerCase() !== "identity";
  if (!encoded && body.content.byteLength <= INLINE_TEXT) {
    const text = asText(body.content);
    if (text !== undefined) json.text = text;
  }
  return json;
}

function messageJson(m: MessageRecord): MessageJson {
  const preview = m.content.subarray(0, MESSAGE_PREVIEW);
  const out: MessageJson = { fromClient: m.fromClient, kind: m.kind, size: m.size, ts: m.timestamp };
  const text = asText(preview);
  if (text !== undefined) out.text = text;
  else out.base64 = btoa(String.fromCharCode(...preview));
  return out;
}

/** The detail view of a flow; body URLs are under `base` (e.g. `/api/flows/<id>`). */
export function flowDetail(
  flow: Flow,
  extra: { comment?: string; marked?: boolean; live?: boolean; cursor?: string } = {},
): FlowDetailJson {
  const base = `/api/flows/${encodeURIComponent(flow.id)}`;
  const detail: FlowDetailJson = {
    summary: flowSummary(flow, extra),
    comment: extra.comment ?? "",
    connection: {
      client: formatHostPort(flow.client.address),
      mode: flow.client.mode,
      server: formatHostPort(flow.server.address),
    },
    timing: { start: flow.timestampStart },
  };
  const c = detail.connection;
  if (flow.client.peer) {
    c.peer = flow.client.peer.publicKey;
    if (flow.client.peer.endpoint) c.peerEndpoint = flow.client.peer.endpoint;
  }
  if (flow.server.hostname) c.serverHostname = flow.server.hostname;
  if (flow.server.peerAddress) c.serverPeerAddress = formatHostPort(flow.server.peerAddress);
  if (flow.tls) {
    const t = flow.tls;
    c.tls = { alpnOffered: t.alpnOffered, passthrough: t.passthrough };
    if (t.sni) c.tls.sni = t.sni;
    if (t.alpn) c.tls.alpn = t.alpn;
    if (t.clientVersion) c.tls.clientVersion = t.clientVersion;
    if (t.serverVersion) c.tls.serverVersion = t.serverVersion;
    if (t.serverCipher) c.tls.serverCipher = t.serverCipher;
    if (t.passthroughReason) c.tls.passthroughReason = t.passthroughReason;
    if (t.serverCertificate) {
      const { subject, issuer, dnsNames, ipAddresses, validFrom, validTo, fingerprintSha256 } =
        t.serverCertificate;
      c.tls.serverCertificate = {
        subject,
        issuer,
        dnsNames,
        ipAddresses,
        validFrom,
        validTo,
        fingerprintSha256,
      };
    }
  }
  const timing = detail.timing;
  if (flow.server.timestampConnected) timing.serverConnected = flow.server.timestampConnected;
  if (flow.server.timestampTlsSetup) timing.tlsSetup = flow.server.timestampTlsSetup;
  if (flow.timestampEnd !== undefined) timing.end = flow.timestampEnd;
  if (flow.error) detail.error = flow.error.message;
  switch (flow.type) {
    case "http": {
      const q = flow.request;
      timing.requestStart = q.timestampStart;
      if (q.timestampEnd !== undefined) timing.requestEnd = q.timestampEnd;
      detail.request = {
        method: q.method,
        url: q.url,
        httpVersion: q.httpVersion,
        headers: q.headers,
        body: bodyJson(q.body, q.headers, `${base}/request/body`),
      };
      const r = flow.response;
      if (r) {
        timing.responseStart = r.timestampStart;
        if (r.timestampEnd !== undefined) timing.responseEnd = r.timestampEnd;
        detail.response = {
          status: r.status,
          reason: r.reason,
          httpVersion: r.httpVersion,
          headers: r.headers,
          body: bodyJson(r.body, r.headers, `${base}/response/body`),
        };
      }
      if (flow.websocket) detail.messages = flow.websocket.messages.slice(0, MAX_MESSAGES).map(messageJson);
      break;
    }
    case "tcp":
    case "udp":
      detail.messages = flow.messages.slice(0, MAX_MESSAGES).map(messageJson);
      break;
    case "dns": {
      const q = flow.request?.questions[0];
      detail.dns = {
        question: q ? `${q.name} ${q.typeName}` : "",
        answers: (flow.response?.answers ?? []).map((a) => `${a.name} ${a.ttl} ${a.typeName} ${a.data}`),
      };
      break;
    }
  }
  return detail;
}

/** The stored bytes and headers of a flow's request or response body, if it has one. */
export function bodyOf(
  flow: Flow,
  side: "request" | "response",
): { body: BodyRecord; headers: [string, string][] } | undefined {
  if (flow.type !== "http") return undefined;
  const part = side === "request" ? flow.request : flow.response;
  return part ? { body: part.body, headers: part.headers } : undefined;
}

/**
 * Undoes a `Content-Encoding` (gzip, x-gzip, deflate, br, zstd; several in order). Throws when an
 * encoding is unknown or the bytes do not decode (a body cut by the store's limit may not).
 */
export function decodeContent(bytes: Uint8Array, encoding: string): Uint8Array {
  let out: Uint8Array = bytes;
  const codings = encoding.split(",").map((c) => c.trim().toLowerCase()).filter((c) => c && c !== "identity");
  for (const coding of codings.reverse()) {
    switch (coding) {
      case "gzip":
      case "x-gzip":
        out = gunzipSync(out);
        break;
      case "deflate":
        // Servers send zlib-wrapped or raw deflate; the first byte tells them apart.
        out = (out[0]! & 0x0f) === 8 ? inflateSync(out) : inflateRawSync(out);
        break;
      case "br":
        out = brotliDecompressSync(out);
        break;
      case "zstd": {
        const z = (zlib as unknown as { zstdDecompressSync?: (b: Uint8Array) => Uint8Array })
          .zstdDecompressSync;
        if (!z) throw new Error("zstd is not supported by this runtime");
        out = z(out);
        break;
      }
      default:
        throw new Error(`unknown content encoding ${coding}`);
    }
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}
