import assert from "node:assert/strict";
import type { HttpFlow } from "./flow.ts";
import { replayKey, replayResponse, ServerReplay } from "./server_replay.ts";
import type { HookResponse, RequestVerdict } from "../proxy/request_hook.ts";
import { compileFilter } from "./filter.ts";
import { flowToJson } from "./json_lines.ts";
import { flowToHarEntry } from "./har.ts";
import { flowFromHarEntry, flowFromJson } from "./flow_file.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
let ids = 0;

function flow(
  method: string,
  url: string,
  options: { body?: string; truncated?: boolean; status?: number; answer?: string; error?: boolean } = {},
): HttpFlow {
  const u = new URL(url);
  const body = enc.encode(options.body ?? "");
  const answer = enc.encode(options.answer ?? "");
  const port = Number(u.port || (u.protocol === "https:" ? 443 : 80));
  const f: HttpFlow = {
    id: `f${++ids}`,
    type: "http",
    client: { address: { hostname: "10.0.0.2", port: 1 }, mode: "wireguard" },
    server: { address: { hostname: u.hostname, port } },
    timestampStart: 0,
    request: {
      method,
      scheme: u.protocol.slice(0, -1),
      host: u.hostname,
      port,
      path: u.pathname + u.search,
      url,
      httpVersion: "HTTP/1.1",
      headers: [],
      body: {
        content: body,
        size: body.byteLength + (options.truncated ? 10 : 0),
        truncated: !!options.truncated,
      },
      timestampStart: 0,
    },
    response: {
      status: options.status ?? 200,
      reason: "OK",
      httpVersion: "HTTP/1.1",
      headers: [["content-type", "text/plain"], ["transfer-encoding", "chunked"], [
        "connection",
        "keep-alive",
      ]],
      body: { content: answer, size: answer.byteLength, truncated: false },
      timestampStart: 0,
    },
  };
  if (options.error) f.error = { message: "broken", timestamp: 0 };
  return f;
}

function noResponse(f: HttpFlow): HttpFlow {
  delete f.response;
  return f;
}

function answerOf(verdict: RequestVerdict): string | undefined {
  return typeof verdict === "object" ? ("body" in verdict ? dec.decode(verdict.body) : undefined) : verdict;
}

Deno.test("server replay key: method, scheme, host, port, path and query; options leave parts out", () => {
  const r = flow("get", "http://Example.com:8080/a/b?x=1&utm=2&y=3").request;
  assert.equal(replayKey(r), "GET http://example.com:8080/a/b?x=1&utm=2&y=3");
  assert.equal(replayKey(r, { ignoreParams: ["utm"] }), "GET http://example.com:8080/a/b?x=1&y=3");
  assert.equal(replayKey(r, { ignoreParams: ["x", "utm", "y"] }), "GET http://example.com:8080/a/b");
  assert.equal(replayKey(r, { ignoreHost: true }), "GET http/a/b?x=1&utm=2&y=3");
  assert.notEqual(
    replayKey(flow("GET", "https://example.com/a").request),
    replayKey(flow("GET", "http://example.com/a").request),
  );
});

Deno.test("server replay: identical requests get the recorded answers in order, each once; then misses", () => {
  const replay = new ServerReplay([
    flow("GET", "http://h/n", { answer: "one" }),
    flow("GET", "http://h/other", { answer: "other" }),
    flow("GET", "http://h/n", { answer: "two" }),
  ]);
  assert.equal(answerOf(replay.hook(flow("GET", "http://h/n")) as RequestVerdict), "one");
  assert.equal(answerOf(replay.hook(flow("GET", "http://h/n")) as RequestVerdict), "two");
  assert.equal(replay.hook(flow("GET", "http://h/n")), undefined);
  assert.deepEqual(replay.stats(), { loaded: 3, hits: 2, misses: 1, truncated: 0 });
});

Deno.test("server replay: reuse keeps answering with the first match", () => {
  const replay = new ServerReplay([
    flow("GET", "http://h/n", { answer: "one" }),
    flow("GET", "http://h/n", { answer: "two" }),
  ], {
    reuse: true,
  });
  for (let i = 0; i < 3; i++) {
    assert.equal(answerOf(replay.hook(flow("GET", "http://h/n")) as RequestVerdict), "one");
  }
  assert.equal(replay.stats().hits, 3);
});

Deno.test("server replay: the body is part of the match unless ignoreContent", () => {
  const recorded = [
    flow("POST", "http://h/p", { body: "a=1", answer: "A" }),
    flow("POST", "http://h/p", { body: "a=2", answer: "B" }),
  ];
  const replay = new ServerReplay(recorded);
  assert.equal(answerOf(replay.hook(flow("POST", "http://h/p", { body: "a=2" })) as RequestVerdict), "B");
  assert.equal(replay.hook(flow("POST", "http://h/p", { body: "a=3" })), undefined);
  const loose = new ServerReplay(recorded, { ignoreContent: true });
  assert.equal(answerOf(loose.hook(flow("POST", "http://h/p", { body: "zzz" })) as RequestVerdict), "A");
  // A body recorded in part matches on the part that was kept.
  const partial = new ServerReplay([
    flow("POST", "http://h/p", { body: "abc", truncated: true, answer: "P" }),
  ]);
  assert.equal(
    answerOf(partial.hook(flow("POST", "http://h/p", { body: "abc", truncated: true })) as RequestVerdict),
    "P",
  );
});

