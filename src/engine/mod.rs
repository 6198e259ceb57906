//! The engine: every decision the relay makes, as a state machine that is handed completions,
//! ticks and signals and answers with operations to submit.
//!
//! Owns: the channels ([`channel`]) with their endpoints, output queues and the slow-output
//! policy ([`outq`]), read and write planning (`input`, `output`), file outputs ([`fileout`]:
//! rotation, a deleted file or directory, `fault_grace`), accept and dial policy
//! and endpoint life (`links`), serial inputs (`serial`: opened, gone, opened again), the splice and tee data path (`splicing`, [`splice`]),
//! reload planning (`reload`), zero-copy records ([`zerocopy`]), the buffer pool's accounting
//! ([`buffers`], [`rings`]), counters ([`stats`]), backoff ([`backoff`]), decimation
//! ([`decimate`]), the input's idle watchdog (`idle`) and subscribers' bytes (`commands`).
//!
//! The border ([`io`]): the engine is driven through [`Engine::complete`], [`Engine::tick`],
//! [`Engine::after_batch`], [`Engine::terminate`] and [`Engine::reload`], each given an [`Io`]:
//! the time `now`, an [`io::Effects`] to put its operations in, and the [`io::Sys`] and
//! [`io::Memory`] it reaches the outside through. The real driver ([`crate::driver`]) and the
//! simulation (`tests/sim.rs`) both implement those.
//!
//! Must never: hold a descriptor it opened itself, make a system call, read a clock, use
//! `unsafe`, or import anything from [`crate::driver`].
//!
//! Tokens: every operation carries a [`token::Token`] (kind, channel, endpoint slot,
//! generation). A completion whose generation is stale releases what its operation held and
//! touches nothing else; a slot is reused only once its in-flight count is zero.

mod accept;
pub mod backoff;
pub mod buffers;
pub mod caps;
pub mod channel;
mod commands;
pub mod decimate;
pub mod fileout;
mod framed;
mod idle;
mod input;
pub mod io;
mod links;
pub mod loglimit;
mod metrics_page;
pub mod metrics_server;
pub mod mqtt;
mod mqtt_link;
pub mod mqtt_session;
mod output;
pub mod outq;
pub mod records;
mod reload;
pub mod rings;
mod serial;
pub mod splice;
mod splicing;
pub mod spool;
#[cfg(test)]
mod spool_props;
pub mod spool_writes;
pub mod spoolfmt;
mod spooling;
mod start;
pub mod stats;
#[cfg(test)]
mod testkit;
pub mod token;
pub mod zerocopy;

use buffers::{BufId, BufferPool};
use caps::Caps;
use channel::{Channel, Link};
use io::{Bound, Completion, Effects, Memory, Op, Span, Submission, Sys};
use log::{debug, info, warn};
use loglimit::LogLimiter;
use outq::Chunk;
use rings::Rings;
use std::time::{Duration, Instant};
use token::{Generations, OpKind, Token, DAEMON_CHANNEL};
use zerocopy::ZcTable;

use crate::config::{ChannelConfig, Config};

/// Period of the driver's timer: how often [`Engine::tick`] runs.
pub const TICK: Duration = Duration::from_millis(100);

/// Most chunks one gathered write sends (and most buffers one scattered read fills).
pub const IOV_MAX: usize = 32;

/// Most datagrams one segmented send carries: the kernel's UDP_MAX_SEGMENTS (64 up to Linux
/// 6.8; later kernels take more, but 64 already makes the per-send cost negligible).
pub const GSO_SEGMENTS: usize = 64;

/// Most payload bytes one segmented send carries: an IPv6 packet's 16-bit payload length less
/// the UDP header, with room to spare (IPv4 allows a little more).
pub const GSO_BYTES: u32 = 65_000;

/// Largest provided-buffer ring of one input (its capacity; see [`Rings::grow`]).
pub const MAX_BUF_RING_ENTRIES: u16 = 1024;

/// What one call of the engine works with: the time, where its operations go, and the
/// outside world.
pub struct Io<'a> {
    pub now: Instant,
    pub fx: &'a mut Effects,
    pub sys: &'a mut dyn Sys,
    pub mem: &'a mut dyn Memory,
}

