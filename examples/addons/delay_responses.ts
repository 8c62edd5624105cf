/**
 * Holds responses back for a while before the client gets them, to see how an app copes with a
 * slow network. Only URLs matching `delay_match` (a regex) are delayed.
 *
 *   wirescope -s examples/addons/delay_responses.ts --set delay_ms=2000 --set delay_match=/api/
 */
import { defineAddon } from "../../src/addons/types.ts";

export default defineAddon({
  name: "delay",
  options: {
    delay_ms: { type: "number", default: 1000, help: "how long to hold each matching response" },
    delay_match: { type: "string", default: ".", help: "regex over the URL of the requests to delay" },
  },
  async response(flow, ctx) {
    if (!new RegExp(ctx.options.delay_match).test(flow.request.url)) return;
    // Hooks may be async: the response waits for the promise (other flows do not).
    await new Promise((resolve) => setTimeout(resolve, ctx.options.delay_ms));
  },
});
