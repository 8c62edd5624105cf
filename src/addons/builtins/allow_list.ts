/**
 * `--allow-list PATTERN` (repeatable; option `allow_list`): a filtering proxy. Only hosts on the
 * list reach the internet; everything else is stopped where the proxy first sees its name:
 *
 * - HTTP and intercepted HTTPS requests: a small HTML page, "blocked by wirescope", status 403.
 * - TLS that is relayed without interception (passthrough): the connection is refused, decided
 *   from the ClientHello's server name (SNI), before the proxy dials the server (`serverConnect`),
 *   or, where the server was dialed before the hello (the explicit proxy's CONNECT), when the
 *   relay starts (`tcpStart`).
 * - DNS queries for names not on the list: NXDOMAIN, answered locally.
 * - Other TCP and UDP: refused unless the destination is on the list, or is an address a DNS
 *   answer for an allowed name gave (remembered for the answer's TTL, at most 10 minutes).
 *
 * Patterns are host names, not filter expressions: the same list must decide for a DNS question,
 * a ClientHello and an HTTP request, and a flow filter can be evaluated only against an HTTP flow.
 * `example.com` allows that host and every subdomain; `*.example.com` only the subdomains; an IP
 * address allows that address. Names are compared without regard to case or a trailing dot.
 * @module
 */
import { defineAddon } from "../types.ts";
import { SpecError } from "./spec.ts";

/** One parsed allow-list pattern. */
export interface AllowPattern {
  text: string;
  /** The name (lower case, no trailing dot) or the address. */
  host: string;
  /** True: subdomains only (`*.name`). */
  subdomainsOnly: boolean;
}

const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

/** Parses a host pattern (`example.com`, `*.example.com`, `192.0.2.1`-style addresses, `[::1]`). */
export function parseAllowPattern(text: string): AllowPattern {
  let host = text.trim().toLowerCase().replace(/\.$/, "");
  const subdomainsOnly = host.startsWith("*.");
  if (subdomainsOnly) host = host.slice(2);
  host = host.replace(/^\[(.*)\]$/, "$1");
  const isAddress = /^[\d.]+$/.test(host) ? isIpv4(host) : host.includes(":");
  if (isAddress && subdomainsOnly) {
    throw new SpecError(`${JSON.stringify(text)}: *. goes with names, not addresses`);
  }
  if (!isAddress && (host === "" || !host.split(".").every((l) => LABEL.test(l)))) {
    throw new SpecError(
      `${JSON.stringify(text)}: expected a host name (example.com, *.example.com) or an IP address`,
    );
  }
  return { text, host, subdomainsOnly };
}

function isIpv4(s: string): boolean {
  const parts = s.split(".");
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
}

/** True when `host` is allowed by one of `patterns`. */
export function hostAllowed(patterns: readonly AllowPattern[], host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, "").replace(/^\[(.*)\]$/, "$1");
  return patterns.some((p) => (!p.subdomainsOnly && h === p.host) || h.endsWith("." + p.host));
}

/** The page blocked HTTP(S) requests get. */
export function blockPage(host: string): string {
  const safe = host.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>Blocked</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:4em auto">
<h1>Blocked by wirescope</h1>
<p><b>${safe}</b> is not on this proxy's allow list.</p>
</body></html>
`;
}

/** Most addresses remembered from DNS answers (the oldest are forgotten first). */
const MAX_LEARNED = 10_000;
const MAX_TTL_MS = 600_000;

/** The allow-list addon. */
export function allowList() {
  let patterns: AllowPattern[] = [];
  /** Addresses DNS answers for allowed names gave → until when (ms). */
  const learned = new Map<string, number>();
  const on = () => patterns.length > 0;
  const allowed = (name: string | undefined, address: string | undefined): boolean => {
    if (name && !/^[\d.]+$|:/.test(name)) return hostAllowed(patterns, name);
    const a = address ?? name;
    if (a === undefined) return false;
    if (hostAllowed(patterns, a)) return true;
    const until = learned.get(a);
    return until !== undefined && until > Date.now();
  };
  return defineAddon({
    name: "allow_list",
    options: {
      allow_list: {
        type: "string[]",
        default: [],
        help: "HOST or *.HOST or ADDRESS: only these reach the internet (block page, refusal, NXDOMAIN)",
      },
    },
    configure(changed, ctx) {
      if (changed.has("allow_list")) patterns = ctx.options.allow_list.map(parseAllowPattern);
    },
    requestheaders(flow, ctx) {
      if (!on() || hostAllowed(patterns, flow.request.host)) return;
      ctx.log("info", `blocked ${flow.request.url}`);
      flow.respond(403, { "content-type": "text/html; charset=utf-8" }, blockPage(flow.request.host));
    },
    serverConnect(conn, ctx) {
      // TLS relayed without interception (passthrough, chosen from the ClientHello) is refused
      // before the proxy dials, from its SNI. Intercepted TLS and plain HTTP get the block page
      // from their first request instead, so they are let through here.
      if (!on() || !conn.tls?.passthrough) return;
      if (allowed(conn.tls.sni ?? conn.server.hostname, conn.address.hostname)) return;
      ctx.log("info", `refused passthrough TLS to ${conn.tls.sni ?? conn.address.hostname}`);
      conn.kill();
    },
    tcpStart(tcp, ctx) {
      const f = tcp.flow;
      if (!on() || allowed(f.tls?.sni ?? f.server.hostname, f.server.address.hostname)) return;
      ctx.log("info", `refused TCP to ${f.tls?.sni ?? f.server.hostname ?? f.server.address.hostname}`);
      tcp.kill();
    },
    udpStart(udp, ctx) {
      const f = udp.flow;
      if (!on() || allowed(f.server.hostname, f.server.address.hostname)) return;
      ctx.log("info", `refused UDP to ${f.server.hostname ?? f.server.address.hostname}`);
      udp.kill();
    },
    dnsRequest(dns, ctx) {
      const q = dns.request;
      if (!on() || !q) return;
      const denied = q.questions.find((x) => !hostAllowed(patterns, x.name));
      if (!denied) return;
      ctx.log("info", `NXDOMAIN for ${denied.name}`);
      dns.answerError(3);
    },
    dnsResponse(dns) {
      const r = dns.response;
      if (!on() || !r) return;
      // Every address of an answer to an allowed name counts (CNAME targets may be elsewhere).
      if (!r.questions.every((x) => hostAllowed(patterns, x.name))) return;
      const now = Date.now();
      for (const rec of r.answers) {
        if (rec.typeName !== "A" && rec.typeName !== "AAAA") continue;
        learned.delete(rec.data);
        learned.set(rec.data, now + Math.min(rec.ttl * 1000, MAX_TTL_MS));
        if (learned.size > MAX_LEARNED) learned.delete(learned.keys().next().value!);
      }
    },
  });
}
