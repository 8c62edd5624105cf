/**
 * The mutable views HTTP hooks get ({@link HttpFlowHandle}) over a flow record, and what they
 * changed, as the layers apply it: a request or response edit, a local response, or a kill.
 * The record itself is not touched here: the layer that applies the edit updates it, so what the
 * flow records is what went on the wire.
 * @module
 */
import { brotliDecompressSync, gunzipSync, inflateRawSync, inflateSync } from "node:zlib";
import type { HttpFlow, HttpRequestRecord, HttpResponseRecord } from "../flows/flow.ts";
import type {
  BodyInit,
  BodyTransform,
  HeaderList,
  HeadersInit,
  HttpFlowHandle,
  HttpHookName,
  HttpRequestHandle,
  HttpResponseHandle,
} from "./types.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** An ordered multi-map of header fields (see {@link HeaderList}). */
export class Fields implements HeaderList {
  #fields: [string, string][];
  /** Bumped on every change (cheap "was it changed?"). */
  version = 0;

  constructor(init?: HeadersInit) {
    this.#fields = init === undefined ? [] : toPairs(init);
  }

  get(name: string): string | undefined {
    const lower = name.toLowerCase();
    for (const [k, v] of this.#fields) if (k.toLowerCase() === lower) return v;
    return undefined;
  }

  getAll(name: string): string[] {
    const lower = name.toLowerCase();
    return this.#fields.filter(([k]) => k.toLowerCase() === lower).map(([, v]) => v);
  }

  has(name: string): boolean {
    return this.get(name) !== undefined;
  }

  set(name: string, value: string): void {
    checkField(name, value);
    const lower = name.toLowerCase();
    const i = this.#fields.findIndex(([k]) => k.toLowerCase() === lower);
    if (i < 0) {
      this.#fields.push([name, value]);
    } else {
      this.#fields[i] = [this.#fields[i]![0], value];
      this.#fields = this.#fields.filter(([k], j) => j <= i || k.toLowerCase() !== lower);
    }
    this.version++;
  }

  add(name: string, value: string): void {
    checkField(name, value);
    this.#fields.push([name, value]);
    this.version++;
  }

  delete(name: string): boolean {
    const lower = name.toLowerCase();
    const before = this.#fields.length;
    this.#fields = this.#fields.filter(([k]) => k.toLowerCase() !== lower);
    if (this.#fields.length === before) return false;
    this.version++;
    return true;
  }

  toArray(): [string, string][] {
    return this.#fields.map(([k, v]) => [k, v]);
  }

  get size(): number {
    return this.#fields.length;
  }

  [Symbol.iterator](): Iterator<[string, string]> {
    return this.toArray()[Symbol.iterator]();
  }
}

function toPairs(init: HeadersInit): [string, string][] {
  if (init instanceof Fields) return init.toArray();
  if (Symbol.iterator in init) {
    return [...(init as Iterable<[string, string]>)].map(([k, v]) => [String(k), String(v)]);
  }
  return Object.entries(init as Record<string, string>).map(([k, v]) => [k, String(v)]);
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

function checkField(name: string, value: string): void {
  if (!TOKEN.test(name)) throw new TypeError(`invalid header name ${JSON.stringify(name)}`);
  if (/[\r\n\0]/.test(value)) throw new TypeError(`invalid value for header ${name}: CR, LF or NUL`);
}

function bytesOf(body: BodyInit | undefined): Uint8Array {
  if (body === undefined) return new Uint8Array(0);
  return typeof body === "string" ? encoder.encode(body) : body;
}

/** The changes hooks made to a request, as the layer applies them. */
export interface RequestEdit {
  method: string;
  scheme: string;
  host: string;
  port: number;
  path: string;
  headers: [string, string][];
  /** The new body when it was replaced (the layer fixes Content-Length); absent: unchanged. */
  body?: Uint8Array;
  /** The streaming transform set in `requestheaders`. */
  stream?: BodyTransform | true;
}

/** The changes hooks made to a response. */
export interface ResponseEdit {
  status: number;
  reason: string;
  headers: [string, string][];
  body?: Uint8Array;
  stream?: BodyTransform | true;
}

/** A response made by a hook with `respond()`. */
export interface MadeResponse {
  status: number;
  reason: string;
  headers: [string, string][];
  body: Uint8Array;
}

/**
 * What the hooks of one call decided, for the layer: nothing (go on unchanged), edits, a local
 * response, or a kill. `marked`/`comment` are copied onto the record by whoever applies it.
 */
export interface HttpVerdict {
  kill?: true;
  respond?: MadeResponse;
  request?: RequestEdit;
  response?: ResponseEdit;
  marked?: string;
  comment?: string;
}

/** Standard reason phrases of common statuses (used by `respond`). */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? "";
}

const REASONS: Record<number, string> = {
  200: "OK",
  201: "Created",
  204: "No Content",
  301: "Moved Permanently",
  302: "Found",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  418: "I'm a teapot",
  429: "Too Many Requests",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

class MessageView {
  headers: Fields;
  #body: Uint8Array | undefined;
  bodyChanged = false;
  bodyTruncated: boolean;
  stream?: BodyTransform | true;
  readonly httpVersion: string;
  trailers?: Fields;

  constructor(
    record: { headers: [string, string][]; httpVersion: string; trailers?: [string, string][] },
    body: Uint8Array | undefined,
    truncated: boolean,
  ) {
    this.headers = new Fields(record.headers);
    this.httpVersion = record.httpVersion;
    this.#body = body;
    this.bodyTruncated = truncated;
    if (record.trailers) this.trailers = new Fields(record.trailers);
  }

  get body(): Uint8Array | undefined {
    return this.#body;
  }

  set body(value: Uint8Array | undefined) {
    this.#body = value ?? new Uint8Array(0);
    this.bodyChanged = true;
  }

  /**
   * The body decoded: its Content-Encoding (gzip, deflate, br; several in order) undone, then
   * read as UTF-8. A body that does not decode is read as it is.
   */
  get text(): string | undefined {
    return this.#body === undefined ? undefined : decoder.decode(decodeContent(this.#body, this.headers));
  }

  /** Sets the body to `value` as UTF-8, not encoded: Content-Encoding is removed. */
  set text(value: string | undefined) {
    this.headers.delete("content-encoding");
    this.body = encoder.encode(value ?? "");
  }

  /** Puts the body in as it came (not a change). */
  load(body: Uint8Array | undefined, truncated: boolean): void {
    if (this.bodyChanged) return;
    this.#body = body;
    this.bodyTruncated = truncated;
  }

  json(): unknown {
    const text = this.text;
    if (text === undefined) throw new Error("the body was not buffered");
    return JSON.parse(text);
  }
}

class RequestView extends MessageView implements HttpRequestHandle {
  method: string;
  scheme: string;
  host: string;
  port: number;
  path: string;

  constructor(record: HttpRequestRecord, body: Uint8Array | undefined, truncated: boolean) {
    super(record, body, truncated);
    this.method = record.method;
    this.scheme = record.scheme;
    this.host = record.host;
    this.port = record.port;
    this.path = record.path;
  }

  get url(): string {
    const defaultPort = this.scheme === "https" ? 443 : 80;
    const host = this.host.includes(":") ? `[${this.host}]` : this.host;
    return `${this.scheme}://${host}${this.port === defaultPort ? "" : ":" + this.port}${this.path}`;
  }

  set url(value: string) {
    const u = new URL(value);
    if (u.protocol !== "http:" && u.protocol !== "https:") {
      throw new TypeError(`not an http(s) URL: ${value}`);
    }
    this.scheme = u.protocol.slice(0, -1);
    this.host = u.hostname.replace(/^\[|\]$/g, "");
    this.port = u.port === "" ? (this.scheme === "https" ? 443 : 80) : Number(u.port);
    this.path = (u.pathname || "/") + u.search;
  }
}

class ResponseView extends MessageView implements HttpResponseHandle {
  status: number;
  reason: string;

  constructor(record: HttpResponseRecord, body: Uint8Array | undefined, truncated: boolean) {
    super(record, body, truncated);
    this.status = record.status;
    this.reason = record.reason;
  }
}

/**
 * `body` with the Content-Encoding of `headers` undone (gzip, x-gzip, deflate (zlib or raw), br;
 * the codings in reverse of the order they were applied). Unknown codings and bodies that do not
 * decode come back as they are.
 */
export function decodeContent(body: Uint8Array, headers: HeaderList): Uint8Array {
  const codings = headers.getAll("content-encoding").flatMap((v) => v.split(","))
    .map((c) => c.trim().toLowerCase()).filter((c) => c !== "" && c !== "identity");
  let out = body;
  try {
    for (const coding of codings.reverse()) {
      if (coding === "gzip" || coding === "x-gzip") out = gunzipSync(out);
      else if (coding === "br") out = brotliDecompressSync(out);
      else if (coding === "deflate") {
        try {
          out = inflateSync(out);
        } catch {
          out = inflateRawSync(out); // some servers send raw DEFLATE under this name
        }
      } else return body;
    }
  } catch {
    return body;
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** Body content for a hook: the whole body when it is in and was kept in full. */
function fullBody(
  record: { body: { content: Uint8Array; truncated: boolean } },
  complete: boolean,
): Uint8Array | undefined {
  return complete && !record.body.truncated ? record.body.content : undefined;
}

/**
 * The handle HTTP hooks get for one exchange: created once per flow and kept across its hooks
 * (so a stream set in `requestheaders` and a mark set in `request` carry on).
 */
export class HttpFlowView implements HttpFlowHandle {
  readonly flow: HttpFlow;
  #request: RequestView;
  #response: ResponseView | undefined;
  #killed = false;
  #made: MadeResponse | undefined;
  marked: string;
  comment: string;
  #intercepted = false;
  #resumed: (() => void) | null = null;
  #resume: Promise<void> | null = null;
  /** The hook being run (what `body` means depends on it). */
  phase: HttpHookName = "requestheaders";

  constructor(flow: HttpFlow) {
    this.flow = flow;
    this.#request = new RequestView(flow.request, undefined, false);
    this.marked = flow.marked ?? "";
    this.comment = flow.comment ?? "";
  }

  get id(): string {
    return this.flow.id;
  }
  get client(): HttpFlow["client"] {
    return this.flow.client;
  }
  get server(): HttpFlow["server"] {
    return this.flow.server;
  }
  get tls(): HttpFlow["tls"] {
    return this.flow.tls;
  }
  get error(): HttpFlow["error"] {
    return this.flow.error;
  }
  get request(): HttpRequestHandle {
    return this.#request;
  }
  get response(): HttpResponseHandle | undefined {
    return this.#response;
  }
  get killed(): boolean {
    return this.#killed;
  }
  get intercepted(): boolean {
    return this.#intercepted;
  }

  /** Brings the bodies in before hook `phase` (they come with `request`/`response`). */
  enter(phase: HttpHookName): void {
    this.phase = phase;
    const flow = this.flow;
    if (phase === "request") {
      const r = this.#request;
      const complete = flow.request.timestampEnd !== undefined;
      r.load(
        r.stream ? undefined : fullBody(flow.request, complete),
        r.stream !== undefined || !complete ||
          flow.request.body.truncated,
      );
    }
    if ((phase === "responseheaders" || phase === "response") && flow.response) {
      if (!this.#response) this.#response = new ResponseView(flow.response, undefined, false);
      if (phase === "response") {
        const r = this.#response;
        const complete = flow.response.timestampEnd !== undefined;
        r.load(
          r.stream ? undefined : fullBody(flow.response, complete),
          r.stream !== undefined || !complete ||
            flow.response.body.truncated,
        );
      }
    }
  }

  respond(status: number, headers?: HeadersInit, body?: BodyInit): void {
    const bytes = bytesOf(body);
    const fields = new Fields(headers);
    if (!fields.has("content-length")) fields.set("content-length", String(bytes.byteLength));
    this.#made = { status, reason: reasonPhrase(status), headers: fields.toArray(), body: bytes };
  }

  kill(): void {
    this.#killed = true;
  }

  intercept(): void {
    if (this.#intercepted) return;
    this.#intercepted = true;
    this.#resume = new Promise<void>((r) => (this.#resumed = r));
  }

  resume(): void {
    this.#intercepted = false;
    this.#resumed?.();
    this.#resumed = null;
  }

  /** Resolves once the flow is not intercepted (at once when it is not). */
  waitResumed(): Promise<void> {
    return this.#intercepted && this.#resume ? this.#resume : Promise.resolve();
  }

  /** True when a hook answered or killed (later addons' hooks are skipped then). */
  get decided(): boolean {
    return this.#killed || this.#made !== undefined;
  }

  /** What the hooks decided, relative to the record. */
  verdict(): HttpVerdict | undefined {
    const v: HttpVerdict = {};
    if (this.#killed) v.kill = true;
    else if (this.#made) v.respond = this.#made;
    else if (this.phase === "requestheaders" || this.phase === "request") {
      const edit = this.#requestEdit();
      if (edit) v.request = edit;
    } else if (this.phase === "responseheaders" || this.phase === "response") {
      const edit = this.#responseEdit();
      if (edit) v.response = edit;
    }
    if (this.marked !== (this.flow.marked ?? "")) v.marked = this.marked;
    if (this.comment !== (this.flow.comment ?? "")) v.comment = this.comment;
    return Object.keys(v).length === 0 ? undefined : v;
  }

  #requestEdit(): RequestEdit | undefined {
    const r = this.#request;
    const rec = this.flow.request;
    const headersChanged = r.headers.version > 0;
    const changed = headersChanged || r.bodyChanged || r.stream !== undefined || r.method !== rec.method ||
      r.scheme !== rec.scheme || r.host !== rec.host || r.port !== rec.port || r.path !== rec.path;
    if (!changed) return undefined;
    const edit: RequestEdit = {
      method: r.method,
      scheme: r.scheme,
      host: r.host,
      port: r.port,
      path: r.path,
      headers: r.headers.toArray(),
    };
    if (r.bodyChanged) edit.body = r.body ?? new Uint8Array(0);
    if (r.stream !== undefined) edit.stream = r.stream;
    return edit;
  }

  #responseEdit(): ResponseEdit | undefined {
    const r = this.#response;
    const rec = this.flow.response;
    if (!r || !rec) return undefined;
    const changed = r.headers.version > 0 || r.bodyChanged || r.stream !== undefined ||
      r.status !== rec.status ||
      r.reason !== rec.reason;
    if (!changed) return undefined;
    const edit: ResponseEdit = { status: r.status, reason: r.reason, headers: r.headers.toArray() };
    if (r.bodyChanged) edit.body = r.body ?? new Uint8Array(0);
    if (r.stream !== undefined) edit.stream = r.stream;
    return edit;
  }

  /** Forgets edits once the layer has applied them (the record now holds them). */
  applied(): void {
    this.#request.headers.version = 0;
    this.#request.bodyChanged = false;
    if (this.#response) {
      this.#response.headers.version = 0;
      this.#response.bodyChanged = false;
    }
    this.#made = undefined;
  }
}
