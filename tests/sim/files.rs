//! The simulated file system under the file outputs: each output's path, whether its
//! directory exists, and what became of each open file's name (deleted, replaced).
//!
//! Owns: the answers to `open_append`, `rotate` and `file_state` (the kernel's `Sys` calls
//! delegate here). A file deleted or replaced under an open descriptor still takes writes,
//! as on Linux: what the engine writes into it still reaches the output's sink, so the
//! byte-order checks of `sim.rs` follow the stream across every file the output opened.

use ringrelay::engine::io::{Fd, FileState};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

/// One (channel, output).
pub type Out = (usize, usize);

#[derive(Debug, Default)]
pub struct Files {
    /// The (channel, output) each configured path belongs to.
    pub paths: BTreeMap<PathBuf, Out>,
    /// Outputs whose directory is removed: opening fails with ENOENT.
    pub dir_missing: BTreeSet<Out>,
    /// Open files whose name no longer leads to them.
    pub fate: BTreeMap<Fd, FileState>,
    /// The open descriptors of each output's files.
    pub open: BTreeMap<Fd, Out>,
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

impl Files {
    /// The output `path` belongs to, if the configuration names it.
    pub fn out_of(&self, path: &Path) -> io::Result<Out> {
        self.paths.get(path).copied().ok_or_else(|| {
            io::Error::other(format!("no file {} in the simulation", path.display()))
        })
    }

    /// Whether `out`'s path can be created now.
    pub fn may_open(&self, path: &Path) -> io::Result<Out> {
        let out = self.out_of(path)?;
        if self.dir_missing.contains(&out) {
            return Err(enoent());
        }
        Ok(out)
    }

    pub fn opened(&mut self, fd: Fd, out: Out) {
        self.open.insert(fd, out);
    }

    pub fn closed(&mut self, fd: Fd) {
        self.open.remove(&fd);
        self.fate.remove(&fd);
    }

    /// Every open file of `out` loses its name (the file deleted); with `dir`, its directory
    /// goes too (and stays gone until [`Files::restore`]).
    pub fn delete(&mut self, out: Out, dir: bool) {
        for (&fd, &o) in &self.open {
            if o == out {
                self.fate.insert(fd, FileState::Deleted);
            }
        }
        if dir {
            self.dir_missing.insert(out);
        }
    }

    /// Another file takes the name of `out`'s open files (moved away, a new one created).
    pub fn replace(&mut self, out: Out) {
        for (&fd, &o) in &self.open {
            if o == out {
                self.fate.entry(fd).or_insert(FileState::Replaced);
            }
        }
    }

    /// `out`'s directory is created again.
    pub fn restore(&mut self, out: Out) {
        self.dir_missing.remove(&out);
    }

    pub fn state(&self, fd: Fd) -> FileState {
        self.fate.get(&fd).copied().unwrap_or(FileState::Linked)
    }
}
