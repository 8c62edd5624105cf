/**
 * UDP from the tunnel: DNS queries (any datagram to port 53) are forwarded to the configured
 * resolvers and answered through the tunnel as if from the address the client asked; other
 * datagrams are relayed to their original destination from a socket per conversation, and the
 * replies go back through the tunnel. Conversations are recorded as {@link UdpFlow}s and end
 * after an idle period; each DNS query is a {@link DnsFlow}.
 *
 * Bounded: at most `maxFlows` conversations and `maxPendingDns` queries at once; datagrams
 * beyond that are dropped and counted in {@link UdpRelay.stats}.
 *
 * Datagrams to destinations the `destinationPolicy` refuses (this host's own services) are
 * dropped without an answer and counted; the first of each conversation is recorded as a flow
 * with the reason.
 *
 * QUIC (UDP to port 443) is not intercepted. So that it does not bypass interception, it is
 * refused by default: each datagram is answered with ICMP port unreachable (`reject`), and
 * clients such as browsers then use HTTPS over TCP, which is intercepted. Each refused
 * conversation is recorded once as a {@link UdpFlow} with its first datagram and the reason.
 * `quic: "passthrough"` relays it like any other UDP.
 * @module
 */
import { buildDnsErrorResponse, type DnsMessage, parseDnsMessage } from "./dns_message.ts";
import type { ClientInfo, DnsFlow, FlowBus, HostPort, UdpFlow } from "../flows/flow.ts";
import { formatHostPort, recordMessage } from "../flows/flow.ts";
import { type AddonRunner, describeError } from "./layer_runner.ts";
import type { HookSet } from "./layer.ts";
import { DnsFlowView, MessageView, UdpFlowView } from "../addons/handles.ts";
import { encodeDnsMessage } from "./dns_encode.ts";

/** A datagram from the tunnel, or one to send into it. */
export interface RelayDatagram {
  data: Uint8Array;
  src: HostPort;
  dst: HostPort;
}

/** Options of {@link UdpRelay}. */
export interface UdpRelayOptions {
  bus: FlowBus;
  /** Resolvers for DNS queries, tried in order (none: each query goes to its own destination). */
  dnsServers: HostPort[];
  /** Sends a datagram back into the tunnel. */
  reply: (datagram: RelayDatagram) => Promise<void>;
  newId: () => string;
  /** Conversations end after this long without traffic (ms, default 60 s). */
  idleTimeout?: number;
  /** Time to wait for one resolver (ms, default 4 s). */
  dnsTimeout?: number;
  maxFlows?: number;
  maxPendingDns?: number;
  /** Names answered locally (lower case → IPv4 address), e.g. the certificate page. */
  localNames?: Map<string, string>;
  bodyLimit: number;
  maxMessages: number;
  /** Says why a destination must not be reached (null: it may); none lets everything through. */
  destinationPolicy?: { blockReason(ip: string, port?: number): string | null };
  /**
   * UDP to port 443 (QUIC): `reject` (the default) answers each datagram with ICMP port
   * unreachable through `unreachable`, `passthrough` relays it like other UDP.
   */
  quic?: QuicPolicy;
  /**
   * Tells the client that nothing listens where `datagram` went (ICMP port unreachable). Without
   * it, refused QUIC datagrams are dropped silently (still recorded and counted).
   */
  unreachable?: (datagram: RelayDatagram) => Promise<void>;
  /**
   * Answers a DNS query itself (an addon's seam): the wire answer, or null to ask the resolvers.
   * Called with the flow (its `request` parsed) before any resolver is asked.
   */
  dnsAnswer?: (flow: DnsFlow, query: Uint8Array) => Promise<Uint8Array | null>;
  /**
   * Addon hooks: `udpStart`/`udpMessage` (each datagram held until the hooks return; changed,
   * dropped, or the conversation killed)/`udpEnd`, and `dnsRequest` (may answer or kill) and
   * `dnsResponse` (may change the answer). Each is called only when some addon has it.
   */
  addons?: HookSet & AddonRunner;
}

