//! Endpoint life: dialing producers and collectors, watching stream outputs for their peer's
//! hang-up, the timer's redials and retries, and closing. (What an accept lets in is
//! [`super::accept`]'s.)
//!
//! Owns: the dial policy (backoff per input and per output, logged once per state change), and the one
//! way an endpoint ends ([`close_ep`]): shut down, cancel what is in flight, free the slot
//! (and close the descriptor) only when the last completion has arrived.
//!
//! Endpoint life: `Connecting` (non-blocking connect, waiting for POLLOUT) -> `Up` ->
//! `Closing` (shut down, operations cancelled, waiting for their completions) -> slot freed.

use super::accept::arm_accept;
use super::channel::{Channel, Endpoint, Link, Role};
use super::fileout;
use super::input::{grow_dry_ring, post_reads};
use super::io::{Fd, Op};
use super::output::kick;
use super::splicing::splice_socket;
use super::token::{OpKind, Token};
use super::{errno_str, Cx};
use crate::config::url::{Endpoint as UrlEndpoint, OnFin, Scheme};
use log::{debug, info, warn};
use std::time::Instant;

/// Turns TCP keepalive on for a connection of endpoint `url` (accepted or dialed), unless the
/// endpoint is not TCP or says `keepalive=off`. A peer that vanishes then fails the
/// connection's next read, splice, write or hang-up watch with ETIMEDOUT, which ends it as any
/// other fault does: a producer frees its input, a subscriber its place, a collector is
/// redialed.
pub(crate) fn keep_alive(cx: &mut Cx, url: &UrlEndpoint, fd: Fd) {
    if let Some(k) = url.keepalive() {
        cx.sys.set_keepalive(fd, k);
    }
}

