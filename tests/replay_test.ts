/**
 * Server and client replay through the library, explicit-proxy mode on loopback, curl as the
 * client: a run is recorded into a flow store; server replay then answers the same requests
 * from it with the origin gone; client replay sends the recorded requests again and the origin
 * sees the same method, path, headers and body.
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";
import { SqliteFlowStore } from "../src/flows/store.ts";
import { ServerReplay } from "../src/flows/server_replay.ts";
import type { HttpFlow } from "../src/flows/flow.ts";

interface Seen {
  method: string;
  path: string;
  headers: [string, string][];
  body: string;
}

function origin(seen: Seen[], port = 0): Deno.HttpServer<Deno.NetAddr> {
  let n = 0;
  return Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    const body = await req.text();
    seen.push({ method: req.method, path: url.pathname + url.search, headers: [...req.headers], body });
    n++;
    return new Response(`answer ${n} to ${req.method} ${url.pathname}${body ? " " + body : ""}`, {
      status: req.method === "POST" ? 201 : 200,
      headers: { "x-origin": "yes" },
    });
  });
}

async function curl(proxyPort: number, args: string[]): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "10", "-x", `http://127.0.0.1:${proxyPort}`, ...args],
  }).output();
  return { code: o.code, out: new TextDecoder().decode(o.stdout) };
}

Deno.test({
  name: "replay: record, then server replay answers without the origin, then client replay reaches it again",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-replay-" });
    const seen: Seen[] = [];
    let server = origin(seen);
    const port = server.addr.port;
    const base = `http://127.0.0.1:${port}`;
    const requests = [
      [`${base}/a?x=1`],
      [`${base}/a?x=1`],
      ["-H", "x-test: one", "-d", "k=v", `${base}/post`],
    ];
    const store = SqliteFlowStore.open(`${dir}/run.db`);
    const recorded: string[] = [];
    try {
      // 1. Record.
      const proxy = await startProxy({
        modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
        confdir: `${dir}/conf`,
        allowLocalDestinations: true,
        store,
        onLog: () => {},
      });
      for (const args of requests) {
        const r = await curl(proxy.addresses[0]!.addr.port, args);
        assert.equal(r.code, 0);
        recorded.push(r.out);
      }
      await proxy.close();
      assert.deepEqual(recorded, ["answer 1 to GET /a", "answer 2 to GET /a", "answer 3 to POST /post k=v"]);
      await store.close();
      await server.shutdown();
      const recordedRequests = seen.splice(0);

      // 2. Server replay with the origin gone: the recorded answers, in recorded order.
      const replay = await ServerReplay.load(`${dir}/run.db`, { extra: "404" });
      assert.equal(replay.stats().loaded, 3);
      const replaying = await startProxy({
        modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
        confdir: `${dir}/conf`,
        allowLocalDestinations: true,
        serverReplay: replay,
        onLog: () => {},
      });
      const flows: HttpFlow[] = [];
      replaying.bus.subscribe((e) => {
        if (e.type === "end" && e.flow.type === "http") flows.push(e.flow);
      });
      try {
        const pp = replaying.addresses[0]!.addr.port;
        const answers = [];
        for (const args of requests) {
          const r = await curl(pp, ["-i", ...args]);
          assert.equal(r.code, 0);
          answers.push(r.out);
        }
        for (let i = 0; i < 3; i++) assert.ok(answers[i]!.endsWith(recorded[i]!), answers[i]);
        assert.match(answers[2]!, /^HTTP\/1\.1 201 /);
        assert.match(answers[0]!, /\r\nx-origin: yes\r\n/i);
        // A third GET /a: the recorded answers are used up (miss → 404 here).
        const miss = await curl(pp, ["-i", `${base}/a?x=1`]);
        assert.match(miss.out, /^HTTP\/1\.1 404 /);
        assert.deepEqual(replaying.stats().serverReplay, { loaded: 3, hits: 3, misses: 1, truncated: 0 });
        assert.deepEqual(flows.map((f) => f.replay), ["server", "server", "server", "server"]);
        assert.ok(flows.every((f) => f.server.timestampConnected === undefined));
      } finally {
        await replaying.close();
      }

      // 3. Client replay: the origin (back on its port) sees the same requests again.
      server = origin(seen, port);
      const again = SqliteFlowStore.open(`${dir}/run.db`);
      const replayer = await startProxy({
        modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
        confdir: `${dir}/conf`,
        allowLocalDestinations: true,
        store: again,
        onLog: () => {},
      });
      try {
        const originals = (await again.query({ filter: "~http" })).flows.map((s) => s.flow as HttpFlow);
        originals.sort((a, b) => a.timestampStart - b.timestampStart);
        assert.equal(originals.length, 3);
        const made: HttpFlow[] = [];
        for (const f of originals) made.push(await replayer.replay(f.id));
        const comparable = (s: Seen) => ({
          ...s,
          headers: s.headers.filter(([name]) => name !== "connection"),
        });
        assert.deepEqual(seen.map(comparable), recordedRequests.map(comparable));
        for (let i = 0; i < 3; i++) {
          assert.equal(made[i]!.replay, "client");
          assert.equal(made[i]!.replayOf, originals[i]!.id);
          assert.equal(made[i]!.response?.status, i === 2 ? 201 : 200);
          assert.match(new TextDecoder().decode(made[i]!.response!.body.content), /^answer \d+ to /);
        }
        // A flow object works as well as an id; the new flow reaches the store too.
        const byObject = await replayer.replay(originals[0]!);
        assert.equal(byObject.replayOf, originals[0]!.id);
        await replayer.close();
        assert.equal(await again.count("~http"), 7);
      } finally {
        await replayer.close();
        await again.close();
        await server.shutdown();
      }
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "startProxy({ requestHook }): an async hook answers, kills, or lets a request go on; a failing hook lets it go on",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-hook-" });
    const seen: Seen[] = [];
    const server = origin(seen);
    const logs: string[] = [];
    const proxy = await startProxy({
      modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
      confdir: `${dir}/conf`,
      allowLocalDestinations: true,
      onLog: (e) => logs.push(e.message),
      requestHook: async (flow) => {
        await new Promise((r) => setTimeout(r, 20));
        const path = flow.request.path;
        if (path === "/local") {
          const body = new TextEncoder().encode(
            `local ${new TextDecoder().decode(flow.request.body.content)}`,
          );
          return {
            status: 203,
            reason: "Made Here",
            headers: [["content-length", String(body.byteLength)]],
            body,
          };
        }
        if (path === "/kill") return "kill";
        if (path === "/throw") throw new Error("hook broke");
        return undefined;
      },
    });
    try {
      const pp = proxy.addresses[0]!.addr.port;
      const base = `http://127.0.0.1:${server.addr.port}`;
      const local = await curl(pp, ["-i", "-d", "abc", `${base}/local`]);
      assert.match(local.out, /^HTTP\/1\.1 203 Made Here\r\n/);
      assert.ok(local.out.endsWith("local abc"));
      const killed = await curl(pp, [`${base}/kill`]);
      assert.notEqual(killed.code, 0);
      const thrown = await curl(pp, [`${base}/throw`]);
      assert.equal(thrown.out, "answer 1 to GET /throw");
      const passed = await curl(pp, [`${base}/on`]);
      assert.equal(passed.out, "answer 2 to GET /on");
      assert.deepEqual(seen.map((s) => s.path), ["/throw", "/on"]);
      assert.ok(logs.some((l) => /request hook failed on .*\/throw: hook broke/.test(l)));
    } finally {
      await proxy.close();
      await server.shutdown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "proxy.replay(): an unreachable server or a refused destination gives a flow with the error",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-replay-fail-" });
    // A port nothing listens on (taken, then freed).
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const closedPort = (l.addr as Deno.NetAddr).port;
    l.close();
    const original: HttpFlow = {
      id: "orig-1",
      type: "http",
      client: { address: { hostname: "127.0.0.1", port: 1 }, mode: "regular" },
      server: { address: { hostname: "127.0.0.1", port: closedPort } },
      timestampStart: 0,
      request: {
        method: "GET",
        scheme: "http",
        host: "127.0.0.1",
        port: closedPort,
        path: "/x",
        url: `http://127.0.0.1:${closedPort}/x`,
        httpVersion: "HTTP/1.1",
        headers: [["Host", `127.0.0.1:${closedPort}`]],
        body: { content: new Uint8Array(0), size: 0, truncated: false },
        timestampStart: 0,
      },
    };
    const open = await startProxy({
      modes: [],
      confdir: `${dir}/conf`,
      allowLocalDestinations: true,
      onLog: () => {},
    });
    const guarded = await startProxy({ modes: [], confdir: `${dir}/conf`, onLog: () => {} });
    try {
      const failed = await open.replay(original);
      assert.equal(failed.replayOf, "orig-1");
      assert.equal(failed.response?.status, 502);
      assert.match(failed.error!.message, /cannot connect to 127\.0\.0\.1:\d+/);
      const refused = await guarded.replay(original);
      assert.equal(refused.response?.status, 502);
      assert.match(refused.error!.message, /allow-local-destinations/);
      await assert.rejects(open.replay("no-such-id"), /no flow store/);
    } finally {
      await open.close();
      await guarded.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "replay over HTTP/2 (curl --http2, h2 origin): recorded streams answered from the run, the origin not asked",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { default: http2 } = await import("node:http2");
    const dir = await Deno.makeTempDir({ prefix: "wirescope-replay-h2-" });
    const gen = await new Deno.Command("openssl", {
      args: [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        `${dir}/key.pem`,
        "-out",
        `${dir}/cert.pem`,
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
      ],
      stderr: "null",
    }).output();
    assert.equal(gen.code, 0);
    let asked = 0;
    const h2 = http2.createSecureServer({
      key: await Deno.readTextFile(`${dir}/key.pem`),
      cert: await Deno.readTextFile(`${dir}/cert.pem`),
    });
    h2.on("stream", (stream, headers) => {
      stream.on("error", () => {});
      asked++;
      stream.respond({ ":status": 200, "x-origin": "h2" });
      stream.end(`answer ${asked} to ${headers[":path"]}`);
    });
    await new Promise<void>((r) => h2.listen(0, "127.0.0.1", () => r()));
    const base = `https://127.0.0.1:${(h2.address() as { port: number }).port}`;
    const common = {
      modes: [{ kind: "regular" as const, hostname: "127.0.0.1", port: 0 }],
      confdir: `${dir}/conf`,
      allowLocalDestinations: true,
      upstreamCa: [`${dir}/cert.pem`],
      onLog: () => {},
    };
    const h2curl = async (pp: number, ca: string, args: string[]) => {
      const o = await new Deno.Command("curl", {
        args: [
          "-sS",
          "--http2",
          "--max-time",
          "10",
          "-x",
          `http://127.0.0.1:${pp}`,
          "--cacert",
          ca,
          "-w",
          "\n%{http_version}",
          ...args,
        ],
      }).output();
      return { code: o.code, out: new TextDecoder().decode(o.stdout) };
    };
    const store = SqliteFlowStore.open(`${dir}/run.db`);
    try {
      const recorder = await startProxy({ ...common, store });
      const first = await h2curl(recorder.addresses[0]!.addr.port, recorder.ca.paths.cert, [
        `${base}/one`,
        `${base}/two`,
      ]);
      await recorder.close();
      await store.close();
      assert.equal(first.code, 0);
      assert.equal(first.out, "answer 1 to /one\n2answer 2 to /two\n2");
      assert.equal(asked, 2);

      // Replayed while the origin is up (the proxy's TLS to it comes first): the streams are answered
      // from the run, in HTTP/2, and the origin sees no request.
      const replay = await ServerReplay.load(`${dir}/run.db`, { extra: "404" });
      const replaying = await startProxy({ ...common, serverReplay: replay });
      try {
        const again = await h2curl(replaying.addresses[0]!.addr.port, replaying.ca.paths.cert, [
          "-i",
          `${base}/two`,
          `${base}/one`,
        ]);
        assert.equal(again.code, 0);
        assert.match(again.out, /\r\n\r\nHTTP\/2 200 \r\n/);
        assert.match(again.out, /x-origin: h2\r\n/);
        assert.match(again.out, /answer 2 to \/two\n2HTTP\/2 200 [^]*answer 1 to \/one\n2$/);
        assert.equal(asked, 2, "the origin was not asked");
        assert.deepEqual(replaying.stats().serverReplay, { loaded: 2, hits: 2, misses: 0, truncated: 0 });
      } finally {
        await replaying.close();
      }
    } finally {
      await new Promise((r) => h2.close(r));
      await Deno.remove(dir, { recursive: true });
    }
  },
});
