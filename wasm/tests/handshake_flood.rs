//! A handshake flood against the server core while a valid peer connects: 10,000 initiations
//! per (driven) second, from unknown keys and replayed from the valid peer, for 6 seconds.
//! WireGuard's answer under load is a cookie reply: the valid peer proves its address with the
//! cookie on its next attempt and gets through; the flood gets cookies, not key exchanges.

mod common;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use common::*;
use std::net::SocketAddr;

/// 10,000 initiations per second for the first two seconds, then 1,000 per second (still
/// far past the limit) until the valid peer's retry, which WireGuard sends after 5 s.
fn flood_this_ms(ms: usize) -> usize {
    if ms < 2_000 {
        10
    } else {
        1
    }
}
const FLOOD_MS: usize = 6_000;
/// When the valid peer starts connecting (the flood is under way).
const CONNECT_AT_MS: usize = 100;

/// Distinct initiations from `keys` unknown keys (each attempt of a key is a new message).
fn unknown_initiations(keys: u8) -> Vec<Vec<u8>> {
    let server = PublicKey::from(&StaticSecret::from([1u8; 32]));
    let mut buf = vec![0u8; 256];
    let mut v = Vec::new();
    for k in 0..keys {
        let mut t = Tunn::new(StaticSecret::from([100 + k; 32]), server, None, None, k as u32, None);
        for _ in 0..4 {
            if let TunnResult::WriteToNetwork(d) = t.format_handshake_initiation(&mut buf, true) {
                v.push(d.to_vec());
            }
        }
    }
    v
}

#[test]
fn a_valid_peer_connects_through_a_handshake_flood_with_a_cookie() {
    let mut p = Pair::new();
    let unknown = unknown_initiations(25);
    // An initiation of the valid peer's key, captured earlier by the attacker and replayed.
    let replayed = {
        let server = PublicKey::from(&StaticSecret::from([1u8; 32]));
        let mut t = Tunn::new(StaticSecret::from([2u8; 32]), server, None, None, 7, None);
        let mut buf = vec![0u8; 256];
        match t.format_handshake_initiation(&mut buf, true) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            _ => unreachable!(),
        }
    };
    let start = p.now;
    let (mut cid, mut opened_at, mut cookies_to_client, mut flood) = (None, None, 0, 0u64);
    for ms in 0..FLOOD_MS {
        for _ in 0..flood_this_ms(ms) {
            let n = flood as usize;
            flood += 1;
            // Every third one replays the valid peer's initiation, from one address; the rest
            // come from unknown keys at ever new addresses.
            let (d, from): (&[u8], SocketAddr) = if n % 3 == 0 {
                (&replayed, "198.18.0.1:5000".parse().unwrap())
            } else {
                let b = (n as u32).to_be_bytes();
                (&unknown[n % unknown.len()], SocketAddr::new([100, 64 + (b[1] & 63), b[2], b[3]].into(), 6000))
            };
            p.server.datagram(p.now, from, d);
        }
        if ms == CONNECT_AT_MS {
            cid = p.client.stack().connect(1, "203.0.113.5:443".parse().unwrap());
            p.client.flush(p.now);
        }
        // The flood's answers go to the flooders; the valid peer talks to the server as usual.
        for _ in 0..100 {
            let mut moved = false;
            for rec in drain(&mut p.server) {
                match rec {
                    Rec::Datagram(to, d) if to == CLIENT_EP.parse().unwrap() => {
                        cookies_to_client += (d[0] == 3) as usize;
                        p.client.datagram(p.now, SERVER_EP.parse().unwrap(), &d);
                        moved = true;
                    }
                    Rec::Datagram(..) => {}
                    other => p.s_events.push(other),
                }
            }
            for rec in drain(&mut p.client) {
                match rec {
                    Rec::Datagram(_, d) => {
                        p.server.datagram(p.now, CLIENT_EP.parse().unwrap(), &d);
                        moved = true;
                    }
                    other => p.c_events.push(other),
                }
            }
            if !moved {
                break;
            }
        }
        if opened_at.is_none() && p.s_events.iter().any(|r| matches!(r, Rec::Open(..))) {
            opened_at = Some(p.now - start - CONNECT_AT_MS as f64);
        }
        p.now += 1.0;
        p.server.tick(p.now);
        p.client.tick(p.now);
    }
    let opened_at = opened_at.expect("the valid peer connected during the flood");
    // Its first attempt got a cookie; the retry (after WireGuard's 5 s) carried it.
    assert!(cookies_to_client >= 1, "the valid peer was asked for a cookie");
    assert!(opened_at < 5_600.0, "connected after {opened_at} ms");
    let cookies = stat(&p.server, "cookieSent");
    let key_exchanges = stat(&p.server, "unknownPeer") + stat(&p.server, "rejected");
    eprintln!(
        "{flood} initiations; connected {opened_at} ms after starting; {cookies} cookie replies, {key_exchanges} flood initiations reached a key exchange, {} rate-limited",
        stat(&p.server, "rateLimited")
    );
    assert!(cookies > flood * 9 / 10, "{cookies} cookie replies for {flood} initiations");
    // The shared limit admits ~100 handshakes a second (each counted twice): the rest of the
    // flood costs a MAC check and a cookie, not a key exchange.
    assert!(key_exchanges <= 150 * 7, "{key_exchanges} flood initiations reached a key exchange");
    // And the connection carries data.
    let sid = p.s_events.iter().find_map(|r| if let Rec::Open(id, ..) = r { Some(*id) } else { None }).unwrap();
    write_all(&mut p.client, cid.unwrap(), b"hello", p.now);
    p.pump();
    assert_eq!(read_all(&mut p.server, sid, p.now), b"hello");
}

#[test]
fn initiations_from_one_address_are_held_to_a_few_key_exchanges_a_second() {
    let mut p = Pair::new();
    // One initiation of the valid peer's key, replayed 100 times within a millisecond from one
    // address (below the shared limit's count): each would cost a key exchange before being
    // found a replay.
    let server = PublicKey::from(&StaticSecret::from([1u8; 32]));
    let mut t = Tunn::new(StaticSecret::from([2u8; 32]), server, None, None, 7, None);
    let mut buf = vec![0u8; 256];
    let TunnResult::WriteToNetwork(d) = t.format_handshake_initiation(&mut buf, true) else { unreachable!() };
    let from: SocketAddr = "198.18.0.1:5000".parse().unwrap();
    for _ in 0..60 {
        p.server.datagram(p.now, from, d);
    }
    let processed = stat(&p.server, "rejected") + p.server.stats_json().matches("\"handshakes\":1").count() as u64;
    assert!(processed <= 5, "{processed} reached a key exchange");
    assert_eq!(stat(&p.server, "rateLimited"), 55);
    // A second later the address has its burst back.
    p.now += 1_000.0;
    p.server.tick(p.now);
    p.server.datagram(p.now, from, d);
    assert_eq!(stat(&p.server, "rateLimited"), 55);
}
