//! Cutting a channel's input into whole records before any output sees it: frames
//! (`sample` x `interleave` bytes), lines (`framing = line`) and the preamble of each producer
//! connection (`preamble = N`).
//!
//! Owns: the pure [`Cutter`] (which bytes of a read are preamble, whole records, a record that
//! straddles the end of the read, or an over-long line to drop), the line splitting of a
//! datagram ([`datagram_lines`]), and the buffers a framed channel holds between reads
//! ([`Held`]: the carry and the preamble). The engine glue is in `framed`.
//!
//! The rule it keeps: every chunk an output is offered begins and ends at a record boundary.
//! A record that straddles the end of a read is held back: its bytes are copied into the carry
//! and completed from the head of the next read, then delivered as one chunk before that read's
//! own whole records. So a subscriber that joins starts at a boundary, and an output that drops
//! (`on_slow = drop`, a backlog overflow, a collector that is down) drops whole records, with no
//! per-output bookkeeping: the copy is at most one record per read.
//!
//! Must never: hand out a partial record, or lose a byte uncounted (what is not delivered is
//! counted as partial bytes or a malformed line by the glue).

use super::buffers::BufId;

/// What a channel's records are, after the preamble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No records: only a preamble is cut off; the rest flows as it comes.
    Bytes,
    /// Frames of this many bytes.
    Frame(u32),
    /// Lines ending in `\n`, of at most `max` bytes with the `\n`.
    Line { max: u32 },
}

/// One decision about a range of a read (`at`, `len` are offsets into the read's bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Preamble bytes: kept for late joiners, and relayed in-stream to the outputs connected.
    Preamble { at: u32, len: u32 },
    /// Bytes appended to the carry (a record not yet complete).
    Carry { at: u32, len: u32 },
    /// The carry now holds one whole record: deliver it.
    CarryWhole,
    /// The carry is part of a line longer than `max_line`: drop it (one malformed line).
    CarryDropped,
    /// Whole records: deliver.
    Records { at: u32, len: u32 },
    /// Bytes of a line longer than `max_line`; `first` marks the piece that counts it.
    Dropped { at: u32, len: u32, first: bool },
}

/// The cutting state of one channel's stream input: pure, fed the bytes of each read in order.
#[derive(Clone, Debug)]
pub struct Cutter {
    kind: Kind,
    preamble: u32,
    /// Preamble bytes still to come on this connection.
    preamble_left: u32,
    /// Bytes in the carry.
    carry: u32,
    /// Inside a line longer than `max`, dropping up to its `\n`.
    skipping: bool,
    /// Bytes of a frame whose beginning was dropped, still to drop.
    skip: u32,
}

impl Cutter {
    pub fn new(kind: Kind, preamble: u32) -> Cutter {
        Cutter {
            kind,
            preamble,
            preamble_left: preamble,
            carry: 0,
            skipping: false,
            skip: 0,
        }
    }

    /// A producer connection begins: its preamble comes first, and the records count from
    /// after it. Returns the bytes of an incomplete record the last connection left (to count
    /// and drop with the carry).
    pub fn connection_start(&mut self) -> u32 {
        self.preamble_left = self.preamble;
        self.skipping = false;
        self.skip = 0;
        std::mem::take(&mut self.carry)
    }

    /// Whether the records are lines.
    pub fn is_line(&self) -> bool {
        matches!(self.kind, Kind::Line { .. })
    }

    /// Bytes in the carry.
    pub fn carry(&self) -> u32 {
        self.carry
    }

    /// Preamble bytes still to come on this connection.
    pub fn preamble_left(&self) -> u32 {
        self.preamble_left
    }

    /// Forgets the carry (its buffer could not be had): the record it began is dropped. A line
    /// resynchronises at the next `\n`; a frame's alignment is kept by skipping its rest.
    pub fn drop_carry(&mut self) -> u32 {
        let c = std::mem::take(&mut self.carry);
        match self.kind {
            Kind::Line { .. } => self.skipping = c > 0,
            Kind::Frame(w) if c > 0 => self.skip = w - c,
            _ => {}
        }
        c
    }

    /// Decides what each byte of `data` (the next read) is, in order, into `out`.
    pub fn cut(&mut self, data: &[u8], out: &mut Vec<Step>) {
        let n = data.len() as u32;
        let mut i = 0u32;
        if self.preamble_left > 0 {
            let k = self.preamble_left.min(n);
            if k > 0 {
                out.push(Step::Preamble { at: 0, len: k });
            }
            self.preamble_left -= k;
            i = k;
        }
        if i == n {
            return;
        }
        match self.kind {
            Kind::Bytes => out.push(Step::Records { at: i, len: n - i }),
            Kind::Frame(w) => {
                if self.skip > 0 {
                    let k = self.skip.min(n - i);
                    out.push(Step::Dropped {
                        at: i,
                        len: k,
                        first: false,
                    });
                    self.skip -= k;
                    i += k;
                    if self.skip > 0 {
                        return;
                    }
                }
                if self.carry > 0 {
                    let k = (w - self.carry).min(n - i);
                    out.push(Step::Carry { at: i, len: k });
                    self.carry += k;
                    i += k;
                    if self.carry < w {
                        return;
                    }
                    out.push(Step::CarryWhole);
                    self.carry = 0;
                }
                let whole = (n - i) / w * w;
                if whole > 0 {
                    out.push(Step::Records { at: i, len: whole });
                    i += whole;
                }
                if i < n {
                    out.push(Step::Carry { at: i, len: n - i });
                    self.carry = n - i;
                }
            }
            Kind::Line { max } => self.cut_lines(data, i, max, out),
        }
    }

