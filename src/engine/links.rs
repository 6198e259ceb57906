//! Endpoint life: accepting producers and subscribers, dialing producers and collectors,
//! watching a collector for its peer's hang-up, the timer's redials and retries, and closing.
//!
//! Owns: the accept policy (the `allow=` list, one producer at a time, `max_clients`), the
//! dial policy (backoff per input and per output, logged once per state change), and the one
//! way an endpoint ends ([`close_ep`]): shut down, cancel what is in flight, free the slot
//! (and close the descriptor) only when the last completion has arrived.
//!
//! Endpoint life: `Connecting` (non-blocking connect, waiting for POLLOUT) -> `Up` ->
//! `Closing` (shut down, operations cancelled, waiting for their completions) -> slot freed.

use super::channel::{Channel, Endpoint, Link, Role};
use super::fileout;
use super::input::{grow_dry_ring, post_reads};
use super::io::{Fd, Op};
use super::output::kick;
use super::outq::OutQueue;
use super::splicing::splice_socket;
use super::token::{OpKind, Token};
use super::{errno_str, Cx};
use crate::config::url::{OnFin, Scheme};
use log::{debug, info, warn};
use std::time::Instant;

/// Watches an output stream socket for its peer's FIN (POLLRDHUP, one shot). TCP cannot tell a
/// half-close from a close until something is written, so a FIN alone never ends a
/// subscriber (`nc HOST PORT < /dev/null` half-closes at once and goes on reading); for a
/// collector it means "gone, redial" unless the output says `on_fin=keep`.
pub(crate) fn watch_hangup(cx: &mut Cx, ch: &mut Channel, ci: u16, slot: u16) {
    let Some(ep) = ch.ep_mut(slot) else { return };
    if ep.watching || ep.link != Link::Up {
        return;
    }
    ep.watching = true;
    ep.in_flight += 1;
    let fd = ep.raw_fd();
    cx.push(
        Op::PollHangup { fd },
        Token::new(OpKind::Hangup, ci, slot, ep.gen),
    );
}

pub(crate) fn on_hangup(cx: &mut Cx, ch: &mut Channel, tok: Token, res: i32) {
    let (ci, slot) = (tok.chan, tok.ep);
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        return;
    };
    ep.in_flight -= 1;
    ep.watching = false;
    if ep.link == Link::Closing || res < 0 {
        ch.reap_if_idle(slot, cx.sys);
        return;
    }
    let role = ep.role;
    let peer = ep.peer.clone();
    let name = ch.cfg.name.clone();
    match role {
        Role::Subscriber { out } => {
            // Not re-armed: POLLRDHUP stays set. A subscriber that really left is closed by
            // the first write that fails.
            debug!(
                "channel {name}: subscriber {peer} of {} closed its sending side; still sending",
                ch.outputs[out].url()
            );
        }
        Role::Link { out } => {
            let o = &mut ch.outputs[out];
            if o.cfg.endpoint.opts.on_fin == Some(OnFin::Keep) {
                debug!(
                    "channel {name}: collector {} closed its sending side; still sending (on_fin=keep)",
                    o.url()
                );
                return;
            }
            o.fault(cx.now, log::Level::Warn, |url| {
                format!(
                "channel {name}: output {} closed by the peer; reconnecting (data not yet handed to the old connection is kept; on_fin=keep if this collector only half-closes)",
                url
                )
            });
            close_ep(cx, ch, ci, slot);
        }
        _ => {}
    }
}

/// Arms an accept on a listening endpoint.
pub(crate) fn arm_accept(cx: &mut Cx, ch: &mut Channel, ci: u16, slot: u16) {
    let Some(ep) = ch.ep_mut(slot) else { return };
    if ep.accepting || ep.link != Link::Up {
        return;
    }
    ep.accepting = true;
    ep.in_flight += 1;
    let fd = ep.raw_fd();
    cx.push(
        Op::Accept { fd },
        Token::new(OpKind::Accept, ci, slot, ep.gen),
    );
}

