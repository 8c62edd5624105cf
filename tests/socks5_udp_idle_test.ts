/**
 * A SOCKS5 UDP association whose TCP control connection says nothing (issue 17): datagrams count
 * as activity, so the idle timeout does not end it while they flow; it does once they stop. The
 * association's UDP flow is counted in `stats().udp` while it lives.
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/proxy.ts";

Deno.test({
  name: "socks5 UDP association: datagrams keep the control connection from the idle timeout; stats().udp",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const confdir = await Deno.makeTempDir({ prefix: "wirescope-socks5-idle-" });
    const echo = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const echoPort = (echo.addr as Deno.NetAddr).port;
    (async () => {
      for (;;) {
        const [d, from] = await echo.receive();
        await echo.send(d, from);
      }
    })().catch(() => {});
    const proxy = await startProxy({
      modes: [{ kind: "socks5", port: 0 }],
      confdir,
      idleTimeout: 400,
      allowLocalDestinations: true,
      onLog: () => {},
    });
    const socksPort = proxy.addresses[0]!.addr.port;
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: socksPort });
    const udp = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    try {
      const buf = new Uint8Array(64);
      await tcp.write(Uint8Array.of(5, 1, 0));
      assert.equal(await tcp.read(buf), 2);
      await tcp.write(Uint8Array.of(5, 3, 0, 1, 0, 0, 0, 0, 0, 0));
      assert.equal(await tcp.read(buf), 10);
      assert.equal(buf[1], 0, "association granted");
      const relayPort = (buf[8]! << 8) | buf[9]!;
      const header = Uint8Array.of(0, 0, 0, 1, 127, 0, 0, 1, echoPort >> 8, echoPort & 255);
      // Let the control connection's read detect the close when it comes.
      let closedAt = 0;
      const closed = (async () => {
        try {
          while ((await tcp.read(buf)) !== null) { /* nothing is expected */ }
        } catch { /* reset */ }
        closedAt = Date.now();
      })();
      // 2 s of datagrams every 100 ms (5 idle timeouts): each one is echoed back.
      const start = Date.now();
      let echoed = 0;
      for (let i = 0; i < 20; i++) {
        const payload = new TextEncoder().encode(`ping-${i}`);
        const datagram = new Uint8Array(header.length + payload.length);
        datagram.set(header);
        datagram.set(payload, header.length);
        await udp.send(datagram, { transport: "udp", hostname: "127.0.0.1", port: relayPort });
        const [reply] = await Promise.race([
          udp.receive(),
          new Promise<never>((_, reject) =>
            setTimeout(() => reject(new Error(`no echo for ping-${i}`)), 2000)
          ),
        ]);
        assert.equal(new TextDecoder().decode(reply.subarray(10)), `ping-${i}`);
        echoed++;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(echoed, 20);
      assert.equal(
        closedAt,
        0,
        `the association was closed after ${Date.now() - start} ms while datagrams flowed`,
      );
      assert.ok(proxy.stats().udp.flows >= 1, "the live association's flow is counted");
      // Once the datagrams stop, the idle timeout ends it (bounded wait).
      await Promise.race([closed, new Promise((r) => setTimeout(r, 5000))]);
      assert.ok(closedAt > 0, "an association without traffic is closed by the idle timeout");
      assert.ok(proxy.stats().limits.closedByIdleTimeout >= 1);
      // `flows` counts live flows: the association's ended with it.
      for (let i = 0; i < 50 && proxy.stats().udp.flows > 0; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(proxy.stats().udp.flows, 0, "the ended association's flow is no longer live");
    } finally {
      tcp.close();
      udp.close();
      echo.close();
      await proxy.close(200);
      await Deno.remove(confdir, { recursive: true });
    }
  },
});
