//! The daemon-wide counters file `<shm_dir>/ringrelay.stats`, read by `ringrelay stat`.
//!
//! Owns: [`StatsWriter`] (every running daemon publishes its rows about every 100 ms, whether
//! or not a channel decimates; what each row kind holds is [`crate::metrics`]'s) and the fixed
//! column set [`STAT_COLUMNS`]. Same protocol family as the sample
//! regions: an identity block (magic `RRLYSTA\0`), a `state` word, and all rows under one
//! seqlock so a reader always sees one consistent snapshot. Must never block or fail after
//! creation: a publish with more rows than the file holds replaces the file with a larger one
//! (new generation), which readers follow by re-opening.

use super::layout;
use super::writer::{ensure_dir, next_generation, realtime_ns, take_writer_lock, RawRegion};
use super::ShmOptions;
use nix::fcntl::Flock;
use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;

/// Column names of [`StatRow::values`].
pub const STAT_COLUMNS: [&str; 8] = [
    "bytes",
    "datagrams",
    "drops",
    "disconnects",
    "reconnects",
    "errors",
    "backlog",
    "clients",
];

/// The file name inside `shm_dir`.
pub const STATS_FILE: &str = "ringrelay.stats";

/// One row: a channel, an input or an output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatRow {
    /// e.g. `seismo` or `seismo/tcp-listen://0.0.0.0:6000` (truncated to 63 bytes).
    pub label: String,
    /// e.g. `channel`, `input`, `output` (15 bytes).
    pub kind: String,
    /// e.g. `up`, `down`, `reconnecting` (15 bytes).
    pub state: String,
    /// In the order of [`STAT_COLUMNS`].
    pub values: [u64; 8],
}

/// Writer of the stats file.
pub struct StatsWriter {
    opts: ShmOptions,
    raw: RawRegion,
    capacity: usize,
    publishes: u64,
    _lock: Flock<File>,
}

impl StatsWriter {
    /// Creates `<dir>/ringrelay.stats` (the directory too if missing), atomically.
    pub fn create(opts: &ShmOptions) -> io::Result<StatsWriter> {
        ensure_dir(opts)?;
        let lock = take_writer_lock(&opts.dir, STATS_FILE)?;
        let raw = Self::create_file(opts, 256)?;
        Ok(StatsWriter {
            opts: opts.clone(),
            raw,
            capacity: 256,
            publishes: 0,
            _lock: lock,
        })
    }

    fn create_file(opts: &ShmOptions, capacity: usize) -> io::Result<RawRegion> {
        let path = opts.dir.join(STATS_FILE);
        let rows_offset = layout::STATS_ROWS_OFFSET;
        let file_bytes = (rows_offset + capacity * layout::ROW_BYTES).max(0x400) as u64;
        let mut id = [0u8; layout::IDENTITY_BYTES];
        layout::put_common(
            &mut id,
            file_bytes,
            next_generation(&path, layout::MAGIC_STATS),
            std::process::id(),
            realtime_ns(),
        );
        layout::put_u32(&mut id, layout::OFF_ROWS_OFFSET, rows_offset as u32);
        layout::put_u32(&mut id, layout::OFF_ROW_CAPACITY, capacity as u32);
        layout::put_u32(&mut id, layout::OFF_ROW_BYTES, layout::ROW_BYTES as u32);
        layout::put_u32(&mut id, layout::OFF_COLUMNS, layout::STATS_COLUMNS as u32);
        for (i, c) in STAT_COLUMNS.iter().enumerate() {
            layout::put_str(
                &mut id,
                layout::OFF_COLUMN_NAMES + i * layout::COLUMN_NAME_BYTES,
                layout::COLUMN_NAME_BYTES,
                c,
            );
        }
        layout::seal(&mut id, layout::MAGIC_STATS);
        let raw = RawRegion::create(
            &opts.dir,
            STATS_FILE,
            file_bytes,
            opts.mode,
            opts.group,
            &id,
            |_| {},
        )?;
        raw.store_u32(layout::OFF_STATE, layout::STATE_RUNNING, Ordering::Release);
        Ok(raw)
    }

    /// Publishes a consistent snapshot of all rows.
    pub fn publish(&mut self, rows: &[StatRow]) {
        if rows.len() > self.capacity {
            let cap = rows.len().next_power_of_two();
            match Self::create_file(&self.opts, cap) {
                Ok(raw) => {
                    self.raw
                        .store_u32(layout::OFF_STATE, layout::STATE_STOPPED, Ordering::Release);
                    self.raw = raw;
                    self.capacity = cap;
                }
                Err(e) => log::warn!(
                    "cannot grow {} to {cap} rows: {e}; showing the first {}",
                    self.opts.dir.join(STATS_FILE).display(),
                    self.capacity
                ),
            }
        }
        let rows = &rows[..rows.len().min(self.capacity)];
        let mut buf = vec![0u8; rows.len() * layout::ROW_BYTES];
        for (r, b) in rows.iter().zip(buf.chunks_exact_mut(layout::ROW_BYTES)) {
            layout::put_str(b, 0, layout::ROW_LABEL_BYTES, &r.label);
            layout::put_str(b, layout::ROW_LABEL_BYTES, layout::ROW_KIND_BYTES, &r.kind);
            layout::put_str(
                b,
                layout::ROW_LABEL_BYTES + layout::ROW_KIND_BYTES,
                layout::ROW_STATE_BYTES,
                &r.state,
            );
            for (i, v) in r.values.iter().enumerate() {
                layout::put_u64(b, layout::ROW_VALUES_OFFSET + 8 * i, *v);
            }
        }
        self.publishes += 1;
        let now = realtime_ns();
        let publishes = self.publishes;
        self.raw.seqlock_write(layout::OFF_STATS_SEQ, |r| {
            r.write_bytes(layout::STATS_ROWS_OFFSET, &buf);
            r.store_u32(layout::OFF_ROW_COUNT, rows.len() as u32, Ordering::Relaxed);
            r.store_u64(layout::OFF_STATS_UPDATED_NS, now as u64, Ordering::Relaxed);
            r.store_u64(layout::OFF_STATS_PUBLISHES, publishes, Ordering::Relaxed);
        });
    }

    /// `state = STOPPED`; the file stays so `ringrelay stat` can show the last counters.
    pub fn close(self) {
        self.raw
            .store_u32(layout::OFF_STATE, layout::STATE_STOPPED, Ordering::Release);
    }
}
