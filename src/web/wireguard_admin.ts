/**
 * The web UI's WireGuard page, server side: the server's endpoint and key, each client peer with
 * its state from the listener (online, last handshake, bytes each way), its `wg-quick`
 * configuration with a QR code, and changes at run time: add a peer (a new key in the state file,
 * its configuration written to the confdir, enabled in the listener at once), disable and enable
 * one (out of and back into the listener; the configuration stays), remove one (out of the
 * listener, its configuration file deleted).
 *
 * What survives a restart: the state file's keys (a peer added here keeps its key and address)
 * and the configuration files. Which peers are enabled is decided anew at start (`--peers N`
 * enables clients 1 to N), so a disabled peer within N is enabled again, and an added peer
 * beyond N is not until N grows.
 *
 * The routes (`/api/wireguard…`) pass the same checks as the rest of the API (session or token,
 * Host, the CSRF header on every change): src/web/server.ts hands them here after its checks.
 * @module
 */
import QRCode from "qrcode";
import { join } from "node:path";
import type { WireGuardListener } from "../net/wireguard_listener.ts";
import {
  clientConfig,
  type ClientPeer,
  clientPeers,
  loadWireGuardState,
  type WireGuardState,
} from "../cli/wireguard_conf.ts";
import type { WireGuardPageJson, WireGuardPeerJson } from "./api_types.ts";
import type { CertificateAuthority } from "../certs/certificate_authority.ts";
import { certPageResponse } from "../proxy/cert_page.ts";

/** Options of {@link WireGuardAdmin.open}. */
export interface WireGuardAdminOptions {
  /** The running listener whose peers are shown and changed. */
  listener: WireGuardListener;
  /** Where client configurations are written (`wireguard-client-<n>.conf`). */
  confdir: string;
  /** The state file holding the keys (as `loadWireGuardState` reads it). */
  stateFile: string;
  /** What client configurations give as `Endpoint` (`host:port`). */
  endpoint: string;
  /** Clients 1 to `peers` are the ones enabled at start. */
  peers: number;
}

/** The peers of one WireGuard listener that the UI manages. */
export class WireGuardAdmin {
  readonly #o: WireGuardAdminOptions;
  #state: WireGuardState;
  /** Client numbers shown (enabled or disabled); removed ones are not in it. */
  readonly #shown = new Set<number>();
  readonly #disabled = new Set<number>();
  readonly #names = new Map<number, string>();
  /** Changes run one after another (the state file is rewritten by adds). */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(options: WireGuardAdminOptions, state: WireGuardState) {
    this.#o = options;
    this.#state = state;
    for (let n = 1; n <= options.peers; n++) this.#shown.add(n);
  }

  /** Reads the state file (which must hold at least `peers` client keys, as at start). */
  static async open(options: WireGuardAdminOptions): Promise<WireGuardAdmin> {
    return new WireGuardAdmin(options, await loadWireGuardState(options.stateFile, options.peers));
  }

  /** The listener's public key. */
  get publicKey(): string {
    return this.#o.listener.publicKey;
  }

  #client(n: number): ClientPeer {
    const peer = clientPeers(this.#state, n)[n - 1];
    if (!peer) throw new RangeError(`no client ${n}`);
    return peer;
  }

