/**
 * A bounded map that forgets the least recently used entry first.
 * @module
 */

/** A map with at most `capacity` entries; reading an entry makes it the most recent. */
export class LruCache<K, V> {
  readonly #entries = new Map<K, V>();
  readonly #capacity: number;

  /**
   * Makes an empty cache.
   *
   * @param capacity The most entries kept; at least 1.
   * @throws {RangeError} When `capacity` is not a positive integer.
   */
  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`Cache capacity must be a positive integer, got ${capacity}`);
    }
    this.#capacity = capacity;
  }

  /** The number of entries. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Looks up an entry and marks it as the most recently used.
   *
   * @param key The key.
   * @returns The value, or `undefined` when absent.
   */
  get(key: K): V | undefined {
    const value = this.#entries.get(key);
    if (value === undefined) return undefined;
    // A Map iterates in insertion order, so re-inserting moves the key to the young end.
    this.#entries.delete(key);
    this.#entries.set(key, value);
    return value;
  }

  /**
   * Stores an entry as the most recently used, evicting the oldest one when full.
   *
   * @param key The key.
   * @param value The value.
   */
  set(key: K, value: V): void {
    this.#entries.delete(key);
    this.#entries.set(key, value);
    if (this.#entries.size > this.#capacity) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
  }

  /**
   * Removes an entry.
   *
   * @param key The key.
   * @returns Whether there was one.
   */
  delete(key: K): boolean {
    return this.#entries.delete(key);
  }

  /**
   * Looks up an entry without touching its age.
   *
   * @param key The key.
   * @returns The value, or `undefined` when absent.
   */
  peek(key: K): V | undefined {
    return this.#entries.get(key);
  }
}
