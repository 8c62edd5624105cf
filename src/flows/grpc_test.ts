import assert from "node:assert/strict";
import fc from "fast-check";
import { GrpcMessageCounter, MAX_GRPC_SIZES } from "./grpc.ts";
import { appendRecordBody, emptyBody, endHttpFlow, type HttpFlow } from "./flow.ts";
import { flowToHarEntry } from "./har.ts";
import { flowToJson } from "./json_lines.ts";
import { formatFlowLine } from "../cli/flow_line.ts";
import { SqliteFlowStore } from "./store.ts";
import { flowFromHarEntry, flowFromJson } from "./flow_file.ts";

/** Frames messages as gRPC does: flag byte, 4-byte big-endian length, payload. */
function frame(messages: { size: number; compressed?: boolean }[]): Uint8Array {
  const total = messages.reduce((n, m) => n + 5 + m.size, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const [i, m] of messages.entries()) {
    out[at] = m.compressed ? 1 : 0;
    view.setUint32(at + 1, m.size);
    // Payload bytes that look like prefixes, so a reader that loses its place miscounts.
    out.fill(i % 2 === 0 ? 0 : 1, at + 5, at + 5 + m.size);
    at += 5 + m.size;
  }
  return out;
}

/** Splits bytes at the given cut points (any order, duplicates allowed). */
function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.byteLength + 1)))].sort((a, b) => a - b);
  const pieces: Uint8Array[] = [];
  let from = 0;
  for (const p of [...points, bytes.byteLength]) {
    pieces.push(bytes.subarray(from, p));
    from = p;
  }
  return pieces;
}

