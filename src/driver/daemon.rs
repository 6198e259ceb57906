//! The event loop: one completion-driven state machine over one ring for every channel.
//!
//! Owns: the start-up sequence of `ringrelay run`, the dispatch of every completion to the
//! channel and endpoint it belongs to, the timer (reconnects, retries, heartbeats, stats),
//! signals (SIGTERM/SIGINT flush and exit, SIGHUP reload, SIGUSR1 counters) and shutdown.
//!
//! Data path, per input completion: the input's buffer is offered to every output's queue;
//! each output that queues it takes a reference (the SAME buffer, no copy); the input drops its
//! own reference; each output keeps one write in flight and resubmits short writes; the buffer
//! returns to the pool with the last reference. Decisions about slow outputs are the queue's
//! ([`crate::engine::outq`]); this module acts on them.
//!
//! A splicing channel ([`crate::engine::splice`]) skips the pool: one splice moves input socket ->
//! the channel's pipe, one moves pipe -> output link, each resubmitted as its completion comes
//! and sized by the pipe's fill; faults, redials, FIN, shutdown and reload go through the same
//! endpoint life as the buffer path. A fan-out channel adds a pipe per output: rounds of tees
//! (and one distribution splice) fill them from the channel's pipe, each output splices out of
//! its own; tees and distribution splices are counted on the channel ([`Channel::live_endpoints`]),
//! not on an endpoint.
//!
//! Must never: block (every socket operation goes through the ring; the only synchronous
//! calls are socket setup, connect starts, file rotation and shutdown), let one endpoint's
//! fault reach another, or free an endpoint while the kernel still holds an operation of it.

use crate::cli::RunArgs;
use crate::config::url::{OnFin, OnSlow, Scheme};
use crate::config::{self, Config, FeatureSet, Framing, LogDest};
use crate::driver::net;
use crate::driver::pool::Class;
use crate::driver::ring::{
    Completion, Datagram, Ring, RingOptions, Sqe, GSO_BYTES, GSO_SEGMENTS, IOV_MAX,
    MAX_BUF_RING_ENTRIES,
};
use crate::engine::channel::{
    Channel, Endpoint, Link, Role, DATAGRAM_HEADROOM, PREFIX, STREAM_READ_BUFFERS,
    UDP_RECVS_IN_FLIGHT, UDP_RING_START,
};
use crate::engine::outq::{self, Chunk, Offer, OutQueue};
use crate::engine::token::{Generations, OpKind, Token, DAEMON_CHANNEL};
use crate::ops::{daemonize, logging};
use log::{debug, error, info, warn};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Smallest datagram slot worth a multishot receive: the kernel writes a 16-byte header in
/// front of every payload.
const MIN_MULTISHOT_SLOT: u32 = 64;

/// Signals the loop reacts to, set by signal handlers and noticed through the pipe.
struct Signals {
    read_end: OwnedFd,
    _write_end: OwnedFd,
    term: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
    usr1: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("signal pipe: {e}"))?;
        // The handler's end must never block; the ring reads the other end.
        nix::fcntl::fcntl(
            &w,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| format!("signal pipe: {e}"))?;
        let term = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        let usr1 = Arc::new(AtomicBool::new(false));
        let reg = |sig: i32, flag: &Arc<AtomicBool>| -> Result<(), String> {
            signal_hook::flag::register(sig, Arc::clone(flag))
                .map_err(|e| format!("signal {sig}: {e}"))?;
            let w2 = w.try_clone().map_err(|e| format!("signal pipe: {e}"))?;
            signal_hook::low_level::pipe::register_raw(sig, w2)
                .map_err(|e| format!("signal {sig}: {e}"))?;
            Ok(())
        };
        reg(SIGTERM, &term)?;
        reg(SIGINT, &term)?;
        reg(SIGHUP, &hup)?;
        reg(SIGUSR1, &usr1)?;
        Ok(Signals {
            read_end: r,
            _write_end: w,
            term,
            hup,
            usr1,
        })
    }
}

/// A hook the demo uses to show live throughput; called about once a second.
pub type Monitor = Box<dyn FnMut(&[Option<Channel>], f64)>;

pub struct Daemon {
    ring: Ring,
    channels: Vec<Option<Channel>>,
    /// Channels replaced by a reload, waiting for the old one's endpoints to close.
    pending_starts: Vec<(usize, config::ChannelConfig)>,
    gens: Generations,
    cfg: Config,
    config_path: Option<String>,
    cq: Vec<Completion>,
    signals: Signals,
    shutdown_deadline: Option<Instant>,
    closing_all: bool,
    started: Instant,
    last_stats_log: Instant,
    last_stats_pub: Instant,
    last_monitor: Instant,
    stats_writer: Option<crate::shm::StatsWriter>,
    shm_opts: crate::shm::ShmOptions,
    seed: u64,
    /// The pipe-size warning (F_SETPIPE_SZ refused) was logged.
    pipe_warned: bool,
    /// The io-wq unbounded-worker cap registered for the splicing channels (0: none yet).
    iowq_cap: u32,
    /// Stop by itself at this instant (demo `--duration`).
    pub stop_at: Option<Instant>,
    pub monitor: Option<Monitor>,
}

/// Reads the feature-set override from the environment.
pub fn baseline_forced(cfg: &Config) -> bool {
    cfg.global.features == FeatureSet::Baseline
        || std::env::var("RINGRELAY_FEATURES").is_ok_and(|v| v == "baseline")
}

fn shm_options(cfg: &Config) -> Result<crate::shm::ShmOptions, String> {
    let group = match &cfg.global.shm_group {
        Some(g) => Some(daemonize::lookup_group(g)?.as_raw()),
        None => None,
    };
    Ok(crate::shm::ShmOptions {
        dir: cfg.global.shm_dir.clone(),
        mode: cfg.global.shm_mode,
        group,
    })
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    t ^ (u64::from(std::process::id()) << 32)
}

/// Buffers of the class a channel's input reads into (its outputs' quotas are shares of it).
fn class_count(cfg: &Config, c: &config::ChannelConfig) -> u32 {
    let g = &cfg.global;
    if c.input.scheme == Scheme::Udp && g.datagram_count > 0 {
        g.datagram_count
    } else {
        g.buffer_count
    }
}

/// Binds every channel of `cfg`: the part of start-up that can fail on addresses.
pub fn bind_all(cfg: &Config, seed: u64) -> Result<Vec<Channel>, String> {
    let n = cfg.channels.len();
    cfg.channels
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Channel::bind(
                c,
                class_count(cfg, c),
                n,
                seed.wrapping_add(i as u64 * 7919),
            )
        })
        .collect()
}

impl Daemon {
    /// Creates the ring and the shared-memory regions, and activates the bound channels.
    pub fn start(
        cfg: Config,
        channels: Vec<Channel>,
        config_path: Option<String>,
    ) -> Result<Daemon, String> {
        let g = &cfg.global;
        let ring = Ring::new(&RingOptions {
            entries: g.ring_entries,
            sqpoll: g.sqpoll,
            sqpoll_idle_ms: g.sqpoll_idle_ms,
            sqpoll_cpu: g.sqpoll_cpu,
            baseline: baseline_forced(&cfg),
            buffer_size: g.buffer_size,
            buffer_count: g.buffer_count,
            datagram_size: g.datagram_size,
            datagram_count: g.datagram_count,
            trial_multishot: true,
        })?;
        if let Some(n) = &ring.caps.sqpoll_note {
            if g.sqpoll == config::SqpollMode::Auto && n.starts_with("sqpoll = auto") {
                info!("SQPOLL off: {n}");
            } else {
                warn!("SQPOLL off: {n}");
            }
        }
        if let Some(n) = &ring.caps.registered_note {
            warn!("buffers not registered: {n}");
        }
        let shm_opts = shm_options(&cfg)?;
        let now = Instant::now();
        let mut d = Daemon {
            ring,
            channels: Vec::new(),
            pending_starts: Vec::new(),
            gens: Generations::default(),
            config_path,
            cq: Vec::with_capacity(cfg.global.ring_entries as usize * 4),
            signals: Signals::install()?,
            shutdown_deadline: None,
            closing_all: false,
            started: now,
            last_stats_log: now,
            last_stats_pub: now,
            last_monitor: now,
            stats_writer: None,
            shm_opts,
            seed: seed(),
            stop_at: None,
            monitor: None,
            pipe_warned: false,
            iowq_cap: 0,
            cfg,
        };
        let any_shm = d
            .cfg
            .channels
            .iter()
            .any(|c| c.samples.as_ref().is_some_and(|s| s.shm));
        if any_shm {
            match crate::shm::StatsWriter::create(&d.shm_opts) {
                Ok(w) => d.stats_writer = Some(w),
                Err(e) => warn!(
                    "cannot create the stats region in {}: {e}",
                    d.shm_opts.dir.display()
                ),
            }
        }
        for ch in channels {
            let ci = d.channels.len();
            d.channels.push(Some(ch));
            d.activate(ci)?;
            d.settle_zerocopy(ci);
        }
        d.cap_workers();
        info!("{}", d.ring.caps.summary());
        d.ring.push(Sqe::Tick, Token::daemon(OpKind::Tick));
        let fd = d.signals.read_end.as_raw_fd();
        d.ring
            .push(Sqe::ReadSignal { fd }, Token::daemon(OpKind::Signal));
        d.ring.submit().map_err(|e| format!("submit: {e}"))?;
        Ok(d)
    }

    pub fn caps(&self) -> &crate::engine::caps::Caps {
        &self.ring.caps
    }

    /// `zerocopy=on` outputs of channel `ci` where this kernel (or the baseline set) has no
    /// zero-copy send, or whose channel splices (its bytes never enter the pool), send by copy;
    /// the first case is worth a warning. Counts the outputs that keep it for the start-up line.
    fn settle_zerocopy(&mut self, ci: usize) {
        let send_zc = self.ring.caps.send_zc;
        let Some(Some(ch)) = self.channels.get_mut(ci) else {
            return;
        };
        let splices = ch.splice.is_some();
        let name = ch.cfg.name.clone();
        for o in ch.outputs.iter_mut().filter(|o| o.zerocopy) {
            if !send_zc {
                warn!(
                    "channel {name}: output {}: zerocopy=on, but this kernel has no zero-copy send (Linux 6.0+; or features = baseline): sending by copy",
                    o.url()
                );
                o.zerocopy = false;
            } else if splices {
                o.zerocopy = false;
            }
        }
        self.ring.caps.zerocopy_outputs = self
            .channels
            .iter()
            .flatten()
            .map(|c| c.outputs.iter().filter(|o| o.zerocopy).count())
            .sum();
    }

    /// Records how many channels splice and keeps the io-wq cap above what their blocking
    /// splices need: one splice-in and one splice-out each may hold a worker at once, plus a
    /// little for everything else. Without the cap (kernels before 5.15) the workers are
    /// bounded only by RLIMIT_NPROC.
    fn cap_workers(&mut self) {
        let splicing = || {
            self.channels
                .iter()
                .flatten()
                .filter(|c| c.splice.is_some())
        };
        let n = splicing().count();
        let tee = splicing()
            .filter(|c| c.splice.as_ref().is_some_and(|s| s.fan.is_some()))
            .count();
        // A splice-in, a splice-out per output and, fanning out, a tee per output but one.
        let ops: usize = splicing()
            .map(|c| match c.splice.as_ref().and_then(|s| s.fan.as_ref()) {
                Some(f) => 2 * f.pipes.len(),
                None => 2,
            })
            .sum();
        self.ring.caps.splice_channels = n;
        self.ring.caps.tee_channels = tee;
        if n == 0 {
            return;
        }
        let want = ops as u32 + 2;
        if want <= self.iowq_cap {
            return;
        }
        match self.ring.cap_unbounded_workers(want) {
            Ok(()) => {
                self.iowq_cap = want;
                debug!("io-wq: at most {want} unbounded workers for {n} splicing channel(s)");
            }
            Err(e) => {
                if self.iowq_cap == 0 {
                    debug!("io-wq worker cap unavailable ({e}); splice workers are bounded by RLIMIT_NPROC");
                }
                self.iowq_cap = u32::MAX;
            }
        }
    }

