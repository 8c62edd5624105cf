import assert from "node:assert/strict";
import { join } from "node:path";
import tls from "node:tls";
import forge from "node-forge";
import { CertificateAuthority } from "./certificate_authority.ts";
import { namesFromCertificate } from "./names_from_certificate.ts";
import { run, withTempDir } from "./_test_utils.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

function textOf(pem: string, path: string): Promise<string> {
  return Deno.writeTextFile(path, pem).then(() => run("openssl", ["x509", "-in", path, "-noout", "-text"]));
}

/** The serial of a certificate with any key type, read with openssl. */
async function opensslSerial(path: string): Promise<string> {
  return (await run("openssl", ["x509", "-in", path, "-noout", "-serial"])).trim().replace(/^serial=/, "");
}

Deno.test("CertificateAuthority.load() creates the directory and the CA files on the first run", async () => {
  await withTempDir(async (dir) => {
    const confdir = join(dir, "home", ".wirescope");
    const ca = await CertificateAuthority.load(confdir);
    assert.equal((await Deno.stat(confdir)).mode! & 0o777, 0o700);
    assert.equal((await Deno.stat(ca.paths.key)).mode! & 0o777, 0o600);
    assert.equal(ca.paths.key, join(confdir, "wirescope-ca.pem"));
    assert.equal(ca.paths.cert, join(confdir, "wirescope-ca-cert.pem"));
    assert.equal(ca.paths.cer, join(confdir, "wirescope-ca-cert.cer"));
    assert.equal(ca.paths.p12, join(confdir, "wirescope-ca-cert.p12"));
    for (const path of [ca.paths.cert, ca.paths.cer, ca.paths.p12]) assert.ok((await Deno.stat(path)).isFile);
    assert.deepEqual((await Array.fromAsync(Deno.readDir(confdir))).map((e) => e.name).sort(), [
      "leaf-cache",
      "wirescope-ca-cert.cer",
      "wirescope-ca-cert.p12",
      "wirescope-ca-cert.pem",
      "wirescope-ca.pem",
    ]);

    const keyFile = await Deno.readTextFile(ca.paths.key);
    assert.match(keyFile, /^-----BEGIN PRIVATE KEY-----\n[^]*-----BEGIN CERTIFICATE-----\n/);
    await run("openssl", ["pkey", "-in", ca.paths.key, "-noout", "-check"]);

    const text = await run("openssl", ["x509", "-in", ca.paths.cert, "-noout", "-text"]);
    assert.match(text, /Subject: CN ?= ?wirescope, O ?= ?wirescope/);
    assert.match(text, /Issuer: CN ?= ?wirescope, O ?= ?wirescope/);
    assert.match(text, /Public-Key: \(2048 bit\)/);
    assert.match(text, /Basic Constraints: critical\s+CA:TRUE/);
    assert.match(text, /Key Usage: critical\s+Certificate Sign, CRL Sign/);
    assert.match(text, /Subject Key Identifier/);
    assert.match(text, /sha256WithRSAEncryption/);

    const serial = await opensslSerial(ca.paths.cert);
    assert.ok(!serial.startsWith("00"), serial);
    assert.ok(parseInt(serial.slice(0, 2), 16) < 0x80, serial);

    const cert = forge.pki.certificateFromPem(ca.certPem);
    const back = Date.now() - cert.validity.notBefore.getTime();
    assert.ok(
      back > 2 * DAY_MS - 60_000 && back < 2 * DAY_MS + 60_000,
      `notBefore ${cert.validity.notBefore}`,
    );
    const years = (cert.validity.notAfter.getTime() - cert.validity.notBefore.getTime()) / (365.25 * DAY_MS);
    assert.ok(Math.abs(years - 10) < 0.01, `${years} years`);
    assert.equal(ca.notAfter.getTime(), cert.validity.notAfter.getTime());
  });
});

Deno.test("CertificateAuthority.load() reuses the CA of an earlier run", async () => {
  await withTempDir(async (dir) => {
    const first = await CertificateAuthority.load(dir);
    const keyFile = await Deno.readFile(first.paths.key);
    const p12 = await Deno.readFile(first.paths.p12);
    const second = await CertificateAuthority.load(dir);
    assert.equal(second.fingerprintSha256, first.fingerprintSha256);
    assert.equal(second.certPem, first.certPem);
    assert.deepEqual(await Deno.readFile(first.paths.key), keyFile);
    assert.deepEqual(await Deno.readFile(first.paths.p12), p12, "an up-to-date p12 is left alone");

    // A leaf of the second run verifies against the certificate file of the first.
    const leaf = await second.leafFor({ sni: "again.test" });
    await Deno.writeTextFile(join(dir, "leaf.pem"), leaf.certPem);
    await run("openssl", ["verify", "-CAfile", first.paths.cert, join(dir, "leaf.pem")]);
  });
});

