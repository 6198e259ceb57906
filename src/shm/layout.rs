//! Byte layout of the shared-memory files (layout version 1): offsets, codes, the identity block
//! encoder and the header validator that every reader runs before touching anything else.
//!
//! Owns: the single source of truth for offsets (ringrelay-shm(7), `contrib/c/ringrelay_shm.h`
//! and `contrib/python/ringrelay_shm.py` mirror these constants; the cross-language tests catch
//! drift). Pure: no I/O, no unsafe, no clock. Must never trust a value read from a file without
//! checking it against the file size: a hostile or corrupt file must end in a [`LayoutError`],
//! never in a panic or an out-of-bounds access.
//!
//! Two kinds of file share the identity block format and the seqlock conventions:
//! a sample region (`RRLYSHM\0`, one per published stream) and the daemon stats file
//! (`RRLYSTA\0`, `<shm_dir>/ringrelay.stats`).

use std::fmt;

pub const MAGIC_REGION: [u8; 8] = *b"RRLYSHM\0";
pub const MAGIC_STATS: [u8; 8] = *b"RRLYSTA\0";
pub const LAYOUT_MAJOR: u16 = 1;
pub const LAYOUT_MINOR: u16 = 0;
pub const ENDIAN_TAG: u32 = 0x0102_0304;
/// Size of the identity block (immutable after the file is published).
pub const IDENTITY_BYTES: usize = 0x100;

// ---- identity block, common to both kinds -------------------------------------------------
pub const OFF_MAGIC: usize = 0x000;
pub const OFF_MAJOR: usize = 0x008;
pub const OFF_MINOR: usize = 0x00A;
pub const OFF_ENDIAN: usize = 0x00C;
pub const OFF_INCOMPAT: usize = 0x010;
pub const OFF_COMPAT: usize = 0x014;
pub const OFF_FILE_BYTES: usize = 0x018;
pub const OFF_GENERATION: usize = 0x020;
pub const OFF_WRITER_PID: usize = 0x028;
pub const OFF_HEARTBEAT_MS: usize = 0x02C;
pub const OFF_CREATED_REAL_NS: usize = 0x030;
pub const OFF_CRC: usize = 0x0FC;

// ---- identity block, sample region ----------------------------------------------------------
pub const OFF_DATA_OFFSET: usize = 0x038;
pub const OFF_CAPACITY: usize = 0x040;
pub const OFF_FRAME_BYTES: usize = 0x048;
pub const OFF_MAX_BATCH: usize = 0x04C;
pub const OFF_VALUE_TYPE: usize = 0x050;
pub const OFF_VALUE_BYTES: usize = 0x052;
pub const OFF_CHANNELS: usize = 0x054;
pub const OFF_VALUES_PER_CHANNEL: usize = 0x056;
pub const OFF_MODE: usize = 0x058;
pub const OFF_INPUT_SAMPLE: usize = 0x05A;
pub const OFF_FACTOR: usize = 0x05C;
pub const OFF_INPUT_RATE: usize = 0x060;
pub const OFF_TIME_OFFSET: usize = 0x068;
pub const OFF_FIR_TAPS: usize = 0x070;
pub const OFF_LEVEL: usize = 0x074;
pub const OFF_LEVEL_COUNT: usize = 0x076;
pub const OFF_LEVEL_FACTORS: usize = 0x078; // u32 × 8
pub const OFF_NAME: usize = 0x0C0; // u8 × 60, NUL padded
pub const NAME_BYTES: usize = 60;
pub const MAX_LEVELS: usize = 8;

// ---- identity block, stats file -------------------------------------------------------------
pub const OFF_ROWS_OFFSET: usize = 0x038; // u32
pub const OFF_ROW_CAPACITY: usize = 0x03C; // u32
pub const OFF_ROW_BYTES: usize = 0x040; // u32
pub const OFF_COLUMNS: usize = 0x044; // u32
pub const OFF_COLUMN_NAMES: usize = 0x060; // 8 × u8[16]
pub const COLUMN_NAME_BYTES: usize = 16;
pub const STATS_COLUMNS: usize = 8;

// ---- publication line (both kinds) ----------------------------------------------------------
/// u64: frames fully written (exclusive end). Release store by the writer.
pub const OFF_HEAD: usize = 0x100;
/// u64: frames the writer may be writing now (exclusive end); >= head at every instant.
pub const OFF_INTENT: usize = 0x108;
/// u32: [`STATE_INIT`], [`STATE_RUNNING`], [`STATE_STOPPED`].
pub const OFF_STATE: usize = 0x110;

