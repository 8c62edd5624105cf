/**
 * gRPC through the proxy end to end: grpcio (the reference C-core implementation, from PyPI into
 * `.venv-grpc/` by scripts/setup.sh) as both client and server. The server (tests/grpc/server.py)
 * runs in the origin namespace over TLS with the origin's test certificate; the client
 * (tests/grpc/client.py) runs in a wireguard-go client's namespace, trusts only wirescope's CA and
 * makes a unary call, a bidirectional stream of 100 messages each way in lockstep (each sent once
 * the reply to the one before arrived), a server stream of 2,000 messages and a call that fails
 * with NOT_FOUND, plus one gzip-compressed both ways. It checks every reply byte for byte; this test
 * checks the flows: HTTP/2, `application/grpc`, message counts and sizes each way, the status
 * from the trailers, and that the long server stream left a bounded flow. Then the same calls go
 * through the explicit proxy (grpcio's `grpc.http_proxy`, an HTTP CONNECT). Needs root.
 */
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { generatePrivateKey } from "../mod.ts";
import { startProxy } from "../src/proxy/proxy.ts";
import type { Flow, HttpFlow } from "../src/flows/flow.ts";
import { MAX_GRPC_SIZES } from "../src/flows/grpc.ts";
import { flowToHarEntry } from "../src/flows/har.ts";
import { formatFlowLine } from "../src/cli/flow_line.ts";
import { Rig, sh } from "./rig.ts";
import { OriginNamespace } from "./origin_ns.ts";

const ROOT = fromFileUrl(new URL("..", import.meta.url));
const PYTHON = `${ROOT}.venv-grpc/bin/python`;
const SERVER = fromFileUrl(new URL("./grpc/server.py", import.meta.url));
const CLIENT = fromFileUrl(new URL("./grpc/client.py", import.meta.url));
const UNREACHABLE = fromFileUrl(new URL("./grpc/unreachable_client.py", import.meta.url));
const GRPC_PORT = 50051;
const BODY_LIMIT = 64 * 1024;
/** What client.py sends and asks for (kept in step with it). */
const STREAM_COUNT = 2000;
const STREAM_SIZE = 1000;

interface ClientResult {
  unary: { sent: number[]; received: number[] };
  bidi: { sent: number[]; received: number[] };
  stream: { sent: number[]; received: number; size: number };
  missing: { code: number; details: string };
  compressed: { sent: number[]; received: number[] };
  failed: string[];
}

async function grpcioInstalled(): Promise<boolean> {
  const out = await new Deno.Command(PYTHON, { args: ["-c", "import grpc"], stdout: "null", stderr: "null" })
    .output()
    .catch(() => null);
  return out?.success ?? false;
}

/** Waits (bounded) for the ended flows of the four calls made from one client mode. */
async function callFlows(flows: Flow[], mode: "wireguard" | "regular"): Promise<Map<string, HttpFlow>> {
  const methods = ["Unary", "Bidi", "ServerStream", "Missing", "Compressed"];
  for (let i = 0; i < 200; i++) {
    const found = new Map<string, HttpFlow>();
    for (const f of flows) {
      if (f.type !== "http" || f.client.mode !== mode || f.timestampEnd === undefined) continue;
      const method = /^\/wstest\.Echo\/(\w+)$/.exec(f.request.path)?.[1];
      if (method !== undefined) found.set(method, f);
    }
    if (methods.every((m) => found.has(m))) return found;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`not every gRPC call has an ended ${mode} flow`);
}

function header(headers: [string, string][] | undefined, name: string): string | undefined {
  return headers?.find(([n]) => n.toLowerCase() === name)?.[1];
}

