/**
 * The first look at a new TCP connection: is the client starting TLS (and if so, which server
 * name and protocols does its ClientHello ask for), speaking plain HTTP/1, or something else?
 *
 * Everything here works on the bytes received so far and never waits: a `need-more` answer means
 * "call again when more bytes have arrived". A ClientHello may be split over several TLS records
 * (large post-quantum key shares make hellos of 1.8 KB and more); the handshake message is
 * reassembled from the records' payloads.
 * @module
 */

/** What a ClientHello says about the connection the client wants. */
export interface ClientHello {
  /** The host name from the server_name extension; absent when the client sent none. */
  sni?: string;
  /** Protocols offered in the ALPN extension, in the client's order; empty without one. */
  alpn: string[];
  /** The `legacy_version` field (0x0303 for TLS 1.2 and 1.3 clients). */
  legacyVersion: number;
  /** Versions from the supported_versions extension, as sent (GREASE values included). */
  supportedVersions: number[];
  /** Cipher suites, as sent (GREASE values included). */
  cipherSuites: number[];
  /** Named groups from the supported_groups extension, as sent; empty without one. */
  supportedGroups: number[];
  /** Schemes from the signature_algorithms extension, as sent; empty without one. */
  signatureSchemes: number[];
}

/** How to handle a new connection, judged from its first bytes. */
export type Classification =
  | { kind: "need-more" }
  | { kind: "tls"; hello: ClientHello }
  | { kind: "http" }
  /** The HTTP/2 connection preface (`PRI * HTTP/2.0...`): prior-knowledge h2c, or h2 inside TLS. */
  | { kind: "h2" }
  | { kind: "tcp" };

/** The most bytes of the stream (records, headers included) a ClientHello may take. */
export const MAX_CLIENT_HELLO_SIZE = 64 * 1024;
/** The longest HTTP/1 request line waited for before the bytes are treated as raw TCP. */
export const MAX_REQUEST_LINE_SIZE = 8 * 1024;

const RECORD_HEADER = 5;
const MAX_RECORD_PAYLOAD = 16384;
const CONTENT_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const EXT_SUPPORTED_GROUPS = 10;
const EXT_SIGNATURE_ALGORITHMS = 13;
const EXT_ALPN = 16;
const EXT_SUPPORTED_VERSIONS = 43;

function fail(reason: string): never {
  throw new SyntaxError(`Cannot parse ClientHello: ${reason}`);
}

/**
 * Looks at the first bytes a client sent on a new connection and decides how to handle it.
 *
 * A TLS handshake record yields `tls` once the whole ClientHello is in; bytes that begin like a
 * TLS record but do not hold a valid ClientHello yield `tcp` (they are relayed untouched rather
 * than rejected). A request line such as `GET / HTTP/1.1` yields `http`; the HTTP/2 connection
 * preface yields `h2`. While the bytes are still a plausible start of any, the answer is `need-more`.
 *
 * @param buf Every byte the client has sent so far.
 * @returns The classification.
 *
 * @example
 * ```ts
 * import { classifyFirstBytes } from "./client_hello.ts";
 * const bytes = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: example.test\r\n\r\n");
 * console.log(classifyFirstBytes(bytes).kind); // http
 * console.log(classifyFirstBytes(bytes.subarray(0, 6)).kind); // need-more
 * ```
 */
export function classifyFirstBytes(buf: Uint8Array): Classification {
  if (buf.length === 0) return { kind: "need-more" };
  if (buf[0] === CONTENT_HANDSHAKE) {
    let hello: ClientHello | null;
    try {
      hello = parseClientHello(buf);
    } catch {
      return { kind: "tcp" };
    }
    return hello === null ? { kind: "need-more" } : { kind: "tls", hello };
  }
  const preface = matchesH2Preface(buf);
  if (preface !== "no") return { kind: preface };
  return { kind: scanRequestLine(buf) };
}

/** `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, the connection preface of HTTP/2 (RFC 9113 §3.4). */
const H2_PREFACE = [..."PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"].map((c) => c.charCodeAt(0));

/** Whether `buf` starts with the HTTP/2 preface (`h2`), is a shorter start of it, or not. */
function matchesH2Preface(buf: Uint8Array): "h2" | "need-more" | "no" {
  const n = Math.min(buf.length, H2_PREFACE.length);
  for (let i = 0; i < n; i++) if (buf[i] !== H2_PREFACE[i]) return "no";
  return n === H2_PREFACE.length ? "h2" : "need-more";
}

