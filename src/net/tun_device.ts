/**
 * A Linux TUN interface opened through libc (FFI): `/dev/net/tun`, `TUNSETIFF` with
 * `IFF_TUN | IFF_NO_PI` (whole IP packets, no extra header), the MTU set and the link brought up
 * with `SIOCSIFMTU`/`SIOCSIFFLAGS` on a plain socket. Deno has no API for any of it.
 *
 * Reads never block the event loop: the descriptor is non-blocking, a `poll` on a libc thread
 * (a non-blocking FFI call, one at a time) is the wake-up, and then {@link TunDevice.read} takes
 * what has arrived, packet by packet, until the queue is empty. An eventfd in the same poll ends
 * the wait at once on close. Writes are one `write` per packet on the calling thread.
 *
 * Creating a TUN interface needs CAP_NET_ADMIN; without it {@link TunDevice.open} throws a
 * {@link TunError} that says so. The interface goes away when the device is closed (it is not
 * made persistent).
 * @module
 */

const O_RDWR = 2, O_NONBLOCK = 0o4000, O_CLOEXEC = 0o2000000;
const TUNSETIFF = 0x400454ca;
const IFF_TUN = 0x0001, IFF_NO_PI = 0x1000, IFF_UP = 0x1;
const SIOCGIFFLAGS = 0x8913, SIOCSIFFLAGS = 0x8914, SIOCSIFMTU = 0x8922;
const AF_INET = 2, SOCK_DGRAM = 2, SOCK_CLOEXEC = 0o2000000;
const EFD_CLOEXEC = 0o2000000, EFD_NONBLOCK = 0o4000;
const POLLIN = 1;
const EPERM = 1, ENOENT = 2, EINTR = 4, EAGAIN = 11, EACCES = 13, EBUSY = 16, EINVAL = 22, ENODEV = 19;
/** `struct ifreq`: the name (16 bytes), then a union (flags, MTU, ...). */
const IFREQ = 40;
/** Longest interface name (IFNAMSIZ less the terminating zero). */
const MAX_NAME = 15;

/** The message for a process without CAP_NET_ADMIN. */
export const NEEDS_CAP_NET_ADMIN = "tun mode needs CAP_NET_ADMIN (run as root or grant the capability)";

/** Why a TUN device could not be opened or set up; the message says what to do. */
export class TunError extends Error {
  override name = "TunError";
}

type Libc = Deno.DynamicLibrary<{
  open: { parameters: ["buffer", "i32"]; result: "i32" };
  ioctl: { parameters: ["i32", "u64", "buffer"]; result: "i32" };
  socket: { parameters: ["i32", "i32", "i32"]; result: "i32" };
  eventfd: { parameters: ["u32", "i32"]; result: "i32" };
  read: { parameters: ["i32", "buffer", "usize"]; result: "isize" };
  write: { parameters: ["i32", "buffer", "usize"]; result: "isize" };
  close: { parameters: ["i32"]; result: "i32" };
  poll: { parameters: ["buffer", "u64", "i32"]; result: "i32"; nonblocking: true };
  __errno_location: { parameters: []; result: "pointer" };
}>;

let libc: Libc | null = null;

function openLibc(): Libc {
  libc ??= Deno.dlopen("libc.so.6", {
    open: { parameters: ["buffer", "i32"], result: "i32" },
    ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
    socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
    eventfd: { parameters: ["u32", "i32"], result: "i32" },
    read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
    write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
    close: { parameters: ["i32"], result: "i32" },
    poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
    __errno_location: { parameters: [], result: "pointer" },
  }) as Libc;
  return libc;
}

function errno(lib: Libc): number {
  const p = lib.symbols.__errno_location();
  return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
}

/** An interface name as the kernel takes it, or a TunError. */
function checkName(name: string): Uint8Array {
  const bytes = new TextEncoder().encode(name);
  if (
    bytes.length === 0 || bytes.length > MAX_NAME || /[\s/:%]/.test(name) || name === "." || name === ".."
  ) {
    throw new TunError(
      `${JSON.stringify(name)} is not an interface name (1 to ${MAX_NAME} bytes, no spaces, "/", ":" or "%")`,
    );
  }
  return bytes;
}

