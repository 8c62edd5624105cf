/**
 * Reading a saved run back (`wirescope -r FILE`): a wirescope flow store (SQLite, opened
 * read-only), a HAR 1.2 file (wirescope's or another tool's), or a wirescope JSON-lines file
 * (`-w` output). The kind is told from the content, not the name.
 *
 * Flows from a store are exactly what was recorded. Flows from HAR and JSON lines are rebuilt
 * from what those formats keep: HTTP requests and responses with headers and bodies (text or
 * base64), WebSocket, TCP and UDP messages, DNS questions and answers, client, server, TLS and
 * error where wirescope wrote them; timestamps to the millisecond.
 *
 * Any file that is not one of these, is cut short, is corrupt or comes from a newer version
 * fails with one {@link FlowFileError} naming the file and the problem.
 * @module
 */
import { Buffer } from "node:buffer";
import type {
  BodyRecord,
  ClientInfo,
  DnsFlow,
  Flow,
  HostPort,
  HttpFlow,
  MessageRecord,
  ServerInfo,
} from "./flow.ts";
import type { Headers1 } from "../proxy/http1.ts";
import type { DnsMessage } from "../proxy/dns_message.ts";
import type { Filter } from "./filter.ts";
import { FlowStoreError, SqliteFlowStore } from "./store.ts";
import { applyGrpcJson } from "./grpc.ts";

/** A saved run that cannot be read; the message is one line naming the file and the problem. */
export class FlowFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FlowFileError";
  }
}

/** The kinds of file `-r` reads. */
export type FlowFileFormat = "store" | "har" | "jsonl";

/** An opened saved run. */
export interface FlowFile {
  readonly path: string;
  readonly format: FlowFileFormat;
  /** The flows in recorded order, those matching `filter` only when given. */
  flows(filter?: Filter): AsyncGenerator<Flow>;
  close(): void;
}

const SQLITE_MAGIC = "SQLite format 3\u0000";
/** HAR files are read whole; beyond this they are refused rather than exhausting memory. */
const MAX_HAR_BYTES = 1024 * 1024 * 1024;

/** Opens a saved run, telling its kind from its first bytes. */
export async function openFlowFile(path: string): Promise<FlowFile> {
  let head: Uint8Array;
  let size: number;
  try {
    const file = await Deno.open(path, { read: true });
    try {
      const info = await file.stat();
      if (info.isDirectory) throw new FlowFileError(`cannot read ${path}: it is a directory`);
      size = info.size;
      head = new Uint8Array(64);
      const n = (await file.read(head)) ?? 0;
      head = head.subarray(0, n);
    } finally {
      file.close();
    }
  } catch (e) {
    if (e instanceof FlowFileError) throw e;
    throw new FlowFileError(`cannot read ${path}: ${shortReason(e)}`);
  }
  if (head.byteLength === 0) throw new FlowFileError(`${path} is empty, not a saved run`);
  const text = new TextDecoder("latin1").decode(head);
  if (text.startsWith(SQLITE_MAGIC)) return openStore(path);
  if (text.startsWith("SQLite format")) throw new FlowFileError(`${path} is a damaged SQLite file`);
  const first = text.replace(/^\uFEFF|^\u00ef\u00bb\u00bf/, "").trimStart()[0];
  if (first !== "{") {
    throw new FlowFileError(
      `${path} is not a saved run (expected a wirescope flow store, a HAR file or JSON lines)`,
    );
  }
  // JSON lines: the first line is a whole flow object. HAR: one object with a "log".
  const firstLine = await readFirstLine(path);
  let parsed: unknown;
  try {
    parsed = JSON.parse(firstLine);
  } catch { /* a HAR spread over lines */ }
  if (isObject(parsed) && typeof parsed.type === "string" && typeof parsed.id === "string") {
    return jsonLinesFile(path);
  }
  if (size > MAX_HAR_BYTES) throw new FlowFileError(`${path} is larger than 1 GiB; HAR files are read whole`);
  return await harFile(path);
}

