/**
 * DNS messages in wire format (RFC 1035, section 4), read into plain objects so DNS flows can be
 * recorded and shown, plus the two messages the proxy writes itself: a query (for tests and
 * health checks) and an error reply to a query it could not forward.
 *
 * Names are given in presentation form without the trailing dot (`www.example.com`; the root is
 * `.`), with `\.`, `\\` and `\DDD` escapes for bytes that would otherwise be ambiguous or
 * unprintable. Record data is given in presentation form too; types this module does not know
 * use the generic form of RFC 3597 (`\# 4 0a000001`).
 * @module
 */
import { formatIpv6 as formatIpv6Text } from "../net/ip.ts";

/** One entry of the question section. */
export interface DnsQuestion {
  /** The name asked about, e.g. `www.example.com`. */
  name: string;
  /** The numeric type, e.g. 1 for A. */
  type: number;
  /** The mnemonic of `type`, e.g. `A`, or `TYPE<n>` for one without a name here. */
  typeName: string;
  /** The numeric class (1 is IN). */
  class: number;
}

/** One resource record of the answer, authority or additional section. */
export interface DnsRecord {
  /** The owner name. */
  name: string;
  /** The numeric type. */
  type: number;
  /** The mnemonic of `type`, or `TYPE<n>`. */
  typeName: string;
  /** The numeric class (for OPT, the sender's UDP payload size). */
  class: number;
  /** Time to live in seconds (for OPT, the extended rcode, version and flags). */
  ttl: number;
  /**
   * The data in presentation form: `1.2.3.4` (A), `2001:db8::1` (AAAA), a name (CNAME, NS, PTR),
   * `10 mail.example.com` (MX), quoted strings joined by spaces (TXT),
   * `priority weight port target` (SRV), `mname rname serial refresh retry expire minimum`
   * (SOA), and `\# length hex` for every other type.
   */
  data: string;
}

/** A parsed DNS message. */
export interface DnsMessage {
  /** The transaction id. */
  id: number;
  /** Whether this is a response (the QR bit). */
  response: boolean;
  /** The opcode (0 is a standard query). */
  opcode: number;
  /** The response code, including the upper bits carried by an OPT record. */
  rcode: number;
  /** The mnemonic of `rcode`, e.g. `NXDOMAIN`, or `RCODE<n>`. */
  rcodeName: string;
  /** The header flags. */
  flags: { aa: boolean; tc: boolean; rd: boolean; ra: boolean; ad: boolean; cd: boolean };
  /** The question section. */
  questions: DnsQuestion[];
  /** The answer section. */
  answers: DnsRecord[];
  /** The authority section. */
  authorities: DnsRecord[];
  /** The additional section (an OPT pseudo-record included). */
  additionals: DnsRecord[];
}

const HEADER_SIZE = 12;
const MAX_LABEL = 63;
const MAX_NAME = 255;
/** More pointers than a legitimate name of 255 bytes could need. */
const MAX_POINTERS = 128;

const TYPE_A = 1, TYPE_NS = 2, TYPE_CNAME = 5, TYPE_SOA = 6, TYPE_PTR = 12, TYPE_MX = 15;
const TYPE_TXT = 16, TYPE_AAAA = 28, TYPE_SRV = 33, TYPE_OPT = 41;
const CLASS_IN = 1, CLASS_NONE = 254, CLASS_ANY = 255;

const TYPE_NAMES = new Map<number, string>([
  [TYPE_A, "A"],
  [TYPE_NS, "NS"],
  [TYPE_CNAME, "CNAME"],
  [TYPE_SOA, "SOA"],
  [TYPE_PTR, "PTR"],
  [TYPE_MX, "MX"],
  [TYPE_TXT, "TXT"],
  [TYPE_AAAA, "AAAA"],
  [TYPE_SRV, "SRV"],
  [TYPE_OPT, "OPT"],
  [64, "SVCB"],
  [65, "HTTPS"],
  [255, "ANY"],
  [257, "CAA"],
]);

const RCODE_NAMES = [
  "NOERROR",
  "FORMERR",
  "SERVFAIL",
  "NXDOMAIN",
  "NOTIMP",
  "REFUSED",
  "YXDOMAIN",
  "YXRRSET",
  "NXRRSET",
  "NOTAUTH",
  "NOTZONE",
  "DSOTYPENI",
];
const EXTENDED_RCODE_NAMES = new Map<number, string>([[16, "BADVERS"], [23, "BADCOOKIE"]]);

