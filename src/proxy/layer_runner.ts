/**
 * Runs one sans-IO {@link Layer} between a client stream and a server stream: two read loops turn
 * bytes into events, and each event's commands are issued in order and awaited together, so a
 * side that stops reading stops the other side's reads (backpressure end to end).
 * @module
 */
import type { ByteStream } from "./byte_stream.ts";
import type { Flow, FlowBus, HostPort, HttpFlow } from "../flows/flow.ts";
import type { AddonCall, Layer, LayerCommand, LayerEvent, Side } from "./layer.ts";
import {
  callRequestHook,
  type RequestHook,
  type ResponseHook,
  type ResponseVerdict,
} from "./request_hook.ts";
import type { BodyTransform } from "../addons/types.ts";

const EMPTY = new Uint8Array(0);

/** A connection to a server, as opened by the driver. */
export interface OpenedServer {
  stream: ByteStream;
  /** The address actually reached. */
  remote: HostPort;
}

/** How a layer's run ended. */
export interface LayerRunResult {
  /** Set when the client asked for a CONNECT tunnel: the connection continues as a new one. */
  tunnel?: { address: HostPort; buffered: Uint8Array; httpVersion: string };
}

/**
 * A limit on the time a client takes to send a complete request head, counted from the moment
 * the layer starts waiting for one: the start of the run, or the end of the previous exchange
 * on a keep-alive connection. Only layers that report {@link Layer.waitingForRequestHead} are
 * timed; when it expires the driver closes the connection (nothing is recorded: there is no
 * request) and calls `expired`.
 */
export interface HeadTimeout {
  ms: number;
  /**
   * Called once when the time is up. `partial`: some bytes of a head had come; `afterRequest`:
   * the connection had served a request before.
   */
  expired(info: { partial: boolean; afterRequest: boolean }): void;
}

/** Options of {@link runLayer}. */
export interface RunLayerOptions {
  layer: Layer;
  client: ByteStream;
  /** The server connection when the layer starts with one. */
  server: ByteStream | null;
  openServer: (address: HostPort) => Promise<OpenedServer>;
  bus: FlowBus;
  /** Commands to carry out before the first event (e.g. a layer's start commands). */
  initialCommands?: LayerCommand[];
  /** Events to feed before reading (e.g. the bytes read while classifying the connection). */
  initialEvents?: LayerEvent[];
  /** Closes the connection when a request head does not come in time. */
  headTimeout?: HeadTimeout;
  /** Answers the layer's `request-hook` commands (absent: every request goes on). */
  requestHook?: RequestHook;
  /** Answers the layer's `response-hook` commands (a hook that throws lets the response go on). */
  responseHook?: ResponseHook;
  /** Told of every flow that ends (addons' `error` hook for failed exchanges). */
  flowEnded?: (flow: Flow) => void;
  /** Runs the layer's `addon-hook` commands (absent: each is answered at once, nothing changed). */
  addons?: AddonRunner;
}

/** What runs addon hooks for the driver (an `AddonManager` is one). */
export interface AddonRunner {
  /** Calls every addon's hook `call.hook` with `call.payload`, in order; never rejects. */
  run(call: AddonCall): Promise<void>;
}

/** Drives `layer` until it closes the client side (or hands it off as a tunnel). */
export function runLayer(options: RunLayerOptions): Promise<LayerRunResult> {
  return new LayerRunner(options).run();
}

class LayerRunner {
  #o: RunLayerOptions;
  #server: ByteStream | null;
  #serverGen = 0;
  /** The generation of the server connection whose read loop runs (-1: none). */
  #serverReading = -1;
  #connecting: Promise<void> | null = null;
  /** The layer's own timer (see the `timer` command). */
  #layerTimer: ReturnType<typeof setTimeout> | null = null;
  #done = false;
  #failed = new Set<Side>();
  #result: LayerRunResult = {};
  #finish!: () => void;
  #finished = new Promise<void>((r) => (this.#finish = r));
  /** When the layer began waiting for the current request head (null: not waiting). */
  #headSince: number | null = null;
  /** Client bytes received since then. */
  #headBytes = 0;
  #servedRequest = false;
  /**
   * One timer per connection at most: it is armed when a wait begins and none is pending, and on
   * firing re-arms for the rest of a newer wait, so keep-alive requests set no timer each.
   */
  #headTimer: ReturnType<typeof setTimeout> | null = null;
  /** Numbered server connections of a layer that keeps several (see `conn` in layer.ts). */
  #pool = new Map<number, PooledServer>();
  /** The last addon hook call: the next one starts after it, so results come back in order. */
  #hooks: Promise<void> = Promise.resolve();
  /** The last stream transform call: the next one starts after it, so results come back in order. */
  #transforms: Promise<void> = Promise.resolve();

