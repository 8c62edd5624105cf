//! Shared by the integration tests: the record decoder and a client-role core wired to a
//! server-role core in memory, with a driven clock.
#![allow(dead_code)]

use std::net::SocketAddr;
use wirescope_core::core::Core;
use wirescope_core::out::{kind, read_endpoint};
use wirescope_core::stack::StackConfig;
use wirescope_core::tunnel::PeerConfig;

#[derive(Debug, Clone, PartialEq)]
pub enum Rec {
    Datagram(SocketAddr, Vec<u8>),
    Open(u32, u32, SocketAddr, SocketAddr),
    Conn(u8, u32),
    Closed(u32, u8),
    Udp(u32, SocketAddr, SocketAddr, Vec<u8>),
    Ip(u32, Vec<u8>),
    Peer(u32, u8),
    Log(String),
}

fn u16at(b: &[u8], i: usize) -> usize {
    u16::from_le_bytes([b[i], b[i + 1]]) as usize
}
fn u32at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().unwrap())
}

pub fn drain(c: &mut Core) -> Vec<Rec> {
    let b = std::mem::take(&mut c.out.buf);
    let mut v = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let k = b[i];
        i += 1;
        match k {
            kind::DATAGRAM => {
                let ep = read_endpoint(&b[i..]).unwrap();
                let n = u16at(&b, i + 18);
                v.push(Rec::Datagram(ep, b[i + 20..i + 20 + n].to_vec()));
                i += 20 + n;
            }
            kind::TCP_OPEN => {
                v.push(Rec::Open(
                    u32at(&b, i),
                    u32at(&b, i + 4),
                    read_endpoint(&b[i + 8..]).unwrap(),
                    read_endpoint(&b[i + 26..]).unwrap(),
                ));
                i += 44;
            }
            kind::TCP_READABLE | kind::TCP_WRITABLE | kind::TCP_FIN => {
                v.push(Rec::Conn(k, u32at(&b, i)));
                i += 4;
            }
            kind::TCP_CLOSED => {
                v.push(Rec::Closed(u32at(&b, i), b[i + 4]));
                i += 5;
            }
            kind::UDP => {
                let n = u16at(&b, i + 40);
                v.push(Rec::Udp(
                    u32at(&b, i),
                    read_endpoint(&b[i + 4..]).unwrap(),
                    read_endpoint(&b[i + 22..]).unwrap(),
                    b[i + 42..i + 42 + n].to_vec(),
                ));
                i += 42 + n;
            }
            kind::IP_PACKET => {
                let n = u16at(&b, i + 4);
                v.push(Rec::Ip(u32at(&b, i), b[i + 6..i + 6 + n].to_vec()));
                i += 6 + n;
            }
            kind::PEER => {
                v.push(Rec::Peer(u32at(&b, i), b[i + 4]));
                i += 5;
            }
            kind::LOG => {
                let n = u16at(&b, i + 1);
                v.push(Rec::Log(String::from_utf8_lossy(&b[i + 3..i + 3 + n]).into()));
                i += 3 + n;
            }
            _ => panic!("unknown record kind {k}"),
        }
    }
    v
}

/// Every address, both families.
pub fn any() -> Vec<(std::net::IpAddr, u8)> {
    vec![("0.0.0.0".parse().unwrap(), 0), ("::".parse().unwrap(), 0)]
}

pub const SERVER_EP: &str = "127.0.0.1:51820";
pub const CLIENT_EP: &str = "127.0.0.1:40000";

pub fn cfg(server: bool, v4: &str) -> StackConfig {
    StackConfig {
        server,
        v4: v4.parse().unwrap(),
        v6: "fd77::1".parse().unwrap(),
        max_connections: 64,
        keepalive_secs: 0,
        timeout_secs: 0,
        ..StackConfig::default()
    }
}

