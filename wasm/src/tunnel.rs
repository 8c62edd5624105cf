//! WireGuard on top of boringtun: many peers behind one static key, handshake routing, cookies
//! under load, timers, and the choice of peer for each outgoing packet.
//!
//! Invariants:
//! - a peer's boringtun index is its id, so data and response messages find their peer by
//!   `receiver_index >> 8` and handshake initiations by the initiator's static key (one DH);
//! - cryptokey routing: each peer has its allowed inner addresses (prefixes); a packet from a
//!   peer is accepted only when the peer owning its source address (longest prefix) is that
//!   peer, and a packet to the tunnel goes to the peer owning its destination. A prefix belongs
//!   to one peer. A peer configured without allowed addresses learns one IPv4 and one IPv6
//!   unicast address, the first it sends from that no other peer owns, and owns it until
//!   removed (so the table grows by at most two entries per such peer);
//! - every datagram that is not accepted is counted under one [`Drop`] reason.

use crate::out::{Level, Out, PeerEvent};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Handshakes per second (all peers together) before cookies are demanded. The shared limiter
/// sees each accepted handshake twice (our check, then boringtun's), hence the factor.
const HANDSHAKES_PER_SECOND: u64 = 2 * 100;

/// Handshake initiations one source address may have processed per second, and its burst (as
/// Linux's WireGuard): past the shared limit above, cookies prove the address, and this keeps
/// one address with a valid cookie (or replays of a valid initiation from it) from costing more
/// than a few key exchanges per second.
const PER_SOURCE_PER_SECOND: f64 = 20.0;
const PER_SOURCE_BURST: f64 = 5.0;
/// Sources tracked for that limit at most; past it, initiations from new sources are dropped
/// until old entries age out (a second without initiations frees an entry).
const PER_SOURCE_TABLE: usize = 4096;

/// Largest WireGuard datagram: MTU-sized inner packet plus 32 bytes of overhead, with room.
pub const MAX_DATAGRAM: usize = 65_535;

/// Longest inner packet one datagram carries: a data message adds 16 bytes of header and 16 of
/// authentication tag, and boringtun panics when the result does not fit [`MAX_DATAGRAM`].
pub const MAX_INNER_PACKET: usize = MAX_DATAGRAM - 32;

/// Reasons for dropping a datagram or an inner packet, as counted in the stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Not a WireGuard message at all (wrong type or length).
    Malformed,
    /// A handshake whose MAC1 does not match our key.
    BadMac,
    /// A valid-looking handshake from a key that is not a configured peer.
    UnknownPeer,
    /// A message for a receiver index no peer owns.
    UnknownIndex,
    /// boringtun refused it (replay, decryption failure, wrong state, expired session...).
    Rejected,
    /// The inner packet's source address is not one the peer may use.
    SourceNotAllowed,
    /// An outgoing packet for an address no peer owns, or for a peer with no endpoint yet.
    NoRoute,
    /// Under load and without a valid cookie: a cookie reply was sent instead.
    CookieSent,
    /// A handshake initiation beyond its source address's rate.
    RateLimited,
}

impl Drop {
    /// All reasons, in the order of [`Drop::name`]'s use in the stats.
    pub const ALL: [Drop; 9] = [
        Drop::Malformed,
        Drop::BadMac,
        Drop::UnknownPeer,
        Drop::UnknownIndex,
        Drop::Rejected,
        Drop::SourceNotAllowed,
        Drop::NoRoute,
        Drop::CookieSent,
        Drop::RateLimited,
    ];

    /// The name used in stats.
    pub fn name(self) -> &'static str {
        match self {
            Drop::Malformed => "malformed",
            Drop::BadMac => "badMac",
            Drop::UnknownPeer => "unknownPeer",
            Drop::UnknownIndex => "unknownIndex",
            Drop::Rejected => "rejected",
            Drop::SourceNotAllowed => "sourceNotAllowed",
            Drop::NoRoute => "noRoute",
            Drop::CookieSent => "cookieSent",
            Drop::RateLimited => "rateLimited",
        }
    }
}

