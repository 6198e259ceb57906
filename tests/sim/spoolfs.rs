//! The spool directories of the simulated file system, and where each byte in them came from.
//!
//! Owns: byte origins by range ([`Runs`] of [`Src`]): a spool's staging buffer holds record
//! headers the engine made between payloads copied from many input buffers, so one
//! provenance per buffer (`kernel::Prov`) cannot describe it. The kernel keeps [`Runs`] for
//! such buffers (`Kernel::pieces`), a segment file keeps them for its bytes, and a replay read
//! hands the file's back to the buffer it fills: the byte-by-byte checks of what a collector
//! receives follow each record through the disk and back. A header byte has no origin: sent to
//! a peer, it is a violation.
//!
//! Also owns the answers to `spool_open` (the segments scanned as the driver scans them, a
//! torn tail cut), `spool_create` and `spool_remove`, and the execution of `WriteAt`, `ReadAt`
//! and `Fsync` with the seed's faults (short writes and reads, EIO, ENOSPC; their delays and
//! the reordering of the write lane against the sync lane are the kernel's usual freedom).
//! Must never: hand the engine bytes no write put in a file.

use super::kernel::{datagram_byte, pattern, Kernel, Obj, Pos, Prov};
use ringrelay::engine::buffers::{BufId, VecMemory};
use ringrelay::engine::io::{Fd, Memory, Op, SpoolFiles};
use ringrelay::engine::spoolfmt::{self, ScanEnd};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Where a run of bytes came from: stream positions from `Stream(p)` on, or the bytes of
/// datagram `seq` (`len` payload bytes) from index `idx` on (0..4 its u32be prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    Stream(u64),
    Dgram { seq: u64, idx: u32, len: u32 },
}

impl Src {
    pub fn plus(self, k: u64) -> Src {
        match self {
            Src::Stream(p) => Src::Stream(p + k),
            Src::Dgram { seq, idx, len } => Src::Dgram {
                seq,
                idx: idx + k as u32,
                len,
            },
        }
    }

    /// The position this byte stands for, and the content it must have.
    pub fn pos_want(self) -> (Pos, u8) {
        match self {
            Src::Stream(p) => (p, pattern(p)),
            Src::Dgram { seq, idx, len } => {
                let want = if idx < 4 {
                    len.to_be_bytes()[idx as usize]
                } else {
                    datagram_byte(seq, u64::from(idx - 4))
                };
                ((seq << 20) | u64::from(idx), want)
            }
        }
    }

    /// The origin of byte `x` of a buffer whose provenance is `p` (None: before its data).
    pub fn of_prov(p: Prov, x: u32) -> Option<Src> {
        match p {
            Prov::Stream { at, pos } => Some(Src::Stream(pos + u64::from(x.wrapping_sub(at)))),
            Prov::Datagram {
                payload_off,
                seq,
                len,
            } => (x + 4 >= payload_off).then(|| Src::Dgram {
                seq,
                idx: x + 4 - payload_off,
                len,
            }),
        }
    }
}

/// Byte origins by range: run start -> (bytes, origin of its first byte). Gaps have none.
#[derive(Clone, Debug, Default)]
pub struct Runs(BTreeMap<u64, (u64, Src)>);

impl Runs {
    /// Forgets the origins of `a..b`.
    pub fn clear(&mut self, a: u64, b: u64) {
        let hit: Vec<u64> = self
            .0
            .range(..b)
            .rev()
            .take_while(|(&k, &(l, _))| k + l > a)
            .map(|(&k, _)| k)
            .collect();
        for k in hit {
            let (l, s) = self.0.remove(&k).expect("listed");
            if k < a {
                self.0.insert(k, (a - k, s));
            }
            if k + l > b {
                self.0.insert(b, (k + l - b, s.plus(b - k)));
            }
        }
    }

    /// `len` bytes from `at` came from `src` on (the caller cleared them).
    pub fn put(&mut self, at: u64, len: u64, src: Src) {
        if len > 0 {
            self.0.insert(at, (len, src));
        }
    }

    /// The runs within `a..a + n`, relative to `a`.
    pub fn get(&self, a: u64, n: u64) -> Vec<(u64, u64, Src)> {
        let mut v: Vec<(u64, u64, Src)> = self
            .0
            .range(..a + n)
            .rev()
            .take_while(|(&k, &(l, _))| k + l > a)
            .map(|(&k, &(l, s))| {
                let from = k.max(a);
                let to = (k + l).min(a + n);
                (from - a, to - from, s.plus(from - k))
            })
            .collect();
        v.reverse();
        v
    }

    pub fn find(&self, x: u64) -> Option<Src> {
        let (&k, &(l, s)) = self.0.range(..=x).next_back()?;
        (x < k + l).then(|| s.plus(x - k))
    }
}

