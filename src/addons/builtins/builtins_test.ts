/**
 * The built-in addons through an {@link AddonManager}, as the proxy drives them: options set as
 * `--set` would, hooks run on flow records, the verdicts checked. The end-to-end versions (curl
 * through the explicit proxy) are in tests/builtin_addons_test.ts.
 */
import assert from "node:assert/strict";
import { AddonManager } from "../manager.ts";
import type { DnsFlowHandle, ServerConnectHandle, TcpFlowHandle } from "../types.ts";
import type { DnsFlow, HttpFlow, TcpFlow } from "../../flows/flow.ts";
import { buildDnsQuery, parseDnsMessage } from "../../proxy/dns_message.ts";
import { builtinAddons, checkBuiltinSettings } from "./index.ts";
import { compileTemplate, pythonRegex, pythonSub, SpecError, splitSpec, toBinary } from "./spec.ts";
import { hostAllowed, parseAllowPattern } from "./allow_list.ts";
import { parseSetCookie } from "./stickycookie.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function flow(
  url: string,
  o: {
    method?: string;
    headers?: [string, string][];
    body?: Uint8Array | string;
    response?: { status?: number; headers?: [string, string][]; body?: Uint8Array | string };
  } = {},
): HttpFlow {
  const u = new URL(url);
  const bytes = (b: Uint8Array | string | undefined) =>
    typeof b === "string" ? enc.encode(b) : b ?? new Uint8Array(0);
  const body = bytes(o.body);
  const port = Number(u.port || (u.protocol === "https:" ? 443 : 80));
  const f: HttpFlow = {
    type: "http",
    id: crypto.randomUUID(),
    client: { address: { hostname: "127.0.0.1", port: 50000 }, mode: "regular" },
    server: { address: { hostname: u.hostname, port } },
    timestampStart: 1,
    request: {
      method: o.method ?? "GET",
      scheme: u.protocol.slice(0, -1),
      host: u.hostname,
      port,
      path: u.pathname + u.search,
      url,
      httpVersion: "HTTP/1.1",
      headers: [["Host", u.host], ...(o.headers ?? [])],
      body: { content: body, size: body.byteLength, truncated: false },
      timestampStart: 1,
      timestampEnd: 2,
    },
  };
  if (o.response) {
    const rb = bytes(o.response.body);
    f.response = {
      status: o.response.status ?? 200,
      reason: "OK",
      httpVersion: "HTTP/1.1",
      headers: o.response.headers ?? [],
      body: { content: rb, size: rb.byteLength, truncated: false },
      timestampStart: 3,
      timestampEnd: 4,
    };
  }
  return f;
}

async function manager(pairs: string[], logs: string[] = []): Promise<AddonManager> {
  const m = new AddonManager({ log: (level, message) => logs.push(`${level} ${message}`) });
  m.add(builtinAddons(pairs));
  m.set(pairs);
  m.checkOptions();
  await m.start();
  return m;
}

const onRequest = (m: AddonManager, f: HttpFlow) => m.http(["requestheaders", "request"], f);
const onResponse = (m: AddonManager, f: HttpFlow) => m.http(["responseheaders", "response"], f);
const header = (hs: [string, string][] | undefined, name: string) =>
  (hs ?? []).filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);

// ---- the shared syntax -----------------------------------------------------------------------

Deno.test("spec: the first character separates; the filter may be left out; the last part keeps separators", () => {
  assert.deepEqual(splitSpec("|~q|a|b", 2).fields, ["a", "b"]);
  assert.equal(splitSpec("|~q|a|b", 2).matcher.expression, "~q");
  assert.deepEqual(splitSpec(":a:b", 2).fields, ["a", "b"]);
  assert.equal(splitSpec(":a:b", 2).matcher.expression, "");
  assert.deepEqual(splitSpec("/~d x/a/b/c", 2).fields, ["a", "b/c"]);
  assert.throws(() => splitSpec("|onlyone", 2), SpecError);
  assert.throws(() => splitSpec("|~bogus|a|b", 2), /filter "~bogus"/);
  assert.throws(() => splitSpec("", 2), SpecError);
});

