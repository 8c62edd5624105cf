/**
 * The last line of defence: an error that escapes everything else while serving one connection
 * (an exception thrown from a library callback, a rejection nobody handles) must cost that
 * connection, never the process.
 *
 * Each connection runs inside a {@link ConnectionScope} carried by `AsyncLocalStorage`, which
 * follows promises, timers and node's `nextTick` callbacks. The first call installs one
 * `error` and one `unhandledrejection` listener on `globalThis`. An event raised inside a scope
 * is stopped (`preventDefault`), logged with the scope's description and flow, and the scope's
 * connection is reset. Errors from node:tls internals with no scope (they can run after a
 * connection's own callbacks have finished) are stopped and logged the same way. Everything else
 * is left alone, so a program embedding wirescope keeps its own crash behaviour.
 *
 * Limit (measured in this Deno): the scope is known for exceptions from `nextTick` callbacks
 * (where node:tls raises its own), microtasks and unhandled rejections, but not for one thrown
 * straight out of a timer callback; wirescope's drivers do no throwing work in timer callbacks.
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";

/** What the guard knows about the connection an error belongs to. */
export interface ConnectionScope {
  /** Who and where, e.g. "connection 10.0.0.2:51000 -> 93.184.216.34:443". */
  describe(): string;
  /** The flow being recorded, when there is one. */
  flowId?: string;
  /** Reports the error (as a log line). */
  report(message: string): void;
  /** Ends the connection (a reset: its state is unknown). */
  abort(): void;
}

const scopes = new AsyncLocalStorage<ConnectionScope>();
let installed = false;
let unscoped: ((message: string) => void) | null = null;
let caught = 0;

/** How many errors the guard has stopped since the process started. */
export function lastResortCount(): number {
  return caught;
}

/**
 * Runs `fn` (one connection's whole life) inside `scope`, installing the guard on first use.
 * `fallbackReport` receives errors from TLS internals that carry no scope.
 */
export function runInConnectionScope<T>(
  scope: ConnectionScope,
  fn: () => Promise<T>,
  fallbackReport?: (message: string) => void,
): Promise<T> {
  install();
  if (fallbackReport) unscoped = fallbackReport;
  return scopes.run(scope, fn);
}

/** The scope of the code running now, if any (so a driver can note its flow id). */
export function currentScope(): ConnectionScope | undefined {
  return scopes.getStore();
}

/** Code from node's TLS and stream internals, which run our sockets' callbacks. */
const NODE_INTERNALS = /ext:deno_node\/(_tls_wrap|_stream_wrap|internal\/streams|internal_binding)/;

function install(): void {
  if (installed) return;
  installed = true;
  globalThis.addEventListener("error", (event) => {
    if (handle(event.error, "uncaught exception")) event.preventDefault();
  });
  globalThis.addEventListener("unhandledrejection", (event) => {
    if (handle(event.reason, "unhandled rejection")) event.preventDefault();
  });
}

function handle(error: unknown, kind: string): boolean {
  const scope = scopes.getStore();
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  const where = error instanceof Error ? firstFrame(error.stack) : "";
  if (scope) {
    caught++;
    const flow = scope.flowId ? ` (flow ${scope.flowId})` : "";
    try {
      scope.report(`${kind} in ${scope.describe()}${flow}: ${text}${where}; that connection was reset`);
      scope.abort();
    } catch { /* the guard itself must not throw */ }
    return true;
  }
  if (error instanceof Error && NODE_INTERNALS.test(error.stack ?? "")) {
    caught++;
    try {
      unscoped?.(`${kind} in the TLS library, outside any connection: ${text}${where}`);
    } catch { /* as above */ }
    return true;
  }
  return false;
}

function firstFrame(stack: string | undefined): string {
  const line = stack?.split("\n").find((l) => l.trim().startsWith("at "));
  return line ? ` (${line.trim()})` : "";
}
