/**
 * `deno task bench`: wirescope's WireGuard data plane against wireguard-go as the server (kernel
 * routing, no interception: the ceiling), in one run, on one namespace rig, with one real
 * wireguard-go client. Needs root.
 *
 * Rig: namespace `wsbS` (the servers) and `wsbC` (the client) joined by a veth pair on
 * 172.31.250.0/30. The client's WireGuard peer is the same key for both servers; only the
 * endpoint port changes between runs. Origins are tests/origin.ts: in-process for wirescope, a
 * separate Deno process in `wsbS` for wireguard-go.
 *
 *   deno task bench [--quick] [--profile DIR]
 *     --quick    fewer repetitions and smaller sizes
 *     --profile  write a CPU profile of the wirescope server into DIR
 * @module
 */
import { generatePrivateKey, publicKeyOf } from "../mod.ts";
import { sh } from "../tests/rig.ts";

const quick = Deno.args.includes("--quick");
// --profile DIR: the wirescope server writes a V8 CPU profile there (deno run --cpu-prof).
const profileDir = Deno.args.includes("--profile")
  ? Deno.args[Deno.args.indexOf("--profile") + 1]
  : undefined;
const REPEAT = quick ? 1 : 3;
const BULK = (quick ? 100 : 400) * (1 << 20);
const RTT_COUNTS = quick ? [200] : [1_000, 10_000, 100_000];
const SERVER_NS = "wsbS", CLIENT_NS = "wsbC";
const SERVER_ADDR = "172.31.250.1", CLIENT_ADDR = "172.31.250.2";
const WS_PORT = 51820, WG_PORT = 51821;
const TARGET = "10.0.0.1";
const root = new URL("..", import.meta.url).pathname;
const deno = Deno.execPath();

const inNs = (ns: string, cmd: string[], opts?: { allowFail?: boolean }) =>
  sh(["ip", "netns", "exec", ns, ...cmd], opts);

async function cleanup(): Promise<void> {
  for (const ns of [SERVER_NS, CLIENT_NS]) {
    for (const dev of ["wsbsw0", "wsbcw0"]) await inNs(ns, ["ip", "link", "del", dev], { allowFail: true });
    await sh(["ip", "netns", "del", ns], { allowFail: true });
  }
}

async function wgInterface(ns: string, dev: string, key: string, args: string[]): Promise<void> {
  await inNs(ns, ["env", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "wireguard-go", dev]);
  const keyFile = await Deno.makeTempFile();
  await Deno.writeTextFile(keyFile, key + "\n");
  try {
    await inNs(ns, ["wg", "set", dev, "private-key", keyFile, ...args]);
  } finally {
    await Deno.remove(keyFile);
  }
}