    /// Turns a bound channel into a running one: publisher, accepts, reads, dials.
    fn activate(&mut self, ci: usize) -> Result<(), String> {
        let now = Instant::now();
        let gens = &mut self.gens;
        let ring = &mut self.ring;
        let ch = self.channels[ci]
            .as_mut()
            .expect("activated channel exists");
        let ci16 = ci as u16;
        if ch.cfg.splice.splices_for(ch.cfg.outputs.len()) {
            let mode = ch.cfg.splice;
            if !ring.caps.has_op("SPLICE") {
                if mode == config::SpliceMode::On {
                    return Err(format!(
                        "channel {}: splice = on, but this kernel has no IORING_OP_SPLICE (Linux 5.7+)",
                        ch.name()
                    ));
                }
            } else {
                let want = self.cfg.global.pipe_size;
                match net::pipe(want) {
                    Ok(p) => {
                        if p.shrunk && !self.pipe_warned {
                            self.pipe_warned = true;
                            warn!(
                                "channel {}: the kernel refused a {} pipe (EPERM: fs.pipe-max-size or fs.pipe-user-pages-soft reached); splicing through {} (slower)",
                                ch.name(),
                                crate::config::units::format_size(u64::from(want)),
                                crate::config::units::format_size(u64::from(p.cap))
                            );
                        }
                        debug!(
                            "channel {}: splicing through a {} pipe",
                            ch.name(),
                            crate::config::units::format_size(u64::from(p.cap))
                        );
                        let n = ch.outputs.len();
                        let fan = if n < 2 {
                            Ok(None)
                        } else if !ring.caps.has_op("TEE") {
                            Err("this kernel has no IORING_OP_TEE (Linux 5.8+)".to_string())
                        } else {
                            fan_pipes(want, p.cap, n).map(|pipes| {
                                let caps: Vec<u32> = pipes.iter().map(|q| q.cap).collect();
                                Some(crate::engine::channel::FanPipes {
                                    state: crate::engine::splice::Fanout::new(p.cap, &caps),
                                    pipes,
                                    gen: gens.fresh(),
                                })
                            })
                        };
                        match fan {
                            Ok(fan) => {
                                if fan.is_some() {
                                    debug!(
                                        "channel {}: fan-out to {n} outputs with tee, one {} pipe each",
                                        ch.name(),
                                        crate::config::units::format_size(u64::from(p.cap))
                                    );
                                }
                                ch.splice = Some(crate::engine::channel::SplicePipe {
                                    fill: crate::engine::splice::PipeFill::new(p.cap),
                                    pipe: p,
                                    nonblocking: ring.caps.splice_eagain
                                        && !std::env::var("RINGRELAY_SPLICE_BLOCKING")
                                            .is_ok_and(|v| v == "1"),
                                    fan,
                                });
                            }
                            Err(e) => warn!(
                                "channel {}: cannot fan out with tee: {e}; using the buffer path",
                                ch.name()
                            ),
                        }
                    }
                    Err(e) if mode == config::SpliceMode::On => {
                        return Err(format!(
                            "channel {}: cannot create its pipe: {e}",
                            ch.name()
                        ))
                    }
                    Err(e) => warn!(
                        "channel {}: cannot create its pipe: {e}; using the buffer path",
                        ch.name()
                    ),
                }
            }
        }
        if let Some(s) = ch.cfg.samples.clone() {
            if s.shm {
                let p =
                    crate::shm::Publisher::create(&self.shm_opts, ch.name(), &s).map_err(|e| {
                        format!(
                            "channel {}: cannot create its region in {}: {e}",
                            ch.name(),
                            self.shm_opts.dir.display()
                        )
                    })?;
                ch.publisher = Some(p);
            }
        }
        if let Some(fd) = ch.pending_input.take() {
            let mut ep = Endpoint::new(gens.fresh(), Role::Input, fd, Link::Up);
            // A UDP input: multishot receives into a provided-buffer ring of datagram slots
            // where the kernel has them (Caps::multishot_recvmsg), else linked chains of
            // single-shot receives (post_reads).
            if ring.pool().class_size(Class::Small) >= MIN_MULTISHOT_SLOT {
                // No more than the smallest output quota: a burst the ring takes whole
                // must fit every output's queue.
                let quota = ch
                    .outputs
                    .iter()
                    .map(|o| o.queue.max_buffers())
                    .min()
                    .unwrap_or(usize::MAX);
                let initial =
                    crate::driver::bufring::entries_for(quota, UDP_RING_START).unwrap_or(0);
                ep.bufgroup = ring.open_buf_ring(Class::Small, initial, MAX_BUF_RING_ENTRIES);
                if let Some(g) = ep.bufgroup {
                    debug!(
                        "channel {}: multishot receive, buffer group {g} of {} slots",
                        ch.name(),
                        ring.buffers_provided(g)
                    );
                }
            }
            let slot = ch.insert(ep);
            ch.input = Some(slot);
        }
        if let Some(fd) = ch.pending_input_listener.take() {
            let slot = ch.insert(Endpoint::new(
                gens.fresh(),
                Role::InputListener,
                fd,
                Link::Up,
            ));
            ch.input_listener = Some(slot);
            arm_accept(ring, ch, ci16, slot);
        }
        if matches!(ch.cfg.input.scheme, Scheme::Tcp | Scheme::Unix) {
            dial_input(ring, gens, ch, ci16, now);
        }
        for oi in 0..ch.outputs.len() {
            let Some(fd) = ch.pending_out[oi].take() else {
                dial_output(ring, gens, ch, ci16, oi, now);
                continue;
            };
            if ch.outputs[oi].is_link() {
                let slot = ch.insert(Endpoint::new(
                    gens.fresh(),
                    Role::Link { out: oi },
                    fd,
                    Link::Up,
                ));
                ch.outputs[oi].link = Some(slot);
                ch.outputs[oi].connected_once = true;
            } else {
                let slot = ch.insert(Endpoint::new(
                    gens.fresh(),
                    Role::OutputListener { out: oi },
                    fd,
                    Link::Up,
                ));
                ch.outputs[oi].listener = Some(slot);
                arm_accept(ring, ch, ci16, slot);
            }
        }
        post_reads(ring, ch, ci16);
        Ok(())
    }

    /// Runs until SIGTERM/SIGINT (or `stop_at`) and every output is flushed or the
    /// shutdown timeout passed. Returns the exit code.
    pub fn run(&mut self) -> i32 {
        loop {
            if let Err(e) = self.ring.wait(None) {
                error!("io_uring wait failed: {e}; exiting so that a supervisor restarts us");
                return 1;
            }
            let mut cq = std::mem::take(&mut self.cq);
            cq.clear();
            self.ring.reap(&mut cq);
            for c in &cq {
                self.dispatch(*c);
            }
            self.cq = cq;
            self.after_batch();
            if self.closing_all && self.all_closed() {
                break;
            }
            if let Err(e) = self.ring.submit() {
                error!("io_uring submit failed: {e}");
                return 1;
            }
        }
        self.finish();
        0
    }

    fn all_closed(&self) -> bool {
        self.channels
            .iter()
            .flatten()
            .all(|c| c.live_endpoints() == 0)
    }

    fn dispatch(&mut self, c: Completion) {
        let Some(tok) = Token::decode(c.user_data) else {
            return;
        };
        if tok.chan == DAEMON_CHANNEL {
            match tok.kind {
                OpKind::Signal => self.on_signal(c.res),
                OpKind::Tick => self.on_tick(),
                _ => {}
            }
            return;
        }
        if tok.kind == OpKind::Cancel {
            return;
        }
        let ci = tok.chan as usize;
        let ring = &mut self.ring;
        let gens = &mut self.gens;
        let Some(Some(ch)) = self.channels.get_mut(ci) else {
            // A channel is only removed once all its completions have arrived.
            debug!("completion for removed channel {ci}: {tok:?}");
            return;
        };
        match tok.kind {
            OpKind::Recv => on_recv(ring, ch, tok, c.res),
            OpKind::RecvMulti => on_recv_multi(ring, ch, tok, c),
            OpKind::Send => on_write(ring, ch, tok, c.res),
            OpKind::SendZc => on_send_zc(ring, ch, tok, c),
            OpKind::Accept => {
                let count = class_count(&self.cfg, &ch.cfg);
                let n = self.cfg.channels.len();
                on_accept(ring, gens, ch, tok, c.res, c.more(), (count, n))
            }
            OpKind::Connect => on_connect(ring, ch, tok, c.res),
            OpKind::Hangup => on_hangup(ring, ch, tok, c.res),
            OpKind::SpliceIn => on_splice_in(ring, ch, tok, c.res),
            OpKind::SpliceOut => on_splice_out(ring, ch, tok, c.res),
            OpKind::Tee => on_tee(ring, ch, tok, c.res),
            OpKind::SpliceDist => on_splice_dist(ring, ch, tok, c.res),
            _ => {}
        }
    }

