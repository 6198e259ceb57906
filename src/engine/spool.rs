//! One output's disk spool, as books: which segments exist, where the next record goes, how
//! far replay read and how far the collector consumed, and what to ask the disk next.
//!
//! Owns: the segment list (oldest first; the last is the write head), the read cursor of
//! replay, the consumed position, the `spool_max` policy and the spool's counters. The write
//! side (staging records into pool buffers, the writes in flight, the sync lane, how far a
//! segment is written and synced) is [`super::spool_writes`]'s, on the same [`Spool`]. Pure:
//! it never touches a file; its caller (`spooling`) turns the [`DiskOp`]s and reads it plans
//! into ring operations and feeds the completions back.
//!
//! The interface an output kind uses: [`Spool::admit`] and [`Spool::stage`] to append a
//! record, [`Spool::next_read`] and [`Spool::read_done`] to replay the next records, and
//! [`Spool::consumed_to`] once the collector took them (a stream link: the queue sent them;
//! an MQTT output would call it at PUBACK).

use super::buffers::BufId;
use super::io::Fd;
use super::spool_writes::Flight;
pub use super::spool_writes::{DiskOp, Lane, Pieces, Submit, HELD_BUFFERS, MAX_STAGED, MAX_WRITES};
use super::spoolfmt::{self, Position, RECORD_HEADER};
use crate::config::spool::{SpoolConfig, SpoolFull};
use std::collections::VecDeque;
use std::time::Instant;

/// Where a chunk longer than one spool record holds may be cut into several: each piece is
/// whole records of the channel, so that a piece dropped at `spool_max`, a segment given up,
/// or a collector connection cut between two replayed pieces never leaves part of a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cut {
    /// Bytes without records, or datagrams without framing: anywhere. (For an `mqtt://`
    /// output, where a datagram is one message, the configuration makes every datagram fit
    /// one spool record.)
    #[default]
    Anywhere,
    /// Frames of this many bytes; for an `mqtt://` output of an unframed stream, its
    /// `max_message` pieces.
    Frames(u32),
    /// Just after a `\n`.
    Lines,
}

/// The length of the first piece of `bytes` (a chunk of whole records) that goes into one
/// spool record of at most `most` payload bytes: all of it when it fits, else the most whole
/// records that fit. A record longer than `most` is cut at `most` (the configuration refuses
/// such records on a spooled output).
pub fn piece_len(cut: Cut, bytes: &[u8], most: u32) -> u32 {
    let len = bytes.len() as u32;
    if len <= most {
        return len;
    }
    let whole = match cut {
        Cut::Anywhere => most,
        Cut::Frames(n) => most / n.max(1) * n.max(1),
        Cut::Lines => bytes[..most as usize]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i as u32 + 1),
    };
    if whole == 0 {
        most
    } else {
        whole
    }
}

/// One segment file.
#[derive(Debug)]
pub struct Segment {
    pub seq: u64,
    pub fd: Fd,
    /// Bytes assigned to it (written, being written, or staged).
    pub size: u64,
    /// Bytes whose writes completed, every one below too: replay reads only below this.
    pub written: u64,
    /// The end of the furthest write that completed (bytes between `written` and it may
    /// still wait for an earlier write).
    pub landed: u64,
    /// Bytes a completed fsync made durable.
    pub synced: u64,
    /// Records assigned to it, and those replay has read from it.
    pub records: u64,
    pub read_records: u64,
    /// When its first record came (the oldest-age gauge).
    pub born: Instant,
    /// No more records go to it (it was rolled over).
    pub sealed: bool,
}

/// What a new record may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Stage it (the caller then calls [`Spool::stage`]).
    Yes,
    /// Drop it, counted (`drop-newest` at `spool_max`, or the disk far behind).
    Drop,
}

/// Spool counters (shown with the output's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub spooled_bytes: u64,
    pub spooled_records: u64,
    pub replayed_bytes: u64,
    pub replayed_records: u64,
    /// Records dropped at `spool_max` (or with the disk too far behind).
    pub dropped: u64,
    /// Disk faults (a failed write, sync or read).
    pub errors: u64,
}

