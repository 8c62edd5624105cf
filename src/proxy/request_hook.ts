/**
 * The request hook: a function the proxy calls for each HTTP request once the request (head and
 * body) is in, before the server is contacted for it. It may let the request go on, answer it
 * itself (the server is then never dialed for it), or kill the exchange. Server replay is built
 * on it; addons will be too.
 *
 * The layers stay sans-IO: a layer that wants the hook's verdict returns a `request-hook`
 * command, the driver calls the hook (awaiting it when it is async) and feeds the verdict back as
 * a `hook-result` event.
 * @module
 */
import type { HttpFlow } from "../flows/flow.ts";
import type { LocalResponse } from "./cert_page.ts";
import type { BodyTransform } from "../addons/types.ts";

export type { LocalResponse };

/**
 * What a hook decided: `undefined` lets the request go to the server; a response answers the
 * client with it (recorded in the flow, with `flow.replay` set when the hook says so); `"kill"`
 * closes the client connection and records the flow as killed.
 */
export type RequestVerdict = HookResponse | "kill" | RequestChange | undefined;

/**
 * The request goes on changed (addons, see src/addons): method, target, headers and, when the
 * whole body was in, the body. The layer rebuilds the head (Content-Length fixed up for a new
 * body) and records what it sent.
 */
export interface RequestChange {
  change: {
    method: string;
    host: string;
    port: number;
    path: string;
    headers: [string, string][];
    body?: Uint8Array;
  };
}

/**
 * What response hooks decided about a response held by the layer: `undefined` sends it on as it
 * came, `"kill"` resets both sides, `respond` replaces it, `change` sends it changed (status,
 * reason, headers; the body when it was in whole, with Content-Length fixed up).
 */
export type ResponseVerdict =
  | undefined
  | "kill"
  | { respond: LocalResponse }
  | {
    change: {
      status: number;
      reason: string;
      headers: [string, string][];
      body?: Uint8Array;
      /** From the `headers` phase: the body streams through this transform (`true`: unchanged). */
      stream?: BodyTransform | true;
    };
  };

/**
 * Called with a flow whose response is held (head, and body up to `bodyLimit`). A hook with
 * `phases` can also be asked in two steps by layers that support it: `headers` with the head
 * only (its verdict may set a stream transform), then `body` (absent: nothing wants the body
 * held) with the body held, unless a transform streams it.
 */
export type ResponseHook = ((flow: HttpFlow) => Promise<ResponseVerdict>) & {
  phases?: {
    headers(flow: HttpFlow): Promise<ResponseVerdict>;
    body?: (flow: HttpFlow) => Promise<ResponseVerdict>;
  };
};

/** A response made by a hook. */
export interface HookResponse extends LocalResponse {
  /** Marks the flow as answered by server replay (`flow.replay = "server"`). */
  replay?: "server";
}

/**
 * Called with the flow of each request once its head and body are in (the body as far as the
 * proxy keeps it: `flow.request.body.truncated` tells when the body was longer). The flow must
 * not be changed by the hook. A hook that throws or rejects lets the request go on; the error is
 * logged.
 */
export type RequestHook = (flow: HttpFlow) => RequestVerdict | Promise<RequestVerdict>;

/** Calls `hook`, turning a throw or a rejection into `{ error }`. */
export async function callRequestHook(
  hook: RequestHook,
  flow: HttpFlow,
): Promise<{ verdict: RequestVerdict } | { error: string }> {
  try {
    return { verdict: await hook(flow) };
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e) };
  }
}
