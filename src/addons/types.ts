/**
 * The typed addon API: an addon is an object whose optional methods are called at points of the
 * proxy's life (mitmproxy's event model, in camelCase). Every hook may be async: the flow (or the
 * connection, or the message) waits for it, which is also how interception works. Hooks run one
 * addon after another in load order; an addon whose hook throws gets one log line with its stack
 * and the next addon (and the flow) go on as if that hook had not run.
 *
 * Options: an addon declares them with `options` (type, default, help); the user sets them with
 * `--set name=value` (or `startProxy({ addonOptions })`); hooks read them as `ctx.options` with
 * their declared types. Use {@link defineAddon} to have those types inferred:
 *
 * ```ts
 * export default defineAddon({
 *   name: "tagger",
 *   options: { tag: { type: "string", default: "x", help: "value of x-tag" } },
 *   request(flow, ctx) {
 *     flow.request.headers.set("x-tag", ctx.options.tag);
 *   },
 * });
 * ```
 * @module
 */
import type {
  ClientInfo,
  DnsFlow,
  FlowError,
  HttpFlow,
  MessageRecord,
  ServerInfo,
  TcpFlow,
  TlsInfo,
  UdpFlow,
} from "../flows/flow.ts";
import type { DnsMessage } from "../proxy/dns_message.ts";

/** A value, or a promise of it: what every hook may return. */
export type Awaitable<T> = T | Promise<T>;

// ---- options --------------------------------------------------------------------------------

/** The types an option can have. */
export type OptionType = "string" | "number" | "boolean" | "string[]";

/** The TypeScript type of an option of type `T`. */
export type OptionValueOf<T extends OptionType> = T extends "string" ? string
  : T extends "number" ? number
  : T extends "boolean" ? boolean
  : string[];

/** Any option's value. */
export type OptionValue = string | number | boolean | string[];

/** One option an addon declares. */
export interface OptionSpec<T extends OptionType = OptionType> {
  type: T;
  /** The value when the user sets none. */
  default: OptionValueOf<T>;
  /** One line for `--help`. */
  help: string;
}

/** An addon's option declarations, by name (names are global: two addons may not declare one twice). */
export type OptionDecls = Record<string, OptionSpec>;

/** The values of declared options, typed after their declarations. */
export type OptionValues<D extends OptionDecls> = { readonly [K in keyof D]: OptionValueOf<D[K]["type"]> };

// ---- context --------------------------------------------------------------------------------

/** What every hook gets beside its payload. */
export interface AddonContext<D extends OptionDecls = OptionDecls> {
  /** The current values of this addon's options (and, by name, any other loaded option). */
  readonly options: OptionValues<D> & Readonly<Record<string, OptionValue | undefined>>;
  /** Writes a line to the proxy's log, prefixed with the addon's name. */
  log(level: "debug" | "info" | "warn" | "error", message: string): void;
}

// ---- HTTP -----------------------------------------------------------------------------------

/**
 * Header fields as an ordered multi-map: names keep their case and fields their order (what goes
 * on the wire is what this holds; HTTP/2 lowercases names on the way out). Lookups ignore case.
 */
export interface HeaderList extends Iterable<[name: string, value: string]> {
  /** The first value of `name`, or undefined. */
  get(name: string): string | undefined;
  /** Every value of `name`, in order. */
  getAll(name: string): string[];
  has(name: string): boolean;
  /**
   * Sets `name` to `value`: the first field of that name keeps its place and gets the value,
   * the others are removed; a new field goes at the end.
   */
  set(name: string, value: string): void;
  /** Adds a field at the end (a second field of the same name stays a second field). */
  add(name: string, value: string): void;
  /** Removes every field of `name`; true when there was one. */
  delete(name: string): boolean;
  /** The fields, in order, as [name, value] pairs (a copy). */
  toArray(): [string, string][];
  /** Number of fields. */
  readonly size: number;
}

/** What may be given as headers to {@link HttpFlowHandle.respond} and setters. */
export type HeadersInit = HeaderList | Iterable<[string, string]> | Record<string, string>;

/** What may be given as a body: bytes or text (sent as UTF-8). */
export type BodyInit = Uint8Array | string;

/**
 * A transform a body streams through instead of being buffered: called with each chunk as it
 * comes, and once more with an empty chunk at the end (its result is the body's last bytes).
 * What it returns goes on in place of the chunk (an empty array sends nothing). A 1 GB download
 * through a transform keeps memory flat.
 */
export type BodyTransform = (chunk: Uint8Array) => Awaitable<Uint8Array>;

