/**
 * What the HTTP/2 layers send when the proxy itself answers a stream (no upstream, an upstream
 * that broke, a request that cannot be relayed): a short text body with the reason, or, for a
 * gRPC request (`content-type: application/grpc...`), a trailers-only gRPC error — `:status 200`
 * with `grpc-status` and `grpc-message` in the one HEADERS frame that ends the stream — since
 * gRPC clients read the status from there and show an HTTP 502 only as "unknown".
 * @module
 */
import type { HeaderField } from "./http2/hpack.ts";

/** A local answer: the response fields (`:status` first), and the body (empty when trailers-only). */
export interface LocalAnswer {
  headers: HeaderField[];
  body: Uint8Array;
  /** The answer is the HEADERS frame alone, with END_STREAM (gRPC's trailers-only form). */
  trailersOnly: boolean;
  /** The status recorded in the flow. */
  status: number;
}

/** gRPC status codes for the HTTP statuses the proxy answers with (gRPC's HTTP-to-gRPC mapping). */
const GRPC_STATUS: Record<number, number> = {
  400: 13, // INTERNAL
  501: 12, // UNIMPLEMENTED
  502: 14, // UNAVAILABLE
  503: 14, // UNAVAILABLE
  504: 4, // DEADLINE_EXCEEDED
};

/** True for a gRPC request (its content-type is `application/grpc` or `application/grpc+...`). */
export function isGrpcRequest(headers: readonly (readonly [string, string])[]): boolean {
  for (const [name, value] of headers) {
    if (name === "content-type") return /^application\/grpc(?:[+;]|$)/i.test(value.trim());
  }
  return false;
}

/** `grpc-message` is percent-encoded: bytes outside printable ASCII, and `%` itself. */
export function encodeGrpcMessage(text: string): string {
  let out = "";
  for (const byte of new TextEncoder().encode(text)) {
    if (byte >= 0x20 && byte <= 0x7e && byte !== 0x25) out += String.fromCharCode(byte);
    else out += "%" + byte.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

/** The answer to send for `status` and `reason` to a request with these (regular) fields. */
export function localAnswer(
  status: number,
  reason: string,
  requestHeaders: readonly (readonly [string, string])[],
): LocalAnswer {
  if (isGrpcRequest(requestHeaders)) {
    return {
      headers: [
        [":status", "200"],
        ["content-type", "application/grpc"],
        ["grpc-status", String(GRPC_STATUS[status] ?? 2)], // 2: UNKNOWN
        ["grpc-message", encodeGrpcMessage(`wirescope: ${reason}`)],
      ],
      body: new Uint8Array(0),
      trailersOnly: true,
      status: 200,
    };
  }
  const body = new TextEncoder().encode(`wirescope: ${reason}\n`);
  return {
    headers: [
      [":status", String(status)],
      ["content-type", "text/plain; charset=utf-8"],
      ["content-length", String(body.byteLength)],
    ],
    body,
    trailersOnly: false,
    status,
  };
}
