/**
 * The web UI in a real browser (Debian's `chromium`, headless, over the DevTools protocol):
 * a proxy in explicit mode with a store and the UI, curl making real requests through it to a
 * local origin that answers JSON and a PNG. Checked: the list fills live, a filter narrows it, a
 * bad one shows its error at its column, keyboard navigation opens a flow whose headers, pretty
 * JSON and image are right; and the refusals: no token (API, page, WebSocket), a foreign Host, a
 * POST without the CSRF header, the UI through the proxy (even with allowLocalDestinations).
 * Screenshots of the main views go to docs/screenshots/ (`UPDATE_SCREENSHOTS=1`; else to /tmp).
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";
import { SqliteFlowStore } from "../src/flows/store.ts";
import { compileFilter, FilterSyntaxError } from "../src/flows/filter.ts";
import { startWebUi } from "../src/web/server.ts";
import { Chromium } from "./chromium.ts";
import { Rig } from "./rig.ts";
import { syntheticFlow } from "../src/flows/testdata/flows.ts";
import type { Flow } from "../src/flows/flow.ts";
import { generatePrivateKey } from "../src/core/keys.ts";

const PNG = Uint8Array.from(
  atob(
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEUlEQVR4nGO4o6GBFTEMLQkAe3tLAfuiUfAAAAAASUVORK5CYII=",
  ),
  (c) => c.charCodeAt(0),
);
const DATA = { name: "wirescope", items: [1, 2, 3], nested: { ok: true } };
/**
 * Where the screenshots go: docs/screenshots/ (committed, shown by README) with
 * `UPDATE_SCREENSHOTS=1`; otherwise a folder under the system's temporary directory, so that a
 * plain test run leaves the working tree as it was.
 */
const SHOTS = Deno.env.get("UPDATE_SCREENSHOTS") === "1"
  ? new URL("../docs/screenshots/", import.meta.url).pathname
  : `${Deno.env.get("TMPDIR") ?? "/tmp"}/wirescope-web-screenshots/`;

async function hasChromium(): Promise<boolean> {
  return (await new Deno.Command("sh", { args: ["-c", "command -v chromium"], stdout: "null" }).output())
    .success;
}

async function curl(args: string[]): Promise<{ code: number; status: string }> {
  const o = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", ...args],
    stdout: "piped",
    stderr: "null",
  }).output();
  return { code: o.code, status: new TextDecoder().decode(o.stdout) };
}

