//! The reader side: attach to a region read-only, validate it, and read frames with exact loss
//! reporting; read the daemon stats file.
//!
//! Owns: [`Reader`] (the Rust reader API, also used by `ringrelay tail` and the tests) and
//! [`StatsReader`]. Must never: write a byte of a region (the mapping is `PROT_READ` on an
//! `O_RDONLY` descriptor, so the kernel enforces it), block the writer, return a frame that may
//! have been overwritten while it was copied, or read outside the mapping whatever the header
//! says.
//!
//! # Memory ordering (reader half; the writer half is in `writer.rs`)
//!
//! One read, with private position `pos`:
//! 1. `h ← head`; **acquire fence**; `i0 ← intent`. The fence pairs with the writer's release
//!    store of `head`: every frame below `h` is visible before we copy it.
//! 2. If `pos < i0 − capacity` we were lapped before starting: skip to the oldest safe frame plus
//!    a margin (`max_batch`), counting what was skipped as lost.
//! 3. Copy `n ≤ h − pos` frames (two pieces across the wrap at most).
//! 4. **Acquire fence**; `i1 ← intent`. Pairs with the writer's release fence after storing
//!    `intent`: if any copied byte came from a newer lap, `i1` covers that lap.
//! 5. Frames `j < i1 − capacity` may be torn: drop them and count them as lost.
//!
//! Control words are read with relaxed atomic loads of at most the width Rust documents as safe
//! on read-only memory (4 bytes everywhere, 8 bytes on 64-bit targets). On 32-bit targets a
//! 64-bit counter is read as high word, low word, high word (acquire fences between) and retried
//! until both high words agree; the counters only grow and each write replaces both halves at
//! once, so agreeing high words bracket a low word of the same value.
//!
//! Frame bytes are copied with a plain `memcpy` from memory another process writes: no Rust
//! reference ever points into the mapping (memmap2's `MmapRaw` hands out raw pointers only), and
//! the copied bytes are used only after step 5 proved them intact.
//!
//! # A file shrunk under the mapping
//!
//! The writer never shrinks a published file (it replaces it by `rename`), but a person or a
//! script can (`truncate`, `: > file`, a copy over it). Touching a mapped page that now lies past
//! the end of the file raises SIGBUS, which would kill the reading process. So every public
//! method that touches the mapping first compares the file's size (`fstat` on the descriptor we
//! mapped: one syscall, no path lookup) with the mapped length, and a shorter file is
//! [`ShmError::Truncated`] (or "nothing", for [`Reader::status`] and [`Reader::anchors`]) without
//! a single load from the mapping.
//!
//! What remains is the window between that `fstat` and the loads of the same call (microseconds):
//! a truncation that lands exactly there still raises SIGBUS. Closing it inside a library would
//! take a process-wide SIGBUS handler that jumps out of the faulting copy (`sigsetjmp`, which Rust
//! cannot express soundly) or patches the mapping from the handler, and a library must not take
//! over a signal for its whole process. A program that only reads regions can take it:
//! [`exit_on_sigbus`] turns that SIGBUS into a message and exit status 1 (`ringrelay tail` does).

#![allow(unsafe_code)]

use super::layout::{self, Anchor, LayoutError, RegionInfo, StatsInfo, Status};
use memmap2::{MmapOptions, MmapRaw};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::OnceLock;

/// Why a region cannot be read.
#[derive(Debug)]
pub enum ShmError {
    /// No file at this path (the daemon is not publishing it, or not yet).
    Missing(PathBuf),
    /// Opening or mapping failed.
    Io(PathBuf, io::Error),
    /// The file is not a valid region.
    Layout(PathBuf, LayoutError),
    /// The file is now shorter than the mapping: someone truncated or overwrote it in place.
    Truncated {
        path: PathBuf,
        /// Its size now.
        size: u64,
        /// The bytes we mapped (the layout's size when we opened it).
        needs: u64,
    },
}

