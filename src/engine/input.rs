//! Reading a channel's input: keeping receives in flight (a multishot receive over a
//! provided-buffer ring, linked chains of single receives, or one scattered stream read), and
//! offering what arrives to every output.
//!
//! Owns: read planning (how many buffers a read takes when the pool runs low), the handling of
//! every receive completion (EOF, errors, truncated datagrams, stale generations), and
//! [`deliver`]: one filled buffer offered to every output's queue by reference (the SAME
//! buffer, no copy), with the slow-output decisions of [`super::outq`] acted on.
//!
//! Must never: keep a buffer the kernel may still write (a buffer is `Kernel` from the read's
//! submission to its completion), or deliver a datagram out of order.

use super::buffers::Class;
use super::channel::Link;
use super::channel::{
    Channel, Role, DATAGRAM_HEADROOM, PREFIX, STREAM_READ_BUFFERS, UDP_RECVS_IN_FLIGHT,
};
use super::fileout;
use super::framed;
use super::io::{Completion, Op};
use super::links::close_ep;
use super::output::kick;
use super::outq::{Chunk, Offer};
use super::rings::Datagram;
use super::splicing::splice_in;
use super::token::{OpKind, Token};
use super::{errno_str, Cx};
use crate::config::url::{OnSlow, Scheme};
use crate::config::Framing;
use log::{debug, info, warn};
use std::time::Instant;

