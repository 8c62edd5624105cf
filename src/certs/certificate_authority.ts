/**
 * The wirescope certificate authority: created once in the configuration directory, then reused;
 * it issues a leaf certificate for every host a client connects to.
 * @module
 */
import forge from "node-forge";
import { join } from "node:path";
import tls from "node:tls";
import {
  binaryToBytes,
  bytesToBinary,
  colonHex,
  decodeDer,
  encodeDer,
  ipAddressBytes,
  randomSerial,
  tbsFields,
  toPem,
} from "./_der.ts";
import { type LeafIssuer, type LeafKey, type LeafName, leafNames, signLeaf } from "./_leaf_certificate.ts";
import { type CacheLog, type LeafDiskCache, openLeafStore } from "./_leaf_disk_cache.ts";
import { LruCache } from "./_lru_cache.ts";

const DAY_MS = 24 * 60 * 60 * 1000;
const CA_NAME = "wirescope";

/** Where the files of a certificate authority live. */
export interface CertificateAuthorityPaths {
  /** `wirescope-ca.pem`: the private key and the certificate. Keep it secret (mode 0600). */
  key: string;
  /** `wirescope-ca-cert.pem`: the certificate as PEM, for tools such as curl (`--cacert`). */
  cert: string;
  /** `wirescope-ca-cert.cer`: the certificate as DER, for Android and Windows. */
  cer: string;
  /** `wirescope-ca-cert.p12`: the certificate alone in PKCS#12 without a password, for devices. */
  p12: string;
}

/** Options of {@linkcode CertificateAuthority.load}. */
export interface CertificateAuthorityOptions {
  /** How many leaf certificates to keep in memory; the least recently used go first. Default 1000. */
  leafCacheSize?: number;
  /**
   * How many leaf certificates to keep on disk across runs, in `<confdir>/leaf-cache/` (0700, files
   * 0600, oldest dropped first). 0 keeps none and the leaf key in memory only. Default 1000.
   */
  leafDiskCacheSize?: number;
  /** Where notes on ignored cache files go (damaged, unwritable). Default `console.warn`. */
  log?: (message: string) => void;
}

/** The host a leaf certificate is for. At least one name is needed. */
export interface LeafHost {
  /** The server name the client sent (TLS SNI); also its common name. An IP address works too. */
  sni?: string;
  /** The IP address the client connected to. */
  ip?: string;
  /** More names or addresses, e.g. those of the upstream server's certificate. */
  extraNames?: readonly string[];
}

/** A leaf certificate and its key, ready for `tls.createSecureContext({ key, cert })`. */
export interface Leaf {
  /** The names in the certificate: DNS names in lower case, IP addresses in canonical text. */
  readonly names: readonly string[];
  /** The certificate as PEM. */
  readonly certPem: string;
  /** The certificate as DER. */
  readonly certDer: Uint8Array;
  /** The private key as PKCS#8 PEM (ECDSA P-256, the same for every leaf of this CA and confdir). */
  readonly keyPem: string;
  /** The certificate followed by the CA certificate, as PEM. */
  readonly certChainPem: string;
  /** The start of its validity (two days in the past when issued). */
  readonly notBefore: Date;
  /** The end of its validity. */
  readonly notAfter: Date;
  /**
   * A node:tls server context with the key and the certificate, made on first use and then shared
   * by every connection this leaf serves (making one costs about as much as a signature).
   */
  readonly secureContext: tls.SecureContext;
}

interface CacheEntry {
  promise: Promise<Leaf>;
  renewAt: number;
}

interface CaMaterial {
  cert: forge.pki.Certificate;
  certDer: Uint8Array<ArrayBuffer>;
  pkcs8: Uint8Array<ArrayBuffer>;
}

/**
 * A certificate authority kept in a configuration directory, which signs leaf certificates for
 * intercepted hosts.
 *
 * @example
 * ```ts ignore
 * import tls from "node:tls";
 * import { CertificateAuthority } from "./certificate_authority.ts";
 *
 * const ca = await CertificateAuthority.load(`${Deno.env.get("HOME")}/.wirescope`);
 * const leaf = await ca.leafFor({ sni: "example.com" });
 * const context = tls.createSecureContext({ key: leaf.keyPem, cert: leaf.certPem });
 * ```
 */
export class CertificateAuthority {
  /** The configuration directory. */
  readonly confdir: string;
  /** The files of the CA. */
  readonly paths: Readonly<CertificateAuthorityPaths>;
  /** The CA certificate as PEM. */
  readonly certPem: string;
  /** The CA certificate as DER. */
  readonly certDer: Uint8Array;
  /** SHA-256 of the DER certificate, as colon-separated upper-case hex (like `openssl x509 -fingerprint`). */
  readonly fingerprintSha256: string;
  /** The end of the CA certificate's validity. */
  readonly notAfter: Date;

