//! A channel: one input, its outputs, their endpoints and queues, and the bookkeeping that
//! keeps a completion from outliving what it was for.
//!
//! Owns: the state of every endpoint of one channel (a slab of slots indexed by the `endpoint`
//! field of a [`crate::engine::token::Token`]), each output's queue and counters, and the binding of
//! for a splicing channel its pipe ([`SplicePipe`]). It submits nothing and opens nothing:
//! the handlers of [`super`] drive it, and the descriptors it names were opened by
//! [`super::io::Sys`].
//!
//! Endpoint life: `Connecting` (non-blocking connect, waiting for POLLOUT) -> `Up` ->
//! `Closing` (shut down, operations cancelled, waiting for their completions) -> slot freed.
//! A slot is reused only once its in-flight count is zero, and each new occupant takes a fresh
//! generation, so a late completion can never be mistaken for the new occupant's.

use super::backoff::Backoff;
use super::buffers::BufId;
use super::fileout::FileOut;
use super::io::{Bound, Fd, Pipe, Publish, Sys};
use super::outq::OutQueue;
use super::stats::{InputStats, OutputStats};
use crate::config::url::{OnSlow, Scheme, Target};
pub use crate::config::DATAGRAM_HEADROOM;
use crate::config::{ChannelConfig, Framing, OutputConfig};
use std::time::Instant;

/// Receives of one linked chain on a UDP input without multishot receive (older kernels,
/// 32-bit ARM, `features = baseline`; see [`super::rings::Rings::open`]). Receives pending side by side on one socket
/// complete out of the order in which they took the datagrams (32 unlinked reordered about one
/// burst in seven on loopback), and the relay promises datagrams in order: the receives run as
/// a chain (IOSQE_IO_LINK), one after another in the kernel, and the next chain starts when
/// this one has completed. The socket's receive buffer absorbs bursts meanwhile.
pub const UDP_RECVS_IN_FLIGHT: usize = 16;

/// Most buffers one stream read scatters into (when the pool is at least half free): 1 MiB
/// with the default 64 KiB buffers, as much as a tuned socat (`-b 1MiB`) takes per read. On
/// the relay bench's TCP 1-to-1 case, 16 instead of 4 took the CPU per GB from x1.33 to x1.05
/// of socat `-b 1MiB`'s; 32 measured the same as 16.
pub const STREAM_READ_BUFFERS: usize = 16;

/// Buffers a UDP input's provided-buffer ring starts with (fewer when an output's buffer
/// quota is smaller). The ring takes back a buffer only when every output is done with it
/// and recycles once per loop turn, so the input takes at most this many datagrams per turn:
/// the pacing the receive chains give the chain path, matched to the 64 datagrams one
/// segmented send of an output carries per turn, while the socket's receive buffer absorbs
/// bursts. A ring of 128 took whole bursts at once, faster than outputs sent them one
/// datagram per send, and `drop` outputs lost what exceeded their quota; 64 instead of 32
/// (with segmented sends) measured fewer re-arms and input drops on the bench's paced sweep
/// (150 000/s: 32% against 41%). The ring grows when it stays dry for a tick
/// ([`super::rings::Rings::grow`]).
pub const UDP_RING_START: u16 = 64;

/// Bytes kept free in front of every datagram for the u32be length prefix.
pub const PREFIX: u32 = 4;

/// What an endpoint is to its channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The input socket: a UDP socket or a producer's stream (accepted or dialed).
    Input,
    /// Listener accepting producers (`tcp-listen://`, `unix-listen://` inputs).
    InputListener,
    /// Listener accepting subscribers of output `out`.
    OutputListener { out: usize },
    /// A subscriber of output `out`.
    Subscriber { out: usize },
    /// The one link of output `out`: pushed connection, UDP destination or file.
    Link { out: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Up,
    Closing,
}

