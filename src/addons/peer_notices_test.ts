import assert from "node:assert/strict";
import { addonRunner, wireguardPeerNotices } from "./wiring.ts";
import { AddonManager } from "./manager.ts";

Deno.test("wireguardPeerNotices: handshake, online once, offline on expiry; none without the hook", async () => {
  const seen: string[] = [];
  const manager = new AddonManager({ log: () => {} });
  manager.add([{
    async wireguardPeer(p) {
      await new Promise((r) => setTimeout(r, 1));
      seen.push(`${p.event} ${p.publicKey} ${p.endpoint ?? "-"}`);
    },
  }]);
  const notify = wireguardPeerNotices(addonRunner(manager))!;
  notify({ publicKey: "K", endpoint: "192.168.1.2:5000", kind: "handshake" });
  notify({ publicKey: "K", endpoint: "192.168.1.2:5000", kind: "handshake" });
  notify({ publicKey: "K", kind: "expired" });
  notify({ publicKey: "K", kind: "expired" });
  for (let i = 0; i < 100 && seen.length < 4; i++) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(seen, [
    "handshake K 192.168.1.2:5000",
    "online K 192.168.1.2:5000",
    "handshake K 192.168.1.2:5000",
    "offline K -",
  ]);
  const empty = new AddonManager({ log: () => {} });
  empty.add([{ request() {} }]);
  assert.equal(wireguardPeerNotices(addonRunner(empty)), null);
  assert.equal(wireguardPeerNotices(addonRunner(undefined)), null);
});
