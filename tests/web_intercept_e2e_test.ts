/**
 * `wirescope --mode wireguard --web --intercept EXPR` with a real WireGuard client (wireguard-go
 * in a namespace, tests/rig.ts) running curl over HTTPS to a test origin in its own namespace
 * (tests/origin_ns.ts + tests/replay_origin.ts, which logs what it sees), driven through the web
 * API as the page drives it (cookie + CSRF header):
 *
 * - the request matching the expression given on the command line is held: curl still waits,
 *   the origin has seen nothing, `/api/intercept` lists it; resumed with a header changed and a
 *   body replaced: the origin sees both and curl gets the answer;
 * - the expression changed over the API to hold responses: the status is changed, curl gets it;
 * - a held request killed: curl fails, the origin never sees it;
 * - replay and an edited send: the origin sees the request again, and the edited one.
 *
 * Needs root.
 */
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { Rig } from "./rig.ts";
import { OriginNamespace } from "./origin_ns.ts";
import { Cli, freePort } from "./cli_process.ts";
import type { InterceptJson } from "../src/web/api_types.ts";

const ORIGIN_SCRIPT = new URL("./replay_origin.ts", import.meta.url).pathname;
const HTTP_PORT = 8091;
const HTTPS_PORT = 8454;

interface Seen {
  method: string;
  path: string;
  headers: [string, string][];
  body: string;
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  for (let i = 0; i < 2000 && Date.now() < end; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

Deno.test({
  name: "wirescope --intercept with a WireGuard client: held, edited on the wire, status changed, " +
    "killed, replayed (through the web API)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const origin = await OriginNamespace.create(["origin.test"], 1 << 10);
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-intercept-e2e-" });
    const o = origin.address;
    const certDir = dirname(origin.caFile);
    const server = origin.spawn([
      Deno.execPath(),
      "run",
      "-A",
      "--quiet",
      ORIGIN_SCRIPT,
      o,
      String(HTTP_PORT),
      String(HTTPS_PORT),
      `${certDir}/server.pem`,
      `${certDir}/server.key`,
    ]);
    const seen: Seen[] = [];
    const ready = Promise.withResolvers<void>();
    void (async () => {
      let rest = "";
      for await (const text of server.stdout.pipeThrough(new TextDecoderStream())) {
        rest += text;
        const lines = rest.split("\n");
        rest = lines.pop()!;
        for (const line of lines) {
          if (line === "ready") ready.resolve();
          else if (line.startsWith("{")) seen.push(JSON.parse(line));
        }
      }
    })().catch(() => {});
    const port = 20000 + ((Deno.pid + 4099) % 20000);
    const webPort = freePort();
    let cli: Cli | null = null;
    let rig: Rig | null = null;
    try {
      const timeout = setTimeout(() => ready.reject(new Error("the origin did not start")), 20_000);
      await ready.promise;
      clearTimeout(timeout);
      rig = await Rig.fromConfigs(1, async (hosts) => {
        cli = new Cli([
          "--mode",
          `wireguard@${port}`,
          "--wg-endpoint",
          hosts[0]!,
          "--confdir",
          confdir,
          "--upstream-ca",
          origin.caFile,
          "--store",
          `${confdir}/flows.db`,
          "--web",
          String(webPort),
          "--intercept",
          "~u /held & ~q",
        ]);
        await cli.waitFor(() => /web UI at http:\/\/\S+/.test(cli!.stderr), "the web UI's URL");
        return [await Deno.readTextFile(`${confdir}/wireguard-client-1.conf`)];
      });
      const c = cli as unknown as Cli;
      const url = /web UI at (http:\/\/\S+)/.exec(c.stderr)![1]!;
      const entered = await fetch(url, { redirect: "manual" });
      await entered.body?.cancel();
      const cookie = entered.headers.get("set-cookie")!.split(";")[0]!;
      const ui = `http://127.0.0.1:${webPort}`;
      const { csrf } = await (await fetch(`${ui}/api/session`, { headers: { cookie } })).json();
      const call = async <T>(method: string, path: string, body?: unknown): Promise<[number, T]> => {
        const r = await fetch(`${ui}${path}`, {
          method,
          headers: { cookie, "x-wirescope-csrf": csrf, "content-type": "application/json" },
          ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        });
        return [r.status, await r.json() as T];
      };
      const held = async () => (await call<InterceptJson>("GET", "/api/intercept"))[1];

      const client = rig.clients[0]!;
      const ca = `${confdir}/wirescope-ca-cert.pem`;
      const https = `https://origin.test:${HTTPS_PORT}`;
      const curl = (args: string[]) => {
        const p = client.spawn([
          "curl",
          "-sS",
          "--max-time",
          "30",
          "--cacert",
          ca,
          "--resolve",
          `origin.test:${HTTPS_PORT}:${o}`,
          "-w",
          "\n%{http_code}",
          ...args,
        ]);
        const state: { done: boolean; out: Promise<Deno.CommandOutput> } = {
          done: false,
          out: Promise.resolve() as unknown as Promise<Deno.CommandOutput>,
        };
        state.out = p.output().then((r) => {
          state.done = true;
          return r;
        });
        return state;
      };
      const text = (r: Deno.CommandOutput) => new TextDecoder().decode(r.stdout);

      // Held at the request: curl waits, the origin has seen nothing.
      const a = curl(["-H", "x-edit: before", "-d", "k=v", `${https}/held`]);
      await until("the request held", async () => (await held()).paused.length === 1);
      const state = await held();
      assert.equal(state.filter, "~u /held & ~q");
      assert.equal(state.paused[0]!.intercepted, "request");
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(a.done, false, "curl still waits");
      assert.equal(seen.length, 0, "the origin has seen nothing");
      const id = state.paused[0]!.id;
      const [, detail] = await call<{ request: { headers: [string, string][] } }>("GET", `/api/flows/${id}`);
      const headers = detail.request.headers.map(([n, v]): [string, string] =>
        n.toLowerCase() === "x-edit" ? [n, "after"] : [n, v]
      );
      // A bad edit is refused and leaves it held.
      assert.equal((await call("POST", `/api/flows/${id}/resume`, { headers: [["bad name", "x"]] }))[0], 400);
      assert.equal((await held()).paused.length, 1);
      const [status] = await call("POST", `/api/flows/${id}/resume`, { headers, body: "k=edited" });
      assert.equal(status, 200);
      const ra = await a.out;
      assert.equal(ra.code, 0);
      assert.equal(text(ra), "answer 1 to POST /held k=edited\n201");
      assert.equal(seen.length, 1);
      assert.deepEqual(seen[0]!.headers.find(([n]) => n === "x-edit"), ["x-edit", "after"]);
      assert.equal(seen[0]!.body, "k=edited");

      // Held at the response: the status changed.
      assert.equal((await call("PUT", "/api/intercept", { filter: "~u /resp & ~s" }))[0], 200);
      const b = curl([`${https}/resp`]);
      await until("the response held", async () => (await held()).paused[0]?.intercepted === "response");
      assert.equal(b.done, false);
      const rid = (await held()).paused[0]!.id;
      assert.equal((await call("POST", `/api/flows/${rid}/resume`, { status: 451 }))[0], 200);
      assert.match(text(await b.out), /^answer 2 to GET \/resp\n451$/);

      // Killed: curl fails, the origin never sees it.
      assert.equal((await call("PUT", "/api/intercept", { filter: "~u /kill" }))[0], 200);
      const k = curl([`${https}/kill`]);
      await until("the request held", async () => (await held()).paused.length === 1);
      assert.equal((await call("POST", `/api/flows/${(await held()).paused[0]!.id}/kill`))[0], 200);
      assert.notEqual((await k.out).code, 0, "curl fails");
      assert.ok(!seen.some((s) => s.path === "/kill"));
      assert.equal((await call("PUT", "/api/intercept", { filter: "" }))[0], 200);

      // Replay and an edited send of the (edited) recorded request.
      let stored = false;
      await until("the held flow in the store", async () => {
        const r = await fetch(`${ui}/api/flows/${id}`, { headers: { cookie } });
        stored = r.status === 200 && !(await r.json()).summary.live;
        return stored;
      });
      const [rs, replayed] = await call<{ flow: { status: number; replayOf: string } }>(
        "POST",
        `/api/flows/${id}/replay`,
      );
      assert.equal(rs, 200);
      assert.equal(replayed.flow.replayOf, id);
      assert.equal(seen.at(-1)!.body, "k=edited");
      assert.deepEqual(seen.at(-1)!.headers.find(([n]) => n === "x-edit"), ["x-edit", "after"]);
      const [ss, sent] = await call<{ flow: { status: number; replayOf: string } }>(
        "POST",
        `/api/flows/${id}/send`,
        { method: "PUT", url: `${https}/sent?x=1`, body: "from the editor" },
      );
      assert.equal(ss, 200);
      assert.equal(sent.flow.status, 200);
      assert.equal(sent.flow.replayOf, id);
      assert.deepEqual(
        [seen.at(-1)!.method, seen.at(-1)!.path, seen.at(-1)!.body],
        ["PUT", "/sent?x=1", "from the editor"],
      );
      assert.equal(await c.stop("SIGINT"), 0);
      cli = null;
    } finally {
      const c = cli as Cli | null;
      if (c) await c.stop("SIGKILL").catch(() => {});
      await rig?.close();
      await origin.close();
      await Deno.remove(confdir, { recursive: true }).catch(() => {});
    }
  },
});
