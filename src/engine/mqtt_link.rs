//! An `mqtt://` output on the ring: the connection's life as an MQTT client (CONNECT, CONNACK,
//! PUBLISH, PUBACK, PINGREQ/PINGRESP, DISCONNECT), on the dialed link of
//! [`super::links`].
//!
//! Owns: planning each write (one gathered write: the PUBLISH headers built in one pool buffer
//! taken for the write, each followed by its payload straight from the queue's pool buffer),
//! reading the broker's packets (through the output peer's read of [`super::commands`],
//! decoded by [`super::mqtt::decode`]), the keepalive, and turning a refusal, a protocol
//! error or a silent broker into a fault of this output alone (logged once per state change,
//! redialed with backoff). What a message's life is (QoS 0 and 1) is
//! [`super::mqtt_session`]'s. With a spool: telling it when the session let records go
//! (their PUBACK, or their write with QoS 0), and which queued records the session holds
//! (they stay queued when the output starts to spool, [`held_mark`]).
//!
//! Must never: release a buffer a write in flight names (the write holds its own reference
//! to each, given back at its completion), or let the queue's front move past a message the
//! session still holds.

use super::buffers::{BufId, Class};
use super::channel::{Channel, Link, Output, Role};
use super::io::Op;
use super::links::close_ep;
use super::mqtt::{
    connack_reason, decode, encode_connect, encode_publish_header, Connect, Incoming, Qos,
    DISCONNECT_BYTES, PINGREQ_BYTES,
};
use super::mqtt_session::{cut, Cut, Phase, Session};
use super::outq::{Chunk, OutQueue};
use super::token::{OpKind, Token};
use super::{errno_str, input::post_reads, Cx, IOV_MAX};
use crate::config::mqtt::DEFAULT_KEEPALIVE_SECS;
use crate::config::{ChannelConfig, Framing};
use log::info;
use std::time::{Duration, Instant};

/// The write in flight of an output's session: the chunks it names (each of its buffers
/// holding one reference for it), what of them already went, and on which endpoint.
#[derive(Debug)]
pub struct MqttWrite {
    chunks: Vec<Chunk>,
    /// One reference per entry, released at the write's end.
    hold: Vec<BufId>,
    /// Bytes of `chunks` already written (short writes go again from there).
    done: u64,
    /// The endpoint (slot, generation) the write was submitted on.
    slot: u16,
    gen: u32,
}

/// A session for output config `endpoint` of channel `cfg`, or `None` for other schemes.
pub fn session_for(cfg: &ChannelConfig, ep: &crate::config::url::Endpoint) -> Option<Session> {
    let m = ep.opts.mqtt.as_ref()?;
    let how = if cfg.framing == Framing::Line {
        Cut::Lines
    } else if !cfg.input.scheme.is_stream() {
        Cut::Whole
    } else if let Some(w) = cfg.records.frame_bytes() {
        Cut::Pieces(w.min(m.max_message))
    } else {
        Cut::Pieces(m.max_message)
    };
    Some(Session::new(m.qos == 1, m.max_inflight, how))
}

/// The keepalive of output `out` (None: off).
fn keepalive(ch: &Channel, out: usize) -> Option<Duration> {
    let k = ch.outputs[out]
        .cfg
        .endpoint
        .opts
        .keepalive
        .unwrap_or(DEFAULT_KEEPALIVE_SECS);
    (k > 0).then(|| Duration::from_secs(u64::from(k)))
}

/// The link's TCP connection is up: CONNECT goes first.
pub(crate) fn connected(cx: &mut Cx, ch: &mut Channel, ci: u16, slot: u16, out: usize) {
    let o = &mut ch.outputs[out];
    if let Some(s) = o.mqtt.as_mut() {
        s.phase = Phase::Connected;
        s.bye = false;
    }
    super::links::watch_hangup(cx, ch, ci, slot);
    super::output::kick(cx, ch, ci, slot);
}

