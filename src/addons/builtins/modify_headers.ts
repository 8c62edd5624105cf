/**
 * `--modify-headers "|FILTER|NAME|VALUE"` (mitmproxy's `modify_headers`): on every request and
 * response the filter matches, header NAME is removed and then, when VALUE is not empty, set to
 * VALUE (`@path`: the file's contents, its trailing line break dropped). The filter is checked
 * in both phases, so `~q` limits an entry to requests and `~s` to responses; with no filter an
 * entry applies to both. Several entries for one name give several fields, in order. All filters
 * are checked against the message before any entry changes it.
 * @module
 */
import type { HeaderList, HttpFlowHandle } from "../types.ts";
import { defineAddon } from "../types.ts";
import { FileOrValue, type FlowMatcher, SpecError, splitSpec } from "./spec.ts";

/** One parsed `--modify-headers` entry. */
export interface ModifyHeaderSpec {
  matcher: FlowMatcher;
  name: string;
  value: FileOrValue;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Parses `|FILTER|NAME|VALUE` (the filter may be left out: `|NAME|VALUE`). */
export function parseModifyHeaderSpec(text: string): ModifyHeaderSpec {
  const { matcher, fields } = splitSpec(text, 2);
  const [name, value] = fields as [string, string];
  if (!TOKEN.test(name)) throw new SpecError(`bad header name ${JSON.stringify(name)}`);
  const spec = { matcher, name, value: new FileOrValue(value) };
  if (spec.value.path === undefined && /[\r\n\0]/.test(value)) {
    throw new SpecError(`header value for ${name} holds CR, LF or NUL`);
  }
  return spec;
}

/** The modify-headers addon. */
export function modifyHeaders() {
  let specs: ModifyHeaderSpec[] = [];
  const run = async (flow: HttpFlowHandle, headers: HeaderList, log: (m: string) => void) => {
    const hits = specs.filter((s) => s.matcher.matches(flow));
    for (const s of hits) headers.delete(s.name);
    for (const s of hits) {
      const value = new TextDecoder().decode(await s.value.bytes()).replace(/\r?\n$/, "");
      if (value === "") continue;
      try {
        headers.add(s.name, value);
      } catch (e) {
        log(`${s.name} from ${s.value.text}: ${(e as Error).message}`);
      }
    }
  };
  return defineAddon({
    name: "modify_headers",
    options: {
      modify_headers: {
        type: "string[]",
        default: [],
        help: "|FILTER|NAME|VALUE: set header NAME (empty VALUE removes it; @file reads it)",
      },
    },
    configure(changed, ctx) {
      if (changed.has("modify_headers")) specs = ctx.options.modify_headers.map(parseModifyHeaderSpec);
    },
    async request(flow, ctx) {
      await run(flow, flow.request.headers, (m) => ctx.log("warn", m));
    },
    async response(flow, ctx) {
      if (flow.response) await run(flow, flow.response.headers, (m) => ctx.log("warn", m));
    },
  });
}