    fn cut_lines(&mut self, data: &[u8], mut i: u32, max: u32, out: &mut Vec<Step>) {
        let n = data.len() as u32;
        let nl = |from: u32, to: u32| -> Option<u32> {
            data[from as usize..to as usize]
                .iter()
                .position(|&b| b == b'\n')
                .map(|p| from + p as u32)
        };
        loop {
            if i == n {
                return;
            }
            if self.skipping {
                match nl(i, n) {
                    None => {
                        out.push(Step::Dropped {
                            at: i,
                            len: n - i,
                            first: false,
                        });
                        return;
                    }
                    Some(j) => {
                        out.push(Step::Dropped {
                            at: i,
                            len: j + 1 - i,
                            first: false,
                        });
                        self.skipping = false;
                        i = j + 1;
                        continue;
                    }
                }
            }
            if self.carry > 0 {
                let room = max - self.carry;
                let end = n.min(i + room);
                match nl(i, end) {
                    Some(j) => {
                        out.push(Step::Carry {
                            at: i,
                            len: j + 1 - i,
                        });
                        out.push(Step::CarryWhole);
                        self.carry = 0;
                        i = j + 1;
                    }
                    None if n - i < room => {
                        out.push(Step::Carry { at: i, len: n - i });
                        self.carry += n - i;
                        return;
                    }
                    None => {
                        // Longer than max with what is here: the carry and the rest of the
                        // line up to its `\n` go.
                        out.push(Step::CarryDropped);
                        self.carry = 0;
                        self.skipping = true;
                    }
                }
                continue;
            }
            // Whole lines from `i`: runs of good lines are delivered as one chunk each.
            let mut run = i;
            let mut line = i;
            while let Some(j) = nl(line, n) {
                if j + 1 - line > max {
                    if line > run {
                        out.push(Step::Records {
                            at: run,
                            len: line - run,
                        });
                    }
                    out.push(Step::Dropped {
                        at: line,
                        len: j + 1 - line,
                        first: true,
                    });
                    run = j + 1;
                }
                line = j + 1;
            }
            if line > run {
                out.push(Step::Records {
                    at: run,
                    len: line - run,
                });
            }
            if line < n {
                let rest = n - line;
                if rest >= max {
                    out.push(Step::Dropped {
                        at: line,
                        len: rest,
                        first: true,
                    });
                    self.skipping = true;
                } else {
                    out.push(Step::Carry {
                        at: line,
                        len: rest,
                    });
                    self.carry = rest;
                }
            }
            return;
        }
    }
}

/// The lines of one datagram (`framing = line` on a datagram input): `(at, len, good)` with
/// `good` false for a line longer than `max`. The datagram's end ends its last line, with or
/// without a `\n`.
pub fn datagram_lines(data: &[u8], max: u32, out: &mut Vec<(u32, u32, bool)>) {
    let mut start = 0usize;
    while start < data.len() {
        let end = data[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |p| start + p + 1);
        let len = (end - start) as u32;
        out.push((start as u32, len, len <= max));
        start = end;
    }
}

