//! The files of a spool directory on Linux: creating the directory, finding and scanning the
//! segments a previous run left (a torn tail is cut off, so appends go on from the last whole
//! record), opening the position file, creating and removing segments.
//!
//! Owns: the set-up side of a spool ([`crate::engine::io::Sys::spool_open`] and friends).
//! Must never: write records or positions (the ring does, from the engine's plans), or use a
//! directory that others could write to ([`crate::ops::fsperm::check_private_dir`]).

use crate::engine::io::{Fd, SpoolFiles};
use crate::engine::spoolfmt::{self, ScanEnd};
use crate::ops::fsperm::check_private_dir;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// The position file's name in a spool directory.
pub const POSITION_FILE: &str = "position";

fn open_rw(path: &Path, create: bool) -> io::Result<std::fs::File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// See [`crate::engine::io::Sys::spool_open`].
pub fn open(dir: &Path, run_as: Option<u32>) -> io::Result<SpoolFiles> {
    if !dir.exists() {
        std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    }
    check_private_dir(dir, "spool", run_as).map_err(io::Error::other)?;
    let pos_file = open_rw(&dir.join(POSITION_FILE), true)?;
    let position = std::fs::read(dir.join(POSITION_FILE))?;
    let recorded = spoolfmt::decode_position(&position);
    let mut seqs: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| spoolfmt::parse_segment_name(e.file_name().to_str()?))
        .collect();
    seqs.sort_unstable();
    let mut files = SpoolFiles {
        position,
        position_fd: OwnedFd::from(pos_file).into_raw_fd(),
        ..SpoolFiles::default()
    };
    for seq in seqs {
        let path = dir.join(spoolfmt::segment_name(seq));
        // Segments wholly before the recorded position were consumed: a crash came between
        // recording it and removing them.
        if recorded.is_some_and(|p| seq < p.segment) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let mut records = 0u64;
        let mut before = 0u64;
        let at = recorded
            .filter(|p| p.segment == seq)
            .map_or(0, |p| p.offset);
        let (end, how) = spoolfmt::scan(&bytes, 0, |f| {
            records += 1;
            if ((f.offset + f.len) as u64) <= at {
                before += 1;
            }
        });
        let f = open_rw(&path, false)?;
        if how != ScanEnd::Clean {
            f.set_len(end as u64)?;
            files.cut.push((seq, (bytes.len() - end) as u64));
        }
        let fd: Fd = OwnedFd::from(f).into_raw_fd();
        files.segments.push((seq, fd, end as u64, records, before));
    }
    Ok(files)
}

/// See [`crate::engine::io::Sys::spool_create`].
pub fn create(dir: &Path, seq: u64) -> io::Result<Fd> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(dir.join(spoolfmt::segment_name(seq)))?;
    Ok(OwnedFd::from(f).into_raw_fd())
}

/// See [`crate::engine::io::Sys::spool_remove`].
pub fn remove(dir: &Path, seq: u64) {
    if let Err(e) = std::fs::remove_file(dir.join(spoolfmt::segment_name(seq))) {
        log::warn!("spool {}: removing segment {seq}: {e}", dir.display());
    }
}
