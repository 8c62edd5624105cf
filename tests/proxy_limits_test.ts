/**
 * Limits and access through both modes on loopback: silent sockets and half-sent heads are closed
 * after the configured timeouts, the per-client cap refuses with a log line and a counter, open
 * descriptors come back to where they were, an exhausted descriptor table does not end the
 * accept loop, and this host's own services are not reachable unless allowed. The WireGuard client
 * is a wasm core in this process (tests/wg_client.ts): no namespaces needed.
 */
import assert from "node:assert/strict";
import { generatePrivateKey } from "../src/core/keys.ts";
import type { Flow, HttpFlow, LogEvent, TcpFlow, UdpFlow } from "../src/flows/flow.ts";
import { type ProxyHandle, type ProxyOptions, startProxy } from "../src/proxy/proxy.ts";
import { type ClientConn, WgClient } from "./wg_client.ts";
import { socketsOnPorts } from "./sockets.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(done: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!done()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Resolves when the other side closes `conn` (end or reset), or with "open" after `ms`. */
async function closedByPeer(conn: Deno.Conn, ms: number): Promise<"closed" | "open"> {
  const buf = new Uint8Array(4096);
  const end = Date.now() + ms;
  for (;;) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const left = end - Date.now();
    if (left <= 0) return "open";
    const r = await Promise.race([
      conn.read(buf).then((n) => (n === null ? "closed" : "data"), () => "closed"),
      new Promise<"open">((res) => (timer = setTimeout(() => res("open"), left))),
    ]);
    clearTimeout(timer);
    if (r !== "data") return r as "closed" | "open";
  }
}

