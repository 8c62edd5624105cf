/**
 * The JSON-lines flow log: one object per finished flow of any kind, a line each. HTTP flows carry
 * the fields of their HAR entry (see `har.ts`); bytes are text or base64.
 * @module
 */
import type { DnsFlow, Flow, HttpFlow, TcpFlow, UdpFlow } from "./flow.ts";
import { formatHostPort } from "./flow.ts";
import { clientJson, encodeBytes, errorJson, iso, serverJson } from "./_json_values.ts";
import { flowToHarEntry } from "./har.ts";

// ---- JSON lines -----------------------------------------------------------------------------

/**
 * Converts any flow to the object written as one line of the `-w FILE` log.
 *
 * Every object has `type`, `id`, `timestampStart` and `timestampEnd` (ISO 8601 or null),
 * `client`, `server`, `tls` and `error` (null when absent), and `marked` and `comment` when the
 * user set them. HTTP flows add the fields of their
 * HAR entry (`startedDateTime`, `time`, `request`, `response`, `timings`, `serverIPAddress`) and
 * `websocket` and `grpc` (a gRPC call's messages and status; null otherwise); TCP and UDP flows add byte counts and `messages`; DNS flows add `questions`,
 * `answers`, `rcode` and `resolver`.
 *
 * @returns An object of JSON values only (bytes are text or base64).
 */
export function flowToJson(flow: Flow): Record<string, unknown> {
  const common = {
    type: flow.type,
    id: flow.id,
    timestampStart: iso(flow.timestampStart),
    timestampEnd: flow.timestampEnd === undefined ? null : iso(flow.timestampEnd),
    client: clientJson(flow.client),
    server: serverJson(flow.server),
    tls: flow.tls ?? null,
    error: flow.error === undefined ? null : errorJson(flow.error),
    // The user's mark and comment, only when there are (a flow store sets them).
    ...(flow.marked ? { marked: flow.marked } : {}),
    ...(flow.comment ? { comment: flow.comment } : {}),
  };
  switch (flow.type) {
    case "http":
      return { ...common, ...httpJson(flow) };
    case "tcp":
    case "udp":
      return { ...common, ...streamJson(flow) };
    case "dns":
      return { ...common, ...dnsJson(flow) };
  }
}

function httpJson(flow: HttpFlow): Record<string, unknown> {
  const entry = flowToHarEntry(flow);
  const ws = flow.websocket;
  return {
    startedDateTime: entry.startedDateTime,
    time: entry.time,
    request: entry.request,
    response: flow.response === undefined ? null : entry.response,
    timings: entry.timings,
    serverIPAddress: entry.serverIPAddress ?? null,
    streamId: flow.streamId ?? null,
    ...(flow.replay ? { replay: flow.replay } : {}),
    ...(flow.replayOf ? { replayOf: flow.replayOf } : {}),
    grpc: entry._grpc ?? null,
    websocket: ws === undefined ? null : {
      messages: entry._websocketMessages ?? [],
      messagesDropped: ws.messagesDropped,
      closeCode: ws.closeCode ?? null,
      closeReason: ws.closeReason ?? null,
    },
  };
}

function streamJson(flow: TcpFlow | UdpFlow): Record<string, unknown> {
  return {
    bytesFromClient: flow.bytesFromClient,
    bytesFromServer: flow.bytesFromServer,
    messages: flow.messages.map((m) => {
      const truncated = m.content.byteLength < m.size;
      const encoded = encodeBytes(m.content, truncated);
      return {
        fromClient: m.fromClient,
        kind: m.kind,
        size: m.size,
        timestamp: iso(m.timestamp),
        content: encoded.text,
        encoding: encoded.base64 ? "base64" : "text",
        truncated,
      };
    }),
    messagesDropped: flow.messagesDropped,
  };
}

function dnsJson(flow: DnsFlow): Record<string, unknown> {
  const { request, response } = flow;
  return {
    transactionId: request?.id ?? response?.id ?? null,
    questions: request?.questions ?? response?.questions ?? [],
    answers: response?.answers ?? [],
    authorities: response?.authorities ?? [],
    additionals: response?.additionals ?? [],
    rcode: response?.rcodeName ?? null,
    rcodeNumber: response?.rcode ?? null,
    flags: response?.flags ?? null,
    resolver: flow.resolver === undefined ? null : formatHostPort(flow.resolver),
  };
}

// ---- writers --------------------------------------------------------------------------------

/**
 * Appends finished flows to a JSON-lines file, one object per line.
 *
 * Each line goes to the file with one synchronous write as soon as {@linkcode FlowLogWriter.write}
 * is called, so lines never interleave, nothing waits in a buffer of ours, and a crash of the
 * process loses no line already written. (A write to a local file costs microseconds; the proxy
 * stalls that long.) After the first failed write (a full disk) the file is cut back to its last
 * whole line, the error is thrown once and kept in `error`, and later flows are counted in
 * `dropped` instead of written. A file it creates has mode 0600: flows hold whole requests and
 * responses, cookies and tokens included.
 *
 * @example
 * ```ts ignore
 * const writer = await FlowLogWriter.open("flows.jsonl");
 * bus.subscribe((e) => e.type === "end" && writer.write(e.flow));
 * // ... at exit
 * await writer.close();
 * ```
 */
export class FlowLogWriter {
  #file: Deno.FsFile | null;
  #error: Error | null = null;
  #dropped = 0;
  /** Bytes of whole lines in the file (for a regular file; -1 for others, e.g. a pipe). */
  #size: number;

  private constructor(file: Deno.FsFile, size: number) {
    this.#file = file;
    this.#size = size;
  }

  /** Opens `path` for appending, creating it (mode 0600) if missing. */
  static async open(path: string): Promise<FlowLogWriter> {
    const file = await Deno.open(path, { append: true, create: true, mode: 0o600 });
    const info = await file.stat();
    return new FlowLogWriter(file, info.isFile ? info.size : -1);
  }

  /** The first write error, if there was one. */
  get error(): Error | null {
    return this.#error;
  }

  /** How many flows were not written because of an earlier error. */
  get dropped(): number {
    return this.#dropped;
  }

  /**
   * Appends one flow as a line.
   * @throws {Error} When the writer is closed, and (once) when the write fails.
   */
  write(flow: Flow): void {
    const file = this.#file;
    if (file === null) throw new Error("Cannot write flow: the flow log is closed");
    if (this.#error !== null) {
      this.#dropped++;
      return;
    }
    const line = lineEncoder.encode(JSON.stringify(flowToJson(flow)) + "\n");
    try {
      let done = file.writeSync(line);
      // A regular file takes the whole line at once; this loop is for the odd short write.
      while (done < line.byteLength) done += file.writeSync(line.subarray(done));
      if (this.#size >= 0) this.#size += line.byteLength;
    } catch (e) {
      this.#error = e instanceof Error ? e : new Error(String(e));
      this.#dropped++;
      cutBack(file, this.#size);
      throw this.#error;
    }
  }

  /** Closes the file. Further writes throw. */
  close(): Promise<void> {
    const file = this.#file;
    this.#file = null;
    file?.close();
    return Promise.resolve();
  }
}

const lineEncoder = new TextEncoder();

/**
 * After a failed write, cuts a file back to `size` bytes (its whole lines), so what is there
 * stays valid JSON lines; shortening a file needs no free space. `size` -1: not a regular file.
 */
export function cutBack(file: Deno.FsFile, size: number): void {
  if (size < 0) return;
  try {
    file.truncateSync(size);
  } catch { /* the error already reported is the one that matters */ }
}
