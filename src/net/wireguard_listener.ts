/**
 * `listenWireGuard()`: a user-space WireGuard server whose tunneled TCP connections arrive as
 * `Deno.Conn`-shaped {@link TunnelConn}s and whose UDP datagrams arrive as a stream.
 *
 * The listener is the one driver of its wasm core: it owns the UDP socket, the single timer (set
 * to the core's next deadline, never a busy poll) and the connections. Everything the core says
 * is drained right after the call that produced it.
 *
 * Socket I/O runs one of two ways. Direct (the default where it works: Linux with FFI
 * permission): on this thread, a pending `receive()` as the wake-up, then `recvmmsg` for whatever
 * else waits and one `sendmmsg` for all the core produced ({@link DirectUdp}). Otherwise a socket
 * worker thread ({@link ./udp_worker.ts}) with shared-memory rings in each direction.
 * @module
 */
import { type CoreStats, derivePublicKey, PeerEventKind, WasmCore } from "../core/wasm_core.ts";
import { decodeKey, encodeKey } from "../core/keys.ts";
import type { TunnelPeer } from "./tunnel_conn.ts";
import { StackDriver, type StackDriverStats } from "./stack_driver.ts";
import { DatagramRing } from "./datagram_ring.ts";
import { DirectUdp } from "./direct_udp.ts";
import { formatIp, writeIp } from "./ip.ts";
import { enlargeUdpBuffers, SOCKET_BUFFER } from "./socket_buffers.ts";
import type { UdpWorkerInit } from "./udp_worker.ts";

export type { TunnelDatagram } from "./stack_driver.ts";

/** A peer allowed to connect. */
export interface WireGuardPeerOptions {
  /** The peer's public key (base64). */
  publicKey: string;
  /** Optional preshared key (base64). */
  presharedKey?: string;
  /** Persistent keepalive toward the peer, in seconds. */
  keepalive?: number;
  /**
   * The inner addresses the peer may use (WireGuard's AllowedIPs, cryptokey routing): CIDR
   * prefixes such as `10.0.0.2/32` and `fd00::2/128`, or bare addresses. Packets the peer sends
   * from any other source are dropped (counted as `drops.sourceNotAllowed`), and traffic to
   * these addresses goes to this peer. A prefix belongs to one peer (adding one that another
   * peer has throws). `["0.0.0.0/0", "::/0"]` allows any address, for one peer.
   *
   * When absent, the peer takes the first IPv4 and the first IPv6 unicast address it sends
   * from that no other peer owns, keeps them until removed, and may use no others: enough for
   * a client with one address per family, but any peer could take a free address first, so
   * give each peer its addresses when they are known (the command line does).
   */
  allowedIps?: string[];
}

/** Options of {@link listenWireGuard}. */
export interface ListenWireGuardOptions {
  /** Address to bind the UDP socket to (default `0.0.0.0`). */
  hostname?: string;
  /** UDP port; 0 picks a free one (see `listener.addr`). */
  port: number;
  /** Our private key (base64). */
  privateKey: string;
  /** Peers allowed to connect. */
  peers?: WireGuardPeerOptions[];
  /**
   * Largest per-connection TCP buffers in bytes (default 512 KiB each way). They start at
   * 16 KiB and grow with use, and shrink back after about a second with nothing in them.
   */
  tcpBuffer?: number;
  /**
   * Most bytes all TCP buffers together may take (default 1 GiB; the core's address space is
   * 4 GiB). Past it new connections are refused with a reset (`refusedMemory`) and buffers stop
   * growing (`bufferGrowthRefused`); a warning is logged.
   */
  bufferBudget?: number;
  /** Most TCP connections at once (default 8192; beyond, reset and `connectionsRefused`). */
  maxConnections?: number;
  /** Most TCP connections of one peer (default 4096; beyond, reset and `refusedPeerLimit`). */
  maxConnectionsPerPeer?: number;
  /**
   * Most TCP connections of one peer not yet established (default 2048). Further SYNs are
   * dropped (`refusedHalfOpen`); an honest client sends them again a second later.
   */
  maxHalfOpenPerPeer?: number;
  /**
   * Seconds a connection may stay not established after its SYN before it is dropped
   * (default 15; `halfOpenTimeouts`).
   */
  halfOpenTimeoutSeconds?: number;
  /**
   * Most UDP conversations (source and destination pairs) of one peer at once (default 2048);
   * datagrams starting further ones are dropped (`udpRefused`).
   */
  maxUdpConversationsPerPeer?: number;
  /** Seconds after which a UDP conversation with no datagram from its peer ends (default 60). */
  udpTimeoutSeconds?: number;
  /** Datagrams queued in `datagrams` before new ones are dropped (default 1024). */
  datagramQueue?: number;
  /** Log sink for warnings from the core (default: console.error). */
  onLog?: (level: "debug" | "info" | "warn", message: string) => void;
  /**
   * Socket I/O: `"direct"` on this thread through libc (Linux, needs FFI permission), or
   * `"worker"` on a socket thread. Default: direct where it works, else the worker.
   */
  socketIo?: "direct" | "worker";
}