/// A file of a spool directory (a segment or the position file).
#[derive(Debug, Default)]
pub struct Inode {
    pub data: Vec<u8>,
    pub origin: Runs,
    pub segment: bool,
}

#[derive(Debug)]
struct Dir {
    segs: BTreeMap<u64, usize>,
    position: usize,
}

/// Every spool directory of the run (they outlive the channels a reload replaces).
#[derive(Debug, Default)]
pub struct SpoolFs {
    pub inodes: Vec<Inode>,
    dirs: BTreeMap<PathBuf, Dir>,
    /// Disk operations executed (writes, reads, syncs) and faults injected.
    pub ops: u64,
    pub faults: u64,
}

impl SpoolFs {
    fn inode(&mut self, segment: bool) -> usize {
        self.inodes.push(Inode {
            segment,
            ..Inode::default()
        });
        self.inodes.len() - 1
    }
}

impl Kernel {
    /// The origins of `len` bytes of `buf` from `off` (relative to `off`).
    pub fn srcs_of(&self, buf: BufId, off: u32, len: u32) -> Vec<(u64, u64, Src)> {
        if let Some(r) = &self.pieces[usize::from(buf)] {
            return r.get(u64::from(off), u64::from(len));
        }
        let Some(p) = self.prov[usize::from(buf)] else {
            return Vec::new();
        };
        // A datagram's bytes start at its prefix; a stream's everywhere.
        let first = (off..off + len).find(|&x| Src::of_prov(p, x).is_some());
        match first {
            Some(x) => vec![(
                u64::from(x - off),
                u64::from(off + len - x),
                Src::of_prov(p, x).expect("found"),
            )],
            None => Vec::new(),
        }
    }

    /// The engine wrote `len` bytes of its own (a spool record's header, or part of one) into
    /// `dst` at `dst_off`: they have no origin.
    pub fn staged_made(&mut self, dst: BufId, dst_off: u32, len: u32) {
        let d = usize::from(dst);
        if dst_off == 0 || self.pieces[d].is_none() {
            self.pieces[d] = Some(Runs::default());
        }
        let at = u64::from(dst_off);
        self.pieces[d]
            .as_mut()
            .expect("set")
            .clear(at, at + u64::from(len));
    }

    /// The engine wrote `total` bytes into `dst` at `dst_off`: a header it made, then `len`
    /// bytes copied from `src` at `src_off` (a record staged for its spool).
    pub fn staged(&mut self, dst: BufId, dst_off: u32, total: u32, src: (BufId, u32, u32)) {
        let (sb, so, len) = src;
        let from = self.srcs_of(sb, so, len);
        let d = usize::from(dst);
        if dst_off == 0 || self.pieces[d].is_none() {
            self.pieces[d] = Some(Runs::default());
        }
        let r = self.pieces[d].as_mut().expect("set");
        let at = u64::from(dst_off);
        r.clear(at, at + u64::from(total));
        let body = at + u64::from(total - len);
        for (rel, n, s) in from {
            r.put(body + rel, n, s);
        }
    }

