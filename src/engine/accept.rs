//! The accept policy: arming accepts on listening endpoints, and what happens to each
//! connection accepted.
//!
//! Owns: the `allow=` lists, one producer at a time (or `producer = replace`), `max_clients`,
//! the keepalive of every accepted TCP connection, the subscriber's hang-up watch from its
//! first moment, and what an accept that fails says (EMFILE and its kind: the listener stays,
//! the accept is re-armed by the tick).
//!
//! `producer = replace`: a producer that passes `allow=` while another is connected closes the
//! old one ([`super::links::close_ep`]) and becomes the input. The two streams never
//! interleave: whatever the old producer's read in flight returns (it races the cancel) is
//! delivered, and the newcomer's first read waits until that read has completed
//! ([`Channel::replaced_reading`]). On a splicing channel the pipe keeps them apart the same
//! way: one splice-in at a time, so the old producer's bytes already in the pipe (and those of
//! its last splice) go out first, then the newcomer's.

use super::channel::{Channel, Endpoint, Link, Role};
use super::input::post_reads;
use super::io::{Fd, Op};
use super::links::{close_ep, keep_alive, watch_hangup};
use super::outq::OutQueue;
use super::splicing::splice_socket;
use super::token::{OpKind, Token};
use super::{errno_str, Cx};
use crate::config::Producer;
use log::{debug, info, warn};

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
    let recovered = res >= 0 && std::mem::take(&mut ep.accept_failing);
    let closing = ep.link == Link::Closing || ch.draining;
    if recovered {
        info!(
            "channel {}: listener {}: accepting again",
            ch.name(),
            listener_url(ch, role)
        );
    }
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
                // What is open keeps being served; the connection waits in the listen queue
                // and the tick re-arms the accept (at once, the condition would repeat).
                // Logged once when it starts, summed up while it lasts, and once when it ends.
                let url = listener_url(ch, role);
                let scope = format!("channel {}: listener {url}", ch.name());
                if let Some(ep) = ch.ep_mut(slot) {
                    ep.accept_failing = true;
                }
                if cx
                    .logs
                    .admit(cx.now, &scope, "failed accepts", 1, log::Level::Warn)
                {
                    warn!(
                        "{scope}: accept failed: {e}; what is open is still served, new connections wait in the listen queue (retrying every {} ms)",
                        super::TICK.as_millis()
                    );
                }
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

