/**
 * HAR files of a session: {@linkcode HarRecorder} keeps a bounded ring of flows for a file written
 * at the end; {@linkcode HarSpool} builds the file on disk as flows end, for long runs.
 * @module
 */
import type { Flow, HttpFlow } from "./flow.ts";
import { flowToHarEntry, type Har, type HarCreator } from "./har.ts";
import { cutBack } from "./json_lines.ts";

/** Options of {@linkcode HarRecorder}. */
export interface HarRecorderOptions {
  /** The most entries kept; older ones make room for newer. Default 100,000. */
  maxEntries?: number;
}

/**
 * Collects finished HTTP flows for a HAR file written at the end of a session. Memory is bounded:
 * past `maxEntries`, the oldest flow is dropped for each new one, and `dropped` counts them.
 */
export class HarRecorder {
  readonly maxEntries: number;
  /** A ring of flows; `#next` is where the next one goes once the ring is full. */
  #flows: HttpFlow[] = [];
  #next = 0;
  #dropped = 0;

  constructor(options: HarRecorderOptions = {}) {
    const max = options.maxEntries ?? 100_000;
    if (!Number.isInteger(max) || max < 1) {
      throw new RangeError(`Cannot record HAR: maxEntries must be a positive integer, got ${max}`);
    }
    this.maxEntries = max;
  }

  /** How many flows are held. */
  get size(): number {
    return this.#flows.length;
  }

  /** How many flows were dropped to stay within `maxEntries`. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Keeps an HTTP flow (call it when the flow has ended); other flows are ignored. */
  add(flow: Flow): void {
    if (flow.type !== "http") return;
    if (this.#flows.length < this.maxEntries) {
      this.#flows.push(flow);
      return;
    }
    this.#flows[this.#next] = flow;
    this.#next = (this.#next + 1) % this.maxEntries;
    this.#dropped++;
  }

  /** The HAR of the flows held, entries ordered by the start of their request. */
  toHar(creator: HarCreator): Har {
    const log: Har["log"] = { version: "1.2", creator, pages: [], entries: [] };
    const comment = this.#comment();
    if (comment !== undefined) log.comment = comment;
    log.entries = this.#ordered().map(flowToHarEntry);
    return { log };
  }

  /**
   * Writes the HAR to `path`: first to `path.tmp`, then renamed over `path`, so a reader never
   * sees half a file. Entries are serialized one at a time, so no single string holds the whole
   * archive.
   */
  async writeTo(path: string, creator: HarCreator): Promise<void> {
    const tmp = `${path}.tmp`;
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      const head: Omit<Har["log"], "entries"> = { version: "1.2", creator, pages: [] };
      const comment = this.#comment();
      if (comment !== undefined) head.comment = comment;
      const opening = JSON.stringify({ log: head });
      // `{"log":{...}}` → `{"log":{...,"entries":[` then the entries, then `]}}`.
      const chunks = new ChunkWriter(file);
      await chunks.add(`${opening.slice(0, -2)},"entries":[`);
      let first = true;
      for (const flow of this.#ordered()) {
        await chunks.add((first ? "\n" : ",\n") + JSON.stringify(flowToHarEntry(flow)));
        first = false;
      }
      await chunks.add("\n]}}\n");
      await chunks.flush();
    } catch (e) {
      file.close();
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
    file.close();
    await Deno.rename(tmp, path);
  }

  #ordered(): HttpFlow[] {
    const ring = this.#flows.slice(this.#next).concat(this.#flows.slice(0, this.#next));
    // Stable: flows starting in the same millisecond keep the order they ended in.
    return ring.sort((a, b) => a.request.timestampStart - b.request.timestampStart);
  }

  #comment(): string | undefined {
    return this.#dropped === 0
      ? undefined
      : `${this.#dropped} older flows were left out to stay within ${this.maxEntries} entries`;
  }
}
/**
 * A HAR file built on disk as flows complete, for long runs: each HTTP flow's entry is appended
 * to `<path>.entries` right away (nothing is held in memory), and {@link HarSpool.finish} wraps
 * them into `<path>` (via `<path>.tmp` and a rename) and removes the spool. Entries are in the
 * order their flows ended; if the process dies first, the spool keeps one JSON entry per line.
 */
