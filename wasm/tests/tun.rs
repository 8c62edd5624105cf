//! The TUN role: raw IP packets in (`ip_input`), the stack's packets out as `IP_PACKET`
//! records, no WireGuard. The other end is a bare client-role stack, as the kernel behind a TUN
//! device would be.

mod common;

use common::{cfg, checksum_from, drain, Rec};
use std::net::SocketAddr;
use wirescope_core::core::{Core, TUN_PEER};
use wirescope_core::out::Out;
use wirescope_core::packet;
use wirescope_core::stack::Stack;

const ORIGIN: &str = "198.51.100.7:443";

/// A TUN-role core and a client stack (the "kernel") wired by raw IP packets.
struct Wire {
    tun: Core,
    kernel: Stack,
    kernel_out: Out,
    now: f64,
    /// Records of the TUN core other than packets.
    events: Vec<Rec>,
}

impl Wire {
    fn new() -> Wire {
        let now = 1000.0;
        let kernel = Stack::new(cfg(false, "10.77.0.2"), instant(now));
        Wire {
            tun: Core::new_tun(cfg(true, "10.77.0.1"), now),
            kernel,
            kernel_out: Out::default(),
            now,
            events: vec![],
        }
    }

    /// Moves packets both ways until both sides are quiet (bounded).
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            self.kernel.poll(instant(self.now));
            let mut up = Vec::new();
            self.kernel.take_tx(|p| up.push(p.to_vec()));
            for p in up {
                self.tun.ip_input(self.now, &p).unwrap();
                moved = true;
            }
            for rec in drain(&mut self.tun) {
                match rec {
                    Rec::Ip(peer, p) => {
                        assert_eq!(peer, TUN_PEER);
                        self.kernel.input(0, &p, instant(self.now), &mut self.kernel_out);
                        moved = true;
                    }
                    other => self.events.push(other),
                }
            }
            self.tun.flush(self.now);
            if !moved && self.tun.out.buf.is_empty() {
                return;
            }
        }
        panic!("pump did not settle");
    }
}

fn instant(ms: f64) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros((ms * 1000.0) as i64)
}

fn ep(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn a_tcp_connection_through_raw_packets_opens_and_carries_bytes_both_ways() {
    let mut w = Wire::new();
    let client_conn = w.kernel.connect(0, ep(ORIGIN)).unwrap();
    w.pump();
    let (conn, remote, local) = w
        .events
        .iter()
        .find_map(|r| match r {
            Rec::Open(c, peer, remote, local) if *peer == TUN_PEER => Some((*c, *remote, *local)),
            _ => None,
        })
        .expect("the TUN core announced the connection");
    assert_eq!(local, ep(ORIGIN), "the connection is to the address the client dialed");
    assert_eq!(remote.ip().to_string(), "10.77.0.2");

    // Client to TUN core: 200 kB, in whatever windows open.
    let up: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (mut sent, mut got) = (0, Vec::new());
    for _ in 0..10_000 {
        if sent < up.len() {
            let win = w.kernel.write_window(client_conn);
            let n = win.len().min(up.len() - sent);
            win[..n].copy_from_slice(&up[sent..sent + n]);
            sent += w.kernel.commit(client_conn, n);
        }
        w.pump();
        let stack = w.tun.stack();
        let chunk = stack.peek(conn).to_vec();
        stack.consume(conn, chunk.len());
        got.extend_from_slice(&chunk);
        if got.len() == up.len() {
            break;
        }
        w.now += 1.0;
    }
    assert_eq!(got, up);

    // TUN core to client: a reply.
    let stack = w.tun.stack();
    let win = stack.write_window(conn);
    win[..5].copy_from_slice(b"hello");
    assert_eq!(stack.commit(conn, 5), 5);
    w.tun.flush(w.now);
    w.pump();
    assert_eq!(w.kernel.peek(client_conn), b"hello");

    let stats = w.tun.stats_json();
    assert!(stats.contains("\"connectionsOpened\":1"), "{stats}");
    assert!(!stats.contains("\"datagramsIn\":0,"), "packets in are counted: {stats}");
}

#[test]
fn udp_comes_out_as_a_record_and_replies_go_back_as_packets() {
    let mut w = Wire::new();
    let (src, dst) = (ep("10.77.0.2:5353"), ep("198.51.100.7:53"));
    let mut pkt = Vec::new();
    packet::build_udp(src, dst, b"query", 1500, &mut pkt).unwrap();
    w.tun.ip_input(w.now, &pkt).unwrap();
    let recs = drain(&mut w.tun);
    assert_eq!(recs, vec![Rec::Udp(TUN_PEER, src, dst, b"query".to_vec())]);

    // The reply needs no peer owning the destination: everything goes to the device.
    w.tun.udp_send(w.now, dst, src, b"answer").unwrap();
    let recs = drain(&mut w.tun);
    let [Rec::Ip(TUN_PEER, reply)] = &recs[..] else { panic!("one packet: {recs:?}") };
    assert_eq!(packet::classify(reply), Ok(packet::Inner::Udp { src: dst, dst: src, payload: b"answer" }));

    // A packet the host built (an ICMP error, say) goes out as it is.
    w.tun.ip_send(w.now, &pkt).unwrap();
    w.tun.flush(w.now);
    assert_eq!(drain(&mut w.tun), vec![Rec::Ip(TUN_PEER, pkt.clone())]);
}

#[test]
fn garbage_is_counted_not_a_panic_and_raw_input_needs_the_tun_role() {
    let mut w = Wire::new();
    for junk in [&[][..], &[0x45], &[0x60, 0, 0], &[0x45; 60], &[0xff; 20]] {
        w.tun.ip_input(w.now, junk).unwrap();
    }
    assert!(w.tun.ip_input(w.now, &vec![0x45; 70_000]).is_err());
    assert!(w.tun.stats_json().contains("\"malformedInner\":6"), "{}", w.tun.stats_json());
    assert!(drain(&mut w.tun).iter().all(|r| !matches!(r, Rec::Ip(..))));

    let mut server = Core::new([1; 32], cfg(true, "10.0.0.1"), 1000.0);
    let mut pkt = Vec::new();
    packet::build_udp(ep("10.77.0.2:1"), ep("10.77.0.1:2"), b"x", 1500, &mut pkt).unwrap();
    assert!(server.ip_input(1000.0, &pkt).is_err());
    assert!(server.out.buf.is_empty(), "nothing reached the stack");
}

#[test]
fn echo_requests_are_answered_through_the_device() {
    // A ping to any address behind the TUN gets a reply (the server role's behaviour).
    let mut w = Wire::new();
    let mut req = vec![0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 10, 77, 0, 2, 198, 51, 100, 7, 8, 0, 0, 0, 0, 7, 0, 1];
    let ip_sum = checksum_from(&req[..20], 0);
    req[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let icmp_sum = checksum_from(&req[20..], 0);
    req[22..24].copy_from_slice(&icmp_sum.to_be_bytes());
    w.tun.ip_input(w.now, &req).unwrap();
    let recs = drain(&mut w.tun);
    let [Rec::Ip(_, reply)] = &recs[..] else { panic!("one reply: {recs:?}") };
    assert_eq!(packet::destination(reply), Some("10.77.0.2".parse().unwrap()));
    assert_eq!(reply[20], 0, "an echo reply");
}