/// Keeps the input's receives in flight: several for datagrams, one for a stream.
pub(crate) fn post_reads(cx: &mut Cx, ch: &mut Channel, ci: u16) {
    if ch.draining && !ch.input_draining {
        return;
    }
    if ch.splice.is_some() {
        splice_in(cx, ch, ci);
        return;
    }
    if ch.replaced_reading() {
        return;
    }
    let datagram = ch.input_is_datagram();
    if datagram && ch.input_draining && drain_datagrams(cx, ch, ci) {
        return;
    }
    // A `block` output's queue also shrinks without a write: its subscriber leaves, or a
    // link is dropped as too slow. Whatever emptied it, the channel reads again once every
    // `block` queue is back under half its limit.
    if ch.blocked && ch.may_unblock() {
        ch.blocked = false;
    }
    if ch.blocked && !datagram {
        return;
    }
    // (A drain at a stop reads on without the backoff: its allowance and errors bound it.)
    if datagram && ch.input_retry_at.is_some() && !ch.input_draining {
        return;
    }
    // Over its share of a short pool: its queues drain by their writes, and the batch after
    // one reads again.
    if !datagram && ch.over_share(cx.pool.free_of(Class::Large)) {
        return;
    }
    let Some(slot) = ch.input else { return };
    let Some(ep) = ch.slots.get_mut(slot as usize).and_then(|s| s.as_mut()) else {
        return;
    };
    if ep.link != Link::Up {
        return;
    }
    let class = if datagram && cx.pool.class_size(Class::Small) > DATAGRAM_HEADROOM {
        Class::Small
    } else {
        Class::Large
    };
    let size = cx.pool.class_size(class);
    if !datagram {
        // One read in flight, scattered over up to STREAM_READ_BUFFERS buffers while the pool
        // has plenty free: a quarter of the system calls per byte of one-buffer reads, and
        // every buffer still travels to the outputs on its own. The batch never takes the
        // pool below half: a producer that goes quiet leaves its read waiting with them, and
        // a spool's replay read or staging needs a buffer of what is left (with a short pool,
        // a quiet input's read held every free buffer and the replay never began).
        if !ep.reading.is_empty() {
            return;
        }
        let (free, total) = cx.pool.free_of(Class::Large);
        let n = if free > total / 2 {
            STREAM_READ_BUFFERS.min(free - total / 2)
        } else {
            1
        };
        let fd = ep.raw_fd();
        for _ in 0..n {
            let Some(buf) = cx.pool.take_class(Class::Large) else {
                break;
            };
            ep.reading.push(buf);
        }
        let (first, count) = match ep.reading.first() {
            Some(&b) => (b, ep.reading.len()),
            None => {
                ch.input_starved = true;
                return;
            }
        };
        ch.input_starved = false;
        ch.input_unparking = false;
        let sqe = if count == 1 {
            Op::ReadStream {
                fd,
                buf: first,
                off: 0,
                len: size,
            }
        } else {
            let chunks = ep.reading.iter().map(|&buf| Chunk {
                buf,
                off: 0,
                len: size,
            });
            Op::ReadvStream {
                fd,
                bufs: cx.span(chunks),
            }
        };
        ep.in_flight += 1;
        cx.push(sqe, Token::new(OpKind::Recv, ci, first, ep.gen));
        return;
    }
    if let Some(group) = ep.bufgroup {
        // One multishot receive for the input's life, re-armed when it ends (on_recv_multi),
        // once its ring has a buffer to offer again (all of them may be queued at outputs).
        if ep.multishot {
            return;
        }
        if cx.rings.provided(cx.pool, cx.sys, group) == 0 {
            let now = cx.now;
            ep.dry_since.get_or_insert(now);
        } else {
            ep.dry_since = None;
            ep.multishot = true;
            ep.in_flight += 1;
            let fd = ep.raw_fd();
            cx.push(
                Op::RecvMulti { fd, group },
                Token::new(OpKind::RecvMulti, ci, slot, ep.gen),
            );
        }
        return;
    }
    // Datagrams: one linked chain of receives at a time. Receives pending side by side on
    // one socket complete out of the order in which they took the datagrams; a chain runs
    // them one after another in the kernel, so completions come in datagram order, without a
    // round trip through this loop per datagram. The next chain starts when this one is done.
    if !ep.reading.is_empty() {
        return;
    }
    let fd = ep.raw_fd();
    let gen = ep.gen;
    let mut ops = [(Op::PollIn { fd }, Token::daemon(OpKind::Cancel)); UDP_RECVS_IN_FLIGHT];
    // A chain waits in the kernel, holding its buffers, until datagrams come: an idle input
    // would park a whole chain's buffers. While the pool is short (a `block` output holds most
    // of it), each input parks one, so every input of every channel still gets one.
    let (free, total) = cx.pool.free_of(class);
    let want = if free > total / 2 {
        UDP_RECVS_IN_FLIGHT
    } else {
        1
    };
    let mut n = 0;
    while n < want {
        let Some(buf) = cx.pool.take_class(class) else {
            break;
        };
        ops[n] = (
            Op::RecvDatagram {
                fd,
                buf,
                off: DATAGRAM_HEADROOM,
                len: size - DATAGRAM_HEADROOM,
            },
            Token::new(OpKind::Recv, ci, buf, gen),
        );
        ep.reading.push(buf);
        n += 1;
    }
    ch.input_starved = n == 0;
    if n == 0 {
        return;
    }
    ch.input_unparking = false;
    // The driver submits a chain whole, never cut at a full submission queue.
    cx.chain(&ops[..n]);
    ep.in_flight += n as u32;
}

/// A datagram input read on after SIGTERM (or a reload that stops its channel): once its socket
/// is empty, or it has read its receive buffer's worth (a flood that goes on must not hold the
/// stop up), it is closed. Returns whether it was.
fn drain_datagrams(cx: &mut Cx, ch: &mut Channel, ci: u16) -> bool {
    let Some(slot) = ch.input else {
        ch.input_draining = false;
        return true;
    };
    let Some(fd) = ch.ep(slot).map(|e| e.raw_fd()) else {
        return true;
    };
    if ch.drain_left > 0 && cx.sys.readable(fd) {
        return false;
    }
    debug!(
        "channel {}: input drained ({} bytes of its allowance left)",
        ch.name(),
        ch.drain_left
    );
    ch.input_draining = false;
    close_ep(cx, ch, ci, slot);
    true
}

