/**
 * A small deterministic random generator (mulberry32) for the tests' random splits and
 * corruptions: a failure replays from its seed.
 * @module
 */

/** Returns a generator of numbers in [0, 1) that depends only on `seed`. */
export function seededRandom(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
