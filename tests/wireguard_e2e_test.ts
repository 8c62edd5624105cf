/**
 * End to end with a real client: wireguard-go in network namespaces (tests/rig.ts) talks to
 * `listenWireGuard()` in this process, which serves echo, upload-digest and download workloads.
 * Needs root (CI runs as root; scripts/setup.sh installs wireguard-go and wireguard-tools).
 */
import assert from "node:assert/strict";
import {
  generatePrivateKey,
  listenWireGuard,
  type ListenWireGuardOptions,
  type TunnelConn,
  type WireGuardListener,
} from "../mod.ts";
import { nsClient, Rig, type RigClient } from "./rig.ts";
import { serveOrigin } from "./origin.ts";

const MB = 1 << 20;
const run = (client: RigClient, args: string[], seconds = 120) => nsClient(client, args, seconds);

/**
 * A listener in this process serving the origin workloads on every connection and echoing UDP,
 * `clients` wireguard-go clients in namespaces as its peers; `body` gets them and the
 * connections seen so far. Everything is torn down afterwards.
 */
async function withListener(
  options: Omit<ListenWireGuardOptions, "port" | "privateKey">,
  clients: number,
  body: (listener: WireGuardListener, clients: RigClient[], seen: TunnelConn[]) => Promise<void>,
): Promise<void> {
  const listener = listenWireGuard({
    hostname: "0.0.0.0",
    port: 0,
    privateKey: generatePrivateKey(),
    ...options,
  });
  await listener.ready;
  const rig = await Rig.create(clients, listener.publicKey, listener.addr.port, (publicKey) => {
    listener.addPeer({ publicKey });
  });
  const seen: TunnelConn[] = [];
  const serving = (async () => {
    for await (const conn of listener) {
      seen.push(conn);
      serveOrigin(conn, conn.localAddr.port);
    }
  })();
  const udpServing = (async () => {
    for await (const d of listener.datagrams) {
      await listener.sendDatagram({ data: d.data, src: d.dst, dst: d.src }).catch(() => {});
    }
  })();
  try {
    await body(listener, rig.clients, seen);
  } finally {
    listener.close();
    await listener.closed;
    await serving;
    await udpServing;
    await rig.close();
  }
}

