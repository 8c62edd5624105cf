/**
 * Every non-HTTP addon hook end to end: a real wireguard-go client (tests/rig.ts) goes through
 * `startProxy({ addons })` to the origin namespace (tests/origin_ns.ts). One addon records each
 * hook call with its key payload and changes what goes by: a WebSocket message, a TCP chunk, a
 * UDP datagram (another is dropped), DNS answers of its own (an address for a made-up name,
 * NXDOMAIN for a blocked one), and a TLS passthrough decision; a second addon's tcpMessage
 * throws (the bytes go on, one log line). `wireguardPeer` sees the client's handshake. Needs root.
 */
import assert from "node:assert/strict";
import { generatePrivateKey } from "../mod.ts";
import { startProxy } from "../src/proxy/proxy.ts";
import type { Flow, TcpFlow } from "../src/flows/flow.ts";
import type { Addon } from "../src/addons/types.ts";
import { nsClient, Rig } from "./rig.ts";
import { OriginNamespace } from "./origin_ns.ts";

interface Call {
  hook: string;
  /** The client port of the connection (0 when the hook has none). */
  port: number;
  key: string;
}

/** Waits (bounded) until `ok()` holds. */
async function until(ok: () => boolean, what: string, ms = 5000): Promise<void> {
  for (let i = 0; i < ms / 25; i++) {
    if (ok()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function recorder(calls: Call[]): Addon {
  const rec = (hook: string, port: number, key: string): void => {
    calls.push({ hook, port, key });
  };
  return {
    name: "recorder",
    clientConnected: (c) => rec("clientConnected", c.client.address.port, c.client.mode),
    clientDisconnected: (c) => rec("clientDisconnected", c.client.address.port, ""),
    serverConnect: (s) =>
      rec("serverConnect", s.client.address.port, `${s.address.hostname}:${s.address.port}`),
    serverConnected: (c) => rec("serverConnected", c.client.address.port, `${c.server.address.port}`),
    serverDisconnected: (c) => rec("serverDisconnected", c.client.address.port, ""),
    tlsClienthello: (h) => {
      rec(
        "tlsClienthello",
        h.connection.client.address.port,
        `${h.sni} ${h.alpn.join(",")} ${h.versions[0]}`,
      );
      if (h.sni === "addon-pass.test") h.ignoreConnection = true;
    },
    tlsEstablishedServer: (t) => rec("tlsEstablishedServer", t.connection.client.address.port, t.side),
    tlsEstablishedClient: (t) => rec("tlsEstablishedClient", t.connection.client.address.port, t.side),
    tlsFailedClient: (t) => rec("tlsFailedClient", t.connection.client.address.port, t.error ?? ""),
    tlsFailedServer: (t) => rec("tlsFailedServer", t.connection.client.address.port, t.error ?? ""),
    requestheaders: (f) => rec("requestheaders", f.client.address.port, f.request.url),
    request: (f) => rec("request", f.client.address.port, f.request.url),
    responseheaders: (f) => rec("responseheaders", f.client.address.port, `${f.response?.status}`),
    response: (f) => rec("response", f.client.address.port, `${f.response?.status}`),
    websocketStart: (w) => rec("websocketStart", w.flow.client.address.port, w.flow.request.path),
    websocketMessage: (w) => {
      const m = w.message!;
      rec(
        "websocketMessage",
        w.flow.client.address.port,
        `${m.fromClient} ${m.kind} ${m.kind === "text" ? m.text : ""}`,
      );
      if (m.fromClient && m.text === "hello websocket") m.text = "changed by an addon";
    },
    websocketEnd: (w) => rec("websocketEnd", w.flow.client.address.port, ""),
    tcpStart: (t) => rec("tcpStart", t.flow.client.address.port, `${t.flow.server.address.port}`),
    tcpMessage: (t) => {
      const m = t.message!;
      rec(
        "tcpMessage",
        t.flow.client.address.port,
        `${t.flow.server.address.port} ${m.fromClient} ${m.content.byteLength}`,
      );
      if (t.flow.server.address.port === 7 && m.fromClient) m.text = m.text.replace("tcp", "TCP");
    },
    tcpEnd: (t) => rec("tcpEnd", t.flow.client.address.port, `${t.flow.server.address.port}`),
    udpStart: (u) => rec("udpStart", u.flow.client.address.port, `${u.flow.server.address.port}`),
    udpMessage: (u) => {
      const m = u.message!;
      rec("udpMessage", u.flow.client.address.port, `${m.fromClient} ${m.text}`);
      if (m.fromClient && m.text === "hello udp") m.text = "HELLO UDP";
      if (m.fromClient && m.text === "drop me") m.drop();
    },
    wireguardPeer: (p) =>
      rec("wireguardPeer", 0, `${p.event} ${p.publicKey} ${p.endpoint ? "endpoint" : "-"}`),
    udpEnd: (u) => rec("udpEnd", u.flow.client.address.port, ""),
    dnsRequest: (d) => {
      const name = d.request?.questions[0]?.name ?? "";
      rec("dnsRequest", d.flow.client.address.port, name);
      if (name === "made-up.test") d.answer("10.44.0.1");
      if (name === "blocked.test") d.answerError(3);
    },
    dnsResponse: (d) => {
      rec("dnsResponse", d.flow.client.address.port, d.response?.answers.map((a) => a.data).join(",") ?? "");
      // A resolver's answer changed on its way back.
      if (d.response?.questions[0]?.name === "changed.test" && d.response.answers[0]) {
        d.response.answers[0].data = "10.44.0.2";
      }
    },
  };
}

/** An addon whose tcpMessage throws on client chunks. */
const thrower: Addon = {
  name: "thrower",
  tcpMessage(t) {
    if (t.message?.fromClient && t.flow.server.address.port === 7) throw new Error("boom from thrower");
  },
};

Deno.test({
  name: "addon hooks through a real WireGuard client: order, payloads and changes of every non-HTTP hook",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const origin = await OriginNamespace.create(["origin.test", "addon-pass.test"], 1 << 20);
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-confdir-" });
    const calls: Call[] = [];
    const logs: string[] = [];
    const proxy = await startProxy({
      modes: [{ kind: "wireguard", port: 0, privateKey: generatePrivateKey(), peers: [] }],
      confdir,
      upstreamCa: [origin.caFile],
      dnsServers: [{ hostname: origin.address, port: 53 }],
      addons: [recorder(calls), thrower],
      onLog: (e) => logs.push(e.message),
    });
    const wg = proxy.wireguard[0]!;
    const flows: Flow[] = [];
    (async () => {
      for await (const f of proxy.flows) flows.push(f);
    })();
    let rig: Rig | null = null;
    try {
      rig = await Rig.create(1, wg.publicKey, wg.addr.port, (publicKey) => wg.addPeer({ publicKey }));
      const client = rig.clients[0]!;
      const o = origin.address;
      const ca = proxy.ca.paths.cert;

      await t.step("HTTPS: connection, TLS and HTTP hooks in order with their payloads", async () => {
        const out = await client.exec([
          "curl",
          "-sS",
          "--max-time",
          "30",
          "--cacert",
          ca,
          "--resolve",
          `origin.test:443:${o}`,
          "-w",
          "\\n%{local_port}",
          "https://origin.test/small.txt",
        ]);
        const [body, portText] = out.split("\n").filter((l) => l !== "").slice(-2);
        assert.equal(body, "hello from nginx");
        const port = Number(portText);
        await until(
          () => calls.some((c) => c.port === port && c.hook === "clientDisconnected"),
          "disconnect",
        );
        const mine = calls.filter((c) => c.port === port);
        assert.deepEqual(mine.map((c) => c.hook), [
          "clientConnected",
          "tlsClienthello",
          "serverConnect",
          "serverConnected",
          "tlsEstablishedServer",
          "tlsEstablishedClient",
          "requestheaders",
          "request",
          "responseheaders",
          "response",
          "serverDisconnected",
          "clientDisconnected",
        ]);
        const key = (hook: string) => mine.find((c) => c.hook === hook)!.key;
        assert.equal(key("clientConnected"), "wireguard");
        assert.match(key("tlsClienthello"), /^origin\.test h2,http\/1\.1 TLSv1\.3$/);
        assert.equal(key("serverConnect"), `${o}:443`);
        assert.equal(key("requestheaders"), "https://origin.test/small.txt");
        assert.equal(key("response"), "200");
      });

      await t.step(
        "tlsClienthello may choose passthrough: the client sees the origin's own certificate",
        async () => {
          const body = await client.exec([
            "curl",
            "-sS",
            "--max-time",
            "30",
            "--cacert",
            origin.caFile,
            "--resolve",
            `addon-pass.test:443:${o}`,
            "https://addon-pass.test/small.txt",
          ]);
          assert.equal(body, "hello from nginx\n");
          await until(
            () => flows.some((f) => f.type === "tcp" && f.tls?.sni === "addon-pass.test"),
            "passthrough flow",
          );
          const f = flows.find((f) => f.type === "tcp" && f.tls?.sni === "addon-pass.test") as TcpFlow;
          assert.equal(f.tls?.passthrough, true);
          assert.equal(f.tls?.passthroughReason, "addon chose passthrough");
        },
      );

      await t.step(
        "WebSocket: start, the client's message changed in flight (the echo returns it), end",
        async () => {
          const r = await nsClient(client, ["ws", `ws://${o}:8080/ws`, "-", "hello websocket"]);
          assert.equal(r.reply, "changed by an addon");
          await until(() => calls.some((c) => c.hook === "websocketEnd"), "websocketEnd");
          const ws = calls.filter((c) => c.hook.startsWith("websocket"));
          assert.deepEqual(ws.slice(0, 3).map((c) => [c.hook, c.key]), [
            ["websocketStart", "/ws"],
            ["websocketMessage", "true text hello websocket"],
            ["websocketMessage", "false text changed by an addon"],
          ]);
          assert.equal(ws.at(-1)!.hook, "websocketEnd");
        },
      );

      await t.step(
        "TCP: a chunk changed by one addon; another addon's throw leaves it going on, one log line",
        async () => {
          const script = [
            "import socket",
            `s = socket.create_connection(("${o}", 7), timeout=10)`,
            "s.sendall(b'hello tcp')",
            "s.shutdown(socket.SHUT_WR)",
            "d = b''",
            "while True:",
            "    c = s.recv(100)",
            "    if not c: break",
            "    d += c",
            "print(d.decode())",
          ].join("\n");
          const out = await client.exec(["python3", "-c", script]);
          assert.equal(out.trim(), "hello TCP");
          await until(() => calls.some((c) => c.hook === "tcpEnd" && c.key === "7"), "tcpEnd");
          const tcp = calls.filter((c) => c.hook.startsWith("tcp") && c.key.startsWith("7"));
          assert.deepEqual(tcp.map((c) => [c.hook, c.key]), [
            ["tcpStart", "7"],
            ["tcpMessage", "7 true 9"],
            ["tcpMessage", "7 false 9"],
            ["tcpEnd", "7"],
          ]);
          const thrown = logs.filter((l) => l.includes("boom from thrower"));
          assert.equal(thrown.length, 1, logs.join("\n"));
          assert.match(thrown[0]!, /addon thrower: tcpMessage failed/);
        },
      );

      await t.step("UDP: a datagram changed (the echo returns it), another dropped", async () => {
        const r = await nsClient(client, ["udp", o, "7", "hello udp"]);
        assert.equal(r.reply, "HELLO UDP");
        const dropped = await nsClient(client, ["udp", o, "7", "drop me"]);
        assert.equal(dropped.reply, null);
        const udp = calls.filter((c) => c.hook.startsWith("udp"));
        assert.deepEqual(udp.slice(0, 3).map((c) => [c.hook, c.key]), [
          ["udpStart", "7"],
          ["udpMessage", "true hello udp"],
          ["udpMessage", "false HELLO UDP"],
        ]);
        assert.ok(udp.some((c) => c.key === "true drop me"));
      });

      await t.step("DNS: the addon's own answer, NXDOMAIN for a blocked name, a changed answer", async () => {
        assert.deepEqual(await nsClient(client, ["dns", "10.0.0.53", "53", "made-up.test"]), {
          rcode: "NOERROR",
          answers: ["10.44.0.1"],
        });
        assert.deepEqual(await nsClient(client, ["dns", "10.0.0.53", "53", "blocked.test"]), {
          rcode: "NXDOMAIN",
          answers: [],
        });
        // The origin's DNS server answers 10.11.12.13; the dnsResponse hook changes it.
        assert.deepEqual(await nsClient(client, ["dns", "10.0.0.53", "53", "changed.test"]), {
          rcode: "NOERROR",
          answers: ["10.44.0.2"],
        });
        const dns = calls.filter((c) => c.hook.startsWith("dns"));
        assert.deepEqual(dns.map((c) => [c.hook, c.key]), [
          ["dnsRequest", "made-up.test"],
          ["dnsResponse", "10.44.0.1"],
          ["dnsRequest", "blocked.test"],
          ["dnsResponse", ""],
          ["dnsRequest", "changed.test"],
          ["dnsResponse", "10.11.12.13"],
        ]);
      });
      await t.step("wireguardPeer: the client's handshake, and online once", () => {
        const peer = calls.filter((c) => c.hook === "wireguardPeer").map((c) => c.key);
        assert.ok(peer.length >= 2, peer.join(" | "));
        assert.equal(peer[0], `handshake ${client.publicKey} endpoint`);
        assert.equal(peer[1], `online ${client.publicKey} endpoint`);
        assert.equal(peer.filter((k) => k.startsWith("online")).length, 1);
        assert.ok(peer.every((k) => !k.startsWith("offline")));
      });
    } finally {
      await rig?.close();
      await proxy.close();
      await origin.close();
      await Deno.remove(confdir, { recursive: true });
    }
  },
});
