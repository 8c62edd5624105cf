/**
 * Client replay (mitmproxy's `--client-replay`): a recorded HTTP request is sent again to its
 * server, and the exchange is recorded as a new flow with `replay: "client"` and `replayOf` set
 * to the original's id.
 *
 * The request goes through the proxy's own machinery: an HTTP/1 layer (the one that serves real
 * clients) is run against a client side made in memory, which sends the rebuilt request and
 * takes the response. Server connections are opened by the proxy's `connect`, so the destination
 * policy, the connect timeout and (for https) upstream certificate verification apply as for any
 * client; the flow goes to the proxy's flow bus (store, files, terminal) like any other.
 *
 * The request is sent as HTTP/1.1 whatever version it was recorded with (HTTP/2 pseudo-headers
 * become the request line and Host), to the address the original went to. Framing and
 * connection headers are made anew (Content-Length for the recorded body, `connection: close`);
 * the rest go as recorded. A request whose body was kept only in part is refused.
 * @module
 */
import type { ByteStream } from "./byte_stream.ts";
import { type ClientInfo, FlowBus, type HostPort, type HttpFlow } from "../flows/flow.ts";
import { serializeRequestHead } from "./http1.ts";
import { Http1Layer } from "./http1_layer.ts";
import { runLayer } from "./layer_runner.ts";
import { concatBytes } from "./layer.ts";
import { connectUpstreamTls, type ProxyContext } from "./connection_handler.ts";

/** Why a recorded flow cannot be replayed. */
export class ReplayError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ReplayError";
  }
}

/** The client address replayed flows carry (there is no real client). */
export const REPLAY_CLIENT: ClientInfo = { address: { hostname: "client-replay", port: 0 }, mode: "regular" };

/** Headers of the recorded connection and framing; made anew for the replay. */
const HOP_HEADERS = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "transfer-encoding",
  "content-length",
  "te",
  "upgrade",
  "http2-settings",
]);

const IP_LITERAL = /^(\d{1,3}(\.\d{1,3}){3}|[0-9a-f:]*:[0-9a-f:.]*)$/i;
/** Methods whose requests say how long their (maybe empty) body is. */
const BODY_METHODS = new Set(["POST", "PUT", "PATCH"]);

/** The HTTP/1.1 request that replays `flow`'s request (head and body). */
export function replayRequestBytes(flow: HttpFlow): Uint8Array {
  const request = flow.request;
  if (request.body.truncated) {
    throw new ReplayError(
      `cannot replay ${request.method} ${request.url}: only ${request.body.content.byteLength} of its ${request.body.size} body bytes were recorded`,
    );
  }
  if (request.method.toUpperCase() === "CONNECT") {
    throw new ReplayError(`cannot replay ${request.url}: CONNECT requests are not replayed`);
  }
  const authority = request.headers.find(([name]) => name === ":authority")?.[1];
  const headers: [string, string][] = request.headers.filter(([name]) =>
    !name.startsWith(":") && !HOP_HEADERS.has(name.toLowerCase())
  );
  if (!headers.some(([name]) => name.toLowerCase() === "host")) {
    const defaultPort = request.scheme === "https" ? 443 : 80;
    const host = request.host.includes(":") ? `[${request.host}]` : request.host;
    headers.unshift(["host", authority ?? (request.port === defaultPort ? host : `${host}:${request.port}`)]);
  }
  const body = request.body.content;
  if (body.byteLength > 0 || BODY_METHODS.has(request.method.toUpperCase())) {
    headers.push(["content-length", String(body.byteLength)]);
  }
  headers.push(["connection", "close"]);
  const target = request.path === "" ? "/" : request.path;
  const head = serializeRequestHead({ method: request.method, target, version: "HTTP/1.1", headers });
  return concatBytes(head, body);
}

/** Where a replay of `flow` goes: the address the original went to, else the URL's host and port. */
export function replayDestination(flow: HttpFlow): HostPort {
  const address = flow.server.address;
  if (address.hostname !== "" && address.port > 0) return address;
  return { hostname: flow.request.host, port: flow.request.port };
}

