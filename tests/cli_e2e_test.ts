/**
 * The `wirescope` command end to end: `deno run -A mod.ts --mode wireguard ...` as a user runs it,
 * real wireguard-go clients importing the client configurations it writes (as wg-quick does),
 * browsing HTTPS with the CA from the confdir; the output lines, the `-w` file, the HAR written
 * on SIGINT, two peers at once, and a restart that keeps keys and CA. Needs root.
 */
import assert from "node:assert/strict";
import { nsClient, Rig } from "./rig.ts";
import { OriginNamespace } from "./origin_ns.ts";

const MOD = new URL("../mod.ts", import.meta.url).pathname;

/** A running `wirescope` process with its output collected. */
class Cli {
  readonly child: Deno.ChildProcess;
  stdout = "";
  stderr = "";
  #done: Promise<void>;

  constructor(args: string[]) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MOD, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const collect = async (stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr") => {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) this[key] += text;
    };
    this.#done = Promise.all([collect(this.child.stdout, "stdout"), collect(this.child.stderr, "stderr")])
      .then(() => {});
  }

  /** Waits (bounded) until stdout contains `text`. */
  async waitFor(text: string | RegExp, ms = 30_000): Promise<void> {
    const end = Date.now() + ms;
    while (!(typeof text === "string" ? this.stdout.includes(text) : text.test(this.stdout))) {
      if (Date.now() > end) {
        throw new Error(`timed out waiting for ${text}\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Sends a signal and waits (bounded) for the exit code. */
  async stop(signal: Deno.Signal = "SIGINT", ms = 15_000): Promise<number> {
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), ms);
    const status = await this.child.status;
    clearTimeout(timer);
    await this.#done;
    return status.code;
  }
}

/** Runs the command to completion (bounded) and returns its exit code and output. */
async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const o = await new Deno.Command("timeout", {
    args: ["30", Deno.execPath(), "run", "-A", MOD, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: o.code, stdout: d.decode(o.stdout), stderr: d.decode(o.stderr) };
}

Deno.test({
  name: "wirescope --mode wireguard: real clients import its configs and browse HTTPS through it",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const origin = await OriginNamespace.create(["origin.test"], 1 << 20);
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-cli-" });
    const save = `${confdir}/flows.jsonl`, har = `${confdir}/flows.har`;
    let cli: Cli | null = null;
    let rig: Rig | null = null;
    const port = 20000 + (Deno.pid % 20000);
    try {
      rig = await Rig.fromConfigs(2, async (hosts) => {
        cli = new Cli([
          "--mode",
          `wireguard@${port}`,
          "--confdir",
          confdir,
          "--peers",
          "2",
          "--wg-endpoint",
          hosts[0]!,
          "--upstream-ca",
          origin.caFile,
          "--dns-server",
          origin.address,
          "-w",
          save,
          "--har",
          har,
        ]);
        await cli.waitFor("CA certificate:");
        const first = await Deno.readTextFile(`${confdir}/wireguard-client-1.conf`);
        const second = await Deno.readTextFile(`${confdir}/wireguard-client-2.conf`);
        // Each namespace reaches the host over its own veth; a device on another network would
        // likewise use another address for the same server. The first file is used unchanged.
        return [first, second.replace(/^Endpoint = .*$/m, `Endpoint = ${hosts[1]}:${port}`)];
      });
      const running = cli! as Cli;
      const [a, b] = rig.clients as [typeof rig.clients[0], typeof rig.clients[0]];
      const ca = `${confdir}/wirescope-ca-cert.pem`;
      const url = "https://origin.test/small.txt";
      const curl = (client: typeof a) =>
        client.exec([
          "curl",
          "-sS",
          "--max-time",
          "30",
          "--cacert",
          ca,
          "--resolve",
          `origin.test:443:${origin.address}`,
          url,
        ]);

      await t.step("the banner shows the client configuration and a QR code", () => {
        assert.match(
          running.stdout,
          /\[Interface\][^]*PrivateKey = [^]*\[Peer\][^]*AllowedIPs = 0\.0\.0\.0\/0, ::\/0/,
        );
        assert.ok(running.stdout.includes("▄") || running.stdout.includes("█"), "a QR code is drawn");
        assert.match(running.stdout, /WireGuard server listening on UDP/);
      });

      await t.step(
        "peer 1 browses HTTPS with the confdir's CA; the flow shows in the output and the -w file",
        async () => {
          assert.equal(await curl(a), "hello from nginx\n");
          await running.waitFor(/peer 1.*GET https:\/\/origin\.test\/small\.txt.*200/);
          const lines = (await Deno.readTextFile(save)).trim().split("\n").map((l) => JSON.parse(l));
          const flow = lines.find((f) => f.request?.url === url);
          assert.ok(flow, "the flow is in the -w file");
          assert.equal(flow.response.status, 200);
        },
      );

      await t.step("two peers at once, each in its own flows", async () => {
        const [x, y] = await Promise.all([curl(a), curl(b)]);
        assert.equal(x, "hello from nginx\n");
        assert.equal(y, "hello from nginx\n");
        await running.waitFor(/peer 2.*GET https:\/\/origin\.test\/small\.txt.*200/);
      });

      await t.step(
        "DNS through the tunnel: the configured resolver answers, wirescope.cert is ours",
        async () => {
          assert.deepEqual(await nsClient(a, ["dns", "10.0.0.53", "53", "wirescope.cert"]), {
            rcode: "NOERROR",
            answers: ["10.0.0.1"],
          });
          const page = await a.exec([
            "curl",
            "-sS",
            "--max-time",
            "10",
            "http://10.0.0.1/",
            "-H",
            "Host: wirescope.cert",
          ]);
          assert.match(page, /Trust wirescope on this device/);
          const pem = await a.exec([
            "curl",
            "-sS",
            "--max-time",
            "10",
            "http://10.0.0.1/cert/pem",
            "-H",
            "Host: wirescope.cert",
          ]);
          assert.equal(pem, await Deno.readTextFile(ca));
        },
      );

      await t.step("SIGINT: clean exit 0 and a valid HAR", async () => {
        assert.equal(await running.stop("SIGINT"), 0);
        const doc = JSON.parse(await Deno.readTextFile(har));
        assert.equal(doc.log.version, "1.2");
        assert.equal(doc.log.creator.name, "wirescope");
        const entry = doc.log.entries.find((e: { request: { url: string } }) => e.request.url === url);
        assert.ok(entry);
        for (const key of ["startedDateTime", "time", "request", "response", "cache", "timings"]) {
          assert.ok(key in entry, key);
        }
        assert.equal(entry.response.status, 200);
        assert.equal(entry.response.content.text, "hello from nginx\n");
      });

      await t.step("a restart with the same confdir keeps the keys and the CA", async () => {
        const conf = await Deno.readTextFile(`${confdir}/wireguard-client-1.conf`);
        const caPem = await Deno.readTextFile(ca);
        const again = new Cli([
          "--mode",
          `wireguard@${port}`,
          "--confdir",
          confdir,
          "--wg-endpoint",
          "10.1.1.1",
        ]);
        await again.waitFor("CA certificate:");
        assert.equal(await again.stop("SIGTERM"), 0);
        const conf2 = await Deno.readTextFile(`${confdir}/wireguard-client-1.conf`);
        const key = (text: string, name: string) => new RegExp(`^${name} = (.*)$`, "m").exec(text)?.[1];
        assert.equal(key(conf2, "PrivateKey"), key(conf, "PrivateKey"));
        assert.equal(key(conf2, "PublicKey"), key(conf, "PublicKey"));
        assert.equal(await Deno.readTextFile(ca), caPem);
      });
    } finally {
      const c = cli as Cli | null;
      if (c) await c.stop("SIGKILL").catch(() => {});
      await rig?.close();
      await origin.close();
      await Deno.remove(confdir, { recursive: true });
    }
  },
});

Deno.test("wirescope: user mistakes give one line and exit code 2", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const confdir = await Deno.makeTempDir();
  try {
    for (
      const args of [
        ["--bogus"],
        ["--mode", "wireguard@99999"],
        ["--mode", "socks4"],
        ["--peers", "0"],
        ["--upstream-ca", "/nonexistent/ca.pem"],
        ["--confdir", confdir, "--mode", `regular@127.0.0.1:${busy.addr.port}`],
      ]
    ) {
      const r = await runCli(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      const lines = r.stderr.trim().split("\n");
      assert.equal(lines.length, 1, `one line for ${args.join(" ")}: ${r.stderr}`);
      assert.match(lines[0]!, /^wirescope: /);
    }
  } finally {
    busy.close();
    await Deno.remove(confdir, { recursive: true });
  }
});

Deno.test("wirescope -q writes the client config and prints no flows; a second signal exits at once", async () => {
  const confdir = await Deno.makeTempDir({ prefix: "wirescope-cli-q-" });
  const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = free.addr.port;
  free.close();
  const wgPort = 20000 + ((Deno.pid + 7) % 20000);
  const cli = new Cli([
    "-q",
    "--confdir",
    confdir,
    "--mode",
    `wireguard@${wgPort}`,
    "--mode",
    `regular@127.0.0.1:${port}`,
    "--wg-endpoint",
    "10.1.1.1",
  ]);
  let conn: Deno.Conn | null = null;
  try {
    // Bounded wait until the proxy is up: its TCP port accepts and the config is written.
    for (let i = 0;; i++) {
      try {
        conn = await Deno.connect({ hostname: "127.0.0.1", port });
        await Deno.stat(`${confdir}/wireguard-client-1.conf`);
        break;
      } catch {
        conn?.close();
        conn = null;
        if (i >= 200) throw new Error(`wirescope did not start: ${cli.stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    assert.match(await Deno.readTextFile(`${confdir}/wireguard-client-1.conf`), /Endpoint = 10\.1\.1\.1:\d+/);
    // A request that never completes keeps a connection open, so shutting down waits its grace period.
    await conn.write(new TextEncoder().encode("GET http://127.0.0.1:1/ HTTP/1.1\r\n"));
    await new Promise((r) => setTimeout(r, 200));
    cli.child.kill("SIGINT");
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    const code = await cli.stop("SIGINT");
    assert.equal(code, 130);
    assert.ok(Date.now() - t0 < 2000, "the second signal ends it without waiting for the grace period");
    assert.equal(cli.stdout, "");
  } finally {
    conn?.close();
    await cli.stop("SIGKILL").catch(() => {});
    await Deno.remove(confdir, { recursive: true });
  }
});

Deno.test("wirescope -v adds connection events to the flow lines", async () => {
  const confdir = await Deno.makeTempDir({ prefix: "wirescope-cli-v-" });
  const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("hi"));
  const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = free.addr.port;
  free.close();
  // The origin listens on loopback: local destinations must be allowed.
  const cli = new Cli([
    "-v",
    "--confdir",
    confdir,
    "--mode",
    `regular@127.0.0.1:${port}`,
    "--allow-local-destinations",
  ]);
  try {
    await cli.waitFor("CA certificate:");
    const out = await new Deno.Command("curl", {
      args: [
        "-sS",
        "--max-time",
        "10",
        "-x",
        `http://127.0.0.1:${port}`,
        `http://127.0.0.1:${origin.addr.port}/v`,
      ],
    }).output();
    assert.equal(new TextDecoder().decode(out.stdout), "hi");
    await cli.waitFor(/GET http:\/\/127\.0\.0\.1:\d+\/v << 200/);
    assert.equal(await cli.stop("SIGTERM"), 0);
    assert.match(cli.stderr, /proxy client 127\.0\.0\.1:\d+ connected/);
  } finally {
    await cli.stop("SIGKILL").catch(() => {});
    await origin.shutdown();
    await Deno.remove(confdir, { recursive: true });
  }
});
