/**
 * The web UI's WireGuard page in a real browser (Debian's `chromium`, headless), against the
 * command (`wirescope --mode wireguard --web`) with real wireguard-go clients of the rig:
 *
 * - the running peer shows online after its handshake, with bytes counted each way;
 * - a peer added in the page: its config downloads (and equals the file written to the confdir),
 *   and its QR code, cut from a screenshot of the page, decodes with `zbarimg` to the same config,
 *   which then connects a new wireguard-go client whose request through the tunnel is answered;
 * - disabled in the page, that client's traffic stops (the first client's goes on);
 * - the QR code the command printed at start, drawn as a terminal shows it (half blocks in the
 *   colours its escape codes set, on a dark terminal), decodes to the first client's config.
 *
 * The request through the tunnel is for the CA's page (`http://wirescope.cert/`, answered by the
 * proxy itself), so no origin is needed. Screenshots go to docs/screenshots/ with
 * `UPDATE_SCREENSHOTS=1`.
 */
import assert from "node:assert/strict";
import { Cli, freePort } from "./cli_process.ts";
import { Chromium } from "./chromium.ts";
import { Rig, type RigClient, sh } from "./rig.ts";
import type { WireGuardPageJson } from "../src/web/api_types.ts";

const SHOTS = Deno.env.get("UPDATE_SCREENSHOTS") === "1"
  ? new URL("../docs/screenshots/", import.meta.url).pathname
  : `${Deno.env.get("TMPDIR") ?? "/tmp"}/wirescope-web-screenshots/`;