/// A pool buffer for the headers of one write, held once, with room for `need` bytes.
fn header_buffer(cx: &mut Cx, need: usize) -> Option<BufId> {
    let small =
        cx.pool.class_size(Class::Small) as usize >= need && cx.pool.free_of(Class::Small).0 > 0;
    let class = if small { Class::Small } else { Class::Large };
    if (cx.pool.class_size(class) as usize) < need {
        return None;
    }
    let b = cx.pool.take_class(class)?;
    cx.pool.filled(b);
    Some(b)
}

/// Plans and submits the next write of output `out` on endpoint `slot`, if none is in flight.
pub(crate) fn kick(cx: &mut Cx, ch: &mut Channel, ci: u16, slot: u16, out: usize) {
    let Some(ep) = ch.ep(slot) else { return };
    let (fd, gen) = (ep.raw_fd(), ep.gen);
    if ep.link != Link::Up || ch.outputs[out].mqtt_write.is_some() {
        return;
    }
    let draining = ch.draining;
    let ka = keepalive(ch, out);
    let o = &mut ch.outputs[out];
    let m = o.cfg.endpoint.opts.mqtt.clone().expect("an mqtt output");
    let s = o.mqtt.as_mut().expect("an mqtt output");
    let mut hdr: Vec<u8> = Vec::new();
    // (header range, payload) per iovec pair; a header-only packet has no payload.
    let mut parts: Vec<(usize, usize, Option<Chunk>)> = Vec::new();
    match s.phase {
        Phase::Down | Phase::AwaitConnAck => return,
        Phase::Connected => {
            encode_connect(
                &Connect {
                    client_id: m.client_id.as_deref().unwrap_or(""),
                    keepalive_secs: ka.map_or(0, |d| d.as_secs() as u16),
                    clean_session: m.clean,
                    username: m.username.as_deref(),
                    password: m.password.as_deref(),
                },
                &mut hdr,
            );
            parts.push((0, hdr.len(), None));
            s.phase = Phase::AwaitConnAck;
            s.connect_sent = Some(cx.now);
        }
        Phase::Ready => {
            if s.ping_wanted && s.ping_sent.is_none() {
                s.ping_wanted = false;
                s.ping_sent = Some(cx.now);
                hdr.extend_from_slice(&PINGREQ_BYTES);
                parts.push((0, 2, None));
            }
            let qos = if s.qos1 {
                Qos::AtLeastOnce
            } else {
                Qos::AtMostOnce
            };
            let room = |parts: &Vec<(usize, usize, Option<Chunk>)>| parts.len() * 2 + 2 <= IOV_MAX;
            // Re-sends first, in order, DUP set.
            for msg in s.unacked.iter_mut().filter(|x| x.due && !x.done) {
                if !room(&parts) {
                    break;
                }
                let at = hdr.len();
                let dup = msg.sent;
                encode_publish_header(
                    &m.topic,
                    qos,
                    m.retain,
                    dup,
                    msg.id,
                    msg.payload.len as usize,
                    &mut hdr,
                )
                .expect("a payload of one buffer fits");
                msg.due = false;
                msg.writing = true;
                if dup {
                    s.stats.duplicates += 1;
                }
                parts.push((at, hdr.len(), Some(msg.payload)));
            }
            // Then new messages from the queue, past those the session holds.
            let mut cuts = Vec::new();
            'chunks: for c in uncut(&o.queue, s.covered) {
                cuts.clear();
                cut(
                    c,
                    cx.pool.bytes(cx.mem, c.buf, c.off, c.len),
                    s.how,
                    &mut cuts,
                );
                for &(span, payload) in &cuts {
                    if !room(&parts) || !s.has_room() {
                        break 'chunks;
                    }
                    let msg = s.add(span, payload);
                    if payload.len == 0 {
                        continue;
                    }
                    let at = hdr.len();
                    encode_publish_header(
                        &m.topic,
                        qos,
                        m.retain,
                        false,
                        msg.id,
                        payload.len as usize,
                        &mut hdr,
                    )
                    .expect("a payload of one buffer fits");
                    parts.push((at, hdr.len(), Some(payload)));
                }
            }
            if parts.is_empty() && draining && o.queue.is_empty() && s.settled() && !s.bye {
                // A clean stop: everything is acknowledged; say goodbye.
                s.bye = true;
                hdr.extend_from_slice(&DISCONNECT_BYTES);
                parts.push((0, 2, None));
            }
        }
    }
    // Empty lines are done at once: they may have made the front done.
    settle(cx, ch, ci, out);
    if parts.is_empty() {
        return;
    }
    let Some(hb) = header_buffer(cx, hdr.len()) else {
        // No buffer for the headers: the tick tries again. Nothing was marked written.
        let o = &mut ch.outputs[out];
        if let Some(s) = o.mqtt.as_mut() {
            for msg in s.unacked.iter_mut().filter(|x| x.writing) {
                msg.writing = false;
                msg.due = true;
            }
            if s.phase == Phase::AwaitConnAck {
                s.phase = Phase::Connected;
            }
        }
        return;
    };
    cx.pool.write_prefix(cx.mem, hb, 0, &hdr);
    let mut chunks = Vec::with_capacity(parts.len() * 2);
    // One reference per chunk that names a buffer, the header buffer's too: each iovec
    // entry holds its own.
    let mut hold = Vec::with_capacity(parts.len() * 2);
    for (i, &(a, b, p)) in parts.iter().enumerate() {
        if i > 0 {
            cx.pool.retain(hb);
        }
        hold.push(hb);
        chunks.push(Chunk {
            buf: hb,
            off: a as u32,
            len: (b - a) as u32,
        });
        if let Some(p) = p {
            cx.pool.retain(p.buf);
            hold.push(p.buf);
            chunks.push(p);
        }
    }
    let o = &mut ch.outputs[out];
    if let Some(s) = o.mqtt.as_mut() {
        s.writing = true;
        s.last_write = Some(cx.now);
    }
    o.mqtt_write = Some(MqttWrite {
        chunks,
        hold,
        done: 0,
        slot,
        gen,
    });
    submit(cx, ch, ci, out, fd);
}

