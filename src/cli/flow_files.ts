/**
 * Flow files: HAR 1.2 archives of the HTTP flows (`--har FILE`) and a JSON-lines log with one
 * object per finished flow of any kind (`-w FILE`).
 *
 * HAR follows http://www.softwareishard.com/blog/har-12-spec/. What the spec has no field for is
 * added under names starting with `_`, as the spec allows: `_id`, `_client`, `_server`, `_tls`,
 * `_error`, `_websocketMessages`, `_encoding`/`_truncated` on bodies, and for HTTP/2 (whose
 * `httpVersion` is `HTTP/2.0` and `headersSize` -1) `_streamId` and `_trailers`.
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
import { Buffer } from "node:buffer";
import { isIP } from "node:net";
import { brotliDecompressSync, gunzipSync, inflateRawSync, inflateSync } from "node:zlib";
import type {
  ClientInfo,
  DnsFlow,
  Flow,
  FlowError,
  HttpFlow,
  MessageRecord,
  ServerInfo,
  TcpFlow,
  TlsInfo,
  UdpFlow,
} from "../proxy/flow.ts";
import { formatHostPort } from "../proxy/flow.ts";
import type { Headers1 } from "../proxy/http1.ts";

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

/** The client of a flow in flow files. */
export interface ClientJson {
  /** `host:port`. */
  address: string;
  mode: ClientInfo["mode"];
  peer?: { publicKey: string; endpoint?: string };
}

/** The server of a flow in flow files. */
export interface ServerJson {
  /** `host:port` we connected to. */
  address: string;
  hostname?: string;
  peerAddress?: string;
  /** ISO 8601. */
  timestampConnected?: string;
  timestampTlsSetup?: string;
}

/** A flow's error in flow files. */
export interface ErrorJson {
  message: string;
  /** ISO 8601. */
  timestamp: string;
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
 * import { flowToHarEntry } from "./flow_files.ts";
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

// ---- JSON lines -----------------------------------------------------------------------------

/**
 * Converts any flow to the object written as one line of the `-w FILE` log.
 *
 * Every object has `type`, `id`, `timestampStart` and `timestampEnd` (ISO 8601 or null),
 * `client`, `server`, `tls` and `error` (null when absent). HTTP flows add the fields of their
 * HAR entry (`startedDateTime`, `time`, `request`, `response`, `timings`, `serverIPAddress`) and
 * `websocket`; TCP and UDP flows add byte counts and `messages`; DNS flows add `questions`,
 * `answers`, `rcode` and `resolver`.
 *
 * @returns An object of JSON values only (bytes are text or base64).
 */
export function flowToJson(flow: Flow): Record<string, unknown> {
  const common = {
    type: flow.type,
    id: flow.id,
    timestampStart: iso(flow.timestampStart),
    timestampEnd: flow.timestampEnd === undefined ? null : iso(flow.timestampEnd),
    client: clientJson(flow.client),
    server: serverJson(flow.server),
    tls: flow.tls ?? null,
    error: flow.error === undefined ? null : errorJson(flow.error),
  };
  switch (flow.type) {
    case "http":
      return { ...common, ...httpJson(flow) };
    case "tcp":
    case "udp":
      return { ...common, ...streamJson(flow) };
    case "dns":
      return { ...common, ...dnsJson(flow) };
  }
}

function httpJson(flow: HttpFlow): Record<string, unknown> {
  const entry = flowToHarEntry(flow);
  const ws = flow.websocket;
  return {
    startedDateTime: entry.startedDateTime,
    time: entry.time,
    request: entry.request,
    response: flow.response === undefined ? null : entry.response,
    timings: entry.timings,
    serverIPAddress: entry.serverIPAddress ?? null,
    streamId: flow.streamId ?? null,
    websocket: ws === undefined ? null : {
      messages: entry._websocketMessages ?? [],
      messagesDropped: ws.messagesDropped,
      closeCode: ws.closeCode ?? null,
      closeReason: ws.closeReason ?? null,
    },
  };
}

function streamJson(flow: TcpFlow | UdpFlow): Record<string, unknown> {
  return {
    bytesFromClient: flow.bytesFromClient,
    bytesFromServer: flow.bytesFromServer,
    messages: flow.messages.map((m) => {
      const truncated = m.content.byteLength < m.size;
      const encoded = encodeBytes(m.content, truncated);
      return {
        fromClient: m.fromClient,
        kind: m.kind,
        size: m.size,
        timestamp: iso(m.timestamp),
        content: encoded.text,
        encoding: encoded.base64 ? "base64" : "text",
        truncated,
      };
    }),
    messagesDropped: flow.messagesDropped,
  };
}

function dnsJson(flow: DnsFlow): Record<string, unknown> {
  const { request, response } = flow;
  return {
    transactionId: request?.id ?? response?.id ?? null,
    questions: request?.questions ?? response?.questions ?? [],
    answers: response?.answers ?? [],
    authorities: response?.authorities ?? [],
    additionals: response?.additionals ?? [],
    rcode: response?.rcodeName ?? null,
    rcodeNumber: response?.rcode ?? null,
    flags: response?.flags ?? null,
    resolver: flow.resolver === undefined ? null : formatHostPort(flow.resolver),
  };
}

// ---- writers --------------------------------------------------------------------------------

/**
 * Appends finished flows to a JSON-lines file, one object per line.
 *
 * Each line goes to the file with one synchronous write as soon as {@linkcode FlowLogWriter.write}
 * is called, so lines never interleave, nothing waits in a buffer of ours, and a crash of the
 * process loses no line already written. (A write to a local file costs microseconds; the proxy
 * stalls that long.) After the first failed write (a full disk) the file is cut back to its last
 * whole line, the error is thrown once and kept in `error`, and later flows are counted in
 * `dropped` instead of written. A file it creates has mode 0600: flows hold whole requests and
 * responses, cookies and tokens included.
 *
 * @example
 * ```ts ignore
 * const writer = await FlowLogWriter.open("flows.jsonl");
 * bus.subscribe((e) => e.type === "end" && writer.write(e.flow));
 * // ... at exit
 * await writer.close();
 * ```
 */
export class FlowLogWriter {
  #file: Deno.FsFile | null;
  #error: Error | null = null;
  #dropped = 0;
  /** Bytes of whole lines in the file (for a regular file; -1 for others, e.g. a pipe). */
  #size: number;