Deno.test("CertificateAuthority.load() lets concurrent first runs agree on one CA", async () => {
  await withTempDir(async (dir) => {
    const [a, b] = await Promise.all([CertificateAuthority.load(dir), CertificateAuthority.load(dir)]);
    assert.equal(a.fingerprintSha256, b.fingerprintSha256);
    assert.deepEqual((await Array.fromAsync(Deno.readDir(dir))).filter((e) => e.name.endsWith(".tmp")), []);
  });
});

Deno.test("CertificateAuthority.load() writes missing or stale public files again", async () => {
  await withTempDir(async (dir) => {
    const first = await CertificateAuthority.load(dir);
    await Deno.remove(first.paths.cert);
    await Deno.remove(first.paths.p12);
    await Deno.writeTextFile(first.paths.cer, "stale");
    const second = await CertificateAuthority.load(dir);
    assert.equal(await Deno.readTextFile(second.paths.cert), first.certPem);
    assert.deepEqual(await Deno.readFile(second.paths.cer), first.certDer);
    assert.ok((await Deno.stat(second.paths.p12)).size > 0);
    assert.equal(second.fingerprintSha256, first.fingerprintSha256);
  });
});

Deno.test("CertificateAuthority.load() rejects a corrupt CA file and names its path", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    const good = await Deno.readTextFile(ca.paths.key);
    const corruptions = [
      "not a PEM file at all\n",
      "",
      good.replace(/(BEGIN PRIVATE KEY-----\n)(.)/, (_, head, c) => head + (c === "A" ? "B" : "A")),
      good.slice(0, good.length / 2),
      good.replace(/-----BEGIN PRIVATE KEY-----[^]*-----END PRIVATE KEY-----\n/, ""),
      good.replace(/-----BEGIN CERTIFICATE-----[^]*-----END CERTIFICATE-----\n/, ""),
    ];
    for (const corrupt of corruptions) {
      await Deno.writeTextFile(ca.paths.key, corrupt);
      await assert.rejects(CertificateAuthority.load(dir), (error: Error) => {
        assert.ok(error.message.includes(ca.paths.key), error.message);
        return true;
      });
      assert.equal(await Deno.readTextFile(ca.paths.key), corrupt, "the broken file is left as it was");
    }
  });
});

Deno.test("CertificateAuthority.load() rejects a CA file whose key belongs to another certificate", async () => {
  await withTempDir(async (dir) => {
    const a = await CertificateAuthority.load(join(dir, "a"));
    const b = await CertificateAuthority.load(join(dir, "b"));
    const keyOfA = (await Deno.readTextFile(a.paths.key)).replace(/-----BEGIN CERTIFICATE-----[^]*/, "");
    await Deno.writeTextFile(b.paths.key, keyOfA + b.certPem);
    await assert.rejects(CertificateAuthority.load(join(dir, "b")), Error, b.paths.key);
  });
});

Deno.test("CertificateAuthority.load() reports an unreadable CA file instead of replacing it", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    await Deno.remove(ca.paths.key);
    await Deno.mkdir(ca.paths.key);
    await assert.rejects(CertificateAuthority.load(dir), Error, `Cannot read CA file ${ca.paths.key}`);
  });
});

