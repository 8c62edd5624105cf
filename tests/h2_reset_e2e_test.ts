/**
 * An upstream that resets one stream mid-body, through a real wireguard-go client (tests/rig.ts):
 * nghttp fetches it beside other streams on the same connection; the reset reaches nghttp with the
 * upstream's code, the flow records it, and the other streams (one spanning the reset) finish
 * intact. The origin is Node's HTTP/2 server (tests/h2_origin/resetter.mjs) in the origin namespace.
 * @module
 */
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { generatePrivateKey } from "../mod.ts";
import { startProxy } from "../src/proxy/proxy.ts";
import type { Flow, HttpFlow } from "../src/flows/flow.ts";
import { Rig } from "./rig.ts";
import { OriginNamespace } from "./origin_ns.ts";

const RESETTER = fileURLToPath(new URL("./h2_origin/resetter.mjs", import.meta.url));
const PORT = 8443;

Deno.test({
  name: "HTTP/2 through wireguard-go: an upstream reset mid-body reaches nghttp; other streams go on",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = await OriginNamespace.create(["origin.test"], 1024);
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-h2reset-" });
    let proxy: Awaited<ReturnType<typeof startProxy>> | null = null;
    let rig: Rig | null = null;
    try {
      const certDir = dirname(origin.caFile);
      const server = origin.spawn([
        "/usr/bin/node",
        RESETTER,
        origin.address,
        String(PORT),
        `${certDir}/server.pem`,
        `${certDir}/server.key`,
      ]);
      const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const first = await Promise.race([
        reader.read(),
        new Promise<null>((r) => setTimeout(() => r(null), 10_000)),
      ]);
      reader.releaseLock();
      assert.ok(first && !first.done && first.value.includes("ready"), "the h2 origin did not start");

      proxy = await startProxy({
        modes: [{ kind: "wireguard", port: 0, privateKey: generatePrivateKey(), peers: [] }],
        confdir,
        upstreamCa: [origin.caFile],
        onLog: () => {},
      });
      const flows: Flow[] = [];
      (async () => {
        for await (const f of proxy!.flows) flows.push(f);
      })();
      const wg = proxy.wireguard[0]!;
      rig = await Rig.create(1, wg.publicKey, wg.addr.port, (publicKey) => wg.addPeer({ publicKey }));
      const client = rig.clients[0]!;
      const base = `https://${origin.address}:${PORT}`;
      // One connection (nghttp uses one per authority), all streams at once: the reset one, one
      // that goes on for ~0.6 s around the reset, and 20 small ones.
      const urls = [
        `${base}/reset`,
        `${base}/slow/30`,
        ...Array.from({ length: 20 }, (_, i) => `${base}/item/${i}`),
      ];
      const out = await client.exec(["timeout", "30", "nghttp", "-v", "-n", ...urls], { allowFail: true });
      const rst =
        /recv RST_STREAM frame <length=4, flags=0x00, stream_id=(\d+)>\s+\(error_code=INTERNAL_ERROR/
          .exec(out);
      assert.ok(rst, `nghttp saw no RST_STREAM INTERNAL_ERROR:\n${out.slice(-3000)}`);

      const wanted = (f: Flow): f is HttpFlow =>
        f.type === "http" && f.server.address.port === PORT && f.timestampEnd !== undefined;
      for (let i = 0; i < 200 && flows.filter(wanted).length < urls.length; i++) {
        await new Promise((r) => setTimeout(r, 25));
      }
      const ended = flows.filter(wanted);
      assert.equal(ended.length, urls.length);
      const reset = ended.find((f) => f.request.path === "/reset")!;
      assert.match(reset.error?.message ?? "", /server reset the stream \(INTERNAL_ERROR\)/);
      assert.equal(reset.response?.status, 200);
      assert.equal(reset.response?.body.size, 30_000);
      assert.equal(reset.streamId, Number(rst[1]), "the reset nghttp saw is the /reset stream's");
      for (const f of ended.filter((x) => x !== reset)) {
        assert.equal(f.error, undefined, `${f.request.path}: ${f.error?.message}`);
        assert.equal(f.response?.status, 200, f.request.path);
      }
      const slow = ended.find((f) => f.request.path === "/slow/30")!;
      assert.equal(slow.response?.body.size, 30_000);
      assert.ok(slow.timestampEnd! > reset.timestampEnd!, "the slow stream went on after the reset");
      // All on one client connection.
      assert.equal(new Set(ended.map((f) => f.client.address.port)).size, 1);
      assert.equal(new Set(ended.map((f) => f.streamId)).size, urls.length);
      assert.equal(ended[0]!.client.peer?.publicKey, client.publicKey);
    } finally {
      await proxy?.close(500);
      await rig?.close();
      await origin.close();
      await Deno.remove(confdir, { recursive: true }).catch(() => {});
    }
  },
});