/** Listener counters: the core's plus the driver's. */
export interface WireGuardStats extends CoreStats, StackDriverStats {
  /** Datagrams that could not be sent (send ring full, or the OS refused). */
  sendFailures: number;
  /** Datagrams received but dropped because the main thread fell behind (receive ring full). */
  receiveDrops: number;
}
/** One peer as {@link WireGuardListener.peerStates} reports it. */
export interface WireGuardPeerState {
  /** The peer's public key (base64). */
  publicKey: string;
  /** Where its datagrams last came from (`host:port`), null before any. */
  endpoint: string | null;
  /** Its allowed prefixes (empty for a peer that learns its addresses). */
  allowedIps: string[];
  /** Addresses a peer without `allowedIps` has taken. */
  addresses: string[];
  /** Handshakes completed. */
  handshakes: number;
  /** When the last one completed (ms since the epoch), absent before any. */
  lastHandshake?: number;
  /**
   * A session is up: a handshake completed less than 180 s ago (WireGuard's reject-after time)
   * and the core has not reported its session expired since.
   */
  online: boolean;
  /** Tunnel bytes received from it and sent to it. */
  rxBytes: number;
  txBytes: number;
}

/** WireGuard refuses a session this long after its handshake (Reject-After-Time), ms. */
const SESSION_MS = 180_000;
/** Bytes of each datagram ring between the main thread and the socket worker. */
const RING_BYTES = 2 << 20;
/** Batches of datagrams taken per wake-up in direct mode before other work gets a turn. */
const DIRECT_BATCHES = 8;
/**
 * Direct mode: a wake-up this long after the previous one (ms) means datagrams come one at a
 * time (a request/response exchange), so nothing else is likely waiting and the `recvmmsg` that
 * would find the queue empty (~5 µs) is skipped. Under load wake-ups come closer together.
 */
const QUIET_GAP_MS = 0.2;

/** A running WireGuard server. Iterate it (or `accept()`) for connections. */
export class WireGuardListener extends StackDriver {
  /** The UDP address the server listens on. */
  readonly addr: Deno.NetAddr;
  /** Our public key (base64). */
  readonly publicKey: string;
  /**
   * Resolves once the socket thread has bound the port (a few milliseconds after the listener
   * is made); datagrams that arrive before are lost, which WireGuard clients recover from with
   * their next handshake attempt. Rejects if that bind failed (another socket took the port in
   * between).
   */
  readonly ready: Promise<void>;

  /** Direct mode: the socket and the batched I/O on its descriptor. */
  #socket: Deno.DatagramConn | null = null;
  #direct: DirectUdp | null = null;
  /** While a batch of received datagrams is processed, sends wait for its end. */
  #batching = false;
  /** The socket (or its worker) is gone: nothing more is sent. */
  #ioClosed = false;
  /** Worker mode: the socket thread and the rings to and from it. */
  #worker: Worker | null = null;
  #rx: DatagramRing | null = null;
  #tx: DatagramRing | null = null;
  #txPending = false;
  #peers = new Map<number, TunnelPeer>();
  #peerIds = new Map<string, number>();
  /** The endpoint bytes behind each peer's `endpoint`, to notice when it changes. */
  #peerEndpointBytes = new Map<number, Uint8Array>();
  /** The endpoint bytes of the datagram being processed (valid only during it). */
  #from: Uint8Array | null = null;
  /** Each peer's last completed handshake (ms since the epoch) and whether its session ended since. */
  #sessions = new Map<number, { at: number; expired: boolean }>();
  /**
   * Told when a peer completes a handshake or its session expires (the addons' `wireguardPeer`);
   * `endpoint` is its outer address as `host:port` when known.
   */
  onPeerEvent:
    | ((event: { publicKey: string; endpoint?: string; kind: "handshake" | "expired" }) => void)
    | null = null;

