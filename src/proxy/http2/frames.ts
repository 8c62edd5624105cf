/**
 * HTTP/2 frames (RFC 9113 §4, §6): parse and serialize every frame type, pure and synchronous.
 *
 * Parsing checks what can be checked on one frame alone: lengths, the stream id each type needs
 * (zero or not), padding, the SETTINGS values' ranges, PRIORITY's self-dependency, a zero
 * WINDOW_UPDATE. A violation throws {@link Http2Error} with the RFC's error code and its scope:
 * `streamId` 0 for a connection error (GOAWAY), otherwise a stream error (RST_STREAM). Rules that
 * need the connection's state (stream states, CONTINUATION order, flow control) live in
 * `connection.ts`. Unknown frame types are returned as `unknown` so the caller can ignore them
 * (§4.1); unknown flags are ignored.
 * @module
 */

import { appendBytes } from "../layer.ts";

/** Frame type codes (§6). */
export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

/** Flags (§6). */
export const Flag = {
  END_STREAM: 0x1,
  ACK: 0x1,
  END_HEADERS: 0x4,
  PADDED: 0x8,
  PRIORITY: 0x20,
} as const;

/** Error codes (§7). */
export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;

const ERROR_NAMES = new Map<number, string>(Object.entries(ErrorCode).map(([k, v]) => [v, k]));

/** The name of an error code (`0xb` → `ENHANCE_YOUR_CALM`), or its hex value when unknown. */
export function errorName(code: number): string {
  return ERROR_NAMES.get(code) ?? `0x${code.toString(16)}`;
}

/** SETTINGS parameters (§6.5.2, RFC 8441). */
export const Setting = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
  ENABLE_CONNECT_PROTOCOL: 0x8,
} as const;

/** Largest flow-control window (§6.9.1). */
export const MAX_WINDOW = 0x7fffffff;
/** SETTINGS_MAX_FRAME_SIZE bounds (§6.5.2). */
export const MIN_MAX_FRAME_SIZE = 16384, MAX_MAX_FRAME_SIZE = 0xffffff;
/** The client connection preface (§3.4). */
export const PREFACE: Uint8Array = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** Frame header length. */
export const FRAME_HEADER_LENGTH = 9;

/**
 * A protocol violation. `streamId` 0 means a connection error (answer: GOAWAY with `code`, then
 * close); otherwise a stream error (answer: RST_STREAM on that stream with `code`).
 */
export class Http2Error extends Error {
  override name = "Http2Error";
  constructor(readonly code: number, readonly streamId: number, message: string) {
    super(`${errorName(code)}${streamId ? ` on stream ${streamId}` : ""}: ${message}`);
  }
  /** True for a connection error. */
  get connection(): boolean {
    return this.streamId === 0;
  }
}

/** A connection error. */
export function connectionError(code: number, message: string): Http2Error {
  return new Http2Error(code, 0, message);
}

/** A stream error. */
export function streamError(code: number, streamId: number, message: string): Http2Error {
  return new Http2Error(code, streamId, message);
}

/** Stream priority fields (§5.3.2 of RFC 7540; parsed and then ignored, as RFC 9113 allows). */
export interface Priority {
  exclusive: boolean;
  dependency: number;
  /** Weight 1..256. */
  weight: number;
}

/** A parsed frame. `padLength` counts the padding bytes plus the length octet, for flow control. */
export type Frame =
  | { type: "data"; streamId: number; data: Uint8Array; endStream: boolean; padLength?: number }
  | {
    type: "headers";
    streamId: number;
    block: Uint8Array;
    endStream: boolean;
    endHeaders: boolean;
    priority?: Priority;
    padLength?: number;
  }
  | { type: "priority"; streamId: number; priority: Priority }
  | { type: "rst_stream"; streamId: number; code: number }
  | { type: "settings"; ack: boolean; settings: [id: number, value: number][] }
  | {
    type: "push_promise";
    streamId: number;
    promisedStreamId: number;
    block: Uint8Array;
    endHeaders: boolean;
    padLength?: number;
  }
  | { type: "ping"; ack: boolean; data: Uint8Array }
  | { type: "goaway"; lastStreamId: number; code: number; debug: Uint8Array }
  | { type: "window_update"; streamId: number; increment: number }
  | { type: "continuation"; streamId: number; block: Uint8Array; endHeaders: boolean }
  | { type: "unknown"; frameType: number; flags: number; streamId: number; payload: Uint8Array };