/// Everything a handler may touch besides its channel: the engine's shared books and the
/// call's [`Io`].
pub(crate) struct Cx<'s> {
    pub pool: &'s mut BufferPool,
    pub rings: &'s mut Rings,
    pub zc: &'s mut ZcTable,
    pub gens: &'s mut Generations,
    pub logs: &'s mut LogLimiter,
    pub caps: &'s Caps,
    pub now: Instant,
    pub fx: &'s mut Effects,
    pub sys: &'s mut dyn Sys,
    pub mem: &'s mut dyn Memory,
}

impl Cx<'_> {
    /// Asks for one operation tagged `token`.
    pub fn push(&mut self, op: Op, token: Token) {
        self.fx.subs.push(Submission {
            op,
            token,
            link: false,
        });
    }

    /// Asks for `ops` as one linked chain: each starts when the one before it completed, and
    /// a failure cancels the rest with -ECANCELED.
    pub fn chain(&mut self, ops: &[(Op, Token)]) {
        for (i, &(op, token)) in ops.iter().enumerate() {
            self.fx.subs.push(Submission {
                op,
                token,
                link: i + 1 < ops.len(),
            });
        }
    }

    /// Asks to cancel the operation tagged `target`.
    pub fn cancel(&mut self, target: Token) {
        self.push(Op::Cancel { target }, Token::daemon(OpKind::Cancel));
    }

    /// Keeps `chunks` for an operation of this call and names them.
    pub fn span(&mut self, chunks: impl Iterator<Item = Chunk>) -> Span {
        let start = self.fx.chunks.len() as u32;
        self.fx.chunks.extend(chunks);
        Span {
            start,
            n: self.fx.chunks.len() as u32 - start,
        }
    }

    /// Begins a zero-copy send of `buf` for an endpoint of generation `gen`: the pool keeps a
    /// reference for the kernel until [`Cx::zc_end`]. Returns the record's index (the tag's
    /// generation field), or None when no record is free (send by copy then).
    pub fn zc_begin(&mut self, gen: u32, buf: BufId) -> Option<u32> {
        let idx = self.zc.begin(gen, buf)?;
        self.pool.retain(buf);
        Some(idx)
    }

    /// The kernel is done with zero-copy send `idx` (its notification, or a first completion
    /// that says none follows): the buffer's reference goes back to the pool, once.
    pub fn zc_end(&mut self, idx: u32) {
        if let Some(r) = self.zc.end(idx) {
            self.pool.release(r.buf);
        }
    }
}

/// The relay's state machine: every channel, and the books they share.
pub struct Engine {
    channels: Vec<Option<Channel>>,
    /// Channels replaced by a reload, waiting for the old one's endpoints to close.
    pending_starts: Vec<(usize, ChannelConfig)>,
    gens: Generations,
    /// Rate limits of the log lines peers can provoke.
    logs: LogLimiter,
    cfg: Config,
    caps: Caps,
    pool: BufferPool,
    rings: Rings,
    zc: ZcTable,
    shutdown_deadline: Option<Instant>,
    closing_all: bool,
    seed: u64,
    last_stats_log: Instant,
    /// The pipe-size warning (F_SETPIPE_SZ refused) was logged.
    pipe_warned: bool,
    /// The io-wq unbounded-worker cap registered for the splicing channels (0: none yet).
    iowq_cap: u32,
    /// Which channel goes first in the next batch's re-arming (see `after_batch`).
    turn: usize,
    /// The HTTP `/metrics` and `/healthz` server, when `metrics` is set.
    http: Option<metrics_server::MetricsServer>,
    /// What the metrics page says about the process.
    process: metrics_server::ProcessInfo,
    /// The time of the last tick (for ages in the counters lines).
    last_tick: Instant,
}

/// Splits the engine into its channels and a [`Cx`] over everything else and `io`.
macro_rules! split {
    ($e:expr, $io:expr) => {{
        let e = &mut *$e;
        let io = &mut *$io;
        (
            &mut e.channels,
            Cx {
                pool: &mut e.pool,
                rings: &mut e.rings,
                zc: &mut e.zc,
                gens: &mut e.gens,
                logs: &mut e.logs,
                caps: &e.caps,
                now: io.now,
                fx: &mut *io.fx,
                sys: &mut *io.sys,
                mem: &mut *io.mem,
            },
        )
    }};
}
pub(crate) use split;

