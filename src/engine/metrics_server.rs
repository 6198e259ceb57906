//! The HTTP server of `metrics = HOST:PORT`: `/metrics` and `/healthz` served on the one ring.
//!
//! Owns: the listener the driver bound (handed over by [`Engine::start_metrics`]), its
//! connections and their state machine, and the engine's side of a scrape (rendering the
//! page from the live engine). Every operation is tagged with a daemon-level token (channel
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
use super::{errno_str, input_state, output_state, split, Cx, Engine, Io};
use crate::metrics::health::{self, DownSince};
use crate::metrics::http::{self, Parsed, Request, Status, Target, MAX_REQUEST};
use crate::metrics::{prometheus, LiveInfo, Snapshot};
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

struct Conn {
    fd: Fd,
    gen: u32,
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
    gen: u32,
    accepting: bool,
    accept_failing: bool,
    /// Shutting down: the listener closes once its accept completed.
    stopping: bool,
    conns: Vec<Option<Conn>>,
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
type Want = (usize, Result<Request, Status>);

impl MetricsServer {
    fn new(listener: Fd, gen: u32) -> MetricsServer {
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

    fn arm_accept(&mut self, cx: &mut Cx) {
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

    fn on_accept(&mut self, cx: &mut Cx, c: Completion, allow: &[crate::config::cidr::Cidr]) {
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
    fn on_closed_conn(&mut self, cx: &mut Cx, gen: u32, kind: OpKind) {
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
    fn on_conn(&mut self, cx: &mut Cx, slot: usize, kind: OpKind, res: i32) -> Option<Want> {
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
    fn respond(
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
    fn tick(&mut self, cx: &mut Cx) {
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
    fn stop(&mut self, cx: &mut Cx) {
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

impl Engine {
    /// Starts the metrics server on `listener` (bound and listening, by the driver); `info`
    /// is what the page says about the process.
    pub fn start_metrics(&mut self, listener: Fd, info: ProcessInfo, io: &mut Io) {
        let mut srv = MetricsServer::new(listener, self.gens.fresh());
        self.process = info;
        let (_, mut cx) = split!(self, io);
        srv.arm_accept(&mut cx);
        self.http = Some(srv);
    }

    /// Operations in flight on the ring now (the driver says so at each batch; the page's
    /// `ringrelay_ring_inflight`).
    pub fn note_ring_in_flight(&mut self, n: usize) {
        if let Some(s) = self.http.as_mut() {
            s.ring_in_flight = n;
        }
    }

    /// The metrics server's counters, if it runs.
    pub fn http_counters(&self) -> Option<HttpCounters> {
        self.http.as_ref().map(|s| s.counters)
    }

    /// A completion of the metrics server.
    pub(super) fn on_http(&mut self, c: Completion, tok: Token, io: &mut Io) {
        let Some(mut srv) = self.http.take() else {
            if tok.kind == OpKind::HttpAccept && c.res >= 0 {
                io.sys.close(c.res);
            }
            return;
        };
        let want = {
            let allow = self.cfg.global.metrics_allow.clone();
            let (_, mut cx) = split!(self, io);
            if tok.kind == OpKind::HttpAccept {
                if tok.gen == srv.gen {
                    srv.on_accept(&mut cx, c, &allow);
                } else if c.res >= 0 {
                    cx.sys.close(c.res);
                }
                None
            } else {
                let slot = tok.ep as usize;
                let current = srv
                    .conns
                    .get(slot)
                    .and_then(|c| c.as_ref())
                    .is_some_and(|c| c.gen == tok.gen);
                if current {
                    srv.on_conn(&mut cx, slot, tok.kind, c.res)
                } else {
                    srv.on_closed_conn(&mut cx, tok.gen, tok.kind);
                    None
                }
            }
        };
        if let Some((slot, req)) = want {
            let (bytes, close_after) = self.page(&srv, req, io.now);
            if !matches!(req, Ok(r) if r.allowed_method && r.target != Target::Unknown) {
                srv.counters.rejected += u64::from(req.is_err());
            }
            let (_, mut cx) = split!(self, io);
            srv.respond(&mut cx, slot, bytes, close_after, req.is_err());
        }
        self.http = Some(srv);
    }

    /// The whole response to `req` (head and body), and whether the connection closes after.
    fn page(
        &self,
        srv: &MetricsServer,
        req: Result<Request, Status>,
        now: Instant,
    ) -> (Vec<u8>, bool) {
        let (status, ctype, body, keep, head_only) = match req {
            Err(s) => (
                s,
                http::TEXT_TYPE,
                format!("{}\n", s.reason()),
                false,
                false,
            ),
            Ok(r) if !r.allowed_method => (
                Status::MethodNotAllowed,
                http::TEXT_TYPE,
                "only GET and HEAD\n".to_string(),
                r.keep_alive,
                false,
            ),
            Ok(r) => match r.target {
                Target::Unknown => (
                    Status::NotFound,
                    http::TEXT_TYPE,
                    "not found: try /metrics or /healthz\n".to_string(),
                    r.keep_alive,
                    r.head,
                ),
                Target::Metrics => (
                    Status::Ok,
                    http::PROMETHEUS_TYPE,
                    self.render_metrics(srv, now),
                    r.keep_alive,
                    r.head,
                ),
                Target::Healthz => {
                    let snap = self.snapshot(srv, now);
                    let p =
                        health::problems(&snap, &srv.down_since, now, self.cfg.global.health_grace);
                    if p.is_empty() {
                        (
                            Status::Ok,
                            http::TEXT_TYPE,
                            "ok\n".to_string(),
                            r.keep_alive,
                            r.head,
                        )
                    } else {
                        let mut b = p.join("\n");
                        b.push('\n');
                        (
                            Status::ServiceUnavailable,
                            http::TEXT_TYPE,
                            b,
                            r.keep_alive,
                            r.head,
                        )
                    }
                }
            },
        };
        let keep = keep && !self.stopping();
        let mut out = http::response_head(status, ctype, body.len(), keep).into_bytes();
        if !head_only {
            out.extend_from_slice(body.as_bytes());
        }
        (out, !keep)
    }

    fn snapshot(&self, srv: &MetricsServer, now: Instant) -> Snapshot {
        let p = &self.process;
        let elapsed = p
            .started
            .map_or(0, |s| now.saturating_duration_since(s).as_nanos() as i64);
        let mut s = Snapshot::from_engine(self, p.started_real_ns, p.started_real_ns + elapsed);
        s.live = Some(LiveInfo {
            ring_in_flight: srv.ring_in_flight as u64,
            kernel: p.kernel.clone(),
            features: p.features.clone(),
            regions: self
                .channels
                .iter()
                .flatten()
                .filter_map(|ch| {
                    ch.publisher
                        .as_ref()
                        .map(|pb| (ch.name().to_string(), pb.frames_written()))
                })
                .collect(),
            http: srv.counters,
        });
        s
    }

    fn render_metrics(&self, srv: &MetricsServer, now: Instant) -> String {
        prometheus::render(&self.snapshot(srv, now))
    }

    /// The metrics server's part of the tick: what is down since when, deadlines, parked
    /// buffers.
    pub(super) fn http_tick(&mut self, io: &mut Io) {
        let Some(mut srv) = self.http.take() else {
            return;
        };
        let now = io.now;
        for ch in self.channels.iter().flatten() {
            let name = ch.name();
            srv.down_since
                .observe(now, name, 0, health::input_down(input_state(ch)));
            for (k, o) in ch.outputs.iter().enumerate() {
                srv.down_since
                    .observe(now, name, k + 1, health::output_down(output_state(ch, o)));
            }
        }
        let chans = &self.channels;
        srv.down_since
            .retain(|n| chans.iter().flatten().any(|c| c.name() == n));
        {
            let (_, mut cx) = split!(self, io);
            srv.tick(&mut cx);
        }
        self.http = Some(srv);
    }

    /// Shutdown: the metrics server closes its listener and connections.
    pub(super) fn http_stop(&mut self, io: &mut Io) {
        let Some(mut srv) = self.http.take() else {
            return;
        };
        {
            let (_, mut cx) = split!(self, io);
            srv.stop(&mut cx);
        }
        self.http = Some(srv);
    }

    /// Whether the metrics server (if any) has nothing open or in flight.
    pub(super) fn http_idle(&self) -> bool {
        self.http.as_ref().is_none_or(MetricsServer::idle)
    }
}
