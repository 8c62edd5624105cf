//! The whole core as one sans-IO state machine: datagrams and time in, datagrams and events
//! out. `lib.rs` only adapts it to the C ABI.

use crate::out::Out;
use crate::packet;
use crate::stack::{Stack, StackConfig};
use crate::tunnel::{AddPeerError, Drop, PeerConfig, Tunnel, MAX_INNER_PACKET};
use std::fmt::Write;
use std::net::SocketAddr;

/// How often peer timers run (boringtun expects about this).
const TIMER_MS: f64 = 250.0;

/// The core: one WireGuard identity, its peers, and the TCP/IP stack behind them.
pub struct Core {
    tunnel: Tunnel,
    stack: Stack,
    /// Records for the host, drained after every call.
    pub out: Out,
    now: smoltcp::time::Instant,
    now_ms: f64,
    last_timers: f64,
    /// Errors from `udp_send` and `ip_send` that went nowhere.
    pub send_errors: u64,
    /// The TUN role: no WireGuard; raw IP packets come in through [`Core::ip_input`] and every
    /// packet the stack sends goes out as an `IP_PACKET` record of peer [`TUN_PEER`].
    tun: bool,
    /// TUN role: packets taken and handed out (reported as `datagramsIn` and `datagramsOut`).
    tun_in: u64,
    tun_out: u64,
}

/// The peer id the TUN role's traffic belongs to (per-peer limits apply to the whole device).
pub const TUN_PEER: u32 = 0;

/// Longest IP packet the TUN role takes or sends (an IPv4 packet's largest total length).
pub const MAX_TUN_PACKET: usize = 65_535;

/// Converts host milliseconds to the clocks of boringtun and smoltcp.
fn set_clock(now_ms: f64) -> smoltcp::time::Instant {
    let micros = (now_ms.max(0.0) * 1000.0) as u64;
    mock_instant::MockClock::set_time(std::time::Duration::from_micros(micros));
    smoltcp::time::Instant::from_micros(micros as i64)
}

impl Core {
    /// A core with the given private key and stack settings, at host time `now_ms`.
    pub fn new(private: [u8; 32], cfg: StackConfig, now_ms: f64) -> Core {
        let now = set_clock(now_ms);
        Core {
            tunnel: Tunnel::new(private),
            stack: Stack::new(cfg, now),
            out: Out::default(),
            now,
            now_ms,
            last_timers: now_ms,
            send_errors: 0,
            tun: false,
            tun_in: 0,
            tun_out: 0,
        }
    }

    /// A core in the TUN role: the server stack without WireGuard, fed raw IP packets with
    /// [`Core::ip_input`] (from a TUN device) and answering with `IP_PACKET` records.
    pub fn new_tun(cfg: StackConfig, now_ms: f64) -> Core {
        let mut c = Core::new([0; 32], StackConfig { server: true, ..cfg }, now_ms);
        c.tun = true;
        c
    }

    /// Whether this core is in the TUN role.
    pub fn is_tun(&self) -> bool {
        self.tun
    }

