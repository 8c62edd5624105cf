/**
 * The page's interception, replay and editing (the API of src/web/intercept_api.ts): the
 * intercept box in the top bar (an expression checked by the server, its error at its column),
 * the count of held flows with "resume all", the editor of a held request or response (method,
 * URL, headers, body; status, reason, headers, body) with Resume and Kill, and, for any recorded
 * HTTP flow, Replay, Duplicate (the same editor, prefilled, whose Send makes a new flow linked to
 * the original) and Copy URL.
 * @module
 */
import type { FlowDetailJson, FlowSummary, InterceptJson, MessageEditsJson } from "../api_types.ts";
import { type El, h, type InputEl, replace } from "./dom.ts";

/** What this module needs from the page. */
export interface InterceptDeps {
  api<T>(path: string, init?: RequestInit): Promise<T>;
  /** Closes the detail pane. */
  closeDetail(): void;
}

let deps: InterceptDeps;
/** Ids of the flows held now, as the summaries tell. */
const held = new Set<string>();

const interceptInput = h("input", {
  id: "intercept",
  type: "text",
  spellcheck: "false",
  autocomplete: "off",
  placeholder: "intercept: ~q & ~d example.com",
  title: "flows matching this expression are held (Enter sets it; empty: off)",
}) as InputEl;
const interceptError = h("div", { id: "intercept-error", class: "filter-error", hidden: true });
const heldLabel = h("span", { id: "held", class: "held", hidden: true });
const resumeAllButton = h("button", {
  id: "resume-all",
  title: "let every held flow go on unchanged",
  hidden: true,
  onclick: () => void resumeAll(),
});
resumeAllButton.textContent = "Resume all";

function post(value?: unknown): RequestInit {
  return {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(value ?? {}),
  };
}

function showHeld(): void {
  heldLabel.hidden = resumeAllButton.hidden = held.size === 0;
  heldLabel.textContent = `${held.size} held`;
}

/** Notes a summary from a page or an update (held or not). */
export function noteSummary(f: FlowSummary): void {
  const before = held.size;
  if (f.intercepted) held.add(f.id);
  else held.delete(f.id);
  if (held.size !== before) showHeld();
}

async function setIntercept(): Promise<void> {
  const expression = interceptInput.value;
  const r = await deps.api<InterceptJson & { ok?: false; error?: string; column?: number }>(
    "/api/intercept",
    {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ filter: expression }),
    },
  );
  if (r.ok === false) {
    interceptInput.classList.add("invalid");
    interceptError.hidden = false;
    const col = Math.max(1, r.column ?? 1);
    replace(
      interceptError,
      h("pre", { class: "caret" }, `${expression}\n${" ".repeat(col - 1)}^`),
      h("span", {}, `${r.error} at column ${col}`),
    );
    interceptError.dataset.column = String(col);
    return;
  }
  interceptInput.classList.remove("invalid");
  interceptError.hidden = true;
  interceptInput.dataset.active = r.filter;
  interceptInput.classList[r.filter ? "add" : "remove"]("active");
}

async function resumeAll(): Promise<void> {
  await deps.api("/api/intercept/resume-all", post());
}

/** The top bar's intercept controls; loads the expression and the held flows. */
export function interceptBar(d: InterceptDeps): El {
  deps = d;
  interceptInput.addEventListener("keydown", (e) => {
    const key = (e as Event & { key: string }).key;
    if (key === "Enter") void setIntercept();
  });
  void d.api<InterceptJson>("/api/intercept").then((r) => {
    if (!r.available) {
      interceptInput.setAttribute("disabled", "");
      interceptInput.setAttribute("placeholder", "intercept: off (start wirescope with --intercept)");
    }
    interceptInput.value = r.filter;
    if (r.filter) interceptInput.classList.add("active");
    for (const f of r.paused) noteSummary(f);
  });
  return h(
    "div",
    { class: "filter-box intercept-box" },
    interceptInput,
    interceptError,
    heldLabel,
    resumeAllButton,
  );
}

