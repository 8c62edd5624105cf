/**
 * mitmproxy's filter language over wirescope flows: one parser, one predicate, and a translation
 * to an SQL `WHERE` fragment for the parts a flow store keeps in indexed columns.
 *
 * ```ts
 * const filter = compileFilter("~d example & ~m POST");
 * filter.match(flow);                 // the predicate
 * const { sql, params, exact } = filter.toSql(); // exact=false: run match() on the rows too
 * ```
 *
 * The operators and their meanings follow mitmproxy's documentation and its implementation
 * (`mitmproxy/flowfilter.py`):
 *
 * | op            | matches                                                                         |
 * | ------------- | ------------------------------------------------------------------------------- |
 * | `~a`          | HTTP response whose Content-Type is an asset (JavaScript, CSS, image, font)     |
 * | `~all`        | every flow                                                                      |
 * | `~b re`       | request or response body, WebSocket/TCP/UDP messages, DNS query or answer       |
 * | `~bq re`      | the client's side of the above; `~bs re` the server's side                      |
 * | `~c code`     | HTTP response status code                                                       |
 * | `~comment re` | the flow's comment                                                              |
 * | `~d re`       | HTTP request host (the connection's host, or the Host header's)                 |
 * | `~dns`        | DNS flows; `~http`, `~tcp`, `~udp` likewise                                     |
 * | `~dst re`     | the server address as `host:port`; `~src re` the client's                       |
 * | `~e`          | flows with an error                                                             |
 * | `~h re`       | a request or response header line `name: value`; `~hq`, `~hs` one side only     |
 * | `~m re`       | HTTP method                                                                     |
 * | `~marked`     | marked flows; `~marker re` flows whose mark's name matches (`:default:` plain)  |
 * | `~q`          | HTTP or DNS flow without a response yet; `~s` with one                          |
 * | `~t re`       | Content-Type of request or response; `~tq`, `~ts` one side only                 |
 * | `~u re`       | the HTTP URL (also with the Host header's host), or the DNS question name       |
 * | `~websocket`  | HTTP flows upgraded to a WebSocket                                              |
 * | `~peer name`  | (wirescope) the WireGuard peer: its public key or name, exactly or by regex     |
 * | `re`          | a bare value is `~u re`                                                         |
 *
 * Grammar, as mitmproxy parses it: `!` binds tightest, then `&`, then `|`; expressions written
 * side by side are joined with "and" at the loosest level, so `~d a ~m GET | ~m POST` means
 * `~d a & (~m GET | ~m POST)`. Values are regexes (JavaScript syntax; Python's `(?P<n>…)` and a
 * leading `(?i)`/`(?s)`/`(?m)` are accepted), matched case-insensitively anywhere in the field.
 * A value is a run of characters other than white space and `()~'"`, or a quoted string in `"`
 * or `'`, where a backslash before the quote character makes it part of the value and every other
 * backslash is kept for the regex (mitmproxy drops those, so `"a\.b"` would lose its escape).
 *
 * Where wirescope differs from mitmproxy: parentheses may hold expressions side by side; an
 * operator name ends at any character that is not a letter (`(~q)` and `~q&~s` parse); `~c`
 * wants only digits; bodies are matched as text (UTF-8, or one character per byte when not
 * UTF-8); `~b` on DNS flows matches the question names, types and answer data as text (the flow
 * keeps the parsed message, not its wire bytes).
 * @module
 */
import type { DnsMessage } from "../proxy/dns_message.ts";
import type { Headers1 } from "../proxy/http1.ts";
import type { Flow, HttpFlow, MessageRecord } from "./flow.ts";

/** A syntax error in a filter expression, with the 1-based column it points at. */
export class FilterSyntaxError extends SyntaxError {
  /** 1-based column in the expression (one past the end for "unexpected end"). */
  readonly column: number;
  /** The expression that failed. */
  readonly expression: string;
  /** The problem alone, without the column. */
  readonly reason: string;

