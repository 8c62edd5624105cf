/**
 * `--map-local "|FILTER|URL-REGEX|PATH"` (mitmproxy's `map_local`): requests the filter matches
 * whose URL matches URL-REGEX are answered from local files, without contacting the server.
 *
 * - PATH a file: that file answers.
 * - PATH a directory: the file is picked by the URL: the regex's first group when it has one,
 *   else the part of the URL after the match (query string dropped); `%XX` is decoded; then
 *   `NAME` and `NAME/index.html` are tried (and, when the name has other characters than
 *   `0-9a-zA-Z-_.=(),/`, the same with those made `_`); an empty name means `index.html`.
 * - None of them there: 404. A name that climbs out of PATH (`..`, an absolute path, a symlink
 *   leading out) is refused with 403, unlike mitmproxy (which forwards the request).
 *
 * Content-Type follows the file's extension. The first entry with an existing file wins.
 * @module
 */
import { realpath, stat } from "node:fs/promises";
import { extname, resolve, sep } from "node:path";
import { defineAddon } from "../types.ts";
import { type FlowMatcher, pythonRegex, SpecError, splitSpec } from "./spec.ts";

/** One parsed `--map-local` entry. */
export interface MapLocalSpec {
  matcher: FlowMatcher;
  regex: RegExp;
  path: string;
}

/** Parses `|FILTER|URL-REGEX|PATH` (the filter may be left out). */
export function parseMapLocalSpec(text: string): MapLocalSpec {
  const { matcher, fields } = splitSpec(text, 2);
  const [pattern, path] = fields as [string, string];
  if (path === "") throw new SpecError("PATH is empty");
  return { matcher, regex: pythonRegex(pattern), path: resolve(path) };
}

/** Content types by file extension (what a static site holds, mostly). */
const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".htm": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".txt": "text/plain; charset=utf-8",
  ".xml": "application/xml",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".ico": "image/x-icon",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".wasm": "application/wasm",
  ".pdf": "application/pdf",
  ".mp4": "video/mp4",
  ".bin": "application/octet-stream",
};

/** The Content-Type for a file name, by its extension (none when unknown). */
export function contentTypeOf(name: string): string | undefined {
  return TYPES[extname(name).toLowerCase()];
}

/** What one entry gives for a URL: a file, none of its candidates, or a refusal. */
type Pick = { file: string } | { missing: string[] } | { refused: string };

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** Inside `root` (after symlinks), or undefined when the path leads out. */
async function inside(root: string, path: string): Promise<string | undefined> {
  try {
    const [r, p] = await Promise.all([realpath(root), realpath(path)]);
    return p === r || p.startsWith(r.endsWith(sep) ? r : r + sep) ? p : undefined;
  } catch {
    return path; // not there: no symlink to follow
  }
}

async function pick(spec: MapLocalSpec, url: string): Promise<Pick> {
  if (await isFile(spec.path)) return { file: spec.path };
  spec.regex.lastIndex = 0;
  const m = spec.regex.exec(url)!;
  spec.regex.lastIndex = 0;
  let suffix: string;
  if (m.length > 1) suffix = m[1] ?? "";
  else suffix = url.slice(m.index + m[0].length).split("?")[0]!.replace(/^\/+|\/+$/g, "");
  let decoded: string;
  try {
    decoded = decodeURIComponent(suffix);
  } catch {
    decoded = suffix;
  }
  const names = decoded === "" ? ["index.html"] : [decoded, `${decoded}/index.html`];
  const escaped = decoded.replace(/[^0-9a-zA-Z\-_.=(),/]/g, "_");
  if (decoded !== "" && escaped !== decoded) names.push(escaped, `${escaped}/index.html`);
  const candidates: string[] = [];
  for (const name of names) {
    if (name.startsWith("/") || name.split("/").includes("..") || name.includes("\0")) {
      return { refused: name };
    }
    candidates.push(resolve(spec.path, name));
  }
  for (const c of candidates) {
    if (!(await isFile(c))) continue;
    const real = await inside(spec.path, c);
    if (real === undefined) return { refused: c };
    return { file: real };
  }
  return { missing: candidates };
}

/** The map-local addon. */
export function mapLocal() {
  let specs: MapLocalSpec[] = [];
  return defineAddon({
    name: "map_local",
    options: {
      map_local: {
        type: "string[]",
        default: [],
        help: "|FILTER|URL-REGEX|PATH: answer matching requests from a file or directory",
      },
    },
    configure(changed, ctx) {
      if (changed.has("map_local")) specs = ctx.options.map_local.map(parseMapLocalSpec);
    },
    async request(flow, ctx) {
      const url = flow.request.url;
      const missing: string[] = [];
      for (const spec of specs) {
        spec.regex.lastIndex = 0;
        const hit = spec.matcher.matches(flow) && spec.regex.test(url);
        spec.regex.lastIndex = 0;
        if (!hit) continue;
        const found = await pick(spec, url);
        if ("refused" in found) {
          ctx.log("warn", `${url}: ${JSON.stringify(found.refused)} leads out of ${spec.path}, refused`);
          flow.respond(
            403,
            { "content-type": "text/plain; charset=utf-8" },
            "outside the mapped directory\n",
          );
          return;
        }
        if ("missing" in found) {
          missing.push(...found.missing);
          continue;
        }
        let body: Uint8Array;
        try {
          body = await Deno.readFile(found.file);
        } catch (e) {
          ctx.log("warn", `cannot read ${found.file}: ${(e as Error).message}`);
          continue;
        }
        const type = contentTypeOf(found.file);
        flow.respond(200, { server: "wirescope", ...(type ? { "content-type": type } : {}) }, body);
        return;
      }
      if (missing.length > 0) {
        ctx.log("info", `${url}: none of ${missing.join(", ")} exists`);
        flow.respond(404, { "content-type": "text/plain; charset=utf-8" }, "not found\n");
      }
    },
  });
}