Deno.test("spec: Python regexes and re.sub templates", () => {
  const sub = (p: string, t: string, s: string) => {
    const re = pythonRegex(p);
    return pythonSub(re, compileTemplate(t, re), s);
  };
  assert.equal(sub("(a)(b)", "\\2\\1", "xaby"), "xbay");
  assert.equal(sub("(?P<w>o+)", "[\\g<w>]", "foo boo"), "f[oo] b[oo]");
  assert.equal(sub("o", "\\g<0>0", "oo"), "o0o0");
  assert.equal(sub("x", "$1", "x"), "$1", "$1 is plain text, as in Python");
  assert.equal(sub("x", "\\101\\n\\t", "x"), "A\n\t");
  assert.equal(sub("(?i)HELLO", "bye", "Hello hello"), "bye bye");
  assert.equal(sub("(a)|b", "<\\1>", "ab"), "<a><>", "an unmatched group is empty");
  assert.equal(sub("", "-", "ab"), "-a-b-", "empty matches as in Python");
  assert.equal(sub("a", "\\.", "a"), "\\.", "a backslash before punctuation stays");
  assert.throws(() => compileTemplate("\\2", pythonRegex("(a)")), /no group 2/);
  assert.throws(() => compileTemplate("\\g<nope>", pythonRegex("(a)")), /no group nope/);
  assert.throws(() => compileTemplate("\\q", pythonRegex("a")), /bad escape \\q/);
  assert.throws(() => pythonRegex("(unclosed"), /bad regex/);
});

Deno.test("builtins: bad values are one line naming the flag; builtinAddons loads only what is set", () => {
  assert.equal(checkBuiltinSettings(["block_list=|~d x|404", "other=1"]), undefined);
  assert.match(checkBuiltinSettings(["block_list=|~d x|99"])!, /^--block-list "\|~d x\|99": status "99"/);
  assert.match(checkBuiltinSettings(["block_list=|404"])!, /^--block-list .*expected \|FILTER\|STATUS/);
  assert.match(checkBuiltinSettings(["map_remote=|x(|y"])!, /^--map-remote .*bad regex/);
  assert.match(
    checkBuiltinSettings(["modify_headers=|~q|bad name|v"])!,
    /^--modify-headers .*bad header name/,
  );
  assert.match(checkBuiltinSettings(["modify_body=|a|@/nonexistent/file"])!, /^--modify-body .*cannot read/);
  assert.match(checkBuiltinSettings(["stickycookie=~d ("])!, /^--stickycookie .*filter/);
  assert.match(checkBuiltinSettings(["allow_list=not a host"])!, /^--allow-list .*expected a host name/);
  assert.match(checkBuiltinSettings(["anticache=maybe"])!, /^--anticache .*true or false/);
  assert.deepEqual(
    builtinAddons(["anticache=true", "block_list=|~d x|404", "anticomp=false"]).map((a) => a.name),
    [
      "block_list",
      "anticache",
    ],
  );
  assert.deepEqual(builtinAddons([]), []);
});

// ---- each built-in ---------------------------------------------------------------------------

Deno.test("block_list: a status answers, 444 kills, the first match wins, others pass", async () => {
  const m = await manager([
    "block_list=|~d ads\\.example|404",
    "block_list=:~u /track:444",
    "block_list=|~all|500",
  ]);
  const ads = await onRequest(m, flow("http://ads.example/x"));
  assert.equal(ads?.respond?.status, 404);
  assert.equal(ads?.respond?.body.byteLength, 0);
  assert.deepEqual(await onRequest(m, flow("http://b.example/track")), { kill: true });
  assert.equal((await onRequest(m, flow("http://c.example/")))?.respond?.status, 500);
  const only = await manager(["block_list=|~m POST|403"]);
  assert.equal(await onRequest(only, flow("http://c.example/")), undefined);
  assert.equal((await onRequest(only, flow("http://c.example/", { method: "POST" })))?.respond?.status, 403);
});

