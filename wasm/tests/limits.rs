//! What one peer may hold in the server core: connections (established and not), buffer
//! memory, UDP conversations, and what happens at each limit.

mod common;

use common::*;
use wirescope_core::stack::StackConfig;

const KIB: usize = 1024;

/// 500 SYNs that are never completed, from the client's tunnel address.
fn syn_flood(p: &mut Pair, count: u16) {
    for i in 0..count {
        let syn = tcp_syn([10, 0, 0, 2], 20_000 + i, [198, 51, 100, 1 + (i % 200) as u8], 443);
        p.client.ip_send(p.now, &syn).unwrap();
        up_only(p);
    }
}

/// Runs the server's timers for `ms` without letting its packets reach the client.
fn wait_server_only(p: &mut Pair, ms: f64) {
    let end = p.now + ms;
    while p.now < end {
        p.now += 50.0;
        p.server.tick(p.now);
        up_only(p);
    }
}

#[test]
fn a_syn_flood_from_one_peer_is_held_to_its_half_open_limit_and_times_out() {
    let mut p = Pair::with(StackConfig { max_half_open_per_peer: 100, max_connections: 8192, ..cfg(true, "10.0.0.1") });
    connect(&mut p, "203.0.113.1:80");
    syn_flood(&mut p, 500);
    assert_eq!(stat(&p.server, "refusedHalfOpen"), 400, "SYNs past the limit are dropped");
    assert_eq!(p.server.stack().connection_count(), 101);
    // Buffers start small: 100 half-open connections take 100 x 2 x 16 KiB, not 100 x 1 MiB.
    assert_eq!(p.server.stack().buffer_bytes(), 101 * 2 * 16 * KIB);
    assert!(p.s_events.iter().any(|r| matches!(r, Rec::Log(l) if l.contains("not yet established"))));
    // Never completed: gone within the half-open timeout (15 s).
    wait_server_only(&mut p, 15_500.0);
    assert_eq!(stat(&p.server, "halfOpenTimeouts"), 100);
    assert_eq!(p.server.stack().connection_count(), 1, "the honest connection stays");
    assert_eq!(p.server.stack().buffer_bytes(), 2 * 16 * KIB);
    assert!(try_connect(&mut p, "203.0.113.1:81").is_some(), "a new connection after the flood");
}

#[test]
fn a_peer_beyond_its_connection_limit_is_refused_with_a_reset() {
    let mut p = Pair::with(StackConfig { max_connections_per_peer: 3, ..cfg(true, "10.0.0.1") });
    for port in 1..=3 {
        connect(&mut p, &format!("203.0.113.1:{port}"));
    }
    assert!(try_connect(&mut p, "203.0.113.1:4").is_none());
    assert!(stat(&p.server, "refusedPeerLimit") >= 1);
    assert!(p.s_events.iter().any(|r| matches!(r, Rec::Log(l) if l.contains("connection limit reached"))));
}

#[test]
fn a_small_buffer_budget_refuses_connections_and_growth_instead_of_aborting() {
    // Room for two connections at their initial size and one growth.
    let budget = 2 * 2 * 16 * KIB + 16 * KIB;
    let mut p = Pair::with(StackConfig { buffer_budget: budget, ..cfg(true, "10.0.0.1") });
    let (cid, sid) = connect(&mut p, "203.0.113.1:1");
    connect(&mut p, "203.0.113.1:2");
    assert!(try_connect(&mut p, "203.0.113.1:3").is_none(), "no budget for a third");
    assert!(stat(&p.server, "refusedMemory") >= 1);
    // The first connection still carries 1 MB down; its send buffer may grow only once.
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7) as u8).collect();
    let (mut sent, mut got) = (0, Vec::new());
    for _ in 0..20_000 {
        sent += write_all(&mut p.server, sid, &data[sent..], p.now);
        p.pump();
        got.extend(read_all(&mut p.client, cid, p.now));
        p.pump();
        if got.len() == data.len() {
            break;
        }
        p.advance(1.0);
    }
    assert!(got == data, "all bytes arrived ({} of {})", got.len(), data.len());
    assert!(p.server.stack().buffer_bytes() <= budget);
    assert!(stat(&p.server, "bufferGrowthRefused") >= 1);
}

