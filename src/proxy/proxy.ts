/**
 * `startProxy()`: the library entry that wires modes (WireGuard listeners, explicit-proxy TCP
 * listeners), the certificate authority, the connection driver and the UDP/DNS relay together,
 * and hands out the recorded flows.
 * @module
 */
import { CertificateAuthority } from "../certs/certificate_authority.ts";
import {
  listenWireGuard,
  type WireGuardListener,
  type WireGuardPeerOptions,
} from "../net/wireguard_listener.ts";
import type { TunnelPeer } from "../net/tunnel_conn.ts";
import { byteStreamOfConn } from "./byte_stream.ts";
import {
  handleConnection,
  handleProxyConnection,
  type InterceptSettings,
  type ProxyContext,
} from "./connection_handler.ts";
import {
  type ClientInfo,
  type Flow,
  FlowBus,
  type FlowPeer,
  formatHostPort,
  type HostPort,
  type LogEvent,
} from "./flow.ts";
import { describeError } from "./layer_runner.ts";
import { parseResolvConf } from "./resolv_conf.ts";
import { UdpRelay, type UdpRelayStats } from "./udp_relay.ts";
import { type CaMaterial, CERT_PAGE_ADDRESS, CERT_PAGE_HOST, certPageResponse } from "./cert_page.ts";

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
}

/** Explicit proxy mode: clients send absolute-form requests and CONNECT to a TCP port. */
export interface RegularMode {
  kind: "regular";
  /** TCP address to listen on (default 127.0.0.1). */
  hostname?: string;
  /** TCP port (0 picks one). */
  port: number;
  /** Accept clients from any address, not only loopback and private ranges. */
  allowAnyClient?: boolean;
}

/** Options of {@link startProxy}. */
export interface ProxyOptions {
  modes: (WireGuardMode | RegularMode)[];
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
}