Deno.test("modify_headers: ~q requests, ~s responses, no filter both; empty removes; @file; repeats add", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/v`, "from-file\n");
  const m = await manager([
    "modify_headers=|~q|x-req|1",
    "modify_headers=|~s|x-resp|2",
    "modify_headers=|x-both|3",
    "modify_headers=|~q|user-agent|",
    "modify_headers=|~q|x-file|@" + `${dir}/v`,
    "modify_headers=|~q & ~d other|x-other|4",
    "modify_headers=|~q|x-two|a",
    "modify_headers=|~q|x-two|b",
  ]);
  const req =
    (await onRequest(m, flow("http://h.example/", { headers: [["User-Agent", "curl"], ["X-Both", "old"]] })))!
      .request!;
  assert.deepEqual(header(req.headers, "x-req"), ["1"]);
  assert.deepEqual(header(req.headers, "x-resp"), []);
  assert.deepEqual(header(req.headers, "x-both"), ["3"]);
  assert.deepEqual(header(req.headers, "user-agent"), []);
  assert.deepEqual(header(req.headers, "x-file"), ["from-file"]);
  assert.deepEqual(header(req.headers, "x-other"), []);
  assert.deepEqual(header(req.headers, "x-two"), ["a", "b"]);
  const resp = (await onResponse(m, flow("http://h.example/", { response: { headers: [["Server", "o"]] } })))!
    .response!;
  assert.deepEqual(header(resp.headers, "x-resp"), ["2"]);
  assert.deepEqual(header(resp.headers, "x-both"), ["3"]);
  assert.deepEqual(header(resp.headers, "x-req"), []);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("modify_body: groups, ~q/~s, binary bodies, @file put in literally", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeFile(`${dir}/r`, enc.encode("lit\\1eral"));
  const m = await manager([
    "modify_body=|~s|(\\w+)@(\\w+)|\\2 at \\1",
    "modify_body=|~q|secret|[redacted]",
    "modify_body=|~s & ~d bin|\\xff\\x00|\\x00\\xff",
    "modify_body=|~s & ~d file|REPLACE|@" + `${dir}/r`,
  ]);
  const req = await onRequest(m, flow("http://h.example/", { method: "POST", body: "my secret a@b" }));
  assert.equal(dec.decode(req!.request!.body), "my [redacted] a@b");
  const resp = await onResponse(
    m,
    flow("http://h.example/", { response: { body: "mail bob@host, secret" } }),
  );
  assert.equal(dec.decode(resp!.response!.body), "mail host at bob, secret");
  const bin = new Uint8Array([1, 0xff, 0, 2, 0xff, 0, 0xfe]);
  const b = await onResponse(m, flow("http://bin.example/", { response: { body: bin } }));
  assert.deepEqual([...b!.response!.body!], [1, 0, 0xff, 2, 0, 0xff, 0xfe]);
  const f = await onResponse(m, flow("http://file.example/", { response: { body: "[REPLACE]" } }));
  assert.equal(dec.decode(f!.response!.body), "[lit\\1eral]");
  // UTF-8 text in the pattern is matched as its bytes.
  const u = await manager(["modify_body=|é|e"]);
  const r = await onResponse(u, flow("http://h.example/", { response: { body: "café" } }));
  assert.equal(dec.decode(r!.response!.body), "cafe");
  assert.equal(await onResponse(u, flow("http://h.example/", { response: { body: "none" } })), undefined);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("map_remote: host, port and path from groups; filter; entries chain; scheme change refused", async () => {
  const logs: string[] = [];
  const m = await manager([
    "map_remote=|~d api\\.example|://api\\.example(:\\d+)?/v1/(.*)|://127.0.0.1:9999/v2/\\2",
    "map_remote=|/v2/|/v3/",
    "map_remote=|~d tls|^http://|https://",
  ], logs);
  const v = await onRequest(m, flow("http://api.example/v1/users?id=1"));
  assert.deepEqual(
    { host: v!.request!.host, port: v!.request!.port, path: v!.request!.path },
    { host: "127.0.0.1", port: 9999, path: "/v3/users?id=1" },
  );
  assert.equal(await onRequest(m, flow("http://other.example/v1/x")), undefined);
  assert.equal(await onRequest(m, flow("http://tls.example/")), undefined);
  assert.ok(logs.some((l) => /changing the scheme is not supported/.test(l)));
});

Deno.test("map_local: a file, a directory by the rest of the URL or group 1, index.html, 404, traversal refused", async () => {
  const dir = await Deno.makeTempDir();
  const outside = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/site/sub`, { recursive: true });
  await Deno.writeTextFile(`${dir}/site/app.js`, "js!");
  await Deno.writeTextFile(`${dir}/site/sub/index.html`, "<p>sub</p>");
  await Deno.writeTextFile(`${dir}/site/index.html`, "<p>root</p>");
  await Deno.writeFile(`${dir}/site/blob.png`, new Uint8Array([0x89, 0x50, 0, 0xff]));
  await Deno.writeTextFile(`${outside}/secret.txt`, "secret");
  await Deno.symlink(`${outside}/secret.txt`, `${dir}/site/link.txt`);
  await Deno.writeTextFile(`${dir}/one.json`, '{"a":1}');
  const m = await manager([
    `map_local=|~d static\\.example|static\\.example/|${dir}/site`,
    `map_local=|~d grp\\.example|/files/([^?]*)|${dir}/site`,
    `map_local=|~d one\\.example|/api/|${dir}/one.json`,
  ]);
  const get = async (url: string, rawPath?: string) => {
    const f = flow(url);
    if (rawPath) f.request.path = rawPath; // URL() would resolve the dots away
    return (await onRequest(m, f))?.respond;
  };
  const js = (await get("http://static.example/app.js?v=3"))!;
  assert.equal(js.status, 200);
  assert.equal(dec.decode(js.body), "js!");
  assert.deepEqual(header(js.headers, "content-type"), ["text/javascript; charset=utf-8"]);
  assert.equal(dec.decode((await get("http://static.example/sub/"))!.body), "<p>sub</p>");
  assert.equal(dec.decode((await get("http://static.example/"))!.body), "<p>root</p>");
  const png = (await get("http://grp.example/files/blob.png?x"))!;
  assert.deepEqual([...png.body], [0x89, 0x50, 0, 0xff]);
  assert.deepEqual(header(png.headers, "content-type"), ["image/png"]);
  assert.equal(dec.decode((await get("http://one.example/api/anything"))!.body), '{"a":1}');
  assert.equal((await get("http://static.example/missing.css"))!.status, 404);
  assert.equal((await get("http://static.example/", "/%2e%2e/one.json"))!.status, 403);
  assert.equal((await get("http://grp.example/", "/files/..%2Fone.json"))!.status, 403);
  assert.equal((await get("http://static.example/link.txt"))!.status, 403, "a symlink leading out");
  assert.equal(await get("http://elsewhere.example/app.js"), undefined, "no match: the server answers");
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(outside, { recursive: true });
});

