//! Bytes that peers of stream outputs send back toward the relay: subscribers (rtl_tcp
//! clients send 5-byte tuning commands) and collectors.
//!
//! Owns: reading them, discarding them, and with `commands = first` forwarding the first
//! connected subscriber's bytes to the channel's stream producer ([`Commander`]).
//!
//! Why read at all: bytes a peer sends and nobody reads pile up in its socket, and closing a
//! socket with unread bytes sends a reset instead of a FIN, which can destroy the tail of
//! what the relay sent that peer. So every stream output socket is watched with one poll for
//! POLLIN|POLLRDHUP (the hang-up watch of `links`, made readable-aware); only when it fires is
//! a pool buffer taken and one receive submitted into it. A silent peer parks no buffer and
//! costs one poll in flight, as before; a talking one costs a poll and a receive per burst
//! (up to one buffer, 64 KiB by default). A receive of 0 bytes is the peer's FIN, handled as
//! before (`links::peer_ended`); the bytes before it are read first.
//!
//! `commands = first`: the earliest connected subscriber still connected (of any listening
//! output of the channel) is the commander; when it leaves the next earliest takes over
//! (logged once). Its bytes are written to the producer's socket through the ring, in
//! order, one write in flight, at most [`COMMAND_BUFFERS`] buffers waiting; past that, or
//! with no producer connected, they are dropped and counted (`commands_dropped`), never
//! blocking the channel. Everyone else's bytes are discarded.

use super::buffers::{BufId, Class};
use super::channel::{Channel, Link, Role};
use super::io::Op;
use super::links::{peer_ended, watch_hangup};
use super::outq::Chunk;
use super::token::{OpKind, Token};
use super::Cx;
use crate::config::commands::Commands;
use log::info;
use std::collections::VecDeque;

/// Most commander buffers waiting for (or in) the write to the producer.
pub const COMMAND_BUFFERS: usize = 4;

/// The commander election and the bytes on their way to the producer.
#[derive(Debug, Default)]
pub struct Commander {
    /// Subscribers in the order they connected (slot, generation); kept with `commands = first`.
    order: Vec<(u16, u32)>,
    /// Chunks to write to the producer, oldest first; the first is in flight while `sending`.
    queue: VecDeque<Chunk>,
    /// The producer (slot, generation) the write in flight goes to.
    sending: Option<(u16, u32)>,
    /// Some output peer found no free buffer for its bytes: the tick watches it again.
    pub starved: bool,
}

impl Commander {
    /// The producer write in flight, if any (its tag, for a cancel).
    pub fn sending(&self) -> Option<(u16, u32)> {
        self.sending
    }
}

/// A subscriber was accepted: with `commands = first` it joins the line.
pub(crate) fn joined(ch: &mut Channel, slot: u16) {
    if ch.cfg.commands != Commands::First {
        return;
    }
    let Some(ep) = ch.ep(slot) else { return };
    let (gen, peer) = (ep.gen, ep.peer.clone());
    ch.commander.order.push((slot, gen));
    if ch.commander.order.len() == 1 {
        info!(
            "channel {}: subscriber {peer} commands the producer (commands = first)",
            ch.name()
        );
    }
}

/// A subscriber is closing: it leaves the line; the next one takes over if it commanded.
pub(crate) fn left(ch: &mut Channel, slot: u16) {
    let gen = ch.ep(slot).map(|e| e.gen);
    let Some(pos) = ch
        .commander
        .order
        .iter()
        .position(|&(s, g)| s == slot && Some(g) == gen)
    else {
        return;
    };
    ch.commander.order.remove(pos);
    if pos == 0 {
        if let Some(next) = ch.commander.order.first().and_then(|&(s, _)| ch.ep(s)) {
            info!(
                "channel {}: the commanding subscriber left; subscriber {} commands the producer now",
                ch.name(),
                next.peer
            );
        }
    }
}

/// The peer of stream output endpoint `slot` has bytes (or its FIN) to read: one receive
/// into a buffer taken now.
pub(crate) fn read(cx: &mut Cx, ch: &mut Channel, ci: u16, slot: u16) {
    let class = if cx.pool.free_of(Class::Large).0 > 0 {
        Class::Large
    } else {
        Class::Small
    };
    let size = cx.pool.class_size(class);
    let Some(ep) = ch.ep_mut(slot) else { return };
    if ep.link != Link::Up || ep.talk.is_some() {
        return;
    }
    let Some(buf) = cx.pool.take_class(class) else {
        ch.commander.starved = true;
        return;
    };
    ep.talk = Some(buf);
    ep.in_flight += 1;
    let fd = ep.raw_fd();
    cx.push(
        Op::ReadStream {
            fd,
            buf,
            off: 0,
            len: size,
        },
        Token::new(OpKind::PeerRecv, ci, slot, ep.gen),
    );
}

