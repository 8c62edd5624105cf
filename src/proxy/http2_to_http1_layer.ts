/**
 * HTTP/2 client, HTTP/1.1 upstream: the layer speaks HTTP/2 to the client (a server-role
 * {@link Http2Connection}) and turns each client stream into one request on a pool of keep-alive
 * HTTP/1.1 connections to the upstream, then the response back into HTTP/2 on that stream.
 *
 * Translation (RFC 9113 §8.2.2 and §8.3, RFC 9112):
 * - Request: `:method` and `:path` make the request line (`HTTP/1.1`), `:authority` (or a `host`
 *   field) the `host` field, sent first; `cookie` crumbs are joined with "; " into one field;
 *   connection-specific fields (connection, keep-alive, proxy-connection, transfer-encoding,
 *   upgrade, and `te` other than "trailers") never cross. A body without `content-length` goes
 *   chunked (so request trailers can follow); an empty POST/PUT/PATCH gets `content-length: 0`.
 *   With a `content-length`, request trailers are recorded but cannot be sent and are dropped.
 * - Response: the status line becomes `:status`; Connection and the fields it names, Keep-Alive,
 *   Transfer-Encoding, Upgrade, Proxy-Connection and TE are dropped; names are lowercased;
 *   chunked trailers become HTTP/2 trailers; 1xx (except 101) are passed on as informational
 *   headers; HEAD, 204 and 304 have no body.
 *
 * Pool: at most `poolSize` connections (6 by default, like browsers). A request takes an idle
 * connection, or opens one while below the limit, or waits in order. A connection is used again
 * once it carried a complete request and a complete response that allows keep-alive. A request
 * without a body whose reused connection closed before any byte of the answer (the keep-alive
 * race) is tried once more on another connection; any other close or reset answers the stream
 * with a 502 before its response started, or resets it (INTERNAL_ERROR) after, and its flow ends
 * with the reason.
 *
 * Backpressure: request body bytes are given back to the client's windows (`consume()`) only once
 * they went out to an upstream connection (the driver awaits that write), so a request waiting
 * for a connection holds at most its stream window. Response bytes queued for a client stream past
 * {@link PAUSE_AT} (the client's window is shut) pause reading that upstream connection
 * (`pause-reading`) until they drain.
 *
 * Flows: one per stream, like {@link Http2Layer}'s: the request as the client sent it
 * (`HTTP/2.0`, `streamId`), the response as the upstream sent it (`httpVersion` "HTTP/1.1", its
 * reason phrase and header fields in wire order), bodies bounded by `bodyLimit`.
 *
 * Events: bytes, end and errors of the client and of each upstream connection (`conn`), the
 * result of `open-server` per connection, `timer` (SETTINGS acknowledgement deadline). Commands:
 * send/close per side and connection, open-server, pause-reading, flow, log, timer.
 * @module
 */
import { type ConnectionOptions, Http2Connection, type Http2Event } from "./http2/connection.ts";
import { ErrorCode, errorName } from "./http2/frames.ts";
import type { HeaderField } from "./http2/hpack.ts";
import {
  BodyDecoder,
  type Headers1,
  headerValues,
  Http1Error,
  parseResponseHead,
  responseFraming,
  type ResponseHead,
  serializeRequestHead,
} from "./http1.ts";
import { type Http2Counters, regularFields, streamFlow } from "./http2_layer.ts";
import type { ClientInfo, HostPort, HttpFlow, ServerInfo, TlsInfo } from "../flows/flow.ts";
import { appendRecordBody, emptyBody, endHttpFlow, formatHostPort } from "../flows/flow.ts";
import { concatBytes, type Layer, type LayerCommand, type LayerEvent } from "./layer.ts";
import { localAnswer } from "./http2_local_answer.ts";
import type { LocalResponse, RequestChange, RequestVerdict, ResponseVerdict } from "./request_hook.ts";

/** Options of {@link Http2ToHttp1Layer}. */
export interface Http2ToHttp1LayerOptions {
  /** `https` inside TLS, `http` for prior-knowledge h2c. */
  scheme: "http" | "https";
  client: ClientInfo;
  /** The upstream (the original destination, or the CONNECT target). */
  server: ServerInfo;
  tls?: TlsInfo;
  /** Bytes of each body kept in a flow. */
  bodyLimit: number;
  /** Makes flow ids. */
  newId: () => string;
  now: number;
  /** Codec settings toward the client. */
  clientSide?: ConnectionOptions;
  /** Most upstream connections open at once (default 6). */
  poolSize?: number;
  /**
   * How long (ms) an upstream connection carrying an exchange may make no progress (send no
   * byte, take no request byte) before the exchange fails: 504 before the response head, a
   * reset of the stream after it. A connection paused because the client does not read is not
   * timed. Absent: no limit.
   */
  serverTimeout?: number;
  /** Where the proxy sums the codec counters of its HTTP/2 connections (`ProxyStats.http2`). */
  counters?: Http2Counters;
  /**
   * Hold each stream's request (head, and body up to `bodyLimit` or the stream window, whichever
   * is less) for the request hook: `request-hook` with the stream's id, nothing sent upstream
   * before the `hook-result` event for that stream. Other streams go on meanwhile.
   */
  requestHook?: boolean;
  /** Hold each response (head, and body up to `bodyLimit`) for the response hook the same way. */
  responseHook?: boolean;
}

/**
 * The client's streams: at most {@link MAX_STREAMS} at once, each with a {@link STREAM_WINDOW}
 * receive window, under a connection window as large as all of them together. A request waiting
 * for a pooled connection keeps its body bytes (not given back); were the connection window
 * smaller than what waiting streams can hold, uploads waiting behind the pool would take all of
 * it and stall the uploads in progress, which must end before a connection frees up: deadlock.
 * The product (8 MiB) bounds what the layer holds per client connection.
 */
