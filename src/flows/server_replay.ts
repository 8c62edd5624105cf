/**
 * Server replay (mitmproxy's `--server-replay`): requests are answered from a recording instead
 * of the server, which is then never contacted for them. A request matches a recorded one by
 * method, URL (scheme, host, port, path, query) and body; options leave out query parameters by
 * name, the host (and port), or the body.
 *
 * Order: identical requests get the recorded responses in recorded order, each used once (the
 * third identical request gets the third recorded answer); once all are used the request is a
 * miss. With `reuse`, answers are not used up: every identical request gets the first one.
 * Misses go to the server (`forward`, the default, as in mitmproxy), get a 404 made by the proxy,
 * or have their connection killed.
 *
 * Recorded flows without a response, with a failed exchange, or with a protocol switch (101) are
 * not used. A recorded body that was kept only in part is served as far as it was kept (counted
 * in `truncated`).
 * @module
 */
import type { HttpFlow } from "./flow.ts";
import type { HookResponse, RequestHook, RequestVerdict } from "../proxy/request_hook.ts";
import { openFlowFile } from "./flow_file.ts";

/** What happens to a request no recorded flow matches. */
export type ServerReplayMiss = "forward" | "404" | "kill";

/** Options of {@link ServerReplay}. */
export interface ServerReplayOptions {
  /** Query parameters left out when matching (by name). */
  ignoreParams?: string[];
  /** Match without the host and port (a recording made against one server answers any). */
  ignoreHost?: boolean;
  /** Match without the request body. */
  ignoreContent?: boolean;
  /** What to do on a miss (default `forward`). */
  extra?: ServerReplayMiss;
  /** Answers are not used up (default false: each is served once, in recorded order). */
  reuse?: boolean;
  /** Receives notes (misses, partial bodies). */
  onLog?: (level: "info" | "warn", message: string) => void;
}

/** Counters of a {@link ServerReplay}. */
export interface ServerReplayStats {
  /** Recorded flows that can answer requests. */
  loaded: number;
  /** Requests answered from the recording. */
  hits: number;
  /** Requests that matched nothing (or whose answers were used up). */
  misses: number;
  /** Answers served with a body the recording had kept only in part. */
  truncated: number;
}

/** A matching request's key without its body, e.g. `GET https://example.com:443/a?b=1`. */
export function replayKey(
  request: Pick<HttpFlow["request"], "method" | "scheme" | "host" | "port" | "path">,
  options: Pick<ServerReplayOptions, "ignoreParams" | "ignoreHost"> = {},
): string {
  const method = request.method.toUpperCase();
  const where = options.ignoreHost
    ? request.scheme.toLowerCase()
    : `${request.scheme.toLowerCase()}://${request.host.toLowerCase().replace(/\.$/, "")}:${request.port}`;
  const target = request.path.startsWith("/") || request.path === "*" ? request.path : "/" + request.path;
  const q = target.indexOf("?");
  const path = q < 0 ? target : target.slice(0, q);
  let query = q < 0 ? "" : target.slice(q + 1);
  const ignored = options.ignoreParams ?? [];
  if (ignored.length > 0 && query !== "") {
    query = query.split("&").filter((pair) => {
      const name = pair.split("=", 1)[0]!;
      let decoded = name;
      try {
        decoded = decodeURIComponent(name.replace(/\+/g, " "));
      } catch { /* kept as written */ }
      return !ignored.includes(decoded) && !ignored.includes(name);
    }).join("&");
  }
  return `${method} ${where}${path}${query === "" ? "" : "?" + query}`;
}

interface Entry {
  flow: HttpFlow;
  used: boolean;
}

/** Answers requests from recorded flows; use {@link ServerReplay.hook} as the proxy's request hook. */
export class ServerReplay {
  #o: ServerReplayOptions;
  #index = new Map<string, Entry[]>();
  #stats: ServerReplayStats = { loaded: 0, hits: 0, misses: 0, truncated: 0 };

  /** Indexes `flows` (in recorded order). */
  constructor(flows: Iterable<HttpFlow>, options: ServerReplayOptions = {}) {
    this.#o = options;
    for (const flow of flows) this.add(flow);
  }

  /** Reads the HTTP flows of a saved run (flow store, HAR or JSON lines; see flow_file.ts). */
  static async load(path: string, options: ServerReplayOptions = {}): Promise<ServerReplay> {
    const file = await openFlowFile(path);
    const replay = new ServerReplay([], options);
    try {
      for await (const flow of file.flows()) {
        if (flow.type === "http") replay.add(flow);
      }
    } finally {
      file.close();
    }
    return replay;
  }