    /// TUN role: one IP packet read from the device, straight into the stack.
    pub fn ip_input(&mut self, now_ms: f64, pkt: &[u8]) -> Result<(), &'static str> {
        if !self.tun {
            return Err("raw IP input needs the TUN role");
        }
        self.at(now_ms);
        self.tun_in += 1;
        if pkt.len() > MAX_TUN_PACKET {
            self.stack.stats.malformed += 1;
            return Err("packet longer than an IP packet can be");
        }
        let now = self.now;
        self.stack.input(TUN_PEER, pkt, now, &mut self.out);
        self.flush(now_ms);
        Ok(())
    }

    fn at(&mut self, now_ms: f64) {
        if now_ms > self.now_ms {
            self.now_ms = now_ms;
            self.now = set_clock(now_ms);
        }
    }

    /// Adds a peer.
    pub fn add_peer(&mut self, now_ms: f64, cfg: PeerConfig) -> Result<u32, AddPeerError> {
        self.at(now_ms);
        self.tunnel.add_peer(cfg)
    }

    /// Removes a peer and resets its connections.
    pub fn remove_peer(&mut self, now_ms: f64, id: u32) -> bool {
        self.at(now_ms);
        self.stack.drop_peer(id, &mut self.out);
        self.tunnel.remove_peer(id)
    }

    /// One datagram from the outer socket.
    pub fn datagram(&mut self, now_ms: f64, from: SocketAddr, data: &[u8]) {
        self.at(now_ms);
        let Core { tunnel, stack, out, now, .. } = self;
        let now = *now;
        tunnel.receive(from, data, out, &mut |peer, pkt, out| stack.input(peer, pkt, now, out));
        self.flush(now_ms);
    }

    /// Runs timers that are due, sends what is pending, reports events. Returns milliseconds
    /// until the next call is needed.
    pub fn tick(&mut self, now_ms: f64) -> f64 {
        self.at(now_ms);
        if self.now_ms - self.last_timers >= TIMER_MS {
            self.last_timers = self.now_ms;
            self.tunnel.tick(&mut self.out);
            self.stack.sweep(self.now, &mut self.out);
        }
        self.flush(now_ms);
        let timers = (self.last_timers + TIMER_MS - self.now_ms).max(0.0);
        match self.stack.poll_delay(self.now) {
            Some(d) => timers.min(d as f64),
            None => timers,
        }
    }

    /// Lets the stack send what it can, encrypts it to the right peers, and reports events.
    pub fn flush(&mut self, now_ms: f64) {
        self.at(now_ms);
        self.stack.poll(self.now);
        let Core { tunnel, stack, out, tun, tun_out, .. } = self;
        if *tun {
            stack.take_tx(|p| {
                *tun_out += 1;
                out.ip_packet(TUN_PEER, p)
            });
        } else {
            stack.take_tx(|p| route(tunnel, p, out));
        }
        stack.events(out);
    }

    /// Sends a UDP datagram into the tunnel from `src` (any address) to `dst` (a peer's).
    pub fn udp_send(&mut self, now_ms: f64, src: SocketAddr, dst: SocketAddr, data: &[u8]) -> Result<(), &'static str> {
        self.at(now_ms);
        if !self.tun && self.tunnel.peer_for(dst.ip()).is_none() {
            self.send_errors += 1;
            return Err("no peer owns the destination address");
        }
        let mtu = self.stack.mtu();
        let mut err = "";
        let ok = self.stack.queue_tx(|b| packet::build_udp(src, dst, data, mtu, b).map_err(|e| err = e).is_ok());
        if !ok {
            self.send_errors += 1;
            return Err(err);
        }
        self.stack.stats.udp_out += 1;
        self.flush(now_ms);
        Ok(())
    }

    /// Sends a whole IP packet into the tunnel, to the peer that owns its destination.
    pub fn ip_send(&mut self, now_ms: f64, pkt: &[u8]) -> Result<(), &'static str> {
        self.at(now_ms);
        if pkt.len() > MAX_INNER_PACKET {
            return Err("packet longer than a WireGuard datagram can carry");
        }
        let Some(dst) = packet::destination(pkt) else {
            return Err("not an IP packet");
        };
        if self.tun {
            // Into the stack's queue, so it leaves in order with what the stack sends.
            self.stack.queue_tx(|b| {
                b.extend_from_slice(pkt);
                true
            });
            return Ok(());
        }
        let Some(peer) = self.tunnel.peer_for(dst) else {
            return Err("no peer owns the destination address");
        };
        self.tunnel.send(peer, pkt, &mut self.out);
        Ok(())
    }

    /// The TCP/IP stack, for connection operations.
    pub fn stack(&mut self) -> &mut Stack {
        &mut self.stack
    }

    /// The peer to use for client-role connections (the only peer).
    pub fn only_peer(&self) -> Option<u32> {
        let mut it = self.tunnel.peers();
        match (it.next(), it.next()) {
            (Some(p), None) => Some(p.id),
            _ => None,
        }
    }

    /// Our static public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.tunnel.public_key()
    }

    /// Counters and per-peer state as JSON.
    pub fn stats_json(&self) -> String {
        let t = &self.tunnel;
        let s = &self.stack.stats;
        let mut j = String::with_capacity(512);
        j.push_str("{\"peers\":[");
        let mut peers: Vec<_> = t.peers().collect();
        peers.sort_by_key(|p| p.id);
        for (i, p) in peers.into_iter().enumerate() {
            if i > 0 {
                j.push(',');
            }
            let key: String = p.public.iter().map(|b| format!("{b:02x}")).collect();
            let ep = p.endpoint.map(|e| format!("\"{e}\"")).unwrap_or_else(|| "null".into());
            let addrs: Vec<String> = p.addresses.iter().map(|a| format!("\"{a}\"")).collect();
            let allowed: Vec<String> = p.allowed.iter().map(|(a, l)| format!("\"{a}/{l}\"")).collect();
            let _ = write!(
                j,
                "{{\"id\":{},\"publicKeyHex\":\"{key}\",\"endpoint\":{ep},\"allowedIps\":[{}],\"addresses\":[{}],\"handshakes\":{},\"rxBytes\":{},\"txBytes\":{}}}",
                p.id,
                allowed.join(","),
                addrs.join(","),
                p.handshakes,
                p.rx_bytes,
                p.tx_bytes
            );
        }
        j.push_str("],\"drops\":{");
        for (i, d) in Drop::ALL.iter().enumerate() {
            let _ = write!(j, "{}\"{}\":{}", if i > 0 { "," } else { "" }, d.name(), t.drops[*d as usize]);
        }
        let _ = write!(
            j,
            "}},\"datagramsIn\":{},\"datagramsOut\":{},\"connectionsOpen\":{},\"connectionsOpened\":{},\"connectionsRefused\":{},\"refusedPeerLimit\":{},\"refusedHalfOpen\":{},\"refusedMemory\":{},\"halfOpenTimeouts\":{},\"bufferGrowthRefused\":{},\"bufferBytes\":{},\"udpConversations\":{},\"udpRefused\":{},\"malformedInner\":{},\"udpIn\":{},\"udpOut\":{},\"echoReplies\":{},\"tcpRxBytes\":{},\"tcpTxBytes\":{},\"sendErrors\":{}}}",
            if self.tun { self.tun_in } else { t.datagrams_in },
            if self.tun { self.tun_out } else { t.datagrams_out },
            self.stack.connection_count(),
            s.connections_opened,
            s.connections_refused,
            s.refused_peer_limit,
            s.refused_half_open,
            s.refused_memory,
            s.half_open_timeouts,
            s.growth_refused,
            self.stack.buffer_bytes(),
            self.stack.udp_conversations(),
            s.udp_refused,
            s.malformed,
            s.udp_in,
            s.udp_out,
            s.echo_replies,
            s.tcp_rx_bytes,
            s.tcp_tx_bytes,
            self.send_errors
        );
        j
    }
}

/// Sends one packet the stack produced to the peer that owns its destination.
fn route(tunnel: &mut Tunnel, pkt: &[u8], out: &mut Out) {
    match packet::destination(pkt).and_then(|d| tunnel.peer_for(d)) {
        Some(peer) => tunnel.send(peer, pkt, out),
        None => tunnel.drops[Drop::NoRoute as usize] += 1,
    }
}
