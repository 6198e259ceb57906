//! The spool of a dialed stream output at work: records into segments while the collector is
//! away or slow, replay through the output's queue when it is back, and the disk operations
//! on the ring.
//!
//! Owns: the output's mode (live: records to its queue; spooling: records to the spool,
//! behind whatever it holds, so nothing reorders), copying records into staging buffers (the
//! input's buffers are released at once: a spooling output holds none of them), submitting
//! the spool's disk operations and replay reads ([`super::spool::Spool`] plans them) and
//! handling their completions, sync points at `spool_sync`, and spilling what the queue
//! holds in memory into the spool when the output leaves live mode or the relay stops.
//! Must never: read or write a file itself ([`super::io::Sys`] opens, creates and removes
//! them; the ring does the rest), or let a replayed record overtake an older one.
//!
//! An `mqtt://` output consumes a record when its session lets it go (its PUBACK with QoS 1),
//! not when it is written; what the session holds stays queued when it spools (see [`spill`]).
//!
//! Modes: live -> spooling (link down, or one more record would put the queue over
//! `max_backlog`; the queue's records not yet begun go to the spool first) -> replaying (the
//! link is up and the spool holds records: they are read a buffer at a time whenever the
//! queue is below half its limit) -> live again once every record was read and the queue
//! holds them.

use super::channel::{Channel, Endpoint, Link, Output, Role};
use super::io::Op;
use super::outq::Chunk;
use super::spool::{piece_len, Admit, Cut, DiskOp, Lane, Pieces, Segment, Spool, Submit};
use super::spoolfmt::{self, Position};
use super::token::{OpKind, Token};
use super::{errno_str, Cx};
use log::{info, warn};
use std::time::Duration;

/// Wait before retrying a failed disk operation.
const DISK_RETRY: Duration = Duration::from_secs(1);
/// The generation field of a disk operation's token: which lane it ran on (the sync lane, or
/// the write in slot `gen - WRITE_SLOTS`).
const SYNC_LANE: u32 = 0;
const WRITE_SLOTS: u32 = 1;

/// Opens the spools of channel `ch`'s outputs (at start).
pub(crate) fn open(cx: &mut Cx, ch: &mut Channel) -> Result<(), String> {
    let bsize = cx.pool.buffer_size();
    for o in &mut ch.outputs {
        let Some(sc) = o.cfg.spool.clone() else {
            continue;
        };
        let f = cx
            .sys
            .spool_open(&sc.dir)
            .map_err(|e| format!("output {}: spool {}: {e}", o.url(), sc.dir.display()))?;
        for (seq, cut) in &f.cut {
            warn!(
                "output {}: spool segment {} had a torn tail of {cut} bytes (written up to a crash), cut off",
                o.url(),
                spoolfmt::segment_name(*seq)
            );
        }
        let mut sp = Spool::new(sc, f.segments, f.position, f.position_fd, bsize, cx.now);
        sp.cut = cut_of(&ch.cfg, &o.cfg.endpoint);
        if !sp.is_empty() {
            info!(
                "output {}: spool {} holds {} records ({} bytes) to replay first",
                o.url(),
                sp.cfg.dir.display(),
                sp.unread_records(),
                sp.size()
            );
            o.live = false;
        }
        o.spool = Some(sp);
    }
    Ok(())
}

/// Where the chunks channel `cfg` delivers to output `ep` may be cut into spool records: at
/// its records' ends, and for an `mqtt://` output of an unframed stream at a whole number of
/// `max_message` pieces, so that replay publishes the messages the chunk would have made
/// live (`mqtt_session::cut` cuts each chunk, and each replayed record, from its start).
fn cut_of(cfg: &crate::config::ChannelConfig, ep: &crate::config::url::Endpoint) -> Cut {
    if cfg.framing == crate::config::Framing::Line {
        Cut::Lines
    } else if let Some(w) = cfg.records.frame_bytes().filter(|_| cfg.is_framed_stream()) {
        Cut::Frames(w)
    } else if let Some(m) = ep
        .opts
        .mqtt
        .as_ref()
        .filter(|_| cfg.input.scheme.is_stream())
    {
        Cut::Frames(m.max_message)
    } else {
        Cut::Anywhere
    }
}