impl fmt::Display for ShmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShmError::Missing(p) => write!(
                f,
                "{}: no such region (is the channel configured with shm = on and the daemon running?)",
                p.display()
            ),
            ShmError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            ShmError::Layout(p, e) => write!(f, "{}: {e}", p.display()),
            ShmError::Truncated { path, size, needs } => write!(
                f,
                "region {} was truncated ({size} bytes, needs {needs}): the relay restarted or \
                 the file was replaced",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ShmError {}

/// A read-only mapping with bounds-checked loads.
struct RoMap {
    map: MmapRaw,
    len: usize,
    file: File,
    dev: u64,
    ino: u64,
}

impl RoMap {
    fn open(path: &Path) -> Result<RoMap, ShmError> {
        let file = File::open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ShmError::Missing(path.into())
            } else {
                ShmError::Io(path.into(), e)
            }
        })?;
        let md = file.metadata().map_err(|e| ShmError::Io(path.into(), e))?;
        if !md.is_file() {
            return Err(ShmError::Layout(path.into(), LayoutError::NotARegion));
        }
        let len = md.len();
        if len < 0x400 {
            return Err(ShmError::Layout(path.into(), LayoutError::TooShort(len)));
        }
        let map = MmapOptions::new()
            .len(len as usize)
            .map_raw_read_only(&file)
            .map_err(|e| ShmError::Io(path.into(), e))?;
        Ok(RoMap {
            map,
            len: len as usize,
            file,
            dev: md.dev(),
            ino: md.ino(),
        })
    }

    /// The file's size now, if it is smaller than the mapping (see the module docs).
    fn shrunk(&self) -> Option<u64> {
        // An fstat that fails on a descriptor we hold cannot tell us the size: treat it as gone.
        let size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        (size < self.len as u64).then_some(size)
    }

    /// `Ok` when every mapped byte is still backed by the file.
    fn check_size(&self, path: &Path) -> Result<(), ShmError> {
        match self.shrunk() {
            None => Ok(()),
            Some(size) => Err(ShmError::Truncated {
                path: path.into(),
                size,
                needs: self.len as u64,
            }),
        }
    }

    fn ptr(&self, off: usize, size: usize, align: usize) -> *const u8 {
        assert!(
            off.checked_add(size).is_some_and(|e| e <= self.len) && off % align == 0,
            "shm read out of bounds or misaligned: {off}+{size} of {}",
            self.len
        );
        // SAFETY: in bounds of the `len`-byte mapping (checked above).
        unsafe { self.map.as_ptr().add(off) }
    }

    /// Relaxed 4-byte atomic load.
    fn load_u32(&self, off: usize) -> u32 {
        let p = self.ptr(off, 4, 4) as *mut u32;
        // SAFETY: in bounds and 4-aligned. Rust documents relaxed atomic loads of up to 4 bytes
        // (8 on 64-bit targets) as permitted on read-only memory; we never store through it.
        unsafe { AtomicU32::from_ptr(p) }.load(Ordering::Relaxed)
    }

    /// A monotonic 64-bit counter, single-copy atomic on every target.
    #[cfg(target_pointer_width = "64")]
    fn load_counter(&self, off: usize) -> u64 {
        let p = self.ptr(off, 8, 8) as *mut u64;
        // SAFETY: in bounds and 8-aligned; relaxed 8-byte atomic loads on read-only memory are
        // documented as permitted on 64-bit targets; we never store through it.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(p) }.load(Ordering::Relaxed)
    }

    /// A monotonic 64-bit counter on a 32-bit target: hi, lo, hi (see the module docs).
    #[cfg(not(target_pointer_width = "64"))]
    fn load_counter(&self, off: usize) -> u64 {
        loop {
            let hi = self.load_u32(off + 4);
            fence(Ordering::Acquire);
            let lo = self.load_u32(off);
            fence(Ordering::Acquire);
            if self.load_u32(off + 4) == hi {
                return (hi as u64) << 32 | lo as u64;
            }
        }
    }

    /// A u64 field inside a seqlock: two 4-byte loads (the seqlock gives consistency).
    fn load_u64_halves(&self, off: usize) -> u64 {
        let lo = self.load_u32(off) as u64;
        let hi = self.load_u32(off + 4) as u64;
        hi << 32 | lo
    }

    fn copy_out(&self, off: usize, dst: &mut [u8]) {
        let p = self.ptr(off, dst.len(), 1);
        // SAFETY: source range in bounds of the mapping; the destination is our own buffer, so
        // the ranges cannot overlap. The bytes may be changing under us (another process
        // writes them); they are used only after the protocol validated them.
        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) }
    }

    /// Reads a seqlocked block: returns `None` after `tries` inconsistent attempts (a writer
    /// that died mid-update leaves the sequence odd forever).
    fn seqlock_read<T>(&self, seq_off: usize, tries: u32, body: impl Fn(&RoMap) -> T) -> Option<T> {
        for _ in 0..tries {
            let s1 = self.load_u32(seq_off);
            fence(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let v = body(self);
            fence(Ordering::Acquire);
            if self.load_u32(seq_off) == s1 {
                return Some(v);
            }
        }
        None
    }

    fn identity(&self) -> [u8; layout::IDENTITY_BYTES] {
        let mut b = [0u8; layout::IDENTITY_BYTES];
        self.copy_out(0, &mut b);
        b
    }

    /// True when the file we mapped is no longer the one at `path` (renamed over, deleted).
    fn replaced(&self, path: &Path) -> bool {
        let linked = self.file.metadata().map(|m| m.nlink() > 0).unwrap_or(false);
        match std::fs::metadata(path) {
            Ok(m) => !linked || m.dev() != self.dev || m.ino() != self.ino,
            Err(_) => true,
        }
    }
}

