//! Inner IP packets through an established tunnel: the peer encrypts whatever the input makes
//! (raw bytes, or IPv4/IPv6 packets with TCP, UDP, ICMP or other payloads whose headers and
//! checksums are mostly right), the core decrypts them and hands them to packet.rs and the
//! TCP/IP stack. The core runs in the server role (accepting connections to any address) or in
//! the client role; time passes and the host reads, writes, closes and releases connections (and
//! removes and re-adds the peer) in between. The core must never panic.
use crate::{address, ip_packet, tcp_segment, transport, Input, Rig, ICMP, ICMPV6, TCP, UDP};
use std::net::{IpAddr, SocketAddr};

/// A packet from the peer's address (usually) to anywhere, with a payload of the chosen kind.
fn structured(r: &Rig, inp: &mut Input) -> Vec<u8> {
    let v6 = inp.bool();
    let (core_addr, peer_addr) = r.addresses(v6);
    let src = address(inp, peer_addr);
    let dst = address(inp, if r.server { IpAddr::from([93, 184, 216, 34]) } else { core_addr });
    let dst = match (src, dst) {
        (IpAddr::V6(_), IpAddr::V4(_)) => IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1u16]),
        (_, d) => d,
    };
    let corrupt = inp.u8() == 0xff;
    let (proto, seg) = match inp.u8() % 5 {
        0 | 1 => {
            let (sport, dport, seq, ack) = (inp.u16(), inp.u16(), inp.u32(), inp.u32());
            (TCP, tcp_segment(inp, sport, dport, seq, ack))
        }
        2 => {
            let (sport, dport) = (inp.u16(), inp.u16());
            let payload = inp.slice(1400);
            let len = if inp.u8() == 0xff { inp.u16() } else { 8 + payload.len() as u16 };
            let mut s = Vec::new();
            s.extend_from_slice(&sport.to_be_bytes());
            s.extend_from_slice(&dport.to_be_bytes());
            s.extend_from_slice(&len.to_be_bytes());
            s.extend_from_slice(&[0, 0]);
            s.extend_from_slice(payload);
            (UDP, s)
        }
        3 => {
            let mut s = vec![inp.u8(), inp.u8(), 0, 0];
            s.extend_from_slice(inp.slice(1400));
            (if v6 { ICMPV6 } else { ICMP }, s)
        }
        _ => (inp.u8(), inp.slice(1400).to_vec()),
    };
    let seg = transport(src, dst, proto, seg, corrupt);
    ip_packet(inp, src, dst, proto, &seg)
}

/// A TCP segment answering one the core sent: addresses and ports swapped, sequence and
/// acknowledgment numbers taken from it (and nudged by the input).
fn answer(r: &Rig, inp: &mut Input) -> Option<Vec<u8>> {
    let tcp: Vec<&Vec<u8>> = r.received.iter().filter(|p| proto_of(p) == Some(TCP)).collect();
    if tcp.is_empty() {
        return None;
    }
    // 0 answers the newest.
    let p = tcp[tcp.len() - 1 - inp.u8() as usize % tcp.len()];
    let (src, dst, hlen) = match p[0] >> 4 {
        4 => {
            let s: [u8; 4] = p[12..16].try_into().ok()?;
            let d: [u8; 4] = p[16..20].try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), (p[0] & 0x0f) as usize * 4)
        }
        _ => {
            let s: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), 40)
        }
    };
    let seg = p.get(hlen..)?;
    if seg.len() < 20 {
        return None;
    }
    let sport = u16::from_be_bytes([seg[0], seg[1]]);
    let dport = u16::from_be_bytes([seg[2], seg[3]]);
    let seq = u32::from_be_bytes(seg[4..8].try_into().ok()?);
    let ack = u32::from_be_bytes(seg[8..12].try_into().ok()?);
    let flags = seg[13];
    let data = seg.len().saturating_sub((seg[12] >> 4) as usize * 4) as u32;
    let len = data + (flags & 0x02 != 0) as u32 + (flags & 0x01 != 0) as u32;
    let nudge = (inp.u8() as i8) as i32;
    let our_seq = ack.wrapping_add_signed(if inp.bool() { nudge } else { 0 });
    let our_ack = seq.wrapping_add(len).wrapping_add_signed(if inp.bool() { nudge } else { 0 });
    let s = tcp_segment(inp, dport, sport, our_seq, our_ack);
    let s = transport(dst, src, TCP, s, false);
    Some(ip_packet(inp, dst, src, TCP, &s))
}

fn proto_of(p: &[u8]) -> Option<u8> {
    match p.first()? >> 4 {
        4 => p.get(9).copied(),
        6 => p.get(6).copied(),
        _ => None,
    }
}

/// Runs one input; returns what it reached.
pub fn run_inner_packet(data: &[u8]) -> crate::Reached {
    let mut inp = Input::new(data);
    let server = inp.u8() % 4 != 0;
    let mut r = Rig::established(server);
    for _ in 0..64 {
        if inp.is_empty() {
            break;
        }
        match inp.u8() % 9 {
            0 => {
                let p = inp.slice(1500).to_vec();
                r.send_inner(&p);
            }
            1 | 2 => {
                let p = structured(&r, &mut inp);
                r.send_inner(&p);
            }
            3 => {
                if let Some(p) = answer(&r, &mut inp) {
                    r.send_inner(&p);
                }
            }
            4 => {
                let ms = match inp.u8() % 4 {
                    0 => inp.u8() as f64,
                    1 => inp.u16() as f64,
                    2 => inp.u32() as f64,
                    _ => 250.0,
                };
                r.advance(ms);
            }
            5 => r.host_op(&mut inp),
            6 => {
                // What the host sends: a UDP reply into the tunnel, or (client role) a new
                // connection through it.
                let v6 = inp.bool();
                let (_, peer_addr) = r.addresses(v6);
                let other = address(
                    &mut inp,
                    if v6 { IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 9u16]) } else { IpAddr::from([1, 1, 1, 1]) },
                );
                let port = inp.u16();
                let now = r.now;
                if r.server {
                    let data = inp.slice(1500).to_vec();
                    let _ = r.core.udp_send(
                        now,
                        SocketAddr::new(other, port),
                        SocketAddr::new(peer_addr, inp.u16()),
                        &data,
                    );
                } else {
                    let peer = r.peer_id;
                    let _ = r.core.stack().connect(peer, SocketAddr::new(other, port));
                    r.core.flush(now);
                }
                r.pump();
            }
            8 => r.readd_peer(),
            _ => {
                // The host sends a whole IP packet (client role: a packet no socket took goes
                // back this way).
                let mut p = inp.slice(1500).to_vec();
                // The host hands over up to 70,000 bytes (IO_SIZE in src/core/wasm_core.ts).
                if inp.u8() == 0xff {
                    p.resize((p.len() + 4_000 + inp.u16() as usize).min(70_000), 0);
                }
                let now = r.now;
                let _ = r.core.ip_send(now, &p);
                r.pump();
            }
        }
    }
    let _ = r.core.stats_json();
    r.reached()
}
