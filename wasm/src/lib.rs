//! wirescope's WebAssembly core: WireGuard (boringtun) and a TCP/IP stack (smoltcp) behind a
//! plain C ABI, driven entirely by its host.
//!
//! Layers, each in its own module:
//! - [`tunnel`]: peers, handshake routing, cookies, timers (boringtun);
//! - [`stack`]: the smoltcp interface, on-demand listeners, connection events;
//! - [`packet`]: the look at inner packets before the stack, and the packets built by hand;
//! - [`core`]: the sans-IO state machine joining them;
//! - [`out`]: the record format of everything handed to the host.
//!
//! The boundary: the host copies inputs into the io buffer (`ws_io`) and calls one function per
//! datagram, tick or connection operation, passing its clock in milliseconds; it then reads the
//! output records (`ws_out_ptr`/`ws_out_len`) and clears them. Received TCP data is read in
//! place (`ws_tcp_peek` + `ws_tcp_consume`) and data to send is written in place
//! (`ws_tcp_window` + `ws_tcp_commit`), so each byte crosses the boundary with one copy. No
//! boringtun or smoltcp type crosses it. The module holds one core; run several instances for
//! several cores.

pub mod core;
pub mod out;
pub mod packet;
pub mod stack;
pub mod tunnel;

use crate::core::Core;
use crate::out::read_endpoint;
use crate::stack::StackConfig;
use crate::tunnel::{AddPeerError, PeerConfig};
use std::cell::UnsafeCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The module's single mutable state. Wasm instances are single-threaded and the host never
/// re-enters, so plain interior mutability is enough.
struct State {
    core: Option<Core>,
    io: Vec<u8>,
    result: (*const u8, usize),
    text: String,
}

struct Global(UnsafeCell<State>);
// SAFETY: the module runs on one thread (wasm32 without threads).
unsafe impl Sync for Global {}

static STATE: Global =
    Global(UnsafeCell::new(State { core: None, io: Vec::new(), result: (std::ptr::null(), 0), text: String::new() }));

fn state() -> &'static mut State {
    // SAFETY: see `Global`; no reference outlives the exported call that took it.
    unsafe { &mut *STATE.0.get() }
}

fn core() -> &'static mut Core {
    state().core.as_mut().expect("ws_init must be called first")
}

fn set_result(bytes: &[u8]) -> i32 {
    state().result = (bytes.as_ptr(), bytes.len());
    bytes.len() as i32
}

fn io(range: std::ops::Range<usize>) -> &'static [u8] {
    &state().io[range]
}

/// Returns a pointer to the io buffer, grown to at least `len` bytes. The pointer is valid until
/// the next `ws_io` call with a larger length.
#[no_mangle]
pub extern "C" fn ws_io(len: u32) -> *mut u8 {
    let io = &mut state().io;
    if io.len() < len as usize {
        io.resize(len as usize, 0);
    }
    io.as_mut_ptr()
}

/// Pointer of the slice described by the last call that returned a length.
#[no_mangle]
pub extern "C" fn ws_result_ptr() -> *const u8 {
    state().result.0
}

/// Writes the public key of the private key in io[0..32] to io[32..64].
#[no_mangle]
pub extern "C" fn ws_public_key() {
    let io = &mut state().io;
    let private: [u8; 32] = io[..32].try_into().unwrap();
    let public = boringtun::x25519::PublicKey::from(&boringtun::x25519::StaticSecret::from(private));
    io[32..64].copy_from_slice(public.as_bytes());
}

