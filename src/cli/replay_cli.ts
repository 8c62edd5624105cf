/**
 * The command line's replay pieces: `--server-replay` (loading the recording) and
 * `--client-replay` (sending its requests again through the running proxy), with their lines.
 * @module
 */
import type { ClientReplayFlags, ServerReplayFlags } from "./flags.ts";
import { ServerReplay, type ServerReplayStats } from "../flows/server_replay.ts";
import { openFlowFile } from "../flows/flow_file.ts";
import { compileFilter } from "../flows/filter.ts";
import type { HttpFlow, LogEvent } from "../flows/flow.ts";
import { replayAll, type ReplayAllResult } from "../proxy/client_replay.ts";
import type { ProxyHandle } from "../proxy/proxy.ts";

/** Loads the recording `--server-replay` names (throws a FlowFileError naming the file). */
export function loadServerReplay(
  flags: ServerReplayFlags,
  log: (level: LogEvent["level"], message: string) => void,
): Promise<ServerReplay> {
  return ServerReplay.load(flags.file, {
    ignoreParams: flags.ignoreParams,
    ignoreHost: flags.ignoreHost,
    ignoreContent: flags.ignoreContent,
    extra: flags.extra,
    reuse: flags.reuse,
    onLog: log,
  });
}

/** Checks before start-up that `--client-replay`'s file can be read (throws a FlowFileError naming it). */
export async function checkClientReplayFile(flags: ClientReplayFlags): Promise<void> {
  (await openFlowFile(flags.file)).close();
}

/** The line printed at exit, e.g. `server replay: 3 hits, 1 miss (4 recorded answers, 1 unused)`. */
export function serverReplaySummary(stats: ServerReplayStats): string {
  const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;
  const truncated = stats.truncated > 0 ? `, ${stats.truncated} served with a partial body` : "";
  return `server replay: ${plural(stats.hits, "hit", "hits")}, ${plural(stats.misses, "miss", "misses")} (${
    plural(stats.loaded, "recorded answer", "recorded answers")
  }${truncated})`;
}

/**
 * Sends the HTTP requests of `--client-replay`'s file again through `proxy`, in recorded order
 * (`--client-replay-filter` applied), and prints one summary line on stderr (unless `quiet`).
 * Each new flow is printed like any other flow by the caller's flow output.
 */
export async function runClientReplay(
  proxy: ProxyHandle,
  flags: ClientReplayFlags,
  quiet: boolean,
): Promise<ReplayAllResult> {
  const file = await openFlowFile(flags.file);
  const filter = flags.filter === undefined ? undefined : compileFilter(flags.filter);
  async function* httpFlows(): AsyncGenerator<HttpFlow> {
    for await (const flow of file.flows(filter)) if (flow.type === "http") yield flow;
  }
  try {
    const result = await replayAll((flow) => proxy.replay(flow), httpFlows(), {
      concurrency: flags.concurrency,
      onDone: (original, outcome) => {
        if ("error" in outcome) console.error(`wirescope: client replay: ${outcome.error}`);
        else if (outcome.flow.error && !quiet) {
          console.error(
            `wirescope: client replay of ${original.request.method} ${original.request.url}: ${outcome.flow.error.message}`,
          );
        }
      },
    });
    if (!quiet) {
      console.error(
        `wirescope: client replay done: ${result.replayed} replayed, ${result.failed} failed (${flags.file})`,
      );
    }
    return result;
  } finally {
    file.close();
  }
}
