/**
 * The recorder: what carries a running proxy's flow events into a {@link FlowStore} without
 * putting a transaction on the hot path for each of them.
 *
 * - `start` and `update` mark a flow as due for a `put`; a live flow is written once it has been
 *   live for `updateInterval` (default 500 ms) and at most once per `updateInterval` after that,
 *   so a long download that updates on every chunk costs a few writes per second, not one per
 *   chunk, and the many short flows are written once, when they end.
 * - `end` queues the flow; queued flows are written together in one transaction (the store's
 *   `batch`, when it has one) `flushDelay` ms after the first of them (default 25 ms), or at once
 *   when `maxBatch` of them (default 256) are waiting. A flow that starts and ends within one
 *   such window is written once.
 * - A flow counts as **ended for the store** when its batch has been committed: that is what
 *   survives a SIGKILL. `onCommit` listeners hear of each batch after its commit (the command
 *   prints a flow's line only then, so every printed line is in the store).
 *
 * Why batches: one flow committed on its own costs about 120 µs of CPU (a WAL commit per flow);
 * in one transaction of many flows the commit is shared (see ARCHITECTURE.md, "The flow store").
 *
 * With a save filter only ended flows that match it are written (whether a live flow matches can
 * change until it ends, e.g. `~c 500`). When the store fails a write (a full disk, an unwritable
 * file), the recorder logs one line and stops recording; the proxy keeps serving and flows keep
 * being reported to `onCommit`, counted as not stored.
 * @module
 */
import type { Flow, FlowEvent } from "./flow.ts";
import { compileFilter, type Filter } from "./filter.ts";
import type { FlowStore } from "./store.ts";

/** Options of {@link FlowRecorder}. */
export interface FlowRecorderOptions {
  /** Only ended flows matching this are stored (default: all flows, live ones too). */
  filter?: string | Filter;
  /** Least time between two writes of one live flow (ms; default 500). */
  updateInterval?: number;
  /** Time from the first queued write to the batch's commit (ms; default 25). */
  flushDelay?: number;
  /** Ended flows that make a batch commit at once (default 256). */
  maxBatch?: number;
  /** Receives the recorder's log lines (recording stopped after a failure). */
  onLog?: (level: "warn" | "error", message: string) => void;
}

/** Counters of a recorder. */
export interface FlowRecorderStats {
  /** Ended flows committed to the store. */
  stored: number;
  /** Ended flows the save filter left out. */
  filteredOut: number;
  /** Ended flows not stored because recording had stopped after a write failure. */
  notStored: number;
  /** Writes of live flows (start and update). */
  liveWrites: number;
  /** Batches committed. */
  batches: number;
  /** Flows waiting for the next batch. */
  pending: number;
  /** True once a write failure stopped recording. */
  stopped: boolean;
}

/** A store that can group writes in one transaction (e.g. {@link SqliteFlowStore}). */
interface BatchingStore extends FlowStore {
  batch(fn: () => void): void;
}

function canBatch(store: FlowStore): store is BatchingStore {
  return typeof (store as Partial<BatchingStore>).batch === "function";
}

/** A store that commits later (e.g. {@link WorkerFlowStore}): `committed` resolves when done. */
interface DeferredStore extends FlowStore {
  committed(): Promise<void>;
}

function isDeferred(store: FlowStore): store is DeferredStore {
  return typeof (store as Partial<DeferredStore>).committed === "function";
}

