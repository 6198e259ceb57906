//! The buffer pool's accounting: which buffer of the arena is free, lent to the kernel,
//! provided in a ring, shared by outputs or on its way home, and how many holders it has.
//! The bytes themselves live in the driver's arena ([`crate::driver::arena`]), reached
//! through [`super::io::Memory`]; this module never touches them.
//!
//! Owns: every byte of relayed data and who may touch it. The hot path allocates nothing and
//! copies nothing in userspace: an input reads into a buffer, every output sends from that same
//! buffer, and the buffer returns to the pool when its last reference is released.
//!
//! A buffer is in one of five states, and the state says who owns its bytes:
//!
//! * `Free`: in the free list, nobody reads or writes it.
//! * `Kernel`: lent to the kernel for one read; the kernel may write into it until the read's
//!   completion arrives. Userspace must not read it ([`BufferPool::bytes`] refuses).
//! * `Provided`: published in a provided-buffer ring ([`crate::driver::bufring`]): the kernel's, which
//!   may pick it for any datagram of that ring's input at any moment, until a completion names
//!   it. Userspace must not read or write it.
//! * `Shared(n)`: holds data, immutable, referenced by `n` holders (output queues, writes in
//!   flight). The kernel may read it (sends), nobody writes it.
//! * `Returning`: a buffer with a home ring whose last reference was released (or that came
//!   back in a completion without data): nobody's, waiting in the pool's returning list for the
//!   ring driver to publish it in its ring again (`BufferPool::take_returning`).
//!
//! A buffer taken for a provided-buffer ring keeps that ring as its *home* until the ring is
//! closed: its life is `Provided -> Shared(1..n) -> Returning -> Provided -> ...`, never
//! through the free list. When the ring closes ([`BufferPool::disown`]), its buffers that are
//! not held go to the free list, and the ones still held by outputs lose their home and go to
//! the free list with their last release.
//!
//! The pool has two size classes: `Large` buffers (`buffer_size`, for stream reads) and
//! `Small` slots (`datagram_size`, for datagram receives), so that a burst of small datagrams
//! does not pin a 64 KiB buffer per datagram. Both live in the one arena and are registered
//! together; a [`BufId`] names either.
//!
//! The books of provided-buffer rings are in [`super::rings`].

use super::io::Memory;

/// Index of a buffer in the pool (also its fixed-buffer index in the ring).
pub type BufId = u16;

/// Who owns a buffer's bytes (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Free,
    Kernel,
    Provided,
    Shared(u32),
    Returning,
}

/// `home` of a buffer that belongs to no provided-buffer ring.
const NO_HOME: u16 = u16::MAX;

/// The two buffer sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `buffer_size` buffers: stream reads.
    Large,
    /// `datagram_size` slots: datagram receives.
    Small,
}

#[derive(Debug)]
struct ClassInfo {
    /// Byte offset of the class in the arena.
    base: usize,
    size: u32,
    first: u16,
    count: u16,
    free: Vec<BufId>,
}

#[derive(Debug)]
pub struct BufferPool {
    classes: [ClassInfo; 2],
    state: Vec<State>,
    /// Buffer group of the provided-buffer ring each buffer belongs to, or [`NO_HOME`].
    home: Vec<u16>,
    /// Buffers in the `Returning` state, oldest first.
    returning: Vec<BufId>,
}

impl BufferPool {
    /// The pool `[global]` asks for: `buffer_count` x `buffer_size` and `datagram_count` x
    /// `datagram_size`.
    pub fn for_global(g: &crate::config::Global) -> BufferPool {
        BufferPool::new(
            g.buffer_size,
            g.buffer_count,
            g.datagram_size,
            g.datagram_count,
        )
    }

