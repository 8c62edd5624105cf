/**
 * Flow records: what the proxy saw of one exchange (an HTTP request and its response, a relayed
 * TCP connection, a UDP conversation, a DNS query), and the bus that hands them to consumers
 * (terminal output, flow files, the library's `flows` iterable).
 *
 * Invariants: a flow is emitted as `start` once, may be emitted as `update` any number of times,
 * and is emitted as `end` exactly once, after which it is never changed again. Bodies and message
 * contents are kept up to a bounded prefix; the full size is always recorded.
 * @module
 */
import type { Headers1 } from "../proxy/http1.ts";
import type { DnsMessage } from "../proxy/dns_message.ts";
import { countGrpcBody, endGrpcFlow, type GrpcMessages } from "./grpc.ts";

/** A host and port. */
export interface HostPort {
  hostname: string;
  port: number;
}

/** The WireGuard peer a connection came through. */
export interface FlowPeer {
  /** The peer's public key (base64). */
  publicKey: string;
  /** Its outer UDP endpoint as `host:port`, when known. */
  endpoint?: string;
}

/** The client side of a flow. */
export interface ClientInfo {
  /** The client's address (inside the tunnel in WireGuard mode). */
  address: HostPort;
  /** How the connection reached us. */
  mode: "wireguard" | "regular" | "socks5" | "dns" | "reverse" | "tun";
  /** The tunnel peer (WireGuard mode). */
  peer?: FlowPeer;
}

/** The server side of a flow. */
export interface ServerInfo {
  /** Where we connected (the original destination, or the host from the request). */
  address: HostPort;
  /** The name the client used for it (SNI or Host header), when there is one. */
  hostname?: string;
  /** The address we actually reached, once connected. */
  peerAddress?: HostPort;
  /** When the server connection was opened (ms since the epoch). */
  timestampConnected?: number;
  /** When the TLS handshake with the server completed. */
  timestampTlsSetup?: number;
}

/** Summary of the certificate a server presented. */
export interface CertificateSummary {
  subject: string;
  issuer: string;
  dnsNames: string[];
  ipAddresses: string[];
  validFrom: string;
  validTo: string;
  fingerprintSha256: string;
}

/** TLS details of a flow. */
export interface TlsInfo {
  /** The server name the client asked for. */
  sni?: string;
  /** The protocols the client offered (ALPN). */
  alpnOffered: string[];
  /** The protocol agreed with the client. */
  alpn?: string;
  /** Protocol version with the client (e.g. `TLSv1.3`). */
  clientVersion?: string;
  /** Protocol version and cipher with the server. */
  serverVersion?: string;
  serverCipher?: string;
  /** The server's certificate. */
  serverCertificate?: CertificateSummary;
  /** True when the TLS connection was relayed without interception. */
  passthrough: boolean;
  /**
   * Why it was relayed without interception when the user did not ask for it (e.g. "client
   * offered only TLS 1.1"); absent for hosts passed through by `ignoreHosts`/`allowHosts`.
   */
  passthroughReason?: string;
}

/** A recorded body: a bounded prefix of the decoded payload and its full size. */
export interface BodyRecord {
  /** The first bytes of the body (at most the proxy's `bodyLimit`). */
  content: Uint8Array;
  /** Size of the whole decoded body in bytes. */
  size: number;
  /** True when `content` holds less than the whole body. */
  truncated: boolean;
}

/** The request of an HTTP flow. */
export interface HttpRequestRecord {
  method: string;
  /** `http` or `https`. */
  scheme: string;
  /** The host the request is for (Host header, SNI, or address). */
  host: string;
  port: number;
  /** The request target as sent (origin form, e.g. `/a?b`; authority form for CONNECT). */
  path: string;
  /** The full URL, e.g. `https://example.com/a?b`. */
  url: string;
  httpVersion: string;
  /** Headers in wire order and case. */
  headers: Headers1;
  /**
   * The Host header, when it names another host (or port) than the connection's destination in
   * transparent mode: `url` and `host` then name the destination the bytes really went to.
   */
  hostHeader?: string;
  /** `:protocol` of an HTTP/2 extended CONNECT (RFC 8441), e.g. `websocket`: its DATA are the body. */
  protocol?: string;
  body: BodyRecord;
  /** Trailer fields after the body (HTTP/2), in wire order. */
  trailers?: Headers1;
  /** The gRPC messages of the body (counts and sizes), when its content type is gRPC's. */
  grpc?: GrpcMessages;
  /** When the first byte of the request arrived and when its last byte did (ms since the epoch). */
  timestampStart: number;
  timestampEnd?: number;
}

