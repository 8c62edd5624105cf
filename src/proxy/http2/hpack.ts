/**
 * HPACK (RFC 7541): header compression for HTTP/2, pure and synchronous.
 *
 * Names and values are latin1 strings (one character per byte), so any octets the wire carries
 * come through unchanged, in wire order and case. The decoder keeps the dynamic table in step
 * with the peer's encoder and guards against the usual attacks: a table size update above the
 * size we advertised or after the first field, more than two updates in a block, integers past
 * 2^31, strings longer than the block, Huffman strings with EOS or bad padding (all
 * COMPRESSION_ERROR), and a header list past the advertised SETTINGS_MAX_HEADER_LIST_SIZE (the
 * block is still decoded to keep the table in step, but the fields past the limit are dropped
 * and the result says so, so the connection can refuse the stream without holding the list).
 * @module
 */
import { HUFFMAN_CODES, HUFFMAN_LENGTHS } from "./huffman_table.generated.ts";

/** One header field: latin1 name and value; `true` third when it must never be indexed. */
export type HeaderField = [name: string, value: string, neverIndex?: boolean];

/** A decoding failure: the connection must end with COMPRESSION_ERROR (RFC 9113 §4.3). */
export class HpackError extends Error {
  override name = "HpackError";
}

/** The static table of RFC 7541 Appendix A (index 1..61). */
export const STATIC_TABLE: readonly (readonly [string, string])[] = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];
const STATIC_COUNT = STATIC_TABLE.length; // 61

/** Size of an entry as RFC 7541 §4.1 counts it (also the header list size unit of RFC 9113 §6.5.2). */
export function entrySize(name: string, value: string): number {
  return name.length + value.length + 32;
}

// ---- integers and strings --------------------------------------------------------------------

/** Integers beyond this are refused: no table, string or size needs them, and they cost digits. */
const MAX_INTEGER = 0x7fffffff;

/** A cursor over a header block. */
class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}

  integer(prefixBits: number): number {
    const buf = this.buf;
    if (this.pos >= buf.length) throw new HpackError("truncated integer");
    const max = (1 << prefixBits) - 1;
    let value = buf[this.pos++]! & max;
    if (value < max) return value;
    let shift = 0;
    for (;;) {
      if (this.pos >= buf.length) throw new HpackError("truncated integer");
      const b = buf[this.pos++]!;
      value += (b & 0x7f) * 2 ** shift;
      if (value > MAX_INTEGER) throw new HpackError("integer too large");
      if ((b & 0x80) === 0) return value;
      shift += 7;
    }
  }

  string(): string {
    if (this.pos >= this.buf.length) throw new HpackError("truncated string");
    const huffman = (this.buf[this.pos]! & 0x80) !== 0;
    const length = this.integer(7);
    if (length > this.buf.length - this.pos) throw new HpackError("string longer than the block");
    const start = this.pos;
    this.pos += length;
    // Decoded from the block in place (a view per string cost more than short strings do).
    return huffman ? huffmanDecodeRange(this.buf, start, this.pos) : latin1Range(this.buf, start, this.pos);
  }
}

function latin1Range(buf: Uint8Array, start: number, end: number): string {
  if (end - start <= 48) {
    let s = "";
    for (let i = start; i < end; i++) s += String.fromCharCode(buf[i]!);
    return s;
  }
  return latin1(buf.subarray(start, end));
}

function latin1(bytes: Uint8Array): string {
  // String.fromCharCode over chunks: one char per byte, whatever the byte.
  let out = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    out += String.fromCharCode.apply(null, bytes.subarray(i, i + 4096) as unknown as number[]);
  }
  return out;
}

/** A growable output buffer for the encoder. */
class Writer {
  buf = new Uint8Array(256);
  pos = 0;

  reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }

  integer(value: number, prefixBits: number, firstByteFlags: number): void {
    this.reserve(6);
    const max = (1 << prefixBits) - 1;
    if (value < max) {
      this.buf[this.pos++] = firstByteFlags | value;
      return;
    }
    this.buf[this.pos++] = firstByteFlags | max;
    value -= max;
    while (value >= 128) {
      this.buf[this.pos++] = (value % 128) | 0x80;
      value = Math.floor(value / 128);
    }
    this.buf[this.pos++] = value;
  }

  string(s: string, huffman: "auto" | boolean): void {
    const hlen = huffman === false ? Infinity : huffmanEncodedLength(s);
    if (huffman === true || (huffman === "auto" && hlen < s.length)) {
      this.integer(hlen, 7, 0x80);
      this.reserve(hlen);
      huffmanEncodeInto(s, this.buf, this.pos);
      this.pos += hlen;
    } else {
      this.integer(s.length, 7, 0);
      this.reserve(s.length);
      for (let i = 0; i < s.length; i++) this.buf[this.pos++] = s.charCodeAt(i) & 0xff;
    }
  }
}

// ---- Huffman ---------------------------------------------------------------------------------

/**
 * Decoding runs a nibble at a time over a table built once from the code: one state per
 * internal node of the code tree, and for each state and 4-bit input the next state, the symbol
 * completed on the way (at most one: no code is shorter than 5 bits) and whether the state
 * reached may end the string (the root, or a run of at most 7 one-bits: valid padding).
 * Entry layout: bits 0-8 next state, 9-17 symbol, bit 18 emits, bit 19 fails (EOS), bit 20 accepts.
 */
const EMIT = 1 << 18, FAIL = 1 << 19, ACCEPT = 1 << 20;
const HUFF_TABLE: Int32Array = buildDecodeTable();

function buildDecodeTable(): Int32Array {
  // Tree nodes: children per node (negative: leaf with symbol -1-child... kept as separate arrays)
  const left: number[] = [-1], right: number[] = [-1], sym: number[] = [-1];
  const depth: number[] = [0], ones: boolean[] = [true];
  for (let s = 0; s < 257; s++) {
    const code = HUFFMAN_CODES[s]!, len = HUFFMAN_LENGTHS[s]!;
    let node = 0;
    for (let i = len - 1; i >= 0; i--) {
      const bit = (code / 2 ** i) & 1;
      const kids = bit ? right : left;
      let next = kids[node]!;
      if (next < 0) {
        next = sym.length;
        left.push(-1), right.push(-1), sym.push(-1);
        depth.push(depth[node]! + 1), ones.push(ones[node]! && bit === 1);
        kids[node] = next;
      }
      node = next;
    }
    sym[node] = s;
  }
  // Number the internal nodes as states.
  const stateOf = new Map<number, number>();
  const internal: number[] = [];
  for (let n = 0; n < sym.length; n++) {
    if (sym[n] === -1) {
      stateOf.set(n, internal.length);
      internal.push(n);
    }
  }
  const table = new Int32Array(internal.length * 16);
  for (let st = 0; st < internal.length; st++) {
    for (let nib = 0; nib < 16; nib++) {
      let node = internal[st]!;
      let entry = 0;
      for (let i = 3; i >= 0; i--) {
        node = ((nib >> i) & 1 ? right : left)[node]!;
        const s = sym[node]!;
        if (s >= 0) {
          if (s === 256) {
            entry |= FAIL;
            break;
          }
          entry |= EMIT | (s << 9);
          node = 0;
        }
      }
      if ((entry & FAIL) === 0) {
        const state = stateOf.get(node)!;
        entry |= state;
        if (node === 0 || (ones[node]! && depth[node]! <= 7)) entry |= ACCEPT;
      }
      table[st * 16 + nib] = entry;
    }
  }
  return table;
}

/** Decoded symbols of the string being decoded (reused: a typed array per string cost more than the decoding). */
let huffScratch = new Uint16Array(512);

/** Decodes a Huffman-coded string (RFC 7541 §5.2); throws on EOS or invalid padding. */
export function huffmanDecode(bytes: Uint8Array): string {
  return huffmanDecodeRange(bytes, 0, bytes.length);
}