    /// Books `count` buffers of `size` bytes and `small_count` slots of `small_size` bytes.
    /// Together at most 65535.
    pub fn new(size: u32, count: u32, small_size: u32, small_count: u32) -> BufferPool {
        assert!(count >= 1 && count + small_count <= u32::from(u16::MAX));
        let large_bytes = size as usize * count as usize;
        let large = ClassInfo {
            base: 0,
            size,
            first: 0,
            count: count as u16,
            free: (0..count as u16).rev().collect(),
        };
        let small = ClassInfo {
            base: large_bytes,
            size: small_size.max(1),
            first: count as u16,
            count: small_count as u16,
            free: (count as u16..(count + small_count) as u16).rev().collect(),
        };
        BufferPool {
            classes: [large, small],
            state: vec![State::Free; (count + small_count) as usize],
            home: vec![NO_HOME; (count + small_count) as usize],
            returning: Vec::new(),
        }
    }

    fn class_of(&self, id: BufId) -> &ClassInfo {
        if id >= self.classes[1].first {
            &self.classes[1]
        } else {
            &self.classes[0]
        }
    }

    /// Size of the large buffers.
    pub fn buffer_size(&self) -> u32 {
        self.classes[0].size
    }

    /// Size of a class's buffers (0 if the class is empty).
    pub fn class_size(&self, c: Class) -> u32 {
        let ci = &self.classes[c as usize];
        if ci.count == 0 {
            0
        } else {
            ci.size
        }
    }

    /// Size of the buffer `id`.
    pub fn size_of(&self, id: BufId) -> u32 {
        self.class_of(id).size
    }

    pub fn count(&self) -> usize {
        self.state.len()
    }

    pub fn free_count(&self) -> usize {
        self.classes[0].free.len() + self.classes[1].free.len()
    }

    /// Free buffers of class `c`, and how many the class has.
    pub fn free_of(&self, c: Class) -> (usize, usize) {
        let ci = &self.classes[c as usize];
        (ci.free.len(), usize::from(ci.count))
    }

    /// Takes a free buffer of class `c` for a read: it is now the kernel's until
    /// [`BufferPool::filled`] or [`BufferPool::abandon`].
    pub fn take_class(&mut self, c: Class) -> Option<BufId> {
        let id = self.classes[c as usize].free.pop()?;
        debug_assert_eq!(self.state[id as usize], State::Free);
        self.state[id as usize] = State::Kernel;
        Some(id)
    }

    /// Takes a large buffer.
    pub fn take(&mut self) -> Option<BufId> {
        self.take_class(Class::Large)
    }

    fn free_id(&mut self, id: BufId) {
        let c = usize::from(id >= self.classes[1].first);
        self.classes[c].free.push(id);
    }

    fn start(&self, id: BufId) -> usize {
        let c = self.class_of(id);
        c.base + (id - c.first) as usize * c.size as usize
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
        self.free_id(id);
    }

    /// Adds a reference to a data buffer.
    pub fn retain(&mut self, id: BufId) {
        match &mut self.state[id as usize] {
            State::Shared(n) => *n += 1,
            s => panic!("retain of buffer {id} in state {s:?}"),
        }
    }

    /// Drops a reference; the last one frees the buffer, or sends it back towards its home
    /// ring.
    pub fn release(&mut self, id: BufId) {
        let s = &mut self.state[id as usize];
        match s {
            State::Shared(1) if self.home[id as usize] != NO_HOME => {
                *s = State::Returning;
                self.returning.push(id);
            }
            State::Shared(1) => {
                *s = State::Free;
                self.free_id(id);
            }
            State::Shared(n) => *n -= 1,
            s => panic!("release of buffer {id} in state {s:?}"),
        }
    }

    /// Takes a free buffer of class `c` for the provided-buffer ring of buffer group `group`:
    /// it is the kernel's once the ring driver publishes it, and keeps `group` as its home.
    pub fn take_provided(&mut self, c: Class, group: u16) -> Option<BufId> {
        assert_ne!(group, NO_HOME, "group {group} is reserved");
        let id = self.classes[c as usize].free.pop()?;
        debug_assert_eq!(self.state[id as usize], State::Free);
        self.state[id as usize] = State::Provided;
        self.home[id as usize] = group;
        Some(id)
    }

