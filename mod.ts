/**
 * wirescope: an intercepting HTTPS proxy whose headline is a WireGuard mode. This module is the
 * library's public API; run it as a program for the command line.
 *
 * @example
 * ```ts
 * import { generatePrivateKey, publicKeyOf } from "./mod.ts";
 * const key = generatePrivateKey();
 * console.log(publicKeyOf(key));
 * ```
 * @module
 */
export { decodeKey, encodeKey, generatePrivateKey, publicKeyOf } from "./src/core/keys.ts";
export { CloseReason, PeerEventKind, WasmCore } from "./src/core/wasm_core.ts";
export { listenWireGuard, WireGuardListener } from "./src/net/wireguard_listener.ts";
export type {
  ListenWireGuardOptions,
  TunnelDatagram,
  WireGuardPeerOptions,
  WireGuardStats,
} from "./src/net/wireguard_listener.ts";
export { ConnectionResetError, TunnelConn } from "./src/net/tunnel_conn.ts";
export type { TunnelPeer } from "./src/net/tunnel_conn.ts";
export type {
  CoreSink,
  CoreStats,
  Endpoint,
  WasmCoreOptions,
  WasmPeerOptions,
} from "./src/core/wasm_core.ts";

if (import.meta.main) {
  const { main } = await import("./src/cli/main.ts");
  Deno.exit(await main(Deno.args));
}
