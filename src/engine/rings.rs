//! The books of provided-buffer rings (IORING_REGISTER_PBUF_RING, Linux 5.19+), the memory a
//! UDP input's multishot receive picks its buffers from: which group each ring is, how many
//! pool buffers it has adopted, how many the kernel holds, and the parsing of what a multishot
//! RECVMSG wrote in front of a datagram.
//!
//! Owns: the decisions; the driver only maps, registers and publishes
//! ([`Sys::open_buf_ring`], [`Sys::provide`], [`Sys::close_buf_ring`]), in the order decided
//! here. A buffer taken for a ring keeps it as its home ([`BufferPool::take_provided`]) and
//! comes back to it through [`Rings::recycle`].

use super::buffers::{BufId, BufferPool, Class};
use super::io::{Memory, Sys};

/// The ring size for `buffers` buffers: the largest power of two not above it, at most
/// `max` (itself a power of two), or `None` below 2 (a ring of one buffer would end the
/// multishot receive on every datagram).
pub fn entries_for(buffers: usize, max: u16) -> Option<u16> {
    debug_assert!(max.is_power_of_two());
    let n = buffers.min(usize::from(max));
    if n < 2 {
        return None;
    }
    Some(1u16 << (usize::BITS - 1 - n.leading_zeros()))
}

/// Bytes of the kernel's header in front of every multishot-received datagram
/// (`struct io_uring_recvmsg_out`: namelen, controllen, payloadlen, flags; all u32).
pub const RECVMSG_OUT_BYTES: u32 = 16;

/// What a multishot receive's completion put into its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram {
    /// A whole datagram of `len` bytes at byte `off` of the buffer, which the caller now holds
    /// one reference to. The kernel's header (already parsed) is free room before `off`.
    Payload { off: u32, len: u32 },
    /// The datagram (of `len` bytes) did not fit and was cut short; its buffer has gone back.
    Truncated { len: u32 },
    /// A completion too short to hold the kernel's header; its buffer has gone back.
    Malformed,
}

/// Parses what a multishot RECVMSG wrote into a buffer (`res` bytes): the kernel's header,
/// no name, no control data (the driver's msghdr asks for neither), then the payload.
pub fn parse_recvmsg_out(bytes: &[u8]) -> Datagram {
    let h = RECVMSG_OUT_BYTES as usize;
    if bytes.len() < h {
        return Datagram::Malformed;
    }
    let word = |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let (namelen, controllen, payloadlen, flags) = (word(0), word(4), word(8), word(12));
    if namelen != 0 || controllen != 0 {
        return Datagram::Malformed;
    }
    if flags & libc::MSG_TRUNC as u32 != 0 {
        return Datagram::Truncated { len: payloadlen };
    }
    Datagram::Payload {
        off: RECVMSG_OUT_BYTES,
        len: (bytes.len() - h) as u32,
    }
}

/// One provided-buffer ring's books.
#[derive(Clone, Copy, Debug)]
struct RingBook {
    entries: u16,
    /// Buffers with this ring as their home (published, held by outputs, or returning).
    homed: u16,
    /// Buffers published and not yet named by a completion: the kernel's.
    provided: u16,
}

/// The books of every provided-buffer ring, by buffer group. A buffer is published in a ring
/// only through [`Sys::provide`], and a ring is closed only through [`Sys::close_buf_ring`],
/// both in the order the engine decides them.
///
/// CQ overflow: each completion of a multishot receive consumes one buffer of its ring, so the
/// completions one receive can post before it ends with -ENOBUFS are bounded by the buffers its
/// ring holds, and the buffers of all rings together stay within half the CQ
/// ([`Rings::open`], [`Rings::grow`]).
#[derive(Debug, Default)]
pub struct Rings {
    books: Vec<Option<RingBook>>,
    /// Scratch of `recycle` (kept for its capacity).
    back: Vec<BufId>,
    staged: Vec<BufId>,
}

impl Rings {
    fn book(&mut self, group: u16) -> Option<&mut RingBook> {
        self.books
            .get_mut(usize::from(group))
            .and_then(|b| b.as_mut())
    }