#[test]
fn buffers_grow_with_a_transfer_and_shrink_back_when_quiet() {
    let mut p = Pair::new();
    let (cid, sid) = connect(&mut p, "203.0.113.1:1");
    let data = vec![9u8; 4_000_000];
    let (mut sent, mut got) = (0, 0);
    let mut peak = 0;
    for _ in 0..20_000 {
        sent += write_all(&mut p.server, sid, &data[sent..], p.now);
        peak = peak.max(p.server.stack().buffer_bytes());
        p.pump();
        got += read_all(&mut p.client, cid, p.now).len();
        p.pump();
        if got == data.len() {
            break;
        }
        p.advance(1.0);
    }
    assert_eq!(got, data.len());
    assert_eq!(peak, 512 * KIB + 16 * KIB, "the send buffer grew to its largest");
    for _ in 0..6 {
        p.advance(250.0);
    }
    assert_eq!(p.server.stack().buffer_bytes(), 2 * 16 * KIB, "and shrank back once quiet");
}

#[test]
fn udp_conversations_of_one_peer_are_limited_and_expire() {
    let mut p = Pair::with(StackConfig { max_udp_per_peer: 10, udp_timeout_ms: 2_000, ..cfg(true, "10.0.0.1") });
    connect(&mut p, "203.0.113.1:1");
    for port in 0..30u16 {
        p.client.ip_send(p.now, &udp([10, 0, 0, 2], 5000 + port, [198, 51, 100, 1], 53, b"q")).unwrap();
        // The same conversation again is not a new one.
        p.client.ip_send(p.now, &udp([10, 0, 0, 2], 5000 + port, [198, 51, 100, 1], 53, b"q")).unwrap();
        up_only(&mut p);
    }
    let got = p.s_events.iter().filter(|r| matches!(r, Rec::Udp(..))).count();
    assert_eq!(got, 20, "10 conversations, two datagrams each");
    assert_eq!(stat(&p.server, "udpRefused"), 40);
    assert!(p.s_events.iter().any(|r| matches!(r, Rec::Log(l) if l.contains("UDP conversations"))));
    wait_server_only(&mut p, 3_500.0);
    assert_eq!(stat(&p.server, "udpConversations"), 0);
    p.client.ip_send(p.now, &udp([10, 0, 0, 2], 6000, [198, 51, 100, 1], 53, b"q")).unwrap();
    up_only(&mut p);
    assert_eq!(p.s_events.iter().filter(|r| matches!(r, Rec::Udp(..))).count(), 21, "room again");
}

#[test]
fn a_connection_whose_first_syn_acks_are_lost_is_established_by_a_retransmission_not_dropped() {
    let mut p = Pair::new();
    connect(&mut p, "203.0.113.1:1");
    let seen = p.s_events.len();
    let cid = p.client.stack().connect(1, "203.0.113.1:2".parse().unwrap()).unwrap();
    p.client.flush(p.now);
    // For 4 s nothing the server sends reaches the client (as when a burst of 2,000 SYNs
    // overflows the client's socket): the SYN-ACKs sent at once, after 1 s and after 3 s are lost.
    for _ in 0..80 {
        p.now += 50.0;
        p.client.tick(p.now);
        p.server.tick(p.now);
        up_only(&mut p);
    }
    // Then the path works again: smoltcp's next SYN-ACK goes out 7 s after the SYN (the
    // client's own SYN retransmissions come at 1, 3 and 7 s).
    for _ in 0..60 {
        p.advance(100.0);
    }
    assert_eq!(stat(&p.server, "halfOpenTimeouts"), 0, "the half-open connection waited for its SYN-ACK");
    let opens = p.s_events[seen..].iter().filter(|r| matches!(r, Rec::Open(..))).count();
    assert_eq!(opens, 1, "established once: {:?}", &p.s_events[seen..]);
    assert!(p.client.stack().info_json(cid).contains("ESTABLISHED"));
}