/** The checks shared by both modes: the flows say what the client says it sent and received. */
function checkFlows(calls: Map<string, HttpFlow>, result: ClientResult): void {
  for (const [method, f] of calls) {
    assert.equal(f.request.httpVersion, "HTTP/2.0", method);
    assert.equal(f.request.method, "POST", method);
    assert.match(header(f.request.headers, "content-type") ?? "", /^application\/grpc/, method);
    assert.match(header(f.response?.headers, "content-type") ?? "", /^application\/grpc/, method);
    assert.equal(f.error, undefined, `${method}: ${f.error?.message}`);
    if (method !== "Compressed") assert.equal(f.request.grpc?.compressed, 0, method);
    assert.equal(f.request.grpc?.incomplete, undefined, method);
    assert.equal(f.response?.grpc?.incomplete, undefined, method);
  }
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

  const unary = calls.get("Unary")!;
  assert.deepEqual(unary.request.grpc, { messages: 1, bytes: 1500, sizes: result.unary.sent, compressed: 0 });
  assert.deepEqual(unary.response?.grpc, {
    messages: 1,
    bytes: 1506,
    sizes: result.unary.received,
    compressed: 0,
    status: 0,
  });
  assert.equal(header(unary.response?.trailers, "grpc-status"), "0");

  const bidi = calls.get("Bidi")!;
  assert.equal(bidi.request.grpc?.messages, 100);
  assert.deepEqual(bidi.request.grpc?.sizes, result.bidi.sent);
  assert.equal(bidi.request.grpc?.bytes, sum(result.bidi.sent));
  assert.equal(bidi.response?.grpc?.messages, 100);
  assert.deepEqual(bidi.response?.grpc?.sizes, result.bidi.received);
  assert.equal(bidi.response?.grpc?.status, 0);
  // Every byte of the bodies is a prefix or a message.
  assert.equal(bidi.request.body.size, 5 * 100 + sum(result.bidi.sent));

  // The long stream: counted to the end, with a bounded list of sizes and a bounded body prefix.
  const stream = calls.get("ServerStream")!;
  const g = stream.response!.grpc!;
  assert.equal(result.stream.received, STREAM_COUNT);
  assert.equal(g.messages, STREAM_COUNT);
  assert.equal(g.bytes, STREAM_COUNT * STREAM_SIZE);
  assert.equal(g.sizes.length, MAX_GRPC_SIZES);
  assert.ok(g.sizes.every((s) => s === STREAM_SIZE));
  assert.equal(g.status, 0);
  assert.equal(stream.response!.body.size, STREAM_COUNT * (STREAM_SIZE + 5));
  assert.equal(stream.response!.body.content.byteLength, BODY_LIMIT);
  assert.equal(stream.response!.body.truncated, true);

  // gzip both ways: the flags are counted; sizes are what went over the wire (compressed).
  const compressed = calls.get("Compressed")!;
  assert.equal(compressed.request.grpc?.messages, 1);
  assert.equal(compressed.request.grpc?.compressed, 1);
  assert.equal(compressed.response?.grpc?.messages, 1);
  assert.equal(compressed.response?.grpc?.compressed, 1);
  assert.ok(compressed.request.grpc!.bytes < result.compressed.sent[0]! / 10);
  assert.equal(compressed.response?.grpc?.status, 0);

  const missing = calls.get("Missing")!;
  assert.equal(result.missing.code, 5);
  assert.equal(missing.response?.grpc?.status, 5);
  assert.equal(missing.response?.grpc?.statusMessage, "no such key: k1");
  assert.equal(missing.response?.grpc?.messages, 0);
  assert.equal(missing.request.grpc?.messages, 1);
}

