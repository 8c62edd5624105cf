/**
 * A tiny element helper for the page: `h("div", { class: "x" }, "text", child)`. Text is always
 * set as text (never parsed as HTML), so recorded traffic cannot inject markup.
 *
 * The page is typed against the few DOM members it uses, declared here, not against the DOM's own
 * types: `lib="dom"` would join the repository's single type-check (`deno check 'src/**\/*.ts'`)
 * and clash with Deno's declarations of the same web APIs (streams) in every other file.
 * @module
 */

/** The members of a DOM element the page uses. */
export interface El {
  textContent: string | null;
  className: string;
  hidden: boolean;
  readonly dataset: Record<string, string | undefined>;
  readonly style: { height: string; transform: string; marginLeft: string; width: string };
  readonly classList: { add(name: string): void; remove(name: string): void };
  readonly children: ArrayLike<El>;
  scrollTop: number;
  readonly clientHeight: number;
  readonly scrollHeight: number;
  setAttribute(name: string, value: string): void;
  addEventListener(type: string, listener: (e: Event) => void): void;
  append(...nodes: (El | string)[]): void;
  focus(): void;
}

/** An `<input>` or `<select>`. */
export interface InputEl extends El {
  value: string;
  select(): void;
}

/** A key press. */
export interface KeyEvent extends Event {
  readonly key: string;
  readonly ctrlKey: boolean;
  readonly metaKey: boolean;
  readonly altKey: boolean;
}

interface PageDocument {
  readonly body: El;
  createElement(tag: string): El;
  getElementById(id: string): El | null;
  addEventListener(type: string, listener: (e: Event) => void): void;
}

interface PageWindow {
  readonly location: { reload(): void; readonly host: string; readonly protocol: string };
  requestAnimationFrame(callback: () => void): number;
  addEventListener(type: string, listener: () => void): void;
}

/** The page's document. */
export const doc: PageDocument = (globalThis as unknown as { document: PageDocument }).document;
/** The page's window. */
export const win: PageWindow = globalThis as unknown as PageWindow;

/** Attributes and event handlers of {@link h}. */
export type Attrs = Record<string, string | number | boolean | undefined | ((e: Event) => void)>;

/** A child of {@link h}: an element, text, or nothing. */
export type Child = El | string | number | null | undefined | false;

/** Makes an element with attributes (`on*` functions become listeners) and children. */
export function h(tag: string, attrs: Attrs = {}, ...children: (Child | Child[])[]): El {
  const el = doc.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(name.slice(2).toLowerCase(), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el: El, children: (Child | Child[])[]): void {
  for (const c of children) {
    if (Array.isArray(c)) append(el, c);
    else if (c === null || c === undefined || c === false) continue;
    else el.append(typeof c === "number" ? String(c) : c);
  }
}

/** Replaces an element's children. */
export function replace(el: El, ...children: (Child | Child[])[]): void {
  el.textContent = "";
  append(el, children);
}

/** Bytes as `1.2 kB`. */
export function formatSize(n: number): string {
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

/** Milliseconds as `12 ms` or `1.25 s`. */
export function formatDuration(ms: number | undefined): string {
  if (ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/** A time of day with milliseconds. */
export function formatTime(ts: number): string {
  const d = new Date(ts);
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** A hex dump of the first bytes (16 a line, offset, hex, ASCII). */
export function hexDump(bytes: Uint8Array, max = 64 * 1024): string {
  const lines: string[] = [];
  const n = Math.min(bytes.byteLength, max);
  for (let off = 0; off < n; off += 16) {
    const row = bytes.subarray(off, Math.min(off + 16, n));
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${off.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${ascii}`);
  }
  if (bytes.byteLength > n) lines.push(`… ${bytes.byteLength - n} more bytes`);
  return lines.join("\n");
}
