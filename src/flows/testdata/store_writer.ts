/**
 * A writer process for the store tests: `deno run -A store_writer.ts PATH COUNT [BODY_BYTES]`
 * stores synthetic flows one by one (put when it starts, end when it ends, each its own
 * transaction) and prints `ended <id>` once each end() has returned, then `done`.
 * @module
 */
import { SqliteFlowStore } from "../store.ts";
import { syntheticFlow } from "./flows.ts";

const [path, countText, bodyText] = Deno.args;
if (!path || !countText) throw new Error("usage: store_writer.ts PATH COUNT [BODY_BYTES]");
const store = SqliteFlowStore.open(path, { onError: (e) => console.error(e.message) });
const out = new TextEncoder();
const count = Number(countText);
for (let n = 1; n <= count; n++) {
  const flow = syntheticFlow(n, Number(bodyText ?? 64));
  const end = flow.timestampEnd;
  delete flow.timestampEnd;
  store.put(flow);
  if (end !== undefined) flow.timestampEnd = end;
  store.end(flow);
  if (store.stats().writeErrors > 0) Deno.exit(3);
  Deno.stdout.writeSync(out.encode(`ended ${flow.id}\n`));
}
store.closeSync();
Deno.stdout.writeSync(out.encode("done\n"));