    /// A completion of ring `group` named buffer `id`: the kernel is done with it and it is
    /// the caller's, with one reference ([`BufferPool::release`] sends it home). Panics when
    /// `id` is not a buffer of that ring in the kernel's hands: a completion that names one
    /// would be a broken invariant, not bad input.
    pub fn received(&mut self, id: BufId, group: u16) {
        assert!(
            (id as usize) < self.state.len()
                && self.state[id as usize] == State::Provided
                && self.home[id as usize] == group,
            "buffer {id} is not provided in group {group}"
        );
        self.state[id as usize] = State::Shared(1);
    }

    /// The state of buffer `id`.
    pub fn state(&self, id: BufId) -> State {
        self.state[id as usize]
    }

    /// Whether `id` is in the kernel's hands in a provided-buffer ring.
    pub fn is_provided(&self, id: BufId) -> bool {
        self.state.get(id as usize) == Some(&State::Provided)
    }

    /// Home ring of a buffer, if it has one.
    pub fn home(&self, id: BufId) -> Option<u16> {
        let h = *self.home.get(id as usize)?;
        (h != NO_HOME).then_some(h)
    }

    /// Moves the `Returning` buffers into `out` and marks them `Provided`: the caller (the ring
    /// driver) publishes each in its home ring before the kernel can see it.
    pub fn take_returning(&mut self, out: &mut Vec<BufId>) {
        for &id in &self.returning {
            debug_assert_eq!(self.state[id as usize], State::Returning);
            self.state[id as usize] = State::Provided;
        }
        out.append(&mut self.returning);
    }

    /// Whether buffers wait to go back to their rings.
    pub fn has_returning(&self) -> bool {
        !self.returning.is_empty()
    }

    /// The ring of `group` is gone (unregistered, no operation can pick from it any more):
    /// its buffers that the kernel held or that were on their way back go to the free list;
    /// those still holding data lose their home, and their last release frees them.
    pub fn disown(&mut self, group: u16) {
        self.returning.retain(|&id| self.home[id as usize] != group);
        for id in 0..self.state.len() {
            if self.home[id] != group {
                continue;
            }
            self.home[id] = NO_HOME;
            if matches!(self.state[id], State::Provided | State::Returning) {
                self.state[id] = State::Free;
                self.free_id(id as BufId);
            }
        }
    }

    /// Checks that `len` bytes at `off` of `id` hold data anyone may read.
    pub fn check_readable(&self, id: BufId, off: u32, len: u32) {
        assert!(
            matches!(self.state[id as usize], State::Shared(_)),
            "buffer {id} does not hold data"
        );
        assert!(off as u64 + len as u64 <= u64::from(self.size_of(id)));
    }