// ---- the editor -------------------------------------------------------------------------------

function headersText(headers: [string, string][]): string {
  return headers.map(([n, v]) => `${n}: ${v}`).join("\n");
}

/** "Name: value" lines back to pairs (a line without a colon is an error; blank lines are skipped). */
function parseHeaders(text: string): [string, string][] | string {
  const out: [string, string][] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    // A pseudo-header (":authority: x") has its name's colon first.
    const colon = line.indexOf(":", line.startsWith(":") ? 1 : 0);
    if (colon <= 0) return `not a header line: ${line}`;
    out.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  return out;
}

function field(label: string, input: El): El {
  return h("label", { class: "edit-field" }, h("span", {}, label), input);
}

/**
 * The editor: `held` edits the held request or response of the open flow and resumes it;
 * `send` edits a copy of its recorded request and sends it (client replay).
 */
export function editor(d: FlowDetailJson, mode: "held" | "send"): El {
  const id = d.summary.id;
  const base = `/api/flows/${encodeURIComponent(id)}`;
  const phase = mode === "send" ? "request" : d.summary.intercepted ?? "request";
  const message = phase === "request" ? d.request : d.response;
  const error = h("div", { id: "edit-error", class: "error", hidden: true });
  const result = h("div", { id: "edit-result", class: "edit-result", hidden: true });
  const headers = h("textarea", { id: "edit-headers", rows: 8, spellcheck: "false" }) as InputEl;
  headers.value = headersText(message?.headers ?? []);
  const body = h("textarea", { id: "edit-body", rows: 8, spellcheck: "false" }) as InputEl;
  const editableBody = message !== undefined && (message.body.text !== undefined || message.body.size === 0);
  if (editableBody) body.value = message!.body.text ?? "";
  else {
    body.setAttribute("disabled", "");
    body.value = `(${message?.body.size ?? 0} bytes that are not text${
      message?.body.truncated ? ", kept in part" : ""
    }: sent unchanged)`;
  }
  // The body goes with the edits only when it was changed (an untouched body keeps its framing).
  const original = body.value;
  const bodyEdit = () => (editableBody && body.value !== original ? { body: body.value } : {});
  const inputs: El[] = [];
  let collect: () => MessageEditsJson | string;
  if (phase === "request") {
    const method = h("input", {
      id: "edit-method",
      type: "text",
      value: d.request?.method ?? "GET",
    }) as InputEl;
    const url = h("input", {
      id: "edit-url",
      type: "text",
      spellcheck: "false",
      value: d.request?.url ?? "",
    }) as InputEl;
    inputs.push(h("div", { class: "edit-line" }, field("method", method), field("URL", url)));
    collect = () => {
      const hs = parseHeaders(headers.value);
      if (typeof hs === "string") return hs;
      return {
        method: method.value.trim(),
        url: url.value.trim(),
        headers: hs,
        ...bodyEdit(),
      };
    };
  } else {
    const status = h("input", {
      id: "edit-status",
      type: "number",
      value: d.response?.status ?? 200,
    }) as InputEl;
    const reason = h("input", {
      id: "edit-reason",
      type: "text",
      value: d.response?.reason ?? "",
    }) as InputEl;
    inputs.push(h("div", { class: "edit-line" }, field("status", status), field("reason", reason)));
    collect = () => {
      const hs = parseHeaders(headers.value);
      if (typeof hs === "string") return hs;
      const n = Number(status.value);
      if (!Number.isInteger(n)) return `not a status: ${status.value}`;
      // An unchanged reason is left out: a new status then gets its standard phrase.
      const reasonEdit = reason.value !== (d.response?.reason ?? "") ? { reason: reason.value } : {};
      return { status: n, ...reasonEdit, headers: hs, ...bodyEdit() };
    };
  }
  const fail = (text: string) => {
    error.hidden = false;
    error.textContent = text;
  };
  const go = async (action: "resume" | "kill" | "send") => {
    error.hidden = true;
    const edits = action === "kill" ? {} : collect();
    if (typeof edits === "string") return fail(edits);
    try {
      const r = await deps.api<{ error?: string; flow?: FlowSummary }>(`${base}/${action}`, post(edits));
      if (r.error) return fail(r.error);
      if (action === "send" && r.flow) {
        result.hidden = false;
        result.dataset.flowId = r.flow.id;
        result.textContent = `sent: ${r.flow.error ? `error: ${r.flow.error}` : r.flow.status} (new flow ${
          r.flow.id.slice(0, 8)
        }, a copy of ${id.slice(0, 8)})`;
        return;
      }
      // Done with: the editor says so (and no longer counts as one), the pane closes.
      root.className = "editor-done";
      root.setAttribute("id", "editor-done");
      replace(root, action === "kill" ? "killed" : "resumed");
      deps.closeDetail();
    } catch (e) {
      fail((e as Error).message);
    }
  };
  const title = mode === "send"
    ? "Edit a copy of the request, then send it"
    : `Held before the ${phase === "request" ? "request goes to the server" : "response goes to the client"}`;
  const buttons = mode === "send"
    ? [h("button", { id: "send", class: "primary", onclick: () => void go("send") }, "Send")]
    : [
      h("button", { id: "resume", class: "primary", onclick: () => void go("resume") }, "Resume"),
      h("button", { id: "kill", onclick: () => void go("kill") }, "Kill"),
    ];
  const root = h(
    "div",
    { id: "editor", class: `editor editor-${mode} editor-${phase}` },
    h("div", { class: "editor-title" }, title),
    ...inputs,
    field("headers", headers),
    field("body", body),
    h("div", { class: "edit-buttons" }, ...buttons),
    error,
    result,
  );
  return root;
}

