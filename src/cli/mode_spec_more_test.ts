import assert from "node:assert/strict";
import { formatModeSpec, parseModeSpec } from "./mode_spec.ts";

Deno.test("parseModeSpec() reads reverse modes: scheme, server, default ports, listen address", () => {
  assert.deepEqual(parseModeSpec("reverse:https://example.com"), {
    kind: "reverse",
    scheme: "https",
    target: { hostname: "example.com", port: 443 },
    host: "",
    port: 8080,
  });
  assert.deepEqual(parseModeSpec("reverse:http://10.1.2.3@127.0.0.1:9000"), {
    kind: "reverse",
    scheme: "http",
    target: { hostname: "10.1.2.3", port: 80 },
    host: "127.0.0.1",
    port: 9000,
  });
  assert.deepEqual(parseModeSpec("reverse:tls://[::1]:8443/@[::1]:0"), {
    kind: "reverse",
    scheme: "tls",
    target: { hostname: "::1", port: 8443 },
    host: "::1",
    port: 0,
  });
  assert.throws(() => parseModeSpec("reverse"), /reverse mode needs a URL/);
  assert.throws(() => parseModeSpec("reverse:tcp://host"), /a tcp:\/\/ server needs a port/);
  assert.throws(() => parseModeSpec("reverse:ftp://host:21"), /unknown scheme "ftp"/);
  assert.throws(() => parseModeSpec("reverse:udp://host:53"), /over UDP \("udp"\) is not supported/);
  assert.deepEqual(parseModeSpec("reverse:dns://10.0.0.53@5353"), {
    kind: "reverse",
    scheme: "dns",
    target: { hostname: "10.0.0.53", port: 53 },
    host: "",
    port: 5353,
  });
  assert.throws(() => parseModeSpec("reverse:http://host:70000"), /not a port/);
  assert.throws(() => parseModeSpec("reverse:http://ho st"), /is not SCHEME:\/\/HOST\[:PORT\]/);
});

Deno.test("parseModeSpec() reads upstream and tun modes", () => {
  assert.deepEqual(parseModeSpec("upstream:http://proxy.corp:3128"), {
    kind: "upstream",
    proxy: "http://proxy.corp:3128",
    host: "",
    port: 8080,
  });
  assert.deepEqual(parseModeSpec("upstream:http://[::1]:3128@8081"), {
    kind: "upstream",
    proxy: "http://[::1]:3128",
    host: "",
    port: 8081,
  });
  assert.throws(() => parseModeSpec("upstream:http://proxy"), /needs a port/);
  assert.deepEqual(parseModeSpec("upstream:https://proxy:3128"), {
    kind: "upstream",
    proxy: "https://proxy:3128",
    host: "",
    port: 8080,
  });
  assert.throws(() => parseModeSpec("upstream:socks5://proxy:1080"), /must be http\(s\):/);
  assert.deepEqual(parseModeSpec("tun"), { kind: "tun", name: "wirescope0", host: "", port: 0 });
  assert.deepEqual(parseModeSpec("tun:ws1"), { kind: "tun", name: "ws1", host: "", port: 0 });
  assert.throws(() => parseModeSpec("tun@8080"), /takes no listen address/);
  assert.throws(() => parseModeSpec("tun:a/b"), /not an interface name/);
  assert.throws(() => parseModeSpec("tun:sixteen-chars-xx"), /not an interface name/);
});

Deno.test("formatModeSpec() writes reverse, upstream and tun modes back as the same mode", () => {
  for (
    const text of [
      "reverse:https://example.com:443",
      "reverse:http://[::1]:8081@127.0.0.1:9000",
      "reverse:tcp://10.0.0.1:22@2222",
      "upstream:http://proxy:3128",
      "upstream:http://proxy:3128@[::1]:8081",
      "tun",
      "tun:ws1",
    ]
  ) {
    assert.equal(formatModeSpec(parseModeSpec(text)), text);
  }
});