/** Polls `check` every 100 ms until it is true, at most `ms`. */
async function until(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  for (let i = 0; i < 1000 && Date.now() < end; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function columnOf(expression: string): number {
  try {
    compileFilter(expression);
  } catch (e) {
    if (e instanceof FilterSyntaxError) return e.column;
  }
  throw new Error(`${expression} parses`);
}

Deno.test({
  name:
    "web UI in Chromium: live list, filter and its errors, flow detail; refusals without token, Host, CSRF",
  ignore: !(await hasChromium()),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-web-ui-" });
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      const path = new URL(req.url).pathname;
      // /data3 thinks for 80 ms: its waterfall shows the wait.
      if (path === "/data3") await new Promise((r) => setTimeout(r, 80));
      if (path.startsWith("/data")) return Response.json(DATA, { headers: { "x-origin": "test" } });
      if (path.startsWith("/img")) return new Response(PNG, { headers: { "content-type": "image/png" } });
      return new Response("missing", { status: 404 });
    });
    const store = SqliteFlowStore.open(`${dir}/flows.db`);
    const proxy = await startProxy({
      modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
      confdir: `${dir}/conf`,
      allowLocalDestinations: true,
      store,
      onLog: () => {},
    });
    const web = await startWebUi({ proxy, port: 0 });
    const ui = `127.0.0.1:${web.addr.port}`;
    const via = `http://127.0.0.1:${proxy.addresses[0]!.addr.port}`;
    const base = `http://127.0.0.1:${origin.addr.port}`;
    const home = await Deno.makeTempDir({ prefix: "wirescope-web-chromium-" });
    let browser: Chromium | undefined;
    try {
      // --- refusals, from outside the browser ---
      assert.equal(
        await fetch(`http://${ui}/api/flows`).then(async (r) => (await r.body?.cancel(), r.status)),
        401,
      );
      const login = await fetch(`http://${ui}/`);
      assert.equal(login.status, 401);
      assert.match(await login.text(), /token/);
      const wrongToken = await fetch(`http://${ui}/?token=nope`);
      assert.equal(wrongToken.status, 401);
      await wrongToken.body?.cancel();
      const ws401 = await fetch(`http://${ui}/api/updates`, {
        headers: { origin: `http://${ui}`, upgrade: "websocket", connection: "Upgrade" },
      });
      assert.equal(ws401.status, 401);
      await ws401.body?.cancel();
      const wsBlocked = await new Promise<boolean>((resolve) => {
        const ws = new WebSocket(`ws://${ui}/api/updates`);
        ws.onopen = () => {
          ws.close();
          resolve(false);
        };
        ws.onerror = () => resolve(true);
      });
      assert.ok(wsBlocked, "a WebSocket without the cookie is refused");
      const entered = await fetch(web.url, { redirect: "manual" });
      assert.equal(entered.status, 303);
      await entered.body?.cancel();
      const cookie = entered.headers.get("set-cookie")!.split(";")[0]!;
      assert.match(entered.headers.get("set-cookie")!, /HttpOnly; SameSite=Strict/);
      // fetch() keeps its own Host header; curl sends the one a rebinding page would.
      const rebound = await curl([
        "-H",
        `Cookie: ${cookie}`,
        "-H",
        `Host: evil.example:${web.addr.port}`,
        `http://${ui}/api/flows`,
      ]);
      assert.equal(rebound.status, "403", "a foreign Host header is refused");
      const noCsrf = await fetch(`http://${ui}/api/filter/check`, {
        method: "POST",
        headers: { cookie, "content-type": "application/json" },
        body: JSON.stringify({ filter: "~u x" }),
      });
      assert.equal(noCsrf.status, 403, "a POST without the CSRF header is refused");
      await noCsrf.body?.cancel();
      const { csrf } = await (await fetch(`http://${ui}/api/session`, { headers: { cookie } })).json();
      const withCsrf = await fetch(`http://${ui}/api/filter/check`, {
        method: "POST",
        headers: { cookie, "content-type": "application/json", "x-wirescope-csrf": csrf },
        body: JSON.stringify({ filter: "~c abc" }),
      });
      assert.deepEqual(await withCsrf.json(), {
        ok: false,
        error: "~c wants a status code (digits), not 'abc'",
        column: 4,
      });
      // The UI is never reached through the proxy, even with allowLocalDestinations (by address or by name).
      for (const target of [`http://${ui}/api/flows`, `http://localhost:${web.addr.port}/`]) {
        const r = await curl(["-x", via, "-H", `Cookie: ${cookie}`, target]);
        assert.equal(r.status, "502", `${target} through the proxy`);
      }
      assert.ok(proxy.stats().blockedDestinations >= 2);
      // While the origin is reachable through it.
      assert.equal((await curl(["-x", via, `${base}/data0`])).status, "200");

      // --- the browser ---
      browser = await Chromium.launch({ home });
      const s = await browser.newPage();
      await browser.send("Emulation.setDeviceMetricsOverride", {
        width: 1400,
        height: 820,
        deviceScaleFactor: 1,
        mobile: false,
      }, s);
      const b = browser;
      const evaluate = <T>(expression: string) => b.evaluate<T>(s, expression);
      const loaded = () => evaluate<number>("Number(document.body.dataset.loaded ?? -1)");
      const shot = async (name: string) => {
        await Deno.mkdir(SHOTS, { recursive: true });
        const { data } = await b.send("Page.captureScreenshot", { format: "png" }, s);
        await Deno.writeFile(
          `${SHOTS}${name}.png`,
          Uint8Array.from(atob(data as string), (c) => c.charCodeAt(0)),
        );
      };
      const key = async (k: string) => {
        const text = k.length === 1 ? { text: k } : {};
        const code = k === "Enter" ? { windowsVirtualKeyCode: 13 } : {};
        await b.send("Input.dispatchKeyEvent", { type: "keyDown", key: k, ...text, ...code }, s);
        await b.send("Input.dispatchKeyEvent", { type: "keyUp", key: k, ...code }, s);
      };
      const typeFilter = async (expression: string) => {
        await key("/");
        await until("the filter focused", () => evaluate<boolean>("document.activeElement?.id === 'filter'"));
        await evaluate("(() => { const f = document.getElementById('filter'); f.value = ''; })()");
        await b.send("Input.insertText", { text: expression }, s);
      };

      await browser.load(s, web.url);
      assert.equal(
        await evaluate<string>("location.pathname + location.search"),
        "/",
        "the token leaves the URL",
      );
      // The refused requests above are flows too (recorded as failed).
      await proxy.recorder!.settled();
      const before = await store.count();
      assert.ok(before >= 3);
      await until("the flows so far listed", async () => (await loaded()) === before);
      await until("live", () => evaluate<boolean>("document.getElementById('conn').textContent === 'live'"));
      // Live: requests made now appear without a reload.
      for (let i = 1; i <= 6; i++) assert.equal((await curl(["-x", via, `${base}/data${i}`])).status, "200");
      for (let i = 0; i < 3; i++) {
        assert.equal((await curl(["-x", via, `${base}/img${i}.png`])).status, "200");
      }
      assert.equal((await curl(["-x", via, `${base}/missing`])).status, "404");
      await until("10 more flows listed live", async () => (await loaded()) === before + 10);
      // Painted too (live repaints are throttled to a few a second).
      const paths = () =>
        evaluate<string[]>(
          "[...document.querySelectorAll('.row:not([hidden]) .c-path')].map((e) => e.textContent)",
        );
      await until("the live rows on screen", async () => {
        const p = await paths();
        return p.includes("/img2.png") && p.includes("/missing");
      });
      await shot("flow-list");

      // A filter narrows the list.
      await typeFilter("~u img");
      await until("3 image flows", async () => (await loaded()) === 3);
      // The rows are painted in the frame after the page arrives.
      await until(
        "3 rows on screen",
        async () =>
          (await evaluate<number>("document.querySelectorAll('.row[data-id]:not([hidden])').length")) === 3,
      );
      // A bad one shows its error at its column and leaves the list alone.
      const bad = "~u data & (~c 200";
      await typeFilter(bad);
      await until(
        "the filter's error",
        () => evaluate<boolean>("!document.getElementById('filter-error').hidden"),
      );
      const error = await evaluate<{ text: string; column: string }>(
        "(() => { const e = document.getElementById('filter-error'); return { text: e.textContent, column: e.dataset.column }; })()",
      );
      assert.equal(Number(error.column), columnOf(bad));
      assert.match(error.text, /never closed at column 11/);
      assert.equal(await loaded(), 3);
      await shot("filter-error");

      // A second expression highlights: all flows listed, the images marked.
      await typeFilter("");
      await key("Enter");
      await until("all flows again", async () => (await loaded()) === before + 10);
      await evaluate("document.getElementById('highlight').focus()");
      await b.send("Input.insertText", { text: "~u img | ~c 404" }, s);
      await key("Enter");
      await until(
        "4 highlighted rows",
        async () =>
          (await evaluate<number>("document.querySelectorAll('.row.highlight:not([hidden])').length")) === 4,
      );
      const marked = await evaluate<string[]>(
        "[...document.querySelectorAll('.row.highlight:not([hidden]) .c-path')].map((e) => e.textContent).sort()",
      );
      assert.deepEqual(marked, ["/img0.png", "/img1.png", "/img2.png", "/missing"]);
      await shot("highlight");
      await evaluate(
        "(() => { const h = document.getElementById('highlight'); h.value = ''; h.focus(); })()",
      );
      await key("Enter");
      await until(
        "no highlight",
        async () => (await evaluate<number>("document.querySelectorAll('.row.highlight').length")) === 0,
      );

      // Keyboard: / to filter, j to select, Enter to open: the JSON flow.
      await typeFilter("~u data3");
      await key("Enter");
      const firstPath = () =>
        evaluate<string | null>(
          "document.querySelector('.row[data-index=\"0\"]:not([hidden]) .c-path')?.textContent ?? null",
        );
      await until("only /data3", async () => (await loaded()) === 1 && (await firstPath()) === "/data3");
      await key("j");
      await key("Enter");
      await until("the detail pane", () => evaluate<boolean>("!!document.querySelector('#detail pre.json')"));
      const detail = await evaluate<{ headers: string[][]; json: string }>(`(() => ({
        headers: [...document.querySelectorAll('#detail .s-response table.headers tr')]
          .map((tr) => [...tr.children].map((c) => c.textContent)),
        json: document.querySelector('#detail .s-response pre.json').textContent,
      }))()`);
      assert.ok(
        detail.headers.some(([n, v]) => n?.toLowerCase() === "content-type" && v === "application/json"),
        JSON.stringify(detail.headers),
      );
      assert.ok(detail.headers.some(([n, v]) => n === "x-origin" && v === "test"));
      assert.equal(detail.json, JSON.stringify(DATA, null, 2));
      const waiting = await evaluate<string>(
        "document.querySelector('#detail .p-waiting .ms')?.textContent ?? ''",
      );
      assert.ok(Number.parseInt(waiting) >= 70, `the wait for the origin in the waterfall: ${waiting}`);
      await shot("flow-detail-json");

      // The image, rendered from the body URL.
      await typeFilter("~u img1");
      await key("Enter");
      await until(
        "only /img1.png",
        async () => (await loaded()) === 1 && (await firstPath()) === "/img1.png",
      );
      await key("j");
      await key("Enter");
      await until(
        "the image rendered",
        () =>
          evaluate<boolean>("(document.querySelector('#detail img.body-image')?.naturalWidth ?? 0) === 8"),
      );
      const conn = await evaluate<string>("document.querySelector('#detail .s-connection').textContent");
      assert.match(conn, new RegExp(`127\\.0\\.0\\.1:${origin.addr.port}`));
      await shot("flow-detail-image");

      // A form POST: its request body as fields.
      assert.equal(
        (await curl(["-x", via, "-d", "name=wire+scope&lang=ts%21", `${base}/form`])).status,
        "404",
      );
      await typeFilter("~u form");
      await key("Enter");
      await until("only /form", async () => (await loaded()) === 1 && (await firstPath()) === "/form");
      await key("j");
      await key("Enter");
      await until(
        "the form view",
        () => evaluate<boolean>("!!document.querySelector('#detail .s-request table.form')"),
      );
      const fields = await evaluate<string[][]>(
        "[...document.querySelectorAll('#detail .s-request table.form tr')].map((tr) => [...tr.children].map((c) => c.textContent))",
      );
      assert.deepEqual(fields, [["name", "wire scope"], ["lang", "ts!"]]);

      // Actions on the open flow: m marks it, a comment is saved with Enter, curl export, d deletes.
      const formId = await evaluate<string>("document.querySelector('.row.selected').dataset.id");
      await key("m");
      await until("the mark stored", async () => (await store.get(formId))?.marked === true);
      await until(
        "the row marked",
        () => evaluate<boolean>("!!document.querySelector('.row.selected.marked')"),
      );
      await evaluate("document.getElementById('comment').focus()");
      await b.send("Input.insertText", { text: "looks fine" }, s);
      await key("Enter");
      await until("the comment stored", async () => (await store.get(formId))?.comment === "looks fine");
      const curlLine = await evaluate<string>(
        "fetch(document.querySelector('a.export[href$=\"format=curl\"]').href).then((r) => r.text())",
      );
      assert.match(curlLine, /^curl /);
      assert.match(curlLine, /\/form/);
      assert.match(curlLine, /name=wire\+scope/);
      await shot("flow-actions");
      await evaluate("document.getElementById('list').focus()");
      await key("d");
      await until("the flow deleted", async () => (await store.get(formId)) === undefined);
      await until("the list empty", async () => (await loaded()) === 0);
    } finally {
      await browser?.close();
      await web.close();
      await proxy.close();
      await store.close();
      await origin.shutdown();
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(home, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "web UI on all addresses: a WireGuard client cannot reach it through the tunnel (allowLocalDestinations on)",
  ignore: Deno.uid() !== 0,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-web-rig-" });
    // A service on every address of this host: reachable through the tunnel (allowLocalDestinations),
    // unlike the UI next to it.
    const other = Deno.serve({ hostname: "0.0.0.0", port: 0, onListen() {} }, () => new Response("other"));
    const store = SqliteFlowStore.open(`${dir}/flows.db`);
    const proxy = await startProxy({
      modes: [{ kind: "wireguard", port: 0, privateKey: generatePrivateKey(), peers: [] }],
      confdir: `${dir}/conf`,
      allowLocalDestinations: true,
      store,
      onLog: () => {},
    });
    const web = await startWebUi({ proxy, hostname: "0.0.0.0", port: 0 });
    const wg = proxy.wireguard[0]!;
    let rig: Rig | null = null;
    try {
      rig = await Rig.create(2, wg.publicKey, wg.addr.port, (publicKey) => wg.addPeer({ publicKey }));
      const client = rig.clients[0]!;
      // An address of this host that client 0 reaches through the tunnel (its default route): the
      // host's end of client 1's veth (the next /30). Client 0's own veth address is on a directly
      // connected route, past the tunnel.
      const n = rig.hostAddress.split(".").reduce((acc, part) => acc * 256 + Number(part), 0) + 4;
      const host = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
      const connections0 = proxy.stats().connections;
      const curl = async (url: string) =>
        (await client.exec(
          ["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}", url],
          {
            allowFail: true,
          },
        )).trim();
      // The host is reachable through the tunnel...
      assert.equal(await curl(`http://${host}:${other.addr.port}/`), "200");
      assert.equal(proxy.stats().connections, connections0 + 1, "the request went through the tunnel");
      // ...but not the UI: the proxy refuses the destination (502), the UI never answers (it would say 401).
      const blocked0 = proxy.stats().blockedDestinations;
      assert.equal(await curl(`http://${host}:${web.addr.port}/`), "502");
      assert.equal(await curl(`http://${host}:${web.addr.port}/api/flows`), "502");
      assert.equal(proxy.stats().blockedDestinations, blocked0 + 2);
      // From the host itself the UI answers (without the token: 401).
      const direct = await fetch(`http://${host}:${web.addr.port}/api/flows`);
      assert.equal(direct.status, 401);
      await direct.body?.cancel();
    } finally {
      await rig?.close();
      await web.close();
      await proxy.close();
      await store.close();
      await other.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "web UI in Chromium: a long list shows its end at once (pages from the end back) and every row in its place",
  ignore: !(await hasChromium()),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const N = 12_000;
    const dir = await Deno.makeTempDir({ prefix: "wirescope-web-long-" });
    const store = SqliteFlowStore.open(`${dir}/flows.db`);
    const ids: string[] = [];
    for (let start = 1; start <= N; start += 1000) {
      const flows: Flow[] = [];
      for (let n = start; n < start + 1000; n++) flows.push(syntheticFlow(n));
      store.batch(() => flows.forEach((f) => store.end(f)));
      ids.push(...flows.map((f) => f.id));
    }
    const web = await startWebUi({ store, port: 0 });
    const home = await Deno.makeTempDir({ prefix: "wirescope-web-long-chromium-" });
    const browser = await Chromium.launch({ home });
    try {
      const s = await browser.newPage();
      const evaluate = <T>(e: string) => browser.evaluate<T>(s, e);
      await browser.load(s, web.url);
      await until("the first rows", () => evaluate<boolean>("!!document.querySelector('.row[data-id]')"));
      const idAt = async (index: number) => {
        await evaluate(
          `(() => { const l = document.getElementById('list'); l.scrollTop = ${index} * 24; })()`,
        );
        let id: string | null = null;
        await until(`row ${index}`, async () => {
          id = await evaluate<string | null>(
            `document.querySelector('.row[data-index="${index}"]:not([hidden])')?.dataset.id ?? null`,
          );
          return id !== null;
        });
        return id;
      };
      // The end first: far from the start, it comes from the end back, not after 12,000 rows.
      assert.equal(await idAt(N - 1), ids[N - 1]);
      assert.ok(
        (await evaluate<number>("Number(document.body.dataset.loaded)")) < N / 2,
        "the end showed before the rest loaded",
      );
      for (const index of [N - 300, Math.floor(N / 2), 150, 5000, 9000, 0, N - 1]) {
        assert.equal(await idAt(index), ids[index], `row ${index}`);
      }
      // Through the whole list: every row loaded once, in its place.
      for (let i = 0; i < N; i += 1500) assert.equal(await idAt(i), ids[i], `row ${i}`);
      await until(
        "every row loaded",
        async () => (await evaluate<number>("Number(document.body.dataset.loaded)")) === N,
      );
      for (const index of [1, 2345, 6789, N - 2]) assert.equal(await idAt(index), ids[index], `row ${index}`);
      assert.match(
        await evaluate<string>("document.getElementById('count').textContent"),
        /^12,000 of 12,000 flows$/,
      );
    } finally {
      await browser.close();
      await web.close();
      await store.close();
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(home, { recursive: true });
    }
  },
});
