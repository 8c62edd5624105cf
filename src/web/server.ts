/**
 * The web UI's server: the page (embedded assets), a JSON API over a {@link FlowStore}, and a
 * WebSocket of live flow summaries. Every request passes the checks of src/web/auth.ts first
 * (Host, session or token, CSRF, WebSocket Origin); and when it serves a running proxy, the UI's
 * own address is made unreachable through that proxy (`protectDestination`), so a page loaded by a
 * proxied client cannot reach it even with `allowLocalDestinations`.
 *
 * Live updates cost the proxy little: nothing is done per flow while no page is connected; with
 * pages, committed flows are summarised once and sent at most every `updateInterval` ms as one
 * message per page, filtered by that page's expression; a page that reads too slowly is told it
 * missed some (`gap`) instead of having messages queue up without bound.
 * @module
 */
import type { FlowBus } from "../flows/flow.ts";
import type { Flow } from "../flows/flow.ts";
import type { FlowRecorder } from "../flows/recorder.ts";
import type { FlowStore } from "../flows/store.ts";
import { compileFilter, type Filter, FilterSyntaxError } from "../flows/filter.ts";
import type { ProxyHandle } from "../proxy/proxy.ts";
import { type Refusal, WebAuth } from "./auth.ts";
import { bodyOf, decodeContent, flowDetail } from "./flow_view.ts";
import { flowToCurl, flowToRaw } from "../flows/export.ts";
import { flowToHarEntry } from "../flows/har.ts";
import type { FilterCheckJson, FlowPageJson, FlowSummary, UpdatesMessage } from "./api_types.ts";
import { ASSETS } from "./assets.generated.ts";
import type { InterceptAddon } from "../addons/builtins/intercept.ts";
import { interceptApi, summarize } from "./intercept_api.ts";
import type { FlowOrderKey } from "../flows/store.ts";
import { certPage, type WireGuardAdmin, wireGuardApi } from "./wireguard_admin.ts";

/** Options of {@link startWebUi}. */
export interface WebUiOptions {
  /** A running proxy: its store, bus and recorder are used, and the UI's address is protected. */
  proxy?: ProxyHandle;
  /** The store to show (default: the proxy's). */
  store?: FlowStore;
  /** Where ended flows are heard of, when there is no recorder (default: the proxy's). */
  bus?: FlowBus;
  /** Tells when flows are committed to the store (default: the proxy's); preferred over `bus`. */
  recorder?: FlowRecorder;
  /** Address to listen on (default 127.0.0.1). */
  hostname?: string;
  /** Port (default 8081; 0 picks a free one). */
  port?: number;
  /** A fixed secret instead of a random token per run. */
  password?: string;
  /** Names the `Host` header may carry besides IP literals and `localhost`. */
  hostnames?: string[];
  /** Least time between two live update messages to a page (ms; default 150). */
  updateInterval?: number;
  /** Receives the server's log lines. */
  onLog?: (level: "info" | "warn", message: string) => void;
  /**
   * Interception from the UI (src/web/intercept_api.ts): the intercept addon given to the proxy
   * (`startProxy({ addons: [intercept] })`). Without it the UI shows no intercept controls.
   */
  intercept?: InterceptAddon;
  /** The WireGuard page's peers (src/web/wireguard_admin.ts); without it the page says there is no such mode. */
  wireguard?: WireGuardAdmin;
}

/** A running web UI. */
export interface WebUiHandle {
  /** The URL to open, with the token. */
  readonly url: string;
  /** Where it listens. */
  readonly addr: Deno.NetAddr;
  /** The secret of the URL. */
  readonly token: string;
  /** Counters. */
  stats(): WebUiStats;
  /** Stops serving and lifts the proxy's protection of the address. */
  close(): Promise<void>;
}

/** Counters of a web UI. */
export interface WebUiStats {
  /** Pages connected to the live updates. */
  pages: number;
  /** Update messages sent. */
  messages: number;
  /** Flow summaries sent in them. */
  summaries: number;
  /** Requests refused by the checks. */
  refused: number;
}

/** The columns `/api/flows?sort=` takes. */
const SORT_KEYS = new Set<string>(["time", "status", "host", "method", "size", "requestSize", "duration"]);

/** Most pages connected to the live updates at once. */
const MAX_PAGES = 64;
/** A page with more than this waiting to be sent misses updates (and is told so). */
const MAX_BUFFERED = 1 << 20;
/** Flows kept for the next update message, at most (beyond: a gap). */
const MAX_PENDING = 20_000;

