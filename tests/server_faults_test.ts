/**
 * Broken servers behind the proxy, on loopback through explicit mode: an origin that answers
 * before reading the upload, one that stalls, resets, or cuts its body short, and DNS resolvers
 * that answer SERVFAIL or never. Each ends in a flow with the reason, and the client sees what it
 * would see without the proxy (a finished upload, a close short of the length, a reset) or a
 * clear 502/504/SERVFAIL: never a hang. Every wait is bounded.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { startProxy } from "../src/proxy/proxy.ts";
import type { DnsFlow, Flow, HttpFlow, LogEvent } from "../src/flows/flow.ts";
import { FlowBus } from "../src/flows/flow.ts";
import { buildDnsErrorResponse, buildDnsQuery, parseDnsMessage } from "../src/proxy/dns_message.ts";
import { type RelayDatagram, UdpRelay } from "../src/proxy/udp_relay.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();
const UPLOAD = 20 * 1000 * 1000;
/** No `Expect: 100-continue`: curl sends the whole body even though the answer came first. */
const NO_EXPECT = ["-H", "Expect:"];

async function curl(args: string[]): Promise<{ code: number; out: string; err: string; seconds: number }> {
  const start = performance.now();
  const o = await new Deno.Command("curl", { args: ["-sS", "--max-time", "20", ...args] }).output();
  return {
    code: o.code,
    out: decoder.decode(o.stdout),
    err: decoder.decode(o.stderr),
    seconds: (performance.now() - start) / 1000,
  };
}

async function waitFlow<T extends Flow>(flows: Flow[], match: (f: Flow) => boolean): Promise<T> {
  for (let i = 0; i < 200; i++) {
    const f = flows.find(match);
    if (f) return f as T;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error("no such flow");
}

/** A raw TCP origin on loopback: `serve` runs per connection, its errors are ignored. */
function origin(serve: (conn: Deno.TcpConn) => Promise<void>): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.TcpConn>();
  (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      serve(conn).catch(() => {}).finally(() => {
        conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed */ }
      });
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

/** Reads until the end of a request head; returns what came after it. */
async function readHead(conn: Deno.TcpConn): Promise<number> {
  const buf = new Uint8Array(65536);
  let text = "";
  for (let i = 0; i < 1000; i++) {
    const n = await conn.read(buf);
    if (n === null) break;
    text += decoder.decode(buf.subarray(0, n));
    const end = text.indexOf("\r\n\r\n");
    if (end >= 0) return text.length - end - 4;
  }
  return 0;
}

/** Reads and drops everything until the peer closes (bounded). */
async function drain(conn: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(65536);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && (await conn.read(buf)) !== null) { /* dropped */ }
}

/** nginx on a free loopback port answering everything with `return 200` (bounded start). */
async function startNginx(dir: string): Promise<{ port: number; stop(): Promise<void> }> {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const conf = `${dir}/nginx.conf`;
  await Deno.writeTextFile(
    conf,
    `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/nginx-body;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:${port};
    location / { return 200 "nginx\n"; }
  }
}
`,
  );
  const child = new Deno.Command("nginx", {
    args: ["-c", conf, "-e", `${dir}/nginx-error.log`],
    stdout: "null",
    stderr: "null",
  })
    .spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
  };
  for (let i = 0; i < 100; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return { port, stop };
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  await stop();
  throw new Error(
    `nginx did not start: ${await Deno.readTextFile(`${dir}/nginx-error.log`).catch(() => "")}`,
  );
}

