/**
 * Which destinations a client of the proxy may reach. By default nothing on the proxy's own host:
 * loopback, the unspecified address (connecting to 0.0.0.0 reaches loopback on Linux), link-local
 * (cloud metadata at 169.254.169.254 included), multicast and broadcast, and every address of the
 * host's interfaces. A tunneled phone or an explicit-proxy client otherwise reaches services that
 * listen only on the host (databases on 127.0.0.1, admin ports, the metadata endpoint).
 *
 * Names are resolved here (getaddrinfo, as the connection itself would) and the caller dials the
 * address that was checked, so `localhost`, `127.1` or a name that resolves to the host cannot
 * slip through; a name with both blocked and allowed addresses is dialed at the allowed ones only.
 * @module
 */
import { lookup } from "node:dns/promises";
import { formatIp, writeIp } from "../net/ip.ts";
import { formatHostPort, type HostPort } from "../flows/flow.ts";

/** A connection the policy refused; the message names the address, the reason and the way out. */
export class BlockedDestinationError extends Error {
  /** Makes the error. */
  constructor(message: string) {
    super(message);
    this.name = "BlockedDestinationError";
  }
}

/** Options of {@link DestinationPolicy}. */
export interface DestinationPolicyOptions {
  /** Allow everything (a developer testing a server on this host). */
  allowLocal: boolean;
  /** Destinations the proxy itself chose and may always reach (its DNS resolvers). */
  exempt?: HostPort[];
  /** The host's own addresses (default: `Deno.networkInterfaces()`, re-read at most once a second). */
  ownAddresses?: () => string[];
  /** Resolves a name to addresses (default: getaddrinfo through node:dns). */
  resolve?: (name: string) => Promise<string[]>;
  /** What to add to a refusal so the user knows how to allow it. */
  hint?: string;
  /** Receives a warning when the host's addresses cannot be listed. */
  warn?: (message: string) => void;
}

/** Decides whether a destination may be dialed. */
export class DestinationPolicy {
  #o: DestinationPolicyOptions;
  #own: Set<string> = new Set();
  #ownRead = -Infinity;
  #ownFailed = false;
  #exempt: Set<string>;
  #never: { ip: string; port: number }[] = [];
  #blocked = 0;

  constructor(options: DestinationPolicyOptions) {
    this.#o = options;
    this.#exempt = new Set((options.exempt ?? []).map((a) => exemptKey(a.hostname, a.port)));
  }

  /** Whether the policy lets everything through. */
  get allowsLocal(): boolean {
    return this.#o.allowLocal;
  }

  /** Destinations refused so far. */
  get blocked(): number {
    return this.#blocked;
  }