function typeNameOf(type: number): string {
  return TYPE_NAMES.get(type) ?? `TYPE${type}`;
}

function rcodeNameOf(rcode: number): string {
  return RCODE_NAMES[rcode] ?? EXTENDED_RCODE_NAMES.get(rcode) ?? `RCODE${rcode}`;
}

function fail(reason: string): never {
  throw new SyntaxError(`Cannot parse DNS message: ${reason}`);
}

/** Fails unless `n` bytes from `at` lie inside `buf` (or before `end`). */
function need(buf: Uint8Array, at: number, n: number, what: string, end = buf.length): void {
  if (at + n > end) {
    fail(`${what} at offset ${at} needs ${n} bytes but only ${Math.max(0, end - at)} are left`);
  }
}

const u16 = (buf: Uint8Array, at: number) => (buf[at]! << 8) | buf[at + 1]!;
const u32 = (buf: Uint8Array, at: number) =>
  ((buf[at]! << 24) | (buf[at + 1]! << 16) | (buf[at + 2]! << 8) | buf[at + 3]!) >>> 0;

/** A name read from a message: its labels and where the name ends in the place it started. */
interface WireName {
  labels: Uint8Array[];
  end: number;
}

/** Reads a possibly compressed name starting at `start` (RFC 1035, section 4.1.4). */
function readName(buf: Uint8Array, start: number): WireName {
  const labels: Uint8Array[] = [];
  const pointers: number[] = [];
  let at = start;
  let end = -1;
  let size = 1; // the root label's length byte
  for (;;) {
    if (at >= buf.length) fail(`name at offset ${start} runs past the end of the message`);
    const length = buf[at]!;
    if (length === 0) {
      if (end < 0) end = at + 1;
      return { labels, end };
    }
    if ((length & 0xc0) === 0xc0) {
      need(buf, at, 2, "compression pointer");
      if (pointers.includes(at)) fail(`compression pointer loop in the name at offset ${start}`);
      if (pointers.length >= MAX_POINTERS) {
        fail(`name at offset ${start} follows more than ${MAX_POINTERS} compression pointers`);
      }
      pointers.push(at);
      if (end < 0) end = at + 2;
      const target = ((length & 0x3f) << 8) | buf[at + 1]!;
      if (target >= buf.length) {
        fail(`compression pointer at offset ${at} points past the end of the message (to ${target})`);
      }
      at = target;
      continue;
    }
    if (length > MAX_LABEL) fail(`label length ${length} at offset ${at} exceeds ${MAX_LABEL}`);
    need(buf, at + 1, length, "label");
    size += 1 + length;
    if (size > MAX_NAME) fail(`name at offset ${start} exceeds ${MAX_NAME} bytes`);
    labels.push(buf.subarray(at + 1, at + 1 + length));
    at += 1 + length;
  }
}

/** Presentation form of a name's labels. */
function nameText(labels: Uint8Array[]): string {
  if (labels.length === 0) return ".";
  return labels.map((label) => escapeBytes(label, (b) => b === 0x2e || b === 0x5c || b < 0x21 || b > 0x7e))
    .join(".");
}

/** Text of `bytes` where the bytes `special` picks are escaped (`\.` or `\DDD`). */
function escapeBytes(bytes: Uint8Array, special: (b: number) => boolean): string {
  let out = "";
  for (const b of bytes) {
    if (!special(b)) out += String.fromCharCode(b);
    else if (b > 0x20 && b < 0x7f) out += `\\${String.fromCharCode(b)}`;
    else out += `\\${String(b).padStart(3, "0")}`;
  }
  return out;
}

function formatIpv4(buf: Uint8Array, at: number): string {
  return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
}

/** An IPv6 address in the canonical text form of RFC 5952 (IPv4-mapped ones as `::ffff:a.b.c.d`). */
function formatIpv6(buf: Uint8Array, at: number): string {
  let mapped = buf[at + 10] === 0xff && buf[at + 11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) mapped = buf[at + i] === 0;
  return mapped ? `::ffff:${formatIpv4(buf, at + 12)}` : formatIpv6Text(buf, at);
}

