import assert from "node:assert/strict";
import { Duplex } from "node:stream";
import tls from "node:tls";
import { parseClientHello } from "./client_hello.ts";
import { runInConnectionScope } from "./last_resort.ts";
import { interceptionObstacle, serverNameProblem } from "./tls_compatibility.ts";
import { CertificateAuthority } from "../certs/certificate_authority.ts";
import { withTempDir } from "../certs/_test_utils.ts";

/** The first TLS record(s) `openssl s_client` sends with `args`, captured on a loopback listener. */
async function opensslHello(args: string[]): Promise<Uint8Array> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const child = new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${listener.addr.port}`, ...args],
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const conn = await listener.accept();
  let bytes = new Uint8Array(0);
  const buf = new Uint8Array(65536);
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && parseClientHello(bytes) === null) {
    const n = await conn.read(buf);
    if (n === null) break;
    bytes = new Uint8Array([...bytes, ...buf.subarray(0, n)]);
  }
  conn.close();
  listener.close();
  try {
    child.kill();
  } catch { /* gone */ }
  await child.status;
  return bytes;
}

/** Removes extension `type` from a single-record hello (as a client that never sends it). */
function withoutExtension(record: Uint8Array, type: number): Uint8Array {
  const b = [...record];
  let at = 5 + 4 + 2 + 32;
  at += 1 + b[at]!;
  at += 2 + ((b[at]! << 8) | b[at + 1]!);
  at += 1 + b[at]!;
  const end = at + 2 + ((b[at]! << 8) | b[at + 1]!);
  const kept: number[] = [];
  for (let p = at + 2; p < end;) {
    const t = (b[p]! << 8) | b[p + 1]!;
    const l = (b[p + 2]! << 8) | b[p + 3]!;
    if (t !== type) kept.push(...b.slice(p, p + 4 + l));
    p += 4 + l;
  }
  const body = [...b.slice(9, at), kept.length >> 8, kept.length & 255, ...kept];
  const message = [1, body.length >> 16, (body.length >> 8) & 255, body.length & 255, ...body];
  return new Uint8Array([22, 3, 1, message.length >> 8, message.length & 255, ...message]);
}

/**
 * What this Deno's node:tls does with `hello` as a server with an ECDSA P-256 leaf: "ok" when it
 * answers with its own flight, else the error it reports. Runs inside a connection scope, since
 * a refusal also escapes as an uncaught exception (which the scope's guard must stop).
 */
async function tlsLibraryVerdict(hello: Uint8Array, leaf: { certPem: string; keyPem: string }) {
  const guarded: string[] = [];
  const verdict = await runInConnectionScope(
    {
      describe: () => "test connection",
      report: (m) => guarded.push(m),
      abort: () => {},
    },
    () =>
      new Promise<string>((resolve) => {
        let sent = 0;
        const transport = new Duplex({
          read() {},
          write(chunk: Uint8Array, _encoding, callback) {
            sent += chunk.byteLength;
            callback();
          },
        });
        transport.push(hello);
        const socket = new tls.TLSSocket(transport, {
          isServer: true,
          secureContext: tls.createSecureContext({ key: leaf.keyPem, cert: leaf.certPem }),
        });
        const timer = setTimeout(() => finish(sent > 0 ? "ok" : "silent"), 300);
        socket.on("error", (e: Error) => finish(e.message));
        function finish(result: string) {
          clearTimeout(timer);
          socket.destroy();
          resolve(result);
        }
      }),
  );
  // Let a deferred uncaught exception from the refusal arrive before the next case.
  await new Promise((r) => setTimeout(r, 20));
  return { verdict, guarded };
}

Deno.test({
  name: "interceptionObstacle() agrees with node:tls on real openssl hellos, and its refusals never escape",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const leaf = await withTempDir(async (dir) =>
      (await CertificateAuthority.load(dir)).leafFor({ sni: "example.com" })
    );
    const tls12 = await opensslHello(["-tls1_2", "-servername", "example.com"]);
    const tls13 = await opensslHello(["-tls1_3", "-servername", "example.com"]);
    const cases: [string, Uint8Array, RegExp | null][] = [
      ["TLS 1.3", tls13, null],
      ["TLS 1.2", tls12, null],
      ["no SNI", await opensslHello(["-noservername"]), null],
      ["TLS 1.1 only", await opensslHello(["-tls1_1", "-servername", "example.com"]), /only TLS 1\.1/],
      ["TLS 1.0 only", await opensslHello(["-tls1", "-servername", "example.com"]), /only TLS 1\.0/],
      ["ffdhe only", await opensslHello(["-tls1_3", "-groups", "ffdhe2048"]), /group .*ffdhe2048/],
      ["secp521r1 only", await opensslHello(["-groups", "secp521r1"]), /group .*secp521r1/],
      ["CBC suites only", await opensslHello(["-tls1_2", "-cipher", "AES128-SHA"]), /cipher suite/],
      [
        "RSA signatures only",
        await opensslHello(["-tls1_2", "-sigalgs", "RSA+SHA256"]),
        /cipher suite|ECDSA P-256/,
      ],
      ["RSA-PSS only", await opensslHello(["-tls1_3", "-sigalgs", "RSA-PSS+SHA256"]), /ECDSA P-256/],
      ["no supported_groups", withoutExtension(tls12, 10), /no key exchange groups/],
      ["no signature_algorithms", withoutExtension(tls12, 13), /signature_algorithms/],
    ];
    const names: [string, boolean][] = [
      ["a/b", false],
      ["*", false],
      ["..", false],
      ["-a-", false],
      ["a.1", false],
      ["01.2.3.4", false],
      ["999.1.1.1", false],
      ["a".repeat(64) + ".com", false],
      [["a".repeat(63), "a".repeat(63), "a".repeat(63), "a".repeat(62)].join("."), false], // 254
      [["a".repeat(63), "a".repeat(63), "a".repeat(63), "a".repeat(61)].join("."), true], // 253
      ["a".repeat(63) + ".com", true],
      ["a_b.example", true],
      ["Example.COM", true],
      ["example.com.", true],
      ["1a.com", true],
      ["1.2.3.4", true],
      ["::1", true],
    ];
    for (const [name, ok] of names) {
      cases.push([
        `SNI ${name.length > 20 ? `of ${name.length} characters` : name}`,
        await opensslHello(["-servername", name]),
        ok ? null : /server name/,
      ]);
    }
    for (const [label, bytes, expected] of cases) {
      const hello = parseClientHello(bytes);
      assert.ok(hello, `${label}: a complete hello`);
      const obstacle = interceptionObstacle(hello);
      const { verdict, guarded } = await tlsLibraryVerdict(bytes, leaf);
      if (expected === null) {
        assert.equal(obstacle, null, `${label}: no obstacle`);
        assert.equal(verdict, "ok", `${label}: node:tls takes it`);
      } else {
        assert.match(obstacle ?? "", expected, `${label}: the reason`);
        assert.notEqual(verdict, "ok", `${label}: node:tls refuses it (${verdict})`);
      }
      for (const line of guarded) assert.match(line, /in test connection/);
    }
  },
});

Deno.test("serverNameProblem() says what is wrong with a name", () => {
  assert.equal(serverNameProblem("example.com"), null);
  assert.match(serverNameProblem("a/b")!, /label "a\/b"/);
  assert.match(serverNameProblem("a..b")!, /empty label/);
  assert.match(serverNameProblem("x".repeat(64))!, /64 characters/);
  assert.match(serverNameProblem("123")!, /looks like an IP address/);
});
