//! The harness shared by the fuzz targets: a core under test and a WireGuard peer (plain
//! boringtun) that plays the other end of the tunnel, so the fuzz input can speak at either
//! level: raw datagrams on the outer socket, or inner IP packets sent through a real session.
//!
//! Everything is deterministic for one input except the ephemeral keys boringtun draws, which
//! change ciphertexts but not what the core does with them. Every loop is bounded.

pub mod datagram;
pub mod inner_packet;

use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use wirescope_core::core::Core;
use wirescope_core::out::{kind, read_endpoint};
use wirescope_core::stack::StackConfig;
use wirescope_core::tunnel::PeerConfig;

/// Reads the fuzz input as a stream of numbers and slices; past the end everything is zero.
pub struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, at: 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.at.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.at = start + n;
        &self.data[start..end]
    }
    /// A length-prefixed slice of at most `max` bytes.
    pub fn slice(&mut self, max: usize) -> &'a [u8] {
        let n = self.u16() as usize % (max + 1);
        self.bytes(n)
    }
}

pub const CORE_KEY: [u8; 32] = [1; 32];
pub const PEER_KEY: [u8; 32] = [2; 32];
pub const STRANGER_KEY: [u8; 32] = [3; 32];

pub fn public_of(k: [u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(k)).to_bytes()
}

/// The core's own inner addresses and the peer's, per role.
pub struct Addresses {
    pub core_v4: Ipv4Addr,
    pub core_v6: Ipv6Addr,
    pub peer_v4: Ipv4Addr,
    pub peer_v6: Ipv6Addr,
}

pub const SERVER_ADDRS: Addresses = Addresses {
    core_v4: Ipv4Addr::new(10, 0, 0, 1),
    core_v6: Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1),
    peer_v4: Ipv4Addr::new(10, 0, 0, 2),
    peer_v6: Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2),
};

/// Small buffers and connection limits, so limits are reached and each run stays fast.
pub fn stack_config(server: bool, a: &Addresses) -> StackConfig {
    StackConfig {
        server,
        v4: if server { a.core_v4 } else { a.peer_v4 },
        v6: if server { a.core_v6 } else { a.peer_v6 },
        mtu: 1420,
        rx_buffer: 16 * 1024,
        tx_buffer: 16 * 1024,
        max_connections: 8,
        keepalive_secs: 25,
        timeout_secs: 120,
        ..StackConfig::default()
    }
}

/// The peer's allowed inner addresses: the server role learns them (one per family), the
/// client role takes replies from anywhere.
fn peer_allowed(server: bool) -> Option<Vec<(std::net::IpAddr, u8)>> {
    (!server).then(|| vec![(std::net::Ipv4Addr::UNSPECIFIED.into(), 0), (std::net::Ipv6Addr::UNSPECIFIED.into(), 0)])
}

/// How far one input got: proof that the seeds reach the code they are meant to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    /// The peer has a session with the core.
    pub session: bool,
    /// Connections the core announced.
    pub connections: usize,
    /// Inner packets the core sent to the peer.
    pub received: usize,
}

/// A core under test and a boringtun peer talking to it.
pub struct Rig {
    pub core: Core,
    pub peer: Tunn,
    pub now: f64,
    pub core_ep: SocketAddr,
    pub peer_ep: SocketAddr,
    pub server: bool,
    /// The core's id for the peer.
    pub peer_id: u32,
    /// Connections the core announced, in order.
    pub conns: Vec<u32>,
    /// The latest inner packets the core sent to the peer (plaintext), newest last.
    pub received: Vec<Vec<u8>>,
    /// The latest datagrams the peer sent to the core, newest last (for replays).
    pub sent: Vec<Vec<u8>>,
    /// Inner packets the core sent to the peer, in all.
    pub received_count: usize,
    buf: Vec<u8>,
}

const KEEP: usize = 8;

fn keep(v: &mut Vec<Vec<u8>>, item: &[u8]) {
    if v.len() == KEEP {
        v.remove(0);
    }
    v.push(item.to_vec());
}

