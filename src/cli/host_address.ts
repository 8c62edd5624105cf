/**
 * Finds the address other machines most likely reach this host on, for the `Endpoint` line of
 * WireGuard client configurations.
 * @module
 */

/** One IPv4 route from `/proc/net/route`. */
interface Route {
  iface: string;
  /** The gateway as a 32-bit number, 0 when there is none. */
  gateway: number;
  metric: number;
}

/**
 * The IPv4 address of the host's primary interface: the one the default route leaves through.
 *
 * On Linux the default route comes from `/proc/net/route`; among that interface's addresses the
 * one on the gateway's subnet wins. Without a default route (or elsewhere than Linux) the first
 * IPv4 address that is not loopback, link-local or 0.0.0.0 is used.
 *
 * @returns The address, such as `192.168.1.20`, or `null` when the host has none to offer.
 * @throws {Deno.errors.NotCapable} Without `--allow-sys=networkInterfaces`.
 *
 * @example
 * ```ts ignore
 * import { primaryHostAddress } from "./host_address.ts";
 * console.log(primaryHostAddress() ?? "no network"); // 192.168.1.20
 * ```
 */
export function primaryHostAddress(): string | null {
  const candidates = Deno.networkInterfaces().filter((i) => i.family === "IPv4" && isUsable(i.address));
  const route = defaultRoute();
  if (route !== null) {
    const onRoute = candidates.filter((i) => i.name === route.iface);
    const sameSubnet = onRoute.find((i) => {
      const mask = toNumber(i.netmask);
      return route.gateway !== 0 && mask !== null && ((toNumber(i.address)! ^ route.gateway) & mask) === 0;
    });
    const chosen = sameSubnet ?? onRoute[0];
    if (chosen !== undefined) return chosen.address;
  }
  const routable = candidates.find((i) => !i.address.startsWith("169.254."));
  return routable?.address ?? candidates[0]?.address ?? null;
}

/** Whether an address can be handed to other machines at all. */
function isUsable(address: string): boolean {
  return address !== "0.0.0.0" && !address.startsWith("127.") && toNumber(address) !== null;
}

/**
 * The default IPv4 route with the lowest metric, from `/proc/net/route`; `null` when there is
 * none or the file cannot be read.
 */
function defaultRoute(): Route | null {
  let text;
  try {
    text = Deno.readTextFileSync("/proc/net/route");
  } catch {
    return null;
  }
  let best: Route | null = null;
  // Columns: Iface Destination Gateway Flags RefCnt Use Metric Mask ...; numbers in hex, in the
  // kernel's byte order (little-endian on the machines Deno runs on).
  for (const line of text.split("\n").slice(1)) {
    const [iface, destination, gateway, flags, , , metric, mask] = line.trim().split(/\s+/);
    if (iface === undefined || mask === undefined) continue;
    const RTF_UP = 0x1;
    if (Number.parseInt(destination!, 16) !== 0 || Number.parseInt(mask, 16) !== 0) continue;
    if ((Number.parseInt(flags!, 16) & RTF_UP) === 0) continue;
    const route = { iface, gateway: swapBytes(Number.parseInt(gateway!, 16)), metric: Number(metric) };
    if (best === null || route.metric < best.metric) best = route;
  }
  return best;
}

/** Reverses the byte order of a 32-bit number. */
function swapBytes(n: number): number {
  return (((n & 0xff) << 24) | ((n & 0xff00) << 8) | ((n >>> 8) & 0xff00) | (n >>> 24)) >>> 0;
}

/** A dotted IPv4 address as a 32-bit number; `null` when it is not one. */
function toNumber(address: string): number | null {
  const parts = address.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return null;
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}