// ---- actions on recorded flows ------------------------------------------------------------------

/**
 * Replay, Duplicate (opens the editor in `into`) and Copy URL for an HTTP flow; nothing for other
 * flows.
 */
export function flowActions(d: FlowDetailJson, into: (editor: El) => void): El | null {
  if (!d.request) return null;
  const base = `/api/flows/${encodeURIComponent(d.summary.id)}`;
  const result = h("span", { id: "action-result", class: "action-result" });
  const url = d.request.url;
  const replay = async () => {
    result.textContent = "replaying…";
    try {
      const r = await deps.api<{ error?: string; flow?: FlowSummary }>(`${base}/replay`, post());
      result.textContent = r.error
        ? `replay failed: ${r.error}`
        : `replayed: ${r.flow!.error ?? r.flow!.status}`;
      if (r.flow) result.dataset.flowId = r.flow.id;
    } catch (e) {
      result.textContent = `replay failed: ${(e as Error).message}`;
    }
  };
  const copy = async () => {
    try {
      await (globalThis as unknown as { navigator: { clipboard: { writeText(t: string): Promise<void> } } })
        .navigator.clipboard.writeText(url);
      result.textContent = "URL copied";
    } catch (e) {
      result.textContent = `copy failed: ${(e as Error).message}`;
    }
  };
  return h(
    "span",
    { class: "replay-actions" },
    h(
      "button",
      { id: "replay", title: "send the recorded request again", onclick: () => void replay() },
      "Replay",
    ),
    h("button", {
      id: "duplicate",
      title: "edit a copy of the request and send it",
      onclick: () => into(editor(d, "send")),
    }, "Duplicate"),
    h("button", { id: "copy-url", title: "copy the URL", onclick: () => void copy() }, "Copy URL"),
    result,
  );
}

/** A live summary replaces the one the list holds for the same flow (fields it lacks are gone). */
export function refresh(existing: FlowSummary, update: FlowSummary): void {
  const cursor = existing.cursor;
  for (const k of Object.keys(existing)) delete (existing as unknown as Record<string, unknown>)[k];
  Object.assign(existing, update);
  if (cursor !== undefined && existing.cursor === undefined) existing.cursor = cursor;
}
