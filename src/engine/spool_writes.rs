//! The write side of a spool's books: staging records into pool buffers, the writes in flight
//! and the sync lane.
//!
//! Owns: the staging buffer being filled (a record may begin in one staged buffer and end in
//! the next: staged buffers are consecutive bytes of the segment file, so they pack whole and a
//! replay read, which always starts at a record, still finds every record whole within one
//! buffer), the queue of disk work in order ([`DiskOp`]), the writes in flight (up to
//! [`MAX_WRITES`], each a run of up to [`MAX_RUN`] consecutive staged buffers written with one
//! positioned gathered write), the sync lane (an fsync or the position file's write, one at a
//! time), and how far each segment is written and synced. Pure, like [`super::spool`].
//!
//! Writes run several at once, submitted in the order of their offsets, but positioned writes
//! to one file may complete in any order. So a segment's `written` (what replay may read) is
//! the lowest offset of a write not yet complete (queued, in flight, or the rest of a short
//! one), or the end of the writes when none is pending: never the end of a later write that
//! completed before an earlier one. An fsync is submitted only when no write is in flight
//! (every write queued before it completed), and it claims durable only the segment's
//! `written` at that moment ([`Segment::synced`] once it completed); writes queued after it go
//! on while it runs, since an fsync on ext4 takes milliseconds and the input must not wait.
//! Must never: count bytes as written that a pending write still owes, or let a sync overtake a
//! write queued before it.

use super::buffers::BufId;
use super::spool::{Segment, Spool};
use super::spoolfmt::{self, RECORD_HEADER};
use std::time::Instant;

/// Staged buffers queued or being written, at most: beyond, the disk is too slow and records
/// are dropped (counted) rather than held in the pool.
pub const MAX_STAGED: usize = 32;
/// Gathered writes in flight at most. A few keep the disk busy while the loop stages more, and
/// the staged buffers that wait meanwhile go as one larger write.
pub const MAX_WRITES: usize = 4;
/// Staged buffers one write takes at most.
pub const MAX_RUN: usize = 16;
/// Pool buffers a spool holds outside any queue at most: its staged buffers, the one being
/// filled, the position file's write and the replay read in flight.
pub const HELD_BUFFERS: u32 = MAX_STAGED as u32 + 3;

/// A disk operation of the spool, as queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskOp {
    /// Write `len` bytes of staged buffer `buf` at `offset` of segment `seq`.
    Write {
        seq: u64,
        buf: BufId,
        /// Where the bytes start in `buf` (past what a short write already wrote).
        at: u32,
        len: u32,
        offset: u64,
    },
    /// Sync segment `seq`; `upto` is its `written` when the sync was submitted (what the sync
    /// makes durable).
    Sync { seq: u64, upto: u64 },
    /// Record the consumed position (the caller encodes the slot).
    Position,
}

/// A write in flight: consecutive staged buffers at `offset` of segment `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flight {
    pub seq: u64,
    pub offset: u64,
    /// (buffer, where its bytes start, how many), in file order.
    pub parts: Vec<(BufId, u32, u32)>,
}

impl Flight {
    pub fn len(&self) -> u64 {
        self.parts.iter().map(|p| u64::from(p.2)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// What [`Spool::next_disk`] asks to submit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submit {
    /// The write in slot `slot` of [`Spool::writing`].
    Write { slot: usize },
    /// A sync or the position file's write, on the sync lane.
    Sync(DiskOp),
}

/// Which lane an operation ran on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Write(usize),
    Sync,
}

/// Where a record's bytes go in the staged buffers: one or two pieces (buffer, offset, bytes).
pub type Pieces = [(BufId, u32, u32); 2];

impl Spool {
    /// Operations (disk and replay reads) in flight.
    pub fn in_flight(&self) -> usize {
        self.writing.iter().flatten().count()
            + usize::from(self.syncing.is_some())
            + usize::from(self.reading.is_some())
    }

    /// Writes in flight.
    pub fn writes_in_flight(&self) -> usize {
        self.writing.iter().flatten().count()
    }

    /// Staged buffers queued or being written (the staging one apart).
    pub fn staged_buffers(&self) -> usize {
        self.disk
            .iter()
            .filter(|d| matches!(d, DiskOp::Write { .. }))
            .count()
            + self
                .writing
                .iter()
                .flatten()
                .map(|f| f.parts.len())
                .sum::<usize>()
    }

