/**
 * Answers one endpoint with a canned JSON response, so a frontend can be worked on before the
 * backend has it. Every other request goes to the server as usual.
 *
 *   wirescope -s examples/addons/mock_endpoint.ts
 */
import { defineAddon } from "../../src/addons/types.ts";

const MOCK = { id: 42, name: "Ada", plan: "pro", mocked: true };

export default defineAddon({
  name: "mock-endpoint",
  options: {
    mock_path: { type: "string", default: "/api/me", help: "the path answered with the canned JSON" },
  },
  request(flow, ctx) {
    const { method, path } = flow.request;
    if (method !== "GET" || path.split("?")[0] !== ctx.options.mock_path) return;
    // The server is not contacted for this request.
    flow.respond(200, { "content-type": "application/json" }, JSON.stringify(MOCK));
  },
});