/// Whether output `oi` takes a record of `len` bytes into its spool rather than its queue
/// (switching to spooling when it must: the link is not up, or the queue would go over).
pub(crate) fn takes(cx: &mut Cx, o: &mut Output, at: At, len: u32) -> bool {
    if o.spool.is_none() {
        return false;
    }
    if o.live && at.up && !o.queue.would_exceed(len) {
        return false;
    }
    if o.live {
        o.live = false;
        spill(cx, o, at, false);
    }
    true
}

/// Offers a record to output `oi` of channel `ci` (its link `up` or not, the channel
/// `draining` or not): true when its spool took it (copied there behind what it holds; the
/// input's buffer is not kept), false when it goes to the queue as without a spool.
pub(crate) fn diverts(
    cx: &mut Cx,
    o: &mut Output,
    (ci, oi): (u16, usize),
    (up, held): (bool, usize),
    draining: bool,
    c: Chunk,
) -> bool {
    let at = At {
        ci,
        oi,
        up,
        draining,
        held,
    };
    if !takes(cx, o, at, c.len) {
        return false;
    }
    append(cx, o, at, c);
    true
}

/// Where an output is, for the calls that work on the output alone.
#[derive(Clone, Copy)]
pub(crate) struct At {
    pub ci: u16,
    pub oi: usize,
    /// Its link is up.
    pub up: bool,
    /// Its channel is stopping.
    pub draining: bool,
    /// Chunks at the front of its queue that writes of its links may still carry (at most:
    /// one per buffer they hold). A spill leaves them: a write's completion advances past
    /// what it sent, and the spool must not send them again.
    pub held: usize,
}

/// At most how many chunks of output `oi`'s queue writes in flight on its links carry.
pub(crate) fn held_by_writes(slots: &[Option<Endpoint>], oi: usize) -> usize {
    slots
        .iter()
        .flatten()
        .filter(|e| e.role == Role::Link { out: oi })
        .map(|e| e.writing.len())
        .sum()
}

/// Where output `oi` of `ch` is.
pub(crate) fn at(ch: &Channel, ci: u16, oi: usize) -> At {
    At {
        ci,
        oi,
        up: ch.outputs[oi]
            .link
            .and_then(|s| ch.ep(s))
            .is_some_and(|e| e.link == Link::Up),
        draining: ch.draining,
        held: held_by_writes(&ch.slots, oi),
    }
}

/// Moves the records of output `oi`'s queue not yet begun and not read from the spool into
/// the spool, in order; with `all`, also gives back the replayed ones (they stay on disk and
/// are read again: replay rewinds to the consumed position).
///
/// An MQTT output's "begun" records are those its session holds as messages (published and
/// not acknowledged, or waiting to be re-sent with DUP): they stay queued, and are copied to
/// the spool as well ([`keep_held`]), so that a stop that gives the queue up (`all`) finds
/// them on disk, in their place before the newer records.
///
/// The caller pumps, after it appended the record that made the output spool: a pump before
/// would find the spool empty and the queue under its limit, make the output live again, and
/// the records behind would overtake that one.
pub(crate) fn spill(cx: &mut Cx, o: &mut Output, at: At, all: bool) {
    let Some(sp) = o.spool.as_mut() else { return };
    let mut from = sp
        .handed
        .back()
        .map_or(0, |h| h.0)
        .max(o.queue.sent_total() + at.held as u64);
    if let Some(held) = super::mqtt_link::held_mark(o).filter(|&h| h > from) {
        keep_held(cx, o, at, from, held);
        from = held;
    }
    let memory = o.queue.take_from(from);
    for c in &memory {
        append(cx, o, at, *c);
        cx.pool.release(c.buf);
    }
    if all {
        if o.mqtt.is_some() {
            super::mqtt_link::spilled(cx.pool, o);
        }
        let sp = o.spool.as_mut().expect("checked");
        for c in o.queue.take_from(o.queue.sent_total() + at.held as u64) {
            cx.pool.release(c.buf);
        }
        // What the queue still holds (a begun record) keeps its mark; the rest is read again.
        let keep = o.queue.back_mark();
        while sp.handed.back().is_some_and(|h| h.0 > keep) {
            sp.handed.pop_back();
        }
        sp.read = sp.handed.back().map_or(sp.consumed, |h| h.1);
    }
}

