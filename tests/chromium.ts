/**
 * Headless Chromium (Debian's `chromium`) for the browser checks: a throwaway `HOME` whose NSS
 * database trusts a given CA (as Chromium on Linux reads it), a one-shot `--dump-dom` run (also
 * inside a network namespace) and a DevTools-protocol session over the browser's WebSocket.
 * Every wait is bounded; `close()` ends the browser process.
 * @module
 */
import { sh } from "./rig.ts";

/** Arguments every run gets: no sandbox (tests run as root), nothing fetched in the background. */
const BASE_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--no-default-browser-check",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-default-apps",
  "--disable-extensions",
  "--metrics-recording-only",
  "--password-store=basic",
  "--use-mock-keychain",
];

/** Whether `chromium` and `certutil` (libnss3-tools) are installed. */
export async function chromiumAvailable(): Promise<boolean> {
  const ok = async (cmd: string) =>
    (await new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null", stderr: "null" })
      .output()).success;
  return await ok("chromium") && await ok("certutil");
}

/**
 * A temporary `HOME` whose NSS database (`.pki/nssdb`, where Chromium on Linux keeps its roots)
 * trusts the CA in `caFile` for servers, plus a profile directory. Remove it with `Deno.remove`.
 */
export async function homeTrusting(caFile: string): Promise<string> {
  const home = await Deno.makeTempDir({ prefix: "wirescope-chromium-" });
  const db = `sql:${home}/.pki/nssdb`;
  await Deno.mkdir(`${home}/.pki/nssdb`, { recursive: true });
  await sh(["certutil", "-d", db, "-N", "--empty-password"]);
  await sh(["certutil", "-d", db, "-A", "-t", "C,,", "-n", "wirescope test CA", "-i", caFile]);
  return home;
}

/** Ends a child process: SIGTERM, then SIGKILL if it is still there after `ms`. */
async function stop(p: Deno.ChildProcess, ms = 3000): Promise<void> {
  try {
    p.kill("SIGTERM");
  } catch { /* gone */ }
  const timer = setTimeout(() => {
    try {
      p.kill("SIGKILL");
    } catch { /* gone */ }
  }, ms);
  await p.status.catch(() => {});
  clearTimeout(timer);
}

/**
 * Loads `url` once with `--dump-dom` and returns the DOM after the load, with the wall time of the
 * whole run (browser start included). `netns` runs it inside that network namespace.
 */
