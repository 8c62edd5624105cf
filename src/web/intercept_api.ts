/**
 * The web UI's interception and replay API (joined to src/web/server.ts, behind the same checks):
 *
 * - `GET /api/intercept`, `PUT /api/intercept {filter}`: the intercept expression and the flows
 *   held now (an expression that does not parse: 400 with its column, the old one stays);
 * - `POST /api/intercept/resume-all`;
 * - `POST /api/flows/:id/resume` with {@link MessageEditsJson} (the held request's method, URL,
 *   headers, body, or the held response's status, reason, headers, body), `POST …/kill`;
 * - `POST /api/flows/:id/replay`: the recorded request again (client replay);
 * - `POST /api/flows/:id/send` with {@link MessageEditsJson}: the recorded request, edited, sent
 *   by client replay (the new flow's `replayOf` names the original).
 *
 * Held flows are read from memory (the store may not have them yet): their detail and bodies
 * are served here. Live summaries carry `intercepted` while a flow is held.
 * @module
 */
import type { Flow, HttpFlow } from "../flows/flow.ts";
import { FilterSyntaxError } from "../flows/filter.ts";
import type { FlowStore } from "../flows/store.ts";
import type { ProxyHandle } from "../proxy/proxy.ts";
import { type InterceptAddon, InterceptError } from "../addons/builtins/intercept.ts";
import { ReplayError } from "../proxy/client_replay.ts";
import { bodyOf, flowDetail, flowSummary } from "./flow_view.ts";
import type { FlowSummary, InterceptJson, MessageEditsJson } from "./api_types.ts";

/** What the routes need. */
export interface InterceptApiOptions {
  intercept?: InterceptAddon;
  proxy?: ProxyHandle;
  store: FlowStore;
}

const HEADERS: Record<string, string> = {
  "x-content-type-options": "nosniff",
  "cache-control": "no-store",
  "content-type": "application/json; charset=utf-8",
};

function json(status: number, value: unknown): Response {
  return new Response(JSON.stringify(value), { status, headers: HEADERS });
}

/** A flow's list summary with what this module knows: where it is held, what it replays. */
export function summarize(
  flow: Flow,
  intercept: InterceptAddon | undefined,
  extra: { cursor?: string; marked?: boolean; live?: boolean } = {},
): FlowSummary {
  const s = flowSummary(flow, extra);
  const held = intercept?.get(flow.id);
  if (held) {
    s.intercepted = held.phase;
    s.live = true;
  } else if (flow.timestampEnd === undefined) s.live = true;
  if (flow.type === "http" && flow.replayOf) s.replayOf = flow.replayOf;
  return s;
}

async function body(req: Request): Promise<Record<string, unknown> | Response> {
  try {
    const value = await req.json();
    if (typeof value === "object" && value !== null && !Array.isArray(value)) return value;
  } catch { /* below */ }
  return json(400, { error: "expected a JSON object" });
}

/** The edits of a request body, checked for types (values are checked where they are applied). */
function edits(value: Record<string, unknown>): MessageEditsJson | string {
  const out: MessageEditsJson = {};
  for (const k of ["method", "url", "reason", "body"] as const) {
    if (value[k] === undefined) continue;
    if (typeof value[k] !== "string") return `${k}: expected a string`;
    out[k] = value[k] as string;
  }
  if (value.status !== undefined) {
    if (typeof value.status !== "number") return "status: expected a number";
    out.status = value.status;
  }
  if (value.headers !== undefined) {
    const h = value.headers;
    if (
      !Array.isArray(h) ||
      !h.every((p) =>
        Array.isArray(p) && p.length === 2 && typeof p[0] === "string" && typeof p[1] === "string"
      )
    ) return "headers: expected a list of [name, value] pairs";
    out.headers = h as [string, string][];
  }
  return out;
}

const HOP = new Set(["content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection"]);

/**
 * A copy of `original` with its request changed by `e` (what the editor's Send makes): method,
 * URL (the destination follows the URL when its host or port changed), headers, body.
 */
export function editedCopy(original: HttpFlow, e: MessageEditsJson): HttpFlow {
  const copy = structuredClone(original);
  const r = copy.request;
  if (e.method !== undefined) {
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(e.method)) throw new ReplayError(`invalid method ${e.method}`);
    r.method = e.method;
  }
  if (e.url !== undefined) {
    let u: URL;
    try {
      u = new URL(e.url);
    } catch {
      throw new ReplayError(`not a URL: ${e.url}`);
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") {
      throw new ReplayError(`not an http(s) URL: ${e.url}`);
    }
    const scheme = u.protocol.slice(0, -1);
    const host = u.hostname.replace(/^\[|\]$/g, "");
    const port = u.port === "" ? (scheme === "https" ? 443 : 80) : Number(u.port);
    if (host !== r.host || port !== r.port) copy.server = { address: { hostname: host, port } };
    r.scheme = scheme;
    r.host = host;
    r.port = port;
    r.path = (u.pathname || "/") + u.search;
    r.url = u.href;
  }
  if (e.headers !== undefined) {
    for (const [n, v] of e.headers) {
      if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(n)) {
        throw new ReplayError(`invalid header name ${JSON.stringify(n)}`);
      }
      if (/[\r\n\0]/.test(v)) throw new ReplayError(`invalid value for header ${n}: CR, LF or NUL`);
    }
    // Framing is made anew by the replay; a Host that names another host than the URL's follows the URL.
    r.headers = e.headers.filter(([n]) => !HOP.has(n.toLowerCase()));
    if (e.url !== undefined) {
      r.headers = r.headers.filter(([n]) => n.toLowerCase() !== "host" && n !== ":authority");
    }
  } else if (e.url !== undefined) {
    r.headers = r.headers.filter(([n]) => n.toLowerCase() !== "host" && n !== ":authority");
  }
  if (e.body !== undefined) {
    const bytes = new TextEncoder().encode(e.body);
    r.body = { ...r.body, content: bytes, size: bytes.byteLength, truncated: false };
  }
  return copy;
}