const SP = 0x20, CR = 0x0d, LF = 0x0a;
const HTTP_1 = [0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e]; // "HTTP/1."
const MAX_METHOD = 16;

/** Whether a byte may appear in a method here: A-Z, and `-` or `_` after the first. */
function isMethodByte(b: number, first: boolean): boolean {
  return (b >= 0x41 && b <= 0x5a) || (!first && (b === 0x2d || b === 0x5f));
}

/**
 * Checks whether `buf` starts with an HTTP/1 request line: `METHOD SP target SP HTTP/1.d`, then
 * CRLF or LF. Stops at the first byte that cannot belong to one.
 */
function scanRequestLine(buf: Uint8Array): "need-more" | "http" | "tcp" {
  const end = Math.min(buf.length, MAX_REQUEST_LINE_SIZE);
  let i = 0;
  // Method.
  while (i < end && buf[i] !== SP) {
    if (i >= MAX_METHOD || !isMethodByte(buf[i]!, i === 0)) return "tcp";
    i++;
  }
  if (i === end) return moreOrGiveUp(end, buf.length);
  if (i === 0) return "tcp";
  i++;
  // Target: visible characters, at least one.
  const targetStart = i;
  while (i < end && buf[i] !== SP) {
    const b = buf[i]!;
    if (b < 0x21 || b === 0x7f) return "tcp";
    i++;
  }
  if (i === end) return moreOrGiveUp(end, buf.length);
  if (i === targetStart) return "tcp";
  i++;
  // Version.
  for (const expected of HTTP_1) {
    if (i === end) return moreOrGiveUp(end, buf.length);
    if (buf[i] !== expected) return "tcp";
    i++;
  }
  if (i === end) return moreOrGiveUp(end, buf.length);
  if (buf[i]! < 0x30 || buf[i]! > 0x39) return "tcp";
  i++;
  // Line end.
  if (i === end) return moreOrGiveUp(end, buf.length);
  if (buf[i] === LF) return "http";
  if (buf[i] !== CR) return "tcp";
  i++;
  if (i === end) return moreOrGiveUp(end, buf.length);
  return buf[i] === LF ? "http" : "tcp";
}

/** The scan ran out of bytes: wait for more unless the line is already too long. */
function moreOrGiveUp(scanned: number, available: number): "need-more" | "tcp" {
  return scanned < MAX_REQUEST_LINE_SIZE && scanned === available ? "need-more" : "tcp";
}

/**
 * Parses a TLS ClientHello from the start of a TCP stream (possibly spanning several TLS records).
 *
 * The hello is returned as soon as its handshake message is complete; bytes after it are
 * ignored. Records and the message header are checked as soon as they arrive, so a stream that
 * cannot be a ClientHello is rejected early rather than waited on.
 *
 * @param buf The bytes the client has sent so far.
 * @returns The hello, or `null` when more bytes are needed.
 * @throws {SyntaxError} When the bytes are not a valid ClientHello, or it is larger than
 *   {@linkcode MAX_CLIENT_HELLO_SIZE}.
 *
 * @example
 * ```ts
 * import { parseClientHello } from "./client_hello.ts";
 * console.log(parseClientHello(new Uint8Array([0x16, 0x03, 0x01]))); // null
 * ```
 */
