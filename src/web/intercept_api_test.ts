import assert from "node:assert/strict";
import type { HttpFlow } from "../flows/flow.ts";
import { SqliteFlowStore } from "../flows/store.ts";
import { syntheticFlow } from "../flows/testdata/flows.ts";
import { InterceptAddon } from "../addons/builtins/intercept.ts";
import { startWebUi } from "./server.ts";
import { editedCopy } from "./intercept_api.ts";
import type { FlowPageJson, InterceptJson } from "./api_types.ts";

function httpFlow(n: number): HttpFlow {
  for (let k = n; k < n + 1000; k++) {
    const f = syntheticFlow(k);
    if (f.type === "http" && f.response && !f.request.body.truncated) return f;
  }
  throw new Error("no HTTP flow");
}

Deno.test("web intercept API: without an addon or a proxy, bad expressions, flows not held, bad edits, sorting", async () => {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-web-intercept-api-" });
  const store = SqliteFlowStore.open(`${dir}/flows.db`);
  for (let n = 0; n < 40; n++) store.end(syntheticFlow(n));
  const plain = await startWebUi({ store, port: 0 });
  const intercept = new InterceptAddon();
  const withAddon = await startWebUi({ store, port: 0, intercept });
  try {
    for (const [web, hasAddon] of [[plain, false], [withAddon, true]] as const) {
      const entered = await fetch(web.url, { redirect: "manual" });
      await entered.body?.cancel();
      const cookie = entered.headers.get("set-cookie")!.split(";")[0]!;
      const base = `http://127.0.0.1:${web.addr.port}`;
      const { csrf } = await (await fetch(`${base}/api/session`, { headers: { cookie } })).json();
      const call = async (method: string, path: string, body?: unknown, withCsrf = true) => {
        const r = await fetch(`${base}${path}`, {
          method,
          headers: {
            cookie,
            ...(withCsrf ? { "x-wirescope-csrf": csrf } : {}),
            "content-type": "application/json",
          },
          ...(body !== undefined ? { body: typeof body === "string" ? body : JSON.stringify(body) } : {}),
        });
        return { status: r.status, json: await r.json() };
      };
      const state = await call("GET", "/api/intercept");
      assert.deepEqual(state.json as InterceptJson, { available: hasAddon, filter: "", paused: [] });
      // Changes need the CSRF header like every other.
      assert.equal((await call("PUT", "/api/intercept", { filter: "~q" }, false)).status, 403);
      if (!hasAddon) {
        assert.equal((await call("PUT", "/api/intercept", { filter: "~q" })).status, 501);
      } else {
        const bad = await call("PUT", "/api/intercept", { filter: "~u (" });
        assert.equal(bad.status, 400);
        assert.equal(bad.json.ok, false);
        assert.ok(bad.json.column > 0);
        assert.equal((await call("PUT", "/api/intercept", "not json")).status, 400);
        assert.equal((await call("PUT", "/api/intercept", { filter: 3 })).status, 400);
        const ok = await call("PUT", "/api/intercept", { filter: "~m POST" });
        assert.deepEqual(ok.json, { available: true, filter: "~m POST", paused: [] });
        assert.equal(intercept.filter, "~m POST");
        assert.equal((await call("POST", "/api/intercept/resume-all")).json.resumed, 0);
      }
      const id = syntheticFlow(3).id;
      assert.equal((await call("POST", `/api/flows/${id}/resume`, {})).status, 404);
      assert.equal((await call("POST", `/api/flows/${id}/kill`)).status, 404);
      // No proxy: nothing to replay with.
      assert.equal((await call("POST", `/api/flows/${id}/replay`)).status, 501);
      assert.equal((await call("GET", `/api/flows/${id}/replay`)).status, 405);
      // The store's routes still answer.
      assert.equal((await call("GET", `/api/flows/${id}`)).status, 200);

      // Sorting: by status, both ways, in pages; an unknown key is refused.
      assert.equal((await call("GET", "/api/flows?sort=nope")).status, 400);
      for (const desc of [false, true]) {
        const statuses: number[] = [];
        let cursor = "";
        for (let i = 0; i < 20; i++) {
          const page = (await call(
            "GET",
            `/api/flows?sort=status${desc ? "&desc=1" : ""}&limit=7${cursor ? `&cursor=${cursor}` : ""}`,
          )).json as FlowPageJson;
          statuses.push(...page.flows.map((f) => f.status));
          if (!page.cursor) break;
          cursor = page.cursor;
        }
        assert.equal(statuses.length, 40);
        const sorted = [...statuses].sort((a, b) => desc ? b - a : a - b);
        assert.deepEqual(statuses, sorted);
        // From the end back (the page's jump to the end): the same list, last first, by the same ids.
        const ids = async (params: string, back: string) => {
          const out: string[] = [];
          let c = "";
          for (let i = 0; i < 20; i++) {
            const page = (await call("GET", `/api/flows?${params}${c ? `&${back}=${c}` : ""}`))
              .json as FlowPageJson;
            out.push(...page.flows.map((f) => f.id));
            if (!page.cursor) break;
            c = page.cursor;
          }
          return out;
        };
        const forward = await ids(`sort=status${desc ? "&desc=1" : ""}&limit=7`, "cursor");
        const backward = await ids(`sort=status${desc ? "&desc=1" : ""}&limit=7&from=end`, "before");
        assert.deepEqual(backward, [...forward].reverse());
      }
    }
  } finally {
    await plain.close();
    await withAddon.close();
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("editedCopy: method, URL (destination follows a new host), headers without framing, body", () => {
  const f = httpFlow(5);
  const copy = editedCopy(f, {
    method: "PATCH",
    url: "https://other.example:8443/x?y=1",
    headers: [["Host", "old"], ["X-A", "1"], ["Content-Length", "99"]],
    body: "héllo",
  });
  assert.equal(copy.request.method, "PATCH");
  assert.equal(copy.request.host, "other.example");
  assert.equal(copy.request.port, 8443);
  assert.equal(copy.request.path, "/x?y=1");
  assert.deepEqual(copy.server.address, { hostname: "other.example", port: 8443 });
  assert.deepEqual(copy.request.headers, [["X-A", "1"]]);
  assert.equal(new TextDecoder().decode(copy.request.body.content), "héllo");
  assert.equal(copy.request.body.size, 6);
  assert.equal(f.request.method !== "PATCH", true, "the original is untouched");
  // The same host keeps the recorded address.
  const same = editedCopy(f, { url: f.request.url.replace(/\?.*$/, "") + "?z=2" });
  assert.deepEqual(same.server.address, f.server.address);
  assert.throws(() => editedCopy(f, { url: "ftp://x/" }), /not an http/);
  assert.throws(() => editedCopy(f, { method: "GE T" }), /invalid method/);
  assert.throws(() => editedCopy(f, { headers: [["a b", "c"]] }), /invalid header name/);
});
