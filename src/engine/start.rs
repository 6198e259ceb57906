//! Starting a channel: turning what [`super::io::Sys::bind`] opened into running endpoints
//! (accepts armed, reads posted, links dialed), choosing its data path (the pool, a pipe, or a
//! pipe per output with tee), its receive path (a multishot receive over a provided-buffer
//! ring, or chains of single receives), its publisher, and the per-process settings that
//! depend on every channel (zero-copy outputs, the io-wq worker cap).
//!
//! Must never: leave a half-started channel running: an error here is returned before
//! anything of the channel is armed, and the caller stops it.

use super::accept::arm_accept;
use super::buffers::Class;
use super::channel::{Channel, Endpoint, FanPipes, Link, Role, SplicePipe, UDP_RING_START};
use super::io::{Pipe, Sys};
use super::links::{dial_input, dial_output};
use super::rings::entries_for;
use super::splice::{Fanout, PipeFill};
use super::{input::post_reads, split, Cx, Engine, Io, MAX_BUF_RING_ENTRIES};
use crate::config::units::format_size;
use crate::config::url::Scheme;
use crate::config::{self, ChannelConfig, Config};
use log::{debug, error, info, warn};

/// Smallest datagram slot worth a multishot receive: the kernel writes a 16-byte header in
/// front of every payload.
const MIN_MULTISHOT_SLOT: u32 = 64;

/// Buffers of the class a channel's input reads into (its outputs' quotas are shares of it).
pub(crate) fn class_count(cfg: &Config, c: &ChannelConfig) -> u32 {
    let g = &cfg.global;
    if c.input.scheme == Scheme::Udp && g.datagram_count > 0 {
        g.datagram_count
    } else {
        // Buffers held outside any output's queue are not the queues' to share: a record
        // channel's carry and preamble, and the command bytes waiting for a producer. Left in,
        // a stuck `block` subscriber could take the reserve that keeps other channels reading.
        let held: u32 = cfg
            .channels
            .iter()
            .map(|c| {
                let framed = if c.is_framed_stream() { 2 } else { 0 };
                let commands = if c.commands == crate::config::commands::Commands::First {
                    super::commands::COMMAND_BUFFERS as u32
                } else {
                    0
                };
                let spools = c.outputs.iter().filter(|o| o.spool.is_some()).count() as u32;
                // An MQTT output's header buffer and its read of the broker's packets.
                let mqtt = 2 * c
                    .outputs
                    .iter()
                    .filter(|o| o.endpoint.scheme == Scheme::Mqtt)
                    .count() as u32;
                framed + commands + spools * super::spool::HELD_BUFFERS + mqtt
            })
            .sum();
        g.buffer_count.saturating_sub(held).max(g.buffer_count / 2)
    }
}

/// The output pipes of a fan-out channel: `n`, each asked for `want` bytes and each at least
/// `p0_cap` (what the intake pipe got). A smaller one could not take every buffer of a round in
/// one tee, so the channel does not splice then.
fn fan_pipes(sys: &mut dyn Sys, want: u32, p0_cap: u32, n: usize) -> Result<Vec<Pipe>, String> {
    let mut pipes: Vec<Pipe> = Vec::with_capacity(n);
    let close = |sys: &mut dyn Sys, pipes: &[Pipe]| {
        for p in pipes {
            sys.close(p.read);
            sys.close(p.write);
        }
    };
    for i in 0..n {
        let q = match sys.pipe(want) {
            Ok(q) => q,
            Err(e) => {
                close(sys, &pipes);
                return Err(format!("output {i}'s pipe: {e}"));
            }
        };
        pipes.push(q);
        if q.cap < p0_cap {
            close(sys, &pipes);
            return Err(format!(
                "output {i}'s pipe holds {} and the intake pipe {} (F_SETPIPE_SZ refused: fs.pipe-user-pages-soft?)",
                format_size(u64::from(q.cap)),
                format_size(u64::from(p0_cap))
            ));
        }
    }
    Ok(pipes)
}

