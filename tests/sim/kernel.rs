//! The simulated kernel under the engine: sockets, listeners, files and provided-buffer rings
//! as plain structs, and io_uring as a list of submitted operations that the seed executes and
//! completes in any order the real kernel may choose (SIMULATION.md).
//!
//! An operation's life here: submitted (from the engine's `Effects`) -> executed (its effect on
//! the world happens: bytes move, a connection is taken, an error is chosen) -> its
//! completions queued -> each completion delivered to the engine, in an order the seed picks
//! but never reordered within one multishot stream or one linked chain. An operation still
//! holds its descriptor and its buffers until its final completion is delivered; the checks of
//! `sim.rs` hold the engine to that.
//!
//! This file owns the kernel's state, submission, the completion queue and the control
//! operations (cancel, accept, connect, hang-up watch); its data path (receives, reads,
//! writes and where their bytes came from) is `kernel/data.rs`, its answers to the engine's
//! `Sys` calls `kernel/sys.rs`.

use super::broker::BrokerConn;
use super::files::Files;
use super::rng::Rng;
use super::spoolfs::{Runs, SpoolFs};
use ringrelay::engine::buffers::{BufId, VecMemory};
use ringrelay::engine::io::{Completion, Effects, Fd, Op, CQE_F_MORE};
use ringrelay::engine::outq::Chunk;
use ringrelay::engine::token::Token;
use std::collections::{BTreeMap, VecDeque};

mod data;
mod sys;

/// Whose end a descriptor or connection is: a channel's input, or output `o` of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Who {
    Input(usize),
    Output(usize, usize),
}

/// Where a byte the relay sends came from: for a stream, its position in the producer's
/// stream; for a datagram, `seq << 20 | index` within its framed record (the 4-byte prefix at
/// 0..4, the payload from 4).
pub type Pos = u64;

/// What a buffer holds, as the kernel filled it.
#[derive(Clone, Copy, Debug)]
pub enum Prov {
    Stream {
        at: u32,
        pos: u64,
    },
    Datagram {
        payload_off: u32,
        seq: u64,
        len: u32,
    },
}

/// The content of stream position `pos` (and of payload byte `i` of datagram `seq`).
pub fn pattern(pos: u64) -> u8 {
    let x = pos.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (pos as u8)
}

pub fn datagram_byte(seq: u64, i: u64) -> u8 {
    pattern(seq.wrapping_mul(1_000_003).wrapping_add(i))
}

/// A stream connection between the relay and a peer.
#[derive(Debug, Default)]
pub struct Conn {
    pub who: Option<Who>,
    /// Bytes the peer sent toward the relay, as stream positions.
    pub rx: VecDeque<u64>,
    pub rx_eof: bool,
    pub rx_reset: bool,
    /// A serial port whose device was unplugged: what it held is lost, reads fail with EIO.
    pub rx_eio: bool,
    /// A serial port the relay opened (`Sys::open_serial`), not a socket.
    pub serial: bool,
    /// Free room in the peer's receive buffer (a send waits when it is 0).
    pub room: usize,
    /// What the peer received from the relay, as positions.
    pub received: Vec<Pos>,
    /// The peer half-closed (FIN) but still reads.
    pub half_closed: bool,
    /// The peer is gone: sends fail.
    pub gone: bool,
    /// The relay shut it down.
    pub shut: bool,
    /// A dialed connection: the peer's answer (None: not yet).
    pub accepted: Option<bool>,
    /// The relay's descriptor was closed.
    pub closed: bool,
    /// The peer never reads (a stuck subscriber).
    pub stuck: bool,
    /// The relay turned TCP keepalive on for it.
    pub keepalive: bool,
    /// The peer vanished without a FIN or a reset (power loss): what it sent before is still
    /// read; then a read waits for good, unless keepalive ends it with ETIMEDOUT.
    pub vanished: bool,
    /// Bytes a subscriber sent toward the relay so far (its positions are
    /// [`talk_pos`]`(conn, k)`).
    pub talked: u64,
    /// The peer is an MQTT broker (a `mqtt://` output's connection).
    pub broker: Option<BrokerConn>,
}

impl Conn {
    /// The peer has bytes for the relay to read.
    fn has_rx(&self) -> bool {
        !self.rx.is_empty() || self.broker.as_ref().is_some_and(|b| !b.out.is_empty())
    }
}

