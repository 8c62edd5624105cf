import assert from "node:assert/strict";
import { buildDnsErrorResponse, buildDnsQuery, type DnsRecord, parseDnsMessage } from "./dns_message.ts";
import { seededRandom } from "./_seeded_random.ts";

const fixture = (name: string) => Deno.readFileSync(new URL(`./testdata/${name}`, import.meta.url));
const ascii = (s: string) => [...new TextEncoder().encode(s)];
const u16 = (n: number) => [n >> 8, n & 0xff];
const u32 = (n: number) => [n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];

/** An uncompressed name: `a.b` → 1 a 1 b 0. */
const wireName = (name: string) =>
  name === "." ? [0] : [...name.split(".").flatMap((label) => [label.length, ...ascii(label)]), 0];

/** One resource record with an uncompressed owner name. */
const rr = (name: string, type: number, ttl: number, rdata: number[], cls = 1) => [
  ...wireName(name),
  ...u16(type),
  ...u16(cls),
  ...u32(ttl),
  ...u16(rdata.length),
  ...rdata,
];

/** A message: header fields, then sections given as already encoded byte lists. */
function message(
  id: number,
  flags: number,
  sections: {
    questions?: number[][];
    answers?: number[][];
    authorities?: number[][];
    additionals?: number[][];
  },
): Uint8Array {
  const { questions = [], answers = [], authorities = [], additionals = [] } = sections;
  return new Uint8Array([
    ...u16(id),
    ...u16(flags),
    ...u16(questions.length),
    ...u16(answers.length),
    ...u16(authorities.length),
    ...u16(additionals.length),
    ...questions.flat(),
    ...answers.flat(),
    ...authorities.flat(),
    ...additionals.flat(),
  ]);
}

const question = (name: string, type: number) => [...wireName(name), ...u16(type), 0, 1];

/**
 * `www.example.com A`, answered by a CNAME to `cdn.example.com` and its A record, compressed the
 * way servers do it. Offsets: question name at 12 (`example` at 16), answers at 33 and 51.
 */
const COMPRESSED = new Uint8Array([
  // header: id 0xbeef, QR RD RA, 1 question, 2 answers
  0xbe,
  0xef,
  0x81,
  0x80,
  0,
  1,
  0,
  2,
  0,
  0,
  0,
  0,
  // 12: www.example.com A IN
  3,
  ...ascii("www"),
  7,
  ...ascii("example"),
  3,
  ...ascii("com"),
  0,
  0,
  1,
  0,
  1,
  // 33: → 12, CNAME IN, ttl 3600, 6 bytes: cdn → 16
  0xc0,
  12,
  0,
  5,
  0,
  1,
  ...u32(3600),
  0,
  6,
  3,
  ...ascii("cdn"),
  0xc0,
  16,
  // 51: → 45 (cdn.example.com), A IN, ttl 60, 93.184.216.34
  0xc0,
  45,
  0,
  1,
  0,
  1,
  ...u32(60),
  0,
  4,
  93,
  184,
  216,
  34,
]); // deno-fmt-ignore

const txt = (...strings: number[][]) => strings.flatMap((s) => [s.length, ...s]);

