/**
 * The flow store: flows kept on disk, with their metadata in indexed columns and their bodies and
 * messages as BLOBs, read back by filter expression (src/flows/filter.ts) and page.
 *
 * {@link FlowStore} is the interface the proxy, the CLI and a UI are meant to use; writes are
 * fire-and-forget (a failed write is counted and reported, never thrown at the proxy), reads
 * return promises, so a store on a shared database server can take the place of the embedded one.
 * {@link SqliteFlowStore} is the embedded one, on `node:sqlite` (no dependency).
 *
 * SQLite file layout (schema version {@link SCHEMA_VERSION} in `PRAGMA user_version`,
 * {@link APPLICATION_ID} in `PRAGMA application_id`):
 *
 * - `flows`: one row per flow, `seq` (order of arrival, the paging cursor), `id`, the columns the
 *   filter's SQL names (see `toSql` in filter.ts), times, sizes, `error`, `bytes` (stored size).
 * - `names`: hosts and methods, pointed at by `flows.host_id` / `host_alt_id` / `method_id`.
 * - `flow_data`: the flow as JSON, each `Uint8Array` replaced by `{"\u0000bytes": n}`.
 * - `flow_blobs`: blob `n` of a flow.
 *
 * Durability: WAL mode with `synchronous=NORMAL`. Every write outside {@link SqliteFlowStore.batch}
 * is its own transaction, committed to the WAL before the call returns: a process killed with
 * SIGKILL loses nothing committed (the OS has the pages); a power cut may lose the last
 * transactions (NORMAL does not fsync each commit) but never corrupts the file.
 * @module
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import type { BodyRecord, Flow, MessageRecord } from "./flow.ts";
import { alternateHost, alternateUrl, compileFilter, type Filter, peerName } from "./filter.ts";

/**
 * The schema this code writes and reads. History: 1, the first; 2 adds `flows.mark` (the name of a
 * flow's mark, beside the 0/1 `marked` the index and `~marked` use); 3 has fewer indexes (the
 * writer's cost: one index `flows_kind` on type, status, has_response and method in place of two
 * on status and peer). A writable store of an older schema is migrated when opened;
 * a read-only one is read through a view that supplies what is missing (schema 2 needs none: only
 * its indexes differ).
 */
export const SCHEMA_VERSION = 3;
/** `PRAGMA application_id` of a wirescope flow store ("wsfl"). */
export const APPLICATION_ID = 0x7773666c;
/** Default cap on each stored body or message: 64 MiB. */
export const DEFAULT_BODY_LIMIT = 64 * 1024 * 1024;

/** A stored flow and what the user added to it. */
export interface StoredFlow {
  /** The flow as it was stored. */
  flow: Flow;
  /** True when the user marked it. */
  marked: boolean;
  /** The mark's name (`:default:` for a plain mark); "" when unmarked. */
  mark: string;
  /** "" when none. */
  comment: string;
  /** True while the flow has not ended. */
  live: boolean;
  /** Where this flow sits in the store: pass as `after`/`before` to page from it. */
  cursor: string;
}

/** A query: a filter, a page size and where to start. */
export interface FlowQuery {
  /** A filter expression (or a compiled one); all flows when absent. */
  filter?: string | Filter;
  /** Flows per page (default 100, at most 10,000). */
  limit?: number;
  /** Flows stored after this cursor, oldest first. */
  after?: string;
  /** Flows stored before this cursor, newest first. */
  before?: string;
  /** Without a cursor: start from the newest (newest first) instead of the oldest. */
  newestFirst?: boolean;
  /** Only flows that started at or after / before this time (ms since the epoch). */
  since?: number;
  /** Only flows that started before this time (ms since the epoch). */
  until?: number;
  /** Load bodies and message contents (default true); without, they come back empty. */
  withBodies?: boolean;
  /**
   * Sort by a column instead of the storage order (ties by storage order). Pages then go by
   * position: pass the page's `cursor` as `after`; `before` and `newestFirst` do not apply.
   */
  order?: { by: FlowOrderKey; descending?: boolean };
}

/** The columns {@link FlowQuery.order} sorts by (`size` is the response's, `requestSize` the request's). */
export type FlowOrderKey = "time" | "status" | "host" | "method" | "size" | "requestSize" | "duration";

const ORDER_SQL: Record<FlowOrderKey, string> = {
  time: "f.ts_start",
  status: "f.status",
  host: "(SELECT n.name FROM names n WHERE n.id = f.host_id)",
  method: "(SELECT n.name FROM names n WHERE n.id = f.method_id)",
  size: "f.response_size",
  requestSize: "f.request_size",
  duration: "(f.ts_end - f.ts_start)",
};

/** One page of a query. */
export interface FlowPage {
  /** The flows of the page, in the query's order. */
  flows: StoredFlow[];
  /** Pass as `after` (or `before` when going newest first) for the next page; absent at the end. */
  cursor?: string;
}

/** Counters of a store. */
export interface FlowStoreStats {
  /** Flows in the store. */
  flows: number;
  /** Bytes the stored flows take (JSON and bodies; the file is larger by its indexes). */
  bytes: number;
  /** Flows dropped by retention, and their bytes. */
  dropped: number;
  /** Bytes of the flows dropped by retention. */
  droppedBytes: number;
  /** Writes that failed (disk full, I/O error); each was reported through `onError`. */
  writeErrors: number;
  /** Bodies or messages stored shorter than they were because of the store's body limit. */
  bodiesCut: number;
}

/**
 * Where flows are kept. Writes never throw (a failed write is counted in `stats()` and reported);
 * reads return promises so that the store may live in another process or on another host.
 */
