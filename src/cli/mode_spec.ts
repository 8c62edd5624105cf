/**
 * Proxy modes written the way mitmproxy writes them: `MODE[:DATA][@[HOST:]PORT]`.
 *
 * - `wireguard[:KEYFILE][@[HOST:]PORT]` listens for WireGuard on UDP, port 51820 unless told.
 *   `KEYFILE` names the JSON file that holds the keys.
 * - `regular[@[HOST:]PORT]` is an explicit HTTP(S) proxy on TCP, port 8080 unless told.
 * - `socks5[@[HOST:]PORT]` is a SOCKS5 proxy on TCP, port 1080 unless told.
 * - `dns[@[HOST:]PORT]` is a DNS server on UDP and TCP, port 53 unless told.
 * - `reverse:SCHEME://HOST[:PORT][@[HOST:]PORT]` sends every connection to one server (`http`,
 *   `https`, `tcp`, `tls`; `dns`: a DNS server on UDP and TCP whose resolver is that server),
 *   port 8080 unless told.
 * - `upstream:http[s]://HOST:PORT[@[HOST:]PORT]` is the explicit proxy whose server side goes
 *   through another HTTP proxy (plain HTTP in absolute form, tunnels by CONNECT; `https`: TLS to
 *   that proxy), port 8080 unless told.
 * - `tun[:NAME]` captures what is routed into a TUN interface (`wirescope0` unless named).
 *
 * `HOST` may be a name, an IPv4 address or a bracketed IPv6 address (`[::1]`). Port 0 asks the
 * system for a free port.
 * @module
 */

/** One proxy mode with its listen address. */
export type ModeSpec =
  | {
    kind: "wireguard";
    /** The key file; absent means the default one in the configuration directory. */
    keyFile?: string;
    /** The address to listen on; `""` means all interfaces. */
    host: string;
    /** The UDP port; 51820 unless given, 0 for any free port. */
    port: number;
  }
  | {
    kind: "regular";
    /** The address to listen on; `""` means the default listen host. */
    host: string;
    /** The TCP port; 8080 unless given, 0 for any free port. */
    port: number;
  }
  | {
    kind: "socks5";
    /** The address to listen on; `""` means the default listen host. */
    host: string;
    /** The TCP port; 1080 unless given, 0 for any free port. */
    port: number;
  }
  | {
    kind: "dns";
    /** The address to listen on; `""` means the default listen host. */
    host: string;
    /** The UDP and TCP port; 53 unless given, 0 for any free port. */
    port: number;
  }
  | {
    kind: "reverse";
    /** How the server is spoken to. */
    scheme: ReverseScheme;
    /** The server (its port defaults by scheme: 80, 443). */
    target: { hostname: string; port: number };
    /** The address to listen on; `""` means the default listen host. */
    host: string;
    /** The TCP port; 8080 unless given. */
    port: number;
  }
  | {
    kind: "upstream";
    /** The upstream HTTP proxy (`http://HOST:PORT`). */
    proxy: string;
    /** The address to listen on; `""` means the default listen host. */
    host: string;
    /** The TCP port; 8080 unless given. */
    port: number;
  }
  | {
    kind: "tun";
    /** The TUN interface's name. */
    name: string;
    /** Unused (a TUN interface has no listen address); always `""`. */
    host: string;
    /** Unused; always 0. */
    port: number;
  };

/** The schemes of reverse mode. */
export type ReverseScheme = "http" | "https" | "tcp" | "tls" | "dns";

/** The default TUN interface name. */
export const DEFAULT_TUN_NAME = "wirescope0";

/** The mode names {@linkcode parseModeSpec} knows, in the order error messages list them. */
const KINDS = ["regular", "wireguard", "socks5", "dns", "reverse", "upstream", "tun"] as const;

/** The port each mode listens on when the spec names none. */
const DEFAULT_PORTS: Record<ModeSpec["kind"], number> = {
  regular: 8080,
  wireguard: 51820,
  socks5: 1080,
  dns: 53,
  reverse: 8080,
  upstream: 8080,
  tun: 0,
};

/**
 * Parses a mode spec such as `wireguard`, `wireguard:keys.json@51821` or `regular@[::1]:8080`.
 *
 * @param text The spec, as given to `--mode`.
 * @returns The mode with defaults filled in; IPv6 hosts come back without brackets.
 * @throws {TypeError} With a one-line message naming the spec when it cannot be parsed.
 *
 * @example
 * ```ts
 * import { parseModeSpec } from "./mode_spec.ts";
 * const spec = parseModeSpec("wireguard@127.0.0.1:51821");
 * console.log(spec.host, spec.port); // 127.0.0.1 51821
 * ```
 */
export function parseModeSpec(text: string): ModeSpec {
  const fail = (reason: string): never => {
    throw new TypeError(`Cannot parse mode "${text}": ${reason}`);
  };
  // Like mitmproxy, the last "@" starts the listen address, so a key file name may hold an "@"
  // as long as a listen address follows.
  const at = text.lastIndexOf("@");
  const head = at === -1 ? text : text.slice(0, at);
  const listen = at === -1 ? undefined : text.slice(at + 1);
  const colon = head.indexOf(":");
  const kind = colon === -1 ? head : head.slice(0, colon);
  const data = colon === -1 ? undefined : head.slice(colon + 1);

  if (!(KINDS as readonly string[]).includes(kind)) {
    const supported = KINDS.map((k) => `"${k}"`).join(", ");
    fail(
      kind === ""
        ? `no mode name (supported: ${supported})`
        : `unknown mode "${kind}" (supported: ${supported})`,
    );
  }
  let host = "";
  let port = DEFAULT_PORTS[kind as ModeSpec["kind"]];
  if (listen !== undefined) ({ host, port } = parseListenAddress(listen, fail));

  if (kind === "reverse" || kind === "upstream") return parseServerMode(kind, data, host, port, fail);
  if (kind === "tun") {
    if (listen !== undefined) fail(`the tun mode takes no listen address`);
    if (data !== undefined && !/^[A-Za-z0-9_.-]{1,15}$/.test(data)) {
      fail(`"${data}" is not an interface name (1 to 15 letters, digits, "_", "." or "-")`);
    }
    return { kind, name: data ?? DEFAULT_TUN_NAME, host: "", port: 0 };
  }
  if (kind === "regular" || kind === "socks5" || kind === "dns") {
    if (data !== undefined) fail(`the ${kind} mode takes no data after ":"`);
    return { kind, host, port };
  }
  if (data === undefined) return { kind: "wireguard", host, port };
  if (data === "") fail(`empty key file name after "wireguard:"`);
  return { kind: "wireguard", keyFile: data, host, port };
}

