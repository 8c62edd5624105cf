/**
 * SOCKS5 (RFC 1928) with username/password authentication (RFC 1929), server side, sans-IO:
 * {@link Socks5Handshake} takes the client's bytes and returns what to send and, once the request
 * is in, the command and its destination; the driver (socks5_mode.ts) owns the socket. The UDP
 * relay header of RFC 1928 §7 is read and written by {@link parseSocks5Udp} and
 * {@link encodeSocks5Udp}.
 *
 * Malformed input never throws out of {@link Socks5Handshake.feed}: it comes back as a failure
 * with a one-line reason and, where the protocol has one, the reply to send before closing.
 * @module
 */
import { formatIp, writeIp } from "../net/ip.ts";
import type { HostPort } from "../flows/flow.ts";

/** Reply codes of RFC 1928 §6. */
export const Socks5Reply = {
  succeeded: 0x00,
  generalFailure: 0x01,
  notAllowed: 0x02,
  networkUnreachable: 0x03,
  hostUnreachable: 0x04,
  connectionRefused: 0x05,
  ttlExpired: 0x06,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
} as const;

/** Authentication methods of RFC 1928 §3. */
export const Socks5Method = { noAuth: 0x00, userPass: 0x02, noneAcceptable: 0xff } as const;

/** Commands of RFC 1928 §4. */
export const Socks5Command = { connect: 0x01, bind: 0x02, udpAssociate: 0x03 } as const;

/** A request the handshake accepted. */
export interface Socks5Request {
  command: "connect" | "udp-associate";
  /** The destination (CONNECT) or the address the client will send UDP from (often 0.0.0.0:0). */
  address: HostPort;
  /** How the client wrote the address. */
  addressType: "ipv4" | "ipv6" | "domain";
  /** The user name when the client authenticated. */
  username?: string;
}

/** What {@link Socks5Handshake.feed} asks the driver to do. */
export interface Socks5Step {
  /** Bytes to send to the client, in order. */
  send: Uint8Array[];
  /** The request, once accepted (the driver answers it with {@link encodeSocks5Reply}). */
  request?: Socks5Request;
  /** Bytes the client sent after its request (e.g. a TLS hello sent without waiting). */
  rest?: Uint8Array;
  /** The handshake failed: the reason; close the connection after sending `send`. */
  error?: string;
}

/** Options of {@link Socks5Handshake}. */
export interface Socks5HandshakeOptions {
  /** When given, clients must authenticate with these credentials (RFC 1929). */
  credentials?: { username: string; password: string };
}

type State = "greeting" | "auth" | "request" | "done";

/** Bytes a greeting, authentication or request may take at most (each is well under 600). */
const MAX_MESSAGE = 1024;

/** The server side of a SOCKS5 handshake. */
export class Socks5Handshake {
  #o: Socks5HandshakeOptions;
  #state: State = "greeting";
  #buf: Uint8Array = new Uint8Array(0);
  #username: string | undefined;

  /** Makes a handshake waiting for the client's greeting. */
  constructor(options: Socks5HandshakeOptions = {}) {
    this.#o = options;
  }

  /** Whether the handshake ended (accepted or failed). */
  get done(): boolean {
    return this.#state === "done";
  }

