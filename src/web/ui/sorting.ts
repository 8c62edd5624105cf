/**
 * Sorting the flow list by a column: a click on a sortable column's title sorts by it (again:
 * the other way; a third time: back to the order flows came in). The server sorts
 * (`/api/flows?sort=KEY&desc=1`), so sorting 100,000 flows costs the page nothing.
 * @module
 */
import { type El, h } from "./dom.ts";

/** The list's column keys that sort, and the server's name for each. */
const SORTABLE: Record<string, string> = {
  time: "time",
  method: "method",
  host: "host",
  status: "status",
  req: "requestSize",
  res: "size",
  dur: "duration",
};

/** The sort in force: `by` is the server's key ("" for the order flows came in). */
export const sorting = { by: "", column: "", descending: false };

/** Adds the sort to a page request's parameters. */
export function sortParams(params: URLSearchParams): void {
  if (!sorting.by) return;
  params.set("sort", sorting.by);
  if (sorting.descending) params.set("desc", "1");
}

/** The list's header: column titles, the sortable ones clickable; `changed` reloads the list. */
export function sortableHeader(columns: { key: string; title: string }[], changed: () => void): El {
  const cells = columns.map((c) => {
    const cell = h("div", { class: `c-${c.key}`, "data-key": c.key }, c.title);
    if (SORTABLE[c.key] === undefined) return cell;
    cell.classList.add("sortable");
    cell.setAttribute("title", `sort by ${c.title.toLowerCase()}`);
    cell.addEventListener("click", () => {
      if (sorting.column !== c.key) {
        Object.assign(sorting, { by: SORTABLE[c.key], column: c.key, descending: false });
      } else if (!sorting.descending) sorting.descending = true;
      else Object.assign(sorting, { by: "", column: "", descending: false });
      for (const [i, other] of columns.entries()) {
        const el = cells[i]!;
        el.classList.remove("sorted-asc");
        el.classList.remove("sorted-desc");
        if (other.key === sorting.column) el.classList.add(sorting.descending ? "sorted-desc" : "sorted-asc");
      }
      changed();
    });
    return cell;
  });
  return h("div", { class: "list-header" }, cells);
}
