/**
 * {@link WorkerFlowStore}: the SQLite flow store with its writes in a Worker, so that a busy
 * proxy does not spend its one thread in SQLite.
 *
 * Why: a flow written by {@link SqliteFlowStore} costs about 80 µs of CPU even in batches of 100
 * (JSON encoding ~10 µs, the row with its indexes, the blobs; measured over `syntheticFlow(i, 100)`
 * flows). At 6,000 HTTPS requests a second that is half the main thread: recording on the main
 * thread cut the proxy's req/s by 44% (bench/store_load.ts). Here the main thread only encodes
 * each flow (JSON with its bytes apart, ~5-9 µs; a structured clone of the flow costs ~21 µs) and
 * hands the batch over packed (src/flows/row_pack.ts: one string and one transferred buffer; the
 * array of row objects it replaced cost ~15 µs a flow to clone); the worker commits it.
 *
 * Reads (`query`, `get`, `count`) and the rare edits (`delete`, `setMark`, `setComment`...) run on a
 * connection of the main thread: WAL mode lets them read while the worker writes. `put` and
 * `end` are queued and sent at the end of the current `batch` (or task); {@link committed}
 * resolves once everything sent so far is committed: a flow is *ended for the store* then, and
 * survives a SIGKILL. Counters are the worker's as of its last acknowledgement.
 * @module
 */
import type { Flow } from "./flow.ts";
import type { Filter } from "./filter.ts";
import {
  DEFAULT_BODY_LIMIT,
  type FlowPage,
  type FlowQuery,
  type FlowRow,
  flowRow,
  type FlowStore,
  FlowStoreError,
  type FlowStoreStats,
  SqliteFlowStore,
  type SqliteFlowStoreOptions,
  type StoredFlow,
} from "./store.ts";
import { RowPacker } from "./row_pack.ts";
import type { FromWorker, ToWorker } from "./store_worker.ts";

/** Options of {@link WorkerFlowStore.open}: those of {@link SqliteFlowStore} but read-only. */
export type WorkerFlowStoreOptions = Omit<SqliteFlowStoreOptions, "readOnly">;

/** The SQLite flow store, written from a Worker. */
export class WorkerFlowStore implements FlowStore {
  /** The file it is on. */
  readonly path: string;
  #reader: SqliteFlowStore;
  #worker: Worker;
  #options: WorkerFlowStoreOptions;
  #outbox = new RowPacker();
  #sendScheduled = false;
  #inBatch = false;
  #seq = 0;
  #acked = 0;
  #waiters: { seq: number; resolve: () => void }[] = [];
  #stats: FlowStoreStats;
  #closed = false;
  #closedByWorker: Promise<void>;
  #onClosed!: () => void;

  private constructor(
    path: string,
    reader: SqliteFlowStore,
    worker: Worker,
    options: WorkerFlowStoreOptions,
  ) {
    this.path = path;
    this.#reader = reader;
    this.#worker = worker;
    this.#options = options;
    this.#stats = reader.stats();
    this.#closedByWorker = new Promise((r) => (this.#onClosed = r));
  }

  /**
   * Opens (or creates) the store at `path` and starts its writer. Throws
   * {@link FlowStoreError} as {@link SqliteFlowStore.open} does.
   */
  static async open(path: string, options: WorkerFlowStoreOptions = {}): Promise<WorkerFlowStore> {
    // Made (and checked) here, so that the worker opens a file that is surely a store.
    const reader = SqliteFlowStore.open(path, options);
    const worker = new Worker(new URL("./store_worker.ts", import.meta.url), { type: "module" });
    const opened = await new Promise<FromWorker>((resolve) => {
      worker.onmessage = (e: MessageEvent<FromWorker>) => resolve(e.data);
      worker.onerror = (e) => {
        e.preventDefault();
        resolve({ kind: "opened", error: e.message });
      };
      const message: ToWorker = {
        kind: "open",
        path,
        options: {
          ...(options.bodyLimit !== undefined ? { bodyLimit: options.bodyLimit } : {}),
          ...(options.maxBytes !== undefined ? { maxBytes: options.maxBytes } : {}),
        },
      };
      worker.postMessage(message);
    });
    if (opened.kind === "opened" && opened.error !== undefined) {
      worker.terminate();
      reader.closeSync();
      throw new FlowStoreError(opened.error);
    }
    const store = new WorkerFlowStore(path, reader, worker, options);
    worker.onmessage = (e: MessageEvent<FromWorker>) => store.#receive(e.data);
    worker.onerror = (e) => {
      e.preventDefault();
      store.#report(`the flow store's writer failed: ${e.message}`);
    };
    return store;
  }

