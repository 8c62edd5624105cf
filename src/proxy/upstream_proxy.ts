/**
 * Chaining through an upstream proxy: the server side of a connection is opened through an HTTP
 * proxy (CONNECT) or a SOCKS5 server (RFC 1928 CONNECT, RFC 1929 username/password) instead of
 * being dialed directly. The upstream only carries bytes: TLS interception stays the same.
 *
 * Every way an upstream can fail (unreachable, refusing, asking for credentials, answering
 * something that is not its protocol, too slow) ends in an {@link UpstreamProxyError} whose
 * message names the upstream and the reason; the caller records it on the connection's flow.
 * @module
 */
import type { ByteStream } from "./byte_stream.ts";
import { byteStreamOfConn } from "./byte_stream.ts";
import { formatHostPort, type HostPort } from "../flows/flow.ts";

/** An upstream proxy, as given by `--upstream-proxy` (and `--upstream-auth`). */
export interface UpstreamProxy {
  /** `http`: HTTP CONNECT; `socks5`: SOCKS5 CONNECT (names are resolved by the upstream). */
  scheme: "http" | "socks5";
  /** Where the upstream listens. */
  address: HostPort;
  /** Credentials: Basic Proxy-Authorization (http) or RFC 1929 (socks5). */
  auth?: { user: string; password: string };
  /** `https://`: the connection to the upstream itself is TLS (an HTTP proxy behind TLS). */
  tls?: boolean;
  /** Extra roots (PEM) trusted for an `https://` upstream's certificate, beside the system's. */
  caCerts?: string[];
}

/** An upstream proxy failed to open a connection; the message says which and why. */
export class UpstreamProxyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UpstreamProxyError";
  }
}

/** Most bytes of an HTTP proxy's answer head read before it is called garbage. */
const MAX_ANSWER_HEAD = 16 * 1024;

/**
 * Parses `http://[user:pass@]HOST:PORT` or `socks5://[user:pass@]HOST:PORT` (`socks5h://` is taken
 * as `socks5`: names always go to the upstream). `auth` (`user:pass`, from `--upstream-auth`)
 * overrides credentials in the URL.
 *
 * @throws {TypeError} With a one-line reason when the URL cannot be used.
 *
 * @example
 * ```ts
 * import { parseUpstreamProxy } from "./upstream_proxy.ts";
 * const p = parseUpstreamProxy("socks5://127.0.0.1:1080");
 * console.log(p.scheme, p.address.port); // socks5 1080
 * ```
 */
export function parseUpstreamProxy(url: string, auth?: string): UpstreamProxy {
  const m = /^(https?|socks5h?):\/\/(?:([^@/]*)@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})\/?$/i.exec(
    url,
  );
  if (!m) {
    throw new TypeError(
      `cannot use upstream proxy "${url}": expected http://[USER:PASS@]HOST:PORT, https://[USER:PASS@]HOST:PORT or socks5://[USER:PASS@]HOST:PORT`,
    );
  }
  const port = Number(m[4]);
  if (port < 1 || port > 65535) throw new TypeError(`cannot use upstream proxy "${url}": bad port ${m[4]}`);
  const hostname = m[3]!.startsWith("[") ? m[3]!.slice(1, -1) : m[3]!;
  const proxy: UpstreamProxy = {
    scheme: m[1]!.toLowerCase().startsWith("http") ? "http" : "socks5",
    address: { hostname, port },
  };
  if (m[1]!.toLowerCase() === "https") proxy.tls = true;
  const credentials = auth ?? (m[2] !== undefined ? decodeURIComponent(m[2]) : undefined);
  if (credentials !== undefined) {
    const colon = credentials.indexOf(":");
    if (colon <= 0) throw new TypeError(`upstream proxy credentials must be USER:PASS`);
    proxy.auth = { user: credentials.slice(0, colon), password: credentials.slice(colon + 1) };
    if (proxy.scheme === "socks5" && (proxy.auth.user.length > 255 || proxy.auth.password.length > 255)) {
      throw new TypeError(`SOCKS5 user names and passwords are at most 255 bytes`);
    }
  }
  return proxy;
}

/** The upstream as text, without credentials (for messages and logs). */
export function describeUpstream(proxy: UpstreamProxy): string {
  return `${proxy.tls ? "https" : proxy.scheme}://${formatHostPort(proxy.address)}`;
}

