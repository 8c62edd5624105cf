/**
 * The intercept addon through the library: curl through the explicit proxy to a loopback echo
 * origin; a matching request is held (curl still waiting), resumed with a changed header (the
 * origin sees it), a response held and resumed with another status (curl gets it), a held flow
 * killed (curl fails), and a filter that matches nothing holds nothing.
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";
import { InterceptAddon, InterceptError } from "../src/addons/builtins/intercept.ts";
import type { Flow } from "../src/flows/flow.ts";

async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  for (let i = 0; i < 1000 && Date.now() < end; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function curl(args: string[]): { done: boolean; result: Promise<{ code: number; out: string }> } {
  const state = { done: false, result: Promise.resolve({ code: 0, out: "" }) };
  state.result = new Deno.Command("curl", {
    args: ["-sS", "--max-time", "15", ...args],
    stdout: "piped",
    stderr: "null",
  }).output().then((o) => {
    state.done = true;
    return { code: o.code, out: new TextDecoder().decode(o.stdout) };
  });
  return state;
}

Deno.test({
  name: "intercept addon: request held and edited on the wire, response status edited, kill, no match",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-intercept-" });
    const seen: string[] = [];
    const seenList = (): string[] => seen;
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
      seen.push(`${req.method} ${new URL(req.url).pathname} x-edit=${req.headers.get("x-edit")}`);
      return new Response("hello", { headers: { "x-origin": "1" } });
    });
    const intercept = new InterceptAddon();
    const proxy = await startProxy({
      modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
      confdir: `${dir}/conf`,
      allowLocalDestinations: true,
      addons: [intercept],
      onLog: () => {},
    });
    const via = `http://127.0.0.1:${proxy.addresses[0]!.addr.port}`;
    const ended: Flow[] = [];
    proxy.bus.subscribe((e) => {
      if (e.type === "end") ended.push(e.flow);
    });
    const base = `http://127.0.0.1:${origin.addr.port}`;
    try {
      assert.throws(() => intercept.setFilter("~u ("), /never closed|expected/);
      intercept.setFilter("~u /held & ~q");
      const changes: string[] = [];
      intercept.onChange((p, held) => changes.push(held ? `pause ${p.phase}` : "go"));

      // Request: held before the server, a header changed, then on the wire.
      const a = curl(["-x", via, "-H", "x-edit: before", `${base}/held`]);
      await until("the request paused", () => intercept.paused().length === 1);
      const p = intercept.paused()[0]!;
      assert.equal(p.phase, "request");
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(a.done, false, "curl still waits");
      assert.deepEqual(seen, [], "the origin has seen nothing");
      assert.throws(() => intercept.resume(p.flow.id, { headers: [["bad name", "x"]] }), InterceptError);
      assert.equal(intercept.paused().length, 1, "a bad edit leaves it paused");
      const headers = p.flow.request.headers.filter(([n]) => n.toLowerCase() !== "x-edit");
      intercept.resume(p.flow.id, { headers: [...headers, ["x-edit", "after"]] });
      const ra = await a.result;
      assert.equal(ra.code, 0);
      assert.equal(ra.out, "hello");
      assert.deepEqual(seen, ["GET /held x-edit=after"]);

      // Response: held before the client, the status changed.
      intercept.setFilter("~u /resp & ~s");
      const b = curl(["-x", via, "-o", "/dev/null", "-w", "%{http_code}", `${base}/resp`]);
      await until("the response paused", () => intercept.paused().length === 1);
      assert.equal(intercept.paused()[0]!.phase, "response");
      assert.equal(intercept.paused()[0]!.flow.response?.status, 200);
      intercept.resume(intercept.paused()[0]!.flow.id, { status: 418 });
      assert.equal((await b.result).out, "418");
      // What the flow records is what the client got: the new status with its standard phrase.
      await until("the flow ended", () => ended.some((f) => f.type === "http" && f.request.path === "/resp"));
      const resp = ended.find((f) => f.type === "http" && f.request.path === "/resp");
      assert.ok(resp?.type === "http");
      assert.deepEqual([resp.response?.status, resp.response?.reason], [418, "I'm a teapot"]);

      // Kill: the client's request ends without an answer.
      intercept.setFilter("~u /kill");
      const c = curl(["-x", via, `${base}/kill`]);
      await until("the request paused", () => intercept.paused().length === 1);
      intercept.kill(intercept.paused()[0]!.flow.id);
      assert.notEqual((await c.result).code, 0, "curl fails");
      assert.ok(!seenList().some((s) => s.includes("/kill")));

      // No match: nothing held.
      intercept.setFilter("~u /nothing-like-this");
      assert.equal((await curl(["-x", via, `${base}/free`]).result).out, "hello");
      intercept.setFilter("");
      assert.deepEqual(changes, ["pause request", "go", "pause response", "go", "pause request", "go"]);
    } finally {
      await proxy.close(0);
      await origin.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