async function has(cmd: string): Promise<boolean> {
  return (await new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" }).output())
    .success;
}
const ready = Deno.uid() === 0 && await has("chromium") && await has("zbarimg") && await has("wireguard-go");

/** Polls `check` every 100 ms until it is true, at most `ms`. */
async function until(what: string, check: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  for (let i = 0; i < 2000 && Date.now() < end; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A UDP port free right now. */
function freeUdpPort(): number {
  const s = Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 });
  const port = (s.addr as Deno.NetAddr).port;
  s.close();
  return port;
}

/** Decodes the QR codes in an image file with zbarimg; the texts found. */
async function zbar(file: string): Promise<string> {
  const out = await new Deno.Command("zbarimg", {
    args: ["--raw", "-q", "-Sbinary", file],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  assert.ok(out.success, `zbarimg found no code in ${file}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

/** The CA page through the client's tunnel: the HTTP status, "000" when nothing answered. */
async function certPageThrough(client: RigClient, seconds = 10): Promise<string> {
  return (await client.exec([
    "curl",
    "-sS",
    "--max-time",
    String(seconds),
    "--resolve",
    "wirescope.cert:80:10.0.0.1",
    "-o",
    "/dev/null",
    "-w",
    "%{http_code}",
    "http://wirescope.cert/",
  ], { allowFail: true })).trim();
}

/**
 * Draws terminal text as the terminal shows it, one module a pixel block: each cell is one module
 * wide and two high (`▀` the upper half in the foreground colour, `▄` the lower, `█` both, a space
 * neither), colours from the SGR codes (30/37 foreground black/white, 40/47 background, 0 the
 * terminal's own: light text on black). Returns a binary PGM image with a margin of the terminal's
 * background.
 */
export function renderTerminal(text: string, scale = 6): Uint8Array {
  const WHITE = 255, BLACK = 0;
  const DEFAULT_FG = 200, DEFAULT_BG = 20;
  const rows: number[][] = [];
  let fg = DEFAULT_FG, bg = DEFAULT_BG;
  for (const line of text.split("\n")) {
    const top: number[] = [], bottom: number[] = [];
    // deno-lint-ignore no-control-regex
    const re = /\x1b\[(\d+(?:;\d+)*)m|([\s\S])/g;
    for (const m of line.matchAll(re)) {
      if (m[1] !== undefined) {
        for (const code of m[1].split(";").map(Number)) {
          if (code === 0) [fg, bg] = [DEFAULT_FG, DEFAULT_BG];
          else if (code === 30) fg = BLACK;
          else if (code === 37) fg = WHITE;
          else if (code === 40) bg = BLACK;
          else if (code === 47) bg = WHITE;
        }
        continue;
      }
      const ch = m[2]!;
      if (ch === "\r") continue;
      top.push(ch === "▀" || ch === "█" ? fg : bg);
      bottom.push(ch === "▄" || ch === "█" ? fg : bg);
    }
    if (top.length > 0) rows.push(top, bottom);
  }
  const margin = 4;
  const cols = Math.max(...rows.map((r) => r.length)) + 2 * margin;
  const height = (rows.length + 2 * margin) * scale, width = cols * scale;
  const header = new TextEncoder().encode(`P5\n${width} ${height}\n255\n`);
  const pixels = new Uint8Array(width * height).fill(DEFAULT_BG);
  rows.forEach((row, y) =>
    row.forEach((v, x) => {
      for (let dy = 0; dy < scale; dy++) {
        const at = ((y + margin) * scale + dy) * width + (x + margin) * scale;
        pixels.fill(v, at, at + scale);
      }
    })
  );
  const out = new Uint8Array(header.length + pixels.length);
  out.set(header);
  out.set(pixels, header.length);
  return out;
}

Deno.test({
  name:
    "web UI WireGuard page in Chromium: peers online with bytes, add a peer → QR decodes → it connects, disable stops it; terminal QR decodes",
  ignore: !ready,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-web-wg-" });
    const home = await Deno.makeTempDir({ prefix: "wirescope-web-wg-chromium-" });
    const wgPort = freeUdpPort();
    const webPort = freePort();
    let cli: Cli | undefined;
    let rig: Rig | undefined;
    let rig2: Rig | undefined;
    let browser: Chromium | undefined;
    try {
      rig = await Rig.fromConfigs(1, async (hosts) => {
        cli = new Cli([
          "--mode",
          `wireguard@${wgPort}`,
          "--confdir",
          confdir,
          "--peers",
          "1",
          "--wg-endpoint",
          hosts[0]!,
          "--store",
          `${confdir}/flows.db`,
          "--web",
          String(webPort),
        ]);
        await cli.waitFor(() => /web UI at http:\/\/\S+/.test(cli!.stderr), "the web UI's URL");
        return [await Deno.readTextFile(`${confdir}/wireguard-client-1.conf`)];
      });
      const running = cli! as Cli;
      const url = /web UI at (http:\/\/\S+)/.exec(running.stderr)![1]!;
      const first = rig.clients[0]!;
      const config1 = await Deno.readTextFile(`${confdir}/wireguard-client-1.conf`);

      // --- the terminal's QR code: drawn as shown, decoded, equal to the config file ---
      const banner = running.stdout;
      const start = banner.indexOf("\x1b[47m", banner.indexOf("Client configuration 1"));
      const end = banner.indexOf("CA certificate:", start);
      assert.ok(start > 0 && end > start, banner);
      const image = `${home}/terminal-qr.pgm`;
      await Deno.writeFile(image, renderTerminal(banner.slice(start, end)));
      assert.equal((await zbar(image)).trimEnd(), config1.trimEnd(), "the terminal QR code is the config");

      // --- the running peer: online with bytes after a request through its tunnel ---
      assert.equal(await certPageThrough(first), "200");
      browser = await Chromium.launch({ home });
      const b = browser;
      const s = await b.newPage();
      await b.send("Emulation.setDeviceMetricsOverride", {
        width: 1300,
        height: 900,
        deviceScaleFactor: 1,
        mobile: false,
      }, s);
      const evaluate = <T>(e: string) => b.evaluate<T>(s, e);
      const shot = async (name: string, clip?: { x: number; y: number; width: number; height: number }) => {
        await Deno.mkdir(SHOTS, { recursive: true });
        const { data } = await b.send(
          "Page.captureScreenshot",
          { format: "png", ...(clip ? { clip: { ...clip, scale: 1 } } : {}) },
          s,
        );
        const file = `${SHOTS}${name}.png`;
        await Deno.writeFile(file, Uint8Array.from(atob(data as string), (c) => c.charCodeAt(0)));
        return file;
      };
      await b.load(s, url);
      await evaluate("document.getElementById('nav-wireguard').click()");
      const row = (n: number) =>
        evaluate<{ state: string; rx: number; tx: number; name: string; addresses: string } | null>(`(() => {
          const r = document.querySelector('tr.wg-peer[data-index="${n}"]');
          return r ? { state: r.dataset.state, rx: Number(r.dataset.rx), tx: Number(r.dataset.tx),
            name: r.querySelector('.wg-name').textContent, addresses: r.querySelector('.wg-addresses').textContent } : null;
        })()`);
      await until("peer 1 online with bytes each way", async () => {
        const r = await row(1);
        return r?.state === "online" && r.rx > 0 && r.tx > 0;
      });
      const r1 = (await row(1))!;
      assert.equal(r1.name, "peer 1");
      assert.match(r1.addresses, /^10\.0\.0\.2\/32, fd[0-9a-f:]+::2\/128$/);
      assert.equal(
        await evaluate<string>("document.querySelector('#wg-public-key').textContent"),
        /PublicKey = (\S+)/.exec(config1.split("[Peer]")[1]!)![1],
      );
      assert.equal(
        await evaluate<string>("document.getElementById('wg-endpoint').textContent"),
        `${rig.hostAddress}:${wgPort}`,
      );
      // The CA page link answers (from the UI, with the session).
      assert.match(
        await evaluate<string>("fetch(document.getElementById('wg-cert-link').href).then((r) => r.text())"),
        /Trust wirescope on this device/,
      );
      // More traffic, more bytes (the page refreshes itself).
      const before = r1.rx;
      for (let i = 0; i < 3; i++) assert.equal(await certPageThrough(first), "200");
      await until("peer 1's bytes grow", async () => ((await row(1))?.rx ?? 0) > before);

      // --- add a peer in the page ---
      await evaluate("document.getElementById('wg-name').value = 'phone'");
      await evaluate("document.getElementById('wg-add').click()");
      await until("peer 2 listed", async () => (await row(2))?.name === "phone");
      await until(
        "its QR code shown",
        () => evaluate<boolean>("(document.querySelector('img.wg-qr')?.naturalWidth ?? 0) > 0"),
      );
      const file2 = await Deno.readTextFile(`${confdir}/wireguard-client-2.conf`);
      const downloaded = await evaluate<string>(
        "fetch(document.querySelector('a.wg-download').href).then((r) => r.text())",
      );
      assert.equal(downloaded, file2, "the download is the file in the confdir");
      assert.match(downloaded, /Address = 10\.0\.0\.3\/32, fd[0-9a-f:]+::3\/128/);
      const rect = await evaluate<{ x: number; y: number; width: number; height: number }>(
        "(() => { const r = document.querySelector('img.wg-qr').getBoundingClientRect(); return { x: r.x, y: r.y, width: r.width, height: r.height }; })()",
      );
      await shot("wireguard-page");
      const qrShot = await shot("wireguard-peer-qr", rect);
      const decoded = await zbar(qrShot);
      assert.equal(decoded.trimEnd(), file2.trimEnd(), "the QR code on the page is the config");
      const api = await evaluate<WireGuardPageJson>("fetch('/api/wireguard').then((r) => r.json())");
      assert.equal(api.peers.length, 2);

      // --- the decoded config connects a new wireguard-go client ---
      const endpointHost = /Endpoint = (\S+):\d+/.exec(decoded)![1]!;
      rig2 = await Rig.fromConfigs(1, async (hosts) => {
        // The config's endpoint is the first namespace's side of the host; this namespace reaches
        // it over its own veth (a phone on another network would route to it the same way).
        const link = (await sh(["ip", "-o", "-4", "addr", "show"])).split("\n").find((l) =>
          l.includes(` ${hosts[0]}/`)
        );
        const ifname = /^\d+: (\S+)/.exec(link ?? "")?.[1];
        assert.ok(ifname?.endsWith("h0"), `the host side of the new namespace: ${link}`);
        const ns = ifname!.replace(/h0$/, "c0");
        await sh([
          "ip",
          "netns",
          "exec",
          ns,
          "ip",
          "route",
          "add",
          `${endpointHost}/32`,
          "via",
          hosts[0]!,
          "dev",
          "eth0",
        ]);
        return [decoded];
      });
      const second = rig2.clients[0]!;
      assert.equal(second.address4, "10.0.0.3");
      assert.equal(await certPageThrough(second), "200", "the new peer's request through its tunnel");
      await until("peer 2 online with bytes", async () => {
        const r = await row(2);
        return r?.state === "online" && r.rx > 0 && r.tx > 0;
      });
      await shot("wireguard-peers-online");

      // --- disable it in the page: its traffic stops, the first client's goes on ---
      await evaluate("document.querySelector('tr.wg-peer[data-index=\"2\"] button.wg-toggle').click()");
      await until("peer 2 disabled", async () => (await row(2))?.state === "disabled");
      assert.equal(await certPageThrough(second, 4), "000", "a disabled peer gets nothing through");
      assert.equal(await certPageThrough(first), "200");
      // The file stays; enabled again, it connects again (a new handshake).
      await evaluate("document.querySelector('tr.wg-peer[data-index=\"2\"] button.wg-toggle').click()");
      await until("peer 2 enabled", async () => (await row(2))?.state !== "disabled");
      // The client still holds the session the server forgot: wireguard-go makes a new handshake once
      // its data has gone unanswered for 15 s (keepalive + rekey timeout).
      await until("peer 2 through again", async () => (await certPageThrough(second, 3)) === "200", 45_000);
      // Removed: out of the list and its file gone.
      await evaluate("document.querySelector('tr.wg-peer[data-index=\"2\"] button.wg-remove').click()");
      await until("peer 2 removed", async () => (await row(2)) === null);
      await assert.rejects(Deno.stat(`${confdir}/wireguard-client-2.conf`), Deno.errors.NotFound);
      assert.equal(await certPageThrough(second, 4), "000");

      // Every route needs the session (and a change the CSRF header).
      const base = `http://127.0.0.1:${webPort}`;
      for (
        const path of [
          "/api/wireguard",
          "/api/wireguard/peers/1/config",
          "/api/wireguard/peers/1/qr.svg",
          "/cert/",
        ]
      ) {
        const r = await fetch(base + path);
        assert.equal(r.status, 401, path);
        await r.body?.cancel();
      }
      const entered = await fetch(url, { redirect: "manual" });
      await entered.body?.cancel();
      const cookie = entered.headers.get("set-cookie")!.split(";")[0]!;
      const noCsrf = await fetch(`${base}/api/wireguard/peers`, {
        method: "POST",
        headers: { cookie, "content-type": "application/json" },
        body: "{}",
      });
      assert.equal(noCsrf.status, 403);
      await noCsrf.body?.cancel();
      assert.equal(await running.stop("SIGINT"), 0);
    } finally {
      await browser?.close();
      await rig2?.close();
      await rig?.close();
      await (cli as Cli | undefined)?.stop("SIGKILL").catch(() => {});
      await Deno.remove(confdir, { recursive: true });
      await Deno.remove(home, { recursive: true });
    }
  },
});