    /// Buffers the rings may still adopt before they could flood a CQ of `cq_entries`.
    fn cq_budget(&self, cq_entries: u32) -> usize {
        let homed: usize = self
            .books
            .iter()
            .flatten()
            .map(|r| usize::from(r.homed))
            .sum();
        (cq_entries as usize / 2).saturating_sub(homed)
    }

    /// Opens a ring of class `c` for one input's multishot receive: room for up to
    /// `max_entries` buffers (a power of two), filled with `initial` pool buffers (which become
    /// `Provided`, with this ring as their home). Returns its buffer group, or `None` (the input
    /// then uses single-shot receives) when the class cannot spare two buffers (a ring takes at
    /// most half of what is free), the CQ budget is spent, or the driver could not register it.
    pub fn open(
        &mut self,
        pool: &mut BufferPool,
        sys: &mut dyn Sys,
        cq_entries: u32,
        c: Class,
        initial: u16,
        max_entries: u16,
    ) -> Option<u16> {
        if pool.class_size(c) == 0 {
            return None;
        }
        let budget = self.cq_budget(cq_entries);
        let (free, _) = pool.free_of(c);
        let entries = entries_for(free / 2, max_entries)?;
        let initial = usize::from(initial.min(entries)).min(budget).min(free / 2);
        if initial < 2 {
            return None;
        }
        let group = match self.books.iter().position(|r| r.is_none()) {
            Some(g) => g,
            None => {
                self.books.push(None);
                self.books.len() - 1
            }
        };
        let group16 = u16::try_from(group).ok().filter(|&g| g < u16::MAX - 1)?;
        if !sys.open_buf_ring(group16, entries) {
            return None;
        }
        self.books[group] = Some(RingBook {
            entries,
            homed: 0,
            provided: 0,
        });
        self.adopt(pool, sys, c, group16, initial);
        Some(group16)
    }

    /// Takes up to `n` free buffers of class `c` into the ring of `group` for good. Returns
    /// how many.
    fn adopt(
        &mut self,
        pool: &mut BufferPool,
        sys: &mut dyn Sys,
        c: Class,
        group: u16,
        n: usize,
    ) -> usize {
        let mut staged = std::mem::take(&mut self.staged);
        staged.clear();
        if let Some(b) = self.book(group) {
            while staged.len() < n && b.homed < b.entries {
                let Some(id) = pool.take_provided(c, group) else {
                    break;
                };
                b.homed += 1;
                b.provided += 1;
                staged.push(id);
            }
        }
        if !staged.is_empty() {
            sys.provide(group, &staged);
        }
        let added = staged.len();
        self.staged = staged;
        added
    }

    /// Gives the ring of `group` up to `n` more buffers of class `c` (within its entries, half
    /// the class's free buffers and the CQ budget): for an input whose ring stays dry because
    /// an output holds its buffers (a stuck `drop` subscriber keeps up to its quota), so that
    /// the outputs that keep up still get datagrams. Returns how many it got.
    pub fn grow(
        &mut self,
        pool: &mut BufferPool,
        sys: &mut dyn Sys,
        cq_entries: u32,
        c: Class,
        group: u16,
        n: usize,
    ) -> usize {
        let (free, _) = pool.free_of(c);
        let n = n.min(free / 2).min(self.cq_budget(cq_entries));
        self.adopt(pool, sys, c, group, n)
    }

    /// Buffers the ring of `group` has adopted (0 for a closed ring).
    pub fn size(&self, group: u16) -> u16 {
        self.books
            .get(usize::from(group))
            .and_then(|r| r.as_ref())
            .map_or(0, |r| r.homed)
    }

    /// Closes the ring of `group` and gives its buffers back to the pool (those still held by
    /// outputs return with their last release). Only once no operation can pick from it: its
    /// multishot receive has posted its final completion, or was never armed.
    pub fn close(&mut self, pool: &mut BufferPool, sys: &mut dyn Sys, group: u16) {
        let Some(slot) = self.books.get_mut(usize::from(group)) else {
            return;
        };
        if slot.take().is_none() {
            return;
        }
        if !sys.close_buf_ring(group) {
            // The kernel still has the ring: its buffers stay `Provided` for good rather than
            // hand the kernel memory we reuse; the group id is never reused either.
            log::warn!("cannot unregister provided-buffer ring {group}; its buffers stay lent");
            *slot = Some(RingBook {
                entries: 0,
                homed: 0,
                provided: 0,
            });
            return;
        }
        pool.disown(group);
    }

