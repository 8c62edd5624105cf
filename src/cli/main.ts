/**
 * The `wirescope` command: parses flags, prepares WireGuard keys and client configurations,
 * starts the proxy, prints one line per flow (like mitmdump), writes flow files, and shuts down
 * cleanly on SIGINT/SIGTERM (a second signal exits at once).
 * @module
 */
import denoJson from "../../deno.json" with { type: "json" };
import { generatePrivateKey, publicKeyOf } from "../core/keys.ts";
import { formatHostPort } from "../flows/flow.ts";
import { type ProxyHandle, type ProxyOptions, startProxy } from "../proxy/proxy.ts";
import { CERT_PAGE_HOST } from "../proxy/cert_page.ts";
import { type CliOptions, KEPT_RUNS, parseFlags, USAGE, UsageError } from "./flags.ts";
import type { ModeSpec } from "./mode_spec.ts";
import { compileFilter, type Filter } from "../flows/filter.ts";
import { FlowFileError, openFlowFile } from "../flows/flow_file.ts";
import { FlowStoreError } from "../flows/store.ts";
import { startWebUi, type WebUiHandle } from "../web/server.ts";
import { WireGuardAdmin } from "../web/wireguard_admin.ts";
import { InterceptAddon } from "../addons/builtins/intercept.ts";
import { WorkerFlowStore } from "../flows/worker_store.ts";
import { formatSize } from "./flow_line.ts";
import type { Flow } from "../flows/flow.ts";
import { formatFlowLine, formatLogLine } from "./flow_line.ts";
import { HarSpool } from "../flows/har_file.ts";
import { FlowLogWriter } from "../flows/json_lines.ts";
import { exportCommand } from "./export_command.ts";
import { copySavedRun } from "./copy_run.ts";
import { builtinAddons, checkBuiltinSettings } from "../addons/builtins/index.ts";
import { primaryHostAddress } from "./host_address.ts";
import { type AddonLog, AddonManager } from "../addons/manager.ts";
import { countTimers, runtimeStats } from "./runtime_stats.ts";
import { ignoreInspectorSignal } from "./inspector_signal.ts";
import {
  checkClientReplayFile,
  loadServerReplay,
  runClientReplay,
  serverReplaySummary,
} from "./replay_cli.ts";
import {
  clientConfig,
  clientPeers,
  loadWireGuardState,
  qrCode,
  type WireGuardState,
  writeClientConfigs,
} from "./wireguard_conf.ts";

/**
 * Runs the command line.
 *
 * @param args The arguments (without the program).
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  // A command of its own, with its own flags.
  if (args[0] === "export") return await exportCommand(args.slice(1));
  let options: CliOptions;
  try {
    options = parseFlags(args);
  } catch (e) {
    console.error(`wirescope: ${(e as Error).message}`);
    return 2;
  }
  if (options.help) {
    // With -s: the loaded addons' options too (a file that cannot be loaded is one line, exit 2).
    let addonHelp = "";
    try {
      if (options.scripts.length > 0) addonHelp = addonOptionsHelp(await loadAddons(options, () => {}));
    } catch (e) {
      console.error(`wirescope: ${(e as Error).message}`);
      return 2;
    }
    console.log(USAGE + addonHelp);
    return 0;
  }
  if (options.version) {
    console.log(denoJson.version);
    return 0;
  }
  if (options.command === "genkey") {
    console.log(generatePrivateKey());
    return 0;
  }
  if (options.command === "pubkey") {
    const text = await new Response(Deno.stdin.readable).text();
    try {
      console.log(publicKeyOf(text));
      return 0;
    } catch (e) {
      console.error(`wirescope: ${(e as Error).message}`);
      return 2;
    }
  }
  try {
    return await run(options);
  } catch (e) {
    if (e instanceof UsageError || e instanceof StartError || e instanceof FlowFileError) {
      console.error(`wirescope: ${e.message}`);
      return 2;
    }
    if (e instanceof ConfdirError) {
      console.error(`wirescope: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

/** A problem starting the proxy that the user can fix (port in use, unreadable file). */
class StartError extends Error {}

/** The configuration directory cannot be made or written (exit code 1: not a usage mistake). */
class ConfdirError extends Error {}

