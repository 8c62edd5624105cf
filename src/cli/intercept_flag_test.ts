import assert from "node:assert/strict";
import { parseFlags, UsageError } from "./flags.ts";

Deno.test("--intercept: an expression, alone (nothing held yet), needs --web, a bad one is a usage error", () => {
  assert.equal(parseFlags(["--web", "--intercept", "~u /a & ~q"]).intercept, "~u /a & ~q");
  assert.equal(parseFlags(["--web", "--intercept"]).intercept, "");
  assert.equal(parseFlags(["--intercept", "--web"]).intercept, "");
  assert.equal(parseFlags(["--web"]).intercept, undefined);
  assert.throws(
    () => parseFlags(["--intercept", "~q"]),
    (e) => e instanceof UsageError && /needs --web/.test(e.message),
  );
  assert.throws(
    () => parseFlags(["--web", "--intercept", "~u ("]),
    (e) => e instanceof UsageError && /^--intercept: /.test(e.message),
  );
});
