/**
 * A manual check of bench/mitmproxy_server.ts on a rig shaped like `deno task bench`'s: namespace
 * `wsmS` (mitmdump and the origins) and `wsmC` (a wireguard-go client, all traffic through the
 * tunnel) joined by a veth on 172.31.250.0/30 (inside the namespaces only). The tunnel target
 * 10.0.0.1 is an address on `wsmS`'s loopback, where mitmdump's upstream connections go.
 * Runs plain HTTP and intercepted HTTPS with curl, iperf3 both ways, the bench's ns_client
 * workloads, and prints the figures. Needs root and scripts/setup_mitmproxy.sh; not a `deno test`.
 *
 *   deno run -A bench/mitmproxy_server_test_manual.ts [--discard-tcp-messages] [--bulk-mib N]
 * @module
 */
import { generatePrivateKey, publicKeyOf } from "../mod.ts";
import { sh } from "../tests/rig.ts";

const SERVER_NS = "wsmS", CLIENT_NS = "wsmC";
const SERVER_ADDR = "172.31.250.1", CLIENT_ADDR = "172.31.250.2";
const PORT = 51822, TARGET = "10.0.0.1", CLIENT_WG = "wsmcw0";
const root = new URL("..", import.meta.url).pathname;
const deno = Deno.execPath();
const discard = Deno.args.includes("--discard-tcp-messages");
const bulkArg = Deno.args.indexOf("--bulk-mib");
const BULK = Number(bulkArg >= 0 ? Deno.args[bulkArg + 1] : 100) * (1 << 20);

const inNs = (ns: string, cmd: string[], opts?: { allowFail?: boolean }) =>
  sh(["ip", "netns", "exec", ns, ...cmd], opts);

function spawnInNs(ns: string, cmd: string[], stdin: "piped" | "null" = "null"): Deno.ChildProcess {
  return new Deno.Command("ip", {
    args: ["netns", "exec", ns, ...cmd],
    cwd: root,
    stdin,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

/** Reads lines of a child's stdout, each within `ms`. */
function lines(child: Deno.ChildProcess, ms = 60_000): () => Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  return async () => {
    const deadline = Date.now() + ms;
    while (!buffered.includes("\n")) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("no line in time")), Math.max(1, deadline - Date.now()));
      });
      try {
        const { value, done } = await Promise.race([reader.read(), timeout]);
        if (done) throw new Error("process ended");
        buffered += value;
      } finally {
        clearTimeout(timer);
      }
    }
    const i = buffered.indexOf("\n");
    const line = buffered.slice(0, i);
    buffered = buffered.slice(i + 1);
    return line;
  };
}

