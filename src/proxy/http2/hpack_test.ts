import assert from "node:assert/strict";
import fc from "fast-check";
import {
  Decoder,
  Encoder,
  type HeaderField,
  HpackError,
  huffmanDecode,
  huffmanEncode,
  STATIC_TABLE,
} from "./hpack.ts";
import { parseHuffmanTable, renderHuffmanTable } from "./gen_huffman.ts";
import { HUFFMAN_CODES, HUFFMAN_LENGTHS } from "./huffman_table.generated.ts";

function hex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, "");
  return Uint8Array.from(clean.match(/../g)!, (b) => parseInt(b, 16));
}
function toHex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}
/** The dynamic table, newest first, as [name, value] pairs. */
function table(d: Decoder | Encoder): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < d.table.length; i++) out.push(d.table.get(i)!);
  return out;
}

Deno.test("huffman table: generated file matches RFC 7541 Appendix B text", async () => {
  const dir = new URL(".", import.meta.url);
  const text = await Deno.readTextFile(new URL("testdata/rfc7541_appendix_b.txt", dir));
  // The generated module holds exactly the table parsed from the RFC text, laid out as generated.
  const { codes, lengths } = parseHuffmanTable(text);
  assert.deepEqual(HUFFMAN_CODES, codes);
  assert.deepEqual(HUFFMAN_LENGTHS, lengths);
  const generated = await Deno.readTextFile(new URL("huffman_table.generated.ts", dir));
  assert.equal(generated, renderHuffmanTable(text), "regenerate: deno run -A src/proxy/http2/gen_huffman.ts");
  // A slip in one row is caught: flip a bit of symbol 'a' (97).
  assert.throws(() => parseHuffmanTable(text.replace("'a' ( 97)  |00011", "'a' ( 97)  |00111")));
});

Deno.test("hpack C.2: single literal and indexed fields", () => {
  const cases: [string, HeaderField[], [string, string][]][] = [
    ["400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572", [["custom-key", "custom-header"]], [[
      "custom-key",
      "custom-header",
    ]]],
    ["040c 2f73 616d 706c 652f 7061 7468", [[":path", "/sample/path"]], []],
    ["1008 7061 7373 776f 7264 0673 6563 7265 74", [["password", "secret", true]], []],
    ["82", [[":method", "GET"]], []],
  ];
  for (const [block, want, wantTable] of cases) {
    const d = new Decoder();
    const got = d.decode(hex(block));
    assert.deepEqual(got.headers, want);
    assert.deepEqual(table(d), wantTable);
  }
  // Encoding C.2.1 and C.2.3 byte-exact (C.2.2 is a literal without indexing of :path).
  assert.equal(
    toHex(new Encoder({ huffman: false }).encode([["custom-key", "custom-header"]])),
    "400a637573746f6d2d6b65790d637573746f6d2d686561646572",
  );
  assert.equal(
    toHex(new Encoder({ huffman: false }).encode([["password", "secret", true]])),
    "100870617373776f726406736563726574",
  );
  assert.equal(
    toHex(new Encoder({ huffman: false, indexing: false }).encode([[":path", "/sample/path"]])),
    "040c2f73616d706c652f70617468",
  );
});