/** The part requests and responses share. */
export interface HttpMessageHandle {
  /** e.g. `HTTP/1.1`, `HTTP/2.0`. */
  readonly httpVersion: string;
  /** The header fields; changes go on the wire. */
  headers: HeaderList;
  /**
   * The whole body: undefined in `requestheaders`/`responseheaders` (not read yet), and when the
   * body was longer than the proxy buffers (`bodyTruncated`; it then streamed on unchanged).
   * Setting it replaces the body; Content-Length is fixed up (and Transfer-Encoding dropped).
   */
  body: Uint8Array | undefined;
  /**
   * The body as text (undefined as for `body`): its Content-Encoding (gzip, deflate, br) undone,
   * then UTF-8. Setting it sets `body` to the text as UTF-8 and removes Content-Encoding (the
   * body goes on unencoded; Content-Length is fixed up). `body` itself is the bytes as they came.
   */
  text: string | undefined;
  /** The body parsed as JSON, decoded as for `text` (throws when there is none or it is not JSON). */
  json(): unknown;
  /** True when the body was not buffered in full (too long): `body` is then undefined. */
  readonly bodyTruncated: boolean;
  /**
   * Set in `requestheaders`/`responseheaders` to stream the body through a transform instead of
   * buffering it (`request`/`response` then see no body). `true` streams it unchanged.
   */
  stream?: BodyTransform | true;
  /** Trailer fields (HTTP/2), when there are any. */
  trailers?: HeaderList;
}

/** A request, as hooks see and change it. */
export interface HttpRequestHandle extends HttpMessageHandle {
  method: string;
  /** `http` or `https`. */
  scheme: string;
  /** Where the request goes (changing it sends the request to another server). */
  host: string;
  port: number;
  /** The request target in origin form, e.g. `/a?b=1`. */
  path: string;
  /** The full URL; setting it sets scheme, host, port and path. */
  url: string;
}

/** A response, as hooks see and change it. */
export interface HttpResponseHandle extends HttpMessageHandle {
  status: number;
  reason: string;
}

/** An HTTP exchange, as HTTP hooks see and change it. */
export interface HttpFlowHandle {
  /** The flow record (read-only: ids, client, server, TLS, timestamps). */
  readonly flow: Readonly<HttpFlow>;
  readonly id: string;
  readonly client: Readonly<ClientInfo>;
  readonly server: Readonly<ServerInfo>;
  readonly tls: Readonly<TlsInfo> | undefined;
  readonly request: HttpRequestHandle;
  /** Present from `responseheaders` on (and after {@link respond}). */
  readonly response: HttpResponseHandle | undefined;
  /** Set in the `error` hook. */
  readonly error: Readonly<FlowError> | undefined;
  /**
   * Answers the client with this response: in request hooks the server is then not contacted;
   * in response hooks it replaces the server's response. Content-Length is set from the body.
   */
  respond(status: number, headers?: HeadersInit, body?: BodyInit): void;
  /** Kills the exchange: the client connection is closed, the flow recorded as killed. */
  kill(): void;
  /** True once {@link kill} was called. */
  readonly killed: boolean;
  /** The user's mark ("" for none, `:default:` for a plain mark). */
  marked: string;
  /** The user's comment. */
  comment: string;
  /**
   * Holds the flow once the current hook returns, until {@link resume} is called (from anywhere:
   * a web UI, a timer). The later addons' hooks and the wire wait meanwhile.
   */
  intercept(): void;
  /** Lets an intercepted flow go on. */
  resume(): void;
  readonly intercepted: boolean;
}

/** The CONNECT request of the explicit proxy (`httpConnect`): answer it to refuse the tunnel. */
export interface HttpConnectHandle {
  readonly client: Readonly<ClientInfo>;
  /** The tunnel's destination. */
  readonly host: string;
  readonly port: number;
  readonly headers: HeaderList;
  /** Refuses the tunnel with this response. */
  respond(status: number, headers?: HeadersInit, body?: BodyInit): void;
  kill(): void;
}

// ---- connections and TLS ----------------------------------------------------------------------

/** A client connection or a server connection of one. */
export interface ConnectionInfo {
  /** Unique id of the client connection. */
  readonly id: string;
  readonly client: Readonly<ClientInfo>;
  readonly server: Readonly<ServerInfo>;
  readonly tls?: Readonly<TlsInfo>;
}

/** `serverConnect`: the proxy is about to dial the server; the address may be changed. */
export interface ServerConnectHandle extends ConnectionInfo {
  address: { hostname: string; port: number };
  /** Refuses the connection (the client sees a failure to connect). */
  kill(): void;
}

