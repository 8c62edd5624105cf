/**
 * `startProxy()`: the library entry that wires modes (WireGuard listeners, explicit-proxy TCP
 * listeners), the certificate authority, the connection driver and the UDP/DNS relay together,
 * and hands out the recorded flows.
 * @module
 */
import { CertificateAuthority } from "../certs/certificate_authority.ts";
import {
  listenWireGuard,
  type ListenWireGuardOptions,
  type WireGuardListener,
  type WireGuardPeerOptions,
} from "../net/wireguard_listener.ts";
import type { TunnelPeer } from "../net/tunnel_conn.ts";
import { openTun, type TunListener } from "../net/tun_listener.ts";
import { byteStreamOfConn } from "./byte_stream.ts";
import {
  handleConnection,
  handleProxyConnection,
  handleReverseConnection,
  type InterceptSettings,
  type ProxyContext,
  type ReverseTarget,
} from "./connection_handler.ts";
import {
  type ClientInfo,
  type Flow,
  FlowBus,
  type FlowPeer,
  formatHostPort,
  type HostPort,
  type HttpFlow,
  type LogEvent,
} from "../flows/flow.ts";
import { describeError } from "./layer_runner.ts";
import { BlockedDestinationError, DestinationPolicy } from "./destination_policy.ts";
import {
  ConnectionLimiter,
  DEFAULT_HEAD_TIMEOUT,
  DEFAULT_IDLE_TIMEOUT,
  DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
  defaultMaxConnections,
  type LimitStats,
  RateLimitedLog,
} from "./limits.ts";
import { parseResolvConf } from "./resolv_conf.ts";
import type { RequestHook, RequestVerdict, ResponseHook } from "./request_hook.ts";
import type { ServerReplay, ServerReplayStats } from "../flows/server_replay.ts";
import { ReplayError, replayRequest } from "./client_replay.ts";
import type { FlowStore } from "../flows/store.ts";
import type { Filter } from "../flows/filter.ts";
import { FlowRecorder, type FlowRecorderStats } from "../flows/recorder.ts";
import { newFlowId } from "../flows/flow_id.ts";
import { DEFAULT_SERVER_TIMEOUT } from "./http1_layer.ts";
import { Http2Counters, type Http2ProxyStats } from "./http2_layer.ts";
import { type QuicPolicy, UdpRelay, type UdpRelayStats } from "./udp_relay.ts";
import { udpPortUnreachable } from "../net/icmp.ts";
import { type CaMaterial, CERT_PAGE_ADDRESS, CERT_PAGE_HOST, certPageResponse } from "./cert_page.ts";
import { listenSocks5, type ModeDeps, type Socks5Mode } from "./socks5_mode.ts";
import { type DnsMode, listenDns } from "./dns_mode.ts";
import type { Addon } from "../addons/types.ts";
import { type AddonLog, AddonManager } from "../addons/manager.ts";
import { addonHooks, addonRunner, wireguardPeerNotices } from "../addons/wiring.ts";
export type { DnsMode, Socks5Mode };
import {
  connectThroughUpstream,
  describeUpstream,
  dialUpstreamProxy,
  parseUpstreamProxy,
  upstreamAuthHeaders,
  type UpstreamProxy,
} from "./upstream_proxy.ts";

/** A WireGuard mode: clients connect with WireGuard and everything they send is proxied. */
export interface WireGuardMode {
  kind: "wireguard";
  /** UDP address to listen on (default all interfaces). */
  hostname?: string;
  /** UDP port (0 picks one). */
  port: number;
  /** The server's private key (base64). */
  privateKey: string;
  /** Client peers allowed to connect. */
  peers: WireGuardPeerOptions[];
  /**
   * The data plane's own limits per peer (see {@link listenWireGuard}). The open-connection cap
   * per peer follows {@link ProxyOptions.maxConnectionsPerClient} unless given here.
   */
  limits?: WireGuardLimits;
}

/**
 * TUN mode (Linux, CAP_NET_ADMIN): what is routed into a TUN interface is intercepted like
 * WireGuard traffic, without WireGuard (see `openTun()`); route a network or a namespace into it.
 */
export interface TunMode {
  kind: "tun";
  /** The interface's name (default `wirescope0`). */
  name?: string;
  /** Its MTU (default 1500). */
  mtu?: number;
}

/** Limits of the WireGuard data plane that a mode may set. */
export type WireGuardLimits = Pick<
  ListenWireGuardOptions,
  | "bufferBudget"
  | "maxConnectionsPerPeer"
  | "maxHalfOpenPerPeer"
  | "halfOpenTimeoutSeconds"
  | "maxUdpConversationsPerPeer"
  | "udpTimeoutSeconds"
>;

/** Explicit proxy mode: clients send absolute-form requests and CONNECT to a TCP port. */
export interface RegularMode {
  kind: "regular";
  /** TCP address to listen on (default 127.0.0.1). */
  hostname?: string;
  /** TCP port (0 picks one). */
  port: number;
  /**
   * Accept clients from any address, not only loopback, RFC 1918, link-local and IPv6 ULA
   * ranges (see {@link isPrivateAddress}).
   */
  allowAnyClient?: boolean;
  /**
   * Upstream mode (`upstream:http[s]://HOST:PORT`): this mode's server connections go through
   * that HTTP proxy, whatever `upstreamProxy` says: plain-HTTP requests in absolute form, tunnels
   * with CONNECT (TLS is still intercepted); `https://` speaks TLS to the proxy.
   */
  upstream?: string;
}

