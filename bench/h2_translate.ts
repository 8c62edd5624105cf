/**
 * The HTTP/2 → HTTP/1.1 translation's figure (issue 12): h2load in a wireguard-go client namespace
 * (tests/rig.ts) through `startProxy()` in WireGuard mode to nginx's HTTP/1.1-only port 443 in an
 * origin namespace (tests/origin_ns.ts): the client speaks h2 to the proxy, which carries each
 * stream on a pool of HTTP/1.1 connections. For comparison, the same load to nginx's h2 port (h2
 * both sides) and over HTTP/1.1 end to end. Needs root.
 *
 * `node_modules/.bin/deno run -A bench/h2_translate.ts [requests=20000] [h2-h1,h2-h2,h1-h1]`
 * @module
 */
import { cpuUsage } from "node:process";
import { generatePrivateKey } from "../mod.ts";
import { startProxy } from "../src/proxy/proxy.ts";
import { Rig } from "../tests/rig.ts";
import { H2_PORT, OriginNamespace } from "../tests/origin_ns.ts";

const requests = Number(Deno.args[0] ?? 20000);
const picked = new Set((Deno.args[1] ?? "h2-h1,h2-h2,h1-h1").split(","));
const origin = await OriginNamespace.create(["origin.test"], 1 << 20);
const confdir = await Deno.makeTempDir({ prefix: "wirescope-h2h1bench-" });
const proxy = await startProxy({
  modes: [{ kind: "wireguard", port: 0, privateKey: generatePrivateKey(), peers: [] }],
  confdir,
  upstreamCa: [origin.caFile],
  dnsServers: [{ hostname: origin.address, port: 53 }],
  flowBuffer: 100,
  onLog: () => {},
});
const wg = proxy.wireguard[0]!;
let rig: Rig | null = null;
const summary = (out: string) =>
  out.split("\n").filter((l) => /^finished in|^requests:|^time for request:/.test(l)).join("\n  ");
try {
  rig = await Rig.create(1, wg.publicKey, wg.addr.port, (publicKey) => wg.addPeer({ publicKey }));
  const client = rig.clients[0]!;
  const o = origin.address;
  const n = String(requests);
  const runs: [string, string, string[]][] = [
    [
      "h2-h1",
      "h2 client, HTTP/1.1 origin: translated (10 connections x 10 streams)",
      ["h2load", "-n", n, "-c", "10", "-m", "10", `https://${o}/small.txt`],
    ],
    [
      "h2-h2",
      "h2 both sides (10 connections x 10 streams)",
      ["h2load", "-n", n, "-c", "10", "-m", "10", `https://${o}:${H2_PORT}/small.txt`],
    ],
    ["h1-h1", "HTTP/1.1 both sides (10 connections)", [
      "h2load",
      "--h1",
      "-n",
      n,
      "-c",
      "10",
      `https://${o}/small.txt`,
    ]],
  ];
  for (const [key, name, cmd] of runs) {
    if (!picked.has(key)) continue;
    const before = cpuUsage();
    const out = await client.exec(cmd);
    const used = cpuUsage(before);
    const cpu = `(user ${(used.user / 1e6).toFixed(2)} s, system ${(used.system / 1e6).toFixed(2)} s)`;
    console.log(
      `${name}:\n  ${summary(out)}\n  proxy CPU per request: ${
        ((used.user + used.system) / requests).toFixed(1)
      } µs ${cpu}`,
    );
  }
} finally {
  await rig?.close();
  await proxy.close(100);
  await origin.close();
  await Deno.remove(confdir, { recursive: true }).catch(() => {});
}
