/**
 * IP address text ↔ 16-byte form (IPv4 as `::ffff:a.b.c.d`), as the wasm core's endpoints use.
 * @module
 */

const V4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/**
 * Parses an IPv4 or IPv6 address into 16 bytes (IPv4 mapped into IPv6).
 *
 * @param text The address, e.g. `10.0.0.2`, `fd00::1` or `[fd00::1]`.
 * @param into Where to write the bytes (16 bytes from `offset`).
 * @param offset Start in `into`.
 * @throws {SyntaxError} When `text` is not an IP address.
 */
export function writeIp(text: string, into: Uint8Array, offset = 0): void {
  const s = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const v4 = V4.exec(s);
  if (v4) {
    into.fill(0, offset, offset + 10);
    into[offset + 10] = 0xff;
    into[offset + 11] = 0xff;
    for (let i = 0; i < 4; i++) {
      const n = Number(v4[i + 1]);
      if (n > 255) throw new SyntaxError(`Cannot parse IP address: ${text}`);
      into[offset + 12 + i] = n;
    }
    return;
  }
  const zone = s.indexOf("%");
  const bare = zone >= 0 ? s.slice(0, zone) : s;
  const halves = bare.split("::");
  if (halves.length > 2 || bare.length < 2) throw new SyntaxError(`Cannot parse IP address: ${text}`);
  const groups = (part: string) => (part === "" ? [] : part.split(":"));
  let head = groups(halves[0]!);
  let tail = halves.length === 2 ? groups(halves[1]!) : [];
  // An embedded IPv4 tail (::ffff:1.2.3.4) counts as two groups.
  const expand = (list: string[]) => {
    const last = list[list.length - 1];
    if (last !== undefined && V4.test(last)) {
      const b = new Uint8Array(16);
      writeIp(last, b);
      return [
        ...list.slice(0, -1),
        ((b[12]! << 8) | b[13]!).toString(16),
        ((b[14]! << 8) | b[15]!).toString(16),
      ];
    }
    return list;
  };
  if (halves.length === 2) tail = expand(tail);
  else head = expand(head);
  const missing = 8 - head.length - tail.length;
  if ((halves.length === 1 && missing !== 0) || missing < 0 || (halves.length === 2 && missing < 1)) {
    throw new SyntaxError(`Cannot parse IP address: ${text}`);
  }
  const all = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  for (let i = 0; i < 8; i++) {
    const g = all[i]!;
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new SyntaxError(`Cannot parse IP address: ${text}`);
    const n = parseInt(g, 16);
    into[offset + 2 * i] = n >> 8;
    into[offset + 2 * i + 1] = n & 0xff;
  }
}

/**
 * Formats 16 address bytes: dotted IPv4 when IPv4-mapped, otherwise compressed IPv6.
 *
 * @param b The bytes.
 * @param offset Start of the 16 bytes in `b`.
 * @returns The address text, e.g. `10.0.0.2` or `fd00::1`.
 */
export function formatIp(b: Uint8Array, offset = 0): string {
  let mapped = b[offset + 10] === 0xff && b[offset + 11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) mapped = b[offset + i] === 0;
  if (mapped) {
    return `${b[offset + 12]}.${b[offset + 13]}.${b[offset + 14]}.${b[offset + 15]}`;
  }
  return formatIpv6(b, offset);
}

/**
 * Formats 16 bytes as IPv6 text (RFC 5952: lower-case hex, the longest run of two or more zero
 * groups as `::`), whatever they hold.
 *
 * @param b The bytes.
 * @param offset Start of the 16 bytes in `b`.
 * @returns The address text, e.g. `fd00::1` or `::ffff:a00:2`.
 */
export function formatIpv6(b: Uint8Array, offset = 0): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((b[offset + 2 * i]! << 8) | b[offset + 2 * i + 1]!);
  // Longest run of zero groups (length ≥ 2) becomes "::".
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (list: number[]) => list.map((n) => n.toString(16)).join(":");
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/**
 * Whether `text` is an IPv4 or IPv6 address.
 *
 * @param text Candidate address.
 * @returns True for a parseable address.
 */
export function isIp(text: string): boolean {
  try {
    writeIp(text, new Uint8Array(16));
    return true;
  } catch {
    return false;
  }
}
