import assert from "node:assert/strict";
import { DirectUdp } from "./direct_udp.ts";
import { formatIp } from "./ip.ts";

function endpointOf(addr: Deno.NetAddr, v4: boolean): Uint8Array {
  const ep = new Uint8Array(18);
  if (v4) {
    ep[10] = ep[11] = 0xff;
    ep.set(addr.hostname.split(".").map(Number), 12);
  } else {
    ep[15] = 1; // ::1
  }
  ep[16] = addr.port & 0xff;
  ep[17] = addr.port >> 8;
  return ep;
}

async function roundTrip(hostname: string) {
  const v4 = !hostname.includes(":");
  const a = Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
  const b = Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
  try {
    const da = DirectUdp.open(a), db = DirectUdp.open(b);
    assert(typeof da !== "string", String(da));
    assert(typeof db !== "string", String(db));
    // 100 datagrams of different sizes: more than one send batch and one receive batch, and
    // few enough for the default socket buffer (~200 KiB of kernel memory) to hold them all.
    const sent = Array.from({ length: 100 }, (_, i) => new Uint8Array(1 + ((i * 97) % 1000)).fill(i));
    const to = endpointOf(b.addr as Deno.NetAddr, v4);
    for (const d of sent) da.queue(to, d);
    da.flush();
    assert.equal(da.queued, 0);
    assert.equal(da.stats.sent, 100);

    const got: Uint8Array[] = [];
    const froms = new Set<string>();
    // The first through Deno (as the listener waits), the rest in batches.
    const buf = new Uint8Array(65536);
    const [first] = await b.receive(buf);
    got.push(first.slice());
    for (let i = 0; i < 20 && got.length < sent.length; i++) {
      db.receive((from, data) => {
        froms.add(`${formatIp(from)}:${from[16]! | (from[17]! << 8)}`);
        got.push(data.slice());
      });
    }
    assert.equal(got.length, sent.length);
    assert.deepEqual(got, sent);
    const aAddr = a.addr as Deno.NetAddr;
    assert.deepEqual([...froms], [`${aAddr.hostname}:${aAddr.port}`]);
    assert.equal(db.receive(() => {}), 0, "nothing left, and no blocking");
  } finally {
    a.close();
    b.close();
  }
}

Deno.test("DirectUdp sends and receives batches over IPv4 with their endpoints", () =>
  roundTrip("127.0.0.1"));

Deno.test("DirectUdp sends and receives batches over IPv6 with their endpoints", () => roundTrip("::1"));

Deno.test("DirectUdp counts a datagram the kernel refuses and goes on with the rest", () => {
  const a = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const b = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    const da = DirectUdp.open(a);
    assert(typeof da !== "string");
    const good = endpointOf(b.addr as Deno.NetAddr, true);
    const bad = good.slice();
    bad[16] = bad[17] = 0; // port 0: EINVAL
    da.queue(good, new Uint8Array([1]));
    da.queue(bad, new Uint8Array([2]));
    da.queue(good, new Uint8Array([3]));
    da.flush();
    assert.equal(da.stats.sent, 2);
    assert.equal(da.stats.sendFailures, 1);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("DirectUdp sends a run of equal datagrams as GSO messages, cut apart on arrival", async () => {
  const a = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const b = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    const da = DirectUdp.open(a), db = DirectUdp.open(b);
    assert(typeof da !== "string" && typeof db !== "string");
    // 50 full-size datagrams and a short one, as a TCP transfer through the tunnel sends them;
    // then one to another endpoint, which starts a message of its own.
    const sent = Array.from({ length: 51 }, (_, i) => new Uint8Array(i < 50 ? 1452 : 300).fill(i));
    const to = endpointOf(b.addr as Deno.NetAddr, true);
    for (const d of sent) da.queue(to, d);
    const elsewhere = endpointOf(a.addr as Deno.NetAddr, true);
    da.queue(elsewhere, new Uint8Array([7]));
    assert.equal(da.queued, 52);
    da.flush();
    assert.equal(da.stats.sent, 52);
    assert.equal(da.stats.sendFailures, 0);
    // 44 datagrams fill one message (63 KiB at most), the other 7 make a second.
    assert.equal(da.stats.gsoMessages, 2, "the run went out as two messages");

    const got: Uint8Array[] = [];
    const [first] = await b.receive(new Uint8Array(65536));
    got.push(first.slice());
    for (let i = 0; i < 20 && got.length < sent.length; i++) db.receive((_, data) => got.push(data.slice()));
    assert.deepEqual(got, sent, "the same datagrams, in order, with their own boundaries");
    const [own] = await a.receive(new Uint8Array(16));
    assert.deepEqual([...own], [7]);
  } finally {
    a.close();
    b.close();
  }
});
