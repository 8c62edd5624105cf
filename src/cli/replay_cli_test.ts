import assert from "node:assert/strict";
import { parseFlags, UsageError } from "./flags.ts";
import { serverReplaySummary } from "./replay_cli.ts";

Deno.test("flags: --server-replay and its options", () => {
  const o = parseFlags([
    "--server-replay",
    "run.db",
    "--server-replay-ignore-params",
    "ts,utm",
    "--server-replay-ignore-params",
    "nonce",
    "--server-replay-ignore-host",
    "--server-replay-extra",
    "404",
    "--server-replay-reuse",
  ]);
  assert.deepEqual(o.serverReplay, {
    file: "run.db",
    ignoreParams: ["ts", "utm", "nonce"],
    ignoreHost: true,
    ignoreContent: false,
    extra: "404",
    reuse: true,
  });
  assert.equal(parseFlags(["--server-replay", "r.har"]).serverReplay?.extra, "forward");
  assert.equal(parseFlags([]).serverReplay, undefined);
});

Deno.test("flags: --client-replay and its options", () => {
  const o = parseFlags([
    "--client-replay",
    "run.db",
    "--client-replay-filter",
    "~m POST",
    "--client-replay-concurrency",
    "4",
    "--keep-serving",
  ]);
  assert.deepEqual(o.clientReplay, { file: "run.db", filter: "~m POST", concurrency: 4 });
  assert.equal(o.keepServing, true);
  assert.deepEqual(parseFlags(["--client-replay", "x.jsonl"]).clientReplay, {
    file: "x.jsonl",
    concurrency: 1,
  });
});

Deno.test("flags: replay mistakes are one-line usage errors", () => {
  const cases: [string[], RegExp][] = [
    [["--server-replay-extra", "404"], /--server-replay-extra needs --server-replay FILE/],
    [["--server-replay-reuse"], /--server-replay-reuse needs --server-replay FILE/],
    [["--server-replay", "f", "--server-replay-extra", "drop"], /expected forward, 404 or kill/],
    [["--server-replay", ""], /needs a file name/],
    [["--client-replay-filter", "~m GET"], /needs --client-replay FILE/],
    [["--keep-serving"], /--keep-serving needs --client-replay FILE/],
    [["--client-replay", "f", "--client-replay-filter", "~m ("], /--client-replay-filter/],
    [["--client-replay", "f", "--client-replay-concurrency", "0"], /expected 1 or more/],
    [["--client-replay", "f", "--client-replay-concurrency", "x"], /whole number/],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseFlags(args), (e: unknown) => e instanceof UsageError && message.test(e.message));
  }
});

Deno.test("server replay summary line", () => {
  assert.equal(
    serverReplaySummary({ loaded: 4, hits: 3, misses: 1, truncated: 0 }),
    "server replay: 3 hits, 1 miss (4 recorded answers)",
  );
  assert.equal(
    serverReplaySummary({ loaded: 1, hits: 1, misses: 0, truncated: 1 }),
    "server replay: 1 hit, 0 misses (1 recorded answer, 1 served with a partial body)",
  );
});

Deno.test("wirescope: a replay file that cannot be read ends the start with one line and exit code 2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-replay-cli-" });
  try {
    await Deno.writeTextFile(`${dir}/bad.jsonl`, '{"x":1}\n');
    const mod = new URL("../../mod.ts", import.meta.url).pathname;
    const cases: [string[], RegExp][] = [
      [
        ["--server-replay", `${dir}/missing.db`, "--mode", "regular@127.0.0.1:0"],
        /^wirescope: --server-replay: cannot read .*missing\.db: no such file or directory\n$/,
      ],
      [
        ["--client-replay", `${dir}/bad.jsonl`],
        /^wirescope: --client-replay: .*bad\.jsonl is JSON but neither a HAR file nor wirescope JSON lines\n$/,
      ],
    ];
    for (const [args, message] of cases) {
      const o = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", mod, ...args, "--confdir", `${dir}/conf`],
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).output();
      assert.equal(o.code, 2);
      assert.match(new TextDecoder().decode(o.stderr), message);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
