/**
 * The web UI's page: a virtual flow list fed by pages from the server and live updates over a
 * WebSocket, a filter box that checks expressions on the server and shows errors at their column,
 * keyboard navigation (j/k, Enter, `/`, Escape) and a detail pane with content views by type.
 *
 * The list keeps only summaries (about 200 bytes each) and builds DOM rows only for what is on
 * screen (a fixed pool re-filled on scroll), so 100,000 flows cost the browser a few megabytes
 * and scrolling stays smooth. Pages load in order as the view needs them.
 * @module
 */
import type {
  FilterCheckJson,
  FlowDetailJson,
  FlowPageJson,
  FlowSummary,
  UpdatesMessage,
} from "../api_types.ts";
import {
  doc,
  type El,
  formatDuration,
  formatSize,
  formatTime,
  h,
  type InputEl,
  type KeyEvent,
  replace,
  win,
} from "./dom.ts";
import { bodyView, certificateView } from "./content_views.ts";
import { wireGuardPage } from "./wireguard_page.ts";
import { editor, flowActions, interceptBar, noteSummary, refresh } from "./intercept.ts";
import { sortableHeader, sortParams } from "./sorting.ts";

const ROW_HEIGHT = 24;
const FIRST_PAGE = 200;
const PAGE = 5000;
const CSRF_HEADER = "X-Wirescope-Csrf";

const COLUMNS: { key: string; title: string; cell: (f: FlowSummary) => string }[] = [
  { key: "time", title: "Time", cell: (f) => formatTime(f.ts) },
  { key: "client", title: "Client", cell: (f) => (f.peer ? `${f.peer.slice(0, 8)}… ${f.client}` : f.client) },
  { key: "method", title: "Method", cell: (f) => f.method },
  { key: "host", title: "Host", cell: (f) => f.host },
  { key: "path", title: "Path", cell: (f) => f.path },
  { key: "status", title: "Status", cell: (f) => (f.error ? "error" : f.status ? String(f.status) : "") },
  { key: "type", title: "Type", cell: (f) => f.type },
  { key: "req", title: "Req", cell: (f) => formatSize(f.requestSize) },
  { key: "res", title: "Resp", cell: (f) => formatSize(f.responseSize) },
  { key: "dur", title: "Duration", cell: (f) => formatDuration(f.duration) },
];

/** What the list holds for the current filter. */
/**
 * What the list holds for the current filter. Pages load from the start (`head`) and, when the
 * view jumps far ahead and the total is known, from the end back (`tail`), so the end of 100,000
 * flows shows at once; `rows` is sparse between the two until they meet.
 */
interface ListState {
  filter: string;
  highlight: string;
  /** rows[0, head) and rows[tail, rows.length) are loaded. */
  rows: (FlowSummary | undefined)[];
  ids: Set<string>;
  /** Flows matching in the store (grows with live updates). */
  total: number;
  /** Whether the server counted them (it does when SQL answers the filter alone). */
  counted: boolean;
  /** Where the next page from the start begins; null when every flow is loaded. */
  cursor: string | null | undefined;
  /** Rows loaded from the start. */
  head: number;
  /** The first row loaded from the end (meaningful once `tailCursor` is not undefined). */
  tail: number;
  /** Where the next page back from the end begins; undefined before the first, null when done. */
  tailCursor: string | null | undefined;
  loading: boolean;
  /** Bumped on every reload: answers for an older list are dropped. */
  generation: number;
}

let csrf = "";
const state: ListState = {
  filter: "",
  highlight: "",
  rows: [],
  ids: new Set(),
  total: 0,
  counted: false,
  cursor: undefined,
  head: 0,
  tail: 0,
  tailCursor: undefined,
  loading: false,
  generation: 0,
};

/** Rows loaded. */
function loadedCount(): number {
  if (state.cursor === null) return state.rows.length;
  return state.head + (state.tailCursor === undefined ? 0 : state.rows.length - state.tail);
}

/**
 * The start and end blocks met: one dense list of the head, `between` (flows of the last page
 * that were in neither, oldest first) and the tail.
 */
