/**
 * QUIC from a real WireGuard client (tests/rig.ts): by default the proxy answers UDP to port 443
 * with ICMP port unreachable, which the client's kernel takes (a connected socket gets
 * ECONNREFUSED), records the refusal as a UDP flow and counts it; with `quic: "passthrough"` the
 * datagram is relayed to the origin's UDP echo on 443. Then headless Chromium in the client's
 * namespace loads a page whose origin advertises HTTP/3 (`Alt-Svc`): refused QUIC, it goes on
 * over TCP, which the proxy intercepts. Needs root; the Chromium step is skipped when it is missing.
 */
import assert from "node:assert/strict";
import type { Flow, HttpFlow, UdpFlow } from "../src/flows/flow.ts";
import { OriginNamespace } from "./origin_ns.ts";
import { chromiumAvailable, dumpDom, homeTrusting, settleNetwork } from "./chromium.ts";
import { probe, proxiedClient } from "./proxied_client.ts";

/** Waits (bounded) for a completed flow that matches. */
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

/** A page with images that reports how the browser fetched each (Resource Timing) once loaded. */
const QUIC_PAGE = `<!doctype html>
<html><head><title>quic fallback check</title></head><body>
<p>loaded through wirescope</p>
<img src="/quic/a.svg"><img src="/quic/b.svg"><img src="/quic/c.svg">
<pre id="timing"></pre>
<script>
addEventListener("load", () => {
  document.getElementById("timing").textContent = JSON.stringify(
    [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")]
      .map((e) => [new URL(e.name).pathname, e.nextHopProtocol]),
  );
});
</script>
</body></html>
`;

Deno.test({
  name: "QUIC from a WireGuard client: ICMP port unreachable by default, relayed with passthrough",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const origin = await OriginNamespace.create(["origin.test"], 1 << 16);
    const o = origin.address;
    try {
      const s = await proxiedClient(origin);
      try {
        const client = s.client;

        await t.step(
          "a UDP/443 datagram gets ICMP port unreachable (IPv4): ECONNREFUSED at once",
          async () => {
            const r = await probe(client, o, 443, "quic over v4?");
            assert.deepEqual({ ...r, ms: 0 }, { refused: true, ms: 0 }, JSON.stringify(r));
          },
        );

        await t.step("and over IPv6 (ICMPv6 type 1 code 4)", async () => {
          // An address of the rig's tunnel prefix that nobody holds: nothing leaves the proxy.
          const r = await probe(client, "fd77:7769:7265::fffe", 443, "quic over v6?");
          assert.equal(r.refused, true, JSON.stringify(r));
        });

        await t.step("other UDP is still relayed", async () => {
          const r = await probe(client, o, 7, "plain udp");
          assert.equal(r.reply, "plain udp");
        });

        await t.step("each refused conversation is a UDP flow with the datagram and the reason", async () => {
          const f = await flowWhere<UdpFlow>(
            s.flows,
            (f) => f.type === "udp" && f.server.address.port === 443 && f.server.address.hostname === o,
            "refused QUIC (v4)",
          );
          assert.match(f.error?.message ?? "", /QUIC refused with ICMP port unreachable/);
          assert.equal(new TextDecoder().decode(f.messages[0]?.content), "quic over v4?");
          assert.equal(f.messages[0]?.fromClient, true);
          assert.equal(f.client.mode, "wireguard");
          const v6 = await flowWhere<UdpFlow>(
            s.flows,
            (f) => f.type === "udp" && f.server.address.hostname === "fd77:7769:7265::fffe",
            "refused QUIC (v6)",
          );
          assert.match(v6.error?.message ?? "", /ICMP port unreachable/);
          assert.equal(s.proxy.stats().udp.quicRejected, 2);
        });

        await t.step(
          "Chromium, told by Alt-Svc that the origin has HTTP/3, tries QUIC and loads over TCP",
          async () => {
            if (!await chromiumAvailable()) {
              console.warn("skipped: chromium or certutil missing (run scripts/setup.sh)");
              return;
            }
            await Deno.mkdir(`${origin.www}/quic`);
            await Deno.writeTextFile(`${origin.www}/quic/index.html`, QUIC_PAGE);
            for (const name of ["a", "b", "c"]) {
              await Deno.writeTextFile(
                `${origin.www}/quic/${name}.svg`,
                `<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>`,
              );
            }
            await settleNetwork(client.ns);
            const home = await homeTrusting(s.proxy.ca.paths.cert);
            try {
              const before = s.proxy.stats().udp.quicRejected;
              // The first load learns Alt-Svc (and may try QUIC for the images); the second, in the
              // same profile, tries QUIC from the start.
              for (const load of ["first", "second"]) {
                const run = await dumpDom("https://origin.test/quic/index.html", {
                  home,
                  netns: client.ns,
                  timeoutMs: 40_000,
                  args: [`--host-resolver-rules=MAP origin.test ${o}`, "--enable-quic"],
                });
                assert.match(run.dom, /loaded through wirescope/, `${load} load: ${run.stderr.slice(-2000)}`);
                const timing = /<pre id="timing">([^<]*)<\/pre>/.exec(run.dom)?.[1]?.replaceAll(
                  "&quot;",
                  '"',
                );
                const protocols = new Map<string, string>(JSON.parse(timing || "[]"));
                assert.equal(protocols.size, 4, `${load} load: the page and 3 images timed: ${timing}`);
                // The proxy offers h2 to the browser: anything but h3 is TCP.
                for (const [path, protocol] of protocols) {
                  assert.equal(protocol, "h2", `${load} load, ${path}`);
                }
              }
              assert.ok(s.proxy.stats().udp.quicRejected > before, "Chromium did try QUIC, and was refused");
              const refused = await flowWhere<UdpFlow>(
                s.flows,
                (f) =>
                  f.type === "udp" && f.server.address.port === 443 && f.server.address.hostname === o &&
                  f.client.address.hostname === client.address4 && (f.messages[0]?.size ?? 0) >= 1200,
                "Chromium's refused QUIC",
              );
              // A QUIC Initial: long header, padded to at least 1200 bytes.
              assert.equal(refused.messages[0]!.content[0]! & 0xc0, 0xc0);
              const page = await flowWhere<HttpFlow>(
                s.flows,
                (f) => f.type === "http" && f.request.path === "/quic/index.html",
                "the page",
              );
              assert.equal(page.response?.status, 200);
              const altSvc = page.response?.headers.find(([k]) => k.toLowerCase() === "alt-svc")?.[1];
              assert.match(altSvc ?? "", /h3=/);
            } finally {
              await Deno.remove(home, { recursive: true }).catch(() => {});
            }
          },
        );
      } finally {
        await s.close();
      }

      const p = await proxiedClient(origin, { quic: "passthrough" });
      try {
        await t.step("with passthrough, the datagram reaches the origin's UDP echo on 443", async () => {
          const r = await probe(p.client, o, 443, "quic relayed");
          assert.equal(r.reply, "quic relayed", JSON.stringify(r));
          assert.equal(p.proxy.stats().udp.quicRejected, 0);
          await p.proxy.close(500);
          const f = await flowWhere<UdpFlow>(
            p.flows,
            (f) => f.type === "udp" && f.server.address.port === 443,
            "relayed QUIC",
          );
          assert.equal(f.error, undefined);
          assert.equal(f.bytesFromServer, "quic relayed".length);
        });
      } finally {
        await p.close();
      }
    } finally {
      await origin.close();
    }
  },
});