impl Rig {
    /// A core in the given role with the peer configured, no session yet.
    pub fn new(server: bool) -> Rig {
        let now = 1000.0;
        let core_ep: SocketAddr = "127.0.0.1:51820".parse().unwrap();
        let peer_ep: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut core = Core::new(CORE_KEY, stack_config(server, &SERVER_ADDRS), now);
        let endpoint = if server { None } else { Some(peer_ep) };
        let peer_id = core
            .add_peer(
                now,
                PeerConfig {
                    public: public_of(PEER_KEY),
                    psk: None,
                    keepalive: None,
                    endpoint,
                    allowed: peer_allowed(server),
                },
            )
            .unwrap();
        let peer = Tunn::new(StaticSecret::from(PEER_KEY), PublicKey::from(public_of(CORE_KEY)), None, None, 77, None);
        Rig {
            core,
            peer,
            now,
            core_ep,
            peer_ep,
            server,
            peer_id,
            conns: Vec::new(),
            received: Vec::new(),
            sent: Vec::new(),
            received_count: 0,
            buf: vec![0; 65_536 + 64],
        }
    }

    /// A rig whose peer has completed a handshake with the core.
    pub fn established(server: bool) -> Rig {
        let mut r = Rig::new(server);
        let init = match r.peer.format_handshake_initiation(&mut r.buf, false) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            _ => panic!("no handshake initiation"),
        };
        r.send_to_core(&init);
        r.pump();
        r
    }

    /// The host removes the peer (its connections are reset) and adds it again; the peer then
    /// starts a new handshake with the new entry.
    pub fn readd_peer(&mut self) {
        let now = self.now;
        self.core.remove_peer(now, self.peer_id);
        let endpoint = if self.server { None } else { Some(self.peer_ep) };
        let cfg = PeerConfig {
            public: public_of(PEER_KEY),
            psk: None,
            keepalive: None,
            endpoint,
            allowed: peer_allowed(self.server),
        };
        self.peer_id = self.core.add_peer(now, cfg).unwrap();
        self.peer = Tunn::new(StaticSecret::from(PEER_KEY), PublicKey::from(public_of(CORE_KEY)), None, None, 77, None);
        if let TunnResult::WriteToNetwork(d) = self.peer.format_handshake_initiation(&mut self.buf, false) {
            let d = d.to_vec();
            self.send_to_core(&d);
        }
        self.pump();
    }

    /// What this run reached so far.
    pub fn reached(&self) -> Reached {
        Reached {
            session: self.peer.time_since_last_handshake().is_some(),
            connections: self.conns.len(),
            received: self.received_count,
        }
    }

    /// One datagram from the peer's endpoint (or another) to the core.
    pub fn datagram_from(&mut self, from: SocketAddr, d: &[u8]) {
        self.core.datagram(self.now, from, d);
    }

    fn send_to_core(&mut self, d: &[u8]) {
        keep(&mut self.sent, d);
        let (now, from) = (self.now, self.peer_ep);
        self.core.datagram(now, from, d);
    }

    /// Encrypts an inner packet with the peer's session and delivers it to the core.
    pub fn send_inner(&mut self, pkt: &[u8]) {
        if pkt.len() + 32 > self.buf.len() {
            return;
        }
        if let TunnResult::WriteToNetwork(d) = self.peer.encapsulate(pkt, &mut self.buf) {
            let d = d.to_vec();
            self.send_to_core(&d);
        }
        self.pump();
    }

    /// The datagram the peer would send for `pkt`, without sending it.
    pub fn seal(&mut self, pkt: &[u8]) -> Option<Vec<u8>> {
        if pkt.len() + 32 > self.buf.len() {
            return None;
        }
        match self.peer.encapsulate(pkt, &mut self.buf) {
            TunnResult::WriteToNetwork(d) => Some(d.to_vec()),
            _ => None,
        }
    }

    /// Advances the clock, runs both sides' timers and moves what they send.
    pub fn advance(&mut self, ms: f64) {
        self.now += ms;
        self.core.tick(self.now);
        if let TunnResult::WriteToNetwork(d) = self.peer.update_timers(&mut self.buf) {
            let d = d.to_vec();
            self.send_to_core(&d);
        }
        self.pump();
    }

    /// Moves datagrams between the core and the peer until both are quiet, at most a bounded
    /// number of rounds (a core that keeps talking is not itself a crash).
    pub fn pump(&mut self) {
        for _ in 0..64 {
            let records = std::mem::take(&mut self.core.out.buf);
            let mut replies: Vec<Vec<u8>> = Vec::new();
            for_each_record(&records, |k, body| match k {
                kind::DATAGRAM => {
                    let (Some(to), Some(d)) = (read_endpoint(body), datagram_bytes(body)) else { return };
                    if to != self.peer_ep {
                        return;
                    }
                    let mut first = true;
                    loop {
                        let input = if first { d } else { &[][..] };
                        let r = self.peer.decapsulate(Some(self.core_ep.ip()), input, &mut self.buf);
                        first = false;
                        match r {
                            TunnResult::WriteToNetwork(x) => replies.push(x.to_vec()),
                            TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                                keep(&mut self.received, p);
                                self.received_count += 1;
                                break;
                            }
                            _ => break,
                        }
                    }
                }
                kind::TCP_OPEN => {
                    let id = u32::from_le_bytes(body[..4].try_into().unwrap());
                    self.conns.push(id);
                }
                kind::TCP_CLOSED => {
                    // The host releases a connection once it is told it is over.
                    let id = u32::from_le_bytes(body[..4].try_into().unwrap());
                    self.core.stack().release(id);
                }
                _ => {}
            });
            if replies.is_empty() {
                if self.core.out.buf.is_empty() {
                    return;
                }
                continue;
            }
            for d in replies {
                self.send_to_core(&d);
            }
        }
        self.core.out.clear();
    }

    /// The core's address of one family, and the peer's.
    pub fn addresses(&self, v6: bool) -> (IpAddr, IpAddr) {
        let a = &SERVER_ADDRS;
        let (ours, theirs): (IpAddr, IpAddr) =
            if v6 { (a.core_v6.into(), a.peer_v6.into()) } else { (a.core_v4.into(), a.peer_v4.into()) };
        if self.server {
            (ours, theirs)
        } else {
            (theirs, ours)
        }
    }

    /// A host operation on one of the announced connections, chosen by the input.
    pub fn host_op(&mut self, inp: &mut Input) {
        if self.conns.is_empty() {
            return;
        }
        let id = self.conns[inp.u8() as usize % self.conns.len()];
        let now = self.now;
        match inp.u8() % 6 {
            0 => {
                let n = self.core.stack().peek(id).len();
                let take = if inp.bool() { n } else { n / 2 };
                self.core.stack().consume(id, take);
            }
            1 => {
                let data = inp.slice(4096);
                let w = self.core.stack().write_window(id);
                let n = w.len().min(data.len());
                w[..n].copy_from_slice(&data[..n]);
                self.core.stack().commit(id, n);
            }
            2 => self.core.stack().shutdown(id),
            3 => self.core.stack().abort(id),
            4 => self.core.stack().release(id),
            _ => {
                let _ = self.core.stack().info_json(id);
            }
        }
        self.core.flush(now);
        self.pump();
    }
}

