/**
 * The measurements behind the choice between `node:http2` and an own codec (README.md in this
 * folder has the figures). Run: `node_modules/.bin/deno run -A src/proxy/http2/node_http2_probe.ts`.
 *
 * (a) bad frames: a `node:http2` h2c server on loopback gets raw frames from a TCP client (a
 *     malformed SETTINGS, an HPACK bomb, a CONTINUATION flood, a rapid-reset flood, a PING
 *     flood); what comes back (GOAWAY code, RST, close) and whether the process survives and the
 *     server still answers a fresh request.
 * (b) sans-IO: whether `http2.connect` / a server accept an arbitrary `Duplex` instead of a socket.
 * (c) CPU per small request: `node:http2` client and server in this process.
 * (d) backpressure: a server writing to a client that does not read; RSS and `write()` results.
 * `serve PORT` runs a node:http2 server for h2spec.
 * @module
 */
import http2 from "node:http2";
import net from "node:net";
import { Duplex } from "node:stream";
import process from "node:process";

const uncaught: string[] = [];
process.on("uncaughtException", (e) => uncaught.push(String(e)));
process.on("unhandledRejection", (e) => uncaught.push(`rejection: ${String(e)}`));

function frame(type: number, flags: number, stream: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(9 + payload.length);
  out[0] = payload.length >>> 16;
  out[1] = (payload.length >>> 8) & 0xff;
  out[2] = payload.length & 0xff;
  out[3] = type;
  out[4] = flags;
  new DataView(out.buffer).setUint32(5, stream);
  out.set(payload, 9);
  return out;
}
const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const SETTINGS_EMPTY = frame(4, 0, 0, new Uint8Array(0));
// :method GET, :scheme http, :path /, :authority via literal without indexing (indexed name 1)
const GET_BLOCK = Uint8Array.from([0x82, 0x86, 0x84, 0x01, 0x01, 0x61]);

