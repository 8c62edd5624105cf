// An h2c origin that offers extended CONNECT (RFC 8441) and echoes each tunnel's bytes back with
// "echo:" before them, for tests/h2_websocket_test.ts. Run with Node (/usr/bin/node); prints its
// port on the first line of stdout.
import http2 from "node:http2";

const server = http2.createServer({ settings: { enableConnectProtocol: true } });
server.on("stream", (stream, headers) => {
  stream.on("error", () => {});
  if (headers[":method"] !== "CONNECT" || headers[":protocol"] !== "websocket") {
    stream.respond({ ":status": 404 });
    stream.end();
    return;
  }
  stream.respond({ ":status": 200, "sec-websocket-protocol": headers["sec-websocket-protocol"] ?? "" });
  stream.on("data", (chunk) => stream.write(Buffer.concat([Buffer.from("echo:"), chunk])));
  stream.on("end", () => stream.end());
});
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
process.stdin.on("end", () => process.exit(0)); // the test closes stdin to stop it
process.stdin.resume();