/**
 * Reverse mode: every connection to a TCP port goes to one server (see
 * {@link handleReverseConnection}); TLS from clients is ended here.
 */
export interface ReverseMode {
  kind: "reverse";
  /** TCP address to listen on (default 127.0.0.1). */
  hostname?: string;
  /** TCP port (0 picks one). */
  port: number;
  /** The server, and whether HTTP is relayed (`http`, `https`) or bytes (`tcp`, `tls`). */
  target: ReverseTarget;
}

/** Options of {@link startProxy}. */
export interface ProxyOptions {
  modes: (WireGuardMode | RegularMode | ReverseMode | Socks5Mode | DnsMode | TunMode)[];
  /**
   * Credentials proxy clients must give, `--proxyauth`: SOCKS5 username/password (RFC 1929) and
   * the regular mode's `Proxy-Authorization: Basic` (else 407).
   */
  proxyAuth?: { username: string; password: string };
  /** Where the CA lives (default `~/.wirescope`). */
  confdir?: string;
  /** Hosts (regular expressions over the SNI or address) relayed without interception. */
  ignoreHosts?: (string | RegExp)[];
  /** When given, only matching hosts are intercepted. */
  allowHosts?: (string | RegExp)[];
  /** PEM files with extra roots trusted for upstream servers. */
  upstreamCa?: string[];
  /** Accept any upstream certificate. */
  insecure?: boolean;
  /** DNS resolvers for tunneled queries (default: the host's, from /etc/resolv.conf). */
  dnsServers?: HostPort[];
  /** Bytes of each body or message kept in a flow (default 1 MiB). */
  bodyLimit?: number;
  /** Completed flows buffered for `flows` readers (default 10,000; the oldest are dropped). */
  flowBuffer?: number;
  /** Receives log lines (default: warnings and errors to stderr). */
  onLog?: (event: LogEvent) => void;
  /**
   * Time a client has to send a complete HTTP request head, from the start of the connection or
   * the end of the previous response (ms; default 30 s; 0: no limit).
   */
  headTimeout?: number;
  /** Client connections without a byte either way for this long are closed (ms; default 10 min; 0: never). */
  idleTimeout?: number;
  /**
   * An HTTP server that neither sends a byte nor takes a request byte for this long while a
   * request waits on it fails the exchange: 504 before the response head, a reset after it
   * (ms; default 60 s; 0: no limit).
   */
  serverTimeout?: number;
  /**
   * Open connections allowed per client: a WireGuard peer, or an explicit-proxy client's address
   * (default 4096; 0: no cap). Beyond it new connections are refused (reset) and logged.
   */
  maxConnectionsPerClient?: number;
  /**
   * Open client connections allowed in total (default 16,384, or less so that two descriptors per
   * connection fit in half the open-file limit; 0: no cap).
   */
  maxConnections?: number;
  /**
   * HTTP/2 limits offered to clients: SETTINGS_MAX_CONCURRENT_STREAMS (default 100; more streams
   * are refused with REFUSED_STREAM) and SETTINGS_MAX_HEADER_LIST_SIZE (default 64 KiB; a larger
   * header list resets its stream).
   */
  http2?: Http2Limits;
  /**
   * Let clients reach this host's own services: loopback, link-local (169.254.169.254
   * included), multicast and broadcast, and the host's interface addresses. Off by default: such
   * destinations are refused (TCP: reset or 502, UDP: dropped) and recorded as flows.
   */
  allowLocalDestinations?: boolean;
  /**
   * QUIC (UDP to port 443 from a WireGuard client), which is not intercepted: `reject` (default)
   * answers it with ICMP port unreachable, so that clients fall back to HTTPS over TCP at once;
   * `passthrough` relays it uninspected. Both are recorded as UDP flows.
   */
  quic?: QuicPolicy;
  /**
   * Where flows are recorded as they progress (see src/flows/recorder.ts: live flows a few times
   * a second, ended ones in group commits every 25 ms). Absent or false: nothing is recorded.
   * The proxy flushes it on close but does not close it: the caller owns it.
   */
  store?: FlowStore | false;
  /** Only ended flows matching this filter expression are recorded (default: all). */
  storeFilter?: string | Filter;
  /**
   * Called for each HTTP/1 request once it is in, before its server is contacted: it may answer
   * it, kill it, or let it go on (see request_hook.ts). Runs after `serverReplay`, on its misses.
   */
  requestHook?: RequestHook;
  /**
   * Answers requests from a recording (see src/flows/server_replay.ts), over HTTP/1 and HTTP/2
   * alike (the request hook runs per stream in the HTTP/2 layers).
   */
  serverReplay?: ServerReplay;
  /**
   * Addons (see src/addons/types.ts): objects, or a loaded {@link AddonManager} (the CLI's, with
   * `-s` files). Their `load`/`configure` run before the proxy listens, `running` once it does,
   * `done` at close. HTTP hooks run after server replay and `requestHook`.
   */
  addons?: Addon[] | AddonManager;
  /** `name=value` settings of the addons' options (as `--set`); unknown names are an error. */
  addonOptions?: string[];
  /**
   * Sends the server side of every mode (WireGuard included) through this proxy:
   * `http://[USER:PASS@]HOST:PORT` (HTTP CONNECT) or `socks5://[USER:PASS@]HOST:PORT` (SOCKS5
   * CONNECT). UDP other than DNS to the resolvers is refused and recorded (no UDP ASSOCIATE yet).
   * The destination policy still applies to the real destination.
   */
  upstreamProxy?: string;
  /** `USER:PASS` for `upstreamProxy` (overrides credentials in its URL). */
  upstreamAuth?: string;
}

