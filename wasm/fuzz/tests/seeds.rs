//! The seed corpus, written as scripts: each seed must reach what it is meant to (a session, an
//! open connection, packets back from the core), so the fuzzer starts from inputs that get deep
//! into the core. `cargo test` here also replays every committed seed and crash reproducer
//! through the same code the fuzz targets run, without libFuzzer.
//!
//! `REGENERATE_SEEDS=1 cargo test` rewrites seeds/ from the scripts below.

use std::path::{Path, PathBuf};
use wirescope_core_fuzz::{datagram::run_datagram, inner_packet::run_inner_packet, Script};

const SYN: u8 = 0x02;
const FIN_ACK: u8 = 0x11;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;

#[allow(clippy::too_many_arguments)]
/// Op 1: a TCP segment from the peer's own address, IPv4 or IPv6, to the usual destination.
fn tcp(s: &mut Script, v6: bool, sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) {
    s.u8(1).u8(v6 as u8).u8(1).u8(1).u8(0).u8(0);
    s.u16(sport).u16(dport).u32(seq).u32(ack);
    s.u16(0).u8(flags).u8(0).u16(65_535).u8(0).slice(payload);
    ip_tail(s, v6);
}

/// The IP header fields [`wirescope_core_fuzz::ip_packet`] reads with no tweaks.
fn ip_tail(s: &mut Script, v6: bool) {
    s.u8(0);
    if !v6 {
        s.u8(0).u16(0x1234);
    }
}

/// Op 3: answers the newest TCP segment from the core (sequence numbers taken from it).
fn answer(s: &mut Script, flags: u8, payload: &[u8], v6: bool) {
    s.u8(3).u8(0).u8(0).u8(0).u8(0);
    s.u16(0).u8(flags).u8(0).u16(65_535).u8(0).slice(payload);
    ip_tail(s, v6);
}

/// Op 4: time passes (`ms` below 256).
fn tick(s: &mut Script, ms: u8) {
    s.u8(4).u8(0).u8(ms);
}

/// Op 5: a host operation on the newest-but-`back` connection.
fn host(s: &mut Script, conn: u8, op: u8, data: &[u8]) {
    s.u8(5).u8(conn).u8(op);
    match op {
        0 => {
            s.u8(1);
        }
        1 => {
            s.slice(data);
        }
        _ => {}
    }
}

