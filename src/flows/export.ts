/**
 * Exporting flows: an HTTP flow as a `curl` command line ({@link flowToCurl}) or as HTTP/1.1 wire
 * text ({@link flowToRaw}), and any number of flows as HAR 1.2 or wirescope JSON lines, written
 * as they are read ({@link exportFlows}; `wirescope export` is its command line).
 * @module
 */
import { Buffer } from "node:buffer";
import { STATUS_CODES } from "node:http";
import type { Flow, HttpFlow } from "./flow.ts";
import type { Headers1 } from "../proxy/http1.ts";
import { flowToHarEntry, type HarCreator } from "./har.ts";
import { flowToJson } from "./json_lines.ts";

/** The formats of {@link exportFlows}. */
export type ExportFormat = "har" | "jsonl" | "curl" | "raw";

/** The formats of {@link exportFlows}, as the command line names them. */
export const EXPORT_FORMATS: readonly ExportFormat[] = ["har", "jsonl", "curl", "raw"];

/**
 * Headers a replayed request must not carry as recorded: hop-by-hop ones (RFC 9110 §7.6.1), the
 * proxy's, and the length (curl frames the body it is given).
 */
const CURL_DROPPED = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "content-length",
]);

/** Characters a POSIX shell word may hold unquoted. */
const SHELL_SAFE = /^[A-Za-z0-9_./:=@%+,^-]+$/;

/** `text` as one POSIX shell word: bare when safe, else in single quotes (`'` as `'\''`). */
export function shellQuote(text: string): string {
  if (SHELL_SAFE.test(text)) return text;
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/** True when `bytes` is UTF-8 text without control characters other than tab, CR and LF. */
function isPlainText(bytes: Uint8Array): boolean {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return false;
  }
  // deno-lint-ignore no-control-regex
  return !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text);
}

/**
 * An HTTP flow's request as a `curl` command line that sends it again: the method, the URL, the
 * recorded headers except pseudo-headers, hop-by-hop ones and `Content-Length` (an empty value
 * is sent as curl's `Name;`), `--http2` for an HTTP/2 flow (`--http2-prior-knowledge` for
 * `http:`), and the body byte for byte with `--data-binary`; curl's own `User-Agent` and
 * `Accept` are removed when the recording had none. A body that is not plain text is
 * piped in from base64 (`printf %s … | base64 -d | curl … --data-binary @-`); a body the
 * recording cut short is sent as recorded, after a `#` line that says so.
 *
 * The command is for a POSIX shell (sh, bash, zsh).
 */
export function flowToCurl(flow: HttpFlow): string {
  const { request } = flow;
  const args = ["curl"];
  const method = request.method;
  const body = request.body.content;
  if (method === "HEAD") args.push("--head");
  else if (method !== "GET" || body.byteLength > 0) args.push("-X", method);
  if (request.httpVersion === "HTTP/2.0") {
    args.push(request.scheme === "http" ? "--http2-prior-knowledge" : "--http2");
  } else if (request.httpVersion === "HTTP/1.0") {
    args.push("--http1.0");
  }
  for (const [name, value] of request.headers) {
    const lower = name.toLowerCase();
    if (name.startsWith(":") || CURL_DROPPED.has(lower)) continue;
    // curl removes a header given as `Name:`; `Name;` sends it empty.
    args.push("-H", value === "" ? `${name};` : `${name}: ${value}`);
  }
  // Without a header, curl would add its own User-Agent and Accept; the recording had none.
  const has = (n: string) => request.headers.some(([name]) => name.toLowerCase() === n);
  if (!has("user-agent")) args.push("-H", "User-Agent:");
  if (!has("accept")) args.push("-H", "Accept:");
  let pipe = "";
  if (body.byteLength > 0) {
    if (isPlainText(body)) {
      args.push("--data-binary", new TextDecoder().decode(body));
    } else {
      pipe = `printf %s ${shellQuote(Buffer.from(body).toString("base64"))} | base64 -d | `;
      args.push("--data-binary", "@-");
    }
  } else if (has("content-type") && method !== "GET" && method !== "HEAD") {
    // An empty body that was sent as one (a POST with Content-Length: 0).
    args.push("--data-binary", "");
  }
  // `--` ends the options: a URL is never taken for one.
  args.push("--", request.url);
  const note = request.body.truncated || body.byteLength < request.body.size
    ? `# the recorded request body was cut short: ${body.byteLength} of ${request.body.size} bytes are sent\n`
    : "";
  return note + pipe + args.map(shellQuote).join(" ");
}

const CRLF = "\r\n";

function headerLines(headers: Headers1): string {
  return headers.map(([n, v]) => `${n}: ${v}${CRLF}`).join("");
}

function isChunked(headers: Headers1): boolean {
  return headers.some(([n, v]) => n.toLowerCase() === "transfer-encoding" && /chunked\s*$/i.test(v));
}

/**
 * A message's head, body and framing as HTTP/1.1 bytes. The body goes out as recorded: chunked
 * (one chunk and the trailers) when the headers say chunked, else with a `Content-Length` of
 * the bytes that follow (added, or corrected when the recording cut the body short).
 */
