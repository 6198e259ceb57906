//! The on-disk format of an output's spool: segment files of checksummed records, and the
//! replay position that survives a crash.
//!
//! Owns: segment names (`%016x.seg`, in the order they were written), the record framing
//! (an 8-byte header, little-endian length and CRC-32C of the payload, then the payload), the
//! scan that finds where a segment's valid records end (a torn tail after a power loss ends
//! the scan; it never yields a record that was not written whole), and the position file: two
//! 32-byte slots written alternately, each with its own sequence number and checksum, so a
//! write torn by a power loss leaves the other slot, one sync point older, to resume from.
//! Pure: bytes in, bytes out; the caller does the I/O through the ring.

/// Bytes of a record's header: payload length (u32 le) and its CRC-32C (u32 le).
pub const RECORD_HEADER: usize = crate::config::spool::RECORD_HEADER as usize;
/// The largest record payload (a datagram, a line, or a chunk of an unframed stream).
pub const MAX_RECORD: u32 = 16 << 20;
/// Bytes of the position file: two slots.
pub const POSITION_FILE: usize = 2 * SLOT;
const SLOT: usize = 32;
const SLOT_MAGIC: u32 = 0x5252_5350; // "RRSP"

/// CRC-32C (Castagnoli) tables for eight bytes at a time ("slicing by 8"), built at compile
/// time: `T[0]` is the bytewise table, `T[k][i]` the CRC of byte `i` followed by `k` zero bytes.
/// Every spooled and replayed byte goes through it, so it must keep up with the input.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82f6_3b78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
};

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut c = !0u32;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let lo = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) ^ c;
        let hi = u32::from_le_bytes([w[4], w[5], w[6], w[7]]);
        c = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in words.remainder() {
        c = t[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The file name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.seg")
}

/// The sequence number of a segment file name; `None` for any other file.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The header of a record carrying `payload`.
pub fn record_header(payload: &[u8]) -> [u8; RECORD_HEADER] {
    header_of(payload.len() as u32, crc32c(payload))
}

/// The header of a record of `len` payload bytes whose CRC-32C is `crc`.
pub fn header_of(len: u32, crc: u32) -> [u8; RECORD_HEADER] {
    let mut h = [0u8; RECORD_HEADER];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Appends one record to `out`.
pub fn append_record(out: &mut Vec<u8>, payload: &[u8]) {
    debug_assert!(payload.len() as u64 <= u64::from(MAX_RECORD));
    out.extend_from_slice(&record_header(payload));
    out.extend_from_slice(payload);
}

/// Where a scan of a segment's bytes stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte belonged to a whole record.
    Clean,
    /// The last record is cut short: written up to a crash, never synced whole.
    Torn,
    /// A header or checksum that does not match: the bytes from here on are not records.
    Corrupt,
}

/// One record found by [`scan`]: where its payload is in the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub offset: usize,
    pub len: usize,
}

