/**
 * What every driver of a server-side wasm core shares, whatever carries its packets (WireGuard
 * over UDP in {@link ./wireguard_listener.ts}, a TUN device in {@link ./tun_listener.ts}): the
 * one timer at the core's next deadline, the tunneled TCP connections ({@link TunnelConn}) and
 * their accept queue, the stream of UDP datagrams, and the replies sent back into the stack.
 *
 * A subclass owns the I/O: it feeds the core, says what a peer id stands for
 * ({@link StackDriver.peerOf}), sends what the core produced ({@link StackDriver.flushOutput},
 * and the `datagramRaw`/`ipPacket` sinks), and closes its device after
 * {@link StackDriver.closeStack}.
 * @module
 */
import { CloseReason, type CoreSink, type Endpoint, type WasmCore } from "../core/wasm_core.ts";
import { type ConnDriver, ConnectionResetError, TunnelConn, type TunnelPeer } from "./tunnel_conn.ts";

/**
 * Most bytes handed to a reader at once. Larger chunks save little per byte, but allocations
 * past glibc's mmap threshold (128 KiB, raised as such blocks are freed) end up fragmenting the
 * heap, and RSS stays at its peak.
 */
const READ_CHUNK = 64 * 1024;

const LEVELS = ["debug", "info", "warn"] as const;

/** A UDP datagram inside the tunnel. */
export interface TunnelDatagram {
  data: Uint8Array;
  /** Sender (the client's tunnel address). */
  src: Deno.NetAddr;
  /** Destination the client addressed. */
  dst: Deno.NetAddr;
  /** The peer it came through. */
  peer: TunnelPeer;
}

/** The driver's own counters. */
export interface StackDriverStats {
  /** Tunnel UDP datagrams dropped because `datagrams` was not read. */
  datagramsDropped: number;
  /** Inputs whose processing failed inside the core (each is logged). */
  internalErrors: number;
  /** Connections handed to the application and not yet closed. */
  connectionsActive: number;
}

/** Where the core's log lines and the driver's warnings go. */
export type DriverLog = (level: "debug" | "info" | "warn", message: string) => void;

function netAddr(ep: Endpoint, transport: "tcp" | "udp"): Deno.NetAddr {
  return { transport, hostname: ep.hostname, port: ep.port };
}

/** The shared part of a core's driver. Iterate it (or `accept()`) for connections. */
export abstract class StackDriver implements AsyncIterable<TunnelConn>, CoreSink, ConnDriver {
  /** UDP datagrams that clients sent (to any address). */
  readonly datagrams: ReadableStream<TunnelDatagram>;
  /** Resolves when the driver has shut down. */
  readonly closed: Promise<void>;

  /** The core this driver owns. */
  protected readonly core: WasmCore;
  /** Where warnings go. */
  protected readonly onLog: DriverLog;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #settleQueued = false;
  #closing = false;
  #resolveClosed!: () => void;
  #conns = new Map<number, TunnelConn>();
  #acceptQueue: TunnelConn[] = [];
  #acceptWaiters: { resolve: (c: TunnelConn) => void; reject: (e: Error) => void }[] = [];
  #datagramController!: ReadableStreamDefaultController<TunnelDatagram>;
  #datagramsDropped = 0;
  #internalErrors = 0;

