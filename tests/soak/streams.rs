//! What the soak test sends, and how every receiver checks it as it arrives.
//!
//! * A TCP producer's connection `c` of stream `s` is a run of 16-byte records: record `k` is
//!   `c` (u32le), `k` (u32le) and a check word `mix(s, c, k)` (u64le). Byte `off` of the
//!   connection is byte `off % 16` of record `off / 16`, so any receiver can find where it is
//!   from any 31 consecutive bytes (one whole record, whose check word a wrong byte breaks) and
//!   then predict every following byte. [`StreamCheck`] does that: in [`Gaps::Exact`] the bytes
//!   must continue without a gap, except from the very end of a producer connection to the
//!   start of the next one; in [`Gaps::Forward`] (outputs that drop) they may jump, but only
//!   forward. A wrong byte anywhere fails both.
//! * A datagram of stream `s` with sequence number `q` is `q` (u64be) followed by bytes drawn
//!   from `mix(s, q, 0)`; its length is a function of `q` too ([`datagram`]). [`FrameCheck`]
//!   splits a `framing = u32be` stream into datagrams and checks each, and that sequence
//!   numbers only increase. [`SeqSet`] holds the numbers a receiver saw.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Bytes per stream record.
pub const REC: usize = 16;
/// A receiver that holds this many unplaced bytes and finds no record among them has got bytes
/// that are no record at all.
const FIND_WINDOW: usize = 2 * REC - 1;

/// The splitmix64 finaliser: a bijection that scatters every input bit.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn check_word(stream: u32, conn: u32, k: u32) -> u64 {
    mix(mix(((stream as u64) << 32) | conn as u64) ^ k as u64)
}

/// Record `k` of connection `conn` of `stream`.
pub fn record(stream: u32, conn: u32, k: u32) -> [u8; REC] {
    let mut r = [0u8; REC];
    r[..4].copy_from_slice(&conn.to_le_bytes());
    r[4..8].copy_from_slice(&k.to_le_bytes());
    r[8..].copy_from_slice(&check_word(stream, conn, k).to_le_bytes());
    r
}

/// Bytes `off..off + out.len()` of connection `conn`.
pub fn fill(stream: u32, conn: u32, off: u64, out: &mut [u8]) {
    let mut at = 0;
    while at < out.len() {
        let pos = off + at as u64;
        let r = record(stream, conn, (pos / REC as u64) as u32);
        let i = (pos % REC as u64) as usize;
        let n = (REC - i).min(out.len() - at);
        out[at..at + n].copy_from_slice(&r[i..i + n]);
        at += n;
    }
}

/// How long each producer connection of a stream turned out, filled in by the producer before
/// it closes (so before any receiver can see the next connection's bytes).
#[derive(Default)]
pub struct ConnLengths(Mutex<HashMap<u32, u64>>);

impl ConnLengths {
    pub fn set(&self, conn: u32, len: u64) {
        self.0.lock().unwrap().insert(conn, len);
    }
    pub fn get(&self, conn: u32) -> Option<u64> {
        self.0.lock().unwrap().get(&conn).copied()
    }
    pub fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Which discontinuities a receiver may see.
#[derive(Clone)]
pub enum Gaps {
    /// None, but one: from the end of producer connection `c` (its length known) to byte 0 of
    /// `c + 1`.
    Exact(Arc<ConnLengths>),
    /// Any jump forward (an output that drops chunks).
    Forward,
}

/// Checks one receiver's stream of records as it arrives.
pub struct StreamCheck {
    stream: u32,
    gaps: Gaps,
    /// Connection and offset of the next byte expected, once placed.
    pos: Option<(u32, u64)>,
    pending: Vec<u8>,
    pub bytes: u64,
    /// Forward jumps taken (Forward) or connection boundaries crossed (Exact).
    pub jumps: u64,
    /// Bytes skipped because no record could be found among them (Forward only: chunks
    /// shorter than a record on both sides of drops).
    pub unplaced: u64,
}

impl StreamCheck {
    pub fn new(stream: u32, gaps: Gaps) -> StreamCheck {
        StreamCheck {
            stream,
            gaps,
            pos: None,
            pending: Vec::new(),
            bytes: 0,
            jumps: 0,
            unplaced: 0,
        }
    }

    /// Where the next byte is expected: (producer connection, offset).
    pub fn position(&self) -> Option<(u32, u64)> {
        self.pos
    }

