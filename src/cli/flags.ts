/**
 * The command line of `wirescope`: {@linkcode parseFlags} turns the arguments into
 * {@linkcode CliOptions} and checks them, and {@linkcode USAGE} is the `--help` text. Every
 * mistake comes back as one {@linkcode UsageError} with a one-line message.
 * @module
 */
import { parseArgs } from "node:util";
import { dirname } from "node:path";
import denoJson from "../../deno.json" with { type: "json" };
import { formatModeSpec, type ModeSpec, parseModeSpec } from "./mode_spec.ts";
import { parseUpstreamProxy } from "../proxy/upstream_proxy.ts";
import {
  DEFAULT_HEAD_TIMEOUT,
  DEFAULT_IDLE_TIMEOUT,
  DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
} from "../proxy/limits.ts";
import { DEFAULT_SERVER_TIMEOUT } from "../proxy/http1_layer.ts";
import type { WireGuardLimits } from "../proxy/proxy.ts";
import { compileFilter, FilterSyntaxError } from "../flows/filter.ts";
import { BUILTINS, checkBuiltinSettings } from "../addons/builtins/index.ts";

/** Runs kept under `<confdir>/flows/` when `--store` is not given. */
export const KEPT_RUNS = 10;

/** The most WireGuard client peers `--peers` allows: their addresses are 10.0.0.2 to 10.0.0.251. */
const MAX_PEERS = 250;

/** What `-w FILE` writes. */
export type SaveFormat = "store" | "jsonl" | "har";

/**
 * What `-w FILE` writes, told by the name: `.jsonl`, `.ndjson` or `.json` → JSON lines, `.har` →
 * HAR, anything else → a flow store. An existing file that is not a regular file (a FIFO,
 * `/dev/stdout`) takes JSON lines, which can be streamed.
 */
export function saveFormatOf(path: string): SaveFormat {
  const lower = path.toLowerCase();
  if (/\.(jsonl|ndjson|json)$/.test(lower)) return "jsonl";
  if (lower.endsWith(".har")) return "har";
  try {
    if (!Deno.statSync(path).isFile) return "jsonl";
  } catch { /* a new file */ }
  return "store";
}

/** The options the command line asked for, with defaults filled in. */
export interface CliOptions {
  /** The proxy modes, in the order given; one default WireGuard mode when none is given. */
  modes: ModeSpec[];
  /** The configuration directory (keys, certificates); `~/.wirescope` by default. */
  confdir: string;
  /** How many WireGuard client configurations to make, 1 to 250; 1 by default. */
  peers: number;
  /** The address clients should put in their `Endpoint` line, when the host's own is not right. */
  wgEndpoint?: { host: string; port?: number };
  /** Hosts to pass through without interception (matched case-insensitively). */
  ignoreHosts: RegExp[];
  /** The only hosts to intercept (matched case-insensitively). */
  allowHosts: RegExp[];
  /** Extra CA certificate files to trust for upstream servers; each was readable when parsed. */
  upstreamCa: string[];
  /** Whether to skip the check of upstream server certificates. */
  sslInsecure: boolean;
  /** The DNS servers to forward queries to; empty means the system's. */
  dnsServers: { hostname: string; port: number }[];
  /** Time a client has to send a complete request head, in ms (0: no limit). */
  headTimeout: number;
  /** Client connections without traffic for this long are closed, in ms (0: never). */
  idleTimeout: number;
  /** An HTTP server making no progress for this long fails the exchange, in ms (0: no limit). */
  serverTimeout: number;
  /** Open connections allowed per client (0: no cap). */
  maxConnectionsPerClient: number;
  /** Open client connections allowed in total (0: no cap); the library's default when absent. */
  maxConnections?: number;
  /** HTTP/2 limits offered to clients (`--h2-max-concurrent-streams`, `--h2-max-header-list-size`). */
  http2: { maxConcurrentStreams: number; maxHeaderListSize: number };
  /** Whether clients may reach this host's own addresses (loopback, link-local, interfaces). */
  allowLocalDestinations: boolean;
  /** `--proxyauth USER:PASS`: credentials proxy clients must give (socks5: RFC 1929; regular: 407). */
  proxyAuth?: { username: string; password: string };
  /** `--upstream-proxy`: every mode's server side goes through it (`http://…` or `socks5://…`). */
  upstreamProxy?: string;
  /** `--upstream-auth USER:PASS` for the upstream proxy. */
  upstreamAuth?: string;
  /** `--keep-host-header`: reverse mode keeps the client's Host header. */
  keepHostHeader: boolean;
  /** `--certs [DOMAIN=]PATH`: PEM files (certificate and key) reverse mode shows its TLS clients. */
  certs: { domain: string; path: string }[];
  /** `--tun-mtu BYTES`: the MTU of tun mode's interfaces (576 to 65535; 1500 when absent). */
  tunMtu?: number;
  /** `--quic`: QUIC (UDP to port 443) from WireGuard clients refused with ICMP, or relayed. */
  quic: "reject" | "passthrough";
  /** The WireGuard data plane's limits per peer (values given on the command line only). */
  wgLimits: WireGuardLimits;
  /** The flow store file (`--store`); absent: a fresh file per run under `<confdir>/flows/`. */
  store?: string;
  /** Whether `--no-store` turned the flow store off. */
  noStore: boolean;
  /** `--store-max` in bytes: the oldest flows are dropped beyond it (absent: no cap). */
  storeMax?: number;
  /** `-f`: only flows matching it are printed (checked to parse). */
  viewFilter?: string;
  /** `--save-filter`: only flows matching it are stored and written to `-w`/`--har`. */
  saveFilter?: string;
  /** `-r`: a saved run to print before (or instead of) a live run. */
  read?: string;
  /** Whether a `--mode` was given (with `-r` and none, nothing is run live). */
  modesGiven: boolean;
  /** The file to save flows to (`-w`), as given; what it holds is {@link CliOptions.saveFormat}. */
  save?: string;
  /**
   * What `-w` writes, by the file's name: `store` (a flow store, the default; `store` is then
   * this file), `jsonl` (`.jsonl`, `.ndjson`, `.json`, or a pipe or device) or `har` (`.har`;
   * `har` is then this file).
   */
  saveFormat?: SaveFormat;
  /** The HAR file to write flows to. */
  har?: string;
  /** Whether to print less. */
  quiet: boolean;
  /** Whether to print more. */
  verbose: boolean;
  /** Whether `--help` was given. */
  help: boolean;
  /** `-s FILE` (repeatable): addon modules to load, in order (see src/addons). */
  scripts: string[];
  /** `--set name=value` (repeatable): values of the addons' options. */
  sets: string[];
  /** Whether `--version` was given. */
  version: boolean;
  /** A command to run instead of the proxy. */
  command?: "genkey" | "pubkey";
  /** `--server-replay FILE` and its options: requests are answered from a saved run. */
  serverReplay?: ServerReplayFlags;
  /** `--client-replay FILE` and its options: a saved run's requests are sent again. */
  clientReplay?: ClientReplayFlags;
  /** `--keep-serving`: keep running after client replay (otherwise the process ends with it). */
  keepServing?: boolean;
  /** `--web [HOST:]PORT`: where the web UI listens (absent: no web UI). */
  web?: { hostname: string; port: number };
  /**
   * `--intercept [EXPR]`: load the intercept addon (flows matching EXPR are held until resumed
   * in the web UI; "" holds nothing until an expression is set there).
   */
  intercept?: string;
  /** `--web-password`: a fixed secret for the web UI instead of a random token per run. */
  webPassword?: string;
  /**
   * The built-in addons' flags (`--block-list`, `--map-remote`, ...) as option settings
   * (`block_list=|~d ads|404`), checked; src/addons/builtins/ loads the addons they name.
   */
  builtinSettings: string[];
}