pub struct Pair {
    pub server: Core,
    pub client: Core,
    pub now: f64,
    /// Records other than datagrams, per side.
    pub s_events: Vec<Rec>,
    pub c_events: Vec<Rec>,
    /// Server-to-client datagrams seen so far, and the range of them that is lost on the way.
    pub down_count: usize,
    pub down_lost: std::ops::Range<usize>,
    /// In [`Pair::step`]: how many of the client's datagrams are lost after each lost
    /// server datagram (its duplicate ACKs), and how many are still to lose.
    pub acks_lost_per_loss: usize,
    pub acks_to_lose: usize,
}

impl Pair {
    pub fn new() -> Pair {
        Pair::with(cfg(true, "10.0.0.1"))
    }

    /// A pair whose server core has the given settings.
    pub fn with(server_cfg: StackConfig) -> Pair {
        let (sk, ck) = ([1u8; 32], [2u8; 32]);
        let now = 1000.0;
        let mut server = Core::new(sk, server_cfg, now);
        let mut client = Core::new(ck, cfg(false, "10.0.0.2"), now);
        server
            .add_peer(now, PeerConfig { public: pub_of(ck), psk: None, keepalive: None, endpoint: None, allowed: None })
            .unwrap();
        client
            .add_peer(
                now,
                PeerConfig {
                    public: pub_of(sk),
                    psk: None,
                    keepalive: None,
                    endpoint: Some(SERVER_EP.parse().unwrap()),
                    allowed: Some(any()),
                },
            )
            .unwrap();
        Pair {
            server,
            client,
            now,
            s_events: vec![],
            c_events: vec![],
            down_count: 0,
            down_lost: 0..0,
            acks_lost_per_loss: 0,
            acks_to_lose: 0,
        }
    }

    /// Moves datagrams between the two until both are quiet (bounded).
    pub fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for rec in drain(&mut self.client) {
                match rec {
                    Rec::Datagram(to, d) => {
                        assert_eq!(to, SERVER_EP.parse().unwrap());
                        self.server.datagram(self.now, CLIENT_EP.parse().unwrap(), &d);
                        moved = true;
                    }
                    other => self.c_events.push(other),
                }
            }
            for rec in drain(&mut self.server) {
                match rec {
                    Rec::Datagram(to, d) => {
                        assert_eq!(to, CLIENT_EP.parse().unwrap());
                        self.down_count += 1;
                        if !self.down_lost.contains(&self.down_count) {
                            self.client.datagram(self.now, SERVER_EP.parse().unwrap(), &d);
                        }
                        moved = true;
                    }
                    other => self.s_events.push(other),
                }
            }
            if !moved {
                return;
            }
        }
        panic!("pump did not settle");
    }

    /// Moves what each side has to send now across once, and what that makes the other side
    /// send back only on the next step: one step is one round trip.
    pub fn step(&mut self) {
        let up = drain(&mut self.client);
        let down = drain(&mut self.server);
        for rec in up {
            match rec {
                Rec::Datagram(_, d) => {
                    if self.acks_to_lose > 0 {
                        self.acks_to_lose -= 1;
                    } else {
                        self.server.datagram(self.now, CLIENT_EP.parse().unwrap(), &d);
                    }
                }
                other => self.c_events.push(other),
            }
        }
        for rec in down {
            match rec {
                Rec::Datagram(_, d) => {
                    self.down_count += 1;
                    if !self.down_lost.contains(&self.down_count) {
                        self.client.datagram(self.now, SERVER_EP.parse().unwrap(), &d);
                    } else {
                        self.acks_to_lose += self.acks_lost_per_loss;
                    }
                }
                other => self.s_events.push(other),
            }
        }
    }

    pub fn advance(&mut self, ms: f64) {
        self.now += ms;
        self.server.tick(self.now);
        self.client.tick(self.now);
        self.pump();
    }
}

/// The public key of a private key.
pub fn pub_of(k: [u8; 32]) -> [u8; 32] {
    boringtun::x25519::PublicKey::from(&boringtun::x25519::StaticSecret::from(k)).to_bytes()
}

