/**
 * One-line summaries of finished flows and log events for the terminal, in the manner of
 * mitmdump: who asked, what for, what came back, how big and how long.
 *
 * ```
 * 10.0.0.2:51234: GET https://example.com/a?b << 200 OK 1.2k 12ms
 * peer 1: TCP 93.184.215.14:443 (example.com) ↑517b ↓4.1k 1.2s
 * peer 1: DNS A example.com → 93.184.215.14 (NOERROR) 3ms
 * 10.0.0.2:51236: GET https://down.example/ << ERROR: connection refused
 * 10.0.0.2:51240: GET https://h2.example/ HTTP/2.0 << 200 512b 8ms
 * 10.0.0.2:51242: POST https://api.example/pkg.Svc/Get HTTP/2.0 << 200 41b 3ms gRPC 1→1 msgs status 0 OK
 * ```
 *
 * Everything taken from the wire (URLs, reasons, host names, error messages) has its control
 * characters escaped, so a hostile peer cannot move the cursor or recolor the terminal.
 * @module
 */
import type { DnsFlow, Flow, HttpFlow, LogEvent, TcpFlow, UdpFlow } from "../flows/flow.ts";
import { formatHostPort } from "../flows/flow.ts";
import { grpcStatusName } from "../flows/grpc.ts";

/** Options of {@linkcode formatFlowLine}. */
export interface FlowLineOptions {
  /** Adds ANSI colors (status by class, errors in red). Off by default. */
  color?: boolean;
  /** Names of WireGuard peers by public key (base64), shown instead of the client address. */
  peerNames?: Map<string, string>;
}

/** The longest URL shown whole; longer ones lose their middle. */
export const MAX_URL_LENGTH = 120;
/** The most DNS answers listed before the rest are counted. */
const MAX_DNS_ANSWERS = 6;

const ANSI = {
  reset: "\x1b[0m",
  bold: "\x1b[1m",
  dim: "\x1b[2m",
  red: "\x1b[31m",
  green: "\x1b[32m",
  yellow: "\x1b[33m",
  blue: "\x1b[34m",
  magenta: "\x1b[35m",
  cyan: "\x1b[36m",
} as const;

type Style = keyof typeof ANSI;

/** Wraps text in ANSI styles when color is on. */
type Paint = (text: string, ...styles: Style[]) => string;

function painter(color: boolean): Paint {
  if (!color) return (text) => text;
  return (text, ...styles) =>
    styles.length === 0 ? text : styles.map((s) => ANSI[s]).join("") + text + ANSI.reset;
}

/**
 * Formats a finished flow as one terminal line.
 *
 * @param flow The flow, normally at its `end` event.
 * @param options Color and peer names.
 * @returns The line, without a trailing newline.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatFlowLine } from "./flow_line.ts";
 * const line = formatFlowLine({
 *   type: "udp",
 *   id: "1",
 *   client: { address: { hostname: "10.0.0.2", port: 5000 }, mode: "regular" },
 *   server: { address: { hostname: "192.0.2.1", port: 123 } },
 *   timestampStart: 1000,
 *   timestampEnd: 1040,
 *   bytesFromClient: 48,
 *   bytesFromServer: 48,
 *   messages: [],
 *   messagesDropped: 0,
 * });
 * assert.equal(line, "10.0.0.2:5000: UDP 192.0.2.1:123 ↑48b ↓48b 40ms");
 * ```
 */
export function formatFlowLine(flow: Flow, options: FlowLineOptions = {}): string {
  const paint = painter(options.color ?? false);
  const client = clientLabel(flow, options.peerNames);
  let body: string;
  switch (flow.type) {
    case "http":
      body = httpLine(flow, paint);
      break;
    case "tcp":
    case "udp":
      body = streamLine(flow, paint);
      break;
    case "dns":
      body = dnsLine(flow, paint);
      break;
  }
  return `${paint(client + ":", "dim")} ${body}`;
}

