//! Provided-buffer rings (IORING_REGISTER_PBUF_RING, Linux 5.19+): the memory a multishot
//! receive picks its buffers from, and the index arithmetic of publishing buffers in it.
//!
//! Owns: one ring's mapping and its tail. It never decides which buffers go in (the engine's
//! books do, [`crate::engine::rings`], and the pool's `Provided` state records that the
//! kernel owns them) and never registers itself: [`crate::driver::ring::Ring`] registers the
//! mapping and unregisters it only when the engine says no operation can pick from it.
//!
//! Layout (shared with the kernel): `entries` slots of 16 bytes (`struct io_uring_buf`:
//! addr u64, len u32, bid u16, resv u16), where the `resv` field of slot 0 is the ring's tail
//! (u16, wrapping). The kernel keeps the head to itself; it consumes slots `head..tail` (modulo
//! `entries`) and never touches a slot outside that range. `entries` is a power of two (at
//! most 32768) so that `index & (entries - 1)` finds the slot of a wrapping u16 index, and the
//! mapping is page-aligned (an anonymous mmap), as the kernel requires.
//!
//! Memory ordering: a slot is written with plain stores, then the new tail is stored with
//! `Release` ordering; the kernel reads the tail with an acquire load (`smp_load_acquire`)
//! before it reads the slots below it, so it always sees complete slots. Slots are only ever
//! written at indices `tail..` that the kernel has not been told about, and the ring never
//! holds more buffers than `entries` (each buffer has exactly one home ring and the ring was
//! sized for all of them), so a write never lands on a slot the kernel may still read.

use io_uring::types::BufRingEntry;
use memmap2::MmapMut;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

/// Bytes of one slot (`struct io_uring_buf`).
pub const ENTRY_BYTES: usize = std::mem::size_of::<BufRingEntry>();

/// Slot of the wrapping ring index `index` in a ring of `entries` (a power of two) slots.
pub fn slot(index: u16, entries: u16) -> usize {
    debug_assert!(entries.is_power_of_two());
    usize::from(index & (entries - 1))
}

/// One provided-buffer ring's memory and the buffers published in it.
pub struct BufRing {
    map: MmapMut,
    entries: u16,
    /// The next index to publish (the tail the kernel has been told, plus `staged`).
    tail: u16,
    /// Slots written since the last [`BufRing::publish`].
    staged: u16,
}

impl BufRing {
    /// Maps a zeroed ring of `entries` slots (a power of two).
    pub fn new(entries: u16) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let map = MmapMut::map_anon(usize::from(entries) * ENTRY_BYTES)?;
        Ok(BufRing {
            map,
            entries,
            tail: 0,
            staged: 0,
        })
    }

    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// Address of the ring for registration.
    pub fn addr(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    /// Writes one buffer into the next free slot; the kernel sees it after
    /// [`BufRing::publish`]. Panics when the ring would hold more than `entries` buffers.
    pub fn stage(&mut self, addr: *mut u8, len: u32, bid: u16) {
        // The engine's books keep the buffers in the kernel's hands within `entries`
        // (engine::rings); what is staged at once cannot exceed them either.
        assert!(
            self.staged < self.entries,
            "provided-buffer ring of {} entries overfilled",
            self.entries
        );
        let i = slot(self.tail.wrapping_add(self.staged), self.entries);
        let base = self.map.as_mut_ptr().cast::<BufRingEntry>();
        // SAFETY: `i < entries`, so the slot lies inside the mapping, which is aligned for
        // BufRingEntry (page-aligned). The slot is outside `head..tail`, so the kernel does not
        // read it until the next publish (see the module documentation). The setters write
        // addr, len and bid only; `resv` (the tail, in slot 0) is left alone.
        unsafe {
            let e = &mut *base.add(i);
            e.set_addr(addr as u64);
            e.set_len(len);
            e.set_bid(bid);
        }
        self.staged += 1;
    }

    /// Tells the kernel about the staged buffers: one Release store of the tail.
    pub fn publish(&mut self) {
        if self.staged == 0 {
            return;
        }
        self.tail = self.tail.wrapping_add(self.staged);
        self.staged = 0;
        let base = self.map.as_mut_ptr().cast::<BufRingEntry>();
        // SAFETY: the tail is the u16 `resv` field of slot 0, inside the mapping and 2-byte
        // aligned; AtomicU16 has the layout of u16. The kernel only reads it, and every slot
        // the new tail covers was written before this Release store.
        unsafe {
            let tail = BufRingEntry::tail(base).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_wrap_with_the_u16_index() {
        assert_eq!(slot(0, 8), 0);
        assert_eq!(slot(7, 8), 7);
        assert_eq!(slot(8, 8), 0);
        assert_eq!(slot(u16::MAX, 8), 7);
        assert_eq!(slot(u16::MAX.wrapping_add(1), 8), 0);
        assert_eq!(slot(u16::MAX, 32768), 32767);
    }

    #[test]
    fn ring_sizes_are_powers_of_two() {
        assert!(BufRing::new(12).is_err());
        assert!(BufRing::new(0).is_err());
    }

    #[test]
    fn publishing_wraps_the_tail_and_keeps_slots_in_order() {
        let mut r = BufRing::new(4).unwrap();
        assert_eq!(r.addr() % 4096, 0, "page-aligned");
        let mut data = [0u8; 64];
        let p = data.as_mut_ptr();
        let read = |r: &BufRing, i: usize| {
            // SAFETY (test): reading slot i of a live mapping.
            let e = unsafe { &*r.map.as_ptr().cast::<BufRingEntry>().add(i) };
            (e.bid(), e.len())
        };
        let tail = |r: &BufRing| {
            // SAFETY (test): the tail field of slot 0.
            unsafe { *BufRingEntry::tail(r.map.as_ptr().cast()) }
        };
        // Go round the ring many times, past the u16 wrap of the index.
        let mut bid = 0u16;
        for round in 0..(70_000 / 3) {
            for _ in 0..3 {
                r.stage(p, 100 + u32::from(bid % 7), bid);
                bid = bid.wrapping_add(1);
            }
            let before = r.tail;
            r.publish();
            assert_eq!(r.tail, before.wrapping_add(3));
            assert_eq!(tail(&r), r.tail, "round {round}");
            for k in 0..3u16 {
                let idx = before.wrapping_add(k);
                let b = bid.wrapping_sub(3 - k);
                assert_eq!(read(&r, slot(idx, 4)), (b, 100 + u32::from(b % 7)));
            }
        }
    }

    #[test]
    #[should_panic(expected = "overfilled")]
    fn a_ring_never_holds_more_than_its_entries() {
        let mut r = BufRing::new(2).unwrap();
        let mut data = [0u8; 8];
        for b in 0..3 {
            r.stage(data.as_mut_ptr(), 8, b);
        }
    }
}