Deno.test("CertificateAuthority.load() uses a CA made by openssl with a PKCS#1 key", async () => {
  await withTempDir(async (dir) => {
    const key = join(dir, "key.pem");
    const cert = join(dir, "cert.pem");
    await run("openssl", [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "30",
      "-subj",
      "/CN=Imported CA",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    const pkcs1 = await run("openssl", ["rsa", "-in", key, "-traditional"]);
    assert.match(pkcs1, /BEGIN RSA PRIVATE KEY/);
    const confdir = join(dir, "conf");
    await Deno.mkdir(confdir);
    await Deno.writeTextFile(join(confdir, "wirescope-ca.pem"), pkcs1 + (await Deno.readTextFile(cert)));

    const ca = await CertificateAuthority.load(confdir);
    assert.match(await run("openssl", ["x509", "-in", ca.paths.cert, "-noout", "-subject"]), /Imported CA/);
    const leaf = await ca.leafFor({ sni: "imported.test" });
    await Deno.writeTextFile(join(dir, "leaf.pem"), leaf.certPem);
    await run("openssl", ["verify", "-CAfile", cert, "-purpose", "sslserver", join(dir, "leaf.pem")]);
    // The leaf may not outlive its 30-day CA.
    assert.ok(leaf.notAfter.getTime() <= ca.notAfter.getTime());
  });
});

Deno.test("CertificateAuthority.certDer matches certPem, the .cer file and the fingerprint", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    const fromPem = forge.pem.decode(ca.certPem)[0]!.body;
    assert.equal(forge.util.binary.raw.encode(ca.certDer), fromPem);
    assert.deepEqual(await Deno.readFile(ca.paths.cer), ca.certDer);
    assert.equal(await Deno.readTextFile(ca.paths.cert), ca.certPem);
    const der = await run("openssl", [
      "x509",
      "-inform",
      "DER",
      "-in",
      ca.paths.cer,
      "-noout",
      "-fingerprint",
      "-sha256",
    ]);
    assert.equal(der.trim().replace(/^.*Fingerprint=/i, ""), ca.fingerprintSha256);
    assert.match(ca.fingerprintSha256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  });
});

Deno.test("CertificateAuthority.load() writes a PKCS#12 file that holds only the certificate", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    const bytes = await Deno.readFile(ca.paths.p12);
    const p12 = forge.pkcs12.pkcs12FromAsn1(forge.asn1.fromDer(forge.util.binary.raw.encode(bytes)), "");
    const certBags = p12.getBags({ bagType: forge.pki.oids.certBag! })[forge.pki.oids.certBag!] ?? [];
    assert.equal(certBags.length, 1);
    assert.equal(forge.pki.certificateToPem(certBags[0]!.cert!).replaceAll("\r\n", "\n"), ca.certPem);
    for (const keyBag of [forge.pki.oids.keyBag!, forge.pki.oids.pkcs8ShroudedKeyBag!]) {
      assert.deepEqual(p12.getBags({ bagType: keyBag })[keyBag] ?? [], []);
    }
    // OpenSSL 3 (which no longer reads RC2 by default) opens it with an empty password.
    const out = await run("openssl", ["pkcs12", "-in", ca.paths.p12, "-passin", "pass:", "-nokeys"]);
    assert.ok(out.includes(ca.certPem.trim()), out);
    assert.doesNotMatch(out, /PRIVATE KEY/);
  });
});

Deno.test("CertificateAuthority.leafFor() issues a server certificate that openssl verifies", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    const leaf = await ca.leafFor({ sni: "Example.TEST.", extraNames: ["www.example.test"] });
    assert.deepEqual(leaf.names, ["example.test", "www.example.test"]);
    const path = join(dir, "leaf.pem");
    const text = await textOf(leaf.certPem, path);
    for (const host of ["example.test", "www.example.test"]) {
      await run("openssl", [
        "verify",
        "-CAfile",
        ca.paths.cert,
        "-purpose",
        "sslserver",
        "-verify_hostname",
        host,
        path,
      ]);
    }
    await assert.rejects(
      run("openssl", ["verify", "-CAfile", ca.paths.cert, "-verify_hostname", "other.test", path]),
      /hostname mismatch/,
    );
    assert.match(text, /Subject: CN ?= ?example\.test\n/);
    assert.match(text, /id-ecPublicKey[^]*prime256v1/);
    assert.match(text, /Basic Constraints: critical\s+CA:FALSE/);
    assert.match(text, /Key Usage: critical\s+Digital Signature\n/);
    assert.match(text, /Extended Key Usage: \s*\n\s+TLS Web Server Authentication\n/);
    assert.match(text, /Subject Alternative Name: \s*\n\s+DNS:example\.test, DNS:www\.example\.test\n/);
    const caText = await run("openssl", ["x509", "-in", ca.paths.cert, "-noout", "-text"]);
    const caSki = /Subject Key Identifier: \s*\n\s+(\S+)/.exec(caText)![1]!;
    assert.match(text, new RegExp(`Authority Key Identifier: \\s*\\n\\s+(keyid:)?${caSki}\\n`));

    const serial = await opensslSerial(path);
    assert.ok(!serial.startsWith("00") && parseInt(serial.slice(0, 2), 16) < 0x80, serial);
    assert.equal(serial.length, 32);

    const now = Date.now();
    assert.ok(Math.abs(now - 2 * DAY_MS - leaf.notBefore.getTime()) < 60_000, `${leaf.notBefore}`);
    const lifetime = leaf.notAfter.getTime() - leaf.notBefore.getTime();
    assert.ok(lifetime <= 397 * DAY_MS && lifetime >= 360 * DAY_MS, `${lifetime / DAY_MS} days`);
    const notAfter = /Not After : (.*)\n/.exec(text)![1]!;
    assert.equal(new Date(notAfter).getTime(), leaf.notAfter.getTime());

    assert.ok(leaf.certChainPem.startsWith(leaf.certPem));
    assert.ok(leaf.certChainPem.endsWith(ca.certPem));
    assert.deepEqual(forge.pem.decode(leaf.certPem)[0]!.body, forge.util.binary.raw.encode(leaf.certDer));
    await run("openssl", ["pkey", "-in", await writeTemp(dir, "key.pem", leaf.keyPem), "-noout", "-check"]);
  });
});

