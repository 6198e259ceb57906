//! The buffer arena: one anonymous mapping cut into the pool's buffers, registered with the
//! ring as fixed buffers, allocated once at start.
//!
//! Owns: the bytes. Who may touch which buffer is the engine's books
//! ([`crate::engine::buffers::BufferPool`]); the arena reads and writes only where the engine
//! asks ([`Memory`]), and hands the ring the addresses of buffers the engine lent to the
//! kernel ([`Addrs`]).
//!
//! The mapping is never moved or unmapped while the ring lives ([`crate::driver::ring::Ring`]
//! owns the arena and outlives every submission), which is what makes handing its addresses
//! to the kernel sound.

use crate::engine::buffers::{BufId, BufferPool};
use crate::engine::io::Memory;
use memmap2::MmapMut;
use std::io;

/// Turns a buffer index into an address in the arena. Copyable, so that the ring can build
/// submissions while the engine reads the arena.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    base: *mut u8,
    len: usize,
    /// Per class: first buffer, byte offset, buffer size.
    classes: [(BufId, usize, u32); 2],
}

impl Addrs {
    fn locate(&self, id: BufId) -> (usize, u32) {
        let (first, base, size) = if id >= self.classes[1].0 {
            self.classes[1]
        } else {
            self.classes[0]
        };
        (base + usize::from(id - first) * size as usize, size)
    }

    /// Size of buffer `id`.
    pub fn size_of(&self, id: BufId) -> u32 {
        self.locate(id).1
    }

    /// Address of byte `off` of buffer `id`. Only computed, never dereferenced here.
    pub fn addr(&self, id: BufId, off: u32) -> *mut u8 {
        let (start, size) = self.locate(id);
        assert!(off <= size && start + (off as usize) <= self.len);
        self.base.wrapping_add(start + off as usize)
    }
}

/// The mapped arena.
pub struct Arena {
    map: MmapMut,
    addrs: Addrs,
    count: u16,
}

impl Arena {
    /// Maps an arena laid out like `pool`.
    pub fn new(pool: &BufferPool) -> io::Result<Arena> {
        let mut map = MmapMut::map_anon(pool.arena_bytes().max(1))?;
        let addrs = Addrs {
            base: map.as_mut_ptr(),
            len: map.len(),
            classes: pool.classes(),
        };
        Ok(Arena {
            map,
            addrs,
            count: pool.count() as u16,
        })
    }

    /// A one-page arena of one buffer (what a ring that must leak its real arena keeps).
    pub fn empty() -> io::Result<Arena> {
        Arena::new(&BufferPool::new(4096, 1, 0, 0))
    }

    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    /// One iovec per buffer, for registration as fixed buffers.
    pub fn iovecs(&mut self) -> Vec<libc::iovec> {
        (0..self.count)
            .map(|id| libc::iovec {
                iov_base: self.addrs.addr(id, 0).cast(),
                iov_len: self.addrs.size_of(id) as usize,
            })
            .collect()
    }
}

impl Memory for Arena {
    fn bytes(&self, buf: BufId, off: u32, len: u32) -> &[u8] {
        let (start, size) = self.addrs.locate(buf);
        assert!(off as u64 + len as u64 <= u64::from(size));
        &self.map[start + off as usize..start + (off + len) as usize]
    }

    fn write(&mut self, buf: BufId, off: u32, data: &[u8]) {
        let (start, size) = self.addrs.locate(buf);
        assert!(off as usize + data.len() <= size as usize);
        let at = start + off as usize;
        self.map[at..at + data.len()].copy_from_slice(data);
    }

    fn copy(&mut self, from: BufId, off: u32, len: u32, to: BufId, to_off: u32) {
        let (src, src_size) = self.addrs.locate(from);
        let (dst, dst_size) = self.addrs.locate(to);
        assert!(off as u64 + len as u64 <= u64::from(src_size));
        assert!(to_off as u64 + len as u64 <= u64::from(dst_size));
        let at = src + off as usize;
        self.map
            .copy_within(at..at + len as usize, dst + to_off as usize);
    }
}
