/**
 * A real WireGuard client (wireguard-go in a rig namespace) connects and transfers while this
 * process floods `listenWireGuard()` with 10,000 handshake initiations a second: from keys it
 * does not know, and replays of a known (idle) peer's initiation. Under load the listener
 * answers with cookie replies; the client's next attempt carries its cookie and gets through
 * (WireGuard retries a handshake after 5 s). Bounded: the flood stops after 15 s at most.
 * Needs root, like the other rig tests.
 */
import assert from "node:assert/strict";
import { generatePrivateKey, listenWireGuard, publicKeyOf } from "../mod.ts";
import { derivePublicKey, type Endpoint, WasmCore } from "../src/core/wasm_core.ts";
import { decodeKey } from "../src/core/keys.ts";
import { Recorder } from "../src/core/testing.ts";
import { nsClient, Rig } from "./rig.ts";

const FLOOD_PER_MS = 10;
const FLOOD_MAX_MS = 15_000;

/** `count` handshake initiations toward `serverPublic` made with `key` (each a new message). */
function initiations(key: Uint8Array, serverPublic: Uint8Array, count: number): Uint8Array[] {
  let now = 1_000;
  const core = new WasmCore({ privateKey: key, role: "client", now });
  const server: Endpoint = { hostname: "127.0.0.1", port: 9 };
  core.addPeer({ publicKey: serverPublic, endpoint: server }, now);
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
    9,
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
    now += 6_000;
    core.tick(now);
    core.ipSend(ping, now);
    core.drain(rec);
    for (const d of rec.takeDatagrams()) if (d.data[0] === 1) out.push(d.data);
  }
  return out;
}

Deno.test({
  name: "a wireguard-go client connects and transfers through a handshake flood (cookie replies)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const serverKey = generatePrivateKey();
    const idleKey = generatePrivateKey();
    const listener = listenWireGuard({
      port: 0,
      privateKey: serverKey,
      peers: [{ publicKey: publicKeyOf(idleKey), allowedIps: ["10.0.0.200/32"] }],
    });
    await listener.ready;
    const serverPublic = derivePublicKey(decodeKey(serverKey, "key"));
    const flood = [
      ...Array.from({ length: 10 }, () => initiations(decodeKey(generatePrivateKey(), "k"), serverPublic, 2))
        .flat(),
      ...initiations(decodeKey(idleKey, "k"), serverPublic, 1),
    ];
    const serving = (async () => {
      for await (const conn of listener) conn.readable.pipeTo(conn.writable).catch(() => {});
    })();
    const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const target: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: listener.addr.port };
    let stop = false, floodSent = 0;
    const flooding = (async () => {
      const t0 = performance.now();
      while (!stop && performance.now() - t0 < FLOOD_MAX_MS) {
        // 10 per millisecond on average, whatever the timer's granularity.
        const due = Math.floor((performance.now() - t0) * FLOOD_PER_MS);
        while (floodSent < due) await socket.send(flood[floodSent++ % flood.length]!, target);
        await new Promise((r) => setTimeout(r, 1));
      }
    })();
    let rig: Rig | null = null;
    try {
      // Under load before the client says anything.
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(listener.stats().drops.cookieSent! > 0, "the flood is answered with cookies");
      const t0 = performance.now();
      rig = await Rig.create(1, listener.publicKey, listener.addr.port, (publicKey) => {
        listener.addPeer({ publicKey, allowedIps: ["10.0.0.2/32", "fd77:7769:7265::2/128"] });
      });
      const echo = await nsClient(rig.clients[0]!, ["echo", "203.0.113.7", "7", String(1 << 20)], 20);
      const seconds = (performance.now() - t0) / 1000;
      assert.equal(echo.got, echo.sent, "1 MB echoed intact");
      const s = listener.stats();
      const peer = s.peers.find((p) => p.allowedIps.includes("10.0.0.2/32"))!;
      console.log(
        `connected and echoed 1 MB in ${seconds.toFixed(1)} s under ${floodSent} flood initiations; ` +
          `cookie replies ${s.drops.cookieSent}, rate-limited ${s.drops.rateLimited}, ` +
          `unknown keys ${s.drops.unknownPeer}, rejected ${s.drops.rejected}`,
      );
      assert.ok(peer.handshakes >= 1);
      assert.ok(seconds < 12, `took ${seconds} s`);
      assert.ok(s.drops.cookieSent! > floodSent / 2, "most of the flood got a cookie, not a key exchange");
    } finally {
      stop = true;
      await flooding;
      socket.close();
      listener.close();
      await serving;
      await rig?.close();
    }
  },
});