  readonly #issuer: LeafIssuer;
  readonly #leaves: LruCache<string, CacheEntry>;
  readonly #key: LeafKey;
  readonly #disk: LeafDiskCache | undefined;

  private constructor(
    confdir: string,
    paths: CertificateAuthorityPaths,
    certDer: Uint8Array,
    fingerprint: string,
    issuer: LeafIssuer,
    leafCacheSize: number,
    key: LeafKey,
    disk: LeafDiskCache | undefined,
  ) {
    this.confdir = confdir;
    this.paths = Object.freeze(paths);
    this.certDer = certDer;
    this.certPem = toPem("CERTIFICATE", certDer);
    this.fingerprintSha256 = fingerprint;
    this.notAfter = issuer.notAfter;
    this.#issuer = issuer;
    this.#leaves = new LruCache(leafCacheSize);
    this.#key = key;
    this.#disk = disk;
  }

  /**
   * Loads the CA of `confdir`, creating the directory (mode 0700) and a new CA on the first run.
   * The public files derived from the CA are written again when missing or out of date.
   *
   * @param confdir The configuration directory, e.g. `~/.wirescope`.
   * @param options Options.
   * @returns The CA.
   * @throws {SyntaxError} When `wirescope-ca.pem` exists but cannot be parsed or holds no key.
   * @throws {Error} When the files cannot be read or written, or the key does not fit the
   *   certificate. A broken CA file is never replaced silently.
   */
  static async load(
    confdir: string,
    options: CertificateAuthorityOptions = {},
  ): Promise<CertificateAuthority> {
    const leafCacheSize = options.leafCacheSize ?? 1000;
    if (!Number.isInteger(leafCacheSize) || leafCacheSize < 1) {
      throw new RangeError(`leafCacheSize must be a positive integer, got ${leafCacheSize}`);
    }
    const diskSize = options.leafDiskCacheSize ?? 1000;
    if (!Number.isInteger(diskSize) || diskSize < 0) {
      throw new RangeError(`leafDiskCacheSize must be a whole number, got ${diskSize}`);
    }
    const log: CacheLog = options.log ?? ((message) => console.warn(`wirescope: ${message}`));
    const paths: CertificateAuthorityPaths = {
      key: join(confdir, "wirescope-ca.pem"),
      cert: join(confdir, "wirescope-ca-cert.pem"),
      cer: join(confdir, "wirescope-ca-cert.cer"),
      p12: join(confdir, "wirescope-ca-cert.p12"),
    };
    await ensureDirectory(confdir);
    let text = await readCaFile(paths.key);
    if (text === undefined) {
      const created = await createCaFile();
      // Another process may have created a CA meanwhile; then both use that one.
      text = await publishKeyFile(paths.key, created) ? created : await readCaFile(paths.key);
      if (text === undefined) throw new Error(`Cannot read CA file ${paths.key}: it vanished after creation`);
    }
    const material = parseCaFile(text, paths.key);
    await writePublicFiles(paths, material);

    let signingKey: CryptoKey;
    try {
      signingKey = await crypto.subtle.importKey(
        "pkcs8",
        material.pkcs8,
        { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
        false,
        ["sign"],
      );
    } catch (error) {
      throw new Error(`Cannot use the private key of CA file ${paths.key}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    const issuer: LeafIssuer = {
      name: tbsFields(decodeDer(material.certDer, `CA certificate in ${paths.key}`)).subject,
      keyIdentifier: subjectKeyIdentifier(material.cert),
      notAfter: material.cert.validity.notAfter,
      signingKey,
    };
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", material.certDer));
    const fingerprint = colonHex(digest);
    // One leaf key for every leaf (as mitmproxy does): a new host then costs one signature and no
    // key generation, and leaves kept on disk stay usable in the next run.
    const store = await openLeafStore(join(confdir, "leaf-cache"), fingerprint, diskSize, log);
    return new CertificateAuthority(
      confdir,
      paths,
      material.certDer,
      fingerprint,
      issuer,
      leafCacheSize,
      store.key,
      store.cache,
    );
  }

  /**
   * A leaf certificate for a host, signed by this CA. Leaves are cached by their set of names,
   * so asking again (or concurrently) for the same names, in any order, returns the same leaf;
   * its common name is the first name of the request that created it.
   *
   * @param host The names: the SNI becomes the common name; every name, IP address or not,
   *   goes into the subjectAltName.
   * @returns The leaf.
   * @throws {TypeError} When `host` holds no name, `ip` is not an IP address, or a name cannot be
   *   written as an ASCII host name (as a rejected promise).
   */
  leafFor(host: LeafHost): Promise<Leaf> {
    const candidates: string[] = [];
    if (host.sni !== undefined && host.sni !== "") candidates.push(host.sni);
    if (host.ip !== undefined) {
      if (ipAddressBytes(host.ip.trim()) === undefined) {
        return Promise.reject(
          new TypeError(`Cannot issue a certificate for IP "${host.ip}": not an IP address`),
        );
      }
      candidates.push(host.ip);
    }
    candidates.push(...host.extraNames ?? []);
    let names;
    try {
      names = leafNames(candidates);
    } catch (error) {
      return Promise.reject(error);
    }
    if (names.length === 0) {
      return Promise.reject(
        new TypeError("Cannot issue a certificate: the host has no sni, ip or extraNames"),
      );
    }
    const key = names.map((name) => name.text).sort().join(" ");
    const cached = this.#leaves.get(key);
    if (cached !== undefined && Date.now() < cached.renewAt) return cached.promise;

    const entry: CacheEntry = { promise: this.#obtain(key, names), renewAt: Infinity };
    this.#leaves.set(key, entry);
    entry.promise.then(
      (leaf) => {
        // Renew a day before expiry; if the CA itself ends sooner, try again in an hour.
        const now = Date.now();
        entry.renewAt = Math.max(leaf.notAfter.getTime() - DAY_MS, now + DAY_MS / 24);
      },
      () => {
        if (this.#leaves.peek(key) === entry) this.#leaves.delete(key);
      },
    );
    return entry.promise;
  }

  /** The leaf for a name set from the disk cache, or a newly signed one (then stored there). */
  async #obtain(namesKey: string, names: LeafName[]): Promise<Leaf> {
    const stored = await this.#disk?.get(namesKey, DAY_MS);
    if (stored !== undefined) return this.#leaf(stored.names, stored.der, stored.notBefore, stored.notAfter);
    const signed = await signLeaf(this.#issuer, this.#key, names);
    const texts = names.map((name) => name.text);
    await this.#disk?.put(namesKey, { names: texts, ...signed });
    return this.#leaf(texts, signed.der, signed.notBefore, signed.notAfter);
  }

  #leaf(names: string[], der: Uint8Array, notBefore: Date, notAfter: Date): Leaf {
    const certPem = toPem("CERTIFICATE", der);
    const keyPem = this.#key.keyPem;
    let context: tls.SecureContext | undefined;
    return Object.freeze({
      names: Object.freeze(names),
      certPem,
      certDer: der,
      keyPem,
      certChainPem: certPem + this.certPem,
      notBefore,
      notAfter,
      get secureContext() {
        return context ??= tls.createSecureContext({ key: keyPem, cert: certPem });
      },
    });
  }
}

async function ensureDirectory(dir: string): Promise<void> {
  try {
    const info = await Deno.stat(dir);
    if (!info.isDirectory) throw new Error(`Cannot use ${dir} as configuration directory: not a directory`);
    return;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  // The umask may have taken bits away; set exactly 0700.
  if (Deno.build.os !== "windows") await Deno.chmod(dir, 0o700);
}

/** Reads the CA file, or returns `undefined` when it does not exist yet. */
async function readCaFile(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`Cannot read CA file ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/** Makes a new CA: the text of `wirescope-ca.pem`, PKCS#8 key then certificate. */
async function createCaFile(): Promise<string> {
  // WebCrypto makes an RSA key in tens of milliseconds; forge's JavaScript takes seconds.
  const pair = await crypto.subtle.generateKey(
    {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    true,
    ["sign", "verify"],
  );
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const key = forge.pki.privateKeyFromAsn1(decodeDer(pkcs8, "generated CA key"));

  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
  cert.serialNumber = forge.util.bytesToHex(bytesToBinary(randomSerial()));
  const notBefore = new Date(Math.floor((Date.now() - 2 * DAY_MS) / 1000) * 1000);
  const notAfter = new Date(notBefore);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + 10);
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = notAfter;
  const name = [{ name: "commonName", value: CA_NAME }, { name: "organizationName", value: CA_NAME }];
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  cert.sign(key, forge.md.sha256.create());
  return toPem("PRIVATE KEY", pkcs8) + toPem("CERTIFICATE", encodeDer(forge.pki.certificateToAsn1(cert)));
}

/**
 * Writes the CA file unless one exists: the text goes to a private temporary file that is then
 * hard-linked into place, which fails instead of overwriting.
 *
 * @returns Whether this call created the file.
 */
async function publishKeyFile(path: string, text: string): Promise<boolean> {
  const temporary = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    await Deno.writeTextFile(temporary, text, { mode: 0o600, createNew: true });
    if (Deno.build.os !== "windows") await Deno.chmod(temporary, 0o600);
    try {
      await Deno.link(temporary, path);
      return true;
    } catch (error) {
      if (error instanceof Deno.errors.AlreadyExists) return false;
    }
    // No hard links on this file system: fall back to exclusive creation.
    try {
      await Deno.writeTextFile(path, text, { mode: 0o600, createNew: true });
      return true;
    } catch (error) {
      if (error instanceof Deno.errors.AlreadyExists) return false;
      throw error;
    }
  } catch (error) {
    throw new Error(`Cannot write CA file ${path}: ${(error as Error).message}`, { cause: error });
  } finally {
    await Deno.remove(temporary).catch(() => {});
  }
}

function parseCaFile(text: string, path: string): CaMaterial {
  const fail = (why: string, cause?: unknown) =>
    new SyntaxError(`Cannot parse CA file ${path}: ${why}`, cause === undefined ? undefined : { cause });
  let blocks: forge.pem.ObjectPEM[];
  try {
    blocks = forge.pem.decode(text);
  } catch (error) {
    throw fail((error as Error).message, error);
  }
  if (
    blocks.some((block) => block.type === "ENCRYPTED PRIVATE KEY" || block.procType?.type === "ENCRYPTED")
  ) {
    throw fail("the private key is encrypted; store it without a passphrase");
  }
  const keyBlock = blocks.find((block) => block.type === "PRIVATE KEY" || block.type === "RSA PRIVATE KEY");
  if (keyBlock === undefined) throw fail('no "PRIVATE KEY" or "RSA PRIVATE KEY" block');
  const certBlock = blocks.find((block) => block.type === "CERTIFICATE");
  if (certBlock === undefined) throw fail('no "CERTIFICATE" block');

  let key: forge.pki.rsa.PrivateKey;
  try {
    key = forge.pki.privateKeyFromAsn1(forge.asn1.fromDer(keyBlock.body));
  } catch (error) {
    throw fail(`the private key is damaged or not an RSA key (${(error as Error).message})`, error);
  }
  let cert: forge.pki.Certificate;
  try {
    cert = forge.pki.certificateFromAsn1(forge.asn1.fromDer(certBlock.body));
  } catch (error) {
    throw fail(`the certificate is damaged or has no RSA key (${(error as Error).message})`, error);
  }
  const publicKey = cert.publicKey as forge.pki.rsa.PublicKey;
  if (!publicKey.n.equals(key.n) || !publicKey.e.equals(key.e)) {
    throw new Error(`CA file ${path} is inconsistent: its private key does not belong to its certificate`);
  }
  const constraints = cert.getExtension("basicConstraints") as { cA?: boolean } | undefined;
  if (constraints?.cA !== true) {
    throw new Error(`CA file ${path} holds a certificate that is not a CA (no basicConstraints CA:TRUE)`);
  }
  const pkcs8 = encodeDer(forge.pki.wrapRsaPrivateKey(forge.pki.privateKeyToAsn1(key)));
  return { cert, certDer: binaryToBytes(certBlock.body), pkcs8 };
}

function subjectKeyIdentifier(cert: forge.pki.Certificate): Uint8Array {
  const ext = cert.getExtension("subjectKeyIdentifier") as { subjectKeyIdentifier?: string } | undefined;
  if (ext?.subjectKeyIdentifier !== undefined) {
    return binaryToBytes(forge.util.hexToBytes(ext.subjectKeyIdentifier));
  }
  return binaryToBytes(cert.generateSubjectKeyIdentifier().getBytes());
}

/** Writes the PEM, DER and PKCS#12 copies of the certificate when missing or out of date. */
async function writePublicFiles(paths: CertificateAuthorityPaths, material: CaMaterial): Promise<void> {
  const pem = new TextEncoder().encode(toPem("CERTIFICATE", material.certDer));
  let changed = false;
  for (const [path, bytes] of [[paths.cert, pem], [paths.cer, material.certDer]] as const) {
    if (!sameBytes(await readIfExists(path), bytes)) {
      await writeFileAtomic(path, bytes);
      changed = true;
    }
  }
  // A PKCS#12 file holds a random salt and cannot be compared: rewrite it with the others, or when missing.
  if (changed || (await readIfExists(paths.p12)) === undefined) {
    const p12 = forge.pkcs12.toPkcs12Asn1(null, material.cert, "", {
      algorithm: "3des",
      friendlyName: CA_NAME,
    });
    await writeFileAtomic(paths.p12, encodeDer(p12));
  }
}

async function readIfExists(path: string): Promise<Uint8Array | undefined> {
  try {
    return await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`Cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && a.length === b.length && a.every((byte, i) => byte === b[i]);
}

async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const temporary = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    await Deno.writeFile(temporary, bytes, { mode: 0o644, createNew: true });
    await Deno.rename(temporary, path);
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw new Error(`Cannot write ${path}: ${(error as Error).message}`, { cause: error });
  }
}
