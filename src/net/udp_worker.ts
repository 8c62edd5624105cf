/**
 * The listener's socket thread: owns the UDP socket, moves received datagrams into one ring and
 * sends the datagrams found in another, so that system calls and the kernel's socket queue are
 * served on their own core while the main thread runs the wasm core. Messages: `init` (bind and
 * start), `close`. Replies: `ready`, `error`, `warning`.
 * @module
 */
import { DatagramRing } from "./datagram_ring.ts";
import { formatIp, writeIp } from "./ip.ts";
import { enlargeUdpBuffers, SOCKET_BUFFER } from "./socket_buffers.ts";

/** The `init` message. */
export interface UdpWorkerInit {
  type: "init";
  hostname: string;
  port: number;
  /** Ring the worker fills with received datagrams. */
  rx: SharedArrayBuffer;
  /** Ring the worker sends datagrams from. */
  tx: SharedArrayBuffer;
}

const RECEIVE_LOOPS = 1;
let closing = false;
let socket: Deno.DatagramConn | undefined;

async function receiveLoop(sock: Deno.DatagramConn, rx: DatagramRing): Promise<void> {
  const buf = new Uint8Array(65_536);
  const ep = new Uint8Array(18);
  const epView = new DataView(ep.buffer);
  let lastHost = "", lastPort = -1;
  while (!closing) {
    let data: Uint8Array, from: Deno.NetAddr;
    try {
      const [d, a] = await sock.receive(buf);
      data = d;
      from = a as Deno.NetAddr;
    } catch {
      if (closing) return;
      continue;
    }
    if (from.hostname !== lastHost || from.port !== lastPort) {
      writeIp(from.hostname, ep);
      epView.setUint16(16, from.port, true);
      lastHost = from.hostname;
      lastPort = from.port;
    }
    if (rx.push(ep, data)) Atomics.notify(rx.header, 0);
  }
}

async function sendLoop(sock: Deno.DatagramConn, tx: DatagramRing): Promise<void> {
  const lastEp = new Uint8Array(18);
  let lastAddr: Deno.NetAddr = { transport: "udp", hostname: "", port: 0 };
  let seen = tx.writePosition;
  while (!closing) {
    const wait = Atomics.waitAsync(tx.header, 0, seen);
    if (wait.async) await wait.value;
    seen = tx.writePosition;
    tx.drain((ep, data) => {
      let same = true;
      for (let i = 0; i < 18 && same; i++) same = ep[i] === lastEp[i];
      if (!same) {
        lastEp.set(ep);
        lastAddr = { transport: "udp", hostname: formatIp(ep), port: ep[16]! | (ep[17]! << 8) };
      }
      // The ring's bytes are reused once drained: the send gets its own copy.
      sock.send(data.slice(), lastAddr).catch(() => tx.countFailure());
    });
  }
}

/** The worker's global scope, typed here rather than with a lib directive (which JSR refuses). */
const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<UdpWorkerInit | { type: "close" }>) => void) | null;
  postMessage(message: unknown): void;
  close(): void;
};

scope.onmessage = (e) => {
  const msg = e.data;
  if (msg.type === "close") {
    closing = true;
    try {
      socket?.close();
    } catch { /* already closed */ }
    scope.close();
    return;
  }
  try {
    socket = Deno.listenDatagram({ transport: "udp", hostname: msg.hostname, port: msg.port });
  } catch (err) {
    scope.postMessage({ type: "error", message: (err as Error).message });
    return;
  }
  const bigger = enlargeUdpBuffers((socket.addr as Deno.NetAddr).port, SOCKET_BUFFER);
  if (bigger) {
    scope.postMessage({ type: "warning", message: `socket buffers left at the system default: ${bigger}` });
  }
  const rx = new DatagramRing(msg.rx), tx = new DatagramRing(msg.tx);
  for (let i = 0; i < RECEIVE_LOOPS; i++) receiveLoop(socket, rx);
  sendLoop(socket, tx);
  scope.postMessage({ type: "ready" });
};