  /**
   * Why `ip` (an address, not a name) must not be reached on `port`, or null when it may.
   * Counts nothing; see {@link refuse}.
   */
  blockReason(ip: string, port?: number): string | null {
    const bytes = parseIp(ip);
    if (port !== undefined && bytes && this.#never.length > 0) {
      const never = this.#neverReason(bytes, port);
      if (never) return never;
    }
    if (this.#o.allowLocal) return null;
    if (!bytes) return null;
    const canonical = formatIp(bytes);
    if (port !== undefined && this.#exempt.has(exemptKey(canonical, port))) return null;
    const reason = localAddressKind(bytes);
    if (reason) return reason;
    if (this.#ownAddresses().has(canonical)) return "an address of this host";
    return null;
  }

  /** Counts one refusal and returns the error that reports it. */
  refuse(address: HostPort, reason: string, resolvedFrom?: string): BlockedDestinationError {
    this.#blocked++;
    const what = resolvedFrom
      ? `${formatHostPort({ hostname: resolvedFrom, port: address.port })} (${address.hostname})`
      : formatHostPort(address);
    return new BlockedDestinationError(
      `destination ${what} refused: ${reason}` +
        (this.#o.hint ? ` (${this.#o.hint})` : ""),
    );
  }

  /**
   * The addresses to dial for `address`: the literal itself, or the name's addresses that are
   * allowed, in resolver order. Throws {@link BlockedDestinationError} when none is allowed.
   * With `allowLocal`, `address` comes back as it is (the connection resolves it as before).
   */
  async resolve(address: HostPort): Promise<HostPort[]> {
    if (this.#o.allowLocal && !this.#never.some((n) => n.port === address.port)) return [address];
    const literal = canonicalLiteral(address.hostname);
    if (literal !== null) {
      const reason = this.blockReason(literal, address.port);
      if (reason) throw this.refuse({ hostname: literal, port: address.port }, reason);
      return [{ hostname: literal, port: address.port }];
    }
    const name = address.hostname.replace(/\.$/, "");
    const addresses = await (this.#o.resolve ?? resolveName)(name);
    if (addresses.length === 0) throw new Error(`cannot resolve ${name}: no addresses`);
    const allowed: HostPort[] = [];
    let firstReason: { ip: string; reason: string } | null = null;
    for (const ip of addresses) {
      const reason = this.blockReason(ip, address.port);
      if (reason) firstReason ??= { ip, reason };
      else allowed.push({ hostname: ip, port: address.port });
    }
    if (allowed.length === 0 && firstReason) {
      throw this.refuse({ hostname: firstReason.ip, port: address.port }, firstReason.reason, name);
    }
    return allowed;
  }

  /**
   * Makes an address unreachable through the proxy whatever `allowLocal` says (the web UI's own
   * listening address: a page a client loads through the proxy must not drive it). An unspecified
   * `hostname` (`0.0.0.0`, `::`) stands for every local address on that port. Any local address on
   * the port is refused, as connecting to one of them may reach the listener. Returns a function
   * that lifts it.
   */
  protect(address: HostPort): () => void {
    const b = parseIp(address.hostname);
    const entry = { ip: b ? formatIp(b) : address.hostname.toLowerCase(), port: address.port };
    this.#never.push(entry);
    return () => {
      const i = this.#never.indexOf(entry);
      if (i >= 0) this.#never.splice(i, 1);
    };
  }

  #neverReason(bytes: Uint8Array, port: number): string | null {
    const canonical = formatIp(bytes);
    for (const n of this.#never) {
      if (n.port !== port) continue;
      if (n.ip === canonical || localAddressKind(bytes) || this.#ownAddresses().has(canonical)) {
        return "the address of wirescope's own web UI (never reachable through the proxy)";
      }
    }
    return null;
  }

  #ownAddresses(): Set<string> {
    const now = Date.now();
    if (now - this.#ownRead < 1000) return this.#own;
    this.#ownRead = now;
    try {
      const list = this.#o.ownAddresses
        ? this.#o.ownAddresses()
        : Deno.networkInterfaces().map((i) => i.address);
      const own = new Set<string>();
      for (const a of list) {
        const b = parseIp(a);
        if (b) own.add(formatIp(b));
      }
      this.#own = own;
    } catch (e) {
      // Without the permission (a library user's choice) the fixed ranges still apply.
      if (!this.#ownFailed) {
        this.#ownFailed = true;
        this.#o.warn?.(
          `cannot list this host's addresses (only fixed local ranges are blocked): ${(e as Error).message}`,
        );
      }
    }
    return this.#own;
  }
}

function exemptKey(ip: string, port: number): string {
  const b = parseIp(ip);
  return `${b ? formatIp(b) : ip.toLowerCase()}|${port}`;
}

function parseIp(text: string): Uint8Array | null {
  const b = new Uint8Array(16);
  try {
    writeIp(text, b);
    return b;
  } catch {
    return null;
  }
}

/**
 * `text` in canonical form when it is an IP address written the usual way, else null. Forms
 * such as `127.1`, `0177.0.0.1` or `2130706433` are not literals here: the system's resolver
 * reads them (inet_aton), so they go through {@link DestinationPolicy.resolve}'s lookup.
 */
export function canonicalLiteral(text: string): string | null {
  const s = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  if (s.includes(":")) {
    const b = parseIp(s);
    return b ? formatIp(b) : null;
  }
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  for (const part of m.slice(1)) {
    if ((part.length > 1 && part.startsWith("0")) || Number(part) > 255) return null;
  }
  return s;
}

/**
 * Why an address is local to whatever host dials it, from its range alone, or null.
 *
 * @param b 16 bytes (IPv4 mapped into IPv6).
 */
export function localAddressKind(b: Uint8Array): string | null {
  let mapped = b[10] === 0xff && b[11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) mapped = b[i] === 0;
  if (mapped) {
    const a = b[12]!, c = b[13]!;
    if (a === 127) return "a loopback address";
    if (a === 0) return "an unspecified address (it reaches this host)";
    if (a === 169 && c === 254) return "a link-local address (cloud metadata lives there)";
    if (a >= 224 && a <= 239) return "a multicast address";
    if (a === 255 && c === 255 && b[14] === 255 && b[15] === 255) return "the broadcast address";
    return null;
  }
  let zeroPrefix = true;
  for (let i = 0; i < 15 && zeroPrefix; i++) zeroPrefix = b[i] === 0;
  if (zeroPrefix && b[15] === 1) return "a loopback address";
  if (zeroPrefix && b[15] === 0) return "an unspecified address (it reaches this host)";
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return "a link-local address";
  if (b[0] === 0xff) return "a multicast address";
  return null;
}

async function resolveName(name: string): Promise<string[]> {
  try {
    const found = await lookup(name, { all: true });
    return found.map((a) => a.address);
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new Error(
      `cannot resolve ${name}: ${code === "ENOTFOUND" ? "no such name" : (e as Error).message}`,
    );
  }
}