    /// Work after each batch of completions: start the sends of datagram outputs that got
    /// datagrams in this batch, refill inputs starved of buffers, finish removals, check
    /// whether a shutdown is complete.
    fn after_batch(&mut self) {
        for (ci, ch) in self.channels.iter_mut().enumerate() {
            if let Some(ch) = ch {
                let mut kicks = std::mem::take(&mut ch.batch_kicks);
                for &s in &kicks {
                    kick(&mut self.ring, ch, ci as u16, s);
                }
                kicks.clear();
                ch.batch_kicks = kicks;
                post_reads(&mut self.ring, ch, ci as u16);
            }
        }
        if self.shutdown_deadline.is_none() {
            self.end_drains(Instant::now());
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
                if let Some(mut ch) = self.channels[ci].take() {
                    // Nothing is in flight on the pipe: every splice is counted on an
                    // endpoint, and they are all gone.
                    debug_assert!(ch.splice.as_ref().is_none_or(|s| s.idle()));
                    // What a drain cut short left in the links' queues (no write holds it now).
                    for o in &mut ch.outputs {
                        for b in o.queue.clear() {
                            self.ring.pool_mut().release(b);
                        }
                    }
                    if let Some(p) = ch.publisher {
                        p.close();
                    }
                    info!("channel {}: closed", ch.cfg.name);
                }
                if let Some(pos) = self.pending_starts.iter().position(|(i, _)| *i == ci) {
                    let (_, cfg) = self.pending_starts.remove(pos);
                    self.start_channel(ci, &cfg);
                }
            }
        }
        if let Some(deadline) = self.shutdown_deadline {
            if !self.closing_all {
                let drained = self.channels.iter().flatten().all(|c| c.drained());
                if drained || Instant::now() >= deadline {
                    if !drained {
                        warn!("shutdown timeout reached with data still queued; closing");
                    }
                    self.close_everything();
                }
            }
        }
    }

    fn start_channel(&mut self, ci: usize, cfg: &config::ChannelConfig) {
        let n = self.cfg.channels.len().max(1);
        let count = class_count(&self.cfg, cfg);
        match Channel::bind(cfg, count, n, self.seed.wrapping_add(ci as u64)) {
            Ok(ch) => {
                if ci == self.channels.len() {
                    self.channels.push(Some(ch));
                } else {
                    self.channels[ci] = Some(ch);
                }
                match self.activate(ci) {
                    Ok(()) => {
                        self.cap_workers();
                        self.settle_zerocopy(ci);
                        info!("channel {}: started", cfg.name)
                    }
                    Err(e) => {
                        error!("{e}");
                        self.stop_channel(ci);
                    }
                }
            }
            Err(e) => error!("reload: {e}; the channel stays off"),
        }
    }

    /// Stops a channel the way SIGTERM stops them all: its input and listeners close at once
    /// (no new data, no new subscribers, and the ports are released for whatever replaces
    /// it); its outputs and subscribers flush what they hold for at most `shutdown_timeout`,
    /// then close, and the channel goes once idle (see `end_drains` and `after_batch`).
    fn stop_channel(&mut self, ci: usize) {
        let deadline = Instant::now() + self.cfg.global.shutdown_timeout;
        let Some(ch) = self.channels[ci].as_mut() else {
            return;
        };
        if ch.draining {
            return;
        }
        ch.draining = true;
        ch.drain_deadline = Some(deadline);
        close_intake(&mut self.ring, ch, ci as u16);
    }

    /// Ends the drains of channels stopped by a reload: once a channel's outputs are flushed,
    /// or at its deadline, everything it still has open is closed.
    fn end_drains(&mut self, now: Instant) {
        for (ci, ch) in self.channels.iter_mut().enumerate() {
            let Some(ch) = ch else { continue };
            let Some(deadline) = ch.drain_deadline else {
                continue;
            };
            let drained = ch.drained();
            if !drained && now < deadline {
                continue;
            }
            if !drained {
                warn!(
                    "channel {}: shutdown_timeout reached while flushing its outputs; closing them, {} queued bytes dropped",
                    ch.name(),
                    ch.queued_bytes()
                );
            }
            ch.drain_deadline = None;
            close_all(&mut self.ring, ch, ci as u16);
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let t = self.cfg.global.shutdown_timeout;
        info!(
            "stopping: no more input; flushing outputs (at most {:?})",
            t
        );
        self.shutdown_deadline = Some(Instant::now() + t);
        for (ci, ch) in self.channels.iter_mut().enumerate() {
            let Some(ch) = ch else { continue };
            ch.draining = true;
            close_intake(&mut self.ring, ch, ci as u16);
        }
    }

    fn close_everything(&mut self) {
        self.closing_all = true;
        for (ci, ch) in self.channels.iter_mut().enumerate() {
            let Some(ch) = ch else { continue };
            close_all(&mut self.ring, ch, ci as u16);
        }
    }

    fn finish(&mut self) {
        self.log_counters(log::Level::Info);
        for ch in self.channels.iter_mut().flatten() {
            if let Some(p) = ch.publisher.take() {
                p.close();
            }
        }
        if let Some(w) = self.stats_writer.take() {
            w.close();
        }
        info!("stopped");
    }

    fn on_signal(&mut self, res: i32) {
        if self.signals.term.swap(false, Ordering::Relaxed) {
            self.begin_shutdown();
        }
        if self.signals.hup.swap(false, Ordering::Relaxed) {
            self.reload();
        }
        if self.signals.usr1.swap(false, Ordering::Relaxed) {
            self.log_counters(log::Level::Info);
        }
        if res < 0 && res != -libc::EINTR && res != -libc::EAGAIN {
            error!(
                "signal pipe read failed: {}",
                std::io::Error::from_raw_os_error(-res)
            );
        }
        let fd = self.signals.read_end.as_raw_fd();
        self.ring
            .push(Sqe::ReadSignal { fd }, Token::daemon(OpKind::Signal));
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        if self.stop_at.is_some_and(|t| now >= t) {
            self.stop_at = None;
            self.begin_shutdown();
        }
        for (ci, ch) in self.channels.iter_mut().enumerate() {
            let Some(ch) = ch else { continue };
            let ci = ci as u16;
            tick_channel(
                &mut self.ring,
                &mut self.gens,
                ch,
                ci,
                now,
                self.shutdown_deadline.is_some(),
            );
        }
        if now.duration_since(self.last_stats_log) >= self.cfg.global.stats_interval {
            self.last_stats_log = now;
            self.log_counters(log::Level::Debug);
        }
        if now.duration_since(self.last_stats_pub) >= Duration::from_secs(1) {
            self.last_stats_pub = now;
            self.publish_stats();
        }
        if now.duration_since(self.last_monitor) >= Duration::from_secs(1) {
            self.last_monitor = now;
            let t = now.duration_since(self.started).as_secs_f64();
            if let Some(m) = self.monitor.as_mut() {
                m(&self.channels, t);
            }
        }
        if !self.closing_all {
            self.ring.push(Sqe::Tick, Token::daemon(OpKind::Tick));
        }
    }

    fn publish_stats(&mut self) {
        let Some(w) = self.stats_writer.as_mut() else {
            return;
        };
        let mut rows = Vec::new();
        for ch in self.channels.iter().flatten() {
            let s = &ch.stats;
            let state = if ch.input.is_some() {
                "up"
            } else if ch.input_listener.is_some() {
                "listening"
            } else {
                "down"
            };
            rows.push(crate::shm::StatRow {
                label: ch.name().to_string(),
                kind: "input".into(),
                state: state.into(),
                values: [
                    s.bytes,
                    s.datagrams,
                    s.drops,
                    0,
                    s.reconnects,
                    s.errors + s.malformed,
                    0,
                    0,
                ],
            });
            for o in &ch.outputs {
                let (backlog, clients) = output_backlog(ch, o);
                let o_s = &o.stats;
                rows.push(crate::shm::StatRow {
                    label: format!("{}/{}", ch.name(), o.url()),
                    kind: "output".into(),
                    state: output_state(ch, o).into(),
                    values: [
                        o_s.bytes,
                        o_s.datagrams,
                        o_s.drops,
                        o_s.disconnects,
                        o_s.reconnects,
                        o_s.errors,
                        backlog,
                        clients,
                    ],
                });
            }
        }
        w.publish(&rows);
    }

    fn log_counters(&self, level: log::Level) {
        if !log::log_enabled!(level) {
            return;
        }
        let pool = self.ring.pool();
        log::log!(
            level,
            "counters: pool {}/{} buffers in use, {} operations in flight",
            pool.in_use(),
            pool.count(),
            self.ring.in_flight()
        );
        for ch in self.channels.iter().flatten() {
            log::log!(
                level,
                "counters: channel {} input {}: {}",
                ch.name(),
                ch.cfg.input.url(),
                ch.stats
            );
            for o in &ch.outputs {
                let (backlog, clients) = output_backlog(ch, o);
                log::log!(
                    level,
                    "counters: channel {} output {} [{}]: {} backlog={} clients={}",
                    ch.name(),
                    o.url(),
                    output_state(ch, o),
                    o.stats,
                    backlog,
                    clients
                );
            }
        }
    }

    /// SIGHUP: re-read the file; keep unchanged channels untouched, stop removed ones, start
    /// new ones, restart changed ones. An invalid file changes nothing.
    fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            warn!("reload: running without a config file (--input/--output): nothing to reload");
            return;
        };
        if self.shutdown_deadline.is_some() {
            return;
        }
        let new = match config::load(&path) {
            Ok(c) => c,
            Err(errs) => {
                for e in &errs {
                    error!("reload: {e}");
                }
                error!(
                    "reload: {path} has {} error(s); the running configuration stays",
                    errs.len()
                );
                return;
            }
        };
        let old_g = &self.cfg.global;
        let g = &new.global;
        if g.log != old_g.log
            || g.log_facility != old_g.log_facility
            || g.syslog_socket != old_g.syslog_socket
        {
            let target = match g.log {
                LogDest::Syslog => logging::LogTarget::Syslog {
                    facility: g.log_facility.clone(),
                    socket: g.syslog_socket.clone(),
                },
                LogDest::Stderr => logging::LogTarget::Stderr,
            };
            if let Err(e) = logging::init(&target, g.log_level) {
                error!("reload: {e}; logging stays where it was");
            }
        }
        if g.log_level != old_g.log_level {
            logging::set_level(g.log_level);
        }
        let restart_keys = [
            (
                "sqpoll",
                g.sqpoll != old_g.sqpoll
                    || g.sqpoll_idle_ms != old_g.sqpoll_idle_ms
                    || g.sqpoll_cpu != old_g.sqpoll_cpu,
            ),
            ("ring_entries", g.ring_entries != old_g.ring_entries),
            (
                "buffer_size/buffer_count",
                g.buffer_size != old_g.buffer_size || g.buffer_count != old_g.buffer_count,
            ),
            ("features", g.features != old_g.features),
            ("user/group", g.user != old_g.user || g.group != old_g.group),
            (
                "shm_dir/shm_group/shm_mode",
                g.shm_dir != old_g.shm_dir
                    || g.shm_group != old_g.shm_group
                    || g.shm_mode != old_g.shm_mode,
            ),
            (
                "log/log_facility/syslog_socket",
                g.log != old_g.log
                    || g.log_facility != old_g.log_facility
                    || g.syslog_socket != old_g.syslog_socket,
            ),
        ];
        for (k, changed) in restart_keys {
            if changed {
                warn!("reload: {k} changed in [global]; it takes effect at the next restart");
            }
        }
        // The new settings apply from here on (a stopped channel drains for the new
        // shutdown_timeout); keys that need a restart keep their running values.
        let mut new_cfg = new;
        new_cfg.global = Global2::merge(&self.cfg.global, &new_cfg.global);
        let channels = new_cfg.channels.clone();
        self.cfg = new_cfg;
        let (mut kept, mut started, mut restarted, mut stopped) = (0, 0, 0, 0);
        // Channels waiting for their old instance to close (restarted, or removed and added
        // back, by an earlier reload): they start with what this file says, if anything.
        let mut pending = std::mem::take(&mut self.pending_starts);
        pending.retain_mut(|(_, pc)| {
            let Some(nc) = channels.iter().find(|c| c.name == pc.name) else {
                stopped += 1;
                info!(
                    "reload: channel {} removed while its old instance closes: it does not start again",
                    pc.name
                );
                return false;
            };
            if nc.same_settings(pc) {
                kept += 1;
            } else {
                restarted += 1;
                info!(
                    "reload: channel {} changed again: its new instance starts with these settings once the old one is closed",
                    nc.name
                );
            }
            *pc = nc.clone();
            true
        });
        self.pending_starts = pending;
        // Removed and changed channels.
        for ci in 0..self.channels.len() {
            let Some(ch) = self.channels[ci].as_ref() else {
                continue;
            };
            if ch.draining {
                continue;
            }
            match channels.iter().find(|c| c.name == ch.cfg.name) {
                Some(nc) if nc.same_settings(&ch.cfg) => {
                    kept += 1;
                    if let Some(ch) = self.channels[ci].as_mut() {
                        ch.cfg = nc.clone();
                    }
                }
                Some(nc) => {
                    restarted += 1;
                    info!("reload: channel {} changed: restarting it", nc.name);
                    self.pending_starts.push((ci, nc.clone()));
                    self.stop_channel(ci);
                }
                None => {
                    stopped += 1;
                    info!(
                        "reload: channel {} removed: flushing and closing it",
                        ch.cfg.name
                    );
                    self.stop_channel(ci);
                }
            }
        }
        // New channels.
        for nc in &channels {
            let exists = self
                .channels
                .iter()
                .flatten()
                .any(|c| c.cfg.name == nc.name && !c.draining)
                || self.pending_starts.iter().any(|(_, c)| c.name == nc.name);
            if exists {
                continue;
            }
            started += 1;
            // A channel of this name removed earlier and still closing: the new one starts
            // once it is gone (it may hold the same ports, and its region has this name).
            let closing = self
                .channels
                .iter()
                .position(|c| c.as_ref().is_some_and(|c| c.cfg.name == nc.name));
            if let Some(ci) = closing {
                info!(
                    "reload: channel {} added back: it starts once its old instance is closed",
                    nc.name
                );
                self.pending_starts.push((ci, nc.clone()));
                continue;
            }
            let ci = self
                .channels
                .iter()
                .position(|c| c.is_none())
                .unwrap_or(self.channels.len());
            self.start_channel(ci, nc);
        }
        info!("reload: {path}: {kept} unchanged, {started} new, {restarted} restarted, {stopped} removed");
        // Close idle channels right away (a removed channel with nothing queued).
        self.after_batch();
    }
}

/// Merging rule for reload: what may change at run time changes, the rest stays.
struct Global2;
impl Global2 {
    fn merge(old: &config::Global, new: &config::Global) -> config::Global {
        let mut g = old.clone();
        g.log_level = new.log_level;
        g.log = new.log;
        g.log_facility = new.log_facility.clone();
        g.syslog_socket = new.syslog_socket.clone();
        g.stats_interval = new.stats_interval;
        g.shutdown_timeout = new.shutdown_timeout;
        // Applies to channels started from here on; [global] splice reaches the channels'
        // own settings, so a change restarts the channels it affects.
        g.pipe_size = new.pipe_size;
        g.splice = new.splice;
        g
    }
}