/** The generic presentation of record data (RFC 3597, section 5). */
function genericData(rdata: Uint8Array): string {
  if (rdata.length === 0) return "\\# 0";
  let hex = "";
  for (const b of rdata) hex += b.toString(16).padStart(2, "0");
  return `\\# ${rdata.length} ${hex}`;
}

/** Presentation form of one record's data, which lies in `buf` from `at` to `end`. */
function recordData(buf: Uint8Array, type: number, cls: number, at: number, end: number): string {
  const length = end - at;
  const kind = `${typeNameOf(type)} data`;
  const label = `${kind} at offset ${at}`;
  const exactly = (n: number) => {
    if (length !== n) fail(`${label} is ${length} bytes, not ${n}`);
  };
  /** Reads a name inside the data and checks it does not run past the data. */
  const name = (from: number) => {
    const wire = readName(buf, from);
    if (wire.end > end) fail(`${label} runs past its length of ${length}`);
    return { text: nameText(wire.labels), end: wire.end };
  };
  const nameToEnd = (from: number) => {
    const n = name(from);
    if (n.end !== end) fail(`${label} has ${end - n.end} bytes after its name`);
    return n.text;
  };
  // Deleting records in a dynamic update carries no data (RFC 2136, section 2.5).
  if (length === 0 && (cls === CLASS_ANY || cls === CLASS_NONE)) return genericData(new Uint8Array());
  switch (type) {
    case TYPE_A:
      if (cls !== CLASS_IN) break;
      exactly(4);
      return formatIpv4(buf, at);
    case TYPE_AAAA:
      if (cls !== CLASS_IN) break;
      exactly(16);
      return formatIpv6(buf, at);
    case TYPE_NS:
    case TYPE_CNAME:
    case TYPE_PTR:
      return nameToEnd(at);
    case TYPE_MX:
      need(buf, at, 2, kind, end);
      return `${u16(buf, at)} ${nameToEnd(at + 2)}`;
    case TYPE_SRV:
      if (cls !== CLASS_IN) break;
      need(buf, at, 6, kind, end);
      return `${u16(buf, at)} ${u16(buf, at + 2)} ${u16(buf, at + 4)} ${nameToEnd(at + 6)}`;
    case TYPE_SOA: {
      const mname = name(at);
      const rname = name(mname.end);
      need(buf, rname.end, 20, "SOA fields", end);
      if (rname.end + 20 !== end) fail(`${label} has ${end - rname.end - 20} bytes after its fields`);
      const numbers = [0, 4, 8, 12, 16].map((o) => u32(buf, rname.end + o));
      return [mname.text, rname.text, ...numbers].join(" ");
    }
    case TYPE_TXT: {
      if (length === 0) fail(`${label} holds no strings`);
      const strings: string[] = [];
      for (let i = at; i < end;) {
        const n = buf[i]!;
        need(buf, i + 1, n, `${typeNameOf(type)} string`, end);
        const bytes = buf.subarray(i + 1, i + 1 + n);
        strings.push(`"${escapeBytes(bytes, (b) => b === 0x22 || b === 0x5c || b < 0x20 || b > 0x7e)}"`);
        i += 1 + n;
      }
      return strings.join(" ");
    }
  }
  return genericData(buf.subarray(at, end));
}

/** Reads `count` records from `at`; returns them and the offset after the last. */
function readRecords(buf: Uint8Array, at: number, count: number, into: DnsRecord[]): number {
  for (let i = 0; i < count; i++) {
    const owner = readName(buf, at);
    at = owner.end;
    need(buf, at, 10, "record fields");
    const type = u16(buf, at);
    const cls = u16(buf, at + 2);
    const ttl = u32(buf, at + 4);
    const length = u16(buf, at + 8);
    at += 10;
    need(buf, at, length, `${typeNameOf(type)} data`);
    const data = recordData(buf, type, cls, at, at + length);
    at += length;
    into.push({ name: nameText(owner.labels), type, typeName: typeNameOf(type), class: cls, ttl, data });
  }
  return at;
}

/** A question as read: the labels of its name and its type and class bytes. */
interface WireQuestion {
  labels: Uint8Array[];
  tail: Uint8Array;
}