/// Cancels the reads `ch`'s input has parked on more than one buffer, so that a short pool
/// goes round: reads wait in the kernel, holding their buffers, until data comes, and an idle
/// input's reads would hold them for good while another input has none. Called by the tick
/// while some input is starved. The reads are posted again at the end of the batch, on one
/// buffer each while the pool stays short (see [`post_reads`]).
pub(crate) fn unpark_reads(cx: &mut Cx, ch: &mut Channel, ci: u16) {
    if ch.input_unparking || ch.input_starved || ch.splice.is_some() {
        return;
    }
    let Some(slot) = ch.input else { return };
    let Some(ep) = ch.ep(slot) else { return };
    if ep.link != Link::Up || ep.reading.len() <= 1 {
        return;
    }
    let gen = ep.gen;
    // A stream read is one operation tagged with its first buffer; a datagram chain has one
    // per buffer (cancelling the head cancels the rest, but a head that already completed
    // would leave them parked).
    let tags: Vec<u16> = if ch.input_is_datagram() {
        ep.reading.clone()
    } else {
        ep.reading[..1].to_vec()
    };
    for b in tags {
        cx.cancel(Token::new(OpKind::Recv, ci, b, gen));
    }
    ch.input_unparking = true;
    debug!(
        "channel {}: an input elsewhere has no buffer; giving back the buffers idle reads hold",
        ch.name()
    );
}

/// A receive completed. For receives the token's endpoint field is the buffer index; the
/// endpoint is found by generation.
pub(crate) fn on_recv(cx: &mut Cx, ch: &mut Channel, tok: Token, res: i32) {
    let buf = tok.ep;
    let Some(slot) = ch.slot_of_gen(tok.gen) else {
        // Cannot happen (slots outlive their operations); give the buffer back regardless.
        cx.pool.abandon(buf);
        return;
    };
    let datagram = ch.input_is_datagram();
    let ep = ch.ep_mut(slot).expect("slot found above");
    ep.in_flight -= 1;
    let closing = ep.link == Link::Closing;
    let peer = ep.peer.clone();
    let size = cx.pool.size_of(buf);
    if !datagram {
        // The stream's one read: its buffers are all of `reading`, in order; the bytes fill
        // them front to back.
        let mut bufs = std::mem::take(&mut ep.reading);
        let mut left = res.max(0) as u32;
        for &b in &bufs {
            let n = left.min(size);
            left -= n;
            if n > 0 {
                cx.pool.filled(b);
                framed::on_stream_read(cx, ch, tok.chan, tok.gen, b, n);
            } else {
                cx.pool.abandon(b);
            }
        }
        bufs.clear();
        if let Some(ep) = ch.ep_mut(slot) {
            if ep.reading.is_empty() {
                ep.reading = bufs;
            }
        }
        if (res == -libc::ECANCELED || res == -libc::EINTR) && !closing {
            // Cancelled by `unpark_reads`: its buffers went back to the pool; the read is
            // posted again, on fewer buffers, at the end of the batch.
        } else if res <= 0 && !closing {
            // End of stream or an error: this producer is gone.
            framed::input_ended(cx, ch);
            if ch.cfg.input.scheme == Scheme::Serial {
                ch.stats.errors += 1;
                super::serial::gone(ch, &peer, res);
            } else if res == 0 {
                info!("channel {}: producer {} closed the stream", ch.name(), peer);
            } else {
                ch.stats.errors += 1;
                warn!(
                    "channel {}: producer {peer} lost: input read failed: {}{}",
                    ch.name(),
                    errno_str(res),
                    super::timed_out_hint(res)
                );
            }
            close_ep(cx, ch, tok.chan, slot);
            if ch.cfg.input.scheme.reopens() {
                let d = ch.input_backoff.next_delay();
                ch.input_retry_at = Some(cx.now + d);
            }
        }
        ch.reap_if_idle(slot, cx.sys);
        return;
    }
    ep.reading.retain(|b| *b != buf);
    if res > 0 {
        let n = res as u32;
        if n > size - DATAGRAM_HEADROOM {
            cx.pool.abandon(buf);
            ch.stats.malformed += 1;
            if ch.stats.malformed == 1 {
                warn!(
                    "channel {}: datagram of {n} bytes is larger than datagram_size ({} bytes with 16 bytes of headroom); counted as malformed (raise datagram_size)",
                    ch.name(),
                    size
                );
            }
        } else {
            cx.pool.filled(buf);
            framed::on_datagram(cx, ch, tok.chan, buf, DATAGRAM_HEADROOM, n);
        }
    } else {
        cx.pool.abandon(buf);
        if res == -libc::ECANCELED || res == -libc::EINTR {
            // The rest of a receive chain after a failed (or cancelled) receive, or a receive
            // cancelled while it waited (`unpark_reads`; a cancel may end it with EINTR).
        } else if res == 0 && !closing {
            ch.stats.malformed += 1;
        } else if !closing {
            ch.stats.errors += 1;
            warn!(
                "channel {}: input read failed: {}",
                ch.name(),
                errno_str(res)
            );
            // A UDP socket error (rare): retry after a backoff; a drain at a stop ends here.
            let d = ch.input_backoff.next_delay();
            ch.input_retry_at = Some(cx.now + d);
            ch.drain_failed();
        }
    }
    ch.reap_if_idle(slot, cx.sys);
}

