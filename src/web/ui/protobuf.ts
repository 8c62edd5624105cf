/**
 * Protocol Buffers without a schema, as `protoc --decode_raw` reads them: the wire format's
 * fields (varint, fixed64, length-delimited, fixed32) by number, with length-delimited ones
 * shown as text when they are printable UTF-8, else as a nested message when they parse as one
 * completely, else as bytes. And gRPC's framing: a body of 5-byte-prefixed messages (a flag for
 * compression and a big-endian length). Pure functions, for the page and its tests.
 * @module
 */

/** One decoded field. */
export type ProtoField =
  | { field: number; wire: "varint"; value: bigint }
  | { field: number; wire: "fixed64"; value: bigint }
  | { field: number; wire: "fixed32"; value: number }
  | { field: number; wire: "string"; value: string }
  | { field: number; wire: "message"; value: ProtoField[] }
  | { field: number; wire: "bytes"; value: Uint8Array };

/** Nesting deeper than this is shown as bytes. */
const MAX_DEPTH = 16;
/** Most fields decoded from one message (more: the message is not taken as one). */
const MAX_FIELDS = 10_000;

function readVarint(b: Uint8Array, at: number): [bigint, number] | null {
  let v = 0n;
  for (let i = 0; i < 10; i++) {
    if (at + i >= b.length) return null;
    const byte = b[at + i]!;
    v |= BigInt(byte & 0x7f) << BigInt(7 * i);
    if ((byte & 0x80) === 0) return [v, at + i + 1];
  }
  return null;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Printable text: valid UTF-8 with no control characters other than tab, CR and LF. */
function printable(b: Uint8Array): string | null {
  let s: string;
  try {
    s = utf8.decode(b);
  } catch {
    return null;
  }
  // deno-lint-ignore no-control-regex
  return /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(s) ? null : s;
}

/**
 * Decodes `bytes` as one message. Returns null when they are not one: a bad tag, a field number
 * 0, a group (wire types 3 and 4, long deprecated), a length past the end, or a truncated varint.
 */
export function decodeProtobuf(bytes: Uint8Array, depth = 0): ProtoField[] | null {
  const fields: ProtoField[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (fields.length >= MAX_FIELDS) return null;
    const tag = readVarint(bytes, at);
    if (!tag) return null;
    at = tag[1];
    const field = Number(tag[0] >> 3n);
    const wire = Number(tag[0] & 7n);
    if (field < 1 || field > 0x1fffffff) return null;
    switch (wire) {
      case 0: {
        const v = readVarint(bytes, at);
        if (!v) return null;
        fields.push({ field, wire: "varint", value: v[0] });
        at = v[1];
        break;
      }
      case 1: {
        if (at + 8 > bytes.length) return null;
        const value = new DataView(bytes.buffer, bytes.byteOffset + at, 8).getBigUint64(0, true);
        fields.push({ field, wire: "fixed64", value });
        at += 8;
        break;
      }
      case 5: {
        if (at + 4 > bytes.length) return null;
        const value = new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0, true);
        fields.push({ field, wire: "fixed32", value });
        at += 4;
        break;
      }
      case 2: {
        const len = readVarint(bytes, at);
        if (!len || len[0] > BigInt(bytes.length - len[1])) return null;
        at = len[1];
        const data = bytes.subarray(at, at + Number(len[0]));
        at += data.length;
        const text = data.length > 0 ? printable(data) : null;
        const nested = text === null && data.length > 0 && depth < MAX_DEPTH
          ? decodeProtobuf(data, depth + 1)
          : null;
        if (text !== null) fields.push({ field, wire: "string", value: text });
        else if (nested) fields.push({ field, wire: "message", value: nested });
        else fields.push({ field, wire: "bytes", value: data });
        break;
      }
      default:
        return null;
    }
  }
  return fields;
}

/** One gRPC message of a body. */
export interface GrpcFrame {
  /** The flag byte said compressed (with the stream's `grpc-encoding`). */
  compressed: boolean;
  data: Uint8Array;
}

/**
 * Splits a gRPC body into its length-prefixed messages; null when the prefixes do not add up to
 * the body (a truncated capture ends in a partial message, also null).
 */
export function splitGrpcFrames(bytes: Uint8Array): GrpcFrame[] | null {
  const frames: GrpcFrame[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (at + 5 > bytes.length) return null;
    const flag = bytes[at]!;
    if (flag > 1) return null;
    const len = new DataView(bytes.buffer, bytes.byteOffset + at + 1, 4).getUint32(0, false);
    if (at + 5 + len > bytes.length) return null;
    frames.push({ compressed: flag === 1, data: bytes.subarray(at + 5, at + 5 + len) });
    at += 5 + len;
  }
  return frames;
}

function hex(b: Uint8Array, max = 64): string {
  const s = Array.from(b.subarray(0, max), (x) => x.toString(16).padStart(2, "0")).join(" ");
  return b.length > max ? `${s} … (${b.length} bytes)` : s;
}

/** Fields as text, one a line, nested messages indented in braces (like `protoc --decode_raw`). */
export function formatProtobuf(fields: ProtoField[], indent = ""): string {
  const lines: string[] = [];
  for (const f of fields) {
    switch (f.wire) {
      case "varint": {
        // A negative int64 is a ten-byte varint: shown signed too.
        const signed = BigInt.asIntN(64, f.value);
        const extra = signed < 0n ? ` (int64 ${signed})` : "";
        lines.push(`${indent}${f.field}: ${f.value}${extra}`);
        break;
      }
      case "fixed64": {
        const d = new DataView(new ArrayBuffer(8));
        d.setBigUint64(0, f.value, true);
        lines.push(
          `${indent}${f.field}: 0x${f.value.toString(16).padStart(16, "0")} (double ${
            d.getFloat64(0, true)
          })`,
        );
        break;
      }
      case "fixed32": {
        const d = new DataView(new ArrayBuffer(4));
        d.setUint32(0, f.value, true);
        lines.push(
          `${indent}${f.field}: 0x${f.value.toString(16).padStart(8, "0")} (float ${d.getFloat32(0, true)})`,
        );
        break;
      }
      case "string":
        lines.push(`${indent}${f.field}: ${JSON.stringify(f.value)}`);
        break;
      case "message":
        lines.push(`${indent}${f.field} {`, formatProtobuf(f.value, indent + "  "), `${indent}}`);
        break;
      case "bytes":
        lines.push(`${indent}${f.field}: bytes ${hex(f.value)}`);
        break;
    }
  }
  return lines.filter((l) => l !== "").join("\n");
}