pub(crate) fn on_accept(
    cx: &mut Cx,
    ch: &mut Channel,
    tok: Token,
    res: i32,
    more: bool,
    quota_of: (u32, usize),
) {
    let ci = tok.chan;
    let slot = tok.ep;
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        if res >= 0 {
            cx.sys.close(res);
        }
        return;
    };
    if !more {
        ep.in_flight -= 1;
        ep.accepting = false;
    }
    let role = ep.role;
    let closing = ep.link == Link::Closing || ch.draining;
    if res >= 0 {
        let fd = res;
        if closing {
            cx.sys.close(fd);
        } else {
            accepted(cx, ch, ci, role, fd, quota_of);
        }
    } else if !closing && res != -libc::ECANCELED {
        let e = errno_str(res);
        match -res {
            libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS => {
                warn!(
                    "channel {}: accept failed: {e}; retrying shortly",
                    ch.name()
                );
                // Re-armed by the tick, not at once (the condition would repeat).
                ch.reap_if_idle(slot, cx.sys);
                return;
            }
            _ => debug!("channel {}: accept: {e}", ch.name()),
        }
    }
    if !more && !closing {
        arm_accept(cx, ch, ci, slot);
    }
    ch.reap_if_idle(slot, cx.sys);
}

pub(crate) fn accepted(
    cx: &mut Cx,
    ch: &mut Channel,
    ci: u16,
    role: Role,
    fd: Fd,
    (buffer_count, channels): (u32, usize),
) {
    let (peer, ip) = cx.sys.peer(fd);
    match role {
        Role::InputListener => {
            let allow = &ch.cfg.input.opts.allow;
            if !allow.is_empty() && !ip.is_some_and(|ip| allow.iter().any(|c| c.contains(ip))) {
                ch.stats.refused += 1;
                warn!(
                    "channel {}: producer {peer} refused: not in allow=",
                    ch.name()
                );
                cx.sys.close(fd);
                return;
            }
            if ch.input.is_some() {
                ch.stats.refused += 1;
                warn!(
                    "channel {}: second producer {peer} refused: a producer is already connected",
                    ch.name()
                );
                cx.sys.close(fd);
                return;
            }
            if ch.stats.bytes > 0 || ch.stats.reconnects > 0 || ch.input_faulted {
                ch.stats.reconnects += 1;
            }
            ch.input_faulted = true;
            splice_socket(cx, ch, fd);
            let mut ep = Endpoint::new(cx.gens.fresh(), Role::Input, fd, Link::Up);
            ep.peer = peer.clone();
            let slot = ch.insert(ep);
            ch.input = Some(slot);
            info!("channel {}: producer {peer} connected", ch.name());
            post_reads(cx, ch, ci);
        }
        Role::OutputListener { out } => {
            let o = &mut ch.outputs[out];
            let allow = &o.cfg.endpoint.opts.allow;
            if !allow.is_empty() && !ip.is_some_and(|ip| allow.iter().any(|c| c.contains(ip))) {
                o.stats.errors += 1;
                warn!(
                    "channel {}: subscriber {peer} of {} refused: not in allow=",
                    ch.cfg.name,
                    o.url()
                );
                cx.sys.close(fd);
                return;
            }
            let max = o.cfg.endpoint.opts.max_clients.unwrap_or(64) as usize;
            if o.subscribers.len() >= max {
                o.stats.errors += 1;
                warn!(
                    "channel {}: subscriber {peer} of {} refused: max_clients={max} reached",
                    ch.cfg.name,
                    o.url()
                );
                cx.sys.close(fd);
                return;
            }
            if let Some(n) = o.cfg.endpoint.opts.sndbuf {
                cx.sys.set_sndbuf(fd, n);
            }
            let mut ep = Endpoint::new(cx.gens.fresh(), Role::Subscriber { out }, fd, Link::Up);
            let quota = super::channel::buffer_quota(buffer_count, channels, o.cfg.on_slow);
            ep.queue = Some(OutQueue::new(o.cfg.on_slow, o.cfg.max_backlog, quota));
            ep.peer = peer.clone();
            o.stats.reconnects += 1;
            info!(
                "channel {}: subscriber {peer} connected to {}",
                ch.cfg.name,
                o.url()
            );
            let slot = ch.insert(ep);
            ch.outputs[out].subscribers.push(slot);
            watch_hangup(cx, ch, ci, slot);
        }
        _ => cx.sys.close(fd),
    }
}

pub(crate) fn on_connect(cx: &mut Cx, ch: &mut Channel, tok: Token, res: i32) {
    let ci = tok.chan;
    let slot = tok.ep;
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        return;
    };
    ep.in_flight -= 1;
    if ep.link == Link::Closing {
        ch.reap_if_idle(slot, cx.sys);
        return;
    }
    let result = if res < 0 {
        Err(errno_str(res))
    } else {
        cx.sys.finish_connect(ep.raw_fd())
    };
    connected(cx, ch, ci, slot, result);
}

