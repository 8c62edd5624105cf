/**
 * The wirescope side of the tunnel benchmark: a WireGuard listener serving the origin workloads
 * (tests/origin.ts) in-process. Prints "ready", then answers each stdin line with a JSON line of
 * its own resource use ({rss, cpuSeconds}) and exits when stdin closes.
 *
 *   deno run -A bench/wirescope_server.ts PORT PRIVATE_KEY PEER_PUBLIC_KEY
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
const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
for await (const chunk of lines) {
  for (const _ of chunk.split("\n").slice(1)) {
    console.log(JSON.stringify({ ...processUsage(Deno.pid), stats: listener.stats() }));
  }
}
listener.close();