/** The response of an HTTP flow. */
export interface HttpResponseRecord {
  status: number;
  reason: string;
  httpVersion: string;
  headers: Headers1;
  body: BodyRecord;
  /** Trailer fields after the body (HTTP/2), in wire order. */
  trailers?: Headers1;
  /**
   * The gRPC messages of the body and the call's status (from the trailers), when the request
   * was gRPC; complete once the flow ended.
   */
  grpc?: GrpcMessages;
  timestampStart: number;
  timestampEnd?: number;
}

/** One recorded message of a WebSocket, TCP or UDP flow. */
export interface MessageRecord {
  /** True for client → server. */
  fromClient: boolean;
  /** For WebSocket: `text`, `binary`, `close`, `ping`, `pong`; `data` for TCP and UDP. */
  kind: "text" | "binary" | "close" | "ping" | "pong" | "data";
  /** The payload (a bounded prefix). */
  content: Uint8Array;
  /** Full payload size. */
  size: number;
  timestamp: number;
}

/** Where and when a flow failed. */
export interface FlowError {
  message: string;
  timestamp: number;
}

interface FlowBase {
  /** Unique id (UUID). */
  id: string;
  client: ClientInfo;
  server: ServerInfo;
  tls?: TlsInfo;
  /** When the flow began and ended (ms since the epoch). */
  timestampStart: number;
  timestampEnd?: number;
  error?: FlowError;
  /**
   * The user's mark: "" or absent when unmarked, `:default:` for a plain mark, else the mark's
   * name (mitmproxy's markers). Set by a flow store (`setMark`), never by the proxy.
   */
  marked?: string;
  /** The user's comment ("" or absent when none). Set by a flow store (`setComment`). */
  comment?: string;
}

/** An HTTP request and its response (and, after an upgrade, the WebSocket messages). */
export interface HttpFlow extends FlowBase {
  type: "http";
  /** The HTTP/2 stream id on the client's connection (HTTP/2 flows only). */
  streamId?: number;
  /**
   * Set when replay made this flow: `client` for a recorded request sent again (`replayOf` names
   * the original), `server` for a request answered from a recording without reaching the server.
   */
  replay?: "client" | "server";
  /** The id of the recorded flow this one replays. */
  replayOf?: string;
  request: HttpRequestRecord;
  response?: HttpResponseRecord;
  websocket?: {
    messages: MessageRecord[];
    messagesDropped: number;
    closeCode?: number;
    closeReason?: string;
  };
}

/** A relayed TCP connection whose payload was not HTTP (or was passed through). */
export interface TcpFlow extends FlowBase {
  type: "tcp";
  bytesFromClient: number;
  bytesFromServer: number;
  messages: MessageRecord[];
  messagesDropped: number;
}

/** A UDP conversation (one client address and port with one server address and port). */
export interface UdpFlow extends FlowBase {
  type: "udp";
  bytesFromClient: number;
  bytesFromServer: number;
  messages: MessageRecord[];
  messagesDropped: number;
}

/** A DNS query answered through the tunnel. */
export interface DnsFlow extends FlowBase {
  type: "dns";
  /** The parsed query (absent when it could not be parsed). */
  request?: DnsMessage;
  response?: DnsMessage;
  /** The resolver that answered. */
  resolver?: HostPort;
}

/** Any flow. */
export type Flow = HttpFlow | TcpFlow | UdpFlow | DnsFlow;

/** What happened to a flow. */
export interface FlowEvent {
  type: "start" | "update" | "end";
  flow: Flow;
}

/** A log line from the proxy (connection-level events, warnings). */
export interface LogEvent {
  level: "debug" | "info" | "warn" | "error";
  message: string;
}

/** Listener of flow events. */
export type FlowListener = (event: FlowEvent) => void;

/**
 * Fan-out of flow events to subscribers. A subscriber that throws is logged and kept; one
 * consumer's failure must not stop the proxy or the others.
 */
export class FlowBus {
  #listeners = new Set<FlowListener>();
  #logListeners = new Set<(event: LogEvent) => void>();

