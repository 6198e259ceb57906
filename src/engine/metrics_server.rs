//! The HTTP server of `metrics = HOST:PORT`: `/metrics` and `/healthz` served on the one ring.
//!
//! Owns: the listener the driver bound (handed over by [`super::Engine::start_metrics`]), its
//! connections and their state machine. The engine's side (dispatch, rendering the page) is
//! `metrics_page`. Every operation is tagged with a daemon-level token (channel
//! [`DAEMON_CHANNEL`]; `HttpAccept`, `HttpPoll`, `HttpRecv`, `HttpSend`, endpoint = the
//! connection's slot, its generation).
//!
//! A connection: `PollIn` until the peer sent bytes; then one read into a pool buffer, whose
//! bytes are copied into the connection's request (at most [`MAX_REQUEST`] bytes) and the buffer
//! returned at once; the request parsed ([`crate::metrics::http`]); the response rendered
//! into the connection's own bytes and written one pool buffer at a time (a short write goes
//! on where it stopped); then the next request (keep-alive) or close.
//!
//! Bounds, so that scraping cannot disturb the data path: [`MAX_CONNECTIONS`] open at once
//! (a newcomer when all are open closes the one idle longest, if one waits for a request,
//! or is closed itself; both counted); a [`REQUEST_DEADLINE`] per request, enforced by the
//! tick (a slowloris, or a peer that does not read its response, is closed); at most
//! [`MAX_BUFFERS`] pool buffers held by the server, and none taken while fewer than an eighth
//! of the pool is free (the read or write waits for a tick); a peer outside `metrics_allow`
//! closed at once (counted).
//!
//! Closing: the connection is shut down (its operations in flight complete), its poll
//! cancelled, and its slot freed at once: it waits among the closing ones (found by its
//! generation) until its last completion, and only then is its descriptor closed.
//!
//! Must never: make a system call other than through [`super::io::Sys`], read a clock, or
//! hold a pool buffer past the completion of the operation it was taken for.

use super::buffers::{BufId, Class};
use super::io::{Completion, Fd, Op};
use super::outq::Chunk;
use super::token::{OpKind, Token, DAEMON_CHANNEL};
use super::{errno_str, Cx};
use crate::metrics::health::DownSince;
use crate::metrics::http::{self, Parsed, Request, Status, MAX_REQUEST};
use log::{info, warn};
use std::time::{Duration, Instant};

/// Most connections open at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Most connections waiting for their last completions after they were closed (beyond, a
/// newcomer is refused).
const MAX_CLOSING: usize = 4 * MAX_CONNECTIONS;
/// Time a connection has for each request, from its accept or its previous response.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long a rejected request's connection is drained before it closes.
pub const LINGER: Duration = Duration::from_secs(1);
/// Most pool buffers the server holds at once.
pub const MAX_BUFFERS: usize = 4;

/// The server's counters (`ringrelay_http_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpCounters {
    pub accepted: u64,
    /// Requests answered, by any status.
    pub requests: u64,
    /// Connections closed at once: a peer outside `metrics_allow`.
    pub denied: u64,
    /// Connections closed at once: every slot busy with a response.
    pub refused: u64,
    /// Idle connections closed to make room for a newcomer.
    pub evicted: u64,
    /// Connections closed at their request deadline.
    pub timeouts: u64,
    /// Requests answered 400, 405, 431 or 505.
    pub rejected: u64,
}

/// Process facts the driver knows and the page shows.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    pub started_real_ns: i64,
    pub started: Option<Instant>,
    pub kernel: String,
    pub features: String,
}

pub(super) struct Conn {
    fd: Fd,
    pub(super) gen: u32,
    /// Request bytes received and not yet answered.
    req: Vec<u8>,
    deadline: Instant,
    /// When it last finished a response (or was accepted): the oldest idle one is evicted.
    since: Instant,
    polling: bool,
    reading: Option<BufId>,
    /// The buffer and length of the write in flight.
    writing: Option<BufId>,
    /// The poll said readable but no buffer could be taken: read at the next tick.
    read_parked: bool,
    /// The response being written, and how much of it went.
    out: Vec<u8>,
    sent: usize,
    /// The request being answered: its head's length (dropped from `req` once answered).
    answering: Option<usize>,
    close_after: bool,
    /// The response rejects the request: after it, what the peer still sends is read and
    /// dropped until it closes or [`LINGER`] passes (closing with unread bytes would reset the
    /// connection and lose the response).
    linger: bool,
    lingering: bool,
    closing: bool,
}