function openStore(path: string): FlowFile {
  let store: SqliteFlowStore;
  try {
    store = SqliteFlowStore.open(path, { readOnly: true });
  } catch (e) {
    throw new FlowFileError(
      e instanceof FlowStoreError ? e.message : `cannot read ${path}: ${shortReason(e)}`,
    );
  }
  return {
    path,
    format: "store",
    async *flows(filter?: Filter) {
      let cursor: string | undefined;
      for (;;) {
        let page;
        try {
          page = store.querySync({
            ...(filter ? { filter } : {}),
            limit: 500,
            ...(cursor !== undefined ? { after: cursor } : {}),
          });
        } catch (e) {
          throw new FlowFileError(`cannot read ${path}: ${shortReason(e)} (the file is damaged)`);
        }
        for (const stored of page.flows) yield stored.flow;
        if (page.cursor === undefined) return;
        cursor = page.cursor;
        await Promise.resolve();
      }
    },
    close() {
      store.closeSync();
    },
  };
}

async function readFirstLine(path: string): Promise<string> {
  const file = await Deno.open(path, { read: true });
  try {
    const decoder = new TextDecoder();
    let text = "";
    const buf = new Uint8Array(64 * 1024);
    // The first line of a flow file is at most a few MiB (bodies are cut at the body limit).
    for (let i = 0; i < 1024; i++) {
      const n = await file.read(buf);
      if (n === null) break;
      text += decoder.decode(buf.subarray(0, n), { stream: true });
      const nl = text.indexOf("\n");
      if (nl !== -1) return text.slice(0, nl);
    }
    return text;
  } finally {
    file.close();
  }
}

function jsonLinesFile(path: string): FlowFile {
  return {
    path,
    format: "jsonl",
    async *flows(filter?: Filter) {
      const file = await Deno.open(path, { read: true });
      try {
        const decoder = new TextDecoder();
        let pending = "";
        let lineNo = 0;
        const take = (line: string): Flow | undefined => {
          lineNo++;
          if (line.trim() === "") return undefined;
          let value: unknown;
          try {
            value = JSON.parse(line);
          } catch {
            throw new FlowFileError(`${path}: line ${lineNo} is not JSON (the file is cut short or damaged)`);
          }
          try {
            return flowFromJson(value);
          } catch (e) {
            throw new FlowFileError(`${path}: line ${lineNo}: ${(e as Error).message}`);
          }
        };
        for await (const chunk of file.readable) {
          pending += decoder.decode(chunk, { stream: true });
          let nl: number;
          while ((nl = pending.indexOf("\n")) !== -1) {
            const flow = take(pending.slice(0, nl));
            pending = pending.slice(nl + 1);
            if (flow && (!filter || filter.match(flow))) yield flow;
          }
        }
        pending += decoder.decode();
        if (pending.trim() !== "") {
          // The writer ends every line; one without its newline was cut short.
          let flow: Flow | undefined;
          try {
            flow = take(pending);
          } catch {
            throw new FlowFileError(`${path}: the last line (${lineNo}) is cut short`);
          }
          if (flow && (!filter || filter.match(flow))) yield flow;
        }
      } finally {
        try {
          file.close();
        } catch { /* closed by the stream */ }
      }
    },
    close() {},
  };
}

async function harFile(path: string): Promise<FlowFile> {
  let value: unknown;
  try {
    value = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    if (e instanceof SyntaxError) {
      throw new FlowFileError(
        `${path} is not valid JSON (cut short or damaged): ${e.message.split("\n")[0]}`,
      );
    }
    throw new FlowFileError(`cannot read ${path}: ${shortReason(e)}`);
  }
  const log = isObject(value) ? value.log : undefined;
  if (!isObject(log) || !Array.isArray(log.entries)) {
    throw new FlowFileError(`${path} is JSON but neither a HAR file nor wirescope JSON lines`);
  }
  const version = typeof log.version === "string" ? log.version : "";
  if (!/^1\.\d+$/.test(version)) {
    throw new FlowFileError(`${path} is HAR version "${version}"; this version reads HAR 1.x`);
  }
  const entries = log.entries as unknown[];
  const flows: Flow[] = [];
  entries.forEach((entry, i) => {
    try {
      flows.push(flowFromHarEntry(entry, i));
    } catch (e) {
      throw new FlowFileError(`${path}: HAR entry ${i + 1}: ${(e as Error).message}`);
    }
  });
  return {
    path,
    format: "har",
    async *flows(filter?: Filter) {
      for (const flow of flows) if (!filter || filter.match(flow)) yield flow;
      await Promise.resolve();
    },
    close() {},
  };
}

