/**
 * The driver of one client connection: reads its first bytes, decides how to treat it (TLS to
 * intercept or pass through, HTTP, anything else), performs the TLS handshakes with node:tls, and
 * runs the sans-IO layers over the resulting streams. Everything here is I/O and sequencing; the
 * protocol decisions live in the layers and in pure functions.
 * @module
 */
import tls from "node:tls";
import type { ByteStream } from "./byte_stream.ts";
import { byteStreamOfNodeSocket, nodeDuplexOf, ReadGate } from "./byte_stream.ts";
import { classifyFirstBytes, type ClientHello } from "./client_hello.ts";
import type {
  CertificateSummary,
  ClientInfo,
  Flow,
  FlowBus,
  HostPort,
  ServerInfo,
  TlsInfo,
} from "../flows/flow.ts";
import { formatHostPort } from "../flows/flow.ts";
import { Http1Layer, type Http1LayerOptions } from "./http1_layer.ts";
import { Http2Layer } from "./http2_layer.ts";
import { Http2ToHttp1Layer } from "./http2_to_http1_layer.ts";
import { PREFACE, serializeFrame } from "./http2/frames.ts";
import { concatBytes, type LayerEvent } from "./layer.ts";
import {
  describeError,
  type HeadTimeout,
  type LayerRunResult,
  type OpenedServer,
  runLayer,
} from "./layer_runner.ts";
import { type ConnectionScope, runInConnectionScope } from "./last_resort.ts";
import { interceptionObstacle } from "./tls_compatibility.ts";
import { TcpLayer } from "./tcp_layer.ts";
import type { RequestHook, ResponseHook } from "./request_hook.ts";
import type { Http2Counters } from "./http2_layer.ts";
import type { HookSet } from "./layer.ts";
import type { AddonRunner } from "./layer_runner.ts";
import type { ConnectionInfo } from "../addons/types.ts";
import { HttpConnectView, ServerConnectView } from "../addons/handles.ts";

/** Settings of the interception (resolved from the user's options). */
export interface InterceptSettings {
  /** Hosts relayed untouched (TLS included). */
  ignoreHosts: RegExp[];
  /** When not empty, only these hosts are intercepted. */
  allowHosts: RegExp[];
  /** Extra trusted roots for upstream certificates (PEM texts). */
  upstreamCaPems: string[];
  /** Accept any upstream certificate. */
  insecure: boolean;
  /** Bytes kept per body or message. */
  bodyLimit: number;
  /** Messages kept per WebSocket, TCP or UDP flow. */
  maxMessages: number;
  /** How long to wait for a client's first bytes before relaying as raw TCP (ms). */
  firstBytesTimeout: number;
  /** Timeout of server connections and TLS handshakes (ms). */
  connectTimeout: number;
  /**
   * How long an HTTP server may make no progress while a request waits on it (ms; absent or 0:
   * no limit); see `Http1LayerOptions.serverTimeout`.
   */
  serverTimeout?: number;
}

/** Something that makes leaf certificates (see `src/certs`). */
export interface LeafMaker {
  leafFor(
    host: { sni?: string; ip?: string; extraNames?: string[] },
  ): Promise<{ certPem: string; keyPem: string; secureContext?: tls.SecureContext }>;
}

/** What the connection driver needs from the proxy. */
export interface ProxyContext {
  settings: InterceptSettings;
  bus: FlowBus;
  certs: LeafMaker;
  /** Opens a plain TCP connection. */
  connect(address: HostPort): Promise<OpenedServer>;
  newId(): string;
  /** Requests the proxy answers itself (the certificate page). */
  localResponder?: Http1LayerOptions["localResponder"];
  /** The head timeout for one client's HTTP layers (see `limits.ts`); none when absent. */
  headTimeout?: (client: ClientInfo) => HeadTimeout | undefined;
  /**
   * Judges each HTTP request (HTTP/1 and each HTTP/2 stream) before its server is contacted
   * (server replay, addons; see request_hook.ts).
   */
  requestHook?: RequestHook;
  /** Judges each held HTTP/1 response before the client gets it (addons; see request_hook.ts). */
  responseHook?: ResponseHook;
  /** Told of every flow that ends (addons' `error` hook). */
  flowEnded?: (flow: Flow) => void;
  /** Sums the HTTP/2 relays' codec counters (`ProxyStats.http2`). */
  http2Counters?: Http2Counters;
  /** HTTP/2 limits offered to clients (SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_MAX_HEADER_LIST_SIZE). */
  http2ClientSide?: { maxConcurrentStreams?: number; maxHeaderListSize?: number };
  /** Regular mode's required `Proxy-Authorization` value (`--proxyauth`), if any. */
  proxyAuthorization?: string;
  /**
   * An upstream HTTP proxy for explicit-proxy clients' plain-HTTP requests: `open` dials the
   * upstream, and the requests go to it in absolute form with `headers` added (CONNECT is kept
   * for tunnels, whose TLS is still intercepted).
   */
  httpUpstream?: { open(address: HostPort): Promise<OpenedServer>; headers: [string, string][] };
  /**
   * The addons' non-HTTP hooks (connection, TLS, CONNECT, TCP, WebSocket): each is called only
   * when some addon has it (`has`), so a hook nobody defines costs nothing.
   */
  addons?: ConnectionAddons;
}

/** What the connection driver needs to call addon hooks (see wiring.ts). */
export interface ConnectionAddons extends HookSet, AddonRunner {}

/** A new client connection. */
export interface IncomingConnection {
  stream: ByteStream;
  client: ClientInfo;
  /** The destination the client dialed (or asked for with CONNECT). */
  destination: HostPort;
  /** Bytes already read from the stream. */
  buffered?: Uint8Array;
}

/** Ports of protocols where the server speaks first: no use waiting for the client. */
const SERVER_FIRST_PORTS = new Set([21, 22, 25, 110, 143, 587, 3306, 5432]);
/**
 * Ports where the client always speaks first: HTTP, and TLS from the first byte (HTTPS, DNS over
 * TLS, IMAPS, POP3S, SMTPS, LDAPS, SIPS...). There a slow first byte is waited for, not taken for a
 * server-first protocol: with a 1.5 s wait, 108 of 1,000 HTTPS clients on a loaded machine sent
 * their hello late and were relayed uninspected.
 */
const CLIENT_FIRST_PORTS = new Set([
  80,
  443,
  465,
  563,
  636,
  853,
  990,
  993,
  995,
  5061,
  8000,
  8008,
  8080,
  8443,
]);
/** How long a client on a {@link CLIENT_FIRST_PORTS} port may take to send its first bytes. */
const CLIENT_FIRST_WAIT = 30_000;
/** TLS ports whose server greets first once the handshake is done (SMTPS, NNTPS, FTPS, IMAPS, POP3S). */
const SERVER_FIRST_TLS_PORTS = new Set([465, 563, 990, 993, 995]);

