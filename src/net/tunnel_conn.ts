/**
 * A TCP connection that arrived through the tunnel, shaped like `Deno.Conn`: Web Streams with
 * real backpressure both ways, `closeWrite()`, `close()`, and the addresses as the client saw
 * them (`localAddr` is the destination it dialed).
 *
 * The connection holds no bytes of its own beyond one chunk in each stream: received data stays
 * in the core's socket buffer until the reader asks for it (so the TCP window toward the client
 * closes when nobody reads), and a write resolves once the core's send buffer took it (so
 * `writable` stops accepting when the client stops reading).
 *
 * Besides the streams, `read()`/`write()` (as on `Deno.Conn`) and `readChunk()` go to the core
 * directly: no stream machinery per chunk, which counts on short request/response round trips.
 * Use the streams or the methods on one side of a connection, not both.
 * @module
 */

/** What a connection needs from the driver that owns the core. */
export interface ConnDriver {
  /** Up to all waiting received bytes, or null when none are waiting. */
  read(conn: number): Uint8Array | null;
  /** Bytes of `data` the send buffer took. */
  write(conn: number, data: Uint8Array): number;
  shutdown(conn: number): void;
  abort(conn: number): void;
  release(conn: number): void;
}

/** The WireGuard peer a connection or datagram came from. */
export interface TunnelPeer {
  /** The peer's public key (base64). */
  publicKey: string;
  /** The peer's outer UDP address, when known. */
  endpoint: Deno.NetAddr | null;
}

/** Raised on reads and writes of a connection that was reset. */
export class ConnectionResetError extends Error {
  constructor(message = "connection reset") {
    super(message);
    this.name = "ConnectionReset";
  }
}

/** A tunneled TCP connection. */
export class TunnelConn {
  /** The destination the client dialed (the original server address). */
  readonly localAddr: Deno.NetAddr;
  /** The client's address inside the tunnel. */
  readonly remoteAddr: Deno.NetAddr;
  /** The peer it came through. */
  readonly peer: TunnelPeer;
  /** Bytes from the client. */
  readonly readable: ReadableStream<Uint8Array<ArrayBuffer>>;
  /** Bytes to the client. */
  readonly writable: WritableStream<Uint8Array>;

  #id: number;
  #driver: ConnDriver;
  #wakeRead: (() => void) | null = null;
  #wakeWrite: (() => void) | null = null;
  #fin = false;
  #reset: Error | null = null;
  #released = false;
  #readController!: ReadableStreamDefaultController<Uint8Array<ArrayBuffer>>;
  #leftover: Uint8Array | null = null;
  /** The last of the writes made with `write()`, which `closeWrite()` waits for. */
  #writeTail: Promise<void> = Promise.resolve();
  #writing = 0;
  /** Our sending side was closed (FIN queued): writes fail. */
  #shut = false;