    /// Disk operations queued and not yet submitted.
    pub fn disk_queued(&self) -> usize {
        self.disk.len()
    }

    /// Whether a write is queued or in flight.
    pub fn writes_pending(&self) -> bool {
        self.writes_in_flight() > 0 || self.disk.iter().any(|d| matches!(d, DiskOp::Write { .. }))
    }

    /// Whether a disk operation in flight or queued touches segment `seq`.
    pub(super) fn disk_touches(&self, seq: u64) -> bool {
        self.writing.iter().flatten().any(|f| f.seq == seq)
            || self.syncing.is_some_and(|d| op_seq(d) == Some(seq))
            || self.disk.iter().any(|d| op_seq(*d) == Some(seq))
    }

    /// The lowest offset of segment `seq` a queued or in-flight write still owes.
    fn pending_from(&self, seq: u64) -> Option<u64> {
        let queued = self.disk.iter().filter_map(|d| match *d {
            DiskOp::Write { seq: s, offset, .. } if s == seq => Some(offset),
            _ => None,
        });
        let flying = self
            .writing
            .iter()
            .flatten()
            .filter(|f| f.seq == seq)
            .map(|f| f.offset);
        queued.chain(flying).min()
    }

    /// Whether the staging buffer has room for a whole record of `len` payload bytes (else
    /// the caller takes a fresh pool buffer for its rest and passes it to [`Spool::stage`]).
    pub fn staging_fits(&self, len: u32) -> bool {
        self.staging
            .is_some_and(|(_, used)| used + RECORD_HEADER as u32 + len <= self.buffer_size)
    }

    /// Queues the staged buffer for writing at the head's end.
    pub fn flush_staging(&mut self) {
        let Some((buf, used)) = self.staging.take() else {
            return;
        };
        let end = self.segs.back().expect("staging belongs to the head").size;
        self.queue_write(buf, used, end);
    }

    /// Queues staged buffer `buf` holding `used` bytes that end at `end` of the head.
    fn queue_write(&mut self, buf: BufId, used: u32, end: u64) {
        let h = self.segs.back().expect("staging belongs to the head");
        self.disk.push_back(DiskOp::Write {
            seq: h.seq,
            buf,
            at: 0,
            len: used,
            offset: end - u64::from(used),
        });
    }

    /// Books a record of `len` payload bytes at the head's end, staged behind what the
    /// staging buffer holds; `fresh` (given when [`Spool::staging_fits`] said no) takes the
    /// rest, and the full buffer before it is queued. Returns where the record's bytes go, in
    /// order (the second piece is empty when one buffer holds it all).
    pub fn stage(&mut self, fresh: Option<BufId>, len: u32, now: Instant) -> Pieces {
        let rec = RECORD_HEADER as u32 + len;
        let start = self.segs.back().expect("a head").size;
        let mut pieces = [(0, 0, 0); 2];
        let mut left = rec;
        if let Some((buf, used)) = self.staging {
            let n = (self.buffer_size - used).min(left);
            pieces[0] = (buf, used, n);
            self.staging = Some((buf, used + n));
            left -= n;
        }
        if let Some(b) = fresh {
            if let Some((old, used)) = self.staging.take() {
                self.queue_write(old, used, start + u64::from(rec - left));
            }
            let i = usize::from(pieces[0].2 > 0);
            pieces[i] = (b, 0, left);
            self.staging = Some((b, left));
            left = 0;
        }
        assert_eq!(left, 0, "a record staged without room for it");
        let h = self.segs.back_mut().expect("a head");
        if h.records == h.read_records && h.records == 0 {
            h.born = now;
        }
        h.size += u64::from(rec);
        h.records += 1;
        self.stats.spooled_records += 1;
        self.stats.spooled_bytes += u64::from(len);
        if self
            .staging
            .is_some_and(|(_, used)| used >= self.buffer_size)
        {
            self.flush_staging();
        }
        pieces
    }

