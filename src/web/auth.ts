/**
 * Who may use the web UI, decided per request before anything else runs:
 *
 * - **Host**: the `Host` header must name this server: an IP address literal (a DNS rebinding
 *   attack needs a name, so literals are safe), `localhost`, or a name the caller listed, each with
 *   the port the UI listens on. A page on `evil.example` that rebinds its name to 127.0.0.1 still
 *   sends `Host: evil.example:8081` and is refused.
 * - **Token**: the URL printed at start carries a secret (`?token=`), random per run or the fixed
 *   `--web-password`. A request with it gets a session cookie (HttpOnly, SameSite=Strict) and is
 *   redirected to the URL without it; afterwards the cookie is the credential.
 * - **CSRF**: every mutating request (anything but GET/HEAD/OPTIONS) carries `X-Wirescope-Csrf`
 *   equal to its session's value (a page on another origin cannot set that header without a CORS
 *   preflight, which this server never approves), and an `Origin`, when sent, must be this server.
 * - **WebSocket**: the upgrade needs the cookie and an `Origin` of this server.
 *
 * Everything here is pure (no I/O) so the checks are unit-tested on their own.
 * @module
 */
import { timingSafeEqual } from "node:crypto";
import { canonicalLiteral } from "../proxy/destination_policy.ts";

/** The cookie that carries a session. */
export const SESSION_COOKIE = "wirescope_session";
/** The header that carries a session's CSRF value on mutating requests. */
export const CSRF_HEADER = "x-wirescope-csrf";

/** Options of {@link WebAuth}. */
export interface WebAuthOptions {
  /** The fixed secret (`--web-password`); a random token per run when absent. */
  password?: string;
  /** Names besides IP literals and `localhost` that the `Host` header may carry. */
  hostnames?: string[];
  /** The port the UI listens on (the `Host` header must carry it). */
  port: number;
  /** Turn the token check off (tests of other parts; never the default). */
  noAuth?: boolean;
}

/** One browser's session. */
export interface WebSession {
  /** The value mutating requests carry in {@link CSRF_HEADER}. */
  csrf: string;
  /** When it was made (ms since the epoch). */
  created: number;
}

/** The outcome of a check: null to go on, or the refusal to send. */
export type Refusal = { status: number; message: string } | null;

/** The most sessions kept; the oldest is dropped beyond it (each visit with the token makes one). */
const MAX_SESSIONS = 1000;

/** Random URL-safe text of `bytes` random bytes. */
export function randomSecret(bytes = 24): string {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  return btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  return x.byteLength === y.byteLength && timingSafeEqual(x, y);
}

/** The checks of one web UI server and its sessions. */
export class WebAuth {
  /** The secret of the printed URL. */
  readonly token: string;
  readonly #o: WebAuthOptions;
  readonly #sessions = new Map<string, WebSession>();
  readonly #names: Set<string>;

  /** Makes the checks; a random token unless `password` is given. */
  constructor(options: WebAuthOptions) {
    this.#o = options;
    this.token = options.password ?? randomSecret();
    this.#names = new Set(["localhost", ...(options.hostnames ?? [])].map((n) => n.toLowerCase()));
  }

  /** Whether the token check is off. */
  get open(): boolean {
    return this.#o.noAuth === true;
  }

  /** Refuses a `Host` header that does not name this server (DNS rebinding). */
  checkHost(host: string | null): Refusal {
    if (host === null) return { status: 400, message: "a Host header is required" };
    const m = /^(\[[0-9a-fA-F:.]+\]|[^:\[\]]+)(?::(\d+))?$/.exec(host);
    const port = m?.[2] === undefined ? 80 : Number(m[2]);
    if (m && port === this.#o.port) {
      const name = m[1]!.toLowerCase().replace(/\.$/, "");
      if (canonicalLiteral(name) !== null || this.#names.has(name)) return null;
    }
    return { status: 403, message: `Host ${JSON.stringify(host)} is not a name of this server` };
  }

  /** True when `origin` is this server's (`http://` + a host {@link checkHost} accepts). */
  sameOrigin(origin: string | null, host: string | null): boolean {
    if (origin === null || host === null) return false;
    return origin.toLowerCase() === `http://${host.toLowerCase()}` && this.checkHost(host) === null;
  }

  /** Whether `candidate` (a `?token=` value) is the secret. */
  tokenMatches(candidate: string | null): boolean {
    return candidate !== null && sameSecret(candidate, this.token);
  }

  /** Makes a session; returns its id (the cookie's value) and the session. */
  newSession(now = Date.now()): [string, WebSession] {
    const id = randomSecret();
    const session = { csrf: randomSecret(), created: now };
    this.#sessions.set(id, session);
    if (this.#sessions.size > MAX_SESSIONS) {
      const oldest = this.#sessions.keys().next().value;
      if (oldest !== undefined) this.#sessions.delete(oldest);
    }
    return [id, session];
  }

  /** The session a `Cookie` header names, if it is one of ours. */
  session(cookieHeader: string | null): WebSession | undefined {
    const id = cookieValue(cookieHeader, SESSION_COOKIE);
    if (id === undefined) return undefined;
    for (const [key, session] of this.#sessions) {
      if (sameSecret(key, id)) return session;
    }
    return undefined;
  }

  /** The `Set-Cookie` value for a session id. */
  cookie(id: string): string {
    return `${SESSION_COOKIE}=${id}; HttpOnly; SameSite=Strict; Path=/`;
  }

  /**
   * The check of an API request (after {@link checkHost}): a session is needed (unless the check
   * is off), and a mutating method needs the session's CSRF value and no foreign `Origin`.
   */
  checkRequest(
    method: string,
    headers: { get(name: string): string | null },
  ): Refusal {
    const session = this.session(headers.get("cookie"));
    if (!session && !this.open) {
      return { status: 401, message: "not logged in: open the URL printed at start" };
    }
    if (method === "GET" || method === "HEAD" || method === "OPTIONS") return null;
    const origin = headers.get("origin");
    if (origin !== null && !this.sameOrigin(origin, headers.get("host"))) {
      return { status: 403, message: `Origin ${origin} may not change anything here` };
    }
    if (this.open && !session) return null;
    const csrf = headers.get(CSRF_HEADER);
    if (csrf === null || !session || !sameSecret(csrf, session.csrf)) {
      return { status: 403, message: `missing or wrong ${CSRF_HEADER} header` };
    }
    return null;
  }

  /** The check of a WebSocket upgrade: this server's `Origin` and a session. */
  checkUpgrade(headers: { get(name: string): string | null }): Refusal {
    if (!this.sameOrigin(headers.get("origin"), headers.get("host"))) {
      return { status: 403, message: "WebSocket from another origin" };
    }
    if (!this.open && !this.session(headers.get("cookie"))) {
      return { status: 401, message: "not logged in: open the URL printed at start" };
    }
    return null;
  }
}

/** The value of cookie `name` in a `Cookie` header. */
export function cookieValue(header: string | null, name: string): string | undefined {
  if (header === null) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
