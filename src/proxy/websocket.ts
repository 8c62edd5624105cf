/**
 * WebSocket (RFC 6455) frame reader for recording messages while the proxy relays the raw bytes
 * unchanged. Sans-IO: one reader per direction is fed bytes and returns whole messages.
 *
 * Invariants and choices:
 * - Payloads are unmasked and copied (input buffers may be reused by the caller); at most
 *   `maxRecord` bytes are kept per message, but `size` counts all of them.
 * - Fragmented messages are joined; control frames that arrive between fragments are returned as
 *   messages of their own, before the message they interrupted.
 * - Compressed messages (RSV1, permessage-deflate) are returned as they are, not inflated.
 * - RSV2 and RSV3 are ignored: the reader cannot know which extensions were negotiated.
 * @module
 */

/** One complete WebSocket message, as recorded. */
export interface WebSocketMessage {
  /** 1 text, 2 binary, 8 close, 9 ping, 10 pong. */
  opcode: number;
  /** The unmasked payload, cut to the reader's `maxRecord` bytes. */
  data: Uint8Array;
  /** The full payload size in bytes. */
  size: number;
  /** Whether `data` holds less than `size` bytes. */
  truncated: boolean;
  /** Whether RSV1 was set on the first frame (permessage-deflate); `data` is left compressed. */
  compressed: boolean;
}

/** Options for {@linkcode WebSocketReader}. */
export interface WebSocketReaderOptions {
  /** Bytes kept per message; the rest is counted, not stored. Default 64 KiB. */
  maxRecord?: number;
  /** The largest frame payload accepted; larger ones throw. Default 64 MiB. */
  maxFrame?: number;
}

/** A message being gathered: its kept pieces and counts. */
class Gathering {
  parts: Uint8Array[] = [];
  kept = 0;
  size = 0;
  constructor(readonly opcode: number, readonly compressed: boolean) {}

  finish(): WebSocketMessage {
    let data: Uint8Array;
    if (this.parts.length === 1) {
      data = this.parts[0]!;
    } else {
      data = new Uint8Array(this.kept);
      let at = 0;
      for (const part of this.parts) {
        data.set(part, at);
        at += part.length;
      }
    }
    return {
      opcode: this.opcode,
      data,
      size: this.size,
      truncated: this.kept < this.size,
      compressed: this.compressed,
    };
  }
}

/** The most bytes a frame header takes: 2, 8 for a 64-bit length and 4 for the mask key. */
const MAX_HEADER = 14;

/**
 * Reads WebSocket frames of one direction (masked client frames or unmasked server frames) and
 * returns complete messages. Input may be split at any byte. After it throws, a reader is out of
 * step with the stream and should be dropped (the proxy can keep relaying without recording).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { WebSocketReader } from "./websocket.ts";
 * const reader = new WebSocketReader();
 * // "Hello" split over two pushes, as RFC 6455 §5.7 sends it unmasked.
 * assert.deepEqual(reader.push(new Uint8Array([0x81, 0x05, 0x48, 0x65])), []);
 * const [message] = reader.push(new Uint8Array([0x6c, 0x6c, 0x6f]));
 * assert.equal(new TextDecoder().decode(message!.data), "Hello");
 * ```
 */
export class WebSocketReader {
  #maxRecord: number;
  #maxFrame: number;
  /** Header bytes of the frame being read. */
  #head = new Uint8Array(MAX_HEADER);
  #headLength = 0;
  /** Payload bytes of the current frame still to come; -1 while reading a header. */
  #remaining = -1;
  /** Payload bytes of the current frame already seen (the mask key index). */
  #offset = 0;
  #mask: Uint8Array | null = null;
  #fin = false;
  /** Where the current frame's payload goes. */
  #target: Gathering | null = null;
  /** A fragmented data message waiting for its continuation frames. */
  #message: Gathering | null = null;

