/**
 * `deno run -A bench/quic_fallback.ts [runs]`: how long headless Chromium (in a wireguard-go
 * client namespace, through the proxy in WireGuard mode) takes to load a page whose QUIC attempt
 * fails, when the proxy refuses QUIC with ICMP port unreachable (`--quic reject`, the default)
 * and when QUIC is dropped silently (as a firewall would: `--quic passthrough` to the origin,
 * whose UDP port 443 ignores QUIC packets, tests/origin_server.ts). Two cases:
 *
 * - forced: `--origin-to-force-quic-on` (Chromium then uses only QUIC: the time until it gives up)
 * - alt-svc: the origin advertises `Alt-Svc: h3=":443"`; a first load learns it, a second load in
 *   the same profile tries QUIC and falls back to TCP.
 *
 * Prints one line per run and the medians. Needs root, chromium and certutil.
 *
 * What it showed (Chromium 156, 5 runs, a busy 2-core machine): a connected UDP socket gets
 * ECONNREFUSED about 10 ms after its datagram when refused, and nothing in 5 s (its timeout) when
 * dropped. With Alt-Svc, Chromium races QUIC
 * against TCP, so every load came over TCP (h2 from the proxy) with either policy, at load times
 * within the noise (median load event 286/122 ms first/second load refused, 221/151 ms dropped).
 * The difference is on the wire: refused, Chromium sent 30 QUIC datagrams in 17 conversations (it
 * stops at the ICMP); dropped, 50 in 15 (it retransmits until it gives up). With QUIC forced on,
 * a refusal that arrives before TCP has connected fails the load (ERR_QUIC_PROTOCOL_ERROR, 2 of 5
 * runs), where a silent drop lets TCP win: the flag is for debugging, Alt-Svc is what sites use.
 * @module
 */
import { OriginNamespace } from "../tests/origin_ns.ts";
import { dumpDom, homeTrusting, settleNetwork } from "../tests/chromium.ts";
import { probe, proxiedClient } from "../tests/proxied_client.ts";

const runs = Number(Deno.args[0] ?? 3);

/** Reports how the page was fetched (Navigation Timing) once it has loaded. */
const PAGE = (images: number) =>
  `<!doctype html>
<html><head><title>quic fallback</title></head><body>
<p>loaded through wirescope</p>
${Array.from({ length: images }, (_, i) => `<img src="/quic/i${i}.svg">`).join("")}
<pre id="timing"></pre>
<script>
addEventListener("load", () => {
  const n = performance.getEntriesByType("navigation")[0];
  const r = performance.getEntriesByType("resource");
  document.getElementById("timing").textContent = JSON.stringify({
    protocol: n.nextHopProtocol, responseStart: Math.round(n.responseStart), load: Math.round(performance.now()),
    resources: [...new Set(r.map((e) => e.nextHopProtocol))],
  });
});
</script>
</body></html>
`;

interface Outcome {
  ms: number;
  timing?: { protocol: string; responseStart: number; load: number; resources: string[] };
  error?: string;
}

function outcome(run: { dom: string; ms: number; stderr: string }): Outcome {
  const m = /<pre id="timing">([^<]*)<\/pre>/.exec(run.dom);
  const error = /Page load failed: (\S+)/.exec(run.stderr)?.[1];
  const o: Outcome = { ms: Math.round(run.ms) };
  if (m && m[1]) o.timing = JSON.parse(m[1].replaceAll("&quot;", '"'));
  if (error) o.error = error;
  return o;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
};

