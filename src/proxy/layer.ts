/**
 * The sans-IO contract every proxy layer follows: the driver feeds it events (bytes from a side,
 * end of stream, errors, the outcome of opening the server connection, each stamped with the
 * time) and carries out the commands it returns, in order. A layer never awaits, reads a clock
 * or touches a socket, so a test can play a whole exchange as a list of events and compare the
 * exact commands that come back.
 *
 * Server connections come in two kinds. Most layers have one at a time: its events and commands
 * carry no `conn`. A layer that keeps several (a pool of HTTP/1.1 upstream connections under one
 * HTTP/2 client) numbers them itself: `open-server` with a `conn` opens one more, every event from
 * it and every command for it carries that number, and `close` with the number ends only that one.
 * @module
 */
import type { Flow, HostPort, HttpFlow, LogEvent } from "../flows/flow.ts";
import type { RequestVerdict, ResponseVerdict } from "./request_hook.ts";
import type { BodyTransform, EventHookName, HookPayload } from "../addons/types.ts";

/** One addon hook call a layer asks for: the hook's name and its (mutable) payload. */
export type AddonCall = { [K in EventHookName]: { hook: K; payload: HookPayload<K> } }[EventHookName];

/** One side of a proxied connection. */
export type Side = "client" | "server";

/** What happened, as seen by the driver. */
export type LayerEvent =
  | { type: "data"; from: Side; data: Uint8Array; now: number; conn?: number }
  /** The side sent FIN: no more data will come from it. */
  | { type: "eof"; from: Side; now: number; conn?: number }
  /** The side failed (reset, read error). */
  | { type: "error"; from: Side; message: string; now: number; conn?: number }
  /** The connection asked for with `open-server` is up. */
  | { type: "server-connected"; address: HostPort; now: number; conn?: number }
  /** The connection asked for with `open-server` could not be made. */
  | { type: "server-failed"; message: string; now: number; conn?: number }
  /** The time asked for with the last `timer` command has come. */
  | { type: "timer"; now: number }
  /** The request hook's verdict on the flow of the last `request-hook` command (see request_hook.ts). */
  | { type: "hook-result"; verdict: RequestVerdict; now: number; stream?: number }
  /**
   * The response hook's verdict on the flow of the last `response-hook` command. After the
   * `headers` phase, `holdBody` says whether a `body` phase wants the body held.
   */
  | {
    type: "response-hook-result";
    verdict: ResponseVerdict;
    now: number;
    stream?: number;
    holdBody?: boolean;
  }
  /**
   * What the transform of the `transform` command with this `id` returned for its chunk, or the
   * error it threw (`data` is then empty).
   */
  | { type: "transform-result"; id: number; data: Uint8Array; error?: string; now: number; stream?: number }
  /**
   * The addons' hook of the `addon-hook` command with this `id` returned: what they changed is
   * in the payload the layer handed out (the layer reads it back).
   */
  | { type: "addon-result"; id: number; now: number };