/** The 9-byte frame header (§4.1). */
export interface FrameHeader {
  length: number;
  type: number;
  flags: number;
  streamId: number;
}

/** Reads the frame header at `offset` (the caller checks that 9 bytes are there). */
export function readFrameHeader(buf: Uint8Array, offset = 0): FrameHeader {
  return {
    length: (buf[offset]! << 16) | (buf[offset + 1]! << 8) | buf[offset + 2]!,
    type: buf[offset + 3]!,
    flags: buf[offset + 4]!,
    // The reserved bit is ignored on receipt (§4.1).
    streamId: ((buf[offset + 5]! & 0x7f) << 24 | (buf[offset + 6]! << 16) | (buf[offset + 7]! << 8) |
      buf[offset + 8]!) >>> 0,
  };
}

function u32(p: Uint8Array, o: number): number {
  return ((p[o]! << 24) | (p[o + 1]! << 16) | (p[o + 2]! << 8) | p[o + 3]!) >>> 0;
}

/** Strips padding (§6.1): returns the content and the bytes padding took (length octet included). */
function unpad(h: FrameHeader, p: Uint8Array): [Uint8Array, number | undefined] {
  if ((h.flags & Flag.PADDED) === 0) return [p, undefined];
  if (p.length < 1) throw connectionError(ErrorCode.FRAME_SIZE_ERROR, "padded frame without a pad length");
  const pad = p[0]!;
  if (pad >= p.length) {
    throw connectionError(
      ErrorCode.PROTOCOL_ERROR,
      `padding ${pad} not shorter than the payload ${p.length}`,
    );
  }
  return [p.subarray(1, p.length - pad), pad + 1];
}

function readPriority(p: Uint8Array, o: number): Priority {
  const word = u32(p, o);
  return { exclusive: (word & 0x80000000) !== 0, dependency: word & 0x7fffffff, weight: p[o + 4]! + 1 };
}

/**
 * Parses one frame from its header and payload (the caller has checked the length against its
 * SETTINGS_MAX_FRAME_SIZE). Payload views share the input's memory.
 */
