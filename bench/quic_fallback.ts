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
 * @module
 */
import { OriginNamespace } from "../tests/origin_ns.ts";
import { dumpDom, homeTrusting } from "../tests/chromium.ts";
import { proxiedClient } from "../tests/proxied_client.ts";

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
    } finally {
      await p.close();
    }
  }
} finally {
  await origin.close();
}

console.log("\nmedians (ms): whole chromium run / page responseStart / load event");
for (const [name, list] of Object.entries(results)) {
  const errors = [...new Set(list.map((o) => o.error).filter(Boolean))];
  console.log(
    `${name.padEnd(24)} run ${median(list.map((o) => o.ms))}  responseStart ${
      median(list.map((o) => o.timing?.responseStart ?? NaN))
    }  load ${median(list.map((o) => o.timing?.load ?? NaN))}  protocols ${
      [...new Set(list.map((o) => o.timing?.protocol ?? "-"))].join(",")
    }${errors.length ? `  errors ${errors.join(",")}` : ""}`,
  );
}
