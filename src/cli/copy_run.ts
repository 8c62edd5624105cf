/**
 * `-r IN -w OUT`: the flows of a saved run are written to the `-w` file too (as mitmdump's
 * `-nr IN -w OUT` does), in its format and through `--save-filter`, before any live flow. Without
 * a mode that converts a file; with one, the live flows follow the copied ones.
 * @module
 */
import type { Filter } from "../flows/filter.ts";
import { openFlowFile } from "../flows/flow_file.ts";
import { HarSpool } from "../flows/har_file.ts";
import { FlowLogWriter } from "../flows/json_lines.ts";
import { SqliteFlowStore } from "../flows/store.ts";
import type { SaveFormat } from "./flags.ts";

/** What {@link copySavedRun} did. */
export interface CopiedRun {
  /** Flows written to the `-w` file. */
  flows: number;
  /** For a HAR `-w`: the spool holding the copied entries, for the live run to go on with. */
  harSpool?: HarSpool;
}

/**
 * Writes the flows of the saved run `input` (those `saveFilter` accepts) to `output` in `format`:
 * into a flow store (made mode 0600; an existing one is added to; a flow already there by id is
 * replaced), appended as JSON lines, or spooled as HAR entries (the spool is returned: finished
 * by the caller, which may add live flows first). Throws on an unreadable input or unwritable
 * output; the caller reports it in one line.
 */
export async function copySavedRun(
  input: string,
  output: string,
  format: SaveFormat,
  saveFilter: Filter | undefined,
): Promise<CopiedRun> {
  const file = await openFlowFile(input);
  let flows = 0;
  try {
    switch (format) {
      case "store": {
        try {
          await Deno.lstat(output);
        } catch {
          (await Deno.open(output, { write: true, create: true, mode: 0o600 })).close();
        }
        let failure: Error | undefined;
        const store = SqliteFlowStore.open(output, { onError: (e) => (failure ??= e) });
        try {
          // Batches of 500: one transaction each, and the reader yields in between.
          let batch: Parameters<SqliteFlowStore["end"]>[0][] = [];
          const flush = () => {
            store.batch(() => batch.forEach((f) => store.end(f)));
            batch = [];
          };
          for await (const flow of file.flows(saveFilter)) {
            batch.push(flow);
            flows++;
            if (batch.length === 500) flush();
          }
          flush();
        } finally {
          store.closeSync();
        }
        if (store.stats().writeErrors > 0) throw failure ?? new Error("the flow store failed a write");
        return { flows };
      }
      case "jsonl": {
        const writer = await FlowLogWriter.open(output);
        try {
          for await (const flow of file.flows(saveFilter)) {
            writer.write(flow);
            flows++;
          }
        } finally {
          await writer.close();
        }
        return { flows };
      }
      case "har": {
        const spool = await HarSpool.open(output);
        for await (const flow of file.flows(saveFilter)) {
          if (flow.type !== "http") continue;
          spool.add(flow);
          flows++;
        }
        return { flows, harSpool: spool };
      }
    }
  } finally {
    file.close();
  }
}
