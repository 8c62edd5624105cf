/**
 * Builds leaf (server) certificates by hand with `forge.asn1` and signs them with WebCrypto.
 *
 * forge's `pki.Certificate` only holds RSA public keys, while leaves here carry one shared ECDSA
 * P-256 key; and WebCrypto's RSA signature is native code, some ten times faster than forge's.
 * So the TBSCertificate is assembled node by node and only the signature is left to WebCrypto.
 * @module
 */
import forge from "node-forge";
import { domainToASCII } from "node:url";
import {
  bytesToBinary,
  encodeDer,
  extension,
  formatIpAddress,
  ipAddressBytes,
  OID,
  oid,
  randomSerial,
  sequence,
  time,
  toPem,
  universal,
} from "./_der.ts";

const { asn1 } = forge;
const DAY_MS = 24 * 60 * 60 * 1000;

/** How far before "now" a leaf becomes valid, to forgive clients whose clocks run late. */
export const LEAF_BACKDATE_MS = 2 * DAY_MS;
/** Leaf lifetime from notBefore, well inside the 398 days Apple accepts for server certificates. */
export const LEAF_LIFETIME_MS = 365 * DAY_MS;

/** The key all leaves of a CA share (kept in the confdir with the leaf cache). */
export interface LeafKey {
  /** The private key as PKCS#8 PEM. */
  keyPem: string;
  /** The public key as an uncompressed P-256 point (65 bytes). */
  point: Uint8Array;
  /** SHA-1 of the point: the subjectKeyIdentifier of every leaf. */
  keyIdentifier: Uint8Array;
}

/**
 * Makes a new ECDSA P-256 leaf key.
 *
 * @returns The key and its PKCS#8 DER.
 */
export async function generateLeafKey(): Promise<{ key: LeafKey; pkcs8: Uint8Array }> {
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ]);
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const point = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { key: await leafKeyOf(pkcs8, point), pkcs8 };
}

/**
 * Reads a leaf key back from its PKCS#8 DER.
 *
 * @param pkcs8 The private key.
 * @returns The key.
 * @throws {Error} When `pkcs8` is not an ECDSA P-256 private key.
 */
export async function importLeafKey(pkcs8: Uint8Array<ArrayBuffer>): Promise<LeafKey> {
  const privateKey = await crypto.subtle.importKey(
    "pkcs8",
    pkcs8,
    { name: "ECDSA", namedCurve: "P-256" },
    true,
    [
      "sign",
    ],
  );
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  if (jwk.x === undefined || jwk.y === undefined) throw new Error("the leaf key has no public point");
  const coordinate = (text: string) =>
    Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const x = coordinate(jwk.x);
  const y = coordinate(jwk.y);
  if (x.length !== 32 || y.length !== 32) throw new Error("the leaf key is not a P-256 key");
  const point = new Uint8Array(65);
  point[0] = 4;
  point.set(x, 1);
  point.set(y, 33);
  return await leafKeyOf(pkcs8, point);
}

async function leafKeyOf(pkcs8: Uint8Array, point: Uint8Array): Promise<LeafKey> {
  const keyIdentifier = new Uint8Array(await crypto.subtle.digest("SHA-1", point.slice()));
  return { keyPem: toPem("PRIVATE KEY", pkcs8), point, keyIdentifier };
}

/** A name a leaf is issued for. */
export type LeafName =
  | { kind: "dns"; text: string }
  | { kind: "ip"; text: string; bytes: Uint8Array };

/**
 * Normalizes host names and addresses for a leaf: IP addresses become iPAddress names in
 * canonical text, everything else a lower-case ASCII dNSName without a trailing dot.
 * Duplicates are dropped and the order otherwise kept.
 *
 * @param candidates Names and addresses, e.g. `["Example.TEST.", "10.0.0.1"]`.
 * @returns The names.
 * @throws {TypeError} When a name is empty or cannot be written as an ASCII host name.
 */
export function leafNames(candidates: readonly string[]): LeafName[] {
  const names: LeafName[] = [];
  const seen = new Set<string>();
  for (const candidate of candidates) {
    const name = leafName(candidate);
    const key = `${name.kind} ${name.text}`;
    if (seen.has(key)) continue;
    seen.add(key);
    names.push(name);
  }
  return names;
}

function leafName(candidate: string): LeafName {
  const trimmed = candidate.trim();
  const bytes = ipAddressBytes(trimmed);
  if (bytes !== undefined) return { kind: "ip", text: formatIpAddress(bytes)!, bytes };
  let text = trimmed.toLowerCase().replace(/\.$/, "");
  // deno-lint-ignore no-control-regex
  if (/[^\x00-\x7f]/.test(text)) text = domainToASCII(text);
  if (!/^[\x21-\x7e]{1,253}$/.test(text)) {
    throw new TypeError(`Cannot issue a certificate for "${candidate}": not a host name or IP address`);
  }
  return { kind: "dns", text };
}