/** How long to wait for a client's first bytes on `port` before relaying as raw TCP. */
function firstBytesWait(settings: InterceptSettings, port: number): number {
  if (SERVER_FIRST_PORTS.has(port)) return 0;
  return CLIENT_FIRST_PORTS.has(port) ? CLIENT_FIRST_WAIT : settings.firstBytesTimeout;
}

/**
 * Whatever a connection has open besides its client stream (upstream connections, TLS sockets):
 * closed by reset when the connection's driver fails or the last-resort guard ends it, so no exit
 * path leaves an upstream connection behind.
 */
class Resources {
  #closers = new Set<() => void>();
  /** The connection as connection and TLS hooks see it (its server and TLS filled in as known). */
  readonly info: { id: string; client: ClientInfo; server: ServerInfo; tls?: TlsInfo };

  constructor(info: Resources["info"]) {
    this.info = info;
  }

  /** Registers `close`; returns a function that forgets it (once ownership moved elsewhere). */
  adopt(close: () => void): () => void {
    this.#closers.add(close);
    return () => this.#closers.delete(close);
  }

  closeAll(): void {
    for (const close of this.#closers) {
      try {
        close();
      } catch { /* already closed */ }
    }
    this.#closers.clear();
  }
}

/**
 * Runs one connection's driver inside a last-resort scope: anything that escapes it is logged
 * with the connection, and the connection (with what it opened) is reset.
 */
function guarded(
  outer: ProxyContext,
  describe: string,
  client: ByteStream,
  clientInfo: ClientInfo,
  destination: HostPort | undefined,
  drive: (resources: Resources, ctx: ProxyContext) => Promise<void>,
): Promise<void> {
  const addons = outer.addons;
  const resources = new Resources({
    // Only hooks see this id: without addons no id is made.
    id: addons ? outer.newId() : "",
    client: clientInfo,
    server: { address: destination ?? { hostname: "", port: 0 } },
  });
  // Server connections whose `serverDisconnected` has not run yet: a TLS socket closes its TCP
  // stream a little after the layers are done, so they are all told before `clientDisconnected`.
  const stillOpen = new Set<() => Promise<void>>();
  const ctx = addons ? { ...outer, connect: hookedConnect(outer, resources.info, addons, stillOpen) } : outer;
  const fail = () => {
    resources.closeAll();
    client.close(true);
  };
  const scope: ConnectionScope = {
    describe: () => describe,
    report: (message) => ctx.bus.log("error", message),
    abort: fail,
  };
  return runInConnectionScope(scope, async () => {
    try {
      if (addons?.has("clientConnected")) {
        await addons.run({ hook: "clientConnected", payload: resources.info });
      }
      await drive(resources, ctx);
    } catch (e) {
      ctx.bus.log("error", `${describe}: ${describeError(e)}`);
      fail();
    } finally {
      for (const disconnected of [...stillOpen]) await disconnected();
      if (addons?.has("clientDisconnected")) {
        await addons.run({ hook: "clientDisconnected", payload: resources.info });
      }
    }
  }, (message) => ctx.bus.log("error", message));
}

/**
 * `connect` with the server hooks around it: `serverConnect` may change the address or refuse,
 * `serverConnected` once the connection is up, `serverDisconnected` when it is closed (once).
 * Without any of them, `connect` itself.
 */
function hookedConnect(
  ctx: ProxyContext,
  info: ConnectionInfo & { server: ServerInfo },
  addons: ConnectionAddons,
  stillOpen: Set<() => Promise<void>>,
): ProxyContext["connect"] {
  const before = addons.has("serverConnect");
  const up = addons.has("serverConnected");
  const down = addons.has("serverDisconnected");
  if (!before && !up && !down) return ctx.connect;
  return async (address) => {
    let target = address;
    if (before) {
      const view = new ServerConnectView(info, address);
      await addons.run({ hook: "serverConnect", payload: view });
      if (view.killed) throw new Error(`connection to ${formatHostPort(address)} refused by an addon`);
      const { hostname, port } = view.address;
      if (
        typeof hostname === "string" && hostname !== "" && Number.isInteger(port) && port > 0 && port < 65536
      ) {
        target = { hostname, port };
      }
    }
    const opened = await ctx.connect(target);
    const server: ConnectionInfo = {
      id: info.id,
      client: info.client,
      server: { ...info.server, address: target, peerAddress: opened.remote },
      ...(info.tls ? { tls: info.tls } : {}),
    };
    if (up) await addons.run({ hook: "serverConnected", payload: server });
    if (!down) return opened;
    const stream = opened.stream;
    const disconnected = () => {
      stillOpen.delete(disconnected);
      return addons.run({ hook: "serverDisconnected", payload: server });
    };
    stillOpen.add(disconnected);
    const close = (reset: boolean) => {
      stream.close(reset);
      if (stillOpen.has(disconnected)) void disconnected();
    };
    return { remote: opened.remote, stream: { ...withReads(stream, () => stream.read()), close } };
  };
}

/** Handles a connection from its first byte to its end. Never rejects. */
export function handleConnection(ctx: ProxyContext, conn: IncomingConnection): Promise<void> {
  const describe = `connection from ${formatHostPort(conn.client.address)} to ${
    formatHostPort(conn.destination)
  }`;
  return guarded(ctx, describe, conn.stream, conn.client, conn.destination, (r, c) => handle(c, conn, r));
}

/** Handles an explicit-proxy connection (absolute-form requests and CONNECT). Never rejects. */
export function handleProxyConnection(
  ctx: ProxyContext,
  stream: ByteStream,
  client: ClientInfo,
): Promise<void> {
  const describe = `proxy connection from ${formatHostPort(client.address)}`;
  return guarded(ctx, describe, stream, client, undefined, async (resources, ctx) => {
    const server: ServerInfo = { address: { hostname: "", port: 0 } };
    const layer = new Http1Layer({
      mode: "regular",
      scheme: "http",
      client,
      server,
      serverState: "none",
      bodyLimit: ctx.settings.bodyLimit,
      maxMessages: ctx.settings.maxMessages,
      newId: ctx.newId,
      ...(ctx.localResponder ? { localResponder: ctx.localResponder } : {}),
      ...(ctx.settings.serverTimeout ? { serverTimeout: ctx.settings.serverTimeout } : {}),
      ...(ctx.requestHook ? { requestHook: true } : {}),
      ...(ctx.responseHook ? { responseHook: true } : {}),
      ...(ctx.addons ? { hooks: ctx.addons } : {}),
      ...(ctx.proxyAuthorization ? { proxyAuthorization: ctx.proxyAuthorization } : {}),
      ...(ctx.httpUpstream ? { absoluteForm: { headers: ctx.httpUpstream.headers } } : {}),
    });
    const result = await runLayer({
      layer,
      client: stream,
      server: null,
      openServer: ctx.httpUpstream?.open ?? ctx.connect,
      bus: ctx.bus,
      ...headTimeoutOf(ctx, client),
      ...(ctx.requestHook ? { requestHook: ctx.requestHook } : {}),
      ...addonHooksOf(ctx),
    });
    if (result.tunnel && ctx.addons?.has("httpConnect")) {
      // The explicit proxy's CONNECT: an addon may answer it (refusing the tunnel) or kill it.
      const view = new HttpConnectView(client, result.tunnel.address);
      await ctx.addons.run({ hook: "httpConnect", payload: view });
      const answer = view.response;
      if (view.killed || answer) {
        if (answer) {
          const head = `${result.tunnel.httpVersion} ${answer.status} ${answer.reason}\r\n` +
            answer.headers.filter(([n]) => !/^(content-length|connection)$/i.test(n))
              .map(([n, v]) => `${n}: ${v}\r\n`).join("") +
            `content-length: ${answer.body.byteLength}\r\nconnection: close\r\n\r\n`;
          await stream.write(concatBytes(encoder.encode(head), answer.body)).catch(() => {});
        }
        ctx.bus.log(
          "info",
          `CONNECT ${formatHostPort(result.tunnel.address)} from ${formatHostPort(client.address)} ${
            answer ? `answered ${answer.status}` : "killed"
          } by an addon`,
        );
        stream.close(!answer);
        return;
      }
    }
    if (result.tunnel) {
      const { httpVersion } = result.tunnel;
      await connectTunnel(ctx, stream, client, result.tunnel, resources, {
        established: () => stream.write(encoder.encode(`${httpVersion} 200 Connection established\r\n\r\n`)),
        refused: async (reason) => {
          const body = encoder.encode(`wirescope: ${reason}\n`);
          const head = `${httpVersion} 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\n` +
            `content-length: ${body.byteLength}\r\nconnection: close\r\n\r\n`;
          await stream.write(concatBytes(encoder.encode(head), body)).catch(() => {});
        },
      });
    }
  });
}

