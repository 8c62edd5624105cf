/**
 * The built-in addons end to end: the library's `startProxy` with the addons the CLI's flags
 * make (`builtinAddons` + their settings), curl through the explicit proxy to loopback origins.
 * The allow-list case covers plain HTTP, intercepted HTTPS (the block page over TLS), a host
 * passed through (refused from its SNI) and DNS (NXDOMAIN through the dns mode, with dig).
 * The command's handling of a bad value (one line, exit 2) is checked through `main`.
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";
import { builtinAddons } from "../src/addons/builtins/index.ts";
import { main } from "../src/cli/main.ts";
import { buildDnsErrorResponse } from "../src/proxy/dns_message.ts";

const dec = new TextDecoder();

async function run(
  cmd: string,
  args: string[],
): Promise<{ code: number; out: string; err: string; raw: Uint8Array }> {
  const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr), raw: o.stdout };
}

/** curl through the proxy: status, headers (lower-cased names) and body. */
async function curl(proxyPort: number, args: string[]) {
  const r = await run("curl", [
    "-sS",
    "--http1.1",
    "--max-time",
    "15",
    "-x",
    `http://127.0.0.1:${proxyPort}`,
    "-D",
    "-",
    ...args,
  ]);
  const text = r.out;
  const split = text.lastIndexOf("\r\n\r\n", text.search(/\r\n\r\n(?![\s\S]*^HTTP\/)/m) + 4);
  const head = text.slice(0, split);
  const lastHead = head.slice(head.lastIndexOf("HTTP/1.1 "));
  const status = Number(/^HTTP\/1\.1 (\d+)/.exec(lastHead)?.[1] ?? 0);
  const headers = new Map<string, string>();
  for (const line of lastHead.split("\r\n").slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) headers.set(line.slice(0, i).toLowerCase(), line.slice(i + 1).trim());
  }
  return {
    code: r.code,
    err: r.err,
    status,
    headers,
    body: text.slice(split + 4),
    raw: r.raw.slice(split + 4),
  };
}

async function originCert(dir: string): Promise<{ cert: string; key: string }> {
  const gen = await run("openssl", [
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
    "subjectAltName=DNS:localhost,IP:127.0.0.1",
    "-keyout",
    `${dir}/origin.key`,
    "-out",
    `${dir}/origin.pem`,
  ]);
  assert.equal(gen.code, 0, gen.err);
  return {
    cert: await Deno.readTextFile(`${dir}/origin.pem`),
    key: await Deno.readTextFile(`${dir}/origin.key`),
  };
}

/** The origin: echoes what it got as JSON, except a few paths. */
function handler(name: string) {
  return async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (url.pathname === "/login") {
      return new Response("ok", { headers: { "set-cookie": "sid=s3cr3t; Path=/" } });
    }
    if (url.pathname === "/bin") return new Response(new Uint8Array([1, 0xff, 0, 2, 0xff, 0, 3]));
    return Response.json({
      origin: name,
      method: req.method,
      path: url.pathname + url.search,
      body: await req.text(),
      headers: Object.fromEntries(req.headers),
    });
  };
}