/// Copies the chunks of output `o`'s queue of marks `from` + 1 ..= `to` (held by its MQTT
/// session, see [`super::mqtt_link::held_mark`]) into its spool, which has nothing left to
/// replay (the output was live): they stay queued as if read back from it, so the session
/// sends them as before, the spool lets them go once they are taken ([`sent`]), and replay
/// goes on after them.
fn keep_held(cx: &mut Cx, o: &mut Output, at: At, from: u64, to: u64) {
    if !o.spool.as_ref().is_some_and(|sp| sp.is_empty()) {
        return;
    }
    let base = o.queue.sent_total();
    let first = from.max(base);
    let held: Vec<Chunk> = o
        .queue
        .peek(o.queue.len())
        .take((to - base) as usize)
        .skip((first - base) as usize)
        .collect();
    // No replay read while the copies are appended: they are in the queue already.
    let quiet = At { up: false, ..at };
    for (mark, c) in (first + 1..).zip(held) {
        append(cx, o, quiet, c);
        let sp = o.spool.as_mut().expect("checked");
        let end = sp.segs.back().map_or(sp.read, |h| Position {
            segment: h.seq,
            offset: h.size,
        });
        sp.handed.push_back((mark, end));
        sp.read = end;
    }
    let sp = o.spool.as_mut().expect("checked");
    for s in &mut sp.segs {
        s.read_records = s.records;
    }
}

/// Copies a record (a pool chunk the caller keeps its reference to) into output `oi`'s spool.
pub(crate) fn append(cx: &mut Cx, o: &mut Output, at: At, c: Chunk) {
    let url = o.cfg.endpoint.url();
    let sp = o.spool.as_mut().expect("a spooling output");
    // A chunk longer than one staged buffer goes as several spool records, each of whole
    // records of the channel (`Cut`): a piece dropped at `spool_max`, or a collector
    // connection cut between two replayed pieces, must not leave part of a record.
    let most = sp.max_payload();
    let mut off = 0;
    while off < c.len {
        let rest = cx.pool.bytes(cx.mem, c.buf, c.off + off, c.len - off);
        let len = piece_len(sp.cut, rest, most);
        let mut gone = Vec::new();
        let admit = sp.admit(len, spare_buffers(cx), &mut gone);
        remove_segments(cx, &sp.cfg.dir, gone);
        if admit == Admit::Drop {
            o.stats.drops += 1;
            return;
        }
        if sp.needs_new_head(len) {
            match cx.sys.spool_create(&sp.cfg.dir, sp.next_seq) {
                Ok(fd) => sp.open_head(fd, cx.now),
                Err(e) => {
                    sp.stats.errors += 1;
                    sp.stats.dropped += 1;
                    o.stats.drops += 1;
                    if !sp.faulted {
                        sp.faulted = true;
                        warn!("output {url}: spool: cannot create a segment: {e}; records dropped (counted) until it can");
                    }
                    return;
                }
            }
        }
        let fresh = if sp.staging_fits(len) {
            None
        } else {
            match cx.pool.take() {
                Some(b) => {
                    cx.pool.filled(b);
                    Some(b)
                }
                None => {
                    sp.stats.dropped += 1;
                    o.stats.drops += 1;
                    return;
                }
            }
        };
        let pieces = sp.stage(fresh, len, cx.now);
        let crc = spoolfmt::crc32c(cx.pool.bytes(cx.mem, c.buf, c.off + off, len));
        let header = spoolfmt::header_of(len, crc);
        copy_record(cx, pieces, &header, (c.buf, c.off + off));
        off += len;
    }
    pump(cx, o, at);
}

/// Writes a record (its `header`, then the payload at `payload` of a pool buffer) into the
/// staged buffers' `pieces`, straight from the input's buffer: no copy in between.
fn copy_record(cx: &mut Cx, pieces: Pieces, header: &[u8], payload: (u16, u32)) {
    let h = header.len() as u32;
    let mut pos = 0u32; // bytes of the record placed so far
    for (buf, at, n) in pieces.into_iter().filter(|p| p.2 > 0) {
        let (mut at, end) = (at, pos + n);
        if pos < h {
            let k = end.min(h);
            cx.pool
                .append(cx.mem, buf, at, &header[pos as usize..k as usize]);
            at += k - pos;
            pos = k;
        }
        if pos < end {
            let k = end - pos;
            cx.pool
                .copy(cx.mem, (payload.0, payload.1 + pos - h, k), (buf, at));
            pos = end;
        }
    }
}