  /** Use {@link listenWireGuard}. */
  constructor(options: ListenWireGuardOptions) {
    const privateKey = decodeKey(options.privateKey, "private key");
    const onLog = options.onLog ?? ((level, msg) => console.error(`wirescope wireguard ${level}: ${msg}`));
    const core = new WasmCore({
      privateKey,
      role: "server",
      now: performance.now(),
      rxBuffer: options.tcpBuffer ?? 512 * 1024,
      txBuffer: options.tcpBuffer ?? 512 * 1024,
      ...(options.bufferBudget !== undefined ? { bufferBudget: options.bufferBudget } : {}),
      maxConnections: options.maxConnections ?? 8192,
      ...(options.maxConnectionsPerPeer !== undefined
        ? { maxConnectionsPerPeer: options.maxConnectionsPerPeer }
        : {}),
      ...(options.maxHalfOpenPerPeer !== undefined ? { maxHalfOpenPerPeer: options.maxHalfOpenPerPeer } : {}),
      ...(options.halfOpenTimeoutSeconds !== undefined
        ? { halfOpenTimeoutSeconds: options.halfOpenTimeoutSeconds }
        : {}),
      ...(options.maxUdpConversationsPerPeer !== undefined
        ? { maxUdpConversationsPerPeer: options.maxUdpConversationsPerPeer }
        : {}),
      ...(options.udpTimeoutSeconds !== undefined ? { udpTimeoutSeconds: options.udpTimeoutSeconds } : {}),
      onOutput: (line) => onLog("warn", `core: ${line}`),
    });
    super(core, onLog, options.datagramQueue ?? 1024);
    this.publicKey = encodeKey(derivePublicKey(privateKey));
    for (const peer of options.peers ?? []) this.addPeer(peer);
    // Bind here, synchronously, so a bad address or a port in use fails at the call and port 0
    // resolves now. Direct mode keeps this socket; the socket worker binds the same address anew.
    const socket = Deno.listenDatagram({
      transport: "udp",
      hostname: options.hostname ?? "0.0.0.0",
      port: options.port,
    });
    this.addr = socket.addr as Deno.NetAddr;
    const direct = options.socketIo === "worker" ? "the worker was asked for" : DirectUdp.open(socket);
    if (typeof direct !== "string") {
      this.#socket = socket;
      this.#direct = direct;
      const bigger = enlargeUdpBuffers(this.addr.port, SOCKET_BUFFER);
      if (bigger) this.onLog("warn", `UDP socket: buffers left at the system default: ${bigger}`);
      this.ready = Promise.resolve();
    } else {
      if (options.socketIo === "direct") {
        socket.close();
        throw new Error(`direct socket I/O is not available: ${direct}`);
      }
      this.onLog("debug", `UDP socket I/O on a worker thread (${direct})`);
      socket.close();
      this.ready = this.#startWorker();
    }
    if (this.#direct) this.#directLoop(this.#socket!, this.#direct);
    else this.#ringLoop();
    this.settle();
  }

  /** Starts the socket worker; resolves once it has bound the port. */
  #startWorker(): Promise<void> {
    this.#rx = new DatagramRing(RING_BYTES);
    this.#tx = new DatagramRing(RING_BYTES);
    this.#worker = new Worker(new URL("./udp_worker.ts", import.meta.url).href, { type: "module" });
    let resolveReady!: () => void, rejectReady!: (e: Error) => void;
    const ready = new Promise<void>((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    // Nobody has to await `ready`; a failure is also logged.
    ready.catch(() => {});
    this.#worker.onmessage = (e: MessageEvent<{ type: string; message?: string }>) => {
      if (e.data.type === "ready") resolveReady();
      if (e.data.type === "error") rejectReady(new Error(`cannot open UDP socket: ${e.data.message}`));
      if (e.data.type === "error" || e.data.type === "warning") {
        this.onLog("warn", `UDP socket: ${e.data.message}`);
      }
    };
    this.#worker.postMessage(
      {
        type: "init",
        hostname: this.addr.hostname,
        port: this.addr.port,
        rx: this.#rx.buffer,
        tx: this.#tx.buffer,
      } satisfies UdpWorkerInit,
    );
    return ready;
  }

  // ---- peers ----

  /**
   * Adds a peer while running.
   *
   * @throws {SyntaxError} For a malformed key or prefix; {Error} when the key is already a
   * peer or an allowed prefix belongs to another peer.
   */
  addPeer(peer: WireGuardPeerOptions): void {
    const publicKey = decodeKey(peer.publicKey, "peer public key");
    const canonical = encodeKey(publicKey);
    const id = this.core.addPeer({
      publicKey,
      ...(peer.presharedKey ? { presharedKey: decodeKey(peer.presharedKey, "preshared key") } : {}),
      ...(peer.keepalive ? { keepalive: peer.keepalive } : {}),
      ...(peer.allowedIps ? { allowedIps: peer.allowedIps } : {}),
    }, performance.now());
    this.#peers.set(id, { publicKey: canonical, endpoint: null });
    this.#peerIds.set(canonical, id);
  }