Deno.test({
  name:
    "gRPC (grpcio) unary, bidirectional and server streams through a WireGuard client and the explicit proxy",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    if (!await grpcioInstalled()) throw new Error(`no grpcio at ${PYTHON}: run scripts/setup.sh`);
    const origin = await OriginNamespace.create(["origin.test"], 1024);
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-confdir-" });
    let proxy: Awaited<ReturnType<typeof startProxy>> | null = null;
    let rig: Rig | null = null;
    try {
      const certDir = dirname(origin.caFile);
      const server = origin.spawn([
        PYTHON,
        SERVER,
        origin.address,
        String(GRPC_PORT),
        `${certDir}/server.pem`,
        `${certDir}/server.key`,
      ]);
      const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const first = await Promise.race([
        reader.read(),
        new Promise<null>((r) => setTimeout(() => r(null), 20_000)),
      ]);
      reader.releaseLock();
      if (!first || first.done || !first.value.includes("ready")) {
        throw new Error("gRPC server did not start");
      }

      proxy = await startProxy({
        modes: [
          { kind: "wireguard", port: 0, privateKey: generatePrivateKey(), peers: [] },
          { kind: "regular", port: 0 },
        ],
        confdir,
        upstreamCa: [origin.caFile],
        bodyLimit: BODY_LIMIT,
        onLog: () => {},
      });
      const flows: Flow[] = [];
      (async () => {
        for await (const f of proxy!.flows) flows.push(f);
      })();
      const wg = proxy.wireguard[0]!;
      rig = await Rig.create(1, wg.publicKey, wg.addr.port, (publicKey) => wg.addPeer({ publicKey }));
      const client = rig.clients[0]!;
      const target = `${origin.address}:${GRPC_PORT}`;
      const ca = proxy.ca.paths.cert;

      await t.step("through wireguard-go: replies byte-exact, flows with messages and status", async () => {
        const out = await client.exec(["timeout", "60", PYTHON, CLIENT, target, ca, "origin.test"]);
        const result = JSON.parse(out) as ClientResult;
        assert.deepEqual(result.failed, []);
        const calls = await callFlows(flows, "wireguard");
        checkFlows(calls, result);
        for (const f of calls.values()) assert.equal(f.client.peer?.publicKey, client.publicKey);
        assert.equal(calls.get("Unary")!.tls?.sni, "origin.test");
        const line = formatFlowLine(calls.get("Bidi")!);
        assert.match(line, / HTTP\/2\.0 << 200 .* gRPC 100→100 msgs status 0 OK$/);
        assert.match(
          formatFlowLine(calls.get("Missing")!),
          /gRPC 1→0 msgs status 5 NOT_FOUND: no such key: k1$/,
        );
        const har = flowToHarEntry(calls.get("ServerStream")!);
        assert.equal(har._grpc?.response?.messages, STREAM_COUNT);
        // The 2,000-message stream's whole flow, as written to a flow file, stays small.
        const encoded = JSON.stringify(har).length;
        console.log(
          `server stream of ${STREAM_COUNT} × ${STREAM_SIZE} B (${
            STREAM_COUNT * (STREAM_SIZE + 5)
          } B on the wire): flow kept ${
            calls.get("ServerStream")!.response!.body.content.byteLength
          } B of body, ${har._grpc?.response?.sizes.length} sizes; HAR entry ${encoded} chars`,
        );
        assert.ok(encoded < 3 * BODY_LIMIT, `HAR entry of ${encoded} chars`);
      });

      await t.step("an unreachable upstream (h2c): the client gets UNAVAILABLE with the reason", async () => {
        // Nothing listens on this port of the origin: the proxy answers the call itself, in gRPC's
        // trailers-only form, so grpcio reports the proxy's reason rather than an HTTP 502.
        const out = await client.exec([
          "timeout",
          "30",
          PYTHON,
          UNREACHABLE,
          `${origin.address}:${GRPC_PORT + 9}`,
        ]);
        const result = JSON.parse(out) as { code: number; details: string };
        assert.equal(result.code, 14, out);
        assert.match(result.details, /^wirescope: cannot connect to .*:50060: /);
        let f: HttpFlow | undefined;
        for (let i = 0; i < 100 && !f; i++) {
          f = flows.find((x): x is HttpFlow =>
            x.type === "http" && x.server.address.port === GRPC_PORT + 9 && x.timestampEnd !== undefined
          );
          if (!f) await new Promise((r) => setTimeout(r, 50));
        }
        assert.ok(f, "a flow for the call");
        assert.equal(f.response?.status, 200);
        assert.equal(f.response?.grpc?.status, 14);
        assert.match(f.error?.message ?? "", /cannot connect/);
      });

      await t.step("through the explicit proxy (HTTP CONNECT): the same calls and flows", async () => {
        const port = proxy!.addresses.find((a) => a.kind === "regular")!.addr.port;
        const out = await sh([
          "timeout",
          "60",
          PYTHON,
          CLIENT,
          target,
          ca,
          "origin.test",
          `127.0.0.1:${port}`,
        ]);
        const result = JSON.parse(out) as ClientResult;
        assert.deepEqual(result.failed, []);
        checkFlows(await callFlows(flows, "regular"), result);
      });
    } finally {
      await proxy?.close(500);
      await rig?.close();
      await origin.close();
      await Deno.remove(confdir, { recursive: true });
    }
  },
});