/// Gives a splicing channel its pipe (and, fanning out, a pipe per output). Falls back to the
/// buffer path with a warning where the kernel or the pipe limits refuse, unless the channel
/// says `splice = on`. `pipe_warned`: the pipe-size warning was logged already.
fn setup_splice(
    want: u32,
    pipe_warned: &mut bool,
    cx: &mut Cx,
    ch: &mut Channel,
) -> Result<(), String> {
    if !ch.cfg.splice.splices_for(ch.cfg.outputs.len()) {
        return Ok(());
    }
    let mode = ch.cfg.splice;
    if !cx.caps.has_op("SPLICE") {
        if mode == config::SpliceMode::On {
            return Err(format!(
                "channel {}: splice = on, but this kernel has no IORING_OP_SPLICE (Linux 5.7+)",
                ch.name()
            ));
        }
        return Ok(());
    }
    let p = match cx.sys.pipe(want) {
        Ok(p) => p,
        Err(e) if mode == config::SpliceMode::On => {
            return Err(format!(
                "channel {}: cannot create its pipe: {e}",
                ch.name()
            ))
        }
        Err(e) => {
            warn!(
                "channel {}: cannot create its pipe: {e}; using the buffer path",
                ch.name()
            );
            return Ok(());
        }
    };
    if p.shrunk && !*pipe_warned {
        *pipe_warned = true;
        warn!(
                "channel {}: the kernel refused a {} pipe (EPERM: fs.pipe-max-size or fs.pipe-user-pages-soft reached); splicing through {} (slower)",
                ch.name(),
                format_size(u64::from(want)),
                format_size(u64::from(p.cap))
            );
    }
    debug!(
        "channel {}: splicing through a {} pipe",
        ch.name(),
        format_size(u64::from(p.cap))
    );
    let n = ch.outputs.len();
    let fan = if n < 2 {
        Ok(None)
    } else if !cx.caps.has_op("TEE") {
        Err("this kernel has no IORING_OP_TEE (Linux 5.8+)".to_string())
    } else {
        fan_pipes(cx.sys, want, p.cap, n).map(|pipes| {
            let caps: Vec<u32> = pipes.iter().map(|q| q.cap).collect();
            Some(FanPipes {
                state: Fanout::new(p.cap, &caps),
                pipes,
                gen: cx.gens.fresh(),
            })
        })
    };
    match fan {
        Ok(fan) => {
            if fan.is_some() {
                debug!(
                    "channel {}: fan-out to {n} outputs with tee, one {} pipe each",
                    ch.name(),
                    format_size(u64::from(p.cap))
                );
            }
            ch.splice = Some(SplicePipe {
                fill: PipeFill::new(p.cap),
                pipe: p,
                nonblocking: cx.caps.splice_eagain,
                fan,
            });
        }
        Err(e) => {
            cx.sys.close(p.read);
            cx.sys.close(p.write);
            warn!(
                "channel {}: cannot fan out with tee: {e}; using the buffer path",
                ch.name()
            )
        }
    }
    Ok(())
}

impl Engine {
    /// Turns a bound channel into a running one: publisher, accepts, reads, dials.
    pub(crate) fn activate(&mut self, ci: usize, io: &mut Io) -> Result<(), String> {
        let Some(mut ch) = self.channels[ci].take() else {
            return Ok(());
        };
        let r = self.activate_channel(ci, &mut ch, io);
        self.channels[ci] = Some(ch);
        r
    }

