/**
 * The addon manager: hooks in load order, each awaited; errors isolated (one log line, the next
 * addon and the flow go on); options typed from `--set` strings, unknown names refused; reload of
 * a file keeps the old version when the new one cannot load; a hook that never resolves holds its
 * flow until the client goes, and `done` still runs at shutdown.
 */
import assert from "node:assert/strict";
import { AddonError, AddonManager, parseOption } from "./manager.ts";
import { type Addon, defineAddon } from "./types.ts";
import type { HttpFlow } from "../flows/flow.ts";
import { startProxy } from "../proxy/proxy.ts";
import net from "node:net";

function httpFlow(path = "/a"): HttpFlow {
  return {
    id: "f1",
    type: "http",
    client: { address: { hostname: "127.0.0.1", port: 5000 }, mode: "regular" },
    server: { address: { hostname: "127.0.0.1", port: 80 } },
    timestampStart: 0,
    request: {
      method: "GET",
      scheme: "http",
      host: "127.0.0.1",
      port: 80,
      path,
      url: `http://127.0.0.1${path}`,
      httpVersion: "HTTP/1.1",
      headers: [["Host", "127.0.0.1"]],
      body: { content: new Uint8Array(0), size: 0, truncated: false },
      timestampStart: 0,
      timestampEnd: 0,
    },
  } as HttpFlow;
}

function quietManager(): { manager: AddonManager; lines: string[] } {
  const lines: string[] = [];
  return { manager: new AddonManager({ log: (level, message) => lines.push(`${level} ${message}`) }), lines };
}

Deno.test("manager: hooks run in load order, each awaited before the next; lifecycle order", async () => {
  const { manager } = quietManager();
  const seen: string[] = [];
  const slow: Addon = {
    name: "slow",
    load: () => void seen.push("slow load"),
    configure: (changed) => void seen.push(`slow configure ${[...changed].join(",")}`),
    async request() {
      seen.push("slow start");
      await new Promise((r) => setTimeout(r, 30));
      seen.push("slow end");
    },
    done: () => void seen.push("slow done"),
  };
  const fast: Addon = {
    name: "fast",
    load: () => void seen.push("fast load"),
    request: () => void seen.push("fast"),
    running: () => void seen.push("fast running"),
    done: () => void seen.push("fast done"),
  };
  manager.add([slow, fast]);
  await manager.start();
  await manager.running();
  await manager.http(["requestheaders", "request"], httpFlow());
  await manager.done();
  await manager.done(); // once only
  assert.deepEqual(seen, [
    "slow load",
    "slow configure ",
    "fast load",
    "fast running",
    "slow start",
    "slow end",
    "fast",
    "slow done",
    "fast done",
  ]);
});

Deno.test("manager: a throwing or rejecting hook gets one log line; the next addon and the flow go on", async () => {
  const { manager, lines } = quietManager();
  const after: string[] = [];
  manager.add([
    {
      name: "thrower",
      request: () => {
        throw new TypeError("sync boom");
      },
    },
    { name: "rejecter", request: () => Promise.reject(new Error("async boom")) },
    {
      name: "tagger",
      request(f) {
        after.push("tagger ran");
        f.request.headers.set("x-tag", "1");
      },
    },
  ]);
  const verdict = await manager.http("request", httpFlow("/x"));
  assert.deepEqual(after, ["tagger ran"]);
  assert.deepEqual(verdict?.request?.headers, [["Host", "127.0.0.1"], ["x-tag", "1"]]);
  assert.equal(manager.errors, 2);
  assert.equal(lines.length, 2);
  assert.match(
    lines[0]!,
    /^error addon thrower: request on http:\/\/127\.0\.0\.1\/x failed: TypeError: sync boom/,
  );
  assert.match(lines[1]!, /^error addon rejecter: request on .* failed: Error: async boom/);
  assert.ok(!lines[0]!.includes("\n"), "one line, the stack joined");
});

Deno.test("manager: an answer or a kill skips the later addons; marks are carried", async () => {
  const { manager } = quietManager();
  let later = 0;
  manager.add([
    defineAddon({
      request(f) {
        f.marked = ":default:";
        if (f.request.path === "/kill") f.kill();
        else f.respond(404, { "x-a": "1" }, "nope");
      },
    }),
    { request: () => void later++ },
  ]);
  const answered = await manager.http("request", httpFlow("/answer"));
  assert.equal(answered?.respond?.status, 404);
  assert.equal(answered?.respond?.reason, "Not Found");
  assert.deepEqual(answered?.respond?.headers, [["x-a", "1"], ["content-length", "4"]]);
  assert.equal(answered?.marked, ":default:");
  const killed = await manager.http("request", httpFlow("/kill"));
  assert.equal(killed?.kill, true);
  assert.equal(later, 0);
});

