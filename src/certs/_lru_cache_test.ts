import assert from "node:assert/strict";
import { LruCache } from "./_lru_cache.ts";

Deno.test("LruCache.set() evicts the least recently used entry when full", () => {
  const cache = new LruCache<string, number>(2);
  cache.set("a", 1);
  cache.set("b", 2);
  assert.equal(cache.get("a"), 1);
  cache.set("c", 3);
  assert.equal(cache.size, 2);
  assert.equal(cache.peek("b"), undefined);
  assert.equal(cache.peek("a"), 1);
  assert.equal(cache.peek("c"), 3);
});

Deno.test("LruCache.peek() leaves the age of an entry alone", () => {
  const cache = new LruCache<string, number>(2);
  cache.set("a", 1);
  cache.set("b", 2);
  assert.equal(cache.peek("a"), 1);
  cache.set("c", 3);
  assert.equal(cache.peek("a"), undefined);
  assert.equal(cache.delete("b"), true);
  assert.equal(cache.delete("b"), false);
  assert.equal(cache.size, 1);
});

Deno.test("LruCache() rejects a capacity below one", () => {
  assert.throws(() => new LruCache(0), RangeError);
  assert.throws(() => new LruCache(1.5), RangeError);
});