function huffmanDecodeRange(bytes: Uint8Array, start: number, end: number): string {
  // At most 8/5 symbols per byte: no code is shorter than 5 bits.
  const most = Math.ceil(((end - start) * 8) / 5);
  if (huffScratch.length < most) huffScratch = new Uint16Array(most);
  const out = huffScratch, table = HUFF_TABLE;
  let n = 0;
  let state = 0;
  let e = ACCEPT;
  for (let i = start; i < end; i++) {
    const b = bytes[i]!;
    e = table[(state << 4) | (b >> 4)]!;
    if (e & FAIL) throw new HpackError("EOS in a Huffman string");
    if (e & EMIT) out[n++] = (e >> 9) & 0x1ff;
    state = e & 0x1ff;
    e = table[(state << 4) | (b & 15)]!;
    if (e & FAIL) throw new HpackError("EOS in a Huffman string");
    if (e & EMIT) out[n++] = (e >> 9) & 0x1ff;
    state = e & 0x1ff;
  }
  if ((e & ACCEPT) === 0) throw new HpackError("invalid Huffman padding");
  if (n <= 48) {
    // Short strings (most header values): joining characters beats a call through apply().
    let s = "";
    for (let i = 0; i < n; i++) s += String.fromCharCode(out[i]!);
    return s;
  }
  let s = "";
  for (let i = 0; i < n; i += 4096) {
    s += String.fromCharCode.apply(null, out.subarray(i, Math.min(n, i + 4096)) as unknown as number[]);
  }
  return s;
}

/** Length in bytes of `s` Huffman-coded. */
export function huffmanEncodedLength(s: string): number {
  let bits = 0;
  for (let i = 0; i < s.length; i++) bits += HUFFMAN_LENGTHS[s.charCodeAt(i) & 0xff]!;
  return (bits + 7) >> 3;
}

function huffmanEncodeInto(s: string, out: Uint8Array, pos: number): number {
  let acc = 0; // pending bits, fewer than 8 between symbols
  let nbits = 0;
  const put = (code: number, len: number) => {
    acc = (acc << len) | code;
    nbits += len;
    while (nbits >= 8) {
      nbits -= 8;
      out[pos++] = (acc >>> nbits) & 0xff;
    }
    acc &= (1 << nbits) - 1;
  };
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i) & 0xff;
    const code = HUFFMAN_CODES[c]!, len = HUFFMAN_LENGTHS[c]!;
    // Keep the accumulator within 31 bits: long codes go in two parts.
    if (len > 23) {
      put(Math.floor(code / 0x10000), len - 16);
      put(code & 0xffff, 16);
    } else put(code, len);
  }
  if (nbits > 0) out[pos++] = ((acc << (8 - nbits)) | (0xff >> nbits)) & 0xff;
  return pos;
}

/** Huffman-codes `s` (latin1). */
export function huffmanEncode(s: string): Uint8Array {
  const out = new Uint8Array(huffmanEncodedLength(s));
  huffmanEncodeInto(s, out, 0);
  return out;
}

// ---- dynamic table ---------------------------------------------------------------------------

/** The dynamic table (RFC 7541 §2.3.2, §4): newest first, evicting the oldest to fit. */
export class DynamicTable {
  private names: string[] = [];
  private values: string[] = [];
  /** Index in the arrays of the oldest entry; entries run from `head` to the end, oldest first. */
  private head = 0;
  /** Sum of entry sizes. */
  size = 0;
  /** Number of entries ever added (the newest entry's sequence number + 1). */
  inserted = 0;

  constructor(public maxSize: number) {}

  get length(): number {
    return this.names.length - this.head;
  }

  /** Entry `i` (0 = newest) as name and value, or undefined. */
  get(i: number): [string, string] | undefined {
    const at = this.names.length - 1 - i;
    if (i < 0 || at < this.head) return undefined;
    return [this.names[at]!, this.values[at]!];
  }

  add(name: string, value: string): void {
    const size = entrySize(name, value);
    if (size > this.maxSize) {
      // An entry larger than the table empties it and is not added (RFC 7541 §4.4).
      this.evictTo(0);
      return;
    }
    this.evictTo(this.maxSize - size);
    this.inserted++;
    this.names.push(name);
    this.values.push(value);
    this.size += size;
  }

  setMaxSize(maxSize: number): void {
    this.maxSize = maxSize;
    this.evictTo(maxSize);
  }

  private evictTo(target: number): void {
    while (this.size > target && this.head < this.names.length) {
      const name = this.names[this.head]!, value = this.values[this.head]!;
      this.size -= entrySize(name, value);
      this.onEvict?.(name, value, this.inserted - this.length);
      this.head++;
    }
    // Compact now and then, so the arrays do not grow without end.
    if (this.head > 64 && this.head * 2 > this.names.length) {
      this.names = this.names.slice(this.head);
      this.values = this.values.slice(this.head);
      this.head = 0;
    }
  }