Deno.test("anticache and anticomp", async () => {
  const m = await manager(["anticache=true", "anticomp=true"]);
  const v = await onRequest(
    m,
    flow("http://h.example/", {
      headers: [["If-None-Match", '"x"'], ["If-Modified-Since", "Mon, 01 Jan 2024 00:00:00 GMT"], [
        "Accept-Encoding",
        "gzip, br",
      ]],
    }),
  );
  assert.deepEqual(header(v!.request!.headers, "if-none-match"), []);
  assert.deepEqual(header(v!.request!.headers, "if-modified-since"), []);
  assert.deepEqual(header(v!.request!.headers, "accept-encoding"), ["identity"]);
});

Deno.test("stickycookie: remembered per domain, port and path; filter; expiry forgets", async () => {
  const m = await manager(["stickycookie=~d example"]);
  await onResponse(
    m,
    flow("http://www.example.com/login", {
      response: {
        headers: [["Set-Cookie", "sid=abc; Path=/; HttpOnly"], [
          "Set-Cookie",
          "pref=1; Domain=example.com; Path=/app",
        ], [
          "Set-Cookie",
          "evil=1; Domain=other.org",
        ]],
      },
    }),
  );
  const cookie = async (url: string, headers: [string, string][] = []) =>
    header((await onRequest(m, flow(url, { headers })))?.request?.headers, "cookie");
  assert.deepEqual(await cookie("http://www.example.com/", [["Cookie", "client=1"]]), ["sid=abc"]);
  assert.deepEqual(await cookie("http://api.example.com/app/x"), ["pref=1"]);
  assert.deepEqual(await cookie("http://www.example.com/app/x"), ["sid=abc; pref=1"]);
  assert.deepEqual(await cookie("http://www.example.com:8080/"), [], "another port");
  assert.deepEqual(await cookie("http://other.org/"), [], "the filter does not match");
  await onResponse(
    m,
    flow("http://www.example.com/logout", { response: { headers: [["Set-Cookie", "sid=; Max-Age=0"]] } }),
  );
  assert.deepEqual(await cookie("http://www.example.com/"), []);
  assert.equal(parseSetCookie("a=b; Expires=Thu, 01 Jan 1970 00:00:00 GMT")!.expired, true);
  assert.equal(parseSetCookie("novalue"), undefined);
});