  /** Takes bytes from the client. */
  feed(data: Uint8Array): Socks5Step {
    const step: Socks5Step = { send: [] };
    if (this.#state === "done") return step;
    this.#buf = this.#buf.byteLength === 0 ? data : concat(this.#buf, data);
    try {
      while (!this.done) {
        const used = this.#advance(step);
        if (used === 0) break;
        this.#buf = this.#buf.subarray(used);
      }
    } catch (e) {
      if (!(e instanceof Socks5Error)) throw e;
      this.#state = "done";
      step.error = e.message;
      if (e.reply !== undefined) step.send.push(e.reply);
      return step;
    }
    if (this.done) {
      if (this.#buf.byteLength > 0) step.rest = this.#buf;
    } else if (this.#buf.byteLength > MAX_MESSAGE) {
      step.error = `SOCKS5 ${this.#state} longer than ${MAX_MESSAGE} bytes`;
      this.#state = "done";
    }
    return step;
  }

  /** Reads one message; returns the bytes it took, 0 when more are needed. */
  #advance(step: Socks5Step): number {
    const b = this.#buf;
    if (b.byteLength === 0) return 0;
    switch (this.#state) {
      case "greeting": {
        if (b[0] !== 5) {
          throw new Socks5Error(`not a SOCKS5 greeting (version byte 0x${hex(b[0]!)}${versionHint(b)})`);
        }
        if (b.byteLength < 2) return 0;
        const n = b[1]!;
        if (n === 0) throw new Socks5Error("SOCKS5 greeting offers no authentication method", noMethod());
        if (b.byteLength < 2 + n) return 0;
        const methods = b.subarray(2, 2 + n);
        if (this.#o.credentials) {
          if (!methods.includes(Socks5Method.userPass)) {
            throw new Socks5Error(
              "the client offers no username/password authentication and the proxy requires it",
              noMethod(),
            );
          }
          step.send.push(Uint8Array.of(5, Socks5Method.userPass));
          this.#state = "auth";
        } else {
          if (!methods.includes(Socks5Method.noAuth)) {
            throw new Socks5Error(
              `the client offers only authentication methods the proxy does not use (${
                [...methods].map(hex).join(", ")
              })`,
              noMethod(),
            );
          }
          step.send.push(Uint8Array.of(5, Socks5Method.noAuth));
          this.#state = "request";
        }
        return 2 + n;
      }
      case "auth": {
        if (b[0] !== 1) {
          throw new Socks5Error(
            `bad username/password version 0x${hex(b[0]!)} (RFC 1929 says 1)`,
            authFailed(),
          );
        }
        if (b.byteLength < 2) return 0;
        const ulen = b[1]!;
        if (b.byteLength < 3 + ulen) return 0;
        const plen = b[2 + ulen]!;
        if (b.byteLength < 3 + ulen + plen) return 0;
        const username = utf8(b.subarray(2, 2 + ulen));
        const password = utf8(b.subarray(3 + ulen, 3 + ulen + plen));
        const want = this.#o.credentials!;
        if (!equalText(username, want.username) || !equalText(password, want.password)) {
          throw new Socks5Error(`SOCKS5 authentication failed for user "${username}"`, authFailed());
        }
        this.#username = username;
        step.send.push(Uint8Array.of(1, 0));
        this.#state = "request";
        return 3 + ulen + plen;
      }
      case "request": {
        if (b[0] !== 5) {
          throw new Socks5Error(
            `bad SOCKS5 request version 0x${hex(b[0]!)}`,
            encodeSocks5Reply(Socks5Reply.generalFailure),
          );
        }
        if (b.byteLength < 4) return 0;
        const cmd = b[1]!;
        const parsed = readAddress(b, 3);
        if (parsed === null) return 0;
        if (cmd !== Socks5Command.connect && cmd !== Socks5Command.udpAssociate) {
          const name = cmd === Socks5Command.bind ? "BIND" : `command 0x${hex(cmd)}`;
          throw new Socks5Error(
            `SOCKS5 ${name} is not supported`,
            encodeSocks5Reply(Socks5Reply.commandNotSupported),
          );
        }
        step.request = {
          command: cmd === Socks5Command.connect ? "connect" : "udp-associate",
          address: parsed.address,
          addressType: parsed.type,
          ...(this.#username !== undefined ? { username: this.#username } : {}),
        };
        this.#state = "done";
        return parsed.end;
      }
      case "done":
        return 0;
    }
  }
}

/** A malformed or refused SOCKS5 message; `reply` is what to send before closing. */
export class Socks5Error extends Error {
  /** The bytes to send the client before closing, if the protocol has an answer. */
  readonly reply: Uint8Array | undefined;
  /** Makes the error. */
  constructor(message: string, reply?: Uint8Array) {
    super(message);
    this.name = "Socks5Error";
    this.reply = reply;
  }
}

/**
 * A SOCKS5 reply (RFC 1928 §6): `VER REP RSV ATYP BND.ADDR BND.PORT`.
 *
 * @param code One of {@link Socks5Reply}.
 * @param bound The bound address (default `0.0.0.0:0`); IP literals only.
 */
export function encodeSocks5Reply(code: number, bound?: HostPort): Uint8Array {
  const addr = encodeAddress(bound ?? { hostname: "0.0.0.0", port: 0 });
  const out = new Uint8Array(3 + addr.byteLength);
  out.set([5, code, 0]);
  out.set(addr, 3);
  return out;
}

/** A datagram of a UDP association (RFC 1928 §7) without its header. */
export interface Socks5Datagram {
  /** Where it goes (from the client) or where it came from (to the client). */
  address: HostPort;
  addressType: "ipv4" | "ipv6" | "domain";
  /** The fragment number; the proxy drops fragments (not 0), as RFC 1928 allows. */
  fragment: number;
  data: Uint8Array;
}

/**
 * Reads a UDP association datagram: `RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA`.
 *
 * @throws {Socks5Error} When the header is cut short or names an unknown address type.
 */
export function parseSocks5Udp(datagram: Uint8Array): Socks5Datagram {
  if (datagram.byteLength < 4) throw new Socks5Error(`SOCKS5 UDP datagram of ${datagram.byteLength} bytes`);
  const parsed = readAddress(datagram, 3);
  if (parsed === null) throw new Socks5Error("SOCKS5 UDP header cut short");
  return {
    address: parsed.address,
    addressType: parsed.type,
    fragment: datagram[2]!,
    data: datagram.subarray(parsed.end),
  };
}

/** Writes a UDP association datagram from `from` (an IP literal or a name) carrying `data`. */
export function encodeSocks5Udp(from: HostPort, data: Uint8Array): Uint8Array {
  const addr = encodeAddress(from);
  const out = new Uint8Array(3 + addr.byteLength + data.byteLength);
  out.set(addr, 3);
  out.set(data, 3 + addr.byteLength);
  return out;
}

/** `ATYP ADDR PORT` for an address: IPv4, IPv6, or a domain name (up to 255 bytes). */
export function encodeAddress(address: HostPort): Uint8Array {
  const host = address.hostname.startsWith("[") ? address.hostname.slice(1, -1) : address.hostname;
  let body: Uint8Array;
  if (/^\d+\.\d+\.\d+\.\d+$/.test(host)) {
    body = Uint8Array.of(1, ...host.split(".").map(Number));
  } else if (host.includes(":")) {
    const ip = new Uint8Array(16);
    writeIp(host, ip);
    body = Uint8Array.of(4, ...ip);
  } else {
    const name = new TextEncoder().encode(host);
    if (name.byteLength === 0 || name.byteLength > 255) {
      throw new Socks5Error(`a SOCKS5 domain name has 1 to 255 bytes, not ${name.byteLength}`);
    }
    body = Uint8Array.of(3, name.byteLength, ...name);
  }
  const out = new Uint8Array(body.byteLength + 2);
  out.set(body);
  out[body.byteLength] = address.port >> 8;
  out[body.byteLength + 1] = address.port & 0xff;
  return out;
}

/**
 * Reads `ATYP ADDR PORT` at `at`: the address and the offset after it, null when cut short.
 *
 * @throws {Socks5Error} For an unknown address type or a domain name that cannot be one.
 */
function readAddress(
  b: Uint8Array,
  at: number,
): { address: HostPort; type: Socks5Request["addressType"]; end: number } | null {
  if (b.byteLength <= at) return null;
  const atyp = b[at]!;
  if (atyp === 1) {
    if (b.byteLength < at + 7) return null;
    return {
      address: { hostname: [...b.subarray(at + 1, at + 5)].join("."), port: port(b, at + 5) },
      type: "ipv4",
      end: at + 7,
    };
  }
  if (atyp === 4) {
    if (b.byteLength < at + 19) return null;
    return {
      address: { hostname: formatIp(b.subarray(at + 1, at + 17)), port: port(b, at + 17) },
      type: "ipv6",
      end: at + 19,
    };
  }
  if (atyp === 3) {
    if (b.byteLength < at + 2) return null;
    const len = b[at + 1]!;
    if (len === 0) {
      throw new Socks5Error("SOCKS5 domain name is empty", encodeSocks5Reply(Socks5Reply.generalFailure));
    }
    if (b.byteLength < at + 4 + len) return null;
    const name = b.subarray(at + 2, at + 2 + len);
    // Host names are letters, digits, "-", "_" and dots; anything else (NUL, spaces, "/", ":")
    // cannot be dialed and is refused here rather than handed to a resolver.
    for (const c of name) {
      const ok = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) ||
        c === 0x2d || c === 0x2e || c === 0x5f;
      if (!ok) {
        throw new Socks5Error(
          `SOCKS5 domain name holds byte 0x${hex(c)}, which no host name has`,
          encodeSocks5Reply(Socks5Reply.generalFailure),
        );
      }
    }
    return {
      address: { hostname: new TextDecoder().decode(name), port: port(b, at + 2 + len) },
      type: "domain",
      end: at + 4 + len,
    };
  }
  throw new Socks5Error(
    `SOCKS5 address type 0x${hex(atyp)} is not one of IPv4 (1), domain (3), IPv6 (4)`,
    encodeSocks5Reply(Socks5Reply.addressTypeNotSupported),
  );
}

function port(b: Uint8Array, at: number): number {
  return (b[at]! << 8) | b[at + 1]!;
}

function noMethod(): Uint8Array {
  return Uint8Array.of(5, Socks5Method.noneAcceptable);
}

function authFailed(): Uint8Array {
  return Uint8Array.of(1, 1);
}

function hex(n: number): string {
  return n.toString(16).padStart(2, "0");
}

/** What a wrong first byte suggests the client speaks. */
function versionHint(b: Uint8Array): string {
  if (b[0] === 4) return "; SOCKS4 is not supported";
  if (b[0] === 0x16) return "; a TLS hello: the client was not told to use SOCKS";
  if (b[0]! >= 0x41 && b[0]! <= 0x5a) return "; looks like HTTP: use the regular mode's port";
  return "";
}

function utf8(b: Uint8Array): string {
  return new TextDecoder().decode(b);
}

/** Compares two strings in time that depends only on their lengths. */
function equalText(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a), y = new TextEncoder().encode(b);
  let diff = x.byteLength ^ y.byteLength;
  for (let i = 0; i < Math.max(x.byteLength, y.byteLength); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}
