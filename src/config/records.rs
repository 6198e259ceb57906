//! The record keys of a `[channel NAME]` section: the frame a stream is cut into (`sample` x
//! `interleave`, also without `decimate`), `preamble = N` (the first bytes of every producer
//! connection, kept and replayed to every subscriber that joins) and `max_line` (the longest
//! line of `framing = line`), with their ranges and the checks that tie them to the input and
//! the pool (`check`).
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
    use crate::config::{parse_str, SpliceMode};

    const FRAMED: &str = "[global]\nsplice = on\n\
        [channel rtl]\ninput = tcp-listen://127.0.0.1:1\noutput = tcp://h:2\npreamble = 12\nsample = u8\ninterleave = 2\n\
        [channel gps]\ninput = tcp://h:3\noutput = udp://127.0.0.1:4\nframing = line\nmax_line = 100\n\
        [channel ais]\ninput = udp://127.0.0.1:5\noutput = udp://127.0.0.1:6\nframing = line\n\
        [channel dec]\ninput = tcp-listen://127.0.0.1:7\noutput = tcp://h:8\nsample = i16le\ninterleave = 2\ndecimate = mean:10\nshm = off\n";

    #[test]
    fn the_record_keys_print_and_parse_back() {
        let c = parse_str("t.conf", FRAMED).unwrap();
        let rtl = &c.channels[0];
        assert_eq!(rtl.records.preamble, 12);
        assert_eq!(rtl.records.frame_bytes(), Some(2));
        assert!(rtl.samples.is_none());
        // Framed: the buffer path, whatever [global] says.
        assert!(rtl.is_framed_stream());
        assert_eq!(rtl.splice, SpliceMode::Off);
        assert_eq!(c.channels[1].framing, Framing::Line);
        assert_eq!(c.channels[1].records.max_line, 100);
        assert_eq!(c.channels[2].records.max_line, DEFAULT_MAX_LINE);
        assert!(!c.channels[2].is_framed_stream());
        assert_eq!(c.channels[3].records.frame_bytes(), Some(4));
        let text = c.to_string();
        assert!(text.contains("preamble = 12\n"), "{text}");
        assert!(text.contains("max_line = 100\n"), "{text}");
        assert!(text.contains("framing = line\n"), "{text}");
        let again = parse_str("t.conf", &text).unwrap();
        for (a, b) in again.channels.iter().zip(&c.channels) {
            assert!(a.same_settings(b), "{a:?}\n{b:?}");
        }
        // A reload sees a change of any record key.
        for (from, to) in [
            ("preamble = 12", "preamble = 13"),
            ("sample = u8\ninterleave = 2", "sample = u8\ninterleave = 1"),
            ("max_line = 100", "max_line = 101"),
        ] {
            let changed = parse_str("t.conf", &text.replacen(from, to, 1)).unwrap();
            assert!(
                changed
                    .channels
                    .iter()
                    .zip(&c.channels)
                    .any(|(a, b)| !a.same_settings(b)),
                "{from} -> {to}"
            );
        }
    }

    #[test]
    fn record_key_errors_name_their_line() {
        let cases: [(&str, &str, usize); 7] = [
            ("[channel a]\ninput = udp://127.0.0.1:1\noutput = udp://127.0.0.1:2\npreamble = 12\n", "preamble", 4),
            ("[channel a]\ninput = tcp-listen://127.0.0.1:1\noutput = tcp://h:2\nsample = u8\nframing = line\n", "framing", 5),
            ("[channel a]\ninput = tcp-listen://127.0.0.1:1\noutput = tcp://h:2\npreamble = 4097\n", "preamble", 4),
            ("[channel a]\ninput = tcp-listen://127.0.0.1:1\noutput = tcp://h:2\nframing = line\nmax_line = 8\n", "max_line", 5),
            ("[channel a]\ninput = tcp-listen://127.0.0.1:1\noutput = tcp://h:2\nmax_line = 100\n", "max_line", 4),
            ("[channel a]\ninput = tcp-listen://127.0.0.1:1\noutput = tcp://h:2\ninterleave = 2\n", "interleave", 4),
            ("[channel a]\ninput = tcp-listen://127.0.0.1:1\noutput = tcp://h:2\npreamble = 2\nsplice = on\n", "splice", 5),
        ];
        for (text, key, line) in cases {
            let e = parse_str("t.conf", text).expect_err(text);
            assert!(
                e.iter().any(|e| e.line == line && e.key == key),
                "{text}: {e:?}"
            );
        }
    }

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
