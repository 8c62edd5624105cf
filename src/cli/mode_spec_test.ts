import assert from "node:assert/strict";
import { formatModeSpec, type ModeSpec, parseModeSpec } from "./mode_spec.ts";

Deno.test("parseModeSpec() fills in the default ports and hosts", () => {
  assert.deepEqual(parseModeSpec("wireguard"), { kind: "wireguard", host: "", port: 51820 });
  assert.deepEqual(parseModeSpec("regular"), { kind: "regular", host: "", port: 8080 });
});

Deno.test("parseModeSpec() reads a port, a host and a port, or a bracketed IPv6 host", () => {
  assert.deepEqual(parseModeSpec("wireguard@51821"), { kind: "wireguard", host: "", port: 51821 });
  assert.deepEqual(parseModeSpec("regular@127.0.0.1:8081"), {
    kind: "regular",
    host: "127.0.0.1",
    port: 8081,
  });
  assert.deepEqual(parseModeSpec("regular@localhost:0"), { kind: "regular", host: "localhost", port: 0 });
  assert.deepEqual(parseModeSpec("wireguard@[::1]:51820"), { kind: "wireguard", host: "::1", port: 51820 });
  assert.deepEqual(parseModeSpec("wireguard@[fe80::1%eth0]:65535"), {
    kind: "wireguard",
    host: "fe80::1%eth0",
    port: 65535,
  });
});

Deno.test("parseModeSpec() reads the WireGuard key file, which may hold ':' and '@'", () => {
  assert.deepEqual(parseModeSpec("wireguard:keys.json"), {
    kind: "wireguard",
    keyFile: "keys.json",
    host: "",
    port: 51820,
  });
  assert.deepEqual(parseModeSpec("wireguard:C:\\wg\\me@home.json@10.0.0.1:51821"), {
    kind: "wireguard",
    keyFile: "C:\\wg\\me@home.json",
    host: "10.0.0.1",
    port: 51821,
  });
});

Deno.test("parseModeSpec() rejects unknown modes and lists the supported ones", () => {
  for (const spec of ["socks4", "transparent", "WireGuard", "", "@8080"]) {
    assert.throws(() => parseModeSpec(spec), (e: unknown) => {
      assert(e instanceof TypeError);
      assert.match(e.message, /supported: "regular", "wireguard"/);
      assert(e.message.includes(`"${spec}"`), e.message);
      return true;
    });
  }
});

Deno.test("parseModeSpec() rejects data on the regular mode and an empty key file", () => {
  assert.throws(
    () => parseModeSpec("regular:x"),
    /Cannot parse mode "regular:x": the regular mode takes no data/,
  );
  assert.throws(() => parseModeSpec("wireguard:"), /empty key file name/);
  assert.throws(() => parseModeSpec("wireguard:@51820"), /empty key file name/);
});

Deno.test("parseModeSpec() rejects bad ports and listen addresses with one line naming the spec", () => {
  const cases: [string, RegExp][] = [
    ["wireguard@", /no port after "@"/],
    ["wireguard@65536", /"65536" is not a port/],
    ["wireguard@-1", /"-1" is not a port/],
    ["regular@http", /"http" is not a port/],
    ["regular@1.2.3.4:", /"" is not a port/],
    ["regular@1.2.3.4:80x", /"80x" is not a port/],
    ["regular@:8080", /"" is not a host name/],
    ["regular@a b:8080", /"a b" is not a host name/],
    ["regular@::1:8080", /put the IPv6 address in brackets/],
    ["regular@[::1", /missing "]"/],
    ["regular@[::1]", /expected ":PORT"/],
    ["regular@[::1]8080", /expected ":PORT"/],
    ["regular@[example.com]:80", /not an IPv6 address/],
  ];
  for (const [spec, reason] of cases) {
    assert.throws(() => parseModeSpec(spec), (e: unknown) => {
      assert(e instanceof TypeError);
      assert.match(e.message, reason);
      assert(e.message.startsWith(`Cannot parse mode "${spec}": `), e.message);
      assert(!e.message.includes("\n"));
      return true;
    });
  }
});

Deno.test("formatModeSpec() leaves out defaults and brackets IPv6 hosts", () => {
  assert.equal(formatModeSpec({ kind: "wireguard", host: "", port: 51820 }), "wireguard");
  assert.equal(formatModeSpec({ kind: "regular", host: "", port: 8080 }), "regular");
  assert.equal(formatModeSpec({ kind: "regular", host: "", port: 0 }), "regular@0");
  assert.equal(formatModeSpec({ kind: "regular", host: "::1", port: 8080 }), "regular@[::1]:8080");
  assert.equal(
    formatModeSpec({ kind: "wireguard", keyFile: "k.json", host: "10.0.0.1", port: 1 }),
    "wireguard:k.json@10.0.0.1:1",
  );
});

Deno.test("formatModeSpec() output parses back to the same mode", () => {
  const specs: ModeSpec[] = [
    { kind: "wireguard", host: "", port: 51820 },
    { kind: "wireguard", keyFile: "a@b.json", host: "", port: 51820 },
    { kind: "wireguard", keyFile: "x:y", host: "fe80::1%eth0", port: 0 },
    { kind: "regular", host: "example.com", port: 8080 },
    { kind: "regular", host: "", port: 3128 },
  ];
  for (const spec of specs) assert.deepEqual(parseModeSpec(formatModeSpec(spec)), spec);
});

Deno.test("parseModeSpec() reads socks5 and dns modes with mitmproxy's default ports", () => {
  assert.deepEqual(parseModeSpec("socks5"), { kind: "socks5", host: "", port: 1080 });
  assert.deepEqual(parseModeSpec("socks5@1081"), { kind: "socks5", host: "", port: 1081 });
  assert.deepEqual(parseModeSpec("socks5@127.0.0.1:1080"), { kind: "socks5", host: "127.0.0.1", port: 1080 });
  assert.deepEqual(parseModeSpec("dns"), { kind: "dns", host: "", port: 53 });
  assert.deepEqual(parseModeSpec("dns@5353"), { kind: "dns", host: "", port: 5353 });
  assert.deepEqual(parseModeSpec("dns@[::1]:5353"), { kind: "dns", host: "::1", port: 5353 });
  assert.throws(() => parseModeSpec("socks5:x@1080"), /the socks5 mode takes no data after ":"/);
  assert.throws(() => parseModeSpec("dns:x"), /the dns mode takes no data/);
  for (const text of ["socks5", "socks5@1081", "dns@127.0.0.1:5353", "dns"]) {
    assert.equal(formatModeSpec(parseModeSpec(text)), text);
  }
});
