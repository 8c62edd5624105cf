/**
 * `--stickycookie FILTER` (mitmproxy's `stickycookie`): remembers the cookies servers set
 * (Set-Cookie on any response, keyed by domain, port and path) and puts them in the Cookie header
 * of requests the filter matches whose host, port and path they apply to, replacing the Cookie
 * header the client sent. A cookie that is set expired (Max-Age ≤ 0, Expires in the past) is
 * forgotten. Domain matching follows RFC 6265 (a Domain attribute covers its subdomains).
 * @module
 */
import type { HttpFlowHandle } from "../types.ts";
import { defineAddon } from "../types.ts";
import { type FlowMatcher, flowMatcher } from "./spec.ts";

/** Parses the option's value (a filter expression). */
export function parseStickyCookie(text: string): FlowMatcher {
  return flowMatcher(text);
}

/** One Set-Cookie field: name, value and the attributes that place it. */
export interface SetCookie {
  name: string;
  value: string;
  domain?: string;
  path?: string;
  expired: boolean;
}

/** Reads a Set-Cookie field value (undefined when it has no `name=`). */
export function parseSetCookie(field: string, now = Date.now()): SetCookie | undefined {
  const [pair, ...attrs] = field.split(";");
  const eq = pair!.indexOf("=");
  if (eq <= 0) return undefined;
  const out: SetCookie = {
    name: pair!.slice(0, eq).trim(),
    value: pair!.slice(eq + 1).trim(),
    expired: false,
  };
  for (const a of attrs) {
    const i = a.indexOf("=");
    const key = (i < 0 ? a : a.slice(0, i)).trim().toLowerCase();
    const val = i < 0 ? "" : a.slice(i + 1).trim();
    if (key === "domain" && val) out.domain = val.replace(/^\.+/, "").toLowerCase();
    else if (key === "path" && val.startsWith("/")) out.path = val;
    else if (key === "max-age" && /^-?\d+$/.test(val)) out.expired = Number(val) <= 0;
    else if (key === "expires" && !attrs.some((x) => /^\s*max-age\s*=/i.test(x))) {
      const t = Date.parse(val);
      if (Number.isFinite(t) && t <= now) out.expired = true;
    }
  }
  return out;
}

function domainMatch(host: string, domain: string): boolean {
  host = host.toLowerCase();
  return host === domain || host.endsWith("." + domain);
}

/** The stickycookie addon. */
export function stickyCookie() {
  let filter: FlowMatcher | undefined;
  /** `domain port path` → cookie name → value. */
  const jar = new Map<string, { domain: string; port: number; path: string; cookies: Map<string, string> }>();
  return defineAddon({
    name: "stickycookie",
    options: {
      stickycookie: {
        type: "string",
        default: "",
        help: "FILTER: replay remembered cookies to matching requests",
      },
    },
    configure(changed, ctx) {
      if (!changed.has("stickycookie")) return;
      filter = ctx.options.stickycookie ? parseStickyCookie(ctx.options.stickycookie) : undefined;
      jar.clear();
    },
    response(flow) {
      if (!filter || !flow.response) return;
      const host = flow.request.host;
      for (const field of flow.response.headers.getAll("set-cookie")) {
        const c = parseSetCookie(field);
        if (!c) continue;
        const domain = c.domain ?? host.toLowerCase();
        if (!domainMatch(host, domain)) continue;
        const path = c.path ?? "/";
        const key = `${domain} ${flow.request.port} ${path}`;
        let entry = jar.get(key);
        if (c.expired) {
          entry?.cookies.delete(c.name);
          if (entry && entry.cookies.size === 0) jar.delete(key);
          continue;
        }
        if (!entry) jar.set(key, entry = { domain, port: flow.request.port, path, cookies: new Map() });
        entry.cookies.set(c.name, c.value);
      }
    },
    request(flow: HttpFlowHandle) {
      if (!filter || !filter.matches(flow)) return;
      const r = flow.request;
      const pairs: string[] = [];
      for (const e of jar.values()) {
        if (domainMatch(r.host, e.domain) && r.port === e.port && r.path.startsWith(e.path)) {
          for (const [k, v] of e.cookies) pairs.push(`${k}=${v}`);
        }
      }
      if (pairs.length > 0) r.headers.set("cookie", pairs.join("; "));
    },
  });
}
