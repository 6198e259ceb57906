//! The writer side of the shared-memory files: creating a file atomically and publishing into
//! its read-write mapping.
//!
//! Owns: file creation (temporary name, `posix_fallocate`, mode and group, identity block with
//! the magic written last, `rename` over the public name), the single-writer lock, the
//! publication protocol (intent, release fence, data, head), the seqlocked status, anchor and
//! stats blocks, and the `state` word. This module and [`super::reader`] are the only places in
//! `shm` with `unsafe`: every access to the mapping goes through the few bounds-checked
//! helpers of [`RawRegion`].
//!
//! Must never: block, wait for a reader, truncate or shrink a published file, or make a syscall
//! per batch (publishing is two atomic stores, one fence and at most two copies).
//!
//! # Memory ordering (writer half; the reader half is in `reader.rs`)
//!
//! Per batch of `n` frames with current head `h`:
//! 1. `intent ← h + n` (relaxed 64-bit atomic store), then a **release fence**: every data store
//!    after the fence becomes visible no earlier than the new `intent` (ARM: `DMB ISH`; a
//!    release *store* alone would only order what comes *before* it).
//! 2. copy the frames into their slots (two `memcpy`s across the wrap at most);
//! 3. `head ← h + n` with a **release store**: the frames become visible no later than `head`.
//!
//! A reader that copied a slot and saw a byte of a newer lap will, after its acquire fence, also
//! see an `intent` covering that lap (fence-fence message passing), and drop the frame. 64-bit
//! counters are stored with single 64-bit atomic stores (on 32-bit ARM an `LDREXD/STREXD` loop),
//! so a 32-bit reader's hi/lo/hi read sees one written value. Seqlocked blocks: `seq` odd
//! (relaxed) → release fence → fields (relaxed atomics) → `seq` even (release store).

#![allow(unsafe_code)]

use super::layout::{self, Anchor, RegionInfo, Status};
use super::publisher::ShmOptions;
use crate::ops::fsperm::check_private_dir;
use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// CLOCK_REALTIME in nanoseconds.
pub fn realtime_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> i64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| std::time::Duration::from(t).as_nanos() as i64)
        .unwrap_or(0)
}

/// Creates `opts.dir` (and parents) if missing: owner rwx, group r-x when the file mode gives
/// the group read access. Refuses an existing directory that another user could write to or
/// owns ([`check_private_dir`]: someone else could replace our files).
pub fn ensure_dir(opts: &ShmOptions) -> io::Result<()> {
    let (dir, file_mode) = (opts.dir.as_path(), opts.mode);
    match fs::metadata(dir) {
        Ok(_) => check_private_dir(dir, "shm_dir", opts.run_as).map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            let mut m = 0o700;
            if file_mode & 0o040 != 0 {
                m |= 0o050;
            }
            if file_mode & 0o004 != 0 {
                m |= 0o005;
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(m))
        }
        Err(e) => Err(e),
    }
}

/// Reads the generation of an existing valid file of the given kind, if any.
fn old_generation(path: &Path, magic: [u8; 8]) -> Option<u64> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut b = [0u8; layout::IDENTITY_BYTES];
    f.read_exact(&mut b).ok()?;
    layout::validate_common(&b, len, magic).ok()?;
    Some(layout::get_u64(&b, layout::OFF_GENERATION))
}

/// The generation for a new file replacing `path`: the old one plus one, else 1.
pub fn next_generation(path: &Path, magic: [u8; 8]) -> u64 {
    old_generation(path, magic)
        .map(|g| g.wrapping_add(1).max(1))
        .unwrap_or(1)
}

/// Takes the single-writer lock `<dir>/.<name>.lock` (flock, dropped by the kernel when the
/// process dies), failing at once if another process holds it.
pub fn take_writer_lock(dir: &Path, name: &str) -> io::Result<Flock<File>> {
    let path = dir.join(format!(".{name}.lock"));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "another ringrelay process already publishes {} (lock {} held)",
                    dir.join(name).display(),
                    path.display()
                ),
            )
        } else {
            io::Error::from(e)
        }
    })
}