export interface FlowStore {
  /** Stores a flow as it is now (new, or updated as it progresses). Keeps its mark and comment. */
  put(flow: Flow): void;
  /** Stores a flow that has ended; once this returns, the flow survives the process being killed. */
  end(flow: Flow): void;
  /** The flow with this id. */
  get(id: string): Promise<StoredFlow | undefined>;
  /**
   * A page of flows matching a query: a filter expression in mitmproxy's language (a string is
   * taken as `{ filter }`), or a {@link FlowQuery} with paging. Loaded flows carry their mark and
   * comment in `flow.marked` / `flow.comment` when they have them.
   */
  query(query?: FlowQuery | string): Promise<FlowPage>;
  /** How many flows match a filter (all when absent). */
  count(filter?: string | Filter): Promise<number>;
  /** Deletes flows by id; resolves to how many there were. */
  delete(ids: string[]): Promise<number>;
  /** Deletes every flow. */
  clear(): Promise<void>;
  /**
   * Marks a flow (`true`: the plain mark `:default:`; a string: a named mark, as mitmproxy's
   * markers) or unmarks it (`false` or ""); false when there is no such flow.
   */
  setMark(id: string, mark: string | boolean): Promise<boolean>;
  /** Sets a flow's comment ("" removes it); false when there is no such flow. */
  setComment(id: string, comment: string): Promise<boolean>;
  /** Counters (synchronous: a remote store keeps its own). */
  stats(): FlowStoreStats;
  /** Writes what is pending and closes. */
  close(): Promise<void>;
}

/** A store that cannot be opened: not a wirescope store, a newer schema, a corrupt file. */
export class FlowStoreError extends Error {
  /** An error with a message naming the file and the problem. */
  constructor(message: string) {
    super(message);
    this.name = "FlowStoreError";
  }
}

/** What retention dropped, for a log line. */
export interface RetentionEvent {
  /** Flows dropped now. */
  flows: number;
  /** Their bytes. */
  bytes: number;
  /** What the store holds afterwards. */
  remainingBytes: number;
  /** The limit that was exceeded. */
  maxBytes: number;
}

/** Options of {@link SqliteFlowStore.open}. */
export interface SqliteFlowStoreOptions {
  /** Open without writing (a saved run; other processes may be writing it). */
  readOnly?: boolean;
  /** Cap on each stored body or message (default {@link DEFAULT_BODY_LIMIT}). */
  bodyLimit?: number;
  /** Drop the oldest ended flows once the stored flows take more than this many bytes. */
  maxBytes?: number;
  /** Called when retention dropped flows. */
  onRetention?: (event: RetentionEvent) => void;
  /** Called when a write failed (the store keeps going; the failure is counted). */
  onError?: (error: Error) => void;
}

const BYTES_KEY = "\u0000bytes";
/** WAL pages (4 KiB each) after which a commit checkpoints (SQLite's default is 1,000). */
const WAL_AUTOCHECKPOINT_PAGES = 4000;
/** Per-row cost added to a flow's byte count for its metadata and index entries. */
const ROW_OVERHEAD = 200;

/**
 * Schema 3's index on type, status, has_response and method, in place of schema 2's on status and
 * on peer (each index costs the writer a B-tree insert a flow): its prefix answers `~c CODE` and
 * `~q`/`~s` without reading rows. `~peer` needs no index: its LIKE terms make SQLite scan anyway.
 * `flows_type` and `flows_method` stay: their entries of one value are in storage order, so a page
 * of `~http` (or of `~hq …`, whose SQL is `type = 'http'`) reads the index backwards with no sort
 * (through `flows_kind` it sorted every HTTP flow for each chunk: minutes over 1,000,000 flows), and
 * without `flows_method` `~d example & ~m POST` went through the host index and sorted every match
 * (5.5 s for the newest 100).
 */
const KIND_INDEX = "CREATE INDEX flows_kind ON flows (type, status, has_response, method_id)";

const SCHEMA = `
CREATE TABLE names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
INSERT INTO names (id, name) VALUES (0, '');
CREATE TABLE flows (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  type TEXT NOT NULL,
  ts_start REAL NOT NULL,
  ts_end REAL,
  client TEXT NOT NULL DEFAULT '',
  server TEXT NOT NULL DEFAULT '',
  peer TEXT NOT NULL DEFAULT '',
  peer_name TEXT NOT NULL DEFAULT '',
  host_id INTEGER NOT NULL DEFAULT 0,
  host_alt_id INTEGER NOT NULL DEFAULT 0,
  port INTEGER NOT NULL DEFAULT 0,
  method_id INTEGER NOT NULL DEFAULT 0,
  url TEXT NOT NULL DEFAULT '',
  url_alt TEXT NOT NULL DEFAULT '',
  status INTEGER NOT NULL DEFAULT 0,
  has_response INTEGER NOT NULL DEFAULT 0,
  websocket INTEGER NOT NULL DEFAULT 0,
  has_error INTEGER NOT NULL DEFAULT 0,
  error TEXT,
  request_size INTEGER NOT NULL DEFAULT 0,
  response_size INTEGER NOT NULL DEFAULT 0,
  marked INTEGER NOT NULL DEFAULT 0,
  comment TEXT NOT NULL DEFAULT '',
  bytes INTEGER NOT NULL DEFAULT 0,
  mark TEXT NOT NULL DEFAULT ''
);
CREATE INDEX flows_type ON flows (type);
CREATE INDEX flows_ts_start ON flows (ts_start);
CREATE INDEX flows_host ON flows (host_id);
CREATE INDEX flows_host_alt ON flows (host_alt_id);
CREATE INDEX flows_method ON flows (method_id);
${KIND_INDEX};
CREATE INDEX flows_marked ON flows (marked) WHERE marked <> 0;
CREATE TABLE flow_data (seq INTEGER PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE flow_blobs (seq INTEGER NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (seq, idx));
`;

