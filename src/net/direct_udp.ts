/**
 * Batched datagram I/O on the descriptor of a Deno UDP socket, through libc's `recvmmsg` and
 * `sendmmsg` (FFI), on the calling thread.
 *
 * Why: Deno's datagram API costs one async op, one promise and one copy per datagram each way.
 * The listener keeps one `receive()` pending as its wake-up (Deno owns the socket and its epoll
 * registration), then takes whatever else has arrived with one non-blocking `recvmmsg`, and
 * sends everything the core produced in one pass with one `sendmmsg`. No thread hop: a datagram
 * that arrives is answered on the same turn of the event loop.
 *
 * Runs of datagrams to one endpoint with one size (a TCP transfer's full segments) go out as one
 * UDP GSO message (`UDP_SEGMENT`, Linux 4.18+): the kernel carries the run through its stack
 * once and cuts it into datagrams at the end, which roughly halves the cost of sending per
 * datagram. Where the kernel refuses GSO, datagrams go one by one.
 *
 * Linux only (x86_64 and aarch64 share the LP64 layouts below), and only with FFI permission;
 * {@link DirectUdp.open} says why not otherwise, and the listener falls back to its socket worker.
 *
 * Endpoints are the core's 18 bytes: 16 address bytes (IPv4 as ::ffff:a.b.c.d) and a
 * little-endian port.
 * @module
 */
import { findUdpSocketFd } from "./socket_buffers.ts";

const AF_INET = 2, AF_INET6 = 10;
const SOL_UDP = 17, UDP_SEGMENT = 103;
const EIO = 5, EINVAL = 22;
const MSG_DONTWAIT = 0x40, MSG_TRUNC = 0x20;
const EAGAIN = 11, EINTR = 4;
/** `struct mmsghdr` (a `struct msghdr` of 56 bytes, `msg_len`, padding). */
const MMSGHDR = 64;
const IOVEC = 16;
/** Room for a `sockaddr_in6` (28 bytes). */
const NAME = 32;

/** Datagrams taken per `recvmmsg`. */
const RECV_BATCH = 32;
/** Bytes per receive slot: a jumbo-frame datagram fits; a larger one is dropped and counted. */
const RECV_SLOT = 9216;
/** Datagrams per `sendmmsg`. */
const SEND_BATCH = 64;
/** Bytes of the send staging area; datagrams are copied in back to back. */
const SEND_BYTES = 256 * 1024;
/** Most datagrams in one GSO message (the kernel's UDP_MAX_SEGMENTS). */
const GSO_SEGMENTS = 64;
/** Most bytes in one GSO message (an IP packet's 64 KiB, less headers, with room to spare). */
const GSO_BYTES = 63 * 1024;
/** `struct cmsghdr` (len, level, type) + a u16, padded: CMSG_SPACE(2). */
const CMSG = 24;

type Libc = Deno.DynamicLibrary<{
  recvmmsg: { parameters: ["i32", "buffer", "u32", "i32", "pointer"]; result: "i32" };
  sendmmsg: { parameters: ["i32", "buffer", "u32", "i32"]; result: "i32" };
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"]; result: "i32" };
  __errno_location: { parameters: []; result: "pointer" };
}>;

let libc: Libc | null = null;

function openLibc(): Libc {
  libc ??= Deno.dlopen("libc.so.6", {
    recvmmsg: { parameters: ["i32", "buffer", "u32", "i32", "pointer"], result: "i32" },
    sendmmsg: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
    setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
    __errno_location: { parameters: [], result: "pointer" },
  }) as Libc;
  return libc;
}

function address(buf: Uint8Array): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}

/** Writes a 64-bit little-endian value from a number (exact below 2^53): no BigInt per call. */
function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, value % 0x1_0000_0000, true);
  view.setUint32(at + 4, Math.floor(value / 0x1_0000_0000), true);
}

/** Counters of a {@link DirectUdp}. */
export interface DirectUdpStats {
  /** Datagrams handed to the kernel. */
  sent: number;
  /** Datagrams the kernel refused (socket buffer full, unreachable, ...). */
  sendFailures: number;
  /** Datagrams dropped on receipt because they were larger than a receive slot. */
  truncated: number;
  /** Messages that carried several datagrams (UDP GSO). */
  gsoMessages: number;
}