  /** Called with the sequence number of each evicted entry (the encoder's index maps use it). */
  onEvict?: (name: string, value: string, seq: number) => void;
}

// ---- decoder ---------------------------------------------------------------------------------

/** Result of decoding one header block. */
export interface DecodedBlock {
  /** The fields, in wire order (cut short when `tooLarge`). */
  headers: HeaderField[];
  /** Header list size (RFC 9113 §6.5.2) of the whole block, counted even past the limit. */
  size: number;
  /** The list exceeded `maxHeaderListSize`; `headers` holds only the fields before the limit. */
  tooLarge: boolean;
}

/** Decoder limits. */
export interface DecoderOptions {
  /** The SETTINGS_HEADER_TABLE_SIZE we advertise: the peer's table size updates may not exceed it. Default 4096. */
  maxTableSize?: number;
  /** The SETTINGS_MAX_HEADER_LIST_SIZE we advertise. Default 64 KiB. */
  maxHeaderListSize?: number;
}

/** Decodes header blocks of one direction of a connection (one per connection and direction). */
export class Decoder {
  readonly table: DynamicTable;
  /** Upper bound for table size updates: the SETTINGS_HEADER_TABLE_SIZE we advertised. */
  maxTableSize: number;
  maxHeaderListSize: number;

  constructor(options: DecoderOptions = {}) {
    this.maxTableSize = options.maxTableSize ?? 4096;
    this.maxHeaderListSize = options.maxHeaderListSize ?? 65536;
    this.table = new DynamicTable(this.maxTableSize);
  }

  /** Decodes one complete header block; throws {@link HpackError} on any coding error. */
  decode(block: Uint8Array): DecodedBlock {
    const r = new Reader(block);
    const headers: HeaderField[] = [];
    let size = 0;
    let tooLarge = false;
    let sawField = false;
    let sizeUpdates = 0;
    const limit = this.maxHeaderListSize;
    while (r.pos < block.length) {
      const b = block[r.pos]!;
      let name: string, value: string, never = false;
      if (b & 0x80) {
        // Indexed field (§6.1).
        const field = this.lookup(r.integer(7));
        name = field[0];
        value = field[1];
      } else if (b & 0x40) {
        // Literal with incremental indexing (§6.2.1).
        const index = r.integer(6);
        name = index === 0 ? r.string() : this.lookup(index)[0];
        value = r.string();
        this.table.add(name, value);
      } else if (b & 0x20) {
        // Dynamic table size update (§6.3): only at the start of a block, at most two.
        if (sawField) throw new HpackError("table size update after a header field");
        if (++sizeUpdates > 2) throw new HpackError("more than two table size updates in a block");
        const newSize = r.integer(5);
        if (newSize > this.maxTableSize) {
          throw new HpackError(`table size update to ${newSize} above the advertised ${this.maxTableSize}`);
        }
        this.table.setMaxSize(newSize);
        continue;
      } else {
        // Literal without indexing (0000) or never indexed (0001) (§6.2.2, §6.2.3).
        never = (b & 0x10) !== 0;
        const index = r.integer(4);
        name = index === 0 ? r.string() : this.lookup(index)[0];
        value = r.string();
      }
      sawField = true;
      size += name.length + value.length + 32; // entrySize()
      if (size > limit) tooLarge = true;
      if (!tooLarge) headers.push(never ? [name, value, true] : [name, value]);
    }
    return { headers, size, tooLarge };
  }

  private lookup(index: number): readonly [string, string] {
    if (index === 0) throw new HpackError("index 0");
    if (index <= STATIC_COUNT) return STATIC_TABLE[index - 1]!;
    const entry = this.table.get(index - STATIC_COUNT - 1);
    if (!entry) throw new HpackError(`index ${index} beyond the tables`);
    return entry;
  }
}

// ---- encoder ---------------------------------------------------------------------------------

/** Static table index by name, then value (nested maps: no key string is built per field). */
const STATIC_FIELD = new Map<string, Map<string, number>>();
const STATIC_NAME = new Map<string, number>();
STATIC_TABLE.forEach(([name, value], i) => {
  let values = STATIC_FIELD.get(name);
  if (!values) STATIC_FIELD.set(name, values = new Map());
  if (!values.has(value)) values.set(value, i + 1);
  if (!STATIC_NAME.has(name)) STATIC_NAME.set(name, i + 1);
});

