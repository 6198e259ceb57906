//! The one io_uring ring: setup with SQPOLL, feature probing, fixed-buffer registration, the
//! provided-buffer rings of multishot UDP receives, the one place submissions are pushed, and
//! the reaping of completions.
//!
//! Owns: the ring, the buffer pool and the provided-buffer rings (so the pool and the rings'
//! memory outlive every submission that points into them). Nothing else in the daemon calls
//! into io_uring. It never interprets a completion:
//! [`crate::driver::daemon`] does, through the [`crate::engine::token::Token`] in `user_data`.
//!
//! Safety argument for [`Ring::push`], the only place an SQE is handed to the kernel: every
//! pointer an SQE carries refers either to (a) the pool arena, which is mapped for the life of
//! the `Ring` and whose buffers the caller has put in the `Kernel` state (reads) or holds a
//! reference to until the completion (writes), (b) storage boxed inside the `Ring` itself
//! (the timer's timespec, the signal pipe's read buffer and the msghdr template of multishot
//! receives), allocated once and never moved or freed while the ring lives, or (c) an
//! endpoint's boxed [`Iovecs`] (gathered writes) or [`GsoMsg`] (segmented UDP sends: msghdr,
//! control message and iovecs), which the daemon frees only with its endpoint, once that
//! endpoint's in-flight count is zero, and does not refill while a write of that endpoint is in
//! flight. A splice ([`Sqe::Splice`]) carries no pointer: only two descriptors and a length.
//! File descriptors are kept open by their owners until every operation on them has completed
//! (the daemon counts in-flight operations per endpoint). On
//! drop, the ring cancels what is still in flight and waits for those completions, and if any
//! fail to arrive it leaks the pool rather than unmap memory the kernel could still write.
//!
//! Provided-buffer rings ([`crate::driver::bufring`]): a multishot RECVMSG names a buffer group, not a
//! buffer, and the kernel picks a buffer from that group's ring for each datagram. Every buffer
//! published in a ring is a pool buffer in the pool's `Provided` state (the kernel's); a
//! completion hands it back ([`Ring::take_datagram`]), and once its last reference is released
//! the pool queues it as `Returning` and [`Ring::recycle`] publishes it in its ring again, before
//! every submit. A ring's mapping is registered for as long as it is in `bufrings`: it is
//! unregistered ([`Ring::close_buf_ring`]) only once the multishot receive that picks from it has
//! posted its final completion, and the io_uring fd is closed before the mappings are dropped
//! (field order). CQ overflow: each completion of a multishot receive consumes one buffer of
//! its ring, so the completions one receive can post before it ends with -ENOBUFS are bounded
//! by the buffers its ring holds, and the buffers of all rings together stay within half the
//! CQ ([`Ring::open_buf_ring`], [`Ring::grow_buf_ring`]).

use crate::config::SqpollMode;
use crate::driver::bufring::BufRing;
use crate::driver::pool::{BufId, BufferPool, Class};
use crate::engine::caps::Caps;
use crate::engine::outq::Chunk;
use crate::engine::token::{OpKind, Token};
use crate::engine::zerocopy::{ZcRecord, ZcTable};
use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};
use std::collections::VecDeque;
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
    pub buffer_size: u32,
    pub buffer_count: u32,
    pub datagram_size: u32,
    pub datagram_count: u32,
    /// Try multishot accept (skipped by `probe` when only reporting).
    pub trial_multishot: bool,
}

/// One completion, copied out of the ring.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub user_data: u64,
    pub res: i32,
    pub flags: u32,
}

impl Completion {
    /// More completions will follow for the same submission (multishot).
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }
}

/// An operation to submit. Buffers are named by pool index; the ring turns them into addresses.
#[derive(Clone, Copy, Debug)]
pub enum Sqe {
    /// Receive one datagram into `buf` at `off`; with MSG_TRUNC the result is the datagram's
    /// real length even when it did not fit.
    RecvDatagram {
        fd: RawFd,
        buf: BufId,
        off: u32,
        len: u32,
    },
    /// Read the next bytes of a stream into `buf` at `off`.
    ReadStream {
        fd: RawFd,
        buf: BufId,
        off: u32,
        len: u32,
    },
    /// Scattered read of the next bytes of a stream into the whole buffers described by `iov`
    /// (an array owned by the endpoint, filled with [`Iovecs::fill`]).
    ReadvStream { fd: RawFd, iov: IovArray, n: u32 },
    /// Send a chunk on a socket or append it to a file.
    Write {
        fd: RawFd,
        chunk: Chunk,
        socket: bool,
    },
    /// Gathered write of several chunks described by `iov`, an array owned by the endpoint.
    Writev { fd: RawFd, iov: IovArray, n: u32 },
    /// Zero-copy send of one chunk on a TCP socket (Linux 6.0+). The chunk's buffer must be
    /// held by a record of [`Ring::zc_begin`], ended by the send's notification.
    SendZc { fd: RawFd, chunk: Chunk },
    /// One segmented UDP send (UDP_SEGMENT): the datagrams of a [`GsoMsg`] the endpoint owns,
    /// filled with [`GsoMsg::fill`]; the kernel splits it back into those datagrams.
    SendGso { fd: RawFd, msg: MsgPtr },
    /// Receive datagrams, one completion each, into buffers the kernel picks from the
    /// provided-buffer ring of `group` (multishot RECVMSG, Linux 6.0+; only after
    /// [`Ring::open_buf_ring`] gave `group`).
    RecvMulti { fd: RawFd, group: u16 },
    /// Accept a connection (multishot where the kernel has it and the caller asks).
    Accept { fd: RawFd, multishot: bool },
    /// Wait until `fd` is writable (a non-blocking connect finished, or a splice may go on).
    PollOut { fd: RawFd },
    /// Wait until `fd` is readable (a splice from a non-blocking socket may go on).
    PollIn { fd: RawFd },
    /// Wait until the peer of `fd` hangs up or half-closes.
    PollHangup { fd: RawFd },
    /// The periodic timer (100 ms).
    Tick,
    /// Read from the signal pipe.
    ReadSignal { fd: RawFd },
    /// Cancel the operation tagged `user_data`.
    Cancel { user_data: u64 },
    /// Move up to `len` bytes from `fd_in` to `fd_out`, one of them a pipe (IORING_OP_SPLICE,
    /// no offsets). It carries no pointer at all: only descriptors, which their owners keep
    /// open until its completion.
    Splice {
        fd_in: RawFd,
        fd_out: RawFd,
        len: u32,
    },
    /// Duplicate `len` bytes from the head of pipe `fd_in` into pipe `fd_out` without
    /// consuming them (IORING_OP_TEE, SPLICE_F_NONBLOCK: the caller sized it so that it never
    /// has to wait, and a wait would be a broken invariant it wants reported, not hidden).
    Tee {
        fd_in: RawFd,
        fd_out: RawFd,
        len: u32,
    },
}

