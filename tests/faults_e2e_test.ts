/**
 * Network faults on the WireGuard path: a real wireguard-go client (tests/rig.ts) reaches
 * `listenWireGuard()` in this process through the seeded impairment relay (tests/impair_relay.ts,
 * a process of its own) that loses, duplicates, reorders and delays datagrams both ways; bulk
 * transfers each way must arrive intact. The bounded version of `deno task bench:faults` (which
 * carries 100 MiB at each setting and compares with wireguard-go). Needs root.
 */
import assert from "node:assert/strict";
import { generatePrivateKey, listenWireGuard } from "../mod.ts";
import { nsClient, Rig } from "./rig.ts";
import { serveOrigin } from "./origin.ts";
import { type ImpairSettings, NO_IMPAIRMENT, type RelayStats, startImpairRelay } from "./impair_relay.ts";

const MB = 1 << 20;

/** Everything at once: loss, duplication, reordering and delay, each way. */
export const COMBINED: ImpairSettings = {
  ...NO_IMPAIRMENT,
  // A seed whose first datagrams each way get through: the handshake is not held up by WireGuard's
  // 5 s retry (bench:faults covers handshakes under loss), which keeps the test short.
  seed: 2,
  loss: 0.05,
  duplicate: 0.05,
  reorder: 0.05,
  reorderMs: 5,
  delayMs: 10,
};

Deno.test({
  name: "a wireguard-go client's transfers through 5% loss, 5% duplication, 5% reordering and 10 ms delay " +
    "arrive intact",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const listener = listenWireGuard({ hostname: "127.0.0.1", port: 0, privateKey: generatePrivateKey() });
    await listener.ready;
    const serving = (async () => {
      for await (const conn of listener) serveOrigin(conn, conn.localAddr.port);
    })();
    let rig: Rig | null = null;
    let relay: Awaited<ReturnType<typeof startImpairRelay>> | null = null;
    let stats: RelayStats | null = null;
    try {
      rig = await Rig.create(1, listener.publicKey, listener.addr.port, (publicKey) => {
        listener.addPeer({ publicKey });
      });
      const client = rig.clients[0]!;
      relay = await startImpairRelay({
        ...COMBINED,
        listen: `${rig.hostAddress}:0`,
        upstream: `127.0.0.1:${listener.addr.port}`,
      });
      // The client's endpoint becomes the relay (it has sent nothing yet).
      await client.exec(["wg", "set", client.wg, "peer", listener.publicKey, "endpoint"]
        .concat([`${rig.hostAddress}:${relay.port}`]));

      await t.step("the handshake gets through (retried by the client as WireGuard does)", async () => {
        let ok = false;
        for (let i = 0; i < 6 && !ok; i++) {
          const r = await nsClient(client, ["echo", "10.99.0.1", "7", "1000"], 20).catch(() => null);
          ok = r !== null && r.got === r.sent;
        }
        assert.ok(ok, "no echo through the impaired tunnel");
      });

      await t.step(
        "2 MB download (wirescope's smoltcp sends and recovers losses) arrives intact",
        async () => {
          const r = await nsClient(client, ["download", "10.99.0.2", "19", String(2 * MB)], 60);
          assert.equal(r.bytes, 2 * MB);
          assert.equal(r.got, r.want);
        },
      );

      await t.step("12 MB upload (the client's Linux sends) arrives intact", async () => {
        const r = await nsClient(client, ["upload", "10.99.0.2", "9", String(12 * MB)], 40);
        assert.equal(r.reply, r.sent);
      });

      stats = await relay.stop();
      // The relay did impair both ways, as configured, and lost nothing else.
      for (const dir of [stats.up, stats.down]) {
        assert.ok(dir.lost > 0 && dir.duplicated > 0 && dir.heldBack > 0, JSON.stringify(stats));
      }
      assert.equal(stats.kernelDrops + stats.overflow + stats.sendErrors, 0, JSON.stringify(stats));
      // Duplicates are the receiver's to drop (WireGuard's replay window), and counted.
      const rejected = listener.stats().drops.rejected ?? 0;
      assert.ok(
        rejected >= stats.up.duplicated * 0.9,
        `${rejected} rejected, ${stats.up.duplicated} duplicated`,
      );
    } finally {
      await relay?.stop().catch(() => {});
      listener.close();
      await listener.closed;
      await serving;
      await rig?.close();
    }
  },
});
