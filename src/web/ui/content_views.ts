/**
 * Content views of a body, chosen by its type and overridable with a picker: JSON (pretty, with
 * objects and arrays that fold), HTML/XML (indented), form fields, images, text decoded with the
 * charset the `Content-Type` names, protobuf raw fields (gRPC bodies split into their
 * length-prefixed messages first), and hex. Bodies come decoded from the server (`?decode=1`
 * undoes gzip, deflate, br and zstd). Everything recorded is shown as text, never as markup.
 * Also the server certificate of a connection.
 * @module
 */
import type { BodyJson, FlowDetailJson } from "../api_types.ts";
import { type El, formatSize, h, hexDump, type InputEl, replace } from "./dom.ts";
import { decodeProtobuf, formatProtobuf, splitGrpcFrames } from "./protobuf.ts";

/** The views the picker offers. */
export const VIEWS = ["auto", "json", "markup", "form", "text", "image", "protobuf", "hex"] as const;
/** A view. */
export type View = typeof VIEWS[number];

/** The charset a `Content-Type` names (lower case), "" when none. */
export function charsetOf(contentType: string): string {
  return /;\s*charset\s*=\s*"?([^";\s]+)"?/i.exec(contentType)?.[1]?.toLowerCase() ?? "";
}

/** The view a type calls for (`text` is the body as UTF-8 when it is valid). */
export function pickView(contentType: string, text: string | undefined): Exclude<View, "auto"> {
  const t = contentType.toLowerCase().split(";")[0]!.trim();
  if (t.startsWith("image/")) return "image";
  if (t.startsWith("application/grpc") || t.includes("protobuf")) return "protobuf";
  if (t.includes("json")) return "json";
  if (t.includes("xml") || t.includes("html")) return "markup";
  if (t.includes("x-www-form-urlencoded")) return "form";
  if (text !== undefined || t.startsWith("text/")) return "text";
  return "hex";
}

/** Where the body is, decoded. */
function bodyUrl(body: BodyJson): string {
  return `${body.url}${body.contentEncoding ? "?decode=1" : ""}`;
}

async function bodyBytes(body: BodyJson): Promise<Uint8Array> {
  const res = await fetch(bodyUrl(body), { credentials: "same-origin" });
  return new Uint8Array(await res.arrayBuffer());
}

/** Decodes with the named charset (replacing what does not decode); UTF-8 when none or unknown. */
export function decodeText(bytes: Uint8Array, charset: string): string {
  try {
    return new TextDecoder(charset || "utf-8").decode(bytes);
  } catch {
    return new TextDecoder("utf-8").decode(bytes);
  }
}

/** Past this much text, JSON is shown pretty but without folds (one element per value is a lot). */
const FOLD_LIMIT = 256 * 1024;

/**
 * JSON as `JSON.stringify(value, null, 2)` would print it, with each non-empty object and array
 * a fold: a click on its bracket hides its inside. The markers are CSS, so the text is exact.
 */
export function jsonTree(value: unknown, indent = ""): El | string {
  if (value === null || typeof value !== "object") {
    const kind = value === null ? "null" : typeof value;
    return h("span", { class: `j-${kind}` }, JSON.stringify(value));
  }
  const array = Array.isArray(value);
  const entries = array ? (value as unknown[]).map((v) => [null, v] as const) : Object.entries(value);
  const [open, close] = array ? ["[", "]"] : ["{", "}"];
  if (entries.length === 0) return open + close;
  const inner = indent + "  ";
  const parts: (El | string)[] = [];
  entries.forEach(([k, v], i) => {
    parts.push(`\n${inner}`);
    if (k !== null) parts.push(h("span", { class: "j-key" }, JSON.stringify(k)), ": ");
    parts.push(jsonTree(v, inner));
    if (i < entries.length - 1) parts.push(",");
  });
  parts.push(`\n${indent}`);
  const fold = h("span", { class: "j-fold" });
  const opener = h("span", { class: "j-open", title: `${entries.length} ${array ? "items" : "keys"}` }, open);
  opener.addEventListener("click", () => {
    if (fold.className.includes("collapsed")) fold.classList.remove("collapsed");
    else fold.classList.add("collapsed");
  });
  fold.append(opener, h("span", { class: "j-inner" }, parts), close);
  return fold;
}

