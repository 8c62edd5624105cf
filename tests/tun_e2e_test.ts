/**
 * The tun mode end to end: the proxy (library) opens a TUN interface, the test moves it into a
 * client namespace of its own whose only route, the default, is that interface, and curl and dig
 * there reach the origin namespace's nginx and DNS server through it, intercepted: HTTPS with
 * wirescope's CA (a 10 MB download, sha256 checked), DNS as a DNS flow, both with mode "tun".
 * And the command without CAP_NET_ADMIN fails with the message that says so.
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";
import type { DnsFlow, Flow, HttpFlow } from "../src/flows/flow.ts";
import { NEEDS_CAP_NET_ADMIN } from "../src/net/tun_device.ts";
import { OriginNamespace } from "./origin_ns.ts";
import { reserveSlot, sh } from "./rig.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const BIG = 10 << 20;

async function run(cmd: string[]): Promise<{ code: number; out: string; err: string }> {
  const o = await new Deno.Command(cmd[0]!, { args: cmd.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  return { code: o.code, out: new TextDecoder().decode(o.stdout), err: new TextDecoder().decode(o.stderr) };
}

/** Waits (bounded) until `pred` holds for some flow. */
async function flowWhere<T extends Flow>(flows: Flow[], pred: (f: Flow) => f is T): Promise<T> {
  for (let i = 0; i < 100; i++) {
    const f = flows.find(pred);
    if (f) return f;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the flow was not recorded within 10 s");
}

Deno.test({
  name: "tun mode: a namespace routed into the TUN interface browses HTTPS and resolves, intercepted",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const origin = await OriginNamespace.create(["origin.test"], BIG);
    const { slot, release } = reserveSlot("tun", 200);
    const ns = `wstc${slot}`, dev = `wst${slot}`, clientIp = `10.233.${slot}.2`;
    await sh(["ip", "netns", "del", ns], { allowFail: true });
    const dir = await Deno.makeTempDir({ prefix: "wirescope-tun-" });
    const flows: Flow[] = [];
    const proxy = await startProxy({
      confdir: `${dir}/conf`,
      modes: [{ kind: "tun", name: dev }],
      upstreamCa: [origin.caFile],
      dnsServers: [{ hostname: origin.address, port: 53 }],
      onLog: () => {},
    });
    proxy.bus.subscribe((e) => e.type === "end" && flows.push(e.flow));
    try {
      await Deno.writeTextFile(`${dir}/ca.pem`, proxy.ca.certPem);
      await sh(["ip", "netns", "add", ns]);
      // The interface stays the proxy's (its descriptor) wherever it lives.
      await sh(["ip", "link", "set", dev, "netns", ns]);
      const exec = (cmd: string[]) => run(["ip", "netns", "exec", ns, ...cmd]);
      for (
        const cmd of [
          ["ip", "link", "set", "lo", "up"],
          ["ip", "addr", "add", `${clientIp}/24`, "dev", dev],
          ["ip", "link", "set", dev, "up"],
          ["ip", "route", "add", "default", "dev", dev],
        ]
      ) {
        const r = await exec(cmd);
        assert.equal(r.code, 0, `${cmd.join(" ")}: ${r.err}`);
      }

      await t.step("curl downloads 10 MB over HTTPS through the interface, bytes intact", async () => {
        const started = performance.now();
        const r = await exec([
          "sh",
          "-c",
          `curl -sS --max-time 60 --cacert ${dir}/ca.pem --resolve origin.test:443:${origin.address} ` +
          `https://origin.test/big.bin | sha256sum`,
        ]);
        const seconds = (performance.now() - started) / 1000;
        assert.equal(r.code, 0, r.err);
        assert.equal(r.out.split(" ")[0], origin.bigSha256, `sha256 of the download (curl: ${r.err})`);
        console.log(
          `tun: 10 MB over HTTPS in ${seconds.toFixed(2)} s (${(BIG / 1e6 / seconds).toFixed(1)} MB/s)`,
        );
        const flow = await flowWhere(
          flows,
          (f): f is HttpFlow => f.type === "http" && f.request.url === "https://origin.test/big.bin",
        );
        assert.equal(flow.client.mode, "tun");
        assert.equal(flow.client.address.hostname, clientIp);
        assert.equal(flow.client.peer, undefined);
        assert.equal(flow.response?.status, 200);
        assert.equal(flow.response?.body.size, BIG);
      });

      await t.step("dig through the interface is answered by the resolvers and recorded", async () => {
        const r = await exec([
          "dig",
          "+short",
          "+time=3",
          "+tries=2",
          `@${origin.address}`,
          "tun-probe.origin.test",
          "A",
        ]);
        assert.equal(r.code, 0, r.err);
        assert.equal(r.out.trim(), "10.11.12.13");
        const flow = await flowWhere(
          flows,
          (f): f is DnsFlow =>
            f.type === "dns" && f.request?.questions[0]?.name.replace(/\.$/, "") === "tun-probe.origin.test",
        );
        assert.equal(flow.client.mode, "tun");
        assert.equal(flow.client.address.hostname, clientIp);
        assert.equal(flow.response?.answers.length, 1);
      });

      await t.step("stats count the packets and connections of the device", () => {
        const s = proxy.tun[0]!.stats();
        const summary = JSON.stringify(s);
        assert.ok(s.packetsOut >= BIG / 1500 && s.packetsIn > 100, summary);
        assert.ok(s.tcpTxBytes >= BIG && s.connectionsOpened >= 1 && s.udpIn >= 1, summary);
        assert.equal(s.malformedInner + s.writeFailures + s.readErrors + s.internalErrors, 0, summary);
      });
    } finally {
      await proxy.close(0);
      await sh(["ip", "netns", "del", ns], { allowFail: true });
      await origin.close();
      release();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
    // Closing the proxy took the interface away.
    const gone = await run(["ip", "link", "show", dev]);
    assert.notEqual(gone.code, 0, "the interface is gone");
  },
});

Deno.test({
  name: "tun mode without CAP_NET_ADMIN: the command says the capability is needed",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "wirescope-tuncap-" });
    try {
      const r = await run([
        "setpriv",
        "--inh-caps=-all",
        "--bounding-set=-net_admin",
        `${ROOT}scripts/wirescope`,
        "--mode",
        "tun:wstnocap0",
        "--confdir",
        `${dir}/conf`,
      ]);
      assert.equal(r.code, 2, `exit code (stderr: ${r.err})`);
      assert.ok(r.err.includes(NEEDS_CAP_NET_ADMIN), r.err);
      assert.ok(r.err.includes("wstnocap0"), r.err);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