/// A connect finished (at once or after POLLOUT).
pub(crate) fn connected(
    cx: &mut Cx,
    ch: &mut Channel,
    ci: u16,
    slot: u16,
    result: std::io::Result<()>,
) {
    let Some(ep) = ch.ep_mut(slot) else { return };
    let role = ep.role;
    match result {
        Ok(()) => {
            ep.link = Link::Up;
            let fd = ep.raw_fd();
            splice_socket(cx, ch, fd);
            match role {
                Role::Input => {
                    ch.input_backoff.reset();
                    if ch.input_faulted {
                        ch.stats.reconnects += 1;
                    }
                    ch.input_faulted = true;
                    info!(
                        "channel {}: connected to producer {}",
                        ch.name(),
                        ch.cfg.input.url()
                    );
                    post_reads(cx, ch, ci);
                }
                Role::Link { out } if ch.outputs[out].file.is_some() => {
                    fileout::opened(ch, out);
                    kick(cx, ch, ci, slot);
                }
                Role::Link { out } => {
                    let o = &mut ch.outputs[out];
                    o.backoff.reset();
                    if o.connected_once {
                        o.stats.reconnects += 1;
                        info!("channel {}: output {} reconnected", ch.cfg.name, o.url());
                    } else {
                        info!("channel {}: output {} connected", ch.cfg.name, o.url());
                    }
                    o.connected_once = true;
                    o.faulted = false;
                    if o.scheme() != Scheme::Udp && o.file.is_none() {
                        watch_hangup(cx, ch, ci, slot);
                    }
                    kick(cx, ch, ci, slot);
                }
                _ => {}
            }
        }
        Err(e) => {
            match role {
                Role::Input => {
                    ch.stats.errors += 1;
                    let d = ch.input_backoff.next_delay();
                    if ch.input_backoff.failures() == 1 {
                        warn!(
                            "channel {}: cannot connect to producer {}: {e}; retrying with backoff",
                            ch.name(),
                            ch.cfg.input.url()
                        );
                    }
                    ch.input_retry_at = Some(cx.now + d);
                }
                Role::Link { out } => {
                    let o = &mut ch.outputs[out];
                    o.fault(cx.now, log::Level::Warn, |url| {
                        format!(
                        "channel {}: cannot connect to {}: {e}; retrying with backoff (block: data is kept)",
                        ch.cfg.name,
                        url
                        )
                    });
                }
                _ => {}
            }
            close_ep(cx, ch, ci, slot);
        }
    }
}

pub(crate) fn dial_input(cx: &mut Cx, ch: &mut Channel, ci: u16, now: Instant) {
    ch.input_retry_at = None;
    match cx.sys.dial(&ch.cfg.input) {
        Ok(d) => {
            let link = if d.in_progress {
                Link::Connecting
            } else {
                Link::Up
            };
            let mut ep = Endpoint::new(cx.gens.fresh(), Role::Input, d.fd, link);
            ep.peer = ch.cfg.input.url();
            let slot = ch.insert(ep);
            ch.input = Some(slot);
            start_connect(cx, ch, ci, slot, d.in_progress);
        }
        Err(e) => {
            ch.stats.errors += 1;
            let d = ch.input_backoff.next_delay();
            if ch.input_backoff.failures() == 1 {
                warn!(
                    "channel {}: cannot dial producer {}: {e}; retrying",
                    ch.name(),
                    ch.cfg.input.url()
                );
            }
            ch.input_retry_at = Some(now + d);
        }
    }
}

pub(crate) fn dial_output(cx: &mut Cx, ch: &mut Channel, ci: u16, oi: usize, now: Instant) {
    let o = &mut ch.outputs[oi];
    o.retry_at = None;
    let res = match o.scheme() {
        Scheme::Tcp | Scheme::Unix => cx.sys.dial(&o.cfg.endpoint).map(|d| (d.fd, d.in_progress)),
        Scheme::Udp => cx.sys.udp_output(&o.cfg.endpoint).map(|fd| (fd, false)),
        Scheme::File => match o.file.as_mut() {
            Some(f) => cx.sys.open_append(&f.path).map(|(fd, size)| {
                f.size = size;
                (fd, false)
            }),
            None => return,
        },
        _ => return,
    };
    match res {
        Ok((fd, in_progress)) => {
            let link = if in_progress {
                Link::Connecting
            } else {
                Link::Up
            };
            let slot = ch.insert(Endpoint::new(
                cx.gens.fresh(),
                Role::Link { out: oi },
                fd,
                link,
            ));
            ch.outputs[oi].link = Some(slot);
            start_connect(cx, ch, ci, slot, in_progress);
        }
        Err(e) => {
            let hint = if o.file.is_some() && e.raw_os_error() == Some(libc::ENOENT) {
                " (its directory is missing: it is not created)"
            } else {
                ""
            };
            o.fault(now, log::Level::Warn, |url| {
                format!(
                    "channel {}: cannot open {}: {e}{hint}; retrying with backoff",
                    ch.cfg.name, url
                )
            });
        }
    }
}

