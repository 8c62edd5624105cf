/**
 * examples/addons/ end to end, loaded as a user would: every example file given to the command
 * with `-s` (and its options with `--set`), curl through the explicit proxy to a loopback origin.
 * The examples are documentation: this keeps them working.
 */
import assert from "node:assert/strict";
import { Cli, decoder, freePort } from "./cli_process.ts";

const EXAMPLES = new URL("../examples/addons/", import.meta.url).pathname;

async function curl(proxyPort: number, url: string): Promise<{ status: number; body: string; type: string }> {
  const o = await new Deno.Command("curl", {
    args: [
      "-sS",
      "--max-time",
      "10",
      "-x",
      `http://127.0.0.1:${proxyPort}`,
      "-w",
      "\n%{http_code} %{content_type}",
      url,
    ],
  }).output();
  assert.equal(o.code, 0, decoder.decode(o.stderr));
  const text = decoder.decode(o.stdout);
  const cut = text.lastIndexOf("\n");
  const [status, type] = text.slice(cut + 1).split(" ");
  return { status: Number(status), body: text.slice(0, cut), type: type ?? "" };
}

Deno.test({
  name: "examples/addons: each example through the command (-s, --set) with curl",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-examples-" });
    const seen: { path: string; via: string | null }[] = [];
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
      const path = new URL(req.url).pathname;
      seen.push({ path, via: req.headers.get("x-via") });
      if (path === "/page.html") {
        return new Response("<button>Login</button> <a>Login</a>", {
          headers: { "content-type": "text/html" },
        });
      }
      if (path === "/data.json") return Response.json({ users: [], total: 0 });
      return new Response(`origin ${path}`);
    });
    const port = freePort();
    const examples = [...Deno.readDirSync(EXAMPLES)].filter((e) => e.name.endsWith(".ts")).map((e) => e.name)
      .sort();
    assert.deepEqual(examples, [
      "add_header.ts",
      "block_trackers.ts",
      "delay_responses.ts",
      "log_json_api.ts",
      "mock_endpoint.ts",
      "rewrite_body.ts",
    ]);
    const cli = new Cli([
      "--confdir",
      `${dir}/conf`,
      "--no-store",
      "--allow-local-destinations",
      "-v",
      "--mode",
      `regular@127.0.0.1:${port}`,
      ...examples.flatMap((f) => ["-s", `${EXAMPLES}${f}`]),
      ...["via_value=examples-test", "trackers=localhost", "rewrite_from=Login", "rewrite_to=Sign in"]
        .flatMap((s) => ["--set", s]),
      ...["delay_ms=700", "delay_match=/slow$", "mock_path=/api/me"].flatMap((s) => ["--set", s]),
    ]);
    const base = (host = "127.0.0.1") => `http://${host}:${origin.addr.port}`;
    try {
      for (let i = 0;; i++) {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          break;
        } catch {
          if (i >= 300) throw new Error(`wirescope did not start: ${cli.stderr}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      await t.step("add_header: the origin sees x-via", async () => {
        assert.equal((await curl(port, `${base()}/hello`)).body, "origin /hello");
        assert.deepEqual(seen.at(-1), { path: "/hello", via: "examples-test" });
      });
      await t.step("block_trackers: a listed host gets 204, the origin is not contacted", async () => {
        const before = seen.length;
        const r = await curl(port, `${base("localhost")}/pixel.gif`);
        assert.equal(r.status, 204);
        assert.equal(r.body, "");
        assert.equal(seen.length, before);
      });
      await t.step("rewrite_body: HTML text replaced", async () => {
        const r = await curl(port, `${base()}/page.html`);
        assert.equal(r.body, "<button>Sign in</button> <a>Sign in</a>");
      });
      await t.step("log_json_api: one log line per JSON call", async () => {
        await curl(port, `${base()}/data.json`);
        const url = `${base()}/data.json`.replace(/[.\\/]/g, "\\$&");
        await cli.waitFor(
          () => new RegExp(`GET ${url} 200 \\d+B keys=users,total`).test(cli.stderr),
          "the line",
        );
      });
      await t.step("delay_responses: a matching response is held at least delay_ms", async () => {
        const start = performance.now();
        assert.equal((await curl(port, `${base()}/slow`)).body, "origin /slow");
        assert.ok(performance.now() - start >= 700, "held at least delay_ms");
      });
      await t.step("mock_endpoint: canned JSON, the origin is not contacted", async () => {
        const before = seen.length;
        const r = await curl(port, `${base()}/api/me?x=1`);
        assert.equal(r.type, "application/json");
        assert.deepEqual(JSON.parse(r.body), { id: 42, name: "Ada", plan: "pro", mocked: true });
        assert.equal(seen.length, before);
      });
      assert.doesNotMatch(cli.stderr, /failed: /, "no addon hook threw");
    } finally {
      await cli.stop("SIGINT");
      await origin.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
