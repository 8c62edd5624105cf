/**
 * Small DER and PEM helpers shared by the CA, the leaf builder and the certificate name reader.
 * node-forge speaks "binary strings" (one char per byte); the rest of wirescope speaks
 * `Uint8Array`, so the conversions live here too.
 * @module
 */
import forge from "node-forge";
import { formatIp, writeIp } from "../net/ip.ts";

const { asn1 } = forge;

/** OIDs used when building and reading certificates. */
export const OID = {
  commonName: "2.5.4.3",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  ecPublicKey: "1.2.840.10045.2.1",
  prime256v1: "1.2.840.10045.3.1.7",
  sha256WithRSAEncryption: "1.2.840.113549.1.1.11",
} as const;

/**
 * Turns bytes into the binary string node-forge expects.
 *
 * @param bytes The bytes.
 * @returns One character per byte.
 */
export function bytesToBinary(bytes: Uint8Array): string {
  let out = "";
  // Chunked so that large inputs never exceed the engine's argument limit.
  for (let i = 0; i < bytes.length; i += 8192) {
    out += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return out;
}

/**
 * Turns a node-forge binary string back into bytes.
 *
 * @param text One character per byte.
 * @returns The bytes.
 */
export function binaryToBytes(text: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/**
 * Encodes DER as PEM with 64-character lines and `\n` line ends.
 *
 * @param label The PEM label, e.g. `CERTIFICATE`.
 * @param der The bytes.
 * @returns The PEM text, ending with a newline.
 */
export function toPem(label: string, der: Uint8Array): string {
  const b64 = btoa(bytesToBinary(der));
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/**
 * Encodes a forge ASN.1 tree as DER bytes.
 *
 * @param node The tree.
 * @returns The DER bytes.
 */
export function encodeDer(node: forge.asn1.Asn1): Uint8Array<ArrayBuffer> {
  return binaryToBytes(asn1.toDer(node).getBytes());
}

/**
 * Parses DER bytes into a forge ASN.1 tree without guessing at the contents of BIT STRINGs.
 *
 * @param der The bytes.
 * @param what Names the input in the error message.
 * @returns The tree.
 * @throws {SyntaxError} When `der` is not one complete DER value.
 */
export function decodeDer(der: Uint8Array, what: string): forge.asn1.Asn1 {
  // The typings only know the boolean form of the options argument.
  const fromDer = asn1.fromDer as unknown as (
    bytes: string,
    options: { strict: boolean; parseAllBytes: boolean; decodeBitStrings: boolean },
  ) => forge.asn1.Asn1;
  try {
    return fromDer(bytesToBinary(der), { strict: true, parseAllBytes: true, decodeBitStrings: false });
  } catch (error) {
    throw new SyntaxError(`Cannot parse ${what}: ${(error as Error).message}`, { cause: error });
  }
}

/** Shorthand for a universal-class ASN.1 node. */
export function universal(type: forge.asn1.Type, value: string | forge.asn1.Asn1[]): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, type, Array.isArray(value), value);
}

/** An OBJECT IDENTIFIER node. */
export function oid(dotted: string): forge.asn1.Asn1 {
  return universal(asn1.Type.OID, asn1.oidToDer(dotted).getBytes());
}

/** A SEQUENCE node. */
export function sequence(children: forge.asn1.Asn1[]): forge.asn1.Asn1 {
  return universal(asn1.Type.SEQUENCE, children);
}

/** A UTCTime for years before 2050 and a GeneralizedTime after, as RFC 5280 asks. */
export function time(date: Date): forge.asn1.Asn1 {
  return date.getUTCFullYear() < 2050
    ? universal(asn1.Type.UTCTIME, asn1.dateToUtcTime(date))
    : universal(asn1.Type.GENERALIZEDTIME, asn1.dateToGeneralizedTime(date));
}

/**
 * One X.509 extension: `SEQUENCE { extnID, critical DEFAULT FALSE, extnValue OCTET STRING }`.
 *
 * @param id The extension's OID.
 * @param critical Whether a verifier that does not know it must reject the certificate.
 * @param value The extension's own value, encoded into the OCTET STRING.
 * @returns The extension node.
 */
export function extension(id: string, critical: boolean, value: forge.asn1.Asn1): forge.asn1.Asn1 {
  const fields = [oid(id)];
  if (critical) fields.push(universal(asn1.Type.BOOLEAN, "\xff"));
  fields.push(universal(asn1.Type.OCTETSTRING, asn1.toDer(value).getBytes()));
  return sequence(fields);
}

/**
 * A random certificate serial number: 16 bytes, positive and without a leading zero byte, so its
 * DER encoding is exactly these bytes (OpenSSL and curl reject zero-padded serials).
 *
 * @returns The serial's bytes; the first lies in 0x40..0x7f.
 */
export function randomSerial(): Uint8Array {
  const serial = crypto.getRandomValues(new Uint8Array(16));
  serial[0] = (serial[0]! & 0x3f) | 0x40;
  return serial;
}

/**
 * Formats bytes as upper-case hex pairs joined by colons, as `openssl x509 -fingerprint` does.
 *
 * @param bytes The bytes.
 * @returns Text like `AB:01:FF`.
 */
export function colonHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0").toUpperCase()).join(":");
}