Deno.test("manager: options typed from --set strings; bad values, unknown names and clashes refused", () => {
  const { manager } = quietManager();
  const addon = defineAddon({
    name: "opts",
    options: {
      count: { type: "number", default: 1, help: "n" },
      on: { type: "boolean", default: false, help: "b" },
      names: { type: "string[]", default: ["a"], help: "l" },
      label: { type: "string", default: "x", help: "s" },
    },
  });
  manager.set(["count=42", "on=yes", "names=b", "names=c", "label=hello=world"]);
  manager.add([addon]);
  manager.checkOptions();
  assert.equal(manager.option("count"), 42);
  assert.equal(manager.option("on"), true);
  assert.deepEqual(manager.option("names"), ["b", "c"]);
  assert.equal(manager.option("label"), "hello=world");
  assert.deepEqual(manager.describeOptions().map((o) => [o.name, o.type, o.owner]), [
    ["count", "number", "opts"],
    ["on", "boolean", "opts"],
    ["names", "string[]", "opts"],
    ["label", "string", "opts"],
  ]);
  // Given after the declaration: applied at once.
  assert.deepEqual(manager.set(["count=7"]), ["count"]);
  assert.equal(manager.option("count"), 7);
  assert.throws(() => manager.set(["count=seven"]), /option count wants a number, got "seven"/);
  assert.throws(() => manager.set(["on=maybe"]), /option on wants true or false/);
  assert.throws(() => manager.set(["novalue"]), /--set wants name=value/);
  manager.set(["typo=1"]);
  assert.throws(() => manager.checkOptions(), (e: Error) => {
    assert.ok(e instanceof AddonError);
    assert.match(e.message, /^unknown option typo \(known: count, on, names, label\)$/);
    return true;
  });
  assert.throws(
    () => manager.add([{ name: "other", options: { count: { type: "number", default: 0, help: "" } } }]),
    /option count of other is already declared by opts/,
  );
  assert.throws(
    () =>
      new AddonManager().add([{
        options: { n: { type: "number", default: "1" as unknown as number, help: "" } },
      }]),
    /default "1" is not a number/,
  );
  assert.equal(parseOption("x", { type: "string[]", default: [], help: "" }, [""]).toString(), "");
});

Deno.test("manager: configure() tells every addon which options changed", async () => {
  const { manager } = quietManager();
  const told: string[][] = [];
  manager.add([{
    options: { level: { type: "number", default: 1, help: "" } },
    configure: (changed, ctx) => void told.push([...changed, String(ctx.options.level)]),
  }]);
  await manager.start();
  await manager.configure(["level=3"]);
  await manager.configure([]);
  assert.deepEqual(told, [["level", "1"], ["level", "3"]]);
});

