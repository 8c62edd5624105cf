/**
 * Leaf certificates kept across runs in `<confdir>/leaf-cache/` (directory 0700, files 0600): the
 * shared ECDSA leaf key (`leaf-key.pem`) and one small JSON file per issued leaf, named after a
 * hash of its name set. A new process then serves a host seen in an earlier run without a new
 * signature. Anything that does not fit (another CA, another leaf key, near its end, damaged) is
 * ignored and removed; the cache never makes `leafFor` fail.
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { binaryToBytes, bytesToBinary, toPem } from "./_der.ts";
import { generateLeafKey, importLeafKey, type LeafKey } from "./_leaf_certificate.ts";
import { namesFromCertificate } from "./names_from_certificate.ts";

/** The file format version written into each entry. */
const VERSION = 1;
const KEY_FILE = "leaf-key.pem";

/** A leaf read back from the disk cache. */
export interface StoredLeaf {
  /** The names, in the order of the certificate (the first is the common name). */
  names: string[];
  /** The certificate. */
  der: Uint8Array;
  notBefore: Date;
  notAfter: Date;
}

interface EntryFile {
  v: number;
  ca: string;
  key: string;
  names: string[];
  notBefore: number;
  notAfter: number;
  der: string;
}

/** Where the disk cache logs what it ignored (damaged files, write errors). */
export type CacheLog = (message: string) => void;

/** The leaf key and, when the directory is usable, the cache of leaves signed with it. */
export interface OpenedLeafStore {
  key: LeafKey;
  cache: LeafDiskCache | undefined;
}

/**
 * Opens `dir` (creating it with mode 0700) and its leaf key (creating one when missing or
 * damaged). When the directory cannot be used, the key is made in memory and there is no cache.
 *
 * @param dir The cache directory, e.g. `<confdir>/leaf-cache`.
 * @param caFingerprint Which CA entries must have been issued by.
 * @param maxEntries The most leaves kept on disk (0: keep none, key in memory only).
 * @param log Where notes on ignored files go.
 * @returns The key and the cache.
 */
export async function openLeafStore(
  dir: string,
  caFingerprint: string,
  maxEntries: number,
  log: CacheLog,
): Promise<OpenedLeafStore> {
  if (maxEntries === 0) return { key: (await generateLeafKey()).key, cache: undefined };
  try {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    if (Deno.build.os !== "windows") await Deno.chmod(dir, 0o700);
    const key = await loadKeyFile(join(dir, KEY_FILE), log);
    const keyId = hex(key.keyIdentifier);
    const entries: { name: string; mtime: number }[] = [];
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile) continue;
      if (entry.name.endsWith(".tmp")) {
        // A write that a crash interrupted.
        await Deno.remove(join(dir, entry.name)).catch(() => {});
      } else if (/^[0-9a-f]{40}\.json$/.test(entry.name)) {
        const info = await Deno.stat(join(dir, entry.name)).catch(() => undefined);
        entries.push({ name: entry.name, mtime: info?.mtime?.getTime() ?? 0 });
      }
    }
    entries.sort((a, b) => a.mtime - b.mtime);
    const cache = new LeafDiskCache(dir, caFingerprint, keyId, maxEntries, log, entries.map((e) => e.name));
    cache.trim();
    return { key, cache };
  } catch (error) {
    log(`leaf cache ${dir} unusable, leaves are kept in memory only: ${(error as Error).message}`);
    return { key: (await generateLeafKey()).key, cache: undefined };
  }
}

