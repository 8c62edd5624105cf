/**
 * The JSON shapes of the web UI's API, shared by the server (src/web/server.ts) and the page
 * (src/web/ui/). Types only: the page's bundle imports nothing else from the server side.
 * @module
 */

/** What the flow list shows of a flow (sent in pages and in live updates; never bodies). */
export interface FlowSummary {
  id: string;
  /** Where the flow sits in the store (for paging), when it came from a store query. */
  cursor?: string;
  /** Start (ms since the epoch). */
  ts: number;
  /** Duration in ms, when ended. */
  duration?: number;
  /** The client's address, `host:port`. */
  client: string;
  /** The WireGuard peer's public key, in WireGuard mode. */
  peer?: string;
  /** `HTTP/1`, `HTTP/2`, `WebSocket`, `TCP`, `UDP`, `DNS`. */
  type: string;
  /** HTTP method, or the DNS question type. */
  method: string;
  host: string;
  /** Path and query (HTTP), or the DNS name. */
  path: string;
  /** HTTP status, or the DNS response code; 0 when none. */
  status: number;
  /** The response's content type (HTTP), without parameters. */
  contentType?: string;
  /** Bytes from the client (request body, or payload). */
  requestSize: number;
  /** Bytes from the server (response body, or payload). */
  responseSize: number;
  /** The error message, when the flow failed. */
  error?: string;
  marked?: boolean;
  /** True when the flow matches the page's highlight expression. */
  highlight?: boolean;
  /** True while the flow has not ended. */
  live?: boolean;
  /** Where the flow is held by interception, while it is. */
  intercepted?: "request" | "response";
  /** The flow this one replays (client replay, or a duplicate sent from the editor). */
  replayOf?: string;
}

/**
 * `GET /api/flows`: one page, oldest first from `cursor` (or the start); or, with `before=CURSOR`
 * or `from=end`, newest first.
 */
export interface FlowPageJson {
  flows: FlowSummary[];
  /** Pass as `cursor` (or `before`, going back from the end) for the next page; absent at the end. */
  cursor?: string;
  /** Flows matching the filter in the whole store (only when asked for with `count=1`). */
  total?: number;
}

/** A body as the detail view gets it: its text when it is short text, else its URL to fetch. */
export interface BodyJson {
  size: number;
  truncated: boolean;
  /** The `Content-Type` header's value, "" when none. */
  contentType: string;
  /** The `Content-Encoding` header's value, "" when none. */
  contentEncoding: string;
  /** The stored bytes as text, when they are valid UTF-8, not encoded and at most 256 KiB. */
  text?: string;
  /** Where the raw bytes are (add `?decode=1` to undo gzip, deflate, br, zstd). */
  url: string;
}

/** A message of a WebSocket, TCP or UDP flow. */
export interface MessageJson {
  fromClient: boolean;
  kind: string;
  size: number;
  ts: number;
  /** The content as text when it is UTF-8, else base64 in `base64`. */
  text?: string;
  base64?: string;
}

/** `GET /api/flows/:id`: the whole flow. */
export interface FlowDetailJson {
  summary: FlowSummary;
  comment: string;
  connection: {
    client: string;
    mode: string;
    peer?: string;
    peerEndpoint?: string;
    server: string;
    serverHostname?: string;
    serverPeerAddress?: string;
    tls?: {
      sni?: string;
      alpn?: string;
      alpnOffered: string[];
      clientVersion?: string;
      serverVersion?: string;
      serverCipher?: string;
      passthrough: boolean;
      passthroughReason?: string;
      serverCertificate?: {
        subject: string;
        issuer: string;
        dnsNames: string[];
        ipAddresses?: string[];
        validFrom: string;
        validTo: string;
        fingerprintSha256: string;
      };
    };
  };
  /** Times in ms since the epoch; absent when not reached. */
  timing: {
    start: number;
    serverConnected?: number;
    tlsSetup?: number;
    requestStart?: number;
    requestEnd?: number;
    responseStart?: number;
    responseEnd?: number;
    end?: number;
  };
  request?: {
    method: string;
    url: string;
    httpVersion: string;
    headers: [string, string][];
    body: BodyJson;
  };
  response?: {
    status: number;
    reason: string;
    httpVersion: string;
    headers: [string, string][];
    body: BodyJson;
  };
  messages?: MessageJson[];
  dns?: { question: string; answers: string[] };
  error?: string;
}

/** `POST /api/filter/check`. */
export type FilterCheckJson = { ok: true } | { ok: false; error: string; column: number };

/** A message on `/api/updates` from the server. */
export interface UpdatesMessage {
  /** Ended flows that match the connection's filter, oldest first. */
  flows: FlowSummary[];
  /** True when updates were dropped (a slow reader): the page should reload its list. */
  gap?: boolean;
}

/** A message on `/api/updates` from the page: the filter its list shows ("" for all) and what it highlights. */
export interface UpdatesFilterMessage {
  filter: string;
  highlight?: string;
}

/** One client peer on the WireGuard page. */
export interface WireGuardPeerJson {
  /** The client number (its config is `wireguard-client-<index>.conf`). */
  index: number;
  name: string;
  publicKey: string;
  /** Its inner addresses (AllowedIPs on the server's side). */
  addresses: string[];
  /** In the listener (a disabled peer is out of it; its config stays). */
  enabled: boolean;
  /** A session is up (a handshake less than 180 s ago, not expired since). */
  online: boolean;
  /** When its last handshake completed (ms since the epoch). */
  lastHandshake?: number;
  handshakes: number;
  /** Where its datagrams come from. */
  endpoint?: string;
  /** Tunnel bytes from it and to it. */
  rxBytes: number;
  txBytes: number;
  /** Its configuration file in the confdir. */
  configFile: string;
}

/** `GET /api/wireguard`. */
export interface WireGuardPageJson {
  publicKey: string;
  /** What client configurations give as `Endpoint`. */
  endpoint: string;
  /** Where the listener is bound. */
  listening: string;
  peers: WireGuardPeerJson[];
}

/** `GET`/`PUT /api/intercept`: the intercept expression ("" for none) and the flows held now. */
export interface InterceptJson {
  /** False when the UI has no intercept addon (it serves a store, or the proxy was started without one). */
  available: boolean;
  filter: string;
  paused: FlowSummary[];
}

/**
 * `POST /api/flows/:id/resume` (the changes to the held request or response; absent fields stay
 * as they are) and `POST /api/flows/:id/send` (a request built from a recorded one: the edited
 * copy is sent by client replay).
 */
export interface MessageEditsJson {
  method?: string;
  url?: string;
  status?: number;
  reason?: string;
  headers?: [string, string][];
  /** The new body as text (sent as UTF-8). */
  body?: string;
}
