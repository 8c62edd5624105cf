/**
 * Replay end to end with the `wirescope` command and a real WireGuard client (wireguard-go in a
 * namespace, tests/rig.ts) running curl against a test origin in its own namespace
 * (tests/origin_ns.ts + tests/replay_origin.ts, which logs every request it sees):
 *
 * 1. a run is recorded with `-w run.db` (HTTPS and HTTP, GET twice, a POST with a body);
 * 2. `--server-replay run.db` answers the first request from the recording while the origin is
 *    still reachable (curl offering h2 is answered over h2), then the host loses its route to the origin
 *    (`ip route add unreachable`) and the rest are answered too, in recorded order, with a 404
 *    for one more (`--server-replay-extra 404`); hits and misses are printed at exit;
 * 3. the route is back, and `--client-replay run.db` (no mode: no listener, it ends when done)
 *    sends the recorded requests again: the origin sees the same method, path, headers and body.
 *
 * Needs root.
 */
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { Rig, sh } from "./rig.ts";
import { OriginNamespace } from "./origin_ns.ts";

const MOD = new URL("../mod.ts", import.meta.url).pathname;
const ORIGIN_SCRIPT = new URL("./replay_origin.ts", import.meta.url).pathname;
const HTTP_PORT = 8090;
const HTTPS_PORT = 8453;

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

  /** Waits (bounded) until stdout or stderr contains `text`. */
  async waitFor(text: string | RegExp, ms = 30_000): Promise<void> {
    const end = Date.now() + ms;
    const seen = () => {
      const all = this.stdout + this.stderr;
      return typeof text === "string" ? all.includes(text) : text.test(all);
    };
    while (!seen()) {
      if (Date.now() > end) {
        throw new Error(`timed out waiting for ${text}\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Waits (bounded) for the exit code, after a signal when one is given. */
  async exit(signal?: Deno.Signal, ms = 30_000): Promise<number> {
    if (signal) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), ms);
    const status = await this.child.status;
    clearTimeout(timer);
    await this.#done;
    return status.code;
  }
}

interface Seen {
  method: string;
  path: string;
  headers: [string, string][];
  body: string;
}

Deno.test({
  name: "wirescope --server-replay answers a WireGuard client with no route to the origin; " +
    "--client-replay makes the origin see the same requests again",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const started = Date.now();
    const origin = await OriginNamespace.create(["origin.test"], 1 << 10);
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-replay-e2e-" });
    const run = `${confdir}/run.db`;
    const o = origin.address;
    const certDir = dirname(origin.caFile);
    const server = origin.spawn([
      Deno.execPath(),
      "run",
      "-A",
      "--quiet",
      ORIGIN_SCRIPT,
      o,
      String(HTTP_PORT),
      String(HTTPS_PORT),
      `${certDir}/server.pem`,
      `${certDir}/server.key`,
    ]);
    const seen: Seen[] = [];
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    void (async () => {
      let rest = "";
      for await (const text of server.stdout.pipeThrough(new TextDecoderStream())) {
        rest += text;
        const lines = rest.split("\n");
        rest = lines.pop()!;
        for (const line of lines) {
          if (line === "ready") ready();
          else if (line.startsWith("{")) seen.push(JSON.parse(line));
        }
      }
    })().catch(() => {});
    const port = 20000 + ((Deno.pid + 7919) % 20000);
    const common = ["--confdir", confdir, "--upstream-ca", origin.caFile];
    let cli: Cli | null = null;
    let rig: Rig | null = null;
    let unreachable = false;
    try {
      await Promise.race([
        isReady,
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error("replay origin did not start")), 20_000)
        ),
      ]);
      let endpoint = "";
      rig = await Rig.fromConfigs(1, async (hosts) => {
        endpoint = `${hosts[0]}:${port}`;
        cli = new Cli(["--mode", `wireguard@${port}`, "--wg-endpoint", hosts[0]!, ...common, "-w", run]);
        await cli.waitFor("CA certificate:");
        return [await Deno.readTextFile(`${confdir}/wireguard-client-1.conf`)];
      });
      const client = rig.clients[0]!;
      const ca = `${confdir}/wirescope-ca-cert.pem`;
      const serverKey = /^PublicKey = (.*)$/m.exec(
        await Deno.readTextFile(`${confdir}/wireguard-client-1.conf`),
      )![1]!;
      const curl = (args: string[]) =>
        client.exec([
          "curl",
          "-sS",
          "--http1.1",
          "--max-time",
          "20",
          "--cacert",
          ca,
          "--resolve",
          `origin.test:${HTTPS_PORT}:${o}`,
          ...args,
        ]);
      const https = `https://origin.test:${HTTPS_PORT}`;
      const requests: string[][] = [
        [`${https}/a?x=1`],
        [`${https}/a?x=1`],
        ["-H", "x-test: one", "-d", "k=v", `${https}/form`],
        [`http://${o}:${HTTP_PORT}/plain`],
      ];
      const recorded: string[] = [];
      let recordedRequests: Seen[] = [];

      await t.step("a run is recorded through the WireGuard client", async () => {
        for (const args of requests) recorded.push(await curl(args));
        assert.deepEqual(recorded, [
          "answer 1 to GET /a?x=1",
          "answer 2 to GET /a?x=1",
          "answer 3 to POST /form k=v",
          "answer 4 to GET /plain",
        ]);
        assert.equal(await cli!.exit("SIGINT"), 0);
        cli = null;
        recordedRequests = seen.splice(0);
        assert.equal(recordedRequests.length, 4);
      });

      // A restarted server does not know the client's session: the peer is set anew, so the
      // client starts a handshake with its next packet instead of after its rekey timeout.
      const freshSession = async () => {
        await client.exec(["wg", "set", client.wg, "peer", serverKey, "remove"]);
        await client.exec([
          "wg",
          "set",
          client.wg,
          "peer",
          serverKey,
          "endpoint",
          endpoint,
          "allowed-ips",
          "0.0.0.0/0,::/0",
        ]);
      };

      await t.step("--server-replay answers from the recording; the origin cannot be reached", async () => {
        const replaying = new Cli([
          "--mode",
          `wireguard@${port}`,
          "--wg-endpoint",
          endpoint.split(":")[0]!,
          ...common,
          "--no-store",
          "--server-replay",
          run,
          "--server-replay-extra",
          "404",
        ]);
        cli = replaying;
        await replaying.waitFor("CA certificate:");
        await freshSession();
        const answers: string[] = [];
        // While the origin is reachable, a client that offers h2 (curl's default) keeps h2 (the
        // HTTP/2 layers run the request hook too) and is answered from the recording.
        const first = await client.exec([
          "curl",
          "-sS",
          "-i",
          "--max-time",
          "20",
          "--cacert",
          ca,
          "--resolve",
          `origin.test:${HTTPS_PORT}:${o}`,
          "-w",
          "\n%{http_version}",
          requests[0]![0]!,
        ]);
        assert.ok(first.endsWith("\n2"), first);
        answers.push(first.slice(0, -"\n2".length));
        await sh(["ip", "route", "add", "unreachable", `${o}/32`]);
        unreachable = true;
        // The host really has no way to the origin now.
        const direct = await sh(["curl", "-sS", "--max-time", "5", `http://${o}:${HTTP_PORT}/plain`], {
          allowFail: true,
        });
        assert.equal(direct, "");
        for (const args of requests.slice(1)) answers.push(await curl(["-i", ...args]));
        for (let i = 0; i < requests.length; i++) {
          assert.ok(answers[i]!.endsWith(recorded[i]!), `answer ${i}: ${answers[i]}`);
          assert.match(answers[i]!, /\r\nx-origin: replay-origin\r\n/i);
        }
        assert.match(answers[2]!, /^HTTP\/1\.1 201 /);
        // The recorded answers to GET /a?x=1 are used up.
        const miss = await curl(["-i", `${https}/a?x=1`]);
        assert.match(miss, /^HTTP\/1\.1 404 /);
        assert.match(
          miss,
          /server replay has no recorded answer for GET https:\/\/origin\.test:8453\/a\?x=1/,
        );
        assert.equal(await replaying.exit("SIGINT"), 0);
        cli = null;
        assert.match(replaying.stderr, /server replay: 4 hits, 1 miss \(4 recorded answers\)/);
        assert.equal(seen.length, 0, "the origin saw no request");
        await sh(["ip", "route", "del", "unreachable", `${o}/32`]);
        unreachable = false;
      });

      await t.step(
        "--client-replay sends the recorded requests again; the origin sees the same",
        async () => {
          const replayer = new Cli([...common, "--no-store", "--client-replay", run]);
          cli = replayer;
          assert.equal(await replayer.exit(undefined, 60_000), 0, replayer.stderr);
          cli = null;
          assert.match(replayer.stderr, /client replay done: 4 replayed, 0 failed/);
          // Its flow lines name the replayed requests.
          assert.match(replayer.stdout, /GET https:\/\/origin\.test:8453\/a\?x=1.*200/);
          const comparable = (s: Seen) => ({
            ...s,
            headers: s.headers.filter(([name]) => name !== "connection"),
          });
          assert.deepEqual(seen.map(comparable), recordedRequests.map(comparable));
          assert.ok(seen.some((s) => s.headers.some(([n, v]) => n === "x-test" && v === "one")));
          assert.ok(seen.every((s) => s.headers.some(([n, v]) => n === "connection" && v === "close")));
        },
      );
      console.log(`replay e2e: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } finally {
      const c = cli as Cli | null;
      if (c) await c.exit("SIGKILL").catch(() => {});
      if (unreachable) await sh(["ip", "route", "del", "unreachable", `${o}/32`], { allowFail: true });
      await rig?.close();
      await origin.close();
      await Deno.remove(confdir, { recursive: true }).catch(() => {});
    }
  },
});
