/**
 * What TCP addon hooks cost on the relay's hot path: MB/s through an explicit-proxy CONNECT
 * tunnel (raw TCP, TcpLayer) to a loopback sink, in one process, with
 *   none      no addon at all,
 *   http      an addon with HTTP hooks only (the TCP hooks are undefined: nothing may be held),
 *   tcp       an addon with a no-op `tcpMessage` (each chunk goes through an addon-hook round trip).
 *
 *   deno run -A bench/addon_tcp_hooks.ts [--mb 200] [--rounds 3]
 *
 * Runs alternate for `--rounds`; the median MB/s of each is printed.
 * @module
 */
import { startProxy } from "../src/proxy/proxy.ts";
import type { Addon } from "../src/addons/types.ts";

const args = Deno.args;
const option = (name: string, fallback: number) =>
  args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback;
const MB = option("--mb", 200);
const ROUNDS = option("--rounds", 3);

const sink = Deno.listen({ hostname: "127.0.0.1", port: 0 });
let received = 0;
(async () => {
  for await (const c of sink) {
    (async () => {
      try {
        for await (const chunk of c.readable) received += chunk.byteLength;
      } catch { /* closed */ }
    })();
  }
})();

async function once(addons: Addon[]): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-bench-hooks-" });
  const proxy = await startProxy(
    {
      modes: [{ kind: "regular", port: 0 }],
      confdir: dir,
      allowLocalDestinations: true,
      dnsServers: [],
      store: false,
      addons,
      onLog: () => {},
    } as Parameters<typeof startProxy>[0],
  );
  const port = proxy.addresses.find((a) => a.kind === "regular")!.addr.port;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const target = `127.0.0.1:${sink.addr.port}`;
  await conn.write(new TextEncoder().encode(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`));
  const buf = new Uint8Array(1024);
  await conn.read(buf);
  const chunk = new Uint8Array(64 * 1024);
  const total = MB * (1 << 20);
  received = 0;
  const t0 = performance.now();
  for (let sent = 0; sent < total; sent += chunk.byteLength) {
    for (let off = 0; off < chunk.byteLength;) off += await conn.write(chunk.subarray(off));
  }
  for (let i = 0; i < 60_000 && received < total; i++) await new Promise((r) => setTimeout(r, 1));
  const seconds = (performance.now() - t0) / 1000;
  conn.close();
  await proxy.close();
  await Deno.remove(dir, { recursive: true });
  return MB / seconds;
}

const variants: Record<string, Addon[]> = {
  none: [],
  http: [{ name: "http-only", request() {} }],
  tcp: [{ name: "tcp-noop", tcpMessage() {} }],
};
const results: Record<string, number[]> = { none: [], http: [], tcp: [] };
for (let r = 0; r < ROUNDS; r++) {
  for (const [name, addons] of Object.entries(variants)) results[name]!.push(await once(addons));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [name, xs] of Object.entries(results)) {
  console.log(
    `${name.padEnd(5)} ${median(xs).toFixed(0).padStart(6)} MB/s  (runs: ${
      xs.map((x) => x.toFixed(0)).join(", ")
    })`,
  );
}
sink.close();
