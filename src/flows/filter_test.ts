/**
 * The filter language: a table of expressions × sample flows with the meanings of mitmproxy's
 * documentation, parse errors and their columns, seeded properties (random and mutated
 * expressions only ever fail with FilterSyntaxError; generated expressions evaluate without
 * throwing), and the SQL translation agreeing with the predicate on a store in memory.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { check } from "../proxy/_fuzz.ts";
import type { Flow } from "./flow.ts";
import {
  compileFilter,
  FilterSyntaxError,
  type FlowAnnotations,
  likePattern,
  MAX_FILTER_DEPTH,
  parseFilter,
} from "./filter.ts";
import { SqliteFlowStore } from "./store.ts";
import { ALICE_KEY, BOB_KEY, sampleFlows, syntheticFlow } from "./testdata/flows.ts";

const FLOWS = sampleFlows();
const NAMES = Object.keys(FLOWS);
const ANNOTATIONS: Record<string, FlowAnnotations> = {
  post: { marked: true, comment: "suspicious login" },
  ws: { comment: "long\nchat with a stranger" },
};
const ALICE = "get asset ws udp dns";
const BOB = "post tcp dnsPending";

/** Expression → the sample flows it selects (names separated by spaces; "" for none). */
const TABLE: [string, string][] = [
  ["~all", NAMES.join(" ")],
  ["~http", "get post pending asset ws binary"],
  ["~tcp", "tcp"],
  ["~udp", "udp"],
  ["~dns", "dns dnsPending"],
  ["~websocket", "ws"],
  // "request with no response": HTTP and DNS flows still waiting.
  ["~q", "pending dnsPending"],
  ["~s", "get post asset ws dns binary"],
  ["~e", "pending"],
  ["~marked", "post"],
  ["~comment suspicious", "post"],
  ["~comment ^chat", "ws"],
  ["~comment login$", "post"],
  ["~c 401", "post"],
  ["~c 200", "get asset"],
  ["~c 0", ""],
  // ~d: the request's host or the Host header's, HTTP only, case-insensitive.
  ["~d example", "get post asset ws"],
  ["~d static", "asset"],
  ["~d ^example\\.com$", "get"],
  ["~d EXAMPLE.ORG", "post"],
  ["~d e.ample\\.net", "asset"],
  ["~m POST", "post"],
  ["~m post", "post"],
  ['~m "^(PUT|POST)$"', "post binary"],
  ["~m ^P", "post binary"],
  // ~u: the URL (also with the Host header's host), or a DNS question name.
  ["~u /v1/login", "post"],
  ["~u example.com", "get ws dns"],
  ["~u static.example.net", "asset"],
  ["~u ^http://", "pending binary"],
  ["~u :8443/", "post"],
  ["feed.xml", "pending"],
  ["~u nothing\\.invalid$", "dnsPending"],
  ['~u "/index\\.html\\?lang=en"', "get"],
  ["~h x-trace-id:\\s*abc", "post"],
  ["~hq ^host: news", "pending"],
  ["~hs www-authenticate", "post"],
  ["~hq www-authenticate", ""],
  ["~h upgrade", "ws"],
  ["~t json", "post"],
  ["~tq json", "post"],
  ["~ts html", "get"],
  ["~t octet", "binary"],
  ["~a", "asset"],
  ["~b hunter2", "post"],
  ["~bq hunter2", "post"],
  ["~bs hunter2", ""],
  ["~bs denied", "post"],
  ["~b stranger", "ws"],
  ["~bq stranger", ""],
  ["~bs stranger", "ws"],
  ['~b "SELECT 1"', "tcp"],
  ["~bs ^ok$", "tcp"],
  ["~b pong", "udp"],
  ["~b 93\\.184", "dns"],
  ["~bq 93\\.184", ""],
  ["~b nothing\\.invalid", "dnsPending"],
  ["~b \\xff\\xfe", "binary"],
  ['~b "\\"password\\""', "post"],
  ["~src 10\\.0\\.0\\.3", BOB],
  ["~src ^::1:", "pending binary"],
  ["~src :51000$", ALICE],
  ["~dst :5432", "tcp"],
  ["~dst ^10\\.0\\.0\\.1:53$", "dns dnsPending"],
  ["~dst example.org:8443", "post"],
  ["~peer alice-laptop", ALICE],
  ["~peer ALICE", ALICE],
  [`~peer ${ALICE_KEY}`, ALICE],
  [`~peer ${BOB_KEY}`, BOB],
  ["~peer .", `${ALICE} ${BOB}`],
  // Operators.
  ["~d example & ~m POST", "post"],
  ["~d example ~m POST", "post"],
  ["!~http", "tcp udp dns dnsPending"],
  ["!!~tcp", "tcp"],
  ["~tcp | ~udp", "tcp udp"],
  ["~tcp|~udp", "tcp udp"],
  ["!(~tcp | ~udp) & ~src 10\\.0\\.0\\.3", "post dnsPending"],
  ["(~q)", "pending dnsPending"],
  ["~q | ~e", "pending dnsPending"],
  ["!~q & ~dns", "dns"],
  ["~http & ~c 200 | ~tcp", "get asset tcp"],
  ["~tcp | ~http & ~c 200", "get asset tcp"],
  ["!~http & ~dns | ~tcp", "dns dnsPending tcp"],
  // Side by side is "and" at the loosest level, as mitmproxy parses it: ~http & (~c 401 | ~tcp).
  ["~http ~c 401 | ~tcp", "post"],
  ["(~d example ~m GET) | ~tcp", "get asset ws tcp"],
  ["~d a|~d b", ""], // the value runs up to the `~`: "a|" (matches any host) and "b"
  ["~d example|news", "get post pending asset ws"],
  ['"~d"', ""],
];

