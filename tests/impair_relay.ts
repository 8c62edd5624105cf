/**
 * A seeded UDP impairment relay for the namespace rig (this kernel has no netem): it sits on the
 * WireGuard path (client → relay → server) and loses, duplicates, holds back (reorders) and
 * delays datagrams, each way, with decisions that depend only on the seed, the direction and the
 * datagram's index in that direction — a failing run replays from its seed.
 *
 * Two parts, as elsewhere in the project: {@link Impairer} takes datagrams and the time and says
 * what leaves when (no sockets, no clock), and the relay process (`import.meta.main` below) owns
 * the sockets and one timer. The relay runs as a process of its own, started with
 * {@link startImpairRelay}: the server it is put in front of (listenWireGuard() in a test's own
 * process, or the bench's servers) must not share its event loop or its CPU accounting with the
 * relay — on one loop, the relay's per-datagram work and its 50 ms timers would stall behind the
 * server's receive batches and the server's behind the relay's, adding delay nobody configured
 * and charging the relay's CPU to the server.
 *
 *   deno run -A tests/impair_relay.ts --listen HOST:PORT --upstream HOST:PORT [--seed N]
 *     [--loss P] [--duplicate P] [--reorder P] [--reorder-ms MS] [--delay-ms MS]
 *
 * It prints one JSON line `{"ready":true,"port":N}` when listening, and on SIGTERM/SIGINT one
 * JSON line of counters before it exits. Only loopback and the rigs' own addresses
 * (172.31.224.0/19) may be listened on or relayed to; anything else is refused at start, and
 * datagrams from other sources are dropped and counted.
 * @module
 */

/** What the relay does to datagrams; each probability is per datagram, each way. */
export interface ImpairSettings {
  /** Seed of every decision. */
  seed: number;
  /** Probability that a datagram is lost. */
  loss: number;
  /** Probability that a datagram is sent twice. */
  duplicate: number;
  /** Probability that a datagram is held back {@link reorderMs} longer (later ones overtake it). */
  reorder: number;
  /** How long a held-back datagram waits beyond the delay. */
  reorderMs: number;
  /** Delay of every datagram, each way (so the round trip grows by twice this). */
  delayMs: number;
}

export const NO_IMPAIRMENT: ImpairSettings = {
  seed: 1,
  loss: 0,
  duplicate: 0,
  reorder: 0,
  reorderMs: 5,
  delayMs: 0,
};

/** 0: client to server ("up"), 1: server to client ("down"). */
export type Direction = 0 | 1;

/** What happens to one datagram. */
export interface Decision {
  lost: boolean;
  /** 1, or 2 when duplicated (0 when lost). */
  copies: number;
  /** Milliseconds until it leaves. */
  delayMs: number;
}

/** A number in [0, 1) from a hash of the inputs (murmur3's finaliser over a mix of them). */
function unit(seed: number, dir: number, index: number, draw: number): number {
  let h = Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(dir + 1, 0xc2b2ae35);
  h ^= Math.imul(index | 0, 0x27d4eb2f) ^ Math.imul(Math.floor(index / 4294967296) + 1, 0x165667b1);
  h ^= Math.imul(draw + 1, 0x9e3779b1);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 4294967296;
}

/**
 * The decision for datagram `index` (0-based) in direction `dir`: a pure function of the
 * settings, so that two runs with one seed treat the n-th datagram each way alike whatever the
 * timing.
 */
export function decide(s: ImpairSettings, dir: Direction, index: number): Decision {
  if (unit(s.seed, dir, index, 0) < s.loss) return { lost: true, copies: 0, delayMs: 0 };
  const copies = unit(s.seed, dir, index, 1) < s.duplicate ? 2 : 1;
  const held = unit(s.seed, dir, index, 2) < s.reorder;
  return { lost: false, copies, delayMs: s.delayMs + (held ? s.reorderMs : 0) };
}

/** Counters of one direction. */
export interface DirectionStats {
  received: number;
  lost: number;
  duplicated: number;
  heldBack: number;
  sent: number;
}

interface Pending {
  at: number;
  seq: number;
  dir: Direction;
  data: Uint8Array;
}

/**
 * The relay's decisions and queue, without sockets or clock: {@link push} a datagram with the
 * current time, then take what is due with {@link due}; {@link nextAt} says when to look again.
 */