fn u16le(b: &[u8], i: usize) -> Option<usize> {
    Some(u16::from_le_bytes([*b.get(i)?, *b.get(i + 1)?]) as usize)
}

fn datagram_bytes(body: &[u8]) -> Option<&[u8]> {
    let n = u16le(body, 18)?;
    body.get(20..20 + n)
}

/// Calls `f` with the kind and the bytes after the kind byte of each output record (the body
/// runs to the end of the buffer; `f` reads only its own fields).
pub fn for_each_record(b: &[u8], mut f: impl FnMut(u8, &[u8])) {
    let mut i = 0;
    while i < b.len() {
        let k = b[i];
        let body = &b[i + 1..];
        f(k, body);
        let size = match k {
            kind::DATAGRAM => u16le(body, 18).map(|n| 20 + n),
            kind::TCP_OPEN => Some(44),
            kind::TCP_READABLE | kind::TCP_WRITABLE | kind::TCP_FIN => Some(4),
            kind::TCP_CLOSED => Some(5),
            kind::UDP => u16le(body, 40).map(|n| 42 + n),
            kind::IP_PACKET => u16le(body, 4).map(|n| 6 + n),
            kind::PEER => Some(5),
            kind::LOG => u16le(body, 1).map(|n| 3 + n),
            _ => panic!("unknown output record kind {k}"),
        };
        i += 1 + size.expect("truncated output record");
    }
}