  /** An error about `expression` at 1-based `column`. */
  constructor(reason: string, column: number, expression: string) {
    super(`filter: ${reason} at column ${column}`);
    this.name = "FilterSyntaxError";
    this.reason = reason;
    this.column = column;
    this.expression = expression;
  }
}

/** Operators that take no value. */
export type FilterFlagOp =
  | "a"
  | "all"
  | "dns"
  | "e"
  | "http"
  | "marked"
  | "q"
  | "replay"
  | "replayq"
  | "replays"
  | "s"
  | "tcp"
  | "udp"
  | "websocket";

/** Operators that take a regex. */
export type FilterRegexOp =
  | "b"
  | "bq"
  | "bs"
  | "comment"
  | "d"
  | "dst"
  | "h"
  | "hq"
  | "hs"
  | "m"
  | "marker"
  | "peer"
  | "src"
  | "t"
  | "tq"
  | "ts"
  | "u";

/** A parsed filter expression. `column` is 1-based, where the node starts in the expression. */
export type FilterNode =
  | { kind: "and"; items: FilterNode[]; column: number }
  | { kind: "or"; items: FilterNode[]; column: number }
  | { kind: "not"; item: FilterNode; column: number }
  | { kind: "flag"; op: FilterFlagOp; column: number }
  | { kind: "regex"; op: FilterRegexOp; pattern: string; regex: RegExp; column: number }
  | { kind: "code"; code: number; column: number };

/**
 * What a flow store knows about a flow besides the flow itself. Where a field is absent, the
 * flow's own `marked` / `comment` stand (a flow read from a file carries them).
 */
export interface FlowAnnotations {
  /** True when the user marked the flow. */
  marked?: boolean;
  /** The mark's name (`:default:` for a plain mark; "" when unmarked). */
  mark?: string;
  /** The user's comment ("" when none). */
  comment?: string;
}

/** The mark's name of a flow: the annotations' when they say, else the flow's own. */
function markOf(flow: Flow, ann: FlowAnnotations): string {
  if (ann.mark !== undefined) return ann.mark;
  if (ann.marked !== undefined) return ann.marked ? ":default:" : "";
  return flow.marked ?? "";
}

/** An SQL `WHERE` fragment with its positional parameters. */
export interface SqlFilter {
  /** A boolean SQL expression over the columns of the flows table (see {@link toSql}). */
  sql: string;
  /** The values of its `?` placeholders, in order. */
  params: (string | number)[];
  /** True when the SQL selects exactly the flows the predicate does; false: a superset. */
  exact: boolean;
}

/** A compiled filter expression. */
export interface Filter {
  /** The expression as given. */
  readonly expression: string;
  /** Its parsed tree. */
  readonly ast: FilterNode;
  /** True when the predicate reads bodies or message contents (`~b`, `~bq`, `~bs`). */
  readonly needsBodies: boolean;
  /** The predicate. */
  match(flow: Flow, annotations?: FlowAnnotations): boolean;
  /** The SQL translation (see {@link toSql}). */
  toSql(): SqlFilter;
}

const FLAG_OPS: ReadonlySet<string> = new Set<FilterFlagOp>([
  "a",
  "all",
  "dns",
  "e",
  "http",
  "marked",
  "q",
  "replay",
  "replayq",
  "replays",
  "s",
  "tcp",
  "udp",
  "websocket",
]);
const REGEX_OPS: ReadonlySet<string> = new Set<FilterRegexOp>([
  "b",
  "bq",
  "bs",
  "comment",
  "d",
  "dst",
  "h",
  "hq",
  "hs",
  "m",
  "marker",
  "peer",
  "src",
  "t",
  "tq",
  "ts",
  "u",
]);
/** mitmproxy operators wirescope has no data for yet. */
const UNSUPPORTED_OPS: ReadonlySet<string> = new Set(["meta"]);

