/**
 * `openTun()`: a TUN interface whose IP packets go straight into a wasm core in the `tun` role
 * (the server stack, no WireGuard), so whatever is routed into the interface (a route, a policy
 * rule, a network namespace whose default route it is) arrives as {@link TunnelConn}s and UDP
 * datagrams, exactly as tunneled traffic does in WireGuard mode.
 *
 * The driver is {@link StackDriver}'s (one timer, connections, datagrams) fed by a
 * {@link TunDevice}: a `poll` on a libc thread wakes it, then it reads what has arrived in
 * batches on this thread and writes each packet the core produces as it is drained.
 * @module
 */
import { type CoreStats, WasmCore } from "../core/wasm_core.ts";
import type { TunnelPeer } from "./tunnel_conn.ts";
import { type DriverLog, StackDriver, type StackDriverStats } from "./stack_driver.ts";
import { TunDevice, type TunDeviceStats } from "./tun_device.ts";

/** Options of {@link openTun}. */
export interface OpenTunOptions {
  /** The interface's name (default `wirescope0`). */
  name?: string;
  /** Its MTU (default 1500): the largest packet either way. */
  mtu?: number;
  /** Largest per-connection TCP buffers in bytes (default 512 KiB each way). */
  tcpBuffer?: number;
  /** Most bytes all TCP buffers together may take (default 1 GiB). */
  bufferBudget?: number;
  /** Most TCP connections at once (default 8192; a reset beyond). */
  maxConnections?: number;
  /** Most TCP connections not yet established (default 2048; further SYNs are dropped). */
  maxHalfOpen?: number;
  /** Most UDP conversations at once (default 2048; datagrams of further ones are dropped). */
  maxUdpConversations?: number;
  /** Seconds after which a UDP conversation with no datagram from its client ends (default 60). */
  udpTimeoutSeconds?: number;
  /** Datagrams queued in `datagrams` before new ones are dropped (default 1024). */
  datagramQueue?: number;
  /** Log sink for warnings (default: console.error). */
  onLog?: DriverLog;
}

/** Counters: the core's, the driver's and the device's. */
export interface TunStats extends CoreStats, StackDriverStats, TunDeviceStats {}

/** Packets read per wake-up before other work gets a turn. */
const READ_BATCH = 256;
/** The longest the poll waits before looking again (ms); closing wakes it at once. */
const POLL_MS = 1000;
/** What connections and datagrams from the device carry as their peer. */
const NO_PEER: TunnelPeer = { publicKey: "", endpoint: null };

/** A running TUN mode data plane. Iterate it (or `accept()`) for connections. */
export class TunListener extends StackDriver {
  /** The interface's name. */
  readonly name: string;
  readonly #device: TunDevice;
  readonly #buf: Uint8Array;

  /** Use {@link openTun}. */
  constructor(options: OpenTunOptions = {}) {
    const onLog = options.onLog ?? ((level, msg) => console.error(`wirescope tun ${level}: ${msg}`));
    const device = TunDevice.open(
      options.name ?? "wirescope0",
      options.mtu !== undefined ? { mtu: options.mtu } : {},
    );
    let core: WasmCore;
    try {
      const maxConnections = options.maxConnections ?? 8192;
      core = new WasmCore({
        privateKey: new Uint8Array(32),
        role: "tun",
        now: performance.now(),
        mtu: device.mtu,
        rxBuffer: options.tcpBuffer ?? 512 * 1024,
        txBuffer: options.tcpBuffer ?? 512 * 1024,
        ...(options.bufferBudget !== undefined ? { bufferBudget: options.bufferBudget } : {}),
        maxConnections,
        // Everything from the device is one "peer": its caps are the whole device's.
        maxConnectionsPerPeer: maxConnections,
        ...(options.maxHalfOpen !== undefined ? { maxHalfOpenPerPeer: options.maxHalfOpen } : {}),
        ...(options.maxUdpConversations !== undefined
          ? { maxUdpConversationsPerPeer: options.maxUdpConversations }
          : {}),
        ...(options.udpTimeoutSeconds !== undefined ? { udpTimeoutSeconds: options.udpTimeoutSeconds } : {}),
        onOutput: (line) => onLog("warn", `core: ${line}`),
      });
    } catch (e) {
      device.close();
      throw e;
    }
    super(core, onLog, options.datagramQueue ?? 1024);
    this.name = device.name;
    this.#device = device;
    this.#buf = new Uint8Array(device.mtu);
    this.#readLoop();
    this.settle();
  }

  /** Counters: connections, packets, drops. */
  stats(): TunStats {
    return { ...this.core.stats(), ...this.driverStats(), ...this.#device.stats };
  }

  /** Stops: resets open connections, stops the timer, closes the device (the interface goes). */
  close(): void {
    if (!this.closeStack()) return;
    this.#device.close();
    this.closedDone();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Waits for packets, then takes them in batches. */
  async #readLoop(): Promise<void> {
    const device = this.#device, buf = this.#buf;
    while (!this.closing) {
      if (!(await device.wait(POLL_MS))) return;
      for (let i = 0; i < READ_BATCH && !this.closing; i++) {
        const n = device.read(buf);
        if (n === 0) break;
        const now = performance.now();
        this.guarded("packet", () => this.core.ipInput(buf.subarray(0, n), now));
      }
      this.queueSettle();
    }
  }

  protected peerOf(): TunnelPeer {
    return NO_PEER;
  }

  protected flushOutput(): void {
    // Packets are written as they are drained.
  }

  /** @internal */
  override ipPacket(_peer: number, data: Uint8Array): void {
    this.#device.write(data);
  }
}

/**
 * Opens a TUN interface (Linux, CAP_NET_ADMIN) and serves what is routed into it, like
 * `listenWireGuard()` serves its peers (synchronous: the interface is up when it returns).
 *
 * @throws {TunError} When the interface cannot be made (the message says why: no capability,
 * no `/dev/net/tun`, no FFI permission, a name in use).
 *
 * @example
 * ```ts ignore
 * const tun = openTun({ name: "wirescope0" });
 * // then, as root: ip route add 198.51.100.0/24 dev wirescope0
 * for await (const conn of tun) conn.readable.pipeTo(conn.writable); // echo
 * ```
 */
export function openTun(options: OpenTunOptions = {}): TunListener {
  return new TunListener(options);
}