/// Submits what the write in flight of output `out` has left.
fn submit(cx: &mut Cx, ch: &mut Channel, ci: u16, out: usize, fd: i32) {
    let w = ch.outputs[out].mqtt_write.as_ref().expect("a write");
    let (slot, gen) = (w.slot, w.gen);
    let mut skip = w.done;
    let mut rest = Vec::with_capacity(w.chunks.len());
    for c in &w.chunks {
        if skip >= u64::from(c.len) {
            skip -= u64::from(c.len);
            continue;
        }
        rest.push(Chunk {
            buf: c.buf,
            off: c.off + skip as u32,
            len: c.len - skip as u32,
        });
        skip = 0;
    }
    let Some(ep) = ch.ep_mut(slot) else { return };
    ep.in_flight += 1;
    ep.write_ops = 1;
    let tok = Token::new(OpKind::Send, ci, slot, gen);
    if rest.len() == 1 {
        cx.push(
            Op::Write {
                fd,
                chunk: rest[0],
                socket: true,
            },
            tok,
        );
    } else {
        let chunks = cx.span(rest.into_iter());
        cx.push(Op::Writev { fd, chunks }, tok);
    }
}

/// A write of output `out` completed (`res`: bytes, or an error).
pub(crate) fn on_write(cx: &mut Cx, ch: &mut Channel, tok: Token, out: usize, res: i32) {
    let (ci, slot) = (tok.chan, tok.ep);
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        return;
    };
    ep.in_flight -= 1;
    ep.write_ops = 0;
    let live = ep.link == Link::Up;
    let fd = ep.raw_fd();
    let o = &mut ch.outputs[out];
    let Some(w) = o.mqtt_write.as_mut() else {
        ch.reap_if_idle(slot, cx.sys);
        return;
    };
    let total: u64 = w.chunks.iter().map(|c| u64::from(c.len)).sum();
    if res > 0 {
        w.done += res as u64;
        o.stats.bytes += res as u64;
    }
    if live && res > 0 && w.done < total {
        // A short write: the rest goes now, in order.
        submit(cx, ch, ci, out, fd);
        return;
    }
    let w = o.mqtt_write.take().expect("present");
    for b in w.hold {
        cx.pool.release(b);
    }
    let s = o.mqtt.as_mut().expect("an mqtt output");
    s.writing = false;
    if live && w.done == total {
        s.written();
        settle(cx, ch, ci, out);
        super::output::kick(cx, ch, ci, slot);
        return;
    }
    if live {
        let err = if res == 0 {
            std::io::Error::from_raw_os_error(libc::EPIPE)
        } else {
            errno_str(res)
        };
        let name = ch.cfg.name.clone();
        ch.outputs[out].fault(cx.now, log::Level::Warn, |url| {
            format!("channel {name}: output {url}: write failed: {err}; reconnecting")
        });
        close_ep(cx, ch, ci, slot);
    }
    ch.reap_if_idle(slot, cx.sys);
    // A next connection that waited for this write may go now.
    if let Some(next) = ch.outputs[out].link.filter(|&l| l != slot) {
        super::output::kick(cx, ch, ci, next);
    }
}