/** The server replay flags. */
export interface ServerReplayFlags {
  file: string;
  ignoreParams: string[];
  ignoreHost: boolean;
  ignoreContent: boolean;
  extra: "forward" | "404" | "kill";
  reuse: boolean;
}

/** The client replay flags. */
export interface ClientReplayFlags {
  file: string;
  /** Only flows matching it are replayed (checked to parse). */
  filter?: string;
  /** Replays under way at once (default 1). */
  concurrency: number;
}

/**
 * A mistake on the command line. The message is one line; the caller prints it as
 * `wirescope: <message>` and exits with status 2.
 */
export class UsageError extends Error {
  /**
   * Makes the error.
   *
   * @param message One line saying what is wrong.
   */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The `--help` text. */
export const USAGE: string = `wirescope ${denoJson.version}: an intercepting HTTPS proxy with a WireGuard mode

Usage:
  wirescope [options]          run the proxy (wirescope = scripts/wirescope)
  wirescope genkey             print a new private key (like wg genkey)
  wirescope pubkey < KEY       print the key's public key (like wg pubkey)
  wirescope export [--format har|jsonl|curl|raw] [-f EXPR] [--id ID] FILE [OUT]
                               write the flows of a saved run (what -r reads)
                               as HAR, JSON lines, curl commands or raw HTTP
                               (export --help for more)

Modes:
  --mode SPEC                a mode to run; repeatable (default: wireguard)
      wireguard[:KEYFILE][@[HOST:]PORT]
                             WireGuard on UDP, port 51820 unless given
      regular[@[HOST:]PORT]  HTTP(S) proxy on TCP, port 8080 unless given
                             HOST may be [IPv6]; PORT 0 picks a free port
  --confdir DIR              keys, certificates and client configs
                             (default: ~/.wirescope)
  --peers N                  client configs to make, 1 to ${MAX_PEERS} (default: 1)
  --wg-endpoint HOST[:PORT]  the Endpoint clients dial, e.g. a public name or
                             [IPv6]:PORT (default: this host's primary address
                             and the wireguard mode's port)

Interception:
  --ignore-hosts REGEX       pass matching hosts through untouched; repeatable,
                             case-insensitive (default: none)
  --allow-hosts REGEX        intercept only matching hosts; repeatable,
                             case-insensitive; not with --ignore-hosts
  --upstream-ca FILE         also trust this CA certificate (PEM) for upstream
                             servers; repeatable (default: system roots only)
  --ssl-insecure             skip checking upstream certificates
  --dns-server HOST[:PORT]   forward DNS queries there, port 53 unless given;
                             repeatable (default: the system's resolvers)
  --upstream-proxy URL       open every server connection of every mode
                             (WireGuard included) through this proxy:
                             http[s]://[USER:PASS@]HOST:PORT (CONNECT; plain
                             HTTP of explicit clients in absolute form) or
                             socks5://[USER:PASS@]HOST:PORT; UDP other than DNS
                             is then refused and recorded
  --upstream-auth USER:PASS  credentials for --upstream-proxy
  --keep-host-header         reverse mode: keep the client's Host header
                             (default: the server's name is sent)
  --certs [DOMAIN=]PATH      reverse mode: show TLS clients this PEM file's
                             certificate and key (for DOMAIN, or every name);
                             repeatable (default: a leaf from wirescope's CA)
  --tun-mtu BYTES            tun mode: the interface's MTU, 576 to 65535
                             (default: 1500)

Limits and access:
  --head-timeout SECONDS     close a client connection whose request head is not
                             complete this long after it opened or after the
                             last response; 0 turns it off (default: 30)
  --idle-timeout SECONDS     close a client connection after this long without
                             a byte either way; 0 turns it off (default: 600)
  --server-timeout SECONDS   fail an HTTP exchange whose server sends nothing and
                             takes no request byte for this long: 504 before
                             the response, a reset after; 0 turns it off
                             (default: 60)
  --max-connections-per-client N
                             open connections allowed per client (WireGuard
                             peer or proxy client address); more are refused
                             and logged; 0 means no cap (default: 4096)
  --max-connections N        open client connections allowed in total; 0 means
                             no cap (default: 16384, less when the open-file
                             limit is low: half of it)
  --h2-max-concurrent-streams N
                             streams an HTTP/2 client may have open at once
                             (SETTINGS_MAX_CONCURRENT_STREAMS; more are refused
                             with REFUSED_STREAM) (default: 100)
  --h2-max-header-list-size BYTES
                             largest HTTP/2 header list taken from a client
                             (SETTINGS_MAX_HEADER_LIST_SIZE; larger ones reset
                             the stream) (default: 65536)
  --allow-local-destinations let clients reach this host's own services
                             (loopback, link-local such as 169.254.169.254,
                             this host's addresses); refused by default
  --proxyauth USER:PASS      proxy clients must log in with these: socks5
                             (RFC 1929) and regular (Proxy-Authorization, 407)
  --quic reject|passthrough  QUIC (HTTP/3: UDP to port 443) from WireGuard
                             clients is not intercepted. reject answers it with
                             ICMP port unreachable, so browsers use HTTPS over
                             TCP (intercepted) at once; passthrough relays it
                             uninspected. Both are recorded as UDP flows
                             (default: reject)

WireGuard data plane (per peer; refusals are counted and logged):
  --wg-max-half-open N       TCP connections not yet established; further SYNs
                             are dropped (default: 2048)
  --wg-half-open-timeout SECONDS
                             drop a connection not established this long after
                             its SYN (default: 15)
  --wg-max-udp-conversations N
                             UDP conversations at once (default: 2048)
  --wg-udp-timeout SECONDS   end a UDP conversation after this long without a
                             datagram from the peer (default: 60)
  --wg-buffer-budget MIB     memory all TCP buffers may take together, in MiB,
                             of the core's 4096; past it new connections are
                             reset (default: 1024)
  (open TCP connections per peer follow --max-connections-per-client)

Addons (see README "Addons"):
  -s, --scripts FILE         load the addons a TypeScript/JavaScript module
                             exports; repeatable, run in order; reloaded when
                             the file changes (a broken version is logged and
                             the old one kept). With --help: list their options
  --set NAME=VALUE           set an addon option; repeatable (a list option
                             takes every value given)

Built-in addons (mitmproxy's syntax: the first character separates the parts,
FILTER in the filter language and optional where shown in [ ]; repeatable):
  --block-list |FILTER|STATUS
                             answer matching requests with STATUS and no body;
                             444 closes the connection without an answer
  --allow-list HOST          only these hosts reach the internet: HOST and its
                             subdomains, *.HOST only subdomains, or an IP
                             address; others get a 403 block page (HTTP, HTTPS),
                             NXDOMAIN (DNS) or a refused connection (TLS passed
                             through, other TCP and UDP)
  --map-local [|FILTER]|URL-REGEX|PATH
                             answer matching URLs from a file, or a directory
                             (the file by the rest of the URL path; 404 when
                             missing; paths leading out of it refused)
  --map-remote [|FILTER]|REGEX|REPLACEMENT
                             rewrite matching URLs before they go upstream
                             (Python re.sub: \\1, \\g<name>)
  --modify-headers [|FILTER]|NAME|VALUE
                             set header NAME (~q requests, ~s responses, no
                             filter both); empty VALUE removes; @FILE reads it
  --modify-body [|FILTER]|REGEX|REPLACEMENT
                             replace in bodies, as bytes; @FILE for the
                             replacement's bytes
  --anticache                drop If-None-Match and If-Modified-Since
  --anticomp                 ask servers not to compress (Accept-Encoding)
  --stickycookie FILTER      remember Set-Cookie and send the cookies on with
                             matching requests

Flows:
  --store FILE               record flows in this SQLite flow store (default: a
                             new file per run in CONFDIR/flows/, named by the
                             start time; the newest ${KEPT_RUNS} runs are kept)
  --no-store                 do not record flows on disk
  --store-max SIZE           drop the oldest flows once the store holds more,
                             e.g. 500M, 2G (default: no cap)
  -f, --view-filter EXPR     print only flows matching EXPR (mitmproxy's filter
                             language: ~d example.com & ~m POST; default: all)
  --save-filter EXPR         store and write (-w, --har) only flows matching
                             EXPR (default: all)
  -r, --read FILE            print the flows of a saved run (a flow store, a
                             HAR file or -w JSON lines), -f applied; then exit,
                             or run the --mode given too. With -w, its flows
                             (--save-filter applied) are written there first

Web UI:
  --web [HOST:]PORT          serve the web UI (flow list, filter, details) there;
                             --web alone: 127.0.0.1:8081. Its URL, with a token
                             made for this run, is printed at start; a cookie
                             keeps the browser logged in. Needs the flow store
  --web-password SECRET      use SECRET as the token instead (default: random)
  --intercept [EXPR]         hold flows matching EXPR (mitmproxy's filter
                             language) before the request goes to the server
                             or the response to the client, until resumed
                             (edited or not) or killed in the web UI; the
                             expression can be changed there. Alone: nothing
                             held until one is set. Needs --web

Output:
  -w, --save FILE            save flows to FILE, mode 0600, by its name: *.jsonl
                             (.ndjson, .json) appends JSON lines, *.har writes
                             HAR at exit (as --har), any other name is a flow
                             store (SQLite, the format -r reads best) that
                             becomes this run's store: flows go there instead
                             of CONFDIR/flows/, an existing store is added to
                             (not with --store or --no-store; default: none)
  --har FILE                 also write flows to FILE as HAR, mode 0600
                             (default: do not)
  --server-replay FILE       answer requests from a saved run (a flow store, HAR
                             or -w JSON lines) without contacting the server:
                             matched by method, URL and body; identical
                             requests get the recorded answers in order, each
                             once. Hits and misses are printed at exit.
  --server-replay-ignore-params NAME
                             leave this query parameter out of the match;
                             repeatable, or NAME,NAME
  --server-replay-ignore-host
                             match without the host and port
  --server-replay-ignore-content
                             match without the request body
  --server-replay-extra forward|404|kill
                             what a request with no recorded answer gets: sent
                             to the server, a 404, or its connection killed
                             (default: forward)
  --server-replay-reuse      do not use answers up: identical requests all get
                             the first
  --client-replay FILE       send the HTTP requests of a saved run again, one at
                             a time, to the servers they went to; the new flows
                             name the originals (replayOf). Without --mode no
                             listener is started; the process ends when done
                             unless --keep-serving
  --client-replay-filter EXPR
                             replay only flows matching EXPR
  --client-replay-concurrency N
                             replays under way at once (default: 1)
  --keep-serving             keep running after client replay is done
  -q, --quiet                print only errors
  -v, --verbose              print more detail, such as each connection
  -h, --help                 show this help
  --version                  show the version

Signals:
  SIGINT, SIGTERM            stop cleanly (a second one: at once)
  SIGUSR2                    print one line of figures: memory, descriptors,
                             wasm memory, connections, flows (JSON, stderr)

Examples:
  wirescope                  WireGuard on UDP 51820; scan the QR code it prints
  wirescope --peers 3 --wg-endpoint proxy.example.com:51820
  wirescope --mode wireguard --mode regular@127.0.0.1:8080
  wirescope --mode regular@[::1]:0 --ignore-hosts '(^|\\.)apple\\.com'
  wirescope -w flows.db --har flows.har --upstream-ca corp-ca.pem
  wirescope -r ~/.wirescope/flows/2026-01-02T03-04-05Z.db -f '~d example & ~m POST'
`;

/**
 * Parses and checks the command-line arguments.
 *
 * Files given to `--upstream-ca` must be readable, and the directories of `--save` and `--har`
 * must exist; everything else is checked without touching the file system.
 *
 * @param args The arguments, without the program name.
 * @returns The options with defaults filled in.
 * @throws {UsageError} With a one-line message for any mistake.
 *
 * @example
 * ```ts
 * import { parseFlags } from "./flags.ts";
 * const options = parseFlags(["--mode", "regular@8081", "--peers", "2"]);
 * console.log(options.modes[0]?.port, options.peers); // 8081 2
 * ```
 */
export function parseFlags(args: string[]): CliOptions {
  let parsed;
  // `--web` takes an optional value: alone (last, or before another option) it means the default.
  args = args.flatMap((a, i) =>
    a === "--web" && (i + 1 === args.length || args[i + 1]!.startsWith("-")) ? [a, WEB_DEFAULT] : [a]
  );
  // So does `--intercept`: alone, interception is on with nothing held yet.
  args = args.flatMap((a, i) =>
    a === "--intercept" && (i + 1 === args.length || args[i + 1]!.startsWith("-")) ? [a, ""] : [a]
  );
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: {
        mode: { type: "string", multiple: true },
        web: { type: "string" },
        "web-password": { type: "string" },
        intercept: { type: "string" },
        confdir: { type: "string" },
        peers: { type: "string" },
        "wg-endpoint": { type: "string" },
        "ignore-hosts": { type: "string", multiple: true },
        "allow-hosts": { type: "string", multiple: true },
        "upstream-ca": { type: "string", multiple: true },
        "ssl-insecure": { type: "boolean" },
        "dns-server": { type: "string", multiple: true },
        "head-timeout": { type: "string" },
        "idle-timeout": { type: "string" },
        "server-timeout": { type: "string" },
        "max-connections-per-client": { type: "string" },
        "max-connections": { type: "string" },
        "h2-max-concurrent-streams": { type: "string" },
        "h2-max-header-list-size": { type: "string" },
        "allow-local-destinations": { type: "boolean" },
        proxyauth: { type: "string" },
        "upstream-proxy": { type: "string" },
        "upstream-auth": { type: "string" },
        "keep-host-header": { type: "boolean" },
        certs: { type: "string", multiple: true },
        "tun-mtu": { type: "string" },
        quic: { type: "string" },
        "wg-max-half-open": { type: "string" },
        "wg-half-open-timeout": { type: "string" },
        "wg-max-udp-conversations": { type: "string" },
        "wg-udp-timeout": { type: "string" },
        "wg-buffer-budget": { type: "string" },
        store: { type: "string" },
        "no-store": { type: "boolean" },
        "store-max": { type: "string" },
        "view-filter": { type: "string", short: "f" },
        "save-filter": { type: "string" },
        read: { type: "string", short: "r" },
        save: { type: "string", short: "w" },
        har: { type: "string" },
        quiet: { type: "boolean", short: "q" },
        verbose: { type: "boolean", short: "v" },
        help: { type: "boolean", short: "h" },
        scripts: { type: "string", short: "s", multiple: true },
        set: { type: "string", multiple: true },
        version: { type: "boolean" },
        "server-replay": { type: "string" },
        "server-replay-ignore-params": { type: "string", multiple: true },
        "server-replay-ignore-host": { type: "boolean" },
        "server-replay-ignore-content": { type: "boolean" },
        "server-replay-extra": { type: "string" },
        "server-replay-reuse": { type: "boolean" },
        "client-replay": { type: "string" },
        "client-replay-filter": { type: "string" },
        "client-replay-concurrency": { type: "string" },
        "keep-serving": { type: "boolean" },
        ...builtinFlagOptions(),
      },
    });
  } catch (e) {
    throw new UsageError(rephraseParseError(e));
  }
  const { values, positionals } = parsed;

  const options: CliOptions = {
    modes: parseModes(values.mode ?? []),
    confdir: values.confdir === undefined ? defaultConfdir() : expandHome(values.confdir, "--confdir"),
    peers: values.peers === undefined ? 1 : parsePeers(values.peers),
    ignoreHosts: (values["ignore-hosts"] ?? []).map((r) => parseRegExp(r, "--ignore-hosts")),
    allowHosts: (values["allow-hosts"] ?? []).map((r) => parseRegExp(r, "--allow-hosts")),
    upstreamCa: (values["upstream-ca"] ?? []).map((path) => checkReadable(path)),
    sslInsecure: values["ssl-insecure"] ?? false,
    dnsServers: (values["dns-server"] ?? []).map((text) => {
      const { host, port } = parseHostPort(text, "--dns-server");
      return { hostname: host, port: port ?? 53 };
    }),
    headTimeout: parseSeconds(values["head-timeout"], "--head-timeout", DEFAULT_HEAD_TIMEOUT),
    idleTimeout: parseSeconds(values["idle-timeout"], "--idle-timeout", DEFAULT_IDLE_TIMEOUT),
    serverTimeout: parseSeconds(values["server-timeout"], "--server-timeout", DEFAULT_SERVER_TIMEOUT),
    maxConnectionsPerClient: parseCount(
      values["max-connections-per-client"],
      "--max-connections-per-client",
      DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
    ),
    http2: {
      maxConcurrentStreams: parseRange(
        values["h2-max-concurrent-streams"],
        "--h2-max-concurrent-streams",
        100,
        1,
        2 ** 31 - 1,
      ),
      maxHeaderListSize: parseRange(
        values["h2-max-header-list-size"],
        "--h2-max-header-list-size",
        65536,
        1024,
        16 * 2 ** 20,
      ),
    },
    allowLocalDestinations: values["allow-local-destinations"] ?? false,
    ...(values.proxyauth !== undefined ? { proxyAuth: parseProxyAuth(values.proxyauth) } : {}),
    ...parseUpstreamFlags(values["upstream-proxy"], values["upstream-auth"]),
    keepHostHeader: values["keep-host-header"] ?? false,
    certs: (values.certs ?? []).map((text) => {
      const eq = text.indexOf("=");
      return {
        domain: eq === -1 ? "*" : text.slice(0, eq),
        path: checkReadable(text.slice(eq + 1), "--certs"),
      };
    }),
    ...(values["tun-mtu"] !== undefined
      ? { tunMtu: parseRange(values["tun-mtu"], "--tun-mtu", 1500, 576, 65535) }
      : {}),
    quic: parseQuic(values.quic),
    wgLimits: parseWgLimits(values),
    noStore: values["no-store"] ?? false,
    modesGiven: (values.mode ?? []).length > 0,
    quiet: values.quiet ?? false,
    verbose: values.verbose ?? false,
    help: values.help ?? false,
    scripts: (values.scripts ?? []).map((f) => checkReadable(f, "-s")),
    sets: (values.set ?? []).map((pair) => {
      if (!/^[A-Za-z][A-Za-z0-9_]*=/.test(pair)) throw new UsageError(`--set wants name=value, got ${pair}`);
      return pair;
    }),
    version: values.version ?? false,
    builtinSettings: builtinSettingsOf(values),
  };
  parseReplayFlags(options, values);
  if (values["wg-endpoint"] !== undefined) {
    options.wgEndpoint = parseHostPort(values["wg-endpoint"], "--wg-endpoint");
  }
  if (values["max-connections"] !== undefined) {
    options.maxConnections = parseCount(values["max-connections"], "--max-connections", 0);
  }
  if (values.save !== undefined) options.save = checkParentDir(values.save, "--save");
  if (values.har !== undefined) options.har = checkParentDir(values.har, "--har");
  if (values.store !== undefined) options.store = checkParentDir(values.store, "--store");
  if (options.save !== undefined) resolveSave(options, options.save);
  if (values["store-max"] !== undefined) options.storeMax = parseSize(values["store-max"], "--store-max");
  if (options.noStore && (options.store !== undefined || options.storeMax !== undefined)) {
    throw new UsageError(
      `--no-store cannot be used with --${options.store !== undefined ? "store" : "store-max"}`,
    );
  }
  if (values["view-filter"] !== undefined) {
    options.viewFilter = checkFilter(values["view-filter"], "--view-filter");
  }
  if (values["save-filter"] !== undefined) {
    options.saveFilter = checkFilter(values["save-filter"], "--save-filter");
  }
  if (values.read !== undefined) {
    if (values.read === "") throw new UsageError("--read needs a file name, not an empty string");
    options.read = values.read;
  }

  if (values.web !== undefined) options.web = parseWeb(values.web);
  if (values["web-password"] !== undefined) {
    if (!options.web) throw new UsageError("--web-password needs --web");
    if (values["web-password"].length < 8) throw new UsageError("--web-password: use at least 8 characters");
    options.webPassword = values["web-password"];
  }
  if (values.intercept !== undefined) {
    if (!options.web) throw new UsageError("--intercept needs --web (held flows are resumed there)");
    try {
      if (values.intercept.trim() !== "") compileFilter(values.intercept);
    } catch (e) {
      throw new UsageError(`--intercept: ${(e as Error).message}`);
    }
    options.intercept = values.intercept;
  }
  if (options.web && options.noStore) throw new UsageError("--web shows the flow store: not with --no-store");

  if (options.ignoreHosts.length > 0 && options.allowHosts.length > 0) {
    throw new UsageError("--ignore-hosts and --allow-hosts cannot be used together");
  }
  if (options.quiet && options.verbose) throw new UsageError("--quiet and --verbose cannot be used together");

  const [command, ...rest] = positionals;
  if (command !== undefined) {
    if (command !== "genkey" && command !== "pubkey") {
      throw new UsageError(
        `unknown command: ${command} (expected genkey, pubkey or export, which comes first; see --help)`,
      );
    }
    if (rest.length > 0) throw new UsageError(`unexpected argument after ${command}: ${rest[0]}`);
    options.command = command;
  }
  return options;
}

