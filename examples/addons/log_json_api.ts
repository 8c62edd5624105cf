/**
 * Logs each JSON API call in one line: method, URL, status, size and the top-level keys of the
 * answer, a quick way to see what an app talks to its backend about. (Run with -v to see info.)
 *
 *   wirescope -v -s examples/addons/log_json_api.ts
 */
import { defineAddon } from "../../src/addons/types.ts";

export default defineAddon({
  name: "json-api",
  response(flow, ctx) {
    const res = flow.response;
    if (!res || !(res.headers.get("content-type") ?? "").includes("json")) return;
    let keys = "(not JSON)";
    try {
      const value = res.json();
      keys = value && typeof value === "object" ? Object.keys(value).join(",") : typeof value;
    } catch {
      // A body too long to buffer, or not JSON after all: the line still says what was called.
    }
    const size = res.body?.byteLength ?? "?";
    ctx.log("info", `${flow.request.method} ${flow.request.url} ${res.status} ${size}B keys=${keys}`);
  },
});