impl Conn {
    fn in_flight(&self) -> bool {
        self.polling || self.reading.is_some() || self.writing.is_some()
    }

    fn token(&self, kind: OpKind, slot: usize) -> Token {
        Token::new(kind, DAEMON_CHANNEL, slot as u16, self.gen)
    }
}

/// The listener and its connections.
pub struct MetricsServer {
    listener: Option<Fd>,
    pub(super) gen: u32,
    accepting: bool,
    accept_failing: bool,
    /// Shutting down: the listener closes once its accept completed.
    stopping: bool,
    pub(super) conns: Vec<Option<Conn>>,
    /// Connections closed with operations still in flight, out of their slots (a completion
    /// finds one by its generation); each goes once its last completion arrived.
    closing: Vec<Conn>,
    held: usize,
    pub counters: HttpCounters,
    pub down_since: DownSince,
    /// Operations in flight on the ring at the last batch (the page's `ringrelay_ring_inflight`).
    pub ring_in_flight: usize,
}

/// A request parsed and waiting for its page.
pub(super) type Want = (usize, Result<Request, Status>);

impl MetricsServer {
    pub(super) fn new(listener: Fd, gen: u32) -> MetricsServer {
        MetricsServer {
            listener: Some(listener),
            gen,
            accepting: false,
            accept_failing: false,
            stopping: false,
            conns: (0..MAX_CONNECTIONS).map(|_| None).collect(),
            closing: Vec::new(),
            held: 0,
            counters: HttpCounters::default(),
            down_since: DownSince::default(),
            ring_in_flight: 0,
        }
    }

    /// Nothing open and nothing in flight.
    pub fn idle(&self) -> bool {
        self.listener.is_none()
            && !self.accepting
            && self.closing.is_empty()
            && self.conns.iter().all(Option::is_none)
    }

    fn open_conns(&self) -> usize {
        self.conns.iter().flatten().filter(|c| !c.closing).count()
    }

    pub(super) fn arm_accept(&mut self, cx: &mut Cx) {
        let Some(fd) = self.listener else { return };
        if self.accepting || self.stopping {
            return;
        }
        self.accepting = true;
        cx.push(
            Op::Accept { fd },
            Token::new(OpKind::HttpAccept, DAEMON_CHANNEL, 0, self.gen),
        );
    }

    pub(super) fn on_accept(
        &mut self,
        cx: &mut Cx,
        c: Completion,
        allow: &[crate::config::cidr::Cidr],
    ) {
        if !c.more() {
            self.accepting = false;
        }
        if c.res < 0 {
            if c.res != -libc::ECANCELED && !self.accept_failing && !self.stopping {
                self.accept_failing = true;
                warn!("metrics: accept failed: {}; retrying", errno_str(c.res));
            }
            self.close_listener_if_stopping(cx);
            return;
        }
        let fd = c.res;
        if std::mem::take(&mut self.accept_failing) {
            info!("metrics: accepting again");
        }
        if self.stopping {
            cx.sys.close(fd);
            self.close_listener_if_stopping(cx);
            return;
        }
        self.counters.accepted += 1;
        let (_, ip) = cx.sys.peer(fd);
        if !ip.is_some_and(|ip| allow.iter().any(|a| a.contains(ip))) {
            self.counters.denied += 1;
            cx.sys.close(fd);
            self.arm_accept(cx);
            return;
        }
        if self.open_conns() >= MAX_CONNECTIONS {
            let victim = self
                .conns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
                .filter(|(_, c)| !c.closing && c.answering.is_none())
                .min_by_key(|(_, c)| c.since)
                .map(|(i, _)| i);
            match victim {
                Some(v) => {
                    self.counters.evicted += 1;
                    self.close(cx, v);
                }
                None => {
                    self.counters.refused += 1;
                    cx.sys.close(fd);
                    self.arm_accept(cx);
                    return;
                }
            }
        }
        let free = self.conns.iter().position(Option::is_none);
        let Some(slot) = free.filter(|_| self.closing.len() < MAX_CLOSING) else {
            self.counters.refused += 1;
            cx.sys.close(fd);
            self.arm_accept(cx);
            return;
        };
        self.conns[slot] = Some(Conn {
            fd,
            gen: cx.gens.fresh(),
            req: Vec::new(),
            deadline: cx.now + REQUEST_DEADLINE,
            since: cx.now,
            polling: false,
            reading: None,
            writing: None,
            read_parked: false,
            out: Vec::new(),
            sent: 0,
            answering: None,
            close_after: false,
            linger: false,
            lingering: false,
            closing: false,
        });
        self.poll(cx, slot);
        self.arm_accept(cx);
    }

