import assert from "node:assert/strict";
import { writeIp } from "../net/ip.ts";
import {
  BlockedDestinationError,
  canonicalLiteral,
  DestinationPolicy,
  localAddressKind,
} from "./destination_policy.ts";

function kind(ip: string): string | null {
  const b = new Uint8Array(16);
  writeIp(ip, b);
  return localAddressKind(b);
}

Deno.test("localAddressKind() names this host's ranges and leaves others alone", () => {
  for (
    const [ip, pattern] of [
      ["127.0.0.1", /loopback/],
      ["127.255.0.9", /loopback/],
      ["::1", /loopback/],
      ["::ffff:127.0.0.1", /loopback/],
      ["0.0.0.0", /unspecified/],
      ["0.1.2.3", /unspecified/],
      ["::", /unspecified/],
      ["169.254.169.254", /link-local.*metadata/],
      ["fe80::1", /link-local/],
      ["febf::1", /link-local/],
      ["224.0.0.251", /multicast/],
      ["ff02::fb", /multicast/],
      ["255.255.255.255", /broadcast/],
    ] as const
  ) {
    assert.match(kind(ip) ?? "allowed", pattern, ip);
  }
  for (
    const ip of ["8.8.8.8", "10.0.0.1", "192.168.1.1", "172.31.224.2", "100.64.0.1", "2001:db8::1", "fd00::1"]
  ) {
    assert.equal(kind(ip), null, ip);
  }
});

Deno.test("canonicalLiteral() takes usual addresses only: other forms are for the resolver", () => {
  assert.equal(canonicalLiteral("10.1.2.3"), "10.1.2.3");
  assert.equal(canonicalLiteral("[::1]"), "::1");
  assert.equal(canonicalLiteral("0:0:0:0:0:0:0:1"), "::1");
  assert.equal(canonicalLiteral("::FFFF:127.0.0.1"), "127.0.0.1");
  // inet_aton reads these as 127.0.0.1: they must be resolved, not taken at face value.
  for (const text of ["127.1", "0177.0.0.1", "2130706433", "0x7f.0.0.1", "localhost", "256.0.0.1"]) {
    assert.equal(canonicalLiteral(text), null, text);
  }
});

Deno.test("DestinationPolicy refuses this host's destinations, resolving names first", async () => {
  const names: Record<string, string[]> = {
    "localhost": ["::1", "127.0.0.1"],
    "mixed.test": ["127.0.0.1", "203.0.113.7"],
    "self.test": ["198.51.100.4"],
    "far.test": ["203.0.113.9"],
  };
  const policy = new DestinationPolicy({
    allowLocal: false,
    ownAddresses: () => ["198.51.100.4", "fe80::1%eth0"],
    resolve: (name) => Promise.resolve(names[name] ?? []),
    exempt: [{ hostname: "127.0.0.53", port: 53 }],
    hint: "use --allow-local-destinations",
  });
  const refused = async (host: string, port: number, pattern: RegExp) => {
    await assert.rejects(policy.resolve({ hostname: host, port }), (e: unknown) => {
      assert.ok(e instanceof BlockedDestinationError, String(e));
      assert.match(e.message, pattern);
      assert.match(e.message, /--allow-local-destinations/);
      return true;
    });
  };
  await refused("127.0.0.1", 22, /destination 127\.0\.0\.1:22 refused: a loopback address/);
  await refused("[::1]", 80, /loopback/);
  await refused("localhost", 22, /destination localhost:22 \(::1\) refused: a loopback address/);
  await refused("169.254.169.254", 80, /link-local/);
  await refused("198.51.100.4", 8080, /an address of this host/);
  await refused("self.test", 8080, /self\.test:8080 \(198\.51\.100\.4\) refused: an address of this host/);
  await refused("127.0.0.53", 5353, /loopback/);
  assert.equal(policy.blocked, 7);

  // A name with an allowed address is dialed there only; the resolvers stay reachable.
  assert.deepEqual(await policy.resolve({ hostname: "mixed.test", port: 443 }), [
    { hostname: "203.0.113.7", port: 443 },
  ]);
  assert.deepEqual(await policy.resolve({ hostname: "far.test.", port: 443 }), [
    { hostname: "203.0.113.9", port: 443 },
  ]);
  assert.deepEqual(await policy.resolve({ hostname: "127.0.0.53", port: 53 }), [
    { hostname: "127.0.0.53", port: 53 },
  ]);
  assert.equal(policy.blockReason("127.0.0.53", 53), null);
  assert.match(policy.blockReason("fe80::1", 53) ?? "", /link-local/);
  await assert.rejects(policy.resolve({ hostname: "nowhere.test", port: 1 }), /cannot resolve nowhere\.test/);
  assert.equal(policy.blocked, 7, "only refusals are counted");
});

Deno.test("DestinationPolicy with allowLocal lets everything through untouched", async () => {
  const policy = new DestinationPolicy({
    allowLocal: true,
    resolve: () => Promise.reject(new Error("no lookups when everything is allowed")),
  });
  assert.deepEqual(await policy.resolve({ hostname: "localhost", port: 22 }), [{
    hostname: "localhost",
    port: 22,
  }]);
  assert.equal(policy.blockReason("127.0.0.1"), null);
  assert.equal(policy.blocked, 0);
});

Deno.test("DestinationPolicy reads the host's own addresses from its interfaces", async () => {
  const own = Deno.networkInterfaces().map((i) => i.address).find((a) =>
    !a.startsWith("127.") && a !== "::1"
  );
  if (!own) return; // A host with loopback only: nothing more to check.
  const policy = new DestinationPolicy({ allowLocal: false });
  assert.match(policy.blockReason(own) ?? "", /this host|link-local/);
  await assert.rejects(policy.resolve({ hostname: own, port: 9 }), BlockedDestinationError);
  // The real resolver: localhost is this host.
  await assert.rejects(policy.resolve({ hostname: "localhost", port: 9 }), /loopback/);
});

Deno.test("DestinationPolicy.protect() refuses the web UI's address even with allowLocal", async () => {
  const policy = new DestinationPolicy({
    allowLocal: true,
    ownAddresses: () => ["10.9.8.7"],
    resolve: (name) => Promise.resolve(name === "localhost" ? ["127.0.0.1", "::1"] : ["10.9.8.7"]),
  });
  const lift = policy.protect({ hostname: "127.0.0.1", port: 8081 });
  for (const hostname of ["127.0.0.1", "[::1]", "0.0.0.0", "localhost", "10.9.8.7", "me.example"]) {
    await assert.rejects(
      policy.resolve({ hostname, port: 8081 }),
      (e: Error) => e instanceof BlockedDestinationError && /web UI/.test(e.message),
      hostname,
    );
  }
  // Other ports and other hosts stay as allowLocal leaves them.
  assert.deepEqual(await policy.resolve({ hostname: "localhost", port: 8082 }), [
    { hostname: "localhost", port: 8082 },
  ]);
  assert.equal(policy.blockReason("93.184.216.34", 8081), null);
  lift();
  assert.deepEqual(await policy.resolve({ hostname: "127.0.0.1", port: 8081 }), [
    { hostname: "127.0.0.1", port: 8081 },
  ]);
});
