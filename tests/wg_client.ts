/**
 * A WireGuard client inside the test process: a client-role wasm core on a loopback UDP socket,
 * talking to a `listenWireGuard()` server like a phone would, without namespaces or root. It opens
 * TCP connections and sends UDP from its tunnel address (10.0.0.2), for tests of what the proxy
 * does with many connections from one peer.
 * @module
 */
import { generatePrivateKey, publicKeyOf } from "../src/core/keys.ts";
import { type CoreSink, type Endpoint, WasmCore } from "../src/core/wasm_core.ts";

function keyBytes(base64: string): Uint8Array {
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

/** One TCP connection of the client. */
export interface ClientConn {
  id: number;
  /** Set once the handshake completed. */
  established: boolean;
  /** Bytes received. */
  received: number[];
  /** The server sent FIN. */
  fin: boolean;
  /** Set when the connection is gone: 0 graceful, 1 reset. */
  closed: number | null;
}

/** The client. */
export class WgClient {
  readonly publicKey: string;
  readonly address4 = "10.0.0.2";
  #core: WasmCore;
  #socket: Deno.DatagramConn;
  #conns = new Map<number, ClientConn>();
  #timer: ReturnType<typeof setInterval>;
  #closed = false;
  #receiving: Promise<void>;
  /** UDP datagrams that came back through the tunnel. */
  readonly udp: { src: Endpoint; dst: Endpoint; data: Uint8Array }[] = [];

  /** Makes a client for the server at 127.0.0.1:`serverPort`; add {@link publicKey} as its peer. */
  constructor(serverPort: number, serverPublicKey: string) {
    const privateKey = generatePrivateKey();
    this.publicKey = publicKeyOf(privateKey);
    this.#socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    this.#core = new WasmCore({
      privateKey: keyBytes(privateKey),
      role: "client",
      address4: this.address4,
      address6: "fd77:7769:7265::2",
      now: Date.now(),
    });
    this.#core.addPeer(
      { publicKey: keyBytes(serverPublicKey), endpoint: { hostname: "127.0.0.1", port: serverPort } },
      Date.now(),
    );
    this.#timer = setInterval(() => this.#tick(), 5);
    this.#receiving = this.#receive();
  }

  /** Opens a TCP connection through the tunnel. */
  connect(hostname: string, port: number): ClientConn {
    const id = this.#core.tcpConnect({ hostname, port }, Date.now());
    const conn: ClientConn = { id, established: false, received: [], fin: false, closed: null };
    this.#conns.set(id, conn);
    this.#drain();
    return conn;
  }

  /** Queues bytes on a connection (as many as fit). */
  write(conn: ClientConn, data: Uint8Array): number {
    const n = this.#core.tcpWrite(conn.id, data);
    this.#core.flush(Date.now());
    this.#drain();
    return n;
  }

  /** Resets a connection. */
  abort(conn: ClientConn): void {
    if (conn.closed !== null) return;
    this.#core.tcpAbort(conn.id);
    this.#core.flush(Date.now());
    this.#drain();
  }

  /** Sends a UDP datagram from the tunnel address. */
  sendUdp(srcPort: number, dst: Endpoint, data: Uint8Array): void {
    this.#core.udpSend({ hostname: this.address4, port: srcPort }, dst, data, Date.now());
    this.#drain();
  }

  /** Waits (bounded) until `done()` holds. */
  async until(done: () => boolean, ms: number, what: string): Promise<void> {
    const end = Date.now() + ms;
    while (!done()) {
      if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Stops the client (its connections are left as they are on the server side). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#socket.close();
    await this.#receiving;
  }

  async #receive(): Promise<void> {
    try {
      for (;;) {
        const [data, from] = await this.#socket.receive();
        const addr = from as Deno.NetAddr;
        this.#core.datagram(data, { hostname: addr.hostname, port: addr.port }, Date.now());
        this.#drain();
      }
    } catch {
      // Closed.
    }
  }

  #tick(): void {
    if (this.#closed) return;
    this.#core.tick(Date.now());
    this.#drain();
  }

  #drain(): void {
    if (this.#closed) return;
    const out: { to: Endpoint; data: Uint8Array }[] = [];
    const readable = new Set<number>();
    const released: number[] = [];
    const sink: CoreSink = {
      datagram: (to, data) => out.push({ to: { ...to }, data: data.slice() }),
      tcpOpen: () => {},
      tcpReadable: (id) => readable.add(id),
      tcpWritable: () => {},
      tcpFin: (id) => {
        const conn = this.#conns.get(id);
        if (conn) conn.fin = true;
      },
      tcpClosed: (id, reason) => {
        const conn = this.#conns.get(id);
        if (conn) conn.closed = reason;
        released.push(id);
      },
      udp: (_peer, src, dst, data) => this.udp.push({ src: { ...src }, dst: { ...dst }, data: data.slice() }),
      ipPacket: () => {},
      peerEvent: () => {},
      log: () => {},
    };
    this.#core.drain(sink);
    // Received bytes are read after the records are taken (reading uses the module's buffers).
    for (const id of readable) {
      const conn = this.#conns.get(id);
      for (let i = 0; i < 64; i++) {
        const chunk = this.#core.tcpRead(id);
        if (!chunk) break;
        conn?.received.push(...chunk);
      }
    }
    for (const id of released) this.#core.tcpRelease(id);
    // The client role reports no event for an established connection: its state tells.
    for (const conn of this.#conns.values()) {
      if (conn.established || conn.closed !== null || released.includes(conn.id)) continue;
      const state = String(this.#core.tcpInfo(conn.id)?.state ?? "");
      if (!/^(syn|listen|closed)/i.test(state) && state !== "") conn.established = true;
    }
    this.#core.flush(Date.now());
    this.#core.drain(sink);
    for (const d of out) {
      this.#socket.send(d.data, { transport: "udp", hostname: d.to.hostname, port: d.to.port }).catch(
        () => {},
      );
    }
  }
}
