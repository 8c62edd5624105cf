/**
 * `--mode reverse:dns://HOST:PORT` from the command (issue 17): a DNS server on UDP whose queries
 * go to that one resolver (not the system's), each printed as a DNS flow.
 */
import assert from "node:assert/strict";
import { Cli, freePort } from "./cli_process.ts";

/** A resolver answering every A query with 10.11.12.13 (and counting the queries it got). */
function resolver(): { socket: Deno.DatagramConn; port: number; queries: () => number } {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  let queries = 0;
  (async () => {
    for (;;) {
      const [q, from] = await socket.receive();
      if (q.byteLength < 12) continue;
      queries++;
      let off = 12;
      while (off < q.byteLength && q[off] !== 0) off += q[off]! + 1;
      const end = off + 5;
      if (end > q.byteLength) continue;
      const out = new Uint8Array(end + 16);
      out.set(q.subarray(0, end));
      out[2] = 0x81, out[3] = 0x80;
      out.set([0, 1, 0, 1, 0, 0, 0, 0], 4);
      out.set([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 11, 12, 13], end);
      await socket.send(out, from);
    }
  })().catch(() => {});
  return { socket, port: (socket.addr as Deno.NetAddr).port, queries: () => queries };
}

Deno.test({
  name: "reverse:dns://: dig through the listener is answered by the given resolver, recorded as a DNS flow",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-revdns-" });
    const dns = resolver();
    const port = freePort();
    const cli = new Cli([
      "--mode",
      `reverse:dns://127.0.0.1:${dns.port}@127.0.0.1:${port}`,
      "--no-store",
      "--confdir",
      `${dir}/conf`,
    ]);
    try {
      let answer = "";
      for (let i = 0; i < 60 && answer === ""; i++) {
        const o = await new Deno.Command("dig", {
          args: ["@127.0.0.1", "-p", String(port), "+short", "+tries=1", "+time=1", "reverse-dns.test", "A"],
          stdout: "piped",
          stderr: "null",
        }).output();
        answer = new TextDecoder().decode(o.stdout).trim();
        if (answer.startsWith(";;")) answer = "";
        if (answer === "") await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(answer, "10.11.12.13", cli.stderr);
      assert.ok(dns.queries() >= 1, "the given resolver was asked");
      await cli.waitFor(() => cli.stdout.includes("reverse-dns.test"), "the DNS flow's line", 10_000);
    } finally {
      await cli.stop();
      dns.socket.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
