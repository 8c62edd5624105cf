/**
 * The SOCKS5 mode's driver: a TCP listener whose clients negotiate SOCKS5 (socks5.ts), then
 * - CONNECT: the destination is dialed through the destination policy and the connection goes on
 *   like an HTTP CONNECT tunnel (first-bytes classification, TLS interception, layers);
 * - UDP ASSOCIATE: a UDP socket for the association; the client's datagrams (RFC 1928 §7 header)
 *   go through a {@link UdpRelay} as tunnel UDP does (port 53 to the resolvers as DNS flows, the
 *   rest per conversation as UDP flows); the association ends with its TCP connection.
 * Handshake failures answer with the protocol's reply, are recorded as a TCP flow with the
 * reason, and close that connection only.
 * @module
 */
import { lookup } from "node:dns/promises";
import type { ByteStream } from "./byte_stream.ts";
import { byteStreamOfConn } from "./byte_stream.ts";
import { handleFrontedConnection, type ProxyContext } from "./connection_handler.ts";
import { type ClientInfo, formatHostPort, type HostPort, type TcpFlow } from "../flows/flow.ts";
import { describeError } from "./layer_runner.ts";
import { BlockedDestinationError, canonicalLiteral, type DestinationPolicy } from "./destination_policy.ts";
import type { Admission } from "./limits.ts";
import { markActive, RateLimitedLog } from "./limits.ts";
import {
  encodeSocks5Reply,
  encodeSocks5Udp,
  parseSocks5Udp,
  Socks5Handshake,
  Socks5Reply,
  type Socks5Request,
} from "./socks5.ts";
import type { RelayDatagram, UdpRelay } from "./udp_relay.ts";

/** A SOCKS5 mode as `startProxy()` takes it. */
export interface Socks5Mode {
  kind: "socks5";
  /** TCP address to listen on (default 127.0.0.1). */
  hostname?: string;
  /** TCP port (0 picks one). */
  port: number;
  /** Accept clients from any address, not only local and private ones (see `isPrivateAddress`). */
  allowAnyClient?: boolean;
}

/** What the SOCKS5 and DNS listeners need from the proxy. */
export interface ModeDeps {
  ctx: ProxyContext;
  policy: DestinationPolicy;
  /** Takes a place for a client connection under the caps, or null (refused, logged). */
  admit(key: string, client: ClientInfo): Admission | null;
  /** Whether the client address may use the proxy (private clients only unless told). */
  clientAllowed(address: string): boolean;
  /** Makes the UDP relay of one association (or of the DNS mode); `reply` sends to the client. */
  newRelay(
    reply: (datagram: RelayDatagram) => Promise<void>,
    maxFlows: number,
    dnsServers?: HostPort[],
  ): UdpRelay;
  /** Registers a connection's task (the proxy waits for it on close). */
  track(task: Promise<void>): void;
  /** A connection was accepted, or an accept call failed. */
  count(what: "connection" | "accept-error"): void;
  /** Whether the proxy is stopping (accept errors are then the end). */
  stopping(): boolean;
  /** Open client connections, cut when the grace period ends. */
  open: Set<{ close(): void }>;
  /** How long a SOCKS5 client has for its handshake (ms; 0: no limit). */
  handshakeTimeout: number;
  /** Credentials clients must give (`--proxyauth`), if any. */
  credentials?: { username: string; password: string };
}

/** UDP conversations one association may hold at once. */
const MAX_FLOWS_PER_ASSOCIATION = 256;

/**
 * Listens for SOCKS5 clients. Returns the listener (closing it stops accepting) and the accept
 * loop's task.
 */
export function listenSocks5(
  deps: ModeDeps,
  mode: Socks5Mode,
): { listener: Deno.TcpListener; loop: Promise<void> } {
  const listener = Deno.listen({ hostname: mode.hostname ?? "127.0.0.1", port: mode.port, transport: "tcp" });
  const loop = acceptLoop(
    deps,
    listener,
    "socks5",
    mode.allowAnyClient ?? false,
    (conn, client, admission) => {
      const local = hostPort(conn.localAddr);
      return handleSocks5Connection(deps, admission.guard(byteStreamOfConn(conn)), client, local);
    },
  );
  return { listener, loop };
}

/**
 * Accepts TCP clients on `listener`: accept errors are logged and retried with a growing pause,
 * non-private clients refused unless `allowAnyClient`, each connection admitted under the caps.
 */