impl Engine {
    /// An engine for `cfg` on a kernel with `caps`, with no channel running yet. `seed` makes
    /// the backoff jitter of this process differ from another's.
    /// `pool` is the books of the arena the driver mapped for `cfg`.
    pub fn new(cfg: Config, caps: Caps, pool: BufferPool, seed: u64, now: Instant) -> Engine {
        Engine {
            channels: Vec::new(),
            pending_starts: Vec::new(),
            gens: Generations::default(),
            logs: LogLimiter::default(),
            caps,
            pool,
            rings: Rings::default(),
            zc: ZcTable::default(),
            shutdown_deadline: None,
            closing_all: false,
            seed,
            last_stats_log: now,
            pipe_warned: false,
            iowq_cap: 0,
            turn: 0,
            http: None,
            process: metrics_server::ProcessInfo::default(),
            last_tick: now,
            cfg,
        }
    }

    /// Starts every channel of the configuration over what [`Sys::bind`] opened for it (one
    /// [`Bound`] per channel, in order).
    pub fn start(&mut self, bound: Vec<Bound>, io: &mut Io) -> Result<(), String> {
        let n = self.cfg.channels.len();
        for (i, b) in bound.into_iter().enumerate() {
            let c = &self.cfg.channels[i];
            let ch = Channel::new(
                c,
                b,
                start::class_count(&self.cfg, c),
                n,
                self.seed.wrapping_add(i as u64 * 7919),
            );
            self.channels.push(Some(ch));
            self.activate(i, io)?;
            self.settle_zerocopy(i);
        }
        self.cap_workers(io.sys);
        Ok(())
    }

    /// The kernel's features as the engine uses them (with the counts of the start-up line).
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The pool's books (the driver lays its arena out from them).
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// Every channel slot (`None`: a free slot).
    pub fn channels(&self) -> &[Option<Channel>] {
        &self.channels
    }

    /// Zero-copy sends whose notification has not arrived.
    pub fn zerocopy_in_flight(&self) -> usize {
        self.zc.live()
    }

    /// Shutting down and every endpoint of every channel is closed: the loop may end.
    pub fn done(&self) -> bool {
        self.closing_all
            && self.http_idle()
            && self
                .channels
                .iter()
                .flatten()
                .all(|c| c.live_endpoints() == 0 && spooling::settled(c))
    }

    /// Whether the driver keeps its timer running (until everything is being closed).
    pub fn ticking(&self) -> bool {
        !self.closing_all
    }

