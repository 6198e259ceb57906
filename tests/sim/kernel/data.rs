//! The simulated kernel's data path: datagram receives (single and multishot), stream reads,
//! writes to every kind of peer (connections, brokers, UDP destinations, files, spool
//! segments), zero-copy notifications, and the provenance of the bytes they move: where
//! each byte of a write came from (`Kernel::positions`), checked in stream order.

use super::*;
use ringrelay::engine::buffers::{BufId, VecMemory};
use ringrelay::engine::io::{
    Fd, Memory, Op, CQE_BUFFER_SHIFT, CQE_F_BUFFER, CQE_F_MORE, CQE_F_NOTIF,
};
use ringrelay::engine::outq::Chunk;

impl Kernel {
    pub(super) fn udp_chan(&self, fd: Fd) -> Option<usize> {
        match self.objs.get(&fd) {
            Some(Obj::UdpIn(c)) => Some(*c),
            _ => None,
        }
    }

    pub(super) fn write_datagram(
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

    pub(super) fn exec_recv(
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

    pub(super) fn exec_recv_multi(
        &mut self,
        i: usize,
        fd: Fd,
        group: u16,
        mem: &mut VecMemory,
    ) -> bool {
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

    pub(super) fn stream(&self, fd: Fd) -> Option<usize> {
        match self.objs.get(&fd) {
            Some(Obj::Stream(c)) => Some(*c),
            _ => None,
        }
    }

    pub(super) fn exec_read(&mut self, i: usize, fd: Fd, mem: &mut VecMemory) -> bool {
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
    pub(super) fn check_order(&mut self, last: Option<Pos>, got: &[Pos], what: &str) {
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
    pub(super) fn positions_of_pieces(&mut self, mem: &VecMemory, c: Chunk) -> Vec<Pos> {
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

    pub(super) fn exec_write(&mut self, i: usize, fd: Fd, mem: &mut VecMemory, zc: bool) -> bool {
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
    pub(super) fn broker_write(&mut self, ci: usize, chunks: &[Chunk], n: u32, mem: &VecMemory) {
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
}