/** Reads the leaf key file, or makes it when missing or damaged. */
async function loadKeyFile(path: string, log: CacheLog): Promise<LeafKey> {
  for (let attempt = 0; attempt < 3; attempt++) {
    let text: string | undefined;
    try {
      text = await Deno.readTextFile(path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    if (text !== undefined) {
      try {
        const body = /-----BEGIN PRIVATE KEY-----([^-]+)-----END PRIVATE KEY-----/.exec(text)?.[1];
        if (body === undefined) throw new Error('no "PRIVATE KEY" block');
        return await importLeafKey(binaryToBytes(atob(body.replace(/\s+/g, ""))));
      } catch (error) {
        log(`leaf key file ${path} is damaged (${(error as Error).message}); making a new leaf key`);
        await Deno.remove(path).catch(() => {});
        continue;
      }
    }
    const made = await generateLeafKey();
    // Another process on the same confdir may publish its key first; then both use that one.
    if (await publishNew(path, toPem("PRIVATE KEY", made.pkcs8))) return made.key;
  }
  throw new Error(`cannot settle on a leaf key in ${path}`);
}

/** Writes a file (0600) unless it exists. Returns whether this call created it. */
async function publishNew(path: string, text: string): Promise<boolean> {
  const temporary = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    await Deno.writeTextFile(temporary, text, { mode: 0o600, createNew: true });
    try {
      await Deno.link(temporary, path);
      return true;
    } catch (error) {
      if (error instanceof Deno.errors.AlreadyExists) return false;
    }
    try {
      await Deno.writeTextFile(path, text, { mode: 0o600, createNew: true });
      return true;
    } catch (error) {
      if (error instanceof Deno.errors.AlreadyExists) return false;
      throw error;
    }
  } finally {
    await Deno.remove(temporary).catch(() => {});
  }
}

/**
 * The leaves on disk. Lookups of names never stored cost no system call (the directory is listed
 * once when opened); the few evictions are synchronous removals.
 */
export class LeafDiskCache {
  readonly #dir: string;
  readonly #ca: string;
  readonly #keyId: string;
  readonly #max: number;
  readonly #log: CacheLog;
  /** File names, oldest first. */
  readonly #files = new Map<string, true>();
  #writeFailures = 0;

  /**
   * Use {@linkcode openLeafStore}.
   *
   * @param dir The directory.
   * @param ca The CA fingerprint entries must carry.
   * @param keyId The hex keyIdentifier of the leaf key entries must carry.
   * @param max The most entries.
   * @param log Where notes go.
   * @param files The entry files present, oldest first.
   */
  constructor(dir: string, ca: string, keyId: string, max: number, log: CacheLog, files: string[]) {
    this.#dir = dir;
    this.#ca = ca;
    this.#keyId = keyId;
    this.#max = max;
    this.#log = log;
    for (const file of files) this.#files.set(file, true);
  }

  /** The number of entry files. */
  get size(): number {
    return this.#files.size;
  }

  /**
   * A stored leaf for a name set, when it fits: same CA, same leaf key, same names, valid now and
   * for more than `marginMs`. Entries that do not fit are removed.
   *
   * @param namesKey The sorted names joined by spaces (the memory cache's key).
   * @param marginMs How long the leaf must still be valid.
   * @returns The leaf, or `undefined`.
   */
  async get(namesKey: string, marginMs: number): Promise<StoredLeaf | undefined> {
    const file = fileName(namesKey);
    if (!this.#files.has(file)) return undefined;
    const path = join(this.#dir, file);
    let entry: EntryFile;
    let der: Uint8Array;
    try {
      entry = JSON.parse(await Deno.readTextFile(path));
      if (
        entry === null || typeof entry !== "object" || !Array.isArray(entry.names) ||
        typeof entry.der !== "string" || !Number.isFinite(entry.notBefore) || !Number.isFinite(entry.notAfter)
      ) {
        throw new Error("not a leaf cache entry");
      }
      der = binaryToBytes(atob(entry.der));
      // The certificate itself must carry the names the entry claims.
      const inCert = namesFromCertificate(der);
      const certNames = [...inCert.dnsNames, ...inCert.ipAddresses].sort().join(" ");
      if (certNames !== namesKey || [...entry.names].sort().join(" ") !== namesKey) {
        throw new Error("its names do not match its file name or its certificate");
      }
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        this.#files.delete(file);
        return undefined;
      }
      this.#log(`ignoring damaged leaf cache file ${path}: ${(error as Error).message}`);
      this.#drop(file);
      return undefined;
    }
    const now = Date.now();
    if (
      entry.v !== VERSION || entry.ca !== this.#ca || entry.key !== this.#keyId || entry.notBefore > now ||
      entry.notAfter - marginMs <= now
    ) {
      // Issued by another CA or with another key, or about to end: issue a new one.
      this.#drop(file);
      return undefined;
    }
    return {
      names: entry.names,
      der,
      notBefore: new Date(entry.notBefore),
      notAfter: new Date(entry.notAfter),
    };
  }

  /**
   * Stores a leaf, evicting the oldest entries beyond the bound. Errors are logged (the first
   * few), never thrown. The write happens off the JavaScript thread; callers await it so that no
   * file operation outlives the request that issued the leaf.
   *
   * @param namesKey The sorted names joined by spaces.
   * @param leaf The leaf.
   */
  async put(namesKey: string, leaf: StoredLeaf): Promise<void> {
    const file = fileName(namesKey);
    const entry: EntryFile = {
      v: VERSION,
      ca: this.#ca,
      key: this.#keyId,
      names: leaf.names,
      notBefore: leaf.notBefore.getTime(),
      notAfter: leaf.notAfter.getTime(),
      der: btoa(bytesToBinary(leaf.der)),
    };
    const path = join(this.#dir, file);
    const temporary = `${path}.${crypto.randomUUID()}.tmp`;
    try {
      await Deno.writeTextFile(temporary, JSON.stringify(entry), { mode: 0o600, createNew: true });
      await Deno.rename(temporary, path);
    } catch (error) {
      await Deno.remove(temporary).catch(() => {});
      if (this.#writeFailures++ < 3) {
        this.#log(`cannot write leaf cache file ${path}: ${(error as Error).message}`);
      }
      return;
    }
    this.#files.delete(file);
    this.#files.set(file, true);
    this.trim();
  }

  /** Removes the oldest entries beyond the bound. */
  trim(): void {
    while (this.#files.size > this.#max) {
      const oldest = this.#files.keys().next();
      if (oldest.done) break;
      this.#drop(oldest.value);
    }
  }

  #drop(file: string): void {
    this.#files.delete(file);
    try {
      Deno.removeSync(join(this.#dir, file));
    } catch { /* already gone */ }
  }
}

function fileName(namesKey: string): string {
  return `${createHash("sha256").update(namesKey).digest("hex").slice(0, 40)}.json`;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