/// A pool buffer a framed channel holds between reads (one reference), and the bytes in it.
/// Given back to the pool (a release of its buffer) when it is replaced, and when the
/// channel goes (a reload that removes it, or the shutdown).
#[derive(Debug, PartialEq, Eq)]
pub struct Held {
    pub buf: BufId,
    pub len: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Replays the steps: what the outputs get (each delivered chunk), and the bytes dropped.
    fn replay(c: &mut Cutter, data: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, Vec<u8>, u32) {
        let mut chunks = Vec::new();
        let mut pre = Vec::new();
        let mut carry: Vec<u8> = Vec::new();
        let mut dropped = 0u32;
        let mut steps = Vec::new();
        let mut start = 0;
        let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&x| x < data.len()).collect();
        bounds.sort();
        bounds.push(data.len());
        for end in bounds {
            if end <= start {
                continue;
            }
            let read = &data[start..end];
            steps.clear();
            c.cut(read, &mut steps);
            let mut seen = 0u32;
            for s in &steps {
                match *s {
                    Step::Preamble { at, len } => {
                        assert_eq!(at, seen);
                        seen += len;
                        pre.extend_from_slice(&read[at as usize..(at + len) as usize]);
                    }
                    Step::Carry { at, len } => {
                        assert_eq!(at, seen);
                        seen += len;
                        carry.extend_from_slice(&read[at as usize..(at + len) as usize]);
                    }
                    Step::CarryWhole => chunks.push(std::mem::take(&mut carry)),
                    Step::CarryDropped => dropped += std::mem::take(&mut carry).len() as u32,
                    Step::Records { at, len } => {
                        assert_eq!(at, seen);
                        assert!(len > 0);
                        seen += len;
                        chunks.push(read[at as usize..(at + len) as usize].to_vec());
                    }
                    Step::Dropped { at, len, .. } => {
                        assert_eq!(at, seen);
                        seen += len;
                        dropped += len;
                    }
                }
            }
            assert_eq!(seen as usize, read.len(), "every byte decided: {steps:?}");
            assert_eq!(carry.len() as u32, c.carry());
            start = end;
        }
        (chunks, pre, dropped + carry.len() as u32)
    }

    #[test]
    fn a_frame_straddling_reads_is_carried_whole() {
        let mut c = Cutter::new(Kind::Frame(4), 0);
        let mut s = Vec::new();
        c.cut(b"abcdef", &mut s);
        assert_eq!(
            s,
            [
                Step::Records { at: 0, len: 4 },
                Step::Carry { at: 4, len: 2 }
            ]
        );
        s.clear();
        c.cut(b"ghijklm", &mut s);
        assert_eq!(
            s,
            [
                Step::Carry { at: 0, len: 2 },
                Step::CarryWhole,
                Step::Records { at: 2, len: 4 },
                Step::Carry { at: 6, len: 1 }
            ]
        );
        assert_eq!(c.connection_start(), 1);
    }

    #[test]
    fn the_preamble_comes_first_and_frames_count_after_it() {
        let mut c = Cutter::new(Kind::Frame(2), 3);
        let (chunks, pre, left) = replay(&mut c, b"HDRaabbc", &[1, 4, 5]);
        assert_eq!(pre, b"HDR");
        assert_eq!(chunks.concat(), b"aabb");
        assert!(chunks.iter().all(|c| c.len() % 2 == 0));
        assert_eq!(left, 1);
    }

    #[test]
    fn an_overlong_line_is_dropped_and_the_next_one_kept() {
        let mut c = Cutter::new(Kind::Line { max: 8 }, 0);
        let data = b"ok\nthis line is long\n$GP,1\r\n";
        let (chunks, _, dropped) = replay(&mut c, data, &[5, 9, 12]);
        assert_eq!(chunks.concat(), b"ok\n$GP,1\r\n");
        assert_eq!(dropped, 18);
    }

    #[test]
    fn datagram_lines_end_at_the_datagram_end() {
        let mut v = Vec::new();
        datagram_lines(b"a\nbb\r\nccc", 4, &mut v);
        assert_eq!(v, [(0, 2, true), (2, 4, true), (6, 3, true)]);
        v.clear();
        datagram_lines(b"abcdef\nx", 4, &mut v);
        assert_eq!(v, [(0, 7, false), (7, 1, true)]);
    }

    proptest! {
        /// Over any packetisation, frames: every chunk is whole frames, and chunks + preamble
        /// + what is left equal the input, in order.
        #[test]
        fn frames_over_any_packetisation(
            w in 1u32..9, pre in 0u32..20,
            data in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..40),
        ) {
            let mut c = Cutter::new(Kind::Frame(w), pre);
            let (chunks, p, left) = replay(&mut c, &data, &cuts);
            prop_assert!(chunks.iter().all(|c| !c.is_empty() && c.len() as u32 % w == 0));
            let mut all = p.clone();
            all.extend(chunks.concat());
            let body = data.len().saturating_sub(pre as usize);
            prop_assert_eq!(left as usize, body % w as usize);
            prop_assert_eq!(&all[..], &data[..data.len() - left as usize]);
        }

        /// Lines: every chunk is whole lines of at most max bytes, and they are exactly the
        /// input's good lines, in order.
        #[test]
        fn lines_over_any_packetisation(
            max in 2u32..12,
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), Just(b'\r')], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..40),
        ) {
            let mut c = Cutter::new(Kind::Line { max }, 0);
            let (chunks, _, _) = replay(&mut c, &data, &cuts);
            let mut want = Vec::new();
            for l in data.split_inclusive(|&b| b == b'\n') {
                if l.ends_with(b"\n") && l.len() as u32 <= max {
                    want.extend_from_slice(l);
                }
            }
            for ch in &chunks {
                prop_assert!(ch.ends_with(b"\n"));
                for l in ch.split_inclusive(|&b| b == b'\n') {
                    prop_assert!(l.len() as u32 <= max);
                }
            }
            prop_assert_eq!(chunks.concat(), want);
        }
    }
}
