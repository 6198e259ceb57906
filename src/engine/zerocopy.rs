//! Zero-copy sends (IORING_OP_SEND_ZC, Linux 6.0+): the records of sends whose buffer the
//! kernel may still read.
//!
//! Owns: which pool buffer each zero-copy send in flight holds, and the endpoint generation it
//! was sent for. Pure; the ring driver keeps one [`ZcTable`].
//!
//! A zero-copy send completes twice under one `user_data`: first with its result (and
//! IORING_CQE_F_MORE when a notification follows), then with IORING_CQE_F_NOTIF once the
//! network stack has let go of the pages. The buffer is the kernel's until that notification,
//! even after the endpoint that sent it is closed, so the buffer cannot be found through the
//! endpoint: the tag of a zero-copy send carries the index of its record here in place of the
//! generation (see `token`), and the record holds the generation and the buffer.

use super::buffers::BufId;

/// Smaller stream chunks are sent by copy: below about 10 KiB the page pinning and the
/// notification cost more than the copy saves (the kernel's MSG_ZEROCOPY notes).
pub const MIN_BYTES: u32 = 16 << 10;

/// Largest number of records (the tag's 24-bit generation field holds the index).
pub const MAX_RECORDS: usize = 1 << 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZcRecord {
    /// Generation of the endpoint the send was for.
    pub gen: u32,
    /// The pool buffer the kernel reads from until the notification.
    pub buf: BufId,
}

/// Records of zero-copy sends in flight, by index.
#[derive(Debug, Default)]
pub struct ZcTable {
    slots: Vec<Option<ZcRecord>>,
    free: Vec<u32>,
    live: usize,
}

impl ZcTable {
    /// Records a send of `buf` for an endpoint of generation `gen`; returns its index, or None
    /// when [`MAX_RECORDS`] are in flight.
    pub fn begin(&mut self, gen: u32, buf: BufId) -> Option<u32> {
        let rec = Some(ZcRecord { gen, buf });
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = rec;
                i
            }
            None if self.slots.len() < MAX_RECORDS => {
                self.slots.push(rec);
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        self.live += 1;
        Some(idx)
    }

    /// The record at `idx`, if one is in flight there.
    pub fn get(&self, idx: u32) -> Option<ZcRecord> {
        self.slots.get(idx as usize).copied().flatten()
    }

    /// Ends the record at `idx` (the kernel is done with its buffer): returns it, once.
    pub fn end(&mut self, idx: u32) -> Option<ZcRecord> {
        let r = self.slots.get_mut(idx as usize)?.take()?;
        self.free.push(idx);
        self.live -= 1;
        Some(r)
    }

    /// Records in flight.
    pub fn live(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_ends_once_and_its_index_is_reused() {
        let mut t = ZcTable::default();
        let a = t.begin(7, 3).unwrap();
        let b = t.begin(8, 4).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.live(), 2);
        assert_eq!(t.get(a), Some(ZcRecord { gen: 7, buf: 3 }));
        assert_eq!(t.end(a), Some(ZcRecord { gen: 7, buf: 3 }));
        assert_eq!(
            t.end(a),
            None,
            "a second notification must not free the buffer again"
        );
        assert_eq!(t.get(a), None);
        let c = t.begin(9, 5).unwrap();
        assert_eq!(c, a, "the freed index is reused");
        assert_eq!(t.get(b), Some(ZcRecord { gen: 8, buf: 4 }));
        assert_eq!(t.live(), 2);
        assert_eq!(t.end(12345), None);
    }

    #[test]
    fn out_of_order_ends_keep_every_other_record() {
        let mut t = ZcTable::default();
        let idx: Vec<u32> = (0..100).map(|i| t.begin(i, i as BufId).unwrap()).collect();
        for &i in idx.iter().rev().step_by(2) {
            assert!(t.end(i).is_some());
        }
        for (n, &i) in idx.iter().enumerate() {
            let want = if (99 - n) % 2 == 0 {
                None
            } else {
                Some(ZcRecord {
                    gen: n as u32,
                    buf: n as BufId,
                })
            };
            assert_eq!(t.get(i), want, "record {n}");
        }
        assert_eq!(t.live(), 50);
    }
}
