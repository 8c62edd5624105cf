/**
 * Rows for the store's writer packed into one string and one buffer, the form in which
 * {@link WorkerFlowStore} hands a batch of flows to its worker.
 *
 * Why: posting an array of {@link FlowRow} objects to a worker clones every object and field
 * (about 15 µs a flow, more than encoding the flow itself), while a string is copied whole and a
 * buffer is transferred. Each row becomes a JSON array of its column values and blob sizes,
 * `\u0001`, and the flow's JSON; rows are joined with `\u0002`. JSON text never holds a raw
 * control character (JSON.stringify escapes them), so the two separators cannot occur inside a
 * part. The blobs of all rows follow one another in one buffer, in order.
 * @module
 */
import type { Flow } from "./flow.ts";
import type { FlowRow } from "./store.ts";

const ROW_SEPARATOR = "\u0002";
const PART_SEPARATOR = "\u0001";

/** A batch of rows in the form {@link packRow} and {@link RowPacker.take} give. */
export interface PackedRows {
  /** The rows' metadata and flow JSON (see the module's description). */
  text: string;
  /** The rows' blobs one after the other. */
  bytes: ArrayBuffer;
  /** How many rows. */
  count: number;
}

/** The JSON array before a row's flow JSON: its column values, then the sizes of its blobs. */
type Header = [
  id: string,
  type: Flow["type"],
  timestampStart: number,
  timestampEnd: number | null,
  port: number,
  error: string | null,
  ended: 0 | 1,
  cut: number,
  host: string,
  hostAlt: string,
  method: string,
  url: string,
  urlAlt: string,
  status: number,
  hasResponse: number,
  websocket: number,
  requestSize: number,
  responseSize: number,
  client: string,
  server: string,
  peer: string,
  peerName: string,
  mark: string | null,
  comment: string | null,
  ...blobSizes: number[],
];
const FIXED = 24;

/** Collects rows and gives them out packed, a batch at a time. */
export class RowPacker {
  #parts: string[] = [];
  #blobs: Uint8Array[] = [];
  #size = 0;

  /** Rows waiting. */
  get count(): number {
    return this.#parts.length;
  }

  /** Adds a row (its blobs are copied when the batch is taken, not kept beyond). */
  add(row: FlowRow): void {
    const { flow, c, encoded } = row;
    const header: Header = [
      flow.id,
      flow.type,
      flow.timestampStart,
      flow.timestampEnd ?? null,
      flow.server.address.port,
      flow.error === undefined ? null : flow.error.message,
      row.ended ? 1 : 0,
      encoded.cut,
      c.host,
      c.hostAlt,
      c.method,
      c.url,
      c.urlAlt,
      c.status,
      c.hasResponse,
      c.websocket,
      c.requestSize,
      c.responseSize,
      c.client,
      c.server,
      c.peer,
      c.peerName,
      row.mark ?? null,
      row.comment ?? null,
    ];
    for (const b of encoded.blobs) {
      header.push(b.byteLength);
      this.#blobs.push(b);
      this.#size += b.byteLength;
    }
    this.#parts.push(JSON.stringify(header) + PART_SEPARATOR + encoded.json);
  }

  /** The rows so far, packed; the packer starts empty again. */
  take(): PackedRows {
    const bytes = new Uint8Array(this.#size);
    let at = 0;
    for (const b of this.#blobs) {
      bytes.set(b, at);
      at += b.byteLength;
    }
    const packed = { text: this.#parts.join(ROW_SEPARATOR), bytes: bytes.buffer, count: this.#parts.length };
    this.#parts = [];
    this.#blobs = [];
    this.#size = 0;
    return packed;
  }
}

/** The rows of a {@link PackedRows}; their blobs are views of its buffer. */
export function unpackRows(packed: PackedRows): FlowRow[] {
  if (packed.count === 0) return [];
  const rows: FlowRow[] = [];
  const all = new Uint8Array(packed.bytes);
  let at = 0;
  for (const text of packed.text.split(ROW_SEPARATOR)) {
    const cut = text.indexOf(PART_SEPARATOR);
    if (cut < 0) throw new Error("a packed flow row has no separator");
    const h = JSON.parse(text.slice(0, cut)) as Header;
    if (!Array.isArray(h) || h.length < FIXED) throw new Error("a packed flow row's header is damaged");
    const blobs: Uint8Array[] = [];
    for (let i = FIXED; i < h.length; i++) {
      const size = h[i] as number;
      if (at + size > all.byteLength) throw new Error("a packed flow row's blobs are cut short");
      blobs.push(all.subarray(at, at + size));
      at += size;
    }
    const row: FlowRow = {
      flow: { id: h[0], type: h[1], timestampStart: h[2], server: { address: { port: h[4] } } },
      ended: h[6] === 1,
      c: {
        host: h[8],
        hostAlt: h[9],
        method: h[10],
        url: h[11],
        urlAlt: h[12],
        status: h[13],
        hasResponse: h[14],
        websocket: h[15],
        requestSize: h[16],
        responseSize: h[17],
        client: h[18],
        server: h[19],
        peer: h[20],
        peerName: h[21],
      },
      encoded: { json: text.slice(cut + 1), blobs, cut: h[7] },
    };
    if (h[3] !== null) row.flow.timestampEnd = h[3];
    if (h[5] !== null) row.flow.error = { message: h[5] };
    if (h[22] !== null) row.mark = h[22];
    if (h[23] !== null) row.comment = h[23];
    rows.push(row);
  }
  if (rows.length !== packed.count) throw new Error("a packed batch holds fewer rows than it says");
  return rows;
}
