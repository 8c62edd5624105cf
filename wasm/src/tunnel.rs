//! WireGuard on top of boringtun: many peers behind one static key, handshake routing, cookies
//! under load, timers, and the choice of peer for each outgoing packet.
//!
//! Invariants:
//! - a peer's boringtun index is its id, so data and response messages find their peer by
//!   `receiver_index >> 8` and handshake initiations by the initiator's static key (one DH);
//! - an inner address belongs to the first peer that sends from it, until that peer is removed,
//!   so one peer cannot take another's return traffic;
//! - every datagram that is not accepted is counted under one [`Drop`] reason.

use crate::out::{Out, PeerEvent};
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

/// Largest WireGuard datagram: MTU-sized inner packet plus 32 bytes of overhead, with room.
pub const MAX_DATAGRAM: usize = 65_535;

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
    /// The inner packet's source address belongs to another peer.
    AddressTaken,
    /// An outgoing packet for an address no peer owns, or for a peer with no endpoint yet.
    NoRoute,
    /// Under load and without a valid cookie: a cookie reply was sent instead.
    CookieSent,
}

impl Drop {
    /// All reasons, in the order of [`Drop::name`]'s use in the stats.
    pub const ALL: [Drop; 8] = [
        Drop::Malformed,
        Drop::BadMac,
        Drop::UnknownPeer,
        Drop::UnknownIndex,
        Drop::Rejected,
        Drop::AddressTaken,
        Drop::NoRoute,
        Drop::CookieSent,
    ];

    /// The name used in stats.
    pub fn name(self) -> &'static str {
        match self {
            Drop::Malformed => "malformed",
            Drop::BadMac => "badMac",
            Drop::UnknownPeer => "unknownPeer",
            Drop::UnknownIndex => "unknownIndex",
            Drop::Rejected => "rejected",
            Drop::AddressTaken => "addressTaken",
            Drop::NoRoute => "noRoute",
            Drop::CookieSent => "cookieSent",
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
    /// Inner addresses this peer has sent from.
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
    by_address: HashMap<IpAddr, u32>,
    next_id: u32,
    buf: Vec<u8>,
    /// Drop counters, indexed like [`Drop::ALL`].
    pub drops: [u64; 8],
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
            by_address: HashMap::new(),
            next_id: 1,
            buf: vec![0; MAX_DATAGRAM],
            drops: [0; 8],
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
        self.peers.insert(
            id,
            Peer {
                id,
                public: cfg.public,
                tunn,
                endpoint: cfg.endpoint,
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
        let Some(peer) = self.peers.remove(&id) else { return false };
        self.by_key.remove(&peer.public);
        for a in &peer.addresses {
            self.by_address.remove(a);
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
                let half = parse_handshake_anon(&self.private, &self.public, init)
                    .map_err(|_| Drop::UnknownPeer)?;
                self.by_key.get(&half.peer_static_public).copied().ok_or(Drop::UnknownPeer)
            }
            Packet::HandshakeResponse(r) => Ok(r.receiver_idx >> 8),
            Packet::PacketCookieReply(c) => Ok(c.receiver_idx >> 8),
            Packet::PacketData(d) => Ok(d.receiver_idx >> 8),
        }
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
        let Some(peer) = self.peers.get_mut(&id) else { return self.count(Drop::UnknownIndex) };
        let result = peer.tunn.decapsulate(Some(from.ip()), datagram, &mut self.buf);
        let mut why = None;
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
                why = accept_inner(&mut self.by_address, peer, from, IpAddr::V4(src), pkt.len());
                if why.is_none() {
                    deliver(id, pkt, out);
                }
            }
            TunnResult::WriteToTunnelV6(pkt, src) => {
                why = accept_inner(&mut self.by_address, peer, from, IpAddr::V6(src), pkt.len());
                if why.is_none() {
                    deliver(id, pkt, out);
                }
            }
        }
        self.note_session(id, out);
        if let Some(why) = why {
            self.count(why);
        }
    }

    /// Reports a handshake that completed, or a session that ended, since the last look.
    fn note_session(&mut self, id: u32, out: &mut Out) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
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

    /// The peer an outgoing inner packet goes to: the owner of its destination address, or in
    /// the client role (a single peer) that peer.
    pub fn peer_for(&self, dst: IpAddr) -> Option<u32> {
        match self.by_address.get(&dst) {
            Some(id) => Some(*id),
            None if self.peers.len() == 1 => self.peers.keys().next().copied(),
            None => None,
        }
    }

    /// Encrypts an inner packet to peer `id` and appends the datagram (or a handshake
    /// initiation, when there is no session yet) to `out`.
    pub fn send(&mut self, id: u32, pkt: &[u8], out: &mut Out) {
        let Some(peer) = self.peers.get_mut(&id) else { return self.count(Drop::NoRoute) };
        let Some(to) = peer.endpoint else { return self.count(Drop::NoRoute) };
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
        let ids: Vec<u32> = self.peers.keys().copied().collect();
        for id in ids {
            let Some(peer) = self.peers.get_mut(&id) else { continue };
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

/// Checks the inner source address of an accepted packet and updates the peer's bookkeeping.
fn accept_inner(
    by_address: &mut HashMap<IpAddr, u32>,
    peer: &mut Peer,
    from: SocketAddr,
    src: IpAddr,
    len: usize,
) -> Option<Drop> {
    match by_address.get(&src) {
        Some(owner) if *owner != peer.id => return Some(Drop::AddressTaken),
        Some(_) => {}
        None => {
            by_address.insert(src, peer.id);
            peer.addresses.push(src);
        }
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