/** Batched I/O on one UDP socket's descriptor. */
export class DirectUdp {
  /** Datagrams one {@link DirectUdp.receive} takes at most. */
  static readonly RECEIVE_BATCH = RECV_BATCH;
  readonly #fd: number;
  readonly #lib: Libc;
  readonly #v6: boolean;
  #errno: Deno.UnsafePointerView;

  // Receive side: RECV_BATCH headers, iovecs, names and slots, wired together once.
  readonly #rHdr = new Uint8Array(RECV_BATCH * MMSGHDR);
  readonly #rHdrView = new DataView(this.#rHdr.buffer);
  readonly #rNames = new Uint8Array(RECV_BATCH * NAME);
  readonly #rNameView = new DataView(this.#rNames.buffer);
  readonly #rIov = new Uint8Array(RECV_BATCH * IOVEC);
  readonly #rData = new Uint8Array(RECV_BATCH * RECV_SLOT);
  readonly #ep = new Uint8Array(18);

  // Send side: headers, iovecs and names per queued datagram; bytes in the staging area.
  readonly #sHdr = new Uint8Array(SEND_BATCH * MMSGHDR);
  readonly #sHdrView = new DataView(this.#sHdr.buffer);
  readonly #sNames = new Uint8Array(SEND_BATCH * NAME);
  readonly #sNameView = new DataView(this.#sNames.buffer);
  readonly #sIov = new Uint8Array(SEND_BATCH * IOVEC);
  readonly #sIovView = new DataView(this.#sIov.buffer);
  readonly #sData = new Uint8Array(SEND_BYTES);
  /** The staging area's address as a number (user-space addresses are far below 2^53). */
  readonly #sDataAddr: number;
  /** Per message: the GSO control message (its segment size is written at flush). */
  readonly #sCtl = new Uint8Array(SEND_BATCH * CMSG);
  readonly #sCtlView = new DataView(this.#sCtl.buffer);
  /** Per message: datagrams in it, their size (all but the last), the last one's, all bytes. */
  readonly #segs = new Int32Array(SEND_BATCH);
  readonly #segSize = new Int32Array(SEND_BATCH);
  readonly #lastLen = new Int32Array(SEND_BATCH);
  readonly #msgBytes = new Int32Array(SEND_BATCH);
  /** The endpoint of the last message, to extend it. */
  readonly #lastTo = new Uint8Array(18);
  #gso: boolean;
  /** Messages (each one datagram, or a GSO run of them) and datagrams queued; bytes staged. */
  #queued = 0;
  #datagrams = 0;
  #used = 0;

  readonly #stats: DirectUdpStats = { sent: 0, sendFailures: 0, truncated: 0, gsoMessages: 0 };

