/**
 * The socks5 and dns modes end to end with real clients, against loopback servers of the test's
 * own (HTTPS on 127.0.0.1 and [::1] with a test CA, a UDP echo, a DNS resolver):
 * `curl --socks5-hostname` / `--socks5` (IPv4 and IPv6 targets) intercepted with wirescope's CA,
 * username/password logins, a refused loopback destination (reply 0x02), a Python client's UDP
 * ASSOCIATE (echo and DNS), malformed greetings, and `dig` over UDP and TCP against the dns mode.
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";
import type { DnsFlow, Flow, HttpFlow, TcpFlow, UdpFlow } from "../src/flows/flow.ts";

async function run(cmd: string[], allowFail = false): Promise<{ code: number; out: string; err: string }> {
  const o = await new Deno.Command(cmd[0]!, { args: cmd.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  const r = {
    code: o.code,
    out: new TextDecoder().decode(o.stdout),
    err: new TextDecoder().decode(o.stderr),
  };
  if (!allowFail && r.code !== 0) throw new Error(`${cmd.join(" ")} failed (${r.code}): ${r.err}`);
  return r;
}

/** A resolver on loopback: A questions get 10.11.12.13, others NXDOMAIN. */
function resolver(): { socket: Deno.DatagramConn; port: number } {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  (async () => {
    for (;;) {
      const [q, from] = await socket.receive();
      if (q.byteLength < 12) continue;
      let off = 12;
      while (off < q.byteLength && q[off] !== 0) off += q[off]! + 1;
      const end = off + 5;
      if (end > q.byteLength) continue;
      const isA = q[off + 1] === 0 && q[off + 2] === 1;
      const out = new Uint8Array(end + (isA ? 16 : 0));
      out.set(q.subarray(0, end));
      out[2] = 0x81, out[3] = isA ? 0x80 : 0x83;
      out.set([0, 1, 0, isA ? 1 : 0, 0, 0, 0, 0], 4);
      if (isA) out.set([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 11, 12, 13], end);
      await socket.send(out, from);
    }
  })().catch(() => {});
  return { socket, port: (socket.addr as Deno.NetAddr).port };
}