/// A read-write mapping of one of our files. All pointer arithmetic lives here.
pub struct RawRegion {
    map: MmapRaw,
    _file: File,
    len: usize,
    path: PathBuf,
}

impl RawRegion {
    /// Creates `<dir>/<name>` atomically: a temporary file filled with `identity` (the first
    /// [`layout::IDENTITY_BYTES`], magic last) and zeros, renamed over the public name.
    /// `init` runs on the mapping before the rename (state words, anchor slots, …).
    pub fn create(
        dir: &Path,
        name: &str,
        file_bytes: u64,
        mode: u32,
        group: Option<u32>,
        identity: &[u8; layout::IDENTITY_BYTES],
        init: impl FnOnce(&RawRegion),
    ) -> io::Result<RawRegion> {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode & 0o777)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        let result = (|| {
            // umask-proof mode, then the group.
            nix::sys::stat::fchmod(
                &file,
                nix::sys::stat::Mode::from_bits_truncate(mode & 0o777),
            )?;
            if let Some(g) = group {
                nix::unistd::fchown(&file, None, Some(nix::unistd::Gid::from_raw(g)))?;
            }
            // Allocate every page now: a full tmpfs fails here with ENOSPC instead of killing
            // us with SIGBUS on first touch later.
            nix::fcntl::posix_fallocate(&file, 0, file_bytes as libc::off_t).map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!(
                        "cannot allocate {} bytes for {} ({e}): is {} full?",
                        file_bytes,
                        path.display(),
                        dir.display()
                    ),
                )
            })?;
            let map = MmapOptions::new().len(file_bytes as usize).map_raw(&file)?;
            let region = RawRegion {
                map,
                _file: file.try_clone()?,
                len: file_bytes as usize,
                path: path.clone(),
            };
            region.write_bytes(8, &identity[8..]);
            init(&region);
            // Magic last, after a release fence (readers that ever see the magic see the rest).
            fence(Ordering::Release);
            region.write_bytes(0, &identity[..8]);
            fs::rename(&tmp, &path)?;
            Ok::<_, io::Error>(region)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn ptr(&self, off: usize, size: usize, align: usize) -> *mut u8 {
        assert!(
            off.checked_add(size).is_some_and(|e| e <= self.len) && off % align == 0,
            "shm access out of bounds or misaligned: {off}+{size} of {}",
            self.len
        );
        // SAFETY: `off + size <= len` was just checked and the mapping is `len` bytes long.
        unsafe { self.map.as_mut_ptr().add(off) }
    }

    fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        let p = self.ptr(off, 8, 8) as *mut u64;
        // SAFETY: `p` is in bounds, 8-aligned (mappings are page-aligned and the offset was
        // checked), valid for reads and writes for as long as `self` lives (the mapping is
        // read-write), and only ever accessed atomically by this process.
        unsafe { AtomicU64::from_ptr(p) }
    }

    fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        let p = self.ptr(off, 4, 4) as *mut u32;
        // SAFETY: as in `atomic_u64`, for a 4-byte aligned word.
        unsafe { AtomicU32::from_ptr(p) }
    }

    pub fn store_u64(&self, off: usize, v: u64, o: Ordering) {
        self.atomic_u64(off).store(v, o)
    }

    pub fn store_u32(&self, off: usize, v: u32, o: Ordering) {
        self.atomic_u32(off).store(v, o)
    }

    pub fn load_u32(&self, off: usize) -> u32 {
        self.atomic_u32(off).load(Ordering::Relaxed)
    }

    /// Plain copy into the mapping. Readers read these bytes only under the protocol (frames
    /// validated by `intent` afterwards, seqlocked rows by their sequence word).
    pub fn write_bytes(&self, off: usize, src: &[u8]) {
        let p = self.ptr(off, src.len(), 1);
        // SAFETY: the destination range is in bounds (checked by `ptr`) and cannot overlap
        // `src`, which is process-private memory, not the mapping.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) }
    }

    /// Seqlocked update: `seq` odd, release fence, `body`, `seq` even (release).
    pub fn seqlock_write(&self, seq_off: usize, body: impl FnOnce(&RawRegion)) {
        let s = self.load_u32(seq_off);
        let odd = s.wrapping_add(1) | 1;
        self.store_u32(seq_off, odd, Ordering::Relaxed);
        fence(Ordering::Release);
        body(self);
        self.store_u32(seq_off, odd.wrapping_add(1), Ordering::Release);
    }
}

