/**
 * The HTTP/2 attacks against the running explicit proxy, one connection each, sent as raw
 * frames of prior-knowledge h2c inside a CONNECT tunnel: each ends in the GOAWAY or RST_STREAM the
 * RFC prescribes, with a log line, a flow error or a counter saying so, while a connection opened
 * before them (and a new one after each) is still served. Also the head timeout on h2 clients:
 * a connection that starts no stream, or leaves a header block open, gets GOAWAY and is closed.
 * @module
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";
import { Http2Connection } from "../src/proxy/http2/connection.ts";
import { ErrorCode, type Frame, FrameReader, PREFACE, serializeFrame } from "../src/proxy/http2/frames.ts";
import { Encoder, type HeaderField } from "../src/proxy/http2/hpack.ts";
import type { Flow, HttpFlow } from "../src/flows/flow.ts";

const HEAD_TIMEOUT = 1000;
const f = (frame: Frame) => serializeFrame(frame);

function join(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** An h2c origin on the proxy's codec: every request gets 200 "ok <path>". */
function origin(): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serve = async (conn: Deno.Conn) => {
    const h2 = new Http2Connection("server", { autoConsume: true });
    const buf = new Uint8Array(65536);
    try {
      await conn.write(h2.output());
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        for (const ev of h2.receive(buf.slice(0, n), Date.now())) {
          if (ev.type === "headers" && ev.kind === "request") {
            const path = ev.headers.find(([k]) => k === ":path")?.[1] ?? "";
            h2.sendHeaders(ev.streamId, [[":status", "200"]], false);
            h2.sendData(ev.streamId, new TextEncoder().encode(`ok ${path}`), true);
          }
        }
        const out = h2.output();
        for (let o = 0; o < out.byteLength;) o += await conn.write(out.subarray(o));
        if (h2.failed) break;
      }
    } catch { /* the proxy went away */ }
    try {
      conn.close();
    } catch { /* closed */ }
  };
  (async () => {
    for await (const conn of listener) void serve(conn);
  })().catch(() => {});
  return { port: listener.addr.port, close: () => listener.close() };
}

