//! Reading a configuration file into text, the first step of [`super::load`] (and so of
//! `check`, `run` and the reload at SIGHUP): the file is opened once, and the opened file is
//! what is checked (no window between a check and the open), read with a bound, and decoded.
//!
//! Owns the limits: a regular file ([`MAX_FILE_BYTES`] at most), UTF-8 with an optional byte
//! order mark, and the place (line, byte column) of the first byte that is not UTF-8. Must
//! never block on a fifo, read a device without end, or hold more than the bound in memory.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

/// The largest configuration file read: far above any real one, far below harm.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// The UTF-8 byte order mark some editors put first.
const BOM: &str = "\u{feff}";

/// Reads `path` as configuration text, without a leading byte order mark. An error is the
/// line it concerns (0: the whole file) and its message.
pub(super) fn read_text(path: &str) -> Result<String, (usize, String)> {
    // O_NONBLOCK: opening a fifo must not wait for a writer; it is refused just below.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| (0, format!("cannot open: {e}")))?;
    let md = file
        .metadata()
        .map_err(|e| (0, format!("cannot read: {e}")))?;
    if !md.is_file() {
        return Err((
            0,
            format!(
                "not a regular file ({}): a configuration is read from a regular file",
                kind(&md)
            ),
        ));
    }
    if md.len() > MAX_FILE_BYTES {
        return Err((0, format!("{} bytes: {TOO_LARGE}", md.len())));
    }
    let bytes = read_bounded(&mut file).map_err(|e| (0, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err((0, format!("grew while read: {TOO_LARGE}")));
    }
    decode(bytes)
}

const TOO_LARGE: &str = "a configuration file is at most 4 MiB";

/// At most one byte more than [`MAX_FILE_BYTES`], so that a larger file is seen as one.
fn read_bounded(file: &mut File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What a file that is not a regular one is, in words.
fn kind(md: &Metadata) -> &'static str {
    let t = md.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// UTF-8 text without a leading byte order mark, or the line of the first byte that is not
/// UTF-8 and a message giving its 1-based byte column (bytes, not characters, from the start of
/// its line, a byte order mark included).
fn decode(bytes: Vec<u8>) -> Result<String, (usize, String)> {
    match String::from_utf8(bytes) {
        Ok(mut text) => {
            if text.starts_with(BOM) {
                text.drain(..BOM.len());
            }
            Ok(text)
        }
        Err(e) => {
            let bytes = e.as_bytes();
            let at = e.utf8_error().valid_up_to();
            let before = &bytes[..at];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            Err((
                line,
                format!(
                    "byte 0x{:02x} at byte column {} is not UTF-8 (the file must be UTF-8 text)",
                    bytes[at],
                    at - line_start + 1
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_invalid_byte_has_its_line_and_byte_column() {
        let e = decode(b"[global]\n# caf\xe9\n".to_vec()).unwrap_err();
        assert_eq!(e.0, 2);
        assert!(e.1.contains("byte 0xe9 at byte column 6"), "{}", e.1);
        // Columns count bytes: 'é' is two of them.
        let e = decode(b"\xc3\xa9\xc3\xa9x\xff".to_vec()).unwrap_err();
        assert_eq!(e.0, 1);
        assert!(e.1.contains("byte 0xff at byte column 6"), "{}", e.1);
        // A sequence cut short at the end of the file is found where it starts.
        let e = decode(b"a = 1\r\nb = 2\nxy\xe2\x82".to_vec()).unwrap_err();
        assert_eq!(e.0, 3);
        assert!(e.1.contains("byte 0xe2 at byte column 3"), "{}", e.1);
        let e = decode(b"\xc0".to_vec()).unwrap_err();
        assert_eq!(e.0, 1);
        assert!(e.1.contains("byte column 1"), "{}", e.1);
    }

    #[test]
    fn byte_order_mark_is_dropped_once() {
        assert_eq!(
            decode(b"\xef\xbb\xbf[global]\n".to_vec()).unwrap(),
            "[global]\n"
        );
        assert_eq!(
            decode("\u{feff}\u{feff}x".into()).unwrap(),
            "\u{feff}x",
            "only the first is a byte order mark"
        );
        assert_eq!(decode(b"x\xef\xbb\xbf".to_vec()).unwrap(), "x\u{feff}");
    }

    #[test]
    fn refuses_what_is_not_a_small_regular_file() {
        let dir = std::env::temp_dir().join(format!("rr-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
        std::fs::write(p("ok"), "\u{feff}[global]\n").unwrap();
        assert_eq!(read_text(&p("ok")).unwrap(), "[global]\n");
        std::fs::write(p("big"), vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(read_text(&p("big"))
            .unwrap_err()
            .1
            .contains("at most 4 MiB"));
        std::fs::write(p("edge"), vec![b'\n'; MAX_FILE_BYTES as usize]).unwrap();
        assert!(read_text(&p("edge")).is_ok(), "exactly 4 MiB is allowed");
        let e = read_text(dir.to_str().unwrap()).unwrap_err();
        assert_eq!(e.0, 0);
        assert!(e.1.contains("not a regular file (a directory)"), "{}", e.1);
        let e = read_text("/dev/zero").unwrap_err();
        assert!(e.1.contains("(a character device)"), "{}", e.1);
        nix::unistd::mkfifo(dir.join("fifo").as_path(), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read_text(&p("fifo")).unwrap_err();
        assert!(e.1.contains("(a fifo)"), "{}", e.1);
        assert!(read_text(&p("absent"))
            .unwrap_err()
            .1
            .contains("cannot open"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
