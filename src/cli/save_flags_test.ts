/** `-w FILE`: what it writes is told by the name, and a store or HAR it names takes `--store`'s or `--har`'s place. */
import assert from "node:assert/strict";
import { parseFlags, saveFormatOf, UsageError } from "./flags.ts";

Deno.test("saveFormatOf() tells JSON lines, HAR and a flow store by name; a pipe or device takes JSON lines", () => {
  for (const name of ["a.jsonl", "A.JSONL", "x.ndjson", "x.json"]) {
    assert.equal(saveFormatOf(name), "jsonl", name);
  }
  for (const name of ["a.har", "B.HAR"]) assert.equal(saveFormatOf(name), "har", name);
  for (const name of ["a.db", "flows", "run.sqlite", "x.jsonl.db", "flows.out"]) {
    assert.equal(saveFormatOf(name), "store", name);
  }
  assert.equal(saveFormatOf("/dev/null"), "jsonl");
});

Deno.test("parseFlags(): -w a store is the run's store, -w a HAR is --har, and clashes are one-line usage errors", () => {
  const dir = Deno.makeTempDirSync();
  try {
    let o = parseFlags(["-w", `${dir}/run.db`]);
    assert.equal(o.saveFormat, "store");
    assert.equal(o.store, `${dir}/run.db`);
    assert.equal(o.save, `${dir}/run.db`);
    o = parseFlags(["-w", `${dir}/run.db`, "--store", `${dir}/run.db`, "--store-max", "1G"]);
    assert.equal(o.store, `${dir}/run.db`);
    o = parseFlags(["-w", `${dir}/f.jsonl`, "--store", `${dir}/s.db`]);
    assert.equal(o.saveFormat, "jsonl");
    assert.equal(o.store, `${dir}/s.db`);
    o = parseFlags(["-w", `${dir}/f.jsonl`, "--no-store"]);
    assert.equal(o.store, undefined);
    o = parseFlags(["--save", `${dir}/f.har`]);
    assert.equal(o.saveFormat, "har");
    assert.equal(o.har, `${dir}/f.har`);
    assert.equal(o.store, undefined);
    const clash = (args: string[], message: RegExp) =>
      assert.throws(() => parseFlags(args), (e) => e instanceof UsageError && message.test(e.message));
    clash(
      ["-w", `${dir}/a.db`, "--store", `${dir}/b.db`],
      /^-w .*a\.db and --store .*b\.db name two flow stores/,
    );
    clash(["-w", `${dir}/a.db`, "--no-store"], /^--no-store cannot be used with -w .*a\.db \(a flow store/);
    clash(
      ["-w", `${dir}/a.har`, "--har", `${dir}/b.har`],
      /^-w .*a\.har and --har .*b\.har name two HAR files/,
    );
    clash(["-w", `${dir}/missing/a.db`], /^--save .*: /);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
