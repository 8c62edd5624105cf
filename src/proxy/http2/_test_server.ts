/**
 * A tiny h2c (prior knowledge) server driven by `Http2Connection` over loopback TCP, for the
 * interop tests and for h2spec by hand:
 * `node_modules/.bin/deno run -A src/proxy/http2/_test_server.ts 8443` then `h2spec -p 8443`.
 * It stands in for the proxy's driver, which comes in a later phase.
 * @module
 */
import { createHash } from "node:crypto";
import { Http2Connection, type Http2Event } from "./connection.ts";
import type { HeaderField } from "./hpack.ts";

/** A running test server. */
export interface Server {
  port: number;
  seen: { streams: number; errors: string[]; headerOrder: string[][] };
  close(): Promise<void>;
}

/** Serves: GET /n/<bytes> → that many bytes; POST → sha256 of the body, with trailers. */
export function serve(port = 0): Server {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const seen = { streams: 0, errors: [] as string[], headerOrder: [] as string[][] };
  const conns = new Set<Deno.Conn>();
  const handle = async (conn: Deno.Conn) => {
    conns.add(conn);
    const h2 = new Http2Connection("server", { autoConsume: true });
    let writing = Promise.resolve();
    const flush = () => {
      const out = h2.output();
      if (out.length) writing = writing.then(() => writeAll(conn, out)).catch(() => {});
    };
    const requests = new Map<
      number,
      { headers: HeaderField[]; hash: ReturnType<typeof createHash>; n: number }
    >();
    const respond = (id: number) => {
      const r = requests.get(id)!;
      requests.delete(id);
      const path = r.headers.find(([n]) => n === ":path")![1];
      const method = r.headers.find(([n]) => n === ":method")![1];
      if (method === "POST") {
        h2.sendHeaders(id, [[":status", "200"], ["content-type", "text/plain"]], false);
        h2.sendData(id, new TextEncoder().encode(r.hash.digest("hex")));
        h2.sendTrailers(id, [["x-body-bytes", String(r.n)]]);
      } else {
        const size = Number(path.match(/^\/n\/(\d+)$/)?.[1] ?? 5);
        h2.sendHeaders(id, [[":status", "200"], ["content-length", String(size)], [
          "X-Case".toLowerCase(),
          "kept",
        ]], false);
        const body = new Uint8Array(size);
        for (let i = 0; i < size; i++) body[i] = i % 251;
        h2.sendData(id, body, true);
      }
    };
    const on = (e: Http2Event) => {
      if (e.type === "headers" && e.kind === "request") {
        seen.streams++;
        seen.headerOrder.push(e.headers.map(([n]) => n));
        requests.set(e.streamId, { headers: e.headers, hash: createHash("sha256"), n: 0 });
        if (e.endStream) respond(e.streamId);
      } else if (e.type === "data") {
        const r = requests.get(e.streamId);
        if (r) {
          r.hash.update(e.data);
          r.n += e.data.length;
          if (e.endStream) respond(e.streamId);
        }
      } else if (e.type === "headers" && e.kind === "trailers") {
        respond(e.streamId);
      } else if (e.type === "goaway" && !e.remote) seen.errors.push(e.debug);
    };
    flush();
    const buf = new Uint8Array(65536);
    try {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        for (const e of h2.receive(buf.slice(0, n), Date.now())) on(e);
        flush();
        if (h2.failed) break;
      }
    } catch { /* reset by the client */ }
    await writing;
    conns.delete(conn);
    try {
      conn.close();
    } catch { /* closed */ }
  };
  const accepting = (async () => {
    for await (const conn of listener) handle(conn);
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    seen,
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await accepting.catch(() => {});
    },
  };
}

/** Writes all of `data`. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let o = 0; o < data.length;) o += await conn.write(data.subarray(o));
}

if (import.meta.main) {
  const server = serve(Number(Deno.args[0] ?? 0));
  console.log(`h2c on 127.0.0.1:${server.port}`);
}
