/**
 * Connection load through the whole proxy in WireGuard mode: one real wireguard-go peer
 * (tests/rig.ts) holds 2,000 TCP connections open at once to an echo server in the origin
 * namespace (tests/origin_ns.ts), then uses them all; then 1,000 HTTPS requests at once, each on
 * its own intercepted TLS connection, to nginx. Every byte must arrive intact, every connection
 * must be recorded as a flow without error, and none may be refused by the default caps (the
 * wasm core's per-peer caps and the proxy's per-client and total caps). Needs root.
 */
import assert from "node:assert/strict";
import { generatePrivateKey } from "../mod.ts";
import { startProxy } from "../src/proxy/proxy.ts";
import type { Flow } from "../src/flows/flow.ts";
import { Rig, type RigClient } from "./rig.ts";
import { OriginNamespace } from "./origin_ns.ts";

const LOAD_CLIENT = new URL("./load_client.ts", import.meta.url).pathname;
/**
 * The TCP connections are opened 250 at a time (each wave once the previous one got its echo),
 * then held open together. All 2,000 at one instant made the proxy dial the origin's one echo
 * process 2,000 times at once; its listen queue (511) overflowed, and on this shared 2-core
 * machine 400–850 of the proxy's dials outlasted its 10 s connect timeout (the client saw
 * resets, the flows say why), where the same burst dialed directly from the host completes in
 * about 1.2 s.
 */
const TCP_CONNECTIONS = 2000, TCP_BYTES = 16 * 1024, TCP_WAVE = 250;
const HTTPS_REQUESTS = 1000, BODY_BYTES = 32 * 1024;

interface LoadResult {
  opened: number;
  ok: number;
  errorCount: number;
  errors: string[];
  connectSeconds: number;
  seconds: number;
}

async function load(client: RigClient, args: string[], seconds: number): Promise<LoadResult> {
  const out = await client.exec([
    "env",
    // No update check: nothing but the test's own traffic goes through the tunnel.
    "DENO_NO_UPDATE_CHECK=1",
    "timeout",
    String(seconds),
    Deno.execPath(),
    "run",
    "-A",
    "--quiet",
    LOAD_CLIENT,
    ...args,
  ]);
  return JSON.parse(out.trim().split("\n").pop()!);
}

/** Waits (bounded) until `n` flows match. */
async function flowsWhere(
  flows: Flow[],
  match: (f: Flow) => boolean,
  n: number,
  ms = 20_000,
): Promise<Flow[]> {
  const deadline = Date.now() + ms;
  let found = flows.filter(match);
  while (found.length < n && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    found = flows.filter(match);
  }
  return found;
}

