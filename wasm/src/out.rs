//! The output batch: every datagram to send and every event for the host, appended as records
//! into one growable byte buffer that the host drains after each call.
//!
//! All integers are little-endian. An endpoint is 18 bytes: the address as 16 bytes (IPv4 as
//! `::ffff:a.b.c.d`) and the port. Record layouts (first byte is the kind):
//!
//! | kind | fields after the kind byte |
//! | --- | --- |
//! | `DATAGRAM` | endpoint, u16 length, bytes |
//! | `TCP_OPEN` | u32 conn, u32 peer, remote endpoint, local endpoint |
//! | `TCP_READABLE`, `TCP_WRITABLE`, `TCP_FIN` | u32 conn |
//! | `TCP_CLOSED` | u32 conn, u8 reason (see [`CloseReason`]) |
//! | `UDP` | u32 peer, source endpoint, destination endpoint, u16 length, bytes |
//! | `IP_PACKET` | u32 peer, u16 length, bytes (client role: packets no socket took; TUN role: every packet to write to the device) |
//! | `PEER` | u32 peer, u8 what (see [`PeerEvent`]) |
//! | `LOG` | u8 level, u16 length, UTF-8 text |

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Record kinds, as the first byte of each record.
pub mod kind {
    pub const DATAGRAM: u8 = 1;
    pub const TCP_OPEN: u8 = 2;
    pub const TCP_READABLE: u8 = 3;
    pub const TCP_WRITABLE: u8 = 4;
    pub const TCP_FIN: u8 = 5;
    pub const TCP_CLOSED: u8 = 6;
    pub const UDP: u8 = 7;
    pub const IP_PACKET: u8 = 8;
    pub const PEER: u8 = 9;
    pub const LOG: u8 = 10;
}

/// Why a TCP connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// Both sides sent FIN.
    Graceful = 0,
    /// A reset was received or sent, or the connection timed out.
    Reset = 1,
    /// The peer that owned it was removed, or the core is shutting down.
    PeerRemoved = 2,
}

/// Peer-level happenings reported to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PeerEvent {
    /// A handshake completed and a new session is in use.
    HandshakeComplete = 1,
    /// The session expired without a new handshake.
    Expired = 2,
}

/// Log levels for `LOG` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
}

/// The buffer of output records.
#[derive(Default)]
pub struct Out {
    /// The encoded records; the host reads `buf[..]` and then calls `clear`.
    pub buf: Vec<u8>,
}

impl Out {
    /// Drops all records (after the host has read them).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn endpoint(&mut self, ep: SocketAddr) {
        let octets = match ep.ip() {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        self.buf.extend_from_slice(&octets);
        self.u16(ep.port());
    }

    /// A datagram to send to `to` from the host's UDP socket.
    pub fn datagram(&mut self, to: SocketAddr, data: &[u8]) {
        self.buf.push(kind::DATAGRAM);
        self.endpoint(to);
        self.u16(data.len() as u16);
        self.buf.extend_from_slice(data);
    }

    /// A new TCP connection from `remote` (inside the tunnel) to `local` (what it dialed).
    pub fn tcp_open(&mut self, conn: u32, peer: u32, remote: SocketAddr, local: SocketAddr) {
        self.buf.push(kind::TCP_OPEN);
        self.u32(conn);
        self.u32(peer);
        self.endpoint(remote);
        self.endpoint(local);
    }

    /// A one-field connection event (`TCP_READABLE`, `TCP_WRITABLE`, `TCP_FIN`).
    pub fn tcp(&mut self, kind: u8, conn: u32) {
        self.buf.push(kind);
        self.u32(conn);
    }

    /// The connection is over; the host should release it.
    pub fn tcp_closed(&mut self, conn: u32, reason: CloseReason) {
        self.buf.push(kind::TCP_CLOSED);
        self.u32(conn);
        self.buf.push(reason as u8);
    }

    /// A UDP datagram that a peer sent inside the tunnel.
    pub fn udp(&mut self, peer: u32, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        self.buf.push(kind::UDP);
        self.u32(peer);
        self.endpoint(src);
        self.endpoint(dst);
        self.u16(data.len() as u16);
        self.buf.extend_from_slice(data);
    }

    /// A whole IP packet handed to the host as it is.
    pub fn ip_packet(&mut self, peer: u32, data: &[u8]) {
        self.buf.push(kind::IP_PACKET);
        self.u32(peer);
        self.u16(data.len() as u16);
        self.buf.extend_from_slice(data);
    }

    /// A peer-level event.
    pub fn peer(&mut self, peer: u32, what: PeerEvent) {
        self.buf.push(kind::PEER);
        self.u32(peer);
        self.buf.push(what as u8);
    }

    /// A log line for the host's logger.
    pub fn log(&mut self, level: Level, text: &str) {
        let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
        self.buf.push(kind::LOG);
        self.buf.push(level as u8);
        self.u16(bytes.len() as u16);
        self.buf.extend_from_slice(bytes);
    }
}

/// Reads an 18-byte endpoint as written by [`Out`] (and by the host into the io buffer).
pub fn read_endpoint(b: &[u8]) -> Option<SocketAddr> {
    let octets: [u8; 16] = b.get(..16)?.try_into().ok()?;
    let port = u16::from_le_bytes(b.get(16..18)?.try_into().ok()?);
    let v6 = Ipv6Addr::from(octets);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_round_trips_for_both_families() {
        for ep in ["10.0.0.2:51820", "[fd12::2]:443"] {
            let ep: SocketAddr = ep.parse().unwrap();
            let mut out = Out::default();
            out.datagram(ep, b"x");
            assert_eq!(read_endpoint(&out.buf[1..19]), Some(ep));
        }
    }

    #[test]
    fn datagram_record_layout_is_exact() {
        let mut out = Out::default();
        out.datagram("1.2.3.4:258".parse().unwrap(), b"hi");
        let mut want = vec![kind::DATAGRAM];
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4]);
        want.extend_from_slice(&[2, 1, 2, 0, b'h', b'i']);
        assert_eq!(out.buf, want);
    }
}