/** Counters of a running proxy. */
export interface ProxyStats {
  /** Client connections accepted so far. */
  connections: number;
  /** Client connections open now. */
  activeConnections: number;
  udp: UdpRelayStats;
  /** Refusals by the connection caps and closings by the head and idle timeouts. */
  limits: LimitStats;
  /** Connections and UDP conversations refused because their destination is on this host. */
  blockedDestinations: number;
  /** Errors of the explicit-proxy TCP listeners' accept calls (e.g. out of descriptors), retried. */
  acceptErrors: number;
  /** HTTP/2 relays: streams, resets, GOAWAYs sent by reason, floods cut off, for each side. */
  http2: Http2ProxyStats;
  /** The recorder's counters, when a store is given. */
  store?: FlowRecorderStats;
  /** Server replay's hits and misses, when it is on. */
  serverReplay?: ServerReplayStats;
}

/** Where a mode listens. */
export interface ModeAddress {
  kind: "wireguard" | "regular" | "reverse" | "socks5" | "dns";
  /** The UDP (WireGuard) or TCP (regular) address. */
  addr: Deno.NetAddr;
}

/** A running proxy. */
export interface ProxyHandle {
  /** Completed flows, from the moment of iteration on (each iteration is its own subscription). */
  readonly flows: AsyncIterable<Flow>;
  /** Every flow event and log line, for consumers that need more than completed flows. */
  readonly bus: FlowBus;
  readonly ca: CertificateAuthority;
  readonly addresses: ModeAddress[];
  /** The WireGuard listeners (one per WireGuard mode), e.g. to add peers at run time. */
  readonly wireguard: WireGuardListener[];
  /** The TUN data planes (one per tun mode), e.g. for their `stats()`. */
  readonly tun: TunListener[];
  /** The flow store given in the options (query it with `store.query({ filter })`). */
  readonly store?: FlowStore;
  /** What writes flows to the store; `onCommit` tells when ended flows are in it. */
  readonly recorder?: FlowRecorder;
  /**
   * Makes an address unreachable through the proxy even with `allowLocalDestinations` (the web
   * UI's listening address; an unspecified host stands for every local address on the port).
   * Returns a function that lifts it.
   */
  protectDestination(address: HostPort): () => void;
  /** Counters. */
  stats(): ProxyStats;
  /**
   * Sends a recorded HTTP request again (client replay; see client_replay.ts): a flow, or the id
   * of a flow in `store`. Resolves with the new flow (`replayOf` names the original) once it ended.
   */
  replay(flow: string | HttpFlow): Promise<HttpFlow>;
  /** Stops accepting, cuts open connections after `grace` ms (default 2000), and resolves when done. */
  close(grace?: number): Promise<void>;
  readonly closed: Promise<void>;
}

/** HTTP/2 limits offered to clients ({@link ProxyOptions.http2}). */
export interface Http2Limits {
  maxConcurrentStreams?: number;
  maxHeaderListSize?: number;
}

/** {@link ProxyOptions.http2}, checked: each limit is a whole number from 1 to 2^31-1. */
function http2Limits(o: Http2Limits): Http2Limits {
  const out: Http2Limits = {};
  for (const key of ["maxConcurrentStreams", "maxHeaderListSize"] as const) {
    const v = o[key];
    if (v === undefined) continue;
    if (!Number.isInteger(v) || v < 1 || v > 2 ** 31 - 1) {
      throw new RangeError(`http2.${key}: ${v} is not a whole number from 1 to 2^31-1`);
    }
    out[key] = v;
  }
  return out;
}

/** TCP connections one WireGuard core holds at most (its default too). */
const CORE_MAX_CONNECTIONS = 8192;