/// The spool of one output.
#[derive(Debug)]
pub struct Spool {
    pub cfg: SpoolConfig,
    pub segs: VecDeque<Segment>,
    /// The staging buffer being filled: (buffer, bytes used).
    pub staging: Option<(BufId, u32)>,
    /// Filled staging buffers waiting to be written, and other disk work, in order.
    pub disk: VecDeque<DiskOp>,
    /// The writes in flight, by slot (a slot names its completion).
    pub writing: [Option<Flight>; MAX_WRITES],
    /// The sync or position write in flight (the sync lane).
    pub syncing: Option<DiskOp>,
    /// Replay's next read: segment and offset of the next record not yet queued.
    pub read: Position,
    /// A replay read in flight: (buffer, segment, offset, len).
    pub reading: Option<(BufId, u64, u64, u32)>,
    /// A replay read found only part of a record before the written edge (segment, written):
    /// the rest is staged or being written, and reading again before the edge moves would
    /// find the same part.
    pub partial_at: Option<(u64, u64)>,
    /// Replayed records handed to the output, oldest first: (the output's consumption mark
    /// once they are taken, the position just past them).
    pub handed: VecDeque<(u64, Position)>,
    /// Consumed up to here (the collector took every record before it).
    pub consumed: Position,
    /// Last position recorded in the position file, and the file's bytes as written.
    pub recorded: Position,
    pub position_file: Vec<u8>,
    pub position_fd: Fd,
    /// Records were written since the last sync.
    pub dirty: bool,
    pub last_sync: Instant,
    /// A disk fault: retry at this time (logged once per episode).
    pub fault_until: Option<Instant>,
    pub faulted: bool,
    pub stats: SpoolStats,
    /// Buffer size of the pool: the most bytes of one read or staged write.
    pub buffer_size: u32,
    /// Sequence number of the next segment.
    pub next_seq: u64,
    /// Where a chunk of the channel's records may be cut into spool records.
    pub cut: Cut,
}

impl Spool {
    /// A spool over the segments found at start (`(seq, fd, valid bytes, records, records
    /// before the recorded position)`, oldest first) and the position file's bytes.
    pub fn new(
        cfg: SpoolConfig,
        found: Vec<(u64, Fd, u64, u64, u64)>,
        position_file: Vec<u8>,
        position_fd: Fd,
        buffer_size: u32,
        now: Instant,
    ) -> Spool {
        let recorded = spoolfmt::decode_position(&position_file).unwrap_or(Position {
            segment: 0,
            offset: 0,
        });
        let mut segs: VecDeque<Segment> = found
            .into_iter()
            .map(|(seq, fd, len, records, read_records)| Segment {
                seq,
                fd,
                size: len,
                written: len,
                landed: len,
                synced: len,
                records,
                read_records,
                born: now,
                sealed: true,
            })
            .collect();
        if let Some(last) = segs.back_mut() {
            last.sealed = false;
        }
        let next_seq = segs.back().map_or(1, |s| s.seq + 1);
        // Replay resumes at the recorded position, or at the oldest segment after it.
        let read = match segs.iter().find(|s| s.seq >= recorded.segment) {
            Some(s) if s.seq == recorded.segment => Position {
                segment: s.seq,
                offset: recorded.offset.min(s.written),
            },
            Some(s) => Position {
                segment: s.seq,
                offset: 0,
            },
            None => Position {
                segment: next_seq,
                offset: 0,
            },
        };
        Spool {
            cfg,
            segs,
            staging: None,
            disk: VecDeque::new(),
            writing: Default::default(),
            syncing: None,
            read,
            reading: None,
            partial_at: None,
            handed: VecDeque::new(),
            consumed: read,
            recorded: read,
            position_file,
            position_fd,
            dirty: false,
            last_sync: now,
            fault_until: None,
            faulted: false,
            stats: SpoolStats::default(),
            buffer_size,
            next_seq,
            cut: Cut::Anywhere,
        }
    }

