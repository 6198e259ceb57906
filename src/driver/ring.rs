//! The one io_uring ring: the one place submissions are written, the storage their pointers
//! point into, the provided-buffer rings' memory, and the reaping of completions. Building the
//! ring and probing the kernel is [`super::setup`].
//!
//! Owns: the ring, the buffer arena and the provided-buffer rings (so the arena and the rings'
//! memory outlive every submission that points into them), and the iovec and msghdr storage of
//! operations in flight, keyed by their `user_data`. Nothing else calls into io_uring. It never
//! interprets a completion: the engine does, through the token in `user_data`.
//!
//! Safety argument for [`Ring::submit_effects`] and the other pushes, the only places an SQE
//! is handed to the kernel: every pointer an SQE carries refers either to (a) the arena, which
//! is mapped for the life of the `Ring` and whose buffers the engine has put in the `Kernel`
//! state (reads) or holds a reference to until the completion (writes; see
//! [`crate::engine::buffers`]), (b) storage boxed inside the `Ring` itself (the timer's
//! timespec, the signal pipe's read buffer and the msghdr template of multishot receives),
//! allocated once and never moved or freed while the ring lives, or (c) an `OpMem` (iovecs,
//! and a msghdr with its UDP_SEGMENT control message) taken for that one submission and kept,
//! boxed and unmoved, in `held` until the submission's final completion is reaped. A splice or
//! tee carries no pointer: only two descriptors and a length. Descriptors are kept open until
//! every operation on them has completed (the engine counts in-flight operations per endpoint
//! and asks to close only then). On drop, the ring waits a little for what is still in flight,
//! and if anything fails to arrive it leaks the arena, the buffer rings and the storage rather
//! than free memory the kernel could still use.
//!
//! Provided-buffer rings ([`super::bufring`]): a multishot RECVMSG names a buffer group, and
//! the kernel picks a buffer from that group's ring for each datagram. Which buffers are
//! published, and when a ring may close, is the engine's ([`crate::engine::rings`]); this
//! module maps, registers, publishes ([`RingSys::provide`]) and unregisters as told, and the
//! io_uring fd is closed before the mappings are dropped (field order).

use super::arena::{Addrs, Arena};
use super::bufring::BufRing;
use crate::config::SqpollMode;
use crate::engine::buffers::BufId;
use crate::engine::caps::Caps;
use crate::engine::io::{Completion, Effects, Op, Submission};
use crate::engine::outq::Chunk;
use crate::engine::token::{OpKind, Token};
use crate::engine::GSO_SEGMENTS;
use io_uring::{opcode, squeue, types, IoUring};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// How to build the ring.
#[derive(Clone, Debug)]
pub struct RingOptions {
    pub entries: u32,
    pub sqpoll: SqpollMode,
    pub sqpoll_idle_ms: u32,
    pub sqpoll_cpu: Option<u32>,
    pub baseline: bool,
    /// Try multishot accept (skipped by `probe` when only reporting).
    pub trial_multishot: bool,
}

/// The memory one submission's pointers point into: iovecs for a scattered read or gathered
/// write, and a msghdr with its UDP_SEGMENT control message for a segmented send. Boxed so
/// that its address does not change while it is held.
pub(super) struct OpMem {
    hdr: libc::msghdr,
    /// Control buffer: one cmsghdr with a u16, aligned for cmsghdr on every architecture.
    ctrl: [u64; 4],
    iov: [libc::iovec; GSO_SEGMENTS],
}