/// Done messages leave the queue (a spool's records among them are consumed); a blocked
/// input may read again.
fn settle(cx: &mut Cx, ch: &mut Channel, ci: u16, out: usize) {
    let o = &mut ch.outputs[out];
    let Some(s) = o.mqtt.as_mut() else { return };
    let n = s.pop_done();
    if n > 0 {
        let pool = &mut *cx.pool;
        o.queue.advance_bytes(n, |b| pool.release(b));
        if o.spool.is_some() {
            super::spooling::sent(cx, ch, ci, out);
        }
    }
    if ch.blocked && ch.may_unblock() {
        ch.blocked = false;
        post_reads(cx, ch, ci);
    }
}

/// The connection of output `out` is closing: the session takes stock (see
/// [`Session::disconnected`]).
pub(crate) fn link_down(cx: &mut Cx, ch: &mut Channel, ci: u16, out: usize) {
    let o = &mut ch.outputs[out];
    let Some(s) = o.mqtt.as_mut() else { return };
    let lost = s.disconnected();
    o.stats.drops += lost;
    let n = s.pop_done();
    if n > 0 {
        let pool = &mut *cx.pool;
        o.queue.advance_bytes(n, |b| pool.release(b));
        if o.spool.is_some() {
            super::spooling::sent(cx, ch, ci, out);
        }
    }
}

/// The consumption mark (see [`OutQueue::back_mark`]) up to which output `o`'s queue is
/// held by its MQTT session: every chunk its messages take, whole or in part, and a front
/// chunk partly done (some of its lines acknowledged). `None`: no MQTT output, or nothing
/// held. A spill leaves these chunks queued, since the session sends them again after a
/// reconnect (see [`super::spooling::spill`]).
pub(crate) fn held_mark(o: &Output) -> Option<u64> {
    let n = held_chunks(&o.queue, o.mqtt.as_ref()?.covered);
    (n > 0).then(|| o.queue.sent_total() + n as u64)
}

/// How many chunks at the front of `queue` its first `covered` bytes (past what already
/// went) touch, a partly sent front chunk counted whatever `covered` is.
fn held_chunks(queue: &OutQueue, covered: u64) -> usize {
    let mut left = covered;
    let mut n = usize::from(queue.partly_sent());
    for (i, c) in queue.peek(queue.len()).enumerate() {
        if left == 0 {
            break;
        }
        left = left.saturating_sub(u64::from(c.len));
        n = n.max(i + 1);
    }
    n
}

/// The stop gave output `o`'s queue to its spool, what the session holds too (on disk since
/// the spill, see [`super::spooling::spill`]): the session forgets its messages (not drops:
/// they go again after the restart, a QoS 1 repeat at worst) and the queue lets go of every
/// buffer (a write in flight holds its own references).
pub(crate) fn spilled(pool: &mut super::buffers::BufferPool, o: &mut Output) {
    if let Some(s) = o.mqtt.as_mut() {
        s.forget();
    }
    for b in o.queue.clear() {
        pool.release(b);
    }
}