function join(parts: Uint8Array[]): Uint8Array {
  const n = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Sends `bytes` after the preface and reports the frames that come back until close or timeout. */
async function attack(port: number, name: string, bytes: Uint8Array[], ms = 2000): Promise<string> {
  const sock = net.connect(port, "127.0.0.1");
  const got: Uint8Array[] = [];
  let closed = "open";
  let writeError = "";
  sock.on("data", (d: Uint8Array) => got.push(new Uint8Array(d)));
  sock.on("close", () => closed = "closed");
  sock.on("error", (e: Error) => writeError = e.message);
  await new Promise<void>((r) => sock.once("connect", () => r()));
  sock.write(join([PREFACE, SETTINGS_EMPTY]));
  for (const b of bytes) {
    if (closed !== "open") break;
    await new Promise<void>((r) => sock.write(b, () => r()));
  }
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && closed === "open") await new Promise((r) => setTimeout(r, 20));
  sock.destroy();
  // summarise frames received
  const all = join(got);
  const seen: string[] = [];
  let o = 0;
  while (o + 9 <= all.length) {
    const len = (all[o]! << 16) | (all[o + 1]! << 8) | all[o + 2]!;
    const type = all[o + 3]!;
    const dv = new DataView(all.buffer, all.byteOffset);
    if (type === 7 && o + 17 <= all.length) {
      seen.push(`GOAWAY(last=${dv.getUint32(o + 9)},code=${dv.getUint32(o + 13)})`);
    } else if (type === 3 && o + 13 <= all.length) {
      seen.push(`RST(${dv.getUint32(o + 5)},code=${dv.getUint32(o + 9)})`);
    } else if (type === 4) seen.push(all[o + 4]! & 1 ? "SETTINGS-ACK" : "SETTINGS");
    else if (type === 6) seen.push("PING-ACK");
    else seen.push(`type${type}`);
    o += 9 + len;
  }
  const counts = new Map<string, number>();
  const key = (s: string) => s.startsWith("RST") ? s.replace(/RST\(\d+,/, "RST(") : s;
  for (const s of seen) counts.set(key(s), (counts.get(key(s)) ?? 0) + 1);
  const summary = [...counts].map(([k, v]) => (v > 1 ? `${k}x${v}` : k)).join(" ");
  return `${name}: got [${summary}] ${closed}${writeError ? ` (${writeError})` : ""}`;
}

async function freshRequest(port: number): Promise<string> {
  try {
    const c = http2.connect(`http://127.0.0.1:${port}`);
    c.on("error", () => {});
    const req = c.request({ ":path": "/" });
    const status = await new Promise<string>((resolve) => {
      const t = setTimeout(() => resolve("timeout"), 3000);
      req.on("response", (h) => {
        clearTimeout(t);
        resolve(String(h[":status"]));
      });
      req.on("error", (e) => {
        clearTimeout(t);
        resolve(`error ${e.message}`);
      });
      req.end();
    });
    req.resume();
    c.close();
    return status;
  } catch (e) {
    return `throw ${String(e)}`;
  }
}

async function probeBadFrames(): Promise<void> {
  const server = http2.createServer();
  server.on("stream", (stream) => {
    stream.on("error", () => {});
    stream.respond({ ":status": 200 });
    stream.end("ok");
  });
  server.on("sessionError", () => {});
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as net.AddressInfo).port;
  console.log(`(a) baseline request: ${await freshRequest(port)}`);

  const results: string[] = [];
  // 1. malformed: SETTINGS of length 5 (must be a multiple of 6): FRAME_SIZE_ERROR (6)
  results.push(await attack(port, "SETTINGS len 5", [frame(4, 0, 0, new Uint8Array(5))]));
  // 2. DATA on stream 0: PROTOCOL_ERROR (1)
  results.push(await attack(port, "DATA on stream 0", [frame(0, 0, 0, new Uint8Array(4))]));
  // 3. even (server-initiated) stream id from the client: PROTOCOL_ERROR
  results.push(await attack(port, "HEADERS stream 2", [frame(1, 5, 2, GET_BLOCK)]));
  // 4. stream id going backwards
  results.push(
    await attack(port, "stream id backwards", [frame(1, 5, 5, GET_BLOCK), frame(1, 5, 3, GET_BLOCK)]),
  );
  // 5. HPACK bomb: one 4000-byte value inserted into the table, then referenced 10,000 times
  const big = new Uint8Array(4000).fill(0x61);
  // literal with incremental indexing, new name "x", value length 4000 (7-bit prefix: 127 + 3873)
  const valueLen = [0x7f, (3873 & 0x7f) | 0x80, 3873 >> 7];
  const insert2 = join([Uint8Array.from([0x40, 0x01, 0x78, ...valueLen]), big]);
  const refs = new Uint8Array(10_000).fill(0x80 | 62);
  const bomb = join([GET_BLOCK, insert2, refs]);
  const bombFrames: Uint8Array[] = [];
  for (let o = 0, first = true; o < bomb.length; o += 16384, first = false) {
    const chunk = bomb.subarray(o, Math.min(bomb.length, o + 16384));
    const last = o + 16384 >= bomb.length;
    bombFrames.push(frame(first ? 1 : 9, (first ? 1 : 0) | (last ? 4 : 0), 1, chunk));
  }
  results.push(await attack(port, "HPACK bomb (40 MB list)", bombFrames));
  // 6. CONTINUATION flood: HEADERS without END_HEADERS, then 20,000 CONTINUATION frames of 1 KiB junk
  const junk = new Uint8Array(1024).fill(0x40);
  const flood: Uint8Array[] = [frame(1, 1, 1, GET_BLOCK)];
  for (let i = 0; i < 20_000; i++) flood.push(frame(9, 0, 1, junk));
  results.push(await attack(port, "CONTINUATION flood (20 MB)", [join(flood)], 4000));
  // 7. rapid reset: 20,000 HEADERS + RST_STREAM(CANCEL)
  const rr: Uint8Array[] = [];
  for (let i = 0, id = 1; i < 20_000; i++, id += 2) {
    rr.push(frame(1, 5, id, GET_BLOCK), frame(3, 0, id, Uint8Array.from([0, 0, 0, 8])));
  }
  const t0 = performance.now();
  results.push(await attack(port, "rapid reset (20k)", [join(rr)], 4000));
  const rrMs = performance.now() - t0;
  // 8. PING flood: 100,000 PINGs without reading the ACKs
  const pings: Uint8Array[] = [];
  for (let i = 0; i < 100_000; i++) pings.push(frame(6, 0, 0, new Uint8Array(8)));
  results.push(await attack(port, "PING flood (100k)", [join(pings)], 3000));
  // 9. SETTINGS flood
  const settings: Uint8Array[] = [];
  for (let i = 0; i < 100_000; i++) settings.push(frame(4, 0, 0, Uint8Array.from([0, 3, 0, 0, 0, 100])));
  results.push(await attack(port, "SETTINGS flood (100k)", [join(settings)], 3000));
  // 10. window overflow: WINDOW_UPDATE that takes the connection window past 2^31-1
  results.push(
    await attack(port, "WINDOW_UPDATE overflow", [frame(8, 0, 0, Uint8Array.from([0x7f, 0xff, 0xff, 0xff]))]),
  );
  for (const r of results) console.log(`(a) ${r}`);
  console.log(`(a) rapid reset took ${rrMs.toFixed(0)} ms wall`);
  console.log(`(a) fresh request after the attacks: ${await freshRequest(port)}`);
  console.log(`(a) uncaught exceptions so far: ${uncaught.length} ${uncaught.slice(0, 3).join(" | ")}`);
  await new Promise<void>((r) => server.close(() => r()));
}