impl OpMem {
    fn new() -> Box<OpMem> {
        Box::new(OpMem {
            // SAFETY: msghdr is a plain C struct (pointers, lengths, flags, and private padding
            // on some libcs) for which all-zero bytes are a valid value.
            hdr: unsafe { std::mem::zeroed() },
            ctrl: [0; 4],
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; GSO_SEGMENTS],
        })
    }

    /// Describes `chunks` (at most [`GSO_SEGMENTS`]) as iovecs; returns how many.
    fn fill_iov(&mut self, addrs: &Addrs, chunks: &[Chunk]) -> u32 {
        assert!(
            chunks.len() <= GSO_SEGMENTS,
            "too many chunks for one operation"
        );
        for (slot, c) in self.iov.iter_mut().zip(chunks) {
            slot.iov_base = addrs.addr(c.buf, c.off).cast();
            slot.iov_len = c.len as usize;
        }
        chunks.len() as u32
    }

    /// Describes `chunks` as one send cut into datagrams of `seg` bytes: every chunk but the
    /// last must be exactly `seg` bytes, the last at most `seg` (the engine forms such runs;
    /// this is checked, as a wrong run would re-cut datagrams).
    fn fill_gso(&mut self, addrs: &Addrs, chunks: &[Chunk], seg: u16) -> *const libc::msghdr {
        let mut last_short = false;
        for c in chunks {
            assert!(
                !last_short && c.len <= u32::from(seg),
                "segmented send: datagram sizes do not form a run"
            );
            last_short = c.len < u32::from(seg);
        }
        let n = self.fill_iov(addrs, chunks);
        let m = self;
        m.hdr.msg_name = std::ptr::null_mut();
        m.hdr.msg_namelen = 0;
        m.hdr.msg_iov = m.iov.as_mut_ptr();
        m.hdr.msg_iovlen = n as _;
        m.hdr.msg_flags = 0;
        m.ctrl = [0; 4];
        m.hdr.msg_control = m.ctrl.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic. CMSG_FIRSTHDR reads only the msghdr
        // fields set above and returns a pointer into `ctrl`, which is 32 bytes and 8-aligned:
        // enough for one cmsghdr (16 bytes on 64-bit, 12 on 32-bit) plus a u16 padded to
        // alignment (CMSG_SPACE(2) is 24 or 16). CMSG_DATA points just past that header, so the
        // u16 write stays inside `ctrl` (unaligned write, as cmsg data may be).
        unsafe {
            m.hdr.msg_controllen = libc::CMSG_SPACE(2) as _;
            let c = libc::CMSG_FIRSTHDR(&m.hdr);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(2) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
        }
        &m.hdr
    }
}

pub struct Ring {
    // Field order matters: the ring is dropped before the arena, the provided-buffer rings and
    // the operation storage it points into.
    pub(super) uring: IoUring,
    pub(super) arena: Arena,
    pub(super) addrs: Addrs,
    /// Provided-buffer rings by buffer group id (`None`: a free id).
    pub(super) bufrings: Vec<Option<BufRing>>,
    /// The msghdr every multishot RECVMSG is prepared with: no name, no control data, no
    /// iovec (the buffer comes from the ring), so a buffer holds the kernel's 16-byte
    /// `io_uring_recvmsg_out` header and then the payload.
    pub(super) msghdr: Box<libc::msghdr>,
    pub(super) tick: Box<types::Timespec>,
    pub(super) sigbuf: Box<[u8; 64]>,
    /// Entries the submission queue had no room for, each with whether it links to the next;
    /// a chain is only ever pushed whole.
    pub(super) overflow: VecDeque<(squeue::Entry, bool)>,
    /// Scratch of chain pushes (kept for its capacity).
    pub(super) chain: Vec<squeue::Entry>,
    pub(super) in_flight: usize,
    /// Storage of submissions in flight, by `user_data`; and spare storage.
    pub(super) held: HashMap<u64, Box<OpMem>>,
    // Boxed so that storage keeps its address while it moves between `held` and `spare`.
    #[allow(clippy::vec_box)]
    pub(super) spare: Vec<Box<OpMem>>,
    pub caps: Caps,
}

/// The part of the ring the engine's [`crate::engine::io::Sys`] calls reach (provided-buffer
/// rings, the io-wq cap), borrowed beside the arena.
pub struct RingSys<'a> {
    uring: &'a IoUring,
    bufrings: &'a mut Vec<Option<BufRing>>,
    addrs: Addrs,
}