pub fn write_all(c: &mut Core, id: u32, mut data: &[u8], now: f64) -> usize {
    let mut sent = 0;
    while !data.is_empty() {
        let w = c.stack().write_window(id);
        if w.is_empty() {
            break;
        }
        let n = w.len().min(data.len());
        w[..n].copy_from_slice(&data[..n]);
        assert_eq!(c.stack().commit(id, n), n);
        data = &data[n..];
        sent += n;
    }
    c.flush(now);
    sent
}

pub fn read_all(c: &mut Core, id: u32, now: f64) -> Vec<u8> {
    let mut v = Vec::new();
    loop {
        let p = c.stack().peek(id).to_vec();
        if p.is_empty() {
            break;
        }
        v.extend_from_slice(&p);
        c.stack().consume(id, p.len());
    }
    c.flush(now);
    v
}

/// Opens a connection from the client core to the server core; (client id, server id).
pub fn connect(p: &mut Pair, dst: &str) -> (u32, u32) {
    try_connect(p, dst).expect("the server accepted the connection")
}

/// Opens a connection from the client core; (client id, server id), or None when the server
/// never reported it open.
pub fn try_connect(p: &mut Pair, dst: &str) -> Option<(u32, u32)> {
    let seen = p.s_events.len();
    let cid = p.client.stack().connect(1, dst.parse().unwrap())?;
    p.client.flush(p.now);
    p.pump();
    for _ in 0..30 {
        if p.s_events[seen..].iter().any(|r| matches!(r, Rec::Open(..))) {
            break;
        }
        p.advance(100.0);
    }
    let sid = p.s_events[seen..].iter().find_map(|r| if let Rec::Open(id, ..) = r { Some(*id) } else { None })?;
    Some((cid, sid))
}

/// Moves the client's datagrams to the server and throws away what the server sends back
/// (keeping its events): for packets whose answers the client must not see.
pub fn up_only(p: &mut Pair) {
    for rec in drain(&mut p.client) {
        match rec {
            Rec::Datagram(_, d) => p.server.datagram(p.now, CLIENT_EP.parse().unwrap(), &d),
            other => p.c_events.push(other),
        }
    }
    for rec in drain(&mut p.server) {
        if !matches!(rec, Rec::Datagram(..)) {
            p.s_events.push(rec);
        }
    }
}

/// The Internet checksum of `b`, starting from `sum`.
pub fn checksum_from(b: &[u8], mut sum: u32) -> u16 {
    for c in b.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet from `src` to `dst` carrying `proto` with `body` (its checksum, for TCP and
/// UDP, filled in at `csum_at` within the body).
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, mut body: Vec<u8>, csum_at: usize) -> Vec<u8> {
    let len = 20 + body.len();
    let mut p = vec![0x45, 0, (len >> 8) as u8, len as u8, 0, 0, 0x40, 0, 64, proto, 0, 0];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let sum = checksum_from(&p, 0);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut pseudo = 0u32;
    for c in [src, dst] {
        pseudo += u16::from_be_bytes([c[0], c[1]]) as u32 + u16::from_be_bytes([c[2], c[3]]) as u32;
    }
    pseudo += proto as u32 + body.len() as u32;
    let sum = checksum_from(&body, pseudo);
    body[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&body);
    p
}

/// A TCP SYN from `src`:`sport` to `dst`:`dport`.
pub fn tcp_syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    ipv4(src, dst, 6, t, 16)
}

/// A UDP datagram from `src`:`sport` to `dst`:`dport`.
pub fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    ipv4(src, dst, 17, u, 6)
}

/// The value of a numeric field in the core's stats JSON.
pub fn stat(c: &Core, name: &str) -> u64 {
    let j = c.stats_json();
    let key = format!("\"{name}\":");
    let at = j.find(&key).unwrap_or_else(|| panic!("no {name} in {j}")) + key.len();
    j[at..].split(|ch: char| !ch.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// An ICMP echo request from `src` to `dst`.
pub fn ping(src: [u8; 4], dst: [u8; 4], id: u16) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 30, 0, 0, 0x40, 0, 64, 1, 0, 0];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let sum = checksum_from(&p, 0);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut body = vec![8, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1, b'h', b'i'];
    let sum = checksum_from(&body, 0);
    body[2..4].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&body);
    p
}