export async function acceptLoop(
  deps: ModeDeps,
  listener: Deno.TcpListener,
  mode: ClientInfo["mode"],
  allowAnyClient: boolean,
  serve: (conn: Deno.TcpConn, client: ClientInfo, admission: Admission) => Promise<void>,
): Promise<void> {
  const bus = deps.ctx.bus;
  const log = new RateLimitedLog((level, message) => bus.log(level, message));
  const where = `TCP ${formatHostPort(hostPort(listener.addr))} (${mode} mode)`;
  let pause = 0;
  for (;;) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
      pause = 0;
      conn.setNoDelay(true);
    } catch (e) {
      if (deps.stopping() || e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) {
        return;
      }
      deps.count("accept-error");
      pause = Math.min(Math.max(pause * 2, 10), 1000);
      log.line("accept", "error", `cannot accept on ${where}: ${describeError(e)}; retrying in ${pause} ms`);
      await new Promise((r) => setTimeout(r, pause));
      if (deps.stopping()) return;
      continue;
    }
    const remote = hostPort(conn.remoteAddr);
    if (!allowAnyClient && !deps.clientAllowed(remote.hostname)) {
      log.line(
        "not-private",
        "warn",
        `refused a ${mode} client from ${formatHostPort(remote)} (not a local or private address)`,
      );
      conn.close();
      continue;
    }
    const client: ClientInfo = { address: remote, mode };
    const admission = deps.admit(`address ${remote.hostname}`, client);
    if (!admission) {
      conn.close();
      continue;
    }
    deps.count("connection");
    deps.open.add(conn);
    bus.log("info", `${mode} client ${formatHostPort(remote)} connected`);
    deps.track(
      serve(conn, client, admission).finally(() => {
        admission.release();
        deps.open.delete(conn);
        bus.log("info", `${mode} client ${formatHostPort(remote)} disconnected`);
      }),
    );
  }
}

/**
 * Drives one SOCKS5 client connection: the handshake, then a tunnel or a UDP association.
 * `local` is the proxy's address the client reached (the UDP relay socket binds there).
 * Never rejects.
 */
export function handleSocks5Connection(
  deps: ModeDeps,
  stream: ByteStream,
  client: ClientInfo,
  local: HostPort,
): Promise<void> {
  const { ctx } = deps;
  const describe = `SOCKS5 connection from ${formatHostPort(client.address)}`;
  return handleFrontedConnection(ctx, stream, client, describe, async (tunnel) => {
    const started = Date.now();
    const handshake = new Socks5Handshake(deps.credentials ? { credentials: deps.credentials } : {});
    const deadline = deps.handshakeTimeout > 0 ? started + deps.handshakeTimeout : Infinity;
    let request: Socks5Request | undefined;
    let rest = new Uint8Array(0);
    while (!request) {
      const chunk = await readBefore(stream, deadline);
      if (chunk === "timeout") {
        fail(deps, stream, client, started, `SOCKS5 handshake not done within ${deps.handshakeTimeout} ms`);
        return;
      }
      if (chunk === null) {
        if (!handshake.done && Date.now() > started) {
          ctx.bus.log("info", `${describe}: closed before its SOCKS5 request`);
        }
        stream.close(false);
        return;
      }
      const step = handshake.feed(chunk);
      for (const bytes of step.send) await stream.write(bytes);
      if (step.error) {
        fail(deps, stream, client, started, step.error);
        return;
      }
      request = step.request;
      if (step.rest) rest = new Uint8Array(step.rest);
    }
    if (request.command === "connect") {
      await tunnel(request.address, rest, {
        established: () => stream.write(encodeSocks5Reply(Socks5Reply.succeeded)),
        refused: (_reason, error) => stream.write(encodeSocks5Reply(socks5ReplyFor(error))).catch(() => {}),
      });
      return;
    }
    await associate(deps, stream, client, local, request);
  });
}

/** The SOCKS5 reply code for a failed dial. */
export function socks5ReplyFor(error: unknown): number {
  if (error instanceof BlockedDestinationError) return Socks5Reply.notAllowed;
  if (error instanceof Deno.errors.ConnectionRefused) return Socks5Reply.connectionRefused;
  const text = describeError(error);
  if (/ECONNREFUSED|refused/i.test(text)) return Socks5Reply.connectionRefused;
  if (/ENETUNREACH|network is unreachable/i.test(text)) return Socks5Reply.networkUnreachable;
  if (/EHOSTUNREACH|no route to host|cannot resolve|timed out/i.test(text)) {
    return Socks5Reply.hostUnreachable;
  }
  return Socks5Reply.generalFailure;
}

/**
 * A UDP association: a socket on the proxy's address the client reached, its datagrams relayed
 * (only from the client's own address), until the TCP connection ends.
 */
