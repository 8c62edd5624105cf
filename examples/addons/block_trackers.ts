/**
 * Blocks requests to tracking hosts (and their subdomains) with an empty 204, so pages load on
 * without them. The list is an option; `--set trackers=a.com --set trackers=b.net` replaces it.
 *
 *   wirescope -s examples/addons/block_trackers.ts
 */
import { defineAddon } from "../../src/addons/types.ts";

export default defineAddon({
  name: "block-trackers",
  options: {
    trackers: {
      type: "string[]",
      default: ["doubleclick.net", "google-analytics.com", "googletagmanager.com", "hotjar.com"],
      help: "hosts whose requests are answered 204 (subdomains too)",
    },
  },
  request(flow, ctx) {
    const host = flow.request.host.toLowerCase();
    const hit = ctx.options.trackers.some((t) => host === t || host.endsWith(`.${t}`));
    if (!hit) return;
    // Answer locally: the tracker is never contacted. A mark makes these easy to find later.
    flow.respond(204);
    flow.marked = "tracker";
  },
});