Deno.test({
  name: "socks5 and dns modes: curl, a Python UDP ASSOCIATE client and dig, recorded as flows",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-socks5-" });
    await run([
      "openssl",
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
      "-keyout",
      `${dir}/origin.key`,
      "-out",
      `${dir}/origin.pem`,
    ]);
    const cert = await Deno.readTextFile(`${dir}/origin.pem`);
    const key = await Deno.readTextFile(`${dir}/origin.key`);
    const ac = new AbortController();
    const handler = (req: Request) => new Response(`hello over ${new URL(req.url).hostname}\n`);
    const servers = ["127.0.0.1", "::1"].map((hostname) =>
      Deno.serve({ hostname, port: 0, cert, key, signal: ac.signal, onListen: () => {} }, handler)
    );
    const [v4Port, v6Port] = servers.map((s) => s.addr.port);
    const echo = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    (async () => {
      for (;;) {
        const [d, from] = await echo.receive();
        await echo.send(d, from);
      }
    })().catch(() => {});
    const dns = resolver();
    const flows: Flow[] = [];
    const options = {
      confdir: `${dir}/conf`,
      upstreamCa: [`${dir}/origin.pem`],
      dnsServers: [{ hostname: "127.0.0.1", port: dns.port }],
      onLog: () => {},
    };
    const proxy = await startProxy({
      ...options,
      modes: [{ kind: "socks5", port: 0 }, { kind: "dns", port: 0 }],
      allowLocalDestinations: true,
    });
    const guarded = await startProxy({
      ...options,
      modes: [{ kind: "socks5", port: 0 }, { kind: "regular", port: 0 }],
      proxyAuth: { username: "alice", password: "s3cret" },
    });
    for (const p of [proxy, guarded]) p.bus.subscribe((e) => e.type === "end" && flows.push(e.flow));
    const socksPort = proxy.addresses.find((a) => a.kind === "socks5")!.addr.port;
    const dnsPort = proxy.addresses.find((a) => a.kind === "dns")!.addr.port;
    const guardedPort = guarded.addresses[0]!.addr.port;
    const regularPort = guarded.addresses[1]!.addr.port;
    await Deno.writeTextFile(`${dir}/ca.pem`, proxy.ca.certPem);
    await Deno.writeTextFile(`${dir}/ca2.pem`, guarded.ca.certPem);
    const curl = (args: string[], ca = `${dir}/ca.pem`) =>
      run(["curl", "-sS", "--max-time", "20", "--cacert", ca, ...args], true);
    const httpFlow = (url: string) =>
      flows.find((f): f is HttpFlow => f.type === "http" && f.request.url === url);
    try {
      await t.step(
        "curl --socks5-hostname (name) and --socks5 (IPv4, IPv6 literals), intercepted",
        async () => {
          const cases: [string, string, string][] = [
            ["--socks5-hostname", `https://localhost:${v4Port}/a`, "localhost"],
            ["--socks5", `https://127.0.0.1:${v4Port}/b`, "127.0.0.1"],
            ["--socks5", `https://[::1]:${v6Port}/c`, "[::1]"],
          ];
          for (const [flag, url, host] of cases) {
            const r = await curl([flag, `127.0.0.1:${socksPort}`, url]);
            assert.equal(r.code, 0, r.err);
            assert.equal(r.out, `hello over ${host}\n`);
            const flow = httpFlow(url);
            assert.ok(flow, `an HTTP flow for ${url}: ${flows.map((f) => f.type).join(",")}`);
            assert.equal(flow.client.mode, "socks5");
            assert.equal(flow.response?.status, 200);
          }
          // curl checked the leaf against wirescope's CA only: the origin's CA would not do.
          const r = await curl(
            ["--socks5", `127.0.0.1:${socksPort}`, `https://127.0.0.1:${v4Port}/x`],
            `${dir}/origin.pem`,
          );
          assert.notEqual(r.code, 0);
        },
      );

      await t.step(
        "username/password: right login passes, wrong is refused; loopback refused (0x02)",
        async () => {
          const good = await curl(
            [
              "--socks5-hostname",
              `alice:s3cret@127.0.0.1:${guardedPort}`,
              `https://example.invalid:${v4Port}/`,
            ],
            `${dir}/ca2.pem`,
          );
          // Logged in: the proxy then tried the name, which cannot resolve (host unreachable, 0x04).
          assert.notEqual(good.code, 0);
          assert.ok(
            flows.some((f) =>
              f.type === "tcp" && /cannot connect to example\.invalid/.test(f.error?.message ?? "")
            ),
          );
          const bad = await curl(
            ["--socks5-hostname", `alice:wrong@127.0.0.1:${guardedPort}`, `https://localhost:${v4Port}/`],
            `${dir}/ca2.pem`,
          );
          assert.notEqual(bad.code, 0);
          assert.match(bad.err, /authentication failed|User was rejected/i);
          const blocked = await curl(
            ["--socks5", `alice:s3cret@127.0.0.1:${guardedPort}`, `https://127.0.0.1:${v4Port}/`],
            `${dir}/ca2.pem`,
          );
          assert.notEqual(blocked.code, 0);
          assert.match(blocked.err, /not allowed|ruleset|\(2\)/i);
          assert.ok(
            flows.some((f) =>
              f.type === "tcp" && /authentication failed for user "alice"/.test(f.error?.message ?? "")
            ),
          );
          assert.ok(
            flows.some((f) => f.type === "tcp" && /refused: a loopback address/.test(f.error?.message ?? "")),
          );
        },
      );

      await t.step("--proxyauth in regular mode: 407 without the login, through with it", async () => {
        const url = `https://127.0.0.1:${v4Port}/`;
        const proxyArgs = ["-x", `http://127.0.0.1:${regularPort}`, "-w", "%{http_connect}"];
        const none = await curl([...proxyArgs, url], `${dir}/ca2.pem`);
        assert.equal(none.out, "407");
        const wrong = await curl([...proxyArgs, "-U", "alice:nope", url], `${dir}/ca2.pem`);
        assert.equal(wrong.out, "407");
        // With the login the CONNECT gets past the check, to the destination policy (loopback: 502).
        const right = await curl([...proxyArgs, "-U", "alice:s3cret", url], `${dir}/ca2.pem`);
        assert.equal(right.out, "502");
        const plain = await curl([
          "-x",
          `http://127.0.0.1:${regularPort}`,
          "-o",
          "/dev/null",
          "-w",
          "%{http_code} %header{proxy-authenticate}",
          "http://127.0.0.1:1/",
        ]);
        assert.equal(plain.out, '407 Basic realm="wirescope"');
      });

      await t.step(
        "UDP ASSOCIATE from Python: echo and a DNS query, recorded as UDP and DNS flows",
        async () => {
          const script = `
import socket, struct, sys
port, echo, dns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = socket.create_connection(("127.0.0.1", port), timeout=10)
c.sendall(b"\\x05\\x01\\x00"); assert c.recv(2) == b"\\x05\\x00"
c.sendall(b"\\x05\\x03\\x00\\x01" + bytes(6))
r = c.recv(10); assert r[1] == 0, r
relay = (socket.inet_ntoa(r[4:8]), struct.unpack(">H", r[8:10])[0])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)
u.sendto(b"\\x00\\x00\\x00\\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", echo) + b"ping-udp", relay)
d = u.recv(2048); assert d[10:] == b"ping-udp", d
q = b"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x04name\\x04test\\x00\\x00\\x01\\x00\\x01"
u.sendto(b"\\x00\\x00\\x00\\x03\\x09localhost" + struct.pack(">H", 53) + q, relay)
d = u.recv(2048); a = d[10:]
assert a[:2] == b"\\x12\\x34" and a[-4:] == bytes([10, 11, 12, 13]), d
print("ok")
c.close()
`;
          const r = await run([
            "python3",
            "-c",
            script,
            String(socksPort),
            String((echo.addr as Deno.NetAddr).port),
            "53",
          ], true);
          assert.equal(r.out.trim(), "ok", r.err);
          const deadline = Date.now() + 5000;
          while (
            Date.now() < deadline && !flows.some((f) => f.type === "udp" && f.client.mode === "socks5")
          ) {
            await new Promise((res) => setTimeout(res, 50));
          }
          const udp = flows.find((f): f is UdpFlow => f.type === "udp" && f.client.mode === "socks5");
          assert.ok(udp, "the association's UDP flow ended with the TCP connection");
          assert.equal(udp.bytesFromClient, 8);
          assert.equal(udp.bytesFromServer, 8);
          const query = flows.find((f): f is DnsFlow => f.type === "dns" && f.client.mode === "socks5");
          assert.equal(query?.request?.questions[0]?.name, "name.test");
          assert.equal(query?.resolver?.port, dns.port);
        },
      );

      await t.step("malformed greetings: an error flow each, and the listener keeps serving", async () => {
        const inputs = [
          new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"),
          Uint8Array.of(5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80),
        ];
        for (const input of inputs) {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port: socksPort });
          await conn.write(input);
          const buf = new Uint8Array(64);
          let got = 0;
          for (let i = 0; i < 10; i++) {
            const n = await conn.read(buf.subarray(got)).catch(() => null);
            if (n === null) break;
            got += n;
          }
          conn.close();
          if (input[0] === 5) assert.deepEqual([...buf.subarray(0, 4)], [5, 0, 5, 7]);
          else assert.equal(got, 0);
        }
        assert.ok(
          flows.some((f): f is TcpFlow => f.type === "tcp" && /looks like HTTP/.test(f.error?.message ?? "")),
        );
        assert.ok(
          flows.some((f): f is TcpFlow =>
            f.type === "tcp" && /BIND is not supported/.test(f.error?.message ?? "")
          ),
        );
        const r = await curl(["--socks5", `127.0.0.1:${socksPort}`, `https://127.0.0.1:${v4Port}/after`]);
        assert.equal(r.out, "hello over 127.0.0.1\n", r.err);
      });

      await t.step("dns mode: dig over UDP and TCP, each query a DNS flow", async () => {
        for (const transport of ["+notcp", "+tcp"]) {
          const r = await run([
            "dig",
            "@127.0.0.1",
            "-p",
            String(dnsPort),
            transport,
            "+short",
            "+tries=1",
            "+time=5",
            `q${transport.slice(1)}.test`,
            "A",
          ]);
          assert.equal(r.out.trim(), "10.11.12.13");
          const flow = flows.find((f): f is DnsFlow =>
            f.type === "dns" && f.client.mode === "dns" &&
            f.request?.questions[0]?.name === `q${transport.slice(1)}.test`
          );
          assert.ok(flow, `a DNS flow for ${transport}`);
          assert.equal(flow.response?.answers.length, 1);
        }
      });
    } finally {
      await proxy.close(100);
      await guarded.close(100);
      ac.abort();
      await Promise.all(servers.map((s) => s.finished));
      echo.close();
      dns.socket.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
