//! Inner IP packets through an established tunnel: the peer encrypts whatever the input makes
//! (raw bytes, or IPv4/IPv6 packets with TCP, UDP, ICMP or other payloads whose headers and
//! checksums are mostly right), the core decrypts them and hands them to packet.rs and the
//! TCP/IP stack. The core runs in the server role (accepting connections to any address) or in
//! the client role; time passes and the host reads, writes, closes and releases connections (and
//! removes and re-adds the peer) in between. The core must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wirescope_core_fuzz::inner_packet::run_inner_packet(data);
});