/** Options of {@link TunDevice.open}. */
export interface TunDeviceOptions {
  /** The interface's MTU (default 1500). */
  mtu?: number;
}

/** Counters of a {@link TunDevice}. */
export interface TunDeviceStats {
  /** Packets read from the interface. */
  packetsIn: number;
  /** Packets written to it. */
  packetsOut: number;
  /** Packets the kernel refused (each such write is dropped). */
  writeFailures: number;
  /** Reads that failed with something other than "nothing waiting". */
  readErrors: number;
}

/** One open TUN interface. */
export class TunDevice {
  /** The interface's name. */
  readonly name: string;
  /** Its MTU. */
  readonly mtu: number;
  readonly #lib: Libc;
  readonly #fd: number;
  readonly #wakeFd: number;
  /** Two `struct pollfd`s: the device, then the eventfd. */
  readonly #pollFds = new Uint8Array(16);
  readonly #pollView = new DataView(this.#pollFds.buffer);
  #waiting = false;
  #closed = false;
  #fdsClosed = false;
  readonly #stats: TunDeviceStats = { packetsIn: 0, packetsOut: 0, writeFailures: 0, readErrors: 0 };

  private constructor(lib: Libc, fd: number, wakeFd: number, name: string, mtu: number) {
    this.#lib = lib;
    this.#fd = fd;
    this.#wakeFd = wakeFd;
    this.name = name;
    this.mtu = mtu;
    this.#pollView.setInt32(0, fd, true);
    this.#pollView.setInt32(8, wakeFd, true);
  }