/// Staged buffers a spool may hold beyond its reserve now: the free large buffers past half
/// of the pool (the inputs' reads and the other outputs keep the rest).
fn spare_buffers(cx: &Cx) -> usize {
    let (free, all) = cx.pool.free_of(super::buffers::Class::Large);
    free.saturating_sub(all / 2)
}

fn remove_segments(cx: &mut Cx, dir: &std::path::Path, gone: Vec<Segment>) {
    for s in gone {
        cx.sys.close(s.fd);
        cx.sys.spool_remove(dir, s.seq);
    }
}

/// Submits the spool's next disk operation and, when the link is up and the queue has room,
/// its next replay read; goes live once replay caught up.
pub(crate) fn pump(cx: &mut Cx, o: &mut Output, at: At) {
    let At {
        ci,
        oi,
        up,
        draining,
        ..
    } = at;
    let Some(sp) = o.spool.as_mut() else { return };
    let tok = |kind| Token::new(kind, ci, oi as u16, 0);
    let lane = |gen| Token::new(OpKind::SpoolDisk, ci, oi as u16, gen);
    while let Some(next) = sp.next_disk(cx.now) {
        let op = match next {
            Submit::Write { slot } => {
                let f = sp.writing[slot].as_ref().expect("just submitted");
                let fd = sp.fd_of(f.seq).expect("a write's segment exists");
                let op = match f.parts[..] {
                    [(buf, off, len)] => Op::WriteAt {
                        fd,
                        chunk: Chunk { buf, off, len },
                        offset: f.offset,
                    },
                    _ => Op::WritevAt {
                        fd,
                        chunks: cx.span(f.parts.iter().map(|&(buf, off, len)| Chunk {
                            buf,
                            off,
                            len,
                        })),
                        offset: f.offset,
                    },
                };
                cx.push(op, lane(WRITE_SLOTS + slot as u32));
                continue;
            }
            Submit::Sync(op) => op,
        };
        match op {
            DiskOp::Write { .. } => unreachable!("writes go in slots"),
            DiskOp::Sync { seq, .. } => {
                let fd = sp.fd_of(seq).expect("a sync's segment exists");
                cx.push(Op::Fsync { fd }, lane(SYNC_LANE));
            }
            DiskOp::Position => {
                let (at, bytes) = sp.encode_position();
                match cx.pool.take() {
                    Some(b) => {
                        cx.pool.filled(b);
                        cx.pool.append(cx.mem, b, 0, &bytes);
                        // The position op holds this buffer: a write like the others.
                        sp.syncing = Some(DiskOp::Write {
                            seq: u64::MAX,
                            buf: b,
                            at: 0,
                            len: bytes.len() as u32,
                            offset: at,
                        });
                        cx.push(
                            Op::WriteAt {
                                fd: sp.position_fd,
                                chunk: Chunk {
                                    buf: b,
                                    off: 0,
                                    len: bytes.len() as u32,
                                },
                                offset: at,
                            },
                            lane(SYNC_LANE),
                        );
                    }
                    None => {
                        // No buffer now: the next sync point records it.
                        sp.syncing = None;
                        sp.recorded = Position {
                            segment: 0,
                            offset: 0,
                        };
                    }
                }
            }
        }
    }
    if !up || draining || o.queue.backlog() > o.cfg.max_backlog / 2 || o.live {
        return;
    }
    let queued = sp.disk_queued();
    if let Some((fd, seq, offset, len)) = sp.next_read() {
        let Some(b) = cx.pool.take() else { return };
        sp.reading = Some((b, seq, offset, len));
        cx.push(
            Op::ReadAt {
                fd,
                buf: b,
                len,
                offset,
            },
            tok(OpKind::SpoolRead),
        );
        return;
    }
    if sp.disk_queued() > queued {
        // Replay caught up with the staged tail and flushed it: submit that write now, or it
        // waits for the next completion or tick, and with nothing else in flight the replay's
        // last records wait with it.
        return pump(cx, o, at);
    }
    // Caught up, and the queue back under half its limits (a replay read of small records
    // may queue more chunks than its quota: live, the next record would spool again).
    if sp.is_empty() && o.queue.may_resume() {
        // From now on records go straight to the queue, behind the replayed ones.
        if sp.writes_pending() {
            return;
        }
        let n = sp.stats.replayed_records;
        o.live = true;
        info!(
            "output {}: spool replayed ({n} records); live again",
            o.url()
        );
    }
}

