import assert from "node:assert/strict";
import { CloseReason, PeerEventKind } from "./wasm_core.ts";
import { CorePair } from "./testing.ts";

function echoRequest(src: number[], dst: number[]): Uint8Array {
  const p = new Uint8Array([
    0x45,
    0,
    0,
    32,
    0,
    0,
    0,
    0,
    64,
    1,
    0,
    0,
    ...src,
    ...dst,
    8,
    0,
    0,
    0,
    0,
    7,
    0,
    1,
    1,
    2,
    3,
    4,
  ]);
  const sum = (from: number, to: number) => {
    let s = 0;
    for (let i = from; i < to; i += 2) s += (p[i]! << 8) | (p[i + 1] ?? 0);
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    return ~s & 0xffff;
  };
  const h = sum(0, 20);
  p[10] = h >> 8, p[11] = h & 0xff;
  const c = sum(20, 32);
  p[22] = c >> 8, p[23] = c & 0xff;
  return p;
}

Deno.test("WasmCore completes a WireGuard handshake and carries an IP packet each way", () => {
  const pair = new CorePair();
  pair.client.ipSend(echoRequest([10, 0, 0, 2], [198, 51, 100, 7]), pair.now);
  pair.pump();
  const hs = (r: { kind: string; what?: number }) =>
    r.kind === "peerEvent" && r.what === PeerEventKind.HandshakeComplete;
  assert.ok(pair.clientRec.records.some(hs), "client completed the handshake");
  assert.ok(pair.serverRec.records.some(hs), "server completed the handshake");
  const reply = pair.clientRec.records.find((r) => r.kind === "ipPacket");
  assert.ok(reply && reply.kind === "ipPacket", "the echo reply came back through the tunnel");
  assert.deepEqual([...reply.data.subarray(12, 20)], [198, 51, 100, 7, 10, 0, 0, 2]);
  assert.equal(reply.data[20], 0, "ICMP echo reply");
  assert.deepEqual([...reply.data.subarray(28)], [1, 2, 3, 4], "same payload");
  const stats = pair.server.stats();
  assert.equal(stats.echoReplies, 1);
  assert.deepEqual(stats.peers[0]!.addresses, ["10.0.0.2"]);
  assert.equal(stats.peers[0]!.handshakes, 1);
});

Deno.test("WasmCore relays a TCP connection both ways with the original destination", () => {
  const pair = new CorePair();
  const conn = pair.client.tcpConnect({ hostname: "203.0.113.9", port: 443 }, pair.now);
  pair.pump();
  for (let i = 0; i < 20 && !pair.serverRec.records.some((r) => r.kind === "tcpOpen"); i++) pair.advance(100);
  const open = pair.serverRec.records.find((r) => r.kind === "tcpOpen");
  assert.ok(open && open.kind === "tcpOpen");
  assert.deepEqual(open.local, { hostname: "203.0.113.9", port: 443 });
  assert.equal(open.remote.hostname, "10.0.0.2");

  const up = new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n".repeat(1000));
  assert.equal(pair.client.tcpWrite(conn, up), up.length);
  pair.client.flush(pair.now);
  pair.pump();
  const got: number[] = [];
  for (let i = 0; i < 50 && got.length < up.length; i++) {
    let chunk;
    while ((chunk = pair.server.tcpRead(open.conn))) got.push(...chunk);
    pair.server.flush(pair.now);
    pair.advance(10);
  }
  assert.deepEqual(new Uint8Array(got), up);

  pair.server.tcpWrite(open.conn, new TextEncoder().encode("HTTP/1.1 200 OK\r\n\r\n"));
  pair.server.tcpShutdown(open.conn);
  pair.server.flush(pair.now);
  pair.pump();
  assert.equal(new TextDecoder().decode(pair.client.tcpRead(conn)!), "HTTP/1.1 200 OK\r\n\r\n");
  // The FIN is reported once everything before it has been read.
  pair.client.flush(pair.now);
  pair.pump();
  assert.ok(pair.clientRec.records.some((r) => r.kind === "tcpFin" && r.conn === conn));
  pair.client.tcpShutdown(conn);
  pair.client.flush(pair.now);
  pair.advance(10);
  assert.ok(
    pair.serverRec.records.some((r) => r.kind === "tcpClosed" && r.reason === CloseReason.Graceful),
  );
});

Deno.test("WasmCore drops and counts datagrams from strangers and garbage", () => {
  const pair = new CorePair();
  pair.server.datagram(new Uint8Array([1, 0, 0, 0, ...new Uint8Array(144)]), {
    hostname: "127.0.0.9",
    port: 9,
  }, 0);
  pair.server.datagram(new Uint8Array([9, 9, 9]), { hostname: "127.0.0.9", port: 9 }, 0);
  pair.server.datagram(new Uint8Array([4, 0, 0, 0, ...new Uint8Array(28)]), { hostname: "::1", port: 9 }, 0);
  const { drops, datagramsIn } = pair.server.stats();
  assert.equal(datagramsIn, 3);
  assert.equal(drops.badMac, 1);
  assert.equal(drops.malformed, 1);
  assert.equal(drops.unknownIndex, 1);
});