pub const STATE_INIT: u32 = 0;
pub const STATE_RUNNING: u32 = 1;
pub const STATE_STOPPED: u32 = 4;

// ---- status block (sample region), seqlock --------------------------------------------------
pub const OFF_STATUS_SEQ: usize = 0x140;
pub const OFF_HEARTBEAT_COUNT: usize = 0x148;
pub const OFF_HEARTBEAT_REAL_NS: usize = 0x150;
pub const OFF_HEARTBEAT_MONO_NS: usize = 0x158;
pub const OFF_INPUT_FRAMES: usize = 0x160;
pub const OFF_OUTPUT_FRAMES: usize = 0x168;
pub const OFF_MALFORMED: usize = 0x170;
pub const OFF_LAST_INPUT_REAL_NS: usize = 0x178;

// ---- anchors (sample region) ----------------------------------------------------------------
/// u32: anchors ever written; the newest is in slot `(count − 1) % ANCHOR_SLOTS`.
pub const OFF_ANCHOR_COUNT: usize = 0x180;
/// u32: number of anchor slots (16).
pub const OFF_ANCHOR_SLOTS: usize = 0x184;
pub const OFF_ANCHORS: usize = 0x200;
pub const ANCHOR_SLOTS: usize = 16;
pub const ANCHOR_BYTES: usize = 32;
// within an anchor entry
pub const ANCHOR_SEQ: usize = 0;
pub const ANCHOR_FLAGS: usize = 4;
pub const ANCHOR_FRAME: usize = 8;
pub const ANCHOR_REAL_NS: usize = 16;
pub const ANCHOR_RATE: usize = 24;
/// The anchor starts a new time line (input gap, clock step, first anchor).
pub const ANCHOR_DISCONTINUITY: u32 = 1;
/// Times come from arrival on the host clock, not from the source.
pub const ANCHOR_ESTIMATED: u32 = 2;
/// The rate is measured by the writer (no `sample_rate` configured).
pub const ANCHOR_RATE_ESTIMATED: u32 = 4;

// ---- stats file seqlock block -----------------------------------------------------------------
pub const OFF_STATS_SEQ: usize = 0x140;
pub const OFF_ROW_COUNT: usize = 0x144;
pub const OFF_STATS_UPDATED_NS: usize = 0x148;
pub const OFF_STATS_PUBLISHES: usize = 0x150;
pub const STATS_ROWS_OFFSET: usize = 0x200;
pub const ROW_LABEL_BYTES: usize = 64;
pub const ROW_KIND_BYTES: usize = 16;
pub const ROW_STATE_BYTES: usize = 16;
pub const ROW_VALUES_OFFSET: usize = ROW_LABEL_BYTES + ROW_KIND_BYTES + ROW_STATE_BYTES;
pub const ROW_BYTES: usize = ROW_VALUES_OFFSET + 8 * STATS_COLUMNS;

/// Where sample data starts in layout 1 (readers must use the header field, not this).
pub const DATA_OFFSET: u64 = 0x10000;

/// Decimation mode codes.
pub const MODE_EVERY: u16 = 1;
pub const MODE_MEAN: u16 = 2;
pub const MODE_MINMAX: u16 = 3;
pub const MODE_FIR: u16 = 4;

/// The status block of a sample region (read and written under its seqlock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub heartbeat_count: u64,
    pub heartbeat_real_ns: i64,
    pub heartbeat_mono_ns: i64,
    pub input_frames: u64,
    pub output_frames: u64,
    pub malformed_datagrams: u64,
    /// CLOCK_REALTIME of the last input, 0 if none yet.
    pub last_input_real_ns: i64,
}

/// A time anchor: frame `frame` stands for CLOCK_REALTIME `real_ns`; later (and earlier) frames
/// are `(j − frame) / rate_hz` seconds away, until the next anchor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Anchor {
    pub flags: u32,
    pub frame: u64,
    pub real_ns: i64,
    /// Output frames per second (0.0 = unknown: the time holds for `frame` only).
    pub rate_hz: f64,
}