    /// Whether a shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.shutdown_deadline.is_some()
    }

    /// A completion for an operation of a channel.
    pub fn complete(&mut self, c: Completion, io: &mut Io) {
        let Some(tok) = Token::decode(c.user_data) else {
            return;
        };
        if tok.chan == DAEMON_CHANNEL || tok.kind == OpKind::Cancel {
            if matches!(
                tok.kind,
                OpKind::HttpAccept | OpKind::HttpPoll | OpKind::HttpRecv | OpKind::HttpSend
            ) {
                self.on_http(c, tok, io);
            }
            return;
        }
        let count_n = self.cfg.channels.len();
        let ci = tok.chan as usize;
        let count = match self.channels.get(ci) {
            Some(Some(ch)) => start::class_count(&self.cfg, &ch.cfg),
            _ => 0,
        };
        let (channels, mut cx) = split!(self, io);
        let Some(Some(ch)) = channels.get_mut(ci) else {
            // A channel is only removed once all its completions have arrived.
            debug!("completion for removed channel {ci}: {tok:?}");
            return;
        };
        let cx = &mut cx;
        match tok.kind {
            OpKind::Recv => input::on_recv(cx, ch, tok, c.res),
            OpKind::RecvMulti => input::on_recv_multi(cx, ch, tok, c),
            OpKind::Send | OpKind::SendDatagram => {
                output::on_write(cx, ch, tok, c.res);
                spooling::after_sends(cx, ch, tok.chan);
            }
            OpKind::SpoolDisk => spooling::on_disk(cx, ch, tok, c.res),
            OpKind::SpoolRead => spooling::on_read(cx, ch, tok, c.res),
            OpKind::SendZc => output::on_send_zc(cx, ch, tok, c),
            OpKind::Accept => accept::on_accept(cx, ch, tok, c.res, c.more(), (count, count_n)),
            OpKind::Connect => links::on_connect(cx, ch, tok, c.res),
            OpKind::Hangup => links::on_hangup(cx, ch, tok, c.res),
            OpKind::PeerRecv => commands::on_peer_recv(cx, ch, tok, c.res),
            OpKind::Command => commands::on_command_sent(cx, ch, tok, c.res),
            OpKind::SpliceIn => splicing::on_splice_in(cx, ch, tok, c.res),
            OpKind::SpliceOut => splicing::on_splice_out(cx, ch, tok, c.res),
            OpKind::Tee => splicing::on_tee(cx, ch, tok, c.res),
            OpKind::SpliceDist => splicing::on_splice_dist(cx, ch, tok, c.res),
            _ => {}
        }
    }

    /// Work after each batch of completions: start the sends of datagram outputs that got
    /// datagrams in this batch, refill inputs starved of buffers, finish removals, check
    /// whether a shutdown is complete, and publish buffers that came back to their rings.
    pub fn after_batch(&mut self, io: &mut Io) {
        {
            // Channels take freed buffers in turn: the batch starts one channel further on
            // each time, so the first channel does not always pick first from a short pool.
            let n = self.channels.len().max(1);
            self.turn = (self.turn + 1) % n;
            let turn = self.turn;
            let (channels, mut cx) = split!(self, io);
            for k in 0..channels.len() {
                let ci = (turn + k) % n;
                if let Some(ch) = channels[ci].as_mut() {
                    let mut kicks = std::mem::take(&mut ch.batch_kicks);
                    for &s in &kicks {
                        output::kick(&mut cx, ch, ci as u16, s);
                    }
                    kicks.clear();
                    ch.batch_kicks = kicks;
                    input::post_reads(&mut cx, ch, ci as u16);
                }
            }
        }
        if self.shutdown_deadline.is_none() {
            self.end_drains(io);
        }
        // Channels removed or replaced by a reload go once their outputs are closed and idle.
        for ci in 0..self.channels.len() {
            let done = self.channels[ci].as_ref().is_some_and(|c| {
                c.draining
                    && c.drain_deadline.is_none()
                    && c.live_endpoints() == 0
                    && self.shutdown_deadline.is_none()
            });
            if done {
                if let Some(ch) = self.channels[ci].take() {
                    self.remove_channel(ch, io.sys);
                }
                if let Some(pos) = self.pending_starts.iter().position(|(i, _)| *i == ci) {
                    let (_, cfg) = self.pending_starts.remove(pos);
                    self.start_channel(ci, &cfg, io);
                }
            }
        }
        if let Some(deadline) = self.shutdown_deadline {
            if !self.closing_all {
                let drained = self.channels.iter().flatten().all(|c| c.drained());
                if drained || io.now >= deadline {
                    if !drained {
                        self.warn_queued_at_timeout();
                    }
                    self.close_everything(io);
                }
            }
        }
        let (_, cx) = split!(self, io);
        cx.rings.recycle(cx.pool, cx.sys);
    }

    /// A channel with nothing open and nothing in flight goes: what a drain cut short left in
    /// its links' queues returns to the pool, its pipes and region close.
    fn remove_channel(&mut self, mut ch: Channel, sys: &mut dyn Sys) {
        // Nothing is in flight on the pipe: every splice is counted on an endpoint, and they
        // are all gone.
        debug_assert!(ch.splice.as_ref().is_none_or(|s| s.idle()));
        for o in &mut ch.outputs {
            for b in o.queue.clear() {
                self.pool.release(b);
            }
        }
        spooling::close(&mut self.pool, sys, &mut ch);
        if let Some(sp) = ch.splice.take() {
            for fd in sp.fds() {
                sys.close(fd);
            }
        }
        ch.close_pending(sys);
        if let Some(f) = ch.framed.as_mut() {
            ch.stats.partial += u64::from(f.release(&mut self.pool));
        }
        if let Some(p) = ch.publisher.take() {
            p.close();
        }
        info!("channel {}: closed", ch.cfg.name);
    }

    /// Stops a channel the way SIGTERM stops them all: its input and listeners close at once
    /// (no new data, no new subscribers, and the ports are released for whatever replaces
    /// it); its outputs and subscribers flush what they hold for at most `shutdown_timeout`,
    /// then close, and the channel goes once idle (see `end_drains` and `after_batch`).
    fn stop_channel(&mut self, ci: usize, io: &mut Io) {
        let deadline = io.now + self.cfg.global.shutdown_timeout;
        let (channels, mut cx) = split!(self, io);
        let Some(ch) = channels[ci].as_mut() else {
            return;
        };
        if ch.draining {
            return;
        }
        ch.draining = true;
        ch.drain_deadline = Some(deadline);
        links::close_intake(&mut cx, ch, ci as u16);
        spooling::stopping(&mut cx, ch, ci as u16, false);
    }

    /// Ends the drains of channels stopped by a reload: once a channel's outputs are flushed,
    /// or at its deadline, everything it still has open is closed.
    fn end_drains(&mut self, io: &mut Io) {
        let (channels, mut cx) = split!(self, io);
        for (ci, ch) in channels.iter_mut().enumerate() {
            let Some(ch) = ch else { continue };
            let Some(deadline) = ch.drain_deadline else {
                continue;
            };
            let drained = ch.drained();
            if !drained && cx.now < deadline {
                continue;
            }
            if !drained {
                let per: Vec<String> = ch
                    .queued_by_output()
                    .iter()
                    .map(|(url, n)| format!("output {url}: {n} bytes"))
                    .collect();
                warn!(
                    "channel {}: shutdown_timeout reached while flushing its outputs; closing them, {} queued bytes dropped ({})",
                    ch.name(),
                    ch.queued_bytes(),
                    per.join(", ")
                );
            }
            ch.drain_deadline = None;
            spooling::stopping(&mut cx, ch, ci as u16, true);
            if !drained {
                ch.count_given_up();
            }
            links::close_all(&mut cx, ch, ci as u16);
            if !drained {
                mqtt_link::give_up(&mut cx, ch);
            }
        }
    }

    /// The shutdown timeout ran out before every output was flushed: one line per output that
    /// still holds data, with its byte count (or one line when only reads or writes in flight
    /// were left).
    fn warn_queued_at_timeout(&self) {
        let mut any = false;
        for ch in self.channels.iter().flatten() {
            for (url, n) in ch.queued_by_output() {
                any = true;
                warn!(
                    "shutdown timeout reached: channel {}: output {url}: {n} bytes still queued, dropped",
                    ch.name()
                );
            }
        }
        if !any {
            warn!("shutdown timeout reached with operations still in flight; closing");
        }
    }

    /// SIGTERM: no more input; outputs flush for at most `shutdown_timeout`, then everything
    /// closes and [`Engine::done`] turns true.
    pub fn terminate(&mut self, io: &mut Io) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let t = self.cfg.global.shutdown_timeout;
        info!(
            "stopping: no more input; flushing outputs (at most {:?})",
            t
        );
        self.shutdown_deadline = Some(io.now + t);
        self.http_stop(io);
        let (channels, mut cx) = split!(self, io);
        for (ci, ch) in channels.iter_mut().enumerate() {
            let Some(ch) = ch else { continue };
            ch.draining = true;
            links::close_intake(&mut cx, ch, ci as u16);
            spooling::stopping(&mut cx, ch, ci as u16, false);
        }
    }

    fn close_everything(&mut self, io: &mut Io) {
        self.closing_all = true;
        self.logs.log_summaries(io.now, true);
        let (channels, mut cx) = split!(self, io);
        for (ci, ch) in channels.iter_mut().enumerate() {
            let Some(ch) = ch else { continue };
            spooling::stopping(&mut cx, ch, ci as u16, true);
            ch.count_given_up();
            links::close_all(&mut cx, ch, ci as u16);
            mqtt_link::give_up(&mut cx, ch);
        }
    }

    /// The loop has ended: every region is marked closed and every descriptor the engine
    /// still names is closed.
    pub fn finish(&mut self, sys: &mut dyn Sys) {
        let channels: Vec<Channel> = self.channels.iter_mut().filter_map(|c| c.take()).collect();
        for ch in channels {
            self.remove_channel(ch, sys);
        }
    }

    /// The timer: redials, retries, accept re-arming, heartbeats, the periodic counters line.
    pub fn tick(&mut self, io: &mut Io, in_flight: usize) {
        let now = io.now;
        self.last_tick = now;
        let shutting_down = self.shutdown_deadline.is_some();
        {
            let (channels, mut cx) = split!(self, io);
            let starved = channels.iter().flatten().any(|c| c.input_starved);
            for (ci, ch) in channels.iter_mut().enumerate() {
                let Some(ch) = ch else { continue };
                links::tick_channel(&mut cx, ch, ci as u16, now, shutting_down);
                idle::tick(&mut cx, ch, ci as u16, now);
                spooling::tick(&mut cx, ch, ci as u16);
                commands::tick(&mut cx, ch, ci as u16);
                if starved {
                    input::unpark_reads(&mut cx, ch, ci as u16);
                }
            }
        }
        self.http_tick(io);
        self.logs.log_summaries(now, false);
        if now.duration_since(self.last_stats_log) >= self.cfg.global.stats_interval {
            self.last_stats_log = now;
            self.log_counters(log::Level::Debug, in_flight);
        }
    }

    /// Logs every counter at `level` (SIGUSR1, the stats interval, the end).
    pub fn log_counters(&self, level: log::Level, in_flight: usize) {
        if !log::log_enabled!(level) {
            return;
        }
        let pool = &self.pool;
        log::log!(
            level,
            "counters: pool {}/{} buffers in use, {} operations in flight",
            pool.in_use(),
            pool.count(),
            in_flight
        );
        for ch in self.channels.iter().flatten() {
            log::log!(
                level,
                "counters: channel {} input {} [{}]: {}",
                ch.name(),
                ch.cfg.input.url(),
                input_state(ch),
                ch.stats
            );
            for o in &ch.outputs {
                let (backlog, clients) = output_backlog(ch, o);
                let spool = o.spool.as_ref().map_or(String::new(), |sp| {
                    let s = sp.stats;
                    format!(
                        " spooled_bytes={} spooled_records={} replayed_bytes={} replayed_records={} spool_dropped={} spool_errors={} spool_bytes={} spool_unsynced={} spool_oldest_age={}s",
                        s.spooled_bytes,
                        s.spooled_records,
                        s.replayed_bytes,
                        s.replayed_records,
                        s.dropped,
                        s.errors,
                        sp.size(),
                        sp.unsynced(),
                        spooling::oldest_age_secs(sp, self.last_tick)
                    )
                });
                log::log!(
                    level,
                    "counters: channel {} output {} [{}]: {} backlog={} clients={}{}{}",
                    ch.name(),
                    o.url(),
                    output_state(ch, o),
                    o.stats,
                    backlog,
                    clients,
                    spool,
                    mqtt_link::counters(o)
                );
            }
        }
    }
}