pub(crate) fn start_connect(cx: &mut Cx, ch: &mut Channel, ci: u16, slot: u16, in_progress: bool) {
    if in_progress {
        let ep = ch.ep_mut(slot).expect("just inserted");
        ep.in_flight += 1;
        let fd = ep.raw_fd();
        cx.push(
            Op::PollOut { fd },
            Token::new(OpKind::Connect, ci, slot, ep.gen),
        );
    } else {
        connected(cx, ch, ci, slot, Ok(()));
    }
}

/// Per-channel timer work: redials, retries, accept re-arming, heartbeats.
pub(crate) fn tick_channel(
    cx: &mut Cx,
    ch: &mut Channel,
    ci: u16,
    now: Instant,
    shutting_down: bool,
) {
    if let Some(p) = ch.publisher.as_mut() {
        p.tick();
    }
    let due = |t: Option<Instant>| t.is_some_and(|t| now >= t);
    if !ch.draining {
        if ch.input.is_none() && matches!(ch.cfg.input.scheme, Scheme::Tcp | Scheme::Unix) {
            if due(ch.input_retry_at) || ch.input_retry_at.is_none() {
                dial_input(cx, ch, ci, now);
            }
        } else if ch.input_is_datagram() && due(ch.input_retry_at) {
            ch.input_retry_at = None;
            post_reads(cx, ch, ci);
        }
        grow_dry_ring(cx, ch, ci, now);
        if let Some(l) = ch.input_listener {
            arm_accept(cx, ch, ci, l);
        }
        for oi in 0..ch.outputs.len() {
            if let Some(l) = ch.outputs[oi].listener {
                arm_accept(cx, ch, ci, l);
            }
        }
    }
    fileout::tick(cx, ch, ci, now);
    for oi in 0..ch.outputs.len() {
        let o = &ch.outputs[oi];
        if !o.is_link() || !due(o.retry_at) {
            continue;
        }
        let pending = ch.output_pending(oi);
        // While shutting down, only outputs with something left to flush are redialed.
        if shutting_down && !pending {
            continue;
        }
        // A channel stopped by a reload redials only while it still flushes.
        if ch.draining && !shutting_down && (!pending || ch.drain_deadline.is_none()) {
            continue;
        }
        match o.link {
            // A file closed after a fault is opened again once its last write completed.
            None if o.file.is_some() && fileout::writing(ch, oi) => {}
            None => dial_output(cx, ch, ci, oi, now),
            Some(slot) => {
                // A file write that failed: try it again.
                ch.outputs[oi].retry_at = None;
                kick(cx, ch, ci, slot);
            }
        }
    }
}

