/**
 * The proxy against bad input, through explicit-proxy mode on loopback (no namespaces needed):
 * every failure gets a clear answer and a recorded flow, and the next request still works.
 */
import assert from "node:assert/strict";
import tls from "node:tls";
import { startProxy } from "../src/proxy/proxy.ts";
import { isPrivateAddress } from "../src/proxy/proxy.ts";
import type { Flow, HttpFlow, TcpFlow } from "../src/flows/flow.ts";
import { sh } from "./rig.ts";

const decoder = new TextDecoder();

async function curl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const o = await new Deno.Command("curl", { args: ["-sS", "--max-time", "10", ...args] }).output();
  return { code: o.code, out: decoder.decode(o.stdout), err: decoder.decode(o.stderr) };
}

/** Sends raw bytes to the proxy and returns what came back until it closed (bounded). */
async function raw(port: number, data: string | Uint8Array): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(typeof data === "string" ? new TextEncoder().encode(data) : data);
  const chunks: string[] = [];
  const buf = new Uint8Array(65536);
  const timer = setTimeout(() => conn.close(), 5000);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(decoder.decode(buf.subarray(0, n)));
    }
  } catch { /* closed by the timer or reset */ }
  clearTimeout(timer);
  try {
    conn.close();
  } catch { /* closed */ }
  return chunks.join("");
}

async function waitFlow<T extends Flow>(flows: Flow[], match: (f: Flow) => boolean): Promise<T> {
  for (let i = 0; i < 100; i++) {
    const f = flows.find(match);
    if (f) return f as T;
    await new Promise((r) => setTimeout(r, 30));
  }
  throw new Error("no such flow");
}

