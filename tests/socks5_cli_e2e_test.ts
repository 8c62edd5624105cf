/**
 * The command with `--mode socks5@PORT --mode dns@PORT --proxyauth`: the banner names both
 * listeners, curl through SOCKS5 is intercepted (wirescope's CA) and dig gets its answer, and
 * the flow lines name the modes.
 */
import assert from "node:assert/strict";
import { Cli, freePort } from "./cli_process.ts";

async function run(cmd: string[]): Promise<{ code: number; out: string; err: string }> {
  const o = await new Deno.Command(cmd[0]!, { args: cmd.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  return { code: o.code, out: new TextDecoder().decode(o.stdout), err: new TextDecoder().decode(o.stderr) };
}

Deno.test({
  name: "wirescope --mode socks5@PORT --mode dns@PORT: curl and dig through the command, flow lines",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-socks5-cli-" });
    const made = await run([
      "openssl",
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-keyout",
      `${dir}/origin.key`,
      "-out",
      `${dir}/origin.pem`,
    ]); // deno-fmt-ignore
    assert.equal(made.code, 0, made.err);
    const ac = new AbortController();
    const origin = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      cert: await Deno.readTextFile(`${dir}/origin.pem`),
      key: await Deno.readTextFile(`${dir}/origin.key`),
      signal: ac.signal,
      onListen: () => {},
    }, () => new Response("through socks5\n"));
    // A resolver for the dns mode: every query answered with the query's own bytes flagged as an
    // answer (NOERROR, no records), enough for dig to accept it.
    const resolver = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    (async () => {
      for (;;) {
        const [q, from] = await resolver.receive();
        const a = q.slice();
        a[2] = 0x81, a[3] = 0x80;
        await resolver.send(a, from);
      }
    })().catch(() => {});
    const socksPort = freePort(), dnsPort = freePort();
    const cli = new Cli([
      "--mode",
      `socks5@127.0.0.1:${socksPort}`,
      "--mode",
      `dns@127.0.0.1:${dnsPort}`,
      "--confdir",
      `${dir}/conf`,
      "--no-store",
      "--allow-local-destinations",
      "--upstream-ca",
      `${dir}/origin.pem`,
      "--dns-server",
      `127.0.0.1:${(resolver.addr as Deno.NetAddr).port}`,
      "--proxyauth",
      "alice:s3cret",
    ]); // deno-fmt-ignore
    try {
      await cli.waitFor(() => /DNS server listening on UDP and TCP/.test(cli.stdout), "the banner");
      assert.match(cli.stdout, new RegExp(`SOCKS5 proxy listening on TCP 127\\.0\\.0\\.1:${socksPort}`));
      const curl = await run([
        "curl", "-sS", "--max-time", "20", "--cacert", `${dir}/conf/wirescope-ca-cert.pem`,
        "--socks5-hostname", `alice:s3cret@127.0.0.1:${socksPort}`,
        `https://localhost:${origin.addr.port}/cli`,
      ]); // deno-fmt-ignore
      assert.equal(curl.out, "through socks5\n", curl.err);
      const dig = await run(["dig", "@127.0.0.1", "-p", String(dnsPort), "+tcp", "+tries=1", "+time=5", "cli.test"]);
      assert.match(dig.out, /status: NOERROR/, dig.err);
      await cli.waitFor(() => /\[socks5\]: GET https:\/\/localhost:\d+\/cli .*<< 200/.test(cli.stdout), "the HTTP flow line");
      await cli.waitFor(() => /\[dns\]: DNS A cli\.test \(NOERROR\)/.test(cli.stdout), "the DNS flow line");
    } finally {
      await cli.stop();
      ac.abort();
      await origin.finished;
      resolver.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
