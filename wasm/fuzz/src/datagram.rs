//! Datagrams on the outer socket of a server core with one known peer: raw bytes, messages
//! with a valid type and length (and MAC1) but made-up contents, genuine datagrams from the
//! peer (handshakes, data) with bytes flipped, cut or added, replays, a stranger's handshake,
//! and time passing in between. The core must never panic.
use crate::{public_of, with_mac1, Input, Rig, CORE_KEY, STRANGER_KEY};
use std::net::SocketAddr;

fn endpoint(inp: &mut Input, usual: SocketAddr) -> SocketAddr {
    match inp.u8() % 8 {
        0 => SocketAddr::new([127, 0, 0, inp.u8()].into(), inp.u16()),
        1 => SocketAddr::new(std::net::Ipv6Addr::from(inp.u32() as u128).into(), inp.u16()),
        _ => usual,
    }
}

/// Flips, cuts or extends `d` as the input says.
fn mutate(inp: &mut Input, mut d: Vec<u8>) -> Vec<u8> {
    for _ in 0..(inp.u8() % 4) {
        match inp.u8() % 4 {
            0 if !d.is_empty() => {
                let i = inp.u16() as usize % d.len();
                d[i] ^= inp.u8() | 1;
            }
            1 => d.truncate(inp.u16() as usize % (d.len() + 1)),
            2 => d.extend_from_slice(inp.slice(64)),
            _ => {}
        }
    }
    d
}

/// Runs one input; returns what it reached.
pub fn run_datagram(data: &[u8]) -> crate::Reached {
    let mut inp = Input::new(data);
    let mut r = if inp.bool() { Rig::established(true) } else { Rig::new(true) };
    let core_public = public_of(CORE_KEY);
    let mut stranger = boringtun::noise::Tunn::new(STRANGER_KEY.into(), core_public.into(), None, None, 99, None);
    let mut buf = vec![0u8; 2048];
    for _ in 0..64 {
        if inp.is_empty() {
            break;
        }
        let from = endpoint(&mut inp, r.peer_ep);
        match inp.u8() % 7 {
            0 => {
                let d = inp.slice(1500).to_vec();
                r.datagram_from(from, &d);
            }
            1 => {
                // A message with a valid type and size: initiation, response, cookie reply, data.
                let (ty, size) = match inp.u8() % 4 {
                    0 => (1u8, 148usize),
                    1 => (2, 92),
                    2 => (3, 64),
                    _ => (4, 32 + inp.u8() as usize * 16),
                };
                let mut m = vec![ty, 0, 0, 0];
                m.extend_from_slice(inp.bytes(size - 4));
                m.resize(size, 0);
                let m = if ty <= 2 && inp.bool() { with_mac1(&core_public, m) } else { m };
                r.datagram_from(from, &m);
            }
            2 => {
                // A genuine data datagram of the peer's session, perhaps damaged.
                let pkt = inp.slice(1400).to_vec();
                if let Some(d) = r.seal(&pkt) {
                    let d = mutate(&mut inp, d);
                    r.datagram_from(from, &d);
                    r.pump();
                }
            }
            3 => {
                // A replay of something the peer sent, perhaps damaged.
                if !r.sent.is_empty() {
                    let d = r.sent[inp.u8() as usize % r.sent.len()].clone();
                    let d = mutate(&mut inp, d);
                    r.datagram_from(from, &d);
                    r.pump();
                }
            }
            4 => {
                // A handshake initiation from the peer or from a key the core does not know.
                let t = if inp.bool() { &mut r.peer } else { &mut stranger };
                if let boringtun::noise::TunnResult::WriteToNetwork(d) = t.format_handshake_initiation(&mut buf, true) {
                    let d = mutate(&mut inp, d.to_vec());
                    r.datagram_from(from, &d);
                    r.pump();
                }
            }
            5 => {
                let ms = match inp.u8() % 4 {
                    0 => inp.u8() as f64,
                    1 => inp.u16() as f64,
                    2 => inp.u32() as f64,
                    _ => 250.0,
                };
                r.advance(ms);
            }
            _ => {
                // A burst of the same datagram (rate limiting and cookies).
                let d = inp.slice(200).to_vec();
                let d = if inp.bool() { with_mac1(&core_public, d) } else { d };
                for _ in 0..(inp.u8() as usize * 4) {
                    r.datagram_from(from, &d);
                }
            }
        }
        r.core.out.clear();
    }
    let _ = r.core.stats_json();
    r.reached()
}
