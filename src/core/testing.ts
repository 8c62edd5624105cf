/**
 * Test helpers: a client-role core and a server-role core wired back to back in memory, with a
 * driven clock. Deterministic: no sockets, no timers.
 * @module
 */
import { type CoreSink, type Endpoint, WasmCore, type WasmCoreOptions } from "./wasm_core.ts";
import { derivePublicKey } from "./wasm_core.ts";

/** A record captured by {@link Recorder}. */
export type Captured =
  | { kind: "datagram"; to: Endpoint; data: Uint8Array }
  | { kind: "tcpOpen"; conn: number; peer: number; remote: Endpoint; local: Endpoint }
  | { kind: "tcpReadable" | "tcpWritable" | "tcpFin"; conn: number }
  | { kind: "tcpClosed"; conn: number; reason: number }
  | { kind: "udp"; peer: number; src: Endpoint; dst: Endpoint; data: Uint8Array }
  | { kind: "ipPacket"; peer: number; data: Uint8Array }
  | { kind: "peerEvent"; peer: number; what: number }
  | { kind: "log"; level: number; text: string };

/** A sink that copies every record into a list. */
export class Recorder implements CoreSink {
  /** Everything drained so far, oldest first. */
  records: Captured[] = [];
  datagram(to: Endpoint, data: Uint8Array): void {
    this.records.push({ kind: "datagram", to: { ...to }, data: data.slice() });
  }
  tcpOpen(conn: number, peer: number, remote: Endpoint, local: Endpoint): void {
    this.records.push({ kind: "tcpOpen", conn, peer, remote, local });
  }
  tcpReadable(conn: number): void {
    this.records.push({ kind: "tcpReadable", conn });
  }
  tcpWritable(conn: number): void {
    this.records.push({ kind: "tcpWritable", conn });
  }
  tcpFin(conn: number): void {
    this.records.push({ kind: "tcpFin", conn });
  }
  tcpClosed(conn: number, reason: number): void {
    this.records.push({ kind: "tcpClosed", conn, reason });
  }
  udp(peer: number, src: Endpoint, dst: Endpoint, data: Uint8Array): void {
    this.records.push({ kind: "udp", peer, src, dst, data: data.slice() });
  }
  ipPacket(peer: number, data: Uint8Array): void {
    this.records.push({ kind: "ipPacket", peer, data: data.slice() });
  }
  peerEvent(peer: number, what: number): void {
    this.records.push({ kind: "peerEvent", peer, what });
  }
  log(level: number, text: string): void {
    this.records.push({ kind: "log", level, text });
  }
  /** Removes and returns the captured datagrams. */
  takeDatagrams(): { to: Endpoint; data: Uint8Array }[] {
    const out = this.records.filter((r) => r.kind === "datagram");
    this.records = this.records.filter((r) => r.kind !== "datagram");
    return out;
  }
}

/** The outer endpoints the pair pretends to use. */
export const SERVER_ENDPOINT: Endpoint = { hostname: "127.0.0.1", port: 51820 };
export const CLIENT_ENDPOINT: Endpoint = { hostname: "127.0.0.1", port: 40001 };

/** A server core and a client core connected in memory. */
export class CorePair {
  server: WasmCore;
  client: WasmCore;
  serverRec = new Recorder();
  clientRec = new Recorder();
  now = 1_000;
  /** A hook that may drop or alter datagrams in flight; return null to drop. */
  filter: (from: "client" | "server", data: Uint8Array) => Uint8Array | null = (_f, d) => d;

  constructor(
    serverKey = new Uint8Array(32).fill(1),
    clientKey = new Uint8Array(32).fill(2),
    serverOptions: Partial<WasmCoreOptions> = {},
  ) {
    this.server = new WasmCore({ privateKey: serverKey, role: "server", now: this.now, ...serverOptions });
    this.client = new WasmCore({
      privateKey: clientKey,
      role: "client",
      address4: "10.0.0.2",
      address6: "fd77:7769:7265::2",
      now: this.now,
    });
    this.server.addPeer({ publicKey: derivePublicKey(clientKey) }, this.now);
    this.client.addPeer({ publicKey: derivePublicKey(serverKey), endpoint: SERVER_ENDPOINT }, this.now);
  }

  /** Moves datagrams both ways until neither side has any (bounded). */
  pump(): void {
    for (let round = 0; round < 10_000; round++) {
      this.client.drain(this.clientRec);
      this.server.drain(this.serverRec);
      const up = this.clientRec.takeDatagrams();
      const down = this.serverRec.takeDatagrams();
      if (up.length === 0 && down.length === 0) return;
      for (const d of up) {
        const data = this.filter("client", d.data);
        if (data) this.server.datagram(data, CLIENT_ENDPOINT, this.now);
      }
      for (const d of down) {
        const data = this.filter("server", d.data);
        if (data) this.client.datagram(data, SERVER_ENDPOINT, this.now);
      }
    }
    throw new Error("CorePair.pump() did not settle in 10,000 rounds");
  }

  /** Advances the clock by `ms`, runs both cores' timers and pumps. */
  advance(ms: number): void {
    this.now += ms;
    this.server.tick(this.now);
    this.client.tick(this.now);
    this.pump();
  }
}