  /**
   * Creates (or attaches to) the TUN interface `name`, sets its MTU and brings it up.
   *
   * @throws {TunError} Off Linux, without FFI permission, without CAP_NET_ADMIN, without
   * `/dev/net/tun`, for a bad name, or when the name is taken by an interface of another kind.
   */
  static open(name: string, options: TunDeviceOptions = {}): TunDevice {
    if (Deno.build.os !== "linux") throw new TunError("tun mode works on Linux only");
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
      throw new TunError("tun mode opens the device through libc: it needs FFI permission (--allow-ffi)");
    }
    const mtu = options.mtu ?? 1500;
    if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65_535) {
      throw new TunError(`the TUN MTU must be an integer from 576 to 65535, not ${mtu}`);
    }
    const nameBytes = checkName(name);
    const lib = openLibc();
    const fd = lib.symbols.open(new TextEncoder().encode("/dev/net/tun\0"), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      const e = errno(lib);
      if (e === EPERM || e === EACCES) throw new TunError(NEEDS_CAP_NET_ADMIN);
      if (e === ENOENT || e === ENODEV) {
        throw new TunError(
          "/dev/net/tun is missing: load the tun module (modprobe tun), or pass the device into the container",
        );
      }
      throw new TunError(`cannot open /dev/net/tun (errno ${e})`);
    }
    const fail = (message: string): never => {
      lib.symbols.close(fd);
      throw new TunError(message);
    };
    const req = new Uint8Array(IFREQ);
    req.set(nameBytes);
    new DataView(req.buffer).setUint16(16, IFF_TUN | IFF_NO_PI, true);
    if (lib.symbols.ioctl(fd, BigInt(TUNSETIFF), req) < 0) {
      const e = errno(lib);
      if (e === EPERM || e === EACCES) fail(NEEDS_CAP_NET_ADMIN);
      if (e === EBUSY) fail(`interface ${name} is in use (another process holds it)`);
      if (e === EINVAL) fail(`interface ${name} exists and is not a TUN interface`);
      fail(`cannot create TUN interface ${name} (errno ${e})`);
    }
    const setup = configure(lib, nameBytes, mtu);
    if (setup) fail(`TUN interface ${name}: ${setup}`);
    const wakeFd = lib.symbols.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wakeFd < 0) fail(`cannot make an eventfd (errno ${errno(lib)})`);
    return new TunDevice(lib, fd, wakeFd, name, mtu);
  }

  /** Counters. */
  get stats(): TunDeviceStats {
    return { ...this.#stats };
  }

  /**
   * Waits until a packet can be read, the device is closed, or `timeoutMs` passes. Resolves
   * false once closed. One wait at a time.
   */
  async wait(timeoutMs: number): Promise<boolean> {
    if (this.#closed) return false;
    if (this.#waiting) throw new Error("TunDevice.wait: a wait is already pending");
    this.#waiting = true;
    this.#pollView.setInt16(4, POLLIN, true);
    this.#pollView.setInt16(12, POLLIN, true);
    try {
      await this.#lib.symbols.poll(this.#pollFds, 2n, Math.max(0, Math.round(timeoutMs)));
    } finally {
      this.#waiting = false;
    }
    if (this.#closed) {
      this.#closeFds();
      return false;
    }
    return true;
  }

  /**
   * Reads one packet into `buf` (which should hold `mtu` bytes). Returns its length, or 0 when
   * none is waiting (or the device is closed).
   */
  read(buf: Uint8Array): number {
    if (this.#closed) return 0;
    for (;;) {
      const n = Number(this.#lib.symbols.read(this.#fd, buf, BigInt(buf.length)));
      if (n > 0) {
        this.#stats.packetsIn++;
        return n;
      }
      if (n === 0) return 0;
      const e = errno(this.#lib);
      if (e === EINTR) continue;
      if (e !== EAGAIN) this.#stats.readErrors++;
      return 0;
    }
  }

  /** Writes one IP packet; false if the kernel refused it (counted). */
  write(packet: Uint8Array): boolean {
    if (this.#closed) return false;
    const n = Number(this.#lib.symbols.write(this.#fd, packet, BigInt(packet.length)));
    if (n === packet.length) {
      this.#stats.packetsOut++;
      return true;
    }
    this.#stats.writeFailures++;
    return false;
  }

  /** Closes the device (the interface goes away); a pending wait resolves false. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#waiting) {
      // Wake the poll; its thread must be done with the descriptors before they are closed.
      this.#lib.symbols.write(this.#wakeFd, new BigUint64Array([1n]), 8n);
    } else this.#closeFds();
  }

  #closeFds(): void {
    if (this.#fdsClosed) return;
    this.#fdsClosed = true;
    this.#lib.symbols.close(this.#fd);
    this.#lib.symbols.close(this.#wakeFd);
  }
}

/** Sets the MTU and brings the link up; returns why not, or null. */
function configure(lib: Libc, name: Uint8Array, mtu: number): string | null {
  const sock = lib.symbols.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return `cannot make a socket to configure it (errno ${errno(lib)})`;
  try {
    const req = new Uint8Array(IFREQ);
    const view = new DataView(req.buffer);
    req.set(name);
    view.setInt32(16, mtu, true);
    if (lib.symbols.ioctl(sock, BigInt(SIOCSIFMTU), req) < 0) {
      const e = errno(lib);
      return e === EPERM ? NEEDS_CAP_NET_ADMIN : `cannot set the MTU to ${mtu} (errno ${e})`;
    }
    req.fill(0, 16);
    if (lib.symbols.ioctl(sock, BigInt(SIOCGIFFLAGS), req) < 0) {
      return `cannot read its flags (errno ${errno(lib)})`;
    }
    view.setUint16(16, view.getUint16(16, true) | IFF_UP, true);
    if (lib.symbols.ioctl(sock, BigInt(SIOCSIFFLAGS), req) < 0) {
      const e = errno(lib);
      return e === EPERM ? NEEDS_CAP_NET_ADMIN : `cannot bring it up (errno ${e})`;
    }
    return null;
  } finally {
    lib.symbols.close(sock);
  }
}