/**
 * Makes sure `confdir` exists (mode 0700 when made) and takes a new file, before anything else
 * is started: an unwritable one (read-only mount, no permission) ends the start with one line.
 */
async function checkConfdir(confdir: string): Promise<void> {
  const probe = `${confdir}/.wirescope-write-test-${Deno.pid}`;
  try {
    await Deno.mkdir(confdir, { recursive: true, mode: 0o700 });
    const file = await Deno.open(probe, { write: true, createNew: true, mode: 0o600 });
    file.close();
    await Deno.remove(probe);
  } catch (e) {
    await Deno.remove(probe).catch(() => {});
    throw new ConfdirError(`cannot write to the confdir ${confdir}: ${osReason(e)}`);
  }
}

/** The OS's reason from a Deno file-system error, without the call and path Deno appends. */
function osReason(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  return message.replace(/ \(os error \d+\).*$/, "").replace(/: (open|mkdir|remove|write) '.*$/, "");
}

/** Prints the flows of a saved run (`-r`), the view filter applied. */
async function printSavedRun(path: string, viewFilter: Filter | undefined, color: boolean): Promise<number> {
  const file = await openFlowFile(path);
  let n = 0;
  try {
    for await (const flow of file.flows(viewFilter)) {
      console.log(formatFlowLine(flow, { color }));
      n++;
    }
  } finally {
    file.close();
  }
  return n;
}

/** `-r IN -w OUT`: copies IN's flows to OUT (see copy_run.ts); a failure is a start error. */
async function copyReadToSave(
  options: CliOptions,
  saveFilter: Filter | undefined,
): Promise<HarSpool | undefined> {
  const output = options.save!;
  const real = (path: string) => Deno.realPath(path).catch(() => path);
  if ((await real(options.read!)) === (await real(output))) {
    throw new StartError(`-r and -w name the same file (${output}); write the copy elsewhere`);
  }
  try {
    const copied = await copySavedRun(options.read!, output, options.saveFormat ?? "store", saveFilter);
    if (!options.quiet) {
      console.error(`wirescope: copied ${copied.flows} flows from ${options.read} to ${output}`);
    }
    return copied.harSpool;
  } catch (e) {
    if (e instanceof FlowFileError) throw e;
    throw new StartError(`cannot write ${output}: ${osReason(e)}`);
  }
}

/**
 * Opens the flow store: `--store FILE`, or a new file per run in `<confdir>/flows/` named by the
 * start time, after removing the oldest runs there so that the newest {@link KEPT_RUNS} remain.
 */
async function openStore(options: CliOptions): Promise<WorkerFlowStore | undefined> {
  if (options.noStore) return undefined;
  let path = options.store;
  if (path === undefined) {
    const dir = `${options.confdir}/flows`;
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    await pruneRuns(dir, KEPT_RUNS - 1, options.quiet);
    const stamp = new Date().toISOString().replace(/:/g, "-");
    path = `${dir}/${stamp}.db`;
    if (await exists(path)) path = `${dir}/${stamp}-${Deno.pid}.db`;
  }
  let reported = false;
  try {
    // Made 0600 before SQLite opens it: flows hold whole requests and responses.
    if (!(await exists(path))) (await Deno.open(path, { write: true, create: true, mode: 0o600 })).close();
    // Written from a worker: on the main thread, recording cost 44% of the HTTPS req/s.
    return await WorkerFlowStore.open(path, {
      ...(options.storeMax !== undefined ? { maxBytes: options.storeMax } : {}),
      onRetention: (e) => {
        if (options.quiet) return;
        console.error(
          `wirescope: the flow store is over --store-max ${
            formatSize(e.maxBytes)
          }: dropped the ${e.flows} oldest flows (${formatSize(e.bytes)}), ${
            formatSize(e.remainingBytes)
          } kept`,
        );
      },
      onError: (e) => {
        if (reported) return;
        reported = true;
        console.error(`wirescope: ${e.message}`);
      },
    });
  } catch (e) {
    if (e instanceof FlowStoreError) throw new StartError(e.message);
    throw new StartError(`cannot open the flow store ${path}: ${osReason(e)}`);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Removes the oldest `*.db` runs (and their -wal/-shm files) in `dir` until `keep` remain. */
async function pruneRuns(dir: string, keep: number, quiet: boolean): Promise<void> {
  const runs: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && /^\d{4}-\d\d-\d\dT[\d.-]+Z(-\d+)?\.db$/.test(entry.name)) runs.push(entry.name);
  }
  // The names are start times in ISO form: their order is the order of the runs.
  runs.sort();
  for (const name of runs.slice(0, Math.max(0, runs.length - keep))) {
    for (const suffix of ["", "-wal", "-shm"]) await Deno.remove(`${dir}/${name}${suffix}`).catch(() => {});
    if (!quiet) {
      console.error(`wirescope: removed the oldest flow store ${dir}/${name} (keeping ${KEPT_RUNS} runs)`);
    }
  }
}

async function run(options: CliOptions): Promise<number> {
  const color = Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
  const viewFilter = options.viewFilter === undefined ? undefined : compileFilter(options.viewFilter);
  const saveFilter = options.saveFilter === undefined ? undefined : compileFilter(options.saveFilter);
  // -r with -w: the saved run goes to the -w file first (a HAR spool is carried on to the live run).
  let copiedHar: HarSpool | undefined;
  if (options.read !== undefined) {
    await printSavedRun(options.read, viewFilter, color);
    if (options.save !== undefined) copiedHar = await copyReadToSave(options, saveFilter);
    if (!options.modesGiven && !options.clientReplay) {
      await copiedHar?.finish({ name: "wirescope", version: denoJson.version });
      return 0;
    }
  }
  await checkConfdir(options.confdir);
  // Before anything makes timers, so that all of them are seen.
  const timers = Deno.env.get("WIRESCOPE_COUNT_TIMERS") === "1" ? countTimers() : null;
  const peerNames = new Map<string, string>();
  const modes: ProxyOptions["modes"] = [];
  // Client replay alone (no --mode, no --keep-serving) needs no listener.
  const replayOnly = options.clientReplay !== undefined && !options.modesGiven && !options.keepServing;
  for (const spec of replayOnly ? [] : options.modes) {
    if (spec.kind === "reverse" || spec.kind === "upstream" || spec.kind === "tun") {
      modes.push(await serverModeOf(spec, options));
      continue;
    }
    if (spec.kind === "socks5" || spec.kind === "dns") {
      // Like regular: all interfaces, private-range clients only.
      modes.push({ kind: spec.kind, hostname: spec.host || "0.0.0.0", port: spec.port });
      continue;
    }
    if (spec.kind === "regular") {
      // All interfaces by default, as mitmproxy does; the proxy itself admits only local and
      // private-range clients.
      modes.push({ kind: "regular", hostname: spec.host || "0.0.0.0", port: spec.port });
      continue;
    }
    const stateFile = spec.keyFile ?? `${options.confdir}/wireguard.json`;
    let state;
    try {
      state = await loadWireGuardState(stateFile, options.peers);
    } catch (e) {
      throw new StartError((e as Error).message);
    }
    const peers = clientPeers(state, options.peers);
    for (const p of peers) peerNames.set(p.publicKey, `peer ${p.index}`);
    modes.push({
      kind: "wireguard",
      hostname: spec.host || "0.0.0.0",
      port: spec.port,
      privateKey: state.serverPrivateKey,
      // Each client may use only the addresses its config gives it (cryptokey routing).
      peers: peers.map((p) => ({
        publicKey: p.publicKey,
        allowedIps: [`${p.address4}/32`, `${p.address6}/128`],
      })),
      limits: options.wgLimits,
    });
  }

  let serverReplay;
  try {
    serverReplay = options.serverReplay &&
      await loadServerReplay(options.serverReplay, (level, message) => {
        if (options.verbose || (level !== "info" && !options.quiet)) console.error(`wirescope: ${message}`);
      });
  } catch (e) {
    throw new StartError(`--server-replay: ${(e as Error).message}`);
  }
  try {
    if (options.clientReplay) await checkClientReplayFile(options.clientReplay);
  } catch (e) {
    throw new StartError(`--client-replay: ${(e as Error).message}`);
  }
  // Addon files (-s) and --set values: loaded before anything is opened (a broken file: exit 2).
  const addonManager = await loadAddons(options, (level, message) => {
    if (options.quiet && level !== "error") return;
    if (!options.verbose && (level === "debug" || level === "info")) return;
    console.error(formatLogLine({ level, message }, color));
  });
  // --intercept: held flows are resumed (or killed) in the web UI.
  const intercept = options.intercept !== undefined ? new InterceptAddon(options.intercept) : undefined;
  if (intercept) addonManager?.add([intercept]);
  // From before the ports open: a stop asked for while starting must not end the process by the
  // signal's default action (exit 130/143, files unflushed).
  const stop = catchStopSignals();
  const store = await openStore(options);
  let proxy: ProxyHandle;
  try {
    proxy = await startProxy({
      ...(store ? { store } : {}),
      ...(saveFilter ? { storeFilter: saveFilter } : {}),
      ...(serverReplay ? { serverReplay } : {}),
      modes,
      confdir: options.confdir,
      ignoreHosts: options.ignoreHosts,
      allowHosts: options.allowHosts,
      upstreamCa: options.upstreamCa,
      insecure: options.sslInsecure,
      ...(options.dnsServers.length > 0 ? { dnsServers: options.dnsServers } : {}),
      headTimeout: options.headTimeout,
      idleTimeout: options.idleTimeout,
      serverTimeout: options.serverTimeout,
      maxConnectionsPerClient: options.maxConnectionsPerClient,
      ...(options.maxConnections !== undefined ? { maxConnections: options.maxConnections } : {}),
      http2: options.http2,
      allowLocalDestinations: options.allowLocalDestinations,
      ...(options.upstreamProxy !== undefined ? { upstreamProxy: options.upstreamProxy } : {}),
      ...(options.upstreamAuth !== undefined ? { upstreamAuth: options.upstreamAuth } : {}),
      ...(options.proxyAuth ? { proxyAuth: options.proxyAuth } : {}),
      quic: options.quic,
      // The built-in addons the flags ask for (src/addons/builtins/), with their settings.
      ...(options.builtinSettings.length > 0
        ? { addons: builtinAddons(options.builtinSettings), addonOptions: options.builtinSettings }
        : {}),
      // --intercept: the intercept addon last (after the rewriting built-ins, as mitmproxy's runs).
      ...(intercept && !addonManager
        ? {
          addons: [
            ...(options.builtinSettings.length > 0 ? builtinAddons(options.builtinSettings) : []),
            intercept,
          ],
        }
        : {}),
      // With -s or --set: one manager holding the built-ins first, then the files (replaces the above).
      ...(addonManager ? { addons: addonManager } : {}),
      onLog: (event) => {
        if (options.quiet && event.level !== "error") return;
        if (!options.verbose && (event.level === "debug" || event.level === "info")) return;
        console.error(formatLogLine(event, color));
      },
    });
  } catch (e) {
    await store?.close();
    throw new StartError((e as Error).message);
  }
  // Files that change are loaded again while traffic flows (the old version stays on an error).
  addonManager?.watch();
  const closeStore = async () => {
    if (!store) return;
    await store.close();
    if (!options.quiet) console.error(`wirescope: flows stored in ${store.path}`);
  };

  // Flow files first, so nothing that completes after start-up is missed.
  let log: FlowLogWriter | null = null;
  let har: HarSpool | null = null;
  try {
    // A flow store or HAR file named by -w is opened as --store / --har.
    if (options.save && options.saveFormat === "jsonl") {
      log = await FlowLogWriter.open(options.save);
      await warnIfShared(options.save);
    }
  } catch (e) {
    await proxy.close(0);
    await closeStore();
    throw new StartError(`cannot open ${options.save}: ${(e as Error).message}`);
  }
  try {
    if (options.har) har = copiedHar ?? await HarSpool.open(options.har);
  } catch (e) {
    await proxy.close(0);
    await closeStore();
    throw new StartError(`cannot write next to ${options.har}: ${(e as Error).message}`);
  }
  const counts = { flows: 0, errorFlows: 0 };
  const printLine = (flow: Flow) => {
    if (!options.quiet && (!viewFilter || viewFilter.match(flow))) {
      console.log(formatFlowLine(flow, { color, peerNames }));
    }
  };
  // With a store, a flow's line is printed once its batch is committed (some ms after its end):
  // every printed flow is then in the store, also after a SIGKILL.
  // (Quiet, nothing is printed: flows are not held until their commit for nothing.)
  if (!options.quiet) proxy.recorder?.onCommit((flows) => flows.forEach(printLine));
  proxy.bus.subscribe((event) => {
    if (event.type !== "end") return;
    counts.flows++;
    if (event.flow.error !== undefined) counts.errorFlows++;
    // The line first: a file that cannot be written (a full disk) must not hide the flow.
    if (!proxy.recorder) printLine(event.flow);
    if (saveFilter && !saveFilter.match(event.flow)) return;
    // Each writer throws once, at its first failed write, and then counts what it skips.
    if (log) saveOrReport(options.save!, () => log!.write(event.flow));
    if (har) saveOrReport(options.har!, () => har!.add(event.flow));
  });

  let files: ClientFiles | null;
  try {
    files = await writeClientFiles(options, proxy);
  } catch (e) {
    await proxy.close(0);
    await closeStore();
    throw new StartError((e as Error).message);
  }
  // A client replay with no listener has nothing to show clients.
  if (!options.quiet && !replayOnly) await printBanner(options, proxy, files);
  let web: WebUiHandle | undefined;
  if (options.web) {
    try {
      web = await startWebUi({
        proxy,
        hostname: options.web.hostname,
        port: options.web.port,
        ...(options.webPassword !== undefined ? { password: options.webPassword } : {}),
        ...(intercept ? { intercept } : {}),
        // The WireGuard page: the first WireGuard mode's peers, whose configs were written above.
        ...(files && proxy.wireguard[0]
          ? {
            wireguard: await WireGuardAdmin.open({
              listener: proxy.wireguard[0],
              confdir: options.confdir,
              stateFile: files.stateFile,
              endpoint: files.endpoint,
              peers: options.peers,
            }),
          }
          : {}),
        onLog: (level, message) => {
          if (options.verbose || (level !== "info" && !options.quiet)) console.error(`wirescope: ${message}`);
        },
      });
    } catch (e) {
      await proxy.close(0);
      await closeStore();
      throw new StartError(`--web ${options.web.hostname}:${options.web.port}: ${osReason(e)}`);
    }
    // Also when quiet: the URL with its token is the way in.
    console.error(`wirescope: web UI at ${web.url}`);
  }

  // SIGUSR2: one line of figures on stderr (also when quiet), e.g. for watching memory over time.
  // Not SIGUSR1: in this Deno that opens the inspector port, so it is set to be ignored.
  const printStats = () =>
    console.error(`wirescope: stats ${JSON.stringify(runtimeStats(proxy, counts, timers))}`);
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGUSR2", printStats);
  const cancelInspectorGuard = ignoreInspectorSignal((reason) => console.error(`wirescope: ${reason}`));
  // Client replay runs once the proxy is up; without --keep-serving the process ends with it.
  let replayFailed = false;
  const replayDone = options.clientReplay &&
    runClientReplay(proxy, options.clientReplay, options.quiet).then(() => {}, (e) => {
      console.error(`wirescope: --client-replay: ${(e as Error).message}`);
      replayFailed = true;
    });
  const finished = replayDone && !options.keepServing ? Promise.race([stop, replayDone]) : stop;
  let exitCode = await finished.then(() => proxy.close(3000)).then(() => 0, () => 1);
  if (replayFailed) exitCode ||= 1;
  const replayStats = proxy.stats().serverReplay;
  if (replayStats && !options.quiet) console.error(`wirescope: ${serverReplaySummary(replayStats)}`);
  if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGUSR2", printStats);
  cancelInspectorGuard();
  await web?.close();
  await closeStore();
  await log?.close();
  if (log && log.dropped > 0) {
    console.error(`wirescope: ${log.dropped} flows were not saved to ${options.save}`);
    exitCode ||= 1;
  }
  if (har && options.har) {
    if (har.dropped > 0) {
      console.error(`wirescope: ${har.dropped} HTTP flows are missing from ${options.har}`);
      exitCode ||= 1;
    }
    try {
      await har.finish({ name: "wirescope", version: denoJson.version });
      if (!options.quiet) console.error(`wirescope: wrote ${options.har}`);
    } catch (e) {
      console.error(
        `wirescope: cannot write ${options.har}: ${osReason(e)}; its entries are in ${har.spoolPath}`,
      );
      exitCode ||= 1;
    }
  }
  return exitCode;
}

/** Runs one flow-file write; its first failure is reported once, on one line. */
function saveOrReport(path: string, write: () => void): void {
  try {
    write();
  } catch (e) {
    console.error(
      `wirescope: cannot write ${path}: ${
        osReason(e)
      }; later flows are not saved there (the proxy keeps running)`,
    );
  }
}

/** Warns when an existing flow file can be read by others: it will hold whole requests and responses. */
async function warnIfShared(path: string): Promise<void> {
  const info = await Deno.stat(path);
  if (info.isFile && info.mode !== null && (info.mode & 0o077) !== 0) {
    console.error(
      `wirescope: ${path} is readable by others (mode ${
        (info.mode & 0o777).toString(8)
      }); it will hold full traffic (chmod 600 it)`,
    );
  }
}

/** Resolves at the first SIGINT/SIGTERM (the caller then shuts down); a second signal exits at once. */
function catchStopSignals(): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = () => {
      if (stopping) {
        console.error("wirescope: second signal, exiting now");
        Deno.exit(130);
      }
      stopping = true;
      console.error("wirescope: shutting down (again to exit at once)");
      resolve();
    };
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);
  });
}

