//! Datagrams on the outer socket of a server core with one known peer: raw bytes, messages
//! with a valid type and length (and MAC1) but made-up contents, genuine datagrams from the
//! peer (handshakes, data) with bytes flipped, cut or added, replays, a stranger's handshake,
//! and time passing in between. The core must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wirescope_core_fuzz::datagram::run_datagram(data);
});
