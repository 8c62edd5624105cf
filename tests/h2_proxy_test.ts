/**
 * HTTP/2 through the explicit proxy on loopback: curl (h2 and prior-knowledge h2c in a CONNECT
 * tunnel) against node:http2 origins. Both sides speak h2 and every stream is one flow.
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import https from "node:https";
import { createHash } from "node:crypto";
import { startProxy } from "../src/proxy/proxy.ts";
import { Http2Connection } from "../src/proxy/http2/connection.ts";
import { ErrorCode } from "../src/proxy/http2/frames.ts";
import type { Flow, HttpFlow } from "../src/flows/flow.ts";

const decoder = new TextDecoder();

async function curl(args: string[], maxTime = 20): Promise<{ code: number; out: string; err: string }> {
  const o = await new Deno.Command("curl", { args: ["-sS", "--max-time", String(maxTime), ...args] })
    .output();
  return { code: o.code, out: decoder.decode(o.stdout), err: decoder.decode(o.stderr) };
}

async function waitFlows(flows: Flow[], match: (f: HttpFlow) => boolean, count = 1): Promise<HttpFlow[]> {
  for (let i = 0; i < 200; i++) {
    const found = flows.filter((f): f is HttpFlow => f.type === "http" && match(f));
    if (found.length >= count) return found;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`expected ${count} flows`);
}

/** Deterministic bytes: byte i of a body is (i * 31 + 7) mod 251. */
function pattern(offset: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = ((offset + i) * 31 + 7) % 251;
  return out;
}

function sha256Of(size: number): string {
  const h = createHash("sha256");
  for (let o = 0; o < size; o += 1 << 20) h.update(pattern(o, Math.min(1 << 20, size - o)));
  return h.digest("hex");
}

/** The origins' handler: /hello, /item/N, /big/N (N pattern bytes). */
function onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
  stream.on("error", () => {});
  const path = String(headers[":path"]);
  if (path === "/hello") {
    stream.respond({ ":status": 200, "content-type": "text/plain", "x-first": "1", "x-second": "2" });
    stream.end(`hello h2 ${headers[":scheme"]}`);
  } else if (path.startsWith("/item/")) {
    stream.respond({ ":status": 200 });
    stream.end(`item ${path.slice(6)}`);
  } else if (path === "/sha256") {
    const hash = createHash("sha256");
    let size = 0;
    stream.on("data", (chunk: Uint8Array) => {
      hash.update(chunk);
      size += chunk.byteLength;
    });
    stream.on("end", () => {
      stream.respond({ ":status": 200 });
      stream.end(`${size} ${hash.digest("hex")}`);
    });
  } else if (path.startsWith("/big/")) {
    const size = Number(path.slice(5));
    stream.respond({ ":status": 200, "content-length": String(size) });
    let o = 0;
    const more = () => {
      while (o < size) {
        const chunk = pattern(o, Math.min(65536, size - o));
        o += chunk.byteLength;
        if (!stream.write(chunk)) return void stream.once("drain", more);
      }
      stream.end();
    };
    more();
  } else {
    stream.respond({ ":status": 404 });
    stream.end();
  }
}

/**
 * An origin driven by the project's own codec (over TLS with ALPN h2, or h2c): `answer` is called
 * for each request once it has ended and writes through `flush`. Used where Deno's node:http2
 * will not do: it ends a stream cleanly on `close(code)` instead of resetting it, and h2spec's
 * traffic passed on to it tripped an assertion inside its nghttp2 that aborted the process.
 */
function codecOrigin(
  tlsFiles: { key: string; cert: string } | null,
  answer: (h2: Http2Connection, streamId: number, flush: () => void) => void,
): { port: number; close(): void } {
  const listener = tlsFiles
    ? Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...tlsFiles, alpnProtocols: ["h2"] })
    : Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serve = async (conn: Deno.Conn) => {
    const h2 = new Http2Connection("server", { autoConsume: true });
    let writing = Promise.resolve();
    const flush = () => {
      const out = h2.output();
      if (out.byteLength === 0) return;
      writing = writing.then(async () => {
        for (let o = 0; o < out.byteLength;) o += await conn.write(out.subarray(o));
      }).catch(() => {});
    };
    const buf = new Uint8Array(65536);
    try {
      flush();
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        for (const ev of h2.receive(buf.slice(0, n), Date.now())) {
          const ended = (ev.type === "headers" || ev.type === "data") && ev.endStream;
          if (ended) answer(h2, ev.streamId, flush);
        }
        flush();
        if (h2.failed) break;
      }
    } catch { /* the proxy went away */ }
    await writing;
    conn.close();
  };
  (async () => {
    for await (const conn of listener) void serve(conn);
  })().catch(() => {});
  return { port: listener.addr.port, close: () => listener.close() };
}