/** How a front end answers a tunnel request: once the target is reached, or with the failure. */
export interface TunnelAnswer {
  /** The target was reached, at `remote`. */
  established(remote: HostPort): Promise<void>;
  /** The target could not be reached; `reason` names it, `error` is what the dial threw. */
  refused(reason: string, error: unknown): Promise<void>;
}

/**
 * Runs another proxy protocol's front end (SOCKS5) in the connection's last-resort scope. The
 * front end negotiates on `stream`; a tunnel it asks for with `tunnel` is dialed and then goes
 * through the same first-bytes classification and interception as an HTTP CONNECT tunnel.
 * Never rejects.
 */
export function handleFrontedConnection(
  ctx: ProxyContext,
  stream: ByteStream,
  client: ClientInfo,
  describe: string,
  front: (
    tunnel: (address: HostPort, buffered: Uint8Array, answer: TunnelAnswer) => Promise<void>,
  ) => Promise<void>,
): Promise<void> {
  return guarded(
    ctx,
    describe,
    stream,
    client,
    undefined,
    (resources, ctx) =>
      front((address, buffered, answer) =>
        connectTunnel(ctx, stream, client, { address, buffered, httpVersion: "" }, resources, answer)
      ),
  );
}

/**
 * A CONNECT from an explicit-proxy client: reach the target first, answer 200 only then (or 502
 * with the reason), and continue with the tunnel as a new connection whose first dial to the
 * target takes the connection already made.
 */
async function connectTunnel(
  ctx: ProxyContext,
  stream: ByteStream,
  client: ClientInfo,
  tunnel: NonNullable<LayerRunResult["tunnel"]>,
  resources: Resources,
  answer: TunnelAnswer,
): Promise<void> {
  const { address, buffered } = tunnel;
  resources.info.server = { address };
  let opened: OpenedServer;
  const started = Date.now();
  try {
    opened = await ctx.connect(address);
  } catch (e) {
    const reason = `cannot connect to ${formatHostPort(address)}: ${describeError(e)}`;
    await answer.refused(reason, e);
    stream.close(false);
    recordFailure(ctx, client, { address }, undefined, `CONNECT refused: ${reason}`, started);
    return;
  }
  const forget = resources.adopt(() => opened.stream.close(true));
  await answer.established(opened.remote);
  let taken = false;
  const connect = (target: HostPort): Promise<OpenedServer> => {
    if (!taken && target.hostname === address.hostname && target.port === address.port) {
      taken = true;
      forget();
      return Promise.resolve(opened);
    }
    return ctx.connect(target);
  };
  await handle({ ...ctx, connect }, { stream, client, destination: address, buffered }, resources);
  if (!taken) {
    forget();
    opened.stream.close(false);
  }
}

const encoder = new TextEncoder();

async function handle(ctx: ProxyContext, conn: IncomingConnection, resources: Resources): Promise<void> {
  const first = await readFirstBytes(
    conn.stream,
    conn.buffered ?? new Uint8Array(0),
    firstBytesWait(ctx.settings, conn.destination.port),
  );
  const kind = first.bytes.byteLength === 0 ? { kind: "tcp" as const } : classifyFirstBytes(first.bytes);
  const server: ServerInfo = { address: conn.destination };
  const stream = first.stream;
  if (kind.kind === "tls") {
    await interceptTls(ctx, conn, stream, first.bytes, kind.hello, resources);
  } else if (kind.kind === "http") {
    await runHttp(ctx, conn.client, server, stream, null, first.bytes, "http", undefined);
  } else if (kind.kind === "h2") {
    // Prior-knowledge h2c: the upstream is spoken to the same way when it speaks h2c (a probe
    // tells, remembered a while); otherwise each stream becomes an HTTP/1.1 request.
    if (await upstreamSpeaksH2c(ctx, conn.destination)) {
      await runHttp2(ctx, conn.client, server, stream, null, first.bytes, "http", undefined);
    } else {
      await runHttp2ToHttp1(ctx, conn.client, server, stream, first.bytes, "http", undefined, ctx.connect);
    }
  } else {
    await runTcp(ctx, conn.client, server, stream, null, first.bytes, undefined);
  }
}

/** Reads until the first bytes can be classified, the timeout passes, or the stream ends. */
async function readFirstBytes(
  stream: ByteStream,
  initial: Uint8Array,
  timeout: number,
): Promise<{ bytes: Uint8Array; stream: ByteStream }> {
  let bytes = initial;
  const deadline = Date.now() + timeout;
  while (
    bytes.byteLength < 65536 && (bytes.byteLength === 0 || classifyFirstBytes(bytes).kind === "need-more")
  ) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    const pending = stream.read();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      pending.then((chunk) => ({ chunk }), (error) => ({ error })),
      new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), left))),
    ]);
    clearTimeout(timer);
    if (outcome === "timeout") return { bytes, stream: withPendingRead(stream, pending) };
    if ("error" in outcome) throw outcome.error;
    if (outcome.chunk === null) return { bytes, stream: withEndOfStream(stream) };
    bytes = concatBytes(bytes, outcome.chunk);
  }
  return { bytes, stream };
}

/** `stream` with its reads replaced by `read` (writes and closing go to `stream`). */
function withReads(stream: ByteStream, read: () => Promise<Uint8Array | null>): ByteStream {
  return {
    read,
    write: (d) => stream.write(d),
    closeWrite: () => stream.closeWrite(),
    close: (r) => stream.close(r),
  };
}