function select(expression: string): string {
  const filter = compileFilter(expression);
  return NAMES.filter((name) => filter.match(FLOWS[name]!, ANNOTATIONS[name])).join(" ");
}

function sorted(names: string): string {
  return names.split(" ").filter((s) => s !== "").sort().join(" ");
}

Deno.test("filter: each expression selects the flows mitmproxy's documentation says", () => {
  const failures: string[] = [];
  for (const [expression, expected] of TABLE) {
    const got = select(expression);
    if (sorted(got) !== sorted(expected)) failures.push(`${expression}: got [${got}], want [${expected}]`);
  }
  assert.deepEqual(failures, []);
});

Deno.test("filter: precedence is ! then & then |, side by side loosest", () => {
  const shape = (expression: string): unknown => strip(parseFilter(expression));
  const strip = (node: ReturnType<typeof parseFilter>): unknown => {
    switch (node.kind) {
      case "and":
      case "or":
        return [node.kind, ...node.items.map(strip)];
      case "not":
        return ["not", strip(node.item)];
      case "flag":
        return node.op;
      case "code":
        return `c${node.code}`;
      case "regex":
        return `${node.op}:${node.pattern}`;
    }
  };
  assert.deepEqual(shape("~q | ~s & !~e"), ["or", "q", ["and", "s", ["not", "e"]]]);
  assert.deepEqual(shape("~q ~s | ~e"), ["and", "q", ["or", "s", "e"]]);
  assert.deepEqual(shape("!~q & ~s | ~e ~tcp"), ["and", ["or", ["and", ["not", "q"], "s"], "e"], "tcp"]);
  assert.deepEqual(shape("!(~q | ~s)"), ["not", ["or", "q", "s"]]);
  assert.deepEqual(shape("example.com"), "u:example.com");
  assert.deepEqual(shape("~d 'it''s'"), ["and", "d:it", "u:s"]);
  assert.deepEqual(shape("~d 'it\\'s'"), "d:it's");
  assert.deepEqual(shape("~d !x"), "d:!x");
  // As in mitmproxy, a value stops at a parenthesis: a regex with groups has to be quoted.
  assert.deepEqual(shape("~m ^(PUT|POST)$"), ["and", "m:^", "u:PUT|POST", "u:$"]);
  assert.deepEqual(shape('~m "^(PUT|POST)$"'), "m:^(PUT|POST)$");
});

