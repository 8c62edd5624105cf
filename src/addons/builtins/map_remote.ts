/**
 * `--map-remote "|FILTER|REGEX|REPLACEMENT"` (mitmproxy's `map_remote`): for requests the filter
 * matches, every match of REGEX in the full URL is replaced (Python `re.sub`: `\1`, `\g<name>`)
 * and the request goes to the resulting URL: host, port and path change, and the Host header
 * follows. Entries apply in order, each to the URL the one before left.
 *
 * Not yet: a change of scheme (http ↔ https) is refused with a log line, because the proxy's
 * request change cannot switch the server connection's TLS yet.
 * @module
 */
import { defineAddon } from "../types.ts";
import {
  compileTemplate,
  type FlowMatcher,
  pythonRegex,
  pythonSub,
  splitSpec,
  type Template,
} from "./spec.ts";

/** One parsed `--map-remote` entry. */
export interface MapRemoteSpec {
  matcher: FlowMatcher;
  regex: RegExp;
  replacement: Template;
}

/** Parses `|FILTER|REGEX|REPLACEMENT` (the filter may be left out). */
export function parseMapRemoteSpec(text: string): MapRemoteSpec {
  const { matcher, fields } = splitSpec(text, 2);
  const [pattern, replacement] = fields as [string, string];
  const regex = pythonRegex(pattern);
  return { matcher, regex, replacement: compileTemplate(replacement, regex) };
}

/** The map-remote addon. */
export function mapRemote() {
  let specs: MapRemoteSpec[] = [];
  return defineAddon({
    name: "map_remote",
    options: {
      map_remote: {
        type: "string[]",
        default: [],
        help: "|FILTER|REGEX|REPLACEMENT: rewrite the URL of matching requests (\\1 groups)",
      },
    },
    configure(changed, ctx) {
      if (changed.has("map_remote")) specs = ctx.options.map_remote.map(parseMapRemoteSpec);
    },
    request(flow, ctx) {
      for (const spec of specs) {
        if (!spec.matcher.matches(flow)) continue;
        const url = flow.request.url;
        const next = pythonSub(spec.regex, spec.replacement, url);
        if (next === url) continue;
        let parsed: URL;
        try {
          parsed = new URL(next);
        } catch {
          ctx.log("warn", `${url} → ${next}: not a URL, left unchanged`);
          continue;
        }
        if (parsed.protocol !== `${flow.request.scheme}:`) {
          ctx.log("warn", `${url} → ${next}: changing the scheme is not supported, left unchanged`);
          continue;
        }
        flow.request.url = next;
      }
    },
  });
}
