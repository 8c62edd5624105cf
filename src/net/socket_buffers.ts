/**
 * Enlarges the kernel buffers of a UDP socket that Deno opened. Deno's datagram API has no
 * option for it, and the default (about 200 KiB, some 90 full-size datagrams) overflows at
 * WireGuard rates whenever the receiving thread is descheduled for a moment; each overflow costs
 * the TCP connections inside the tunnel a retransmission. The socket's descriptor is found
 * through /proc (its inode, by local port), and `setsockopt` is called through FFI. Linux only,
 * and only with FFI permission; anything else leaves the socket as it is and says why.
 * @module
 */

/** Kernel socket buffer a WireGuard socket asks for, each way (wireguard-go asks for 7 MiB). */
export const SOCKET_BUFFER = 8 << 20;

const SOL_SOCKET = 1;
const SO_SNDBUF = 7, SO_RCVBUF = 8, SO_SNDBUFFORCE = 32, SO_RCVBUFFORCE = 33;

/** Finds the descriptor of this process's UDP socket bound to `port`. */
export function findUdpSocketFd(port: number): number | null {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  const inodes = new Set<string>();
  for (const table of ["/proc/net/udp", "/proc/net/udp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(table);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[1]?.endsWith(`:${hexPort}`) && f[9]) inodes.add(f[9]);
    }
  }
  if (inodes.size === 0) return null;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      const target = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      if (inode && inodes.has(inode)) return Number(entry.name);
    } catch { /* closed meanwhile */ }
  }
  return null;
}

/**
 * Asks for `bytes` of receive and send buffer on the UDP socket bound to `port` (forced past
 * net.core.[rw]mem_max when the process may, as root can).
 *
 * @returns null when done, else why not.
 */
export function enlargeUdpBuffers(port: number, bytes: number): string | null {
  if (Deno.build.os !== "linux") return "only on Linux";
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    return "no FFI permission (--allow-ffi)";
  }
  let fd: number | null;
  try {
    fd = findUdpSocketFd(port);
  } catch (e) {
    return `cannot look through /proc: ${(e as Error).message}`;
  }
  if (fd === null) return `no UDP socket on port ${port} found in /proc`;
  let lib;
  try {
    lib = Deno.dlopen("libc.so.6", {
      setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
    });
  } catch (e) {
    return `cannot load libc: ${(e as Error).message}`;
  }
  try {
    const value = new Int32Array([bytes]);
    const set = (forced: number, plain: number) =>
      lib.symbols.setsockopt(fd, SOL_SOCKET, forced, value, 4) === 0 ||
      lib.symbols.setsockopt(fd, SOL_SOCKET, plain, value, 4) === 0;
    const rx = set(SO_RCVBUFFORCE, SO_RCVBUF);
    const tx = set(SO_SNDBUFFORCE, SO_SNDBUF);
    return rx && tx ? null : "setsockopt failed";
  } finally {
    lib.close();
  }
}
