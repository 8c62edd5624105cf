/**
 * The DNS mode: a DNS server on UDP and TCP (RFC 1035 §4.2.2: each message after a two-byte
 * length) that answers through the configured resolvers, as tunnel DNS does, and records every
 * query with its answer as a DNS flow (see {@link UdpRelay.answerDns}, which also holds the seam
 * where an addon may answer).
 *
 * Bounded: queries in progress over UDP (beyond them datagrams are dropped and counted), queries
 * per TCP connection in flight one at a time, TCP connections under the proxy's caps and timeouts.
 * @module
 */
import type { ClientInfo, HostPort } from "../flows/flow.ts";
import { formatHostPort } from "../flows/flow.ts";
import { byteStreamOfConn } from "./byte_stream.ts";
import type { ByteStream } from "./byte_stream.ts";
import { describeError } from "./layer_runner.ts";
import { acceptLoop, type ModeDeps } from "./socks5_mode.ts";
import type { UdpRelay } from "./udp_relay.ts";

/** A DNS mode as `startProxy()` takes it. */
export interface DnsMode {
  kind: "dns";
  /** Address to listen on, UDP and TCP (default 127.0.0.1). */
  hostname?: string;
  /** Port, UDP and TCP (0 picks one free for both). */
  port: number;
  /** Accept clients from any address, not only local and private ones. */
  allowAnyClient?: boolean;
  /** This mode's resolvers (reverse `dns://HOST[:PORT]`) in place of the proxy's `dnsServers`. */
  resolvers?: HostPort[];
}

/** UDP queries answered at once at most; more are dropped (the client retries). */
const MAX_PENDING_UDP = 512;
/** Queries one TCP connection may send before it is closed. */
const MAX_QUERIES_PER_TCP = 10_000;

/** A running DNS server. */
export interface DnsServer {
  /** The UDP address (the TCP one has the same port). */
  addr: Deno.NetAddr;
  /** Queries dropped because too many were in progress. */
  dropped(): number;
  /** Stops both listeners. */
  close(): void;
  /** The UDP loop and the TCP accept loop. */
  loops: Promise<void>[];
}

/**
 * Starts the DNS server of `mode`. `relay` answers the queries (its resolvers); `dnsServers` are
 * checked so that the server is not its own resolver.
 *
 * @throws {Error} When there is no resolver, a resolver is this server, or the port is taken.
 */
export function listenDns(deps: ModeDeps, mode: DnsMode, relay: UdpRelay, dnsServers: HostPort[]): DnsServer {
  const hostname = mode.hostname ?? "127.0.0.1";
  if (dnsServers.length === 0) {
    throw new Error("the dns mode needs a resolver: give --dns-server or a nameserver in /etc/resolv.conf");
  }
  const { udp, tcp } = bindBoth(hostname, mode.port);
  const udpAddr = udp.addr as Deno.NetAddr;
  const port = udpAddr.port;
  for (const server of dnsServers) {
    const loopback = /^(127\.|::1$|0\.0\.0\.0$|::$|localhost$)/.test(server.hostname);
    if (server.port === port && (server.hostname === hostname || loopback)) {
      udp.close();
      tcp.close();
      throw new Error(
        `the dns mode would be its own resolver (${formatHostPort(server)}): give --dns-server`,
      );
    }
  }
  const bus = deps.ctx.bus;
  let pending = 0;
  let dropped = 0;
  const local: HostPort = { hostname: udpAddr.hostname, port };
  const udpLoop = (async () => {
    for (;;) {
      let data: Uint8Array, from: Deno.Addr;
      try {
        [data, from] = await udp.receive();
      } catch (e) {
        if (deps.stopping() || e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) {
          return;
        }
        bus.log("warn", `DNS mode: receive on UDP ${formatHostPort(local)} failed: ${describeError(e)}`);
        continue;
      }
      const src = hostPort(from);
      if (!mode.allowAnyClient && !deps.clientAllowed(src.hostname)) continue;
      if (pending >= MAX_PENDING_UDP) {
        dropped++;
        continue;
      }
      pending++;
      const client: ClientInfo = { address: src, mode: "dns" };
      void relay.answerDns({ data, src, dst: local }, client)
        .then((answer) =>
          answer && udp.send(answer, { transport: "udp", hostname: src.hostname, port: src.port })
        )
        .catch((e) => bus.log("debug", `DNS answer to ${formatHostPort(src)}: ${describeError(e)}`))
        .finally(() => pending--);
    }
  })();
  const tcpLoop = acceptLoop(
    deps,
    tcp,
    "dns",
    mode.allowAnyClient ?? false,
    (conn, client, admission) =>
      serveTcp(admission.guard(byteStreamOfConn(conn)), client, local, relay, deps),
  );
  return {
    addr: udpAddr,
    dropped: () => dropped,
    close: () => {
      for (const l of [udp, tcp]) {
        try {
          l.close();
        } catch { /* closed */ }
      }
    },
    loops: [udpLoop, tcpLoop],
  };
}

/** Answers length-framed queries on one TCP connection, one at a time, in order. */
async function serveTcp(
  stream: ByteStream,
  client: ClientInfo,
  local: HostPort,
  relay: UdpRelay,
  deps: ModeDeps,
): Promise<void> {
  let buf = new Uint8Array(0);
  let answered = 0;
  try {
    for (;;) {
      while (buf.byteLength >= 2 && buf.byteLength >= 2 + ((buf[0]! << 8) | buf[1]!)) {
        const size = (buf[0]! << 8) | buf[1]!;
        const query = buf.slice(2, 2 + size);
        buf = buf.subarray(2 + size);
        const answer = await relay.answerDns({ data: query, src: client.address, dst: local }, client);
        if (!answer) {
          deps.ctx.bus.log(
            "info",
            `DNS mode: a query from ${formatHostPort(client.address)} over TCP cannot be read`,
          );
          stream.close(false);
          return;
        }
        const framed = new Uint8Array(2 + answer.byteLength);
        framed[0] = answer.byteLength >> 8;
        framed[1] = answer.byteLength & 0xff;
        framed.set(answer, 2);
        await stream.write(framed);
        if (++answered >= MAX_QUERIES_PER_TCP) {
          stream.close(false);
          return;
        }
      }
      const chunk = await stream.read();
      if (chunk === null) break;
      const next = new Uint8Array(buf.byteLength + chunk.byteLength);
      next.set(buf);
      next.set(chunk, buf.byteLength);
      buf = next;
    }
    stream.close(false);
  } catch (e) {
    deps.ctx.bus.log("debug", `DNS mode: TCP client ${formatHostPort(client.address)}: ${describeError(e)}`);
    stream.close(true);
  }
}

/** A UDP socket and a TCP listener on the same port (port 0: tries a few free UDP ports). */
function bindBoth(hostname: string, port: number): { udp: Deno.DatagramConn; tcp: Deno.TcpListener } {
  for (let attempt = 0;; attempt++) {
    const udp = Deno.listenDatagram({ hostname, port, transport: "udp" });
    try {
      const tcp = Deno.listen({ hostname, port: (udp.addr as Deno.NetAddr).port, transport: "tcp" });
      return { udp, tcp };
    } catch (e) {
      udp.close();
      if (port !== 0 || attempt >= 8 || !(e instanceof Deno.errors.AddrInUse)) throw e;
    }
  }
}

function hostPort(addr: Deno.Addr): HostPort {
  const a = addr as Deno.NetAddr;
  return { hostname: a.hostname, port: a.port };
}