Deno.test({
  name: "listenWireGuard() carries a real wireguard-go client's TCP, UDP and ICMP",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: (t) =>
    withListener({}, 2, async (listener, clients, seen) => {
      const [a, b] = clients as [RigClient, RigClient];
      await t.step("TCP echo over IPv4 keeps every byte and sees the original destination", async () => {
        const r = await run(a, ["echo", "10.99.0.1", "7", String(256 * 1024)]);
        assert.equal(r.got, r.sent);
        const conn = seen.at(-1)!;
        assert.deepEqual([conn.localAddr.hostname, conn.localAddr.port], ["10.99.0.1", 7]);
        assert.equal(conn.remoteAddr.hostname, a.address4);
        assert.equal(conn.peer.publicKey, a.publicKey);
        assert.ok(conn.peer.endpoint, "the peer's outer endpoint is known");
      });

      await t.step("TCP echo over IPv6", async () => {
        const r = await run(a, ["echo", "fd99::1", "7", String(64 * 1024)]);
        assert.equal(r.got, r.sent);
        assert.equal(seen.at(-1)!.remoteAddr.hostname, a.address6);
      });

      await t.step("100 MB upload arrives intact", async () => {
        const r = await run(a, ["upload", "10.99.0.2", "9", String(100 * MB)], 300);
        assert.equal(r.reply, r.sent);
      });

      await t.step("100 MB download arrives intact", async () => {
        const r = await run(a, ["download", "10.99.0.2", "19", String(100 * MB)], 300);
        assert.equal(r.bytes, 100 * MB);
        assert.equal(r.got, r.want);
      });

      await t.step("200 concurrent connections all echo", async () => {
        const r = await run(a, ["concurrent", "10.99.0.3", "7", "200", "20000"], 180);
        assert.deepEqual(r, { ok: 200, errors: [] });
      });

      await t.step("UDP echo through listener.datagrams and sendDatagram()", async () => {
        const r = await run(a, ["udp", "10.99.0.4", "5353", "hello over udp"]);
        assert.equal(r.reply, "hello over udp");
        assert.deepEqual(r.from, { transport: "udp", hostname: "10.99.0.4", port: 5353 });
      });

      await t.step("ping to any address is answered", async () => {
        const out = await a.exec(["ping", "-c", "2", "-W", "2", "10.99.0.5"]);
        assert.match(out, / 0% packet loss/);
      });

      await t.step("two peers at once each get their own traffic", async () => {
        const before = seen.length;
        const [ra, rb] = await Promise.all([
          run(a, ["echo", "10.99.0.6", "7", String(MB)]),
          run(b, ["echo", "10.99.0.6", "7", String(2 * MB)]),
        ]);
        assert.equal(ra.got, ra.sent);
        assert.equal(rb.got, rb.sent);
        const keys = new Set(seen.slice(before).map((c) => `${c.peer.publicKey} ${c.remoteAddr.hostname}`));
        assert.deepEqual(keys, new Set([`${a.publicKey} ${a.address4}`, `${b.publicKey} ${b.address4}`]));
      });

      await t.step(
        "100,000 random and mutated datagrams are dropped and counted; clients carry on",
        async () => {
          const before = listener.stats();
          const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
          const target = { transport: "udp" as const, hostname: "127.0.0.1", port: listener.addr.port };
          // Valid message types with the right lengths (so they get past the first checks), and
          // plain garbage of random lengths.
          const shapes = [[1, 148], [2, 92], [3, 64], [4, 32], [4, 80], [4, 1452], [0, 0]] as const;
          const buf = new Uint8Array(1500);
          for (let i = 0; i < 100_000; i++) {
            const [type, fixed] = shapes[i % shapes.length]!;
            const len = fixed || (i * 7919) % 1500;
            const d = buf.subarray(0, len);
            crypto.getRandomValues(d);
            if (type) d.set([type, 0, 0, 0]);
            await sock.send(d, target);
            // Pace the flood so the kernel's socket queue (about 90 datagrams by default) does
            // not overflow: after every 50, wait (at most 1 s) until the listener took them.
            if (i % 50 === 49) {
              for (let w = 0; w < 100 && listener.stats().datagramsIn - before.datagramsIn < i + 1; w++) {
                await new Promise((r) => setTimeout(r, w === 0 ? 0 : 10));
              }
            }
          }
          sock.close();
          // Let the receive loops catch up with what the kernel queued.
          let after = listener.stats();
          for (let i = 0; i < 50 && after.datagramsIn - before.datagramsIn < 90_000; i++) {
            await new Promise((r) => setTimeout(r, 100));
            after = listener.stats();
          }
          const sum = (s: typeof before) => Object.values(s.drops).reduce((x, y) => x + y, 0);
          const received = after.datagramsIn - before.datagramsIn;
          assert.ok(
            received >= 90_000,
            `received ${received} of 100,000 (the rest lost in the kernel's queue)`,
          );
          // Every one dropped and counted; the rig's clients may have sent a few real packets
          // (keepalives, late ACKs) meanwhile, which are counted as received but not dropped.
          const dropped = sum(after) - sum(before);
          assert.ok(dropped <= received && dropped >= received - 50, `${dropped} dropped of ${received}`);
          const r = await run(a, ["echo", "10.99.0.8", "7", String(MB)]);
          assert.equal(r.got, r.sent);
        },
      );

      await t.step("a peer removed at run time can no longer talk", async () => {
        assert.equal(listener.removePeer(b.publicKey), true);
        const r = await run(b, ["connect", "10.99.0.7", "7", "3000"]);
        assert.equal(r.connected, false);
        const stats = listener.stats();
        assert.equal(stats.peers.length, 1);
        assert.ok(stats.drops.unknownIndex! + stats.drops.unknownPeer! > 0, JSON.stringify(stats.drops));
        // The remaining peer is unaffected.
        const ra = await run(a, ["echo", "10.99.0.7", "7", "1000"]);
        assert.equal(ra.got, ra.sent);
      });
    }),
});

Deno.test({
  name: "listenWireGuard() with its socket on a worker thread carries the same traffic",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: (t) =>
    withListener({ socketIo: "worker" }, 1, async (_listener, clients) => {
      const [a] = clients as [RigClient];
      await t.step("TCP echo", async () => {
        const r = await run(a, ["echo", "10.99.0.1", "7", String(256 * 1024)]);
        assert.equal(r.got, r.sent);
      });
      await t.step("20 MB download arrives intact", async () => {
        const r = await run(a, ["download", "10.99.0.2", "19", String(20 * MB)], 120);
        assert.equal(r.bytes, 20 * MB);
        assert.equal(r.got, r.want);
      });
      await t.step("UDP echo", async () => {
        const r = await run(a, ["udp", "10.99.0.4", "5353", "hello from the worker"]);
        assert.equal(r.reply, "hello from the worker");
      });
    }),
});
