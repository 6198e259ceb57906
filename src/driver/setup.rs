//! Building the ring: SQPOLL or not, the kernel's features probed (opcodes, flags, and the
//! trials that only a real submission answers: multishot accept, multishot RECVMSG over a
//! provided-buffer ring, non-blocking splice), and the registration of the buffer arena.
//!
//! Owns: every decision about which io_uring features this process uses, recorded in
//! [`Caps`] for the engine and the start-up line. Each trial keeps the descriptors and memory
//! it lent the kernel alive until the trial's last completion, or leaks them.

use super::arena::Arena;
use super::bufring::BufRing;
use super::ring::{Ring, RingOptions};
use crate::config::SqpollMode;
use crate::engine::buffers::BufferPool;
use crate::engine::caps::Caps;
use crate::engine::io::Op;
use crate::engine::token::{OpKind, Token};
use crate::engine::TICK;
use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::Duration;

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
    /// Builds the ring, probes the kernel, maps and registers an arena laid out like `pool`.
    pub fn new(opts: &RingOptions, pool: &BufferPool) -> Result<Ring, String> {
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
        let arena = Arena::new(pool).map_err(|e| format!("cannot map the buffer pool: {e}"))?;
        let mut ring = Ring {
            uring,
            addrs: arena.addrs(),
            arena,
            bufrings: Vec::new(),
            // SAFETY: msghdr is plain data; all zeroes is a valid (empty) value.
            msghdr: Box::new(unsafe { std::mem::zeroed() }),
            tick: Box::new(types::Timespec::from(TICK)),
            sigbuf: Box::new([0u8; 64]),
            overflow: VecDeque::new(),
            chain: Vec::new(),
            in_flight: 0,
            held: HashMap::new(),
            spare: Vec::new(),
            caps,
        };
        ring.register_pool(pool);
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

    fn register_pool(&mut self, pool: &BufferPool) {
        let need = pool.arena_bytes() as u64;
        let iov = self.arena.iovecs();
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
        self.push_entries(&[opcode::AcceptMulti::new(types::Fd(l.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(trial)]);
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
                self.push_op(
                    Op::Cancel {
                        target: Token::decode(trial).expect("a trial token"),
                    },
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
        self.push_op(Op::RecvMulti { fd, group }, token);
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
                self.push_op(
                    Op::Cancel {
                        target: Token::decode(trial).expect("a trial token"),
                    },
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
        self.push_entries(&[opcode::Splice::new(
            types::Fd(a.as_raw_fd()),
            -1,
            types::Fd(w.as_raw_fd()),
            -1,
            4096,
        )
        .build()
        .user_data(trial)]);
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
}
