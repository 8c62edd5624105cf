/**
 * A small client the end-to-end tests run inside a rig namespace (with the test's own deno).
 * Prints one JSON line with what it measured.
 *
 *   echo HOST PORT BYTES          send BYTES, expect them back, report sha256 both ways
 *   upload HOST PORT BYTES        send BYTES of the pattern then FIN; print the server's reply
 *   download HOST PORT BYTES      ask for BYTES of the pattern; report their sha256
 *   concurrent HOST PORT N BYTES  N echo connections at once
 *   udp HOST PORT TEXT            one datagram; print the reply
 *   connect HOST PORT MS          try to connect within MS; report whether it worked
 *   rtt HOST PORT N SIZE          N sequential round trips of SIZE bytes on one connection
 *   sink HOST PORT BYTES          send BYTES as fast as possible (port 10); report MB/s
 *   source HOST PORT BYTES        receive BYTES as fast as possible (port 19); report MB/s
 *   ws URL - TEXT                 WebSocket: send TEXT, print the echo
 *   dns SERVER PORT NAME          one A query; print the rcode and answers
 *   dns-tcp SERVER PORT NAME      the same over TCP
 * @module
 */
import { createHash } from "node:crypto";
import { pattern } from "./pattern.ts";
import { buildDnsQuery, parseDnsMessage } from "../src/proxy/dns_message.ts";

const [mode, host, portText, ...rest] = Deno.args;

/** `Deno.Conn.write` may take only part of a buffer: write all of it. */
async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}
const port = Number(portText);

async function echo(bytes: number): Promise<{ sent: string; got: string; ms: number }> {
  const t0 = performance.now();
  const conn = await Deno.connect({ hostname: host!, port });
  const data = pattern(0, bytes);
  const sent = createHash("sha256").update(data).digest("hex");
  const writing = (async () => {
    const w = conn.writable.getWriter();
    await w.write(data);
    // (Closing Deno's conn.writable would close the whole connection; only FIN is meant.)
    w.releaseLock();
    await conn.closeWrite();
  })();
  const h = createHash("sha256");
  let n = 0;
  for await (const chunk of conn.readable) {
    h.update(chunk);
    n += chunk.length;
  }
  await writing;
  if (n !== bytes) throw new Error(`echo returned ${n} of ${bytes} bytes`);
  return { sent, got: h.digest("hex"), ms: performance.now() - t0 };
}