/// Most chunks one gathered write sends.
pub const IOV_MAX: usize = 32;

/// The iovec array of one endpoint's gathered writes. Boxed so that its address does not
/// change when the endpoint moves; the endpoint (and so the box) lives until every one of its
/// operations has completed.
pub struct Iovecs(Box<[libc::iovec; IOV_MAX]>);

impl Default for Iovecs {
    fn default() -> Self {
        Iovecs(Box::new(
            [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; IOV_MAX],
        ))
    }
}

impl std::fmt::Debug for Iovecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Iovecs")
    }
}

/// A handle on an endpoint's [`Iovecs`] for one submission.
#[derive(Clone, Copy, Debug)]
pub struct IovArray(*mut libc::iovec);

impl Iovecs {
    /// Fills the array with `chunks` (at most [`IOV_MAX`]) as pool addresses: for a gathered
    /// write, or for a scattered read into buffers the kernel owns until its completion.
    pub fn fill(
        &mut self,
        ring: &mut Ring,
        chunks: impl Iterator<Item = Chunk>,
    ) -> (IovArray, u32) {
        let mut n = 0;
        for (slot, c) in self.0.iter_mut().zip(chunks) {
            slot.iov_base = ring.pool.addr(c.buf, c.off).cast();
            slot.iov_len = c.len as usize;
            n += 1;
        }
        (IovArray(self.0.as_mut_ptr()), n)
    }
}

/// Most datagrams one segmented send carries: the kernel's UDP_MAX_SEGMENTS (64 up to Linux
/// 6.8; later kernels take more, but 64 already makes the per-send cost negligible).
pub const GSO_SEGMENTS: usize = 64;

/// Most payload bytes one segmented send carries: an IPv6 packet's 16-bit payload length less
/// the UDP header, with room to spare (IPv4 allows a little more).
pub const GSO_BYTES: u32 = 65_000;

/// The message of one endpoint's segmented UDP sends: a `msghdr`, its UDP_SEGMENT control
/// message and the iovec array it points to. Boxed, so that the addresses the kernel is given
/// stay put while the endpoint moves; like [`Iovecs`], the endpoint (and so the box) lives until
/// every operation of the endpoint has completed, and the daemon refills it only when no send
/// of the endpoint is in flight.
pub struct GsoMsg(Box<GsoInner>);

struct GsoInner {
    hdr: libc::msghdr,
    /// Control buffer: one cmsghdr with a u16, aligned for cmsghdr on every architecture.
    ctrl: [u64; 4],
    iov: [libc::iovec; GSO_SEGMENTS],
}

/// A handle on an endpoint's [`GsoMsg`] for one submission.
#[derive(Clone, Copy, Debug)]
pub struct MsgPtr(*const libc::msghdr);

impl Default for GsoMsg {
    fn default() -> Self {
        GsoMsg(Box::new(GsoInner {
            // SAFETY: msghdr is a plain C struct (pointers, lengths, flags, and private padding
            // on some libcs) for which all-zero bytes are a valid value.
            hdr: unsafe { std::mem::zeroed() },
            ctrl: [0; 4],
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; GSO_SEGMENTS],
        }))
    }
}

impl std::fmt::Debug for GsoMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GsoMsg")
    }
}

impl GsoMsg {
    /// Describes `chunks` (at most [`GSO_SEGMENTS`]) as one send cut into datagrams of `seg`
    /// bytes: every chunk but the last must be exactly `seg` bytes, the last at most `seg`
    /// (the daemon forms such runs; this is checked, as a wrong run would re-cut datagrams).
    pub fn fill(
        &mut self,
        ring: &mut Ring,
        chunks: impl Iterator<Item = Chunk>,
        seg: u16,
    ) -> MsgPtr {
        let m = &mut *self.0;
        let mut n = 0;
        let mut last_short = false;
        for (slot, c) in m.iov.iter_mut().zip(chunks) {
            assert!(
                !last_short && c.len <= u32::from(seg),
                "segmented send: datagram sizes do not form a run"
            );
            last_short = c.len < u32::from(seg);
            slot.iov_base = ring.pool.addr(c.buf, c.off).cast();
            slot.iov_len = c.len as usize;
            n += 1;
        }
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
        MsgPtr(&m.hdr)
    }
}

/// Period of the daemon's timer.
pub const TICK: Duration = Duration::from_millis(100);

/// What a multishot receive's completion put into its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram {
    /// A whole datagram of `len` bytes at byte `off` of the buffer, which the caller now holds
    /// one reference to. At least [`crate::engine::channel::PREFIX`] bytes before `off` are free (the
    /// kernel's header, already parsed) for a length prefix.
    Payload { off: u32, len: u32 },
    /// The datagram (of `len` bytes) did not fit and was cut short; its buffer has gone back.
    Truncated { len: u32 },
    /// A completion too short to hold the kernel's header; its buffer has gone back.
    Malformed,
}

/// Largest provided-buffer ring of one input (its capacity; see [`Ring::grow_buf_ring`]).
pub const MAX_BUF_RING_ENTRIES: u16 = 1024;