/**
 * Opens a TCP connection to `target` through `proxy` within `timeout` ms. Bytes the upstream sent
 * after its answer (a server that speaks first) are handed out by the stream's first read.
 *
 * @throws {UpstreamProxyError} When the upstream cannot be reached, refuses, or misbehaves.
 */
export function connectThroughUpstream(
  proxy: UpstreamProxy,
  target: HostPort,
  timeout: number,
): Promise<{ stream: ByteStream; remote: HostPort }> {
  return openUpstream(proxy, target, timeout, true);
}

/**
 * Opens a connection to an HTTP `proxy` itself (TLS for `https://`), for requests sent to it in
 * absolute form on behalf of `target` (named in errors only).
 *
 * @throws {UpstreamProxyError} When the upstream cannot be reached.
 */
export function dialUpstreamProxy(
  proxy: UpstreamProxy,
  target: HostPort,
  timeout: number,
): Promise<{ stream: ByteStream; remote: HostPort }> {
  return openUpstream(proxy, target, timeout, false);
}

/** The `Proxy-Authorization` header for an HTTP upstream with credentials (none without). */
export function upstreamAuthHeaders(proxy: UpstreamProxy): [string, string][] {
  if (!proxy.auth) return [];
  const basic = btoa(String.fromCharCode(...encoder.encode(`${proxy.auth.user}:${proxy.auth.password}`)));
  return [["Proxy-Authorization", `Basic ${basic}`]];
}

async function openUpstream(
  proxy: UpstreamProxy,
  target: HostPort,
  timeout: number,
  tunnel: boolean,
): Promise<{ stream: ByteStream; remote: HostPort }> {
  const name = describeUpstream(proxy);
  const fail = (reason: string) =>
    new UpstreamProxyError(
      `upstream proxy ${name} could not connect to ${formatHostPort(target)}: ${reason}`,
    );
  let conn: Deno.TcpConn | Deno.TlsConn | null = null;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      conn?.close();
    } catch { /* closed */ }
  }, timeout);
  try {
    try {
      conn = await Deno.connect({ hostname: proxy.address.hostname, port: proxy.address.port });
    } catch (e) {
      throw fail(`the upstream is unreachable (${(e as Error).message})`);
    }
    if (timedOut) {
      conn.close();
      throw fail(`no connection within ${timeout} ms`);
    }
    conn.setNoDelay(true);
    if (proxy.tls) {
      try {
        conn = await Deno.startTls(conn as Deno.TcpConn, {
          hostname: proxy.address.hostname,
          ...(proxy.caCerts?.length ? { caCerts: proxy.caCerts } : {}),
        });
        await conn.handshake();
      } catch (e) {
        try {
          conn.close();
        } catch { /* closed */ }
        throw fail(
          timedOut
            ? `no TLS handshake within ${timeout} ms`
            : `TLS to the upstream failed (${(e as Error).message})`,
        );
      }
    }
    const reader = new ExactReader(conn);
    try {
      // Without a tunnel, absolute-form requests follow on the connection as it is.
      if (tunnel && proxy.scheme === "http") await httpConnect(conn, reader, proxy, target, fail);
      else if (tunnel) await socks5Connect(conn, reader, proxy, target, fail);
    } catch (e) {
      try {
        conn.close();
      } catch { /* closed */ }
      if (timedOut) throw fail(`no answer within ${timeout} ms`);
      if (e instanceof UpstreamProxyError) throw e;
      throw fail(`the upstream closed or reset the connection (${(e as Error).message})`);
    }
    const stream = withPrefix(byteStreamOfConn(conn), reader.rest());
    return { stream, remote: proxy.address };
  } finally {
    clearTimeout(timer);
  }
}