/// A completion of a UDP input's multishot receive: one datagram in a buffer the kernel
/// picked from the input's ring (named in the flags), or the end of the receive (no MORE
/// flag: the ring ran dry with -ENOBUFS, a cancel, an error), after which it is re-armed by
/// post_reads once the ring has buffers again. A completion for an endpoint that is gone
/// (generation mismatch) still gives its buffer back.
pub(crate) fn on_recv_multi(cx: &mut Cx, ch: &mut Channel, tok: Token, c: Completion) {
    let (ci, slot) = (tok.chan, tok.ep);
    let bid = c.buffer();
    let more = c.more();
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        if let Some(b) = bid {
            cx.rings.give_back(cx.pool, cx.mem, b);
        }
        return;
    };
    let group = ep.bufgroup.expect("a multishot receive has a buffer ring");
    let closing = ep.link == Link::Closing;
    if !more {
        ep.in_flight -= 1;
        ep.multishot = false;
    }
    if let Some(b) = bid {
        match cx.rings.take_datagram(cx.pool, cx.mem, group, b, c.res) {
            Datagram::Payload { off, len } if !closing => {
                if len == 0 {
                    cx.pool.release(b);
                    ch.stats.malformed += 1;
                } else {
                    framed::on_datagram(cx, ch, ci, b, off, len);
                }
            }
            Datagram::Payload { .. } => cx.pool.release(b),
            Datagram::Truncated { len } => {
                ch.stats.malformed += 1;
                if ch.stats.malformed == 1 {
                    warn!(
                        "channel {}: datagram of {len} bytes is larger than datagram_size ({} bytes with 16 bytes of headroom); counted as malformed (raise datagram_size)",
                        ch.name(),
                        cx.pool.size_of(b)
                    );
                }
            }
            Datagram::Malformed => ch.stats.malformed += 1,
        }
    }
    if more {
        return;
    }
    if closing {
        // The last completion: nothing can pick from the ring any more.
        cx.rings.close(cx.pool, cx.sys, group);
        if let Some(ep) = ch.ep_mut(slot) {
            ep.bufgroup = None;
        }
        ch.reap_if_idle(slot, cx.sys);
        return;
    }
    ch.stats.rearms += 1;
    if c.res < 0 && c.res != -libc::ENOBUFS && c.res != -libc::ECANCELED && c.res != -libc::EINTR {
        ch.stats.errors += 1;
        warn!(
            "channel {}: input read failed: {}",
            ch.name(),
            errno_str(c.res)
        );
        // A UDP socket error (rare): retry after a backoff; a drain at a stop ends here.
        let d = ch.input_backoff.next_delay();
        ch.input_retry_at = Some(cx.now + d);
        ch.drain_failed();
    }
    // Re-armed right away when buffers are back (they are recycled first), else by the
    // post_reads after the batch that releases one.
    post_reads(cx, ch, ci);
}