/**
 * Writes a mode back as a spec that {@linkcode parseModeSpec} reads as the same mode. Defaults
 * are left out where that is unambiguous: the default WireGuard mode is just `wireguard`.
 *
 * @param spec The mode.
 * @returns The spec text.
 *
 * @example
 * ```ts
 * import { formatModeSpec } from "./mode_spec.ts";
 * console.log(formatModeSpec({ kind: "regular", host: "::1", port: 8081 })); // regular@[::1]:8081
 * ```
 */
export function formatModeSpec(spec: ModeSpec): string {
  let text: string = spec.kind;
  if (spec.kind === "tun") return spec.name === DEFAULT_TUN_NAME ? "tun" : `tun:${spec.name}`;
  if (spec.kind === "reverse") {
    const h = spec.target.hostname.includes(":") ? `[${spec.target.hostname}]` : spec.target.hostname;
    text += `:${spec.scheme}://${h}:${spec.target.port}`;
  }
  if (spec.kind === "upstream") text += `:${spec.proxy}`;
  let keyFileHasAt = false;
  if (spec.kind === "wireguard" && spec.keyFile !== undefined) {
    text += `:${spec.keyFile}`;
    keyFileHasAt = spec.keyFile.includes("@");
  }
  // A key file name with an "@" needs a listen address after it, or the parser takes its tail
  // for one.
  if (spec.host === "" && spec.port === DEFAULT_PORTS[spec.kind] && !keyFileHasAt) return text;
  const host = spec.host.includes(":") ? `[${spec.host}]` : spec.host;
  return spec.host === "" ? `${text}@${spec.port}` : `${text}@${host}:${spec.port}`;
}

/** Reverse and upstream modes: the server's URL after the ":". */
function parseServerMode(
  kind: "reverse" | "upstream",
  data: string | undefined,
  host: string,
  port: number,
  fail: (reason: string) => never,
): ModeSpec {
  if (data === undefined || data === "") {
    return fail(`${kind} mode needs a URL, as in "${kind}:http://HOST:PORT"`);
  }
  const m = /^([a-z0-9]+):\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?\/?$/i.exec(data);
  if (!m) return fail(`"${data}" is not SCHEME://HOST[:PORT]`);
  const scheme = m[1]!.toLowerCase();
  const hostname = m[2]!.startsWith("[") ? m[2]!.slice(1, -1) : m[2]!;
  if (m[3] !== undefined && (Number(m[3]) < 1 || Number(m[3]) > 65535)) {
    fail(`"${m[3]}" is not a port (1 to 65535)`);
  }
  if (kind === "upstream") {
    if (scheme !== "http" && scheme !== "https") fail(`the upstream proxy must be http(s)://HOST:PORT`);
    if (m[3] === undefined) fail(`the upstream proxy needs a port, as in "upstream:http://${m[2]}:3128"`);
    return { kind, proxy: `${scheme}://${m[2]}:${m[3]}`, host, port };
  }
  const defaults: Record<string, number | undefined> = {
    http: 80,
    https: 443,
    tcp: undefined,
    tls: undefined,
    dns: 53,
  };
  if (!(scheme in defaults)) {
    fail(
      scheme === "udp"
        ? `reverse mode over UDP ("udp") is not supported yet; supported: http, https, tcp, tls, dns`
        : `unknown scheme "${scheme}" (supported: http, https, tcp, tls, dns)`,
    );
  }
  const targetPort = m[3] !== undefined ? Number(m[3]) : defaults[scheme];
  if (targetPort === undefined) fail(`a ${scheme}:// server needs a port`);
  return { kind, scheme: scheme as ReverseScheme, target: { hostname, port: targetPort! }, host, port };
}

/** Parses the `[HOST:]PORT` after the "@" of a spec. */
function parseListenAddress(text: string, fail: (reason: string) => never): { host: string; port: number } {
  if (text === "") return fail(`no port after "@"`);
  let host = "";
  let portText = text;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close === -1) fail(`missing "]" after the IPv6 address`);
    host = text.slice(1, close);
    if (!/^[0-9A-Fa-f:.]+(%[\w.-]+)?$/.test(host) || !host.includes(":")) {
      fail(`"${host}" is not an IPv6 address`);
    }
    if (text[close + 1] !== ":") fail(`expected ":PORT" after "[${host}]"`);
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon !== -1) {
      host = text.slice(0, colon);
      portText = text.slice(colon + 1);
      if (host.includes(":")) fail(`put the IPv6 address in brackets, as in "@[::1]:${portText}"`);
      if (!/^[A-Za-z0-9.-]+$/.test(host)) fail(`"${host}" is not a host name or address`);
    }
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
    fail(`"${portText}" is not a port (0 to 65535)`);
  }
  return { host, port: Number(portText) };
}