/// One open descriptor of a channel and what is in flight on it.
/// An endpoint.
#[derive(Debug)]
pub struct Endpoint {
    pub gen: u32,
    pub role: Role,
    pub fd: Fd,
    pub link: Link,
    /// Submissions whose final completion has not arrived.
    pub in_flight: u32,
    /// Buffers lent to the kernel for receives on this endpoint (single-shot receives).
    pub reading: Vec<BufId>,
    /// A UDP input that receives by multishot RECVMSG: the buffer group of its
    /// provided-buffer ring (see [`super::rings::Rings::open`]). Closed only after
    /// the receive's final completion.
    pub bufgroup: Option<u16>,
    /// Its multishot receive is armed (its final completion has not arrived).
    pub multishot: bool,
    /// Since when its ring has been dry with the receive unarmed (outputs hold every buffer).
    pub dry_since: Option<Instant>,
    /// Buffers of the writes in flight, oldest first (each holds its own reference).
    pub writing: Vec<BufId>,
    /// Write submissions in flight (one gathered write, or a chain of datagram sends).
    pub write_ops: u32,
    /// Datagrams carried by the segmented send in flight (0: none is).
    pub gso_batch: u32,
    /// A splice (in for the input, out for the link) of this endpoint is in flight.
    pub splicing: bool,
    /// That splice is waiting for its non-blocking socket (POLL_ADD after -EAGAIN).
    pub splice_poll: bool,
    /// An accept is armed.
    pub accepting: bool,
    /// Its last accept failed for want of descriptors or memory (logged; cleared, and said,
    /// by the next one that succeeds).
    pub accept_failing: bool,
    /// A watch for the peer's bytes or hang-up (POLLIN|POLLRDHUP) is armed.
    pub watching: bool,
    /// The buffer of the receive in flight of this output peer's bytes (`commands`).
    pub talk: Option<BufId>,
    /// The peer sent its FIN and `on_fin=keep` keeps sending: no longer watched.
    pub fin_kept: bool,
    /// A closing link whose output queue was emptied under its in-flight writes (dropped as
    /// too slow): their completions must not advance the queue, which now holds other data.
    pub detached: bool,
    /// Subscribers keep their own queue; links use their output's.
    pub queue: Option<OutQueue>,
    pub peer: String,
}

impl Endpoint {
    pub fn new(gen: u32, role: Role, fd: Fd, link: Link) -> Endpoint {
        Endpoint {
            gen,
            role,
            fd,
            link,
            in_flight: 0,
            reading: Vec::with_capacity(UDP_RECVS_IN_FLIGHT),
            bufgroup: None,
            multishot: false,
            dry_since: None,
            writing: Vec::new(),
            write_ops: 0,
            gso_batch: 0,
            splicing: false,
            splice_poll: false,
            accepting: false,
            accept_failing: false,
            watching: false,
            talk: None,
            fin_kept: false,
            detached: false,
            queue: None,
            peer: String::new(),
        }
    }

    pub fn raw_fd(&self) -> Fd {
        self.fd
    }
}

/// One configured output.
#[derive(Debug)]
pub struct Output {
    pub cfg: OutputConfig,
    /// The queue of a link output (kept across reconnects).
    pub queue: OutQueue,
    pub link: Option<u16>,
    pub listener: Option<u16>,
    pub subscribers: Vec<u16>,
    pub backoff: Backoff,
    pub retry_at: Option<Instant>,
    /// The output is in a fault state (logged once on entry, once on recovery).
    pub faulted: bool,
    /// When the current fault episode began.
    pub fault_since: Option<Instant>,
    /// A UDP destination's last refused send: it has recovered only once sends succeed for
    /// `output::DATAGRAM_RECOVERY` after it (a closed port refuses every other
    /// datagram, the ICMP error arriving after the send it answers).
    pub last_refused: Option<Instant>,
    /// A `file://` output's file.
    pub file: Option<FileOut>,
    pub stats: OutputStats,
    /// A send to this output was refused with a fault worth one log line.
    pub connected_once: bool,
    /// Runs of equal-sized datagrams leave in one segmented send (udp outputs; cleared for
    /// good when the kernel or the route refuses segmentation).
    pub gso: bool,
    /// Stream chunks of at least [`crate::engine::zerocopy::MIN_BYTES`] leave by zero-copy send
    /// (`zerocopy=on` where the kernel has it; cleared for good when the socket refuses).
    pub zerocopy: bool,
    /// Its disk spool (`spool=`), opened at start.
    pub spool: Option<super::spool::Spool>,
    /// A spooling output whose records go straight to its queue (false: they go to the
    /// spool, behind what it holds).
    pub live: bool,
    /// An `mqtt://` output's session ([`super::mqtt_session`]).
    pub mqtt: Option<super::mqtt_session::Session>,
    /// The write in flight of an `mqtt://` output (on its current or an old connection).
    pub mqtt_write: Option<super::mqtt_link::MqttWrite>,
}

