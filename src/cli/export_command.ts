/**
 * `wirescope export`: writes the flows of a saved run (any file `-r` reads: a flow store, HAR or
 * JSON lines) as HAR, JSON lines, `curl` command lines or raw HTTP/1.1, optionally only those a
 * filter or ids select.
 * @module
 */
import { parseArgs } from "node:util";
import denoJson from "../../deno.json" with { type: "json" };
import { EXPORT_FORMATS, exportFlows, type ExportFormat } from "../flows/export.ts";
import { compileFilter, type Filter, FilterSyntaxError } from "../flows/filter.ts";
import { FlowFileError, openFlowFile } from "../flows/flow_file.ts";
import type { Flow } from "../flows/flow.ts";

/** The usage line of `wirescope export` (also in `--help`). */
export const EXPORT_USAGE =
  "wirescope export [--format har|jsonl|curl|raw] [-f EXPR] [--id ID]... [-q] FILE [OUT]";

const HELP = `Usage: ${EXPORT_USAGE}

Writes the flows of FILE (a flow store, a HAR file or JSON lines: what -r reads)
to OUT (mode 0600, replaced if it exists) or to standard output (no OUT, or -).

  --format F     har: one HAR 1.2 document (HTTP flows)
                 jsonl: one JSON object per flow and line (every flow)
                 curl: one curl command line per HTTP flow, to send it again
                 raw: each HTTP flow's request and response as HTTP/1.1
                 (default: har when OUT ends in .har, else jsonl)
  -f EXPR        only flows matching EXPR (mitmproxy's filter language)
  --id ID        only the flow with this id (or id prefix); repeatable
  -q, --quiet    no summary line on standard error
  -h, --help     show this help`;

class ExportUsageError extends Error {}

/**
 * Runs `wirescope export` with the arguments after `export`.
 *
 * @returns The exit code: 0 done, 1 an id not found or OUT not writable, 2 a usage mistake or an
 *   unreadable FILE (one line on standard error).
 */
export async function exportCommand(args: string[]): Promise<number> {
  let format: ExportFormat;
  let filter: Filter | undefined;
  let ids: string[];
  let input: string;
  let output: string | undefined;
  let quiet: boolean;
  try {
    let parsed;
    try {
      parsed = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: {
          format: { type: "string" },
          "view-filter": { type: "string", short: "f" },
          id: { type: "string", multiple: true },
          quiet: { type: "boolean", short: "q" },
          help: { type: "boolean", short: "h" },
        },
      });
    } catch (e) {
      const message = (e as Error).message.split("\n")[0]!.replace(/\. To specify a positional.*$/, "");
      throw new ExportUsageError(`export: ${message}`);
    }
    const { values, positionals } = parsed;
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    if (positionals.length === 0) throw new ExportUsageError(`export needs a FILE (usage: ${EXPORT_USAGE})`);
    if (positionals.length > 2) throw new ExportUsageError(`export: unexpected argument ${positionals[2]}`);
    input = positionals[0]!;
    output = positionals[1] === "-" ? undefined : positionals[1];
    const given = values.format;
    if (given !== undefined && !(EXPORT_FORMATS as readonly string[]).includes(given)) {
      throw new ExportUsageError(
        `export: --format must be one of ${EXPORT_FORMATS.join(", ")}, not ${given}`,
      );
    }
    format = (given as ExportFormat | undefined) ??
      (output !== undefined && output.toLowerCase().endsWith(".har") ? "har" : "jsonl");
    const expression = values["view-filter"];
    if (expression !== undefined) {
      try {
        filter = compileFilter(expression);
      } catch (e) {
        if (e instanceof FilterSyntaxError) throw new ExportUsageError(`export: -f: ${e.message}`);
        throw e;
      }
    }
    ids = values.id ?? [];
    if (ids.some((id) => id === "")) {
      throw new ExportUsageError("export: --id needs an id, not an empty string");
    }
    quiet = values.quiet ?? false;
  } catch (e) {
    if (e instanceof ExportUsageError) {
      console.error(`wirescope: ${e.message}`);
      return 2;
    }
    throw e;
  }

  let file;
  try {
    file = await openFlowFile(input);
  } catch (e) {
    if (e instanceof FlowFileError) {
      console.error(`wirescope: ${e.message}`);
      return 2;
    }
    throw e;
  }
  let out: Deno.FsFile | undefined;
  const found = new Set<string>();
  try {
    if (output !== undefined) {
      try {
        out = await Deno.open(output, { write: true, create: true, truncate: true, mode: 0o600 });
      } catch (e) {
        console.error(
          `wirescope: cannot write ${output}: ${(e as Error).message.replace(/ \(os error.*$/, "")}`,
        );
        return 1;
      }
    }
    const sink = out ?? Deno.stdout;
    const selected = async function* (): AsyncGenerator<Flow> {
      for await (const flow of file.flows(filter)) {
        if (ids.length > 0) {
          const id = ids.find((i) => flow.id.startsWith(i));
          if (id === undefined) continue;
          found.add(id);
        }
        yield flow;
      }
    };
    let result;
    try {
      result = await exportFlows(selected(), format, async (chunk) => {
        let done = 0;
        while (done < chunk.byteLength) done += await sink.write(chunk.subarray(done));
      }, { name: "wirescope", version: denoJson.version });
    } catch (e) {
      if (e instanceof FlowFileError) {
        console.error(`wirescope: ${e.message}`);
        return 2;
      }
      if (e instanceof Deno.errors.BrokenPipe) return 0; // `| head`
      console.error(`wirescope: cannot write ${output ?? "the output"}: ${(e as Error).message}`);
      return 1;
    }
    if (!quiet) {
      const skipped = result.skipped > 0
        ? ` (${result.skipped} flows that are not HTTP are left out of ${format})`
        : "";
      console.error(
        `wirescope: exported ${result.written} flows as ${format}${output ? ` to ${output}` : ""}${skipped}`,
      );
    }
    const missing = ids.filter((id) => !found.has(id));
    if (missing.length > 0) {
      console.error(`wirescope: no flow with id ${missing.join(", ")} in ${input}`);
      return 1;
    }
    return 0;
  } finally {
    out?.close();
    file.close();
  }
}
