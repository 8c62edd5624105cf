/**
 * The page served inside the tunnel (and through the explicit proxy) at `http://wirescope.cert/`:
 * the CA certificate in the forms devices import, with short per-platform steps. The equivalent
 * of mitmproxy's mitm.it. Pure: the certificate bytes are handed in, responses come out.
 * @module
 */
import type { Headers1 } from "./http1.ts";

/** The host name of the certificate page. */
export const CERT_PAGE_HOST = "wirescope.cert";

/** The address `wirescope.cert` resolves to inside the tunnel (any address reaches us there). */
export const CERT_PAGE_ADDRESS = "10.0.0.1";

/** The CA in each form the page offers. */
export interface CaMaterial {
  pem: string;
  der: Uint8Array;
  p12: Uint8Array;
  fingerprintSha256: string;
}

/** A response made by the proxy itself. */
export interface LocalResponse {
  status: number;
  reason: string;
  headers: Headers1;
  body: Uint8Array;
}

const encoder = new TextEncoder();

/** Answers a request for the certificate page (`path` is the request target's path). */
export function certPageResponse(ca: CaMaterial, method: string, path: string): LocalResponse {
  const file = (body: Uint8Array, type: string, name: string): LocalResponse => ({
    status: 200,
    reason: "OK",
    headers: [
      ["content-type", type],
      ["content-disposition", `attachment; filename="${name}"`],
      ["content-length", String(body.byteLength)],
    ],
    body,
  });
  const route = path.split("?")[0];
  let response: LocalResponse;
  switch (route) {
    case "/":
    case "/index.html":
      response = html(page(ca));
      break;
    case "/cert/pem":
      response = file(encoder.encode(ca.pem), "application/x-x509-ca-cert", "wirescope-ca-cert.pem");
      break;
    case "/cert/cer":
      response = file(ca.der, "application/x-x509-ca-cert", "wirescope-ca-cert.cer");
      break;
    case "/cert/p12":
      response = file(ca.p12, "application/x-pkcs12", "wirescope-ca-cert.p12");
      break;
    default: {
      const body = encoder.encode("Not found. The certificate page is at http://wirescope.cert/\n");
      response = {
        status: 404,
        reason: "Not Found",
        headers: [["content-type", "text/plain; charset=utf-8"], ["content-length", String(body.byteLength)]],
        body,
      };
    }
  }
  if (method === "HEAD") response = { ...response, body: new Uint8Array(0) };
  return response;
}

function html(text: string): LocalResponse {
  const body = encoder.encode(text);
  return {
    status: 200,
    reason: "OK",
    headers: [
      ["content-type", "text/html; charset=utf-8"],
      ["content-length", String(body.byteLength)],
      ["cache-control", "no-store"],
    ],
    body,
  };
}

function page(ca: CaMaterial): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>wirescope certificate</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem}
a.button{display:inline-block;padding:.4rem .9rem;margin:.2rem;border:1px solid #345;border-radius:.4rem;text-decoration:none}
code{word-break:break-all}</style></head><body>
<h1>Trust wirescope on this device</h1>
<p>Your traffic passes through wirescope. To let it show HTTPS, install its CA certificate and trust it.
Only do this on a device you own, for a proxy you run.</p>
<p><a class="button" href="/cert/pem">PEM</a> <a class="button" href="/cert/cer">DER (.cer)</a>
<a class="button" href="/cert/p12">PKCS#12 (.p12)</a></p>
<p>SHA-256 fingerprint: <code>${ca.fingerprintSha256}</code></p>
<h2>iOS / iPadOS</h2>
<ol><li>Open this page in Safari and download the <b>PEM</b> file; allow the configuration profile.</li>
<li>Settings → General → VPN &amp; Device Management → install the "wirescope" profile.</li>
<li>Settings → General → About → Certificate Trust Settings → turn on full trust for "wirescope".</li></ol>
<h2>Android</h2>
<ol><li>Download the <b>DER (.cer)</b> file.</li>
<li>Settings → Security → Encryption &amp; credentials → Install a certificate → CA certificate → pick the file.</li>
<li>Apps only trust user CAs when they opt in (Android 7+); browsers such as Firefox have their own setting.</li></ol>
<h2>Windows</h2>
<ol><li>Download the <b>PKCS#12</b> file and open it; choose "Local Machine" (or current user).</li>
<li>Place it in "Trusted Root Certification Authorities".</li></ol>
<h2>macOS</h2>
<ol><li>Download the <b>PEM</b> file and open it in Keychain Access (System keychain).</li>
<li>Open the "wirescope" certificate → Trust → "Always Trust".</li></ol>
<h2>Linux</h2>
<ol><li>Debian/Ubuntu: copy the PEM to <code>/usr/local/share/ca-certificates/wirescope.crt</code> and run
<code>sudo update-ca-certificates</code>.</li>
<li>Firefox and Chrome keep their own stores: import it under Settings → Certificates → Authorities.</li></ol>
</body></html>
`;
}