/// Begins closing an endpoint: shut the socket down and cancel what is in flight; the slot is
/// freed when the last completion arrives.
pub(crate) fn close_ep(cx: &mut Cx, ch: &mut Channel, ci: u16, slot: u16) {
    let Some(ep) = ch.ep_mut(slot) else { return };
    if ep.link == Link::Closing {
        return;
    }
    let was_connecting = ep.link == Link::Connecting;
    ep.link = Link::Closing;
    let gen = ep.gen;
    let role = ep.role;
    let fd = ep.raw_fd();
    let is_file = matches!(role, Role::Link { out } if ch.outputs[out].file.is_some());
    let ep = ch.ep_mut(slot).expect("present");
    if !is_file {
        cx.sys.shutdown(fd);
    }
    for &b in &ep.reading {
        cx.cancel(Token::new(OpKind::Recv, ci, b, gen));
    }
    if ep.multishot {
        // Its final completion closes the buffer ring (on_recv_multi).
        cx.cancel(Token::new(OpKind::RecvMulti, ci, slot, gen));
    } else if let Some(g) = ep.bufgroup.take() {
        // Not armed (waiting for buffers, or after its end): nothing picks from the ring.
        cx.rings.close(cx.pool, cx.sys, g);
    }
    if ep.accepting {
        cx.cancel(Token::new(OpKind::Accept, ci, slot, gen));
    }
    if ep.watching {
        cx.cancel(Token::new(OpKind::Hangup, ci, slot, gen));
    }
    if ep.splicing {
        let kind = if role == Role::Input {
            OpKind::SpliceIn
        } else {
            OpKind::SpliceOut
        };
        cx.cancel(Token::new(kind, ci, slot, gen));
    }
    if was_connecting {
        cx.cancel(Token::new(OpKind::Connect, ci, slot, gen));
    }
    let queued = ep.queue.as_mut().map(|q| q.clear()).unwrap_or_default();
    for b in queued {
        cx.pool.release(b);
    }
    match role {
        Role::Input => {
            if ch.input == Some(slot) {
                ch.input = None;
            }
        }
        Role::InputListener => ch.input_listener = None,
        Role::OutputListener { out } => ch.outputs[out].listener = None,
        Role::Subscriber { out } => ch.outputs[out].subscribers.retain(|s| *s != slot),
        Role::Link { out } => {
            if ch.outputs[out].link == Some(slot) {
                ch.outputs[out].link = None;
            }
        }
    }
    ch.reap_if_idle(slot, cx.sys);
}

/// Closes what brings data or subscribers into a channel: its input, the input's listener and
/// the outputs' listeners. Outputs and subscribers stay open to flush what they hold.
pub(crate) fn close_intake(cx: &mut Cx, ch: &mut Channel, ci: u16) {
    // A connected stream input is shut down, not closed: a read returns what its socket
    // already holds, then the end of stream, which closes it as any producer's FIN does. The
    // drain is bounded by the shutdown or reload deadline, which closes whatever is left.
    let stream_input = ch
        .input
        .filter(|_| !ch.input_is_datagram())
        .and_then(|s| ch.ep(s).map(|e| (s, e.link == Link::Up, e.raw_fd())));
    if let Some((_, true, fd)) = stream_input {
        cx.sys.shutdown(fd);
        ch.input_draining = true;
    } else if let Some(slot) = ch.input {
        close_ep(cx, ch, ci, slot);
    }
    if let Some(slot) = ch.input_listener {
        close_ep(cx, ch, ci, slot);
    }
    for oi in 0..ch.outputs.len() {
        if let Some(l) = ch.outputs[oi].listener {
            close_ep(cx, ch, ci, l);
        }
    }
}

