/**
 * The WireGuard side of the configuration directory: the keys, kept in one JSON file so that
 * clients stay configured across restarts, and the client configurations made from them in the
 * `wg-quick` format the official apps import.
 *
 * Client `n` (counting from 1) gets 10.0.0.`n+1` and `<ula>::<n+1>`, where `<ula>` is a random
 * RFC 4193 /64 prefix chosen once per state file. Clients send DNS to 10.0.0.53.
 * @module
 */
import QRCode from "qrcode";
import { dirname, join } from "node:path";
import { decodeKey, generatePrivateKey, publicKeyOf } from "../core/keys.ts";

/** The most client peers the 10.0.0.0/24 plan has room for (10.0.0.2 to 10.0.0.251). */
const MAX_PEERS = 250;

/** The keys and address prefix that live in the state file. */
export interface WireGuardState {
  /** The proxy's private key, base64. */
  serverPrivateKey: string;
  /** One private key per client, base64; client `n` uses entry `n - 1`. */
  clientPrivateKeys: string[];
  /** The first four groups of a random RFC 4193 /64, e.g. `fd3a:91c2:7b10:5e21`. */
  ulaPrefix: string;
}

/** One client's keys and tunnel addresses. */
export interface ClientPeer {
  /** The client number, from 1. */
  index: number;
  /** The client's private key, base64. */
  privateKey: string;
  /** The client's public key, base64. */
  publicKey: string;
  /** The client's IPv4 address in the tunnel, 10.0.0.`index+1`. */
  address4: string;
  /**
   * The client's IPv6 address in the tunnel, `<ulaPrefix>::<index+1>` with the number's decimal
   * digits as the last group, so client 9 is 10.0.0.10 and `<ulaPrefix>::10`.
   */
  address6: string;
}

/**
 * Loads the WireGuard state file, making it on first use.
 *
 * A new file gets a server key, `peers` client keys and a fresh ULA prefix, and is written with
 * mode 0600 (its parent directory is made with mode 0700 if missing). An existing file keeps its
 * keys; when it has fewer than `peers` client keys, new ones are appended and the file is
 * rewritten. Keys are never dropped, so lowering `peers` later keeps the other clients' keys.
 *
 * @param file The JSON file.
 * @param peers How many client keys are needed, 1 to 250.
 * @returns The state, with at least `peers` client keys.
 * @throws {RangeError} When `peers` is out of range.
 * @throws {Error} Naming the file when it cannot be read or holds something other than a valid
 * state.
 *
 * @example
 * ```ts ignore
 * import { loadWireGuardState } from "./wireguard_conf.ts";
 * const state = await loadWireGuardState("/home/me/.wirescope/wireguard.json", 2);
 * console.log(state.clientPrivateKeys.length >= 2); // true
 * ```
 */
export async function loadWireGuardState(file: string, peers: number): Promise<WireGuardState> {
  checkPeers(peers);
  let text: string | undefined;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new Error(`Cannot read WireGuard state ${file}: ${(e as Error).message}`, { cause: e });
    }
  }
  if (text === undefined) {
    const state: WireGuardState = {
      serverPrivateKey: generatePrivateKey(),
      clientPrivateKeys: Array.from({ length: peers }, generatePrivateKey),
      ulaPrefix: randomUlaPrefix(),
    };
    await Deno.mkdir(dirname(file), { recursive: true, mode: 0o700 });
    await writeState(file, state);
    return state;
  }
  const state = parseState(text, file);
  if (state.clientPrivateKeys.length < peers) {
    while (state.clientPrivateKeys.length < peers) state.clientPrivateKeys.push(generatePrivateKey());
    await writeState(file, state);
  }
  return state;
}

/**
 * The first `peers` clients of a state, with their public keys and addresses.
 *
 * @param state The state, as {@linkcode loadWireGuardState} returns it.
 * @param peers How many clients, 1 to the number of client keys in `state`.
 * @returns The clients, numbered from 1.
 * @throws {RangeError} When `state` has fewer than `peers` client keys or `peers` is out of range.
 */
export function clientPeers(state: WireGuardState, peers: number): ClientPeer[] {
  checkPeers(peers);
  if (state.clientPrivateKeys.length < peers) {
    throw new RangeError(
      `The WireGuard state has ${state.clientPrivateKeys.length} client keys, not ${peers}`,
    );
  }
  return state.clientPrivateKeys.slice(0, peers).map((privateKey, i) => ({
    index: i + 1,
    privateKey,
    publicKey: publicKeyOf(privateKey),
    address4: `10.0.0.${i + 2}`,
    address6: `${state.ulaPrefix}::${i + 2}`,
  }));
}

/**
 * A client's configuration in the `wg-quick` format, which the official WireGuard apps import
 * as a file or from a QR code. All traffic, IPv4 and IPv6, goes through the tunnel.
 *
 * @param state The state holding the server key.
 * @param peer The client, from {@linkcode clientPeers}.
 * @param endpoint Where the client sends packets: `host:port`, with IPv6 hosts in brackets.
 * @returns The configuration text, ending in a newline.
 */
