//! One output's queue of pending chunks and its slow-output policy.
//!
//! Owns: what an output still has to send, how much of the front chunk already went out (short
//! writes), and the decision taken when the output falls behind (`on_slow`). Pure: chunks name
//! pool buffers by index; the caller retains a buffer for every chunk queued and releases the
//! indices this queue hands back.
//!
//! A backlog is measured two ways, and crossing either limit makes the output "slow":
//! payload bytes (`max_backlog`) and pool buffers held (`max_buffers`), because a queue of
//! small datagrams pins a whole pool buffer per datagram; without the buffer limit one stuck
//! subscriber could empty the pool for every other output and channel.

use crate::config::url::OnSlow;
use std::collections::VecDeque;

/// A range of a pool buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub buf: u16,
    pub off: u32,
    pub len: u32,
}

/// How many datagrams at the front of `chunks` can leave in one segmented UDP send, and their
/// segment size: a run of datagrams of equal size, where only the last may be shorter (the
/// kernel cuts a segmented send into `seg`-byte datagrams and a shorter tail), of at most
/// `max_segs` datagrams and `max_bytes` bytes. A run of one means "send it alone"; `(0, 0)`
/// for no chunks. Datagrams of more than `u16::MAX` bytes are never segmented.
pub fn segment_run(
    chunks: impl Iterator<Item = Chunk>,
    max_segs: usize,
    max_bytes: u32,
) -> (usize, u32) {
    let mut seg = 0u32;
    let mut n = 0usize;
    let mut total = 0u32;
    for c in chunks.take(max_segs) {
        if n == 0 {
            seg = c.len;
            n = 1;
            total = c.len;
            if c.len == 0 || c.len > u32::from(u16::MAX) {
                break;
            }
            continue;
        }
        if c.len > seg || c.len == 0 || total + c.len > max_bytes {
            break;
        }
        n += 1;
        total += c.len;
        if c.len < seg {
            break;
        }
    }
    (n, seg)
}

/// What `offer` did with a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Queued; the caller retains the buffer.
    Queued,
    /// Queued, and the output is now over its limit: a `block` output asks the channel to stop
    /// reading its input. The caller retains the buffer.
    QueuedBlocking,
    /// Not queued: the output is over its limit and drops (counted).
    Dropped,
    /// Not queued: the output is over its limit and must be disconnected.
    Disconnect,
}

#[derive(Debug)]
pub struct OutQueue {
    items: VecDeque<Chunk>,
    /// Chunks sent whole since the queue began (a spool's consumption mark).
    sent_total: u64,
    bytes: u64,
    sent: u32,
    pub policy: OnSlow,
    pub max_bytes: u64,
    pub max_buffers: usize,
}

impl OutQueue {
    pub fn new(policy: OnSlow, max_bytes: u64, max_buffers: usize) -> OutQueue {
        OutQueue {
            items: VecDeque::with_capacity(max_buffers + 1),
            sent_total: 0,
            bytes: 0,
            sent: 0,
            policy,
            max_bytes,
            max_buffers: max_buffers.max(1),
        }
    }