/** Starts the proxy with the given modes. */
export async function startProxy(options: ProxyOptions): Promise<ProxyHandle> {
  const confdir = options.confdir ?? defaultConfdir();
  const ca = await CertificateAuthority.load(confdir);
  const upstreamCaPems: string[] = [];
  for (const file of options.upstreamCa ?? []) {
    try {
      upstreamCaPems.push(await Deno.readTextFile(file));
    } catch (e) {
      throw new Error(`cannot read upstream CA file ${file}: ${describeError(e)}`);
    }
  }
  const settings: InterceptSettings = {
    ignoreHosts: (options.ignoreHosts ?? []).map(toRegExp),
    allowHosts: (options.allowHosts ?? []).map(toRegExp),
    upstreamCaPems,
    insecure: options.insecure ?? false,
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    maxMessages: 1000,
    firstBytesTimeout: 1500,
    connectTimeout: 10_000,
    serverTimeout: nonNegative(options.serverTimeout ?? DEFAULT_SERVER_TIMEOUT, "serverTimeout"),
  };
  const bus = new FlowBus();
  const addons = await addonsOf(options, (level, message) => bus.log(level, message));
  bus.onLog(
    options.onLog ?? ((e) => {
      if (e.level === "warn" || e.level === "error") console.error(`wirescope: ${e.message}`);
    }),
  );
  const store = options.store || undefined;
  const recorder = store === undefined ? undefined : new FlowRecorder(store, {
    ...(options.storeFilter !== undefined ? { filter: options.storeFilter } : {}),
    onLog: (level, message) => bus.log(level, message),
  });
  if (recorder) bus.subscribe((event) => recorder.handle(event));
  const caMaterial: CaMaterial = {
    pem: ca.certPem,
    der: ca.certDer,
    p12: await Deno.readFile(ca.paths.p12),
    fingerprintSha256: ca.fingerprintSha256,
  };
  const dnsServers = options.dnsServers ?? await hostResolvers();
  if (dnsServers.length === 0) {
    bus.log("info", "no DNS resolvers configured: DNS queries go where clients send them");
  }
  const policy = new DestinationPolicy({
    allowLocal: options.allowLocalDestinations ?? false,
    // The resolvers are the proxy's own choice (often 127.0.0.53): DNS over TCP goes there.
    exempt: dnsServers,
    hint:
      "this host's own services are not reachable through the proxy; --allow-local-destinations allows them",
    warn: (message) => bus.log("warn", message),
  });
  const limiter = new ConnectionLimiter({
    headTimeout: nonNegative(options.headTimeout ?? DEFAULT_HEAD_TIMEOUT, "headTimeout"),
    idleTimeout: nonNegative(options.idleTimeout ?? DEFAULT_IDLE_TIMEOUT, "idleTimeout"),
    maxConnectionsPerClient: nonNegative(
      options.maxConnectionsPerClient ?? DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
      "maxConnectionsPerClient",
    ),
    maxConnections: nonNegative(options.maxConnections ?? defaultMaxConnections(), "maxConnections"),
  }, (level, message) => bus.log(level, message));
  const upstream = options.upstreamProxy !== undefined
    ? { ...parseUpstreamProxy(options.upstreamProxy, options.upstreamAuth), caCerts: upstreamCaPems }
    : undefined;
  const ctx: ProxyContext = {
    settings,
    bus,
    certs: ca,
    connect: upstream
      ? connectUpstream(upstream, settings.connectTimeout, policy)
      : connectTcp(settings.connectTimeout, policy),
    // Time-ordered (UUID v7): the store's id index takes them on its last page (src/flows/flow_id.ts).
    newId: () => newFlowId(),
    localResponder: (method, host, path) =>
      host.toLowerCase() === CERT_PAGE_HOST ? certPageResponse(caMaterial, method, path) : null,
    headTimeout: (client) => limiter.headTimeout(describeClient(client)),
    ...requestHookOf(options, addonHooksOf(addons)),
    ...(addonRunner(addons) ? { addons: addonRunner(addons)! } : {}),
    ...(addons ? responseHooksOf(addons) : {}),
    http2Counters: new Http2Counters(),
    ...(options.http2 ? { http2ClientSide: http2Limits(options.http2) } : {}),
    ...(options.proxyAuth ? { proxyAuthorization: `Basic ${btoa(proxyAuthText(options.proxyAuth))}` } : {}),
    ...(upstream?.scheme === "http"
      ? { httpUpstream: httpUpstreamOf(upstream, settings.connectTimeout, policy) }
      : {}),
  };
  // The first leaf also makes the shared leaf key: do it now rather than in a client's handshake.
  await ca.leafFor({ sni: CERT_PAGE_HOST });

  const tasks = new Set<Promise<void>>();
  const open = new Set<{ close(): void }>();
  let connections = 0;
  let acceptErrors = 0;
  let stopping = false;
  const acceptLog = new RateLimitedLog((level, message) => bus.log(level, message));
  const track = (p: Promise<void>) => {
    tasks.add(p);
    p.finally(() => tasks.delete(p));
  };

  const addresses: ModeAddress[] = [];
  const wireguard: WireGuardListener[] = [];
  /** The data planes of the WireGuard and TUN modes (closed after the grace period). */
  const planes: (WireGuardListener | TunListener)[] = [];
  const tuns: TunListener[] = [];
  const tcpListeners: Deno.TcpListener[] = [];
  const relays: UdpRelay[] = [];
  const endedUdp: UdpRelayStats = {
    flows: 0,
    dnsQueries: 0,
    dnsFailures: 0,
    dropped: 0,
    blocked: 0,
    quicRejected: 0,
  };
  let current: ProxyOptions["modes"][number] | null = null;
  const modeListeners: { close(): void }[] = [];
  const modeDeps: ModeDeps = {
    ctx,
    policy,
    admit: (key, client) => limiter.admit(key, describeClient(client)),
    clientAllowed: isPrivateAddress,
    // Every mode's relay counts in stats().udp; one that closes (a SOCKS5 association's) leaves
    // its counters in `endedUdp`.
    newRelay: (reply, maxFlows, resolvers) => {
      const relay = new UdpRelay({
        bus,
        dnsServers: resolvers ?? dnsServers,
        reply,
        newId: ctx.newId,
        localNames: new Map([[CERT_PAGE_HOST, CERT_PAGE_ADDRESS]]),
        bodyLimit: settings.bodyLimit,
        maxMessages: settings.maxMessages,
        destinationPolicy: policy,
        quic: options.quic ?? "reject",
        maxFlows,
        ...(ctx.addons ? { addons: ctx.addons } : {}),
      });
      relays.push(relay);
      const close = relay.close.bind(relay);
      relay.close = () => {
        const i = relays.indexOf(relay);
        close();
        if (i < 0) return;
        relays.splice(i, 1);
        // `flows` is the live ones (none once closed); the others are counters.
        const s = relay.stats();
        for (const k of Object.keys(endedUdp) as (keyof UdpRelayStats)[]) {
          if (k !== "flows") endedUdp[k] += s[k];
        }
      };
      return relay;
    },
    track,
    count: (what) => what === "connection" ? connections++ : acceptErrors++,
    stopping: () => stopping,
    open,
    handshakeTimeout: limiter.limits.headTimeout,
    ...(options.proxyAuth ? { credentials: options.proxyAuth } : {}),
  };
  try {
    for (const mode of options.modes) {
      current = mode;
      if (mode.kind === "wireguard" || mode.kind === "tun") {
        const listener = mode.kind === "tun"
          ? openTun({
            ...(mode.name !== undefined ? { name: mode.name } : {}),
            ...(mode.mtu !== undefined ? { mtu: mode.mtu } : {}),
            maxConnections: CORE_MAX_CONNECTIONS,
            onLog: (level, message) => bus.log(level, message),
          })
          : listenWireGuard({
            hostname: mode.hostname ?? "0.0.0.0",
            port: mode.port,
            privateKey: mode.privateKey,
            peers: mode.peers,
            // One cap per client: the proxy's per-client cap also bounds what the core holds per peer
            // (no proxy cap: the core's total cap is the only one).
            maxConnectionsPerPeer: limiter.limits.maxConnectionsPerClient || CORE_MAX_CONNECTIONS,
            maxConnections: CORE_MAX_CONNECTIONS,
            ...mode.limits,
            onLog: (level, message) => bus.log(level, message),
          });
        planes.push(listener);
        if (mode.kind === "tun") tuns.push(listener as TunListener);
        else {
          await (listener as WireGuardListener).ready;
          (listener as WireGuardListener).onPeerEvent = wireguardPeerNotices(ctx.addons);
          wireguard.push(listener as WireGuardListener);
          addresses.push({ kind: "wireguard", addr: (listener as WireGuardListener).addr });
        }
        // A TUN device's clients are its source addresses; a WireGuard client is its peer.
        const clientOf = (address: HostPort, peer: TunnelPeer): ClientInfo =>
          mode.kind === "tun"
            ? { address, mode: "tun" }
            : { address, mode: "wireguard", peer: flowPeer(peer) };
        const relay = new UdpRelay({
          bus,
          dnsServers,
          reply: (d) => listener.sendDatagram({ data: d.data, src: netAddr(d.src), dst: netAddr(d.dst) }),
          newId: ctx.newId,
          localNames: new Map([[CERT_PAGE_HOST, CERT_PAGE_ADDRESS]]),
          bodyLimit: settings.bodyLimit,
          maxMessages: settings.maxMessages,
          destinationPolicy: upstream
            ? udpRefusedUpstream(policy, upstream, options.quic ?? "reject")
            : policy,
          quic: options.quic ?? "reject",
          unreachable: (d) => listener.sendPacket(udpPortUnreachable(d)),
          ...(ctx.addons ? { addons: ctx.addons } : {}),
        });
        relays.push(relay);
        track((async () => {
          for await (const conn of listener) {
            const client = clientOf(hostPort(conn.remoteAddr), conn.peer);
            const stream = byteStreamOfConn(conn);
            const key = mode.kind === "tun"
              ? `address ${conn.remoteAddr.hostname}`
              : `peer ${conn.peer.publicKey}`;
            const admission = limiter.admit(key, describeClient(client));
            if (!admission) {
              stream.close(true);
              continue;
            }
            connections++;
            const what = `${formatHostPort(client.address)} -> ${formatHostPort(hostPort(conn.localAddr))}`;
            bus.log(
              "info",
              `connection ${what} (${mode.kind === "tun" ? "tun" : `peer ${conn.peer.publicKey}`})`,
            );
            open.add(conn);
            track(
              handleConnection(ctx, {
                stream: admission.guard(stream),
                client,
                destination: dnsOverTcp(hostPort(conn.localAddr), dnsServers),
              })
                .finally(() => {
                  admission.release();
                  open.delete(conn);
                  bus.log("info", `connection ${what} closed`);
                }),
            );
          }
        })());
        track(
          (async () => {
            for await (const d of listener.datagrams) {
              relay.handle(
                { data: d.data, src: hostPort(d.src), dst: hostPort(d.dst) },
                clientOf(hostPort(d.src), d.peer),
              );
            }
          })().catch(() => {}),
        );
      } else if (mode.kind === "socks5") {
        const { listener, loop } = listenSocks5(modeDeps, mode);
        modeListeners.push(listener);
        addresses.push({ kind: "socks5", addr: listener.addr });
        track(loop.catch((e) => bus.log("error", `the SOCKS5 accept loop stopped: ${describeError(e)}`)));
      } else if (mode.kind === "dns") {
        const relay = modeDeps.newRelay(() => Promise.resolve(), 0, mode.resolvers);
        const server = listenDns(modeDeps, mode, relay, mode.resolvers ?? dnsServers);
        modeListeners.push(server);
        addresses.push({ kind: "dns", addr: server.addr });
        for (const loop of server.loops) {
          track(loop.catch((e) => bus.log("error", `a DNS mode loop stopped: ${describeError(e)}`)));
        }
      } else {
        const listener = Deno.listen({
          hostname: mode.hostname ?? "127.0.0.1",
          port: mode.port,
          transport: "tcp",
        });
        tcpListeners.push(listener);
        addresses.push({ kind: mode.kind, addr: listener.addr });
        // Upstream mode: this listener's server connections go through the mode's HTTP proxy.
        const modeUpstream = mode.kind === "regular" && mode.upstream !== undefined
          ? { ...parseUpstreamProxy(mode.upstream), caCerts: upstreamCaPems }
          : undefined;
        const modeCtx: ProxyContext = modeUpstream
          ? {
            ...ctx,
            connect: connectUpstream(modeUpstream, settings.connectTimeout, policy),
            httpUpstream: httpUpstreamOf(modeUpstream, settings.connectTimeout, policy),
          }
          : ctx;
        const where = `TCP ${formatHostPort(hostPort(listener.addr))}`;
        track(
          (async () => {
            // Accept errors (EMFILE when descriptors run out, ENFILE, ENOBUFS...) are logged and
            // retried with a growing pause: a listener that gave up on the first one stayed
            // open but never accepted again.
            let pause = 0;
            for (;;) {
              let conn: Deno.TcpConn;
              try {
                conn = await listener.accept();
                pause = 0;
                // Heads and bodies go out as separate writes: with Nagle on, the second waited for
                // the client's delayed ACK (~40 ms per keep-alive request).
                conn.setNoDelay(true);
              } catch (e) {
                if (
                  stopping || e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted
                ) {
                  return;
                }
                acceptErrors++;
                pause = Math.min(Math.max(pause * 2, 10), 1000);
                acceptLog.line(
                  "accept",
                  "error",
                  `cannot accept connections on ${where}: ${
                    describeError(e)
                  }; retrying (next in ${pause} ms)`,
                );
                await new Promise((r) => setTimeout(r, pause));
                if (stopping) return;
                continue;
              }
              const remote = conn.remoteAddr;
              // A reverse listener reaches one fixed server: not an open relay.
              if (mode.kind === "regular" && !mode.allowAnyClient && !isPrivateAddress(remote.hostname)) {
                acceptLog.line(
                  "not-private",
                  "warn",
                  `refused a proxy client from ${
                    formatHostPort(hostPort(remote))
                  } (not a local or private address)`,
                );
                conn.close();
                continue;
              }
              const client: ClientInfo = { address: hostPort(remote), mode: mode.kind };
              const admission = limiter.admit(`address ${remote.hostname}`, describeClient(client));
              if (!admission) {
                conn.close();
                continue;
              }
              connections++;
              open.add(conn);
              bus.log("info", `proxy client ${formatHostPort(client.address)} connected`);
              track(
                (mode.kind === "reverse"
                  ? handleReverseConnection(ctx, admission.guard(byteStreamOfConn(conn)), client, mode.target)
                  : handleProxyConnection(modeCtx, admission.guard(byteStreamOfConn(conn)), client)).finally(
                    () => {
                      admission.release();
                      open.delete(conn);
                      bus.log("info", `proxy client ${formatHostPort(client.address)} disconnected`);
                    },
                  ),
              );
            }
          })().catch((e) => bus.log("error", `the accept loop on ${where} stopped: ${describeError(e)}`)),
        );
      }
    }
  } catch (e) {
    stopping = true;
    limiter.close();
    for (const l of planes) l.close();
    for (const l of tcpListeners) l.close();
    for (const l of modeListeners) l.close();
    for (const r of [...relays]) r.close();
    if (!current) throw e;
    if (current.kind === "tun") {
      throw new Error(`cannot open TUN interface ${current.name ?? "wirescope0"}: ${describeError(e)}`, {
        cause: e,
      });
    }
    const where = current.kind === "wireguard"
      ? `UDP ${
        formatHostPort({ hostname: current.hostname ?? "0.0.0.0", port: current.port })
      } (wireguard mode)`
      : `TCP ${
        formatHostPort({ hostname: current.hostname ?? "127.0.0.1", port: current.port })
      } (${current.kind} mode)`;
    const reason = e instanceof Deno.errors.AddrInUse ? "the address is already in use" : describeError(e);
    throw new Error(`cannot listen on ${where}: ${reason}`, { cause: e });
  }

  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  let closing: Promise<void> | null = null;
  const close = (grace = 2000): Promise<void> => {
    closing ??= (async () => {
      stopping = true;
      for (const l of [...tcpListeners, ...modeListeners]) {
        try {
          l.close();
        } catch { /* closed */ }
      }
      const pending = Promise.allSettled([...tasks]);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), grace)));
      // WireGuard listeners stay up during the grace period so tunneled connections can finish.
      const first = await Promise.race([
        Promise.allSettled([...tasks].filter((t) => !isAcceptLoop(t))),
        timedOut,
      ]);
      if (first === "timeout") { for (const c of open) c.close(); }
      clearTimeout(timer);
      for (const r of [...relays]) r.close();
      for (const l of planes) l.close();
      await Promise.race([pending, new Promise((r) => setTimeout(r, 1000))]);
      await Promise.all(planes.map((l) => l.closed));
      limiter.close();
      recorder?.close();
      await recorder?.settled();
      await addons?.done();
      resolveClosed();
    })();
    return closing;
  };
  const acceptLoops = new Set(tasks);
  const isAcceptLoop = (t: Promise<void>) => acceptLoops.has(t);

  await addons?.running();
  const flowBuffer = options.flowBuffer ?? 10_000;
  const flows: AsyncIterable<Flow> = {
    [Symbol.asyncIterator](): AsyncIterator<Flow> {
      const queue: Flow[] = [];
      let wake: (() => void) | null = null;
      let done = false;
      const unsubscribe = bus.subscribe((event) => {
        if (event.type !== "end") return;
        queue.push(event.flow);
        if (queue.length > flowBuffer) queue.shift();
        wake?.();
      });
      closed.then(() => {
        done = true;
        wake?.();
      });
      return {
        async next(): Promise<IteratorResult<Flow>> {
          for (;;) {
            const flow = queue.shift();
            if (flow) return { value: flow, done: false };
            if (done) {
              unsubscribe();
              return { value: undefined, done: true };
            }
            await new Promise<void>((r) => (wake = r));
            wake = null;
          }
        },
        return(): Promise<IteratorResult<Flow>> {
          unsubscribe();
          done = true;
          return Promise.resolve({ value: undefined, done: true });
        },
      };
    },
  };

  return {
    flows,
    bus,
    ca,
    addresses,
    wireguard,
    tun: tuns,
    stats: () => ({
      connections,
      activeConnections: open.size,
      udp: relays.reduce(
        (sum, r) => {
          const s = r.stats();
          return {
            flows: sum.flows + s.flows,
            dnsQueries: sum.dnsQueries + s.dnsQueries,
            dnsFailures: sum.dnsFailures + s.dnsFailures,
            dropped: sum.dropped + s.dropped,
            blocked: sum.blocked + s.blocked,
            quicRejected: sum.quicRejected + s.quicRejected,
          };
        },
        { ...endedUdp },
      ),
      limits: limiter.stats(),
      blockedDestinations: policy.blocked,
      acceptErrors,
      http2: ctx.http2Counters!.snapshot(),
      ...(recorder ? { store: recorder.stats() } : {}),
      ...(options.serverReplay ? { serverReplay: options.serverReplay.stats() } : {}),
    }),
    replay: async (flow) => {
      let original: Flow | undefined = typeof flow === "string" ? undefined : flow;
      if (typeof flow === "string") {
        if (!store) throw new ReplayError(`cannot replay flow ${flow}: the proxy has no flow store`);
        original = (await store.get(flow))?.flow;
        if (!original) throw new ReplayError(`cannot replay flow ${flow}: no such flow in the store`);
      }
      if (original!.type !== "http") throw new ReplayError(`flow ${original!.id} is not an HTTP flow`);
      return replayRequest(ctx, original as HttpFlow);
    },
    ...(store ? { store } : {}),
    ...(recorder ? { recorder } : {}),
    protectDestination: (address) => policy.protect(address),
    close,
    closed,
  };
}

