/**
 * Hostile peers against the core, in memory (CorePair): a SYN flood from one peer, inner
 * source addresses the peer may not use, and what stays bounded meanwhile.
 */
import assert from "node:assert/strict";
import { CorePair, Recorder, SERVER_ENDPOINT } from "./testing.ts";
import { derivePublicKey, WasmCore } from "./wasm_core.ts";

/** The IPv4 header checksum, or the TCP/UDP one over a pseudo-header plus segment. */
function checksum(bytes: Uint8Array, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (bytes.length % 2) sum += bytes[bytes.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An IPv4 TCP SYN from `src`:`sport` to `dst`:`dport`. */
export function tcpSyn(src: number[], sport: number, dst: number[], dport: number): Uint8Array {
  const p = new Uint8Array(40);
  const dv = new DataView(p.buffer);
  p.set([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
  p.set(src, 12);
  p.set(dst, 16);
  dv.setUint16(10, checksum(p.subarray(0, 20)));
  dv.setUint16(20, sport);
  dv.setUint16(22, dport);
  dv.setUint32(24, 0x01020304);
  p[32] = 5 << 4; // data offset
  p[33] = 0x02; // SYN
  dv.setUint16(34, 64240);
  let pseudo = 0;
  for (let i = 12; i < 20; i += 2) pseudo += (p[i]! << 8) | p[i + 1]!;
  pseudo += 6 + 20;
  dv.setUint16(36, checksum(p.subarray(20), pseudo));
  return p;
}

/** Opens one honest connection from the client core; true when the server accepted it. */
function honestConnection(pair: CorePair, port: number): boolean {
  pair.client.tcpConnect({ hostname: "203.0.113.80", port }, pair.now);
  pair.pump();
  for (let i = 0; i < 30; i++) {
    if (pair.serverRec.records.some((r) => r.kind === "tcpOpen" && r.local.port === port)) return true;
    pair.advance(100);
  }
  return false;
}

Deno.test("a SYN flood from one peer leaves memory bounded and the core serving", () => {
  const pair = new CorePair();
  assert.ok(honestConnection(pair, 1), "a connection before the flood");
  // 5,000 SYNs that are never completed (the client core does not know them: its stack
  // answers the SYN-ACKs with resets, so drop what the server sends back).
  pair.filter = (from, d) => (from === "server" ? null : d);
  for (let i = 0; i < 5_000; i++) {
    const syn = tcpSyn([10, 0, 0, 2], 10_000 + i, [198, 51, 100, 1 + (i % 200)], 443);
    pair.client.ipSend(syn, pair.now);
    pair.pump();
  }
  const flooded = pair.server.stats();
  assert.ok(
    flooded.memoryBytes < 256 * 2 ** 20,
    `wasm memory ${flooded.memoryBytes / 2 ** 20} MiB after the flood`,
  );
  // The half-open connections time out (15 s); the honest peer connects again.
  pair.filter = (_f, d) => d;
  for (let i = 0; i < 160; i++) pair.advance(100);
  const after = pair.server.stats();
  assert.ok(after.connectionsOpen <= 2, `${after.connectionsOpen} connections left`);
  assert.ok(honestConnection(pair, 2), "a connection after the flood");
});

/** A server core and two client cores (10.0.0.2 and 10.0.0.3), each at its own endpoint. */
function trio(allowed: [string[] | undefined, string[] | undefined]) {
  const serverKey = new Uint8Array(32).fill(1);
  const server = new WasmCore({ privateKey: serverKey, role: "server", now: 1_000 });
  const serverRec = new Recorder();
  const clients = [0, 1].map((i) => {
    const key = new Uint8Array(32).fill(2 + i);
    const allowedIps = allowed[i];
    server.addPeer({ publicKey: derivePublicKey(key), ...(allowedIps ? { allowedIps } : {}) }, 1_000);
    const core = new WasmCore({ privateKey: key, role: "client", address4: `10.0.0.${2 + i}`, now: 1_000 });
    core.addPeer({ publicKey: derivePublicKey(serverKey), endpoint: SERVER_ENDPOINT }, 1_000);
    return { core, rec: new Recorder(), endpoint: { hostname: "127.0.0.1", port: 40_000 + i } };
  });
  const pump = () => {
    for (let round = 0; round < 1_000; round++) {
      let moved = false;
      for (const c of clients) {
        c.core.drain(c.rec);
        for (const d of c.rec.takeDatagrams()) {
          server.datagram(d.data, c.endpoint, 1_000);
          moved = true;
        }
      }
      server.drain(serverRec);
      for (const d of serverRec.takeDatagrams()) {
        const c = clients.find((c) => c.endpoint.port === d.to.port)!;
        c.core.datagram(d.data, SERVER_ENDPOINT, 1_000);
        moved = true;
      }
      if (!moved) return;
    }
    throw new Error("did not settle");
  };
  /** ICMP echo replies client `i` got, for tunnel address `to`. */
  const replies = (i: number, to: string) =>
    clients[i]!.rec.records.filter((r) =>
      r.kind === "ipPacket" && r.data[20] === 0 && r.data.subarray(16, 20).join(".") === to
    ).length;
  return { server, clients, pump, replies };
}

/** An IPv4 ICMP echo request. */
function ping(src: number[], dst: number[]): Uint8Array {
  const p = new Uint8Array(30);
  p.set([0x45, 0, 0, 30, 0, 0, 0x40, 0, 64, 1, 0, 0]);
  p.set(src, 12);
  p.set(dst, 16);
  const dv = new DataView(p.buffer);
  dv.setUint16(10, checksum(p.subarray(0, 20)));
  p.set([8, 0, 0, 0, 0, 1, 0, 1, 0x68, 0x69], 20);
  dv.setUint16(22, checksum(p.subarray(20)));
  return p;
}

Deno.test("a peer cannot use another peer's inner address, even before that peer does", () => {
  const { server, clients, pump, replies } = trio([["10.0.0.2/32", "fd77:7769:7265::2/128"], ["10.0.0.3"]]);
  // The second peer speaks first, from the first peer's address: dropped and counted.
  clients[1]!.core.ipSend(ping([10, 0, 0, 2], [1, 2, 3, 4]), 1_000);
  pump();
  assert.equal(server.stats().drops.sourceNotAllowed, 1);
  assert.equal(replies(1, "10.0.0.2"), 0);
  // The owner is served, and so is the second peer from its own address.
  clients[0]!.core.ipSend(ping([10, 0, 0, 2], [1, 2, 3, 4]), 1_000);
  clients[1]!.core.ipSend(ping([10, 0, 0, 3], [1, 2, 3, 4]), 1_000);
  pump();
  assert.equal(replies(0, "10.0.0.2"), 1);
  assert.equal(replies(1, "10.0.0.3"), 1);
  // Traffic to an address goes to its owner.
  server.udpSend(
    { hostname: "1.1.1.1", port: 53 },
    { hostname: "10.0.0.2", port: 5000 },
    new Uint8Array(3),
    1_000,
  );
  pump();
  assert.equal(clients[0]!.rec.records.filter((r) => r.kind === "udp").length, 1);
  assert.equal(clients[1]!.rec.records.filter((r) => r.kind === "udp").length, 0);
  assert.deepEqual(server.stats().peers.map((p) => p.allowedIps), [
    ["10.0.0.2/32", "fd77:7769:7265::2/128"],
    ["10.0.0.3/32"],
  ]);
  assert.throws(
    () => server.addPeer({ publicKey: new Uint8Array(32).fill(9), allowedIps: ["10.0.0.3/32"] }, 1_000),
    /belongs to another peer/,
  );
  assert.throws(
    () => server.addPeer({ publicKey: new Uint8Array(32).fill(9), allowedIps: ["10.0.0.0/33"] }, 1_000),
    SyntaxError,
  );
});

Deno.test("spraying 100,000 inner source addresses does not grow the core's memory", () => {
  for (const allowed of [["10.0.0.2/32"], undefined]) {
    const { server, clients, pump } = trio([allowed, ["10.0.0.3/32"]]);
    const client = clients[0]!.core;
    // A first packet (and handshake) from its own address, so that the session exists.
    client.ipSend(ping([10, 0, 0, 2], [1, 2, 3, 4]), 1_000);
    pump();
    const before = server.stats().memoryBytes;
    for (let i = 0; i < 100_000; i++) {
      client.ipSend(ping([10, 1 + ((i >> 16) & 0x7f), (i >> 8) & 0xff, i & 0xff], [1, 2, 3, 4]), 1_000);
      if (i % 100 === 99) pump();
    }
    pump();
    const after = server.stats();
    assert.equal(after.drops.sourceNotAllowed, 100_000, `allowedIps ${allowed}`);
    assert.equal(after.memoryBytes, before, `memory grew by ${after.memoryBytes - before} bytes`);
    assert.ok(after.peers[0]!.addresses.length <= 1);
  }
});