/// A disk operation of output `tok.ep`'s spool completed.
pub(crate) fn on_disk(cx: &mut Cx, ch: &mut Channel, tok: Token, res: i32) {
    let oi = tok.ep as usize;
    let ci = tok.chan;
    let o = &mut ch.outputs[oi];
    let url = o.cfg.endpoint.url();
    let Some(sp) = o.spool.as_mut() else { return };
    let lane = match tok.gen.checked_sub(WRITE_SLOTS) {
        Some(slot) => Lane::Write(slot as usize),
        None => Lane::Sync,
    };
    if let (
        Lane::Sync,
        Some(DiskOp::Write {
            seq: u64::MAX, buf, ..
        }),
    ) = (lane, sp.syncing)
    {
        // The position file's slot.
        sp.syncing = None;
        cx.pool.release(buf);
        if res < 0 {
            sp.stats.errors += 1;
            sp.recorded = Position {
                segment: 0,
                offset: 0,
            };
        }
        let a = at(ch, ci, oi);
        pump(cx, &mut ch.outputs[oi], a);
        return;
    }
    // What failed, for the log (described before the books forget it).
    let was = (res < 0).then(|| match lane {
        Lane::Sync => format!("{:?}", sp.syncing),
        Lane::Write(slot) => format!("{:?}", sp.writing[slot]),
    });
    let mut done = Vec::new();
    let failed = sp.disk_done(lane, res, cx.now, &mut done);
    for b in done {
        cx.pool.release(b);
    }
    if failed {
        sp.fault_until = Some(cx.now + DISK_RETRY);
        if !sp.faulted {
            sp.faulted = true;
            warn!(
                "output {url}: spool {}: {} failed: {}; retrying every {DISK_RETRY:?}",
                sp.cfg.dir.display(),
                was.unwrap_or_default(),
                errno_str(res)
            );
        }
        return;
    }
    if sp.faulted && sp.fault_until.is_some() {
        sp.faulted = false;
        sp.fault_until = None;
        info!("output {url}: spool writes again");
    }
    let a = at(ch, ci, oi);
    pump(cx, &mut ch.outputs[oi], a);
}

/// A replay read of output `tok.ep`'s spool completed: its whole records join the queue.
pub(crate) fn on_read(cx: &mut Cx, ch: &mut Channel, tok: Token, res: i32) {
    let oi = tok.ep as usize;
    let ci = tok.chan;
    let draining = ch.draining;
    let o = &mut ch.outputs[oi];
    let url = o.cfg.endpoint.url();
    let Some(sp) = o.spool.as_mut() else { return };
    let Some((b, seq, offset, _len)) = sp.reading else {
        return;
    };
    if res <= 0 || draining {
        sp.reading = None;
        cx.pool.abandon(b);
        if res < 0 {
            sp.stats.errors += 1;
            sp.fault_until = Some(cx.now + DISK_RETRY);
            warn!("output {url}: spool read failed: {}", errno_str(res));
        }
        return;
    }
    cx.pool.filled(b);
    let bytes = cx.pool.bytes(cx.mem, b, 0, res as u32);
    let mut found = Vec::new();
    let (end, _) = spoolfmt::scan(bytes, 0, |f| found.push(f));
    let payload: u64 = found.iter().map(|f| f.len as u64).sum();
    sp.read_done((seq, offset, res as u64), end, found.len() as u64, payload);
    for f in &found {
        if f.len == 0 {
            continue;
        }
        cx.pool.retain(b);
        o.queue.push_replayed(Chunk {
            buf: b,
            off: f.offset as u32,
            len: f.len as u32,
        });
        let mark = o.queue.back_mark();
        let pos = Position {
            segment: seq,
            offset: offset + (f.offset + f.len) as u64,
        };
        sp.handed.push_back((mark, pos));
    }
    cx.pool.release(b);
    if let Some(s) = o.link {
        super::output::kick(cx, ch, ci, s);
    }
    let a = at(ch, ci, oi);
    pump(cx, &mut ch.outputs[oi], a);
}

