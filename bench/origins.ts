/**
 * The origins every server of the bench is measured against, all in the server namespace on one
 * address (the tunnel's TARGET, local there): nginx with HTTPS (a test CA made with openssl, a
 * certificate for `bench.test`, `*.bench.test` and the address; `/small.txt` and a 100 MB
 * `/big.bin` of random bytes; HTTP/1.1 on 443, HTTP/2 on {@link H2_PORT}), `iperf3 -s`, and tests/origin.ts (echo on port 7, ...).
 * @module
 */
import { sh } from "../tests/rig.ts";
import { H2_PORT, nginxConf } from "../tests/origin_ns.ts";

/** The origins' servers and files. */
export interface Origins {
  /** The test CA (PEM file) that signed nginx's certificate; the proxies trust it upstream. */
  caFile: string;
  /** The large file's path at nginx, size and sha256. */
  bigPath: string;
  bigSize: number;
  bigSha256: string;
  /** The small response's path and body. */
  smallPath: string;
  /** nginx's HTTPS port that speaks HTTP/2 (ALPN h2; 443 is HTTP/1.1 only). */
  h2Port: number;
  smallBody: string;
  /** Stops the servers and removes the files. */
  close(): Promise<void>;
}

const ORIGIN_TS = new URL("../tests/origin.ts", import.meta.url).pathname;
const SMALL_BODY = "hello from the bench origin\n";

async function makeCertificates(dir: string, address: string): Promise<void> {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await sh(
    ["openssl", "req", "-x509", ...ec, "-keyout", `${dir}/ca.key`, "-out", `${dir}/ca.pem`]
      .concat(["-days", "2", "-subj", "/CN=wirescope bench origin CA"])
      .concat([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
      ]),
  );
  await sh(["openssl", "req", ...ec, "-keyout", `${dir}/server.key`, "-out", `${dir}/server.csr`]
    .concat(["-subj", "/CN=bench.test"]));
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    `subjectAltName=DNS:bench.test,DNS:*.bench.test,IP:${address}\n` +
      "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
  );
  await sh(
    ["openssl", "x509", "-req", "-in", `${dir}/server.csr`, "-CA", `${dir}/ca.pem`]
      .concat(["-CAkey", `${dir}/ca.key`, "-CAcreateserial", "-out", `${dir}/server.pem`, "-days", "2"])
      .concat(["-extfile", `${dir}/ext.cnf`]),
  );
}

/**
 * Starts the origins inside namespace `ns` on `address` (which must be local there). Each
 * child is bounded by `lifetimeSeconds` (coreutils timeout), should cleanup ever be skipped.
 */
export async function startOrigins(
  ns: string,
  address: string,
  opts: { bigSize: number; lifetimeSeconds: number },
): Promise<Origins> {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-bench-origin-" });
  const procs: Deno.ChildProcess[] = [];
  const spawn = (cmd: string[], stdout: "piped" | "null" = "null") => {
    const p = new Deno.Command("ip", {
      args: ["netns", "exec", ns, "timeout", String(opts.lifetimeSeconds), ...cmd],
      stdin: "null",
      stdout,
      stderr: "null",
    }).spawn();
    procs.push(p);
    return p;
  };
  const close = async () => {
    for (const p of procs) {
      try {
        p.kill("SIGTERM");
      } catch { /* gone */ }
    }
    for (const p of procs) await p.status.catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await Deno.chmod(dir, 0o755);
    await makeCertificates(dir, address);
    await Deno.mkdir(`${dir}/www`);
    await Deno.writeTextFile(`${dir}/www/small.txt`, SMALL_BODY);
    await sh(["sh", "-c", `head -c ${opts.bigSize} /dev/urandom > ${dir}/www/big.bin`]);
    const bigSha256 = (await sh(["sha256sum", `${dir}/www/big.bin`])).split(" ")[0]!;
    await sh(["chmod", "-R", "a+rX", dir]);
    await Deno.writeTextFile(`${dir}/nginx.conf`, nginxConf(dir, address, { plainHttp: false }));

    spawn(["nginx", "-c", `${dir}/nginx.conf`]);
    spawn(["iperf3", "-s", "-B", address, "-p", "5201"]);
    const origin = spawn([Deno.execPath(), "run", "-A", "--quiet", ORIGIN_TS], "piped");
    const reader = origin.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const first = await Promise.race([
      reader.read(),
      new Promise<null>((r) => timer = setTimeout(() => r(null), 30_000)),
    ]);
    clearTimeout(timer);
    if (!first || first.done) throw new Error("tests/origin.ts did not start in the server namespace");
    // Keep draining it (a full pipe would stall it).
    (async () => {
      while (!(await reader.read().catch(() => ({ done: true }))).done) { /* discard */ }
    })();

    // Wait (bounded) until nginx and iperf3 answer.
    for (let i = 0;; i++) {
      const code = await sh(
        ["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"]
          .concat(["--cacert", `${dir}/ca.pem`, "--resolve", `bench.test:443:${address}`])
          .concat(["https://bench.test/small.txt"]),
        { allowFail: true },
      );
      const iperf = await sh(["ip", "netns", "exec", ns, "sh", "-c", `ss -ltn | grep -q '${address}:5201'`])
        .then(() => true, () => false);
      if (code.trim() === "200" && iperf) break;
      if (i >= 100) {
        const log = await Deno.readTextFile(`${dir}/nginx-error.log`).catch(() => "");
        throw new Error(`the origins did not start (nginx said ${code}): ${log}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return {
      caFile: `${dir}/ca.pem`,
      bigPath: "/big.bin",
      bigSize: opts.bigSize,
      bigSha256,
      smallPath: "/small.txt",
      smallBody: SMALL_BODY,
      h2Port: H2_PORT,
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}
