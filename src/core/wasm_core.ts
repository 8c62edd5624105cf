/**
 * A typed facade over one instance of the wasm core. Sans-IO: every method takes the caller's
 * clock (`now`, milliseconds, monotonic) and returns or queues output; nothing here touches a
 * socket or a timer. Output records are read with {@link WasmCore.drain}.
 *
 * Boundary costs are kept low on purpose: inputs are copied once into the module's io buffer,
 * received TCP bytes are copied once out of the socket buffer (peek + consume) and sent bytes
 * once into it (window + commit), and outputs arrive as one batch per call.
 * @module
 */
import { coreModule } from "./module.ts";
import { wasiImports } from "./wasi.ts";
import { formatIp, writeIp } from "../net/ip.ts";

/** A host and port, as in `Deno.NetAddr` (without `transport`). */
export interface Endpoint {
  hostname: string;
  port: number;
}

/** Options for {@link WasmCore}. */
export interface WasmCoreOptions {
  /** Our 32-byte static private key (unused in the `tun` role). */
  privateKey: Uint8Array;
  /**
   * `server` accepts connections to any address; `client` opens them (for tests and tools);
   * `tun` is the server stack without WireGuard: raw IP packets go in with
   * {@link WasmCore.ipInput} and every packet it sends comes out through `CoreSink.ipPacket`.
   */
  role: "server" | "client" | "tun";
  /** The interface's own IPv4 address inside the tunnel. */
  address4?: string;
  /** The interface's own IPv6 address inside the tunnel. */
  address6?: string;
  /** Largest inner packet (default 1420, WireGuard's usual MTU). */
  mtu?: number;
  /**
   * Largest per-connection receive buffer in bytes (the TCP window; default 512 KiB). Buffers
   * start at `initialBuffer` and grow with use.
   */
  rxBuffer?: number;
  /** Largest per-connection send buffer in bytes (default 512 KiB). */
  txBuffer?: number;
  /**
   * Size each connection buffer starts at, and shrinks back to after about a second with
   * nothing in it (default 16 KiB).
   */
  initialBuffer?: number;
  /**
   * Most bytes all connection buffers together may take (default 1 GiB; the module's address
   * space is 4 GiB). A new connection that would exceed it is refused with a reset, a buffer
   * that would exceed it stays at its size.
   */
  bufferBudget?: number;
  /** Most TCP connections at once (default 8192). */
  maxConnections?: number;
  /** Most TCP connections of one peer (default 4096; a reset beyond). */
  maxConnectionsPerPeer?: number;
  /**
   * Most TCP connections of one peer that are not established yet (default 2048); further SYNs
   * are dropped, and an honest client sends them again a second later.
   */
  maxHalfOpenPerPeer?: number;
  /** A connection not established this long after its SYN is dropped, seconds (default 15). */
  halfOpenTimeoutSeconds?: number;
  /**
   * Most UDP conversations (source and destination pairs) of one peer at once (default 2048);
   * datagrams of further ones are dropped.
   */
  maxUdpConversationsPerPeer?: number;
  /** A UDP conversation ends after this long without a datagram from its peer, seconds (default 60). */
  udpTimeoutSeconds?: number;
  /** TCP keepalive interval, seconds (default 60; 0 = off). */
  keepaliveSeconds?: number;
  /** TCP idle timeout, seconds (default 600; 0 = off). */
  timeoutSeconds?: number;
  /** The clock at creation. */
  now: number;
  /** Receives lines the module prints (panics). */
  onOutput?: (line: string) => void;
}

/** Options for {@link WasmCore.addPeer}. */
export interface WasmPeerOptions {
  /** The peer's 32-byte static public key. */
  publicKey: Uint8Array;
  /** Optional 32-byte preshared key. */
  presharedKey?: Uint8Array;
  /** Persistent keepalive in seconds (0 or absent = off). */
  keepalive?: number;
  /** Where to send before the peer has sent anything. */
  endpoint?: Endpoint;
  /**
   * Inner addresses the peer may send from and receives traffic for (cryptokey routing), as
   * CIDR prefixes (`10.0.0.2/32`, `fd00::/64`; a bare address is one host). A prefix belongs to
   * one peer. `["0.0.0.0/0", "::/0"]` allows any address. Absent: the peer takes the first
   * IPv4 and the first IPv6 unicast address it sends from that no other peer owns (in the
   * client role: any address).
   */
  allowedIps?: string[];
}

