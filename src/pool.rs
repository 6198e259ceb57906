//! The buffer pool: one anonymous memory arena cut into equal buffers, registered with the
//! ring as fixed buffers, allocated once at start.
//!
//! Owns: every byte of relayed data and who may touch it. The hot path allocates nothing and
//! copies nothing in userspace: an input reads into a buffer, every output sends from that same
//! buffer, and the buffer returns to the pool when its last reference is released.
//!
//! A buffer is in one of three states, and the state says who owns its bytes:
//!
//! * `Free`: in the free list, nobody reads or writes it.
//! * `Kernel`: lent to the kernel for a read; the kernel may write into it until the read's
//!   completion arrives. Userspace must not read it ([`BufferPool::bytes`] refuses).
//! * `Shared(n)`: holds data, immutable, referenced by `n` holders (output queues, writes in
//!   flight). The kernel may read it (sends), nobody writes it.
//!
//! The arena is never moved or unmapped while the ring lives ([`crate::ring::Ring`] owns the
//! pool and outlives every submission), which is what makes handing its addresses to the
//! kernel sound.

use memmap2::MmapMut;
use std::io;

/// Index of a buffer in the pool (also its fixed-buffer index in the ring).
pub type BufId = u16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Kernel,
    Shared(u32),
}

pub struct BufferPool {
    map: MmapMut,
    size: u32,
    state: Vec<State>,
    free: Vec<BufId>,
}

impl BufferPool {
    /// Maps `count` buffers of `size` bytes. `count` is at most 65535.
    pub fn new(size: u32, count: u32) -> io::Result<BufferPool> {
        assert!(count >= 1 && count <= u32::from(u16::MAX));
        let total = size as usize * count as usize;
        let map = MmapMut::map_anon(total)?;
        Ok(BufferPool {
            map,
            size,
            state: vec![State::Free; count as usize],
            free: (0..count as u16).rev().collect(),
        })
    }

    pub fn buffer_size(&self) -> u32 {
        self.size
    }

    pub fn count(&self) -> usize {
        self.state.len()
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Takes a free buffer for a read: it is now the kernel's until [`BufferPool::filled`] or
    /// [`BufferPool::abandon`].
    pub fn take(&mut self) -> Option<BufId> {
        let id = self.free.pop()?;
        debug_assert_eq!(self.state[id as usize], State::Free);
        self.state[id as usize] = State::Kernel;
        Some(id)
    }

    /// The read into `id` completed: its bytes are data now, with one reference (the caller's).
    pub fn filled(&mut self, id: BufId) {
        assert_eq!(
            self.state[id as usize],
            State::Kernel,
            "buffer {id} was not lent"
        );
        self.state[id as usize] = State::Shared(1);
    }

    /// The read into `id` completed without data: straight back to the free list.
    pub fn abandon(&mut self, id: BufId) {
        assert_eq!(
            self.state[id as usize],
            State::Kernel,
            "buffer {id} was not lent"
        );
        self.state[id as usize] = State::Free;
        self.free.push(id);
    }

    /// Adds a reference to a data buffer.
    pub fn retain(&mut self, id: BufId) {
        match &mut self.state[id as usize] {
            State::Shared(n) => *n += 1,
            s => panic!("retain of buffer {id} in state {s:?}"),
        }
    }

    /// Drops a reference; the last one frees the buffer.
    pub fn release(&mut self, id: BufId) {
        let s = &mut self.state[id as usize];
        match s {
            State::Shared(1) => {
                *s = State::Free;
                self.free.push(id);
            }
            State::Shared(n) => *n -= 1,
            s => panic!("release of buffer {id} in state {s:?}"),
        }
    }

    /// Reads data bytes of a buffer that holds data.
    pub fn bytes(&self, id: BufId, off: u32, len: u32) -> &[u8] {
        assert!(
            matches!(self.state[id as usize], State::Shared(_)),
            "buffer {id} does not hold data"
        );
        assert!(off as u64 + len as u64 <= u64::from(self.size));
        let start = id as usize * self.size as usize + off as usize;
        &self.map[start..start + len as usize]
    }

    /// Writes into a buffer the caller holds the only reference to (the framing prefix in
    /// front of a datagram, before the buffer is shared with any output).
    pub fn write_prefix(&mut self, id: BufId, off: u32, data: &[u8]) {
        assert_eq!(
            self.state[id as usize],
            State::Shared(1),
            "buffer {id} must be held once to be written"
        );
        let start = id as usize * self.size as usize + off as usize;
        self.map[start..start + data.len()].copy_from_slice(data);
    }

    /// Address of byte `off` of buffer `id`, for the ring driver only.
    pub(crate) fn addr(&mut self, id: BufId, off: u32) -> *mut u8 {
        assert!(off <= self.size);
        let start = id as usize * self.size as usize + off as usize;
        // In bounds: id < count and off <= size.
        self.map[start..].as_mut_ptr()
    }

    /// One iovec per buffer, for registration as fixed buffers.
    pub(crate) fn iovecs(&mut self) -> Vec<libc::iovec> {
        let size = self.size as usize;
        (0..self.state.len())
            .map(|i| libc::iovec {
                iov_base: self.map[i * size..].as_mut_ptr().cast(),
                iov_len: size,
            })
            .collect()
    }

    /// Buffers not free (held by outputs or lent to the kernel).
    pub fn in_use(&self) -> usize {
        self.state.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle() {
        let mut p = BufferPool::new(4096, 3).unwrap();
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        let c = p.take().unwrap();
        assert!(p.take().is_none());
        p.filled(a);
        p.write_prefix(a, 0, &[1, 2, 3, 4]);
        assert_eq!(p.bytes(a, 0, 4), &[1, 2, 3, 4]);
        p.retain(a);
        p.release(a);
        assert_eq!(p.free_count(), 0);
        p.release(a);
        assert_eq!(p.free_count(), 1);
        p.abandon(b);
        p.filled(c);
        p.release(c);
        assert_eq!(p.free_count(), 3);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    #[should_panic(expected = "does not hold data")]
    fn kernel_owned_bytes_are_not_readable() {
        let mut p = BufferPool::new(4096, 1).unwrap();
        let a = p.take().unwrap();
        let _ = p.bytes(a, 0, 1);
    }

    #[test]
    #[should_panic(expected = "release of buffer")]
    fn double_release_is_caught() {
        let mut p = BufferPool::new(4096, 1).unwrap();
        let a = p.take().unwrap();
        p.filled(a);
        p.release(a);
        p.release(a);
    }
}
