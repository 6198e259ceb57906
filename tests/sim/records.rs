//! Channels that cut records in the simulation: which stream channels get frames, lines or a
//! preamble ([`RecordSpec::pick`]), and the invariant that every output's stream is whole
//! records from a boundary ([`check_runs`]).
//!
//! Boundaries are decided from the producer's stream positions: each producer connection
//! starts at the position its source had reached when it connected; its first `preamble`
//! bytes are the preamble; frames count from after it; a line ends after a `\n` byte (the
//! content of a position is `kernel::pattern`).

use super::kernel::{pattern, Pos};
use super::rng::Rng;
use std::collections::BTreeSet;

/// What a stream channel's records are (all zero / `None`: it cuts nothing).
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordSpec {
    /// Bytes per frame (0: no frame declared).
    pub frame: u32,
    pub preamble: u32,
    /// `framing = line` with this `max_line`.
    pub line: Option<u32>,
}

impl RecordSpec {
    /// Chosen by its own generator (so the rest of a seed's run is what it was before records
    /// existed): about half the stream channels cut records.
    pub fn pick(rng: &mut Rng) -> RecordSpec {
        let mut r = RecordSpec::default();
        match rng.below(6) {
            0 | 1 => {
                let width = rng.pick(&[1u32, 2, 4]);
                r.frame = width * rng.range(1, 3) as u32;
            }
            2 => r.line = Some(rng.pick(&[16u32, 64, 256, 1024])),
            _ => {}
        }
        if rng.chance(400) {
            r.preamble = rng.range(1, 40) as u32;
        }
        r
    }

    pub fn is_framed(&self) -> bool {
        self.frame > 0 || self.line.is_some() || self.preamble > 0
    }

    /// The config lines.
    pub fn keys(&self) -> String {
        let mut s = String::new();
        if self.frame > 0 {
            let (t, n) = match self.frame {
                f if f % 4 == 0 => ("i32le", f / 4),
                f if f % 2 == 0 => ("i16le", f / 2),
                f => ("u8", f),
            };
            s += &format!("sample = {t}\ninterleave = {n}\n");
        }
        if let Some(m) = self.line {
            s += &format!("framing = line\nmax_line = {m}\n");
        }
        if self.preamble > 0 {
            s += &format!("preamble = {}\n", self.preamble);
        }
        s
    }

    /// Whether position `p` is a preamble byte.
    pub fn in_preamble(&self, starts: &[Pos], p: Pos) -> bool {
        starts
            .iter()
            .rev()
            .find(|&&s| s <= p)
            .is_some_and(|&s| p < s + u64::from(self.preamble))
    }

    /// Whether position `p` begins a record (or the preamble), given the positions at which
    /// the producer's connections started (ascending).
    fn starts(&self, starts: &[Pos], p: Pos) -> bool {
        let Some(&s) = starts.iter().rev().find(|&&s| s <= p) else {
            return false;
        };
        self.boundary_in(s, p)
    }

    /// Whether a run that ends before position `e` ends a record.
    fn ends(&self, starts: &[Pos], e: Pos) -> bool {
        let Some(&s) = starts.iter().rev().find(|&&s| s < e) else {
            return false;
        };
        self.boundary_in(s, e)
    }

    fn boundary_in(&self, s: Pos, p: Pos) -> bool {
        let body = s + u64::from(self.preamble);
        if p == s || p == body {
            return true;
        }
        if p < body {
            return false;
        }
        if self.frame > 0 {
            (p - body) % u64::from(self.frame) == 0
        } else if self.line.is_some() {
            pattern(p - 1) == b'\n'
        } else {
            true
        }
    }
}

/// Checks that `got` (what one output connection, or one datagram, received, in order) is
/// whole records: every run of consecutive positions starts at a boundary, and every run but
/// the last (`last_may_be_cut`: a connection the relay may have closed mid-write) ends at one.
/// A line run also holds no line longer than `max_line`. A run may also end inside a
/// preamble at one of `stops` (where the input's reading of a producer connection ended: a
/// serial port unplugged mid-preamble): preamble bytes flow as they come, and none follow.
pub fn check_runs(
    r: &RecordSpec,
    starts: &[Pos],
    stops: &BTreeSet<Pos>,
    got: &[Pos],
    last_may_be_cut: bool,
    what: &str,
) -> Result<(), String> {
    let mut i = 0;
    while i < got.len() {
        let mut j = i + 1;
        while j < got.len() && got[j] == got[j - 1] + 1 {
            j += 1;
        }
        let (a, e) = (got[i], got[j - 1] + 1);
        if !r.starts(starts, a) {
            return Err(format!(
                "{what}: a run of {} bytes starts at position {a}, not a record boundary (connections started at {starts:?}, {r:?})",
                e - a
            ));
        }
        let last = j == got.len();
        let may_be_cut = last && last_may_be_cut;
        let cut_preamble = stops.contains(&e) && r.in_preamble(starts, e - 1);
        if !may_be_cut && !r.ends(starts, e) && !cut_preamble {
            return Err(format!(
                "{what}: a run from {a} ends before position {e}, not a record boundary (connections started at {starts:?}, {r:?})"
            ));
        }
        i = j;
    }
    Ok(())
}