pub struct Ring {
    // Field order matters: the ring is dropped before the pool and the provided-buffer rings
    // it points into.
    uring: IoUring,
    pool: BufferPool,
    /// Provided-buffer rings by buffer group id (`None`: a free id).
    bufrings: Vec<Option<BufRing>>,
    /// Scratch of `recycle` (kept for its capacity).
    returning: Vec<BufId>,
    /// The msghdr every multishot RECVMSG is prepared with: no name, no control data, no
    /// iovec (the buffer comes from the ring), so a buffer holds the kernel's 16-byte
    /// `io_uring_recvmsg_out` header and then the payload.
    msghdr: Box<libc::msghdr>,
    tick: Box<types::Timespec>,
    sigbuf: Box<[u8; 64]>,
    overflow: VecDeque<squeue::Entry>,
    /// Scratch of `push_chain` (kept for its capacity).
    chain: Vec<squeue::Entry>,
    in_flight: usize,
    /// Zero-copy sends whose buffer the kernel may still read.
    zc: ZcTable,
    pub caps: Caps,
}

fn uname() -> (String, String) {
    let u = nix::sys::utsname::uname();
    match u {
        Ok(u) => (
            u.release().to_string_lossy().into_owned(),
            u.machine().to_string_lossy().into_owned(),
        ),
        Err(_) => ("unknown".into(), "unknown".into()),
    }
}

/// RLIMIT_MEMLOCK soft limit; `None` when unlimited.
pub fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    if rc != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        // rlim_t is 32 bits on 32-bit ARM.
        #[allow(clippy::useless_conversion)]
        Some(u64::from(r.rlim_cur))
    }
}

fn errno(res: i32) -> io::Error {
    io::Error::from_raw_os_error(-res)
}

fn setup_error(e: io::Error, what: &str) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => format!(
            "{what}: io_uring is not available (ENOSYS): the kernel is older than 5.10 or built \
             without io_uring, this is an emulator (qemu-user), or a seccomp filter blocks it \
             (Docker's default profile does: run with a profile that allows io_uring_setup, \
             io_uring_enter and io_uring_register)"
        ),
        Some(libc::EPERM) => format!(
            "{what}: io_uring is disabled (EPERM): check `sysctl kernel.io_uring_disabled` \
             (0 enables it for everyone, 2 disables it) or the container's policy"
        ),
        Some(libc::ENOMEM) => format!(
            "{what}: not enough locked memory for the ring (ENOMEM): kernels before 5.12 \
             charge rings to RLIMIT_MEMLOCK (now {}); raise it with `ulimit -l` or \
             LimitMEMLOCK= in the systemd unit, or lower ring_entries",
            memlock_limit()
                .map(crate::config::units::format_size)
                .unwrap_or_else(|| "unlimited".into())
        ),
        _ => format!("{what}: {e}"),
    }
}

fn build(
    opts: &RingOptions,
    sqpoll: bool,
    modern_flags: bool,
) -> io::Result<IoUring<squeue::Entry, cqueue::Entry>> {
    let mut b = IoUring::<squeue::Entry, cqueue::Entry>::builder();
    b.setup_cqsize(opts.entries * 4);
    if sqpoll {
        b.setup_sqpoll(opts.sqpoll_idle_ms);
        if let Some(cpu) = opts.sqpoll_cpu {
            b.setup_sqpoll_cpu(cpu);
        }
    } else if modern_flags {
        // Not DEFER_TASKRUN (6.1+): it runs completion work only when the loop waits, and a
        // linked chain of UDP receives then advances one step per wait. Measured on the relay
        // bench's UDP fan-out: delivered x0.48 of the blocking relay with 90% drops, against
        // x1.79 and 51% without it; TCP 1-to-1 showed no gain within the noise.
        b.setup_coop_taskrun().setup_taskrun_flag();
    }
    b.build(opts.entries)
}

/// CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn sqpoll_thread_running() -> bool {
    let Ok(rd) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    rd.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("comm"))
            .map(|c| c.starts_with("iou-sqp"))
            .unwrap_or(false)
    })
}

const OPS: &[(&str, u8)] = &[
    ("READ_FIXED", opcode::ReadFixed::CODE),
    ("WRITE_FIXED", opcode::WriteFixed::CODE),
    ("POLL_ADD", opcode::PollAdd::CODE),
    ("TIMEOUT", opcode::Timeout::CODE),
    ("ACCEPT", opcode::Accept::CODE),
    ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ("CONNECT", opcode::Connect::CODE),
    ("READ", opcode::Read::CODE),
    ("WRITE", opcode::Write::CODE),
    ("SEND", opcode::Send::CODE),
    ("RECV", opcode::Recv::CODE),
    ("SPLICE", opcode::Splice::CODE),
    ("TEE", opcode::Tee::CODE),
    ("PROVIDE_BUFFERS", opcode::ProvideBuffers::CODE),
    ("SHUTDOWN", opcode::Shutdown::CODE),
    ("SOCKET", opcode::Socket::CODE),
    ("SEND_ZC", opcode::SendZc::CODE),
];

/// Operations the daemon cannot run without.
const REQUIRED: &[&str] = &[
    "READ_FIXED",
    "WRITE_FIXED",
    "POLL_ADD",
    "TIMEOUT",
    "ACCEPT",
    "ASYNC_CANCEL",
    "READ",
    "WRITE",
    "SEND",
    "RECV",
];

