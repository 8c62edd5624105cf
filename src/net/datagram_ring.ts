/**
 * A single-producer, single-consumer ring of datagrams in a SharedArrayBuffer, used between the
 * listener (main thread) and its socket worker. Each record is a 2-byte length, an 18-byte
 * endpoint (the wasm core's form: 16 address bytes and a little-endian port) and the bytes.
 * Positions are 32-bit counters that only grow (wrapping), published with Atomics so the other
 * thread can sleep on them with `Atomics.wait`/`waitAsync`.
 * @module
 */

const HEADER_INTS = 8;
const WRITE = 0, READ = 1, DROPPED = 2, FAILED = 3;
const RECORD_HEADER = 20;
const PAD = 0xffff;

/** One direction of datagrams between two threads. */
export class DatagramRing {
  /** The shared memory (send it to the other thread and wrap it there). */
  readonly buffer: SharedArrayBuffer;
  /** The header words (write and read positions, dropped count) for Atomics. */
  readonly header: Int32Array;
  #bytes: Uint8Array;
  #view: DataView;
  #mask: number;

  /**
   * @param bufferOrCapacity A buffer made by another ring, or the data capacity in bytes (a
   *   power of two) for a new one.
   */
  constructor(bufferOrCapacity: SharedArrayBuffer | number) {
    this.buffer = typeof bufferOrCapacity === "number"
      ? new SharedArrayBuffer(HEADER_INTS * 4 + bufferOrCapacity)
      : bufferOrCapacity;
    const capacity = this.buffer.byteLength - HEADER_INTS * 4;
    if (capacity <= 0 || (capacity & (capacity - 1)) !== 0) {
      throw new RangeError(`ring capacity must be a power of two, not ${capacity}`);
    }
    this.header = new Int32Array(this.buffer, 0, HEADER_INTS);
    this.#bytes = new Uint8Array(this.buffer, HEADER_INTS * 4);
    this.#view = new DataView(this.buffer, HEADER_INTS * 4);
    this.#mask = capacity - 1;
  }

  /** Datagrams the producer dropped because the ring was full. */
  get dropped(): number {
    return Atomics.load(this.header, DROPPED);
  }

  /** Datagrams the consumer could not deliver (e.g. the OS refused to send them). */
  get failed(): number {
    return Atomics.load(this.header, FAILED);
  }

  /** Consumer: counts a datagram it could not deliver. */
  countFailure(): void {
    Atomics.add(this.header, FAILED, 1);
  }

  /** The write position (what a consumer waits on). */
  get writePosition(): number {
    return Atomics.load(this.header, WRITE);
  }

  /**
   * Producer: appends a datagram; false (and counted as dropped) when it does not fit.
   *
   * @param endpoint 18 bytes.
   * @param data At most 65,534 bytes.
   */
  push(endpoint: Uint8Array, data: Uint8Array): boolean {
    const write = Atomics.load(this.header, WRITE);
    const read = Atomics.load(this.header, READ);
    const capacity = this.#mask + 1;
    const need = RECORD_HEADER + data.length;
    let at = write & this.#mask;
    const tail = capacity - at;
    const pad = tail < need ? tail : 0;
    if (((write - read) | 0) + pad + need > capacity || data.length >= PAD) {
      Atomics.add(this.header, DROPPED, 1);
      return false;
    }
    if (pad) {
      if (tail >= 2) this.#view.setUint16(at, PAD, true);
      at = 0;
    }
    this.#view.setUint16(at, data.length, true);
    this.#bytes.set(endpoint.subarray(0, 18), at + 2);
    this.#bytes.set(data, at + RECORD_HEADER);
    Atomics.store(this.header, WRITE, (write + pad + need) | 0);
    return true;
  }

  /**
   * Consumer: calls `each` for every waiting datagram (views valid only during the call) and
   * frees their space.
   *
   * @returns How many were read.
   */
  drain(each: (endpoint: Uint8Array, data: Uint8Array) => void): number {
    const write = Atomics.load(this.header, WRITE);
    let read = Atomics.load(this.header, READ);
    let count = 0;
    while (read !== write) {
      let at = read & this.#mask;
      const tail = this.#mask + 1 - at;
      if (tail < RECORD_HEADER || this.#view.getUint16(at, true) === PAD) {
        read = (read + tail) | 0;
        continue;
      }
      const len = this.#view.getUint16(at, true);
      each(
        this.#bytes.subarray(at + 2, at + RECORD_HEADER),
        this.#bytes.subarray(at + RECORD_HEADER, at + RECORD_HEADER + len),
      );
      read = (read + RECORD_HEADER + len) | 0;
      at = 0;
      count++;
    }
    Atomics.store(this.header, READ, read);
    return count;
  }
}
