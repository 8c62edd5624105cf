/**
 * The explicit proxy's connection hooks over loopback: `httpConnect` answers a CONNECT itself
 * (the tunnel refused with the addon's status, the target never dialed) or kills it, and
 * `serverConnect` sends a tunnel to another address than the one asked for (a TCP echo server),
 * with `tcpMessage` seeing the bytes; `clientConnected`/`clientDisconnected` come once per client
 * connection with mode `regular`.
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";
import type { Addon } from "../src/addons/types.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Sends `text` on a new connection to `port` and reads until the peer closes (bounded). */
async function exchange(port: number, text: string, closeAfter?: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(encoder.encode(text));
  let got = "";
  const buf = new Uint8Array(4096);
  const deadline = Date.now() + 10_000;
  try {
    while (Date.now() < deadline) {
      const n = await conn.read(buf);
      if (n === null) break;
      got += decoder.decode(buf.subarray(0, n));
      if (closeAfter !== undefined && got.endsWith(closeAfter)) break;
    }
  } catch { /* reset */ }
  conn.close();
  return got;
}

Deno.test({
  name: "addons: httpConnect answers or kills a CONNECT; serverConnect changes where a tunnel goes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const echo = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const echoPort = echo.addr.port;
    (async () => {
      for await (const c of echo) {
        (async () => {
          try {
            for await (const chunk of c.readable) await c.write(chunk);
          } catch { /* closed */ }
        })();
      }
    })();
    const calls: string[] = [];
    const addon: Addon = {
      name: "gate",
      clientConnected: (c) => void calls.push(`clientConnected ${c.client.mode}`),
      clientDisconnected: () => void calls.push("clientDisconnected"),
      httpConnect(c) {
        calls.push(`httpConnect ${c.host}:${c.port}`);
        if (c.host === "refused.test") c.respond(403, { "x-why": "addon" }, "not here\n");
        if (c.host === "killed.test") c.kill();
      },
      serverConnect(s) {
        calls.push(`serverConnect ${s.address.hostname}:${s.address.port}`);
        if (s.address.hostname === "elsewhere.test") s.address = { hostname: "127.0.0.1", port: echoPort };
      },
      tcpMessage(t) {
        calls.push(`tcpMessage ${t.message!.fromClient} ${t.message!.text}`);
      },
    };
    const dir = await Deno.makeTempDir({ prefix: "wirescope-addons-connect-" });
    const proxy = await startProxy({
      modes: [{ kind: "regular", port: 0 }],
      confdir: dir,
      allowLocalDestinations: true,
      dnsServers: [],
      addons: [addon],
      onLog: () => {},
    });
    try {
      const port = proxy.addresses.find((a) => a.kind === "regular")!.addr.port;
      const refused = await exchange(
        port,
        "CONNECT refused.test:443 HTTP/1.1\r\nHost: refused.test:443\r\n\r\n",
      );
      assert.match(refused, /^HTTP\/1\.1 403 Forbidden\r\n/);
      assert.match(refused, /\r\nx-why: addon\r\n/);
      assert.match(refused, /\r\n\r\nnot here\n$/);
      assert.ok(!calls.includes("serverConnect refused.test:443"), "the target is not dialed");

      const killed = await exchange(
        port,
        "CONNECT killed.test:443 HTTP/1.1\r\nHost: killed.test:443\r\n\r\n",
      );
      assert.equal(killed, "");

      const tunneled = await exchange(
        port,
        "CONNECT elsewhere.test:9 HTTP/1.1\r\nHost: elsewhere.test:9\r\n\r\n",
        "\r\n\r\n",
      );
      assert.match(tunneled, /^HTTP\/1\.1 200 /);
      // The tunnel: the addon's address answers (an echo), not elsewhere.test.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(encoder.encode("CONNECT elsewhere.test:9 HTTP/1.1\r\nHost: elsewhere.test:9\r\n\r\n"));
      const buf = new Uint8Array(4096);
      let head = "";
      while (!head.endsWith("\r\n\r\n")) {
        const n = await conn.read(buf);
        if (n === null) break;
        head += decoder.decode(buf.subarray(0, n));
      }
      await conn.write(encoder.encode("ping through"));
      const n = await conn.read(buf);
      assert.equal(decoder.decode(buf.subarray(0, n ?? 0)), "ping through");
      conn.close();
      for (let i = 0; i < 200 && calls.filter((c) => c === "clientDisconnected").length < 4; i++) {
        await new Promise((r) => setTimeout(r, 25));
      }
      assert.deepEqual(calls.filter((c) => c.startsWith("clientConnected")).length, 4);
      assert.equal(calls.filter((c) => c === "clientDisconnected").length, 4);
      assert.ok(calls.includes("serverConnect elsewhere.test:9"));
      assert.ok(calls.includes("tcpMessage true ping through"));
      assert.ok(calls.includes("tcpMessage false ping through"));
      assert.ok(calls.every((c) => !c.startsWith("clientConnected") || c === "clientConnected regular"));
    } finally {
      await proxy.close();
      echo.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "addons: dnsRequest answers and refuses in dns mode (dig over UDP and TCP); the resolver is not asked",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-addons-dns-" });
    const names: string[] = [];
    const addon: Addon = {
      dnsRequest(d) {
        const name = d.request?.questions[0]?.name ?? "";
        names.push(name);
        if (name === "made-up.test") d.answer(["10.44.0.1", "10.44.0.2"], 30);
        else d.answerError(3);
      },
    };
    // A resolver that is never there: every answer must come from the addon.
    const proxy = await startProxy({
      modes: [{ kind: "dns", port: 0 }],
      confdir: dir,
      dnsServers: [{ hostname: "127.0.0.1", port: 9 }],
      addons: [addon],
      onLog: () => {},
    });
    try {
      const port = proxy.addresses.find((a) => a.kind === "dns")!.addr.port;
      const dig = async (transport: string, name: string) => {
        const o = await new Deno.Command("dig", {
          args: ["@127.0.0.1", "-p", String(port), transport, "+tries=1", "+time=5", name, "A"],
        }).output();
        return new TextDecoder().decode(o.stdout);
      };
      for (const transport of ["+notcp", "+tcp"]) {
        const answer = await dig(transport, "made-up.test");
        assert.match(answer, /status: NOERROR/);
        assert.match(answer, /made-up\.test\.\s+30\s+IN\s+A\s+10\.44\.0\.1/);
        assert.match(answer, /made-up\.test\.\s+30\s+IN\s+A\s+10\.44\.0\.2/);
        assert.match(await dig(transport, "blocked.test"), /status: NXDOMAIN/);
      }
      assert.deepEqual(names, ["made-up.test", "blocked.test", "made-up.test", "blocked.test"]);
    } finally {
      await proxy.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