export class Impairer {
  readonly settings: ImpairSettings;
  readonly stats: [DirectionStats, DirectionStats] = [
    { received: 0, lost: 0, duplicated: 0, heldBack: 0, sent: 0 },
    { received: 0, lost: 0, duplicated: 0, heldBack: 0, sent: 0 },
  ];
  /** A binary min-heap by (at, seq): equal times leave in arrival order. */
  #heap: Pending[] = [];
  #seq = 0;
  /** Most datagrams waiting; beyond it, new ones are lost and counted (a bound on memory). */
  readonly #limit: number;
  overflow = 0;

  constructor(settings: ImpairSettings, limit = 200_000) {
    this.settings = settings;
    this.#limit = limit;
  }

  /** Takes a datagram (copied by the caller if its buffer is reused) at time `now` (ms). */
  push(dir: Direction, data: Uint8Array, now: number): void {
    const st = this.stats[dir];
    const d = decide(this.settings, dir, st.received++);
    if (d.lost) {
      st.lost++;
      return;
    }
    if (d.copies === 2) st.duplicated++;
    if (d.delayMs > this.settings.delayMs) st.heldBack++;
    for (let i = 0; i < d.copies; i++) {
      if (this.#heap.length >= this.#limit) {
        this.overflow++;
        continue;
      }
      this.#insert({ at: now + d.delayMs, seq: this.#seq++, dir, data });
    }
  }

  /** Datagrams due at `now`, in the order they leave. */
  due(now: number): Pending[] {
    const out: Pending[] = [];
    while (this.#heap.length > 0 && this.#heap[0]!.at <= now) {
      const p = this.#pop();
      this.stats[p.dir].sent++;
      out.push(p);
    }
    return out;
  }

  /** When the next datagram is due, or null when none waits. */
  nextAt(): number | null {
    return this.#heap[0]?.at ?? null;
  }

  get waiting(): number {
    return this.#heap.length;
  }

