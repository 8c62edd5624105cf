/**
 * Interception as a built-in addon (mitmproxy's `intercept` option): HTTP flows matching a filter
 * expression are held, with the flow handle's `intercept()`, in the `request` hook (before the
 * request goes to the server) or the `response` hook (before the response goes back), until
 * someone resumes them (changed or not) or kills them: the web UI (src/web/intercept_api.ts), or
 * any code holding the addon.
 *
 * ```ts
 * const intercept = new InterceptAddon();
 * const proxy = await startProxy({ modes, addons: [intercept] });
 * intercept.setFilter("~d example.com & ~q");   // requests to example.com, before the server
 * intercept.onChange(() => console.log(intercept.paused().map((p) => p.flow.id)));
 * intercept.resume(id, { headers: [["x-debug", "1"]] });
 * ```
 *
 * The filter is evaluated once per hook: `~q` (a request without a response) pauses in the
 * request hook only, `~s` in the response hook only, and an expression that matches both
 * (`~d example.com`) pauses a flow twice (request, then response), like mitmproxy. With no filter
 * set the hooks return at once.
 * @module
 */
import type { HttpFlow } from "../../flows/flow.ts";
import { compileFilter, type Filter } from "../../flows/filter.ts";
import type { Addon, HeaderList, HttpFlowHandle } from "../types.ts";
import { reasonPhrase } from "../flow_handle.ts";

/** Where a paused flow waits. */
export type InterceptPhase = "request" | "response";

/** A flow held by the intercept addon. */
export interface PausedFlow {
  /** The flow's handle (its `request`/`response` may be changed before resuming). */
  readonly handle: HttpFlowHandle;
  /** The flow record (as it was when it paused; edits go on the handle). */
  readonly flow: Readonly<HttpFlow>;
  readonly phase: InterceptPhase;
  /** When it paused (ms since the epoch). */
  readonly since: number;
}

/** Changes to a paused request, applied when it is resumed (each field optional). */
export interface RequestEdits {
  method?: string;
  /** The full URL (scheme, host, port, path). */
  url?: string;
  /** The whole header list, replacing the old one. */
  headers?: [string, string][];
  /** The whole body (text is sent as UTF-8). */
  body?: string | Uint8Array;
}

/** Changes to a paused response. */
export interface ResponseEdits {
  status?: number;
  reason?: string;
  headers?: [string, string][];
  body?: string | Uint8Array;
}

/** Why an edit could not be applied (the flow stays paused). */
export class InterceptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InterceptError";
  }
}

/** The intercept addon: see the module's documentation. */
export class InterceptAddon implements Addon {
  readonly name = "intercept";
  #filter: Filter | undefined;
  #paused = new Map<string, PausedFlow>();
  #listeners = new Set<(paused: PausedFlow, held: boolean) => void>();

  constructor(filter?: string) {
    if (filter) this.setFilter(filter);
  }

  /** The expression in force ("" for none). */
  get filter(): string {
    return this.#filter?.expression ?? "";
  }

  /**
   * Sets the expression ("" turns interception off; flows already paused stay paused). Throws
   * `FilterSyntaxError` for an expression that does not parse (the old one stays).
   */
  setFilter(expression: string): void {
    this.#filter = expression.trim() === "" ? undefined : compileFilter(expression);
  }

  /** The flows paused now, oldest first. */
  paused(): PausedFlow[] {
    return [...this.#paused.values()];
  }

  /** The paused flow of `id`, if it is paused. */
  get(id: string): PausedFlow | undefined {
    return this.#paused.get(id);
  }

  /**
   * Calls `listener` whenever a flow pauses (`held` true) or goes on (resumed or killed: false).
   * Returns a function that removes the listener.
   */
  onChange(listener: (paused: PausedFlow, held: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  request(flow: HttpFlowHandle): void {
    this.#maybePause(flow, "request");
  }

  response(flow: HttpFlowHandle): void {
    this.#maybePause(flow, "response");
  }

  #maybePause(handle: HttpFlowHandle, phase: InterceptPhase): void {
    const filter = this.#filter;
    if (!filter || handle.killed) return;
    const flow = handle.flow;
    if (!filter.match(flow, { marked: (flow.marked ?? "") !== "", comment: flow.comment ?? "" })) return;
    handle.intercept();
    const paused: PausedFlow = { handle, flow, phase, since: Date.now() };
    this.#paused.set(flow.id, paused);
    this.#tell(paused, true);
  }

  #tell(paused: PausedFlow, held: boolean): void {
    for (const l of this.#listeners) {
      try {
        l(paused, held);
      } catch { /* a listener's failure is its own */ }
    }
  }

  #take(id: string): PausedFlow {
    const p = this.#paused.get(id);
    if (!p) throw new InterceptError(`flow ${id} is not paused`);
    return p;
  }

