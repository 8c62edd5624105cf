import assert from "node:assert/strict";
import { join } from "node:path";
import tls from "node:tls";
import { CertificateAuthority } from "./certificate_authority.ts";
import { run, withTempDir } from "./_test_utils.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

async function entryFiles(confdir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(join(confdir, "leaf-cache"))))
    .map((e) => e.name)
    .filter((name) => name.endsWith(".json"))
    .sort();
}

function mode(path: string): number {
  return Deno.statSync(path).mode! & 0o777;
}

/** Collects the log lines of a CA. */
function logLines(): { lines: string[]; log: (message: string) => void } {
  const lines: string[] = [];
  return { lines, log: (message) => lines.push(message) };
}

Deno.test("a leaf issued in one run is served from the disk cache in the next, with the same key", async () => {
  await withTempDir(async (dir) => {
    const first = await CertificateAuthority.load(dir);
    const leaf = await first.leafFor({ sni: "Cached.Example.test", extraNames: ["10.1.2.3"] });
    const cacheDir = join(dir, "leaf-cache");
    assert.equal(mode(cacheDir), 0o700);
    assert.equal(mode(join(cacheDir, "leaf-key.pem")), 0o600);
    const files = await entryFiles(dir);
    assert.equal(files.length, 1);
    assert.equal(mode(join(cacheDir, files[0]!)), 0o600);

    const { lines, log } = logLines();
    const second = await CertificateAuthority.load(dir, { log });
    // Any order of the same names finds it; the common name stays the first run's.
    const again = await second.leafFor({ sni: "10.1.2.3", extraNames: ["cached.example.test"] });
    assert.deepEqual(again.certDer, leaf.certDer);
    assert.equal(again.keyPem, leaf.keyPem);
    assert.deepEqual(again.names, ["cached.example.test", "10.1.2.3"]);
    assert.equal(again.notAfter.getTime(), leaf.notAfter.getTime());
    assert.deepEqual(lines, []);
    // A new name in the second run is signed with the same key.
    assert.equal((await second.leafFor({ sni: "new.example.test" })).keyPem, leaf.keyPem);
    assert.equal((await entryFiles(dir)).length, 2);

    // The stored leaf is a working certificate of this CA.
    await Deno.writeTextFile(join(dir, "again.pem"), again.certPem);
    await run("openssl", ["verify", "-CAfile", second.paths.cert, join(dir, "again.pem")]);
  });
});

Deno.test("a cached leaf of another CA is not served but replaced", async () => {
  await withTempDir(async (dir) => {
    const a = await CertificateAuthority.load(join(dir, "a"));
    const leafA = await a.leafFor({ sni: "shared.test" });
    // Confdir b gets a's cache (entries and leaf key) but a CA of its own.
    await Deno.mkdir(join(dir, "b"), { mode: 0o700 });
    await run("cp", ["-a", join(dir, "a", "leaf-cache"), join(dir, "b", "leaf-cache")]);
    const b = await CertificateAuthority.load(join(dir, "b"));
    assert.notEqual(b.fingerprintSha256, a.fingerprintSha256);
    const leafB = await b.leafFor({ sni: "shared.test" });
    assert.notDeepEqual(leafB.certDer, leafA.certDer);
    await Deno.writeTextFile(join(dir, "b.pem"), leafB.certPem);
    await run("openssl", ["verify", "-CAfile", b.paths.cert, join(dir, "b.pem")]);
    // The entry now holds b's leaf: a third run on b serves it.
    const b2 = await CertificateAuthority.load(join(dir, "b"));
    assert.deepEqual((await b2.leafFor({ sni: "shared.test" })).certDer, leafB.certDer);
  });
});

Deno.test("damaged cache files are ignored with a log line and replaced; leafFor never fails on them", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    const hosts = ["a.test", "b.test", "c.test", "d.test", "e.test"];
    for (const sni of hosts) await ca.leafFor({ sni });
    const files = await entryFiles(dir);
    assert.equal(files.length, hosts.length);
    const cacheDir = join(dir, "leaf-cache");
    const damage = [
      "not json at all",
      "null",
      JSON.stringify({ v: 1, names: ["x.test"], der: "AAAA", notBefore: 0, notAfter: 9e15 }),
      '{"v":1,"names":[],"der":"%%%","notBefore":0,"notAfter":1}',
      "",
    ];
    for (const [i, file] of files.entries()) await Deno.writeTextFile(join(cacheDir, file), damage[i]!);

    const { lines, log } = logLines();
    const next = await CertificateAuthority.load(dir, { log });
    for (const sni of hosts) {
      const leaf = await next.leafFor({ sni });
      assert.deepEqual(leaf.names, [sni]);
      await Deno.writeTextFile(join(dir, "leaf.pem"), leaf.certPem);
      await run("openssl", ["verify", "-CAfile", next.paths.cert, join(dir, "leaf.pem")]);
    }
    assert.equal(lines.length, hosts.length, lines.join("\n"));
    for (const line of lines) {
      assert.match(line, /ignoring damaged leaf cache file .*leaf-cache\/[0-9a-f]{40}\.json/);
    }
    // Each was replaced by a good entry, which the next run reads without complaint.
    const quiet = logLines();
    const third = await CertificateAuthority.load(dir, { log: quiet.log });
    for (const sni of hosts) await third.leafFor({ sni });
    assert.deepEqual(quiet.lines, []);
  });
});