/** A flow as JSON with its bytes set apart. */
export interface EncodedFlow {
  /** The flow with each `Uint8Array` replaced by a numbered placeholder. */
  json: string;
  /** The bytes, by placeholder number. */
  blobs: Uint8Array[];
  /** Bodies or messages cut to the body limit. */
  cut: number;
}

/**
 * A flow as JSON plus BLOBs: each `Uint8Array` becomes `{"\u0000bytes": n}`; a body or message
 * longer than `bodyLimit` keeps its first `bodyLimit` bytes (its `size` stays the true size, a
 * body record's `truncated` becomes true).
 */
export function encodeFlow(flow: Flow, bodyLimit: number): EncodedFlow {
  return encodeKnownShape(flow, bodyLimit) ?? encodeAnyShape(flow, bodyLimit);
}

/**
 * {@link encodeFlow} for flows whose bytes are where the flow types put them (bodies and
 * messages): copies only the objects on the way to them and stringifies natively, about a third
 * cheaper than walking every object. Undefined when some other byte array turned up (it would
 * have been written as `{"0":…}`, `{}` or, for a Buffer, `{"type":"Buffer","data":[…]}`; JSON
 * escapes the quotes of such text inside strings, so only real objects match).
 */
function encodeKnownShape(flow: Flow, bodyLimit: number): EncodedFlow | undefined {
  const blobs: Uint8Array[] = [];
  let cut = 0;
  const bytes = (b: Uint8Array) => {
    if (b.byteLength > bodyLimit) {
      b = b.subarray(0, bodyLimit);
      cut++;
    }
    blobs.push(b);
    return { [BYTES_KEY]: blobs.length - 1 };
  };
  const body = (r: BodyRecord) =>
    r.content.byteLength > bodyLimit
      ? { ...r, content: bytes(r.content), truncated: true }
      : { ...r, content: bytes(r.content) };
  const messages = (list: MessageRecord[]) => list.map((m) => ({ ...m, content: bytes(m.content) }));
  let copy: unknown;
  switch (flow.type) {
    case "http":
      copy = {
        ...flow,
        request: { ...flow.request, body: body(flow.request.body) },
        ...(flow.response ? { response: { ...flow.response, body: body(flow.response.body) } } : {}),
        ...(flow.websocket
          ? { websocket: { ...flow.websocket, messages: messages(flow.websocket.messages) } }
          : {}),
      };
      break;
    case "tcp":
    case "udp":
      copy = { ...flow, messages: messages(flow.messages) };
      break;
    default:
      copy = flow;
  }
  const json = JSON.stringify(copy);
  // An empty byte array is written as `{}`: anything that looks like one takes the slow path too.
  if (json.includes('{"0":') || json.includes("{}") || json.includes('{"type":"Buffer","data":[')) {
    return undefined;
  }
  return { json, blobs, cut };
}

function encodeAnyShape(flow: Flow, bodyLimit: number): EncodedFlow {
  const blobs: Uint8Array[] = [];
  let cut = 0;
  const walk = (value: unknown): unknown => {
    if (value instanceof Uint8Array) {
      let bytes = value;
      if (bytes.byteLength > bodyLimit) {
        bytes = bytes.subarray(0, bodyLimit);
        cut++;
      }
      blobs.push(bytes);
      return { [BYTES_KEY]: blobs.length - 1 };
    }
    if (Array.isArray(value)) return value.map(walk);
    if (value !== null && typeof value === "object") {
      const out: Record<string, unknown> = {};
      for (const key of Object.keys(value)) {
        const v = (value as Record<string, unknown>)[key];
        if (v !== undefined) out[key] = walk(v);
      }
      const content = (value as { content?: unknown }).content;
      if (content instanceof Uint8Array && content.byteLength > bodyLimit && "truncated" in value) {
        out.truncated = true;
      }
      return out;
    }
    return value;
  };
  const json = JSON.stringify(walk(flow));
  return { json, blobs, cut };
}

/** The inverse of {@link encodeFlow}; with `blobs` absent, bytes come back empty. */
export function decodeFlow(json: string, blobs: Map<number, Uint8Array> | undefined): Flow {
  return JSON.parse(json, (_key, value) => {
    if (value !== null && typeof value === "object" && !Array.isArray(value) && BYTES_KEY in value) {
      const n = (value as Record<string, number>)[BYTES_KEY]!;
      return blobs?.get(n) ?? new Uint8Array(0);
    }
    return value;
  }) as Flow;
}

function hostPort(a: { hostname: string; port: number }): string {
  return `${a.hostname}:${a.port}`;
}

/** What of a flow {@link SqliteFlowStore.writeRow} needs: structured-cloneable, small. */
export interface FlowRow {
  /** The flow's fields that are columns of their own. */
  flow: {
    id: string;
    type: Flow["type"];
    timestampStart: number;
    timestampEnd?: number;
    server: { address: { port: number } };
    error?: { message: string };
  };
  /** Whether the flow has ended. */
  ended: boolean;
  c: FlowColumns;
  encoded: EncodedFlow;
  /** `flow.marked` / `flow.comment` when the flow carries them (a flow read from a file): written too. */
  mark?: string;
  comment?: string;
}

/** Makes a flow ready for {@link SqliteFlowStore.writeRow}. */
export function flowRow(flow: Flow, ended: boolean, bodyLimit: number = DEFAULT_BODY_LIMIT): FlowRow {
  const row: FlowRow = {
    flow: {
      id: flow.id,
      type: flow.type,
      timestampStart: flow.timestampStart,
      server: { address: { port: flow.server.address.port } },
    },
    ended,
    c: columnsOf(flow),
    encoded: encodeFlow(flow, bodyLimit),
  };
  if (flow.timestampEnd !== undefined) row.flow.timestampEnd = flow.timestampEnd;
  if (flow.error !== undefined) row.flow.error = { message: flow.error.message };
  if (flow.marked !== undefined) row.mark = flow.marked;
  if (flow.comment !== undefined) row.comment = flow.comment;
  return row;
}

