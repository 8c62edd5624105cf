/**
 * The browser check of HTTP/2 interception: headless Chromium (Debian's `chromium`), trusting
 * wirescope's CA through its NSS database, loads a page with subresources over h2 through the
 * explicit proxy (`--proxy-server`) from nginx in the origin namespace, driven over the DevTools
 * protocol. The page must render, Chromium must say it used h2 for every resource, and the proxy
 * must have recorded each as an HTTP/2.0 flow. Needs root (the origin namespace) and chromium
 * plus certutil (scripts/setup.sh); skipped with a message when they are missing.
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";
import type { Flow, HttpFlow } from "../src/flows/flow.ts";
import { H2_PORT, OriginNamespace } from "./origin_ns.ts";
import { BrowserNamespace, Chromium, chromiumAvailable, homeTrusting } from "./chromium.ts";

/** The page: a stylesheet, a script, three images and a fetch(), all from the same h2 origin. */
const PAGE = `<!doctype html>
<html><head><title>wirescope h2 check</title>
<link rel="stylesheet" href="/h2check/style.css">
<script src="/h2check/app.js" defer></script>
</head><body>
<h1 id="heading">rendered through wirescope</h1>
<img src="/h2check/a.svg"><img src="/h2check/b.svg"><img src="/h2check/c.svg">
<p id="fetched">not yet</p>
</body></html>
`;

const SCRIPT = `fetch("/small.txt").then((r) => r.text()).then((t) => {
  document.getElementById("fetched").textContent = t.trim();
  document.title += " (fetched)";
});
`;

const svg = (color: string) =>
  `<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8" fill="${color}"/></svg>`;

Deno.test({
  name: "Chromium loads a page over h2 through the explicit proxy, trusting wirescope's CA",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    if (!await chromiumAvailable()) {
      console.warn("skipped: chromium or certutil missing (run scripts/setup.sh)");
      return;
    }
    const origin = await OriginNamespace.create(["origin.test"], 1 << 16);
    const net = await BrowserNamespace.create();
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-confdir-" });
    let home = "";
    let browser: Chromium | null = null;
    // The browser runs in a namespace of its own (see BrowserNamespace) and reaches the proxy
    // on this host's end of its veth.
    const proxy = await startProxy({
      modes: [{ kind: "regular", hostname: net.hostAddress, port: 0 }],
      confdir,
      upstreamCa: [origin.caFile],
      onLog: () => {},
    });
    const flows: Flow[] = [];
    (async () => {
      for await (const f of proxy.flows) flows.push(f);
    })();
    try {
      await Deno.mkdir(`${origin.www}/h2check`);
      await Deno.writeTextFile(`${origin.www}/h2check/index.html`, PAGE);
      await Deno.writeTextFile(`${origin.www}/h2check/style.css`, "h1 { color: rgb(1, 2, 3); }\n");
      await Deno.writeTextFile(`${origin.www}/h2check/app.js`, SCRIPT);
      for (const [name, color] of [["a", "red"], ["b", "green"], ["c", "blue"]]) {
        await Deno.writeTextFile(`${origin.www}/h2check/${name}.svg`, svg(color!));
      }
      home = await homeTrusting(proxy.ca.paths.cert);
      const port = proxy.addresses[0]!.addr.port;
      browser = await Chromium.launch({
        home,
        netns: net.ns,
        args: [`--proxy-server=http://${net.hostAddress}:${port}`],
      });
      const page = await browser.newPage();
      const base = `https://${origin.address}:${H2_PORT}`;

      await t.step("the page renders, with its stylesheet, script, images and fetch", async () => {
        await browser!.load(page, `${base}/h2check/index.html`);
        // The fetch finishes after the load event: wait for it (bounded).
        const state = await browser!.evaluate<
          { title: string; heading: string; fetched: string; color: string }
        >(
          page,
          `new Promise((resolve) => {
            const done = () => ({
              title: document.title,
              heading: document.getElementById("heading").textContent,
              fetched: document.getElementById("fetched").textContent,
              color: getComputedStyle(document.getElementById("heading")).color,
            });
            let n = 0;
            const poll = () => (document.title.endsWith("(fetched)") || ++n > 100) ? resolve(done()) : setTimeout(poll, 50);
            poll();
          })`,
        );
        assert.equal(state.title, "wirescope h2 check (fetched)");
        assert.equal(state.heading, "rendered through wirescope");
        assert.equal(state.fetched, "hello from nginx");
        assert.equal(state.color, "rgb(1, 2, 3)", "the stylesheet applied");
        const images = await browser!.evaluate<number[]>(
          page,
          `[...document.images].map((i) => i.naturalWidth)`,
        );
        assert.deepEqual(images, [8, 8, 8], "the images decoded");
      });

      const paths = [
        "/h2check/index.html",
        "/h2check/style.css",
        "/h2check/app.js",
        "/h2check/a.svg",
        "/h2check/b.svg",
        "/h2check/c.svg",
        "/small.txt",
      ];

      await t.step("Chromium used h2 for the page and every subresource", async () => {
        const protocols = await browser!.evaluate<Record<string, string>>(
          page,
          `Object.fromEntries([...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")]
            .map((e) => [new URL(e.name).pathname, e.nextHopProtocol]))`,
        );
        for (const path of paths) {
          assert.equal(protocols[path], "h2", `${path}: ${JSON.stringify(protocols)}`);
        }
        // The DevTools protocol says the same, and that the certificate was the proxy's.
        const responses = browser!.events
          .filter((e) => e.method === "Network.responseReceived")
          .map((e) =>
            (e.params as {
              response: { url: string; protocol: string; securityDetails?: { issuer: string } };
            }).response
          );
        for (const path of paths) {
          const r = responses.find((r) => new URL(r.url).pathname === path);
          assert.ok(r, `DevTools saw ${path}`);
          assert.equal(r.protocol, "h2", path);
          assert.match(r.securityDetails?.issuer ?? "", /wirescope/i, `${path}: issued by wirescope's CA`);
        }
      });

      await t.step("the proxy recorded each resource as an HTTP/2.0 flow", async () => {
        for (const path of paths) {
          let f: HttpFlow | undefined;
          for (let i = 0; i < 100 && !f; i++) {
            f = flows.find((x): x is HttpFlow => x.type === "http" && x.request.path === path);
            if (!f) await new Promise((r) => setTimeout(r, 50));
          }
          assert.ok(
            f,
            `a flow for ${path}; have ${flows.map((x) => x.type === "http" ? x.request.path : x.type)}`,
          );
          assert.equal(f.request.httpVersion, "HTTP/2.0", path);
          assert.equal(f.response?.status, 200, path);
          assert.equal(f.client.mode, "regular");
        }
        const fetched = flows.find((x): x is HttpFlow =>
          x.type === "http" && x.request.path === "/small.txt"
        );
        assert.equal(new TextDecoder().decode(fetched?.response?.body.content), "hello from nginx\n");
      });
    } finally {
      await browser?.close();
      await proxy.close(500);
      await origin.close();
      await net.close();
      await Deno.remove(confdir, { recursive: true });
      if (home) await Deno.remove(home, { recursive: true }).catch(() => {});
    }
  },
});
