/**
 * Upstream mode in front of a real squid (issue 17): squid's usual rule refuses CONNECT to ports
 * other than 443, so plain HTTP must reach it as absolute-form requests (as mitmproxy sends them)
 * while HTTPS goes through CONNECT and is still intercepted. Squid's access log shows what it got.
 * Also: credentials reach an upstream that asks for them, and an `https://` upstream (TLS to squid).
 * Needs root, squid (Debian `squid`) and openssl.
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";
import type { Flow, HttpFlow } from "../src/flows/flow.ts";
import { OriginNamespace } from "./origin_ns.ts";
import { sh } from "./rig.ts";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

async function curl(args: string[]): Promise<string> {
  const out = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "20", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`curl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

async function until(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function accepts(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return true;
  } catch {
    return false;
  }
}

/** A CA and a leaf for 127.0.0.1 signed by it (squid's https_port). */
async function makeCert(dir: string): Promise<void> {
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
    `${dir}/ca.key`,
    "-out",
    `${dir}/ca.pem`,
    "-days",
    "2",
    "-subj",
    "/CN=squid test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]); // deno-fmt-ignore
  await sh([
    "openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", `${dir}/squid.key`, "-out", `${dir}/squid.csr`, "-subj", "/CN=127.0.0.1",
  ]); // deno-fmt-ignore
  await Deno.writeTextFile(`${dir}/ext.cnf`, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  await sh([
    "openssl",
    "x509",
    "-req",
    "-in",
    `${dir}/squid.csr`,
    "-CA",
    `${dir}/ca.pem`,
    "-CAkey",
    `${dir}/ca.key`,
    "-CAcreateserial",
    "-out",
    `${dir}/squid.pem`,
    "-days",
    "2",
    "-extfile",
    `${dir}/ext.cnf`,
  ]); // deno-fmt-ignore
}

Deno.test({
  name: "upstream mode through squid: plain HTTP in absolute form, HTTPS by CONNECT (intercepted)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const origin = await OriginNamespace.create(["origin.test"], 1 << 20);
    const dir = await Deno.makeTempDir({ prefix: "wirescope-squid-" });
    await Deno.chmod(dir, 0o777); // squid drops to its own user, which writes the logs here
    await makeCert(dir);
    await Deno.chmod(`${dir}/squid.key`, 0o644);
    const [plainPort, authPort, tlsPort] = [freePort(), freePort(), freePort()];
    // Squid's stock rules (CONNECT only to 443), one port that asks for credentials (any are
    // accepted by the fake helper, but some must come), one TLS port.
    await Deno.writeTextFile(
      `${dir}/squid.conf`,
      [
        `http_port 127.0.0.1:${plainPort}`,
        `http_port 127.0.0.1:${authPort} name=authport`,
        `https_port 127.0.0.1:${tlsPort} tls-cert=${dir}/squid.pem tls-key=${dir}/squid.key`,
        `auth_param basic program /usr/lib/squid/basic_fake_auth`,
        `acl SSL_ports port 443`,
        `acl CONNECT method CONNECT`,
        `acl authport myportname authport`,
        `acl authed proxy_auth REQUIRED`,
        `http_access deny CONNECT !SSL_ports`,
        `http_access deny authport !authed`,
        `http_access allow all`,
        `cache deny all`,
        `access_log stdio:${dir}/access.log`,
        `cache_log ${dir}/cache.log`,
        `pid_filename ${dir}/squid.pid`,
        `coredump_dir ${dir}`,
        `shutdown_lifetime 0 seconds`,
        `strip_query_terms off`,
        ``,
      ].join("\n"),
    );
    const squid = new Deno.Command("squid", {
      args: ["-N", "-f", `${dir}/squid.conf`],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-confdir-" });
    const accessLog = async () => await Deno.readTextFile(`${dir}/access.log`).catch(() => "");
    try {
      await until("squid to listen", async () => await accepts(plainPort) && await accepts(tlsPort));
      await t.step("squid itself refuses CONNECT to port 80 (the constraint)", async () => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: plainPort });
        try {
          const head = `CONNECT ${origin.address}:80 HTTP/1.1\r\nHost: ${origin.address}:80\r\n\r\n`;
          await conn.write(new TextEncoder().encode(head));
          const buf = new Uint8Array(256);
          const n = await conn.read(buf);
          assert.match(new TextDecoder().decode(buf.subarray(0, n ?? 0)), /^HTTP\/1\.1 403/);
        } finally {
          conn.close();
        }
      });

      const proxy = await startProxy({
        modes: [
          { kind: "regular", port: 0, upstream: `http://127.0.0.1:${plainPort}` },
          { kind: "regular", port: 0, upstream: `https://127.0.0.1:${tlsPort}` },
        ],
        confdir,
        upstreamCa: [origin.caFile, `${dir}/ca.pem`],
        allowLocalDestinations: true,
        onLog: () => {},
      });
      const flows: Flow[] = [];
      (async () => {
        for await (const f of proxy.flows) flows.push(f);
      })();
      const [viaPlain, viaTls] = proxy.addresses.map((a) => a.addr.port);
      const http = (path: string) => (f: Flow) =>
        f.type === "http" && f.request.path === path && f.response !== undefined;
      try {
        await t.step("plain HTTP: squid gets GET http://... (absolute form) and answers", async () => {
          const body = await curl([
            "-x",
            `http://127.0.0.1:${viaPlain}`,
            `http://${origin.address}/small.txt`,
          ]);
          assert.equal(body, "hello from nginx\n");
          await until("the flow", () => flows.some(http("/small.txt")));
          const f = flows.find(http("/small.txt")) as HttpFlow;
          assert.equal(f.response?.status, 200);
          assert.equal(f.server.address.hostname, origin.address);
          await until("squid's log line", async () => (await accessLog()).includes("/small.txt"));
          assert.match(
            await accessLog(),
            new RegExp(`TCP_MISS/200 .* GET http://${origin.address}/small\\.txt`),
          );
        });
        await t.step("HTTPS: CONNECT to 443 through squid, TLS intercepted", async () => {
          const body = await curl([
            "-x",
            `http://127.0.0.1:${viaPlain}`,
            "--cacert",
            proxy.ca.paths.cert,
            `https://${origin.address}/small.txt?tls`,
          ]);
          assert.equal(body, "hello from nginx\n");
          await until("the flow", () => flows.some(http("/small.txt?tls")));
          const f = flows.find(http("/small.txt?tls")) as HttpFlow;
          assert.equal(f.request.scheme, "https");
          // Squid logs a tunnel when it ends (the client's connection closed, the proxy closes its own).
          await until(
            "squid's CONNECT line",
            async () => (await accessLog()).includes(`CONNECT ${origin.address}:443`),
          );
          assert.match(await accessLog(), new RegExp(`CONNECT ${origin.address}:443`));
        });
        await t.step("https:// upstream: TLS to squid, plain HTTP still absolute form", async () => {
          const body = await curl([
            "-x",
            `http://127.0.0.1:${viaTls}`,
            `http://${origin.address}/small.txt?over-tls`,
          ]);
          assert.equal(body, "hello from nginx\n");
          await until("squid's log line", async () => (await accessLog()).includes("over-tls"));
          assert.match(await accessLog(), /GET http:\/\/\S+\/small\.txt\?over-tls/);
        });
      } finally {
        await proxy.close(200);
      }

      await t.step("credentials: Proxy-Authorization added for an upstream that asks", async () => {
        const withAuth = await startProxy({
          modes: [{ kind: "regular", port: 0 }],
          confdir,
          upstreamProxy: `http://127.0.0.1:${authPort}`,
          upstreamAuth: "alice:secret",
          allowLocalDestinations: true,
          onLog: () => {},
        });
        const without = await startProxy({
          modes: [{ kind: "regular", port: 0 }],
          confdir,
          upstreamProxy: `http://127.0.0.1:${authPort}`,
          allowLocalDestinations: true,
          onLog: () => {},
        });
        try {
          const port = withAuth.addresses[0]!.addr.port;
          const body = await curl([
            "-x",
            `http://127.0.0.1:${port}`,
            `http://${origin.address}/small.txt?auth`,
          ]);
          assert.equal(body, "hello from nginx\n");
          await until("squid's log line", async () => (await accessLog()).includes("?auth"));
          assert.match(await accessLog(), /GET http:\/\/\S+\/small\.txt\?auth alice /);
          const refused = await curl([
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            `http://127.0.0.1:${without.addresses[0]!.addr.port}`,
            `http://${origin.address}/small.txt?noauth`,
          ]);
          assert.equal(refused, "407");
        } finally {
          await withAuth.close(200);
          await without.close(200);
        }
      });
    } finally {
      try {
        squid.kill("SIGTERM");
      } catch { /* gone */ }
      const done = await Promise.race([squid.status, new Promise((r) => setTimeout(() => r(null), 5000))]);
      if (done === null) {
        try {
          squid.kill("SIGKILL");
        } catch { /* gone */ }
        await squid.status;
      }
      await squid.stderr.cancel().catch(() => {});
      await origin.close();
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(confdir, { recursive: true });
    }
  },
});
