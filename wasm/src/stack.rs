//! The TCP/IP side: a smoltcp interface that answers for every address, one TCP socket per
//! connection made on demand, and the bookkeeping that turns socket state into host events.
//!
//! Invariants:
//! - in the server role a listening socket is made for exactly the destination of each new SYN,
//!   right before smoltcp sees that SYN, and removed again if the SYN did not take;
//! - each connection gets an id that is never reused, and every id the host was told about with
//!   `TCP_OPEN` gets exactly one `TCP_CLOSED`;
//! - a socket is freed once it is closed (or in TIME-WAIT) and the host has released it;
//! - socket buffers start at `initial_buffer` bytes and grow with use (doubling, up to
//!   `rx_buffer`/`tx_buffer`), shrinking back once idle; their sum never exceeds
//!   `buffer_budget`, and every buffer is reserved fallibly, so a shortage refuses a connection
//!   or a growth instead of aborting the module;
//! - each peer holds at most `max_connections_per_peer` connections, of which at most
//!   `max_half_open_per_peer` not yet established (those time out after `half_open_timeout_ms`),
//!   and at most `max_udp_per_peer` UDP conversations.

use crate::out::{kind, CloseReason, Level, Out};
use crate::packet::{self, Inner};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp::{self, CongestionControl, State};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// How long a released connection may linger waiting for the client to finish.
const RELEASED_TIMEOUT_SECS: u64 = 60;

/// Sweeps (see [`Stack::sweep`]) a connection must be found with empty buffers before they
/// shrink back to their initial size.
const QUIET_SWEEPS_BEFORE_SHRINK: u8 = 4;

/// Receive-buffer autotuning (in the spirit of Linux's dynamic right-sizing): a receive buffer
/// doubles once the host has consumed as many bytes as it holds within this many milliseconds.
///
/// The advertised window is the buffer's free space, so a sender the window holds back delivers
/// one buffer per round trip: with the host reading promptly the queue stays short (the old rule,
/// "half the buffer waiting at a read", never fired) and the window stayed at 16 KiB: upload at
/// a 100 ms round trip fell from 33.4 to 1.1 Mbit/s (bench:faults --only delay). A buffer
/// consumed within one period therefore means "the window may be what limits this flow, if
/// the round trip is under 500 ms", and doubling it each round trip reaches the 512 KiB that a
/// 100 ms path at 40 Mbit/s needs within five round trips. The core has no round-trip estimate
/// for a connection that only receives, hence the fixed period: it covers mobile and satellite
/// paths, and costs a flow that is not window-bound a buffer of at most about one second of its
/// rate (a 1 Mbit/s stream ends near 128 KiB; a request or an idle connection never grows, and
/// every buffer shrinks back after a quiet second).
const RX_GROWTH_PERIOD_MS: u64 = 500;

/// Settings of the stack.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Accept connections to any address (server role) or only make them (client role).
    pub server: bool,
    /// The interface's own addresses (also the gateway of its default routes).
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    /// Largest inner packet.
    pub mtu: usize,
    /// Largest per-connection receive and send buffers (each starts at `initial_buffer`).
    pub rx_buffer: usize,
    pub tx_buffer: usize,
    /// Size each buffer starts at (and shrinks back to when idle).
    pub initial_buffer: usize,
    /// Most bytes all connection buffers together may take.
    pub buffer_budget: usize,
    /// Most connections at once; SYNs beyond it are answered with a reset.
    pub max_connections: usize,
    /// Most connections of one peer (a reset beyond).
    pub max_connections_per_peer: usize,
    /// Most connections of one peer not yet established (further SYNs are dropped: the client
    /// sends them again).
    pub max_half_open_per_peer: usize,
    /// A connection not established this long after its SYN is dropped.
    pub half_open_timeout_ms: u64,
    /// Most UDP conversations (source and destination pairs) of one peer at once; a
    /// conversation ends after `udp_timeout_ms` without a datagram from the peer.
    pub max_udp_per_peer: usize,
    pub udp_timeout_ms: u64,
    /// TCP keepalive interval and idle timeout, in seconds (0 = off).
    pub keepalive_secs: u32,
    pub timeout_secs: u32,
}