/// Position `k` of what subscriber connection `conn` sends toward the relay (its commands):
/// far above any producer position, and naming the connection.
pub fn talk_pos(conn: usize, k: u64) -> u64 {
    ((conn as u64 + 1) << 40) | k
}

/// The subscriber connection a [`talk_pos`] position came from.
pub fn talker_of(pos: u64) -> Option<usize> {
    (pos >> 40).checked_sub(1).map(|c| c as usize)
}

/// A descriptor's object.
#[derive(Debug)]
pub enum Obj {
    UdpIn(usize),
    Listener {
        who: Who,
        shut: bool,
    },
    Stream(usize),
    UdpOut(usize, usize),
    File(usize, usize),
    Pipe,
    /// A spool file (`sim/spoolfs.rs`), by inode.
    Spool(usize),
}

/// One submitted operation.
#[derive(Debug)]
pub struct Pending {
    pub id: u64,
    pub op: Op,
    pub token: Token,
    /// The chunks of a gathered write, scattered read or segmented send.
    pub chunks: Vec<Chunk>,
    /// The operation before it in a linked chain.
    pub prev: Option<u64>,
    pub executed: bool,
    /// Result of the execution (for a chain's successor).
    pub failed: bool,
    /// A multishot operation still armed.
    pub armed: bool,
    /// Completions queued and not yet delivered.
    pub owed: usize,
    /// Its final completion has been queued.
    pub final_queued: bool,
    /// A zero-copy send: its notification is owed.
    pub notif_owed: bool,
    pub chain: u64,
}

/// A completion waiting in the CQ.
#[derive(Debug)]
pub struct Cqe {
    pub op: u64,
    pub chain: u64,
    pub c: Completion,
}

/// Faults the run injects, by per-mille chance of each opportunity.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub short_io: u32,
    pub error: u32,
    pub cancel_race: u32,
}

pub struct Kernel {
    pub rng: Rng,
    pub faults: Faults,
    pub objs: BTreeMap<Fd, Obj>,
    next_fd: Fd,
    pub conns: Vec<Conn>,
    /// Connections waiting to be accepted, per listener descriptor.
    pub backlog: BTreeMap<Fd, VecDeque<usize>>,
    /// Datagrams waiting in each channel's UDP input socket: (seq, len).
    pub udp_in: BTreeMap<usize, VecDeque<(u64, u32)>>,
    /// What each UDP destination or file received, per (channel, output).
    pub sinks: BTreeMap<(usize, usize), Vec<Vec<Pos>>>,
    pub groups: BTreeMap<u16, VecDeque<BufId>>,
    pub prov: Vec<Option<Prov>>,
    /// Byte origins by range, for buffers that hold spool records (they win over `prov`).
    pub pieces: Vec<Option<Runs>>,
    /// The spool directories.
    pub spoolfs: SpoolFs,
    pub sizes: Vec<u32>,
    /// Every buffer a stream read filled: (channel, first position, bytes).
    pub chunks: Vec<(usize, u64, u64)>,
    pub pending: Vec<Pending>,
    pub cq: Vec<Cqe>,
    next_op: u64,
    /// Which listener or connection the engine dials for each endpoint URL.
    pub urls: BTreeMap<String, Who>,
    /// Outputs whose sends fail with ECONNREFUSED while set (UDP destinations).
    pub refusing: BTreeMap<(usize, usize), bool>,
    /// The output files' paths, directories and names.
    pub files: Files,
    pub violations: Vec<String>,
    pub closed_fds: usize,
    /// The segmented-send refusal was injected once.
    pub gso_refused: bool,
    pub bound_channels: usize,
    /// Channels whose serial device is plugged in (opens of their port succeed).
    pub serial_plugged: BTreeMap<usize, bool>,
    pub trace: VecDeque<String>,
    pub trace_len: usize,
}

impl Kernel {
    /// `sizes`: the size of every pool buffer, by id.
    pub fn new(seed: u64, faults: Faults, sizes: Vec<u32>) -> Kernel {
        Kernel {
            prov: vec![None; sizes.len()],
            pieces: vec![None; sizes.len()],
            spoolfs: SpoolFs::default(),
            sizes,
            chunks: Vec::new(),
            rng: Rng::new(seed),
            faults,
            objs: BTreeMap::new(),
            next_fd: 10,
            conns: Vec::new(),
            backlog: BTreeMap::new(),
            udp_in: BTreeMap::new(),
            sinks: BTreeMap::new(),
            groups: BTreeMap::new(),
            pending: Vec::new(),
            cq: Vec::new(),
            next_op: 1,
            urls: BTreeMap::new(),
            refusing: BTreeMap::new(),
            files: Files::default(),
            violations: Vec::new(),
            closed_fds: 0,
            gso_refused: false,
            bound_channels: 0,
            serial_plugged: BTreeMap::new(),
            trace: VecDeque::new(),
            trace_len: 300,
        }
    }

