/**
 * `--modify-body "|FILTER|REGEX|REPLACEMENT"` (mitmproxy's `modify_body`): on every request and
 * response the filter matches (`~q` requests only, `~s` responses only, none: both), every
 * match of REGEX in the body is replaced. The regex runs over bytes (one character per byte,
 * `.` matches line breaks as with Python's DOTALL), so binary bodies work and `\xHH` in the
 * regex is a byte. REPLACEMENT is a Python `re.sub` template (`\1`, `\g<name>`, `\n`, `\xHH`);
 * `@path` puts the file's bytes in as they are. Bodies the proxy did not buffer whole are left
 * alone (a log line says so).
 *
 * Where mitmproxy differs: it escape-decodes the replacement before `re.sub`, so its `\1` is
 * byte 1; here `\1` is group 1, as in `--map-remote`.
 * @module
 */
import type { HttpFlowHandle, HttpMessageHandle } from "../types.ts";
import { defineAddon } from "../types.ts";
import {
  compileTemplate,
  FileOrValue,
  type FlowMatcher,
  fromBinary,
  pythonRegex,
  pythonSub,
  splitSpec,
  type Template,
  toBinary,
} from "./spec.ts";

/** One parsed `--modify-body` entry. */
export interface ModifyBodySpec {
  matcher: FlowMatcher;
  regex: RegExp;
  /** The template (direct values), or the file whose bytes go in literally. */
  replacement: Template | FileOrValue;
}

/** Parses `|FILTER|REGEX|REPLACEMENT` (the filter may be left out). */
export function parseModifyBodySpec(text: string): ModifyBodySpec {
  const { matcher, fields } = splitSpec(text, 2);
  const [pattern, replacement] = fields as [string, string];
  const regex = pythonRegex(pattern, "s", true);
  if (replacement.startsWith("@")) return { matcher, regex, replacement: new FileOrValue(replacement) };
  return {
    matcher,
    regex,
    replacement: compileTemplate(toBinary(new TextEncoder().encode(replacement)), regex),
  };
}

/** The modify-body addon. */
export function modifyBody() {
  let specs: ModifyBodySpec[] = [];
  const run = async (flow: HttpFlowHandle, message: HttpMessageHandle, log: (m: string) => void) => {
    const hits = specs.filter((s) => s.matcher.matches(flow));
    if (hits.length === 0) return;
    if (message.body === undefined) {
      log(`${flow.request.url}: body not buffered whole, left unchanged`);
      return;
    }
    let body = toBinary(message.body);
    const before = body;
    for (const s of hits) {
      const template: Template = s.replacement instanceof FileOrValue
        ? literal(toBinary(await s.replacement.bytes()))
        : s.replacement;
      body = pythonSub(s.regex, template, body);
    }
    if (body !== before) message.body = fromBinary(body);
  };
  return defineAddon({
    name: "modify_body",
    options: {
      modify_body: {
        type: "string[]",
        default: [],
        help: "|FILTER|REGEX|REPLACEMENT: replace in bodies (bytes; \\1 groups; @file)",
      },
    },
    configure(changed, ctx) {
      if (changed.has("modify_body")) specs = ctx.options.modify_body.map(parseModifyBodySpec);
    },
    async request(flow, ctx) {
      await run(flow, flow.request, (m) => ctx.log("warn", m));
    },
    async response(flow, ctx) {
      if (flow.response) await run(flow, flow.response, (m) => ctx.log("warn", m));
    },
  });
}

function literal(text: string): Template {
  return { expand: () => text };
}