/**
 * The bytes of an iPAddress name: 4 for dotted IPv4, 16 for IPv6.
 *
 * @param text An address such as `10.0.0.1`, `2001:db8::1` or `[::1]`.
 * @returns The bytes, or `undefined` when `text` is not an IP address.
 */
export function ipAddressBytes(text: string): Uint8Array | undefined {
  const bytes = new Uint8Array(16);
  try {
    writeIp(text, bytes);
  } catch {
    return undefined;
  }
  return text.includes(":") ? bytes : bytes.slice(12);
}

/**
 * Formats the bytes of an iPAddress name.
 *
 * @param bytes 4 or 16 bytes.
 * @returns The address text, or `undefined` for any other length.
 */
export function formatIpAddress(bytes: Uint8Array): string | undefined {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (bytes.length !== 16) return undefined;
  const text = formatIp(bytes);
  // formatIp shows IPv4-mapped addresses as plain IPv4; keep them IPv6 so they map back to 16 bytes.
  return text.includes(":") ? text : `::ffff:${text}`;
}

/** The fields of a parsed TBSCertificate that wirescope reads. */
export interface TbsFields {
  /** The subject Name. */
  subject: forge.asn1.Asn1;
  /** The extensions, empty when the certificate has none. */
  extensions: forge.asn1.Asn1[];
}

/**
 * Finds the subject and extensions inside a parsed `Certificate`.
 *
 * @param certificate The root of a parsed certificate.
 * @returns The fields.
 * @throws {SyntaxError} When the tree is not shaped like a certificate.
 */
export function tbsFields(certificate: forge.asn1.Asn1): TbsFields {
  const bad = (why: string) => new SyntaxError(`Cannot parse certificate: ${why}`);
  if (!isSequence(certificate)) throw bad("not a SEQUENCE");
  const tbs = (certificate.value as forge.asn1.Asn1[])[0];
  if (tbs === undefined || !isSequence(tbs)) throw bad("no tbsCertificate");
  const fields = tbs.value as forge.asn1.Asn1[];
  // version is an optional [0]; serial, signature, issuer and validity come before the subject.
  const first = fields[0];
  const versioned = first !== undefined && first.tagClass === asn1.Class.CONTEXT_SPECIFIC && first.type === 0;
  const subject = fields[(versioned ? 1 : 0) + 4];
  if (subject === undefined || !isSequence(subject)) throw bad("no subject");
  const extensions: forge.asn1.Asn1[] = [];
  for (const field of fields) {
    if (field.tagClass !== asn1.Class.CONTEXT_SPECIFIC || field.type !== 3) continue;
    const list = (field.value as forge.asn1.Asn1[])[0];
    if (list === undefined || !isSequence(list)) throw bad("malformed extensions");
    extensions.push(...(list.value as forge.asn1.Asn1[]));
  }
  return { subject, extensions };
}

function isSequence(node: forge.asn1.Asn1): boolean {
  return node.tagClass === asn1.Class.UNIVERSAL && node.type === asn1.Type.SEQUENCE &&
    Array.isArray(node.value);
}
