/**
 * The "origin" network namespace of the end-to-end proxy tests: nginx (HTTPS with a test CA of
 * its own, and HTTP) plus `tests/origin_server.ts` (upload digest, WebSocket echo, a broken
 * server, TCP/UDP echo, DNS), reachable from the host over a veth on its own /30 in
 * 172.31.224.0/20 (only addresses this rig creates). Needs root; `close()` removes everything.
 * @module
 */
import { reserveSlot, sh } from "./rig.ts";

const SERVER = new URL("./origin_server.ts", import.meta.url).pathname;

/** A running origin namespace. */
/** The port where nginx speaks HTTP/2 over TLS (443 stays HTTP/1.1 only). */
export const H2_PORT = 9443;
/** The port where nginx speaks HTTP/2 in clear text, prior knowledge only (h2c; with `plainHttp`). */
export const H2C_PORT = 9080;

export class OriginNamespace {
  /** The origin's address (where its servers listen). */
  readonly address: string;
  /** The test CA that signed nginx's certificate (PEM file), for `upstreamCa` and curl. */
  readonly caFile: string;
  /** The directory nginx serves (add files to it; `.html`, `.css`, `.js` and `.svg` get their types). */
  get www(): string {
    return `${this.#dir}/www`;
  }
  /** The 100 MB file nginx serves at `/big.bin`, and its sha256. */
  readonly bigSha256: string;
  readonly bigSize: number;
  #ns: string;
  #hostIf: string;
  #dir: string;
  #procs: Deno.ChildProcess[] = [];
  #release: () => void;

  private constructor(
    ns: string,
    hostIf: string,
    address: string,
    dir: string,
    bigSha256: string,
    bigSize: number,
    release: () => void,
  ) {
    this.#release = release;
    this.#ns = ns;
    this.#hostIf = hostIf;
    this.address = address;
    this.#dir = dir;
    this.caFile = `${dir}/origin-ca.pem`;
    this.bigSha256 = bigSha256;
    this.bigSize = bigSize;
  }

