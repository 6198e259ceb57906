//! Writing to outputs: planning the next write of an output endpoint from its queue, and
//! acting on every write completion.
//!
//! Owns: write planning (one gathered write of up to [`IOV_MAX`] chunks on a stream or file,
//! one segmented send per run of equal-sized datagrams, zero-copy sends of large chunks), file
//! rotation (through [`fileout`]), and what a write completion means: bytes leave the queue and
//! release their buffers, short writes go again, faults close and redial links, drop
//! datagrams, or close and reopen files, each logged once per state change.
//!
//! Must never: release a buffer a write in flight still holds (every chunk of a write holds its
//! own reference until the write's completion; a zero-copy send's record holds one more until
//! the kernel's notification).

use super::channel::{Channel, Endpoint, Link, Role};
use super::fileout;
use super::io::{Completion, Op};
use super::links::close_ep;
use super::outq::{self, OutQueue};
use super::splicing::splice_out;
use super::token::{OpKind, Token};
use super::{errno_str, input::post_reads, Cx, GSO_BYTES, GSO_SEGMENTS, IOV_MAX};
use crate::config::url::Scheme;
use log::{debug, info, warn};
use std::time::Duration;

/// How long a refused UDP destination must take sends without a refusal before it counts as
/// recovered (and says so): a closed port refuses every other datagram, so a recovery on the
/// first good send would log a fault and a recovery per datagram.
pub const DATAGRAM_RECOVERY: Duration = Duration::from_secs(1);

/// Starts the next writes of an output endpoint if none are in flight: one gathered write of
/// up to [`IOV_MAX`] queued chunks on a stream or file (a single fixed-buffer write when only
/// one chunk waits); on a datagram output, one segmented send (UDP_SEGMENT) for a run of
/// equal-sized datagrams at the front of the queue ([`outq::segment_run`], up to
/// [`GSO_SEGMENTS`]), or else up to [`IOV_MAX`] datagram sends.
///
/// A segmented send costs the kernel one trip through the socket and IP layers for the whole
/// run, which is most of a datagram send's cost: on the relay bench's 1-to-4 fan-out it took
/// the CPU per datagram from 1.06x to 0.38x of the blocking relay's. Datagram outputs are
/// kicked once per batch of completions ([`super::Engine::after_batch`]), so that one send carries
/// every datagram the batch delivered.
///
/// Datagram sends are not linked (IOSQE_IO_LINK): each step of a linked chain waits for a
/// task-work run, which measured 5% loss on a 5000-datagram burst against none unlinked. A
/// send on a UDP socket completes inline at submission unless the socket's send buffer is
/// full, so sends leave in submission order; the outputs get a 4 MiB send buffer to keep that
/// so (only a send queued behind a full buffer could be overtaken, and the next batch waits
/// for the whole previous one).
pub(crate) fn kick(cx: &mut Cx, ch: &mut Channel, ci: u16, slot: u16) {
    if ch.splice.is_some() {
        splice_out(cx, ch, ci, slot);
        return;
    }
    let Some(ep) = ch.ep(slot) else { return };
    if ep.link != Link::Up || ep.write_ops > 0 {
        return;
    }
    let out = match ep.role {
        Role::Subscriber { out } | Role::Link { out } => out,
        _ => return,
    };
    if ch.outputs[out].mqtt.is_some() {
        return super::mqtt_link::kick(cx, ch, ci, slot, out);
    }
    if matches!(ep.role, Role::Link { .. }) && super::framed::old_link_writing(ch, out) {
        // The old connection's last write decides where the queue stands: the new one starts
        // on a record boundary after it (`framed::link_down`), then is kicked again.
        return;
    }
    if ch.outputs[out].file.is_some() && !fileout::rotate_if_due(cx, ch, ci, slot, out) {
        return;
    }
    let Channel { slots, outputs, .. } = ch;
    let Some(ep) = slots.get_mut(slot as usize).and_then(|e| e.as_mut()) else {
        return;
    };
    let super::channel::Output {
        queue: out_queue,
        file,
        retry_at,
        cfg,
        gso: gso_on,
        zerocopy,
        ..
    } = &mut outputs[out];
    if ep.queue.is_none() && retry_at.is_some() {
        // A link output waiting out a fault's backoff.
        return;
    }
    let datagram = cfg.endpoint.scheme == Scheme::Udp;
    let Endpoint {
        queue: ep_queue,
        gso_batch,
        writing,
        fd: ep_fd,
        gen,
        write_ops,
        in_flight,
        ..
    } = ep;
    let q: &mut OutQueue = match ep_queue.as_mut() {
        Some(q) => q,
        None => out_queue,
    };
    let Some(front) = q.front() else { return };
    let mut n = q.len().min(IOV_MAX);
    if let Some(f) = file.as_ref() {
        if let Some(limit) = f.rotate {
            // Never write past the rotation size in one go (one chunk at least).
            let room = limit.saturating_sub(f.size);
            let mut total = 0u64;
            let fit = q
                .peek(n)
                .take_while(|c| {
                    total += u64::from(c.len);
                    total <= room
                })
                .count();
            n = fit.max(1);
        }
    }
    let fd = *ep_fd;
    if *zerocopy && !datagram && file.is_none() && front.len >= super::zerocopy::MIN_BYTES {
        // One chunk, sent from the pool buffer itself; the record keeps the buffer for the
        // kernel until the send's notification, the `writing` reference until its result.
        if let Some(idx) = cx.zc_begin(*gen, front.buf) {
            cx.pool.retain(front.buf);
            writing.push(front.buf);
            cx.push(
                Op::SendZc { fd, chunk: front },
                Token::new(OpKind::SendZc, ci, slot, idx),
            );
            *write_ops = 1;
            *in_flight += 1;
            return;
        }
    }
    let tok = Token::new(OpKind::Send, ci, slot, *gen);
    if datagram && *gso_on {
        let (run, seg) = outq::segment_run(q.peek(GSO_SEGMENTS), GSO_SEGMENTS, GSO_BYTES);
        if run > 1 {
            // One segmented send for the run: the kernel cuts it back into the same datagrams.
            for c in q.peek(run) {
                cx.pool.retain(c.buf);
                writing.push(c.buf);
            }
            let chunks = cx.span(q.peek(run));
            let seg = seg as u16;
            cx.push(Op::SendGso { fd, chunks, seg }, tok);
            *gso_batch = run as u32;
            *write_ops = 1;
            *in_flight += 1;
            return;
        }
    }
    if datagram {
        for c in q.peek(n) {
            cx.pool.retain(c.buf);
            writing.push(c.buf);
            cx.push(
                Op::Write {
                    fd,
                    chunk: c,
                    socket: true,
                },
                Token::new(OpKind::SendDatagram, ci, c.buf, *gen),
            );
        }
        *write_ops = n as u32;
        *in_flight += n as u32;
        return;
    }
    for c in q.peek(n) {
        cx.pool.retain(c.buf);
        writing.push(c.buf);
    }
    if n == 1 {
        cx.push(
            Op::Write {
                fd,
                chunk: front,
                socket: file.is_none(),
            },
            tok,
        );
    } else {
        let chunks = cx.span(q.peek(n));
        cx.push(Op::Writev { fd, chunks }, tok);
    }
    *write_ops = 1;
    *in_flight += 1;
}