impl Output {
    /// A fault of this output: counted, logged once on entering the fault state (`what` gets
    /// the output's URL), and retried after the next backoff delay from `now`.
    pub fn fault(&mut self, now: Instant, level: log::Level, what: impl FnOnce(&str) -> String) {
        self.stats.errors += 1;
        let d = self.backoff.next_delay();
        if !self.faulted {
            self.faulted = true;
            self.fault_since = Some(now);
            log::log!(level, "{}", what(&self.url()));
        }
        self.retry_at = Some(now + d);
    }

    pub fn scheme(&self) -> Scheme {
        self.cfg.endpoint.scheme
    }

    /// Whether this output keeps one link (as opposed to listening for subscribers).
    pub fn is_link(&self) -> bool {
        !self.scheme().is_listen()
    }

    /// Whether chunks go out as datagrams.
    pub fn is_datagram(&self) -> bool {
        self.scheme() == Scheme::Udp
    }

    /// Whether it takes each delivery plain: without the u32be frame or an appended `\n`
    /// (datagram outputs, and MQTT outputs, which publish records as messages).
    pub fn takes_plain(&self) -> bool {
        self.is_datagram() || self.mqtt.is_some()
    }

    pub fn url(&self) -> String {
        self.cfg.endpoint.url()
    }
}

/// The pipe of a splicing channel and its fill accounting. It belongs to the channel, not to
/// an endpoint: bytes in it survive a producer's reconnect and an output's redial. Every
/// splice on it is counted in the in-flight count of its socket's endpoint, and the channel
/// (so the pipe) goes only once every endpoint is freed, so the pipe is never closed under a
/// splice.
#[derive(Debug)]
pub struct SplicePipe {
    pub pipe: Pipe,
    pub fill: super::splice::PipeFill,
    /// Its sockets are made non-blocking and a splice that finds one not ready waits in a
    /// POLL_ADD instead of holding an io-wq worker: as fast as blocking splices in the bench,
    /// at a little less CPU, and an idle channel parks no kernel thread. The environment
    /// variable RINGRELAY_SPLICE_BLOCKING=1 selects blocking sockets, for comparison.
    pub nonblocking: bool,
    /// Fan-out (two or more links): one pipe per output, filled by tee from `pipe`, and the
    /// round state ([`super::splice::Fanout`]). `None` for a 1-to-1 channel, whose link
    /// splices out of `pipe` itself.
    pub fan: Option<FanPipes>,
}

/// The output pipes of a fan-out splicing channel, indexed like the outputs.
#[derive(Debug)]
pub struct FanPipes {
    pub pipes: Vec<Pipe>,
    pub state: super::splice::Fanout,
    /// Tags the tees and distribution splices (their tokens carry no endpoint).
    pub gen: u32,
}

impl SplicePipe {
    /// The pipe output `out` splices from, and its fill.
    pub fn out_pipe(&mut self, out: usize) -> (Fd, &mut super::splice::PipeFill) {
        match self.fan.as_mut() {
            Some(f) => (f.pipes[out].read, f.state.out_mut(out)),
            None => (self.pipe.read, &mut self.fill),
        }
    }

    /// Every descriptor of its pipes.
    pub fn fds(&self) -> impl Iterator<Item = Fd> + '_ {
        [self.pipe.read, self.pipe.write].into_iter().chain(
            self.fan
                .iter()
                .flat_map(|f| f.pipes.iter().flat_map(|p| [p.read, p.write])),
        )
    }

    /// Nothing in any of its pipes and nothing in flight on them.
    pub fn drained(&self) -> bool {
        if self
            .fan
            .as_ref()
            .is_some_and(|f| f.state.failed() && f.state.ops_in_flight() == 0)
        {
            // A failed fan-out delivers nothing more: what its pipes hold is given up.
            return true;
        }
        self.fill.is_empty()
            && self.fill.idle()
            && self.fan.as_ref().is_none_or(|f| f.state.is_drained())
    }

    /// Bytes in its pipes (a fan-out's intake pipe counts once per output).
    pub fn queued(&self) -> u64 {
        let n = self.fan.as_ref().map_or(1, |f| f.pipes.len() as u64);
        u64::from(self.fill.fill()) * n + self.fan.as_ref().map_or(0, |f| f.state.out_fill())
    }

    /// Whether output `oi` still has bytes coming: in its pipe, or in the intake pipe.
    pub fn pending_for(&self, oi: usize) -> bool {
        !self.fill.is_empty()
            || self
                .fan
                .as_ref()
                .is_some_and(|f| !f.state.out(oi).is_empty() || f.state.ops_in_flight() > 0)
    }

    /// Tees and distribution splices in flight (no endpoint counts them).
    pub fn round_ops(&self) -> usize {
        self.fan.as_ref().map_or(0, |f| f.state.ops_in_flight())
    }

    /// Idle: the pipes may be closed.
    pub fn idle(&self) -> bool {
        self.fill.idle()
            && self.fan.as_ref().is_none_or(|f| {
                f.state.ops_in_flight() == 0 && (0..f.pipes.len()).all(|i| f.state.out(i).idle())
            })
    }
}