Deno.test("filter: syntax errors name the problem and point at its column", () => {
  const cases: [string, number, RegExp][] = [
    ["", 1, /empty/],
    ["   ", 1, /empty/],
    ["~x", 1, /unknown operator ~x/],
    ["~http & ~frob", 9, /unknown operator ~frob/],
    ["~d", 3, /expected a regex after ~d/],
    ["~c abc", 4, /status code/],
    ["~c 20x", 4, /status code/],
    ["(~http", 1, /never closed/],
    ["~http)", 6, /unbalanced/],
    ["~d example &", 13, /found the end/],
    ["& ~http", 1, /before '&'/],
    ["~http | | ~tcp", 9, /before '\|'/],
    ["~d [", 4, /bad regex/],
    ["~m (", 4, /expected a regex after ~m, found '\('/],
    ['~b "abc', 4, /unterminated/],
    ["()", 1, /empty parentheses/],
    ["~meta", 1, /not supported/],
    ["~", 1, /operator name/],
    ['~http ~d "(?x)a"', 10, /\(\?x\)/],
    [
      "(".repeat(MAX_FILTER_DEPTH + 1) + "~all" + ")".repeat(MAX_FILTER_DEPTH + 1),
      MAX_FILTER_DEPTH + 1,
      /nested/,
    ],
  ];
  for (const [expression, column, reason] of cases) {
    assert.throws(
      () => parseFilter(expression),
      (e: unknown) => {
        assert.ok(e instanceof FilterSyntaxError, `${expression}: ${e}`);
        assert.ok(e instanceof SyntaxError);
        assert.equal(e.column, column, `${JSON.stringify(expression)}: ${e.message}`);
        assert.match(e.reason, reason, expression);
        assert.match(e.message, new RegExp(`at column ${column}$`));
        assert.equal(e.expression, expression);
        return true;
      },
    );
  }
});

Deno.test("filter: regex values translate to LIKE only when they are plain text", () => {
  assert.equal(likePattern("example"), "%example%");
  assert.equal(likePattern("^api\\.example\\.com$"), "api.example.com");
  assert.equal(likePattern("a.c"), "%a_c%");
  assert.equal(likePattern("100%_x"), "%100\\%\\_x%");
  assert.equal(likePattern("/v1/login"), "%/v1/login%");
  for (const p of ["a+", "a|b", "[ab]", "\\d", "(x)", "", "^$", "é", "a\\\\$"]) {
    assert.equal(likePattern(p), undefined, p);
  }
  assert.equal(likePattern("^chat", true), undefined);
  assert.equal(likePattern("chat", true), "%chat%");
});

// --- properties --------------------------------------------------------------------------------

const ATOMS = [
  "~a",
  "~all",
  "~dns",
  "~e",
  "~http",
  "~marked",
  "~q",
  "~s",
  "~tcp",
  "~udp",
  "~websocket",
  "~c 200",
  "~c 401",
  "~d example",
  "~d ^example\\.com$",
  "~d static",
  "~m POST",
  '~m "^(GET|PUT)$"',
  "~u login",
  "~u example.com",
  "~src 10\\.0\\.0\\.3",
  "~dst :5432",
  "~comment suspicious",
  "~peer alice",
  `~peer ${BOB_KEY}`,
  "~h host",
  "~hq ^x-",
  "~hs authenticate",
  "~t json",
  "~tq json",
  "~ts html",
  "~b hunter2",
  "~bq SELECT",
  "~bs ok",
  "feed",
  '"index.html"',
];

/** Generated expressions in the grammar, printed with some spaces dropped. */
const expression: fc.Arbitrary<string> = fc.letrec((tie) => ({
  expr: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.constantFrom(...ATOMS),
    fc.tuple(tie("expr"), tie("expr")).map(([a, b]) => `${a} & ${b}`),
    fc.tuple(tie("expr"), tie("expr")).map(([a, b]) => `${a} | ${b}`),
    fc.tuple(tie("expr"), tie("expr")).map(([a, b]) => `(${a}) (${b})`),
    tie("expr").map((a) => `!(${a})`),
    tie("expr").map((a) => `(${a})`),
  ),
})).expr as fc.Arbitrary<string>;

function onlySyntaxErrors(input: string): void {
  try {
    const filter = compileFilter(input);
    for (const name of NAMES) filter.match(FLOWS[name]!, ANNOTATIONS[name]);
    filter.toSql();
  } catch (e) {
    if (!(e instanceof FilterSyntaxError)) throw e;
    assert.ok(
      e.column >= 1 && e.column <= input.length + 1,
      `column ${e.column} of ${JSON.stringify(input)}`,
    );
  }
}

Deno.test("filter: random expressions fail only with FilterSyntaxError", () => {
  const alphabet = fc.constantFrom(
    ..."~!&|()\"'\\ \t.*+?[]{}^$abcdehmqstuw0123456789-:/é\u0000",
    "~d",
    "~c",
    "~b",
    "~all",
    "~peer",
    "~comment",
  );
  check(fc.property(fc.array(alphabet, { maxLength: 40 }).map((a) => a.join("")), onlySyntaxErrors), 3000);
  check(fc.property(fc.string({ maxLength: 60 }), onlySyntaxErrors), 1000);
});