    /// A `WriteAt`, `WritevAt`, `ReadAt` or `Fsync` (pending op `i`) takes effect.
    pub(super) fn exec_spool(&mut self, i: usize, mem: &mut VecMemory) -> bool {
        let op = self.pending[i].op;
        let fd = match op {
            Op::WriteAt { fd, .. }
            | Op::WritevAt { fd, .. }
            | Op::ReadAt { fd, .. }
            | Op::Fsync { fd } => fd,
            _ => unreachable!("spool ops only"),
        };
        let Some(&Obj::Spool(ino)) = self.objs.get(&fd) else {
            self.violation(format!("{op:?} on fd {fd}: not a spool file"));
            self.fail(i, -libc::EBADF);
            return true;
        };
        self.pending[i].executed = true;
        self.spoolfs.ops += 1;
        let err = self.faults.error;
        match op {
            Op::WriteAt { offset, .. } | Op::WritevAt { offset, .. } => {
                if self.rng.chance(err / 2) || self.rng.chance(err / 4) {
                    self.spoolfs.faults += 1;
                    let e = if self.rng.chance(500) {
                        libc::ENOSPC
                    } else {
                        libc::EIO
                    };
                    self.queue(i, -e, 0, true);
                    return true;
                }
                // The chunks of a gathered write land one after the other from `offset`; a
                // short write stops part-way.
                let chunks = self.pending[i].chunks.clone();
                let total: u32 = chunks.iter().map(|c| c.len).sum();
                let mut left = if total > 1 && self.rng.chance(self.faults.short_io / 2) {
                    self.rng.range(1, total as usize - 1) as u32
                } else {
                    total
                };
                let written = left;
                let segment = self.spoolfs.inodes[ino].segment;
                let mut at = offset;
                for chunk in chunks {
                    if left == 0 {
                        break;
                    }
                    let n = chunk.len.min(left);
                    left -= n;
                    let bytes = mem.bytes(chunk.buf, chunk.off, n).to_vec();
                    let srcs = if segment {
                        match &self.pieces[usize::from(chunk.buf)] {
                            Some(r) => r.get(u64::from(chunk.off), u64::from(n)),
                            None => {
                                self.violation(format!(
                                    "spool write of buffer {} that holds no staged records",
                                    chunk.buf
                                ));
                                Vec::new()
                            }
                        }
                    } else {
                        Vec::new()
                    };
                    let f = &mut self.spoolfs.inodes[ino];
                    let end = at as usize + bytes.len();
                    if f.data.len() < end {
                        f.data.resize(end, 0);
                    }
                    f.data[at as usize..end].copy_from_slice(&bytes);
                    f.origin.clear(at, end as u64);
                    for (rel, k, s) in srcs {
                        f.origin.put(at + rel, k, s);
                    }
                    at = end as u64;
                }
                self.queue(i, written as i32, 0, true);
            }
            Op::ReadAt {
                buf, len, offset, ..
            } => {
                if self.rng.chance(err / 2) {
                    self.spoolfs.faults += 1;
                    self.queue(i, -libc::EIO, 0, true);
                    return true;
                }
                let f = &self.spoolfs.inodes[ino];
                let avail = f.data.len().saturating_sub(offset as usize) as u32;
                let mut n = len.min(avail);
                if n > 1 && self.rng.chance(self.faults.short_io / 2) {
                    n = self.rng.range(1, n as usize - 1) as u32;
                }
                let bytes = f.data[offset as usize..offset as usize + n as usize].to_vec();
                let mut r = Runs::default();
                for (rel, k, s) in f.origin.get(offset, u64::from(n)) {
                    r.put(rel, k, s);
                }
                mem.write(buf, 0, &bytes);
                self.prov[usize::from(buf)] = None;
                self.pieces[usize::from(buf)] = Some(r);
                self.queue(i, n as i32, 0, true);
            }
            _ => {
                if self.rng.chance(err / 4) {
                    self.spoolfs.faults += 1;
                    self.queue(i, -libc::EIO, 0, true);
                } else {
                    self.queue(i, 0, 0, true);
                }
            }
        }
        true
    }

    /// `Sys::spool_open`: the directory's segments as the driver finds them.
    pub(super) fn spool_open_sim(&mut self, dir: &Path) -> io::Result<SpoolFiles> {
        if !self.spoolfs.dirs.contains_key(dir) {
            let position = self.spoolfs.inode(false);
            self.spoolfs.dirs.insert(
                dir.to_path_buf(),
                Dir {
                    segs: BTreeMap::new(),
                    position,
                },
            );
        }
        let (segs, pos_ino) = {
            let d = &self.spoolfs.dirs[dir];
            (d.segs.clone(), d.position)
        };
        let position = self.spoolfs.inodes[pos_ino].data.clone();
        let recorded = spoolfmt::decode_position(&position);
        let mut files = SpoolFiles {
            position,
            position_fd: self.fd(Obj::Spool(pos_ino)),
            ..SpoolFiles::default()
        };
        for (seq, ino) in segs {
            if recorded.is_some_and(|p| seq < p.segment) {
                self.spool_remove_sim(dir, seq);
                continue;
            }
            let at = recorded
                .filter(|p| p.segment == seq)
                .map_or(0, |p| p.offset);
            let (mut records, mut before) = (0u64, 0u64);
            let f = &mut self.spoolfs.inodes[ino];
            let (end, how) = spoolfmt::scan(&f.data, 0, |r| {
                records += 1;
                if ((r.offset + r.len) as u64) <= at {
                    before += 1;
                }
            });
            if how != ScanEnd::Clean {
                let cut = f.data.len() - end;
                f.data.truncate(end);
                f.origin.clear(end as u64, u64::MAX);
                files.cut.push((seq, cut as u64));
            }
            let fd = self.fd(Obj::Spool(ino));
            files.segments.push((seq, fd, end as u64, records, before));
        }
        self.note(format!(
            "spool_open {} -> {} segments",
            dir.display(),
            files.segments.len()
        ));
        Ok(files)
    }

