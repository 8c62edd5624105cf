/**
 * Flow files through the `wirescope` command, end to end on loopback (explicit-proxy mode, curl,
 * a loopback origin that echoes requests): `-w run.db` is the run's flow store (SQLite, 0600,
 * `--save-filter` applied, nothing under the confdir); `-r run.db` prints its flows, marks answer
 * `-f '~marked'`, `-r IN -w OUT` copies (converts without a mode; with one, the live flows follow), and
 * `-r` with a mode prints the old flows and then serves; `wirescope export`
 * writes HAR that `-r` reads back, `curl` lines that send the requests again, and raw HTTP; a
 * wrong combination or argument ends with exit code 2 and one line.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Cli, decoder, freePort, LAUNCHER } from "./cli_process.ts";
import { SqliteFlowStore } from "../src/flows/store.ts";
import { openFlowFile } from "../src/flows/flow_file.ts";
import { BodyDecoder, parseRequestHead, requestFraming } from "../src/proxy/http1.ts";

/** Runs the command to its end. */
async function wirescope(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("timeout", {
    args: ["60", LAUNCHER, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

async function curl(proxyPort: number, url: string, extra: string[] = []): Promise<number> {
  const out = await new Deno.Command("curl", {
    args: [
      "-sS",
      "--max-time",
      "20",
      "-o",
      "/dev/null",
      "-x",
      `http://127.0.0.1:${proxyPort}`,
      ...extra,
      url,
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  return out.code;
}

/** An origin that answers each request with its method, path, body hash and X- headers, as JSON. */
function echoOrigin() {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const body = new Uint8Array(await req.arrayBuffer());
    const url = new URL(req.url);
    return Response.json({
      method: req.method,
      path: url.pathname + url.search,
      sha256: createHash("sha256").update(body).digest("hex"),
      x: [...req.headers].filter(([n]) => n.startsWith("x-")),
    });
  });
}

const flowLines = (stdout: string, origin: number) =>
  stdout.split("\n").filter((l) => l.includes(`http://127.0.0.1:${origin}/`));

const mode = async (path: string) => ((await Deno.stat(path)).mode! & 0o777).toString(8);

Deno.test({
  name: "wirescope: -w run.db is the run's store; -r, -f ~marked, export har/curl/raw read it",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-wfiles-" });
    const origin = echoOrigin();
    const o = origin.addr.port;
    const port = freePort();
    const run = `${dir}/run.db`;
    const cli = new Cli([
      "--confdir",
      `${dir}/conf`,
      "--mode",
      `regular@127.0.0.1:${port}`,
      "--allow-local-destinations", // the origin is on loopback
      "-w",
      run,
      "--save-filter",
      "!~u /skipped",
    ]);
    try {
      await cli.waitFor(() => cli.stdout.includes("CA certificate:"), "the banner");
      assert.equal(await curl(port, `http://127.0.0.1:${o}/a?x=1`, ["-H", "X-Token: it's $secret"]), 0);
      assert.equal(await curl(port, `http://127.0.0.1:${o}/post`, ["--data-binary", "name=O'Brien&v=1"]), 0);
      assert.equal(await curl(port, `http://127.0.0.1:${o}/skipped`), 0);
      assert.equal(await curl(port, `http://127.0.0.1:${o}/c`, ["-X", "DELETE"]), 0);
      await cli.waitFor(() => flowLines(cli.stdout, o).length === 4, "four flow lines");
      assert.equal(await cli.stop("SIGINT"), 0);
      const live = flowLines(cli.stdout, o).filter((l) => !l.includes("/skipped"));
      assert.match(cli.stderr, new RegExp(`flows stored in ${run.replace(/[.]/g, "\\.")}`));
      assert.equal(await mode(run), "600");
      // -w took the place of the per-run store.
      assert.equal([...Deno.readDirSync(`${dir}/conf`)].some((e) => e.name === "flows"), false);

      const read = await wirescope(["-r", run]);
      assert.equal(read.code, 0, read.stderr);
      assert.deepEqual(flowLines(read.stdout, o), live, "the stored flows, --save-filter applied");

      // A mark and a comment set through the library are what -f sees.
      const store = SqliteFlowStore.open(run);
      const post = (await store.query("~m POST")).flows[0]!.flow;
      assert.equal(await store.setMark(post.id, ":star:"), true);
      assert.equal(await store.setComment(post.id, "the login"), true);
      store.closeSync();
      for (const expr of ["~marked", "~marker star", "~comment login"]) {
        const marked = await wirescope(["-r", run, "-f", expr]);
        assert.equal(marked.code, 0, marked.stderr);
        assert.deepEqual(flowLines(marked.stdout, o), [live[1]], expr);
      }

      // export har → a HAR file that -r prints the same way.
      const har = await wirescope(["export", run, `${dir}/out.har`]);
      assert.equal(har.code, 0, har.stderr);
      assert.match(har.stderr, /exported 3 flows as har to /);
      assert.equal(await mode(`${dir}/out.har`), "600");
      const fromHar = await wirescope(["-r", `${dir}/out.har`]);
      assert.equal(fromHar.code, 0, fromHar.stderr);
      assert.deepEqual(flowLines(fromHar.stdout, o), live);

      // export curl → each line sends its request again, straight to the origin.
      const curls = await wirescope(["export", "--format", "curl", "-q", run]);
      assert.equal(curls.code, 0, curls.stderr);
      assert.equal(curls.stderr, "");
      const commands = curls.stdout.trimEnd().split("\n");
      assert.equal(commands.length, 3);
      const echoes = [];
      for (const command of commands) {
        const out = await new Deno.Command("sh", {
          args: ["-c", command.replace(/(^|\| )curl /, "$1curl -sS --max-time 20 ")],
          stdout: "piped",
        })
          .output();
        assert.equal(out.code, 0, command);
        echoes.push(JSON.parse(decoder.decode(out.stdout)));
      }
      assert.deepEqual(echoes.map((e) => `${e.method} ${e.path}`), ["GET /a?x=1", "POST /post", "DELETE /c"]);
      assert.deepEqual(echoes[0].x, [["x-token", "it's $secret"]]);
      assert.equal(echoes[1].sha256, createHash("sha256").update("name=O'Brien&v=1").digest("hex"));

      // export raw --id PREFIX → that flow's request, which the HTTP/1 parser reads back.
      const raw = await wirescope([
        "export",
        "--format",
        "raw",
        "--id",
        // Flow ids are time-ordered (UUID v7): their first characters are shared by flows of the
        // same minute, so the prefix given is the whole id less its last characters.
        post.id.slice(0, -4),
        run,
        `${dir}/post.http`,
      ]);
      assert.equal(raw.code, 0, raw.stderr);
      const bytes = await Deno.readFile(`${dir}/post.http`);
      const head = parseRequestHead(bytes)!;
      assert.equal(head.head.method, "POST");
      assert.equal(head.head.target, "/post");
      const body = new BodyDecoder(requestFraming(head.head)).push(bytes.subarray(head.size));
      assert.equal(decoder.decode(body.data[0]), "name=O'Brien&v=1");
      const missing = await wirescope(["export", "--id", "ffffffff-none", run]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /no flow with id ffffffff-none in /);
    } finally {
      await cli.stop("SIGKILL").catch(() => {});
      await origin.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "wirescope: -w by name (.jsonl, .har, store), -r old.db with a live mode, and one-line usage errors",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-wfiles-" });
    const origin = echoOrigin();
    const o = origin.addr.port;
    try {
      // One run writes JSON lines and HAR through -w names; a second run reads a store made by a
      // first and serves at once.
      const first = freePort();
      const one = new Cli([
        "--confdir",
        `${dir}/conf`,
        "--mode",
        `regular@127.0.0.1:${first}`,
        "--allow-local-destinations",
        "-w",
        `${dir}/old.db`,
      ]);
      try {
        await one.waitFor(() => one.stdout.includes("CA certificate:"), "the banner");
        assert.equal(await curl(first, `http://127.0.0.1:${o}/old`), 0);
        await one.waitFor(() => flowLines(one.stdout, o).length === 1, "the flow line");
        assert.equal(await one.stop("SIGINT"), 0);
      } finally {
        await one.stop("SIGKILL").catch(() => {});
      }

      /** The URL paths of a saved run's flows, in order, as -r reads them. */
      const paths = async (path: string) => {
        const file = await openFlowFile(path);
        const out: string[] = [];
        for await (const f of file.flows()) if (f.type === "http") out.push(f.request.path);
        file.close();
        return out;
      };

      // -r IN -w OUT without a mode converts (--save-filter applies); the same file twice is refused.
      for (const name of ["conv.jsonl", "conv.har", "conv.db"]) {
        const r = await wirescope(["-r", `${dir}/old.db`, "-w", `${dir}/${name}`]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stderr, new RegExp(`copied 1 flows from .*old\\.db to .*${name.replace(".", "\\.")}`));
        assert.deepEqual(await paths(`${dir}/${name}`), ["/old"], name);
        assert.equal(await mode(`${dir}/${name}`), "600");
      }
      const filtered = await wirescope([
        "-r",
        `${dir}/old.db`,
        "-w",
        `${dir}/none.jsonl`,
        "--save-filter",
        "~m POST",
      ]);
      assert.equal(filtered.code, 0, filtered.stderr);
      assert.equal(await Deno.readTextFile(`${dir}/none.jsonl`), "");
      const same = await wirescope(["-r", `${dir}/old.db`, "-w", `${dir}/old.db`]);
      assert.equal(same.code, 2);
      assert.match(
        same.stderr.trim(),
        /^wirescope: -r and -w name the same file \(.*old\.db\); write the copy elsewhere$/,
      );

      for (const name of ["flows.jsonl", "flows.har", "flows.db"]) {
        const port = freePort();
        const wg = freePort();
        // -r old.db with modes: the old flow is printed (and copied to -w), then the proxy serves
        // (WireGuard too).
        const two = new Cli([
          "--confdir",
          `${dir}/conf`,
          "-r",
          `${dir}/old.db`,
          "--mode",
          `regular@127.0.0.1:${port}`,
          "--mode",
          `wireguard@127.0.0.1:${wg}`,
          "--wg-endpoint",
          "127.0.0.1",
          "--allow-local-destinations",
          "-w",
          `${dir}/${name}`,
        ]);
        try {
          await two.waitFor(() => two.stdout.includes("CA certificate:"), "the banner");
          assert.match(two.stdout, /WireGuard server listening on UDP 127\.0\.0\.1:\d+/);
          const oldAt = two.stdout.indexOf(`http://127.0.0.1:${o}/old`);
          assert.ok(oldAt >= 0 && oldAt < two.stdout.indexOf("listening"), "the old flow, before the banner");
          assert.equal(await curl(port, `http://127.0.0.1:${o}/new`), 0);
          await two.waitFor(() => flowLines(two.stdout, o).length === 2, "the new flow line");
          assert.equal(await two.stop("SIGINT"), 0);
          assert.equal(await mode(`${dir}/${name}`), "600");
          // The saved run first, then the live flow.
          assert.deepEqual(await paths(`${dir}/${name}`), ["/old", "/new"], name);
        } finally {
          await two.stop("SIGKILL").catch(() => {});
        }
      }

      const errors: [string[], RegExp][] = [
        [
          ["-w", `${dir}/a.db`, "--store", `${dir}/b.db`],
          /^wirescope: -w .*a\.db and --store .*b\.db name two flow stores; give one/,
        ],
        [
          ["-w", `${dir}/a.db`, "--no-store"],
          /^wirescope: --no-store cannot be used with -w .*a\.db \(a flow store/,
        ],
        [
          ["-w", `${dir}/a.har`, "--har", `${dir}/b.har`],
          /^wirescope: -w .*a\.har and --har .*b\.har name two HAR files/,
        ],
        [["export"], /^wirescope: export needs a FILE \(usage: wirescope export /],
        [
          ["export", "--format", "pdf", `${dir}/old.db`],
          /^wirescope: export: --format must be one of har, jsonl, curl, raw, not pdf$/,
        ],
        [["export", "-f", "~bogus", `${dir}/old.db`], /^wirescope: export: -f: /],
        [["export", "--nope", `${dir}/old.db`], /^wirescope: export: Unknown option '--nope'/],
        [
          ["export", `${dir}/missing.db`],
          /^wirescope: cannot read .*missing\.db: no such file or directory$/,
        ],
      ];
      for (const [args, message] of errors) {
        const r = await wirescope(["--confdir", `${dir}/conf`, ...args].slice(args[0] === "export" ? 2 : 0));
        assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
        assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
        assert.match(r.stderr.trim(), message);
      }
      // A JSON-lines file named as a store is refused when opened, not overwritten.
      await Deno.writeTextFile(`${dir}/notes.txt`, "my notes\n");
      const port = freePort();
      const r = await wirescope([
        "--confdir",
        `${dir}/conf`,
        "--mode",
        `regular@127.0.0.1:${port}`,
        "-w",
        `${dir}/notes.txt`,
      ]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /notes\.txt/);
      assert.equal(await Deno.readTextFile(`${dir}/notes.txt`), "my notes\n");
    } finally {
      await origin.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
