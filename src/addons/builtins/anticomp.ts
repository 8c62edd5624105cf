/**
 * `--anticomp` (mitmproxy's `anticomp`): asks servers for uncompressed responses by setting
 * `Accept-Encoding: identity` on every request, so bodies are readable as they pass.
 * @module
 */
import { defineAddon } from "../types.ts";

/** The anticomp addon. */
export function anticomp() {
  return defineAddon({
    name: "anticomp",
    options: {
      anticomp: { type: "boolean", default: false, help: "ask servers for uncompressed bodies" },
    },
    request(flow, ctx) {
      if (ctx.options.anticomp) flow.request.headers.set("accept-encoding", "identity");
    },
  });
}