/// Everything about one channel.
pub struct Channel {
    pub cfg: ChannelConfig,
    pub slots: Vec<Option<Endpoint>>,
    free_slots: Vec<u16>,
    /// The live input endpoint.
    pub input: Option<u16>,
    pub input_listener: Option<u16>,
    pub input_backoff: Backoff,
    pub input_retry_at: Option<Instant>,
    pub input_faulted: bool,
    /// The producer a new one replaced (`producer = replace`), slot and generation, while its
    /// last read may still be in flight (see [`Channel::replaced_reading`]).
    pub replaced: Option<(u16, u32)>,
    /// An input fd bound at start, waiting to be activated.
    pub pending_input: Option<Fd>,
    pub pending_input_listener: Option<Fd>,
    pub outputs: Vec<Output>,
    /// A `block` output is over its limit: the input is not read.
    pub blocked: bool,
    /// Stopping: no more input, outputs drain.
    pub draining: bool,
    /// Stopping, and the stream input is shut down but still read: the bytes its socket
    /// already holds (acknowledged to the producer) are relayed up to the end of stream.
    pub input_draining: bool,
    /// The input found no free buffer for a read: the tick has other inputs give back the
    /// buffers their idle reads park (see `input::unpark_reads`).
    pub input_starved: bool,
    /// How many channels share the pool (when this one started): a stream input holding more
    /// than its share of the large buffers waits while the pool is short ([`Channel::over_share`]).
    pub pool_peers: usize,
    /// Its parked reads are being cancelled to give their buffers back.
    pub input_unparking: bool,
    /// A draining datagram input: the bytes it may still read before it is closed.
    pub drain_left: u64,
    /// Reads of a draining datagram input that failed (the drain ends at the fourth).
    pub drain_errors: u8,
    /// Stopped by a reload and still flushing its outputs: they are closed once drained or at
    /// this instant, whichever comes first. `None` once they are closed (and always while the
    /// whole daemon shuts down, which keeps its own deadline).
    pub drain_deadline: Option<Instant>,
    pub stats: InputStats,
    /// The input's idle watchdog (`idle_timeout=`).
    pub watchdog: super::idle::Watchdog,
    /// Subscribers' bytes toward the producer (`commands = first`).
    pub commander: super::commands::Commander,
    pub publisher: Option<Box<dyn Publish>>,
    /// The pipe, when this channel splices instead of reading into the pool.
    pub splice: Option<SplicePipe>,
    /// Per-output pending fds bound at start (listeners, udp sockets, files).
    pub pending_out: Vec<Option<Fd>>,
    /// Scratch lists of one delivery (outputs to kick, to disconnect), kept so that the hot
    /// path allocates nothing.
    pub to_kick: Vec<u16>,
    /// Datagram outputs with new datagrams queued in this batch of completions: kicked once
    /// the whole batch is delivered, so that one segmented send carries all of them.
    pub batch_kicks: Vec<u16>,
    pub to_disconnect: Vec<u16>,
    /// What a channel that cuts records holds between reads (carry, preamble).
    pub framed: Option<super::framed::Framed>,
}