function joinBlocks(between: FlowSummary[]): void {
  const middle = between.filter((f) => !state.ids.has(f.id));
  for (const f of middle) state.ids.add(f.id);
  const tail = state.tailCursor === undefined ? [] : state.rows.slice(state.tail);
  state.rows = [...state.rows.slice(0, state.head), ...middle, ...tail];
  state.head = state.tail = state.total = state.rows.length;
  state.cursor = null;
  state.tailCursor = null;
}
let selected = -1;
let openId: string | null = null;
let follow = true;
let socket: WebSocket | null = null;

const filterInput = h("input", {
  id: "filter",
  type: "text",
  spellcheck: "false",
  autocomplete: "off",
  placeholder: "filter: ~d example.com & ~m POST   (press / to focus)",
}) as InputEl;
const filterError = h("div", { id: "filter-error", class: "filter-error", hidden: true });
const highlightInput = h("input", {
  id: "highlight",
  type: "text",
  spellcheck: "false",
  autocomplete: "off",
  placeholder: "highlight: ~c 500",
}) as InputEl;
const highlightError = h("div", { id: "highlight-error", class: "filter-error", hidden: true });
const countLabel = h("span", { id: "count", class: "count" });
const statusLabel = h("span", { id: "conn", class: "conn" }, "connecting…");
const header = sortableHeader(COLUMNS, () => reload());
/** Summaries of flows listed while in progress (held ones among them): live updates change them in place. */
const liveRows = new Map<string, FlowSummary>();
const spacer = h("div", { class: "spacer" });
const list = h("div", { id: "list", class: "list", tabindex: 0 }, spacer);
const detail = h("div", { id: "detail", class: "detail", hidden: true });
const pool: El[] = [];

function rowElement(): El {
  const row = h("div", { class: "row" }, COLUMNS.map((c) => h("div", { class: `c-${c.key}` })));
  row.addEventListener("click", () => {
    const index = Number(row.dataset.index);
    if (!Number.isNaN(index)) {
      select(index);
      void openFlow(index);
    }
  });
  spacer.append(row);
  return row;
}

let renderQueued = false;
let lastRender = 0;
let liveTimer: ReturnType<typeof setTimeout> | undefined;
/** Set when live flows arrived while the view followed the end: the next render scrolls there. */
let followPending = false;
/** Set by a render that scrolled: the scroll event it causes needs no second render. */
let scrolledByRender = false;
const LIVE_REPAINT = 300;
function scheduleRender(): void {
  if (renderQueued) return;
  renderQueued = true;
  win.requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function render(): void {
  lastRender = performance.now();
  const total = Math.max(state.total, state.rows.length);
  spacer.style.height = `${total * ROW_HEIGHT}px`;
  if (followPending) {
    followPending = false;
    const bottom = Math.max(0, total * ROW_HEIGHT - list.clientHeight);
    if (list.scrollTop !== bottom) {
      list.scrollTop = bottom;
      scrolledByRender = true;
    }
  }
  const first = Math.max(0, Math.floor(list.scrollTop / ROW_HEIGHT) - 2);
  const visible = Math.ceil(list.clientHeight / ROW_HEIGHT) + 5;
  const last = Math.min(total, first + visible);
  while (pool.length < visible) pool.push(rowElement());
  for (let k = 0; k < pool.length; k++) {
    const row = pool[k]!;
    const index = first + k;
    if (index >= last) {
      row.hidden = true;
      continue;
    }
    row.hidden = false;
    row.style.transform = `translateY(${index * ROW_HEIGHT}px)`;
    row.dataset.index = String(index);
    const f = state.rows[index];
    const cells = row.children;
    row.className = "row" + (index === selected ? " selected" : "") + (f?.highlight ? " highlight" : "") +
      (f?.marked ? " marked" : "") +
      (f?.error ? " failed" : f && f.status >= 400 ? " bad" : "") +
      (f?.intercepted ? " intercepted" : f?.live ? " live" : "") + (f?.replayOf ? " replayed" : "");
    if (f) row.dataset.id = f.id;
    else delete row.dataset.id;
    for (let c = 0; c < COLUMNS.length; c++) {
      (cells[c] as El).textContent = f ? COLUMNS[c]!.cell(f) : c === 0 ? "…" : "";
    }
  }
  // Without a count from the server (a filter SQL cannot answer alone), the list grows as pages come.
  const loaded = loadedCount();
  const more = state.cursor !== null && !state.counted ? "+" : "";
  countLabel.textContent = `${loaded.toLocaleString("en")} of ${total.toLocaleString("en")}${more} flows`;
  // Figures for bench/web_ui.ts: when the list first showed flows, and how long a filter took.
  if (loaded > 0 || state.cursor === null) {
    const d = doc.body.dataset;
    d.firstRows ??= String(performance.now());
    if (filterStarted !== undefined) {
      d.filterMs = String(performance.now() - filterStarted);
      filterStarted = undefined;
    }
  }
  // A gap within a screen of the view: pages from the start when it is near, else (a jump far
  // ahead, with a known total) from the end back.
  if (state.cursor !== null) {
    const gapEnd = state.tailCursor === undefined ? total : state.tail;
    if (last + visible > state.head && first < gapEnd) {
      if (first - state.head > PAGE && state.counted && state.tailCursor !== null) {
        void loadTail();
      } else void loadMore();
    }
  }
}

async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers = new Headers(init.headers);
  if (init.method && init.method !== "GET") headers.set(CSRF_HEADER, csrf);
  const res = await fetch(path, { ...init, headers, credentials: "same-origin" });
  if (res.status === 401) {
    win.location.reload();
    throw new Error("logged out");
  }
  const body = await res.json() as T & { error?: string };
  if (!res.ok && (body as { ok?: boolean }).ok === undefined) throw new Error(body.error ?? res.statusText);
  return body;
}