fn output_backlog(ch: &Channel, o: &crate::engine::channel::Output) -> (u64, u64) {
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

fn output_state(ch: &Channel, o: &crate::engine::channel::Output) -> &'static str {
    if o.faulted {
        return "faulted";
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

fn errno_str(res: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(-res)
}

/// Watches an output stream socket for its peer's FIN (POLLRDHUP, one shot). TCP cannot tell a
/// half-close from a close until something is written, so a FIN alone never ends a
/// subscriber (`nc HOST PORT < /dev/null` half-closes at once and goes on reading); for a
/// collector it means "gone, redial" unless the output says `on_fin=keep`.
fn watch_hangup(ring: &mut Ring, ch: &mut Channel, ci: u16, slot: u16) {
    let Some(ep) = ch.ep_mut(slot) else { return };
    if ep.watching || ep.link != Link::Up {
        return;
    }
    ep.watching = true;
    ep.in_flight += 1;
    let fd = ep.raw_fd();
    ring.push(
        Sqe::PollHangup { fd },
        Token::new(OpKind::Hangup, ci, slot, ep.gen),
    );
}

fn on_hangup(ring: &mut Ring, ch: &mut Channel, tok: Token, res: i32) {
    let (ci, slot) = (tok.chan, tok.ep);
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        return;
    };
    ep.in_flight -= 1;
    ep.watching = false;
    if ep.link == Link::Closing || res < 0 {
        ch.reap_if_idle(slot);
        return;
    }
    let role = ep.role;
    let peer = ep.peer.clone();
    let name = ch.cfg.name.clone();
    match role {
        Role::Subscriber { out } => {
            // Not re-armed: POLLRDHUP stays set. A subscriber that really left is closed by
            // the first write that fails.
            debug!(
                "channel {name}: subscriber {peer} of {} closed its sending side; still sending",
                ch.outputs[out].url()
            );
        }
        Role::Link { out } => {
            let o = &mut ch.outputs[out];
            if o.cfg.endpoint.opts.on_fin == Some(OnFin::Keep) {
                debug!(
                    "channel {name}: collector {} closed its sending side; still sending (on_fin=keep)",
                    o.url()
                );
                return;
            }
            o.stats.errors += 1;
            let d = o.backoff.next_delay();
            if !o.faulted {
                o.faulted = true;
                warn!(
                    "channel {name}: output {} closed by the peer; reconnecting (data not yet handed to the old connection is kept; on_fin=keep if this collector only half-closes)",
                    o.url()
                );
            }
            o.retry_at = Some(Instant::now() + d);
            close_ep(ring, ch, ci, slot);
        }
        _ => {}
    }
}

/// Arms an accept on a listening endpoint.
fn arm_accept(ring: &mut Ring, ch: &mut Channel, ci: u16, slot: u16) {
    let Some(ep) = ch.ep_mut(slot) else { return };
    if ep.accepting || ep.link != Link::Up {
        return;
    }
    ep.accepting = true;
    ep.in_flight += 1;
    let fd = ep.raw_fd();
    ring.push(
        Sqe::Accept {
            fd,
            multishot: true,
        },
        Token::new(OpKind::Accept, ci, slot, ep.gen),
    );
}

/// Keeps the input's receives in flight: several for datagrams, one for a stream.
fn post_reads(ring: &mut Ring, ch: &mut Channel, ci: u16) {
    if ch.draining {
        return;
    }
    if ch.splice.is_some() {
        splice_in(ring, ch, ci);
        return;
    }
    let datagram = ch.input_is_datagram();
    if ch.blocked && !datagram {
        return;
    }
    if datagram && ch.input_retry_at.is_some() {
        return;
    }
    let Some(slot) = ch.input else { return };
    let Some(ep) = ch.slots.get_mut(slot as usize).and_then(|s| s.as_mut()) else {
        return;
    };
    if ep.link != Link::Up {
        return;
    }
    let class = if datagram && ring.pool().class_size(Class::Small) > DATAGRAM_HEADROOM {
        Class::Small
    } else {
        Class::Large
    };
    let size = ring.pool().class_size(class);
    if !datagram {
        // One read in flight, scattered over up to STREAM_READ_BUFFERS buffers while the pool
        // has plenty free: a quarter of the system calls per byte of one-buffer reads, and
        // every buffer still travels to the outputs on its own.
        if !ep.reading.is_empty() {
            return;
        }
        let (free, total) = ring.pool().free_of(Class::Large);
        let n = if free > total / 2 {
            STREAM_READ_BUFFERS
        } else {
            1
        };
        let fd = ep.raw_fd();
        for _ in 0..n {
            let Some(buf) = ring.pool_mut().take_class(Class::Large) else {
                break;
            };
            ep.reading.push(buf);
        }
        let (first, count) = match ep.reading.first() {
            Some(&b) => (b, ep.reading.len()),
            None => return,
        };
        let sqe = if count == 1 {
            Sqe::ReadStream {
                fd,
                buf: first,
                off: 0,
                len: size,
            }
        } else {
            let chunks = ep.reading.iter().map(|&buf| Chunk {
                buf,
                off: 0,
                len: size,
            });
            let (iov, n) = ep.iov.fill(ring, chunks);
            Sqe::ReadvStream { fd, iov, n }
        };
        ep.in_flight += 1;
        ring.push(sqe, Token::new(OpKind::Recv, ci, first, ep.gen));
        return;
    }
    if let Some(group) = ep.bufgroup {
        // One multishot receive for the input's life, re-armed when it ends (on_recv_multi),
        // once its ring has a buffer to offer again (all of them may be queued at outputs).
        if ep.multishot {
            return;
        }
        if ring.buffers_provided(group) == 0 {
            ep.dry_since.get_or_insert_with(Instant::now);
        } else {
            ep.dry_since = None;
            ep.multishot = true;
            ep.in_flight += 1;
            let fd = ep.raw_fd();
            ring.push(
                Sqe::RecvMulti { fd, group },
                Token::new(OpKind::RecvMulti, ci, slot, ep.gen),
            );
        }
        return;
    }
    // Datagrams: one linked chain of receives at a time. Receives pending side by side on
    // one socket complete out of the order in which they took the datagrams; a chain runs
    // them one after another in the kernel, so completions come in datagram order, without a
    // round trip through this loop per datagram. The next chain starts when this one is done.
    if !ep.reading.is_empty() {
        return;
    }
    let fd = ep.raw_fd();
    let gen = ep.gen;
    let mut ops = [(Sqe::Tick, Token::daemon(OpKind::Tick)); UDP_RECVS_IN_FLIGHT];
    let mut n = 0;
    while n < UDP_RECVS_IN_FLIGHT {
        let Some(buf) = ring.pool_mut().take_class(class) else {
            break;
        };
        ops[n] = (
            Sqe::RecvDatagram {
                fd,
                buf,
                off: DATAGRAM_HEADROOM,
                len: size - DATAGRAM_HEADROOM,
            },
            Token::new(OpKind::Recv, ci, buf, gen),
        );
        ep.reading.push(buf);
        n += 1;
    }
    if n == 0 {
        return;
    }
    if n == 1 || !ring.push_chain(&ops[..n]) {
        // No room for a whole chain: one receive now, the rest go back to the pool.
        for &b in &ep.reading[1..] {
            ring.pool_mut().abandon(b);
        }
        ep.reading.truncate(1);
        ring.push(ops[0].0, ops[0].1);
        n = 1;
    }
    ep.in_flight += n as u32;
}

/// A receive completed. For receives the token's endpoint field is the buffer index; the
/// endpoint is found by generation.
fn on_recv(ring: &mut Ring, ch: &mut Channel, tok: Token, res: i32) {
    let buf = tok.ep;
    let Some(slot) = ch.slot_of_gen(tok.gen) else {
        // Cannot happen (slots outlive their operations); give the buffer back regardless.
        ring.pool_mut().abandon(buf);
        return;
    };
    let datagram = ch.input_is_datagram();
    let ep = ch.ep_mut(slot).expect("slot found above");
    ep.in_flight -= 1;
    let closing = ep.link == Link::Closing;
    let peer = ep.peer.clone();
    let size = ring.pool().size_of(buf);
    if !datagram {
        // The stream's one read: its buffers are all of `reading`, in order; the bytes fill
        // them front to back.
        let mut bufs = std::mem::take(&mut ep.reading);
        let mut left = res.max(0) as u32;
        for &b in &bufs {
            let n = left.min(size);
            left -= n;
            if n > 0 {
                ring.pool_mut().filled(b);
                deliver(ring, ch, ci_of(tok), b, 0, n, false);
            } else {
                ring.pool_mut().abandon(b);
            }
        }
        bufs.clear();
        if let Some(ep) = ch.ep_mut(slot) {
            if ep.reading.is_empty() {
                ep.reading = bufs;
            }
        }
        if res <= 0 && !closing {
            // End of stream or an error: this producer is gone.
            if res == 0 {
                info!("channel {}: producer {} closed the stream", ch.name(), peer);
            } else {
                ch.stats.errors += 1;
                warn!(
                    "channel {}: input read failed: {}",
                    ch.name(),
                    errno_str(res)
                );
            }
            close_ep(ring, ch, ci_of(tok), slot);
            if matches!(ch.cfg.input.scheme, Scheme::Tcp | Scheme::Unix) {
                let d = ch.input_backoff.next_delay();
                ch.input_retry_at = Some(Instant::now() + d);
            }
        }
        ch.reap_if_idle(slot);
        return;
    }
    ep.reading.retain(|b| *b != buf);
    if res > 0 {
        let n = res as u32;
        if n > size - DATAGRAM_HEADROOM {
            ring.pool_mut().abandon(buf);
            ch.stats.malformed += 1;
            if ch.stats.malformed == 1 {
                warn!(
                    "channel {}: datagram of {n} bytes is larger than datagram_size ({} bytes with 16 bytes of headroom); counted as malformed (raise datagram_size)",
                    ch.name(),
                    size
                );
            }
        } else {
            ring.pool_mut().filled(buf);
            deliver(ring, ch, ci_of(tok), buf, DATAGRAM_HEADROOM, n, true);
        }
    } else {
        ring.pool_mut().abandon(buf);
        if res == -libc::ECANCELED {
            // The rest of a receive chain after a failed (or cancelled) receive.
        } else if res == 0 && !closing {
            ch.stats.malformed += 1;
        } else if !closing {
            ch.stats.errors += 1;
            warn!(
                "channel {}: input read failed: {}",
                ch.name(),
                errno_str(res)
            );
            // A UDP socket error (rare): retry after a backoff.
            let d = ch.input_backoff.next_delay();
            ch.input_retry_at = Some(Instant::now() + d);
        }
    }
    ch.reap_if_idle(slot);
}

/// A completion of a UDP input's multishot receive: one datagram in a buffer the kernel
/// picked from the input's ring (named in the flags), or the end of the receive (no MORE
/// flag: the ring ran dry with -ENOBUFS, a cancel, an error), after which it is re-armed by
/// post_reads once the ring has buffers again. A completion for an endpoint that is gone
/// (generation mismatch) still gives its buffer back.
fn on_recv_multi(ring: &mut Ring, ch: &mut Channel, tok: Token, c: Completion) {
    let (ci, slot) = (tok.chan, tok.ep);
    let bid = io_uring::cqueue::buffer_select(c.flags);
    let more = c.more();
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        if let Some(b) = bid {
            ring.give_back(b);
        }
        return;
    };
    let group = ep.bufgroup.expect("a multishot receive has a buffer ring");
    let closing = ep.link == Link::Closing;
    if !more {
        ep.in_flight -= 1;
        ep.multishot = false;
    }
    if let Some(b) = bid {
        match ring.take_datagram(group, b, c.res) {
            Datagram::Payload { off, len } if !closing => {
                if len == 0 {
                    ring.pool_mut().release(b);
                    ch.stats.malformed += 1;
                } else {
                    deliver(ring, ch, ci, b, off, len, true);
                }
            }
            Datagram::Payload { .. } => ring.pool_mut().release(b),
            Datagram::Truncated { len } => {
                ch.stats.malformed += 1;
                if ch.stats.malformed == 1 {
                    warn!(
                        "channel {}: datagram of {len} bytes is larger than datagram_size ({} bytes with 16 bytes of headroom); counted as malformed (raise datagram_size)",
                        ch.name(),
                        ring.pool().size_of(b)
                    );
                }
            }
            Datagram::Malformed => ch.stats.malformed += 1,
        }
    }
    if more {
        return;
    }
    if closing {
        // The last completion: nothing can pick from the ring any more.
        ring.close_buf_ring(group);
        if let Some(ep) = ch.ep_mut(slot) {
            ep.bufgroup = None;
        }
        ch.reap_if_idle(slot);
        return;
    }
    ch.stats.rearms += 1;
    if c.res < 0 && c.res != -libc::ENOBUFS && c.res != -libc::ECANCELED {
        ch.stats.errors += 1;
        warn!(
            "channel {}: input read failed: {}",
            ch.name(),
            errno_str(c.res)
        );
        // A UDP socket error (rare): retry after a backoff.
        let d = ch.input_backoff.next_delay();
        ch.input_retry_at = Some(Instant::now() + d);
    }
    // Re-armed right away when buffers are back (they are recycled first), else by the
    // post_reads after the batch that releases one.
    post_reads(ring, ch, ci);
}

fn ci_of(tok: Token) -> u16 {
    tok.chan
}

/// Offers a filled buffer to every output: `len` bytes at `off`. A datagram keeps
/// [`PREFIX`] free bytes before `off` for the framing length prefix.
#[allow(clippy::too_many_arguments)]
fn deliver(
    ring: &mut Ring,
    ch: &mut Channel,
    ci: u16,
    buf: u16,
    off: u32,
    len: u32,
    datagram: bool,
) {
    ch.stats.bytes += u64::from(len);
    if datagram {
        ch.stats.datagrams += 1;
    }
    if let Some(p) = ch.publisher.as_mut() {
        let data = ring.pool().bytes(buf, off, len);
        if datagram {
            p.feed_datagram(data);
        } else {
            p.feed_stream(data);
        }
    }
    if datagram && ch.blocked {
        // A block output is full: a datagram input cannot push back, so it drops here.
        ch.stats.drops += 1;
        ring.pool_mut().release(buf);
        return;
    }
    let framed = datagram && ch.framing() == Framing::U32Be;
    if framed {
        ring.pool_mut()
            .write_prefix(buf, off - PREFIX, &len.to_be_bytes());
    }
    let plain = Chunk { buf, off, len };
    let stream_chunk = if framed {
        Chunk {
            buf,
            off: off - PREFIX,
            len: len + PREFIX,
        }
    } else {
        plain
    };
    let Channel {
        outputs,
        slots,
        blocked,
        to_kick,
        to_disconnect,
        batch_kicks,
        ..
    } = ch;
    to_kick.clear();
    to_disconnect.clear();
    for o in outputs.iter_mut() {
        let chunk = if o.is_datagram() { plain } else { stream_chunk };
        if o.is_link() {
            let up = o
                .link
                .and_then(|s| slots.get(s as usize).and_then(|e| e.as_ref()))
                .is_some_and(|e| e.link == Link::Up);
            if !up && o.cfg.on_slow != OnSlow::Block {
                o.stats.drops += 1;
                continue;
            }
            match o.queue.offer(chunk) {
                Offer::Queued => ring.pool_mut().retain(buf),
                Offer::QueuedBlocking => {
                    ring.pool_mut().retain(buf);
                    if !*blocked {
                        debug!(
                            "blocked by {}: {} chunks, {} bytes queued; pool {} free",
                            o.cfg.endpoint.url(),
                            o.queue.len(),
                            o.queue.backlog(),
                            ring.pool().free_count()
                        );
                    }
                    *blocked = true;
                }
                Offer::Dropped => o.stats.drops += 1,
                Offer::Disconnect => {
                    // A pushed output that chose `disconnect`: drop its backlog and redial.
                    o.stats.drops += 1;
                    o.stats.disconnects += 1;
                    if let Some(s) = o.link {
                        to_disconnect.push(s);
                    }
                }
            }
            if let Some(s) = o.link {
                if o.is_datagram() {
                    if !batch_kicks.contains(&s) {
                        batch_kicks.push(s);
                    }
                } else {
                    to_kick.push(s);
                }
            }
        } else {
            for &s in &o.subscribers {
                let Some(ep) = slots.get_mut(s as usize).and_then(|e| e.as_mut()) else {
                    continue;
                };
                if ep.link != Link::Up {
                    continue;
                }
                let q = ep.queue.as_mut().expect("subscribers have queues");
                match q.offer(chunk) {
                    Offer::Queued => {
                        ring.pool_mut().retain(buf);
                        to_kick.push(s);
                    }
                    Offer::QueuedBlocking => {
                        ring.pool_mut().retain(buf);
                        *blocked = true;
                        to_kick.push(s);
                    }
                    Offer::Dropped => o.stats.drops += 1,
                    Offer::Disconnect => {
                        o.stats.disconnects += 1;
                        to_disconnect.push(s);
                    }
                }
            }
        }
    }
    ring.pool_mut().release(buf);
    let mut disconnect = std::mem::take(&mut ch.to_disconnect);
    let mut kicks = std::mem::take(&mut ch.to_kick);
    for &s in &disconnect {
        if let Some(ep) = ch.ep(s) {
            match ep.role {
                Role::Subscriber { out } => info!(
                    "channel {}: subscriber {} of {} is too slow ({}): disconnected",
                    ch.name(),
                    ep.peer,
                    ch.outputs[out].url(),
                    ep.queue.as_ref().map_or_else(
                        || format!("backlog over {} bytes", ch.outputs[out].cfg.max_backlog),
                        |q| q.limit_hit()
                    )
                ),
                Role::Link { out } => {
                    warn!(
                        "channel {}: output {} is too slow: backlog dropped, reconnecting",
                        ch.name(),
                        ch.outputs[out].url()
                    );
                    for b in ch.outputs[out].queue.clear() {
                        ring.pool_mut().release(b);
                    }
                    ch.outputs[out].retry_at = Some(Instant::now());
                    if let Some(ep) = ch.ep_mut(s) {
                        ep.detached = true;
                    }
                }
                _ => {}
            }
        }
        close_ep(ring, ch, ci, s);
    }
    for &s in &kicks {
        kick(ring, ch, ci, s);
    }
    disconnect.clear();
    kicks.clear();
    ch.to_disconnect = disconnect;
    ch.to_kick = kicks;
}