const MAX_STREAMS = 64;
const STREAM_WINDOW = 128 * 1024;
/** Response bytes queued toward one client stream past which its upstream connection is not read. */
export const PAUSE_AT = 256 * 1024;
/** Connection-specific fields that never cross between HTTP/1.1 and HTTP/2 (RFC 9113 §8.2.2). */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "te",
  "http2-settings",
]);
/** Fields that do not belong in (request or response) trailers. */
const NOT_IN_TRAILERS = new Set([...HOP_BY_HOP, "content-length", "host", "trailer"]);
/** Methods whose empty body gets an explicit `content-length: 0` toward HTTP/1.1. */
const BODY_METHODS = new Set(["POST", "PUT", "PATCH"]);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// deno-lint-ignore no-control-regex
const VALUE_FORBIDDEN = /[\x00\r\n]/;
const encoder = new TextEncoder();
const REASONS: Record<number, string> = {
  400: "Bad Request",
  501: "Not Implemented",
  502: "Bad Gateway",
  504: "Gateway Timeout",
};
const EMPTY = new Uint8Array(0);

/** One client stream and its HTTP/1.1 exchange. */
interface Exchange {
  id: number;
  flow: HttpFlow;
  method: string;
  /** The serialized request head. */
  head: Uint8Array;
  /** How the request body goes to the upstream. */
  framing: "none" | "length" | "chunked";
  /** Request body bytes (copies) waiting for a connection. */
  pending: Uint8Array[];
  /** Request trailers (chunked only), sent with the last chunk. */
  trailers: HeaderField[] | null;
  requestDone: boolean;
  /** The upstream connection carrying it (null: waiting, or done with it). */
  conn: Upstream | null;
  /** Request body bytes taken from the client and not yet given back with consume(). */
  owed: number;
  responseStarted: boolean;
  responseDone: boolean;
  /** Tried again once after a reused connection closed unanswered. */
  retried: boolean;
  /** The rest of the request body has nowhere to go (the response came first). */
  abandoned: boolean;
  /** The request hook's part: held while its body is read, asked, or null (given, or none). */
  hook: "holding" | "asking" | null;
  /** The request's header list as it came, and whether it ended with it (for a changed head). */
  h2Headers: HeaderField[];
  endAtHead: boolean;
  /** Request body bytes held for the hook. */
  heldBytes: number;
  /** The response held for the response hook (nothing of it sent to the client yet). */
  respHold: {
    headers: HeaderField[];
    chunks: Uint8Array[];
    trailers: HeaderField[] | null;
    end: boolean;
    asking: boolean;
    bytes: number;
  } | null;
}

/** One HTTP/1.1 connection of the pool. */
interface Upstream {
  id: number;
  state: "connecting" | "open" | "closed";
  remote: HostPort | null;
  connectedAt: number;
  exchange: Exchange | null;
  /** Response bytes received and not parsed yet. */
  buf: Uint8Array;
  head: ResponseHead | null;
  decoder: BodyDecoder | null;
  /** The current response allows another request on this connection. */
  reusable: boolean;
  /** Exchanges completed on it. */
  served: number;
  /** Bytes of the current response came. */
  answered: boolean;
  paused: boolean;
  /** When the current exchange last made progress on it. */
  progress: number;
}

/** Speaks HTTP/2 to the client and HTTP/1.1 to the upstream, and records each stream. */
export class Http2ToHttp1Layer implements Layer {
  readonly #o: Http2ToHttp1LayerOptions;
  /** Toward the client (server role). */
  readonly down: Http2Connection;
  readonly #poolSize: number;
  readonly #streams = new Map<number, Exchange>();
  readonly #conns = new Map<number, Upstream>();
  /** Exchanges waiting for a connection, oldest first. */
  #queue: Exchange[] = [];
  #nextConn = 1;
  #started = false;
  #done = false;
  /** Client streams started on this connection. */
  #streamsSeen = 0;
  #goingAway = false;
  #armed: number | null = null;
  /** Why the last connection attempt failed (answers waiting requests when none is left). */
  #lastFailure = "";
  /** Adds this connection's codec counters to the proxy's totals (once, when it ends). */
  readonly #retire: () => void;

  constructor(options: Http2ToHttp1LayerOptions) {
    this.#o = options;
    this.#poolSize = Math.max(1, options.poolSize ?? 6);
    this.down = new Http2Connection(
      "server",
      {
        maxConcurrentStreams: MAX_STREAMS,
        initialWindowSize: STREAM_WINDOW,
        connectionWindowSize: MAX_STREAMS * STREAM_WINDOW,
        ...options.clientSide,
      },
      options.now,
    );
    this.#retire = options.counters?.track(this.down, null) ?? (() => {});
  }

  /** Upstream connections open or opening, and client streams in progress. */
  /**
   * The head timeout's wait: no stream started on the connection yet, or a header block left
   * open (HEADERS without its last CONTINUATION; nothing else may come on the connection then).
   */
  get waitingForRequestHead(): boolean {
    return !this.#done && (this.#streamsSeen === 0 || this.down.headerBlockOpen);
  }

  /** A request's header block has begun and not ended (the preface and SETTINGS are no request). */
  get headPartial(): boolean {
    return this.down.headerBlockOpen;
  }

