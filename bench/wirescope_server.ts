/**
 * A stand-in for `deno run -A mod.ts --mode wireguard@PORT --confdir DIR --upstream-ca FILE
 * --allow-local-destinations -q`
 * built on the library ({@link startProxy}), taking the same arguments and the same
 * `<confdir>/wireguard.json` keys file. The bench uses the CLI; this is for when the CLI does not
 * start (`deno task bench --wirescope-library`), e.g. while it is being changed.
 *
 *   deno run -A bench/wirescope_server.ts --mode wireguard@PORT --confdir DIR [--upstream-ca FILE]
 *
 * Runs until SIGTERM or SIGINT.
 * @module
 */
import { startProxy } from "../src/proxy/proxy.ts";
import { publicKeyOf } from "../src/core/keys.ts";

/** `<confdir>/wireguard.json`, as the CLI reads it. */
interface WireGuardKeys {
  serverPrivateKey: string;
  clientPrivateKeys: string[];
}

let port = 0, confdir = "";
const upstreamCa: string[] = [];
for (let i = 0; i < Deno.args.length; i++) {
  const a = Deno.args[i]!;
  if (a === "--mode") port = Number(/^wireguard@(\d+)$/.exec(Deno.args[++i] ?? "")?.[1] ?? NaN);
  else if (a === "--confdir") confdir = Deno.args[++i] ?? "";
  else if (a === "--upstream-ca") upstreamCa.push(Deno.args[++i] ?? "");
  // Accepted for the CLI's sake; always on here (the bench's origins are on this host).
  else if (a === "--allow-local-destinations") continue;
}
if (!Number.isInteger(port) || port <= 0 || !confdir) {
  console.error("usage: wirescope_server.ts --mode wireguard@PORT --confdir DIR [--upstream-ca FILE]");
  Deno.exit(2);
}
const keys = JSON.parse(await Deno.readTextFile(`${confdir}/wireguard.json`)) as WireGuardKeys;
const proxy = await startProxy({
  modes: [{
    kind: "wireguard",
    port,
    privateKey: keys.serverPrivateKey,
    peers: keys.clientPrivateKeys.map((k) => ({ publicKey: publicKeyOf(k) })),
  }],
  confdir,
  upstreamCa,
  dnsServers: [],
  allowLocalDestinations: true,
  onLog: () => {},
});
const stop = async () => {
  await proxy.close(500);
  Deno.exit(0);
};
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);
await proxy.closed;
