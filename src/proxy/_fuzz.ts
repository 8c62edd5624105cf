/**
 * Shared pieces of the codecs' property tests (`*_fuzz_test.ts`): a fixed seed so CI replays
 * the same inputs, byte mutations of valid encodings, and a check that a thrown value is one a
 * codec documents.
 *
 * `WIRESCOPE_FUZZ_SEED` replaces the seed and `WIRESCOPE_FUZZ_RUNS` multiplies the number of
 * runs, for longer local runs. A failure prints the seed and the path fast-check needs to
 * replay it (`fc.assert(..., { seed, path })`).
 * @module
 */
import fc from "fast-check";

const env = (name: string): string | undefined => {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
};

/** The seed of every property; fixed unless `WIRESCOPE_FUZZ_SEED` says otherwise. */
export const FUZZ_SEED: number = Number(env("WIRESCOPE_FUZZ_SEED") ?? 0x5eed_2026) | 0;
const RUNS_FACTOR = Math.max(1, Number(env("WIRESCOPE_FUZZ_RUNS") ?? 1) || 1);

/**
 * Runs a property with the fixed seed and `runs` runs (times the factor from the environment).
 * On failure the thrown error names the seed, the replay path and the smallest input found.
 */
export function check(property: fc.IRawProperty<unknown>, runs: number): void {
  fc.assert(property, { seed: FUZZ_SEED, numRuns: Math.round(runs * RUNS_FACTOR), endOnFailure: false });
}

/** One edit of a byte string. */
type Mutation =
  | { op: "flip"; at: number; bit: number }
  | { op: "set"; at: number; value: number }
  | { op: "insert"; at: number; bytes: Uint8Array }
  | { op: "delete"; at: number; count: number }
  | { op: "truncate"; at: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant("set" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({
    op: fc.constant("insert" as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
  }),
  fc.record({ op: fc.constant("delete" as const), at: fc.nat(), count: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ op: fc.constant("truncate" as const), at: fc.nat() }),
);

/** Applies one edit; positions wrap around the current length. */
function applyMutation(bytes: Uint8Array, m: Mutation): Uint8Array {
  const n = bytes.length;
  switch (m.op) {
    case "flip":
    case "set": {
      if (n === 0) return bytes;
      const out = bytes.slice();
      const at = m.at % n;
      out[at] = m.op === "flip" ? out[at]! ^ (1 << m.bit) : m.value;
      return out;
    }
    case "insert": {
      const at = m.at % (n + 1);
      const out = new Uint8Array(n + m.bytes.length);
      out.set(bytes.subarray(0, at));
      out.set(m.bytes, at);
      out.set(bytes.subarray(at), at + m.bytes.length);
      return out;
    }
    case "delete": {
      if (n === 0) return bytes;
      const at = m.at % n;
      const out = new Uint8Array(n - Math.min(m.count, n - at));
      out.set(bytes.subarray(0, at));
      out.set(bytes.subarray(at + m.count), at);
      return out;
    }
    case "truncate":
      return bytes.subarray(0, m.at % (n + 1));
  }
}

/** Valid encodings from `valid`, each with one to four bytes flipped, set, inserted, deleted or cut. */
export function mutated(valid: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc.tuple(valid, fc.array(mutation, { minLength: 1, maxLength: 4 })).map(([bytes, edits]) =>
    edits.reduce(applyMutation, bytes)
  );
}

/** Byte strings worth feeding a parser: random bytes, and mutations of valid encodings. */
export function hostile(valid: fc.Arbitrary<Uint8Array>, maxLength = 512): fc.Arbitrary<Uint8Array> {
  return fc.oneof(fc.uint8Array({ maxLength }), mutated(valid));
}

/**
 * Calls `f`; a thrown value that is not one of `allowed` (checked with `instanceof`) fails the
 * property with a message naming it. Returns what `f` returned, or undefined after an allowed
 * error.
 */
export function onlyThrows<T>(
  allowed: readonly (abstract new (...args: never[]) => Error)[],
  f: () => T,
): T | undefined {
  try {
    return f();
  } catch (e) {
    if (allowed.some((cls) => e instanceof cls)) return undefined;
    throw new Error(`threw an undocumented ${e instanceof Error ? e.name : typeof e}: ${String(e)}`, {
      cause: e,
    });
  }
}

/** The bytes split at the given cut points (each taken modulo the length), in order. */
export function splitAt(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => (bytes.length === 0 ? 0 : c % (bytes.length + 1))))]
    .sort((a, b) => a - b);
  const pieces: Uint8Array[] = [];
  let from = 0;
  for (const p of points) {
    pieces.push(bytes.subarray(from, p));
    from = p;
  }
  pieces.push(bytes.subarray(from));
  return pieces;
}

/** Concatenates byte strings. */
export function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Latin1 text to bytes (one byte per UTF-16 unit below 256). */
export function latin1(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}