    /// Buffers the ring of `group` offers the kernel now, after publishing the ones that came
    /// back (0 for a closed ring).
    pub fn provided(&mut self, pool: &mut BufferPool, sys: &mut dyn Sys, group: u16) -> u16 {
        self.recycle(pool, sys);
        self.books
            .get(usize::from(group))
            .and_then(|r| r.as_ref())
            .map_or(0, |r| r.provided)
    }

    /// Publishes every buffer whose last reference was released back into its home ring.
    pub fn recycle(&mut self, pool: &mut BufferPool, sys: &mut dyn Sys) {
        if !pool.has_returning() {
            return;
        }
        let mut back = std::mem::take(&mut self.back);
        back.clear();
        pool.take_returning(&mut back);
        back.sort_by_key(|&id| pool.home(id));
        for run in back.chunk_by(|a, b| pool.home(*a) == pool.home(*b)) {
            let g = pool.home(run[0]).expect("a returning buffer has a home");
            let b = self
                .book(g)
                .expect("a returning buffer's ring is open (disown clears the others)");
            b.provided += run.len() as u16;
            assert!(b.provided <= b.entries, "ring {g} overfilled");
            sys.provide(g, run);
        }
        self.back = back;
    }

    /// A completion of the multishot receive on `group` named buffer `bid` with result `res`
    /// (>= 0): takes the buffer back from the kernel and parses what the kernel wrote.
    pub fn take_datagram(
        &mut self,
        pool: &mut BufferPool,
        mem: &dyn Memory,
        group: u16,
        bid: BufId,
        res: i32,
    ) -> Datagram {
        pool.received(bid, group);
        if let Some(b) = self.book(group) {
            b.provided = b.provided.saturating_sub(1);
        }
        let n = (res.max(0) as u32).min(pool.size_of(bid));
        let d = parse_recvmsg_out(pool.bytes(mem, bid, 0, n));
        if !matches!(d, Datagram::Payload { .. }) {
            pool.release(bid);
        }
        d
    }

    /// A completion named buffer `bid` that nobody wants (its endpoint is gone): back to its
    /// ring (or, when the ring is closed, nowhere: disown already freed it).
    pub fn give_back(&mut self, pool: &mut BufferPool, mem: &dyn Memory, bid: BufId) {
        let Some(g) = pool.home(bid) else {
            return;
        };
        if pool.is_provided(bid) {
            let _ = self.take_datagram(pool, mem, g, bid, 0);
        }
    }

    /// Rings open.
    pub fn open_count(&self) -> usize {
        self.books
            .iter()
            .flatten()
            .filter(|b| b.entries > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_are_powers_of_two() {
        assert_eq!(entries_for(0, 128), None);
        assert_eq!(entries_for(1, 128), None);
        assert_eq!(entries_for(2, 128), Some(2));
        assert_eq!(entries_for(3, 128), Some(2));
        assert_eq!(entries_for(100, 128), Some(64));
        assert_eq!(entries_for(128, 128), Some(128));
        assert_eq!(entries_for(5000, 128), Some(128));
    }

    #[test]
    fn recvmsg_out_parses_payload_truncation_and_short_buffers() {
        let mut b = vec![0u8; 16];
        b[8..12].copy_from_slice(&5u32.to_ne_bytes());
        b.extend_from_slice(b"hello");
        assert_eq!(parse_recvmsg_out(&b), Datagram::Payload { off: 16, len: 5 });
        b[12..16].copy_from_slice(&(libc::MSG_TRUNC as u32).to_ne_bytes());
        b[8..12].copy_from_slice(&9000u32.to_ne_bytes());
        assert_eq!(parse_recvmsg_out(&b), Datagram::Truncated { len: 9000 });
        assert_eq!(parse_recvmsg_out(&b[..15]), Datagram::Malformed);
    }
}
