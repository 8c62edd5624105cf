/**
 * Headless Chromium (Debian's `chromium`) for the browser checks: a throwaway `HOME` whose NSS
 * database trusts a given CA (as Chromium on Linux reads it), a one-shot `--dump-dom` run (also
 * inside a network namespace) and a DevTools-protocol session over a pipe.
 * Every wait is bounded; `close()` ends the browser process.
 * @module
 */
import { reserveSlot, sh } from "./rig.ts";

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

/**
 * Waits (at most 10 s) until no IPv6 address of namespace `netns` is still tentative (duplicate
 * address detection): an address that turns usable while Chromium loads a page counts as a
 * network change, which fails the requests in flight with ERR_NETWORK_CHANGED.
 */
export async function settleNetwork(netns: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const tentative = await sh(["ip", "netns", "exec", netns, "ip", "-6", "addr", "show", "tentative"]);
    if (tentative.trim() === "") return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`addresses in ${netns} still tentative after 10 s`);
}

/**
 * A network namespace of its own for the browser, joined to this host by a veth on a /30 from
 * 172.31.208.0/20 (only addresses it creates), IPv4 only: the browser reaches services that
 * listen on {@link hostAddress}, and interfaces that other tests add and remove on the host are
 * not network changes to it. Needs root; `close()` removes it.
 */
export class BrowserNamespace {
  /** The namespace's name. */
  readonly ns: string;
  /** This host's end of the veth. */
  readonly hostAddress: string;
  #hostIf: string;
  #release: () => void;

  private constructor(ns: string, hostIf: string, hostAddress: string, release: () => void) {
    this.ns = ns;
    this.#hostIf = hostIf;
    this.hostAddress = hostAddress;
    this.#release = release;
  }

  /** Creates the namespace and its veth. */
  static async create(): Promise<BrowserNamespace> {
    const { slot, release } = reserveSlot("browser", 1000);
    const ns = `wsb${slot}`, hostIf = `wsbh${slot}`;
    await sh(["ip", "netns", "del", ns], { allowFail: true });
    await sh(["ip", "link", "del", hostIf], { allowFail: true });
    const n = slot * 4;
    const a = (k: number) => `172.31.${208 + ((n + k) >> 8)}.${(n + k) & 255}`;
    const b = new BrowserNamespace(ns, hostIf, a(1), release);
    try {
      await sh(["ip", "netns", "add", ns]);
      const exec = (cmd: string[]) => sh(["ip", "netns", "exec", ns, ...cmd]);
      // No IPv6: no link-local address whose duplicate detection ends while the browser runs.
      await exec(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
      await exec(["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"]);
      await sh(["ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns]);
      await sh(["ip", "addr", "add", `${a(1)}/30`, "dev", hostIf]);
      await sh(["ip", "link", "set", hostIf, "up"]);
      await exec(["ip", "addr", "add", `${a(2)}/30`, "dev", "eth0"]);
      await exec(["ip", "link", "set", "eth0", "up"]);
      await exec(["ip", "link", "set", "lo", "up"]);
    } catch (e) {
      await b.close();
      throw e;
    }
    return b;
  }

  /** Removes the namespace and the veth. */
  async close(): Promise<void> {
    await sh(["ip", "netns", "del", this.ns], { allowFail: true });
    await sh(["ip", "link", "del", this.#hostIf], { allowFail: true });
    try {
      this.#release();
    } catch { /* released already */ }
  }
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

/** A headless Chromium driven over the DevTools protocol (`--remote-debugging-pipe`, flat sessions). */
export class Chromium {
  #child: Deno.ChildProcess;
  #input: WritableStreamDefaultWriter<Uint8Array>;
  #closed = false;
  #next = 1;
  #pending = new Map<number, { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  #waiters: { method: string; sessionId?: string; resolve: (p: Record<string, unknown>) => void }[] = [];
  /** The end of what the browser logged (for error messages). */
  #log = "";
  /** Every event received, in order (for checks after the fact). */
  readonly events: CdpMessage[] = [];

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#input = child.stdin.getWriter();
    void this.#read(child.stdout);
    void (async () => {
      const d = new TextDecoder();
      for await (const chunk of child.stderr) {
        this.#log = (this.#log + d.decode(chunk, { stream: true })).slice(-4000);
      }
    })().catch(() => {});
  }

  /**
   * Starts the browser (with `HOME` = `home`, inside network namespace `netns` when given). The
   * protocol goes over the pipe Chromium reads on fd 3 and writes on fd 4 (our stdin and stdout
   * moved there), so it works inside a namespace too.
   */
  static launch(opts: { home: string; args?: string[]; netns?: string }): Promise<Chromium> {
    const chromium = [
      ...(opts.netns ? ["ip", "netns", "exec", opts.netns] : []),
      "chromium",
      ...BASE_ARGS,
      `--user-data-dir=${opts.home}/profile`,
      "--remote-debugging-pipe",
      ...(opts.args ?? []),
      "about:blank",
    ];
    const child = new Deno.Command("sh", {
      args: ["-c", 'exec "$@" 3<&0 4>&1 0</dev/null 1>/dev/null', "sh", ...chromium],
      env: { HOME: opts.home },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return Promise.resolve(new Chromium(child));
  }

  /** Reads NUL-terminated JSON messages from the browser until it closes the pipe. */
  async #read(stdout: ReadableStream<Uint8Array>): Promise<void> {
    const d = new TextDecoder();
    let text = "";
    try {
      for await (const chunk of stdout) {
        text += d.decode(chunk, { stream: true });
        for (let end = text.indexOf("\0"); end >= 0; end = text.indexOf("\0")) {
          this.#receive(JSON.parse(text.slice(0, end)) as CdpMessage);
          text = text.slice(end + 1);
        }
      }
    } catch { /* the browser went away */ }
    this.#closed = true;
    for (const p of this.#pending.values()) {
      p.reject(new Error(`chromium closed the pipe: ${this.#log.slice(-1500)}`));
    }
    this.#pending.clear();
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
    if (this.#closed) {
      return Promise.reject(new Error(`${method}: chromium is gone: ${this.#log.slice(-1500)}`));
    }
    const message = JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) });
    this.#input.write(new TextEncoder().encode(`${message}\0`)).catch(() => {});
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
    await this.#input.close().catch(() => {});
    await stop(this.#child);
  }
}
