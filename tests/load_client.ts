/**
 * The client side of the connection-load test (tests/load_e2e_test.ts), run inside a rig
 * namespace: it runs N connections at once, checks every byte, and prints one JSON line.
 *
 *   tcp HOST PORT N BYTES [WAVE]
 *       N connections to an echo server, opened in waves of WAVE (default: all at once); each
 *       sends BYTES of the pattern as soon as it is open and expects them back, then waits until
 *       every connection got its echo (all N open at one moment), then sends FIN and expects
 *       the end with no further byte. The next wave starts when the previous one got its echoes.
 *   https HOST PORT N NAME CAFILE PATH SHA256 BYTES
 *       N connections at once, each making a TLS handshake (SNI NAME, trusting only CAFILE) as
 *       soon as it is open and sending `GET PATH` (Connection: close); each expects 200 with a
 *       body of BYTES whose sha256 is SHA256.
 *
 * Result: `{ opened, ok, errorCount, errors: [first few], connectSeconds, barrierSeconds,
 * seconds }`; a connect that has not succeeded after 30 s (the kernel retrying its SYN
 * meanwhile) counts as an error.
 * @module
 */
import { createHash } from "node:crypto";
import { pattern } from "./pattern.ts";

const [mode, host, portText, countText, ...rest] = Deno.args;
const port = Number(portText), count = Number(countText);
const CONNECT_MS = 30_000;

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}

async function readAll(conn: Deno.Conn, limit: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  const buf = new Uint8Array(64 * 1024);
  for (;;) {
    const r = await conn.read(buf);
    if (r === null) break;
    parts.push(buf.slice(0, r));
    n += r;
    if (n > limit) throw new Error(`more than ${limit} bytes`);
  }
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) out.set(p, off), off += p.length;
  return out;
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/**
 * Opens `count` connections with `open` and runs `use` on each, in waves of `wave` started one
 * after the other. `use` may wait at `barrier()` until every connection has reached it (or
 * failed before): there they are all open at one moment. A wave starts when every connection
 * of the previous one has reached the barrier (or failed). Every failure is kept.
 */
async function run<C extends Deno.Conn>(
  open: () => Promise<C>,
  use: (c: C, barrier: () => Promise<void>) => Promise<void>,
  wave = count,
): Promise<unknown> {
  const t0 = performance.now();
  const errors: string[] = [];
  let opened = 0, ok = 0, connectSeconds = 0, barrierSeconds = 0;
  let waiting = count;
  let release = () => {};
  const allThere = new Promise<void>((r) => release = r);
  const arrive = () => {
    if (--waiting === 0) {
      barrierSeconds = (performance.now() - t0) / 1000;
      release();
    }
  };
  const one = async (arrived: () => void) => {
    let c: C;
    try {
      c = await open();
      opened++;
      connectSeconds = Math.max(connectSeconds, (performance.now() - t0) / 1000);
    } catch (e) {
      errors.push(`open: ${e}`);
      arrived();
      arrive();
      return;
    }
    let reached = false;
    const barrier = () => {
      if (!reached) reached = true, arrived(), arrive();
      return allThere;
    };
    try {
      await use(c, barrier);
      ok++;
    } catch (e) {
      errors.push(`use: ${e}`);
    } finally {
      if (!reached) barrier();
      try {
        c.close();
      } catch { /* closed, or taken over by TLS */ }
    }
  };
  const all: Promise<void>[] = [];
  for (let start = 0; start < count; start += wave) {
    const n = Math.min(wave, count - start);
    let left = n;
    let waveDone = () => {};
    const done = new Promise<void>((r) => waveDone = r);
    const arrived = () => {
      if (--left === 0) waveDone();
    };
    for (let i = 0; i < n; i++) all.push(one(arrived));
    await done;
  }
  await Promise.all(all);
  return {
    opened,
    ok,
    errorCount: errors.length,
    errors: errors.slice(0, 5),
    connectSeconds,
    barrierSeconds,
    seconds: (performance.now() - t0) / 1000,
  };
}

let result: unknown;
switch (mode) {
  case "tcp": {
    const bytes = Number(rest[0]), wave = Number(rest[1] ?? count);
    const data = pattern(0, bytes);
    const want = sha(data);
    result = await run(
      () =>
        Deno.connect(
          { hostname: host!, port, signal: AbortSignal.timeout(CONNECT_MS) } as Deno.ConnectOptions,
        ),
      async (conn, barrier) => {
        // Send at once (the proxy waits only briefly for a client's first bytes), take the echo
        // back, then hold the connection until every other one got its echo too.
        const writing = writeAll(conn, data);
        const got = new Uint8Array(bytes);
        for (let n = 0; n < bytes;) {
          const r = await conn.read(got.subarray(n));
          if (r === null) throw new Error(`echo ended after ${n} of ${bytes} bytes`);
          n += r;
        }
        await writing;
        if (sha(got) !== want) throw new Error("echo returned other bytes");
        await barrier();
        await conn.closeWrite();
        const rest = await readAll(conn, 0);
        if (rest.length !== 0) throw new Error(`${rest.length} bytes more than were sent`);
      },
      wave,
    );
    break;
  }
  case "https": {
    const [name, caFile, path, wantSha, bytesText] = rest as [string, string, string, string, string];
    const caCerts = [Deno.readTextFileSync(caFile)];
    const bytes = Number(bytesText);
    const request = new TextEncoder().encode(
      `GET ${path} HTTP/1.1\r\nHost: ${name}\r\nConnection: close\r\n\r\n`,
    );
    result = await run(
      () =>
        Deno.connect(
          { hostname: host!, port, signal: AbortSignal.timeout(CONNECT_MS) } as Deno.ConnectOptions,
        ),
      async (tcp) => {
        // Connect, handshake and request follow each other at once, as a browser's do: the
        // proxy takes a connection whose first bytes do not come within 1.5 s for one that is
        // not TLS (relayed untouched), and one quiet for 1.5 s after its handshake for one that
        // is not HTTP (connection_handler.ts, firstBytesTimeout).
        const conn = await Deno.startTls(tcp, { hostname: name, caCerts });
        let all: Uint8Array;
        try {
          await writeAll(conn, request);
          all = await readAll(conn, bytes + 64 * 1024);
        } finally {
          conn.close();
        }
        let end = -1;
        for (let i = 0; i + 3 < all.length; i++) {
          if (all[i] === 13 && all[i + 1] === 10 && all[i + 2] === 13 && all[i + 3] === 10) {
            end = i + 4;
            break;
          }
        }
        if (end < 0) throw new Error("no response head");
        const head = new TextDecoder().decode(all.subarray(0, end));
        if (!head.startsWith("HTTP/1.1 200")) throw new Error(`answer: ${head.split("\r\n")[0]}`);
        const body = all.subarray(end);
        if (body.length !== bytes || sha(body) !== wantSha) {
          throw new Error(`body of ${body.length} other bytes`);
        }
      },
    );
    break;
  }
  default:
    throw new Error(`unknown mode ${mode}`);
}
console.log(JSON.stringify(result));