    /// Payload bytes not yet handed to the kernel.
    pub fn backlog(&self) -> u64 {
        self.bytes - u64::from(self.sent)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn over(&self, extra_bytes: u64, extra_items: usize) -> bool {
        self.backlog() + extra_bytes > self.max_bytes
            || self.items.len() + extra_items > self.max_buffers
    }

    /// Whether one more chunk of `len` bytes would put the queue over a limit.
    pub fn would_exceed(&self, len: u32) -> bool {
        self.over(u64::from(len), 1)
    }

    /// Chunks sent whole so far.
    pub fn sent_total(&self) -> u64 {
        self.sent_total
    }

    /// The mark of the chunk at the back: the value [`OutQueue::sent_total`] reaches once it
    /// is sent.
    pub fn back_mark(&self) -> u64 {
        self.sent_total + self.items.len() as u64
    }

    /// Takes every chunk from the one of mark `from` + 1 on (those not begun), in order: the
    /// chunks a spool takes over.
    pub fn take_from(&mut self, from: u64) -> Vec<Chunk> {
        let first = (from.saturating_sub(self.sent_total) as usize).max(usize::from(self.sent > 0));
        if first >= self.items.len() {
            return Vec::new();
        }
        let taken: Vec<Chunk> = self.items.drain(first..).collect();
        self.bytes -= taken.iter().map(|c| u64::from(c.len)).sum::<u64>();
        taken
    }

    /// Queues a record read back from a spool (the spool reads only while the queue is below
    /// half its limit: not subject to the limits).
    pub fn push_replayed(&mut self, c: Chunk) {
        self.push(c);
    }

    /// Whether the queue is over a limit now.
    pub fn is_over_limit(&self) -> bool {
        self.over(0, 0)
    }

    /// Buffers this queue may hold (its share of the pool).
    pub fn max_buffers(&self) -> usize {
        self.max_buffers
    }

    /// Whether a blocked input may resume: both measures at or below half their limit.
    pub fn may_resume(&self) -> bool {
        self.backlog() <= self.max_bytes / 2 && self.items.len() <= self.max_buffers / 2
    }

    /// Which limit made the last offer fail, for the log: the buffer quota when the queue holds
    /// as many chunks as it may, else the byte limit.
    pub fn limit_hit(&self) -> String {
        if self.items.len() >= self.max_buffers {
            format!("{} pool buffers queued, its quota", self.items.len())
        } else {
            format!("backlog over {} bytes", self.max_bytes)
        }
    }

    /// Offers a chunk according to the policy.
    pub fn offer(&mut self, c: Chunk) -> Offer {
        debug_assert!(c.len > 0);
        if self.over(u64::from(c.len), 1) {
            match self.policy {
                OnSlow::Drop => return Offer::Dropped,
                OnSlow::Disconnect => return Offer::Disconnect,
                OnSlow::Block => {
                    self.push(c);
                    return Offer::QueuedBlocking;
                }
            }
        }
        self.push(c);
        Offer::Queued
    }

    fn push(&mut self, c: Chunk) {
        self.bytes += u64::from(c.len);
        self.items.push_back(c);
    }

    /// The bytes to send next: the front chunk minus what already went out.
    pub fn front(&self) -> Option<Chunk> {
        self.items.front().map(|c| Chunk {
            buf: c.buf,
            off: c.off + self.sent,
            len: c.len - self.sent,
        })
    }

    /// Records that `n` bytes of the front went out. Returns the buffer to release when the
    /// front chunk is complete.
    pub fn advance(&mut self, n: u32) -> Option<u16> {
        let front = *self.items.front()?;
        let left = front.len - self.sent;
        assert!(n <= left, "advance {n} past the front chunk ({left} left)");
        self.sent += n;
        if self.sent == front.len {
            self.items.pop_front();
            self.sent_total += 1;
            self.bytes -= u64::from(front.len);
            self.sent = 0;
            Some(front.buf)
        } else {
            None
        }
    }

    /// Puts a chunk in front of the queue (a preamble for a link that came up), unless the
    /// front chunk is partly sent; returns whether it did (the caller then retains the buffer).
    /// Not subject to the limits: it is what the output must begin with.
    pub fn push_front(&mut self, c: Chunk) -> bool {
        if self.sent > 0 {
            return false;
        }
        self.bytes += u64::from(c.len);
        self.items.push_front(c);
        true
    }

    /// Whether the front chunk is partly sent.
    pub fn partly_sent(&self) -> bool {
        self.sent > 0
    }

    /// Up to `max` chunks from the front (the first one minus what already went out): what a
    /// gathered write sends next.
    pub fn peek(&self, max: usize) -> impl Iterator<Item = Chunk> + '_ {
        let sent = self.sent;
        self.items.iter().take(max).enumerate().map(move |(i, c)| {
            if i == 0 {
                Chunk {
                    buf: c.buf,
                    off: c.off + sent,
                    len: c.len - sent,
                }
            } else {
                *c
            }
        })
    }

