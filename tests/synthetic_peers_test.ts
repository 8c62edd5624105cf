/**
 * The short version of `deno task bench:synthetic`: ten synthetic peers (client-role wasm
 * cores on sockets of their own, bench/synthetic_load.ts) against `startProxy()`'s WireGuard mode
 * on loopback; each completes a handshake and three HTTP requests through the proxy to a loopback
 * origin, and the proxy records every request.
 * @module
 */
import assert from "node:assert/strict";
import { generatePrivateKey, publicKeyOf } from "../src/core/keys.ts";
import { startProxy } from "../src/proxy/proxy.ts";
import type { Flow } from "../src/flows/flow.ts";
import { type PeerSpec, runPeers } from "../bench/synthetic_load.ts";

const PEERS = 10, REQUESTS = 3;

Deno.test({
  name: "synthetic peers: 10 WireGuard peers each handshake and complete 3 HTTP requests through the proxy",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("ok\n"));
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-synthetic-" });
    const specs: PeerSpec[] = Array.from({ length: PEERS }, (_, i) => ({
      index: i,
      privateKey: generatePrivateKey(),
      // A source address each: the server limits handshakes per source address.
      bindAddress: `127.0.1.${i + 1}`,
      address4: `10.1.0.${i + 2}`,
    }));
    const serverKey = generatePrivateKey();
    const proxy = await startProxy({
      modes: [{
        kind: "wireguard",
        hostname: "0.0.0.0",
        port: 0,
        privateKey: serverKey,
        peers: specs.map((s) => ({ publicKey: publicKeyOf(s.privateKey), allowedIps: [`${s.address4}/32`] })),
      }],
      confdir,
      dnsServers: [],
      allowLocalDestinations: true,
      onLog: () => {},
    });
    const flows: Flow[] = [];
    const reading = (async () => {
      for await (const f of proxy.flows) flows.push(f);
    })();
    try {
      const up: number[] = [];
      const results = await runPeers(specs, {
        serverHost: "127.0.0.1",
        serverPort: proxy.wireguard[0]!.addr.port,
        serverPublicKey: publicKeyOf(serverKey),
        origin: { hostname: "127.0.0.1", port: origin.addr.port },
        host: `127.0.0.1:${origin.addr.port}`,
        path: "/small",
        requests: REQUESTS,
      }, { startAt: Date.now(), startRate: 0, deadline: Date.now() + 30_000, onUp: (i) => up.push(i) });
      assert.deepEqual(results.filter((r) => r.failure).map((r) => `${r.index}: ${r.failure}`), []);
      assert.equal(new Set(up).size, PEERS);
      for (const r of results) {
        assert.ok(r.handshakeMs !== null && r.handshakeMs >= r.startMs, `peer ${r.index} handshake`);
        assert.equal(r.requestMs.length, REQUESTS, `peer ${r.index} requests`);
      }
      const deadline = Date.now() + 5_000;
      while (flows.filter((f) => f.type === "http").length < PEERS * REQUESTS && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const http = flows.filter((f) => f.type === "http");
      assert.equal(http.length, PEERS * REQUESTS);
      const agents = new Set(http.map((f) => f.request.headers.find(([k]) => /^user-agent$/i.test(k))?.[1]));
      assert.equal(agents.size, PEERS, "every peer's requests are recorded");
    } finally {
      await proxy.close(100);
      await reading.catch(() => {});
      await origin.shutdown();
      await Deno.remove(confdir, { recursive: true });
    }
  },
});