/// Starts the next writes of an output endpoint if none are in flight: one gathered write of
/// up to [`IOV_MAX`] queued chunks on a stream or file (a single fixed-buffer write when only
/// one chunk waits); on a datagram output, one segmented send (UDP_SEGMENT) for a run of
/// equal-sized datagrams at the front of the queue ([`outq::segment_run`], up to
/// [`GSO_SEGMENTS`]), or else up to [`IOV_MAX`] datagram sends.
///
/// A segmented send costs the kernel one trip through the socket and IP layers for the whole
/// run, which is most of a datagram send's cost: on the relay bench's 1-to-4 fan-out it took
/// the CPU per datagram from 1.06x to 0.38x of the blocking relay's. Datagram outputs are
/// kicked once per batch of completions ([`Daemon::after_batch`]), so that one send carries
/// every datagram the batch delivered.
///
/// Datagram sends are not linked (IOSQE_IO_LINK): each step of a linked chain waits for a
/// task-work run, which measured 5% loss on a 5000-datagram burst against none unlinked. A
/// send on a UDP socket completes inline at submission unless the socket's send buffer is
/// full, so sends leave in submission order; the outputs get a 4 MiB send buffer to keep that
/// so (only a send queued behind a full buffer could be overtaken, and the next batch waits
/// for the whole previous one).
fn kick(ring: &mut Ring, ch: &mut Channel, ci: u16, slot: u16) {
    if ch.splice.is_some() {
        splice_out(ring, ch, ci, slot);
        return;
    }
    let Channel { slots, outputs, .. } = ch;
    let Some(ep) = slots.get_mut(slot as usize).and_then(|e| e.as_mut()) else {
        return;
    };
    if ep.link != Link::Up || ep.write_ops > 0 {
        return;
    }
    let out = match ep.role {
        Role::Subscriber { out } | Role::Link { out } => out,
        _ => return,
    };
    let crate::engine::channel::Output {
        queue: out_queue,
        file,
        stats,
        faulted,
        backoff,
        retry_at,
        cfg,
        gso: gso_on,
        zerocopy,
        ..
    } = &mut outputs[out];
    if ep.queue.is_none() && retry_at.is_some() {
        // A link output waiting out a fault's backoff.
        return;
    }
    let datagram = cfg.endpoint.scheme == Scheme::Udp;
    let Endpoint {
        queue: ep_queue,
        iov,
        gso,
        gso_batch,
        writing,
        fd: ep_fd,
        gen,
        write_ops,
        in_flight,
        ..
    } = ep;
    let q: &mut OutQueue = match ep_queue.as_mut() {
        Some(q) => q,
        None => out_queue,
    };
    let Some(front) = q.front() else { return };
    let mut n = q.len().min(IOV_MAX);
    if let Some(f) = file.as_mut() {
        if let Some(limit) = f.rotate {
            if f.size > 0 && f.size + u64::from(front.len) > limit {
                match rotate_file(f) {
                    Ok(new_fd) => {
                        if let Some(old) = ep_fd.as_ref() {
                            let _ = nix::unistd::fsync(old);
                        }
                        *ep_fd = Some(new_fd);
                        f.size = 0;
                        info!("output {}: rotated", cfg.endpoint.url());
                    }
                    Err(e) => {
                        stats.errors += 1;
                        if !*faulted {
                            error!(
                                "output {}: rotation failed: {e}; retrying",
                                cfg.endpoint.url()
                            );
                            *faulted = true;
                        }
                        *retry_at = Some(Instant::now() + backoff.next_delay());
                        return;
                    }
                }
            }
            // Never write past the rotation size in one go (one chunk at least).
            let room = limit.saturating_sub(f.size);
            let mut total = 0u64;
            let fit = q
                .peek(n)
                .take_while(|c| {
                    total += u64::from(c.len);
                    total <= room
                })
                .count();
            n = fit.max(1);
        }
    }
    let fd = ep_fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
    if *zerocopy && !datagram && file.is_none() && front.len >= crate::engine::zerocopy::MIN_BYTES {
        // One chunk, sent from the pool buffer itself; the record keeps the buffer for the
        // kernel until the send's notification, the `writing` reference until its result.
        if let Some(idx) = ring.zc_begin(*gen, front.buf) {
            ring.pool_mut().retain(front.buf);
            writing.push(front.buf);
            ring.push(
                Sqe::SendZc { fd, chunk: front },
                Token::new(OpKind::SendZc, ci, slot, idx),
            );
            *write_ops = 1;
            *in_flight += 1;
            return;
        }
    }
    let tok = Token::new(OpKind::Send, ci, slot, *gen);
    if datagram && *gso_on {
        let (run, seg) = outq::segment_run(q.peek(GSO_SEGMENTS), GSO_SEGMENTS, GSO_BYTES);
        if run > 1 {
            // One segmented send for the run: the kernel cuts it back into the same datagrams.
            for c in q.peek(run) {
                ring.pool_mut().retain(c.buf);
                writing.push(c.buf);
            }
            let msg = gso
                .get_or_insert_with(Default::default)
                .fill(ring, q.peek(run), seg as u16);
            ring.push(Sqe::SendGso { fd, msg }, tok);
            *gso_batch = run as u32;
            *write_ops = 1;
            *in_flight += 1;
            return;
        }
    }
    if datagram {
        for c in q.peek(n) {
            ring.pool_mut().retain(c.buf);
            writing.push(c.buf);
            ring.push(
                Sqe::Write {
                    fd,
                    chunk: c,
                    socket: true,
                },
                tok,
            );
        }
        *write_ops = n as u32;
        *in_flight += n as u32;
        return;
    }
    for c in q.peek(n) {
        ring.pool_mut().retain(c.buf);
        writing.push(c.buf);
    }
    if n == 1 {
        ring.push(
            Sqe::Write {
                fd,
                chunk: front,
                socket: file.is_none(),
            },
            tok,
        );
    } else {
        let (arr, cnt) = iov.fill(ring, q.peek(n));
        ring.push(
            Sqe::Writev {
                fd,
                iov: arr,
                n: cnt,
            },
            tok,
        );
    }
    *write_ops = 1;
    *in_flight += 1;
}

/// The output pipes of a fan-out channel: `n`, each asked for `want` bytes and each at least
/// `p0_cap` (what the intake pipe got). A smaller one could not take every buffer of a round in
/// one tee, so the channel does not splice then.
fn fan_pipes(want: u32, p0_cap: u32, n: usize) -> Result<Vec<net::Pipe>, String> {
    let mut pipes = Vec::with_capacity(n);
    for i in 0..n {
        let q = net::pipe(want).map_err(|e| format!("output {i}'s pipe: {e}"))?;
        if q.cap < p0_cap {
            return Err(format!(
                "output {i}'s pipe holds {} and the intake pipe {} (F_SETPIPE_SZ refused: fs.pipe-user-pages-soft?)",
                crate::config::units::format_size(u64::from(q.cap)),
                crate::config::units::format_size(u64::from(p0_cap))
            ));
        }
        pipes.push(q);
    }
    Ok(pipes)
}

/// Starts the splice-in of a splicing channel (input socket -> pipe) if the input is up, the
/// pipe has room and none is in flight. Its length is the pipe's free room, never 0.
fn splice_in(ring: &mut Ring, ch: &mut Channel, ci: u16) {
    let Channel {
        slots,
        splice,
        input,
        draining,
        ..
    } = ch;
    let (Some(sp), Some(slot), false) = (splice.as_mut(), *input, *draining) else {
        return;
    };
    let Some(ep) = slots.get_mut(slot as usize).and_then(|e| e.as_mut()) else {
        return;
    };
    if ep.link != Link::Up {
        return;
    }
    let Some(len) = sp.fill.next_in() else { return };
    sp.fill.start_in();
    ep.splicing = true;
    ep.in_flight += 1;
    ring.push(
        Sqe::Splice {
            fd_in: ep.raw_fd(),
            fd_out: sp.pipe.write.as_raw_fd(),
            len,
        },
        Token::new(OpKind::SpliceIn, ci, slot, ep.gen),
    );
}

/// Starts the splice-out of a splicing channel (pipe -> link `slot`) if the link is up, the
/// pipe holds bytes and none is in flight. Its length is the pipe's fill, never 0, so it never
/// waits on an empty pipe.
fn splice_out(ring: &mut Ring, ch: &mut Channel, ci: u16, slot: u16) {
    let Channel {
        slots,
        outputs,
        splice,
        ..
    } = ch;
    let Some(sp) = splice.as_mut() else { return };
    let Some(ep) = slots.get_mut(slot as usize).and_then(|e| e.as_mut()) else {
        return;
    };
    let Role::Link { out } = ep.role else { return };
    if ep.link != Link::Up || outputs[out].retry_at.is_some() {
        return;
    }
    let (pipe_fd, fill) = sp.out_pipe(out);
    let Some(len) = fill.next_out() else {
        return;
    };
    fill.start_out();
    ep.splicing = true;
    ep.write_ops += 1;
    ep.in_flight += 1;
    ring.push(
        Sqe::Splice {
            fd_in: pipe_fd,
            fd_out: ep.raw_fd(),
            len,
        },
        Token::new(OpKind::SpliceOut, ci, slot, ep.gen),
    );
}

/// What [`splice_wait`] made of a completion.
enum Wait {
    /// Not a wait: a splice's own result.
    No,
    /// Handled: a wait armed, or a wait over and the splice submitted again.
    Handled,
    /// A wait of a closing endpoint ended: the splice is over, having moved nothing.
    Ended,
}

/// Non-blocking splice sockets: a splice that found its socket not ready (-EAGAIN) waits in a
/// POLL_ADD (POLLIN for the input, POLLOUT for the link) under the same token, and is submitted
/// again with the pipe's current room or fill when the wait ends. The splice counts as in
/// flight all along (one in-flight operation, the pipe's `filling`/`draining` held).
fn splice_wait(ring: &mut Ring, ch: &mut Channel, tok: Token, res: i32, out: bool) -> Wait {
    let Channel { splice, slots, .. } = ch;
    let Some(sp) = splice.as_mut() else {
        return Wait::No;
    };
    let Some(ep) = slots
        .get_mut(tok.ep as usize)
        .and_then(|e| e.as_mut())
        .filter(|e| e.gen == tok.gen)
    else {
        return Wait::No;
    };
    let closing = ep.link == Link::Closing;
    let fd = ep.raw_fd();
    let oi = match ep.role {
        Role::Link { out } => out,
        _ => 0,
    };
    let pipe_fd = if out {
        sp.out_pipe(oi).0
    } else {
        sp.pipe.write.as_raw_fd()
    };
    if ep.splice_poll {
        ep.splice_poll = false;
        if closing {
            return Wait::Ended;
        }
        let sqe = if out {
            Sqe::Splice {
                fd_in: pipe_fd,
                fd_out: fd,
                len: sp.out_pipe(oi).1.retry_out(),
            }
        } else {
            Sqe::Splice {
                fd_in: fd,
                fd_out: pipe_fd,
                len: sp.fill.retry_in(),
            }
        };
        ring.push(sqe, tok);
        return Wait::Handled;
    }
    if res != -libc::EAGAIN || closing {
        return Wait::No;
    }
    ep.splice_poll = true;
    ring.push(
        if out {
            Sqe::PollOut { fd }
        } else {
            Sqe::PollIn { fd }
        },
        tok,
    );
    Wait::Handled
}