export async function dumpDom(
  url: string,
  opts: { home: string; args?: string[]; netns?: string; timeoutMs?: number },
): Promise<{ dom: string; ms: number; stderr: string }> {
  const argv = [
    ...BASE_ARGS,
    `--user-data-dir=${opts.home}/profile`,
    ...(opts.args ?? []),
    "--dump-dom",
    url,
  ];
  const cmd = opts.netns ? ["ip", "netns", "exec", opts.netns, "chromium", ...argv] : ["chromium", ...argv];
  const start = performance.now();
  const child = new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    env: { HOME: opts.home },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => void stop(child), opts.timeoutMs ?? 30_000);
  try {
    const out = await child.output();
    const d = new TextDecoder();
    return { dom: d.decode(out.stdout), ms: performance.now() - start, stderr: d.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

/** An answer or event of the DevTools protocol. */
interface CdpMessage {
  id?: number;
  method?: string;
  sessionId?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { message: string };
}

/** A headless Chromium driven over the DevTools protocol (the browser's WebSocket, flat sessions). */
export class Chromium {
  #child: Deno.ChildProcess;
  #ws: WebSocket;
  #next = 1;
  #pending = new Map<number, { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  #waiters: { method: string; sessionId?: string; resolve: (p: Record<string, unknown>) => void }[] = [];
  /** Every event received, in order (for checks after the fact). */
  readonly events: CdpMessage[] = [];

  private constructor(child: Deno.ChildProcess, ws: WebSocket) {
    this.#child = child;
    this.#ws = ws;
    ws.onmessage = (e) => this.#receive(JSON.parse(e.data as string) as CdpMessage);
    ws.onclose = () => {
      for (const p of this.#pending.values()) p.reject(new Error("DevTools connection closed"));
      this.#pending.clear();
    };
  }

  /** Starts the browser (with `HOME` = `home`) and connects to it; bounded by `timeoutMs`. */
  static async launch(opts: { home: string; args?: string[]; timeoutMs?: number }): Promise<Chromium> {
    const child = new Deno.Command("chromium", {
      args: [
        ...BASE_ARGS,
        `--user-data-dir=${opts.home}/profile`,
        "--remote-debugging-port=0",
        ...(opts.args ?? []),
        "about:blank",
      ],
      env: { HOME: opts.home },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      const url = await devtoolsUrl(child.stderr, opts.timeoutMs ?? 20_000);
      const ws = new WebSocket(url);
      await new Promise<void>((resolve, reject) => {
        ws.onopen = () => resolve();
        ws.onerror = () => reject(new Error(`cannot connect to ${url}`));
      });
      return new Chromium(child, ws);
    } catch (e) {
      await stop(child);
      throw e;
    }
  }

  #receive(m: CdpMessage): void {
    if (m.id !== undefined) {
      const p = this.#pending.get(m.id);
      this.#pending.delete(m.id);
      if (m.error) p?.reject(new Error(m.error.message));
      else p?.resolve(m.result ?? {});
      return;
    }
    this.events.push(m);
    const i = this.#waiters.findIndex((w) =>
      w.method === m.method && (!w.sessionId || w.sessionId === m.sessionId)
    );
    if (i >= 0) this.#waiters.splice(i, 1)[0]!.resolve(m.params ?? {});
  }

  /** Calls a protocol method (on a page when `sessionId` is given), bounded by 20 s. */
  send(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
  ): Promise<Record<string, unknown>> {
    const id = this.#next++;
    this.#ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${method}: no answer in 20 s`));
      }, 20_000);
      this.#pending.set(id, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  /** The next event `method` (of `sessionId`'s page, when given), bounded by `timeoutMs`. */
  waitFor(
    method: string,
    sessionId: string | undefined,
    timeoutMs: number,
  ): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const waiter = {
        method,
        ...(sessionId ? { sessionId } : {}),
        resolve: (p: Record<string, unknown>) => {
          clearTimeout(timer);
          resolve(p);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        reject(new Error(`no ${method} in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }

  /** Opens a new page (tab) and returns its flat session id, with Page and Network enabled. */
  async newPage(): Promise<string> {
    const { targetId } = await this.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true });
    const s = sessionId as string;
    await this.send("Page.enable", {}, s);
    await this.send("Network.enable", {}, s);
    return s;
  }

  /** Navigates a page and waits for its load event (bounded). */
  async load(sessionId: string, url: string, timeoutMs = 20_000): Promise<void> {
    const loaded = this.waitFor("Page.loadEventFired", sessionId, timeoutMs);
    const r = await this.send("Page.navigate", { url }, sessionId);
    if (r.errorText) {
      loaded.catch(() => {});
      throw new Error(`navigation to ${url} failed: ${r.errorText}`);
    }
    await loaded;
  }

  /** Evaluates a JavaScript expression in a page and returns its value (awaiting promises). */
  async evaluate<T>(sessionId: string, expression: string): Promise<T> {
    const r = await this.send(
      "Runtime.evaluate",
      { expression, returnByValue: true, awaitPromise: true },
      sessionId,
    );
    const ex = r.exceptionDetails as { text?: string } | undefined;
    if (ex) throw new Error(`evaluation failed: ${ex.text ?? JSON.stringify(ex)}`);
    return (r.result as { value: T }).value;
  }

  /** Closes the browser (Browser.close, then signals) and waits for its process. */
  async close(): Promise<void> {
    await Promise.race([
      this.send("Browser.close").catch(() => {}),
      new Promise((r) => setTimeout(r, 2000)),
    ]);
    try {
      this.#ws.close();
    } catch { /* closed */ }
    await stop(this.#child);
    await this.#child.stderr.cancel().catch(() => {});
  }
}

/** Reads the browser's stderr until it names its DevTools WebSocket; the rest is drained. */
async function devtoolsUrl(stderr: ReadableStream<Uint8Array>, timeoutMs: number): Promise<string> {
  const reader = stderr.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const deadline = setTimeout(() => reader.cancel().catch(() => {}), timeoutMs);
  try {
    for (let i = 0; i < 10_000; i++) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(text);
      if (m) {
        // Keep reading (and dropping) what the browser logs, so that its stderr never fills up.
        (async () => {
          for (;;) if ((await reader.read()).done) return;
        })().catch(() => {});
        return m[1]!;
      }
    }
  } finally {
    clearTimeout(deadline);
  }
  throw new Error(`chromium did not open DevTools in ${timeoutMs} ms: ${text.slice(-2000)}`);
}
