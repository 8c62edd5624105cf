/**
 * The library's flow store: `startProxy({ store })` records every flow through a recorder,
 * `proxy.store.query({ filter })` finds them, and `close()` leaves every ended flow committed;
 * `store: false` records nothing. Explicit-proxy mode on loopback, curl as the client.
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";
import { SqliteFlowStore } from "../src/flows/store.ts";
import { WorkerFlowStore } from "../src/flows/worker_store.ts";
import type { HttpFlow } from "../src/flows/flow.ts";

async function curl(args: string[]): Promise<number> {
  const o = await new Deno.Command("curl", { args: ["-sS", "--max-time", "10", "-o", "/dev/null", ...args] })
    .output();
  return o.code;
}

for (const kind of ["sqlite", "worker"] as const) {
  Deno.test({
    name: `startProxy({ store }) records flows in a ${kind} store; proxy.store answers filters`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const dir = await Deno.makeTempDir({ prefix: "wirescope-proxy-store-" });
      const origin = Deno.serve(
        { hostname: "127.0.0.1", port: 0, onListen() {} },
        (req) =>
          new Response(`ok ${new URL(req.url).pathname}`, { status: req.method === "POST" ? 201 : 200 }),
      );
      const store = kind === "sqlite"
        ? SqliteFlowStore.open(`${dir}/flows.db`)
        : await WorkerFlowStore.open(`${dir}/flows.db`);
      const proxy = await startProxy({
        modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
        confdir: `${dir}/conf`,
        allowLocalDestinations: true,
        store,
        onLog: () => {},
      });
      try {
        const port = proxy.addresses[0]!.addr.port;
        const base = `http://127.0.0.1:${origin.addr.port}`;
        for (let i = 0; i < 5; i++) {
          assert.equal(await curl(["-x", `http://127.0.0.1:${port}`, `${base}/g${i}`]), 0);
        }
        assert.equal(await curl(["-x", `http://127.0.0.1:${port}`, "-d", "a=1", `${base}/p`]), 0);
        assert.equal(proxy.store, store);
        await proxy.close();
        // Closed: every ended flow is committed.
        assert.equal(await proxy.store!.count(), 6);
        const posts = await proxy.store!.query({ filter: "~m POST & ~c 201" });
        assert.equal(posts.flows.length, 1);
        const post = posts.flows[0]!.flow as HttpFlow;
        assert.equal(post.request.url, `${base}/p`);
        assert.equal(new TextDecoder().decode(post.request.body.content), "a=1");
        assert.equal(new TextDecoder().decode(post.response!.body.content), "ok /p");
        const stats = proxy.stats().store!;
        assert.equal(stats.stored, 6);
        assert.equal(stats.stopped, false);
      } finally {
        await proxy.close();
        await store.close();
        await origin.shutdown();
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name: "startProxy({ store: false }) records nothing and has no store",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-proxy-store-" });
    const proxy = await startProxy({
      modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
      confdir: `${dir}/conf`,
      store: false,
      onLog: () => {},
    });
    try {
      assert.equal(proxy.store, undefined);
      assert.equal(proxy.recorder, undefined);
      assert.equal(proxy.stats().store, undefined);
    } finally {
      await proxy.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