/// The result a splice completion stands for, or `None` when there is nothing more to do: a
/// stale completion (dropped untouched), or one [`splice_wait`] handled (a wait in POLL_ADD
/// armed, or over and the splice submitted again). The wait of a closing endpoint that ended
/// reads as -ECANCELED: the splice is over, having moved nothing.
fn splice_result(
    ring: &mut Ring,
    ch: &mut Channel,
    tok: Token,
    res: i32,
    out: bool,
) -> Option<i32> {
    if ch.ep_gen(tok.ep, tok.gen).is_none() {
        // Cannot happen (a slot lives until its last completion): drop it untouched.
        debug!("stale splice completion {tok:?}");
        return None;
    }
    match splice_wait(ring, ch, tok, res, out) {
        Wait::Handled => None,
        Wait::Ended => Some(-libc::ECANCELED),
        Wait::No => Some(res),
    }
}

/// A splice-in completed. Whatever it moved is in the pipe and counts, even when the input
/// is closing; a FIN (0) or an error ends this producer exactly as on the buffer path, and the
/// pipe's bytes still go out.
fn on_splice_in(ring: &mut Ring, ch: &mut Channel, tok: Token, res: i32) {
    let (ci, slot) = (tok.chan, tok.ep);
    let Some(res) = splice_result(ring, ch, tok, res, false) else {
        return;
    };
    let Some(sp) = ch.splice.as_mut() else {
        return;
    };
    let moved = sp.fill.done_in(res);
    ch.stats.bytes += u64::from(moved);
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        // Cannot happen: the slot lives until this completion.
        return;
    };
    ep.in_flight -= 1;
    ep.splicing = false;
    let closing = ep.link == Link::Closing;
    let peer = ep.peer.clone();
    if moved > 0 {
        if ch.splice.as_ref().is_some_and(|s| s.fan.is_some()) {
            distribute(ring, ch, ci);
        } else if let Some(l) = ch.outputs.first().and_then(|o| o.link) {
            splice_out(ring, ch, ci, l);
        }
    }
    if !closing && res <= 0 && res != -libc::EINTR {
        if res == 0 {
            info!("channel {}: producer {} closed the stream", ch.name(), peer);
        } else {
            ch.stats.errors += 1;
            warn!(
                "channel {}: input splice failed: {}",
                ch.name(),
                errno_str(res)
            );
        }
        close_ep(ring, ch, ci, slot);
        if matches!(ch.cfg.input.scheme, Scheme::Tcp | Scheme::Unix) {
            let d = ch.input_backoff.next_delay();
            ch.input_retry_at = Some(Instant::now() + d);
        }
    }
    ch.reap_if_idle(slot);
    // The same input again, or a producer that connected while this splice was still in
    // flight on the old one.
    post_reads(ring, ch, ci);
}

/// A splice-out completed: what it moved left the pipe for the link. On a fault the link is
/// closed and redialed as on the buffer path; the bytes still in the pipe go to the next
/// connection.
fn on_splice_out(ring: &mut Ring, ch: &mut Channel, tok: Token, res: i32) {
    let (ci, slot) = (tok.chan, tok.ep);
    let Some(res) = splice_result(ring, ch, tok, res, true) else {
        return;
    };
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        return;
    };
    let Role::Link { out } = ep.role else {
        return;
    };
    let Some(sp) = ch.splice.as_mut() else {
        return;
    };
    let moved = sp.out_pipe(out).1.done_out(res);
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        return;
    };
    ep.in_flight -= 1;
    ep.write_ops -= 1;
    ep.splicing = false;
    let closing = ep.link == Link::Closing;
    let name = ch.cfg.name.clone();
    let o = &mut ch.outputs[out];
    o.stats.bytes += u64::from(moved);
    if moved > 0 && o.faulted && !closing {
        o.faulted = false;
        o.backoff.reset();
        info!("channel {name}: output {} recovered", o.url());
    }
    if !closing && res <= 0 && res != -libc::EINTR {
        let err = if res == 0 {
            std::io::Error::from_raw_os_error(libc::EPIPE)
        } else {
            errno_str(res)
        };
        o.stats.errors += 1;
        let d = o.backoff.next_delay();
        if !o.faulted {
            o.faulted = true;
            warn!(
                "channel {name}: output {} lost: {err}; reconnecting (data still in the pipe is kept)",
                o.url()
            );
        }
        o.retry_at = Some(Instant::now() + d);
        close_ep(ring, ch, ci, slot);
    }
    ch.reap_if_idle(slot);
    // The pipe has room again (or, fanning out, this output's pipe may be the last one a round
    // waited for); and a link that connected while this splice was in flight on the old one
    // can start.
    post_reads(ring, ch, ci);
    distribute(ring, ch, ci);
    if let Some(l) = ch.outputs[out].link {
        splice_out(ring, ch, ci, l);
    }
}

/// Starts a distribution round of a fan-out channel if one may start
/// ([`crate::engine::splice::Fanout::start_round`]): a tee of the intake pipe's fill into each output's
/// pipe but the last.
fn distribute(ring: &mut Ring, ch: &mut Channel, ci: u16) {
    let Some(sp) = ch.splice.as_mut() else { return };
    let Some(fan) = sp.fan.as_mut() else { return };
    let Some(len) = fan.state.start_round(&mut sp.fill) else {
        return;
    };
    let fd_in = sp.pipe.read.as_raw_fd();
    for (i, q) in fan.pipes[..fan.pipes.len() - 1].iter().enumerate() {
        ring.push(
            Sqe::Tee {
                fd_in,
                fd_out: q.write.as_raw_fd(),
                len,
            },
            Token::new(OpKind::Tee, ci, i as u16, fan.gen),
        );
    }
}

/// The fan-out state of channel `ch` if `tok` (a tee or distribution splice) belongs to it.
fn fan_of(
    ch: &mut Channel,
    tok: Token,
) -> Option<(
    &mut crate::engine::splice::PipeFill,
    &mut crate::engine::channel::FanPipes,
)> {
    let sp = ch.splice.as_mut()?;
    let fan = sp.fan.as_mut().filter(|f| f.gen == tok.gen)?;
    Some((&mut sp.fill, fan))
}

/// A fan-out's tee or distribution splice did not move exactly its round's length: the output
/// pipes no longer hold what they should, so the channel stops at once, like a fault that
/// cannot be retried (nothing more is delivered from its pipes).
fn fail_fanout(ring: &mut Ring, ch: &mut Channel, ci: u16, why: &str, first: bool) {
    if first {
        ch.stats.errors += 1;
        error!(
            "channel {}: fan-out invariant broken ({why}); closing the channel",
            ch.name()
        );
    }
    ch.draining = true;
    ch.drain_deadline = None;
    close_all(ring, ch, ci);
}

/// A tee into output `tok.ep`'s pipe completed: that output may start sending, and once every
/// tee of the round is in, the distribution splice moves the round's bytes into the last pipe.
fn on_tee(ring: &mut Ring, ch: &mut Channel, tok: Token, res: i32) {
    let ci = tok.chan;
    let Some((_, fan)) = fan_of(ch, tok) else {
        debug!("stale tee completion {tok:?}");
        return;
    };
    let first = !fan.state.failed();
    match fan.state.done_tee(tok.ep as usize, res) {
        Ok(next) => {
            if let Some(len) = next {
                let sp = ch.splice.as_ref().expect("fan-out channel splices");
                let fan = sp.fan.as_ref().expect("fan-out");
                let last = fan.pipes.len() - 1;
                ring.push(
                    Sqe::Splice {
                        fd_in: sp.pipe.read.as_raw_fd(),
                        fd_out: fan.pipes[last].write.as_raw_fd(),
                        len,
                    },
                    Token::new(OpKind::SpliceDist, ci, last as u16, fan.gen),
                );
            }
            if let Some(l) = ch.outputs[tok.ep as usize].link {
                splice_out(ring, ch, ci, l);
            }
        }
        Err(why) => fail_fanout(ring, ch, ci, &why, first),
    }
}

/// The distribution splice of a round completed: the round is over, the intake pipe has room
/// again and the last output may send.
fn on_splice_dist(ring: &mut Ring, ch: &mut Channel, tok: Token, res: i32) {
    let ci = tok.chan;
    let Some((p0, fan)) = fan_of(ch, tok) else {
        debug!("stale distribution splice completion {tok:?}");
        return;
    };
    let first = !fan.state.failed();
    match fan.state.done_final(p0, res) {
        Ok(_) => {
            post_reads(ring, ch, ci);
            if let Some(l) = ch.outputs[tok.ep as usize].link {
                splice_out(ring, ch, ci, l);
            }
            distribute(ring, ch, ci);
        }
        Err(why) => fail_fanout(ring, ch, ci, &why, first),
    }
}

/// Makes a splicing channel's socket non-blocking when the channel splices that way.
fn splice_socket(ch: &Channel, fd: RawFd) {
    if ch.splice.as_ref().is_some_and(|s| s.nonblocking) {
        if let Err(e) = net::set_nonblocking(fd, true) {
            warn!("channel {}: O_NONBLOCK: {e}", ch.name());
        }
    }
}

/// NAME -> NAME.1 -> NAME.2 ... (keeping `keep`), then a fresh NAME.
fn rotate_file(f: &crate::engine::channel::FileOut) -> std::io::Result<OwnedFd> {
    let name = |k: u32| {
        let mut p = f.path.clone().into_os_string();
        p.push(format!(".{k}"));
        std::path::PathBuf::from(p)
    };
    let _ = std::fs::remove_file(name(f.keep));
    for k in (1..f.keep).rev() {
        let _ = std::fs::rename(name(k), name(k + 1));
    }
    std::fs::rename(&f.path, name(1))?;
    net::open_append(&f.path)
}

/// A completion of a zero-copy send: its result (then handled as any send's, with MORE when a
/// notification follows), or its notification (the kernel let go of the buffer). The
/// endpoint's in-flight count covers the notification still owed, so the slot is not reused
/// before it arrives; the buffer is found through the ring's record, never the endpoint.
fn on_send_zc(ring: &mut Ring, ch: &mut Channel, tok: Token, c: Completion) {
    let idx = tok.gen;
    let Some(rec) = ring.zc_record(idx) else {
        debug!("zero-copy completion without a record: {tok:?}");
        return;
    };
    let slot = tok.ep;
    if io_uring::cqueue::notif(c.flags) {
        ring.zc_end(idx);
        if let Some(ep) = ch.ep_gen(slot, rec.gen) {
            ep.in_flight -= 1;
            ch.reap_if_idle(slot);
        }
        return;
    }
    if c.more() {
        if let Some(ep) = ch.ep_gen(slot, rec.gen) {
            ep.in_flight += 1;
        }
    } else {
        ring.zc_end(idx);
    }
    let send = Token::new(OpKind::Send, tok.chan, slot, rec.gen);
    let out = ch.ep_gen(slot, rec.gen).and_then(|e| match e.role {
        Role::Subscriber { out } | Role::Link { out } => Some(out),
        _ => None,
    });
    if let (Some(out), true) = (out, c.res > 0) {
        ch.outputs[out].stats.zerocopy += 1;
    }
    if c.res == -libc::EOPNOTSUPP {
        // This socket takes no zero-copy sends (a kernel built without them for this path):
        // by copy from now on. Nothing was sent; the chunk stays queued.
        if let Some(o) = out {
            let o = &mut ch.outputs[o];
            if o.zerocopy {
                o.zerocopy = false;
                info!(
                    "channel {}: output {}: zero-copy sends refused ({}); sending by copy",
                    ch.cfg.name,
                    o.url(),
                    errno_str(c.res)
                );
            }
        }
        on_write(ring, ch, send, -libc::EAGAIN);
        return;
    }
    on_write(ring, ch, send, c.res);
}

