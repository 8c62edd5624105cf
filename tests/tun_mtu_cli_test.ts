/**
 * `--tun-mtu`: the command opens tun mode's interface with the MTU it was given (issue 17), as the
 * kernel reports it. Needs root (CAP_NET_ADMIN).
 */
import assert from "node:assert/strict";
import { Cli } from "./cli_process.ts";

async function mtuOf(name: string): Promise<number | null> {
  const o = await new Deno.Command("ip", {
    args: ["-j", "link", "show", "dev", name],
    stdout: "piped",
    stderr: "null",
  })
    .output();
  if (!o.success) return null;
  const [link] = JSON.parse(new TextDecoder().decode(o.stdout)) as { mtu: number }[];
  return link?.mtu ?? null;
}

Deno.test({
  name: "--tun-mtu 1280: tun mode's interface has MTU 1280",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-tunmtu-" });
    const name = `wsmtu${Deno.pid % 10000}`;
    const cli = new Cli(["--mode", `tun:${name}`, "--tun-mtu", "1280", "--confdir", `${dir}/conf`]);
    try {
      let mtu: number | null = null;
      // The interface exists (MTU 1500) a moment before its MTU is set: wait for the setting.
      for (let i = 0; i < 300 && mtu !== 1280; i++) {
        mtu = await mtuOf(name);
        if (mtu !== 1280) await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(mtu, 1280, `interface ${name}; stderr: ${cli.stderr}`);
    } finally {
      await cli.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
