// An HTTPS h2 origin for tests/h2_reset_e2e_test.ts, run with Node (/usr/bin/node) in the origin
// namespace: /reset answers 200, sends 30,000 bytes, then resets the stream (INTERNAL_ERROR);
// /slow/N sends N chunks of 1,000 bytes 20 ms apart (so it spans the reset); /item/N answers
// "item N". Prints "ready" once listening; stopped by a signal.
//
// Usage: node resetter.mjs ADDRESS PORT CERT KEY
import http2 from "node:http2";
import fs from "node:fs";

const [address, port, cert, key] = process.argv.slice(2);
const server = http2.createSecureServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) });
server.on("stream", (stream, headers) => {
  stream.on("error", () => {});
  const path = String(headers[":path"]);
  if (path === "/reset") {
    stream.respond({ ":status": 200, "content-length": "100000" });
    stream.write(Buffer.alloc(30_000, 0x61));
    // destroy(error) resets with INTERNAL_ERROR at once (close() would first end the body).
    setTimeout(() => stream.destroy(new Error("reset mid-body")), 100);
  } else if (path.startsWith("/slow/")) {
    const n = Number(path.slice(6));
    stream.respond({ ":status": 200, "content-length": String(n * 1000) });
    let i = 0;
    const tick = setInterval(() => {
      if (stream.destroyed) return clearInterval(tick);
      stream.write(Buffer.alloc(1000, 0x62));
      if (++i === n) {
        clearInterval(tick);
        stream.end();
      }
    }, 20);
  } else if (path.startsWith("/item/")) {
    stream.respond({ ":status": 200 });
    stream.end(`item ${path.slice(6)}`);
  } else {
    stream.respond({ ":status": 404 });
    stream.end();
  }
});
server.listen(Number(port), address, () => console.log("ready"));
