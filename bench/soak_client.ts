/**
 * The soak's workload inside one client namespace (run by bench/soak.ts with `ip netns exec`):
 * `loops` concurrent loops of randomly chosen operations through the tunnel until `seconds` pass
 * or SIGTERM arrives, each checked for the bytes it must get back and bounded by a timeout:
 *
 *   https      GET https://ORIGIN/small.txt, one kept-alive client (no SNI: an IP)
 *   https-sni  the same on a new connection with SNI origin.test (node:https)
 *   https-big  GET https://ORIGIN/big.bin, sha256 checked
 *   http       GET http://ORIGIN/small.txt
 *   upload     POST http://ORIGIN:8080/upload of 64 KiB, the digest checked
 *   ws         WebSocket echo of 5 messages (ws://ORIGIN:8080/ws)
 *   tcp        raw TCP echo (port 7) of 1 B to 64 KiB
 *   udp        one UDP datagram echoed (port 7); one time in eight from a new socket (a new
 *              conversation, held by the proxy until it idles out), else from the loop's own
 *   dns        an A query to the tunnel's resolver (10.0.0.53); every fourth one for wirescope.cert
 *
 * Prints one JSON line at the end: counts per operation and the first failures.
 *
 * Usage: deno run -A bench/soak_client.ts '{"origin":..., "ca":..., "bigSha256":..., "seconds":..., "loops":..., "seed":...}'
 * @module
 */
import { createHash } from "node:crypto";
import https from "node:https";
import { buildDnsQuery, parseDnsMessage } from "../src/proxy/dns_message.ts";

interface Config {
  origin: string;
  /** The wirescope CA the client trusts (PEM file). */
  ca: string;
  bigSha256: string;
  seconds: number;
  loops: number;
  seed: number;
}

const config = JSON.parse(Deno.args[0] ?? "{}") as Config;
const ca = Deno.readTextFileSync(config.ca);
const client = Deno.createHttpClient({ caCerts: [ca] });
const OP_TIMEOUT = 20_000;

let seed = config.seed >>> 0 || 1;
/** xorshift32: a workload that can be replayed from its seed. */
function random(): number {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed / 0x1_0000_0000;
}

function bytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + n) & 255;
  return out;
}

const sha = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");
const origin = config.origin;

/** Each loop's UDP socket (one conversation), replaced now and then. */
const udpSockets: (Deno.DatagramConn | undefined)[] = [];