export function parseFrame(h: FrameHeader, payload: Uint8Array): Frame {
  const { type, flags, streamId } = h;
  switch (type) {
    case FrameType.DATA: {
      needStream(streamId, "DATA");
      const [data, padLength] = unpad(h, payload);
      const f: Frame = { type: "data", streamId, data, endStream: (flags & Flag.END_STREAM) !== 0 };
      if (padLength !== undefined) f.padLength = padLength;
      return f;
    }
    case FrameType.HEADERS: {
      needStream(streamId, "HEADERS");
      let [block, padLength] = unpad(h, payload);
      let priority: Priority | undefined;
      if (flags & Flag.PRIORITY) {
        if (block.length < 5) {
          throw connectionError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority");
        }
        priority = readPriority(block, 0);
        block = block.subarray(5);
        if (priority.dependency === streamId) {
          throw streamError(ErrorCode.PROTOCOL_ERROR, streamId, "stream depends on itself");
        }
      }
      const f: Frame = {
        type: "headers",
        streamId,
        block,
        endStream: (flags & Flag.END_STREAM) !== 0,
        endHeaders: (flags & Flag.END_HEADERS) !== 0,
      };
      if (priority) f.priority = priority;
      if (padLength !== undefined) f.padLength = padLength;
      return f;
    }
    case FrameType.PRIORITY: {
      needStream(streamId, "PRIORITY");
      if (payload.length !== 5) {
        throw streamError(ErrorCode.FRAME_SIZE_ERROR, streamId, `PRIORITY of ${payload.length} bytes`);
      }
      const priority = readPriority(payload, 0);
      if (priority.dependency === streamId) {
        throw streamError(ErrorCode.PROTOCOL_ERROR, streamId, "stream depends on itself");
      }
      return { type: "priority", streamId, priority };
    }
    case FrameType.RST_STREAM:
      needStream(streamId, "RST_STREAM");
      if (payload.length !== 4) {
        throw connectionError(ErrorCode.FRAME_SIZE_ERROR, `RST_STREAM of ${payload.length} bytes`);
      }
      return { type: "rst_stream", streamId, code: u32(payload, 0) };
    case FrameType.SETTINGS: {
      need0(streamId, "SETTINGS");
      const ack = (flags & Flag.ACK) !== 0;
      if (ack && payload.length !== 0) {
        throw connectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
      }
      if (payload.length % 6 !== 0) {
        throw connectionError(ErrorCode.FRAME_SIZE_ERROR, `SETTINGS of ${payload.length} bytes`);
      }
      const settings: [number, number][] = [];
      for (let o = 0; o < payload.length; o += 6) {
        const id = (payload[o]! << 8) | payload[o + 1]!;
        const value = u32(payload, o + 2);
        checkSetting(id, value);
        settings.push([id, value]);
      }
      return { type: "settings", ack, settings };
    }
    case FrameType.PUSH_PROMISE: {
      needStream(streamId, "PUSH_PROMISE");
      const [content, padLength] = unpad(h, payload);
      if (content.length < 4) throw connectionError(ErrorCode.FRAME_SIZE_ERROR, "PUSH_PROMISE too short");
      const f: Frame = {
        type: "push_promise",
        streamId,
        promisedStreamId: u32(content, 0) & 0x7fffffff,
        block: content.subarray(4),
        endHeaders: (flags & Flag.END_HEADERS) !== 0,
      };
      if (padLength !== undefined) f.padLength = padLength;
      return f;
    }
    case FrameType.PING:
      need0(streamId, "PING");
      if (payload.length !== 8) {
        throw connectionError(ErrorCode.FRAME_SIZE_ERROR, `PING of ${payload.length} bytes`);
      }
      return { type: "ping", ack: (flags & Flag.ACK) !== 0, data: payload };
    case FrameType.GOAWAY:
      need0(streamId, "GOAWAY");
      if (payload.length < 8) {
        throw connectionError(ErrorCode.FRAME_SIZE_ERROR, `GOAWAY of ${payload.length} bytes`);
      }
      return {
        type: "goaway",
        lastStreamId: u32(payload, 0) & 0x7fffffff,
        code: u32(payload, 4),
        debug: payload.subarray(8),
      };
    case FrameType.WINDOW_UPDATE: {
      if (payload.length !== 4) {
        throw connectionError(ErrorCode.FRAME_SIZE_ERROR, `WINDOW_UPDATE of ${payload.length} bytes`);
      }
      const increment = u32(payload, 0) & 0x7fffffff;
      if (increment === 0) {
        throw new Http2Error(ErrorCode.PROTOCOL_ERROR, streamId, "WINDOW_UPDATE with increment 0");
      }
      return { type: "window_update", streamId, increment };
    }
    case FrameType.CONTINUATION:
      needStream(streamId, "CONTINUATION");
      return { type: "continuation", streamId, block: payload, endHeaders: (flags & Flag.END_HEADERS) !== 0 };
    default:
      return { type: "unknown", frameType: type, flags, streamId, payload };
  }
}

/** Frames of connection scope: stream 0 only. */
function need0(streamId: number, what: string): void {
  if (streamId !== 0) throw connectionError(ErrorCode.PROTOCOL_ERROR, `${what} on stream ${streamId}`);
}

