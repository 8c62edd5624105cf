/**
 * gRPC message accounting for HTTP flows. A gRPC body (`content-type: application/grpc`, also
 * `application/grpc+proto` and the like) is a sequence of length-prefixed messages: one flag byte
 * (1 = compressed), a 4-byte big-endian length, then that many bytes. {@linkcode GrpcMessageCounter}
 * reads those prefixes as body bytes stream past, split anywhere, and keeps only counts and sizes:
 * the payloads themselves are never held here (the bounded body recording keeps what it keeps), so
 * a server stream of a million messages costs the same few kilobytes as one of a thousand.
 *
 * The call's outcome (`grpc-status`, `grpc-message`) comes from the response trailers, or from the
 * response head when the server answered with trailers only.
 * @module
 */
import type { HttpFlow, HttpRequestRecord, HttpResponseRecord } from "./flow.ts";

/** How many message sizes a side keeps, in order; later messages are counted but not listed. */
export const MAX_GRPC_SIZES = 1000;

/** The gRPC messages of one side of a call (request or response), as counted so far. */
export interface GrpcMessages {
  /** Complete messages. */
  messages: number;
  /** Payload bytes of the complete messages (their 5-byte prefixes not included). */
  bytes: number;
  /** The sizes of the first {@link MAX_GRPC_SIZES} messages, in order. */
  sizes: number[];
  /** How many of the messages had the compressed flag set. */
  compressed: number;
  /** True when the body ended inside a message (a prefix or payload cut short). */
  incomplete?: boolean;
  /** What went wrong with the framing: a message cut short, or a prefix no gRPC peer sends. */
  error?: string;
  /** The call's status (`grpc-status`; 0 is OK), on the response side once the call ended. */
  status?: number;
  /** The status message (`grpc-message`, percent-decoded), when the server sent one. */
  statusMessage?: string;
}

/** The length prefix of a gRPC message. */
const PREFIX = 5;

/**
 * Counts length-prefixed gRPC messages in a body fed chunk by chunk. It holds at most the 5 bytes
 * of a prefix being read; payload bytes are skipped over, never copied. After a prefix no gRPC
 * peer sends (a flag other than 0 or 1) the framing is lost: the error is recorded and the rest
 * of the body is not counted.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { GrpcMessageCounter } from "./grpc.ts";
 * const counter = new GrpcMessageCounter();
 * counter.push(new Uint8Array([0, 0, 0, 0, 2, 7]));
 * counter.push(new Uint8Array([7, 1, 0, 0, 0, 0]));
 * counter.end();
 * assert.deepEqual(counter.summary, { messages: 2, bytes: 2, sizes: [2, 0], compressed: 1 });
 * ```
 */
export class GrpcMessageCounter {
  /** The counts so far; updated in place by {@linkcode push} and {@linkcode end}. */
  readonly summary: GrpcMessages;
  #prefix = new Uint8Array(PREFIX);
  #prefixFill = 0;
  /** Payload bytes still to skip of the message being read, or -1 between messages. */
  #remaining = -1;
  #size = 0;
  #flag = 0;
  #broken = false;
  #ended = false;

  /** Counts into `summary` (a fresh one by default). */
  constructor(summary: GrpcMessages = { messages: 0, bytes: 0, sizes: [], compressed: 0 }) {
    this.summary = summary;
  }

