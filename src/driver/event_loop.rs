//! The loop: the one ring's completions fed to the engine, the engine's operations submitted to
//! the ring, and what only the process can do: the timer, signals, reading the configuration
//! file at SIGHUP, the counters region, the notifications to systemd and the demo's monitor.
//!
//! Owns: the start-up of a running relay (the ring built over the engine's pool, the engine
//! started over the bound channels), and the order of each turn: wait, reap, hand every
//! completion to the engine (daemon-level ones, the timer and the signal pipe, are handled
//! here), let the engine finish the batch, submit what it asked for.
//!
//! Must never: decide anything about a channel (that is the engine's), or block anywhere but in
//! the ring's wait.

use super::ring::{Ring, RingOptions};
use super::sys::{bind_channel, Kernel};
use crate::config::{self, Config, FeatureSet, LogDest};
use crate::engine::buffers::BufferPool;
use crate::engine::channel::Channel;
use crate::engine::io::{Bound, Completion, Effects};
use crate::engine::metrics_server::ProcessInfo;
use crate::engine::token::{OpKind, Token, DAEMON_CHANNEL};
use crate::engine::{Engine, Io};
use crate::metrics::Snapshot;
use crate::ops::logging;
use crate::ops::notify::{Notifier, Totals};
use crate::ops::signals::Signals;
use crate::shm::{ShmOptions, StatsWriter};
use log::{error, info, warn};
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How often the counters region is rewritten (at the next tick after this much time).
const STATS_EVERY: Duration = Duration::from_millis(100);

/// A hook the demo uses to show live throughput; called about once a second.
pub type Monitor = Box<dyn FnMut(&[Option<Channel>], f64)>;

pub struct Daemon {
    // Field order: the engine (which names descriptors and holds publishers) goes before the
    // ring, and the ring before anything else it may point into.
    engine: Engine,
    ring: Ring,
    fx: Effects,
    cq: Vec<Completion>,
    signals: Signals,
    config_path: Option<String>,
    shm_opts: ShmOptions,
    stats_writer: Option<StatsWriter>,
    started: Instant,
    /// The start, in ns since the Unix epoch, for the counters region.
    started_real_ns: i64,
    last_stats_pub: Instant,
    last_monitor: Instant,
    /// systemd's notification socket, when run by systemd (see [`Daemon::notify_ready`]).
    notify: Option<Notifier>,
    /// Stop by itself at this instant (demo `--duration`).
    pub stop_at: Option<Instant>,
    pub monitor: Option<Monitor>,
}

/// Reads the feature-set override from the environment.
pub fn baseline_forced(cfg: &Config) -> bool {
    cfg.global.features == FeatureSet::Baseline
        || std::env::var("RINGRELAY_FEATURES").is_ok_and(|v| v == "baseline")
}

fn shm_options(cfg: &Config) -> Result<ShmOptions, String> {
    let group = match &cfg.global.shm_group {
        Some(g) => Some(crate::ops::daemonize::lookup_group(g)?.as_raw()),
        None => None,
    };
    let run_as = match &cfg.global.user {
        Some(u) => Some(crate::ops::daemonize::lookup_user(u)?.0.as_raw()),
        None => None,
    };
    Ok(ShmOptions {
        dir: cfg.global.shm_dir.clone(),
        mode: cfg.global.shm_mode,
        group,
        run_as,
    })
}

/// A seed for this process's backoff jitter.
pub fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    t ^ (u64::from(std::process::id()) << 32)
}

/// Binds every channel of `cfg`: the part of start-up that can fail on addresses.
pub fn bind_all(cfg: &Config) -> Result<Vec<Bound>, String> {
    cfg.channels.iter().map(bind_channel).collect()
}

/// Binds the metrics server's listener when `metrics` is set: a port in use (or any other
/// failure) is a start-up error naming the address and its port.
pub fn bind_metrics(cfg: &Config) -> Result<Option<(OwnedFd, SocketAddr)>, String> {
    let Some(addr) = cfg.global.metrics else {
        return Ok(None);
    };
    match super::net::metrics_listen(addr) {
        Ok(x) => Ok(Some(x)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "metrics = {addr}: port {} is in use by another process: {e}",
            addr.port()
        )),
        Err(e) => Err(format!(
            "metrics = {addr}: cannot listen on port {}: {e}",
            addr.port()
        )),
    }
}

/// Runs `$body` with an [`Io`] over the daemon's ring, then submits what the engine asked for.
macro_rules! with_io {
    ($d:expr, |$engine:ident, $io:ident| $body:expr) => {{
        let d = &mut *$d;
        let (arena, ring_sys) = d.ring.split();
        let mut kernel = Kernel {
            ring: ring_sys,
            shm: &d.shm_opts,
        };
        let $engine = &mut d.engine;
        let $io = &mut Io {
            now: Instant::now(),
            fx: &mut d.fx,
            sys: &mut kernel,
            mem: arena,
        };
        let r = $body;
        d.ring.submit_effects(&mut d.fx);
        r
    }};
}

