/**
 * HAR 1.2 entries of HTTP flows (`--har FILE`); the JSON-lines log (`json_lines.ts`) reuses them.
 *
 * HAR follows http://www.softwareishard.com/blog/har-12-spec/. What the spec has no field for is
 * added under names starting with `_`, as the spec allows: `_id`, `_client`, `_server`, `_tls`,
 * `_error`, `_websocketMessages`, `_encoding`/`_truncated` on bodies, and for HTTP/2 (whose
 * `httpVersion` is `HTTP/2.0` and `headersSize` -1) `_streamId` and `_trailers`; a gRPC call's
 * message counts, sizes and status are `_grpc`.
 *
 * Choices:
 * - Bodies are recorded as a bounded prefix of the payload with transfer coding removed but
 *   content coding (gzip, br, deflate) kept. A complete response body in one of those codings is
 *   decoded for `content.text`; `bodySize` stays the size on the wire. A truncated one cannot be
 *   decoded and is given as is, which `content.comment` says.
 * - Bytes that are valid UTF-8 without control characters become text; anything else is base64,
 *   marked `encoding: "base64"` (content, as HAR defines) or `_encoding: "base64"` (elsewhere).
 * - Timings are laid end to end from the request's first byte, so they add up to `time`: a
 *   server connection opened for this flow counts as `connect` (with `ssl` inside it, as the
 *   spec asks), then `send` is what is left of receiving the request, `wait` runs to the first
 *   response byte and `receive` to the last. A flow on a reused connection has `connect: -1`.
 * - A flow that failed before any response still needs a `response` in HAR: it gets status 0 and
 *   the entry carries `_error`. In the JSON-lines log its `response` is `null` instead.
 * @module
 */
import { isIP } from "node:net";
import { brotliDecompressSync, gunzipSync, inflateRawSync, inflateSync } from "node:zlib";
import type { HttpFlow, MessageRecord, ServerInfo, TlsInfo } from "./flow.ts";
import type { Headers1 } from "../proxy/http1.ts";
import { type GrpcJson, grpcJson } from "./grpc.ts";
import {
  base64,
  type ClientJson,
  clientJson,
  encodeBytes,
  type ErrorJson,
  errorJson,
  iso,
  round,
  type ServerJson,
  serverJson,
} from "./_json_values.ts";

export type { ClientJson, ErrorJson, ServerJson };

// ---- HAR types ------------------------------------------------------------------------------

/** The tool that wrote a HAR file. */
export interface HarCreator {
  name: string;
  version: string;
  comment?: string;
}

/** A header or query parameter. */
export interface HarNameValue {
  name: string;
  value: string;
}

/** A cookie sent (request) or set (response). */
export interface HarCookie {
  name: string;
  value: string;
  path?: string;
  domain?: string;
  /** ISO 8601. */
  expires?: string;
  httpOnly?: boolean;
  secure?: boolean;
}

/** A request body. */
export interface HarPostData {
  mimeType: string;
  text: string;
  /** `base64` when `text` holds base64 of binary bytes (not in HAR 1.2). */
  _encoding?: "base64";
  /** True when `text` holds only the first part of the body. */
  _truncated?: boolean;
}

/** The request of an entry. */
export interface HarRequest {
  method: string;
  url: string;
  httpVersion: string;
  cookies: HarCookie[];
  headers: HarNameValue[];
  queryString: HarNameValue[];
  postData?: HarPostData;
  headersSize: number;
  bodySize: number;
  /** Trailer fields (HTTP/2). */
  _trailers?: HarNameValue[];
}

/** A response body. */
export interface HarContent {
  size: number;
  compression?: number;
  mimeType: string;
  text: string;
  encoding?: "base64";
  comment?: string;
  /** True when `text` holds only the first part of the body. */
  _truncated?: boolean;
}

/** The response of an entry (status 0 when there was none). */
export interface HarResponse {
  status: number;
  statusText: string;
  httpVersion: string;
  cookies: HarCookie[];
  headers: HarNameValue[];
  content: HarContent;
  redirectURL: string;
  headersSize: number;
  bodySize: number;
  /** Trailer fields (HTTP/2). */
  _trailers?: HarNameValue[];
}

/** Phases of an entry in milliseconds; -1 where it does not apply. */
export interface HarTimings {
  blocked: number;
  dns: number;
  connect: number;
  ssl: number;
  send: number;
  wait: number;
  receive: number;
}

/** A WebSocket message (wirescope extension). */
export interface HarWebSocketMessage {
  kind: MessageRecord["kind"];
  fromClient: boolean;
  /** Full payload size in bytes. */
  size: number;
  /** ISO 8601. */
  time: string;
  /** The payload (or its first part) as text, or base64 when `encoding` says so. */
  content: string;
  encoding?: "base64";
  truncated?: boolean;
}