/** A response with one record of every type the reader formats, and an OPT record. */
const RICH = message(0x0102, 0x8590, {
  questions: [question("example.test", 255)],
  answers: [
    rr("example.test", 1, 300, [192, 0, 2, 1]),
    rr("example.test", 28, 300, [0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1]),
    rr("example.test", 28, 300, [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]),
    rr("example.test", 28, 300, [...new Array(10).fill(0), 0xff, 0xff, 192, 0, 2, 1]),
    rr("example.test", 28, 300, [0xfe, 0x80, ...new Array(12).fill(0), 0xab, 0xcd]),
    rr("example.test", 15, 300, [0, 10, ...wireName("mail.example.test")]),
    rr("example.test", 16, 300, txt(ascii("v=spf1 -all"), ascii('say "hi"\\'), [0x09, 0xff], [])),
    rr("_sip._tcp.example.test", 33, 300, [0, 10, 0, 60, ...u16(5060), ...wireName("sip.example.test")]),
    rr("www.example.test", 5, 300, wireName("example.test")),
    rr("2.0.192.in-addr.arpa", 12, 300, wireName("host.example.test")),
    rr("example.test", 65, 300, [0, 1, 0, 0, 1, 0, 3, 2, ...ascii("h2")]),
    rr("example.test", 257, 300, [0, 5, ...ascii("issue"), ...ascii("ca.test")]),
    rr("example.test", 999, 300, []),
  ],
  authorities: [
    rr("example.test", 2, 86400, wireName("ns1.example.test")),
    rr("example.test", 6, 3600, [
      ...wireName("ns1.example.test"),
      ...wireName("hostmaster.example.test"),
      ...u32(2024010101),
      ...u32(7200),
      ...u32(3600),
      ...u32(1209600),
      ...u32(4294967295),
    ]),
  ],
  additionals: [rr(".", 41, 0x01000000, [0, 10, 0, 2, 0xab, 0xcd], 1232)],
});

const record = (name: string, typeName: string, type: number, data: string, ttl = 300): DnsRecord => ({
  name,
  type,
  typeName,
  class: 1,
  ttl,
  data,
});

function assertSyntaxError(fn: () => unknown, pattern: RegExp) {
  assert.throws(fn, (e: unknown) => e instanceof SyntaxError && pattern.test(e.message));
}

Deno.test("parseDnsMessage() reads a real resolver's answer", () => {
  assert.deepEqual(parseDnsMessage(fixture("dns_response_a.bin")), {
    id: 3,
    response: true,
    opcode: 0,
    rcode: 0,
    rcodeName: "NOERROR",
    flags: { aa: false, tc: false, rd: true, ra: true, ad: false, cd: false },
    questions: [{ name: "registry.npmjs.org", type: 1, typeName: "A", class: 1 }],
    answers: [record("registry.npmjs.org", "A", 1, "203.0.113.80", 60)],
    authorities: [],
    additionals: [],
  });
});

Deno.test("parseDnsMessage() reads a real NXDOMAIN reply", () => {
  const reply = parseDnsMessage(fixture("dns_response_nxdomain.bin"));
  assert.equal(reply.rcode, 3);
  assert.equal(reply.rcodeName, "NXDOMAIN");
  assert.deepEqual(reply.questions, [{ name: "github.com", type: 1, typeName: "A", class: 1 }]);
  assert.deepEqual([reply.answers, reply.authorities, reply.additionals], [[], [], []]);
});

Deno.test("parseDnsMessage() follows compression pointers in owner names and data", () => {
  const reply = parseDnsMessage(COMPRESSED);
  assert.equal(reply.id, 0xbeef);
  assert.deepEqual(reply.questions, [{ name: "www.example.com", type: 1, typeName: "A", class: 1 }]);
  assert.deepEqual(reply.answers, [
    record("www.example.com", "CNAME", 5, "cdn.example.com", 3600),
    record("cdn.example.com", "A", 1, "93.184.216.34", 60),
  ]);
});