/** A TCP server on loopback that accepts and never speaks; counts what it accepted. */
function silentServer() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of listener) conns.push(c);
  })().catch(() => {});
  return {
    port: listener.addr.port,
    conns,
    async close() {
      listener.close();
      await accepting;
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

async function withProxy(
  options: Partial<ProxyOptions> & Pick<ProxyOptions, "modes">,
  fn: (proxy: ProxyHandle, flows: Flow[], logs: LogEvent[]) => Promise<void>,
): Promise<void> {
  const confdir = await Deno.makeTempDir({ prefix: "wirescope-limits-" });
  const logs: LogEvent[] = [];
  const proxy = await startProxy({ confdir, dnsServers: [], onLog: (e) => logs.push(e), ...options });
  const flows: Flow[] = [];
  (async () => {
    for await (const f of proxy.flows) flows.push(f);
  })();
  try {
    await fn(proxy, flows, logs);
  } finally {
    await proxy.close(100);
    await Deno.remove(confdir, { recursive: true });
  }
}

Deno.test({
  name:
    "explicit proxy: 600 silent sockets and half-sent heads are closed by the head timeout; descriptors flat",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withProxy(
      { modes: [{ kind: "regular", port: 0 }], headTimeout: 400, idleTimeout: 60_000 },
      async (proxy, _flows, logs) => {
        const port = proxy.addresses[0]!.addr.port;
        const before = socketsOnPorts([port]);
        const conns: Deno.Conn[] = [];
        for (let i = 0; i < 600; i++) {
          const c = await Deno.connect({ hostname: "127.0.0.1", port });
          conns.push(c);
          if (i % 2 === 1) await c.write(enc.encode(`GET http://127.0.0.1:9/${i} HTTP/1.1\r\nHost: a\r\n`));
        }
        const started = Date.now();
        const outcomes = await Promise.all(conns.map((c) => closedByPeer(c, 5000)));
        const elapsed = Date.now() - started;
        assert.equal(
          outcomes.filter((o) => o === "open").length,
          0,
          "every connection was closed by the proxy",
        );
        assert.ok(elapsed < 5000, `all closed within ${elapsed} ms`);
        for (const c of conns) c.close();
        await until(() => proxy.stats().activeConnections === 0, 3000, "no open connections");
        const stats = proxy.stats();
        assert.equal(stats.limits.closedByHeadTimeout, 600);
        assert.equal(stats.limits.refusedByCap, 0);
        // The client ends are closed too now: what the proxy held is released.
        const after = socketsOnPorts([port]);
        assert.ok(after <= before, `sockets on the proxy's port: ${before} before, ${after} after`);
        const lines = logs.map((l) => l.message).join("\n");
        assert.match(lines, /request head incomplete after 0\.4 s \(head timeout/);
        assert.ok(
          logs.filter((l) => /head timeout/.test(l.message)).length <= 4,
          "the lines are rate-limited",
        );
      },
    );
  },
});

Deno.test({
  name: "explicit proxy: a silent CONNECT tunnel (raw TCP relay) is closed by the idle timeout and recorded",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = silentServer();
    try {
      await withProxy(
        {
          modes: [{ kind: "regular", port: 0 }],
          headTimeout: 400,
          idleTimeout: 2000,
          allowLocalDestinations: true,
        },
        async (proxy, flows) => {
          const port = proxy.addresses[0]!.addr.port;
          const conn = await Deno.connect({ hostname: "127.0.0.1", port });
          await conn.write(enc.encode(`CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\n\r\n`));
          const buf = new Uint8Array(1024);
          const n = await conn.read(buf);
          assert.match(dec.decode(buf.subarray(0, n ?? 0)), /^HTTP\/1\.1 200 /);
          const started = Date.now();
          assert.equal(await closedByPeer(conn, 6000), "closed");
          const elapsed = Date.now() - started;
          assert.ok(elapsed >= 1500 && elapsed < 5000, `closed after ${elapsed} ms`);
          conn.close();
          const flow = await waitFor(
            flows,
            (f): f is TcpFlow => f.type === "tcp" && f.server.address.port === origin.port,
          );
          assert.match(flow.error?.message ?? "", /idle timeout/);
          assert.equal(proxy.stats().limits.closedByIdleTimeout, 1);
        },
      );
    } finally {
      await origin.close();
    }
  },
});

Deno.test({
  name: "explicit proxy: the per-client cap refuses the N+1th connection with a log line and a counter",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("ok"));
    try {
      await withProxy(
        {
          modes: [{ kind: "regular", port: 0 }],
          headTimeout: 0,
          maxConnectionsPerClient: 5,
          allowLocalDestinations: true,
        },
        async (proxy, _flows, logs) => {
          const port = proxy.addresses[0]!.addr.port;
          const held: Deno.Conn[] = [];
          for (let i = 0; i < 5; i++) held.push(await Deno.connect({ hostname: "127.0.0.1", port }));
          await until(() => proxy.stats().activeConnections === 5, 3000, "five admitted");
          const extra = await Deno.connect({ hostname: "127.0.0.1", port });
          assert.equal(await closedByPeer(extra, 3000), "closed", "the sixth is refused");
          extra.close();
          assert.equal(proxy.stats().limits.refusedByCap, 1);
          const line = logs.find((l) => /refused a connection from 127\.0\.0\.1/.test(l.message));
          assert.ok(line, "a log line says so");
          assert.equal(line.level, "warn");
          assert.match(line.message, /5 connections open from this client, the per-client cap/);
          // The five still work, and a place frees up when one goes.
          await held[0]!.write(
            enc.encode(`GET http://127.0.0.1:${origin.addr.port}/ HTTP/1.1\r\nhost: a\r\n\r\n`),
          );
          const buf = new Uint8Array(4096);
          const n = await held[0]!.read(buf);
          assert.match(dec.decode(buf.subarray(0, n ?? 0)), /^HTTP\/1\.1 200 [^]*ok$/);
          held.pop()!.close();
          await until(() => proxy.stats().activeConnections === 4, 3000, "one released");
          const again = await Deno.connect({ hostname: "127.0.0.1", port });
          assert.equal(await closedByPeer(again, 300), "open", "admitted again");
          again.close();
          for (const c of held) c.close();
        },
      );
    } finally {
      await origin.shutdown();
    }
  },
});

