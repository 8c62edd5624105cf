/**
 * Edge cases of the core with a driven clock and an in-memory network (CorePair): handshake
 * retries, session expiry and rekey, replays, resets, half-close both ways, and a full window.
 */
import assert from "node:assert/strict";
import { CloseReason, PeerEventKind } from "./wasm_core.ts";
import { CorePair } from "./testing.ts";

const HANDSHAKE_INIT = 1, DATA = 4;

function connected(): { pair: CorePair; client: number; server: number } {
  const pair = new CorePair();
  const client = pair.client.tcpConnect({ hostname: "203.0.113.1", port: 80 }, pair.now);
  pair.pump();
  for (let i = 0; i < 30 && !pair.serverRec.records.some((r) => r.kind === "tcpOpen"); i++) pair.advance(100);
  const open = pair.serverRec.records.find((r) => r.kind === "tcpOpen");
  assert.ok(open && open.kind === "tcpOpen", "connection opened");
  return { pair, client, server: open.conn };
}

function handshakes(pair: CorePair): number {
  return pair.server.stats().peers[0]!.handshakes;
}

Deno.test("WasmCore retries a lost handshake initiation after the rekey timeout", () => {
  const pair = new CorePair();
  let dropped = 0;
  pair.filter = (from, d) => (from === "client" && d[0] === HANDSHAKE_INIT && dropped++ === 0 ? null : d);
  pair.client.tcpConnect({ hostname: "203.0.113.1", port: 80 }, pair.now);
  pair.pump();
  assert.equal(handshakes(pair), 0);
  for (let i = 0; i < 70 && handshakes(pair) === 0; i++) pair.advance(100);
  assert.equal(dropped, 2, "the first initiation was lost, the retry went through");
  assert.equal(handshakes(pair), 1);
});

Deno.test("WasmCore rejects a replayed data packet and counts it", () => {
  const { pair, client } = connected();
  let captured: Uint8Array | null = null;
  pair.filter = (from, d) => {
    if (from === "client" && d[0] === DATA && d.length > 32 && !captured) captured = d.slice();
    return d;
  };
  pair.client.tcpWrite(client, new Uint8Array(100).fill(7));
  pair.client.flush(pair.now);
  pair.pump();
  assert.ok(captured);
  const before = pair.server.stats().drops.rejected!;
  pair.server.datagram(captured, { hostname: "127.0.0.1", port: 40001 }, pair.now);
  assert.equal(pair.server.stats().drops.rejected, before + 1);
});

Deno.test("WasmCore reports a reset from the client as a reset", () => {
  const { pair, client, server } = connected();
  pair.client.tcpAbort(client);
  pair.client.flush(pair.now);
  pair.pump();
  assert.ok(
    pair.serverRec.records.some((r) =>
      r.kind === "tcpClosed" && r.conn === server && r.reason === CloseReason.Reset
    ),
  );
});

Deno.test("WasmCore keeps the other direction open after a half-close, both ways round", () => {
  for (const first of ["client", "server"] as const) {
    const { pair, client, server } = connected();
    const [closer, closerId, other, otherId] = first === "client"
      ? [pair.client, client, pair.server, server]
      : [pair.server, server, pair.client, client];
    const otherRec = first === "client" ? pair.serverRec : pair.clientRec;
    closer.tcpShutdown(closerId);
    closer.flush(pair.now);
    pair.pump();
    other.flush(pair.now);
    pair.pump();
    assert.ok(otherRec.records.some((r) => r.kind === "tcpFin" && r.conn === otherId), `${first} FIN seen`);
    // The side that did not close can still send, and the closer still reads.
    assert.equal(other.tcpWrite(otherId, new TextEncoder().encode("still here")), 10);
    other.flush(pair.now);
    pair.pump();
    assert.equal(new TextDecoder().decode(closer.tcpRead(closerId)!), "still here");
    other.tcpShutdown(otherId);
    other.flush(pair.now);
    closer.flush(pair.now);
    pair.advance(10);
    assert.ok(
      pair.serverRec.records.some((r) =>
        r.kind === "tcpClosed" && r.conn === server && r.reason === CloseReason.Graceful
      ),
      `${first}-first close ends gracefully`,
    );
  }
});