/// Buffers one output may hold. A `block` output may hold all but an eighth of the pool: when
/// the pool runs dry the input simply stops reading (a stream pushes back on its producer, a
/// datagram socket buffers in the kernel), which is what `block` asks for. A `drop` or
/// `disconnect` output gets a quarter of the pool shared among the channels (at least 4), so
/// that a stuck subscriber cannot starve the outputs that keep up.
pub fn buffer_quota(
    buffer_count: u32,
    channels: usize,
    policy: crate::config::url::OnSlow,
) -> usize {
    let n = buffer_count as usize;
    match policy {
        crate::config::url::OnSlow::Block => n - (n / 8).max(4).min(n - 1),
        _ => (n / 4 / channels.max(1)).max(4),
    }
}

impl Channel {
    /// A channel of `cfg` over what [`Sys::bind`] opened for it, not yet running.
    pub fn new(
        cfg: &ChannelConfig,
        bound: Bound,
        buffer_count: u32,
        channels: usize,
        seed: u64,
    ) -> Channel {
        let mut outputs = Vec::new();
        let mut pending_out = Vec::new();
        for (i, oc) in cfg.outputs.iter().enumerate() {
            let ep = &oc.endpoint;
            let opened = bound.outputs.get(i).copied().flatten();
            let file = match (&ep.target, ep.scheme) {
                (Target::Path(p), Scheme::File) => Some(FileOut::new(
                    p.clone(),
                    opened.map_or(0, |(_, size)| size),
                    ep,
                )),
                _ => None,
            };
            pending_out.push(opened.map(|(fd, _)| fd));
            outputs.push(Output {
                cfg: oc.clone(),
                queue: OutQueue::new(
                    oc.on_slow,
                    oc.max_backlog,
                    // A spooling output never blocks its input: at its quota it spools.
                    // It gets the small quota, so that it spools while the pool still has
                    // buffers for the input to read into.
                    buffer_quota(
                        buffer_count,
                        channels,
                        if oc.spool.is_some() {
                            OnSlow::Drop
                        } else {
                            oc.on_slow
                        },
                    ),
                ),
                link: None,
                listener: None,
                subscribers: Vec::new(),
                backoff: Backoff::new(seed.wrapping_mul(31).wrapping_add(i as u64 + 1)),
                retry_at: None,
                faulted: false,
                fault_since: None,
                last_refused: None,
                file,
                stats: OutputStats::default(),
                connected_once: false,
                gso: oc.endpoint.scheme == Scheme::Udp && oc.endpoint.opts.gso != Some(false),
                zerocopy: oc.endpoint.opts.zerocopy == Some(true),
                spool: None,
                live: true,
                mqtt: super::mqtt_link::session_for(cfg, &oc.endpoint),
                mqtt_write: None,
            });
        }
        Channel {
            cfg: cfg.clone(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            input: None,
            input_listener: None,
            input_backoff: Backoff::new(seed),
            input_retry_at: None,
            input_faulted: false,
            replaced: None,
            pending_input: bound.input,
            pending_input_listener: bound.input_listener,
            outputs,
            blocked: false,
            draining: false,
            input_draining: false,
            input_starved: false,
            pool_peers: channels.max(1),
            input_unparking: false,
            drain_left: 0,
            drain_errors: 0,
            to_kick: Vec::new(),
            batch_kicks: Vec::new(),
            to_disconnect: Vec::new(),
            framed: super::framed::Framed::for_config(cfg),
            drain_deadline: None,
            stats: InputStats::default(),
            watchdog: super::idle::Watchdog::new(cfg.input.opts.idle_timeout),
            commander: Default::default(),
            publisher: None,
            splice: None,
            pending_out,
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn framing(&self) -> Framing {
        self.cfg.framing
    }

    pub fn input_is_datagram(&self) -> bool {
        self.cfg.input.scheme == Scheme::Udp
    }

    /// Puts an endpoint in a free slot and returns its index.
    pub fn insert(&mut self, ep: Endpoint) -> u16 {
        if let Some(i) = self.free_slots.pop() {
            self.slots[i as usize] = Some(ep);
            i
        } else {
            self.slots.push(Some(ep));
            (self.slots.len() - 1) as u16
        }
    }

    pub fn ep(&self, slot: u16) -> Option<&Endpoint> {
        self.slots.get(slot as usize).and_then(|s| s.as_ref())
    }

    pub fn ep_mut(&mut self, slot: u16) -> Option<&mut Endpoint> {
        self.slots.get_mut(slot as usize).and_then(|s| s.as_mut())
    }

    /// The endpoint in `slot` if it still has generation `gen`.
    pub fn ep_gen(&mut self, slot: u16, gen: u32) -> Option<&mut Endpoint> {
        self.ep_mut(slot).filter(|e| e.gen == gen)
    }

    /// Finds the slot of the endpoint with generation `gen` (stale completions of receives,
    /// whose token carries a buffer index instead of a slot).
    pub fn slot_of_gen(&self, gen: u32) -> Option<u16> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|e| e.gen == gen))
            .map(|i| i as u16)
    }