/**
 * Formats a log event as one terminal line: the level, then the message. Warnings are yellow,
 * errors red and debug lines dim when color is on.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatLogLine } from "./flow_line.ts";
 * assert.equal(formatLogLine({ level: "warn", message: "slow peer" }, false), "warn: slow peer");
 * ```
 */
export function formatLogLine(event: LogEvent, color: boolean): string {
  const paint = painter(color);
  const line = `${event.level}: ${printable(event.message)}`;
  switch (event.level) {
    case "debug":
      return paint(line, "dim");
    case "info":
      return line;
    case "warn":
      return paint(line, "yellow");
    case "error":
      return paint(line, "red", "bold");
  }
}

function clientLabel(flow: Flow, peerNames: Map<string, string> | undefined): string {
  const key = flow.client.peer?.publicKey;
  const name = key === undefined ? undefined : peerNames?.get(key);
  const label = name !== undefined ? printable(name) : printable(formatHostPort(flow.client.address));
  // The first modes are told apart by their addresses (tunnel or proxy client); others are named.
  const mode = flow.client.mode;
  return mode === "wireguard" || mode === "regular" ? label : `${label} [${printable(mode)}]`;
}

function httpLine(flow: HttpFlow, paint: Paint): string {
  const { request, response } = flow;
  const parts = [
    paint(printable(request.method), "bold"),
    truncateMiddle(printable(request.url), MAX_URL_LENGTH),
  ];
  // The URL names where the bytes went; a Host header naming something else is shown beside it.
  if (request.hostHeader !== undefined) {
    parts.push(paint(`(Host: ${printable(request.hostHeader)})`, "yellow"));
  }
  // HTTP/1.x is the default and not shown; other versions are.
  if (/^HTTP\/[23]/.test(request.httpVersion)) parts.push(paint(printable(request.httpVersion), "dim"));
  if (response !== undefined) {
    const status = `${response.status}${response.reason === "" ? "" : " " + printable(response.reason)}`;
    parts.push("<<", paint(status, ...statusStyle(response.status)), formatSize(response.body.size));
  }
  const end = response?.timestampEnd ?? flow.timestampEnd ?? flow.error?.timestamp;
  if (end !== undefined) parts.push(formatDuration(end - request.timestampStart));
  const ws = flow.websocket;
  if (ws !== undefined) {
    const count = ws.messages.length + ws.messagesDropped;
    let text = `WebSocket ${count} message${count === 1 ? "" : "s"}`;
    if (ws.closeCode !== undefined) text += `, closed ${ws.closeCode}`;
    parts.push(paint(text, "cyan"));
  }
  const grpc = grpcText(flow);
  if (grpc !== undefined) parts.push(paint(grpc.text, grpc.ok ? "cyan" : "yellow"));
  if (flow.error !== undefined) parts.push(errorText(flow.error.message, paint));
  return parts.join(" ");
}

/**
 * A gRPC call in a few words: messages each way, then the status (`gRPC 3→5 msgs status 0 OK`),
 * with its message when not OK and a note when a side was cut inside a message.
 */
function grpcText(flow: HttpFlow): { text: string; ok: boolean } | undefined {
  const request = flow.request.grpc;
  const response = flow.response?.grpc;
  if (request === undefined && response === undefined) return undefined;
  let text = `gRPC ${request?.messages ?? 0}→${response?.messages ?? 0} msgs`;
  const status = response?.status;
  if (status !== undefined) {
    text += ` status ${status} ${grpcStatusName(status)}`;
    if (response?.statusMessage !== undefined) text += `: ${printable(response.statusMessage)}`;
  }
  if (request?.incomplete || response?.incomplete) text += " (cut inside a message)";
  return { text, ok: status === 0 && !request?.incomplete && !response?.incomplete };
}