    /// Bytes of segments on disk or staged (what `spool_max` limits).
    pub fn size(&self) -> u64 {
        self.segs.iter().map(|s| s.size).sum()
    }

    /// Records in the spool not yet handed to the output.
    pub fn unread_records(&self) -> u64 {
        self.segs
            .iter()
            .map(|s| s.records - s.read_records)
            .sum::<u64>()
    }

    /// Nothing left to replay: every record was handed to the output.
    pub fn is_empty(&self) -> bool {
        self.reading.is_none()
            && self.segs.back().is_none_or(|h| {
                self.read.segment > h.seq
                    || (self.read.segment == h.seq && self.read.offset >= h.size)
            })
    }

    /// When the oldest record still in the spool came.
    pub fn oldest(&self) -> Option<Instant> {
        self.segs
            .iter()
            .find(|s| s.records > s.read_records)
            .map(|s| s.born)
    }

    /// The largest record payload one staged buffer (and one replay read) holds.
    pub fn max_payload(&self) -> u32 {
        self.buffer_size - RECORD_HEADER as u32
    }

    /// Whether a record of `len` payload bytes may be staged; applies `spool_max` (a
    /// `drop-oldest` spool gives up its oldest whole segments first: their fds and the
    /// records lost are returned through `deleted`). `spare` is how many staged buffers the
    /// pool lends beyond [`MAX_STAGED`] now (its buffers that nobody needs: a burst waits in
    /// them for the disk rather than being dropped).
    pub fn admit(&mut self, len: u32, spare: usize, deleted: &mut Vec<Segment>) -> Admit {
        let need = RECORD_HEADER as u64 + u64::from(len);
        if self.staged_buffers() >= MAX_STAGED + spare {
            self.stats.dropped += 1;
            return Admit::Drop;
        }
        while self.size() + need > self.cfg.max {
            if self.cfg.full == SpoolFull::DropNewest || !self.drop_oldest(deleted) {
                self.stats.dropped += 1;
                return Admit::Drop;
            }
        }
        Admit::Yes
    }

    /// Gives up the oldest segment if nothing is in flight on it and it is not the write
    /// head; its unread records are counted dropped.
    fn drop_oldest(&mut self, deleted: &mut Vec<Segment>) -> bool {
        if self.segs.len() < 2 {
            return false;
        }
        let seq = self.segs[0].seq;
        let busy = self.reading.is_some_and(|r| r.1 == seq) || self.disk_touches(seq);
        if busy {
            return false;
        }
        let s = self.segs.pop_front().expect("two segments");
        self.stats.dropped += s.records - s.read_records;
        if self.read.segment <= seq {
            let next = self.segs[0].seq;
            self.read = Position {
                segment: next,
                offset: 0,
            };
            if self.consumed.segment <= seq {
                self.consumed = self.read;
            }
        }
        deleted.push(s);
        true
    }

    /// The segment a record of `len` payload bytes goes to: the write head, unless it is
    /// full (then it is sealed and the caller opens segment [`Spool::next_seq`] and passes
    /// it to [`Spool::open_head`]). Returns whether a new segment is needed.
    pub fn needs_new_head(&self, len: u32) -> bool {
        let need = RECORD_HEADER as u64 + u64::from(len);
        match self.segs.back() {
            Some(h) => h.sealed || h.size + need > self.cfg.segment,
            None => true,
        }
    }

