/**
 * `deno run -A bench/leaf_cert.ts`: what the first TLS connection to a new host costs in leaf
 * certificates. Two parts:
 *
 * - steps: the time of each step from a new SNI to a ready leaf, median over `--hosts` new names in
 *   one process (µs): a fresh ECDSA P-256 key (what a per-leaf key would cost), name normalization,
 *   building the TBSCertificate, the CA's RSA signature, PEM, `tls.createSecureContext`, and
 *   `CertificateAuthority.leafFor` end to end (cold name; warm process and warm disk cache).
 * - e2e: curl's `time_total` of one GET on a new connection to a new name, through the regular
 *   proxy (`startProxy`, loopback HTTPS origin with a wildcard certificate) and directly, medians
 *   side by side; then the same names again on new connections (leaf in memory), and once more
 *   through a second proxy on the same confdir (a new process's view: leaf on disk only).
 *
 *   deno run -A bench/leaf_cert.ts [--hosts 30] [--part steps|e2e|both]
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import https from "node:https";
import tls from "node:tls";
import { join } from "node:path";
import { CertificateAuthority } from "../src/certs/certificate_authority.ts";
import { type LeafIssuer, leafNames, signLeaf } from "../src/certs/_leaf_certificate.ts";
import { decodeDer, tbsFields, toPem } from "../src/certs/_der.ts";
import { startProxy } from "../src/proxy/proxy.ts";

const { values } = parseArgs({
  options: { hosts: { type: "string", default: "30" }, part: { type: "string", default: "both" } },
});
const HOSTS = Math.max(3, Math.min(500, Number(values.hosts)));
const PART = values.part;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Min, 25th percentile and median: on a shared, loaded machine the low end is the cost itself. */
function row(label: string, xs: number[], unit: string): void {
  const s = [...xs].sort((a, b) => a - b);
  const f = (x: number) => x.toFixed(unit === "ms" ? 2 : 0).padStart(8);
  console.log(`${label.padEnd(62)} ${f(s[0]!)} ${f(s[Math.floor(s.length / 4)]!)} ${f(median(s))} ${unit}`);
}

function p25(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 4)]!;
}

const HEADER = "      min      p25   median";

async function timed<T>(fn: () => Promise<T> | T): Promise<[T, number]> {
  const start = performance.now();
  const value = await fn();
  return [value, (performance.now() - start) * 1000];
}

async function steps(dir: string): Promise<void> {
  const ca = await CertificateAuthority.load(join(dir, "steps"));
  // The CA's issuer fields, rebuilt here the way load() does, to time signLeaf alone.
  const caKeyPem = await Deno.readTextFile(ca.paths.key);
  const pkcs8 = Uint8Array.from(
    atob(caKeyPem.split("-----")[2]!.replace(/\s+/g, "")),
    (c) => c.charCodeAt(0),
  );
  const signingKey = await crypto.subtle.importKey(
    "pkcs8",
    pkcs8,
    { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const issuer: LeafIssuer = {
    name: tbsFields(decodeDer(ca.certDer, "CA")).subject,
    keyIdentifier: new Uint8Array(20),
    notAfter: ca.notAfter,
    signingKey,
  };
  const warm = await ca.leafFor({ sni: "warm.bench.test" });
  const key = { keyPem: warm.keyPem, point: new Uint8Array(65).fill(4), keyIdentifier: new Uint8Array(20) };

  const t: Record<string, number[]> = {};
  const push = (k: string, v: number) => (t[k] ??= []).push(v);
  for (let i = 0; i < HOSTS; i++) {
    const [, keygen] = await timed(async () => {
      const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
        "sign",
        "verify",
      ]);
      await crypto.subtle.exportKey("pkcs8", pair.privateKey);
      await crypto.subtle.exportKey("raw", pair.publicKey);
    });
    push("keygen", keygen);
    const [names, normalize] = await timed(() => leafNames([`s${i}.steps.bench.test`]));
    push("names", normalize);
    const [signed, sign] = await timed(() => signLeaf(issuer, key, names));
    push("signLeaf", sign);
    const tbs = signed.der.subarray(0, signed.der.length - 256 - 20);
    const [, rsa] = await timed(() =>
      crypto.subtle.sign({ name: "RSASSA-PKCS1-v1_5" }, signingKey, tbs.slice())
    );
    push("rsa", rsa);
    const [pem, pemTime] = await timed(() => toPem("CERTIFICATE", signed.der));
    push("pem", pemTime);
    const [, context] = await timed(() => tls.createSecureContext({ key: warm.keyPem, cert: pem }));
    push("context", context);
    const [leaf, leafFor] = await timed(() => ca.leafFor({ sni: `l${i}.steps.bench.test` }));
    push("leafFor", leafFor);
    const [, contextOf] = await timed(() => leaf.secureContext);
    push("leafContext", contextOf);
    const [, again] = await timed(() => ca.leafFor({ sni: `l${i}.steps.bench.test` }));
    push("again", again);
  }
  const second = await CertificateAuthority.load(join(dir, "steps"));
  for (let i = 0; i < HOSTS; i++) {
    const [, disk] = await timed(() => second.leafFor({ sni: `l${i}.steps.bench.test` }));
    push("disk", disk);
  }

  const derBuild = t.signLeaf!.map((x, i) => Math.max(0, x - t.rsa![i]!));
  console.log(`\n${`steps from a new SNI to a ready leaf, ${HOSTS} new names`.padEnd(62)}${HEADER}`);
  row("new ECDSA P-256 key pair (per-leaf key; not on the path)", t.keygen!, "µs");
  row("normalize the names", t.names!, "µs");
  row("build the TBSCertificate (forge.asn1 + DER)", derBuild, "µs");
  row("CA's RSA-2048 signature (WebCrypto)", t.rsa!, "µs");
  row("certificate as PEM", t.pem!, "µs");
  row("tls.createSecureContext(key, cert)", t.context!, "µs");
  row("leafFor(), new name (shared key: sign, then write to disk)", t.leafFor!, "µs");
  row("leaf.secureContext, first use", t.leafContext!, "µs");
  row("leafFor(), same name again (memory)", t.again!, "µs");
  row("leafFor() in a second CA instance (disk cache)", t.disk!, "µs");
}