  constructor(options: RunLayerOptions) {
    this.#o = options;
    this.#server = options.server;
  }

  async run(): Promise<LayerRunResult> {
    if (this.#o.initialCommands) await this.#execute(this.#o.initialCommands);
    this.#checkHead();
    for (const event of this.#o.initialEvents ?? []) {
      if (this.#done) break;
      await this.#dispatch(event);
    }
    if (!this.#done) {
      void this.#readLoop("client", this.#o.client, 0);
      if (this.#server) this.#readServer(this.#server, this.#serverGen);
    }
    await this.#finished;
    if (this.#headTimer !== null) clearTimeout(this.#headTimer);
    this.#headTimer = null;
    if (this.#server) {
      this.#server.close(false);
      this.#server = null;
    }
    for (const entry of this.#pool.values()) this.#dropPooled(entry, false);
    this.#pool.clear();
    return this.#result;
  }

  #dispatch(event: LayerEvent): Promise<void> {
    if (this.#done) return Promise.resolve();
    if (event.type === "data" && event.from === "client") this.#headBytes += event.data.byteLength;
    const commands = this.#o.layer.handle(event);
    if (!this.#o.headTimeout) return this.#execute(commands);
    // A wait that ends is noted at once; one that begins counts from when the commands (the end
    // of the response) were carried out.
    if (this.#headSince !== null && !this.#o.layer.waitingForRequestHead) this.#checkHead();
    return this.#execute(commands).then(() => this.#checkHead());
  }

  /** Notes whether the layer waits for a request head, and arms the head timer when it starts to. */
  #checkHead(): void {
    const limit = this.#o.headTimeout;
    if (!limit || this.#done) return;
    const waiting = this.#o.layer.waitingForRequestHead === true;
    if (!waiting) {
      if (this.#headSince !== null) this.#servedRequest = true;
      this.#headSince = null;
      return;
    }
    if (this.#headSince !== null) return;
    this.#headSince = Date.now();
    this.#headBytes = 0;
    if (this.#headTimer === null) this.#armHead(limit.ms);
  }

  #armHead(ms: number): void {
    this.#headTimer = setTimeout(() => {
      this.#headTimer = null;
      const limit = this.#o.headTimeout;
      if (!limit || this.#done || this.#headSince === null) return;
      // The layer may have moved on without an event the driver saw (it reports state only).
      if (this.#o.layer.waitingForRequestHead !== true) {
        this.#headSince = null;
        return;
      }
      const left = this.#headSince + limit.ms - Date.now();
      if (left > 0) {
        this.#armHead(left);
        return;
      }
      const partial = this.#o.layer.headPartial ?? this.#headBytes > 0;
      limit.expired({ partial, afterRequest: this.#servedRequest });
      const last = this.#o.layer.headTimedOut?.(Date.now()) ?? [];
      // The layer's last words (a GOAWAY) get a second to go out; then the connection closes.
      const said = last.length === 0 ? Promise.resolve() : Promise.race([
        this.#execute(last),
        new Promise<void>((r) => Deno.unrefTimer(setTimeout(r, 1000))),
      ]);
      void said.finally(() => {
        this.#o.client.close(false);
        this.#end();
      });
    }, ms);
  }

  #execute(commands: LayerCommand[]): Promise<void> {
    const waits: Promise<unknown>[] = [];
    for (const cmd of commands) {
      if ("conn" in cmd && cmd.conn !== undefined) {
        this.#pooledCommand(cmd, cmd.conn, waits);
        continue;
      }
      switch (cmd.type) {
        case "send": {
          const stream = this.#stream(cmd.to);
          if (stream) waits.push(stream.write(cmd.data).catch((e) => this.#sideFailed(cmd.to, e)));
          break;
        }
        case "shutdown": {
          const stream = this.#stream(cmd.to);
          if (stream) waits.push(stream.closeWrite().catch(() => {}));
          break;
        }
        case "close":
          if (cmd.to === "client") {
            this.#o.client.close(cmd.reset);
            this.#end();
          } else if (this.#server) {
            this.#server.close(cmd.reset);
            this.#server = null;
            this.#serverGen++;
          }
          break;
        case "open-server":
          this.#open(cmd.address);
          break;
        case "tunnel":
          this.#result.tunnel = {
            address: cmd.address,
            buffered: cmd.buffered,
            httpVersion: cmd.httpVersion,
          };
          this.#end();
          break;
        case "flow":
          this.#o.bus.emit(cmd.event, cmd.flow);
          if (cmd.event === "end") this.#o.flowEnded?.(cmd.flow);
          break;
        case "log":
          this.#o.bus.log(cmd.level, cmd.message);
          break;
        case "request-hook":
          this.#askHook(cmd.flow, cmd.stream);
          break;
        case "response-hook": {
          const hook = this.#o.responseHook;
          const flow = cmd.flow;
          const phases = hook?.phases;
          // A hook without phases runs whole once the body is held.
          let holdBody = true;
          let asked: Promise<ResponseVerdict>;
          if (cmd.phase === "headers") {
            holdBody = phases ? phases.body !== undefined : hook !== undefined;
            asked = phases ? phases.headers(flow) : Promise.resolve(undefined);
          } else if (cmd.phase === "body" && phases) {
            asked = phases.body ? phases.body(flow) : Promise.resolve(undefined);
          } else {
            asked = hook ? hook(flow) : Promise.resolve(undefined);
          }
          void asked.catch((e) => {
            this.#o.bus.log("error", `response hook failed on ${flow.request.url}: ${e}`);
            return undefined;
          }).then((verdict) =>
            this.#dispatch({
              type: "response-hook-result",
              verdict,
              now: Date.now(),
              ...(cmd.stream !== undefined ? { stream: cmd.stream } : {}),
              ...(cmd.phase === "headers" ? { holdBody } : {}),
            })
          );
          break;
        }
        case "transform":
          waits.push(this.#transform(cmd.id, cmd.fn, cmd.data, cmd.stream));
          break;
        case "addon-hook":
          waits.push(this.#addonHook(cmd.id, cmd.call));
          break;
        case "pause-reading":
          break; // always carries a conn (handled above)
        case "timer":
          if (this.#layerTimer !== null) clearTimeout(this.#layerTimer);
          this.#layerTimer = setTimeout(() => {
            this.#layerTimer = null;
            void this.#dispatch({ type: "timer", now: Date.now() });
          }, Math.max(0, cmd.delay));
          break;
      }
    }
    if (waits.length === 0) return Promise.resolve();
    return waits.length === 1 ? waits[0]!.then(() => {}) : Promise.all(waits).then(() => {});
  }

  /**
   * Runs one addon hook after the ones before it and feeds its `addon-result` back. The side
   * whose event asked waits for it (its next bytes are not read meanwhile): that is what holds a
   * message while an addon looks at it.
   */
  #addonHook(id: number, call: AddonCall): Promise<void> {
    const addons = this.#o.addons;
    const ran = this.#hooks.then(() => addons?.run(call)).catch((e) => {
      this.#o.bus.log("error", `addon hook ${call.hook} failed: ${describeError(e)}`);
    });
    // Only the calls are chained: a result may itself ask for the next hook.
    this.#hooks = ran;
    return ran.then(() => this.#dispatch({ type: "addon-result", id, now: Date.now() }));
  }

  /**
   * Runs one chunk through a stream transform after the chunks before it and feeds the result
   * back; the side whose event asked waits for it and for what the result's commands wrote.
   */
  #transform(id: number, fn: BodyTransform, data: Uint8Array, stream: number | undefined): Promise<void> {
    const ran = this.#transforms.then(() => fn(data)).then(
      (out): { data: Uint8Array; error?: string } =>
        out instanceof Uint8Array
          ? { data: out }
          : { data: EMPTY, error: "a stream transform returned no bytes" },
      (e) => ({ data: EMPTY, error: describeError(e) }),
    );
    this.#transforms = ran.then(() => {});
    return ran.then((r) =>
      this.#dispatch({
        type: "transform-result",
        id,
        data: r.data,
        ...(r.error !== undefined ? { error: r.error } : {}),
        now: Date.now(),
        ...(stream !== undefined ? { stream } : {}),
      })
    );
  }

  /** Calls the request hook and feeds its verdict back; a hook that fails lets the request go on. */
  #askHook(flow: HttpFlow, stream: number | undefined): void {
    const hook = this.#o.requestHook;
    const asked = hook ? callRequestHook(hook, flow) : Promise.resolve({ verdict: undefined });
    void asked.then(async (outcome) => {
      if ("error" in outcome) {
        this.#o.bus.log("error", `request hook failed on ${flow.request.url}: ${outcome.error}`);
      }
      const verdict = "error" in outcome ? undefined : outcome.verdict;
      await this.#dispatch({
        type: "hook-result",
        verdict,
        now: Date.now(),
        ...(stream !== undefined ? { stream } : {}),
      });
    });
  }