fn on_write(ring: &mut Ring, ch: &mut Channel, tok: Token, res: i32) {
    let ci = tok.chan;
    let slot = tok.ep;
    let out_is_datagram = |ch: &Channel, role: Role| match role {
        Role::Subscriber { out } | Role::Link { out } => ch.outputs[out].is_datagram(),
        _ => false,
    };
    let Some(role) = ch.ep_gen(slot, tok.gen).map(|e| e.role) else {
        debug!("stale write completion {tok:?}");
        return;
    };
    let datagram = out_is_datagram(ch, role);
    let ep = ch.ep_mut(slot).expect("checked above");
    ep.in_flight -= 1;
    ep.write_ops -= 1;
    // The references the in-flight writes held: one per datagram send, all for a gathered
    // write.
    // Datagrams this completion stands for: a segmented send's run, or one.
    let batch = std::mem::take(&mut ep.gso_batch);
    let sent_count = batch.max(1);
    if datagram && batch == 0 {
        if !ep.writing.is_empty() {
            let b = ep.writing.remove(0);
            ring.pool_mut().release(b);
        }
    } else {
        for b in ep.writing.drain(..) {
            ring.pool_mut().release(b);
        }
    }
    if ep.link == Link::Closing {
        // Bytes a link's old connection took are gone from its queue (which outlives the
        // connection): advance past them so the next connection does not send them again.
        if let (Role::Link { out }, true, false) = (role, res > 0, ep.detached) {
            let pool = ring.pool_mut();
            let q = &mut ch.outputs[out].queue;
            if datagram {
                for _ in 0..sent_count {
                    if let Some(b) = q.skip_front() {
                        pool.release(b);
                    }
                }
            } else {
                q.advance_bytes(res as u64, |b| pool.release(b));
            }
            ch.outputs[out].stats.bytes += res as u64;
        }
        ch.reap_if_idle(slot);
        return;
    }
    let peer = ep.peer.clone();
    let idle = ep.write_ops == 0;
    let out = match role {
        Role::Subscriber { out } | Role::Link { out } => out,
        _ => return,
    };
    if res > 0 {
        let n = res as u64;
        let Channel {
            slots,
            outputs,
            cfg,
            ..
        } = &mut *ch;
        let o = &mut outputs[out];
        let q = match role {
            Role::Subscriber { .. } => slots[slot as usize]
                .as_mut()
                .and_then(|e| e.queue.as_mut())
                .expect("subscriber queue"),
            _ => &mut o.queue,
        };
        let pool = ring.pool_mut();
        if datagram {
            for _ in 0..sent_count {
                if let Some(b) = q.skip_front() {
                    pool.release(b);
                }
            }
            o.stats.datagrams += u64::from(sent_count);
        } else {
            q.advance_bytes(n, |b| pool.release(b));
        }
        o.stats.bytes += n;
        if let Some(f) = o.file.as_mut() {
            f.size += n;
        }
        if o.faulted && matches!(role, Role::Link { .. }) {
            o.faulted = false;
            o.backoff.reset();
            info!("channel {}: output {} recovered", cfg.name, o.url());
        }
        if idle {
            kick(ring, ch, ci, slot);
        }
        if ch.blocked && ch.may_unblock() {
            ch.blocked = false;
            post_reads(ring, ch, ci);
        }
        return;
    }
    if res == -libc::EAGAIN {
        // Nothing was sent (the buffer path's sockets block, so only a refused zero-copy send
        // reports this): the chunk stays queued and goes again.
        if idle {
            kick(ring, ch, ci, slot);
        }
        return;
    }
    if datagram && res == -libc::ECANCELED {
        // A send earlier in the chain failed; this one was not attempted: it stays queued.
        if idle {
            kick(ring, ch, ci, slot);
        }
        return;
    }
    let err = if res == 0 {
        std::io::Error::from_raw_os_error(libc::EPIPE)
    } else {
        errno_str(res)
    };
    let name = ch.cfg.name.clone();
    let o = &mut ch.outputs[out];
    match role {
        Role::Subscriber { .. } => {
            info!(
                "channel {name}: subscriber {peer} of {} left: {err}",
                o.url()
            );
            close_ep(ring, ch, ci, slot);
        }
        Role::Link { .. }
            if batch > 0
                && matches!(
                    -res,
                    libc::EINVAL
                        | libc::EIO
                        | libc::EMSGSIZE
                        | libc::EOPNOTSUPP
                        | libc::ENOPROTOOPT
                ) =>
        {
            // The kernel, the route or the device refuses segmentation (no checksum offload,
            // datagrams larger than the path MTU, an old kernel): one send per datagram from
            // now on. Nothing was sent; the run stays queued.
            o.gso = false;
            info!(
                "channel {name}: output {}: segmented sends refused ({err}); sending one datagram per send",
                o.url()
            );
            if idle {
                kick(ring, ch, ci, slot);
            }
        }
        Role::Link { .. } if datagram => {
            // Typically ECONNREFUSED from an ICMP port unreachable: drop this datagram (or
            // this segmented run: the kernel sent none of it).
            for _ in 0..sent_count {
                if let Some(b) = o.queue.skip_front() {
                    ring.pool_mut().release(b);
                }
            }
            o.stats.drops += u64::from(sent_count);
            o.stats.errors += 1;
            if !o.faulted {
                o.faulted = true;
                warn!(
                    "channel {name}: output {}: {err}; dropping until it recovers",
                    o.url()
                );
            }
            if idle {
                kick(ring, ch, ci, slot);
            }
        }
        Role::Link { .. } if o.file.is_some() => {
            o.stats.errors += 1;
            let d = o.backoff.next_delay();
            if !o.faulted {
                o.faulted = true;
                error!(
                    "channel {name}: output {}: write failed: {err}; retrying (queue kept)",
                    o.url()
                );
            }
            o.retry_at = Some(Instant::now() + d);
        }
        _ => {
            o.stats.errors += 1;
            let d = o.backoff.next_delay();
            if !o.faulted {
                o.faulted = true;
                warn!(
                    "channel {name}: output {} lost: {err}; reconnecting (data not yet handed to the old connection is kept)",
                    o.url()
                );
            }
            o.retry_at = Some(Instant::now() + d);
            close_ep(ring, ch, ci, slot);
        }
    }
}

fn on_accept(
    ring: &mut Ring,
    gens: &mut Generations,
    ch: &mut Channel,
    tok: Token,
    res: i32,
    more: bool,
    quota_of: (u32, usize),
) {
    let ci = tok.chan;
    let slot = tok.ep;
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        if res >= 0 {
            drop(net::own_fd(res));
        }
        return;
    };
    if !more {
        ep.in_flight -= 1;
        ep.accepting = false;
    }
    let role = ep.role;
    let closing = ep.link == Link::Closing || ch.draining;
    if res >= 0 {
        let fd = net::own_fd(res);
        if closing {
            drop(fd);
        } else {
            accepted(ring, gens, ch, ci, role, fd, quota_of);
        }
    } else if !closing && res != -libc::ECANCELED {
        let e = errno_str(res);
        match -res {
            libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS => {
                warn!(
                    "channel {}: accept failed: {e}; retrying shortly",
                    ch.name()
                );
                // Re-armed by the tick, not at once (the condition would repeat).
                ch.reap_if_idle(slot);
                return;
            }
            _ => debug!("channel {}: accept: {e}", ch.name()),
        }
    }
    if !more && !closing {
        arm_accept(ring, ch, ci, slot);
    }
    ch.reap_if_idle(slot);
}

fn accepted(
    ring: &mut Ring,
    gens: &mut Generations,
    ch: &mut Channel,
    ci: u16,
    role: Role,
    fd: OwnedFd,
    (buffer_count, channels): (u32, usize),
) {
    let peer = net::peer_name(fd.as_raw_fd());
    let ip = net::peer_ip(fd.as_raw_fd());
    match role {
        Role::InputListener => {
            let allow = &ch.cfg.input.opts.allow;
            if !allow.is_empty() && !ip.is_some_and(|ip| allow.iter().any(|c| c.contains(ip))) {
                ch.stats.refused += 1;
                warn!(
                    "channel {}: producer {peer} refused: not in allow=",
                    ch.name()
                );
                return;
            }
            if ch.input.is_some() {
                ch.stats.refused += 1;
                warn!(
                    "channel {}: second producer {peer} refused: a producer is already connected",
                    ch.name()
                );
                return;
            }
            if ch.stats.bytes > 0 || ch.stats.reconnects > 0 || ch.input_faulted {
                ch.stats.reconnects += 1;
            }
            ch.input_faulted = true;
            splice_socket(ch, fd.as_raw_fd());
            let mut ep = Endpoint::new(gens.fresh(), Role::Input, fd, Link::Up);
            ep.peer = peer.clone();
            let slot = ch.insert(ep);
            ch.input = Some(slot);
            info!("channel {}: producer {peer} connected", ch.name());
            post_reads(ring, ch, ci);
        }
        Role::OutputListener { out } => {
            let o = &mut ch.outputs[out];
            let allow = &o.cfg.endpoint.opts.allow;
            if !allow.is_empty() && !ip.is_some_and(|ip| allow.iter().any(|c| c.contains(ip))) {
                o.stats.errors += 1;
                warn!(
                    "channel {}: subscriber {peer} of {} refused: not in allow=",
                    ch.cfg.name,
                    o.url()
                );
                return;
            }
            let max = o.cfg.endpoint.opts.max_clients.unwrap_or(64) as usize;
            if o.subscribers.len() >= max {
                o.stats.errors += 1;
                warn!(
                    "channel {}: subscriber {peer} of {} refused: max_clients={max} reached",
                    ch.cfg.name,
                    o.url()
                );
                return;
            }
            if let Some(n) = o.cfg.endpoint.opts.sndbuf {
                net::set_sndbuf(fd.as_raw_fd(), n);
            }
            let mut ep = Endpoint::new(gens.fresh(), Role::Subscriber { out }, fd, Link::Up);
            let quota = crate::engine::channel::buffer_quota(buffer_count, channels, o.cfg.on_slow);
            ep.queue = Some(OutQueue::new(o.cfg.on_slow, o.cfg.max_backlog, quota));
            ep.peer = peer.clone();
            o.stats.reconnects += 1;
            info!(
                "channel {}: subscriber {peer} connected to {}",
                ch.cfg.name,
                o.url()
            );
            let slot = ch.insert(ep);
            ch.outputs[out].subscribers.push(slot);
            watch_hangup(ring, ch, ci, slot);
        }
        _ => {}
    }
}

fn on_connect(ring: &mut Ring, ch: &mut Channel, tok: Token, res: i32) {
    let ci = tok.chan;
    let slot = tok.ep;
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        return;
    };
    ep.in_flight -= 1;
    if ep.link == Link::Closing {
        ch.reap_if_idle(slot);
        return;
    }
    let result = if res < 0 {
        Err(errno_str(res))
    } else {
        net::finish_connect(ep.raw_fd())
    };
    connected(ring, ch, ci, slot, result);
}

/// A connect finished (at once or after POLLOUT).
fn connected(ring: &mut Ring, ch: &mut Channel, ci: u16, slot: u16, result: std::io::Result<()>) {
    let Some(ep) = ch.ep_mut(slot) else { return };
    let role = ep.role;
    match result {
        Ok(()) => {
            ep.link = Link::Up;
            let fd = ep.raw_fd();
            splice_socket(ch, fd);
            match role {
                Role::Input => {
                    ch.input_backoff.reset();
                    if ch.input_faulted {
                        ch.stats.reconnects += 1;
                    }
                    ch.input_faulted = true;
                    info!(
                        "channel {}: connected to producer {}",
                        ch.name(),
                        ch.cfg.input.url()
                    );
                    post_reads(ring, ch, ci);
                }
                Role::Link { out } => {
                    let o = &mut ch.outputs[out];
                    o.backoff.reset();
                    if o.connected_once {
                        o.stats.reconnects += 1;
                        info!("channel {}: output {} reconnected", ch.cfg.name, o.url());
                    } else {
                        info!("channel {}: output {} connected", ch.cfg.name, o.url());
                    }
                    o.connected_once = true;
                    o.faulted = false;
                    if o.scheme() != Scheme::Udp && o.file.is_none() {
                        watch_hangup(ring, ch, ci, slot);
                    }
                    kick(ring, ch, ci, slot);
                }
                _ => {}
            }
        }
        Err(e) => {
            match role {
                Role::Input => {
                    ch.stats.errors += 1;
                    let d = ch.input_backoff.next_delay();
                    if ch.input_backoff.failures() == 1 {
                        warn!(
                            "channel {}: cannot connect to producer {}: {e}; retrying with backoff",
                            ch.name(),
                            ch.cfg.input.url()
                        );
                    }
                    ch.input_retry_at = Some(Instant::now() + d);
                }
                Role::Link { out } => {
                    let o = &mut ch.outputs[out];
                    o.stats.errors += 1;
                    let d = o.backoff.next_delay();
                    if !o.faulted {
                        o.faulted = true;
                        warn!(
                            "channel {}: cannot connect to {}: {e}; retrying with backoff (block: data is kept)",
                            ch.cfg.name,
                            o.url()
                        );
                    }
                    o.retry_at = Some(Instant::now() + d);
                }
                _ => {}
            }
            close_ep(ring, ch, ci, slot);
        }
    }
}

fn dial_input(ring: &mut Ring, gens: &mut Generations, ch: &mut Channel, ci: u16, now: Instant) {
    ch.input_retry_at = None;
    match net::dial(&ch.cfg.input) {
        Ok(d) => {
            let link = if d.in_progress {
                Link::Connecting
            } else {
                Link::Up
            };
            let mut ep = Endpoint::new(gens.fresh(), Role::Input, d.fd, link);
            ep.peer = ch.cfg.input.url();
            let slot = ch.insert(ep);
            ch.input = Some(slot);
            start_connect(ring, ch, ci, slot, d.in_progress);
        }
        Err(e) => {
            ch.stats.errors += 1;
            let d = ch.input_backoff.next_delay();
            if ch.input_backoff.failures() == 1 {
                warn!(
                    "channel {}: cannot dial producer {}: {e}; retrying",
                    ch.name(),
                    ch.cfg.input.url()
                );
            }
            ch.input_retry_at = Some(now + d);
        }
    }
}

