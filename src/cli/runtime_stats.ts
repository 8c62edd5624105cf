/**
 * What the `wirescope` command prints on SIGUSR2 (one `wirescope: stats {...}` line on stderr), for
 * operators and the soak (`deno task soak`): the process's memory and descriptors, the wasm
 * cores' linear memory, the proxy's counters, and, when counting was switched on at start
 * (`WIRESCOPE_COUNT_TIMERS=1`), the timers of `setTimeout`/`setInterval` that are pending.
 * @module
 */
import type { ProxyHandle } from "../proxy/proxy.ts";

/** Counts pending timers of the global `setTimeout`/`setInterval` (see {@linkcode countTimers}). */
export interface TimerCounter {
  /** Timeouts not yet fired or cleared, plus intervals not yet cleared. */
  pending(): number;
  /** Puts the original functions back. */
  uninstall(): void;
}

/**
 * Wraps the global timer functions to count pending timers. Only timers made through the globals
 * are seen (not those node: modules make internally). Costs one Set operation per call.
 */
export function countTimers(): TimerCounter {
  const g = globalThis as unknown as Record<string, unknown>;
  const original = {
    setTimeout: globalThis.setTimeout,
    setInterval: globalThis.setInterval,
    clearTimeout: globalThis.clearTimeout,
    clearInterval: globalThis.clearInterval,
  };
  const live = new Set<unknown>();
  g.setTimeout = (fn: unknown, ms?: number, ...args: unknown[]) => {
    const id: unknown = original.setTimeout(
      (...a: unknown[]) => {
        live.delete(id);
        if (typeof fn === "function") fn(...a);
      },
      ms,
      ...args,
    );
    live.add(id);
    return id;
  };
  g.setInterval = (fn: unknown, ms?: number, ...args: unknown[]) => {
    const id: unknown = original.setInterval(fn as (...a: unknown[]) => void, ms, ...args);
    live.add(id);
    return id;
  };
  g.clearTimeout = (id?: unknown) => {
    live.delete(id);
    original.clearTimeout(id as number);
  };
  g.clearInterval = (id?: unknown) => {
    live.delete(id);
    original.clearInterval(id as number);
  };
  return {
    pending: () => live.size,
    uninstall: () => Object.assign(g, original),
  };
}

/** One snapshot of the running command. */
export interface RuntimeStats {
  /** `Date.now()` when taken. */
  time: number;
  rssBytes: number;
  heapUsedBytes: number;
  externalBytes: number;
  /** Open descriptors (`/proc/self/fd`); -1 where that cannot be read. */
  openFds: number;
  /** Linear memory of each WireGuard mode's wasm core, in bytes. */
  wasmMemoryBytes: number[];
  /** Pending global timers, or -1 when not counted. */
  timers: number;
  /** Flows that ended, and of those the ones with an error. */
  flows: number;
  errorFlows: number;
  proxy: ReturnType<ProxyHandle["stats"]>;
}

/** Takes a snapshot. */
export function runtimeStats(
  proxy: ProxyHandle,
  counts: { flows: number; errorFlows: number },
  timers: TimerCounter | null,
): RuntimeStats {
  const memory = Deno.memoryUsage();
  let openFds = -1;
  try {
    openFds = [...Deno.readDirSync("/proc/self/fd")].length;
  } catch { /* not Linux, or no read permission */ }
  return {
    time: Date.now(),
    rssBytes: memory.rss,
    heapUsedBytes: memory.heapUsed,
    externalBytes: memory.external,
    openFds,
    wasmMemoryBytes: proxy.wireguard.map((l) => l.stats().memoryBytes),
    timers: timers?.pending() ?? -1,
    flows: counts.flows,
    errorFlows: counts.errorFlows,
    proxy: proxy.stats(),
  };
}
