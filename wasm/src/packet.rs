//! Looks inside the IP packets that peers send, before the TCP/IP stack does, and builds the few
//! packets the core answers itself (UDP from the host, ICMP echo replies).
//!
//! Only fixed headers are read: IPv6 extension headers are left to smoltcp, which drops what it
//! does not understand.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet,
    Ipv6Repr, TcpPacket, UdpPacket, UdpRepr,
};
use std::net::{IpAddr, SocketAddr};

/// The hop limit of packets the core builds.
const HOP_LIMIT: u8 = 64;

/// What an inner packet is, as far as the core needs to know before the stack sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Inner<'a> {
    /// A TCP segment that opens a connection (SYN without ACK).
    TcpSyn { src: SocketAddr, dst: SocketAddr },
    /// Any other TCP segment.
    Tcp,
    /// A UDP datagram with a valid checksum.
    Udp { src: SocketAddr, dst: SocketAddr, payload: &'a [u8] },
    /// An ICMP or ICMPv6 echo request.
    EchoRequest,
    /// Anything else (left to the stack).
    Other,
}

/// Why an inner packet was refused.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Malformed {
    /// Not a well-formed IPv4 or IPv6 packet.
    Ip,
    /// A UDP header or checksum that does not check out.
    Udp,
    /// A TCP header too short to read.
    Tcp,
}

/// The source and destination of an IP packet, and the transport payload.
fn split(pkt: &[u8]) -> Result<(IpAddr, IpAddr, IpProtocol, &[u8]), Malformed> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => {
            let p = Ipv4Packet::new_checked(pkt).map_err(|_| Malformed::Ip)?;
            if !p.verify_checksum() || p.more_frags() || p.frag_offset() != 0 {
                return Err(Malformed::Ip);
            }
            let payload = &pkt[p.header_len() as usize..p.total_len() as usize];
            Ok((p.src_addr().into(), p.dst_addr().into(), p.next_header(), payload))
        }
        Some(6) => {
            let p = Ipv6Packet::new_checked(pkt).map_err(|_| Malformed::Ip)?;
            let start = p.header_len();
            let payload = &pkt[start..start + p.payload_len() as usize];
            Ok((p.src_addr().into(), p.dst_addr().into(), p.next_header(), payload))
        }
        _ => Err(Malformed::Ip),
    }
}

/// Classifies an inner packet.
pub fn classify(pkt: &[u8]) -> Result<Inner<'_>, Malformed> {
    let (src, dst, proto, payload) = split(pkt)?;
    match proto {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(payload).map_err(|_| Malformed::Tcp)?;
            if tcp.syn() && !tcp.ack() && !tcp.rst() {
                Ok(Inner::TcpSyn {
                    src: SocketAddr::new(src, tcp.src_port()),
                    dst: SocketAddr::new(dst, tcp.dst_port()),
                })
            } else {
                Ok(Inner::Tcp)
            }
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(payload).map_err(|_| Malformed::Udp)?;
            let (s, d) = (IpAddress::from(src), IpAddress::from(dst));
            let repr = UdpRepr::parse(&udp, &s, &d, &ChecksumCapabilities::default()).map_err(|_| Malformed::Udp)?;
            Ok(Inner::Udp {
                src: SocketAddr::new(src, repr.src_port),
                dst: SocketAddr::new(dst, repr.dst_port),
                payload: &payload[8..udp.len() as usize],
            })
        }
        IpProtocol::Icmp if payload.first() == Some(&8) => Ok(Inner::EchoRequest),
        IpProtocol::Icmpv6 if payload.first() == Some(&128) => Ok(Inner::EchoRequest),
        _ => Ok(Inner::Other),
    }
}

/// The source address of an IP packet, if it is one.
pub fn source(pkt: &[u8]) -> Option<IpAddr> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => Ipv4Packet::new_checked(pkt).ok().map(|p| p.src_addr().into()),
        Some(6) => Ipv6Packet::new_checked(pkt).ok().map(|p| p.src_addr().into()),
        _ => None,
    }
}

/// The destination address of an IP packet, if it is one.
pub fn destination(pkt: &[u8]) -> Option<IpAddr> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => Ipv4Packet::new_checked(pkt).ok().map(|p| p.dst_addr().into()),
        Some(6) => Ipv6Packet::new_checked(pkt).ok().map(|p| p.dst_addr().into()),
        _ => None,
    }
}

/// Writes the IP header for a packet from `src` to `dst` carrying `payload_len` bytes of
/// `proto`, and returns the offset where the payload starts.
fn emit_ip(src: IpAddr, dst: IpAddr, proto: IpProtocol, payload_len: usize, out: &mut Vec<u8>) -> usize {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let repr = Ipv4Repr { src_addr: s, dst_addr: d, next_header: proto, payload_len, hop_limit: HOP_LIMIT };
            out.resize(repr.buffer_len() + payload_len, 0);
            repr.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]), &ChecksumCapabilities::default());
            repr.buffer_len()
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let repr = Ipv6Repr { src_addr: s, dst_addr: d, next_header: proto, payload_len, hop_limit: HOP_LIMIT };
            out.resize(repr.buffer_len() + payload_len, 0);
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut out[..]));
            repr.buffer_len()
        }
        _ => unreachable!("callers check that both addresses are of one family"),
    }
}