Deno.test("parseDnsMessage() formats the data of each record type", () => {
  const reply = parseDnsMessage(RICH);
  assert.deepEqual(reply.flags, { aa: true, tc: false, rd: true, ra: true, ad: false, cd: true });
  assert.deepEqual(reply.questions, [{ name: "example.test", type: 255, typeName: "ANY", class: 1 }]);
  assert.deepEqual(reply.answers.map((r) => [r.typeName, r.data]), [
    ["A", "192.0.2.1"],
    ["AAAA", "2001:db8::1"],
    ["AAAA", "2001:db8::1:0:0:1"],
    ["AAAA", "::ffff:192.0.2.1"],
    ["AAAA", "fe80::abcd"],
    ["MX", "10 mail.example.test"],
    ["TXT", '"v=spf1 -all" "say \\"hi\\"\\\\" "\\009\\255" ""'],
    ["SRV", "10 60 5060 sip.example.test"],
    ["CNAME", "example.test"],
    ["PTR", "host.example.test"],
    ["HTTPS", "\\# 10 00010000010003026832"],
    ["CAA", "\\# 14 0005697373756563612e74657374"],
    ["TYPE999", "\\# 0"],
  ]);
  assert.equal(reply.answers[7]!.name, "_sip._tcp.example.test");
  assert.equal(reply.answers[9]!.name, "2.0.192.in-addr.arpa");
  assert.deepEqual(reply.authorities.map((r) => [r.typeName, r.ttl, r.data]), [
    ["NS", 86400, "ns1.example.test"],
    ["SOA", 3600, "ns1.example.test hostmaster.example.test 2024010101 7200 3600 1209600 4294967295"],
  ]);
  assert.deepEqual(reply.additionals, [
    { name: ".", type: 41, typeName: "OPT", class: 1232, ttl: 0x01000000, data: "\\# 6 000a0002abcd" },
  ]);
});

Deno.test("parseDnsMessage() adds an OPT record's upper rcode bits", () => {
  const reply = parseDnsMessage(RICH);
  assert.equal(reply.rcode, 16);
  assert.equal(reply.rcodeName, "BADVERS");
  const refused = message(1, 0x8185, { additionals: [rr(".", 41, 0, [], 1232)] });
  assert.equal(parseDnsMessage(refused).rcodeName, "REFUSED");
  assert.equal(parseDnsMessage(message(1, 0x800f, {})).rcodeName, "RCODE15");
});

Deno.test("parseDnsMessage() escapes label bytes that are dots, backslashes or unprintable", () => {
  const name = [3, 0x61, 0x2e, 0x62, 2, 0x5c, 0x20, 1, 0xc3, 0];
  const reply = parseDnsMessage(message(1, 0, { questions: [[...name, 0, 1, 0, 1]] }));
  assert.equal(reply.questions[0]!.name, "a\\.b.\\\\\\032.\\195");
  assert.equal(reply.questions[0]!.name, String.raw`a\.b.\\\032.\195`);
});

Deno.test("parseDnsMessage() reads names in other classes' records without IN formats", () => {
  const chaos = message(1, 0x8400, {
    answers: [rr("version.bind", 16, 0, txt(ascii("9.18")), 3), rr("x", 1, 0, [1, 2, 3, 4, 5], 3)],
  });
  assert.deepEqual(parseDnsMessage(chaos).answers.map((r) => r.data), ['"9.18"', "\\# 5 0102030405"]);
  const update = message(1, 0x2800, { authorities: [rr("old.example.test", 1, 0, [], 255)] });
  assert.equal(parseDnsMessage(update).authorities[0]!.data, "\\# 0");
  assert.equal(parseDnsMessage(update).opcode, 5);
});

Deno.test("parseDnsMessage() throws a SyntaxError for every truncation of a valid response", () => {
  for (
    const valid of [COMPRESSED, RICH, fixture("dns_response_a.bin"), fixture("dns_response_nxdomain.bin")]
  ) {
    parseDnsMessage(valid);
    for (let n = 0; n < valid.length; n++) {
      assert.throws(
        () => parseDnsMessage(valid.subarray(0, n)),
        (e: unknown) => e instanceof SyntaxError && e.message.startsWith("Cannot parse DNS message: "),
        `${n} of ${valid.length} bytes`,
      );
    }
  }
  assertSyntaxError(
    () => parseDnsMessage(new Uint8Array(5)),
    /message of 5 bytes is shorter than the 12-byte header/,
  );
});

Deno.test("parseDnsMessage() rejects bytes after the last record", () => {
  const extra = new Uint8Array([...COMPRESSED, 0]);
  assertSyntaxError(
    () => parseDnsMessage(extra),
    /^Cannot parse DNS message: 1 bytes follow the last record at offset 67$/,
  );
});

