/**
 * Raw TCP relay: bytes pass unchanged both ways and are recorded as a {@link TcpFlow}.
 *
 * Used for connections that are neither TLS nor HTTP, for passthrough hosts (TLS relayed
 * untouched), and for decrypted TLS that carries something other than HTTP.
 *
 * Invariants: the server connection is opened once, when the layer starts (unless the driver
 * already has one); bytes from a side that arrive before the server is up are held and sent in
 * order; a FIN from one side becomes a half-close toward the other; the flow ends when both
 * sides finished or either failed, and a failure on one side resets the other.
 * @module
 */
import type { ClientInfo, ServerInfo, TcpFlow, TlsInfo } from "../flows/flow.ts";
import { formatHostPort, recordMessage } from "../flows/flow.ts";
import { appendBytes, type HookSet, type Layer, type LayerCommand, type LayerEvent } from "./layer.ts";
import { MessageView, TcpFlowView } from "../addons/handles.ts";

/** Options of {@link TcpLayer}. */
export interface TcpLayerOptions {
  id: string;
  client: ClientInfo;
  server: ServerInfo;
  tls?: TlsInfo;
  /** True when the driver already has the server connection. */
  serverConnected: boolean;
  /** Content bytes kept in the flow over all its messages. */
  messageLimit: number;
  /** Messages kept in the flow. */
  maxMessages: number;
  now: number;
  /**
   * The addon hooks some addon defines: `tcpStart`, `tcpMessage` (each chunk held until the hooks
   * return; they may change or drop it, or kill the flow) and `tcpEnd` are asked for with
   * `addon-hook` commands. Absent: no hook, nothing held.
   */
  hooks?: HookSet;
}

/** Relays a TCP connection and records it. */
export class TcpLayer implements Layer {
  readonly flow: TcpFlow;
  #options: TcpLayerOptions;
  #server: "connecting" | "open" | "failed" = "connecting";
  #pending: Uint8Array = new Uint8Array(0);
  #clientEof = false;
  #serverEof = false;
  #ended = false;
  #started = false;
  /** Hook calls whose results are awaited, by id. */
  #calls = new Map<number, TcpFlowView>();
  #nextCall = 1;
  #hookMessages: boolean;

  constructor(options: TcpLayerOptions) {
    this.#options = options;
    this.flow = {
      id: options.id,
      type: "tcp",
      client: options.client,
      server: options.server,
      timestampStart: options.now,
      bytesFromClient: 0,
      bytesFromServer: 0,
      messages: [],
      messagesDropped: 0,
    };
    if (options.tls) this.flow.tls = options.tls;
    if (options.serverConnected) this.#server = "open";
    this.#hookMessages = options.hooks?.has("tcpMessage") ?? false;
  }

  #call(hook: "tcpStart" | "tcpMessage" | "tcpEnd", view: TcpFlowView, out: LayerCommand[]): void {
    const id = this.#nextCall++;
    if (hook !== "tcpEnd") this.#calls.set(id, view);
    out.push({ type: "addon-hook", id, call: { hook, payload: view } });
  }

  /** The commands that start the relay (flow start, and opening the server if needed). */
  start(): LayerCommand[] {
    this.#started = true;
    const out: LayerCommand[] = [{ type: "flow", event: "start", flow: this.flow }];
    if (this.#server === "connecting") out.push({ type: "open-server", address: this.flow.server.address });
    if (this.#options.hooks?.has("tcpStart")) this.#call("tcpStart", new TcpFlowView(this.flow), out);
    return out;
  }

  handle(event: LayerEvent): LayerCommand[] {
    const out: LayerCommand[] = [];
    if (!this.#started) out.push(...this.start());
    if (this.#ended) return out;
    switch (event.type) {
      case "data":
        if (this.#hookMessages) {
          const view = new TcpFlowView(
            this.flow,
            new MessageView(event.from === "client", "data", event.data),
          );
          this.#call("tcpMessage", view, out);
        } else {
          this.#data(event.from === "client", event.data, event.now, out);
        }
        break;
      case "addon-result": {
        const view = this.#calls.get(event.id);
        if (!view) break;
        this.#calls.delete(event.id);
        if (view.killed) {
          this.#fail("killed by an addon", event.now, out);
          out.push({ type: "close", to: "server", reset: true }, {
            type: "close",
            to: "client",
            reset: true,
          });
        } else if (view.message && !view.message.dropped && view.message.content.byteLength > 0) {
          this.#data(view.message.fromClient, view.message.content, event.now, out);
        }
        break;
      }
      case "eof":
        if (event.from === "client") {
          this.#clientEof = true;
          if (this.#server === "open") out.push({ type: "shutdown", to: "server" });
        } else {
          this.#serverEof = true;
          out.push({ type: "shutdown", to: "client" });
        }
        if (this.#clientEof && this.#serverEof) {
          this.#end(event.now, out);
          out.push({ type: "close", to: "client", reset: false }, {
            type: "close",
            to: "server",
            reset: false,
          });
        }
        break;
      case "error": {
        const other = event.from === "client" ? "server" : "client";
        this.#fail(`${event.from} connection failed: ${event.message}`, event.now, out);
        // The failed side is closed too: the driver runs until the client side is closed.
        out.push({ type: "close", to: other, reset: true }, { type: "close", to: event.from, reset: true });
        break;
      }
      case "server-connected":
        this.#server = "open";
        this.flow.server.timestampConnected = event.now;
        this.flow.server.peerAddress = event.address;
        if (this.#pending.byteLength > 0) {
          out.push({ type: "send", to: "server", data: this.#pending });
          this.#pending = new Uint8Array(0);
        }
        if (this.#clientEof) out.push({ type: "shutdown", to: "server" });
        break;
      case "server-failed":
        this.#server = "failed";
        this.#fail(
          `cannot connect to ${formatHostPort(this.flow.server.address)}: ${event.message}`,
          event.now,
          out,
        );
        out.push({ type: "close", to: "client", reset: true });
        break;
    }
    return out;
  }

  #data(fromClient: boolean, data: Uint8Array, now: number, out: LayerCommand[]): void {
    if (fromClient) {
      this.flow.bytesFromClient += data.byteLength;
      if (this.#server === "open") out.push({ type: "send", to: "server", data });
      else if (this.#server === "connecting") this.#pending = appendBytes(this.#pending, data);
    } else {
      this.flow.bytesFromServer += data.byteLength;
      out.push({ type: "send", to: "client", data });
    }
    recordMessage(
      this.flow,
      { fromClient, kind: "data", data, timestamp: now },
      this.#options.messageLimit,
      this.#options.maxMessages,
    );
  }

  #fail(message: string, now: number, out: LayerCommand[]): void {
    this.flow.error = { message, timestamp: now };
    this.#end(now, out);
  }

  #end(now: number, out: LayerCommand[]): void {
    if (this.#ended) return;
    this.#ended = true;
    this.flow.timestampEnd = now;
    out.push({ type: "flow", event: "end", flow: this.flow });
    if (this.#options.hooks?.has("tcpEnd")) this.#call("tcpEnd", new TcpFlowView(this.flow), out);
  }
}