    /// How many leading bytes of `data` are bytes `off..` of connection `conn`.
    fn matching(&self, conn: u32, off: u64, data: &[u8]) -> usize {
        let mut want = [0u8; 4096];
        let mut at = 0;
        while at < data.len() {
            let n = want.len().min(data.len() - at);
            fill(self.stream, conn, off + at as u64, &mut want[..n]);
            if let Some(i) = data[at..at + n]
                .iter()
                .zip(&want[..n])
                .position(|(a, b)| a != b)
            {
                return at + i;
            }
            at += n;
        }
        data.len()
    }

    /// The first whole record in `data` at one of its first 16 offsets: (conn, offset of
    /// `data[0]`, where the record starts in `data`).
    fn find(&self, data: &[u8]) -> Option<(u32, u64, usize)> {
        (0..REC.min(data.len().saturating_sub(REC - 1))).find_map(|a| {
            let r = &data[a..a + REC];
            let conn = u32::from_le_bytes(r[..4].try_into().unwrap());
            let k = u32::from_le_bytes(r[4..8].try_into().unwrap());
            let w = u64::from_le_bytes(r[8..].try_into().unwrap());
            let start = k as u64 * REC as u64;
            (w == check_word(self.stream, conn, k) && start >= a as u64)
                .then(|| (conn, start - a as u64, a))
        })
    }

    /// Whether moving from `from` (where the bytes stopped matching) to `to` is allowed.
    fn jump_allowed(&self, from: Option<(u32, u64)>, to: (u32, u64)) -> Result<(), String> {
        let Some((c, off)) = from else { return Ok(()) };
        match &self.gaps {
            Gaps::Forward if to > (c, off) => Ok(()),
            Gaps::Forward => Err(format!(
                "went back from connection {c} offset {off} to connection {} offset {}",
                to.0, to.1
            )),
            Gaps::Exact(lens) => {
                let len = lens.get(c);
                if len == Some(off) && to == (c + 1, 0) {
                    Ok(())
                } else {
                    Err(format!(
                        "gap: connection {c} stopped at offset {off} (producer wrote {}), next byte is connection {} offset {}",
                        len.map_or("not all yet".to_string(), |l| l.to_string()),
                        to.0,
                        to.1
                    ))
                }
            }
        }
    }

    /// Takes the next bytes received; an error names the first byte that cannot be right.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        self.bytes += data.len() as u64;
        self.pending.extend_from_slice(data);
        let mut at = 0;
        let res = loop {
            if let Some((c, off)) = self.pos {
                // Not past the end of a connection whose length is known: the next one's
                // first bytes may well look like a continuation.
                let left = match &self.gaps {
                    Gaps::Exact(lens) => {
                        lens.get(c).map_or(u64::MAX, |len| len.saturating_sub(off))
                    }
                    Gaps::Forward => u64::MAX,
                };
                let end = (at as u64)
                    .saturating_add(left)
                    .min(self.pending.len() as u64) as usize;
                let n = self.matching(c, off, &self.pending[at..end]);
                at += n;
                self.pos = Some((c, off + n as u64));
            }
            if at == self.pending.len() {
                break Ok(());
            }
            let rest = &self.pending[at..];
            match self.find(rest) {
                None if rest.len() < FIND_WINDOW => break Ok(()),
                None if matches!(self.gaps, Gaps::Forward) && self.pos.is_some() => {
                    self.unplaced += 1;
                    at += 1;
                }
                None => {
                    break Err(format!(
                        "no record in {} bytes at stream byte {}: {:02x?}",
                        rest.len(),
                        self.bytes - (self.pending.len() - at) as u64,
                        &rest[..FIND_WINDOW]
                    ))
                }
                Some((conn, off, _)) if self.pos == Some((conn, off)) => {
                    // The stream goes on where it should, but this byte is not that one.
                    let mut want = [0u8];
                    fill(self.stream, conn, off, &mut want);
                    break Err(format!(
                        "wrong byte at connection {conn} offset {off}: {:#04x}, sent {:#04x}",
                        rest[0], want[0]
                    ));
                }
                Some((conn, off, a)) => {
                    if let Err(e) = self.jump_allowed(self.pos, (conn, off)) {
                        break Err(e);
                    }
                    // The `a` bytes before the record found must be the end of the record
                    // before it; otherwise a byte there is wrong. Where gaps are allowed, they
                    // may also be a piece shorter than the find window between two gaps (a
                    // short read whose neighbours were dropped): it cannot be placed, so it is
                    // counted as unplaced, never taken as right.
                    let short_piece =
                        matches!(self.gaps, Gaps::Forward) && self.pos.is_some() && a < FIND_WINDOW;
                    if self.matching(conn, off, &rest[..a]) < a && short_piece {
                        self.unplaced += a as u64;
                        self.jumps += 1;
                        at += a;
                        self.pos = Some((conn, off + a as u64));
                        continue;
                    } else if self.matching(conn, off, &rest[..a]) < a {
                        break Err(format!(
                            "corrupt bytes before record {} of connection {conn}: {:02x?}",
                            (off + a as u64) / REC as u64,
                            &rest[..a]
                        ));
                    }
                    if self.pos.is_some() {
                        self.jumps += 1;
                    }
                    self.pos = Some((conn, off));
                }
            }
        };
        self.pending.drain(..at);
        res
    }
}

