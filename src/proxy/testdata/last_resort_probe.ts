// Run by last_resort_test.ts in a process of its own (the test runner treats any uncaught error
// as fatal, whatever the listeners do): errors escape connection scopes the ways node:tls and
// careless code let them (a nextTick callback, a microtask, a rejection nobody handles), and the
// process must live on to print what each scope saw.
import process from "node:process";
import { currentScope, lastResortCount, runInConnectionScope } from "../last_resort.ts";

function scope(name: string) {
  const seen = { name, reports: [] as string[], aborted: 0 };
  return {
    seen,
    scope: {
      describe: () => name,
      report: (m: string) => seen.reports.push(m),
      abort: () => void seen.aborted++,
    },
  };
}
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const a = scope("connection A"), b = scope("connection B"), c = scope("connection C");
const d = scope("connection D");
await Promise.all([
  runInConnectionScope(a.scope, async () => {
    await pause(1);
    process.nextTick(() => {
      throw new TypeError("boom from a callback");
    });
    await pause(40);
  }),
  runInConnectionScope(d.scope, async () => {
    await pause(2);
    queueMicrotask(() => {
      throw new RangeError("from a microtask");
    });
    await pause(40);
  }),
  runInConnectionScope(b.scope, async () => {
    currentScope()!.flowId = "flow-7";
    await pause(5);
    void Promise.reject(new Error("nobody listens"));
    await pause(40);
  }),
  runInConnectionScope(c.scope, () => pause(50)),
]);
console.log(JSON.stringify({ caught: lastResortCount(), scopes: [a.seen, b.seen, c.seen, d.seen] }));