/** The metadata columns of a flow (names as text; ids are looked up when written). */
export interface FlowColumns {
  host: string;
  hostAlt: string;
  method: string;
  url: string;
  urlAlt: string;
  status: number;
  hasResponse: number;
  websocket: number;
  requestSize: number;
  responseSize: number;
  client: string;
  server: string;
  peer: string;
  peerName: string;
}

/** The metadata columns of a flow (names as text; ids are looked up when written). */
function columnsOf(flow: Flow): FlowColumns {
  let host = "";
  let hostAlt = "";
  let method = "";
  let url = "";
  let urlAlt = "";
  let status = 0;
  let hasResponse = 0;
  let websocket = 0;
  let requestSize = 0;
  let responseSize = 0;
  switch (flow.type) {
    case "http":
      host = flow.request.host;
      hostAlt = alternateHost(flow) ?? "";
      method = flow.request.method;
      url = flow.request.url;
      urlAlt = alternateUrl(flow) ?? "";
      if (flow.response) {
        status = flow.response.status;
        hasResponse = 1;
        responseSize = flow.response.body.size;
      }
      websocket = flow.websocket ? 1 : 0;
      requestSize = flow.request.body.size;
      break;
    case "tcp":
    case "udp":
      requestSize = flow.bytesFromClient;
      responseSize = flow.bytesFromServer;
      break;
    case "dns":
      url = flow.request?.questions[0]?.name ?? "";
      hasResponse = flow.response ? 1 : 0;
      break;
  }
  return {
    host,
    hostAlt,
    method,
    url,
    urlAlt,
    status,
    hasResponse,
    websocket,
    requestSize,
    responseSize,
    client: hostPort(flow.client.address),
    server: hostPort(flow.server.address),
    peer: flow.client.peer?.publicKey ?? "",
    peerName: peerName(flow) ?? "",
  };
}

/** The stored name of a mark given as {@link FlowStore.setMark} takes it. */
export function markName(mark: string | boolean): string {
  if (mark === true) return ":default:";
  if (mark === false) return "";
  return mark;
}

function clampLimit(limit: number | undefined): number {
  if (limit === undefined) return 100;
  return Math.max(1, Math.min(10_000, Math.floor(limit)));
}

function cursorSeq(cursor: string, which: string): number {
  if (!/^\d{1,15}$/.test(cursor)) throw new RangeError(`bad ${which} cursor '${cursor}'`);
  return Number(cursor);
}

interface Row {
  seq: number;
  id: string;
  mark: string;
  comment: string;
  ts_end: number | null;
  json: string;
}

/** The embedded flow store on SQLite. Open with {@link SqliteFlowStore.open}. */
export class SqliteFlowStore implements FlowStore {
  /** The file it is on. */
  readonly path: string;
  /** True when opened with `readOnly`. */
  readonly readOnly: boolean;
  #db: DatabaseSync;
  #bodyLimit: number;
  #maxBytes: number | undefined;
  #onRetention: ((event: RetentionEvent) => void) | undefined;
  #onError: ((error: Error) => void) | undefined;
  #stats: FlowStoreStats = { flows: 0, bytes: 0, dropped: 0, droppedBytes: 0, writeErrors: 0, bodiesCut: 0 };
  #names = new Map<string, number>();
  /** Flows written live and not yet ended by this store (their rows are updated in place). */
  #liveIds = new Set<string>();
  #inBatch = false;
  #closed = false;
  #stmts: Record<string, StatementSync> = {};

  private constructor(path: string, db: DatabaseSync, options: SqliteFlowStoreOptions) {
    this.path = path;
    this.readOnly = options.readOnly === true;
    this.#db = db;
    this.#bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
    this.#maxBytes = options.maxBytes;
    this.#onRetention = options.onRetention;
    this.#onError = options.onError;
  }