Deno.test("WasmCore stops taking data when the receiver does not read, and resumes when it does", () => {
  const { pair, client, server } = connected();
  const chunk = new Uint8Array(64 * 1024);
  let written = 0;
  for (let i = 0; i < 200; i++) {
    const n = pair.client.tcpWrite(client, chunk);
    written += n;
    pair.client.flush(pair.now);
    pair.advance(5);
    if (n === 0) break;
  }
  // The client's send buffer (grown to its 512 KiB) and the server's receive buffer (still at
  // its initial 16 KiB: it grows only as the server reads) hold it all; no more fits.
  assert.ok(written <= 512 * 1024 + 16 * 1024 + 64 * 1024, `wrote ${written}`);
  assert.ok(written >= 512 * 1024, `wrote ${written}`);
  assert.equal(pair.client.tcpWrite(client, chunk), 0, "the client's send buffer is full");
  let read = 0;
  // Up to ten simulated seconds: the tail may wait for a window probe.
  for (let i = 0; i < 400 && read < written; i++) {
    let d;
    while ((d = pair.server.tcpRead(server))) read += d.length;
    pair.server.flush(pair.now);
    pair.advance(25);
  }
  assert.equal(read, written);
  assert.ok(
    pair.clientRec.records.some((r) => r.kind === "tcpWritable" && r.conn === client),
    "writable again",
  );
});

Deno.test("WasmCore expires an idle session and makes a new one on the next packet", () => {
  const { pair, client } = connected();
  assert.equal(handshakes(pair), 1);
  // Nine minutes without traffic: sessions (and their keys) are dropped.
  for (let i = 0; i < 9 * 60 * 4; i++) {
    pair.now += 250;
    pair.server.tick(pair.now);
    pair.client.tick(pair.now);
  }
  pair.pump();
  assert.ok(pair.serverRec.records.some((r) => r.kind === "peerEvent" && r.what === PeerEventKind.Expired));
  pair.client.tcpWrite(client, new Uint8Array([1]));
  pair.client.flush(pair.now);
  pair.pump();
  for (let i = 0; i < 30 && handshakes(pair) < 2; i++) pair.advance(100);
  assert.equal(handshakes(pair), 2, "a fresh handshake carried the next packet");
});

Deno.test("WasmCore refuses connections beyond its limit with a reset and says so once", () => {
  const pair = new CorePair(undefined, undefined, { maxConnections: 2 });
  const conns = [80, 81, 82].map((port) =>
    pair.client.tcpConnect({ hostname: "203.0.113.1", port }, pair.now)
  );
  pair.pump();
  for (let i = 0; i < 30; i++) pair.advance(100);
  const opened = pair.serverRec.records.filter((r) => r.kind === "tcpOpen").length;
  assert.equal(opened, 2);
  assert.ok(
    pair.clientRec.records.some((r) =>
      r.kind === "tcpClosed" && r.conn === conns[2] && r.reason === CloseReason.Reset
    ),
    "the third connection was reset",
  );
  const logs = pair.serverRec.records.filter((r) => r.kind === "log");
  assert.equal(logs.length, 1);
  assert.match(logs[0]!.kind === "log" ? logs[0]!.text : "", /connection limit reached \(2 open\)/);
  assert.equal(pair.server.stats().connectionsRefused >= 1, true);
});

Deno.test("WasmCore answers a flood of handshakes with cookie replies", () => {
  const pair = new CorePair();
  const ping = echoPing();
  const serverNow = pair.now;
  let initiations = 0, cookieReplies = 0;
  let clientNow = pair.now;
  for (let i = 0; i < 300; i++) {
    // The client's clock runs past its retry timer each time; the server's stands still, so all
    // of these land within one second of its rate limiter.
    clientNow += 6_000;
    pair.client.tick(clientNow);
    pair.client.ipSend(ping, clientNow);
    pair.client.drain(pair.clientRec);
    for (const d of pair.clientRec.takeDatagrams()) {
      if (d.data[0] !== HANDSHAKE_INIT) continue;
      initiations++;
      pair.server.datagram(d.data, { hostname: "127.0.0.1", port: 40001 }, serverNow);
    }
    pair.server.drain(pair.serverRec);
    cookieReplies += pair.serverRec.takeDatagrams().filter((d) => d.data[0] === 3).length;
  }
  assert.ok(initiations >= 250, `${initiations} initiations`);
  const { cookieSent } = pair.server.stats().drops;
  assert.ok(cookieSent! > 0, "under load, handshakes without a cookie are answered with one");
  assert.equal(cookieReplies, cookieSent);
});

function echoPing(): Uint8Array {
  const p = new Uint8Array([
    0x45,
    0,
    0,
    28,
    0,
    0,
    0,
    0,
    64,
    1,
    0,
    0,
    10,
    0,
    0,
    2,
    10,
    0,
    0,
    1,
    8,
    0,
    0,
    0,
    0,
    1,
    0,
    1,
  ]);
  let s = 0;
  for (let i = 0; i < 20; i += 2) s += (p[i]! << 8) | p[i + 1]!;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  p[10] = (~s >> 8) & 0xff;
  p[11] = ~s & 0xff;
  return p;
}