/**
 * Parses a CIDR prefix (`10.0.0.0/8`, `fd00::1/128`, or a bare address) into 17 bytes: the
 * address as 16 (IPv4 mapped) and the prefix length in the address's own family.
 *
 * @throws {SyntaxError} When it is not a prefix.
 */
export function parsePrefix(text: string, into: Uint8Array, offset = 0): void {
  const slash = text.indexOf("/");
  const addr = slash < 0 ? text : text.slice(0, slash);
  writeIp(addr, into, offset);
  const v4 = into[offset + 10] === 0xff && into.subarray(offset, offset + 10).every((b) => b === 0);
  const max = v4 ? 32 : 128;
  const len = slash < 0 ? max : Number(text.slice(slash + 1));
  if (!/^\d{1,3}$/.test(slash < 0 ? String(max) : text.slice(slash + 1)) || len > max) {
    throw new SyntaxError(`not a CIDR prefix: ${text}`);
  }
  into[offset + 16] = len;
}

/** Why a connection ended (`TCP_CLOSED` reason). */
export const CloseReason = { Graceful: 0, Reset: 1, PeerRemoved: 2 } as const;
/** Peer events. */
export const PeerEventKind = { HandshakeComplete: 1, Expired: 2 } as const;

/**
 * Receives drained output records. Views (`data`) point into the module's memory and are valid
 * only during the call: copy what must outlive it.
 */
export interface CoreSink {
  datagram(to: Endpoint, data: Uint8Array): void;
  /** When present, called instead of `datagram` with the 18-byte endpoint as the core wrote it. */
  datagramRaw?(to: Uint8Array, data: Uint8Array): void;
  tcpOpen(conn: number, peer: number, remote: Endpoint, local: Endpoint): void;
  tcpReadable(conn: number): void;
  tcpWritable(conn: number): void;
  tcpFin(conn: number): void;
  tcpClosed(conn: number, reason: number): void;
  udp(peer: number, src: Endpoint, dst: Endpoint, data: Uint8Array): void;
  ipPacket(peer: number, data: Uint8Array): void;
  peerEvent(peer: number, what: number): void;
  log(level: number, text: string): void;
}

/** Counters and peer state reported by the core. */
export interface CoreStats {
  peers: {
    id: number;
    publicKeyHex: string;
    endpoint: string | null;
    /** The peer's allowed prefixes (empty for a peer that learns its addresses). */
    allowedIps: string[];
    /** Addresses a peer without `allowedIps` has taken (at most one per family). */
    addresses: string[];
    handshakes: number;
    rxBytes: number;
    txBytes: number;
  }[];
  drops: Record<string, number>;
  datagramsIn: number;
  datagramsOut: number;
  connectionsOpen: number;
  connectionsOpened: number;
  /** SYNs refused (reset): the total connection limit. */
  connectionsRefused: number;
  /** SYNs refused (reset): the peer's connection limit. */
  refusedPeerLimit: number;
  /** SYNs dropped: the peer's limit of connections not yet established. */
  refusedHalfOpen: number;
  /** SYNs refused (reset): the buffer budget or the module's memory was short. */
  refusedMemory: number;
  /** Connections dropped because they were not established in time. */
  halfOpenTimeouts: number;
  /** Buffer growths refused (budget or memory); those connections go on at their size. */
  bufferGrowthRefused: number;
  /** Bytes all connection buffers take now. */
  bufferBytes: number;
  /** UDP conversations the core tracks now (for the per-peer limit). */
  udpConversations: number;
  /** UDP datagrams dropped: a new conversation beyond the peer's limit. */
  udpRefused: number;
  malformedInner: number;
  udpIn: number;
  udpOut: number;
  echoReplies: number;
  tcpRxBytes: number;
  tcpTxBytes: number;
  sendErrors: number;
  /** Size of the module's linear memory in bytes (it grows, never shrinks). */
  memoryBytes: number;
}