/** One HTTP exchange. */
export interface HarEntry {
  startedDateTime: string;
  time: number;
  request: HarRequest;
  response: HarResponse;
  cache: Record<string, never>;
  timings: HarTimings;
  serverIPAddress?: string;
  connection?: string;
  _id: string;
  _client: ClientJson;
  _server: ServerJson;
  _tls?: TlsInfo;
  _error?: ErrorJson;
  _websocketMessages?: HarWebSocketMessage[];
  _websocketMessagesDropped?: number;
  _websocketClose?: { code: number; reason: string };
  /** The HTTP/2 stream id on the client's connection. */
  _streamId?: number;
  /** A gRPC call's message counts and sizes each way, and its status. */
  _grpc?: GrpcJson;
  /** The user's comment on the flow (HAR 1.2's own field). */
  comment?: string;
  /** The user's mark (`:default:` for a plain one). */
  _marked?: string;
  /** Set on a flow replay made: `client` (a request sent again) or `server` (answered from a recording). */
  _replay?: "client" | "server";
  /** The id of the flow a client replay sent again. */
  _replayOf?: string;
}

/** A HAR file. */
export interface Har {
  log: {
    version: "1.2";
    creator: HarCreator;
    pages: never[];
    comment?: string;
    entries: HarEntry[];
  };
}

// ---- HAR entries ----------------------------------------------------------------------------

/**
 * Converts an HTTP flow to a HAR 1.2 entry.
 *
 * @param flow A finished HTTP flow.
 * @returns The entry; it holds only strings, numbers, booleans, arrays and plain objects.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { flowToHarEntry } from "./har.ts";
 * const empty = { content: new Uint8Array(0), size: 0, truncated: false };
 * const entry = flowToHarEntry({
 *   type: "http",
 *   id: "1",
 *   client: { address: { hostname: "10.0.0.2", port: 5000 }, mode: "regular" },
 *   server: { address: { hostname: "example.com", port: 80 } },
 *   timestampStart: 0,
 *   request: {
 *     method: "GET", scheme: "http", host: "example.com", port: 80, path: "/?q=1",
 *     url: "http://example.com/?q=1", httpVersion: "HTTP/1.1", headers: [], body: empty,
 *     timestampStart: 0, timestampEnd: 0,
 *   },
 *   response: {
 *     status: 204, reason: "No Content", httpVersion: "HTTP/1.1", headers: [], body: empty,
 *     timestampStart: 30, timestampEnd: 30,
 *   },
 * });
 * assert.deepEqual(entry.request.queryString, [{ name: "q", value: "1" }]);
 * assert.equal(entry.time, 30);
 * ```
 */
export function flowToHarEntry(flow: HttpFlow): HarEntry {
  const { request, response } = flow;
  const reqHeaders = headerList(request.headers);
  const requestMime = headerValue(request.headers, "content-type") ?? "";
  const harRequest: HarRequest = {
    method: request.method,
    url: request.url,
    httpVersion: request.httpVersion,
    cookies: requestCookies(request.headers),
    headers: reqHeaders,
    queryString: queryString(request.url),
    headersSize: isHttp1(request.httpVersion)
      ? headBytes(`${request.method} ${request.path} ${request.httpVersion}`, request.headers)
      : -1,
    bodySize: request.body.size,
  };
  if (request.body.size > 0) {
    const body = encodeBytes(request.body.content, request.body.truncated);
    const postData: HarPostData = { mimeType: requestMime, text: body.text };
    if (body.base64) postData._encoding = "base64";
    if (request.body.truncated) postData._truncated = true;
    harRequest.postData = postData;
  }
  if (request.trailers !== undefined) harRequest._trailers = headerList(request.trailers);

  const entry: HarEntry = {
    startedDateTime: iso(request.timestampStart),
    time: 0,
    request: harRequest,
    response: response === undefined ? missingResponse() : harResponse(flow, response),
    cache: {},
    timings: harTimings(flow),
    _id: flow.id,
    _client: clientJson(flow.client),
    _server: serverJson(flow.server),
  };
  // The sum of the phases that apply; `ssl` is already inside `connect`.
  const { blocked, dns, connect, send, wait, receive } = entry.timings;
  entry.time = round(
    [blocked, dns, connect, send, wait, receive].filter((t) => t >= 0).reduce((a, b) => a + b, 0),
  );
  const ip = serverIp(flow.server);
  if (ip !== undefined) entry.serverIPAddress = ip;
  entry.connection = String(flow.client.address.port);
  if (flow.tls !== undefined) entry._tls = flow.tls;
  if (flow.error !== undefined) entry._error = errorJson(flow.error);
  if (flow.streamId !== undefined) entry._streamId = flow.streamId;
  if (flow.marked) entry._marked = flow.marked;
  if (flow.replay) entry._replay = flow.replay;
  if (flow.replayOf) entry._replayOf = flow.replayOf;
  if (flow.comment) entry.comment = flow.comment;
  const grpc = grpcJson(flow);
  if (grpc !== undefined) entry._grpc = grpc;
  if (flow.websocket !== undefined) {
    entry._websocketMessages = flow.websocket.messages.map(websocketMessage);
    entry._websocketMessagesDropped = flow.websocket.messagesDropped;
    if (flow.websocket.closeCode !== undefined) {
      entry._websocketClose = { code: flow.websocket.closeCode, reason: flow.websocket.closeReason ?? "" };
    }
  }
  return entry;
}

