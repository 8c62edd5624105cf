import assert from "node:assert/strict";
import type { HttpFlow } from "../flows/flow.ts";
import { replayDestination, ReplayError, replayRequestBytes } from "./client_replay.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function recorded(
  fields: Partial<HttpFlow["request"]> = {},
  server = { hostname: "10.9.0.1", port: 443 },
): HttpFlow {
  const body = fields.body ?? { content: new Uint8Array(0), size: 0, truncated: false };
  return {
    id: "orig",
    type: "http",
    client: { address: { hostname: "10.0.0.2", port: 1 }, mode: "wireguard" },
    server: { address: server },
    timestampStart: 0,
    request: {
      method: "GET",
      scheme: "https",
      host: "example.test",
      port: 443,
      path: "/a?b=1",
      url: "https://example.test/a?b=1",
      httpVersion: "HTTP/1.1",
      headers: [["Host", "example.test"], ["Accept", "*/*"], ["Connection", "keep-alive"]],
      timestampStart: 0,
      ...fields,
      body,
    },
  };
}

Deno.test("client replay request: headers as recorded, framing and connection made anew", () => {
  assert.equal(
    dec.decode(replayRequestBytes(recorded())),
    "GET /a?b=1 HTTP/1.1\r\nHost: example.test\r\nAccept: */*\r\nconnection: close\r\n\r\n",
  );
  const content = enc.encode("k=v");
  const post = recorded({
    method: "POST",
    headers: [["Host", "example.test"], ["Transfer-Encoding", "chunked"], ["X-Test", "1"]],
    body: { content, size: 3, truncated: false },
  });
  assert.equal(
    dec.decode(replayRequestBytes(post)),
    "POST /a?b=1 HTTP/1.1\r\nHost: example.test\r\nX-Test: 1\r\ncontent-length: 3\r\nconnection: close\r\n\r\nk=v",
  );
});

Deno.test("client replay request: an HTTP/2 flow becomes HTTP/1.1 with a Host from :authority", () => {
  const h2 = recorded({
    httpVersion: "HTTP/2.0",
    port: 8443,
    headers: [[":method", "GET"], [":authority", "example.test:8443"], [":path", "/a?b=1"], [
      "accept",
      "*/*",
    ]],
  });
  assert.equal(
    dec.decode(replayRequestBytes(h2)),
    "GET /a?b=1 HTTP/1.1\r\nhost: example.test:8443\r\naccept: */*\r\nconnection: close\r\n\r\n",
  );
  // Without :authority the Host comes from the URL's host and port.
  const bare = recorded({ port: 8443, headers: [["accept", "*/*"]] });
  assert.match(dec.decode(replayRequestBytes(bare)), /\r\nhost: example\.test:8443\r\n/);
});

Deno.test("client replay request: a body kept in part and CONNECT are refused", () => {
  const partial = recorded({
    method: "PUT",
    body: { content: enc.encode("abc"), size: 10, truncated: true },
  });
  assert.throws(
    () => replayRequestBytes(partial),
    (e: unknown) => e instanceof ReplayError && /3 of its 10/.test(e.message),
  );
  assert.throws(() => replayRequestBytes(recorded({ method: "CONNECT" })), ReplayError);
});

Deno.test("client replay destination: where the original went, else the URL's host and port", () => {
  assert.deepEqual(replayDestination(recorded()), { hostname: "10.9.0.1", port: 443 });
  assert.deepEqual(replayDestination(recorded({}, { hostname: "", port: 0 })), {
    hostname: "example.test",
    port: 443,
  });
});
