/**
 * Rewrites text in HTML responses: every `rewrite_from` becomes `rewrite_to`. Handy to try a
 * copy change on a live site without deploying it. Content-Length is fixed up by the proxy.
 *
 *   wirescope -s examples/addons/rewrite_body.ts --set rewrite_from=Login --set rewrite_to="Sign in"
 */
import { defineAddon } from "../../src/addons/types.ts";

export default defineAddon({
  name: "rewrite-body",
  options: {
    rewrite_from: { type: "string", default: "", help: "text to replace in HTML responses" },
    rewrite_to: { type: "string", default: "", help: "what it becomes" },
  },
  response(flow, ctx) {
    const res = flow.response;
    const { rewrite_from: from, rewrite_to: to } = ctx.options;
    if (!res || from === "" || !(res.headers.get("content-type") ?? "").startsWith("text/html")) return;
    // `text` is undefined for a body too long to buffer: leave those alone.
    const html = res.text;
    if (html !== undefined && html.includes(from)) res.text = html.replaceAll(from, to);
  },
});
