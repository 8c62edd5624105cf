/**
 * The servers of the end-to-end origin namespace besides nginx (run inside it with deno):
 *
 *   HTTP :8080   POST /upload → JSON {bytes, sha256} of the body; GET /ws → WebSocket echo;
 *                GET /cut → promises 100,000 bytes, sends 1,000 and closes (a broken server)
 *   HTTP :8082   answers every request at its head with `early`, then reads and drops the body
 *                (as nginx's `return 200` does)
 *   TCP  :7      echo
 *   UDP  :7      echo
 *   UDP  :443    echo (where QUIC would go: for the proxy's --quic passthrough), except QUIC
 *                long-header packets, which it ignores: to a browser, a silent drop, as a
 *                firewall's
 *   UDP  :53     a DNS server for tests: `A` questions get 10.11.12.13, others NXDOMAIN
 *   TCP  :53     the same over TCP (one query per connection)
 *
 * Usage: deno run -A tests/origin_server.ts HOST   (prints "ready" when listening)
 * @module
 */
import { createHash } from "node:crypto";

const host = Deno.args[0] ?? "127.0.0.1";

Deno.serve({ hostname: host, port: 8080, onListen() {} }, async (req) => {
  const url = new URL(req.url);
  if (url.pathname === "/upload") {
    const h = createHash("sha256");
    let bytes = 0;
    for await (const chunk of req.body ?? new ReadableStream()) {
      h.update(chunk);
      bytes += chunk.byteLength;
    }
    return Response.json({ bytes, sha256: h.digest("hex") });
  }
  if (url.pathname === "/ws") {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(e.data);
    return response;
  }
  return new Response(`origin ${url.pathname}\n`);
});

// A server that breaks off a response: raw TCP so the cut is exact.
const cut = Deno.listen({ hostname: host, port: 8081 });
(async () => {
  for await (const conn of cut) {
    (async () => {
      const buf = new Uint8Array(4096);
      await conn.read(buf);
      const head = "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n";
      await conn.write(new TextEncoder().encode(head + "x".repeat(1000)));
      conn.close();
    })().catch(() => {});
  }
})();

// A server that answers before it has read the request body.
const early = Deno.listen({ hostname: host, port: 8082 });
(async () => {
  for await (const conn of early) {
    (async () => {
      const buf = new Uint8Array(65536);
      let head = "";
      while (!head.includes("\r\n\r\n")) {
        const n = await conn.read(buf);
        if (n === null) return;
        head += new TextDecoder().decode(buf.subarray(0, n));
      }
      await conn.write(new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nearly\n"));
      while ((await conn.read(buf)) !== null) { /* dropped */ }
      conn.close();
    })().catch(() => {});
  }
})();

const echo = Deno.listen({ hostname: host, port: 7 });
(async () => {
  for await (const conn of echo) {
    (async () => {
      const buf = new Uint8Array(65536);
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        for (let off = 0; off < n;) off += await conn.write(buf.subarray(off, n));
      }
      conn.close();
    })().catch(() => {});
  }
})();

for (const port of [7, 443]) {
  const udp = Deno.listenDatagram({ hostname: host, port, transport: "udp" });
  (async () => {
    for (;;) {
      const [data, from] = await udp.receive();
      // A QUIC long header (Initial, Handshake...) starts with the two high bits set.
      if (port === 443 && data.byteLength > 0 && (data[0]! & 0xc0) === 0xc0) continue;
      await udp.send(data, from);
    }
  })();
}

// DNS over TCP: each message has a two-byte length in front.
const dnsTcp = Deno.listen({ hostname: host, port: 53 });
(async () => {
  for await (const conn of dnsTcp) {
    (async () => {
      const buf = new Uint8Array(4096);
      let got = 0;
      while (got < 2 || got < 2 + ((buf[0]! << 8) | buf[1]!)) {
        const n = await conn.read(buf.subarray(got));
        if (n === null) return;
        got += n;
      }
      const answer = dnsAnswer(buf.subarray(2, 2 + ((buf[0]! << 8) | buf[1]!)));
      if (answer) {
        await conn.write(concat(new Uint8Array([answer.byteLength >> 8, answer.byteLength & 255]), answer));
      }
      conn.close();
    })().catch(() => {});
  }
})();

const dns = Deno.listenDatagram({ hostname: host, port: 53, transport: "udp" });
(async () => {
  for (;;) {
    const [query, from] = await dns.receive();
    const answer = dnsAnswer(query);
    if (answer) await dns.send(answer, from);
  }
})();

/** Answers the single question of `query`: an A record for A questions, NXDOMAIN otherwise. */
function dnsAnswer(query: Uint8Array): Uint8Array | null {
  if (query.byteLength < 12) return null;
  let off = 12;
  while (off < query.byteLength && query[off] !== 0) off += query[off]! + 1;
  const questionEnd = off + 5;
  if (questionEnd > query.byteLength) return null;
  const type = (query[off + 1]! << 8) | query[off + 2]!;
  const header = query.slice(0, 12);
  header[2] = 0x81; // response, recursion desired
  header[3] = type === 1 ? 0x80 : 0x83; // recursion available; NXDOMAIN unless A
  header[6] = 0, header[7] = type === 1 ? 1 : 0; // answers
  header[8] =
    header[9] =
    header[10] =
    header[11] =
      0;
  const question = query.slice(12, questionEnd);
  if (type !== 1) return concat(header, question);
  const record = new Uint8Array([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 11, 12, 13]);
  return concat(header, question, record);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let off = 0;
  for (const p of parts) out.set(p, (off += p.byteLength) - p.byteLength);
  return out;
}

console.log("ready");