/** A stream whose next read is one that is already under way. */
function withPendingRead(stream: ByteStream, pending: Promise<Uint8Array | null>): ByteStream {
  let next: Promise<Uint8Array | null> | null = pending;
  return withReads(stream, () => {
    const p = next ?? stream.read();
    next = null;
    return p;
  });
}

/** A stream that already reported its end once (reads keep returning null). */
function withEndOfStream(stream: ByteStream): ByteStream {
  return withReads(stream, () => Promise.resolve(null));
}

function runTcp(
  ctx: ProxyContext,
  client: ClientInfo,
  server: ServerInfo,
  stream: ByteStream,
  serverStream: ByteStream | null,
  first: Uint8Array,
  tlsInfo: TlsInfo | undefined,
  openServer: (address: HostPort) => Promise<OpenedServer> = ctx.connect,
): Promise<unknown> {
  const layer = new TcpLayer({
    id: ctx.newId(),
    client,
    server,
    ...(tlsInfo ? { tls: tlsInfo } : {}),
    serverConnected: serverStream !== null,
    messageLimit: ctx.settings.bodyLimit,
    maxMessages: ctx.settings.maxMessages,
    now: Date.now(),
    ...(ctx.addons ? { hooks: ctx.addons } : {}),
  });
  const events: LayerEvent[] = first.byteLength > 0
    ? [{ type: "data", from: "client", data: first, now: Date.now() }]
    : [];
  return runLayer({
    layer,
    client: stream,
    server: serverStream,
    openServer,
    bus: ctx.bus,
    ...addonHooksOf(ctx),
    initialCommands: layer.start(),
    initialEvents: events,
  });
}

function runHttp(
  ctx: ProxyContext,
  client: ClientInfo,
  server: ServerInfo,
  stream: ByteStream,
  serverStream: ByteStream | null | { failed: string },
  first: Uint8Array,
  scheme: "http" | "https",
  tlsInfo: TlsInfo | undefined,
  openServer: (address: HostPort) => Promise<OpenedServer> = ctx.connect,
): Promise<unknown> {
  const open = serverStream !== null && !("failed" in serverStream) ? serverStream : null;
  const layer = new Http1Layer({
    mode: "transparent",
    scheme,
    client,
    server,
    ...(tlsInfo ? { tls: tlsInfo } : {}),
    serverState: serverStream === null ? "none" : "failed" in serverStream ? serverStream : "open",
    bodyLimit: ctx.settings.bodyLimit,
    maxMessages: ctx.settings.maxMessages,
    newId: ctx.newId,
    ...(ctx.localResponder ? { localResponder: ctx.localResponder } : {}),
    ...(ctx.settings.serverTimeout ? { serverTimeout: ctx.settings.serverTimeout } : {}),
    ...(ctx.requestHook ? { requestHook: true } : {}),
    ...(ctx.responseHook ? { responseHook: true } : {}),
    ...(ctx.addons ? { hooks: ctx.addons } : {}),
  });
  const events: LayerEvent[] = first.byteLength > 0
    ? [{ type: "data", from: "client", data: first, now: Date.now() }]
    : [];
  return runLayer({
    layer,
    client: stream,
    server: open,
    openServer,
    bus: ctx.bus,
    initialEvents: events,
    ...headTimeoutOf(ctx, client),
    ...(ctx.requestHook ? { requestHook: ctx.requestHook } : {}),
    ...addonHooksOf(ctx),
  });
}

/** Relays HTTP/2 (h2 inside TLS when both sides agreed on it, or prior-knowledge h2c). */
function runHttp2(
  ctx: ProxyContext,
  client: ClientInfo,
  server: ServerInfo,
  stream: ByteStream,
  serverStream: ByteStream | null,
  first: Uint8Array,
  scheme: "http" | "https",
  tlsInfo: TlsInfo | undefined,
): Promise<unknown> {
  const layer = new Http2Layer({
    scheme,
    client,
    server,
    ...(tlsInfo ? { tls: tlsInfo } : {}),
    serverConnected: serverStream !== null,
    bodyLimit: ctx.settings.bodyLimit,
    newId: ctx.newId,
    now: Date.now(),
    ...(ctx.http2Counters ? { counters: ctx.http2Counters } : {}),
    ...(ctx.http2ClientSide ? { clientSide: ctx.http2ClientSide } : {}),
    ...(ctx.requestHook ? { requestHook: true } : {}),
    ...(ctx.responseHook ? { responseHook: true } : {}),
  });
  const events: LayerEvent[] = first.byteLength > 0
    ? [{ type: "data", from: "client", data: first, now: Date.now() }]
    : [];
  return runLayer({
    layer,
    client: stream,
    server: serverStream,
    openServer: ctx.connect,
    bus: ctx.bus,
    ...(ctx.requestHook ? { requestHook: ctx.requestHook } : {}),
    ...addonHooksOf(ctx),
    initialCommands: layer.start(),
    initialEvents: events,
    ...headTimeoutOf(ctx, client),
  });
}

/**
 * Relays an HTTP/2 client to an HTTP/1.1 upstream: each stream is one request on a pool of
 * keep-alive connections the layer opens with `openServer` (the first one at once).
 */
function runHttp2ToHttp1(
  ctx: ProxyContext,
  client: ClientInfo,
  server: ServerInfo,
  stream: ByteStream,
  first: Uint8Array,
  scheme: "http" | "https",
  tlsInfo: TlsInfo | undefined,
  openServer: (address: HostPort) => Promise<OpenedServer>,
): Promise<unknown> {
  const layer = new Http2ToHttp1Layer({
    scheme,
    client,
    server,
    ...(tlsInfo ? { tls: tlsInfo } : {}),
    bodyLimit: ctx.settings.bodyLimit,
    newId: ctx.newId,
    now: Date.now(),
    ...(ctx.settings.serverTimeout ? { serverTimeout: ctx.settings.serverTimeout } : {}),
    ...(ctx.http2Counters ? { counters: ctx.http2Counters } : {}),
    ...(ctx.http2ClientSide ? { clientSide: ctx.http2ClientSide } : {}),
    ...(ctx.requestHook ? { requestHook: true } : {}),
    ...(ctx.responseHook ? { responseHook: true } : {}),
  });
  const events: LayerEvent[] = first.byteLength > 0
    ? [{ type: "data", from: "client", data: first, now: Date.now() }]
    : [];
  return runLayer({
    layer,
    client: stream,
    server: null,
    openServer,
    bus: ctx.bus,
    ...(ctx.requestHook ? { requestHook: ctx.requestHook } : {}),
    ...addonHooksOf(ctx),
    initialCommands: layer.start(),
    initialEvents: events,
    ...headTimeoutOf(ctx, client),
  });
}

/** What h2c probes found, by destination: whether it speaks h2c, and until when that is believed. */
const h2cProbes = new Map<string, { h2c: boolean; until: number }>();
const H2C_PROBE_TTL = 10 * 60_000;
const H2C_PROBES_KEPT = 10_000;