  /** A command for numbered server connection `conn`. */
  #pooledCommand(cmd: LayerCommand, conn: number, waits: Promise<unknown>[]): void {
    const entry = this.#pool.get(conn);
    switch (cmd.type) {
      case "open-server":
        if (entry) this.#dropPooled(entry, true);
        this.#openPooled(conn, cmd.address);
        return;
      case "send":
        if (entry?.stream) {
          waits.push(entry.stream.write(cmd.data).catch((e) => this.#pooledFailed(entry, e)));
        }
        return;
      case "shutdown":
        if (entry?.stream) waits.push(entry.stream.closeWrite().catch(() => {}));
        return;
      case "close":
        if (entry) {
          this.#pool.delete(conn);
          this.#dropPooled(entry, cmd.reset);
        }
        return;
      case "pause-reading":
        if (!entry) return;
        entry.paused = cmd.paused;
        if (!cmd.paused) entry.wake();
        return;
      default:
        return;
    }
  }

  #openPooled(conn: number, address: HostPort): void {
    const entry = new PooledServer(conn);
    this.#pool.set(conn, entry);
    this.#o.openServer(address).then(
      async ({ stream, remote }) => {
        if (this.#done || this.#pool.get(conn) !== entry) {
          stream.close(true);
          return;
        }
        entry.stream = stream;
        void this.#pooledReadLoop(entry);
        await this.#dispatch({ type: "server-connected", address: remote, now: Date.now(), conn });
      },
      async (e) => {
        if (this.#done || this.#pool.get(conn) !== entry) return;
        this.#pool.delete(conn);
        await this.#dispatch({ type: "server-failed", message: describeError(e), now: Date.now(), conn });
      },
    );
  }

