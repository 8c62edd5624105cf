/**
 * Reads the host names a server certificate is issued for, so that a client which sent no SNI
 * can still be given a leaf with the names it expects.
 * @module
 */
import forge from "node-forge";
import { binaryToBytes, decodeDer, formatIpAddress, OID, tbsFields } from "./_der.ts";

const { asn1 } = forge;

/** The names found in a certificate. */
export interface CertificateNames {
  /** The first common name of the subject, if it has one. */
  commonName?: string;
  /** The dNSName entries of the subjectAltName extension, in order. */
  dnsNames: string[];
  /** The iPAddress entries of the subjectAltName extension as text, in order. */
  ipAddresses: string[];
}

/**
 * Reads the subject common name and the subjectAltName DNS names and IP addresses of a
 * certificate. The ASN.1 is walked directly, so certificates with any key type (RSA, ECDSA,
 * Ed25519) are read alike.
 *
 * @param der The certificate in DER.
 * @returns The names.
 * @throws {SyntaxError} When `der` is not a certificate.
 *
 * @example
 * ```ts ignore
 * import tls from "node:tls";
 * import { namesFromCertificate } from "./names_from_certificate.ts";
 * declare const upstream: tls.TLSSocket;
 * const { dnsNames } = namesFromCertificate(upstream.getPeerCertificate().raw);
 * ```
 */
export function namesFromCertificate(der: Uint8Array): CertificateNames {
  const { subject, extensions } = tbsFields(decodeDer(der, "certificate"));
  const names: CertificateNames = { dnsNames: [], ipAddresses: [] };
  const commonName = findCommonName(subject);
  if (commonName !== undefined) names.commonName = commonName;
  for (const ext of extensions) {
    const [id, ...rest] = ext.value as forge.asn1.Asn1[];
    if (id === undefined || id.type !== asn1.Type.OID) continue;
    if (asn1.derToOid(id.value as string) !== OID.subjectAltName) continue;
    const octets = rest[rest.length - 1];
    if (octets === undefined || octets.type !== asn1.Type.OCTETSTRING) {
      throw new SyntaxError("Cannot parse certificate: subjectAltName has no value");
    }
    const generalNames = decodeDer(binaryToBytes(octets.value as string), "certificate subjectAltName");
    if (!Array.isArray(generalNames.value)) {
      throw new SyntaxError("Cannot parse certificate: subjectAltName is not a SEQUENCE");
    }
    for (const name of generalNames.value) {
      if (name.tagClass !== asn1.Class.CONTEXT_SPECIFIC || typeof name.value !== "string") continue;
      if (name.type === 2) {
        names.dnsNames.push(name.value);
      } else if (name.type === 7) {
        const ip = formatIpAddress(binaryToBytes(name.value));
        if (ip !== undefined) names.ipAddresses.push(ip);
      }
    }
  }
  return names;
}

function findCommonName(subject: forge.asn1.Asn1): string | undefined {
  for (const rdn of subject.value as forge.asn1.Asn1[]) {
    if (!Array.isArray(rdn.value)) continue;
    for (const attribute of rdn.value) {
      const [type, value] = attribute.value as forge.asn1.Asn1[];
      if (type?.type !== asn1.Type.OID || typeof value?.value !== "string") continue;
      if (asn1.derToOid(type.value as string) === OID.commonName) return decodeString(value);
    }
  }
  return undefined;
}

/** Decodes the string types a Name may use; BMPString is UTF-16, the rest are read as UTF-8. */
function decodeString(node: forge.asn1.Asn1): string {
  const bytes = binaryToBytes(node.value as string);
  if (node.type === asn1.Type.BMPSTRING) return new TextDecoder("utf-16be").decode(bytes);
  return new TextDecoder().decode(bytes);
}