/// What one [`Reader::read`] returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    /// Absolute index of the first frame delivered.
    pub start: u64,
    /// Frames delivered (`frames × frame_bytes` bytes in the caller's buffer).
    pub frames: usize,
    /// Frames lost immediately before `start` (lapped: overwritten before they were read).
    pub lost: u64,
}

/// What the writer of a region is doing, as far as a reader can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterState {
    Running,
    Stopped,
    /// State says running but the heartbeat is older than 10 intervals (writer died).
    Stale,
    /// The file at the path was replaced (restart): call [`Reader::reattach`].
    Replaced,
    /// The file we mapped was truncated in place: the region cannot be read any more.
    Truncated,
    Init,
}

/// A read-only view of one region, with its own position.
pub struct Reader {
    path: PathBuf,
    map: RoMap,
    info: RegionInfo,
    pos: u64,
    lap_check: bool,
    lost_total: u64,
}

impl Reader {
    /// Opens and validates a region; the position starts at the oldest frame held.
    pub fn open(path: impl AsRef<Path>) -> Result<Reader, ShmError> {
        let path = path.as_ref().to_path_buf();
        let map = RoMap::open(&path)?;
        let info = layout::validate_region(&map.identity(), map.len as u64)
            .map_err(|e| ShmError::Layout(path.clone(), e))?;
        let mut r = Reader {
            path,
            map,
            info,
            pos: 0,
            lap_check: true,
            lost_total: 0,
        };
        r.seek_oldest()?;
        Ok(r)
    }

