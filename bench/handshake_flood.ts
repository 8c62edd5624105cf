/**
 * `deno run -A bench/handshake_flood.ts`: what a handshake flood costs the wasm core. Feeds a
 * server core 10,000 WireGuard handshake initiations per driven second (two thirds from keys it
 * does not know, one third replays of a known peer's initiation), from many source addresses,
 * for `--seconds` driven seconds, and prints the CPU time per 10,000 initiations and what the
 * core did with them (cookie replies, key exchanges, rate-limited). No sockets: the core's own
 * cost, measured in this process (`process.cpuUsage`).
 *
 *   deno run -A bench/handshake_flood.ts [--seconds 5]
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { derivePublicKey, type Endpoint, WasmCore } from "../src/core/wasm_core.ts";
import { Recorder } from "../src/core/testing.ts";

const { values } = parseArgs({ options: { seconds: { type: "string", default: "5" } } });
const SECONDS = Number(values.seconds);
const PER_SECOND = 10_000;
const HANDSHAKE_INIT = 1;

const serverKey = new Uint8Array(32).fill(1);
const serverPublic = derivePublicKey(serverKey);
const SERVER: Endpoint = { hostname: "127.0.0.1", port: 51820 };

/** `count` handshake initiations of `key`, each a new message (the client's retries). */
function initiations(key: Uint8Array, count: number): Uint8Array[] {
  let now = 1_000;
  const core = new WasmCore({ privateKey: key, role: "client", now });
  core.addPeer({ publicKey: serverPublic, endpoint: SERVER }, now);
  const rec = new Recorder();
  const ping = new Uint8Array([
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
    1,
    2,
    3,
    4,
    8,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
  ]);
  const out: Uint8Array[] = [];
  for (let i = 0; out.length < count && i < count * 4; i++) {
    now += 6_000; // past WireGuard's retry timer
    core.tick(now);
    core.ipSend(ping, now);
    core.drain(rec);
    for (const d of rec.takeDatagrams()) if (d.data[0] === HANDSHAKE_INIT) out.push(d.data);
  }
  return out;
}

const unknown = Array.from({ length: 20 }, (_, k) => initiations(new Uint8Array(32).fill(100 + k), 2)).flat();
const validKey = new Uint8Array(32).fill(2);
const [replayed] = initiations(validKey, 1);
if (!replayed || unknown.length === 0) throw new Error("no initiations were made");

let now = 1_000;
const server = new WasmCore({ privateKey: serverKey, role: "server", now });
server.addPeer({ publicKey: derivePublicKey(validKey), allowedIps: ["10.0.0.2/32"] }, now);
const sink = new Recorder();
let replies = 0;
const from = new Uint8Array(18);
from[10] = 0xff;
from[11] = 0xff;

const cpu0 = process.cpuUsage();
const t0 = performance.now();
let sent = 0;
for (let ms = 0; ms < SECONDS * 1000; ms++) {
  for (let i = 0; i < PER_SECOND / 1000; i++, sent++) {
    if (sent % 3 === 0) {
      from.set([198, 18, 0, 1], 12);
      server.datagramRaw(replayed, from, now);
    } else {
      from.set([100, 64 + ((sent >> 16) & 63), (sent >> 8) & 255, sent & 255], 12);
      server.datagramRaw(unknown[sent % unknown.length]!, from, now);
    }
  }
  server.drain(sink);
  replies += sink.takeDatagrams().length;
  sink.records = [];
  now += 1;
  server.tick(now);
}
const cpu = process.cpuUsage(cpu0);
const wall = performance.now() - t0;
const cpuMs = (cpu.user + cpu.system) / 1000;
const d = server.stats().drops;
console.log(
  `${sent} handshake initiations over ${SECONDS} driven s (${PER_SECOND}/s): ` +
    `${(cpuMs * 10_000 / sent).toFixed(0)} ms CPU per 10,000 (${(cpuMs * 1000 / sent).toFixed(1)} µs each; ` +
    `${wall.toFixed(0)} ms wall in all)`,
);
console.log(
  `  cookie replies ${d.cookieSent}, reached a key exchange ${(d.unknownPeer ?? 0) + (d.rejected ?? 0)}, ` +
    `rate-limited by source ${d.rateLimited}, datagrams sent ${replies}`,
);