export class HarSpool {
  readonly path: string;
  readonly spoolPath: string;
  #file: Deno.FsFile | null;
  #encoder = new TextEncoder();
  #entries = 0;
  #size = 0;
  #error: Error | null = null;
  #dropped = 0;

  private constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.spoolPath = `${path}.entries`;
    this.#file = file;
  }

  /** Starts a spool next to `path`, mode 0600 (an old spool there is replaced). */
  static async open(path: string): Promise<HarSpool> {
    const spoolPath = `${path}.entries`;
    await Deno.remove(spoolPath).catch(() => {}); // a leftover would keep its own mode
    const file = await Deno.open(spoolPath, { write: true, createNew: true, mode: 0o600 });
    return new HarSpool(path, file);
  }

  /** How many entries were spooled. */
  get entries(): number {
    return this.#entries;
  }

  /** The first write error, if there was one. */
  get error(): Error | null {
    return this.#error;
  }

  /** How many HTTP flows were not spooled because of a write error. */
  get dropped(): number {
    return this.#dropped;
  }

  /**
   * Appends an HTTP flow's entry (other flows are ignored). After the first failed write (a full
   * disk) the spool is cut back to its last whole entry, the error is thrown once and kept in
   * `error`, and later flows are counted in `dropped`; the HAR still holds what was spooled.
   */
  add(flow: Flow): void {
    if (flow.type !== "http" || !this.#file) return;
    if (this.#error !== null) {
      this.#dropped++;
      return;
    }
    const line = this.#encoder.encode(JSON.stringify(flowToHarEntry(flow)) + "\n");
    try {
      let done = 0;
      while (done < line.byteLength) done += this.#file.writeSync(line.subarray(done));
    } catch (e) {
      this.#error = e instanceof Error ? e : new Error(String(e));
      this.#dropped++;
      cutBack(this.#file, this.#size);
      throw this.#error;
    }
    this.#size += line.byteLength;
    this.#entries++;
  }

  /** Writes the HAR file (mode 0600) from the spool and removes the spool. */
  async finish(creator: HarCreator): Promise<void> {
    this.#file?.close();
    this.#file = null;
    const tmp = `${this.path}.tmp`;
    await Deno.remove(tmp).catch(() => {}); // a leftover would keep its own mode
    const out = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
    try {
      const opening = JSON.stringify({ log: { version: "1.2", creator, pages: [] } });
      const chunks = new ChunkWriter(out);
      await chunks.add(`${opening.slice(0, -2)},"entries":[`);
      let first = true;
      const spool = await Deno.open(this.spoolPath, { read: true });
      const lines = spool.readable.pipeThrough(new TextDecoderStream());
      let rest = "";
      for await (const text of lines) {
        const parts = (rest + text).split("\n");
        rest = parts.pop()!;
        for (const entry of parts) {
          if (entry === "") continue;
          await chunks.add((first ? "\n" : ",\n") + entry);
          first = false;
        }
      }
      if (rest !== "") await chunks.add((first ? "\n" : ",\n") + rest);
      await chunks.add("\n]}}\n");
      await chunks.flush();
    } catch (e) {
      out.close();
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
    out.close();
    await Deno.rename(tmp, this.path);
    await Deno.remove(this.spoolPath).catch(() => {});
  }
}

/** Gathers text into writes of about a megabyte. */
class ChunkWriter {
  static readonly SIZE = 1 << 20;
  #file: Deno.FsFile;
  #parts: string[] = [];
  #length = 0;
  #encoder = new TextEncoder();

  constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  async add(text: string): Promise<void> {
    this.#parts.push(text);
    this.#length += text.length;
    if (this.#length >= ChunkWriter.SIZE) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.#parts.length === 0) return;
    const bytes = this.#encoder.encode(this.#parts.join(""));
    this.#parts = [];
    this.#length = 0;
    let done = 0;
    while (done < bytes.byteLength) done += await this.#file.write(bytes.subarray(done));
  }
}