impl RingSys<'_> {
    /// Maps and registers a ring of `entries` slots as buffer group `group`.
    pub fn open_buf_ring(&mut self, group: u16, entries: u16) -> bool {
        let br = match BufRing::new(entries) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("cannot map a provided-buffer ring of {entries} entries: {e}");
                return false;
            }
        };
        // SAFETY: `br` is stored in `self.bufrings` below and stays there, mapped, until
        // close_buf_ring unregisters it (or the ring is dropped, io_uring fd first).
        let reg = unsafe {
            self.uring
                .submitter()
                .register_buf_ring_with_flags(br.addr(), br.entries(), group, 0)
        };
        if let Err(e) = reg {
            log::warn!("cannot register a provided-buffer ring: {e}; using single-shot receives");
            return false;
        }
        let g = usize::from(group);
        if self.bufrings.len() <= g {
            self.bufrings.resize_with(g + 1, || None);
        }
        self.bufrings[g] = Some(br);
        true
    }

    /// Publishes `bufs` in the ring of `group`.
    pub fn provide(&mut self, group: u16, bufs: &[BufId]) {
        let Some(br) = self
            .bufrings
            .get_mut(usize::from(group))
            .and_then(|r| r.as_mut())
        else {
            return;
        };
        for &id in bufs {
            br.stage(self.addrs.addr(id, 0), self.addrs.size_of(id), id);
        }
        br.publish();
    }

    /// Unregisters the ring of `group`; false (its memory kept for good) when the kernel
    /// refuses.
    pub fn close_buf_ring(&mut self, group: u16) -> bool {
        let Some(br) = self
            .bufrings
            .get_mut(usize::from(group))
            .and_then(|r| r.take())
        else {
            return true;
        };
        if let Err(e) = self.uring.submitter().unregister_buf_ring(group) {
            log::warn!("cannot unregister provided-buffer ring {group}: {e}");
            std::mem::forget(br);
            return false;
        }
        true
    }

    /// Caps the ring's unbounded io-wq workers (those that run socket splices) at `n` per NUMA
    /// node (IORING_REGISTER_IOWQ_MAX_WORKERS, Linux 5.15+).
    pub fn cap_unbounded_workers(&mut self, n: u32) -> io::Result<()> {
        // 0 leaves the bounded (file I/O) limit as it is.
        let mut max = [0, n];
        self.uring.submitter().register_iowq_max_workers(&mut max)
    }
}

impl Ring {
    /// The arena (what the engine reads and writes) beside the calls the engine's `Sys`
    /// reaches.
    pub fn split(&mut self) -> (&mut Arena, RingSys<'_>) {
        (
            &mut self.arena,
            RingSys {
                uring: &self.uring,
                bufrings: &mut self.bufrings,
                addrs: self.addrs,
            },
        )
    }

    /// Submissions whose final completion has not arrived yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues the daemon's timer (one tick from now).
    pub fn push_tick(&mut self) {
        let e = opcode::Timeout::new(&*self.tick as *const types::Timespec)
            .build()
            .user_data(Token::daemon(OpKind::Tick).encode());
        self.push_entries(&[e]);
    }

    /// Queues a read of the signal pipe.
    pub fn push_signal_read(&mut self, fd: RawFd) {
        let e = opcode::Read::new(types::Fd(fd), self.sigbuf.as_mut_ptr(), 64)
            .build()
            .user_data(Token::daemon(OpKind::Signal).encode());
        self.push_entries(&[e]);
    }

    /// Queues one operation outside the engine (the trials of [`super::setup`]).
    pub(super) fn push_op(&mut self, op: Op, token: Token) {
        let e = self.build(&op, token, &[]);
        self.push_entries(&[e]);
    }

    /// Queues everything the engine asked for in `fx`, chains whole, and clears it.
    pub fn submit_effects(&mut self, fx: &mut Effects) {
        let mut chain = std::mem::take(&mut self.chain);
        for Submission { op, token, link } in fx.subs.drain(..) {
            let e = self.build(&op, token, &fx.chunks);
            chain.push(if link {
                e.flags(squeue::Flags::IO_LINK)
            } else {
                e
            });
            if !link {
                self.push_entries(&chain);
                chain.clear();
            }
        }
        debug_assert!(
            chain.is_empty(),
            "a chain's last submission links to nothing"
        );
        if !chain.is_empty() {
            self.push_entries(&chain);
            chain.clear();
        }
        fx.chunks.clear();
        self.chain = chain;
    }

    /// Takes storage for the submission tagged `ud`, held until its final completion.
    fn hold(&mut self, ud: u64) -> &mut OpMem {
        let m = self.spare.pop().unwrap_or_else(OpMem::new);
        let prev = self.held.insert(ud, m);
        // The engine keeps at most one gathered write, segmented send or scattered read in
        // flight per endpoint, and their tags differ (a spool's writes in flight each carry
        // their slot in the generation field); a second one would share storage.
        assert!(prev.is_none(), "two operations with storage share a tag");
        self.held.get_mut(&ud).expect("just inserted")
    }