/** The addon manager of the options, loaded and started (`load`, `configure`); none without addons. */
async function addonsOf(options: ProxyOptions, log: AddonLog): Promise<AddonManager | undefined> {
  const given = options.addons;
  if (given === undefined) return undefined;
  let manager: AddonManager;
  if (given instanceof AddonManager) {
    manager = given;
  } else {
    manager = new AddonManager({ log });
    manager.add(given);
  }
  if (options.addonOptions) manager.set(options.addonOptions);
  manager.checkOptions();
  await manager.start();
  return manager;
}

/** The addons' hooks (none without addons). */
function addonHooksOf(addons: AddonManager | undefined): ReturnType<typeof addonHooks> {
  return addons ? addonHooks(addons) : {};
}

/** The response hook and flow-end notice of the addons. */
function responseHooksOf(
  addons: AddonManager,
): { responseHook?: ResponseHook; flowEnded?: (flow: Flow) => void } {
  const { responseHook, flowEnded } = addonHooks(addons);
  return { ...(responseHook ? { responseHook } : {}), ...(flowEnded ? { flowEnded } : {}) };
}

/**
 * The request hook of the options: server replay first, then the caller's hook on its misses,
 * then the addons.
 */
function requestHookOf(options: ProxyOptions, fromAddons: { requestHook?: RequestHook } = {}): {
  requestHook?: RequestHook;
} {
  const replay = options.serverReplay;
  const user = chain(options.requestHook, fromAddons.requestHook);
  if (!replay) return user ? { requestHook: user } : {};
  if (!user) return { requestHook: replay.hook };
  return {
    requestHook: async (flow): Promise<RequestVerdict> => (await replay.hook(flow)) ?? await user(flow),
  };
}