Deno.test({
  name: "built-in addons through the explicit proxy with curl",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-builtins-" });
    const ac = new AbortController();
    const a = Deno.serve({ hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} }, handler("a"));
    const b = Deno.serve({ hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} }, handler("b"));
    await Deno.mkdir(`${dir}/static`);
    await Deno.writeTextFile(`${dir}/static/app.css`, "body{}");
    await Deno.writeTextFile(`${dir}/value.txt`, "from a file\n");
    const settings = [
      "block_list=|~u /blocked|404",
      "block_list=|~u /dropped|444",
      `map_local=|~u /static/|/static/|${dir}/static`,
      "map_remote=|~u /old/|/old/(\\w+)|/new/\\1",
      `map_remote=|~u /to-b/|:${a.addr.port}/to-b/|:${b.addr.port}/moved/`,
      `modify_headers=|~q|x-added|@${dir}/value.txt`,
      "modify_headers=|~q|user-agent|",
      "modify_headers=|~s|x-resp|yes",
      "modify_body=|~s & ~u /bin|\\xff\\x00|<>",
      "modify_body=|~q|secret=(\\w+)|secret=[\\1 redacted]",
      "anticache=true",
      "anticomp=true",
      "stickycookie=~d 127.0.0.1",
    ];
    const proxy = await startProxy({
      modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
      confdir: `${dir}/conf`,
      allowLocalDestinations: true,
      addons: builtinAddons(settings),
      addonOptions: settings,
      onLog: () => {},
    });
    const port = proxy.addresses[0]!.addr.port;
    const base = `http://127.0.0.1:${a.addr.port}`;
    try {
      await t.step("block list: 404 without the origin, 444 closes", async () => {
        const r = await curl(port, [`${base}/blocked`]);
        assert.equal(r.status, 404);
        assert.equal(r.body, "");
        const k = await curl(port, [`${base}/dropped`]);
        assert.notEqual(k.code, 0);
        assert.equal(k.status, 0);
      });
      await t.step("map local: a file from the directory, content type, 404", async () => {
        const r = await curl(port, [`${base}/static/app.css?v=1`]);
        assert.equal(r.status, 200);
        assert.equal(r.body, "body{}");
        assert.equal(r.headers.get("content-type"), "text/css; charset=utf-8");
        assert.equal((await curl(port, [`${base}/static/none.css`])).status, 404);
        assert.equal((await curl(port, ["--path-as-is", `${base}/static/%2e%2e/value.txt`])).status, 403);
      });
      await t.step("map remote: path by group; another port", async () => {
        const r = await curl(port, [`${base}/old/thing?x=1`]);
        assert.equal(JSON.parse(r.body).path, "/new/thing?x=1");
        const moved = JSON.parse((await curl(port, [`${base}/to-b/z`])).body);
        assert.equal(moved.origin, "b");
        assert.equal(moved.path, "/moved/z");
        assert.equal(moved.headers.host, `127.0.0.1:${b.addr.port}`);
      });
      await t.step("modify headers/body, anticache, anticomp", async () => {
        const r = await curl(port, [
          "-H",
          'If-None-Match: "etag"',
          "-H",
          "Accept-Encoding: gzip",
          "--data-binary",
          "secret=hunter2&x=1",
          `${base}/echo`,
        ]);
        const seen = JSON.parse(r.body);
        assert.equal(seen.body, "secret=[hunter2 redacted]&x=1");
        assert.equal(seen.headers["x-added"], "from a file");
        assert.equal(seen.headers["user-agent"], undefined);
        assert.equal(seen.headers["if-none-match"], undefined);
        assert.equal(seen.headers["accept-encoding"], "identity");
        assert.equal(seen.headers["x-resp"], undefined);
        assert.equal(r.headers.get("x-resp"), "yes");
        assert.equal(r.headers.get("x-added"), undefined);
        const bin = await curl(port, [`${base}/bin`]);
        assert.deepEqual([...bin.raw], [1, 0x3c, 0x3e, 2, 0x3c, 0x3e, 3]);
        assert.equal(bin.headers.get("content-length"), "7");
      });
      await t.step("stickycookie: the cookie set by /login comes back on later requests", async () => {
        await curl(port, [`${base}/login`]);
        const seen = JSON.parse((await curl(port, [`${base}/echo`])).body);
        assert.equal(seen.headers.cookie, "sid=s3cr3t");
      });
    } finally {
      await proxy.close();
      ac.abort();
      await Promise.all([a.finished, b.finished]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "allow list: HTTP and HTTPS block page, a passthrough host refused, DNS NXDOMAIN",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-allow-" });
    const { cert, key } = await originCert(dir);
    const ac = new AbortController();
    const plain = Deno.serve(
      { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
      handler("plain"),
    );
    const tls = Deno.serve(
      { hostname: "127.0.0.1", port: 0, cert, key, signal: ac.signal, onListen() {} },
      handler("tls"),
    );
    // A resolver that answers every query NOERROR with no records.
    const resolver = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    (async () => {
      for (;;) {
        const [d, from] = await resolver.receive();
        const reply = buildDnsErrorResponse(d, 0);
        if (reply) await resolver.send(reply, from);
      }
    })().catch(() => {});
    const settings = ["allow_list=127.0.0.1", "allow_list=*.allowed.test"];
    const proxy = await startProxy({
      modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }, {
        kind: "dns",
        hostname: "127.0.0.1",
        port: 0,
      }],
      confdir: `${dir}/conf`,
      allowLocalDestinations: true,
      upstreamCa: [`${dir}/origin.pem`],
      ignoreHosts: [/^pass\.localhost$/],
      dnsServers: [{ hostname: "127.0.0.1", port: (resolver.addr as Deno.NetAddr).port }],
      addons: builtinAddons(settings),
      addonOptions: settings,
      onLog: () => {},
    });
    const port = proxy.addresses[0]!.addr.port;
    const dnsPort = proxy.addresses[1]!.addr.port;
    await Deno.writeTextFile(`${dir}/ca.pem`, proxy.ca.certPem);
    try {
      await t.step("HTTP: an allowed host passes, another gets the block page", async () => {
        const ok = await curl(port, [`http://127.0.0.1:${plain.addr.port}/x`]);
        assert.equal(JSON.parse(ok.body).origin, "plain");
        const no = await curl(port, [`http://localhost:${plain.addr.port}/x`]);
        assert.equal(no.status, 403);
        assert.equal(no.headers.get("content-type"), "text/html; charset=utf-8");
        assert.match(no.body, /Blocked by wirescope/);
        assert.match(no.body, /<b>localhost<\/b> is not on this proxy's allow list/);
      });
      await t.step("HTTPS (intercepted): the block page over TLS", async () => {
        const ok = await curl(port, ["--cacert", `${dir}/ca.pem`, `https://127.0.0.1:${tls.addr.port}/y`]);
        assert.equal(JSON.parse(ok.body).origin, "tls", ok.err);
        const no = await curl(port, ["--cacert", `${dir}/ca.pem`, `https://localhost:${tls.addr.port}/y`]);
        assert.equal(no.code, 0, no.err);
        assert.equal(no.status, 403);
        assert.match(no.body, /Blocked by wirescope/);
      });
      await t.step({
        name: "a passthrough host (ignore-hosts) not on the list: refused",
        // The explicit proxy dials at CONNECT, before the ClientHello: allow_list's tcpStart
        // refuses the relay before any byte goes on.
        fn: async () => {
          // Two proxies that pass localhost through and differ only in their list.
          const relayed = async (list: string) => {
            const listed = [`allow_list=${list}`];
            const p = await startProxy({
              modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
              confdir: `${dir}/conf`,
              allowLocalDestinations: true,
              ignoreHosts: [/^localhost$/],
              addons: builtinAddons(listed),
              addonOptions: listed,
              onLog: () => {},
            });
            try {
              // The origin's own certificate: the connection is not intercepted.
              return await curl(p.addresses[0]!.addr.port, [
                "--cacert",
                `${dir}/origin.pem`,
                `https://localhost:${tls.addr.port}/z`,
              ]);
            } finally {
              await p.close();
            }
          };
          const ok = await relayed("localhost");
          assert.equal(JSON.parse(ok.body).origin, "tls", ok.err);
          const no = await relayed("127.0.0.1");
          assert.notEqual(no.code, 0, "the TLS connection must not reach the origin");
          assert.equal(no.body.includes('"origin":"tls"'), false);
        },
      });
      await t.step("DNS: names not on the list get NXDOMAIN, listed ones are resolved", async () => {
        const dig = (name: string) =>
          run("dig", ["+tries=1", "+time=5", "-p", String(dnsPort), "@127.0.0.1", name]);
        const no = await dig("ads.example.net");
        assert.match(no.out, /status: NXDOMAIN/, no.out + no.err);
        const ok = await dig("www.allowed.test");
        assert.match(ok.out, /status: NOERROR/, ok.out + ok.err);
      });
    } finally {
      await proxy.close();
      ac.abort();
      resolver.close();
      await Promise.all([plain.finished, tls.finished]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("the command: a bad built-in value is one line naming the flag, exit 2", async () => {
  const errors: string[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => errors.push(args.join(" "));
  try {
    for (
      const [args, flag] of [
        [["--block-list", "|~d x|99"], "--block-list"],
        [["--map-remote", "|~q|(|x"], "--map-remote"],
        [["--modify-headers", "|~q|x-a|@/nonexistent/v"], "--modify-headers"],
        [["--modify-body", "|~q|(a)|\\2"], "--modify-body"],
        [["--map-local", "|~bogus|x|/tmp"], "--map-local"],
        [["--allow-list", "*."], "--allow-list"],
        [["--stickycookie", "~d ("], "--stickycookie"],
      ] as [string[], string][]
    ) {
      errors.length = 0;
      assert.equal(await main(args), 2, args.join(" "));
      assert.equal(errors.length, 1);
      assert.ok(!errors[0]!.includes("\n"));
      assert.ok(errors[0]!.startsWith(`wirescope: ${flag} `), errors[0]);
    }
  } finally {
    console.error = original;
  }
});
