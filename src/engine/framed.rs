//! The engine side of records (frames, lines, preambles): what a framed channel holds between
//! reads ([`Framed`]) and how a read, a datagram, a joining subscriber and a collector whose
//! link comes up are handled, over the pure decisions of [`super::records`].
//!
//! Owns two kinds of pool buffer per channel, each held by ONE reference of the channel in a
//! [`Held`] (outputs that are offered its bytes retain their own):
//! - the carry: the record that straddles the end of a read, copied out of it and completed
//!   from the head of the next read, then delivered (the reference goes to [`deliver`]);
//! - the preamble: the first `preamble` bytes of the current producer connection, offered
//!   (retained once more per queue) to every subscriber that joins and every collector whose
//!   link comes up. It is the connection's first read buffer itself, kept; when that read was
//!   shorter than the preamble, the rest is appended after its bytes, past what any queue was
//!   offered, so a send in flight never reads a byte being written. Replaced at the next
//!   connection's first byte.
//!
//! Both are given back by [`Framed::release`] when the channel goes (reload, shutdown): the pool
//! is whole at the end. What is cut and not delivered is counted in the input's `partial`
//! bytes (and an over-long line in `malformed` too): nothing disappears uncounted.
//!
//! Must never: offer an output a chunk that is not whole records, or write into a range of a
//! buffer an output was offered.

use super::buffers::Class;
use super::channel::{Channel, Link, Role, PREFIX};
use super::input::deliver;
use super::output::kick;
use super::outq::{Chunk, Offer};
use super::records::{datagram_lines, Cutter, Held, Kind, Step};
use super::Cx;
use crate::config::{ChannelConfig, Framing};

/// What a framed channel holds between reads.
#[derive(Debug)]
pub struct Framed {
    cutter: Cutter,
    /// The generation of the input endpoint whose bytes the cutter is on.
    conn: Option<u32>,
    /// The current connection has not yet given a preamble byte.
    fresh: bool,
    /// The preamble of the latest producer connection (complete or still coming).
    pub preamble: Option<Held>,
    carry: Option<Held>,
    max_line: u32,
    steps: Vec<Step>,
    dlines: Vec<(u32, u32, bool)>,
    scratch: Vec<u8>,
    /// The lines of the chunk being delivered, each offered to a datagram output as one
    /// datagram (`framing = line`); empty otherwise.
    pub lines: Vec<Chunk>,
    /// 1 when a `\n` was appended after the datagram being delivered (its last line had none):
    /// stream outputs get it, datagram outputs do not.
    pub newline: u32,
}

impl Framed {
    /// The state of a channel that cuts records (a framed stream input, or `framing = line`
    /// on a datagram input); `None` for every other channel.
    pub fn for_config(cfg: &ChannelConfig) -> Option<Framed> {
        let line = cfg.framing == Framing::Line;
        if !cfg.is_framed_stream() && !line {
            return None;
        }
        let kind = if line {
            Kind::Line {
                max: cfg.records.max_line,
            }
        } else if let Some(w) = cfg.records.frame_bytes() {
            Kind::Frame(w)
        } else {
            Kind::Bytes
        };
        Some(Framed {
            cutter: Cutter::new(kind, cfg.records.preamble),
            conn: None,
            fresh: true,
            preamble: None,
            carry: None,
            max_line: cfg.records.max_line,
            steps: Vec::new(),
            dlines: Vec::new(),
            scratch: Vec::new(),
            lines: Vec::new(),
            newline: 0,
        })
    }

    /// Gives the held buffers back to the pool (the channel goes); returns the carry's bytes,
    /// an incomplete record that is dropped.
    pub fn release(&mut self, pool: &mut super::buffers::BufferPool) -> u32 {
        if let Some(p) = self.preamble.take() {
            pool.release(p.buf);
        }
        let left = self.cutter.connection_start();
        if let Some(c) = self.carry.take() {
            pool.release(c.buf);
        }
        left
    }

    /// Bytes the carry holds (a record not yet complete).
    pub fn carried(&self) -> u32 {
        self.cutter.carry()
    }

    fn is_line(&self) -> bool {
        self.cutter.is_line()
    }
}

/// Copies `len` bytes at `at` of `from` to the end of `to`.
fn append(cx: &mut Cx, scratch: &mut Vec<u8>, from: u16, at: u32, len: u32, to: &mut Held) {
    scratch.clear();
    scratch.extend_from_slice(cx.pool.bytes(cx.mem, from, at, len));
    cx.pool.append(cx.mem, to.buf, to.len, scratch);
    to.len += len;
}