const ops: Record<string, (loop: number) => Promise<void>> = {
  async https() {
    const r = await fetch(`https://${origin}/small.txt`, { client, signal: AbortSignal.timeout(OP_TIMEOUT) });
    const text = await r.text();
    if (r.status !== 200 || text !== "hello from nginx\n") {
      throw new Error(`status ${r.status}: ${text.slice(0, 80)}`);
    }
  },
  "https-sni"() {
    return new Promise<void>((resolve, reject) => {
      const req = https.get({
        host: origin,
        servername: "origin.test",
        headers: { host: "origin.test" },
        path: "/small.txt",
        ca,
        agent: false,
        timeout: OP_TIMEOUT,
      }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (text += d));
        res.on(
          "end",
          () =>
            res.statusCode === 200 && text === "hello from nginx\n"
              ? resolve()
              : reject(new Error(`status ${res.statusCode}: ${text.slice(0, 80)}`)),
        );
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new Error("timed out")));
      req.on("error", reject);
    });
  },
  async "https-big"() {
    const r = await fetch(`https://${origin}/big.bin`, { client, signal: AbortSignal.timeout(OP_TIMEOUT) });
    const body = new Uint8Array(await r.arrayBuffer());
    if (r.status !== 200 || sha(body) !== config.bigSha256) {
      throw new Error(`status ${r.status}, ${body.byteLength} bytes, digest differs`);
    }
  },
  async http() {
    const r = await fetch(`http://${origin}/small.txt`, { client, signal: AbortSignal.timeout(OP_TIMEOUT) });
    const text = await r.text();
    if (r.status !== 200 || text !== "hello from nginx\n") throw new Error(`status ${r.status}`);
  },
  async upload() {
    const data = bytes(64 * 1024);
    const r = await fetch(`http://${origin}:8080/upload`, {
      method: "POST",
      body: data,
      client,
      signal: AbortSignal.timeout(OP_TIMEOUT),
    });
    const got = await r.json() as { bytes: number; sha256: string };
    if (got.bytes !== data.byteLength || got.sha256 !== sha(data)) throw new Error("upload digest differs");
  },
  ws() {
    return new Promise<void>((resolve, reject) => {
      const ws = new WebSocket(`ws://${origin}:8080/ws`);
      const timer = setTimeout(() => {
        ws.close();
        reject(new Error("WebSocket timed out"));
      }, OP_TIMEOUT);
      let sent = 0, got = 0;
      ws.onopen = () => ws.send(`m${sent++}`);
      ws.onmessage = (e) => {
        if (e.data !== `m${got}`) {
          clearTimeout(timer);
          ws.close();
          return reject(new Error(`WebSocket echo ${e.data} for m${got}`));
        }
        got++;
        if (sent < 5) return ws.send(`m${sent++}`);
        clearTimeout(timer);
        ws.onclose = () => resolve();
        ws.close(1000, "done");
      };
      ws.onerror = (e) => {
        clearTimeout(timer);
        reject(new Error(`WebSocket failed: ${(e as ErrorEvent).message}`));
      };
    });
  },
  async tcp() {
    const n = 1 + Math.floor(random() * 64 * 1024);
    const conn = await Deno.connect({ hostname: origin, port: 7 });
    const timer = setTimeout(() => conn.close(), OP_TIMEOUT);
    try {
      const data = bytes(n);
      const writing = (async () => {
        for (let off = 0; off < n;) off += await conn.write(data.subarray(off));
      })();
      const buf = new Uint8Array(n);
      for (let got = 0; got < n;) {
        const r = await conn.read(buf.subarray(got));
        if (r === null) throw new Error(`echo ended after ${got} of ${n} bytes`);
        got += r;
      }
      await writing;
      if (sha(buf) !== sha(data)) throw new Error("echo differs");
    } finally {
      clearTimeout(timer);
      try {
        conn.close();
      } catch { /* closed by the timer */ }
    }
  },
  async udp(loop) {
    const fresh = random() < 1 / 8 || !udpSockets[loop];
    const sock = fresh
      ? Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 })
      : udpSockets[loop]!;
    const text = `soak ${random()}`;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      sock.close();
    }, 3000);
    try {
      await sock.send(new TextEncoder().encode(text), { transport: "udp", hostname: origin, port: 7 });
      // A late echo of an earlier datagram on the loop's socket is skipped.
      for (let i = 0; i < 4; i++) {
        const [data] = await sock.receive();
        if (new TextDecoder().decode(data) === text) return;
      }
      throw new Error("UDP echo differs");
    } catch (e) {
      throw new Error(`UDP: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
      if (timedOut) {
        if (udpSockets[loop] === sock) udpSockets[loop] = undefined;
      } else if (fresh) {
        const old = udpSockets[loop];
        udpSockets[loop] = sock;
        try {
          old?.close();
        } catch { /* closed */ }
      }
    }
  },
  async dns() {
    const cert = random() < 0.25;
    const name = cert ? "wirescope.cert" : `n${Math.floor(random() * 1e6)}.soak.test`;
    const want = cert ? "10.0.0.1" : "10.11.12.13";
    const sock = Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 });
    const timer = setTimeout(() => sock.close(), 5000);
    try {
      const id = Math.floor(random() * 65536);
      await sock.send(buildDnsQuery(name, 1, id), { transport: "udp", hostname: "10.0.0.53", port: 53 });
      const [data] = await sock.receive();
      const m = parseDnsMessage(data);
      if (m.rcodeName !== "NOERROR" || m.answers[0]?.data !== want) {
        throw new Error(`DNS ${name}: ${m.rcodeName} ${m.answers.map((a) => a.data).join(",")}`);
      }
    } catch (e) {
      throw new Error(`DNS: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
      try {
        sock.close();
      } catch { /* closed by the timer */ }
    }
  },
};

/** How often each operation is picked. */
const WEIGHTS: [string, number][] = [
  ["https", 3],
  ["https-sni", 2],
  ["https-big", 1],
  ["http", 1],
  ["upload", 1],
  ["ws", 1],
  ["tcp", 2],
  ["udp", 2],
  ["dns", 2],
];
const TOTAL = WEIGHTS.reduce((n, [, w]) => n + w, 0);

function pick(): string {
  let x = random() * TOTAL;
  for (const [name, w] of WEIGHTS) if ((x -= w) < 0) return name;
  return WEIGHTS[0]![0];
}

const counts: Record<string, { ok: number; failed: number }> = {};
const failures: string[] = [];
let stopping = false;
Deno.addSignalListener("SIGTERM", () => (stopping = true));
const end = Date.now() + config.seconds * 1000;

async function loop(index: number): Promise<void> {
  while (!stopping && Date.now() < end) {
    const name = pick();
    const c = counts[name] ??= { ok: 0, failed: 0 };
    try {
      await ops[name]!(index);
      c.ok++;
    } catch (e) {
      c.failed++;
      if (failures.length < 20) failures.push(`${new Date().toISOString()} ${name}: ${(e as Error).message}`);
    }
    // A short pause: steady mixed traffic rather than a flood.
    await new Promise((r) => setTimeout(r, 10 + random() * 40));
  }
}

await Promise.all(Array.from({ length: config.loops }, (_, i) => loop(i)));
for (const sock of udpSockets) {
  try {
    sock?.close();
  } catch { /* closed */ }
}
client.close();
console.log(JSON.stringify({ counts, failures }));
Deno.exit(0);
