/**
 * One endpoint of an HTTP/2 connection (RFC 9113), sans-IO: {@link Http2Connection.receive}
 * takes bytes (and the time) and returns what happened (headers, data, trailers, resets,
 * GOAWAY); the send methods queue frames, and {@link Http2Connection.output} hands over the
 * bytes to write. No sockets, no clock, no timers.
 *
 * What it does: the preface and SETTINGS exchange with ACKs; stream states (§5.1) with ids that
 * only go up; flow control for the connection and each stream in both directions (sending waits
 * for the peer's windows, honouring its SETTINGS_INITIAL_WINDOW_SIZE and WINDOW_UPDATEs;
 * receiving enforces our windows and re-opens them as the application calls `consume()`);
 * RST_STREAM; GOAWAY with the last stream id; PING and its ACK; header blocks split over
 * CONTINUATION, reassembled within a bound; server push refused (SETTINGS_ENABLE_PUSH=0 from a
 * client, PUSH_PROMISE is a PROTOCOL_ERROR); messages checked as §8.2-8.3 require (lowercase
 * names, no connection-specific fields, pseudo-fields, content-length against the DATA).
 *
 * Abuse it answers (each a counter in {@link Http2Connection.stats}):
 * - HPACK bomb: a header list past our SETTINGS_MAX_HEADER_LIST_SIZE resets the stream
 *   (ENHANCE_YOUR_CALM) after decoding without keeping the fields; table size updates above our
 *   SETTINGS_HEADER_TABLE_SIZE are a COMPRESSION_ERROR.
 * - CONTINUATION flood (CVE-2024-27316 family): a header block over `maxHeaderBlockBytes` or
 *   more than `maxContinuationFrames` frames ends the connection (GOAWAY ENHANCE_YOUR_CALM)
 *   before more is buffered.
 * - Rapid reset (CVE-2023-44487) and its variant of provoked stream errors: every stream reset
 *   by the peer or by us because of the peer takes a token from a bucket (`resetBurst`, refilled
 *   at `resetRate` a second); an empty bucket is GOAWAY ENHANCE_YOUR_CALM.
 * - Frames that cost work and do nothing (§10.5: empty DATA without END_STREAM, PRIORITY,
 *   unknown types) take tokens from a second bucket (`idleFrameBurst`, `idleFrameRate`).
 * - WINDOW_UPDATE floods (many tiny increments): a peer that reads what we send needs at most a
 *   stream and a connection update per DATA frame it got, so each DATA frame we send earns two
 *   WINDOW_UPDATEs (a few are free); updates past what was earned take tokens from the same bucket
 *   as frames that do nothing.
 * - SETTINGS/PING floods: more than `maxQueuedControlFrames` answers (ACKs, RST_STREAMs) queued
 *   and not yet taken by `output()` is GOAWAY ENHANCE_YOUR_CALM.
 * - Stream ids going backwards, frames on idle streams, flow-control violations: the connection
 *   or stream error RFC 9113 names.
 * @module
 */
import {
  connectionError,
  ErrorCode,
  errorName,
  Flag,
  type Frame,
  FrameReader,
  FrameType,
  Http2Error,
  MAX_WINDOW,
  MIN_MAX_FRAME_SIZE,
  Outbox,
  parseFrame,
  PREFACE,
  serializeFrame,
  Setting,
  streamError,
} from "./frames.ts";
import { Decoder, Encoder, type HeaderField, HpackError } from "./hpack.ts";

/** Which end of the connection this is. */
export type Role = "client" | "server";

/** Settings we advertise and limits we enforce; every field has a default. */
export interface ConnectionOptions {
  /** SETTINGS_MAX_CONCURRENT_STREAMS we advertise; more peer streams are refused. Default 100. */
  maxConcurrentStreams?: number;
  /** SETTINGS_INITIAL_WINDOW_SIZE we advertise (each stream's receive window). Default 65535. */
  initialWindowSize?: number;
  /** Our connection receive window (raised from 65535 with a WINDOW_UPDATE at the start). Default 1 MiB. */
  connectionWindowSize?: number;
  /** SETTINGS_MAX_FRAME_SIZE we advertise. Default 16384. */
  maxFrameSize?: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE we advertise and enforce. Default 64 KiB. */
  maxHeaderListSize?: number;
  /** SETTINGS_HEADER_TABLE_SIZE we advertise (the peer encoder's table). Default 4096. */
  headerTableSize?: number;
  /** Largest HPACK table our encoder uses, whatever the peer allows. Default 4096. */
  encoderTableSize?: number;
  /** SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441, server only). Default false. */
  enableConnectProtocol?: boolean;
  /** Re-open receive windows as soon as DATA arrives (no `consume()` calls). Default false. */
  autoConsume?: boolean;
  /** Bound on one header block's bytes (HEADERS plus CONTINUATIONs). Default maxHeaderListSize + 16 KiB. */
  maxHeaderBlockBytes?: number;
  /** Bound on the CONTINUATION frames of one header block. Default 64. */
  maxContinuationFrames?: number;
  /** Stream resets (by the peer, or by us because of the peer) allowed in a burst. Default 200. */
  resetBurst?: number;
  /** ... and refilled per second. Default 100. */
  resetRate?: number;
  /** Frames that do nothing (empty DATA, PRIORITY, unknown types) allowed in a burst. Default 1000. */
  idleFrameBurst?: number;
  /** ... and refilled per second. Default 1000. */
  idleFrameRate?: number;
  /** ACKs and RST_STREAMs in answer to the peer, queued and not yet taken by `output()`. Default 1000. */
  maxQueuedControlFrames?: number;
  /** Closed stream ids remembered (to tell STREAM_CLOSED from PROTOCOL_ERROR). Default 1024. */
  closedStreamsRemembered?: number;
  /** How long the peer has to acknowledge our SETTINGS (ms) before SETTINGS_TIMEOUT. Default 10,000. */
  settingsTimeout?: number;
}

