/**
 * The end-to-end rig: network namespaces with a real WireGuard client (wireguard-go +
 * wireguard-tools) whose default routes go through the tunnel to a server on this host.
 *
 * Each client namespace gets a veth pair to the host on its own /30 from 172.31.240.0/20 (only
 * addresses this rig creates are ever used), an interface from wireguard-go with the tunnel addresses
 * `10.0.0.<n+1>/32` and `fd77:7769:7265::<n+1>/128`, and default routes (v4 and v6) through it. Everything is removed by `close()`, and leftovers of a crashed run are removed by the
 * next one. Needs root.
 * @module
 */
import { generatePrivateKey, publicKeyOf } from "../mod.ts";

const decoder = new TextDecoder();

/** Runs a command; throws with its stderr when it fails. */
export async function sh(cmd: string[], opts: { input?: string; allowFail?: boolean } = {}): Promise<string> {
  const child = new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    stdin: opts.input === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.input !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.input));
    await w.close();
  }
  const out = await child.output();
  if (!out.success && !opts.allowFail) {
    throw new Error(`${cmd.join(" ")} failed (${out.code}): ${decoder.decode(out.stderr).trim()}`);
  }
  return decoder.decode(out.stdout);
}

/** One client namespace. */
export interface RigClient {
  /** Namespace name. */
  ns: string;
  /** Its WireGuard interface. */
  wg: string;
  /** The client's private and public key. */
  privateKey: string;
  publicKey: string;
  /** Tunnel addresses. */
  address4: string;
  address6: string;
  /** Runs a command inside the namespace. */
  exec(cmd: string[], opts?: { input?: string; allowFail?: boolean }): Promise<string>;
  /** Spawns a long-running command inside the namespace. */
  spawn(cmd: string[]): Deno.ChildProcess;
}

const SLOT_DIR = "/tmp/wirescope-rig-slots";

/**
 * Reserves one of `count` slots of `kind` across every process on the machine (test files run
 * in parallel processes, and two rigs must never share names or addresses): a slot is a
 * directory made atomically, holding the owner's pid; slots of dead processes are taken over.
 */