    /// Records that `n` bytes went out, possibly across several chunks; `release` receives
    /// every buffer whose chunk is now complete.
    pub fn advance_bytes(&mut self, mut n: u64, mut release: impl FnMut(u16)) {
        while n > 0 {
            let Some(f) = self.front() else {
                panic!("advance past the end of the queue ({n} bytes left)");
            };
            let step = n.min(u64::from(f.len)) as u32;
            if let Some(b) = self.advance(step) {
                release(b);
            }
            n -= u64::from(step);
        }
    }

    /// Drops the whole front chunk (a datagram that failed to send). Returns its buffer.
    pub fn skip_front(&mut self) -> Option<u16> {
        let front = self.items.pop_front()?;
        self.bytes -= u64::from(front.len);
        self.sent = 0;
        self.sent_total += 1;
        Some(front.buf)
    }

    /// Drops every chunk not yet begun (a partly sent front chunk stays, so that what follows
    /// it later starts at a chunk boundary), returning their buffers.
    pub fn drop_unsent(&mut self) -> Vec<u16> {
        let keep = usize::from(self.sent > 0);
        let dropped: Vec<Chunk> = self.items.drain(keep..).collect();
        self.bytes -= dropped.iter().map(|c| u64::from(c.len)).sum::<u64>();
        dropped.into_iter().map(|c| c.buf).collect()
    }