/** Datagrams of one conversation waiting for its `udpMessage` hooks; beyond, they are dropped. */
const MAX_HELD_DATAGRAMS = 256;

/** What the relay does with QUIC (UDP to port 443): refuse it with ICMP, or relay it. */
export type QuicPolicy = "reject" | "passthrough";

/** The port QUIC (HTTP/3) uses. */
const QUIC_PORT = 443;

/** Counters of the relay. */
export interface UdpRelayStats {
  flows: number;
  dnsQueries: number;
  dnsFailures: number;
  dropped: number;
  /** Datagrams dropped because their destination is refused (see `destinationPolicy`). */
  blocked: number;
  /** QUIC datagrams (UDP to port 443) refused by the `quic: "reject"` policy. */
  quicRejected: number;
}

/** Refused conversations remembered (so each is recorded once while it goes on). */
const MAX_BLOCKED_RECORDED = 1024;

interface Conversation {
  flow: UdpFlow;
  /** The last hook call of this conversation (the next datagram's waits for it). */
  hooks: Promise<void>;
  /** Datagrams from the client waiting for hooks. */
  held: number;
  socket: Deno.DatagramConn;
  lastActive: number;
  client: HostPort;
  server: HostPort;
}

/** Relays tunneled UDP and answers DNS. */
export class UdpRelay {
  #o: UdpRelayOptions;
  #flows = new Map<string, Conversation>();
  #pendingDns = 0;
  #sweep: ReturnType<typeof setInterval>;
  #closed = false;
  #stats: UdpRelayStats = {
    flows: 0,
    dnsQueries: 0,
    dnsFailures: 0,
    dropped: 0,
    blocked: 0,
    quicRejected: 0,
  };
  /** Refused conversations already recorded, with when they were last seen. */
  #blockedSeen = new Map<string, number>();

  constructor(options: UdpRelayOptions) {
    this.#o = options;
    const idle = options.idleTimeout ?? 60_000;
    this.#sweep = setInterval(() => this.#expire(idle), Math.min(5000, idle));
    Deno.unrefTimer(this.#sweep as unknown as number);
  }

  /** Counters. */
  stats(): UdpRelayStats {
    return { ...this.#stats, flows: this.#flows.size };
  }

  /** Takes one datagram a client sent. */
  handle(datagram: RelayDatagram, client: ClientInfo): void {
    if (this.#closed) return;
    // DNS goes to the configured resolvers (the proxy's own choice), else where it was sent.
    const goesToDestination = datagram.dst.port !== 53 || this.#o.dnsServers.length === 0;
    const blocked = goesToDestination
      ? this.#o.destinationPolicy?.blockReason(datagram.dst.hostname, datagram.dst.port) ?? null
      : null;
    if (blocked) {
      this.#refuse(datagram, client, blocked);
      return;
    }
    if (datagram.dst.port === QUIC_PORT && (this.#o.quic ?? "reject") === "reject") {
      this.#rejectQuic(datagram, client);
      return;
    }
    if (datagram.dst.port === 53) {
      if (this.#pendingDns >= (this.#o.maxPendingDns ?? 512)) {
        this.#stats.dropped++;
        return;
      }
      this.#pendingDns++;
      void this.#dns(datagram, client).finally(() => this.#pendingDns--);
      return;
    }
    const key = `${formatHostPort(datagram.src)}>${formatHostPort(datagram.dst)}`;
    let conv = this.#flows.get(key);
    if (!conv) {
      if (this.#flows.size >= (this.#o.maxFlows ?? 4096)) {
        this.#stats.dropped++;
        return;
      }
      const opened = this.#open(key, datagram, client);
      if (!opened) return;
      conv = opened;
    }
    conv.lastActive = Date.now();
    const addons = this.#o.addons;
    if (addons?.has("udpMessage")) {
      if (conv.held >= MAX_HELD_DATAGRAMS) {
        this.#stats.dropped++;
        return;
      }
      conv.held++;
      const c = conv;
      conv.hooks = conv.hooks.then(async () => {
        c.held--;
        const data = await this.#udpMessage(key, c, true, datagram.data);
        if (data) this.#forward(c, datagram, data);
      });
      return;
    }
    this.#forward(conv, datagram, datagram.data);
  }

  /** Records a client datagram and sends it on. */
  #forward(conv: Conversation, datagram: RelayDatagram, data: Uint8Array): void {
    if (this.#closed || conv.flow.timestampEnd !== undefined) return;
    conv.flow.bytesFromClient += data.byteLength;
    recordMessage(
      conv.flow,
      { fromClient: true, kind: "data", data, timestamp: Date.now() },
      this.#o.bodyLimit,
      this.#o.maxMessages,
    );
    conv.socket.send(data, {
      transport: "udp",
      hostname: datagram.dst.hostname,
      port: datagram.dst.port,
    })
      .catch((e) => this.#o.bus.log("debug", `UDP to ${formatHostPort(datagram.dst)}: ${describeError(e)}`));
  }

  /**
   * Runs `udpMessage` for one datagram: what to send (null: dropped, or the conversation was
   * killed, which ends it).
   */
  async #udpMessage(
    key: string,
    conv: Conversation,
    fromClient: boolean,
    data: Uint8Array,
  ): Promise<Uint8Array | null> {
    const view = new UdpFlowView(conv.flow, new MessageView(fromClient, "data", data));
    await this.#o.addons!.run({ hook: "udpMessage", payload: view });
    if (view.killed) {
      this.#end(key, "killed by an addon");
      return null;
    }
    return view.message!.dropped ? null : view.message!.content;
  }

  /** Drops a datagram to a refused destination; records the first of its conversation. */
  #refuse(datagram: RelayDatagram, client: ClientInfo, reason: string): void {
    this.#stats.blocked++;
    this.#recordRefusal(
      datagram,
      client,
      `destination ${formatHostPort(datagram.dst)} refused: ${reason} (datagrams dropped)`,
    );
  }

  /** Answers a QUIC datagram with ICMP port unreachable; records the first of its conversation. */
  #rejectQuic(datagram: RelayDatagram, client: ClientInfo): void {
    this.#stats.quicRejected++;
    const unreachable = this.#o.unreachable;
    this.#recordRefusal(
      datagram,
      client,
      unreachable
        ? "QUIC refused with ICMP port unreachable, so that the client uses TCP (--quic passthrough relays it)"
        : "QUIC refused (datagrams dropped; --quic passthrough relays it)",
    );
    unreachable?.(datagram).catch((e) =>
      this.#o.bus.log("debug", `ICMP to ${formatHostPort(datagram.src)}: ${describeError(e)}`)
    );
  }

  /**
   * Records a refused datagram as an ended {@link UdpFlow} carrying it, once per conversation
   * while it goes on.
   */
  #recordRefusal(datagram: RelayDatagram, client: ClientInfo, message: string): void {
    const key = `${formatHostPort(datagram.src)}>${formatHostPort(datagram.dst)}`;
    const now = Date.now();
    if (this.#blockedSeen.has(key)) {
      this.#blockedSeen.set(key, now);
      return;
    }
    // A client spraying ports gets its first refusals recorded, then only counted until the
    // sweep forgets old ones.
    if (this.#blockedSeen.size >= MAX_BLOCKED_RECORDED) return;
    this.#blockedSeen.set(key, now);
    const flow: UdpFlow = {
      id: this.#o.newId(),
      type: "udp",
      client,
      server: { address: datagram.dst },
      timestampStart: now,
      timestampEnd: now,
      bytesFromClient: datagram.data.byteLength,
      bytesFromServer: 0,
      messages: [],
      messagesDropped: 0,
      error: { message, timestamp: now },
    };
    recordMessage(
      flow,
      { fromClient: true, kind: "data", data: datagram.data, timestamp: now },
      this.#o.bodyLimit,
      this.#o.maxMessages,
    );
    this.#o.bus.emit("start", flow);
    this.#o.bus.emit("end", flow);
  }

  /** Ends every conversation (recording them) and stops. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweep);
    for (const key of [...this.#flows.keys()]) this.#end(key, null);
  }

  #open(key: string, datagram: RelayDatagram, client: ClientInfo): Conversation | null {
    let socket: Deno.DatagramConn;
    try {
      socket = Deno.listenDatagram({
        transport: "udp",
        hostname: datagram.dst.hostname.includes(":") ? "::" : "0.0.0.0",
        port: 0,
      });
    } catch (e) {
      this.#stats.dropped++;
      this.#o.bus.log(
        "warn",
        `cannot open a UDP socket for ${formatHostPort(datagram.dst)}: ${describeError(e)}`,
      );
      return null;
    }
    const now = Date.now();
    const flow: UdpFlow = {
      id: this.#o.newId(),
      type: "udp",
      client,
      server: { address: datagram.dst },
      timestampStart: now,
      bytesFromClient: 0,
      bytesFromServer: 0,
      messages: [],
      messagesDropped: 0,
    };
    const conv: Conversation = {
      flow,
      socket,
      lastActive: now,
      client: datagram.src,
      server: datagram.dst,
      hooks: Promise.resolve(),
      held: 0,
    };
    this.#flows.set(key, conv);
    this.#stats.flows++;
    this.#o.bus.emit("start", flow);
    const addons = this.#o.addons;
    if (addons?.has("udpStart")) {
      const view = new UdpFlowView(flow);
      conv.hooks = addons.run({ hook: "udpStart", payload: view }).then(() => {
        if (view.killed) this.#end(key, "killed by an addon");
      });
    }
    void this.#receive(key, conv);
    return conv;
  }

  async #receive(key: string, conv: Conversation): Promise<void> {
    try {
      for (;;) {
        const [received] = await conv.socket.receive();
        let data: Uint8Array = received;
        conv.lastActive = Date.now();
        if (this.#o.addons?.has("udpMessage")) {
          const changed = await this.#udpMessage(key, conv, false, data);
          if (this.#flows.get(key) !== conv) return;
          if (!changed) continue;
          data = changed;
        }
        conv.flow.bytesFromServer += data.byteLength;
        recordMessage(
          conv.flow,
          { fromClient: false, kind: "data", data, timestamp: conv.lastActive },
          this.#o.bodyLimit,
          this.#o.maxMessages,
        );
        await this.#o.reply({ data, src: conv.server, dst: conv.client });
      }
    } catch (e) {
      if (this.#flows.get(key) === conv) this.#end(key, describeError(e));
    }
  }

  #expire(idle: number): void {
    const now = Date.now();
    for (const [key, last] of this.#blockedSeen) if (now - last >= idle) this.#blockedSeen.delete(key);
    for (const [key, conv] of this.#flows) if (now - conv.lastActive >= idle) this.#end(key, null);
  }

  #end(key: string, error: string | null): void {
    const conv = this.#flows.get(key);
    if (!conv) return;
    this.#flows.delete(key);
    try {
      conv.socket.close();
    } catch { /* already closed */ }
    const now = Date.now();
    conv.flow.timestampEnd = now;
    if (error) conv.flow.error = { message: error, timestamp: now };
    this.#o.bus.emit("end", conv.flow);
    const addons = this.#o.addons;
    if (addons?.has("udpEnd")) void addons.run({ hook: "udpEnd", payload: new UdpFlowView(conv.flow) });
  }

  async #dns(datagram: RelayDatagram, client: ClientInfo): Promise<void> {
    const answer = await this.answerDns(datagram, client);
    if (answer && !this.#closed) {
      await this.#o.reply({ data: answer, src: datagram.dst, dst: datagram.src }).catch((e) =>
        this.#o.bus.log("debug", `DNS answer to ${formatHostPort(datagram.src)}: ${describeError(e)}`)
      );
    }
  }

  /**
   * Answers one DNS query (local names, then `dnsAnswer`, then the resolvers in order) and records
   * it as a {@link DnsFlow} ended once the answer is known; a SERVFAIL when nothing answered, null
   * when the query cannot even be answered with an error. The DNS mode's server calls it for each
   * query it takes.
   */
  async answerDns(datagram: RelayDatagram, client: ClientInfo): Promise<Uint8Array | null> {
    this.#stats.dnsQueries++;
    const now = Date.now();
    const flow: DnsFlow = {
      id: this.#o.newId(),
      type: "dns",
      client,
      server: { address: datagram.dst },
      timestampStart: now,
    };
    try {
      flow.request = parseDnsMessage(datagram.data);
    } catch (e) {
      // Not DNS after all: still forwarded, so a client using port 53 for something else works.
      flow.error = { message: `query cannot be parsed: ${(e as Error).message}`, timestamp: now };
    }
    this.#o.bus.emit("start", flow);
    let answer: Uint8Array | null = null;
    const question = flow.request?.questions[0];
    const local = question ? this.#o.localNames?.get(question.name.toLowerCase()) : undefined;
    if (question && local !== undefined) {
      answer = localAnswer(datagram.data, question.type === 1 ? local : null);
    }
    const addons = this.#o.addons;
    if (!answer && flow.request && addons?.has("dnsRequest")) {
      const view = new DnsFlowView(flow);
      await addons.run({ hook: "dnsRequest", payload: view });
      if (view.killed) return this.#dnsKilled(flow);
      if (view.response) {
        answer = this.#encodeDns(view.response, flow.request.id);
        if (answer) flow.resolver = { hostname: "addon", port: 0 };
      }
    }
    if (!answer && flow.request && this.#o.dnsAnswer) {
      answer = await this.#o.dnsAnswer(flow, datagram.data).catch((e) => {
        this.#o.bus.log("warn", `DNS answer hook failed: ${describeError(e)}`);
        return null;
      });
    }
    const problems: string[] = [];
    // Without configured resolvers, the query goes where the client sent it.
    const servers = this.#o.dnsServers.length > 0 ? this.#o.dnsServers : [datagram.dst];
    /** A resolver's own failure answer (SERVFAIL, REFUSED...), kept in case no other does better. */
    let failed: { answer: Uint8Array; server: HostPort } | null = null;
    for (const server of answer ? [] : servers) {
      try {
        const reply = await this.#ask(server, datagram.data);
        const rcode = reply.byteLength >= 4 ? reply[3]! & 0x0f : 0;
        if (SERVER_FAILURES.has(rcode)) {
          // Like a stub resolver, try the next one before giving up on the query.
          problems.push(`${formatHostPort(server)} answered ${SERVER_FAILURES.get(rcode)}`);
          failed ??= { answer: reply, server };
          continue;
        }
        answer = reply;
        flow.resolver = server;
        break;
      } catch (e) {
        problems.push(`${formatHostPort(server)}: ${describeError(e)}`);
      }
    }
    if (!answer && failed) {
      // The client gets the resolver's own answer, as it would without the proxy.
      answer = failed.answer;
      flow.resolver = failed.server;
      this.#stats.dnsFailures++;
      flow.error = { message: `no resolver could answer (${problems.join("; ")})`, timestamp: Date.now() };
    }
    if (answer) {
      flow.resolver ??= { hostname: "wirescope", port: 0 };
      try {
        flow.response = parseDnsMessage(answer);
      } catch (e) {
        flow.error ??= { message: `answer cannot be parsed: ${(e as Error).message}`, timestamp: Date.now() };
      }
    } else {
      this.#stats.dnsFailures++;
      flow.error = { message: `no resolver answered (${problems.join("; ")})`, timestamp: Date.now() };
      answer = buildDnsErrorResponse(datagram.data, 2);
    }
    if (flow.response && addons?.has("dnsResponse")) {
      const view = new DnsFlowView(flow, flow.response);
      const before = JSON.stringify(flow.response);
      await addons.run({ hook: "dnsResponse", payload: view });
      if (view.killed) return this.#dnsKilled(flow);
      if (view.response && JSON.stringify(view.response) !== before) {
        const changed = this.#encodeDns(view.response, flow.request?.id);
        if (changed) {
          answer = changed;
          flow.response = view.response;
        }
      }
    }
    flow.timestampEnd = Date.now();
    this.#o.bus.emit("end", flow);
    return answer;
  }

  /** An addon's DNS message in wire form (the query's id kept), or null with a log line. */
  #encodeDns(message: DnsMessage, id: number | undefined): Uint8Array | null {
    try {
      return encodeDnsMessage(id === undefined ? message : { ...message, id });
    } catch (e) {
      this.#o.bus.log("warn", `an addon's DNS answer cannot be written: ${describeError(e)}`);
      return null;
    }
  }

  /** A query an addon killed: recorded, not answered. */
  #dnsKilled(flow: DnsFlow): null {
    const now = Date.now();
    flow.error = { message: "killed by an addon (not answered)", timestamp: now };
    flow.timestampEnd = now;
    this.#o.bus.emit("end", flow);
    return null;
  }

  /** Sends one query to one resolver and waits for the reply with the same id. */
  async #ask(server: HostPort, query: Uint8Array): Promise<Uint8Array> {
    const socket = Deno.listenDatagram({
      transport: "udp",
      hostname: server.hostname.includes(":") ? "::" : "0.0.0.0",
      port: 0,
    });
    const timeout = this.#o.dnsTimeout ?? 4000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      socket.close();
    }, timeout);
    try {
      await socket.send(query, { transport: "udp", hostname: server.hostname, port: server.port });
      for (let i = 0; i < 16; i++) {
        const [data, from] = await socket.receive();
        const addr = from as Deno.NetAddr;
        if (addr.port !== server.port) continue;
        if (data.byteLength >= 2 && query.byteLength >= 2 && data[0] === query[0] && data[1] === query[1]) {
          return data;
        }
      }
      throw new Error("no matching answer");
    } catch (e) {
      // Closing the socket ends the pending receive with BadResource or Interrupted, by version.
      if (timedOut) {
        throw new Error(`timed out after ${timeout} ms`);
      }
      throw e;
    } finally {
      clearTimeout(timer);
      try {
        socket.close();
      } catch { /* closed by the timer */ }
    }
  }
}

/** Response codes that say the resolver failed (not that the name has no answer). */
const SERVER_FAILURES = new Map([[2, "SERVFAIL"], [4, "NOTIMP"], [5, "REFUSED"]]);

/**
 * The answer to a query for a name the proxy serves itself: the question echoed, and one A
 * record when `ipv4` is given (other types get an empty NOERROR answer).
 */
function localAnswer(query: Uint8Array, ipv4: string | null): Uint8Array | null {
  if (query.byteLength < 12) return null;
  let off = 12;
  while (off < query.byteLength && query[off] !== 0) off += query[off]! + 1;
  const end = off + 5;
  if (end > query.byteLength) return null;
  const out = new Uint8Array(end + (ipv4 ? 16 : 0));
  out.set(query.subarray(0, end));
  out[2] = 0x84 | (query[2]! & 0x01); // response, authoritative, recursion desired as asked
  out[3] = 0x80; // recursion available, NOERROR
  out.set([0, 1, 0, ipv4 ? 1 : 0, 0, 0, 0, 0], 4); // one question, one answer or none
  if (ipv4) out.set([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...ipv4.split(".").map(Number)], end);
  return out;
}