  /**
   * Opens (or creates) a store. Throws {@link FlowStoreError} naming the problem when the file is
   * not a wirescope store, was written by a newer wirescope, or cannot be read.
   */
  static open(path: string, options: SqliteFlowStoreOptions = {}): SqliteFlowStore {
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(path, { readOnly: options.readOnly === true });
    } catch (e) {
      throw new FlowStoreError(`cannot open flow store ${path}: ${(e as Error).message}`);
    }
    const store = new SqliteFlowStore(path, db, options);
    try {
      store.#init();
    } catch (e) {
      try {
        db.close();
      } catch { /* already failing */ }
      if (e instanceof FlowStoreError) throw e;
      throw new FlowStoreError(`cannot read flow store ${path}: ${(e as Error).message}`);
    }
    return store;
  }

  #init(): void {
    const db = this.#db;
    db.exec("PRAGMA busy_timeout = 5000");
    const appId = Number(
      (db.prepare("PRAGMA application_id").get() as { application_id: number }).application_id,
    );
    const version = Number(
      (db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version,
    );
    const tables = Number(
      (db.prepare("SELECT count(*) AS n FROM sqlite_schema").get() as { n: number }).n,
    );
    if (appId === 0 && version === 0 && tables === 0) {
      if (this.readOnly) throw new FlowStoreError(`${this.path} is empty, not a wirescope flow store`);
      // auto_vacuum has to be chosen before the first table exists.
      db.exec("PRAGMA auto_vacuum = INCREMENTAL");
      db.exec("PRAGMA journal_mode = WAL");
      db.exec("BEGIN");
      db.exec(SCHEMA);
      db.exec(`PRAGMA application_id = ${APPLICATION_ID}`);
      db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
      db.exec("COMMIT");
    } else if (appId !== APPLICATION_ID) {
      throw new FlowStoreError(`${this.path} is an SQLite file but not a wirescope flow store`);
    } else if (version > SCHEMA_VERSION) {
      throw new FlowStoreError(
        `${this.path} was written by a newer wirescope (store schema ${version}; this version reads up to ${SCHEMA_VERSION})`,
      );
    } else if (version < 1) {
      // Schema 1 is the first wirescope wrote; anything below is not ours to guess at.
      throw new FlowStoreError(`${this.path} has store schema ${version}, which this version cannot read`);
    } else if (version < SCHEMA_VERSION) {
      this.#upgrade(version);
    }
    if (!this.readOnly) {
      db.exec("PRAGMA journal_mode = WAL");
      // A checkpoint copies each page the WAL holds once, however many commits rewrote it: with
      // 16 MiB of WAL instead of 4, the pages every batch touches (the tables' and indexes' last
      // pages) are copied a quarter as often.
      db.exec(`PRAGMA wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
    }
    db.exec("PRAGMA synchronous = NORMAL");
    const totals = db.prepare("SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b FROM flows").get() as {
      n: number;
      b: number;
    };
    this.#stats.flows = Number(totals.n);
    this.#stats.bytes = Number(totals.b);
  }

  /**
   * Brings a store of an older schema up to {@link SCHEMA_VERSION}: in place and in one transaction
   * when writable; when read-only, through a TEMP view named `flows` (the temp schema is searched
   * before the file's), which leaves the file as it is.
   */
  #upgrade(version: number): void {
    const db = this.#db;
    // Schema 1 had only the 0/1 flag: its marks become plain marks.
    const markOf1 = "(CASE WHEN marked <> 0 THEN ':default:' ELSE '' END)";
    if (this.readOnly) {
      if (version === 1) db.exec(`CREATE TEMP VIEW flows AS SELECT *, ${markOf1} AS mark FROM main.flows`);
      return;
    }
    db.exec("BEGIN IMMEDIATE");
    try {
      // Read again inside the transaction: another process may have migrated it meanwhile.
      const now = Number((db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version);
      if (now === 1) {
        db.exec("ALTER TABLE flows ADD COLUMN mark TEXT NOT NULL DEFAULT ''");
        db.exec(`UPDATE flows SET mark = ${markOf1} WHERE marked <> 0`);
      }
      if (now === 1 || now === 2) {
        db.exec(
          "DROP INDEX IF EXISTS flows_status; DROP INDEX IF EXISTS flows_peer",
        );
        db.exec(`${KIND_INDEX.replace("INDEX", "INDEX IF NOT EXISTS")}`);
      }
      if (now >= 1 && now < SCHEMA_VERSION) db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
      db.exec("COMMIT");
    } catch (e) {
      try {
        db.exec("ROLLBACK");
      } catch { /* gone already */ }
      throw new FlowStoreError(
        `cannot migrate ${this.path} from store schema ${version} to ${SCHEMA_VERSION}: ${
          (e as Error).message
        }`,
      );
    }
  }

  #stmt(sql: string): StatementSync {
    return (this.#stmts[sql] ??= this.#db.prepare(sql));
  }

  #nameId(name: string): number {
    if (name === "") return 0;
    const known = this.#names.get(name);
    if (known !== undefined) return known;
    const row = this.#stmt(
      "INSERT INTO names (name) VALUES (?) ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
    ).get(name) as { id: number };
    const id = Number(row.id);
    // Hosts are few in practice; a run through millions of random names must not grow this map.
    if (this.#names.size >= 50_000) this.#names.clear();
    this.#names.set(name, id);
    return id;
  }

  #write(flow: Flow, ended: boolean): void {
    this.#writeRow(flowRow(flow, ended, this.#bodyLimit));
  }

  /**
   * Writes a flow made ready by {@link flowRow} (where the flow lives, e.g. on the proxy's thread,
   * while this runs in a worker). Never throws: a failure is counted and reported.
   */
  writeRow(row: FlowRow): void {
    this.#safely("write", () => {
      this.#writeRow(row);
      if (row.ended && !this.#inBatch) this.#retain();
    });
  }

  #writeRow(row: FlowRow): void {
    if (this.#closed) throw new FlowStoreError("the flow store is closed");
    if (this.readOnly) throw new FlowStoreError(`${this.path} is open read-only`);
    const { flow, c, encoded, ended } = row;
    let bytes = ROW_OVERHEAD + encoded.json.length;
    for (const b of encoded.blobs) bytes += b.byteLength;
    const own = !this.#inBatch;
    if (own) this.#db.exec("BEGIN IMMEDIATE");
    try {
      const values = [
        flow.type,
        flow.timestampStart,
        ended ? (flow.timestampEnd ?? flow.timestampStart) : null,
        c.client,
        c.server,
        c.peer,
        c.peerName,
        this.#nameId(c.host),
        this.#nameId(c.hostAlt),
        flow.server.address.port,
        this.#nameId(c.method),
        c.url,
        c.urlAlt,
        c.status,
        c.hasResponse,
        c.websocket,
        flow.error ? 1 : 0,
        flow.error?.message ?? null,
        c.requestSize,
        c.responseSize,
        bytes,
      ];
      let seq: number;
      // A flow this store has not written live is most likely new: inserted without looking it
      // up first (the lookup cost ~10% of a write); an old one is updated as below.
      const inserted = this.#liveIds.has(flow.id) ? undefined : this.#stmt(
        `INSERT INTO flows (id, type, ts_start, ts_end, client, server, peer, peer_name, host_id, host_alt_id,
           port, method_id, url, url_alt, status, has_response, websocket, has_error, error, request_size,
           response_size, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (id) DO NOTHING RETURNING seq`,
      ).get(flow.id, ...values) as { seq: number } | undefined;
      const previous = inserted
        ? undefined
        : this.#stmt("SELECT seq, bytes FROM flows WHERE id = ?").get(flow.id) as
          | { seq: number; bytes: number }
          | undefined;
      if (inserted) {
        seq = Number(inserted.seq);
        this.#stats.flows++;
      } else if (previous) {
        seq = Number(previous.seq);
        this.#stmt(
          `UPDATE flows SET type = ?, ts_start = ?, ts_end = ?, client = ?, server = ?, peer = ?, peer_name = ?,
             host_id = ?, host_alt_id = ?, port = ?, method_id = ?, url = ?, url_alt = ?, status = ?,
             has_response = ?, websocket = ?, has_error = ?, error = ?, request_size = ?, response_size = ?,
             bytes = ? WHERE seq = ?`,
        ).run(...values, seq);
        this.#stmt("DELETE FROM flow_blobs WHERE seq = ?").run(seq);
        this.#stats.bytes -= Number(previous.bytes);
      } else {
        const row = this.#stmt(
          `INSERT INTO flows (id, type, ts_start, ts_end, client, server, peer, peer_name, host_id, host_alt_id,
             port, method_id, url, url_alt, status, has_response, websocket, has_error, error, request_size,
             response_size, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             RETURNING seq`,
        ).get(flow.id, ...values) as { seq: number };
        seq = Number(row.seq);
        this.#stats.flows++;
      }
      this.#stmt("INSERT OR REPLACE INTO flow_data (seq, json) VALUES (?, ?)").run(seq, encoded.json);
      const insertBlob = this.#stmt("INSERT INTO flow_blobs (seq, idx, data) VALUES (?, ?, ?)");
      encoded.blobs.forEach((b, i) => {
        if (b.byteLength > 0) insertBlob.run(seq, i, b);
      });
      if (row.mark !== undefined) {
        this.#stmt("UPDATE flows SET mark = ?, marked = ? WHERE seq = ?").run(
          row.mark,
          row.mark ? 1 : 0,
          seq,
        );
      }
      if (row.comment !== undefined) {
        this.#stmt("UPDATE flows SET comment = ? WHERE seq = ?").run(row.comment, seq);
      }
      if (own) this.#db.exec("COMMIT");
      if (ended) this.#liveIds.delete(flow.id);
      else this.#liveIds.add(flow.id);
      this.#stats.bytes += bytes;
      this.#stats.bodiesCut += encoded.cut;
    } catch (e) {
      if (own) {
        try {
          this.#db.exec("ROLLBACK");
        } catch { /* the transaction may already be gone */ }
        // Counters as they are in the file.
        this.#recount();
      }
      throw e;
    }
  }

  #recount(): void {
    try {
      const totals = this.#db.prepare("SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b FROM flows")
        .get() as {
          n: number;
          b: number;
        };
      this.#stats.flows = Number(totals.n);
      this.#stats.bytes = Number(totals.b);
    } catch { /* keep the estimate */ }
  }

  #safely(what: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.#stats.writeErrors++;
      const error = new FlowStoreError(`flow store ${what} failed: ${(e as Error).message}`);
      try {
        this.#onError?.(error);
      } catch { /* a reporter that fails has nowhere to report it */ }
    }
  }

  /** {@inheritDoc FlowStore.put} */
  put(flow: Flow): void {
    this.#safely("write", () => this.#write(flow, false));
  }

  /** {@inheritDoc FlowStore.end} */
  end(flow: Flow): void {
    this.#safely("write", () => {
      this.#write(flow, true);
      if (!this.#inBatch) this.#retain();
    });
  }

  /**
   * Runs `fn` with its writes in one transaction (much faster for many flows; nothing in it is
   * durable until it returns). Retention runs once at the end.
   */
  batch(fn: () => void): void {
    if (this.#inBatch) {
      fn();
      return;
    }
    this.#db.exec("BEGIN IMMEDIATE");
    this.#inBatch = true;
    try {
      fn();
      this.#db.exec("COMMIT");
    } catch (e) {
      try {
        this.#db.exec("ROLLBACK");
      } catch { /* gone already */ }
      this.#recount();
      throw e;
    } finally {
      this.#inBatch = false;
    }
    this.#safely("retention", () => this.#retain());
  }

  /** Drops the oldest ended flows until the stored bytes are within `maxBytes`. */
  #retain(): void {
    const max = this.#maxBytes;
    if (max === undefined || this.#stats.bytes <= max) return;
    // Drop down to 90% so that retention runs now and then, not on every flow.
    const goal = this.#stats.bytes - Math.floor(max * 0.9);
    let dropped = 0;
    let droppedBytes = 0;
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const pick = this.#stmt(
        "SELECT seq, bytes FROM flows WHERE ts_end IS NOT NULL AND seq > ? ORDER BY seq LIMIT 500",
      );
      let last = 0;
      const seqs: number[] = [];
      outer: for (;;) {
        const rows = pick.all(last) as { seq: number; bytes: number }[];
        if (rows.length === 0) break;
        for (const r of rows) {
          seqs.push(Number(r.seq));
          droppedBytes += Number(r.bytes);
          last = Number(r.seq);
          if (droppedBytes >= goal) break outer;
        }
      }
      for (const seq of seqs) this.#deleteSeq(seq);
      dropped = seqs.length;
      this.#db.exec("COMMIT");
    } catch (e) {
      try {
        this.#db.exec("ROLLBACK");
      } catch { /* gone already */ }
      this.#recount();
      throw e;
    }
    if (dropped === 0) return;
    this.#stats.flows -= dropped;
    this.#stats.bytes -= droppedBytes;
    this.#stats.dropped += dropped;
    this.#stats.droppedBytes += droppedBytes;
    // Give the freed pages back to the file system.
    this.#db.exec("PRAGMA incremental_vacuum");
    try {
      this.#onRetention?.({
        flows: dropped,
        bytes: droppedBytes,
        remainingBytes: this.#stats.bytes,
        maxBytes: max,
      });
    } catch { /* the reporter's failure is not the store's */ }
  }

  #deleteSeq(seq: number): void {
    this.#stmt("DELETE FROM flows WHERE seq = ?").run(seq);
    this.#stmt("DELETE FROM flow_data WHERE seq = ?").run(seq);
    this.#stmt("DELETE FROM flow_blobs WHERE seq = ?").run(seq);
  }

  #load(row: Row, withBodies: boolean): StoredFlow {
    let blobs: Map<number, Uint8Array> | undefined;
    if (withBodies) {
      blobs = new Map();
      for (
        const b of this.#stmt("SELECT idx, data FROM flow_blobs WHERE seq = ?").all(row.seq) as {
          idx: number;
          data: Uint8Array;
        }[]
      ) {
        blobs.set(Number(b.idx), b.data);
      }
    }
    const flow = decodeFlow(row.json, blobs);
    // The columns are what the user set last; the JSON has what the flow carried when written.
    delete flow.marked;
    delete flow.comment;
    if (row.mark) flow.marked = row.mark;
    if (row.comment) flow.comment = row.comment;
    return {
      flow,
      marked: row.mark !== "",
      mark: row.mark,
      comment: row.comment,
      live: row.ts_end === null,
      cursor: String(row.seq),
    };
  }

  /** {@inheritDoc FlowStore.get} */
  get(id: string): Promise<StoredFlow | undefined> {
    return Promise.resolve().then(() => this.getSync(id));
  }

  /** {@link get} without the promise. */
  getSync(id: string): StoredFlow | undefined {
    const row = this.#stmt(
      `SELECT f.seq, f.id, f.mark, f.comment, f.ts_end, d.json FROM flows f JOIN flow_data d ON d.seq = f.seq
       WHERE f.id = ?`,
    ).get(id) as Row | undefined;
    return row ? this.#load(row, true) : undefined;
  }

  /** {@inheritDoc FlowStore.query} */
  query(query: FlowQuery | string = {}): Promise<FlowPage> {
    return Promise.resolve().then(() => this.querySync(query));
  }

  /** {@link query} without the promise. */
  querySync(query: FlowQuery | string = {}): FlowPage {
    if (typeof query === "string") query = { filter: query };
    const filter = typeof query.filter === "string" ? compileFilter(query.filter) : query.filter;
    const limit = clampLimit(query.limit);
    const withBodies = query.withBodies !== false;
    if (query.order) return this.#queryOrdered(query, query.order, filter, limit, withBodies);
    const descending = query.before !== undefined ||
      (query.after === undefined && query.newestFirst === true);
    let from = query.before !== undefined
      ? cursorSeq(query.before, "before")
      : query.after !== undefined
      ? cursorSeq(query.after, "after")
      : descending
      ? Number.MAX_SAFE_INTEGER
      : 0;
    const where: string[] = [descending ? "f.seq < ?" : "f.seq > ?"];
    const baseParams: (string | number)[] = [];
    if (query.since !== undefined) {
      where.push("f.ts_start >= ?");
      baseParams.push(query.since);
    }
    if (query.until !== undefined) {
      where.push("f.ts_start < ?");
      baseParams.push(query.until);
    }
    const sql = filter?.toSql();
    if (sql) {
      where.push(sql.sql);
      baseParams.push(...sql.params);
    }
    const exact = sql === undefined || sql.exact;
    // When the SQL is a superset, read in larger chunks and keep what the predicate accepts.
    const chunk = exact ? limit : Math.max(limit, 500);
    // Not cached: filters are many and each is used for a few pages.
    // The page is chosen on the flows table alone, then joined with the JSON: joined first, SQLite
    // read the JSON of every match before sorting (newest 100 of `~d example & ~m POST` over
    // 1,000,000 flows: 666 ms).
    const order = descending ? "DESC" : "ASC";
    const stmt = this.#db.prepare(
      `SELECT p.seq, p.id, p.mark, p.comment, p.ts_end, d.json FROM
         (SELECT f.seq, f.id, f.mark, f.comment, f.ts_end FROM flows f WHERE ${where.join(" AND ")}
          ORDER BY f.seq ${order} LIMIT ?) AS p
       JOIN flow_data d ON d.seq = p.seq ORDER BY p.seq ${order}`,
    );
    const flows: StoredFlow[] = [];
    for (;;) {
      const rows = stmt.all(from, ...baseParams, chunk) as unknown as Row[];
      for (const row of rows) {
        from = Number(row.seq);
        if (exact) {
          flows.push(this.#load(row, withBodies));
        } else {
          // A predicate that reads no bodies never touches the byte placeholders: a plain parse is
          // enough to test the row, and only matches are decoded. Parsing every row with the
          // reviver made `~hq` over 100,000 flows take 6.1 s instead of 1.3 s (bench/store.ts).
          const candidate = filter!.needsBodies ? this.#load(row, true).flow : JSON.parse(row.json) as Flow;
          const annotations = { marked: row.mark !== "", mark: row.mark, comment: row.comment };
          if (filter!.match(candidate, annotations)) flows.push(this.#load(row, withBodies));
        }
        if (flows.length === limit) return { flows, cursor: String(from) };
      }
      if (rows.length < chunk) return { flows };
    }
  }

  /** {@link querySync} with `order`: a page by position in the sorted list (cursor `@N`). */
  #queryOrdered(
    query: FlowQuery,
    order: NonNullable<FlowQuery["order"]>,
    filter: Filter | undefined,
    limit: number,
    withBodies: boolean,
  ): FlowPage {
    const key = ORDER_SQL[order.by];
    if (key === undefined) throw new RangeError(`cannot sort by '${order.by}'`);
    let offset = 0;
    if (query.after !== undefined) {
      if (!/^@\d{1,15}$/.test(query.after)) throw new RangeError(`bad after cursor '${query.after}'`);
      offset = Number(query.after.slice(1));
    }
    const where: string[] = ["1"];
    const params: (string | number)[] = [];
    if (query.since !== undefined) {
      where.push("f.ts_start >= ?");
      params.push(query.since);
    }
    if (query.until !== undefined) {
      where.push("f.ts_start < ?");
      params.push(query.until);
    }
    const sql = filter?.toSql();
    if (sql) {
      where.push(sql.sql);
      params.push(...sql.params);
    }
    const exact = sql === undefined || sql.exact;
    const chunk = exact ? limit : Math.max(limit, 500);
    const dir = order.descending ? "DESC" : "ASC";
    const stmt = this.#db.prepare(
      `SELECT p.seq, p.id, p.mark, p.comment, p.ts_end, d.json FROM
         (SELECT f.seq, f.id, f.mark, f.comment, f.ts_end, ${key} AS k FROM flows f WHERE ${
        where.join(" AND ")
      }
          ORDER BY k ${dir}, f.seq ${dir} LIMIT ? OFFSET ?) AS p
       JOIN flow_data d ON d.seq = p.seq ORDER BY p.k ${dir}, p.seq ${dir}`,
    );
    const flows: StoredFlow[] = [];
    for (;;) {
      const rows = stmt.all(...params, chunk, offset) as unknown as Row[];
      for (const row of rows) {
        offset++;
        if (exact) flows.push(this.#load(row, withBodies));
        else {
          const candidate = filter!.needsBodies ? this.#load(row, true).flow : JSON.parse(row.json) as Flow;
          const annotations = { marked: row.mark !== "", mark: row.mark, comment: row.comment };
          if (filter!.match(candidate, annotations)) flows.push(this.#load(row, withBodies));
        }
        if (flows.length === limit) return { flows, cursor: `@${offset}` };
      }
      if (rows.length < chunk) return { flows };
    }
  }

  /** {@inheritDoc FlowStore.count} */
  count(filter?: string | Filter): Promise<number> {
    return Promise.resolve().then(() => this.countSync(filter));
  }

  /** {@link count} without the promise. */
  countSync(filter?: string | Filter): number {
    const f = typeof filter === "string" ? compileFilter(filter) : filter;
    if (!f) return Number((this.#stmt("SELECT count(*) AS n FROM flows").get() as { n: number }).n);
    const sql = f.toSql();
    if (sql.exact) {
      return Number(
        (this.#db.prepare(`SELECT count(*) AS n FROM flows WHERE ${sql.sql}`).get(...sql.params) as {
          n: number;
        }).n,
      );
    }
    let n = 0;
    let cursor: string | undefined;
    for (;;) {
      const page = this.querySync({
        filter: f,
        limit: 10_000,
        withBodies: false,
        ...(cursor !== undefined ? { after: cursor } : {}),
      });
      n += page.flows.length;
      if (page.cursor === undefined) return n;
      cursor = page.cursor;
    }
  }

  /** {@inheritDoc FlowStore.delete} */
  delete(ids: string[]): Promise<number> {
    return Promise.resolve().then(() => {
      let n = 0;
      this.#transaction(() => {
        for (const id of ids) {
          const row = this.#stmt("SELECT seq, bytes FROM flows WHERE id = ?").get(id) as
            | { seq: number; bytes: number }
            | undefined;
          if (!row) continue;
          this.#deleteSeq(Number(row.seq));
          this.#stats.flows--;
          this.#stats.bytes -= Number(row.bytes);
          n++;
        }
      });
      return n;
    });
  }

  /** {@inheritDoc FlowStore.clear} */
  clear(): Promise<void> {
    return Promise.resolve().then(() => {
      this.#transaction(() => {
        this.#db.exec("DELETE FROM flows; DELETE FROM flow_data; DELETE FROM flow_blobs;");
      });
      this.#stats.flows = 0;
      this.#stats.bytes = 0;
      this.#db.exec("PRAGMA incremental_vacuum");
    });
  }

  /** {@inheritDoc FlowStore.setMark} */
  setMark(id: string, mark: string | boolean): Promise<boolean> {
    return Promise.resolve().then(() => this.setMarkSync(id, mark));
  }

  /** {@link setMark} without the promise. */
  setMarkSync(id: string, mark: string | boolean): boolean {
    const name = markName(mark);
    return Number(
      this.#stmt("UPDATE flows SET mark = ?, marked = ? WHERE id = ?").run(name, name ? 1 : 0, id).changes,
    ) > 0;
  }

  /** {@inheritDoc FlowStore.setComment} */
  setComment(id: string, comment: string): Promise<boolean> {
    return Promise.resolve().then(() => this.setCommentSync(id, comment));
  }

  /** {@link setComment} without the promise. */
  setCommentSync(id: string, comment: string): boolean {
    return Number(this.#stmt("UPDATE flows SET comment = ? WHERE id = ?").run(comment, id).changes) > 0;
  }

  #transaction(fn: () => void): void {
    if (this.#inBatch) return fn();
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      fn();
      this.#db.exec("COMMIT");
    } catch (e) {
      try {
        this.#db.exec("ROLLBACK");
      } catch { /* gone already */ }
      this.#recount();
      throw e;
    }
  }

  /** {@inheritDoc FlowStore.stats} */
  stats(): FlowStoreStats {
    return { ...this.#stats };
  }

  /** {@inheritDoc FlowStore.close} */
  close(): Promise<void> {
    this.closeSync();
    return Promise.resolve();
  }

  /** {@link close} without the promise. Checkpoints the WAL into the file when writable. */
  closeSync(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stmts = {};
    try {
      if (!this.readOnly) this.#db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch { /* another connection may hold it; the WAL stays valid */ }
    this.#db.close();
  }

  /** The database connection (tests and tools; not part of {@link FlowStore}). */
  get database(): DatabaseSync {
    return this.#db;
  }
}