    pub fn note(&mut self, s: String) {
        if self.trace.len() >= self.trace_len {
            self.trace.pop_front();
        }
        self.trace.push_back(s);
    }

    pub(super) fn fd(&mut self, obj: Obj) -> Fd {
        let fd = self.next_fd;
        self.next_fd += 1;
        self.objs.insert(fd, obj);
        fd
    }

    pub(super) fn violation(&mut self, s: String) {
        self.violations.push(s);
    }

    /// A new connection object.
    pub fn conn(&mut self, who: Who, room: usize) -> usize {
        self.conns.push(Conn {
            who: Some(who),
            room,
            ..Conn::default()
        });
        self.conns.len() - 1
    }

    /// The listener descriptor of `who`, if one is open.
    pub fn listener(&self, who: Who) -> Option<Fd> {
        self.objs.iter().find_map(|(&fd, o)| match o {
            Obj::Listener {
                who: w,
                shut: false,
            } if *w == who => Some(fd),
            _ => None,
        })
    }

    /// Takes the engine's submissions.
    pub fn submit(&mut self, fx: &mut Effects) {
        let mut prev: Option<u64> = None;
        let mut chain = 0;
        let subs: Vec<_> = fx.subs.drain(..).collect();
        for s in subs {
            let id = self.next_op;
            self.next_op += 1;
            if prev.is_none() {
                chain = id;
            }
            let chunks = match s.op {
                Op::ReadvStream { bufs, .. } => fx.span(bufs).to_vec(),
                Op::Writev { chunks, .. }
                | Op::SendGso { chunks, .. }
                | Op::WritevAt { chunks, .. } => fx.span(chunks).to_vec(),
                Op::Write { chunk, .. } | Op::SendZc { chunk, .. } | Op::WriteAt { chunk, .. } => {
                    vec![chunk]
                }
                Op::ReadAt { buf, len, .. } => vec![Chunk { buf, off: 0, len }],
                Op::ReadStream { buf, off, len, .. } | Op::RecvDatagram { buf, off, len, .. } => {
                    vec![Chunk { buf, off, len }]
                }
                _ => Vec::new(),
            };
            self.note(format!("submit #{id} {:?} {:?}", s.op, s.token));
            self.pending.push(Pending {
                id,
                op: s.op,
                token: s.token,
                chunks,
                prev,
                executed: false,
                failed: false,
                armed: matches!(s.op, Op::RecvMulti { .. } | Op::Accept { .. }),
                owed: 0,
                final_queued: false,
                notif_owed: false,
                chain,
            });
            prev = if s.link { Some(id) } else { None };
        }
        fx.chunks.clear();
    }

    fn op_fd(op: &Op) -> Option<Fd> {
        Some(match *op {
            Op::RecvDatagram { fd, .. }
            | Op::ReadStream { fd, .. }
            | Op::ReadvStream { fd, .. }
            | Op::Write { fd, .. }
            | Op::Writev { fd, .. }
            | Op::SendZc { fd, .. }
            | Op::SendGso { fd, .. }
            | Op::RecvMulti { fd, .. }
            | Op::Accept { fd }
            | Op::PollOut { fd }
            | Op::PollIn { fd }
            | Op::PollHangup { fd }
            | Op::WriteAt { fd, .. }
            | Op::WritevAt { fd, .. }
            | Op::ReadAt { fd, .. }
            | Op::Fsync { fd } => fd,
            Op::Splice { fd_in, .. } | Op::Tee { fd_in, .. } => fd_in,
            Op::Cancel { .. } => return None,
        })
    }

