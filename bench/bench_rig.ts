/**
 * The benches' namespace rig: a server namespace and a client namespace joined by a veth pair on
 * a /30, the tunnel's target on the server namespace's loopback (where the origins listen), and
 * one wireguard-go client whose every route goes through its tunnel. Between servers only the
 * client's peer changes ({@link BenchRig.pointClientAt}).
 * @module
 */
import { sh } from "../tests/rig.ts";

/** Names and addresses of one rig (each bench has its own, so they never collide). */
export interface BenchRigNames {
  serverNs: string;
  clientNs: string;
  /** The veth ends in the server and the client namespace. */
  serverVeth: string;
  clientVeth: string;
  /** Their addresses (a /30). */
  serverAddr: string;
  clientAddr: string;
  /** The client's WireGuard interface and its tunnel address. */
  clientWg: string;
  clientTunnel: string;
  /** The address the client's traffic is for, local in the server namespace. */
  target: string;
}

/** The wireguard-go server's interface (bench/servers.ts), removed with the rig. */
const SERVER_WG = "wsbsw0";

/** One rig. */
export class BenchRig {
  constructor(readonly names: BenchRigNames) {}

  /** Runs a command in one of the rig's namespaces. */
  inNs(ns: string, cmd: string[], opts?: { allowFail?: boolean }): Promise<string> {
    return sh(["ip", "netns", "exec", ns, ...cmd], opts);
  }

  /** Removes whatever an earlier run left (idempotent). */
  async remove(): Promise<void> {
    const n = this.names;
    await this.inNs(n.clientNs, ["ip", "link", "del", n.clientWg], { allowFail: true });
    await this.inNs(n.serverNs, ["ip", "link", "del", SERVER_WG], { allowFail: true });
    for (const ns of [n.serverNs, n.clientNs]) await sh(["ip", "netns", "del", ns], { allowFail: true });
  }

  /** Makes the namespaces, the link, the target and the client (with no peer yet). */
  async create(clientKeyFile: string): Promise<void> {
    const n = this.names;
    await sh(["ip", "netns", "add", n.serverNs]);
    await sh(["ip", "netns", "add", n.clientNs]);
    await sh(["ip", "link", "add", n.serverVeth, "netns", n.serverNs, "type", "veth", "peer", "name"]
      .concat([n.clientVeth, "netns", n.clientNs]));
    await this.inNs(n.serverNs, ["ip", "addr", "add", `${n.serverAddr}/30`, "dev", n.serverVeth]);
    await this.inNs(n.clientNs, ["ip", "addr", "add", `${n.clientAddr}/30`, "dev", n.clientVeth]);
    for (const [ns, dev] of [[n.serverNs, n.serverVeth], [n.clientNs, n.clientVeth]] as const) {
      await this.inNs(ns, ["ip", "link", "set", dev, "up"]);
      await this.inNs(ns, ["ip", "link", "set", "lo", "up"]);
    }
    // The target is local in the server namespace: the origins listen there.
    await this.inNs(n.serverNs, ["ip", "addr", "add", `${n.target}/32`, "dev", "lo"]);
    // The client: wireguard-go, everything through the tunnel.
    const wg = n.clientWg;
    await this.inNs(n.clientNs, [
      "env",
      "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1",
      "wireguard-go",
      wg,
    ]);
    await this.inNs(n.clientNs, ["wg", "set", wg, "private-key", clientKeyFile]);
    await this.inNs(n.clientNs, ["ip", "addr", "add", `${n.clientTunnel}/32`, "dev", wg]);
    await this.inNs(n.clientNs, ["ip", "link", "set", wg, "mtu", "1420", "up"]);
  }

  /**
   * Points the client's one peer at a server's endpoint. The peer is removed and added again: a
   * kept peer holds the previous server's session, and the next server (same keys) ignores it
   * until the client's handshake times out (about 20 s).
   */
  async pointClientAt(serverPublicKey: string, port: number): Promise<void> {
    const n = this.names;
    await this.inNs(n.clientNs, ["wg", "set", n.clientWg, "peer", serverPublicKey, "remove"]);
    await this.inNs(
      n.clientNs,
      ["wg", "set", n.clientWg, "peer", serverPublicKey, "endpoint", `${n.serverAddr}:${port}`]
        .concat(["allowed-ips", "0.0.0.0/0", "persistent-keepalive", "25"]),
    );
    await this.inNs(n.clientNs, ["ip", "route", "replace", "default", "dev", n.clientWg]);
  }
}