const VOID_ELEMENTS = new Set([
  "area",
  "base",
  "br",
  "col",
  "embed",
  "hr",
  "img",
  "input",
  "link",
  "meta",
  "source",
  "track",
  "wbr",
]);

/**
 * HTML or XML indented by nesting: one tag a line, text between trimmed; the insides of
 * `script`, `style`, comments and CDATA kept as they are. A rough pretty printer for reading,
 * not a parser: unbalanced markup just indents less.
 */
export function prettyMarkup(source: string, maxLength = 2 * 1024 * 1024): string {
  const s = source.slice(0, maxLength);
  const out: string[] = [];
  let depth = 0;
  const re =
    /<!--[\s\S]*?-->|<!\[CDATA\[[\s\S]*?\]\]>|<(script|style)\b[^>]*>[\s\S]*?<\/\1\s*>|<[^>]+>|[^<]+/gi;
  for (const m of s.matchAll(re)) {
    const token = m[0];
    const pad = "  ".repeat(depth);
    if (!token.startsWith("<")) {
      const text = token.trim();
      if (text) out.push(pad + text.replace(/\s*\n\s*/g, " "));
      continue;
    }
    if (token.startsWith("</")) {
      depth = Math.max(0, depth - 1);
      out.push("  ".repeat(depth) + token);
      continue;
    }
    out.push(pad + token);
    const name = /^<([A-Za-z][\w:.-]*)/.exec(token)?.[1]?.toLowerCase();
    if (!name || token.endsWith("/>") || VOID_ELEMENTS.has(name) || m[1] !== undefined) continue;
    depth++;
  }
  if (source.length > maxLength) out.push(`… ${source.length - maxLength} more characters`);
  return out.join("\n");
}

/** A protobuf body (or a gRPC body's messages) as raw fields. */
export async function protobufText(bytes: Uint8Array, contentType: string): Promise<string> {
  const grpc = contentType.toLowerCase().startsWith("application/grpc");
  const frames = grpc ? splitGrpcFrames(bytes) : null;
  if (grpc && frames) {
    const parts: string[] = [];
    for (const [i, f] of frames.entries()) {
      let data = f.data;
      let note = "";
      if (f.compressed) {
        try {
          data = await gunzip(data);
          note = ", gzip";
        } catch {
          parts.push(`message ${i + 1} (${f.data.length} bytes, compressed):\n${hexDump(f.data, 1024)}`);
          continue;
        }
      }
      const fields = decodeProtobuf(data);
      parts.push(
        `message ${i + 1} (${f.data.length} bytes${note}):\n` +
          (fields ? formatProtobuf(fields, "  ") || "  (empty)" : `  not protobuf:\n${hexDump(data, 1024)}`),
      );
    }
    return parts.join("\n\n") || "(no messages)";
  }
  const fields = decodeProtobuf(bytes);
  return fields
    ? formatProtobuf(fields)
    : `not protobuf${grpc ? " (nor gRPC frames)" : ""}:\n${hexDump(bytes)}`;
}

