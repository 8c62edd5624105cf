/**
 * HTTP/2 relay layer: two sans-IO {@link Http2Connection}s, one in the server role toward the
 * client and one in the client role toward the upstream, with each client stream mapped to one
 * upstream stream. Header lists go across as they arrived (wire order, pseudo-fields first),
 * bodies and trailers stream through, resets and GOAWAY are passed on, and every stream is
 * recorded as one {@link HttpFlow} (`HTTP/2.0`, with its client-side stream id).
 *
 * Flow control crosses the proxy: body bytes taken from one side are given back to that side
 * (`consume()`, which re-opens its windows) only once the other side has actually sent them, i.e.
 * once they left that connection's per-stream queue. A slow reader on one side therefore stops
 * the other side's sender at its stream window (and all of them at the connection window), and
 * the proxy holds at most those windows per connection.
 *
 * Events: bytes, end of stream and errors from either side; the result of `open-server` (h2c,
 * where the layer opens the upstream itself); `timer` (SETTINGS acknowledgement deadlines).
 * Commands: send/close a side, open the server, flow start/update/end, log lines, timer.
 *
 * Invariants:
 * - Every stream that got a flow `start` gets exactly one flow `end`, with an `error` when the
 *   stream was reset by either side or by the proxy, or a connection failed under it.
 * - A connection error on one side (its peer broke the protocol) ends that side with the GOAWAY
 *   the codec wrote; the other side gets a graceful GOAWAY and its open streams are reset.
 * - Once either side sent GOAWAY, the layer closes both connections when no stream is left.
 * @module
 */
import {
  type ConnectionOptions,
  Http2Connection,
  type Http2Event,
  type Http2Stats,
} from "./http2/connection.ts";
import { ErrorCode, errorName } from "./http2/frames.ts";
import type { HeaderField } from "./http2/hpack.ts";
import type { BodyRecord, ClientInfo, HostPort, HttpFlow, ServerInfo, TlsInfo } from "../flows/flow.ts";
import { appendRecordBody, endHttpFlow, formatHostPort } from "../flows/flow.ts";
import type { Layer, LayerCommand, LayerEvent } from "./layer.ts";
import { localAnswer } from "./http2_local_answer.ts";
import type { LocalResponse, RequestChange, RequestVerdict, ResponseVerdict } from "./request_hook.ts";

/** Options of {@link Http2Layer}. */
export interface Http2LayerOptions {
  /** `https` inside TLS, `http` for prior-knowledge h2c. */
  scheme: "http" | "https";
  client: ClientInfo;
  /** The upstream (the original destination, or the CONNECT target). */
  server: ServerInfo;
  tls?: TlsInfo;
  /** True when the driver already has the server connection; otherwise the layer opens it. */
  serverConnected: boolean;
  /** Bytes of each body kept in a flow. */
  bodyLimit: number;
  /** Makes flow ids. */
  newId: () => string;
  now: number;
  /** Codec settings toward the client (server role). */
  clientSide?: ConnectionOptions;
  /** Codec settings toward the upstream (client role). */
  serverSide?: ConnectionOptions;
  /** Where the proxy sums the codec counters of its HTTP/2 connections (`ProxyStats.http2`). */
  counters?: Http2Counters;
  /**
   * Hold each stream's request (head, and body up to `bodyLimit`) for the request hook: a
   * `request-hook` command with the stream's id goes out and the request is not sent upstream
   * before the `hook-result` event for that stream. Other streams go on meanwhile.
   */
  requestHook?: boolean;
  /** Hold each stream's response the same way for the response hook (`response-hook`). */
  responseHook?: boolean;
}

/** A proxy's HTTP/2 counters: each side's codec counters summed over its relays, live and ended. */
export interface Http2ProxyStats {
  /** HTTP/2 client connections relayed. */
  connections: number;
  /** Toward clients: streams they opened, resets, GOAWAYs we sent by reason, floods cut off by kind. */
  client: Http2Stats;
  /** Toward upstreams (the same counters, for the connections the proxy opened). */
  upstream: Http2Stats;
}

function emptyStats(): Http2Stats {
  return {
    framesIn: 0,
    framesOut: 0,
    streamsOpened: 0,
    resetsReceived: 0,
    resetsSent: 0,
    streamErrors: 0,
    connectionErrors: {},
    headerListsTooLarge: 0,
    floodsStopped: 0,
    floods: {},
    goawaysSent: {},
    goawaysReceived: 0,
  };
}

/** Adds `b` into `a` (numbers added, per-name counts merged). */
function addStats(a: Http2Stats, b: Http2Stats): void {
  const sum = a as unknown as Record<string, number | Record<string, number>>;
  for (const [key, value] of Object.entries(b)) {
    if (typeof value === "number") sum[key] = (sum[key] as number) + value;
    else {
      const into = sum[key] as Record<string, number>;
      for (const [name, n] of Object.entries(value as Record<string, number>)) {
        into[name] = (into[name] ?? 0) + n;
      }
    }
  }
}

/**
 * Sums the codec counters of a proxy's HTTP/2 connections: a live connection is read when asked,
 * an ended one is added to the totals once (so nothing is counted per frame on the hot path).
 */
export class Http2Counters {
  #connections = 0;
  readonly #ended = { client: emptyStats(), upstream: emptyStats() };
  readonly #live = new Set<{ client: Http2Connection; upstream: Http2Connection | null }>();