function spawnInNs(ns: string, cmd: string[]): Deno.ChildProcess {
  return new Deno.Command("ip", {
    args: ["netns", "exec", ns, ...cmd],
    cwd: root,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

/** Reads lines of a child's stdout. */
function lines(child: Deno.ChildProcess): () => Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  return async () => {
    while (!buffered.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("server process ended");
      buffered += value;
    }
    const i = buffered.indexOf("\n");
    const line = buffered.slice(0, i);
    buffered = buffered.slice(i + 1);
    return line;
  };
}

async function client(args: string[], seconds: number): Promise<Record<string, number>> {
  const out = await inNs(CLIENT_NS, [
    "timeout",
    String(seconds),
    deno,
    "run",
    "-A",
    "--quiet",
    `${root}tests/ns_client.ts`,
    ...args,
  ]);
  return JSON.parse(out.trim().split("\n").pop()!);
}

interface Figures {
  [workload: string]: number[];
}

async function workloads(label: string, fig: Figures): Promise<void> {
  for (let r = 0; r < REPEAT; r++) {
    (fig["upload Mbit/s"] ??= []).push((await client(["sink", TARGET, "10", String(BULK)], 300)).mbps!);
    (fig["download Mbit/s"] ??= []).push((await client(["source", TARGET, "19", String(BULK)], 300)).mbps!);
    for (const n of RTT_COUNTS) {
      const res = await client(["rtt", TARGET, "7", String(n), "1000"], 600);
      (fig[`echo ${n.toLocaleString("en")} round trips/s`] ??= []).push(res.perSecond!);
    }
    console.error(`  ${label}: round ${r + 1}/${REPEAT} done`);
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));

async function main(): Promise<void> {
  await cleanup();
  const serverKey = generatePrivateKey(), clientKey = generatePrivateKey();
  const serverPub = publicKeyOf(serverKey), clientPub = publicKeyOf(clientKey);
  const results: Record<string, Figures> = { wirescope: {}, "wireguard-go": {} };
  const extra: string[] = [];
  try {
    await sh(["ip", "netns", "add", SERVER_NS]);
    await sh(["ip", "netns", "add", CLIENT_NS]);
    await sh([
      "ip",
      "link",
      "add",
      "wsbv0",
      "netns",
      SERVER_NS,
      "type",
      "veth",
      "peer",
      "name",
      "wsbv1",
      "netns",
      CLIENT_NS,
    ]);
    await inNs(SERVER_NS, ["ip", "addr", "add", `${SERVER_ADDR}/30`, "dev", "wsbv0"]);
    await inNs(CLIENT_NS, ["ip", "addr", "add", `${CLIENT_ADDR}/30`, "dev", "wsbv1"]);
    for (const [ns, dev] of [[SERVER_NS, "wsbv0"], [CLIENT_NS, "wsbv1"]] as const) {
      await inNs(ns, ["ip", "link", "set", dev, "up"]);
      await inNs(ns, ["ip", "link", "set", "lo", "up"]);
    }
    // The client: all traffic through its tunnel.
    await wgInterface(CLIENT_NS, "wsbcw0", clientKey, [
      "peer",
      serverPub,
      "endpoint",
      `${SERVER_ADDR}:${WS_PORT}`,
      "allowed-ips",
      "0.0.0.0/0",
      "persistent-keepalive",
      "25",
    ]);
    await inNs(CLIENT_NS, ["ip", "addr", "add", "10.0.0.2/32", "dev", "wsbcw0"]);
    await inNs(CLIENT_NS, ["ip", "link", "set", "wsbcw0", "mtu", "1420", "up"]);
    await inNs(CLIENT_NS, ["ip", "route", "add", "default", "dev", "wsbcw0"]);

    // 1. wirescope.
    const profile = profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [];
    const ws = spawnInNs(SERVER_NS, [
      deno,
      "run",
      "-A",
      ...profile,
      "bench/wirescope_server.ts",
      String(WS_PORT),
      serverKey,
      clientPub,
    ]);
    const wsLine = lines(ws);
    const wsWriter = ws.stdin.getWriter();
    const usage = async () => {
      await wsWriter.write(new TextEncoder().encode("usage\n"));
      return JSON.parse(await wsLine()) as { rss: number; cpuSeconds: number };
    };
    await wsLine(); // ready
    await client(["echo", TARGET, "7", "1000"], 60); // handshake and warm-up
    const before = await usage();
    await workloads("wirescope", results.wirescope!);
    const after = await usage();
    // 1 GiB through the tunnel each way, RSS after each: after warm-up it must not grow.
    await client(["sink", TARGET, "10", String(1 << 30)], 600);
    const afterUp = await usage();
    await client(["source", TARGET, "19", String(1 << 30)], 600);
    const afterDown = await usage();
    const idleStart = await usage();
    await new Promise((r) => setTimeout(r, 10_000));
    const idleEnd = await usage();
    const mib = (u: { rss: number }) => (u.rss / 2 ** 20).toFixed(0);
    extra.push(
      `wirescope RSS (MiB): ${mib(before)} before the workloads, ${mib(after)} after them, ` +
        `${mib(afterUp)} after 1 GiB more up, ${mib(afterDown)} after 1 GiB more down`,
      `wirescope CPU seconds per GB carried (the 2 GiB above): ` +
        `${((afterDown.cpuSeconds - after.cpuSeconds) / 2.147).toFixed(2)}`,
      `wirescope idle CPU with a connected peer (persistent keepalive 25 s): ` +
        `${((idleEnd.cpuSeconds - idleStart.cpuSeconds) / 10 * 100).toFixed(2)}% of a core over 10 s`,
    );
    await wsWriter.close();
    const wsStatus = await ws.status;
    if (!wsStatus.success) throw new Error(`the wirescope server exited with code ${wsStatus.code}`);

    // 2. wireguard-go as the server, kernel routing to the same origins in another process.
    await wgInterface(SERVER_NS, "wsbsw0", serverKey, [
      "listen-port",
      String(WG_PORT),
      "peer",
      clientPub,
      "allowed-ips",
      "10.0.0.2/32",
    ]);
    await inNs(SERVER_NS, ["ip", "addr", "add", `${TARGET}/24`, "dev", "wsbsw0"]);
    await inNs(SERVER_NS, ["ip", "link", "set", "wsbsw0", "mtu", "1420", "up"]);
    const origin = spawnInNs(SERVER_NS, [deno, "run", "-A", "tests/origin.ts"]);
    await lines(origin)();
    await inNs(CLIENT_NS, [
      "wg",
      "set",
      "wsbcw0",
      "peer",
      serverPub,
      "endpoint",
      `${SERVER_ADDR}:${WG_PORT}`,
    ]);
    await client(["echo", TARGET, "7", "1000"], 60);
    await workloads("wireguard-go", results["wireguard-go"]!);
    origin.kill();
    await origin.status;
  } finally {
    await cleanup();
  }

  const rows = Object.keys(results.wirescope!);
  const out = [
    `| workload | wirescope (min / median / max) | wireguard-go server (min / median / max) | wirescope / wireguard-go |`,
    `| --- | --- | --- | --- |`,
    ...rows.map((row) => {
      const a = results.wirescope![row]!, b = results["wireguard-go"]![row]!;
      const span = (xs: number[]) => `${fmt(Math.min(...xs))} / ${fmt(median(xs))} / ${fmt(Math.max(...xs))}`;
      return `| ${row} | ${span(a)} | ${span(b)} | ${(median(a) / median(b) * 100).toFixed(0)}% |`;
    }),
    "",
    ...extra.map((e) => `- ${e}`),
  ];
  console.log(out.join("\n"));
}

if (import.meta.main) await main();