/// A seed: its name, its bytes, and what it must reach.
type Seed = (&'static str, Vec<u8>, fn(wirescope_core_fuzz::Reached) -> bool);

fn inner_seeds() -> Vec<Seed> {
    let mut out: Vec<Seed> = Vec::new();

    // A whole TCP connection through the server core: handshake, data both ways, FINs.
    for v6 in [false, true] {
        let mut s = Script::default();
        s.u8(1); // server role
        tcp(&mut s, v6, 40_001, 443, 1000, 0, SYN, &[]);
        answer(&mut s, ACK, &[], v6);
        answer(&mut s, PSH_ACK, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", v6);
        host(&mut s, 0, 0, &[]);
        host(&mut s, 0, 1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        tick(&mut s, 20);
        answer(&mut s, ACK, &[], v6);
        answer(&mut s, FIN_ACK, &[], v6);
        host(&mut s, 0, 2, &[]);
        tick(&mut s, 20);
        answer(&mut s, ACK, &[], v6);
        tick(&mut s, 250);
        out.push((if v6 { "tcp_v6" } else { "tcp_v4" }, s.0, |r| r.connections == 1 && r.received >= 3));
    }

    // UDP and ICMP echo through the server core, and a UDP answer from the host.
    let mut s = Script::default();
    s.u8(1);
    s.u8(2)
        .u8(0)
        .u8(1)
        .u8(1)
        .u8(0)
        .u8(2)
        .u16(5353)
        .u16(53)
        .slice(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01")
        .u8(0);
    ip_tail(&mut s, false);
    s.u8(6).u8(0).u8(1).u16(53).slice(b"reply").u16(5353);
    s.u8(2).u8(0).u8(1).u8(1).u8(0).u8(3).u8(8).u8(0).slice(b"\x00\x07\x00\x01ping");
    ip_tail(&mut s, false);
    s.u8(2).u8(1).u8(1).u8(1).u8(0).u8(3).u8(128).u8(0).slice(b"\x00\x07\x00\x01ping");
    ip_tail(&mut s, true);
    out.push(("udp_icmp", s.0, |r| r.received >= 3));

    // The client role: the host opens a connection, the peer accepts it and sends data.
    let mut s = Script::default();
    s.u8(0); // client role
    s.u8(6).u8(0).u8(1).u16(443);
    answer(&mut s, SYN | ACK, &[], false);
    host(&mut s, 0, 1, b"hello");
    answer(&mut s, PSH_ACK, b"world", false);
    host(&mut s, 0, 0, &[]);
    host(&mut s, 0, 4, &[]);
    tick(&mut s, 200);
    out.push(("client_connect", s.0, |r| r.connections == 1 && r.received >= 2));

    // The host removes the peer while a connection is open and adds it back; the peer
    // handshakes again and opens another.
    let mut s = Script::default();
    s.u8(1);
    tcp(&mut s, false, 40_010, 80, 5, 0, SYN, &[]);
    answer(&mut s, ACK, b"x", false);
    s.u8(8);
    tcp(&mut s, false, 40_011, 80, 5, 0, SYN, &[]);
    answer(&mut s, ACK, b"y", false);
    tick(&mut s, 250);
    out.push(("readd_peer", s.0, |r| r.session && r.connections == 2));

    // Many SYNs: the connection limit and refusals.
    let mut s = Script::default();
    s.u8(1);
    for i in 0..12u16 {
        tcp(&mut s, false, 41_000 + i, 80, 7, 0, SYN, &[]);
    }
    tick(&mut s, 250);
    out.push(("syn_burst", s.0, |r| r.received >= 8));
    out
}

fn datagram_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    // An established session carrying an ICMP echo request, then a replay of it.
    let ping = [0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0xa6, 0xd7, 10, 0, 0, 2, 1, 2, 3, 4, 8, 0, 0xf7, 0xf7, 0, 7, 0, 1];
    let mut s = Script::default();
    s.u8(1);
    s.u8(2).u8(2).slice(&ping).u8(0);
    s.u8(2).u8(3).u8(0).u8(0);
    s.u8(2).u8(5).u8(3);
    out.push(("data_replay", s.0));
    // Handshakes from the peer and from a stranger, then one with a flipped byte.
    let mut s = Script::default();
    s.u8(0);
    s.u8(2).u8(4).u8(1).u8(0);
    s.u8(2).u8(4).u8(0).u8(0);
    s.u8(2).u8(4).u8(1).u8(1).u8(0).u16(40).u8(0x20);
    out.push(("handshakes", s.0));
    // Made-up messages of every type with MAC1 right, and a burst under load.
    let mut s = Script::default();
    s.u8(1);
    // (initiation 148 bytes, response 92, cookie reply 64, data 32 + 2 * 16)
    for (ty, body) in [(0u8, 144usize), (1, 88), (2, 60), (3, 60)] {
        s.u8(2).u8(1).u8(ty);
        if ty == 3 {
            s.u8(2);
        }
        s.bytes(&vec![0x55; body]);
        if ty <= 1 {
            s.u8(1); // MAC1 right
        }
    }
    s.u8(2).u8(6).slice(&[1, 0, 0, 0]).u8(1).u8(80);
    out.push(("typed_messages", s.0));
    out
}

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn write_seeds(target: &str, seeds: &[(&str, Vec<u8>)]) {
    if std::env::var_os("REGENERATE_SEEDS").is_none() {
        return;
    }
    let d = dir("seeds").join(target);
    std::fs::create_dir_all(&d).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(d.join(name), bytes).unwrap();
    }
}

#[test]
fn inner_packet_seeds_reach_what_they_are_for() {
    let seeds = inner_seeds();
    for (name, bytes, ok) in &seeds {
        let reached = run_inner_packet(bytes);
        assert!(ok(reached), "seed {name} reached only {reached:?}");
    }
    write_seeds("inner_packet", &seeds.iter().map(|(n, b, _)| (*n, b.clone())).collect::<Vec<_>>());
}

#[test]
fn datagram_seeds_reach_a_session() {
    let seeds = datagram_seeds();
    for (name, bytes) in &seeds {
        let reached = run_datagram(bytes);
        assert!(reached.session || *name == "typed_messages", "seed {name} reached only {reached:?}");
    }
    write_seeds("datagram", &seeds);
}

/// Every committed seed and crash reproducer runs without a panic.
#[test]
fn committed_inputs_replay_without_a_panic() {
    for (target, run) in [("datagram", run_datagram as fn(&[u8]) -> _), ("inner_packet", run_inner_packet)] {
        for kind in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(dir(kind).join(target)) else { continue };
            for e in entries {
                let path = e.unwrap().path();
                run(&std::fs::read(&path).unwrap());
            }
        }
    }
}

/// Time per input without libFuzzer's instrumentation: `cargo test --release -- --ignored --nocapture`.
#[test]
#[ignore]
fn time_per_input() {
    for (name, bytes, _) in inner_seeds() {
        let t = std::time::Instant::now();
        for _ in 0..50 {
            run_inner_packet(&bytes);
        }
        println!("inner_packet {name}: {:?} per input", t.elapsed() / 50);
    }
    let t = std::time::Instant::now();
    for _ in 0..50 {
        wirescope_core_fuzz::Rig::established(true);
    }
    println!("handshake alone: {:?}", t.elapsed() / 50);
}