// ---- rebuilding flows -------------------------------------------------------------------------

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function need<T>(v: T | undefined | null, what: string): T {
  if (v === undefined || v === null) throw new Error(`missing ${what}`);
  return v;
}

function str(v: unknown, what: string): string {
  if (typeof v !== "string") throw new Error(`${what} is not a string`);
  return v;
}

function num(v: unknown, fallback = 0): number {
  return typeof v === "number" && Number.isFinite(v) ? v : fallback;
}

function time(v: unknown, what: string): number {
  const t = typeof v === "string" ? Date.parse(v) : NaN;
  if (Number.isNaN(t)) throw new Error(`${what} is not a date`);
  return t;
}

function optTime(v: unknown): number | undefined {
  const t = typeof v === "string" ? Date.parse(v) : NaN;
  return Number.isNaN(t) ? undefined : t;
}

/** `host:port` or `[v6]:port`. */
function hostPort(v: unknown, fallback: HostPort): HostPort {
  if (typeof v !== "string") return fallback;
  const m = /^\[([^\]]*)\]:(\d+)$/.exec(v) ?? /^([^:]*):(\d+)$/.exec(v);
  return m ? { hostname: m[1]!, port: Number(m[2]) } : fallback;
}

function bytesOf(text: unknown, encoding: unknown): Uint8Array {
  if (typeof text !== "string") return new Uint8Array(0);
  if (encoding === "base64") return new Uint8Array(Buffer.from(text, "base64"));
  return new TextEncoder().encode(text);
}

function body(content: Uint8Array, size: number, truncated: boolean): BodyRecord {
  return { content, size: Math.max(size, content.byteLength), truncated };
}

function headers(v: unknown): Headers1 {
  if (!Array.isArray(v)) return [];
  return v.filter(isObject).map((h) => [String(h.name ?? ""), String(h.value ?? "")]);
}

function client(v: unknown): ClientInfo {
  if (!isObject(v)) return { address: { hostname: "0.0.0.0", port: 0 }, mode: "regular" };
  const out: ClientInfo = {
    address: hostPort(v.address, { hostname: "0.0.0.0", port: 0 }),
    mode: v.mode === "wireguard" || v.mode === "socks5" || v.mode === "dns" ? v.mode : "regular",
  };
  if (isObject(v.peer) && typeof v.peer.publicKey === "string") {
    out.peer = typeof v.peer.endpoint === "string"
      ? { publicKey: v.peer.publicKey, endpoint: v.peer.endpoint }
      : { publicKey: v.peer.publicKey };
  }
  return out;
}

function server(v: unknown, fallback: HostPort): ServerInfo {
  if (!isObject(v)) return { address: fallback };
  const out: ServerInfo = { address: hostPort(v.address, fallback) };
  if (typeof v.hostname === "string") out.hostname = v.hostname;
  if (typeof v.peerAddress === "string") out.peerAddress = hostPort(v.peerAddress, fallback);
  const connected = optTime(v.timestampConnected);
  if (connected !== undefined) out.timestampConnected = connected;
  const tls = optTime(v.timestampTlsSetup);
  if (tls !== undefined) out.timestampTlsSetup = tls;
  return out;
}

function messages(v: unknown): MessageRecord[] {
  if (!Array.isArray(v)) return [];
  return v.filter(isObject).map((m) => {
    const content = bytesOf(m.content, m.encoding);
    const kinds = ["text", "binary", "close", "ping", "pong", "data"] as const;
    const kind = kinds.find((k) => k === m.kind) ?? "data";
    return {
      fromClient: m.fromClient === true,
      kind,
      content,
      size: Math.max(num(m.size), content.byteLength),
      timestamp: optTime(m.timestamp ?? m.time) ?? 0,
    };
  });
}