/**
 * Whether `address` answers an HTTP/2 connection preface with SETTINGS: prior knowledge cannot be
 * checked otherwise (an HTTP/1.1-only server answers 400 or closes). The probe is a connection of
 * its own, closed after (a server that saw our preface cannot take another); its result is kept
 * for {@link H2C_PROBE_TTL}. When the probe cannot connect, the answer is yes: the HTTP/2 relay
 * then reports the failure to the client as before.
 */
async function upstreamSpeaksH2c(ctx: ProxyContext, address: HostPort): Promise<boolean> {
  const key = formatHostPort(address);
  const known = h2cProbes.get(key);
  if (known && known.until > Date.now()) return known.h2c;
  let opened: OpenedServer;
  try {
    opened = await ctx.connect(address);
  } catch {
    return true;
  }
  let h2c = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const settings = serializeFrame({ type: "settings", ack: false, settings: [] });
    await opened.stream.write(concatBytes(PREFACE, settings));
    const timeout = new Promise<null>((
      r,
    ) => (timer = setTimeout(() => r(null), ctx.settings.connectTimeout)));
    let got: Uint8Array = new Uint8Array(0);
    for (let i = 0; i < 16 && got.byteLength < 9; i++) {
      const chunk = await Promise.race([opened.stream.read(), timeout]);
      if (chunk === null) break;
      got = concatBytes(got, chunk);
    }
    // A frame header: 24-bit length, type 4 (SETTINGS), flags, stream 0.
    h2c = got.byteLength >= 9 && got[3] === 4 && (got[5]! | got[6]! | got[7]! | got[8]!) === 0;
  } catch {
    h2c = false;
  } finally {
    clearTimeout(timer);
    opened.stream.close(false);
  }
  if (h2cProbes.size >= H2C_PROBES_KEPT) h2cProbes.clear();
  h2cProbes.set(key, { h2c, until: Date.now() + H2C_PROBE_TTL });
  return h2c;
}

function headTimeoutOf(ctx: ProxyContext, client: ClientInfo): { headTimeout?: HeadTimeout } {
  const limit = ctx.headTimeout?.(client);
  return limit ? { headTimeout: limit } : {};
}

/** `tlsEstablishedClient` or `tlsFailedClient` after the client handshake, when an addon has it. */
async function tlsClientHooks(
  addons: ConnectionAddons | undefined,
  resources: Resources,
  handshake: true | string,
): Promise<void> {
  if (handshake === true && addons?.has("tlsEstablishedClient")) {
    await addons.run({
      hook: "tlsEstablishedClient",
      payload: { connection: resources.info, side: "client" },
    });
  } else if (handshake !== true && addons?.has("tlsFailedClient")) {
    await addons.run({
      hook: "tlsFailedClient",
      payload: { connection: resources.info, side: "client", error: handshake },
    });
  }
}

/** The TLS versions a hello offers, by name (supported_versions, else the legacy version). */
function tlsVersions(hello: ClientHello): string[] {
  const names: Record<number, string> = {
    0x0304: "TLSv1.3",
    0x0303: "TLSv1.2",
    0x0302: "TLSv1.1",
    0x0301: "TLSv1",
    0x0300: "SSLv3",
  };
  const offered = hello.supportedVersions.length > 0 ? hello.supportedVersions : [hello.legacyVersion];
  return offered.flatMap((v) => names[v] ? [names[v]] : []);
}

/** True when `host` is to be relayed without interception. */
export function isPassthrough(settings: InterceptSettings, host: string): boolean {
  if (settings.ignoreHosts.some((re) => re.test(host))) return true;
  return settings.allowHosts.length > 0 && !settings.allowHosts.some((re) => re.test(host));
}

const IP_LITERAL = /^(\d{1,3}(\.\d{1,3}){3}|[0-9a-f:]*:[0-9a-f:.]*)$/i;