  /** Starts counting one relay's connections; the function returned ends it (idempotent). */
  track(client: Http2Connection, upstream: Http2Connection | null): () => void {
    const entry = { client, upstream };
    this.#connections++;
    this.#live.add(entry);
    return () => {
      if (!this.#live.delete(entry)) return;
      addStats(this.#ended.client, client.stats());
      if (upstream) addStats(this.#ended.upstream, upstream.stats());
    };
  }

  /** The totals now. */
  snapshot(): Http2ProxyStats {
    const client = emptyStats(), upstream = emptyStats();
    addStats(client, this.#ended.client);
    addStats(upstream, this.#ended.upstream);
    for (const live of this.#live) {
      addStats(client, live.client.stats());
      if (live.upstream) addStats(upstream, live.upstream.stats());
    }
    return { connections: this.#connections, client, upstream };
  }
}

/**
 * Each stream's receive window on both sides: 256 KiB (the codec's default 64 KiB window took
 * one window-update round trip per 64 KiB through two connections). The connection windows (1 MiB
 * by default) bound what the proxy holds per connection and direction whatever the stream count.
 */
const STREAM_WINDOW = 256 * 1024;

interface StreamPair {
  /** Client-side stream id. */
  down: number;
  /** Upstream stream id (null when it could not be opened). */
  up: number | null;
  flow: HttpFlow;
  /** Request body bytes taken from the client and not yet given back with consume(). */
  requestOwed: number;
  /** Response body bytes taken from the upstream and not yet given back. */
  responseOwed: number;
  requestDone: boolean;
  responseDone: boolean;
  /** Response headers were sent to the client (a failure after this is a reset, not a 502). */
  responseStarted: boolean;
  /**
   * A request waiting for the upstream's concurrency limit, with what came of it so far (its
   * body is not given back to the client until it is sent, so the client's windows bound it).
   */
  waiting: Held | null;
  /**
   * The request hook's part: `holding` while the request is held (in `waiting`, not queued)
   * and its body read, `asking` while the verdict is awaited, null once it is given (or never).
   */
  hook: "holding" | "asking" | null;
  /** Request body bytes held for the hook (given back to the client at once up to `bodyLimit`). */
  heldBytes: number;
  /** The response held for the response hook (nothing of it sent to the client yet). */
  heldResponse: (Held & { asking: boolean; bytes: number }) | null;
}

/** A message held by the layer: its header list, body chunks, whether it ended, its trailers. */
interface Held {
  headers: HeaderField[];
  chunks: Uint8Array[];
  end: boolean;
  trailers: HeaderField[] | null;
}

/** Fields that never go into an HTTP/2 header list (RFC 9113 §8.2.2). */
const CONNECTION_SPECIFIC = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
]);

/** Relays HTTP/2 between a client and an upstream and records each stream. */
export class Http2Layer implements Layer {
  readonly #o: Http2LayerOptions;
  /** Toward the client (server role). */
  readonly down: Http2Connection;
  /** Toward the upstream (client role). */
  readonly up: Http2Connection;
  readonly #byDown = new Map<number, StreamPair>();
  readonly #byUp = new Map<number, StreamPair>();
  #server: "connecting" | "open" | "failed" | "closed";
  #serverFailure = "";
  #started = false;
  #done = false;
  /** Either side sent GOAWAY (or the upstream is gone): close once no stream is left. */
  #goingAway = false;
  #armed: number | null = null;
  /** Requests waiting for room under the upstream's SETTINGS_MAX_CONCURRENT_STREAMS, oldest first. */
  #waiting: StreamPair[] = [];
  /** The upstream sent GOAWAY: no new upstream streams. */
  #upstreamGoaway = false;
  /** Client streams started on this connection. */
  #streamsSeen = 0;
  /** Adds this relay's counters to the proxy's totals (once, when it ends). */
  readonly #retire: () => void;

  constructor(options: Http2LayerOptions) {
    this.#o = options;
    this.down = new Http2Connection(
      "server",
      { initialWindowSize: STREAM_WINDOW, ...options.clientSide },
      options.now,
    );
    this.up = new Http2Connection(
      "client",
      { initialWindowSize: STREAM_WINDOW, ...options.serverSide },
      options.now,
    );
    this.#server = options.serverConnected ? "open" : "connecting";
    this.#retire = options.counters?.track(this.down, this.up) ?? (() => {});
  }

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

  /** Codec counters of both sides. */
  stats(): { client: Http2Stats; server: Http2Stats; streams: number } {
    return { client: this.down.stats(), server: this.up.stats(), streams: this.#byDown.size };
  }

  /** The commands that start the layer: our SETTINGS to both sides, opening the upstream (h2c). */
  start(): LayerCommand[] {
    this.#started = true;
    const out: LayerCommand[] = [];
    if (this.#server === "connecting") out.push({ type: "open-server", address: this.#o.server.address });
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
      // A bug here must cost this connection only: its flows end with the reason, both sides close.
      const message = `HTTP/2 relay failed: ${(e as Error).message ?? String(e)}`;
      out.push({ type: "log", level: "error", message });
      for (const pair of this.#byDown.values()) this.#fail(pair, message, event.now, out);
      this.#done = true;
      this.#retire();
      out.push({ type: "close", to: "server", reset: true }, { type: "close", to: "client", reset: true });
    }
    return out;
  }

  #handle(event: LayerEvent, out: LayerCommand[]): void {
    const now = event.now;
    switch (event.type) {
      case "data":
        if (event.from === "client") {
          for (const ev of this.down.receive(event.data, now)) this.#fromClient(ev, now, out);
        } else {
          for (const ev of this.up.receive(event.data, now)) this.#fromServer(ev, now, out);
        }
        break;
      case "eof":
      case "error": {
        const what = event.type === "eof" ? "closed the connection" : `connection failed: ${event.message}`;
        if (event.from === "client") this.#clientGone(`client ${what}`, now, out);
        else this.#serverGone(`server ${what}`, now, out);
        break;
      }
      case "server-connected":
        this.#server = "open";
        this.#o.server.peerAddress = event.address;
        this.#o.server.timestampConnected = now;
        break;
      case "server-failed":
        this.#server = "failed";
        this.#serverFailure = `cannot connect to ${formatHostPort(this.#o.server.address)}: ${event.message}`;
        out.push({ type: "log", level: "warn", message: this.#serverFailure });
        for (const pair of [...this.#byDown.values()]) {
          this.#answerLocally(pair, this.#serverFailure, now, out);
        }
        // With no stream yet (h2c: the connect fails before the client's first HEADERS), the
        // client's first stream is answered with the reason before the GOAWAY, so it sees why
        // (a GOAWAY first would refuse it with no reason); the head timeout bounds the wait.
        if (this.#byDown.size > 0 || this.#streamsSeen > 0) this.#goAwayUnreachable();
        break;
      case "timer":
        for (const ev of this.down.timer(now)) this.#fromClient(ev, now, out);
        for (const ev of this.up.timer(now)) this.#fromServer(ev, now, out);
        this.#armed = null;
        break;
      case "hook-result":
        if (event.stream !== undefined) this.#onVerdict(event.stream, event.verdict, now, out);
        break;
      case "response-hook-result":
        if (event.stream !== undefined) this.#onResponseVerdict(event.stream, event.verdict, now, out);
        break;
    }
    this.#flush(now, out);
  }

  // ---- client side -------------------------------------------------------------------------

  #fromClient(ev: Http2Event, now: number, out: LayerCommand[]): void {
    switch (ev.type) {
      case "headers": {
        if (ev.kind === "request") return this.#request(ev.streamId, ev.headers, ev.endStream, now, out);
        const pair = this.#byDown.get(ev.streamId);
        if (!pair) return;
        // Trailers (the only other kind a server-role connection reports).
        pair.flow.request.trailers = regularFields(ev.headers);
        if (pair.waiting) {
          pair.waiting.trailers = ev.headers;
          pair.waiting.end = true;
        } else if (pair.up !== null) this.up.sendTrailers(pair.up, ev.headers);
        this.#requestEnded(pair, now, out);
        if (pair.hook === "holding") this.#askHook(pair, out);
        return;
      }
      case "data": {
        const pair = this.#byDown.get(ev.streamId);
        if (!pair) {
          this.down.consume(ev.streamId, ev.data.byteLength);
          return;
        }
        appendRecordBody(pair.flow.request, ev.data, this.#o.bodyLimit);
        if (pair.hook !== null && pair.heldBytes < this.#o.bodyLimit) {
          // Held for the hook, up to the body limit (and the frame that crosses it): the
          // client's windows re-open at once (the proxy keeps these bytes, as the HTTP/1 layer
          // does), so a body the client's window could not hold whole still reaches the hook.
          pair.heldBytes += ev.data.byteLength;
          this.down.consume(ev.streamId, ev.data.byteLength);
        } else pair.requestOwed += ev.data.byteLength;
        if (pair.waiting) {
          pair.waiting.chunks.push(ev.data);
          if (ev.endStream) pair.waiting.end = true;
        } else if (pair.up !== null) this.up.sendData(pair.up, ev.data, ev.endStream);
        if (ev.endStream) this.#requestEnded(pair, now, out);
        if (pair.hook === "holding" && (ev.endStream || pair.heldBytes >= this.#o.bodyLimit)) {
          this.#askHook(pair, out);
        }
        return;
      }
      case "reset": {
        const pair = this.#byDown.get(ev.streamId);
        if (!pair) return;
        if (pair.up !== null) this.up.reset(pair.up, ev.remote ? ev.code : ErrorCode.CANCEL);
        const message = ev.remote
          ? `client reset the stream (${errorName(ev.code)})`
          : `stream reset by the proxy (${errorName(ev.code)}): ${ev.message ?? "client error"}`;
        this.#fail(pair, message, now, out);
        return;
      }
      case "goaway":
        if (ev.remote) {
          // The client opens no more streams: finish the open ones, then close.
          this.#goingAway = true;
          return;
        }
        // The client broke the protocol: the codec queued its GOAWAY; the upstream goes too.
        out.push({
          type: "log",
          level: "warn",
          message: `HTTP/2 connection error from client ${formatHostPort(this.#o.client.address)}: ${
            errorName(ev.code)
          } ${ev.debug}`,
        });
        for (const pair of [...this.#byDown.values()]) {
          if (pair.up !== null) this.up.reset(pair.up, ErrorCode.CANCEL);
          this.#fail(pair, `client connection error: ${errorName(ev.code)} ${ev.debug}`, now, out);
        }
        this.up.goaway(ErrorCode.NO_ERROR);
        this.#closeBoth(out);
        return;
      default:
        return; // settings, acks, writable: the credit pass in #flush handles windows
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
    const pair: StreamPair = {
      down: streamId,
      up: null,
      flow,
      requestOwed: 0,
      responseOwed: 0,
      requestDone: false,
      responseDone: false,
      responseStarted: false,
      waiting: null,
      hook: null,
      heldBytes: 0,
      heldResponse: null,
    };
    this.#byDown.set(streamId, pair);
    out.push({ type: "flow", event: "start", flow });
    if (endStream) {
      pair.requestDone = true;
      flow.request.timestampEnd = now;
    }
    if (this.#server === "failed" || this.#server === "closed") {
      this.#answerLocally(pair, this.#serverFailure || "the upstream connection is gone", now, out);
      if (this.#server === "failed") this.#goAwayUnreachable();
      return;
    }
    if (this.#o.requestHook) {
      // Held until the hook has spoken (not queued: #release queues it).
      pair.waiting = { headers, chunks: [], end: endStream, trailers: null };
      pair.hook = "holding";
      if (endStream) this.#askHook(pair, out);
      return;
    }
    if (!this.#upstreamGoaway && !this.up.failed && !this.up.canOpenStream()) {
      // The upstream's concurrency limit is reached: the request waits for a stream to end.
      pair.waiting = { headers, chunks: [], end: endStream, trailers: null };
      this.#waiting.push(pair);
      return;
    }
    try {
      pair.up = this.up.request(headers, endStream);
    } catch (e) {
      // The upstream's concurrency limit, or it is going away: the client may retry elsewhere.
      this.down.reset(streamId, ErrorCode.REFUSED_STREAM);
      this.#fail(pair, `upstream refused a new stream: ${(e as Error).message}`, now, out);
      return;
    }
    this.#byUp.set(pair.up, pair);
  }

  #requestEnded(pair: StreamPair, now: number, out: LayerCommand[]): void {
    pair.requestDone = true;
    pair.flow.request.timestampEnd = now;
    if (pair.responseDone) this.#endFlow(pair, now, out);
  }

  // ---- server side -------------------------------------------------------------------------

  #fromServer(ev: Http2Event, now: number, out: LayerCommand[]): void {
    switch (ev.type) {
      case "headers": {
        const pair = this.#byUp.get(ev.streamId);
        if (!pair) return;
        if (ev.kind === "informational") {
          this.down.sendHeaders(pair.down, ev.headers, false);
          return;
        }
        if (ev.kind === "trailers") {
          if (pair.flow.response) pair.flow.response.trailers = regularFields(ev.headers);
          const held = pair.heldResponse;
          if (held) {
            held.trailers = ev.headers;
            this.#responseHeldEnd(pair, now, out);
            return;
          }
          this.down.sendTrailers(pair.down, ev.headers);
          this.#responseEnded(pair, now, out);
          return;
        }
        const status = Number(ev.headers.find(([n]) => n === ":status")?.[1] ?? "0");
        pair.flow.response = {
          status,
          reason: "",
          httpVersion: "HTTP/2.0",
          headers: regularFields(ev.headers),
          body: noBody(),
          timestampStart: now,
        };
        out.push({ type: "flow", event: "update", flow: pair.flow });
        if (this.#o.responseHook) {
          // Held for the response hook: nothing goes to the client before its verdict.
          pair.heldResponse = {
            headers: ev.headers,
            chunks: [],
            end: false,
            trailers: null,
            asking: false,
            bytes: 0,
          };
          if (ev.endStream) this.#responseHeldEnd(pair, now, out);
          return;
        }
        pair.responseStarted = true;
        this.down.sendHeaders(pair.down, ev.headers, ev.endStream);
        if (ev.endStream) this.#responseEnded(pair, now, out);
        return;
      }
      case "data": {
        const pair = this.#byUp.get(ev.streamId);
        if (!pair) {
          this.up.consume(ev.streamId, ev.data.byteLength);
          return;
        }
        if (pair.flow.response) appendRecordBody(pair.flow.response, ev.data, this.#o.bodyLimit);
        const held = pair.heldResponse;
        if (held) {
          if (held.bytes < this.#o.bodyLimit) {
            held.bytes += ev.data.byteLength;
            this.up.consume(ev.streamId, ev.data.byteLength);
          } else pair.responseOwed += ev.data.byteLength;
          held.chunks.push(ev.data);
          if (ev.endStream) this.#responseHeldEnd(pair, now, out);
          else if (!held.asking && held.bytes >= this.#o.bodyLimit) this.#askResponseHook(pair, out);
          return;
        }
        pair.responseOwed += ev.data.byteLength;
        this.down.sendData(pair.down, ev.data, ev.endStream);
        if (ev.endStream) this.#responseEnded(pair, now, out);
        return;
      }
      case "reset": {
        const pair = this.#byUp.get(ev.streamId);
        if (!pair) return;
        if (ev.remote && ev.code === ErrorCode.NO_ERROR && pair.responseDone) {
          // A complete response, then "stop sending the request" (RFC 9113 §8.1): not an error.
          this.down.reset(pair.down, ev.code);
          this.#endFlow(pair, now, out);
        } else if (ev.remote) {
          // REFUSED_STREAM (also what a GOAWAY's unprocessed streams get) tells the client to retry.
          this.down.reset(pair.down, ev.code);
          this.#fail(pair, `server reset the stream (${errorName(ev.code)})`, now, out);
        } else if (!pair.responseStarted) {
          this.#answerLocally(
            pair,
            `server broke HTTP/2 on this stream: ${ev.message ?? errorName(ev.code)}`,
            now,
            out,
          );
        } else {
          this.down.reset(pair.down, ErrorCode.INTERNAL_ERROR);
          this.#fail(
            pair,
            `server broke HTTP/2 on this stream: ${ev.message ?? errorName(ev.code)}`,
            now,
            out,
          );
        }
        return;
      }
      case "goaway":
        if (ev.remote) {
          // Streams past its last id were reset by the codec (REFUSED_STREAM, passed on above);
          // the client opens no more, the rest finish.
          if (!this.#goingAway) this.down.goaway(ErrorCode.NO_ERROR, "upstream is going away");
          this.#goingAway = true;
          this.#upstreamGoaway = true;
          for (const pair of this.#waiting) {
            if (!pair.waiting) continue;
            this.down.reset(pair.down, ErrorCode.REFUSED_STREAM);
            this.#fail(pair, "upstream went away before the request could be sent", now, out);
          }
          this.#waiting = [];
          if (ev.code !== ErrorCode.NO_ERROR) {
            out.push({
              type: "log",
              level: "info",
              message: `upstream ${formatHostPort(this.#o.server.address)} sent GOAWAY ${
                errorName(ev.code)
              } ${ev.debug}`,
            });
          }
          return;
        }
        out.push({
          type: "log",
          level: "warn",
          message: `HTTP/2 connection error from server ${formatHostPort(this.#o.server.address)}: ${
            errorName(ev.code)
          } ${ev.debug}`,
        });
        this.#upstreamLost(`server connection error: ${errorName(ev.code)} ${ev.debug}`, now, out);
        return;
      case "settings":
        // Extended CONNECT (RFC 8441, WebSocket over h2) is offered to the client only when the
        // upstream offers it: its streams are relayed like any other, DATA both ways.
        if (this.up.peerConnectProtocol) this.down.enableConnectProtocol(now);
        return;
      default:
        return;
    }
  }

  #responseEnded(pair: StreamPair, now: number, out: LayerCommand[]): void {
    pair.responseDone = true;
    if (pair.flow.response) pair.flow.response.timestampEnd = now;
    if (pair.requestDone) this.#endFlow(pair, now, out);
    else if (pair.up === null || !this.up.hasStream(pair.up)) {
      // The upstream answered before the request body ended and closed its side: the rest of the
      // request body has nowhere to go (the codec drops it; its credit is given back).
      this.#endFlow(pair, now, out);
    }
  }

  // ---- hooks -------------------------------------------------------------------------------

  #askHook(pair: StreamPair, out: LayerCommand[]): void {
    pair.hook = "asking";
    out.push({ type: "request-hook", flow: pair.flow, stream: pair.down });
  }

  /** Carries out the request hook's verdict on stream `down`'s held request. */
  #onVerdict(down: number, verdict: RequestVerdict, now: number, out: LayerCommand[]): void {
    const pair = this.#byDown.get(down);
    if (!pair || pair.hook !== "asking" || !pair.waiting || pair.flow.timestampEnd !== undefined) return;
    pair.hook = null;
    if (verdict === "kill") {
      this.down.reset(pair.down, ErrorCode.CANCEL);
      this.#fail(pair, "killed by the request hook", now, out);
      return;
    }
    if (verdict !== undefined && !("change" in verdict)) {
      if (verdict.replay) pair.flow.replay = verdict.replay;
      pair.waiting = null;
      this.#sendMade(pair, verdict, now, out);
      return;
    }
    if (verdict !== undefined) this.#applyRequestChange(pair, pair.waiting, verdict.change);
    // On to the upstream, in turn with requests waiting for its concurrency limit.
    if (this.#server === "failed" || this.#server === "closed" || this.#upstreamGoaway || this.up.failed) {
      this.down.reset(pair.down, ErrorCode.REFUSED_STREAM);
      this.#fail(pair, this.#serverFailure || "the upstream connection is gone", now, out);
      return;
    }
    this.#waiting.push(pair);
  }

  /**
   * Rebuilds a held request's header list from an addon's change: pseudo-fields from the method
   * and target, names lowercased, connection-specific fields dropped, Content-Length set for a
   * replaced body. The flow records what goes out. The stream still goes to this connection's
   * upstream whatever host the change names (its `:authority` says it).
   */
  #applyRequestChange(pair: StreamPair, held: Held, change: RequestChange["change"]): void {
    const r = pair.flow.request;
    const defaultPort = r.scheme === "https" ? 443 : 80;
    const bare = change.host.includes(":") ? `[${change.host}]` : change.host;
    const authority = change.port === defaultPort ? bare : `${bare}:${change.port}`;
    const path = change.path === "" ? "/" : change.path;
    const protocol = held.headers.find(([n]) => n === ":protocol");
    const tunnel = change.method === "CONNECT" && !protocol;
    const pseudo: HeaderField[] = [[":method", change.method]];
    if (!tunnel) pseudo.push([":scheme", r.scheme]);
    pseudo.push([":authority", authority]);
    if (!tunnel) pseudo.push([":path", path]);
    if (protocol) pseudo.push(protocol);
    let fields = lowered(change.headers);
    if (change.body !== undefined && held.end) {
      fields = fields.filter(([n]) => n !== "content-length");
      const hadBody = held.chunks.some((c) => c.byteLength > 0) ||
        held.headers.some(([n]) => n === "content-length");
      if (change.body.byteLength > 0 || hadBody) {
        fields.push(["content-length", String(change.body.byteLength)]);
      }
      held.chunks = change.body.byteLength > 0 ? [change.body] : [];
      r.body = {
        content: change.body.slice(0, this.#o.bodyLimit),
        size: change.body.byteLength,
        truncated: change.body.byteLength > this.#o.bodyLimit,
      };
    }
    held.headers = [...pseudo, ...fields];
    r.method = change.method;
    r.host = change.host;
    r.port = change.port;
    r.path = tunnel ? authority : path;
    r.url = tunnel ? authority : `${r.scheme}://${authority}${path}`;
    r.headers = fields;
  }

  /**
   * Answers a stream with a response a hook made: the upstream is not asked (or its stream is
   * cancelled), the flow records the response and ends without an error.
   */
  #sendMade(pair: StreamPair, made: LocalResponse, now: number, out: LayerCommand[]): void {
    if (pair.up !== null && this.up.hasStream(pair.up)) this.up.reset(pair.up, ErrorCode.CANCEL);
    pair.heldResponse = null;
    const headOnly = pair.flow.request.method === "HEAD" || made.status === 204 || made.status === 304;
    const fields = lowered(made.headers);
    const headers: HeaderField[] = [[":status", String(made.status)], ...fields];
    pair.responseStarted = true;
    const body = headOnly ? new Uint8Array(0) : made.body;
    if (this.down.hasStream(pair.down)) {
      if (this.down.sendHeaders(pair.down, headers, body.byteLength === 0) && body.byteLength > 0) {
        this.down.sendData(pair.down, body, true);
      }
    }
    pair.flow.response = {
      status: made.status,
      reason: made.reason,
      httpVersion: "HTTP/2.0",
      headers: fields,
      body: {
        content: body.slice(0, this.#o.bodyLimit),
        size: body.byteLength,
        truncated: body.byteLength > this.#o.bodyLimit,
      },
      timestampStart: now,
      timestampEnd: now,
    };
    pair.responseDone = true;
    this.#endFlow(pair, now, out);
  }

  /** The held response ended (last DATA or trailers): the response hook is asked now. */
  #responseHeldEnd(pair: StreamPair, now: number, out: LayerCommand[]): void {
    const held = pair.heldResponse!;
    held.end = true;
    if (pair.flow.response) pair.flow.response.timestampEnd = now;
    if (!held.asking) this.#askResponseHook(pair, out);
  }

  #askResponseHook(pair: StreamPair, out: LayerCommand[]): void {
    pair.heldResponse!.asking = true;
    out.push({ type: "response-hook", flow: pair.flow, stream: pair.down });
  }

  /** Carries out the response hook's verdict on stream `down`'s held response. */
  #onResponseVerdict(down: number, verdict: ResponseVerdict, now: number, out: LayerCommand[]): void {
    const pair = this.#byDown.get(down);
    const held = pair?.heldResponse;
    if (!pair || !held || !held.asking || pair.flow.timestampEnd !== undefined) return;
    if (verdict === "kill") {
      this.down.reset(pair.down, ErrorCode.CANCEL);
      if (pair.up !== null && this.up.hasStream(pair.up)) this.up.reset(pair.up, ErrorCode.CANCEL);
      this.#fail(pair, "killed by an addon", now, out);
      return;
    }
    if (verdict !== undefined && "respond" in verdict) {
      this.#sendMade(pair, verdict.respond, now, out);
      return;
    }
    const response = pair.flow.response!;
    if (verdict !== undefined) {
      const change = verdict.change;
      let fields = lowered(change.headers);
      const noBody = pair.flow.request.method === "HEAD" || change.status === 204 || change.status === 304;
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
      response.headers = fields;
    }
    // Sent on: head, what was held, and (when it ended) the end; the rest streams as it comes.
    pair.heldResponse = null;
    pair.responseStarted = true;
    const endNow = held.end && held.chunks.length === 0 && held.trailers === null;
    this.down.sendHeaders(pair.down, held.headers, endNow);
    held.chunks.forEach((chunk, i) => {
      this.down.sendData(
        pair.down,
        chunk,
        held.end && held.trailers === null && i === held.chunks.length - 1,
      );
    });
    if (held.trailers !== null) this.down.sendTrailers(pair.down, held.trailers);
    if (held.end) this.#responseEnded(pair, now, out);
  }

  // ---- failures ----------------------------------------------------------------------------

  /** The client connection is gone: every stream fails, the upstream is told and closed. */
  #clientGone(message: string, now: number, out: LayerCommand[]): void {
    for (const pair of [...this.#byDown.values()]) {
      if (pair.up !== null) this.up.reset(pair.up, ErrorCode.CANCEL);
      this.#fail(pair, message, now, out);
    }
    this.up.goaway(ErrorCode.NO_ERROR);
    this.#closeBoth(out);
  }

  /** The upstream connection ended (closed, failed or broke the protocol). */
  #serverGone(message: string, now: number, out: LayerCommand[]): void {
    this.#upstreamLost(message, now, out);
  }

  #upstreamLost(message: string, now: number, out: LayerCommand[]): void {
    this.#serverFailure = message;
    if (this.#server === "open" || this.#server === "connecting") {
      const bytes = this.up.output();
      if (this.#server === "open" && bytes.byteLength > 0) {
        out.push({ type: "send", to: "server", data: bytes });
      }
      out.push({ type: "close", to: "server", reset: false });
    }
    this.#server = "closed";
    for (const pair of [...this.#byDown.values()]) {
      // The upstream streams are gone with their connection (these resets are never sent).
      if (pair.up !== null) this.up.reset(pair.up, ErrorCode.CANCEL);
      if (pair.flow.timestampEnd !== undefined) continue;
      if (!pair.responseStarted) this.#answerLocally(pair, message, now, out);
      else {
        this.down.reset(pair.down, ErrorCode.INTERNAL_ERROR);
        this.#fail(pair, message, now, out);
      }
    }
    if (!this.#goingAway) this.down.goaway(ErrorCode.NO_ERROR, "upstream connection ended");
    this.#goingAway = true;
  }

  /** The upstream cannot be reached: no more streams, close once the answered ones are sent. */
  #goAwayUnreachable(): void {
    if (this.#goingAway) return;
    this.#goingAway = true;
    this.down.goaway(ErrorCode.NO_ERROR, "upstream unreachable");
  }

  /** Answers a stream with 502 and the reason (no upstream to send it to), and fails its flow. */
  #answerLocally(pair: StreamPair, reason: string, now: number, out: LayerCommand[]): void {
    if (pair.up !== null) this.up.reset(pair.up, ErrorCode.CANCEL);
    // A text body with the reason, or a trailers-only gRPC error for a gRPC call.
    const answer = localAnswer(502, reason, pair.flow.request.headers);
    const { headers, body } = answer;
    if (this.down.hasStream(pair.down) && !pair.responseStarted) {
      pair.responseStarted = true;
      if (this.down.sendHeaders(pair.down, headers, answer.trailersOnly) && !answer.trailersOnly) {
        this.down.sendData(pair.down, body, true);
      }
      pair.flow.response = {
        status: answer.status,
        reason: answer.trailersOnly ? "OK" : "Bad Gateway",
        httpVersion: "HTTP/2.0",
        headers: headers.slice(1).map(([n, v]) => [n, v]),
        body: { content: body, size: body.byteLength, truncated: false },
        timestampStart: now,
        timestampEnd: now,
      };
    }
    this.#fail(pair, reason, now, out);
  }

  #fail(pair: StreamPair, message: string, now: number, out: LayerCommand[]): void {
    pair.waiting = null;
    pair.hook = null;
    pair.heldResponse = null;
    if (pair.flow.timestampEnd === undefined) pair.flow.error = { message, timestamp: now };
    this.#endFlow(pair, now, out);
  }

  #endFlow(pair: StreamPair, now: number, out: LayerCommand[]): void {
    const flow = pair.flow;
    if (flow.timestampEnd !== undefined) return;
    flow.timestampEnd = now;
    endHttpFlow(flow);
    out.push({ type: "flow", event: "end", flow });
  }

  #closeBoth(out: LayerCommand[]): void {
    if (this.#done) return;
    this.#done = true;
    this.#retire();
    const toClient = this.down.output();
    if (toClient.byteLength > 0) out.push({ type: "send", to: "client", data: toClient });
    if (this.#server === "open") {
      const toServer = this.up.output();
      if (toServer.byteLength > 0) out.push({ type: "send", to: "server", data: toServer });
    }
    if (this.#server === "open" || this.#server === "connecting") {
      out.push({ type: "close", to: "server", reset: false });
    }
    this.#server = "closed";
    out.push({ type: "close", to: "client", reset: false });
  }

  // ---- after every event -------------------------------------------------------------------

  /**
   * Gives back the credit of body bytes that have left the proxy, drops finished streams, writes
   * both codecs' output, closes when going away with nothing left, and re-arms the timer.
   */
  #flush(now: number, out: LayerCommand[]): void {
    if (this.#done) return;
    this.#startWaiting();
    // Deleting the entry being visited is safe in a Map's iteration.
    for (const pair of this.#byDown.values()) {
      if (pair.requestOwed > 0 && !pair.waiting && pair.hook === null) {
        const sent = pair.requestOwed - (pair.up === null ? 0 : this.up.bufferedData(pair.up));
        if (sent > 0) {
          this.down.consume(pair.down, sent);
          pair.requestOwed -= sent;
        }
      }
      if (pair.responseOwed > 0 && pair.up !== null && !pair.heldResponse) {
        const sent = pair.responseOwed - this.down.bufferedData(pair.down);
        if (sent > 0) {
          this.up.consume(pair.up, sent);
          pair.responseOwed -= sent;
        }
      }
      const downOpen = this.down.hasStream(pair.down);
      const upOpen = pair.up !== null && this.up.hasStream(pair.up);
      if (!downOpen && !upOpen && pair.requestOwed === 0 && pair.responseOwed === 0) {
        if (pair.flow.timestampEnd === undefined) {
          // Both streams closed without either end being seen here: should not happen; keep the
          // invariant that every started flow ends.
          this.#fail(pair, "stream closed", now, out);
        }
        this.#byDown.delete(pair.down);
        if (pair.up !== null) this.#byUp.delete(pair.up);
      } else if (!downOpen && upOpen && pair.up !== null && pair.flow.timestampEnd !== undefined) {
        // The client's stream is gone (reset, or answered locally): the upstream one goes too.
        this.up.reset(pair.up, ErrorCode.CANCEL);
      }
    }
    if (this.#goingAway && this.#byDown.size === 0) {
      this.#closeBoth(out);
      return;
    }
    const toClient = this.down.output();
    if (toClient.byteLength > 0) out.push({ type: "send", to: "client", data: toClient });
    if (this.#server === "open") {
      const toServer = this.up.output();
      if (toServer.byteLength > 0) out.push({ type: "send", to: "server", data: toServer });
    }
    if (this.down.failed) {
      this.#closeBoth(out);
      return;
    }
    const a = this.down.deadline(), b = this.up.deadline();
    const next = a === null ? b : b === null ? a : Math.min(a, b);
    if (next !== null && next !== this.#armed) {
      this.#armed = next;
      out.push({ type: "timer", delay: Math.max(0, next - now) });
    }
  }

  /** Opens upstream streams for waiting requests while the upstream's limit allows. */
  #startWaiting(): void {
    while (this.#waiting.length > 0 && this.up.canOpenStream()) {
      const pair = this.#waiting.shift()!;
      const w = pair.waiting;
      if (!w) continue; // failed or reset meanwhile
      pair.waiting = null;
      const headersOnly = w.end && w.chunks.length === 0 && w.trailers === null;
      const up = this.up.request(w.headers, headersOnly);
      pair.up = up;
      this.#byUp.set(up, pair);
      w.chunks.forEach((chunk, i) => {
        this.up.sendData(up, chunk, w.end && w.trailers === null && i === w.chunks.length - 1);
      });
      if (w.trailers !== null) this.up.sendTrailers(up, w.trailers);
    }
  }

  #newFlow(streamId: number, headers: HeaderField[], now: number): HttpFlow {
    return streamFlow(this.#o, streamId, headers, now);
  }
}

/** What {@linkcode streamFlow} takes from a layer's options. */
export type StreamFlowContext = Pick<Http2LayerOptions, "scheme" | "client" | "server" | "tls" | "newId">;

/**
 * The flow of a new HTTP/2 stream, from its request header list; shared by both HTTP/2 layers.
 * The stream goes where the connection goes, whatever its `:authority` says (as with HTTP/1's Host
 * header): the URL names that destination, and a differing authority is kept as `hostHeader`.
 */
export function streamFlow(
  o: StreamFlowContext,
  streamId: number,
  headers: HeaderField[],
  now: number,
): HttpFlow {
  const pseudo = (name: string) => headers.find(([n]) => n === name)?.[1];
  const method = pseudo(":method") ?? "";
  const scheme = pseudo(":scheme") ?? o.scheme;
  const given = pseudo(":authority") ?? pseudo("host");
  const destination = o.server.address;
  const known = o.tls?.sni ?? o.server.hostname;
  let authority = given ?? known ?? formatHostPort(destination);
  let { host, port } = splitAuthority(authority, destination.port);
  // A CONNECT names a host and port; an extended CONNECT (`:protocol`) has a URL like a GET's.
  const tunnel = method === "CONNECT" && pseudo(":protocol") === undefined;
  const path = tunnel ? authority : pseudo(":path") ?? "";
  const mismatch = given !== undefined && !tunnel && namesAnotherHost(given, known, destination);
  if (mismatch) {
    host = known ?? destination.hostname;
    port = destination.port;
    const bare = host.includes(":") ? `[${host}]` : host;
    authority = port === (scheme === "https" ? 443 : 80) ? bare : `${bare}:${port}`;
  }
  const flow: HttpFlow = {
    id: o.newId(),
    type: "http",
    client: o.client,
    server: { ...o.server },
    timestampStart: now,
    streamId,
    request: {
      method,
      scheme,
      host,
      port,
      path,
      url: tunnel ? authority : `${scheme}://${authority}${path}`,
      httpVersion: "HTTP/2.0",
      headers: regularFields(headers),
      body: noBody(),
      timestampStart: now,
    },
  };
  if (o.tls) flow.tls = o.tls;
  if (mismatch) flow.request.hostHeader = given;
  const protocol = pseudo(":protocol");
  if (protocol !== undefined) flow.request.protocol = protocol;
  return flow;
}

/** Shared by every empty body record: a zero-length array cannot change, and one per record cost. */
const NO_BYTES = new Uint8Array(0);

/** An empty body record (as `emptyBody()`, without allocating an array for each). */
function noBody(): BodyRecord {
  return { content: NO_BYTES, size: 0, truncated: false };
}

/** Header fields for an HTTP/2 header list: names lowercased, connection-specific fields and pseudo-fields dropped. */
function lowered(headers: [string, string][]): [string, string][] {
  const out: [string, string][] = [];
  for (const [name, value] of headers) {
    const n = name.toLowerCase();
    if (n.charCodeAt(0) === 0x3a || CONNECTION_SPECIFIC.has(n)) continue;
    if (n === "te" && value.trim().toLowerCase() !== "trailers") continue;
    out.push([n, value]);
  }
  return out;
}

/** The fields of a header list without its pseudo-fields, as [name, value] pairs. */
export function regularFields(headers: HeaderField[]): [string, string][] {
  const out: [string, string][] = [];
  for (const [name, value] of headers) if (name.charCodeAt(0) !== 0x3a) out.push([name, value]);
  return out;
}

const IP_LITERAL = /^(\d{1,3}(\.\d{1,3}){3}|[0-9a-f:]*:[0-9a-f:.]*)$/i;

/**
 * True when an authority names another host (or port) than the connection's destination: the
 * name the client asked for (`known`: SNI) or, without one, the address it dialed when the
 * authority holds an address too (a name against a bare address cannot be checked and is believed).
 */
export function namesAnotherHost(
  authority: string,
  known: string | undefined,
  destination: HostPort,
): boolean {
  const { host, port } = splitAuthority(authority, -1);
  if (port !== -1 && port !== destination.port) return true;
  const norm = (h: string) => h.toLowerCase().replace(/\.$/, "");
  if (known !== undefined) return norm(host) !== norm(known);
  return IP_LITERAL.test(host) && norm(host) !== norm(destination.hostname);
}

/** Host and port of an `:authority` (`host`, `host:port`, `[v6]:port`). */
export function splitAuthority(authority: string, defaultPort: number): { host: string; port: number } {
  const m = /^(\[[^\]]*\]|[^:]*)(?::(\d{1,5}))?$/.exec(authority);
  if (!m) return { host: authority, port: defaultPort };
  const host = m[1]!.startsWith("[") ? m[1]!.slice(1, -1) : m[1]!;
  return { host, port: m[2] ? Number(m[2]) : defaultPort };
}
