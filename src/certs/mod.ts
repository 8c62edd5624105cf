/**
 * Certificates for interception: the wirescope CA, kept in a configuration directory, and the
 * leaf certificates it signs on the fly for each host.
 *
 * @example
 * ```ts ignore
 * import { CertificateAuthority } from "./mod.ts";
 * const ca = await CertificateAuthority.load("/tmp/wirescope-example");
 * const leaf = await ca.leafFor({ sni: "example.com" });
 * console.log(leaf.certPem);
 * ```
 * @module
 */
export * from "./certificate_authority.ts";
export * from "./names_from_certificate.ts";