/** Two request hooks one after the other: the second runs when the first lets the request go on. */
function chain(a: RequestHook | undefined, b: RequestHook | undefined): RequestHook | undefined {
  if (!a || !b) return a ?? b;
  return async (flow): Promise<RequestVerdict> => (await a(flow)) ?? await b(flow);
}

/**
 * DNS over TCP (what resolvers fall back to after a truncated UDP answer) goes where tunneled
 * UDP queries go: to the first configured resolver. Anything else keeps its destination.
 */
function dnsOverTcp(destination: HostPort, dnsServers: HostPort[]): HostPort {
  return destination.port === 53 && dnsServers[0] ? dnsServers[0] : destination;
}

/** `~/.wirescope`. */
export function defaultConfdir(): string {
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE") ?? ".";
  return `${home}/.wirescope`;
}

async function hostResolvers(): Promise<HostPort[]> {
  try {
    return parseResolvConf(await Deno.readTextFile("/etc/resolv.conf"));
  } catch {
    return [];
  }
}

/**
 * Every TCP connection the proxy makes goes through here: the destination is checked (names
 * resolved first) and only addresses the policy allows are dialed, in order, within `timeout`.
 */
function connectTcp(timeout: number, policy: DestinationPolicy) {
  return async (address: HostPort) => {
    const deadline = Date.now() + timeout;
    const timedOut = () =>
      new Error(`connection to ${formatHostPort(address)} timed out after ${timeout} ms`);
    const targets = await withDeadline(policy.resolve(address), deadline, timedOut, () => {});
    let failure: unknown = null;
    for (const target of targets) {
      if (Date.now() >= deadline) break;
      const attempt = Deno.connect({ hostname: target.hostname, port: target.port, transport: "tcp" });
      try {
        const conn = await withDeadline(attempt, deadline, timedOut, (c) => c.close());
        conn.setNoDelay(true);
        return { stream: byteStreamOfConn(conn), remote: hostPort(conn.remoteAddr) };
      } catch (e) {
        failure = e;
      }
    }
    throw failure ?? timedOut();
  };
}