Deno.test("parseDnsMessage() throws on compression pointer loops instead of hanging", () => {
  // A question name that points at itself.
  const self = message(1, 0, { questions: [[0xc0, 12, 0, 1, 0, 1]] });
  assertSyntaxError(() => parseDnsMessage(self), /compression pointer loop in the name at offset 12/);
  // Two names that point at each other (12 → 18 → 12), one label on the way.
  const pair = new Uint8Array([...self.subarray(0, 12), 0xc0, 18, 0, 1, 0, 1, 1, 0x61, 0xc0, 12]);
  pair[5] = 1;
  assertSyntaxError(() => parseDnsMessage(pair), /compression pointer loop/);
  // A pointer in record data that leads back into the same data.
  const looped = COMPRESSED.slice();
  looped[49] = 0xc0;
  looped[50] = 45;
  assertSyntaxError(() => parseDnsMessage(looped), /compression pointer loop in the name at offset 45/);
});

/**
 * A question whose name is a chain of `count` pointers (the last reaching a root label), all
 * inside the data of an answer of unknown type; with the question's own pointer that is
 * `count + 1` pointers to follow.
 */
function pointerChain(count: number): Uint8Array {
  const chain = [0]; // the root label at offset 29
  for (let i = 0; i < count; i++) chain.push(...u16(0xc000 | (i === 0 ? 29 : 30 + 2 * (i - 1))));
  const last = 30 + 2 * (count - 1);
  return message(1, 0x8000, {
    questions: [[...u16(0xc000 | last), 0, 1, 0, 1]],
    answers: [rr(".", 999, 0, chain)],
  });
}

Deno.test("parseDnsMessage() rejects pointers past the end and chains of too many pointers", () => {
  const past = message(1, 0, { questions: [[0xc1, 0, 0, 1, 0, 1]] });
  assertSyntaxError(
    () => parseDnsMessage(past),
    /pointer at offset 12 points past the end of the message \(to 256\)/,
  );
  assert.equal(parseDnsMessage(pointerChain(127)).questions[0]!.name, ".");
  assertSyntaxError(
    () => parseDnsMessage(pointerChain(128)),
    /^Cannot parse DNS message: name at offset 12 follows more than 128 compression pointers$/,
  );
});

Deno.test("parseDnsMessage() rejects labels over 63 bytes and names over 255 bytes", () => {
  const label64 = message(1, 0, { questions: [[64, ...new Array(64).fill(0x61), 0, 0, 1, 0, 1]] });
  assertSyntaxError(
    () => parseDnsMessage(label64),
    /^Cannot parse DNS message: label length 64 at offset 12 exceeds 63$/,
  );
  const reserved = message(1, 0, { questions: [[0x80, 0, 0, 1, 0, 1]] });
  assertSyntaxError(() => parseDnsMessage(reserved), /label length 128 at offset 12 exceeds 63/);
  const labels = (count: number, size: number) =>
    Array.from({ length: count }, () => "a".repeat(size)).join(".");
  const max = `${labels(3, 63)}.${"b".repeat(61)}`; // 3 × 64 + 62 + 1 = 255 bytes
  assert.equal(parseDnsMessage(buildDnsQuery(max, 1, 1)).questions[0]!.name, max);
  const over = message(1, 0, { questions: [question(`${max}c`, 1)] });
  assertSyntaxError(() => parseDnsMessage(over), /name at offset 12 exceeds 255 bytes/);
  // Too long only once a pointer adds the question's labels to an answer's.
  const viaPointer = message(1, 0x8000, {
    questions: [question(labels(2, 63), 1)],
    answers: [[...wireName(labels(2, 63)).slice(0, -1), 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]],
  });
  assertSyntaxError(() => parseDnsMessage(viaPointer), /name at offset 145 exceeds 255 bytes/);
});