async function interceptTls(
  ctx: ProxyContext,
  conn: IncomingConnection,
  stream: ByteStream,
  first: Uint8Array,
  hello: ClientHello,
  resources: Resources,
): Promise<void> {
  const sni = hello.sni;
  const destination = conn.destination;
  // A client that asked for `CONNECT name:port` and then sent no SNI still meant that name.
  const name = sni ?? (IP_LITERAL.test(destination.hostname) ? undefined : destination.hostname);
  const server: ServerInfo = { address: destination };
  if (name) server.hostname = name;
  const tlsInfo: TlsInfo = { alpnOffered: hello.alpn, passthrough: false };
  if (sni) tlsInfo.sni = sni;
  const obstacle = interceptionObstacle(hello);
  resources.info.server = server;
  resources.info.tls = tlsInfo;
  const addons = ctx.addons;
  let ignore = isPassthrough(ctx.settings, name ?? destination.hostname);
  if (addons?.has("tlsClienthello")) {
    const view = {
      connection: resources.info,
      sni,
      alpn: [...hello.alpn],
      versions: tlsVersions(hello),
      ignoreConnection: ignore || obstacle !== null,
    };
    await addons.run({ hook: "tlsClienthello", payload: view });
    if (view.ignoreConnection === true && !ignore && !obstacle) {
      tlsInfo.passthroughReason = "addon chose passthrough";
    }
    ignore = view.ignoreConnection === true;
  }
  if (obstacle || ignore) {
    tlsInfo.passthrough = true;
    if (obstacle) {
      // Interception is impossible with this client; relaying it untouched keeps the device working.
      tlsInfo.passthroughReason = obstacle;
      ctx.bus.log("info", `not intercepting TLS from ${formatHostPort(conn.client.address)}: ${obstacle}`);
    }
    await runTcp(ctx, conn.client, server, stream, null, first, tlsInfo);
    return;
  }

  // Upstream first: its certificate names fill in for a missing SNI, and its ALPN choice is what
  // we offer the client. h2 is offered when the client offered it: if the upstream takes it, both
  // sides speak HTTP/2 through the Http2Layer; if it takes http/1.1 (or no ALPN) the client is
  // still offered h2 and its streams are translated (Http2ToHttp1Layer). h3 is not TCP.
  const alpn = hello.alpn.filter((p) => p !== "h3");
  // A client that offers h2 alone can still be served by an HTTP/1.1-only upstream (translated):
  // the upstream is offered http/1.1 too (nginx refuses a handshake whose ALPN it cannot meet).
  const upstreamAlpn = alpn.includes("h2") && !alpn.includes("http/1.1") ? [...alpn, "http/1.1"] : alpn;
  const upstreamOptions = { servername: name, alpn: upstreamAlpn };
  // Connections the HTTP/1 and TCP layers open again must not end up speaking h2.
  const h1Options = { servername: name, alpn: alpn.filter((p) => p !== "h2") };
  let upstream: UpstreamTls | null = null;
  let failure = "";
  // A leaf that needs only the name is signed while the upstream handshake runs (awaited below).
  const earlyLeaf = name && !IP_LITERAL.test(name) ? ctx.certs.leafFor({ sni: name }) : undefined;
  earlyLeaf?.catch(() => {});
  try {
    upstream = await connectUpstreamTls(ctx.settings, ctx.connect, destination, upstreamOptions);
  } catch (e) {
    failure = describeError(e);
  }
  if (upstream && addons?.has("tlsEstablishedServer")) {
    await addons.run({
      hook: "tlsEstablishedServer",
      payload: { connection: resources.info, side: "server" },
    });
  } else if (!upstream && addons?.has("tlsFailedServer")) {
    await addons.run({
      hook: "tlsFailedServer",
      payload: { connection: resources.info, side: "server", error: failure },
    });
  }
  // Until a layer runs with it, the upstream connection is ours to close on any failure.
  const forgetUpstream = upstream ? resources.adopt(() => upstream.stream.close(true)) : () => {};
  if (upstream) {
    server.peerAddress = upstream.remote;
    server.timestampConnected = upstream.timestampConnected;
    server.timestampTlsSetup = upstream.timestampTlsSetup;
    if (upstream.version) tlsInfo.serverVersion = upstream.version;
    if (upstream.cipher) tlsInfo.serverCipher = upstream.cipher;
    if (upstream.certificate) tlsInfo.serverCertificate = upstream.certificate;
    if (upstream.alpn) tlsInfo.alpn = upstream.alpn;
  }

  const leafRequest: { sni?: string; ip?: string; extraNames?: string[] } = {};
  if (name && !IP_LITERAL.test(name)) leafRequest.sni = name;
  else {
    leafRequest.ip = name ?? destination.hostname;
    if (upstream?.certificate) {
      leafRequest.extraNames = [...upstream.certificate.dnsNames, ...upstream.certificate.ipAddresses];
    }
  }
  const leaf = await (earlyLeaf ?? ctx.certs.leafFor(leafRequest));

  const gate = new ReadGate();
  const duplex = nodeDuplexOf(stream, first, gate);
  const socket = new tls.TLSSocket(duplex, {
    isServer: true,
    secureContext: leafContext(leaf),
    ...(clientAlpn(alpn, upstream?.alpn, upstream !== null)),
  });
  resources.adopt(() => socket.destroy());
  const handshake = await waitFor(socket, "secure", ctx.settings.connectTimeout);
  await tlsClientHooks(addons, resources, handshake);
  if (handshake !== true) {
    resources.closeAll();
    const message = `client TLS handshake failed for ${name ?? destination.hostname}: ${handshake}` +
      " (does the client trust wirescope's CA?)";
    recordFailure(ctx, conn.client, server, tlsInfo, message);
    return;
  }
  const clientVersion = socket.getProtocol();
  if (clientVersion) tlsInfo.clientVersion = clientVersion;
  const clientStream = byteStreamOfNodeSocket(socket, gate);
  // A client that agreed on HTTP/1.1 (or h2) by ALPN speaks HTTP, however long it waits before its
  // request (browsers open connections ahead of use): no classification. Otherwise, look at its
  // first bytes.
  const agreed = typeof socket.alpnProtocol === "string" ? socket.alpnProtocol : "";
  if (agreed === "h2" && upstream?.alpn === "h2") {
    // Both sides agreed on HTTP/2 (we offered the client only what the upstream chose).
    forgetUpstream(); // the layer runner closes it from here on
    await runHttp2(
      ctx,
      conn.client,
      server,
      clientStream,
      upstream.stream,
      new Uint8Array(0),
      "https",
      tlsInfo,
    );
    return;
  }
  if (agreed === "h2" && upstream) {
    // An h2 client, an HTTP/1.1 upstream: the layer takes this connection first, then opens more.
    let handed: UpstreamTls | null = upstream;
    const open = (address: HostPort): Promise<OpenedServer> => {
      if (handed) {
        const u = handed;
        handed = null;
        forgetUpstream();
        return Promise.resolve({ stream: u.stream, remote: u.remote });
      }
      return connectUpstreamTls(ctx.settings, ctx.connect, address, h1Options)
        .then((u) => ({ stream: u.stream, remote: u.remote }));
    };
    await runHttp2ToHttp1(ctx, conn.client, server, clientStream, new Uint8Array(0), "https", tlsInfo, open);
    return;
  }
  const port = destination.port;
  const inner = agreed === "http/1.1" || agreed === "http/1.0"
    ? { bytes: new Uint8Array(0), stream: clientStream, http: true }
    : {
      ...(await readFirstBytes(
        clientStream,
        new Uint8Array(0),
        SERVER_FIRST_TLS_PORTS.has(port) ? 0 : firstBytesWait(ctx.settings, port),
      )),
      http: false,
    };
  const reopen = (address: HostPort) =>
    connectUpstreamTls(ctx.settings, ctx.connect, address, h1Options).then((u) => ({
      stream: u.stream,
      remote: u.remote,
    }));
  const serverState = upstream ? upstream.stream : { failed: failure };
  const kind = inner.http
    ? "http"
    : inner.bytes.byteLength === 0
    ? "tcp"
    : classifyFirstBytes(inner.bytes).kind;
  if (kind === "http" || (kind === "need-more" && inner.bytes.byteLength > 0)) {
    forgetUpstream(); // the layer runner closes it from here on
    await runHttp(ctx, conn.client, server, inner.stream, serverState, inner.bytes, "https", tlsInfo, reopen);
  } else {
    if (!upstream) {
      recordFailure(
        ctx,
        conn.client,
        server,
        tlsInfo,
        `cannot connect to ${formatHostPort(destination)}: ${failure}`,
      );
      inner.stream.close(true);
      return;
    }
    forgetUpstream();
    await runTcp(ctx, conn.client, server, inner.stream, upstream.stream, inner.bytes, tlsInfo, reopen);
  }
}

/**
 * The ALPN list offered to the client: the upstream's choice, and h2 besides when the client
 * offered it and the upstream took HTTP/1.1 or no protocol (its streams are then translated).
 * Without an upstream, nothing (the HTTP/1 layer answers with the reason).
 */
function clientAlpn(
  offered: string[],
  upstreamAlpn: string | undefined,
  connected: boolean,
): { ALPNProtocols?: string[] } {
  const h1 = upstreamAlpn === undefined || upstreamAlpn === "http/1.1" || upstreamAlpn === "http/1.0";
  if (connected && h1 && offered.includes("h2")) {
    const rest = upstreamAlpn ?? (offered.includes("http/1.1") ? "http/1.1" : undefined);
    return { ALPNProtocols: rest ? ["h2", rest] : ["h2"] };
  }
  return upstreamAlpn ? { ALPNProtocols: [upstreamAlpn] } : {};
}

/** Records a connection that ended before any layer ran, as a TCP flow with the reason. */
function recordFailure(
  ctx: ProxyContext,
  client: ClientInfo,
  server: ServerInfo,
  tlsInfo: TlsInfo | undefined,
  message: string,
  started = Date.now(),
) {
  const now = Date.now();
  const flow = {
    id: ctx.newId(),
    type: "tcp" as const,
    client,
    server,
    ...(tlsInfo ? { tls: tlsInfo } : {}),
    timestampStart: started,
    timestampEnd: now,
    bytesFromClient: 0,
    bytesFromServer: 0,
    messages: [],
    messagesDropped: 0,
    error: { message, timestamp: now },
  };
  ctx.bus.emit("start", flow);
  ctx.bus.emit("end", flow);
}