/** `tlsClienthello`: the client's hello, before the proxy decides how to handle TLS. */
export interface TlsClientHelloHandle {
  readonly connection: ConnectionInfo;
  /** The server name asked for (SNI). */
  readonly sni: string | undefined;
  /** The protocols offered (ALPN). */
  readonly alpn: readonly string[];
  /**
   * The TLS versions offered, newest first as sent (`TLSv1.3`, `TLSv1.2`, ...; from
   * supported_versions, else the legacy version; GREASE left out).
   */
  readonly versions: readonly string[];
  /**
   * Starts as the proxy's own decision (ignore_hosts/allow_hosts); set to true to relay this
   * connection without interception (passthrough, recorded with "addon chose passthrough"), or
   * to false to intercept a host the lists would have ignored. A hello the proxy cannot
   * intercept at all is relayed whatever is set here.
   */
  ignoreConnection: boolean;
}

/** `tlsEstablished*`/`tlsFailed*`. */
export interface TlsHandshakeInfo {
  readonly connection: ConnectionInfo;
  readonly side: "client" | "server";
  /** The failure (tlsFailed* only). */
  readonly error?: string;
}

// ---- messages: WebSocket, TCP, UDP ------------------------------------------------------------

/** One message of a WebSocket, TCP or UDP flow, as `*Message` hooks see and change it. */
export interface MessageHandle {
  readonly fromClient: boolean;
  readonly kind: MessageRecord["kind"];
  /** The payload; setting it changes what goes on. */
  content: Uint8Array;
  /** The payload as UTF-8; setting it sets `content`. */
  text: string;
  /** Drops the message: it does not go on. */
  drop(): void;
  readonly dropped: boolean;
}

/** A WebSocket (the HTTP flow that upgraded) with its current message. */
export interface WebSocketFlowHandle {
  readonly flow: Readonly<HttpFlow>;
  /** The current message (`websocketMessage` only). */
  readonly message?: MessageHandle;
  kill(): void;
}

/** A TCP flow with its current message. */
export interface TcpFlowHandle {
  readonly flow: Readonly<TcpFlow>;
  readonly message?: MessageHandle;
  kill(): void;
}

/** A UDP flow with its current datagram. */
export interface UdpFlowHandle {
  readonly flow: Readonly<UdpFlow>;
  readonly message?: MessageHandle;
  kill(): void;
}

// ---- DNS ---------------------------------------------------------------------------------------

/** A DNS query and its answer. */
export interface DnsFlowHandle {
  readonly flow: Readonly<DnsFlow>;
  readonly request: DnsMessage | undefined;
  /**
   * Set in `dnsRequest` to answer without asking a resolver; changed in `dnsResponse` (the
   * changed message is written back to the wire; see src/proxy/dns_encode.ts for what it takes).
   */
  response: DnsMessage | undefined;
  /** Answers with these addresses (A for IPv4, AAAA for IPv6, those the question asks for). */
  answer(addresses: string | readonly string[], ttl?: number): void;
  /** Answers with this response code and no records (3: NXDOMAIN, 5: REFUSED). */
  answerError(rcode: number): void;
  /** No answer at all (the client times out). */
  kill(): void;
}

// ---- WireGuard ---------------------------------------------------------------------------------

/** A WireGuard peer's state change. */
export interface WireGuardPeerEvent {
  /** The peer's public key (base64). */
  readonly publicKey: string;
  /** Its outer endpoint (`host:port`), when known. */
  readonly endpoint?: string;
  readonly event: "handshake" | "online" | "offline";
}

// ---- the addon ---------------------------------------------------------------------------------

/** A hook: a payload and the context in, nothing (or a promise of nothing) out. */
export type Hook<P, D extends OptionDecls> = (payload: P, ctx: AddonContext<D>) => Awaitable<void>;

/**
 * An addon: every hook is optional and may be async. `D` types `ctx.options` after `options`.
 * Hooks are declared as methods, so an `Addon<D>` of any `D` is an `Addon`.
 */
export interface Addon<D extends OptionDecls = OptionDecls> {
  /** A name for log lines and `--help` (default: the file name, or `addon N`). */
  name?: string;
  /** The options this addon declares. */
  options?: D;

  // lifecycle
  /** Called once when the addon is loaded (after its options are registered). */
  load?(ctx: AddonContext<D>): Awaitable<void>;
  /** Called after `load` and whenever options change; `changed` names the options that did. */
  configure?(changed: ReadonlySet<string>, ctx: AddonContext<D>): Awaitable<void>;
  /** Called once the proxy is up. */
  running?(ctx: AddonContext<D>): Awaitable<void>;
  /** Called once at shutdown, or when the addon is unloaded (reload). */
  done?(ctx: AddonContext<D>): Awaitable<void>;