/** What the driver must do. */
export type LayerCommand =
  | { type: "send"; to: Side; data: Uint8Array; conn?: number }
  /** Half-close: send FIN after the data already queued. */
  | { type: "shutdown"; to: Side; conn?: number }
  /** Close the side (abort with a reset when `reset`). Nothing is sent to it afterwards. */
  | { type: "close"; to: Side; reset: boolean; conn?: number }
  /** Open a (new) server connection; any previous one is closed first by a `close` command. */
  | { type: "open-server"; address: HostPort; conn?: number }
  /**
   * Stop (`paused`) or resume reading the pooled server connection `conn`: a layer whose upstream
   * has no flow control of its own (HTTP/1 under HTTP/2) holds a fast server back this way.
   */
  | { type: "pause-reading"; from: "server"; conn: number; paused: boolean }
  /**
   * The client asked (with CONNECT) for a tunnel to `address`: the driver handles the rest of the
   * connection as a new one to that destination, starting with `buffered` bytes.
   */
  | { type: "tunnel"; address: HostPort; buffered: Uint8Array; httpVersion: string }
  | { type: "flow"; event: "start" | "update" | "end"; flow: Flow }
  | { type: "log"; level: LogEvent["level"]; message: string }
  /**
   * Deliver a `timer` event `delay` ms from now. A layer has one timer: this replaces a pending
   * one. Layers keep their own deadlines and re-arm on a `timer` event that came too early.
   */
  | { type: "timer"; delay: number }
  /**
   * Ask the request hook about `flow`; its verdict comes back as a `hook-result` event. A layer
   * with several exchanges at once (HTTP/2) names the exchange with `stream`, which the event
   * carries back; the others ask about one exchange at a time and leave it out.
   */
  | { type: "request-hook"; flow: HttpFlow; stream?: number }
  /**
   * Ask the response hook about `flow`'s held response; the verdict comes as `response-hook-result`.
   * `phase`: `headers` as soon as the head is in (addons' `responseheaders`, which may set a
   * stream transform), `body` once the body is held after that (`response`); absent, both at once
   * with the body held.
   */
  | { type: "response-hook"; flow: HttpFlow; stream?: number; phase?: "headers" | "body" }
  /**
   * Run a body chunk through `fn` (a stream transform an addon set): the driver calls the
   * transforms in the order these commands came and answers each with a `transform-result` with
   * the same `id` (and `stream`). The side whose event asked is not read meanwhile (backpressure).
   * An empty `data` is the end-of-body call.
   */
  | { type: "transform"; id: number; fn: BodyTransform; data: Uint8Array; stream?: number }
  /**
   * Run an addon hook: the driver calls the addons (one after another, awaited, in the order
   * these commands came) and answers with an `addon-result` event carrying `id`. A layer issues
   * it only for hooks some addon has (see {@link HookSet}), so hooks nobody defines cost nothing.
   */
  | { type: "addon-hook"; id: number; call: AddonCall };

/** Which addon hooks some loaded addon defines: layers ask before issuing `addon-hook`. */
export interface HookSet {
  has(hook: EventHookName): boolean;
}

/** A sans-IO layer. */
export interface Layer {
  /** Takes one event and returns what to do about it. */
  handle(event: LayerEvent): LayerCommand[];
  /**
   * True while the layer waits for the client's next request head (at the start, and between
   * exchanges on a keep-alive connection): the driver times that wait (the head timeout).
   * Layers without requests leave it out.
   */
  readonly waitingForRequestHead?: boolean;
  /**
   * Called when the head timeout closes the connection: the last commands to carry out first
   * (an HTTP/2 GOAWAY, flows ended). The driver closes the client side after them.
   */
  headTimedOut?(now: number): LayerCommand[];
  /**
   * Whether a request head has begun, for the head timeout's log line (absent: any client byte
   * since the wait began counts; HTTP/2's preface and SETTINGS are no request).
   */
  readonly headPartial?: boolean;
}

/** How far each buffer made by {@link appendBytes} is filled: bytes past that are free to use. */
const filled = new WeakMap<ArrayBufferLike, number>();

/**
 * Appends `data` to `buf`, which may be a view returned by an earlier call: when `buf` ends where
 * its backing buffer's filled part ends and there is room after it, the bytes go there and a
 * longer view of the same buffer comes back; otherwise a buffer twice the size is made. Growing
 * a buffer piece by piece thus copies each byte a constant number of times on average, where
 * joining into a new array each time copies the whole buffer per piece (a client sending its
 * head or a pipelined request one byte per packet made that quadratic). Bytes inside views
 * handed out before are never written again.
 */
export function appendBytes(buf: Uint8Array, data: Uint8Array): Uint8Array {
  if (data.byteLength === 0) return buf;
  if (buf.byteLength === 0) return data;
  const end = buf.byteOffset + buf.byteLength;
  if (filled.get(buf.buffer) === end && end + data.byteLength <= buf.buffer.byteLength) {
    new Uint8Array(buf.buffer, end, data.byteLength).set(data);
    filled.set(buf.buffer, end + data.byteLength);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength + data.byteLength);
  }
  const size = buf.byteLength + data.byteLength;
  const out = new Uint8Array(Math.max(2 * size, 4096));
  out.set(buf);
  out.set(data, buf.byteLength);
  filled.set(out.buffer, size);
  return out.subarray(0, size);
}

/** Joins two byte arrays (returns one of them unchanged when the other is empty). */
export function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.byteLength === 0) return b;
  if (b.byteLength === 0) return a;
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}
