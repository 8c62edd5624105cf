import assert from "node:assert/strict";
import {
  connectThroughUpstream,
  describeUpstream,
  parseUpstreamProxy,
  upstreamAuthHeaders,
  UpstreamProxyError,
} from "./upstream_proxy.ts";

/** A one-connection fake upstream on loopback: `serve` gets the connection and what it read. */
function fakeUpstream(
  serve: (conn: Deno.Conn, read: () => Promise<Uint8Array>) => Promise<void>,
): { url: (scheme: string) => string; done: Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const conn = await listener.accept();
    listener.close();
    const read = async () => {
      const b = new Uint8Array(4096);
      const n = await conn.read(b);
      return b.slice(0, n ?? 0);
    };
    try {
      await serve(conn, read);
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  })();
  return { url: (scheme) => `${scheme}://127.0.0.1:${listener.addr.port}`, done };
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const enc = (s: string) => new TextEncoder().encode(s);
const target = { hostname: "origin.test", port: 443 };

Deno.test("parseUpstreamProxy() reads http and socks5 URLs with credentials, and refuses others", () => {
  assert.deepEqual(parseUpstreamProxy("http://u:p%40ss@10.0.0.1:3128"), {
    scheme: "http",
    address: { hostname: "10.0.0.1", port: 3128 },
    auth: { user: "u", password: "p@ss" },
  });
  assert.deepEqual(parseUpstreamProxy("socks5h://[::1]:1080", "a:b:c"), {
    scheme: "socks5",
    address: { hostname: "::1", port: 1080 },
    auth: { user: "a", password: "b:c" },
  });
  assert.deepEqual(parseUpstreamProxy("https://proxy.test:443"), {
    scheme: "http",
    address: { hostname: "proxy.test", port: 443 },
    tls: true,
  });
  assert.equal(
    describeUpstream(parseUpstreamProxy("https://u:p@proxy.test:8443")),
    "https://proxy.test:8443",
  );
  assert.deepEqual(upstreamAuthHeaders(parseUpstreamProxy("http://u:p@h:1")), [
    ["Proxy-Authorization", `Basic ${btoa("u:p")}`],
  ]);
  assert.throws(() => parseUpstreamProxy("ftp://h:1"), /expected http:/);
  assert.throws(() => parseUpstreamProxy("http://h"), /expected http:/);
  assert.throws(() => parseUpstreamProxy("http://h:1", "nocolon"), /USER:PASS/);
});

Deno.test("HTTP CONNECT: credentials sent, bytes after the answer kept, refusals and garbage named", async () => {
  const ok = fakeUpstream(async (conn, read) => {
    const head = text(await read());
    assert.match(head, /^CONNECT origin\.test:443 HTTP\/1\.1\r\n/);
    assert.match(head, /Proxy-Authorization: Basic dTpw\r\n/);
    await conn.write(enc("HTTP/1.1 200 Connection established\r\n\r\nhello"));
    assert.equal(text(await read()), "ping");
  });
  const opened = await connectThroughUpstream(parseUpstreamProxy(ok.url("http"), "u:p"), target, 2000);
  assert.equal(text((await opened.stream.read())!), "hello");
  await opened.stream.write(enc("ping"));
  await ok.done;
  opened.stream.close(false);

  const cases: [string, RegExp][] = [
    ["HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", /asks for credentials \(407 .*--upstream-auth/],
    ["HTTP/1.0 403 Forbidden\r\n\r\n", /refused the CONNECT \(403 Forbidden\)/],
    ["SSH-2.0-OpenSSH\r\n", /answered something that is not HTTP: "SSH-2.0-OpenSSH/],
    ["", /closed the connection without answering/],
  ];
  for (const [answer, expected] of cases) {
    const up = fakeUpstream(async (conn, read) => {
      await read();
      if (answer) await conn.write(enc(answer));
    });
    await assert.rejects(
      connectThroughUpstream(parseUpstreamProxy(up.url("http")), target, 2000),
      (e: Error) =>
        e instanceof UpstreamProxyError && expected.test(e.message) && /origin\.test:443/.test(e.message),
    );
    await up.done;
  }
});

Deno.test("SOCKS5 CONNECT: username/password, a domain target, refusal codes", async () => {
  const ok = fakeUpstream(async (conn, read) => {
    assert.deepEqual([...await read()], [5, 2, 0, 2]);
    await conn.write(Uint8Array.of(5, 2));
    assert.deepEqual([...await read()], [1, 1, 117, 1, 112]);
    await conn.write(Uint8Array.of(1, 0));
    const req = await read();
    assert.deepEqual([...req.subarray(0, 5)], [5, 1, 0, 3, 11]);
    assert.equal(text(req.subarray(5, 16)), "origin.test");
    await conn.write(Uint8Array.of(5, 0, 0, 1, 127, 0, 0, 1, 0, 80, ...enc("hi")));
  });
  const opened = await connectThroughUpstream(parseUpstreamProxy(ok.url("socks5"), "u:p"), target, 2000);
  assert.equal(text((await opened.stream.read())!), "hi");
  opened.stream.close(false);
  await ok.done;

  const refused = fakeUpstream(async (conn, read) => {
    await read();
    await conn.write(Uint8Array.of(5, 0));
    const req = await read();
    assert.deepEqual([...req], [5, 1, 0, 1, 10, 0, 0, 1, 0, 22]);
    await conn.write(Uint8Array.of(5, 5, 0, 1, 0, 0, 0, 0, 0, 0));
  });
  await assert.rejects(
    connectThroughUpstream(
      parseUpstreamProxy(refused.url("socks5")),
      { hostname: "10.0.0.1", port: 22 },
      2000,
    ),
    /upstream refused: connection refused/,
  );
  await refused.done;

  const wantsAuth = fakeUpstream(async (conn, read) => {
    await read();
    await conn.write(Uint8Array.of(5, 0xff));
  });
  await assert.rejects(
    connectThroughUpstream(parseUpstreamProxy(wantsAuth.url("socks5")), target, 2000),
    /asks for credentials/,
  );
  await wantsAuth.done;
});

Deno.test("an unreachable or silent upstream is a clear error", async () => {
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  await assert.rejects(
    connectThroughUpstream(parseUpstreamProxy(`http://127.0.0.1:${port}`), target, 2000),
    /upstream proxy http:\/\/127\.0\.0\.1:\d+ could not connect to origin\.test:443: the upstream is unreachable/,
  );
  const silent = fakeUpstream(async (_conn, read) => {
    await read();
    await read();
  });
  await assert.rejects(
    connectThroughUpstream(parseUpstreamProxy(silent.url("http")), target, 300),
    /no answer within 300 ms/,
  );
  await silent.done;
});