/** A Duplex pair wired in memory. */
function duplexPair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  const a: Duplex = new Duplex({
    read() {},
    write(chunk, _enc, cb) {
      ends[1]!.push(chunk);
      cb();
    },
  });
  const b: Duplex = new Duplex({
    read() {},
    write(chunk, _enc, cb) {
      a.push(chunk);
      cb();
    },
  });
  ends.push(a, b);
  return [a, b];
}

async function probeDuplex(): Promise<void> {
  const [clientSide, serverSide] = duplexPair();
  const server = http2.createServer();
  server.on("stream", (stream) => {
    stream.respond({ ":status": 200 });
    stream.end("over a duplex");
  });
  let outcome = "no answer";
  try {
    server.emit("connection", serverSide);
    const client = http2.connect("http://duplex.invalid", { createConnection: () => clientSide });
    client.on("error", (e) => outcome = `client error ${e.message}`);
    const req = client.request({ ":path": "/" });
    req.on("error", (e) => outcome = `request error ${e.message}`);
    outcome = await new Promise<string>((resolve) => {
      const t = setTimeout(() => resolve(`timeout (${outcome})`), 3000);
      let body = "";
      req.on("data", (d) => body += d);
      req.on("end", () => {
        clearTimeout(t);
        resolve(`ok: ${body}`);
      });
      req.end();
    });
    client.destroy();
  } catch (e) {
    outcome = `throw ${String(e)}`;
  }
  console.log(`(b) node:http2 over an in-memory Duplex: ${outcome}`);
}

async function probeCpu(): Promise<void> {
  const server = http2.createServer();
  server.on("stream", (stream) => {
    stream.respond({ ":status": 200, "content-type": "text/plain" });
    stream.end("hello");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const client = http2.connect(`http://127.0.0.1:${port}`);
  const n = 5000;
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const req = client.request({ ":path": "/x", "user-agent": "probe", accept: "*/*" });
      req.on("error", reject);
      req.on("data", () => {});
      req.on("end", () => resolve());
      req.end();
    });
  for (let i = 0; i < 200; i++) await one(); // warm-up
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i += 10) await Promise.all(Array.from({ length: 10 }, one));
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  console.log(
    `(c) node:http2 client+server in one process: ${n} requests (10 concurrent) in ${wall.toFixed(0)} ms, ` +
      `CPU ${((cpu.user + cpu.system) / n).toFixed(1)} µs/request (both ends)`,
  );
  client.close();
  await new Promise<void>((r) => server.close(() => r()));
}

