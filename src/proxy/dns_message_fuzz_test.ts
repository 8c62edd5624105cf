/**
 * Property tests of the DNS codec: names of any bytes survive presentation form, query building
 * and parsing; generated responses (with compression pointers) parse to what they were built
 * from; random and mutated messages give a message or a SyntaxError, and error replies are built
 * for exactly the queries that parse. Seeded (see _fuzz.ts).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { buildDnsErrorResponse, buildDnsQuery, parseDnsMessage } from "./dns_message.ts";
import { check, hostile, onlyThrows } from "./_fuzz.ts";

/** A name as labels of arbitrary bytes, at most 255 bytes on the wire. */
const labels = fc.array(fc.uint8Array({ minLength: 1, maxLength: 63 }), { maxLength: 6 })
  .filter((ls) => ls.reduce((n, l) => n + 1 + l.length, 1) <= 255);

/** The presentation form the parser gives: `\.` and `\\` for those, `\DDD` for other odd bytes. */
function canonical(ls: Uint8Array[]): string {
  if (ls.length === 0) return ".";
  return ls.map((l) =>
    [...l].map((b) =>
      b === 0x2e || b === 0x5c
        ? `\\${String.fromCharCode(b)}`
        : b < 0x21 || b > 0x7e
        ? `\\${String(b).padStart(3, "0")}`
        : String.fromCharCode(b)
    ).join("")
  ).join(".");
}

/** Another way to write the same name: visible bytes escaped now and then, a trailing dot. */
function written(ls: Uint8Array[], choices: number[], trailingDot: boolean): string {
  if (ls.length === 0) return trailingDot ? "." : "";
  let k = 0;
  const text = ls.map((l) =>
    [...l].map((b) => {
      const c = choices[k++ % Math.max(1, choices.length)] ?? 0;
      if (b < 0x21 || b > 0x7e || (c % 3 === 0 && b !== 0x2e && b !== 0x5c)) {
        return b < 0x21 || b > 0x7e || c % 2 === 0
          ? `\\${String(b).padStart(3, "0")}`
          : String.fromCharCode(b);
      }
      // `\X` escapes a visible character, but not a digit: `\1` would start a `\DDD`.
      const digit = b >= 0x30 && b <= 0x39;
      return b === 0x2e || b === 0x5c || (c % 5 === 0 && !digit)
        ? `\\${String.fromCharCode(b)}`
        : String.fromCharCode(b);
    }).join("")
  ).join(".");
  return trailingDot ? text + "." : text;
}

const u16 = (n: number) => [n >> 8, n & 0xff];
const u32 = (n: number) => [n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];

/** Builds messages with name compression: each name may end in a pointer to an earlier one. */
class Writer {
  bytes: number[] = [];
  /** Offsets of names written so far, with their labels. */
  names: { at: number; labels: Uint8Array[] }[] = [];

  /** Writes `ls`, or its first `keep` labels and then a pointer to an earlier name. */
  name(ls: Uint8Array[], pointTo: number | null, keep: number): Uint8Array[] {
    const at = this.bytes.length;
    const target = pointTo === null || this.names.length === 0
      ? null
      : this.names[pointTo % this.names.length]!;
    const own = target === null ? ls : ls.slice(0, keep % (ls.length + 1));
    const full = target === null ? own : [...own, ...target.labels];
    if (full.reduce((n, l) => n + 1 + l.length, 1) > 255) return this.name(ls, null, 0);
    for (const l of own) this.bytes.push(l.length, ...l);
    if (target === null) this.bytes.push(0);
    else this.bytes.push(0xc0 | (target.at >> 8), target.at & 0xff);
    if (at < 0x4000) this.names.push({ at, labels: full });
    return full;
  }
}

/** One generated record: type and class, and data the writer turns into wire bytes. */
const record = fc.record({
  owner: labels,
  pointTo: fc.option(fc.nat(), { nil: null }),
  keep: fc.nat(),
  type: fc.constantFrom(1, 28, 2, 5, 12, 15, 16, 33, 6, 41, 99, 65),
  ttl: fc.nat(),
  ip: fc.uint8Array({ minLength: 16, maxLength: 16 }),
  target: labels,
  numbers: fc.array(fc.nat({ max: 0xffff }), { minLength: 3, maxLength: 3 }),
  strings: fc.array(fc.uint8Array({ maxLength: 40 }), { minLength: 1, maxLength: 3 }),
  raw: fc.uint8Array({ maxLength: 30 }),
}, { noNullPrototype: true });
type Rec = typeof record extends fc.Arbitrary<infer T> ? T : never;