    fn close_listener_if_stopping(&mut self, cx: &mut Cx) {
        if self.stopping && !self.accepting {
            if let Some(fd) = self.listener.take() {
                cx.sys.close(fd);
            }
        }
    }

    fn poll(&mut self, cx: &mut Cx, slot: usize) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        if c.polling || c.closing {
            return;
        }
        c.polling = true;
        cx.push(Op::PollIn { fd: c.fd }, c.token(OpKind::HttpPoll, slot));
    }

    /// A pool buffer for the server, within its bounds.
    fn take_buffer(&mut self, cx: &mut Cx) -> Option<BufId> {
        let (free, total) = cx.pool.free_of(Class::Large);
        if self.held >= MAX_BUFFERS || free * 8 < total {
            return None;
        }
        let b = cx.pool.take_class(Class::Large)?;
        self.held += 1;
        Some(b)
    }

    fn give_back(&mut self, cx: &mut Cx, b: BufId) {
        cx.pool.release(b);
        self.held -= 1;
    }

    fn read(&mut self, cx: &mut Cx, slot: usize) {
        let buf = self.take_buffer(cx);
        let size = cx.pool.class_size(Class::Large);
        let Some(c) = self.conns[slot].as_mut() else {
            if let Some(b) = buf {
                cx.pool.abandon(b);
                self.held -= 1;
            }
            return;
        };
        let Some(buf) = buf else {
            c.read_parked = true;
            return;
        };
        c.read_parked = false;
        // One byte past the limit tells a head that is too long.
        let len = (MAX_REQUEST + 1 - c.req.len().min(MAX_REQUEST)).min(size as usize) as u32;
        c.reading = Some(buf);
        cx.push(
            Op::ReadStream {
                fd: c.fd,
                buf,
                off: 0,
                len,
            },
            c.token(OpKind::HttpRecv, slot),
        );
    }

    fn write(&mut self, cx: &mut Cx, slot: usize) {
        let Some(c) = self.conns[slot].as_ref() else {
            return;
        };
        if c.writing.is_some() || c.closing || c.sent >= c.out.len() {
            return;
        }
        let Some(buf) = self.take_buffer(cx) else {
            return;
        };
        let size = cx.pool.class_size(Class::Large) as usize;
        let c = self.conns[slot].as_mut().expect("checked above");
        let part = &c.out[c.sent..c.out.len().min(c.sent + size)];
        cx.mem.write(buf, 0, part);
        cx.pool.filled(buf);
        c.writing = Some(buf);
        cx.push(
            Op::Write {
                fd: c.fd,
                chunk: Chunk {
                    buf,
                    off: 0,
                    len: part.len() as u32,
                },
                socket: true,
            },
            c.token(OpKind::HttpSend, slot),
        );
    }

    /// Closes connection `slot`: at once when nothing is in flight, otherwise once its
    /// operations completed.
    fn close(&mut self, cx: &mut Cx, slot: usize) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        if !c.closing {
            c.closing = true;
            if c.polling {
                cx.cancel(c.token(OpKind::HttpPoll, slot));
            }
            if c.reading.is_some() || c.writing.is_some() {
                cx.sys.shutdown(c.fd);
            }
        }
        let c = self.conns[slot].take().expect("checked above");
        if c.in_flight() {
            self.closing.push(c);
        } else {
            cx.sys.close(c.fd);
        }
    }

    /// A completion of a connection closed earlier (found by generation): what the operation
    /// held goes back; the descriptor closes with the last one.
    pub(super) fn on_closed_conn(&mut self, cx: &mut Cx, gen: u32, kind: OpKind) {
        let Some(i) = self.closing.iter().position(|c| c.gen == gen) else {
            return;
        };
        let c = &mut self.closing[i];
        match kind {
            OpKind::HttpPoll => c.polling = false,
            OpKind::HttpRecv => {
                if let Some(b) = c.reading.take() {
                    cx.pool.abandon(b);
                    self.held -= 1;
                }
            }
            OpKind::HttpSend => {
                if let Some(b) = c.writing.take() {
                    cx.pool.release(b);
                    self.held -= 1;
                }
            }
            _ => {}
        }
        if !self.closing[i].in_flight() {
            let c = self.closing.swap_remove(i);
            cx.sys.close(c.fd);
        }
    }

    /// A completion of connection `slot` (already matched by generation).
    pub(super) fn on_conn(
        &mut self,
        cx: &mut Cx,
        slot: usize,
        kind: OpKind,
        res: i32,
    ) -> Option<Want> {
        let c = self.conns[slot].as_mut()?;
        match kind {
            OpKind::HttpPoll => {
                c.polling = false;
                if c.closing || res < 0 {
                    self.close(cx, slot);
                    return None;
                }
                self.read(cx, slot);
                None
            }
            OpKind::HttpRecv => {
                let buf = c.reading.take().expect("a read in flight holds its buffer");
                if res > 0 && c.lingering && !c.closing {
                    cx.pool.abandon(buf);
                    self.held -= 1;
                    self.poll(cx, slot);
                    return None;
                }
                if res > 0 && !c.closing {
                    cx.pool.filled(buf);
                    let bytes = cx.pool.bytes(cx.mem, buf, 0, res as u32);
                    c.req.extend_from_slice(bytes);
                    self.give_back(cx, buf);
                } else {
                    cx.pool.abandon(buf);
                    self.held -= 1;
                    self.close(cx, slot);
                    return None;
                }
                self.parse(cx, slot)
            }
            OpKind::HttpSend => {
                let buf = c
                    .writing
                    .take()
                    .expect("a write in flight holds its buffer");
                self.give_back(cx, buf);
                let c = self.conns[slot].as_mut()?;
                if res <= 0 || c.closing {
                    self.close(cx, slot);
                    return None;
                }
                c.sent += res as usize;
                if c.sent < c.out.len() {
                    self.write(cx, slot);
                    return None;
                }
                if c.close_after && c.linger {
                    c.lingering = true;
                    c.answering = None;
                    c.req = Vec::new();
                    c.deadline = cx.now + LINGER;
                    cx.sys.shutdown_write(c.fd);
                    self.poll(cx, slot);
                    return None;
                }
                if c.close_after {
                    self.close(cx, slot);
                    return None;
                }
                let n = c.answering.take().unwrap_or(0).min(c.req.len());
                c.req.drain(..n);
                c.out.clear();
                c.sent = 0;
                c.since = cx.now;
                c.deadline = cx.now + REQUEST_DEADLINE;
                if c.req.is_empty() {
                    self.poll(cx, slot);
                    None
                } else {
                    self.parse(cx, slot)
                }
            }
            _ => None,
        }
    }

    fn parse(&mut self, cx: &mut Cx, slot: usize) -> Option<Want> {
        let c = self.conns[slot].as_mut()?;
        match http::parse(&c.req) {
            Parsed::Incomplete => {
                self.poll(cx, slot);
                None
            }
            Parsed::Request(r) => {
                c.answering = Some(r.len);
                Some((slot, Ok(r)))
            }
            Parsed::Reject(s) => {
                c.answering = Some(c.req.len());
                Some((slot, Err(s)))
            }
        }
    }

    /// Sends `bytes` as the response of connection `slot`'s request.
    pub(super) fn respond(
        &mut self,
        cx: &mut Cx,
        slot: usize,
        bytes: Vec<u8>,
        close_after: bool,
        linger: bool,
    ) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        c.linger = linger;
        self.counters.requests += 1;
        c.out = bytes;
        c.sent = 0;
        c.close_after = close_after;
        self.write(cx, slot);
    }

    /// The tick: deadlines, parked reads and writes, the listener re-armed after a failure.
    pub(super) fn tick(&mut self, cx: &mut Cx) {
        for slot in 0..self.conns.len() {
            let Some(c) = self.conns[slot].as_ref() else {
                continue;
            };
            if c.closing {
                continue;
            }
            if cx.now >= c.deadline {
                self.counters.timeouts += u64::from(!c.lingering);
                self.close(cx, slot);
            } else if c.read_parked {
                self.read(cx, slot);
            } else if c.writing.is_none() && c.sent < c.out.len() {
                self.write(cx, slot);
            }
        }
        self.arm_accept(cx);
    }

    /// Stops: the listener and every connection close.
    pub(super) fn stop(&mut self, cx: &mut Cx) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        if self.accepting {
            cx.cancel(Token::new(OpKind::HttpAccept, DAEMON_CHANNEL, 0, self.gen));
        }
        self.close_listener_if_stopping(cx);
        for slot in 0..self.conns.len() {
            self.close(cx, slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::io::Submission;
    use crate::engine::testkit::Rig;

    const CONF: &str =
        "[global]\nmetrics = 127.0.0.1:9100\n\n[channel a]\ninput = udp://127.0.0.1:5000\noutput = udp://127.0.0.1:5001\n";

    fn only(rig: &Rig, kind: OpKind) -> Submission {
        let s = rig.subs_of(kind);
        assert_eq!(s.len(), 1, "{kind:?}: {s:?}");
        s[0]
    }

    /// A rig with the server started on listener fd 7; returns its accept token.
    fn serving() -> (Rig, Token) {
        let mut rig = Rig::new(CONF);
        rig.take();
        rig.io(|e, io| e.start_metrics(7, ProcessInfo::default(), io));
        let acc = only(&rig, OpKind::HttpAccept);
        assert_eq!(acc.op, Op::Accept { fd: 7 });
        rig.take();
        (rig, acc.token)
    }

    /// A connection from 127.0.0.1 (the accept re-armed); returns its poll token and fd.
    fn connect(rig: &mut Rig, acc: Token) -> (Token, Fd) {
        let fd = rig.accept_from(acc, Some("127.0.0.1".parse().unwrap()));
        let poll = only(rig, OpKind::HttpPoll);
        assert_eq!(poll.op, Op::PollIn { fd });
        rig.take();
        (poll.token, fd)
    }

    /// The peer sends `bytes`: the poll completes, the read lands them in its buffer.
    fn send(rig: &mut Rig, poll: Token, bytes: &[u8]) {
        rig.complete(poll, libc::POLLIN as i32);
        let read = only(rig, OpKind::HttpRecv);
        let Op::ReadStream { buf, len, .. } = read.op else {
            panic!("{read:?}")
        };
        let n = bytes.len().min(len as usize);
        crate::engine::io::Memory::write(&mut rig.mem, buf, 0, &bytes[..n]);
        rig.take();
        rig.complete(read.token, n as i32);
    }

    /// Completes every write of the response in full; returns the bytes written.
    fn written(rig: &mut Rig) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let w = rig.subs_of(OpKind::HttpSend);
            let Some(w) = w.first().copied() else {
                return out;
            };
            let Op::Write { chunk, .. } = w.op else {
                panic!("{w:?}")
            };
            out.extend_from_slice(crate::engine::io::Memory::bytes(
                &rig.mem, chunk.buf, chunk.off, chunk.len,
            ));
            rig.take();
            rig.complete(w.token, chunk.len as i32);
        }
    }

    fn server(rig: &Rig) -> &MetricsServer {
        rig.engine.http.as_ref().expect("serving")
    }

    #[test]
    fn a_scrape_keep_alive_and_the_books_whole_after() {
        let (mut rig, acc) = serving();
        let in_use = rig.engine.pool().in_use();
        let (poll, fd) = connect(&mut rig, acc);
        // The head in two pieces: the first is only read, the second answered.
        send(&mut rig, poll, b"GET /metrics HTTP/1.1\r\n");
        assert!(rig.subs_of(OpKind::HttpSend).is_empty());
        let poll = only(&rig, OpKind::HttpPoll).token;
        rig.take();
        send(&mut rig, poll, b"Host: x\r\n\r\n");
        let out = String::from_utf8(written(&mut rig)).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(
            out.contains("ringrelay_input_bytes_total{channel=\"a\"} 0\n"),
            "{out}"
        );
        // Counted once answered: this page is rendered before its own request counts.
        assert!(out.contains("ringrelay_http_requests_total 0\n"), "{out}");
        // Keep-alive: polled again; the server holds no buffer between requests.
        let poll = only(&rig, OpKind::HttpPoll).token;
        rig.take();
        assert_eq!(server(&rig).held, 0);
        assert_eq!(rig.engine.pool().in_use(), in_use);
        send(&mut rig, poll, b"GET /nope HTTP/1.0\r\n\r\n");
        let out = String::from_utf8(written(&mut rig)).unwrap();
        assert!(out.starts_with("HTTP/1.1 404 "), "{out}");
        // HTTP/1.0: closed after the response, nothing in flight, the fd closed once.
        assert!(rig.sys.closes.contains(&fd));
        assert!(server(&rig).conns.iter().all(Option::is_none));
        assert!(server(&rig).closing.is_empty());
        assert_eq!(server(&rig).held, 0);
        assert_eq!(rig.engine.pool().in_use(), in_use);
    }

    #[test]
    fn deadlines_refusals_and_shutdown() {
        let (mut rig, acc) = serving();
        let in_use = rig.engine.pool().in_use();
        // A peer outside metrics_allow: closed at once.
        let fd = rig.accept_from(acc, Some("10.1.2.3".parse().unwrap()));
        assert!(rig.sys.closes.contains(&fd));
        assert_eq!(server(&rig).counters.denied, 1);
        rig.take();
        // 16 connections, then a 17th evicts the oldest (its poll cancelled, its slot freed).
        let mut polls = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            polls.push(connect(&mut rig, acc));
            rig.now += Duration::from_millis(1);
        }
        let (_, newest) = connect(&mut rig, acc);
        assert_eq!(server(&rig).counters.evicted, 1);
        assert_eq!(server(&rig).open_conns(), MAX_CONNECTIONS);
        assert_eq!(server(&rig).closing.len(), 1);
        // The evicted one's cancelled poll completes: its descriptor closes now.
        let (oldest_poll, oldest_fd) = polls[0];
        assert!(!rig.sys.closes.contains(&oldest_fd));
        rig.complete(oldest_poll, -libc::ECANCELED);
        assert!(rig.sys.closes.contains(&oldest_fd));
        assert!(server(&rig).closing.is_empty());
        // A slowloris: bytes, but never a whole head; closed by the tick at its deadline.
        let (p, _) = polls[1];
        send(&mut rig, p, b"GET /metrics HTTP/1.1\r\nX: ");
        rig.take();
        rig.tick(REQUEST_DEADLINE);
        assert_eq!(server(&rig).counters.timeouts, MAX_CONNECTIONS as u64);
        // Every connection is closing (polls cancelled); their completions close them.
        for (p, _) in polls.iter().skip(1) {
            rig.complete(*p, -libc::ECANCELED);
        }
        let cancels: Vec<Token> = rig
            .subs_of(OpKind::Cancel)
            .iter()
            .filter_map(|s| match s.op {
                Op::Cancel { target } => Some(target),
                _ => None,
            })
            .filter(|t| t.kind == OpKind::HttpPoll && !polls.iter().any(|(p, _)| p == t))
            .collect();
        for t in cancels {
            rig.complete(t, -libc::ECANCELED);
        }
        assert!(rig.sys.closes.contains(&newest));
        // SIGTERM: the accept is cancelled, the listener closes once it completed.
        rig.take();
        rig.io(|e, io| e.terminate(io));
        assert!(!rig.sys.closes.contains(&7));
        let mut c = Completion {
            user_data: acc.encode(),
            res: -libc::ECANCELED,
            flags: 0,
        };
        rig.io(|e, io| e.complete(c, io));
        assert!(rig.sys.closes.contains(&7));
        assert!(server(&rig).idle());
        assert_eq!(server(&rig).held, 0);
        // A late accept after the end is closed, not served.
        c.res = 555;
        rig.io(|e, io| e.complete(c, io));
        assert!(rig.sys.closes.contains(&555));
        assert_eq!(
            rig.engine.pool().in_use(),
            in_use,
            "the server returned every buffer"
        );
    }
}