async function loadMore(): Promise<void> {
  if (state.loading || state.cursor === null) return;
  state.loading = true;
  const generation = state.generation;
  const first = state.cursor === undefined;
  const params = new URLSearchParams({
    filter: state.filter,
    highlight: state.highlight,
    limit: String(first ? FIRST_PAGE : PAGE),
  });
  if (state.cursor) params.set("cursor", state.cursor);
  sortParams(params);
  if (first) params.set("count", "1");
  try {
    const page = await api<FlowPageJson>(`/api/flows?${params}`);
    if (generation !== state.generation) return;
    if (page.total !== undefined) {
      state.total = page.total;
      state.counted = true;
    }
    const tailed = state.tailCursor !== undefined;
    let met = false;
    let k = 0;
    for (; k < page.flows.length; k++) {
      const f = page.flows[k]!;
      // Reaching a flow of the end block (or its first row) joins the two.
      if (tailed && (state.ids.has(f.id) || state.head >= state.tail)) {
        met = true;
        break;
      }
      if (state.ids.has(f.id)) continue;
      state.ids.add(f.id);
      if (f.live) liveRows.set(f.id, f);
      noteSummary(f);
      state.rows[state.head++] = f;
    }
    if (met || page.cursor === undefined) joinBlocks(page.flows.slice(k));
    else state.cursor = page.cursor;
    doc.body.dataset.loaded = String(loadedCount());
    if (first) doc.body.dataset.firstPage = String(performance.now());
  } catch (e) {
    statusLabel.textContent = `error: ${(e as Error).message}`;
  } finally {
    if (generation === state.generation) state.loading = false;
  }
  if (generation === state.generation) scheduleRender();
}

/** One page back from the end of the list (newest first), placed below the rows already there. */
async function loadTail(): Promise<void> {
  if (state.loading || state.tailCursor === null || state.cursor === null) return;
  state.loading = true;
  const generation = state.generation;
  const first = state.tailCursor === undefined;
  const params = new URLSearchParams({
    filter: state.filter,
    highlight: state.highlight,
    // The first page from the end is small, like the first from the start: it is what the jump shows.
    limit: String(first ? FIRST_PAGE : PAGE),
  });
  if (first) {
    params.set("from", "end");
    params.set("count", "1");
  } else params.set("before", state.tailCursor!);
  sortParams(params);
  try {
    const page = await api<FlowPageJson>(`/api/flows?${params}`);
    if (generation !== state.generation) return;
    if (first) {
      // The end block starts at the end of the list as counted now.
      state.total = Math.max(page.total ?? state.total, state.head);
      state.tail = state.total;
      state.rows.length = state.total;
      state.tailCursor = null;
    }
    let met = false;
    let k = 0;
    for (; k < page.flows.length; k++) {
      const f = page.flows[k]!;
      if (state.ids.has(f.id) || state.tail <= state.head) {
        met = true;
        break;
      }
      state.ids.add(f.id);
      if (f.live) liveRows.set(f.id, f);
      state.rows[--state.tail] = f;
    }
    if (met || page.cursor === undefined) joinBlocks(page.flows.slice(k).reverse());
    else state.tailCursor = page.cursor;
    doc.body.dataset.loaded = String(loadedCount());
  } catch (e) {
    statusLabel.textContent = `error: ${(e as Error).message}`;
  } finally {
    if (generation === state.generation) state.loading = false;
  }
  if (generation === state.generation) scheduleRender();
}