/**
 * Connections through an upstream proxy: the real destination is checked first (a name that
 * resolves here to a refused address is refused; one that does not resolve here is left to the
 * upstream), then the upstream, which the user configured, is dialed.
 */
function connectUpstream(upstream: UpstreamProxy, timeout: number, policy: DestinationPolicy) {
  return async (address: HostPort) => {
    try {
      await policy.resolve(address);
    } catch (e) {
      if (e instanceof BlockedDestinationError) throw e;
    }
    return await connectThroughUpstream(upstream, address, timeout);
  };
}

/**
 * Plain-HTTP requests of explicit-proxy clients through an upstream HTTP proxy: sent to it in
 * absolute form (as mitmproxy's upstream mode does; proxies commonly refuse CONNECT to port 80).
 * The real destination is checked as in {@link connectUpstream}.
 */
function httpUpstreamOf(
  upstream: UpstreamProxy,
  timeout: number,
  policy: DestinationPolicy,
): NonNullable<ProxyContext["httpUpstream"]> {
  return {
    headers: upstreamAuthHeaders(upstream),
    open: async (address: HostPort) => {
      try {
        await policy.resolve(address);
      } catch (e) {
        if (e instanceof BlockedDestinationError) throw e;
      }
      return await dialUpstreamProxy(upstream, address, timeout);
    },
  };
}

