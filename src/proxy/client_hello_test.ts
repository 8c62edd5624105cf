import assert from "node:assert/strict";
import { classifyFirstBytes, type ClientHello, parseClientHello } from "./client_hello.ts";
import { seededRandom } from "./_seeded_random.ts";

const fixture = (name: string) => Deno.readFileSync(new URL(`./testdata/${name}`, import.meta.url));
const text = (s: string) => new TextEncoder().encode(s);

// Captured from real clients connecting to a plain TCP listener (see testdata/README.md).
const OPENSSL = fixture("client_hello_openssl.bin");
const CURL_IP = fixture("client_hello_curl_ip.bin");
const RUSTLS = fixture("client_hello_deno_node_tls.bin");
const OPENSSL_TLS12 = fixture("client_hello_openssl_tls12.bin");

/** The handshake message inside a single-record capture. */
function messageOf(stream: Uint8Array): Uint8Array {
  const length = (stream[3]! << 8) | stream[4]!;
  assert.equal(stream.length, 5 + length, "the capture is one record");
  return stream.subarray(5);
}

/** Wraps a handshake message in handshake records with the given payload sizes (the last takes the rest). */
function inRecords(message: Uint8Array, sizes: number[] = []): Uint8Array {
  const out: number[] = [];
  let at = 0;
  for (let i = 0; at < message.length; i++) {
    const size = Math.min(sizes[i] ?? message.length - at, message.length - at);
    out.push(0x16, 0x03, 0x01, size >> 8, size & 0xff, ...message.subarray(at, at + size));
    at += size;
  }
  return new Uint8Array(out);
}

const u16 = (n: number) => [n >> 8, n & 0xff];
const u24 = (n: number) => [n >> 16, (n >> 8) & 0xff, n & 0xff];
const ext = (type: number, data: number[]) => [...u16(type), ...u16(data.length), ...data];

/** Builds a ClientHello handshake message from parts, for cases no client sends. */
function buildHello(
  options: {
    sni?: string;
    alpn?: string[];
    extensions?: number[][];
    omitExtensions?: boolean;
    versions?: false;
  } = {},
): Uint8Array {
  const extensions: number[] = [];
  if (options.sni !== undefined) {
    const name = [...text(options.sni)];
    extensions.push(...ext(0, [...u16(name.length + 3), 0, ...u16(name.length), ...name]));
  }
  if (options.alpn !== undefined) {
    const list = options.alpn.flatMap((p) => [p.length, ...text(p)]);
    extensions.push(...ext(16, [...u16(list.length), ...list]));
  }
  if (options.versions !== false) extensions.push(...ext(43, [4, 0x03, 0x04, 0x03, 0x03]));
  for (const e of options.extensions ?? []) extensions.push(...e);
  const body = [
    0x03,
    0x03,
    ...new Array(32).fill(7),
    0, // session id
    ...u16(4),
    0x13,
    0x01,
    0x13,
    0x02,
    1, // compression methods
    0,
    ...(options.omitExtensions ? [] : [...u16(extensions.length), ...extensions]),
  ];
  return new Uint8Array([1, ...u24(body.length), ...body]);
}

/** A key_share extension the size of an X25519MLKEM768 share (1216 + 32 bytes). */
function hybridKeyShare(): number[] {
  const share = new Array(1216 + 32).fill(0xab);
  const entry = [...u16(0x11ec), ...u16(share.length), ...share];
  return ext(51, [...u16(entry.length), ...entry]);
}

function assertSyntaxError(fn: () => unknown, message: RegExp) {
  assert.throws(fn, (e: unknown) => e instanceof SyntaxError && message.test(e.message));
}

Deno.test("parseClientHello() returns the SNI, ALPN and versions of an OpenSSL TLS 1.3 hello", () => {
  const hello = parseClientHello(OPENSSL);
  assert.ok(hello);
  assert.equal(hello.sni, "example.test");
  assert.deepEqual(hello.alpn, ["h2", "http/1.1"]);
  assert.equal(hello.legacyVersion, 0x0303);
  assert.deepEqual(hello.supportedVersions, [0x0304, 0x0303, 0x0302, 0x0301]);
  assert.deepEqual(hello.cipherSuites.slice(0, 3), [0x1302, 0x1303, 0x1301]);
  assert.equal(hello.cipherSuites.at(-1), 0x00ff);
});