const origin = await OriginNamespace.create(["origin.test"], 1 << 16);
const results: Record<string, Outcome[]> = {};
/** QUIC conversations and datagrams Chromium sent, by policy (refused ones: the first of each). */
const sent: Record<string, { conversations: number; datagrams: number }> = {};
/** A connected UDP socket's QUIC-like datagrams, by policy. */
const probes: Record<string, { refused?: boolean; timeout?: boolean; reply?: string; ms: number }[]> = {};
/** QUIC datagrams the proxy refused with ICMP, by policy. */
const rejected: Record<string, number> = {};
try {
  await Deno.mkdir(`${origin.www}/quic`);
  await Deno.writeTextFile(`${origin.www}/quic/index.html`, PAGE(6));
  await Deno.writeTextFile(`${origin.www}/force.html`, PAGE(0).replaceAll("/quic/", "/"));
  for (let i = 0; i < 6; i++) {
    await Deno.writeTextFile(
      `${origin.www}/quic/i${i}.svg`,
      `<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>`,
    );
  }
  for (const policy of ["reject", "drop"] as const) {
    const p = await proxiedClient(origin, { quic: policy === "reject" ? "reject" : "passthrough" });
    try {
      // A bare connected UDP socket (no TCP to race): how long until it learns that QUIC fails.
      // The first byte makes it look like a QUIC long header, which the origin ignores.
      for (let r = 0; r < runs; r++) {
        const got = await probe(p.client, origin.address, 443, "\u00c0 QUIC-like probe");
        (probes[policy] ??= []).push(got);
      }
      await settleNetwork(p.client.ns);
      const common = [`--host-resolver-rules=MAP origin.test ${origin.address}`, "--enable-quic"];
      for (let r = 0; r < runs; r++) {
        const home = await homeTrusting(p.proxy.ca.paths.cert);
        try {
          const baseline = outcome(
            await dumpDom("https://origin.test/force.html", {
              home,
              netns: p.client.ns,
              timeoutMs: 60_000,
              args: common,
            }),
          );
          (results[`${policy} baseline (TCP only)`] ??= []).push(baseline);
          const forced = outcome(
            await dumpDom("https://origin.test/force.html", {
              home,
              netns: p.client.ns,
              timeoutMs: 60_000,
              args: [...common, "--origin-to-force-quic-on=origin.test:443"],
            }),
          );
          (results[`${policy} forced`] ??= []).push(forced);
          const rejectedBefore = p.proxy.stats().udp.quicRejected;
          const first = outcome(
            await dumpDom("https://origin.test/quic/index.html", {
              home,
              netns: p.client.ns,
              timeoutMs: 60_000,
              args: common,
            }),
          );
          (results[`${policy} alt-svc first`] ??= []).push(first);
          const second = outcome(
            await dumpDom("https://origin.test/quic/index.html", {
              home,
              netns: p.client.ns,
              timeoutMs: 60_000,
              args: common,
            }),
          );
          (results[`${policy} alt-svc second`] ??= []).push(second);
          const quicFlows = p.flows.filter((f) => f.type === "udp" && f.server.address.port === 443).length;
          console.log(
            `${policy} run ${r}: baseline ${JSON.stringify(baseline)} | forced ${
              JSON.stringify(forced)
            } | first ${JSON.stringify(first)} | second ${
              JSON.stringify(second)
            } | QUIC datagrams refused during alt-svc loads ${
              p.proxy.stats().udp.quicRejected - rejectedBefore
            }, UDP/443 flows so far ${quicFlows}`,
          );
        } finally {
          await Deno.remove(home, { recursive: true }).catch(() => {});
        }
      }
      rejected[policy] = p.proxy.stats().udp.quicRejected;
    } finally {
      await p.close();
    }
    // Conversations end (and become flows) when the proxy closes: count what Chromium sent.
    for (let i = 0; i < 40 && !p.flows.some((f) => f.type === "udp" && f.server.address.port === 443); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const quic = p.flows.filter((f) => f.type === "udp" && f.server.address.port === 443);
    sent[policy] = {
      conversations: quic.length,
      datagrams: quic.reduce(
        (n, f) =>
          n + (f.type === "udp" ? f.messages.filter((m) => m.fromClient).length + f.messagesDropped : 0),
        0,
      ),
    };
  }
} finally {
  await origin.close();
}

console.log(
  `\nQUIC from Chromium over ${runs} x 4 loads: flows ${JSON.stringify(sent)} (a refused conversation ` +
    `records its first datagram only); datagrams refused with ICMP ${JSON.stringify(rejected)}`,
);
for (const [policy, list] of Object.entries(probes)) {
  const outcomes = list.map((p) => p.refused ? "refused" : p.timeout ? "timeout" : "reply");
  console.log(
    `${policy}: a connected UDP socket's datagram to port 443: ${[...new Set(outcomes)].join(",")} after ` +
      `median ${median(list.map((p) => p.ms))} ms (socket timeout 5000)`,
  );
}
console.log("medians (ms): whole chromium run / page responseStart / load event");
for (const [name, list] of Object.entries(results)) {
  const errors = [...new Set(list.map((o) => o.error).filter(Boolean))];
  console.log(
    `${name.padEnd(24)} run ${median(list.map((o) => o.ms))}  responseStart ${
      median(list.map((o) => o.timing?.responseStart ?? NaN))
    }  load ${median(list.map((o) => o.timing?.load ?? NaN))}  protocols ${
      [...new Set(list.map((o) => o.timing?.protocol ?? "-"))].join(",")
    }${
      errors.length
        ? `  failed ${list.filter((o) => o.error).length}/${list.length}: ${errors.join(",")}`
        : ""
    }`,
  );
}
