/**
 * mitmproxy's WireGuard mode (`mitmdump --mode wireguard`) as a benchmark server, from the
 * virtualenv that scripts/setup_mitmproxy.sh makes (.venv-mitmproxy/, mitmproxy 11.0.2), or with
 * `root`, mitmproxy 12 from the Debian trixie root of scripts/setup_mitmproxy12.sh.
 *
 * mitmdump terminates the tunnel in userspace (mitmproxy_rs: boringtun + smoltcp), accepts TCP and
 * UDP to any destination address, and opens its own sockets to that address, through the routing
 * of the network namespace it runs in: the origins must be reachable from there (for the bench, an
 * origin process in the server namespace with the tunnel's target address on `lo`). Everything it
 * carries goes through its Python proxy core (protocol detection, then raw TCP, HTTP or TLS
 * interception with its own CA).
 *
 * Its keys are read from `<confdir>/wireguard.conf`, JSON `{"server_key", "client_key"}`: both
 * *private* keys (mitmproxy derives the one peer's public key from the client's private key, to
 * print a ready-made client config). This module writes that file beforehand, so keys are known.
 *
 * As a module: {@link startMitmproxy} (bench/servers.ts uses it for `deno task bench`). As a
 * program (prints "ready", answers each stdin line with a JSON line `{rss, peakRss, cpuSeconds}`
 * of the mitmdump process, stops it and exits when stdin closes):
 *
 *   deno run -A bench/mitmproxy_server.ts PORT SERVER_PRIVATE_KEY CLIENT_PRIVATE_KEY
 *     [--confdir DIR] [--upstream-ca FILE] [--discard-tcp-messages]
 *
 * Note the third argument: the client's private key, where wirescope_server.ts takes its public key.
 * @module
 */
import { sh } from "../tests/rig.ts";
import { type ProcessUsage, processUsage } from "./usage.ts";
import { spawnWatched } from "./watched_process.ts";

const root = new URL("..", import.meta.url).pathname;

/** The mitmdump of the virtualenv that scripts/setup_mitmproxy.sh installs. */
export const MITMDUMP = `${root}.venv-mitmproxy/bin/mitmdump`;

/**
 * The Debian trixie root that scripts/setup_mitmproxy12.sh makes (mitmproxy 12 needs Python >= 3.12),
 * and the virtualenv inside it (a path in the root).
 */
export const TRIXIE_ROOT = Deno.env.get("WIRESCOPE_TRIXIE_ROOT") ?? "/var/cache/wirescope/trixie";
export const MITMPROXY12_VENV = "/opt/mitmproxy";
/** Where the confdir is mounted inside the root while mitmdump runs there. */
const CONFDIR_IN_ROOT = "/run/wirescope-confdir";

/** The tunnel address mitmproxy's own client config gives the client (any address works). */
export const MITMPROXY_CLIENT_ADDRESS = "10.0.0.1/32";

export interface MitmproxyOptions {
  /** Address to bind the WireGuard UDP socket to; "" or "0.0.0.0" for all IPv4 addresses. */
  listenHost: string;
  /** UDP port of the WireGuard endpoint. */
  port: number;
  /** mitmproxy's confdir: created if missing; wireguard.conf is (over)written, the CA kept. */
  confdir: string;
  /** A PEM CA that mitmproxy trusts for upstream TLS (besides the system's, which it then drops). */
  upstreamCaFile?: string;
  /** The server's private key; a new one (`wg genkey`) when absent. */
  serverPrivateKey?: string;
  /** The (one) client's private key; a new one when absent. */
  clientPrivateKey?: string;
  /** Run mitmdump inside this network namespace (`ip netns exec`). */
  netns?: string;
  /**
   * Drop each raw-TCP message once it is forwarded. Stock mitmproxy keeps every chunk of a raw
   * TCP flow in `flow.messages` until the connection ends (a 400 MiB transfer: 400 MiB+ of RSS);
   * this loads a two-line addon that keeps only the latest. Default false: stock behaviour.
   */
  discardTcpMessages?: boolean;
  /**
   * Run the mitmdump of this root's {@link MITMPROXY12_VENV} (mitmproxy 12, TRIXIE_ROOT) with
   * chroot, instead of .venv-mitmproxy's. /proc, /dev and /sys and the confdir are mounted into the
   * root in a mount namespace of mitmdump's own (they go away with it); the upstream CA is copied
   * into the confdir; the environment is clean (env -i) but for PATH, HOME and PYTHONUNBUFFERED.
   */
  root?: string;
  /** More mitmdump arguments. */
  extraArgs?: string[];
  /** How long to wait for the UDP socket (ms, default 30 000: the first start makes a CA). */
  readyTimeoutMs?: number;
}

