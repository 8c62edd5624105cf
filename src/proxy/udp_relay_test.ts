import assert from "node:assert/strict";
import { FlowBus, type UdpFlow } from "../flows/flow.ts";
import { type RelayDatagram, UdpRelay, type UdpRelayOptions } from "./udp_relay.ts";

const client = { address: { hostname: "10.0.0.2", port: 50000 }, mode: "wireguard" as const };

function relayWith(options: Partial<UdpRelayOptions>) {
  const bus = new FlowBus();
  const ended: UdpFlow[] = [];
  bus.subscribe((e) => e.type === "end" && e.flow.type === "udp" && ended.push(e.flow));
  const replies: RelayDatagram[] = [];
  let n = 0;
  const relay = new UdpRelay({
    bus,
    dnsServers: [],
    reply: (d) => Promise.resolve(void replies.push(d)),
    newId: () => `udp-${n++}`,
    bodyLimit: 1024,
    maxMessages: 10,
    ...options,
  });
  return { relay, ended, replies };
}

const datagram = (text: string, port = 443, srcPort = 50000): RelayDatagram => ({
  data: new TextEncoder().encode(text),
  src: { hostname: "10.0.0.2", port: srcPort },
  dst: { hostname: "127.0.0.1", port },
});

Deno.test("UdpRelay refuses QUIC by default: each datagram gets `unreachable`, each conversation one flow", () => {
  const refused: RelayDatagram[] = [];
  const { relay, ended } = relayWith({ unreachable: (d) => Promise.resolve(void refused.push(d)) });
  relay.handle(datagram("initial"), client);
  relay.handle(datagram("retry"), client);
  relay.handle(datagram("other conversation", 443, 50001), client);
  relay.close();
  assert.deepEqual(refused.map((d) => new TextDecoder().decode(d.data)), [
    "initial",
    "retry",
    "other conversation",
  ]);
  assert.equal(relay.stats().quicRejected, 3);
  assert.equal(relay.stats().flows, 0, "no socket was opened");
  assert.equal(ended.length, 2, "one flow per conversation");
  assert.match(ended[0]!.error?.message ?? "", /QUIC refused with ICMP port unreachable/);
  assert.equal(new TextDecoder().decode(ended[0]!.messages[0]?.content), "initial");
  assert.equal(ended[0]!.bytesFromClient, "initial".length);
});

Deno.test("UdpRelay without a way to send ICMP drops refused QUIC silently, still recorded", () => {
  const { relay, ended } = relayWith({ quic: "reject" });
  relay.handle(datagram("initial"), client);
  relay.close();
  assert.equal(relay.stats().quicRejected, 1);
  assert.match(ended[0]!.error?.message ?? "", /QUIC refused \(datagrams dropped/);
});

Deno.test({
  name: "UdpRelay with quic: passthrough relays UDP/443 like other UDP",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // An echo on a loopback port stands in for port 443: the policy applies to port 443 only,
    // so this checks that passthrough takes the ordinary path (and reject would not touch it).
    const echo = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
    const port = (echo.addr as Deno.NetAddr).port;
    (async () => {
      for (;;) {
        const [data, from] = await echo.receive();
        await echo.send(data, from);
      }
    })().catch(() => {});
    const refused: RelayDatagram[] = [];
    const { relay, replies } = relayWith({
      quic: "reject",
      unreachable: (d) => Promise.resolve(void refused.push(d)),
    });
    try {
      relay.handle(datagram("not quic", port), client);
      for (let i = 0; i < 100 && replies.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(new TextDecoder().decode(replies[0]?.data), "not quic");
      assert.equal(refused.length, 0);
    } finally {
      relay.close();
      echo.close();
    }
    const p = relayWith({ quic: "passthrough", unreachable: (d) => Promise.resolve(void refused.push(d)) });
    // Port 443 on loopback has no listener here: the datagram is sent (no refusal by the relay).
    p.relay.handle(datagram("quic, relayed"), client);
    assert.equal(p.relay.stats().flows, 1, "a relay socket was opened for it");
    assert.equal(p.relay.stats().quicRejected, 0);
    assert.equal(refused.length, 0);
    p.relay.close();
    assert.equal(p.ended[0]?.error, undefined);
    assert.equal(new TextDecoder().decode(p.ended[0]?.messages[0]?.content), "quic, relayed");
  },
});