/// Scans the records of a segment's bytes from `from` (a record boundary), calling `each`
/// with every whole, checksummed record in order. Returns the offset just past the last good
/// record and why the scan ended there.
pub fn scan(bytes: &[u8], from: usize, mut each: impl FnMut(Found)) -> (usize, ScanEnd) {
    let mut at = from;
    loop {
        let rest = &bytes[at.min(bytes.len())..];
        if rest.is_empty() {
            return (at, ScanEnd::Clean);
        }
        if rest.len() < RECORD_HEADER {
            return (at, ScanEnd::Torn);
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len > MAX_RECORD {
            return (at, ScanEnd::Corrupt);
        }
        let len = len as usize;
        if rest.len() < RECORD_HEADER + len {
            return (at, ScanEnd::Torn);
        }
        let payload = &rest[RECORD_HEADER..RECORD_HEADER + len];
        if crc32c(payload) != crc {
            return (at, ScanEnd::Corrupt);
        }
        each(Found {
            offset: at + RECORD_HEADER,
            len,
        });
        at += RECORD_HEADER + len;
    }
}

/// How far replay got: records before `offset` in segment `segment` reached the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// The slot to write next and its bytes: the slot after the newest valid one, with the next
/// sequence number. `file` is the position file as read (any length; a new file is empty).
pub fn encode_position(file: &[u8], pos: Position) -> (usize, [u8; SLOT]) {
    let (next_seq, slot) = match newest_slot(file) {
        Some((seq, i, _)) => (seq + 1, 1 - i),
        None => (1, 0),
    };
    let mut s = [0u8; SLOT];
    s[..4].copy_from_slice(&SLOT_MAGIC.to_le_bytes());
    s[4..12].copy_from_slice(&next_seq.to_le_bytes());
    s[12..20].copy_from_slice(&pos.segment.to_le_bytes());
    s[20..28].copy_from_slice(&pos.offset.to_le_bytes());
    let crc = crc32c(&s[..28]);
    s[28..].copy_from_slice(&crc.to_le_bytes());
    (slot * SLOT, s)
}

/// The position last written whole, if any slot is valid.
pub fn decode_position(file: &[u8]) -> Option<Position> {
    newest_slot(file).map(|(_, _, p)| p)
}

fn newest_slot(file: &[u8]) -> Option<(u64, usize, Position)> {
    (0..2)
        .filter_map(|i| {
            let s = file.get(i * SLOT..(i + 1) * SLOT)?;
            let magic = u32::from_le_bytes(s[..4].try_into().ok()?);
            let crc = u32::from_le_bytes(s[28..32].try_into().ok()?);
            if magic != SLOT_MAGIC || crc != crc32c(&s[..28]) {
                return None;
            }
            let seq = u64::from_le_bytes(s[4..12].try_into().ok()?);
            let pos = Position {
                segment: u64::from_le_bytes(s[12..20].try_into().ok()?),
                offset: u64::from_le_bytes(s[20..28].try_into().ok()?),
            };
            Some((seq, i, pos))
        })
        .max_by_key(|&(seq, _, _)| seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C ("123456789").
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
        // Eight bytes at a time gives what one at a time gives, at every length and alignment.
        let bytewise = |d: &[u8]| {
            let mut c = !0u32;
            for &b in d {
                c = CRC_TABLES[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
            }
            !c
        };
        let data: Vec<u8> = (0..300u32).map(|i| (i * 131 + 7) as u8).collect();
        for from in 0..9 {
            for len in 0..data.len() - from {
                let d = &data[from..from + len];
                assert_eq!(crc32c(d), bytewise(d), "{from} {len}");
            }
        }
    }

    #[test]
    fn segment_names_sort_in_write_order_and_parse_back() {
        let names: Vec<String> = [1u64, 0xa, 0x10, u64::MAX].map(segment_name).into();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for (i, n) in names.iter().enumerate() {
            assert_eq!(parse_segment_name(n), Some([1u64, 0xa, 0x10, u64::MAX][i]));
        }
        for bad in [
            "pos",
            "0000000000000001.seg.tmp",
            "000000000000000A.seg",
            "1.seg",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn position_survives_a_torn_slot() {
        let mut file = vec![0u8; POSITION_FILE];
        assert_eq!(decode_position(&file), None);
        let p1 = Position {
            segment: 3,
            offset: 100,
        };
        let (at, s) = encode_position(&file, p1);
        file[at..at + SLOT].copy_from_slice(&s);
        assert_eq!(decode_position(&file), Some(p1));
        let p2 = Position {
            segment: 4,
            offset: 8,
        };
        let (at2, s2) = encode_position(&file, p2);
        assert_ne!(at, at2, "the slots alternate");
        file[at2..at2 + SLOT].copy_from_slice(&s2);
        assert_eq!(decode_position(&file), Some(p2));
        // A power loss tears the next write of the first slot: the second still holds p2.
        let (at3, s3) = encode_position(
            &file,
            Position {
                segment: 9,
                offset: 9,
            },
        );
        assert_eq!(at3, at);
        file[at3..at3 + 12].copy_from_slice(&s3[..12]);
        assert_eq!(decode_position(&file), Some(p2));
        // A short file (created, never written whole) has no position.
        assert_eq!(decode_position(&file[..10]), None);
    }

    proptest! {
        /// Whatever prefix of a segment a crash left on disk, the scan yields exactly the
        /// records written whole before the cut, in order, and says whether the tail is torn.
        #[test]
        fn scan_of_any_prefix_yields_the_whole_records(
            recs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
            cut_frac in 0.0f64..=1.0,
        ) {
            let mut seg = Vec::new();
            let mut ends = Vec::new();
            for r in &recs {
                append_record(&mut seg, r);
                ends.push(seg.len());
            }
            let cut = (seg.len() as f64 * cut_frac) as usize;
            let mut got = Vec::new();
            let (end, why) = scan(&seg[..cut], 0, |f| got.push(seg[f.offset..f.offset + f.len].to_vec()));
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            prop_assert_eq!(&got[..], &recs[..whole]);
            prop_assert_eq!(end, if whole == 0 { 0 } else { ends[whole - 1] });
            prop_assert_eq!(why, if end == cut { ScanEnd::Clean } else { ScanEnd::Torn });
        }

        /// A flipped byte inside a record's payload or header stops the scan at that record.
        #[test]
        fn a_flipped_byte_is_never_replayed(
            recs in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..100), 1..10),
            pick in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut seg = Vec::new();
            let mut starts = Vec::new();
            for r in &recs {
                starts.push(seg.len());
                append_record(&mut seg, r);
            }
            let at = pick.index(seg.len());
            seg[at] ^= 1 << bit;
            let victim = starts.iter().rposition(|&s| s <= at).unwrap();
            let mut got = 0;
            let (end, why) = scan(&seg, 0, |_| got += 1);
            prop_assert_eq!(got, victim);
            prop_assert_eq!(end, starts[victim]);
            prop_assert_ne!(why, ScanEnd::Clean);
        }
    }
}
