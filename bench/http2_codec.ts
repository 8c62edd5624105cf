/**
 * `deno task bench:h2codec`: the HTTP/2 codec alone (src/proxy/http2), in one process, no
 * sockets, so later changes can be compared: HPACK encode and decode of browser-like request
 * heads, Huffman decoding, frame parsing (small frames and 16 KiB DATA), and a client and a
 * server `Http2Connection` wired in memory (small requests, and a bulk body with flow control).
 * Figures are best of 3 rounds; CPU from `process.cpuUsage()`.
 * @module
 */
import process from "node:process";
import {
  Decoder,
  Encoder,
  type HeaderField,
  huffmanDecode,
  huffmanEncode,
} from "../src/proxy/http2/hpack.ts";
import { type Frame, FrameReader, serializeFrame } from "../src/proxy/http2/frames.ts";
import { Http2Connection, type Http2Event } from "../src/proxy/http2/connection.ts";

function requestHead(i: number): HeaderField[] {
  return [
    [":method", "GET"],
    [":scheme", "https"],
    [":authority", "www.example.com"],
    [":path", `/assets/app.${i % 50}.js?v=${i}`],
    [
      "user-agent",
      "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    ],
    ["accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"],
    ["accept-language", "en-US,en;q=0.9"],
    ["accept-encoding", "gzip, deflate, br"],
    ["referer", "https://www.example.com/"],
    ["cookie", `session=${(i * 2654435761 % 2 ** 32).toString(16)}; theme=dark; consent=yes`],
    ["sec-fetch-mode", "no-cors"],
    ["sec-fetch-site", "same-origin"],
  ];
}

function best(rounds: number, fn: () => number): number {
  let top = 0;
  for (let i = 0; i < rounds; i++) top = Math.max(top, fn());
  return top;
}

function time(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}

const rows: [string, string][] = [];
const N = 20_000;
const heads = Array.from({ length: N }, (_, i) => requestHead(i));

// HPACK encode: one encoder for the sequence, as on a connection.
let blocks: Uint8Array[] = [];
const encodeRate = best(3, () => {
  const enc = new Encoder();
  const out: Uint8Array[] = [];
  const s = time(() => {
    for (const h of heads) out.push(enc.encode(h));
  });
  blocks = out;
  return N / s;
});
const blockBytes = blocks.reduce((n, b) => n + b.length, 0);
rows.push([
  "HPACK encode (12-field request heads)",
  `${(encodeRate / 1000).toFixed(0)} k heads/s, ${(blockBytes / N).toFixed(0)} B/head`,
]);
const decodeRate = best(3, () => {
  const dec = new Decoder();
  const s = time(() => {
    for (const b of blocks) dec.decode(b);
  });
  return N / s;
});
rows.push(["HPACK decode (same blocks)", `${(decodeRate / 1000).toFixed(0)} k heads/s`]);
const firstBlocks = heads.slice(0, 2000).map((h) => new Encoder().encode(h)); // cold table: all literals
const coldRate = best(3, () => {
  const s = time(() => {
    for (const b of firstBlocks) new Decoder().decode(b);
  });
  return firstBlocks.length / s;
});
rows.push(["HPACK decode, cold table (all literals, Huffman)", `${(coldRate / 1000).toFixed(0)} k heads/s`]);
const text = heads.slice(0, 2000).map((h) => h.map(([, v]) => v).join("")).join("");
const coded = huffmanEncode(text);
const huffRate = best(3, () => {
  const s = time(() => {
    for (let i = 0; i < 5; i++) huffmanDecode(coded);
  });
  return (5 * text.length) / s / 1e6;
});
rows.push(["Huffman decode", `${huffRate.toFixed(0)} MB/s of decoded text`]);

// Frame parsing.
function parseAll(buf: Uint8Array): number {
  const r = new FrameReader(1 << 20);
  r.push(buf);
  let n = 0;
  while (r.next()) n++;
  return n;
}
const small: Frame[] = [
  { type: "window_update", streamId: 1, increment: 1000 },
  { type: "ping", ack: false, data: new Uint8Array(8) },
  { type: "headers", streamId: 3, block: blocks[5]!, endStream: true, endHeaders: true },
  { type: "rst_stream", streamId: 3, code: 8 },
];
const smallBuf = concat(Array.from({ length: 50_000 }, (_, i) => serializeFrame(small[i % 4]!)));
const smallRate = best(3, () => 50_000 / time(() => parseAll(smallBuf)));
rows.push(["frame parse, small frames", `${(smallRate / 1e6).toFixed(2)} M frames/s`]);
const dataFrame = serializeFrame({
  type: "data",
  streamId: 1,
  data: new Uint8Array(16384),
  endStream: false,
});
const dataBuf = concat(Array.from({ length: 4096 }, () => dataFrame)); // 64 MiB
const dataRate = best(3, () => dataBuf.length / time(() => parseAll(dataBuf)) / 2 ** 30);
rows.push(["frame parse, 16 KiB DATA", `${dataRate.toFixed(1)} GiB/s`]);

// Two connections in memory.
function pump(
  c: Http2Connection,
  s: Http2Connection,
  onServer: (e: Http2Event) => void,
  onClient: (e: Http2Event) => void,
) {
  for (let i = 0; i < 100_000; i++) {
    const a = c.output(), b = s.output();
    if (a.length === 0 && b.length === 0) return;
    if (a.length) { for (const e of s.receive(a, 0)) onServer(e); }
    if (b.length) { for (const e of c.receive(b, 0)) onClient(e); }
  }
}
const reqRound = () => {
  const c = new Http2Connection("client", { autoConsume: true });
  const s = new Http2Connection("server", { autoConsume: true });
  const body = new TextEncoder().encode("hello");
  let done = 0;
  const onServer = (e: Http2Event) => {
    if (e.type === "headers" && e.endStream) {
      s.sendHeaders(
        e.streamId,
        [[":status", "200"], ["content-type", "text/plain"], ["content-length", "5"]],
        false,
      );
      s.sendData(e.streamId, body, true);
    }
  };
  const onClient = (e: Http2Event) => {
    if (e.type === "data" && e.endStream) done++;
  };
  pump(c, s, onServer, onClient);
  const n = 10_000;
  const cpu0 = process.cpuUsage();
  const sec = time(() => {
    for (let i = 0; i < n; i += 10) {
      for (let j = 0; j < 10; j++) c.request(heads[(i + j) % N]!, true);
      pump(c, s, onServer, onClient);
    }
  });
  const cpu = process.cpuUsage(cpu0);
  if (done !== n) throw new Error(`${done} of ${n} answered`);
  return [n / sec, (cpu.user + cpu.system) / n] as const;
};
let reqBest = [0, Infinity] as readonly [number, number];
for (let i = 0; i < 3; i++) {
  const r = reqRound();
  if (r[0] > reqBest[0]) reqBest = r;
}
rows.push([
  "requests, client+server in memory (10 at a time)",
  `${(reqBest[0] / 1000).toFixed(1)} k req/s, ${reqBest[1].toFixed(1)} µs CPU/request (both ends)`,
]);

const bulkRound = () => {
  const c = new Http2Connection("client", {
    autoConsume: true,
    initialWindowSize: 1 << 20,
    connectionWindowSize: 4 << 20,
  });
  const s = new Http2Connection("server");
  const id = c.request(heads[0]!, true);
  let got = 0;
  pump(c, s, () => {}, () => {});
  s.sendHeaders(id, [[":status", "200"]], false);
  const chunk = new Uint8Array(64 * 1024);
  const total = 256 * 2 ** 20;
  let queued = 0;
  const cpu0 = process.cpuUsage();
  const sec = time(() => {
    while (got < total) {
      // Keep about 1 MiB queued, as a driver would with backpressure.
      while (queued < total && s.bufferedData(id) < 1 << 20) {
        queued += chunk.length;
        s.sendData(id, chunk, queued >= total);
      }
      pump(c, s, () => {}, (e) => {
        if (e.type === "data") got += e.data.length;
      });
    }
  });
  const cpu = process.cpuUsage(cpu0);
  return [total / sec / 2 ** 20, (cpu.user + cpu.system) / 1e6 / (total / 2 ** 30)] as const;
};
let bulkBest = [0, Infinity] as readonly [number, number];
for (let i = 0; i < 3; i++) {
  const r = bulkRound();
  if (r[0] > bulkBest[0]) bulkBest = r;
}
rows.push([
  "bulk body, client+server in memory (256 MiB)",
  `${bulkBest[0].toFixed(0)} MiB/s, ${bulkBest[1].toFixed(2)} s CPU/GiB (both ends)`,
]);

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const width = Math.max(...rows.map(([k]) => k.length));
console.log(`HTTP/2 codec (deno ${Deno.version.deno}, best of 3)`);
for (const [k, v] of rows) console.log(`  ${k.padEnd(width)}  ${v}`);