Deno.test("server replay: ignoreParams and ignoreHost widen the match", () => {
  const recorded = [flow("GET", "http://a.example/s?q=1&ts=100", { answer: "S" })];
  assert.equal(new ServerReplay(recorded).hook(flow("GET", "http://a.example/s?q=1&ts=200")), undefined);
  const params = new ServerReplay(recorded, { ignoreParams: ["ts"] });
  assert.equal(answerOf(params.hook(flow("GET", "http://a.example/s?q=1&ts=200")) as RequestVerdict), "S");
  assert.equal(params.hook(flow("GET", "http://a.example/s?q=2&ts=200")), undefined);
  const host = new ServerReplay(recorded, { ignoreHost: true });
  assert.equal(answerOf(host.hook(flow("GET", "http://b.example:81/s?q=1&ts=100")) as RequestVerdict), "S");
});

Deno.test("server replay misses: forward (default) lets the request go on, 404 answers, kill kills", () => {
  const recorded = [flow("GET", "http://h/yes", { answer: "Y" })];
  assert.equal(new ServerReplay(recorded).hook(flow("GET", "http://h/no")), undefined);
  const notFound = new ServerReplay(recorded, { extra: "404" }).hook(
    flow("GET", "http://h/no"),
  ) as HookResponse;
  assert.equal(notFound.status, 404);
  assert.match(dec.decode(notFound.body), /no recorded answer for GET http:\/\/h\/no/);
  const replay = new ServerReplay(recorded, { extra: "kill" });
  assert.equal(replay.hook(flow("GET", "http://h/no")), "kill");
  assert.deepEqual(replay.stats(), { loaded: 1, hits: 0, misses: 1, truncated: 0 });
});

Deno.test("server replay: flows without a usable response are not loaded", () => {
  const replay = new ServerReplay([
    flow("GET", "http://h/e", { error: true }),
    flow("GET", "http://h/ws", { status: 101 }),
    noResponse(flow("GET", "http://h/none")),
  ]);
  assert.equal(replay.stats().loaded, 0);
});

Deno.test("server replay response: framing made anew, HTTP/2 pseudo-headers dropped, HEAD has no body", () => {
  const recorded = flow("GET", "http://h/x", { answer: "hello" });
  recorded.response!.headers.unshift([":status", "200"]);
  const answer = replayResponse(recorded, "GET");
  assert.deepEqual(answer.headers, [["content-type", "text/plain"], ["content-length", "5"]]);
  assert.equal(dec.decode(answer.body), "hello");
  assert.equal(answer.replay, "server");
  const head = flow("HEAD", "http://h/x");
  head.response!.headers.push(["content-length", "1234"]);
  const headAnswer = replayResponse(head, "HEAD");
  assert.deepEqual(headAnswer.headers, [["content-type", "text/plain"], ["content-length", "1234"]]);
  assert.equal(headAnswer.body.byteLength, 0);
});

Deno.test("server replay: a recorded answer kept in part is served as kept and counted", () => {
  const recorded = flow("GET", "http://h/big", { answer: "0123" });
  recorded.response!.body = { content: enc.encode("0123"), size: 100, truncated: true };
  const notes: string[] = [];
  const replay = new ServerReplay([recorded], { onLog: (_l, m) => notes.push(m) });
  assert.equal(answerOf(replay.hook(flow("GET", "http://h/big")) as RequestVerdict), "0123");
  assert.equal(replay.stats().truncated, 1);
  assert.match(notes[0]!, /only the first 4 of 100 body bytes/);
});

Deno.test("filters ~replay, ~replayq and ~replays pick replayed flows", () => {
  const plain = flow("GET", "http://h/a");
  const client = { ...flow("GET", "http://h/a"), replay: "client" as const, replayOf: plain.id };
  const server = { ...flow("GET", "http://h/a"), replay: "server" as const };
  const pick = (expression: string) =>
    [plain, client, server].filter((f) => compileFilter(expression).match(f)).map((f) => f.replay ?? "-");
  assert.deepEqual(pick("~replay"), ["client", "server"]);
  assert.deepEqual(pick("~replayq"), ["client"]);
  assert.deepEqual(pick("~replays"), ["server"]);
  assert.deepEqual(pick("!~replay"), ["-"]);
  assert.equal(compileFilter("~replays").toSql().exact, false);
});

Deno.test("replay marks survive JSON lines and HAR", () => {
  const replayed = {
    ...flow("GET", "http://h/a", { answer: "x" }),
    replay: "client" as const,
    replayOf: "f0",
  };
  const back = flowFromJson(JSON.parse(JSON.stringify(flowToJson(replayed)))) as HttpFlow;
  assert.equal(back.replay, "client");
  assert.equal(back.replayOf, "f0");
  const fromHar = flowFromHarEntry(JSON.parse(JSON.stringify(flowToHarEntry(replayed))));
  assert.equal(fromHar.replay, "client");
  assert.equal(fromHar.replayOf, "f0");
  const plain = flowFromJson(JSON.parse(JSON.stringify(flowToJson(flow("GET", "http://h/a"))))) as HttpFlow;
  assert.equal(plain.replay, undefined);
  assert.ok(!("replay" in flowToJson(flow("GET", "http://h/a"))));
});
