/**
 * A proxy in WireGuard mode (`startProxy()`) with one wireguard-go client namespace pointed at it
 * (tests/rig.ts) and its completed flows collected: the set-up of the QUIC tests and bench.
 * @module
 */
import { generatePrivateKey } from "../mod.ts";
import { type ProxyHandle, type ProxyOptions, startProxy } from "../src/proxy/proxy.ts";
import type { Flow } from "../src/flows/flow.ts";
import { Rig, type RigClient } from "./rig.ts";
import type { OriginNamespace } from "./origin_ns.ts";

/** A running proxy, its client namespace and the flows so far. */
export interface ProxiedClient {
  proxy: ProxyHandle;
  rig: Rig;
  client: RigClient;
  flows: Flow[];
  /** Stops the proxy, removes the namespace and the proxy's confdir. */
  close(): Promise<void>;
}

/**
 * Starts the proxy (trusting `origin`'s CA upstream, DNS to the origin, `options` on top) and one
 * client namespace whose default routes go through it.
 */
export async function proxiedClient(
  origin: OriginNamespace,
  options: Partial<ProxyOptions> = {},
): Promise<ProxiedClient> {
  const confdir = await Deno.makeTempDir({ prefix: "wirescope-confdir-" });
  const proxy = await startProxy({
    modes: [{ kind: "wireguard", port: 0, privateKey: generatePrivateKey(), peers: [] }],
    confdir,
    upstreamCa: [origin.caFile],
    dnsServers: [{ hostname: origin.address, port: 53 }],
    onLog: () => {},
    ...options,
  });
  const flows: Flow[] = [];
  (async () => {
    for await (const f of proxy.flows) flows.push(f);
  })();
  const wg = proxy.wireguard[0]!;
  let rig: Rig;
  try {
    rig = await Rig.create(1, wg.publicKey, wg.addr.port, (publicKey) => wg.addPeer({ publicKey }));
  } catch (e) {
    await proxy.close(500);
    await Deno.remove(confdir, { recursive: true }).catch(() => {});
    throw e;
  }
  return {
    proxy,
    rig,
    client: rig.clients[0]!,
    flows,
    async close() {
      await proxy.close(500);
      await rig.close();
      await Deno.remove(confdir, { recursive: true }).catch(() => {});
    },
  };
}
