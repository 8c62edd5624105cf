/**
 * Resource use of a process from /proc: resident memory (now and peak) and CPU seconds
 * (user + system, all threads).
 * @module
 */

const TICKS_PER_SECOND = 100;

/** What {@link processUsage} reports. */
export interface ProcessUsage {
  /** Resident memory now (VmRSS), bytes. */
  rss: number;
  /** The highest resident memory so far (VmHWM), bytes. */
  peakRss: number;
  /** utime + stime, seconds. */
  cpuSeconds: number;
}

/** RSS, peak RSS in bytes and CPU seconds of process `pid` (Linux). */
export function processUsage(pid: number): ProcessUsage {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
  // Fields after the command name (which may contain spaces) start at state, field 3.
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
  return { rss: kib("VmRSS"), peakRss: kib("VmHWM"), cpuSeconds };
}