/** Counts of flows by type, port, path, passthrough and error, for failure messages. */
function kinds(flows: Flow[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const f of flows) {
    const k = [
      f.type,
      f.server.address.port,
      f.type === "http" ? `${f.request.path} ${f.response?.status ?? "-"}` : "",
      f.tls?.passthrough ? "passthrough" : "",
      f.error?.message.slice(0, 80) ?? "",
    ].join(" ");
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

/** Runs `body` while sampling `sample()` every 20 ms; returns the body's result and the peak. */
async function withPeak<T>(sample: () => number, body: () => Promise<T>): Promise<[T, number]> {
  let peak = sample();
  const timer = setInterval(() => peak = Math.max(peak, sample()), 20);
  try {
    return [await body(), peak];
  } finally {
    clearInterval(timer);
  }
}

const failure = (f: Flow) =>
  f.error ? `${f.type} ${f.server.address.hostname}:${f.server.address.port}: ${f.error.message}` : "";

Deno.test({
  name: "2,000 concurrent TCP connections and 1,000 concurrent HTTPS requests from one WireGuard peer " +
    "through the proxy: all intact, no error flows, no connection refused",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const origin = await OriginNamespace.create(["origin.test"], BODY_BYTES);
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-load-" });
    const logs: string[] = [];
    const proxy = await startProxy({
      modes: [{ kind: "wireguard", port: 0, privateKey: generatePrivateKey(), peers: [] }],
      confdir,
      upstreamCa: [origin.caFile],
      // Names are resolved by the origin's test resolver: no query leaves the rig.
      dnsServers: [{ hostname: origin.address, port: 53 }],
      onLog: ({ level, message }) => {
        if (level !== "info" && level !== "debug") logs.push(`${level}: ${message}`);
      },
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

      await t.step(`${TCP_CONNECTIONS} TCP connections open at once, all echo intact`, async () => {
        const [r, peak] = await withPeak(
          () => proxy.stats().activeConnections,
          () =>
            load(client, ["tcp", o, "7", String(TCP_CONNECTIONS), String(TCP_BYTES), String(TCP_WAVE)], 90),
        );
        // Every connection was open at the proxy at one moment (the client opens all, then uses them).
        assert.ok(peak >= TCP_CONNECTIONS, `at most ${peak} open at once`);
        assert.deepEqual(
          { opened: r.opened, ok: r.ok, errors: r.errors },
          { opened: TCP_CONNECTIONS, ok: TCP_CONNECTIONS, errors: [] },
          `${JSON.stringify(r)}; proxy ${JSON.stringify(proxy.stats())}; tunnel ${
            JSON.stringify(wg.stats())
          }`,
        );
        console.log(`tcp: ${JSON.stringify(r)}, peak open at the proxy ${peak}`);
        const tcp = await flowsWhere(
          flows,
          (f) => f.type === "tcp" && f.server.address.port === 7,
          TCP_CONNECTIONS,
        );
        assert.equal(tcp.length, TCP_CONNECTIONS);
        assert.deepEqual(tcp.map(failure).filter(Boolean), []);
        for (const f of tcp) {
          if (f.type !== "tcp") continue;
          assert.equal(f.bytesFromClient, TCP_BYTES);
          assert.equal(f.bytesFromServer, TCP_BYTES);
        }
      });

      await t.step(`${HTTPS_REQUESTS} HTTPS requests at once, all intercepted and intact`, async () => {
        const [r, peak] = await withPeak(() => proxy.stats().activeConnections, () =>
          load(client, [
            "https",
            o,
            "443",
            String(HTTPS_REQUESTS),
            "origin.test",
            proxy.ca.paths.cert,
            "/big.bin",
            origin.bigSha256,
            String(BODY_BYTES),
          ], 90));
        assert.deepEqual(
          { opened: r.opened, ok: r.ok, errors: r.errors },
          { opened: HTTPS_REQUESTS, ok: HTTPS_REQUESTS, errors: [] },
          `${JSON.stringify(r)}; proxy ${JSON.stringify(proxy.stats())}; tunnel ${
            JSON.stringify(wg.stats())
          }`,
        );
        console.log(`https: ${JSON.stringify(r)}, peak open at the proxy ${peak}`);
        const http = await flowsWhere(
          flows,
          (f) => f.type === "http" && f.request.path === "/big.bin",
          HTTPS_REQUESTS,
        );
        assert.equal(
          http.length,
          HTTPS_REQUESTS,
          `flows of /big.bin ${http.length}; proxy ${JSON.stringify(proxy.stats())}; tunnel connections ` +
            `active ${wg.stats().connectionsActive}; flows by kind ${JSON.stringify(kinds(flows))}`,
        );
        for (const f of http) {
          if (f.type !== "http") continue;
          assert.equal(f.response?.status, 200);
          assert.equal(f.response?.body.size, BODY_BYTES);
          assert.equal(f.tls?.sni, "origin.test");
        }
      });

      await t.step("no flow with an error, no connection refused, no other warning or error logged", () => {
        assert.deepEqual(flows.map(failure).filter(Boolean), []);
        const limits = proxy.stats().limits;
        assert.equal(limits.refusedByCap, 0, JSON.stringify(limits));
        for (const [k, v] of Object.entries(limits)) if (/^(refused|closed)/.test(k)) assert.equal(v, 0, k);
        const wgStats = wg.stats();
        // A burst of 2,000 SYNs meets the core's cap on connections not yet established per peer:
        // the SYNs beyond it are dropped (logged) and the client's kernel sends them again.
        // And the client's interface sends IPv6 link-local packets (router solicitations), which
        // are not among its allowed addresses: dropped and logged.
        const expected = [
          /connections not yet established: dropping SYN/,
          /inner source fe80:[0-9a-f:]* is not among its allowed addresses/,
        ];
        assert.deepEqual(logs.filter((l) => !expected.some((e) => e.test(l))), []);
        console.log(
          `limits: ${JSON.stringify(limits)}; expected warning lines: ${logs.length}; wireguard: ` +
            JSON.stringify(wgStats),
        );
      });
    } finally {
      await proxy.close(500);
      await rig?.close();
      await origin.close();
      await Deno.remove(confdir, { recursive: true });
    }
  },
});