  /** Adds one recorded flow (after those already added); false when it cannot answer requests. */
  add(flow: HttpFlow): boolean {
    const response = flow.response;
    if (!response || flow.error || response.status === 101 || response.status < 200) return false;
    const key = replayKey(flow.request, this.#o);
    let list = this.#index.get(key);
    if (!list) this.#index.set(key, list = []);
    list.push({ flow, used: false });
    this.#stats.loaded++;
    return true;
  }

  /** The counters. */
  stats(): ServerReplayStats {
    return { ...this.#stats };
  }

  /** The recorded flow that answers `flow`'s request (used up unless `reuse`), or null. */
  match(flow: HttpFlow): HttpFlow | null {
    const list = this.#index.get(replayKey(flow.request, this.#o));
    if (!list) return null;
    for (const entry of list) {
      if (entry.used) continue;
      if (!this.#o.ignoreContent && !sameBody(entry.flow.request.body, flow.request.body)) continue;
      if (!this.#o.reuse) entry.used = true;
      return entry.flow;
    }
    return null;
  }

  /** The request hook: a recorded answer, or what `extra` says for a miss. */
  readonly hook: RequestHook = (flow: HttpFlow): RequestVerdict => {
    const recorded = this.match(flow);
    if (recorded) {
      this.#stats.hits++;
      const answer = replayResponse(recorded, flow.request.method);
      if (recorded.response!.body.truncated) {
        this.#stats.truncated++;
        this.#o.onLog?.(
          "warn",
          `server replay: the recorded answer to ${flow.request.method} ${flow.request.url} has only the first ${
            recorded.response!.body.content.byteLength
          } of ${recorded.response!.body.size} body bytes; served as recorded`,
        );
      }
      return answer;
    }
    this.#stats.misses++;
    const extra = this.#o.extra ?? "forward";
    this.#o.onLog?.(
      "info",
      `server replay: no recorded answer for ${flow.request.method} ${flow.request.url} (${extra})`,
    );
    if (extra === "kill") return "kill";
    if (extra === "404") {
      const body = new TextEncoder().encode(
        `wirescope: server replay has no recorded answer for ${flow.request.method} ${flow.request.url}\n`,
      );
      return {
        status: 404,
        reason: "Not Found",
        headers: [["content-type", "text/plain; charset=utf-8"], ["content-length", String(body.byteLength)]],
        body,
        replay: "server",
      };
    }
    return undefined;
  };
}

/** Headers that belong to the recorded connection or framing, not to the answer. */
const CONNECTION_HEADERS = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "content-length",
  "upgrade",
  "te",
]);

/**
 * The response a recorded flow gives again: its status, headers and body, framed anew with a
 * Content-Length (HTTP/2 pseudo-headers and the recorded connection's framing headers dropped).
 */
export function replayResponse(recorded: HttpFlow, method: string): HookResponse {
  const response = recorded.response!;
  const headers: [string, string][] = response.headers.filter(([name]) =>
    !name.startsWith(":") && !CONNECTION_HEADERS.has(name.toLowerCase())
  );
  const noBody = method.toUpperCase() === "HEAD" || response.status === 204 || response.status === 304;
  if (noBody) {
    // A HEAD answer says how long the body would be; 204 and 304 have none.
    const length = response.headers.find(([name]) => name.toLowerCase() === "content-length");
    if (length && response.status !== 204) headers.push(["content-length", length[1]]);
  } else {
    headers.push(["content-length", String(response.body.content.byteLength)]);
  }
  return {
    status: response.status,
    reason: response.reason || defaultReason(response.status),
    headers,
    body: noBody ? new Uint8Array(0) : response.body.content,
    replay: "server",
  };
}

function defaultReason(status: number): string {
  return status === 200 ? "OK" : status === 404 ? "Not Found" : "";
}

/** True when two recorded bodies hold the same bytes (a body kept in part matches on its kept part). */
function sameBody(a: HttpFlow["request"]["body"], b: HttpFlow["request"]["body"]): boolean {
  if (!a.truncated && !b.truncated) return a.size === b.size && equalBytes(a.content, b.content);
  const n = Math.min(a.content.byteLength, b.content.byteLength);
  return equalBytes(a.content.subarray(0, n), b.content.subarray(0, n));
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
