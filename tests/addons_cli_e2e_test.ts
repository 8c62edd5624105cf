/**
 * The command with addon files: `-s FILE` with `--set`, a header the addon adds seen by a
 * loopback origin through the explicit proxy; the file rewritten while the proxy runs (the next
 * request shows the new header); a syntax error written (the old version stays, one log line
 * names the error); `--help` with `-s` lists the addon's options; a file that cannot be loaded
 * at start is one line and exit 2.
 */
import assert from "node:assert/strict";
import { Cli, decoder, freePort, LAUNCHER } from "./cli_process.ts";

const addon = (tag: string) => `
export default {
  name: "tagger",
  options: { suffix: { type: "string", default: "none", help: "appended to x-addon" } },
  request(flow, ctx) {
    flow.request.headers.set("x-addon", "${tag}-" + ctx.options.suffix);
  },
};
`;

async function curlVia(proxyPort: number, url: string): Promise<string> {
  const o = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "10", "-x", `http://127.0.0.1:${proxyPort}`, url],
  }).output();
  assert.equal(o.code, 0, decoder.decode(o.stderr));
  return decoder.decode(o.stdout);
}

Deno.test({
  name:
    "wirescope -s FILE --set: the addon's header reaches the origin; reloaded on change; a broken version keeps the old",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-addons-cli-" });
    const file = `${dir}/tagger.ts`;
    await Deno.writeTextFile(file, addon("v1"));
    const origin = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (req) => new Response(`x-addon=${req.headers.get("x-addon")}`),
    );
    const port = freePort();
    const cli = new Cli([
      "--confdir",
      `${dir}/conf`,
      "--no-store",
      "--allow-local-destinations",
      "--mode",
      `regular@127.0.0.1:${port}`,
      "-s",
      file,
      "--set",
      "suffix=blue",
    ]);
    const url = `http://127.0.0.1:${origin.addr.port}/`;
    try {
      // Up once its port accepts (bounded).
      for (let i = 0;; i++) {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          break;
        } catch {
          if (i >= 300) throw new Error(`wirescope did not start: ${cli.stderr}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      assert.equal(await curlVia(port, url), "x-addon=v1-blue");

      // Rewritten while running: the next request shows the new version (the --set value carries over).
      await Deno.writeTextFile(file, addon("v2"));
      let body = "";
      for (let i = 0; i < 100 && body !== "x-addon=v2-blue"; i++) {
        await new Promise((r) => setTimeout(r, 100));
        body = await curlVia(port, url);
      }
      assert.equal(body, "x-addon=v2-blue");

      // A syntax error: logged once, naming the file; v2 keeps serving.
      await Deno.writeTextFile(file, "export default { request( {\n");
      await cli.waitFor(() => /cannot load addon .*tagger\.ts/.test(cli.stderr), "the reload error", 15_000);
      await new Promise((r) => setTimeout(r, 300));
      const errorLines = cli.stderr.split("\n").filter((l) =>
        l.includes("tagger.ts") && /cannot load/.test(l)
      );
      assert.equal(errorLines.length, 1, cli.stderr);
      assert.match(errorLines[0]!, /previous version stays loaded/);
      assert.equal(await curlVia(port, url), "x-addon=v2-blue");
    } finally {
      await cli.stop("SIGINT");
      await origin.shutdown();
    }

    // --help with -s lists the addon's options.
    await Deno.writeTextFile(file, addon("v3"));
    const help = await new Deno.Command(LAUNCHER, { args: ["-s", file, "--help"], env: { NO_COLOR: "1" } })
      .output();
    assert.equal(help.code, 0, decoder.decode(help.stderr));
    assert.match(
      decoder.decode(help.stdout),
      /Options of the loaded addons[^\n]*\n\s+suffix \(string, tagger\)\s+appended to x-addon/,
    );

    // A file that cannot be loaded at start: one line, exit 2.
    await Deno.writeTextFile(file, "export default { request( {\n");
    const bad = await new Deno.Command(LAUNCHER, {
      args: [
        "--confdir",
        `${dir}/conf`,
        "--no-store",
        "--mode",
        `regular@127.0.0.1:${freePort()}`,
        "-s",
        file,
      ],
      env: { NO_COLOR: "1" },
    }).output();
    assert.equal(bad.code, 2);
    const lines = decoder.decode(bad.stderr).trim().split("\n");
    assert.equal(lines.length, 1, decoder.decode(bad.stderr));
    assert.match(lines[0]!, /^wirescope: cannot load addon .*tagger\.ts/);
    // An option no addon declares: one line, exit 2.
    await Deno.writeTextFile(file, addon("v4"));
    const unknown = await new Deno.Command(LAUNCHER, {
      args: [
        "--confdir",
        `${dir}/conf`,
        "--no-store",
        "--mode",
        `regular@127.0.0.1:${freePort()}`,
        "-s",
        file,
        "--set",
        "nope=1",
      ],
      env: { NO_COLOR: "1" },
    }).output();
    assert.equal(unknown.code, 2);
    assert.match(decoder.decode(unknown.stderr), /^wirescope: unknown option nope \(known: suffix\)\n$/);
    await Deno.remove(dir, { recursive: true });
  },
});
