import assert from "node:assert/strict";
import { generatePrivateKey, publicKeyOf } from "../core/keys.ts";
import { listenWireGuard } from "./wireguard_listener.ts";

Deno.test("listenWireGuard() binds synchronously, reports its address and fails clearly on a taken port", async () => {
  const listener = listenWireGuard({ hostname: "127.0.0.1", port: 0, privateKey: generatePrivateKey() });
  try {
    assert.equal(listener.addr.transport, "udp");
    assert.ok(listener.addr.port > 0);
    await listener.ready;
    assert.throws(
      () =>
        listenWireGuard({
          hostname: "127.0.0.1",
          port: listener.addr.port,
          privateKey: generatePrivateKey(),
        }),
      Deno.errors.AddrInUse,
    );
  } finally {
    listener.close();
    await listener.closed;
  }
});

Deno.test("listenWireGuard() rejects malformed keys before opening anything", () => {
  assert.throws(() => listenWireGuard({ port: 0, privateKey: "not a key" }), SyntaxError);
  assert.throws(
    () => listenWireGuard({ port: 0, privateKey: generatePrivateKey(), peers: [{ publicKey: "nope" }] }),
    SyntaxError,
  );
});

Deno.test("WireGuardListener adds and removes peers at run time and refuses duplicates", async () => {
  const listener = listenWireGuard({ hostname: "127.0.0.1", port: 0, privateKey: generatePrivateKey() });
  try {
    const key = publicKeyOf(generatePrivateKey());
    listener.addPeer({ publicKey: key });
    assert.throws(() => listener.addPeer({ publicKey: key }), /already a peer/);
    assert.equal(listener.stats().peers.length, 1);
    assert.equal(listener.removePeer(key), true);
    assert.equal(listener.removePeer(key), false);
    assert.equal(listener.stats().peers.length, 0);
  } finally {
    listener.close();
    await listener.closed;
  }
});

Deno.test("WireGuardListener takes allowed IPs per peer and reports its limits in stats()", async () => {
  const listener = listenWireGuard({
    hostname: "127.0.0.1",
    port: 0,
    privateKey: generatePrivateKey(),
    peers: [{ publicKey: publicKeyOf(generatePrivateKey()), allowedIps: ["10.0.0.2/32", "fd00::2/128"] }],
    maxConnectionsPerPeer: 10,
    maxHalfOpenPerPeer: 5,
    bufferBudget: 1 << 20,
  });
  try {
    const other = publicKeyOf(generatePrivateKey());
    assert.throws(() => listener.addPeer({ publicKey: other, allowedIps: ["10.0.0.2"] }), /another peer/);
    assert.throws(() => listener.addPeer({ publicKey: other, allowedIps: ["10.0.0.0/40"] }), SyntaxError);
    listener.addPeer({ publicKey: other, allowedIps: ["10.0.1.0/24"] });
    const s = listener.stats();
    assert.deepEqual(s.peers.map((p) => p.allowedIps), [["10.0.0.2/32", "fd00::2/128"], ["10.0.1.0/24"]]);
    for (
      const k of ["refusedPeerLimit", "refusedHalfOpen", "refusedMemory", "halfOpenTimeouts", "udpRefused"]
    ) {
      assert.equal(s[k as keyof typeof s], 0, k);
    }
    assert.equal(s.drops.sourceNotAllowed, 0);
  } finally {
    listener.close();
    await listener.closed;
  }
});

Deno.test("WireGuardListener.close() leaves nothing that keeps the process alive", async () => {
  // A child process that opens a listener with a peer, waits until it is ready, closes it and
  // then simply runs out of work: it must exit by itself.
  const script = `
    import { listenWireGuard, generatePrivateKey, publicKeyOf } from ${
    JSON.stringify(new URL("../../mod.ts", import.meta.url).href)
  };
    const l = listenWireGuard({ hostname: "127.0.0.1", port: 0, privateKey: generatePrivateKey(),
      peers: [{ publicKey: publicKeyOf(generatePrivateKey()), keepalive: 1 }] });
    await l.ready;
    const accepting = (async () => { for await (const _ of l) {} })();
    l.close();
    await l.closed;
    await accepting;
    console.log("closed");
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--unstable-net", script],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  const out = await child.output();
  clearTimeout(timer);
  assert.equal(new TextDecoder().decode(out.stdout).trim(), "closed", new TextDecoder().decode(out.stderr));
  assert.equal(out.code, 0, "exited by itself, not killed");
});
