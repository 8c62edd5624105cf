/**
 * The wirescope side of `deno task bench:dataplane`: `listenWireGuard()` serving the origin
 * workloads of tests/origin.ts (echo on 7, upload digests on 9 and 10, download on 19) on every
 * tunneled connection, in this process: the data plane alone, no proxy layers, no second socket.
 * Prints "ready", then answers each line on stdin with a JSON line of its resource use
 * ({rss, peakRss, cpuSeconds, stats}); exits when stdin closes.
 *
 *   deno run -A bench/dataplane_server.ts PORT PRIVATE_KEY PEER_PUBLIC_KEY
 * @module
 */
import { listenWireGuard } from "../mod.ts";
import { serveOrigin } from "../tests/origin.ts";
import { processUsage } from "./usage.ts";

const [port, privateKey, peer] = Deno.args;
const listener = listenWireGuard({
  port: Number(port),
  privateKey: privateKey!,
  peers: [{ publicKey: peer! }],
});
(async () => {
  for await (const conn of listener) serveOrigin(conn, conn.localAddr.port);
})();
await listener.ready;
console.log("ready");
let buffered = "";
for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
  buffered += chunk;
  for (let i = buffered.indexOf("\n"); i >= 0; i = buffered.indexOf("\n")) {
    buffered = buffered.slice(i + 1);
    console.log(JSON.stringify({ ...processUsage(Deno.pid), stats: listener.stats() }));
  }
}
listener.close();
await listener.closed;
