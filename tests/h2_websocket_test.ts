/**
 * WebSocket over HTTP/2 (RFC 8441 extended CONNECT) through the explicit proxy, with Node's
 * HTTP/2 client and server (Debian's /usr/bin/node; Deno's node:http2 is not used as an origin):
 * the proxy offers SETTINGS_ENABLE_CONNECT_PROTOCOL to the client because the upstream offered
 * it, relays the `:protocol websocket` stream's DATA both ways as a tunnel, and records one flow
 * (method CONNECT, `protocol: "websocket"`, the bytes of each direction as its bodies).
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { startProxy } from "../src/proxy/proxy.ts";
import type { Flow, HttpFlow } from "../src/flows/flow.ts";

const NODE = "/usr/bin/node";
const ORIGIN = fileURLToPath(new URL("./h2ws/origin.mjs", import.meta.url));
const CLIENT = fileURLToPath(new URL("./h2ws/client.mjs", import.meta.url));
const MESSAGES = 20;

Deno.test({
  name: "WebSocket over h2 (RFC 8441): Node's extended CONNECT is relayed through the proxy and recorded",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = new Deno.Command(NODE, {
      args: [ORIGIN],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    })
      .spawn();
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-h2ws-" });
    const proxy = await startProxy({
      modes: [{ kind: "regular", port: 0 }],
      confdir,
      dnsServers: [],
      allowLocalDestinations: true,
      onLog: () => {},
    });
    const flows: Flow[] = [];
    (async () => {
      for await (const f of proxy.flows) flows.push(f);
    })();
    try {
      const reader = origin.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const first = await Promise.race([
        reader.read(),
        new Promise<null>((r) => setTimeout(() => r(null), 10_000)),
      ]);
      reader.releaseLock();
      const originPort = Number(first?.value?.trim());
      assert.ok(originPort > 0, `origin did not start: ${first?.value}`);
      const target = `127.0.0.1:${originPort}`;

      const out = await new Deno.Command(NODE, {
        args: [CLIENT, String(proxy.addresses[0]!.addr.port), target, String(MESSAGES)],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      const result = JSON.parse(text) as { ok: boolean; status: number; echoes: string[]; error?: string };
      assert.equal(result.ok, true, text + new TextDecoder().decode(out.stderr));
      assert.equal(result.status, 200);
      assert.deepEqual(result.echoes, Array.from({ length: MESSAGES }, (_, i) => `echo:message ${i}`));

      let flow: HttpFlow | undefined;
      for (let i = 0; i < 200 && !flow; i++) {
        flow = flows.find((f): f is HttpFlow =>
          f.type === "http" && f.request.method === "CONNECT" && f.timestampEnd !== undefined
        );
        if (!flow) await new Promise((r) => setTimeout(r, 25));
      }
      assert.ok(flow, "a flow for the tunnel");
      assert.equal(flow.error, undefined, flow.error?.message);
      assert.equal(flow.request.protocol, "websocket");
      assert.equal(flow.request.httpVersion, "HTTP/2.0");
      assert.equal(flow.request.url, `http://${target}/chat`);
      assert.ok(flow.request.headers.some(([n, v]) => n === "sec-websocket-protocol" && v === "chat"));
      assert.equal(flow.response?.status, 200);
      const sent = Array.from({ length: MESSAGES }, (_, i) => `message ${i}`).join("");
      assert.equal(flow.request.body.size, sent.length);
      assert.equal(new TextDecoder().decode(flow.request.body.content), sent);
      assert.equal(flow.response?.body.size, sent.length + 5 * MESSAGES);
    } finally {
      await proxy.close(200);
      await origin.stdin.close().catch(() => {});
      await origin.status;
      await Deno.remove(confdir, { recursive: true }).catch(() => {});
    }
  },
});