  #receive(m: FromWorker): void {
    if (m.kind === "closed") {
      this.#onClosed();
      return;
    }
    if (m.kind !== "ack") return;
    this.#acked = m.seq;
    this.#stats = m.stats;
    for (const message of m.errors) this.#report(message);
    for (const r of m.retention) {
      try {
        this.#options.onRetention?.(r);
      } catch { /* the reporter's failure */ }
    }
    while (this.#waiters.length > 0 && this.#waiters[0]!.seq <= this.#acked) this.#waiters.shift()!.resolve();
  }

  #report(message: string): void {
    try {
      this.#options.onError?.(new FlowStoreError(message));
    } catch { /* nowhere to report */ }
  }

  #queue(flow: Flow, ended: boolean): void {
    if (this.#closed) {
      this.#stats.writeErrors++;
      this.#report("flow store write failed: the flow store is closed");
      return;
    }
    let row: FlowRow;
    try {
      row = flowRow(flow, ended, this.#options.bodyLimit ?? DEFAULT_BODY_LIMIT);
    } catch (e) {
      this.#stats.writeErrors++;
      this.#report(`flow store write failed: ${(e as Error).message}`);
      return;
    }
    this.#outbox.add(row);
    if (this.#inBatch || this.#sendScheduled) return;
    this.#sendScheduled = true;
    queueMicrotask(() => this.#send());
  }

  #send(): void {
    this.#sendScheduled = false;
    if (this.#outbox.count === 0) return;
    const rows = this.#outbox.take();
    const message: ToWorker = { kind: "write", seq: ++this.#seq, rows };
    try {
      // One string copied and one buffer handed over, whatever the number of flows.
      this.#worker.postMessage(message, [rows.bytes]);
    } catch (e) {
      this.#stats.writeErrors++;
      this.#report(`flow store write failed: ${(e as Error).message}`);
    }
  }

  /** {@inheritDoc FlowStore.put} */
  put(flow: Flow): void {
    this.#queue(flow, false);
  }

  /** {@inheritDoc FlowStore.end} (durable once {@link committed} resolves). */
  end(flow: Flow): void {
    this.#queue(flow, true);
  }

  /** Sends the writes `fn` makes to the worker as one transaction. */
  batch(fn: () => void): void {
    if (this.#inBatch) {
      fn();
      return;
    }
    this.#inBatch = true;
    try {
      fn();
    } finally {
      this.#inBatch = false;
    }
    this.#send();
  }

  /** Resolves when every write made so far is committed (or has failed and been reported). */
  committed(): Promise<void> {
    this.#send();
    const seq = this.#seq;
    if (seq <= this.#acked || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ seq, resolve }));
  }

  /** {@inheritDoc FlowStore.get} */
  get(id: string): Promise<StoredFlow | undefined> {
    return this.#reader.get(id);
  }

  /** {@inheritDoc FlowStore.query} */
  query(query?: FlowQuery | string): Promise<FlowPage> {
    return this.#reader.query(query);
  }

  /** {@inheritDoc FlowStore.count} */
  count(filter?: string | Filter): Promise<number> {
    return this.#reader.count(filter);
  }

  /** {@inheritDoc FlowStore.delete} */
  async delete(ids: string[]): Promise<number> {
    await this.committed();
    return this.#reader.delete(ids);
  }

  /** {@inheritDoc FlowStore.clear} */
  async clear(): Promise<void> {
    await this.committed();
    return this.#reader.clear();
  }

  /** {@inheritDoc FlowStore.setMark} */
  async setMark(id: string, mark: string | boolean): Promise<boolean> {
    await this.committed();
    return this.#reader.setMark(id, mark);
  }

  /** {@inheritDoc FlowStore.setComment} */
  async setComment(id: string, comment: string): Promise<boolean> {
    await this.committed();
    return this.#reader.setComment(id, comment);
  }

  /** {@inheritDoc FlowStore.stats} */
  stats(): FlowStoreStats {
    return { ...this.#stats };
  }

  /** Commits what is queued, stops the worker and closes (the WAL is checkpointed into the file). */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.committed();
    this.#closed = true;
    const message: ToWorker = { kind: "close" };
    this.#worker.postMessage(message);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.#closedByWorker, new Promise((r) => (timer = setTimeout(r, 5000)))]);
    clearTimeout(timer);
    this.#worker.terminate();
    for (const w of this.#waiters.splice(0)) w.resolve();
    this.#reader.closeSync();
  }
}