/** HTTP CONNECT: a 2xx answer opens the tunnel; anything else is a refusal with its status. */
async function httpConnect(
  conn: Deno.Conn,
  reader: ExactReader,
  proxy: UpstreamProxy,
  target: HostPort,
  fail: (reason: string) => UpstreamProxyError,
): Promise<void> {
  const authority = formatHostPort(target);
  let head = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n`;
  for (const [name, value] of upstreamAuthHeaders(proxy)) head += `${name}: ${value}\r\n`;
  await writeAll(conn, encoder.encode(head + "\r\n"));
  const answer = await reader.readHead(MAX_ANSWER_HEAD);
  if (answer === null) throw fail(`the upstream closed the connection without answering the CONNECT`);
  if (answer === "too-long") {
    throw fail(`the upstream's answer has no end of head in ${MAX_ANSWER_HEAD} bytes`);
  }
  const statusLine = answer.split("\r\n", 1)[0]!;
  const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
  if (!m) throw fail(`the upstream answered something that is not HTTP: ${printable(statusLine)}`);
  const status = Number(m[1]);
  const reason = `${status}${m[2] ? ` ${m[2]}` : ""}`;
  if (status === 407) {
    throw fail(
      proxy.auth
        ? `the upstream rejected the credentials (${reason})`
        : `the upstream asks for credentials (${reason}); give them with --upstream-auth USER:PASS`,
    );
  }
  if (status < 200 || status > 299) throw fail(`the upstream refused the CONNECT (${reason})`);
}

const SOCKS_REPLIES: Record<number, string> = {
  1: "general SOCKS server failure",
  2: "connection not allowed by ruleset",
  3: "network unreachable",
  4: "host unreachable",
  5: "connection refused",
  6: "TTL expired",
  7: "command not supported",
  8: "address type not supported",
};

/** SOCKS5 (RFC 1928) CONNECT, with RFC 1929 username/password when the upstream picks it. */
async function socks5Connect(
  conn: Deno.Conn,
  reader: ExactReader,
  proxy: UpstreamProxy,
  target: HostPort,
  fail: (reason: string) => UpstreamProxyError,
): Promise<void> {
  await writeAll(conn, proxy.auth ? Uint8Array.of(5, 2, 0, 2) : Uint8Array.of(5, 1, 0));
  const choice = await reader.exactly(2);
  if (!choice) throw fail(`the upstream closed the connection during the SOCKS5 greeting`);
  if (choice[0] !== 5) throw fail(`the upstream does not speak SOCKS5 (it answered version ${choice[0]})`);
  if (choice[1] === 0xff) {
    throw fail(
      proxy.auth
        ? `the upstream accepts none of the offered authentication methods`
        : `the upstream asks for credentials (no acceptable method without them); give --upstream-auth USER:PASS`,
    );
  }
  if (choice[1] === 2) {
    if (!proxy.auth) {
      throw fail(`the upstream picked username/password authentication, which was not offered`);
    }
    const user = encoder.encode(proxy.auth.user);
    const password = encoder.encode(proxy.auth.password);
    await writeAll(conn, Uint8Array.of(1, user.byteLength, ...user, password.byteLength, ...password));
    const status = await reader.exactly(2);
    if (!status) throw fail(`the upstream closed the connection during authentication`);
    if (status[1] !== 0) throw fail(`the upstream rejected the credentials (status ${status[1]})`);
  } else if (choice[1] !== 0) {
    throw fail(`the upstream picked authentication method ${choice[1]}, which was not offered`);
  }
  await writeAll(conn, socksAddressRequest(target));
  const reply = await reader.exactly(4);
  if (!reply) throw fail(`the upstream closed the connection before answering the SOCKS5 CONNECT`);
  if (reply[0] !== 5) throw fail(`the upstream answered the SOCKS5 CONNECT with version ${reply[0]}`);
  if (reply[1] !== 0) {
    throw fail(`the upstream refused: ${SOCKS_REPLIES[reply[1]!] ?? `reply code ${reply[1]}`}`);
  }
  const rest = reply[3] === 1 ? 4 + 2 : reply[3] === 4 ? 16 + 2 : reply[3] === 3 ? -1 : null;
  if (rest === null) throw fail(`the upstream's SOCKS5 reply has an unknown address type ${reply[3]}`);
  if (rest === -1) {
    const len = await reader.exactly(1);
    if (!len || !(await reader.exactly(len[0]! + 2))) throw fail(`the upstream's SOCKS5 reply is cut short`);
  } else if (!(await reader.exactly(rest))) {
    throw fail(`the upstream's SOCKS5 reply is cut short`);
  }
}