  #dropPooled(entry: PooledServer, reset: boolean): void {
    entry.gone = true;
    entry.wake();
    entry.stream?.close(reset);
    entry.stream = null;
  }

  #pooledFailed(entry: PooledServer, e: unknown): Promise<void> {
    if (entry.failed || entry.gone || this.#pool.get(entry.conn) !== entry) return Promise.resolve();
    entry.failed = true;
    return this.#dispatch({
      type: "error",
      from: "server",
      message: describeError(e),
      now: Date.now(),
      conn: entry.conn,
    });
  }

  async #pooledReadLoop(entry: PooledServer): Promise<void> {
    const conn = entry.conn;
    const stale = () => this.#done || entry.gone || this.#pool.get(conn) !== entry;
    for (;;) {
      while (entry.paused && !stale()) await new Promise<void>((r) => (entry.resume = r));
      if (stale() || !entry.stream) return;
      let chunk: Uint8Array | null;
      try {
        chunk = await entry.stream.read();
      } catch (e) {
        if (!stale() && !entry.failed) {
          entry.failed = true;
          await this.#dispatch({
            type: "error",
            from: "server",
            message: describeError(e),
            now: Date.now(),
            conn,
          });
        }
        return;
      }
      if (stale()) return;
      if (chunk === null) {
        await this.#dispatch({ type: "eof", from: "server", now: Date.now(), conn });
        return;
      }
      await this.#dispatch({ type: "data", from: "server", data: chunk, now: Date.now(), conn });
    }
  }

  #stream(side: Side): ByteStream | null {
    return side === "client" ? this.#o.client : this.#server;
  }

  #end(): void {
    if (this.#done) return;
    this.#done = true;
    if (this.#layerTimer !== null) clearTimeout(this.#layerTimer);
    this.#layerTimer = null;
    this.#finish();
  }

  #sideFailed(side: Side, e: unknown): Promise<void> {
    if (this.#failed.has(side)) return Promise.resolve();
    this.#failed.add(side);
    return this.#dispatch({ type: "error", from: side, message: describeError(e), now: Date.now() });
  }

  #open(address: HostPort): void {
    const gen = ++this.#serverGen;
    this.#failed.delete("server");
    this.#connecting = this.#o.openServer(address).then(
      async ({ stream, remote }) => {
        if (this.#done || gen !== this.#serverGen) {
          stream.close(true);
          return;
        }
        this.#server = stream;
        this.#connecting = null;
        this.#readServer(stream, gen);
        await this.#dispatch({ type: "server-connected", address: remote, now: Date.now() });
      },
      async (e) => {
        if (gen === this.#serverGen) this.#connecting = null;
        await this.#dispatch({ type: "server-failed", message: describeError(e), now: Date.now() });
      },
    );
  }

  /**
   * Starts the one read loop of a server connection. A connection that opened before the first
   * events were fed (one already made, handed over at once) must not get a second loop from
   * `run()`: two reads at once on one socket split its bytes between them, out of order.
   */
  #readServer(stream: ByteStream, gen: number): void {
    if (this.#serverReading === gen) return;
    this.#serverReading = gen;
    void this.#readLoop("server", stream, gen);
  }

  async #readLoop(side: Side, stream: ByteStream, gen: number): Promise<void> {
    const stale = () => this.#done || (side === "server" && gen !== this.#serverGen);
    for (;;) {
      // While a server connection is being opened, leave client bytes in the client's buffers.
      if (side === "client" && this.#connecting) await this.#connecting;
      if (stale()) return;
      let chunk: Uint8Array | null;
      try {
        chunk = await stream.read();
      } catch (e) {
        if (!stale() && !this.#failed.has(side)) {
          this.#failed.add(side);
          await this.#dispatch({ type: "error", from: side, message: describeError(e), now: Date.now() });
        }
        return;
      }
      if (stale()) return;
      if (chunk === null) {
        await this.#dispatch({ type: "eof", from: side, now: Date.now() });
        return;
      }
      await this.#dispatch({ type: "data", from: side, data: chunk, now: Date.now() });
    }
  }
}

/** One numbered server connection (see `conn` in layer.ts) and the state of its read loop. */
class PooledServer {
  readonly conn: number;
  /** Null while connecting and once closed. */
  stream: ByteStream | null = null;
  /** The layer asked to stop reading it. */
  paused = false;
  /** Closed by the layer (or the run ended): its read loop stops. */
  gone = false;
  /** A read or write failed (reported once). */
  failed = false;
  /** Wakes the read loop when it waits for `paused` to clear. */
  resume: (() => void) | null = null;

  constructor(conn: number) {
    this.conn = conn;
  }

  wake(): void {
    const r = this.resume;
    this.resume = null;
    r?.();
  }
}

/** A short description of an I/O error. */
export function describeError(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: string }).code;
    const msg = e.message || e.name;
    return code && !msg.includes(code) ? `${msg} (${code})` : msg;
  }
  return String(e);
}