/** Reads `count` questions after the header; returns them in both forms and where they end. */
function readQuestions(
  buf: Uint8Array,
  count: number,
): { questions: DnsQuestion[]; wire: WireQuestion[]; end: number } {
  const questions: DnsQuestion[] = [];
  const wire: WireQuestion[] = [];
  let at = HEADER_SIZE;
  for (let i = 0; i < count; i++) {
    const name = readName(buf, at);
    at = name.end;
    need(buf, at, 4, "question type and class");
    const type = u16(buf, at);
    questions.push({
      name: nameText(name.labels),
      type,
      typeName: typeNameOf(type),
      class: u16(buf, at + 2),
    });
    wire.push({ labels: name.labels, tail: buf.subarray(at, at + 4) });
    at += 4;
  }
  return { questions, wire, end: at };
}

function checkHeader(buf: Uint8Array): void {
  if (buf.length < HEADER_SIZE) {
    fail(`message of ${buf.length} bytes is shorter than the ${HEADER_SIZE}-byte header`);
  }
}

/**
 * Parses a DNS message in wire format.
 *
 * Compression pointers are followed wherever they point, but a name that loops or needs more
 * than 128 pointers is rejected. Bytes after the last record are an error too.
 *
 * @param buf One whole message (for DNS over TCP, without the 2-byte length prefix).
 * @returns The message.
 * @throws {SyntaxError} When the message is truncated or malformed: a section or record data
 *   running past the end, a compression pointer loop, a label over 63 bytes, a name over 255
 *   bytes, record data that does not fit its type.
 *
 * @example
 * ```ts
 * import { buildDnsQuery, parseDnsMessage } from "./dns_message.ts";
 * const message = parseDnsMessage(buildDnsQuery("example.com", 28, 7));
 * console.log(message.questions[0]); // { name: "example.com", type: 28, typeName: "AAAA", class: 1 }
 * ```
 */
export function parseDnsMessage(buf: Uint8Array): DnsMessage {
  checkHeader(buf);
  const flags = u16(buf, 2);
  const { questions, end } = readQuestions(buf, u16(buf, 4));
  const answers: DnsRecord[] = [];
  const authorities: DnsRecord[] = [];
  const additionals: DnsRecord[] = [];
  let at = readRecords(buf, end, u16(buf, 6), answers);
  at = readRecords(buf, at, u16(buf, 8), authorities);
  at = readRecords(buf, at, u16(buf, 10), additionals);
  if (at !== buf.length) fail(`${buf.length - at} bytes follow the last record at offset ${at}`);
  let rcode = flags & 0x000f;
  const opt = additionals.find((r) => r.type === TYPE_OPT);
  if (opt !== undefined) rcode |= (opt.ttl >>> 24) << 4;
  return {
    id: u16(buf, 0),
    response: (flags & 0x8000) !== 0,
    opcode: (flags >> 11) & 0x0f,
    rcode,
    rcodeName: rcodeNameOf(rcode),
    flags: {
      aa: (flags & 0x0400) !== 0,
      tc: (flags & 0x0200) !== 0,
      rd: (flags & 0x0100) !== 0,
      ra: (flags & 0x0080) !== 0,
      ad: (flags & 0x0020) !== 0,
      cd: (flags & 0x0010) !== 0,
    },
    questions,
    answers,
    authorities,
    additionals,
  };
}

/** The labels of a name in presentation form (escapes `\X` and `\DDD` understood). */
function encodeName(name: string): Uint8Array[] {
  const bad = (reason: string, ErrorClass: typeof SyntaxError = SyntaxError): never => {
    throw new ErrorClass(`Cannot encode DNS name "${name}": ${reason}`);
  };
  if (name === "." || name === "") return [];
  const labels: Uint8Array[] = [];
  let label: number[] = [];
  let size = 1;
  const finish = () => {
    if (label.length === 0) bad("empty label");
    if (label.length > MAX_LABEL) bad(`label of ${label.length} bytes exceeds ${MAX_LABEL}`, RangeError);
    size += 1 + label.length;
    if (size > MAX_NAME) bad(`name exceeds ${MAX_NAME} bytes`, RangeError);
    labels.push(new Uint8Array(label));
    label = [];
  };
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c === 0x2e) {
      finish();
      if (i === name.length - 1) return labels; // one trailing dot is allowed
    } else if (c === 0x5c) {
      const digits = /^\d{3}/.exec(name.slice(i + 1));
      if (digits) {
        const n = Number(digits[0]);
        if (n > 255) bad(`escape \\${digits[0]} is not a byte`);
        label.push(n);
        i += 3;
      } else {
        const next = name.charCodeAt(i + 1);
        if (!(next > 0x20 && next < 0x7f)) bad("a backslash must escape a visible character or \\DDD");
        label.push(next);
        i++;
      }
    } else if (c > 0x20 && c < 0x7f) {
      label.push(c);
    } else {
      bad(`character ${JSON.stringify(name[i])} must be escaped (or the name converted to punycode)`);
    }
  }
  finish();
  return labels;
}