// ------------------------------------------------------------------------------------------------
// Datagrams

/// Datagram `seq` of `stream`: 8 to 1400 bytes, its length and bytes a function of both.
pub fn datagram(stream: u32, seq: u64) -> Vec<u8> {
    let seed = mix(((stream as u64) << 48) ^ seq);
    let len = 8 + (seed % 1393) as usize;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&seq.to_be_bytes());
    let mut x = seed | 1;
    while v.len() < len {
        x = mix(x);
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Checks one datagram; returns its sequence number.
pub fn check_datagram(stream: u32, d: &[u8]) -> Result<u64, String> {
    if d.len() < 8 {
        return Err(format!("datagram of {} bytes: {d:02x?}", d.len()));
    }
    let seq = u64::from_be_bytes(d[..8].try_into().unwrap());
    if d != datagram(stream, seq).as_slice() {
        return Err(format!(
            "datagram {seq} of {} bytes is not what was sent",
            d.len()
        ));
    }
    Ok(seq)
}

/// Sequence numbers seen, as a bitmap.
#[derive(Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
    pub count: u64,
}

impl SeqSet {
    pub fn insert(&mut self, seq: u64) {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1024, 0);
        }
        if self.words[w] & (1 << b) == 0 {
            self.count += 1;
        }
        self.words[w] |= 1 << b;
    }
    pub fn contains(&self, seq: u64) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        self.words.get(w).is_some_and(|x| x & (1 << b) != 0)
    }
    /// How many of `lo..=hi` are in the set.
    pub fn count_range(&self, lo: u64, hi: u64) -> u64 {
        (lo..=hi).filter(|&q| self.contains(q)).count() as u64
    }
}

/// A run of datagrams one receiver got on one connection (or socket): first, last, count.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub first: u64,
    pub last: u64,
    pub count: u64,
}

/// Checks a `framing = u32be` stream: every record a whole datagram, sequence numbers rising.
pub struct FrameCheck {
    stream: u32,
    pending: Vec<u8>,
    pub run: Option<Run>,
    pub seen: SeqSet,
    pub bytes: u64,
}

impl FrameCheck {
    pub fn new(stream: u32) -> FrameCheck {
        FrameCheck {
            stream,
            pending: Vec::new(),
            run: None,
            seen: SeqSet::default(),
            bytes: 0,
        }
    }

    /// Takes one whole datagram (from a framed stream or a UDP socket).
    pub fn datagram(&mut self, d: &[u8]) -> Result<(), String> {
        let seq = check_datagram(self.stream, d)?;
        match &mut self.run {
            Some(r) if seq <= r.last => {
                return Err(format!("datagram {seq} after datagram {}", r.last))
            }
            Some(r) => {
                r.last = seq;
                r.count += 1;
            }
            None => {
                self.run = Some(Run {
                    first: seq,
                    last: seq,
                    count: 1,
                })
            }
        }
        self.seen.insert(seq);
        Ok(())
    }

    /// Takes the next bytes of a framed stream.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        self.bytes += data.len() as u64;
        self.pending.extend_from_slice(data);
        let mut at = 0;
        let mut res = Ok(());
        while self.pending.len() - at >= 4 {
            let len = u32::from_be_bytes(self.pending[at..at + 4].try_into().unwrap()) as usize;
            if !(8..=1400).contains(&len) {
                res = Err(format!(
                    "frame length {len} at stream byte {}",
                    self.bytes - (self.pending.len() - at) as u64
                ));
                break;
            }
            if self.pending.len() - at - 4 < len {
                break;
            }
            let d = self.pending[at + 4..at + 4 + len].to_vec();
            at += 4 + len;
            if let Err(e) = self.datagram(&d) {
                res = Err(e);
                break;
            }
        }
        self.pending.drain(..at);
        res
    }

    /// Bytes of an incomplete frame at the end.
    pub fn partial(&self) -> usize {
        self.pending.len()
    }
}

/// Self-tests of the checkers: each must accept what a correct relay delivers and reject a
/// wrong byte, a gap or a step back. Ignored like the soak itself (they run with it).
#[cfg(test)]
mod tests {
    use super::*;