    pub fn info(&self) -> &RegionInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Ok` while the file still backs the whole mapping (one `fstat`).
    pub fn check_size(&self) -> Result<(), ShmError> {
        self.map.check_size(&self.path)
    }

    /// Frames fully published (exclusive end).
    pub fn head(&self) -> Result<u64, ShmError> {
        self.check_size()?;
        Ok(self.load_head())
    }

    /// Frames the writer may be writing (exclusive end).
    pub fn intent(&self) -> Result<u64, ShmError> {
        self.check_size()?;
        Ok(self.load_intent())
    }

    /// `head` without the size check: only after [`check_size`](Self::check_size) in this call.
    fn load_head(&self) -> u64 {
        self.map.load_counter(layout::OFF_HEAD)
    }

    /// `intent` without the size check, as [`load_head`](Self::load_head).
    fn load_intent(&self) -> u64 {
        self.map.load_counter(layout::OFF_INTENT)
    }

    /// The next frame index [`read`](Self::read) will try to deliver.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Frames lost to laps since open.
    pub fn lost_total(&self) -> u64 {
        self.lost_total
    }

    pub fn seek(&mut self, frame: u64) {
        self.pos = frame;
    }

    /// Moves to the oldest frame that is safe to read now.
    pub fn seek_oldest(&mut self) -> Result<(), ShmError> {
        self.check_size()?;
        let h = self.load_head();
        fence(Ordering::Acquire);
        let i = self.load_intent();
        self.pos = i.saturating_sub(self.info.capacity).min(h);
        Ok(())
    }

    /// Moves to `n` frames before the head (or the oldest held, if fewer).
    pub fn seek_last(&mut self, n: u64) -> Result<(), ShmError> {
        self.seek_oldest()?;
        let h = self.load_head();
        self.pos = self.pos.max(h.saturating_sub(n));
        Ok(())
    }

    /// Moves to the head: only frames published from now on.
    pub fn seek_live(&mut self) -> Result<(), ShmError> {
        self.pos = self.head()?;
        Ok(())
    }

    /// Negative-control hook for the lapping test: with `false`, steps 4–5 of the protocol are
    /// skipped, so frames overwritten during the copy are delivered. Never use otherwise.
    #[doc(hidden)]
    pub fn set_lap_check(&mut self, on: bool) {
        self.lap_check = on;
    }

    /// Reads up to `max_frames` frames from the current position into `dst` (cleared first).
    /// Frames that were overwritten before or during the copy are reported in `lost`, never
    /// delivered. Returns `frames == 0` when nothing new is published, and
    /// [`ShmError::Truncated`] (delivering nothing) once the file was cut short.
    pub fn read(&mut self, dst: &mut Vec<u8>, max_frames: usize) -> Result<Chunk, ShmError> {
        dst.clear();
        self.check_size()?;
        let cap = self.info.capacity;
        let fb = self.info.frame_bytes as usize;
        let h = self.load_head();
        fence(Ordering::Acquire);
        let i0 = self.load_intent();
        let start0 = self.pos;
        if h < self.pos {
            // The index space went backwards: a replaced file (see `reattach`). Deliver nothing.
            return Ok(Chunk {
                start: self.pos,
                frames: 0,
                lost: 0,
            });
        }
        self.pos = layout::resync_position(self.pos, h, i0, cap, self.info.max_batch as u64);
        let mut lost = self.pos - start0;
        let n = (h - self.pos).min(max_frames as u64).min(cap);
        if n > 0 {
            dst.resize(n as usize * fb, 0);
            let slot = (self.pos % cap) as usize;
            let first = (cap as usize - slot).min(n as usize) * fb;
            let base = self.info.data_offset as usize;
            self.map.copy_out(base + slot * fb, &mut dst[..first]);
            if first < dst.len() {
                self.map.copy_out(base, &mut dst[first..]);
            }
        }
        let mut start = self.pos;
        let mut frames = n;
        if self.lap_check {
            fence(Ordering::Acquire);
            let i1 = self.load_intent();
            let bad = layout::overwritten_prefix(self.pos, n, i1, cap);
            if bad > 0 {
                dst.drain(..bad as usize * fb);
                lost += bad;
                start += bad;
                frames -= bad;
            }
        }
        self.pos += n;
        self.lost_total += lost;
        Ok(Chunk {
            start,
            frames: frames as usize,
            lost,
        })
    }

    /// Status block (heartbeat, counters), or `None` if it cannot be read consistently (or the
    /// file was truncated).
    pub fn status(&self) -> Option<Status> {
        self.check_size().ok()?;
        self.map
            .seqlock_read(layout::OFF_STATUS_SEQ, 1000, |m| Status {
                heartbeat_count: m.load_u64_halves(layout::OFF_HEARTBEAT_COUNT),
                heartbeat_real_ns: m.load_u64_halves(layout::OFF_HEARTBEAT_REAL_NS) as i64,
                heartbeat_mono_ns: m.load_u64_halves(layout::OFF_HEARTBEAT_MONO_NS) as i64,
                input_frames: m.load_u64_halves(layout::OFF_INPUT_FRAMES),
                output_frames: m.load_u64_halves(layout::OFF_OUTPUT_FRAMES),
                malformed_datagrams: m.load_u64_halves(layout::OFF_MALFORMED),
                last_input_real_ns: m.load_u64_halves(layout::OFF_LAST_INPUT_REAL_NS) as i64,
            })
    }

    /// The anchors currently readable, oldest first (none once the file was truncated).
    pub fn anchors(&self) -> Vec<Anchor> {
        if self.check_size().is_err() {
            return Vec::new();
        }
        let count = self.map.load_u32(layout::OFF_ANCHOR_COUNT);
        fence(Ordering::Acquire);
        let n = (count as usize).min(layout::ANCHOR_SLOTS);
        let mut out = Vec::with_capacity(n);
        for k in (0..n).rev() {
            let idx = count.wrapping_sub(1 + k as u32) as usize % layout::ANCHOR_SLOTS;
            let base = layout::OFF_ANCHORS + idx * layout::ANCHOR_BYTES;
            if let Some(a) = self
                .map
                .seqlock_read(base + layout::ANCHOR_SEQ, 100, |m| Anchor {
                    flags: m.load_u32(base + layout::ANCHOR_FLAGS),
                    frame: m.load_u64_halves(base + layout::ANCHOR_FRAME),
                    real_ns: m.load_u64_halves(base + layout::ANCHOR_REAL_NS) as i64,
                    rate_hz: f64::from_bits(m.load_u64_halves(base + layout::ANCHOR_RATE)),
                })
            {
                out.push(a);
            }
        }
        out
    }

    /// CLOCK_REALTIME nanoseconds of frame `j` (the instant its window stands for), if the
    /// writer has published an anchor.
    pub fn time_of(&self, j: u64) -> Option<i64> {
        layout::anchor_for(&self.anchors(), j)?.time_of(j)
    }

    /// Times for many frames with one anchor snapshot.
    pub fn times_of(&self, frames: impl Iterator<Item = u64>) -> Vec<Option<i64>> {
        let a = self.anchors();
        frames
            .map(|j| layout::anchor_for(&a, j).and_then(|x| x.time_of(j)))
            .collect()
    }

    pub fn writer_state(&self) -> WriterState {
        if self.map.replaced(&self.path) {
            return WriterState::Replaced;
        }
        if self.check_size().is_err() {
            return WriterState::Truncated;
        }
        match self.map.load_u32(layout::OFF_STATE) {
            layout::STATE_STOPPED => WriterState::Stopped,
            layout::STATE_INIT => WriterState::Init,
            _ => {
                let hb = self.status().map(|s| s.heartbeat_real_ns).unwrap_or(0);
                let age = super::writer::realtime_ns() - hb;
                let limit = 10 * self.info.heartbeat_ms.max(100) as i64 * 1_000_000;
                if hb != 0 && age > limit {
                    WriterState::Stale
                } else {
                    WriterState::Running
                }
            }
        }
    }

    /// If the file at the path was replaced (daemon restart), attaches to the new one. Returns
    /// `Ok(true)` when it did; the position then starts at the new file's oldest frame (a new
    /// generation is a new index space).
    pub fn reattach(&mut self) -> Result<bool, ShmError> {
        if !self.map.replaced(&self.path) {
            return Ok(false);
        }
        let r = Reader::open(&self.path)?;
        let check = self.lap_check;
        *self = r;
        self.lap_check = check;
        Ok(true)
    }
}

/// One row of the daemon stats file as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsRowRead {
    pub label: String,
    pub kind: String,
    pub state: String,
    pub values: [u64; layout::STATS_COLUMNS],
}

/// A consistent snapshot of the stats file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub columns: Vec<String>,
    pub rows: Vec<StatsRowRead>,
    pub updated_real_ns: i64,
    pub writer_pid: u32,
    pub stopped: bool,
}

/// Reader of `<shm_dir>/ringrelay.stats`.
pub struct StatsReader {
    path: PathBuf,
    map: RoMap,
    info: StatsInfo,
}

impl StatsReader {
    pub fn open(path: impl AsRef<Path>) -> Result<StatsReader, ShmError> {
        let path = path.as_ref().to_path_buf();
        let map = RoMap::open(&path)?;
        let info = layout::validate_stats(&map.identity(), map.len as u64)
            .map_err(|e| ShmError::Layout(path.clone(), e))?;
        Ok(StatsReader { path, map, info })
    }

    /// Reads all rows under the seqlock (re-opening first if the file was replaced).
    pub fn snapshot(&mut self) -> Result<StatsSnapshot, ShmError> {
        if self.map.replaced(&self.path) {
            *self = StatsReader::open(&self.path)?;
        }
        self.map.check_size(&self.path)?;
        let info = &self.info;
        let rows = self
            .map
            .seqlock_read(layout::OFF_STATS_SEQ, 10_000, |m| {
                let n = (m.load_u32(layout::OFF_ROW_COUNT)).min(info.row_capacity) as usize;
                let mut buf = vec![0u8; n * layout::ROW_BYTES];
                m.copy_out(info.rows_offset as usize, &mut buf);
                let t = m.load_u64_halves(layout::OFF_STATS_UPDATED_NS) as i64;
                (buf, t)
            })
            .ok_or_else(|| {
                ShmError::Io(
                    self.path.clone(),
                    io::Error::other("stats are being rewritten continuously (writer stuck?)"),
                )
            })?;
        let (buf, t) = rows;
        let rows = buf
            .chunks_exact(layout::ROW_BYTES)
            .map(|r| {
                let mut values = [0u64; layout::STATS_COLUMNS];
                for (i, v) in values.iter_mut().enumerate() {
                    *v = layout::get_u64(r, layout::ROW_VALUES_OFFSET + 8 * i);
                }
                StatsRowRead {
                    label: layout::get_str(r, 0, layout::ROW_LABEL_BYTES),
                    kind: layout::get_str(r, layout::ROW_LABEL_BYTES, layout::ROW_KIND_BYTES),
                    state: layout::get_str(
                        r,
                        layout::ROW_LABEL_BYTES + layout::ROW_KIND_BYTES,
                        layout::ROW_STATE_BYTES,
                    ),
                    values,
                }
            })
            .collect();
        Ok(StatsSnapshot {
            columns: self.info.columns.clone(),
            rows,
            updated_real_ns: t,
            writer_pid: self.info.writer_pid,
            stopped: self.map.load_u32(layout::OFF_STATE) == layout::STATE_STOPPED,
        })
    }
}

/// The note [`exit_on_sigbus`] writes, set once before the handler is installed.
static SIGBUS_NOTE: OnceLock<Box<[u8]>> = OnceLock::new();

/// For a program that only reads regions (such as `ringrelay tail`): turns a SIGBUS, which in
/// such a program can only come from a mapped file cut short between the size check and the
/// load (see the module docs), into `note` (one line on stderr) and exit status 1. Only the
/// first note given is kept. Not for a library's callers in general: it takes SIGBUS over for
/// the whole process.
pub fn exit_on_sigbus(note: &str) -> io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

    extern "C" fn on_sigbus(_: libc::c_int) {
        // Only async-signal-safe calls: `OnceLock::get` is one atomic load of a value that was
        // complete before the handler was installed; `write` and `_exit` are plain syscalls.
        if let Some(note) = SIGBUS_NOTE.get() {
            // SAFETY: writes `note.len()` bytes from a live, immutable static buffer to fd 2.
            unsafe { libc::write(2, note.as_ptr().cast(), note.len()) };
        }
        // SAFETY: `_exit` ends the process at once, without running anything in user space.
        unsafe { libc::_exit(1) }
    }

    let mut line = format!("{}\n", note.trim_end()).into_bytes();
    line.shrink_to_fit();
    let _ = SIGBUS_NOTE.set(line.into_boxed_slice());
    let action = SigAction::new(
        SigHandler::Handler(on_sigbus),
        SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    // SAFETY: the handler only makes async-signal-safe calls (see above) and never returns, so
    // the faulting load is not retried.
    unsafe { sigaction(Signal::SIGBUS, &action) }
        .map(drop)
        .map_err(io::Error::from)
}