/** Where a mode listens. */
export interface ModeAddress {
  kind: "wireguard" | "regular";
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
  /** Counters. */
  stats(): { connections: number; activeConnections: number; udp: UdpRelayStats };
  /** Stops accepting, cuts open connections after `grace` ms (default 2000), and resolves when done. */
  close(grace?: number): Promise<void>;
  readonly closed: Promise<void>;
}

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
  };
  const bus = new FlowBus();
  bus.onLog(
    options.onLog ?? ((e) => {
      if (e.level === "warn" || e.level === "error") console.error(`wirescope: ${e.message}`);
    }),
  );
  const caMaterial: CaMaterial = {
    pem: ca.certPem,
    der: ca.certDer,
    p12: await Deno.readFile(ca.paths.p12),
    fingerprintSha256: ca.fingerprintSha256,
  };
  const ctx: ProxyContext = {
    settings,
    bus,
    certs: ca,
    connect: connectTcp(settings.connectTimeout),
    newId: () => crypto.randomUUID(),
    localResponder: (method, host, path) =>
      host.toLowerCase() === CERT_PAGE_HOST ? certPageResponse(caMaterial, method, path) : null,
  };
  // The first leaf also makes the shared leaf key: do it now rather than in a client's handshake.
  await ca.leafFor({ sni: CERT_PAGE_HOST });
  const dnsServers = options.dnsServers ?? await hostResolvers();
  if (dnsServers.length === 0) {
    bus.log("info", "no DNS resolvers configured: DNS queries go where clients send them");
  }

  const tasks = new Set<Promise<void>>();
  const open = new Set<{ close(): void }>();
  let connections = 0;
  const track = (p: Promise<void>) => {
    tasks.add(p);
    p.finally(() => tasks.delete(p));
  };

  const addresses: ModeAddress[] = [];
  const wireguard: WireGuardListener[] = [];
  const tcpListeners: Deno.TcpListener[] = [];
  const relays: UdpRelay[] = [];
  let current: WireGuardMode | RegularMode | null = null;
  try {
    for (const mode of options.modes) {
      current = mode;
      if (mode.kind === "wireguard") {
        const listener = listenWireGuard({
          hostname: mode.hostname ?? "0.0.0.0",
          port: mode.port,
          privateKey: mode.privateKey,
          peers: mode.peers,
          onLog: (level, message) => bus.log(level, message),
        });
        await listener.ready;
        wireguard.push(listener);
        addresses.push({ kind: "wireguard", addr: listener.addr });
        const relay = new UdpRelay({
          bus,
          dnsServers,
          reply: (d) => listener.sendDatagram({ data: d.data, src: netAddr(d.src), dst: netAddr(d.dst) }),
          newId: ctx.newId,
          localNames: new Map([[CERT_PAGE_HOST, CERT_PAGE_ADDRESS]]),
          bodyLimit: settings.bodyLimit,
          maxMessages: settings.maxMessages,
        });
        relays.push(relay);
        track((async () => {
          for await (const conn of listener) {
            connections++;
            const client: ClientInfo = {
              address: hostPort(conn.remoteAddr),
              mode: "wireguard",
              peer: flowPeer(conn.peer),
            };
            const what = `${formatHostPort(client.address)} -> ${formatHostPort(hostPort(conn.localAddr))}`;
            bus.log("info", `connection ${what} (peer ${conn.peer.publicKey})`);
            open.add(conn);
            track(
              handleConnection(ctx, {
                stream: byteStreamOfConn(conn),
                client,
                destination: dnsOverTcp(hostPort(conn.localAddr), dnsServers),
              })
                .finally(() => {
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
                { address: hostPort(d.src), mode: "wireguard", peer: flowPeer(d.peer) },
              );
            }
          })().catch(() => {}),
        );
      } else {
        const listener = Deno.listen({
          hostname: mode.hostname ?? "127.0.0.1",
          port: mode.port,
          transport: "tcp",
        });
        tcpListeners.push(listener);
        addresses.push({ kind: "regular", addr: listener.addr });
        track(
          (async () => {
            for await (const conn of listener) {
              const remote = conn.remoteAddr;
              if (!mode.allowAnyClient && !isPrivateAddress(remote.hostname)) {
                bus.log(
                  "warn",
                  `refused a proxy client from ${
                    formatHostPort(hostPort(remote))
                  } (not a local or private address)`,
                );
                conn.close();
                continue;
              }
              connections++;
              open.add(conn);
              const client: ClientInfo = { address: hostPort(remote), mode: "regular" };
              bus.log("info", `proxy client ${formatHostPort(client.address)} connected`);
              track(
                handleProxyConnection(ctx, byteStreamOfConn(conn), client).finally(() => {
                  open.delete(conn);
                  bus.log("info", `proxy client ${formatHostPort(client.address)} disconnected`);
                }),
              );
            }
          })().catch(() => {}),
        );
      }
    }
  } catch (e) {
    for (const l of wireguard) l.close();
    for (const l of tcpListeners) l.close();
    for (const r of relays) r.close();
    if (!current) throw e;
    const where = current.kind === "wireguard"
      ? `UDP ${
        formatHostPort({ hostname: current.hostname ?? "0.0.0.0", port: current.port })
      } (wireguard mode)`
      : `TCP ${
        formatHostPort({ hostname: current.hostname ?? "127.0.0.1", port: current.port })
      } (regular mode)`;
    const reason = e instanceof Deno.errors.AddrInUse ? "the address is already in use" : describeError(e);
    throw new Error(`cannot listen on ${where}: ${reason}`, { cause: e });
  }

  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  let closing: Promise<void> | null = null;
  const close = (grace = 2000): Promise<void> => {
    closing ??= (async () => {
      for (const l of tcpListeners) {
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
      for (const r of relays) r.close();
      for (const l of wireguard) l.close();
      await Promise.race([pending, new Promise((r) => setTimeout(r, 1000))]);
      await Promise.all(wireguard.map((l) => l.closed));
      resolveClosed();
    })();
    return closing;
  };
  const acceptLoops = new Set(tasks);
  const isAcceptLoop = (t: Promise<void>) => acceptLoops.has(t);

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
          };
        },
        { flows: 0, dnsQueries: 0, dnsFailures: 0, dropped: 0 },
      ),
    }),
    close,
    closed,
  };
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

function connectTcp(timeout: number) {
  return async (address: HostPort) => {
    const attempt = Deno.connect({ hostname: address.hostname, port: address.port, transport: "tcp" });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const result = await Promise.race([
      attempt,
      new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), timeout))),
    ]).finally(() => clearTimeout(timer));
    if (result === "timeout") {
      attempt.then((c) => c.close(), () => {});
      throw new Error(`connection to ${formatHostPort(address)} timed out after ${timeout} ms`);
    }
    result.setNoDelay(true);
    return { stream: byteStreamOfConn(result), remote: hostPort(result.remoteAddr) };
  };
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

/** Loopback, RFC 1918, link-local, CGNAT, and IPv6 ULA/link-local addresses. */
export function isPrivateAddress(ip: string): boolean {
  const v4 = ip.startsWith("::ffff:") ? ip.slice(7) : ip;
  const m = /^(\d+)\.(\d+)\.\d+\.\d+$/.exec(v4);
  if (m) {
    const a = Number(m[1]), b = Number(m[2]);
    return a === 127 || a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) ||
      (a === 169 && b === 254) || (a === 100 && b >= 64 && b <= 127);
  }
  const lower = ip.toLowerCase();
  return lower === "::1" || /^f[cd]/.test(lower) || /^fe[89ab]/.test(lower);
}