Deno.test({
  name: "broken servers end in a flow with the reason and the client never hangs",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-faults-" });
    const upload = `${dir}/upload.bin`;
    await Deno.writeFile(upload, new Uint8Array(UPLOAD).fill(0x61));
    const logs: LogEvent[] = [];
    const proxy = await startProxy({
      modes: [{ kind: "regular", port: 0 }],
      confdir: `${dir}/conf`,
      dnsServers: [],
      allowLocalDestinations: true,
      serverTimeout: 1000,
      onLog: (e) => logs.push(e),
    });
    const proxyUrl = `http://127.0.0.1:${proxy.addresses[0]!.addr.port}`;
    const flows: Flow[] = [];
    (async () => {
      for await (const f of proxy.flows) flows.push(f);
    })();
    const origins: { close(): void }[] = [];
    const answer = (body: string, extra = "") =>
      encoder.encode(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n${extra}\r\n${body}`);
    try {
      // Like nginx's `return 200`: the answer goes out at the head, the body is read and dropped.
      const early = origin(async (conn) => {
        await readHead(conn);
        await conn.write(answer("early"));
        await drain(conn);
      });
      origins.push(early);

      await t.step("a 20 MB POST to an origin that answers before reading finishes", async () => {
        const r = await curl([
          "-x",
          proxyUrl,
          ...NO_EXPECT,
          "--data-binary",
          `@${upload}`,
          `http://127.0.0.1:${early.port}/post`,
        ]);
        assert.equal(r.code, 0, r.err);
        assert.equal(r.out, "early");
        const f = await waitFlow<HttpFlow>(flows, (f) => f.type === "http" && f.request.path === "/post");
        assert.equal(f.error, undefined);
        assert.deepEqual([f.response?.status, f.request.body.size], [200, UPLOAD]);
      });

      await t.step("a chunked 20 MB PUT to it finishes too", async () => {
        const r = await curl([
          "-x",
          proxyUrl,
          ...NO_EXPECT,
          "-T",
          upload,
          "-H",
          "Transfer-Encoding: chunked",
          `http://127.0.0.1:${early.port}/put`,
        ]);
        assert.equal(r.code, 0, r.err);
        assert.equal(r.out, "early");
        const f = await waitFlow<HttpFlow>(flows, (f) => f.type === "http" && f.request.path === "/put");
        assert.equal(f.error, undefined);
        assert.equal(f.request.body.size, UPLOAD);
      });

      await t.step("nginx's `return 200` answering a 20 MB POST and a chunked PUT: both finish", async () => {
        const nginx = await startNginx(dir);
        try {
          for (
            const args of [["--data-binary", `@${upload}`], [
              "-T",
              upload,
              "-H",
              "Transfer-Encoding: chunked",
            ]]
          ) {
            const r = await curl([
              "-x",
              proxyUrl,
              ...NO_EXPECT,
              ...args,
              `http://127.0.0.1:${nginx.port}/nginx`,
            ]);
            assert.equal(r.code, 0, r.err);
            assert.equal(r.out, "nginx\n");
            assert.ok(r.seconds < 10, `took ${r.seconds} s`);
          }
          const done = flows.filter((f) => f.type === "http" && f.request.path === "/nginx") as HttpFlow[];
          for (let i = 0; i < 100 && done.length < 2; i++) {
            await new Promise((r) => setTimeout(r, 25));
            done.splice(
              0,
              done.length,
              ...flows.filter((f) => f.type === "http" && f.request.path === "/nginx") as HttpFlow[],
            );
          }
          assert.deepEqual(done.map((f) => [f.response?.status, f.error]), [[200, undefined], [
            200,
            undefined,
          ]]);
        } finally {
          await nginx.stop();
        }
      });

      // Answers, closes its sending side, and keeps reading: the proxy must drop the rest itself.
      const earlyClose = origin(async (conn) => {
        await readHead(conn);
        await conn.write(answer("bye"));
        await conn.closeWrite();
        await drain(conn);
      });
      origins.push(earlyClose);

      await t.step("an origin that answers early and closes: the client still finishes", async () => {
        const r = await curl([
          "-x",
          proxyUrl,
          ...NO_EXPECT,
          "--data-binary",
          `@${upload}`,
          `http://127.0.0.1:${earlyClose.port}/closing`,
        ]);
        assert.equal(r.code, 0, r.err);
        assert.equal(r.out, "bye");
        const f = await waitFlow<HttpFlow>(flows, (f) => f.type === "http" && f.request.path === "/closing");
        assert.equal(f.error, undefined);
        assert.equal(f.request.body.size, UPLOAD);
      });

      // Takes the connection and never reads or answers.
      const stall = origin(async (conn) => {
        await new Promise((r) => setTimeout(r, 8000));
        conn.close();
      });
      origins.push(stall);

      await t.step(
        "an origin that never answers gets the client a 504 after the server timeout",
        async () => {
          const r = await curl([
            "-x",
            proxyUrl,
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            `http://127.0.0.1:${stall.port}/stall`,
          ]);
          assert.equal(r.out, "504");
          assert.ok(r.seconds < 5, `answered after ${r.seconds} s`);
          const f = await waitFlow<HttpFlow>(flows, (f) => f.type === "http" && f.request.path === "/stall");
          assert.match(f.error!.message, /sent no response for 1 s/);
        },
      );

      // Sends a head and part of the body, then nothing.
      const stallBody = origin(async (conn) => {
        await readHead(conn);
        await conn.write(encoder.encode("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nten bytes."));
        await new Promise((r) => setTimeout(r, 8000));
      });
      origins.push(stallBody);

      await t.step("an origin that stalls in its body: the client is reset after the timeout", async () => {
        const r = await curl(["-x", proxyUrl, `http://127.0.0.1:${stallBody.port}/stall-body`]);
        // A reset (56) where the socket allows one, else a close short of the length (18).
        assert.ok(r.code === 56 || r.code === 18, r.err);
        assert.ok(r.seconds < 5, `ended after ${r.seconds} s`);
        const f = await waitFlow<HttpFlow>(
          flows,
          (f) => f.type === "http" && f.request.path === "/stall-body",
        );
        assert.match(f.error!.message, /sent nothing for 1 s in the middle of the response body/);
      });

      // Resets the connection as soon as the request comes.
      const resetter = net.createServer((s) => {
        s.on("error", () => {});
        s.once("data", () => s.resetAndDestroy());
      });
      await new Promise<void>((r) => resetter.listen(0, "127.0.0.1", () => r()));
      const reset = { port: (resetter.address() as net.AddressInfo).port, close: () => resetter.close() };
      origins.push(reset);

      await t.step("an origin that resets gets the client a 502 naming it", async () => {
        const r = await curl(["-x", proxyUrl, `http://127.0.0.1:${reset.port}/reset`]);
        assert.equal(r.code, 0, r.err);
        assert.match(r.out, /^wirescope: server connection failed: .*reset.* before sending a response/i);
        const f = await waitFlow<HttpFlow>(flows, (f) => f.type === "http" && f.request.path === "/reset");
        assert.equal(f.response?.status, 502);
        assert.match(f.error!.message, /reset/i);
      });

      // Promises 100 bytes, sends 10, closes.
      const truncated = origin(async (conn) => {
        await readHead(conn);
        await conn.write(encoder.encode("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nten bytes."));
      });
      origins.push(truncated);

      await t.step("a truncated body ends for the client as it would without the proxy", async () => {
        const url = `http://127.0.0.1:${truncated.port}/truncated`;
        const direct = await curl([url]);
        const proxied = await curl(["-x", proxyUrl, url]);
        // curl's 18: "transfer closed with 90 bytes remaining to read".
        assert.deepEqual([proxied.code, proxied.out], [direct.code, direct.out]);
        assert.equal(proxied.code, 18);
        const f = await waitFlow<HttpFlow>(
          flows,
          (f) => f.type === "http" && f.request.path === "/truncated",
        );
        assert.match(f.error!.message, /server closed the connection in the middle of the response body/);
      });
    } finally {
      for (const o of origins) o.close();
      await proxy.close(100);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "DNS resolvers that fail or never answer: the client gets SERVFAIL and the flow says why",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const resolvers: Deno.DatagramConn[] = [];
    /** A UDP resolver on loopback answering every query with `answer(query)` (null: silence). */
    const resolver = (answer: (query: Uint8Array) => Uint8Array | null) => {
      const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
      resolvers.push(socket);
      (async () => {
        for (;;) {
          const [query, from] = await socket.receive();
          const reply = answer(query);
          if (reply) await socket.send(reply, from);
        }
      })().catch(() => {});
      return { hostname: "127.0.0.1", port: (socket.addr as Deno.NetAddr).port };
    };
    const servfail = resolver((q) => buildDnsErrorResponse(q, 2));
    const silent = resolver(() => null);
    const nxdomain = resolver((q) => buildDnsErrorResponse(q, 3));

    /** Sends one query through a relay using `servers`; returns the reply and the flow. */
    const ask = async (servers: { hostname: string; port: number }[], id: number) => {
      const bus = new FlowBus();
      const flows: DnsFlow[] = [];
      bus.subscribe((e) => e.type === "end" && e.flow.type === "dns" && flows.push(e.flow));
      const replies: RelayDatagram[] = [];
      const relay = new UdpRelay({
        bus,
        dnsServers: servers,
        reply: (d) => Promise.resolve(void replies.push(d)),
        newId: () => `dns-${id}`,
        dnsTimeout: 300,
        bodyLimit: 1024,
        maxMessages: 10,
      });
      const started = performance.now();
      relay.handle(
        {
          data: buildDnsQuery("broken.test", 1, id),
          src: { hostname: "10.0.0.2", port: 5353 },
          dst: { hostname: "10.0.0.53", port: 53 },
        },
        { address: { hostname: "10.0.0.2", port: 5353 }, mode: "wireguard" },
      );
      for (let i = 0; i < 100 && flows.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      const seconds = (performance.now() - started) / 1000;
      const stats = relay.stats();
      relay.close();
      assert.equal(replies.length, 1, "one answer reached the client");
      return { answer: parseDnsMessage(replies[0]!.data), flow: flows[0]!, seconds, stats };
    };

    try {
      await t.step("a resolver answering SERVFAIL: the client gets that SERVFAIL", async () => {
        const r = await ask([servfail], 101);
        assert.deepEqual([r.answer.id, r.answer.rcodeName], [101, "SERVFAIL"]);
        assert.match(r.flow.error!.message, /answered SERVFAIL/);
        assert.equal(r.stats.dnsFailures, 1);
      });

      await t.step("a resolver that never answers: SERVFAIL after the DNS timeout", async () => {
        const r = await ask([silent], 102);
        assert.deepEqual([r.answer.id, r.answer.rcodeName], [102, "SERVFAIL"]);
        assert.match(r.flow.error!.message, /timed out after 300 ms/);
        assert.ok(r.seconds < 2, `answered after ${r.seconds} s`);
      });

      await t.step("after a SERVFAIL the next resolver is asked, and its answer wins", async () => {
        const r = await ask([servfail, nxdomain], 103);
        assert.deepEqual([r.answer.id, r.answer.rcodeName], [103, "NXDOMAIN"]);
        assert.equal(r.flow.error, undefined);
        assert.equal(r.flow.resolver?.port, nxdomain.port);
      });
    } finally {
      for (const s of resolvers) s.close();
    }
  },
});
