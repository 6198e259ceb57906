//! Shared-memory regions of decimated samples: layout, writer and reader.
//!
//! Owns: everything about the files under `shm_dir` (default `/dev/shm/ringrelay`): one file
//! per published stream (`<channel>`, plus `<channel>.<factor>` per extra cascade level) and the
//! daemon stats file `ringrelay.stats`. The format and protocol are documented byte by byte in
//! `man/ringrelay-shm.7`; [`layout`] is the single source of truth for offsets.
//!
//! * [`layout`]: pure offsets, header encoding and validation, lap arithmetic (no unsafe).
//! * [`writer`]: file creation and the publishing half of the protocol (unsafe, small).
//! * [`reader`]: [`Reader`] and [`StatsReader`], the reading half (unsafe, small).
//! * [`publisher`]: [`Publisher`], what the engine feeds per channel (as its
//!   [`crate::engine::io::Publish`], implemented in [`crate::driver::sys`]).
//! * [`stats`]: [`StatsWriter`], the daemon-wide counters for `ringrelay stat`.
//!
//! Must never: let a reader slow or block the writer, or let anything in a file make a reader
//! read outside its mapping.

pub mod layout;
pub mod publisher;
pub mod reader;
pub mod stats;
pub mod writer;

pub use publisher::{Publisher, PublisherCounters, ShmOptions};
pub use reader::{Chunk, Reader, ShmError, StatsReader, StatsSnapshot, WriterState};
pub use stats::{StatRow, StatsWriter, STATS_FILE, STAT_COLUMNS};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sample::{DecimateSpec, SampleConfig, SampleType};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = PathBuf::from(format!(
                "/dev/shm/rr-test-{}-u{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
        fn opts(&self) -> ShmOptions {
            ShmOptions {
                dir: self.0.clone(),
                mode: 0o640,
                group: None,
                run_as: None,
            }
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn cfg(decimate: &str, frames: u64) -> SampleConfig {
        SampleConfig {
            sample: SampleType::I16Le,
            interleave: 2,
            header_bytes: 0,
            sample_rate: Some(1000.0),
            decimate: DecimateSpec::parse(decimate).unwrap(),
            shm: true,
            shm_frames: frames,
        }
    }

    fn i16_stream(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let a = (i as i16).to_le_bytes();
                let b = (-(i as i16)).to_le_bytes();
                [a[0], a[1], b[0], b[1]]
            })
            .collect()
    }

    #[test]
    fn publish_read_and_lap() {
        let t = TempDir::new();
        let mut p = Publisher::create(&t.opts(), "ch", &cfg("every:1", 64)).unwrap();
        let mut r = Reader::open(t.0.join("ch")).unwrap();
        let meta = std::fs::metadata(t.0.join("ch")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        p.feed_stream(&i16_stream(10));
        let mut buf = Vec::new();
        let c = r.read(&mut buf, 100).unwrap();
        assert_eq!((c.start, c.frames, c.lost), (0, 10, 0));
        assert_eq!(r.info().decode_frame(&buf[36..40]), vec![9.0, -9.0]);
        // Lap: 200 more frames into a 64-frame ring while the reader sleeps.
        p.feed_stream(&i16_stream(210)[40..]);
        let c = r.read(&mut buf, 1000).unwrap();
        // oldest safe = 210 - 64 = 146, plus margin max_batch = 8.
        assert_eq!(c.lost, 154 - 10);
        assert_eq!(c.start, 154);
        assert_eq!(c.frames, 210 - 154);
        assert_eq!(r.info().decode_frame(&buf[..4]), vec![154.0, -154.0]);
        assert_eq!(r.lost_total(), 144);
        assert!(r.time_of(0).is_some());
        let t0 = r.time_of(0).unwrap();
        assert_eq!(r.time_of(1000).unwrap() - t0, 1_000_000_000);
        assert_eq!(r.writer_state(), WriterState::Running);
        p.close();
        assert_eq!(r.writer_state(), WriterState::Stopped);
    }

    #[test]
    fn levels_files_and_restart_generation() {
        let t = TempDir::new();
        let p = Publisher::create(&t.opts(), "env", &cfg("minmax:10,100", 64)).unwrap();
        assert!(t.0.join("env.100").exists());
        let r = Reader::open(t.0.join("env")).unwrap();
        assert_eq!(r.info().level_factors, vec![10, 100]);
        assert_eq!(
            r.info().column_names(),
            vec!["c0_min", "c0_max", "c1_min", "c1_max"]
        );
        let g = r.info().generation;
        // A second writer for the same stream is refused while the first lives.
        let e = Publisher::create(&t.opts(), "env", &cfg("minmax:10,100", 64)).err();
        assert_eq!(e.unwrap().kind(), std::io::ErrorKind::AddrInUse);
        p.close();
        let _p2 = Publisher::create(&t.opts(), "env", &cfg("minmax:10,100", 64)).unwrap();
        let mut r = r;
        assert_eq!(r.writer_state(), WriterState::Replaced);
        assert!(r.reattach().unwrap());
        assert_eq!(r.info().generation, g + 1);
    }

    #[test]
    fn a_truncated_region_is_an_error_not_a_fault() {
        let t = TempDir::new();
        let mut p = Publisher::create(&t.opts(), "cut", &cfg("every:1", 64)).unwrap();
        p.feed_stream(&i16_stream(10));
        p.close();
        let mut r = Reader::open(t.0.join("cut")).unwrap();
        let needs = std::fs::metadata(t.0.join("cut")).unwrap().len();
        // Cut inside the data (the header page stays), then to nothing.
        for size in [layout::DATA_OFFSET, 0] {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(t.0.join("cut"))
                .unwrap();
            f.set_len(size).unwrap();
            let mut buf = Vec::new();
            let e = r.read(&mut buf, 100).unwrap_err();
            assert!(buf.is_empty());
            let want = format!(
                "region {} was truncated ({size} bytes, needs {needs}): the relay restarted or \
                 the file was replaced",
                t.0.join("cut").display()
            );
            assert_eq!(e.to_string(), want);
            assert!(r.head().is_err());
            assert!(r.seek_oldest().is_err());
            assert!(r.status().is_none());
            assert!(r.anchors().is_empty());
            assert_eq!(r.time_of(0), None);
            assert_eq!(r.writer_state(), WriterState::Truncated);
        }
    }

    #[test]
    fn not_a_region_and_missing() {
        let t = TempDir::new();
        std::fs::create_dir_all(&t.0).unwrap();
        std::fs::write(t.0.join("junk"), vec![7u8; 5000]).unwrap();
        let e = Reader::open(t.0.join("junk")).err().unwrap().to_string();
        assert!(e.contains("not a ringrelay region"), "{e}");
        let e = Reader::open(t.0.join("nope")).err().unwrap();
        assert!(matches!(e, ShmError::Missing(_)));
    }

    #[test]
    fn stats_round_trip_and_growth() {
        let t = TempDir::new();
        let mut w = StatsWriter::create(&t.opts()).unwrap();
        let row = |i: u64| StatRow {
            label: format!("ch{i}"),
            kind: "channel".into(),
            state: "up".into(),
            values: [i, 2, 3, 4, 5, 6, 7, 8],
        };
        w.publish(&[row(1), row(2)]);
        let mut r = StatsReader::open(t.0.join(STATS_FILE)).unwrap();
        let s = r.snapshot().unwrap();
        assert_eq!(s.columns, STAT_COLUMNS);
        assert_eq!(s.rows.len(), 2);
        assert_eq!(s.rows[1].label, "ch2");
        assert_eq!(s.rows[1].values[0], 2);
        let many: Vec<StatRow> = (0..300).map(row).collect();
        w.publish(&many);
        let s = r.snapshot().unwrap();
        assert_eq!(s.rows.len(), 300);
        assert_eq!(s.rows[299].label, "ch299");
        w.close();
        assert!(r.snapshot().unwrap().stopped);
    }
}