Deno.test("allow_list: patterns; block page for HTTP(S); NXDOMAIN; passthrough TLS and TCP refused", async () => {
  const ps = ["example.com", "*.example.org", "127.0.0.1"].map(parseAllowPattern);
  assert.ok(
    hostAllowed(ps, "example.com") && hostAllowed(ps, "a.b.EXAMPLE.com.") && hostAllowed(ps, "x.example.org"),
  );
  assert.ok(
    !hostAllowed(ps, "example.org") && !hostAllowed(ps, "badexample.com") && !hostAllowed(ps, "127.0.0.2"),
  );
  assert.ok(hostAllowed(ps, "127.0.0.1"));
  assert.throws(() => parseAllowPattern("*.10.0.0.1"), SpecError);

  const m = await manager(["allow_list=example.com", "allow_list=*.example.org"]);
  assert.equal(await onRequest(m, flow("https://www.example.com/")), undefined);
  const blocked = (await onRequest(m, flow("https://tracker.test/<x>")))!.respond!;
  assert.equal(blocked.status, 403);
  assert.deepEqual(header(blocked.headers, "content-type"), ["text/html; charset=utf-8"]);
  assert.match(dec.decode(blocked.body), /Blocked by wirescope.*\n.*tracker\.test/s);

  const dnsHandle = (name: string): DnsFlowHandle => {
    const request = parseDnsMessage(buildDnsQuery(name, 1, 7));
    const f: DnsFlow = {
      type: "dns",
      id: "d",
      client: flow("http://x/").client,
      server: { address: { hostname: "1.1.1.1", port: 53 } },
      timestampStart: 1,
      request,
    };
    const h: DnsFlowHandle = {
      flow: f,
      request,
      response: undefined,
      answer() {},
      answerError(rcode) {
        h.response = { ...request, response: true, rcode, rcodeName: rcode === 3 ? "NXDOMAIN" : "?" };
      },
      kill() {},
    };
    return h;
  };
  const bad = dnsHandle("ads.test");
  await m.trigger("dnsRequest", bad);
  assert.equal(bad.response?.rcodeName, "NXDOMAIN");
  assert.equal(bad.response?.id, 7);
  assert.deepEqual(bad.response?.questions.map((q) => q.name), ["ads.test"]);
  const good = dnsHandle("www.example.com");
  await m.trigger("dnsRequest", good);
  assert.equal(good.response, undefined);

  const conn = {
    id: "c",
    client: flow("http://x/").client,
    server: { address: { hostname: "203.0.113.9", port: 443 } },
  };
  let killed = 0;
  const dial = (sni: string, passthrough: boolean): ServerConnectHandle => ({
    ...conn,
    tls: { sni, alpnOffered: [], passthrough },
    address: { hostname: "203.0.113.9", port: 443 },
    kill: () => killed++,
  });
  await m.trigger("serverConnect", dial("blocked.test", true));
  assert.equal(killed, 1, "a relayed (passthrough) connection to a name not listed is refused");
  await m.trigger("serverConnect", dial("blocked.test", false));
  await m.trigger("serverConnect", dial("a.example.org", true));
  assert.equal(killed, 1, "intercepted ones get the block page later; listed ones pass");

  const tcp = (sni: string | undefined, ip: string): TcpFlowHandle => {
    const f: TcpFlow = {
      type: "tcp",
      id: "t",
      client: conn.client,
      server: { address: { hostname: ip, port: 443 } },
      ...(sni ? { tls: { sni, alpnOffered: [], passthrough: true } } : {}),
      timestampStart: 1,
      bytesFromClient: 0,
      bytesFromServer: 0,
      messages: [],
      messagesDropped: 0,
    };
    return { flow: f, kill: () => killed++ };
  };
  await m.trigger("tcpStart", tcp("blocked.test", "203.0.113.9"));
  assert.equal(killed, 2);
  await m.trigger("tcpStart", tcp("x.example.org", "203.0.113.9"));
  await m.trigger("tcpStart", tcp(undefined, "203.0.113.7"));
  assert.equal(killed, 3, "an address no allowed name resolved to is refused");
  // An address a DNS answer for an allowed name gave is allowed from then on.
  const answered = dnsHandle("www.example.com");
  answered.response = {
    ...answered.request!,
    response: true,
    answers: [{ name: "www.example.com", type: 1, typeName: "A", class: 1, ttl: 60, data: "203.0.113.7" }],
  };
  await m.trigger("dnsResponse", answered);
  await m.trigger("tcpStart", tcp(undefined, "203.0.113.7"));
  assert.equal(killed, 3);
});

Deno.test("builtins: bytes helpers keep every byte", () => {
  const all = new Uint8Array(256).map((_, i) => i);
  assert.equal(toBinary(all).length, 256);
  const re = pythonRegex("\\x00", "", true);
  assert.equal(pythonSub(re, compileTemplate("Z", re), toBinary(all)).charCodeAt(0), 0x5a);
});