/** What was written for WireGuard clients. */
interface ClientFiles {
  state: WireGuardState;
  endpoint: string;
  paths: string[];
  /** The state file the keys are in. */
  stateFile: string;
}

/** Writes the client configurations of the first WireGuard mode (also when quiet). */
async function writeClientFiles(options: CliOptions, proxy: ProxyHandle): Promise<ClientFiles | null> {
  const first = options.modes.find((m) => m.kind === "wireguard");
  const addr = proxy.addresses.find((a) => a.kind === "wireguard")?.addr;
  if (!first || !addr) return null;
  let host = options.wgEndpoint?.host;
  if (!host) {
    host = first.host && first.host !== "0.0.0.0" && first.host !== "::"
      ? first.host
      : primaryHostAddress() ?? "";
    if (!host) {
      console.error(
        "wirescope: cannot tell this host's address; client configs use 127.0.0.1 (set --wg-endpoint)",
      );
      host = "127.0.0.1";
    }
  }
  const port = options.wgEndpoint?.port ?? addr.port;
  const endpoint = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  const stateFile = first.keyFile ?? `${options.confdir}/wireguard.json`;
  const state = await loadWireGuardState(stateFile, options.peers);
  const paths = await writeClientConfigs(options.confdir, state, options.peers, endpoint);
  return { state, endpoint, paths, stateFile };
}