    /// Frees a closing endpoint's slot once nothing is in flight on it, and closes its
    /// descriptor. Returns whether it was freed.
    pub fn reap_if_idle(&mut self, slot: u16, sys: &mut dyn Sys) -> bool {
        let idle = self
            .ep(slot)
            .is_some_and(|e| e.link == Link::Closing && e.in_flight == 0);
        if idle {
            if let Some(ep) = self.slots[slot as usize].take() {
                sys.close(ep.fd);
            }
            self.free_slots.push(slot);
        }
        idle
    }

    /// Descriptors bound at start that were never activated (a channel that failed to start).
    pub fn close_pending(&mut self, sys: &mut dyn Sys) {
        let pending = self.pending_input.take().into_iter();
        let pending = pending.chain(self.pending_input_listener.take());
        let outs: Vec<Fd> = self
            .pending_out
            .iter_mut()
            .filter_map(|f| f.take())
            .collect();
        for fd in pending.chain(outs) {
            sys.close(fd);
        }
    }

    /// Whether the read of a replaced producer is still in flight. The new producer's first
    /// read waits for it: what that read returns is delivered (its bytes were read before the
    /// switch, or raced the cancel), and only then do the newcomer's bytes follow, so the two
    /// streams never interleave on the outputs.
    pub fn replaced_reading(&mut self) -> bool {
        let Some((slot, gen)) = self.replaced else {
            return false;
        };
        if self
            .ep(slot)
            .is_some_and(|e| e.gen == gen && !e.reading.is_empty())
        {
            return true;
        }
        self.replaced = None;
        false
    }

    /// Records the input in `slot` (generation `gen`), being closed, as the one whose last
    /// read the next input's first waits for; unless an earlier closed input's read is still
    /// in flight: this one's reads waited for it (it read nothing), and the earlier one stays
    /// the one to wait for. (Overwritten, the earlier read could land after the next input's.)
    pub fn mark_replaced(&mut self, slot: u16, gen: u32) {
        if !self.replaced_reading() {
            self.replaced = Some((slot, gen));
        }
    }

    /// Endpoints still open or closing.
    pub fn live_endpoints(&self) -> usize {
        // A fan-out's tees and distribution splices are on its pipes, not on an endpoint: they
        // keep the channel (and so the pipes) alive the same way.
        self.slots.iter().filter(|s| s.is_some()).count()
            + self.splice.as_ref().map_or(0, |s| s.round_ops())
            + self
                .outputs
                .iter()
                .filter_map(|o| o.spool.as_ref())
                .map(|s| s.in_flight())
                .sum::<usize>()
    }

    /// Whether every output's queue is empty and no write is in flight.
    ///
    /// An input whose receive is still in flight is not drained either: a closing input's
    /// read may race its cancel and complete with bytes the producer's kernel already
    /// acknowledged, and those must reach the outputs before they are closed.
    pub fn drained(&self) -> bool {
        self.splice.as_ref().is_none_or(|s| s.drained())
            && !(self.input_draining && self.input_is_datagram())
            && self.outputs.iter().all(|o| o.queue.is_empty())
            && self.outputs.iter().all(super::mqtt_link::settled)
            && self.slots.iter().flatten().all(|e| {
                e.write_ops == 0
                    && e.queue.as_ref().is_none_or(|q| q.is_empty())
                    && !(e.role == Role::Input && e.in_flight > 0)
            })
    }

    /// A read of the input failed: a drain at a stop goes on past a passing error, and ends at
    /// the fourth (a socket that keeps failing must not hold the stop up).
    pub fn drain_failed(&mut self) {
        if self.input_draining {
            self.drain_errors = self.drain_errors.saturating_add(1);
            if self.drain_errors > 3 {
                self.drain_left = 0;
            }
        }
    }