async function cleanup(): Promise<void> {
  await inNs(CLIENT_NS, ["ip", "link", "del", CLIENT_WG], { allowFail: true });
  for (const ns of [SERVER_NS, CLIENT_NS]) await sh(["ip", "netns", "del", ns], { allowFail: true });
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

async function makeCerts(dir: string): Promise<void> {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await sh(
    ["openssl", "req", "-x509", ...ec, "-keyout", `${dir}/ca.key`, "-out", `${dir}/ca.pem`, "-days", "2"]
      .concat(["-subj", "/CN=wsm test origin CA", "-addext", "basicConstraints=critical,CA:TRUE"])
      .concat(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
  );
  await sh([
    "openssl",
    "req",
    ...ec,
    "-keyout",
    `${dir}/leaf.key`,
    "-out",
    `${dir}/leaf.csr`,
    "-subj",
    "/CN=origin",
  ]);
  await Deno.writeTextFile(
    `${dir}/leaf.ext`,
    "subjectAltName=IP:10.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
  );
  await sh(
    ["openssl", "x509", "-req", "-in", `${dir}/leaf.csr`, "-CA", `${dir}/ca.pem`, "-CAkey", `${dir}/ca.key`]
      .concat(["-CAcreateserial", "-out", `${dir}/leaf.pem`, "-days", "2", "-extfile", `${dir}/leaf.ext`]),
  );
}

const HTTP_ORIGIN = `
const dir = Deno.args[0];
Deno.serve({ hostname: "0.0.0.0", port: 8080, onListen() {} }, () => new Response("plain origin says hi\\n"));
Deno.serve({
  hostname: "0.0.0.0", port: 8443, onListen() {},
  cert: Deno.readTextFileSync(dir + "/leaf.pem"), key: Deno.readTextFileSync(dir + "/leaf.key"),
}, () => new Response("tls origin says hi\\n"));
console.log("http ready");
`;

async function main(): Promise<void> {
  await cleanup();
  const tmp = await Deno.makeTempDir({ prefix: "wsm-" });
  const children: Deno.ChildProcess[] = [];
  let server: Deno.ChildProcess | undefined;
  const report: Record<string, unknown> = { discardTcpMessages: discard, bulkMiB: BULK / 2 ** 20 };
  try {
    await sh(["ip", "netns", "add", SERVER_NS]);
    await sh(["ip", "netns", "add", CLIENT_NS]);
    await sh(["ip", "link", "add", "wsmv0", "netns", SERVER_NS, "type", "veth", "peer", "name", "wsmv1"]
      .concat(["netns", CLIENT_NS]));
    await inNs(SERVER_NS, ["ip", "addr", "add", `${SERVER_ADDR}/30`, "dev", "wsmv0"]);
    await inNs(CLIENT_NS, ["ip", "addr", "add", `${CLIENT_ADDR}/30`, "dev", "wsmv1"]);
    for (const [ns, dev] of [[SERVER_NS, "wsmv0"], [CLIENT_NS, "wsmv1"]] as const) {
      await inNs(ns, ["ip", "link", "set", dev, "up"]);
      await inNs(ns, ["ip", "link", "set", "lo", "up"]);
    }
    // The tunnel's target address, local to the server namespace: mitmdump connects there.
    await inNs(SERVER_NS, ["ip", "addr", "add", `${TARGET}/32`, "dev", "lo"]);

    // Keys as bench/main.ts makes them (mitmproxy needs the client's private key too).
    const serverKey = generatePrivateKey(), clientKey = generatePrivateKey();
    const serverPub = publicKeyOf(serverKey);

    // Origins in the server namespace.
    await makeCerts(tmp);
    const origin = spawnInNs(SERVER_NS, ["timeout", "600", deno, "run", "-A", "tests/origin.ts"]);
    children.push(origin);
    await lines(origin)();
    const http = spawnInNs(SERVER_NS, ["timeout", "600", deno, "eval", HTTP_ORIGIN, tmp]);
    children.push(http);
    await lines(http)();
    const iperf = spawnInNs(SERVER_NS, ["timeout", "600", "iperf3", "-s", "-B", TARGET, "-p", "5201"]);
    children.push(iperf);

    // The server, as bench/main.ts would spawn it.
    const confdir = `${tmp}/mitmproxy`;
    const startServer = () => {
      const child = spawnInNs(SERVER_NS, [
        deno,
        "run",
        "-A",
        "bench/mitmproxy_server.ts",
        String(PORT),
        serverKey,
        clientKey,
        "--confdir",
        confdir,
        "--upstream-ca",
        `${tmp}/ca.pem`,
        ...(discard ? ["--discard-tcp-messages"] : []),
      ], "piped");
      return { child, line: lines(child), writer: child.stdin.getWriter() };
    };
    let srv = startServer();
    server = srv.child;
    const usage = async () => {
      await srv.writer.write(new TextEncoder().encode("usage\n"));
      const u = JSON.parse(await srv.line()) as { rss: number; cpuSeconds: number };
      return { rssMiB: Math.round(u.rss / 2 ** 20), cpuSeconds: u.cpuSeconds };
    };
    const stopServer = async () => {
      await srv.writer.close();
      const code = (await srv.child.status).code;
      server = undefined;
      return code;
    };
    const serverLine = () => srv.line();
    const t0 = performance.now();
    if ((await serverLine()) !== "ready") throw new Error("server not ready");
    report["startup ms"] = Math.round(performance.now() - t0);

    // The client.
    await inNs(CLIENT_NS, [
      "env",
      "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1",
      "wireguard-go",
      CLIENT_WG,
    ]);
    const keyFile = `${tmp}/client.key`;
    await Deno.writeTextFile(keyFile, clientKey + "\n");
    await inNs(
      CLIENT_NS,
      ["wg", "set", CLIENT_WG, "private-key", keyFile, "peer", serverPub]
        .concat([
          "endpoint",
          `${SERVER_ADDR}:${PORT}`,
          "allowed-ips",
          "0.0.0.0/0",
          "persistent-keepalive",
          "25",
        ]),
    );
    await inNs(CLIENT_NS, ["ip", "addr", "add", "10.0.0.2/32", "dev", CLIENT_WG]);
    await inNs(CLIENT_NS, ["ip", "link", "set", CLIENT_WG, "mtu", "1420", "up"]);
    await inNs(CLIENT_NS, ["ip", "route", "add", "default", "dev", CLIENT_WG]);

    report["echo warm-up"] = await client(["echo", TARGET, "7", "1000"], 60);
    report["usage at start"] = await usage();
    const curl = ["timeout", "30", "curl", "-sS", "--max-time", "20"];
    report["curl http"] = (await inNs(CLIENT_NS, [...curl, `http://${TARGET}:8080/`])).trim();
    report["curl https (trusting mitmproxy's CA)"] = (await inNs(CLIENT_NS, [
      ...curl,
      "--cacert",
      `${confdir}/mitmproxy-ca-cert.pem`,
      `https://${TARGET}:8443/`,
    ])).trim();
    const issuer = await inNs(CLIENT_NS, [
      "sh",
      "-c",
      `timeout 20 openssl s_client -connect ${TARGET}:8443 -servername ${TARGET} </dev/null 2>/dev/null` +
      ` | openssl x509 -noout -issuer`,
    ]);
    report["certificate the client saw, issuer"] = issuer.trim();
    const untrusted = await inNs(CLIENT_NS, [...curl, `https://${TARGET}:8443/`], { allowFail: true });
    report["curl https without mitmproxy's CA (should fail)"] = untrusted.trim() || "(failed, as it should)";

    const rtt = await client(["rtt", TARGET, "7", "2000", "1000"], 300);
    report["echo 2000 x 1000 B round trips/s"] = Math.round(rtt.perSecond!);
    report["ns_client upload Mbit/s"] = Math.round(
      (await client(["sink", TARGET, "10", String(BULK)], 300)).mbps!,
    );
    report["usage after upload"] = await usage();
    report["ns_client download Mbit/s"] = Math.round(
      (await client(["source", TARGET, "19", String(BULK)], 300)).mbps!,
    );
    report["usage after download"] = await usage();
    for (
      const [label, extra] of [["iperf3 upload (client to origin)", []], [
        "iperf3 download (-R)",
        ["-R"],
      ]] as const
    ) {
      const out = await inNs(
        CLIENT_NS,
        ["timeout", "60", "iperf3", "-c", TARGET, "-p", "5201", "-t", "3", "-J"]
          .concat(extra),
      );
      const j = JSON.parse(out);
      report[`${label} Mbit/s`] = {
        sent: Math.round(j.end.sum_sent.bits_per_second / 1e6),
        received: Math.round(j.end.sum_received.bits_per_second / 1e6),
      };
    }
    report["usage at end"] = await usage();
    report["server exit code"] = await stopServer();

    // A new mitmdump with the same keys, as when bench/main.ts moves the client's endpoint to
    // another server: the client still has a session the new server does not know.
    for (const how of ["endpoint kept", "peer removed and re-added"]) {
      srv = startServer();
      server = srv.child;
      if ((await serverLine()) !== "ready") throw new Error("server not ready");
      if (how !== "endpoint kept") {
        await inNs(CLIENT_NS, ["wg", "set", CLIENT_WG, "peer", serverPub, "remove"]);
        await inNs(
          CLIENT_NS,
          ["wg", "set", CLIENT_WG, "peer", serverPub, "endpoint", `${SERVER_ADDR}:${PORT}`]
            .concat(["allowed-ips", "0.0.0.0/0", "persistent-keepalive", "25"]),
        );
        await inNs(CLIENT_NS, ["ip", "route", "replace", "default", "dev", CLIENT_WG]);
      }
      const t1 = performance.now();
      await client(["echo", TARGET, "7", "1000"], 90);
      report[`first echo after a server restart (${how}), ms`] = Math.round(performance.now() - t1);
      await stopServer();
    }
  } finally {
    if (server) {
      try {
        server.kill("SIGTERM");
      } catch { /* gone */ }
      await server.status;
    }
    for (const c of children) {
      try {
        c.kill("SIGTERM");
      } catch { /* gone */ }
      await c.status;
    }
    await cleanup();
    await Deno.remove(tmp, { recursive: true });
  }
  console.log(JSON.stringify(report, null, 2));
}

if (import.meta.main) await main();