/** Answers with 30,000 bytes and then RST_STREAM INTERNAL_ERROR. */
function answerThenReset(h2: Http2Connection, id: number, flush: () => void): void {
  h2.sendHeaders(id, [[":status", "200"]], false);
  h2.sendData(id, pattern(0, 30_000));
  flush();
  setTimeout(() => {
    h2.reset(id, ErrorCode.INTERNAL_ERROR);
    flush();
  }, 50);
}

/**
 * h2spec's requests: 404 with a body (h2spec skips its flow-control cases without DATA to
 * receive), 20 ms after the request ended. Its cases send more on a stream after HEADERS and open
 * 101 streams expecting the last one refused; an origin that answered at once could close
 * streams before the proxy had read the rest, a race of the test and not a fault.
 */
function answerLater(h2: Http2Connection, id: number, flush: () => void): void {
  setTimeout(() => {
    if (h2.sendHeaders(id, [[":status", "404"], ["content-type", "text/plain"]], false)) {
      h2.sendData(id, new TextEncoder().encode("not found\n"), true);
    }
    flush();
  }, 20);
}

/**
 * A local port that forwards each connection through the explicit proxy with CONNECT to
 * `target`: tools without proxy support (h2spec) reach the proxy's interception this way.
 */
function connectShim(proxyPort: number, target: string): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const pipe = async (from: Deno.Conn, to: Deno.Conn) => {
    try {
      await from.readable.pipeTo(to.writable);
    } catch { /* either side went away */ }
    try {
      to.close();
    } catch { /* closed */ }
  };
  const serve = async (conn: Deno.Conn) => {
    try {
      const up = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
      await up.write(new TextEncoder().encode(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`));
      // Read the proxy's answer up to the end of its head (it sends nothing more before us).
      let head = "";
      const buf = new Uint8Array(1);
      while (!head.endsWith("\r\n\r\n") && head.length < 4096) {
        const n = await up.read(buf);
        if (n === null) throw new Error("proxy closed");
        head += String.fromCharCode(buf[0]!);
      }
      if (!head.startsWith("HTTP/1.1 200")) throw new Error(head);
      void pipe(conn, up);
      void pipe(up, conn);
    } catch {
      conn.close();
    }
  };
  (async () => {
    for await (const conn of listener) void serve(conn);
  })().catch(() => {});
  return { port: listener.addr.port, close: () => listener.close() };
}

async function h2specPath(): Promise<string> {
  const out = await new Deno.Command("go", { args: ["env", "GOPATH"], stdout: "piped", stderr: "null" })
    .output()
    .catch(() => null);
  const gopath = out?.success ? decoder.decode(out.stdout).trim() : `${Deno.env.get("HOME")}/go`;
  return `${gopath}/bin/h2spec`;
}

/** Runs h2spec --strict against 127.0.0.1:`port` and returns its summary. */
async function h2spec(
  port: number,
  tls: boolean,
): Promise<{ summary: string; failed: string; text: string }> {
  const out = await new Deno.Command(await h2specPath(), {
    args: [...(tls ? ["-t", "-k"] : []), "-h", "127.0.0.1", "-p", String(port), "--strict", "--timeout", "5"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = decoder.decode(out.stdout);
  const m = text.match(/(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed/);
  return { summary: m?.[0] ?? "", failed: m?.[4] ?? "?", text };
}

function listen(server: { listen(port: number, host: string, cb: () => void): unknown; address(): unknown }) {
  return new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))
  );
}

Deno.test({
  name: "HTTP/2 through the explicit proxy: h2 both sides, streams as flows, h2c in a tunnel",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-h2-" });
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
    const key = await Deno.readTextFile(`${dir}/key.pem`);
    const cert = await Deno.readTextFile(`${dir}/cert.pem`);
    const h2Origin = http2.createSecureServer({ key, cert });
    h2Origin.on("stream", onStream);
    const h2cOrigin = http2.createServer();
    h2cOrigin.on("stream", onStream);
    // An origin that speaks only HTTP/1.1 over TLS.
    const h1Origin = https.createServer({ key, cert }, (_req, res) => res.end("hello h1"));
    const h2Port = await listen(h2Origin);
    const h2cPort = await listen(h2cOrigin);
    const h1Port = await listen(h1Origin);
    // An origin that speaks both.
    const bothOrigin = http2.createSecureServer(
      { key, cert, allowHTTP1: true },
      (req, res) => res.end(`hello ${req.httpVersion}`),
    );
    const bothPort = await listen(bothOrigin);
    const resetter = codecOrigin({ key, cert }, answerThenReset);
    const h2specTls = codecOrigin({ key, cert }, answerLater);
    const h2specClear = codecOrigin(null, answerLater);

    const logs: string[] = [];
    const proxy = await startProxy({
      modes: [{ kind: "regular", port: 0 }],
      confdir: `${dir}/conf`,
      dnsServers: [],
      upstreamCa: [`${dir}/cert.pem`],
      // The origins of this test listen on loopback.
      allowLocalDestinations: true,
      onLog: (e) => logs.push(`${e.level} ${e.message}`),
    });
    const flows: Flow[] = [];
    (async () => {
      for await (const f of proxy.flows) flows.push(f);
    })();
    const via = ["-x", `http://127.0.0.1:${proxy.addresses[0]!.addr.port}`, "--cacert", proxy.ca.paths.cert];
    const origin = `https://127.0.0.1:${h2Port}`;
    try {
      await t.step("curl --http2: h2 on both sides, one HTTP/2.0 flow", async () => {
        const r = await curl([...via, "--http2", "-D", "-", "-w", "\n%{http_version}", `${origin}/hello`]);
        assert.equal(r.code, 0, r.err);
        assert.match(r.out, /^HTTP\/1\.1 200 Connection established\r\n\r\nHTTP\/2 200 \r\n/);
        assert.match(r.out, /x-first: 1\r\nx-second: 2\r\n/);
        assert.match(r.out, /hello h2 https\n2$/);
        const [f] = await waitFlows(flows, (f) => f.request.path === "/hello");
        assert.equal(f!.request.httpVersion, "HTTP/2.0");
        assert.equal(f!.response?.httpVersion, "HTTP/2.0");
        assert.equal(f!.streamId, 1);
        assert.equal(f!.tls?.alpn, "h2");
        assert.equal(decoder.decode(f!.response!.body.content), "hello h2 https");
        assert.equal(f!.error, undefined);
      });

      await t.step("100 concurrent streams on one connection", async () => {
        const r = await curl([
          ...via,
          "--http2",
          "-Z",
          "--parallel-max",
          "100",
          "-w",
          "%{http_version} %{response_code} %{num_connects}\n",
          "-o",
          "/dev/null",
          `${origin}/item/[1-100]`,
        ]);
        assert.equal(r.code, 0, r.err);
        const lines = r.out.trim().split("\n");
        assert.equal(lines.length, 100);
        assert.ok(lines.every((l) => l.startsWith("2 200")), r.out);
        const got = await waitFlows(flows, (f) => f.request.path.startsWith("/item/"), 100);
        assert.ok(got.every((f) => f.response?.status === 200 && f.error === undefined));
        // Stream ids of one connection: 1, 3, 5, ... (a connection per request would be all 1s).
        const ids = new Set(got.map((f) => f.streamId));
        assert.ok(ids.size >= 90, `stream ids: ${[...ids].join(",")}`);
      });

      await t.step("a 64 MiB download arrives intact", async () => {
        const size = 64 * 1024 * 1024;
        const file = `${dir}/big`;
        const r = await curl([...via, "--http2", "-o", file, `${origin}/big/${size}`], 60);
        assert.equal(r.code, 0, r.err);
        const got = createHash("sha256").update(await Deno.readFile(file)).digest("hex");
        assert.equal(got, sha256Of(size));
        const [f] = await waitFlows(
          flows,
          (f) => f.request.path === `/big/${size}` && f.timestampEnd !== undefined,
        );
        assert.equal(f!.response!.body.size, size);
        assert.ok(f!.response!.body.content.byteLength <= 1024 * 1024, "recording bounded");
        await Deno.remove(file);
      });

      await t.step("a 32 MiB upload arrives intact", async () => {
        const size = 32 * 1024 * 1024;
        const file = `${dir}/up`;
        const hash = createHash("sha256");
        const f = await Deno.open(file, { write: true, create: true });
        for (let o = 0; o < size; o += 1 << 20) {
          const chunk = pattern(o, 1 << 20);
          hash.update(chunk);
          await f.write(chunk);
        }
        f.close();
        const r = await curl([...via, "--http2", "--data-binary", `@${file}`, `${origin}/sha256`], 60);
        assert.equal(r.code, 0, r.err);
        assert.equal(r.out, `${size} ${hash.digest("hex")}`);
        const [flow] = await waitFlows(
          flows,
          (f) => f.request.path === "/sha256" && f.timestampEnd !== undefined,
        );
        assert.equal(flow!.request.body.size, size);
        assert.equal(flow!.request.httpVersion, "HTTP/2.0");
        await Deno.remove(file);
      });

      await t.step("an upstream reset mid-body reaches curl; the flow records it", async () => {
        const r = await curl([
          ...via,
          "--http2",
          "-o",
          "/dev/null",
          `https://127.0.0.1:${resetter.port}/reset`,
        ]);
        assert.notEqual(r.code, 0);
        assert.match(r.err, /INTERNAL_ERROR|stream 1 was not closed cleanly|HTTP\/2 stream/i);
        const [f] = await waitFlows(
          flows,
          (f) => f.request.path === "/reset" && f.timestampEnd !== undefined,
        );
        assert.match(f!.error!.message, /server reset the stream \(INTERNAL_ERROR\)/);
        assert.equal(f!.response!.body.size, 30_000);
      });

      await t.step("h2c with prior knowledge inside a CONNECT tunnel", async () => {
        const r = await curl([...via, "-p", "--http2-prior-knowledge", `http://127.0.0.1:${h2cPort}/hello`]);
        assert.equal(r.code, 0, r.err);
        assert.equal(r.out, "hello h2 http");
        const [f] = await waitFlows(flows, (f) => f.request.scheme === "http" && f.request.path === "/hello");
        assert.equal(f!.request.httpVersion, "HTTP/2.0");
        assert.equal(f!.response?.status, 200);
      });

      await t.step("h2spec --strict against the proxy's client-facing h2 side (TLS and h2c)", async () => {
        for (
          const [target, tls] of [[`127.0.0.1:${h2specTls.port}`, true], [
            `127.0.0.1:${h2specClear.port}`,
            false,
          ]] as const
        ) {
          const shim = connectShim(proxy.addresses[0]!.addr.port, target);
          try {
            const r = await h2spec(shim.port, tls);
            assert.ok(r.summary, r.text.slice(-2000));
            assert.equal(r.failed, "0", r.text.slice(r.text.indexOf("Failures:")));
            // All pass, none skipped (the flow-control cases need a response with a body).
            assert.match(r.summary, /^(\d+) tests, \1 passed, 0 skipped, 0 failed$/);
            assert.ok(Number(r.summary.split(" ")[0]) >= 146, r.summary);
          } finally {
            shim.close();
          }
        }
      });

      await t.step(
        "an upstream that agrees only http/1.1: the h2 client keeps h2, its streams are translated",
        async () => {
          const r = await curl([...via, "--http2", "-w", " %{http_version}", `https://127.0.0.1:${h1Port}/`]);
          assert.equal(r.code, 0, r.err);
          assert.equal(r.out, "hello h1 2");
          const [f] = await waitFlows(flows, (f) => f.request.port === h1Port);
          assert.equal(f!.request.httpVersion, "HTTP/2.0");
          assert.equal(f!.response?.httpVersion, "HTTP/1.1");
        },
      );

      await t.step("a client offering only http/1.1 stays on http/1.1 with an h2 upstream", async () => {
        const r = await curl([
          ...via,
          "--http1.1",
          "-w",
          " %{http_version}",
          `https://127.0.0.1:${bothPort}/`,
        ]);
        assert.equal(r.code, 0, r.err);
        assert.equal(r.out, "hello 1.1 1.1");
        const h2 = await curl([
          ...via,
          "--http2",
          "-w",
          " %{http_version}",
          `https://127.0.0.1:${bothPort}/`,
        ]);
        assert.equal(h2.out, "hello 2.0 2");
      });
    } finally {
      await proxy.close(100);
      h2Origin.close();
      h2cOrigin.close();
      h1Origin.close();
      bothOrigin.close();
      resetter.close();
      h2specTls.close();
      h2specClear.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