/// Offers a filled buffer to every output: `len` bytes at `off`. A datagram keeps
/// [`PREFIX`] free bytes before `off` for the framing length prefix.
pub(crate) fn deliver(
    cx: &mut Cx,
    ch: &mut Channel,
    ci: u16,
    buf: u16,
    off: u32,
    len: u32,
    datagram: bool,
) {
    ch.stats.bytes += u64::from(len);
    if datagram {
        ch.stats.datagrams += 1;
    }
    if ch.watchdog.fed(cx.now) {
        super::idle::data_again(ch);
    }
    if ch.input_draining {
        ch.drain_left = ch.drain_left.saturating_sub(u64::from(len));
    }
    if let Some(p) = ch.publisher.as_mut() {
        let data = cx.pool.bytes(cx.mem, buf, off, len);
        if datagram {
            p.feed_datagram(data);
        } else {
            p.feed_stream(data);
        }
    }
    if datagram && ch.blocked {
        // A block output is full: a datagram input cannot push back, so it drops here.
        ch.stats.drops += 1;
        cx.pool.release(buf);
        return;
    }
    let framed = datagram && ch.framing() == Framing::U32Be;
    if framed {
        cx.pool
            .write_prefix(cx.mem, buf, off - PREFIX, &len.to_be_bytes());
    }
    let plain = Chunk { buf, off, len };
    let Channel {
        outputs,
        slots,
        blocked,
        to_kick,
        to_disconnect,
        batch_kicks,
        framed: cut,
        draining,
        ..
    } = ch;
    // A line channel's datagram outputs get one datagram per line (none: `plain`).
    let (lines, newline) = framed::lines_of(cut);
    let stream_chunk = framed::stream_chunk(plain, framed, newline);
    to_kick.clear();
    to_disconnect.clear();
    for (oi, o) in outputs.iter_mut().enumerate() {
        let chunk = if o.takes_plain() { plain } else { stream_chunk };
        if o.is_link() {
            let up = o
                .link
                .and_then(|s| slots.get(s as usize).and_then(|e| e.as_ref()))
                .is_some_and(|e| e.link == Link::Up);
            let held = super::spooling::held_by_writes(slots, oi);
            let spooled = super::spooling::diverts(cx, o, (ci, oi), (up, held), *draining, chunk);
            if spooled || !up && (o.cfg.on_slow != OnSlow::Block || fileout::dropping(o)) {
                o.stats.drops += u64::from(!spooled);
                continue;
            }
            let chunks = if o.is_datagram() && !lines.is_empty() {
                lines
            } else {
                std::slice::from_ref(&chunk)
            };
            for &chunk in chunks {
                match o.queue.offer(chunk) {
                    Offer::Queued => cx.pool.retain(buf),
                    Offer::QueuedBlocking => {
                        cx.pool.retain(buf);
                        if !*blocked {
                            debug!(
                                "blocked by {}: {} chunks, {} bytes queued; pool {} free",
                                o.cfg.endpoint.url(),
                                o.queue.len(),
                                o.queue.backlog(),
                                cx.pool.free_count()
                            );
                        }
                        *blocked = true;
                    }
                    Offer::Dropped => o.stats.drops += 1,
                    Offer::Disconnect => {
                        // A pushed output that chose `disconnect`: drop its backlog and redial.
                        o.stats.drops += 1;
                        o.stats.disconnects += 1;
                        if let Some(s) = o.link {
                            to_disconnect.push(s);
                        }
                        break;
                    }
                }
            }
            if let Some(s) = o.link {
                if o.is_datagram() {
                    if !batch_kicks.contains(&s) {
                        batch_kicks.push(s);
                    }
                } else {
                    to_kick.push(s);
                }
            }
        } else {
            for &s in &o.subscribers {
                let Some(ep) = slots.get_mut(s as usize).and_then(|e| e.as_mut()) else {
                    continue;
                };
                if ep.link != Link::Up {
                    continue;
                }
                let q = ep.queue.as_mut().expect("subscribers have queues");
                match q.offer(chunk) {
                    Offer::Queued => {
                        cx.pool.retain(buf);
                        to_kick.push(s);
                    }
                    Offer::QueuedBlocking => {
                        cx.pool.retain(buf);
                        *blocked = true;
                        to_kick.push(s);
                    }
                    Offer::Dropped => o.stats.drops += 1,
                    Offer::Disconnect => {
                        o.stats.disconnects += 1;
                        to_disconnect.push(s);
                    }
                }
            }
        }
    }
    cx.pool.release(buf);
    let mut disconnect = std::mem::take(&mut ch.to_disconnect);
    let mut kicks = std::mem::take(&mut ch.to_kick);
    for &s in &disconnect {
        if let Some(ep) = ch.ep(s) {
            match ep.role {
                Role::Subscriber { out } => info!(
                    "channel {}: subscriber {} of {} is too slow ({}): disconnected",
                    ch.name(),
                    ep.peer,
                    ch.outputs[out].url(),
                    ep.queue.as_ref().map_or_else(
                        || format!("backlog over {} bytes", ch.outputs[out].cfg.max_backlog),
                        |q| q.limit_hit()
                    )
                ),
                Role::Link { out } => {
                    warn!(
                        "channel {}: output {} is too slow: backlog dropped, reconnecting",
                        ch.name(),
                        ch.outputs[out].url()
                    );
                    // Every chunk of the backlog is a drop (a chunk a write still carries may
                    // yet reach the old connection: counted all the same, never lost uncounted).
                    let o = &mut ch.outputs[out];
                    for b in o.queue.clear() {
                        o.stats.drops += 1;
                        cx.pool.release(b);
                    }
                    o.retry_at = Some(cx.now);
                    if let Some(ep) = ch.ep_mut(s) {
                        ep.detached = true;
                    }
                }
                _ => {}
            }
        }
        close_ep(cx, ch, ci, s);
    }
    for &s in &kicks {
        kick(cx, ch, ci, s);
    }
    disconnect.clear();
    kicks.clear();
    ch.to_disconnect = disconnect;
    ch.to_kick = kicks;
}