  private constructor(file: Deno.FsFile, size: number) {
    this.#file = file;
    this.#size = size;
  }

  /** Opens `path` for appending, creating it (mode 0600) if missing. */
  static async open(path: string): Promise<FlowLogWriter> {
    const file = await Deno.open(path, { append: true, create: true, mode: 0o600 });
    const info = await file.stat();
    return new FlowLogWriter(file, info.isFile ? info.size : -1);
  }

  /** The first write error, if there was one. */
  get error(): Error | null {
    return this.#error;
  }

  /** How many flows were not written because of an earlier error. */
  get dropped(): number {
    return this.#dropped;
  }

  /**
   * Appends one flow as a line.
   * @throws {Error} When the writer is closed, and (once) when the write fails.
   */
  write(flow: Flow): void {
    const file = this.#file;
    if (file === null) throw new Error("Cannot write flow: the flow log is closed");
    if (this.#error !== null) {
      this.#dropped++;
      return;
    }
    const line = lineEncoder.encode(JSON.stringify(flowToJson(flow)) + "\n");
    try {
      let done = file.writeSync(line);
      // A regular file takes the whole line at once; this loop is for the odd short write.
      while (done < line.byteLength) done += file.writeSync(line.subarray(done));
      if (this.#size >= 0) this.#size += line.byteLength;
    } catch (e) {
      this.#error = e instanceof Error ? e : new Error(String(e));
      this.#dropped++;
      cutBack(file, this.#size);
      throw this.#error;
    }
  }

  /** Closes the file. Further writes throw. */
  close(): Promise<void> {
    const file = this.#file;
    this.#file = null;
    file?.close();
    return Promise.resolve();
  }
}

const lineEncoder = new TextEncoder();

/** Options of {@linkcode HarRecorder}. */
export interface HarRecorderOptions {
  /** The most entries kept; older ones make room for newer. Default 100,000. */
  maxEntries?: number;
}

/**
 * Collects finished HTTP flows for a HAR file written at the end of a session. Memory is bounded:
 * past `maxEntries`, the oldest flow is dropped for each new one, and `dropped` counts them.
 */
export class HarRecorder {
  readonly maxEntries: number;
  /** A ring of flows; `#next` is where the next one goes once the ring is full. */
  #flows: HttpFlow[] = [];
  #next = 0;
  #dropped = 0;

  constructor(options: HarRecorderOptions = {}) {
    const max = options.maxEntries ?? 100_000;
    if (!Number.isInteger(max) || max < 1) {
      throw new RangeError(`Cannot record HAR: maxEntries must be a positive integer, got ${max}`);
    }
    this.maxEntries = max;
  }

  /** How many flows are held. */
  get size(): number {
    return this.#flows.length;
  }

  /** How many flows were dropped to stay within `maxEntries`. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Keeps an HTTP flow (call it when the flow has ended); other flows are ignored. */
  add(flow: Flow): void {
    if (flow.type !== "http") return;
    if (this.#flows.length < this.maxEntries) {
      this.#flows.push(flow);
      return;
    }
    this.#flows[this.#next] = flow;
    this.#next = (this.#next + 1) % this.maxEntries;
    this.#dropped++;
  }

  /** The HAR of the flows held, entries ordered by the start of their request. */
  toHar(creator: HarCreator): Har {
    const log: Har["log"] = { version: "1.2", creator, pages: [], entries: [] };
    const comment = this.#comment();
    if (comment !== undefined) log.comment = comment;
    log.entries = this.#ordered().map(flowToHarEntry);
    return { log };
  }

  /**
   * Writes the HAR to `path`: first to `path.tmp`, then renamed over `path`, so a reader never
   * sees half a file. Entries are serialized one at a time, so no single string holds the whole
   * archive.
   */
  async writeTo(path: string, creator: HarCreator): Promise<void> {
    const tmp = `${path}.tmp`;
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      const head: Omit<Har["log"], "entries"> = { version: "1.2", creator, pages: [] };
      const comment = this.#comment();
      if (comment !== undefined) head.comment = comment;
      const opening = JSON.stringify({ log: head });
      // `{"log":{...}}` → `{"log":{...,"entries":[` then the entries, then `]}}`.
      const chunks = new ChunkWriter(file);
      await chunks.add(`${opening.slice(0, -2)},"entries":[`);
      let first = true;
      for (const flow of this.#ordered()) {
        await chunks.add((first ? "\n" : ",\n") + JSON.stringify(flowToHarEntry(flow)));
        first = false;
      }
      await chunks.add("\n]}}\n");
      await chunks.flush();
    } catch (e) {
      file.close();
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
    file.close();
    await Deno.rename(tmp, path);
  }

  #ordered(): HttpFlow[] {
    const ring = this.#flows.slice(this.#next).concat(this.#flows.slice(0, this.#next));
    // Stable: flows starting in the same millisecond keep the order they ended in.
    return ring.sort((a, b) => a.request.timestampStart - b.request.timestampStart);
  }

  #comment(): string | undefined {
    return this.#dropped === 0
      ? undefined
      : `${this.#dropped} older flows were left out to stay within ${this.maxEntries} entries`;
  }
}

/**
 * After a failed write, cuts a file back to `size` bytes (its whole lines), so what is there
 * stays valid JSON lines; shortening a file needs no free space. `size` -1: not a regular file.
 */
function cutBack(file: Deno.FsFile, size: number): void {
  if (size < 0) return;
  try {
    file.truncateSync(size);
  } catch { /* the error already reported is the one that matters */ }
}

/**
 * A HAR file built on disk as flows complete, for long runs: each HTTP flow's entry is appended
 * to `<path>.entries` right away (nothing is held in memory), and {@link HarSpool.finish} wraps
 * them into `<path>` (via `<path>.tmp` and a rename) and removes the spool. Entries are in the
 * order their flows ended; if the process dies first, the spool keeps one JSON entry per line.
 */
export class HarSpool {
  readonly path: string;
  readonly spoolPath: string;
  #file: Deno.FsFile | null;
  #encoder = new TextEncoder();
  #entries = 0;
  #size = 0;
  #error: Error | null = null;
  #dropped = 0;

