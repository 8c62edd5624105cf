/**
 * What the built-in addons share: mitmproxy's `|FILTER|SUBJECT|REPLACEMENT` option syntax, its
 * Python-flavoured regexes and `re.sub` replacement templates (over text, or over bytes one
 * character per byte), `@file` values, and matching a filter against a live exchange.
 *
 * The separator is the option's first character, whatever it is (`|`, `/`, `:`...); the rest is
 * split at that character into at most `fields` parts, so the last part may hold it. When one
 * part fewer is given, the filter is left out and every flow matches (as mitmproxy does).
 * @module
 */
import { readFileSync } from "node:fs";
import { compileFilter, type Filter, FilterSyntaxError } from "../../flows/filter.ts";
import type { HttpFlowHandle } from "../types.ts";

/** A mistake in a built-in option's value; the message is one line (the CLI names the option). */
export class SpecError extends Error {
  override name = "SpecError";
}

/** A filter expression compiled once, with the text it came from. */
export interface FlowMatcher {
  readonly expression: string;
  /** True when the exchange's flow record matches. */
  matches(flow: HttpFlowHandle): boolean;
}

/** The matcher every flow passes (the filter was left out). */
export const MATCH_ALL: FlowMatcher = { expression: "", matches: () => true };

/** Compiles a filter expression into a {@link FlowMatcher}; a syntax error becomes a {@link SpecError}. */
export function flowMatcher(expression: string): FlowMatcher {
  let filter: Filter;
  try {
    filter = compileFilter(expression);
  } catch (e) {
    if (e instanceof FilterSyntaxError) {
      throw new SpecError(`filter ${JSON.stringify(expression)}: ${e.reason} at column ${e.column}`);
    }
    throw new SpecError(`filter ${JSON.stringify(expression)}: ${(e as Error).message}`);
  }
  // The record is what the filter language reads: request fields, and the response once there
  // is one (so `~q` picks the request phase and `~s` the response phase).
  return { expression, matches: (h) => filter.match(h.flow) };
}

/**
 * Splits `|FILTER|A|B` (or `|A|B`, the filter left out) into the matcher and the other parts.
 * `parts` is how many parts follow the filter.
 */
export function splitSpec(text: string, parts: number): { matcher: FlowMatcher; fields: string[] } {
  if (text.length < 2) throw new SpecError(`expected ${shape(parts)}, got ${JSON.stringify(text)}`);
  const sep = text[0]!;
  const rest = text.slice(1);
  const pieces: string[] = [];
  let from = 0;
  // Split at most `parts` times: the last piece keeps any further separators.
  while (pieces.length < parts) {
    const at = rest.indexOf(sep, from);
    if (at < 0) break;
    pieces.push(rest.slice(from, at));
    from = at + 1;
  }
  pieces.push(rest.slice(from));
  if (pieces.length === parts + 1) {
    const [expr, ...fields] = pieces;
    return { matcher: expr!.trim() === "" ? MATCH_ALL : flowMatcher(expr!), fields };
  }
  if (pieces.length === parts) return { matcher: MATCH_ALL, fields: pieces };
  throw new SpecError(
    `expected ${shape(parts)} (the first character is the separator), got ${JSON.stringify(text)}`,
  );
}

function shape(parts: number): string {
  const names = parts === 1 ? ["STATUS"] : ["SUBJECT", "REPLACEMENT"].slice(0, parts);
  return `|FILTER|${names.join("|")}`;
}

// ---- Python regexes ------------------------------------------------------------------------

/**
 * Compiles a Python `re` pattern as a JavaScript RegExp: `(?P<name>…)` and `(?P=name)` are
 * rewritten, leading inline flags `(?i)`, `(?s)`, `(?m)` become flags, `\A` and `\Z` become
 * `^` and `$`. `flags` are added (`g` is always set). With `bytes`, the pattern is first put in
 * the one-character-per-byte form the subject is in (UTF-8 text becomes its bytes).
 */
