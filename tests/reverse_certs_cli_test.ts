/**
 * Reverse mode's `--certs [DOMAIN=]PATH` from the command (issue 17): a TLS client asking for that
 * domain is shown the user's certificate (curl reports its subject and verifies it against the
 * user's CA), another name gets a leaf from wirescope's CA; both reach the server behind.
 */
import assert from "node:assert/strict";
import { Cli, freePort } from "./cli_process.ts";
import { sh } from "./rig.ts";

async function curlVerbose(args: string[]): Promise<{ body: string; log: string }> {
  const o = await new Deno.Command("curl", {
    args: ["-sS", "-v", "--max-time", "20", ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const log = new TextDecoder().decode(o.stderr);
  if (!o.success) throw new Error(`curl ${args.join(" ")}: ${log}`);
  return { body: new TextDecoder().decode(o.stdout), log };
}

Deno.test({
  name: "reverse mode --certs custom.test=FILE: curl sees that certificate; other names a wirescope leaf",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-revcerts-" });
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
      `${dir}/ca.key`,
      "-out",
      `${dir}/ca.pem`,
      "-days",
      "2",
      "-subj",
      "/CN=users own CA",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ]); // deno-fmt-ignore
    await sh([
      "openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", `${dir}/leaf.key`, "-out", `${dir}/leaf.csr`, "-subj", "/O=Users Own Org/CN=custom.test",
    ]); // deno-fmt-ignore
    await Deno.writeTextFile(`${dir}/ext.cnf`, "subjectAltName=DNS:custom.test\nextendedKeyUsage=serverAuth\n");
    await sh([
      "openssl",
      "x509",
      "-req",
      "-in",
      `${dir}/leaf.csr`,
      "-CA",
      `${dir}/ca.pem`,
      "-CAkey",
      `${dir}/ca.key`,
      "-CAcreateserial",
      "-out",
      `${dir}/leaf.pem`,
      "-days",
      "2",
      "-extfile",
      `${dir}/ext.cnf`,
    ]); // deno-fmt-ignore
    await Deno.writeTextFile(
      `${dir}/custom.pem`,
      (await Deno.readTextFile(`${dir}/leaf.pem`)) + (await Deno.readTextFile(`${dir}/leaf.key`)),
    );
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => new Response(`behind: ${new URL(req.url).pathname}\n`),
    );
    const port = freePort();
    const cli = new Cli([
      "--mode",
      `reverse:http://127.0.0.1:${server.addr.port}@127.0.0.1:${port}`,
      "--certs",
      `custom.test=${dir}/custom.pem`,
      "--allow-local-destinations",
      "--no-store",
      "--confdir",
      `${dir}/conf`,
    ]);
    try {
      for (let i = 0; i < 300; i++) {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      const own = await curlVerbose([
        "--cacert",
        `${dir}/ca.pem`,
        "--resolve",
        `custom.test:${port}:127.0.0.1`,
        `https://custom.test:${port}/a`,
      ]);
      assert.equal(own.body, "behind: /a\n");
      assert.match(own.log, /subject: O=Users Own Org; ?CN=custom\.test/);
      assert.match(own.log, /issuer: CN=users own CA/);
      const other = await curlVerbose([
        "--cacert",
        `${dir}/conf/wirescope-ca-cert.pem`,
        "--resolve",
        `other.test:${port}:127.0.0.1`,
        `https://other.test:${port}/b`,
      ]);
      assert.equal(other.body, "behind: /b\n");
      assert.match(other.log, /subject: CN=other\.test/);
      assert.doesNotMatch(other.log, /users own CA/);
    } finally {
      await cli.stop();
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