impl Anchor {
    /// Time of frame `j` by this anchor.
    pub fn time_of(&self, j: u64) -> Option<i64> {
        if self.rate_hz > 0.0 && self.rate_hz.is_finite() {
            let d = j as f64 - self.frame as f64;
            Some(
                self.real_ns
                    .saturating_add((d * 1e9 / self.rate_hz).round() as i64),
            )
        } else if j == self.frame {
            Some(self.real_ns)
        } else {
            None
        }
    }
}

/// Picks the anchor for frame `j`: the newest anchor at or before `j`, else the oldest one.
pub fn anchor_for(anchors: &[Anchor], j: u64) -> Option<&Anchor> {
    anchors
        .iter()
        .filter(|a| a.frame <= j)
        .max_by_key(|a| a.frame)
        .or_else(|| anchors.iter().min_by_key(|a| a.frame))
}

/// Why a file is not a readable region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Shorter than the fixed header.
    TooShort(u64),
    /// Wrong magic: not a ringrelay file (or not the kind asked for).
    NotARegion,
    /// Written by a newer, incompatible layout.
    NewerVersion { major: u16, minor: u16 },
    /// Older major than this reader knows (never produced so far).
    UnknownVersion { major: u16, minor: u16 },
    /// Written on a machine of the other byte order.
    WrongEndian,
    /// Incompatible feature bits this reader does not know.
    Incompatible(u32),
    /// Identity block checksum mismatch.
    BadChecksum,
    /// A size or offset field is inconsistent with itself or the file.
    Inconsistent(&'static str),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::TooShort(n) => write!(f, "file too short ({n} bytes) for a ringrelay region"),
            LayoutError::NotARegion => f.write_str("not a ringrelay region (bad magic)"),
            LayoutError::NewerVersion { major, minor } => write!(
                f,
                "region has a newer layout version {major}.{minor}; this reader knows {LAYOUT_MAJOR}.{LAYOUT_MINOR}: upgrade the reader"
            ),
            LayoutError::UnknownVersion { major, minor } => {
                write!(f, "unknown region layout version {major}.{minor}")
            }
            LayoutError::WrongEndian => f.write_str("region was written with the other byte order"),
            LayoutError::Incompatible(b) => {
                write!(f, "region uses incompatible features {b:#x} this reader does not know")
            }
            LayoutError::BadChecksum => f.write_str("region header checksum mismatch (corrupt or being replaced)"),
            LayoutError::Inconsistent(what) => write!(f, "region header inconsistent: {what}"),
        }
    }
}

impl std::error::Error for LayoutError {}

/// The decoded identity block of a sample region.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionInfo {
    pub minor: u16,
    pub file_bytes: u64,
    pub generation: u64,
    pub writer_pid: u32,
    pub heartbeat_ms: u32,
    pub created_real_ns: i64,
    pub data_offset: u64,
    pub capacity: u64,
    pub frame_bytes: u32,
    pub max_batch: u32,
    pub value_type: crate::engine::decimate::ValueType,
    pub channels: u32,
    pub values_per_channel: u32,
    pub mode: u16,
    /// 1 + index into [`crate::config::sample::SampleType::ALL`]; informational.
    pub input_sample: u16,
    pub factor: u32,
    /// Input frames per second, 0.0 when unknown.
    pub input_rate: f64,
    /// Input-frame offset from `m·factor` that output frame `m` stands for.
    pub time_offset: f64,
    pub fir_taps: u32,
    pub level: u16,
    pub level_factors: Vec<u32>,
    pub name: String,
}

impl RegionInfo {
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            MODE_EVERY => "every",
            MODE_MEAN => "mean",
            MODE_MINMAX => "minmax",
            MODE_FIR => "fir",
            _ => "unknown",
        }
    }

    /// Column names of one frame: `c0, c1, …` or `c0_min, c0_max, …`.
    pub fn column_names(&self) -> Vec<String> {
        (0..self.channels)
            .flat_map(|c| {
                if self.values_per_channel == 2 {
                    vec![format!("c{c}_min"), format!("c{c}_max")]
                } else {
                    vec![format!("c{c}")]
                }
            })
            .collect()
    }

    /// Decodes one frame into its values (as f64, exact for every value type).
    pub fn decode_frame(&self, frame: &[u8]) -> Vec<f64> {
        let w = self.value_type.width();
        frame
            .chunks_exact(w)
            .map(|b| self.value_type.decode(b))
            .collect()
    }
}