/** The CONNECT request for `target`: an IPv4 or IPv6 literal as such, anything else as a name. */
function socksAddressRequest(target: HostPort): Uint8Array {
  const port = [target.port >> 8, target.port & 0xff];
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(target.hostname);
  if (v4) return Uint8Array.of(5, 1, 0, 1, ...v4.slice(1).map(Number), ...port);
  if (target.hostname.includes(":")) {
    return Uint8Array.of(5, 1, 0, 4, ...ipv6Bytes(target.hostname), ...port);
  }
  const name = encoder.encode(target.hostname);
  if (name.byteLength > 255) {
    throw new UpstreamProxyError(`host name too long for SOCKS5: ${target.hostname}`);
  }
  return Uint8Array.of(5, 1, 0, 3, name.byteLength, ...name, ...port);
}

/** The 16 bytes of an IPv6 literal (`::` and an embedded IPv4 tail allowed). */
function ipv6Bytes(text: string): number[] {
  let t = text.replace(/%.*$/, "");
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(t);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    t = t.slice(0, v4.index) + ((a << 8) | b).toString(16) + ":" + ((c << 8) | d).toString(16);
  }
  const [left, right] = t.includes("::") ? t.split("::") as [string, string] : [t, undefined];
  const l = left ? left.split(":") : [];
  const r = right ? right.split(":") : [];
  const groups = right === undefined ? l : [...l, ...Array(8 - l.length - r.length).fill("0"), ...r];
  return groups.flatMap((g) => {
    const v = parseInt(g, 16);
    return [v >> 8, v & 0xff];
  });
}

/** Reads exact byte counts or a head from a connection, keeping what was read beyond. */
class ExactReader {
  #buf = new Uint8Array(0);
  constructor(private conn: Deno.Conn) {}

  async #more(): Promise<boolean> {
    const chunk = new Uint8Array(4096);
    const n = await this.conn.read(chunk);
    if (n === null) return false;
    const next = new Uint8Array(this.#buf.byteLength + n);
    next.set(this.#buf);
    next.set(chunk.subarray(0, n), this.#buf.byteLength);
    this.#buf = next;
    return true;
  }

  /** `n` bytes, or null when the connection ended first. */
  async exactly(n: number): Promise<Uint8Array | null> {
    while (this.#buf.byteLength < n) if (!(await this.#more())) return null;
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.slice(n);
    return out;
  }

  /** A head up to its empty line (as text), null at an early end, "too-long" past `max` bytes. */
  async readHead(max: number): Promise<string | null | "too-long"> {
    for (;;) {
      const end = indexOfEmptyLine(this.#buf);
      if (end !== -1) {
        const head = new TextDecoder("latin1").decode(this.#buf.subarray(0, end));
        this.#buf = this.#buf.slice(end + 4);
        return head;
      }
      // Not an HTTP answer: hand back what came, so the caller can show it.
      if (
        this.#buf.byteLength >= 5 && new TextDecoder("latin1").decode(this.#buf.subarray(0, 5)) !== "HTTP/"
      ) {
        return new TextDecoder("latin1").decode(this.#buf);
      }
      if (this.#buf.byteLength > max) return "too-long";
      if (!(await this.#more())) return null;
    }
  }

  /** What was read past the answer. */
  rest(): Uint8Array {
    return this.#buf;
  }
}

function indexOfEmptyLine(b: Uint8Array): number {
  for (let i = 0; i + 3 < b.byteLength; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  }
  return -1;
}

/** A stream whose first read returns `prefix` (when not empty). */
function withPrefix(stream: ByteStream, prefix: Uint8Array): ByteStream {
  if (prefix.byteLength === 0) return stream;
  let pending: Uint8Array | null = prefix;
  return {
    read() {
      if (pending) {
        const p = pending;
        pending = null;
        return Promise.resolve(p);
      }
      return stream.read();
    },
    write: (d) => stream.write(d),
    closeWrite: () => stream.closeWrite(),
    close: (reset) => stream.close(reset),
  };
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.byteLength) off += await conn.write(data.subarray(off));
}

/** The first 80 characters of an answer, control bytes escaped. */
function printable(text: string): string {
  const cut = text.slice(0, 80);
  // deno-lint-ignore no-control-regex
  return JSON.stringify(cut.replace(/[\x00-\x1f\x7f-\xff]/g, "?")) + (text.length > 80 ? "…" : "");
}

const encoder = new TextEncoder();
