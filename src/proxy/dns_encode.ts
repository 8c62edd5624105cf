/**
 * Writes a {@link DnsMessage} back to the wire: what the proxy sends when an addon answered a
 * query itself (`dnsRequest`) or changed an answer (`dnsResponse`). The inverse of
 * `parseDnsMessage` for the record types it renders (A, AAAA, NS, CNAME, PTR, MX, SRV, SOA, TXT)
 * and for the generic `\# length hex` form of any other type; names are written uncompressed.
 * Also builds the local answers addons ask for ({@link localDnsResponse}).
 * @module
 */
import type { DnsMessage, DnsRecord } from "./dns_message.ts";

const TYPES: Record<string, number> = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
};

const RCODES = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"];

/** Thrown when a message cannot be written (a name too long, data not in its type's form). */
export class DnsEncodeError extends Error {
  override name = "DnsEncodeError";
}

function bad(message: string): never {
  throw new DnsEncodeError(message);
}

class Writer {
  bytes: number[] = [];
  u8(n: number): void {
    this.bytes.push(n & 0xff);
  }
  u16(n: number): void {
    this.bytes.push((n >> 8) & 0xff, n & 0xff);
  }
  u32(n: number): void {
    this.bytes.push((n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
  }
  name(text: string): void {
    const trimmed = text.endsWith(".") ? text.slice(0, -1) : text;
    let total = 1;
    if (trimmed !== "") {
      for (const label of trimmed.split(".")) {
        const b = new TextEncoder().encode(label);
        if (b.length === 0 || b.length > 63) bad(`bad label in name ${JSON.stringify(text)}`);
        total += b.length + 1;
        this.u8(b.length);
        this.bytes.push(...b);
      }
    }
    if (total > 255) bad(`name ${JSON.stringify(text)} is longer than 255 bytes`);
    this.u8(0);
  }
}

function ipv4(text: string): number[] {
  const parts = text.split(".").map((p) => (/^\d{1,3}$/.test(p) ? Number(p) : NaN));
  if (parts.length !== 4 || parts.some((p) => !(p >= 0 && p <= 255))) bad(`not an IPv4 address: ${text}`);
  return parts;
}

function ipv6(text: string): number[] {
  const halves = text.split("::");
  if (halves.length > 2) bad(`not an IPv6 address: ${text}`);
  const groups = (s: string) => (s === "" ? [] : s.split(":"));
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  const fill = halves.length === 2 ? 8 - head.length - tail.length : 0;
  const all = [...head, ...Array(Math.max(0, fill)).fill("0"), ...tail];
  if (all.length !== 8 || all.some((g) => !/^[0-9a-f]{1,4}$/i.test(g))) bad(`not an IPv6 address: ${text}`);
  return all.flatMap((g) => {
    const n = parseInt(g, 16);
    return [n >> 8, n & 0xff];
  });
}

function rdata(record: DnsRecord): number[] {
  const w = new Writer();
  const data = record.data.trim();
  const generic = /^\\#\s+(\d+)\s*([0-9a-f\s]*)$/i.exec(data);
  if (generic) {
    const hex = generic[2]!.replace(/\s+/g, "");
    if (hex.length !== Number(generic[1]) * 2) bad(`generic data length does not match: ${data}`);
    for (let i = 0; i < hex.length; i += 2) w.u8(parseInt(hex.slice(i, i + 2), 16));
    return w.bytes;
  }
  const fields = data.split(/\s+/);
  const num = (s: string | undefined) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0) bad(`bad number in ${record.typeName} data ${JSON.stringify(data)}`);
    return n;
  };
  switch (record.type) {
    case 1:
      return ipv4(data);
    case 28:
      return ipv6(data);
    case 2:
    case 5:
    case 12:
      w.name(data);
      return w.bytes;
    case 15:
      w.u16(num(fields[0]));
      w.name(fields[1] ?? "");
      return w.bytes;
    case 33:
      w.u16(num(fields[0]));
      w.u16(num(fields[1]));
      w.u16(num(fields[2]));
      w.name(fields[3] ?? "");
      return w.bytes;
    case 6:
      w.name(fields[0] ?? "");
      w.name(fields[1] ?? "");
      for (let i = 2; i < 7; i++) w.u32(num(fields[i]));
      return w.bytes;
    case 16: {
      const strings = [...data.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) =>
        m[1]!.replace(/\\(\d{3}|.)/g, (_, e: string) => (e.length === 3 ? String.fromCharCode(Number(e)) : e))
      );
      if (strings.length === 0) strings.push(data);
      for (const s of strings) {
        const b = Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff);
        if (b.length > 255) bad("TXT string longer than 255 bytes");
        w.u8(b.length);
        w.bytes.push(...b);
      }
      return w.bytes;
    }
  }
  bad(`cannot write ${record.typeName} data ${JSON.stringify(data)} (use the \\# form)`);
}

/** Writes `message` in wire form. Throws {@link DnsEncodeError} when a part cannot be written. */
export function encodeDnsMessage(message: DnsMessage): Uint8Array {
  const w = new Writer();
  const f = message.flags;
  w.u16(message.id);
  w.u16(
    (message.response ? 0x8000 : 0) | ((message.opcode & 0xf) << 11) | (f.aa ? 0x0400 : 0) |
      (f.tc ? 0x0200 : 0) | (f.rd ? 0x0100 : 0) | (f.ra ? 0x0080 : 0) | (f.ad ? 0x0020 : 0) |
      (f.cd ? 0x0010 : 0) | (message.rcode & 0xf),
  );
  w.u16(message.questions.length);
  w.u16(message.answers.length);
  w.u16(message.authorities.length);
  w.u16(message.additionals.length);
  for (const q of message.questions) {
    w.name(q.name);
    w.u16(q.type);
    w.u16(q.class);
  }
  for (const r of [...message.answers, ...message.authorities, ...message.additionals]) {
    w.name(r.name);
    w.u16(r.type);
    w.u16(r.class);
    w.u32(r.ttl);
    const data = rdata(r);
    if (data.length > 0xffff) bad("record data longer than 65535 bytes");
    w.u16(data.length);
    w.bytes.push(...data);
  }
  return Uint8Array.from(w.bytes);
}

/**
 * A response to `query` made here: its id, question and RD bit, with `rcode` and one A or AAAA
 * record per address (for the question's name; addresses of the other family than the question
 * asks for are left out, so an AAAA query for an IPv4-only answer gets NOERROR with no records).
 */
export function localDnsResponse(
  query: DnsMessage,
  rcode: number,
  addresses: readonly string[] = [],
  ttl = 60,
): DnsMessage {
  const q = query.questions[0];
  const answers: DnsRecord[] = [];
  if (q) {
    for (const address of addresses) {
      const type = address.includes(":") ? TYPES.AAAA! : TYPES.A!;
      if (type === 28) ipv6(address);
      else ipv4(address);
      if (q.type !== type && q.type !== 255) continue;
      answers.push({ name: q.name, type, typeName: type === 1 ? "A" : "AAAA", class: 1, ttl, data: address });
    }
  }
  return {
    id: query.id,
    response: true,
    opcode: query.opcode,
    rcode,
    rcodeName: RCODES[rcode] ?? `RCODE${rcode}`,
    flags: { aa: true, tc: false, rd: query.flags.rd, ra: true, ad: false, cd: query.flags.cd },
    questions: query.questions.map((x) => ({ ...x })),
    answers,
    authorities: [],
    additionals: [],
  };
}