export interface MitmproxyServer {
  /** Base64 WireGuard keys: the peer the client configures, and the client's own private key. */
  serverPublicKey: string;
  clientPrivateKey: string;
  clientPublicKey: string;
  /** The client tunnel address mitmproxy suggests ("10.0.0.1/32"); it does not enforce it. */
  clientAddress: string;
  /** mitmproxy's CA certificate (PEM), for clients to trust intercepted TLS, and its file. */
  caCertPem: string;
  caCertFile: string;
  /** The mitmdump process. */
  pid: number;
  /** The last lines mitmdump printed (stdout and stderr), for diagnostics. */
  output(): string[];
  /** Its resident memory in KiB. */
  rssKiB(): Promise<number>;
  /** Its RSS and peak RSS in bytes and CPU seconds (user + system), as bench/usage.ts reports them. */
  usage(): ProcessUsage;
  /** SIGTERM, then SIGKILL after 10 s; resolves when the process is gone. Idempotent. */
  stop(): Promise<void>;
}

async function wgKey(input?: string): Promise<string> {
  return input === undefined
    ? (await sh(["wg", "genkey"])).trim()
    : (await sh(["wg", "pubkey"], { input: input + "\n" })).trim();
}

/** Whether process `pid` itself holds a UDP socket bound to `port` (in its network namespace). */
export async function udpBound(pid: number, port: number): Promise<boolean> {
  const suffix = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  const inodes = new Set<string>();
  for (const file of ["udp", "udp6"]) {
    try {
      const table = await Deno.readTextFile(`/proc/${pid}/net/${file}`);
      // Columns: sl local_address(ADDR:PORT in hex) rem_address st ... uid timeout inode.
      for (const line of table.split("\n").slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f[1]?.endsWith(suffix) && f[9]) inodes.add(f[9]);
      }
    } catch { /* not there (yet) */ }
  }
  if (inodes.size === 0) return false;
  // Another process may hold the port (then mitmdump fails): only mitmdump's own socket counts.
  try {
    for await (const fd of Deno.readDir(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(await Deno.readLink(`/proc/${pid}/fd/${fd.name}`));
        if (m && inodes.has(m[1]!)) return true;
      } catch { /* closed meanwhile */ }
    }
  } catch { /* process gone */ }
  return false;
}

const ADDON = `# Written by bench/mitmproxy_server.ts: forget raw TCP chunks once they are forwarded.
def tcp_message(flow):
    del flow.messages[:-1]
`;

/** The command that runs the root's mitmdump with `args` (see {@link MitmproxyOptions.root}). */
function chrooted(rootDir: string, confdir: string, args: string[]): string[] {
  const script = 'r=$1; c=$2; shift 2; mkdir -p "$r/proc" "$r/dev" "$r/sys" "$r' + CONFDIR_IN_ROOT + '" && ' +
    'mount --bind /proc "$r/proc" && mount --rbind /dev "$r/dev" && mount --bind /sys "$r/sys" && ' +
    'mount --bind "$c" "$r' + CONFDIR_IN_ROOT + '" && exec chroot "$r" "$@"';
  return [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    script,
    "mitmdump12",
    rootDir,
    confdir,
    "env",
    "-i",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
    "PYTHONUNBUFFERED=1",
    `${MITMPROXY12_VENV}/bin/mitmdump`,
    ...args,
  ];
}