/// Builds a UDP datagram from `src` to `dst` into `out` (replacing its contents).
pub fn build_udp(
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    mtu: usize,
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    if src.is_ipv4() != dst.is_ipv4() {
        return Err("source and destination are of different address families");
    }
    let header = if src.is_ipv4() { 20 } else { 40 } + 8;
    if header + payload.len() > mtu {
        return Err("datagram larger than the tunnel MTU");
    }
    let at = emit_ip(src.ip(), dst.ip(), IpProtocol::Udp, 8 + payload.len(), out);
    let repr = UdpRepr { src_port: src.port(), dst_port: dst.port() };
    repr.emit(
        &mut UdpPacket::new_unchecked(&mut out[at..]),
        &src.ip().into(),
        &dst.ip().into(),
        payload.len(),
        |buf| buf.copy_from_slice(payload),
        &ChecksumCapabilities::default(),
    );
    Ok(())
}

/// Builds the echo reply to an ICMP or ICMPv6 echo request into `out`; false if `pkt` is not a
/// valid echo request.
pub fn echo_reply(pkt: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok((src, dst, proto, payload)) = split(pkt) else {
        return false;
    };
    let caps = ChecksumCapabilities::default();
    match (src, dst, proto) {
        (IpAddr::V4(_), IpAddr::V4(_), IpProtocol::Icmp) => {
            let Ok(icmp) = Icmpv4Packet::new_checked(payload) else {
                return false;
            };
            let Ok(Icmpv4Repr::EchoRequest { ident, seq_no, data }) = Icmpv4Repr::parse(&icmp, &caps) else {
                return false;
            };
            let reply = Icmpv4Repr::EchoReply { ident, seq_no, data };
            let at = emit_ip(dst, src, IpProtocol::Icmp, reply.buffer_len(), out);
            reply.emit(&mut Icmpv4Packet::new_unchecked(&mut out[at..]), &caps);
            true
        }
        (IpAddr::V6(s), IpAddr::V6(d), IpProtocol::Icmpv6) => {
            let Ok(icmp) = Icmpv6Packet::new_checked(payload) else {
                return false;
            };
            let Ok(Icmpv6Repr::EchoRequest { ident, seq_no, data }) = Icmpv6Repr::parse(&s, &d, &icmp, &caps) else {
                return false;
            };
            let reply = Icmpv6Repr::EchoReply { ident, seq_no, data };
            let at = emit_ip(dst, src, IpProtocol::Icmpv6, reply.buffer_len(), out);
            reply.emit(&d, &s, &mut Icmpv6Packet::new_unchecked(&mut out[at..]), &caps);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn udp_round_trips_through_build_and_classify() {
        for (s, d) in [("10.0.0.2:5000", "10.9.8.7:53"), ("[fd00:1::2]:5000", "[fd00:2::1]:53")] {
            let mut buf = Vec::new();
            build_udp(ep(s), ep(d), b"query", 1420, &mut buf).unwrap();
            assert_eq!(classify(&buf), Ok(Inner::Udp { src: ep(s), dst: ep(d), payload: b"query" }));
        }
    }

    #[test]
    fn udp_with_a_broken_checksum_is_malformed() {
        let mut buf = Vec::new();
        build_udp(ep("10.0.0.2:5000"), ep("10.9.8.7:53"), b"query", 1420, &mut buf).unwrap();
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        assert_eq!(classify(&buf), Err(Malformed::Udp));
    }

    #[test]
    fn udp_larger_than_the_mtu_is_refused() {
        let mut buf = Vec::new();
        assert!(build_udp(ep("10.0.0.2:1"), ep("10.0.0.3:2"), &[0; 1400], 1420, &mut buf).is_err());
        assert!(build_udp(ep("10.0.0.2:1"), ep("[::1]:2"), b"x", 1420, &mut buf).is_err());
    }

    #[test]
    fn echo_request_gets_a_reply_with_swapped_addresses_and_same_data() {
        let caps = ChecksumCapabilities::default();
        let req = Icmpv4Repr::EchoRequest { ident: 7, seq_no: 9, data: b"ping!" };
        let mut pkt = Vec::new();
        let at = emit_ip(
            "10.0.0.2".parse().unwrap(),
            "1.1.1.1".parse().unwrap(),
            IpProtocol::Icmp,
            req.buffer_len(),
            &mut pkt,
        );
        req.emit(&mut Icmpv4Packet::new_unchecked(&mut pkt[at..]), &caps);
        assert_eq!(classify(&pkt), Ok(Inner::EchoRequest));

        let mut reply = Vec::new();
        assert!(echo_reply(&pkt, &mut reply));
        assert_eq!(source(&reply), Some("1.1.1.1".parse().unwrap()));
        assert_eq!(destination(&reply), Some("10.0.0.2".parse().unwrap()));
        let icmp = Icmpv4Packet::new_checked(&reply[20..]).unwrap();
        assert_eq!(
            Icmpv4Repr::parse(&icmp, &caps).unwrap(),
            Icmpv4Repr::EchoReply { ident: 7, seq_no: 9, data: b"ping!" }
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for junk in [&[][..], &[0x45], &[0x60, 0, 0], &[0x45; 60], &[0xff; 20]] {
            assert!(classify(junk).is_err());
        }
    }
}
