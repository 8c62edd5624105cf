/**
 * What a long gRPC server stream costs the proxy: runs the CLI (`mod.ts --mode regular`, flows to
 * a `-w` JSON-lines file) in a child process, a grpcio server (tests/grpc/server.py) on loopback
 * with a test CA of its own, and a grpcio client (tests/grpc/stream_client.py) that reads one
 * server stream of COUNT messages through the proxy (HTTP CONNECT) and checks every message.
 * For each count the CLI's RSS is sampled from /proc during the stream, and the flow's line in the
 * flow file is measured: its message counts cover the whole stream while its size stays bounded
 * (the body prefix, the first 1,000 sizes), so the RSS does not grow with the stream.
 *
 *   deno run -A bench/grpc_stream.ts [--counts 10000,100000,500000] [--size 1000] [--direct]
 *
 * `--direct` also reads each stream straight from the server, for the time without the proxy
 * (grpcio's Python client, not the proxy, sets the pace: about 7,000 messages/s either way here).
 *
 * Needs `.venv-grpc/` (scripts/setup.sh). Loopback only; every wait is bounded.
 * @module
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    counts: { type: "string", default: "10000,100000,500000" },
    size: { type: "string", default: "1000" },
    direct: { type: "boolean", default: false },
  },
});
const counts = values.counts.split(",").map(Number);
const size = Number(values.size);
const root = new URL("..", import.meta.url).pathname;
const python = `${root}.venv-grpc/bin/python`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function rssMb(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

async function run(cmd: string[]): Promise<string> {
  const out = await new Deno.Command(cmd[0]!, { args: cmd.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`${cmd.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 300; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await sleep(100);
    }
  }
  throw new Error(`nothing listens on ${port}`);
}

const dir = await Deno.makeTempDir({ prefix: "wirescope-grpc-bench-" });
const children: Deno.ChildProcess[] = [];
try {
  // A test CA and a certificate for the origin's name.
  await run(
    ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
      .concat(["-keyout", `${dir}/ca.key`, "-out", `${dir}/ca.pem`, "-days", "1", "-subj", "/CN=bench CA"])
      .concat(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]),
  );
  await run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    .concat(["-keyout", `${dir}/server.key`, "-out", `${dir}/server.csr`, "-subj", "/CN=origin.test"]));
  await Deno.writeTextFile(`${dir}/ext.cnf`, "subjectAltName=DNS:origin.test,IP:127.0.0.1\n");
  await run(
    ["openssl", "x509", "-req", "-in", `${dir}/server.csr`, "-CA", `${dir}/ca.pem`, "-CAkey"]
      .concat([`${dir}/ca.key`, "-CAcreateserial", "-out", `${dir}/server.pem`, "-days", "1"])
      .concat(["-extfile", `${dir}/ext.cnf`]),
  );

  const grpcPort = freePort();
  const server = new Deno.Command(python, {
    args: [
      `${root}tests/grpc/server.py`,
      "127.0.0.1",
      String(grpcPort),
      `${dir}/server.pem`,
      `${dir}/server.key`,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  children.push(server);
  await waitForPort(grpcPort);

  const proxyPort = freePort();
  const flowFile = `${dir}/flows.jsonl`;
  const cli = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${root}mod.ts`,
      "-q",
      "--confdir",
      `${dir}/conf`,
      "--mode",
      `regular@127.0.0.1:${proxyPort}`,
    ]
      .concat(["--upstream-ca", `${dir}/ca.pem`, "--allow-local-destinations", "-w", flowFile]),
    stdout: "null",
    stderr: "null",
  }).spawn();
  children.push(cli);
  await waitForPort(proxyPort);
  const proxyCa = `${dir}/conf/wirescope-ca-cert.pem`;
  for (let i = 0; i < 100; i++) {
    try {
      await Deno.stat(proxyCa);
      break;
    } catch {
      await sleep(100);
    }
  }

  console.log(`gRPC server stream through the explicit proxy (CLI), ${size} B messages`);
  console.log(`CLI RSS at rest: ${rssMb(cli.pid).toFixed(0)} MB`);
  for (const count of counts) {
    if (values.direct) {
      const out = await run(
        [python, `${root}tests/grpc/stream_client.py`, `127.0.0.1:${grpcPort}`, `${dir}/ca.pem`]
          .concat(["origin.test", "-", String(count), String(size)]),
      );
      console.log(`${count} messages straight from the server: ${out.trim().split(" ")[2]} s`);
    }
    const client = new Deno.Command(python, {
      args: [`${root}tests/grpc/stream_client.py`, `127.0.0.1:${grpcPort}`, proxyCa, "origin.test"]
        .concat([`127.0.0.1:${proxyPort}`, String(count), String(size)]),
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let peak = 0;
    let done = false;
    const output = client.output().finally(() => done = true);
    const deadline = Date.now() + 600_000;
    while (!done && Date.now() < deadline) {
      peak = Math.max(peak, rssMb(cli.pid));
      await sleep(100);
    }
    if (!done) client.kill("SIGKILL");
    const out = await output;
    if (!out.success) throw new Error(`stream client failed: ${new TextDecoder().decode(out.stderr)}`);
    const [messages, bytes, seconds] = new TextDecoder().decode(out.stdout).trim().split(" ").map(Number);
    // The flow's line in the flow file (written when the flow ends).
    let line = "";
    for (let i = 0; i < 100 && line === ""; i++) {
      const lines = (await Deno.readTextFile(flowFile).catch(() => "")).split("\n");
      line = lines.find((l) => l.includes('"streamId"') && l.includes(`"${count} ${size}"`)) ??
        lines.filter((l) => l.includes("ServerStream")).at(-1) ?? "";
      if (line === "" || !line.includes(`"messages":${count},`)) {
        line = "";
        await sleep(100);
      }
    }
    const flow = line === "" ? null : JSON.parse(line);
    const grpc = flow?.grpc?.response;
    console.log(
      `${count} messages (${(bytes! / 1e6).toFixed(0)} MB) in ${seconds} s: ` +
        `CLI RSS peak ${peak.toFixed(0)} MB, after ${rssMb(cli.pid).toFixed(0)} MB; ` +
        (grpc
          ? `flow: ${grpc.messages} messages, ${grpc.sizes.length} sizes listed, status ${flow.grpc.status}, ` +
            `line of ${(line.length / 1024).toFixed(0)} KiB`
          : "flow line not found"),
    );
    if (messages !== count) throw new Error(`received ${messages} of ${count}`);
  }
} finally {
  for (const c of children) {
    try {
      c.kill("SIGTERM");
    } catch { /* gone */ }
    await c.status;
  }
  await Deno.remove(dir, { recursive: true });
}