/**
 * Rebuilds an HTTP flow from a HAR entry (wirescope's extra `_` fields used when present) or from
 * the HTTP part of a JSON line.
 */
export function flowFromHarEntry(entry: unknown, index = 0, top?: Json): HttpFlow {
  if (!isObject(entry)) throw new Error("not an object");
  const req = need(isObject(entry.request) ? entry.request : undefined, "request");
  const start = time(entry.startedDateTime ?? top?.timestampStart, "startedDateTime");
  const url = str(req.url, "request.url");
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch { /* kept as written */ }
  const scheme = parsed?.protocol.replace(/:$/, "") ?? "http";
  const port = parsed?.port ? Number(parsed.port) : scheme === "https" ? 443 : 80;
  const host = parsed?.hostname.replace(/^\[|\]$/g, "") ?? "";
  const total = num(entry.time);
  const timings = isObject(entry.timings) ? entry.timings : {};
  const beforeResponse = ["blocked", "dns", "connect", "send", "wait"]
    .map((k) => num(timings[k], -1)).filter((t) => t > 0).reduce((a, b) => a + b, 0);
  const postData = isObject(req.postData) ? req.postData : undefined;
  const reqContent = bytesOf(postData?.text, postData?._encoding);
  const flow: HttpFlow = {
    type: "http",
    id: typeof entry._id === "string" ? entry._id : typeof top?.id === "string" ? top.id : `har-${index + 1}`,
    client: client(top?.client ?? entry._client),
    server: server(top?.server ?? entry._server, { hostname: host, port }),
    timestampStart: start,
    request: {
      method: str(req.method, "request.method"),
      scheme,
      host,
      port,
      path: parsed ? parsed.pathname + parsed.search : url,
      url,
      httpVersion: typeof req.httpVersion === "string" ? req.httpVersion : "HTTP/1.1",
      headers: headers(req.headers),
      body: body(reqContent, num(req.bodySize), postData?._truncated === true),
      timestampStart: start,
      timestampEnd: start,
    },
  };
  const resp = isObject(entry.response) ? entry.response : undefined;
  if (resp && num(resp.status) > 0) {
    const content = isObject(resp.content) ? resp.content : {};
    const data = bytesOf(content.text, content.encoding);
    const size = num(resp.bodySize, -1) >= 0 ? num(resp.bodySize) : num(content.size);
    flow.response = {
      status: num(resp.status),
      reason: typeof resp.statusText === "string" ? resp.statusText : "",
      httpVersion: typeof resp.httpVersion === "string" ? resp.httpVersion : "HTTP/1.1",
      headers: headers(resp.headers),
      body: body(data, size, content._truncated === true || data.byteLength < size),
      timestampStart: start + beforeResponse,
      timestampEnd: start + total,
    };
  }
  // The Host header is set apart when it names another host than the URL (transparent mode).
  const hostField = flow.request.headers.find(([n]) => n.toLowerCase() === "host")?.[1];
  if (hostField !== undefined && parsed && hostField.trim().toLowerCase() !== parsed.host.toLowerCase()) {
    flow.request.hostHeader = hostField;
  }
  const end = optTime(top?.timestampEnd);
  flow.timestampEnd = end ?? start + total;
  const tls = top?.tls ?? entry._tls;
  if (isObject(tls)) flow.tls = tls as unknown as HttpFlow["tls"] & object;
  const error = top?.error ?? entry._error;
  if (isObject(error) && typeof error.message === "string") {
    flow.error = { message: error.message, timestamp: optTime(error.timestamp) ?? flow.timestampEnd };
    // HAR has no end time of its own: a failed exchange without a response ended with its error.
    if (end === undefined && !flow.response) flow.timestampEnd = flow.error.timestamp;
  }
  applyGrpcJson(flow, top ? top.grpc : entry._grpc);
  annotate(flow, top ? top.marked : entry._marked, top ? top.comment : entry.comment);
  const replay = top ? top.replay : entry._replay;
  if (replay === "client" || replay === "server") flow.replay = replay;
  const replayOf = top ? top.replayOf : entry._replayOf;
  if (typeof replayOf === "string" && replayOf !== "") flow.replayOf = replayOf;
  const ws = top ? top.websocket : entry._websocketMessages;
  if (top && isObject(ws)) {
    flow.websocket = {
      messages: messages(ws.messages),
      messagesDropped: num(ws.messagesDropped),
      ...(typeof ws.closeCode === "number" ? { closeCode: ws.closeCode } : {}),
      ...(typeof ws.closeReason === "string" ? { closeReason: ws.closeReason } : {}),
    };
  } else if (!top && Array.isArray(ws)) {
    const close = isObject(entry._websocketClose) ? entry._websocketClose : undefined;
    flow.websocket = {
      messages: messages(ws),
      messagesDropped: num(entry._websocketMessagesDropped),
      ...(close && typeof close.code === "number" ? { closeCode: close.code } : {}),
      ...(close && typeof close.reason === "string" ? { closeReason: close.reason } : {}),
    };
  }
  return flow;
}

