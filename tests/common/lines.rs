//! Lines for the `framing = line` tests: numbered lines of varied length, written to a stream
//! in pieces that end mid-line, and the check that a collector's stream is whole lines.

use std::io::Write;
use std::time::Duration;

/// Line `i` without its line end: its number, then 0 to 60 bytes that depend on it.
pub fn line(i: usize) -> String {
    let body: String = (0..i % 61)
        .map(|k| char::from(b'a' + ((i + k) % 26) as u8))
        .collect();
    format!("L{i:07}:{body}")
}

/// Lines `range`.
pub fn lines(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(line).collect()
}

/// The bytes of `lines`, each ended by `\n`.
pub fn text(lines: &[String]) -> Vec<u8> {
    let mut v = Vec::new();
    for l in lines {
        v.extend_from_slice(l.as_bytes());
        v.push(b'\n');
    }
    v
}

/// Writes `bytes` to `w` in pieces of `piece` bytes (so pieces end mid-line), pausing 1ms
/// after every `pause_every` pieces (0: never; the relay then reads whole pool buffers).
pub fn write_pieces(w: &mut impl Write, bytes: &[u8], piece: usize, pause_every: usize) {
    for (n, p) in bytes.chunks(piece).enumerate() {
        w.write_all(p).expect("write to the relay's input");
        if pause_every > 0 && n % pause_every == pause_every - 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    w.flush().unwrap();
}

/// The line numbers of `stream`, each line checked whole against [`line`]; panics at the first
/// line that is not one, or if the stream ends mid-line.
pub fn line_numbers(stream: &[u8]) -> Vec<usize> {
    assert!(
        stream.is_empty() || stream.ends_with(b"\n"),
        "the stream ends mid-line"
    );
    let text = std::str::from_utf8(stream).expect("UTF-8 lines");
    text.lines()
        .enumerate()
        .map(|(k, l)| {
            let i: usize = l
                .get(1..8)
                .and_then(|d| d.parse().ok())
                .unwrap_or_else(|| panic!("line {k} of the stream is not whole: {l:?}"));
            assert_eq!(l, line(i), "line {k} of the stream (number {i}) is damaged");
            i
        })
        .collect()
}
