//! Cryptokey routing with several peers: each peer sends only from its allowed addresses, and
//! packets to an address go to the peer that owns it.

mod common;

use common::*;
use std::net::{IpAddr, SocketAddr};
use wirescope_core::core::Core;
use wirescope_core::tunnel::{AddPeerError, PeerConfig};

/// A server core and two client cores (keys 2 and 3) at their own outer endpoints.
struct Net {
    server: Core,
    clients: Vec<(Core, SocketAddr)>,
    now: f64,
    /// Inner packets each client received (client role: handed to the host).
    got: Vec<Vec<Vec<u8>>>,
    /// Destinations of the UDP datagrams each client received.
    udp: Vec<Vec<SocketAddr>>,
    /// The server's log lines.
    logs: Vec<String>,
}

fn net(allowed: [Option<Vec<(IpAddr, u8)>>; 2]) -> Net {
    let now = 1000.0;
    let mut server = Core::new([1; 32], cfg(true, "10.0.0.1"), now);
    let mut clients = Vec::new();
    for (i, allowed) in allowed.into_iter().enumerate() {
        let key = [2 + i as u8; 32];
        server
            .add_peer(now, PeerConfig { public: pub_of(key), psk: None, keepalive: None, endpoint: None, allowed })
            .unwrap();
        let mut c = Core::new(key, cfg(false, &format!("10.0.0.{}", 2 + i)), now);
        let server_ep = Some(SERVER_EP.parse().unwrap());
        c.add_peer(
            now,
            PeerConfig {
                public: pub_of([1; 32]),
                psk: None,
                keepalive: None,
                endpoint: server_ep,
                allowed: Some(any()),
            },
        )
        .unwrap();
        clients.push((c, format!("127.0.0.1:{}", 40_000 + i).parse().unwrap()));
    }
    Net { server, clients, now, got: vec![vec![], vec![]], udp: vec![vec![], vec![]], logs: vec![] }
}

