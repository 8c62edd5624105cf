/**
 * A large download through a stream transform, end to end: a loopback origin makes the body on
 * the fly (nothing on disk), the command (`scripts/wirescope -s`, a child process so its memory
 * is its own) runs an addon that XORs every byte in `responseheaders`'s transform, curl fetches
 * through the explicit proxy, and this process un-XORs and checks every byte. The proxy's peak
 * RSS (VmHWM) is read before and after. Shared by tests/addon_stream_e2e_test.ts and
 * bench/addon_stream.ts.
 * @module
 */
import { Cli, freePort } from "./cli_process.ts";

const KEY = 0x5a;
const BLOCK = 1 << 20;
const block = new Uint8Array(BLOCK);
{
  let x = 0x2545f491;
  for (let i = 0; i < BLOCK; i++) {
    x ^= x << 13, x ^= x >>> 17, x ^= x << 5;
    block[i] = x & 0xff;
  }
}

/** The body's MiB `index`: the block with the index in its first four bytes. */
function mib(index: number): Uint8Array {
  const out = block.slice();
  new DataView(out.buffer).setUint32(0, index);
  return out;
}

const ADDON = `
export default {
  name: "xor",
  responseheaders(flow) {
    flow.response.stream = (chunk) => {
      const out = new Uint8Array(chunk.byteLength);
      for (let i = 0; i < chunk.byteLength; i++) out[i] = chunk[i] ^ ${KEY};
      return out;
    };
  },
};
`;

/** What one transfer measured. */
export interface TransferResult {
  bytes: number;
  seconds: number;
  /** The proxy's VmHWM (KiB) once up, after a small warm-up request. */
  baselineKb: number;
  /** Its VmHWM (KiB) after the transfer. */
  peakKb: number;
  /** Response headers curl saw. */
  headers: string;
}

function vmHwmKb(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const m = /VmHWM:\s+(\d+) kB/.exec(status);
  if (!m) throw new Error("no VmHWM in /proc status");
  return Number(m[1]);
}

/** Downloads `mibs` MiB through the proxy with the XOR addon; throws on any wrong byte. */
export async function streamTransfer(mibs: number): Promise<TransferResult> {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-stream-" });
  const addonFile = `${dir}/xor.ts`;
  await Deno.writeTextFile(addonFile, ADDON);
  const total = mibs * BLOCK;
  const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const n = new URL(req.url).pathname === "/small" ? 1 : mibs;
    let i = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        if (i >= n) c.close();
        else c.enqueue(mib(i++));
      },
    }, { highWaterMark: 1 });
    return new Response(body, { headers: { "content-length": String(n * BLOCK) } });
  });
  const port = freePort();
  const cli = new Cli([
    "--confdir",
    `${dir}/conf`,
    "--no-store",
    "--allow-local-destinations",
    "--mode",
    `regular@127.0.0.1:${port}`,
    "-s",
    addonFile,
  ]);
  try {
    for (let i = 0;; i++) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        break;
      } catch {
        if (i >= 300) throw new Error(`wirescope did not start: ${cli.stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const base = `http://127.0.0.1:${origin.addr.port}`;
    await fetchChecked(port, `${base}/small`, BLOCK);
    const baselineKb = vmHwmKb(cli.child.pid);
    const started = performance.now();
    const headers = await fetchChecked(port, `${base}/big`, total);
    const seconds = (performance.now() - started) / 1000;
    const peakKb = vmHwmKb(cli.child.pid);
    return { bytes: total, seconds, baselineKb, peakKb, headers };
  } finally {
    await cli.stop();
    await origin.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Fetches `url` with curl through the proxy, un-XORs and checks each byte; returns the headers. */
async function fetchChecked(proxyPort: number, url: string, expected: number): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-stream-h-" });
  const child = new Deno.Command("curl", {
    args: [
      "-sS",
      "--http1.1",
      "--max-time",
      "300",
      "-D",
      `${dir}/h`,
      "-x",
      `http://127.0.0.1:${proxyPort}`,
      url,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let offset = 0;
  let want = mib(0);
  let failure = "";
  for await (const chunk of child.stdout) {
    if (failure) continue;
    for (let i = 0; i < chunk.byteLength; i++, offset++) {
      const within = offset % BLOCK;
      if (within === 0 && offset > 0) want = mib(offset / BLOCK);
      if ((chunk[i]! ^ KEY) !== want[within]) {
        failure = `byte ${offset} differs`;
        break;
      }
    }
  }
  const status = await child.status;
  const stderr = new TextDecoder().decode((await new Response(child.stderr).arrayBuffer()) as ArrayBuffer);
  const headers = await Deno.readTextFile(`${dir}/h`).catch(() => "");
  await Deno.remove(dir, { recursive: true });
  if (failure) throw new Error(failure);
  if (!status.success) throw new Error(`curl failed (${status.code}): ${stderr}`);
  if (offset !== expected) throw new Error(`got ${offset} bytes, expected ${expected}`);
  return headers;
}