// ---- little-endian field helpers (bounds are the caller's: all offsets are constants) -----
pub fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
pub fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
pub fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
pub fn get_f64(b: &[u8], off: usize) -> f64 {
    f64::from_bits(get_u64(b, off))
}
pub fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
pub fn put_f64(b: &mut [u8], off: usize, v: f64) {
    put_u64(b, off, v.to_bits());
}
/// Writes `s` NUL-padded into `b[off..off+len]`, truncated at a char boundary to leave a NUL.
pub fn put_str(b: &mut [u8], off: usize, len: usize, s: &str) {
    let mut end = s.len().min(len - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    b[off..off + len].fill(0);
    b[off..off + end].copy_from_slice(&s.as_bytes()[..end]);
}
pub fn get_str(b: &[u8], off: usize, len: usize) -> String {
    let raw = &b[off..off + len];
    let end = raw.iter().position(|&c| c == 0).unwrap_or(len);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// zlib CRC-32 (the one in Python's `zlib.crc32`), bitwise: the identity block is tiny.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Fills the common identity fields; the caller adds kind-specific ones, then [`seal`].
pub fn put_common(b: &mut [u8], file_bytes: u64, generation: u64, pid: u32, created: i64) {
    put_u16(b, OFF_MAJOR, LAYOUT_MAJOR);
    put_u16(b, OFF_MINOR, LAYOUT_MINOR);
    put_u32(b, OFF_ENDIAN, ENDIAN_TAG);
    put_u32(b, OFF_INCOMPAT, 0);
    put_u32(b, OFF_COMPAT, 0);
    put_u64(b, OFF_FILE_BYTES, file_bytes);
    put_u64(b, OFF_GENERATION, generation);
    put_u32(b, OFF_WRITER_PID, pid);
    put_u32(b, OFF_HEARTBEAT_MS, 100);
    put_u64(b, OFF_CREATED_REAL_NS, created as u64);
}

/// Stores the magic and the CRC (computed with the final magic in place).
pub fn seal(b: &mut [u8], magic: [u8; 8]) {
    b[OFF_MAGIC..OFF_MAGIC + 8].copy_from_slice(&magic);
    let crc = crc32(&b[..OFF_CRC]);
    put_u32(b, OFF_CRC, crc);
}

/// The checks common to both kinds: magic, version, byte order, feature bits, CRC, file size.
pub fn validate_common(b: &[u8], file_len: u64, magic: [u8; 8]) -> Result<(), LayoutError> {
    if (b.len() as u64) < IDENTITY_BYTES as u64 || file_len < 0x400 {
        return Err(LayoutError::TooShort(file_len.min(b.len() as u64)));
    }
    if b[OFF_MAGIC..OFF_MAGIC + 8] != magic {
        return Err(LayoutError::NotARegion);
    }
    let tag = get_u32(b, OFF_ENDIAN);
    if tag != ENDIAN_TAG {
        return Err(if tag == ENDIAN_TAG.swap_bytes() {
            LayoutError::WrongEndian
        } else {
            LayoutError::Inconsistent("endianness tag")
        });
    }
    let (major, minor) = (get_u16(b, OFF_MAJOR), get_u16(b, OFF_MINOR));
    if major > LAYOUT_MAJOR {
        return Err(LayoutError::NewerVersion { major, minor });
    }
    if major != LAYOUT_MAJOR {
        return Err(LayoutError::UnknownVersion { major, minor });
    }
    let inc = get_u32(b, OFF_INCOMPAT);
    if inc != 0 {
        return Err(LayoutError::Incompatible(inc));
    }
    if crc32(&b[..OFF_CRC]) != get_u32(b, OFF_CRC) {
        return Err(LayoutError::BadChecksum);
    }
    let fb = get_u64(b, OFF_FILE_BYTES);
    if fb > file_len {
        return Err(LayoutError::Inconsistent("file_bytes larger than the file"));
    }
    if fb < 0x400 {
        return Err(LayoutError::Inconsistent(
            "file_bytes smaller than the header",
        ));
    }
    Ok(())
}

/// Validates the identity block of a sample region of `file_len` bytes (the reader's `st_size`).
/// `b` is at least the first [`IDENTITY_BYTES`] of the file.
pub fn validate_region(b: &[u8], file_len: u64) -> Result<RegionInfo, LayoutError> {
    validate_common(b, file_len, MAGIC_REGION)?;
    use crate::engine::decimate::ValueType;
    let value_type = ValueType::from_code(get_u16(b, OFF_VALUE_TYPE))
        .ok_or(LayoutError::Inconsistent("unknown value type"))?;
    if get_u16(b, OFF_VALUE_BYTES) as usize != value_type.width() {
        return Err(LayoutError::Inconsistent("value_bytes"));
    }
    let channels = get_u16(b, OFF_CHANNELS) as u32;
    let vpc = get_u16(b, OFF_VALUES_PER_CHANNEL) as u32;
    if channels == 0 || !(1..=2).contains(&vpc) {
        return Err(LayoutError::Inconsistent("channels or values_per_channel"));
    }
    let frame_bytes = get_u32(b, OFF_FRAME_BYTES);
    if frame_bytes as u64 != value_type.width() as u64 * channels as u64 * vpc as u64 {
        return Err(LayoutError::Inconsistent("frame_bytes"));
    }
    let capacity = get_u64(b, OFF_CAPACITY);
    let max_batch = get_u32(b, OFF_MAX_BATCH);
    if capacity < 8 || max_batch == 0 || max_batch as u64 > capacity / 8 {
        return Err(LayoutError::Inconsistent("capacity or max_batch_frames"));
    }
    let data_offset = get_u64(b, OFF_DATA_OFFSET);
    let file_bytes = get_u64(b, OFF_FILE_BYTES);
    let end = capacity
        .checked_mul(frame_bytes as u64)
        .and_then(|d| d.checked_add(data_offset));
    if data_offset < 0x400 || data_offset % 8 != 0 || end.is_none_or(|e| e > file_bytes) {
        return Err(LayoutError::Inconsistent("data region outside the file"));
    }
    let level_count = get_u16(b, OFF_LEVEL_COUNT) as usize;
    let level = get_u16(b, OFF_LEVEL);
    if level_count == 0 || level_count > MAX_LEVELS || level as usize >= level_count {
        return Err(LayoutError::Inconsistent("level or level_count"));
    }
    let level_factors: Vec<u32> = (0..level_count)
        .map(|i| get_u32(b, OFF_LEVEL_FACTORS + 4 * i))
        .collect();
    Ok(RegionInfo {
        minor: get_u16(b, OFF_MINOR),
        file_bytes,
        generation: get_u64(b, OFF_GENERATION),
        writer_pid: get_u32(b, OFF_WRITER_PID),
        heartbeat_ms: get_u32(b, OFF_HEARTBEAT_MS),
        created_real_ns: get_u64(b, OFF_CREATED_REAL_NS) as i64,
        data_offset,
        capacity,
        frame_bytes,
        max_batch,
        value_type,
        channels,
        values_per_channel: vpc,
        mode: get_u16(b, OFF_MODE),
        input_sample: get_u16(b, OFF_INPUT_SAMPLE),
        factor: get_u32(b, OFF_FACTOR),
        input_rate: get_f64(b, OFF_INPUT_RATE),
        time_offset: get_f64(b, OFF_TIME_OFFSET),
        fir_taps: get_u32(b, OFF_FIR_TAPS),
        level,
        level_factors,
        name: get_str(b, OFF_NAME, NAME_BYTES),
    })
}

/// Encodes the identity block of a sample region (magic and CRC included).
pub fn encode_region(info: &RegionInfo) -> [u8; IDENTITY_BYTES] {
    let mut b = [0u8; IDENTITY_BYTES];
    put_common(
        &mut b,
        info.file_bytes,
        info.generation,
        info.writer_pid,
        info.created_real_ns,
    );
    put_u32(&mut b, OFF_HEARTBEAT_MS, info.heartbeat_ms);
    put_u64(&mut b, OFF_DATA_OFFSET, info.data_offset);
    put_u64(&mut b, OFF_CAPACITY, info.capacity);
    put_u32(&mut b, OFF_FRAME_BYTES, info.frame_bytes);
    put_u32(&mut b, OFF_MAX_BATCH, info.max_batch);
    put_u16(&mut b, OFF_VALUE_TYPE, info.value_type.code());
    put_u16(&mut b, OFF_VALUE_BYTES, info.value_type.width() as u16);
    put_u16(&mut b, OFF_CHANNELS, info.channels as u16);
    put_u16(
        &mut b,
        OFF_VALUES_PER_CHANNEL,
        info.values_per_channel as u16,
    );
    put_u16(&mut b, OFF_MODE, info.mode);
    put_u16(&mut b, OFF_INPUT_SAMPLE, info.input_sample);
    put_u32(&mut b, OFF_FACTOR, info.factor);
    put_f64(&mut b, OFF_INPUT_RATE, info.input_rate);
    put_f64(&mut b, OFF_TIME_OFFSET, info.time_offset);
    put_u32(&mut b, OFF_FIR_TAPS, info.fir_taps);
    put_u16(&mut b, OFF_LEVEL, info.level);
    put_u16(&mut b, OFF_LEVEL_COUNT, info.level_factors.len() as u16);
    for (i, f) in info.level_factors.iter().take(MAX_LEVELS).enumerate() {
        put_u32(&mut b, OFF_LEVEL_FACTORS + 4 * i, *f);
    }
    put_str(&mut b, OFF_NAME, NAME_BYTES, &info.name);
    seal(&mut b, MAGIC_REGION);
    b
}

/// The decoded identity block of a stats file.
#[derive(Clone, Debug, PartialEq)]
pub struct StatsInfo {
    pub generation: u64,
    pub writer_pid: u32,
    pub rows_offset: u32,
    pub row_capacity: u32,
    pub row_bytes: u32,
    pub columns: Vec<String>,
}

pub fn validate_stats(b: &[u8], file_len: u64) -> Result<StatsInfo, LayoutError> {
    validate_common(b, file_len, MAGIC_STATS)?;
    let rows_offset = get_u32(b, OFF_ROWS_OFFSET);
    let row_capacity = get_u32(b, OFF_ROW_CAPACITY);
    let row_bytes = get_u32(b, OFF_ROW_BYTES);
    let ncol = get_u32(b, OFF_COLUMNS);
    if row_bytes as usize != ROW_BYTES || ncol as usize != STATS_COLUMNS {
        return Err(LayoutError::Inconsistent("row_bytes or columns"));
    }
    let end = rows_offset as u64 + row_capacity as u64 * row_bytes as u64;
    if (rows_offset as usize) < 0x200 || end > get_u64(b, OFF_FILE_BYTES) {
        return Err(LayoutError::Inconsistent("rows outside the file"));
    }
    Ok(StatsInfo {
        generation: get_u64(b, OFF_GENERATION),
        writer_pid: get_u32(b, OFF_WRITER_PID),
        rows_offset,
        row_capacity,
        row_bytes,
        columns: (0..STATS_COLUMNS)
            .map(|i| {
                get_str(
                    b,
                    OFF_COLUMN_NAMES + i * COLUMN_NAME_BYTES,
                    COLUMN_NAME_BYTES,
                )
            })
            .collect(),
    })
}

/// Protocol arithmetic of one read (steps 3 and 7 of the protocol in ringrelay-shm(7)), pure so
/// it can be tested at the edges.
///
/// Before the copy: with `intent` and `head` just loaded and the reader at `pos`, returns the
/// position to copy from (after a lap: the oldest frame still safe plus `margin`, capped at
/// `head`).
pub fn resync_position(pos: u64, head: u64, intent: u64, capacity: u64, margin: u64) -> u64 {
    let oldest = intent.saturating_sub(capacity);
    if pos < oldest {
        oldest.saturating_add(margin).min(head)
    } else {
        pos
    }
}

/// After the copy of `n` frames starting at `pos`, with `intent` loaded after the acquire fence:
/// how many of the first copied frames may have been overwritten (and must be dropped).
pub fn overwritten_prefix(pos: u64, n: u64, intent_after: u64, capacity: u64) -> u64 {
    // Frame j is safe iff j + capacity >= intent_after, i.e. j >= intent_after - capacity.
    let oldest = intent_after.saturating_sub(capacity);
    oldest.saturating_sub(pos).min(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::decimate::ValueType;
    use proptest::prelude::*;

    pub(crate) fn sample_info() -> RegionInfo {
        RegionInfo {
            minor: 0,
            file_bytes: DATA_OFFSET + 64 * 12,
            generation: 7,
            writer_pid: 42,
            heartbeat_ms: 100,
            created_real_ns: 1_700_000_000_000_000_000,
            data_offset: DATA_OFFSET,
            capacity: 64,
            frame_bytes: 12,
            max_batch: 8,
            value_type: ValueType::I16,
            channels: 3,
            values_per_channel: 2,
            mode: MODE_MINMAX,
            input_sample: 4,
            factor: 10,
            input_rate: 100.0,
            time_offset: 4.5,
            fir_taps: 0,
            level: 0,
            level_factors: vec![10, 100],
            name: "seismo".into(),
        }
    }

    #[test]
    fn identity_round_trips() {
        let info = sample_info();
        let b = encode_region(&info);
        assert_eq!(validate_region(&b, info.file_bytes).unwrap(), info);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn clear_errors() {
        let info = sample_info();
        let mut b = encode_region(&info);
        assert_eq!(
            validate_region(&b, 100),
            Err(LayoutError::TooShort(100)),
            "short file"
        );
        assert!(matches!(
            validate_region(&b, 0x800),
            Err(LayoutError::Inconsistent(_))
        ));
        let mut newer = b;
        put_u16(&mut newer, OFF_MAJOR, 2);
        seal(&mut newer, MAGIC_REGION);
        assert_eq!(
            validate_region(&newer, info.file_bytes),
            Err(LayoutError::NewerVersion { major: 2, minor: 0 })
        );
        assert!(validate_region(&newer, info.file_bytes)
            .unwrap_err()
            .to_string()
            .contains("newer layout version"));
        b[3] = b'X';
        assert_eq!(
            validate_region(&b, info.file_bytes),
            Err(LayoutError::NotARegion)
        );
        let mut s = encode_region(&info);
        s[OFF_NAME] ^= 1;
        assert_eq!(
            validate_region(&s, info.file_bytes),
            Err(LayoutError::BadChecksum)
        );
        let st = encode_region(&info);
        assert_eq!(
            validate_stats(&st, info.file_bytes),
            Err(LayoutError::NotARegion)
        );
    }

    #[test]
    fn lap_arithmetic_edges() {
        // Early in life intent < capacity: nothing overwritten.
        assert_eq!(overwritten_prefix(0, 5, 10, 64), 0);
        // pos exactly the oldest safe frame.
        assert_eq!(overwritten_prefix(36, 5, 100, 64), 0);
        assert_eq!(overwritten_prefix(35, 5, 100, 64), 1);
        assert_eq!(overwritten_prefix(0, 5, 1000, 64), 5);
        assert_eq!(resync_position(0, 90, 100, 64, 8), 44);
        assert_eq!(resync_position(0, 40, 100, 64, 8), 40);
        assert_eq!(resync_position(50, 90, 100, 64, 8), 50);
        // Near the top of the u64 range.
        let big = u64::MAX - 10;
        assert_eq!(overwritten_prefix(big - 64, 4, big, 64), 0);
        assert_eq!(resync_position(0, big, big, 64, 8), big - 56);
    }

    proptest! {
        /// Any byte soup is either rejected or decodes to something whose data region fits.
        #[test]
        fn validator_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..600),
                                  len in 0u64..1 << 40, keep_magic in any::<bool>()) {
            if keep_magic && bytes.len() >= IDENTITY_BYTES {
                bytes[..8].copy_from_slice(&MAGIC_REGION);
                put_u16(&mut bytes, OFF_MAJOR, 1);
                put_u32(&mut bytes, OFF_ENDIAN, ENDIAN_TAG);
                put_u32(&mut bytes, OFF_INCOMPAT, 0);
                let crc = crc32(&bytes[..OFF_CRC]);
                put_u32(&mut bytes, OFF_CRC, crc);
            }
            if let Ok(i) = validate_region(&bytes, len) {
                prop_assert!(i.data_offset + i.capacity * i.frame_bytes as u64 <= len);
            }
            let _ = validate_stats(&bytes, len);
        }

        /// The two lap formulas agree with the definition "frame j is intact iff
        /// j + capacity >= intent".
        #[test]
        fn overwritten_prefix_matches_definition(pos in 0u64..10_000, n in 0u64..200,
                                                 intent in 0u64..20_000, cap in 8u64..500) {
            let bad = overwritten_prefix(pos, n, intent, cap);
            for j in pos..pos + n {
                let intact = j + cap >= intent;
                prop_assert_eq!(intact, j >= pos + bad);
            }
        }
    }
}