Deno.test({
  name: "WireGuard: silent connections and half heads from a peer are closed by the idle and head timeouts",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = silentServer();
    try {
      await withProxy(
        {
          modes: [{
            kind: "wireguard",
            hostname: "127.0.0.1",
            port: 0,
            privateKey: generatePrivateKey(),
            peers: [],
          }],
          headTimeout: 400,
          idleTimeout: 2000,
          allowLocalDestinations: true,
        },
        async (proxy, flows) => {
          const wg = proxy.wireguard[0]!;
          const client = new WgClient(wg.addr.port, wg.publicKey);
          wg.addPeer({ publicKey: client.publicKey });
          try {
            const silent: ClientConn[] = [];
            const halfHeads: ClientConn[] = [];
            for (let i = 0; i < 20; i++) silent.push(client.connect("127.0.0.1", origin.port));
            for (let i = 0; i < 20; i++) halfHeads.push(client.connect("127.0.0.1", origin.port));
            const all = [...silent, ...halfHeads];
            await client.until(() => all.every((c) => c.established), 5000, "connections established");
            for (const c of halfHeads) client.write(c, enc.encode("GET /half HTTP/1.1\r\nHost: a\r\n"));
            const ended = (c: ClientConn) => c.closed !== null || c.fin;
            const started = Date.now();
            await client.until(() => halfHeads.every(ended), 3000, "half heads closed");
            const headsAfter = Date.now() - started;
            assert.ok(headsAfter < 2000, `half heads closed after ${headsAfter} ms`);
            assert.ok(silent.every((c) => !ended(c)), "silent ones are still within their idle time");
            await client.until(() => silent.every(ended), 6000, "silent connections closed");
            const stats = proxy.stats();
            assert.equal(stats.limits.closedByHeadTimeout, 20);
            assert.equal(stats.limits.closedByIdleTimeout, 20);
            await until(() => proxy.stats().activeConnections === 0, 3000, "no open connections");
            const relayed = flows.filter((f): f is TcpFlow => f.type === "tcp");
            assert.equal(relayed.length, 20);
            assert.ok(relayed.every((f) => /idle timeout/.test(f.error?.message ?? "")));
          } finally {
            await client.close();
          }
        },
      );
    } finally {
      await origin.close();
    }
  },
});

Deno.test({
  name:
    "WireGuard: the per-client cap is the core's per-peer cap: the N+1th SYN is reset, logged and counted",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = silentServer();
    try {
      await withProxy(
        {
          modes: [{
            kind: "wireguard",
            hostname: "127.0.0.1",
            port: 0,
            privateKey: generatePrivateKey(),
            peers: [],
          }],
          headTimeout: 0,
          maxConnectionsPerClient: 3,
          allowLocalDestinations: true,
        },
        async (proxy, _flows, logs) => {
          const wg = proxy.wireguard[0]!;
          const client = new WgClient(wg.addr.port, wg.publicKey);
          wg.addPeer({ publicKey: client.publicKey });
          try {
            const held = [0, 1, 2].map(() => client.connect("127.0.0.1", origin.port));
            await client.until(() => held.every((c) => c.established), 5000, "three established");
            await until(() => proxy.stats().activeConnections === 3, 3000, "three admitted");
            const extra = client.connect("127.0.0.1", origin.port);
            await client.until(() => extra.closed !== null, 3000, "the fourth refused");
            assert.equal(extra.closed, 1, "with a reset");
            assert.ok(held.every((c) => c.closed === null), "the others stay");
            // The per-client cap is also the core's per-peer cap: the data plane refuses the SYN
            // itself, before a connection reaches the proxy.
            assert.equal(wg.stats().refusedPeerLimit, 1);
            assert.equal(proxy.stats().limits.refusedByCap, 0);
            assert.ok(
              logs.some((l) => /peer .*: connection limit reached \(3 open\): refusing/.test(l.message)),
              logs.map((l) => l.message).join("\n"),
            );
          } finally {
            await client.close();
          }
        },
      );
    } finally {
      await origin.close();
    }
  },
});

async function waitFor<T extends Flow>(flows: Flow[], match: (f: Flow) => f is T, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const f = flows.find(match);
    if (f) return f;
    if (Date.now() > end) throw new Error(`no such flow among ${flows.length}`);
    await sleep(20);
  }
}