    /// Seals the current head (its staging is flushed and a sync queued) and makes `fd` the
    /// new head, segment [`Spool::next_seq`].
    pub fn open_head(&mut self, fd: Fd, now: Instant) {
        self.flush_staging();
        if let Some(h) = self.segs.back_mut() {
            if !h.sealed {
                h.sealed = true;
                self.disk.push_back(DiskOp::Sync {
                    seq: h.seq,
                    upto: 0,
                });
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.segs.is_empty() && self.read.segment < seq {
            self.read = Position {
                segment: seq,
                offset: 0,
            };
            self.consumed = self.consumed.max(self.read);
        }
        self.segs.push_back(Segment {
            seq,
            fd,
            size: 0,
            written: 0,
            landed: 0,
            synced: 0,
            records: 0,
            read_records: 0,
            born: now,
            sealed: false,
        });
    }

    /// Replay's next read, if replay may read now: (segment fd, segment, offset, len). Reads
    /// only written bytes; staged ones are flushed first (the caller pumps the disk).
    pub fn next_read(&mut self) -> Option<(Fd, u64, u64, u32)> {
        if self.reading.is_some() {
            return None;
        }
        loop {
            let Some(i) = self.segs.iter().position(|s| s.seq == self.read.segment) else {
                // Its segment was deleted once consumed: go on at the next one.
                let next = self.segs.iter().find(|s| s.seq > self.read.segment)?;
                self.read = Position {
                    segment: next.seq,
                    offset: 0,
                };
                continue;
            };
            let s = &self.segs[i];
            let partial = self.partial_at == Some((s.seq, s.written));
            if self.read.offset < s.written && !partial {
                let len = (s.written - self.read.offset).min(u64::from(self.buffer_size)) as u32;
                return Some((s.fd, s.seq, self.read.offset, len));
            }
            if self.read.offset < s.size {
                // Its last records are staged or being written: flush and wait. Flushed only
                // when no write is pending: a replay that keeps up with the head would else
                // flush a small write per read and fill the staging quota with them.
                if self.staging.is_some()
                    && !self.writes_pending()
                    && self.segs.back().is_some_and(|h| h.seq == s.seq)
                {
                    self.flush_staging();
                }
                return None;
            }
            if !s.sealed || i + 1 >= self.segs.len() {
                return None;
            }
            self.read = Position {
                segment: self.segs[i + 1].seq,
                offset: 0,
            };
        }
    }

    /// A replay read of `got` bytes at (`seq`, `offset`) came back in `buf`: `records` are the
    /// whole records found (payload offset and length in the buffer) and `end` the bytes they
    /// take. The caller queues them, then calls [`Spool::handed_to`] with its mark.
    /// `got` is the bytes the read returned: when they end in part of a record (its rest not
    /// written yet), the next read waits until the segment's written edge moves.
    pub fn read_done(
        &mut self,
        (seq, offset, got): (u64, u64, u64),
        end: usize,
        records: u64,
        bytes: u64,
    ) {
        self.reading = None;
        if self.read.segment != seq || self.read.offset != offset {
            return; // dropped by drop-oldest meanwhile
        }
        self.partial_at = None;
        if (end as u64) < got {
            let edge = offset + got;
            if let Some(s) = self.segs.iter().find(|s| s.seq == seq && s.written == edge) {
                self.partial_at = Some((s.seq, s.written));
            }
        }
        self.read.offset += end as u64;
        if let Some(s) = self.segs.iter_mut().find(|s| s.seq == seq) {
            s.read_records += records;
        }
        self.stats.replayed_records += records;
        self.stats.replayed_bytes += bytes;
    }

    /// The records handed so far are consumed once the output's mark reaches `mark`.
    pub fn handed_to(&mut self, mark: u64) {
        self.handed.push_back((mark, self.read));
    }

    /// The output's consumption mark is now `mark`: records handed before it were taken.
    /// Returns the segments wholly consumed, to delete.
    pub fn consumed_to(&mut self, mark: u64, gone: &mut Vec<Segment>) {
        while let Some(&(m, pos)) = self.handed.front() {
            if m > mark {
                break;
            }
            self.handed.pop_front();
            self.consumed = self.consumed.max(pos);
        }
        // Segments before the consumed one, sealed, with nothing in flight, go whole.
        while self.segs.len() > 1 {
            let s = &self.segs[0];
            let whole = s.seq < self.consumed.segment
                || (s.sealed && s.seq == self.consumed.segment && self.consumed.offset >= s.size);
            let busy = self.reading.is_some_and(|r| r.1 == s.seq) || self.disk_touches(s.seq);
            if !whole || busy {
                break;
            }
            let s = self.segs.pop_front().expect("checked");
            if !self.disk.contains(&DiskOp::Position) && self.consumed != self.recorded {
                self.disk.push_back(DiskOp::Position);
            }
            gone.push(s);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    pub(crate) fn cfg(max: u64, full: SpoolFull) -> SpoolConfig {
        SpoolConfig {
            dir: PathBuf::from("/s"),
            max,
            full,
            segment: 1000,
            sync: Duration::from_secs(1),
        }
    }

    /// Appends one record of `len` bytes the way `spooling` does, with fds counting up.
    pub(crate) fn append(sp: &mut Spool, len: u32, now: Instant, next_buf: &mut u16) -> bool {
        let mut gone = Vec::new();
        if sp.admit(len, 0, &mut gone) == Admit::Drop {
            return false;
        }
        if sp.needs_new_head(len) {
            sp.open_head(100 + sp.next_seq as i32, now);
        }
        let fresh = (!sp.staging_fits(len)).then(|| {
            *next_buf += 1;
            *next_buf
        });
        sp.stage(fresh, len, now);
        true
    }

    /// An empty spool of 1000-byte segments, 256-byte staged buffers, dropping the oldest.
    pub(crate) fn spool(now: Instant) -> Spool {
        Spool::new(
            cfg(10_000, SpoolFull::DropOldest),
            vec![],
            vec![],
            9,
            256,
            now,
        )
    }

    /// Runs every queued disk op to completion.
    pub(crate) fn settle(sp: &mut Spool, now: Instant) {
        sp.flush_staging();
        let mut released = Vec::new();
        while let Some(op) = sp.next_disk(now) {
            let (lane, res) = match op {
                Submit::Write { slot } => {
                    let len = sp.writing[slot].as_ref().expect("submitted").len();
                    (Lane::Write(slot), len as i32)
                }
                Submit::Sync(_) => (Lane::Sync, 0),
            };
            assert!(!sp.disk_done(lane, res, now, &mut released));
        }
    }

    /// Replay right behind the head: a record whose start is written and whose rest is still
    /// staged. A read that ends in its written part must make the next read wait for the
    /// written edge to move, and flush the staged rest so that it does, not read the same part
    /// again (a busy loop of reads until a sync point flushed it, up to `spool_sync` late).
    #[test]
    fn a_read_ending_in_part_of_a_record_flushes_the_rest_and_waits_for_it() {
        let now = Instant::now();
        let mut sp = spool(now);
        let mut b = 0;
        // 100 bytes a record in 256-byte staged buffers: the third record's first 56 bytes
        // fill the first buffer (queued when full), its last 44 are staged in the second.
        for _ in 0..3 {
            assert!(append(&mut sp, 92, now, &mut b));
        }
        let mut released = Vec::new();
        while let Some(op) = sp.next_disk(now) {
            let Submit::Write { slot } = op else {
                panic!("only writes are queued")
            };
            let len = sp.writing[slot].as_ref().expect("submitted").len();
            assert!(!sp.disk_done(Lane::Write(slot), len as i32, now, &mut released));
        }
        assert_eq!(sp.segs[0].written, 256);
        assert!(sp.staging.is_some(), "the rest is staged");
        let (_, seq, off, len) = sp.next_read().expect("two records to read");
        assert_eq!((off, len), (0, 256));
        sp.reading = Some((0, seq, off, len));
        // Two whole records, then the written part of the third.
        sp.read_done((seq, off, 256), 200, 2, 184);
        assert_eq!(sp.disk_queued(), 0);
        assert_eq!(sp.next_read(), None, "the third's written part again");
        assert_eq!(sp.disk_queued(), 1, "the staged rest is queued for writing");
        settle(&mut sp, now);
        let (_, _, off, len) = sp.next_read().expect("the whole third record");
        assert_eq!((off, len), (200, 100));
    }

    #[test]
    fn records_roll_segments_and_replay_in_order_then_delete_whole_segments() {
        let now = Instant::now();
        let mut sp = spool(now);
        let mut b = 0;
        for _ in 0..30 {
            assert!(append(&mut sp, 92, now, &mut b));
            settle(&mut sp, now);
        }
        // 100 bytes a record, 1000 a segment: three segments of ten.
        assert_eq!(sp.segs.len(), 3);
        assert_eq!(sp.unread_records(), 30);
        let mut mark = 0;
        let mut gone = Vec::new();
        while let Some((_, seq, off, len)) = sp.next_read() {
            sp.reading = Some((0, seq, off, len));
            let whole = (len / 100) as u64;
            sp.read_done(
                (seq, off, u64::from(len)),
                (whole * 100) as usize,
                whole,
                whole * 92,
            );
            mark += whole;
            sp.handed_to(mark);
            sp.consumed_to(mark, &mut gone);
        }
        assert_eq!(sp.stats.replayed_records, 30);
        assert!(sp.is_empty(), "{:?} {:?}", sp.read, sp.segs);
        // The first two segments went whole; the head stays.
        assert_eq!(gone.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn drop_newest_refuses_and_drop_oldest_gives_up_a_whole_segment_counted() {
        let now = Instant::now();
        for (full, kept_first) in [(SpoolFull::DropNewest, 1), (SpoolFull::DropOldest, 2)] {
            let mut sp = Spool::new(cfg(2000, full), vec![], vec![], 9, 256, now);
            let mut b = 0;
            let mut ok = 0;
            for _ in 0..25 {
                ok += u64::from(append(&mut sp, 92, now, &mut b));
                settle(&mut sp, now);
            }
            assert!(sp.size() <= 2000);
            assert_eq!(
                ok + sp.stats.dropped - if kept_first == 2 { 10 } else { 0 },
                25
            );
            assert_eq!(sp.segs[0].seq, kept_first);
        }
    }

    #[test]
    fn a_long_chunk_is_cut_into_pieces_of_whole_records() {
        // Frames of 3 bytes: a chunk of 4,095 bytes in records of at most 4,088.
        let chunk = vec![7u8; 4095];
        let mut pieces = Vec::new();
        let mut off = 0;
        while off < chunk.len() {
            let n = piece_len(Cut::Frames(3), &chunk[off..], 4088) as usize;
            pieces.push(n);
            off += n;
        }
        assert_eq!(pieces, vec![4086, 9]);
        assert!(pieces.iter().all(|n| n % 3 == 0));
        // Lines: cut after the last `\n` that fits.
        let mut lines = b"abc\n".repeat(1100);
        lines.extend_from_slice(b"0123456789\n");
        assert_eq!(piece_len(Cut::Lines, &lines, 4088), 4088);
        assert_eq!(piece_len(Cut::Lines, &lines[1..], 4088), 4087);
        // Bytes are cut anywhere; a chunk that fits is one piece.
        assert_eq!(piece_len(Cut::Anywhere, &chunk, 4088), 4088);
        assert_eq!(piece_len(Cut::Frames(3), &chunk[..300], 4088), 300);
        // A record longer than a piece (refused by the configuration) is cut at the limit.
        assert_eq!(piece_len(Cut::Frames(5000), &chunk, 4088), 4088);
        assert_eq!(piece_len(Cut::Lines, &chunk, 4088), 4088);
    }

    #[test]
    fn a_restart_resumes_at_the_recorded_position() {
        let now = Instant::now();
        let (_, slot) = spoolfmt::encode_position(
            &[],
            Position {
                segment: 2,
                offset: 300,
            },
        );
        let sp = Spool::new(
            cfg(10_000, SpoolFull::DropOldest),
            vec![(2, 5, 1000, 10, 3), (3, 6, 500, 5, 0)],
            slot.to_vec(),
            9,
            256,
            now,
        );
        assert_eq!(
            sp.read,
            Position {
                segment: 2,
                offset: 300
            }
        );
        assert_eq!(sp.next_seq, 4);
        assert!(!sp.segs[1].sealed);
        assert_eq!(sp.unread_records(), 12);
    }
}