function harResponse(flow: HttpFlow, response: NonNullable<HttpFlow["response"]>): HarResponse {
  const mimeType = headerValue(response.headers, "content-type") ?? "";
  const har: HarResponse = {
    status: response.status,
    statusText: response.reason,
    httpVersion: response.httpVersion,
    cookies: responseCookies(response.headers, response.timestampStart),
    headers: headerList(response.headers),
    content: harContent(response.body, mimeType, headerValue(response.headers, "content-encoding")),
    redirectURL: headerValue(response.headers, "location") ?? "",
    headersSize: isHttp1(response.httpVersion)
      ? headBytes(
        `${response.httpVersion} ${response.status}${response.reason === "" ? "" : " " + response.reason}`,
        response.headers,
      )
      : -1,
    // A 101 has no body; the bytes after it belong to the WebSocket.
    bodySize: flow.websocket !== undefined ? 0 : response.body.size,
  };
  if (response.trailers !== undefined) har._trailers = headerList(response.trailers);
  return har;
}

function missingResponse(): HarResponse {
  return {
    status: 0,
    statusText: "",
    httpVersion: "",
    cookies: [],
    headers: [],
    content: { size: 0, mimeType: "x-unknown", text: "" },
    redirectURL: "",
    headersSize: -1,
    bodySize: -1,
  };
}

/** The most bytes a compressed body is allowed to expand to when decoded for HAR. */
const MAX_DECODED_BYTES = 64 * 1024 * 1024;

function harContent(
  body: { content: Uint8Array; size: number; truncated: boolean },
  mimeType: string,
  contentEncoding: string | undefined,
): HarContent {
  const coding = (contentEncoding ?? "").trim().toLowerCase();
  let bytes = body.content;
  let size = body.size;
  let comment: string | undefined;
  if (coding !== "" && coding !== "identity" && body.size > 0) {
    const decoded = body.truncated ? null : decodeContent(bytes, coding);
    if (decoded !== null) {
      bytes = decoded;
      size = decoded.byteLength;
    } else {
      comment = body.truncated
        ? `body truncated; content still ${coding}-encoded`
        : `content still ${coding}-encoded; it could not be decoded`;
    }
  }
  const encoded = encodeBytes(bytes, body.truncated);
  const content: HarContent = { size, mimeType, text: encoded.text };
  if (size !== body.size) content.compression = size - body.size;
  if (encoded.base64) content.encoding = "base64";
  if (comment !== undefined) content.comment = comment;
  if (body.truncated) content._truncated = true;
  return content;
}

/** Undoes one content coding, or returns null for codings it does not know and broken data. */
function decodeContent(bytes: Uint8Array, coding: string): Uint8Array | null {
  const options = { maxOutputLength: MAX_DECODED_BYTES };
  try {
    switch (coding) {
      case "gzip":
      case "x-gzip":
        return new Uint8Array(gunzipSync(bytes, options));
      case "br":
        return new Uint8Array(brotliDecompressSync(bytes, options));
      case "deflate":
        // Meant to be zlib-wrapped; some servers send raw deflate.
        try {
          return new Uint8Array(inflateSync(bytes, options));
        } catch {
          return new Uint8Array(inflateRawSync(bytes, options));
        }
      default:
        return null;
    }
  } catch {
    return null;
  }
}