function reload(): void {
  state.generation++;
  state.rows = [];
  state.ids = new Set();
  liveRows.clear();
  state.total = 0;
  state.counted = false;
  state.head = 0;
  state.tail = 0;
  state.tailCursor = undefined;
  state.cursor = undefined;
  state.loading = false;
  selected = -1;
  list.scrollTop = 0;
  doc.body.dataset.loaded = "0";
  delete doc.body.dataset.firstPage;
  scheduleRender();
  void loadMore();
}

function onUpdates(message: UpdatesMessage): void {
  if (message.gap) {
    reload();
    return;
  }
  for (const f of message.flows) {
    noteSummary(f);
    const known = liveRows.get(f.id);
    if (known) {
      refresh(known, f);
      if (!f.live) liveRows.delete(f.id);
      if (openId === f.id && f.intercepted && !doc.getElementById("editor")) {
        void openFlow(state.rows.indexOf(known));
      }
      continue;
    }
    if (state.ids.has(f.id)) continue;
    if (f.live) liveRows.set(f.id, f);
    state.total++;
    // With the list's end loaded, a new flow goes after it; else it comes with the pages to follow.
    if (state.cursor === null || state.tailCursor !== undefined) {
      state.ids.add(f.id);
      state.rows.push(f);
    }
  }
  doc.body.dataset.loaded = String(loadedCount());
  if (follow && selected < 0) followPending = true;
  // Live updates repaint the list at most every LIVE_REPAINT ms: with a busy proxy a repaint costs
  // the browser more than the few hundred summaries it shows (bench/web_ui_load.ts).
  liveTimer ??= setTimeout(() => {
    liveTimer = undefined;
    scheduleRender();
  }, Math.max(0, lastRender + LIVE_REPAINT - performance.now()));
}

function connect(): void {
  const ws = new WebSocket(
    `${win.location.protocol === "https:" ? "wss" : "ws"}://${win.location.host}/api/updates`,
  );
  socket = ws;
  ws.onopen = () => {
    statusLabel.textContent = "live";
    statusLabel.className = "conn live";
    ws.send(JSON.stringify({ filter: state.filter, highlight: state.highlight }));
  };
  ws.onmessage = (e) => onUpdates(JSON.parse(String(e.data)) as UpdatesMessage);
  ws.onclose = () => {
    statusLabel.textContent = "disconnected (retrying)";
    statusLabel.className = "conn";
    if (socket === ws) setTimeout(connect, 2000);
  };
}

let checkTimer: ReturnType<typeof setTimeout> | undefined;
let filterStarted: number | undefined;
let checkSeq = 0;

/** Asks the server whether an expression parses; shows its error under the box when not. */
async function check(input: InputEl, errorBox: El): Promise<boolean | undefined> {
  const expression = input.value;
  const seq = ++checkSeq;
  const result = await api<FilterCheckJson>("/api/filter/check", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ filter: expression }),
  });
  if (seq !== checkSeq) return undefined;
  if (!result.ok) {
    input.classList.add("invalid");
    errorBox.hidden = false;
    const col = Math.max(1, result.column);
    replace(
      errorBox,
      h("pre", { class: "caret" }, `${expression}\n${" ".repeat(col - 1)}^`),
      h("span", {}, `${result.error} at column ${col}`),
    );
    errorBox.dataset.column = String(col);
    return false;
  }
  input.classList.remove("invalid");
  errorBox.hidden = true;
  return true;
}

