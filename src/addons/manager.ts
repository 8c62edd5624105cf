/**
 * The addon manager: loads addons (objects, or modules given with `-s FILE.ts`), keeps their
 * options, calls their hooks in load order (one addon after another, each awaited), isolates
 * their errors, and reloads files that change.
 *
 * Errors: a hook that throws (or rejects) gets one log line with the addon's name, the hook and
 * the stack; the payload goes on as that hook left it to the next addon and to the wire, and
 * the proxy keeps serving.
 *
 * Files: a module's default export (one addon or an array) and its `addons` array are loaded.
 * Loading is a dynamic `import()` of the file's URL with a query that changes on each reload
 * (Deno caches modules by URL), so only the file itself is re-read on reload, not the modules it
 * imports. Files are not type-checked here: a type check (`deno check`) costs seconds per start
 * and reload, and a syntax error surfaces from the import anyway; `deno check FILE.ts` is the way
 * to check an addon against these types. A file that fails to load at start is an error (the CLI
 * prints one line and exits 2); at reload the old version stays and the error is logged.
 * @module
 */
import { pathToFileURL } from "node:url";
import { resolve } from "node:path";
import type { HttpFlow } from "../flows/flow.ts";
import { HttpFlowView, type HttpVerdict } from "./flow_handle.ts";
import type {
  Addon,
  AddonContext,
  AddonModule,
  EventHookName,
  HookPayload,
  HttpHookName,
  OptionSpec,
  OptionValue,
} from "./types.ts";

/** Where the manager's log lines go. */
export type AddonLog = (level: "debug" | "info" | "warn" | "error", message: string) => void;

/** A loaded addon with where it came from. */
interface Loaded {
  addon: Addon;
  name: string;
  /** The file it came from (`-s`), with its index among the file's addons. */
  file?: string;
  ctx: AddonContext;
}

/** A declared option and its current value. */
interface OptionEntry {
  spec: OptionSpec;
  value: OptionValue;
  owner: string;
  /** Set by the user (not the default). */
  set: boolean;
}

/** An error in how addons or options were given (bad file, unknown option, bad value). */
export class AddonError extends Error {
  override name = "AddonError";
}

/** Options of {@link AddonManager}. */
export interface AddonManagerOptions {
  log?: AddonLog;
}

/** Where a flow keeps its HTTP hooks' handle (see {@link AddonManager.viewOf}). */
const VIEW = Symbol("wirescope.addonView");

/** Loads addons and calls their hooks. */
export class AddonManager {
  #loaded: Loaded[] = [];
  #options = new Map<string, OptionEntry>();
  /** `--set` values for options not declared yet (checked by {@link checkOptions}). */
  #pending = new Map<string, string[]>();
  #log: AddonLog;
  #watcher: Deno.FsWatcher | null = null;
  #generation = 0;
  #files: string[] = [];
  #stopped = false;
  /** Counts hook errors (for tests and stats). */
  errors = 0;

  constructor(options: AddonManagerOptions = {}) {
    this.#log = options.log ?? ((level, message) => console.error(`[${level}] ${message}`));
  }

  /** The loaded addons, in order. */
  get addons(): readonly Addon[] {
    return this.#loaded.map((l) => l.addon);
  }

  /** True when some loaded addon has hook `name`. */
  has(name: keyof Addon): boolean {
    return this.#loaded.some((l) => typeof l.addon[name] === "function");
  }

  /** True when an addon has any HTTP hook (the layers then hold exchanges for them). */
  get hasHttpHooks(): boolean {
    return this.has("requestheaders") || this.has("request") || this.has("responseheaders") ||
      this.has("response") || this.has("error");
  }

  /** Adds addon objects (their options are declared, `--set` values applied); `load` is not called here. */
  add(addons: Addon[], file?: string): void {
    for (const addon of addons) this.#insert(addon, this.#loaded.length, file);
  }

  /** Loads the addons of a module file (see the module doc). Throws {@link AddonError} when it cannot. */
  async addFile(path: string): Promise<Addon[]> {
    const file = resolve(path);
    const addons = await this.#importFile(file);
    this.add(addons, file);
    this.#files.push(file);
    return addons;
  }