async function printBanner(
  options: CliOptions,
  proxy: ProxyHandle,
  files: ClientFiles | null,
): Promise<void> {
  const lines: string[] = [];
  for (const a of proxy.addresses) {
    const where = formatHostPort({ hostname: a.addr.hostname, port: a.addr.port });
    lines.push(
      a.kind === "wireguard"
        ? `WireGuard server listening on UDP ${where}`
        : a.kind === "socks5"
        ? `SOCKS5 proxy listening on TCP ${where}`
        : a.kind === "dns"
        ? `DNS server listening on UDP and TCP ${where}`
        : `HTTP(S) proxy listening on TCP ${where}`,
    );
  }
  for (const m of options.modes) {
    if (m.kind !== "tun") continue;
    lines.push(
      `TUN interface ${m.name} up: route into it (ip route add NET dev ${m.name}) or move it into a netns`,
    );
  }
  if (files) {
    const { state, endpoint, paths } = files;
    const peers = clientPeers(state, options.peers);
    const shown = peers.slice(0, 2);
    for (const peer of shown) {
      const text = clientConfig(state, peer, endpoint);
      lines.push(
        "",
        `Client configuration ${peer.index} (${paths[peer.index - 1]}):`,
        "",
        text.trimEnd(),
        "",
      );
      lines.push(await qrCode(text));
    }
    if (peers.length > shown.length) {
      lines.push(
        `Configurations of the other ${
          peers.length - shown.length
        } peers: ${options.confdir}/wireguard-client-<n>.conf`,
      );
    }
  }
  lines.push(
    "",
    `CA certificate: ${proxy.ca.paths.cert} (also .cer and .p12 beside it)`,
    `Install it on the device to see HTTPS: open http://${CERT_PAGE_HOST}/ through the proxy for files and steps.`,
    "",
  );
  console.log(lines.join("\n"));
}

