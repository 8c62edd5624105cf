/**
 * The wirescope side of `deno task bench:dataplane`: `listenWireGuard()` serving the origin
 * workloads of tests/origin.ts (echo on 7, upload digests on 9 and 10, download on 19) on every
 * tunneled connection, in this process: the data plane alone, no proxy layers, no second socket.
 * The bench reads its resource use from /proc; it runs until SIGTERM or SIGINT.
 *
 *   deno run -A bench/dataplane_server.ts PORT PRIVATE_KEY PEER_PUBLIC_KEY
 * @module
 */
import { listenWireGuard } from "../mod.ts";
import { serveOrigin } from "../tests/origin.ts";

const [port, privateKey, peer] = Deno.args;
const listener = listenWireGuard({
  port: Number(port),
  privateKey: privateKey!,
  peers: [{ publicKey: peer! }],
});
const stop = async () => {
  listener.close();
  await listener.closed;
  // A clean exit, so that --cpu-prof writes its profile.
  Deno.exit(0);
};
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);
for await (const conn of listener) serveOrigin(conn, conn.localAddr.port);