  private constructor(fd: number, lib: Libc, v6: boolean) {
    this.#fd = fd;
    this.#lib = lib;
    this.#v6 = v6;
    this.#errno = new Deno.UnsafePointerView(lib.symbols.__errno_location()!);
    const rNames = address(this.#rNames), rIov = address(this.#rIov), rData = address(this.#rData);
    const iov = new DataView(this.#rIov.buffer);
    for (let i = 0; i < RECV_BATCH; i++) {
      iov.setBigUint64(i * IOVEC, rData + BigInt(i * RECV_SLOT), true);
      iov.setBigUint64(i * IOVEC + 8, BigInt(RECV_SLOT), true);
      const h = i * MMSGHDR;
      this.#rHdrView.setBigUint64(h, rNames + BigInt(i * NAME), true);
      this.#rHdrView.setBigUint64(h + 16, rIov + BigInt(i * IOVEC), true);
      this.#rHdrView.setBigUint64(h + 24, 1n, true);
    }
    const sNames = address(this.#sNames), sIov = address(this.#sIov);
    this.#sDataAddr = Number(address(this.#sData));
    const sCtl = address(this.#sCtl);
    for (let i = 0; i < SEND_BATCH; i++) {
      this.#sCtlView.setBigUint64(i * CMSG, 18n, true); // CMSG_LEN(2)
      this.#sCtlView.setInt32(i * CMSG + 8, SOL_UDP, true);
      this.#sCtlView.setInt32(i * CMSG + 12, UDP_SEGMENT, true);
    }
    // The kernel knows UDP GSO when it accepts the socket option (0: no segmentation unless a
    // message asks for it).
    this.#gso = lib.symbols.setsockopt(fd, SOL_UDP, UDP_SEGMENT, new Int32Array([0]), 4) === 0;
    for (let i = 0; i < SEND_BATCH; i++) {
      const h = i * MMSGHDR;
      this.#sHdrView.setBigUint64(h, sNames + BigInt(i * NAME), true);
      this.#sHdrView.setUint32(h + 8, v6 ? 28 : 16, true);
      this.#sHdrView.setBigUint64(h + 16, sIov + BigInt(i * IOVEC), true);
      this.#sHdrView.setBigUint64(h + 24, 1n, true);
      // Each message's control buffer is fixed; its length (0 or CMSG) says whether it is used.
      this.#sHdrView.setBigUint64(h + 32, sCtl + BigInt(i * CMSG), true);
    }
  }

  /**
   * Finds the descriptor of `socket` (a socket of this process bound to its port) and prepares
   * the buffers.
   *
   * @returns The I/O, or why it cannot be used here.
   */
  static open(socket: Deno.DatagramConn): DirectUdp | string {
    if (Deno.build.os !== "linux") return "only on Linux";
    if (Deno.build.arch !== "x86_64" && Deno.build.arch !== "aarch64") return `not on ${Deno.build.arch}`;
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
      return "no FFI permission (--allow-ffi)";
    }
    const addr = socket.addr as Deno.NetAddr;
    let fd: number | null;
    try {
      fd = findUdpSocketFd(addr.port);
    } catch (e) {
      return `cannot look through /proc: ${(e as Error).message}`;
    }
    if (fd === null) return `no UDP socket on port ${addr.port} found in /proc`;
    let lib: Libc;
    try {
      lib = openLibc();
    } catch (e) {
      return `cannot load libc: ${(e as Error).message}`;
    }
    return new DirectUdp(fd, lib, addr.hostname.includes(":"));
  }

  /** Counters (a live view). */
  get stats(): Readonly<DirectUdpStats> {
    return this.#stats;
  }

  /**
   * Takes the datagrams already waiting on the socket (up to one batch) without blocking.
   *
   * @param each Called per datagram with its source endpoint and bytes (views valid only
   *   during the call).
   * @returns How many were taken: fewer than a batch means the queue is empty now.
   */
  receive(each: (from: Uint8Array, data: Uint8Array) => void): number {
    let n: number;
    do {
      for (let i = 0; i < RECV_BATCH; i++) this.#rHdrView.setUint32(i * MMSGHDR + 8, NAME, true);
      n = this.#lib.symbols.recvmmsg(this.#fd, this.#rHdr, RECV_BATCH, MSG_DONTWAIT, null);
    } while (n < 0 && this.#errno.getInt32() === EINTR);
    if (n <= 0) return 0;
    const ep = this.#ep, names = this.#rNameView;
    for (let i = 0; i < n; i++) {
      const h = i * MMSGHDR;
      const len = this.#rHdrView.getUint32(h + 56, true);
      if (this.#rHdrView.getInt32(h + 48, true) & MSG_TRUNC) {
        this.#stats.truncated++;
        continue;
      }
      const name = i * NAME;
      const family = names.getUint16(name, true);
      if (family === AF_INET) {
        ep.fill(0, 0, 10);
        ep[10] = 0xff;
        ep[11] = 0xff;
        ep.set(this.#rNames.subarray(name + 4, name + 8), 12);
      } else if (family === AF_INET6) {
        ep.set(this.#rNames.subarray(name + 8, name + 24), 0);
      } else continue;
      const port = names.getUint16(name + 2, false);
      ep[16] = port & 0xff;
      ep[17] = port >> 8;
      each(ep, this.#rData.subarray(i * RECV_SLOT, i * RECV_SLOT + len));
    }
    return n;
  }

  /**
   * Copies a datagram into the send batch; {@link DirectUdp.flush} sends it (a full batch is
   * sent at once).
   */
  queue(to: Uint8Array, data: Uint8Array): void {
    const len = data.length;
    if (len > GSO_BYTES) {
      this.#stats.sendFailures++;
      return;
    }
    if (this.#used + len > SEND_BYTES) this.flush();
    // Extend the last message when this datagram continues its run: same endpoint, not larger
    // than the run's size, and the run's last datagram was a full one.
    const m = this.#queued - 1;
    if (
      this.#gso && m >= 0 && this.#segs[m]! < GSO_SEGMENTS && len <= this.#segSize[m]! &&
      this.#lastLen[m] === this.#segSize[m] && this.#msgBytes[m]! + len <= GSO_BYTES && this.#sameEndpoint(to)
    ) {
      this.#sData.set(data, this.#used);
      this.#used += len;
      this.#segs[m]!++;
      this.#lastLen[m] = len;
      this.#msgBytes[m]! += len;
      setU64(this.#sIovView, m * IOVEC + 8, this.#msgBytes[m]!);
      this.#datagrams++;
      return;
    }
    if (this.#queued === SEND_BATCH) this.flush();
    const i = this.#queued++;
    this.#datagrams++;
    this.#segs[i] = 1;
    this.#segSize[i] = len;
    this.#lastLen[i] = len;
    this.#msgBytes[i] = len;
    this.#lastTo.set(to.subarray(0, 18));
    const name = i * NAME, names = this.#sNameView;
    const port = to[16]! | (to[17]! << 8);
    if (this.#v6) {
      names.setUint16(name, AF_INET6, true);
      names.setUint16(name + 2, port, false);
      names.setUint32(name + 4, 0);
      this.#sNames.set(to.subarray(0, 16), name + 8);
      names.setUint32(name + 24, 0);
    } else {
      names.setUint16(name, AF_INET, true);
      names.setUint16(name + 2, port, false);
      this.#sNames.set(to.subarray(12, 16), name + 4);
    }
    this.#sData.set(data, this.#used);
    setU64(this.#sIovView, i * IOVEC, this.#sDataAddr + this.#used);
    setU64(this.#sIovView, i * IOVEC + 8, len);
    this.#used += data.length;
  }

  #sameEndpoint(to: Uint8Array): boolean {
    const last = this.#lastTo;
    for (let k = 0; k < 18; k++) if (to[k] !== last[k]) return false;
    return true;
  }

  /** Datagrams queued and not yet sent. */
  get queued(): number {
    return this.#datagrams;
  }

  /**
   * Sends the queued datagrams. One the kernel refuses (its buffer full, no route) is counted
   * and skipped: UDP may lose datagrams, and the tunnel's TCP sends again.
   */
  flush(): void {
    const count = this.#queued;
    const hdrs = this.#sHdrView;
    for (let m = 0; m < count; m++) {
      const h = m * MMSGHDR;
      if (this.#segs[m]! > 1) {
        this.#sCtlView.setUint16(m * CMSG + 16, this.#segSize[m]!, true);
        setU64(hdrs, h + 40, CMSG);
        this.#stats.gsoMessages++;
      } else {
        setU64(hdrs, h + 40, 0);
      }
    }
    let at = 0;
    while (at < count) {
      const hdr = at === 0 ? this.#sHdr : this.#sHdr.subarray(at * MMSGHDR);
      const n = this.#lib.symbols.sendmmsg(this.#fd, hdr, count - at, MSG_DONTWAIT);
      if (n > 0) {
        for (let m = at; m < at + n; m++) this.#stats.sent += this.#segs[m]!;
        at += n;
        continue;
      }
      const errno = n < 0 ? this.#errno.getInt32() : 0;
      if (errno === EINTR) continue;
      if (errno === EAGAIN) {
        // The socket buffer is full: what is left would fail the same way now.
        for (let m = at; m < count; m++) this.#stats.sendFailures += this.#segs[m]!;
        break;
      }
      // The kernel refuses GSO where the route's device cannot take it (EIO): from now on,
      // one datagram per message. This run is lost (the tunnel's TCP sends it again).
      if (this.#segs[at]! > 1 && (errno === EIO || errno === EINVAL)) this.#gso = false;
      this.#stats.sendFailures += this.#segs[at]!;
      at++;
    }
    this.#queued = 0;
    this.#datagrams = 0;
    this.#used = 0;
  }
}
