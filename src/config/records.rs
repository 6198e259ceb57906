//! The record keys of a `[channel NAME]` section: the frame a stream is cut into (`sample` x
//! `interleave`, also without `decimate`), `preamble = N` (the first bytes of every producer
//! connection, kept and replayed to every subscriber that joins) and `max_line` (the longest
//! line of `framing = line`), with their ranges and the checks that tie them to the input and
//! the pool ([`check`]).
//!
//! What the engine does with them is in its `records` module: outputs are handed whole records
//! only. Pure: no I/O.

use crate::config::channel::Framing;
use crate::config::parse::quote;
use crate::config::sample::SampleType;
use crate::config::units::{format_size, parse_size};

/// Most bytes `preamble` may keep.
pub const MAX_PREAMBLE: u32 = 4096;
/// `max_line` when the channel does not say.
pub const DEFAULT_MAX_LINE: u32 = 4096;
/// Smallest `max_line` accepted.
pub const MIN_MAX_LINE: u32 = 16;
/// Largest `max_line` accepted (and it must fit in one pool buffer too).
pub const MAX_MAX_LINE: u32 = 64 * 1024;

/// How a channel's input is cut into records, beyond `framing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Records {
    /// The declared frame (`sample`, `interleave`), with or without `decimate`.
    pub frame: Option<(SampleType, u32)>,
    /// Bytes at the start of every producer connection kept as its preamble (stream inputs).
    pub preamble: u32,
    /// The longest line `framing = line` relays, its `\n` included.
    pub max_line: u32,
}

impl Default for Records {
    fn default() -> Records {
        Records {
            frame: None,
            preamble: 0,
            max_line: DEFAULT_MAX_LINE,
        }
    }
}

impl Records {
    /// Bytes per frame, if a frame is declared.
    pub fn frame_bytes(&self) -> Option<u32> {
        self.frame.map(|(s, n)| s.width() as u32 * n)
    }
}

/// Parses `preamble = N`.
pub(super) fn parse_preamble(v: &str) -> Result<u32, String> {
    let n = parse_size(v)?;
    if n > u64::from(MAX_PREAMBLE) {
        return Err(format!("{} is outside 0..={MAX_PREAMBLE} bytes", quote(v)));
    }
    Ok(n as u32)
}

/// Parses `max_line = SIZE`.
pub(super) fn parse_max_line(v: &str) -> Result<u32, String> {
    let n = parse_size(v)?;
    if !(u64::from(MIN_MAX_LINE)..=u64::from(MAX_MAX_LINE)).contains(&n) {
        return Err(format!(
            "{} is outside {MIN_MAX_LINE}B..={}",
            quote(v),
            format_size(u64::from(MAX_MAX_LINE))
        ));
    }
    Ok(n as u32)
}

/// Where each record key was set (0: not set), for the errors of [`check`].
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RecordLines {
    pub sample: usize,
    pub interleave: usize,
    pub framing: usize,
    pub preamble: usize,
    pub max_line: usize,
}

/// The checks across the record keys, the input and the pool: a preamble only on a stream
/// input, `framing = line` not with `sample`, `max_line` only with `framing = line`, and a
/// preamble, a frame and a line each within one pool buffer (the carry of a record that
/// straddles two reads is one buffer). Reports through `err` and says whether all passed.
pub(super) fn check(
    r: &Records,
    framing: Framing,
    stream_input: bool,
    buffer_size: u32,
    at: RecordLines,
    err: &mut dyn FnMut(usize, &str, String),
) -> bool {
    let mut ok = true;
    if at.preamble > 0 && !stream_input {
        err(
            at.preamble,
            "preamble",
            "a preamble needs a stream input (tcp, tcp-listen, unix, unix-listen): a datagram input has no connection to begin"
                .into(),
        );
        ok = false;
    }
    if r.preamble > buffer_size {
        err(
            at.preamble,
            "preamble",
            format!(
                "preamble {} is larger than buffer_size ({buffer_size})",
                r.preamble
            ),
        );
        ok = false;
    }
    if framing == Framing::Line && r.frame.is_some() {
        err(
            at.framing.max(at.sample),
            "framing",
            "framing = line and sample exclude each other: a channel's records are lines or frames"
                .into(),
        );
        ok = false;
    }
    if at.max_line > 0 && framing != Framing::Line {
        err(
            at.max_line,
            "max_line",
            "max_line needs framing = line".into(),
        );
        ok = false;
    }
    if framing == Framing::Line && r.max_line > buffer_size {
        err(
            at.max_line.max(at.framing),
            "max_line",
            format!(
                "max_line {} is larger than buffer_size ({buffer_size})",
                r.max_line
            ),
        );
        ok = false;
    }
    if let Some(w) = r.frame_bytes() {
        if stream_input && w > buffer_size {
            err(
                at.interleave.max(at.sample),
                "interleave",
                format!("one frame ({w} bytes) is larger than buffer_size ({buffer_size})"),
            );
            ok = false;
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_preamble("12"), Ok(12));
        assert_eq!(parse_preamble("4KiB"), Ok(4096));
        assert!(parse_preamble("4097").is_err());
        assert_eq!(parse_max_line("16"), Ok(16));
        assert_eq!(parse_max_line("64KiB"), Ok(65536));
        assert!(parse_max_line("15").is_err());
        assert!(parse_max_line("65537").is_err());
    }
}