/// A UDP input whose ring stayed dry for a whole tick has its buffers held by an output that
/// does not send them (a stuck `drop` subscriber keeps up to its quota): the ring gets more
/// buffers, so that the outputs that keep up go on getting datagrams, as on the chain path.
pub(crate) fn grow_dry_ring(cx: &mut Cx, ch: &mut Channel, ci: u16, now: Instant) {
    let Some(slot) = ch.input else { return };
    let Some(ep) = ch.ep_mut(slot) else { return };
    let (Some(group), Some(since)) = (ep.bufgroup, ep.dry_since) else {
        return;
    };
    if ep.multishot || now.duration_since(since) < super::TICK {
        return;
    }
    ep.dry_since = None;
    let before = cx.rings.size(group);
    let added = cx.rings.grow(
        cx.pool,
        cx.sys,
        cx.caps.cq_entries,
        Class::Small,
        group,
        usize::from(before.max(2)),
    );
    if added > 0 {
        debug!(
            "channel {}: receive ring dry for a tick (an output holds its buffers): {} -> {} buffers",
            ch.name(),
            before,
            cx.rings.size(group)
        );
    }
    post_reads(cx, ch, ci);
}

#[cfg(test)]
mod tests {
    use crate::engine::buffers::{BufId, Class, State};
    use crate::engine::channel::STREAM_READ_BUFFERS;
    use crate::engine::io::Op;
    use crate::engine::outq::Chunk;
    use crate::engine::testkit::Rig;
    use crate::engine::token::OpKind;

    /// A stream channel over a pool of `count` 4 KiB buffers.
    fn conf(count: u32) -> String {
        format!(
            "[global]\nbuffer_size = 4KiB\nbuffer_count = {count}\ndatagram_count = 0\n\
             [channel s]\ninput = tcp-listen://127.0.0.1:5000\n\
             output = tcp-listen://127.0.0.1:6000\n"
        )
    }

