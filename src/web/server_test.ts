import assert from "node:assert/strict";
import * as zlib from "node:zlib";
import { FlowBus, type HttpFlow } from "../flows/flow.ts";
import { SqliteFlowStore } from "../flows/store.ts";
import { syntheticFlow } from "../flows/testdata/flows.ts";
import { startWebUi } from "./server.ts";
import type { FlowDetailJson, FlowPageJson, UpdatesMessage } from "./api_types.ts";

/** Synthetic HTTP flow `n` (the generator makes mostly HTTP; these numbers are HTTP). */
function httpFlow(n: number): HttpFlow {
  for (let k = n; k < n + 1000; k++) {
    const f = syntheticFlow(k);
    if (f.type === "http" && f.response) return f;
  }
  throw new Error("no HTTP flow");
}

async function withUi(
  fn: (ctx: {
    base: string;
    cookie: string;
    csrf: string;
    store: SqliteFlowStore;
    bus: FlowBus;
    port: number;
  }) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-web-server-" });
  const store = SqliteFlowStore.open(`${dir}/flows.db`);
  const bus = new FlowBus();
  const web = await startWebUi({ store, bus, port: 0, updateInterval: 100 });
  try {
    const entered = await fetch(web.url, { redirect: "manual" });
    await entered.body?.cancel();
    const cookie = entered.headers.get("set-cookie")!.split(";")[0]!;
    const base = `http://127.0.0.1:${web.addr.port}`;
    const { csrf } = await (await fetch(`${base}/api/session`, { headers: { cookie } })).json();
    await fn({ base, cookie, csrf, store, bus, port: web.addr.port });
  } finally {
    await web.close();
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("web API: pages by cursor with a count, bad filters with their column, details and decoded bodies", async () => {
  await withUi(async ({ base, cookie, csrf, store }) => {
    const flows: HttpFlow[] = [];
    let n = 1;
    for (let i = 0; i < 30; i++) {
      const f = httpFlow(n);
      n = Number.parseInt(f.id.slice(0, 8), 16) + 1;
      flows.push(f);
    }
    const json = new TextEncoder().encode(JSON.stringify({ hello: "world" }));
    const zstd = (zlib as unknown as { zstdCompressSync: (b: Uint8Array) => Uint8Array }).zstdCompressSync;
    const encoded: [HttpFlow, string, Uint8Array][] = [
      [flows[0]!, "gzip", zlib.gzipSync(json)],
      [flows[1]!, "br", zlib.brotliCompressSync(json)],
      [flows[4]!, "deflate", zlib.deflateSync(json)],
      [flows[5]!, "zstd", zstd(json)],
    ];
    for (const [f, coding, bytes] of encoded) {
      f.response!.headers = [["Content-Type", "application/json"], ["Content-Encoding", coding]];
      f.response!.body = { content: bytes, size: bytes.byteLength, truncated: false };
    }
    const gz = flows[0]!;
    store.batch(() => flows.forEach((f) => store.end(f)));
    const get = async <T>(path: string) => {
      const r = await fetch(`${base}${path}`, { headers: { cookie } });
      return { status: r.status, body: await r.json() as T };
    };

    const first = await get<FlowPageJson>("/api/flows?limit=20&count=1");
    assert.equal(first.status, 200);
    assert.equal(first.body.flows.length, 20);
    assert.equal(first.body.total, 30);
    assert.deepEqual(first.body.flows.map((f) => f.id), flows.slice(0, 20).map((f) => f.id));
    assert.ok(!("request" in first.body.flows[0]!), "summaries carry no heads or bodies");
    const second = await get<FlowPageJson>(`/api/flows?limit=20&cursor=${first.body.cursor}`);
    assert.deepEqual(second.body.flows.map((f) => f.id), flows.slice(20).map((f) => f.id));
    assert.equal(second.body.cursor, undefined);

    const bad = await get<{ ok: false; error: string; column: number }>(
      `/api/flows?filter=${encodeURIComponent("~m GET & (")}`,
    );
    assert.equal(bad.status, 400);
    assert.equal(bad.body.column, 10);

    const detail = await get<FlowDetailJson>(`/api/flows/${gz.id}`);
    assert.equal(detail.body.response!.body.text, undefined, "an encoded body is not inlined");
    assert.equal(detail.body.request!.method, gz.request.method);
    for (const [f] of encoded) {
      const raw = await fetch(`${base}/api/flows/${f.id}/response/body`, { headers: { cookie } });
      assert.deepEqual(new Uint8Array(await raw.arrayBuffer()), new Uint8Array(f.response!.body.content));
      const decoded = await fetch(`${base}/api/flows/${f.id}/response/body?decode=1`, {
        headers: { cookie },
      });
      assert.equal(decoded.headers.get("content-type"), "application/json");
      assert.match(decoded.headers.get("content-security-policy") ?? "", /sandbox/);
      assert.deepEqual(await decoded.json(), { hello: "world" });
    }
    const plain = await get<FlowDetailJson>(`/api/flows/${flows[2]!.id}`);
    assert.equal(plain.body.response!.body.text, new TextDecoder().decode(flows[2]!.response!.body.content));
    assert.equal((await get(`/api/flows/nope`)).status, 404);

    // DELETE needs the CSRF header.
    const del = (headers: Record<string, string>) =>
      fetch(`${base}/api/flows/${flows[3]!.id}`, { method: "DELETE", headers: { cookie, ...headers } });
    const refused = await del({});
    assert.equal(refused.status, 403);
    await refused.body?.cancel();
    const deleted = await del({ "x-wirescope-csrf": csrf });
    assert.deepEqual(await deleted.json(), { deleted: 1 });
    assert.equal(await store.count(), 29);

    // Export, a bad mark, and clear all (behind the CSRF header too).
    const post = (path: string, body: unknown) =>
      fetch(`${base}${path}`, {
        method: "POST",
        headers: { cookie, "x-wirescope-csrf": csrf, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const har =
      await (await fetch(`${base}/api/flows/${flows[2]!.id}/export?format=har`, { headers: { cookie } }))
        .json();
    assert.equal(har.log.entries[0].request.url, flows[2]!.request.url);
    const raw = await fetch(`${base}/api/flows/${flows[2]!.id}/export?format=raw`, { headers: { cookie } });
    assert.match(await raw.text(), new RegExp(`^${flows[2]!.request.method} `));
    const badMark = await post(`/api/flows/${flows[2]!.id}/mark`, { mark: 3 });
    assert.equal(badMark.status, 400);
    await badMark.body?.cancel();
    assert.deepEqual(await (await post(`/api/flows/${flows[2]!.id}/mark`, { mark: "red" })).json(), {
      ok: true,
    });
    assert.equal((await store.get(flows[2]!.id))?.mark, "red");
    assert.deepEqual(await (await post("/api/flows/clear", {})).json(), { cleared: true });
    assert.equal(await store.count(), 0);
  });
});

Deno.test("web updates: ended flows reach a page in batches, filtered by the page's expression", async () => {
  await withUi(async ({ base, cookie, bus, port }) => {
    // The browser's WebSocket sends no cookie from Deno; a page's upgrade is what the browser test
    // covers. Here: Origin and cookie by hand over a raw upgrade (Deno's WebSocket takes headers).
    const ws = new WebSocket(`ws://127.0.0.1:${port}/api/updates`, {
      headers: { cookie, origin: base },
    } as unknown as string[]);
    const messages: UpdatesMessage[] = [];
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error("upgrade refused"));
    });
    ws.onmessage = (e) => messages.push(JSON.parse(String(e.data)));
    ws.send(JSON.stringify({ filter: "~m POST" }));
    await new Promise((r) => setTimeout(r, 50));
    let n = 1;
    const sent: HttpFlow[] = [];
    for (let i = 0; i < 200; i++) {
      const f = httpFlow(n);
      n = Number.parseInt(f.id.slice(0, 8), 16) + 1;
      sent.push(f);
      bus.emit("end", f);
    }
    for (let i = 0; i < 50 && messages.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 250));
    ws.close();
    const got = messages.flatMap((m) => m.flows.map((f) => f.id));
    assert.deepEqual(got, sent.filter((f) => f.request.method === "POST").map((f) => f.id));
    assert.ok(got.length > 0);
    assert.equal(messages.length, 1, "200 flows within one interval make one message");
  });
});