    fn conn_bytes(stream: u32, conn: u32, off: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        fill(stream, conn, off, &mut v);
        v
    }

    #[test]
    #[ignore]
    fn exact_accepts_a_join_mid_record_and_a_connection_boundary() {
        let lens = Arc::new(ConnLengths::default());
        lens.set(0, 1000);
        let mut c = StreamCheck::new(1, Gaps::Exact(lens));
        let mut data = conn_bytes(1, 0, 37, 1000 - 37);
        data.extend(conn_bytes(1, 1, 0, 500));
        for piece in data.chunks(7) {
            c.feed(piece).unwrap();
        }
        assert_eq!(c.position(), Some((1, 500)));
        assert_eq!(c.jumps, 1);
    }

    #[test]
    #[ignore]
    fn exact_stops_at_a_connection_end_even_if_the_next_byte_fits() {
        let lens = Arc::new(ConnLengths::default());
        let next = conn_bytes(1, 1, 0, 100);
        // Connection 0 ends where its next byte would equal connection 1's first.
        let end = (200..100_000u64)
            .find(|&o| conn_bytes(1, 0, o, 1)[0] == next[0])
            .unwrap();
        lens.set(0, end);
        let mut c = StreamCheck::new(1, Gaps::Exact(lens));
        let mut data = conn_bytes(1, 0, end - 100, 100);
        data.extend(&next);
        c.feed(&data).unwrap();
        assert_eq!(c.position(), Some((1, 100)));
    }

    #[test]
    #[ignore]
    fn exact_rejects_a_gap_and_a_wrong_byte() {
        let lens = Arc::new(ConnLengths::default());
        let mut c = StreamCheck::new(1, Gaps::Exact(lens.clone()));
        let mut data = conn_bytes(1, 0, 0, 100);
        data.extend(conn_bytes(1, 0, 200, 100));
        assert!(c.feed(&data).unwrap_err().contains("gap"));
        let mut c = StreamCheck::new(1, Gaps::Exact(lens));
        let mut data = conn_bytes(1, 0, 0, 300);
        data[150] ^= 1;
        assert!(c.feed(&data).is_err());
    }

    #[test]
    #[ignore]
    fn forward_accepts_jumps_and_rejects_going_back() {
        let mut c = StreamCheck::new(2, Gaps::Forward);
        let mut data = conn_bytes(2, 3, 5, 100);
        data.extend(conn_bytes(2, 3, 333, 100));
        data.extend(conn_bytes(2, 4, 17, 100));
        c.feed(&data).unwrap();
        assert_eq!(c.jumps, 2);
        assert!(c.feed(&conn_bytes(2, 4, 0, 100)).is_err());
        let mut c = StreamCheck::new(2, Gaps::Forward);
        let mut data = conn_bytes(2, 3, 5, 100);
        data[60] = data[60].wrapping_add(1);
        assert!(c.feed(&data).is_err());
    }

    #[test]
    #[ignore]
    fn forward_counts_a_short_piece_between_two_gaps_as_unplaced() {
        // A 15-byte read whose neighbours were both dropped, then the stream further on.
        let mut c = StreamCheck::new(2, Gaps::Forward);
        let mut data = conn_bytes(2, 3, 0, 100);
        data.extend(conn_bytes(2, 3, 1000, 15));
        data.extend(conn_bytes(2, 3, 5000, 100));
        c.feed(&data).unwrap();
        assert_eq!(c.position(), Some((3, 5100)));
        assert!(c.unplaced >= 15);
        // Where no gap is allowed, the same piece is an error.
        let lens = Arc::new(ConnLengths::default());
        let mut c = StreamCheck::new(2, Gaps::Exact(lens));
        assert!(c.feed(&data).is_err());
    }

    #[test]
    #[ignore]
    fn frames_check_each_datagram_and_the_order() {
        let mut f = FrameCheck::new(4);
        let mut s = Vec::new();
        for q in [3u64, 4, 9] {
            let d = datagram(4, q);
            s.extend((d.len() as u32).to_be_bytes());
            s.extend(d);
        }
        for piece in s.chunks(5) {
            f.feed(piece).unwrap();
        }
        assert_eq!(f.run.unwrap().count, 3);
        assert_eq!(f.seen.count_range(0, 10), 3);
        let d = datagram(4, 5);
        assert!(f.datagram(&d).unwrap_err().contains("after"));
        let mut d = datagram(4, 20);
        *d.last_mut().unwrap() ^= 0x80;
        assert!(f.datagram(&d).is_err());
    }
}