/** Writes a record; returns the owner and the data the parser should show. */
function writeRecord(w: Writer, r: Rec): { name: string; data: string } {
  const owner = w.name(r.owner, r.pointTo, r.keep);
  w.bytes.push(...u16(r.type), ...u16(1), ...u32(r.ttl));
  const lengthAt = w.bytes.length;
  w.bytes.push(0, 0);
  const start = w.bytes.length;
  let data: string;
  switch (r.type) {
    case 1:
      w.bytes.push(...r.ip.subarray(0, 4));
      data = [...r.ip.subarray(0, 4)].join(".");
      break;
    case 2:
    case 5:
    case 12:
      data = canonical(w.name(r.target, r.pointTo, r.keep));
      break;
    case 15:
      w.bytes.push(...u16(r.numbers[0]!));
      data = `${r.numbers[0]} ${canonical(w.name(r.target, r.pointTo, r.keep))}`;
      break;
    case 33:
      w.bytes.push(...r.numbers.flatMap(u16));
      data = `${r.numbers.join(" ")} ${canonical(w.name(r.target, r.pointTo, r.keep))}`;
      break;
    case 16:
      for (const s of r.strings) w.bytes.push(s.length, ...s);
      data = "";
      break;
    default:
      w.bytes.push(...r.raw);
      data = r.raw.length === 0
        ? "\\# 0"
        : `\\# ${r.raw.length} ${[...r.raw].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
  }
  if (r.type === 28 || r.type === 6) {
    // AAAA and SOA are written raw above (their data is checked by the unit tests); give them
    // data that fits their type instead of the generic bytes.
    w.bytes.length = start;
    if (r.type === 28) {
      w.bytes.push(...r.ip);
    } else {
      w.name(r.target, r.pointTo, r.keep);
      w.name(r.owner, null, 0);
      w.bytes.push(...r.numbers.flatMap(u32), ...u32(r.ttl), ...u32(r.ttl));
    }
    data = "";
  }
  const length = w.bytes.length - start;
  w.bytes[lengthAt] = length >> 8;
  w.bytes[lengthAt + 1] = length & 0xff;
  return { name: canonical(owner), data };
}

const message = fc.record({
  id: fc.nat({ max: 0xffff }),
  flags: fc.nat({ max: 0xffff }),
  question: fc.option(fc.tuple(labels, fc.nat({ max: 0xffff })), { nil: null }),
  answers: fc.array(record, { maxLength: 4 }),
  authorities: fc.array(record, { maxLength: 2 }),
  additionals: fc.array(record.filter((r) => r.type !== 41), { maxLength: 2 }),
}, { noNullPrototype: true }).map((m) => {
  const w = new Writer();
  const counts = [m.question ? 1 : 0, m.answers.length, m.authorities.length, m.additionals.length];
  w.bytes.push(...u16(m.id), ...u16(m.flags), ...counts.flatMap(u16));
  if (m.question) {
    w.name(m.question[0], null, 0);
    w.bytes.push(...u16(m.question[1]), 0, 1);
  }
  const sections = [m.answers, m.authorities, m.additionals].map((rs) => rs.map((r) => writeRecord(w, r)));
  return { m, bytes: new Uint8Array(w.bytes), sections };
});

const queries = fc.tuple(labels, fc.nat({ max: 0xffff }), fc.nat({ max: 0xffff }))
  .map(([ls, type, id]) => buildDnsQuery(canonical(ls), type, id));

Deno.test("dns fuzz: names of any bytes survive presentation form, query and parse", () => {
  check(
    fc.property(
      labels,
      fc.array(fc.nat(), { maxLength: 8 }),
      fc.boolean(),
      fc.nat({ max: 0xffff }),
      (ls, choices, dot, id) => {
        const text = written(ls, choices, dot);
        const query = parseDnsMessage(buildDnsQuery(text === "" ? "." : text, 1, id));
        assert.equal(query.id, id);
        assert.deepEqual(query.questions.map((q) => q.name), [canonical(ls)]);
      },
    ),
    800,
  );
});

Deno.test("dns fuzz: generated messages with compression parse to what they were built from", () => {
  check(
    fc.property(message, ({ m, bytes, sections }) => {
      const parsed = parseDnsMessage(bytes);
      assert.equal(parsed.id, m.id);
      assert.equal(parsed.questions.length, m.question ? 1 : 0);
      if (m.question) assert.equal(parsed.questions[0]!.name, canonical(m.question[0]));
      const got = [parsed.answers, parsed.authorities, parsed.additionals];
      sections.forEach((want, i) => {
        assert.deepEqual(got[i]!.map((r) => r.name), want.map((r) => r.name));
        want.forEach((r, j) => {
          if (r.data !== "") assert.equal(got[i]![j]!.data, r.data);
        });
      });
    }),
    500,
  );
});

Deno.test("dns fuzz: random and mutated messages give a message or a SyntaxError", () => {
  const valid = fc.oneof(message.map((x) => x.bytes), queries);
  check(
    fc.property(hostile(valid, 300), (bytes) => {
      const parsed = onlyThrows([SyntaxError], () => parseDnsMessage(bytes));
      if (parsed) {
        for (const q of parsed.questions) assert.ok(q.name.length > 0);
        JSON.stringify(parsed);
      }
    }),
    4000,
  );
});

Deno.test("dns fuzz: error replies to random and mutated queries are null or parse with the rcode", () => {
  check(
    fc.property(hostile(queries, 120), fc.integer({ min: 0, max: 15 }), (bytes, rcode) => {
      const reply = buildDnsErrorResponse(bytes, rcode);
      if (reply === null) return;
      const parsed = parseDnsMessage(reply);
      assert.equal(parsed.response, true);
      assert.equal(parsed.rcode, rcode);
      assert.equal(parsed.id, (bytes[0]! << 8) | bytes[1]!);
      assert.equal(parsed.questions.length, (bytes[4]! << 8) | bytes[5]!);
      assert.equal(bytes[2]! & 0x80, 0, "no reply to a response");
    }),
    4000,
  );
});

Deno.test("dns fuzz: building a query from any text gives a query or a SyntaxError/RangeError", () => {
  check(
    fc.property(
      fc.string({ maxLength: 80, unit: "binary" }),
      fc.integer({ min: -1, max: 0x10000 }),
      (name, type) => {
        const q = onlyThrows([SyntaxError, RangeError], () => buildDnsQuery(name, type, 1));
        if (q) assert.equal(parseDnsMessage(q).questions.length, 1);
      },
    ),
    3000,
  );
});