/// The output's queue sent some chunks: consumed records advance the position and whole
/// consumed segments go.
pub(crate) fn sent(cx: &mut Cx, ch: &mut Channel, ci: u16, oi: usize) {
    let o = &mut ch.outputs[oi];
    let mark = o.queue.sent_total();
    let Some(sp) = o.spool.as_mut() else { return };
    let mut gone = Vec::new();
    sp.consumed_to(mark, &mut gone);
    let dir = sp.cfg.dir.clone();
    remove_segments(cx, &dir, gone);
    let a = at(ch, ci, oi);
    pump(cx, &mut ch.outputs[oi], a);
}

/// After writes of channel `ci`: every spooling output's consumption.
pub(crate) fn after_sends(cx: &mut Cx, ch: &mut Channel, ci: u16) {
    for oi in 0..ch.outputs.len() {
        if ch.outputs[oi].spool.is_some() {
            sent(cx, ch, ci, oi);
        }
    }
}

/// Closes what a removed channel's spools hold open and gives back their buffers.
pub(crate) fn close(
    cx_pool: &mut super::buffers::BufferPool,
    sys: &mut dyn super::io::Sys,
    ch: &mut Channel,
) {
    for o in &mut ch.outputs {
        let Some(sp) = o.spool.take() else { continue };
        if let Some((b, _)) = sp.staging {
            cx_pool.release(b);
        }
        for d in &sp.disk {
            if let DiskOp::Write { buf, .. } = d {
                cx_pool.release(*buf);
            }
        }
        for s in &sp.segs {
            sys.close(s.fd);
        }
        sys.close(sp.position_fd);
    }
}

/// Whether every spool of the engine's channels has nothing left to write (or is faulted:
/// a stop does not wait for a disk that fails).
pub(crate) fn settled(ch: &Channel) -> bool {
    ch.outputs
        .iter()
        .filter_map(|o| o.spool.as_ref())
        .all(|s| s.in_flight() == 0 && (s.disk.is_empty() || s.fault_until.is_some()))
}

/// Once per tick: sync points at `spool_sync`, retries after a fault, replay.
pub(crate) fn tick(cx: &mut Cx, ch: &mut Channel, ci: u16) {
    for oi in 0..ch.outputs.len() {
        let Some(sp) = ch.outputs[oi].spool.as_mut() else {
            continue;
        };
        if cx.now.duration_since(sp.last_sync) >= sp.cfg.sync {
            sp.sync_point(cx.now);
        }
        let a = at(ch, ci, oi);
        pump(cx, &mut ch.outputs[oi], a);
    }
}

/// The relay stops (or the channel is replaced): what a spooling output holds in memory goes
/// to its spool (all of it with `all`; else only when its link is not up), then a sync point.
pub(crate) fn stopping(cx: &mut Cx, ch: &mut Channel, ci: u16, all: bool) {
    for oi in 0..ch.outputs.len() {
        if ch.outputs[oi].spool.is_none() {
            continue;
        }
        let a = at(ch, ci, oi);
        let o = &mut ch.outputs[oi];
        if all || !a.up {
            o.live = false;
            spill(cx, o, a, true);
        }
        let sp = o.spool.as_mut().expect("checked");
        sp.sync_point(cx.now);
        pump(cx, o, a);
    }
}

/// The oldest record's age in whole seconds (0 when empty).
pub fn oldest_age_secs(sp: &Spool, now: std::time::Instant) -> u64 {
    sp.oldest()
        .map_or(0, |t| now.saturating_duration_since(t).as_secs())
}

impl super::Engine {
    /// The oldest record's age in `sp`, in whole seconds at the engine's last tick (for the
    /// metrics snapshot, which reads no clock).
    pub fn spool_oldest_age_secs(&self, sp: &Spool) -> u64 {
        oldest_age_secs(sp, self.last_tick)
    }
}