    /// Reads data bytes of a buffer that holds data.
    pub fn bytes<'m>(&self, mem: &'m dyn Memory, id: BufId, off: u32, len: u32) -> &'m [u8] {
        self.check_readable(id, off, len);
        mem.bytes(id, off, len)
    }

    /// Writes into a buffer the caller holds the only reference to (the framing prefix in
    /// front of a datagram, before the buffer is shared with any output).
    pub fn write_prefix(&self, mem: &mut dyn Memory, id: BufId, off: u32, data: &[u8]) {
        assert_eq!(
            self.state[id as usize],
            State::Shared(1),
            "buffer {id} must be held once to be written"
        );
        assert!(off as usize + data.len() <= self.size_of(id) as usize);
        mem.write(id, off, data);
    }

    /// Writes into a buffer that holds data at `off`, past every range of it that was offered
    /// to an output (the caller's promise: the preamble a channel assembles while subscribers
    /// hold its first bytes, or a `\n` after a datagram), so no send reads what is written.
    pub fn append(&self, mem: &mut dyn Memory, id: BufId, off: u32, data: &[u8]) {
        assert!(
            matches!(self.state[id as usize], State::Shared(_)),
            "buffer {id} does not hold data"
        );
        assert!(off as usize + data.len() <= self.size_of(id) as usize);
        mem.write(id, off, data);
    }

    /// Copies `len` bytes of buffer `from` (holding data) at `off` into buffer `to` at `to_off`,
    /// under the promise of [`BufferPool::append`] for `to` (a spool's staging buffer).
    pub fn copy(
        &self,
        mem: &mut dyn Memory,
        (from, off, len): (BufId, u32, u32),
        (to, to_off): (BufId, u32),
    ) {
        self.check_readable(from, off, len);
        assert_ne!(from, to, "a copy within one buffer");
        assert!(
            matches!(self.state[to as usize], State::Shared(_)),
            "buffer {to} does not hold data"
        );
        assert!(to_off as usize + len as usize <= self.size_of(to) as usize);
        mem.copy(from, off, len, to, to_off);
    }

    /// Byte offset of buffer `id` in the arena (the driver's address arithmetic).
    pub fn offset_of(&self, id: BufId) -> usize {
        self.start(id)
    }

    /// The arena's layout, per class: its first buffer, its byte offset and its buffers' size.
    pub fn classes(&self) -> [(BufId, usize, u32); 2] {
        [0, 1].map(|c| {
            let ci = &self.classes[c];
            (ci.first, ci.base, ci.size)
        })
    }

    /// Bytes of the whole arena.
    pub fn arena_bytes(&self) -> usize {
        let s = &self.classes[1];
        s.base + usize::from(s.count) * s.size as usize
    }

    /// Whether every buffer is free: nothing lent, provided, held or returning.
    pub fn is_whole(&self) -> bool {
        self.free_count() == self.state.len()
    }

    /// Buffers not free (held by outputs, lent to the kernel or in a provided-buffer ring).
    pub fn in_use(&self) -> usize {
        self.state.len() - self.free_count()
    }
}

/// An arena in a plain vector: the [`Memory`] of tests and of the simulation.
#[derive(Debug)]
pub struct VecMemory {
    bytes: Vec<u8>,
    offsets: Vec<(usize, u32)>,
}

impl VecMemory {
    /// An arena laid out like `pool`.
    pub fn new(pool: &BufferPool) -> VecMemory {
        VecMemory {
            bytes: vec![0; pool.arena_bytes()],
            offsets: (0..pool.count() as u16)
                .map(|id| (pool.offset_of(id), pool.size_of(id)))
                .collect(),
        }
    }
}

impl Memory for VecMemory {
    fn bytes(&self, buf: BufId, off: u32, len: u32) -> &[u8] {
        let (base, size) = self.offsets[usize::from(buf)];
        assert!(off + len <= size);
        &self.bytes[base + off as usize..base + (off + len) as usize]
    }