/// A filled pool buffer to hold (one reference), or `None` when the pool has none free.
fn take_held(cx: &mut Cx) -> Option<Held> {
    let buf = cx.pool.take_class(Class::Large)?;
    cx.pool.filled(buf);
    Some(Held { buf, len: 0 })
}

/// The lines of `len` bytes at `off` of `buf`, for datagram outputs of a line channel.
fn fill_lines(cx: &mut Cx, ch: &mut Channel, buf: u16, off: u32, len: u32) {
    let want = ch.outputs.iter().any(|o| o.is_datagram());
    let Some(f) = ch.framed.as_mut() else { return };
    f.lines.clear();
    if !want || !f.is_line() {
        return;
    }
    let data = cx.pool.bytes(cx.mem, buf, off, len);
    let mut start = 0u32;
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' {
            let end = i as u32 + 1;
            f.lines.push(Chunk {
                buf,
                off: off + start,
                len: end - start,
            });
            start = end;
        }
    }
    if start < len {
        f.lines.push(Chunk {
            buf,
            off: off + start,
            len: len - start,
        });
    }
}

/// Delivers `len` bytes at `off` of `buf` (a reference the caller gives up), its lines cut
/// for datagram outputs; `preamble` bytes are not fed to the decimator, nor cut into lines (a
/// datagram output gets them as they arrive).
fn deliver_records(
    cx: &mut Cx,
    ch: &mut Channel,
    ci: u16,
    (buf, off, len): (u16, u32, u32),
    datagram: bool,
    preamble: bool,
) {
    if !preamble {
        fill_lines(cx, ch, buf, off, len);
    }
    let publisher = if preamble { ch.publisher.take() } else { None };
    deliver(cx, ch, ci, buf, off, len, datagram);
    if publisher.is_some() {
        ch.publisher = publisher;
    }
    if let Some(f) = ch.framed.as_mut() {
        f.lines.clear();
        f.newline = 0;
    }
}

/// `n` bytes a stream read put in `buf` (filled; the caller's reference is given up here), on
/// the producer connection of generation `gen`.
pub(crate) fn on_stream_read(cx: &mut Cx, ch: &mut Channel, ci: u16, gen: u32, buf: u16, n: u32) {
    let Some(mut f) = ch.framed.take() else {
        deliver(cx, ch, ci, buf, 0, n, false);
        return;
    };
    if f.conn != Some(gen) {
        // A new producer connection: what the last one left unfinished goes, and its
        // preamble comes first.
        f.conn = Some(gen);
        f.fresh = true;
        ch.stats.partial += u64::from(f.cutter.connection_start());
        if let Some(c) = f.carry.take() {
            cx.pool.release(c.buf);
        }
    }
    let mut steps = std::mem::take(&mut f.steps);
    steps.clear();
    f.cutter.cut(cx.pool.bytes(cx.mem, buf, 0, n), &mut steps);
    ch.framed = Some(f);
    for &s in &steps {
        let f = ch.framed.as_mut().expect("put back above");
        match s {
            Step::Preamble { at, len } => {
                if f.fresh {
                    // The connection's first read holds the preamble's first bytes at its
                    // start: that buffer itself is kept (no copy, and no other buffer to
                    // find in a short pool). Past them, it holds nothing any output was
                    // offered while the preamble is incomplete, so the rest is appended there.
                    debug_assert_eq!(at, 0);
                    f.fresh = false;
                    if let Some(old) = f.preamble.take() {
                        cx.pool.release(old.buf);
                    }
                    cx.pool.retain(buf);
                    f.preamble = Some(Held { buf, len });
                } else if let Some(p) = f.preamble.as_mut() {
                    append(cx, &mut f.scratch, buf, at, len, p);
                }
                cx.pool.retain(buf);
                deliver_records(cx, ch, ci, (buf, at, len), false, true);
            }
            Step::Carry { at, len } => {
                if f.carry.is_none() {
                    f.carry = take_held(cx);
                }
                match f.carry.as_mut() {
                    Some(c) => append(cx, &mut f.scratch, buf, at, len, c),
                    // No buffer to carry it in: the record is dropped, alignment kept.
                    None => ch.stats.partial += u64::from(f.cutter.drop_carry()),
                }
            }
            Step::CarryWhole => {
                if let Some(c) = f.carry.take() {
                    deliver_records(cx, ch, ci, (c.buf, 0, c.len), false, false);
                }
            }
            Step::CarryDropped => {
                if let Some(c) = f.carry.take() {
                    ch.stats.partial += u64::from(c.len);
                    cx.pool.release(c.buf);
                }
                ch.stats.malformed += 1;
            }
            Step::Records { at, len } => {
                cx.pool.retain(buf);
                deliver_records(cx, ch, ci, (buf, at, len), false, false);
            }
            Step::Dropped { len, first, .. } => {
                ch.stats.partial += u64::from(len);
                if first {
                    ch.stats.malformed += 1;
                }
            }
        }
    }
    if let Some(f) = ch.framed.as_mut() {
        f.steps = steps;
    }
    cx.pool.release(buf);
}