async function checkAndApply(): Promise<void> {
  const started = performance.now();
  const filterOk = await check(filterInput, filterError);
  const highlightOk = filterOk && await check(highlightInput, highlightError);
  if (!filterOk || !highlightOk) return;
  const filter = filterInput.value, highlight = highlightInput.value;
  if (filter === state.filter && highlight === state.highlight) return;
  state.filter = filter;
  state.highlight = highlight;
  filterStarted = started;
  delete doc.body.dataset.filterMs;
  socket?.readyState === WebSocket.OPEN && socket.send(JSON.stringify({ filter, highlight }));
  reload();
}

function select(index: number): void {
  const total = Math.max(state.total, state.rows.length);
  if (total === 0) return;
  selected = Math.max(0, Math.min(total - 1, index));
  const top = selected * ROW_HEIGHT;
  if (top < list.scrollTop) list.scrollTop = top;
  else if (top + ROW_HEIGHT > list.scrollTop + list.clientHeight) {
    list.scrollTop = top + ROW_HEIGHT - list.clientHeight;
  }
  scheduleRender();
}

function headersTable(headers: [string, string][]): El {
  return h(
    "table",
    { class: "headers" },
    headers.map(([n, v]) => h("tr", {}, h("th", {}, n), h("td", {}, v))),
  );
}

function section(
  title: string,
  open: boolean,
  ...children: (El | string | null | undefined)[]
): El {
  return h(
    "details",
    { open, class: `section s-${title.toLowerCase()}` },
    h("summary", {}, title),
    ...children,
  );
}

function kv(rows: [string, string | undefined][]): El {
  return h(
    "table",
    { class: "kv" },
    rows.filter(([, v]) => v !== undefined && v !== "").map(([k, v]) =>
      h("tr", {}, h("th", {}, k), h("td", {}, v!))
    ),
  );
}

/** A bar from `left`% to `left + width`% (set through the CSSOM: the page's CSP allows no style attributes). */
function bar(left: number, width: number): El {
  const el = h("div", { class: "bar" });
  el.style.marginLeft = `${left.toFixed(2)}%`;
  el.style.width = `${width.toFixed(2)}%`;
  return el;
}

/** The phases of a flow as a waterfall: one bar each, placed on the flow's own time line. */
function timingView(d: FlowDetailJson): El {
  const t = d.timing;
  const end = Math.max(t.end ?? t.start, t.responseEnd ?? t.start, t.requestEnd ?? t.start, t.start + 1);
  const span = end - t.start;
  const phases: [string, number | undefined, number | undefined][] = [
    ["connect", t.start, t.serverConnected],
    ["TLS", t.serverConnected, t.tlsSetup],
    ["request", t.requestStart, t.requestEnd],
    ["waiting", t.requestEnd, t.responseStart],
    ["response", t.responseStart, t.responseEnd],
  ];
  const rows = phases.filter(([, from, to]) => from !== undefined && to !== undefined).map(
    ([name, from, to]) => {
      const left = ((from! - t.start) / span) * 100;
      const width = Math.max(0.5, ((to! - from!) / span) * 100);
      return h(
        "tr",
        { class: `phase p-${name.toLowerCase()}` },
        h("th", {}, name),
        h(
          "td",
          { class: "track" },
          bar(left, width),
        ),
        h("td", { class: "ms" }, `${to! - from!} ms`),
      );
    },
  );
  return h(
    "div",
    { class: "timing" },
    h("div", { class: "line" }, `started ${new Date(t.start).toISOString()}, ${end - t.start} ms in all`),
    h("table", { class: "waterfall" }, rows),
  );
}