function harTimings(flow: HttpFlow): HarTimings {
  const { request, response, server } = flow;
  const start = request.timestampStart;
  const timings: HarTimings = { blocked: -1, dns: -1, connect: -1, ssl: -1, send: 0, wait: 0, receive: 0 };

  // A connection opened after the flow began was opened for it.
  let ready = start;
  const connected = server.timestampConnected;
  if (connected !== undefined && connected >= flow.timestampStart) {
    const tls = server.timestampTlsSetup;
    const tlsDone = tls !== undefined && tls >= connected ? tls : undefined;
    ready = Math.max(start, tlsDone ?? connected);
    timings.connect = round(ready - start);
    if (tlsDone !== undefined) timings.ssl = round(Math.min(tlsDone - connected, timings.connect));
  }

  const requestEnd = request.timestampEnd ?? flow.error?.timestamp ?? flow.timestampEnd ?? start;
  const sent = Math.max(ready, requestEnd);
  timings.send = round(sent - ready);
  if (response === undefined) {
    const end = flow.error?.timestamp ?? flow.timestampEnd ?? sent;
    timings.wait = round(Math.max(0, end - sent));
    return timings;
  }
  const first = Math.max(sent, response.timestampStart);
  timings.wait = round(first - sent);
  const last = response.timestampEnd ??
    (flow.websocket !== undefined ? first : flow.error?.timestamp ?? flow.timestampEnd ?? first);
  timings.receive = round(Math.max(0, last - first));
  return timings;
}

function websocketMessage(m: MessageRecord): HarWebSocketMessage {
  const truncated = m.content.byteLength < m.size;
  // A binary frame stays base64 even when its bytes happen to read as text.
  const encoded = m.kind === "binary"
    ? { text: base64(m.content), base64: true }
    : encodeBytes(m.content, truncated);
  const out: HarWebSocketMessage = {
    kind: m.kind,
    fromClient: m.fromClient,
    size: m.size,
    time: iso(m.timestamp),
    content: encoded.text,
  };
  if (encoded.base64) out.encoding = "base64";
  if (truncated) out.truncated = true;
  return out;
}

// ---- helpers --------------------------------------------------------------------------------

function serverIp(server: ServerInfo): string | undefined {
  const candidate = server.peerAddress?.hostname ?? server.address.hostname;
  return isIP(candidate) !== 0 ? candidate : undefined;
}

function headerList(headers: Headers1): HarNameValue[] {
  return headers.map(([name, value]) => ({ name, value }));
}

function headerValue(headers: Headers1, name: string): string | undefined {
  return headers.find(([n]) => n.toLowerCase() === name)?.[1];
}

function isHttp1(version: string): boolean {
  return version === "HTTP/1.0" || version === "HTTP/1.1";
}

/** Bytes of an HTTP/1 head: start line, fields, empty line (heads are latin1, a byte a char). */
function headBytes(startLine: string, headers: Headers1): number {
  let n = startLine.length + 2;
  for (const [name, value] of headers) n += name.length + 2 + value.length + 2;
  return n + 2;
}

function queryString(url: string): HarNameValue[] {
  const hash = url.indexOf("#");
  const bare = hash === -1 ? url : url.slice(0, hash);
  const q = bare.indexOf("?");
  if (q === -1) return [];
  return [...new URLSearchParams(bare.slice(q + 1))].map(([name, value]) => ({ name, value }));
}

function requestCookies(headers: Headers1): HarCookie[] {
  const cookies: HarCookie[] = [];
  for (const [name, value] of headers) {
    if (name.toLowerCase() !== "cookie") continue;
    for (const pair of value.split(";")) {
      const part = pair.trim();
      if (part === "") continue;
      const eq = part.indexOf("=");
      cookies.push(
        eq === -1
          ? { name: part, value: "" }
          : { name: part.slice(0, eq).trim(), value: part.slice(eq + 1).trim() },
      );
    }
  }
  return cookies;
}

function responseCookies(headers: Headers1, received: number): HarCookie[] {
  const cookies: HarCookie[] = [];
  for (const [name, value] of headers) {
    if (name.toLowerCase() !== "set-cookie") continue;
    const [first = "", ...attributes] = value.split(";");
    const eq = first.indexOf("=");
    if (eq === -1) continue; // RFC 6265 §5.2: a set-cookie string without "=" is ignored.
    const cookie: HarCookie = { name: first.slice(0, eq).trim(), value: first.slice(eq + 1).trim() };
    let maxAge: number | undefined;
    for (const attribute of attributes) {
      const at = attribute.indexOf("=");
      const key = (at === -1 ? attribute : attribute.slice(0, at)).trim().toLowerCase();
      const val = at === -1 ? "" : attribute.slice(at + 1).trim();
      if (key === "path") cookie.path = val;
      else if (key === "domain") cookie.domain = val;
      else if (key === "httponly") cookie.httpOnly = true;
      else if (key === "secure") cookie.secure = true;
      else if (key === "expires") {
        const t = Date.parse(val);
        if (!Number.isNaN(t) && cookie.expires === undefined) cookie.expires = iso(t);
      } else if (key === "max-age" && /^-?\d+$/.test(val)) maxAge = Number(val);
    }
    // Max-Age wins over Expires (RFC 6265 §5.3 step 3).
    if (maxAge !== undefined) cookie.expires = iso(received + Math.max(0, maxAge) * 1000);
    cookies.push(cookie);
  }
  return cookies;
}
