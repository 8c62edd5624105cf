/**
 * The impairment relay (tests/impair_relay.ts): its decisions are a function of the seed, its
 * rates are the configured ones, its queue delays, holds back and duplicates as told, and the
 * relay process on loopback drops exactly the datagrams the seed says.
 */
import assert from "node:assert/strict";
import {
  decide,
  Impairer,
  type ImpairSettings,
  isRigAddress,
  NO_IMPAIRMENT,
  startImpairRelay,
} from "./impair_relay.ts";

const settings = (s: Partial<ImpairSettings>): ImpairSettings => ({ ...NO_IMPAIRMENT, ...s });

Deno.test("impairment decisions depend only on seed, direction and index, at the configured rates", () => {
  const s = settings({ seed: 42, loss: 0.05, duplicate: 0.02, reorder: 0.1, reorderMs: 7, delayMs: 50 });
  const a = Array.from({ length: 100_000 }, (_, i) => decide(s, 0, i));
  const again = Array.from({ length: 100_000 }, (_, i) => decide(s, 0, i));
  assert.deepEqual(a, again);
  const other = Array.from({ length: 1000 }, (_, i) => decide({ ...s, seed: 43 }, 0, i));
  assert.notDeepEqual(a.slice(0, 1000), other);
  const down = Array.from({ length: 1000 }, (_, i) => decide(s, 1, i));
  assert.notDeepEqual(a.slice(0, 1000), down);
  const rate = (f: (d: (typeof a)[0]) => boolean) => a.filter(f).length / a.length;
  const lost = rate((d) => d.lost);
  assert.ok(Math.abs(lost - 0.05) < 0.004, `loss ${lost}`);
  // Duplication and holding back are decided among the datagrams that were not lost.
  const kept = a.filter((d) => !d.lost);
  const dup = kept.filter((d) => d.copies === 2).length / kept.length;
  const held = kept.filter((d) => d.delayMs === 57).length / kept.length;
  assert.ok(Math.abs(dup - 0.02) < 0.003, `duplicate ${dup}`);
  assert.ok(Math.abs(held - 0.1) < 0.005, `reorder ${held}`);
  assert.ok(kept.every((d) => d.delayMs === 50 || d.delayMs === 57));
});

Deno.test("the impairer delays, holds back (later datagrams overtake) and duplicates", () => {
  const imp = new Impairer(settings({ seed: 3, duplicate: 0.2, reorder: 0.2, reorderMs: 5, delayMs: 10 }));
  const out: number[] = [];
  for (let i = 0; i < 1000; i++) {
    imp.push(0, new Uint8Array([i & 255, i >> 8]), i * 0.1);
    const due = imp.due(i * 0.1);
    // Nothing leaves before its delay.
    assert.ok(due.length === 0 || i * 0.1 >= 10);
    for (const p of due) out.push(p.data[0]! | (p.data[1]! << 8));
  }
  for (const p of imp.due(1e9)) out.push(p.data[0]! | (p.data[1]! << 8));
  assert.equal(imp.waiting, 0);
  assert.equal(imp.nextAt(), null);
  const st = imp.stats[0];
  assert.equal(out.length, 1000 + st.duplicated);
  assert.ok(st.duplicated > 150 && st.duplicated < 250, `${st.duplicated}`);
  assert.ok(st.heldBack > 150 && st.heldBack < 250, `${st.heldBack}`);
  let inversions = 0;
  for (let i = 1; i < out.length; i++) if (out[i]! < out[i - 1]!) inversions++;
  assert.ok(inversions > 100, `only ${inversions} reordered`);
  assert.deepEqual([...new Set(out)].sort((x, y) => x - y), Array.from({ length: 1000 }, (_, i) => i));
});

Deno.test("the impairer bounds its queue: beyond the limit datagrams are lost and counted", () => {
  const imp = new Impairer(settings({ delayMs: 50 }), 10);
  for (let i = 0; i < 25; i++) imp.push(1, new Uint8Array(1), 0);
  assert.equal(imp.waiting, 10);
  assert.equal(imp.overflow, 15);
});

Deno.test("only loopback and the rigs' addresses are relay targets", () => {
  for (const ok of ["127.0.0.1", "::1", "172.31.240.1", "172.31.224.2", "172.31.255.254"]) {
    assert.ok(isRigAddress(ok), ok);
  }
  for (
    const bad of ["10.0.0.1", "172.31.223.1", "8.8.8.8", "192.0.2.1", "fd00::1", "0.0.0.0", "example.com"]
  ) {
    assert.ok(!isRigAddress(bad), bad);
  }
});

Deno.test({
  name: "the relay process loses exactly the datagrams its seed picks, both ways",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await assert.rejects(
      startImpairRelay({ listen: "127.0.0.1:0", upstream: "10.1.2.3:53" }),
      /only loopback or the rigs/,
    );
    const echo = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const echoPort = (echo.addr as Deno.NetAddr).port;
    const echoing = (async () => {
      try {
        for (;;) {
          const [d, from] = await echo.receive();
          await echo.send(d, from);
        }
      } catch { /* closed */ }
    })();
    const s = settings({ seed: 9, loss: 0.3 });
    const relay = await startImpairRelay({ listen: "127.0.0.1:0", upstream: `127.0.0.1:${echoPort}`, ...s });
    const client = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const got: number[] = [];
    const receiving = (async () => {
      try {
        for (;;) {
          const [d] = await client.receive();
          got.push(new DataView(d.buffer, d.byteOffset).getUint32(0));
        }
      } catch { /* closed */ }
    })();
    const N = 2000;
    for (let i = 0; i < N; i++) {
      const d = new Uint8Array(64);
      new DataView(d.buffer).setUint32(0, i);
      await client.send(d, { transport: "udp", hostname: "127.0.0.1", port: relay.port });
      // One at a time, so that the echo's answers come back in the order they were sent.
      if (i % 20 === 19) await new Promise((r) => setTimeout(r, 2));
    }
    // What the seed says: datagram i survives the way up as the j-th, then j survives the way down.
    const expected: number[] = [];
    let j = 0;
    for (let i = 0; i < N; i++) {
      if (decide(s, 0, i).lost) continue;
      if (!decide(s, 1, j++).lost) expected.push(i);
    }
    for (let w = 0; w < 100 && got.length < expected.length; w++) await new Promise((r) => setTimeout(r, 20));
    const stats = await relay.stop();
    client.close();
    echo.close();
    await receiving;
    await echoing;
    assert.equal(stats.kernelDrops, 0);
    assert.equal(stats.up.received, N);
    assert.deepEqual(got, expected);
    assert.equal(stats.up.lost + stats.down.lost, N - expected.length);
  },
});