async function openFlow(index: number): Promise<void> {
  const f = state.rows[index];
  if (!f) return;
  openId = f.id;
  const d = await api<FlowDetailJson>(`/api/flows/${encodeURIComponent(f.id)}`);
  if (openId !== f.id) return;
  const c = d.connection;
  detail.hidden = false;
  doc.body.classList.add("with-detail");
  replace(
    detail,
    h(
      "div",
      { class: "detail-title" },
      h("button", { class: "close", title: "close (Escape)", onclick: closeDetail }, "×"),
      h("b", {}, d.request ? `${d.request.method} ` : `${d.summary.type} `),
      d.request?.url ?? `${d.summary.host}${d.summary.path}`,
    ),
    actionBar(f, d),
    h("div", { id: "editor-slot" }, d.summary.intercepted ? editor(d, "held") : null),
    d.error ? h("div", { class: "error" }, d.error) : null,
    d.request
      ? section(
        "Request",
        true,
        h("div", { class: "line" }, `${d.request.method} ${d.request.url} ${d.request.httpVersion}`),
        headersTable(d.request.headers),
        d.request.body.size > 0 ? bodyView(d.request.body) : null,
      )
      : null,
    d.response
      ? section(
        "Response",
        true,
        h("div", { class: "line" }, `${d.response.httpVersion} ${d.response.status} ${d.response.reason}`),
        headersTable(d.response.headers),
        bodyView(d.response.body),
      )
      : null,
    d.dns
      ? section("DNS", true, kv([["question", d.dns.question], ["answers", d.dns.answers.join("\n")]]))
      : null,
    d.messages
      ? section(
        "Messages",
        true,
        h(
          "table",
          { class: "messages" },
          d.messages.map((m) =>
            h(
              "tr",
              {},
              h("td", {}, m.fromClient ? "→" : "←"),
              h("td", {}, m.kind),
              h("td", {}, formatSize(m.size)),
              h("td", {}, h("code", {}, m.text ?? m.base64 ?? "")),
            )
          ),
        ),
      )
      : null,
    section(
      "Connection",
      true,
      kv([
        ["client", c.client],
        ["mode", c.mode],
        ["peer", c.peer],
        ["peer endpoint", c.peerEndpoint],
        ["server", c.server],
        ["server name", c.serverHostname],
        ["server address", c.serverPeerAddress],
        ["TLS version (client)", c.tls?.clientVersion],
        ["TLS version (server)", c.tls?.serverVersion],
        ["cipher (server)", c.tls?.serverCipher],
        ["SNI", c.tls?.sni],
        ["ALPN", c.tls?.alpn],
        ["ALPN offered", c.tls?.alpnOffered.join(", ")],
        ["passthrough", c.tls?.passthrough ? c.tls.passthroughReason ?? "yes" : undefined],
      ]),
      c.tls?.serverCertificate ? certificateView(c.tls.serverCertificate) : null,
    ),
    section("Timing", true, timingView(d)),
  );
}

/** Mark, comment, export and delete for the open flow. */
function actionBar(f: FlowSummary, d: FlowDetailJson): El {
  const base = `/api/flows/${encodeURIComponent(f.id)}`;
  const comment = h("input", {
    id: "comment",
    type: "text",
    placeholder: "comment (Enter saves)",
    value: d.comment,
  }) as InputEl;
  comment.addEventListener("keydown", (e) => {
    if ((e as KeyEvent).key !== "Enter") return;
    void api(`${base}/comment`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ comment: comment.value }),
    }).then(() => comment.classList.add("saved"));
  });
  const exports = d.request
    ? ["curl", "raw", "har"].map((format) =>
      h("a", { class: "export", href: `${base}/export?format=${format}`, download: "" }, format)
    )
    : [];
  return h(
    "div",
    { class: "actions", id: "actions" },
    h(
      "button",
      { id: "mark", title: "mark (m)", onclick: () => void toggleMark(f) },
      f.marked ? "Unmark" : "Mark",
    ),
    h("button", { id: "delete", title: "delete (d)", onclick: () => void deleteFlow(f) }, "Delete"),
    exports.length ? h("span", { class: "exports" }, "export: ", exports) : null,
    flowActions(d, (e) => {
      const slot = doc.getElementById("editor-slot");
      if (slot) replace(slot, e);
    }),
    comment,
  );
}

async function toggleMark(f: FlowSummary): Promise<void> {
  const marked = !f.marked;
  await api(`/api/flows/${encodeURIComponent(f.id)}/mark`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ mark: marked }),
  });
  f.marked = marked;
  const button = openId === f.id ? doc.getElementById("mark") : null;
  if (button) button.textContent = marked ? "Unmark" : "Mark";
  scheduleRender();
}