/** What `receive()` reports. */
export type Http2Event =
  /** A header block: a request, a (1xx or final) response, or trailers. */
  | {
    type: "headers";
    streamId: number;
    kind: "request" | "response" | "informational" | "trailers";
    headers: HeaderField[];
    endStream: boolean;
  }
  /** Body bytes (a view of the input; copy it to keep it past the next `receive()`). */
  | { type: "data"; streamId: number; data: Uint8Array; endStream: boolean }
  /** A stream ended abnormally: reset by the peer (`remote`) or by us (a stream error, or refused after GOAWAY). */
  | { type: "reset"; streamId: number; code: number; remote: boolean; message?: string }
  /** GOAWAY received (`remote`), or sent by us after a connection error: the connection is done. */
  | { type: "goaway"; lastStreamId: number; code: number; debug: string; remote: boolean }
  /** The peer's SETTINGS were applied. */
  | { type: "settings"; settings: [id: number, value: number][] }
  /** The peer acknowledged our SETTINGS. */
  | { type: "settings-ack" }
  /** The answer to our PING. */
  | { type: "ping-ack"; data: Uint8Array }
  /** A stream has room again in the peer's windows after being blocked (`bufferedData` shrank). */
  | { type: "writable"; streamId: number };

type StreamState = "open" | "half-closed-local" | "half-closed-remote";

interface Stream {
  id: number;
  state: StreamState;
  sendWindow: number;
  recvWindow: number;
  /** Bytes consumed by the application and not yet given back with WINDOW_UPDATE. */
  recvUnacked: number;
  /** A final (non-1xx) header block has been received. */
  gotFinalHeaders: boolean;
  /** content-length of the peer's message, when given. */
  contentLength: number;
  received: number;
  pending: Uint8Array[];
  pendingBytes: number;
  /** END_STREAM (or trailers) goes after the pending data. */
  pendingEnd: boolean;
  pendingTrailers: HeaderField[] | null;
  blocked: boolean;
}

type ClosedHow = "reset-by-us" | "reset-by-peer" | "ended";

/** Counters for `stats()`. */
export interface Http2Stats {
  framesIn: number;
  framesOut: number;
  streamsOpened: number;
  resetsReceived: number;
  resetsSent: number;
  /** Stream errors we raised because of the peer (malformed, flow control, refused, ...). */
  streamErrors: number;
  /** Connection errors, by RFC error code name. */
  connectionErrors: Record<string, number>;
  headerListsTooLarge: number;
  /** Connections ended with ENHANCE_YOUR_CALM for abuse (all kinds; `floods` splits them). */
  floodsStopped: number;
  /** Abuse cut off, by kind: `resets`, `idle-frames`, `window-updates`, `continuation`, `control-queue`. */
  floods: Record<string, number>;
  /** GOAWAY frames we sent, by RFC error code name (NO_ERROR for a graceful end). */
  goawaysSent: Record<string, number>;
  goawaysReceived: number;
}

/** WINDOW_UPDATEs a peer may send before it has been sent any DATA. */
const FREE_WINDOW_UPDATES = 16;
/** WINDOW_UPDATEs earned by each DATA frame sent (one for the stream, one for the connection). */
const WINDOW_UPDATES_PER_DATA = 2;
/** Bound on the earned WINDOW_UPDATEs banked for later. */
const MAX_WINDOW_UPDATE_CREDIT = 10_000;

const CONNECTION_SPECIFIC = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
]);
const REQUEST_PSEUDO = new Set([":method", ":scheme", ":authority", ":path", ":protocol"]);