export function parseClientHello(buf: Uint8Array): ClientHello | null {
  // Gather the payloads of handshake records until the hello's length is known and reached.
  const parts: Uint8Array[] = [];
  let gathered = 0;
  let messageSize = -1;
  let offset = 0;
  let headers = 0;
  while (messageSize < 0 || gathered < messageSize) {
    if (buf.length - offset < RECORD_HEADER) {
      checkPartialRecordHeader(buf.subarray(offset), offset);
      return null;
    }
    const type = buf[offset]!;
    const major = buf[offset + 1]!;
    const minor = buf[offset + 2]!;
    const length = (buf[offset + 3]! << 8) | buf[offset + 4]!;
    if (type !== CONTENT_HANDSHAKE) {
      fail(`record at offset ${offset} has content type ${type}, not handshake (22)`);
    }
    if (major !== 3 || minor > 4) {
      fail(`record at offset ${offset} has version ${hex16((major << 8) | minor)}`);
    }
    if (length > MAX_RECORD_PAYLOAD) fail(`record length ${length} exceeds ${MAX_RECORD_PAYLOAD}`);
    if (length === 0) fail(`record at offset ${offset} is empty`);
    const payload = buf.subarray(offset + RECORD_HEADER, offset + RECORD_HEADER + length);
    parts.push(payload);
    gathered += payload.length;
    offset += RECORD_HEADER + payload.length;
    headers += RECORD_HEADER;
    if (messageSize < 0 && gathered >= 4) {
      const head = concat(parts, 4);
      if (head[0] !== HANDSHAKE_CLIENT_HELLO) {
        fail(`handshake message type ${head[0]} is not ClientHello (1)`);
      }
      messageSize = 4 + ((head[1]! << 16) | (head[2]! << 8) | head[3]!);
    }
    if (messageSize >= 0 && headers + messageSize > MAX_CLIENT_HELLO_SIZE) {
      fail(
        `a hello of ${messageSize} bytes in records with ${headers} header bytes exceeds ${MAX_CLIENT_HELLO_SIZE}`,
      );
    }
    if (messageSize < 0 && gathered >= 1 && parts[0]![0] !== HANDSHAKE_CLIENT_HELLO) {
      fail(`handshake message type ${parts[0]![0]} is not ClientHello (1)`);
    }
    if (payload.length < length && (messageSize < 0 || gathered < messageSize)) return null;
  }
  const message = concat(parts, messageSize);
  return parseBody(message.subarray(4));
}

/** Rejects the start of a record header early when it already cannot be a handshake record. */
function checkPartialRecordHeader(head: Uint8Array, offset: number): void {
  if (head.length >= 1 && head[0] !== CONTENT_HANDSHAKE) {
    fail(`record at offset ${offset} has content type ${head[0]}, not handshake (22)`);
  }
  if (head.length >= 2 && head[1] !== 3) fail(`record at offset ${offset} has version major ${head[1]}`);
  if (head.length >= 3 && head[2]! > 4) fail(`record at offset ${offset} has version minor ${head[2]}`);
}

/** The first `size` bytes of the concatenated parts (a view when the first part has them all). */
function concat(parts: Uint8Array[], size: number): Uint8Array {
  const first = parts[0]!;
  if (first.length >= size) return first.subarray(0, size);
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    if (at >= size) break;
    const take = part.subarray(0, size - at);
    out.set(take, at);
    at += take.length;
  }
  return out;
}

function hex16(n: number): string {
  return `0x${n.toString(16).padStart(4, "0")}`;
}

/** A bounds-checked cursor over one handshake message body. */
class Reader {
  #buf: Uint8Array;
  #at: number;
  #end: number;
  #what: string;

  constructor(buf: Uint8Array, what: string, start = 0, end = buf.length) {
    this.#buf = buf;
    this.#at = start;
    this.#end = end;
    this.#what = what;
  }

  get remaining(): number {
    return this.#end - this.#at;
  }

  #need(n: number, field: string): void {
    if (this.remaining < n) {
      fail(`${this.#what} ends inside ${field} (needs ${n} bytes, ${this.remaining} left)`);
    }
  }

  u8(field: string): number {
    this.#need(1, field);
    return this.#buf[this.#at++]!;
  }

  u16(field: string): number {
    this.#need(2, field);
    const n = (this.#buf[this.#at]! << 8) | this.#buf[this.#at + 1]!;
    this.#at += 2;
    return n;
  }

  bytes(n: number, field: string): Uint8Array {
    this.#need(n, field);
    const out = this.#buf.subarray(this.#at, this.#at + n);
    this.#at += n;
    return out;
  }

  /** A reader over the next `n` bytes (which this reader skips). */
  sub(n: number, field: string): Reader {
    return new Reader(this.bytes(n, field), field);
  }
}