async function deleteFlow(f: FlowSummary): Promise<void> {
  await api(`/api/flows/${encodeURIComponent(f.id)}`, { method: "DELETE" });
  const index = state.rows.indexOf(f);
  if (index >= 0) {
    state.rows.splice(index, 1);
    if (index < state.head) state.head--;
    if (index < state.tail) state.tail--;
  }
  state.ids.delete(f.id);
  state.total = Math.max(0, state.total - 1);
  doc.body.dataset.loaded = String(loadedCount());
  if (openId === f.id) closeDetail();
  if (selected >= state.rows.length) selected = state.rows.length - 1;
  scheduleRender();
}

function closeDetail(): void {
  openId = null;
  detail.hidden = true;
  doc.body.classList.remove("with-detail");
  list.focus();
}

function onKey(event: Event): void {
  const e = event as KeyEvent;
  const target = e.target as unknown;
  if (target === filterInput || target === highlightInput) {
    if (e.key === "Escape" || e.key === "Enter") {
      clearTimeout(checkTimer);
      void checkAndApply();
      if (e.key === "Escape" || e.key === "Enter") list.focus();
    }
    return;
  }
  // Typing in any other box (the comment) is not a shortcut.
  if (["INPUT", "TEXTAREA", "SELECT"].includes((target as { tagName?: string } | null)?.tagName ?? "")) {
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  switch (e.key) {
    case "/":
      e.preventDefault();
      filterInput.focus();
      filterInput.select();
      break;
    case "j":
    case "ArrowDown":
      e.preventDefault();
      select(selected + 1);
      break;
    case "k":
    case "ArrowUp":
      e.preventDefault();
      select(selected - 1);
      break;
    case "Enter":
      if (selected >= 0) void openFlow(selected);
      break;
    case "m":
      if (state.rows[selected]) void toggleMark(state.rows[selected]!);
      break;
    case "d":
      if (state.rows[selected]) void deleteFlow(state.rows[selected]!);
      break;
    case "Escape":
      if (openId !== null) closeDetail();
      else {
        selected = -1;
        scheduleRender();
      }
      break;
  }
}

/** The WireGuard page, in place of the list while shown (the button, or `#wireguard` in the URL). */
const wg = wireGuardPage(api);
const mainPane = h("div", { class: "main" }, h("div", { class: "list-pane" }, header, list), detail);
const wgButton = h(
  "button",
  { id: "nav-wireguard", class: "nav", onclick: () => toggleWireGuard() },
  "WireGuard",
);
function toggleWireGuard(): void {
  const showing = mainPane.hidden;
  mainPane.hidden = !showing;
  if (showing) wg.hide();
  else wg.show();
  if (showing) wgButton.classList.remove("active");
  else wgButton.classList.add("active");
}

async function main(): Promise<void> {
  const app = h(
    "div",
    { class: "app" },
    h(
      "div",
      { class: "top" },
      h("span", { class: "brand" }, "wirescope"),
      h("div", { class: "filter-box" }, filterInput, filterError),
      h("div", { class: "filter-box highlight-box" }, highlightInput, highlightError),
      interceptBar({ api, closeDetail }),
      countLabel,
      statusLabel,
      wgButton,
    ),
    mainPane,
    wg.element,
  );
  doc.body.append(app);
  if ((win as unknown as { location: { hash: string } }).location.hash === "#wireguard") toggleWireGuard();
  for (const input of [filterInput, highlightInput]) {
    input.addEventListener("input", () => {
      clearTimeout(checkTimer);
      checkTimer = setTimeout(() => void checkAndApply(), 200);
    });
  }
  list.addEventListener("scroll", () => {
    follow = list.scrollTop + list.clientHeight >= list.scrollHeight - ROW_HEIGHT * 2;
    if (scrolledByRender) scrolledByRender = false;
    else scheduleRender();
  });
  win.addEventListener("resize", scheduleRender);
  doc.addEventListener("keydown", onKey);
  csrf = (await api<{ csrf: string }>("/api/session")).csrf;
  connect();
  reload();
  list.focus();
}

void main();
