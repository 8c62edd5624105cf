/**
 * Sequential keep-alive requests through wirescope's explicit mode to a loopback origin, three
 * ways: forwarded with no request hook, forwarded through a hook that lets every request go on
 * (the cost of holding each request for a verdict), and answered by server replay (the origin
 * is not contacted). curl makes the requests, all on one connection.
 *
 *     deno run -A bench/replay.ts [--requests 2000]
 *
 * Prints one line per way, in µs per request, and curl straight to the origin for comparison.
 * A keep-alive request that takes ~40 ms means a write waited for a delayed ACK (Nagle).
 * @module
 */
import { parseArgs } from "node:util";
import { startProxy } from "../src/proxy/proxy.ts";
import { ServerReplay } from "../src/flows/server_replay.ts";
import type { HttpFlow } from "../src/flows/flow.ts";

const { values } = parseArgs({ args: Deno.args, options: { requests: { type: "string", default: "2000" } } });
const n = Number(values.requests);
const dir = await Deno.makeTempDir({ prefix: "wirescope-bench-replay-" });
const origin = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen() {} },
  (req) => new Response(`${new URL(req.url).pathname} ${"x".repeat(1000)}`),
);
const base = `http://127.0.0.1:${origin.addr.port}`;
// curl takes its URLs from a file: one connection, one request after the other.
const urlFile = `${dir}/urls`;
await Deno.writeTextFile(
  urlFile,
  Array.from({ length: n }, (_, i) => `url = "${base}/p${i % 100}"\n`).join(""),
);

async function curl(proxyPort?: number): Promise<number> {
  const started = performance.now();
  const o = await new Deno.Command("curl", {
    args: [
      "-s",
      "-o",
      "/dev/null",
      ...(proxyPort ? ["-x", `http://127.0.0.1:${proxyPort}`] : []),
      "-K",
      urlFile,
    ],
  }).output();
  if (!o.success) throw new Error(`curl failed (${o.code})`);
  return ((performance.now() - started) * 1000) / n;
}

async function through(label: string, options: Parameters<typeof startProxy>[0]): Promise<HttpFlow[]> {
  const proxy = await startProxy(options);
  const flows: HttpFlow[] = [];
  proxy.bus.subscribe((e) => {
    if (e.type === "end" && e.flow.type === "http") flows.push(e.flow);
  });
  const us = await curl(proxy.addresses[0]!.addr.port);
  console.log(`${label.padEnd(44)} ${us.toFixed(0).padStart(6)} µs/request`);
  await proxy.close();
  return flows;
}

try {
  const common = {
    modes: [{ kind: "regular" as const, hostname: "127.0.0.1", port: 0 }],
    confdir: `${dir}/conf`,
    allowLocalDestinations: true,
    onLog: () => {},
  };
  console.log(`${n} sequential keep-alive requests (curl), 1 KB answers`);
  console.log(`${"direct to the origin".padEnd(44)} ${(await curl()).toFixed(0).padStart(6)} µs/request`);
  const recorded = await through("proxied, no hook", common);
  await through("proxied, a hook that lets each request on", { ...common, requestHook: () => undefined });
  const replay = new ServerReplay(recorded, { reuse: true });
  await through("server replay (origin not contacted)", { ...common, serverReplay: replay });
  const stats = replay.stats();
  if (stats.hits !== n || stats.misses !== 0) {
    throw new Error(`server replay missed: ${JSON.stringify(stats)}`);
  }
} finally {
  await origin.shutdown();
  await Deno.remove(dir, { recursive: true });
}