  /** @param datagramQueue Datagrams queued in `datagrams` before new ones are dropped. */
  constructor(core: WasmCore, onLog: DriverLog, datagramQueue: number) {
    this.core = core;
    this.onLog = onLog;
    this.datagrams = new ReadableStream<TunnelDatagram>({
      start: (c) => {
        this.#datagramController = c;
      },
    }, { highWaterMark: datagramQueue });
    this.closed = new Promise((r) => (this.#resolveClosed = r));
  }

  /** What peer id `id` stands for (called for every connection and datagram). */
  protected abstract peerOf(id: number): TunnelPeer;

  /** Sends what the drained records queued (called after every drain). */
  protected abstract flushOutput(): void;

  /** Whether `close()` has begun. */
  protected get closing(): boolean {
    return this.#closing;
  }

  // ---- connections ----

  /** Waits for the next tunneled TCP connection. */
  accept(): Promise<TunnelConn> {
    const next = this.#acceptQueue.shift();
    if (next) return Promise.resolve(next);
    if (this.#closing) return Promise.reject(new Deno.errors.BadResource("listener is closed"));
    return new Promise((resolve, reject) => this.#acceptWaiters.push({ resolve, reject }));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TunnelConn> {
    while (true) {
      try {
        yield await this.accept();
      } catch (e) {
        if (e instanceof Deno.errors.BadResource) return;
        throw e;
      }
    }
  }

  /**
   * Sends a UDP datagram to a client, e.g. a reply: `src` may be any address (usually the `dst`
   * of the datagram being answered), `dst` a client's address.
   */
  sendDatagram(
    d: { data: Uint8Array; src: Deno.NetAddr | Endpoint; dst: Deno.NetAddr | Endpoint },
  ): Promise<void> {
    try {
      this.core.udpSend(d.src, d.dst, d.data, performance.now());
    } catch (e) {
      return Promise.reject(e);
    }
    this.drain();
    return Promise.resolve();
  }

  /**
   * Sends a whole IP packet to the client its destination belongs to (e.g. an ICMP error built
   * with {@link ./icmp.ts}).
   */
  sendPacket(packet: Uint8Array): Promise<void> {
    try {
      this.core.ipSend(packet, performance.now());
    } catch (e) {
      return Promise.reject(e);
    }
    this.drain();
    return Promise.resolve();
  }

  /** A connection's state in the stack and in the stream layer (for diagnostics). */
  connectionState(conn: TunnelConn): Record<string, unknown> {
    return { stack: this.core.tcpInfo(conn.id), streams: conn.debugState() };
  }

  /** The driver's counters (a subclass adds the core's and its own). */
  protected driverStats(): StackDriverStats {
    return {
      datagramsDropped: this.#datagramsDropped,
      internalErrors: this.#internalErrors,
      connectionsActive: this.#conns.size,
    };
  }

  /**
   * The first half of closing: resets open connections (sent before returning), stops the
   * timer, ends `accept()` and `datagrams`. Returns false when closing had begun already.
   */
  protected closeStack(): boolean {
    if (this.#closing) return false;
    this.#closing = true;
    const now = performance.now();
    for (const [id, conn] of this.#conns) {
      this.core.tcpAbort(id);
      conn.onClosed(new ConnectionResetError("listener closed"));
    }
    this.core.flush(now);
    this.drain();
    this.#conns.clear();
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const w of this.#acceptWaiters.splice(0)) {
      w.reject(new Deno.errors.BadResource("listener is closed"));
    }
    try {
      this.#datagramController.close();
    } catch { /* already closed */ }
    return true;
  }

  /** The last step of closing, once the device is closed. */
  protected closedDone(): void {
    this.#resolveClosed();
  }

  // ---- driver: timer, core ----

  /**
   * Runs one input through the core and drains what it says; a fault inside the core must not
   * stop the driver: it is counted and said now and then.
   */
  protected guarded(what: string, input: () => void): void {
    try {
      input();
      this.drain();
    } catch (e) {
      this.#internalErrors++;
      if (this.#internalErrors === 1 || this.#internalErrors % 1000 === 0) {
        this.onLog("warn", `${what} failed (${this.#internalErrors} so far): ${(e as Error).stack}`);
      }
    }
  }

  /** Drains the core's output; called after every input. */
  protected drain(): void {
    this.core.drain(this);
    this.flushOutput();
  }

  /** Settles once the current turn of work is over. */
  protected queueSettle(): void {
    if (this.#settleQueued) return;
    this.#settleQueued = true;
    queueMicrotask(() => {
      this.#settleQueued = false;
      this.settle();
    });
  }

  /** Flushes, runs due timers, and re-arms the single timer at the core's next deadline. */
  protected settle(): void {
    if (this.#closing) return;
    const now = performance.now();
    const delay = Math.max(1, this.core.tick(now));
    this.drain();
    const at = now + delay;
    if (this.#timer !== undefined && this.#timerAt <= at) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = Infinity;
      this.settle();
    }, delay);
  }

  // CoreSink: what the core says.

  /** @internal */
  datagram(): void {
    // Only WireGuard cores send datagrams, and their driver takes them raw.
  }

  /** @internal */
  ipPacket(_peer: number, _data: Uint8Array): void {}

  /** @internal */
  tcpOpen(conn: number, peer: number, remote: Endpoint, local: Endpoint): void {
    const c = new TunnelConn(conn, this, netAddr(local, "tcp"), netAddr(remote, "tcp"), {
      ...this.peerOf(peer),
    });
    this.#conns.set(conn, c);
    const waiter = this.#acceptWaiters.shift();
    if (waiter) waiter.resolve(c);
    else this.#acceptQueue.push(c);
  }

  /** @internal */
  tcpReadable(conn: number): void {
    this.#conns.get(conn)?.onReadable();
  }

  /** @internal */
  tcpWritable(conn: number): void {
    this.#conns.get(conn)?.onWritable();
  }

  /** @internal */
  tcpFin(conn: number): void {
    this.#conns.get(conn)?.onFin();
  }

  /** @internal */
  tcpClosed(conn: number, reason: number): void {
    const c = this.#conns.get(conn);
    if (!c) return;
    this.#conns.delete(conn);
    const why = reason === CloseReason.PeerRemoved ? "peer removed" : "connection reset by peer";
    c.onClosed(reason === CloseReason.Graceful ? null : new ConnectionResetError(why));
    // The application may still hold the conn; the core frees the socket once it is released.
    this.core.tcpRelease(conn);
  }

  /** @internal */
  udp(peer: number, src: Endpoint, dst: Endpoint, data: Uint8Array): void {
    const c = this.#datagramController;
    if ((c.desiredSize ?? 0) <= 0) {
      this.#datagramsDropped++;
      return;
    }
    c.enqueue({
      data: data.slice(),
      src: netAddr(src, "udp"),
      dst: netAddr(dst, "udp"),
      peer: { ...this.peerOf(peer) },
    });
  }

  /** @internal */
  peerEvent(peer: number): void {
    this.peerOf(peer);
  }

  /** @internal */
  log(level: number, text: string): void {
    this.onLog(LEVELS[level] ?? "info", text);
  }

  // ConnDriver: what connections ask of the core.

  /** @internal */
  read(conn: number): Uint8Array | null {
    const data = this.core.tcpRead(conn, READ_CHUNK);
    if (data) this.queueSettle();
    return data;
  }

  /** @internal */
  write(conn: number, data: Uint8Array): number {
    const n = this.core.tcpWrite(conn, data);
    if (n > 0) this.queueSettle();
    return n;
  }

  /** @internal */
  shutdown(conn: number): void {
    this.core.tcpShutdown(conn);
    this.queueSettle();
  }

  /** @internal */
  abort(conn: number): void {
    this.core.tcpAbort(conn);
    this.queueSettle();
  }

  /** @internal */
  release(conn: number): void {
    this.core.tcpRelease(conn);
    this.#conns.delete(conn);
    this.queueSettle();
  }
}