Deno.test({
  name: "this host's services are refused by default: loopback, names for it, own addresses; TCP and UDP",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // Listens on every address: loopback and this host's own (a non-loopback one when there is).
    const target = Deno.listen({ hostname: "0.0.0.0", port: 0 });
    const tport = target.addr.port;
    let accepted = 0;
    const accepting = (async () => {
      for await (const c of target) {
        accepted++;
        c.close();
      }
    })().catch(() => {});
    const udp = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const udpPort = (udp.addr as Deno.NetAddr).port;
    let udpReceived = 0;
    const receiving = (async () => {
      for (;;) {
        await udp.receive();
        udpReceived++;
      }
    })().catch(() => {});
    const own = Deno.networkInterfaces().find((i) => i.family === "IPv4" && !i.address.startsWith("127."))
      ?.address;
    try {
      await withProxy(
        {
          modes: [
            { kind: "regular", port: 0 },
            {
              kind: "wireguard",
              hostname: "127.0.0.1",
              port: 0,
              privateKey: generatePrivateKey(),
              peers: [],
            },
          ],
        },
        async (proxy, flows) => {
          const port = proxy.addresses[0]!.addr.port;
          const ask = async (head: string) => {
            const conn = await Deno.connect({ hostname: "127.0.0.1", port });
            await conn.write(enc.encode(head));
            let text = "";
            const buf = new Uint8Array(4096);
            const timer = setTimeout(() => conn.close(), 5000);
            try {
              for (;;) {
                const n = await conn.read(buf);
                if (n === null) break;
                text += dec.decode(buf.subarray(0, n));
              }
            } catch { /* closed */ }
            clearTimeout(timer);
            try {
              conn.close();
            } catch { /* closed */ }
            return text;
          };
          const get = await ask(`GET http://127.0.0.1:${tport}/ HTTP/1.1\r\nhost: a\r\n\r\n`);
          assert.match(get, /^HTTP\/1\.1 502 [^]*refused: a loopback address/);
          const viaName = await ask(`CONNECT localhost:${tport} HTTP/1.1\r\n\r\n`);
          assert.match(viaName, /^HTTP\/1\.1 502 [^]*localhost:\d+ \(.*\) refused: a loopback address/);
          const inetAton = await ask(`GET http://127.1:${tport}/ HTTP/1.1\r\nhost: a\r\n\r\n`);
          assert.match(inetAton, /^HTTP\/1\.1 502 [^]*refused/);
          const metadata = await ask(
            `GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nhost: a\r\n\r\n`,
          );
          assert.match(metadata, /^HTTP\/1\.1 502 [^]*link-local/);
          if (own) {
            const self = await ask(`GET http://${own}:${tport}/ HTTP/1.1\r\nhost: a\r\n\r\n`);
            assert.match(self, /^HTTP\/1\.1 502 [^]*an address of this host/);
          }
          const refusedHttp = await waitFor(
            flows,
            (f): f is HttpFlow => f.type === "http" && f.response?.status === 502,
          );
          assert.match(refusedHttp.error?.message ?? "", /refused/);

          // Through the tunnel: a TCP connection to loopback is reset, a UDP datagram dropped.
          const wg = proxy.wireguard[0]!;
          const client = new WgClient(wg.addr.port, wg.publicKey);
          wg.addPeer({ publicKey: client.publicKey });
          try {
            const conn = client.connect("127.0.0.1", tport);
            await client.until(() => conn.established, 5000, "tunnel connection");
            client.write(conn, enc.encode("GET / HTTP/1.1\r\nhost: a\r\n\r\n"));
            await client.until(() => conn.closed !== null || conn.fin, 5000, "refusal");
            assert.match(dec.decode(new Uint8Array(conn.received)), /^HTTP\/1\.1 502 [^]*loopback/);
            const ssh = client.connect("127.0.0.1", 22);
            await client.until(() => ssh.closed !== null, 5000, "reset of a server-first port");
            assert.equal(ssh.closed, 1);
            await waitFor(
              flows,
              (f): f is TcpFlow =>
                f.type === "tcp" && f.server.address.port === 22 &&
                /refused: a loopback/.test(f.error?.message ?? ""),
            );
            client.sendUdp(
              5000,
              { hostname: "127.0.0.1", port: udpPort },
              enc.encode("hello"),
            );
            client.sendUdp(
              5000,
              { hostname: "127.0.0.1", port: udpPort },
              enc.encode("again"),
            );
            const udpFlow = await waitFor(
              flows,
              (f): f is UdpFlow => f.type === "udp" && f.server.address.port === udpPort,
            );
            assert.match(udpFlow.error?.message ?? "", /refused: a loopback address/);
            await until(() => proxy.stats().udp.blocked === 2, 3000, "both datagrams counted");
          } finally {
            await client.close();
          }
          assert.equal(accepted, 0, "no connection reached the blocked service");
          assert.equal(udpReceived, 0, "no datagram reached it");
          assert.ok(proxy.stats().blockedDestinations >= 5);
        },
      );
    } finally {
      target.close();
      udp.close();
      await accepting;
      await receiving;
    }
  },
});