export function clientConfig(state: WireGuardState, peer: ClientPeer, endpoint: string): string {
  return [
    "[Interface]",
    `PrivateKey = ${peer.privateKey}`,
    `Address = ${peer.address4}/32, ${peer.address6}/128`,
    "DNS = 10.0.0.53",
    "",
    "[Peer]",
    `PublicKey = ${publicKeyOf(state.serverPrivateKey)}`,
    `Endpoint = ${endpoint}`,
    "AllowedIPs = 0.0.0.0/0, ::/0",
    "",
  ].join("\n");
}

/**
 * Writes `<confdir>/wireguard-client-<n>.conf` for the first `peers` clients, each with mode
 * 0600, making `confdir` if needed.
 *
 * @param confdir The configuration directory.
 * @param state The state.
 * @param peers How many clients.
 * @param endpoint Where clients send packets, as for {@linkcode clientConfig}.
 * @returns The paths written, client 1 first.
 */
export async function writeClientConfigs(
  confdir: string,
  state: WireGuardState,
  peers: number,
  endpoint: string,
): Promise<string[]> {
  await Deno.mkdir(confdir, { recursive: true, mode: 0o700 });
  const paths = [];
  for (const peer of clientPeers(state, peers)) {
    const path = join(confdir, `wireguard-client-${peer.index}.conf`);
    await Deno.writeTextFile(path, clientConfig(state, peer, endpoint), { mode: 0o600 });
    // `mode` only applies when the file is created; an older file may have looser permissions.
    if (Deno.build.os !== "windows") await Deno.chmod(path, 0o600);
    paths.push(path);
  }
  return paths;
}

/**
 * Draws text as a QR code for a terminal, two rows of modules per line of text, as the mobile
 * apps' "scan from QR code" expects.
 *
 * @param text The text, such as a {@linkcode clientConfig}.
 * @returns Lines of block characters.
 */
export function qrCode(text: string): Promise<string> {
  return QRCode.toString(text, { type: "terminal", small: true });
}

/** Throws unless `peers` is a whole number from 1 to 250. */
function checkPeers(peers: number): void {
  if (!Number.isInteger(peers) || peers < 1 || peers > MAX_PEERS) {
    throw new RangeError(`The number of WireGuard peers must be from 1 to ${MAX_PEERS}, not ${peers}`);
  }
}

/**
 * A random RFC 4193 prefix: `fd`, a 40-bit global ID and a 16-bit subnet ID, as four groups of
 * four hex digits. The all-zero choice, fd00::/64, is drawn again: it is the prefix people pick
 * by hand, so it is the one most likely to clash with a network already in use.
 */
function randomUlaPrefix(): string {
  while (true) {
    const bytes = crypto.getRandomValues(new Uint8Array(7));
    const hex = "fd" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    const prefix = hex.match(/..../g)!.join(":");
    if (prefix !== "fd00:0000:0000:0000") return prefix;
  }
}

/** Checks the shape of a state file's contents. */
function parseState(text: string, file: string): WireGuardState {
  const fail = (reason: string): never => {
    throw new Error(`Cannot use WireGuard state ${file}: ${reason}; fix or delete it to make new keys`);
  };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return fail(`not valid JSON (${(e as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return fail("not a JSON object");
  const { serverPrivateKey, clientPrivateKeys, ulaPrefix } = value as Record<string, unknown>;
  if (typeof serverPrivateKey !== "string") return fail(`"serverPrivateKey" is not a string`);
  if (!Array.isArray(clientPrivateKeys) || clientPrivateKeys.length === 0) {
    return fail(`"clientPrivateKeys" is not a non-empty array`);
  }
  if (clientPrivateKeys.length > MAX_PEERS) return fail(`more than ${MAX_PEERS} client keys`);
  if (typeof ulaPrefix !== "string" || !/^fd[0-9a-f]{2}(:[0-9a-f]{4}){3}$/i.test(ulaPrefix)) {
    return fail(`"ulaPrefix" is not four groups of hex digits starting with fd, as in fd3a:91c2:7b10:5e21`);
  }
  if (/^fd00:0000:0000:0000$/i.test(ulaPrefix)) return fail(`"ulaPrefix" must not be fd00::/64`);
  const keys = [serverPrivateKey, ...clientPrivateKeys];
  for (const [i, key] of keys.entries()) {
    const what = i === 0 ? `"serverPrivateKey"` : `client key ${i}`;
    if (typeof key !== "string") return fail(`${what} is not a string`);
    try {
      decodeKey(key, what);
    } catch (e) {
      return fail((e as Error).message);
    }
  }
  if (new Set(keys).size !== keys.length) return fail("two peers share a private key");
  return {
    serverPrivateKey,
    clientPrivateKeys: clientPrivateKeys as string[],
    ulaPrefix: ulaPrefix.toLowerCase(),
  };
}

/**
 * Writes the state with mode 0600 through a temporary file and a rename, so a crash leaves
 * either the old file or the new one.
 */
async function writeState(file: string, state: WireGuardState): Promise<void> {
  const temporary = `${file}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    await Deno.writeTextFile(temporary, JSON.stringify(state, null, 2) + "\n", {
      mode: 0o600,
      createNew: true,
    });
    await Deno.rename(temporary, file);
  } catch (e) {
    await Deno.remove(temporary).catch(() => {});
    throw new Error(`Cannot write WireGuard state ${file}: ${(e as Error).message}`, { cause: e });
  }
}
