//! Crashes the fuzz targets (wasm/fuzz, scripts/fuzz.sh) found in the core, kept as tests.

mod common;

use common::*;

/// An echo request padded with zeros to `len` bytes: the IP header still says 30 bytes, so it
/// parses, but the buffer the host hands over is longer.
fn padded_ping(len: usize) -> Vec<u8> {
    let mut p = ping([10, 0, 0, 2], [1, 2, 3, 4], 7);
    p.resize(len, 0);
    p
}

fn echo_replies(p: &Pair) -> usize {
    p.c_events.iter().filter(|r| matches!(r, Rec::Ip(..))).count()
}

/// The host may pass `ws_ip_send` up to 70,000 bytes (IO_SIZE in src/core/wasm_core.ts), but a
/// WireGuard datagram holds at most 65,535: encrypting a longer packet indexed past boringtun's
/// output buffer and panicked, which traps the whole module. With a session the panic came at
/// once; without one the packet waited in boringtun's queue and panicked when the handshake
/// completed.
#[test]
fn an_ip_packet_too_long_for_a_datagram_is_refused_with_or_without_a_session() {
    for session_first in [true, false] {
        let mut p = Pair::new();
        if session_first {
            p.client.ip_send(p.now, &padded_ping(30)).unwrap();
            p.pump();
            assert_eq!(echo_replies(&p), 1);
        }
        assert!(p.client.ip_send(p.now, &padded_ping(66_000)).is_err());
        p.pump();
        // The largest packet that fits still goes through, and the core keeps working.
        p.client.ip_send(p.now, &padded_ping(65_535 - 32)).unwrap();
        p.pump();
        p.client.ip_send(p.now, &padded_ping(30)).unwrap();
        p.pump();
        assert_eq!(echo_replies(&p), if session_first { 3 } else { 2 }, "session_first={session_first}");
    }
}