  #has(n: number): boolean {
    return Number.isInteger(n) && this.#shown.has(n) && n <= this.#state.clientPrivateKeys.length;
  }

  /** What the page shows. */
  page(): WireGuardPageJson {
    const states = new Map(this.#o.listener.peerStates().map((p) => [p.publicKey, p]));
    const peers: WireGuardPeerJson[] = [...this.#shown].sort((a, b) => a - b).map((n) => {
      const c = this.#client(n);
      const s = states.get(c.publicKey);
      const peer: WireGuardPeerJson = {
        index: n,
        name: this.#names.get(n) ?? `peer ${n}`,
        publicKey: c.publicKey,
        addresses: [`${c.address4}/32`, `${c.address6}/128`],
        enabled: !this.#disabled.has(n),
        online: s?.online ?? false,
        handshakes: s?.handshakes ?? 0,
        rxBytes: s?.rxBytes ?? 0,
        txBytes: s?.txBytes ?? 0,
        configFile: this.#path(n),
      };
      if (s?.endpoint) peer.endpoint = s.endpoint;
      if (s?.lastHandshake !== undefined) peer.lastHandshake = s.lastHandshake;
      return peer;
    });
    const addr = this.#o.listener.addr;
    return {
      publicKey: this.publicKey,
      endpoint: this.#o.endpoint,
      listening: addr.hostname.includes(":")
        ? `[${addr.hostname}]:${addr.port}`
        : `${addr.hostname}:${addr.port}`,
      peers,
    };
  }

  #path(n: number): string {
    return join(this.#o.confdir, `wireguard-client-${n}.conf`);
  }

  /** Client `n`'s `wg-quick` configuration. */
  config(n: number): string | undefined {
    return this.#has(n) ? clientConfig(this.#state, this.#client(n), this.#o.endpoint) : undefined;
  }

  /** Client `n`'s configuration as a QR code (SVG). */
  async qrSvg(n: number): Promise<string | undefined> {
    const text = this.config(n);
    if (text === undefined) return undefined;
    return await QRCode.toString(text, { type: "svg", errorCorrectionLevel: "M", margin: 4 });
  }

  #serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(work, work);
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * Adds a client: a new key in the state file, its configuration written to the confdir (mode
   * 0600), and the peer enabled in the listener with its two addresses.
   */
  addPeer(name?: string): Promise<WireGuardPeerJson> {
    return this.#serial(async () => {
      const n = this.#state.clientPrivateKeys.length + 1;
      // Appends a key and rewrites the file (throws past the address plan's 250 clients).
      this.#state = await loadWireGuardState(this.#o.stateFile, n);
      const c = this.#client(n);
      const path = this.#path(n);
      await Deno.mkdir(this.#o.confdir, { recursive: true, mode: 0o700 });
      await Deno.writeTextFile(path, clientConfig(this.#state, c, this.#o.endpoint), { mode: 0o600 });
      this.#o.listener.addPeer({
        publicKey: c.publicKey,
        allowedIps: [`${c.address4}/32`, `${c.address6}/128`],
      });
      this.#shown.add(n);
      const label = name?.trim().slice(0, 64);
      if (label) this.#names.set(n, label);
      return this.page().peers.find((p) => p.index === n)!;
    });
  }

  /** Takes client `n` out of the listener (its sessions and connections end) or puts it back. */
  setEnabled(n: number, enabled: boolean): boolean {
    if (!this.#has(n)) return false;
    const c = this.#client(n);
    if (enabled && this.#disabled.has(n)) {
      this.#o.listener.addPeer({
        publicKey: c.publicKey,
        allowedIps: [`${c.address4}/32`, `${c.address6}/128`],
      });
      this.#disabled.delete(n);
    } else if (!enabled && !this.#disabled.has(n)) {
      this.#o.listener.removePeer(c.publicKey);
      this.#disabled.add(n);
    }
    return true;
  }

  /** Takes client `n` out of the listener and deletes its configuration file. */
  removePeer(n: number): Promise<boolean> {
    return this.#serial(async () => {
      if (!this.#has(n)) return false;
      if (!this.#disabled.has(n)) this.#o.listener.removePeer(this.#client(n).publicKey);
      this.#disabled.delete(n);
      this.#shown.delete(n);
      this.#names.delete(n);
      await Deno.remove(this.#path(n)).catch(() => {});
      return true;
    });
  }
}

