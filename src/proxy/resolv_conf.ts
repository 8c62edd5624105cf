/**
 * Reads the DNS servers a system is configured with from the text of `/etc/resolv.conf`.
 * @module
 */
import { writeIp } from "../net/ip.ts";

/** A DNS server to send queries to. */
export interface Nameserver {
  /** The IP address: IPv4, or IPv6 with its zone (`fe80::1%eth0`) when the file gives one. */
  hostname: string;
  /** The UDP and TCP port (always 53: resolv.conf has no way to name another). */
  port: number;
}

const DNS_PORT = 53;
const ZONE = /^[A-Za-z0-9_.-]+$/;

/** Whether `text` is an address glibc would accept after `nameserver`. */
function isNameserverAddress(text: string): boolean {
  if (text.startsWith("[")) return false;
  const zone = text.indexOf("%");
  if (zone >= 0 && (!text.includes(":") || !ZONE.test(text.slice(zone + 1)))) return false;
  try {
    writeIp(text, new Uint8Array(16));
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses the `nameserver` lines of a resolv.conf file, in order.
 *
 * Like glibc's resolver, this takes the address up to the first whitespace, `#` or `;`, skips
 * comment lines (starting with `#` or `;`) and every other keyword, and ignores lines whose
 * address does not parse; unlike glibc, it tolerates blanks before the keyword. Every server is returned even though glibc uses only the first three.
 *
 * @param text The file's contents.
 * @returns The servers, or an empty list when none is configured (the caller picks a fallback).
 *
 * @example
 * ```ts
 * import { parseResolvConf } from "./resolv_conf.ts";
 * const servers = parseResolvConf("# from DHCP\nsearch lan\nnameserver 192.168.1.1\nnameserver fe80::1%eth0\n");
 * console.log(servers); // [{ hostname: "192.168.1.1", port: 53 }, { hostname: "fe80::1%eth0", port: 53 }]
 * ```
 */
export function parseResolvConf(text: string): Nameserver[] {
  const servers: Nameserver[] = [];
  for (const rawLine of text.split(/\r?\n/)) {
    const line = rawLine.trimStart();
    const match = /^nameserver[ \t]+([^\s#;]+)/.exec(line);
    if (match === null) continue;
    const address = match[1]!;
    if (isNameserverAddress(address)) servers.push({ hostname: address, port: DNS_PORT });
  }
  return servers;
}
