/**
 * ICMP errors the proxy sends into the tunnel itself: "port unreachable" for a UDP datagram it
 * refuses (ICMP type 3 code 3, RFC 792; ICMPv6 type 1 code 4, RFC 4443), so that the client's
 * socket fails at once (`ECONNREFUSED` on a connected socket) instead of waiting for a timeout.
 *
 * The core hands UDP to the host as addresses, ports and payload, not as the packet that carried
 * them, so the quoted packet is rebuilt from those: same addresses, ports, length and a valid UDP
 * checksum; the IPv4 identification and the hop limit are this module's (0 and 64), which no
 * receiver matches on (Linux finds the socket by addresses and ports).
 * @module
 */
import { writeIp } from "./ip.ts";

/** The UDP datagram an error is about, as the tunnel delivered it. */
export interface RefusedDatagram {
  /** The client's address and port (where the error goes). */
  src: { hostname: string; port: number };
  /** Where the client sent it (the error comes from this address). */
  dst: { hostname: string; port: number };
  data: Uint8Array;
}

/** The hop limit of the packets built here. */
const HOP_LIMIT = 64;
/** IPv6 hosts must take packets of this size; an ICMPv6 error quotes no more than fits (RFC 4443 2.4). */
const IPV6_MIN_MTU = 1280;

/**
 * Builds the IP packet that tells the sender of `d` that nothing listens on its destination port:
 * from `d.dst`'s address to `d.src`'s, quoting the datagram's IP header and first 8 bytes of UDP
 * (IPv4) or as much of the datagram as fits in 1280 bytes (IPv6).
 *
 * @throws {SyntaxError} When an address is not an IP address, or the two are of different families.
 */
export function udpPortUnreachable(d: RefusedDatagram): Uint8Array {
  const src = ipBytes(d.src.hostname);
  const dst = ipBytes(d.dst.hostname);
  if (src.length !== dst.length) throw new SyntaxError("source and destination are of different families");
  const original = udpPacket(src, d.src.port, dst, d.dst.port, d.data);
  if (src.length === 4) {
    const quoted = original.subarray(0, 20 + 8);
    const icmp = new Uint8Array(8 + quoted.length);
    icmp[0] = 3; // destination unreachable
    icmp[1] = 3; // port unreachable
    icmp.set(quoted, 8);
    setU16(icmp, 2, checksum(icmp, 0));
    return ipPacket(dst, src, 1, icmp);
  }
  const quoted = original.subarray(0, Math.min(original.length, IPV6_MIN_MTU - 40 - 8));
  const icmp = new Uint8Array(8 + quoted.length);
  icmp[0] = 1; // destination unreachable
  icmp[1] = 4; // port unreachable
  icmp.set(quoted, 8);
  setU16(icmp, 2, checksum(icmp, pseudoHeaderSum(dst, src, 58, icmp.length)));
  return ipPacket(dst, src, 58, icmp);
}

/** The whole UDP packet from `src` to `dst`, IP header included, with a valid checksum. */
export function udpPacket(
  src: Uint8Array,
  srcPort: number,
  dst: Uint8Array,
  dstPort: number,
  payload: Uint8Array,
): Uint8Array {
  const udp = new Uint8Array(8 + payload.length);
  setU16(udp, 0, srcPort);
  setU16(udp, 2, dstPort);
  setU16(udp, 4, udp.length);
  udp.set(payload, 8);
  // A computed 0 is sent as all ones (0 means "no checksum" for IPv4 and is invalid for IPv6).
  setU16(udp, 6, checksum(udp, pseudoHeaderSum(src, dst, 17, udp.length)) || 0xffff);
  return ipPacket(src, dst, 17, udp);
}

/** An IPv4 (4-byte addresses) or IPv6 (16-byte) packet carrying `payload` of protocol `proto`. */
function ipPacket(src: Uint8Array, dst: Uint8Array, proto: number, payload: Uint8Array): Uint8Array {
  if (src.length === 4) {
    const p = new Uint8Array(20 + payload.length);
    p[0] = 0x45; // version 4, 5 words of header
    setU16(p, 2, p.length);
    p[8] = HOP_LIMIT;
    p[9] = proto;
    p.set(src, 12);
    p.set(dst, 16);
    setU16(p, 10, checksum(p.subarray(0, 20), 0));
    p.set(payload, 20);
    return p;
  }
  const p = new Uint8Array(40 + payload.length);
  p[0] = 0x60; // version 6, no traffic class or flow label
  setU16(p, 4, payload.length);
  p[6] = proto;
  p[7] = HOP_LIMIT;
  p.set(src, 8);
  p.set(dst, 24);
  p.set(payload, 40);
  return p;
}

/** The 4 or 16 bytes of an address (IPv4-mapped IPv6 addresses count as IPv4). */
function ipBytes(text: string): Uint8Array {
  const b = new Uint8Array(16);
  writeIp(text, b);
  const mapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  return mapped ? b.slice(12) : b;
}

/** The one's-complement sum of the pseudo-header of UDP (17) or ICMPv6 (58) over IPv4 or IPv6. */
function pseudoHeaderSum(src: Uint8Array, dst: Uint8Array, proto: number, length: number): number {
  let sum = sum16(src) + sum16(dst) + proto;
  sum += src.length === 4 ? length : (length >>> 16) + (length & 0xffff);
  return sum;
}

/** The Internet checksum (RFC 1071) of `data`, starting from a partial sum. */
export function checksum(data: Uint8Array, initial: number): number {
  let sum = initial + sum16(data);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function sum16(data: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < data.length; i += 2) sum += (data[i]! << 8) | data[i + 1]!;
  if (data.length % 2 === 1) sum += data[data.length - 1]! << 8;
  return sum;
}

function setU16(b: Uint8Array, at: number, v: number): void {
  b[at] = v >>> 8;
  b[at + 1] = v & 0xff;
}
