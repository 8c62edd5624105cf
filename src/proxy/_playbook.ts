/**
 * Playbook tests for sans-IO layers: a test lists events and, after each, the exact commands the
 * layer must answer with. Byte payloads are compared as latin1 text (one character per byte, so
 * binary frames compare exactly too) and flow commands by their event and the flow fields the
 * test names; the rest of the flow is not compared. No sockets, no clock.
 *
 * @example
 * ```ts ignore
 * play(layer, [
 *   fromClient("ping", 1),
 *   [send("server", "ping")],
 *   eof("client", 2),
 *   [shutdown("server")],
 * ]);
 * ```
 * @module
 */
import assert from "node:assert/strict";
import type { HostPort, LogEvent } from "../flows/flow.ts";
import type { Layer, LayerCommand, LayerEvent, Side } from "./layer.ts";
import type { RequestVerdict } from "./request_hook.ts";

/** A command as a playbook expects it. */
export type Expected =
  /** `conn`: the numbered server connection, for layers that keep several (see layer.ts). */
  | { type: "send"; to: Side; data: string; conn?: number }
  | { type: "shutdown"; to: Side }
  | { type: "close"; to: Side; reset: boolean; conn?: number }
  | { type: "open-server"; address: HostPort; conn?: number }
  | { type: "pause-reading"; from: "server"; conn: number; paused: boolean }
  | { type: "tunnel"; address: HostPort; buffered: string; httpVersion: string }
  /** `flow` holds only the fields to compare (nested objects are compared field by field too). */
  | { type: "flow"; event: "start" | "update" | "end"; flow: Record<string, unknown> }
  | { type: "log"; level: LogEvent["level"]; message: string | RegExp }
  | { type: "timer"; delay: number }
  | { type: "request-hook"; flow: Record<string, unknown> }
  /** An addon hook asked for (the payload is not compared; tests read it from the command). */
  | { type: "addon-hook"; id: number; hook: string };

/** An event followed by the commands it must produce, any number of times. */
export type Script = (LayerEvent | Expected[])[];

/** The request hook's verdict arriving. */
export function hookResult(verdict: RequestVerdict, now: number): LayerEvent {
  return { type: "hook-result", verdict, now };
}

/** A `request-hook` command for a flow with these fields. */
export function askHook(fields: Record<string, unknown>): Expected {
  return { type: "request-hook", flow: fields };
}

/** Bytes as latin1 text: one character per byte. */
export function latin1(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += String.fromCharCode(b);
  return out;
}

/** Latin1 text as bytes (the inverse of {@link latin1}). */
export function bytes(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => {
    const code = c.charCodeAt(0);
    if (code > 0xff) throw new RangeError(`bytes() takes latin1 text, got U+${code.toString(16)}`);
    return code;
  });
}

/** Flow ids `flow-1`, `flow-2`, ... */
export function counter(prefix = "flow"): () => string {
  let n = 0;
  return () => `${prefix}-${++n}`;
}

// ---- events -------------------------------------------------------------------------------

/** Bytes from the client. */
export function fromClient(data: string | Uint8Array, now: number): LayerEvent {
  return { type: "data", from: "client", data: typeof data === "string" ? bytes(data) : data, now };
}

/** Bytes from the server. */
export function fromServer(data: string | Uint8Array, now: number): LayerEvent {
  return { type: "data", from: "server", data: typeof data === "string" ? bytes(data) : data, now };
}

/** End of stream from a side. */
export function eof(from: Side, now: number): LayerEvent {
  return { type: "eof", from, now };
}

/** A failure of a side. */
export function error(from: Side, message: string, now: number): LayerEvent {
  return { type: "error", from, message, now };
}

/** The server connection is up. */
export function connected(address: HostPort, now: number): LayerEvent {
  return { type: "server-connected", address, now };
}

/** The server connection could not be made. */
export function failed(message: string, now: number): LayerEvent {
  return { type: "server-failed", message, now };
}

/** The addons returned from the hook of `addon-hook` command `id`. */
export function addonResult(id: number, now: number): LayerEvent {
  return { type: "addon-result", id, now };
}

/** Expects an addon hook to be asked for. */
export function addonHook(id: number, hook: string): Expected {
  return { type: "addon-hook", id, hook };
}

/** The layer's timer went off. */
export function timerFired(now: number): LayerEvent {
  return { type: "timer", now };
}

// ---- expected commands --------------------------------------------------------------------

/** Expects bytes sent to a side. */
export function send(to: Side, data: string): Expected {
  return { type: "send", to, data };
}