/**
 * The proxy mode of a `reverse:`, `upstream:` or `tun` spec: listen hosts as regular mode's, the
 * `--certs` files read for reverse mode.
 */
async function serverModeOf(
  spec: Extract<ModeSpec, { kind: "reverse" | "upstream" | "tun" }>,
  options: CliOptions,
): Promise<ProxyOptions["modes"][number]> {
  if (spec.kind === "tun") {
    return { kind: "tun", name: spec.name, ...(options.tunMtu !== undefined ? { mtu: options.tunMtu } : {}) };
  }
  if (spec.kind === "upstream") {
    return { kind: "regular", hostname: spec.host || "0.0.0.0", port: spec.port, upstream: spec.proxy };
  }
  if (spec.scheme === "dns") {
    // Reverse DNS: the dns mode, its resolver the given server.
    return { kind: "dns", hostname: spec.host || "0.0.0.0", port: spec.port, resolvers: [spec.target] };
  }
  const certs: { domain: string; pem: { certPem: string; keyPem: string } }[] = [];
  for (const c of options.certs) {
    let text: string;
    try {
      text = await Deno.readTextFile(c.path);
    } catch (e) {
      throw new StartError(`--certs ${c.path}: ${(e as Error).message}`);
    }
    const cert = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g);
    const key = /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----/.exec(text);
    if (!cert || !key) throw new StartError(`--certs ${c.path}: needs a PEM certificate and its private key`);
    certs.push({ domain: c.domain.toLowerCase(), pem: { certPem: cert.join("\n"), keyPem: key[0] } });
  }
  return {
    kind: "reverse",
    hostname: spec.host || "0.0.0.0",
    port: spec.port,
    target: {
      scheme: spec.scheme,
      address: spec.target,
      keepHostHeader: options.keepHostHeader,
      ...(certs.length > 0
        ? {
          certificateFor: (sni: string | undefined) =>
            (certs.find((c) => c.domain === sni?.toLowerCase()) ?? certs.find((c) => c.domain === "*"))
              ?.pem ??
              null,
        }
        : {}),
    },
  };
}