    /// Empties the queue, returning every buffer it held.
    pub fn clear(&mut self) -> Vec<u16> {
        self.bytes = 0;
        self.sent = 0;
        self.items.drain(..).map(|c| c.buf).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dgrams(lens: &[u32]) -> Vec<Chunk> {
        lens.iter()
            .enumerate()
            .map(|(i, &len)| Chunk {
                buf: i as u16,
                off: 4,
                len,
            })
            .collect()
    }

    #[test]
    fn segment_runs() {
        let run = |l: &[u32]| segment_run(dgrams(l).into_iter(), 64, 65_000);
        assert_eq!(run(&[]), (0, 0));
        assert_eq!(run(&[100]), (1, 100));
        assert_eq!(run(&[100, 100, 100]), (3, 100));
        // A shorter datagram ends the run and belongs to it; a longer one starts the next.
        assert_eq!(run(&[100, 100, 60, 100]), (3, 100));
        assert_eq!(run(&[100, 200, 200]), (1, 100));
        assert_eq!(run(&[60, 100]), (1, 60));
        // Limits: segment count and bytes.
        assert_eq!(
            segment_run(dgrams(&[10; 100]).into_iter(), 64, 65_000),
            (64, 10)
        );
        assert_eq!(
            segment_run(dgrams(&[1000; 100]).into_iter(), 64, 65_000),
            (64, 1000)
        );
        assert_eq!(
            segment_run(dgrams(&[30_000; 3]).into_iter(), 64, 65_000),
            (2, 30_000)
        );
        // Empty datagrams and ones too big for a u16 segment size go alone.
        assert_eq!(run(&[0, 0]), (1, 0));
        assert_eq!(run(&[100, 0]), (1, 100));
        assert_eq!(
            segment_run(dgrams(&[70_000, 70_000]).into_iter(), 64, 200_000),
            (1, 70_000)
        );
    }

    proptest::proptest! {
        /// Cutting a queue into runs and re-cutting each run the way the kernel does gives
        /// back exactly the queued datagrams: boundaries are never moved.
        #[test]
        fn segment_runs_keep_boundaries(lens in proptest::collection::vec(
            proptest::prop_oneof![0u32..4, 1000u32..1003, 60_000u32..70_000], 0..200)) {
            let q = dgrams(&lens);
            let mut i = 0;
            let mut out = Vec::new();
            while i < q.len() {
                let (n, seg) = segment_run(q[i..].iter().copied(), 64, 65_000);
                proptest::prop_assert!((1..=64).contains(&n));
                let total: u32 = q[i..i + n].iter().map(|c| c.len).sum();
                if n > 1 {
                    proptest::prop_assert!(total <= 65_000 && seg <= u32::from(u16::MAX));
                    // The kernel's cut: seg-byte datagrams and a shorter tail.
                    let mut left = total;
                    while left > 0 {
                        out.push(left.min(seg));
                        left -= left.min(seg);
                    }
                } else {
                    out.push(q[i].len);
                }
                i += n;
            }
            proptest::prop_assert_eq!(out, lens);
        }
    }
    use proptest::prelude::*;

    fn c(buf: u16, len: u32) -> Chunk {
        Chunk { buf, off: 4, len }
    }

    #[test]
    fn drop_unsent_keeps_a_partly_sent_front() {
        let mut q = OutQueue::new(OnSlow::Block, 1 << 20, 16);
        for i in 1..=3 {
            q.offer(c(i, 100));
        }
        assert_eq!(q.drop_unsent(), [1, 2, 3]);
        assert!(q.is_empty());
        assert_eq!(q.backlog(), 0);
        for i in 1..=3 {
            q.offer(c(i, 100));
        }
        q.advance(40);
        assert_eq!(q.drop_unsent(), [2, 3]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.backlog(), 60);
        assert_eq!(q.advance(60), Some(1));
        assert!(q.is_empty());
    }

    #[test]
    fn short_writes_resume_mid_chunk() {
        let mut q = OutQueue::new(OnSlow::Block, 1 << 20, 16);
        assert_eq!(q.offer(c(1, 100)), Offer::Queued);
        assert_eq!(q.offer(c(2, 50)), Offer::Queued);
        assert_eq!(q.advance(30), None);
        assert_eq!(
            q.front(),
            Some(Chunk {
                buf: 1,
                off: 34,
                len: 70
            })
        );
        assert_eq!(q.backlog(), 120);
        assert_eq!(q.advance(70), Some(1));
        assert_eq!(
            q.front(),
            Some(Chunk {
                buf: 2,
                off: 4,
                len: 50
            })
        );
        assert_eq!(q.advance(50), Some(2));
        assert!(q.is_empty());
        assert_eq!(q.backlog(), 0);
    }

    #[test]
    fn policies_at_the_limit() {
        for (policy, want) in [
            (OnSlow::Drop, Offer::Dropped),
            (OnSlow::Disconnect, Offer::Disconnect),
            (OnSlow::Block, Offer::QueuedBlocking),
        ] {
            let mut q = OutQueue::new(policy, 250, 16);
            assert_eq!(q.offer(c(1, 100)), Offer::Queued);
            assert_eq!(q.offer(c(2, 100)), Offer::Queued);
            assert_eq!(q.offer(c(3, 100)), want, "{policy:?}");
        }
        // The buffer limit applies too: tiny datagrams each pin a buffer.
        let mut q = OutQueue::new(OnSlow::Drop, 1 << 30, 2);
        assert_eq!(q.offer(c(1, 1)), Offer::Queued);
        assert_eq!(q.offer(c(2, 1)), Offer::Queued);
        assert_eq!(q.offer(c(3, 1)), Offer::Dropped);
        assert_eq!(q.limit_hit(), "2 pool buffers queued, its quota");
        let mut q = OutQueue::new(OnSlow::Disconnect, 150, 16);
        assert_eq!(q.offer(c(1, 100)), Offer::Queued);
        assert_eq!(q.offer(c(2, 100)), Offer::Disconnect);
        assert_eq!(q.limit_hit(), "backlog over 150 bytes");
    }

    #[test]
    fn resume_hysteresis() {
        let mut q = OutQueue::new(OnSlow::Block, 400, 64);
        for i in 0..5 {
            q.offer(c(i, 100));
        }
        assert!(q.is_over_limit());
        assert!(!q.may_resume());
        q.advance(100);
        q.advance(100);
        assert!(!q.may_resume());
        q.advance(100);
        assert!(q.may_resume());
    }

    #[test]
    fn byte_limit_edge_per_policy() {
        for (policy, over) in [
            (OnSlow::Drop, Offer::Dropped),
            (OnSlow::Disconnect, Offer::Disconnect),
            (OnSlow::Block, Offer::QueuedBlocking),
        ] {
            let mut q = OutQueue::new(policy, 300, 16);
            assert_eq!(q.offer(c(1, 100)), Offer::Queued, "{policy:?}");
            assert_eq!(q.offer(c(2, 100)), Offer::Queued, "{policy:?}");
            // Exactly at the limit is still under it.
            assert_eq!(q.offer(c(3, 100)), Offer::Queued, "{policy:?}");
            assert_eq!(q.backlog(), 300);
            assert!(!q.is_over_limit(), "{policy:?}");
            // One byte over.
            assert_eq!(q.offer(c(4, 1)), over, "{policy:?}");
            let (len, backlog) = if policy == OnSlow::Block {
                (4, 301)
            } else {
                (3, 300)
            };
            assert_eq!((q.len(), q.backlog()), (len, backlog), "{policy:?}");
            assert_eq!(q.is_over_limit(), policy == OnSlow::Block, "{policy:?}");
            if policy != OnSlow::Block {
                assert_eq!(q.limit_hit(), "backlog over 300 bytes");
            }

            // Bytes already handed to the kernel (a short write) no longer count: the front
            // chunk half sent leaves room for exactly its sent half.
            let mut q = OutQueue::new(policy, 300, 16);
            for i in 0..3 {
                assert_eq!(q.offer(c(i, 100)), Offer::Queued);
            }
            assert_eq!(q.advance(50), None);
            assert_eq!(q.backlog(), 250);
            assert_eq!(q.offer(c(3, 50)), Offer::Queued, "{policy:?}");
            assert_eq!(q.backlog(), 300);
            assert_eq!(q.offer(c(4, 1)), over, "{policy:?}");
        }
    }

    #[test]
    fn buffer_quota_edge_per_policy() {
        for (policy, over) in [
            (OnSlow::Drop, Offer::Dropped),
            (OnSlow::Disconnect, Offer::Disconnect),
            (OnSlow::Block, Offer::QueuedBlocking),
        ] {
            let mut q = OutQueue::new(policy, 1 << 30, 3);
            assert_eq!(q.offer(c(1, 1)), Offer::Queued, "{policy:?}");
            assert_eq!(q.offer(c(2, 1)), Offer::Queued, "{policy:?}");
            // The chunk that fills the quota exactly is taken.
            assert_eq!(q.offer(c(3, 1)), Offer::Queued, "{policy:?}");
            assert!(!q.is_over_limit(), "{policy:?}");
            assert_eq!(q.offer(c(4, 1)), over, "{policy:?}");
            if policy == OnSlow::Block {
                assert_eq!((q.len(), q.backlog()), (4, 4));
                assert!(q.is_over_limit());
                assert_eq!(q.limit_hit(), "4 pool buffers queued, its quota");
            } else {
                assert_eq!((q.len(), q.backlog()), (3, 3), "{policy:?}");
                assert_eq!(q.limit_hit(), "3 pool buffers queued, its quota");
            }
            // A partly sent front chunk still holds its buffer: no room is made until the
            // chunk is complete.
            let mut q = OutQueue::new(policy, 1 << 30, 2);
            q.offer(c(1, 10));
            q.offer(c(2, 10));
            assert_eq!(q.advance(9), None);
            assert_eq!(q.offer(c(3, 1)), over, "{policy:?}");
        }
        // A quota of 0 is taken as 1: one chunk, never none.
        let mut q = OutQueue::new(OnSlow::Drop, 1 << 30, 0);
        assert_eq!(q.max_buffers(), 1);
        assert_eq!(q.offer(c(1, 1)), Offer::Queued);
        assert_eq!(q.offer(c(2, 1)), Offer::Dropped);
    }

    #[test]
    fn may_resume_at_exactly_half() {
        // Bytes: half of 400 is 200, and 200 resumes.
        let mut q = OutQueue::new(OnSlow::Block, 400, 64);
        for i in 0..3 {
            q.offer(c(i, 100));
        }
        q.advance(99);
        assert_eq!(q.backlog(), 201);
        assert!(!q.may_resume());
        q.advance(1);
        assert_eq!(q.backlog(), 200);
        assert!(q.may_resume());
        // An odd limit rounds half down: of 401, 201 bytes stay blocked and 200 resume.
        let mut q = OutQueue::new(OnSlow::Block, 401, 64);
        q.offer(c(1, 201));
        assert!(!q.may_resume());
        q.advance(1);
        assert!(q.may_resume());
        // Buffers: half of a quota of 4 is 2, of 5 also 2 (a partly sent chunk still counts).
        for quota in [4, 5] {
            let mut q = OutQueue::new(OnSlow::Block, 1 << 30, quota);
            for i in 0..3 {
                q.offer(c(i, 10));
            }
            assert!(!q.may_resume(), "quota {quota}");
            q.advance(9);
            assert!(!q.may_resume(), "quota {quota}");
            q.advance(1);
            assert_eq!(q.len(), 2);
            assert!(q.may_resume(), "quota {quota}");
        }
        // Both measures must be at or under half: bytes low but buffers high does not resume.
        let mut q = OutQueue::new(OnSlow::Block, 1 << 30, 4);
        for i in 0..3 {
            q.offer(c(i, 1));
        }
        assert!(q.backlog() <= (1 << 30) / 2);
        assert!(!q.may_resume());
    }

    #[test]
    fn gathered_writes_span_chunks() {
        let mut q = OutQueue::new(OnSlow::Block, 1 << 20, 16);
        for i in 0..4 {
            q.offer(c(i, 10));
        }
        q.advance(3);
        let v: Vec<Chunk> = q.peek(3).collect();
        assert_eq!(v.len(), 3);
        assert_eq!((v[0].off, v[0].len), (7, 7));
        let mut back = Vec::new();
        q.advance_bytes(7 + 10 + 4, |b| back.push(b));
        assert_eq!(back, vec![0, 1]);
        assert_eq!(
            q.front(),
            Some(Chunk {
                buf: 2,
                off: 8,
                len: 6
            })
        );
    }

    proptest! {
        /// Whatever the write sizes, every buffer queued comes back exactly once, in order,
        /// and the backlog accounts for every byte.
        #[test]
        fn buffers_come_back_once(lens in proptest::collection::vec(1u32..5000, 1..40),
                                  writes in proptest::collection::vec(1u32..7000, 1..400)) {
            let mut q = OutQueue::new(OnSlow::Block, u64::MAX, 1000);
            for (i, l) in lens.iter().enumerate() {
                q.offer(c(i as u16, *l));
            }
            let total: u64 = lens.iter().map(|l| u64::from(*l)).sum();
            let mut back = Vec::new();
            let mut sent = 0u64;
            for w in writes.iter().cycle().take(10_000) {
                let Some(f) = q.front() else { break };
                let n = (*w).min(f.len);
                sent += u64::from(n);
                if let Some(b) = q.advance(n) { back.push(b); }
                prop_assert_eq!(q.backlog(), total - sent);
            }
            prop_assert_eq!(back, (0..lens.len() as u16).collect::<Vec<_>>());
        }
    }
}