/// The writer of one sample region (one published stream).
pub struct RegionWriter {
    raw: RawRegion,
    info: RegionInfo,
    head: u64,
    anchor_count: u32,
    last_anchor: Option<Anchor>,
    _lock: Flock<File>,
}

impl RegionWriter {
    /// Creates `<dir>/<file_name>` for frames shaped as `info` says (`file_bytes`,
    /// `data_offset`, `generation`, `writer_pid`, `created_real_ns` and `max_batch` are filled
    /// in here). Takes the single-writer lock first.
    pub fn create(
        opts: &ShmOptions,
        file_name: &str,
        mut info: RegionInfo,
    ) -> io::Result<RegionWriter> {
        let (dir, mode, group) = (opts.dir.as_path(), opts.mode, opts.group);
        if info.capacity < 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("shm_frames {} too small (at least 8)", info.capacity),
            ));
        }
        ensure_dir(opts)?;
        let lock = take_writer_lock(dir, file_name)?;
        let path = dir.join(file_name);
        info.data_offset = layout::DATA_OFFSET;
        let data_bytes = info
            .capacity
            .checked_mul(info.frame_bytes as u64)
            .filter(|&b| b <= (isize::MAX as u64) / 2)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "shm region too large"))?;
        info.file_bytes = info.data_offset + data_bytes;
        info.max_batch = (info.capacity / 8).min(u32::MAX as u64) as u32;
        info.generation = next_generation(&path, layout::MAGIC_REGION);
        info.writer_pid = std::process::id();
        info.created_real_ns = realtime_ns();
        info.heartbeat_ms = 100;
        let identity = layout::encode_region(&info);
        let raw = RawRegion::create(
            dir,
            file_name,
            info.file_bytes,
            mode,
            group,
            &identity,
            |r| {
                r.store_u32(layout::OFF_STATE, layout::STATE_INIT, Ordering::Relaxed);
                r.store_u32(
                    layout::OFF_ANCHOR_SLOTS,
                    layout::ANCHOR_SLOTS as u32,
                    Ordering::Relaxed,
                );
            },
        )?;
        raw.store_u32(layout::OFF_STATE, layout::STATE_RUNNING, Ordering::Release);
        Ok(RegionWriter {
            raw,
            info,
            head: 0,
            anchor_count: 0,
            last_anchor: None,
            _lock: lock,
        })
    }

    pub fn info(&self) -> &RegionInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        self.raw.path()
    }

    /// Frames published so far (the next frame's index).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Test hook: start the index space at `index` (to cross 2³² and similar boundaries).
    /// Only before the first publish.
    #[doc(hidden)]
    pub fn set_initial_index(&mut self, index: u64) {
        assert_eq!(self.head, 0, "set_initial_index after publishing");
        self.head = index;
        self.raw
            .store_u64(layout::OFF_INTENT, index, Ordering::Relaxed);
        self.raw
            .store_u64(layout::OFF_HEAD, index, Ordering::Release);
    }

    /// Publishes whole frames (`frames.len()` a multiple of `frame_bytes`), in batches of at
    /// most `max_batch` frames.
    pub fn publish(&mut self, frames: &[u8]) {
        let fb = self.info.frame_bytes as usize;
        debug_assert_eq!(frames.len() % fb, 0);
        for batch in frames.chunks(self.info.max_batch as usize * fb) {
            self.publish_batch(batch);
        }
    }

    fn publish_batch(&mut self, batch: &[u8]) {
        let fb = self.info.frame_bytes as usize;
        let n = (batch.len() / fb) as u64;
        if n == 0 {
            return;
        }
        let h = self.head;
        let cap = self.info.capacity;
        // 1. announce the frames we may overwrite, and order that before the data stores.
        self.raw
            .store_u64(layout::OFF_INTENT, h + n, Ordering::Relaxed);
        fence(Ordering::Release);
        // 2. data, in at most two pieces.
        let slot = (h % cap) as usize;
        let first = ((cap as usize - slot).min(n as usize)) * fb;
        let base = self.info.data_offset as usize;
        self.raw.write_bytes(base + slot * fb, &batch[..first]);
        if first < batch.len() {
            self.raw.write_bytes(base, &batch[first..]);
        }
        // 3. publish.
        self.head = h + n;
        self.raw
            .store_u64(layout::OFF_HEAD, self.head, Ordering::Release);
    }

    /// Updates the status block (heartbeat and counters) under its seqlock.
    pub fn write_status(&mut self, s: &Status) {
        self.raw.seqlock_write(layout::OFF_STATUS_SEQ, |r| {
            let o = Ordering::Relaxed;
            r.store_u64(layout::OFF_HEARTBEAT_COUNT, s.heartbeat_count, o);
            r.store_u64(layout::OFF_HEARTBEAT_REAL_NS, s.heartbeat_real_ns as u64, o);
            r.store_u64(layout::OFF_HEARTBEAT_MONO_NS, s.heartbeat_mono_ns as u64, o);
            r.store_u64(layout::OFF_INPUT_FRAMES, s.input_frames, o);
            r.store_u64(layout::OFF_OUTPUT_FRAMES, s.output_frames, o);
            r.store_u64(layout::OFF_MALFORMED, s.malformed_datagrams, o);
            r.store_u64(
                layout::OFF_LAST_INPUT_REAL_NS,
                s.last_input_real_ns as u64,
                o,
            );
        });
    }

    /// Appends an anchor: its slot under the slot's seqlock, then `anchor_count` (release).
    pub fn add_anchor(&mut self, a: &Anchor) {
        let slot = self.anchor_count as usize % layout::ANCHOR_SLOTS;
        let base = layout::OFF_ANCHORS + slot * layout::ANCHOR_BYTES;
        self.raw.seqlock_write(base + layout::ANCHOR_SEQ, |r| {
            let o = Ordering::Relaxed;
            r.store_u32(base + layout::ANCHOR_FLAGS, a.flags, o);
            r.store_u64(base + layout::ANCHOR_FRAME, a.frame, o);
            r.store_u64(base + layout::ANCHOR_REAL_NS, a.real_ns as u64, o);
            r.store_u64(base + layout::ANCHOR_RATE, a.rate_hz.to_bits(), o);
        });
        self.anchor_count = self.anchor_count.wrapping_add(1);
        self.raw.store_u32(
            layout::OFF_ANCHOR_COUNT,
            self.anchor_count,
            Ordering::Release,
        );
        self.last_anchor = Some(*a);
    }

    pub fn last_anchor(&self) -> Option<&Anchor> {
        self.last_anchor.as_ref()
    }

    pub fn set_state(&self, state: u32) {
        self.raw
            .store_u32(layout::OFF_STATE, state, Ordering::Release);
    }
}

impl Drop for RegionWriter {
    /// A writer that goes away says so: `state = STOPPED`. The file stays for readers to drain.
    fn drop(&mut self) {
        self.set_state(layout::STATE_STOPPED);
    }
}