Deno.test("a damaged leaf key file is replaced with a log line, and leaves of the old key are not served", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    const old = await ca.leafFor({ sni: "k.test" });
    await Deno.writeTextFile(join(dir, "leaf-cache", "leaf-key.pem"), "-----BEGIN PRIVATE KEY-----\nAAAA\n");
    const { lines, log } = logLines();
    const next = await CertificateAuthority.load(dir, { log });
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /leaf key file .* is damaged/);
    assert.equal(mode(join(dir, "leaf-cache", "leaf-key.pem")), 0o600);
    const leaf = await next.leafFor({ sni: "k.test" });
    assert.notEqual(leaf.keyPem, old.keyPem);
    assert.notDeepEqual(leaf.certDer, old.certDer);
    // The certificate carries the new key: a TLS server with both works.
    tls.createSecureContext({ key: leaf.keyPem, cert: leaf.certPem });
  });
});

Deno.test("a cached leaf near the end of its validity is issued again", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    const leaf = await ca.leafFor({ sni: "old.test" });
    const [file] = await entryFiles(dir);
    const path = join(dir, "leaf-cache", file!);
    const entry = JSON.parse(await Deno.readTextFile(path));
    entry.notAfter = Date.now() + DAY_MS / 2;
    await Deno.writeTextFile(path, JSON.stringify(entry));
    const next = await CertificateAuthority.load(dir);
    const fresh = await next.leafFor({ sni: "old.test" });
    assert.notDeepEqual(fresh.certDer, leaf.certDer);
    assert.ok(fresh.notAfter.getTime() > Date.now() + 300 * DAY_MS);
  });
});

Deno.test("the disk cache keeps at most leafDiskCacheSize leaves, the newest; 0 writes none", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(join(dir, "bounded"), { leafDiskCacheSize: 3 });
    const leaves = [];
    for (let i = 0; i < 6; i++) leaves.push(await ca.leafFor({ sni: `h${i}.test` }));
    assert.equal((await entryFiles(join(dir, "bounded"))).length, 3);
    const next = await CertificateAuthority.load(join(dir, "bounded"), { leafDiskCacheSize: 3 });
    assert.deepEqual((await next.leafFor({ sni: "h5.test" })).certDer, leaves[5]!.certDer);
    assert.notDeepEqual((await next.leafFor({ sni: "h0.test" })).certDer, leaves[0]!.certDer);
    // A smaller bound on a later run trims the directory when it opens.
    await CertificateAuthority.load(join(dir, "bounded"), { leafDiskCacheSize: 1 });
    assert.equal((await entryFiles(join(dir, "bounded"))).length, 1);

    const none = await CertificateAuthority.load(join(dir, "none"), { leafDiskCacheSize: 0 });
    await none.leafFor({ sni: "x.test" });
    assert.deepEqual((await Array.fromAsync(Deno.readDir(join(dir, "none")))).map((e) => e.name).sort(), [
      "wirescope-ca-cert.cer",
      "wirescope-ca-cert.p12",
      "wirescope-ca-cert.pem",
      "wirescope-ca.pem",
    ]);
    await assert.rejects(CertificateAuthority.load(dir, { leafDiskCacheSize: -1 }), RangeError);
  });
});

Deno.test("an unusable cache directory leaves leaves in memory, with one log line", async () => {
  await withTempDir(async (dir) => {
    await CertificateAuthority.load(dir, { leafDiskCacheSize: 0 });
    await Deno.writeTextFile(join(dir, "leaf-cache"), "a file where the directory should be");
    const { lines, log } = logLines();
    const ca = await CertificateAuthority.load(dir, { log });
    const leaf = await ca.leafFor({ sni: "mem.test" });
    assert.deepEqual(leaf.names, ["mem.test"]);
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /leaf cache .* unusable/);
  });
});

Deno.test("a leaf's secureContext is made once and shared by every use", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    const leaf = await ca.leafFor({ sni: "ctx.test" });
    const context = leaf.secureContext;
    assert.equal(typeof context, "object");
    assert.equal(leaf.secureContext, context);
    assert.equal((await ca.leafFor({ sni: "CTX.test." })).secureContext, context);
  });
});