  /** Removes a peer; its connections are reset. Returns false for an unknown key. */
  removePeer(publicKey: string): boolean {
    const canonical = encodeKey(decodeKey(publicKey, "peer public key"));
    const id = this.#peerIds.get(canonical);
    if (id === undefined) return false;
    this.core.removePeer(id, performance.now());
    this.#peerIds.delete(canonical);
    this.#peers.delete(id);
    this.#peerEndpointBytes.delete(id);
    this.#sessions.delete(id);
    this.drain();
    return true;
  }

  /** Each peer: its key, endpoint, addresses, handshakes, whether a session is up, bytes each way. */
  peerStates(): WireGuardPeerState[] {
    const now = Date.now();
    return this.core.stats().peers.flatMap((p) => {
      const known = this.#peers.get(p.id);
      if (!known) return [];
      const session = this.#sessions.get(p.id);
      return [{
        publicKey: known.publicKey,
        endpoint: p.endpoint,
        allowedIps: p.allowedIps,
        addresses: p.addresses,
        handshakes: p.handshakes,
        ...(session ? { lastHandshake: session.at } : {}),
        online: session !== undefined && !session.expired && now - session.at < SESSION_MS,
        rxBytes: p.rxBytes,
        txBytes: p.txBytes,
      }];
    });
  }

  /** @internal Notes when sessions start and end (for {@link peerStates}). */
  override peerEvent(peer: number, what = 0): void {
    if (what === PeerEventKind.HandshakeComplete) {
      this.#sessions.set(peer, { at: Date.now(), expired: false });
    } else if (what === PeerEventKind.Expired) {
      const s = this.#sessions.get(peer);
      if (s) s.expired = true;
    }
    super.peerEvent(peer);
    const kind = what === PeerEventKind.HandshakeComplete
      ? "handshake"
      : what === PeerEventKind.Expired
      ? "expired"
      : null;
    if (kind && this.onPeerEvent) {
      const known = this.peerOf(peer);
      const e = known.endpoint;
      this.onPeerEvent({
        publicKey: known.publicKey,
        ...(e
          ? { endpoint: e.hostname.includes(":") ? `[${e.hostname}]:${e.port}` : `${e.hostname}:${e.port}` }
          : {}),
        kind,
      });
    }
  }

