/**
 * Adds a header to every request on its way to the server, e.g. to tell a staging backend that
 * traffic came through the proxy. The value is an option: `--set via_value=my-laptop`.
 *
 *   wirescope -s examples/addons/add_header.ts --set via_value=my-laptop
 */
import { defineAddon } from "../../src/addons/types.ts";

export default defineAddon({
  name: "add-header",
  options: {
    via_value: { type: "string", default: "wirescope", help: "value of the x-via header added to requests" },
  },
  request(flow, ctx) {
    // `set` replaces a header the client sent; `add` would keep both.
    flow.request.headers.set("x-via", ctx.options.via_value);
  },
});