/** Frames of stream scope: never stream 0. */
function needStream(streamId: number, what: string): void {
  if (streamId === 0) throw connectionError(ErrorCode.PROTOCOL_ERROR, `${what} on stream 0`);
}

/** Checks one SETTINGS value's range (§6.5.2, RFC 8441 §3). */
export function checkSetting(id: number, value: number): void {
  switch (id) {
    case Setting.ENABLE_PUSH:
    case Setting.ENABLE_CONNECT_PROTOCOL:
      if (value > 1) throw connectionError(ErrorCode.PROTOCOL_ERROR, `setting ${id} = ${value}, not 0 or 1`);
      break;
    case Setting.INITIAL_WINDOW_SIZE:
      if (value > MAX_WINDOW) {
        throw connectionError(
          ErrorCode.FLOW_CONTROL_ERROR,
          `SETTINGS_INITIAL_WINDOW_SIZE ${value} above 2^31-1`,
        );
      }
      break;
    case Setting.MAX_FRAME_SIZE:
      if (value < MIN_MAX_FRAME_SIZE || value > MAX_MAX_FRAME_SIZE) {
        throw connectionError(ErrorCode.PROTOCOL_ERROR, `SETTINGS_MAX_FRAME_SIZE ${value} out of range`);
      }
      break;
  }
}

// ---- serializing ---------------------------------------------------------------------------

/** Writes a frame header and `payloadLength` bytes of room after it; returns the whole frame buffer. */
function frameBuffer(type: number, flags: number, streamId: number, payloadLength: number): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_LENGTH + payloadLength);
  out[0] = payloadLength >>> 16;
  out[1] = (payloadLength >>> 8) & 0xff;
  out[2] = payloadLength & 0xff;
  out[3] = type;
  out[4] = flags;
  writeU32(out, 5, streamId & 0x7fffffff);
  return out;
}

function writeU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

/**
 * Serializes a frame. Padding, when `padLength` is given, is that many bytes in all (the length
 * octet plus zeros), so a parsed frame serializes back to the same bytes.
 */
export function serializeFrame(f: Frame): Uint8Array {
  switch (f.type) {
    case "data":
      return padded(FrameType.DATA, f.endStream ? Flag.END_STREAM : 0, f.streamId, f.data, f.padLength);
    case "headers": {
      let flags = (f.endStream ? Flag.END_STREAM : 0) | (f.endHeaders ? Flag.END_HEADERS : 0);
      let content = f.block;
      if (f.priority) {
        flags |= Flag.PRIORITY;
        content = new Uint8Array(5 + f.block.length);
        writePriority(content, 0, f.priority);
        content.set(f.block, 5);
      }
      return padded(FrameType.HEADERS, flags, f.streamId, content, f.padLength);
    }
    case "priority": {
      const out = frameBuffer(FrameType.PRIORITY, 0, f.streamId, 5);
      writePriority(out, 9, f.priority);
      return out;
    }
    case "rst_stream": {
      const out = frameBuffer(FrameType.RST_STREAM, 0, f.streamId, 4);
      writeU32(out, 9, f.code);
      return out;
    }
    case "settings": {
      const out = frameBuffer(FrameType.SETTINGS, f.ack ? Flag.ACK : 0, 0, 6 * f.settings.length);
      f.settings.forEach(([id, value], i) => {
        out[9 + 6 * i] = id >> 8;
        out[10 + 6 * i] = id & 0xff;
        writeU32(out, 11 + 6 * i, value);
      });
      return out;
    }
    case "push_promise": {
      const content = new Uint8Array(4 + f.block.length);
      writeU32(content, 0, f.promisedStreamId & 0x7fffffff);
      content.set(f.block, 4);
      return padded(
        FrameType.PUSH_PROMISE,
        f.endHeaders ? Flag.END_HEADERS : 0,
        f.streamId,
        content,
        f.padLength,
      );
    }
    case "ping": {
      if (f.data.length !== 8) throw new RangeError("PING data must be 8 bytes");
      const out = frameBuffer(FrameType.PING, f.ack ? Flag.ACK : 0, 0, 8);
      out.set(f.data, 9);
      return out;
    }
    case "goaway": {
      const out = frameBuffer(FrameType.GOAWAY, 0, 0, 8 + f.debug.length);
      writeU32(out, 9, f.lastStreamId & 0x7fffffff);
      writeU32(out, 13, f.code);
      out.set(f.debug, 17);
      return out;
    }
    case "window_update": {
      const out = frameBuffer(FrameType.WINDOW_UPDATE, 0, f.streamId, 4);
      writeU32(out, 9, f.increment & 0x7fffffff);
      return out;
    }
    case "continuation": {
      const out = frameBuffer(
        FrameType.CONTINUATION,
        f.endHeaders ? Flag.END_HEADERS : 0,
        f.streamId,
        f.block.length,
      );
      out.set(f.block, 9);
      return out;
    }
    case "unknown": {
      const out = frameBuffer(f.frameType, f.flags, f.streamId, f.payload.length);
      out.set(f.payload, 9);
      return out;
    }
  }
}