Deno.test("grpc counter: messages split at any point are counted with their sizes and flags", () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ size: fc.nat(300), compressed: fc.boolean() }), { maxLength: 40 }),
      fc.array(fc.nat(20_000), { maxLength: 30 }),
      (messages, cuts) => {
        const counter = new GrpcMessageCounter();
        for (const piece of split(frame(messages), cuts)) counter.push(piece);
        counter.end();
        const s = counter.summary;
        assert.equal(s.messages, messages.length);
        assert.deepEqual(s.sizes, messages.map((m) => m.size));
        assert.equal(s.bytes, messages.reduce((n, m) => n + m.size, 0));
        assert.equal(s.compressed, messages.filter((m) => m.compressed).length);
        assert.equal(s.incomplete, undefined);
        assert.equal(s.error, undefined);
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("grpc counter: a body cut inside a message is incomplete, whatever the split", () => {
  fc.assert(
    fc.property(
      fc.array(fc.nat(200), { minLength: 1, maxLength: 10 }),
      fc.nat(),
      fc.array(fc.nat(5_000), { maxLength: 10 }),
      (sizes, cutSeed, cuts) => {
        const whole = frame(sizes.map((size) => ({ size })));
        // Boundaries between messages; a cut anywhere else ends mid-message.
        const boundaries = new Set<number>([0]);
        let at = 0;
        for (const size of sizes) boundaries.add(at += 5 + size);
        const cut = cutSeed % whole.byteLength;
        fc.pre(!boundaries.has(cut));
        const counter = new GrpcMessageCounter();
        for (const piece of split(whole.subarray(0, cut), cuts)) counter.push(piece);
        counter.end();
        const complete = [...boundaries].filter((b) => b > 0 && b <= cut).length;
        assert.equal(counter.summary.messages, complete);
        assert.equal(counter.summary.incomplete, true);
        assert.match(counter.summary.error ?? "", /ended inside a message/);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("grpc counter: empty messages, an empty body and a 4 GiB length prefix", () => {
  const empty = new GrpcMessageCounter();
  empty.end();
  assert.deepEqual(empty.summary, { messages: 0, bytes: 0, sizes: [], compressed: 0 });

  const zeros = new GrpcMessageCounter();
  zeros.push(frame([{ size: 0 }, { size: 0 }, { size: 0 }]));
  zeros.end();
  assert.deepEqual(zeros.summary, { messages: 3, bytes: 0, sizes: [0, 0, 0], compressed: 0 });

  // The largest length a prefix can hold is skipped over, not buffered.
  const huge = new GrpcMessageCounter();
  huge.push(new Uint8Array([0, 0xff, 0xff, 0xff, 0xff]));
  huge.push(new Uint8Array(64 * 1024));
  huge.end();
  assert.equal(huge.summary.messages, 0);
  assert.equal(huge.summary.incomplete, true);
  assert.equal(huge.summary.error, `the body ended inside a message: ${64 * 1024} of 4294967295 bytes`);

  const prefix = new GrpcMessageCounter();
  prefix.push(new Uint8Array([0, 0, 0]));
  prefix.end();
  assert.equal(prefix.summary.error, "the body ended inside a message prefix: 3 of 5 bytes");
});

Deno.test("grpc counter: a prefix with a flag gRPC never sends stops the counting with an error", () => {
  const counter = new GrpcMessageCounter();
  counter.push(frame([{ size: 2 }]));
  counter.push(new Uint8Array([0x80, 0, 0, 0, 1, 9]));
  counter.push(frame([{ size: 2 }]));
  counter.end();
  assert.equal(counter.summary.messages, 1);
  assert.match(counter.summary.error ?? "", /flag 0x80/);
  assert.equal(counter.summary.incomplete, undefined);
});

Deno.test("grpc counter: sizes are listed for the first messages only; counts go on", () => {
  const counter = new GrpcMessageCounter();
  const many = frame(Array.from({ length: MAX_GRPC_SIZES + 500 }, (_, i) => ({ size: i % 7 })));
  // One byte at a time, the worst split.
  for (let i = 0; i < many.byteLength; i++) counter.push(many.subarray(i, i + 1));
  counter.end();
  assert.equal(counter.summary.messages, MAX_GRPC_SIZES + 500);
  assert.equal(counter.summary.sizes.length, MAX_GRPC_SIZES);
  assert.equal(counter.summary.sizes[8], 1);
});

function grpcFlow(responseHeaders: [string, string][], trailers?: [string, string][]): HttpFlow {
  const flow: HttpFlow = {
    id: "1",
    type: "http",
    client: { address: { hostname: "10.0.0.2", port: 5000 }, mode: "wireguard" },
    server: { address: { hostname: "172.31.224.2", port: 443 } },
    timestampStart: 0,
    request: {
      method: "POST",
      scheme: "https",
      host: "origin.test",
      port: 443,
      path: "/echo.Echo/Say",
      url: "https://origin.test/echo.Echo/Say",
      httpVersion: "HTTP/2.0",
      headers: [["content-type", "application/grpc"], ["te", "trailers"]],
      body: emptyBody(),
      timestampStart: 0,
    },
    response: {
      status: 200,
      reason: "",
      httpVersion: "HTTP/2.0",
      headers: responseHeaders,
      body: emptyBody(),
      timestampStart: 0,
    },
  };
  if (trailers !== undefined) flow.response!.trailers = trailers;
  return flow;
}

Deno.test("flows: gRPC bodies are counted as they are appended; the status comes from the trailers", () => {
  const flow = grpcFlow([["content-type", "application/grpc+proto"]], [
    ["grpc-status", "0"],
    ["grpc-message", ""],
  ]);
  const request = frame([{ size: 3 }, { size: 4 }]);
  appendRecordBody(flow.request, request.subarray(0, 6), 4);
  appendRecordBody(flow.request, request.subarray(6), 4);
  appendRecordBody(flow.response!, frame([{ size: 10, compressed: true }]), 4);
  // The body record stays bounded; the counts cover everything.
  assert.equal(flow.request.body.content.byteLength, 4);
  assert.equal(flow.request.body.size, 17);
  endHttpFlow(flow);
  assert.deepEqual(flow.request.grpc, { messages: 2, bytes: 7, sizes: [3, 4], compressed: 0 });
  assert.deepEqual(flow.response!.grpc, { messages: 1, bytes: 10, sizes: [10], compressed: 1, status: 0 });
});

Deno.test("flows: a trailers-only gRPC answer gets its status and decoded message from the head", () => {
  const flow = grpcFlow([
    ["content-type", "application/grpc"],
    ["grpc-status", "5"],
    ["grpc-message", "no%20such%20key%3A%20%E2%9C%93"],
  ]);
  appendRecordBody(flow.request, frame([{ size: 1 }]), 100);
  endHttpFlow(flow);
  assert.equal(flow.request.grpc?.messages, 1);
  assert.deepEqual(flow.response!.grpc, {
    messages: 0,
    bytes: 0,
    sizes: [],
    compressed: 0,
    status: 5,
    statusMessage: "no such key: ✓",
  });
});

Deno.test("flows: other content types get no gRPC summary", () => {
  const flow = grpcFlow([["content-type", "application/grpc-web+proto"]]);
  flow.request.headers = [["content-type", "application/json"]];
  appendRecordBody(flow.request, frame([{ size: 1 }]), 100);
  appendRecordBody(flow.response!, frame([{ size: 1 }]), 100);
  endHttpFlow(flow);
  assert.equal(flow.request.grpc, undefined);
  assert.equal(flow.response!.grpc, undefined);
  assert.equal(flow.request.body.size, 6);
});

Deno.test("flows: gRPC calls in the flow line, HAR (_grpc) and JSON lines (grpc)", () => {
  const ok = grpcFlow([["content-type", "application/grpc"]], [["grpc-status", "0"]]);
  appendRecordBody(ok.request, frame([{ size: 3 }, { size: 4 }, { size: 5 }]), 1 << 20);
  appendRecordBody(
    ok.response!,
    frame([{ size: 1 }, { size: 2 }, { size: 3 }, { size: 4 }, { size: 5 }]),
    1 << 20,
  );
  ok.response!.timestampEnd = 12;
  ok.timestampEnd = 12;
  endHttpFlow(ok);
  assert.equal(
    formatFlowLine(ok),
    "10.0.0.2:5000: POST https://origin.test/echo.Echo/Say HTTP/2.0 << 200 40b 12ms gRPC 3→5 msgs status 0 OK",
  );
  const expected = {
    request: { messages: 3, bytes: 12, sizes: [3, 4, 5], compressed: 0, incomplete: false, error: null },
    response: {
      messages: 5,
      bytes: 15,
      sizes: [1, 2, 3, 4, 5],
      compressed: 0,
      incomplete: false,
      error: null,
    },
    status: 0,
    statusName: "OK",
    statusMessage: null,
  };
  assert.deepEqual(flowToHarEntry(ok)._grpc, expected);
  assert.deepEqual(JSON.parse(JSON.stringify(flowToJson(ok))).grpc, expected);

  const failed = grpcFlow([["content-type", "application/grpc"], ["grpc-status", "5"], [
    "grpc-message",
    "no such key",
  ]]);
  appendRecordBody(failed.request, frame([{ size: 10 }]).subarray(0, 8), 1 << 20);
  endHttpFlow(failed);
  assert.match(
    formatFlowLine(failed),
    / gRPC 0→0 msgs status 5 NOT_FOUND: no such key \(cut inside a message\)$/,
  );
  const json = flowToHarEntry(failed)._grpc!;
  assert.equal(json.request?.incomplete, true);
  assert.equal(json.statusName, "NOT_FOUND");

  const plain = grpcFlow([["content-type", "text/plain"]]);
  plain.request.headers = [];
  endHttpFlow(plain);
  assert.equal(flowToHarEntry(plain)._grpc, undefined);
  assert.equal(flowToJson(plain).grpc, null);
  assert.doesNotMatch(formatFlowLine(plain), /gRPC/);
});

Deno.test("flows: a gRPC flow's summary round-trips through the flow store", async () => {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-grpc-store-" });
  try {
    const flow = grpcFlow([["content-type", "application/grpc"]], [["grpc-status", "0"]]);
    flow.id = "00000000-0000-4000-8000-00000000a11c";
    appendRecordBody(flow.request, frame([{ size: 3 }, { size: 4, compressed: true }]), 1 << 20);
    appendRecordBody(flow.response!, frame([{ size: 2 }]).subarray(0, 4), 1 << 20);
    flow.timestampEnd = 5;
    endHttpFlow(flow);
    let store = SqliteFlowStore.open(`${dir}/flows.db`);
    store.end(flow);
    await store.close();
    store = SqliteFlowStore.open(`${dir}/flows.db`, { readOnly: true });
    const stored = (await store.get(flow.id))?.flow as HttpFlow | undefined;
    await store.close();
    assert.deepEqual(stored?.request.grpc, { messages: 2, bytes: 7, sizes: [3, 4], compressed: 1 });
    assert.deepEqual(stored?.response?.grpc, flow.response!.grpc);
    assert.equal(stored?.response?.grpc?.incomplete, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("flows: a gRPC summary read back from HAR and JSON lines (-r) is the one written", () => {
  const flow = grpcFlow([["content-type", "application/grpc"]], [["grpc-status", "3"], [
    "grpc-message",
    "bad",
  ]]);
  appendRecordBody(flow.request, frame([{ size: 3 }, { size: 4, compressed: true }]), 1 << 20);
  appendRecordBody(flow.response!, frame([{ size: 2 }]).subarray(0, 4), 1 << 20);
  flow.response!.timestampEnd = 5;
  flow.timestampEnd = 5;
  endHttpFlow(flow);
  const fromJson = flowFromJson(JSON.parse(JSON.stringify(flowToJson(flow)))) as HttpFlow;
  const fromHar = flowFromHarEntry(JSON.parse(JSON.stringify(flowToHarEntry(flow))));
  for (const read of [fromJson, fromHar]) {
    assert.deepEqual(read.request.grpc, flow.request.grpc);
    assert.deepEqual(read.response?.grpc, flow.response!.grpc);
    assert.match(
      formatFlowLine(read),
      /gRPC 2→0 msgs status 3 INVALID_ARGUMENT: bad \(cut inside a message\)$/,
    );
  }
  // Junk where the summary should be is ignored.
  const junk = flowFromHarEntry({ ...JSON.parse(JSON.stringify(flowToHarEntry(flow))), _grpc: "x" });
  assert.equal(junk.request.grpc, undefined);
});