    /// Payload bytes still queued for the outputs (links and subscribers).
    pub fn queued_bytes(&self) -> u64 {
        let links: u64 = self.outputs.iter().map(|o| o.queue.backlog()).sum::<u64>()
            + self.splice.as_ref().map_or(0, |s| s.queued());
        let subscribers: u64 = self
            .slots
            .iter()
            .flatten()
            .filter_map(|e| e.queue.as_ref())
            .map(|q| q.backlog())
            .sum();
        links + subscribers
    }

    /// Payload bytes still queued per output (a link's queue and the pipes it drains, or all
    /// its subscribers' queues), for the outputs that hold any: (URL, bytes).
    pub fn queued_by_output(&self) -> Vec<(String, u64)> {
        self.outputs
            .iter()
            .enumerate()
            .map(|(oi, o)| {
                let subscribers: u64 = o
                    .subscribers
                    .iter()
                    .filter_map(|&s| self.ep(s)?.queue.as_ref())
                    .map(|q| q.backlog())
                    .sum();
                let piped = self.splice.as_ref().map_or(0, |s| {
                    let own = s.fan.as_ref().map_or(0, |f| f.state.out(oi).fill());
                    u64::from(s.fill.fill()) + u64::from(own)
                });
                (o.url(), o.queue.backlog() + subscribers + piped)
            })
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// The stop's deadline closes the channel with data still queued: each output counts as
    /// drops the chunks it will never send (its queue's, its subscribers', and the pipe it
    /// drains as one chunk, a pipe keeping no boundaries). MQTT outputs count their messages
    /// themselves (`mqtt_link::give_up`); a spooling output lost nothing, the stop
    /// having spilled its queue to disk. Returns the chunks counted.
    pub fn count_given_up(&mut self) -> u64 {
        let mut total = 0;
        for oi in 0..self.outputs.len() {
            let o = &self.outputs[oi];
            if o.mqtt.is_some() || o.spool.is_some() {
                continue;
            }
            let subscribers: usize = o
                .subscribers
                .iter()
                .filter_map(|&s| self.ep(s)?.queue.as_ref())
                .map(|q| q.len())
                .sum();
            let piped = self.splice.as_ref().is_some_and(|s| s.pending_for(oi));
            let n = (o.queue.len() + subscribers) as u64 + u64::from(piped);
            self.outputs[oi].stats.drops += n;
            total += n;
        }
        total
    }

    /// Whether link output `oi` still has bytes to send: its queue, or the pipe it drains.
    pub fn output_pending(&self, oi: usize) -> bool {
        !self.outputs[oi].queue.is_empty()
            || self.splice.as_ref().is_some_and(|s| s.pending_for(oi))
    }

    /// Pool buffers this channel's stream data holds: its input's reads, and the longest of its
    /// outputs' queues (a fan-out's outputs share each chunk's buffer).
    pub fn held_buffers(&self) -> usize {
        let reading = self
            .input
            .and_then(|s| self.ep(s))
            .map_or(0, |e| e.reading.len());
        let links = self
            .outputs
            .iter()
            .map(|o| o.queue.len())
            .max()
            .unwrap_or(0);
        let subscribers = self
            .slots
            .iter()
            .flatten()
            .filter_map(|e| e.queue.as_ref())
            .map(|q| q.len())
            .max()
            .unwrap_or(0);
        reading + links.max(subscribers)
    }

    /// Whether this channel's stream input should leave the next free buffers to others: the
    /// pool's large buffers are short (under a quarter free) and it holds more than its share
    /// of them. Without this, channels whose reads complete first take every buffer freed,
    /// and with 64 channels the slowest got a third of the mean rate. At least one channel is
    /// always within its share (the shares add up to the pool), so reading never stops.
    pub fn over_share(&self, (free, total): (usize, usize)) -> bool {
        free < total / 4 && self.held_buffers() > (total / self.pool_peers).max(2)
    }

    /// Whether every block output is back under half its limit.
    pub fn may_unblock(&self) -> bool {
        self.outputs.iter().all(|o| o.queue.may_resume())
            && self.slots.iter().flatten().all(|e| {
                e.queue
                    .as_ref()
                    .is_none_or(|q| q.policy != crate::config::url::OnSlow::Block || q.may_resume())
            })
    }
}
