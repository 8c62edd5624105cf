// A Node HTTP/2 client making an RFC 8441 extended CONNECT (`:protocol websocket`) through the
// explicit proxy, for tests/h2_websocket_test.ts: CONNECT PROXY_HOST:PORT to TARGET, then h2c with
// prior knowledge in the tunnel; waits for the peer's SETTINGS_ENABLE_CONNECT_PROTOCOL, sends
// MESSAGES messages one at a time and reads each echo. Prints one JSON line.
//
// Usage: node client.mjs PROXY_PORT TARGET(host:port) MESSAGES
import http2 from "node:http2";
import net from "node:net";

const [proxyPort, target, count] = [Number(process.argv[2]), process.argv[3], Number(process.argv[4])];
const fail = (why) => {
  console.log(JSON.stringify({ ok: false, error: String(why) }));
  process.exit(1);
};
setTimeout(() => fail("timed out"), 15000).unref();

const socket = net.connect(proxyPort, "127.0.0.1", () => {
  socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
});
let head = "";
const onHead = (chunk) => {
  head += chunk.toString("latin1");
  if (!head.includes("\r\n\r\n")) return;
  socket.off("data", onHead);
  if (!head.startsWith("HTTP/1.1 200")) fail(head);
  start();
};
socket.on("data", onHead);
socket.on("error", fail);

function start() {
  const session = http2.connect(`http://${target}`, { createConnection: () => socket });
  session.on("error", fail);
  let settingsSeen = 0;
  session.on("remoteSettings", (settings) => {
    settingsSeen++;
    if (!settings.enableConnectProtocol) return;
    session.removeAllListeners("remoteSettings");
    const stream = session.request({
      ":method": "CONNECT",
      ":protocol": "websocket",
      ":scheme": "http",
      ":authority": target,
      ":path": "/chat",
      "sec-websocket-version": "13",
      "sec-websocket-protocol": "chat",
    });
    stream.on("error", fail);
    let status = 0;
    stream.on("response", (h) => status = h[":status"]);
    const echoes = [];
    let buffered = "";
    let i = 0;
    const next = () => {
      if (i === count) {
        stream.end();
        return;
      }
      stream.write(`message ${i++}`);
    };
    stream.on("data", (chunk) => {
      buffered += chunk.toString();
      const expected = `echo:message ${echoes.length}`;
      if (buffered === expected) {
        echoes.push(buffered);
        buffered = "";
        next();
      }
    });
    stream.on("end", () => {
      console.log(JSON.stringify({ ok: true, status, echoes, settingsSeen }));
      session.close();
    });
    next();
  });
}