function writePriority(b: Uint8Array, o: number, p: Priority): void {
  writeU32(b, o, (p.dependency & 0x7fffffff) | (p.exclusive ? 0x80000000 : 0));
  b[o + 4] = p.weight - 1;
}

function padded(
  type: number,
  flags: number,
  streamId: number,
  content: Uint8Array,
  padLength?: number,
): Uint8Array {
  if (padLength === undefined) {
    const out = frameBuffer(type, flags, streamId, content.length);
    out.set(content, 9);
    return out;
  }
  if (padLength < 1 || padLength > 256) {
    throw new RangeError("padLength is 1..256 (the length octet included)");
  }
  const out = frameBuffer(type, flags | Flag.PADDED, streamId, content.length + padLength);
  out[9] = padLength - 1;
  out.set(content, 10);
  return out;
}

/**
 * A header block as HEADERS followed by as many CONTINUATION frames as `maxFrameSize` needs
 * (§4.3), concatenated.
 */
export function headerFrames(
  streamId: number,
  block: Uint8Array,
  endStream: boolean,
  maxFrameSize: number,
): Uint8Array[] {
  const out: Uint8Array[] = [];
  let o = 0;
  do {
    const chunk = block.subarray(o, o + maxFrameSize);
    o += chunk.length;
    const last = o >= block.length;
    out.push(serializeFrame(
      out.length === 0
        ? { type: "headers", streamId, block: chunk, endStream, endHeaders: last }
        : { type: "continuation", streamId, block: chunk, endHeaders: last },
    ));
  } while (o < block.length);
  return out;
}

/**
 * Splits a byte stream into frames: `push()` bytes, then `next()` until it returns null. A frame
 * longer than `maxFrameSize` (our SETTINGS_MAX_FRAME_SIZE) is a connection FRAME_SIZE_ERROR as
 * soon as its header is seen, so an oversized frame is never buffered. Returned payloads are
 * views that stay valid (the buffer is never written again where a view was handed out).
 */
export class FrameReader {
  private buf: Uint8Array = new Uint8Array(0);
  private pos = 0;
  constructor(public maxFrameSize: number = MIN_MAX_FRAME_SIZE) {}

  /** Bytes buffered and not yet returned as frames. */
  get buffered(): number {
    return this.buf.length - this.pos;
  }

  push(data: Uint8Array): void {
    if (data.length === 0) return;
    // appendBytes grows in place when it can, so a frame arriving a byte at a time costs linear
    // copying, not quadratic.
    this.buf = this.pos === this.buf.length ? data : appendBytes(this.buf.subarray(this.pos), data);
    this.pos = 0;
  }