  /** Made by the listener's driver; not for direct use. */
  constructor(id: number, driver: ConnDriver, local: Deno.NetAddr, remote: Deno.NetAddr, peer: TunnelPeer) {
    this.#id = id;
    this.#driver = driver;
    this.localAddr = local;
    this.remoteAddr = remote;
    this.peer = peer;
    this.readable = new ReadableStream<Uint8Array<ArrayBuffer>>({
      start: (c) => {
        this.#readController = c;
      },
      pull: (c) => this.#pull(c),
      cancel: () => {
        // Nobody will read: the client must not keep sending into a closed window.
        if (!this.#fin) this.#abort();
      },
      // No read-ahead: a chunk leaves the core only when a reader asks (so `readChunk()` and a
      // stream that was never read do not compete for it).
    }, { highWaterMark: 0 });
    this.writable = new WritableStream<Uint8Array>({
      write: (chunk) => this.#write(chunk),
      close: () => this.#shutdown(),
      abort: () => this.#abort(),
    }, { highWaterMark: 1 });
  }

  /** This side's view of the connection (for diagnostics). */
  debugState(): Record<string, boolean> {
    return {
      waitingToRead: this.#wakeRead !== null,
      waitingToWrite: this.#wakeWrite !== null,
      fin: this.#fin,
      reset: this.#reset !== null,
      released: this.#released,
    };
  }

  /** The core's id of this connection. */
  get id(): number {
    return this.#id;
  }

  /** Hands the reader everything waiting, or the end; otherwise waits for the core to say more came. */
  #pull(c: ReadableStreamDefaultController<Uint8Array<ArrayBuffer>>): Promise<void> | void {
    if (this.#reset) return c.error(this.#reset);
    const data = this.#driver.read(this.#id);
    if (data) return c.enqueue(data as Uint8Array<ArrayBuffer>);
    if (this.#fin) return c.close();
    return new Promise<void>((resolve) => {
      this.#wakeRead = resolve;
    }).then(() => this.#pull(c));
  }

  async #write(chunk: Uint8Array): Promise<void> {
    let done = 0;
    while (done < chunk.length) {
      if (this.#reset) throw this.#reset;
      if (this.#released) throw new Deno.errors.BadResource("connection is closed");
      if (this.#shut) throw new Deno.errors.BrokenPipe("the connection's sending side is closed");
      done += this.#driver.write(this.#id, done === 0 ? chunk : chunk.subarray(done));
      if (done < chunk.length) {
        await new Promise<void>((resolve) => {
          this.#wakeWrite = resolve;
        });
      }
    }
  }

  #shutdown(): void {
    if (this.#shut) return;
    this.#shut = true;
    this.#driver.shutdown(this.#id);
  }

  #abort(): void {
    if (!this.#released) this.#driver.abort(this.#id);
  }

  /** Driver: received data (or the end of it) is waiting. */
  onReadable(): void {
    const wake = this.#wakeRead;
    this.#wakeRead = null;
    wake?.();
  }

  /** Driver: there is room to send again. */
  onWritable(): void {
    const wake = this.#wakeWrite;
    this.#wakeWrite = null;
    wake?.();
  }

  /** Driver: the client finished sending (FIN after all its data). */
  onFin(): void {
    this.#fin = true;
    this.onReadable();
  }

  /** Driver: the connection is over. `reset` when it did not end with FINs both ways. */
  onClosed(reset: Error | null): void {
    if (reset && !this.#reset) {
      this.#reset = reset;
      try {
        if (!this.#fin) this.#readController.error(reset);
      } catch { /* already closed */ }
    }
    this.#fin = true;
    this.onReadable();
    this.onWritable();
  }

  /** Closes our sending side (FIN) once queued data is sent; reading goes on. */
  async closeWrite(): Promise<void> {
    if (this.writable.locked) throw new TypeError("writable is locked");
    await this.#writeTail;
    await this.writable.close();
  }

  /** Resets the connection (RST to the client) and releases it, e.g. when a relay broke off. */
  abort(): void {
    if (this.#released) return;
    this.#reset ??= new ConnectionResetError("connection aborted");
    this.#driver.abort(this.#id);
    this.close();
  }

  /** Closes the connection: FIN, or a reset when received data was left unread (as a kernel does). */
  close(): void {
    if (this.#released) return;
    if (!this.#reset) {
      if (this.#driver.read(this.#id)) this.#driver.abort(this.#id);
      else this.#shutdown();
    }
    this.#released = true;
    this.#driver.release(this.#id);
    const closed = new Deno.errors.BadResource("connection is closed");
    try {
      this.#readController.error(closed);
    } catch { /* already closed */ }
    this.onReadable();
    this.onWritable();
  }

  /**
   * The received bytes waiting (up to 64 KiB, a buffer of their own), waiting for some if there
   * are none; null at the end. Rejects after a reset.
   */
  async readChunk(): Promise<Uint8Array | null> {
    for (;;) {
      if (this.#reset) throw this.#reset;
      if (this.#released) throw new Deno.errors.BadResource("connection is closed");
      const data = this.#driver.read(this.#id);
      if (data) return data;
      if (this.#fin) return null;
      await new Promise<void>((resolve) => {
        this.#wakeRead = resolve;
      });
    }
  }

  /** Reads into `p` like `Deno.Conn.read`: the number of bytes, or null at the end. */
  async read(p: Uint8Array): Promise<number | null> {
    if (!this.#leftover) {
      const chunk = await this.readChunk();
      if (chunk === null) return null;
      this.#leftover = chunk;
    }
    const n = Math.min(p.length, this.#leftover.length);
    p.set(this.#leftover.subarray(0, n));
    this.#leftover = n < this.#leftover.length ? this.#leftover.subarray(n) : null;
    return n;
  }

  /** Writes `p` like `Deno.Conn.write`; resolves when the send buffer took all of it. */
  async write(p: Uint8Array): Promise<number> {
    // With no write in progress, this one starts at once (no extra turn of the microtask queue).
    const op = this.#writing === 0 ? this.#write(p) : this.#writeTail.then(() => this.#write(p));
    this.#writing++;
    this.#writeTail = op.then(() => void this.#writing--, () => void this.#writing--);
    await op;
    return p.length;
  }

  /** Same as {@link TunnelConn.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
