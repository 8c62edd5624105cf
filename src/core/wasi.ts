/**
 * The few WASI preview1 functions the core module imports, supplied by the host: clocks,
 * randomness, stdout/stderr into a logger, an empty environment, and exit as an error.
 * @module
 */

/** Receives what the module writes to stdout/stderr (Rust panics land here), line by line. */
export type WasiLogger = (fd: number, line: string) => void;

const ERRNO_SUCCESS = 0;
const ERRNO_BADF = 8;
const ERRNO_INVAL = 28;

/**
 * Builds the `wasi_snapshot_preview1` import object.
 *
 * @param memory Returns the instance's memory (known only after instantiation).
 * @param log Where output lines go.
 * @returns The import namespace.
 */
export function wasiImports(
  memory: () => WebAssembly.Memory,
  log: WasiLogger,
): Record<string, (...args: never[]) => number | void> {
  const pending = ["", "", ""];
  const decoder = new TextDecoder();
  const view = () => new DataView(memory().buffer);
  return {
    clock_time_get(id: number, _precision: bigint, out: number): number {
      // 0 = realtime (boringtun's TAI64N timestamps), 1.. = monotonic.
      const ns = id === 0 ? BigInt(Date.now()) * 1_000_000n : BigInt(Math.round(performance.now() * 1e6));
      view().setBigUint64(out, ns, true);
      return ERRNO_SUCCESS;
    },
    random_get(ptr: number, len: number): number {
      const bytes = new Uint8Array(memory().buffer, ptr, len);
      for (let i = 0; i < len; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
      return ERRNO_SUCCESS;
    },
    fd_write(fd: number, iovs: number, count: number, written: number): number {
      if (fd !== 1 && fd !== 2) return ERRNO_BADF;
      const dv = view();
      let total = 0;
      for (let i = 0; i < count; i++) {
        const ptr = dv.getUint32(iovs + 8 * i, true);
        const len = dv.getUint32(iovs + 8 * i + 4, true);
        pending[fd] += decoder.decode(new Uint8Array(memory().buffer, ptr, len));
        total += len;
      }
      let nl;
      while ((nl = pending[fd]!.indexOf("\n")) >= 0) {
        log(fd, pending[fd]!.slice(0, nl));
        pending[fd] = pending[fd]!.slice(nl + 1);
      }
      dv.setUint32(written, total, true);
      return ERRNO_SUCCESS;
    },
    environ_sizes_get(count: number, size: number): number {
      const dv = view();
      dv.setUint32(count, 0, true);
      dv.setUint32(size, 0, true);
      return ERRNO_SUCCESS;
    },
    environ_get(): number {
      return ERRNO_SUCCESS;
    },
    proc_exit(code: number): never {
      throw new Error(`wirescope core exited with code ${code}`);
    },
    sched_yield(): number {
      return ERRNO_SUCCESS;
    },
    // Anything else the module might ask for is refused rather than missing.
    fd_close: () => ERRNO_BADF,
    fd_seek: () => ERRNO_BADF,
    fd_fdstat_get: () => ERRNO_BADF,
    args_sizes_get: () => ERRNO_INVAL,
    args_get: () => ERRNO_INVAL,
  };
}