/// Creates the core. io: private key (32), IPv4 address (4), IPv6 address (16), then the
/// settings as u32 little-endian, in this order: MTU, largest receive buffer, largest send
/// buffer, initial buffer, buffer budget (bytes), most connections, most per peer, most not yet
/// established per peer, half-open timeout (ms), most UDP conversations per peer, UDP
/// conversation timeout (ms), TCP keepalive (s, 0 = off), TCP idle timeout (s, 0 = off).
/// `server` = 1 accepts connections to any address; 0 is the client role; 2 is the TUN role (the
/// server stack without WireGuard: packets in with `ws_ip_input`, out as `IP_PACKET` records).
#[no_mangle]
pub extern "C" fn ws_init(now_ms: f64, server: u32) {
    let private: [u8; 32] = io(0..32).try_into().unwrap();
    let v4: [u8; 4] = io(32..36).try_into().unwrap();
    let v6: [u8; 16] = io(36..52).try_into().unwrap();
    let field = |i: usize| u32::from_le_bytes(io(52 + 4 * i..56 + 4 * i).try_into().unwrap());
    let cfg = StackConfig {
        server: server != 0,
        v4: Ipv4Addr::from(v4),
        v6: Ipv6Addr::from(v6),
        mtu: field(0) as usize,
        rx_buffer: field(1) as usize,
        tx_buffer: field(2) as usize,
        initial_buffer: field(3) as usize,
        buffer_budget: field(4) as usize,
        max_connections: field(5) as usize,
        max_connections_per_peer: field(6) as usize,
        max_half_open_per_peer: field(7) as usize,
        half_open_timeout_ms: field(8) as u64,
        max_udp_per_peer: field(9) as usize,
        udp_timeout_ms: field(10) as u64,
        keepalive_secs: field(11),
        timeout_secs: field(12),
    };
    state().core = Some(if server == 2 { Core::new_tun(cfg, now_ms) } else { Core::new(private, cfg, now_ms) });
}

/// Adds a peer. io: public key (32), preshared key (32, used if `has_psk`), endpoint (18, used if
/// `has_endpoint`), then `allowed` prefixes of 17 bytes each (the address as 16 bytes, IPv4 as
/// `::ffff:a.b.c.d`, then the prefix length in the address's own family). `allowed` < 0: none
/// given, the peer learns its addresses. `keepalive` is in seconds, 0 = off. Returns the peer
/// id, -1 if the key is a peer already, -2 if no ids are left, -3 for a bad prefix length, -4
/// when a prefix belongs to another peer.
#[no_mangle]
pub extern "C" fn ws_add_peer(now_ms: f64, has_psk: u32, keepalive: u32, has_endpoint: u32, allowed: i32) -> i32 {
    let prefixes = (allowed >= 0).then(|| {
        (0..allowed as usize)
            .map(|i| {
                let at = 82 + 17 * i;
                let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(io(at..at + 16)).unwrap());
                let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
                (ip, io(at + 16..at + 17)[0])
            })
            .collect()
    });
    let cfg = PeerConfig {
        public: io(0..32).try_into().unwrap(),
        psk: (has_psk != 0).then(|| io(32..64).try_into().unwrap()),
        keepalive: (keepalive != 0).then_some(keepalive.min(u16::MAX as u32) as u16),
        endpoint: if has_endpoint != 0 { read_endpoint(io(64..82)) } else { None },
        allowed: prefixes,
    };
    match core().add_peer(now_ms, cfg) {
        Ok(id) => id as i32,
        Err(AddPeerError::Duplicate) => -1,
        Err(AddPeerError::Exhausted) => -2,
        Err(AddPeerError::BadPrefix) => -3,
        Err(AddPeerError::PrefixTaken) => -4,
    }
}

/// Removes a peer, resetting its connections. Returns 1 if it existed.
#[no_mangle]
pub extern "C" fn ws_remove_peer(now_ms: f64, id: u32) -> u32 {
    core().remove_peer(now_ms, id) as u32
}

/// One datagram from the outer socket. io: source endpoint (18), then `len` bytes.
#[no_mangle]
pub extern "C" fn ws_datagram(now_ms: f64, len: u32) {
    let Some(from) = read_endpoint(io(0..18)) else {
        return;
    };
    core().datagram(now_ms, from, io(18..18 + len as usize));
}

/// Runs due timers and flushes; returns milliseconds until the next call is needed.
#[no_mangle]
pub extern "C" fn ws_tick(now_ms: f64) -> f64 {
    core().tick(now_ms)
}

/// Sends what connection operations queued and reports events (call after a batch of them).
#[no_mangle]
pub extern "C" fn ws_flush(now_ms: f64) {
    core().flush(now_ms)
}

/// Pointer to the output records.
#[no_mangle]
pub extern "C" fn ws_out_ptr() -> *const u8 {
    core().out.buf.as_ptr()
}

/// Length of the output records.
#[no_mangle]
pub extern "C" fn ws_out_len() -> u32 {
    core().out.buf.len() as u32
}