impl Daemon {
    /// Creates the ring and the shared-memory regions, and starts the bound channels.
    pub fn start(
        cfg: Config,
        bound: Vec<Bound>,
        config_path: Option<String>,
    ) -> Result<Daemon, String> {
        let g = &cfg.global;
        let pool = BufferPool::for_global(g);
        let ring = Ring::new(
            &RingOptions {
                entries: g.ring_entries,
                sqpoll: g.sqpoll,
                sqpoll_idle_ms: g.sqpoll_idle_ms,
                sqpoll_cpu: g.sqpoll_cpu,
                baseline: baseline_forced(&cfg),
                trial_multishot: true,
            },
            &pool,
        )?;
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
        let mut caps = ring.caps.clone();
        // Blocking splice sockets instead of POLL_ADD waits, for comparison.
        if std::env::var("RINGRELAY_SPLICE_BLOCKING").is_ok_and(|v| v == "1") {
            caps.splice_eagain = false;
        }
        let shm_opts = shm_options(&cfg)?;
        let now = Instant::now();
        let any_shm = cfg
            .channels
            .iter()
            .any(|c| c.samples.as_ref().is_some_and(|s| s.shm));
        if any_shm {
            // Once, with a clear message, before any channel tries to publish there.
            crate::ops::fsperm::check_private_dir(&shm_opts.dir, "shm_dir", shm_opts.run_as)?;
        }
        let mut d = Daemon {
            engine: Engine::new(cfg, caps, pool, seed(), now),
            ring,
            fx: Effects::default(),
            cq: Vec::new(),
            signals: Signals::install()?,
            config_path,
            shm_opts,
            stats_writer: None,
            started: now,
            started_real_ns: real_ns(),
            last_stats_pub: now,
            last_monitor: now,
            notify: None,
            stop_at: None,
            monitor: None,
        };
        d.cq.reserve(d.engine.config().global.ring_entries as usize * 4);
        // The counters region is published whether or not a channel decimates. Without a
        // decimating channel shm_dir is optional: a directory that cannot be made or is not
        // trusted (`StatsWriter::create` applies the same rule) costs only `ringrelay stat`.
        match StatsWriter::create(&d.shm_opts) {
            Ok(w) => d.stats_writer = Some(w),
            Err(e) => warn!(
                "cannot create the counters region in {}: {e}; the relay runs without it \
                 (ringrelay stat will find nothing)",
                d.shm_opts.dir.display()
            ),
        }
        with_io!(&mut d, |engine, io| engine.start(bound, io))?;
        info!("{}", d.engine.caps().summary());
        d.ring.push_tick();
        d.ring.push_signal_read(d.signals.fd());
        d.ring.submit().map_err(|e| format!("submit: {e}"))?;
        Ok(d)
    }

    /// Every channel is bound and the loop is about to run: tells systemd `READY=1` through
    /// `notify` (with `MAINPID=mainpid` after a fork), which the loop then keeps informed
    /// (reloads, shutdown, status, watchdog).
    pub fn notify_ready(&mut self, notify: Option<Notifier>, mainpid: Option<u32>) {
        self.notify = notify;
        let (channels, totals) = totals(&self.engine);
        if let Some(n) = self.notify.as_mut() {
            n.ready(Instant::now(), mainpid, channels, totals);
        }
    }

    /// Serves `/metrics` and `/healthz` on `listener` (bound by [`bind_metrics`] to `addr`).
    pub fn serve_metrics(&mut self, listener: OwnedFd, addr: SocketAddr) {
        let caps = self.engine.caps();
        let mut features = vec![if caps.baseline { "baseline" } else { "auto" }];
        for (on, name) in [
            (caps.sqpoll, "sqpoll"),
            (caps.registered_buffers, "registered_buffers"),
            (caps.multishot_accept, "multishot_accept"),
            (caps.multishot_recvmsg, "multishot_recv"),
            (caps.splice_channels > 0, "splice"),
            (caps.has_op("SEND_ZC"), "send_zc"),
        ] {
            if on {
                features.push(name);
            }
        }
        let info = ProcessInfo {
            started_real_ns: self.started_real_ns,
            started: Some(self.started),
            kernel: caps.kernel.clone(),
            features: features.join(","),
        };
        let fd = listener.into_raw_fd();
        with_io!(self, |engine, io| engine.start_metrics(fd, info, io));
        info!("metrics: serving /metrics and /healthz on http://{addr}/");
    }

    /// Writes every counter into the counters region, if there is one.
    fn publish_stats(&mut self) {
        if let Some(w) = self.stats_writer.as_mut() {
            w.publish(
                &Snapshot::from_engine(&self.engine, self.started_real_ns, real_ns()).to_rows(),
            );
        }
    }