const REQUESTS: HeaderField[][] = [
  [[":method", "GET"], [":scheme", "http"], [":path", "/"], [":authority", "www.example.com"]],
  [[":method", "GET"], [":scheme", "http"], [":path", "/"], [":authority", "www.example.com"], [
    "cache-control",
    "no-cache",
  ]],
  [[":method", "GET"], [":scheme", "https"], [":path", "/index.html"], [":authority", "www.example.com"], [
    "custom-key",
    "custom-value",
  ]],
];
const REQUEST_TABLES: [string, string][][] = [
  [[":authority", "www.example.com"]],
  [["cache-control", "no-cache"], [":authority", "www.example.com"]],
  [["custom-key", "custom-value"], ["cache-control", "no-cache"], [":authority", "www.example.com"]],
];
const C3 = [
  "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
  "8286 84be 5808 6e6f 2d63 6163 6865",
  "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
];
const C4 = [
  "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
  "8286 84be 5886 a8eb 1064 9cbf",
  "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
];
const DATE1 = "Mon, 21 Oct 2013 20:13:21 GMT", DATE2 = "Mon, 21 Oct 2013 20:13:22 GMT";
const URL_ = "https://www.example.com";
const COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
const RESPONSES: HeaderField[][] = [
  [[":status", "302"], ["cache-control", "private"], ["date", DATE1], ["location", URL_]],
  [[":status", "307"], ["cache-control", "private"], ["date", DATE1], ["location", URL_]],
  [[":status", "200"], ["cache-control", "private"], ["date", DATE2], ["location", URL_], [
    "content-encoding",
    "gzip",
  ], ["set-cookie", COOKIE]],
];
const RESPONSE_TABLES: [string, string][][] = [
  [["location", URL_], ["date", DATE1], ["cache-control", "private"], [":status", "302"]],
  [[":status", "307"], ["location", URL_], ["date", DATE1], ["cache-control", "private"]],
  [["set-cookie", COOKIE], ["content-encoding", "gzip"], ["date", DATE2]],
];
const C5 = [
  "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
  "4803 3330 37c1 c0bf",
  "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
];
const C6 = [
  "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
  "4883 640e ffc1 c0bf",
  "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
];

function series(
  blocks: string[],
  lists: HeaderField[][],
  tables: [string, string][][],
  tableSize: number,
  huffman: boolean,
): void {
  const d = new Decoder({ maxTableSize: tableSize });
  d.table.setMaxSize(tableSize);
  const e = new Encoder({ huffman }, tableSize);
  blocks.forEach((block, i) => {
    assert.deepEqual(d.decode(hex(block)).headers, lists[i], `decode ${i}`);
    assert.deepEqual(table(d), tables[i], `decoder table ${i}`);
    assert.equal(toHex(e.encode(lists[i]!)), block.replace(/\s+/g, ""), `encode ${i}`);
    assert.deepEqual(table(e), tables[i], `encoder table ${i}`);
  });
}

Deno.test("hpack C.3: requests without Huffman, byte-exact both ways", () => {
  series(C3, REQUESTS, REQUEST_TABLES, 4096, false);
});
Deno.test("hpack C.4: requests with Huffman, byte-exact both ways", () => {
  series(C4, REQUESTS, REQUEST_TABLES, 4096, true);
});
Deno.test("hpack C.5: responses without Huffman, 256-byte table with eviction", () => {
  series(C5, RESPONSES, RESPONSE_TABLES, 256, false);
});
Deno.test("hpack C.6: responses with Huffman, 256-byte table with eviction", () => {
  series(C6, RESPONSES, RESPONSE_TABLES, 256, true);
});

Deno.test("huffman: every byte value round-trips; EOS and bad padding are refused", () => {
  const all = String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i));
  assert.equal(huffmanDecode(huffmanEncode(all)), all);
  assert.equal(huffmanDecode(hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")), "www.example.com");
  // EOS (30 one-bits) inside a string.
  assert.throws(() => huffmanDecode(hex("ffff ffff")), HpackError);
  // Padding of 8 one-bits (a whole byte) is too long.
  assert.throws(() => huffmanDecode(hex("1fff")), HpackError); // 'a' (00011) + 11 one bits
  // Padding that is not all ones: 'a' = 00011 then 000.
  assert.throws(() => huffmanDecode(hex("18")), HpackError);
  assert.equal(huffmanDecode(hex("1f")), "a");
});