  private constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.spoolPath = `${path}.entries`;
    this.#file = file;
  }

  /** Starts a spool next to `path`, mode 0600 (an old spool there is replaced). */
  static async open(path: string): Promise<HarSpool> {
    const spoolPath = `${path}.entries`;
    await Deno.remove(spoolPath).catch(() => {}); // a leftover would keep its own mode
    const file = await Deno.open(spoolPath, { write: true, createNew: true, mode: 0o600 });
    return new HarSpool(path, file);
  }

  /** How many entries were spooled. */
  get entries(): number {
    return this.#entries;
  }

  /** The first write error, if there was one. */
  get error(): Error | null {
    return this.#error;
  }

  /** How many HTTP flows were not spooled because of a write error. */
  get dropped(): number {
    return this.#dropped;
  }

  /**
   * Appends an HTTP flow's entry (other flows are ignored). After the first failed write (a full
   * disk) the spool is cut back to its last whole entry, the error is thrown once and kept in
   * `error`, and later flows are counted in `dropped`; the HAR still holds what was spooled.
   */
  add(flow: Flow): void {
    if (flow.type !== "http" || !this.#file) return;
    if (this.#error !== null) {
      this.#dropped++;
      return;
    }
    const line = this.#encoder.encode(JSON.stringify(flowToHarEntry(flow)) + "\n");
    try {
      let done = 0;
      while (done < line.byteLength) done += this.#file.writeSync(line.subarray(done));
    } catch (e) {
      this.#error = e instanceof Error ? e : new Error(String(e));
      this.#dropped++;
      cutBack(this.#file, this.#size);
      throw this.#error;
    }
    this.#size += line.byteLength;
    this.#entries++;
  }

  /** Writes the HAR file (mode 0600) from the spool and removes the spool. */
  async finish(creator: HarCreator): Promise<void> {
    this.#file?.close();
    this.#file = null;
    const tmp = `${this.path}.tmp`;
    await Deno.remove(tmp).catch(() => {}); // a leftover would keep its own mode
    const out = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
    try {
      const opening = JSON.stringify({ log: { version: "1.2", creator, pages: [] } });
      const chunks = new ChunkWriter(out);
      await chunks.add(`${opening.slice(0, -2)},"entries":[`);
      let first = true;
      const spool = await Deno.open(this.spoolPath, { read: true });
      const lines = spool.readable.pipeThrough(new TextDecoderStream());
      let rest = "";
      for await (const text of lines) {
        const parts = (rest + text).split("\n");
        rest = parts.pop()!;
        for (const entry of parts) {
          if (entry === "") continue;
          await chunks.add((first ? "\n" : ",\n") + entry);
          first = false;
        }
      }
      if (rest !== "") await chunks.add((first ? "\n" : ",\n") + rest);
      await chunks.add("\n]}}\n");
      await chunks.flush();
    } catch (e) {
      out.close();
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
    out.close();
    await Deno.rename(tmp, this.path);
    await Deno.remove(this.spoolPath).catch(() => {});
  }
}

/** Gathers text into writes of about a megabyte. */
class ChunkWriter {
  static readonly SIZE = 1 << 20;
  #file: Deno.FsFile;
  #parts: string[] = [];
  #length = 0;
  #encoder = new TextEncoder();

  constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  async add(text: string): Promise<void> {
    this.#parts.push(text);
    this.#length += text.length;
    if (this.#length >= ChunkWriter.SIZE) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.#parts.length === 0) return;
    const bytes = this.#encoder.encode(this.#parts.join(""));
    this.#parts = [];
    this.#length = 0;
    let done = 0;
    while (done < bytes.byteLength) done += await this.#file.write(bytes.subarray(done));
  }
}

// ---- helpers --------------------------------------------------------------------------------

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** Rounds to microseconds, so sums of timestamps do not show float noise. */
function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

function clientJson(client: ClientInfo): ClientJson {
  const out: ClientJson = { address: formatHostPort(client.address), mode: client.mode };
  if (client.peer !== undefined) {
    out.peer = client.peer.endpoint === undefined
      ? { publicKey: client.peer.publicKey }
      : { publicKey: client.peer.publicKey, endpoint: client.peer.endpoint };
  }
  return out;
}

function serverJson(server: ServerInfo): ServerJson {
  const out: ServerJson = { address: formatHostPort(server.address) };
  if (server.hostname !== undefined) out.hostname = server.hostname;
  if (server.peerAddress !== undefined) out.peerAddress = formatHostPort(server.peerAddress);
  if (server.timestampConnected !== undefined) out.timestampConnected = iso(server.timestampConnected);
  if (server.timestampTlsSetup !== undefined) out.timestampTlsSetup = iso(server.timestampTlsSetup);
  return out;
}

function errorJson(error: FlowError): ErrorJson {
  return { message: error.message, timestamp: iso(error.timestamp) };
}

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

/**
 * Bytes as text when they are UTF-8 without control characters other than whitespace and ESC,
 * else as base64. A truncated prefix may end inside a character; that tail is left out.
 */
function encodeBytes(bytes: Uint8Array, truncated: boolean): { text: string; base64: boolean } {
  for (const b of bytes) {
    if ((b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d && b !== 0x0c && b !== 0x1b) || b === 0x7f) {
      return { text: base64(bytes), base64: true };
    }
  }
  try {
    // `stream: true` keeps an unfinished last character back instead of failing on it; the
    // decoder is new each time, so nothing held back leaks into the next call.
    const text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes, {
      stream: truncated,
    });
    return { text, base64: false };
  } catch {
    return { text: base64(bytes), base64: true };
  }
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}