  /** @param options Record and frame size limits. */
  constructor(options: WebSocketReaderOptions = {}) {
    this.#maxRecord = options.maxRecord ?? 64 * 1024;
    this.#maxFrame = options.maxFrame ?? 64 * 1024 * 1024;
    if (!(this.#maxRecord >= 0) || !(this.#maxFrame >= 0)) {
      throw new RangeError("WebSocketReader limits must not be negative");
    }
  }

  /**
   * Feeds bytes of one direction; returns the complete messages (fragmented messages joined;
   * control frames interleaved within fragments returned as their own messages).
   *
   * @param chunk The next bytes of the stream.
   * @returns The messages completed by these bytes, in order.
   * @throws {SyntaxError} On a protocol error: reserved opcode, oversized or fragmented control
   *   frame, continuation without a start, a new message inside a fragmented one.
   * @throws {RangeError} When a frame is larger than `maxFrame`.
   */
  push(chunk: Uint8Array): WebSocketMessage[] {
    const out: WebSocketMessage[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      if (this.#remaining < 0) {
        pos = this.#readHeader(chunk, pos);
        if (this.#remaining < 0) break;
      } else {
        const n = Math.min(this.#remaining, chunk.length - pos);
        this.#payload(chunk.subarray(pos, pos + n));
        pos += n;
        this.#remaining -= n;
      }
      if (this.#remaining === 0) this.#endFrame(out);
    }
    return out;
  }

  /** Copies header bytes; once the header is whole, starts the frame. Returns the new position. */
  #readHeader(chunk: Uint8Array, pos: number): number {
    const head = this.#head;
    while (pos < chunk.length) {
      head[this.#headLength++] = chunk[pos++]!;
      if (this.#headLength < 2) continue;
      const len7 = head[1]! & 0x7f;
      const needed = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (head[1]! & 0x80 ? 4 : 0);
      if (this.#headLength === needed) {
        this.#startFrame();
        break;
      }
    }
    return pos;
  }

  /** Checks a whole frame header and sets where its payload goes. */
  #startFrame(): void {
    const head = this.#head;
    const b0 = head[0]!;
    const b1 = head[1]!;
    const fin = (b0 & 0x80) !== 0;
    const rsv1 = (b0 & 0x40) !== 0;
    const opcode = b0 & 0x0f;
    let length = b1 & 0x7f;
    let at = 2;
    if (length === 126) {
      length = (head[2]! << 8) | head[3]!;
      at = 4;
    } else if (length === 127) {
      const high = ((head[2]! << 24) >>> 0) + (head[3]! << 16) + (head[4]! << 8) + head[5]!;
      const low = ((head[6]! << 24) >>> 0) + (head[7]! << 16) + (head[8]! << 8) + head[9]!;
      if (high >= 0x80000000) {
        throw new SyntaxError("Cannot read WebSocket frame: 64-bit length has its top bit set");
      }
      length = high * 0x1_0000_0000 + low;
      at = 10;
    }
    this.#mask = b1 & 0x80 ? head.slice(at, at + 4) : null;
    if (length > this.#maxFrame) {
      throw new RangeError(
        `Cannot read WebSocket frame: payload of ${length} bytes exceeds ${this.#maxFrame}`,
      );
    }

    if (opcode >= 8) {
      if (opcode > 10) throw new SyntaxError(`Cannot read WebSocket frame: reserved opcode ${opcode}`);
      if (!fin) {
        throw new SyntaxError(`Cannot read WebSocket frame: fragmented control frame (opcode ${opcode})`);
      }
      if (length > 125) {
        throw new SyntaxError(`Cannot read WebSocket frame: control frame of ${length} bytes exceeds 125`);
      }
      if (rsv1) {
        throw new SyntaxError(`Cannot read WebSocket frame: RSV1 set on control frame (opcode ${opcode})`);
      }
      this.#target = new Gathering(opcode, false);
    } else if (opcode === 0) {
      if (this.#message === null) {
        throw new SyntaxError("Cannot read WebSocket frame: continuation without a start");
      }
      if (rsv1) throw new SyntaxError("Cannot read WebSocket frame: RSV1 set on a continuation frame");
      this.#target = this.#message;
    } else if (opcode <= 2) {
      if (this.#message !== null) {
        throw new SyntaxError(
          `Cannot read WebSocket frame: new message (opcode ${opcode}) inside a fragmented one`,
        );
      }
      this.#target = new Gathering(opcode, rsv1);
      if (!fin) this.#message = this.#target;
    } else {
      throw new SyntaxError(`Cannot read WebSocket frame: reserved opcode ${opcode}`);
    }
    this.#fin = fin;
    this.#offset = 0;
    this.#remaining = length;
    this.#headLength = 0;
  }

  /** Counts payload bytes and keeps (unmasked) those that fit in the record. */
  #payload(bytes: Uint8Array): void {
    const target = this.#target!;
    target.size += bytes.length;
    const keep = Math.min(bytes.length, this.#maxRecord - target.kept);
    if (keep > 0) {
      const part = bytes.slice(0, keep);
      const mask = this.#mask;
      if (mask !== null) {
        const offset = this.#offset;
        for (let i = 0; i < keep; i++) part[i] = part[i]! ^ mask[(offset + i) & 3]!;
      }
      target.parts.push(part);
      target.kept += keep;
    }
    this.#offset += bytes.length;
  }

  /** Completes the current frame, and with it a message when it was the last frame. */
  #endFrame(out: WebSocketMessage[]): void {
    const target = this.#target!;
    this.#remaining = -1;
    this.#target = null;
    if (!this.#fin) return;
    if (target === this.#message) this.#message = null;
    out.push(target.finish());
  }
}

/**
 * Reads the status code and reason of a close message.
 *
 * @param message A message with opcode 8.
 * @returns The code, absent when the payload has none, and the reason as UTF-8 text.
 * @throws {TypeError} When the message is not a close message.
 */
export function closeCodeOf(message: WebSocketMessage): { code?: number; reason: string } {
  if (message.opcode !== 8) {
    throw new TypeError(`closeCodeOf() needs a close message, not opcode ${message.opcode}`);
  }
  const data = message.data;
  if (data.length < 2) return { reason: "" };
  return { code: (data[0]! << 8) | data[1]!, reason: new TextDecoder().decode(data.subarray(2)) };
}

/** Options of {@link encodeWebSocketFrame}. */
export interface FrameOptions {
  /** Mask the payload (every frame a client sends is masked): with this key, or a random one. */
  mask?: boolean | Uint8Array;
  /** Set RSV1 (the payload is permessage-deflate compressed). */
  compressed?: boolean;
}

/**
 * Encodes one whole message as a single final frame (RFC 6455 §5.2): what the proxy sends in
 * place of a message an addon looked at (changed or not).
 *
 * @param opcode 1 text, 2 binary, 8 close, 9 ping, 10 pong.
 * @param payload The unmasked payload.
 * @param options Masking (client to server) and RSV1.
 * @returns The frame bytes.
 */
export function encodeWebSocketFrame(
  opcode: number,
  payload: Uint8Array,
  options: FrameOptions = {},
): Uint8Array {
  const n = payload.byteLength;
  const lengthBytes = n < 126 ? 0 : n < 0x10000 ? 2 : 8;
  const key = options.mask === true
    ? crypto.getRandomValues(new Uint8Array(4))
    : options.mask instanceof Uint8Array
    ? options.mask
    : null;
  const head = 2 + lengthBytes + (key ? 4 : 0);
  const out = new Uint8Array(head + n);
  out[0] = 0x80 | (options.compressed ? 0x40 : 0) | (opcode & 0x0f);
  out[1] = (key ? 0x80 : 0) | (n < 126 ? n : n < 0x10000 ? 126 : 127);
  if (lengthBytes === 2) {
    out[2] = n >> 8;
    out[3] = n & 0xff;
  } else if (lengthBytes === 8) {
    new DataView(out.buffer).setBigUint64(2, BigInt(n));
  }
  if (key) {
    out.set(key, head - 4);
    for (let i = 0; i < n; i++) out[head + i] = payload[i]! ^ key[i & 3]!;
  } else {
    out.set(payload, head);
  }
  return out;
}
