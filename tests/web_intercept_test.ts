/**
 * Interception, replay and editing in the web UI, in headless Chromium, with curl as the real
 * client through the explicit proxy and a loopback origin that logs what it gets:
 *
 * - an intercept expression typed in the UI (a bad one shows its error); curl's request is held
 *   (curl still waiting, the origin has seen nothing), shows in the list live, a header is edited
 *   in the editor, Resume: the origin sees the edited header and curl completes;
 * - a response held and its status edited: curl gets the new status;
 * - Kill: curl's request fails, the origin never sees it; Resume all lets two held flows go;
 * - Replay: the origin sees the request again, the new flow is listed as a replay;
 * - Duplicate → edit → Send: the origin sees the edited request;
 * - sorting by a column (server side) and Copy URL (read back from the clipboard).
 *
 * Screenshots of the editors go to docs/screenshots/ with `UPDATE_SCREENSHOTS=1` (else /tmp).
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";
import { SqliteFlowStore } from "../src/flows/store.ts";
import { startWebUi } from "../src/web/server.ts";
import { InterceptAddon } from "../src/addons/builtins/intercept.ts";
import { Chromium } from "./chromium.ts";
import type { Flow } from "../src/flows/flow.ts";

const SHOTS = Deno.env.get("UPDATE_SCREENSHOTS") === "1"
  ? new URL("../docs/screenshots/", import.meta.url).pathname
  : `${Deno.env.get("TMPDIR") ?? "/tmp"}/wirescope-web-screenshots/`;

async function hasChromium(): Promise<boolean> {
  return (await new Deno.Command("sh", { args: ["-c", "command -v chromium"], stdout: "null" }).output())
    .success;
}

/** Polls `check` every 100 ms until it is true, at most `ms`. */
async function until(what: string, check: () => Promise<boolean> | boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  for (let i = 0; i < 1000 && Date.now() < end; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** curl in the background: `done` turns true when it exits. */
function curl(
  args: string[],
): { done: boolean; result: Promise<{ code: number; status: string; body: string }> } {
  const c = { done: false, result: Promise.resolve({ code: 0, status: "", body: "" }) };
  c.result = new Deno.Command("curl", {
    args: ["-sS", "--max-time", "30", "-w", "\n%{http_code}", ...args],
    stdout: "piped",
    stderr: "null",
  }).output().then((o) => {
    c.done = true;
    const text = new TextDecoder().decode(o.stdout);
    const cut = text.lastIndexOf("\n");
    return { code: o.code, body: text.slice(0, cut), status: text.slice(cut + 1) };
  });
  return c;
}

Deno.test({
  name: "web UI in Chromium: intercept (edit a held request and response, kill, resume all), replay, " +
    "duplicate → edit → send, sorting, copy URL; with curl through the proxy",
  ignore: !(await hasChromium()),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-web-intercept-" });
    const seen: string[] = [];
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      const path = new URL(req.url).pathname;
      const body = await req.text();
      seen.push(`${req.method} ${path} x-edit=${req.headers.get("x-edit")}${body ? ` body=${body}` : ""}`);
      const status = path.startsWith("/s") ? Number(path.slice(2, 5)) : 200;
      return new Response(`echo ${req.method} ${path}`, {
        status,
        headers: { "content-type": "text/plain" },
      });
    });
    const store = SqliteFlowStore.open(`${dir}/flows.db`);
    const intercept = new InterceptAddon();
    const proxy = await startProxy({
      modes: [{ kind: "regular", hostname: "127.0.0.1", port: 0 }],
      confdir: `${dir}/conf`,
      allowLocalDestinations: true,
      store,
      addons: [intercept],
      onLog: () => {},
    });
    const web = await startWebUi({ proxy, port: 0, intercept });
    const via = `http://127.0.0.1:${proxy.addresses[0]!.addr.port}`;
    const base = `http://127.0.0.1:${origin.addr.port}`;
    const home = await Deno.makeTempDir({ prefix: "wirescope-web-intercept-chromium-" });
    const browser = await Chromium.launch({ home });
    try {
      const s = await browser.newPage();
      await browser.send("Emulation.setDeviceMetricsOverride", {
        width: 1400,
        height: 860,
        deviceScaleFactor: 1,
        mobile: false,
      }, s);
      const evaluate = <T>(expression: string) => browser.evaluate<T>(s, expression);
      const shot = async (name: string) => {
        await Deno.mkdir(SHOTS, { recursive: true });
        const { data } = await browser.send("Page.captureScreenshot", { format: "png" }, s);
        await Deno.writeFile(
          `${SHOTS}${name}.png`,
          Uint8Array.from(atob(data as string), (c) => c.charCodeAt(0)),
        );
      };
      const setIntercept = async (expression: string) => {
        await evaluate(
          `(() => { const i = document.getElementById('intercept'); i.value = ${
            JSON.stringify(expression)
          }; i.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter' })); })()`,
        );
      };
      const heldRows = () =>
        evaluate<number>("document.querySelectorAll('.row.intercepted:not([hidden])').length");
      const openHeld = async () => {
        await until("a held row listed live", async () => (await heldRows()) >= 1);
        await evaluate("document.querySelector('.row.intercepted:not([hidden])').click()");
        await until(
          "the editor",
          () => evaluate<boolean>("!!document.querySelector('#detail:not([hidden]) #editor.editor-held')"),
        );
      };
      const setValue = (id: string, value: string) =>
        evaluate(`document.getElementById('${id}').value = ${JSON.stringify(value)}`);
      // Waits for the element too: a live repaint can replace it between two steps.
      const click = (selector: string) =>
        until(
          `${selector} to click`,
          () =>
            evaluate<boolean>(
              `(() => { const e = document.querySelector(${
                JSON.stringify(selector)
              }); e?.click(); return !!e; })()`,
            ),
        );

      await browser.load(s, web.url);
      await until("live", () => evaluate<boolean>("document.getElementById('conn').textContent === 'live'"));

      // A bad expression: its error, and nothing set.
      await setIntercept("~u (");
      await until(
        "the intercept error",
        () => evaluate<boolean>("!document.getElementById('intercept-error').hidden"),
      );
      assert.equal(intercept.filter, "");

      // --- a held request, a header edited ---
      // `~q`: requests only (an expression that matches the response too holds the flow twice).
      await setIntercept("~u /held & ~q");
      await until("the expression set", () => intercept.filter === "~u /held & ~q");
      const a = curl(["-x", via, "-H", "x-edit: before", `${base}/held`]);
      await openHeld();
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(a.done, false, "curl is still waiting");
      assert.deepEqual([...seen], [], "the origin has seen nothing yet");
      assert.equal(await evaluate<string>("document.getElementById('held').textContent"), "1 held");
      const headers = await evaluate<string>("document.getElementById('edit-headers').value");
      assert.match(headers, /^x-edit: before$/m);
      await setValue("edit-headers", headers.replace("x-edit: before", "x-edit: after"));
      await shot("intercept-request-editor");
      await click("#resume");
      const ra = await a.result;
      assert.equal(ra.status, "200");
      assert.equal(ra.body, "echo GET /held");
      assert.deepEqual([...seen], ["GET /held x-edit=after"], "the origin got the edited header");
      await until("no held row", async () => (await heldRows()) === 0);

      // --- a held response, its status edited ---
      await setIntercept("~u /resp & ~s");
      const b = curl(["-x", via, `${base}/resp`]);
      await openHeld();
      assert.equal(await evaluate<string>("document.getElementById('edit-status').value"), "200");
      assert.equal(await evaluate<string>("document.getElementById('edit-body').value"), "echo GET /resp");
      assert.equal(b.done, false);
      await setValue("edit-status", "418");
      await setValue("edit-body", "edited in the UI");
      await shot("intercept-response-editor");
      await click("#resume");
      const rb = await b.result;
      assert.equal(rb.status, "418");
      // The recorded response is what the client got: the new status with its standard phrase.
      let resp: Flow | undefined;
      await until("the flow stored as ended", async () => {
        await proxy.recorder!.settled();
        resp = (await store.query({ filter: "~u /resp" })).flows[0]?.flow;
        return resp?.timestampEnd !== undefined;
      });
      assert.ok(resp?.type === "http");
      assert.deepEqual([resp.response?.status, resp.response?.reason], [418, "I'm a teapot"]);
      assert.equal(rb.body, "edited in the UI");
      await until("no held row", async () => (await heldRows()) === 0);

      // --- kill ---
      await setIntercept("~u /kill & ~q");
      const c = curl(["-x", via, `${base}/kill`]);
      await openHeld();
      await click("#kill");
      assert.notEqual((await c.result).code, 0, "curl's request fails");
      assert.ok(!seen.some((l) => l.includes("/kill")), "the origin never saw it");

      // --- resume all ---
      await setIntercept("~u /many & ~q");
      const many = [curl(["-x", via, `${base}/many1`]), curl(["-x", via, `${base}/many2`])];
      await until(
        "2 held",
        async () => (await evaluate<string>("document.getElementById('held').textContent")) === "2 held",
      );
      assert.ok(many.every((m) => !m.done));
      await click("#resume-all");
      for (const m of many) assert.equal((await m.result).status, "200");
      await until("nothing held", () => evaluate<boolean>("document.getElementById('held').hidden"));
      await setIntercept("");
      await until("interception off", () => intercept.filter === "");

      // --- replay: the recorded (edited) request again ---
      await proxy.recorder!.settled();
      const openByPath = async (path: string) => {
        await evaluate("document.getElementById('filter').value = ''");
        await until(`${path} listed`, () =>
          evaluate<boolean>(
            `[...document.querySelectorAll('.row:not([hidden])')].some((r) => r.querySelector('.c-path').textContent === ${
              JSON.stringify(path)
            } && !r.classList.contains('live') && !r.classList.contains('intercepted') && !r.classList.contains('replayed'))`,
          ));
        await evaluate(
          `[...document.querySelectorAll('.row:not([hidden])')].find((r) => r.querySelector('.c-path').textContent === ${
            JSON.stringify(path)
          } && !r.classList.contains('replayed')).click()`,
        );
        await until("its detail", () =>
          evaluate<boolean>(
            `!!document.querySelector('#detail:not([hidden]) #replay') && document.querySelector('#detail .detail-title').textContent.endsWith(${
              JSON.stringify(path)
            })`,
          ));
      };
      await openByPath("/held");
      await click("#replay");
      await until(
        "replayed",
        () =>
          evaluate<boolean>("/^replayed: 200/.test(document.getElementById('action-result').textContent)"),
      );
      assert.deepEqual(seen.filter((l) => l.startsWith("GET /held")), [
        "GET /held x-edit=after",
        "GET /held x-edit=after",
      ]);
      await until("the replay listed", () => evaluate<boolean>("!!document.querySelector('.row.replayed')"));

      // --- duplicate → edit → send ---
      await click("#duplicate");
      await until(
        "the send editor",
        () => evaluate<boolean>("!!document.querySelector('#editor.editor-send')"),
      );
      await setValue("edit-method", "POST");
      await setValue("edit-url", `${base}/dup?x=1`);
      const dupHeaders = await evaluate<string>("document.getElementById('edit-headers').value");
      await setValue("edit-headers", dupHeaders.replace("x-edit: after", "x-edit: duplicated"));
      await setValue("edit-body", "a=1");
      await shot("duplicate-editor");
      await click("#send");
      await until(
        "sent",
        () => evaluate<boolean>("/^sent: 200/.test(document.getElementById('edit-result').textContent)"),
      );
      assert.ok(seen.includes("POST /dup x-edit=duplicated body=a=1"), seen.join("\n"));
      const newId = await evaluate<string>("document.getElementById('edit-result').dataset.flowId");
      // The new flow is in the store once its batch is committed (a few ms after the answer).
      await until("the sent flow stored", async () => (await store.get(newId)) !== undefined);
      const made = (await store.get(newId))?.flow;
      assert.equal(
        made?.type === "http" && made.replayOf,
        (await store.query({ filter: "~u /held" })).flows[0]!.flow.id,
      );

      // --- sorting by status, on the server ---
      for (const code of [503, 201, 404]) {
        assert.equal((await curl(["-x", via, `${base}/s${code}`]).result).status, String(code));
      }
      await proxy.recorder!.settled();
      await evaluate("location.reload()");
      await until("rows", () => evaluate<boolean>("!!document.querySelector('.row[data-id]')"));
      const statuses = () =>
        evaluate<string[]>(
          "[...document.querySelectorAll('.row[data-id]:not([hidden])')].sort((a, b) => a.dataset.index - b.dataset.index).map((r) => r.querySelector('.c-status').textContent)",
        );
      const sortedBy = async (descending: boolean) => {
        const list = (await statuses()).filter((x) => /^\d+$/.test(x)).map(Number);
        if (list.length < 5) return false;
        return list.every((v, i) => i === 0 || (descending ? list[i - 1]! >= v : list[i - 1]! <= v)) &&
          list.includes(503) && list.includes(201);
      };
      await click(".list-header .c-status");
      await until("sorted by status, ascending", () => sortedBy(false));
      await click(".list-header .c-status");
      await until("sorted by status, descending", () => sortedBy(true));
      assert.equal((await statuses())[0], "503");
      await shot("sorted-by-status");
      await click(".list-header .c-status");

      // --- copy URL ---
      await browser.send("Browser.grantPermissions", {
        origin: `http://127.0.0.1:${web.addr.port}`,
        permissions: ["clipboardReadWrite", "clipboardSanitizedWrite"],
      });
      await openByPath("/held");
      await evaluate("window.focus()");
      await click("#copy-url");
      await until(
        "copied",
        () => evaluate<boolean>("document.getElementById('action-result').textContent === 'URL copied'"),
      );
      assert.equal(await evaluate<string>("navigator.clipboard.readText()"), `${base}/held`);
    } finally {
      await browser.close();
      await web.close();
      await proxy.close(0);
      await store.close();
      await origin.shutdown();
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(home, { recursive: true });
    }
  },
});