/// Watches an output stream socket for its peer's bytes, FIN or reset (POLLIN|POLLRDHUP, one
/// shot; POLLHUP and POLLERR are always reported). Bytes (and a FIN, which reads as 0 after
/// them) are read by [`super::commands`]. TCP cannot tell a half-close from a close until something
/// is written, and on an idle channel nothing is: so a FIN means "gone" (a subscriber is
/// closed and its place freed, a collector is redialed) unless the output says `on_fin=keep`
/// (for peers such as `nc HOST PORT < /dev/null` that half-close at once and go on reading).
/// A reset ends the connection whatever `on_fin` says.
pub(crate) fn watch_hangup(cx: &mut Cx, ch: &mut Channel, ci: u16, slot: u16) {
    let Some(ep) = ch.ep_mut(slot) else { return };
    if ep.watching || ep.link != Link::Up || ep.talk.is_some() || ep.fin_kept {
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
    let reset = res & i32::from(libc::POLLHUP | libc::POLLERR) != 0;
    if !reset && res & i32::from(libc::POLLIN | libc::POLLRDHUP) != 0 {
        // Bytes, or the FIN after them: read (a FIN reads as 0 once the bytes are taken).
        super::commands::read(cx, ch, ci, slot);
        return;
    }
    peer_ended(cx, ch, ci, slot, reset);
}

/// The peer of a stream output sent its FIN (`reset` false) or reset the connection: a
/// subscriber leaves and a collector is redialed, unless `on_fin=keep` keeps sending after a
/// FIN (the socket is then no longer watched: its FIN stays readable).
pub(crate) fn peer_ended(cx: &mut Cx, ch: &mut Channel, ci: u16, slot: u16, reset: bool) {
    let Some(ep) = ch.ep_mut(slot) else { return };
    let role = ep.role;
    let peer = ep.peer.clone();
    let name = ch.cfg.name.clone();
    let keep = |o: &super::channel::Output| o.cfg.endpoint.opts.on_fin == Some(OnFin::Keep);
    let kept = match role {
        Role::Subscriber { out } | Role::Link { out } => keep(&ch.outputs[out]) && !reset,
        _ => false,
    };
    if kept {
        if let Some(ep) = ch.ep_mut(slot) {
            ep.fin_kept = true;
        }
    }
    match role {
        Role::Subscriber { out } => {
            let o = &mut ch.outputs[out];
            if o.cfg.endpoint.opts.on_fin == Some(OnFin::Keep) && !reset {
                // Not watched again (fin_kept): its FIN stays readable. A subscriber that really left is closed
                // by the first write that fails.
                debug!(
                    "channel {name}: subscriber {peer} of {} closed its sending side; still sending (on_fin=keep)",
                    o.url()
                );
                return;
            }
            let scope = format!("channel {name}: output {}", o.url());
            if cx
                .logs
                .admit(cx.now, &scope, "subscribers left", 20, log::Level::Info)
            {
                let how = if reset { "reset" } else { "closed" };
                info!(
                    "channel {name}: subscriber {peer} of {} left ({how})",
                    ch.outputs[out].url()
                );
            }
            close_ep(cx, ch, ci, slot);
        }
        Role::Link { .. } if super::mqtt_link::said_bye(ch, role) => close_ep(cx, ch, ci, slot),
        Role::Link { out } => {
            let o = &mut ch.outputs[out];
            if o.cfg.endpoint.opts.on_fin == Some(OnFin::Keep) && !reset {
                debug!(
                    "channel {name}: collector {} closed its sending side; still sending (on_fin=keep)",
                    o.url()
                );
                return;
            }
            let mqtt = o.mqtt.is_some();
            o.fault(cx.now, log::Level::Warn, |url| {
                if mqtt {
                    return format!("channel {name}: output {url}: the broker closed the connection; reconnecting");
                }
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
                Role::Link { out } if ch.outputs[out].mqtt.is_some() => {
                    super::mqtt_link::connected(cx, ch, ci, slot, out);
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
                    super::framed::link_up(cx, ch, out);
                    kick(cx, ch, ci, slot);
                    // A spool replays from now, not from the next tick.
                    super::spooling::sent(cx, ch, ci, out);
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
    if ch.cfg.input.scheme == Scheme::Serial {
        return super::serial::open_input(cx, ch, ci, now);
    }
    ch.input_retry_at = None;
    match cx.sys.dial(&ch.cfg.input) {
        Ok(d) => {
            let link = if d.in_progress {
                Link::Connecting
            } else {
                Link::Up
            };
            keep_alive(cx, &ch.cfg.input, d.fd);
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
        Scheme::Tcp | Scheme::Unix | Scheme::Mqtt => {
            cx.sys.dial(&o.cfg.endpoint).map(|d| (d.fd, d.in_progress))
        }
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
            keep_alive(cx, &ch.outputs[oi].cfg.endpoint, fd);
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
        if ch.input.is_none() && ch.cfg.input.scheme.reopens() {
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
    super::mqtt_link::tick(cx, ch, ci, now);
    if !ch.draining {
        super::serial::tick(cx, ch, ci, now);
    }
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
    if ep.talk.is_some() {
        cx.cancel(Token::new(OpKind::PeerRecv, ci, slot, gen));
    }
    if role == Role::Input && ch.commander.sending() == Some((slot, gen)) {
        cx.cancel(Token::new(OpKind::Command, ci, slot, gen));
    }
    let ep = ch.ep_mut(slot).expect("present");
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
        Role::Subscriber { out } => {
            super::commands::left(ch, slot);
            ch.outputs[out].subscribers.retain(|s| *s != slot)
        }
        Role::Link { out } => {
            if ch.outputs[out].link == Some(slot) {
                ch.outputs[out].link = None;
            }
            let ops = ch.ep(slot).map_or(0, |e| e.write_ops);
            super::framed::link_down(cx, ch, out, ops);
            super::mqtt_link::link_down(cx, ch, ci, out);
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
    // A serial port has no end of stream to wait for: it is closed at once.
    let stream_input = ch
        .input
        .filter(|_| !ch.input_is_datagram() && ch.cfg.input.scheme != Scheme::Serial)
        .and_then(|s| ch.ep(s).map(|e| (s, e.link == Link::Up, e.raw_fd())));
    // A datagram input is read on while datagrams wait in its socket (they were accepted by
    // the kernel before the stop), at most its receive buffer's worth, so that a flood that
    // goes on does not hold the stop up: see `input::drain_datagrams`.
    let datagram_input = ch
        .input
        .filter(|_| ch.input_is_datagram())
        .and_then(|s| ch.ep(s).map(|e| (e.link == Link::Up, e.raw_fd())));
    if let Some((_, true, fd)) = stream_input {
        cx.sys.shutdown(fd);
        ch.input_draining = true;
    } else if let Some((true, fd)) = datagram_input.filter(|&(_, fd)| cx.sys.readable(fd)) {
        ch.input_draining = true;
        ch.drain_left = cx.sys.rcvbuf(fd).max(1);
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