Deno.test({
  name: "startProxy() answers bad input clearly, records it, and keeps serving",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-proxy-test-" });
    // An HTTP origin, a TLS origin with its own CA, and a server that breaks off its response.
    const origin = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (req) => new Response(`ok ${new URL(req.url).pathname}`),
    );
    await sh([
      "openssl",
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      `${dir}/o.key`,
      "-out",
      `${dir}/o.pem`,
      "-days",
      "1",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
    ]);
    const tlsOrigin = tls.createServer({
      key: await Deno.readTextFile(`${dir}/o.key`),
      cert: await Deno.readTextFile(`${dir}/o.pem`),
    }, (s) => {
      s.once("data", () => s.end("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecure"));
      s.on("error", () => {});
    });
    await new Promise<void>((r) => tlsOrigin.listen(0, "127.0.0.1", () => r()));
    const tlsPort = (tlsOrigin.address() as { port: number }).port;
    const cutter = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    (async () => {
      for await (const c of cutter) {
        await c.read(new Uint8Array(4096)).catch(() => null);
        await c.write(new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\npartial"))
          .catch(() => 0);
        c.close();
      }
    })().catch(() => {});

    const proxy = await startProxy({
      modes: [{ kind: "regular", port: 0 }],
      confdir: `${dir}/conf`,
      dnsServers: [],
      // The origins of this test listen on loopback.
      allowLocalDestinations: true,
      onLog: () => {},
    });
    const port = proxy.addresses[0]!.addr.port;
    const flows: Flow[] = [];
    (async () => {
      for await (const f of proxy.flows) flows.push(f);
    })();
    const proxyUrl = `http://127.0.0.1:${port}`;
    const okAfter = async () => {
      const r = await curl(["-x", proxyUrl, `http://127.0.0.1:${origin.addr.port}/still-ok`]);
      assert.equal(r.out, "ok /still-ok");
    };
    try {
      await t.step("a malformed request gets 400 and a flow with the error", async () => {
        const reply = await raw(port, "GET /\x01bad HTTP/1.1\r\n\r\n");
        assert.match(reply, /^HTTP\/1\.1 400 /);
        const f = await waitFlow<HttpFlow>(flows, (f) => f.type === "http" && f.response?.status === 400);
        assert.match(f.error!.message, /malformed request/);
        await okAfter();
      });

      await t.step("an oversized header block gets 431", async () => {
        const reply = await raw(
          port,
          `GET http://127.0.0.1:${origin.addr.port}/ HTTP/1.1\r\nx-big: ${"a".repeat(70_000)}\r\n\r\n`,
        );
        assert.match(reply, /^HTTP\/1\.1 431 /);
        await waitFlow(flows, (f) => f.type === "http" && f.response?.status === 431);
        await okAfter();
      });

      await t.step("conflicting Content-Length and Transfer-Encoding get 400 (no smuggling)", async () => {
        const reply = await raw(
          port,
          `POST http://127.0.0.1:${origin.addr.port}/x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n`,
        );
        assert.match(reply, /^HTTP\/1\.1 400 /);
        await okAfter();
      });

      await t.step("an origin-form request to the proxy itself gets 400 explaining why", async () => {
        const reply = await raw(port, "GET /hello HTTP/1.1\r\nhost: x\r\n\r\n");
        assert.match(reply, /^HTTP\/1\.1 400 [^]*absolute/);
      });

      await t.step("an unreachable upstream gets 502 naming the cause", async () => {
        const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const deadPort = closed.addr.port;
        closed.close();
        const r = await curl(["-x", proxyUrl, `http://127.0.0.1:${deadPort}/`]);
        assert.match(r.out, /cannot connect to 127\.0\.0\.1:\d+: .*refused/i);
        const f = await waitFlow<HttpFlow>(flows, (f) => f.type === "http" && f.response?.status === 502);
        assert.match(f.error!.message, /refused/i);
        await okAfter();
      });

      await t.step("an upstream whose certificate is not trusted gets 502 saying so", async () => {
        const r = await curl([
          "-x",
          proxyUrl,
          "--cacert",
          proxy.ca.paths.cert,
          `https://127.0.0.1:${tlsPort}/`,
        ]);
        assert.match(r.out, /upstream certificate rejected/);
        await okAfter();
      });

      await t.step(
        "extra upstream roots that did not sign the certificate: still a 502 saying why",
        async () => {
          const other = await startProxy({
            modes: [{ kind: "regular", port: 0 }],
            confdir: `${dir}/conf`,
            upstreamCa: [proxy.ca.paths.cert],
            dnsServers: [],
            allowLocalDestinations: true,
            onLog: () => {},
          });
          try {
            const url = `http://127.0.0.1:${other.addresses[0]!.addr.port}`;
            const r = await curl([
              "-x",
              url,
              "--cacert",
              other.ca.paths.cert,
              `https://127.0.0.1:${tlsPort}/`,
            ]);
            assert.match(r.out, /upstream certificate rejected/);
          } finally {
            await other.close(100);
          }
        },
      );

      await t.step(
        "with insecure, the same upstream is accepted; with allowHosts, others pass through",
        async () => {
          const lax = await startProxy({
            modes: [{ kind: "regular", port: 0 }],
            confdir: `${dir}/conf`,
            insecure: true,
            dnsServers: [],
            allowLocalDestinations: true,
            onLog: () => {},
          });
          const only = await startProxy({
            modes: [{ kind: "regular", port: 0 }],
            confdir: `${dir}/conf`,
            allowHosts: ["^intercepted\\.test$"],
            dnsServers: [],
            allowLocalDestinations: true,
            onLog: () => {},
          });
          try {
            const laxUrl = `http://127.0.0.1:${lax.addresses[0]!.addr.port}`;
            const r = await curl([
              "-x",
              laxUrl,
              "--cacert",
              lax.ca.paths.cert,
              `https://127.0.0.1:${tlsPort}/`,
            ]);
            assert.equal(r.out, "secure");
            // 127.0.0.1 is not in allowHosts: relayed untouched, so the origin's own certificate is
            // what curl sees (it trusts only that one here).
            const onlyUrl = `http://127.0.0.1:${only.addresses[0]!.addr.port}`;
            const p = await curl([
              "-x",
              onlyUrl,
              "--cacert",
              `${dir}/o.pem`,
              `https://127.0.0.1:${tlsPort}/`,
            ]);
            assert.equal(p.out, "secure");
          } finally {
            await lax.close(100);
            await only.close(100);
          }
        },
      );

      await t.step("a client that rejects our certificate: handshake error recorded", async () => {
        const r = await curl(["-x", proxyUrl, `https://127.0.0.1:${tlsPort}/`]);
        assert.notEqual(r.code, 0);
        const f = await waitFlow<TcpFlow>(
          flows,
          (f) => f.type === "tcp" && /client TLS handshake failed/.test(f.error?.message ?? ""),
        );
        assert.match(f.error!.message, /trust wirescope's CA/);
        await okAfter();
      });

      await t.step("garbage instead of a ClientHello is relayed as raw TCP and recorded", async () => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        await conn.write(new TextEncoder().encode(`CONNECT 127.0.0.1:${tlsPort} HTTP/1.1\r\n\r\n`));
        const buf = new Uint8Array(1024);
        const n = await conn.read(buf);
        assert.match(decoder.decode(buf.subarray(0, n ?? 0)), /^HTTP\/1\.1 200 /);
        await conn.write(new Uint8Array([0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff]));
        const timer = setTimeout(() => conn.close(), 3000);
        try {
          while ((await conn.read(buf)) !== null) { /* the origin's alert, then the end */ }
        } catch { /* reset */ }
        clearTimeout(timer);
        try {
          conn.close();
        } catch { /* closed */ }
        await waitFlow<TcpFlow>(
          flows,
          (f) => f.type === "tcp" && f.server.address.port === tlsPort && f.bytesFromClient === 10,
        );
        await okAfter();
      });

      await t.step(
        "an upstream that breaks off mid-response cuts the client short and records the error",
        async () => {
          const r = await curl(["-x", proxyUrl, `http://127.0.0.1:${cutter.addr.port}/`]);
          assert.notEqual(r.code, 0);
          const f = await waitFlow<HttpFlow>(
            flows,
            (f) => f.type === "http" && f.server.address.port === cutter.addr.port,
          );
          assert.match(f.error!.message, /middle of the response body/);
          await okAfter();
        },
      );

      await t.step("the certificate page serves the CA in every form", async () => {
        const page = await curl(["-x", proxyUrl, "http://wirescope.cert/"]);
        assert.match(page.out, /Trust wirescope on this device/);
        const pem = await curl(["-x", proxyUrl, "http://wirescope.cert/cert/pem"]);
        assert.equal(pem.out, proxy.ca.certPem);
        const der = await new Deno.Command("curl", {
          args: ["-sS", "-x", proxyUrl, "http://wirescope.cert/cert/cer"],
        }).output();
        assert.deepEqual(der.stdout, proxy.ca.certDer);
      });
    } finally {
      await proxy.close(200);
      await origin.shutdown();
      tlsOrigin.close();
      cutter.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("isPrivateAddress() accepts loopback and private ranges only (not carrier-grade NAT)", () => {
  for (
    const ip of [
      "127.0.0.1",
      "10.1.2.3",
      "172.16.0.1",
      "192.168.1.1",
      "::1",
      "fd12::1",
      "fe80::1",
      "::ffff:10.0.0.1",
    ]
  ) {
    assert.ok(isPrivateAddress(ip), ip);
  }
  // 100.64.0.0/10 is carrier-grade NAT: other customers of the same carrier, not local.
  for (const ip of ["8.8.8.8", "172.32.0.1", "2001:db8::1", "192.169.0.1", "100.64.0.1", "100.127.255.254"]) {
    assert.ok(!isPrivateAddress(ip), ip);
  }
});