/// Closes every endpoint of a channel still open, syncing output files first.
pub(crate) fn close_all(cx: &mut Cx, ch: &mut Channel, ci: u16) {
    for s in 0..ch.slots.len() as u16 {
        let Some(e) = ch.ep(s) else { continue };
        if e.link == Link::Closing {
            continue;
        }
        if matches!(e.role, Role::Link { out } if ch.outputs[out].file.is_some()) {
            cx.sys.fsync(e.fd);
        }
        close_ep(cx, ch, ci, s);
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::channel::Role;
    use crate::engine::io::Op;
    use crate::engine::testkit::Rig;
    use crate::engine::token::OpKind;
    use std::net::IpAddr;

    const CONF: &str = "[global]\nbuffer_size = 4KiB\nbuffer_count = 32\ndatagram_count = 0\n\
        [channel a]\ninput = tcp-listen://127.0.0.1:5000 allow=10.0.0.0/8\n\
        output = tcp-listen://127.0.0.1:6000 max_clients=2 allow=192.168.0.0/16\n";

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// Completes the accept armed on listener `fd` with a peer at `from`; returns the accepted
    /// descriptor. What the engine submitted before is taken first.
    fn connect(rig: &mut Rig, fd: i32, from: Option<IpAddr>) -> i32 {
        let tok = rig.accept_token(fd);
        rig.take();
        rig.accept_from(tok, from)
    }

    #[test]
    fn producers_outside_allow_and_second_producers_are_refused() {
        let mut rig = Rig::new(CONF);
        let l = rig.fd(0, rig.chan(0).input_listener);

        let outside = connect(&mut rig, l, ip("172.16.0.1"));
        assert_eq!(rig.sys.closes, [outside]);
        assert_eq!(rig.chan(0).stats.refused, 1);
        assert_eq!(rig.chan(0).input, None);
        // Nothing is read; the accept is armed again.
        let ops: Vec<Op> = rig.fx.subs.iter().map(|s| s.op).collect();
        assert_eq!(ops, [Op::Accept { fd: l }]);

        // A peer without an address (a Unix socket) is not in any allow= range.
        let unnamed = connect(&mut rig, l, None);
        assert_eq!(rig.sys.closes, [outside, unnamed]);
        assert_eq!(rig.chan(0).stats.refused, 2);

        let first = connect(&mut rig, l, ip("10.1.2.3"));
        assert_eq!(rig.fd(0, rig.chan(0).input), first);
        assert_eq!(rig.chan(0).stats.refused, 2);
        assert_eq!(rig.sys.closes, [outside, unnamed]);
        assert!(rig
            .subs_of(OpKind::Recv)
            .iter()
            .all(|s| matches!(s.op, Op::ReadvStream { fd, .. } if fd == first)));
        assert_eq!(rig.subs_of(OpKind::Recv).len(), 1);

        // Allowed, but one producer is already connected.
        let second = connect(&mut rig, l, ip("10.9.9.9"));
        assert_eq!(rig.sys.closes, [outside, unnamed, second]);
        assert_eq!(rig.chan(0).stats.refused, 3);
        assert_eq!(rig.fd(0, rig.chan(0).input), first);
        assert!(rig.subs_of(OpKind::Recv).is_empty());
        // Refused sockets are closed, never shut down (nothing was in flight on them).
        assert_eq!(rig.sys.shutdowns, []);
    }

    #[test]
    fn subscribers_refused_at_max_clients_and_outside_allow() {
        let mut rig = Rig::new(CONF);
        let l = rig.fd(0, rig.chan(0).outputs[0].listener);
        let subscriber_fds = |rig: &Rig| -> Vec<i32> {
            let ch = rig.chan(0);
            let subs = &ch.outputs[0].subscribers;
            subs.iter().map(|&s| rig.fd(0, Some(s))).collect()
        };

        // Below max_clients=2: accepted, with a queue and a hang-up watch.
        let s1 = connect(&mut rig, l, ip("192.168.1.1"));
        let s2 = connect(&mut rig, l, ip("192.168.1.2"));
        assert_eq!(subscriber_fds(&rig), [s1, s2]);
        let slot2 = *rig.chan(0).outputs[0].subscribers.last().unwrap();
        let ep = rig.chan(0).ep(slot2).unwrap();
        assert_eq!(ep.role, Role::Subscriber { out: 0 });
        assert!(ep.queue.is_some());
        assert_eq!(rig.subs_of(OpKind::Hangup)[0].op, Op::PollHangup { fd: s2 });
        assert_eq!(rig.chan(0).outputs[0].stats.reconnects, 2);
        assert_eq!(rig.sys.closes, []);

        // At exactly max_clients: refused.
        let s3 = connect(&mut rig, l, ip("192.168.1.3"));
        assert_eq!(rig.sys.closes, [s3]);
        assert_eq!(subscriber_fds(&rig), [s1, s2]);
        assert_eq!(rig.chan(0).outputs[0].stats.errors, 1);
        assert!(rig.subs_of(OpKind::Hangup).is_empty());

        // Outside allow=: refused, counted on the output (not as a refused producer).
        let outside = connect(&mut rig, l, ip("10.0.0.1"));
        assert_eq!(rig.sys.closes, [s3, outside]);
        assert_eq!(rig.chan(0).outputs[0].stats.errors, 2);
        assert_eq!(rig.chan(0).stats.refused, 0);
        assert_eq!(rig.chan(0).outputs[0].stats.reconnects, 2);
        assert_eq!(rig.sys.shutdowns, []);
    }

    #[test]
    fn output_allow_admits_exactly_its_range() {
        // 192.168.0.0/16: the first address past it is refused while the output has no
        // subscriber at all; its last address is admitted.
        let mut rig = Rig::new(CONF);
        let l = rig.fd(0, rig.chan(0).outputs[0].listener);
        let outside = connect(&mut rig, l, ip("192.169.0.1"));
        assert_eq!(rig.sys.closes, [outside]);
        assert!(rig.chan(0).outputs[0].subscribers.is_empty());
        let inside = connect(&mut rig, l, ip("192.168.255.255"));
        assert_eq!(rig.sys.closes, [outside]);
        let s = rig.chan(0).outputs[0].subscribers[0];
        assert_eq!(rig.fd(0, Some(s)), inside);
    }
}