    pub(super) fn spool_create_sim(&mut self, dir: &Path, seq: u64) -> io::Result<Fd> {
        if self.rng.chance(self.faults.error / 4) {
            self.spoolfs.faults += 1;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let ino = self.spoolfs.inode(true);
        let Some(d) = self.spoolfs.dirs.get_mut(dir) else {
            self.violation(format!("spool_create in {}: not opened", dir.display()));
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        if d.segs.insert(seq, ino).is_some() {
            self.violation(format!(
                "spool segment {seq} of {} created twice",
                dir.display()
            ));
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let fd = self.fd(Obj::Spool(ino));
        self.note(format!("spool_create {} {seq} -> fd {fd}", dir.display()));
        Ok(fd)
    }

    pub(super) fn spool_remove_sim(&mut self, dir: &Path, seq: u64) {
        self.note(format!("spool_remove {} {seq}", dir.display()));
        let gone = self
            .spoolfs
            .dirs
            .get_mut(dir)
            .and_then(|d| d.segs.remove(&seq));
        if gone.is_none() {
            self.violation(format!(
                "spool segment {seq} of {} removed twice",
                dir.display()
            ));
        }
    }
}

/// The spool keys of collector `o` of channel `c`, for about one collector in three (from
/// its own generator: the rest of the seed's run stays as it was); none with `SIM_SPOOL=0` in
/// the environment.
pub fn pick(seed: u64, c: usize, o: usize) -> Option<String> {
    if std::env::var("SIM_SPOOL").is_ok_and(|v| v == "0") {
        return None;
    }
    let mut rng = super::rng::Rng::new(
        seed.wrapping_mul(0x5B00_1F5D)
            .wrapping_add((c * 10 + o) as u64 + 3),
    );
    if !rng.chance(350) {
        return None;
    }
    Some(format!(
        " spool=/tmp/ringrelay-sim-spool-c{c}-o{o} spool_segment=64KiB spool_max={} spool_sync={}{}",
        rng.pick(&["128KiB", "256KiB", "4MiB"]),
        rng.pick(&["10ms", "100ms", "1s"]),
        if rng.chance(300) {
            " spool_full=drop-newest"
        } else {
            ""
        }
    ))
}

/// An output's spool records lost (dropped for any reason) plus those still on disk.
pub fn lost_or_kept(o: &ringrelay::engine::channel::Output) -> u64 {
    o.spool
        .as_ref()
        .map_or(0, |s| s.stats.dropped + s.unread_records())
}

/// Whether an output's spool still holds records, or it has not gone live again.
pub fn holds(o: &ringrelay::engine::channel::Output) -> bool {
    o.spool.as_ref().is_some_and(|s| !s.is_empty()) || (o.spool.is_some() && !o.live)
}

/// What a spooling collector received over all its connections: each position once, in
/// order (a record the spool replays never comes after a newer one, nor twice).
pub fn check_order_across(got: &[Pos]) -> Result<(), String> {
    match got.windows(2).position(|w| w[1] <= w[0]) {
        Some(i) => Err(format!(
            "received position {} after {} (byte {} over its connections)",
            got[i + 1],
            got[i],
            i + 1
        )),
        None => Ok(()),
    }
}

/// An output's spool state, for the liveness report (`None` without a spool).
pub fn describe(o: &ringrelay::engine::channel::Output) -> Option<String> {
    let s = o.spool.as_ref()?;
    let segs: Vec<_> = s
        .segs
        .iter()
        .map(|g| {
            (
                g.seq,
                g.size,
                g.written,
                g.records,
                g.read_records,
                g.sealed,
            )
        })
        .collect();
    Some(format!(
        "spool live={} empty={} read={:?} reading={:?} staging={:?} disk={} writing={} syncing={:?} fault_until={:?} handed={} segs(seq,size,written,records,read,sealed)={segs:?}",
        o.live,
        s.is_empty(),
        s.read,
        s.reading,
        s.staging,
        s.disk.len(),
        s.writing.iter().flatten().count(),
        s.syncing,
        s.fault_until.is_some(),
        s.handed.len(),
    ))
}

/// Notes in the trace each change of a spooling output's mode (live or not, replay caught up
/// or not), with the replay position beside it.
pub fn note_modes(
    k: &mut super::kernel::Kernel,
    engine: &ringrelay::engine::Engine,
    last: &mut Vec<String>,
) {
    let mut now = Vec::new();
    for (c, ch) in engine.channels().iter().enumerate() {
        let Some(ch) = ch else { continue };
        for (o, out) in ch.outputs.iter().enumerate() {
            if let Some(sp) = out.spool.as_ref() {
                now.push(format!(
                    "c{c} output {o}: live={} empty={} read={}:{}",
                    out.live,
                    sp.is_empty(),
                    sp.read.segment,
                    sp.read.offset
                ));
            }
        }
    }
    for (i, s) in now.iter().enumerate() {
        // The mode alone: a replay that moves on is no change.
        let mode = |s: &str| s.split(" read=").next().unwrap_or_default().to_owned();
        if last.get(i).map(String::as_str).map(mode) != Some(mode(s)) {
            k.note(format!("spool mode {s}"));
        }
    }
    *last = now;
}