Deno.test("parseDnsMessage() rejects record data that does not fit its type", () => {
  const bad = (record: number[], pattern: RegExp) =>
    assertSyntaxError(() => parseDnsMessage(message(1, 0x8000, { answers: [record] })), pattern);
  bad(rr("x", 1, 0, [1, 2, 3]), /^Cannot parse DNS message: A data at offset 25 is 3 bytes, not 4$/);
  bad(rr("x", 28, 0, [1, 2, 3, 4]), /AAAA data at offset 25 is 4 bytes, not 16/);
  bad(rr("x", 5, 0, [...wireName("a.b"), 7]), /CNAME data at offset 25 has 1 bytes after its name/);
  bad(
    [...rr("x", 5, 0, [1, 0x61]), 0],
    /^Cannot parse DNS message: CNAME data at offset 25 runs past its length of 2$/,
  );
  bad(
    rr("x", 5, 0, [1, 0x61]),
    /^Cannot parse DNS message: name at offset 25 runs past the end of the message$/,
  );
  bad(rr("x", 15, 0, [0]), /MX data at offset 25 needs 2 bytes but only 1 are left/);
  bad(rr("x", 16, 0, [5, 0x61]), /TXT string at offset 26 needs 5 bytes but only 1 are left/);
  bad(rr("x", 16, 0, []), /TXT data at offset 25 holds no strings/);
  bad(rr("x", 33, 0, [0, 1, 0, 2, 0]), /SRV data at offset 25 needs 6 bytes/);
  bad(rr("x", 6, 0, [0, 0, 1, 2, 3]), /SOA fields at offset 27 needs 20 bytes but only 3 are left/);
  bad(rr("x", 1, 0, [1, 2, 3, 4]).slice(0, -1), /A data at offset 25 needs 4 bytes but only 3 are left/);
});

Deno.test("buildDnsQuery() writes a standard recursive query", () => {
  const expected = [0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...wireName("example.com"), 0, 1, 0, 1];
  assert.deepEqual([...buildDnsQuery("example.com", 1, 0x1234)], expected);
  assert.deepEqual([...buildDnsQuery("example.com.", 1, 0x1234)], expected);
  assert.deepEqual([...buildDnsQuery(".", 2, 0)], [0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1]);
  const query = parseDnsMessage(buildDnsQuery("_443._tcp.example.test", 65, 65535));
  assert.equal(query.response, false);
  assert.equal(query.flags.rd, true);
  assert.deepEqual(query.questions, [{
    name: "_443._tcp.example.test",
    type: 65,
    typeName: "HTTPS",
    class: 1,
  }]);
});

Deno.test("buildDnsQuery() understands escapes and round-trips with parseDnsMessage()", () => {
  const name = String.raw`a\.b.\\\032.\195.c`;
  assert.deepEqual([...buildDnsQuery(name, 16, 1).subarray(12, 24)], [
    3,
    0x61,
    0x2e,
    0x62,
    2,
    0x5c,
    0x20,
    1,
    0xc3,
    1,
    0x63,
    0,
  ]);
  assert.equal(parseDnsMessage(buildDnsQuery(name, 16, 1)).questions[0]!.name, name);
});

Deno.test("buildDnsQuery() rejects names, types and ids that cannot be encoded", () => {
  assert.throws(() => buildDnsQuery("a..b", 1, 1), SyntaxError);
  assert.throws(() => buildDnsQuery(".a", 1, 1), SyntaxError);
  assert.throws(
    () => buildDnsQuery("bücher.example", 1, 1),
    /must be escaped \(or the name converted to punycode\)/,
  );
  assert.throws(() => buildDnsQuery("a b", 1, 1), SyntaxError);
  assert.throws(() => buildDnsQuery(String.raw`a\256`, 1, 1), SyntaxError);
  assert.throws(() => buildDnsQuery("a".repeat(64), 1, 1), /label of 64 bytes exceeds 63/);
  assert.throws(() => buildDnsQuery(`${"a".repeat(63)}.`.repeat(4), 1, 1), RangeError);
  assert.throws(() => buildDnsQuery("x", 65536, 1), RangeError);
  assert.throws(() => buildDnsQuery("x", 1, -1), RangeError);
  assert.throws(() => buildDnsQuery("x", 1.5, 1), RangeError);
});