/**
 * Serves the routes of this module; undefined for any other request. `changed` is told of held
 * flows that go on (their summaries are sent to the pages).
 */
export async function interceptApi(
  req: Request,
  url: URL,
  o: InterceptApiOptions,
): Promise<Response | undefined> {
  const path = url.pathname;
  const intercept = o.intercept;
  if (path === "/api/intercept") {
    if (req.method !== "GET" && req.method !== "PUT") return json(405, { error: "method not allowed" });
    if (!intercept) {
      if (req.method === "GET") {
        return json(200, { available: false, filter: "", paused: [] } satisfies InterceptJson);
      }
      return json(501, { error: "interception is not available (the UI serves a store, not a proxy)" });
    }
    if (req.method === "PUT") {
      const b = await body(req);
      if (b instanceof Response) return b;
      if (typeof b.filter !== "string") return json(400, { error: 'expected {"filter": "..."}' });
      try {
        intercept.setFilter(b.filter);
      } catch (e) {
        if (e instanceof FilterSyntaxError) {
          return json(400, { ok: false, error: e.reason, column: e.column });
        }
        throw e;
      }
    }
    const state: InterceptJson = {
      available: true,
      filter: intercept.filter,
      paused: intercept.paused().map((p) => summarize(p.flow as HttpFlow, intercept)),
    };
    return json(200, state);
  }
  if (path === "/api/intercept/resume-all" && req.method === "POST") {
    return json(200, { resumed: intercept?.resumeAll() ?? 0 });
  }
  const m = /^\/api\/flows\/([^/]+)(?:\/(resume|kill|replay|send|request\/body|response\/body))?$/.exec(path);
  if (!m) return undefined;
  const id = decodeURIComponent(m[1]!);
  const action = m[2];
  const held = intercept?.get(id);
  if (action === undefined || action.endsWith("/body")) {
    // Only held flows are answered here; the rest are the store's.
    if (!held || req.method !== "GET") return undefined;
    if (action === undefined) {
      const detail = flowDetail(held.flow as Flow, { live: true });
      detail.summary = summarize(held.flow as Flow, intercept);
      return json(200, detail);
    }
    const part = bodyOf(held.flow as Flow, action.startsWith("request") ? "request" : "response");
    if (!part) return json(404, { error: "no such body" });
    const type = part.headers.find(([n]) => n.toLowerCase() === "content-type")?.[1] ??
      "application/octet-stream";
    return new Response(part.body.content.slice(), {
      headers: {
        ...HEADERS,
        "content-type": type,
        "content-security-policy": "sandbox; default-src 'none'",
        "x-wirescope-truncated": String(part.body.truncated),
      },
    });
  }
  if (req.method !== "POST") return json(405, { error: "method not allowed" });
  if (action === "resume" || action === "kill") {
    if (!intercept || !held) return json(404, { error: `flow ${id} is not held` });
    if (action === "kill") {
      intercept.kill(id);
      return json(200, { killed: true });
    }
    const b = await body(req);
    if (b instanceof Response) return b;
    const e = edits(b);
    if (typeof e === "string") return json(400, { error: e });
    try {
      intercept.resume(id, e);
    } catch (err) {
      if (err instanceof InterceptError) return json(400, { error: err.message });
      throw err;
    }
    return json(200, { resumed: true });
  }
  // replay, send
  const proxy = o.proxy;
  if (!proxy) return json(501, { error: "replay needs a running proxy" });
  const stored = await o.store.get(id);
  if (!stored) return json(404, { error: "no such flow" });
  if (stored.flow.type !== "http") {
    return json(422, { error: `a ${stored.flow.type} flow cannot be replayed` });
  }
  let flow: HttpFlow = stored.flow;
  if (action === "send") {
    const b = await body(req);
    if (b instanceof Response) return b;
    const e = edits(b);
    if (typeof e === "string") return json(400, { error: e });
    try {
      flow = editedCopy(flow, e);
    } catch (err) {
      return json(400, { error: (err as Error).message });
    }
  }
  try {
    const made = await proxy.replay(flow);
    return json(200, { flow: summarize(made, intercept) });
  } catch (err) {
    if (err instanceof ReplayError) return json(422, { error: err.message });
    throw err;
  }
}
