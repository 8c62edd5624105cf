/**
 * The web UI's content views in a real browser (Debian's `chromium`, headless): JSON folds
 * (the text stays exactly `JSON.stringify(value, null, 2)`; a click hides an object's inside),
 * a gRPC body's messages as protobuf raw fields, text in the charset its `Content-Type` names,
 * HTML indented, the picker overriding the view, and the connection's server certificate
 * (subject, issuer, validity, names). Flows are written to a store directly.
 */
import assert from "node:assert/strict";
import { SqliteFlowStore } from "../src/flows/store.ts";
import { startWebUi } from "../src/web/server.ts";
import { syntheticFlow } from "../src/flows/testdata/flows.ts";
import type { HttpFlow } from "../src/flows/flow.ts";
import { Chromium } from "./chromium.ts";

const SHOTS = Deno.env.get("UPDATE_SCREENSHOTS") === "1"
  ? new URL("../docs/screenshots/", import.meta.url).pathname
  : `${Deno.env.get("TMPDIR") ?? "/tmp"}/wirescope-web-screenshots/`;

async function hasChromium(): Promise<boolean> {
  return (await new Deno.Command("sh", { args: ["-c", "command -v chromium"], stdout: "null" }).output())
    .success;
}

async function until(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  for (let i = 0; i < 1000 && Date.now() < end; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** An HTTP flow of the synthetic set, its response replaced. */
function flowWith(n: number, path: string, contentType: string, body: Uint8Array): HttpFlow {
  let k = n;
  let flow = syntheticFlow(k);
  while (flow.type !== "http" || !flow.response) flow = syntheticFlow(++k);
  const f = structuredClone(flow) as HttpFlow;
  f.request.path = path;
  f.response!.status = 200;
  f.response!.headers = [["Content-Type", contentType], ["Content-Length", String(body.byteLength)]];
  f.response!.body = { content: body, size: body.byteLength, truncated: false };
  return f;
}

const JSON_VALUE = { a: { b: [1, 2, { c: "d" }] }, e: true, f: null };

Deno.test({
  name:
    "web UI in Chromium: content views (JSON folds, gRPC protobuf, charset, HTML, picker) and the server certificate",
  ignore: !(await hasChromium()),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-web-views-" });
    const store = SqliteFlowStore.open(`${dir}/flows.db`);
    const enc = new TextEncoder();
    // message 1 { 1: 150, 2: "hi" } and message 2 { 3 { 1: 7 } }
    const m1 = [0x08, 0x96, 0x01, 0x12, 0x02, 0x68, 0x69];
    const m2 = [0x1a, 0x02, 0x08, 0x07];
    const grpc = Uint8Array.from([0, 0, 0, 0, m1.length, ...m1, 0, 0, 0, 0, m2.length, ...m2]);
    const flows = [
      flowWith(10, "/json", "application/json", enc.encode(JSON.stringify(JSON_VALUE))),
      flowWith(20, "/grpc", "application/grpc", grpc),
      flowWith(
        30,
        "/cp1251",
        "text/plain; charset=windows-1251",
        Uint8Array.from([0xcf, 0xf0, 0xe8, 0xe2, 0xe5, 0xf2]),
      ),
      flowWith(
        40,
        "/page",
        "text/html; charset=utf-8",
        enc.encode("<html><body><p>Hi <b>there</b></p></body></html>"),
      ),
    ];
    flows[0]!.tls = {
      sni: "example.com",
      alpnOffered: ["h2", "http/1.1"],
      passthrough: false,
      serverCertificate: {
        subject: "CN=example.com",
        issuer: "CN=Test CA, O=Tests",
        dnsNames: ["example.com", "www.example.com"],
        ipAddresses: ["93.184.216.34"],
        validFrom: "2025-01-01T00:00:00.000Z",
        validTo: "2099-01-01T00:00:00.000Z",
        fingerprintSha256: "AB:CD",
      },
    };
    store.batch(() => flows.forEach((f) => store.end(f)));
    const web = await startWebUi({ store, port: 0 });
    const home = await Deno.makeTempDir({ prefix: "wirescope-web-views-chromium-" });
    const browser = await Chromium.launch({ home });
    try {
      const s = await browser.newPage();
      await browser.send("Emulation.setDeviceMetricsOverride", {
        width: 1400,
        height: 820,
        deviceScaleFactor: 1,
        mobile: false,
      }, s);
      const evaluate = <T>(e: string) => browser.evaluate<T>(s, e);
      await browser.load(s, web.url);
      const open = async (path: string, selector: string) => {
        await until(`the row of ${path}`, () =>
          evaluate<boolean>(
            `[...document.querySelectorAll('.row[data-id]:not([hidden])')].some((r) => r.querySelector('.c-path').textContent === ${
              JSON.stringify(path)
            } && (r.click(), true))`,
          ));
        await until(
          `${selector} of ${path}`,
          () => evaluate<boolean>(`!!document.querySelector('#detail .s-response ${selector}')`),
        );
        return await evaluate<string>(
          `document.querySelector('#detail .s-response ${selector}').textContent`,
        );
      };

      // JSON: exact pretty text; a click on "a"'s brace folds it away.
      assert.equal(await open("/json", "pre.json"), JSON.stringify(JSON_VALUE, null, 2));
      const folded = await evaluate<{ collapsed: boolean; display: string }>(`(() => {
        const opener = document.querySelector('#detail .s-response pre.json .j-inner .j-open');
        opener.click();
        const fold = opener.parentElement;
        return { collapsed: fold.classList.contains('collapsed'),
          display: getComputedStyle(fold.querySelector('.j-inner')).display };
      })()`);
      assert.deepEqual(folded, { collapsed: true, display: "none" });
      // The certificate of the connection.
      const cert = await evaluate<string[]>(
        "['.cert-subject', '.cert-issuer', '.cert-validity', '.cert-names'].map((c) => document.querySelector('#detail .certificate ' + c).textContent)",
      );
      assert.deepEqual(cert, [
        "CN=example.com",
        "CN=Test CA, O=Tests",
        "2025-01-01T00:00:00.000Z to 2099-01-01T00:00:00.000Z (valid)",
        "example.com, www.example.com, 93.184.216.34",
      ]);
      // The picker overrides the view: hex of the same bytes.
      await evaluate(`(() => { const s = document.querySelector('#detail .s-response select.view-select');
        s.value = 'hex'; s.dispatchEvent(new Event('change')); })()`);
      await until(
        "the hex view",
        () => evaluate<boolean>("!!document.querySelector('#detail .s-response pre.hex')"),
      );
      assert.match(
        await evaluate<string>("document.querySelector('#detail .s-response pre.hex').textContent"),
        /^00000000 {2}7b 22 61 22/,
      );

      // gRPC: two length-prefixed messages, each as raw fields.
      assert.equal(
        await open("/grpc", "pre.protobuf"),
        'message 1 (7 bytes):\n  1: 150\n  2: "hi"\n\nmessage 2 (4 bytes):\n  3 {\n    1: 7\n  }',
      );
      await Deno.mkdir(SHOTS, { recursive: true });
      const { data } = await browser.send("Page.captureScreenshot", { format: "png" }, s);
      await Deno.writeFile(
        `${SHOTS}flow-detail-grpc.png`,
        Uint8Array.from(atob(data as string), (c) => c.charCodeAt(0)),
      );
      // windows-1251 text, decoded with that charset.
      assert.equal(await open("/cp1251", "pre.text"), "Привет");
      // HTML indented, as text.
      assert.equal(
        await open("/page", "pre.markup"),
        "<html>\n  <body>\n    <p>\n      Hi\n      <b>\n        there\n      </b>\n    </p>\n  </body>\n</html>",
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