  /** The head timeout closes the connection: GOAWAY to the client, open streams end with the reason. */
  headTimedOut(now: number): LayerCommand[] {
    const out: LayerCommand[] = [];
    if (this.#done) return out;
    const why = this.#streamsSeen === 0
      ? "no request within the head timeout"
      : "header block incomplete at the head timeout";
    this.down.goaway(ErrorCode.NO_ERROR, why);
    this.#clientGone(`client ${why}`, now, out);
    return out;
  }

  stats(): { connections: number; streams: number; waiting: number } {
    return { connections: this.#conns.size, streams: this.#streams.size, waiting: this.#queue.length };
  }

  /**
   * The commands that start the layer: our SETTINGS to the client, and the first upstream
   * connection (the driver may hand over one it already made).
   */
  start(): LayerCommand[] {
    this.#started = true;
    const out: LayerCommand[] = [];
    this.#open(out);
    this.#flush(this.#o.now, out);
    return out;
  }

  handle(event: LayerEvent): LayerCommand[] {
    const out: LayerCommand[] = [];
    if (!this.#started) out.push(...this.start());
    if (this.#done) return out;
    try {
      this.#handle(event, out);
    } catch (e) {
      // A bug here must cost this connection only: its flows end with the reason, all sides close.
      const message = `HTTP/2 to HTTP/1.1 translation failed: ${(e as Error).message ?? String(e)}`;
      out.push({ type: "log", level: "error", message });
      for (const ex of this.#streams.values()) this.#fail(ex, message, event.now, out);
      this.#closeAll(out, true);
    }
    return out;
  }

  #handle(event: LayerEvent, out: LayerCommand[]): void {
    const now = event.now;
    switch (event.type) {
      case "data":
        if (event.from === "client") {
          for (const ev of this.down.receive(event.data, now)) this.#fromClient(ev, now, out);
        } else this.#upstreamData(event.conn, event.data, now, out);
        break;
      case "eof":
      case "error": {
        const what = event.type === "eof" ? "closed the connection" : `connection failed: ${event.message}`;
        if (event.from === "client") this.#clientGone(`client ${what}`, now, out);
        else this.#upstreamEnded(event.conn, event.type === "eof", `server ${what}`, now, out);
        break;
      }
      case "server-connected": {
        const conn = this.#conn(event.conn);
        if (!conn) break;
        conn.state = "open";
        conn.remote = event.address;
        conn.connectedAt = now;
        if (this.#o.server.peerAddress === undefined) {
          this.#o.server.peerAddress = event.address;
          this.#o.server.timestampConnected = now;
        }
        break;
      }
      case "server-failed": {
        const conn = this.#conn(event.conn);
        if (!conn) break;
        this.#conns.delete(conn.id);
        conn.state = "closed";
        this.#lastFailure = `cannot connect to ${formatHostPort(this.#o.server.address)}: ${event.message}`;
        out.push({ type: "log", level: "warn", message: this.#lastFailure });
        if (this.#conns.size === 0) {
          // Nothing left to carry the waiting requests: answer them.
          for (const ex of this.#queue) this.#answerLocally(ex, 502, this.#lastFailure, now, out);
          this.#queue = [];
        }
        break;
      }
      case "timer":
        for (const ev of this.down.timer(now)) this.#fromClient(ev, now, out);
        this.#armed = null;
        this.#serverTimeouts(now, out);
        break;
      case "hook-result":
        if (event.stream !== undefined) this.#onVerdict(event.stream, event.verdict, now, out);
        break;
      case "response-hook-result":
        if (event.stream !== undefined) this.#onResponseVerdict(event.stream, event.verdict, now, out);
        break;
      default:
        break;
    }
    this.#assign(now, out);
    this.#flush(now, out);
  }

  #conn(id: number | undefined): Upstream | undefined {
    return id === undefined ? undefined : this.#conns.get(id);
  }

  // ---- client side -------------------------------------------------------------------------

  #fromClient(ev: Http2Event, now: number, out: LayerCommand[]): void {
    switch (ev.type) {
      case "headers": {
        if (ev.kind === "request") return this.#request(ev.streamId, ev.headers, ev.endStream, now, out);
        const ex = this.#streams.get(ev.streamId);
        if (!ex) return;
        ex.flow.request.trailers = regularFields(ev.headers);
        if (ex.framing === "chunked") {
          ex.trailers = ev.headers.filter(([n]) => !n.startsWith(":") && !NOT_IN_TRAILERS.has(n));
        }
        this.#requestBody(ex, EMPTY, true, now, out);
        return;
      }
      case "data": {
        const ex = this.#streams.get(ev.streamId);
        if (!ex) {
          this.down.consume(ev.streamId, ev.data.byteLength);
          return;
        }
        appendRecordBody(ex.flow.request, ev.data, this.#o.bodyLimit);
        ex.owed += ev.data.byteLength;
        this.#requestBody(ex, ev.data, ev.endStream, now, out);
        return;
      }
      case "reset": {
        const ex = this.#streams.get(ev.streamId);
        if (!ex) return;
        const message = ev.remote
          ? `client reset the stream (${errorName(ev.code)})`
          : `stream reset by the proxy (${errorName(ev.code)}): ${ev.message ?? "client error"}`;
        this.#detach(ex, out);
        this.#fail(ex, message, now, out);
        return;
      }
      case "goaway":
        if (ev.remote) {
          this.#goingAway = true;
          return;
        }
        out.push({
          type: "log",
          level: "warn",
          message: `HTTP/2 connection error from client ${formatHostPort(this.#o.client.address)}: ${
            errorName(ev.code)
          } ${ev.debug}`,
        });
        for (const ex of [...this.#streams.values()]) {
          this.#fail(ex, `client connection error: ${errorName(ev.code)} ${ev.debug}`, now, out);
        }
        this.#closeAll(out, false);
        return;
      default:
        return;
    }
  }

  #request(
    streamId: number,
    headers: HeaderField[],
    endStream: boolean,
    now: number,
    out: LayerCommand[],
  ): void {
    this.#streamsSeen++;
    const flow = this.#newFlow(streamId, headers, now);
    const method = flow.request.method;
    const ex: Exchange = {
      id: streamId,
      flow,
      method,
      head: EMPTY,
      framing: "none",
      pending: [],
      trailers: null,
      requestDone: endStream,
      conn: null,
      owed: 0,
      responseStarted: false,
      responseDone: false,
      retried: false,
      abandoned: false,
      hook: null,
      h2Headers: headers,
      endAtHead: endStream,
      heldBytes: 0,
      respHold: null,
    };
    this.#streams.set(streamId, ex);
    out.push({ type: "flow", event: "start", flow });
    if (endStream) flow.request.timestampEnd = now;
    if (method === "CONNECT") {
      this.#answerLocally(ex, 501, "CONNECT over HTTP/2 cannot be relayed to an HTTP/1.1 upstream", now, out);
      return;
    }
    const translated = requestHead(headers, endStream, this.#o.server, method);
    if (typeof translated === "string") {
      this.#answerLocally(ex, 400, translated, now, out);
      return;
    }
    ex.head = translated.head;
    ex.framing = translated.framing;
    if (this.#conns.size === 0 && this.#lastFailure !== "") {
      // Every connection attempt failed: no use waiting.
      this.#answerLocally(ex, 502, this.#lastFailure, now, out);
      return;
    }
    if (this.#o.requestHook) {
      // Held (not queued) until the hook has spoken; the body collects in `pending`.
      ex.hook = "holding";
      if (endStream) this.#askHook(ex, out);
      return;
    }
    this.#queue.push(ex);
  }

  /** Body bytes (or the end) of a request: sent when it has a connection, kept otherwise. */
  #requestBody(ex: Exchange, data: Uint8Array, end: boolean, now: number, out: LayerCommand[]): void {
    if (ex.abandoned || ex.flow.timestampEnd !== undefined && ex.conn === null) {
      if (end) this.#requestEnded(ex, now);
      return;
    }
    if (ex.conn !== null && ex.conn.state === "open") {
      const bytes = concatBytes(this.#bodyBytes(ex, data), end ? this.#lastBytes(ex) : EMPTY);
      if (bytes.byteLength > 0) out.push({ type: "send", to: "server", data: bytes, conn: ex.conn.id });
      ex.conn.progress = now;
    } else if (data.byteLength > 0) ex.pending.push(data.slice());
    if (end) this.#requestEnded(ex, now);
    if (ex.hook === "holding") {
      // Held bytes are not given back to the client's window: ask before it would shut.
      ex.heldBytes += data.byteLength;
      if (end || ex.heldBytes >= Math.min(this.#o.bodyLimit, STREAM_WINDOW)) this.#askHook(ex, out);
    }
  }

  #requestEnded(ex: Exchange, now: number): void {
    if (ex.requestDone && ex.flow.request.timestampEnd !== undefined) return;
    ex.requestDone = true;
    ex.flow.request.timestampEnd = now;
  }

  /** Body bytes as they go on the wire. */
  #bodyBytes(ex: Exchange, data: Uint8Array): Uint8Array {
    if (data.byteLength === 0) return EMPTY;
    if (ex.framing === "length") return data;
    if (ex.framing === "none") return EMPTY; // the codec refuses DATA past content-length 0
    const size = encoder.encode(`${data.byteLength.toString(16)}\r\n`);
    const out = new Uint8Array(size.byteLength + data.byteLength + 2);
    out.set(size);
    out.set(data, size.byteLength);
    out.set([13, 10], size.byteLength + data.byteLength);
    return out;
  }

  /** What ends the request body: the last chunk (with trailers) for chunked framing. */
  #lastBytes(ex: Exchange): Uint8Array {
    if (ex.framing !== "chunked") return EMPTY;
    let text = "0\r\n";
    for (const [name, value] of ex.trailers ?? []) {
      if (TOKEN.test(name) && !VALUE_FORBIDDEN.test(value)) text += `${name}: ${value}\r\n`;
    }
    return latin1Bytes(text + "\r\n");
  }

  // ---- the pool ----------------------------------------------------------------------------

  #open(out: LayerCommand[]): void {
    const id = this.#nextConn++;
    this.#conns.set(id, {
      id,
      state: "connecting",
      remote: null,
      connectedAt: 0,
      exchange: null,
      buf: EMPTY,
      head: null,
      decoder: null,
      reusable: false,
      served: 0,
      answered: false,
      paused: false,
      progress: 0,
    });
    out.push({ type: "open-server", address: this.#o.server.address, conn: id });
  }

  /** Gives waiting requests idle connections, and opens connections for them within the limit. */
  #assign(now: number, out: LayerCommand[]): void {
    if (this.#done) return;
    for (let guard = 0; guard < 10_000; guard++) {
      while (this.#queue.length > 0 && this.#queue[0]!.flow.timestampEnd !== undefined) this.#queue.shift();
      if (this.#queue.length === 0) return;
      let idle: Upstream | null = null;
      let connecting = 0;
      for (const conn of this.#conns.values()) {
        if (conn.state === "open" && conn.exchange === null) {
          idle = conn;
          break;
        }
        if (conn.state === "connecting") connecting++;
      }
      if (idle) {
        this.#send(this.#queue.shift()!, idle, now, out);
        continue;
      }
      if (connecting < this.#queue.length && this.#conns.size < this.#poolSize) {
        this.#open(out);
        continue;
      }
      return;
    }
  }

  /** Starts an exchange on an idle connection: the head and what came of the body so far. */
  #send(ex: Exchange, conn: Upstream, now: number, out: LayerCommand[]): void {
    conn.exchange = ex;
    conn.progress = now;
    conn.head = null;
    conn.decoder = null;
    conn.answered = false;
    conn.reusable = false;
    ex.conn = conn;
    if (conn.remote) {
      ex.flow.server = {
        ...ex.flow.server,
        peerAddress: conn.remote,
        timestampConnected: conn.connectedAt,
      };
    }
    const parts = [ex.head, ...ex.pending.map((d) => this.#bodyBytes(ex, d))];
    if (ex.requestDone) parts.push(this.#lastBytes(ex));
    ex.pending = [];
    let size = 0;
    for (const p of parts) size += p.byteLength;
    const bytes = new Uint8Array(size);
    let at = 0;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.byteLength;
    }
    out.push({ type: "send", to: "server", data: bytes, conn: conn.id });
  }

  /** Closes `conn` and forgets it. */
  #drop(conn: Upstream, reset: boolean, out: LayerCommand[]): void {
    if (conn.state !== "closed") out.push({ type: "close", to: "server", reset, conn: conn.id });
    conn.state = "closed";
    conn.exchange = null;
    this.#conns.delete(conn.id);
  }

  /** The exchange leaves its connection mid-way: that connection cannot carry another request. */
  #detach(ex: Exchange, out: LayerCommand[]): void {
    this.#queue = this.#queue.filter((q) => q !== ex);
    const conn = ex.conn;
    ex.conn = null;
    if (conn && conn.exchange === ex) this.#drop(conn, false, out);
  }

  // ---- upstream side -----------------------------------------------------------------------

  #upstreamData(id: number | undefined, data: Uint8Array, now: number, out: LayerCommand[]): void {
    const conn = this.#conn(id);
    if (!conn || conn.state === "closed") return;
    const ex = conn.exchange;
    if (!ex) {
      // Bytes nobody asked for (or after a complete response): the connection is not usable.
      out.push({
        type: "log",
        level: "info",
        message: `server ${formatHostPort(this.#o.server.address)} sent ${data.byteLength} bytes ` +
          "on an idle connection: closed",
      });
      this.#drop(conn, false, out);
      return;
    }
    conn.answered = true;
    conn.progress = now;
    conn.buf = conn.buf.byteLength === 0 ? data : concatBytes(conn.buf, data);
    try {
      this.#parse(conn, ex, now, out);
    } catch (e) {
      if (!(e instanceof Http1Error)) throw e;
      this.#drop(conn, true, out);
      this.#upstreamFailed(ex, `server sent a bad response: ${e.message}`, now, out);
    }
  }

  #parse(conn: Upstream, ex: Exchange, now: number, out: LayerCommand[]): void {
    for (let guard = 0; guard < 1000 && conn.exchange === ex; guard++) {
      if (conn.head === null) {
        const parsed = parseResponseHead(conn.buf);
        if (parsed === null) return;
        conn.buf = conn.buf.subarray(parsed.size);
        const head = parsed.head;
        if (head.status < 200) {
          if (head.status === 101) throw new Http1Error(502, "101 Switching Protocols cannot go over HTTP/2");
          if (!ex.responseStarted) {
            this.down.sendHeaders(
              ex.id,
              [[":status", String(head.status)], ...responseFields(head.headers)],
              false,
            );
          }
          continue;
        }
        const framing = responseFraming(ex.method, head);
        conn.head = head;
        conn.decoder = new BodyDecoder(framing);
        conn.reusable = keepAlive(head) && framing.kind !== "close";
        ex.flow.response = {
          status: head.status,
          reason: head.reason,
          httpVersion: head.version,
          headers: head.headers,
          body: emptyBody(),
          timestampStart: now,
        };
        const done = conn.decoder.done;
        out.push({ type: "flow", event: "update", flow: ex.flow });
        if (this.#o.responseHook) {
          ex.respHold = {
            headers: [[":status", String(head.status)], ...responseFields(head.headers)],
            chunks: [],
            trailers: null,
            end: false,
            asking: false,
            bytes: 0,
          };
          if (done) {
            this.#responseEnded(conn, ex, now, out);
            return;
          }
          continue;
        }
        ex.responseStarted = true;
        this.down.sendHeaders(
          ex.id,
          [[":status", String(head.status)], ...responseFields(head.headers)],
          done,
        );
        if (done) {
          this.#responseEnded(conn, ex, now, out);
          return;
        }
        continue;
      }
      const decoder = conn.decoder!;
      const { used, data, done } = decoder.push(conn.buf);
      conn.buf = conn.buf.subarray(used);
      // The last piece of a body without trailers carries END_STREAM (no empty DATA frame after).
      const endsHere = done && decoder.trailers.length === 0;
      const pieces = data.filter((piece) => piece.byteLength > 0);
      const held = ex.respHold;
      pieces.forEach((piece, i) => {
        appendRecordBody(ex.flow.response!, piece, this.#o.bodyLimit);
        if (held) {
          held.chunks.push(piece.slice());
          held.bytes += piece.byteLength;
        } else this.down.sendData(ex.id, piece, endsHere && i === pieces.length - 1);
      });
      if (held && !done && !held.asking && held.bytes >= this.#o.bodyLimit) {
        // Past the body limit: asked now, and the connection is not read until the verdict.
        this.#askResponseHook(ex, out);
        if (!conn.paused) {
          conn.paused = true;
          out.push({ type: "pause-reading", from: "server", conn: conn.id, paused: true });
        }
        return;
      }
      if (endsHere && pieces.length > 0) {
        this.#responseEnded(conn, ex, now, out);
        return;
      }
      if (!done) {
        if (!conn.paused && this.down.bufferedData(ex.id) > PAUSE_AT) {
          conn.paused = true;
          out.push({ type: "pause-reading", from: "server", conn: conn.id, paused: true });
        }
        return;
      }
      this.#finishBody(conn, ex, decoder, now, out);
      return;
    }
  }

  /** The response body is complete: trailers or END_STREAM to the client. */
  #finishBody(conn: Upstream, ex: Exchange, decoder: BodyDecoder, now: number, out: LayerCommand[]): void {
    const trailers = decoder.trailers;
    if (ex.respHold) {
      if (trailers.length > 0) {
        ex.flow.response!.trailers = trailers;
        const fields = trailers.map(([n, v]): HeaderField => [n.toLowerCase(), v]).filter(([n]) =>
          !NOT_IN_TRAILERS.has(n)
        );
        if (fields.length > 0) ex.respHold.trailers = fields;
      }
    } else if (trailers.length > 0) {
      ex.flow.response!.trailers = trailers;
      const fields = trailers.map(([n, v]): HeaderField => [n.toLowerCase(), v]).filter(([n]) =>
        !NOT_IN_TRAILERS.has(n)
      );
      if (fields.length > 0) this.down.sendTrailers(ex.id, fields);
      else this.down.sendData(ex.id, EMPTY, true);
    } else this.down.sendData(ex.id, EMPTY, true);
    this.#responseEnded(conn, ex, now, out);
  }

  #responseEnded(conn: Upstream, ex: Exchange, now: number, out: LayerCommand[]): void {
    ex.responseDone = true;
    if (ex.flow.response) ex.flow.response.timestampEnd = now;
    ex.conn = null;
    conn.exchange = null;
    if (!ex.requestDone) {
      // An early answer: the rest of the request body has nowhere to go, and the connection
      // cannot tell where it would have ended. The client is told to stop (RST_STREAM NO_ERROR
      // once the response is out, in #flush).
      ex.abandoned = true;
      this.#drop(conn, false, out);
    } else if (!conn.reusable || conn.buf.byteLength > 0 || conn.state !== "open") {
      this.#drop(conn, false, out);
    } else {
      conn.served++;
      conn.head = null;
      conn.decoder = null;
      if (conn.paused) {
        conn.paused = false;
        out.push({ type: "pause-reading", from: "server", conn: conn.id, paused: false });
      }
    }
    const held = ex.respHold;
    if (held) {
      // The connection is free; the flow ends once the response hook's verdict is carried out.
      held.end = true;
      if (!held.asking) this.#askResponseHook(ex, out);
      return;
    }
    this.#endFlow(ex, now, out);
  }

  /** An upstream connection ended (`eof`: FIN, else a failure). */
  #upstreamEnded(
    id: number | undefined,
    eof: boolean,
    message: string,
    now: number,
    out: LayerCommand[],
  ): void {
    const conn = this.#conn(id);
    if (!conn) return;
    const ex = conn.exchange;
    if (ex && eof && conn.decoder !== null) {
      // A body delimited by the end of the connection is complete now.
      try {
        conn.decoder.end();
        this.#drop(conn, false, out);
        this.#finishBody(conn, ex, conn.decoder, now, out);
        return;
      } catch { /* cut short: below */ }
    }
    this.#drop(conn, !eof, out);
    if (!ex) return;
    ex.conn = null;
    if (!conn.answered && conn.served > 0 && !ex.retried && ex.framing === "none" && ex.requestDone) {
      // The keep-alive race: the server closed an idle connection as the request went out.
      ex.retried = true;
      this.#queue.unshift(ex);
      return;
    }
    const what = !conn.answered
      ? `${message} before answering`
      : conn.head === null
      ? `${message} in the response head`
      : `${message} in the response body`;
    this.#upstreamFailed(ex, what, now, out);
  }

  /** The exchange's connection failed: 502 before the response started, a reset after. */
  #upstreamFailed(ex: Exchange, message: string, now: number, out: LayerCommand[]): void {
    ex.conn = null;
    if (!ex.responseStarted) {
      this.#answerLocally(ex, 502, message, now, out);
      return;
    }
    this.down.reset(ex.id, ErrorCode.INTERNAL_ERROR);
    this.#fail(ex, message, now, out);
  }

  /** Fails the exchanges whose connection made no progress for `serverTimeout`. */
  #serverTimeouts(now: number, out: LayerCommand[]): void {
    const limit = this.#o.serverTimeout;
    if (!limit) return;
    for (const conn of [...this.#conns.values()]) {
      const ex = conn.exchange;
      if (!ex || conn.paused || conn.state !== "open" || now < conn.progress + limit) continue;
      const address = formatHostPort(conn.remote ?? this.#o.server.address);
      const seconds = `${limit / 1000} s`;
      // A server that stopped reading may have writes pending toward it: only a reset ends those.
      this.#drop(conn, true, out);
      ex.conn = null;
      if (!ex.responseStarted) {
        this.#answerLocally(ex, 504, `${address} sent no response for ${seconds}`, now, out);
      } else {
        this.down.reset(ex.id, ErrorCode.INTERNAL_ERROR);
        this.#fail(ex, `${address} sent nothing for ${seconds} in the middle of the response body`, now, out);
      }
    }
  }

  // ---- failures and the end ----------------------------------------------------------------

  // ---- hooks -------------------------------------------------------------------------------

  #askHook(ex: Exchange, out: LayerCommand[]): void {
    ex.hook = "asking";
    out.push({ type: "request-hook", flow: ex.flow, stream: ex.id });
  }

  /** Carries out the request hook's verdict on stream `id`'s held request. */
  #onVerdict(id: number, verdict: RequestVerdict, now: number, out: LayerCommand[]): void {
    const ex = this.#streams.get(id);
    if (!ex || ex.hook !== "asking" || ex.flow.timestampEnd !== undefined) return;
    ex.hook = null;
    if (verdict === "kill") {
      this.down.reset(ex.id, ErrorCode.CANCEL);
      this.#fail(ex, "killed by the request hook", now, out);
      return;
    }
    if (verdict !== undefined && !("change" in verdict)) {
      if (verdict.replay) ex.flow.replay = verdict.replay;
      ex.pending = [];
      this.#sendMade(ex, verdict, now, out);
      return;
    }
    if (verdict !== undefined) {
      const problem = this.#applyRequestChange(ex, verdict.change);
      if (problem) {
        this.#answerLocally(
          ex,
          502,
          `the request as an addon changed it cannot be sent: ${problem}`,
          now,
          out,
        );
        return;
      }
    }
    this.#queue.push(ex);
  }

  /**
   * Rebuilds a held request's HTTP/1.1 head from an addon's change (as an HTTP/2 header list
   * first, then translated like any other); a replaced body gets its Content-Length. The stream
   * still goes to this layer's upstream whatever host the change names (its Host field says it).
   */
  #applyRequestChange(ex: Exchange, change: RequestChange["change"]): string | undefined {
    const r = ex.flow.request;
    const defaultPort = r.scheme === "https" ? 443 : 80;
    const bare = change.host.includes(":") ? `[${change.host}]` : change.host;
    const authority = change.port === defaultPort ? bare : `${bare}:${change.port}`;
    const path = change.path === "" ? "/" : change.path;
    let fields = change.headers.map(([n, v]): [string, string] => [n.toLowerCase(), v]).filter(([n]) =>
      !n.startsWith(":") && n !== "host"
    );
    let end = ex.endAtHead;
    if (change.body !== undefined && ex.requestDone) {
      fields = [...fields.filter(([n]) => n !== "content-length" && n !== "transfer-encoding"), [
        "content-length",
        String(change.body.byteLength),
      ]];
      ex.pending = change.body.byteLength > 0 ? [change.body] : [];
      end = false;
      r.body = {
        content: change.body.slice(0, this.#o.bodyLimit),
        size: change.body.byteLength,
        truncated: change.body.byteLength > this.#o.bodyLimit,
      };
    }
    const headers: HeaderField[] = [
      [":method", change.method],
      [":scheme", r.scheme],
      [":authority", authority],
      [":path", path],
      ...fields,
    ];
    const translated = requestHead(headers, end, this.#o.server, change.method);
    if (typeof translated === "string") return translated;
    ex.head = translated.head;
    ex.framing = translated.framing;
    ex.method = change.method;
    r.method = change.method;
    r.host = change.host;
    r.port = change.port;
    r.path = path;
    r.url = `${r.scheme}://${authority}${path}`;
    r.headers = fields;
    return undefined;
  }

  /** Answers a stream with a response a hook made; the flow ends without an error. */
  #sendMade(ex: Exchange, made: LocalResponse, now: number, out: LayerCommand[]): void {
    this.#queue = this.#queue.filter((q) => q !== ex);
    if (ex.conn) {
      const conn = ex.conn;
      ex.conn = null;
      this.#drop(conn, true, out);
    }
    ex.respHold = null;
    const headOnly = ex.method === "HEAD" || made.status === 204 || made.status === 304;
    const fields = made.headers.map(([n, v]): HeaderField => [n.toLowerCase(), v]).filter(([n]) =>
      !n.startsWith(":") && !HOP_BY_HOP.has(n)
    );
    const body = headOnly ? EMPTY : made.body;
    if (this.down.hasStream(ex.id)) {
      ex.responseStarted = true;
      if (
        this.down.sendHeaders(ex.id, [[":status", String(made.status)], ...fields], body.byteLength === 0)
      ) {
        if (body.byteLength > 0) this.down.sendData(ex.id, body, true);
      }
    }
    ex.flow.response = {
      status: made.status,
      reason: made.reason,
      httpVersion: "HTTP/2.0",
      headers: fields.map(([n, v]): [string, string] => [n, v]),
      body: {
        content: body.slice(0, this.#o.bodyLimit),
        size: body.byteLength,
        truncated: body.byteLength > this.#o.bodyLimit,
      },
      timestampStart: now,
      timestampEnd: now,
    };
    ex.responseDone = true;
    if (!ex.requestDone) ex.abandoned = true;
    this.#endFlow(ex, now, out);
  }

  #askResponseHook(ex: Exchange, out: LayerCommand[]): void {
    ex.respHold!.asking = true;
    out.push({ type: "response-hook", flow: ex.flow, stream: ex.id });
  }

  /** Carries out the response hook's verdict on stream `id`'s held response. */
  #onResponseVerdict(id: number, verdict: ResponseVerdict, now: number, out: LayerCommand[]): void {
    const ex = this.#streams.get(id);
    const held = ex?.respHold;
    if (!ex || !held || !held.asking || ex.flow.timestampEnd !== undefined) return;
    if (verdict === "kill") {
      this.down.reset(ex.id, ErrorCode.CANCEL);
      this.#detach(ex, out);
      this.#fail(ex, "killed by an addon", now, out);
      return;
    }
    if (verdict !== undefined && "respond" in verdict) {
      this.#sendMade(ex, verdict.respond, now, out);
      return;
    }
    const response = ex.flow.response!;
    if (verdict !== undefined) {
      const change = verdict.change;
      let fields = change.headers.map(([n, v]): HeaderField => [n.toLowerCase(), v]).filter(([n]) =>
        !n.startsWith(":") && !HOP_BY_HOP.has(n)
      );
      const noBody = ex.method === "HEAD" || change.status === 204 || change.status === 304;
      if (change.body !== undefined && held.end && !noBody) {
        fields = [...fields.filter(([n]) => n !== "content-length"), [
          "content-length",
          String(change.body.byteLength),
        ]];
        held.chunks = change.body.byteLength > 0 ? [change.body] : [];
        response.body = {
          content: change.body.slice(0, this.#o.bodyLimit),
          size: change.body.byteLength,
          truncated: change.body.byteLength > this.#o.bodyLimit,
        };
      }
      held.headers = [[":status", String(change.status)], ...fields];
      response.status = change.status;
      response.reason = change.reason;
      response.headers = change.headers;
    }
    ex.respHold = null;
    ex.responseStarted = true;
    const endNow = held.end && held.chunks.length === 0 && held.trailers === null;
    this.down.sendHeaders(ex.id, held.headers, endNow);
    held.chunks.forEach((chunk, i) => {
      this.down.sendData(ex.id, chunk, held.end && held.trailers === null && i === held.chunks.length - 1);
    });
    if (held.end) {
      if (held.trailers !== null) this.down.sendTrailers(ex.id, held.trailers);
      else if (!endNow && held.chunks.length === 0) this.down.sendData(ex.id, EMPTY, true);
      this.#endFlow(ex, now, out);
      return;
    }
    // The rest of the body streams on as it comes.
    const conn = ex.conn;
    if (conn && conn.paused) {
      conn.paused = false;
      out.push({ type: "pause-reading", from: "server", conn: conn.id, paused: false });
    }
  }

  #clientGone(message: string, now: number, out: LayerCommand[]): void {
    for (const ex of [...this.#streams.values()]) this.#fail(ex, message, now, out);
    this.#closeAll(out, false);
  }

  /** Answers a stream itself (`status` with the reason as text) and fails its flow. */
  #answerLocally(ex: Exchange, status: number, reason: string, now: number, out: LayerCommand[]): void {
    this.#queue = this.#queue.filter((q) => q !== ex);
    // A text body with the reason, or a trailers-only gRPC error for a gRPC call.
    const answer = localAnswer(status, reason, ex.flow.request.headers);
    const { headers, body } = answer;
    if (this.down.hasStream(ex.id) && !ex.responseStarted) {
      ex.responseStarted = true;
      if (this.down.sendHeaders(ex.id, headers, answer.trailersOnly) && !answer.trailersOnly) {
        this.down.sendData(ex.id, body, true);
      }
      ex.flow.response = {
        status: answer.status,
        reason: REASONS[answer.status] ?? "",
        httpVersion: "HTTP/2.0",
        headers: headers.slice(1).map(([n, v]) => [n, v]),
        body: { content: body, size: body.byteLength, truncated: false },
        timestampStart: now,
        timestampEnd: now,
      };
    }
    ex.responseDone = true;
    if (!ex.requestDone) ex.abandoned = true;
    this.#fail(ex, reason, now, out);
  }

  #fail(ex: Exchange, message: string, now: number, out: LayerCommand[]): void {
    ex.pending = [];
    ex.hook = null;
    ex.respHold = null;
    if (ex.flow.timestampEnd === undefined) ex.flow.error = { message, timestamp: now };
    this.#endFlow(ex, now, out);
  }

  #endFlow(ex: Exchange, now: number, out: LayerCommand[]): void {
    if (ex.flow.timestampEnd !== undefined) return;
    ex.flow.timestampEnd = now;
    endHttpFlow(ex.flow);
    out.push({ type: "flow", event: "end", flow: ex.flow });
  }

  #closeAll(out: LayerCommand[], reset: boolean): void {
    if (this.#done) return;
    this.#done = true;
    this.#retire();
    const toClient = this.down.output();
    if (toClient.byteLength > 0) out.push({ type: "send", to: "client", data: toClient });
    for (const conn of [...this.#conns.values()]) this.#drop(conn, reset, out);
    this.#queue = [];
    out.push({ type: "close", to: "client", reset });
  }

  // ---- after every event -------------------------------------------------------------------

  /**
   * Gives back the credit of request bytes that went out, resumes paused connections whose
   * stream drained, tells clients to stop uploads nobody reads, drops finished streams, writes
   * the codec's output, closes when going away with nothing left, and re-arms the timer.
   */
  #flush(now: number, out: LayerCommand[]): void {
    if (this.#done) return;
    for (const ex of [...this.#streams.values()]) {
      const waiting = ex.conn === null && !ex.abandoned && ex.flow.timestampEnd === undefined &&
        !(ex.respHold && ex.requestDone);
      if (ex.owed > 0 && !waiting) {
        this.down.consume(ex.id, ex.owed);
        ex.owed = 0;
      }
      const conn = ex.conn;
      if (conn && conn.paused && !ex.respHold && this.down.bufferedData(ex.id) <= PAUSE_AT / 2) {
        conn.paused = false;
        out.push({ type: "pause-reading", from: "server", conn: conn.id, paused: false });
      }
      const open = this.down.hasStream(ex.id);
      if (open && ex.abandoned && ex.responseDone && this.down.bufferedData(ex.id) === 0) {
        // RFC 9113 §8.1: a complete response, then "stop sending the request".
        this.down.reset(ex.id, ErrorCode.NO_ERROR);
      }
      if (!this.down.hasStream(ex.id) && ex.owed === 0 && ex.conn === null) {
        if (ex.flow.timestampEnd === undefined) this.#fail(ex, "stream closed", now, out);
        this.#streams.delete(ex.id);
      }
    }
    if (this.#goingAway && this.#streams.size === 0) {
      this.#closeAll(out, false);
      return;
    }
    const toClient = this.down.output();
    if (toClient.byteLength > 0) out.push({ type: "send", to: "client", data: toClient });
    if (this.down.failed) {
      this.#closeAll(out, false);
      return;
    }
    let next = this.down.deadline();
    const limit = this.#o.serverTimeout;
    if (limit) {
      for (const conn of this.#conns.values()) {
        if (!conn.exchange || conn.paused || conn.state !== "open") continue;
        const at = conn.progress + limit;
        if (next === null || at < next) next = at;
      }
    }
    // An armed timer that comes too early re-arms (progress moved the deadline later).
    if (next !== null && (this.#armed === null || next < this.#armed)) {
      this.#armed = next;
      out.push({ type: "timer", delay: Math.max(0, next - now) });
    }
  }

  #newFlow(streamId: number, headers: HeaderField[], now: number): HttpFlow {
    return streamFlow(this.#o, streamId, headers, now);
  }
}

/**
 * The HTTP/1.1 request head for an HTTP/2 request, and how its body is framed; a string says why
 * it cannot be written as HTTP/1.1.
 */
export function requestHead(
  headers: readonly HeaderField[],
  endStream: boolean,
  server: ServerInfo,
  method: string,
): { head: Uint8Array; framing: "none" | "length" | "chunked" } | string {
  let authority: string | undefined;
  let path: string | undefined;
  let hostField: string | undefined;
  const fields: Headers1 = [["host", ""]];
  const cookies: string[] = [];
  let cookieAt = -1;
  let length = false;
  for (const [name, value] of headers) {
    if (name.startsWith(":")) {
      if (name === ":authority") authority = value;
      else if (name === ":path") path = value;
      continue;
    }
    if (name === "host") {
      hostField ??= value;
      continue;
    }
    if (name === "te") {
      if (value.trim().toLowerCase() === "trailers") fields.push([name, value]);
      continue;
    }
    if (HOP_BY_HOP.has(name)) continue;
    if (name === "cookie") {
      // RFC 9113 §8.2.3: crumbs split over several fields are joined for HTTP/1.1.
      if (cookieAt < 0) {
        cookieAt = fields.length;
        fields.push(["cookie", ""]);
      }
      cookies.push(value);
      continue;
    }
    if (name === "content-length") length = true;
    fields.push([name, value]);
  }
  if (cookieAt >= 0) fields[cookieAt] = ["cookie", cookies.join("; ")];
  const host = authority ?? hostField ?? server.hostname ?? formatHostPort(server.address);
  fields[0] = ["host", host];
  let framing: "none" | "length" | "chunked";
  if (length) framing = "length";
  else if (endStream) {
    framing = "none";
    if (BODY_METHODS.has(method)) fields.push(["content-length", "0"]);
  } else {
    framing = "chunked";
    fields.push(["transfer-encoding", "chunked"]);
  }
  if (path === undefined || path === "") return "the request has no :path";
  try {
    return {
      head: serializeRequestHead({ method, target: path, version: "HTTP/1.1", headers: fields }),
      framing,
    };
  } catch (e) {
    return `the request cannot be written as HTTP/1.1: ${(e as Error).message}`;
  }
}

/** HTTP/1.1 response fields as HTTP/2 fields: lowercase, without connection-specific ones. */
export function responseFields(headers: Headers1): HeaderField[] {
  const named = new Set<string>();
  for (const value of headerValues(headers, "connection")) {
    for (const token of value.split(",")) named.add(token.trim().toLowerCase());
  }
  const out: HeaderField[] = [];
  for (const [name, value] of headers) {
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || named.has(lower)) continue;
    out.push([lower, value]);
  }
  return out;
}

/** Whether a response lets the connection carry another request. */
function keepAlive(head: ResponseHead): boolean {
  const tokens = new Set<string>();
  for (const value of headerValues(head.headers, "connection")) {
    for (const token of value.split(",")) tokens.add(token.trim().toLowerCase());
  }
  if (tokens.has("close")) return false;
  return head.version === "HTTP/1.1" || tokens.has("keep-alive");
}

function latin1Bytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
  return out;
}