fn dial_output(
    ring: &mut Ring,
    gens: &mut Generations,
    ch: &mut Channel,
    ci: u16,
    oi: usize,
    now: Instant,
) {
    let o = &mut ch.outputs[oi];
    o.retry_at = None;
    let res = match o.scheme() {
        Scheme::Tcp | Scheme::Unix => net::dial(&o.cfg.endpoint).map(|d| (d.fd, d.in_progress)),
        Scheme::Udp => net::udp_output(&o.cfg.endpoint).map(|fd| (fd, false)),
        Scheme::File => match o.file.as_mut() {
            Some(f) => net::open_append(&f.path).map(|fd| {
                f.size = std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0);
                (fd, false)
            }),
            None => return,
        },
        _ => return,
    };
    match res {
        Ok((fd, in_progress)) => {
            let link = if in_progress {
                Link::Connecting
            } else {
                Link::Up
            };
            let slot = ch.insert(Endpoint::new(
                gens.fresh(),
                Role::Link { out: oi },
                fd,
                link,
            ));
            ch.outputs[oi].link = Some(slot);
            start_connect(ring, ch, ci, slot, in_progress);
        }
        Err(e) => {
            o.stats.errors += 1;
            let d = o.backoff.next_delay();
            if !o.faulted {
                o.faulted = true;
                warn!(
                    "channel {}: cannot open {}: {e}; retrying with backoff",
                    ch.cfg.name,
                    o.url()
                );
            }
            o.retry_at = Some(now + d);
        }
    }
}

fn start_connect(ring: &mut Ring, ch: &mut Channel, ci: u16, slot: u16, in_progress: bool) {
    if in_progress {
        let ep = ch.ep_mut(slot).expect("just inserted");
        ep.in_flight += 1;
        let fd: RawFd = ep.raw_fd();
        ring.push(
            Sqe::PollOut { fd },
            Token::new(OpKind::Connect, ci, slot, ep.gen),
        );
    } else {
        connected(ring, ch, ci, slot, Ok(()));
    }
}

/// Per-channel timer work: redials, retries, accept re-arming, heartbeats.
fn tick_channel(
    ring: &mut Ring,
    gens: &mut Generations,
    ch: &mut Channel,
    ci: u16,
    now: Instant,
    shutting_down: bool,
) {
    if let Some(p) = ch.publisher.as_mut() {
        p.tick();
    }
    let due = |t: Option<Instant>| t.is_some_and(|t| now >= t);
    if !ch.draining {
        if ch.input.is_none() && matches!(ch.cfg.input.scheme, Scheme::Tcp | Scheme::Unix) {
            if due(ch.input_retry_at) || ch.input_retry_at.is_none() {
                dial_input(ring, gens, ch, ci, now);
            }
        } else if ch.input_is_datagram() && due(ch.input_retry_at) {
            ch.input_retry_at = None;
            post_reads(ring, ch, ci);
        }
        grow_dry_ring(ring, ch, ci, now);
        if let Some(l) = ch.input_listener {
            arm_accept(ring, ch, ci, l);
        }
        for oi in 0..ch.outputs.len() {
            if let Some(l) = ch.outputs[oi].listener {
                arm_accept(ring, ch, ci, l);
            }
        }
    }
    for oi in 0..ch.outputs.len() {
        let o = &ch.outputs[oi];
        if !o.is_link() || !due(o.retry_at) {
            continue;
        }
        let pending = ch.output_pending(oi);
        // While shutting down, only outputs with something left to flush are redialed.
        if shutting_down && !pending {
            continue;
        }
        // A channel stopped by a reload redials only while it still flushes.
        if ch.draining && !shutting_down && (!pending || ch.drain_deadline.is_none()) {
            continue;
        }
        match o.link {
            None => dial_output(ring, gens, ch, ci, oi, now),
            Some(slot) => {
                // A file write that failed: try it again.
                ch.outputs[oi].retry_at = None;
                kick(ring, ch, ci, slot);
            }
        }
    }
}

/// A UDP input whose ring stayed dry for a whole tick has its buffers held by an output that
/// does not send them (a stuck `drop` subscriber keeps up to its quota): the ring gets more
/// buffers, so that the outputs that keep up go on getting datagrams, as on the chain path.
fn grow_dry_ring(ring: &mut Ring, ch: &mut Channel, ci: u16, now: Instant) {
    let Some(slot) = ch.input else { return };
    let Some(ep) = ch.ep_mut(slot) else { return };
    let (Some(group), Some(since)) = (ep.bufgroup, ep.dry_since) else {
        return;
    };
    if ep.multishot || now.duration_since(since) < crate::driver::ring::TICK {
        return;
    }
    ep.dry_since = None;
    let before = ring.buf_ring_size(group);
    let added = ring.grow_buf_ring(Class::Small, group, usize::from(before.max(2)));
    if added > 0 {
        debug!(
            "channel {}: receive ring dry for a tick (an output holds its buffers): {} -> {} buffers",
            ch.name(),
            before,
            ring.buf_ring_size(group)
        );
    }
    post_reads(ring, ch, ci);
}

/// Begins closing an endpoint: shut the socket down and cancel what is in flight; the slot is
/// freed when the last completion arrives.
fn close_ep(ring: &mut Ring, ch: &mut Channel, ci: u16, slot: u16) {
    let Some(ep) = ch.ep_mut(slot) else { return };
    if ep.link == Link::Closing {
        return;
    }
    let was_connecting = ep.link == Link::Connecting;
    ep.link = Link::Closing;
    let gen = ep.gen;
    let role = ep.role;
    let fd = ep.raw_fd();
    let is_file = matches!(role, Role::Link { out } if ch.outputs[out].file.is_some());
    let ep = ch.ep_mut(slot).expect("present");
    if !is_file {
        net::shutdown(fd);
    }
    for &b in &ep.reading {
        ring.push(
            Sqe::Cancel {
                user_data: Token::new(OpKind::Recv, ci, b, gen).encode(),
            },
            Token::daemon(OpKind::Cancel),
        );
    }
    if ep.multishot {
        // Its final completion closes the buffer ring (on_recv_multi).
        ring.push(
            Sqe::Cancel {
                user_data: Token::new(OpKind::RecvMulti, ci, slot, gen).encode(),
            },
            Token::daemon(OpKind::Cancel),
        );
    } else if let Some(g) = ep.bufgroup.take() {
        // Not armed (waiting for buffers, or after its end): nothing picks from the ring.
        ring.close_buf_ring(g);
    }
    if ep.accepting {
        ring.push(
            Sqe::Cancel {
                user_data: Token::new(OpKind::Accept, ci, slot, gen).encode(),
            },
            Token::daemon(OpKind::Cancel),
        );
    }
    if ep.watching {
        ring.push(
            Sqe::Cancel {
                user_data: Token::new(OpKind::Hangup, ci, slot, gen).encode(),
            },
            Token::daemon(OpKind::Cancel),
        );
    }
    if ep.splicing {
        let kind = if role == Role::Input {
            OpKind::SpliceIn
        } else {
            OpKind::SpliceOut
        };
        ring.push(
            Sqe::Cancel {
                user_data: Token::new(kind, ci, slot, gen).encode(),
            },
            Token::daemon(OpKind::Cancel),
        );
    }
    if was_connecting {
        ring.push(
            Sqe::Cancel {
                user_data: Token::new(OpKind::Connect, ci, slot, gen).encode(),
            },
            Token::daemon(OpKind::Cancel),
        );
    }
    let queued = ep.queue.as_mut().map(|q| q.clear()).unwrap_or_default();
    for b in queued {
        ring.pool_mut().release(b);
    }
    match role {
        Role::Input => {
            if ch.input == Some(slot) {
                ch.input = None;
            }
        }
        Role::InputListener => ch.input_listener = None,
        Role::OutputListener { out } => ch.outputs[out].listener = None,
        Role::Subscriber { out } => ch.outputs[out].subscribers.retain(|s| *s != slot),
        Role::Link { out } => {
            if ch.outputs[out].link == Some(slot) {
                ch.outputs[out].link = None;
            }
        }
    }
    ch.reap_if_idle(slot);
}

/// Closes what brings data or subscribers into a channel: its input, the input's listener and
/// the outputs' listeners. Outputs and subscribers stay open to flush what they hold.
fn close_intake(ring: &mut Ring, ch: &mut Channel, ci: u16) {
    for slot in [ch.input, ch.input_listener].into_iter().flatten() {
        close_ep(ring, ch, ci, slot);
    }
    for oi in 0..ch.outputs.len() {
        if let Some(l) = ch.outputs[oi].listener {
            close_ep(ring, ch, ci, l);
        }
    }
}

/// Closes every endpoint of a channel still open, syncing output files first.
fn close_all(ring: &mut Ring, ch: &mut Channel, ci: u16) {
    for s in 0..ch.slots.len() as u16 {
        let Some(e) = ch.ep(s) else { continue };
        if e.link == Link::Closing {
            continue;
        }
        if matches!(e.role, Role::Link { out } if ch.outputs[out].file.is_some()) {
            if let Some(fd) = e.fd.as_ref() {
                let _ = nix::unistd::fsync(fd);
            }
        }
        close_ep(ring, ch, ci, s);
    }
}

/// Reports a start-up failure once: to the log, and to the waiting parent when detached.
fn fail_start(readiness: daemonize::Readiness, e: &str) {
    if readiness.is_detached() {
        error!("{e}");
    }
    readiness.failed(e);
}

/// `ringrelay run`.
pub fn run_command(a: RunArgs) -> i32 {
    let (cfg, path) = match (&a.config, &a.input) {
        (Some(_), Some(_)) => {
            eprintln!("ringrelay: run takes either -c FILE or --input/--output, not both");
            return 2;
        }
        (Some(p), None) => (config::load(p), Some(p.clone())),
        (None, Some(i)) => (config::from_cli(i, &a.output), None),
        (None, None) => {
            eprintln!("ringrelay: run needs -c FILE or --input URL --output URL");
            return 2;
        }
    };
    let mut cfg = match cfg {
        Ok(c) => c,
        Err(errs) => {
            for e in &errs {
                eprintln!("{e}");
            }
            return 1;
        }
    };
    if let Some(l) = &a.log_level {
        match logging::parse_level(l) {
            Ok(l) => cfg.global.log_level = l,
            Err(e) => {
                eprintln!("ringrelay: --log-level: {e}");
                return 2;
            }
        }
    }
    let asked_syslog = a.syslog || cfg.global.log == LogDest::Syslog;
    let syslog_target = logging::LogTarget::Syslog {
        facility: cfg.global.log_facility.clone(),
        socket: cfg.global.syslog_socket.clone(),
    };
    let mut target = if asked_syslog {
        syslog_target.clone()
    } else {
        logging::LogTarget::Stderr
    };
    if let Err(e) = logging::init(&target, cfg.global.log_level) {
        eprintln!("ringrelay: {e}");
        return 1;
    }
    if a.daemon && !asked_syslog {
        // A detached daemon's stderr is /dev/null: log to syslog if there is one.
        match logging::init(&syslog_target, cfg.global.log_level) {
            Ok(()) => {
                eprintln!("ringrelay: --daemon: logging to syslog (stderr closes once detached)");
                target = syslog_target;
            }
            Err(e) => {
                let _ = logging::init(&target, cfg.global.log_level);
                eprintln!("ringrelay: --daemon without syslog ({e}): the log is discarded once detached; set log = syslog");
            }
        }
    }
    let use_syslog = matches!(target, logging::LogTarget::Syslog { .. });
    if let Err(e) =
        daemonize::check_require_user(cfg.global.require_user, cfg.global.user.as_deref())
    {
        eprintln!("ringrelay: {e}");
        return 1;
    }
    let pidpath = a
        .pidfile
        .clone()
        .map(std::path::PathBuf::from)
        .or_else(|| cfg.global.pidfile.clone());
    let mut pidfile = match pidpath.as_ref().map(daemonize::Pidfile::acquire) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            eprintln!("ringrelay: {e}");
            return 1;
        }
        None => None,
    };
    let channels = match bind_all(&cfg, seed()) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            if use_syslog {
                eprintln!("ringrelay: {e}");
            }
            return 1;
        }
    };
    let readiness = if a.daemon {
        match daemonize::detach() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("ringrelay: {e}");
                return 1;
            }
        }
    } else {
        daemonize::Readiness::foreground()
    };
    if a.daemon {
        // The pid in syslog lines is the daemon's, not the parent's.
        let _ = logging::init(&target, cfg.global.log_level);
    }
    if let Some(p) = pidfile.as_mut() {
        if let Err(e) = p.write_pid() {
            readiness.failed(&e);
            return 1;
        }
    }
    let n = cfg.channels.len();
    let user = cfg.global.user.clone();
    let group = cfg.global.group.clone();
    let mut d = match Daemon::start(cfg, channels, path) {
        Ok(d) => d,
        Err(e) => {
            fail_start(readiness, &e);
            return 1;
        }
    };
    if user.is_some() || group.is_some() {
        if let Err(e) = daemonize::drop_privileges(user.as_deref(), group.as_deref()) {
            fail_start(readiness, &e);
            return 1;
        }
    }
    info!("ready: {n} channels");
    readiness.ready();
    let code = d.run();
    drop(d);
    drop(pidfile);
    code
}
