/**
 * Reading saved runs: a flow store gives back exactly what was stored; JSON lines and HAR
 * written by wirescope give back flows that print the same lines and keep their bodies; a HAR
 * from another tool loads; every kind of bad file fails with one line naming it.
 */
import assert from "node:assert/strict";
import type { Flow, HttpFlow } from "./flow.ts";
import { flowToHarEntry } from "./har.ts";
import { flowToJson } from "./json_lines.ts";
import { formatFlowLine } from "../cli/flow_line.ts";
import { compileFilter } from "./filter.ts";
import { FlowFileError, openFlowFile } from "./flow_file.ts";
import { SCHEMA_VERSION, SqliteFlowStore } from "./store.ts";
import { sampleFlows } from "./testdata/flows.ts";

async function withDir<T>(fn: (dir: string) => Promise<T> | T): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-flowfile-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function readAll(path: string, filter?: string): Promise<{ format: string; flows: Flow[] }> {
  const file = await openFlowFile(path);
  const flows: Flow[] = [];
  try {
    for await (const f of file.flows(filter === undefined ? undefined : compileFilter(filter))) flows.push(f);
  } finally {
    file.close();
  }
  return { format: file.format, flows };
}

const lines = (flows: Flow[]) => flows.map((f) => formatFlowLine(f));
const text = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("flow file: a store reads back exactly, in order, with -f applied", async () => {
  await withDir(async (dir) => {
    const flows = Object.values(sampleFlows());
    const store = SqliteFlowStore.open(`${dir}/run.db`);
    for (const f of flows) store.end(f);
    store.closeSync();
    const all = await readAll(`${dir}/run.db`);
    assert.equal(all.format, "store");
    assert.deepStrictEqual(all.flows, flows);
    const posts = await readAll(`${dir}/run.db`, "~m POST");
    assert.deepEqual(
      posts.flows.map((f) => f.id),
      flows.filter((f) => f.type === "http" && f.request.method === "POST").map((f) => f.id),
    );
  });
});

Deno.test("flow file: wirescope's JSON lines and HAR print the same lines, bodies intact", async () => {
  await withDir(async (dir) => {
    const flows = Object.values(sampleFlows());
    await Deno.writeTextFile(
      `${dir}/run.jsonl`,
      flows.map((f) => JSON.stringify(flowToJson(f)) + "\n").join(""),
    );
    const http = flows.filter((f): f is HttpFlow => f.type === "http");
    const har = {
      log: {
        version: "1.2",
        creator: { name: "wirescope", version: "x" },
        entries: http.map(flowToHarEntry),
      },
    };
    await Deno.writeTextFile(`${dir}/run.har`, JSON.stringify(har, null, 2));

    const jsonl = await readAll(`${dir}/run.jsonl`);
    assert.equal(jsonl.format, "jsonl");
    assert.deepEqual(lines(jsonl.flows), lines(flows));
    const fromHar = await readAll(`${dir}/run.har`);
    assert.equal(fromHar.format, "har");
    // HAR keeps no end time of a flow apart from its timings: a failed exchange's duration may differ.
    const noErrorDuration = (l: string) => l.replace(/ \d+ms (<< ERROR)/, " $1");
    assert.deepEqual(lines(fromHar.flows).map(noErrorDuration), lines(http).map(noErrorDuration));
    for (const [i, f] of http.entries()) {
      for (const got of [jsonl.flows.find((g) => g.id === f.id), fromHar.flows[i]]) {
        const g = got as HttpFlow;
        assert.equal(g.id, f.id);
        assert.deepEqual(g.request.headers, f.request.headers);
        // Text bodies come back as text, binary ones from base64.
        assert.deepEqual([...g.request.body.content], [...f.request.body.content], f.id);
        if (f.response && f.websocket === undefined) {
          assert.equal(text(g.response!.body.content), text(f.response.body.content), f.id);
        }
      }
    }
    assert.deepEqual((await readAll(`${dir}/run.jsonl`, "~d example.com & ~m GET")).flows.map((f) => f.id), [
      ...flows.filter((f) => compileFilter("~d example.com & ~m GET").match(f)).map((f) => f.id),
    ]);
  });
});