  /**
   * Lets paused flow `id` go on, with `edits` applied to its request or response (whichever it
   * is paused at). Throws {@link InterceptError} when it is not paused or an edit is invalid (a
   * bad header name, a URL that is not http(s), a status out of range); it then stays paused.
   */
  resume(id: string, edits: RequestEdits | ResponseEdits = {}): void {
    const p = this.#take(id);
    try {
      if (p.phase === "request") applyRequestEdits(p.handle, edits as RequestEdits);
      else applyResponseEdits(p.handle, edits as ResponseEdits);
    } catch (e) {
      throw e instanceof InterceptError ? e : new InterceptError((e as Error).message);
    }
    this.#paused.delete(id);
    p.handle.resume();
    this.#tell(p, false);
  }

  /** Kills paused flow `id`: its client connection is closed, the flow recorded as killed. */
  kill(id: string): void {
    const p = this.#take(id);
    this.#paused.delete(id);
    p.handle.kill();
    p.handle.resume();
    this.#tell(p, false);
  }

  /** Resumes every paused flow unchanged; returns how many. */
  resumeAll(): number {
    const ids = [...this.#paused.keys()];
    for (const id of ids) this.resume(id);
    return ids.length;
  }

  /** At shutdown: nothing stays held. */
  done(): void {
    this.resumeAll();
  }
}

function bytes(body: string | Uint8Array): Uint8Array {
  return typeof body === "string" ? new TextEncoder().encode(body) : body;
}

function checkHeaders(headers: unknown): [string, string][] {
  if (!Array.isArray(headers)) throw new InterceptError("headers: expected a list of [name, value] pairs");
  for (const pair of headers) {
    if (
      !Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "string" || typeof pair[1] !== "string"
    ) {
      throw new InterceptError("headers: expected a list of [name, value] pairs");
    }
  }
  return headers as [string, string][];
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Checks `headers` as a header list (names tokens, values without CR, LF, NUL). */
function checkFields(headers: unknown): [string, string][] {
  const list = checkHeaders(headers);
  for (const [n, v] of list) {
    if (!TOKEN.test(n)) throw new InterceptError(`invalid header name ${JSON.stringify(n)}`);
    if (/[\r\n\0]/.test(v)) throw new InterceptError(`invalid value for header ${n}: CR, LF or NUL`);
  }
  return list;
}

/** Replaces the fields of `target` with `list` (already checked). */
function replaceFields(target: HeaderList, list: [string, string][]): void {
  for (const [n] of target.toArray()) target.delete(n);
  for (const [n, v] of list) target.add(n, v);
}

/** Applies request edits to a handle (checked before anything changes). */
export function applyRequestEdits(handle: HttpFlowHandle, edits: RequestEdits): void {
  const r = handle.request;
  if (edits.method !== undefined && !TOKEN.test(edits.method)) {
    throw new InterceptError(`invalid method ${JSON.stringify(edits.method)}`);
  }
  if (edits.url !== undefined) {
    let u: URL;
    try {
      u = new URL(edits.url);
    } catch {
      throw new InterceptError(`not a URL: ${edits.url}`);
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") {
      throw new InterceptError(`not an http(s) URL: ${edits.url}`);
    }
  }
  const headers = edits.headers === undefined ? undefined : checkFields(edits.headers);
  if (edits.method !== undefined) r.method = edits.method;
  if (edits.url !== undefined && edits.url !== r.url) r.url = edits.url;
  if (headers) replaceFields(r.headers, headers);
  if (edits.body !== undefined) r.body = bytes(edits.body);
}

/** Applies response edits to a handle (checked before anything changes). */
export function applyResponseEdits(handle: HttpFlowHandle, edits: ResponseEdits): void {
  const r = handle.response;
  if (!r) throw new InterceptError("the flow has no response yet");
  if (
    edits.status !== undefined &&
    (!Number.isInteger(edits.status) || edits.status < 100 || edits.status > 999)
  ) {
    throw new InterceptError(`invalid status ${edits.status}`);
  }
  if (edits.reason !== undefined && /[\r\n\0]/.test(edits.reason)) {
    throw new InterceptError("invalid reason phrase");
  }
  const headers = edits.headers === undefined ? undefined : checkFields(edits.headers);
  if (edits.status !== undefined && edits.status !== r.status) {
    r.status = edits.status;
    if (edits.reason === undefined) r.reason = reasonPhrase(edits.status);
  }
  if (edits.reason !== undefined) r.reason = edits.reason;
  if (headers) replaceFields(r.headers, headers);
  if (edits.body !== undefined) r.body = bytes(edits.body);
}