/// The stop's deadline closed channel `ch` with its MQTT outputs not done: each message they
/// still hold (written and not acknowledged, waiting to be re-sent, or not yet published) is
/// given up and counted as a drop, and the queue lets go of its buffers (a write in flight
/// holds its own references). Outputs with a spool are left alone: the stop spilled their
/// queue to it, the messages their session held included (see [`spilled`]).
pub(crate) fn give_up(cx: &mut Cx, ch: &mut Channel) {
    for o in &mut ch.outputs {
        if o.spool.is_some() {
            continue;
        }
        let Some(s) = o.mqtt.as_mut() else { continue };
        let mut n = s.give_up();
        // The messages not yet cut from the queue, past those the session holds.
        let mut cuts = Vec::new();
        for c in uncut(&o.queue, s.covered) {
            cuts.clear();
            cut(
                c,
                cx.pool.bytes(cx.mem, c.buf, c.off, c.len),
                s.how,
                &mut cuts,
            );
            n += cuts.iter().filter(|(_, p)| p.len > 0).count() as u64;
        }
        s.pop_done();
        for b in o.queue.clear() {
            cx.pool.release(b);
        }
        o.stats.drops += n;
    }
}

/// Bytes the broker sent on endpoint `slot` of output `out`: each whole packet acted on.
pub(crate) fn received(
    cx: &mut Cx,
    ch: &mut Channel,
    ci: u16,
    slot: u16,
    out: usize,
    bytes: &[u8],
) {
    let name = ch.cfg.name.clone();
    let o = &mut ch.outputs[out];
    let Some(s) = o.mqtt.as_mut() else { return };
    s.rx.extend_from_slice(bytes);
    let mut kick_after = false;
    loop {
        let o = &mut ch.outputs[out];
        let s = o.mqtt.as_mut().expect("present");
        let packet = match decode(&s.rx) {
            Ok(Some((p, n))) => {
                s.rx.drain(..n);
                p
            }
            Ok(None) => break,
            Err(e) => {
                o.fault(cx.now, log::Level::Warn, |url| {
                    format!("channel {name}: output {url}: the broker sent {e}; reconnecting")
                });
                close_ep(cx, ch, ci, slot);
                return;
            }
        };
        match packet {
            Incoming::ConnAck {
                code: 0,
                session_present,
            } => {
                s.phase = Phase::Ready;
                s.connect_sent = None;
                s.last_refusal = None;
                o.backoff.reset();
                let again = if o.connected_once {
                    o.stats.reconnects += 1;
                    "reconnected"
                } else {
                    "connected"
                };
                let resend = s.not_acknowledged().count();
                info!(
                    "channel {name}: output {} {again} (session present: {session_present}; {resend} unacknowledged to re-send)",
                    o.url()
                );
                o.connected_once = true;
                o.faulted = false;
                kick_after = true;
            }
            Incoming::ConnAck { code, .. } => {
                s.stats.refused += 1;
                let first = s.last_refusal != Some(code);
                s.last_refusal = Some(code);
                if first {
                    // Logged once per return code, whatever the fault state says.
                    o.faulted = false;
                }
                o.fault(cx.now, log::Level::Warn, |url| {
                    format!(
                        "channel {name}: output {url}: the broker refused the connection: {} (code {code}); retrying with backoff",
                        connack_reason(code)
                    )
                });
                close_ep(cx, ch, ci, slot);
                return;
            }
            Incoming::PubAck { id } => {
                if s.acknowledged(id) {
                    kick_after = true;
                }
            }
            Incoming::PingResp => s.ping_sent = None,
        }
    }
    settle(cx, ch, ci, out);
    if kick_after {
        super::output::kick(cx, ch, ci, slot);
    }
}