/** Longest expression accepted, in characters. */
export const MAX_FILTER_LENGTH = 16_384;
/** Deepest nesting of parentheses and `!` accepted. */
export const MAX_FILTER_DEPTH = 64;

const WHITESPACE = /\s/;
const VALUE_STOP = /[\s()~'"]/;

/** Parses an expression into its tree; throws {@link FilterSyntaxError} on bad input. */
export function parseFilter(expression: string): FilterNode {
  return new Parser(expression).parse();
}

/** Parses an expression and returns its predicate and SQL translation. */
export function compileFilter(expression: string): Filter {
  const ast = parseFilter(expression);
  const needsBodies = readsBodies(ast);
  let sql: SqlFilter | undefined;
  return {
    expression,
    ast,
    needsBodies,
    match: (flow, annotations) => evaluate(ast, flow, annotations ?? {}),
    toSql: () => (sql ??= toSql(ast)),
  };
}

/** Evaluates a parsed expression against one flow. Never throws for a well-formed flow. */
export function matchFilter(node: FilterNode, flow: Flow, annotations: FlowAnnotations = {}): boolean {
  return evaluate(node, flow, annotations);
}

class Parser {
  #s: string;
  #pos = 0;
  #depth = 0;

  constructor(s: string) {
    this.#s = s;
  }

  parse(): FilterNode {
    if (this.#s.length > MAX_FILTER_LENGTH) {
      throw this.#error(`expression longer than ${MAX_FILTER_LENGTH} characters`, MAX_FILTER_LENGTH + 1);
    }
    this.#skip();
    if (this.#pos >= this.#s.length) throw this.#error("empty filter expression", 1);
    const node = this.#sequence();
    if (this.#pos < this.#s.length) {
      // Only a stray `)` stops a sequence before the end.
      throw this.#error("unbalanced ')'", this.#pos + 1);
    }
    return node;
  }

  #error(reason: string, column: number): FilterSyntaxError {
    return new FilterSyntaxError(reason, column, this.#s);
  }

  #skip(): void {
    while (this.#pos < this.#s.length && WHITESPACE.test(this.#s[this.#pos]!)) this.#pos++;
  }

  #peek(): string | undefined {
    this.#skip();
    return this.#s[this.#pos];
  }

  /** Expressions side by side, joined by "and" (the loosest level, as in mitmproxy). */
  #sequence(): FilterNode {
    const column = this.#pos + 1;
    const items: FilterNode[] = [this.#or()];
    for (;;) {
      const c = this.#peek();
      if (c === undefined || c === ")") break;
      items.push(this.#or());
    }
    return items.length === 1 ? items[0]! : { kind: "and", items, column };
  }

  #or(): FilterNode {
    const column = this.#pos + 1;
    const items: FilterNode[] = [this.#and()];
    while (this.#peek() === "|") {
      this.#pos++;
      items.push(this.#and());
    }
    return items.length === 1 ? items[0]! : { kind: "or", items, column };
  }

  #and(): FilterNode {
    const column = this.#pos + 1;
    const items: FilterNode[] = [this.#unary()];
    while (this.#peek() === "&") {
      this.#pos++;
      items.push(this.#unary());
    }
    return items.length === 1 ? items[0]! : { kind: "and", items, column };
  }

  #enter(column: number): void {
    if (++this.#depth > MAX_FILTER_DEPTH) throw this.#error(`nested deeper than ${MAX_FILTER_DEPTH}`, column);
  }

  #unary(): FilterNode {
    const c = this.#peek();
    const column = this.#pos + 1;
    if (c === "!") {
      this.#pos++;
      this.#enter(column);
      const item = this.#unary();
      this.#depth--;
      return { kind: "not", item, column };
    }
    return this.#atom();
  }

  #atom(): FilterNode {
    const c = this.#peek();
    const column = this.#pos + 1;
    if (c === undefined) throw this.#error("expected an expression, found the end", column);
    if (c === "(") {
      this.#pos++;
      this.#enter(column);
      if (this.#peek() === ")") throw this.#error("empty parentheses", column);
      if (this.#peek() === undefined) throw this.#error("'(' is never closed", column);
      const inner = this.#sequence();
      if (this.#peek() !== ")") throw this.#error("'(' is never closed", column);
      this.#pos++;
      this.#depth--;
      return inner;
    }
    if (c === ")") throw this.#error("unexpected ')'", column);
    if (c === "&" || c === "|") throw this.#error(`expected an expression before '${c}'`, column);
    if (c === "~") return this.#operator();
    // A bare value is a URL regex.
    const value = this.#value("a value");
    return { kind: "regex", op: "u", pattern: value.text, regex: compileRegex("u", value, this.#s), column };
  }

  #operator(): FilterNode {
    const column = this.#pos + 1;
    let end = this.#pos + 1;
    while (end < this.#s.length && /[a-zA-Z]/.test(this.#s[end]!)) end++;
    const name = this.#s.slice(this.#pos + 1, end);
    if (name === "") throw this.#error("'~' must be followed by an operator name", column);
    this.#pos = end;
    if (FLAG_OPS.has(name)) return { kind: "flag", op: name as FilterFlagOp, column };
    if (name === "c") {
      const value = this.#value("a status code");
      if (!/^\d{1,9}$/.test(value.text)) {
        throw this.#error(`~c wants a status code (digits), not '${value.text}'`, value.column);
      }
      return { kind: "code", code: Number(value.text), column };
    }
    if (REGEX_OPS.has(name)) {
      const value = this.#value(`a regex after ~${name}`);
      return {
        kind: "regex",
        op: name as FilterRegexOp,
        pattern: value.text,
        regex: compileRegex(name as FilterRegexOp, value, this.#s),
        column,
      };
    }
    if (UNSUPPORTED_OPS.has(name)) throw this.#error(`~${name} is not supported by wirescope`, column);
    throw this.#error(`unknown operator ~${name}`, column);
  }

  /** A quoted string or a run of characters other than white space and `()~'"`. */
  #value(what: string): { text: string; column: number } {
    const c = this.#peek();
    const column = this.#pos + 1;
    if (c === undefined) throw this.#error(`expected ${what}, found the end`, column);
    if (c === '"' || c === "'") {
      let text = "";
      let i = this.#pos + 1;
      for (;;) {
        const ch = this.#s[i];
        if (ch === undefined) throw this.#error(`unterminated quoted string`, column);
        if (ch === c) break;
        if (ch === "\\" && this.#s[i + 1] === c) {
          text += c;
          i += 2;
          continue;
        }
        if (ch === "\\" && this.#s[i + 1] !== undefined) {
          // Kept as is for the regex, the next character too (so `\\"` does not end early).
          text += ch + this.#s[i + 1];
          i += 2;
          continue;
        }
        text += ch;
        i++;
      }
      this.#pos = i + 1;
      return { text, column };
    }
    if (VALUE_STOP.test(c)) throw this.#error(`expected ${what}, found '${c}'`, column);
    let end = this.#pos;
    while (end < this.#s.length && !VALUE_STOP.test(this.#s[end]!)) end++;
    const text = this.#s.slice(this.#pos, end);
    this.#pos = end;
    return { text, column };
  }
}

/** Compiles a value as a case-insensitive regex, with the flags mitmproxy uses for `op`. */
function compileRegex(op: FilterRegexOp, value: { text: string; column: number }, expr: string): RegExp {
  let pattern = value.text;
  // mitmproxy compiles headers with MULTILINE and bodies with DOTALL.
  let flags = op === "h" || op === "hq" || op === "hs" || op === "comment"
    ? "im"
    : op === "b" || op === "bq" || op === "bs"
    ? "is"
    : "i";
  const inline = /^\(\?([imsx]+)\)/.exec(pattern);
  if (inline) {
    if (inline[1]!.includes("x")) {
      throw new FilterSyntaxError("the regex flag (?x) is not supported", value.column, expr);
    }
    for (const f of inline[1]!) if (!flags.includes(f)) flags += f;
    pattern = pattern.slice(inline[0].length);
  }
  // Python's named groups.
  pattern = pattern.replace(/\(\?P</g, "(?<").replace(/\(\?P=(\w+)\)/g, "\\k<$1>");
  try {
    return new RegExp(pattern, flags);
  } catch (e) {
    const detail = (e as Error).message.replace(/^Invalid regular expression: /, "");
    throw new FilterSyntaxError(`bad regex '${value.text}': ${detail}`, value.column, expr);
  }
}

function readsBodies(node: FilterNode): boolean {
  switch (node.kind) {
    case "and":
    case "or":
      return node.items.some(readsBodies);
    case "not":
      return readsBodies(node.item);
    case "regex":
      return node.op === "b" || node.op === "bq" || node.op === "bs";
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------------------------
// The predicate

const ASSET_TYPES = [
  /text\/javascript/i,
  /application\/x-javascript/i,
  /application\/javascript/i,
  /text\/css/i,
  /image\/.*/i,
  /font\/.*/i,
  /application\/font.*/i,
];

const utf8 = new TextDecoder("utf-8", { fatal: true });
const latin1 = new TextDecoder("latin1");

/** Bytes as text: UTF-8 when they are UTF-8, otherwise one character per byte. */
function bytesText(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    return latin1.decode(bytes);
  }
}

function search(regex: RegExp, text: string): boolean {
  regex.lastIndex = 0;
  return regex.test(text);
}

function headerBlock(headers: Headers1): string {
  let s = "";
  for (const [name, value] of headers) s += `${name}: ${value}\r\n`;
  return s;
}

function contentTypeMatches(regex: RegExp, headers: Headers1): boolean {
  return headers.some(([name, value]) => name.toLowerCase() === "content-type" && search(regex, value));
}

/** The host of a Host header value (`a.example:8080` → `a.example`, `[::1]:80` → `::1`). */
function hostOfHeader(value: string): string {
  const v = value.trim();
  if (v.startsWith("[")) {
    const close = v.indexOf("]");
    return close > 0 ? v.slice(1, close) : v;
  }
  const colon = v.lastIndexOf(":");
  return colon >= 0 && v.indexOf(":") === colon ? v.slice(0, colon) : v;
}

/** The Host header's host, when the request has one naming another host than `request.host`. */
export function alternateHost(flow: HttpFlow): string | undefined {
  const header = flow.request.hostHeader;
  if (header === undefined) return undefined;
  const host = hostOfHeader(header);
  return host !== flow.request.host ? host : undefined;
}

/** The URL with the Host header's host (mitmproxy's `pretty_url`), when it differs. */
export function alternateUrl(flow: HttpFlow): string | undefined {
  const header = flow.request.hostHeader;
  if (header === undefined) return undefined;
  const r = flow.request;
  if (r.method === "CONNECT") return undefined;
  const url = `${r.scheme}://${header.trim()}${r.path.startsWith("/") ? r.path : ""}`;
  return url !== r.url ? url : undefined;
}

function messagesMatch(regex: RegExp, messages: MessageRecord[], side: "any" | "client" | "server"): boolean {
  for (const m of messages) {
    if (side === "client" && !m.fromClient) continue;
    if (side === "server" && m.fromClient) continue;
    if (search(regex, bytesText(m.content))) return true;
  }
  return false;
}

/** A DNS message as text for `~b`: question names and types, answer names, types and data. */
export function dnsText(message: DnsMessage): string {
  const lines: string[] = [];
  for (const q of message.questions) lines.push(`${q.name} ${q.typeName}`);
  for (const r of [...message.answers, ...message.authorities, ...message.additionals]) {
    lines.push(`${r.name} ${r.typeName} ${r.data}`);
  }
  return lines.join("\n");
}

function bodyMatch(regex: RegExp, flow: Flow, side: "any" | "client" | "server"): boolean {
  switch (flow.type) {
    case "http": {
      if (side !== "server" && search(regex, bytesText(flow.request.body.content))) return true;
      if (side !== "client" && flow.response && search(regex, bytesText(flow.response.body.content))) {
        return true;
      }
      return flow.websocket ? messagesMatch(regex, flow.websocket.messages, side) : false;
    }
    case "tcp":
    case "udp":
      return messagesMatch(regex, flow.messages, side);
    case "dns": {
      if (side !== "server" && flow.request && search(regex, dnsText(flow.request))) return true;
      return side !== "client" && flow.response !== undefined && search(regex, dnsText(flow.response));
    }
  }
}

/** The peer's name, when the flow's peer record carries one. */
export function peerName(flow: Flow): string | undefined {
  const name = (flow.client.peer as { name?: unknown } | undefined)?.name;
  return typeof name === "string" && name !== "" ? name : undefined;
}

/** `host:port` as mitmproxy writes addresses for `~src`/`~dst` (no brackets). */
function addressText(address: { hostname: string; port: number }): string {
  return `${address.hostname}:${address.port}`;
}

function evaluateRegex(
  node: Extract<FilterNode, { kind: "regex" }>,
  flow: Flow,
  ann: FlowAnnotations,
): boolean {
  const re = node.regex;
  switch (node.op) {
    case "b":
      return bodyMatch(re, flow, "any");
    case "bq":
      return bodyMatch(re, flow, "client");
    case "bs":
      return bodyMatch(re, flow, "server");
    case "comment":
      return search(re, ann.comment ?? flow.comment ?? "");
    case "marker":
      return search(re, markOf(flow, ann));
    case "d": {
      if (flow.type !== "http") return false;
      if (search(re, flow.request.host)) return true;
      const alt = alternateHost(flow);
      return alt !== undefined && search(re, alt);
    }
    case "dst":
      return search(re, addressText(flow.server.address));
    case "src":
      return search(re, addressText(flow.client.address));
    case "h":
      if (flow.type !== "http") return false;
      return search(re, headerBlock(flow.request.headers)) ||
        (flow.response !== undefined && search(re, headerBlock(flow.response.headers)));
    case "hq":
      return flow.type === "http" && search(re, headerBlock(flow.request.headers));
    case "hs":
      return flow.type === "http" && flow.response !== undefined &&
        search(re, headerBlock(flow.response.headers));
    case "m":
      return flow.type === "http" && search(re, flow.request.method);
    case "t":
      if (flow.type !== "http") return false;
      return contentTypeMatches(re, flow.request.headers) ||
        (flow.response !== undefined && contentTypeMatches(re, flow.response.headers));
    case "tq":
      return flow.type === "http" && contentTypeMatches(re, flow.request.headers);
    case "ts":
      return flow.type === "http" && flow.response !== undefined &&
        contentTypeMatches(re, flow.response.headers);
    case "u": {
      if (flow.type === "http") {
        if (search(re, flow.request.url)) return true;
        const alt = alternateUrl(flow);
        return alt !== undefined && search(re, alt);
      }
      if (flow.type === "dns") {
        const q = flow.request?.questions[0];
        return q !== undefined && search(re, q.name);
      }
      return false;
    }
    case "peer": {
      const peer = flow.client.peer;
      if (!peer) return false;
      const name = peerName(flow);
      return peer.publicKey === node.pattern || name === node.pattern || search(re, peer.publicKey) ||
        (name !== undefined && search(re, name));
    }
  }
}

function evaluate(node: FilterNode, flow: Flow, ann: FlowAnnotations): boolean {
  switch (node.kind) {
    case "and":
      return node.items.every((n) => evaluate(n, flow, ann));
    case "or":
      return node.items.some((n) => evaluate(n, flow, ann));
    case "not":
      return !evaluate(node.item, flow, ann);
    case "code":
      return flow.type === "http" && flow.response?.status === node.code;
    case "regex":
      return evaluateRegex(node, flow, ann);
    case "flag":
      switch (node.op) {
        case "all":
          return true;
        case "a":
          return flow.type === "http" && flow.response !== undefined &&
            ASSET_TYPES.some((re) => contentTypeMatches(re, flow.response!.headers));
        case "dns":
        case "http":
        case "tcp":
        case "udp":
          return flow.type === node.op;
        case "e":
          return flow.error !== undefined;
        case "marked":
          return markOf(flow, ann) !== "";
        case "q":
          return (flow.type === "http" || flow.type === "dns") && flow.response === undefined;
        case "s":
          return (flow.type === "http" || flow.type === "dns") && flow.response !== undefined;
        case "websocket":
          return flow.type === "http" && flow.websocket !== undefined;
        case "replay":
          return flow.type === "http" && flow.replay !== undefined;
        case "replayq":
          return flow.type === "http" && flow.replay === "client";
        case "replays":
          return flow.type === "http" && flow.replay === "server";
      }
  }
}

// ---------------------------------------------------------------------------------------------
// SQL

/**
 * The columns of the flows table the SQL names (all NOT NULL; a flow store fills them as said):
 *
 * - `type` TEXT: `http`, `tcp`, `udp`, `dns`
 * - `host_id`, `host_alt_id`, `method_id` INTEGER: ids in a table `names(id, name)` of the HTTP
 *   `request.host`, {@link alternateHost} and method; the id of `''` for other flows and when absent
 * - `url` TEXT: HTTP `request.url`, DNS first question name, '' otherwise; `url_alt`:
 *   {@link alternateUrl} or ''
 * - `status` INTEGER: HTTP response status (0 without a response)
 * - `has_response` INTEGER: 1 when an HTTP or DNS flow has its response
 * - `websocket` INTEGER: 1 for an HTTP flow with a WebSocket
 * - `has_error` INTEGER: 1 when the flow has an error
 * - `client`, `server` TEXT: `host:port` of the client and the server address (no brackets)
 * - `peer` TEXT: the peer's public key (''); `peer_name` TEXT: its name ('')
 * - `marked` INTEGER 0/1; `mark` TEXT, the mark's name (''); `comment` TEXT ('')
 *
 * Regex values are translated when they are plain text (letters, digits, escaped punctuation,
 * `.` as any character, optional `^` and `$`): into `LIKE … ESCAPE '\'`, which is
 * case-insensitive for ASCII as the regex is (a value with non-ASCII text is not translated).
 * Anything else becomes `1` with `exact: false`, and so does the negation of an inexact part.
 */
export function toSql(node: FilterNode): SqlFilter {
  switch (node.kind) {
    case "and":
    case "or": {
      const parts = node.items.map(toSql);
      const params = parts.flatMap((p) => p.params);
      const joiner = node.kind === "and" ? " AND " : " OR ";
      return {
        sql: `(${parts.map((p) => p.sql).join(joiner)})`,
        params,
        exact: parts.every((p) => p.exact),
      };
    }
    case "not": {
      const inner = toSql(node.item);
      // The complement of a superset is not a superset: fall back to every row.
      if (!inner.exact) return ANY;
      return { sql: `(NOT ${inner.sql})`, params: inner.params, exact: true };
    }
    case "code":
      return {
        sql: "(type = 'http' AND has_response = 1 AND status = ?)",
        params: [node.code],
        exact: true,
      };
    case "flag":
      return flagSql(node.op);
    case "regex":
      return regexSql(node.op, node.pattern);
  }
}

const ANY: SqlFilter = { sql: "1", params: [], exact: false };

function flagSql(op: FilterFlagOp): SqlFilter {
  const exact = (sql: string): SqlFilter => ({ sql, params: [], exact: true });
  switch (op) {
    case "all":
      return exact("1");
    case "dns":
    case "http":
    case "tcp":
    case "udp":
      return exact(`(type = '${op}')`);
    case "e":
      return exact("(has_error = 1)");
    case "marked":
      return exact("(marked = 1)");
    case "q":
      return exact("(type IN ('http', 'dns') AND has_response = 0)");
    case "s":
      return exact("(type IN ('http', 'dns') AND has_response = 1)");
    case "websocket":
      return exact("(type = 'http' AND websocket = 1)");
    case "a":
      return { sql: "(type = 'http' AND has_response = 1)", params: [], exact: false };
    case "replay":
    case "replayq":
    case "replays":
      // No column says it: the HTTP flows, checked one by one.
      return { sql: "(type = 'http')", params: [], exact: false };
  }
}

/** A regex that is plain text, as a LIKE pattern; undefined when it is more than that. */
export function likePattern(pattern: string, multiline = false): string | undefined {
  let s = pattern;
  // Where a regex spans lines, `^`, `$` and `.` mean things LIKE cannot say.
  if (multiline && /[\^$.]/.test(s.replace(/\\./g, ""))) return undefined;
  let start = false;
  let end = false;
  if (s.startsWith("^")) {
    start = true;
    s = s.slice(1);
  }
  if (s.endsWith("$") && !s.endsWith("\\$")) {
    end = true;
    s = s.slice(0, -1);
  }
  let body = "";
  let chars = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c.charCodeAt(0) > 0x7e || c.charCodeAt(0) < 0x20) return undefined;
    if (c === "\\") {
      const next = s[i + 1];
      if (next === undefined || /[a-zA-Z0-9]/.test(next)) return undefined; // \d, \b, \1 …
      body += likeEscape(next);
      i++;
    } else if (c === ".") {
      body += "_";
    } else if ("^$*+?()[]{}|".includes(c)) {
      return undefined;
    } else {
      body += likeEscape(c);
    }
    chars++;
  }
  // An empty pattern matches '' too; the defaults of absent fields are '', so leave it to the
  // predicate.
  if (chars === 0) return undefined;
  return `${start ? "" : "%"}${body}${end ? "" : "%"}`;
}

function likeEscape(c: string): string {
  return c === "%" || c === "_" || c === "\\" ? `\\${c}` : c;
}

function regexSql(op: FilterRegexOp, pattern: string): SqlFilter {
  const like = likePattern(pattern, op === "comment");
  const on = (columns: string[]): SqlFilter => {
    if (like === undefined) return ANY;
    return {
      sql: `(${columns.map((c) => `${c} LIKE ? ESCAPE '\\'`).join(" OR ")})`,
      params: columns.map(() => like),
      exact: true,
    };
  };
  // Hosts and methods are few: they live in a table of names, and the rows point at them, so a
  // host test scans that small table and then follows an index.
  const named = (columns: string[]): SqlFilter => {
    if (like === undefined) return ANY;
    return {
      sql: `(${
        columns.map((c) => `${c} IN (SELECT id FROM names WHERE name LIKE ? ESCAPE '\\')`).join(" OR ")
      })`,
      params: columns.map(() => like),
      exact: true,
    };
  };
  switch (op) {
    case "d":
      return named(["host_id", "host_alt_id"]);
    case "m":
      return named(["method_id"]);
    case "u":
      return on(["url", "url_alt"]);
    case "src":
      return on(["client"]);
    case "dst":
      return on(["server"]);
    case "comment":
      return on(["comment"]);
    case "marker":
      return on(["mark"]);
    case "peer": {
      if (like === undefined) return ANY;
      return {
        sql:
          "(peer <> '' AND (peer = ? OR peer_name = ? OR peer LIKE ? ESCAPE '\\' OR peer_name LIKE ? ESCAPE '\\'))",
        params: [pattern, pattern, like, like],
        exact: true,
      };
    }
    case "h":
    case "hq":
    case "hs":
    case "t":
    case "tq":
    case "ts":
      return { sql: "(type = 'http')", params: [], exact: false };
    case "b":
    case "bq":
    case "bs":
      return ANY;
  }
}
