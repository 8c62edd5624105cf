/**
 * `--block-list "|FILTER|STATUS"` (mitmproxy's `block_list`): requests matching FILTER are
 * answered with STATUS and an empty body, without contacting the server; STATUS 444 closes the
 * connection without any answer (nginx's "no response", as in mitmproxy). The first matching
 * entry wins. Unlike mitmproxy, the filter may not be left out: a block list entry needs one.
 * @module
 */
import { defineAddon } from "../types.ts";
import { type FlowMatcher, SpecError, splitSpec } from "./spec.ts";

/** The status that kills the exchange instead of answering it. */
export const NO_RESPONSE = 444;

/** One parsed `--block-list` entry. */
export interface BlockSpec {
  matcher: FlowMatcher;
  status: number;
}

/** Parses `|FILTER|STATUS`. */
export function parseBlockSpec(text: string): BlockSpec {
  const { matcher, fields } = splitSpec(text, 1);
  if (matcher.expression === "") throw new SpecError(`expected |FILTER|STATUS, got ${JSON.stringify(text)}`);
  const status = /^\d{3}$/.test(fields[0]!) ? Number(fields[0]) : NaN;
  if (!(status >= 200 && status <= 599)) {
    throw new SpecError(`status ${JSON.stringify(fields[0])}: expected 200 to 599 (444: no response)`);
  }
  return { matcher, status };
}

/** The block list addon. */
export function blockList() {
  let specs: BlockSpec[] = [];
  return defineAddon({
    name: "block_list",
    options: {
      block_list: {
        type: "string[]",
        default: [],
        help: "|FILTER|STATUS: answer matching requests with STATUS (444: close without answer)",
      },
    },
    configure(changed, ctx) {
      if (changed.has("block_list")) specs = ctx.options.block_list.map(parseBlockSpec);
    },
    request(flow) {
      for (const spec of specs) {
        if (!spec.matcher.matches(flow)) continue;
        if (spec.status === NO_RESPONSE) flow.kill();
        else flow.respond(spec.status, { server: "wirescope" });
        return;
      }
    },
  });
}