/** Rebuilds a flow from one line of a wirescope JSON-lines file (`flowToJson`'s shape). */
export function flowFromJson(value: unknown): Flow {
  if (!isObject(value)) throw new Error("not a flow object");
  const type = value.type;
  if (type === "http") return flowFromHarEntry(value, 0, value);
  if (type !== "tcp" && type !== "udp" && type !== "dns") {
    throw new Error(`unknown flow type ${JSON.stringify(type)} (written by a newer wirescope?)`);
  }
  const start = time(value.timestampStart, "timestampStart");
  const end = optTime(value.timestampEnd);
  const base = {
    id: str(value.id, "id"),
    client: client(value.client),
    server: server(value.server, { hostname: "0.0.0.0", port: 0 }),
    timestampStart: start,
    ...(end !== undefined ? { timestampEnd: end } : {}),
  };
  let flow: Flow;
  if (type === "dns") {
    const dns: DnsFlow = { ...base, type: "dns" };
    const questions = Array.isArray(value.questions) ? value.questions : [];
    const message = (response: boolean): DnsMessage => ({
      id: num(value.transactionId),
      response,
      opcode: 0,
      rcode: response ? num(value.rcodeNumber) : 0,
      rcodeName: response && typeof value.rcode === "string" ? value.rcode : "NOERROR",
      flags: isObject(value.flags)
        ? value.flags as DnsMessage["flags"]
        : { aa: false, tc: false, rd: true, ra: response, ad: false, cd: false },
      questions: questions as DnsMessage["questions"],
      answers: response && Array.isArray(value.answers) ? value.answers as DnsMessage["answers"] : [],
      authorities: response && Array.isArray(value.authorities)
        ? value.authorities as DnsMessage["answers"]
        : [],
      additionals: response && Array.isArray(value.additionals)
        ? value.additionals as DnsMessage["answers"]
        : [],
    });
    dns.request = message(false);
    if (value.rcode !== null && value.rcode !== undefined) dns.response = message(true);
    if (typeof value.resolver === "string") {
      dns.resolver = hostPort(value.resolver, { hostname: "", port: 53 });
    }
    flow = dns;
  } else {
    flow = {
      ...base,
      type,
      bytesFromClient: num(value.bytesFromClient),
      bytesFromServer: num(value.bytesFromServer),
      messages: messages(value.messages),
      messagesDropped: num(value.messagesDropped),
    };
  }
  if (isObject(value.tls)) flow.tls = value.tls as unknown as NonNullable<Flow["tls"]>;
  if (isObject(value.error) && typeof value.error.message === "string") {
    flow.error = { message: value.error.message, timestamp: optTime(value.error.timestamp) ?? start };
  }
  annotate(flow, value.marked, value.comment);
  return flow;
}

/** The user's mark and comment as `flowToJson` / `flowToHarEntry` wrote them (absent when empty). */
function annotate(flow: Flow, marked: unknown, comment: unknown): void {
  if (typeof marked === "string" && marked !== "") flow.marked = marked;
  if (typeof comment === "string" && comment !== "") flow.comment = comment;
}

function shortReason(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "no such file or directory";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  const message = e instanceof Error ? e.message : String(e);
  return message.replace(/ \(os error \d+\).*$/, "").split("\n")[0]!;
}
