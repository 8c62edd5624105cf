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

/**
 * Sends one datagram from a connected UDP socket and waits (at most argv[4] seconds) for a reply:
 * `refused` means the kernel turned an ICMP port unreachable into ECONNREFUSED on the socket.
 */
const PROBE = `
import json, socket, sys, time
host, port, text, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(wait)
s.connect((host, port))
start = time.monotonic()
out = {}
try:
    s.send(text.encode())
    out["reply"] = s.recv(2048).decode()
except ConnectionRefusedError:
    out["refused"] = True
except socket.timeout:
    out["timeout"] = True
out["ms"] = round((time.monotonic() - start) * 1000, 2)
print(json.dumps(out))
`;

/** What {@link probe} saw. */
export interface ProbeResult {
  reply?: string;
  refused?: boolean;
  timeout?: boolean;
  ms: number;
}

/** Runs {@link PROBE} in the client's namespace: one datagram to `host:port`, 5 s for a reply. */
export async function probe(
  client: RigClient,
  host: string,
  port: number,
  text: string,
): Promise<ProbeResult> {
  const out = await client.exec(["timeout", "20", "python3", "-c", PROBE, host, String(port), text, "5"]);
  return JSON.parse(out.trim().split("\n").pop()!);
}