function checkUint16(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) {
    throw new RangeError(`${what} must be an integer from 0 to 65535, not ${value}`);
  }
}

/** Writes a header, then each question's uncompressed name, type and class. */
function writeMessage(header: number[], questions: WireQuestion[]): Uint8Array {
  let size = HEADER_SIZE;
  for (const q of questions) size += q.labels.reduce((n, l) => n + 1 + l.length, 1) + q.tail.length;
  const out = new Uint8Array(size);
  header.forEach((word, i) => {
    out[2 * i] = word >> 8;
    out[2 * i + 1] = word & 0xff;
  });
  let at = HEADER_SIZE;
  for (const q of questions) {
    for (const label of q.labels) {
      out[at++] = label.length;
      out.set(label, at);
      at += label.length;
    }
    out[at++] = 0;
    out.set(q.tail, at);
    at += q.tail.length;
  }
  return out;
}

/**
 * Builds a standard query with recursion desired, for one name and type in class IN.
 *
 * @param name The name, e.g. `example.com` (a trailing dot is allowed; `.` is the root).
 * @param type The record type, e.g. 1 for A or 28 for AAAA.
 * @param id The transaction id.
 * @returns The query in wire format.
 * @throws {SyntaxError} When `name` has an empty label or an unescaped non-ASCII character.
 * @throws {RangeError} When a label exceeds 63 bytes, the name 255 bytes, or `type` or `id` 65535.
 *
 * @example
 * ```ts
 * import { buildDnsQuery } from "./dns_message.ts";
 * console.log(buildDnsQuery("example.com", 1, 0x1234).length); // 29
 * ```
 */
export function buildDnsQuery(name: string, type: number, id: number): Uint8Array {
  checkUint16(type, "type");
  checkUint16(id, "id");
  const tail = new Uint8Array([type >> 8, type & 0xff, 0, CLASS_IN]);
  return writeMessage([id, 0x0100, 1, 0, 0, 0], [{ labels: encodeName(name), tail }]);
}

/**
 * Builds an error reply to a query: same id, opcode, question, RD and CD bits, the given rcode,
 * recursion available, and empty answer, authority and additional sections.
 *
 * Only the header and question section of the query need to be valid; what follows (an OPT
 * record, say) is not read. Names are written uncompressed.
 *
 * @param query The query in wire format.
 * @param rcode The response code, e.g. 2 for SERVFAIL or 5 for REFUSED.
 * @returns The reply, or `null` when `query` is not a parseable query (responses included, so
 *   replies are never answered).
 * @throws {RangeError} When `rcode` does not fit the header's 4 bits.
 *
 * @example
 * ```ts
 * import { buildDnsErrorResponse, buildDnsQuery, parseDnsMessage } from "./dns_message.ts";
 * const reply = buildDnsErrorResponse(buildDnsQuery("example.com", 1, 9), 2)!;
 * console.log(parseDnsMessage(reply).rcodeName); // SERVFAIL
 * ```
 */
export function buildDnsErrorResponse(query: Uint8Array, rcode: number): Uint8Array | null {
  if (!Number.isInteger(rcode) || rcode < 0 || rcode > 15) {
    throw new RangeError(`rcode must be an integer from 0 to 15, not ${rcode}`);
  }
  let questions: WireQuestion[];
  try {
    checkHeader(query);
    questions = readQuestions(query, u16(query, 4)).wire;
  } catch (e) {
    if (e instanceof SyntaxError) return null;
    throw e;
  }
  const flags = u16(query, 2);
  if ((flags & 0x8000) !== 0) return null;
  // QR, the query's opcode, RD and CD, RA, then the rcode; AA, TC, Z and AD stay clear.
  const replyFlags = 0x8000 | (flags & 0x7800) | (flags & 0x0100) | 0x0080 | (flags & 0x0010) | rcode;
  return writeMessage([u16(query, 0), replyFlags, questions.length, 0, 0, 0], questions);
}
