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

use super::broker::BrokerConn;
use super::files::Files;
use super::rng::Rng;
use super::spoolfs::{Runs, SpoolFs};
use ringrelay::engine::buffers::{BufId, VecMemory};
use ringrelay::engine::io::{
    Bound, Completion, Dialing, Effects, Fd, FileState, Memory, Op, Pipe, Publish, SpoolFiles, Sys,
    CQE_BUFFER_SHIFT, CQE_F_BUFFER, CQE_F_MORE, CQE_F_NOTIF,
};
use ringrelay::engine::outq::Chunk;
use ringrelay::engine::token::Token;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::path::Path;

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

    fn udp_chan(&self, fd: Fd) -> Option<usize> {
        match self.objs.get(&fd) {
            Some(Obj::UdpIn(c)) => Some(*c),
            _ => None,
        }
    }

    fn write_datagram(
        &mut self,
        mem: &mut VecMemory,
        buf: BufId,
        off: u32,
        room: u32,
        seq: u64,
        len: u32,
    ) -> u32 {
        let n = len.min(room);
        let bytes: Vec<u8> = (0..u64::from(n)).map(|k| datagram_byte(seq, k)).collect();
        mem.write(buf, off, &bytes);
        self.pieces[usize::from(buf)] = None;
        self.prov[usize::from(buf)] = Some(Prov::Datagram {
            payload_off: off,
            seq,
            len,
        });
        n
    }

    fn exec_recv(
        &mut self,
        i: usize,
        fd: Fd,
        buf: BufId,
        off: u32,
        len: u32,
        mem: &mut VecMemory,
    ) -> bool {
        let Some(c) = self.udp_chan(fd) else {
            self.violation(format!("recv on fd {fd}, not a UDP input"));
            self.fail(i, -libc::EBADF);
            return true;
        };
        if self.rng.chance(self.faults.error / 4) {
            self.fail(i, -libc::ENOMEM);
            return true;
        }
        let Some((seq, dlen)) = self.udp_in.get_mut(&c).and_then(|q| q.pop_front()) else {
            return false;
        };
        self.write_datagram(mem, buf, off, len, seq, dlen);
        self.pending[i].executed = true;
        // MSG_TRUNC: the datagram's real length.
        self.queue(i, dlen as i32, 0, true);
        true
    }

    fn exec_recv_multi(&mut self, i: usize, fd: Fd, group: u16, mem: &mut VecMemory) -> bool {
        let Some(c) = self.udp_chan(fd) else {
            self.violation(format!("multishot recv on fd {fd}, not a UDP input"));
            self.fail(i, -libc::EBADF);
            return true;
        };
        if self.udp_in.get(&c).is_none_or(|q| q.is_empty()) {
            return false;
        }
        self.pending[i].executed = true;
        if self.rng.chance(self.faults.error / 4) {
            self.queue(i, -libc::ENOMEM, 0, true);
            return true;
        }
        let Some(buf) = self.groups.get_mut(&group).and_then(|g| g.pop_front()) else {
            // The ring is dry: the receive ends, the datagram stays in the socket.
            self.queue(i, -libc::ENOBUFS, 0, true);
            return true;
        };
        let (seq, dlen) = self.udp_in.get_mut(&c).unwrap().pop_front().unwrap();
        let size = self.sizes[usize::from(buf)];
        let room = size - 16;
        let n = self.write_datagram(mem, buf, 16, room, seq, dlen);
        let mut hdr = [0u8; 16];
        hdr[8..12].copy_from_slice(&dlen.to_ne_bytes());
        if dlen > room {
            hdr[12..16].copy_from_slice(&(libc::MSG_TRUNC as u32).to_ne_bytes());
        }
        mem.write(buf, 0, &hdr);
        let flags = CQE_F_BUFFER | (u32::from(buf) << CQE_BUFFER_SHIFT) | CQE_F_MORE;
        self.queue(i, 16 + n as i32, flags, false);
        true
    }

    fn stream(&self, fd: Fd) -> Option<usize> {
        match self.objs.get(&fd) {
            Some(Obj::Stream(c)) => Some(*c),
            _ => None,
        }
    }

    fn exec_read(&mut self, i: usize, fd: Fd, mem: &mut VecMemory) -> bool {
        let Some(ci) = self.stream(fd) else {
            self.violation(format!("read on fd {fd}, not a stream"));
            self.fail(i, -libc::EBADF);
            return true;
        };
        let c = &self.conns[ci];
        // Keepalive notices a vanished peer some time after its last byte.
        let timed_out = c.vanished && c.keepalive && !c.shut && c.rx.is_empty();
        // A peer of an output that half-closed reads as the end of its bytes; one that is
        // gone (reset) as ECONNRESET.
        let eof = c.rx_eof || c.half_closed;
        let reset = c.rx_reset || c.gone;
        let idle = !c.has_rx() && !eof && !reset && !c.rx_eio && !c.shut;
        if idle && !(timed_out && self.rng.chance(100)) {
            return false;
        }
        self.pending[i].executed = true;
        let c = &mut self.conns[ci];
        if reset || c.rx_eio {
            c.rx.clear();
            let e = if c.rx_eio {
                libc::EIO
            } else {
                libc::ECONNRESET
            };
            self.queue(i, -e, 0, true);
            return true;
        }
        if timed_out {
            self.queue(i, -libc::ETIMEDOUT, 0, true);
            return true;
        }
        if let Some(b) = c.broker.as_mut().filter(|b| !b.out.is_empty()) {
            // A broker's packets: literal bytes.
            let chunks = self.pending[i].chunks.clone();
            let total: usize = chunks.iter().map(|c| c.len as usize).sum();
            let avail = b.out.len().min(total);
            let n = if self.rng.chance(self.faults.short_io) {
                self.rng.range(1, avail)
            } else {
                avail
            };
            let mut left = n;
            for ch in &chunks {
                let k = left.min(ch.len as usize);
                if k == 0 {
                    break;
                }
                let b = self.conns[ci].broker.as_mut().expect("a broker");
                let bytes: Vec<u8> = b.out.drain(..k).collect();
                mem.write(ch.buf, ch.off, &bytes);
                self.prov[usize::from(ch.buf)] = None;
                self.pieces[usize::from(ch.buf)] = None;
                left -= k;
            }
            self.queue(i, n as i32, 0, true);
            return true;
        }
        if c.rx.is_empty() {
            self.queue(i, 0, 0, true);
            return true;
        }
        let chunks = self.pending[i].chunks.clone();
        let total: u32 = chunks.iter().map(|c| c.len).sum();
        let avail = self.conns[ci].rx.len().min(total as usize);
        let n = if self.rng.chance(self.faults.short_io) {
            self.rng.range(1, avail)
        } else {
            avail
        };
        let mut left = n as u32;
        for ch in &chunks {
            let k = left.min(ch.len);
            if k == 0 {
                break;
            }
            let pos: Vec<u64> = self.conns[ci].rx.drain(..k as usize).collect();
            let bytes: Vec<u8> = pos.iter().map(|&p| pattern(p)).collect();
            mem.write(ch.buf, ch.off, &bytes);
            // Positions within one read are consecutive unless the producer's stream had a
            // hole (a reset): record the first; the check walks byte by byte anyway.
            self.pieces[usize::from(ch.buf)] = None;
            self.prov[usize::from(ch.buf)] = Some(Prov::Stream {
                at: ch.off,
                pos: pos[0],
            });
            if let Some(Who::Input(chan)) = self.conns[ci].who {
                self.chunks.push((chan, pos[0], u64::from(k)));
            }
            if pos.windows(2).any(|w| w[1] != w[0] + 1) {
                self.violation("non-consecutive producer bytes in one buffer".into());
            }
            left -= k;
        }
        self.queue(i, n as i32, 0, true);
        true
    }

    /// What a peer received next is after what it had, in stream order.
    fn check_order(&mut self, last: Option<Pos>, got: &[Pos], what: &str) {
        let mut prev = last;
        for &p in got {
            if prev.is_some_and(|q| p <= q) {
                self.violation(format!(
                    "{what} received position {p} after {}",
                    prev.unwrap()
                ));
                return;
            }
            prev = Some(p);
        }
    }

    /// Where each byte of `chunk` came from, and whether its content is still what the
    /// kernel put there.
    pub fn positions(&mut self, mem: &VecMemory, c: Chunk) -> Vec<Pos> {
        if self.pieces[usize::from(c.buf)].is_some() {
            return self.positions_of_pieces(mem, c);
        }
        let Some(p) = self.prov[usize::from(c.buf)] else {
            self.violation(format!("send of buffer {} that no receive filled", c.buf));
            return Vec::new();
        };
        let bytes = mem.bytes(c.buf, c.off, c.len).to_vec();
        let mut out = Vec::with_capacity(c.len as usize);
        for (k, &b) in bytes.iter().enumerate() {
            let x = c.off + k as u32;
            let (pos, want) = match p {
                Prov::Stream { at, pos } => {
                    let q = pos + u64::from(x.wrapping_sub(at));
                    (q, pattern(q))
                }
                Prov::Datagram {
                    payload_off,
                    seq,
                    len,
                } => {
                    if x >= payload_off {
                        let idx = u64::from(x - payload_off);
                        ((seq << 20) | (4 + idx), datagram_byte(seq, idx))
                    } else if x + 4 >= payload_off {
                        let idx = x + 4 - payload_off;
                        (
                            (seq << 20) | u64::from(idx),
                            len.to_be_bytes()[idx as usize],
                        )
                    } else {
                        self.violation(format!("send of buffer {} before its data", c.buf));
                        return out;
                    }
                }
            };
            if b != want {
                self.violation(format!(
                    "buffer {} byte {x} changed while held: {b} != {want}",
                    c.buf
                ));
                return out;
            }
            out.push(pos);
        }
        out
    }

    /// As [`Kernel::positions`], for a buffer that holds spool records (its origins by range).
    fn positions_of_pieces(&mut self, mem: &VecMemory, c: Chunk) -> Vec<Pos> {
        let bytes = mem.bytes(c.buf, c.off, c.len).to_vec();
        let r = self.pieces[usize::from(c.buf)].as_ref().expect("checked");
        let mut out = Vec::with_capacity(c.len as usize);
        let mut bad = None;
        for (k, &b) in bytes.iter().enumerate() {
            let x = c.off + k as u32;
            let Some(src) = r.find(u64::from(x)) else {
                bad = Some(format!(
                    "send of buffer {} byte {x}: no input byte (a spool record header?)",
                    c.buf
                ));
                break;
            };
            let (pos, want) = src.pos_want();
            if b != want {
                bad = Some(format!(
                    "buffer {} byte {x} (replayed from a spool) is {b}, not {want} (position {pos})",
                    c.buf
                ));
                break;
            }
            out.push(pos);
        }
        if let Some(v) = bad {
            self.violation(v);
        }
        out
    }

    fn exec_write(&mut self, i: usize, fd: Fd, mem: &mut VecMemory, zc: bool) -> bool {
        let chunks = self.pending[i].chunks.clone();
        let gso = matches!(self.pending[i].op, Op::SendGso { .. });
        let total: u32 = chunks.iter().map(|c| c.len).sum();
        match self.objs.get(&fd) {
            Some(&Obj::UdpOut(c, o)) => {
                // Sends on one UDP socket leave in submission order.
                let first = self.pending.iter().position(|p| {
                    !p.executed
                        && matches!(p.op, Op::Write { fd: f, .. } | Op::SendGso { fd: f, .. } if f == fd)
                });
                if first != Some(i) {
                    return false;
                }
                self.pending[i].executed = true;
                if gso && !self.gso_refused && self.rng.chance(self.faults.error) {
                    self.gso_refused = true;
                    self.queue(i, -libc::EIO, 0, true);
                    return true;
                }
                if self.refusing.get(&(c, o)).copied().unwrap_or(false) {
                    self.queue(i, -libc::ECONNREFUSED, 0, true);
                    return true;
                }
                for ch in &chunks {
                    let p = self.positions(mem, *ch);
                    let last = self
                        .sinks
                        .get(&(c, o))
                        .and_then(|d| d.last())
                        .and_then(|d| d.last())
                        .copied();
                    self.check_order(last, &p, &format!("output {o} of c{c}"));
                    self.sinks.entry((c, o)).or_default().push(p);
                }
                self.queue(i, total as i32, 0, true);
                true
            }
            Some(&Obj::File(c, o)) => {
                self.pending[i].executed = true;
                if self.rng.chance(self.faults.error / 2) {
                    self.queue(i, -libc::EIO, 0, true);
                    return true;
                }
                let mut all = Vec::new();
                for ch in &chunks {
                    all.extend(self.positions(mem, *ch));
                }
                let s = self.sinks.entry((c, o)).or_default();
                if s.is_empty() {
                    s.push(Vec::new());
                }
                let last = s[0].last().copied();
                s[0].extend_from_slice(&all);
                self.check_order(last, &all, &format!("file output {o} of c{c}"));
                self.queue(i, total as i32, 0, true);
                true
            }
            Some(&Obj::Stream(ci)) => {
                let c = &self.conns[ci];
                // A producer reads what the relay writes to it (a subscriber's commands) at
                // once: its room is not modelled.
                let producer = matches!(c.who, Some(Who::Input(_)));
                if c.room == 0 && !c.gone && !c.shut && !producer {
                    return false;
                }
                self.pending[i].executed = true;
                let c = &self.conns[ci];
                if c.gone || c.shut {
                    let e = if self.rng.chance(500) {
                        -libc::EPIPE
                    } else {
                        -libc::ECONNRESET
                    };
                    self.queue(i, e, 0, true);
                    return true;
                }
                if self.rng.chance(self.faults.error / 4) {
                    // The kernel ran out of socket memory for this send.
                    self.queue(i, -libc::ENOBUFS, 0, true);
                    return true;
                }
                let max = if producer {
                    total as usize
                } else {
                    (total as usize).min(c.room)
                };
                let n = if self.rng.chance(self.faults.short_io) {
                    self.rng.range(1, max)
                } else {
                    max
                };
                if self.conns[ci].broker.is_some() {
                    self.broker_write(ci, &chunks, n as u32, mem);
                    self.conns[ci].room -= n;
                    self.queue(i, n as i32, 0, true);
                    return true;
                }
                let mut left = n as u32;
                let mut got = Vec::new();
                for ch in &chunks {
                    let k = left.min(ch.len);
                    if k == 0 {
                        break;
                    }
                    got.extend(self.positions(
                        mem,
                        Chunk {
                            buf: ch.buf,
                            off: ch.off,
                            len: k,
                        },
                    ));
                    left -= k;
                }
                let c = &mut self.conns[ci];
                if producer {
                    // Commands: in order per subscriber, and only subscribers' bytes.
                    for &p in &got {
                        let Some(from) = talker_of(p) else {
                            self.violation(format!(
                                "producer connection {ci} got stream position {p}"
                            ));
                            break;
                        };
                        let c = &self.conns[ci];
                        let last = c
                            .received
                            .iter()
                            .rev()
                            .find(|&&q| talker_of(q) == Some(from));
                        if last.is_some_and(|&q| q >= p) {
                            self.violation(format!(
                                "producer connection {ci} got command position {p} of connection {from} after {}",
                                last.unwrap()
                            ));
                        }
                        self.conns[ci].received.push(p);
                    }
                } else {
                    c.room -= n;
                    let last = c.received.last().copied();
                    let who = c.who;
                    c.received.extend_from_slice(&got);
                    self.check_order(last, &got, &format!("connection {ci} ({who:?})"));
                }
                if zc {
                    self.pending[i].notif_owed = true;
                    self.queue(i, n as i32, CQE_F_MORE, false);
                } else {
                    self.queue(i, n as i32, 0, true);
                }
                true
            }
            _ => {
                self.violation(format!("write on fd {fd}: not an output"));
                self.fail(i, -libc::EBADF);
                true
            }
        }
    }

    /// The first `n` bytes of `chunks` reach broker connection `ci`: whole PUBLISHes among
    /// them are checked (their payload's bytes must be what the kernel put in the buffer) and
    /// kept.
    fn broker_write(&mut self, ci: usize, chunks: &[Chunk], n: u32, mem: &VecMemory) {
        let mut bytes = Vec::new();
        let mut src = Vec::new();
        let mut left = n;
        for ch in chunks {
            let k = left.min(ch.len);
            bytes.extend_from_slice(mem.bytes(ch.buf, ch.off, k));
            src.extend((0..k).map(|x| (ch.buf, ch.off + x)));
            left -= k;
        }
        let b = self.conns[ci].broker.as_mut().expect("a broker");
        match b.take(&bytes, &src) {
            Ok(payloads) => {
                for p in payloads {
                    let pos = self.positions(
                        mem,
                        Chunk {
                            buf: p.buf,
                            off: p.off,
                            len: p.len,
                        },
                    );
                    let b = self.conns[ci].broker.as_mut().expect("a broker");
                    b.msgs.push((pos, p.dup));
                }
            }
            Err(e) => self.violation(format!("broker connection {ci}: {e}")),
        }
    }

    /// Posts the notification of one zero-copy send whose result was posted (the network
    /// stack let go of the pages), if any is owed.
    pub fn notify_one(&mut self) -> bool {
        let owed: Vec<usize> = (0..self.pending.len())
            .filter(|&i| self.pending[i].notif_owed)
            .collect();
        if owed.is_empty() {
            return false;
        }
        let i = owed[self.rng.below(owed.len())];
        self.pending[i].notif_owed = false;
        self.queue(i, 0, CQE_F_NOTIF, true);
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

/// What the engine's `Sys` calls do in the simulated world.
impl Sys for Kernel {
    fn bind(&mut self, cfg: &ringrelay::config::ChannelConfig) -> Result<Bound, String> {
        use ringrelay::config::url::{Scheme, Target};
        let chan = cfg
            .name
            .trim_start_matches('c')
            .parse::<usize>()
            .map_err(|_| format!("channel {}: not a simulated channel", cfg.name))?;
        self.bound_channels += 1;
        let mut b = Bound::default();
        match cfg.input.scheme {
            Scheme::Udp => b.input = Some(self.fd(Obj::UdpIn(chan))),
            Scheme::TcpListen => {
                b.input_listener = Some(self.fd(Obj::Listener {
                    who: Who::Input(chan),
                    shut: false,
                }))
            }
            _ => {
                self.urls.insert(cfg.input.url(), Who::Input(chan));
            }
        }
        for (o, oc) in cfg.outputs.iter().enumerate() {
            let fd = match oc.endpoint.scheme {
                Scheme::TcpListen => Some((
                    self.fd(Obj::Listener {
                        who: Who::Output(chan, o),
                        shut: false,
                    }),
                    0,
                )),
                Scheme::Udp => Some((self.fd(Obj::UdpOut(chan, o)), 0)),
                Scheme::File => {
                    let Target::Path(p) = &oc.endpoint.target else {
                        return Err(format!("channel {}: a file without a path", cfg.name));
                    };
                    self.files.paths.insert(p.clone(), (chan, o));
                    let fd = self.fd(Obj::File(chan, o));
                    self.files.opened(fd, (chan, o));
                    Some((fd, 0))
                }
                _ => {
                    self.urls.insert(oc.endpoint.url(), Who::Output(chan, o));
                    None
                }
            };
            b.outputs.push(fd);
        }
        Ok(b)
    }

    fn dial(&mut self, ep: &ringrelay::config::url::Endpoint) -> io::Result<Dialing> {
        let Some(&who) = self.urls.get(&ep.url()) else {
            return Err(io::Error::from_raw_os_error(libc::EHOSTUNREACH));
        };
        if self.rng.chance(self.faults.error / 2) {
            return Err(io::Error::from_raw_os_error(libc::ENETUNREACH));
        }
        let ci = self.conn(who, 0);
        let fd = self.fd(Obj::Stream(ci));
        self.note(format!("dial {who:?} -> fd {fd} conn {ci}"));
        Ok(Dialing {
            fd,
            in_progress: true,
        })
    }

    /// A serial port opens while its device is plugged in (and the seed does not make it
    /// busy), as a stream the relay reads.
    fn open_serial(&mut self, ep: &ringrelay::config::url::Endpoint) -> io::Result<(Fd, String)> {
        let chan = match self.urls.get(&ep.url()) {
            Some(&Who::Input(c)) if self.serial_plugged.get(&c) == Some(&true) => c,
            _ => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
        };
        if self.rng.chance(self.faults.error / 2) {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        let ci = self.conn(Who::Input(chan), 0);
        self.conns[ci].serial = true;
        self.conns[ci].accepted = Some(true);
        let fd = self.fd(Obj::Stream(ci));
        self.note(format!("open serial of c{chan} -> fd {fd} conn {ci}"));
        Ok((fd, format!("/dev/ttySIM{ci}")))
    }

    fn finish_connect(&mut self, fd: Fd) -> io::Result<()> {
        let Some(ci) = self.stream(fd) else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        if self.conns[ci].accepted == Some(true) && !self.conns[ci].shut {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::ECONNREFUSED))
        }
    }

    fn udp_output(&mut self, _ep: &ringrelay::config::url::Endpoint) -> io::Result<Fd> {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }

    fn open_append(&mut self, path: &Path) -> io::Result<(Fd, u64)> {
        let (c, o) = self.files.may_open(path)?;
        if self.rng.chance(self.faults.error / 2) {
            // Out of descriptors, or the directory went and came back between two calls.
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        let fd = self.fd(Obj::File(c, o));
        self.files.opened(fd, (c, o));
        self.note(format!("open {} -> fd {fd}", path.display()));
        Ok((fd, 0))
    }

    fn rotate(&mut self, path: &Path, _keep: u32) -> io::Result<Fd> {
        // The file is renamed (its sink goes on: it is the same output) and a new one opened.
        let (c, o) = self.files.may_open(path)?;
        if self.rng.chance(self.faults.error / 2) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let fd = self.fd(Obj::File(c, o));
        self.files.opened(fd, (c, o));
        self.note(format!("rotate {} -> fd {fd}", path.display()));
        Ok(fd)
    }

    fn file_state(&mut self, fd: Fd, path: &Path) -> FileState {
        let out = self.files.out_of(path).ok();
        match self.objs.get(&fd) {
            Some(&Obj::File(c, o)) if out == Some((c, o)) => self.files.state(fd),
            // A serial port: its device unplugged, and maybe another one plugged in since.
            Some(&Obj::Stream(ci)) if self.conns[ci].serial => {
                let k = &self.conns[ci];
                let plugged = matches!(k.who, Some(Who::Input(c)) if self.serial_plugged.get(&c) == Some(&true));
                match (k.rx_eio || k.rx_eof, plugged) {
                    (false, _) => FileState::Linked,
                    (true, false) => FileState::Deleted,
                    (true, true) => FileState::Replaced,
                }
            }
            obj => {
                let s = format!("file_state of fd {fd} ({obj:?}) for {}", path.display());
                self.violation(s);
                FileState::Linked
            }
        }
    }

    fn fsync(&mut self, fd: Fd) {
        if !self.objs.contains_key(&fd) {
            self.violation(format!("fsync of fd {fd}, not open"));
        }
    }

    fn shutdown(&mut self, fd: Fd) {
        self.note(format!("shutdown fd {fd}"));
        match self.objs.get_mut(&fd) {
            Some(Obj::Stream(ci)) => {
                let ci = *ci;
                self.conns[ci].shut = true;
            }
            Some(Obj::Listener { shut, .. }) => *shut = true,
            Some(_) => {}
            None => self.violation(format!("shutdown of fd {fd}, not open")),
        }
    }

    fn close(&mut self, fd: Fd) {
        self.note(format!("close fd {fd}"));
        if let Some(p) = self
            .pending
            .iter()
            .find(|p| Self::op_fd(&p.op) == Some(fd) && !(p.final_queued && p.owed == 0))
        {
            let s = format!(
                "fd {fd} closed while #{} {:?} is in flight on it",
                p.id, p.op
            );
            self.violation(s);
        }
        match self.objs.remove(&fd) {
            Some(Obj::Stream(ci)) => {
                let c = &mut self.conns[ci];
                c.closed = true;
                c.shut = true;
            }
            Some(Obj::Listener { .. }) => {
                // Connections waiting in its backlog are reset.
                if let Some(q) = self.backlog.remove(&fd) {
                    for ci in q {
                        self.conns[ci].gone = true;
                        self.conns[ci].closed = true;
                    }
                }
            }
            Some(Obj::File(..)) => self.files.closed(fd),
            Some(_) => {}
            None => self.violation(format!("close of fd {fd}, not open")),
        }
        self.closed_fds += 1;
    }

    fn peer(&mut self, fd: Fd) -> (String, Option<IpAddr>) {
        (format!("peer-of-{fd}"), Some(IpAddr::from([127, 0, 0, 1])))
    }

    fn set_sndbuf(&mut self, _fd: Fd, _bytes: u64) {}

    fn readable(&mut self, fd: Fd) -> bool {
        self.udp_chan(fd)
            .is_some_and(|c| self.udp_in.get(&c).is_some_and(|q| !q.is_empty()))
    }

    fn rcvbuf(&mut self, _fd: Fd) -> u64 {
        // A few dozen of the simulation's datagrams: a drain that never ends is caught.
        16_384
    }

    fn set_keepalive(&mut self, fd: Fd, _k: ringrelay::config::keepalive::Keepalive) {
        match self.stream(fd) {
            Some(ci) => self.conns[ci].keepalive = true,
            None => self.violation(format!("keepalive on fd {fd}: not a stream")),
        }
    }

    fn set_nonblocking(&mut self, _fd: Fd) -> io::Result<()> {
        Ok(())
    }

    fn pipe(&mut self, _size: u32) -> io::Result<Pipe> {
        let read = self.fd(Obj::Pipe);
        let write = self.fd(Obj::Pipe);
        Ok(Pipe {
            read,
            write,
            cap: 65536,
            shrunk: false,
        })
    }

    fn publisher(
        &mut self,
        cfg: &ringrelay::config::ChannelConfig,
    ) -> Result<Box<dyn Publish>, String> {
        Err(format!("channel {}: no shared memory here", cfg.name))
    }

    fn open_buf_ring(&mut self, group: u16, _entries: u16) -> bool {
        if self.groups.contains_key(&group) {
            self.violation(format!("buffer group {group} opened twice"));
        }
        self.groups.insert(group, VecDeque::new());
        true
    }

    fn provide(&mut self, group: u16, bufs: &[BufId]) {
        match self.groups.get_mut(&group) {
            Some(g) => g.extend(bufs.iter().copied()),
            None => self.violation(format!("buffers provided to closed group {group}")),
        }
    }

    fn close_buf_ring(&mut self, group: u16) -> bool {
        let armed = self.pending.iter().any(|p| {
            matches!(p.op, Op::RecvMulti { group: g, .. } if g == group)
                && !(p.final_queued && p.owed == 0)
        });
        if armed {
            self.violation(format!(
                "buffer group {group} closed while its multishot receive is in flight"
            ));
        }
        self.groups.remove(&group);
        true
    }

    fn cap_workers(&mut self, _n: u32) -> io::Result<()> {
        Ok(())
    }

    fn spool_open(&mut self, dir: &Path) -> io::Result<SpoolFiles> {
        self.spool_open_sim(dir)
    }

    fn spool_create(&mut self, dir: &Path, seq: u64) -> io::Result<Fd> {
        self.spool_create_sim(dir, seq)
    }

    fn spool_remove(&mut self, dir: &Path, seq: u64) {
        self.spool_remove_sim(dir, seq)
    }
}
