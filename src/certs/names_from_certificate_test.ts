import assert from "node:assert/strict";
import { join } from "node:path";
import { namesFromCertificate } from "./names_from_certificate.ts";
import { run, withTempDir } from "./_test_utils.ts";

/** Makes a self-signed certificate with openssl and returns its DER. */
async function opensslCertificate(dir: string, keyArgs: string[], extra: string[]): Promise<Uint8Array> {
  const der = join(dir, "cert.der");
  await run("openssl", [
    "req",
    "-x509",
    ...keyArgs,
    "-nodes",
    "-keyout",
    join(dir, "key.pem"),
    "-outform",
    "DER",
    "-out",
    der,
    "-days",
    "2",
    ...extra,
  ]);
  return await Deno.readFile(der);
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

Deno.test("namesFromCertificate() reads an ECDSA certificate", async () => {
  await withTempDir(async (dir) => {
    const der = await opensslCertificate(dir, EC_KEY, [
      "-subj",
      "/O=Test/CN=a.test",
      "-addext",
      "subjectAltName=DNS:a.test,IP:10.1.2.3,DNS:*.b.test,IP:2001:db8::7",
    ]);
    assert.deepEqual(namesFromCertificate(der), {
      commonName: "a.test",
      dnsNames: ["a.test", "*.b.test"],
      ipAddresses: ["10.1.2.3", "2001:db8::7"],
    });
  });
});

Deno.test("namesFromCertificate() reads an RSA certificate", async () => {
  await withTempDir(async (dir) => {
    const der = await opensslCertificate(dir, ["-newkey", "rsa:1024"], [
      "-subj",
      "/CN=rsa.test",
      "-addext",
      "subjectAltName=DNS:rsa.test,DNS:www.rsa.test,IP:::1",
    ]);
    assert.deepEqual(namesFromCertificate(der), {
      commonName: "rsa.test",
      dnsNames: ["rsa.test", "www.rsa.test"],
      ipAddresses: ["::1"],
    });
  });
});

Deno.test("namesFromCertificate() reads a certificate without subjectAltName", async () => {
  await withTempDir(async (dir) => {
    const der = await opensslCertificate(dir, EC_KEY, ["-subj", "/CN=Grüße Test", "-utf8"]);
    assert.deepEqual(namesFromCertificate(der), { commonName: "Grüße Test", dnsNames: [], ipAddresses: [] });
    const noCn = await opensslCertificate(dir, EC_KEY, ["-subj", "/O=No Name"]);
    assert.deepEqual(namesFromCertificate(noCn), { dnsNames: [], ipAddresses: [] });
  });
});

Deno.test("namesFromCertificate() rejects bytes that are not a certificate", async () => {
  assert.throws(() => namesFromCertificate(new Uint8Array()), SyntaxError);
  assert.throws(() => namesFromCertificate(new Uint8Array([1, 2, 3])), SyntaxError);
  // A DER SEQUENCE that is no certificate.
  assert.throws(() => namesFromCertificate(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x05])), SyntaxError);
  await withTempDir(async (dir) => {
    const der = await opensslCertificate(dir, EC_KEY, ["-subj", "/CN=x.test"]);
    assert.throws(() => namesFromCertificate(der.subarray(0, der.length - 10)), SyntaxError);
  });
});