impl Default for StackConfig {
    fn default() -> StackConfig {
        StackConfig {
            server: true,
            v4: Ipv4Addr::new(10, 0, 0, 1),
            v6: Ipv6Addr::new(0xfd77, 0x7769, 0x7265, 0, 0, 0, 0, 1),
            mtu: 1420,
            rx_buffer: 512 * 1024,
            tx_buffer: 512 * 1024,
            initial_buffer: 16 * 1024,
            buffer_budget: 1 << 30,
            max_connections: 8192,
            max_connections_per_peer: 4096,
            // A wireguard-go client opening 2,000 connections at once had over 1,024 of them
            // not yet established at one point (its ACKs trail the burst of SYNs).
            max_half_open_per_peer: 2048,
            // smoltcp sends a SYN-ACK again 1, 3 and 7 s after the SYN (and Linux clients their
            // SYN at 1, 3 and 7 s): 15 s leaves room for all of them. With 5 s, a burst of
            // 2,000 SYNs from one client lost 256-511 of them to this timeout (their SYN-ACKs
            // overflowed the client's socket; the next attempt, at 7 s, came too late). The
            // half-open cap above still bounds the memory (2,048 x 32 KiB).
            half_open_timeout_ms: 15_000,
            max_udp_per_peer: 2048,
            udp_timeout_ms: 60_000,
            keepalive_secs: 60,
            timeout_secs: 600,
        }
    }
}

/// Counters reported in the stats.
#[derive(Default, Debug)]
pub struct StackStats {
    pub connections_opened: u64,
    /// SYNs answered with a reset: the total connection limit.
    pub connections_refused: u64,
    /// SYNs answered with a reset: the peer's connection limit.
    pub refused_peer_limit: u64,
    /// SYNs dropped: the peer's limit of connections not yet established.
    pub refused_half_open: u64,
    /// SYNs answered with a reset: no memory for the buffers (budget or allocation).
    pub refused_memory: u64,
    /// Connections dropped because they were not established in time.
    pub half_open_timeouts: u64,
    /// Buffer growths refused (budget or allocation); the connection goes on at its size.
    pub growth_refused: u64,
    /// UDP datagrams dropped: a new conversation beyond the peer's limit.
    pub udp_refused: u64,
    pub malformed: u64,
    pub udp_in: u64,
    pub udp_out: u64,
    pub echo_replies: u64,
    pub tcp_rx_bytes: u64,
    pub tcp_tx_bytes: u64,
}

/// A packet queue that smoltcp reads from and writes to.
struct Queue {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    mtu: usize,
}

impl Queue {
    fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b
    }
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Queue);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = self.0.buffer();
        b.resize(len, 0);
        let r = f(&mut b);
        self.0.tx.push_back(b);
        r
    }
}