    /// Accepts a producer while only `free` of the pool's `count` buffers are free; returns
    /// the rig, the producer's descriptor and the reads submitted for it.
    fn accept_with_free(count: u32, free: usize) -> (Rig, i32, Vec<Op>) {
        let mut rig = Rig::new(&conf(count));
        for _ in free..count as usize {
            rig.engine.pool.take().expect("a free buffer");
        }
        assert_eq!(
            rig.engine.pool.free_of(Class::Large),
            (free, count as usize)
        );
        let tok = rig.accept_token(rig.fd(0, rig.chan(0).input_listener));
        rig.take();
        let fd = rig.accept_from(tok, None);
        assert_eq!(rig.fd(0, rig.chan(0).input), fd, "producer accepted");
        let reads = rig.subs_of(OpKind::Recv).iter().map(|s| s.op).collect();
        (rig, fd, reads)
    }

    /// The buffers the producer's read holds.
    fn reading(rig: &Rig) -> Vec<BufId> {
        rig.chan(0)
            .ep(rig.chan(0).input.unwrap())
            .unwrap()
            .reading
            .clone()
    }

    #[test]
    fn stream_read_scatters_while_more_than_half_the_pool_is_free() {
        for (free, n) in [(32, STREAM_READ_BUFFERS), (24, 8), (18, 2)] {
            let (rig, fd, reads) = accept_with_free(32, free);
            let [Op::ReadvStream { fd: rfd, bufs }] = reads[..] else {
                panic!("{free} free: one scattered read expected, got {reads:?}");
            };
            assert_eq!(rfd, fd);
            let chunks = rig.fx.span(bufs);
            assert_eq!(chunks.len(), n, "{free} free");
            let held = reading(&rig);
            assert_eq!(held.len(), n);
            for (c, &b) in chunks.iter().zip(&held) {
                assert_eq!(
                    *c,
                    Chunk {
                        buf: b,
                        off: 0,
                        len: 4096
                    }
                );
                assert_eq!(rig.engine.pool.state(b), State::Kernel);
            }
            // The read's token names its first buffer.
            assert_eq!(rig.subs_of(OpKind::Recv)[0].token.ep, held[0]);
            assert_eq!(rig.engine.pool.free_of(Class::Large).0, free - n);
        }
    }

    #[test]
    fn stream_read_takes_one_buffer_at_half_the_pool_or_less() {
        for free in [16, 15, 1] {
            let (rig, fd, reads) = accept_with_free(32, free);
            let held = reading(&rig);
            assert_eq!(held.len(), 1, "{free} free");
            assert_eq!(
                reads,
                [Op::ReadStream {
                    fd,
                    buf: held[0],
                    off: 0,
                    len: 4096
                }],
                "{free} free"
            );
            assert_eq!(rig.engine.pool.state(held[0]), State::Kernel);
            assert_eq!(rig.engine.pool.free_of(Class::Large).0, free - 1);
        }
    }

    #[test]
    fn stream_read_waits_for_a_buffer_when_none_is_free() {
        let (mut rig, fd, reads) = accept_with_free(32, 0);
        assert_eq!(reads, []);
        assert!(reading(&rig).is_empty());
        assert_eq!(
            rig.chan(0)
                .ep(rig.chan(0).input.unwrap())
                .unwrap()
                .in_flight,
            0
        );
        // A buffer comes back: the next batch reads into it, and only it.
        let b = 7;
        rig.engine.pool.abandon(b);
        rig.take();
        rig.after_batch();
        let reads: Vec<Op> = rig.subs_of(OpKind::Recv).iter().map(|s| s.op).collect();
        assert_eq!(
            reads,
            [Op::ReadStream {
                fd,
                buf: b,
                off: 0,
                len: 4096
            }]
        );
    }

    #[test]
    fn stream_read_leaves_half_of_a_small_pool_free() {
        // A quiet producer's read waits with its buffers: the batch takes 4 of 8, not all, so
        // a spool's replay read (or another channel's input) still finds one.
        let (rig, _, reads) = accept_with_free(8, 8);
        let [Op::ReadvStream { bufs, .. }] = reads[..] else {
            panic!("one scattered read expected, got {reads:?}");
        };
        assert_eq!(bufs.n, 4);
        assert_eq!(rig.engine.pool.free_of(Class::Large), (4, 8));
    }
}