/// Options for a new peer.
pub struct PeerConfig {
    /// The peer's static public key.
    pub public: [u8; 32],
    /// Optional preshared key.
    pub psk: Option<[u8; 32]>,
    /// Persistent keepalive interval in seconds.
    pub keepalive: Option<u16>,
    /// Where to send to before the peer has sent anything (the client role needs it).
    pub endpoint: Option<SocketAddr>,
    /// The inner addresses the peer may send from and receives for, as (network, prefix
    /// length); None: it learns one address per family on first use (see the module docs).
    pub allowed: Option<Vec<(IpAddr, u8)>>,
}

/// A prefix in its canonical form (host bits cleared), or None when the length is too long.
pub fn prefix(addr: IpAddr, len: u8) -> Option<(IpAddr, u8)> {
    match addr {
        IpAddr::V4(a) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            Some((IpAddr::V4((u32::from(a) & mask).into()), len))
        }
        IpAddr::V6(a) if len <= 128 => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            Some((IpAddr::V6((u128::from(a) & mask).into()), len))
        }
        _ => None,
    }
}

fn contains(net: (IpAddr, u8), ip: IpAddr) -> bool {
    prefix(ip, net.1).is_some_and(|p| p.0 == net.0)
}

fn is_host(net: (IpAddr, u8)) -> bool {
    net.1 == if net.0.is_ipv4() { 32 } else { 128 }
}