    /// The kernel's features and the paths chosen, as the start-up line reports them.
    pub fn caps(&self) -> &crate::engine::caps::Caps {
        self.engine.caps()
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
            self.engine.note_ring_in_flight(self.ring.in_flight());
            for c in &cq {
                self.dispatch(*c);
            }
            self.cq = cq;
            with_io!(self, |engine, io| engine.after_batch(io));
            if self.engine.done() {
                break;
            }
            // Without SQPOLL the wait at the top of the loop submits what this turn queued in
            // the same io_uring_enter that waits; a submit here would be a second system call
            // per turn for nothing. With SQPOLL, submitting is a store to the SQ tail (and a
            // wake-up only if the kernel thread sleeps): done now, so that thread starts on
            // this turn's work before the loop waits.
            if self.ring.caps.sqpoll {
                if let Err(e) = self.ring.submit() {
                    error!("io_uring submit failed: {e}");
                    return 1;
                }
            }
        }
        self.finish();
        0
    }

    fn dispatch(&mut self, c: Completion) {
        match Token::decode(c.user_data) {
            Some(t) if t.chan == DAEMON_CHANNEL && t.kind == OpKind::Signal => {
                self.on_signal(c.res)
            }
            Some(t) if t.chan == DAEMON_CHANNEL && t.kind == OpKind::Tick => self.on_tick(),
            Some(_) => with_io!(self, |engine, io| engine.complete(c, io)),
            None => {}
        }
    }

    fn finish(&mut self) {
        self.engine
            .log_counters(log::Level::Info, self.ring.in_flight());
        with_io!(self, |engine, io| engine.finish(io.sys));
        // The last counters, for `ringrelay stat` after the daemon stopped.
        self.publish_stats();
        if let Some(w) = self.stats_writer.take() {
            w.close();
        }
        info!("stopped");
    }

    fn on_signal(&mut self, res: i32) {
        let s = self.signals.take();
        if s.term {
            if let Some(n) = self.notify.as_mut() {
                n.stopping();
            }
            with_io!(self, |engine, io| engine.terminate(io));
        }
        if s.hup {
            self.reload();
        }
        if s.usr1 {
            self.engine
                .log_counters(log::Level::Info, self.ring.in_flight());
        }
        if res < 0 && res != -libc::EINTR && res != -libc::EAGAIN {
            error!(
                "signal pipe read failed: {}",
                std::io::Error::from_raw_os_error(-res)
            );
        }
        self.ring.push_signal_read(self.signals.fd());
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        if self.stop_at.is_some_and(|t| now >= t) {
            self.stop_at = None;
            with_io!(self, |engine, io| engine.terminate(io));
        }
        let in_flight = self.ring.in_flight();
        with_io!(self, |engine, io| engine.tick(io, in_flight));
        if now.duration_since(self.last_stats_pub) >= STATS_EVERY {
            self.last_stats_pub = now;
            self.publish_stats();
        }
        if let Some(n) = self.notify.as_mut() {
            let (channels, totals) = totals(&self.engine);
            n.tick(
                now,
                self.engine.config().global.stats_interval,
                channels,
                totals,
            );
        }
        if now.duration_since(self.last_monitor) >= Duration::from_secs(1) {
            self.last_monitor = now;
            let t = now.duration_since(self.started).as_secs_f64();
            if let Some(m) = self.monitor.as_mut() {
                m(self.engine.channels(), t);
            }
        }
        if self.engine.ticking() {
            self.ring.push_tick();
        }
    }

    /// SIGHUP: re-read the file, between `RELOADING=1` and `READY=1` to systemd (a refused
    /// file, which changes nothing, ends the reload too). Ignored once a shutdown began.
    fn reload(&mut self) {
        if self.engine.stopping() {
            return;
        }
        if let Some(n) = self.notify.as_mut() {
            n.reloading();
        }
        self.apply_reload();
        if let Some(n) = self.notify.as_mut() {
            n.reloaded();
        }
    }

    /// The reload itself: an invalid file changes nothing. The logging target changes here;
    /// the engine plans the rest.
    fn apply_reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            warn!("reload: running without a config file (--input/--output): nothing to reload");
            return;
        };
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
        let old_g = &self.engine.config().global;
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
            // Fails only on a bad facility; a syslog socket that is missing is not an error
            // (the logger uses stderr until it appears).
            if let Err(e) = logging::init(&target, g.log_level) {
                error!("reload: {e}; logging stays where it was");
            }
        }
        if g.log_level != old_g.log_level {
            logging::set_level(g.log_level);
        }
        with_io!(self, |engine, io| engine.reload(new, &path, io));
    }
}

/// The live channels and their counters summed, for systemd's status line.
fn totals(engine: &Engine) -> (usize, Totals) {
    let mut n = 0;
    let mut t = Totals::default();
    for ch in engine.channels().iter().flatten() {
        n += 1;
        t.in_bytes += ch.stats.bytes;
        t.drops += ch.stats.drops;
        for o in &ch.outputs {
            t.out_bytes += o.stats.bytes;
            t.drops += o.stats.drops;
        }
    }
    (n, t)
}

/// The wall clock in ns since the Unix epoch (0 if the clock is before it).
fn real_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
