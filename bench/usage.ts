/**
 * Resource use of a process from /proc: resident memory and CPU seconds (user + system).
 * @module
 */

const TICKS_PER_SECOND = 100;

/** RSS in bytes and CPU seconds of process `pid` (Linux). */
export function processUsage(pid: number): { rss: number; cpuSeconds: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
  // Fields after the command name (which may contain spaces) start at state, field 3.
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
  return { rss, cpuSeconds };
}