    /// Buffers an operation still holds (the engine must not free them).
    pub fn held_buffers(&self) -> Vec<(BufId, &'static str, u64)> {
        let mut v = Vec::new();
        for p in &self.pending {
            let write = matches!(
                p.op,
                Op::Write { .. }
                    | Op::Writev { .. }
                    | Op::SendZc { .. }
                    | Op::SendGso { .. }
                    | Op::WriteAt { .. }
            );
            let read = matches!(
                p.op,
                Op::ReadStream { .. }
                    | Op::ReadvStream { .. }
                    | Op::RecvDatagram { .. }
                    | Op::ReadAt { .. }
            );
            // A write holds its chunks until its result is delivered; a zero-copy send until
            // its notification is.
            let done = p.final_queued && p.owed == 0;
            if done {
                continue;
            }
            for c in &p.chunks {
                if write {
                    v.push((c.buf, "write", p.id));
                } else if read {
                    v.push((c.buf, "read", p.id));
                }
            }
        }
        v
    }

    pub(super) fn queue(&mut self, p: usize, res: i32, flags: u32, last: bool) {
        let (id, chain, ud) = {
            let p = &mut self.pending[p];
            p.owed += 1;
            if last {
                p.final_queued = true;
                p.armed = false;
            }
            (p.id, p.chain, p.token.encode())
        };
        self.note(format!("cqe #{id} res={res} flags={flags:#x} last={last}"));
        self.cq.push(Cqe {
            op: id,
            chain,
            c: Completion {
                user_data: ud,
                res,
                flags,
            },
        });
    }

    /// Picks a completion to deliver: any, but never ahead of an earlier one of the same
    /// operation or the same linked chain.
    pub fn pick_cqe(&mut self) -> Option<Completion> {
        if self.cq.is_empty() {
            return None;
        }
        let n = self.cq.len();
        let start = self.rng.below(n);
        for k in 0..n {
            let i = (start + k) % n;
            let (op, chain) = (self.cq[i].op, self.cq[i].chain);
            let blocked = self.cq[..i].iter().any(|e| e.op == op || e.chain == chain);
            if blocked {
                continue;
            }
            let e = self.cq.remove(i);
            if let Some(pi) = self.pending.iter().position(|p| p.id == e.op) {
                self.pending[pi].owed -= 1;
                if self.pending[pi].final_queued && self.pending[pi].owed == 0 {
                    self.pending.remove(pi);
                }
            }
            self.note(format!(
                "deliver #{} res={} flags={:#x}",
                e.op, e.c.res, e.c.flags
            ));
            return Some(e.c);
        }
        None
    }

    /// Executes one operation that can make progress now; false when none can.
    pub fn execute_one(&mut self, mem: &mut VecMemory) -> bool {
        let n = self.pending.len();
        if n == 0 {
            return false;
        }
        let start = self.rng.below(n);
        for k in 0..n {
            let i = (start + k) % n;
            if self.try_execute(i, mem) {
                return true;
            }
        }
        false
    }

    fn prev_state(&self, i: usize) -> Option<Option<bool>> {
        let prev = self.pending[i].prev?;
        // The previous op of the chain: gone (its completion delivered) counts as done.
        Some(
            self.pending
                .iter()
                .find(|p| p.id == prev)
                .map(|p| if p.executed { Some(p.failed) } else { None })
                .unwrap_or(Some(false)),
        )
    }

    pub(super) fn fail(&mut self, i: usize, res: i32) {
        self.pending[i].executed = true;
        self.pending[i].failed = true;
        self.queue(i, res, 0, true);
    }

    fn try_execute(&mut self, i: usize, mem: &mut VecMemory) -> bool {
        if self.pending[i].final_queued || (self.pending[i].executed && !self.pending[i].armed) {
            return false;
        }
        // A chain runs in order; a failure cancels the rest.
        match self.prev_state(i) {
            Some(None) => return false,
            Some(Some(true)) => {
                self.fail(i, -libc::ECANCELED);
                return true;
            }
            _ => {}
        }
        let op = self.pending[i].op;
        match op {
            Op::Cancel { target } => self.exec_cancel(i, target, mem),
            Op::RecvDatagram { fd, buf, off, len } => self.exec_recv(i, fd, buf, off, len, mem),
            Op::RecvMulti { fd, group } => self.exec_recv_multi(i, fd, group, mem),
            Op::ReadStream { fd, .. } | Op::ReadvStream { fd, .. } => self.exec_read(i, fd, mem),
            Op::Write { fd, .. } | Op::Writev { fd, .. } | Op::SendGso { fd, .. } => {
                self.exec_write(i, fd, mem, false)
            }
            Op::SendZc { fd, .. } => self.exec_write(i, fd, mem, true),
            Op::Accept { fd } => self.exec_accept(i, fd),
            Op::PollOut { fd } => self.exec_connect(i, fd),
            Op::PollHangup { fd } => self.exec_hangup(i, fd),
            Op::WriteAt { .. } | Op::WritevAt { .. } | Op::ReadAt { .. } | Op::Fsync { .. } => {
                self.exec_spool(i, mem)
            }
            Op::PollIn { .. } | Op::Splice { .. } | Op::Tee { .. } => {
                self.violation(format!("unexpected splice-path op {op:?}"));
                self.fail(i, -libc::EINVAL);
                true
            }
        }
    }

