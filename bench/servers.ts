/**
 * The servers the bench measures, started in the server namespace with one shape: a
 * WireGuard endpoint on a UDP port whose process can be asked for its resource use.
 *
 * - `wirescope`: this checkout's CLI, `--mode wireguard` (or bench/wirescope_server.ts, the same
 *   proxy through the library, when asked).
 * - `mitmproxy12`: `mitmdump --mode wireguard` of mitmproxy 12 (the newest; it needs Python >= 3.12), in
 *   the Debian trixie root of scripts/setup_mitmproxy12.sh, with chroot (bench/mitmproxy_server.ts).
 * - `mitmproxy`: `mitmdump --mode wireguard` of mitmproxy 11.0.2 (the newest for Debian 12's Python
 *   3.11) from .venv-mitmproxy.
 * - `wireguard-go`: a plain WireGuard server and kernel routing to the origins, no interception.
 * @module
 */
import { sh } from "../tests/rig.ts";
import { startMitmproxy, TRIXIE_ROOT, udpBound } from "./mitmproxy_server.ts";
import { type ProcessUsage, processUsage } from "./usage.ts";
import { spawnWatched, startInNamespace } from "./watched_process.ts";

/** The names of the servers, in the order the bench runs them. */
export const SERVER_NAMES = ["wirescope", "mitmproxy12", "mitmproxy", "wireguard-go"] as const;
export type ServerName = typeof SERVER_NAMES[number];

/** A running server. */
export interface BenchServer {
  name: ServerName;
  /** The process measured (its pid is the server's own, not a wrapper's). */
  pid: number;
  /** The CA a client trusts for HTTPS through this server (the proxy's, or the origin's). */
  clientCaFile: string;
  /** Whether HTTPS is intercepted (the proxies) or reaches the origin untouched (wireguard-go). */
  intercepts: boolean;
  usage(): ProcessUsage;
  /** The last lines the server printed, for error messages. */
  output(): string[];
  /** Stops it (SIGTERM, then SIGKILL after 10 s); idempotent. */
  stop(): Promise<void>;
}

/** What every server gets. */
export interface ServerSetup {
  ns: string;
  port: number;
  serverPrivateKey: string;
  clientPrivateKey: string;
  clientPublicKey: string;
  /** The origin CA, trusted upstream by the proxies. */
  originCaFile: string;
  /** A directory of its own for the server's files. */
  dir: string;
  /** The tunnel address of the client, routed back through wireguard-go. */
  clientTunnelAddress: string;
  /** For wirescope: run bench/wirescope_server.ts (the library) instead of the CLI. */
  wirescopeLibrary?: boolean;
  /** For wirescope: deno flags such as --cpu-prof. */
  denoFlags?: string[];
}

const root = new URL("..", import.meta.url).pathname;

/** Spawns `cmd` in `ns`, draining its output into a tail; the process is `cmd` itself (ip execs). */
function spawnServer(ns: string, cmd: string[], env: Record<string, string> = {}) {
  return spawnWatched(["ip", "netns", "exec", ns, ...cmd], { cwd: root, env, tailLines: 100 });
}