const SECURITY_HEADERS: Record<string, string> = {
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

function json(status: number, value: unknown): Response {
  return new Response(JSON.stringify(value), {
    status,
    headers: { ...SECURITY_HEADERS, "content-type": "application/json; charset=utf-8" },
  });
}

/**
 * Answers `/api/wireguard…` (after the server's checks):
 * - `GET /api/wireguard`: {@link WireGuardPageJson} (404 without a WireGuard mode)
 * - `POST /api/wireguard/peers` `{ name? }`: adds a peer
 * - `POST /api/wireguard/peers/:n` `{ enabled }`: disables or enables it
 * - `DELETE /api/wireguard/peers/:n`: removes it
 * - `GET /api/wireguard/peers/:n/config`: its configuration, as a download
 * - `GET /api/wireguard/peers/:n/qr.svg`: its configuration as a QR code
 */
export async function wireGuardApi(
  req: Request,
  url: URL,
  admin: WireGuardAdmin | undefined,
): Promise<Response> {
  if (!admin) return json(404, { error: "no WireGuard mode is running" });
  const path = url.pathname;
  if (path === "/api/wireguard") {
    return req.method === "GET" ? json(200, admin.page()) : json(405, { error: "method not allowed" });
  }
  if (path === "/api/wireguard/peers") {
    if (req.method !== "POST") return json(405, { error: "method not allowed" });
    let body: { name?: unknown } = {};
    try {
      body = await req.json();
    } catch {
      return json(400, { error: 'expected JSON {"name": "..."}' });
    }
    if (body.name !== undefined && typeof body.name !== "string") {
      return json(400, { error: "name is a string" });
    }
    try {
      return json(200, await admin.addPeer(body.name));
    } catch (e) {
      return json(422, { error: (e as Error).message });
    }
  }
  const m = /^\/api\/wireguard\/peers\/(\d{1,4})(?:\/(config|qr\.svg))?$/.exec(path);
  if (!m) return json(404, { error: "not found" });
  const n = Number(m[1]);
  if (m[2] === "config" || m[2] === "qr.svg") {
    if (req.method !== "GET") return json(405, { error: "method not allowed" });
    if (m[2] === "config") {
      const text = admin.config(n);
      if (text === undefined) return json(404, { error: "no such peer" });
      return new Response(text, {
        headers: {
          ...SECURITY_HEADERS,
          "content-type": "text/plain; charset=utf-8",
          "content-disposition": `attachment; filename="wirescope-peer-${n}.conf"`,
        },
      });
    }
    const svg = await admin.qrSvg(n);
    if (svg === undefined) return json(404, { error: "no such peer" });
    return new Response(svg, {
      headers: {
        ...SECURITY_HEADERS,
        "content-type": "image/svg+xml",
        "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
      },
    });
  }
  if (req.method === "DELETE") {
    return (await admin.removePeer(n)) ? json(200, { removed: n }) : json(404, { error: "no such peer" });
  }
  if (req.method !== "POST") return json(405, { error: "method not allowed" });
  let body: { enabled?: unknown };
  try {
    body = await req.json();
  } catch {
    return json(400, { error: 'expected JSON {"enabled": true | false}' });
  }
  if (typeof body.enabled !== "boolean") {
    return json(400, { error: 'expected JSON {"enabled": true | false}' });
  }
  return admin.setEnabled(n, body.enabled) ? json(200, { ok: true }) : json(404, { error: "no such peer" });
}

/**
 * The CA's install page at `/cert/` of the UI: the page `http://wirescope.cert/` shows through the
 * proxy (its links, `/cert/pem` and so on, are the same paths here).
 */
export async function certPage(
  ca: CertificateAuthority | undefined,
  method: string,
  path: string,
): Promise<Response> {
  if (!ca) return json(404, { error: "no proxy, no CA" });
  if (method !== "GET" && method !== "HEAD") return json(405, { error: "method not allowed" });
  const route = path === "/cert" || path === "/cert/" ? "/" : path;
  const r = certPageResponse(
    {
      pem: ca.certPem,
      der: ca.certDer,
      p12: await Deno.readFile(ca.paths.p12),
      fingerprintSha256: ca.fingerprintSha256,
    },
    method,
    route,
  );
  const headers = new Headers({
    ...SECURITY_HEADERS,
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
  });
  for (const [n, v] of r.headers) if (n.toLowerCase() !== "content-length") headers.set(n, v);
  return new Response(method === "HEAD" ? null : r.body.slice(), { status: r.status, headers });
}