/// The tick: output peers that found no buffer are watched again (their poll fires at once
/// while their bytes wait).
pub(crate) fn tick(cx: &mut Cx, ch: &mut Channel, ci: u16) {
    if !std::mem::take(&mut ch.commander.starved) {
        return;
    }
    for s in 0..ch.slots.len() as u16 {
        // Stream peers only: a file or UDP link has no peer to watch.
        let stream = |role: Role| match role {
            Role::Subscriber { .. } => true,
            Role::Link { out } => ch.outputs[out].file.is_none() && !ch.outputs[out].is_datagram(),
            _ => false,
        };
        let again = ch.ep(s).is_some_and(|e| {
            stream(e.role) && e.link == Link::Up && !e.watching && e.talk.is_none() && !e.fin_kept
        });
        if again {
            watch_hangup(cx, ch, ci, s);
        }
    }
}

/// A receive of an output peer's bytes completed.
pub(crate) fn on_peer_recv(cx: &mut Cx, ch: &mut Channel, tok: Token, res: i32) {
    let (ci, slot) = (tok.chan, tok.ep);
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        return;
    };
    ep.in_flight -= 1;
    let buf = ep.talk.take().expect("a peer receive holds a buffer");
    let closing = ep.link == Link::Closing;
    let gen = ep.gen;
    if closing || res <= 0 {
        cx.pool.abandon(buf);
        if !closing {
            // 0: the peer's FIN (after everything it sent was read); < 0: a reset or an error.
            peer_ended(cx, ch, ci, slot, res < 0);
        }
        ch.reap_if_idle(slot, cx.sys);
        return;
    }
    let n = res as u32;
    if let Role::Link { out } = ep.role {
        if ch.outputs[out].mqtt.is_some() {
            // A broker's packets: decoded by the output's session.
            cx.pool.filled(buf);
            let bytes = cx.pool.bytes(cx.mem, buf, 0, n).to_vec();
            cx.pool.release(buf);
            super::mqtt_link::received(cx, ch, ci, slot, out, &bytes);
            watch_hangup(cx, ch, ci, slot);
            return;
        }
    }
    let commands =
        ch.cfg.commands == Commands::First && ch.commander.order.first() == Some(&(slot, gen));
    if commands {
        cx.pool.filled(buf);
        forward(cx, ch, ci, buf, n);
    } else {
        cx.pool.abandon(buf);
        ch.stats.discarded += u64::from(n);
    }
    watch_hangup(cx, ch, ci, slot);
}

/// Queues the commander's `n` bytes in `buf` (held once) for the producer, or drops them.
fn forward(cx: &mut Cx, ch: &mut Channel, ci: u16, buf: BufId, n: u32) {
    let up = ch
        .input
        .and_then(|s| ch.ep(s))
        .is_some_and(|e| e.link == Link::Up);
    if !up || ch.commander.queue.len() >= COMMAND_BUFFERS {
        ch.stats.commands_dropped += u64::from(n);
        cx.pool.release(buf);
        return;
    }
    ch.commander.queue.push_back(Chunk {
        buf,
        off: 0,
        len: n,
    });
    send_next(cx, ch, ci);
}

/// Starts the write of the oldest waiting chunk to the producer, unless one is in flight.
fn send_next(cx: &mut Cx, ch: &mut Channel, ci: u16) {
    if ch.commander.sending.is_some() {
        return;
    }
    let Some(&chunk) = ch.commander.queue.front() else {
        return;
    };
    let producer = ch.input.and_then(|s| ch.ep_mut(s).map(|e| (s, e)));
    match producer {
        Some((slot, ep)) if ep.link == Link::Up => {
            ep.in_flight += 1;
            let (fd, gen) = (ep.raw_fd(), ep.gen);
            ch.commander.sending = Some((slot, gen));
            cx.push(
                Op::Write {
                    fd,
                    chunk,
                    socket: true,
                },
                Token::new(OpKind::Command, ci, slot, gen),
            );
        }
        _ => drop_waiting(cx, ch),
    }
}

/// Everything waiting for the producer is dropped (it went away, or a write failed).
fn drop_waiting(cx: &mut Cx, ch: &mut Channel) {
    for c in ch.commander.queue.drain(..) {
        ch.stats.commands_dropped += u64::from(c.len);
        cx.pool.release(c.buf);
    }
}

/// A write of commander bytes to the producer completed.
pub(crate) fn on_command_sent(cx: &mut Cx, ch: &mut Channel, tok: Token, res: i32) {
    let (ci, slot) = (tok.chan, tok.ep);
    ch.commander.sending = None;
    let live = match ch.ep_gen(slot, tok.gen) {
        Some(ep) => {
            ep.in_flight -= 1;
            ep.link == Link::Up
        }
        None => false,
    };
    if res > 0 {
        // Written, even when the producer is closing by now (the write raced the cancel).
        let front = ch.commander.queue.front_mut().expect("the chunk in flight");
        let n = (res as u32).min(front.len);
        ch.stats.commands += u64::from(n);
        front.off += n;
        front.len -= n;
        if front.len == 0 {
            let done = ch.commander.queue.pop_front().expect("present");
            cx.pool.release(done.buf);
        }
    }
    if res > 0 && live {
        send_next(cx, ch, ci);
    } else {
        drop_waiting(cx, ch);
    }
    ch.reap_if_idle(slot, cx.sys);
}