  #less(a: Pending, b: Pending): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  #insert(p: Pending): void {
    const h = this.#heap;
    h.push(p);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#less(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  #pop(): Pending {
    const h = this.#heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && this.#less(h[l]!, h[m]!)) m = l;
        if (r < h.length && this.#less(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

/**
 * Whether the relay may use `host`: loopback, or the rigs' own 172.31.224.0/19 (tests/rig.ts,
 * tests/origin_ns.ts and the benches' rigs all live there). Never anything routed off the machine.
 */
export function isRigAddress(host: string): boolean {
  if (host === "::1" || host === "localhost") return true;
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (!m) return false;
  const [a, b, c, d] = m.slice(1).map(Number) as [number, number, number, number];
  if ([a, b, c, d].some((x) => x > 255)) return false;
  return a === 127 || (a === 172 && b === 31 && c >= 224);
}

/** Parses `host:port` (IPv6 in brackets). */
export function parseHostPort(text: string): { hostname: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(text);
  if (!m) throw new Error(`not HOST:PORT: ${text}`);
  return { hostname: m[1]!, port: Number(m[2]) };
}

/** Options of {@link startImpairRelay}. */
export interface RelayOptions extends Partial<ImpairSettings> {
  /** Where it listens for clients (port 0: any free port). */
  listen: string;
  /** The server it forwards to. */
  upstream: string;
  /** Run it inside this network namespace (`ip netns exec`). */
  netns?: string;
}

/** Counters the relay prints when it stops. */
export interface RelayStats {
  up: DirectionStats;
  down: DirectionStats;
  /** Datagrams from sources other than loopback or the rigs. */
  foreign: number;
  /** Datagrams lost because the queue was full. */
  overflow: number;
  /** Datagrams the relay's sockets lost in the kernel (receive queue full): not configured loss. */
  kernelDrops: number;
  /** Sends the kernel refused. */
  sendErrors: number;
}

/** A running relay process. */
export interface RunningRelay {
  port: number;
  /** Stops it and returns its counters. */
  stop(): Promise<RelayStats>;
}

const SELF = new URL(import.meta.url).pathname;

/** Starts the relay as a process of its own and waits (at most 30 s) until it listens. */
export async function startImpairRelay(o: RelayOptions): Promise<RunningRelay> {
  const s = { ...NO_IMPAIRMENT, ...o };
  const args = [
    "run",
    "-A",
    "--quiet",
    SELF,
    "--listen",
    o.listen,
    "--upstream",
    o.upstream,
    "--seed",
    String(s.seed),
    "--loss",
    String(s.loss),
    "--duplicate",
    String(s.duplicate),
    "--reorder",
    String(s.reorder),
    "--reorder-ms",
    String(s.reorderMs),
    "--delay-ms",
    String(s.delayMs),
  ];
  const cmd = o.netns
    ? ["ip", "netns", "exec", o.netns, Deno.execPath(), ...args]
    : [Deno.execPath(), ...args];
  const child = new Deno.Command(cmd[0]!, { args: cmd.slice(1), stdout: "piped", stderr: "piped" }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const nextLine = async (ms: number): Promise<string | null> => {
    const deadline = Date.now() + ms;
    while (!buffered.includes("\n")) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const r = await Promise.race([
        lines.read(),
        new Promise<null>((resolve) =>
          timer = setTimeout(() => resolve(null), Math.max(0, deadline - Date.now()))
        ),
      ]);
      clearTimeout(timer);
      if (r === null || r.done) return null;
      buffered += r.value;
    }
    const i = buffered.indexOf("\n");
    const line = buffered.slice(0, i);
    buffered = buffered.slice(i + 1);
    return line;
  };
  const stderr = new Response(child.stderr).text();
  const first = await nextLine(30_000);
  if (!first?.includes('"ready"')) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await lines.cancel().catch(() => {});
    throw new Error(`the impairment relay did not start: ${(await stderr).trim().slice(-800)}`);
  }
  const port = (JSON.parse(first) as { port: number }).port;
  let stopping: Promise<RelayStats> | undefined;
  return {
    port,
    stop: () =>
      stopping ??= (async () => {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        const line = await nextLine(10_000);
        if (line === null) {
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
        }
        await child.status;
        await lines.cancel().catch(() => {});
        await stderr;
        if (!line) throw new Error("the impairment relay printed no counters");
        return JSON.parse(line) as RelayStats;
      })(),
  };
}

/** Sum of the kernel's drop counters of this network namespace's UDP sockets on `ports`. */
function kernelDrops(ports: number[]): number {
  const hex = new Set(ports.map((p) => p.toString(16).toUpperCase().padStart(4, "0")));
  let sum = 0;
  for (const table of ["/proc/net/udp", "/proc/net/udp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(table);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[1] && hex.has(f[1].split(":")[1]!)) sum += Number(f.at(-1)) || 0;
    }
  }
  return sum;
}

/** The relay process: one socket for clients, one upstream socket per client endpoint. */
async function main(): Promise<void> {
  const arg = (name: string, fallback?: string): string => {
    const i = Deno.args.indexOf(`--${name}`);
    const v = i >= 0 ? Deno.args[i + 1] : fallback;
    if (v === undefined) throw new Error(`--${name} is required`);
    return v;
  };
  const num = (name: string, fallback: number, max: number): number => {
    const v = Number(arg(name, String(fallback)));
    if (!Number.isFinite(v) || v < 0 || v > max) throw new Error(`--${name} must be within 0..${max}`);
    return v;
  };
  const settings: ImpairSettings = {
    seed: num("seed", 1, 2 ** 32) | 0,
    loss: num("loss", 0, 1),
    duplicate: num("duplicate", 0, 1),
    reorder: num("reorder", 0, 1),
    reorderMs: num("reorder-ms", 5, 10_000),
    delayMs: num("delay-ms", 0, 10_000),
  };
  const listen = parseHostPort(arg("listen"));
  const upstream = parseHostPort(arg("upstream"));
  for (const [what, a] of [["listen", listen], ["upstream", upstream]] as const) {
    if (!isRigAddress(a.hostname)) {
      throw new Error(`--${what} ${a.hostname}: only loopback or the rigs' 172.31.224.0/19`);
    }
  }
  const { enlargeUdpBuffers, SOCKET_BUFFER } = await import("../src/net/socket_buffers.ts");
  const open = (hostname: string) => {
    const sock = Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
    const port = (sock.addr as Deno.NetAddr).port;
    // A full receive queue would lose datagrams nobody configured (counted as kernelDrops).
    enlargeUdpBuffers(port, SOCKET_BUFFER);
    return { sock, port };
  };
  const front = (() => {
    const sock = Deno.listenDatagram({ transport: "udp", ...listen });
    const port = (sock.addr as Deno.NetAddr).port;
    enlargeUdpBuffers(port, SOCKET_BUFFER);
    return { sock, port };
  })();
  const upstreamHost = upstream.hostname.includes(":") ? "::1" : "127.0.0.1";
  const impairer = new Impairer(settings);
  let foreign = 0, sendErrors = 0;
  const ports = [front.port];

  /** Per client endpoint: its own socket toward the server (so replies find their way back). */
  interface Client {
    addr: Deno.NetAddr;
    up: { sock: Deno.DatagramConn; port: number };
  }
  const clients = new Map<string, Client>();
  const MAX_CLIENTS = 64;
  /** What each queued datagram is for: the client it came from or goes to. */
  const owner = new WeakMap<Uint8Array, Client>();

  // Sends go out in order through one loop per socket; a send is never awaited by a receiver.
  const queues = new Map<Deno.DatagramConn, { items: [Uint8Array, Deno.NetAddr][]; running: boolean }>();
  const send = (sock: Deno.DatagramConn, data: Uint8Array, to: Deno.NetAddr) => {
    let q = queues.get(sock);
    if (!q) queues.set(sock, q = { items: [], running: false });
    q.items.push([data, to]);
    if (q.running) return;
    q.running = true;
    (async () => {
      while (q.items.length > 0) {
        const batch = q.items.splice(0);
        for (const [d, addr] of batch) {
          try {
            await sock.send(d, addr);
          } catch {
            sendErrors++;
          }
        }
      }
      q.running = false;
    })();
  };
  const target = { transport: "udp" as const, hostname: upstream.hostname, port: upstream.port };
  const deliver = (items: { dir: Direction; data: Uint8Array }[]) => {
    for (const p of items) {
      const c = owner.get(p.data)!;
      if (p.dir === 0) send(c.up.sock, p.data, target);
      else send(front.sock, p.data, c.addr);
    }
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timerAt = Infinity;
  const schedule = () => {
    const next = impairer.nextAt();
    if (next === null || next >= timerAt) return;
    clearTimeout(timer);
    timerAt = next;
    timer = setTimeout(() => {
      timerAt = Infinity;
      deliver(impairer.due(performance.now()));
      schedule();
    }, Math.max(0, next - performance.now()));
  };
  const take = (dir: Direction, c: Client, data: Uint8Array) => {
    owner.set(data, c);
    const now = performance.now();
    impairer.push(dir, data, now);
    deliver(impairer.due(now));
    schedule();
  };

  let closed = false;
  const fromServer = async (c: Client) => {
    while (!closed) {
      let got;
      try {
        got = await c.up.sock.receive();
      } catch {
        return;
      }
      const [data, from] = got as [Uint8Array, Deno.NetAddr];
      if (from.port !== upstream.port) {
        foreign++;
        continue;
      }
      take(1, c, data);
    }
  };
  const fromClients = async () => {
    while (!closed) {
      let got;
      try {
        got = await front.sock.receive();
      } catch {
        return;
      }
      const [data, from] = got as [Uint8Array, Deno.NetAddr];
      if (!isRigAddress(from.hostname)) {
        foreign++;
        continue;
      }
      const key = `${from.hostname}|${from.port}`;
      let c = clients.get(key);
      if (!c) {
        if (clients.size >= MAX_CLIENTS) {
          foreign++;
          continue;
        }
        c = { addr: from, up: open(upstreamHost) };
        ports.push(c.up.port);
        clients.set(key, c);
        fromServer(c);
      }
      take(0, c, data);
    }
  };
  fromClients();
  console.log(JSON.stringify({ ready: true, port: front.port }));

  const stop = () => {
    if (closed) return;
    closed = true;
    clearTimeout(timer);
    const stats: RelayStats = {
      up: impairer.stats[0],
      down: impairer.stats[1],
      foreign,
      overflow: impairer.overflow,
      kernelDrops: kernelDrops(ports),
      sendErrors,
    };
    console.log(JSON.stringify(stats));
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}

if (import.meta.main) await main();