    /// The next disk operation to submit, if its lane is free and no fault waits. A write
    /// takes the queue's front run of consecutive staged buffers (a sync in flight does not
    /// hold it back) into a free slot; a sync or position write at the front goes once no
    /// write is in flight (every write queued before it completed). Called until `None`.
    pub fn next_disk(&mut self, now: Instant) -> Option<Submit> {
        if self.fault_until.is_some_and(|t| now < t) {
            return None;
        }
        match *self.disk.front()? {
            DiskOp::Write { seq, offset, .. } => {
                let slot = self.writing.iter().position(|w| w.is_none())?;
                let mut f = Flight {
                    seq,
                    offset,
                    parts: Vec::new(),
                };
                let mut end = offset;
                while f.parts.len() < MAX_RUN {
                    match self.disk.front() {
                        Some(&DiskOp::Write {
                            seq: s,
                            buf,
                            at,
                            len,
                            offset: o,
                        }) if s == seq && o == end => {
                            f.parts.push((buf, at, len));
                            end += u64::from(len);
                            self.disk.pop_front();
                        }
                        _ => break,
                    }
                }
                self.writing[slot] = Some(f);
                Some(Submit::Write { slot })
            }
            DiskOp::Sync { seq, .. } => {
                if self.syncing.is_some() || self.writes_in_flight() > 0 {
                    return None;
                }
                self.disk.pop_front();
                let upto = self
                    .segs
                    .iter()
                    .find(|s| s.seq == seq)
                    .map_or(0, |s| s.written);
                let op = DiskOp::Sync { seq, upto };
                self.syncing = Some(op);
                Some(Submit::Sync(op))
            }
            DiskOp::Position => {
                if self.syncing.is_some() || self.writes_in_flight() > 0 {
                    return None;
                }
                self.disk.pop_front();
                self.syncing = Some(DiskOp::Position);
                Some(Submit::Sync(DiskOp::Position))
            }
        }
    }

    /// The fd of segment `seq`.
    pub fn fd_of(&self, seq: u64) -> Option<super::io::Fd> {
        self.segs.iter().find(|s| s.seq == seq).map(|s| s.fd)
    }

    /// The operation on `lane` completed with `res` (bytes for a write). The staged buffers
    /// written whole go to `released`; returns whether the operation failed (it is then
    /// retried from the front after the caller's backoff). A short write's rest goes first.
    pub fn disk_done(
        &mut self,
        lane: Lane,
        res: i32,
        now: Instant,
        released: &mut Vec<BufId>,
    ) -> bool {
        let f = match lane {
            Lane::Sync => {
                let op = self.syncing.take().expect("a sync in flight");
                if res < 0 {
                    self.stats.errors += 1;
                    self.disk.push_front(op);
                    return true;
                }
                if let DiskOp::Sync { seq, upto } = op {
                    if let Some(s) = self.segs.iter_mut().find(|s| s.seq == seq) {
                        s.synced = s.synced.max(upto);
                    }
                    self.last_sync = now;
                }
                return false;
            }
            Lane::Write(slot) => self.writing[slot].take().expect("a write in flight"),
        };
        let failed = res < 0;
        if failed {
            self.stats.errors += 1;
        }
        // Bytes of the run written: whole parts go back to the pool, the rest is queued again
        // at the front, in order.
        let mut n = u64::from(res.max(0) as u32).min(f.len());
        let mut offset = f.offset;
        let mut rest = Vec::new();
        for &(buf, at, len) in &f.parts {
            let k = n.min(u64::from(len)) as u32;
            n -= u64::from(k);
            offset += u64::from(k);
            if k == len {
                released.push(buf);
            } else {
                rest.push(DiskOp::Write {
                    seq: f.seq,
                    buf,
                    at: at + k,
                    len: len - k,
                    offset,
                });
                offset += u64::from(len - k);
            }
        }
        for op in rest.into_iter().rev() {
            self.disk.push_front(op);
        }
        let landed = f.offset + u64::from(res.max(0) as u32).min(f.len());
        let pending = self.pending_from(f.seq);
        if let Some(s) = self.segs.iter_mut().find(|s| s.seq == f.seq) {
            settle_written(s, landed, pending);
        }
        if landed > f.offset {
            self.dirty = true;
        }
        failed
    }

    /// Bytes of the spool that no completed fsync made durable yet: staged, being written, or
    /// written since the last sync of their segment. 0 means a crash now loses nothing spooled.
    pub fn unsynced(&self) -> u64 {
        self.segs
            .iter()
            .map(|s| s.size.saturating_sub(s.synced))
            .sum()
    }

    /// A sync point: flush staging, sync the head, then record the position.
    pub fn sync_point(&mut self, now: Instant) {
        self.flush_staging();
        if let Some(h) = self.segs.back() {
            if self.dirty || self.writes_pending() {
                self.disk.push_back(DiskOp::Sync {
                    seq: h.seq,
                    upto: 0,
                });
                self.dirty = false;
            }
        }
        if self.consumed != self.recorded && !self.disk.contains(&DiskOp::Position) {
            self.disk.push_back(DiskOp::Position);
        }
        self.last_sync = now;
    }