impl Ring {
    /// Builds the ring, probes the kernel, maps and registers the buffer pool.
    pub fn new(opts: &RingOptions) -> Result<Ring, String> {
        let (kernel, machine) = uname();
        let mut caps = Caps {
            kernel,
            machine,
            baseline: opts.baseline,
            memlock: memlock_limit(),
            ..Caps::default()
        };
        let cpus = available_cpus();
        let want_sqpoll = match opts.sqpoll {
            SqpollMode::Off => false,
            SqpollMode::On => true,
            // The poll thread spins for sqpoll_idle_ms after every submission: a core's worth
            // of CPU while traffic flows. With fewer than four CPUs it competes with the
            // producers, consumers and the loop itself, and measured slower (README, benches/).
            SqpollMode::Auto if cpus < 4 => {
                caps.sqpoll_note = Some(format!(
                    "sqpoll = auto uses SQPOLL only with 4 or more CPUs ({cpus} available); set sqpoll = on to force it"
                ));
                false
            }
            SqpollMode::Auto => true,
        };
        let mut uring = None;
        if want_sqpoll {
            match build(opts, true, false) {
                Ok(r) if !r.params().is_feature_sqpoll_nonfixed() => {
                    // Before 5.11 an SQPOLL ring only takes registered files; we do not build
                    // that mode.
                    caps.sqpoll_note =
                        Some("kernel lacks SQPOLL for unregistered files (Linux 5.11+)".into());
                    drop(r);
                }
                Ok(r) => {
                    caps.sqpoll = true;
                    uring = Some(r);
                }
                Err(e) => {
                    if matches!(e.raw_os_error(), Some(libc::ENOSYS)) {
                        return Err(setup_error(e, "cannot create the io_uring ring"));
                    }
                    caps.sqpoll_note = Some(format!("the kernel refused SQPOLL: {e}"));
                }
            }
            if uring.is_none() && opts.sqpoll == SqpollMode::On {
                return Err(format!(
                    "sqpoll = on but {}; use sqpoll = auto or off",
                    caps.sqpoll_note
                        .as_deref()
                        .unwrap_or("SQPOLL is unavailable")
                ));
            }
        }
        let uring = match uring {
            Some(r) => r,
            None => match build(opts, false, !opts.baseline) {
                Ok(r) => r,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => build(opts, false, false)
                    .map_err(|e| setup_error(e, "cannot create the io_uring ring"))?,
                Err(e) => return Err(setup_error(e, "cannot create the io_uring ring")),
            },
        };
        let p = uring.params();
        caps.sq_entries = p.sq_entries();
        caps.cq_entries = p.cq_entries();
        caps.feat_nodrop = p.is_feature_nodrop();
        caps.feat_submit_stable = p.is_feature_submit_stable();
        caps.feat_fast_poll = p.is_feature_fast_poll();
        caps.feat_sqpoll_nonfixed = p.is_feature_sqpoll_nonfixed();
        caps.feat_ext_arg = p.is_feature_ext_arg();
        caps.feat_native_workers = p.is_feature_native_workers();
        caps.feat_cqe_skip = p.is_feature_skip_cqe_on_success();
        if caps.sqpoll && caps.feat_native_workers {
            caps.sqpoll_thread_seen = Some(sqpoll_thread_running());
        }
        let mut probe = Probe::new();
        uring
            .submitter()
            .register_probe(&mut probe)
            .map_err(|e| setup_error(e, "cannot probe io_uring opcodes (Linux 5.6+ needed)"))?;
        caps.ops = OPS
            .iter()
            .map(|(n, code)| (*n, probe.is_supported(*code)))
            .collect();
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|n| !caps.has_op(n))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "this kernel's io_uring lacks {} (Linux 5.10 or later is needed)",
                missing.join(", ")
            ));
        }
        let pool = BufferPool::new(
            opts.buffer_size,
            opts.buffer_count,
            opts.datagram_size,
            opts.datagram_count,
        )
        .map_err(|e| format!("cannot map the buffer pool: {e}"))?;
        let mut ring = Ring {
            uring,
            pool,
            bufrings: Vec::new(),
            returning: Vec::new(),
            // SAFETY: msghdr is plain data; all zeroes is a valid (empty) value.
            msghdr: Box::new(unsafe { std::mem::zeroed() }),
            tick: Box::new(types::Timespec::from(TICK)),
            sigbuf: Box::new([0u8; 64]),
            overflow: VecDeque::new(),
            chain: Vec::new(),
            in_flight: 0,
            zc: ZcTable::default(),
            caps,
        };
        ring.register_pool(opts);
        ring.caps.send_zc = !opts.baseline && ring.caps.has_op("SEND_ZC");
        if opts.trial_multishot && !opts.baseline && ring.caps.has_op("SOCKET") {
            ring.caps.multishot_accept = ring.trial_multishot_accept();
        }
        if !opts.trial_multishot {
            // Only reporting: leave the multishot receive undecided.
        } else if opts.baseline {
            ring.caps.multishot_recvmsg_note = Some("baseline feature set forced".into());
        } else if ring.caps.is_arm32_kernel() {
            // A user-allocated provided-buffer ring oopsed a 32-bit ARM kernel with highmem
            // (IOURING.md §5): never register one there.
            ring.caps.multishot_recvmsg_note = Some(format!(
                "not on a 32-bit ARM kernel ({}): its provided-buffer rings are unsafe",
                ring.caps.machine
            ));
        } else {
            match ring.trial_multishot_recvmsg() {
                Ok(()) => ring.caps.multishot_recvmsg = true,
                Err(why) => ring.caps.multishot_recvmsg_note = Some(why),
            }
        }
        if ring.caps.has_op("SPLICE") {
            ring.caps.splice_eagain = ring.trial_nonblocking_splice();
        }
        Ok(ring)
    }

    fn register_pool(&mut self, opts: &RingOptions) {
        let need = u64::from(opts.buffer_size) * u64::from(opts.buffer_count)
            + u64::from(opts.datagram_size) * u64::from(opts.datagram_count);
        let iov = self.pool.iovecs();
        // SAFETY: the iovecs describe the pool arena, which stays mapped at a fixed address for
        // as long as this ring exists (the ring is dropped first, see the field order).
        let r = unsafe { self.uring.submitter().register_buffers(&iov) };
        match r {
            Ok(()) => self.caps.registered_buffers = true,
            Err(e) => {
                let limit = self
                    .caps
                    .memlock
                    .map(crate::config::units::format_size)
                    .unwrap_or_else(|| "unlimited".into());
                self.caps.registered_note = Some(match e.raw_os_error() {
                    Some(libc::ENOMEM) | Some(libc::EPERM) => format!(
                        "registering {} of buffers exceeds RLIMIT_MEMLOCK ({limit}); raise it \
                         (`ulimit -l`, LimitMEMLOCK= in the unit, or CAP_IPC_LOCK) or shrink \
                         buffer_count/buffer_size",
                        crate::config::units::format_size(need)
                    ),
                    _ => format!("registering buffers failed: {e}"),
                });
            }
        }
    }

    /// Submits a multishot accept on a throwaway loopback listener and connects to it: a
    /// kernel with multishot accept answers with a socket and the MORE flag, an older one with
    /// -EINVAL.
    fn trial_multishot_accept(&mut self) -> bool {
        let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") else {
            return false;
        };
        let Ok(addr) = l.local_addr() else {
            return false;
        };
        use std::os::fd::AsRawFd;
        let trial = Token::new(OpKind::Accept, crate::engine::token::DAEMON_CHANNEL, 1, 0).encode();
        self.push_entry(
            opcode::AcceptMulti::new(types::Fd(l.as_raw_fd()))
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(trial),
        );
        let _client = std::net::TcpStream::connect(addr);
        let mut ok = false;
        let mut done = false;
        let mut cancelled = false;
        let mut out = Vec::new();
        for _ in 0..50 {
            if self.wait(Some(Duration::from_millis(100))).is_err() {
                break;
            }
            out.clear();
            self.reap(&mut out);
            for c in &out {
                if c.user_data != trial {
                    continue;
                }
                if c.res >= 0 {
                    let _ = nix::unistd::close(c.res);
                    ok |= c.more();
                }
                if !c.more() {
                    done = true;
                }
            }
            if done {
                break;
            }
            if !cancelled {
                self.push(
                    Sqe::Cancel { user_data: trial },
                    Token::daemon(OpKind::Cancel),
                );
                cancelled = true;
            }
        }
        // The listener must outlive the accept: `done` says its last completion arrived.
        if !done {
            std::mem::forget(l);
        }
        ok
    }

    /// Registers a provided-buffer ring on a throwaway ring mapping, submits a multishot
    /// RECVMSG on a throwaway loopback socket and sends it one datagram: a kernel with both
    /// (6.0+) answers with the datagram in a ring buffer and the MORE flag. Before 5.19 the
    /// registration fails with EINVAL; 5.19 rejects the multishot flag with -EINVAL.
    fn trial_multishot_recvmsg(&mut self) -> Result<(), String> {
        const TRIAL_GROUP: u16 = u16::MAX - 1;
        const TRIAL_BUF: u32 = 2048;
        let mut br = BufRing::new(2).map_err(|e| format!("cannot map a buffer ring: {e}"))?;
        let mut data =
            memmap2::MmapMut::map_anon(2 * TRIAL_BUF as usize).map_err(|e| e.to_string())?;
        for i in 0..2u16 {
            let p = data[usize::from(i) * TRIAL_BUF as usize..].as_mut_ptr();
            br.stage(p, TRIAL_BUF, i);
        }
        br.publish();
        // SAFETY: the ring mapping `br` lives until it is unregistered below, or is leaked.
        let reg = unsafe {
            self.uring.submitter().register_buf_ring_with_flags(
                br.addr(),
                br.entries(),
                TRIAL_GROUP,
                0,
            )
        };
        if let Err(e) = reg {
            return Err(format!("no provided-buffer rings (Linux 5.19+): {e}"));
        }
        let result = self.trial_recvmsg_multi(TRIAL_GROUP);
        match result {
            Ok(done) => {
                if !done {
                    // The receive may still pick a buffer: keep both mappings forever.
                    std::mem::forget(br);
                    std::mem::forget(data);
                    return Err("the trial receive did not finish".into());
                }
                let _ = self.uring.submitter().unregister_buf_ring(TRIAL_GROUP);
                Ok(())
            }
            Err((why, done)) => {
                if done {
                    let _ = self.uring.submitter().unregister_buf_ring(TRIAL_GROUP);
                } else {
                    std::mem::forget(br);
                    std::mem::forget(data);
                }
                Err(why)
            }
        }
    }

    /// The receive part of [`Ring::trial_multishot_recvmsg`]: Ok(whether its last completion
    /// arrived) when the kernel delivered a datagram with MORE, else the reason and the same.
    fn trial_recvmsg_multi(&mut self, group: u16) -> Result<bool, (String, bool)> {
        use std::os::fd::AsRawFd;
        let fail = |why: &str| (why.to_string(), true);
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| fail(&e.to_string()))?;
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| fail(&e.to_string()))?;
        let to = rx.local_addr().map_err(|e| fail(&e.to_string()))?;
        let token = Token::new(
            OpKind::RecvMulti,
            crate::engine::token::DAEMON_CHANNEL,
            2,
            0,
        );
        let trial = token.encode();
        let fd = rx.as_raw_fd();
        self.push(Sqe::RecvMulti { fd, group }, token);
        let _ = tx.send_to(b"probe", to);
        let mut got = None;
        let mut done = false;
        let mut cancelled = false;
        let mut out = Vec::new();
        for _ in 0..50 {
            if self.wait(Some(Duration::from_millis(100))).is_err() {
                break;
            }
            out.clear();
            self.reap(&mut out);
            for c in &out {
                if c.user_data != trial {
                    continue;
                }
                if got.is_none() {
                    got = Some(if c.res < 0 {
                        Err(errno(c.res))
                    } else {
                        Ok(c.more() && cqueue::buffer_select(c.flags).is_some())
                    });
                }
                if !c.more() {
                    done = true;
                }
            }
            if done {
                break;
            }
            if got.is_some() && !cancelled {
                self.push(
                    Sqe::Cancel { user_data: trial },
                    Token::daemon(OpKind::Cancel),
                );
                cancelled = true;
            }
        }
        // The socket must outlive the receive: `done` says its last completion arrived.
        if !done {
            std::mem::forget(rx);
        }
        match got {
            Some(Ok(true)) => Ok(done),
            Some(Ok(false)) => Err(("the trial receive ended at once".into(), done)),
            Some(Err(e)) => Err((format!("no multishot RECVMSG (Linux 6.0+): {e}"), done)),
            None => Err(("the trial receive got no datagram".into(), done)),
        }
    }

    /// Buffers the rings may still adopt before they could flood the CQ: each completion of
    /// a multishot receive consumes one buffer, so all homed buffers together stay within
    /// half the CQ.
    fn cq_budget(&self) -> usize {
        let homed: usize = self
            .bufrings
            .iter()
            .flatten()
            .map(|r| usize::from(r.homed()))
            .sum();
        (self.caps.cq_entries as usize / 2).saturating_sub(homed)
    }

    /// Opens a provided-buffer ring of class `c` for one input's multishot receive: maps
    /// room for up to `max_entries` buffers (a power of two), fills it with `initial` pool
    /// buffers (which become `Provided`, with this ring as their home) and registers it.
    /// Returns its buffer group, or `None` (the input then uses single-shot receives) when
    /// the kernel lacks multishot receives, the class cannot spare two buffers (a ring takes
    /// at most half of what is free), the CQ budget is spent, or mapping or registration
    /// failed.
    pub fn open_buf_ring(&mut self, c: Class, initial: u16, max_entries: u16) -> Option<u16> {
        if !self.caps.multishot_recvmsg || self.pool.class_size(c) == 0 {
            return None;
        }
        let budget = self.cq_budget();
        let (free, _) = self.pool.free_of(c);
        let entries = crate::driver::bufring::entries_for(free / 2, max_entries)?;
        let initial = usize::from(initial.min(entries)).min(budget).min(free / 2);
        if initial < 2 {
            return None;
        }
        let group = match self.bufrings.iter().position(|r| r.is_none()) {
            Some(g) => g,
            None => {
                self.bufrings.push(None);
                self.bufrings.len() - 1
            }
        };
        let group16 = u16::try_from(group).ok().filter(|&g| g < u16::MAX - 1)?;
        let br = match BufRing::new(entries) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("cannot map a provided-buffer ring of {entries} entries: {e}");
                return None;
            }
        };
        // SAFETY: `br` is stored in `self.bufrings` below and stays there, mapped, until
        // close_buf_ring unregisters it (or the ring is dropped, io_uring fd first).
        let reg = unsafe {
            self.uring
                .submitter()
                .register_buf_ring_with_flags(br.addr(), br.entries(), group16, 0)
        };
        if let Err(e) = reg {
            log::warn!("cannot register a provided-buffer ring: {e}; using single-shot receives");
            return None;
        }
        self.bufrings[group] = Some(br);
        self.adopt(c, group16, initial);
        Some(group16)
    }

    /// Takes up to `n` free buffers of class `c` into the ring of `group` for good. Returns
    /// how many.
    fn adopt(&mut self, c: Class, group: u16, n: usize) -> usize {
        let Some(br) = self
            .bufrings
            .get_mut(usize::from(group))
            .and_then(|r| r.as_mut())
        else {
            return 0;
        };
        let mut added = 0;
        while added < n && br.homed() < br.entries() {
            let Some(id) = self.pool.take_provided(c, group) else {
                break;
            };
            br.adopted();
            br.stage(self.pool.addr(id, 0), self.pool.size_of(id), id);
            added += 1;
        }
        br.publish();
        added
    }

    /// Gives the ring of `group` up to `n` more buffers of class `c` (within its entries, half
    /// the class's free buffers and the CQ budget): for an input whose ring stays dry because
    /// an output holds its buffers (a stuck `drop` subscriber keeps up to its quota), so that
    /// the outputs that keep up still get datagrams. Returns how many it got.
    pub fn grow_buf_ring(&mut self, c: Class, group: u16, n: usize) -> usize {
        let (free, _) = self.pool.free_of(c);
        let n = n.min(free / 2).min(self.cq_budget());
        self.adopt(c, group, n)
    }

    /// Buffers the ring of `group` has adopted (0 for a closed ring).
    pub fn buf_ring_size(&self, group: u16) -> u16 {
        self.bufrings
            .get(usize::from(group))
            .and_then(|r| r.as_ref())
            .map_or(0, |r| r.homed())
    }

    /// Unregisters the ring of `group` and gives its buffers back to the pool (those still
    /// held by outputs return with their last release). Only once no operation can pick from
    /// it: its multishot receive has posted its final completion, or was never armed.
    pub fn close_buf_ring(&mut self, group: u16) {
        let Some(br) = self
            .bufrings
            .get_mut(usize::from(group))
            .and_then(|r| r.take())
        else {
            return;
        };
        if let Err(e) = self.uring.submitter().unregister_buf_ring(group) {
            // The kernel still has the ring: keep its memory mapped and its buffers
            // `Provided` for good rather than hand the kernel memory we reuse.
            log::warn!(
                "cannot unregister provided-buffer ring {group}: {e}; its buffers stay lent"
            );
            std::mem::forget(br);
            return;
        }
        self.pool.disown(group);
        drop(br);
    }

    /// Buffers the ring of `group` offers the kernel now, after publishing the ones that came
    /// back (0 for a closed ring).
    pub fn buffers_provided(&mut self, group: u16) -> u16 {
        self.recycle();
        self.bufrings
            .get(usize::from(group))
            .and_then(|r| r.as_ref())
            .map_or(0, |r| r.provided())
    }

    /// Publishes every buffer whose last reference was released back into its home ring: the
    /// pool's `Returning` buffers become `Provided`, one tail store per ring.
    pub fn recycle(&mut self) {
        if !self.pool.has_returning() {
            return;
        }
        let mut back = std::mem::take(&mut self.returning);
        self.pool.take_returning(&mut back);
        for &id in &back {
            let g = self.pool.home(id).expect("a returning buffer has a home");
            let addr = self.pool.addr(id, 0);
            let len = self.pool.size_of(id);
            self.bufrings[usize::from(g)]
                .as_mut()
                .expect("a returning buffer's ring is open (disown clears the others)")
                .stage(addr, len, id);
        }
        for r in self.bufrings.iter_mut().flatten() {
            r.publish();
        }
        back.clear();
        self.returning = back;
    }

    /// A completion of the multishot receive on `group` named buffer `bid` with result `res`
    /// (>= 0): takes the buffer back from the kernel and parses what the kernel wrote
    /// (`io_uring_recvmsg_out`, then the payload).
    pub fn take_datagram(&mut self, group: u16, bid: BufId, res: i32) -> Datagram {
        self.pool.received(bid, group);
        if let Some(br) = self
            .bufrings
            .get_mut(usize::from(group))
            .and_then(|r| r.as_mut())
        {
            br.consumed();
        }
        let n = (res.max(0) as u32).min(self.pool.size_of(bid));
        let bytes = self.pool.bytes(bid, 0, n);
        let d = match types::RecvMsgOut::parse(bytes, &self.msghdr) {
            Err(()) => Datagram::Malformed,
            Ok(m) if m.is_payload_truncated() => Datagram::Truncated {
                len: m.incoming_payload_len(),
            },
            Ok(m) => {
                let off = m.payload_data().as_ptr() as usize - bytes.as_ptr() as usize;
                Datagram::Payload {
                    off: off as u32,
                    len: m.payload_data().len() as u32,
                }
            }
        };
        if !matches!(d, Datagram::Payload { .. }) {
            self.pool.release(bid);
        }
        d
    }

    /// A completion named buffer `bid` that nobody wants (its endpoint is gone): back to its
    /// ring (or, when the ring is closed, nowhere: disown already freed it).
    pub fn give_back(&mut self, bid: BufId) {
        let Some(g) = self.pool.home(bid) else {
            return;
        };
        if self.pool.is_provided(bid) {
            let _ = self.take_datagram(g, bid, 0);
        }
    }

    /// Submits a splice from an empty non-blocking socket into a pipe: a kernel that answers
    /// -EAGAIN lets a splice wait in a POLL_ADD instead. Kernels whose io-wq retries -EAGAIN
    /// in the worker (older ones did, spinning until data came) do not answer; then a byte is
    /// written so that the trial completes, and splices stay on blocking sockets.
    fn trial_nonblocking_splice(&mut self) -> bool {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let Ok((a, mut b)) = std::os::unix::net::UnixStream::pair() else {
            return false;
        };
        let Ok((r, w)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
            return false;
        };
        if a.set_nonblocking(true).is_err() {
            return false;
        }
        let trial =
            Token::new(OpKind::SpliceIn, crate::engine::token::DAEMON_CHANNEL, 2, 0).encode();
        self.push_entry(
            opcode::Splice::new(
                types::Fd(a.as_raw_fd()),
                -1,
                types::Fd(w.as_raw_fd()),
                -1,
                4096,
            )
            .build()
            .user_data(trial),
        );
        let mut result = None;
        let mut nudged = false;
        let mut out = Vec::new();
        for _ in 0..60 {
            if self.wait(Some(Duration::from_millis(50))).is_err() {
                break;
            }
            out.clear();
            self.reap(&mut out);
            if let Some(c) = out.iter().find(|c| c.user_data == trial) {
                result = Some(c.res);
                break;
            }
            if !nudged {
                // No answer at once: let the splice finish with a byte.
                let _ = b.write_all(b"x");
                nudged = true;
            }
        }
        if result.is_none() {
            // The kernel may still splice between these descriptors: keep them open.
            std::mem::forget((a, b, r, w));
            return false;
        }
        drop(r);
        result == Some(-libc::EAGAIN)
    }

    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    pub fn pool_mut(&mut self) -> &mut BufferPool {
        &mut self.pool
    }

    /// Caps the ring's unbounded io-wq workers (those that run socket splices) at `n` per NUMA
    /// node (IORING_REGISTER_IOWQ_MAX_WORKERS, Linux 5.15+). A blocking splice holds its
    /// worker until its socket is ready, so the cap must leave one worker for every splice
    /// that may be in flight at once, or one blocked splice starves another.
    pub fn cap_unbounded_workers(&mut self, n: u32) -> io::Result<()> {
        // 0 leaves the bounded (file I/O) limit as it is.
        let mut max = [0, n];
        self.uring.submitter().register_iowq_max_workers(&mut max)
    }

    /// Begins a zero-copy send of `buf` for an endpoint of generation `gen`: the pool keeps a
    /// reference for the kernel until [`Ring::zc_end`]. Returns the record's index (the tag's
    /// generation field), or None when no record is free (send by copy then).
    pub fn zc_begin(&mut self, gen: u32, buf: BufId) -> Option<u32> {
        let idx = self.zc.begin(gen, buf)?;
        self.pool.retain(buf);
        Some(idx)
    }

    /// The record of zero-copy send `idx`.
    pub fn zc_record(&self, idx: u32) -> Option<ZcRecord> {
        self.zc.get(idx)
    }

    /// The kernel is done with zero-copy send `idx` (its notification, or a first completion
    /// that says none follows): the buffer's reference goes back to the pool, once.
    pub fn zc_end(&mut self, idx: u32) {
        if let Some(r) = self.zc.end(idx) {
            self.pool.release(r.buf);
        }
    }

    /// Submissions whose completion has not arrived yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues one operation tagged with `token`.
    pub fn push(&mut self, sqe: Sqe, token: Token) {
        let e = self.build(sqe, token);
        self.push_entry(e);
    }

    /// Queues `ops` as one linked chain (IOSQE_IO_LINK): each starts when the one before it has
    /// completed, so their completions arrive in order; a failure cancels the rest
    /// (-ECANCELED). The chain goes into the submission queue whole or not at all (a chain cut
    /// at a submission boundary would run as two chains side by side): returns false, queueing
    /// nothing, when the queue has no room for all of it.
    pub fn push_chain(&mut self, ops: &[(Sqe, Token)]) -> bool {
        if ops.is_empty() || !self.overflow.is_empty() {
            return false;
        }
        let mut chain = std::mem::take(&mut self.chain);
        chain.clear();
        for (i, (sqe, token)) in ops.iter().enumerate() {
            let e = self.build(*sqe, *token);
            chain.push(if i + 1 < ops.len() {
                e.flags(squeue::Flags::IO_LINK)
            } else {
                e
            });
        }
        // SAFETY: as in push_entry; push_multiple writes all entries and publishes the tail
        // once, or writes nothing.
        let ok = unsafe { self.uring.submission().push_multiple(&chain) }.is_ok();
        if ok {
            self.in_flight += chain.len();
        }
        self.chain = chain;
        ok
    }

    /// Turns an operation into its submission entry tagged with `token`.
    fn build(&mut self, sqe: Sqe, token: Token) -> squeue::Entry {
        let ud = token.encode();
        let registered = self.caps.registered_buffers;
        let e = match sqe {
            Sqe::RecvDatagram { fd, buf, off, len } => {
                let ptr = self.pool.addr(buf, off);
                opcode::Recv::new(types::Fd(fd), ptr, len)
                    .flags(libc::MSG_TRUNC)
                    .build()
            }
            Sqe::ReadStream { fd, buf, off, len } => {
                let ptr = self.pool.addr(buf, off);
                if registered {
                    opcode::ReadFixed::new(types::Fd(fd), ptr, len, buf).build()
                } else {
                    opcode::Read::new(types::Fd(fd), ptr, len).build()
                }
            }
            Sqe::ReadvStream { fd, iov, n } => opcode::Readv::new(types::Fd(fd), iov.0, n).build(),
            Sqe::Write { fd, chunk, socket } => {
                let ptr = self.pool.addr(chunk.buf, chunk.off);
                if registered {
                    opcode::WriteFixed::new(types::Fd(fd), ptr, chunk.len, chunk.buf).build()
                } else if socket {
                    opcode::Send::new(types::Fd(fd), ptr, chunk.len).build()
                } else {
                    opcode::Write::new(types::Fd(fd), ptr, chunk.len).build()
                }
            }
            Sqe::Writev { fd, iov, n } => opcode::Writev::new(types::Fd(fd), iov.0, n).build(),
            Sqe::SendZc { fd, chunk } => {
                let ptr = self.pool.addr(chunk.buf, chunk.off);
                opcode::SendZc::new(types::Fd(fd), ptr, chunk.len)
                    .buf_index(registered.then_some(chunk.buf))
                    .build()
            }
            Sqe::SendGso { fd, msg } => opcode::SendMsg::new(types::Fd(fd), msg.0).build(),
            Sqe::RecvMulti { fd, group } => {
                opcode::RecvMsgMulti::new(types::Fd(fd), &*self.msghdr as *const _, group).build()
            }
            Sqe::Accept { fd, multishot } => {
                if multishot && self.caps.multishot_accept {
                    opcode::AcceptMulti::new(types::Fd(fd))
                        .flags(libc::SOCK_CLOEXEC)
                        .build()
                } else {
                    opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                        .flags(libc::SOCK_CLOEXEC)
                        .build()
                }
            }
            Sqe::PollHangup { fd } => {
                opcode::PollAdd::new(types::Fd(fd), libc::POLLRDHUP as u32).build()
            }
            Sqe::PollOut { fd } => {
                opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32).build()
            }
            Sqe::PollIn { fd } => opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build(),
            Sqe::Tick => opcode::Timeout::new(&*self.tick as *const types::Timespec).build(),
            Sqe::ReadSignal { fd } => {
                opcode::Read::new(types::Fd(fd), self.sigbuf.as_mut_ptr(), 64).build()
            }
            Sqe::Cancel { user_data } => opcode::AsyncCancel::new(user_data).build(),
            Sqe::Splice { fd_in, fd_out, len } => {
                opcode::Splice::new(types::Fd(fd_in), -1, types::Fd(fd_out), -1, len)
                    .flags(libc::SPLICE_F_MOVE)
                    .build()
            }
            Sqe::Tee { fd_in, fd_out, len } => {
                opcode::Tee::new(types::Fd(fd_in), types::Fd(fd_out), len)
                    .flags(libc::SPLICE_F_NONBLOCK)
                    .build()
            }
        };
        e.user_data(ud)
    }

    fn push_entry(&mut self, e: squeue::Entry) {
        self.in_flight += 1;
        if !self.overflow.is_empty() {
            self.overflow.push_back(e);
            return;
        }
        // SAFETY: see the module documentation: every pointer in `e` is into the pool arena
        // or into storage boxed in this Ring, both alive and unmoved until the completion.
        let r = unsafe { self.uring.submission().push(&e) };
        if r.is_err() {
            self.overflow.push_back(e);
        }
    }

    fn drain_overflow(&mut self) {
        while let Some(e) = self.overflow.front() {
            // SAFETY: as in push_entry.
            if unsafe { self.uring.submission().push(e) }.is_err() {
                break;
            }
            self.overflow.pop_front();
        }
    }

    /// Submits what is queued and waits for at least one completion (or `timeout`).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.recycle();
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
        self.recycle();
        self.drain_overflow();
        match self.uring.submit() {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EINTR)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves every available completion into `out`.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        for c in self.uring.completion() {
            if !cqueue::more(c.flags()) {
                self.in_flight = self.in_flight.saturating_sub(1);
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
        // The daemon cancels its endpoints' operations before it lets the ring go; wait a
        // little for the last completions, and if some are still owed after that, leak the
        // pool: the kernel may yet write into it.
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
            let pool = std::mem::replace(
                &mut self.pool,
                BufferPool::new(4096, 1, 0, 0).expect("a one-page pool"),
            );
            std::mem::forget(pool);
            std::mem::forget(std::mem::take(&mut self.bufrings));
        }
    }
}
