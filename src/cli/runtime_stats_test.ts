import assert from "node:assert/strict";
import { countTimers } from "./runtime_stats.ts";

Deno.test("countTimers counts pending timeouts and intervals until they fire or are cleared", async () => {
  const counter = countTimers();
  try {
    let fired = 0;
    setTimeout(() => fired++, 1);
    setTimeout((x: number) => (fired += x), 1, 10);
    const cleared = setTimeout(() => fired += 100, 1);
    const interval = setInterval(() => {}, 1000);
    assert.equal(counter.pending(), 4);
    clearTimeout(cleared);
    assert.equal(counter.pending(), 3);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(fired, 11, "callbacks run with their arguments");
    assert.equal(counter.pending(), 1, "the interval is pending until cleared");
    clearInterval(interval);
    assert.equal(counter.pending(), 0);
  } finally {
    counter.uninstall();
  }
});