Deno.test({
  name: "explicit proxy: after the descriptors ran out (EMFILE), the accept loop recovers and logs it",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("alive"));
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-emfile-" });
    const script = `
      import { startProxy } from ${JSON.stringify(new URL("../src/proxy/proxy.ts", import.meta.url).href)};
      const proxy = await startProxy({
        modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
        confdir: ${JSON.stringify(confdir)},
        dnsServers: [],
        allowLocalDestinations: true,
        headTimeout: 0,
        maxConnections: 0,
        maxConnectionsPerClient: 0,
        onLog: (e) => console.error(e.level + ": " + e.message),
      });
      console.log("port " + proxy.addresses[0].addr.port);
      await proxy.closed;
    `;
    // 64 descriptors: the proxy runs out after a few dozen connections.
    const child = new Deno.Command("sh", {
      args: ["-c", `ulimit -n 64 && exec "${Deno.execPath()}" eval --unstable-net "$0"`, script],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let stderr = "";
    const errReading = (async () => {
      for await (const chunk of child.stderr) stderr += dec.decode(chunk);
    })();
    const out = child.stdout.getReader();
    const kill = setTimeout(() => child.kill("SIGKILL"), 60_000);
    const conns: Deno.Conn[] = [];
    try {
      let text = "";
      while (!/port (\d+)/.test(text)) {
        const { value, done } = await out.read();
        if (done) throw new Error(`the proxy did not start: ${stderr}`);
        text += dec.decode(value);
      }
      const port = Number(/port (\d+)/.exec(text)![1]);
      const request = async () => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        try {
          await conn.write(
            enc.encode(`GET http://127.0.0.1:${origin.addr.port}/ HTTP/1.1\r\nhost: a\r\n\r\n`),
          );
          const buf = new Uint8Array(4096);
          let text = "";
          const end = Date.now() + 5000;
          while (!/alive$/.test(text) && Date.now() < end) {
            let timer: ReturnType<typeof setTimeout> | undefined;
            const n = await Promise.race([
              conn.read(buf),
              new Promise<null>((r) => (timer = setTimeout(() => r(null), Math.max(1, end - Date.now())))),
            ]);
            clearTimeout(timer);
            if (n === null) break;
            text += dec.decode(buf.subarray(0, n));
          }
          return text;
        } finally {
          conn.close();
        }
      };
      assert.match(await request(), /alive$/);
      // The kernel completes connections into the backlog whether or not the proxy can accept them.
      for (let i = 0; i < 100 && !/cannot accept/.test(stderr); i++) {
        conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
        await sleep(10);
      }
      await until(() => /cannot accept/.test(stderr), 5000, "an accept error in the proxy's log");
      assert.match(
        stderr,
        /cannot accept connections on TCP 127\.0\.0\.1:\d+: .*(open files|EMFILE|os error 24)/i,
      );
      for (const c of conns.splice(0)) c.close();
      // Within a second of backoff it accepts again.
      let answer = "";
      for (let i = 0; i < 20 && !/alive$/.test(answer); i++) {
        answer = await request().catch((e) => String(e));
        if (!/alive$/.test(answer)) await sleep(250);
      }
      assert.match(answer, /alive$/, `no answer after the flood; proxy log:\n${stderr.slice(-2000)}`);
    } finally {
      for (const c of conns) c.close();
      clearTimeout(kill);
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
      await errReading.catch(() => {});
      await origin.shutdown();
      await Deno.remove(confdir, { recursive: true });
    }
  },
});