/** Starts `mitmdump --mode wireguard` and resolves once its UDP socket is bound. */
export async function startMitmproxy(opts: MitmproxyOptions): Promise<MitmproxyServer> {
  const serverPrivateKey = opts.serverPrivateKey ?? await wgKey();
  const clientPrivateKey = opts.clientPrivateKey ?? await wgKey();
  const serverPublicKey = await wgKey(serverPrivateKey);
  const clientPublicKey = await wgKey(clientPrivateKey);
  await Deno.mkdir(opts.confdir, { recursive: true });
  await Deno.writeTextFile(
    `${opts.confdir}/wireguard.conf`,
    JSON.stringify({ server_key: serverPrivateKey, client_key: clientPrivateKey }, null, 4),
    { mode: 0o600 },
  );
  const host = opts.listenHost === "0.0.0.0" ? "" : opts.listenHost;
  // Inside a root, mitmdump sees the confdir at CONFDIR_IN_ROOT, and the upstream CA in it.
  const confdir = opts.root ? CONFDIR_IN_ROOT : opts.confdir;
  let upstreamCaFile = opts.upstreamCaFile;
  if (opts.root && upstreamCaFile) {
    await Deno.copyFile(upstreamCaFile, `${opts.confdir}/upstream-ca.pem`);
    upstreamCaFile = `${CONFDIR_IN_ROOT}/upstream-ca.pem`;
  }
  const args = [
    "--mode",
    `wireguard@${host ? `${host}:` : ""}${opts.port}`,
    "--set",
    `confdir=${confdir}`,
    // No per-flow output; the log stays at "info" (startup, errors), which is little.
    "--set",
    "flow_detail=0",
    ...(upstreamCaFile ? ["--set", `ssl_verify_upstream_trusted_ca=${upstreamCaFile}`] : []),
    ...(opts.extraArgs ?? []),
  ];
  if (opts.discardTcpMessages) {
    await Deno.writeTextFile(`${opts.confdir}/discard_tcp_messages.py`, ADDON);
    args.push("-s", `${confdir}/discard_tcp_messages.py`);
  }
  const program = opts.root ? chrooted(opts.root, opts.confdir, args) : [MITMDUMP, ...args];
  const cmd = opts.netns ? ["ip", "netns", "exec", opts.netns, ...program] : program;
  // (`ip netns exec`, unshare, sh, chroot and env all exec the next: the child's pid is mitmdump's.)
  const { child, tail, stop, exited: hasExited } = spawnWatched(cmd, { env: { PYTHONUNBUFFERED: "1" } });

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
  let caCertPem: string;
  const caCertFile = `${opts.confdir}/mitmproxy-ca-cert.pem`;
  try {
    while (!(await udpBound(child.pid, opts.port))) {
      if (hasExited() || Date.now() > deadline) {
        throw new Error(`mitmdump ${hasExited() ? "exited" : `did not bind UDP port ${opts.port} in time`}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    // The CA is made (if missing) before the servers start, so it is there now.
    caCertPem = await Deno.readTextFile(caCertFile);
  } catch (e) {
    await stop();
    throw new Error(`${e instanceof Error ? e.message : e}; its output:\n${tail.slice(-20).join("\n")}`);
  }
  return {
    serverPublicKey,
    clientPrivateKey,
    clientPublicKey,
    clientAddress: MITMPROXY_CLIENT_ADDRESS,
    caCertPem,
    caCertFile,
    pid: child.pid,
    output: () => [...tail],
    rssKiB: async () => {
      const s = await Deno.readTextFile(`/proc/${child.pid}/status`);
      return Number(/VmRSS:\s+(\d+) kB/.exec(s)?.[1] ?? 0);
    },
    usage: () => processUsage(child.pid),
    stop,
  };
}

if (import.meta.main) {
  const positional: string[] = [];
  let confdir: string | undefined, upstreamCaFile: string | undefined, discard = false;
  for (let i = 0; i < Deno.args.length; i++) {
    const a = Deno.args[i]!;
    if (a === "--confdir") confdir = Deno.args[++i];
    else if (a === "--upstream-ca") upstreamCaFile = Deno.args[++i];
    else if (a === "--discard-tcp-messages") discard = true;
    else positional.push(a);
  }
  const [port, serverPrivateKey, clientPrivateKey] = positional;
  if (!port || !serverPrivateKey || !clientPrivateKey) {
    console.error(
      "usage: mitmproxy_server.ts PORT SERVER_PRIVATE_KEY CLIENT_PRIVATE_KEY " +
        "[--confdir DIR] [--upstream-ca FILE] [--discard-tcp-messages]",
    );
    Deno.exit(2);
  }
  const tempConfdir = confdir ? undefined : await Deno.makeTempDir({ prefix: "wirescope-mitmproxy-" });
  const server = await startMitmproxy({
    listenHost: "",
    port: Number(port),
    confdir: confdir ?? tempConfdir!,
    serverPrivateKey,
    clientPrivateKey,
    discardTcpMessages: discard,
    ...(upstreamCaFile ? { upstreamCaFile } : {}),
  });
  // Killed rather than told by closing stdin: take mitmdump along.
  for (const sig of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(sig, async () => {
      await server.stop();
      if (tempConfdir) await Deno.remove(tempConfdir, { recursive: true }).catch(() => {});
      Deno.exit(143);
    });
  }
  try {
    console.log("ready");
    const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
    for await (const chunk of lines) {
      for (const _ of chunk.split("\n").slice(1)) console.log(JSON.stringify(server.usage()));
    }
  } finally {
    await server.stop();
    if (tempConfdir) await Deno.remove(tempConfdir, { recursive: true });
  }
}