impl Net {
    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for (i, (c, ep)) in self.clients.iter_mut().enumerate() {
                for rec in drain(c) {
                    match rec {
                        Rec::Datagram(_, d) => {
                            self.server.datagram(self.now, *ep, &d);
                            moved = true;
                        }
                        Rec::Ip(_, p) => self.got[i].push(p),
                        Rec::Udp(_, _, dst, _) => self.udp[i].push(dst),
                        _ => {}
                    }
                }
            }
            for rec in drain(&mut self.server) {
                match rec {
                    Rec::Datagram(to, d) => {
                        let i = self.clients.iter().position(|(_, ep)| *ep == to).unwrap();
                        self.clients[i].0.datagram(self.now, SERVER_EP.parse().unwrap(), &d);
                        moved = true;
                    }
                    Rec::Log(l) => self.logs.push(l),
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
        panic!("did not settle");
    }

    fn send(&mut self, from: usize, pkt: &[u8]) {
        self.clients[from].0.ip_send(self.now, pkt).unwrap();
        self.pump();
    }

    /// Echo replies client `i` received, by destination address.
    fn replies_to(&self, i: usize, dst: [u8; 4]) -> usize {
        self.got[i].iter().filter(|p| p[20] == 0 && p[16..20] == dst).count()
    }
}

fn host(a: &str) -> (IpAddr, u8) {
    let ip: IpAddr = a.parse().unwrap();
    (ip, if ip.is_ipv4() { 32 } else { 128 })
}

#[test]
fn a_peer_sending_from_another_peers_address_is_dropped_and_counted() {
    let mut n = net([Some(vec![host("10.0.0.2"), host("fd77::2")]), Some(vec![host("10.0.0.3")])]);
    n.send(0, &ping([10, 0, 0, 2], [1, 2, 3, 4], 1));
    assert_eq!(n.replies_to(0, [10, 0, 0, 2]), 1, "A's own address works");
    // B spoofs A's address: dropped, counted, and nobody gets a reply.
    n.send(1, &ping([10, 0, 0, 2], [1, 2, 3, 4], 2));
    assert_eq!(stat(&n.server, "sourceNotAllowed"), 1);
    assert_eq!(n.replies_to(0, [10, 0, 0, 2]) + n.replies_to(1, [10, 0, 0, 2]), 1);
    assert_eq!(n.logs, ["peer 2: inner source 10.0.0.2 is not among its allowed addresses: dropped (1 so far)"]);
    // And an address nobody was given.
    n.send(1, &ping([10, 0, 0, 9], [1, 2, 3, 4], 3));
    assert_eq!(stat(&n.server, "sourceNotAllowed"), 2);
    n.send(1, &ping([10, 0, 0, 3], [1, 2, 3, 4], 4));
    assert_eq!(n.replies_to(1, [10, 0, 0, 3]), 1, "B's own address works");
    // Replies from the host go to the owner of the destination.
    n.server.udp_send(n.now, "1.1.1.1:53".parse().unwrap(), "10.0.0.2:5000".parse().unwrap(), b"x").unwrap();
    n.server.udp_send(n.now, "1.1.1.1:53".parse().unwrap(), "10.0.0.3:5000".parse().unwrap(), b"y").unwrap();
    assert!(n.server.udp_send(n.now, "1.1.1.1:53".parse().unwrap(), "10.0.0.9:5000".parse().unwrap(), b"z").is_err());
    n.pump();
    assert_eq!(n.udp[0], vec!["10.0.0.2:5000".parse().unwrap()]);
    assert_eq!(n.udp[1], vec!["10.0.0.3:5000".parse().unwrap()]);
}

#[test]
fn a_peer_without_allowed_addresses_learns_one_per_family_and_no_more() {
    let mut n = net([None, Some(vec![host("10.0.0.3")])]);
    // It cannot take an address that another peer was given.
    n.send(0, &ping([10, 0, 0, 3], [1, 2, 3, 4], 1));
    assert_eq!(stat(&n.server, "sourceNotAllowed"), 1);
    n.send(0, &ping([10, 0, 0, 2], [1, 2, 3, 4], 2));
    assert_eq!(n.replies_to(0, [10, 0, 0, 2]), 1, "the first free address is its own");
    // Spraying sources: all dropped, nothing more learned.
    for i in 0..10_000u32 {
        let b = (i + 1000).to_be_bytes();
        n.clients[0].0.ip_send(n.now, &ping([10, b[1], b[2], b[3]], [1, 2, 3, 4], 3)).unwrap();
    }
    n.pump();
    assert_eq!(stat(&n.server, "sourceNotAllowed"), 10_001);
    assert!(n.server.stats_json().contains("\"addresses\":[\"10.0.0.2\"]"), "{}", n.server.stats_json());
}

#[test]
fn an_allowed_prefix_belongs_to_one_peer() {
    let mut server = Core::new([1; 32], cfg(true, "10.0.0.1"), 0.0);
    let peer = |k: u8, allowed: Vec<(IpAddr, u8)>| PeerConfig {
        public: pub_of([k; 32]),
        psk: None,
        keepalive: None,
        endpoint: None,
        allowed: Some(allowed),
    };
    server.add_peer(0.0, peer(2, vec![("10.0.0.0".parse().unwrap(), 24)])).unwrap();
    assert_eq!(server.add_peer(0.0, peer(3, vec![("10.0.0.7".parse().unwrap(), 24)])), Err(AddPeerError::PrefixTaken));
    assert_eq!(server.add_peer(0.0, peer(4, vec![("10.0.0.0".parse().unwrap(), 33)])), Err(AddPeerError::BadPrefix));
    // A narrower prefix inside it is another route (the longest match wins), as in WireGuard.
    server.add_peer(0.0, peer(5, vec![host("10.0.0.5")])).unwrap();
}