    fn write(&mut self, buf: BufId, off: u32, data: &[u8]) {
        let (base, size) = self.offsets[usize::from(buf)];
        assert!(off as usize + data.len() <= size as usize);
        self.bytes[base + off as usize..base + off as usize + data.len()].copy_from_slice(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle() {
        let mut p = BufferPool::new(4096, 3, 0, 0);
        let mut m = VecMemory::new(&p);
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        let c = p.take().unwrap();
        assert!(p.take().is_none());
        p.filled(a);
        p.write_prefix(&mut m, a, 0, &[1, 2, 3, 4]);
        assert_eq!(p.bytes(&m, a, 0, 4), &[1, 2, 3, 4]);
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
    fn classes_are_disjoint() {
        let mut p = BufferPool::new(8192, 2, 2048, 3);
        let mut m = VecMemory::new(&p);
        let big = p.take().unwrap();
        let small: Vec<BufId> = (0..3)
            .map(|_| p.take_class(Class::Small).unwrap())
            .collect();
        assert!(p.take_class(Class::Small).is_none());
        assert_eq!(p.size_of(big), 8192);
        for &s in &small {
            assert_eq!(p.size_of(s), 2048);
            p.filled(s);
            p.write_prefix(&mut m, s, 0, &s.to_be_bytes());
        }
        p.filled(big);
        p.write_prefix(&mut m, big, 0, &[9, 9]);
        for &s in &small {
            assert_eq!(p.bytes(&m, s, 0, 2), &s.to_be_bytes());
            p.release(s);
        }
        assert_eq!(p.bytes(&m, big, 0, 2), &[9, 9]);
        assert_eq!(p.count(), 5);
        assert_eq!(p.size_of(2), 2048);
        assert_eq!(p.offset_of(2) - p.offset_of(0), 16384);
        assert_eq!(p.free_count(), 4);
    }

    #[test]
    fn provided_buffers_go_home_not_to_the_free_list() {
        let mut p = BufferPool::new(4096, 1, 2048, 4);
        let m = VecMemory::new(&p);
        let a = p.take_provided(Class::Small, 3).unwrap();
        let b = p.take_provided(Class::Small, 3).unwrap();
        assert_eq!(p.home(a), Some(3));
        assert_eq!(p.free_of(Class::Small), (2, 4));
        // A datagram in `a`, sent by two outputs.
        p.received(a, 3);
        p.retain(a);
        assert_eq!(p.bytes(&m, a, 0, 4).len(), 4);
        p.release(a);
        assert!(!p.has_returning());
        p.release(a);
        assert!(p.has_returning());
        assert_eq!(p.free_of(Class::Small), (2, 4), "not to the free list");
        let mut back = Vec::new();
        p.take_returning(&mut back);
        assert_eq!(back, vec![a]);
        assert!(!p.has_returning());
        // Provided again: the kernel's, unreadable, and receivable once more.
        p.received(a, 3);
        p.release(a);
        back.clear();
        p.take_returning(&mut back);
        // `b` holds data when the ring closes: it is freed by its last release; `a` at once.
        p.received(b, 3);
        p.disown(3);
        assert_eq!(p.free_of(Class::Small), (3, 4));
        assert_eq!(p.home(b), None);
        p.release(b);
        assert_eq!(p.free_of(Class::Small), (4, 4));
        assert!(!p.has_returning());
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn disown_drops_returning_buffers_of_that_ring_only() {
        let mut p = BufferPool::new(4096, 1, 2048, 4);
        let a = p.take_provided(Class::Small, 1).unwrap();
        let b = p.take_provided(Class::Small, 2).unwrap();
        for (id, g) in [(a, 1), (b, 2)] {
            p.received(id, g);
            p.release(id);
        }
        p.disown(1);
        let mut back = Vec::new();
        p.take_returning(&mut back);
        assert_eq!(back, vec![b]);
        assert_eq!(p.free_of(Class::Small), (3, 4));
    }

    #[test]
    #[should_panic(expected = "is not provided in group")]
    fn a_completion_naming_a_buffer_of_another_ring_is_caught() {
        let mut p = BufferPool::new(4096, 1, 2048, 2);
        let a = p.take_provided(Class::Small, 1).unwrap();
        p.received(a, 2);
    }

    #[test]
    #[should_panic(expected = "does not hold data")]
    fn provided_bytes_are_not_readable() {
        let mut p = BufferPool::new(4096, 1, 2048, 1);
        let m = VecMemory::new(&p);
        let a = p.take_provided(Class::Small, 0).unwrap();
        let _ = p.bytes(&m, a, 0, 1);
    }

    #[test]
    #[should_panic(expected = "does not hold data")]
    fn kernel_owned_bytes_are_not_readable() {
        let mut p = BufferPool::new(4096, 1, 0, 0);
        let m = VecMemory::new(&p);
        let a = p.take().unwrap();
        let _ = p.bytes(&m, a, 0, 1);
    }

    #[test]
    #[should_panic(expected = "release of buffer")]
    fn double_release_is_caught() {
        let mut p = BufferPool::new(4096, 1, 0, 0);
        let a = p.take().unwrap();
        p.filled(a);
        p.release(a);
        p.release(a);
    }
}