async function waitFor(what: string, ok: () => Promise<boolean>, ms: number, died: () => boolean) {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (died()) throw new Error(`${what}: the process exited`);
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function startWirescope(s: ServerSetup): Promise<BenchServer> {
  const confdir = `${s.dir}/wirescope`;
  await Deno.mkdir(confdir, { recursive: true });
  // The CLI's keys file: with the bench's keys written beforehand, the client needs no new config.
  await Deno.writeTextFile(
    `${confdir}/wireguard.json`,
    JSON.stringify({
      serverPrivateKey: s.serverPrivateKey,
      clientPrivateKeys: [s.clientPrivateKey],
      ulaPrefix: "fd77:6273:6265:6e63",
    }),
    { mode: 0o600 },
  );
  const program = s.wirescopeLibrary ? ["bench/wirescope_server.ts"] : ["mod.ts"];
  const proc = spawnServer(s.ns, [
    Deno.execPath(),
    "run",
    "-A",
    ...(s.denoFlags ?? []),
    ...program,
    "--mode",
    `wireguard@${s.port}`,
    "--confdir",
    confdir,
    "--upstream-ca",
    s.originCaFile,
    // The origins listen on the server namespace's loopback (an address of its host).
    "--allow-local-destinations",
    "-q",
    // Extra CLI flags for a comparison run, e.g. WIRESCOPE_BENCH_ARGS=--no-store.
    ...(Deno.env.get("WIRESCOPE_BENCH_ARGS")?.split(" ").filter((a) => a !== "") ?? []),
  ]);
  try {
    await waitFor(
      `wirescope binding UDP ${s.port}`,
      () => udpBound(proc.child.pid, s.port),
      120_000,
      proc.exited,
    );
  } catch (e) {
    await proc.stop();
    throw new Error(`${(e as Error).message}; its output:\n${proc.tail.slice(-20).join("\n")}`);
  }
  return {
    name: "wirescope",
    pid: proc.child.pid,
    clientCaFile: `${confdir}/wirescope-ca-cert.pem`,
    intercepts: true,
    usage: () => processUsage(proc.child.pid),
    output: () => [...proc.tail],
    stop: proc.stop,
  };
}

async function startMitmdump(s: ServerSetup, name: "mitmproxy" | "mitmproxy12"): Promise<BenchServer> {
  const m = await startMitmproxy({
    ...(name === "mitmproxy12" ? { root: TRIXIE_ROOT } : {}),
    listenHost: "",
    port: s.port,
    confdir: `${s.dir}/mitmproxy`,
    upstreamCaFile: s.originCaFile,
    serverPrivateKey: s.serverPrivateKey,
    clientPrivateKey: s.clientPrivateKey,
    netns: s.ns,
    readyTimeoutMs: 60_000,
  });
  return {
    name,
    pid: m.pid,
    clientCaFile: m.caCertFile,
    intercepts: true,
    usage: m.usage,
    output: m.output,
    stop: m.stop,
  };
}

async function startWireguardGo(s: ServerSetup): Promise<BenchServer> {
  const dev = "wsbsw0";
  await sh(["ip", "netns", "exec", s.ns, "ip", "link", "del", dev]).catch(() => {});
  // -f: stay in the foreground, so the process spawned is the one measured.
  const proc = spawnServer(s.ns, ["wireguard-go", "-f", dev], {
    WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: "1",
  });
  const inNs = (cmd: string[]) => sh(["ip", "netns", "exec", s.ns, ...cmd]);
  try {
    await waitFor(
      `wireguard-go creating ${dev}`,
      () => inNs(["ip", "link", "show", dev]).then(() => true, () => false),
      20_000,
      proc.exited,
    );
    const keyFile = `${s.dir}/wireguard-go.key`;
    await Deno.writeTextFile(keyFile, s.serverPrivateKey + "\n", { mode: 0o600 });
    await inNs(["wg", "set", dev, "private-key", keyFile, "listen-port", String(s.port)]
      .concat(["peer", s.clientPublicKey, "allowed-ips", `${s.clientTunnelAddress}/32`]));
    await inNs(["ip", "link", "set", dev, "mtu", "1420", "up"]);
    // No address needed: the target is local on `lo`; only the way back to the client is.
    await inNs(["ip", "route", "add", `${s.clientTunnelAddress}/32`, "dev", dev]);
    await waitFor(
      `wireguard-go binding UDP ${s.port}`,
      () => udpBound(proc.child.pid, s.port),
      20_000,
      proc.exited,
    );
  } catch (e) {
    await proc.stop();
    throw new Error(`${(e as Error).message}; its output:\n${proc.tail.slice(-20).join("\n")}`);
  }
  return {
    name: "wireguard-go",
    pid: proc.child.pid,
    clientCaFile: s.originCaFile,
    intercepts: false,
    usage: () => processUsage(proc.child.pid),
    output: () => [...proc.tail],
    stop: async () => {
      await proc.stop();
      await inNs(["ip", "link", "del", dev]).catch(() => {});
    },
  };
}

/** Starts server `name` and resolves once its UDP port is bound. */
export async function startServer(name: ServerName, setup: ServerSetup): Promise<BenchServer> {
  await Deno.mkdir(setup.dir, { recursive: true });
  switch (name) {
    case "wirescope":
      return startWirescope(setup);
    case "mitmproxy":
    case "mitmproxy12":
      return startMitmdump(setup, name);
    case "wireguard-go":
      return startWireguardGo(setup);
  }
}

/**
 * The data plane's ceiling of `bench:dataplane` and `bench:faults`: tests/origin.ts's workloads in
 * a process of their own in `setup.ns`, with wireguard-go serving the tunnel in front of them
 * (kernel routing). Runs `body` with the wireguard-go server, then stops both, also on errors.
 */
export async function withWireguardGoCeiling(
  setup: Omit<ServerSetup, "originCaFile">,
  body: (wg: BenchServer) => Promise<void>,
): Promise<void> {
  const origin = await startInNamespace(
    setup.ns,
    "tests/origin.ts",
    [Deno.execPath(), "run", "-A", "tests/origin.ts"],
    (p) => p.tail.includes("origin ready"),
    root,
  );
  try {
    const wg = await startServer("wireguard-go", { ...setup, originCaFile: "" });
    try {
      await body(wg);
    } finally {
      await wg.stop();
    }
  } finally {
    await origin.stop();
  }
}
