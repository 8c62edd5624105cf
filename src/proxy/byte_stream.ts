/**
 * One interface for the byte streams the proxy driver moves data between: tunneled connections,
 * Deno TCP connections, and node:tls sockets (TLS toward the client and the server).
 *
 * Contract: `write`, `closeWrite` and `close(false)` take effect in the order they were called,
 * even when called without awaiting the previous one (the driver issues a layer's commands in
 * order and awaits them together); `close(true)` resets at once.
 * @module
 */
import { Duplex } from "node:stream";
import { TunnelConn } from "../net/tunnel_conn.ts";

/** A bidirectional byte stream. */
export interface ByteStream {
  /** The next chunk, or null at the end of the stream; rejects when the connection failed. */
  read(): Promise<Uint8Array | null>;
  /** Sends bytes; resolves when the stream took them (backpressure). */
  write(data: Uint8Array): Promise<void>;
  /** Sends FIN after queued data; reading continues. */
  closeWrite(): Promise<void>;
  /** Closes both ways: gracefully after queued writes, or at once with a reset. */
  close(reset: boolean): void;
}

/** The subset of `Deno.Conn` the adapter needs. */
export interface ConnLike {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
  readonly readable: ReadableStream<Uint8Array>;
}

const READ_SIZE = 64 * 1024;
const SMALL_READ = 16 * 1024;
/**
 * The buffer of a connection that is quiet or exchanges small messages. A pending read holds its
 * buffer, so this is what an idle connection costs: with 64 KiB, 3,000 silent connections held
 * ~200 MB of the proxy's ~290 MB; the first read that fills it switches to {@link READ_SIZE}.
 */
const IDLE_READ_SIZE = 4 * 1024;

/** Adapts a `Deno.Conn` or a {@link TunnelConn}. */
export function byteStreamOfConn(conn: ConnLike): ByteStream {
  let tail: Promise<unknown> = Promise.resolve();
  /** Operations chained and not yet finished: with none, the next one starts at once. */
  let pending = 0;
  let closed = false;
  const chain = (op: () => Promise<unknown>): Promise<void> => {
    pending++;
    const next = (pending === 1 ? op() : tail.then(op)).then(
      () => void pending--,
      (e) => {
        pending--;
        throw e;
      },
    );
    tail = next.catch(() => {});
    return next;
  };
  // A TunnelConn hands out chunks that are already separate buffers (readChunk(): no copy, no
  // stream). Deno's own conn.readable closes the whole socket at EOF, which would break
  // half-closed connections, so a Deno.Conn is read with read().
  const tunnel = conn instanceof TunnelConn ? conn : null;
  let readBuffer = tunnel ? new Uint8Array(0) : new Uint8Array(IDLE_READ_SIZE);
  return {
    async read() {
      if (tunnel) return await tunnel.readChunk();
      // One buffer per stream (reads never overlap). A small chunk is copied out at its own size:
      // a fresh 64 KiB buffer per read cost more in zeroing and garbage collection than the copy
      // (measured: ~18% of CPU in GC on 1000-byte round trips). A large one takes the buffer.
      // The buffer starts small (a connection that stays quiet holds only that) and is large
      // from the first read that filled it on. (Going back to small on small reads cost bulk
      // transfers ~20% on loopback: a reader that caught up then read 4 KiB at a time.)
      const n = await conn.read(readBuffer);
      if (n === null) return null;
      if (n < SMALL_READ) {
        const chunk = readBuffer.slice(0, n);
        if (n === readBuffer.byteLength) readBuffer = new Uint8Array(READ_SIZE);
        return chunk;
      }
      const chunk = readBuffer.subarray(0, n);
      readBuffer = new Uint8Array(READ_SIZE);
      return chunk;
    },
    write(data) {
      return chain(async () => {
        let off = 0;
        while (off < data.byteLength) off += await conn.write(off === 0 ? data : data.subarray(off));
      });
    },
    closeWrite() {
      return chain(() => conn.closeWrite());
    },
    close(reset) {
      if (closed) return;
      const doClose = () => {
        if (closed) return;
        closed = true;
        try {
          conn.close();
        } catch { /* already closed */ }
      };
      // A tunneled connection can send a real reset; a Deno.Conn can only close.
      if (reset && tunnel) {
        closed = true;
        tunnel.abort();
      } else if (reset) doClose();
      else void chain(async () => {}).finally(doClose);
    },
  };
}

/**
 * Backpressure for node:tls in this Deno: a TLS socket decrypts everything its transport gives
 * it, paused or not, so the only place to stop is the transport. The gate sits between the two:
 * {@link nodeDuplexOf} waits at it before reading more from the network, and
 * {@link byteStreamOfNodeSocket} opens it as its reader consumes decrypted bytes.
 */