  // connections
  clientConnected?(payload: ConnectionInfo, ctx: AddonContext<D>): Awaitable<void>;
  clientDisconnected?(payload: ConnectionInfo, ctx: AddonContext<D>): Awaitable<void>;
  serverConnect?(payload: ServerConnectHandle, ctx: AddonContext<D>): Awaitable<void>;
  serverConnected?(payload: ConnectionInfo, ctx: AddonContext<D>): Awaitable<void>;
  serverDisconnected?(payload: ConnectionInfo, ctx: AddonContext<D>): Awaitable<void>;

  // TLS
  tlsClienthello?(payload: TlsClientHelloHandle, ctx: AddonContext<D>): Awaitable<void>;
  tlsEstablishedClient?(payload: TlsHandshakeInfo, ctx: AddonContext<D>): Awaitable<void>;
  tlsEstablishedServer?(payload: TlsHandshakeInfo, ctx: AddonContext<D>): Awaitable<void>;
  tlsFailedClient?(payload: TlsHandshakeInfo, ctx: AddonContext<D>): Awaitable<void>;
  tlsFailedServer?(payload: TlsHandshakeInfo, ctx: AddonContext<D>): Awaitable<void>;

  // HTTP
  /** The request head is in (no body yet); may set `flow.request.stream`. */
  requestheaders?(payload: HttpFlowHandle, ctx: AddonContext<D>): Awaitable<void>;
  /** The request is in, body buffered (unless streamed or too long); before the server is contacted. */
  request?(payload: HttpFlowHandle, ctx: AddonContext<D>): Awaitable<void>;
  /** The response head is in; may set `flow.response.stream`. */
  responseheaders?(payload: HttpFlowHandle, ctx: AddonContext<D>): Awaitable<void>;
  /** The response is in, body buffered (unless streamed or too long); before the client gets it. */
  response?(payload: HttpFlowHandle, ctx: AddonContext<D>): Awaitable<void>;
  /** The exchange failed (`flow.error`). */
  error?(payload: HttpFlowHandle, ctx: AddonContext<D>): Awaitable<void>;
  /** A CONNECT request to the explicit proxy. */
  httpConnect?(payload: HttpConnectHandle, ctx: AddonContext<D>): Awaitable<void>;

  // WebSocket
  websocketStart?(payload: WebSocketFlowHandle, ctx: AddonContext<D>): Awaitable<void>;
  websocketMessage?(payload: WebSocketFlowHandle, ctx: AddonContext<D>): Awaitable<void>;
  websocketEnd?(payload: WebSocketFlowHandle, ctx: AddonContext<D>): Awaitable<void>;

  // TCP
  tcpStart?(payload: TcpFlowHandle, ctx: AddonContext<D>): Awaitable<void>;
  tcpMessage?(payload: TcpFlowHandle, ctx: AddonContext<D>): Awaitable<void>;
  tcpEnd?(payload: TcpFlowHandle, ctx: AddonContext<D>): Awaitable<void>;

  // UDP
  udpStart?(payload: UdpFlowHandle, ctx: AddonContext<D>): Awaitable<void>;
  udpMessage?(payload: UdpFlowHandle, ctx: AddonContext<D>): Awaitable<void>;
  udpEnd?(payload: UdpFlowHandle, ctx: AddonContext<D>): Awaitable<void>;

  // DNS
  dnsRequest?(payload: DnsFlowHandle, ctx: AddonContext<D>): Awaitable<void>;
  dnsResponse?(payload: DnsFlowHandle, ctx: AddonContext<D>): Awaitable<void>;

  // WireGuard
  wireguardPeer?(payload: WireGuardPeerEvent, ctx: AddonContext<D>): Awaitable<void>;
}

/** The names of the hooks that take a payload (everything but the lifecycle hooks). */
export type EventHookName = Exclude<
  keyof Addon,
  "name" | "options" | "load" | "configure" | "running" | "done"
>;

/** The payload type of hook `K`. */
export type HookPayload<K extends EventHookName> = NonNullable<Addon[K]> extends Hook<infer P, OptionDecls>
  ? P
  : never;

/** The HTTP hooks the layers call (in this order for one exchange; `error` instead when it fails). */
export const HTTP_HOOKS = ["requestheaders", "request", "responseheaders", "response", "error"] as const;

/** One of {@link HTTP_HOOKS}. */
export type HttpHookName = typeof HTTP_HOOKS[number];

/**
 * Identity at run time; at compile time it infers `D` from `options` so that hooks see
 * `ctx.options` with the declared types.
 */
export function defineAddon<const D extends OptionDecls = Record<never, OptionSpec>>(
  addon: Addon<D>,
): Addon<D> {
  return addon;
}

/** What an addon module may export: one addon (default export) or several (`addons`). */
export interface AddonModule {
  default?: Addon | Addon[];
  addons?: Addon[];
}