interface Page {
  socket: WebSocket;
  filter?: Filter;
  highlight?: Filter;
  gap: boolean;
}

const SECURITY_HEADERS: Record<string, string> = {
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

const PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " +
  "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

function json(status: number, value: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(value), {
    status,
    headers: { ...SECURITY_HEADERS, "content-type": "application/json; charset=utf-8", ...headers },
  });
}

function refusal(r: NonNullable<Refusal>): Response {
  return json(r.status, { error: r.message });
}

/** Starts the web UI. The printed URL is `handle.url`. */
export async function startWebUi(options: WebUiOptions): Promise<WebUiHandle> {
  const store = options.store ?? options.proxy?.store;
  if (!store) throw new Error("the web UI needs a flow store (the proxy's `store` option)");
  const recorder = options.recorder ?? options.proxy?.recorder;
  const bus = options.bus ?? options.proxy?.bus;
  const hostname = options.hostname ?? "127.0.0.1";
  const interval = options.updateInterval ?? 150;
  const log = options.onLog ?? (() => {});
  const pages = new Set<Page>();
  const stats: WebUiStats = { pages: 0, messages: 0, summaries: 0, refused: 0 };
  let pending: Flow[] = [];
  let overflow = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  // Made once the port is known (the Host check needs it); no request is served before.
  const ready: { auth?: WebAuth } = {};

  const flush = () => {
    timer = undefined;
    // A flow heard of twice in one batch (started, held, ended) is sent once, as it is now.
    const flows = [...new Set(pending)];
    const missed = overflow;
    pending = [];
    overflow = false;
    const summaries = new Map<Flow, FlowSummary>();
    for (const page of pages) {
      if (page.socket.readyState !== WebSocket.OPEN) continue;
      if (missed) page.gap = true;
      const out: FlowSummary[] = [];
      for (const flow of flows) {
        if (page.filter && !page.filter.match(flow, { marked: false, comment: "" })) continue;
        let s = summaries.get(flow);
        if (!s) summaries.set(flow, s = summarize(flow, options.intercept));
        out.push(page.highlight?.match(flow, { marked: false, comment: "" }) ? { ...s, highlight: true } : s);
      }
      if (out.length === 0 && !page.gap) continue;
      if (page.socket.bufferedAmount > MAX_BUFFERED) {
        page.gap = true;
        continue;
      }
      const message: UpdatesMessage = { flows: page.gap ? [] : out };
      if (page.gap) message.gap = true;
      page.gap = false;
      try {
        page.socket.send(JSON.stringify(message));
        stats.messages++;
        stats.summaries += message.flows.length;
      } catch { /* closing */ }
    }
  };
  const heard = (flows: Flow[]) => {
    if (pages.size === 0) return;
    if (pending.length + flows.length > MAX_PENDING) overflow = true;
    else pending.push(...flows);
    timer ??= setTimeout(flush, interval);
  };
  // Flows in progress (started, held by interception, let go) are sent live too; ended ones once committed.
  const unsubscribeLive = [
    bus?.subscribe((e) => {
      if (e.type === "start") heard([e.flow]);
    }),
    options.intercept?.onChange((p) => heard([p.flow as Flow])),
  ];
  const unsubscribe = recorder ? recorder.onCommit(heard) : bus
    ? bus.subscribe((e) => {
      if (e.type === "end") heard([e.flow]);
    })
    : () => {};

  const handler = async (req: Request): Promise<Response> => {
    const a = ready.auth;
    if (!a) return json(503, { error: "starting" });
    const url = new URL(req.url);
    const host = req.headers.get("host");
    const hostRefused = a.checkHost(host);
    if (hostRefused) {
      stats.refused++;
      return refusal(hostRefused);
    }
    const path = url.pathname;
    if (req.method === "GET" && (path === "/app.js" || path === "/style.css")) {
      const asset = path === "/app.js" ? ASSETS.js : ASSETS.css;
      return new Response(asset, {
        headers: {
          ...SECURITY_HEADERS,
          "content-type": path === "/app.js" ? "text/javascript; charset=utf-8" : "text/css; charset=utf-8",
        },
      });
    }
    if (req.method === "GET" && path === "/") {
      const token = url.searchParams.get("token");
      if (token !== null) {
        if (!a.tokenMatches(token)) {
          stats.refused++;
          return page(401, loginPage("That token is not this server's."));
        }
        const [id] = a.newSession();
        // Drop the token from the address bar (and from history) at once.
        return new Response(null, {
          status: 303,
          headers: { ...SECURITY_HEADERS, location: "/", "set-cookie": a.cookie(id) },
        });
      }
      if (!a.open && !a.session(req.headers.get("cookie"))) {
        stats.refused++;
        return page(401, loginPage());
      }
      return page(200, ASSETS.html);
    }
    if (path === "/cert" || path.startsWith("/cert/")) {
      // The CA's install page (what http://wirescope.cert/ shows through the proxy), for the WireGuard page.
      const r = a.checkRequest(req.method, req.headers);
      if (r) {
        stats.refused++;
        return refusal(r);
      }
      return await certPage(options.proxy?.ca, req.method, path);
    }
    if (!path.startsWith("/api/")) return json(404, { error: "not found" });
    if (path === "/api/updates") {
      const r = a.checkUpgrade(req.headers);
      if (r) {
        stats.refused++;
        return refusal(r);
      }
      if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
        return json(400, { error: "a WebSocket upgrade is expected" });
      }
      if (pages.size >= MAX_PAGES) return json(503, { error: "too many pages connected" });
      const { socket, response } = Deno.upgradeWebSocket(req);
      const p: Page = { socket, gap: false };
      socket.onopen = () => {
        pages.add(p);
        stats.pages = pages.size;
      };
      socket.onmessage = (e) => {
        try {
          const m = JSON.parse(String(e.data)) as { filter?: unknown; highlight?: unknown };
          if (typeof m.filter === "string") {
            if (m.filter.trim() === "") delete p.filter;
            else p.filter = compileFilter(m.filter);
          }
          if (typeof m.highlight === "string") {
            if (m.highlight.trim() === "") delete p.highlight;
            else p.highlight = compileFilter(m.highlight);
          }
        } catch { /* a bad message is ignored; the page checks filters before sending them */ }
      };
      socket.onclose = () => {
        pages.delete(p);
        stats.pages = pages.size;
      };
      socket.onerror = () => {};
      return response;
    }
    const r = a.checkRequest(req.method, req.headers);
    if (r) {
      stats.refused++;
      return refusal(r);
    }
    try {
      const answered = await interceptApi(req, url, {
        store,
        ...(options.intercept ? { intercept: options.intercept } : {}),
        ...(options.proxy ? { proxy: options.proxy } : {}),
      });
      if (answered) return answered;
      if (path === "/api/wireguard" || path.startsWith("/api/wireguard/")) {
        return await wireGuardApi(req, url, options.wireguard);
      }
      return await api(req, url, store, a, options.intercept);
    } catch (e) {
      log("warn", `web UI: ${req.method} ${path} failed: ${(e as Error).message}`);
      return json(500, { error: (e as Error).message });
    }
  };

  const ac = new AbortController();
  let server: Deno.HttpServer<Deno.NetAddr>;
  const listening = Promise.withResolvers<Deno.NetAddr>();
  try {
    server = Deno.serve({
      hostname,
      port: options.port ?? 8081,
      signal: ac.signal,
      onListen: (addr) => listening.resolve(addr as Deno.NetAddr),
      onError: (e) => json(500, { error: (e as Error).message }),
    }, handler);
  } catch (e) {
    unsubscribe();
    throw e;
  }
  const addr = await listening.promise;
  const auth = ready.auth = new WebAuth({
    port: addr.port,
    ...(options.password !== undefined ? { password: options.password } : {}),
    ...(options.hostnames ? { hostnames: options.hostnames } : {}),
  });
  const lift = options.proxy?.protectDestination({ hostname: addr.hostname, port: addr.port });
  const shown = addr.hostname === "0.0.0.0" || addr.hostname === "::"
    ? "127.0.0.1"
    : addr.hostname.includes(":")
    ? `[${addr.hostname}]`
    : addr.hostname;
  const token = auth.token;
  return {
    url: `http://${shown}:${addr.port}/?token=${encodeURIComponent(token)}`,
    addr,
    token,
    stats: () => ({ ...stats }),
    async close() {
      unsubscribe();
      for (const u of unsubscribeLive) u?.();
      if (timer !== undefined) clearTimeout(timer);
      for (const p of pages) {
        try {
          p.socket.close(1001, "server closing");
        } catch { /* gone */ }
      }
      ac.abort();
      await server.finished;
      lift?.();
    },
  };
}

