/**
 * The mutable payloads of the non-HTTP hooks (connections, TLS, CONNECT, WebSocket/TCP/UDP
 * messages, DNS): plain objects the layers and drivers hand to the addons and read back once the
 * hooks returned. No I/O here: a layer makes one, issues an `addon-hook` command with it, and on
 * the `addon-result` event looks at what the addons left in it.
 * @module
 */
import type { DnsFlow, HttpFlow, MessageRecord, TcpFlow, TlsInfo, UdpFlow } from "../flows/flow.ts";
import type { DnsMessage } from "../proxy/dns_message.ts";
import { localDnsResponse } from "../proxy/dns_encode.ts";
import { Fields, type MadeResponse, reasonPhrase } from "./flow_handle.ts";
import type {
  BodyInit,
  ConnectionInfo,
  DnsFlowHandle,
  HeadersInit,
  HttpConnectHandle,
  MessageHandle,
  ServerConnectHandle,
  TcpFlowHandle,
  UdpFlowHandle,
  WebSocketFlowHandle,
} from "./types.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One message as `*Message` hooks see it (see {@link MessageHandle}). */
export class MessageView implements MessageHandle {
  readonly fromClient: boolean;
  readonly kind: MessageRecord["kind"];
  #content: Uint8Array;
  #dropped = false;
  /** True once a hook set `content` or `text`. */
  changed = false;

  constructor(fromClient: boolean, kind: MessageRecord["kind"], content: Uint8Array) {
    this.fromClient = fromClient;
    this.kind = kind;
    this.#content = content;
  }

  get content(): Uint8Array {
    return this.#content;
  }
  set content(value: Uint8Array) {
    if (!(value instanceof Uint8Array)) throw new TypeError("message content must be a Uint8Array");
    this.#content = value;
    this.changed = true;
  }

  get text(): string {
    return decoder.decode(this.#content);
  }
  set text(value: string) {
    this.content = encoder.encode(String(value));
  }

  drop(): void {
    this.#dropped = true;
  }

  get dropped(): boolean {
    return this.#dropped;
  }
}

/** A flow with its current message and a kill switch: the payload of TCP, UDP and WebSocket hooks. */
class MessageFlowView<F> {
  readonly flow: Readonly<F>;
  readonly message?: MessageView;
  #killed = false;

  constructor(flow: F, message?: MessageView) {
    this.flow = flow;
    if (message) this.message = message;
  }

  /** Ends the flow: both sides are closed (reset). */
  kill(): void {
    this.#killed = true;
  }

  /** True once {@link kill} was called. */
  get killed(): boolean {
    return this.#killed;
  }
}

/** The payload of `tcp*` hooks. */
export class TcpFlowView extends MessageFlowView<TcpFlow> implements TcpFlowHandle {}
/** The payload of `udp*` hooks. */
export class UdpFlowView extends MessageFlowView<UdpFlow> implements UdpFlowHandle {}
/** The payload of `websocket*` hooks. */
export class WebSocketFlowView extends MessageFlowView<HttpFlow> implements WebSocketFlowHandle {}

/** The payload of `dnsRequest`/`dnsResponse` (see {@link DnsFlowHandle}). */
export class DnsFlowView implements DnsFlowHandle {
  readonly flow: Readonly<DnsFlow>;
  readonly request: DnsMessage | undefined;
  response: DnsMessage | undefined;
  #killed = false;

  constructor(flow: DnsFlow, response?: DnsMessage) {
    this.flow = flow;
    this.request = flow.request;
    this.response = response;
  }

  answer(addresses: string | readonly string[], ttl = 60): void {
    if (!this.request) throw new Error("the query could not be parsed: it cannot be answered");
    this.response = localDnsResponse(
      this.request,
      0,
      typeof addresses === "string" ? [addresses] : addresses,
      ttl,
    );
  }

  answerError(rcode: number): void {
    if (!this.request) throw new Error("the query could not be parsed: it cannot be answered");
    if (!Number.isInteger(rcode) || rcode < 0 || rcode > 15) throw new RangeError(`bad rcode ${rcode}`);
    this.response = localDnsResponse(this.request, rcode);
  }

  kill(): void {
    this.#killed = true;
  }

  get killed(): boolean {
    return this.#killed;
  }
}

/** The payload of `serverConnect` (see {@link ServerConnectHandle}). */
export class ServerConnectView implements ServerConnectHandle {
  readonly id: string;
  readonly client: ConnectionInfo["client"];
  readonly server: ConnectionInfo["server"];
  readonly tls?: Readonly<TlsInfo>;
  address: { hostname: string; port: number };
  #killed = false;

  constructor(connection: ConnectionInfo, address: { hostname: string; port: number }) {
    this.id = connection.id;
    this.client = connection.client;
    this.server = connection.server;
    if (connection.tls) this.tls = connection.tls;
    this.address = { hostname: address.hostname, port: address.port };
  }

  kill(): void {
    this.#killed = true;
  }

  get killed(): boolean {
    return this.#killed;
  }
}

/** The payload of `httpConnect` (see {@link HttpConnectHandle}). */
export class HttpConnectView implements HttpConnectHandle {
  readonly client: ConnectionInfo["client"];
  readonly host: string;
  readonly port: number;
  readonly headers: Fields;
  #response: MadeResponse | undefined;
  #killed = false;

  constructor(
    client: ConnectionInfo["client"],
    address: { hostname: string; port: number },
    headers: [string, string][] = [],
  ) {
    this.client = client;
    this.host = address.hostname;
    this.port = address.port;
    this.headers = new Fields(headers);
  }

  respond(status: number, headers?: HeadersInit, body?: BodyInit): void {
    if (!Number.isInteger(status) || status < 100 || status > 999) {
      throw new RangeError(`invalid status ${status}`);
    }
    const fields = new Fields(headers);
    const bytes = body === undefined
      ? new Uint8Array(0)
      : typeof body === "string"
      ? encoder.encode(body)
      : body;
    this.#response = { status, reason: reasonPhrase(status), headers: fields.toArray(), body: bytes };
  }

  kill(): void {
    this.#killed = true;
  }

  /** The answer a hook gave (the tunnel is then refused with it). */
  get response(): MadeResponse | undefined {
    return this.#response;
  }

  get killed(): boolean {
    return this.#killed;
  }
}