Deno.test("buildDnsErrorResponse() answers SERVFAIL echoing the question", () => {
  const query = buildDnsQuery("www.example.test", 28, 0xabcd);
  const reply = buildDnsErrorResponse(query, 2);
  assert.ok(reply);
  assert.deepEqual([...reply.subarray(0, 12)], [0xab, 0xcd, 0x81, 0x82, 0, 1, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(reply.subarray(12), query.subarray(12));
  const parsed = parseDnsMessage(reply);
  assert.equal(parsed.rcodeName, "SERVFAIL");
  assert.deepEqual(parsed.questions, parseDnsMessage(query).questions);
  assert.deepEqual(parsed.flags, { aa: false, tc: false, rd: true, ra: true, ad: false, cd: false });
});

Deno.test("buildDnsErrorResponse() keeps CD and the opcode, and drops the query's OPT record", () => {
  const query = message(7, 0x0130, {
    questions: [question("example.test", 1)],
    additionals: [rr(".", 41, 0, [], 1232)],
  });
  const reply = parseDnsMessage(buildDnsErrorResponse(query, 5)!);
  assert.equal(reply.rcodeName, "REFUSED");
  assert.deepEqual(reply.flags, { aa: false, tc: false, rd: true, ra: true, ad: false, cd: true });
  assert.deepEqual(reply.additionals, []);
  const notify = parseDnsMessage(
    buildDnsErrorResponse(message(8, 0x2000, { questions: [question("z.test", 6)] }), 4)!,
  );
  assert.equal(notify.opcode, 4);
  assert.equal(notify.flags.rd, false);
});

Deno.test("buildDnsErrorResponse() writes compressed question names out in full", () => {
  const query = message(1, 0x0100, {
    questions: [question("example.test", 1), [0xc0, 12, 0, 28, 0, 1]],
  });
  const reply = buildDnsErrorResponse(query, 2)!;
  assert.deepEqual(parseDnsMessage(reply).questions.map((q) => [q.name, q.typeName]), [
    ["example.test", "A"],
    ["example.test", "AAAA"],
  ]);
  assert.equal(reply.length, 12 + 2 * (14 + 4));
});

Deno.test("buildDnsErrorResponse() returns null for responses and unparseable queries", () => {
  const query = buildDnsQuery("example.test", 1, 1);
  for (let n = 0; n < query.length; n++) assert.equal(buildDnsErrorResponse(query.subarray(0, n), 2), null);
  assert.equal(buildDnsErrorResponse(fixture("dns_response_a.bin"), 2), null);
  assert.equal(buildDnsErrorResponse(message(1, 0, { questions: [[0xc0, 12, 0, 1, 0, 1]] }), 2), null);
  assert.throws(() => buildDnsErrorResponse(query, 16), RangeError);
});

Deno.test("parseDnsMessage() throws nothing but SyntaxError for corrupted messages", () => {
  const next = seededRandom(1);
  for (const valid of [COMPRESSED, RICH, fixture("dns_response_a.bin")]) {
    for (let round = 0; round < 3000; round++) {
      const bytes = valid.slice();
      const changes = 1 + Math.floor(next() * 4);
      for (let i = 0; i < changes; i++) bytes[Math.floor(next() * bytes.length)] = Math.floor(next() * 256);
      try {
        parseDnsMessage(bytes);
        buildDnsErrorResponse(bytes, 2);
      } catch (e) {
        assert.ok(e instanceof SyntaxError, `round ${round}: ${e}`);
      }
    }
  }
});