impl Device for Queue {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(self)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// One TCP connection as the host sees it.
struct Conn {
    handle: SocketHandle,
    peer: u32,
    tuple: (SocketAddr, SocketAddr),
    opened: bool,
    readable_sent: bool,
    want_write: bool,
    fin_sent: bool,
    closed_sent: bool,
    released: bool,
    shut_write: bool,
    /// When the SYN arrived (server role) or the connection was made.
    created: Instant,
    /// Sweeps in a row that found both buffers empty and no bytes moved since the last one.
    quiet_sweeps: u8,
    /// Bytes consumed or written since the last sweep.
    moved: bool,
    /// Receive autotuning: when the current measuring period began, and the bytes the host
    /// consumed since (see [`Stack::consume`]).
    rx_mark: Instant,
    rx_taken: usize,
}

/// What one peer holds, for its limits.
#[derive(Default, Debug)]
struct PeerUse {
    connections: usize,
    half_open: usize,
    udp: usize,
}

/// One UDP conversation a peer started.
struct UdpConv {
    peer: u32,
    last: Instant,
}

/// Allocates `n` zero bytes, or None when the memory is not there (instead of aborting).
fn zeroed(n: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.resize(n, 0);
    Some(v)
}

/// The TCP/IP stack.
pub struct Stack {
    cfg: StackConfig,
    iface: Interface,
    dev: Queue,
    sockets: SocketSet<'static>,
    conns: HashMap<u32, Conn>,
    by_tuple: HashMap<(SocketAddr, SocketAddr), u32>,
    next_conn: u32,
    next_port: u16,
    /// Bytes of all connection buffers.
    buffer_bytes: usize,
    per_peer: HashMap<u32, PeerUse>,
    udp: HashMap<(SocketAddr, SocketAddr), UdpConv>,
    sweeps: u64,
    /// The clock at the last input or poll.
    now: Instant,
    /// Log lines from calls that have no output at hand, moved to the output by `events`.
    growth_log: Out,
    /// Counters.
    pub stats: StackStats,
}

fn to_ep(ep: IpEndpoint) -> SocketAddr {
    SocketAddr::new(ep.addr.into(), ep.port)
}

impl Stack {
    /// A stack with no connections.
    pub fn new(cfg: StackConfig, now: Instant) -> Stack {
        let mut dev = Queue { rx: VecDeque::new(), tx: VecDeque::new(), spare: Vec::new(), mtu: cfg.mtu };
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, now);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(cfg.v4), 32)).ok();
            a.push(IpCidr::new(IpAddress::Ipv6(cfg.v6), 128)).ok();
        });
        iface.routes_mut().add_default_ipv4_route(cfg.v4).ok();
        iface.routes_mut().add_default_ipv6_route(cfg.v6).ok();
        iface.set_any_ip(cfg.server);
        Stack {
            cfg,
            iface,
            dev,
            sockets: SocketSet::new(vec![]),
            conns: HashMap::new(),
            by_tuple: HashMap::new(),
            next_conn: 1,
            next_port: 40_000,
            buffer_bytes: 0,
            per_peer: HashMap::new(),
            udp: HashMap::new(),
            sweeps: 0,
            now,
            growth_log: Out::default(),
            stats: StackStats::default(),
        }
    }

    /// Bytes all connection buffers take now.
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// UDP conversations tracked now.
    pub fn udp_conversations(&self) -> usize {
        self.udp.len()
    }

    /// Counts a refusal and logs it now and then (the 1st, 2nd, 4th, 8th... time).
    fn refuse(count: &mut u64, out: &mut Out, what: impl FnOnce(u64) -> String) {
        *count += 1;
        if count.is_power_of_two() {
            out.log(Level::Warn, &what(*count));
        }
    }

    /// Connections the stack holds (including those not yet announced or not yet freed).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// A socket with initial-size buffers, or None when the budget or the memory is short.
    fn new_socket(&mut self) -> Option<tcp::Socket<'static>> {
        let rx = self.cfg.initial_buffer.min(self.cfg.rx_buffer).max(1);
        let tx = self.cfg.initial_buffer.min(self.cfg.tx_buffer).max(1);
        if self.buffer_bytes + rx + tx > self.cfg.buffer_budget {
            return None;
        }
        let mut s = tcp::Socket::new(tcp::SocketBuffer::new(zeroed(rx)?), tcp::SocketBuffer::new(zeroed(tx)?));
        self.buffer_bytes += rx + tx;
        // The window scale suits the size the receive buffer may grow to.
        s.set_window_scale_capacity(self.cfg.rx_buffer);
        s.set_nagle_enabled(false);
        // smoltcp's default delayed ACK (10 ms, or at once for every second full segment)
        // halves the ACK datagrams of uploads: each costs a send system call here.
        // Reno, not CUBIC: smoltcp 0.14's CUBIC left a sender stuck with a few bytes after a
        // zero window (see tests/pair.rs, a_full_window_drains_completely_once_the_receiver_reads).
        // (Both grow the window by at most one segment per ACK, so a client that acknowledges
        // many segments at once keeps it small; none at all was measured far worse: bursts up
        // to the client's window overflow its socket, and each loss costs a 1 s retransmission
        // timeout.)
        s.set_congestion_control(CongestionControl::Reno);
        if self.cfg.keepalive_secs > 0 {
            s.set_keep_alive(Some(Duration::from_secs(self.cfg.keepalive_secs as u64)));
        }
        if self.cfg.timeout_secs > 0 {
            s.set_timeout(Some(Duration::from_secs(self.cfg.timeout_secs as u64)));
        }
        Some(s)
    }

    fn add_conn(&mut self, handle: SocketHandle, peer: u32, tuple: (SocketAddr, SocketAddr), now: Instant) -> u32 {
        let id = self.next_conn;
        self.next_conn = self.next_conn.wrapping_add(1).max(1);
        self.by_tuple.insert(tuple, id);
        let usage = self.per_peer.entry(peer).or_default();
        usage.connections += 1;
        usage.half_open += 1;
        self.conns.insert(
            id,
            Conn {
                handle,
                peer,
                tuple,
                opened: false,
                readable_sent: false,
                want_write: false,
                fin_sent: false,
                closed_sent: false,
                released: false,
                shut_write: false,
                created: now,
                quiet_sweeps: 0,
                moved: false,
                rx_mark: now,
                rx_taken: 0,
            },
        );
        id
    }

    fn forget(&mut self, id: u32) {
        if let Some(c) = self.conns.remove(&id) {
            let s = self.sockets.remove(c.handle);
            if let smoltcp::socket::Socket::Tcp(s) = s {
                self.buffer_bytes -= s.recv_capacity() + s.send_capacity();
            }
            if self.by_tuple.get(&c.tuple) == Some(&id) {
                self.by_tuple.remove(&c.tuple);
            }
            if let Some(u) = self.per_peer.get_mut(&c.peer) {
                u.connections -= 1;
                if !c.opened {
                    u.half_open -= 1;
                }
                if u.connections == 0 && u.udp == 0 {
                    self.per_peer.remove(&c.peer);
                }
            }
        }
    }

    /// Takes one inner packet from `peer`. Replies the core makes itself (echo replies) are
    /// queued for [`Stack::take_tx`].
    pub fn input(&mut self, peer: u32, pkt: &[u8], now: Instant, out: &mut Out) {
        self.now = now;
        let inner = match packet::classify(pkt) {
            Ok(i) => i,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let mut fresh = None;
        match inner {
            Inner::Udp { src, dst, payload } => {
                if !self.udp_conversation(peer, src, dst, now, out) {
                    return;
                }
                self.stats.udp_in += 1;
                return out.udp(peer, src, dst, payload);
            }
            Inner::EchoRequest if self.cfg.server => {
                let mut reply = self.dev.buffer();
                if packet::echo_reply(pkt, &mut reply) {
                    self.stats.echo_replies += 1;
                    self.dev.tx.push_back(reply);
                }
                return;
            }
            Inner::Other if !self.cfg.server => return out.ip_packet(peer, pkt),
            Inner::TcpSyn { src, dst } if self.cfg.server && !self.by_tuple.contains_key(&(dst, src)) => {
                let (open, half_open) = self.per_peer.get(&peer).map_or((0, 0), |u| (u.connections, u.half_open));
                if half_open >= self.cfg.max_half_open_per_peer {
                    // Dropped, not reset: an honest client that opened many at once sends the
                    // SYN again in a second, when the others are established.
                    let limit = self.cfg.max_half_open_per_peer;
                    return Self::refuse(&mut self.stats.refused_half_open, out, |n| {
                        format!("peer {peer}: {limit} connections not yet established: dropping SYN {src} -> {dst} ({n} so far)")
                    });
                }
                if self.conns.len() >= self.cfg.max_connections {
                    let open = self.conns.len();
                    Self::refuse(&mut self.stats.connections_refused, out, |n| {
                        format!("connection limit reached ({open} open): refusing {src} -> {dst} ({n} refused so far)")
                    });
                } else if open >= self.cfg.max_connections_per_peer {
                    Self::refuse(&mut self.stats.refused_peer_limit, out, |n| {
                        format!("peer {peer}: connection limit reached ({open} open): refusing {src} -> {dst} ({n} refused so far)")
                    });
                } else if let Some(mut s) = self.new_socket() {
                    let listen = IpListenEndpoint { addr: Some(dst.ip().into()), port: dst.port() };
                    if s.listen(listen).is_ok() {
                        let handle = self.sockets.add(s);
                        fresh = Some(self.add_conn(handle, peer, (dst, src), now));
                    } else {
                        self.buffer_bytes -= s.recv_capacity() + s.send_capacity();
                    }
                } else {
                    let (used, budget) = (self.buffer_bytes, self.cfg.buffer_budget);
                    Self::refuse(&mut self.stats.refused_memory, out, |n| {
                        format!("no memory for connection buffers ({used} of {budget} bytes in use): refusing {src} -> {dst} ({n} refused so far)")
                    });
                }
            }
            _ => {}
        }
        let mut b = self.dev.buffer();
        b.extend_from_slice(pkt);
        self.dev.rx.push_back(b);
        self.iface.poll_ingress_single(now, &mut self.dev, &mut self.sockets);
        if let Some(id) = fresh {
            let handle = self.conns[&id].handle;
            if self.sockets.get::<tcp::Socket>(handle).state() == State::Listen {
                self.forget(id);
            }
        }
    }

    /// Opens a connection to `dst` (client role). Returns the connection id.
    pub fn connect(&mut self, peer: u32, dst: SocketAddr) -> Option<u32> {
        let src_ip: IpAddr = if dst.is_ipv4() { self.cfg.v4.into() } else { self.cfg.v6.into() };
        self.next_port = if self.next_port >= 65_000 { 40_000 } else { self.next_port + 1 };
        let local = SocketAddr::new(src_ip, self.next_port);
        let mut s = self.new_socket()?;
        let remote = IpEndpoint::new(dst.ip().into(), dst.port());
        if s.connect(self.iface.context(), remote, IpListenEndpoint { addr: Some(src_ip.into()), port: local.port() })
            .is_err()
        {
            self.buffer_bytes -= s.recv_capacity() + s.send_capacity();
            return None;
        }
        let handle = self.sockets.add(s);
        Some(self.add_conn(handle, peer, (local, dst), self.now))
    }

    /// Notes a UDP datagram from `peer`; false when it starts a conversation beyond the
    /// peer's limit (the datagram is dropped).
    fn udp_conversation(&mut self, peer: u32, src: SocketAddr, dst: SocketAddr, now: Instant, out: &mut Out) -> bool {
        if let Some(c) = self.udp.get_mut(&(src, dst)) {
            if c.peer == peer {
                c.last = now;
                return true;
            }
        }
        let usage = self.per_peer.entry(peer).or_default();
        if usage.udp >= self.cfg.max_udp_per_peer {
            let limit = self.cfg.max_udp_per_peer;
            Self::refuse(&mut self.stats.udp_refused, out, |n| {
                format!("peer {peer}: {limit} UDP conversations: dropping {src} -> {dst} ({n} dropped so far)")
            });
            return false;
        }
        usage.udp += 1;
        if let Some(old) = self.udp.insert((src, dst), UdpConv { peer, last: now }) {
            // The same addresses from another peer (possible only with overlapping allowed
            // addresses): the conversation moves.
            if let Some(u) = self.per_peer.get_mut(&old.peer) {
                u.udp -= 1;
            }
        }
        true
    }

    /// Periodic housekeeping (the core calls it every 250 ms): drops connections not
    /// established in time, shrinks the buffers of quiet connections, ends idle UDP
    /// conversations.
    pub fn sweep(&mut self, now: Instant, out: &mut Out) {
        self.sweeps += 1;
        let half_open_timeout = Duration::from_millis(self.cfg.half_open_timeout_ms);
        let initial = self.cfg.initial_buffer;
        let mut late = Vec::new();
        for (&id, c) in self.conns.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
            if !c.opened {
                if self.cfg.server && now - c.created >= half_open_timeout {
                    late.push(id);
                }
                continue;
            }
            // Empty queues alone do not make a connection quiet: a host that reads at once
            // finds the receive queue empty between a sender's flights, and shrinking the buffer
            // then cut the segments already on their way to the old window (measured in
            // tests/pair.rs at a 100 ms round trip: 19 segments sent again and the transfer
            // down to 160 kB/s).
            if s.recv_queue() == 0 && s.send_queue() == 0 && !std::mem::take(&mut c.moved) {
                c.quiet_sweeps = c.quiet_sweeps.saturating_add(1);
            } else {
                c.quiet_sweeps = 0;
            }
            if c.quiet_sweeps >= QUIET_SWEEPS_BEFORE_SHRINK {
                let (rx, tx) = (s.recv_capacity(), s.send_capacity());
                if rx > initial && s.try_resize_recv_buffer(initial) {
                    self.buffer_bytes -= rx - initial;
                }
                if tx > initial && s.try_resize_send_buffer(initial) {
                    self.buffer_bytes -= tx - initial;
                }
            }
        }
        for id in late {
            let Some(c) = self.conns.get(&id) else {
                continue;
            };
            let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
            s.abort();
            let (peer, tuple) = (c.peer, c.tuple);
            Self::refuse(&mut self.stats.half_open_timeouts, out, |n| {
                format!(
                    "peer {peer}: connection {} -> {} not established in time: dropped ({n} so far)",
                    tuple.1, tuple.0
                )
            });
            self.forget(id);
        }
        // UDP conversations: once a second is enough.
        if self.sweeps % 4 == 0 && !self.udp.is_empty() {
            let idle = Duration::from_millis(self.cfg.udp_timeout_ms);
            let per_peer = &mut self.per_peer;
            self.udp.retain(|_, c| {
                let keep = now - c.last < idle;
                if !keep {
                    if let Some(u) = per_peer.get_mut(&c.peer) {
                        u.udp -= 1;
                    }
                }
                keep
            });
            per_peer.retain(|_, u| u.connections > 0 || u.udp > 0);
        }
    }

    /// Sends what the sockets have to send and runs the stack's timers.
    pub fn poll(&mut self, now: Instant) {
        self.now = now;
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }

    /// Milliseconds until the stack needs [`Stack::poll`] again, if it does.
    pub fn poll_delay(&mut self, now: Instant) -> Option<u64> {
        self.iface.poll_delay(now, &self.sockets).map(|d| d.total_millis())
    }

    /// Moves the packets the stack produced to `f`, one by one.
    pub fn take_tx(&mut self, mut f: impl FnMut(&[u8])) {
        while let Some(p) = self.dev.tx.pop_front() {
            f(&p);
            self.dev.spare.push(p);
        }
    }

    /// Turns socket state changes into events, and frees what is finished.
    pub fn events(&mut self, out: &mut Out) {
        if !self.growth_log.buf.is_empty() {
            out.buf.extend_from_slice(&self.growth_log.buf);
            self.growth_log.clear();
        }
        let mut gone = Vec::new();
        for (&id, c) in self.conns.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
            let state = s.state();
            if !c.opened {
                match state {
                    State::Listen | State::SynReceived | State::SynSent => continue,
                    State::Closed | State::TimeWait if self.cfg.server => {
                        gone.push(id);
                        continue;
                    }
                    State::Closed | State::TimeWait => {}
                    _ => {
                        c.opened = true;
                        if let Some(u) = self.per_peer.get_mut(&c.peer) {
                            u.half_open -= 1;
                        }
                        self.stats.connections_opened += 1;
                        let (Some(local), Some(remote)) = (s.local_endpoint(), s.remote_endpoint()) else {
                            continue;
                        };
                        c.tuple = (to_ep(local), to_ep(remote));
                        out.tcp_open(id, c.peer, to_ep(remote), to_ep(local));
                    }
                }
            }
            if s.can_recv() && !c.readable_sent {
                c.readable_sent = true;
                out.tcp(kind::TCP_READABLE, id);
            }
            if c.want_write && s.can_send() && s.send_queue() < s.send_capacity() {
                c.want_write = false;
                out.tcp(kind::TCP_WRITABLE, id);
            }
            let peer_done = matches!(state, State::CloseWait | State::LastAck | State::Closing | State::TimeWait)
                || (state == State::Closed && c.fin_sent);
            if peer_done && !c.fin_sent && s.recv_queue() == 0 {
                c.fin_sent = true;
                out.tcp(kind::TCP_FIN, id);
            }
            let over = state == State::Closed || (state == State::TimeWait && c.fin_sent);
            if over && !c.closed_sent {
                c.closed_sent = true;
                let graceful = c.fin_sent && c.shut_write;
                out.tcp_closed(id, if graceful { CloseReason::Graceful } else { CloseReason::Reset });
            }
            if c.closed_sent && c.released {
                gone.push(id);
            }
        }
        for id in gone {
            self.forget(id);
        }
    }

    fn socket(&mut self, id: u32) -> Option<(&mut Conn, &mut tcp::Socket<'static>)> {
        let c = self.conns.get_mut(&id)?;
        let handle = c.handle;
        Some((c, self.sockets.get_mut::<tcp::Socket>(handle)))
    }

    /// The next contiguous run of received bytes (empty when there is none).
    pub fn peek(&mut self, id: u32) -> &[u8] {
        let Some(c) = self.conns.get_mut(&id) else {
            return &[];
        };
        c.readable_sent = false;
        let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
        // Half the buffer or more waiting when the host reads: the peer sends faster than one
        // buffer per read (a window too small for the path, or a slow reader): grow it.
        let cap = s.recv_capacity();
        if s.recv_queue() * 2 >= cap && cap < self.cfg.rx_buffer {
            let new = (cap * 2).min(self.cfg.rx_buffer);
            if self.buffer_bytes + new - cap <= self.cfg.buffer_budget && s.try_resize_recv_buffer(new) {
                self.buffer_bytes += new - cap;
            } else {
                let (used, budget) = (self.buffer_bytes, self.cfg.buffer_budget);
                Self::refuse(&mut self.stats.growth_refused, &mut self.growth_log, |n| {
                    format!("no memory to grow a receive buffer to {new} bytes ({used} of {budget} in use; {n} refused so far)")
                });
            }
        }
        s.peek(usize::MAX).unwrap_or(&[])
    }

    /// Marks `n` received bytes as consumed by the host, opening the receive window; grows the
    /// receive buffer when the host consumes it fast enough (see [`RX_GROWTH_PERIOD_MS`]).
    pub fn consume(&mut self, id: u32, n: usize) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
        let taken = s
            .recv(|b| {
                let k = n.min(b.len());
                (k, k)
            })
            .unwrap_or(0);
        self.stats.tcp_rx_bytes += taken as u64;
        c.moved |= taken > 0;
        let now = self.now;
        if now - c.rx_mark > Duration::from_millis(RX_GROWTH_PERIOD_MS) {
            c.rx_mark = now;
            c.rx_taken = 0;
        }
        c.rx_taken += taken;
        let cap = s.recv_capacity();
        if c.rx_taken >= cap && cap < self.cfg.rx_buffer {
            c.rx_mark = now;
            c.rx_taken = 0;
            let new = (cap * 2).min(self.cfg.rx_buffer);
            if self.buffer_bytes + new - cap <= self.cfg.buffer_budget && s.try_resize_recv_buffer(new) {
                self.buffer_bytes += new - cap;
            } else {
                let (used, budget) = (self.buffer_bytes, self.cfg.buffer_budget);
                Self::refuse(&mut self.stats.growth_refused, &mut self.growth_log, |n| {
                    format!("no memory to grow a receive buffer to {new} bytes ({used} of {budget} in use; {n} refused so far)")
                });
            }
        }
    }

    /// The next contiguous free run of the send buffer; empty when full (a `TCP_WRITABLE` event
    /// follows when there is room again) or when the connection can no longer send.
    pub fn write_window(&mut self, id: u32) -> &mut [u8] {
        let Some(c) = self.conns.get_mut(&id) else {
            return &mut [];
        };
        let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
        if !s.may_send() {
            return &mut [];
        }
        // Half the buffer or more unsent or unacknowledged: the host writes faster than the
        // path drains one buffer: grow it.
        let cap = s.send_capacity();
        if s.send_queue() * 2 >= cap && cap < self.cfg.tx_buffer {
            let new = (cap * 2).min(self.cfg.tx_buffer);
            if self.buffer_bytes + new - cap <= self.cfg.buffer_budget && s.try_resize_send_buffer(new) {
                self.buffer_bytes += new - cap;
            } else {
                let (used, budget) = (self.buffer_bytes, self.cfg.buffer_budget);
                Self::refuse(&mut self.stats.growth_refused, &mut self.growth_log, |n| {
                    format!("no memory to grow a send buffer to {new} bytes ({used} of {budget} in use; {n} refused so far)")
                });
            }
        }
        let w = s.send(|b| (0, (b.as_mut_ptr(), b.len()))).unwrap_or((std::ptr::null_mut(), 0));
        if w.1 == 0 {
            c.want_write = true;
            return &mut [];
        }
        // SAFETY: the slice is the socket's free send space; nothing touches the socket
        // between this call and `commit`, which enqueues what the host wrote there.
        unsafe { std::slice::from_raw_parts_mut(w.0, w.1) }
    }

    /// Enqueues `n` bytes the host wrote into the last [`Stack::write_window`].
    pub fn commit(&mut self, id: u32, n: usize) -> usize {
        let Some(c) = self.conns.get_mut(&id) else {
            return 0;
        };
        let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
        let done = s
            .send(|b| {
                let k = n.min(b.len());
                (k, k)
            })
            .unwrap_or(0);
        self.stats.tcp_tx_bytes += done as u64;
        c.moved |= done > 0;
        done
    }

    /// Sends FIN after what is queued (half-close of our side).
    pub fn shutdown(&mut self, id: u32) {
        if let Some((c, s)) = self.socket(id) {
            c.shut_write = true;
            s.close();
        }
    }

    /// Resets the connection.
    pub fn abort(&mut self, id: u32) {
        if let Some((_, s)) = self.socket(id) {
            s.abort();
        }
    }

    /// The host is done with the connection: it is freed as soon as it is over (now, if it
    /// never opened).
    pub fn release(&mut self, id: u32) {
        let Some((c, s)) = self.socket(id) else {
            return;
        };
        c.released = true;
        if !c.closed_sent && matches!(s.state(), State::Established | State::CloseWait) && !c.shut_write {
            c.shut_write = true;
            s.close();
        }
        // Nobody waits for this connection any more: a client that never finishes its side
        // must not hold the socket for the whole idle timeout.
        s.set_timeout(Some(Duration::from_secs(RELEASED_TIMEOUT_SECS)));
        if !c.opened && !c.closed_sent {
            self.forget(id);
        }
    }

    /// Resets every connection of `peer` and reports each as closed.
    pub fn drop_peer(&mut self, peer: u32, out: &mut Out) {
        let ids: Vec<u32> = self.conns.iter().filter(|(_, c)| c.peer == peer).map(|(id, _)| *id).collect();
        for id in ids {
            let c = &self.conns[&id];
            if c.opened && !c.closed_sent {
                out.tcp_closed(id, CloseReason::PeerRemoved);
            }
            self.sockets.get_mut::<tcp::Socket>(c.handle).abort();
            self.forget(id);
        }
    }

    /// A connection's state as JSON, for diagnostics.
    pub fn info_json(&mut self, id: u32) -> String {
        let Some((c, s)) = self.socket(id) else {
            return "null".into();
        };
        let (cwnd, in_flight, remote_window, srtt_ms, rto_ms, retransmits) = s.sender_state();
        format!(
            "{{\"state\":\"{}\",\"sendQueue\":{},\"recvQueue\":{},\"canSend\":{},\"canRecv\":{},\"readableSent\":{},\"wantWrite\":{},\"finSent\":{},\"closedSent\":{},\"released\":{},\"cwnd\":{},\"inFlight\":{},\"remoteWindow\":{},\"srttMs\":{},\"rtoMs\":{},\"retransmits\":{}}}",
            s.state(), s.send_queue(), s.recv_queue(), s.can_send(), s.can_recv(),
            c.readable_sent, c.want_write, c.fin_sent, c.closed_sent, c.released,
            cwnd, in_flight, remote_window, srtt_ms, rto_ms, retransmits
        )
    }

    /// The stack's MTU.
    pub fn mtu(&self) -> usize {
        self.cfg.mtu
    }

    /// Queues a packet the host built (UDP replies) for [`Stack::take_tx`].
    pub fn queue_tx(&mut self, build: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        let mut b = self.dev.buffer();
        let ok = build(&mut b);
        if ok {
            self.dev.tx.push_back(b);
        } else {
            self.dev.spare.push(b);
        }
        ok
    }
}
