/**
 * Joins an {@link AddonManager} to the proxy's hook seams (src/proxy/request_hook.ts): the
 * request hook runs `requestheaders` then `request` once the request is held (head and body up
 * to the body limit), the response hook runs `responseheaders` then `response` once the
 * response is held the same way, and a flow that ends with an error runs `error`.
 *
 * Responses through HTTP/1 layers are asked in two steps (the hook's `phases`): `responseheaders`
 * as soon as the head is in, then `response` with the body held, unless `responseheaders` set
 * `flow.response.stream`: the body then streams through the transform (reframed chunked, or
 * close-delimited for HTTP/1.0 clients; the flow records what went out) and `response` sees no body.
 *
 * Where this differs from mitmproxy (for now): `requestheaders` runs right before `request`,
 * once the body is held, and request `stream` transforms are not applied; HTTP/2 layers run
 * `responseheaders` with `response` once the body is held and apply no transform either; a body
 * longer than the body limit is held up to the limit only (the hooks get `body` undefined and
 * `bodyTruncated`, and the rest streams on unchanged).
 * @module
 */
import type { Flow, HttpFlow } from "../flows/flow.ts";
import type { RequestHook, RequestVerdict, ResponseHook, ResponseVerdict } from "../proxy/request_hook.ts";
import type { HttpVerdict } from "./flow_handle.ts";
import type { AddonManager } from "./manager.ts";
import type { EventHookName, WireGuardPeerEvent } from "./types.ts";
import type { AddonCall } from "../proxy/layer.ts";

/** The hooks to hand to the proxy for `manager`'s addons (absent ones when no addon has them). */
export function addonHooks(manager: AddonManager): {
  requestHook?: RequestHook;
  responseHook?: ResponseHook;
  flowEnded?: (flow: Flow) => void;
} {
  const hooks: ReturnType<typeof addonHooks> = {};
  if (manager.has("requestheaders") || manager.has("request")) {
    hooks.requestHook = async (flow) =>
      requestVerdict(await manager.http(["requestheaders", "request"], flow), flow);
  }
  if (manager.has("responseheaders") || manager.has("response")) {
    const hook: ResponseHook = async (flow) =>
      responseVerdict(await manager.http(["responseheaders", "response"], flow), flow);
    // Layers that ask in two steps run `responseheaders` on the head alone, and hold the body
    // only for `response` (none when no addon has it, or when a transform streams the body).
    hook.phases = {
      headers: async (flow) =>
        manager.has("responseheaders")
          ? responseVerdict(await manager.http("responseheaders", flow), flow)
          : undefined,
      ...(manager.has("response")
        ? { body: async (flow: HttpFlow) => responseVerdict(await manager.http("response", flow), flow) }
        : {}),
    };
    hooks.responseHook = hook;
  }
  if (manager.has("error")) {
    hooks.flowEnded = (flow) => {
      if (flow.type === "http" && flow.error) void manager.http("error", flow);
    };
  }
  return hooks;
}

function marks(v: HttpVerdict, flow: HttpFlow): void {
  if (v.marked !== undefined) flow.marked = v.marked;
  if (v.comment !== undefined) flow.comment = v.comment;
}

/** The request hook's verdict for what the addons decided. */
export function requestVerdict(v: HttpVerdict | undefined, flow: HttpFlow): RequestVerdict {
  if (!v) return undefined;
  marks(v, flow);
  if (v.kill) return "kill";
  if (v.respond) return { ...v.respond };
  if (v.request) {
    const { method, host, port, path, headers, body } = v.request;
    return { change: { method, host, port, path, headers, ...(body !== undefined ? { body } : {}) } };
  }
  return undefined;
}

/** The response hook's verdict for what the addons decided. */
export function responseVerdict(v: HttpVerdict | undefined, flow: HttpFlow): ResponseVerdict {
  if (!v) return undefined;
  marks(v, flow);
  if (v.kill) return "kill";
  if (v.respond) return { respond: { ...v.respond } };
  if (v.response) {
    const { status, reason, headers, body, stream } = v.response;
    return {
      change: {
        status,
        reason,
        headers,
        ...(body !== undefined ? { body } : {}),
        ...(stream !== undefined ? { stream } : {}),
      },
    };
  }
  return undefined;
}

/**
 * What the connection driver, the layers and the UDP relay call the non-HTTP hooks through
 * (connection, TLS, CONNECT, WebSocket, TCP, UDP, DNS): `has` says whether an addon defines a
 * hook (the callers skip the call entirely when none does), `run` calls it on every addon in
 * order. None when no addon is loaded.
 */
export function addonRunner(
  manager: AddonManager | undefined,
): { has(hook: EventHookName): boolean; run(call: AddonCall): Promise<void> } | undefined {
  if (!manager || manager.addons.length === 0) return undefined;
  return {
    has: (hook) => manager.has(hook),
    run: (call) => manager.trigger(call.hook, call.payload as never),
  };
}

/**
 * The listener's peer notices as `wireguardPeer` calls: each handshake, `online` with the first
 * handshake of a peer not online, `offline` when its session expires. Calls run one after
 * another. Null when no addon has the hook.
 */
export function wireguardPeerNotices(
  runner: ReturnType<typeof addonRunner>,
): ((e: { publicKey: string; endpoint?: string; kind: "handshake" | "expired" }) => void) | null {
  if (!runner?.has("wireguardPeer")) return null;
  const online = new Set<string>();
  let chain: Promise<void> = Promise.resolve();
  return (e) => {
    const events: WireGuardPeerEvent["event"][] = [];
    if (e.kind === "handshake") {
      events.push("handshake");
      if (!online.has(e.publicKey)) events.push("online");
      online.add(e.publicKey);
    } else if (online.delete(e.publicKey)) {
      events.push("offline");
    }
    for (const event of events) {
      const payload: WireGuardPeerEvent = {
        publicKey: e.publicKey,
        ...(e.endpoint ? { endpoint: e.endpoint } : {}),
        event,
      };
      chain = chain.then(() => runner.run({ hook: "wireguardPeer", payload }));
    }
  };
}