    fn activate_channel(&mut self, ci: usize, ch: &mut Channel, io: &mut Io) -> Result<(), String> {
        let now = io.now;
        let want = self.cfg.global.pipe_size;
        let mut warned = self.pipe_warned;
        let r = {
            let (_, mut cx) = split!(self, io);
            setup_splice(want, &mut warned, &mut cx, ch)
        };
        self.pipe_warned = warned;
        r?;
        let (_, mut cx) = split!(self, io);
        let cx = &mut cx;
        super::spooling::open(cx, ch)?;
        if ch.cfg.samples.as_ref().is_some_and(|s| s.shm) {
            ch.publisher = Some(cx.sys.publisher(&ch.cfg)?);
        }
        let ci16 = ci as u16;
        if let Some(fd) = ch.pending_input.take() {
            let mut ep = Endpoint::new(cx.gens.fresh(), Role::Input, fd, Link::Up);
            // A UDP input: multishot receives into a provided-buffer ring of datagram slots
            // where the kernel has them (Caps::multishot_recvmsg), else linked chains of
            // single-shot receives (post_reads).
            if cx.caps.multishot_recvmsg && cx.pool.class_size(Class::Small) >= MIN_MULTISHOT_SLOT {
                // No more than the smallest output quota: a burst the ring takes whole
                // must fit every output's queue.
                let quota = ch
                    .outputs
                    .iter()
                    .map(|o| o.queue.max_buffers())
                    .min()
                    .unwrap_or(usize::MAX);
                let initial = entries_for(quota, UDP_RING_START).unwrap_or(0);
                ep.bufgroup = cx.rings.open(
                    cx.pool,
                    cx.sys,
                    cx.caps.cq_entries,
                    Class::Small,
                    initial,
                    MAX_BUF_RING_ENTRIES,
                );
                if let Some(g) = ep.bufgroup {
                    debug!(
                        "channel {}: multishot receive, buffer group {g} of {} slots",
                        ch.name(),
                        cx.rings.provided(cx.pool, cx.sys, g)
                    );
                }
            }
            let slot = ch.insert(ep);
            ch.input = Some(slot);
        }
        if let Some(fd) = ch.pending_input_listener.take() {
            let slot = ch.insert(Endpoint::new(
                cx.gens.fresh(),
                Role::InputListener,
                fd,
                Link::Up,
            ));
            ch.input_listener = Some(slot);
            arm_accept(cx, ch, ci16, slot);
        }
        if ch.cfg.input.scheme.reopens() {
            dial_input(cx, ch, ci16, now);
        }
        for oi in 0..ch.outputs.len() {
            let Some(fd) = ch.pending_out[oi].take() else {
                dial_output(cx, ch, ci16, oi, now);
                continue;
            };
            if ch.outputs[oi].is_link() {
                let slot = ch.insert(Endpoint::new(
                    cx.gens.fresh(),
                    Role::Link { out: oi },
                    fd,
                    Link::Up,
                ));
                ch.outputs[oi].link = Some(slot);
                ch.outputs[oi].connected_once = true;
            } else {
                let slot = ch.insert(Endpoint::new(
                    cx.gens.fresh(),
                    Role::OutputListener { out: oi },
                    fd,
                    Link::Up,
                ));
                ch.outputs[oi].listener = Some(slot);
                arm_accept(cx, ch, ci16, slot);
            }
        }
        post_reads(cx, ch, ci16);
        Ok(())
    }

    /// `zerocopy=on` outputs of channel `ci` where this kernel (or the baseline set) has no
    /// zero-copy send, or whose channel splices (its bytes never enter the pool), send by copy;
    /// the first case is worth a warning. Counts the outputs that keep it for the start-up line.
    pub(crate) fn settle_zerocopy(&mut self, ci: usize) {
        let send_zc = self.caps.send_zc;
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
        self.caps.zerocopy_outputs = self
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
    pub(crate) fn cap_workers(&mut self, sys: &mut dyn Sys) {
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
        self.caps.splice_channels = n;
        self.caps.tee_channels = tee;
        if n == 0 {
            return;
        }
        let want = ops as u32 + 2;
        if want <= self.iowq_cap {
            return;
        }
        match sys.cap_workers(want) {
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

    /// Binds and starts channel `cfg` in slot `ci` at run time (a reload).
    pub(crate) fn start_channel(&mut self, ci: usize, cfg: &ChannelConfig, io: &mut Io) {
        let n = self.cfg.channels.len().max(1);
        let count = class_count(&self.cfg, cfg);
        match io.sys.bind(cfg) {
            Ok(bound) => {
                let ch = Channel::new(cfg, bound, count, n, self.seed.wrapping_add(ci as u64));
                if ci == self.channels.len() {
                    self.channels.push(Some(ch));
                } else {
                    self.channels[ci] = Some(ch);
                }
                match self.activate(ci, io) {
                    Ok(()) => {
                        self.cap_workers(io.sys);
                        self.settle_zerocopy(ci);
                        info!("channel {}: started", cfg.name)
                    }
                    Err(e) => {
                        error!("{e}");
                        self.stop_channel(ci, io);
                    }
                }
            }
            Err(e) => error!("reload: {e}; the channel stays off"),
        }
    }
}