function message(
  startLine: string,
  headers: Headers1,
  body: Uint8Array,
  trailers: Headers1 | undefined,
  bodyless: boolean,
): Uint8Array {
  const encoder = new TextEncoder();
  let kept = headers;
  let tail: Uint8Array = new Uint8Array(0);
  if (bodyless) {
    // A HEAD response, 1xx, 204 or 304: headers as recorded, nothing follows.
  } else if (isChunked(headers)) {
    const parts: Uint8Array[] = [];
    if (body.byteLength > 0) {
      parts.push(encoder.encode(`${body.byteLength.toString(16)}${CRLF}`), body, encoder.encode(CRLF));
    }
    parts.push(encoder.encode(`0${CRLF}${headerLines(trailers ?? [])}${CRLF}`));
    tail = concat(parts);
  } else {
    const stated = headers.find(([n]) => n.toLowerCase() === "content-length");
    if (body.byteLength > 0 || stated) {
      kept = headers.filter(([n]) => n.toLowerCase() !== "content-length");
      const at = stated ? headers.indexOf(stated) : kept.length;
      kept.splice(at, 0, [stated?.[0] ?? "Content-Length", String(body.byteLength)]);
    }
    tail = body;
  }
  return concat([encoder.encode(`${startLine}${CRLF}${headerLines(kept)}${CRLF}`), tail]);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/**
 * An HTTP flow's request as HTTP/1.1 bytes: `METHOD target HTTP/1.1`, the headers (an HTTP/2
 * request gains `Host` from its authority), and the body framed as {@link flowToRaw} says.
 */
export function requestToRaw(flow: HttpFlow): Uint8Array {
  const r = flow.request;
  let headers = r.headers.filter(([n]) => !n.startsWith(":"));
  if (!headers.some(([n]) => n.toLowerCase() === "host")) {
    const defaultPort = r.scheme === "https" ? 443 : 80;
    const host = r.host.includes(":") ? `[${r.host}]` : r.host;
    headers = [["Host", r.hostHeader ?? (r.port === defaultPort ? host : `${host}:${r.port}`)], ...headers];
  }
  // CONNECT names its authority; every other request its origin-form path.
  const target = r.method === "CONNECT" ? `${r.host}:${r.port}` : r.path || "/";
  return message(`${r.method} ${target} HTTP/1.1`, headers, r.body.content, r.trailers, false);
}

/** An HTTP flow's response as HTTP/1.1 bytes; undefined when it has none. */
export function responseToRaw(flow: HttpFlow): Uint8Array | undefined {
  const r = flow.response;
  if (!r) return undefined;
  const headers = r.headers.filter(([n]) => !n.startsWith(":"));
  const bodyless = flow.request.method === "HEAD" || (r.status >= 100 && r.status < 200) ||
    r.status === 204 ||
    r.status === 304;
  // HTTP/2 has no reason phrase: the usual one stands in.
  const reason = r.reason || STATUS_CODES[r.status] || "";
  return message(`HTTP/1.1 ${r.status} ${reason}`, headers, r.body.content, r.trailers, bodyless);
}

/**
 * An HTTP flow as HTTP/1.1 wire bytes, for HTTP/2 flows too: the request, then the response
 * when there is one, each a whole message (as they would follow each other on a connection).
 * Bodies are as recorded (decoded from chunked, still content-encoded); a chunked message is
 * sent as one chunk with its trailers, any other with a `Content-Length` of the bytes that
 * follow.
 */
export function flowToRaw(flow: HttpFlow): Uint8Array {
  const response = responseToRaw(flow);
  const request = requestToRaw(flow);
  return response ? concat([request, response]) : request;
}

/** Where {@link exportFlows} writes: text or bytes, in order. */
export type ExportSink = (chunk: Uint8Array) => Promise<void> | void;

/** What {@link exportFlows} did. */
export interface ExportResult {
  /** Flows written. */
  written: number;
  /** Flows left out because the format holds HTTP flows only (HAR, curl, raw). */
  skipped: number;
}

/**
 * Writes flows in a format, as they come: HAR 1.2 (one document; HTTP flows), JSON lines (one
 * `flowToJson` object a line; every flow), `curl` (one command line per HTTP flow) or `raw`
 * (each HTTP flow's request and response, one after another).
 */
export async function exportFlows(
  flows: AsyncIterable<Flow> | Iterable<Flow>,
  format: ExportFormat,
  sink: ExportSink,
  creator: HarCreator = { name: "wirescope", version: "" },
): Promise<ExportResult> {
  const encoder = new TextEncoder();
  const text = (s: string) => sink(encoder.encode(s));
  const result: ExportResult = { written: 0, skipped: 0 };
  if (format === "har") {
    const opening = JSON.stringify({ log: { version: "1.2", creator, pages: [] } });
    await text(`${opening.slice(0, -2)},"entries":[`);
  }
  for await (const flow of flows) {
    if (format === "jsonl") {
      await text(JSON.stringify(flowToJson(flow)) + "\n");
      result.written++;
      continue;
    }
    if (flow.type !== "http") {
      result.skipped++;
      continue;
    }
    switch (format) {
      case "har":
        await text((result.written === 0 ? "\n" : ",\n") + JSON.stringify(flowToHarEntry(flow)));
        break;
      case "curl":
        await text(flowToCurl(flow) + "\n");
        break;
      case "raw":
        await sink(flowToRaw(flow));
        break;
    }
    result.written++;
  }
  if (format === "har") await text("\n]}}\n");
  return result;
}