/** Expects a half-close toward a side. */
export function shutdown(to: Side): Expected {
  return { type: "shutdown", to };
}

/** Expects a side to be closed. */
export function close(to: Side, reset = false): Expected {
  return { type: "close", to, reset };
}

/** Expects a server connection to be opened. */
export function openServer(address: HostPort): Expected {
  return { type: "open-server", address };
}

/** Expects a CONNECT tunnel hand-off. */
export function tunnel(address: HostPort, buffered: string, httpVersion = "HTTP/1.1"): Expected {
  return { type: "tunnel", address, buffered, httpVersion };
}

/** Expects a flow event; `fields` are compared, with byte arrays in them written as latin1 text. */
export function flow(event: "start" | "update" | "end", fields: Record<string, unknown>): Expected {
  return { type: "flow", event, flow: fields };
}

/** Expects a log line (a RegExp matches part of the message). */
export function log(level: LogEvent["level"], message: string | RegExp): Expected {
  return { type: "log", level, message };
}

/** Expects the layer to ask for a timer event after `delay` ms. */
export function timer(delay: number): Expected {
  return { type: "timer", delay };
}

// ---- running ------------------------------------------------------------------------------

/**
 * Feeds each event of `script` to `layer` and checks that the commands it returns are exactly the
 * expected ones that follow it. Returns every command, for checks a script cannot express.
 */
export function play(layer: Layer, script: Script): LayerCommand[] {
  const all: LayerCommand[] = [];
  for (let i = 0; i < script.length; i += 2) {
    const event = script[i];
    const expected = script[i + 1];
    if (event === undefined || Array.isArray(event) || !Array.isArray(expected)) {
      throw new TypeError(`play(): script item ${i} must be an event followed by an array of commands`);
    }
    const commands = layer.handle(event);
    all.push(...commands);
    const actual = commands.map(readable);
    assert.deepEqual(project(actual, expected), expected, `after event ${i / 2} (${describe(event)})`);
  }
  return all;
}

/** A command with bytes as text and the flow as a plain copy. */
function readable(command: LayerCommand): unknown {
  switch (command.type) {
    case "send":
      return {
        type: "send",
        to: command.to,
        data: latin1(command.data),
        ...(command.conn !== undefined ? { conn: command.conn } : {}),
      };
    case "tunnel":
      return {
        type: "tunnel",
        address: command.address,
        buffered: latin1(command.buffered),
        httpVersion: command.httpVersion,
      };
    case "flow":
      return { type: "flow", event: command.event, flow: plain(command.flow) };
    case "request-hook":
      return { type: "request-hook", flow: plain(command.flow) };
    case "addon-hook":
      return { type: "addon-hook", id: command.id, hook: command.call.hook };
    default:
      return command;
  }
}

/** A deep copy with byte arrays turned into latin1 text. */
function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return latin1(value);
  if (Array.isArray(value)) return value.map(plain);
  if (isRecord(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  return value;
}

/**
 * `actual` cut down to the shape of `expected`: only the keys `expected` has are kept from
 * objects, and a RegExp that matches stands for the string it matched. What is left is compared
 * with `expected` as a whole, so a failure shows a readable diff.
 */
function project(actual: unknown, expected: unknown): unknown {
  if (expected instanceof RegExp) {
    return typeof actual === "string" && expected.test(actual) ? expected : actual;
  }
  if (Array.isArray(expected) && Array.isArray(actual)) {
    return actual.map((a, i) => project(a, expected[i]));
  }
  if (isRecord(expected) && isRecord(actual)) {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(expected)) out[key] = project(actual[key], expected[key]);
    return out;
  }
  return actual;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !(value instanceof Uint8Array) && !(value instanceof RegExp);
}

function describe(event: LayerEvent): string {
  switch (event.type) {
    case "data":
      return `${event.data.byteLength} bytes from the ${event.from}`;
    case "eof":
      return `eof from the ${event.from}`;
    case "error":
      return `error from the ${event.from}: ${event.message}`;
    case "server-connected":
      return "server connected";
    case "server-failed":
      return `server failed: ${event.message}`;
    case "timer":
      return "timer";
    case "hook-result":
      return `hook verdict: ${
        typeof event.verdict === "object"
          ? ("change" in event.verdict ? "change" : event.verdict.status)
          : event.verdict
      }`;
    case "response-hook-result":
      return `response hook verdict: ${
        typeof event.verdict === "object" ? Object.keys(event.verdict)[0] : event.verdict
      }`;
    case "addon-result":
      return `addon hook ${event.id} returned`;
    case "transform-result":
      return `transform ${event.id} returned ${event.data.byteLength} bytes`;
  }
}
