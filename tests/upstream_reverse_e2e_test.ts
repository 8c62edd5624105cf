/**
 * Reverse mode and upstream chaining end to end (issue 17): curl to a reverse listener in front of
 * the rig's nginx (http and https, Host rewritten), and a real wireguard-go client whose
 * connections leave through a real upstream: tinyproxy (HTTP CONNECT) and microsocks (SOCKS5),
 * whose own output shows the connections; an upstream that asks for credentials or answers
 * garbage gives the flow its reason, and UDP through an HTTP upstream is refused and recorded.
 * Needs root, tinyproxy and microsocks (scripts/setup.sh).
 */
import assert from "node:assert/strict";
import { generatePrivateKey } from "../mod.ts";
import { type ProxyHandle, startProxy } from "../src/proxy/proxy.ts";
import type { Flow, HttpFlow } from "../src/flows/flow.ts";
import { Rig, type RigClient } from "./rig.ts";
import { OriginNamespace } from "./origin_ns.ts";

async function flowWhere<T extends Flow>(
  flows: Flow[],
  match: (f: Flow) => boolean,
  what: string,
): Promise<T> {
  for (let i = 0; i < 100; i++) {
    const f = flows.find(match);
    if (f) return f as T;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(
    `no flow for ${what}; have: ${flows.map((f) => `${f.type} ${f.error?.message ?? ""}`).join(" | ")}`,
  );
}

function collect(proxy: ProxyHandle): Flow[] {
  const flows: Flow[] = [];
  (async () => {
    for await (const f of proxy.flows) flows.push(f);
  })();
  return flows;
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

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/** Waits (bounded) until something accepts TCP on the port. */
async function listening(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`nothing listens on ${port}`);
}

const escape = (s: string) => s.replaceAll(".", "\\.");

Deno.test({
  name: "reverse mode in front of nginx (http, https) and of a Host-echoing server",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const origin = await OriginNamespace.create(["origin.test"], 1 << 20);
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-confdir-" });
    // Answers with the Host header it got.
    const echo = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => new Response(`host=${req.headers.get("host")}`),
    );
    const echoPort = echo.addr.port;
    const proxy = await startProxy({
      modes: [
        {
          kind: "reverse",
          port: 0,
          target: { scheme: "http", address: { hostname: origin.address, port: 80 } },
        },
        {
          kind: "reverse",
          port: 0,
          target: { scheme: "https", address: { hostname: origin.address, port: 443 } },
        },
        {
          kind: "reverse",
          port: 0,
          target: { scheme: "http", address: { hostname: "127.0.0.1", port: echoPort } },
        },
        {
          kind: "reverse",
          port: 0,
          target: {
            scheme: "http",
            address: { hostname: "127.0.0.1", port: echoPort },
            keepHostHeader: true,
          },
        },
      ],
      confdir,
      upstreamCa: [origin.caFile],
      allowLocalDestinations: true,
      onLog: () => {},
    });
    const flows = collect(proxy);
    const [plain, tls, rewrite, keep] = proxy.addresses.map((a) => a.addr.port);
    try {
      await t.step("http: curl to the listener gets nginx's page; the flow says reverse", async () => {
        assert.equal(await curl([`http://127.0.0.1:${plain}/small.txt`]), "hello from nginx\n");
        const f = await flowWhere<HttpFlow>(
          flows,
          (f) => f.type === "http" && f.client.mode === "reverse",
          "http",
        );
        assert.equal(f.response?.status, 200);
        assert.equal(f.server.address.hostname, origin.address);
        assert.equal(f.request.url, `http://${origin.address}/small.txt`);
      });
      await t.step("https: TLS ended with a leaf for the client's name, TLS to nginx verified", async () => {
        const body = await curl(["--cacert", proxy.ca.paths.cert, `https://localhost:${tls}/small.txt`]);
        assert.equal(body, "hello from nginx\n");
        const f = await flowWhere<HttpFlow>(
          flows,
          (f) => f.type === "http" && f.tls?.sni === "localhost",
          "https",
        );
        assert.equal(f.response?.status, 200);
        assert.ok(f.request.url.startsWith("https://"), f.request.url);
        assert.equal(f.client.mode, "reverse");
      });
      await t.step("Host is rewritten to the server's, unless kept", async () => {
        assert.equal(await curl([`http://127.0.0.1:${rewrite}/rewritten`]), `host=127.0.0.1:${echoPort}`);
        // The flow records the Host the server got (as mitmproxy shows it), not the client's.
        const f = await flowWhere<HttpFlow>(
          flows,
          (f) => f.type === "http" && f.request.path === "/rewritten" && f.response !== undefined,
          "the rewritten request",
        );
        assert.deepEqual(
          f.request.headers.filter(([n]) => n.toLowerCase() === "host").map(([, v]) => v),
          [`127.0.0.1:${echoPort}`],
        );
        assert.equal(
          await curl(["-H", "Host: client.test", `http://127.0.0.1:${keep}/`]),
          "host=client.test",
        );
      });
    } finally {
      await proxy.close(200);
      await echo.shutdown();
      await origin.close();
      await Deno.remove(confdir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "a wireguard-go client's connections leave through tinyproxy and microsocks; upstream failures recorded",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const origin = await OriginNamespace.create(["origin.test"], 1 << 20);
    const dir = await Deno.makeTempDir({ prefix: "wirescope-upstream-" });
    const procs: Deno.ChildProcess[] = [];
    const tinyPort = freePort(), authPort = freePort(), socksPort = freePort();
    const tinyConf = (port: number, log: string, extra = "") =>
      `Port ${port}\nListen 127.0.0.1\nTimeout 30\nLogFile "${log}"\nLogLevel Info\nMaxClients 50\n` +
      `Allow 127.0.0.1\n${extra}`;
    await Deno.writeTextFile(`${dir}/tiny.conf`, tinyConf(tinyPort, `${dir}/tiny.log`));
    await Deno.writeTextFile(
      `${dir}/auth.conf`,
      tinyConf(authPort, `${dir}/auth.log`, "BasicAuth someone secret\n"),
    );
    for (const conf of ["tiny.conf", "auth.conf"]) {
      procs.push(
        new Deno.Command("tinyproxy", {
          args: ["-d", "-c", `${dir}/${conf}`],
          stdout: "null",
          stderr: "null",
        })
          .spawn(),
      );
    }
    const socks = new Deno.Command("microsocks", {
      args: ["-i", "127.0.0.1", "-p", String(socksPort)],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    procs.push(socks);
    let socksLog = "";
    for (const s of [socks.stdout, socks.stderr]) {
      (async () => {
        for await (const chunk of s.pipeThrough(new TextDecoderStream())) socksLog += chunk;
      })().catch(() => {});
    }
    // An "upstream" that answers garbage.
    const garbage = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    (async () => {
      for await (const conn of garbage) {
        conn.write(new TextEncoder().encode("SSH-2.0-NotAProxy\r\n")).catch(() => {}).finally(() => {
          setTimeout(() => conn.close(), 100);
        });
      }
    })().catch(() => {});

    /** One proxy with `upstreamProxy`, one wireguard-go client, then `fn` with curl in its namespace. */
    const through = async (
      upstreamProxy: string,
      fn: (curlIn: (args: string[]) => Promise<string>, flows: Flow[], client: RigClient) => Promise<void>,
      upstreamAuth?: string,
    ) => {
      const confdir = await Deno.makeTempDir({ prefix: "wirescope-confdir-" });
      const proxy = await startProxy({
        modes: [{ kind: "wireguard", port: 0, privateKey: generatePrivateKey(), peers: [] }],
        confdir,
        upstreamCa: [origin.caFile],
        upstreamProxy,
        ...(upstreamAuth ? { upstreamAuth } : {}),
        dnsServers: [{ hostname: origin.address, port: 53 }],
        onLog: () => {},
      });
      const flows = collect(proxy);
      const wg = proxy.wireguard[0]!;
      let rig: Rig | null = null;
      try {
        rig = await Rig.create(1, wg.publicKey, wg.addr.port, (publicKey) => wg.addPeer({ publicKey }));
        const client = rig.clients[0]!;
        const curlIn = (args: string[]) =>
          client.exec(["curl", "-sS", "--max-time", "20", "--cacert", proxy.ca.paths.cert, ...args], {
            allowFail: true,
          });
        await fn(curlIn, flows, client);
      } finally {
        await rig?.close();
        await proxy.close(200);
        await Deno.remove(confdir, { recursive: true });
      }
    };
    const o = origin.address;
    try {
      await listening(tinyPort);
      await listening(authPort);
      await listening(socksPort);
      await t.step(
        "through tinyproxy (HTTP CONNECT): HTTPS intercepted, tinyproxy logs the CONNECTs",
        async () => {
          await through(`http://127.0.0.1:${tinyPort}`, async (curlIn, flows) => {
            const body = await curlIn(["--resolve", `origin.test:443:${o}`, "https://origin.test/small.txt"]);
            assert.equal(body, "hello from nginx\n");
            const f = await flowWhere<HttpFlow>(flows, (f) => f.type === "http", "https via tinyproxy");
            assert.equal(f.response?.status, 200);
            assert.equal(f.tls?.passthrough, false);
            assert.equal(await curlIn([`http://${o}/small.txt`]), "hello from nginx\n");
            const log = await Deno.readTextFile(`${dir}/tiny.log`);
            assert.match(log, new RegExp(`CONNECT ${escape(o)}:443`));
            assert.match(log, new RegExp(`CONNECT ${escape(o)}:80`));
          });
        },
      );
      await t.step(
        "through microsocks (SOCKS5): HTTPS intercepted, microsocks logs the connection",
        async () => {
          await through(`socks5://127.0.0.1:${socksPort}`, async (curlIn, flows) => {
            const body = await curlIn(["--resolve", `origin.test:443:${o}`, "https://origin.test/small.txt"]);
            assert.equal(body, "hello from nginx\n");
            const f = await flowWhere<HttpFlow>(flows, (f) => f.type === "http", "https via microsocks");
            assert.equal(f.response?.status, 200);
            for (let i = 0; i < 40 && !socksLog.includes(o); i++) await new Promise((r) => setTimeout(r, 50));
            assert.match(socksLog, new RegExp(`${escape(o)}:443`));
          });
        },
      );
      await t.step(
        "an upstream that asks for credentials: the flow says so; with them it works",
        async () => {
          await through(`http://127.0.0.1:${authPort}`, async (curlIn, flows) => {
            await curlIn(["--resolve", `origin.test:443:${o}`, "https://origin.test/small.txt"]);
            const f = await flowWhere(flows, (f) => f.error !== undefined, "407");
            assert.match(f.error!.message, /asks for credentials \(407 .*--upstream-auth/);
          });
          await through(`http://127.0.0.1:${authPort}`, async (curlIn) => {
            const body = await curlIn(["--resolve", `origin.test:443:${o}`, "https://origin.test/small.txt"]);
            assert.equal(body, "hello from nginx\n");
          }, "someone:secret");
        },
      );
      await t.step(
        "garbage from the upstream, and UDP through an HTTP upstream: refused with reasons",
        async () => {
          await through(`http://127.0.0.1:${garbage.addr.port}`, async (curlIn, flows) => {
            const answer = await curlIn(["-i", `http://${o}/small.txt`]);
            assert.match(answer, /502/);
            const f = await flowWhere(flows, (f) => f.error !== undefined, "garbage");
            assert.match(f.error!.message, /answered something that is not HTTP: "SSH-2\.0-NotAProxy/);
          });
          await through(`http://127.0.0.1:${tinyPort}`, async (_curlIn, flows, client) => {
            await client.exec(["bash", "-c", `echo hello > /dev/udp/${o}/7`], { allowFail: true });
            const f = await flowWhere(flows, (f) => f.type === "udp", "udp");
            assert.match(
              f.error!.message,
              /UDP cannot go through the upstream proxy http:\/\/127\.0\.0\.1:\d+/,
            );
          });
        },
      );
    } finally {
      garbage.close();
      for (const p of procs) {
        try {
          p.kill("SIGTERM");
        } catch { /* gone */ }
        await p.status;
      }
      await origin.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