function streamLine(flow: TcpFlow | UdpFlow, paint: Paint): string {
  const parts = [
    paint(flow.type.toUpperCase(), "bold", "blue"),
    printable(formatHostPort(flow.server.address)),
  ];
  const name = flow.tls?.sni ?? flow.server.hostname;
  const notes: string[] = [];
  if (name !== undefined && name !== flow.server.address.hostname) notes.push(printable(name));
  if (flow.tls?.passthrough) {
    notes.push(
      flow.tls.passthroughReason
        ? `TLS passthrough: ${printable(flow.tls.passthroughReason)}`
        : "TLS passthrough",
    );
  }
  if (notes.length > 0) parts.push(`(${notes.join(", ")})`);
  parts.push(`↑${formatSize(flow.bytesFromClient)}`, `↓${formatSize(flow.bytesFromServer)}`);
  const end = flow.timestampEnd ?? flow.error?.timestamp;
  if (end !== undefined) parts.push(formatDuration(end - flow.timestampStart));
  if (flow.error !== undefined) parts.push(errorText(flow.error.message, paint));
  return parts.join(" ");
}

function dnsLine(flow: DnsFlow, paint: Paint): string {
  const parts = [paint("DNS", "bold", "magenta")];
  const questions = flow.request?.questions ?? flow.response?.questions ?? [];
  if (questions.length === 0) parts.push("?");
  for (const q of questions) parts.push(`${printable(q.typeName)} ${printable(q.name)}`);
  const response = flow.response;
  if (response !== undefined) {
    const answers = response.answers.map((a) => printable(a.data));
    if (answers.length > 0) {
      const shown = answers.slice(0, MAX_DNS_ANSWERS);
      if (answers.length > shown.length) shown.push(`+${answers.length - shown.length} more`);
      parts.push("→", shown.join(", "));
    }
    const rcode = `(${printable(response.rcodeName)})`;
    parts.push(response.rcode === 0 ? rcode : paint(rcode, "yellow"));
  }
  const end = flow.timestampEnd ?? flow.error?.timestamp;
  if (end !== undefined) parts.push(formatDuration(end - flow.timestampStart));
  if (flow.error !== undefined) parts.push(errorText(flow.error.message, paint));
  return parts.join(" ");
}

function errorText(message: string, paint: Paint): string {
  return paint(`<< ERROR: ${printable(message)}`, "red", "bold");
}

function statusStyle(status: number): Style[] {
  if (status >= 500) return ["red"];
  if (status >= 400) return ["yellow"];
  if (status >= 300) return ["cyan"];
  if (status >= 200) return ["green"];
  return ["dim"];
}

/**
 * A byte count the way mitmdump writes it: `512b`, `1.2k`, `34.5m`, `120m`, `2.0g`. At most five
 * characters up to terabytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatSize } from "./flow_line.ts";
 * assert.equal(formatSize(1234), "1.2k");
 * ```
 */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes}b`;
  let value = bytes;
  for (const suffix of ["k", "m", "g", "t"]) {
    value /= 1024;
    if (value < 99.95) return `${value.toFixed(1)}${suffix}`;
    if (value < 1024 || suffix === "t") return `${value.toFixed(0)}${suffix}`;
  }
  return `${bytes}b`; // not reached: the loop returns at "t"
}

/**
 * A duration in milliseconds as `12ms`, `1.2s`, `4m05s` or `2h07m`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatDuration } from "./flow_line.ts";
 * assert.equal(formatDuration(1234), "1.2s");
 * ```
 */
export function formatDuration(ms: number): string {
  const t = Math.max(0, ms);
  if (t < 999.5) return `${Math.round(t)}ms`;
  if (t < 59_950) return `${(t / 1000).toFixed(1)}s`;
  const seconds = Math.round(t / 1000);
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${pad2(seconds % 60)}s`;
  const minutes = Math.round(seconds / 60);
  return `${Math.floor(minutes / 60)}h${pad2(minutes % 60)}m`;
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : `${n}`;
}

/**
 * Shortens text longer than `max` characters by replacing its middle with `…`, keeping the
 * start (scheme and host) and the end (the last path segment or query).
 */
export function truncateMiddle(text: string, max: number): string {
  if (text.length <= max) return text;
  const keep = max - 1;
  const head = Math.ceil(keep / 2);
  return text.slice(0, head) + "…" + text.slice(text.length - (keep - head));
}

/** Escapes C0 and C1 control characters and DEL as `\xNN`, so the text stays on one line. */
function printable(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}