function page(status: number, html: string): Response {
  return new Response(html, {
    status,
    headers: {
      ...SECURITY_HEADERS,
      "content-type": "text/html; charset=utf-8",
      "content-security-policy": PAGE_CSP,
    },
  });
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(problem = ""): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>wirescope</title>
<link rel="stylesheet" href="/style.css"></head><body class="login"><form method="get" action="/">
<h1>wirescope</h1><p>Open the URL printed when wirescope started, or paste its token (or the
<code>--web-password</code>) here.</p>${problem ? `<p class="error">${escapeHtml(problem)}</p>` : ""}
<input name="token" type="password" autofocus placeholder="token"> <button>Open</button></form></body></html>`;
}

function filterError(e: unknown): Response | undefined {
  if (e instanceof FilterSyntaxError) {
    const body: FilterCheckJson = { ok: false, error: e.reason, column: e.column };
    return json(400, body);
  }
  return undefined;
}

async function api(
  req: Request,
  url: URL,
  store: FlowStore,
  auth: WebAuth,
  intercept?: InterceptAddon,
): Promise<Response> {
  const path = url.pathname;
  if (path === "/api/session" && req.method === "GET") {
    // Without a session (the check is off) there is nothing to guard: any value passes.
    return json(200, { csrf: auth.session(req.headers.get("cookie"))?.csrf ?? "" });
  }
  if (path === "/api/filter/check" && req.method === "POST") {
    let expression: unknown;
    try {
      expression = (await req.json() as { filter?: unknown }).filter;
    } catch {
      return json(400, { error: 'expected JSON {"filter": "..."}' });
    }
    if (typeof expression !== "string") return json(400, { error: 'expected JSON {"filter": "..."}' });
    if (expression.trim() === "") return json(200, { ok: true } satisfies FilterCheckJson);
    try {
      compileFilter(expression);
      return json(200, { ok: true } satisfies FilterCheckJson);
    } catch (e) {
      const r = filterError(e);
      if (r) return new Response(r.body, { status: 200, headers: r.headers });
      throw e;
    }
  }
  if (path === "/api/flows" && req.method === "GET") {
    const filter = url.searchParams.get("filter") ?? "";
    const cursor = url.searchParams.get("cursor");
    const limit = Math.max(1, Math.min(5000, Number(url.searchParams.get("limit") ?? 500) || 500));
    const highlightText = url.searchParams.get("highlight") ?? "";
    let compiled: Filter | undefined;
    let highlight: Filter | undefined;
    try {
      if (filter.trim() !== "") compiled = compileFilter(filter);
      if (highlightText.trim() !== "") highlight = compileFilter(highlightText);
    } catch (e) {
      const r = filterError(e);
      if (r) return r;
      throw e;
    }
    // `before` (or `from=end` to start there) pages from the newest back: the page's end of a long list.
    const before = url.searchParams.get("before");
    const fromEnd = url.searchParams.get("from") === "end";
    // `sort=KEY` (and `desc=1`): sorted by a column, paged by position; from the end (`from=end`,
    // `before`), the same order reversed, so a jump to the end of a sorted list is one page too.
    const sort = url.searchParams.get("sort") as FlowOrderKey | null;
    if (sort !== null && !SORT_KEYS.has(sort)) return json(400, { error: `cannot sort by '${sort}'` });
    const page = await store.query({
      ...(compiled ? { filter: compiled } : {}),
      ...(sort
        ? {
          order: {
            by: sort,
            descending: (url.searchParams.get("desc") === "1") !== (fromEnd || before !== null),
          },
          ...(before ? { after: before } : cursor ? { after: cursor } : {}),
        }
        : before
        ? { before }
        : cursor
        ? { after: cursor }
        : fromEnd
        ? { newestFirst: true }
        : {}),
      limit,
      // A highlight that reads bodies needs them loaded; otherwise summaries never do.
      withBodies: highlight?.needsBodies === true,
    });
    const body: FlowPageJson = {
      flows: page.flows.map((f) => {
        const s = summarize(f.flow, intercept, { cursor: f.cursor, marked: f.marked, live: f.live });
        if (highlight?.match(f.flow, { marked: f.marked, mark: f.mark, comment: f.comment })) {
          s.highlight = true;
        }
        return s;
      }),
    };
    if (page.cursor !== undefined) body.cursor = page.cursor;
    // A count is one more pass over the store: asked for only when SQL answers it alone (a filter
    // that reads bodies or runs regular expressions in JS would scan everything twice).
    if (url.searchParams.get("count") === "1" && (!compiled || compiled.toSql().exact)) {
      body.total = await store.count(compiled);
    }
    return json(200, body);
  }
  if (path === "/api/flows/clear" && req.method === "POST") {
    await store.clear();
    return json(200, { cleared: true });
  }
  const action = /^\/api\/flows\/([^/]+)\/(mark|comment|export)$/.exec(path);
  if (action) return await flowAction(req, url, store, decodeURIComponent(action[1]!), action[2]!);
  const m = /^\/api\/flows\/([^/]+)(?:\/(request|response)\/body)?$/.exec(path);
  if (m) {
    const id = decodeURIComponent(m[1]!);
    if (req.method === "DELETE" && m[2] === undefined) {
      const n = await store.delete([id]);
      return n > 0 ? json(200, { deleted: n }) : json(404, { error: "no such flow" });
    }
    if (req.method !== "GET") return json(405, { error: "method not allowed" });
    const stored = await store.get(id);
    if (!stored) return json(404, { error: "no such flow" });
    if (m[2] === undefined) {
      return json(
        200,
        flowDetail(stored.flow, {
          comment: stored.comment,
          marked: stored.marked,
          live: stored.live,
          cursor: stored.cursor,
        }),
      );
    }
    const part = bodyOf(stored.flow, m[2] as "request" | "response");
    if (!part) return json(404, { error: `the flow has no ${m[2]}` });
    let bytes = part.body.content;
    const encoding = part.headers.find(([n]) => n.toLowerCase() === "content-encoding")?.[1] ?? "";
    if (url.searchParams.get("decode") === "1" && encoding !== "") {
      try {
        bytes = decodeContent(bytes, encoding);
      } catch (e) {
        return json(422, { error: `cannot decode ${encoding}: ${(e as Error).message}` });
      }
    }
    const type = part.headers.find(([n]) => n.toLowerCase() === "content-type")?.[1] ??
      "application/octet-stream";
    return new Response(bytes.slice(), {
      headers: {
        ...SECURITY_HEADERS,
        "content-type": type,
        // A recorded page must never run as the UI's origin: a sandbox gives it an origin of its own.
        "content-security-policy":
          "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'",
        "x-wirescope-truncated": String(part.body.truncated),
      },
    });
  }
  return json(404, { error: "not found" });
}

/** `POST …/mark` `{ mark: boolean | string }`, `POST …/comment` `{ comment }`, `GET …/export?format=`. */
async function flowAction(
  req: Request,
  url: URL,
  store: FlowStore,
  id: string,
  action: string,
): Promise<Response> {
  if (action === "export") {
    if (req.method !== "GET") return json(405, { error: "method not allowed" });
    const stored = await store.get(id);
    if (!stored) return json(404, { error: "no such flow" });
    const flow = stored.flow;
    const format = url.searchParams.get("format") ?? "curl";
    if (flow.type !== "http") return json(422, { error: `a ${flow.type} flow has no ${format} form` });
    const name = `flow-${id.slice(0, 8)}`;
    const download = (body: BodyInit, type: string, ext: string) =>
      new Response(body, {
        headers: {
          ...SECURITY_HEADERS,
          "content-type": type,
          "content-disposition": `attachment; filename="${name}.${ext}"`,
        },
      });
    switch (format) {
      case "curl":
        return download(flowToCurl(flow) + "\n", "text/plain; charset=utf-8", "sh");
      case "raw":
        return download(flowToRaw(flow).slice(), "application/octet-stream", "http");
      case "har":
        return download(
          JSON.stringify({
            log: {
              version: "1.2",
              creator: { name: "wirescope", version: "" },
              entries: [flowToHarEntry(flow)],
            },
          }),
          "application/json",
          "har",
        );
      default:
        return json(400, { error: `unknown format ${format} (curl, raw, har)` });
    }
  }
  if (req.method !== "POST") return json(405, { error: "method not allowed" });
  let body: { mark?: unknown; comment?: unknown };
  try {
    body = await req.json();
  } catch {
    return json(400, { error: "expected a JSON body" });
  }
  let ok: boolean;
  if (action === "mark") {
    if (typeof body.mark !== "boolean" && typeof body.mark !== "string") {
      return json(400, { error: 'expected {"mark": true | false | "name"}' });
    }
    ok = await store.setMark(id, body.mark);
  } else {
    if (typeof body.comment !== "string") return json(400, { error: 'expected {"comment": "..."}' });
    ok = await store.setComment(id, body.comment);
  }
  return ok ? json(200, { ok: true }) : json(404, { error: "no such flow" });
}
