/**
 * wirescope: an intercepting HTTPS proxy whose headline is a WireGuard mode. This module is the
 * library's public API; run it as a program for the command line.
 *
 * @example Keys
 * ```ts
 * import { generatePrivateKey, publicKeyOf } from "./mod.ts";
 * const key = generatePrivateKey();
 * console.log(publicKeyOf(key));
 * ```
 *
 * @example A proxy in WireGuard mode, printing each completed flow
 * ```ts ignore
 * import { generatePrivateKey, startProxy } from "./mod.ts";
 * const proxy = await startProxy({
 *   modes: [{ kind: "wireguard", port: 51820, privateKey: generatePrivateKey(), peers: [{ publicKey: "..." }] }],
 * });
 * for await (const flow of proxy.flows) {
 *   if (flow.type === "http") console.log(flow.request.method, flow.request.url, flow.response?.status);
 * }
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

export { defaultConfdir, startProxy } from "./src/proxy/proxy.ts";
export type {
  ModeAddress,
  ProxyHandle,
  ProxyOptions,
  ProxyStats,
  RegularMode,
  WireGuardMode,
} from "./src/proxy/proxy.ts";
export type { DnsMode, Socks5Mode } from "./src/proxy/proxy.ts";
export type { LimitStats } from "./src/proxy/limits.ts";
export { BlockedDestinationError } from "./src/proxy/destination_policy.ts";
export { FlowBus } from "./src/flows/flow.ts";
export type {
  BodyRecord,
  CertificateSummary,
  ClientInfo,
  DnsFlow,
  Flow,
  FlowError,
  FlowEvent,
  FlowPeer,
  HostPort,
  HttpFlow,
  HttpRequestRecord,
  HttpResponseRecord,
  LogEvent,
  MessageRecord,
  ServerInfo,
  TcpFlow,
  TlsInfo,
  UdpFlow,
} from "./src/flows/flow.ts";
export { CertificateAuthority, namesFromCertificate } from "./src/certs/mod.ts";
export type { Leaf, LeafHost } from "./src/certs/mod.ts";
export { defineAddon } from "./src/addons/types.ts";
export type {
  Addon,
  AddonContext,
  AddonModule,
  BodyTransform,
  HeaderList,
  HttpFlowHandle,
  HttpRequestHandle,
  HttpResponseHandle,
  OptionSpec,
  OptionType,
  OptionValue,
} from "./src/addons/types.ts";
export { AddonError, AddonManager } from "./src/addons/manager.ts";
export { flowToHarEntry } from "./src/flows/har.ts";
export { HarRecorder, HarSpool } from "./src/flows/har_file.ts";
export { FlowLogWriter, flowToJson } from "./src/flows/json_lines.ts";
export { SqliteFlowStore } from "./src/flows/store.ts";
export type { FlowPage, FlowQuery, FlowStore, FlowStoreStats, StoredFlow } from "./src/flows/store.ts";
export { WorkerFlowStore } from "./src/flows/worker_store.ts";
export { FlowRecorder } from "./src/flows/recorder.ts";
export type { FlowRecorderOptions, FlowRecorderStats } from "./src/flows/recorder.ts";
export { compileFilter, FilterSyntaxError } from "./src/flows/filter.ts";
export type { Filter } from "./src/flows/filter.ts";
export { FlowFileError, openFlowFile } from "./src/flows/flow_file.ts";
export { ServerReplay } from "./src/flows/server_replay.ts";
export type { ServerReplayMiss, ServerReplayOptions, ServerReplayStats } from "./src/flows/server_replay.ts";
export { ReplayError } from "./src/proxy/client_replay.ts";
export type { HookResponse, RequestHook, RequestVerdict } from "./src/proxy/request_hook.ts";
export { startWebUi } from "./src/web/server.ts";
export type { WebUiHandle, WebUiOptions, WebUiStats } from "./src/web/server.ts";
export { exportFlows, flowToCurl, flowToRaw } from "./src/flows/export.ts";
export type { ExportFormat, ExportResult } from "./src/flows/export.ts";

if (import.meta.main) {
  // No top-level await: an addon (`-s FILE`) that imports this module would otherwise wait for a
  // module whose evaluation waits for the addon, and the command would hang at start.
  import("./src/cli/main.ts").then(({ main }) => main(Deno.args)).then((code) => Deno.exit(code));
}