interface Exports {
  memory: WebAssembly.Memory;
  ws_io(len: number): number;
  ws_result_ptr(): number;
  ws_public_key(): void;
  ws_init(now: number, server: number): void;
  ws_add_peer(now: number, hasPsk: number, keepalive: number, hasEndpoint: number, allowed: number): number;
  ws_remove_peer(now: number, id: number): number;
  ws_datagram(now: number, len: number): void;
  ws_tick(now: number): number;
  ws_flush(now: number): void;
  ws_out_ptr(): number;
  ws_out_len(): number;
  ws_out_clear(): void;
  ws_tcp_connect(now: number): number;
  ws_tcp_peek(id: number): number;
  ws_tcp_consume(id: number, n: number): void;
  ws_tcp_window(id: number): number;
  ws_tcp_commit(id: number, n: number): number;
  ws_tcp_shutdown(id: number): void;
  ws_tcp_abort(id: number): void;
  ws_tcp_release(id: number): void;
  ws_udp_send(now: number, len: number): number;
  ws_ip_send(now: number, len: number): number;
  ws_ip_input(now: number, len: number): number;
  ws_stats(): number;
  ws_tcp_info(id: number): number;
}

const K = {
  DATAGRAM: 1,
  TCP_OPEN: 2,
  TCP_READABLE: 3,
  TCP_WRITABLE: 4,
  TCP_FIN: 5,
  TCP_CLOSED: 6,
  UDP: 7,
  IP_PACKET: 8,
  PEER: 9,
  LOG: 10,
} as const;

const IO_SIZE = 70_000;

function instantiate(onOutput: (line: string) => void): Exports {
  // The WASI functions need the memory, which exists only once the instance does.
  const ref: { memory?: WebAssembly.Memory } = {};
  const instance = new WebAssembly.Instance(coreModule(), {
    wasi_snapshot_preview1: wasiImports(() => ref.memory!, (_fd, line) => onOutput(line)),
  });
  const exports = instance.exports as unknown as Exports;
  ref.memory = exports.memory;
  return exports;
}

let keyHelper: Exports | undefined;

/**
 * Derives a WireGuard public key from a private key with the core's X25519.
 *
 * @param privateKey 32 bytes.
 * @returns 32 bytes.
 */
export function derivePublicKey(privateKey: Uint8Array): Uint8Array {
  keyHelper ??= instantiate(() => {});
  const io = keyHelper.ws_io(64);
  const mem = new Uint8Array(keyHelper.memory.buffer);
  mem.set(privateKey, io);
  keyHelper.ws_public_key();
  return new Uint8Array(keyHelper.memory.buffer).slice(io + 32, io + 64);
}

/** One instance of the wasm core. See the module documentation. */
export class WasmCore {
  #x: Exports;
  #mem: Uint8Array;
  #dv: DataView;
  #io: number;
  #decoder = new TextDecoder();
  #lastEp = new Uint8Array(18);
  #lastEpValue: Endpoint = { hostname: "", port: -1 };
  #role: WasmCoreOptions["role"];