  /** The next complete frame's header and payload, or null when more bytes are needed. */
  nextRaw(): [FrameHeader, Uint8Array] | null {
    if (this.buf.length - this.pos < FRAME_HEADER_LENGTH) return null;
    const h = readFrameHeader(this.buf, this.pos);
    if (h.length > this.maxFrameSize) {
      throw connectionError(
        ErrorCode.FRAME_SIZE_ERROR,
        `frame of ${h.length} bytes above SETTINGS_MAX_FRAME_SIZE ${this.maxFrameSize}`,
      );
    }
    const end = this.pos + FRAME_HEADER_LENGTH + h.length;
    if (end > this.buf.length) return null;
    const payload = this.buf.subarray(this.pos + FRAME_HEADER_LENGTH, end);
    this.pos = end;
    return [h, payload];
  }

  /** The next complete frame parsed, or null. */
  next(): Frame | null {
    const raw = this.nextRaw();
    return raw ? parseFrame(raw[0], raw[1]) : null;
  }
}

/** Payloads at least this long are queued as views (copied once, when taken); shorter ones are copied in. */
const OUTBOX_VIEW_MIN = 1024;

/**
 * Bytes queued for the peer, taken as one array per write: frame headers and small frames are
 * written into a shared buffer (no array per frame), and large payloads (DATA) are kept as views
 * of the caller's bytes, so each body byte is copied once on its way out (into the taken array).
 */
export class Outbox {
  private buf = new Uint8Array(4096);
  /** Start of the bytes in `buf` not yet sealed into `parts`. */
  private start = 0;
  private pos = 0;
  private parts: Uint8Array[] = [];
  private partBytes = 0;

  /** Bytes queued. */
  get length(): number {
    return this.partBytes + this.pos - this.start;
  }

  /** Writes a frame header (the payload follows with `bytes()`). */
  header(length: number, type: number, flags: number, streamId: number): void {
    const b = this.room(FRAME_HEADER_LENGTH);
    let o = this.pos;
    b[o++] = length >>> 16;
    b[o++] = (length >>> 8) & 0xff;
    b[o++] = length & 0xff;
    b[o++] = type;
    b[o++] = flags;
    writeU32(b, o, streamId & 0x7fffffff);
    this.pos = o + 4;
  }

  /** Queues bytes: a view of a large array (which must not change until taken), a copy of a small one. */
  bytes(data: Uint8Array): void {
    const n = data.length;
    if (n === 0) return;
    if (n >= OUTBOX_VIEW_MIN) {
      this.seal();
      this.parts.push(data);
      this.partBytes += n;
      return;
    }
    const b = this.room(n);
    b.set(data, this.pos);
    this.pos += n;
  }

  /** Queues a copy of `data` (for bytes that will change before they are taken). */
  copy(data: Uint8Array): void {
    const n = data.length;
    if (n === 0) return;
    const b = this.room(n);
    b.set(data, this.pos);
    this.pos += n;
  }

  /** Everything queued, as one array (empty when nothing is); the outbox starts over. */
  take(): Uint8Array {
    if (this.parts.length === 0) {
      const out = this.buf.subarray(this.start, this.pos);
      this.start = this.pos;
      return out;
    }
    this.seal();
    const parts = this.parts;
    this.parts = [];
    const total = this.partBytes;
    this.partBytes = 0;
    if (parts.length === 1) return parts[0]!;
    const all = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    return all;
  }

  /** Ends the current run of bytes in `buf` as a part. */
  private seal(): void {
    if (this.pos === this.start) return;
    this.parts.push(this.buf.subarray(this.start, this.pos));
    this.partBytes += this.pos - this.start;
    this.start = this.pos;
  }

  /**
   * `buf` with `n` bytes free at `pos`. Bytes below `pos` were handed out (or will be, as a part)
   * and are never written again: a full buffer is replaced, not reused.
   */
  private room(n: number): Uint8Array {
    if (this.pos + n > this.buf.length) {
      this.seal();
      this.buf = new Uint8Array(Math.max(4096, n));
      this.start = this.pos = 0;
    }
    return this.buf;
  }
}
