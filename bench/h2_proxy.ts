/**
 * A quick HTTP/2 figure through the proxy: h2load in a wireguard-go client namespace (tests/rig.ts)
 * against nginx in an origin namespace (tests/origin_ns.ts), through `startProxy()` in WireGuard
 * mode in this process; the same load over HTTP/1.1 through the proxy, and h2 straight from the
 * host to nginx (no proxy, no tunnel) as the ceiling. Needs root.
 *
 * `node_modules/.bin/deno run -A bench/h2_proxy.ts [requests=20000] [h2,h1,ceiling,dl-h2,dl-h1]` (the second
 * argument picks runs, e.g. `h2` alone under `--cpu-prof`; the default is the first three). `dl-h2` and
 * `dl-h1`: one 100 MiB download with curl through the proxy over h2 and over HTTP/1.1, and the proxy's
 * CPU per GB.
 * @module
 */
import { cpuUsage } from "node:process";
import { generatePrivateKey } from "../mod.ts";
import { startProxy } from "../src/proxy/proxy.ts";
import { Rig, sh } from "../tests/rig.ts";
import { H2_PORT, OriginNamespace } from "../tests/origin_ns.ts";

const requests = Number(Deno.args[0] ?? 20000);
const picked = new Set((Deno.args[1] ?? "h2,h1,ceiling").split(","));
const downloads = picked.has("dl-h2") || picked.has("dl-h1");
const origin = await OriginNamespace.create(["origin.test"], downloads ? 100 << 20 : 1 << 20);
const confdir = await Deno.makeTempDir({ prefix: "wirescope-h2bench-" });
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
/** h2load's "finished in" and "requests:" lines. */
const summary = (out: string) =>
  out.split("\n").filter((l) => /^finished in|^requests:|^time for request:/.test(l)).join("\n  ");
try {
  rig = await Rig.create(1, wg.publicKey, wg.addr.port, (publicKey) => wg.addPeer({ publicKey }));
  const client = rig.clients[0]!;
  const o = origin.address;
  const n = String(requests);
  /** curl of /big.bin (-k: this is a speed figure; the tests check the certificates). */
  const curl = (version: string, url: string) =>
    client.exec([
      "curl",
      "-sSk",
      "--fail",
      version,
      "-o",
      "/dev/null",
      "-w",
      "finished in %{time_total}s, HTTP/%{http_version}, %{size_download} bytes",
      url,
    ]);
  const runs: [string, string, () => Promise<string>][] = [
    [
      "h2",
      "h2 through the proxy (10 connections x 10 streams)",
      () => client.exec(["h2load", "-n", n, "-c", "10", "-m", "10", `https://${o}:${H2_PORT}/small.txt`]),
    ],
    [
      "h1",
      "HTTP/1.1 through the proxy (10 connections)",
      () => client.exec(["h2load", "--h1", "-n", n, "-c", "10", `https://${o}/small.txt`]),
    ],
    [
      "ceiling",
      "h2 from the host straight to nginx (ceiling)",
      () => sh(["h2load", "-n", n, "-c", "10", "-m", "10", `https://${o}:${H2_PORT}/small.txt`]),
    ],
    [
      "dl-h2",
      "100 MiB download over h2 through the proxy",
      () => curl("--http2", `https://${o}:${H2_PORT}/big.bin`),
    ],
    [
      "dl-h1",
      "100 MiB download over HTTP/1.1 through the proxy",
      () => curl("--http1.1", `https://${o}/big.bin`),
    ],
  ];
  for (const [key, name, run] of runs) {
    if (!picked.has(key)) continue;
    const before = cpuUsage();
    const out = await run();
    const used = cpuUsage(before);
    // This process is the proxy (and the wasm tunnel): its CPU per request, a figure that other load
    // on the machine disturbs less than req/s.
    const cpu = `(user ${(used.user / 1e6).toFixed(2)} s, system ${(used.system / 1e6).toFixed(2)} s)`;
    const perRequest = key === "ceiling"
      ? ""
      : key.startsWith("dl-")
      ? `\n  proxy CPU per GB: ${
        ((used.user + used.system) / 1e6 / (origin.bigSize / 1e9)).toFixed(2)
      } s ${cpu}`
      : `\n  proxy CPU per request: ${((used.user + used.system) / requests).toFixed(1)} µs ${cpu}`;
    console.log(`${name}:\n  ${summary(out)}${perRequest}`);
  }
} finally {
  await rig?.close();
  await proxy.close(100);
  await origin.close();
  await Deno.remove(confdir, { recursive: true }).catch(() => {});
}