/** The relay's policy with an upstream proxy: UDP (other than DNS to the resolvers) is refused. */
function udpRefusedUpstream(policy: DestinationPolicy, upstream: UpstreamProxy, quic: QuicPolicy) {
  return {
    blockReason: (ip: string, port?: number): string | null => {
      const local = policy.blockReason(ip, port);
      // Refused QUIC keeps its ICMP answer (clients fall back to TCP at once).
      if (local !== null || (port === 443 && quic === "reject")) return local;
      return `UDP cannot go through the upstream proxy ${describeUpstream(upstream)} (${
        upstream.scheme === "http"
          ? "an HTTP proxy carries TCP only"
          : "SOCKS5 UDP ASSOCIATE is not supported"
      })`;
    },
  };
}

/** `promise`, or `error()` at `deadline` (a late result is handed to `discard`). */
async function withDeadline<T>(
  promise: Promise<T>,
  deadline: number,
  error: () => Error,
  discard: (late: T) => void,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const result = await Promise.race([
    promise.then((value) => ({ value })),
    new Promise<"timeout">((
      r,
    ) => (timer = setTimeout(() => r("timeout"), Math.max(0, deadline - Date.now())))),
  ]).finally(() => clearTimeout(timer));
  if (result === "timeout") {
    promise.then(discard, () => {});
    throw error();
  }
  return result.value;
}

/** How a client is named in log lines: its address, and its peer's key in WireGuard mode. */
function describeClient(client: ClientInfo): string {
  const address = formatHostPort(client.address);
  return client.peer ? `peer ${client.peer.publicKey.slice(0, 8)}… (${address})` : address;
}

function nonNegative(value: number, name: string): number {
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a number ≥ 0, not ${value}`);
  return value;
}

function toRegExp(pattern: string | RegExp): RegExp {
  return typeof pattern === "string" ? new RegExp(pattern, "i") : pattern;
}

function hostPort(addr: Deno.Addr): HostPort {
  const a = addr as Deno.NetAddr;
  return { hostname: a.hostname, port: a.port };
}

function netAddr(a: HostPort): Deno.NetAddr {
  return { transport: "udp", hostname: a.hostname, port: a.port };
}

function flowPeer(peer: TunnelPeer): FlowPeer {
  const p: FlowPeer = { publicKey: peer.publicKey };
  if (peer.endpoint) p.endpoint = formatHostPort(hostPort(peer.endpoint));
  return p;
}

/**
 * Loopback, RFC 1918, link-local, and IPv6 ULA/link-local addresses: the clients the explicit
 * proxy admits by default. Carrier-grade NAT (100.64.0.0/10) is not among them: other customers
 * of the same carrier share that range.
 */
export function isPrivateAddress(ip: string): boolean {
  const v4 = ip.startsWith("::ffff:") ? ip.slice(7) : ip;
  const m = /^(\d+)\.(\d+)\.\d+\.\d+$/.exec(v4);
  if (m) {
    const a = Number(m[1]), b = Number(m[2]);
    return a === 127 || a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) ||
      (a === 169 && b === 254);
  }
  const lower = ip.toLowerCase();
  return lower === "::1" || /^f[cd]/.test(lower) || /^fe[89ab]/.test(lower);
}

/** `user:pass` as UTF-8 bytes in a binary string, for `btoa`. */
function proxyAuthText(auth: { username: string; password: string }): string {
  return String.fromCharCode(...new TextEncoder().encode(`${auth.username}:${auth.password}`));
}