async function probeBackpressure(): Promise<void> {
  const server = http2.createServer();
  let falseWrites = 0, written = 0;
  server.on("stream", (stream) => {
    const chunk = new Uint8Array(64 * 1024);
    const pump = () => {
      while (written < 200 * 1024 * 1024) {
        written += chunk.length;
        if (!stream.write(chunk)) {
          falseWrites++;
          stream.once("drain", pump);
          return;
        }
      }
      stream.end();
    };
    stream.respond({ ":status": 200 });
    pump();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const client = http2.connect(`http://127.0.0.1:${port}`);
  const req = client.request({ ":path": "/big" });
  req.pause(); // never read
  req.end();
  const rss0 = process.memoryUsage().rss;
  await new Promise((r) => setTimeout(r, 3000));
  const rss1 = process.memoryUsage().rss;
  console.log(
    `(d) server writing to a paused client for 3 s: ${
      (written / 1048576).toFixed(1)
    } MiB accepted by write(), ` +
      `${falseWrites} write()=false, RSS +${((rss1 - rss0) / 1048576).toFixed(1)} MiB`,
  );
  req.resume();
  let got = 0;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  await new Promise<void>((resolve) => {
    req.on("data", (d: Uint8Array) => got += d.length);
    req.on("end", () => resolve());
  });
  const cpu = process.cpuUsage(c0);
  const s = (performance.now() - t0) / 1000;
  console.log(
    `(d) then read ${(got / 1048576).toFixed(0)} MiB in ${s.toFixed(2)} s ` +
      `(${(got / 1048576 / s).toFixed(0)} MiB/s), CPU ${
        ((cpu.user + cpu.system) / 1e6 / (got / 2 ** 30)).toFixed(2)
      } s/GiB`,
  );
  client.close();
  await new Promise<void>((r) => server.close(() => r()));
}

/** (c) and (d) again with both ends over the in-memory Duplex pair: no sockets, like bench:h2codec. */
async function probeInMemory(): Promise<void> {
  const [clientSide, serverSide] = duplexPair();
  const server = http2.createServer();
  const big = new Uint8Array(64 * 1024);
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    if (headers[":path"] !== "/big") {
      stream.respond({ ":status": 200, "content-type": "text/plain", "content-length": "5" });
      return void stream.end("hello");
    }
    stream.respond({ ":status": 200 });
    let sent = 0;
    const pump = () => {
      while (sent < 256 * 2 ** 20) {
        sent += big.length;
        if (!stream.write(big)) return void stream.once("drain", pump);
      }
      stream.end();
    };
    pump();
  });
  server.emit("connection", serverSide);
  const client = http2.connect("http://duplex.invalid", { createConnection: () => clientSide });
  const one = (path: string) =>
    new Promise<number>((resolve, reject) => {
      const req = client.request({ ":path": path, "user-agent": "probe", accept: "*/*" });
      let n = 0;
      req.on("error", reject);
      req.on("data", (d: Uint8Array) => n += d.length);
      req.on("end", () => resolve(n));
      req.end();
    });
  for (let i = 0; i < 200; i++) await one("/x");
  const n = 5000;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i += 10) await Promise.all(Array.from({ length: 10 }, () => one("/x")));
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  console.log(
    `(c) node:http2 both ends over an in-memory Duplex: ${(n / wall).toFixed(1)} k req/s, ` +
      `CPU ${((cpu.user + cpu.system) / n).toFixed(1)} µs/request (both ends)`,
  );
  const c1 = process.cpuUsage();
  const t1 = performance.now();
  const got = await one("/big");
  const s = (performance.now() - t1) / 1000;
  const cpu1 = process.cpuUsage(c1);
  console.log(
    `(d) node:http2 256 MiB body over an in-memory Duplex: ${(got / 2 ** 20 / s).toFixed(0)} MiB/s, ` +
      `CPU ${((cpu1.user + cpu1.system) / 1e6 / (got / 2 ** 30)).toFixed(2)} s/GiB (both ends)`,
  );
  client.destroy();
}

/**
 * `serve PORT`: a node:http2 h2c server answering every request, for h2spec by hand
 * (`h2spec -p PORT --strict`). Its handler checks `stream.destroyed`: without that, a request and
 * its RST_STREAM in one read (h2spec generic/2.4) made `respond()` throw out of the 'stream'
 * event and the process exit.
 */
if (Deno.args[0] === "serve") {
  const server = http2.createServer();
  server.on("stream", (stream) => {
    stream.on("error", () => {});
    if (stream.destroyed) return;
    stream.respond({ ":status": 200 });
    stream.end("ok");
  });
  server.on("sessionError", () => {});
  server.listen(Number(Deno.args[1] ?? 8444), "127.0.0.1");
  await new Promise(() => {});
}

const which = Deno.args[0] ?? "all";
if (which === "all" || which === "a") await probeBadFrames();
if (which === "all" || which === "b") await probeDuplex();
if (which === "all" || which === "c") await probeCpu();
if (which === "all" || which === "d") await probeBackpressure();
if (which === "all" || which === "m") await probeInMemory();
console.log(`uncaught exceptions: ${uncaught.length} ${uncaught.slice(0, 3).join(" | ")}`);
Deno.exit(0);
