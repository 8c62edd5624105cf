import assert from "node:assert/strict";
import { listenWireGuard } from "../net/wireguard_listener.ts";
import { clientPeers, loadWireGuardState } from "../cli/wireguard_conf.ts";
import { WireGuardAdmin, wireGuardApi } from "./wireguard_admin.ts";
import type { WireGuardPageJson, WireGuardPeerJson } from "./api_types.ts";

Deno.test("WireGuard admin: add writes the key and a 0600 config and enables the peer; disable, enable, remove", async () => {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-wg-admin-" });
  const stateFile = `${dir}/wireguard.json`;
  const state = await loadWireGuardState(stateFile, 1);
  const first = clientPeers(state, 1)[0]!;
  const listener = listenWireGuard({
    hostname: "127.0.0.1",
    port: 0,
    privateKey: state.serverPrivateKey,
    peers: [{ publicKey: first.publicKey, allowedIps: [`${first.address4}/32`] }],
    socketIo: "worker",
    onLog: () => {},
  });
  try {
    const admin = await WireGuardAdmin.open({
      listener,
      confdir: dir,
      stateFile,
      endpoint: "192.168.7.1:51820",
      peers: 1,
    });
    const call = async <T>(method: string, path: string, body?: unknown): Promise<[number, T]> => {
      const r = await wireGuardApi(
        new Request(`http://ui${path}`, { method, ...(body ? { body: JSON.stringify(body) } : {}) }),
        new URL(`http://ui${path}`),
        admin,
      );
      return [
        r.status,
        (r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text()) as T,
      ];
    };
    const [, page] = await call<WireGuardPageJson>("GET", "/api/wireguard");
    assert.equal(page.publicKey, listener.publicKey);
    assert.equal(page.endpoint, "192.168.7.1:51820");
    assert.deepEqual(page.peers.map((p) => [p.index, p.name, p.enabled, p.online]), [[
      1,
      "peer 1",
      true,
      false,
    ]]);

    const [status, added] = await call<WireGuardPeerJson>("POST", "/api/wireguard/peers", { name: "laptop" });
    assert.equal(status, 200);
    assert.equal(added.index, 2);
    assert.equal(added.name, "laptop");
    assert.match(added.addresses[0]!, /^10\.0\.0\.3\/32$/);
    const file = `${dir}/wireguard-client-2.conf`;
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
    const [, config] = await call<string>("GET", "/api/wireguard/peers/2/config");
    assert.equal(config, await Deno.readTextFile(file));
    assert.match(config, /PrivateKey = \S+\nAddress = 10\.0\.0\.3\/32, fd[0-9a-f:]+::3\/128/);
    const [, svg] = await call<string>("GET", "/api/wireguard/peers/2/qr.svg");
    assert.match(svg, /^<svg /);
    // The key is in the state file (kept across restarts) and the peer is in the listener.
    const reread = await loadWireGuardState(stateFile, 1);
    assert.equal(reread.clientPrivateKeys.length, 2);
    const key2 = clientPeers(reread, 2)[1]!.publicKey;
    assert.equal(added.publicKey, key2);
    const inListener = () => listener.peerStates().some((p) => p.publicKey === key2);
    assert.ok(inListener());

    assert.equal((await call("POST", "/api/wireguard/peers/2", { enabled: false }))[0], 200);
    assert.ok(!inListener());
    assert.equal((await call<WireGuardPageJson>("GET", "/api/wireguard"))[1].peers[1]!.enabled, false);
    assert.equal((await call("POST", "/api/wireguard/peers/2", { enabled: true }))[0], 200);
    assert.ok(inListener());
    assert.equal((await call("DELETE", "/api/wireguard/peers/2"))[0], 200);
    assert.ok(!inListener());
    await assert.rejects(Deno.stat(file), Deno.errors.NotFound);
    assert.equal((await call("GET", "/api/wireguard/peers/2/config"))[0], 404);
    assert.equal((await call("DELETE", "/api/wireguard/peers/2"))[0], 404);
    // Bad input: a clear answer, nothing changed.
    assert.equal((await call("POST", "/api/wireguard/peers/1", { enabled: "no" }))[0], 400);
    assert.equal((await call("POST", "/api/wireguard/peers", { name: 7 }))[0], 400);
    assert.equal((await call("GET", "/api/wireguard/peers/99/qr.svg"))[0], 404);
    assert.equal((await call("PUT", "/api/wireguard"))[0], 405);
    // The next one gets the next number (2's key stays in the state file).
    const [, third] = await call<WireGuardPeerJson>("POST", "/api/wireguard/peers", {});
    assert.equal(third.index, 3);
    assert.equal(third.name, "peer 3");
    // Without a WireGuard mode: 404 with a reason.
    const none = await wireGuardApi(
      new Request("http://ui/api/wireguard"),
      new URL("http://ui/api/wireguard"),
      undefined,
    );
    assert.equal(none.status, 404);
    assert.match((await none.json()).error, /no WireGuard mode/);
  } finally {
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
});