export function reserveSlot(kind: string, count: number): { slot: number; release(): void } {
  Deno.mkdirSync(SLOT_DIR, { recursive: true });
  const start = Math.floor(Math.random() * count);
  for (let i = 0; i < count * 2; i++) {
    const slot = (start + i) % count;
    const path = `${SLOT_DIR}/${kind}-${slot}`;
    try {
      Deno.mkdirSync(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      let owner = 0;
      try {
        owner = Number(Deno.readTextFileSync(`${path}/pid`));
      } catch { /* being written right now, or left half-made */ }
      let alive = owner > 0;
      try {
        if (alive) Deno.statSync(`/proc/${owner}`);
      } catch {
        alive = false;
      }
      if (alive || owner === 0) continue;
      Deno.removeSync(path, { recursive: true });
      continue; // Another process may race for it; try it again on the next lap.
    }
    Deno.writeTextFileSync(`${path}/pid`, String(Deno.pid));
    return { slot, release: () => Deno.removeSync(path, { recursive: true }) };
  }
  throw new Error(`no free ${kind} slot in ${SLOT_DIR}`);
}

/** A set of client namespaces pointed at a WireGuard server on the host. */
export class Rig {
  clients: RigClient[] = [];
  /** The host's address on the veth of client 0, where the server is reached. */
  hostAddress = "";
  #prefix: string;
  #base: number;

  #release: () => void;

  private constructor(prefix: string, base: number, release: () => void) {
    this.#prefix = prefix;
    this.#base = base;
    this.#release = release;
  }

  /**
   * Creates `count` client namespaces whose WireGuard peer is `serverPublicKey` at
   * `<host veth address>:serverPort`.
   */
  static async create(
    count: number,
    serverPublicKey: string,
    serverPort: number,
    onKey: (publicKey: string) => void = () => {},
  ): Promise<Rig> {
    const { slot, release } = reserveSlot("rig", 200);
    const rig = new Rig(`ws${slot}`, slot * 16, release);
    await Rig.cleanupStale(rig.#prefix);
    try {
      for (let i = 0; i < count; i++) {
        rig.clients.push(await rig.#addClient(i, serverPublicKey, serverPort, onKey));
      }
    } catch (e) {
      await rig.close();
      throw e;
    }
    return rig;
  }

  /**
   * Creates client namespaces whose WireGuard interfaces are set up from wg-quick configuration
   * texts, as wg-quick does: the file minus `Address`/`DNS` goes to `wg setconf`, the addresses
   * are added, and default routes go through the tunnel. `configs` receives the host's veth
   * address of each client (where the server is reached) and returns one config per client.
   */
  static async fromConfigs(
    count: number,
    configs: (hostAddresses: string[]) => Promise<string[]>,
  ): Promise<Rig> {
    const { slot, release } = reserveSlot("rig", 200);
    const rig = new Rig(`ws${slot}`, slot * 16, release);
    await Rig.cleanupStale(rig.#prefix);
    try {
      const spaces = [];
      for (let i = 0; i < count; i++) spaces.push(await rig.#addNamespace(i));
      const texts = await configs(spaces.map((s) => s.hostAddr));
      for (let i = 0; i < count; i++) rig.clients.push(await rig.#importConfig(i, texts[i]!));
    } catch (e) {
      await rig.close();
      throw e;
    }
    return rig;
  }

  async #importConfig(i: number, text: string): Promise<RigClient> {
    const ns = `${this.#prefix}c${i}`;
    const wg = `${this.#prefix}w${i}`;
    const exec = (cmd: string[], opts?: { input?: string; allowFail?: boolean }) =>
      sh(["ip", "netns", "exec", ns, ...cmd], opts);
    const field = (name: string) => new RegExp(`^\\s*${name}\\s*=\\s*(.+)$`, "mi").exec(text)?.[1]?.trim();
    const addresses = (field("Address") ?? "").split(",").map((a) => a.trim()).filter(Boolean);
    const privateKey = field("PrivateKey")!;
    // wg-quick's own `strip` gives what `wg setconf` takes; it wants a file named like an interface.
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${dir}/wsimport.conf`, text);
      const stripped = await sh(["wg-quick", "strip", `${dir}/wsimport.conf`]);
      await Deno.writeTextFile(`${dir}/stripped.conf`, stripped);
      await exec(["env", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "wireguard-go", wg]);
      await exec(["wg", "setconf", wg, `${dir}/stripped.conf`]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    const address4 = addresses.find((a) => !a.includes(":"))?.split("/")[0] ?? "";
    const address6 = addresses.find((a) => a.includes(":"))?.split("/")[0] ?? "";
    return await finishClient(ns, wg, privateKey, address4, address6);
  }

  /** The namespace of client `i` and its veth to the host, without WireGuard. */
  async #addNamespace(i: number): Promise<{ ns: string; hostAddr: string }> {
    const ns = `${this.#prefix}c${i}`;
    const hostIf = `${this.#prefix}h${i}`;
    // 172.31.240.0/20 split into /30s: this rig's slot and client index pick one.
    const n = this.#base + i * 4;
    const a = (k: number) => `172.31.${240 + ((n + k) >> 8)}.${(n + k) & 255}`;
    const hostAddr = a(1), nsAddr = a(2);
    if (i === 0) this.hostAddress = hostAddr;
    await sh(["ip", "netns", "add", ns]);
    await sh(["ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    await sh(["ip", "addr", "add", `${hostAddr}/30`, "dev", hostIf]);
    await sh(["ip", "link", "set", hostIf, "up"]);
    const exec = (cmd: string[]) => sh(["ip", "netns", "exec", ns, ...cmd]);
    await exec(["ip", "addr", "add", `${nsAddr}/30`, "dev", "eth0"]);
    await exec(["ip", "link", "set", "eth0", "up"]);
    await exec(["ip", "link", "set", "lo", "up"]);
    return { ns, hostAddr };
  }

  static async cleanupStale(prefix: string): Promise<void> {
    const list = await sh(["ip", "netns", "list"]);
    for (const line of list.split("\n")) {
      const name = line.split(" ")[0];
      if (name && name.startsWith(`${prefix}c`)) await sh(["ip", "netns", "del", name], { allowFail: true });
    }
    const links = await sh(["ip", "-o", "link", "show"]);
    for (const m of links.matchAll(/^\d+: ([^:@]+)/gm)) {
      if (m[1]!.startsWith(`${prefix}h`)) await sh(["ip", "link", "del", m[1]!], { allowFail: true });
    }
  }

  async #addClient(
    i: number,
    serverPublicKey: string,
    serverPort: number,
    onKey: (publicKey: string) => void,
  ): Promise<RigClient> {
    const { ns, hostAddr } = await this.#addNamespace(i);
    // wireguard-go's control socket is /var/run/wireguard/<name>.sock, shared by all namespaces,
    // so every client's interface needs a name of its own.
    const wg = `${this.#prefix}w${i}`;
    const exec = (cmd: string[], opts?: { input?: string; allowFail?: boolean }) =>
      sh(["ip", "netns", "exec", ns, ...cmd], opts);

    const privateKey = generatePrivateKey();
    // The server learns the key before the interface comes up (and sends its first packets).
    onKey(publicKeyOf(privateKey));
    const address4 = `10.0.0.${i + 2}`;
    const address6 = `fd77:7769:7265::${i + 2}`;
    // wireguard-go daemonizes itself; its TUN device lives in the namespace.
    // (It refuses to run where it believes the kernel module is available; the rig wants it.)
    await exec(["env", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "wireguard-go", wg]);
    const keyFile = await Deno.makeTempFile();
    await Deno.writeTextFile(keyFile, privateKey + "\n");
    try {
      await exec([
        "wg",
        "set",
        wg,
        "private-key",
        keyFile,
        "peer",
        serverPublicKey,
        "endpoint",
        `${hostAddr}:${serverPort}`,
        "allowed-ips",
        "0.0.0.0/0,::/0",
      ]);
    } finally {
      await Deno.remove(keyFile);
    }
    return await finishClient(ns, wg, privateKey, address4, address6);
  }

  /** Removes the namespaces (which ends their wireguard-go) and the veths. */
  async close(): Promise<void> {
    for (const c of this.clients) {
      // Deleting the namespace leaves wireguard-go running on a dead TUN: end it first.
      await c.exec(["ip", "link", "del", c.wg], { allowFail: true });
    }
    await Rig.cleanupStale(this.#prefix);
    this.clients = [];
    try {
      this.#release();
    } catch { /* released already */ }
  }
}

/**
 * The last steps shared by both ways of making a client: the tunnel addresses, MTU, and default
 * routes (v4 and v6) through the WireGuard interface.
 */
async function finishClient(
  ns: string,
  wg: string,
  privateKey: string,
  address4: string,
  address6: string,
): Promise<RigClient> {
  const exec = (cmd: string[], opts?: { input?: string; allowFail?: boolean }) =>
    sh(["ip", "netns", "exec", ns, ...cmd], opts);
  if (address4) await exec(["ip", "addr", "add", `${address4}/32`, "dev", wg]);
  if (address6) await exec(["ip", "-6", "addr", "add", `${address6}/128`, "dev", wg, "nodad"]);
  await exec(["ip", "link", "set", wg, "mtu", "1420", "up"]);
  await exec(["ip", "route", "add", "default", "dev", wg]);
  await exec(["ip", "-6", "route", "add", "default", "dev", wg]);
  return {
    ns,
    wg,
    privateKey,
    publicKey: publicKeyOf(privateKey),
    address4,
    address6,
    exec,
    spawn: (cmd) =>
      new Deno.Command("ip", { args: ["netns", "exec", ns, ...cmd], stdout: "piped", stderr: "piped" })
        .spawn(),
  };
}

const NS_CLIENT = new URL("./ns_client.ts", import.meta.url).pathname;

/** Runs tests/ns_client.ts inside a client's namespace (bounded) and returns its JSON result. */
export async function nsClient(
  client: RigClient,
  args: string[],
  seconds = 60,
): Promise<Record<string, unknown>> {
  // No update check: from inside the namespace it would go through the tunnel to a host the
  // rig does not have (the origin's DNS answers every name), and show up as an error flow.
  const out = await client.exec([
    "env",
    "DENO_NO_UPDATE_CHECK=1",
    "timeout",
    String(seconds),
    Deno.execPath(),
    "run",
    "-A",
    "--quiet",
    NS_CLIENT,
    ...args,
  ]);
  return JSON.parse(out.trim().split("\n").pop()!);
}
