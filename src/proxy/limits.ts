/**
 * Limits on client connections, in both modes: how many may be open per client and in total, how
 * long a connection may go without a byte either way (idle timeout), and how long a client may
 * take to send a complete HTTP request head (head timeout, enforced by the layer driver, see
 * `layer_runner.ts`). Without them a silent socket or a half-sent head stayed open for good:
 * 3,000 of them held 426 MB and 3,000 descriptors.
 *
 * Log lines about refusals and timeouts are rate-limited (one line per kind per interval, with the
 * count of the others); every event is counted in {@link LimitStats}.
 * @module
 */
import type { ByteStream } from "./byte_stream.ts";
import type { LogEvent } from "../flows/flow.ts";
import type { HeadTimeout } from "./layer_runner.ts";

/**
 * Default head timeout (ms): a request head is a few hundred bytes to a few KiB and arrives in one
 * round trip; 30 s leaves room for a slow mobile link while a client that trickles a head (or
 * opens a connection and never speaks) is let go. It also ends idle keep-alive connections
 * between requests (nginx: 60 s/75 s; clients reopen as needed).
 */
export const DEFAULT_HEAD_TIMEOUT = 30_000;
/**
 * Default idle timeout (ms): 10 minutes without a byte either way. Long enough for push channels
 * and WebSockets that send a heartbeat every few minutes (a proxy that cut them sooner would
 * change how the device behaves, which is what one is trying to watch), short enough that
 * abandoned connections are reclaimed; the connection caps bound what they can hold meanwhile.
 */
export const DEFAULT_IDLE_TIMEOUT = 600_000;
/**
 * Default cap on open connections per client (a WireGuard peer, or an explicit-proxy client's
 * address): a phone uses a few hundred at most; a load test from one client up to a few thousand.
 */
export const DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 4096;
/** The default total cap when the open-file limit allows it. */
export const MAX_CONNECTIONS_DEFAULT_CEILING = 16_384;

/** Interval of the rate-limited log lines (ms). */
const LOG_INTERVAL = 10_000;

/**
 * The default cap on open client connections in total: {@link MAX_CONNECTIONS_DEFAULT_CEILING},
 * or less so that two descriptors per connection (client and server) fit in the open-file limit
 * with room to spare, so the cap is hit before the descriptors run out.
 *
 * @param limitsText The text of /proc/self/limits (read when not given).
 */
export function defaultMaxConnections(limitsText?: string): number {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = Deno.readTextFileSync("/proc/self/limits");
    } catch {
      return MAX_CONNECTIONS_DEFAULT_CEILING;
    }
  }
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(text);
  if (!m || m[1] === "unlimited") return MAX_CONNECTIONS_DEFAULT_CEILING;
  return Math.max(16, Math.min(MAX_CONNECTIONS_DEFAULT_CEILING, Math.floor((Number(m[1]) - 128) / 2)));
}

/** The limits (times in ms; 0 turns a limit off). */
export interface ClientLimits {
  headTimeout: number;
  idleTimeout: number;
  maxConnectionsPerClient: number;
  maxConnections: number;
}

/** Counters of {@link ConnectionLimiter}. */
export interface LimitStats {
  /** Connections refused because their client, or the proxy, had as many open as allowed. */
  refusedByCap: number;
  /** Connections closed because no complete request head came in time. */
  closedByHeadTimeout: number;
  /** Connections closed after a time without a byte either way. */
  closedByIdleTimeout: number;
}

/** A connection that was admitted: guard its stream, release it when the connection is over. */
export interface Admission {
  /** `stream` with its activity watched: closed with a reset (and a clear error) when idle. */
  guard(stream: ByteStream): ByteStream;
  /** Frees the connection's place (once; later calls do nothing). */
  release(): void;
}

interface Watched {
  last: number;
  killed: Error | null;
  stream: ByteStream;
  who: string;
}