  async #importFile(file: string): Promise<Addon[]> {
    let mod: AddonModule;
    try {
      mod = await import(`${pathToFileURL(file).href}?v=${Date.now()}-${this.#generation++}`) as AddonModule;
    } catch (e) {
      throw new AddonError(`cannot load addon ${file}: ${oneLine(e)}`);
    }
    const found: Addon[] = [];
    const def = mod.default;
    if (Array.isArray(def)) found.push(...def);
    else if (def !== undefined) found.push(def);
    if (Array.isArray(mod.addons)) found.push(...mod.addons);
    if (found.length === 0) {
      throw new AddonError(`addon ${file} exports no addon (a default export or an \`addons\` array)`);
    }
    for (const a of found) {
      if (a === null || typeof a !== "object") {
        throw new AddonError(`addon ${file}: an addon must be an object`);
      }
    }
    return found;
  }

  #insert(addon: Addon, at: number, file?: string): void {
    const name = addon.name ?? (file ? file.replace(/^.*\//, "") : `addon ${at + 1}`);
    for (const [opt, spec] of Object.entries(addon.options ?? {})) {
      const existing = this.#options.get(opt);
      if (existing && existing.owner !== name) {
        throw new AddonError(`option ${opt} of ${name} is already declared by ${existing.owner}`);
      }
      checkSpec(opt, spec);
      const entry: OptionEntry = existing ?? { spec, value: spec.default, owner: name, set: false };
      entry.spec = spec;
      const given = this.#pending.get(opt);
      if (given) {
        entry.value = parseOption(opt, spec, given);
        entry.set = true;
        this.#pending.delete(opt);
      }
      this.#options.set(opt, entry);
    }
    const ctx = this.#context(name);
    this.#loaded.splice(at, 0, { addon, name, ...(file ? { file } : {}), ctx });
  }

  #context(name: string): AddonContext {
    const options = new Proxy({}, {
      get: (_t, key) => typeof key === "string" ? this.#options.get(key)?.value : undefined,
      has: (_t, key) => typeof key === "string" && this.#options.has(key),
      ownKeys: () => [...this.#options.keys()],
      getOwnPropertyDescriptor: (_t, key) =>
        typeof key === "string" && this.#options.has(key)
          ? { enumerable: true, configurable: true, value: this.#options.get(key)!.value }
          : undefined,
    }) as AddonContext["options"];
    return { options, log: (level, message) => this.#log(level, `${name}: ${message}`) };
  }

  // ---- options ---------------------------------------------------------------------------

  /**
   * Applies `--set name=value` strings. Options not declared yet are kept until an addon
   * declares them; {@link checkOptions} reports those still unknown. A `string[]` option takes
   * every value given for it (the first replaces the default).
   */
  set(pairs: string[]): string[] {
    const changed: string[] = [];
    const byName = new Map<string, string[]>();
    for (const pair of pairs) {
      const eq = pair.indexOf("=");
      if (eq <= 0) throw new AddonError(`--set wants name=value, got ${JSON.stringify(pair)}`);
      const name = pair.slice(0, eq);
      byName.set(name, [...(byName.get(name) ?? []), pair.slice(eq + 1)]);
    }
    for (const [name, values] of byName) {
      const entry = this.#options.get(name);
      if (!entry) {
        this.#pending.set(name, [...(this.#pending.get(name) ?? []), ...values]);
        continue;
      }
      entry.value = parseOption(name, entry.spec, values);
      entry.set = true;
      changed.push(name);
    }
    return changed;
  }

  /** Declares an option that is not an addon's (a built-in one `--set` may name). */
  declare(name: string, spec: OptionSpec, owner = "wirescope"): void {
    this.#insertOption(name, spec, owner);
  }

  #insertOption(name: string, spec: OptionSpec, owner: string): void {
    checkSpec(name, spec);
    const entry: OptionEntry = { spec, value: spec.default, owner, set: false };
    const given = this.#pending.get(name);
    if (given) {
      entry.value = parseOption(name, spec, given);
      entry.set = true;
      this.#pending.delete(name);
    }
    this.#options.set(name, entry);
  }

  /** Throws {@link AddonError} naming `--set` options no addon declared. */
  checkOptions(): void {
    const unknown = [...this.#pending.keys()];
    if (unknown.length > 0) {
      const known = [...this.#options.keys()];
      throw new AddonError(
        `unknown option${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")} (known: ${
          known.length ? known.join(", ") : "none"
        })`,
      );
    }
  }

  /** The current value of option `name`. */
  option(name: string): OptionValue | undefined {
    return this.#options.get(name)?.value;
  }

  /** The declared options with their owners, for `--help`. */
  describeOptions(): { name: string; type: string; default: OptionValue; help: string; owner: string }[] {
    return [...this.#options].map(([name, e]) => ({
      name,
      type: e.spec.type,
      default: e.spec.default,
      help: e.spec.help,
      owner: e.owner,
    }));
  }

  // ---- lifecycle -------------------------------------------------------------------------

  /** Calls `load` then `configure` (with every option) on each addon, in order. */
  async start(): Promise<void> {
    for (const l of [...this.#loaded]) await this.#load(l);
  }

  async #load(l: Loaded): Promise<void> {
    await this.#call(l, "load", () => l.addon.load?.(l.ctx));
    const names = new Set(Object.keys(l.addon.options ?? {}));
    await this.#call(l, "configure", () => l.addon.configure?.(names, l.ctx));
  }

  /** Sets options at run time and calls every addon's `configure` with the names that changed. */
  async configure(pairs: string[]): Promise<void> {
    const changed = new Set(this.set(pairs));
    if (changed.size === 0) return;
    for (const l of [...this.#loaded]) {
      await this.#call(l, "configure", () => l.addon.configure?.(changed, l.ctx));
    }
  }

  /** Calls `running` on each addon. */
  async running(): Promise<void> {
    for (const l of [...this.#loaded]) await this.#call(l, "running", () => l.addon.running?.(l.ctx));
  }

  /** Stops watching files and calls `done` on each addon (once). */
  async done(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#watcher?.close();
    this.#watcher = null;
    for (const l of [...this.#loaded]) await this.#call(l, "done", () => l.addon.done?.(l.ctx));
  }

  // ---- hooks -----------------------------------------------------------------------------

  /** Calls hook `name` of every addon that has it, in order, each awaited. */
  async trigger<K extends EventHookName>(name: K, payload: HookPayload<K>): Promise<void> {
    for (const l of this.#loaded) {
      const hook = l.addon[name] as ((p: HookPayload<K>, c: AddonContext) => unknown) | undefined;
      if (typeof hook !== "function") continue;
      await this.#call(l, name, () => hook.call(l.addon, payload, l.ctx));
    }
  }

  /** The handle HTTP hooks get for `flow` (one per flow, kept across its hooks). */
  viewOf(flow: HttpFlow): HttpFlowView {
    // Kept on the flow under a symbol, not in a WeakMap: a WeakMap with an entry per live flow made
    // the garbage collector's work per request several times the hooks' own (bench/addon_load.ts).
    const holder = flow as HttpFlow & { [VIEW]?: HttpFlowView };
    let view = holder[VIEW];
    if (!view) {
      view = new HttpFlowView(flow);
      // Not enumerable: spreads, JSON and structured clones of the flow leave it out.
      Object.defineProperty(holder, VIEW, { value: view, enumerable: false, configurable: true });
    }
    return view;
  }

  /**
   * Runs HTTP hook `names` (one after the other) for `flow`: each addon in order, waiting while a hook left the flow
   * intercepted; once one answers or kills, the rest are skipped. Returns what they decided.
   */
  async http(names: HttpHookName | HttpHookName[], flow: HttpFlow): Promise<HttpVerdict | undefined> {
    const view = this.viewOf(flow);
    for (const name of typeof names === "string" ? [names] : names) {
      view.enter(name);
      for (const l of this.#loaded) {
        const hook = l.addon[name];
        if (typeof hook !== "function") continue;
        // A hook that returns no promise is not awaited (a microtask per hook and addon adds up).
        const result = this.#callSync(l, name, () => hook.call(l.addon, view, l.ctx), flow);
        if (result !== undefined) await result;
        if (view.intercepted) await view.waitResumed();
        if (view.decided) break;
      }
      if (view.decided) break;
    }
    const verdict = view.verdict();
    view.applied();
    return verdict;
  }

  /** Calls an HTTP hook: a promise to await when it returned one, else undefined (errors logged). */
  #callSync(l: Loaded, hook: string, fn: () => unknown, flow: HttpFlow): Promise<void> | undefined {
    let result: unknown;
    try {
      result = fn();
    } catch (e) {
      this.#failed(l, hook, e, flow.request.url);
      return undefined;
    }
    if (
      result === null || typeof result !== "object" || typeof (result as Promise<void>).then !== "function"
    ) {
      return undefined;
    }
    return Promise.resolve(result as Promise<void>).then(
      () => {},
      (e) => this.#failed(l, hook, e, flow.request.url),
    );
  }

  #failed(l: Loaded, hook: string, e: unknown, about?: string): void {
    this.errors++;
    const where = about ? ` on ${about}` : "";
    const text = e instanceof Error ? (e.stack ?? `${e.name}: ${e.message}`) : String(e);
    this.#log("error", `addon ${l.name}: ${hook}${where} failed: ${text.replace(/\n\s*/g, " | ")}`);
  }

  async #call(l: Loaded, hook: string, fn: () => unknown, about?: string): Promise<void> {
    try {
      await fn();
    } catch (e) {
      this.errors++;
      const where = about ? ` on ${about}` : "";
      const text = e instanceof Error ? (e.stack ?? `${e.name}: ${e.message}`) : String(e);
      this.#log("error", `addon ${l.name}: ${hook}${where} failed: ${text.replace(/\n\s*/g, " | ")}`);
    }
  }

  // ---- reload ----------------------------------------------------------------------------

  /**
   * Watches the files loaded with {@link addFile} and reloads one when it changes: the new
   * version replaces the old in the same place (the old one's `done`, then the new one's `load`
   * and `configure`); a version that fails to load is logged and the old one stays.
   */
  watch(debounceMs = 150): void {
    if (this.#watcher || this.#files.length === 0 || this.#stopped) return;
    const watcher = Deno.watchFs(this.#files, { recursive: false });
    this.#watcher = watcher;
    const timers = new Map<string, ReturnType<typeof setTimeout>>();
    (async () => {
      try {
        for await (const event of watcher) {
          if (event.kind !== "modify" && event.kind !== "create") continue;
          for (const path of event.paths) {
            const file = this.#files.find((f) => f === path);
            if (!file) continue;
            clearTimeout(timers.get(file));
            timers.set(
              file,
              setTimeout(() => {
                timers.delete(file);
                void this.reload(file);
              }, debounceMs),
            );
          }
        }
      } catch { /* closed */ }
      for (const t of timers.values()) clearTimeout(t);
    })();
  }

  /** Reloads the addons of `file` (see {@link watch}); false when the new version failed to load. */
  async reload(file: string): Promise<boolean> {
    if (this.#stopped) return false;
    let fresh: Addon[];
    try {
      fresh = await this.#importFile(file);
    } catch (e) {
      this.#log("error", `${oneLine(e)}; the previous version stays loaded`);
      return false;
    }
    const at = this.#loaded.findIndex((l) => l.file === file);
    const old = this.#loaded.filter((l) => l.file === file);
    for (const l of old) await this.#call(l, "done", () => l.addon.done?.(l.ctx));
    // Options the old version declared are forgotten unless the new one declares them again;
    // values the user set carry over.
    const kept = new Map<string, OptionEntry>();
    for (const l of old) {
      for (const name of Object.keys(l.addon.options ?? {})) {
        const entry = this.#options.get(name);
        if (entry) kept.set(name, entry);
        this.#options.delete(name);
      }
    }
    this.#loaded = this.#loaded.filter((l) => l.file !== file);
    const start = at < 0 ? this.#loaded.length : at;
    const added: Loaded[] = [];
    try {
      fresh.forEach((addon, i) => {
        const before = new Set(this.#options.keys());
        this.#insert(addon, start + i, file);
        for (const name of this.#options.keys()) {
          const prev = kept.get(name);
          if (!before.has(name) && prev?.set) {
            const entry = this.#options.get(name)!;
            if (entry.spec.type === prev.spec.type) {
              entry.value = prev.value;
              entry.set = true;
            }
          }
        }
        added.push(this.#loaded[start + i]!);
      });
    } catch (e) {
      this.#log("error", `reloading ${file}: ${oneLine(e)}`);
      return false;
    }
    for (const l of added) await this.#load(l);
    this.#log("info", `reloaded addon ${file}`);
    return true;
  }
}

function checkSpec(name: string, spec: OptionSpec): void {
  if (!/^[a-z][a-z0-9_]*$/i.test(name)) throw new AddonError(`bad option name ${JSON.stringify(name)}`);
  const ok = spec.type === "string[]"
    ? Array.isArray(spec.default) && spec.default.every((v) => typeof v === "string")
    : (typeof spec.default as string) === spec.type;
  if (!ok) {
    throw new AddonError(`option ${name}: default ${JSON.stringify(spec.default)} is not a ${spec.type}`);
  }
}

/** Parses the `--set` values given for one option after its declared type. */
export function parseOption(name: string, spec: OptionSpec, values: string[]): OptionValue {
  if (spec.type === "string[]") return values.flatMap((v) => (v === "" ? [] : [v]));
  const value = values[values.length - 1]!;
  switch (spec.type) {
    case "string":
      return value;
    case "number": {
      const n = value.trim() === "" ? NaN : Number(value);
      if (!Number.isFinite(n)) {
        throw new AddonError(`option ${name} wants a number, got ${JSON.stringify(value)}`);
      }
      return n;
    }
    case "boolean": {
      const v = value.toLowerCase();
      if (["true", "1", "yes", "on"].includes(v)) return true;
      if (["false", "0", "no", "off"].includes(v)) return false;
      throw new AddonError(`option ${name} wants true or false, got ${JSON.stringify(value)}`);
    }
  }
}

function oneLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.split("\n").map((s) => s.trim()).filter(Boolean).join(" | ");
}