  /** Creates the namespace, the certificates and the servers. `names` go into nginx's certificate. */
  static async create(names: string[], bigSize = 100 << 20): Promise<OriginNamespace> {
    const { slot, release } = reserveSlot("origin", 1000);
    const ns = `wso${slot}`;
    const hostIf = `wsoh${slot}`;
    await sh(["ip", "netns", "del", ns], { allowFail: true });
    await sh(["ip", "link", "del", hostIf], { allowFail: true });
    const n = slot * 4;
    const a = (k: number) => `172.31.${224 + ((n + k) >> 8)}.${(n + k) & 255}`;
    const hostAddr = a(1), address = a(2);
    const dir = await Deno.makeTempDir({ prefix: "wirescope-origin-" });
    await Deno.chmod(dir, 0o755);
    await sh(["ip", "netns", "add", ns]);
    const origin = new OriginNamespace(ns, hostIf, address, dir, "", bigSize, release);
    try {
      await sh(["ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns]);
      await sh(["ip", "addr", "add", `${hostAddr}/30`, "dev", hostIf]);
      await sh(["ip", "link", "set", hostIf, "up"]);
      const exec = (cmd: string[]) => sh(["ip", "netns", "exec", ns, ...cmd]);
      await exec(["ip", "addr", "add", `${address}/30`, "dev", "eth0"]);
      await exec(["ip", "link", "set", "eth0", "up"]);
      await exec(["ip", "link", "set", "lo", "up"]);

      // Test CA and nginx's certificate.
      await sh([
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        `${dir}/origin-ca.key`,
        "-out",
        `${dir}/origin-ca.pem`,
        "-days",
        "2",
        "-subj",
        "/CN=wirescope test origin CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
      ]);
      await sh([
        "openssl",
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        `${dir}/server.key`,
        "-out",
        `${dir}/server.csr`,
        "-subj",
        `/CN=${names[0] ?? "origin.test"}`,
      ]);
      const san = [...names.map((x) => `DNS:${x}`), `IP:${address}`].join(",");
      await Deno.writeTextFile(
        `${dir}/ext.cnf`,
        `subjectAltName=${san}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`,
      );
      await sh([
        "openssl",
        "x509",
        "-req",
        "-in",
        `${dir}/server.csr`,
        "-CA",
        `${dir}/origin-ca.pem`,
        "-CAkey",
        `${dir}/origin-ca.key`,
        "-CAcreateserial",
        "-out",
        `${dir}/server.pem`,
        "-days",
        "2",
        "-extfile",
        `${dir}/ext.cnf`,
      ]);

      await Deno.mkdir(`${dir}/www`);
      await Deno.writeTextFile(`${dir}/www/small.txt`, "hello from nginx\n");
      await sh(["sh", "-c", `head -c ${bigSize} /dev/urandom > ${dir}/www/big.bin`]);
      const sha = (await sh(["sha256sum", `${dir}/www/big.bin`])).split(" ")[0]!;
      (origin as { bigSha256: string }).bigSha256 = sha;
      await sh(["chmod", "-R", "a+rX", dir]);
      await Deno.writeTextFile(`${dir}/nginx.conf`, nginxConf(dir, address, { plainHttp: true }));
      origin.#spawn(["nginx", "-c", `${dir}/nginx.conf`]);
      const server = origin.#spawn([Deno.execPath(), "run", "-A", "--quiet", SERVER, address]);
      const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const first = await Promise.race([
        reader.read(),
        new Promise<null>((r) => setTimeout(() => r(null), 20_000)),
      ]);
      reader.releaseLock();
      if (!first || first.done || !first.value.includes("ready")) {
        throw new Error("origin server did not start");
      }
      // nginx: wait until it answers (bounded).
      for (let i = 0;; i++) {
        const out = await sh([
          "ip",
          "netns",
          "exec",
          ns,
          "curl",
          "-s",
          "-o",
          "/dev/null",
          "-w",
          "%{http_code}",
          `http://${address}/small.txt`,
        ], { allowFail: true });
        if (out.trim() === "200") break;
        if (i >= 50) {
          throw new Error(
            `nginx did not start: ${await Deno.readTextFile(`${dir}/nginx-error.log`).catch(() => "")}`,
          );
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    } catch (e) {
      await origin.close();
      throw e;
    }
    return origin;
  }

  /**
   * Starts another server inside the namespace (stdout piped, stopped by `close()`). Its TLS
   * certificate can be nginx's: `server.pem` and `server.key` beside {@link caFile}.
   */
  spawn(cmd: string[]): Deno.ChildProcess {
    return this.#spawn(cmd);
  }

  #spawn(cmd: string[]): Deno.ChildProcess {
    const p = new Deno.Command("ip", {
      args: ["netns", "exec", this.#ns, ...cmd],
      stdout: "piped",
      stderr: "null",
      stdin: "null",
    }).spawn();
    this.#procs.push(p);
    return p;
  }

  /** Stops the servers and removes the namespace, the veth and the files. */
  async close(): Promise<void> {
    // nginx's master stops its workers on SIGTERM (SIGKILL would orphan them); anything still
    // running after a moment is killed.
    for (const p of this.#procs) {
      try {
        p.kill("SIGTERM");
      } catch { /* gone */ }
    }
    for (const p of this.#procs) {
      const timer = setTimeout(() => {
        try {
          p.kill("SIGKILL");
        } catch { /* gone */ }
      }, 3000);
      await p.stdout.cancel().catch(() => {});
      await p.status.catch(() => {});
      clearTimeout(timer);
    }
    this.#procs = [];
    await sh(["ip", "netns", "del", this.#ns], { allowFail: true });
    await sh(["ip", "link", "del", this.#hostIf], { allowFail: true });
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
    try {
      this.#release();
    } catch { /* released already */ }
  }
}

/**
 * An nginx configuration for a test origin: one worker in the foreground, everything under `dir`
 * (pid, logs, temp paths), HTTPS on `address:443` with `dir/server.pem`, files from `dir/www`;
 * `plainHttp` adds port 80.
 */
export function nginxConf(dir: string, address: string, options: { plainHttp: boolean }): string {
  return `daemon off;
user root;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp-body;
  proxy_temp_path ${dir}/tmp-proxy;
  fastcgi_temp_path ${dir}/tmp-fcgi;
  uwsgi_temp_path ${dir}/tmp-uwsgi;
  scgi_temp_path ${dir}/tmp-scgi;
  default_type application/octet-stream;
  types { text/html html; text/css css; application/javascript js; image/svg+xml svg; }
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  sendfile on;
  server {
    listen ${address}:443 ssl;${
    options.plainHttp ? `\n    listen ${address}:80;\n    listen ${address}:${H2C_PORT} http2;` : ""
  }
    listen ${address}:${H2_PORT} ssl http2;
    ssl_certificate ${dir}/server.pem;
    ssl_certificate_key ${dir}/server.key;
    root ${dir}/www;
    # Pages under /quic/ advertise HTTP/3 on 443, as sites do (nothing answers it: the proxy
    # tests check what browsers do when QUIC fails).
    location /quic/ { add_header Alt-Svc 'h3=":443"; ma=86400' always; }
  }
}
`;
}