  /** Reads the next piece of the body. */
  push(chunk: Uint8Array): void {
    if (this.#broken || this.#ended) return;
    let at = 0;
    const length = chunk.byteLength;
    while (at < length) {
      if (this.#remaining < 0) {
        // Reading a prefix: straight from the chunk when it holds all five bytes.
        if (this.#prefixFill === 0 && length - at >= PREFIX) {
          this.#startMessage(
            chunk[at]!,
            ((chunk[at + 1]! << 24) | (chunk[at + 2]! << 16) | (chunk[at + 3]! << 8) | chunk[at + 4]!) >>> 0,
          );
          at += PREFIX;
        } else {
          const take = Math.min(PREFIX - this.#prefixFill, length - at);
          this.#prefix.set(chunk.subarray(at, at + take), this.#prefixFill);
          this.#prefixFill += take;
          at += take;
          if (this.#prefixFill < PREFIX) return;
          const p = this.#prefix;
          this.#prefixFill = 0;
          this.#startMessage(p[0]!, ((p[1]! << 24) | (p[2]! << 16) | (p[3]! << 8) | p[4]!) >>> 0);
        }
        if (this.#broken) return;
      } else {
        const take = Math.min(this.#remaining, length - at);
        this.#remaining -= take;
        at += take;
      }
      if (this.#remaining === 0) this.#finishMessage();
    }
  }

  /** The body ended: a message cut short marks the side incomplete. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#broken) return;
    if (this.#remaining > 0) {
      const got = this.#size - this.#remaining;
      this.#fail(`the body ended inside a message: ${got} of ${this.#size} bytes`);
    } else if (this.#prefixFill > 0) {
      this.#fail(`the body ended inside a message prefix: ${this.#prefixFill} of ${PREFIX} bytes`);
    }
  }

  #startMessage(flag: number, size: number): void {
    if (flag > 1) {
      this.#broken = true;
      this.summary.error = `message prefix with flag 0x${flag.toString(16).padStart(2, "0")} ` +
        `(not gRPC framing); the rest of the body was not counted`;
      return;
    }
    this.#flag = flag;
    this.#size = size;
    this.#remaining = size;
  }

  #finishMessage(): void {
    const s = this.summary;
    s.messages++;
    s.bytes += this.#size;
    if (s.sizes.length < MAX_GRPC_SIZES) s.sizes.push(this.#size);
    if (this.#flag === 1) s.compressed++;
    this.#remaining = -1;
  }

  #fail(message: string): void {
    this.summary.incomplete = true;
    this.summary.error = message;
  }
}

type Fields = ReadonlyArray<readonly [string, string]>;

function field(headers: Fields | undefined, name: string): string | undefined {
  if (headers === undefined) return undefined;
  for (const [n, v] of headers) if (n.toLowerCase() === name) return v;
  return undefined;
}

/**
 * True when a content type is gRPC's (`application/grpc`, `application/grpc+proto`,
 * `application/grpc;…`). gRPC-Web (`application/grpc-web…`) frames differently and is not.
 */
export function isGrpcContentType(value: string | undefined): boolean {
  if (value === undefined) return false;
  return /^application\/grpc(?:[+;\s]|$)/i.test(value.trim());
}

const counters = new WeakMap<HttpRequestRecord | HttpResponseRecord, GrpcMessageCounter | null>();

/**
 * The counter of a request or response record: made (with `record.grpc` as its summary) the first
 * time the record's body is seen when its content type is gRPC's; null for other bodies.
 */
function counterOf(record: HttpRequestRecord | HttpResponseRecord): GrpcMessageCounter | null {
  let counter = counters.get(record);
  if (counter === undefined) {
    counter = null;
    if (isGrpcContentType(field(record.headers, "content-type"))) {
      counter = new GrpcMessageCounter();
      record.grpc = counter.summary;
    }
    counters.set(record, counter);
  }
  return counter;
}

/** Counts the gRPC messages in a piece of a record's body (nothing for other content types). */
export function countGrpcBody(record: HttpRequestRecord | HttpResponseRecord, data: Uint8Array): void {
  counterOf(record)?.push(data);
}

/**
 * Closes the gRPC accounting of an HTTP flow that ended: a side whose body stopped inside a
 * message is marked incomplete, and the response side gets `grpc-status` and `grpc-message` from
 * the trailers (or from the head of a trailers-only answer). A flow whose request is not gRPC is
 * left alone.
 */
export function endGrpcFlow(flow: HttpFlow): void {
  const request = flow.request;
  const requestCounter = counterOf(request);
  if (requestCounter === null && !isGrpcContentType(field(flow.response?.headers, "content-type"))) return;
  requestCounter?.end();
  const response = flow.response;
  if (response === undefined) return;
  const responseCounter = counterOf(response);
  responseCounter?.end();
  const grpc = response.grpc ?? (response.grpc = { messages: 0, bytes: 0, sizes: [], compressed: 0 });
  const status = field(response.trailers, "grpc-status") ?? field(response.headers, "grpc-status");
  if (status !== undefined && /^\d{1,10}$/.test(status.trim())) grpc.status = Number(status.trim());
  const message = field(response.trailers, "grpc-message") ?? field(response.headers, "grpc-message");
  if (message !== undefined && message !== "") grpc.statusMessage = percentDecode(message);
}

/** gRPC's percent-encoding of `grpc-message` (UTF-8 bytes as `%XX`); malformed text is kept as sent. */
function percentDecode(text: string): string {
  if (!text.includes("%")) return text;
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** The names of gRPC status codes, by number. */
export const GRPC_STATUS_NAMES: readonly string[] = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

/** The name of a gRPC status code (`NOT_FOUND`), or its number as text when it has none. */
export function grpcStatusName(status: number): string {
  return GRPC_STATUS_NAMES[status] ?? String(status);
}

/** One side of a call in the flow files (`_grpc` in HAR, `grpc` in JSON lines). */
export interface GrpcSideJson {
  messages: number;
  bytes: number;
  /** Sizes of the first {@link MAX_GRPC_SIZES} messages. */
  sizes: number[];
  compressed: number;
  incomplete: boolean;
  error: string | null;
}

/** The gRPC summary of a flow in the flow files. */
export interface GrpcJson {
  request: GrpcSideJson | null;
  response: GrpcSideJson | null;
  /** `grpc-status` (null when the call ended without one: reset, or cut off). */
  status: number | null;
  statusName: string | null;
  statusMessage: string | null;
}

/** The gRPC summary of an HTTP flow as JSON values, or undefined when it is no gRPC call. */
export function grpcJson(flow: HttpFlow): GrpcJson | undefined {
  const request = flow.request.grpc;
  const response = flow.response?.grpc;
  if (request === undefined && response === undefined) return undefined;
  const side = (s: GrpcMessages | undefined): GrpcSideJson | null =>
    s === undefined ? null : {
      messages: s.messages,
      bytes: s.bytes,
      sizes: s.sizes,
      compressed: s.compressed,
      incomplete: s.incomplete ?? false,
      error: s.error ?? null,
    };
  const status = response?.status;
  return {
    request: side(request),
    response: side(response),
    status: status ?? null,
    statusName: status === undefined ? null : grpcStatusName(status),
    statusMessage: response?.statusMessage ?? null,
  };
}

/**
 * Puts a gRPC summary read from a flow file (`_grpc` of a HAR entry, `grpc` of a JSON line) back
 * on a rebuilt flow. Anything not shaped like {@linkcode grpcJson}'s output is ignored.
 */
export function applyGrpcJson(flow: HttpFlow, value: unknown): void {
  if (typeof value !== "object" || value === null) return;
  const v = value as Record<string, unknown>;
  const count = (x: unknown) => (typeof x === "number" && Number.isFinite(x) && x >= 0 ? x : 0);
  const side = (x: unknown): GrpcMessages | undefined => {
    if (typeof x !== "object" || x === null) return undefined;
    const s = x as Record<string, unknown>;
    const out: GrpcMessages = {
      messages: count(s.messages),
      bytes: count(s.bytes),
      sizes: Array.isArray(s.sizes) ? s.sizes.slice(0, MAX_GRPC_SIZES).map(count) : [],
      compressed: count(s.compressed),
    };
    if (s.incomplete === true) out.incomplete = true;
    if (typeof s.error === "string") out.error = s.error;
    return out;
  };
  const request = side(v.request);
  if (request !== undefined) flow.request.grpc = request;
  if (flow.response === undefined) return;
  const read = side(v.response);
  const response = read ?? { messages: 0, bytes: 0, sizes: [], compressed: 0 };
  if (typeof v.status === "number" && Number.isInteger(v.status)) response.status = v.status;
  if (typeof v.statusMessage === "string") response.statusMessage = v.statusMessage;
  if (read !== undefined || response.status !== undefined) flow.response.grpc = response;
}