/** Waits for `event` on a node socket: true, or the error's text (or a timeout notice). */
function waitFor(socket: tls.TLSSocket, event: string, timeout: number): Promise<true | string> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => finish(`timed out after ${timeout} ms`), timeout);
    const onOk = () => finish(true);
    const onError = (e: Error) => finish(describeError(e));
    const onClose = () => finish("connection closed during the handshake");
    function finish(result: true | string) {
      clearTimeout(timer);
      socket.off(event, onOk);
      socket.off("error", onError);
      socket.off("close", onClose);
      socket.off("end", onClose);
      resolve(result);
    }
    socket.once(event, onOk);
    socket.once("error", onError);
    socket.once("close", onClose);
    // A client that leaves mid-handshake ends the transport; this node:tls then emits only "end".
    socket.once("end", onClose);
  });
}

/** An upstream TLS connection. */
interface UpstreamTls {
  stream: ByteStream;
  remote: HostPort;
  alpn?: string;
  version?: string;
  cipher?: string;
  certificate?: CertificateSummary;
  timestampConnected: number;
  timestampTlsSetup: number;
}

/**
 * Server certificates that passed verification while `upstreamCa` roots were configured, by
 * `name:port`. A later connection shown the very same certificate, still valid, skips the checks
 * (and, for a server the system roots vouch for, the first try against the extra roots alone).
 */
const verifiedCertificates = new Map<string, { fingerprint: string; validTo: number }>();
const VERIFIED_CACHE_SIZE = 10_000;

/**
 * Connects to `address` with TLS, verifying the server's certificate unless told not to. TLS runs
 * in node:tls over our own TCP stream, with a {@link ReadGate} between them so a slow client
 * holds back a fast server instead of the proxy buffering the difference.
 */
export async function connectUpstreamTls(
  settings: InterceptSettings,
  connect: (address: HostPort) => Promise<OpenedServer>,
  address: HostPort,
  options: { servername: string | undefined; alpn: string[] },
): Promise<UpstreamTls> {
  const servername = options.servername && !IP_LITERAL.test(options.servername)
    ? options.servername
    : undefined;
  const extraRoots = settings.upstreamCaPems.length > 0 && !settings.insecure;
  const key = `${servername ?? address.hostname}:${address.port}`;
  const known = extraRoots ? verifiedCertificates.get(key) : undefined;
  if (known && known.validTo > Date.now()) {
    const quick = await upstreamHandshake(settings, connect, address, servername, options.alpn, "trust-known")
      .catch(() => null);
    if (quick?.certificate?.fingerprintSha256 === known.fingerprint) return quick;
    quick?.stream.close(true);
  }
  let result: UpstreamTls;
  if (extraRoots) {
    // The extra roots alone first (cheap), then the system's (cheap too): node:tls rebuilds its
    // store from a `ca` list on every handshake, and the system roots plus ours cost ~10 ms.
    try {
      result = await upstreamHandshake(settings, connect, address, servername, options.alpn, "verify-extra");
    } catch (e) {
      if (!UNKNOWN_ISSUER.has((e as { code?: string }).code ?? "")) throw e;
      result = await upstreamHandshake(settings, connect, address, servername, options.alpn, "verify");
    }
  } else {
    result = await upstreamHandshake(settings, connect, address, servername, options.alpn, "verify");
  }
  if (extraRoots && result.certificate) {
    if (verifiedCertificates.size >= VERIFIED_CACHE_SIZE) verifiedCertificates.clear();
    verifiedCertificates.set(key, {
      fingerprint: result.certificate.fingerprintSha256,
      validTo: Date.parse(result.certificate.validTo) || 0,
    });
  }
  return result;
}

/** Verification failures that mean "not signed by these roots" (another store may know it). */
const UNKNOWN_ISSUER = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_UNTRUSTED",
]);

/**
 * One TCP connection and TLS handshake. `verify` checks the chain against the system roots and
 * the name, `verify-extra` against the `upstreamCa` roots only; `trust-known` checks nothing, for
 * a caller that compares the certificate it gets with one it verified before.
 */
async function upstreamHandshake(
  settings: InterceptSettings,
  connect: (address: HostPort) => Promise<OpenedServer>,
  address: HostPort,
  servername: string | undefined,
  alpn: string[],
  mode: "verify" | "verify-extra" | "trust-known",
): Promise<UpstreamTls> {
  const started = Date.now();
  const tcp = await connect(address);
  const connectedAt = Date.now();
  const left = Math.max(1, settings.connectTimeout - (connectedAt - started));
  const gate = new ReadGate();
  const verify = mode !== "trust-known" && !settings.insecure;
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      socket: nodeDuplexOf(tcp.stream, new Uint8Array(0), gate),
      // Only for checking the certificate when there is no server name (no connection is made).
      host: address.hostname,
      ...(servername ? { servername } : {}),
      ...(alpn.length > 0 ? { ALPNProtocols: alpn } : {}),
      ...(verify && mode === "verify-extra" ? { ca: settings.upstreamCaPems } : {}),
      rejectUnauthorized: verify,
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`TLS handshake with ${formatHostPort(address)} timed out after ${left} ms`));
    }, left);
    socket.once("error", (e) => {
      clearTimeout(timer);
      socket.destroy();
      const code = (e as { code?: string }).code ?? "";
      const certProblem = /CERT|SELF_SIGNED|UNABLE_TO|ALTNAME/.test(code);
      const error = new Error(
        certProblem ? `upstream certificate rejected: ${describeError(e)}` : describeError(e),
      );
      (error as { code?: string }).code = code;
      reject(error);
    });
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      const now = Date.now();
      const result: UpstreamTls = {
        stream: byteStreamOfNodeSocket(socket, gate),
        remote: tcp.remote,
        timestampConnected: connectedAt,
        timestampTlsSetup: now,
      };
      if (typeof socket.alpnProtocol === "string") result.alpn = socket.alpnProtocol;
      const version = socket.getProtocol();
      if (version) result.version = version;
      const cipher = socket.getCipher()?.name;
      if (cipher) result.cipher = cipher;
      const certificate = summarizeCertificate(socket.getPeerCertificate());
      if (certificate) result.certificate = certificate;
      resolve(result);
    });
  });
}

