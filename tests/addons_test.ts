/**
 * Addons through the proxy (library, explicit mode, curl over HTTP/1.1 to a loopback origin):
 * hook order, a request header the origin sees, a response body rewritten (Content-Length
 * right), a local answer (origin not contacted), a kill, a hook that throws (one log line, the
 * flow goes on), and `done` at close.
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";
import { defineAddon } from "../src/addons/types.ts";
import http2 from "node:http2";
import https from "node:https";
import type { HttpFlow } from "../src/flows/flow.ts";

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

/** A self-signed certificate for 127.0.0.1 (the h2 origin's), in `dir`. */
async function originCert(dir: string): Promise<{ key: string; cert: string; certFile: string }> {
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
  return {
    key: await Deno.readTextFile(`${dir}/key.pem`),
    cert: await Deno.readTextFile(`${dir}/cert.pem`),
    certFile: `${dir}/cert.pem`,
  };
}

Deno.test({
  name:
    "addons over HTTP/2 (curl --http2, h2 origin): request header, response body, local answer, kill one stream",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-addons-h2-" });
    const { key, cert, certFile } = await originCert(dir);
    const seen: { path: string; tag: string | undefined; version: string }[] = [];
    const origin = http2.createSecureServer({ key, cert });
    origin.on("stream", (stream, headers) => {
      stream.on("error", () => {});
      const path = String(headers[":path"]);
      seen.push({ path, tag: headers["x-tag"] as string | undefined, version: "2" });
      const answer = () => {
        stream.respond({ ":status": 200, "content-type": "text/plain" });
        stream.end(`hello from ${path}`);
      };
      if (path === "/slow") setTimeout(answer, 400);
      else answer();
    });
    await new Promise<void>((r) => origin.listen(0, "127.0.0.1", () => r()));
    const originPort = (origin.address() as { port: number }).port;
    // An HTTP/1.1-only origin: h2 streams from curl are translated (Http2ToHttp1Layer).
    const h1Origin = https.createServer({ key, cert }, (req, res) => {
      const path = req.url ?? "";
      seen.push({ path, tag: req.headers["x-tag"] as string | undefined, version: req.httpVersion });
      const answer = () => {
        res.setHeader("content-type", "text/plain");
        res.end(`hello from ${path}`);
      };
      if (path === "/slow") setTimeout(answer, 400);
      else answer();
    });
    await new Promise<void>((r) => h1Origin.listen(0, "127.0.0.1", () => r()));
    const h1Port = (h1Origin.address() as { port: number }).port;

    const addon = defineAddon({
      name: "h2-tagger",
      request(f) {
        if (f.request.path === "/local") {
          f.respond(418, { "Content-Type": "text/plain" }, "made locally over h2");
        } else if (f.request.path === "/kill") f.kill();
        else f.request.headers.set("X-Tag", "green");
      },
      response(f) {
        if (f.request.path === "/rewrite") {
          f.response!.text = f.response!.text!.replace("hello", "HELLO, rewritten");
        }
        f.response!.headers.set("X-Seen-By", f.request.headers.get("x-tag") ?? "?");
      },
    });
    const proxy = await startProxy({
      modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
      confdir: `${dir}/conf`,
      dnsServers: [],
      upstreamCa: [certFile],
      allowLocalDestinations: true,
      addons: [addon],
    });
    const flows: HttpFlow[] = [];
    (async () => {
      for await (const f of proxy.flows) if (f.type === "http") flows.push(f);
    })();
    const via = ["-x", `http://127.0.0.1:${proxy.addresses[0]!.addr.port}`, "--cacert", proxy.ca.paths.cert];
    const base = `https://127.0.0.1:${originPort}`;
    const h2curl = async (args: string[]) => {
      const o = await new Deno.Command("curl", {
        args: ["-sS", "--http2", "--max-time", "10", ...via, ...args],
      }).output();
      return {
        code: o.code,
        out: new TextDecoder().decode(o.stdout),
        err: new TextDecoder().decode(o.stderr),
      };
    };
    try {
      const plain = await h2curl(["-D", "-", `${base}/plain`]);
      assert.equal(plain.code, 0, plain.err);
      assert.match(plain.out, /HTTP\/2 200/);
      assert.match(plain.out, /x-seen-by: green\r\n/);
      assert.match(plain.out, /hello from \/plain$/);
      assert.deepEqual(seen.at(-1), { path: "/plain", tag: "green", version: "2" });

      const rewritten = await h2curl(["-D", "-", `${base}/rewrite`]);
      assert.equal(rewritten.code, 0, rewritten.err);
      const body = "HELLO, rewritten from /rewrite";
      assert.match(rewritten.out, new RegExp(`content-length: ${body.length}\\r\\n`));
      assert.ok(rewritten.out.endsWith(`\r\n\r\n${body}`), rewritten.out);

      const before = seen.length;
      const local = await h2curl(["-D", "-", `${base}/local`]);
      assert.equal(local.code, 0, local.err);
      assert.match(local.out, /HTTP\/2 418/);
      assert.match(local.out, /content-type: text\/plain\r\n/);
      assert.match(local.out, /made locally over h2$/);
      assert.equal(seen.length, before, "the origin is not contacted for a local answer");

      // Two streams on one connection: /kill is reset (RST_STREAM), /slow completes.
      const both = await h2curl([
        "-Z",
        "-o",
        `${dir}/slow.txt`,
        `${base}/slow`,
        "-o",
        `${dir}/kill.txt`,
        `${base}/kill`,
      ]);
      assert.notEqual(both.code, 0, "the killed transfer fails");
      assert.match(both.err, /stream|HTTP\/2|RST|reset|CANCEL/i, both.err);
      assert.equal(await Deno.readTextFile(`${dir}/slow.txt`), "hello from /slow");
      for (
        let i = 0;
        i < 100 && flows.filter((f) => /\/(slow|kill)$/.test(f.request.path) && f.timestampEnd).length < 2;
        i++
      ) {
        await new Promise((r) => setTimeout(r, 20));
      }
      const slow = flows.find((f) => f.request.path === "/slow")!;
      const killed = flows.find((f) => f.request.path === "/kill")!;
      assert.equal(slow.response?.status, 200);
      assert.equal(slow.error, undefined);
      assert.match(killed.error?.message ?? "", /killed/);
      assert.equal(killed.client.address.port, slow.client.address.port, "one client connection");
      assert.notEqual(killed.streamId, slow.streamId);
      assert.ok(!seen.some((s) => s.path === "/kill"), "the origin never saw the killed request");
      assert.equal(flows.find((f) => f.request.path === "/plain")?.request.httpVersion, "HTTP/2.0");

      // The same through an HTTP/1.1-only origin: the client still speaks h2 (no downgrade).
      const h1 = `https://127.0.0.1:${h1Port}`;
      const t1 = await h2curl(["-D", "-", "-w", "\n%{http_version}", `${h1}/plain`]);
      assert.equal(t1.code, 0, t1.err);
      assert.match(t1.out, /^HTTP\/1\.1 200 Connection established\r\n\r\nHTTP\/2 200/);
      assert.match(t1.out, /x-seen-by: green\r\n/);
      assert.deepEqual(seen.at(-1), { path: "/plain", tag: "green", version: "1.1" });
      const t2 = await h2curl(["-D", "-", `${h1}/rewrite`]);
      assert.match(t2.out, new RegExp(`content-length: ${body.length}\\r\\n`));
      assert.ok(t2.out.endsWith(`\r\n\r\n${body}`), t2.out);
      const seenBefore = seen.length;
      const t3 = await h2curl([`${h1}/local`]);
      assert.equal(t3.out, "made locally over h2");
      assert.equal(seen.length, seenBefore);
      const t4 = await h2curl([
        "-Z",
        "-o",
        `${dir}/slow1.txt`,
        `${h1}/slow`,
        "-o",
        `${dir}/kill1.txt`,
        `${h1}/kill`,
      ]);
      assert.notEqual(t4.code, 0);
      assert.equal(await Deno.readTextFile(`${dir}/slow1.txt`), "hello from /slow");
      assert.equal(seen.filter((s) => s.path === "/kill").length, 0);
    } finally {
      await proxy.close();
      await new Promise((r) => origin.close(r));
      await new Promise((r) => h1Origin.close(r));
    }
  },
});
