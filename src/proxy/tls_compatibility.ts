/**
 * Can wirescope terminate this client's TLS? The client side of interception runs on node:tls,
 * which in this Deno is rustls with an ECDSA P-256 leaf. rustls refuses some hellos outright
 * (old versions, no shared key exchange group or cipher suite, no signature scheme our key can
 * make, a server name that is not a host name), and in this Deno such a refusal also escapes as
 * an uncaught exception. Judging the hello first lets the driver pass those clients through to
 * their destination on purpose, with the reason on the flow, instead of breaking the device.
 *
 * The rules below were taken from what this Deno's node:tls did with real hellos
 * (`tls_compatibility_test.ts` feeds each case to it): TLS 1.0/1.1-only, ffdhe-only, secp521r1-only,
 * RSA-only signature schemes, no supported_groups, no signature_algorithms, CBC-only suites, and
 * server names such as `a/b`, `*`, `..`, `-a-`, `a.1`, a 64-character label or 254 characters.
 * @module
 */
import type { ClientHello } from "./client_hello.ts";

const TLS_1_2 = 0x0303;
const TLS_1_3 = 0x0304;

/** Key exchange groups the TLS library offers: x25519, secp256r1, secp384r1, X25519MLKEM768. */
const GROUPS = new Set([0x001d, 0x0017, 0x0018, 0x11ec]);
/** TLS 1.3 suites (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305). */
const SUITES_13 = new Set([0x1301, 0x1302, 0x1303]);
/** TLS 1.2 suites usable with an ECDSA key: ECDHE-ECDSA with AES-GCM or ChaCha20-Poly1305. */
const SUITES_12_ECDSA = new Set([0xc02b, 0xc02c, 0xcca9]);
/** The one signature scheme a P-256 key makes: ecdsa_secp256r1_sha256. */
const ECDSA_P256_SHA256 = 0x0403;

const VERSION_NAMES: Record<number, string> = {
  0x0300: "SSL 3.0",
  0x0301: "TLS 1.0",
  0x0302: "TLS 1.1",
  0x0303: "TLS 1.2",
  0x0304: "TLS 1.3",
};

/** A GREASE value (RFC 8701): 0x?a?a with both bytes equal. */
function isGrease(n: number): boolean {
  return (n & 0x0f0f) === 0x0a0a && n >> 8 === (n & 0xff);
}

/** The versions a hello offers: its supported_versions list, or else its legacy version alone. */
export function offeredVersions(hello: ClientHello): number[] {
  const listed = hello.supportedVersions.filter((v) => !isGrease(v));
  return listed.length > 0 ? listed : [hello.legacyVersion];
}

/**
 * Why the client's TLS cannot be terminated by wirescope, or null when it can.
 *
 * @param hello The parsed ClientHello.
 * @returns A short reason suitable for a flow ("client offered only TLS 1.1"), or null.
 *
 * @example
 * ```ts
 * import { interceptionObstacle } from "./tls_compatibility.ts";
 * const hello = {
 *   alpn: [], legacyVersion: 0x0302, supportedVersions: [], cipherSuites: [0x002f],
 *   supportedGroups: [], signatureSchemes: [],
 * };
 * console.log(interceptionObstacle(hello)); // client offered only TLS 1.1
 * ```
 */
export function interceptionObstacle(hello: ClientHello): string | null {
  const versions = offeredVersions(hello);
  const has13 = versions.includes(TLS_1_3) && hello.cipherSuites.some((s) => SUITES_13.has(s));
  const has12 = versions.includes(TLS_1_2) && hello.cipherSuites.some((s) => SUITES_12_ECDSA.has(s));
  if (!versions.some((v) => v === TLS_1_2 || v === TLS_1_3)) {
    const best = Math.max(...versions);
    return `client offered only ${VERSION_NAMES[best] ?? `TLS version 0x${best.toString(16)}`}`;
  }
  if (!has13 && !has12) return "client offered no cipher suite the TLS library supports with an ECDSA key";
  if (!hello.supportedGroups.some((g) => GROUPS.has(g))) {
    return hello.supportedGroups.length === 0
      ? "client offered no key exchange groups (no supported_groups extension)"
      : `client offered no key exchange group the TLS library supports (offered ${
        hello.supportedGroups.filter((g) => !isGrease(g)).map(groupName).join(", ")
      })`;
  }
  if (!hello.signatureSchemes.includes(ECDSA_P256_SHA256)) {
    return hello.signatureSchemes.length === 0
      ? "client sent no signature_algorithms extension"
      : "client does not accept ECDSA P-256 signatures (ecdsa_secp256r1_sha256)";
  }
  if (hello.sni !== undefined) {
    const problem = serverNameProblem(hello.sni);
    if (problem) return `server name ${JSON.stringify(hello.sni)} ${problem}`;
  }
  return null;
}

function groupName(g: number): string {
  const names: Record<number, string> = {
    0x0017: "secp256r1",
    0x0018: "secp384r1",
    0x0019: "secp521r1",
    0x001d: "x25519",
    0x001e: "x448",
    0x0100: "ffdhe2048",
    0x0101: "ffdhe3072",
    0x0102: "ffdhe4096",
    0x0103: "ffdhe6144",
    0x0104: "ffdhe8192",
  };
  return names[g] ?? `0x${g.toString(16).padStart(4, "0")}`;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const LABEL = /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$/i;

/**
 * Whether a server name is one the TLS library takes: an IPv4 or IPv6 literal, or a host name
 * of at most 253 characters (a final dot aside) made of 1–63 character labels of letters,
 * digits, `_` and inner `-`, whose last label is not all digits.
 *
 * @returns What is wrong with the name, or null when it is acceptable.
 */
export function serverNameProblem(name: string): string | null {
  if (IPV4.test(name)) return null;
  if (name.includes(":")) return /^[0-9a-f:.]+$/i.test(name) ? null : "is not a valid IPv6 address";
  const bare = name.endsWith(".") ? name.slice(0, -1) : name;
  if (bare.length === 0) return "is empty";
  if (bare.length > 253) return `is ${bare.length} characters long (at most 253)`;
  const labels = bare.split(".");
  for (const label of labels) {
    if (label.length === 0) return "has an empty label";
    if (label.length > 63) return `has a label of ${label.length} characters (at most 63)`;
    if (!LABEL.test(label)) return `has a label ${JSON.stringify(label)} that is not a host name label`;
  }
  if (/^\d+$/.test(labels.at(-1)!)) return "looks like an IP address but is not one";
  return null;
}