export function pythonRegex(pattern: string, flags = "", bytes = false): RegExp {
  let source = pattern;
  let extra = "";
  for (;;) {
    const m = /^\(\?([aiLmsux]+)\)/.exec(source);
    if (!m) break;
    for (const f of m[1]!) {
      if (f === "i" || f === "m" || f === "s") extra += f;
      else if (f === "x" || f === "L") {
        throw new SpecError(`regex ${JSON.stringify(pattern)}: flag (?${f}) unsupported`);
      }
    }
    source = source.slice(m[0].length);
  }
  source = source.replace(/\(\?P</g, "(?<").replace(/\(\?P=(\w+)\)/g, "\\k<$1>")
    .replace(/\\A/g, "^").replace(/\\Z/g, "$");
  if (bytes) source = toBinary(new TextEncoder().encode(source));
  const all = [...new Set(("g" + flags + extra).split(""))].join("");
  try {
    return new RegExp(source, all);
  } catch (e) {
    throw new SpecError(`bad regex ${JSON.stringify(pattern)}: ${(e as Error).message.replace(/^.*: /, "")}`);
  }
}

/** A part of a compiled replacement template: literal text or a group (number or name). */
type TemplatePart = string | { group: number | string };

/** A Python `re.sub` replacement template, checked against the regex it goes with. */
export interface Template {
  expand(match: RegExpExecArray): string;
}

const ESCAPES: Record<string, string> = {
  a: "\x07",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
  v: "\v",
  "\\": "\\",
};

/**
 * Compiles a replacement as Python's `re.sub` reads it: `\1`…`\99` and `\g<1>`/`\g<name>` are
 * groups (an unmatched one is empty), `\0` and three octal digits are a character, `\n`, `\t`
 * and the other C escapes are theirs, and (beyond Python, for binary bodies) `\xHH` is that
 * byte. A backslash before anything else stays; before another ASCII letter it is an error.
 * `$1` is plain text, as in Python.
 */
export function compileTemplate(template: string, regex: RegExp): Template {
  const probe = new RegExp(`${regex.source}|`, regex.flags.replace("g", "")).exec("")!;
  const groupCount = probe.length - 1;
  const names = new Set(Object.keys(probe.groups ?? {}));
  const parts: TemplatePart[] = [];
  let lit = "";
  const group = (g: number | string) => {
    if (typeof g === "number" ? g > groupCount : !names.has(g)) {
      throw new SpecError(`replacement ${JSON.stringify(template)}: no group ${g} in the regex`);
    }
    if (lit) parts.push(lit);
    lit = "";
    parts.push({ group: g });
  };
  for (let i = 0; i < template.length; i++) {
    const c = template[i]!;
    if (c !== "\\") {
      lit += c;
      continue;
    }
    const n = template[i + 1];
    if (n === undefined) {
      throw new SpecError(`replacement ${JSON.stringify(template)}: ends with a backslash`);
    }
    if (n === "g") {
      const m = /^<([^>]*)>/.exec(template.slice(i + 2));
      if (!m) throw new SpecError(`replacement ${JSON.stringify(template)}: \\g needs <name> or <number>`);
      group(/^\d+$/.test(m[1]!) ? Number(m[1]) : m[1]!);
      i += 2 + m[0].length - 1;
    } else if (/[0-7]/.test(n) && /^[0-7]{3}$/.test(template.slice(i + 1, i + 4)) || n === "0") {
      const oct = /^[0-7]{1,3}/.exec(template.slice(i + 1))![0];
      const digits = n === "0" ? oct : oct.slice(0, 3);
      lit += String.fromCharCode(parseInt(digits, 8) & 0xff);
      i += digits.length;
    } else if (/[1-9]/.test(n)) {
      const d = /^\d{1,2}/.exec(template.slice(i + 1))![0];
      group(Number(d));
      i += d.length;
    } else if (n === "x" && /^[0-9a-fA-F]{2}$/.test(template.slice(i + 2, i + 4))) {
      lit += String.fromCharCode(parseInt(template.slice(i + 2, i + 4), 16));
      i += 3;
    } else if (ESCAPES[n] !== undefined) {
      lit += ESCAPES[n];
      i += 1;
    } else if (/[A-Za-z]/.test(n)) {
      throw new SpecError(`replacement ${JSON.stringify(template)}: bad escape \\${n}`);
    } else {
      lit += "\\" + n;
      i += 1;
    }
  }
  if (lit) parts.push(lit);
  return {
    expand(m) {
      let out = "";
      for (const p of parts) {
        if (typeof p === "string") out += p;
        else out += (typeof p.group === "number" ? m[p.group] : m.groups?.[p.group]) ?? "";
      }
      return out;
    },
  };
}

/** Python's `re.sub(regex, template, subject)`: every match replaced, left to right. */
export function pythonSub(regex: RegExp, template: Template, subject: string): string {
  regex.lastIndex = 0;
  let out = "";
  let last = 0;
  let guard = 0;
  for (let m = regex.exec(subject); m !== null; m = regex.exec(subject)) {
    out += subject.slice(last, m.index) + template.expand(m);
    last = m.index + m[0].length;
    // An empty match moves on by one so the loop ends (as Python does).
    if (m[0].length === 0) regex.lastIndex++;
    if (++guard > subject.length + 1) break;
  }
  regex.lastIndex = 0;
  return out + subject.slice(last);
}

// ---- bytes as one character per byte ---------------------------------------------------------

/** Bytes as a string of code units 0-255 (what byte regexes run over). */
export function toBinary(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return s;
}

/** The reverse of {@link toBinary} (code units above 255 keep their low byte). */
export function fromBinary(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
  return out;
}

// ---- @file values --------------------------------------------------------------------------

/**
 * A value given directly or as `@path` (read from the file each time it is used, so edits show
 * without a restart). The file is read once when the option is parsed, to refuse a missing one.
 */
export class FileOrValue {
  readonly text: string;
  readonly path: string | undefined;
  #cached: Uint8Array;

  constructor(text: string) {
    this.text = text;
    this.path = text.startsWith("@") ? text.slice(1) : undefined;
    if (this.path !== undefined) {
      try {
        this.#cached = readFileSync(this.path);
      } catch (e) {
        throw new SpecError(`cannot read ${this.path}: ${(e as Error).message.replace(/, open.*$/, "")}`);
      }
    } else {
      this.#cached = new TextEncoder().encode(text);
    }
  }

  /** The bytes: the file's current contents (the last good read when it cannot be read now). */
  async bytes(): Promise<Uint8Array> {
    if (this.path === undefined) return this.#cached;
    try {
      this.#cached = await Deno.readFile(this.path);
    } catch { /* keep the last good contents */ }
    return this.#cached;
  }
}