/** A TCP connection to the proxy, CONNECTed to `target`, the proxy's 200 read. */
async function tunnel(proxyPort: number, target: string): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  await conn.write(new TextEncoder().encode(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`));
  let head = "";
  const one = new Uint8Array(1);
  while (!head.endsWith("\r\n\r\n") && head.length < 4096) {
    const n = await conn.read(one);
    if (n === null) throw new Error("proxy closed the CONNECT");
    head += String.fromCharCode(one[0]!);
  }
  assert.match(head, /^HTTP\/1\.1 200/);
  return conn;
}

/** Everything the proxy sends until it closes (or `ms` pass), as frames; `closed` if it did. */
async function readAll(conn: Deno.Conn, ms: number): Promise<{ frames: Frame[]; closed: boolean }> {
  const reader = new FrameReader(1 << 24);
  const buf = new Uint8Array(65536);
  const deadline = Date.now() + ms;
  let closed = false;
  for (let i = 0; i < 100_000 && Date.now() < deadline; i++) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const n = await Promise.race([
      conn.read(buf).catch(() => null),
      new Promise<"late">((r) => timer = setTimeout(() => r("late"), Math.max(1, deadline - Date.now()))),
    ]);
    clearTimeout(timer);
    if (n === "late") break;
    if (n === null) {
      closed = true;
      break;
    }
    reader.push(buf.slice(0, n));
  }
  const frames: Frame[] = [];
  for (let fr = reader.next(); fr; fr = reader.next()) frames.push(fr);
  return { frames, closed };
}

function goawayOf(frames: Frame[]): { code: number; lastStreamId: number; debug: string } | undefined {
  const g = frames.find((x) => x.type === "goaway");
  return g && g.type === "goaway"
    ? { code: g.code, lastStreamId: g.lastStreamId, debug: new TextDecoder().decode(g.debug) }
    : undefined;
}

/** A well-behaved h2 client on its own tunnel (the "every other connection" of the issue). */
class GoodClient {
  readonly h2 = new Http2Connection("client");
  readonly buf = new Uint8Array(65536);
  constructor(readonly conn: Deno.Conn) {}

  static async open(proxyPort: number, target: string): Promise<GoodClient> {
    return new GoodClient(await tunnel(proxyPort, target));
  }

  /** GET `path` and return the body (bounded in time and reads). */
  async get(path: string, authority: string): Promise<string> {
    const id = this.h2.request([
      [":method", "GET"],
      [":scheme", "http"],
      [":authority", authority],
      [":path", path],
    ], true);
    await this.conn.write(this.h2.output());
    let body = "";
    const deadline = Date.now() + 5000;
    for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
      const n = await this.conn.read(this.buf);
      if (n === null) throw new Error("proxy closed a good connection");
      for (const ev of this.h2.receive(this.buf.slice(0, n), Date.now())) {
        if (ev.type === "data" && ev.streamId === id) {
          body += new TextDecoder().decode(ev.data);
          this.h2.consume(id, ev.data.byteLength);
          if (ev.endStream) {
            await this.conn.write(this.h2.output());
            return body;
          }
        }
        if (ev.type === "reset" && ev.streamId === id) throw new Error(`stream reset ${ev.code}`);
      }
      const out = this.h2.output();
      if (out.byteLength > 0) await this.conn.write(out);
    }
    throw new Error("no answer in time");
  }
}

Deno.test({
  name: "HTTP/2 attacks on the explicit proxy: each ends in its GOAWAY/RST_STREAM, others are served",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-h2-attacks-" });
    const up = origin();
    const logs: string[] = [];
    const proxy = await startProxy({
      modes: [{ kind: "regular", port: 0 }],
      confdir,
      dnsServers: [],
      allowLocalDestinations: true,
      headTimeout: HEAD_TIMEOUT,
      onLog: (e) => logs.push(`${e.level} ${e.message}`),
    });
    const flows: Flow[] = [];
    (async () => {
      for await (const fl of proxy.flows) flows.push(fl);
    })();
    const port = proxy.addresses[0]!.addr.port;
    const target = `127.0.0.1:${up.port}`;
    const enc = () => new Encoder();
    const get = (path: string): HeaderField[] => [
      [":method", "GET"],
      [":scheme", "http"],
      [":authority", target],
      [":path", path],
    ];
    const post = (path: string): HeaderField[] => [[":method", "POST"], ...get(path).slice(1)];
    const settings = f({ type: "settings", ack: false, settings: [] });
    const flowsOf = async (path: string, count = 1): Promise<HttpFlow[]> => {
      for (let i = 0; i < 200; i++) {
        const found = flows.filter((x): x is HttpFlow =>
          x.type === "http" && x.request.path === path && x.timestampEnd !== undefined
        );
        if (found.length >= count) return found;
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error(`no ended flow for ${path}`);
    };
    const logged = async (pattern: RegExp): Promise<void> => {
      for (let i = 0; i < 200 && !logs.some((l) => pattern.test(l)); i++) {
        await new Promise((r) => setTimeout(r, 25));
      }
      assert.ok(logs.some((l) => pattern.test(l)), `no log line ${pattern}\n${logs.join("\n")}`);
    };

    // Opened before every attack, used after each: the connection that must keep being served.
    const steady = await GoodClient.open(port, target);
    assert.equal(await steady.get("/steady/0", target), "ok /steady/0");
    let round = 0;

    /** Runs one attack on a fresh tunnel; returns what the proxy sent back before closing. */
    const attack = async (bytes: Uint8Array[], ms = 5000) => {
      const conn = await tunnel(port, target);
      try {
        for (const b of bytes) await conn.write(b).catch(() => 0);
        return await readAll(conn, ms);
      } finally {
        try {
          conn.close();
        } catch { /* closed */ }
      }
    };
    /** After an attack: the old connection and a new one both get answers. */
    const othersServed = async () => {
      round++;
      assert.equal(await steady.get(`/steady/${round}`, target), `ok /steady/${round}`);
      const fresh = await GoodClient.open(port, target);
      try {
        assert.equal(await fresh.get(`/fresh/${round}`, target), `ok /fresh/${round}`);
      } finally {
        fresh.conn.close();
      }
    };

    try {
      await t.step("malformed frame (SETTINGS of 5 bytes): GOAWAY FRAME_SIZE_ERROR", async () => {
        const bad = f({ type: "unknown", frameType: 4, flags: 0, streamId: 0, payload: new Uint8Array(5) });
        const r = await attack([join([PREFACE, settings, bad])]);
        assert.equal(goawayOf(r.frames)?.code, ErrorCode.FRAME_SIZE_ERROR);
        assert.ok(r.closed);
        await logged(/HTTP\/2 connection error from client .*FRAME_SIZE_ERROR/);
        await othersServed();
      });

      await t.step(
        "HPACK bomb (header list past SETTINGS_MAX_HEADER_LIST_SIZE): RST_STREAM, connection lives",
        async () => {
          const e = new Encoder({ huffman: false });
          const first = e.encode([...get("/bomb"), ["x", "a".repeat(4000)]]);
          const block = join([first, new Uint8Array(10_000).fill(0x80 | 62)]); // ~40 MB from 14 KB
          const before = proxy.stats().http2.client.headerListsTooLarge;
          const conn = await tunnel(port, target);
          try {
            await conn.write(join([
              PREFACE,
              settings,
              f({ type: "headers", streamId: 1, block, endStream: true, endHeaders: true }),
              // The same connection goes on: the next request decodes and is answered.
              f({
                type: "headers",
                streamId: 3,
                block: e.encode(get("/after-bomb")),
                endStream: true,
                endHeaders: true,
              }),
            ]));
            const r = await readAll(conn, 3000);
            const rst = r.frames.find((x) => x.type === "rst_stream" && x.streamId === 1);
            assert.deepEqual(rst, { type: "rst_stream", streamId: 1, code: ErrorCode.ENHANCE_YOUR_CALM });
            assert.equal(goawayOf(r.frames), undefined);
            assert.ok(r.frames.some((x) => x.type === "headers" && x.streamId === 3), "stream 3 answered");
          } finally {
            conn.close();
          }
          assert.equal(proxy.stats().http2.client.headerListsTooLarge, before + 1);
          const [after] = await flowsOf("/after-bomb");
          assert.equal(after!.response?.status, 200);
          await othersServed();
        },
      );

      await t.step(
        "dynamic table size update above the advertised size: GOAWAY COMPRESSION_ERROR",
        async () => {
          const block = Uint8Array.of(0x3f, 0xe2, 0x7f, 0x82); // size update to 16,384 + 31 + ...
          const r = await attack([
            join([
              PREFACE,
              settings,
              f({ type: "headers", streamId: 1, block, endStream: true, endHeaders: true }),
            ]),
          ]);
          assert.equal(goawayOf(r.frames)?.code, ErrorCode.COMPRESSION_ERROR);
          assert.ok(r.closed);
          await logged(/HTTP\/2 connection error from client .*COMPRESSION_ERROR/);
          await othersServed();
        },
      );

      await t.step(
        "flow-control violation (DATA past the window): FLOW_CONTROL_ERROR, the flow records it",
        async () => {
          const e = enc();
          const chunk = f({ type: "data", streamId: 1, data: new Uint8Array(16_000), endStream: false });
          const r = await attack([
            join([
              PREFACE,
              settings,
              f({
                type: "headers",
                streamId: 1,
                block: e.encode(post("/flood-body")),
                endStream: false,
                endHeaders: true,
              }),
              ...Array.from({ length: 160 }, () => chunk), // 2.5 MB, past the stream and connection windows
            ]),
          ], 2000);
          const code = r.frames.find((x) => x.type === "rst_stream" && x.streamId === 1) ??
            r.frames.find((x) => x.type === "goaway");
          assert.ok(
            code && "code" in code && code.code === ErrorCode.FLOW_CONTROL_ERROR,
            JSON.stringify(code),
          );
          const [fl] = await flowsOf("/flood-body");
          assert.match(fl!.error!.message, /FLOW_CONTROL_ERROR/);
          await othersServed();
        },
      );

      await t.step(
        "stream id going backwards: GOAWAY PROTOCOL_ERROR; the open stream's flow fails",
        async () => {
          const e = enc();
          const r = await attack([
            join([
              PREFACE,
              settings,
              f({
                type: "headers",
                streamId: 5,
                block: e.encode(post("/backwards")),
                endStream: false,
                endHeaders: true,
              }),
              f({
                type: "headers",
                streamId: 3,
                block: e.encode(get("/backwards-3")),
                endStream: true,
                endHeaders: true,
              }),
            ]),
          ]);
          assert.deepEqual(
            { code: goawayOf(r.frames)?.code, last: goawayOf(r.frames)?.lastStreamId },
            { code: ErrorCode.PROTOCOL_ERROR, last: 5 },
          );
          assert.ok(r.closed);
          const [fl] = await flowsOf("/backwards");
          assert.match(fl!.error!.message, /client connection error: PROTOCOL_ERROR/);
          await othersServed();
        },
      );

      await t.step("CONTINUATION flood: GOAWAY ENHANCE_YOUR_CALM after a bounded header block", async () => {
        const e = enc();
        const junk = f({
          type: "continuation",
          streamId: 1,
          block: new Uint8Array(1024).fill(0x40),
          endHeaders: false,
        });
        const r = await attack([
          join([
            PREFACE,
            settings,
            f({
              type: "headers",
              streamId: 1,
              block: e.encode(get("/cont")),
              endStream: true,
              endHeaders: false,
            }),
            ...Array.from({ length: 1000 }, () => junk), // 1 MB of one header block
          ]),
        ]);
        assert.equal(goawayOf(r.frames)?.code, ErrorCode.ENHANCE_YOUR_CALM);
        assert.ok(r.closed);
        await logged(/HTTP\/2 connection error from client .*ENHANCE_YOUR_CALM/);
        assert.ok((proxy.stats().http2.client.floods["continuation"] ?? 0) >= 1);
        await othersServed();
      });

      await t.step(
        "rapid reset (HEADERS + RST_STREAM x 1000): GOAWAY ENHANCE_YOUR_CALM, flows record it",
        async () => {
          const e = enc();
          const burst: Uint8Array[] = [PREFACE, settings];
          for (let i = 0, id = 1; i < 1000; i++, id += 2) {
            burst.push(
              f({
                type: "headers",
                streamId: id,
                block: e.encode(get("/rapid")),
                endStream: true,
                endHeaders: true,
              }),
              f({ type: "rst_stream", streamId: id, code: ErrorCode.CANCEL }),
            );
          }
          const r = await attack([join(burst)]);
          assert.equal(goawayOf(r.frames)?.code, ErrorCode.ENHANCE_YOUR_CALM);
          assert.ok(r.closed);
          const rapid = await flowsOf("/rapid");
          assert.ok(rapid.length <= 401, `${rapid.length} flows`);
          assert.ok(rapid.every((x) => x.error !== undefined));
          assert.ok((proxy.stats().http2.client.floods["resets"] ?? 0) >= 1);
          await othersServed();
        },
      );

      for (
        const [name, frame] of [
          ["SETTINGS", f({ type: "settings", ack: false, settings: [[3, 100]] })],
          ["PING", f({ type: "ping", ack: false, data: new Uint8Array(8) })],
          ["WINDOW_UPDATE", f({ type: "window_update", streamId: 0, increment: 1 })],
        ] as const
      ) {
        await t.step(`${name} flood: GOAWAY ENHANCE_YOUR_CALM, bounded answers`, async () => {
          const floods = proxy.stats().http2.client.floodsStopped;
          // Written without reading what comes back: the answers queue up in the proxy.
          const r = await attack([join([PREFACE, settings, ...Array.from({ length: 6000 }, () => frame)])]);
          assert.equal(
            goawayOf(r.frames)?.code,
            ErrorCode.ENHANCE_YOUR_CALM,
            JSON.stringify(goawayOf(r.frames)),
          );
          assert.ok(r.closed);
          // Cut off early: fewer answers than frames sent (the queue bound itself is the codec test's).
          assert.ok(r.frames.length < 3000, `${r.frames.length} frames in answer`);
          assert.equal(proxy.stats().http2.client.floodsStopped, floods + 1);
          await othersServed();
        });
      }

      await t.step("head timeout: a connection that starts no stream gets GOAWAY and is closed", async () => {
        const conn = await tunnel(port, target);
        try {
          const started = Date.now();
          await conn.write(join([PREFACE, settings]));
          const r = await readAll(conn, HEAD_TIMEOUT + 4000);
          const g = goawayOf(r.frames);
          assert.equal(g?.code, ErrorCode.NO_ERROR);
          assert.match(g!.debug, /no request within the head timeout/);
          assert.ok(r.closed);
          assert.ok(Date.now() - started >= HEAD_TIMEOUT - 50, `closed after ${Date.now() - started} ms`);
        } finally {
          conn.close();
        }
        await logged(/no request within .*head timeout/);
        await othersServed();
      });

      await t.step(
        "head timeout: a header block left open after a request: GOAWAY and close",
        async () => {
          const e = enc();
          const conn = await tunnel(port, target);
          try {
            await conn.write(join([
              PREFACE,
              settings,
              f({
                type: "headers",
                streamId: 1,
                block: e.encode(get("/before-stall")),
                endStream: true,
                endHeaders: true,
              }),
            ]));
            await new Promise((r) => setTimeout(r, HEAD_TIMEOUT + 300)); // served; idle is not timed
            await conn.write(
              f({
                type: "headers",
                streamId: 3,
                block: e.encode(get("/stalled")),
                endStream: true,
                endHeaders: false,
              }),
            );
            const r = await readAll(conn, HEAD_TIMEOUT + 4000);
            assert.ok(r.frames.some((x) => x.type === "headers" && x.streamId === 1), "stream 1 answered");
            const g = goawayOf(r.frames);
            assert.equal(g?.code, ErrorCode.NO_ERROR);
            assert.match(g!.debug, /header block incomplete at the head timeout/);
            assert.ok(r.closed);
          } finally {
            conn.close();
          }
          await logged(/request head incomplete after .*head timeout/);
          await othersServed();
        },
      );
    } finally {
      steady.conn.close();
      await proxy.close(200);
      up.close();
      await Deno.remove(confdir, { recursive: true }).catch(() => {});
    }
  },
});
