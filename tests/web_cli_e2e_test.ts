/**
 * `wirescope --web` as README runs it: the URL with its token is printed at start, the token gets
 * a session and the API answers with the run's flows; without it the API says 401; the UI's port
 * is refused through the explicit proxy even with `--allow-local-destinations`; SIGINT stops both.
 */
import assert from "node:assert/strict";
import { Cli, freePort } from "./cli_process.ts";
import type { FlowPageJson } from "../src/web/api_types.ts";

async function curl(args: string[]): Promise<string> {
  const o = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", ...args],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(o.stdout);
}

Deno.test({
  name: "wirescope --web prints a tokened URL; the API needs it; the UI is refused through the proxy",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-web-cli-" });
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("hi"));
    const proxyPort = freePort();
    const webPort = freePort();
    const cli = new Cli([
      "--confdir",
      dir,
      "--mode",
      `regular@127.0.0.1:${proxyPort}`,
      "--allow-local-destinations",
      "--store",
      `${dir}/flows.db`,
      "--web",
      String(webPort),
    ]);
    try {
      await cli.waitFor(() => /web UI at http:\/\/\S+/.test(cli.stderr), "the web UI's URL");
      const url = /web UI at (http:\/\/\S+)/.exec(cli.stderr)![1]!;
      assert.match(url, new RegExp(`^http://127\\.0\\.0\\.1:${webPort}/\\?token=[\\w-]{20,}$`));
      const via = `http://127.0.0.1:${proxyPort}`;
      assert.equal(await curl(["-x", via, `http://127.0.0.1:${origin.addr.port}/a`]), "200");
      // The UI through the proxy: refused, by address and by name.
      assert.equal(await curl(["-x", via, `http://127.0.0.1:${webPort}/`]), "502");
      assert.equal(await curl(["-x", via, `http://localhost:${webPort}/api/flows`]), "502");

      const api = `http://127.0.0.1:${webPort}/api/flows`;
      const denied = await fetch(api);
      assert.equal(denied.status, 401);
      await denied.body?.cancel();
      const entered = await fetch(url, { redirect: "manual" });
      await entered.body?.cancel();
      const cookie = entered.headers.get("set-cookie")!.split(";")[0]!;
      // The flow through the proxy (and the two refusals) are listed once committed.
      let page: FlowPageJson = { flows: [] };
      for (let i = 0; i < 100 && page.flows.length < 3; i++) {
        page = await (await fetch(api, { headers: { cookie } })).json();
        if (page.flows.length < 3) await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(page.flows.map((f) => f.path), ["/a", "/", "/api/flows"]);
      assert.equal(page.flows[0]!.status, 200);
      assert.ok(page.flows[1]!.error);
      assert.equal(await cli.stop("SIGINT"), 0);
      const after = await fetch(api).catch((e) => e as Error);
      assert.ok(after instanceof Error, "the UI stops with the process");
    } finally {
      await cli.stop("SIGKILL").catch(() => {});
      await origin.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