/**
 * The addon manager of `-s` files and `--set` values, with the built-in addons the flags ask for
 * first; none without `-s` or `--set`. A file that cannot be loaded, or an option no addon
 * declares or a value of the wrong type, is a {@link StartError} (one line, exit 2).
 */
async function loadAddons(options: CliOptions, log: AddonLog): Promise<AddonManager | undefined> {
  if (options.scripts.length === 0 && options.sets.length === 0) return undefined;
  const manager = new AddonManager({ log });
  try {
    // `--set block_list=...` loads a built-in as its flag would (and is checked the same way).
    const problem = checkBuiltinSettings(options.sets);
    if (problem) {
      throw new Error(
        problem.replace(/^--[a-z-]+ /, (flag) => `--set ${flag.slice(2, -1).replace(/-/g, "_")}=`),
      );
    }
    manager.add(builtinAddons([...options.builtinSettings, ...options.sets]));
    for (const file of options.scripts) await manager.addFile(file);
    manager.set([...options.builtinSettings, ...options.sets]);
    manager.checkOptions();
  } catch (e) {
    throw new StartError((e as Error).message);
  }
  return manager;
}

/** The `--help` lines for the options of the addons `manager` loaded. */
function addonOptionsHelp(manager: AddonManager | undefined): string {
  const declared = manager?.describeOptions() ?? [];
  if (declared.length === 0) return "\nThe loaded addons declare no options.\n";
  const lines = ["", "Options of the loaded addons (--set NAME=VALUE):"];
  for (const o of declared) {
    const shown = Array.isArray(o.default) ? o.default.join(",") : String(o.default);
    lines.push(
      `  ${o.name} (${o.type}, ${o.owner})`.padEnd(29) + ` ${o.help} (default: ${JSON.stringify(shown)})`,
    );
  }
  return lines.join("\n") + "\n";
}
