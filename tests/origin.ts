/**
 * The test and benchmark servers, chosen by destination port: 7 echo, 9 upload (replies with
 * the sha256 of what it got, or with the byte count when asked with port 10), 19 download ("N\n"
 * asks for N bytes of the pattern). They serve tunneled connections and plain `Deno.Conn`s alike;
 * run this file to serve them on real sockets (for the wireguard-go comparison).
 * @module
 */
import { createHash } from "node:crypto";
import { pattern } from "./pattern.ts";

const MB = 1 << 20;

/** The part of a connection the servers use. */
export interface Duplex {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
  close(): void;
}

/** Serves one connection according to `port`. */
export async function serveOrigin(conn: Duplex, port: number): Promise<void> {
  try {
    switch (port) {
      case 7: // echo
        await conn.readable.pipeTo(conn.writable, { preventClose: false });
        break;
      case 9: // upload: sha256 of everything received
      case 10: { // upload: byte count only (cheap, for throughput)
        const h = port === 9 ? createHash("sha256") : null;
        let n = 0;
        for await (const chunk of conn.readable) {
          h?.update(chunk);
          n += chunk.length;
        }
        const w = conn.writable.getWriter();
        await w.write(new TextEncoder().encode(h ? h.digest("hex") : String(n)));
        await w.close();
        break;
      }
      case 19: { // download: "N\n" asks for N bytes of the pattern
        const reader = conn.readable.getReader();
        let text = "";
        while (!text.includes("\n")) {
          const { value, done } = await reader.read();
          if (done) break;
          text += new TextDecoder().decode(value);
        }
        reader.releaseLock();
        const bytes = Number(text.trim());
        const w = conn.writable.getWriter();
        for (let off = 0; off < bytes; off += MB) await w.write(pattern(off, Math.min(MB, bytes - off)));
        await w.close();
        break;
      }
    }
  } catch {
    // A client that goes away mid-transfer is not the server's problem.
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}

/**
 * A `Deno.Conn` as a {@link Duplex} with TCP's half-close: Deno's own `conn.readable` closes the
 * socket at end of input and `conn.writable.close()` closes all of it, where a server that
 * replies after the client's FIN needs to keep writing.
 */
export function fromDenoConn(conn: Deno.Conn): Duplex {
  return {
    readable: new ReadableStream({
      async pull(c) {
        const buf = new Uint8Array(256 * 1024);
        const n = await conn.read(buf);
        if (n === null) c.close();
        else c.enqueue(buf.subarray(0, n));
      },
    }),
    writable: new WritableStream({
      async write(chunk) {
        for (let off = 0; off < chunk.length;) off += await conn.write(chunk.subarray(off));
      },
      close: () => conn.closeWrite(),
    }),
    close: () => conn.close(),
  };
}

if (import.meta.main) {
  for (const port of [7, 9, 10, 19]) {
    (async () => {
      for await (const conn of Deno.listen({ hostname: "0.0.0.0", port })) {
        conn.setNoDelay(true);
        serveOrigin(fromDenoConn(conn), port);
      }
    })();
  }
  console.log("origin ready");
}
