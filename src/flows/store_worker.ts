/**
 * The writing side of {@link WorkerFlowStore}, run in a Worker: it opens the same SQLite file
 * and writes each batch of flows it is sent in one transaction, then acknowledges it with the
 * store's counters and whatever went wrong.
 * @module
 */
/// <reference lib="deno.worker" />
import { type PackedRows, unpackRows } from "./row_pack.ts";
import { type RetentionEvent, SqliteFlowStore, type SqliteFlowStoreOptions } from "./store.ts";

/** Messages to the worker. */
export type ToWorker =
  | { kind: "open"; path: string; options: Pick<SqliteFlowStoreOptions, "bodyLimit" | "maxBytes"> }
  | { kind: "write"; seq: number; rows: PackedRows }
  | { kind: "close" };

/** Messages from the worker. */
export type FromWorker =
  | { kind: "opened"; error?: string }
  | {
    kind: "ack";
    seq: number;
    stats: ReturnType<SqliteFlowStore["stats"]>;
    errors: string[];
    retention: RetentionEvent[];
  }
  | { kind: "closed" };

let store: SqliteFlowStore | undefined;
let errors: string[] = [];
let retention: RetentionEvent[] = [];
/** Batches whose commit failed (the store counts failed writes inside a batch itself). */
let commitFailures = 0;

function post(message: FromWorker): void {
  self.postMessage(message);
}

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const m = event.data;
  switch (m.kind) {
    case "open":
      try {
        store = SqliteFlowStore.open(m.path, {
          ...m.options,
          onError: (e) => errors.push(e.message),
          onRetention: (r) => retention.push(r),
        });
        post({ kind: "opened" });
      } catch (e) {
        post({ kind: "opened", error: (e as Error).message });
      }
      return;
    case "write": {
      const s = store;
      if (s) {
        try {
          const rows = unpackRows(m.rows);
          s.batch(() => {
            for (const row of rows) s.writeRow(row);
          });
        } catch (e) {
          commitFailures++;
          errors.push(`flow store write failed: ${(e as Error).message}`);
        }
      }
      const stats = s
        ? s.stats()
        : { flows: 0, bytes: 0, dropped: 0, droppedBytes: 0, writeErrors: 0, bodiesCut: 0 };
      stats.writeErrors += commitFailures;
      post({ kind: "ack", seq: m.seq, stats, errors, retention });
      errors = [];
      retention = [];
      return;
    }
    case "close":
      try {
        store?.closeSync();
      } catch { /* closing what failed */ }
      store = undefined;
      post({ kind: "closed" });
      self.close();
      return;
  }
};