    /// Turns an operation into its submission entry tagged with `token`.
    fn build(&mut self, op: &Op, token: Token, chunks: &[Chunk]) -> squeue::Entry {
        let ud = token.encode();
        let registered = self.caps.registered_buffers;
        let addrs = self.addrs;
        let e = match *op {
            Op::RecvDatagram { fd, buf, off, len } => {
                opcode::Recv::new(types::Fd(fd), addrs.addr(buf, off), len)
                    .flags(libc::MSG_TRUNC)
                    .build()
            }
            Op::ReadStream { fd, buf, off, len } => {
                let ptr = addrs.addr(buf, off);
                if registered {
                    opcode::ReadFixed::new(types::Fd(fd), ptr, len, buf).build()
                } else {
                    opcode::Read::new(types::Fd(fd), ptr, len).build()
                }
            }
            Op::ReadvStream { fd, bufs } => {
                let span = &chunks[bufs.start as usize..(bufs.start + bufs.n) as usize];
                let m = self.hold(ud);
                let n = m.fill_iov(&addrs, span);
                opcode::Readv::new(types::Fd(fd), m.iov.as_ptr(), n).build()
            }
            Op::Write { fd, chunk, socket } => {
                let ptr = addrs.addr(chunk.buf, chunk.off);
                if registered {
                    opcode::WriteFixed::new(types::Fd(fd), ptr, chunk.len, chunk.buf).build()
                } else if socket {
                    opcode::Send::new(types::Fd(fd), ptr, chunk.len).build()
                } else {
                    opcode::Write::new(types::Fd(fd), ptr, chunk.len).build()
                }
            }
            Op::WriteAt { fd, chunk, offset } => {
                let ptr = addrs.addr(chunk.buf, chunk.off);
                if registered {
                    opcode::WriteFixed::new(types::Fd(fd), ptr, chunk.len, chunk.buf)
                        .offset(offset)
                        .build()
                } else {
                    opcode::Write::new(types::Fd(fd), ptr, chunk.len)
                        .offset(offset)
                        .build()
                }
            }
            Op::WritevAt {
                fd,
                chunks: span,
                offset,
            } => {
                let span = &chunks[span.start as usize..(span.start + span.n) as usize];
                let m = self.hold(ud);
                let n = m.fill_iov(&addrs, span);
                opcode::Writev::new(types::Fd(fd), m.iov.as_ptr(), n)
                    .offset(offset)
                    .build()
            }
            Op::ReadAt {
                fd,
                buf,
                len,
                offset,
            } => {
                let ptr = addrs.addr(buf, 0);
                if registered {
                    opcode::ReadFixed::new(types::Fd(fd), ptr, len, buf)
                        .offset(offset)
                        .build()
                } else {
                    opcode::Read::new(types::Fd(fd), ptr, len)
                        .offset(offset)
                        .build()
                }
            }
            Op::Fsync { fd } => opcode::Fsync::new(types::Fd(fd)).build(),
            Op::Writev { fd, chunks: span } => {
                let span = &chunks[span.start as usize..(span.start + span.n) as usize];
                let m = self.hold(ud);
                let n = m.fill_iov(&addrs, span);
                opcode::Writev::new(types::Fd(fd), m.iov.as_ptr(), n).build()
            }
            Op::SendZc { fd, chunk } => {
                let ptr = addrs.addr(chunk.buf, chunk.off);
                opcode::SendZc::new(types::Fd(fd), ptr, chunk.len)
                    .buf_index(registered.then_some(chunk.buf))
                    .build()
            }
            Op::SendGso {
                fd,
                chunks: span,
                seg,
            } => {
                let span = &chunks[span.start as usize..(span.start + span.n) as usize];
                let m = self.hold(ud);
                let hdr = m.fill_gso(&addrs, span, seg);
                opcode::SendMsg::new(types::Fd(fd), hdr).build()
            }
            Op::RecvMulti { fd, group } => {
                opcode::RecvMsgMulti::new(types::Fd(fd), &*self.msghdr as *const _, group).build()
            }
            Op::Accept { fd } => {
                if self.caps.multishot_accept {
                    opcode::AcceptMulti::new(types::Fd(fd))
                        .flags(libc::SOCK_CLOEXEC)
                        .build()
                } else {
                    opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                        .flags(libc::SOCK_CLOEXEC)
                        .build()
                }
            }
            Op::PollHangup { fd } => {
                opcode::PollAdd::new(types::Fd(fd), (libc::POLLIN | libc::POLLRDHUP) as u32).build()
            }
            Op::PollOut { fd } => opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32).build(),
            Op::PollIn { fd } => opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build(),
            Op::Cancel { target } => opcode::AsyncCancel::new(target.encode()).build(),
            Op::Splice { fd_in, fd_out, len } => {
                opcode::Splice::new(types::Fd(fd_in), -1, types::Fd(fd_out), -1, len)
                    .flags(libc::SPLICE_F_MOVE)
                    .build()
            }
            Op::Tee { fd_in, fd_out, len } => {
                // SPLICE_F_NONBLOCK: the engine sized it so that it never has to wait, and a
                // wait would be a broken invariant it wants reported, not hidden.
                opcode::Tee::new(types::Fd(fd_in), types::Fd(fd_out), len)
                    .flags(libc::SPLICE_F_NONBLOCK)
                    .build()
            }
        };
        e.user_data(ud)
    }

    /// Queues entries that belong together (one entry, or one linked chain): all into the
    /// submission queue at once, or all behind whatever already waits for room.
    pub(super) fn push_entries(&mut self, entries: &[squeue::Entry]) {
        self.in_flight += entries.len();
        if self.overflow.is_empty() {
            // SAFETY: see the module documentation: every pointer in these entries is into
            // the arena or into storage held by this Ring, alive and unmoved until the
            // completion. push_multiple writes all entries and publishes the tail once, or
            // writes nothing.
            if unsafe { self.uring.submission().push_multiple(entries) }.is_ok() {
                return;
            }
        }
        let last = entries.len() - 1;
        for (i, e) in entries.iter().enumerate() {
            self.overflow.push_back((e.clone(), i < last));
        }
    }

    fn drain_overflow(&mut self) {
        let mut chain = std::mem::take(&mut self.chain);
        while !self.overflow.is_empty() {
            chain.clear();
            let n = self
                .overflow
                .iter()
                .position(|(_, linked)| !linked)
                .map_or(self.overflow.len(), |i| i + 1);
            chain.extend(self.overflow.iter().take(n).map(|(e, _)| e.clone()));
            // SAFETY: as in push_entries.
            if unsafe { self.uring.submission().push_multiple(&chain) }.is_err() {
                break;
            }
            self.overflow.drain(..n);
        }
        chain.clear();
        self.chain = chain;
    }

    /// Submits what is queued and waits for at least one completion (or `timeout`).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        loop {
            self.drain_overflow();
            let r = match timeout {
                Some(t) if self.caps.feat_ext_arg => {
                    let ts = types::Timespec::from(t);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    self.uring.submitter().submit_with_args(1, &args)
                }
                _ => self.uring.submit_and_wait(1),
            };
            match r {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // Completions are waiting in the kernel's overflow list: reap, then enter again.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            if !self.overflow.is_empty() && self.uring.completion().is_empty() {
                // The SQ was full; with SQPOLL, wait for the kernel thread to make room.
                if self.caps.sqpoll {
                    let _ = self.uring.submitter().squeue_wait();
                }
                continue;
            }
            return Ok(());
        }
    }

    /// Submits without waiting (SQPOLL: usually no system call at all).
    pub fn submit(&mut self) -> io::Result<()> {
        self.drain_overflow();
        match self.uring.submit() {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EINTR)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves every available completion into `out`; the storage of a submission whose final
    /// completion this is becomes spare.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        for c in self.uring.completion() {
            let more = io_uring::cqueue::more(c.flags());
            if !more {
                self.in_flight = self.in_flight.saturating_sub(1);
                if let Some(m) = self.held.remove(&c.user_data()) {
                    self.spare.push(m);
                }
            }
            out.push(Completion {
                user_data: c.user_data(),
                res: c.result(),
                flags: c.flags(),
            });
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.in_flight == 0 {
            return;
        }
        // The engine cancels its endpoints' operations before it lets the ring go; wait a
        // little for the last completions, and if some are still owed after that, leak the
        // arena, the buffer rings and the storage: the kernel may yet use them.
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        let mut out = Vec::new();
        while self.in_flight > 0 && std::time::Instant::now() < deadline {
            if self.wait(Some(Duration::from_millis(50))).is_err() {
                break;
            }
            out.clear();
            self.reap(&mut out);
        }
        if self.in_flight > 0 {
            if let Ok(empty) = Arena::empty() {
                std::mem::forget(std::mem::replace(&mut self.arena, empty));
            }
            std::mem::forget(std::mem::take(&mut self.bufrings));
            std::mem::forget(std::mem::take(&mut self.held));
        }
    }
}