/// The producer's stream ended: the incomplete record it left is dropped and counted.
pub(crate) fn input_ended(cx: &mut Cx, ch: &mut Channel) {
    let Some(f) = ch.framed.as_mut() else { return };
    ch.stats.partial += u64::from(f.cutter.connection_start());
    f.conn = None;
    f.fresh = true;
    if let Some(c) = f.carry.take() {
        cx.pool.release(c.buf);
    }
}

/// One datagram of a `framing = line` channel (`len` bytes at `off` of `buf`, the caller's
/// reference given up): its lines go to datagram outputs one datagram each, and stream
/// outputs get whole lines (a `\n` is appended after a last line without one, where the
/// buffer has room). A line longer than `max_line` is dropped and counted.
pub(crate) fn on_datagram(cx: &mut Cx, ch: &mut Channel, ci: u16, buf: u16, off: u32, len: u32) {
    let Some(f) = ch.framed.as_mut() else {
        deliver(cx, ch, ci, buf, off, len, true);
        return;
    };
    let mut dl = std::mem::take(&mut f.dlines);
    dl.clear();
    datagram_lines(cx.pool.bytes(cx.mem, buf, off, len), f.max_line, &mut dl);
    let unterminated = cx.pool.bytes(cx.mem, buf, off, len).last() != Some(&b'\n');
    let room = off + len < cx.pool.size_of(buf);
    // Runs of good lines, each delivered as one chunk.
    let mut runs = 0u64;
    let mut i = 0;
    while i < dl.len() {
        let (at, l, good) = dl[i];
        if !good {
            ch.stats.malformed += 1;
            ch.stats.partial += u64::from(l);
            i += 1;
            continue;
        }
        let mut end = at + l;
        while i + 1 < dl.len() && dl[i + 1].2 {
            i += 1;
            end = dl[i].0 + dl[i].1;
        }
        i += 1;
        let last = end == len;
        if last && unterminated && room {
            cx.pool.append(cx.mem, buf, off + len, b"\n");
            if let Some(f) = ch.framed.as_mut() {
                f.newline = 1;
            }
        }
        cx.pool.retain(buf);
        if runs > 0 {
            ch.stats.datagrams -= 1;
        }
        runs += 1;
        deliver_records(cx, ch, ci, (buf, off + at, end - at), true, false);
    }
    if let Some(f) = ch.framed.as_mut() {
        f.dlines = dl;
    }
    if runs == 0 {
        ch.stats.datagrams += 1;
    }
    cx.pool.release(buf);
}

/// A subscriber joined (up, queue empty): the preamble goes first, then whole records as they
/// come (the carry guarantees the next chunk begins at a boundary).
pub(crate) fn joined(cx: &mut Cx, ch: &mut Channel, ci: u16, slot: u16) {
    let Some(c) = preamble_chunk(ch) else { return };
    let Some(q) = ch.ep_mut(slot).and_then(|e| e.queue.as_mut()) else {
        return;
    };
    if matches!(q.offer(c), Offer::Queued | Offer::QueuedBlocking) {
        cx.pool.retain(c.buf);
        kick(cx, ch, ci, slot);
    }
}

/// A stream link (collector) came up: with nothing queued, it starts like a subscriber that
/// joins, the preamble first and then whole records. With a backlog kept across the redial
/// (`on_slow = block`), it goes on with the backlog, in order: a preamble put in front of it
/// could belong to a later producer connection than the records it holds, and a write of the
/// old link may still carry the queue's front (its completion advances the queue). The same
/// with records in its spool, or while it replays them.
pub(crate) fn link_up(cx: &mut Cx, ch: &mut Channel, out: usize) {
    let Some(c) = preamble_chunk(ch) else { return };
    let o = &mut ch.outputs[out];
    if o.is_datagram() || o.file.is_some() || o.mqtt.is_some() || !o.queue.is_empty() {
        return;
    }
    // A spool that holds records replays them first: they are older than this preamble
    // (their own producer connections' preambles among them).
    if o.spool.as_ref().is_some_and(|s| !s.is_empty()) || !o.live {
        return;
    }
    if o.queue.push_front(c) {
        cx.pool.retain(c.buf);
    }
}

/// The line chunks of the delivery in progress for datagram outputs (empty: not cut), and
/// whether a `\n` follows the chunk for stream outputs (see [`Framed::lines`]).
pub(crate) fn lines_of(f: &Option<Framed>) -> (&[Chunk], u32) {
    f.as_ref()
        .map_or((&[][..], 0), |f| (&f.lines[..], f.newline))
}