async function gunzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data.slice()]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** A body with its view picker (`auto` picks by type). */
export function bodyView(body: BodyJson): El {
  const out = h("div", { class: "body-view" });
  const select = h(
    "select",
    { class: "view-select", title: "content view" },
    VIEWS.map((v) => h("option", { value: v }, v)),
  ) as InputEl;
  const content = h("div", { class: "body-content" });
  const charset = charsetOf(body.contentType);
  const info = h(
    "div",
    { class: "body-info" },
    `${formatSize(body.size)}${body.truncated ? " (truncated)" : ""}`,
    body.contentType ? ` · ${body.contentType}` : "",
    body.contentEncoding ? ` · ${body.contentEncoding} (decoded)` : "",
    " ",
    select,
    " ",
    h("a", { href: body.url, target: "_blank", rel: "noopener" }, "raw"),
  );
  let seq = 0;
  const show = async (choice: View) => {
    const mine = ++seq;
    // The server's text is UTF-8; another charset decodes the bytes here.
    let text = charset && charset !== "utf-8" && charset !== "utf8" ? undefined : body.text;
    let bytes: Uint8Array | undefined;
    const type = body.contentType.toLowerCase();
    if (text === undefined && body.size > 0 && !type.startsWith("image/")) {
      bytes = await bodyBytes(body);
      if (charset) text = decodeText(bytes, charset);
      else {
        try {
          text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
        } catch { /* binary */ }
      }
    }
    const view = choice === "auto" ? pickView(body.contentType, text) : choice;
    if (mine !== seq) return;
    content.dataset.view = view;
    if (body.size === 0) {
      replace(content, h("div", { class: "empty" }, "no body"));
    } else if (view === "image") {
      replace(content, h("img", { src: `${body.url}?decode=1`, alt: "body image", class: "body-image" }));
    } else if (view === "json") {
      const source = text ?? "";
      let tree: El | string = source;
      try {
        const value = JSON.parse(source);
        tree = source.length > FOLD_LIMIT ? JSON.stringify(value, null, 2) : jsonTree(value);
      } catch { /* shown as it is */ }
      replace(content, h("pre", { class: "json" }, tree));
    } else if (view === "markup") {
      replace(content, h("pre", { class: "markup" }, prettyMarkup(text ?? "")));
    } else if (view === "form" && text !== undefined) {
      const fields = [...new URLSearchParams(text)];
      replace(
        content,
        h("table", { class: "kv form" }, fields.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))),
      );
    } else if (view === "text" && text !== undefined) {
      replace(content, h("pre", { class: "text", "data-charset": charset || "utf-8" }, text));
    } else if (view === "protobuf") {
      bytes ??= await bodyBytes(body);
      const decoded = await protobufText(bytes, body.contentType);
      if (mine === seq) replace(content, h("pre", { class: "protobuf" }, decoded));
    } else {
      bytes ??= await bodyBytes(body);
      if (mine === seq) replace(content, h("pre", { class: "hex" }, hexDump(bytes)));
    }
  };
  select.addEventListener("change", () => void show(select.value as View));
  void show("auto");
  replace(out, info, content);
  return out;
}

type Certificate = NonNullable<NonNullable<FlowDetailJson["connection"]["tls"]>["serverCertificate"]>;

/**
 * The server's certificate: subject, issuer, validity (marked when expired or not yet valid),
 * the names it covers, its fingerprint. (The flow records the leaf the server presented.)
 */
export function certificateView(cert: Certificate, now = Date.now()): El {
  const from = Date.parse(cert.validFrom), to = Date.parse(cert.validTo);
  const state = now < from ? "not yet valid" : now > to ? "expired" : "valid";
  const names = [...cert.dnsNames, ...(cert.ipAddresses ?? [])];
  return h(
    "div",
    { class: "certificate" },
    h("div", { class: "line" }, "server certificate"),
    h(
      "table",
      { class: "kv cert" },
      h("tr", {}, h("th", {}, "subject"), h("td", { class: "cert-subject" }, cert.subject)),
      h("tr", {}, h("th", {}, "issuer"), h("td", { class: "cert-issuer" }, cert.issuer)),
      h(
        "tr",
        {},
        h("th", {}, "valid"),
        h(
          "td",
          { class: `cert-validity ${state.replace(/ /g, "-")}` },
          `${cert.validFrom} to ${cert.validTo} (${state})`,
        ),
      ),
      h("tr", {}, h("th", {}, "names"), h("td", { class: "cert-names" }, names.join(", "))),
      h("tr", {}, h("th", {}, "SHA-256"), h("td", {}, h("code", {}, cert.fingerprintSha256))),
    ),
  );
}