Deno.test("parseClientHello() reads a rustls hello (Deno's node:tls)", () => {
  const hello = parseClientHello(RUSTLS);
  assert.deepEqual(
    hello,
    {
      sni: "example.test",
      alpn: ["h2", "http/1.1"],
      legacyVersion: 0x0303,
      supportedVersions: [0x0304, 0x0303],
      cipherSuites: [0x1302, 0x1301, 0x1303, 0xc02c, 0xc02b, 0xcca9, 0xc030, 0xc02f, 0xcca8, 0x00ff],
      supportedGroups: [0x001d, 0x0017, 0x0018, 0x11ec],
      signatureSchemes: [0x0503, 0x0403, 0x0603, 0x0807, 0x0806, 0x0805, 0x0804, 0x0601, 0x0501, 0x0401],
    } satisfies ClientHello,
  );
});

Deno.test("parseClientHello() leaves out sni when curl connects to an IP address", () => {
  const hello = parseClientHello(CURL_IP);
  assert.ok(hello);
  assert.equal("sni" in hello, false);
  assert.deepEqual(hello.alpn, ["h2", "http/1.1"]);
  assert.deepEqual(hello.supportedVersions, [0x0304, 0x0303, 0x0302, 0x0301]);
});

Deno.test("parseClientHello() reads a TLS 1.2 hello without supported_versions or ALPN", () => {
  const hello = parseClientHello(OPENSSL_TLS12);
  assert.ok(hello);
  assert.equal(hello.sni, "legacy.example.test");
  assert.deepEqual(hello.alpn, []);
  assert.deepEqual(hello.supportedVersions, []);
});

Deno.test("parseClientHello() accepts a hello with no extensions block", () => {
  const hello = parseClientHello(inRecords(buildHello({ omitExtensions: true })));
  assert.deepEqual(hello, {
    alpn: [],
    legacyVersion: 0x0303,
    supportedVersions: [],
    cipherSuites: [0x1301, 0x1302],
    supportedGroups: [],
    signatureSchemes: [],
  });
});

Deno.test("parseClientHello() returns null for every prefix of a hello", () => {
  for (let n = 0; n < OPENSSL.length; n++) {
    assert.equal(parseClientHello(OPENSSL.subarray(0, n)), null, `prefix of ${n} bytes`);
  }
  assert.equal(parseClientHello(OPENSSL)?.sni, "example.test");
});