  /** Counters: peers, handshakes, drops by reason, connections, bytes. */
  stats(): WireGuardStats {
    const s = this.core.stats();
    const direct = this.#direct?.stats;
    return {
      ...s,
      ...this.driverStats(),
      sendFailures: (this.#tx?.dropped ?? 0) + (this.#tx?.failed ?? 0) + (direct?.sendFailures ?? 0),
      receiveDrops: (this.#rx?.dropped ?? 0) + (direct?.truncated ?? 0),
    };
  }

  /** Stops: resets open connections, stops the timer, closes the socket. */
  close(): void {
    if (this.closing) return;
    // Send the resets now, even when close() was called from inside a batch.
    this.#batching = false;
    this.closeStack();
    this.#ioClosed = true;
    if (this.#worker) {
      this.#worker.terminate();
      // Wake the receive loop so it sees `#closing` and ends.
      Atomics.notify(this.#rx!.header, 0);
    }
    // The descriptor may be reused once closed: direct I/O ends before it (`#closing` is set).
    try {
      this.#socket?.close();
    } catch { /* already closed */ }
    this.closedDone();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ---- driver: socket ----

  /** Hands one received datagram to the core and drains what it says. */
  #input(from: Uint8Array, data: Uint8Array, now: number): void {
    this.#from = from;
    this.guarded("datagram", () => this.core.datagramRaw(data, from, now));
    this.#from = null;
  }

  /**
   * Direct mode: waits for a datagram through Deno, then takes what else has arrived in
   * batches, and sends all the replies at the end of the batch.
   */
  async #directLoop(socket: Deno.DatagramConn, direct: DirectUdp): Promise<void> {
    const buf = new Uint8Array(65_536);
    const ep = new Uint8Array(18);
    let lastHost = "", lastPort = -1, receiveErrors = 0;
    const input = (from: Uint8Array, data: Uint8Array) => this.#input(from, data, now);
    let now = 0;
    while (!this.closing) {
      let data: Uint8Array, from: Deno.NetAddr;
      try {
        [data, from] = (await socket.receive(buf)) as [Uint8Array, Deno.NetAddr];
      } catch (e) {
        if (this.closing) return;
        if (receiveErrors++ % 1000 === 0) {
          this.onLog("warn", `UDP receive failed (${receiveErrors} so far): ${(e as Error).message}`);
        }
        // Not a tight loop should the error persist.
        await new Promise((r) => setTimeout(r, 10));
        continue;
      }
      if (this.closing) return;
      if (from.hostname !== lastHost || from.port !== lastPort) {
        writeIp(from.hostname, ep);
        ep[16] = from.port & 0xff;
        ep[17] = from.port >> 8;
        lastHost = from.hostname;
        lastPort = from.port;
      }
      const last = now;
      now = performance.now();
      this.#batching = true;
      this.#input(ep, data, now);
      if (now - last < QUIET_GAP_MS) {
        for (let i = 0; i < DIRECT_BATCHES && !this.#ioClosed; i++) {
          // Fewer than a full batch: the queue is empty.
          if (direct.receive(input) < DirectUdp.RECEIVE_BATCH) break;
        }
      }
      this.#batching = false;
      this.#txPending = false;
      if (this.#ioClosed) return;
      if (direct.queued > 0) direct.flush();
      this.queueSettle();
    }
  }

  /** Worker mode: takes the datagrams the socket worker received, whenever it says there are some. */
  async #ringLoop(): Promise<void> {
    const rx = this.#rx!;
    let seen = rx.writePosition;
    while (!this.closing) {
      const wait = Atomics.waitAsync(rx.header, 0, seen);
      if (wait.async) await wait.value;
      if (this.closing) return;
      seen = rx.writePosition;
      const now = performance.now();
      rx.drain((from, data) => this.#input(from, data, now));
      this.queueSettle();
    }
  }

  /** After each drain: sends, or wakes the socket worker to. */
  protected flushOutput(): void {
    if (this.#txPending) {
      if (this.#direct) {
        if (this.#batching) return;
        this.#direct.flush();
      } else Atomics.notify(this.#tx!.header, 0);
      this.#txPending = false;
    }
  }

  // CoreSink: what the core says.

  /** @internal */
  datagramRaw(to: Uint8Array, data: Uint8Array): void {
    // After close() the descriptor number may belong to something else.
    if (this.#ioClosed) return;
    if (this.#direct) {
      this.#direct.queue(to, data);
      this.#txPending = true;
    } else if (this.#tx!.push(to, data)) this.#txPending = true;
  }

  /** The peer, with its endpoint updated from the datagram being processed (formatted only
   * when it changed: this runs for every tunneled UDP datagram). */
  protected peerOf(id: number): TunnelPeer {
    const peer = this.#peers.get(id) ?? { publicKey: "", endpoint: null };
    const from = this.#from;
    if (!from) return peer;
    let seen = this.#peerEndpointBytes.get(id);
    let same = seen !== undefined;
    for (let i = 0; i < 18 && same; i++) same = from[i] === seen![i];
    if (!same) {
      seen ??= new Uint8Array(18);
      seen.set(from.subarray(0, 18));
      this.#peerEndpointBytes.set(id, seen);
      peer.endpoint = { transport: "udp", hostname: formatIp(from), port: from[16]! | (from[17]! << 8) };
    }
    return peer;
  }
}

/**
 * Starts a WireGuard server (synchronous, like `Deno.listen`).
 *
 * Each peer sends only from its `allowedIps` (see {@link WireGuardPeerOptions}). What one peer
 * may hold is limited (see {@link ListenWireGuardOptions}: `maxConnectionsPerPeer`,
 * `maxHalfOpenPerPeer`, `halfOpenTimeoutSeconds`, `maxUdpConversationsPerPeer`, and the
 * `bufferBudget` of all connections); each refusal is counted in `stats()` and logged (the 1st,
 * 2nd, 4th, 8th... time). Under a handshake flood the core answers with cookie replies, as
 * WireGuard prescribes, and processes a few initiations per second from any one address.
 *
 * @example
 * ```ts ignore
 * const listener = listenWireGuard({
 *   port: 51820,
 *   privateKey,
 *   peers: [{ publicKey, allowedIps: ["10.0.0.2/32", "fd00::2/128"] }],
 * });
 * for await (const conn of listener) {
 *   console.log(conn.remoteAddr, "->", conn.localAddr);
 *   conn.readable.pipeTo(conn.writable); // echo
 * }
 * ```
 */
export function listenWireGuard(options: ListenWireGuardOptions): WireGuardListener {
  return new WireGuardListener(options);
}