/** A sans-IO HTTP/2 connection endpoint. */
export class Http2Connection {
  readonly role: Role;
  private readonly o: Required<ConnectionOptions>;
  private readonly reader: FrameReader;
  private readonly decoder: Decoder;
  private readonly encoder: Encoder;
  private readonly streams = new Map<number, Stream>();
  private readonly closed = new Map<number, ClosedHow>();
  private readonly outbox = new Outbox();
  private prefaceSeen: number;
  private gotSettings = false;
  private unackedSettings = 0;
  private queuedControl = 0;
  /** Highest stream id the peer opened (and we processed). */
  private lastPeerStreamId = 0;
  private nextLocalStreamId: number;
  private peerOpen = 0;
  private localOpen = 0;
  private connSendWindow = 65535;
  private connRecvWindow: number;
  private connRecvUnacked = 0;
  /** The receive window of new peer streams: 65535 until the peer ACKs our SETTINGS. */
  private streamRecvInitial = 65535;
  private peerInitialWindow = 65535;
  private peerMaxFrameSize = MIN_MAX_FRAME_SIZE;
  private peerMaxConcurrent = Infinity;
  /** The peer's SETTINGS_MAX_HEADER_LIST_SIZE (advisory for what we send). */
  peerMaxHeaderListSize = Infinity;
  /** The peer allows extended CONNECT (RFC 8441). */
  peerConnectProtocol = false;
  private block:
    | { streamId: number; parts: Uint8Array[]; bytes: number; frames: number; endStream: boolean }
    | null = null;
  private readonly resets: TokenBucket;
  private readonly idleFrames: TokenBucket;
  /** GOAWAY sent (no new peer streams past `goawaySentLast`). */
  private goawaySentLast = -1;
  /** GOAWAY received: its last stream id. */
  private goawayReceivedLast = -1;
  /** A connection error happened: input is ignored; write `output()` and close. */
  failed: Http2Error | null = null;
  private readonly counters: Http2Stats = {
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
  /** WINDOW_UPDATEs the peer may send without spending idle-frame tokens (see the module doc). */
  private windowUpdateCredit = FREE_WINDOW_UPDATES;
  private events: Http2Event[] = [];

  /** When the peer must have acknowledged our SETTINGS by (ms), or null once it has. */
  private settingsDeadline: number | null;

  /** `now` (ms, the driver's clock) starts the SETTINGS acknowledgement timer. */
  constructor(role: Role, options: ConnectionOptions = {}, now = 0) {
    this.role = role;
    const maxHeaderListSize = options.maxHeaderListSize ?? 65536;
    this.o = {
      maxConcurrentStreams: options.maxConcurrentStreams ?? 100,
      initialWindowSize: options.initialWindowSize ?? 65535,
      connectionWindowSize: options.connectionWindowSize ?? 1 << 20,
      maxFrameSize: options.maxFrameSize ?? MIN_MAX_FRAME_SIZE,
      maxHeaderListSize,
      headerTableSize: options.headerTableSize ?? 4096,
      encoderTableSize: options.encoderTableSize ?? 4096,
      enableConnectProtocol: options.enableConnectProtocol ?? false,
      autoConsume: options.autoConsume ?? false,
      maxHeaderBlockBytes: options.maxHeaderBlockBytes ?? maxHeaderListSize + 16384,
      maxContinuationFrames: options.maxContinuationFrames ?? 64,
      resetBurst: options.resetBurst ?? 200,
      resetRate: options.resetRate ?? 100,
      idleFrameBurst: options.idleFrameBurst ?? 1000,
      idleFrameRate: options.idleFrameRate ?? 1000,
      maxQueuedControlFrames: options.maxQueuedControlFrames ?? 1000,
      closedStreamsRemembered: options.closedStreamsRemembered ?? 1024,
      settingsTimeout: options.settingsTimeout ?? 10_000,
    };
    this.reader = new FrameReader(this.o.maxFrameSize);
    // Until the peer ACKs our SETTINGS it may use the default 4096 table.
    this.decoder = new Decoder({
      maxTableSize: Math.max(4096, this.o.headerTableSize),
      maxHeaderListSize: this.o.maxHeaderListSize,
    });
    this.encoder = new Encoder({}, Math.min(4096, this.o.encoderTableSize));
    this.prefaceSeen = role === "server" ? 0 : PREFACE.length;
    this.nextLocalStreamId = role === "client" ? 1 : 2;
    this.connRecvWindow = 65535;
    this.resets = new TokenBucket(this.o.resetBurst, this.o.resetRate);
    this.idleFrames = new TokenBucket(this.o.idleFrameBurst, this.o.idleFrameRate);

    if (role === "client") this.outbox.bytes(PREFACE);
    const settings: [number, number][] = [];
    if (this.o.headerTableSize !== 4096) settings.push([Setting.HEADER_TABLE_SIZE, this.o.headerTableSize]);
    if (role === "client") settings.push([Setting.ENABLE_PUSH, 0]);
    settings.push([Setting.MAX_CONCURRENT_STREAMS, this.o.maxConcurrentStreams]);
    if (this.o.initialWindowSize !== 65535) {
      settings.push([Setting.INITIAL_WINDOW_SIZE, this.o.initialWindowSize]);
    }
    if (this.o.maxFrameSize !== MIN_MAX_FRAME_SIZE) {
      settings.push([Setting.MAX_FRAME_SIZE, this.o.maxFrameSize]);
    }
    settings.push([Setting.MAX_HEADER_LIST_SIZE, this.o.maxHeaderListSize]);
    if (role === "server" && this.o.enableConnectProtocol) {
      settings.push([Setting.ENABLE_CONNECT_PROTOCOL, 1]);
    }
    this.frame({ type: "settings", ack: false, settings });
    this.unackedSettings++;
    this.settingsDeadline = now + this.o.settingsTimeout;
    if (this.o.connectionWindowSize > 65535) {
      this.frame({ type: "window_update", streamId: 0, increment: this.o.connectionWindowSize - 65535 });
      this.connRecvWindow = this.o.connectionWindowSize;
    }
  }

  /** When the driver must call {@link timer} next (ms on its clock), or null for never. */
  deadline(): number | null {
    return this.failed ? null : this.settingsDeadline;
  }

  /** The time asked for by {@link deadline} has come: SETTINGS not acknowledged is SETTINGS_TIMEOUT (§6.5.3). */
  timer(now: number): Http2Event[] {
    this.events = [];
    if (!this.failed && this.settingsDeadline !== null && now >= this.settingsDeadline) {
      this.fail(
        connectionError(
          ErrorCode.SETTINGS_TIMEOUT,
          `SETTINGS not acknowledged in ${this.o.settingsTimeout} ms`,
        ),
      );
    }
    return this.events;
  }

  /** Counters (a copy). */
  stats(): Http2Stats {
    const c = this.counters;
    return {
      ...c,
      connectionErrors: { ...c.connectionErrors },
      floods: { ...c.floods },
      goawaysSent: { ...c.goawaysSent },
    };
  }

  /** Bytes queued for the peer since the last call (empty when none). */
  output(): Uint8Array {
    this.queuedControl = 0;
    return this.outbox.take();
  }

  /** Number of streams open (in any open or half-closed state). */
  get openStreams(): number {
    return this.streams.size;
  }

  /** Whether `request()` may open a stream now (no GOAWAY, below the peer's concurrency limit). */
  canOpenStream(): boolean {
    return this.role === "client" && !this.failed && this.goawayReceivedLast < 0 &&
      this.localOpen < this.peerMaxConcurrent;
  }

  /**
   * Advertises SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441) after the first SETTINGS (server role;
   * a relay learns only from its upstream whether extended CONNECT can go through), and accepts
   * `:protocol` from then on. Once sent it stays (the RFC forbids taking it back).
   */
  enableConnectProtocol(now: number): void {
    if (this.role !== "server" || this.o.enableConnectProtocol || this.failed) return;
    this.o.enableConnectProtocol = true;
    this.frame({ type: "settings", ack: false, settings: [[Setting.ENABLE_CONNECT_PROTOCOL, 1]] });
    if (this.unackedSettings++ === 0) this.settingsDeadline = now + this.o.settingsTimeout;
  }

  /** A header block has begun (HEADERS without END_HEADERS) and its last CONTINUATION has not come. */
  get headerBlockOpen(): boolean {
    return this.block !== null;
  }

  /** Whether stream `streamId` is open (in any open or half-closed state). */
  hasStream(streamId: number): boolean {
    return this.streams.has(streamId);
  }

  /** Outbound bytes of a stream still waiting for the peer's windows. */
  bufferedData(streamId: number): number {
    return this.streams.get(streamId)?.pendingBytes ?? 0;
  }

  // ---- input --------------------------------------------------------------------------------

  /** Takes bytes from the peer; `now` (ms) paces the reset budget. */
  receive(data: Uint8Array, now: number): Http2Event[] {
    this.events = [];
    if (this.failed) return this.events;
    try {
      if (this.prefaceSeen < PREFACE.length) data = this.readPreface(data);
      this.reader.push(data);
      for (;;) {
        const raw = this.reader.nextRaw();
        if (!raw) break;
        this.counters.framesIn++;
        const [h, payload] = raw;
        try {
          this.onFrame(h.type, parseFrame(h, payload), now);
        } catch (e) {
          if (!(e instanceof Http2Error) || e.connection) throw e;
          this.streamFailed(e, now);
        }
        if (this.failed) break;
      }
    } catch (e) {
      if (e instanceof HpackError) this.fail(connectionError(ErrorCode.COMPRESSION_ERROR, e.message));
      else if (e instanceof Http2Error) this.fail(e);
      else throw e;
    }
    if (!this.failed) this.flush(true);
    return this.events;
  }

  private readPreface(data: Uint8Array): Uint8Array {
    const n = Math.min(data.length, PREFACE.length - this.prefaceSeen);
    for (let i = 0; i < n; i++) {
      if (data[i] !== PREFACE[this.prefaceSeen + i]) {
        throw connectionError(ErrorCode.PROTOCOL_ERROR, "invalid connection preface");
      }
    }
    this.prefaceSeen += n;
    return data.subarray(n);
  }

  private onFrame(type: number, f: Frame, now: number): void {
    if (!this.gotSettings) {
      if (f.type !== "settings" || f.ack) {
        throw connectionError(ErrorCode.PROTOCOL_ERROR, "first frame is not SETTINGS");
      }
      this.gotSettings = true;
    }
    if (this.block && f.type !== "continuation") {
      throw connectionError(ErrorCode.PROTOCOL_ERROR, `frame type ${type} inside a header block`);
    }
    switch (f.type) {
      case "data":
        if (f.data.length === 0 && !f.endStream) this.idleFrame(now, "empty DATA");
        return this.onData(f.streamId, f.data, f.endStream, f.data.length + (f.padLength ?? 0));
      case "headers":
        if (f.endHeaders) return this.onHeaderBlock(f.streamId, f.block, f.endStream);
        this.block = {
          streamId: f.streamId,
          parts: [f.block.slice()],
          bytes: f.block.length,
          frames: 0,
          endStream: f.endStream,
        };
        return this.checkBlockBound();
      case "continuation": {
        const b = this.block;
        if (!b || b.streamId !== f.streamId) {
          throw connectionError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without a header block in progress");
        }
        b.parts.push(f.block.slice());
        b.bytes += f.block.length;
        b.frames++;
        this.checkBlockBound();
        if (!f.endHeaders) return;
        this.block = null;
        const all = new Uint8Array(b.bytes);
        let o = 0;
        for (const p of b.parts) {
          all.set(p, o);
          o += p.length;
        }
        return this.onHeaderBlock(b.streamId, all, b.endStream);
      }
      case "priority":
        this.idleFrame(now, "PRIORITY");
        return; // allowed in any state, even idle (§5.1); priorities are not acted on (§5.3.2)
      case "rst_stream":
        return this.onReset(f.streamId, f.code, now);
      case "settings":
        return this.onSettings(f.ack, f.settings);
      case "push_promise":
        throw connectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE, but push is disabled");
      case "ping":
        if (f.ack) this.events.push({ type: "ping-ack", data: f.data.slice() });
        else this.control({ type: "ping", ack: true, data: f.data.slice() });
        return;
      case "goaway":
        return this.onGoaway(f.lastStreamId, f.code, f.debug);
      case "window_update":
        if (this.windowUpdateCredit > 0) this.windowUpdateCredit--;
        else this.idleFrame(now, "unearned WINDOW_UPDATE", "window-updates");
        return this.onWindowUpdate(f.streamId, f.increment);
      case "unknown":
        this.idleFrame(now, "unknown-type");
        return; // §4.1: ignore unknown types
    }
  }

  private checkBlockBound(): void {
    const b = this.block!;
    if (b.bytes > this.o.maxHeaderBlockBytes || b.frames > this.o.maxContinuationFrames) {
      this.flood("continuation");
      throw connectionError(
        ErrorCode.ENHANCE_YOUR_CALM,
        `header block over ${
          b.bytes > this.o.maxHeaderBlockBytes
            ? `${this.o.maxHeaderBlockBytes} bytes`
            : `${this.o.maxContinuationFrames} CONTINUATION frames`
        }`,
      );
    }
  }

  private isPeerStream(id: number): boolean {
    return (id % 2 === 1) === (this.role === "server");
  }

  private isIdle(id: number): boolean {
    return this.isPeerStream(id) ? id > this.lastPeerStreamId : id >= this.nextLocalStreamId;
  }

  /** The open stream `id`, or throws the error its state calls for (§5.1). */
  private liveStream(id: number, what: string): Stream | null {
    const s = this.streams.get(id);
    if (s) return s;
    if (this.isIdle(id)) throw connectionError(ErrorCode.PROTOCOL_ERROR, `${what} on idle stream ${id}`);
    const how = this.closed.get(id);
    if (how === "reset-by-us") return null; // frames in flight when we reset it: ignored (§5.4.2)
    if (how === undefined && !this.remembersAll(id)) return null; // long closed and forgotten
    throw streamError(ErrorCode.STREAM_CLOSED, id, `${what} on closed stream`);
  }

  /** Whether `closed` still holds every closed stream as far back as `id`. */
  private remembersAll(id: number): boolean {
    const first = this.closed.keys().next();
    return first.done === true || id >= first.value || this.closed.size < this.o.closedStreamsRemembered;
  }

  private onData(id: number, data: Uint8Array, endStream: boolean, flowLength: number): void {
    if (flowLength > this.connRecvWindow) {
      throw connectionError(
        ErrorCode.FLOW_CONTROL_ERROR,
        `DATA of ${flowLength} bytes past the connection window`,
      );
    }
    this.connRecvWindow -= flowLength;
    let s: Stream | null;
    try {
      s = this.liveStream(id, "DATA");
    } catch (e) {
      this.giveBackConnection(flowLength);
      throw e;
    }
    if (!s) return this.giveBackConnection(flowLength);
    if (s.state === "half-closed-remote") {
      this.giveBackConnection(flowLength);
      throw streamError(ErrorCode.STREAM_CLOSED, id, "DATA after END_STREAM");
    }
    if (!s.gotFinalHeaders) {
      this.giveBackConnection(flowLength);
      throw streamError(ErrorCode.PROTOCOL_ERROR, id, "DATA before HEADERS");
    }
    if (flowLength > s.recvWindow) {
      this.giveBackConnection(flowLength);
      throw streamError(
        ErrorCode.FLOW_CONTROL_ERROR,
        id,
        `DATA of ${flowLength} bytes past the stream window`,
      );
    }
    s.recvWindow -= flowLength;
    s.received += data.length;
    if (
      s.contentLength >= 0 && (s.received > s.contentLength || (endStream && s.received !== s.contentLength))
    ) {
      this.giveBackConnection(flowLength);
      throw streamError(
        ErrorCode.PROTOCOL_ERROR,
        id,
        `body of ${s.received}+ bytes, content-length ${s.contentLength}`,
      );
    }
    // Padding is flow-controlled but nobody consumes it: give it back at once.
    const padding = flowLength - data.length;
    if (padding > 0) this.consumeOn(s, padding);
    this.events.push({ type: "data", streamId: id, data, endStream });
    if (this.o.autoConsume && data.length > 0) this.consumeOn(s, data.length);
    if (endStream) this.remoteEnded(s);
  }

  private giveBackConnection(n: number): void {
    if (n === 0) return;
    this.connRecvUnacked += n;
    this.maybeUpdateConnection();
  }

  private maybeUpdateConnection(): void {
    if (this.connRecvUnacked >= this.o.connectionWindowSize / 2) {
      this.frame({ type: "window_update", streamId: 0, increment: this.connRecvUnacked });
      this.connRecvWindow += this.connRecvUnacked;
      this.connRecvUnacked = 0;
    }
  }

  /**
   * The application has taken `n` body bytes of `streamId`: re-open the windows for them. Call it
   * for every byte of every `data` event, also after the stream ended or was reset, or the
   * connection window shrinks for good.
   */
  consume(streamId: number, n: number): void {
    const s = this.streams.get(streamId);
    if (s) this.consumeOn(s, n);
    else this.giveBackConnection(n);
  }

  private consumeOn(s: Stream, n: number): void {
    s.recvUnacked += n;
    if (s.state !== "half-closed-remote" && s.recvUnacked >= this.o.initialWindowSize / 2) {
      this.frame({ type: "window_update", streamId: s.id, increment: s.recvUnacked });
      s.recvWindow += s.recvUnacked;
      s.recvUnacked = 0;
    }
    this.giveBackConnection(n);
  }

  private onHeaderBlock(id: number, block: Uint8Array, endStream: boolean): void {
    // Decode first, whatever becomes of the stream: the HPACK table must stay in step.
    const decoded = this.decoder.decode(block);
    let s = this.streams.get(id);
    let kind: "request" | "response" | "informational" | "trailers";
    if (!s) {
      if (!this.isPeerStream(id)) {
        // Our own stream: idle (a push or a made-up id) or closed; liveStream() throws for those,
        // or returns null when we reset the stream and the frame was in flight.
        this.liveStream(id, "HEADERS");
        return;
      }
      if (id <= this.lastPeerStreamId) {
        const how = this.closed.get(id);
        if (how === "reset-by-us") return;
        if (how !== undefined) {
          throw connectionError(ErrorCode.STREAM_CLOSED, `HEADERS on closed stream ${id}`);
        }
        throw connectionError(ErrorCode.PROTOCOL_ERROR, `stream id ${id} not above ${this.lastPeerStreamId}`);
      }
      // A new peer stream (a request; clients refuse pushes, so only servers get here).
      this.lastPeerStreamId = id;
      if (this.goawaySentLast >= 0) {
        // After our GOAWAY new streams are ignored (§6.8), and so are their later frames.
        this.noteClosed(id, "reset-by-us");
        return;
      }
      if (this.peerOpen >= this.o.maxConcurrentStreams) {
        this.noteClosed(id, "reset-by-us");
        throw streamError(
          ErrorCode.REFUSED_STREAM,
          id,
          `over ${this.o.maxConcurrentStreams} concurrent streams`,
        );
      }
      s = this.newStream(id, "open");
      this.peerOpen++;
      this.counters.streamsOpened++;
      kind = "request";
    } else {
      if (s.state === "half-closed-remote") {
        throw streamError(ErrorCode.STREAM_CLOSED, id, "HEADERS after END_STREAM");
      }
      if (!s.gotFinalHeaders && this.role === "client") {
        kind = "response";
      } else {
        kind = "trailers";
        if (!endStream) throw streamError(ErrorCode.PROTOCOL_ERROR, id, "trailers without END_STREAM");
      }
    }
    if (decoded.tooLarge) {
      this.counters.headerListsTooLarge++;
      throw streamError(
        ErrorCode.ENHANCE_YOUR_CALM,
        id,
        `header list of ${decoded.size} bytes over ${this.o.maxHeaderListSize}`,
      );
    }
    const problem = this.checkFields(decoded.headers, kind, s);
    if (problem) throw streamError(ErrorCode.PROTOCOL_ERROR, id, `malformed: ${problem}`);
    if (kind === "response") {
      const status = decoded.headers[0]![1];
      if (status.startsWith("1")) {
        if (endStream) throw streamError(ErrorCode.PROTOCOL_ERROR, id, "1xx response with END_STREAM");
        kind = "informational";
      } else s.gotFinalHeaders = true;
    }
    if (kind === "request") s.gotFinalHeaders = true;
    this.events.push({ type: "headers", streamId: id, kind, headers: decoded.headers, endStream });
    if (endStream) {
      // The body ends here: it must match content-length (responses to HEAD and 304s carry
      // a content-length without a body, and a client cannot tell those apart here).
      if (this.role === "server" && s.contentLength >= 0 && s.received !== s.contentLength) {
        this.events.pop();
        throw streamError(
          ErrorCode.PROTOCOL_ERROR,
          id,
          `body of ${s.received} bytes, content-length ${s.contentLength}`,
        );
      }
      this.remoteEnded(s);
    }
  }

  /** §8.2-8.3: a malformed message's reason, or null. */
  private checkFields(fields: HeaderField[], kind: string, s: Stream): string | null {
    let regular = false;
    const pseudo = new Map<string, string>();
    for (const [name, value] of fields) {
      if (name.length === 0) return "empty field name";
      for (let i = name.charCodeAt(0) === 0x3a ? 1 : 0; i < name.length; i++) {
        const c = name.charCodeAt(i);
        if (c <= 0x20 || (c >= 0x41 && c <= 0x5a) || c >= 0x7f) {
          return `invalid character in field name ${JSON.stringify(name)}`;
        }
      }
      for (let i = 0; i < value.length; i++) {
        const c = value.charCodeAt(i);
        if (c === 0 || c === 0x0a || c === 0x0d) return `invalid character in the value of ${name}`;
      }
      if (value.length > 0) {
        const first = value.charCodeAt(0), last = value.charCodeAt(value.length - 1);
        if (first === 0x20 || first === 0x09 || last === 0x20 || last === 0x09) {
          return `whitespace around the value of ${name}`;
        }
      }
      if (name.charCodeAt(0) === 0x3a) {
        if (regular) return `pseudo-field ${name} after a regular field`;
        if (kind === "trailers") return `pseudo-field ${name} in trailers`;
        const allowed = kind === "request" ? REQUEST_PSEUDO.has(name) : name === ":status";
        if (!allowed) return `pseudo-field ${name} not allowed here`;
        if (pseudo.has(name)) return `pseudo-field ${name} twice`;
        pseudo.set(name, value);
        continue;
      }
      regular = true;
      if (CONNECTION_SPECIFIC.has(name)) return `connection-specific field ${name}`;
      if (name === "te" && value !== "trailers") return `te: ${value}`;
      if (name === "content-length" && kind !== "trailers") {
        if (!/^[0-9]{1,15}$/.test(value)) return `content-length ${JSON.stringify(value)}`;
        const n = Number(value);
        if (s.contentLength >= 0 && s.contentLength !== n) return "differing content-length values";
        s.contentLength = n;
      }
    }
    if (kind === "request") {
      const method = pseudo.get(":method");
      if (method === undefined) return "no :method";
      const protocol = pseudo.get(":protocol");
      if (protocol !== undefined && (method !== "CONNECT" || !this.o.enableConnectProtocol)) {
        return ":protocol without extended CONNECT";
      }
      if (method === "CONNECT" && protocol === undefined) {
        if (pseudo.has(":scheme") || pseudo.has(":path")) return "CONNECT with :scheme or :path";
        if (!pseudo.get(":authority")) return "CONNECT without :authority";
      } else {
        if (!pseudo.has(":scheme")) return "no :scheme";
        const path = pseudo.get(":path");
        if (!path) return "no :path";
      }
    } else if (kind === "response") {
      const status = pseudo.get(":status");
      if (status === undefined || !/^[0-9]{3}$/.test(status)) return `:status ${status ?? "missing"}`;
      if (fields[0]![0] !== ":status") return ":status is not first";
    }
    return null;
  }

  private onReset(id: number, code: number, now: number): void {
    if (this.isIdle(id)) throw connectionError(ErrorCode.PROTOCOL_ERROR, `RST_STREAM on idle stream ${id}`);
    const s = this.streams.get(id);
    if (!s) return; // already closed: nothing to do
    this.counters.resetsReceived++;
    this.closeStream(s, "reset-by-peer");
    this.events.push({ type: "reset", streamId: id, code, remote: true });
    this.spendResetToken(now);
  }

  private spendResetToken(now: number): void {
    if (!this.resets.take(now)) {
      this.flood("resets");
      throw connectionError(
        ErrorCode.ENHANCE_YOUR_CALM,
        `stream resets past ${this.o.resetBurst} at once or ${this.o.resetRate}/s`,
      );
    }
  }

  private flood(kind: string): void {
    this.counters.floodsStopped++;
    this.counters.floods[kind] = (this.counters.floods[kind] ?? 0) + 1;
  }

  /** A frame that does nothing: fine now and then, a flood past the bucket (§10.5). */
  private idleFrame(now: number, what: string, kind = "idle-frames"): void {
    if (!this.idleFrames.take(now)) {
      this.flood(kind);
      throw connectionError(
        ErrorCode.ENHANCE_YOUR_CALM,
        `${what} frames past ${this.o.idleFrameBurst} at once or ${this.o.idleFrameRate}/s`,
      );
    }
  }

  private onSettings(ack: boolean, settings: [number, number][]): void {
    if (ack) {
      if (this.unackedSettings === 0) return; // an unsolicited ACK: ignored
      if (--this.unackedSettings === 0) this.settingsDeadline = null;
      // Our settings are in force now.
      this.decoder.maxTableSize = this.o.headerTableSize;
      if (this.decoder.table.maxSize > this.o.headerTableSize) {
        this.decoder.table.setMaxSize(this.o.headerTableSize);
      }
      const delta = this.o.initialWindowSize - this.streamRecvInitial;
      this.streamRecvInitial = this.o.initialWindowSize;
      for (const s of this.streams.values()) s.recvWindow += delta;
      this.events.push({ type: "settings-ack" });
      return;
    }
    for (const [id, value] of settings) {
      switch (id) {
        case Setting.HEADER_TABLE_SIZE:
          this.encoder.setMaxTableSize(Math.min(value, this.o.encoderTableSize));
          break;
        case Setting.ENABLE_PUSH:
          if (this.role === "client" && value === 1) {
            throw connectionError(ErrorCode.PROTOCOL_ERROR, "a server set SETTINGS_ENABLE_PUSH to 1");
          }
          break;
        case Setting.MAX_CONCURRENT_STREAMS:
          this.peerMaxConcurrent = value;
          break;
        case Setting.INITIAL_WINDOW_SIZE: {
          const delta = value - this.peerInitialWindow;
          this.peerInitialWindow = value;
          for (const s of this.streams.values()) {
            s.sendWindow += delta;
            if (s.sendWindow > MAX_WINDOW) {
              throw connectionError(ErrorCode.FLOW_CONTROL_ERROR, `stream ${s.id} window past 2^31-1`);
            }
          }
          break;
        }
        case Setting.MAX_FRAME_SIZE:
          this.peerMaxFrameSize = value;
          break;
        case Setting.MAX_HEADER_LIST_SIZE:
          this.peerMaxHeaderListSize = value;
          break;
        case Setting.ENABLE_CONNECT_PROTOCOL:
          this.peerConnectProtocol = value === 1;
          break;
      }
    }
    this.control({ type: "settings", ack: true, settings: [] });
    this.events.push({ type: "settings", settings });
  }

  private onGoaway(lastStreamId: number, code: number, debug: Uint8Array): void {
    this.goawayReceivedLast = lastStreamId;
    this.counters.goawaysReceived++;
    this.events.push({
      type: "goaway",
      lastStreamId,
      code,
      debug: new TextDecoder().decode(debug.subarray(0, 256)),
      remote: true,
    });
    for (const s of [...this.streams.values()]) {
      if (!this.isPeerStream(s.id) && s.id > lastStreamId) {
        this.closeStream(s, "reset-by-peer");
        this.events.push({ type: "reset", streamId: s.id, code: ErrorCode.REFUSED_STREAM, remote: true });
      }
    }
  }

  private onWindowUpdate(id: number, increment: number): void {
    if (id === 0) {
      this.connSendWindow += increment;
      if (this.connSendWindow > MAX_WINDOW) {
        throw connectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window past 2^31-1");
      }
      return;
    }
    if (this.isIdle(id)) {
      throw connectionError(ErrorCode.PROTOCOL_ERROR, `WINDOW_UPDATE on idle stream ${id}`);
    }
    const s = this.streams.get(id);
    if (!s) return;
    s.sendWindow += increment;
    if (s.sendWindow > MAX_WINDOW) {
      throw streamError(ErrorCode.FLOW_CONTROL_ERROR, id, "stream window past 2^31-1");
    }
  }

  // ---- stream bookkeeping -------------------------------------------------------------------

  private newStream(id: number, state: StreamState): Stream {
    const s: Stream = {
      id,
      state,
      sendWindow: this.peerInitialWindow,
      recvWindow: this.streamRecvInitial,
      recvUnacked: 0,
      gotFinalHeaders: false,
      contentLength: -1,
      received: 0,
      pending: [],
      pendingBytes: 0,
      pendingEnd: false,
      pendingTrailers: null,
      blocked: false,
    };
    this.streams.set(id, s);
    return s;
  }

  private remoteEnded(s: Stream): void {
    if (s.state === "half-closed-local") this.closeStream(s, "ended");
    else s.state = "half-closed-remote";
  }

  private localEnded(s: Stream): void {
    if (s.state === "half-closed-remote") this.closeStream(s, "ended");
    else s.state = "half-closed-local";
  }

  private closeStream(s: Stream, how: ClosedHow): void {
    if (!this.streams.delete(s.id)) return;
    if (this.isPeerStream(s.id)) this.peerOpen--;
    else this.localOpen--;
    // Unconsumed receive credit goes back to the connection window.
    this.noteClosed(s.id, how);
  }

  private noteClosed(id: number, how: ClosedHow): void {
    this.closed.set(id, how);
    if (this.closed.size > this.o.closedStreamsRemembered) {
      this.closed.delete(this.closed.keys().next().value!);
    }
  }

  /** A stream error caused by the peer: RST_STREAM, an event, a reset token. */
  private streamFailed(e: Http2Error, now: number): void {
    this.counters.streamErrors++;
    const s = this.streams.get(e.streamId);
    if (s) this.closeStream(s, "reset-by-us");
    else this.noteClosed(e.streamId, "reset-by-us");
    this.control({ type: "rst_stream", streamId: e.streamId, code: e.code });
    this.counters.resetsSent++;
    this.events.push({
      type: "reset",
      streamId: e.streamId,
      code: e.code,
      remote: false,
      message: e.message,
    });
    try {
      this.spendResetToken(now);
    } catch (flood) {
      this.fail(flood as Http2Error);
    }
  }

  /** A connection error: GOAWAY with the last peer stream, and nothing more is read. */
  private fail(e: Http2Error): void {
    if (this.failed) return;
    this.failed = e;
    const name = errorName(e.code);
    this.counters.connectionErrors[name] = (this.counters.connectionErrors[name] ?? 0) + 1;
    const debug = new TextEncoder().encode(e.message.slice(0, 200));
    this.frame({ type: "goaway", lastStreamId: this.lastPeerStreamId, code: e.code, debug });
    this.counters.goawaysSent[name] = (this.counters.goawaysSent[name] ?? 0) + 1;
    this.goawaySentLast = this.lastPeerStreamId;
    this.events.push({
      type: "goaway",
      lastStreamId: this.lastPeerStreamId,
      code: e.code,
      debug: e.message,
      remote: false,
    });
  }

  private frame(f: Frame): void {
    this.outbox.bytes(serializeFrame(f));
    this.counters.framesOut++;
  }

  /** A frame sent in answer to the peer: counted against the queued-control bound. */
  private control(f: Frame): void {
    this.frame(f);
    if (++this.queuedControl > this.o.maxQueuedControlFrames) {
      this.flood("control-queue");
      throw connectionError(
        ErrorCode.ENHANCE_YOUR_CALM,
        `over ${this.o.maxQueuedControlFrames} control frames queued in answer (SETTINGS/PING/reset flood)`,
      );
    }
  }

  // ---- output -------------------------------------------------------------------------------

  /**
   * Opens a stream with a request (client). Returns its id. Throws when the peer's
   * SETTINGS_MAX_CONCURRENT_STREAMS is reached or after GOAWAY.
   */
  request(headers: readonly HeaderField[], endStream: boolean): number {
    if (this.role !== "client") throw new Error("request() is for clients");
    if (this.failed || this.goawayReceivedLast >= 0) throw new Error("connection is going away");
    if (this.localOpen >= this.peerMaxConcurrent) throw new Error("peer's concurrent stream limit reached");
    const id = this.nextLocalStreamId;
    this.nextLocalStreamId += 2;
    const s = this.newStream(id, "open");
    s.gotFinalHeaders = false;
    this.localOpen++;
    this.counters.streamsOpened++;
    this.writeHeaders(s, headers, endStream);
    return id;
  }

  /**
   * Sends a header block on an open stream (a response; trailers go through `sendTrailers`).
   * Returns false, sending nothing, when the stream has been closed meanwhile.
   */
  sendHeaders(streamId: number, headers: readonly HeaderField[], endStream: boolean): boolean {
    const s = this.sendable(streamId);
    if (!s) return false;
    if (s.pendingBytes > 0 || s.pendingEnd) throw new Error("headers after queued data: use sendTrailers()");
    this.writeHeaders(s, headers, endStream);
    return true;
  }

  /** Queues body bytes; they go out as the peer's windows allow (`bufferedData` shows what waits). */
  sendData(streamId: number, data: Uint8Array, endStream = false): boolean {
    const s = this.sendable(streamId);
    if (!s) return false;
    if (data.length > 0) {
      s.pending.push(data);
      s.pendingBytes += data.length;
    }
    if (endStream) s.pendingEnd = true;
    this.flush();
    return true;
  }

  /** Ends the stream with trailers, after the queued data. */
  sendTrailers(streamId: number, headers: readonly HeaderField[]): boolean {
    const s = this.sendable(streamId);
    if (!s) return false;
    s.pendingTrailers = [...headers];
    s.pendingEnd = true;
    this.flush();
    return true;
  }

  /** Resets a stream (RST_STREAM); queued data is dropped. */
  reset(streamId: number, code: number = ErrorCode.CANCEL): void {
    const s = this.streams.get(streamId);
    if (!s) return;
    this.closeStream(s, "reset-by-us");
    this.frame({ type: "rst_stream", streamId, code });
    this.counters.resetsSent++;
  }

  /** Sends a PING with 8 bytes of data. */
  ping(data: Uint8Array = new Uint8Array(8)): void {
    this.frame({ type: "ping", ack: false, data });
  }

  /** Sends GOAWAY: no new peer streams past the last one seen; open ones may finish. */
  goaway(code: number = ErrorCode.NO_ERROR, debug = ""): void {
    this.goawaySentLast = this.lastPeerStreamId;
    const name = errorName(code);
    this.counters.goawaysSent[name] = (this.counters.goawaysSent[name] ?? 0) + 1;
    this.frame({
      type: "goaway",
      lastStreamId: this.lastPeerStreamId,
      code,
      debug: new TextEncoder().encode(debug),
    });
  }

  /**
   * The stream to send on; null when it has been closed (reset by either side, or by a GOAWAY):
   * the events of one `receive()` can hold a request and its reset, so sending on a stream that
   * just went away is normal and a no-op. Sending on a stream never opened is a bug: it throws.
   */
  private sendable(streamId: number): Stream | null {
    const s = this.streams.get(streamId);
    if (!s) {
      if (this.isIdle(streamId)) throw new Error(`stream ${streamId} was never opened`);
      return null;
    }
    if (s.state === "half-closed-local" || s.pendingEnd) throw new Error(`stream ${streamId} already ended`);
    return s;
  }

  private writeHeaders(s: Stream, headers: readonly HeaderField[], endStream: boolean): void {
    // The encoder's own buffer: copied into the outbox before the next block is encoded.
    const block = this.encoder.encodeTemporary(headers);
    // HEADERS, then CONTINUATIONs as the peer's SETTINGS_MAX_FRAME_SIZE needs (§4.3).
    const max = this.peerMaxFrameSize;
    let o = 0;
    do {
      const n = Math.min(max, block.length - o);
      const last = o + n >= block.length;
      const flags = last ? Flag.END_HEADERS : 0;
      if (o === 0) this.outbox.header(n, FrameType.HEADERS, flags | (endStream ? Flag.END_STREAM : 0), s.id);
      else this.outbox.header(n, FrameType.CONTINUATION, flags, s.id);
      this.outbox.copy(n === block.length ? block : block.subarray(o, o + n));
      o += n;
      this.counters.framesOut++;
    } while (o < block.length);
    if (endStream) this.localEnded(s);
  }

  /** A DATA frame went out: the peer may answer it with WINDOW_UPDATEs. */
  private earnWindowUpdates(): void {
    this.windowUpdateCredit = Math.min(
      MAX_WINDOW_UPDATE_CREDIT,
      this.windowUpdateCredit + WINDOW_UPDATES_PER_DATA,
    );
  }

  /** Sends what the windows allow of each stream's queued data, in turn. */
  private flush(inReceive = false): void {
    for (const s of this.streams.values()) {
      if (s.pendingBytes === 0 && !s.pendingEnd) continue;
      while (s.pendingBytes > 0) {
        const room = Math.min(this.connSendWindow, s.sendWindow, this.peerMaxFrameSize);
        if (room <= 0) break;
        const head = s.pending[0]!;
        const n = Math.min(room, head.length);
        const chunk = n === head.length ? head : head.subarray(0, n);
        if (n === head.length) s.pending.shift();
        else s.pending[0] = head.subarray(n);
        s.pendingBytes -= n;
        this.connSendWindow -= n;
        s.sendWindow -= n;
        const last = s.pendingBytes === 0 && s.pendingEnd && !s.pendingTrailers;
        this.outbox.header(n, FrameType.DATA, last ? Flag.END_STREAM : 0, s.id);
        this.outbox.bytes(chunk);
        this.counters.framesOut++;
        this.earnWindowUpdates();
        if (last) {
          s.pendingEnd = false;
          this.localEnded(s);
        }
      }
      if (s.pendingBytes > 0) {
        s.blocked = true;
        continue;
      }
      if (s.blocked && inReceive) {
        s.blocked = false;
        this.events.push({ type: "writable", streamId: s.id });
      }
      if (s.pendingEnd && s.state !== "half-closed-local" && this.streams.has(s.id)) {
        s.pendingEnd = false;
        if (s.pendingTrailers) {
          const trailers = s.pendingTrailers;
          s.pendingTrailers = null;
          this.writeHeaders(s, trailers, true);
        } else {
          this.frame({ type: "data", streamId: s.id, data: new Uint8Array(0), endStream: true });
          this.localEnded(s);
        }
      }
    }
  }
}

/** Tokens refilled at `rate` a second up to `burst`, by the time given (ms). */
class TokenBucket {
  private tokens: number;
  private clock = -1;
  constructor(private readonly burst: number, private readonly rate: number) {
    this.tokens = burst;
  }
  /** Takes a token; false when none is left. */
  take(now: number): boolean {
    if (this.clock >= 0 && now > this.clock) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.clock) * this.rate) / 1000);
    }
    if (now > this.clock) this.clock = now;
    return --this.tokens >= 0;
  }
}
