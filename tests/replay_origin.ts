/**
 * A test origin for the replay tests: answers every request with `answer N to METHOD PATH [BODY]`
 * (N counts the requests it served) and prints each request it saw as one JSON line on stdout
 * (method, path with query, headers in order, body), after a first line `ready`.
 *
 * Usage: `deno run -A tests/replay_origin.ts ADDRESS HTTP_PORT HTTPS_PORT CERT KEY`
 */
const [address, httpPort, httpsPort, cert, key] = Deno.args;
if (!address || !httpPort || !httpsPort || !cert || !key) {
  console.error("usage: replay_origin.ts ADDRESS HTTP_PORT HTTPS_PORT CERT KEY");
  Deno.exit(2);
}
let served = 0;

async function handler(req: Request): Promise<Response> {
  const url = new URL(req.url);
  const body = await req.text();
  const path = url.pathname + url.search;
  console.log(JSON.stringify({ method: req.method, path, headers: [...req.headers], body }));
  served++;
  return new Response(`answer ${served} to ${req.method} ${path}${body ? " " + body : ""}`, {
    status: req.method === "POST" ? 201 : 200,
    headers: { "x-origin": "replay-origin" },
  });
}

Deno.serve({ hostname: address, port: Number(httpPort), onListen() {} }, handler);
Deno.serve({
  hostname: address,
  port: Number(httpsPort),
  cert: Deno.readTextFileSync(cert),
  key: Deno.readTextFileSync(key),
  onListen() {},
}, handler);
console.log("ready");