/// The Internet checksum of the concatenated parts.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in part.iter() {
            match odd.take() {
                Some(hi) => sum += u16::from_be_bytes([hi, b]) as u32,
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u16::from_be_bytes([hi, 0]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => {}
    }
    p
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

/// A transport segment with its checksum filled in (unless `corrupt`).
pub fn transport(src: IpAddr, dst: IpAddr, proto: u8, mut seg: Vec<u8>, corrupt: bool) -> Vec<u8> {
    let at = match proto {
        TCP if seg.len() >= 18 => 16,
        UDP if seg.len() >= 8 => 6,
        ICMP | ICMPV6 if seg.len() >= 4 => 2,
        _ => return seg,
    };
    seg[at] = 0;
    seg[at + 1] = 0;
    let sum =
        if proto == ICMP { checksum(&[&seg]) } else { checksum(&[&pseudo_header(src, dst, proto, seg.len()), &seg]) };
    let sum = if corrupt { sum ^ 0x5a5a } else { sum };
    seg[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    seg
}

/// A TCP segment from the input: ports, numbers, flags, window, options and payload.
pub fn tcp_segment(inp: &mut Input, sport: u16, dport: u16, seq: u32, ack: u32) -> Vec<u8> {
    let options = inp.slice(40).to_vec();
    let words = options.len().div_ceil(4);
    let flags = inp.u8();
    let ns = inp.bool();
    let window = inp.u16();
    let urgent = if inp.bool() { inp.u16() } else { 0 };
    let payload = inp.slice(1400);
    let mut s = Vec::with_capacity(20 + words * 4 + payload.len());
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&ack.to_be_bytes());
    s.push(((5 + words as u8) << 4) | ns as u8);
    s.push(flags);
    s.extend_from_slice(&window.to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(&urgent.to_be_bytes());
    s.extend_from_slice(&options);
    s.resize(20 + words * 4, 0);
    s.extend_from_slice(payload);
    s
}

/// An IP packet around `payload`; the header's fields come from the input where `raw` asks.
pub fn ip_packet(inp: &mut Input, src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let tweak = inp.u8();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let options = if tweak & 1 != 0 { inp.slice(40).to_vec() } else { Vec::new() };
            let words = options.len().div_ceil(4);
            let hlen = 20 + words * 4;
            let total = hlen + payload.len();
            let total = if tweak & 2 != 0 { inp.u16() as usize } else { total };
            let frag = if tweak & 4 != 0 { inp.u16() } else { 0x4000 };
            let mut p = vec![0x40 | (5 + words as u8), inp.u8()];
            p.extend_from_slice(&(total as u16).to_be_bytes());
            p.extend_from_slice(&inp.u16().to_be_bytes());
            p.extend_from_slice(&frag.to_be_bytes());
            p.push(if tweak & 8 != 0 { inp.u8() } else { 64 });
            p.push(proto);
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&options);
            p.resize(hlen, 0);
            let sum = checksum(&[&p]);
            let sum = if tweak & 16 != 0 { sum ^ 1 } else { sum };
            p[10..12].copy_from_slice(&sum.to_be_bytes());
            p.extend_from_slice(payload);
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let len = if tweak & 2 != 0 { inp.u16() } else { payload.len() as u16 };
            let mut p = vec![0x60, 0, 0, 0];
            if tweak & 1 != 0 {
                p[1] = inp.u8();
                p[2] = inp.u8();
            }
            p.extend_from_slice(&len.to_be_bytes());
            p.push(proto);
            p.push(if tweak & 8 != 0 { inp.u8() } else { 64 });
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(payload);
            p
        }
        _ => Vec::new(),
    }
}

/// An address from the input: mostly the given one, sometimes another of the same family.
pub fn address(inp: &mut Input, usual: IpAddr) -> IpAddr {
    if inp.u8() % 4 != 0 {
        return usual;
    }
    match usual {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(inp.u32())),
        IpAddr::V6(_) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&[inp.bytes(16), &[0u8; 16][..]].concat()[..16]);
            IpAddr::V6(Ipv6Addr::from(o))
        }
    }
}

/// A WireGuard message of the given type with the input's bytes and MAC1 set right for the
/// core's key, so it gets past the first check to the handshake code behind it.
pub fn with_mac1(core_public: &[u8; 32], mut msg: Vec<u8>) -> Vec<u8> {
    if msg.len() < 32 {
        return msg;
    }
    let key: [u8; 32] = Blake2s256::new().chain_update(b"mac1----").chain_update(core_public).finalize().into();
    let at = msg.len() - 32;
    let mut mac = <Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(&key).unwrap();
    Update::update(&mut mac, &msg[..at]);
    let tag: [u8; 16] = mac.finalize_fixed().into();
    msg[at..at + 16].copy_from_slice(&tag);
    msg
}

/// Writes inputs in the format [`Input`] reads, for the seed corpus and regression tests.
#[derive(Default)]
pub struct Script(pub Vec<u8>);

impl Script {
    pub fn u8(&mut self, b: u8) -> &mut Self {
        self.0.push(b);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    /// A slice as [`Input::slice`] reads it (the length must be within its maximum).
    pub fn slice(&mut self, b: &[u8]) -> &mut Self {
        self.u16(b.len() as u16).bytes(b)
    }
}