/// Whether a peer without allowed addresses may learn `ip` as its address.
fn learnable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast() || a.is_link_local())
        }
        IpAddr::V6(a) => {
            !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Which peer owns which inner addresses: exact addresses in a map (the usual /32 and /128),
/// wider prefixes in a list, longest first.
#[derive(Default)]
struct Routes {
    hosts: HashMap<IpAddr, u32>,
    nets: Vec<((IpAddr, u8), u32)>,
}

impl Routes {
    fn lookup(&self, ip: IpAddr) -> Option<u32> {
        if let Some(id) = self.hosts.get(&ip) {
            return Some(*id);
        }
        self.nets.iter().find(|(net, _)| contains(*net, ip)).map(|(_, id)| *id)
    }

    fn owner(&self, net: (IpAddr, u8)) -> Option<u32> {
        if is_host(net) {
            self.hosts.get(&net.0).copied()
        } else {
            self.nets.iter().find(|(n, _)| *n == net).map(|(_, id)| *id)
        }
    }

    fn insert(&mut self, net: (IpAddr, u8), id: u32) {
        if is_host(net) {
            self.hosts.insert(net.0, id);
        } else {
            self.nets.push((net, id));
            self.nets.sort_by(|a, b| b.0 .1.cmp(&a.0 .1));
        }
    }

    fn remove(&mut self, net: (IpAddr, u8)) {
        if is_host(net) {
            self.hosts.remove(&net.0);
        } else {
            self.nets.retain(|(n, _)| *n != net);
        }
    }
}

/// One configured peer.
pub struct Peer {
    /// The id the host knows this peer by (also its boringtun index).
    pub id: u32,
    /// The peer's static public key.
    pub public: [u8; 32],
    tunn: Tunn,
    /// The outer address the peer last sent an authenticated message from.
    pub endpoint: Option<SocketAddr>,
    /// The prefixes the peer owns (configured), empty for a peer that learns.
    pub allowed: Vec<(IpAddr, u8)>,
    /// Whether the peer learns its addresses (configured without allowed addresses).
    pub learns: bool,
    /// Addresses a learning peer has taken (at most one per family).
    pub addresses: Vec<IpAddr>,
    /// Completed handshakes.
    pub handshakes: u64,
    /// Inner bytes received from and sent to the peer.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Age of the current session when last looked at; it shrinks when a new one starts.
    last_since: Option<std::time::Duration>,
}

/// All peers of one static key.
pub struct Tunnel {
    private: StaticSecret,
    public: PublicKey,
    limiter: Arc<RateLimiter>,
    peers: HashMap<u32, Peer>,
    by_key: HashMap<[u8; 32], u32>,
    routes: Routes,
    next_id: u32,
    buf: Vec<u8>,
    /// Per source address: handshake tokens left and when they were last counted (seconds).
    sources: HashMap<IpAddr, (f64, f64)>,
    /// Drop counters, indexed like [`Drop::ALL`].
    pub drops: [u64; 9],
    /// Datagrams received and sent on the outer socket.
    pub datagrams_in: u64,
    pub datagrams_out: u64,
}

/// Errors from [`Tunnel::add_peer`].
#[derive(Debug, PartialEq, Eq)]
pub enum AddPeerError {
    /// That public key is already a peer.
    Duplicate,
    /// No more peer ids (2^24 peers added over the tunnel's life).
    Exhausted,
    /// An allowed prefix is invalid (prefix length too long for the family).
    BadPrefix,
    /// An allowed prefix belongs to another peer already.
    PrefixTaken,
}

impl Tunnel {
    /// A tunnel with the given static private key and no peers.
    pub fn new(private: [u8; 32]) -> Tunnel {
        let private = StaticSecret::from(private);
        let public = PublicKey::from(&private);
        Tunnel {
            limiter: Arc::new(RateLimiter::new(&public, HANDSHAKES_PER_SECOND)),
            private,
            public,
            peers: HashMap::new(),
            by_key: HashMap::new(),
            routes: Routes::default(),
            next_id: 1,
            buf: vec![0; MAX_DATAGRAM],
            sources: HashMap::new(),
            drops: [0; 9],
            datagrams_in: 0,
            datagrams_out: 0,
        }
    }

    /// Our static public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    fn count(&mut self, why: Drop) {
        self.drops[why as usize] += 1;
    }

    /// Adds a peer and returns its id.
    pub fn add_peer(&mut self, cfg: PeerConfig) -> Result<u32, AddPeerError> {
        if self.by_key.contains_key(&cfg.public) {
            return Err(AddPeerError::Duplicate);
        }
        if self.next_id >= 1 << 24 {
            return Err(AddPeerError::Exhausted);
        }
        let mut allowed = Vec::new();
        for &(addr, len) in cfg.allowed.iter().flatten() {
            let net = prefix(addr, len).ok_or(AddPeerError::BadPrefix)?;
            if allowed.contains(&net) {
                continue;
            }
            // A configured prefix takes precedence over an address some peer learned.
            let owner = self.routes.owner(net);
            if owner.is_some_and(|o| !self.peers.get(&o).is_some_and(|p| p.learns)) {
                return Err(AddPeerError::PrefixTaken);
            }
            allowed.push(net);
        }
        for &net in &allowed {
            if let Some(learner) = self.routes.owner(net).and_then(|o| self.peers.get_mut(&o)) {
                learner.addresses.retain(|a| *a != net.0);
            }
            self.routes.remove(net);
        }
        let id = self.next_id;
        self.next_id += 1;
        let tunn = Tunn::new(
            self.private.clone(),
            PublicKey::from(cfg.public),
            cfg.psk,
            cfg.keepalive,
            id,
            Some(self.limiter.clone()),
        );
        self.by_key.insert(cfg.public, id);
        for &net in &allowed {
            self.routes.insert(net, id);
        }
        self.peers.insert(
            id,
            Peer {
                id,
                public: cfg.public,
                tunn,
                endpoint: cfg.endpoint,
                learns: cfg.allowed.is_none(),
                allowed,
                addresses: Vec::new(),
                handshakes: 0,
                rx_bytes: 0,
                tx_bytes: 0,
                last_since: None,
            },
        );
        Ok(id)
    }

    /// Removes a peer; its inner addresses become free. Returns false if there was no such peer.
    pub fn remove_peer(&mut self, id: u32) -> bool {
        let Some(peer) = self.peers.remove(&id) else {
            return false;
        };
        self.by_key.remove(&peer.public);
        for net in &peer.allowed {
            self.routes.remove(*net);
        }
        for a in &peer.addresses {
            self.routes.hosts.remove(a);
        }
        true
    }

    /// The configured peers.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// Whether `id` is a configured peer.
    pub fn has_peer(&self, id: u32) -> bool {
        self.peers.contains_key(&id)
    }

    /// Which peer a datagram is for, or why it is dropped. Sends a cookie reply when under load.
    fn route(&mut self, from: SocketAddr, datagram: &[u8], out: &mut Out) -> Result<u32, Drop> {
        let packet = Tunn::parse_incoming_packet(datagram).map_err(|_| Drop::Malformed)?;
        match packet {
            Packet::HandshakeInit(ref init) => {
                let mut cookie = [0u8; 64];
                match self.limiter.verify_packet(Some(from.ip()), datagram, &mut cookie) {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(reply)) => {
                        out.datagram(from, reply);
                        self.datagrams_out += 1;
                        return Err(Drop::CookieSent);
                    }
                    Err(_) => return Err(Drop::BadMac),
                }
                if !self.source_may_handshake(from.ip()) {
                    return Err(Drop::RateLimited);
                }
                let half = parse_handshake_anon(&self.private, &self.public, init).map_err(|_| Drop::UnknownPeer)?;
                self.by_key.get(&half.peer_static_public).copied().ok_or(Drop::UnknownPeer)
            }
            Packet::HandshakeResponse(r) => Ok(r.receiver_idx >> 8),
            Packet::PacketCookieReply(c) => Ok(c.receiver_idx >> 8),
            Packet::PacketData(d) => Ok(d.receiver_idx >> 8),
        }
    }

    /// Takes a token of `ip`'s handshake rate; false when it has none left.
    fn source_may_handshake(&mut self, ip: IpAddr) -> bool {
        let now = mock_instant::MockClock::time().as_secs_f64();
        if !self.sources.contains_key(&ip) && self.sources.len() >= PER_SOURCE_TABLE {
            self.forget_quiet_sources(now);
            if self.sources.len() >= PER_SOURCE_TABLE {
                return false;
            }
        }
        let (tokens, last) = self.sources.entry(ip).or_insert((PER_SOURCE_BURST, now));
        *tokens = (*tokens + (now - *last) * PER_SOURCE_PER_SECOND).min(PER_SOURCE_BURST);
        *last = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }

    /// Drops the rate entries of sources that have had a full burst back for a second.
    fn forget_quiet_sources(&mut self, now: f64) {
        self.sources.retain(|_, (_, last)| now - *last < 1.0);
    }

    /// Handles one datagram from the outer socket. Inner packets are passed to `deliver` with
    /// the peer id; replies (handshake responses, queued packets) are appended to `out`.
    pub fn receive(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut Out,
        deliver: &mut dyn FnMut(u32, &[u8], &mut Out),
    ) {
        self.datagrams_in += 1;
        let id = match self.route(from, datagram, out) {
            Ok(id) => id,
            Err(why) => return self.count(why),
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return self.count(Drop::UnknownIndex);
        };
        let result = peer.tunn.decapsulate(Some(from.ip()), datagram, &mut self.buf);
        let mut why = None;
        let mut inner_src = None;
        match result {
            TunnResult::Done => {}
            TunnResult::Err(e) => why = Some(drop_for(e)),
            TunnResult::WriteToNetwork(reply) => {
                peer.endpoint = Some(from);
                out.datagram(from, reply);
                self.datagrams_out += 1;
                // Packets that waited for the session go out now.
                while let TunnResult::WriteToNetwork(p) = peer.tunn.decapsulate(None, &[], &mut self.buf) {
                    out.datagram(from, p);
                    self.datagrams_out += 1;
                }
            }
            TunnResult::WriteToTunnelV4(pkt, src) => {
                inner_src = Some(IpAddr::V4(src));
                why = accept_inner(&mut self.routes, peer, from, IpAddr::V4(src), pkt.len());
                if why.is_none() {
                    deliver(id, pkt, out);
                }
            }
            TunnResult::WriteToTunnelV6(pkt, src) => {
                inner_src = Some(IpAddr::V6(src));
                why = accept_inner(&mut self.routes, peer, from, IpAddr::V6(src), pkt.len());
                if why.is_none() {
                    deliver(id, pkt, out);
                }
            }
        }
        self.note_session(id, out);
        if let Some(why) = why {
            self.count(why);
            let n = self.drops[why as usize];
            if let (Drop::SourceNotAllowed, Some(src), true) = (why, inner_src, n.is_power_of_two()) {
                let msg =
                    format!("peer {id}: inner source {src} is not among its allowed addresses: dropped ({n} so far)");
                out.log(Level::Warn, &msg);
            }
        }
    }

    /// Reports a handshake that completed, or a session that ended, since the last look.
    fn note_session(&mut self, id: u32, out: &mut Out) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let since = peer.tunn.time_since_last_handshake();
        match (peer.last_since, since) {
            (None, Some(_)) => {
                peer.handshakes += 1;
                out.peer(id, PeerEvent::HandshakeComplete);
            }
            (Some(before), Some(now)) if now < before => {
                peer.handshakes += 1;
                out.peer(id, PeerEvent::HandshakeComplete);
            }
            (Some(_), None) => out.peer(id, PeerEvent::Expired),
            _ => {}
        }
        peer.last_since = since;
    }

    /// The peer an outgoing inner packet goes to: the owner of its destination address.
    pub fn peer_for(&self, dst: IpAddr) -> Option<u32> {
        self.routes.lookup(dst)
    }

    /// Encrypts an inner packet to peer `id` and appends the datagram (or a handshake
    /// initiation, when there is no session yet) to `out`.
    pub fn send(&mut self, id: u32, pkt: &[u8], out: &mut Out) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return self.count(Drop::NoRoute);
        };
        let Some(to) = peer.endpoint else {
            return self.count(Drop::NoRoute);
        };
        if pkt.len() > MAX_INNER_PACKET {
            return self.count(Drop::Rejected);
        }
        peer.tx_bytes += pkt.len() as u64;
        match peer.tunn.encapsulate(pkt, &mut self.buf) {
            TunnResult::WriteToNetwork(d) => {
                out.datagram(to, d);
                self.datagrams_out += 1;
            }
            TunnResult::Err(_) => self.count(Drop::Rejected),
            _ => {}
        }
    }

    /// Runs every peer's timers (rekey, keepalive, retries, expiry); call every ~250 ms.
    pub fn tick(&mut self, out: &mut Out) {
        self.limiter.reset_count();
        if !self.sources.is_empty() {
            self.forget_quiet_sources(mock_instant::MockClock::time().as_secs_f64());
        }
        let ids: Vec<u32> = self.peers.keys().copied().collect();
        for id in ids {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if let TunnResult::WriteToNetwork(d) = peer.tunn.update_timers(&mut self.buf) {
                if let Some(to) = peer.endpoint {
                    out.datagram(to, d);
                    self.datagrams_out += 1;
                }
            }
            self.note_session(id, out);
        }
    }
}

/// Checks the inner source address of an authenticated packet (cryptokey routing) and updates
/// the peer's bookkeeping.
fn accept_inner(routes: &mut Routes, peer: &mut Peer, from: SocketAddr, src: IpAddr, len: usize) -> Option<Drop> {
    match routes.lookup(src) {
        Some(owner) if owner == peer.id => {}
        None if peer.learns && learnable(src) && !peer.addresses.iter().any(|a| a.is_ipv4() == src.is_ipv4()) => {
            routes.hosts.insert(src, peer.id);
            peer.addresses.push(src);
        }
        _ => return Some(Drop::SourceNotAllowed),
    }
    peer.endpoint = Some(from);
    peer.rx_bytes += len as u64;
    None
}

fn drop_for(e: WireGuardError) -> Drop {
    match e {
        WireGuardError::InvalidMac => Drop::BadMac,
        WireGuardError::WrongIndex | WireGuardError::NoCurrentSession => Drop::UnknownIndex,
        _ => Drop::Rejected,
    }
}
