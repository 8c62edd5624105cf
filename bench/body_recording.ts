/**
 * The cost of recording a request body that arrives in tiny pieces: a 3 MB POST in chunked
 * coding with 1-byte chunks, sent to a loopback origin directly and through wirescope's explicit
 * mode, while a second client asks for a small page every 50 ms through the proxy (its slowest
 * answer shows whether the upload held up the event loop for other connections).
 *
 *     deno run -A bench/body_recording.ts [--size 3000000] [--chunk 1]
 *
 * Prints one line per run: `direct`, `proxied`, and the slowest concurrent GET.
 * @module
 */
import { parseArgs } from "node:util";
import { startProxy } from "../src/proxy/proxy.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { size: { type: "string", default: "3000000" }, chunk: { type: "string", default: "1" } },
});
const size = Number(values.size);
const chunk = Number(values.chunk);
const encoder = new TextEncoder();

// A raw origin, cheap enough not to be what is measured: it reads a head, then (for a chunked
// body) until the last chunk, and answers with the number of bytes it read after the head.
const origin = Deno.listen({ hostname: "127.0.0.1", port: 0 });
(async () => {
  for await (const conn of origin) {
    (async () => {
      const buf = new Uint8Array(65536);
      let head = "";
      let after = 0;
      let tail = "";
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        const text = new TextDecoder("latin1").decode(buf.subarray(0, n));
        if (!head.includes("\r\n\r\n")) {
          head += text;
          const end = head.indexOf("\r\n\r\n");
          if (end < 0) continue;
          after = head.length - end - 4;
          tail = head.slice(-8);
          head = head.slice(0, end + 4);
        } else {
          after += n;
          tail = (tail + text).slice(-8);
        }
        if (!/chunked/i.test(head) || tail.endsWith("\r\n0\r\n\r\n")) break;
      }
      const body = `${after}\n`;
      await conn.write(
        encoder.encode(
          `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
        ),
      );
      conn.close();
    })().catch(() => {});
  }
})();
const originPort = (origin.addr as Deno.NetAddr).port;

/** The chunked body, built once: `<hex>\r\n` + payload + `\r\n` per chunk, then the last chunk. */
function chunkedBody(): Uint8Array {
  const parts: string[] = [];
  const payload = "x".repeat(chunk);
  const line = `${chunk.toString(16)}\r\n${payload}\r\n`;
  for (let sent = 0; sent < size; sent += chunk) parts.push(line);
  parts.push("0\r\n\r\n");
  return encoder.encode(parts.join(""));
}
const body = chunkedBody();

/** Sends the POST to `port` (with an absolute URL when `proxied`) and waits for the answer. */
async function upload(port: number, proxied: boolean): Promise<{ seconds: number; answer: string }> {
  const start = performance.now();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const target = proxied ? `http://127.0.0.1:${originPort}/upload` : "/upload";
  const head = `POST ${target} HTTP/1.1\r\nHost: 127.0.0.1:${originPort}\r\n` +
    "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
  const reading = (async () => {
    const decoder = new TextDecoder();
    const buf = new Uint8Array(65536);
    let text = "";
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += decoder.decode(buf.subarray(0, n), { stream: true });
    }
    return text;
  })();
  await conn.write(encoder.encode(head));
  for (let off = 0; off < body.byteLength; off += 65536) {
    const piece = body.subarray(off, off + 65536);
    let done = 0;
    while (done < piece.byteLength) done += await conn.write(piece.subarray(done));
  }
  const answer = await reading;
  conn.close();
  return { seconds: (performance.now() - start) / 1000, answer: answer.split("\r\n\r\n")[1] ?? "" };
}

const direct = await upload(originPort, false);
console.log(`direct:  ${direct.seconds.toFixed(2)} s (origin read ${direct.answer.trim()} body bytes)`);

const proxy = await startProxy({
  modes: [{ kind: "regular", port: 0 }],
  confdir: await Deno.makeTempDir({ prefix: "wirescope-bench-" }),
  // The origin listens on loopback.
  allowLocalDestinations: true,
  onLog() {},
});
const proxyPort = proxy.addresses[0]!.addr.port;
let slowest = 0;
let probes = 0;
let probing = true;
const prober = (async () => {
  while (probing) {
    const t = performance.now();
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
    await conn.write(encoder.encode(
      `GET http://127.0.0.1:${originPort}/probe HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
    ));
    const buf = new Uint8Array(4096);
    while ((await conn.read(buf)) !== null) { /* until the proxy closes */ }
    conn.close();
    slowest = Math.max(slowest, performance.now() - t);
    probes++;
    await new Promise((r) => setTimeout(r, 50));
  }
})();
const proxied = await upload(proxyPort, true);
probing = false;
await prober;
console.log(`proxied: ${proxied.seconds.toFixed(2)} s (origin read ${proxied.answer.trim()} body bytes)`);
console.log(`slowest of ${probes} concurrent GETs through the proxy: ${slowest.toFixed(0)} ms`);
await proxy.close(100);
origin.close();
