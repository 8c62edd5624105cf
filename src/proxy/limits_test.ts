import assert from "node:assert/strict";
import type { ByteStream } from "./byte_stream.ts";
import type { LogEvent } from "../flows/flow.ts";
import { ConnectionLimiter, defaultMaxConnections, RateLimitedLog } from "./limits.ts";

function collect() {
  const lines: LogEvent[] = [];
  return { lines, log: (level: LogEvent["level"], message: string) => lines.push({ level, message }) };
}

/** A stream that never delivers a byte until closed. */
function silentStream() {
  const state = { closed: null as boolean | null, wake: null as (() => void) | null };
  const stream: ByteStream = {
    read: () =>
      state.closed !== null ? Promise.resolve(null) : new Promise<null>((r) => (state.wake = () => r(null))),
    write: () => Promise.resolve(),
    closeWrite: () => Promise.resolve(),
    close: (reset) => {
      state.closed ??= reset;
      state.wake?.();
    },
  };
  return { stream, state };
}

Deno.test("defaultMaxConnections() keeps two descriptors per connection within the open-file limit", () => {
  const limits = (soft: string) =>
    `Limit                     Soft Limit           Hard Limit           Units     \n` +
    `Max open files            ${soft}                20000                files     \n`;
  assert.equal(defaultMaxConnections(limits("1048576")), 16_384);
  assert.equal(defaultMaxConnections(limits("unlimited")), 16_384);
  assert.equal(defaultMaxConnections(limits("1024")), 448);
  assert.equal(defaultMaxConnections(limits("64")), 16);
  assert.equal(defaultMaxConnections("garbage"), 16_384);
});

Deno.test("ConnectionLimiter refuses past the per-client and total caps, logs once, and frees on release", () => {
  const { lines, log } = collect();
  const limiter = new ConnectionLimiter(
    { headTimeout: 0, idleTimeout: 0, maxConnectionsPerClient: 2, maxConnections: 3 },
    log,
  );
  const a1 = limiter.admit("a", "client a");
  const a2 = limiter.admit("a", "client a");
  assert.ok(a1 && a2);
  assert.equal(limiter.admit("a", "client a"), null, "third from one client");
  assert.equal(limiter.admit("a", "client a"), null);
  const b1 = limiter.admit("b", "client b");
  assert.ok(b1);
  assert.equal(limiter.admit("c", "client c"), null, "fourth in total");
  assert.equal(limiter.stats().refusedByCap, 3);
  // One line per kind and interval, however many refusals.
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.level, "warn");
  assert.match(lines[0]!.message, /refused a connection from client a: 2 connections open from this client/);
  a1.release();
  a1.release(); // Twice is once.
  assert.equal(limiter.openOf("a"), 1);
  assert.ok(limiter.admit("a", "client a"), "room again after a release");
  b1.release();
  assert.equal(limiter.openOf("b"), 0);
  limiter.close();
});

Deno.test("ConnectionLimiter closes a guarded stream without traffic after the idle timeout, with the reason", async () => {
  const { lines, log } = collect();
  const limiter = new ConnectionLimiter(
    { headTimeout: 0, idleTimeout: 120, maxConnectionsPerClient: 0, maxConnections: 0 },
    log,
  );
  const busy = silentStream();
  const quiet = silentStream();
  const busyGuarded = limiter.admit("x", "client x")!.guard(busy.stream);
  const admission = limiter.admit("x", "client x")!;
  const guarded = admission.guard(quiet.stream);
  const pending = guarded.read();
  const started = Date.now();
  // The busy one writes every 40 ms: it stays.
  const keepBusy = setInterval(() => void busyGuarded.write(new Uint8Array(1)), 40);
  try {
    await assert.rejects(pending, /no traffic for 0\.12 s \(idle timeout\)/);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 110 && elapsed < 1000, `closed after ${elapsed} ms`);
    assert.equal(quiet.state.closed, true, "closed with a reset");
    await assert.rejects(guarded.write(new Uint8Array(1)), /idle timeout/);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(busy.state.closed, null, "a connection with traffic is left alone");
  } finally {
    clearInterval(keepBusy);
  }
  assert.equal(limiter.stats().closedByIdleTimeout, 1);
  assert.match(
    lines.map((l) => l.message).join("\n"),
    /closed a connection from client x: no traffic either way/,
  );
  admission.release();
  busyGuarded.close(false);
  limiter.close();
});

Deno.test("RateLimitedLog says how many lines it left out", () => {
  let now = 0;
  const out: string[] = [];
  const log = new RateLimitedLog((_level, m) => out.push(m), 10_000, () => now);
  log.line("k", "warn", "first");
  now = 1000;
  log.line("k", "warn", "second");
  log.line("other", "warn", "another kind");
  now = 12_000;
  log.line("k", "warn", "third");
  assert.deepEqual(out, ["first", "another kind", "third (and 1 more like it in the last 12 s)"]);
});
