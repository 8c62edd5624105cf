/**
 * `--anticache` (mitmproxy's `anticache`): drops the request headers that make a server answer
 * "304 Not Modified" (If-None-Match, If-Modified-Since), so every response comes whole and is
 * seen in full.
 * @module
 */
import { defineAddon } from "../types.ts";

/** The anticache addon. */
export function anticache() {
  return defineAddon({
    name: "anticache",
    options: {
      anticache: { type: "boolean", default: false, help: "strip If-None-Match and If-Modified-Since" },
    },
    request(flow, ctx) {
      if (!ctx.options.anticache) return;
      flow.request.headers.delete("if-none-match");
      flow.request.headers.delete("if-modified-since");
    },
  });
}