/** Admits client connections within the caps and enforces the timeouts. */
export class ConnectionLimiter {
  #limits: ClientLimits;
  #log: RateLimitedLog;
  #perClient = new Map<string, number>();
  #total = 0;
  #watched = new Set<Watched>();
  #sweep: ReturnType<typeof setInterval> | null = null;
  #stats: LimitStats = { refusedByCap: 0, closedByHeadTimeout: 0, closedByIdleTimeout: 0 };

  /**
   * @param limits The limits.
   * @param log Receives the (rate-limited) log lines.
   */
  constructor(limits: ClientLimits, log: (level: LogEvent["level"], message: string) => void) {
    this.#limits = limits;
    this.#log = new RateLimitedLog(log);
  }

  /** The limits in force. */
  get limits(): ClientLimits {
    return this.#limits;
  }

  /** Counters. */
  stats(): LimitStats {
    return { ...this.#stats };
  }

  /** Open connections of `key`'s client (for tests and diagnostics). */
  openOf(key: string): number {
    return this.#perClient.get(key) ?? 0;
  }

  /**
   * Takes a place for a new connection of the client `key` (described as `who` in log lines), or
   * returns null (counted and logged) when a cap is reached; the caller then closes it.
   */
  admit(key: string, who: string): Admission | null {
    const { maxConnections, maxConnectionsPerClient } = this.#limits;
    const mine = this.#perClient.get(key) ?? 0;
    let refusal: string | null = null;
    if (maxConnectionsPerClient > 0 && mine >= maxConnectionsPerClient) {
      refusal =
        `${mine} connections open from this client, the per-client cap (--max-connections-per-client)`;
    } else if (maxConnections > 0 && this.#total >= maxConnections) {
      refusal = `${this.#total} client connections open, the total cap (--max-connections)`;
    }
    if (refusal) {
      this.#stats.refusedByCap++;
      this.#log.line("cap", "warn", `refused a connection from ${who}: ${refusal}`);
      return null;
    }
    this.#perClient.set(key, mine + 1);
    this.#total++;
    let released = false;
    let watched: Watched | null = null;
    return {
      guard: (stream) => {
        if (this.#limits.idleTimeout <= 0) return stream;
        const w: Watched = { last: Date.now(), killed: null, stream, who };
        watched = w;
        this.#watch(w);
        return guarded(w, () => this.#unwatch(w));
      },
      release: () => {
        if (released) return;
        released = true;
        if (watched) this.#unwatch(watched);
        const n = (this.#perClient.get(key) ?? 1) - 1;
        if (n <= 0) this.#perClient.delete(key);
        else this.#perClient.set(key, n);
        this.#total--;
      },
    };
  }

  /** The head timeout for one connection of `who`, for `runLayer` (undefined when off). */
  headTimeout(who: string): HeadTimeout | undefined {
    const ms = this.#limits.headTimeout;
    if (ms <= 0) return undefined;
    return {
      ms,
      expired: ({ partial, afterRequest }) => {
        this.#stats.closedByHeadTimeout++;
        const seconds = formatSeconds(ms);
        if (partial) {
          this.#log.line(
            "head-partial",
            "warn",
            `closed a connection from ${who}: request head incomplete after ${seconds} (head timeout, --head-timeout)`,
          );
        } else {
          this.#log.line(
            "head-silent",
            "info",
            afterRequest
              ? `closed an idle keep-alive connection from ${who} after ${seconds} without a request (head timeout)`
              : `closed a connection from ${who}: no request within ${seconds} (head timeout)`,
          );
        }
      },
    };
  }

  /** Stops the idle sweeps (connections stay as they are). */
  close(): void {
    if (this.#sweep !== null) clearInterval(this.#sweep);
    this.#sweep = null;
    this.#watched.clear();
  }

  #watch(w: Watched): void {
    this.#watched.add(w);
    if (this.#sweep !== null) return;
    // Connections are closed between idleTimeout and idleTimeout + interval after their last byte.
    const interval = Math.max(20, Math.min(5000, Math.floor(this.#limits.idleTimeout / 4)));
    this.#sweep = setInterval(() => this.#sweepIdle(), interval);
    Deno.unrefTimer(this.#sweep as unknown as number);
  }

  #unwatch(w: Watched): void {
    this.#watched.delete(w);
    if (this.#watched.size === 0 && this.#sweep !== null) {
      clearInterval(this.#sweep);
      this.#sweep = null;
    }
  }

  #sweepIdle(): void {
    const limit = this.#limits.idleTimeout;
    const now = Date.now();
    for (const w of [...this.#watched]) {
      if (now - w.last < limit) continue;
      this.#unwatch(w);
      this.#stats.closedByIdleTimeout++;
      const seconds = formatSeconds(limit);
      w.killed = new Error(`no traffic for ${seconds} (idle timeout)`);
      this.#log.line(
        "idle",
        "info",
        `closed a connection from ${w.who}: no traffic either way for ${seconds} (idle timeout, --idle-timeout)`,
      );
      w.stream.close(true);
    }
  }
}

/**
 * The stream of `w` with its activity recorded: reads (asked for and answered) and writes. Once
 * the sweep closed it, reads and writes fail with the reason.
 */
/** The watch of each guarded stream, for {@link markActive}. */
const watches = new WeakMap<ByteStream, Watched>();

/**
 * Counts activity that does not pass through a guarded stream as traffic on it (a SOCKS5 UDP
 * association's datagrams keep its TCP connection from the idle timeout). No-op for others.
 */
export function markActive(stream: ByteStream): void {
  const w = watches.get(stream);
  if (w) w.last = Date.now();
}

function guarded(w: Watched, closed: () => void): ByteStream {
  const stream = w.stream;
  const guardedStream: ByteStream = {
    read() {
      w.last = Date.now();
      if (w.killed) return Promise.reject(w.killed);
      return stream.read().then(
        (chunk) => {
          if (w.killed) throw w.killed;
          w.last = Date.now();
          return chunk;
        },
        (e) => {
          throw w.killed ?? e;
        },
      );
    },
    write(data) {
      w.last = Date.now();
      if (w.killed) return Promise.reject(w.killed);
      return stream.write(data);
    },
    closeWrite() {
      return stream.closeWrite();
    },
    close(reset) {
      closed();
      stream.close(reset);
    },
  };
  watches.set(guardedStream, w);
  return guardedStream;
}

/** `30 s`, `1.5 s`, `10 min`. */
function formatSeconds(ms: number): string {
  if (ms >= 120_000 && ms % 60_000 === 0) return `${ms / 60_000} min`;
  return `${ms / 1000} s`;
}

/**
 * Log lines of one kind at most once per interval; the next line says how many were left out.
 */
export class RateLimitedLog {
  #log: (level: LogEvent["level"], message: string) => void;
  #interval: number;
  #now: () => number;
  #kinds = new Map<string, { last: number; suppressed: number }>();

  /**
   * @param log Where lines go.
   * @param interval Least time between two lines of one kind (ms).
   * @param now The clock (for tests).
   */
  constructor(
    log: (level: LogEvent["level"], message: string) => void,
    interval = LOG_INTERVAL,
    now: () => number = Date.now,
  ) {
    this.#log = log;
    this.#interval = interval;
    this.#now = now;
  }

  /** Logs `message` unless a line of `kind` went out less than an interval ago. */
  line(kind: string, level: LogEvent["level"], message: string): void {
    const now = this.#now();
    const state = this.#kinds.get(kind);
    if (state && now - state.last < this.#interval) {
      state.suppressed++;
      return;
    }
    const more = state && state.suppressed > 0
      ? ` (and ${state.suppressed} more like it in the last ${Math.round((now - state.last) / 1000)} s)`
      : "";
    this.#kinds.set(kind, { last: now, suppressed: 0 });
    this.#log(level, message + more);
  }
}