Deno.test("hpack decoder: coding errors are HpackError", () => {
  const bad = [
    "80", // index 0
    "be", // index 62 with an empty dynamic table
    "ff ff ff ff ff 0f", // integer past 2^31
    "40 05 61", // name longer than the block
    "82 20", // size update after a field
    "20 20 20", // three size updates
    "3f e1 1f", // size update to 31 + 97 + 31 * 128 = 4096, above the advertised 100
  ];
  for (const b of bad) assert.throws(() => new Decoder({ maxTableSize: 100 }).decode(hex(b)), HpackError, b);
  // Size update to exactly the advertised limit is fine; one more is not.
  const d = new Decoder({ maxTableSize: 100 });
  d.decode(Uint8Array.from([0x3f, 100 - 31]));
  assert.equal(d.table.maxSize, 100);
  assert.throws(() => d.decode(Uint8Array.from([0x3f, 101 - 31])), /above the advertised/);
});

Deno.test("hpack decoder: a bomb past the header list limit is cut off, not held", () => {
  // One 4000-byte value added to the table, then referenced 10,000 times: a 40 MB header list
  // from a 14 KB block.
  const e = new Encoder({ huffman: false });
  const first = e.encode([["x", "a".repeat(4000)]]);
  const refs = new Uint8Array(10_000).fill(0x80 | 62);
  const block = new Uint8Array(first.length + refs.length);
  block.set(first);
  block.set(refs, first.length);
  const d = new Decoder({ maxHeaderListSize: 16384 });
  const got = d.decode(block);
  assert.equal(got.tooLarge, true);
  assert.equal(got.size, 10_001 * (1 + 4000 + 32));
  assert.ok(got.headers.length <= 4, `kept ${got.headers.length} fields`);
  // The table stayed in step: the entry is there for the next block.
  assert.deepEqual(d.decode(Uint8Array.from([0x80 | 62])).headers, [["x", "a".repeat(4000)]]);
});

Deno.test("hpack encoder: table size changes are signalled (minimum, then final) at the next block", () => {
  const e = new Encoder({ huffman: false });
  e.setMaxTableSize(0);
  e.setMaxTableSize(1000);
  const block = e.encode([[":method", "GET"]]);
  assert.equal(toHex(block), "20" + "3fc907" + "82");
  const d = new Decoder({ maxTableSize: 4096 });
  assert.deepEqual(d.decode(block).headers, [[":method", "GET"]]);
  assert.equal(d.table.maxSize, 1000);
});

Deno.test("hpack property: encode/decode round trip with shared table state (seeded)", () => {
  const field = fc.tuple(
    fc.oneof(
      fc.constantFrom(...STATIC_TABLE.map(([n]) => n), "x-a", "x-b"),
      fc.string({ unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)), maxLength: 20 }),
    ),
    fc.string({ unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)), maxLength: 300 }),
    fc.boolean(),
  );
  fc.assert(
    fc.property(
      fc.array(fc.array(field, { maxLength: 12 }), { maxLength: 8 }),
      fc.integer({ min: 0, max: 600 }),
      fc.constantFrom<"auto" | boolean>("auto", true, false),
      (blocks, size, huffman) => {
        const e = new Encoder({ huffman });
        const d = new Decoder({ maxTableSize: 4096, maxHeaderListSize: 1 << 30 });
        e.setMaxTableSize(size);
        for (const raw of blocks) {
          const list: HeaderField[] = raw.map(([n, v, never]) => never ? [n, v, true] : [n, v]);
          assert.deepEqual(d.decode(e.encode(list)).headers, list);
          assert.deepEqual(table(d), table(e));
        }
      },
    ),
    { seed: 12, numRuns: 300 },
  );
});

Deno.test("hpack property: random and mutated blocks only ever raise HpackError (seeded)", () => {
  const valid = new Encoder().encode(REQUESTS[2]!);
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 200 }),
        fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })).map(([i, b]) => {
          const m = valid.slice();
          m[i] = b;
          return m;
        }),
      ),
      (block) => {
        try {
          new Decoder({ maxHeaderListSize: 4096 }).decode(block);
        } catch (e) {
          if (!(e instanceof HpackError)) throw e;
        }
      },
    ),
    { seed: 7, numRuns: 3000 },
  );
});