  /** Adds a listener; returns a function that removes it. */
  subscribe(listener: FlowListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Adds a log listener; returns a function that removes it. */
  onLog(listener: (event: LogEvent) => void): () => void {
    this.#logListeners.add(listener);
    return () => this.#logListeners.delete(listener);
  }

  /** Hands an event to every listener. */
  emit(type: FlowEvent["type"], flow: Flow): void {
    for (const listener of this.#listeners) {
      try {
        listener({ type, flow });
      } catch (e) {
        this.log("error", `flow listener failed: ${(e as Error).message}`);
      }
    }
  }

  /** Hands a log line to every log listener. */
  log(level: LogEvent["level"], message: string): void {
    for (const listener of this.#logListeners) {
      try {
        listener({ level, message });
      } catch { /* a log sink that fails has nowhere to report it */ }
    }
  }
}

/** The buffer behind each record's `content` that {@link appendBody} made and may write past. */
const bodyBuffers = new WeakMap<BodyRecord, Uint8Array>();

/**
 * Appends to a bounded body record in amortised constant time per byte. The kept prefix lives in
 * a buffer that doubles when full (capped at `limit`), and `content` is a view of its filled
 * part: nothing is joined or copied again when the record is read. Copying the whole prefix into
 * a new array for every piece made recording quadratic: a 3 MB body sent in 1-byte chunks took
 * 11.6 s and held the event loop the whole time.
 */
export function appendBody(body: BodyRecord, data: Uint8Array, limit: number): void {
  body.size += data.byteLength;
  const kept = body.content.byteLength;
  const room = limit - kept;
  if (room <= 0) {
    if (data.byteLength > 0) body.truncated = true;
    return;
  }
  if (data.byteLength === 0) return;
  const take = data.byteLength <= room ? data : data.subarray(0, room);
  if (take.byteLength < data.byteLength) body.truncated = true;
  const needed = kept + take.byteLength;
  let buffer = bodyBuffers.get(body);
  // Only a buffer made here for this record, still behind its content, is written past the end.
  if (
    !buffer || buffer.buffer !== body.content.buffer || body.content.byteOffset !== 0 ||
    needed > buffer.byteLength
  ) {
    buffer = new Uint8Array(Math.min(limit, Math.max(needed, 2 * kept, 256)));
    buffer.set(body.content);
    bodyBuffers.set(body, buffer);
  }
  // Bytes below `kept` are never written again, so views handed out earlier stay as they were.
  buffer.set(take, kept);
  body.content = buffer.subarray(0, needed);
}

/**
 * Appends a piece of a request's or response's body: to the bounded body record
 * ({@linkcode appendBody}), and for a gRPC body to its message counts (`record.grpc`).
 */
export function appendRecordBody(
  record: HttpRequestRecord | HttpResponseRecord,
  data: Uint8Array,
  limit: number,
): void {
  appendBody(record.body, data, limit);
  countGrpcBody(record, data);
}

/**
 * Finishes what is derived from an HTTP flow's bodies when the flow ends (before its `end` event):
 * for a gRPC call, a message cut short marks its side incomplete and the status comes from the
 * trailers. Layers that append with {@linkcode appendRecordBody} call it once per flow.
 */
export function endHttpFlow(flow: HttpFlow): void {
  endGrpcFlow(flow);
}

/** An empty body record. */
export function emptyBody(): BodyRecord {
  return { content: new Uint8Array(0), size: 0, truncated: false };
}

const recordedBytes = new WeakMap<object, number>();

/**
 * The part of `data` a flow may still keep: every flow has a budget of `budget` content bytes
 * over all its messages, so a long-lived connection (a bulk transfer, a chatty WebSocket) keeps
 * a bounded prefix of its traffic, not all of it. Returns a copy (callers reuse their buffers).
 */
export function boundedContent(flow: object, data: Uint8Array, budget: number): Uint8Array {
  const used = recordedBytes.get(flow) ?? 0;
  const take = Math.min(data.byteLength, Math.max(0, budget - used));
  if (take === 0) return new Uint8Array(0);
  recordedBytes.set(flow, used + take);
  return data.slice(0, take);
}

/**
 * Adds a message to a flow's bounded message list: at most `maxMessages` messages are kept (the
 * rest are counted in `messagesDropped`), and their contents share a budget of `budget` bytes;
 * past it, messages keep their size and time but no content.
 */
export function recordMessage(
  flow: { messages: MessageRecord[]; messagesDropped: number },
  message: Omit<MessageRecord, "content" | "size"> & { data: Uint8Array },
  budget: number,
  maxMessages: number,
): void {
  if (flow.messages.length >= maxMessages) {
    flow.messagesDropped++;
    return;
  }
  const { data, ...rest } = message;
  flow.messages.push({ ...rest, content: boundedContent(flow, data, budget), size: data.byteLength });
}

/** Formats a host and port, bracketing IPv6 addresses. */
export function formatHostPort(address: HostPort): string {
  return address.hostname.includes(":")
    ? `[${address.hostname}]:${address.port}`
    : `${address.hostname}:${address.port}`;
}