/** What a leaf needs from the CA that signs it. */
export interface LeafIssuer {
  /** The CA's subject, which becomes the leaf's issuer. */
  name: forge.asn1.Asn1;
  /** The CA's subjectKeyIdentifier, which becomes the leaf's authorityKeyIdentifier. */
  keyIdentifier: Uint8Array;
  /** The end of the CA's validity; no leaf outlives it. */
  notAfter: Date;
  /** The CA's RSA key, imported for RSASSA-PKCS1-v1_5 with SHA-256. */
  signingKey: CryptoKey;
}

/** A signed leaf certificate. */
export interface SignedLeaf {
  /** The certificate in DER. */
  der: Uint8Array;
  /** The start of its validity. */
  notBefore: Date;
  /** The end of its validity. */
  notAfter: Date;
}

/**
 * Builds and signs a server certificate for `names` with the shared leaf key.
 *
 * @param issuer The signing CA.
 * @param key The leaf key.
 * @param names The names; the first also becomes the subject common name when it fits (64
 *   characters at most).
 * @param now The current time.
 * @returns The certificate.
 * @throws {TypeError} When `names` is empty.
 */
export async function signLeaf(
  issuer: LeafIssuer,
  key: LeafKey,
  names: readonly LeafName[],
  now: Date = new Date(),
): Promise<SignedLeaf> {
  const first = names[0];
  if (first === undefined) throw new TypeError("Cannot issue a certificate without a name");
  const notBefore = new Date(Math.floor((now.getTime() - LEAF_BACKDATE_MS) / 1000) * 1000);
  const notAfter = new Date(Math.min(notBefore.getTime() + LEAF_LIFETIME_MS, issuer.notAfter.getTime()));

  const subject = first.text.length <= 64
    ? [
      universal(asn1.Type.SET, [
        sequence([oid(OID.commonName), universal(asn1.Type.UTF8, first.text)]),
      ]),
    ]
    : [];
  const altNames = names.map((name) =>
    name.kind === "dns"
      ? asn1.create(asn1.Class.CONTEXT_SPECIFIC, 2, false, name.text)
      : asn1.create(asn1.Class.CONTEXT_SPECIFIC, 7, false, bytesToBinary(name.bytes))
  );
  const signatureAlgorithm = sequence([oid(OID.sha256WithRSAEncryption), universal(asn1.Type.NULL, "")]);

  const tbs = sequence([
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [universal(asn1.Type.INTEGER, "\x02")]),
    universal(asn1.Type.INTEGER, bytesToBinary(randomSerial())),
    signatureAlgorithm,
    issuer.name,
    sequence([time(notBefore), time(notAfter)]),
    sequence(subject),
    sequence([
      sequence([oid(OID.ecPublicKey), oid(OID.prime256v1)]),
      universal(asn1.Type.BITSTRING, "\x00" + bytesToBinary(key.point)),
    ]),
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 3, true, [
      sequence([
        // CA:FALSE is the default, so DER leaves the SEQUENCE empty.
        extension(OID.basicConstraints, true, sequence([])),
        // digitalSignature is bit 0: one byte 0x80 with 7 unused bits.
        extension(OID.keyUsage, true, universal(asn1.Type.BITSTRING, "\x07\x80")),
        extension(OID.extKeyUsage, false, sequence([oid(OID.serverAuth)])),
        extension(
          OID.subjectKeyIdentifier,
          false,
          universal(asn1.Type.OCTETSTRING, bytesToBinary(key.keyIdentifier)),
        ),
        extension(
          OID.authorityKeyIdentifier,
          false,
          sequence([asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, false, bytesToBinary(issuer.keyIdentifier))]),
        ),
        // Without a subject the names live only here, and RFC 5280 then wants the extension critical.
        extension(OID.subjectAltName, subject.length === 0, sequence(altNames)),
      ]),
    ]),
  ]);

  const tbsDer = encodeDer(tbs);
  const signature = new Uint8Array(
    await crypto.subtle.sign({ name: "RSASSA-PKCS1-v1_5" }, issuer.signingKey, tbsDer),
  );
  const tail = encodeDer(signatureAlgorithm);
  const signatureBits = encodeDer(universal(asn1.Type.BITSTRING, "\x00" + bytesToBinary(signature)));
  return { der: derSequenceOf([tbsDer, tail, signatureBits]), notBefore, notAfter };
}

/** Wraps already encoded parts in a SEQUENCE without decoding and re-encoding them. */
function derSequenceOf(parts: Uint8Array[]): Uint8Array {
  const length = parts.reduce((sum, part) => sum + part.length, 0);
  const header = [0x30];
  if (length < 0x80) {
    header.push(length);
  } else {
    const lengthBytes: number[] = [];
    for (let n = length; n > 0; n >>>= 8) lengthBytes.unshift(n & 0xff);
    header.push(0x80 | lengthBytes.length, ...lengthBytes);
  }
  const out = new Uint8Array(header.length + length);
  out.set(header);
  let offset = header.length;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
