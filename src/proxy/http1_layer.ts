/**
 * HTTP/1.x relay layer: parses requests and responses on their way through, forwards the bytes
 * as they came (heads are re-serialized only when the proxy changed them), and records each
 * exchange as an {@link HttpFlow}. After a WebSocket upgrade it relays frames unchanged and
 * records their messages.
 *
 * Events: bytes, end of stream and errors from either side; the result of `open-server`; the
 * request hook's verdict (`hook-result`).
 * Commands: send/shutdown/close a side, open the server connection, hand a CONNECT tunnel back
 * to the driver, flow start/update/end, log lines, ask the request hook (`request-hook`, only
 * with `requestHook` set: the request is held, and the server not dialed, until the verdict).
 *
 * Invariants:
 * - One exchange at a time: a pipelined request is held until the response before it is done.
 * - Bodies stream through; the flow keeps at most `bodyLimit` bytes of each and the full size.
 * - Every request that got a flow `start` gets exactly one flow `end`, with an `error` when the
 *   exchange failed (malformed input → 400/431, unreachable server → 502 naming the cause, a
 *   server that breaks off mid-response → the client connection is reset).
 * - In `regular` mode (explicit proxy) requests carry absolute URLs or CONNECT; the layer opens
 *   the server connection for each host and rewrites the target to origin form.
 * @module
 */
import {
  BodyDecoder,
  type BodyFraming,
  DEFAULT_HEAD_LIMITS,
  headerValue,
  headerValues,
  type HeadLimits,
  Http1Error,
  mayHoldHead,
  parseRequestHead,
  parseResponseHead,
  requestFraming,
  type RequestHead,
  responseFraming,
  type ResponseHead,
  serializeRequestHead,
  serializeResponseHead,
} from "./http1.ts";
import { encodeWebSocketFrame, type WebSocketMessage, WebSocketReader } from "./websocket.ts";
import { MessageView, WebSocketFlowView } from "../addons/handles.ts";
import type { LocalResponse } from "./cert_page.ts";
import type { RequestChange, RequestVerdict, ResponseVerdict } from "./request_hook.ts";
import type { BodyTransform } from "../addons/types.ts";
import type { ClientInfo, HostPort, HttpFlow, ServerInfo, TlsInfo } from "../flows/flow.ts";
import { TcpLayer } from "./tcp_layer.ts";
import { appendBody, boundedContent, emptyBody, formatHostPort } from "../flows/flow.ts";
import {
  appendBytes,
  concatBytes,
  type HookSet,
  type Layer,
  type LayerCommand,
  type LayerEvent,
  type Side,
} from "./layer.ts";

/** Options of {@link Http1Layer}. */
export interface Http1LayerOptions {
  /** `transparent`: the server is the connection's original destination; `regular`: explicit proxy. */
  mode: "transparent" | "regular";
  /** `https` when the layer runs inside TLS. */
  scheme: "http" | "https";
  client: ClientInfo;
  /** The original destination (transparent mode); a placeholder in regular mode. */
  server: ServerInfo;
  tls?: TlsInfo;
  /** State of the server connection when the layer starts. */
  serverState: "none" | "open" | { failed: string };
  /** Bytes of each body kept in a flow. */
  bodyLimit: number;
  /** WebSocket messages kept per flow. */
  maxMessages: number;
  limits?: HeadLimits;
  /** Makes flow ids. */
  newId: () => string;
  /** Answers requests the proxy serves itself (e.g. the certificate page); null passes them on. */
  localResponder?: (method: string, host: string, path: string) => LocalResponse | null;
  /**
   * Regular mode with `--proxyauth`: the `Proxy-Authorization` value every request and CONNECT
   * must carry (`Basic …`); others are answered 407 with `Proxy-Authenticate`.
   */
  proxyAuthorization?: string;
  /**
   * Regular mode behind an upstream HTTP proxy: plain-HTTP requests go to it in absolute form
   * (`GET http://host/path`), as a proxy expects them, with these headers added (its
   * `Proxy-Authorization`); the driver's `open-server` then dials that proxy, not the host.
   */
  absoluteForm?: { headers: [string, string][] };
  /**
   * How long (ms) a server may make no progress while an exchange waits on it, i.e. send no
   * byte and take no request byte, before the exchange fails: 504 before the response head,
   * a reset of the client after it. Absent: no limit. Tunnels (WebSocket, CONNECT) are not timed.
   */
  serverTimeout?: number;
  /**
   * Hold each request until the request hook has judged it (see request_hook.ts): the head and
   * the body (up to `bodyLimit` bytes) are read, a `request-hook` command goes out, and nothing
   * is sent to the server, nor is it dialed, before the `hook-result` event says to go on.
   */
  requestHook?: boolean;
  /**
   * Hold each response (head, and body up to `bodyLimit` bytes) for the response hook: a
   * `response-hook` command goes out and nothing reaches the client before the
   * `response-hook-result` event (addons' `response`, see src/addons).
   */
  responseHook?: boolean;
  /**
   * Reverse mode (transparent only): the Host header every request carries to the server, in
   * place of the client's; the flow's host is then the server's name.
   */
  hostHeader?: string;
  /**
   * The addon hooks some addon defines (WebSocket ones here): `websocketStart`/`websocketEnd`
   * are announced with `addon-hook` commands; with `websocketMessage` each message is held
   * whole until its `addon-result` and then sent as one frame (changed, or not at all).
   */
  hooks?: HookSet;
}

type RequestState = "head" | "body" | "done" | "tunnel" | "closed";

/**
 * Default of {@link Http1LayerOptions.serverTimeout}: 60 s without progress, the read timeout
 * nginx and HAProxy-style setups commonly use toward upstreams.
 */
export const DEFAULT_SERVER_TIMEOUT = 60_000;

/** Most bytes a client may pipeline ahead of the response it waits for. */
const PIPELINE_LIMIT = 1024 * 1024;
type ResponseState = "idle" | "head" | "body" | "tunnel";

const encoder = new TextEncoder();

/** Relays HTTP/1.x between a client and a server and records the exchanges. */
export class Http1Layer implements Layer {
  #o: Http1LayerOptions;
  #limits: HeadLimits;
  #client: Uint8Array = new Uint8Array(0);
  #serverBuf: Uint8Array = new Uint8Array(0);
  /** How much of the buffer waiting for a head was already found to hold no empty line. */
  #clientScan: Scan = null;
  #serverScan: Scan = null;
  #req: RequestState = "head";
  #resp: ResponseState = "idle";
  #server: "none" | "connecting" | "open" | "failed";
  #serverFailure = "";
  #serverAddress: HostPort | null = null;
  #flow: HttpFlow | null = null;
  #requestHead: RequestHead | null = null;
  #requestBody: BodyDecoder | null = null;
  #responseBody: BodyDecoder | null = null;
  #responseHeadSent = false;
  #closeAfter = false;
  #clientEof = false;
  #done = false;
  #wsClient: WebSocketReader | null = null;
  #wsServer: WebSocketReader | null = null;
  /** An addon has `websocketMessage`: messages are held for it (see {@link Http1LayerOptions.hooks}). */
  #wsHold = false;
  #wsCalls = new Map<number, { view: WebSocketFlowView; m?: WebSocketMessage }>();
  #wsNextCall = 1;
  /** When the server last made progress (sent bytes, or took request bytes). */
  #serverProgress = 0;
  #timerArmed = false;
  /** The raw relay that took over after a 2xx to CONNECT or a 101 to another protocol. */
  #raw: TcpLayer | null = null;
  /**
   * The server answered and went away before the request body was complete: the rest of the
   * body is read and dropped, so the client can finish sending and read the answer.
   */
  #discarding = false;
  /**
   * The request hook's part in the current request: `body` while its body is read and held,
   * `asking` while the verdict is awaited.
   */
  #hold: "none" | "body" | "asking" = "none";
  /** Request body bytes (as they came) held for the hook. */
  #heldWire: Uint8Array = new Uint8Array(0);
  /** Where the current request goes. */
  #target: HostPort | null = null;
  /**
   * The response hook's part in the current response: `head` while its `headers` phase is asked
   * (the head held, nothing of the body read), then as `#hold` for the request.
   */
  #respHold: "none" | "head" | "body" | "asking" = "none";
  /** The stream transform the current response body goes through (null: none). */
  #respXform: BodyTransform | null = null;
  /** The transformed body goes out chunked (else unframed, ended by closing). */
  #respXformChunked = false;
  /** The end-of-body call of the transform went out: the response completes with its result. */
  #respXformEnding = false;
  #xformNext = 1;
  /** The held response's head (as parsed) and its wire bytes, head then body as they came. */
  #respHead: ResponseHead | null = null;
  #respHeldWire: Uint8Array = new Uint8Array(0);
  /** The server ended (null: cleanly; else the error) while the response hook was asked. */
  #respServerEnd: { error: string | null } | null = null;

