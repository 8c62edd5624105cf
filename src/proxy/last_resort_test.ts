import assert from "node:assert/strict";

Deno.test("runInConnectionScope() stops what escapes a connection, reports it there, and the process lives on", async () => {
  const probe = new URL("./testdata/last_resort_probe.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", probe], stderr: "piped" })
    .output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `the probe process survived (stderr: ${stderr})`);
  const result = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    caught: number;
    scopes: { name: string; reports: string[]; aborted: number }[];
  };
  const [a, b, c, d] = result.scopes;
  assert.equal(result.caught, 3);
  assert.equal(d!.aborted, 1);
  assert.match(d!.reports[0]!, /^uncaught exception in connection D: RangeError: from a microtask/);
  assert.equal(a!.aborted, 1);
  assert.match(a!.reports[0]!, /^uncaught exception in connection A: TypeError: boom from a callback/);
  assert.match(a!.reports[0]!, /that connection was reset$/);
  assert.equal(b!.aborted, 1);
  assert.match(b!.reports[0]!, /^unhandled rejection in connection B \(flow flow-7\): Error: nobody listens/);
  assert.deepEqual(
    c,
    { name: "connection C", reports: [], aborted: 0 },
    "a scope without errors is left alone",
  );
});