async function writeTemp(dir: string, name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await Deno.writeTextFile(path, text);
  return path;
}

Deno.test("CertificateAuthority.leafFor() issues certificates for IPv4 and IPv6 addresses", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    const cases = [
      { host: { ip: "10.1.2.3" }, san: "IP Address:10.1.2.3", verify: "10.1.2.3" },
      { host: { ip: "[2001:DB8::1]" }, san: "IP Address:2001:DB8:0:0:0:0:0:1", verify: "2001:db8::1" },
      { host: { sni: "::1" }, san: "IP Address:0:0:0:0:0:0:0:1", verify: "::1" },
    ];
    for (const { host, san, verify } of cases) {
      const leaf = await ca.leafFor(host);
      const path = await writeTemp(dir, "leaf.pem", leaf.certPem);
      await run("openssl", [
        "verify",
        "-CAfile",
        ca.paths.cert,
        "-purpose",
        "sslserver",
        "-verify_ip",
        verify,
        path,
      ]);
      await assert.rejects(
        run("openssl", ["verify", "-CAfile", ca.paths.cert, "-verify_ip", "10.9.9.9", path]),
        /IP address mismatch/,
      );
      const text = await run("openssl", ["x509", "-in", path, "-noout", "-text"]);
      assert.ok(text.includes(`Subject Alternative Name: \n                ${san}\n`), text);
      assert.deepEqual(namesFromCertificate(leaf.certDer).ipAddresses, [leaf.names[0]]);
    }
  });
});

Deno.test("CertificateAuthority.leafFor() puts every name into the subjectAltName", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    const long = `${"a".repeat(60)}.example.test`;
    const leaf = await ca.leafFor({
      sni: "bücher.test",
      ip: "192.0.2.7",
      extraNames: ["*.example.test", "BÜCHER.test", "192.0.2.7", "fe80::1", long],
    });
    assert.deepEqual(leaf.names, ["xn--bcher-kva.test", "192.0.2.7", "*.example.test", "fe80::1", long]);
    assert.deepEqual(namesFromCertificate(leaf.certDer), {
      commonName: "xn--bcher-kva.test",
      dnsNames: ["xn--bcher-kva.test", "*.example.test", long],
      ipAddresses: ["192.0.2.7", "fe80::1"],
    });
    const path = await writeTemp(dir, "leaf.pem", leaf.certPem);
    await run("openssl", ["verify", "-CAfile", ca.paths.cert, "-verify_hostname", "any.example.test", path]);

    // A first name too long for a common name leaves the subject empty and the SAN critical.
    const noCn = await ca.leafFor({ sni: long });
    const noCnPath = await writeTemp(dir, "long.pem", noCn.certPem);
    const text = await run("openssl", ["x509", "-in", noCnPath, "-noout", "-text"]);
    assert.match(text, /Subject: *\n/);
    assert.match(text, /Subject Alternative Name: critical/);
    await run("openssl", [
      "verify",
      "-CAfile",
      ca.paths.cert,
      "-purpose",
      "sslserver",
      "-verify_hostname",
      long,
      noCnPath,
    ]);
    assert.equal(namesFromCertificate(noCn.certDer).commonName, undefined);
  });
});