/// A completion of a zero-copy send: its result (then handled as any send's, with MORE when a
/// notification follows), or its notification (the kernel let go of the buffer). The
/// endpoint's in-flight count covers the notification still owed, so the slot is not reused
/// before it arrives; the buffer is found through the ring's record, never the endpoint.
pub(crate) fn on_send_zc(cx: &mut Cx, ch: &mut Channel, tok: Token, c: Completion) {
    let idx = tok.gen;
    let Some(rec) = cx.zc.get(idx) else {
        debug!("zero-copy completion without a record: {tok:?}");
        return;
    };
    let slot = tok.ep;
    if c.notif() {
        cx.zc_end(idx);
        if let Some(ep) = ch.ep_gen(slot, rec.gen) {
            ep.in_flight -= 1;
            ch.reap_if_idle(slot, cx.sys);
        }
        return;
    }
    if c.more() {
        if let Some(ep) = ch.ep_gen(slot, rec.gen) {
            ep.in_flight += 1;
        }
    } else {
        cx.zc_end(idx);
    }
    let send = Token::new(OpKind::Send, tok.chan, slot, rec.gen);
    let out = ch.ep_gen(slot, rec.gen).and_then(|e| match e.role {
        Role::Subscriber { out } | Role::Link { out } => Some(out),
        _ => None,
    });
    if let (Some(out), true) = (out, c.res > 0) {
        ch.outputs[out].stats.zerocopy += 1;
    }
    if c.res == -libc::EOPNOTSUPP {
        // This socket takes no zero-copy sends (a kernel built without them for this path):
        // by copy from now on. Nothing was sent; the chunk stays queued.
        if let Some(o) = out {
            let o = &mut ch.outputs[o];
            if o.zerocopy {
                o.zerocopy = false;
                info!(
                    "channel {}: output {}: zero-copy sends refused ({}); sending by copy",
                    ch.cfg.name,
                    o.url(),
                    errno_str(c.res)
                );
            }
        }
        on_write(cx, ch, send, -libc::EAGAIN);
        return;
    }
    on_write(cx, ch, send, c.res);
}

