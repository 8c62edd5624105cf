/**
 * Addons through the proxy (library, explicit mode, curl over HTTP/1.1 to a loopback origin):
 * hook order, a request header the origin sees, a response body rewritten (Content-Length
 * right), a local answer (origin not contacted), a kill, a hook that throws (one log line, the
 * flow goes on), and `done` at close.
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";
import { defineAddon } from "../src/addons/types.ts";

async function curl(proxyPort: number, args: string[]): Promise<{ code: number; out: string; head: string }> {
  const o = await new Deno.Command("curl", {
    args: ["-sS", "--http1.1", "-D", "-", "--max-time", "10", "-x", `http://127.0.0.1:${proxyPort}`, ...args],
  }).output();
  const text = new TextDecoder().decode(o.stdout);
  const split = text.indexOf("\r\n\r\n");
  return { code: o.code, head: text.slice(0, split), out: text.slice(split + 4) };
}

Deno.test({
  name: "addons: hooks in order; request header, response body, local answer, kill, throwing hook",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-addons-" });
    const seen: { path: string; tag: string | null }[] = [];
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
      const url = new URL(req.url);
      seen.push({ path: url.pathname, tag: req.headers.get("x-tag") });
      return new Response(`hello from ${url.pathname}`, { headers: { "x-origin": "yes" } });
    });
    const calls: string[] = [];
    const logs: string[] = [];
    const tagger = defineAddon({
      name: "tagger",
      options: { tag: { type: "string", default: "none", help: "x-tag value" } },
      requestheaders(f) {
        calls.push(`requestheaders ${f.request.path}`);
      },
      request(f, ctx) {
        calls.push(`request ${f.request.path}`);
        if (f.request.path === "/local") f.respond(418, { "content-type": "text/plain" }, "made locally");
        else if (f.request.path === "/kill") f.kill();
        else f.request.headers.set("x-tag", ctx.options.tag);
      },
      responseheaders(f) {
        calls.push(`responseheaders ${f.response!.status}`);
      },
      response(f) {
        calls.push(`response ${f.response!.status}`);
        if (f.request.path === "/rewrite") {
          f.response!.text = f.response!.text!.replace("hello", "HELLO, rewritten");
        }
        f.response!.headers.set("x-seen-by", f.request.headers.get("x-tag") ?? "?");
      },
    });
    let done = 0;
    const thrower = defineAddon({
      name: "thrower",
      request() {
        throw new Error("boom in request");
      },
      done() {
        done++;
      },
    });
    const proxy = await startProxy({
      modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
      confdir: `${dir}/conf`,
      allowLocalDestinations: true,
      addons: [tagger, thrower],
      addonOptions: ["tag=blue"],
      onLog: (e) => logs.push(`${e.level} ${e.message}`),
    });
    try {
      const port = proxy.addresses[0]!.addr.port;
      const base = `http://127.0.0.1:${origin.addr.port}`;

      const plain = await curl(port, [`${base}/plain`]);
      assert.equal(plain.code, 0);
      assert.equal(plain.out, "hello from /plain");
      assert.match(plain.head, /x-seen-by: blue/i);
      assert.deepEqual(seen.at(-1), { path: "/plain", tag: "blue" });
      assert.deepEqual(calls.splice(0), [
        "requestheaders /plain",
        "request /plain",
        "responseheaders 200",
        "response 200",
      ]);
      // The throwing addon: one log line with its name and stack; the flow went on.
      const errors = logs.filter((l) => l.includes("thrower"));
      assert.equal(errors.length, 1);
      assert.match(
        errors[0]!,
        /addon thrower: request on http:\/\/127\.0\.0\.1:\d+\/plain failed: Error: boom in request/,
      );

      const rewritten = await curl(port, [`${base}/rewrite`]);
      assert.equal(rewritten.out, "HELLO, rewritten from /rewrite");
      assert.match(
        rewritten.head,
        new RegExp(`content-length: ${"HELLO, rewritten from /rewrite".length}\\r?$`, "im"),
      );

      const before = seen.length;
      const local = await curl(port, [`${base}/local`]);
      assert.equal(local.out, "made locally");
      assert.match(local.head, /^HTTP\/1\.1 418/);
      assert.equal(seen.length, before, "the origin is not contacted for a local answer");

      const killed = await curl(port, [`${base}/kill`]);
      assert.notEqual(killed.code, 0);
      assert.equal(seen.length, before);
    } finally {
      await proxy.close();
      await origin.shutdown();
    }
    assert.equal(done, 1, "done runs at close");
  },
});