/// What stream outputs get of a delivery's `plain` chunk: with the u32be length prefix in
/// front (`prefixed`), or with the `\n` appended after it (`newline`).
pub(crate) fn stream_chunk(plain: Chunk, prefixed: bool, newline: u32) -> Chunk {
    if prefixed {
        Chunk {
            buf: plain.buf,
            off: plain.off - PREFIX,
            len: plain.len + PREFIX,
        }
    } else {
        Chunk {
            len: plain.len + newline,
            ..plain
        }
    }
}

/// A framed channel's stream link lost its connection (`write_ops` is what its endpoint still
/// has in flight): with the queue's front chunk partly sent, the rest would begin the next
/// connection mid-record, so it is dropped whole once no write can still advance the queue.
/// The only bytes an output skips to align: counted (`skipped=` bytes, and one drop).
pub(crate) fn link_down(cx: &mut Cx, ch: &mut Channel, out: usize, write_ops: u32) {
    // A next connection that is up already has not written: `old_link_writing` held it.
    let busy = ch.outputs[out]
        .link
        .and_then(|s| ch.ep(s))
        .is_some_and(|e| e.write_ops > 0);
    let o = &mut ch.outputs[out];
    let kind = LinkKind {
        datagram: o.is_datagram(),
        file: o.file.is_some(),
        mqtt: o.mqtt.is_some(),
    };
    if !realigns(ch.framed.is_some(), kind) || busy || write_ops > 0 {
        return;
    }
    let Some(rest) = o.queue.front().filter(|_| o.queue.partly_sent()) else {
        return;
    };
    // A preamble cut short is not stream bytes lost: the next connection gets it whole, in
    // front of what the queue holds behind it (records of its own producer connection, or of
    // a later one behind that one's preamble). `link_up` adds it only to an empty queue.
    let replay =
        preamble_chunk_of(&ch.framed).filter(|p| rest.buf == p.buf && rest.off + rest.len <= p.len);
    let o = &mut ch.outputs[out];
    if let Some(b) = o.queue.skip_front() {
        cx.pool.release(b);
        match replay {
            Some(p) => {
                if o.queue.push_front(p) {
                    cx.pool.retain(p.buf);
                }
            }
            None => {
                o.stats.drops += 1;
                o.stats.skipped += u64::from(rest.len);
            }
        }
    }
}

/// What kind of link output lost its connection (see [`realigns`]).
#[derive(Clone, Copy, Debug)]
struct LinkKind {
    datagram: bool,
    file: bool,
    mqtt: bool,
}

/// Whether a link output of a channel (`framed`: with records) drops the rest of a partly sent
/// front chunk when its connection goes: only a stream link of a record channel, whose next
/// connection must begin at a record boundary. Not an `mqtt://` output: its queue's front is
/// partly done by whole messages (lines acknowledged), and its session holds the rest as
/// messages that it sends again on the next connection; dropping the chunk under them would
/// lose those records and misalign the session with its queue (the next message cut from
/// mid-record).
fn realigns(framed: bool, kind: LinkKind) -> bool {
    framed && !kind.datagram && !kind.file && !kind.mqtt
}

/// Whether a closed connection of link output `out` of a record channel still has writes in
/// flight: its next connection must not write before they complete.
pub(crate) fn old_link_writing(ch: &Channel, out: usize) -> bool {
    ch.framed.is_some()
        && ch
            .slots
            .iter()
            .flatten()
            .any(|e| e.role == Role::Link { out } && e.link == Link::Closing && e.write_ops > 0)
}

fn preamble_chunk(ch: &Channel) -> Option<Chunk> {
    preamble_chunk_of(&ch.framed)
}

fn preamble_chunk_of(f: &Option<Framed>) -> Option<Chunk> {
    let p = f.as_ref()?.preamble.as_ref()?;
    (p.len > 0).then_some(Chunk {
        buf: p.buf,
        off: 0,
        len: p.len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stream_link_of_a_record_channel_drops_a_partly_sent_chunk() {
        let stream = LinkKind {
            datagram: false,
            file: false,
            mqtt: false,
        };
        assert!(realigns(true, stream));
        assert!(
            !realigns(false, stream),
            "an unframed stream goes on mid-chunk"
        );
        for other in [
            LinkKind {
                datagram: true,
                ..stream
            },
            LinkKind {
                file: true,
                ..stream
            },
            LinkKind {
                mqtt: true,
                ..stream
            },
        ] {
            assert!(!realigns(true, other), "{other:?}");
        }
    }
}