/** Encoder choices. */
export interface EncoderOptions {
  /** Huffman-code strings: always, never, or when shorter (default). */
  huffman?: "auto" | boolean;
  /** Add fields to the dynamic table (default true); false gives literals without indexing. */
  indexing?: boolean;
}

/** Encodes header blocks of one direction of a connection. */
export class Encoder {
  readonly table: DynamicTable;
  /** Sequence number of the newest dynamic entry of each name and value. */
  private readonly fieldSeq = new Map<string, Map<string, number>>();
  private readonly nameSeq = new Map<string, number>();
  /** Smallest size the table went through since the last block, and the final one (§4.2). */
  private pendingMin = -1;
  private pendingFinal = -1;
  private readonly huffman: "auto" | boolean;
  private readonly indexing: boolean;
  /** Reused between blocks; each block is copied out of it. */
  private readonly w = new Writer();

  constructor(options: EncoderOptions = {}, maxTableSize = 4096) {
    this.huffman = options.huffman ?? "auto";
    this.indexing = options.indexing ?? true;
    this.table = new DynamicTable(maxTableSize);
    this.table.onEvict = (name, value, seq) => {
      const values = this.fieldSeq.get(name);
      if (values?.get(value) === seq) {
        values.delete(value);
        if (values.size === 0) this.fieldSeq.delete(name);
      }
      if (this.nameSeq.get(name) === seq) this.nameSeq.delete(name);
    };
  }

  /** The peer's SETTINGS_HEADER_TABLE_SIZE changed: the next block starts with the update(s). */
  setMaxTableSize(size: number): void {
    if (size === this.table.maxSize && this.pendingFinal < 0) return;
    this.pendingMin = this.pendingMin < 0 ? size : Math.min(this.pendingMin, size);
    this.pendingFinal = size;
    this.table.setMaxSize(size);
  }

  /** Encodes a list of fields into one header block. */
  encode(headers: readonly HeaderField[]): Uint8Array {
    return this.encodeTemporary(headers).slice();
  }

  /**
   * {@link encode} without the copy: the block is a view of the encoder's buffer, valid until
   * the next call (for a caller that copies it out at once).
   */
  encodeTemporary(headers: readonly HeaderField[]): Uint8Array {
    const w = this.w;
    w.pos = 0;
    if (this.pendingFinal >= 0) {
      if (this.pendingMin < this.pendingFinal) w.integer(this.pendingMin, 5, 0x20);
      w.integer(this.pendingFinal, 5, 0x20);
      this.pendingMin = this.pendingFinal = -1;
    }
    for (const [name, value, never] of headers) {
      if (never) {
        const nameIndex = this.nameIndex(name);
        w.integer(nameIndex, 4, 0x10);
        if (nameIndex === 0) w.string(name, this.huffman);
        w.string(value, this.huffman);
        continue;
      }
      const full = STATIC_FIELD.get(name)?.get(value) ??
        this.dynamicIndex(this.fieldSeq.get(name)?.get(value));
      if (full) {
        w.integer(full, 7, 0x80);
        continue;
      }
      const nameIndex = this.nameIndex(name);
      const index = this.indexing && entrySize(name, value) <= this.table.maxSize;
      w.integer(nameIndex, index ? 6 : 4, index ? 0x40 : 0);
      if (nameIndex === 0) w.string(name, this.huffman);
      w.string(value, this.huffman);
      if (index) {
        this.table.add(name, value);
        const seq = this.table.inserted - 1;
        let values = this.fieldSeq.get(name);
        if (!values) this.fieldSeq.set(name, values = new Map());
        values.set(value, seq);
        this.nameSeq.set(name, seq);
      }
    }
    return w.buf.subarray(0, w.pos);
  }

  private nameIndex(name: string): number {
    return STATIC_NAME.get(name) ?? this.dynamicIndex(this.nameSeq.get(name));
  }

  private dynamicIndex(seq: number | undefined): number {
    if (seq === undefined) return 0;
    const age = this.table.inserted - 1 - seq;
    return age < this.table.length ? STATIC_COUNT + 1 + age : 0;
  }
}
