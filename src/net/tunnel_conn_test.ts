import assert from "node:assert/strict";
import { type ConnDriver, ConnectionResetError, TunnelConn } from "./tunnel_conn.ts";

/** A driver standing in for the core: a receive queue, and a send buffer of `room` bytes. */
class FakeDriver implements ConnDriver {
  incoming: Uint8Array[] = [];
  sent: number[] = [];
  room = Infinity;
  reads = 0;
  shutdowns = 0;
  aborts = 0;
  read(): Uint8Array | null {
    this.reads++;
    return this.incoming.shift() ?? null;
  }
  write(_conn: number, data: Uint8Array): number {
    const n = Math.min(data.length, this.room);
    this.room -= n;
    this.sent.push(...data.subarray(0, n));
    return n;
  }
  shutdown(): void {
    this.shutdowns++;
  }
  abort(): void {
    this.aborts++;
  }
  release(): void {}
}

const addr = (port: number): Deno.NetAddr => ({ transport: "tcp", hostname: "10.0.0.2", port });

function conn(driver: FakeDriver): TunnelConn {
  return new TunnelConn(1, driver, addr(443), addr(40000), { publicKey: "k", endpoint: null });
}

Deno.test("TunnelConn.readChunk() waits for data, hands it out, then null after the FIN", async () => {
  const d = new FakeDriver();
  const c = conn(d);
  const pending = c.readChunk();
  d.incoming.push(new Uint8Array([1, 2, 3]));
  c.onReadable();
  assert.deepEqual(await pending, new Uint8Array([1, 2, 3]));
  c.onFin();
  assert.equal(await c.readChunk(), null);
});

Deno.test("TunnelConn.readChunk() rejects once the connection was reset", async () => {
  const d = new FakeDriver();
  const c = conn(d);
  const pending = c.readChunk();
  c.onClosed(new ConnectionResetError("connection reset by peer"));
  await assert.rejects(pending, ConnectionResetError);
});

Deno.test("TunnelConn's readable takes nothing from the core until someone reads it", async () => {
  const d = new FakeDriver();
  const c = conn(d);
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(d.reads, 0, "no read-ahead");
  d.incoming.push(new Uint8Array([9]));
  const reader = c.readable.getReader();
  assert.deepEqual((await reader.read()).value, new Uint8Array([9]));
});

Deno.test("TunnelConn.write() resolves only once the send buffer took every byte, in order", async () => {
  const d = new FakeDriver();
  d.room = 2;
  const c = conn(d);
  let firstDone = false;
  const first = c.write(new Uint8Array([1, 2, 3, 4])).then(() => (firstDone = true));
  const second = c.write(new Uint8Array([5]));
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(firstDone, false, "waits for room");
  d.room = 10;
  c.onWritable();
  await first;
  await second;
  assert.deepEqual(d.sent, [1, 2, 3, 4, 5]);
});

Deno.test("TunnelConn.closeWrite() sends the FIN after pending writes; later writes fail", async () => {
  const d = new FakeDriver();
  d.room = 1;
  const c = conn(d);
  const w = c.write(new Uint8Array([1, 2]));
  const closing = c.closeWrite();
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(d.shutdowns, 0, "not before the write is in the buffer");
  d.room = 10;
  c.onWritable();
  await w;
  await closing;
  assert.equal(d.shutdowns, 1);
  await assert.rejects(c.write(new Uint8Array([3])), Deno.errors.BrokenPipe);
});
