/**
 * Pieces shared by the flow file formats (HAR entries and JSON lines): times as ISO 8601, the
 * client/server/error objects, and bytes as text or base64.
 * @module
 */
import { Buffer } from "node:buffer";
import type { ClientInfo, FlowError, ServerInfo } from "./flow.ts";
import { formatHostPort } from "./flow.ts";

/** The client of a flow in flow files. */
export interface ClientJson {
  /** `host:port`. */
  address: string;
  mode: ClientInfo["mode"];
  peer?: { publicKey: string; endpoint?: string };
}

/** The server of a flow in flow files. */
export interface ServerJson {
  /** `host:port` we connected to. */
  address: string;
  hostname?: string;
  peerAddress?: string;
  /** ISO 8601. */
  timestampConnected?: string;
  timestampTlsSetup?: string;
}

/** A flow's error in flow files. */
export interface ErrorJson {
  message: string;
  /** ISO 8601. */
  timestamp: string;
}

export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** Rounds to microseconds, so sums of timestamps do not show float noise. */
export function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

export function clientJson(client: ClientInfo): ClientJson {
  const out: ClientJson = { address: formatHostPort(client.address), mode: client.mode };
  if (client.peer !== undefined) {
    out.peer = client.peer.endpoint === undefined
      ? { publicKey: client.peer.publicKey }
      : { publicKey: client.peer.publicKey, endpoint: client.peer.endpoint };
  }
  return out;
}

export function serverJson(server: ServerInfo): ServerJson {
  const out: ServerJson = { address: formatHostPort(server.address) };
  if (server.hostname !== undefined) out.hostname = server.hostname;
  if (server.peerAddress !== undefined) out.peerAddress = formatHostPort(server.peerAddress);
  if (server.timestampConnected !== undefined) out.timestampConnected = iso(server.timestampConnected);
  if (server.timestampTlsSetup !== undefined) out.timestampTlsSetup = iso(server.timestampTlsSetup);
  return out;
}

export function errorJson(error: FlowError): ErrorJson {
  return { message: error.message, timestamp: iso(error.timestamp) };
}

/**
 * Bytes as text when they are UTF-8 without control characters other than whitespace and ESC,
 * else as base64. A truncated prefix may end inside a character; that tail is left out.
 */
export function encodeBytes(bytes: Uint8Array, truncated: boolean): { text: string; base64: boolean } {
  for (const b of bytes) {
    if ((b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d && b !== 0x0c && b !== 0x1b) || b === 0x7f) {
      return { text: base64(bytes), base64: true };
    }
  }
  try {
    // `stream: true` keeps an unfinished last character back instead of failing on it; the
    // decoder is new each time, so nothing held back leaks into the next call.
    const text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes, {
      stream: truncated,
    });
    return { text, base64: false };
  } catch {
    return { text: base64(bytes), base64: true };
  }
}

export function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}