let result: unknown;
switch (mode) {
  case "echo":
    result = await echo(Number(rest[0]));
    break;
  case "upload": {
    const bytes = Number(rest[0]);
    const t0 = performance.now();
    const conn = await Deno.connect({ hostname: host!, port });
    const w = conn.writable.getWriter();
    const h = createHash("sha256");
    for (let off = 0; off < bytes; off += 1 << 20) {
      const chunk = pattern(off, Math.min(1 << 20, bytes - off));
      h.update(chunk);
      await w.write(chunk);
    }
    w.releaseLock();
    await conn.closeWrite();
    const reply = await new Response(conn.readable).text();
    result = { sent: h.digest("hex"), reply, seconds: (performance.now() - t0) / 1000 };
    break;
  }
  case "download": {
    const bytes = Number(rest[0]);
    const t0 = performance.now();
    const conn = await Deno.connect({ hostname: host!, port });
    await writeAll(conn, new TextEncoder().encode(`${bytes}\n`));
    // Plain reads as in `source`, not conn.readable: twice a minutes-long download through the
    // stream ended in "Interrupted: operation canceled" on a loaded machine (bench:faults; cause
    // not found).
    const h = createHash("sha256");
    const buf = new Uint8Array(256 * 1024);
    let n = 0, r;
    while ((r = await conn.read(buf)) !== null) {
      h.update(buf.subarray(0, r));
      n += r;
    }
    conn.close();
    const seconds = (performance.now() - t0) / 1000;
    result = {
      bytes: n,
      seconds,
      got: h.digest("hex"),
      want: createHash("sha256").update(pattern(0, bytes)).digest("hex"),
    };
    break;
  }
  case "concurrent": {
    const count = Number(rest[0]), bytes = Number(rest[1]);
    const all = await Promise.allSettled(Array.from({ length: count }, () => echo(bytes)));
    const ok = all.filter((r) => r.status === "fulfilled" && r.value.sent === r.value.got).length;
    const errors = all.flatMap((r) => (r.status === "rejected" ? [String(r.reason)] : [])).slice(0, 3);
    result = { ok, errors };
    break;
  }
  case "udp": {
    const sock = Deno.listenDatagram({
      transport: "udp",
      hostname: host!.includes(":") ? "::" : "0.0.0.0",
      port: 0,
    });
    await sock.send(new TextEncoder().encode(rest[0]), { transport: "udp", hostname: host!, port });
    const timer = setTimeout(() => sock.close(), 3000);
    try {
      const [data, from] = await sock.receive();
      result = { reply: new TextDecoder().decode(data), from };
    } catch {
      result = { reply: null };
    }
    clearTimeout(timer);
    break;
  }
  case "connect": {
    const ms = Number(rest[0]);
    try {
      const conn = await Deno.connect(
        { hostname: host!, port, signal: AbortSignal.timeout(ms) } as Deno.ConnectOptions,
      );
      conn.close();
      result = { connected: true };
    } catch (e) {
      result = { connected: false, error: String(e) };
    }
    break;
  }
  case "rtt": {
    const count = Number(rest[0]), size = Number(rest[1]);
    const conn = await Deno.connect({ hostname: host!, port });
    conn.setNoDelay(true);
    const msg = pattern(0, size);
    const buf = new Uint8Array(size);
    const t0 = performance.now();
    for (let i = 0; i < count; i++) {
      await writeAll(conn, msg);
      for (let got = 0; got < size;) {
        const n = await conn.read(buf.subarray(got));
        if (n === null) throw new Error(`connection ended after ${i} round trips`);
        got += n;
      }
    }
    const s = (performance.now() - t0) / 1000;
    conn.close();
    result = { count, seconds: s, perSecond: count / s };
    break;
  }
  case "sink": {
    const bytes = Number(rest[0]);
    const conn = await Deno.connect({ hostname: host!, port });
    const block = pattern(0, 1 << 20);
    const t0 = performance.now();
    for (let off = 0; off < bytes; off += block.length) {
      await writeAll(conn, block.subarray(0, Math.min(block.length, bytes - off)));
    }
    await conn.closeWrite();
    const reply = await new Response(conn.readable).text();
    const s = (performance.now() - t0) / 1000;
    if (Number(reply) !== bytes) throw new Error(`server counted ${reply} of ${bytes}`);
    result = { bytes, seconds: s, mbps: (bytes * 8) / s / 1e6 };
    break;
  }
  case "source": {
    const bytes = Number(rest[0]);
    const conn = await Deno.connect({ hostname: host!, port });
    const t0 = performance.now();
    await writeAll(conn, new TextEncoder().encode(`${bytes}\n`));
    const buf = new Uint8Array(1 << 20);
    let n = 0, r;
    while ((r = await conn.read(buf)) !== null) n += r;
    const s = (performance.now() - t0) / 1000;
    if (n !== bytes) throw new Error(`received ${n} of ${bytes}`);
    result = { bytes, seconds: s, mbps: (bytes * 8) / s / 1e6 };
    break;
  }
  case "ws": {
    // host is a full ws:// URL here; port is unused.
    const ws = new WebSocket(host!);
    const reply = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("WebSocket timed out")), 10_000);
      ws.onopen = () => ws.send(rest[0] ?? "");
      ws.onmessage = (e) => {
        clearTimeout(timer);
        resolve(String(e.data));
      };
      ws.onerror = (e) => reject(new Error(`WebSocket failed: ${(e as ErrorEvent).message}`));
    });
    ws.close(1000, "done");
    await new Promise((r) => setTimeout(r, 200));
    result = { reply };
    break;
  }
  case "dns": {
    const sock = Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 });
    await sock.send(buildDnsQuery(rest[0]!, 1, 0x5157), { transport: "udp", hostname: host!, port });
    const timer = setTimeout(() => sock.close(), 5000);
    try {
      const [data] = await sock.receive();
      const m = parseDnsMessage(data);
      result = { rcode: m.rcodeName, answers: m.answers.map((a) => a.data) };
    } catch (e) {
      result = { error: String(e) };
    }
    clearTimeout(timer);
    break;
  }
  case "dns-tcp": {
    const conn = await Deno.connect({ hostname: host!, port });
    const query = buildDnsQuery(rest[0]!, 1, 0x5158);
    await writeAll(conn, new Uint8Array([query.byteLength >> 8, query.byteLength & 255, ...query]));
    const reply = new Uint8Array(await new Response(conn.readable).arrayBuffer());
    const m = parseDnsMessage(reply.subarray(2, 2 + ((reply[0]! << 8) | reply[1]!)));
    result = { rcode: m.rcodeName, answers: m.answers.map((a) => a.data) };
    break;
  }
  default:
    throw new Error(`unknown mode ${mode}`);
}
console.log(JSON.stringify(result));