Deno.test("filter: mutated valid expressions fail only with FilterSyntaxError", () => {
  const edit = fc.record({
    at: fc.nat(),
    remove: fc.integer({ min: 0, max: 3 }),
    insert: fc.string({ maxLength: 3, unit: fc.constantFrom(..."~!&|()\"' \\[*?") }),
  });
  check(
    fc.property(expression, fc.array(edit, { minLength: 1, maxLength: 4 }), (source, edits) => {
      let s = source;
      for (const e of edits) {
        const at = e.at % (s.length + 1);
        s = s.slice(0, at) + e.insert + s.slice(at + e.remove);
      }
      onlySyntaxErrors(s);
    }),
    2000,
  );
});

Deno.test("filter: generated expressions parse and evaluate", () => {
  check(
    fc.property(expression, (source) => {
      const filter = compileFilter(source);
      // A double negation selects the same flows.
      const twice = compileFilter(`!!(${source})`);
      for (const name of NAMES) {
        assert.equal(
          twice.match(FLOWS[name]!, ANNOTATIONS[name]),
          filter.match(FLOWS[name]!, ANNOTATIONS[name]),
        );
      }
    }),
    500,
  );
});

// --- SQL agreement ------------------------------------------------------------------------------

/** Sample flows (with their marks and comments) and some synthetic ones in a store in memory. */
function storeWithFlows(): {
  store: SqliteFlowStore;
  flows: Map<string, { flow: Flow; ann: FlowAnnotations }>;
} {
  const store = SqliteFlowStore.open(":memory:");
  const flows = new Map<string, { flow: Flow; ann: FlowAnnotations }>();
  store.batch(() => {
    for (const name of NAMES) {
      const flow = FLOWS[name]!;
      if (flow.timestampEnd === undefined) store.put(flow);
      else store.end(flow);
      flows.set(flow.id, { flow, ann: ANNOTATIONS[name] ?? {} });
    }
    for (let n = 1; n <= 300; n++) {
      const flow = syntheticFlow(n);
      store.end(flow);
      flows.set(flow.id, { flow, ann: {} });
    }
  });
  for (const name of NAMES) {
    const ann = ANNOTATIONS[name];
    if (ann?.marked) {
      store.database.prepare("UPDATE flows SET marked = 1, mark = ':default:' WHERE id = ?").run(
        FLOWS[name]!.id,
      );
    }
    if (ann?.comment) {
      store.database.prepare("UPDATE flows SET comment = ? WHERE id = ?").run(ann.comment, FLOWS[name]!.id);
    }
  }
  return { store, flows };
}

function agree(
  store: SqliteFlowStore,
  flows: Map<string, { flow: Flow; ann: FlowAnnotations }>,
  source: string,
): boolean {
  const filter = compileFilter(source);
  const { sql, params, exact } = filter.toSql();
  const bySql = new Set(
    (store.database.prepare(`SELECT id FROM flows WHERE ${sql}`).all(...params) as { id: string }[]).map((
      r,
    ) => r.id),
  );
  const byPredicate = new Set([...flows].filter(([, f]) => filter.match(f.flow, f.ann)).map(([id]) => id));
  for (const id of byPredicate) assert.ok(bySql.has(id), `${source}: SQL misses ${id} (${sql} ${params})`);
  if (exact) {
    for (const id of bySql) assert.ok(byPredicate.has(id), `${source}: SQL adds ${id} (${sql} ${params})`);
  }
  return exact;
}

Deno.test("filter: the SQL selects what the predicate does (exact), or a superset (inexact)", () => {
  const { store, flows } = storeWithFlows();
  try {
    const exact = TABLE.filter(([source]) => agree(store, flows, source)).map(([source]) => source);
    // The indexable parts are translated exactly.
    for (
      const source of [
        "~d example & ~m POST",
        "~c 401",
        "~http",
        "~q",
        "~marked",
        "~websocket",
        "~d static",
        "~u example.com",
        "!~http",
        `~peer ${BOB_KEY}`,
        "~src :51000$",
      ]
    ) {
      assert.ok(exact.includes(source), `${source} should be exact`);
    }
    assert.ok(!exact.includes("~b hunter2"));
  } finally {
    store.closeSync();
  }
});

Deno.test("filter: generated expressions agree between SQL and predicate", () => {
  const { store, flows } = storeWithFlows();
  try {
    check(fc.property(expression, (source) => void agree(store, flows, source)), 300);
  } finally {
    store.closeSync();
  }
});