/// The URL of the listener that accepts for `role`.
fn listener_url(ch: &Channel, role: Role) -> String {
    match role {
        Role::OutputListener { out } => ch.outputs[out].url(),
        _ => ch.cfg.input.url(),
    }
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
            let scope = format!("channel {}: input {}", ch.name(), ch.cfg.input.url());
            if !allow.is_empty() && !ip.is_some_and(|ip| allow.iter().any(|c| c.contains(ip))) {
                ch.stats.refused += 1;
                let cause = "producers refused (not in allow=)";
                if cx.logs.admit(cx.now, &scope, cause, 1, log::Level::Warn) {
                    warn!("{scope}: producer {peer} refused: not in allow=");
                }
                cx.sys.close(fd);
                return;
            }
            let replacing = ch.input.filter(|_| ch.cfg.producer == Producer::Replace);
            if ch.input.is_some() && replacing.is_none() {
                ch.stats.refused += 1;
                let cause = "producers refused (one is already connected)";
                if cx.logs.admit(cx.now, &scope, cause, 1, log::Level::Warn) {
                    warn!(
                        "{scope}: second producer {peer} refused: a producer is already connected"
                    );
                }
                cx.sys.close(fd);
                return;
            }
            if let Some(old) = replacing {
                let (old_peer, gen, reading) = ch
                    .ep(old)
                    .map(|e| (e.peer.clone(), e.gen, !e.reading.is_empty()))
                    .unwrap_or_default();
                ch.stats.replaced += 1;
                let cause = "producers replaced";
                if cx.logs.admit(cx.now, &scope, cause, 20, log::Level::Info) {
                    info!("{scope}: producer {old_peer} replaced by {peer}");
                }
                if reading {
                    ch.replaced = Some((old, gen));
                }
                close_ep(cx, ch, ci, old);
            }
            if ch.stats.bytes > 0 || ch.stats.reconnects > 0 || ch.input_faulted {
                ch.stats.reconnects += 1;
            }
            ch.input_faulted = true;
            keep_alive(cx, &ch.cfg.input, fd);
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
            let scope = format!("channel {}: output {}", ch.cfg.name, o.url());
            let allow = &o.cfg.endpoint.opts.allow;
            if !allow.is_empty() && !ip.is_some_and(|ip| allow.iter().any(|c| c.contains(ip))) {
                o.stats.errors += 1;
                let cause = "subscribers refused (not in allow=)";
                if cx.logs.admit(cx.now, &scope, cause, 1, log::Level::Warn) {
                    warn!("{scope}: subscriber {peer} refused: not in allow=");
                }
                cx.sys.close(fd);
                return;
            }
            let max = o.cfg.endpoint.opts.max_clients.unwrap_or(64) as usize;
            if o.subscribers.len() >= max {
                o.stats.errors += 1;
                let cause = "subscribers refused (max_clients reached)";
                if cx.logs.admit(cx.now, &scope, cause, 1, log::Level::Warn) {
                    warn!("{scope}: subscriber {peer} refused: max_clients={max} reached");
                }
                cx.sys.close(fd);
                return;
            }
            if let Some(n) = o.cfg.endpoint.opts.sndbuf {
                cx.sys.set_sndbuf(fd, n);
            }
            keep_alive(cx, &o.cfg.endpoint, fd);
            let mut ep = Endpoint::new(cx.gens.fresh(), Role::Subscriber { out }, fd, Link::Up);
            let quota = super::channel::buffer_quota(buffer_count, channels, o.cfg.on_slow);
            ep.queue = Some(OutQueue::new(o.cfg.on_slow, o.cfg.max_backlog, quota));
            ep.peer = peer.clone();
            o.stats.reconnects += 1;
            if cx.logs.admit(
                cx.now,
                &scope,
                "subscribers connected",
                20,
                log::Level::Info,
            ) {
                info!(
                    "channel {}: subscriber {peer} connected to {}",
                    ch.cfg.name,
                    o.url()
                );
            }
            let slot = ch.insert(ep);
            ch.outputs[out].subscribers.push(slot);
            super::commands::joined(ch, slot);
            watch_hangup(cx, ch, ci, slot);
            super::framed::joined(cx, ch, ci, slot);
        }
        _ => cx.sys.close(fd),
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
    fn a_new_producer_replaces_the_old_one_after_its_last_read() {
        let conf = "[global]\nbuffer_size = 4KiB\nbuffer_count = 32\ndatagram_count = 0\n\
            [channel a]\ninput = tcp-listen://127.0.0.1:5000 allow=10.0.0.0/8\n\
            producer = replace\noutput = tcp-listen://127.0.0.1:6000\n";
        let mut rig = Rig::new(conf);
        let l = rig.fd(0, rig.chan(0).input_listener);
        let old = connect(&mut rig, l, ip("10.0.0.1"));
        let old_read = rig.subs_of(OpKind::Recv)[0].token;
        let old_slot = rig.chan(0).input.unwrap();

        // Outside allow=: refused, the connected producer stays.
        let stranger = connect(&mut rig, l, ip("172.16.0.1"));
        assert_eq!(rig.sys.closes, [stranger]);
        assert_eq!(rig.chan(0).input, Some(old_slot));
        assert_eq!(rig.chan(0).stats.replaced, 0);

        let new = connect(&mut rig, l, ip("10.0.0.2"));
        assert_eq!(rig.fd(0, rig.chan(0).input), new);
        assert_eq!(rig.chan(0).stats.replaced, 1);
        assert_eq!(rig.chan(0).stats.refused, 1);
        // The old producer is shut down and its read cancelled; the newcomer reads only once
        // that read has completed.
        assert_eq!(rig.sys.shutdowns, [old]);
        let cancels = rig.subs_of(OpKind::Cancel);
        assert_eq!(cancels[0].op, Op::Cancel { target: old_read });
        assert!(rig.subs_of(OpKind::Recv).is_empty());
        rig.take();
        rig.after_batch();
        assert!(
            rig.subs_of(OpKind::Recv).is_empty(),
            "the old read is in flight"
        );

        // The old read raced its cancel and got 100 bytes: they are delivered, then its
        // descriptor is closed and the newcomer's first read goes out.
        rig.complete(old_read, 100);
        assert_eq!(rig.chan(0).stats.bytes, 100);
        assert_eq!(rig.sys.closes, [stranger, old]);
        assert!(rig.chan(0).ep(old_slot).is_none_or(|e| e.fd != old));
        rig.after_batch();
        let reads = rig.subs_of(OpKind::Recv);
        assert_eq!(reads.len(), 1);
        assert!(matches!(reads[0].op, Op::ReadvStream { fd, .. } if fd == new));
        assert_eq!(rig.chan(0).replaced, None);
    }

    #[test]
    fn producer_refuse_is_the_default() {
        let rig = Rig::new(CONF);
        assert_eq!(rig.chan(0).cfg.producer, crate::config::Producer::Refuse);
    }

    #[test]
    fn accepted_and_dialed_tcp_connections_get_keepalive() {
        let conf = "[global]\nbuffer_size = 4KiB\nbuffer_count = 32\ndatagram_count = 0\n\
            [channel a]\ninput = tcp-listen://127.0.0.1:5000 keepalive=2s\n\
            output = tcp-listen://127.0.0.1:6000\n\
            output = tcp-listen://127.0.0.1:6001 keepalive=off\n\
            output = tcp://127.0.0.1:7000 keepalive=5m\n\
            output = unix:///run/collector.sock\n\
            [channel b]\ninput = tcp://127.0.0.1:5001\noutput = unix-listen:///run/b.sock\n\
            [channel c]\ninput = unix-listen:///run/c.sock\noutput = udp://127.0.0.1:7001\n";
        let mut rig = Rig::new(conf);
        // Dialed at start: channel a's collectors (tcp 300 s, unix none), b's producer (60 s).
        let dialed = rig.sys.keepalives.clone();
        assert_eq!(dialed.len(), 2, "{dialed:?}");
        assert_eq!(dialed.iter().map(|k| k.1).collect::<Vec<_>>(), [300, 60]);
        let listener = |rig: &Rig, ci: usize, out: Option<usize>| match out {
            None => rig.fd(ci, rig.chan(ci).input_listener),
            Some(o) => rig.fd(ci, rig.chan(ci).outputs[o].listener),
        };
        let listeners = [
            (0, None),
            (0, Some(0)),
            (0, Some(1)),
            (1, Some(0)),
            (2, None),
        ];
        let tokens: Vec<_> = listeners
            .iter()
            .map(|&(ci, out)| rig.accept_token(listener(&rig, ci, out)))
            .collect();
        let froms = [
            ip("127.0.0.1"),
            ip("127.0.0.1"),
            ip("127.0.0.1"),
            None,
            None,
        ];
        let fds: Vec<i32> = tokens
            .into_iter()
            .zip(froms)
            .map(|(tok, from)| rig.accept_from(tok, from))
            .collect();
        let [producer, sub, sub_off, unix_sub, unix_producer] = fds[..] else {
            unreachable!()
        };
        let got = &rig.sys.keepalives[2..];
        assert_eq!(got, [(producer, 2), (sub, 60)]);
        for fd in [sub_off, unix_sub, unix_producer] {
            assert!(rig.sys.keepalives.iter().all(|k| k.0 != fd));
        }
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