/// Bytes queued for an output (a link's queue, or all its subscribers'), and its
/// subscribers.
pub fn output_backlog(ch: &Channel, o: &channel::Output) -> (u64, u64) {
    if o.is_link() {
        (o.queue.backlog(), 0)
    } else {
        let b = o
            .subscribers
            .iter()
            .filter_map(|s| ch.ep(*s))
            .filter_map(|e| e.queue.as_ref())
            .map(|q| q.backlog())
            .sum();
        (b, o.subscribers.len() as u64)
    }
}

/// The input's state as `stat` and the counters line show it: `up` (a bound datagram socket or
/// a connected producer), `idle` (a datagram input silent for its `idle_timeout`),
/// `listening` (waiting for a producer) or `down`.
pub fn input_state(ch: &Channel) -> &'static str {
    if ch.input.is_some() {
        if ch.watchdog.idle {
            "idle"
        } else {
            "up"
        }
    } else if ch.input_listener.is_some() {
        "listening"
    } else {
        "down"
    }
}

/// An output's state as `stat` and the counters line show it.
pub fn output_state(ch: &Channel, o: &channel::Output) -> &'static str {
    if o.faulted {
        return if fileout::dropping(o) {
            "dropping"
        } else {
            "faulted"
        };
    }
    if o.is_link() {
        match o.link.and_then(|s| ch.ep(s)) {
            Some(e) if e.link == Link::Up => "up",
            Some(e) if e.link == Link::Connecting => "connecting",
            _ => "down",
        }
    } else if o.listener.is_some() {
        "listening"
    } else {
        "closed"
    }
}

/// A negative completion result as an error.
pub(crate) fn errno_str(res: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(-res)
}

/// What a read that failed with ETIMEDOUT means on a stream input: the peer stopped answering
/// the keepalive probes (or acknowledging what was sent to it).
pub(crate) fn timed_out_hint(res: i32) -> &'static str {
    if res == -libc::ETIMEDOUT {
        " (no answer to keepalive probes: the producer vanished)"
    } else {
        ""
    }
}