  /** @param options See {@link WasmCoreOptions}. */
  constructor(options: WasmCoreOptions) {
    if (options.privateKey.length !== 32) throw new RangeError("privateKey must be 32 bytes");
    this.#x = instantiate(options.onOutput ?? ((line) => console.error(`[wasm] ${line}`)));
    this.#io = this.#x.ws_io(IO_SIZE);
    this.#mem = new Uint8Array(this.#x.memory.buffer);
    this.#dv = new DataView(this.#x.memory.buffer);
    const mem = this.#memory();
    mem.set(options.privateKey, this.#io);
    const v4 = new Uint8Array(16);
    writeIp(options.address4 ?? "10.0.0.1", v4);
    if (v4[10] !== 0xff) throw new SyntaxError(`address4 is not an IPv4 address: ${options.address4}`);
    mem.set(v4.subarray(12), this.#io + 32);
    writeIp(options.address6 ?? "fd77:7769:7265::1", mem, this.#io + 36);
    this.#role = options.role;
    const fields = [
      options.mtu ?? 1420,
      options.rxBuffer ?? 512 * 1024,
      options.txBuffer ?? 512 * 1024,
      options.initialBuffer ?? 16 * 1024,
      options.bufferBudget ?? 2 ** 30,
      options.maxConnections ?? 8192,
      options.maxConnectionsPerPeer ?? 4096,
      options.maxHalfOpenPerPeer ?? 2048,
      (options.halfOpenTimeoutSeconds ?? 15) * 1000,
      options.maxUdpConversationsPerPeer ?? 2048,
      (options.udpTimeoutSeconds ?? 60) * 1000,
      options.keepaliveSeconds ?? 60,
      options.timeoutSeconds ?? 600,
    ];
    fields.forEach((v, i) => {
      if (!Number.isFinite(v) || v < 0) throw new RangeError(`core setting ${i} is not a count: ${v}`);
      this.#dv.setUint32(this.#io + 52 + 4 * i, Math.min(Math.round(v), 0xffff_ffff), true);
    });
    this.#x.ws_init(options.now, { client: 0, server: 1, tun: 2 }[options.role]);
  }

  /** The module's memory as bytes, refreshed when memory grew (growth detaches old views). */
  #memory(): Uint8Array {
    if (this.#mem.buffer !== this.#x.memory.buffer) {
      this.#mem = new Uint8Array(this.#x.memory.buffer);
      this.#dv = new DataView(this.#x.memory.buffer);
    }
    return this.#mem;
  }

  #writeEndpoint(ep: Endpoint, at: number): void {
    const mem = this.#memory();
    writeIp(ep.hostname, mem, at);
    this.#dv.setUint16(at + 16, ep.port, true);
  }

  #readEndpoint(at: number): Endpoint {
    const mem = this.#memory();
    let same = true;
    for (let i = 0; i < 18 && same; i++) same = mem[at + i] === this.#lastEp[i];
    if (same) return this.#lastEpValue;
    this.#lastEp.set(mem.subarray(at, at + 18));
    this.#lastEpValue = { hostname: formatIp(mem, at), port: this.#dv.getUint16(at + 16, true) };
    return this.#lastEpValue;
  }