/**
 * Sends `original`'s request again through the proxy's upstream path and resolves with the new
 * flow once it has ended (failed exchanges too: the flow then has an `error`). Rejects with a
 * {@link ReplayError} for a flow that cannot be replayed.
 */
export async function replayRequest(ctx: ProxyContext, original: HttpFlow): Promise<HttpFlow> {
  if (original.type !== "http") throw new ReplayError(`flow ${original.id} is not an HTTP flow`);
  const wire = replayRequestBytes(original);
  const address = replayDestination(original);
  const scheme = original.request.scheme === "https" ? "https" : "http";
  const host = original.request.host;
  const servername = IP_LITERAL.test(host) ? undefined : host;
  const openServer = scheme === "https"
    ? (to: HostPort) =>
      connectUpstreamTls(ctx.settings, ctx.connect, to, { servername, alpn: ["http/1.1"] }).then((u) => ({
        stream: u.stream,
        remote: u.remote,
      }))
    : ctx.connect;

  // The in-memory client: it sends the request, then its end; what comes back is dropped (the
  // flow keeps the response).
  let sent = false;
  const client: ByteStream = {
    read: () => {
      if (sent) return Promise.resolve(null);
      sent = true;
      return Promise.resolve(wire);
    },
    write: () => Promise.resolve(),
    closeWrite: () => Promise.resolve(),
    close: () => {},
  };
  let made: HttpFlow | null = null;
  const bus = new FlowBus();
  bus.subscribe(({ type, flow }) => {
    if (flow.type === "http") {
      flow.replay = "client";
      flow.replayOf = original.id;
      made ??= flow;
    }
    ctx.bus.emit(type, flow);
  });
  bus.onLog(({ level, message }) => ctx.bus.log(level, message));
  const layer = new Http1Layer({
    mode: "transparent",
    scheme,
    client: REPLAY_CLIENT,
    server: { address, hostname: host },
    serverState: "none",
    bodyLimit: ctx.settings.bodyLimit,
    maxMessages: ctx.settings.maxMessages,
    newId: ctx.newId,
    ...(ctx.settings.serverTimeout ? { serverTimeout: ctx.settings.serverTimeout } : {}),
  });
  await runLayer({ layer, client, server: null, openServer, bus });
  const flow = made as HttpFlow | null;
  if (!flow) throw new ReplayError(`replay of ${original.request.url} made no flow`);
  return flow;
}

/** Options of {@link replayAll}. */
export interface ReplayAllOptions {
  /** Replays under way at once (default 1: one after the other, as mitmproxy does). */
  concurrency?: number;
  /** Called as each replay ends (its new flow, or the reason it could not be sent). */
  onDone?: (original: HttpFlow, result: { flow: HttpFlow } | { error: string }) => void;
}

/** Counters of {@link replayAll}. */
export interface ReplayAllResult {
  /** Replays that got a response. */
  replayed: number;
  /** Replays whose exchange failed, or that could not be sent. */
  failed: number;
}

/**
 * Replays `flows` in order with `send` (e.g. a proxy handle's `replay`), `concurrency` at a time;
 * resolves when all have ended.
 */
export async function replayAll(
  send: (flow: HttpFlow) => Promise<HttpFlow>,
  flows: AsyncIterable<HttpFlow> | Iterable<HttpFlow>,
  options: ReplayAllOptions = {},
): Promise<ReplayAllResult> {
  const result: ReplayAllResult = { replayed: 0, failed: 0 };
  const limit = Math.max(1, Math.floor(options.concurrency ?? 1));
  const running = new Set<Promise<void>>();
  for await (const original of flows) {
    const p: Promise<void> = send(original).then(
      (flow) => {
        if (flow.error || !flow.response) result.failed++;
        else result.replayed++;
        options.onDone?.(original, { flow });
      },
      (e) => {
        result.failed++;
        options.onDone?.(original, { error: e instanceof Error ? e.message : String(e) });
      },
    ).finally(() => running.delete(p));
    running.add(p);
    if (running.size >= limit) await Promise.race(running);
  }
  await Promise.all(running);
  return result;
}