Deno.test("parseClientHello() ignores the bytes that follow the hello", () => {
  const more = new Uint8Array([...OPENSSL, 0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
  assert.equal(parseClientHello(more)?.sni, "example.test");
});

Deno.test("parseClientHello() reassembles a hello split over several records", () => {
  const message = messageOf(OPENSSL);
  for (const sizes of [[1], [3], [4], [100], [message.length - 1], [10, 1, 1, 50]]) {
    const stream = inRecords(message, sizes);
    assert.deepEqual(parseClientHello(stream), parseClientHello(OPENSSL), `sizes ${sizes}`);
    for (let n = 0; n < stream.length; n++) {
      assert.equal(parseClientHello(stream.subarray(0, n)), null, `sizes ${sizes}, prefix ${n}`);
    }
  }
});

Deno.test("parseClientHello() reassembles a post-quantum sized hello split in two records", () => {
  const message = buildHello({ sni: "pq.example.test", alpn: ["h2"], extensions: [hybridKeyShare()] });
  assert.ok(message.length > 1300);
  const stream = inRecords(message, [1200]);
  assert.equal(parseClientHello(stream.subarray(0, 1205)), null);
  assert.equal(parseClientHello(stream.subarray(0, stream.length - 1)), null);
  const hello = parseClientHello(stream);
  assert.equal(hello?.sni, "pq.example.test");
  assert.deepEqual(hello?.alpn, ["h2"]);
});

Deno.test("parseClientHello() rejects records and messages that are not a ClientHello", () => {
  const message = messageOf(OPENSSL);
  assertSyntaxError(() => parseClientHello(text("GET / HTTP/1.1\r\n")), /content type 71, not handshake/);
  assertSyntaxError(() => parseClientHello(new Uint8Array([0x16, 0x02])), /version major 2/);
  assertSyntaxError(() => parseClientHello(new Uint8Array([0x16, 0x03, 0x05])), /version minor 5/);
  assertSyntaxError(
    () => parseClientHello(new Uint8Array([0x16, 0x03, 0x01, 0x40, 0x01])),
    /^Cannot parse ClientHello: record length 16385 exceeds 16384$/,
  );
  assertSyntaxError(() => parseClientHello(new Uint8Array([0x16, 0x03, 0x01, 0, 0])), /is empty/);
  // A ServerHello (type 2) is rejected as soon as its first byte arrives.
  assertSyntaxError(() => parseClientHello(new Uint8Array([0x16, 0x03, 0x03, 0, 80, 2])), /type 2 is not/);
  // The second record of a split hello is application data.
  const split = inRecords(message, [100]);
  split[105] = 0x17;
  assertSyntaxError(() => parseClientHello(split), /offset 105 has content type 23/);
});

Deno.test("parseClientHello() rejects a hello taking more than 64 KiB of the stream before it arrives", () => {
  const head = new Uint8Array([0x16, 0x03, 0x01, 0x40, 0x00, 1, ...u24(65533)]);
  assertSyntaxError(
    () => parseClientHello(head),
    /^Cannot parse ClientHello: a hello of 65537 bytes in records with 5 header bytes exceeds 65536$/,
  );
  // Four full records hold 65536 - 20 bytes of message; one more byte needs a fifth record.
  const withPadding = (size: number) => {
    const bare = buildHello({ sni: "big.example.test" }).length + 4;
    return inRecords(
      buildHello({ sni: "big.example.test", extensions: [ext(21, new Array(size - bare).fill(0))] }),
      new Array(4).fill(16384),
    );
  };
  const fits = withPadding(65536 - 20);
  assert.equal(fits.length, 65536);
  assert.equal(parseClientHello(fits)?.sni, "big.example.test");
  const over = withPadding(65536 - 19);
  assert.equal(parseClientHello(over.subarray(0, 3 * 16389 + 4)), null);
  assertSyntaxError(
    () => parseClientHello(over.subarray(0, 3 * 16389 + 5)),
    /with 20 header bytes exceeds 65536/,
  );
});

Deno.test("parseClientHello() rejects malformed hello bodies", () => {
  const bad = (extensions: number[][], pattern: RegExp) =>
    assertSyntaxError(
      () => parseClientHello(inRecords(buildHello({ extensions, versions: false }))),
      pattern,
    );
  bad([ext(43, [3, 3, 4, 3])], /supported_versions length 3/);
  bad([ext(16, [0, 3, 0, 1, 0x68])], /ALPN protocol name is empty/);
  bad([ext(16, [0, 9, 2, 0x68, 0x32])], /protocol_name_list length 9/);
  bad([ext(0, [0, 4, 0, 0, 1, 0x20])], /server name contains byte 0x20/);
  bad([ext(0, [0, 3, 0, 0, 0])], /server name is empty/);
  bad([ext(0, [0, 9, 0, 0, 4])], /server_name_list length 9/);
  bad([ext(99, []), ext(99, [])], /extension 99 appears twice/);
  // An extension that claims more bytes than the block holds.
  const message = buildHello();
  const truncated = message.slice(0, message.length - 1);
  truncated[3] = truncated[3]! - 1;
  assertSyntaxError(() => parseClientHello(inRecords(truncated)), /extensions length 9 does not match/);
  const short = new Uint8Array([1, ...u24(10), 3, 3, 1, 2, 3, 4, 5, 6, 7, 8]);
  assertSyntaxError(() => parseClientHello(inRecords(short)), /ends inside random/);
});

Deno.test("parseClientHello() skips server name entries of unknown types and an empty extension", () => {
  const entries = [1, ...u16(2), 0x61, 0x62, 0, ...u16(5), ...text("a.b.c")];
  const hello = parseClientHello(
    inRecords(buildHello({ extensions: [ext(0, [...u16(entries.length), ...entries])] })),
  );
  assert.equal(hello?.sni, "a.b.c");
  const empty = parseClientHello(inRecords(buildHello({ extensions: [ext(0, [])] })));
  assert.equal(empty !== null && "sni" in empty, false);
});

Deno.test("classifyFirstBytes() waits for a whole ClientHello fed one byte at a time", () => {
  for (const capture of [OPENSSL, inRecords(messageOf(RUSTLS), [50, 50])]) {
    for (let n = 0; n < capture.length; n++) {
      assert.deepEqual(classifyFirstBytes(capture.subarray(0, n)), { kind: "need-more" }, `${n} bytes`);
    }
    const result = classifyFirstBytes(capture);
    assert.equal(result.kind, "tls");
    assert.equal(result.kind === "tls" && result.hello.sni, "example.test");
  }
});

Deno.test("classifyFirstBytes() relays garbage after a handshake byte as raw TCP", () => {
  assert.deepEqual(classifyFirstBytes(new Uint8Array([0x16])), { kind: "need-more" });
  assert.deepEqual(classifyFirstBytes(new Uint8Array([0x16, 0x03])), { kind: "need-more" });
  assert.deepEqual(classifyFirstBytes(new Uint8Array([0x16, 0x03, 0x01, 0x00])), { kind: "need-more" });
  assert.deepEqual(classifyFirstBytes(new Uint8Array([0x16, 0x00])), { kind: "tcp" });
  assert.deepEqual(classifyFirstBytes(new Uint8Array([0x16, 0x03, 0x09])), { kind: "tcp" });
  assert.deepEqual(classifyFirstBytes(new Uint8Array([0x16, 0x03, 0x01, 0x00, 0x05, 0x02])), { kind: "tcp" });
  const broken = OPENSSL.slice();
  broken[5 + 4 + 2 + 32] = 200; // session id length
  assert.deepEqual(classifyFirstBytes(broken), { kind: "tcp" });
});

Deno.test("classifyFirstBytes() recognises HTTP/1 request lines", () => {
  for (
    const line of [
      "GET / HTTP/1.1\r\n",
      "POST http://example.test/form?a=1 HTTP/1.1\r\nHost: example.test\r\n\r\n",
      "CONNECT example.test:443 HTTP/1.1\r\n",
      "OPTIONS * HTTP/1.1\r\n",
      "HEAD /index.html HTTP/1.0\n",
      "PROPFIND /dav/ HTTP/1.1\r\n",
      "BASELINE-CONTROL /x HTTP/1.1\r\n",
      `GET /${"a".repeat(8000)} HTTP/1.1\r\n`,
    ]
  ) {
    assert.deepEqual(classifyFirstBytes(text(line)), { kind: "http" }, line.slice(0, 40));
  }
});

Deno.test("classifyFirstBytes() waits while a request line is incomplete", () => {
  const line = text("DELETE /items/7 HTTP/1.1\r\n");
  assert.deepEqual(classifyFirstBytes(new Uint8Array()), { kind: "need-more" });
  for (let n = 1; n < line.length; n++) {
    assert.deepEqual(classifyFirstBytes(line.subarray(0, n)), { kind: "need-more" }, `${n} bytes`);
  }
  assert.deepEqual(classifyFirstBytes(line), { kind: "http" });
});

Deno.test("classifyFirstBytes() treats other protocols and odd request lines as raw TCP", () => {
  for (
    const first of [
      "SSH-2.0-OpenSSH_9.6\r\n",
      "get / HTTP/1.1\r\n",
      " GET / HTTP/1.1\r\n",
      "GET  / HTTP/1.1\r\n",
      "GET / HTTP/1.x\r\n",
      "GET / HTTP/1.1\rX",
      "GET / HTTPS\r\n",
      "GET /\r\n",
      "GET /a\tb HTTP/1.1\r\n",
      "ABCDEFGHIJKLMNOPQ / HTTP/1.1\r\n",
      "-GET / HTTP/1.1\r\n",
      "220 smtp.example.test ESMTP\r\n",
      "\r\nGET / HTTP/1.1\r\n",
    ]
  ) {
    assert.deepEqual(classifyFirstBytes(text(first)), { kind: "tcp" }, JSON.stringify(first));
  }
  assert.deepEqual(classifyFirstBytes(new Uint8Array([0x00, 0x01, 0x02])), { kind: "tcp" });
  assert.deepEqual(classifyFirstBytes(new Uint8Array([0x80, 0x2e, 0x01])), { kind: "tcp" }, "SSLv2 hello");
});

Deno.test("classifyFirstBytes() gives up on a request line longer than 8 KiB", () => {
  const long = text(`GET /${"a".repeat(9000)} HTTP/1.1\r\n`);
  assert.deepEqual(classifyFirstBytes(long.subarray(0, 8191)), { kind: "need-more" });
  assert.deepEqual(classifyFirstBytes(long.subarray(0, 8192)), { kind: "tcp" });
  assert.deepEqual(classifyFirstBytes(long), { kind: "tcp" });
});

Deno.test("parseClientHello() throws nothing but SyntaxError for corrupted hellos", () => {
  const next = seededRandom(7);
  for (const valid of [OPENSSL, CURL_IP, inRecords(messageOf(RUSTLS), [40, 90])]) {
    for (let round = 0; round < 2000; round++) {
      const bytes = valid.slice(0, 1 + Math.floor(next() * valid.length));
      const changes = 1 + Math.floor(next() * 4);
      for (let i = 0; i < changes; i++) bytes[Math.floor(next() * bytes.length)] = Math.floor(next() * 256);
      try {
        parseClientHello(bytes);
      } catch (e) {
        assert.ok(e instanceof SyntaxError, `round ${round}: ${e}`);
      }
      assert.ok(["need-more", "tls", "http", "tcp"].includes(classifyFirstBytes(bytes).kind));
    }
  }
});

// Live captures: run real clients against a local listener and classify what they send.

function hasCommand(name: string, args: string[]): boolean {
  try {
    return new Deno.Command(name, { args, stdout: "null", stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
}

/** Starts a client against a fresh listener and returns its first bytes once they classify. */
async function capture(command: string, args: (port: number) => string[]): Promise<Uint8Array> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const child = new Deno.Command(command, {
    args: args(listener.addr.port),
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let bytes = new Uint8Array();
  try {
    using conn = await listener.accept();
    const chunk = new Uint8Array(16384);
    while (classifyFirstBytes(bytes).kind === "need-more") {
      const n = await conn.read(chunk);
      if (n === null) break;
      bytes = new Uint8Array([...bytes, ...chunk.subarray(0, n)]);
    }
  } finally {
    await child.stdin.close().catch(() => {});
    try {
      child.kill();
    } catch { /* already gone */ }
    await child.status;
  }
  return bytes;
}

Deno.test({
  name: "classifyFirstBytes() reads the hello openssl s_client sends",
  ignore: !hasCommand("openssl", ["version"]),
  async fn() {
    const bytes = await capture(
      "openssl",
      (
        port,
      ) => [
        "s_client",
        "-connect",
        `127.0.0.1:${port}`,
        "-servername",
        "example.test",
        "-alpn",
        "h2,http/1.1",
      ],
    );
    const result = classifyFirstBytes(bytes);
    assert.equal(result.kind, "tls");
    assert.equal(result.kind === "tls" && result.hello.sni, "example.test");
    assert.deepEqual(result.kind === "tls" && result.hello.alpn, ["h2", "http/1.1"]);
  },
});

Deno.test({
  name: "classifyFirstBytes() reads the hello curl sends, and its HTTP request without TLS",
  ignore: !hasCommand("curl", ["--version"]),
  async fn() {
    const tls = classifyFirstBytes(
      await capture("curl", (port) => [
        "-sk",
        "--max-time",
        "3",
        "--resolve",
        `example.test:${port}:127.0.0.1`,
        `https://example.test:${port}/`,
      ]),
    );
    assert.equal(tls.kind === "tls" && tls.hello.sni, "example.test");
    const plain = await capture("curl", (port) => ["-s", "--max-time", "3", `http://127.0.0.1:${port}/x`]);
    assert.deepEqual(classifyFirstBytes(plain), { kind: "http" });
  },
});

Deno.test("classifyFirstBytes() reads the hello node:tls sends", async () => {
  const script = `import tls from "node:tls";
    const s = tls.connect({ host: "127.0.0.1", port: Number(Deno.args[0]), servername: "example.test",
      ALPNProtocols: ["h2", "http/1.1"], rejectUnauthorized: false });
    s.on("error", () => {});
    setTimeout(() => Deno.exit(0), 3000);`;
  const bytes = await capture(Deno.execPath(), (port) => ["eval", script, String(port)]);
  const result = classifyFirstBytes(bytes);
  assert.equal(result.kind === "tls" && result.hello.sni, "example.test");
  assert.deepEqual(result.kind === "tls" && result.hello.alpn, ["h2", "http/1.1"]);
});

Deno.test("classifyFirstBytes() takes the HTTP/2 preface for h2 (prior-knowledge h2c), waits on its start", () => {
  const preface = new TextEncoder().encode(
    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
  );
  assert.equal(classifyFirstBytes(preface).kind, "h2");
  assert.equal(classifyFirstBytes(preface.subarray(0, 24)).kind, "h2");
  for (const n of [1, 3, 14, 16, 23]) {
    assert.equal(classifyFirstBytes(preface.subarray(0, n)).kind, "need-more");
  }
  // A method that merely starts like it is still HTTP/1.
  assert.equal(classifyFirstBytes(new TextEncoder().encode("PRI /x HTTP/1.1\r\n")).kind, "http");
  assert.equal(classifyFirstBytes(new TextEncoder().encode("PRI * HTTP/2.1\r\n\r\n")).kind, "tcp");
});