function summarizeCertificate(cert: tls.PeerCertificate | undefined): CertificateSummary | undefined {
  if (!cert || !cert.subject) return undefined;
  const names = (cert.subjectaltname ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  const dn = (o: Record<string, unknown>) =>
    Object.entries(o).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("+") : String(v)}`).join(", ");
  return {
    subject: dn(cert.subject as unknown as Record<string, unknown>),
    issuer: dn((cert.issuer ?? {}) as unknown as Record<string, unknown>),
    dnsNames: names.filter((n) => n.startsWith("DNS:")).map((n) => n.slice(4)),
    ipAddresses: names.filter((n) => n.startsWith("IP Address:")).map((n) => n.slice(11)),
    validFrom: cert.valid_from ?? "",
    validTo: cert.valid_to ?? "",
    fingerprintSha256: cert.fingerprint256 ?? "",
  };
}

/** Where a reverse-mode listener sends everything, and how (see {@link handleReverseConnection}). */
export interface ReverseTarget {
  /** `http`/`https`: HTTP relayed (and recorded) to the server; `tcp`/`tls`: bytes relayed as a flow. */
  scheme: "http" | "https" | "tcp" | "tls";
  /** The server. */
  address: HostPort;
  /** Keep the client's Host header (default: every request carries the server's). */
  keepHostHeader?: boolean;
  /** The certificate shown to TLS clients for a server name (null: a leaf from the CA). */
  certificateFor?: (sni: string | undefined) => { certPem: string; keyPem: string } | null;
}

/**
 * Handles a connection to a reverse-mode listener: a client that speaks TLS to it gets a
 * certificate (the user's, or a leaf for its SNI) and its TLS is ended here; what is inside goes
 * to the one server of the mode, over TLS for `https`/`tls` (verified against the server's name)
 * and plain for `http`/`tcp`. HTTP is relayed and recorded; anything else as a TCP flow. Never
 * rejects.
 */
export function handleReverseConnection(
  ctx: ProxyContext,
  stream: ByteStream,
  client: ClientInfo,
  target: ReverseTarget,
): Promise<void> {
  const describe = `reverse connection from ${formatHostPort(client.address)} to ${
    formatHostPort(target.address)
  }`;
  return guarded(ctx, describe, stream, client, target.address, async (resources, ctx) => {
    const address = target.address;
    const name = IP_LITERAL.test(address.hostname) ? undefined : address.hostname;
    const server: ServerInfo = { address, ...(name ? { hostname: name } : {}) };
    const web = target.scheme === "http" || target.scheme === "https";
    const open = (): Promise<OpenedServer> =>
      target.scheme === "https" || target.scheme === "tls"
        ? connectUpstreamTls(ctx.settings, ctx.connect, address, {
          servername: name,
          alpn: web ? ["http/1.1"] : [],
        }).then((u) => ({ stream: u.stream, remote: u.remote }))
        : ctx.connect(address);
    let first = await readFirstBytes(stream, new Uint8Array(0), web ? CLIENT_FIRST_WAIT : 0);
    let kind = first.bytes.byteLength === 0 ? "tcp" : classifyFirstBytes(first.bytes).kind;
    let tlsInfo: TlsInfo | undefined;
    if (kind === "tls") {
      const hello = (classifyFirstBytes(first.bytes) as { hello: ClientHello }).hello;
      tlsInfo = { alpnOffered: hello.alpn, passthrough: false, ...(hello.sni ? { sni: hello.sni } : {}) };
      const leaf = target.certificateFor?.(hello.sni) ??
        await ctx.certs.leafFor(
          hello.sni ? { sni: hello.sni } : { ip: "127.0.0.1", ...(name ? { extraNames: [name] } : {}) },
        );
      const gate = new ReadGate();
      const socket = new tls.TLSSocket(nodeDuplexOf(first.stream, first.bytes, gate), {
        isServer: true,
        secureContext: leafContext(leaf),
        ...(web && hello.alpn.includes("http/1.1") ? { ALPNProtocols: ["http/1.1"] } : {}),
      });
      resources.adopt(() => socket.destroy());
      const handshake = await waitFor(socket, "secure", ctx.settings.connectTimeout);
      resources.info.tls = tlsInfo;
      await tlsClientHooks(ctx.addons, resources, handshake);
      if (handshake !== true) {
        resources.closeAll();
        recordFailure(ctx, client, server, tlsInfo, `client TLS handshake failed: ${handshake}`);
        return;
      }
      const version = socket.getProtocol();
      if (version) tlsInfo.clientVersion = version;
      if (typeof socket.alpnProtocol === "string") tlsInfo.alpn = socket.alpnProtocol;
      const inner = byteStreamOfNodeSocket(socket, gate);
      first = tlsInfo.alpn === "http/1.1"
        ? { bytes: new Uint8Array(0), stream: inner }
        : await readFirstBytes(inner, new Uint8Array(0), web ? CLIENT_FIRST_WAIT : 0);
      kind = tlsInfo.alpn === "http/1.1"
        ? "http"
        : first.bytes.byteLength === 0
        ? "tcp"
        : classifyFirstBytes(first.bytes).kind;
    }
    if (web && (kind === "http" || kind === "need-more")) {
      const layer = new Http1Layer({
        mode: "transparent",
        scheme: tlsInfo ? "https" : "http",
        client,
        server,
        ...(tlsInfo ? { tls: tlsInfo } : {}),
        serverState: "none",
        bodyLimit: ctx.settings.bodyLimit,
        maxMessages: ctx.settings.maxMessages,
        newId: ctx.newId,
        ...(ctx.settings.serverTimeout ? { serverTimeout: ctx.settings.serverTimeout } : {}),
        ...(ctx.requestHook ? { requestHook: true } : {}),
        ...(ctx.responseHook ? { responseHook: true } : {}),
        ...(ctx.addons ? { hooks: ctx.addons } : {}),
        ...(target.keepHostHeader ? {} : {
          hostHeader: address.port === (target.scheme === "https" ? 443 : 80)
            ? formatHostPort(address).replace(/:\d+$/, "")
            : formatHostPort(address),
        }),
      });
      await runLayer({
        layer,
        client: first.stream,
        server: null,
        openServer: open,
        bus: ctx.bus,
        initialEvents: first.bytes.byteLength > 0
          ? [{ type: "data", from: "client", data: first.bytes, now: Date.now() }]
          : [],
        ...headTimeoutOf(ctx, client),
        ...(ctx.requestHook ? { requestHook: ctx.requestHook } : {}),
        ...addonHooksOf(ctx),
      });
      return;
    }
    await runTcp(ctx, client, server, first.stream, null, first.bytes, tlsInfo, open);
  });
}

/** The runner options that carry the addons' response hook and flow-end notice. */
function addonHooksOf(
  ctx: ProxyContext,
): { responseHook?: ResponseHook; flowEnded?: (flow: Flow) => void; addons?: AddonRunner } {
  return {
    ...(ctx.responseHook ? { responseHook: ctx.responseHook } : {}),
    ...(ctx.flowEnded ? { flowEnded: ctx.flowEnded } : {}),
    ...(ctx.addons ? { addons: ctx.addons } : {}),
  };
}

/** A leaf's server context: the one the CA keeps with the leaf (made once per leaf), else a new one. */
function leafContext(
  leaf: { certPem: string; keyPem: string; secureContext?: tls.SecureContext },
): tls.SecureContext {
  return leaf.secureContext ?? tls.createSecureContext({ key: leaf.keyPem, cert: leaf.certPem });
}