    fn exec_cancel(&mut self, i: usize, target: Token, mem: &mut VecMemory) -> bool {
        let ud = target.encode();
        let find = |k: &Kernel| {
            k.pending.iter().position(|p| {
                p.token.encode() == ud && !p.final_queued && !matches!(p.op, Op::Cancel { .. })
            })
        };
        let mut t = find(self);
        if let Some(ti) = t {
            // A race: the target may get there first and complete normally.
            if self.rng.chance(self.faults.cancel_race) && self.try_execute(ti, mem) {
                t = find(self);
            }
        }
        self.pending[i].executed = true;
        match t {
            Some(t) => {
                self.pending[t].executed = true;
                self.pending[t].failed = true;
                let res = if self.rng.chance(200) {
                    -libc::EINTR
                } else {
                    -libc::ECANCELED
                };
                self.queue(t, res, 0, true);
                self.queue(i, 0, 0, true);
            }
            None => {
                let res = if self.rng.chance(500) {
                    -libc::EALREADY
                } else {
                    -libc::ENOENT
                };
                self.queue(i, res, 0, true);
            }
        }
        true
    }

    fn exec_accept(&mut self, i: usize, fd: Fd) -> bool {
        let shut = match self.objs.get(&fd) {
            Some(Obj::Listener { shut, .. }) => *shut,
            _ => {
                self.violation(format!("accept on fd {fd}: not a listener"));
                self.fail(i, -libc::EBADF);
                return true;
            }
        };
        if shut {
            self.pending[i].executed = true;
            self.queue(i, -libc::EINVAL, 0, true);
            return true;
        }
        if self.backlog.get(&fd).is_none_or(|q| q.is_empty()) {
            return false;
        }
        self.pending[i].executed = true;
        if self.rng.chance(self.faults.error / 2) {
            self.queue(i, -libc::EMFILE, 0, true);
            return true;
        }
        let ci = self.backlog.get_mut(&fd).unwrap().pop_front().unwrap();
        let nfd = self.fd(Obj::Stream(ci));
        // Multishot: stays armed (the driver uses multishot accept where the kernel has it;
        // the simulation always does).
        self.queue(i, nfd, CQE_F_MORE, false);
        true
    }

    fn exec_connect(&mut self, i: usize, fd: Fd) -> bool {
        let Some(ci) = self.stream(fd) else {
            self.violation(format!("connect wait on fd {fd}: not a stream"));
            self.fail(i, -libc::EBADF);
            return true;
        };
        let c = &self.conns[ci];
        if c.accepted.is_none() && !c.shut {
            return false;
        }
        self.pending[i].executed = true;
        let mask = if c.accepted == Some(true) && !c.shut {
            libc::POLLOUT
        } else {
            libc::POLLOUT | libc::POLLERR | libc::POLLHUP
        };
        self.queue(i, i32::from(mask), 0, true);
        true
    }

    fn exec_hangup(&mut self, i: usize, fd: Fd) -> bool {
        let Some(ci) = self.stream(fd) else {
            self.violation(format!("hang-up watch on fd {fd}: not a stream"));
            self.fail(i, -libc::EBADF);
            return true;
        };
        let c = &self.conns[ci];
        if !(c.half_closed || c.gone || c.shut || c.has_rx()) {
            return false;
        }
        self.pending[i].executed = true;
        let mask = if c.shut {
            libc::POLLHUP | libc::POLLRDHUP
        } else if c.half_closed || c.gone {
            libc::POLLRDHUP | libc::POLLIN
        } else {
            // The peer sent bytes (a subscriber's commands).
            libc::POLLIN
        };
        self.queue(i, i32::from(mask), 0, true);
        true
    }
}
