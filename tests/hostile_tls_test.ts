/**
 * Hostile and old TLS clients against the explicit proxy, with real clients (curl, openssl): a
 * hello the TLS library refuses is passed through to its destination with the reason, the proxy
 * keeps intercepting everyone else, and no exit path leaves a connection open.
 */
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { type Flow, startProxy } from "../mod.ts";
import { socketsOnPorts } from "./sockets.ts";

const decoder = new TextDecoder();

async function run(cmd: string[], timeoutMs = 10_000): Promise<{ code: number; out: string }> {
  const child = new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).spawn();
  const out = await child.output();
  return { code: out.code, out: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

/** Polls `find` for up to 3 s. */
async function eventually<T>(find: () => T | undefined): Promise<T | undefined> {
  for (let i = 0; i < 150; i++) {
    const found = find();
    if (found !== undefined) return found;
    await new Promise((r) => setTimeout(r, 20));
  }
  return undefined;
}

/** A TLS origin on loopback that still speaks TLS 1.0 and 1.1 (`openssl s_server -www`). */
async function oldTlsOrigin(dir: string): Promise<{ port: number; certFile: string; stop(): Promise<void> }> {
  const certFile = `${dir}/origin.pem`, keyFile = `${dir}/origin.key`;
  const made = await run([
    "openssl",
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    keyFile,
    "-out",
    certFile,
    "-days",
    "2",
    "-subj",
    "/CN=localhost",
    "-addext",
    "subjectAltName=DNS:localhost,IP:127.0.0.1",
  ]);
  assert.equal(made.code, 0, made.out);
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const child = new Deno.Command("openssl", {
    args: [
      "s_server",
      "-accept",
      `127.0.0.1:${port}`,
      "-cert",
      certFile,
      "-key",
      keyFile,
      "-cipher",
      "DEFAULT@SECLEVEL=0",
      "-www",
      "-quiet",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0; i < 100; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    port,
    certFile,
    async stop() {
      child.kill();
      await child.status;
    },
  };
}

/** A concurrent TLS origin on loopback (Deno's own TLS) answering every request with "ok". */
function modernOrigin(certFile: string, keyFile: string) {
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: Deno.readTextFileSync(certFile),
    key: Deno.readTextFileSync(keyFile),
  });
  const serve = async (conn: Deno.Conn) => {
    try {
      const buf = new Uint8Array(4096);
      while ((await conn.read(buf)) !== null) {
        await conn.write(new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
      }
    } catch { /* the client went away */ }
    try {
      conn.close();
    } catch { /* closed */ }
  };
  const accepting = (async () => {
    for await (const conn of listener) void serve(conn);
  })().catch(() => {});
  return {
    port: listener.addr.port,
    async stop() {
      listener.close();
      await accepting;
    },
  };
}

/** Connects through the proxy with CONNECT, completes a TLS handshake without SNI, then cuts the connection. */
function handshakeThenCut(proxyPort: number, target: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const raw = net.connect(
      proxyPort,
      "127.0.0.1",
      () => raw.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`),
    );
    raw.once("data", (chunk: Uint8Array) => {
      if (!decoder.decode(chunk).startsWith("HTTP/1.1 200")) return reject(new Error(decoder.decode(chunk)));
      const secure = tls.connect({ socket: raw, rejectUnauthorized: false }, () => {
        secure.destroy();
        raw.destroy();
        resolve();
      });
      secure.once("error", reject);
    });
    raw.once("error", reject);
  });
}

Deno.test({
  name:
    "explicit proxy: old and hostile TLS clients pass through with the reason, nothing leaks, everyone else is intercepted",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-hostile-" });
    const origin = await oldTlsOrigin(dir);
    const concurrent = modernOrigin(origin.certFile, `${dir}/origin.key`);
    const logs: string[] = [];
    const proxy = await startProxy({
      modes: [{ kind: "regular", port: 0 }],
      confdir: `${dir}/conf`,
      upstreamCa: [origin.certFile],
      allowLocalDestinations: true,
      onLog: (e) => logs.push(`${e.level} ${e.message}`),
    });
    const flows: Flow[] = [];
    proxy.bus.subscribe((e) => {
      if (e.type === "end") flows.push(e.flow);
    });
    const proxyPort = proxy.addresses[0]!.addr.port;
    const proxyUrl = `http://127.0.0.1:${proxyPort}`;
    const target = `localhost:${origin.port}`;
    try {
      // A TLS 1.0/1.1-only client reaches its server untouched.
      const old = await run([
        "curl",
        "-sS",
        "-k",
        "--tlsv1.0",
        "--tls-max",
        "1.1",
        "--ciphers",
        "DEFAULT@SECLEVEL=0",
        "-x",
        proxyUrl,
        `https://${target}/`,
      ]);
      assert.equal(old.code, 0, old.out);
      assert.match(old.out, /<HTML>/i, "the old client got the origin's page");
      const oldFlow = await eventually(() => flows.find((f) => f.tls?.passthroughReason !== undefined));
      assert.ok(oldFlow, "a flow for the old client");
      assert.equal(oldFlow.type, "tcp");
      assert.equal(oldFlow.tls?.passthrough, true);
      assert.equal(oldFlow.tls?.passthroughReason, "client offered only TLS 1.1");
      assert.ok(oldFlow.type === "tcp" && oldFlow.bytesFromServer > 0);

      // Hellos the TLS library refuses: each is one passthrough flow with its reason.
      const hostile: [string[], RegExp][] = [
        [["-servername", "a/b"], /server name "a\/b"/],
        [["-servername", "*"], /server name "\*"/],
        [["-servername", ".."], /server name "\.\."/],
        [["-servername", "-a-"], /server name "-a-"/],
        [["-servername", "a".repeat(64)], /label of 64 characters/],
        [
          ["-servername", ["a".repeat(63), "a".repeat(63), "a".repeat(63), "a".repeat(62)].join(".")],
          /254 characters/,
        ],
        [["-servername", "999.1.1.1"], /looks like an IP address/],
        [["-tls1_3", "-groups", "ffdhe2048"], /ffdhe2048/],
      ];
      for (const [args, reason] of hostile) {
        const before = flows.length;
        await run(
          ["openssl", "s_client", "-proxy", `127.0.0.1:${proxyPort}`, "-connect", target, ...args],
          5000,
        );
        for (let i = 0; i < 50 && flows.length === before; i++) await new Promise((r) => setTimeout(r, 20));
        const flow = flows.at(-1);
        assert.ok(flows.length > before && flow, `a flow for ${args.join(" ")}`);
        assert.match(flow.tls?.passthroughReason ?? "", reason, `${args.join(" ")}: the reason`);
      }

      // Everyone else is still intercepted.
      const modern = await run([
        "curl",
        "-sS",
        "--cacert",
        proxy.ca.paths.cert,
        "-x",
        proxyUrl,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        `https://${target}/`,
      ]);
      assert.equal(modern.out, "200");
      assert.ok(await eventually(() => flows.find((f) => f.type === "http" && f.response?.status === 200)));

      // A client that named its host only in CONNECT gets a leaf for that name (no SNI).
      const noSni = await run([
        "openssl",
        "s_client",
        "-proxy",
        `127.0.0.1:${proxyPort}`,
        "-connect",
        target,
        "-noservername",
        "-CAfile",
        proxy.ca.paths.cert,
        "-verify_hostname",
        "localhost",
        "-verify_return_error",
      ], 5000);
      assert.match(noSni.out, /Verify return code: 0 \(ok\)/, noSni.out);

      // 50 of each connection that used to leave its upstream open: no SNI after CONNECT name:port,
      // an IP-like but invalid SNI, and a client that cuts the connection right after its handshake.
      const settle = async () => {
        for (let i = 0; i < 100 && proxy.stats().activeConnections > 0; i++) {
          await new Promise((r) => setTimeout(r, 50));
        }
        await new Promise((r) => setTimeout(r, 200));
      };
      await settle();
      // Sockets of the proxy's port and the origin's (the upstream side of each connection).
      const ours = () => socketsOnPorts([proxyPort, concurrent.port]);
      const before = ours();
      const leakTarget = `localhost:${concurrent.port}`;
      for (let round = 0; round < 5; round++) {
        const batch: Promise<unknown>[] = [];
        for (let i = 0; i < 10; i++) {
          const common = ["openssl", "s_client", "-proxy", `127.0.0.1:${proxyPort}`, "-connect", leakTarget];
          batch.push(run([...common, "-noservername"], 5000));
          batch.push(run([...common, "-servername", "999.1.1.1"], 5000));
          batch.push(handshakeThenCut(proxyPort, leakTarget));
        }
        await Promise.all(batch);
      }
      await settle();
      const after = ours();
      assert.equal(proxy.stats().activeConnections, 0);
      assert.ok(
        after <= before,
        `sockets on the proxy's and origin's ports: ${before} before, ${after} after 150 connections`,
      );
      assert.deepEqual(logs.filter((l) => /uncaught|unhandled/.test(l)), [], "nothing escaped a connection");
    } finally {
      await proxy.close(100);
      await concurrent.stop();
      await origin.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