/** Decides what `-w` writes; a flow store or HAR file named by `-w` takes the place of `--store`/`--har`. */
function resolveSave(options: CliOptions, path: string): void {
  const format = saveFormatOf(path);
  options.saveFormat = format;
  if (format === "har") {
    if (options.har !== undefined && options.har !== path) {
      throw new UsageError(`-w ${path} and --har ${options.har} name two HAR files; give one`);
    }
    options.har = path;
  } else if (format === "store") {
    if (options.noStore) {
      throw new UsageError(
        `--no-store cannot be used with -w ${path} (a flow store; name it .jsonl for JSON lines)`,
      );
    }
    if (options.store !== undefined && options.store !== path) {
      throw new UsageError(
        `-w ${path} and --store ${options.store} name two flow stores; give one (-w FILE.db is the run's store)`,
      );
    }
    options.store = path;
  }
}

/** Turns the errors of `node:util` `parseArgs` into one short line. */
function rephraseParseError(e: unknown): string {
  const error = e as Error & { code?: string };
  const quoted = /'([^']*)'/.exec(error.message)?.[1] ?? "";
  // "'-w, --save <value>'" names the option both ways; the long name reads best.
  const name = /--[\w-]+/.exec(quoted)?.[0] ?? /-\w/.exec(quoted)?.[0] ?? quoted;
  switch (error.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown option ${quoted} (see --help)`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      if (error.message.includes("does not take an argument")) return `option ${name} takes no value`;
      if (error.message.includes("ambiguous")) {
        return `option ${name} needs a value (for a value that starts with "-", write ${name}=VALUE)`;
      }
      return `option ${name} needs a value`;
    default:
      return (error.message ?? String(e)).split("\n")[0]!;
  }
}

/** Parses the `--mode` values and rejects two modes that would listen on the same port. */
function parseModes(texts: string[]): ModeSpec[] {
  if (texts.length === 0) return [{ kind: "wireguard", host: "", port: 51820 }];
  const modes = texts.map((text) => {
    try {
      return parseModeSpec(text);
    } catch (e) {
      throw new UsageError(`--mode: ${(e as Error).message}`);
    }
  });
  // The dns mode listens on UDP and TCP.
  const protocols = (
    m: ModeSpec,
  ) => (m.kind === "wireguard"
    ? ["UDP"]
    : m.kind === "dns" || (m.kind === "reverse" && m.scheme === "dns")
    ? ["UDP", "TCP"]
    : ["TCP"]);
  for (let i = 0; i < modes.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = modes[j]!;
      const b = modes[i]!;
      // Port 0 gets a fresh port each time; different specific hosts can share a port.
      const shared = protocols(a).find((p) => protocols(b).includes(p));
      if (a.port === 0 || a.port !== b.port || shared === undefined) continue;
      if (a.host !== "" && b.host !== "" && a.host !== b.host) continue;
      throw new UsageError(
        `--mode ${formatModeSpec(b)} and --mode ${formatModeSpec(a)} both listen on ${shared} port ${a.port}`,
      );
    }
  }
  return modes;
}

/** The default configuration directory, `~/.wirescope`. */
function defaultConfdir(): string {
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE");
  if (home === undefined || home === "") {
    throw new UsageError("cannot find the home directory (HOME is not set); pass --confdir");
  }
  return `${home.replace(/\/+$/, "")}/.wirescope`;
}

/** Expands a leading `~/`, which the shell leaves alone in `--confdir=~/x`. */
function expandHome(path: string, flag: string): string {
  if (path === "") throw new UsageError(`${flag} needs a directory, not an empty string`);
  if (path !== "~" && !path.startsWith("~/")) return path;
  const home = Deno.env.get("HOME");
  if (home === undefined || home === "") {
    throw new UsageError(`cannot expand ~ in ${flag} ${path}: HOME is not set`);
  }
  return home + path.slice(1);
}

/** Parses a size such as `500M`, `2G`, `1.5g`, `4096` (bytes; K, M, G, T are powers of 1024). */
export function parseSize(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(text.trim());
  const units: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
  const n = m ? Math.floor(Number(m[1]) * units[m[2]!.toLowerCase()]!) : NaN;
  if (!(n >= 1024 * 1024 && n <= 2 ** 53)) {
    throw new UsageError(`${flag} ${text}: expected a size of at least 1M, such as 500M or 2G`);
  }
  return n;
}

/** Checks that a filter expression parses; the error names the column. */
function checkFilter(text: string, flag: string): string {
  try {
    compileFilter(text);
  } catch (e) {
    if (e instanceof FilterSyntaxError) {
      throw new UsageError(`${flag} ${JSON.stringify(text)}: ${e.reason} at column ${e.column}`);
    }
    throw new UsageError(`${flag} ${JSON.stringify(text)}: ${(e as Error).message}`);
  }
  return text;
}

/** Fills in the replay options; options of a replay that was not asked for are mistakes. */
function parseReplayFlags(
  options: CliOptions,
  values: Record<string, string | string[] | boolean | undefined>,
): void {
  const text = (name: string) => values[name] as string | undefined;
  const flag = (name: string) => (values[name] as boolean | undefined) ?? false;
  const file = (name: string) => {
    const path = text(name);
    if (path === undefined) return undefined;
    if (path === "") throw new UsageError(`--${name} needs a file name, not an empty string`);
    return path;
  };
  const server = file("server-replay");
  const serverOnly = [
    "server-replay-ignore-params",
    "server-replay-ignore-host",
    "server-replay-ignore-content",
    "server-replay-extra",
    "server-replay-reuse",
  ];
  if (server === undefined) {
    const stray = serverOnly.find((name) => values[name] !== undefined);
    if (stray) throw new UsageError(`--${stray} needs --server-replay FILE`);
  } else {
    const extra = text("server-replay-extra") ?? "forward";
    if (extra !== "forward" && extra !== "404" && extra !== "kill") {
      throw new UsageError(`--server-replay-extra ${extra}: expected forward, 404 or kill`);
    }
    options.serverReplay = {
      file: server,
      ignoreParams: ((values["server-replay-ignore-params"] as string[] | undefined) ?? [])
        .flatMap((v) => v.split(","))
        .map((v) => v.trim())
        .filter((v) => v !== ""),
      ignoreHost: flag("server-replay-ignore-host"),
      ignoreContent: flag("server-replay-ignore-content"),
      extra,
      reuse: flag("server-replay-reuse"),
    };
  }
  const client = file("client-replay");
  if (client === undefined) {
    const stray = ["client-replay-filter", "client-replay-concurrency", "keep-serving"].find((name) =>
      values[name] !== undefined
    );
    if (stray) throw new UsageError(`--${stray} needs --client-replay FILE`);
  } else {
    const concurrency = parseCount(text("client-replay-concurrency"), "--client-replay-concurrency", 1);
    if (concurrency < 1) throw new UsageError("--client-replay-concurrency 0: expected 1 or more");
    const filter = text("client-replay-filter");
    if (flag("keep-serving")) options.keepServing = true;
    options.clientReplay = {
      file: client,
      concurrency,
      ...(filter !== undefined ? { filter: checkFilter(filter, "--client-replay-filter") } : {}),
    };
  }
}

/** Parses `--peers`. */
function parsePeers(text: string): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= MAX_PEERS)) {
    throw new UsageError(`--peers ${text}: expected a whole number from 1 to ${MAX_PEERS}`);
  }
  return n;
}

/** Parses a time in seconds (decimals allowed, 0 turns the limit off) into ms. */
/** `--quic`'s value. */
function parseQuic(text: string | undefined): "reject" | "passthrough" {
  if (text === undefined || text === "reject" || text === "passthrough") return text ?? "reject";
  throw new UsageError(`--quic must be reject or passthrough, not ${JSON.stringify(text)}`);
}

function parseSeconds(text: string | undefined, flag: string, fallback: number): number {
  if (text === undefined) return fallback;
  const n = /^\d+(\.\d+)?$/.test(text) ? Number(text) : NaN;
  if (!(n >= 0 && n <= 86_400 * 365)) {
    throw new UsageError(`${flag} ${text}: expected a number of seconds (0 turns it off)`);
  }
  return Math.round(n * 1000);
}

/** The `--wg-*` limits given on the command line (the core's defaults stand for the others). */
function parseWgLimits(values: Record<string, unknown>): WireGuardLimits {
  const limits: WireGuardLimits = {};
  const text = (name: string) => values[name] as string | undefined;
  const positive = (name: string, max: number): number | undefined => {
    const t = text(name);
    if (t === undefined) return undefined;
    const n = /^\d+(\.\d+)?$/.test(t) ? Number(t) : NaN;
    if (!(n > 0 && n <= max)) throw new UsageError(`--${name} ${t}: expected a number from 1 to ${max}`);
    return n;
  };
  const whole = (name: string, max: number) => {
    const n = positive(name, max);
    if (n !== undefined && !Number.isInteger(n)) {
      throw new UsageError(`--${name} ${text(name)}: expected a whole number`);
    }
    return n;
  };
  const halfOpen = whole("wg-max-half-open", 1_000_000);
  if (halfOpen !== undefined) limits.maxHalfOpenPerPeer = halfOpen;
  const halfOpenTimeout = positive("wg-half-open-timeout", 3600);
  if (halfOpenTimeout !== undefined) limits.halfOpenTimeoutSeconds = halfOpenTimeout;
  const udp = whole("wg-max-udp-conversations", 1_000_000);
  if (udp !== undefined) limits.maxUdpConversationsPerPeer = udp;
  const udpTimeout = positive("wg-udp-timeout", 86_400);
  if (udpTimeout !== undefined) limits.udpTimeoutSeconds = udpTimeout;
  const budget = whole("wg-buffer-budget", 4096);
  if (budget !== undefined) limits.bufferBudget = budget * 1024 * 1024;
  return limits;
}

/** Parses a whole number of connections (0: no cap). */
function parseCount(text: string | undefined, flag: string, fallback: number): number {
  if (text === undefined) return fallback;
  const n = /^\d{1,9}$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n)) throw new UsageError(`${flag} ${text}: expected a whole number (0 means no cap)`);
  return n;
}

/** A whole number from `min` to `max`, or the fallback when the flag is absent. */
function parseRange(
  text: string | undefined,
  flag: string,
  fallback: number,
  min: number,
  max: number,
): number {
  if (text === undefined) return fallback;
  const n = /^\d{1,10}$/.test(text) ? Number(text) : NaN;
  if (!(n >= min && n <= max)) {
    throw new UsageError(`${flag} ${text}: expected a whole number from ${min} to ${max}`);
  }
  return n;
}

/** Compiles a host pattern; host names are matched without regard to case. */
function parseRegExp(text: string, flag: string): RegExp {
  try {
    return new RegExp(text, "i");
  } catch (e) {
    const reason = (e as Error).message.replace(/^Invalid regular expression: \/.*\/\w*: /, "");
    throw new UsageError(`${flag} ${text}: not a valid regular expression (${reason})`);
  }
}

/** `--upstream-proxy` and `--upstream-auth`, checked. */
function parseUpstreamFlags(
  url: string | undefined,
  auth: string | undefined,
): { upstreamProxy?: string; upstreamAuth?: string } {
  if (url === undefined) {
    if (auth !== undefined) throw new UsageError(`--upstream-auth needs --upstream-proxy`);
    return {};
  }
  try {
    parseUpstreamProxy(url, auth);
  } catch (e) {
    throw new UsageError(`--upstream-proxy: ${(e as Error).message}`);
  }
  return { upstreamProxy: url, ...(auth !== undefined ? { upstreamAuth: auth } : {}) };
}

/** Checks that a `--upstream-ca` file can be opened for reading. */
function checkReadable(path: string, flag = "--upstream-ca"): string {
  try {
    if (Deno.statSync(path).isDirectory) {
      throw new UsageError(`cannot read ${flag} ${path}: it is a directory`);
    }
    Deno.openSync(path, { read: true }).close();
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`cannot read ${flag} ${path}: ${describeFsError(e)}`);
  }
  return path;
}

/** Checks that the directory an output file goes in exists. */
function checkParentDir(path: string, flag: string): string {
  if (path === "") throw new UsageError(`${flag} needs a file name, not an empty string`);
  const dir = dirname(path);
  let isDirectory;
  try {
    isDirectory = Deno.statSync(dir).isDirectory;
  } catch (e) {
    throw new UsageError(`${flag} ${path}: cannot use directory ${dir}: ${describeFsError(e)}`);
  }
  if (!isDirectory) throw new UsageError(`${flag} ${path}: ${dir} is not a directory`);
  let pathIsDirectory = false;
  try {
    pathIsDirectory = Deno.statSync(path).isDirectory;
  } catch {
    // Not there yet (the usual case) or not visible: writing it will tell.
  }
  if (pathIsDirectory) throw new UsageError(`${flag} ${path}: is a directory, not a file`);
  return path;
}

/** A short reason for a file-system error, without the OS error number and path. */
function describeFsError(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "no such file or directory";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (e instanceof Deno.errors.NotCapable) return "not allowed by Deno permissions (--allow-read)";
  const message = e instanceof Error ? e.message : String(e);
  return message.replace(/ \(os error \d+\).*$/, "").split("\n")[0]!;
}

/**
 * Parses `HOST`, `HOST:PORT`, `[IPV6]`, `[IPV6]:PORT` or a bare IPv6 address (which cannot
 * carry a port).
 */
/** Where `--web` alone listens (mitmweb's default). */
const WEB_DEFAULT = "127.0.0.1:8081";

/** `--web`'s value: `PORT`, `HOST` or `HOST:PORT` (host 127.0.0.1 and port 8081 when left out). */
function parseWeb(text: string): { hostname: string; port: number } {
  if (/^\d{1,5}$/.test(text) && Number(text) <= 65535) return { hostname: "127.0.0.1", port: Number(text) };
  const { host, port } = parseHostPort(text, "--web");
  return { hostname: host, port: port ?? 8081 };
}

function parseHostPort(text: string, flag: string): { host: string; port?: number } {
  const fail = (reason: string): never => {
    throw new UsageError(`${flag} ${text}: ${reason}`);
  };
  let host = text;
  let portText: string | undefined;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close === -1) return fail(`missing "]" after the IPv6 address`);
    host = text.slice(1, close);
    if (!host.includes(":")) return fail(`"${host}" is not an IPv6 address`);
    const after = text.slice(close + 1);
    if (after !== "") {
      if (!after.startsWith(":")) return fail(`expected ":PORT" after "]"`);
      portText = after.slice(1);
    }
  } else if ((text.match(/:/g) ?? []).length === 1) {
    const colon = text.indexOf(":");
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
  }
  if (host.includes(":")) {
    if (!/^[0-9A-Fa-f:.]+(%[\w.-]+)?$/.test(host)) return fail(`"${host}" is not an IPv6 address`);
  } else if (host === "") {
    return fail("expected HOST[:PORT]");
  } else if (!/^[A-Za-z0-9.-]+$/.test(host) || /^\d+$/.test(host)) {
    return fail(`"${host}" is not a host name or address (expected HOST[:PORT])`);
  }
  if (portText === undefined) return { host };
  if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    return fail(`"${portText}" is not a port (1 to 65535)`);
  }
  return { host, port: Number(portText) };
}

/** `USER:PASS` for `--proxyauth` (the password may hold ":"; each part 1 to 255 bytes, as RFC 1929 allows). */
function parseProxyAuth(text: string): { username: string; password: string } {
  const colon = text.indexOf(":");
  const username = colon === -1 ? "" : text.slice(0, colon);
  const password = colon === -1 ? "" : text.slice(colon + 1);
  const size = (t: string) => new TextEncoder().encode(t).byteLength;
  if (
    colon === -1 || size(username) < 1 || size(username) > 255 || size(password) < 1 || size(password) > 255
  ) {
    throw new UsageError(`--proxyauth takes USER:PASS, each 1 to 255 bytes (got "${text}")`);
  }
  return { username, password };
}

/**
 * The parseArgs declarations of the built-in addons' flags (`--anticache` alone; others
 * repeatable). Typed as adding nothing: {@link builtinSettingsOf} reads their values by name.
 */
function builtinFlagOptions(): Record<never, never> {
  return Object.fromEntries(
    BUILTINS.map((
      b,
    ) => [b.flag.slice(2), b.boolean ? { type: "boolean" } : { type: "string", multiple: true }]),
  );
}

/** The built-in addons' flags as checked `option=value` settings (see src/addons/builtins/). */
function builtinSettingsOf(values: Record<string, unknown>): string[] {
  const pairs = BUILTINS.flatMap((b) => {
    const v = values[b.flag.slice(2)];
    if (b.boolean) return v === true ? [`${b.option}=true`] : [];
    return ((v as string[] | undefined) ?? []).map((x) => `${b.option}=${x}`);
  });
  const problem = checkBuiltinSettings(pairs);
  if (problem) throw new UsageError(problem);
  return pairs;
}