/** Carries flow events into a store in throttled, grouped writes. */
export class FlowRecorder {
  /** The store written to. */
  readonly store: FlowStore;
  #filter: Filter | undefined;
  #updateInterval: number;
  #flushDelay: number;
  #maxBatch: number;
  #onLog: FlowRecorderOptions["onLog"];
  /** Live flows due for a write, by id. */
  #live = new Map<string, Flow>();
  /** When each live flow was last written, or started (ms, `performance.now()`), by id. */
  #lastWrite = new Map<string, number>();
  /** Ended flows waiting for the batch. */
  #ended: Flow[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #listeners = new Set<(flows: Flow[]) => void>();
  #closed = false;
  /** The chain of `onCommit` notifications, in batch order. */
  #telling: Promise<void> = Promise.resolve();
  /** The store's failed writes when last looked at. */
  #errorsSeen: number;
  #stats: FlowRecorderStats = {
    stored: 0,
    filteredOut: 0,
    notStored: 0,
    liveWrites: 0,
    batches: 0,
    pending: 0,
    stopped: false,
  };

  /**
   * @param store Where flows go.
   * @param options Filter, throttling and batching.
   * @throws {FilterSyntaxError} When `filter` is not a valid expression.
   */
  constructor(store: FlowStore, options: FlowRecorderOptions = {}) {
    this.store = store;
    this.#filter = typeof options.filter === "string" ? compileFilter(options.filter) : options.filter;
    this.#updateInterval = options.updateInterval ?? 500;
    this.#flushDelay = options.flushDelay ?? 25;
    this.#maxBatch = Math.max(1, options.maxBatch ?? 256);
    this.#onLog = options.onLog;
    this.#errorsSeen = store.stats().writeErrors;
  }

  /** Takes one flow event (subscribe this to the proxy's FlowBus). */
  handle(event: FlowEvent): void {
    if (this.#closed) return;
    const flow = event.flow;
    if (event.type === "end") {
      this.#live.delete(flow.id);
      this.#ended.push(flow);
      if (this.#ended.length >= this.#maxBatch) this.flush();
      else this.#schedule();
      return;
    }
    if (this.#filter !== undefined || this.#stats.stopped) return;
    this.#live.set(flow.id, flow);
    // Counted from its start: a flow that ends within `updateInterval` is never written live.
    if (event.type === "start" && !this.#lastWrite.has(flow.id)) {
      this.#lastWrite.set(flow.id, performance.now());
    }
    this.#schedule();
  }

  /** Hears of each committed batch's ended flows (stored or not); returns an unsubscribe. */
  onCommit(listener: (flows: Flow[]) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #schedule(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.flush();
    }, this.#flushDelay);
  }

  /** Writes what is due now, in one transaction, and tells the `onCommit` listeners. */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const now = performance.now();
    const ended = this.#ended;
    this.#ended = [];
    const live: Flow[] = [];
    for (const [id, flow] of this.#live) {
      const last = this.#lastWrite.get(id);
      if (last !== undefined && now - last < this.#updateInterval) continue;
      live.push(flow);
    }
    const toStore = ended.filter((f) => this.#filter === undefined || this.#filter.match(f));
    // A store that commits later reports failures of earlier batches by now.
    if (!this.#stats.stopped && this.store.stats().writeErrors > this.#errorsSeen) this.#stop(undefined);
    if (!this.#stats.stopped && (live.length > 0 || toStore.length > 0)) {
      const before = this.store.stats().writeErrors;
      let failure: unknown;
      const write = () => {
        for (const f of live) this.store.put(f);
        for (const f of toStore) this.store.end(f);
      };
      try {
        if (canBatch(this.store)) this.store.batch(write);
        else write();
      } catch (e) {
        failure = e;
      }
      const failed = failure !== undefined || this.store.stats().writeErrors > before;
      this.#errorsSeen = this.store.stats().writeErrors;
      if (failed) {
        this.#stop(failure);
        this.#stats.notStored += toStore.length;
      } else {
        this.#stats.batches++;
        this.#stats.stored += toStore.length;
        this.#stats.liveWrites += live.length;
        for (const f of live) {
          this.#live.delete(f.id);
          this.#lastWrite.set(f.id, now);
        }
      }
    } else if (this.#stats.stopped) {
      this.#stats.notStored += toStore.length;
    }
    this.#stats.filteredOut += ended.length - toStore.length;
    for (const f of ended) this.#lastWrite.delete(f.id);
    if (this.#live.size > 0 && !this.#stats.stopped && !this.#closed) this.#schedule();
    if (ended.length > 0 && this.#listeners.size > 0) {
      const tell = () => {
        for (const listener of this.#listeners) {
          try {
            listener(ended);
          } catch { /* one listener's failure is not the recorder's */ }
        }
      };
      // Batches are acknowledged in order, so listeners hear of them in order.
      if (isDeferred(this.store) && toStore.length > 0 && !this.#stats.stopped) {
        const done = this.store.committed();
        this.#telling = this.#telling.then(() => done).then(tell, tell);
      } else {
        this.#telling = this.#telling.then(tell);
      }
    }
  }

  /** Resolves when every batch so far is committed and its listeners told. */
  settled(): Promise<void> {
    const store = this.store;
    return this.#telling.then(() => (isDeferred(store) ? store.committed() : undefined));
  }

  #stop(failure: unknown): void {
    this.#stats.stopped = true;
    this.#live.clear();
    this.#lastWrite.clear();
    const reason = failure instanceof Error ? `: ${failure.message}` : " (see the error above)";
    try {
      this.#onLog?.(
        "error",
        `the flow store failed a write${reason}; recording stopped (the proxy keeps running)`,
      );
    } catch { /* nowhere to report */ }
  }

  /** Counters. */
  stats(): FlowRecorderStats {
    return { ...this.#stats, pending: this.#ended.length + this.#live.size };
  }

  /** Writes what is queued (live flows as they are now) and stops taking events. */
  close(): void {
    if (this.#closed) return;
    // Live flows are written whatever their last write was: their latest state is what is kept.
    this.#lastWrite.clear();
    this.flush();
    this.#closed = true;
    this.#live.clear();
  }
}
