/**
 * The WireGuard page: the server's endpoint and public key, each client peer (name, inner
 * addresses, online, last handshake, bytes each way) refreshed every two seconds while shown, a
 * peer's configuration with its QR code and a download, and adding, disabling, enabling and
 * removing peers. Links the CA's install page (`/cert/`, what `http://wirescope.cert/` shows).
 * @module
 */
import type { WireGuardPageJson, WireGuardPeerJson } from "../api_types.ts";
import { type El, formatSize, h, type InputEl, type KeyEvent, replace } from "./dom.ts";

/** How the page calls the API (the app's helper: session cookie and CSRF header). */
export type ApiCall = <T>(path: string, init?: RequestInit) => Promise<T>;

/** The WireGuard page of the app. */
export interface WireGuardPage {
  /** The page's element (hidden until shown). */
  readonly element: El;
  /** Shows the page and starts refreshing it. */
  show(): void;
  /** Hides it and stops refreshing. */
  hide(): void;
}

const REFRESH_MS = 2000;

/** "12 s ago", "3 min ago", "never". */
export function ago(ts: number | undefined, now = Date.now()): string {
  if (ts === undefined) return "never";
  const s = Math.max(0, Math.round((now - ts) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

/** Makes the page; `api` is the app's API helper. */
export function wireGuardPage(api: ApiCall): WireGuardPage {
  const element = h("div", { id: "wireguard", class: "wg-page", hidden: true });
  const server = h("div", { class: "wg-server" });
  const rows = h("tbody", {});
  const problem = h("div", { class: "error", hidden: true });
  const detail = h("div", { class: "wg-detail", hidden: true });
  const name = h("input", { id: "wg-name", type: "text", placeholder: "name (optional)" }) as InputEl;
  let open: number | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let shown = false;
  let last: WireGuardPageJson | null = null;

  const fail = (e: unknown) => {
    problem.hidden = false;
    replace(problem, (e as Error).message);
  };
  const act = async (work: () => Promise<unknown>) => {
    try {
      await work();
      problem.hidden = true;
    } catch (e) {
      fail(e);
    }
    await refresh();
  };

  const addPeer = () =>
    act(async () => {
      const peer = await api<WireGuardPeerJson>("/api/wireguard/peers", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(name.value.trim() ? { name: name.value.trim() } : {}),
      });
      name.value = "";
      open = peer.index;
    });
  name.addEventListener("keydown", (e) => {
    if ((e as KeyEvent).key === "Enter") void addPeer();
  });

  const peerRow = (p: WireGuardPeerJson): El => {
    const state = !p.enabled ? "disabled" : p.online ? "online" : "offline";
    const row = h(
      "tr",
      {
        class: `wg-peer ${state}${open === p.index ? " selected" : ""}`,
        "data-index": p.index,
        "data-state": state,
        "data-rx": p.rxBytes,
        "data-tx": p.txBytes,
        onclick: () => {
          open = open === p.index ? null : p.index;
          paint();
        },
      },
      h("td", { class: "wg-name" }, p.name),
      h("td", { class: "wg-addresses" }, p.addresses.join(", ")),
      h("td", { class: "wg-state" }, h("span", { class: `dot ${state}` }), state),
      h("td", {
        class: "wg-handshake",
        title: p.lastHandshake ? new Date(p.lastHandshake).toISOString() : "",
      }, ago(p.lastHandshake)),
      h("td", { class: "wg-rx num" }, formatSize(p.rxBytes)),
      h("td", { class: "wg-tx num" }, formatSize(p.txBytes)),
      h("td", { class: "wg-endpoint" }, p.endpoint ?? ""),
      h(
        "td",
        { class: "wg-actions" },
        h("button", {
          class: "wg-toggle",
          onclick: (e: Event) => {
            e.stopPropagation();
            void act(() =>
              api(`/api/wireguard/peers/${p.index}`, {
                method: "POST",
                headers: { "content-type": "application/json" },
                body: JSON.stringify({ enabled: !p.enabled }),
              })
            );
          },
        }, p.enabled ? "disable" : "enable"),
        " ",
        h("button", {
          class: "wg-remove",
          onclick: (e: Event) => {
            e.stopPropagation();
            if (open === p.index) open = null;
            void act(() => api(`/api/wireguard/peers/${p.index}`, { method: "DELETE" }));
          },
        }, "remove"),
      ),
    );
    return row;
  };

  /** The open peer's config and QR code; fetched again only when another peer opens. */
  let detailOf: number | null = null;
  const paintDetail = async () => {
    const p = last?.peers.find((x) => x.index === open);
    if (!p) {
      detail.hidden = true;
      detailOf = null;
      return;
    }
    if (detailOf === p.index) return;
    detailOf = p.index;
    const base = `/api/wireguard/peers/${p.index}`;
    const res = await fetch(`${base}/config`, { credentials: "same-origin" });
    const text = res.ok ? await res.text() : `(${res.status})`;
    if (detailOf !== p.index) return;
    detail.hidden = false;
    replace(
      detail,
      h("h3", {}, `${p.name}: client configuration`),
      h(
        "div",
        { class: "wg-config-box" },
        h("img", {
          class: "wg-qr",
          src: `${base}/qr.svg`,
          alt: `QR code of ${p.name}'s configuration`,
          width: 300,
          height: 300,
        }),
        h(
          "div",
          {},
          h("pre", { class: "wg-config" }, text),
          h("a", {
            class: "wg-download button",
            href: `${base}/config`,
            download: `wirescope-peer-${p.index}.conf`,
          }, "download .conf"),
          h(
            "div",
            { class: "hint" },
            `Also in ${p.configFile}. Scan the code with the WireGuard app, or import the file.`,
          ),
        ),
      ),
    );
  };

  const paint = () => {
    const d = last;
    if (!d) return;
    replace(
      server,
      h(
        "table",
        { class: "kv" },
        h("tr", {}, h("th", {}, "endpoint"), h("td", { id: "wg-endpoint" }, d.endpoint)),
        h("tr", {}, h("th", {}, "listening on"), h("td", {}, `UDP ${d.listening}`)),
        h("tr", {}, h("th", {}, "public key"), h("td", { id: "wg-public-key" }, h("code", {}, d.publicKey))),
        h(
          "tr",
          {},
          h("th", {}, "CA certificate"),
          h(
            "td",
            {},
            h("a", { id: "wg-cert-link", href: "/cert/", target: "_blank", rel: "noopener" }, "install page"),
            " (what http://wirescope.cert/ shows to clients through the tunnel)",
          ),
        ),
      ),
    );
    replace(rows, d.peers.map(peerRow));
    void paintDetail();
  };

  const refresh = async () => {
    try {
      last = await api<WireGuardPageJson>("/api/wireguard");
      paint();
    } catch (e) {
      fail(e);
    }
  };
  const tick = async () => {
    timer = undefined;
    if (!shown) return;
    await refresh();
    if (shown) timer = setTimeout(() => void tick(), REFRESH_MS);
  };

  replace(
    element,
    h("h2", {}, "WireGuard"),
    server,
    problem,
    h(
      "div",
      { class: "wg-add" },
      name,
      " ",
      h("button", { id: "wg-add", onclick: () => void addPeer() }, "add peer"),
    ),
    h(
      "table",
      { class: "wg-peers" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["name", "addresses", "state", "last handshake", "received", "sent", "endpoint", ""].map((t) =>
            h("th", {}, t)
          ),
        ),
      ),
      rows,
    ),
    detail,
  );

  return {
    element,
    show() {
      element.hidden = false;
      if (shown) return;
      shown = true;
      void tick();
    },
    hide() {
      element.hidden = true;
      shown = false;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    },
  };
}
