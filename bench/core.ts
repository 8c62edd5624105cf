/**
 * `deno task bench:core`: the wasm core alone, with no sockets: a client-role core and a
 * server-role core in one process ({@link CorePair}), WireGuard and TCP both ways in memory.
 * Prints the core's own cost: a bulk transfer server → client (MB/s, both cores' work) and
 * 1000-byte request/response round trips (µs each, both cores). For comparing changes to
 * `wasm/` (build flags, crate versions, patches); the rig's figures come from `deno task bench`.
 *
 *   deno task bench:core [--mb 200] [--round-trips 20000]
 * @module
 */
import { parseArgs } from "node:util";
import { CorePair } from "../src/core/testing.ts";

const { values } = parseArgs({
  options: { mb: { type: "string", default: "200" }, "round-trips": { type: "string", default: "20000" } },
});
const MB = Number(values.mb), ROUND_TRIPS = Number(values["round-trips"]);

/** A pair with one TCP connection open; the ids on each side. */
function connected(): { pair: CorePair; client: number; server: number } {
  const pair = new CorePair(undefined, undefined, { rxBuffer: 512 * 1024, txBuffer: 512 * 1024 });
  const client = pair.client.tcpConnect({ hostname: "203.0.113.9", port: 443 }, pair.now);
  pair.pump();
  for (let i = 0; i < 20 && !pair.serverRec.records.some((r) => r.kind === "tcpOpen"); i++) pair.advance(100);
  const open = pair.serverRec.records.find((r) => r.kind === "tcpOpen");
  if (!open || open.kind !== "tcpOpen") throw new Error("no connection");
  pair.serverRec.records = [];
  pair.clientRec.records = [];
  return { pair, client, server: open.conn };
}

function bulk(): number {
  const { pair, client, server } = connected();
  const chunk = new Uint8Array(64 * 1024).fill(7);
  const total = MB * 1e6;
  let sent = 0, got = 0;
  const t0 = performance.now();
  for (let i = 0; got < total && i < 10_000_000; i++) {
    while (sent < total) {
      const n = pair.server.tcpWrite(server, chunk.subarray(0, Math.min(chunk.length, total - sent)));
      if (n === 0) break;
      sent += n;
    }
    pair.server.flush(pair.now);
    pair.pump();
    let c;
    while ((c = pair.client.tcpRead(client))) got += c.length;
    pair.client.flush(pair.now);
    pair.pump();
    pair.serverRec.records = [];
    pair.clientRec.records = [];
    if (i % 64 === 63) pair.advance(1);
  }
  return total / 1e6 / ((performance.now() - t0) / 1000);
}

function roundTrips(): number {
  const { pair, client, server } = connected();
  const msg = new Uint8Array(1000).fill(9);
  const one = () => {
    pair.client.tcpWrite(client, msg);
    pair.client.flush(pair.now);
    pair.pump();
    let n = 0, c;
    while ((c = pair.server.tcpRead(server))) n += c.length;
    pair.server.tcpWrite(server, msg.subarray(0, n));
    pair.server.flush(pair.now);
    pair.pump();
    while ((c = pair.client.tcpRead(client))) n -= c.length;
    pair.serverRec.records = [];
    pair.clientRec.records = [];
  };
  for (let i = 0; i < 1000; i++) one(); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < ROUND_TRIPS; i++) {
    one();
    if (i % 1000 === 999) pair.advance(1);
  }
  return (performance.now() - t0) * 1000 / ROUND_TRIPS;
}

const mbps = bulk();
const rt = roundTrips();
console.log(`core bulk transfer, server → client, ${MB} MB: ${mbps.toFixed(0)} MB/s (both cores)`);
console.log(`core 1000-byte round trips, ${ROUND_TRIPS}: ${rt.toFixed(1)} µs each (both cores)`);