pub(crate) fn on_write(cx: &mut Cx, ch: &mut Channel, tok: Token, res: i32) {
    let ci = tok.chan;
    // A datagram send names its buffer; its endpoint is found by generation.
    let (slot, sent_buf) = if tok.kind == OpKind::SendDatagram {
        match ch.slot_of_gen(tok.gen) {
            Some(s) => (s, Some(tok.ep)),
            None => {
                debug!("stale datagram send completion {tok:?}");
                return;
            }
        }
    } else {
        (tok.ep, None)
    };
    let out_is_datagram = |ch: &Channel, role: Role| match role {
        Role::Subscriber { out } | Role::Link { out } => ch.outputs[out].is_datagram(),
        _ => false,
    };
    let Some(role) = ch.ep_gen(slot, tok.gen).map(|e| e.role) else {
        debug!("stale write completion {tok:?}");
        return;
    };
    if let Role::Link { out } = role {
        if ch.outputs[out].mqtt.is_some() {
            return super::mqtt_link::on_write(cx, ch, tok, out, res);
        }
    }
    let datagram = out_is_datagram(ch, role);
    let ep = ch.ep_mut(slot).expect("checked above");
    ep.in_flight -= 1;
    ep.write_ops -= 1;
    // The references the in-flight writes held: one per datagram send, all for a gathered
    // write.
    // Datagrams this completion stands for: a segmented send's run, or one.
    let batch = std::mem::take(&mut ep.gso_batch);
    let sent_count = batch.max(1);
    if let Some(b) = sent_buf {
        if let Some(i) = ep.writing.iter().position(|&w| w == b) {
            ep.writing.remove(i);
            cx.pool.release(b);
        }
    } else {
        for b in ep.writing.drain(..) {
            cx.pool.release(b);
        }
    }
    if ep.link == Link::Closing {
        // Bytes a link's old connection took are gone from its queue (which outlives the
        // connection): advance past them so the next connection does not send them again.
        if let (Role::Link { out }, true, false) = (role, res > 0, ep.detached) {
            let pool = &mut *cx.pool;
            let q = &mut ch.outputs[out].queue;
            if datagram {
                for _ in 0..sent_count {
                    if let Some(b) = q.skip_front() {
                        pool.release(b);
                    }
                }
            } else {
                q.advance_bytes(res as u64, |b| pool.release(b));
            }
            ch.outputs[out].stats.bytes += res as u64;
        }
        if let (Role::Link { out }, Some(ep)) = (role, ch.ep(slot)) {
            let ops = ep.write_ops;
            super::framed::link_down(cx, ch, out, ops);
            // A next connection that waited for this one's writes may go now.
            if let Some(next) = ch.outputs[out].link.filter(|_| ops == 0) {
                ch.reap_if_idle(slot, cx.sys);
                kick(cx, ch, tok.chan, next);
                return;
            }
        }
        ch.reap_if_idle(slot, cx.sys);
        return;
    }
    let peer = ep.peer.clone();
    let idle = ep.write_ops == 0;
    let out = match role {
        Role::Subscriber { out } | Role::Link { out } => out,
        _ => return,
    };
    if res > 0 {
        let n = res as u64;
        let Channel {
            slots,
            outputs,
            cfg,
            ..
        } = &mut *ch;
        let o = &mut outputs[out];
        let q = match role {
            Role::Subscriber { .. } => slots[slot as usize]
                .as_mut()
                .and_then(|e| e.queue.as_mut())
                .expect("subscriber queue"),
            _ => &mut o.queue,
        };
        let pool = &mut *cx.pool;
        if datagram {
            for _ in 0..sent_count {
                if let Some(b) = q.skip_front() {
                    pool.release(b);
                }
            }
            o.stats.datagrams += u64::from(sent_count);
        } else {
            q.advance_bytes(n, |b| pool.release(b));
        }
        o.stats.bytes += n;
        if let Some(f) = o.file.as_mut() {
            f.size += n;
        }
        if o.file.is_some() {
            fileout::recovered(&cfg.name, o);
        } else if o.faulted
            && matches!(role, Role::Link { .. })
            && o.last_refused
                .is_none_or(|t| cx.now >= t + DATAGRAM_RECOVERY)
        {
            o.faulted = false;
            o.last_refused = None;
            o.backoff.reset();
            info!("channel {}: output {} recovered", cfg.name, o.url());
        }
        if idle {
            kick(cx, ch, ci, slot);
        }
        if ch.blocked && ch.may_unblock() {
            ch.blocked = false;
            post_reads(cx, ch, ci);
        }
        return;
    }
    if res == -libc::EAGAIN {
        // Nothing was sent (the buffer path's sockets block, so only a refused zero-copy send
        // reports this): the chunk stays queued and goes again.
        if idle {
            kick(cx, ch, ci, slot);
        }
        return;
    }
    if datagram && res == -libc::ECANCELED {
        // A send earlier in the chain failed; this one was not attempted: it stays queued.
        if idle {
            kick(cx, ch, ci, slot);
        }
        return;
    }
    let err = if res == 0 {
        std::io::Error::from_raw_os_error(libc::EPIPE)
    } else {
        errno_str(res)
    };
    let name = ch.cfg.name.clone();
    let o = &mut ch.outputs[out];
    match role {
        Role::Subscriber { .. } => {
            let scope = format!("channel {name}: output {}", o.url());
            if cx
                .logs
                .admit(cx.now, &scope, "subscribers left", 20, log::Level::Info)
            {
                info!(
                    "channel {name}: subscriber {peer} of {} left: {err}",
                    ch.outputs[out].url()
                );
            }
            close_ep(cx, ch, ci, slot);
        }
        Role::Link { .. }
            if batch > 0
                && matches!(
                    -res,
                    libc::EINVAL
                        | libc::EIO
                        | libc::EMSGSIZE
                        | libc::EOPNOTSUPP
                        | libc::ENOPROTOOPT
                ) =>
        {
            // The kernel, the route or the device refuses segmentation (no checksum offload,
            // datagrams larger than the path MTU, an old kernel): one send per datagram from
            // now on. Nothing was sent; the run stays queued.
            o.gso = false;
            info!(
                "channel {name}: output {}: segmented sends refused ({err}); sending one datagram per send",
                o.url()
            );
            if idle {
                kick(cx, ch, ci, slot);
            }
        }
        Role::Link { .. } if datagram => {
            // Typically ECONNREFUSED from an ICMP port unreachable: drop this datagram (or
            // this segmented run: the kernel sent none of it).
            for _ in 0..sent_count {
                if let Some(b) = o.queue.skip_front() {
                    cx.pool.release(b);
                }
            }
            o.stats.drops += u64::from(sent_count);
            o.stats.errors += 1;
            o.last_refused = Some(cx.now);
            if !o.faulted {
                o.faulted = true;
                warn!(
                    "channel {name}: output {}: {err}; dropping until it recovers",
                    o.url()
                );
            }
            if idle {
                kick(cx, ch, ci, slot);
            }
        }
        Role::Link { .. } if o.file.is_some() => {
            fileout::fault(cx, ch, ci, out, |url| {
                format!("channel {name}: output {url}: write failed: {err}")
            });
        }
        _ => {
            o.fault(cx.now, log::Level::Warn, |url| {
                format!(
                "channel {name}: output {} lost: {err}; reconnecting (data not yet handed to the old connection is kept)",
                url
                )
            });
            close_ep(cx, ch, ci, slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::buffers::{BufId, Class, State};
    use crate::engine::channel::Link;
    use crate::engine::io::Op;
    use crate::engine::outq::Chunk;
    use crate::engine::testkit::{FakeSys, Rig};
    use crate::engine::token::{OpKind, Token};

    /// A producer's stream pushed to one collector that keeps everything (`block`).
    const CONF: &str = "[global]\nbuffer_size = 4KiB\nbuffer_count = 32\ndatagram_count = 0\n\
        [channel s]\ninput = tcp-listen://127.0.0.1:5000\n\
        output = tcp://127.0.0.1:7000 on_slow=block\n";

    fn chunk(buf: BufId, off: u32, len: u32) -> Chunk {
        Chunk { buf, off, len }
    }

    /// The one send submitted since the last take: its token and its chunks.
    fn the_send(rig: &Rig, link_fd: i32) -> (Token, Vec<Chunk>) {
        let sends = rig.subs_of(OpKind::Send);
        assert_eq!(sends.len(), 1, "one write in flight: {sends:?}");
        let chunks = match sends[0].op {
            Op::Writev { fd, chunks } if fd == link_fd => rig.fx.span(chunks).to_vec(),
            Op::Write {
                fd,
                chunk,
                socket: true,
            } if fd == link_fd => vec![chunk],
            op => panic!("unexpected write {op:?}"),
        };
        (sends[0].token, chunks)
    }

    #[test]
    fn gathered_write_holds_a_reference_per_chunk_and_short_writes_release_only_what_left() {
        // The collector's connect stays in progress, so the stream queues up behind it.
        let mut sys = FakeSys::new();
        sys.dial_in_progress = true;
        let mut rig = Rig::with_sys(CONF, sys);
        let connect = rig.token_of(|s| s.token.kind == OpKind::Connect);
        let link_fd = rig.fd(0, rig.chan(0).outputs[0].link);
        let accept = rig.accept_token(rig.fd(0, rig.chan(0).input_listener));
        rig.take();
        rig.accept_from(accept, None);
        let read = rig.subs_of(OpKind::Recv)[0].token;
        let Op::ReadvStream { bufs, .. } = rig.subs_of(OpKind::Recv)[0].op else {
            panic!("a scattered read");
        };
        let b: Vec<BufId> = rig.fx.span(bufs).iter().map(|c| c.buf).collect();
        rig.take();

        // Three full buffers and 100 bytes: four chunks queued, one reference each (the
        // queue's); the read's twelve unused buffers go back.
        rig.complete(read, 3 * 4096 + 100);
        let pool = &rig.engine.pool;
        for &x in &b[..4] {
            assert_eq!(pool.state(x), State::Shared(1));
        }
        for &x in &b[4..] {
            assert_eq!(pool.state(x), State::Free);
        }
        assert_eq!(pool.free_of(Class::Large).0, 28);
        assert_eq!(rig.chan(0).outputs[0].queue.len(), 4);
        assert!(rig.subs_of(OpKind::Send).is_empty(), "link not up yet");
        rig.take();

        // Connected: one gathered write of all four, each chunk holding one more reference.
        rig.complete(connect, 4);
        assert_eq!(
            rig.chan(0)
                .ep(rig.chan(0).outputs[0].link.unwrap())
                .unwrap()
                .link,
            Link::Up
        );
        let (send, chunks) = the_send(&rig, link_fd);
        assert!(matches!(rig.subs_of(OpKind::Send)[0].op, Op::Writev { .. }));
        assert_eq!(
            chunks,
            [
                chunk(b[0], 0, 4096),
                chunk(b[1], 0, 4096),
                chunk(b[2], 0, 4096),
                chunk(b[3], 0, 100)
            ]
        );
        for &x in &b[..4] {
            assert_eq!(rig.engine.pool.state(x), State::Shared(2));
        }
        rig.take();

        // A short write, 50 bytes into the second chunk: only the first buffer is done; the
        // rest goes again at once, from byte 50 of the second chunk.
        rig.complete(send, 4096 + 50);
        let q = &rig.chan(0).outputs[0].queue;
        assert_eq!(q.backlog(), 3 * 4096 + 100 - (4096 + 50));
        assert_eq!(q.len(), 3);
        assert_eq!(q.front(), Some(chunk(b[1], 50, 4046)));
        assert_eq!(rig.engine.pool.state(b[0]), State::Free);
        for &x in &b[1..4] {
            assert_eq!(rig.engine.pool.state(x), State::Shared(2));
        }
        assert_eq!(rig.engine.pool.free_of(Class::Large).0, 29);
        assert_eq!(rig.chan(0).outputs[0].stats.bytes, 4096 + 50);
        let (send, chunks) = the_send(&rig, link_fd);
        assert_eq!(
            chunks,
            [
                chunk(b[1], 50, 4046),
                chunk(b[2], 0, 4096),
                chunk(b[3], 0, 100)
            ]
        );
        rig.take();

        // A write that ends exactly on a chunk boundary releases both chunks it finished; the
        // one chunk left goes as a single write.
        rig.complete(send, 4046 + 4096);
        assert_eq!(rig.engine.pool.state(b[1]), State::Free);
        assert_eq!(rig.engine.pool.state(b[2]), State::Free);
        assert_eq!(rig.engine.pool.state(b[3]), State::Shared(2));
        assert_eq!(rig.chan(0).outputs[0].queue.backlog(), 100);
        let (send, chunks) = the_send(&rig, link_fd);
        assert!(matches!(rig.subs_of(OpKind::Send)[0].op, Op::Write { .. }));
        assert_eq!(chunks, [chunk(b[3], 0, 100)]);
        rig.take();

        rig.complete(send, 100);
        assert!(rig.chan(0).outputs[0].queue.is_empty());
        assert!(rig.subs_of(OpKind::Send).is_empty());
        assert_eq!(rig.engine.pool.free_of(Class::Large), (32, 32));
        assert_eq!(rig.chan(0).outputs[0].stats.bytes, 3 * 4096 + 100);
    }
}