async function associate(
  deps: ModeDeps,
  stream: ByteStream,
  client: ClientInfo,
  local: HostPort,
  request: Socks5Request,
): Promise<void> {
  const { ctx } = deps;
  let socket: Deno.DatagramConn;
  try {
    socket = Deno.listenDatagram({ hostname: local.hostname, port: 0, transport: "udp" });
  } catch (e) {
    await stream.write(encodeSocks5Reply(Socks5Reply.generalFailure)).catch(() => {});
    fail(deps, stream, client, Date.now(), `cannot open the UDP ASSOCIATE socket: ${describeError(e)}`);
    return;
  }
  const bound = hostPort(socket.addr);
  const clientIp = canonicalLiteral(client.address.hostname) ?? client.address.hostname;
  // The client may say which port it sends from (0: not known yet, the first datagram tells).
  let clientPort = request.address.port;
  // Datagrams either way are traffic: the idle timeout does not end a busy UDP-only association.
  const relay = deps.newRelay(async (d) => {
    markActive(stream);
    await socket.send(encodeSocks5Udp(d.src, d.data), {
      transport: "udp",
      hostname: d.dst.hostname,
      port: d.dst.port,
    });
  }, MAX_FLOWS_PER_ASSOCIATION);
  ctx.bus.log(
    "info",
    `SOCKS5 UDP association for ${formatHostPort(client.address)} on ${formatHostPort(bound)}`,
  );
  const receiving = (async () => {
    for (;;) {
      const [data, from] = await socket.receive();
      const src = hostPort(from);
      if ((canonicalLiteral(src.hostname) ?? src.hostname) !== clientIp) continue;
      if (clientPort !== 0 && src.port !== clientPort) continue;
      clientPort = src.port;
      markActive(stream);
      let datagram;
      try {
        datagram = parseSocks5Udp(data);
      } catch (e) {
        ctx.bus.log("info", `SOCKS5 UDP datagram from ${formatHostPort(src)} dropped: ${describeError(e)}`);
        continue;
      }
      // Fragments are not reassembled (RFC 1928 §7 allows dropping them).
      if (datagram.fragment !== 0) continue;
      let dst = datagram.address;
      if (datagram.addressType === "domain") {
        try {
          dst = await resolveForUdp(deps.policy, dst);
        } catch (e) {
          ctx.bus.log("info", `SOCKS5 UDP to ${formatHostPort(dst)} dropped: ${describeError(e)}`);
          continue;
        }
      }
      relay.handle({ data: datagram.data, src, dst }, { address: src, mode: "socks5" });
    }
  })().catch(() => {});
  await stream.write(encodeSocks5Reply(Socks5Reply.succeeded, bound));
  // The association lasts as long as its TCP connection; anything the client sends there is ignored.
  try {
    for (;;) if ((await stream.read()) === null) break;
  } catch { /* reset: the association ends all the same */ }
  relay.close();
  try {
    socket.close();
  } catch { /* closed */ }
  await receiving;
  stream.close(false);
}

/** A name's first address that the policy allows (names are dialed only after the check). */
async function resolveForUdp(policy: DestinationPolicy, address: HostPort): Promise<HostPort> {
  const [first] = await policy.resolve(address);
  if (!first) throw new Error(`cannot resolve ${address.hostname}`);
  if (canonicalLiteral(first.hostname) !== null) return first;
  const found = await lookup(first.hostname);
  return { hostname: found.address, port: address.port };
}

/** Records a failed handshake as a TCP flow with the reason and closes the connection. */
function fail(deps: ModeDeps, stream: ByteStream, client: ClientInfo, started: number, reason: string): void {
  const now = Date.now();
  const flow: TcpFlow = {
    id: deps.ctx.newId(),
    type: "tcp",
    client,
    server: { address: { hostname: "", port: 0 } },
    timestampStart: started,
    timestampEnd: now,
    bytesFromClient: 0,
    bytesFromServer: 0,
    messages: [],
    messagesDropped: 0,
    error: { message: reason, timestamp: now },
  };
  deps.ctx.bus.emit("start", flow);
  deps.ctx.bus.emit("end", flow);
  stream.close(false);
}

/** The next chunk, or "timeout" at `deadline`. */
async function readBefore(stream: ByteStream, deadline: number): Promise<Uint8Array | null | "timeout"> {
  if (deadline === Infinity) return stream.read();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      stream.read(),
      new Promise<"timeout">((
        r,
      ) => (timer = setTimeout(() => r("timeout"), Math.max(0, deadline - Date.now())))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function hostPort(addr: Deno.Addr): HostPort {
  const a = addr as Deno.NetAddr;
  return { hostname: a.hostname, port: a.port };
}
