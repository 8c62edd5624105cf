/**
 * Synthetic WireGuard peers for load: each peer is a client-role wasm core (its own key, its own
 * tunnel address, its own UDP socket on an address of its own), so the server sees a real
 * handshake and real TCP from every one. A peer opens one TCP connection through the tunnel to
 * the origin and makes `requests` plain HTTP/1.1 GETs on it one after the other (keep-alive),
 * then closes it with a FIN. All peers of a process share one timer; every wait is bounded by
 * the run's deadline.
 *
 * Used by bench/synthetic_peers.ts (1,000 peers in a few processes) and by the short test in
 * tests/synthetic_peers_test.ts.
 * @module
 */
import { decodeKey } from "../src/core/keys.ts";
import { type CoreSink, type Endpoint, PeerEventKind, WasmCore } from "../src/core/wasm_core.ts";

/** One synthetic peer. */
export interface PeerSpec {
  /** Its number in the run (for the report). */
  index: number;
  /** Its private key, base64. */
  privateKey: string;
  /** The local address its UDP socket binds (distinct per peer, as distinct devices would be). */
  bindAddress: string;
  /** Its IPv4 address inside the tunnel. */
  address4: string;
}

/** Where the peers go and what they do. */
export interface LoadTarget {
  serverHost: string;
  serverPort: number;
  /** The server's public key, base64. */
  serverPublicKey: string;
  /** The origin, as seen through the tunnel. */
  origin: Endpoint;
  /** The Host header and path of each GET. */
  host: string;
  path: string;
  /** GETs per peer, one after the other on one connection. */
  requests: number;
}

/** What one peer did; times in ms since the run's start. */
export interface PeerResult {
  index: number;
  /** When the peer began (its first packet). */
  startMs: number;
  /** When its handshake completed, or null. */
  handshakeMs: number | null;
  /** Latency of each completed GET. */
  requestMs: number[];
  /** When its last GET completed, or null. */
  doneMs: number | null;
  /** Why it did not complete, if it did not. */
  failure?: string;
}

/** Options of {@link runPeers}. */
export interface RunOptions {
  /** The run's start (Date.now() clock); peers begin at it or later. */
  startAt: number;
  /** Peers started per second (0: all at once). */
  startRate: number;
  /** The run ends at this time (Date.now() clock) whatever is still open. */
  deadline: number;
  /** Called as each peer's handshake completes. */
  onUp?: (index: number, ms: number) => void;
  /** Timer period for the cores' timers, ms (default 20). */
  tickMs?: number;
}

const encoder = new TextEncoder();
const HEAD_END = encoder.encode("\r\n\r\n");

function indexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  outer: for (let i = from; i <= hay.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

class Peer {
  readonly result: PeerResult;
  #core: WasmCore;
  #socket: Deno.DatagramConn;
  #conn = -1;
  #established = false;
  #sentAt = 0;
  #buffer = new Uint8Array(0);
  #done = false;
  #closed = false;
  #receiving: Promise<void> = Promise.resolve();
  #out: { to: Endpoint; data: Uint8Array }[] = [];
  #readable = false;
  #released: number[] = [];
  #sink: CoreSink;
  /** When the core's timers next need a tick (Date.now() clock). */
  nextTickAt = 0;

  constructor(
    readonly spec: PeerSpec,
    readonly target: LoadTarget,
    readonly t0: number,
    readonly onUp: (index: number, ms: number) => void,
  ) {
    this.result = { index: spec.index, startMs: 0, handshakeMs: null, requestMs: [], doneMs: null };
    this.#socket = Deno.listenDatagram({ transport: "udp", hostname: spec.bindAddress, port: 0 });
    this.#core = new WasmCore({
      privateKey: decodeKey(spec.privateKey),
      role: "client",
      address4: spec.address4,
      now: Date.now(),
    });
    this.#core.addPeer({
      publicKey: decodeKey(target.serverPublicKey),
      endpoint: { hostname: target.serverHost, port: target.serverPort },
    }, Date.now());
    this.#sink = {
      datagram: (to, data) => this.#out.push({ to: { ...to }, data: data.slice() }),
      tcpOpen: () => {},
      tcpReadable: () => this.#readable = true,
      tcpWritable: () => {},
      tcpFin: () => this.#fail("the server closed the connection early"),
      tcpClosed: (id, reason) => {
        this.#released.push(id);
        if (!this.#done) this.#fail(`the connection closed (${reason === 1 ? "reset" : "closed"})`);
      },
      udp: () => {},
      ipPacket: () => {},
      peerEvent: (_peer, what) => {
        if (what === PeerEventKind.HandshakeComplete && this.result.handshakeMs === null) {
          this.result.handshakeMs = Date.now() - this.t0;
          this.onUp(spec.index, this.result.handshakeMs);
        }
      },
      log: () => {},
    };
  }

  /** Whether the peer has nothing more to do. */
  get finished(): boolean {
    return this.#done || this.result.failure !== undefined;
  }

  /** Sends the first packet: the SYN, which makes the core start the handshake. */
  start(): void {
    this.result.startMs = Date.now() - this.t0;
    this.#receiving = this.#receive();
    this.#conn = this.#core.tcpConnect(this.target.origin, Date.now());
    this.#pump();
  }

  tick(): void {
    if (this.#closed) return;
    const now = Date.now();
    // The core says when it needs the next tick; between ticks only arriving datagrams drive it.
    this.nextTickAt = now + Math.min(1_000, Math.max(10, this.#core.tick(now)));
    this.#pump();
  }

  /** Closes the socket (the server keeps its session until it expires). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.finished) this.#fail("the run's deadline passed");
    this.#socket.close();
    await this.#receiving;
  }

  #fail(why: string): void {
    if (this.finished) return;
    this.result.failure = why;
  }

  async #receive(): Promise<void> {
    try {
      for (;;) {
        const [data, from] = await this.#socket.receive();
        const addr = from as Deno.NetAddr;
        const now = Date.now();
        this.#core.datagram(data, { hostname: addr.hostname, port: addr.port }, now);
        this.#pump();
        this.nextTickAt = Math.min(this.nextTickAt, now + 50);
      }
    } catch {
      // Closed.
    }
  }

  #request(): void {
    const head = `GET ${this.target.path} HTTP/1.1\r\nHost: ${this.target.host}\r\n` +
      `User-Agent: wirescope-synthetic/${this.spec.index}\r\n\r\n`;
    this.#sentAt = performance.now();
    const bytes = encoder.encode(head);
    if (this.#core.tcpWrite(this.#conn, bytes) !== bytes.length) this.#fail("the request did not fit");
  }

  /** Takes a complete response off the buffer, if there is one. */
  #response(): boolean {
    const end = indexOf(this.#buffer, HEAD_END, 0);
    if (end < 0) return false;
    const head = new TextDecoder().decode(this.#buffer.subarray(0, end));
    if (!/^HTTP\/1\.1 200 /.test(head)) {
      const body = new TextDecoder().decode(this.#buffer.subarray(end + 4, end + 124)).trim();
      this.#fail(`unexpected response: ${head.split("\r\n")[0]}: ${body}`);
      return false;
    }
    const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? NaN);
    if (!Number.isFinite(length)) {
      this.#fail("a response without Content-Length");
      return false;
    }
    if (this.#buffer.length < end + 4 + length) return false;
    this.#buffer = this.#buffer.slice(end + 4 + length);
    return true;
  }

  #pump(): void {
    if (this.#closed) return;
    this.#core.drain(this.#sink);
    if (this.#conn >= 0 && !this.finished) {
      if (!this.#established) {
        const state = String(this.#core.tcpInfo(this.#conn)?.state ?? "");
        // The client role reports no event for an established connection: its state tells.
        if (state !== "" && !/^(syn|listen|closed)/i.test(state)) {
          this.#established = true;
          this.#request();
        }
      }
      if (this.#readable) {
        this.#readable = false;
        for (let i = 0; i < 64; i++) {
          const chunk = this.#core.tcpRead(this.#conn);
          if (!chunk) break;
          const grown = new Uint8Array(this.#buffer.length + chunk.length);
          grown.set(this.#buffer);
          grown.set(chunk, this.#buffer.length);
          this.#buffer = grown;
        }
        while (!this.finished && this.#response()) {
          this.result.requestMs.push(performance.now() - this.#sentAt);
          if (this.result.requestMs.length >= this.target.requests) {
            this.#done = true;
            this.result.doneMs = Date.now() - this.t0;
            this.#core.tcpShutdown(this.#conn);
          } else {
            this.#request();
          }
        }
      }
    }
    for (const id of this.#released.splice(0)) this.#core.tcpRelease(id);
    this.#core.flush(Date.now());
    this.#core.drain(this.#sink);
    for (const d of this.#out.splice(0)) {
      this.#socket.send(d.data, { transport: "udp", hostname: d.to.hostname, port: d.to.port }).catch(
        () => {},
      );
    }
  }
}

/**
 * Runs `specs` against `target` until every peer has made its requests or failed, or the
 * deadline passes; resolves with one result per peer. Peers stay up (sockets open) until all are
 * finished, so the server holds every session at once.
 */
export async function runPeers(
  specs: PeerSpec[],
  target: LoadTarget,
  opts: RunOptions,
): Promise<PeerResult[]> {
  const peers = specs.map((s) => new Peer(s, target, opts.startAt, opts.onUp ?? (() => {})));
  const wait = opts.startAt - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  let started = 0;
  const tickMs = opts.tickMs ?? 20;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const now = Date.now();
      const due = opts.startRate > 0
        ? Math.min(peers.length, Math.floor((now - opts.startAt) * opts.startRate / 1000) + 1)
        : peers.length;
      while (started < due) peers[started++]!.start();
      let open = 0;
      for (let i = 0; i < started; i++) {
        const p = peers[i]!;
        if (!p.finished) {
          if (p.nextTickAt <= now) p.tick();
          open++;
        }
      }
      if ((started === peers.length && open === 0) || now > opts.deadline) {
        clearInterval(timer);
        resolve();
      }
    }, tickMs);
  });
  await Promise.all(peers.map((p) => p.close()));
  return peers.map((p) => p.result);
}