Deno.test("flow file: a HAR 1.2 written by another tool loads", async () => {
  await withDir(async (dir) => {
    const har = {
      log: {
        version: "1.2",
        creator: { name: "Firefox", version: "120" },
        entries: [{
          startedDateTime: "2026-01-02T03:04:05.000Z",
          time: 42,
          request: {
            method: "POST",
            url: "https://api.example.org/v1/items?x=1",
            httpVersion: "HTTP/2",
            headers: [{ name: "content-type", value: "application/json" }],
            queryString: [],
            cookies: [],
            headersSize: -1,
            bodySize: 9,
            postData: { mimeType: "application/json", text: '{"a":1}' },
          },
          response: {
            status: 201,
            statusText: "Created",
            httpVersion: "HTTP/2",
            headers: [],
            cookies: [],
            content: { size: 5, mimeType: "text/plain", text: "aGVsbG8=", encoding: "base64" },
            redirectURL: "",
            headersSize: -1,
            bodySize: 5,
          },
          cache: {},
          timings: { send: 1, wait: 40, receive: 1 },
        }],
      },
    };
    await Deno.writeTextFile(`${dir}/ff.har`, JSON.stringify(har));
    const { flows } = await readAll(`${dir}/ff.har`);
    assert.equal(flows.length, 1);
    const f = flows[0] as HttpFlow;
    assert.equal(f.request.host, "api.example.org");
    assert.equal(f.request.path, "/v1/items?x=1");
    assert.equal(text(f.request.body.content), '{"a":1}');
    assert.equal(text(f.response!.body.content), "hello");
    assert.match(
      formatFlowLine(f),
      /^0\.0\.0\.0:0: POST https:\/\/api\.example\.org\/v1\/items\?x=1 (HTTP\/2 )?<< 201 Created 5b 42ms$/,
    );
  });
});

Deno.test("flow file: garbage, cut short, foreign and newer files fail with one line naming them", async () => {
  await withDir(async (dir) => {
    const store = SqliteFlowStore.open(`${dir}/good.db`);
    for (const f of Object.values(sampleFlows())) store.end(f);
    store.closeSync();
    const good = await Deno.readFile(`${dir}/good.db`);
    const jsonl = Object.values(sampleFlows()).map((f) => JSON.stringify(flowToJson(f))).join("\n") + "\n";
    const cases: [string, Uint8Array | string, RegExp][] = [
      ["empty", "", /is empty, not a saved run/],
      ["garbage.bin", new Uint8Array(4096).map((_, i) => (i * 7919) & 255), /is not a saved run/],
      ["text.txt", "hello\n", /is not a saved run/],
      ["cut.db", good.subarray(0, 8192), /cannot read (flow store )?.*cut\.db|malformed|damaged/],
      ["cut.jsonl", jsonl.slice(0, jsonl.length - 40), /cut short/],
      ["bad-line.jsonl", jsonl.replace("\n", "\n{oops\n"), /line 2 is not JSON/],
      ["cut.har", JSON.stringify({ log: { version: "1.2", entries: [] } }).slice(0, 20), /not valid JSON/],
      [
        "newer.har",
        JSON.stringify({ log: { version: "2.0", entries: [] } }),
        /HAR version "2\.0"; this version reads HAR 1\.x/,
      ],
      ["other.json", JSON.stringify({ hello: 1 }), /neither a HAR file nor wirescope JSON lines/],
      [
        "newtype.jsonl",
        JSON.stringify({ type: "quic", id: "1", timestampStart: new Date().toISOString() }) + "\n",
        /unknown flow type "quic"/,
      ],
    ];
    for (const [name, content, pattern] of cases) {
      const path = `${dir}/${name}`;
      if (typeof content === "string") await Deno.writeTextFile(path, content);
      else await Deno.writeFile(path, content);
      await assert.rejects(readAll(path), (e: unknown) => {
        assert.ok(e instanceof FlowFileError, `${name}: ${e}`);
        assert.match(e.message, pattern, name);
        assert.ok(!e.message.includes("\n"), `${name}: one line`);
        return true;
      });
    }
    // A foreign SQLite file and a store from a newer wirescope.
    const { DatabaseSync } = await import("node:sqlite");
    const foreign = new DatabaseSync(`${dir}/foreign.db`);
    foreign.exec("CREATE TABLE t (x)");
    foreign.close();
    await assert.rejects(
      readAll(`${dir}/foreign.db`),
      /foreign\.db is an SQLite file but not a wirescope flow store/,
    );
    await Deno.copyFile(`${dir}/good.db`, `${dir}/newer.db`);
    const newer = new DatabaseSync(`${dir}/newer.db`);
    newer.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
    newer.close();
    await assert.rejects(readAll(`${dir}/newer.db`), /was written by a newer wirescope/);
    await assert.rejects(
      readAll(`${dir}/missing.db`),
      /cannot read .*missing\.db: no such file or directory/,
    );
  });
});