  constructor(options: Http1LayerOptions) {
    this.#o = options;
    this.#limits = options.limits ?? DEFAULT_HEAD_LIMITS;
    const state = options.serverState;
    if (state === "open") {
      this.#server = "open";
      this.#serverAddress = options.server.address;
    } else if (state === "none") {
      this.#server = "none";
    } else {
      this.#server = "failed";
      this.#serverFailure = state.failed;
      this.#serverAddress = options.server.address;
    }
  }

  /** True while no request is under way and the next head has not come in full. */
  get waitingForRequestHead(): boolean {
    return !this.#done && this.#req === "head" && this.#resp === "idle";
  }

  handle(event: LayerEvent): LayerCommand[] {
    if (this.#raw) return this.#raw.handle(event);
    const out: LayerCommand[] = [];
    if (this.#done) return out;
    switch (event.type) {
      case "addon-result":
        this.#onWebSocketHook(event.id, event.now, out);
        break;
      case "data":
        // Request bytes arrive only after the previous ones were written (backpressure): while a
        // body goes up, each of them shows the server is taking it.
        if (event.from === "server" || this.#req === "body") this.#serverProgress = event.now;
        if (event.from === "client") {
          this.#client = appendBytes(this.#client, event.data);
          if ((this.#req === "done" || this.#hold === "asking") && this.#client.byteLength > PIPELINE_LIMIT) {
            // Bytes sent ahead of a response are held, not read past: a client may not run ahead
            // without bound.
            this.#failFlow(
              `client sent more than ${PIPELINE_LIMIT} bytes ahead of the response`,
              event.now,
              out,
            );
            out.push({ type: "close", to: "server", reset: true }, {
              type: "close",
              to: "client",
              reset: true,
            });
            this.#done = true;
            break;
          }
          this.#pumpClient(event.now, out);
        } else {
          this.#serverBuf = appendBytes(this.#serverBuf, event.data);
          this.#pumpServer(event.now, out);
        }
        break;
      case "eof":
        if (event.from === "client") this.#onClientEof(event.now, out);
        else this.#onServerEnd(null, event.now, out);
        break;
      case "error":
        if (event.from === "client") this.#onClientError(event.message, event.now, out);
        else this.#onServerEnd(event.message, event.now, out);
        break;
      case "server-connected":
        this.#server = "open";
        if (this.#flow) {
          this.#flow.server.timestampConnected = event.now;
          this.#flow.server.peerAddress = event.address;
        }
        this.#sendRequestHead(event.now, out);
        this.#pumpClient(event.now, out);
        // A client FIN that came while connecting is judged now that its body bytes went through.
        if (this.#clientEof && this.#req === "body") this.#onClientEof(event.now, out);
        break;
      case "server-failed":
        this.#server = "failed";
        this.#serverFailure = event.message;
        if (this.#flow && this.#flow.timestampEnd === undefined && !this.#responseHeadSent) {
          this.#badGateway(event.now, out);
        }
        break;
      case "timer":
        this.#onTimer(event.now, out);
        break;
      case "hook-result":
        this.#onVerdict(event.verdict, event.now, out);
        break;
      case "response-hook-result":
        if (this.#respHold === "head") {
          this.#onResponseHeadVerdict(event.verdict, event.holdBody, event.now, out);
        } else this.#onResponseVerdict(event.verdict, event.now, out);
        break;
      case "transform-result":
        this.#onTransformed(event.id, event.data, event.error, event.now, out);
        break;
    }
    return out;
  }

  // ---- client side -----------------------------------------------------------------------

  #pumpClient(now: number, out: LayerCommand[]): void {
    for (;;) {
      switch (this.#req) {
        case "head":
          if (this.#client.byteLength === 0 || !this.#readRequestHead(now, out)) return;
          break;
        case "body": {
          if (this.#hold === "asking") return;
          const holding = this.#hold === "body";
          if ((this.#server !== "open" && !this.#discarding && !holding) || this.#client.byteLength === 0) {
            return;
          }
          const body = this.#requestBody!;
          let used, data;
          try {
            ({ used, data } = body.push(this.#client));
          } catch (e) {
            // Malformed chunked coding: the rest of the request cannot be framed.
            if (!this.#responseHeadSent) {
              this.#clientProtocolError(e, now, out, true);
            } else {
              this.#failFlow(`malformed request: ${(e as Error).message}`, now, out);
              out.push(
                { type: "close", to: "client", reset: true },
                { type: "close", to: "server", reset: true },
              );
              this.#done = true;
            }
            return;
          }
          const wire = this.#client.subarray(0, used);
          if (holding) {
            this.#heldWire = appendBytes(this.#heldWire, wire);
            this.#forwardRecorded("server", wire.subarray(0, 0), data, "request", out);
            this.#client = this.#client.subarray(used);
            if (body.done) this.#requestComplete(now, out);
            // A body longer than what a flow keeps is judged on its start; the rest streams on.
            if (body.done || this.#heldWire.byteLength >= this.#o.bodyLimit) this.#askHook(out);
            return;
          }
          this.#forwardRecorded(
            "server",
            this.#discarding ? wire.subarray(0, 0) : wire,
            data,
            "request",
            out,
          );
          this.#client = this.#client.subarray(used);
          if (body.done) this.#requestComplete(now, out);
          else return;
          break;
        }
        case "tunnel":
          if (this.#server !== "open" || this.#client.byteLength === 0) return;
          this.#relayWebSocket("client", this.#client, now, out);
          this.#client = new Uint8Array(0);
          return;
        case "done":
        case "closed":
          return;
      }
    }
  }

  /** Parses a request head from the client buffer; false when more bytes are needed or it failed. */
  #readRequestHead(now: number, out: LayerCommand[]): boolean {
    let parsed;
    try {
      parsed = mayHoldHead(this.#client, scanned(this.#clientScan, this.#client), this.#limits)
        ? parseRequestHead(this.#client, this.#limits)
        : null;
    } catch (e) {
      this.#clientProtocolError(e, now, out);
      return false;
    }
    if (!parsed) {
      this.#clientScan = scanOf(this.#client);
      return false;
    }
    const { head, size } = parsed;
    const raw = this.#client.subarray(0, size);
    this.#client = this.#client.subarray(size);

    const authorization = this.#o.proxyAuthorization;
    if (
      this.#o.mode === "regular" && authorization !== undefined &&
      headerValue(head.headers, "proxy-authorization")?.trim() !== authorization
    ) {
      this.#rejectRequest(
        head,
        407,
        "Proxy Authentication Required",
        "proxy authentication required",
        now,
        out,
        [
          ["proxy-authenticate", 'Basic realm="wirescope"'],
        ],
      );
      return false;
    }
    if (this.#o.mode === "regular" && head.method.toUpperCase() === "CONNECT") {
      const address = parseAuthority(head.target, 443);
      if (!address) {
        this.#rejectRequest(head, 400, "Bad Request", `cannot parse CONNECT target ${head.target}`, now, out);
        return false;
      }
      // The driver answers 200 once it has reached the target (or 502 with the reason).
      out.push({ type: "tunnel", address, buffered: this.#client, httpVersion: head.version });
      this.#client = new Uint8Array(0);
      this.#req = "closed";
      this.#done = true;
      return false;
    }

    let framing: BodyFraming;
    let target: HostPort;
    let mismatchedHost: string | undefined;
    let wire: Uint8Array = raw;
    /** The head as it goes to the server (target and headers as sent). */
    let sent: RequestHead = head;
    let path = head.target;
    let host: string;
    if (this.#o.mode === "regular") {
      const url = parseAbsoluteUrl(head.target);
      if (!url) {
        this.#rejectRequest(
          head,
          400,
          "Bad Request",
          `wirescope is a proxy: requests must carry an absolute http:// URL or use CONNECT (got ${head.target})`,
          now,
          out,
        );
        return false;
      }
      target = { hostname: url.hostname, port: url.port };
      host = url.hostname;
      path = url.path;
      const headers = head.headers.filter(([name]) => !/^proxy-(connection|authorization)$/i.test(name));
      const absolute = this.#o.absoluteForm;
      sent = absolute
        ? { ...head, target: absoluteUrl(target, url.path), headers: [...headers, ...absolute.headers] }
        : { ...head, target: url.path, headers };
      wire = serializeRequestHead(sent);
    } else {
      target = this.#o.server.address;
      const hostHeader = headerValue(head.headers, "host");
      const named = hostFromHeader(hostHeader);
      const known = this.#o.tls?.sni ?? this.#o.server.hostname;
      host = named ?? known ?? target.hostname;
      if (hostHeader !== undefined && namesAnotherHost(hostHeader, known, target)) {
        // The connection goes where the client dialed, whatever its Host header says: the URL
        // names that destination, and the header is kept beside it.
        host = known ?? target.hostname;
        mismatchedHost = hostHeader;
      }
      // Heads go on as they came unless their line endings could be read two ways: a bare LF
      // (or empty lines before the request line) becomes plain CRLF.
      if (needsNewLines(raw)) wire = serializeRequestHead(head);
      const rewrite = this.#o.hostHeader;
      if (rewrite !== undefined) {
        const headers = head.headers.filter(([name]) => name.toLowerCase() !== "host");
        sent = { ...head, headers: [["Host", rewrite], ...headers] };
        wire = serializeRequestHead(sent);
        host = this.#o.server.hostname ?? target.hostname;
        mismatchedHost = undefined;
      }
    }
    // Reverse mode records the Host header the server got (as mitmproxy shows it); the explicit
    // proxy records the client's head (its Proxy-* headers, never the upstream's credentials).
    const flow = this.#newFlow(this.#o.hostHeader !== undefined ? sent : head, host, target, path, now);
    if (mismatchedHost !== undefined) flow.request.hostHeader = mismatchedHost;
    out.push({ type: "flow", event: "start", flow });
    try {
      framing = requestFraming(head);
    } catch (e) {
      this.#clientProtocolError(e, now, out, true);
      return false;
    }

    const local = this.#o.localResponder?.(head.method, host, path) ?? null;
    if (local) {
      this.#serveLocal(local, head, framing, now, out);
      return this.#req === "head";
    }

    this.#requestHead = head;
    this.#requestBody = new BodyDecoder(framing);
    this.#pendingHead = wire;
    this.#resp = "head";
    this.#responseHeadSent = false;
    this.#closeAfter = wantsClose(head.version, head.headers);
    this.#req = "body";
    this.#target = target;

    if (this.#o.requestHook) {
      this.#hold = "body";
      this.#heldWire = new Uint8Array(0);
      if (this.#requestBody.done) {
        this.#requestComplete(now, out);
        this.#askHook(out);
        return false;
      }
      if (expectsContinue(head)) {
        // The body is wanted before the server is asked: the proxy says "go on" itself (as
        // mitmproxy does), and the server gets the request without the expectation.
        out.push({ type: "send", to: "client", data: CONTINUE });
        this.#pendingHead = serializeRequestHead({
          ...sent,
          headers: sent.headers.filter(([name]) => name.toLowerCase() !== "expect"),
        });
      }
      return true;
    }
    return this.#toServer(now, out);
  }

  /** Sends the current request on: opens (or reuses) the server connection and sends the head. */
  #toServer(now: number, out: LayerCommand[]): boolean {
    const target = this.#target!;
    if (this.#server === "failed") {
      this.#badGateway(now, out);
      return false;
    }
    const sameServer = this.#serverAddress !== null && this.#serverAddress.hostname === target.hostname &&
      this.#serverAddress.port === target.port;
    if (this.#server === "open" && !sameServer) {
      out.push({ type: "close", to: "server", reset: false });
      this.#server = "none";
    }
    if (this.#server === "none") {
      this.#server = "connecting";
      this.#serverAddress = target;
      this.#serverBuf = new Uint8Array(0);
      out.push({ type: "open-server", address: target });
    }
    this.#sendRequestHead(now, out);
    if (this.#requestBody!.done && this.#req === "body") this.#requestComplete(now, out);
    return true;
  }

  /** Asks the request hook about the current request. */
  #askHook(out: LayerCommand[]): void {
    this.#hold = "asking";
    out.push({ type: "request-hook", flow: this.#flow! });
  }

  /** Carries out the request hook's verdict on the held request. */
  #onVerdict(verdict: RequestVerdict, now: number, out: LayerCommand[]): void {
    if (this.#hold !== "asking") return;
    this.#hold = "none";
    let held = this.#heldWire;
    this.#heldWire = new Uint8Array(0);
    const flow = this.#flow!;
    if (verdict !== undefined && verdict !== "kill" && "change" in verdict) {
      held = this.#applyRequestChange(verdict.change, held);
      verdict = undefined;
    }
    if (verdict === undefined) {
      // On to the server, with the body bytes held so far right behind the head.
      this.#pendingHead = concatBytes(this.#pendingHead ?? new Uint8Array(0), held);
      if (!this.#toServer(now, out)) return;
      this.#pumpClient(now, out);
      if (this.#clientEof && this.#req === "body" && this.#server === "open") this.#onClientEof(now, out);
      return;
    }
    this.#pendingHead = null;
    if (verdict === "kill") {
      this.#failFlow("killed by the request hook", now, out);
      out.push({ type: "close", to: "client", reset: true });
      if (this.#server === "open" || this.#server === "connecting") {
        out.push({ type: "close", to: "server", reset: false });
      }
      this.#server = "none";
      this.#req = "closed";
      this.#done = true;
      return;
    }
    if (verdict.replay) flow.replay = verdict.replay;
    // A body not read to its end cannot be skipped on a kept-alive connection.
    const close = this.#req !== "done" || this.#closeAfter || this.#clientEof;
    this.#resp = "idle";
    this.#writeLocal(verdict, close, now, out);
    this.#requestHead = null;
    this.#requestBody = null;
    if (!close && this.#client.byteLength > 0) this.#pumpClient(now, out);
  }

  #pendingHead: Uint8Array | null = null;

  /**
   * Rebuilds the held request from an addon's change: the head as changed (framing headers kept
   * as the body needs them), the body replaced when it was in whole; the flow records it.
   * Returns the body bytes to send behind the head.
   */
  #applyRequestChange(change: RequestChange["change"], held: Uint8Array): Uint8Array {
    const head = this.#requestHead!;
    const flow = this.#flow!;
    const framingName = (n: string) => /^(content-length|transfer-encoding)$/i.test(n);
    let headers = change.headers.filter(([n]) =>
      n.toLowerCase() !== "expect" &&
      !(this.#o.mode === "regular" && /^proxy-(connection|authorization)$/i.test(n))
    );
    const whole = this.#req === "done";
    if (change.body !== undefined && whole) {
      headers = headers.filter(([n]) => !framingName(n));
      const hadBody = head.headers.some(([n]) => framingName(n));
      if (change.body.byteLength > 0 || hadBody) {
        headers.push(["content-length", String(change.body.byteLength)]);
      }
      held = change.body;
      flow.request.body = {
        content: change.body.slice(0, this.#o.bodyLimit),
        size: change.body.byteLength,
        truncated: change.body.byteLength > this.#o.bodyLimit,
      };
    } else {
      headers = [
        ...headers.filter(([n]) => !framingName(n)),
        ...head.headers.filter(([n]) => framingName(n)),
      ];
    }
    const defaultPort = flow.request.scheme === "https" ? 443 : 80;
    if (change.host !== flow.request.host || change.port !== flow.request.port) {
      const authority = (change.host.includes(":") ? `[${change.host}]` : change.host) +
        (change.port === defaultPort ? "" : `:${change.port}`);
      const i = headers.findIndex(([n]) => n.toLowerCase() === "host");
      if (i >= 0) headers[i] = [headers[i]![0], authority];
      this.#target = { hostname: change.host, port: change.port };
      flow.server.address = this.#target;
      flow.server.hostname = change.host;
    }
    const path = change.path === "" ? "/" : change.path;
    const absolute = this.#o.mode === "regular" ? this.#o.absoluteForm : undefined;
    this.#pendingHead = serializeRequestHead({
      method: change.method,
      target: absolute ? absoluteUrl(this.#target!, path) : path,
      version: head.version,
      headers: absolute
        ? [...headers.filter(([n]) => !/^proxy-authorization$/i.test(n)), ...absolute.headers]
        : headers,
    });
    const r = flow.request;
    r.method = change.method;
    r.host = change.host;
    r.port = change.port;
    r.path = path;
    const host = change.host.includes(":") ? `[${change.host}]` : change.host;
    r.url = `${r.scheme}://${host}${change.port === defaultPort ? "" : ":" + change.port}${path}`;
    r.headers = headers;
    return held;
  }

  /**
   * Carries out the `headers` phase verdict on the held head: a kill or a made response as for
   * the whole response; a change rewrites the head; a stream transform sends the head on at once
   * with the body reframed (chunked, or close-delimited for an HTTP/1.0 client) and each chunk
   * through the transform. Otherwise the body is held for the `body` phase (`holdBody`) or the
   * response goes on.
   */
  #onResponseHeadVerdict(
    verdict: ResponseVerdict,
    holdBody: boolean | undefined,
    now: number,
    out: LayerCommand[],
  ): void {
    if (verdict === "kill" || (verdict !== undefined && "respond" in verdict)) {
      this.#respHold = "asking";
      this.#onResponseVerdict(verdict, now, out);
      return;
    }
    const head = this.#respHead!;
    const flow = this.#flow!;
    let transform: BodyTransform | null = null;
    if (verdict !== undefined) {
      const change = verdict.change;
      const noBody = this.#requestHead?.method.toUpperCase() === "HEAD" || change.status === 204 ||
        change.status === 304 || (this.#resp === "body" && this.#responseBody?.done === true);
      let headers = change.headers.filter(([n]) => !/^(content-length|transfer-encoding)$/i.test(n));
      if (typeof change.stream === "function" && !noBody) {
        transform = change.stream;
        const chunked = this.#requestHead?.version !== "HTTP/1.0" && head.version !== "HTTP/1.0";
        if (chunked) headers.push(["transfer-encoding", "chunked"]);
        else {
          headers = headers.filter(([n]) => n.toLowerCase() !== "connection");
          headers.push(["connection", "close"]);
          this.#closeAfter = true;
        }
        this.#respXformChunked = chunked;
        flow.response!.body = emptyBody();
      } else {
        headers.push(...head.headers.filter(([n]) => /^(content-length|transfer-encoding)$/i.test(n)));
      }
      const wire = serializeResponseHead({ ...head, status: change.status, reason: change.reason, headers });
      this.#respHead = { ...head, status: change.status, reason: change.reason, headers };
      this.#respHeldWire = wire;
      this.#respHeadSize = wire.byteLength;
      const r = flow.response!;
      r.status = change.status;
      r.reason = change.reason;
      r.headers = headers;
    }
    if (!transform && holdBody !== false && (verdict === undefined || verdict.change.stream === undefined)) {
      this.#respHold = "body";
      if (this.#resp === "body" && this.#responseBody?.done) this.#askResponseHook(out);
      else this.#pumpServer(now, out);
      this.#takeUpServerEnd(now, out);
      return;
    }
    this.#respHold = "none";
    this.#respHead = null;
    this.#respXform = transform;
    this.#respXformEnding = false;
    this.#releaseResponse(out);
    if (this.#resp === "body" && this.#responseBody?.done) this.#responseComplete(now, out);
    else this.#pumpServer(now, out);
    this.#takeUpServerEnd(now, out);
  }

  /** A server end that came while a hook was asked, taken up now. */
  #takeUpServerEnd(now: number, out: LayerCommand[]): void {
    const ended = this.#respServerEnd;
    this.#respServerEnd = null;
    if (ended && !this.#done) this.#onServerEnd(ended.error, now, out);
  }

  /** A transformed body chunk: framed, sent and recorded; the end-of-body one completes the response. */
  #onTransformed(
    id: number,
    data: Uint8Array,
    error: string | undefined,
    now: number,
    out: LayerCommand[],
  ): void {
    if (!this.#respXform || this.#done) return;
    if (error !== undefined) {
      this.#respXform = null;
      this.#respXformEnding = false;
      this.#failFlow(`stream transform failed: ${error}`, now, out);
      out.push({ type: "close", to: "client", reset: true }, { type: "close", to: "server", reset: true });
      this.#server = "none";
      this.#req = "closed";
      this.#done = true;
      return;
    }
    const flow = this.#flow!;
    if (data.byteLength > 0) {
      out.push({
        type: "send",
        to: "client",
        data: this.#respXformChunked
          ? concatBytes(concatBytes(encoder.encode(`${data.byteLength.toString(16)}\r\n`), data), CRLF)
          : data,
      });
      if (flow.response) appendBody(flow.response.body, data, this.#o.bodyLimit);
    }
    // The end-of-body result is the last one (results come back in order).
    if (!this.#respXformEnding || id !== this.#xformNext - 1) return;
    if (this.#respXformChunked) out.push({ type: "send", to: "client", data: LAST_CHUNK });
    this.#respXform = null;
    this.#respXformEnding = false;
    this.#responseComplete(now, out);
    // Bytes that came behind the body (a pipelined response) wait for the next request.
    if (!this.#done && this.#resp !== "body") this.#pumpServer(now, out);
  }

  /** Sends the held response on as it came. */
  #releaseResponse(out: LayerCommand[]): void {
    out.push({ type: "send", to: "client", data: this.#respHeldWire });
    this.#respHeldWire = new Uint8Array(0);
    this.#responseHeadSent = true;
  }

  /** Carries out the response hook's verdict on the held response. */
  #onResponseVerdict(verdict: ResponseVerdict, now: number, out: LayerCommand[]): void {
    if (this.#respHold !== "asking") return;
    this.#respHold = "none";
    const flow = this.#flow!;
    const head = this.#respHead!;
    this.#respHead = null;
    const complete = (this.#resp === "body" && this.#responseBody?.done === true) || this.#resp === "idle";
    if (verdict === "kill") {
      this.#failFlow("killed by an addon", now, out);
      out.push({ type: "close", to: "client", reset: true }, { type: "close", to: "server", reset: true });
      this.#server = "none";
      this.#req = "closed";
      this.#done = true;
      return;
    }
    if (verdict !== undefined && "respond" in verdict) {
      this.#respHeldWire = new Uint8Array(0);
      const close = !complete || this.#closeAfter || this.#clientEof || this.#req !== "done";
      if (!complete) {
        out.push({ type: "close", to: "server", reset: true });
        this.#server = "none";
        this.#serverAddress = null;
      }
      this.#resp = "idle";
      this.#responseBody = null;
      this.#respServerEnd = null;
      this.#writeLocal(verdict.respond, close, now, out);
      this.#requestHead = null;
      this.#requestBody = null;
      if (!close && this.#client.byteLength > 0) this.#pumpClient(now, out);
      return;
    }
    if (verdict !== undefined) {
      const change = verdict.change;
      const framingName = (n: string) => /^(content-length|transfer-encoding)$/i.test(n);
      let headers = change.headers;
      let body: Uint8Array;
      const noBody = this.#requestHead?.method.toUpperCase() === "HEAD" || change.status === 204 ||
        change.status === 304;
      if (change.body !== undefined && complete && !noBody) {
        headers = [...headers.filter(([n]) => !framingName(n)), [
          "content-length",
          String(change.body.byteLength),
        ]];
        body = change.body;
        flow.response!.body = {
          content: change.body.slice(0, this.#o.bodyLimit),
          size: change.body.byteLength,
          truncated: change.body.byteLength > this.#o.bodyLimit,
        };
      } else {
        headers = [
          ...headers.filter(([n]) => !framingName(n)),
          ...head.headers.filter(([n]) => framingName(n)),
        ];
        body = this.#respHeldWire.subarray(this.#respHeadSize);
      }
      const wire = serializeResponseHead({
        version: head.version,
        status: change.status,
        reason: change.reason,
        headers,
      });
      this.#respHeldWire = concatBytes(wire, body);
      const r = flow.response!;
      r.status = change.status;
      r.reason = change.reason;
      r.headers = headers;
    }
    this.#releaseResponse(out);
    if (complete) {
      if (this.#resp === "body") this.#responseComplete(now, out);
    } else {
      this.#pumpServer(now, out);
    }
    const ended = this.#respServerEnd;
    this.#respServerEnd = null;
    if (ended && !this.#done) this.#onServerEnd(ended.error, now, out);
  }

  /** Bytes of the held response's head at the start of `#respHeldWire`. */
  #respHeadSize = 0;

  /** Asks the response hook about the held response. */
  #askResponseHook(out: LayerCommand[]): void {
    this.#respHold = "asking";
    out.push({ type: "response-hook", flow: this.#flow!, phase: "body" });
  }

  /** Sends a response the proxy made itself; the request is not passed on. */
  #serveLocal(
    local: LocalResponse,
    head: RequestHead,
    framing: BodyFraming,
    now: number,
    out: LayerCommand[],
  ): void {
    // A request body would have to be read and thrown away; closing afterwards is simpler.
    const close = framing.kind !== "none" || wantsClose(head.version, head.headers);
    this.#writeLocal(local, close, now, out);
  }

  /** Sends a local response, records it in the flow, ends the flow, and closes when told. */
  #writeLocal(local: LocalResponse, close: boolean, now: number, out: LayerCommand[]): void {
    const flow = this.#flow!;
    const headers: [string, string][] = [...local.headers, ["connection", close ? "close" : "keep-alive"]];
    const text = `HTTP/1.1 ${local.status} ${local.reason}\r\n${
      headers.map(([k, v]) => `${k}: ${v}\r\n`).join("")
    }\r\n`;
    out.push({ type: "send", to: "client", data: concatBytes(encoder.encode(text), local.body) });
    flow.request.timestampEnd = now;
    flow.response = {
      status: local.status,
      reason: local.reason,
      httpVersion: "HTTP/1.1",
      headers,
      body: {
        content: local.body.slice(0, this.#o.bodyLimit),
        size: local.body.byteLength,
        truncated: local.body.byteLength > this.#o.bodyLimit,
      },
      timestampStart: now,
      timestampEnd: now,
    };
    this.#endFlow(now, out);
    if (close) this.#closeAll(out);
    else this.#req = "head";
  }

  #sendRequestHead(now: number, out: LayerCommand[]): void {
    if (this.#server !== "open" || !this.#pendingHead) return;
    out.push({ type: "send", to: "server", data: this.#pendingHead });
    this.#pendingHead = null;
    // From here the exchange waits on the server.
    this.#serverProgress = now;
    const limit = this.#o.serverTimeout;
    if (limit !== undefined && !this.#timerArmed) {
      this.#timerArmed = true;
      out.push({ type: "timer", delay: limit });
    }
  }

  #requestComplete(now: number, out: LayerCommand[]): void {
    this.#req = "done";
    if (this.#flow) this.#flow.request.timestampEnd = now;
    // A server that answered early: the exchange ends with the last byte of the request.
    if (this.#resp === "idle" && this.#flow?.response) this.#exchangeDone(now, out, false);
  }

  /** True when the response is complete and only the request body is still coming. */
  #answeredEarly(): boolean {
    return this.#req === "body" && this.#resp === "idle" && this.#flow?.response !== undefined &&
      this.#flow.timestampEnd === undefined;
  }

  /** True while an exchange waits on an open server (for its response or to take the body). */
  #waitingOnServer(): boolean {
    return this.#server === "open" &&
      (this.#resp === "head" || this.#resp === "body" || (this.#req === "body" && this.#resp === "idle"));
  }

  #onTimer(now: number, out: LayerCommand[]): void {
    this.#timerArmed = false;
    const limit = this.#o.serverTimeout;
    if (limit === undefined || !this.#waitingOnServer()) return;
    // A hook or a transform being asked is no stall of the server's.
    if (this.#respHold === "asking" || this.#respHold === "head" || this.#respXformEnding) {
      this.#serverProgress = now;
    }
    const left = this.#serverProgress + limit - now;
    if (left > 0) {
      this.#timerArmed = true;
      out.push({ type: "timer", delay: left });
      return;
    }
    const address = formatHostPort(this.#serverAddress ?? this.#o.server.address);
    const seconds = `${limit / 1000} s`;
    this.#logClient(`server timeout (${seconds}) hit on ${address}`, out);
    // A server that stopped reading may have writes pending toward it: only a reset ends those.
    out.push({ type: "close", to: "server", reset: true });
    this.#server = "none";
    // While the request body goes up, a stall can be the server not reading or the client not
    // sending (both stop the events here): the words say what was seen, not whose fault it was.
    if (!this.#responseHeadSent) {
      const text = this.#req === "body"
        ? `no request body byte went to ${address} and no response came for ${seconds}`
        : `${address} sent no response for ${seconds}`;
      this.#respondError(504, "Gateway Timeout", text, now, out);
      return;
    }
    const what = this.#resp === "body"
      ? `${address} sent nothing for ${seconds} in the middle of the response body`
      : `no request body byte went to ${address} for ${seconds} after it answered`;
    this.#failFlow(what, now, out);
    out.push({ type: "close", to: "client", reset: this.#resp === "body" });
    this.#req = "closed";
    this.#done = true;
  }

  #onClientEof(now: number, out: LayerCommand[]): void {
    this.#clientEof = true;
    // Judged once the request hook has spoken.
    if (this.#hold === "asking") return;
    if (this.#req === "tunnel") {
      this.#finishTunnel(now, out);
      return;
    }
    if (this.#req === "head" && this.#resp === "idle") {
      if (this.#client.byteLength > 0) {
        this.#logClient(
          `client closed the connection inside a request head (${this.#client.byteLength} bytes)`,
          out,
        );
      }
      this.#closeAll(out);
      return;
    }
    if (this.#answeredEarly()) {
      // The client stopped sending once it had its answer: the exchange is over.
      this.#endFlow(now, out);
      this.#closeAll(out);
      return;
    }
    if (this.#req === "body" && this.#requestBody) {
      // Bytes held while the server connection opens have not been decoded yet.
      if (this.#server === "connecting") return;
      try {
        this.#requestBody.end();
        this.#requestComplete(now, out);
        if (this.#hold === "body") this.#askHook(out);
        return;
      } catch {
        this.#failFlow("client closed the connection before the request body was complete", now, out);
        out.push({ type: "close", to: "server", reset: true }, { type: "close", to: "client", reset: false });
        this.#done = true;
        return;
      }
    }
    // The request is complete; the response is still on its way and is delivered before closing.
    this.#closeAfter = true;
  }

  #onClientError(message: string, now: number, out: LayerCommand[]): void {
    if (this.#flow) this.#failFlow(`client connection failed: ${message}`, now, out);
    out.push({ type: "close", to: "server", reset: true }, { type: "close", to: "client", reset: true });
    this.#done = true;
  }

  // ---- server side -----------------------------------------------------------------------

  #pumpServer(now: number, out: LayerCommand[]): void {
    for (;;) {
      switch (this.#resp) {
        case "idle":
          if (this.#serverBuf.byteLength > 0) {
            out.push({
              type: "log",
              level: "warn",
              message: `${
                formatHostPort(this.#serverAddress ?? this.#o.server.address)
              } sent ${this.#serverBuf.byteLength} bytes with no request pending; dropped`,
            });
            this.#serverBuf = new Uint8Array(0);
          }
          return;
        case "head":
          if (this.#serverBuf.byteLength === 0 || !this.#readResponseHead(now, out)) return;
          break;
        case "body": {
          if (
            this.#serverBuf.byteLength === 0 || this.#respHold === "asking" || this.#respHold === "head" ||
            this.#respXformEnding
          ) {
            return;
          }
          const body = this.#responseBody!;
          let used, data;
          try {
            ({ used, data } = body.push(this.#serverBuf));
          } catch (e) {
            this.#serverProtocolError(e, now, out);
            return;
          }
          if (this.#respHold === "body") {
            this.#respHeldWire = appendBytes(this.#respHeldWire, this.#serverBuf.subarray(0, used));
            this.#forwardRecorded("client", new Uint8Array(0), data, "response", out);
            this.#serverBuf = this.#serverBuf.subarray(used);
            if (body.done) this.#responseComplete(now, out);
            // A body longer than a flow keeps is judged on its start; the rest streams on.
            else if (this.#respHeldWire.byteLength - this.#respHeadSize >= this.#o.bodyLimit) {
              this.#askResponseHook(out);
            }
            return;
          }
          const xform = this.#respXform;
          if (xform) {
            // Each decoded piece goes through the transform; it is framed, sent and recorded
            // when its result comes (in order).
            for (const piece of data) {
              if (piece.byteLength > 0) {
                out.push({ type: "transform", id: this.#xformNext++, fn: xform, data: piece });
              }
            }
          } else {
            this.#forwardRecorded("client", this.#serverBuf.subarray(0, used), data, "response", out);
          }
          this.#serverBuf = this.#serverBuf.subarray(used);
          if (body.done) this.#responseComplete(now, out);
          else return;
          if (this.#respXformEnding) return;
          break;
        }
        case "tunnel":
          if (this.#serverBuf.byteLength === 0) return;
          this.#relayWebSocket("server", this.#serverBuf, now, out);
          this.#serverBuf = new Uint8Array(0);
          return;
      }
    }
  }

  #readResponseHead(now: number, out: LayerCommand[]): boolean {
    let parsed;
    try {
      parsed = mayHoldHead(this.#serverBuf, scanned(this.#serverScan, this.#serverBuf), this.#limits)
        ? parseResponseHead(this.#serverBuf, this.#limits)
        : null;
    } catch (e) {
      this.#serverProtocolError(e, now, out);
      return false;
    }
    if (!parsed) {
      this.#serverScan = scanOf(this.#serverBuf);
      return false;
    }
    const { head, size } = parsed;
    const raw = this.#serverBuf.subarray(0, size);
    this.#serverBuf = this.#serverBuf.subarray(size);
    const flow = this.#flow!;
    const request = this.#requestHead!;

    // The head goes on as it came unless its line endings could be read two ways, or it has a
    // Content-Length beside Transfer-Encoding, which RFC 9112 §6.3 says a proxy must drop.
    const both = headerValues(head.headers, "transfer-encoding").length > 0 &&
      headerValues(head.headers, "content-length").length > 0;
    const wire = both || needsNewLines(raw)
      ? serializeResponseHead({
        ...head,
        headers: both
          ? head.headers.filter(([name]) => name.toLowerCase() !== "content-length")
          : head.headers,
      })
      : raw;
    if (head.status >= 100 && head.status < 200 && head.status !== 101) {
      out.push({ type: "send", to: "client", data: wire });
      return true;
    }
    const upgrade = head.status === 101 && isWebSocketUpgrade(request, head);
    // A 2xx to the client's own CONNECT (it talks to a proxy of its own through us) or a switch to
    // a protocol other than WebSocket: what follows is no longer HTTP, so it is relayed raw.
    const relayRaw =
      (request.method.toUpperCase() === "CONNECT" && head.status >= 200 && head.status < 300) ||
      (head.status === 101 && !upgrade);
    if (relayRaw) {
      flow.response = {
        status: head.status,
        reason: head.reason,
        httpVersion: head.version,
        headers: head.headers,
        body: emptyBody(),
        timestampStart: now,
        timestampEnd: now,
      };
      out.push({ type: "send", to: "client", data: wire });
      this.#responseHeadSent = true;
      this.#endFlow(now, out);
      this.#startRawRelay(request, now, out);
      return false;
    }
    let framing: BodyFraming = { kind: "none" };
    if (!upgrade) {
      try {
        framing = responseFraming(request.method, head);
      } catch (e) {
        this.#serverProtocolError(e, now, out);
        return false;
      }
    }
    flow.response = {
      status: head.status,
      reason: head.reason,
      httpVersion: head.version,
      headers: head.headers,
      body: emptyBody(),
      timestampStart: now,
    };
    const holding = this.#o.responseHook === true && !upgrade;
    if (holding) {
      // The head alone first (`responseheaders`): it may stream the body through a transform.
      this.#respHold = "head";
      this.#respHead = head;
      this.#respHeldWire = wire;
      this.#respHeadSize = wire.byteLength;
      out.push({ type: "response-hook", flow, phase: "headers" });
    } else {
      out.push({ type: "send", to: "client", data: wire });
      this.#responseHeadSent = true;
    }
    out.push({ type: "flow", event: "update", flow });

    if (upgrade) {
      this.#resp = "tunnel";
      this.#req = "tunnel";
      flow.websocket = { messages: [], messagesDropped: 0 };
      // Messages addons look at are held whole (up to the reader's frame limit).
      this.#wsHold = this.#o.hooks?.has("websocketMessage") ?? false;
      const maxRecord = this.#wsHold ? WS_HELD_LIMIT : this.#o.bodyLimit;
      this.#wsClient = new WebSocketReader({ maxRecord });
      this.#wsServer = new WebSocketReader({ maxRecord });
      if (this.#o.hooks?.has("websocketStart")) {
        this.#wsCall("websocketStart", new WebSocketFlowView(flow), out);
      }
      // Bytes the client sent after its upgrade request already belong to the WebSocket.
      if (this.#client.byteLength > 0) {
        this.#relayWebSocket("client", this.#client, now, out);
        this.#client = new Uint8Array(0);
      }
      return true;
    }
    if (framing.kind === "close" || wantsClose(head.version, head.headers)) this.#closeAfter = true;
    this.#responseBody = new BodyDecoder(framing);
    this.#resp = "body";
    if (this.#responseBody.done) this.#responseComplete(now, out);
    return true;
  }

  /** Forwards body bytes as they came and records the decoded payload. */
  #forwardRecorded(
    to: Side,
    wire: Uint8Array,
    data: Uint8Array[],
    part: "request" | "response",
    out: LayerCommand[],
  ): void {
    if (wire.byteLength > 0) out.push({ type: "send", to, data: wire });
    const flow = this.#flow;
    if (!flow) return;
    const body = part === "request" ? flow.request.body : flow.response?.body;
    if (!body) return;
    for (const piece of data) appendBody(body, piece, this.#o.bodyLimit);
  }

  #responseComplete(now: number, out: LayerCommand[]): void {
    const flow = this.#flow!;
    if (this.#respXform) {
      // The transform's end-of-body call goes last; the response completes with its result.
      if (!this.#respXformEnding) {
        this.#respXformEnding = true;
        out.push({ type: "transform", id: this.#xformNext++, fn: this.#respXform, data: new Uint8Array(0) });
      }
      return;
    }
    if (flow.response) flow.response.timestampEnd = now;
    // A body complete with its head: taken up once the `headers` phase has spoken.
    if (this.#respHold === "head") return;
    if (this.#respHold === "body") {
      // Whole: the hook sees it before the client does (completed when the verdict comes).
      this.#askResponseHook(out);
      return;
    }
    this.#resp = "idle";
    this.#responseBody = null;
    if (this.#req === "body") {
      // The server answered before the request body was complete (nginx's `return 200` does, so
      // does a 413). Closing now would leave the client stuck sending, or reset it before it read
      // the answer: the rest of the body is still relayed, and the exchange ends with it.
      return;
    }
    this.#exchangeDone(now, out, true);
  }

  /** Ends the exchange whose request and response are both complete. */
  #exchangeDone(now: number, out: LayerCommand[], pump: boolean): void {
    this.#endFlow(now, out);
    if (this.#closeAfter || this.#clientEof) {
      this.#closeAll(out);
      return;
    }
    this.#req = "head";
    this.#requestHead = null;
    this.#requestBody = null;
    if (pump && this.#client.byteLength > 0) this.#pumpClient(now, out);
  }

  /** Hands the connection to a raw TCP relay (recorded as a flow of its own). */
  #startRawRelay(request: RequestHead, now: number, out: LayerCommand[]): void {
    const flow = this.#flow!;
    const server: ServerInfo = { ...flow.server };
    const connectTo = request.method.toUpperCase() === "CONNECT" ? parseAuthority(request.target, 443) : null;
    if (connectTo) server.hostname = connectTo.hostname;
    const raw = new TcpLayer({
      id: this.#o.newId(),
      client: this.#o.client,
      server,
      ...(this.#o.tls ? { tls: this.#o.tls } : {}),
      serverConnected: true,
      messageLimit: this.#o.bodyLimit,
      maxMessages: this.#o.maxMessages,
      now,
      ...(this.#o.hooks ? { hooks: this.#o.hooks } : {}),
    });
    this.#raw = raw;
    this.#req = "tunnel";
    this.#resp = "tunnel";
    out.push(...raw.start());
    const client = this.#client;
    const fromServer = this.#serverBuf;
    this.#client = new Uint8Array(0);
    this.#serverBuf = new Uint8Array(0);
    if (client.byteLength > 0) out.push(...raw.handle({ type: "data", from: "client", data: client, now }));
    if (fromServer.byteLength > 0) {
      out.push(...raw.handle({ type: "data", from: "server", data: fromServer, now }));
    }
    if (this.#clientEof) out.push(...raw.handle({ type: "eof", from: "client", now }));
  }

  #onServerEnd(error: string | null, now: number, out: LayerCommand[]): void {
    if (this.#respHold === "asking" || this.#respHold === "head") {
      // Taken up once the response hook has spoken.
      this.#respServerEnd = { error };
      return;
    }
    if (this.#resp === "tunnel") {
      if (error && this.#flow) {
        this.#flow.error = { message: `server connection failed: ${error}`, timestamp: now };
      }
      this.#finishTunnel(now, out);
      return;
    }
    const wasOpen = this.#server === "open";
    this.#server = "none";
    this.#serverAddress = null;
    if (this.#resp === "body" && this.#responseBody && !error) {
      try {
        this.#responseBody.end();
        this.#responseComplete(now, out);
        out.push({ type: "close", to: "server", reset: false });
        return;
      } catch { /* truncated body: reported below */ }
    }
    if (this.#answeredEarly()) {
      // Nowhere to send the rest of the body: it is read and dropped, and the connection closes
      // once the client has sent it all.
      if (wasOpen) out.push({ type: "close", to: "server", reset: error !== null });
      this.#discarding = true;
      this.#closeAfter = true;
      this.#pumpClient(now, out);
      return;
    }
    if (this.#resp === "idle") {
      if (wasOpen) out.push({ type: "close", to: "server", reset: false });
      return;
    }
    const what = error ? `server connection failed: ${error}` : "server closed the connection";
    if (!this.#responseHeadSent) {
      this.#serverFailure = what;
      this.#badGateway(now, out, `${what} before sending a response`);
    } else {
      this.#failFlow(`${what} in the middle of the response body`, now, out);
      // The client sees what it would see without the proxy: a reset for a reset, and for a
      // close, a close before the framing said the body ends.
      out.push({ type: "close", to: "client", reset: error !== null }, {
        type: "close",
        to: "server",
        reset: false,
      });
      this.#done = true;
    }
  }

  // ---- WebSocket --------------------------------------------------------------------------

  #relayWebSocket(from: Side, data: Uint8Array, now: number, out: LayerCommand[]): void {
    if (!this.#wsHold) out.push({ type: "send", to: from === "client" ? "server" : "client", data });
    const reader = from === "client" ? this.#wsClient : this.#wsServer;
    const ws = this.#flow?.websocket;
    if (!reader || !ws) return;
    let messages;
    try {
      messages = reader.push(data);
    } catch (e) {
      if (this.#wsHold) {
        // Held messages cannot go on once the frames are out of step: the WebSocket ends.
        this.#failFlow(
          `WebSocket frames from the ${from} cannot be parsed: ${(e as Error).message}`,
          now,
          out,
        );
        this.#closeAll(out);
        return;
      }
      // Keep relaying; stop recording this direction.
      out.push({
        type: "log",
        level: "warn",
        message: `WebSocket frames from the ${from} cannot be parsed: ${(e as Error).message}`,
      });
      if (from === "client") this.#wsClient = null;
      else this.#wsServer = null;
      return;
    }
    for (const m of messages) {
      if (this.#wsHold && this.#flow) {
        const view = new WebSocketFlowView(
          this.#flow,
          new MessageView(from === "client", WS_KINDS[m.opcode] ?? "binary", m.data),
        );
        this.#wsCall("websocketMessage", view, out, m);
        continue;
      }
      this.#recordWebSocket(from, m, now);
    }
  }

  /** Asks for a WebSocket hook; a message's hook holds it (`m`) until the result. */
  #wsCall(
    hook: "websocketStart" | "websocketMessage" | "websocketEnd",
    view: WebSocketFlowView,
    out: LayerCommand[],
    m?: WebSocketMessage,
  ): void {
    const id = this.#wsNextCall++;
    if (hook !== "websocketEnd") this.#wsCalls.set(id, { view, ...(m ? { m } : {}) });
    out.push({ type: "addon-hook", id, call: { hook, payload: view } });
  }

  /** The addons returned from a WebSocket hook: kill, or send the held message as they left it. */
  #onWebSocketHook(id: number, now: number, out: LayerCommand[]): void {
    const call = this.#wsCalls.get(id);
    if (!call) return;
    this.#wsCalls.delete(id);
    if (call.view.killed) {
      this.#failFlow("WebSocket killed by an addon", now, out);
      if (this.#server === "open" || this.#server === "connecting") {
        out.push({ type: "close", to: "server", reset: true });
      }
      out.push({ type: "close", to: "client", reset: true });
      this.#server = "none";
      this.#req = "closed";
      this.#done = true;
      return;
    }
    const message = call.view.message;
    const m = call.m;
    if (!message || !m || message.dropped) return;
    const fromClient = message.fromClient;
    if (m.truncated && !message.changed) {
      this.#failFlow(`WebSocket message of ${m.size} bytes is over the held limit`, now, out);
      this.#closeAll(out);
      return;
    }
    const content = message.content;
    out.push({
      type: "send",
      to: fromClient ? "server" : "client",
      data: encodeWebSocketFrame(m.opcode, content, { mask: fromClient, compressed: m.compressed }),
    });
    this.#recordWebSocket(fromClient ? "client" : "server", {
      ...m,
      data: content,
      size: content.byteLength,
      truncated: false,
    }, now);
  }

  /** Records one WebSocket message in the flow (bounded). */
  #recordWebSocket(from: Side, m: WebSocketMessage, now: number): void {
    const ws = this.#flow?.websocket;
    if (!ws) return;
    const kind = WS_KINDS[m.opcode] ?? "binary";
    if (kind === "close" && m.data.byteLength >= 2) {
      ws.closeCode = (m.data[0]! << 8) | m.data[1]!;
      ws.closeReason = new TextDecoder().decode(m.data.subarray(2));
    }
    if (ws.messages.length >= this.#o.maxMessages) {
      ws.messagesDropped++;
      return;
    }
    ws.messages.push({
      fromClient: from === "client",
      kind,
      content: boundedContent(ws, m.data, this.#o.bodyLimit),
      size: m.size,
      timestamp: now,
    });
  }

  #finishTunnel(now: number, out: LayerCommand[]): void {
    this.#endFlow(now, out);
    this.#closeAll(out);
  }

  // ---- errors and endings -----------------------------------------------------------------

  #clientProtocolError(e: unknown, now: number, out: LayerCommand[], hasFlow = false): void {
    const status = e instanceof Http1Error ? e.status : 400;
    const message = (e as Error).message;
    if (!hasFlow) {
      this.#flow = this.#newFlow(
        { method: "", target: "", version: "HTTP/1.1", headers: [] },
        this.#o.tls?.sni ?? this.#o.server.hostname ?? this.#o.server.address.hostname,
        this.#o.server.address,
        "",
        now,
      );
      out.push({ type: "flow", event: "start", flow: this.#flow });
    }
    this.#respondError(status, REASONS[status] ?? "Bad Request", `malformed request: ${message}`, now, out);
  }

  #serverProtocolError(e: unknown, now: number, out: LayerCommand[]): void {
    const message = `malformed response from the server: ${(e as Error).message}`;
    if (!this.#responseHeadSent) {
      this.#serverFailure = message;
      this.#badGateway(now, out, message);
    } else {
      this.#failFlow(message, now, out);
      out.push({ type: "close", to: "client", reset: true }, { type: "close", to: "server", reset: true });
      this.#done = true;
    }
  }

  #badGateway(now: number, out: LayerCommand[], message?: string): void {
    const address = this.#serverAddress ?? this.#o.server.address;
    const text = message ?? `cannot connect to ${formatHostPort(address)}: ${this.#serverFailure}`;
    this.#respondError(502, "Bad Gateway", text, now, out);
  }

  #rejectRequest(
    head: RequestHead,
    status: number,
    reason: string,
    text: string,
    now: number,
    out: LayerCommand[],
    extraHeaders: [string, string][] = [],
  ) {
    this.#flow = this.#newFlow(
      head,
      this.#o.server.hostname ?? this.#o.server.address.hostname,
      this.#o.server.address,
      head.target,
      now,
    );
    out.push({ type: "flow", event: "start", flow: this.#flow });
    this.#respondError(status, reason, text, now, out, extraHeaders);
  }

  /** Answers the client with an error response naming what failed, records it, and closes. */
  #respondError(
    status: number,
    reason: string,
    text: string,
    now: number,
    out: LayerCommand[],
    extraHeaders: [string, string][] = [],
  ): void {
    const flow = this.#flow!;
    const body = encoder.encode(`wirescope: ${text}\n`);
    const extra = extraHeaders.map(([n, v]) => `${n}: ${v}\r\n`).join("");
    const head =
      `HTTP/1.1 ${status} ${reason}\r\n${extra}content-type: text/plain; charset=utf-8\r\ncontent-length: ${body.byteLength}\r\nconnection: close\r\n\r\n`;
    out.push({ type: "send", to: "client", data: concatBytes(encoder.encode(head), body) });
    flow.response = {
      status,
      reason,
      httpVersion: "HTTP/1.1",
      headers: [...extraHeaders, ["content-type", "text/plain; charset=utf-8"], [
        "content-length",
        String(body.byteLength),
      ], ["connection", "close"]],
      body: { content: body, size: body.byteLength, truncated: false },
      timestampStart: now,
      timestampEnd: now,
    };
    this.#failFlow(text, now, out);
    this.#closeAll(out);
  }

  #failFlow(message: string, now: number, out: LayerCommand[]): void {
    const flow = this.#flow;
    if (!flow || flow.timestampEnd !== undefined) return;
    flow.error = { message, timestamp: now };
    this.#endFlow(now, out);
  }

  #endFlow(now: number, out: LayerCommand[]): void {
    const flow = this.#flow;
    if (!flow || flow.timestampEnd !== undefined) return;
    flow.timestampEnd = now;
    out.push({ type: "flow", event: "end", flow });
    if (flow.websocket && this.#o.hooks?.has("websocketEnd")) {
      this.#wsCall("websocketEnd", new WebSocketFlowView(flow), out);
    }
  }

  #closeAll(out: LayerCommand[]): void {
    if (this.#server === "open" || this.#server === "connecting") {
      out.push({ type: "close", to: "server", reset: false });
    }
    out.push({ type: "close", to: "client", reset: false });
    this.#server = "none";
    this.#req = "closed";
    this.#done = true;
  }

  #logClient(message: string, out: LayerCommand[]): void {
    out.push({
      type: "log",
      level: "info",
      message: `${formatHostPort(this.#o.client.address)}: ${message}`,
    });
  }

  #newFlow(head: RequestHead, host: string, target: HostPort, path: string, now: number): HttpFlow {
    const scheme = this.#o.scheme;
    const defaultPort = scheme === "https" ? 443 : 80;
    const authority = (host.includes(":") ? `[${host}]` : host) +
      (target.port === defaultPort ? "" : `:${target.port}`);
    const flow: HttpFlow = {
      id: this.#o.newId(),
      type: "http",
      client: this.#o.client,
      server: { ...this.#o.server, address: target, hostname: host },
      timestampStart: now,
      request: {
        method: head.method,
        scheme,
        host,
        port: target.port,
        path,
        url: `${scheme}://${authority}${path.startsWith("/") || path === "" ? path : "/" + path}`,
        httpVersion: head.version,
        headers: head.headers,
        body: emptyBody(),
        timestampStart: now,
      },
    };
    if (this.#o.tls) flow.tls = this.#o.tls;
    this.#flow = flow;
    return flow;
  }
}

const CRLF = new Uint8Array([13, 10]);
const LAST_CHUNK = new TextEncoder().encode("0\r\n\r\n");

/** The most bytes of one WebSocket message held for `websocketMessage` hooks. */
const WS_HELD_LIMIT = 64 * 1024 * 1024;

const WS_KINDS: Record<number, "text" | "binary" | "close" | "ping" | "pong"> = {
  1: "text",
  2: "binary",
  8: "close",
  9: "ping",
  10: "pong",
};

const REASONS: Record<number, string> = {
  400: "Bad Request",
  431: "Request Header Fields Too Large",
  501: "Not Implemented",
  505: "HTTP Version Not Supported",
};

const CONTINUE = encoder.encode("HTTP/1.1 100 Continue\r\n\r\n");

/** True when an HTTP/1.1 request waits for a 100 (Continue) before sending its body. */
function expectsContinue(head: RequestHead): boolean {
  return head.version === "HTTP/1.1" &&
    headerValues(head.headers, "expect").some((v) => v.trim().toLowerCase() === "100-continue");
}

function wantsClose(version: string, headers: [string, string][]): boolean {
  const tokens = headerValues(headers, "connection").flatMap((v) =>
    v.toLowerCase().split(",").map((t) => t.trim())
  );
  if (tokens.includes("close")) return true;
  return version === "HTTP/1.0" && !tokens.includes("keep-alive");
}

function isWebSocketUpgrade(request: RequestHead, response: ResponseHead): boolean {
  const upgrade = (h: [string, string][]) =>
    (headerValue(h, "upgrade") ?? "").toLowerCase().includes("websocket");
  return upgrade(request.headers) && upgrade(response.headers);
}

/**
 * How far a buffer was searched for the end of a head. Buffers only grow at their end (see
 * `appendBytes`), so the same backing buffer and start mean the same bytes up to `upTo`; any
 * other buffer is searched from its start.
 */
type Scan = { buffer: ArrayBufferLike; offset: number; upTo: number } | null;

function scanOf(buf: Uint8Array): Scan {
  return { buffer: buf.buffer, offset: buf.byteOffset, upTo: buf.byteLength };
}

function scanned(scan: Scan, buf: Uint8Array): number {
  return scan !== null && scan.buffer === buf.buffer && scan.offset === buf.byteOffset &&
      scan.upTo <= buf.byteLength
    ? scan.upTo
    : 0;
}

/** True when a head has a bare LF line ending or empty lines before its start line. */
function needsNewLines(raw: Uint8Array): boolean {
  if (raw[0] === 0x0d || raw[0] === 0x0a) return true;
  for (let i = raw.indexOf(0x0a); i >= 0; i = raw.indexOf(0x0a, i + 1)) {
    if (raw[i - 1] !== 0x0d) return true;
  }
  return false;
}

const IP_LITERAL = /^(\d{1,3}(\.\d{1,3}){3}|[0-9a-f:]*:[0-9a-f:.]*)$/i;

/**
 * True when a Host header names another host (or port) than the connection's destination: the
 * name the client asked for (`known`: SNI) or, without one, the address it dialed when the header
 * holds an address too. A name against a bare address cannot be checked here and is believed.
 */
function namesAnotherHost(hostHeader: string, known: string | undefined, destination: HostPort): boolean {
  const host = hostFromHeader(hostHeader);
  if (host === undefined) return false;
  const port = portFromHeader(hostHeader);
  if (port !== undefined && port !== destination.port) return true;
  const norm = (h: string) => h.toLowerCase().replace(/\.$/, "");
  if (known !== undefined) return norm(host) !== norm(known);
  return IP_LITERAL.test(host) && norm(host) !== norm(destination.hostname);
}

/** The port of a Host header, when it names one. */
function portFromHeader(value: string): number | undefined {
  const m = /:(\d{1,5})$/.exec(value.trim());
  if (!m || (value.includes("[") ? !value.trim().includes("]:") : value.split(":").length !== 2)) {
    return undefined;
  }
  return Number(m[1]);
}

/** The host part of a Host header (no port, no IPv6 brackets). */
function hostFromHeader(value: string | undefined): string | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (v.startsWith("[")) {
    const end = v.indexOf("]");
    return end > 0 ? v.slice(1, end) : undefined;
  }
  const colon = v.indexOf(":");
  return (colon >= 0 ? v.slice(0, colon) : v) || undefined;
}

/** Parses `host:port` (IPv6 in brackets). */
export function parseAuthority(text: string, defaultPort: number): HostPort | null {
  let host: string;
  let rest: string;
  if (text.startsWith("[")) {
    const end = text.indexOf("]");
    if (end < 0) return null;
    host = text.slice(1, end);
    rest = text.slice(end + 1);
  } else {
    const colon = text.lastIndexOf(":");
    host = colon >= 0 ? text.slice(0, colon) : text;
    rest = colon >= 0 ? text.slice(colon) : "";
  }
  let port = defaultPort;
  if (rest !== "") {
    if (!/^:\d{1,5}$/.test(rest)) return null;
    port = Number(rest.slice(1));
    if (port < 1 || port > 65535) return null;
  }
  if (host === "" || /[\s/?#@]/.test(host)) return null;
  return { hostname: host, port };
}

/** The absolute-form target `http://host[:port]/path` for an upstream proxy. */
function absoluteUrl(target: HostPort, path: string): string {
  const host = target.hostname.includes(":") ? `[${target.hostname}]` : target.hostname;
  return `http://${host}${target.port === 80 ? "" : `:${target.port}`}${path}`;
}

/** Parses an absolute-form `http://host[:port]/path` request target. */
function parseAbsoluteUrl(target: string): { hostname: string; port: number; path: string } | null {
  const m = /^http:\/\/([^/?#]+)(.*)$/i.exec(target);
  if (!m) return null;
  const address = parseAuthority(m[1]!, 80);
  if (!address) return null;
  let path = m[2]!;
  if (path === "" || path.startsWith("?")) path = "/" + path;
  return { ...address, path };
}