function parseBody(body: Uint8Array): ClientHello {
  const r = new Reader(body, "ClientHello");
  const legacyVersion = r.u16("legacy_version");
  r.bytes(32, "random");
  const sessionIdLength = r.u8("legacy_session_id length");
  if (sessionIdLength > 32) fail(`session id length ${sessionIdLength} exceeds 32`);
  r.bytes(sessionIdLength, "legacy_session_id");
  const suitesLength = r.u16("cipher_suites length");
  if (suitesLength < 2 || suitesLength % 2 !== 0) {
    fail(`cipher_suites length ${suitesLength} is not a positive even number`);
  }
  const suites = r.sub(suitesLength, "cipher_suites");
  const cipherSuites: number[] = [];
  while (suites.remaining > 0) cipherSuites.push(suites.u16("cipher suite"));
  const compressionLength = r.u8("legacy_compression_methods length");
  if (compressionLength < 1) fail("legacy_compression_methods is empty");
  r.bytes(compressionLength, "legacy_compression_methods");

  const hello: ClientHello = {
    alpn: [],
    legacyVersion,
    supportedVersions: [],
    cipherSuites,
    supportedGroups: [],
    signatureSchemes: [],
  };
  // Before TLS 1.3, a hello may end here without an extensions block.
  if (r.remaining === 0) return hello;
  const extensionsLength = r.u16("extensions length");
  if (extensionsLength !== r.remaining) {
    fail(`extensions length ${extensionsLength} does not match the ${r.remaining} bytes left`);
  }
  const seen = new Set<number>();
  while (r.remaining > 0) {
    const type = r.u16("extension type");
    const length = r.u16("extension length");
    const data = r.sub(length, `extension ${type}`);
    if (seen.has(type)) fail(`extension ${type} appears twice`);
    seen.add(type);
    if (type === EXT_SERVER_NAME) {
      const sni = parseServerName(data);
      if (sni !== undefined) hello.sni = sni;
    } else if (type === EXT_ALPN) {
      hello.alpn = parseAlpn(data);
    } else if (type === EXT_SUPPORTED_VERSIONS) {
      hello.supportedVersions = parseSupportedVersions(data);
    } else if (type === EXT_SUPPORTED_GROUPS) {
      hello.supportedGroups = parseU16List(data, "named_group_list");
    } else if (type === EXT_SIGNATURE_ALGORITHMS) {
      hello.signatureSchemes = parseU16List(data, "supported_signature_algorithms");
    }
  }
  return hello;
}

/** The first host_name entry of a server_name extension (RFC 6066, section 3). */
function parseServerName(r: Reader): string | undefined {
  if (r.remaining === 0) return undefined;
  const listLength = r.u16("server_name_list length");
  if (listLength !== r.remaining) {
    fail(`server_name_list length ${listLength} does not match the ${r.remaining} bytes left`);
  }
  let hostName: string | undefined;
  while (r.remaining > 0) {
    const nameType = r.u8("server name type");
    const length = r.u16("server name length");
    const name = r.bytes(length, "server name");
    if (nameType !== 0 || hostName !== undefined) continue;
    if (length === 0) fail("server name is empty");
    for (const b of name) {
      if (b < 0x21 || b > 0x7e) fail(`server name contains byte 0x${b.toString(16).padStart(2, "0")}`);
    }
    hostName = String.fromCharCode(...name);
  }
  return hostName;
}

/** The protocol names of an ALPN extension (RFC 7301, section 3.1), one char per byte. */
function parseAlpn(r: Reader): string[] {
  const listLength = r.u16("protocol_name_list length");
  if (listLength !== r.remaining) {
    fail(`protocol_name_list length ${listLength} does not match the ${r.remaining} bytes left`);
  }
  const names: string[] = [];
  while (r.remaining > 0) {
    const length = r.u8("protocol name length");
    if (length === 0) fail("ALPN protocol name is empty");
    names.push(String.fromCharCode(...r.bytes(length, "protocol name")));
  }
  return names;
}

/** The version list of a supported_versions extension (RFC 8446, section 4.2.1). */
function parseSupportedVersions(r: Reader): number[] {
  const listLength = r.u8("supported_versions length");
  if (listLength !== r.remaining || listLength < 2 || listLength % 2 !== 0) {
    fail(`supported_versions length ${listLength} does not fit the ${r.remaining} bytes left`);
  }
  const versions: number[] = [];
  while (r.remaining > 0) versions.push(r.u16("supported version"));
  return versions;
}

/** A list of 16-bit values behind a 16-bit byte length (supported_groups, signature_algorithms). */
function parseU16List(r: Reader, what: string): number[] {
  const listLength = r.u16(`${what} length`);
  if (listLength !== r.remaining || listLength % 2 !== 0) {
    fail(`${what} length ${listLength} does not fit the ${r.remaining} bytes left`);
  }
  const values: number[] = [];
  while (r.remaining > 0) values.push(r.u16(what));
  return values;
}