  /**
   * Adds a peer.
   *
   * @returns The peer id.
   * @throws {Error} When the key is already a peer or an allowed prefix belongs to another
   * peer; {SyntaxError} for a prefix that is not one.
   */
  addPeer(peer: WasmPeerOptions, now: number): number {
    if (peer.publicKey.length !== 32) throw new RangeError("publicKey must be 32 bytes");
    const mem = this.#memory();
    mem.set(peer.publicKey, this.#io);
    if (peer.presharedKey) {
      if (peer.presharedKey.length !== 32) throw new RangeError("presharedKey must be 32 bytes");
      mem.set(peer.presharedKey, this.#io + 32);
    }
    if (peer.endpoint) this.#writeEndpoint(peer.endpoint, this.#io + 64);
    const allowed = peer.allowedIps ?? (this.#role === "client" ? ["0.0.0.0/0", "::/0"] : undefined);
    if (allowed && 82 + 17 * allowed.length > IO_SIZE) throw new RangeError("too many allowed prefixes");
    allowed?.forEach((p, i) => parsePrefix(p, this.#memory(), this.#io + 82 + 17 * i));
    const id = this.#x.ws_add_peer(
      now,
      peer.presharedKey ? 1 : 0,
      peer.keepalive ?? 0,
      peer.endpoint ? 1 : 0,
      allowed ? allowed.length : -1,
    );
    if (id === -1) throw new Error("that public key is already a peer");
    if (id === -3) throw new SyntaxError(`an allowed prefix is not valid: ${allowed?.join(", ")}`);
    if (id === -4) throw new Error(`an allowed prefix belongs to another peer: ${allowed?.join(", ")}`);
    if (id < 0) throw new Error("no more peer ids");
    return id;
  }

  /** Removes a peer and resets its connections (reported as closed). */
  removePeer(id: number, now: number): boolean {
    return this.#x.ws_remove_peer(now, id) === 1;
  }

  /**
   * Hands one datagram from the outer socket to the core.
   *
   * @param data The datagram (at most 65,535 bytes).
   * @param from Its source.
   * @param now The clock.
   */
  datagram(data: Uint8Array, from: Endpoint, now: number): void {
    if (data.length > IO_SIZE - 18) return;
    this.#writeEndpoint(from, this.#io);
    this.#pushDatagram(data, now);
  }

  /**
   * Same as {@link WasmCore.datagram} with the source as 18 endpoint bytes (16 address bytes,
   * little-endian port), as the core writes them: no text on the hot path.
   */
  datagramRaw(data: Uint8Array, from: Uint8Array, now: number): void {
    if (data.length > IO_SIZE - 18) return;
    this.#memory().set(from.subarray(0, 18), this.#io);
    this.#pushDatagram(data, now);
  }

  /** Copies the datagram behind the endpoint already in the io buffer and hands both over. */
  #pushDatagram(data: Uint8Array, now: number): void {
    this.#memory().set(data, this.#io + 18);
    this.#x.ws_datagram(now, data.length);
  }

  /**
   * Runs due timers and sends what is pending.
   *
   * @returns Milliseconds until `tick` is needed again.
   */
  tick(now: number): number {
    return this.#x.ws_tick(now);
  }

  /** Sends what connection operations queued and reports resulting events. */
  flush(now: number): void {
    this.#x.ws_flush(now);
  }

  /** Reads and clears the output records, calling `sink` for each in order. */
  drain(sink: CoreSink): void {
    const len = this.#x.ws_out_len();
    if (len === 0) return;
    const base = this.#x.ws_out_ptr();
    const mem = this.#memory();
    const dv = this.#dv;
    let i = base;
    const end = base + len;
    while (i < end) {
      const kind = mem[i++];
      switch (kind) {
        case K.DATAGRAM: {
          const n = dv.getUint16(i + 18, true);
          if (sink.datagramRaw) sink.datagramRaw(mem.subarray(i, i + 18), mem.subarray(i + 20, i + 20 + n));
          else sink.datagram(this.#readEndpoint(i), mem.subarray(i + 20, i + 20 + n));
          i += 20 + n;
          break;
        }
        case K.TCP_OPEN: {
          const remote = { ...this.#readEndpoint(i + 8) };
          const local = { ...this.#readEndpoint(i + 26) };
          sink.tcpOpen(dv.getUint32(i, true), dv.getUint32(i + 4, true), remote, local);
          i += 44;
          break;
        }
        case K.TCP_READABLE:
          sink.tcpReadable(dv.getUint32(i, true));
          i += 4;
          break;
        case K.TCP_WRITABLE:
          sink.tcpWritable(dv.getUint32(i, true));
          i += 4;
          break;
        case K.TCP_FIN:
          sink.tcpFin(dv.getUint32(i, true));
          i += 4;
          break;
        case K.TCP_CLOSED:
          sink.tcpClosed(dv.getUint32(i, true), mem[i + 4]!);
          i += 5;
          break;
        case K.UDP: {
          const n = dv.getUint16(i + 40, true);
          const src = { ...this.#readEndpoint(i + 4) };
          const dst = { ...this.#readEndpoint(i + 22) };
          sink.udp(dv.getUint32(i, true), src, dst, mem.subarray(i + 42, i + 42 + n));
          i += 42 + n;
          break;
        }
        case K.IP_PACKET: {
          const n = dv.getUint16(i + 4, true);
          sink.ipPacket(dv.getUint32(i, true), mem.subarray(i + 6, i + 6 + n));
          i += 6 + n;
          break;
        }
        case K.PEER:
          sink.peerEvent(dv.getUint32(i, true), mem[i + 4]!);
          i += 5;
          break;
        case K.LOG: {
          const n = dv.getUint16(i + 1, true);
          sink.log(mem[i]!, this.#decoder.decode(mem.subarray(i + 3, i + 3 + n)));
          i += 3 + n;
          break;
        }
        default:
          throw new Error(`wasm core produced an unknown record kind ${kind}`);
      }
    }
    this.#x.ws_out_clear();
  }

  /** Client role: opens a TCP connection to `dst`; returns its id. */
  tcpConnect(dst: Endpoint, now: number): number {
    this.#writeEndpoint(dst, this.#io);
    const id = this.#x.ws_tcp_connect(now);
    if (id < 0) throw new Error(`cannot connect to ${dst.hostname}:${dst.port}`);
    return id;
  }

  /**
   * Takes up to `max` received bytes of a connection (copied out), or null when none are
   * waiting. Consuming opens the TCP window again; call {@link WasmCore.flush} after a batch.
   */
  tcpRead(conn: number, max = Infinity): Uint8Array | null {
    let n = this.#x.ws_tcp_peek(conn);
    if (n === 0) return null;
    let mem = this.#memory();
    let ptr = this.#x.ws_result_ptr();
    n = Math.min(n, max);
    const first = mem.slice(ptr, ptr + n);
    this.#x.ws_tcp_consume(conn, n);
    if (n >= max) return first;
    // The ring buffer may have wrapped: take the second run too.
    const m = Math.min(this.#x.ws_tcp_peek(conn), max - n);
    if (m === 0) return first;
    mem = this.#memory();
    ptr = this.#x.ws_result_ptr();
    const both = new Uint8Array(n + m);
    both.set(first);
    both.set(mem.subarray(ptr, ptr + m), n);
    this.#x.ws_tcp_consume(conn, m);
    return both;
  }

  /**
   * Copies as much of `data` as fits into the connection's send buffer.
   *
   * @returns Bytes taken; fewer than `data.length` means full (a writable event follows).
   */
  tcpWrite(conn: number, data: Uint8Array): number {
    let done = 0;
    while (done < data.length) {
      const room = this.#x.ws_tcp_window(conn);
      if (room === 0) break;
      const n = Math.min(room, data.length - done);
      this.#memory().set(data.subarray(done, done + n), this.#x.ws_result_ptr());
      done += this.#x.ws_tcp_commit(conn, n);
    }
    return done;
  }

  /** Sends FIN after queued data. */
  tcpShutdown(conn: number): void {
    this.#x.ws_tcp_shutdown(conn);
  }

  /** Resets the connection. */
  tcpAbort(conn: number): void {
    this.#x.ws_tcp_abort(conn);
  }

  /** The host is done with the connection; it is freed when over. */
  tcpRelease(conn: number): void {
    this.#x.ws_tcp_release(conn);
  }

  #resultText(n: number): string {
    const ptr = this.#x.ws_result_ptr();
    return this.#decoder.decode(this.#memory().subarray(ptr, ptr + n));
  }

  /**
   * Sends a UDP datagram into the tunnel from `src` (any address) to `dst` (a peer's address).
   *
   * @throws {Error} When no peer owns `dst`, the families differ, or it exceeds the MTU.
   */
  udpSend(src: Endpoint, dst: Endpoint, data: Uint8Array, now: number): void {
    if (data.length > IO_SIZE - 36) throw new RangeError("datagram too large");
    this.#writeEndpoint(src, this.#io);
    this.#writeEndpoint(dst, this.#io + 18);
    this.#memory().set(data, this.#io + 36);
    const err = this.#x.ws_udp_send(now, data.length);
    if (err > 0) throw new Error(`cannot send UDP datagram: ${this.#resultText(err)}`);
  }

  /**
   * Sends a whole IP packet into the tunnel, to the peer owning its destination.
   *
   * @throws {Error} When it is not an IP packet or no peer owns the destination.
   */
  ipSend(packet: Uint8Array, now: number): void {
    if (packet.length > IO_SIZE) throw new RangeError("packet too large");
    this.#memory().set(packet, this.#io);
    const err = this.#x.ws_ip_send(now, packet.length);
    if (err > 0) throw new Error(`cannot send IP packet: ${this.#resultText(err)}`);
  }

  /**
   * `tun` role: one IP packet read from the device, into the stack (a malformed one is counted
   * in `malformedInner` and dropped).
   *
   * @throws {RangeError} For a packet longer than 65,535 bytes.
   */
  ipInput(packet: Uint8Array, now: number): void {
    if (packet.length > 65_535) throw new RangeError("packet too large");
    this.#memory().set(packet, this.#io);
    const err = this.#x.ws_ip_input(now, packet.length);
    if (err > 0) throw new Error(`cannot take IP packet: ${this.#resultText(err)}`);
  }

  /** A connection's state inside the stack (for diagnostics), or null for an unknown id. */
  tcpInfo(conn: number): Record<string, unknown> | null {
    return JSON.parse(this.#resultText(this.#x.ws_tcp_info(conn)));
  }

  /** Counters and per-peer state. */
  stats(): CoreStats {
    return {
      ...JSON.parse(this.#resultText(this.#x.ws_stats())),
      memoryBytes: this.#x.memory.buffer.byteLength,
    };
  }
}