Deno.test("CertificateAuthority.leafFor() leaves serve node:tls and curl clients", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    const leaf = await ca.leafFor({ sni: "example.test" });
    const server = tls.createServer({ key: leaf.keyPem, cert: leaf.certPem }, (socket) => {
      socket.on("error", () => {});
      socket.once("data", () => {
        socket.end("HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nhello\n");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    try {
      const peer = await new Promise<{ authorized: boolean; error: unknown; cn: unknown }>(
        (resolve, reject) => {
          const socket = tls.connect(
            { host: "127.0.0.1", port, servername: "example.test", ca: [ca.certPem] },
            () => {
              resolve({
                authorized: socket.authorized,
                error: socket.authorizationError,
                cn: socket.getPeerCertificate().subject?.CN,
              });
              socket.end("GET / HTTP/1.1\r\n\r\n");
            },
          );
          socket.on("error", reject);
          socket.on("data", () => {});
        },
      );
      assert.deepEqual(peer, { authorized: true, error: null, cn: "example.test" });

      const body = await run("curl", [
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--cacert",
        ca.paths.cert,
        "--resolve",
        `example.test:${port}:127.0.0.1`,
        `https://example.test:${port}/`,
      ]);
      assert.equal(body, "hello\n");
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

Deno.test("CertificateAuthority.leafFor() serves each SNI its own leaf through SNICallback", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    const server = tls.createServer({
      SNICallback: (name, done) => {
        ca.leafFor({ sni: name }).then(
          (leaf) => done(null, tls.createSecureContext({ key: leaf.keyPem, cert: leaf.certPem })),
          (error) => done(error),
        );
      },
    }, (socket) => {
      socket.on("error", () => {});
      socket.end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    try {
      for (const servername of ["a.test", "b.test"]) {
        const cn = await new Promise((resolve, reject) => {
          const socket = tls.connect({ host: "127.0.0.1", port, servername, ca: [ca.certPem] }, () => {
            resolve(socket.authorized && socket.getPeerCertificate().subject?.CN);
            socket.end();
          });
          socket.on("error", reject);
        });
        assert.equal(cn, servername);
      }
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

Deno.test("CertificateAuthority.leafFor() returns the cached leaf for the same names", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    const [a, b] = await Promise.all([ca.leafFor({ sni: "same.test" }), ca.leafFor({ sni: "same.test" })]);
    assert.equal(a, b, "concurrent first calls share one leaf");
    assert.equal(await ca.leafFor({ sni: "SAME.test." }), a);
    const both = await ca.leafFor({ sni: "x.test", extraNames: ["y.test"] });
    assert.equal(await ca.leafFor({ sni: "y.test", extraNames: ["x.test"] }), both);
    const other = await ca.leafFor({ sni: "other.test" });
    assert.notEqual(other, a);
    assert.equal(other.keyPem, a.keyPem, "all leaves share one key");
    assert.ok(Object.isFrozen(a));
  });
});

Deno.test("CertificateAuthority.leafFor() evicts the least recently used leaf beyond the cache size", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir, { leafCacheSize: 2 });
    const a = await ca.leafFor({ sni: "a.test" });
    const b = await ca.leafFor({ sni: "b.test" });
    assert.equal(await ca.leafFor({ sni: "a.test" }), a); // a is now the most recent
    await ca.leafFor({ sni: "c.test" }); // evicts b
    assert.equal(await ca.leafFor({ sni: "a.test" }), a);
    const b2 = await ca.leafFor({ sni: "b.test" }); // evicts c
    assert.notEqual(b2, b);
    assert.deepEqual(b2.names, b.names);
    assert.equal(await ca.leafFor({ sni: "b.test" }), b2);
  });
  await assert.rejects(CertificateAuthority.load("/nonexistent", { leafCacheSize: 0 }), RangeError);
});

Deno.test("CertificateAuthority.leafFor() rejects hosts without a usable name", async () => {
  await withTempDir(async (dir) => {
    const ca = await CertificateAuthority.load(dir);
    await assert.rejects(ca.leafFor({}), TypeError);
    await assert.rejects(ca.leafFor({ sni: "", extraNames: [] }), TypeError);
    await assert.rejects(ca.leafFor({ ip: "example.test" }), TypeError, "not an IP address");
    await assert.rejects(ca.leafFor({ sni: "bad name.test" }), TypeError, "bad name.test");
    // A failed call is not cached.
    assert.deepEqual((await ca.leafFor({ sni: "good.test" })).names, ["good.test"]);
  });
});