export class ReadGate {
  #limit: number;
  #buffered: () => number = () => 0;
  #waiters: (() => void)[] = [];

  /** @param limit Decrypted bytes allowed to wait for the reader before the network is left alone. */
  constructor(limit = 1024 * 1024) {
    this.#limit = limit;
  }

  /** Tells the gate how to count the bytes waiting for the reader. */
  watch(buffered: () => number): void {
    this.#buffered = buffered;
  }

  /** Resolves once the waiting bytes are under the limit. */
  async pass(): Promise<void> {
    while (this.#buffered() >= this.#limit) await new Promise<void>((r) => this.#waiters.push(r));
  }

  /** Called after the reader took bytes (or the socket ended): lets waiting transport reads go. */
  poke(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

/**
 * Adapts a node:stream Duplex (a node:tls socket). With a `gate`, the bytes waiting here and in
 * the socket's own buffer are what the gate counts.
 */
export function byteStreamOfNodeSocket(socket: Duplex, gate?: ReadGate): ByteStream {
  const chunks: Uint8Array[] = [];
  let ended = false;
  let failure: Error | null = null;
  let wake: (() => void) | null = null;
  let tail: Promise<unknown> = Promise.resolve();
  let waiting = 0;
  gate?.watch(() => waiting + socket.readableLength);
  const notify = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  socket.on("data", (chunk: Uint8Array) => {
    chunks.push(chunk);
    waiting += chunk.byteLength;
    if (chunks.length >= 4) socket.pause();
    notify();
  });
  socket.on("end", () => {
    ended = true;
    notify();
    gate?.poke();
  });
  socket.on("error", (e: Error) => {
    failure ??= e;
    notify();
    gate?.poke();
  });
  socket.on("close", () => {
    if (!ended) failure ??= new Error("connection closed");
    notify();
    gate?.poke();
  });
  const chain = (op: () => Promise<unknown>): Promise<void> => {
    const next = tail.then(op);
    tail = next.catch(() => {});
    return next.then(() => {});
  };
  return {
    async read() {
      for (;;) {
        const chunk = chunks.shift();
        if (chunk) {
          waiting -= chunk.byteLength;
          if (chunks.length < 2 && socket.isPaused()) socket.resume();
          gate?.poke();
          return chunk;
        }
        if (ended) return null;
        if (failure) throw failure;
        if (socket.isPaused()) socket.resume();
        await new Promise<void>((r) => (wake = r));
      }
    },
    write(data) {
      return chain(() =>
        new Promise<void>((resolve, reject) => {
          if (failure) return reject(failure);
          if (socket.destroyed) return reject(new Error("connection closed"));
          if (socket.write(data)) return resolve();
          const done = (e?: Error) => {
            socket.off("drain", onDrain);
            socket.off("close", onClose);
            if (e) reject(e);
            else resolve();
          };
          const onDrain = () => done();
          const onClose = () => done(failure ?? new Error("connection closed"));
          socket.on("drain", onDrain);
          socket.on("close", onClose);
        })
      );
    },
    closeWrite() {
      return chain(() => new Promise<void>((resolve) => socket.end(resolve)));
    },
    close(reset) {
      if (reset) socket.destroy();
      else {void chain(() => new Promise<void>((resolve) => socket.end(resolve))).finally(() =>
          socket.destroy()
        );}
    },
  };
}

/**
 * A node:stream Duplex over a {@link ByteStream}, starting with `initial` bytes already read
 * from it: what node:tls needs to terminate TLS on a connection we classified by its first bytes.
 */
export function nodeDuplexOf(stream: ByteStream, initial: Uint8Array, gate?: ReadGate): Duplex {
  let pumping = false;
  const duplex: Duplex = new Duplex({
    read() {
      if (pumping) return;
      pumping = true;
      (async () => {
        try {
          for (;;) {
            if (gate) await gate.pass();
            const chunk = await stream.read();
            if (chunk === null) {
              duplex.push(null);
              return;
            }
            if (!duplex.push(chunk)) return;
          }
        } catch (e) {
          duplex.destroy(e as Error);
        } finally {
          pumping = false;
        }
      })();
    },
    write(chunk: Uint8Array, _encoding, callback) {
      stream.write(chunk).then(() => callback(), (e) => callback(e));
    },
    final(callback) {
      stream.closeWrite().then(() => callback(), () => callback());
    },
    destroy(error, callback) {
      stream.close(error !== null);
      callback(error);
    },
  });
  if (initial.byteLength > 0) duplex.push(initial);
  return duplex;
}