/** CPU time of this process (proxy and origin; curl runs apart) per request, µs. */
const cpu: Record<string, number[]> = {};

async function curl(args: string[], cpuKey?: string): Promise<number> {
  const before = process.cpuUsage();
  const out = await new Deno.Command("curl", {
    args: [
      "-sS",
      "--fail",
      "--http1.1",
      "--max-time",
      "10",
      "-o",
      "/dev/null",
      "-w",
      "%{time_total}",
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`curl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  if (cpuKey !== undefined) {
    const used = process.cpuUsage(before);
    (cpu[cpuKey] ??= []).push(used.user + used.system);
  }
  return Number(new TextDecoder().decode(out.stdout)) * 1000;
}

async function e2e(dir: string): Promise<void> {
  const originCa = await CertificateAuthority.load(join(dir, "origin-ca"));
  const originLeaf = await originCa.leafFor({ sni: "*.e2e.bench.test", extraNames: ["127.0.0.1"] });
  const origin = https.createServer(
    { key: originLeaf.keyPem, cert: originLeaf.certPem },
    (_req, res) => res.end("hello\n"),
  );
  await new Promise<void>((resolve) => origin.listen(0, "127.0.0.1", resolve));
  const port = (origin.address() as { port: number }).port;
  const confdir = join(dir, "proxy-conf");
  const runId = Date.now().toString(36);
  const names = Array.from({ length: HOSTS }, (_, i) => `n${i}-${runId}.e2e.bench.test`);

  const direct: number[] = [];
  for (const name of names) {
    direct.push(
      await curl([
        "--cacert",
        originCa.paths.cert,
        "--resolve",
        `d${name}:${port}:127.0.0.1`,
        `https://d${name}:${port}/`,
      ], "direct"),
    );
  }
  const via = async (proxyPort: number, caFile: string, name: string, cpuKey?: string) =>
    await curl([
      "-x",
      `http://127.0.0.1:${proxyPort}`,
      "--cacert",
      caFile,
      // A proxy gets the CONNECT target, not curl's --resolve: send it to loopback; the SNI stays the name.
      "--connect-to",
      `${name}:${port}:127.0.0.1:${port}`,
      `https://${name}:${port}/`,
    ], cpuKey);
  const start = async () => {
    const proxy = await startProxy({
      modes: [{ kind: "regular", port: 0 }],
      confdir,
      upstreamCa: [originCa.paths.cert],
      allowLocalDestinations: true,
    });
    const drain = (async () => {
      for await (const _ of proxy.flows) { /* keep the bus moving */ }
    })();
    return { proxy, port: proxy.addresses[0]!.addr.port, drain };
  };

  const a = await start();
  // One request so the proxy's own first-use costs (shared key, code paths) are out of the figures.
  await via(a.port, a.proxy.ca.paths.cert, `warmup-${runId}.e2e.bench.test`);
  const first: number[] = [];
  const repeat: number[] = [];
  for (const name of names) {
    first.push(await via(a.port, a.proxy.ca.paths.cert, name, "first"));
    repeat.push(await via(a.port, a.proxy.ca.paths.cert, name, "repeat"));
  }
  await a.proxy.close(0);
  const b = await start();
  await via(b.port, b.proxy.ca.paths.cert, `warmup2-${runId}.e2e.bench.test`);
  const fromDisk: number[] = [];
  for (const name of names) fromDisk.push(await via(b.port, b.proxy.ca.paths.cert, name, "disk"));
  await b.proxy.close(0);
  await new Promise<void>((resolve) => origin.close(() => resolve()));
  origin.closeAllConnections();

  const m = p25(direct);
  console.log(`\n${`one GET on a new connection, ${HOSTS} names: curl time_total`.padEnd(62)}${HEADER}`);
  row("direct to the loopback origin (new name)", direct, "ms");
  row(`via proxy, new name (${(p25(first) / m).toFixed(2)}x direct at p25)`, first, "ms");
  row(`via proxy, same name again (${(p25(repeat) / m).toFixed(2)}x direct at p25)`, repeat, "ms");
  row(`via a 2nd proxy, same confdir (${(p25(fromDisk) / m).toFixed(2)}x direct at p25)`, fromDisk, "ms");
  console.log(`${"CPU of this process (proxy + origin) per GET".padEnd(62)}${HEADER}`);
  row("direct (the origin's share)", cpu.direct!, "µs");
  row("via proxy, new name", cpu.first!, "µs");
  row("via proxy, same name again", cpu.repeat!, "µs");
  row("via a 2nd proxy, same confdir", cpu.disk!, "µs");
}

const dir = await Deno.makeTempDir({ prefix: "wirescope_leaf_bench_" });
try {
  if (PART === "steps" || PART === "both") await steps(dir);
  if (PART === "e2e" || PART === "both") await e2e(dir);
} finally {
  await Deno.remove(dir, { recursive: true });
}