/// Drops the output records the host has read.
#[no_mangle]
pub extern "C" fn ws_out_clear() {
    core().out.clear()
}

/// Client role: opens a TCP connection to the endpoint in io[0..18]. Returns the connection id,
/// or -1.
#[no_mangle]
pub extern "C" fn ws_tcp_connect(now_ms: f64) -> i32 {
    let Some(dst) = read_endpoint(io(0..18)) else {
        return -1;
    };
    let c = core();
    let Some(peer) = c.only_peer() else { return -1 };
    let id = c.stack().connect(peer, dst).map_or(-1, |id| id as i32);
    c.flush(now_ms);
    id
}

/// The next contiguous received bytes of a connection; returns the length, the pointer is
/// `ws_result_ptr()`.
#[no_mangle]
pub extern "C" fn ws_tcp_peek(id: u32) -> i32 {
    set_result(core().stack().peek(id))
}

/// Marks `n` received bytes as read.
#[no_mangle]
pub extern "C" fn ws_tcp_consume(id: u32, n: u32) {
    core().stack().consume(id, n as usize)
}

/// The next contiguous free send space of a connection; returns the length (0 = full, a
/// writable event follows), the pointer is `ws_result_ptr()`.
#[no_mangle]
pub extern "C" fn ws_tcp_window(id: u32) -> i32 {
    set_result(core().stack().write_window(id))
}

/// Enqueues `n` bytes written into the last window. Returns the number enqueued.
#[no_mangle]
pub extern "C" fn ws_tcp_commit(id: u32, n: u32) -> u32 {
    core().stack().commit(id, n as usize) as u32
}

/// Half-closes the connection (FIN after queued data).
#[no_mangle]
pub extern "C" fn ws_tcp_shutdown(id: u32) {
    core().stack().shutdown(id)
}

/// Resets the connection.
#[no_mangle]
pub extern "C" fn ws_tcp_abort(id: u32) {
    core().stack().abort(id)
}

/// The host is done with the connection.
#[no_mangle]
pub extern "C" fn ws_tcp_release(id: u32) {
    core().stack().release(id)
}

/// Sends a UDP datagram into the tunnel. io: source endpoint (18), destination endpoint (18),
/// then `len` bytes. Returns 0, or the length of an error text at `ws_result_ptr()`.
#[no_mangle]
pub extern "C" fn ws_udp_send(now_ms: f64, len: u32) -> i32 {
    let (Some(src), Some(dst)) = (read_endpoint(io(0..18)), read_endpoint(io(18..36))) else {
        return error_text("bad endpoint");
    };
    match core().udp_send(now_ms, src, dst, io(36..36 + len as usize)) {
        Ok(()) => 0,
        Err(e) => error_text(e),
    }
}

/// Sends the IP packet in io[0..len] to the peer owning its destination. Returns 0, or the
/// length of an error text at `ws_result_ptr()`.
#[no_mangle]
pub extern "C" fn ws_ip_send(now_ms: f64, len: u32) -> i32 {
    let c = core();
    let r = c.ip_send(now_ms, io(0..len as usize));
    c.flush(now_ms);
    match r {
        Ok(()) => 0,
        Err(e) => error_text(e),
    }
}

/// TUN role: one IP packet read from the device, in io[0..len], into the stack. Returns 0, or
/// the length of an error text at `ws_result_ptr()`.
#[no_mangle]
pub extern "C" fn ws_ip_input(now_ms: f64, len: u32) -> i32 {
    match core().ip_input(now_ms, io(0..len as usize)) {
        Ok(()) => 0,
        Err(e) => error_text(e),
    }
}

fn error_text(e: &str) -> i32 {
    let s = state();
    s.text.clear();
    s.text.push_str(e);
    set_result(s.text.as_bytes())
}

/// Writes a connection's state as JSON (diagnostics); returns the length, the pointer is
/// `ws_result_ptr()`.
#[no_mangle]
pub extern "C" fn ws_tcp_info(id: u32) -> i32 {
    let s = state();
    s.text = core().stack().info_json(id);
    set_result(s.text.as_bytes())
}

/// Writes the stats as JSON; returns the length, the pointer is `ws_result_ptr()`.
#[no_mangle]
pub extern "C" fn ws_stats() -> i32 {
    let s = state();
    s.text = core().stats_json();
    set_result(s.text.as_bytes())
}