Deno.test("manager: reload replaces a file's addons in place; a broken version keeps the old one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-manager-" });
  const file = `${dir}/a.ts`;
  const version = (v: string) =>
    `export default { name: "a", options: { tag: { type: "string", default: "d", help: "" } },
       done() { (globalThis as any).__doneCount = ((globalThis as any).__doneCount ?? 0) + 1; },
       request(f, ctx) { f.request.headers.set("x-v", "${v}-" + ctx.options.tag); } };`;
  try {
    await Deno.writeTextFile(file, version("v1"));
    const { manager, lines } = quietManager();
    manager.add([{ name: "first", request: (f) => f.request.headers.set("x-first", "1") }]);
    await manager.addFile(file);
    manager.add([{ name: "last" }]);
    manager.set(["tag=t"]);
    await manager.start();
    const header = async () =>
      (await manager.http("request", httpFlow()))?.request?.headers.find(([n]) => n === "x-v")?.[1];
    assert.equal(await header(), "v1-t");

    await Deno.writeTextFile(file, version("v2"));
    assert.equal(await manager.reload(`${dir}/a.ts`), true);
    assert.equal(await header(), "v2-t", "the new version, with the value set before");
    assert.deepEqual(manager.addons.map((a) => a.name), ["first", "a", "last"], "in the same place");
    assert.equal((globalThis as Record<string, unknown>).__doneCount, 1, "the old version's done ran");

    await Deno.writeTextFile(file, "export default { request( {");
    assert.equal(await manager.reload(file), false);
    assert.equal(await header(), "v2-t", "the old version stays");
    const errors = lines.filter((l) => l.startsWith("error"));
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /cannot load addon .*a\.ts: .*; the previous version stays loaded/);

    await Deno.writeTextFile(file, "export const nothing = 1;");
    assert.equal(await manager.reload(file), false);
    assert.match(lines.at(-1)!, /exports no addon/);
    await manager.done();
    assert.equal(await manager.reload(file), false, "no reload after done");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "manager through the proxy: a hook that never resolves holds the flow; the client leaving ends it; done runs at close",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-manager-hang-" });
    let origins = 0;
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
      origins++;
      return new Response("hi");
    });
    let done = 0;
    let asked = 0;
    const proxy = await startProxy({
      modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
      confdir: `${dir}/conf`,
      allowLocalDestinations: true,
      addons: [{
        name: "hang",
        request: () => {
          asked++;
          return new Promise<void>(() => {});
        },
        done: () => void done++,
      }],
    });
    const ended: HttpFlow[] = [];
    (async () => {
      for await (const f of proxy.flows) if (f.type === "http" && f.timestampEnd !== undefined) ended.push(f);
    })();
    try {
      const target = `127.0.0.1:${origin.addr.port}`;
      const socket = net.connect(proxy.addresses[0]!.addr.port, "127.0.0.1");
      socket.on("error", () => {});
      let answered = false;
      socket.on("data", () => (answered = true));
      await new Promise<void>((r) => socket.once("connect", () => r()));
      socket.write(`GET http://${target}/held HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
      for (let i = 0; i < 100 && asked === 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(asked, 1);
      // Held: nothing comes back and the origin is not asked.
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(answered, false);
      assert.equal(origins, 0);
      // The client goes away (a reset: a FIN alone may be a half-close that still wants the answer).
      socket.resetAndDestroy();
      for (let i = 0; i < 100 && ended.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(ended.length, 1, "the flow ends when the client goes");
      assert.match(ended[0]!.error?.message ?? "", /client/);
    } finally {
      await proxy.close();
      await origin.shutdown();
    }
    assert.equal(done, 1, "done ran at close though a hook never resolved");
  },
});

Deno.test("flow handle: text and json() undo gzip, deflate and br; setting text drops Content-Encoding", async () => {
  const { gzipSync, deflateSync, brotliCompressSync } = await import("node:zlib");
  const { manager } = quietManager();
  const seen: unknown[] = [];
  manager.add([{
    response(f) {
      seen.push(f.response!.json());
      if (f.request.path === "/set") f.response!.text = "plain now";
    },
  }]);
  const json = new TextEncoder().encode(JSON.stringify({ hello: "wörld" }));
  for (
    const [coding, bytes] of [
      ["gzip", gzipSync(json)],
      ["deflate", deflateSync(json)],
      ["br", brotliCompressSync(json)],
      ["gzip, br", brotliCompressSync(gzipSync(json))],
    ] as const
  ) {
    const flow = httpFlow("/get");
    const body = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    flow.response = {
      status: 200,
      reason: "OK",
      httpVersion: "HTTP/1.1",
      headers: [["Content-Encoding", coding]],
      body: { content: body, size: body.byteLength, truncated: false },
      timestampStart: 0,
      timestampEnd: 0,
    };
    assert.equal(await manager.http("response", flow), undefined, "reading changes nothing");
    assert.deepEqual(seen.pop(), { hello: "wörld" }, coding);
  }
  const flow = httpFlow("/set");
  const gz = gzipSync(json);
  flow.response = {
    status: 200,
    reason: "OK",
    httpVersion: "HTTP/1.1",
    headers: [["content-type", "application/json"], ["Content-Encoding", "gzip"]],
    body: { content: new Uint8Array(gz), size: gz.byteLength, truncated: false },
    timestampStart: 0,
    timestampEnd: 0,
  };
  const v = await manager.http("response", flow);
  assert.deepEqual(v?.response?.headers, [["content-type", "application/json"]]);
  assert.equal(new TextDecoder().decode(v?.response?.body), "plain now");
});