    /// The bytes of the position file's next slot for the consumed position, and where they go.
    pub fn encode_position(&mut self) -> (u64, Vec<u8>) {
        let (slot, bytes) = spoolfmt::encode_position(&self.position_file, self.consumed);
        let at = slot * bytes.len();
        if self.position_file.len() < at + bytes.len() {
            self.position_file.resize(at + bytes.len(), 0);
        }
        self.position_file[at..at + bytes.len()].copy_from_slice(&bytes);
        self.recorded = self.consumed;
        (at as u64, bytes.to_vec())
    }
}

/// A write of segment `s` completed up to `landed`; `pending` is the lowest offset a write
/// still owes. Only bytes below every pending write count as written.
fn settle_written(s: &mut Segment, landed: u64, pending: Option<u64>) {
    s.landed = s.landed.max(landed);
    let upto = pending.map_or(s.landed, |p| p.min(s.landed));
    s.written = s.written.max(upto);
}

pub(super) fn op_seq(d: DiskOp) -> Option<u64> {
    match d {
        DiskOp::Write { seq, .. } | DiskOp::Sync { seq, .. } => Some(seq),
        DiskOp::Position => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::spool::tests::{append, spool};

    #[test]
    fn a_failed_write_is_retried_and_a_short_one_continues() {
        let now = Instant::now();
        let mut sp = spool(now);
        let mut b = 0;
        let mut rel = Vec::new();
        append(&mut sp, 92, now, &mut b);
        sp.flush_staging();
        assert_eq!(sp.next_disk(now), Some(Submit::Write { slot: 0 }));
        assert!(sp.disk_done(Lane::Write(0), -28, now, &mut rel));
        assert_eq!(sp.next_disk(now), Some(Submit::Write { slot: 0 }));
        assert!(!sp.disk_done(Lane::Write(0), 40, now, &mut rel));
        assert!(rel.is_empty());
        assert_eq!(sp.segs[0].written, 40);
        assert_eq!(sp.next_disk(now), Some(Submit::Write { slot: 0 }));
        let f = sp.writing[0].clone().unwrap();
        assert_eq!((f.offset, f.parts.clone()), (40, vec![(1, 40, 60)]));
        assert!(!sp.disk_done(Lane::Write(0), 60, now, &mut rel));
        assert_eq!(rel, vec![1]);
        assert_eq!(sp.segs[0].written, 100);
    }

    #[test]
    fn writes_go_on_while_a_sync_runs_and_a_sync_waits_for_the_writes_before_it() {
        let now = Instant::now();
        let mut sp = spool(now);
        let mut b = 0;
        let mut rel = Vec::new();
        append(&mut sp, 92, now, &mut b);
        sp.sync_point(now);
        append(&mut sp, 92, now, &mut b);
        sp.flush_staging();
        // The first write, then nothing until it completed: the sync waits for it.
        assert_eq!(sp.next_disk(now), Some(Submit::Write { slot: 0 }));
        assert_eq!(sp.next_disk(now), None);
        assert!(!sp.disk_done(Lane::Write(0), 100, now, &mut rel));
        // The sync (covering the first write), and alongside it the write queued after it.
        assert_eq!(
            sp.next_disk(now),
            Some(Submit::Sync(DiskOp::Sync { seq: 1, upto: 100 }))
        );
        assert_eq!(sp.next_disk(now), Some(Submit::Write { slot: 0 }));
        assert_eq!(sp.writing[0].as_ref().unwrap().offset, 100);
        assert_eq!(sp.in_flight(), 2);
        assert!(!sp.disk_done(Lane::Write(0), 100, now, &mut rel));
        assert!(!sp.disk_done(Lane::Sync, 0, now, &mut rel));
        assert_eq!(rel, vec![1, 2]);
        assert_eq!((sp.segs[0].written, sp.segs[0].synced), (200, 100));
        assert_eq!(sp.in_flight(), 0);
        assert_eq!(
            sp.unsynced(),
            100,
            "the second record is written, not synced"
        );
    }

    #[test]
    fn unsynced_counts_staged_written_and_unsynced_bytes_until_a_sync_covers_them() {
        let now = Instant::now();
        let mut sp = spool(now);
        let mut b = 0;
        let mut rel = Vec::new();
        append(&mut sp, 92, now, &mut b);
        assert_eq!(sp.unsynced(), 100, "staged");
        sp.flush_staging();
        assert_eq!(sp.next_disk(now), Some(Submit::Write { slot: 0 }));
        assert!(!sp.disk_done(Lane::Write(0), 100, now, &mut rel));
        assert_eq!(sp.unsynced(), 100, "written, not synced");
        sp.sync_point(now);
        assert_eq!(
            sp.next_disk(now),
            Some(Submit::Sync(DiskOp::Sync { seq: 1, upto: 100 }))
        );
        assert_eq!(sp.unsynced(), 100, "the sync has not completed");
        assert!(!sp.disk_done(Lane::Sync, 0, now, &mut rel));
        assert_eq!(sp.unsynced(), 0);
        // A failed sync makes nothing durable.
        append(&mut sp, 92, now, &mut b);
        sp.sync_point(now);
        assert_eq!(sp.next_disk(now), Some(Submit::Write { slot: 0 }));
        assert!(!sp.disk_done(Lane::Write(0), 100, now, &mut rel));
        assert!(matches!(sp.next_disk(now), Some(Submit::Sync(_))));
        assert!(sp.disk_done(Lane::Sync, -5, now, &mut rel));
        assert_eq!(sp.unsynced(), 100);
    }

    #[test]
    fn writes_completing_out_of_order_count_as_written_only_up_to_the_first_pending() {
        let now = Instant::now();
        let mut sp = spool(now);
        let mut b = 0;
        let mut rel = Vec::new();
        // Three staged buffers of 200 bytes (a record straddles two of them), written one
        // each: the queue is drained before the next is staged.
        let mut slots = Vec::new();
        for _ in 0..6 {
            append(&mut sp, 92, now, &mut b);
            while let Some(Submit::Write { slot }) = sp.next_disk(now) {
                slots.push(slot);
            }
        }
        sp.flush_staging();
        while let Some(Submit::Write { slot }) = sp.next_disk(now) {
            slots.push(slot);
        }
        let offs: Vec<u64> = slots
            .iter()
            .map(|&s| sp.writing[s].as_ref().unwrap().offset)
            .collect();
        assert_eq!(offs, vec![0, 256, 512]);
        // The last completes first, then the second: nothing below a pending write counts.
        assert!(!sp.disk_done(Lane::Write(slots[2]), 88, now, &mut rel));
        assert!(!sp.disk_done(Lane::Write(slots[1]), 256, now, &mut rel));
        assert_eq!((sp.segs[0].written, sp.segs[0].landed), (0, 600));
        // A sync waits for the write in flight.
        sp.sync_point(now);
        assert_eq!(sp.next_disk(now), None);
        assert!(!sp.disk_done(Lane::Write(slots[0]), 256, now, &mut rel));
        assert_eq!(sp.segs[0].written, 600);
        assert_eq!(
            sp.next_disk(now),
            Some(Submit::Sync(DiskOp::Sync { seq: 1, upto: 600 }))
        );
    }

    #[test]
    fn staged_buffers_waiting_for_a_slot_go_as_one_write() {
        let now = Instant::now();
        let mut sp = spool(now);
        sp.cfg.segment = 100_000;
        let mut b = 0;
        let mut rel = Vec::new();
        // Every slot busy with a write of one buffer.
        for slot in 0..MAX_WRITES {
            append(&mut sp, 92, now, &mut b);
            sp.flush_staging();
            assert_eq!(sp.next_disk(now), Some(Submit::Write { slot }));
        }
        // What is staged meanwhile waits, then goes as one run.
        for _ in 0..20 {
            append(&mut sp, 92, now, &mut b);
        }
        sp.flush_staging();
        assert_eq!(sp.next_disk(now), None);
        assert!(!sp.disk_done(Lane::Write(2), 100, now, &mut rel));
        assert_eq!(sp.next_disk(now), Some(Submit::Write { slot: 2 }));
        let f = sp.writing[2].as_ref().unwrap();
        assert_eq!((f.offset, f.len(), f.parts.len()), (400, 2000, 8));
        assert_eq!(sp.next_disk(now), None);
        assert_eq!(
            sp.segs[0].written, 0,
            "the first writes are still in flight"
        );
    }
}