/// The tick: CONNACK and PINGRESP deadlines, PINGREQ when the connection was quiet, and the
/// DISCONNECT of a stopping channel.
pub(crate) fn tick(cx: &mut Cx, ch: &mut Channel, ci: u16, now: Instant) {
    for out in 0..ch.outputs.len() {
        let Some(slot) = ch.outputs[out].link else {
            continue;
        };
        if ch.outputs[out].mqtt.is_none() || ch.ep(slot).is_none_or(|e| e.link != Link::Up) {
            continue;
        }
        let ka = keepalive(ch, out);
        let wait = ka
            .unwrap_or(Duration::from_secs(30))
            .max(Duration::from_secs(5));
        let name = ch.cfg.name.clone();
        let o = &mut ch.outputs[out];
        let s = o.mqtt.as_mut().expect("checked");
        let silent = match (s.phase, s.connect_sent, s.ping_sent) {
            (Phase::AwaitConnAck, Some(t), _) if now.duration_since(t) >= wait => Some("CONNACK"),
            (Phase::Ready, _, Some(t)) if ka.is_some_and(|k| now.duration_since(t) >= k) => {
                Some("PINGRESP")
            }
            _ => None,
        };
        if let Some(what) = silent {
            o.fault(now, log::Level::Warn, |url| {
                format!(
                    "channel {name}: output {url}: no {what} within {}s; reconnecting",
                    wait.as_secs()
                )
            });
            close_ep(cx, ch, ci, slot);
            continue;
        }
        if let (Phase::Ready, Some(k), None) = (s.phase, ka, s.ping_sent) {
            if s.last_write.is_none_or(|t| now.duration_since(t) >= k) {
                s.ping_wanted = true;
            }
        }
        super::output::kick(cx, ch, ci, slot);
    }
}

/// Whether the broker's FIN on output `out` follows our DISCONNECT (a clean stop, no fault).
pub(crate) fn said_bye(ch: &Channel, role: Role) -> bool {
    match role {
        Role::Link { out } => ch.outputs[out].mqtt.as_ref().is_some_and(|s| s.bye),
        _ => false,
    }
}

/// The MQTT counters of output `o` for the counters line (empty for other outputs):
/// ` published= acknowledged= duplicates= refused=`.
pub(crate) fn counters(o: &super::channel::Output) -> String {
    o.mqtt.as_ref().map_or_else(String::new, |s| {
        format!(
            " published={} acknowledged={} duplicates={} refused={}",
            s.stats.published, s.stats.acknowledged, s.stats.duplicates, s.stats.refused
        )
    })
}

/// Nothing left for output `out` to do before its channel may stop.
pub(crate) fn settled(o: &super::channel::Output) -> bool {
    o.mqtt_write.is_none()
        && o.mqtt
            .as_ref()
            .is_none_or(|s| s.settled() && (s.phase != Phase::Ready || s.bye))
}

/// The queue's chunks past its first `covered` bytes (those the session already holds as
/// messages), the first of them trimmed to start there: what is still to be cut into messages.
fn uncut(queue: &OutQueue, covered: u64) -> impl Iterator<Item = Chunk> + '_ {
    let mut skip = covered;
    queue.peek(queue.len()).filter_map(move |c| {
        if skip >= u64::from(c.len) {
            skip -= u64::from(c.len);
            return None;
        }
        let at = skip as u32;
        skip = 0;
        Some(Chunk {
            buf: c.buf,
            off: c.off + at,
            len: c.len - at,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::url::OnSlow;

    fn chunk(buf: u16, len: u32) -> Chunk {
        Chunk { buf, off: 0, len }
    }

    /// The chunks a session holds stay out of a spill: every chunk its messages touch, and a
    /// front chunk partly done.
    #[test]
    fn held_chunks_are_those_the_session_covers() {
        let mut q = OutQueue::new(OnSlow::Block, 1 << 20, 64);
        for (b, len) in [(1, 10), (2, 10), (3, 10)] {
            q.offer(chunk(b, len));
        }
        assert_eq!(held_chunks(&q, 0), 0);
        assert_eq!(held_chunks(&q, 10), 1, "the first chunk whole");
        assert_eq!(held_chunks(&q, 11), 2, "and one byte of the next: begun");
        assert_eq!(held_chunks(&q, 30), 3);
        // Four lines of the front chunk done: it is begun even with nothing covered.
        q.advance_bytes(4, |_| {});
        assert_eq!(held_chunks(&q, 0), 1);
        assert_eq!(held_chunks(&q, 6), 1, "the rest of the front chunk");
        assert_eq!(held_chunks(&q, 7), 2);
    }
}
