/**
 * A download through an addon's stream transform (an XOR in `responseheaders`), curl through the
 * explicit proxy (`scripts/wirescope -s`, a child process): prints the time, the throughput and
 * the proxy's peak RSS (VmHWM) before and after, per size. Memory that stays the same from the
 * small size to the large one is what streaming promises.
 *
 *   deno run -A bench/addon_stream.ts [MiB...]   (default: 100 1024)
 * @module
 */
import { streamTransfer } from "../tests/stream_transfer.ts";

const sizes = Deno.args.length > 0 ? Deno.args.map(Number) : [100, 1024];
for (const mibs of sizes) {
  const r = await streamTransfer(mibs);
  console.log(
    `${String(mibs).padStart(5)} MiB  ${r.seconds.toFixed(1).padStart(6)} s  ` +
      `${(mibs / r.seconds).toFixed(1).padStart(6)} MiB/s  proxy VmHWM ${
        (r.baselineKb / 1024).toFixed(0)
      } MiB ` +
      `before, ${(r.peakKb / 1024).toFixed(0)} MiB after`,
  );
}
