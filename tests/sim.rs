//! The deterministic simulation: the real engine (`ringrelay::engine::Engine`) driven by a
//! simulated kernel (`sim/kernel.rs`) and simulated peers, all chosen by one seed, with the
//! invariants checked after every step and at the end.
//!
//! `SIM_SEEDS=N` runs seeds 1..=N (2,000 by default); `SIM_SEED=S` replays seed S alone and
//! prints its trace. A failing seed prints the one line that replays it.
//!
//! What a run does: a random configuration of one to three channels (UDP, listened and dialed
//! TCP inputs, serial ports whose device is unplugged, its reads failing with EIO or hanging
//! up, the path naming nothing or another device, opens failing, and plugged back in; subscribers with every `on_slow`, collectors that refuse, accept, go away and
//! come back, UDP destinations that refuse, files that fail, are deleted or replaced, lose
//! their directory for a while or for good (`sim/files.rs`), some with rotation; zero-copy and
//! segmented sends;
//! multishot or chained receives), a chaos phase in which the kernel completes operations in
//! any allowed order with short reads and writes, errors, cancellation races and delayed
//! completions while peers join, leave, reset, reconnect, vanish without a word (a half-open
//! producer that only keepalive notices), go silent for a while (inputs with `idle_timeout=1s`
//! then redial, disconnect or mark the input idle), send bytes back (subscribers; with
//! `commands = first` the first one's reach the producer) or, under `producer = replace`,
//! connect again while connected, and a reload happens, then a calm
//! phase in which peers behave and every channel without a stuck `block` output must drain,
//! then SIGTERM, after which everything must close.
//!
//! Invariants (after every step): every buffer an operation still holds is held in the
//! engine's books (lent for a read, referenced at least once per write holding it, a provided
//! buffer is `Provided`); no descriptor is closed while an operation on it is in flight; no
//! buffer ring closes under its armed receive; every byte an output receives is what the
//! kernel put in that buffer, in stream order (for a file, across every file it opened). At
//! the end: `block` outputs received exactly the input's bytes or records; every chunk or
//! datagram a `drop` output, or a file that dropped after its `fault_grace`, did not receive
//! is counted as a drop; the pool is whole, nothing is in flight, every descriptor is closed;
//! producers received only their channel's subscribers' bytes, each in order, as many as
//! counted, one commander after another and never back (`check_commands`).
//! A channel with a file whose directory never comes back must still drain (its other
//! outputs keep flowing once the file drops).
//!
//! Records (`sim/records.rs`): about half the stream channels declare a frame (`sample` x
//! `interleave`), cut lines (`framing = line`, lines of the random pattern, many over
//! `max_line`) or keep a preamble. At the end, every subscriber and collector connection's
//! stream and every datagram is whole records: each run of consecutive positions starts at a
//! record boundary (counted from each producer connection's start, after its preamble) and
//! all but a connection's last run end at one; a subscriber's first byte is a preamble; a line
//! datagram holds one line; a `block` collector received every byte read but those counted as
//! `partial` and `skipped`. The engine's copies (carry, preamble) get their provenance through
//! `sim/memory.rs`, so the byte-by-byte content check covers them too.
//!
//! Planted bugs it catches within the default 2,000 seeds (plant one, run
//! `cargo test --release --test sim`, take it out again). Measured 2026-12-02; the first
//! failing seed and its message:
//! 1. a zero-copy buffer released at the send's first completion (`output::on_send_zc`: call
//!    `cx.zc_end(idx)` in the `c.more()` branch too): seed 36, "buffer 12 held by write op
//!    #54 is Free in the pool" (and seed 7: the notification finds no record, the endpoint is
//!    never freed, no clean stop);
//! 2. the generation check forgotten (`input::on_recv` finds its endpoint through
//!    `ch.input` instead of `slot_of_gen(tok.gen)`): seed 1, a closed input's late reads land
//!    on the wrong endpoint and the relay never stops cleanly;
//! 3. a drop counted twice (`input::deliver`: `Offer::Dropped` on a link adds 2): seed 5,
//!    "32 received + 341 drops != 277 delivered";
//! 4. a multishot receive not re-armed after its final completion (`input::on_recv_multi`
//!    leaves `ep.multishot` set): seed 9, the channel never drains;
//! 5. a slot freed with operations in flight (`Channel::reap_if_idle` without
//!    `in_flight == 0`): seed 1, "fd 13 closed while #47 Write ... is in flight on it".
//! 6. a faulted file that never drops (`input::deliver` ignores `fileout::dropping`), measured
//!    2026-12-02 over 500 seeds: seed 32, a channel with a lost directory never drains; seed
//!    38, "c0 output 0 (File block): 23 received + 20 drops != 88 delivered";
//! 7. a file reopened while its closed descriptor's write is in flight (`links::tick_channel`
//!    without the `fileout::writing` guard): seed 7, "file output 0 of c0 received position
//!    24039 after 59745" (found this way first, then fixed);
//! 8. no keepalive on producers (`links::keep_alive` does nothing): seed 28, a vanished
//!    producer holds its input for good, every newcomer is refused, the channel never drains;
//! 9. a replacing producer reads before the replaced one's last read completed
//!    (`input::post_reads` without `replaced_reading`): seed 23, "connection 5 (Some(Output(0,
//!    0))) received position 152024 after 211316" (the two streams interleaved).
//! 10. any subscriber's bytes forwarded under `commands = first`, not only the first's
//!     (`commands::on_peer_recv` tests `order.contains` instead of `order.first()`), measured
//!     2026-12-02 over 300 seeds: seed 1, "c0: connection 3 commanded again after Some(10)";
//! 11. an idle producer dropped without closing it (`idle::close_for_reopen` sets
//!     `ch.input = None` instead of `close_ep`), 300 seeds: seed 12, the channels never drain.
//! 12. a record that straddles two reads delivered in its two pieces instead of through the
//!     carry (`framed::on_stream_read`: `Step::Carry` delivers the range), measured 2026-12-02
//!     over 300 seeds: seed 3, "c1 output 0 datagram 4: a run of 76 bytes starts at position
//!     18939, not a record boundary"; seed 4 (frames of 12 bytes) and seed 7 (frames of 2) too;
//! 13. no preamble for a subscriber that joins (`framed::joined` returns at once), over 300
//!     seeds: seed 3, "c1 output 1 connection 13: a subscriber's first byte is position 128541,
//!     not a preamble".
//! 14. a reopened serial port not made the channel's input (`serial::open_input` leaves
//!     `ch.input` unset after the first open), measured 2026-12-02 over 300 seeds: seed 2,
//!     "channels did not drain" (the port is opened again every tick and never read). Not
//!     caught in 2,000 seeds: `serial::tick` without the `replaced` guard (a closed port's
//!     last read could land after the next port's first), nor `input::on_recv` leaving an
//!     unplugged port open (the tick's path check closes it a tick later, in the simulation
//!     as on Linux).
//! 15. QoS 1 messages done at their write's completion instead of their PUBACK
//!     (`mqtt_session::Session::written` marks them done whatever the QoS), measured
//!     2026-12-02 over the default 2,000 seeds: seed 16, "c2 output 1 (mqtt qos 1 block): 271
//!     messages of 295 delivered, 0 drops" (seeds 30 and 34 too): messages written on a
//!     connection that went before their PUBACK were never re-sent, and its broker had not
//!     received them (see MQTT below). Not caught before the broker forgot those.
//!
//! 16. live records bypass a spool that still holds records (`spooling::takes` without the
//!     `o.live` condition), measured 2026-12-03 in the default run: the first seed 1, "step
//!     223: connection 9 (Some(Output(0, 1))) received position 0 after 76162" (seeds 2 and 3
//!     too; 103 of the first 500 seeds fail, none without the bug).
//! 17. a replay read's position not advanced after a short read (`spooling::on_read` passes
//!     an end of 0 to `read_done` when the read returned less than asked), measured the
//!     same way: the first seed 1, "step 1239: connection 28 (Some(Output(0, 1))) received
//!     position 183354 after 184382" (the records read again); seed 2, "position 0 after
//!     65011811"; seed 3, "position 22441 after 22448".
//!
//! (The seeds were measured on their own branches: 1-9 before subscribers talked back,
//! producers went silent, records were cut and ports were serial; 10-11, 12-13 and 14 each
//! without the others. All draw from the same generator, so their numbers may have moved.)
//!
//! Found by the record checks and fixed before they were committed: a preamble kept in a
//! buffer taken from the pool was missing whenever a read had just taken the last free
//! buffers (the connection's first read buffer is kept instead); a collector redialed with its
//! queue's front chunk partly sent began its new connection mid-record (the rest is now
//! skipped and counted, `skipped=`); a preamble put in front of a kept backlog could precede
//! records of an older producer connection (only an empty queue gets it now).
//!
//! Found in the engine by this simulation and fixed: datagram sends completing out of order
//! released each other's buffers; a channel stayed blocked for good when a `block` queue
//! emptied without a write; at SIGTERM a closing input's last read could land after the
//! outputs closed; a `disconnect` link counted one drop for a whole dropped backlog.
//!
//! MQTT (`sim/broker.rs`): a datagram channel may get an `mqtt://` output (QoS 0 or 1,
//! `block` or `drop`, `max_inflight` 1, 3 or 64, keepalive off, 1s or 30s) whose broker
//! refuses some CONNECTs (codes 2 to 5), sends its PUBACKs at once, late or never (it goes
//! away first) during the chaos, at once when calm, and answers PINGREQ. A connection that
//! ends keeps only the messages it acknowledged and a prefix of the others (the rest was
//! still in the relay's socket buffer or on the wire: a completed write is no delivery).
//! Checked: every PUBLISH parses and its payload is one whole datagram as the kernel received
//! it; new messages come in delivery order, a message comes again only as a re-send with DUP;
//! a QoS 1 `block` output lost none, and other losses are counted as drops. Found in the
//! engine this way and fixed: a PUBACK that overtook its write's completion was ignored (the
//! output stalled); a message re-sent after a write lost with its connection carried no DUP;
//! the starved-read tick armed a hang-up watch on file and UDP links; messages an MQTT output
//! still held when `shutdown_timeout` closed it (not acknowledged, or not yet published) were
//! dropped uncounted (seeds 320 and 1134, when the broker acknowledged only at its rare peer
//! steps, so the datagrams sent at SIGTERM outlasted the timeout at `max_inflight=1`; they
//! are counted as drops now, `mqtt_link::give_up`). Not modelled: a QoS 0 message lost after
//! its write completed (at most once allows it, and nothing could count it).
//!
//! SPOOL (`sim/spoolfs.rs`; `SIM_SPOOL=0` in the environment leaves it out): about one
//! collector in three gets `spool=` (64KiB segments, `spool_max` 128KiB to 4MiB, `spool_sync` 10ms to 1s,
//! some `spool_full=drop-newest`), so it spools while its collector is away or its queue
//! would pass `max_backlog`, and replays when it is back. The kernel runs WriteAt, ReadAt and
//! Fsync on simulated files (short writes and reads, EIO, ENOSPC, a failing segment create;
//! the write and sync lanes complete in any order); `spool_open` scans the segments as the
//! driver does (a reload reopens them). The origin of every byte is followed through the
//! spool: a staging buffer's records by range (headers have none: sent to a peer, they are a
//! violation), the segment's bytes the same, a replay read hands them back. Checked: what a
//! spooling collector receives is each position once and in order over all its connections
//! (the replay never overtaken by live records), its losses at most its drops plus what its
//! spool dropped or still keeps, and with none of those, everything; buffers and descriptors
//! as everywhere else. Found and fixed this way: a spill at link-down took the chunks an
//! in-flight write of the old link still carried (the write's completion then advanced past
//! the end of the queue: a panic; or the records went twice); a collector whose link came up
//! with records in its spool got the current preamble before the older replayed records.
//! Found in the engine by these runs and fixed (2026-12-03), after which the spool cases joined
//! the default run: a chunk longer than one spool record (a framed read holds up to
//! `buffer_size` bytes of whole frames, a spool record `buffer_size` - 8) was cut at that
//! byte, mid-frame, so a piece dropped at `spool_max`, or a collector connection cut between
//! two replayed pieces, left part of a record (seeds 48 and 455, frames of 3 bytes: "a run
//! from 142151 ends before position 146239, not a record boundary", 4,088 bytes); pieces now
//! end at the last record boundary that fits (`spool::piece_len`, unit-tested), and the
//! configuration refuses a spooled output whose channel's records could not fit one spool
//! record. A quiet producer's batched read held every free buffer of a short pool (17, one
//! kept as the preamble), so the replay read found none and the channel never drained (seed
//! 141); a batched read now leaves half the pool free. Switching to spooling pumped before the
//! record that caused it was appended: the spool was still empty, the output went live again
//! at once, and the next records overtook that one (seed 1509, "received position 90108
//! after 132039"); the callers pump after the append. The trace notes each spooling output's
//! mode change, and the liveness report shows its spool.
//!
//! Regression seeds past 2,000 run with every shorter range (`REGRESSIONS`).
//!
//! Not simulated yet: the splice and tee path (channels here run with `splice = off`),
//! shared-memory publishing, `framing = line` on a UDP input (integration-tested).

mod sim {
    pub mod broker;
    pub mod files;
    pub mod kernel;
    pub mod memory;
    pub mod records;
    pub mod rng;
    pub mod spoolfs;
}

use ringrelay::config::{parse_str, Config};
use ringrelay::engine::buffers::{BufferPool, State};
use ringrelay::engine::caps::Caps;
use ringrelay::engine::io::Effects;
use ringrelay::engine::{Engine, Io};
use sim::kernel::{pattern, talk_pos, talker_of, Faults, Kernel, Obj, Pos, Who};
use sim::memory::SimMemory;
use sim::records::{check_runs, RecordSpec};
use sim::rng::Rng;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InKind {
    Udp,
    Listen,
    Dial,
    /// A serial port (`serial://`): unplugged and plugged back in by the seed.
    Serial,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutKind {
    Subscribers,
    Collector,
    UdpDest,
    File,
    /// An `mqtt://` output and its broker (`sim/broker.rs`).
    Broker,
}

#[derive(Clone, Debug)]
struct OutSpec {
    kind: OutKind,
    policy: &'static str,
    zerocopy: bool,
    /// Subscribers: `on_fin=keep` (a FIN is a half-close; the default closes them).
    keep_fin: bool,
    /// A file whose directory is removed at some point and never comes back.
    lost: bool,
    /// An MQTT output at QoS 1.
    qos1: bool,
    /// A collector with a spool (`sim/spoolfs.rs`): its config keys.
    spool: Option<String>,
}

#[derive(Clone, Debug)]
struct ChanSpec {
    input: InKind,
    outputs: Vec<OutSpec>,
    /// `producer = replace` (listened inputs): a producer may connect while one is.
    replace: bool,
    /// `commands = first` (stream inputs): the first subscriber's bytes go to the producer.
    commands: bool,
    /// `idle_timeout=1s` on the input.
    idle: bool,
    /// Frames, lines or a preamble (stream inputs only; see `sim/records.rs`).
    records: RecordSpec,
}

/// A channel's producer or UDP sender.
#[derive(Debug, Default)]
struct Source {
    conn: Option<usize>,
    next: u64,
    total: u64,
    /// UDP: the last datagrams, sent only at the moment of SIGTERM. They wait in the input
    /// socket when the stop comes, and the stop must read them (at most its receive buffer's
    /// worth, which they stay under).
    held: u64,
    /// The producer (or UDP sender) is silent for a while (chaos only).
    silent: bool,
    /// The position at which each producer connection started.
    starts: Vec<Pos>,
}

struct World {
    rng: Rng,
    spec: Vec<ChanSpec>,
    cfg_text: String,
    kernel: Kernel,
    sources: Vec<Source>,
    /// Subscriber connections per (channel, output), in order.
    subs: Vec<Vec<Vec<usize>>>,
    /// Collectors: up (accepting dials), and their connections in order.
    collectors: Vec<Vec<(bool, Vec<usize>)>>,
    /// Outputs with a subscriber that never reads.
    stuck_block: Vec<bool>,
    calm: bool,
}

fn policy(rng: &mut Rng, kind: OutKind) -> &'static str {
    match kind {
        OutKind::Subscribers => rng.pick(&["drop", "disconnect", "block"]),
        OutKind::Collector => rng.pick(&["block", "block", "drop", "disconnect"]),
        OutKind::UdpDest => "drop",
        OutKind::File => "block",
        OutKind::Broker => rng.pick(&["block", "block", "drop"]),
    }
}

impl World {
    fn new(seed: u64) -> (World, Config, Caps, BufferPool) {
        let mut rng = Rng::new(seed);
        let nchan = rng.range(1, 3);
        let large = rng.pick(&[4096u32, 16384]);
        let count = rng.range(12, 40) as u32;
        let dcount = rng.range(24, 96) as u32;
        let mut text = format!(
            "[global]\nbuffer_size = {large}\nbuffer_count = {count}\ndatagram_size = 512\n\
             datagram_count = {dcount}\nshutdown_timeout = 30s\nstats_interval = 3600s\nsplice = off\n"
        );
        let mut spec = Vec::new();
        // Records come from their own generator: the rest of a seed's run stays as it was.
        let mut rrng = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5EC0);
        for c in 0..nchan {
            let input = match rng.pick(&[InKind::Udp, InKind::Listen, InKind::Dial]) {
                // One dialed input in three is a serial port instead, chosen without a draw
                // from the seed's sequence (the other seeds run as they did before).
                InKind::Dial if (seed + c as u64) % 3 == 0 => InKind::Serial,
                k => k,
            };
            let n = rng.range(1, 3);
            let mut outputs = Vec::new();
            for _ in 0..n {
                let kind = rng.pick(&[
                    OutKind::Subscribers,
                    OutKind::Collector,
                    OutKind::UdpDest,
                    OutKind::File,
                ]);
                let policy = policy(&mut rng, kind);
                let zerocopy = kind == OutKind::Collector && rng.chance(400);
                let keep_fin = kind == OutKind::Subscribers && rng.chance(250);
                let lost = kind == OutKind::File && rng.chance(170);
                outputs.push(OutSpec {
                    kind,
                    policy,
                    zerocopy,
                    keep_fin,
                    lost,
                    qos1: false,
                    spool: None,
                });
            }
            // An MQTT output on a datagram channel, from its own generator.
            let mut mrng = Rng::new(seed.wrapping_mul(0x4D51_5454).wrapping_add(c as u64 + 7));
            if input == InKind::Udp && mrng.chance(500) {
                outputs.push(OutSpec {
                    kind: OutKind::Broker,
                    policy: policy(&mut mrng, OutKind::Broker),
                    zerocopy: false,
                    keep_fin: false,
                    lost: false,
                    qos1: mrng.chance(700),
                    spool: None,
                });
            }
            let replace = input == InKind::Listen && rng.chance(400);
            // Drawn from their own generator, so that the other choices of a seed stay.
            let mut more = Rng::new(seed.wrapping_mul(0x9E37_79B9).wrapping_add(c as u64));
            let commands = input != InKind::Udp && more.chance(500);
            let idle = more.chance(400);
            // `keepalive=off` only with `replace`: a producer that vanished is then released
            // by the next one alone.
            let keepalive_off = replace && rng.chance(500);
            text += &format!("[channel c{c}]\n");
            text += &match input {
                InKind::Udp => format!("input = udp://127.0.0.1:{}", 5000 + c),
                InKind::Listen => format!(
                    "input = tcp-listen://127.0.0.1:{}{}",
                    5000 + c,
                    if keepalive_off { " keepalive=off" } else { "" }
                ),
                InKind::Dial => format!("input = tcp://127.0.0.1:{}", 5000 + c),
                InKind::Serial => {
                    format!("input = serial:///dev/serial/by-id/sim-c{c} baud=115200")
                }
            };
            text += if idle { " idle_timeout=1s\n" } else { "\n" };
            if replace {
                text += "producer = replace\n";
            }
            if commands {
                text += "commands = first\n";
            }
            let records = match input {
                InKind::Udp => RecordSpec::default(),
                _ => RecordSpec::pick(&mut rrng),
            };
            text += &records.keys();
            let stream_out = outputs.iter().any(|o| {
                matches!(
                    o.kind,
                    OutKind::Subscribers | OutKind::Collector | OutKind::File
                )
            });
            if input == InKind::Udp && stream_out {
                text += "framing = u32be\n";
            }
            for (o, os) in outputs.iter_mut().enumerate() {
                if os.kind == OutKind::Collector {
                    os.spool = sim::spoolfs::pick(seed, c, o);
                }
                let port = 6000 + c * 10 + o;
                let backlog = rng.pick(&["16KiB", "64KiB", "1MiB"]);
                text += &match os.kind {
                    OutKind::Subscribers => format!(
                        "output = tcp-listen://127.0.0.1:{port} on_slow={} max_backlog={backlog} max_clients=3{}\n",
                        os.policy,
                        if os.keep_fin { " on_fin=keep" } else { "" }
                    ),
                    OutKind::Collector => format!(
                        "output = tcp://127.0.0.1:{port} on_slow={} max_backlog={backlog}{}{}\n",
                        os.policy,
                        if os.zerocopy { " zerocopy=on" } else { "" },
                        os.spool.as_deref().unwrap_or("")
                    ),
                    OutKind::UdpDest => format!("output = udp://127.0.0.1:{port}\n"),
                    OutKind::Broker => format!(
                        "output = mqtt://127.0.0.1:{port}/sim/{{channel}} qos={} on_slow={} max_backlog={backlog} max_inflight={} keepalive={}\n",
                        u8::from(os.qos1),
                        os.policy,
                        rng.pick(&[1, 3, 64]),
                        rng.pick(&["off", "1s", "30s"]),
                    ),
                    OutKind::File => format!(
                        "output = file:///nonexistent/sim-c{c}-o{o}.raw fault_grace={}{}\n",
                        rng.pick(&["300ms", "2s", "10s"]),
                        if rng.chance(300) { " rotate=8KiB keep=2" } else { "" }
                    ),
                };
            }
            spec.push(ChanSpec {
                input,
                outputs,
                replace,
                commands,
                idle,
                records,
            });
        }
        let cfg = parse_str("sim.conf", &text).unwrap_or_else(|e| panic!("{text}\n{e:?}"));
        let caps = Caps {
            multishot_recvmsg: rng.chance(500),
            multishot_accept: true,
            send_zc: rng.chance(700),
            cq_entries: 4096,
            ops: vec![("SPLICE", false), ("TEE", false), ("SEND_ZC", true)],
            ..Caps::default()
        };
        let g = &cfg.global;
        let pool = BufferPool::for_global(g);
        let sizes = (0..pool.count() as u16).map(|i| pool.size_of(i)).collect();
        let faults = Faults {
            short_io: rng.range(0, 600) as u32,
            error: rng.range(0, 40) as u32,
            cancel_race: rng.range(0, 500) as u32,
        };
        let kernel = Kernel::new(rng.next(), faults, sizes);
        let sources = spec
            .iter()
            .map(|s| {
                let udp = s.input == InKind::Udp;
                Source {
                    total: if udp {
                        rng.range(50, 400) as u64
                    } else {
                        rng.range(20_000, 300_000) as u64
                    },
                    held: if udp { rng.range(0, 20) as u64 } else { 0 },
                    ..Source::default()
                }
            })
            .collect();
        let subs = spec
            .iter()
            .map(|s| vec![Vec::new(); s.outputs.len()])
            .collect();
        let collectors = spec
            .iter()
            .map(|s| vec![(false, Vec::new()); s.outputs.len()])
            .collect();
        let stuck_block = vec![false; spec.len()];
        (
            World {
                rng,
                spec,
                cfg_text: text,
                kernel,
                sources,
                subs,
                collectors,
                stuck_block,
                calm: false,
            },
            cfg,
            caps,
            pool,
        )
    }

    /// Sends what the UDP sources held back (see [`Source::held`]), all at once.
    fn send_held(&mut self) {
        for (c, s) in self.sources.iter_mut().enumerate() {
            if self.spec[c].input != InKind::Udp || self.stuck_block[c] {
                continue;
            }
            let q = self.kernel.udp_in.entry(c).or_default();
            while s.next < s.total {
                q.push_back((s.next, self.rng.range(8, 496) as u32));
                s.next += 1;
            }
        }
    }

    /// One action of a peer, chosen by the seed.
    fn peer_step(&mut self) {
        let c = self.rng.below(self.spec.len());
        let spec = self.spec[c].clone();
        match self.rng.below(4) {
            0 | 1 => self.source_step(c, &spec),
            _ => {
                let o = self.rng.below(spec.outputs.len());
                match spec.outputs[o].kind {
                    OutKind::Subscribers => self.subscriber_step(c, o, spec.outputs[o].policy),
                    OutKind::Collector => self.collector_step(c, o),
                    OutKind::Broker => self.broker_step(c, o),
                    OutKind::UdpDest => {
                        if !self.calm && self.rng.chance(100) {
                            let r = self.kernel.refusing.entry((c, o)).or_default();
                            *r = !*r;
                        }
                    }
                    OutKind::File => self.file_step(c, o),
                }
            }
        }
    }

    fn source_step(&mut self, c: usize, spec: &ChanSpec) {
        let input = spec.input;
        let s = &mut self.sources[c];
        // A source that goes silent for a while (a stuck rtl_tcp): with `idle_timeout` its
        // connection is closed (dialed inputs redial, listened ones wait for the next).
        if self.calm {
            s.silent = false;
        } else if self.rng.chance(if s.silent { 20 } else { 5 }) {
            s.silent = !s.silent;
        }
        if s.silent {
            return;
        }
        if input == InKind::Udp {
            let q = self.kernel.udp_in.entry(c).or_default();
            let burst = self.rng.range(1, 8);
            for _ in 0..burst {
                if s.next >= s.total - s.held || q.len() >= 64 {
                    break;
                }
                let len = if !self.calm && self.rng.chance(20) {
                    600
                } else {
                    self.rng.range(8, 496) as u32
                };
                q.push_back((s.next, len));
                s.next += 1;
            }
            return;
        }
        if input == InKind::Serial {
            return self.serial_step(c);
        }
        match s.conn {
            None => {
                if s.next >= s.total && self.calm {
                    return;
                }
                if input == InKind::Listen {
                    if let Some(l) = self.kernel.listener(Who::Input(c)) {
                        let ci = self.kernel.conn(Who::Input(c), 0);
                        self.kernel.backlog.entry(l).or_default().push_back(ci);
                        self.sources[c].conn = Some(ci);
                        let at = self.sources[c].next;
                        self.sources[c].starts.push(at);
                    }
                } else {
                    // Answer the relay's dial, if one waits.
                    let pending = (0..self.kernel.conns.len()).rev().find(|&i| {
                        let k = &self.kernel.conns[i];
                        k.who == Some(Who::Input(c)) && k.accepted.is_none() && !k.closed
                    });
                    if let Some(ci) = pending {
                        let ok = self.calm || !self.rng.chance(300);
                        self.kernel.conns[ci].accepted = Some(ok);
                        if ok {
                            self.sources[c].conn = Some(ci);
                            let at = self.sources[c].next;
                            self.sources[c].starts.push(at);
                        }
                    }
                }
            }
            Some(ci) => {
                let k = &mut self.kernel.conns[ci];
                if k.closed || k.shut {
                    // The relay closed it (a reload or a fault): connect again later.
                    s.conn = None;
                    return;
                }
                if !self.calm && spec.replace && self.rng.chance(30) {
                    // A producer that rebooted connects again while its old connection is
                    // still up (or half-open: it vanished).
                    k.vanished = self.rng.chance(500);
                    if let Some(l) = self.kernel.listener(Who::Input(c)) {
                        let new = self.kernel.conn(Who::Input(c), 0);
                        self.kernel.backlog.entry(l).or_default().push_back(new);
                        self.sources[c].conn = Some(new);
                        let at = self.sources[c].next;
                        self.sources[c].starts.push(at);
                    }
                    return;
                }
                if !self.calm && self.rng.chance(10) {
                    // The producer vanishes without a word: only keepalive (or, with
                    // `producer = replace`, the next producer) frees the input.
                    k.vanished = true;
                    s.conn = None;
                    return;
                }
                if !self.calm && self.rng.chance(30) {
                    // The producer goes away: a FIN, or a reset that loses what it sent.
                    if self.rng.chance(500) {
                        k.rx_eof = true;
                    } else {
                        k.rx_reset = true;
                    }
                    s.conn = None;
                    return;
                }
                let n = self.rng.range(1, 20_000) as u64;
                let room = 65_536usize.saturating_sub(k.rx.len()) as u64;
                let n = n.min(room).min(s.total - s.next);
                k.rx.extend(s.next..s.next + n);
                s.next += n;
                if s.next >= s.total && self.calm {
                    k.rx_eof = true;
                }
            }
        }
    }

    /// A serial device: plugged in or not. While it is, the port the relay opened gets bytes;
    /// unplugging it fails the port's reads (EIO, losing what the port held) or hangs it up
    /// (its bytes are read, then the end of file). It is plugged back in later, always
    /// while calm.
    fn serial_step(&mut self, c: usize) {
        let plugged = self.kernel.serial_plugged.get(&c) == Some(&true);
        let s = &mut self.sources[c];
        if let Some(ci) = s.conn {
            let k = &self.kernel.conns[ci];
            if k.closed || k.shut {
                // The relay closed the port (a fault, a reload): it opens it again.
                s.conn = None;
            }
        }
        let Some(ci) = s.conn else {
            if !plugged {
                if self.calm || self.rng.chance(200) {
                    self.kernel.serial_plugged.insert(c, true);
                    self.kernel.note(format!("c{c}: serial device plugged in"));
                }
                return;
            }
            s.conn = (0..self.kernel.conns.len()).rev().find(|&i| {
                let k = &self.kernel.conns[i];
                k.who == Some(Who::Input(c))
                    && k.serial
                    && !(k.closed || k.shut || k.rx_eio || k.rx_eof)
            });
            if s.conn.is_some() {
                // A port opened: its bytes are a new producer connection (frames count anew).
                let at = s.next;
                s.starts.push(at);
            }
            return;
        };
        let k = &mut self.kernel.conns[ci];
        if !self.calm && self.rng.chance(30) {
            if self.rng.chance(500) {
                k.rx_eio = true;
            } else {
                k.rx_eof = true;
            }
            s.conn = None;
            self.kernel.serial_plugged.insert(c, false);
            self.kernel.note(format!("c{c}: serial device unplugged"));
            return;
        }
        let n = self.rng.range(1, 4_000) as u64;
        let room = 65_536usize.saturating_sub(k.rx.len()) as u64;
        let n = n.min(room).min(s.total - s.next);
        k.rx.extend(s.next..s.next + n);
        s.next += n;
    }

    fn subscriber_step(&mut self, c: usize, o: usize, policy: &str) {
        let conns = self.subs[c][o].clone();
        let live: Vec<usize> = conns
            .iter()
            .copied()
            .filter(|&ci| !self.kernel.conns[ci].closed && !self.kernel.conns[ci].gone)
            .collect();
        if live.len() < 3 && self.rng.chance(300) {
            if let Some(l) = self.kernel.listener(Who::Output(c, o)) {
                let ci = self.kernel.conn(Who::Output(c, o), 65_536);
                // A subscriber that never reads, now and then (not on a `block` output while
                // calm: it would stall its channel for good, which is what `block` means).
                let stuck = self.rng.chance(80) && (policy != "block" || !self.calm);
                if stuck && policy == "block" {
                    self.stuck_block[c] = true;
                }
                self.kernel.conns[ci].stuck = stuck;
                self.kernel.backlog.entry(l).or_default().push_back(ci);
                self.subs[c][o].push(ci);
            }
            return;
        }
        if live.is_empty() {
            return;
        }
        let ci = live[self.rng.below(live.len())];
        let k = &mut self.kernel.conns[ci];
        if !self.calm && self.rng.chance(60) {
            if self.rng.chance(300) {
                k.half_closed = true;
            } else {
                k.gone = true;
            }
            return;
        }
        if !k.stuck {
            k.room = (k.room + self.rng.range(1, 65_536)).min(262_144);
        }
        if self.rng.chance(150) && !k.half_closed && k.rx.len() < 4096 {
            // It talks back (rtl_tcp commands): discarded, or with `commands = first` the
            // first subscriber's reach the producer.
            let n = self.rng.range(1, 600) as u64;
            let from = k.talked;
            k.rx.extend((from..from + n).map(|i| talk_pos(ci, i)));
            k.talked += n;
        }
    }

    /// Someone deletes the file of output `o`, removes or re-creates its directory, or puts
    /// another file in its place. Calm brings every directory back but a lost one's.
    fn file_step(&mut self, c: usize, o: usize) {
        let files = &mut self.kernel.files;
        let out = (c, o);
        if self.spec[c].outputs[o].lost {
            if !files.dir_missing.contains(&out) && self.rng.chance(50) {
                files.delete(out, true);
                self.kernel
                    .note(format!("c{c} output {o}: directory removed for good"));
            }
            return;
        }
        if self.calm {
            files.restore(out);
            return;
        }
        let what = match self.rng.below(1000) {
            0..=29 => {
                files.delete(out, false);
                "file deleted"
            }
            30..=49 => {
                files.delete(out, true);
                "directory removed"
            }
            50..=69 => {
                files.replace(out);
                "file replaced"
            }
            70..=299 if files.dir_missing.contains(&out) => {
                files.restore(out);
                "directory back"
            }
            _ => return,
        };
        self.kernel.note(format!("c{c} output {o}: {what}"));
    }

    /// A broker: accepts the relay's dials (or is down), refuses some CONNECTs, sends the
    /// PUBACKs it owes at once, late or not at all (a connection dropped before them).
    fn broker_step(&mut self, c: usize, o: usize) {
        let calm = self.calm;
        let (up, conns) = &mut self.collectors[c][o];
        if !calm && self.rng.chance(60) {
            *up = !*up;
            if !*up {
                if let Some(&ci) = conns.last() {
                    self.kernel.conns[ci].gone = true;
                }
            }
        }
        if calm {
            *up = true;
        }
        let up = *up;
        for ci in 0..self.kernel.conns.len() {
            let k = &mut self.kernel.conns[ci];
            if k.who == Some(Who::Output(c, o)) && k.accepted.is_none() && !k.closed {
                k.accepted = Some(up);
                if up {
                    k.room = 65_536;
                    let refuse = if !calm && self.rng.chance(150) {
                        self.rng.pick(&[2, 3, 4, 5])
                    } else {
                        0
                    };
                    let mut b = sim::broker::BrokerConn::new(refuse);
                    b.prompt = calm;
                    k.broker = Some(b);
                    self.collectors[c][o].1.push(ci);
                }
            }
        }
        if let Some(&ci) = self.collectors[c][o].1.last() {
            let n = if calm {
                usize::MAX
            } else {
                self.rng.range(0, 8)
            };
            let k = &mut self.kernel.conns[ci];
            // A connection that is over sends nothing more (what it still owed, it never
            // sends: see `BrokerConn::kept`).
            if !k.gone && !k.closed && !k.shut {
                k.room = (k.room + 65_536).min(262_144);
                if let Some(b) = k.broker.as_mut() {
                    b.release(n);
                }
            }
        }
    }

    fn collector_step(&mut self, c: usize, o: usize) {
        let (up, conns) = &mut self.collectors[c][o];
        if !self.calm && self.rng.chance(100) {
            *up = !*up;
            if !*up {
                if let Some(&ci) = conns.last() {
                    let k = &mut self.kernel.conns[ci];
                    if self.rng.chance(200) {
                        k.half_closed = true;
                    } else {
                        k.gone = true;
                    }
                }
            }
        }
        if self.calm {
            *up = true;
        }
        let up = *up;
        // Answer the relay's dials.
        for ci in 0..self.kernel.conns.len() {
            let k = &mut self.kernel.conns[ci];
            if k.who == Some(Who::Output(c, o)) && k.accepted.is_none() && !k.closed {
                k.accepted = Some(up);
                if up {
                    k.room = 65_536;
                    self.collectors[c][o].1.push(ci);
                }
            }
        }
        if let Some(&ci) = self.collectors[c][o].1.last() {
            let k = &mut self.kernel.conns[ci];
            if !k.gone {
                k.room = (k.room + self.rng.range(1, 65_536)).min(262_144);
            }
        }
    }
}

/// A failure: the seed, what broke, and the trace.
struct Failure {
    seed: u64,
    what: String,
    trace: Vec<String>,
}

fn io<'a>(now: Instant, fx: &'a mut Effects, k: &'a mut Kernel, m: &'a mut SimMemory) -> Io<'a> {
    Io {
        now,
        fx,
        sys: k,
        mem: m,
    }
}

/// Runs one seed.
fn run(seed: u64) -> Result<(), Failure> {
    let (mut w, cfg, caps, pool) = World::new(seed);
    if std::env::var("SIM_SEED").is_ok() {
        w.kernel.trace_len = 1_000_000;
    }
    let mut mem = SimMemory::new(&pool);
    let t0 = Instant::now();
    let mut now = t0;
    let mut fx = Effects::default();
    let mut engine = Engine::new(cfg.clone(), caps, pool, seed, now);
    let fail = |w: &World, what: String| Failure {
        seed,
        what: format!("{what}\nconfig:\n{}", w.cfg_text),
        trace: w.kernel.trace.iter().cloned().collect(),
    };
    let bound: Vec<_> = cfg
        .channels
        .iter()
        .map(|c| ringrelay::engine::io::Sys::bind(&mut w.kernel, c).unwrap())
        .collect();
    if let Err(e) = engine.start(bound, &mut io(now, &mut fx, &mut w.kernel, &mut mem)) {
        return Err(fail(&w, format!("start: {e}")));
    }
    w.kernel.submit(&mut fx);
    let chaos = w.rng.range(300, 3000);
    let reload_at = if w.rng.chance(400) {
        Some(w.rng.below(chaos))
    } else {
        None
    };
    let mut step = 0usize;
    let mut spool_modes = Vec::new();
    let mut calm_since = None;
    let mut term_at = None;
    loop {
        step += 1;
        if step == chaos {
            w.calm = true;
            w.kernel.faults.error = 0;
            calm_since = Some(step);
            // Brokers answer at once from now on, what they owed first.
            for k in w.kernel.conns.iter_mut().filter(|k| !k.closed && !k.gone) {
                if let Some(b) = k.broker.as_mut() {
                    b.prompt = true;
                    b.release(usize::MAX);
                }
            }
        }
        if Some(step) == reload_at {
            let new = parse_str("sim.conf", &w.cfg_text).expect("same config");
            engine.reload(
                new,
                "sim.conf",
                &mut io(now, &mut fx, &mut w.kernel, &mut mem),
            );
            w.kernel.submit(&mut fx);
        }
        match w.rng.below(10) {
            0..=2 => {
                w.kernel.execute_one(&mut mem.inner);
            }
            3..=5 => {
                let n = w.rng.range(1, 8);
                let mut any = false;
                for _ in 0..n {
                    let Some(c) = w.kernel.pick_cqe() else { break };
                    any = true;
                    engine.complete(c, &mut io(now, &mut fx, &mut w.kernel, &mut mem));
                    w.kernel.submit(&mut fx);
                }
                if any {
                    engine.after_batch(&mut io(now, &mut fx, &mut w.kernel, &mut mem));
                    w.kernel.submit(&mut fx);
                }
            }
            6 => {
                w.kernel.notify_one();
            }
            7 | 8 => w.peer_step(),
            _ => {
                now += Duration::from_millis(100);
                let inflight = w.kernel.pending.len();
                engine.tick(&mut io(now, &mut fx, &mut w.kernel, &mut mem), inflight);
                // The timer is a completion too: the driver ends its batch as any other.
                engine.after_batch(&mut io(now, &mut fx, &mut w.kernel, &mut mem));
                w.kernel.submit(&mut fx);
            }
        }
        mem.settle(&mut w.kernel);
        sim::spoolfs::note_modes(&mut w.kernel, &engine, &mut spool_modes);
        check_step(&w, &engine).map_err(|e| fail(&w, format!("step {step}: {e}")))?;
        if let Some(v) = w.kernel.violations.first() {
            return Err(fail(&w, format!("step {step}: {v}")));
        }
        if let (Some(since), None) = (calm_since, term_at) {
            if quiet(&w, &engine) {
                term_at = Some(step);
                w.send_held();
                engine.terminate(&mut io(now, &mut fx, &mut w.kernel, &mut mem));
                w.kernel.submit(&mut fx);
            } else if step - since > 60_000 {
                return Err(fail(
                    &w,
                    format!(
                        "liveness: channels did not drain within 60000 steps of calm:\n{}",
                        drain_report(&w, &engine)
                    ),
                ));
            }
        }
        if let Some(t) = term_at {
            if engine.done() {
                break;
            }
            if step - t > 80_000 {
                return Err(fail(
                    &w,
                    format!(
                        "liveness: no clean stop within 80000 steps of SIGTERM:\n{}",
                        drain_report(&w, &engine)
                    ),
                ));
            }
        }
    }
    // Cancels are fire-and-forget for the engine (the driver's ring waits for them): let the
    // kernel finish them.
    while w.kernel.execute_one(&mut mem.inner) {}
    while w.kernel.pick_cqe().is_some() {}
    let counters = final_counters(&engine);
    engine.finish(&mut w.kernel);
    check_end(&w, &engine, &counters).map_err(|e| fail(&w, e))
}

/// Every buffer an operation holds is held in the engine's books.
fn check_step(w: &World, engine: &Engine) -> Result<(), String> {
    let pool = engine.pool();
    let mut writes = std::collections::BTreeMap::new();
    for (buf, kind, op) in w.kernel.held_buffers() {
        match (kind, pool.state(buf)) {
            ("read", State::Kernel) => {}
            ("write", State::Shared(_)) => *writes.entry(buf).or_insert(0u32) += 1,
            (k, s) => {
                return Err(format!(
                    "buffer {buf} held by {k} op #{op} is {s:?} in the pool"
                ))
            }
        }
    }
    for (buf, n) in writes {
        if let State::Shared(refs) = pool.state(buf) {
            if refs < n {
                return Err(format!(
                    "buffer {buf} held by {n} writes in flight has only {refs} references"
                ));
            }
        }
    }
    for (g, bufs) in &w.kernel.groups {
        for &b in bufs {
            if pool.state(b) != State::Provided {
                return Err(format!(
                    "buffer {b} in ring {g} is {:?} in the pool",
                    pool.state(b)
                ));
            }
        }
    }
    Ok(())
}

fn quiet(w: &World, engine: &Engine) -> bool {
    for (c, s) in w.sources.iter().enumerate() {
        if w.stuck_block[c] {
            continue;
        }
        if s.next < s.total - s.held {
            return false;
        }
        if w.kernel.udp_in.get(&c).is_some_and(|q| !q.is_empty()) {
            return false;
        }
        if let Some(ci) = s.conn {
            if !w.kernel.conns[ci].rx.is_empty() {
                return false;
            }
        }
        let Some(Some(ch)) = engine.channels().get(c) else {
            return false;
        };
        // Drained, but for what waits for a subscriber that never reads (its queue is kept
        // while under its limit: nothing more arrives to push it over), and for a lost file
        // (it keeps the rest of a chunk it had begun to write).
        let lost = |o: usize| w.spec[c].outputs[o].lost;
        if ch
            .outputs
            .iter()
            .enumerate()
            .any(|(o, q)| (!q.queue.is_empty() || sim::spoolfs::holds(q)) && !lost(o))
        {
            return false;
        }
        // A subscriber whose peer left is released even when nothing flows to it (unless its
        // output keeps half-closed subscribers): otherwise its descriptor and its
        // `max_clients` place are held until the next write, which an idle channel never makes.
        for (o, spec) in w.spec[c].outputs.iter().enumerate() {
            if spec.kind != OutKind::Subscribers || spec.keep_fin {
                continue;
            }
            let held = ch.outputs[o].subscribers.iter().any(|&s| {
                ch.ep(s).is_some_and(|e| match w.kernel.objs.get(&e.fd) {
                    Some(Obj::Stream(ci)) => {
                        let k = &w.kernel.conns[*ci];
                        k.gone || k.half_closed || k.shut
                    }
                    _ => false,
                })
            });
            if held {
                return false;
            }
        }
        let busy = ch.slots.iter().flatten().any(|e| {
            let pending = e.write_ops > 0 || e.queue.as_ref().is_some_and(|q| !q.is_empty());
            pending && !stuck_fd(w, e.fd)
        });
        if busy {
            return false;
        }
    }
    w.kernel.cq.is_empty()
}

/// Whether `fd` is a connection to a subscriber that never reads.
fn stuck_fd(w: &World, fd: i32) -> bool {
    match w.kernel.objs.get(&fd) {
        Some(Obj::Stream(ci)) => w.kernel.conns[*ci].stuck,
        _ => false,
    }
}

fn drain_report(w: &World, engine: &Engine) -> String {
    let mut s = String::new();
    for (c, src) in w.sources.iter().enumerate() {
        s += &format!(
            "c{c}: sent {}/{} stuck_block={} ",
            src.next, src.total, w.stuck_block[c]
        );
        if let Some(Some(ch)) = engine.channels().get(c) {
            s += &format!(
                "drained={} queued={} blocked={} starved={} replaced={:?} retry={:?} pool_free={}\n",
                ch.drained(),
                ch.queued_bytes(),
                ch.blocked,
                ch.input_starved,
                ch.replaced,
                ch.input_retry_at.is_some(),
                engine.pool().free_count()
            );
        } else {
            s += "gone\n";
        }
    }
    for (c, ch) in engine.channels().iter().enumerate() {
        let Some(ch) = ch else { continue };
        for (i, e) in ch.slots.iter().enumerate() {
            if let Some(e) = e {
                s += &format!(
                    "  c{c} slot {i}: {:?} {:?} in_flight={} write_ops={} fd={} queue={:?} reading={}\n",
                    e.role, e.link, e.in_flight, e.write_ops, e.fd, e.queue.as_ref().map(|q| q.len()), e.reading.len()
                );
            }
        }
        for (oi, o) in ch.outputs.iter().enumerate() {
            if let Some(d) = sim::spoolfs::describe(o) {
                s += &format!("  c{c} output {oi} queue={} {d}\n", o.queue.len());
            }
        }
    }
    s += &format!("pending ops: {}\n", w.kernel.pending.len());
    for p in w.kernel.pending.iter().take(20) {
        s += &format!(
            "  #{} {:?} executed={} owed={}\n",
            p.id, p.op, p.executed, p.owed
        );
    }
    s
}

/// An output's drops, datagrams sent and disconnects.
type OutCounters = (u64, u64, u64);

/// Per channel: input datagrams delivered, input drops, and each output's counters; and the
/// bytes the input cut and did not deliver (`partial`, and what a carry still held).
struct Counters {
    chans: Vec<(u64, u64, Vec<OutCounters>)>,
    /// Per channel: command bytes written to producers, idle timeouts.
    talk: Vec<(u64, u64)>,
    partial: Vec<u64>,
    /// Per channel, each output's bytes skipped to align (`skipped=`).
    skipped: Vec<Vec<u64>>,
    /// Per channel, each output's spool records lost (dropped: also counted in its drops, or
    /// at `spool_max` by `drop-oldest`) and kept on disk at the end.
    spooled: Vec<Vec<u64>>,
}

/// Seeds' totals: idle timeouts fired, command bytes forwarded (the run shows the simulation
/// reaches both).
static IDLE_TIMEOUTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static COMMAND_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn final_counters(engine: &Engine) -> Counters {
    Counters {
        chans: engine
            .channels()
            .iter()
            .map(|c| match c {
                Some(ch) => (
                    ch.stats.datagrams,
                    ch.stats.drops,
                    ch.outputs
                        .iter()
                        .map(|o| (o.stats.drops, o.stats.datagrams, o.stats.disconnects))
                        .collect(),
                ),
                None => (0, 0, Vec::new()),
            })
            .collect(),
        talk: engine
            .channels()
            .iter()
            .map(|c| {
                c.as_ref()
                    .map_or((0, 0), |ch| (ch.stats.commands, ch.stats.idle_timeouts))
            })
            .collect(),
        skipped: engine
            .channels()
            .iter()
            .map(|c| {
                c.as_ref().map_or(Vec::new(), |ch| {
                    ch.outputs.iter().map(|o| o.stats.skipped).collect()
                })
            })
            .collect(),
        spooled: engine
            .channels()
            .iter()
            .map(|c| {
                c.as_ref().map_or(Vec::new(), |ch| {
                    ch.outputs.iter().map(sim::spoolfs::lost_or_kept).collect()
                })
            })
            .collect(),
        partial: engine
            .channels()
            .iter()
            .map(|c| {
                c.as_ref().map_or(0, |ch| {
                    ch.stats.partial + ch.framed.as_ref().map_or(0, |f| u64::from(f.carried()))
                })
            })
            .collect(),
    }
}

/// The records (datagram sequence numbers) whole in `pos`, a framed stream.
fn records(pos: &[Pos]) -> Vec<u64> {
    let mut seqs: Vec<u64> = pos.iter().map(|p| p >> 20).collect();
    seqs.dedup();
    seqs
}

fn check_end(w: &World, engine: &Engine, counters: &Counters) -> Result<(), String> {
    if !engine.pool().is_whole() {
        return Err(format!(
            "the pool is not whole at the end: {} of {} in use",
            engine.pool().in_use(),
            engine.pool().count()
        ));
    }
    if !w.kernel.pending.is_empty() || !w.kernel.cq.is_empty() {
        return Err(format!(
            "{} operations still in flight at the end (first: {:?})",
            w.kernel.pending.len(),
            w.kernel.pending.first().map(|p| p.op)
        ));
    }
    if let Some((fd, o)) = w.kernel.objs.iter().find(|(_, o)| !matches!(o, Obj::Pipe)) {
        return Err(format!("fd {fd} ({o:?}) still open at the end"));
    }
    if engine.zerocopy_in_flight() != 0 {
        return Err("zero-copy records left at the end".into());
    }
    check_commands(w, counters)?;
    for (c, spec) in w.spec.iter().enumerate() {
        if w.stuck_block[c] {
            continue;
        }
        if let Some(q) = w.kernel.udp_in.get(&c).filter(|q| !q.is_empty()) {
            return Err(format!(
                "c{c}: {} datagrams were left in the input socket at the end: a stop reads what the kernel accepted",
                q.len()
            ));
        }
        let (datagrams, in_drops, outs) = &counters.chans[c];
        let offered = datagrams - in_drops;
        if spec.records.is_framed() {
            check_records(w, c, spec, counters)?;
            continue;
        }
        for (o, os) in spec.outputs.iter().enumerate() {
            let (drops, sent, _disc) = outs[o];
            let received: Vec<Pos> = match os.kind {
                OutKind::Collector => w.collectors[c][o]
                    .1
                    .iter()
                    .flat_map(|&ci| w.kernel.conns[ci].received.iter().copied())
                    .collect(),
                OutKind::UdpDest | OutKind::File => w
                    .kernel
                    .sinks
                    .get(&(c, o))
                    .map(|d| d.iter().flatten().copied().collect())
                    .unwrap_or_default(),
                OutKind::Subscribers => continue,
                OutKind::Broker => {
                    check_broker(w, c, o, os, offered, drops)?;
                    continue;
                }
            };
            let lost = drops + counters.spooled[c][o];
            if os.spool.is_some() {
                sim::spoolfs::check_order_across(&received)
                    .map_err(|e| format!("c{c} output {o} (spool): {e}"))?;
            }
            if spec.input == InKind::Udp {
                let recs = records(&received);
                let got = if os.kind == OutKind::UdpDest {
                    w.kernel.sinks.get(&(c, o)).map_or(0, |d| d.len() as u64)
                } else {
                    recs.len() as u64
                };
                // A file drops (counted) once faulted past its fault_grace; until then, and
                // when it never was, it holds everything as any `block` output.
                if os.spool.is_some() {
                    // Spool losses are counted by record; none at all: every record came.
                    if got + lost < offered || (lost == 0 && got != offered) {
                        return Err(format!(
                            "c{c} output {o} (spool, {}): {got} records of {offered} delivered, {drops} drops, {} lost or kept in the spool",
                            os.policy, counters.spooled[c][o]
                        ));
                    }
                    continue;
                }
                let exact = os.policy == "drop" || (os.kind == OutKind::File && drops > 0);
                if os.policy == "block" && !exact && (got != offered || drops != 0) {
                    return Err(format!(
                        "c{c} output {o} (block): {got} records of {offered} delivered, {drops} drops"
                    ));
                }
                // A `disconnect` link drops its backlog as it redials, and counts it whole;
                // a chunk a write still carried may reach the old connection all the same.
                if (os.policy != "block" || exact)
                    && (got + drops < offered || (exact && got + drops != offered))
                {
                    return Err(format!(
                        "c{c} output {o} ({:?} {}): {got} received + {drops} drops != {offered} delivered (sent {sent})",
                        os.kind, os.policy
                    ));
                }
            } else {
                let chunks = stream_chunks(w, c);
                let set: BTreeSet<u64> = received.iter().copied().collect();
                let missing = chunks
                    .iter()
                    .filter(|&&(start, len)| !(start..start + len).any(|p| set.contains(&p)))
                    .count() as u64;
                let all: u64 = chunks.iter().map(|c| c.1).sum();
                if os.spool.is_some() {
                    if missing > lost || (lost == 0 && received.len() as u64 != all) {
                        return Err(format!(
                            "c{c} output {o} (spool, {}): received {} of {all} bytes, {missing} chunks missing, {drops} drops, {} lost or kept in the spool",
                            os.policy, received.len(), counters.spooled[c][o]
                        ));
                    }
                    continue;
                }
                let exact = os.policy == "drop" || (os.kind == OutKind::File && drops > 0);
                if os.policy == "block" && !exact && (missing != 0 || received.len() as u64 != all)
                {
                    let first = chunks
                        .iter()
                        .find(|&&(start, len)| !(start..start + len).any(|p| set.contains(&p)));
                    return Err(format!(
                        "c{c} output {o} (block): received {} of {all} bytes, {missing} chunks missing, the first {first:?}",
                        received.len()
                    ));
                }
                if (os.policy != "block" || exact)
                    && (missing > drops || (exact && missing != drops))
                {
                    return Err(format!(
                        "c{c} output {o} ({:?} {}): {missing} chunks missing, {drops} drops counted",
                        os.kind, os.policy
                    ));
                }
            }
        }
    }
    Ok(())
}

/// An MQTT output's messages, over all its broker connections: each one whole datagram, new
/// ones in the order the channel delivered them, a message seen again only as a re-send with
/// DUP; a QoS 1 `block` output lost none, and every other loss is counted as a drop.
fn check_broker(
    w: &World,
    c: usize,
    o: usize,
    os: &OutSpec,
    offered: u64,
    drops: u64,
) -> Result<(), String> {
    let what = format!(
        "c{c} output {o} (mqtt qos {} {})",
        u8::from(os.qos1),
        os.policy
    );
    let mut seen = BTreeSet::new();
    let mut last: Option<u64> = None;
    for &ci in &w.collectors[c][o].1 {
        let Some(b) = w.kernel.conns[ci].broker.as_ref() else {
            continue;
        };
        // What of the unacknowledged rest reached the broker (see `BrokerConn::kept`): most
        // connections lost all of it, others a part, chosen by the connection's number.
        let h = (ci as u64 ^ 0x5bd1_e995).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let forget = if h % 3 == 0 {
            (h >> 2) as usize % (b.acks.len() + 1)
        } else {
            usize::MAX
        };
        for (m, (pos, dup)) in b.kept(forget).iter().enumerate() {
            let seq = pos[0] >> 20;
            let whole = pos
                .iter()
                .enumerate()
                .all(|(k, &p)| p == (seq << 20) | (4 + k as u64));
            if !whole {
                return Err(format!(
                    "{what}: message {m} of connection {ci} is not one whole datagram"
                ));
            }
            if !seen.insert(seq) {
                if !dup {
                    return Err(format!(
                        "{what}: datagram {seq} published twice, the second time without DUP"
                    ));
                }
                continue;
            }
            if last.is_some_and(|l| seq <= l) {
                return Err(format!(
                    "{what}: datagram {seq} first published after {}",
                    last.unwrap()
                ));
            }
            last = Some(seq);
        }
    }
    let got = seen.len() as u64;
    if os.qos1 && os.policy == "block" && (got != offered || drops != 0) {
        // (Datagrams the input dropped are among those never seen.)
        let unseen: Vec<u64> = (0..offered).filter(|s| !seen.contains(s)).take(5).collect();
        return Err(format!(
            "{what}: {got} messages of {offered} delivered, {drops} drops (first never seen: {unseen:?})"
        ));
    }
    if got + drops < offered {
        return Err(format!(
            "{what}: {got} received + {drops} drops < {offered} delivered"
        ));
    }
    Ok(())
}

/// Subscribers' bytes toward the producer, and the idle watchdog: a channel's producers
/// received only its own subscribers' bytes, each subscriber's in order (checked as they
/// arrive), exactly as many as the relay counts as forwarded, nothing without
/// `commands = first`, and from one commander after another: once another subscriber's bytes
/// came, an earlier commander's never come again. No idle timeout without `idle_timeout`.
fn check_commands(w: &World, counters: &Counters) -> Result<(), String> {
    for (c, spec) in w.spec.iter().enumerate() {
        let (commands, idle_timeouts) = counters.talk[c];
        IDLE_TIMEOUTS.fetch_add(idle_timeouts, std::sync::atomic::Ordering::Relaxed);
        COMMAND_BYTES.fetch_add(commands, std::sync::atomic::Ordering::Relaxed);
        if !spec.idle && idle_timeouts != 0 {
            return Err(format!(
                "c{c}: {idle_timeouts} idle timeouts without idle_timeout"
            ));
        }
        let got: Vec<Pos> = w
            .kernel
            .conns
            .iter()
            .filter(|k| k.who == Some(Who::Input(c)))
            .flat_map(|k| k.received.iter().copied())
            .collect();
        if !spec.commands && !got.is_empty() {
            return Err(format!(
                "c{c}: producers received {} bytes without commands = first",
                got.len()
            ));
        }
        if got.len() as u64 != commands {
            return Err(format!(
                "c{c}: producers received {} command bytes, the relay counts {commands}",
                got.len()
            ));
        }
        let mut seen: Vec<usize> = Vec::new();
        for p in got {
            let from = talker_of(p).expect("checked by the kernel");
            if !matches!(w.kernel.conns[from].who, Some(Who::Output(oc, _)) if oc == c) {
                return Err(format!(
                    "c{c}: a producer received connection {from}'s bytes, not a subscriber of c{c}"
                ));
            }
            if seen.last() != Some(&from) {
                if seen.contains(&from) {
                    return Err(format!(
                        "c{c}: connection {from} commanded again after {:?}",
                        seen.last()
                    ));
                }
                seen.push(from);
            }
        }
    }
    Ok(())
}

/// A channel that cuts records: every output connection's stream, and every datagram, is
/// whole records from a boundary; a `block` collector got every byte the input read but those
/// it counted as partial.
fn check_records(w: &World, c: usize, spec: &ChanSpec, counters: &Counters) -> Result<(), String> {
    let r = &spec.records;
    let starts = &w.sources[c].starts;
    let chunks = stream_chunks(w, c);
    let all: u64 = chunks.iter().map(|x| x.1).sum();
    // Where the input's reading of a producer connection ended (no read went on from there).
    let begun: BTreeSet<Pos> = chunks.iter().map(|x| x.0).collect();
    let stops: BTreeSet<Pos> = chunks
        .iter()
        .map(|x| x.0 + x.1)
        .filter(|e| !begun.contains(e))
        .collect();
    for (o, os) in spec.outputs.iter().enumerate() {
        let conns: &[usize] = match os.kind {
            OutKind::Subscribers => &w.subs[c][o],
            OutKind::Collector => &w.collectors[c][o].1,
            OutKind::UdpDest => {
                for (i, d) in w
                    .kernel
                    .sinks
                    .get(&(c, o))
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let what = format!("c{c} output {o} datagram {i}");
                    if d.iter().all(|&p| r.in_preamble(starts, p)) {
                        continue;
                    }
                    check_runs(r, starts, &stops, d, false, &what)?;
                    let lines = d.iter().filter(|&&p| pattern(p) == b'\n').count();
                    if r.line.is_some() && lines != 1 {
                        return Err(format!("{what}: {lines} lines in one datagram"));
                    }
                }
                continue;
            }
            // MQTT outputs are on datagram channels only.
            OutKind::File | OutKind::Broker => continue,
        };
        let mut set = BTreeSet::new();
        if os.spool.is_some() {
            let all: Vec<Pos> = conns
                .iter()
                .flat_map(|&ci| w.kernel.conns[ci].received.iter().copied())
                .filter(|&p| !r.in_preamble(starts, p))
                .collect();
            // (Every connection begins with the preamble again.)
            sim::spoolfs::check_order_across(&all)
                .map_err(|e| format!("c{c} output {o} (spool): {e}"))?;
        }
        for &ci in conns {
            let got = &w.kernel.conns[ci].received;
            check_runs(
                r,
                starts,
                &stops,
                got,
                true,
                &format!("c{c} output {o} connection {ci}"),
            )?;
            // A subscriber gets the preamble first, whenever it joins.
            if let (OutKind::Subscribers, true, Some(&first)) =
                (os.kind, r.preamble > 0, got.first())
            {
                if !starts.contains(&first) {
                    return Err(format!(
                        "c{c} output {o} connection {ci}: a subscriber's first byte is position {first}, not a preamble (connections started at {starts:?})"
                    ));
                }
            }
            set.extend(got.iter().copied());
        }
        let partial = counters.partial[c];
        let skipped = counters.skipped[c][o];
        let spool_lost =
            os.spool.is_some() && counters.spooled[c][o] + counters.chans[c].2[o].0 > 0;
        if os.kind == OutKind::Collector
            && (os.policy == "block" || os.spool.is_some())
            && !spool_lost
            && set.len() as u64 + partial + skipped != all
        {
            let miss: Vec<Pos> = chunks
                .iter()
                .flat_map(|&(s, n)| s..s + n)
                .filter(|p| !set.contains(p))
                .take(8)
                .collect();
            return Err(format!(
                "c{c} output {o} (block collector): {} bytes received + {partial} partial + {skipped} skipped != {all} read (the first missing: {miss:?})",
                set.len()
            ));
        }
    }
    Ok(())
}

/// The chunks (start position, bytes) a stream channel's input read, one per buffer filled.
fn stream_chunks(w: &World, c: usize) -> Vec<(u64, u64)> {
    w.kernel
        .chunks
        .iter()
        .filter(|(ch, _, _)| *ch == c)
        .map(|&(_, s, n)| (s, n))
        .collect()
}

/// Seeds past the default 2,000 that once failed, run with every range that does not reach
/// them (each with what it found):
/// - 2178, 2852: a serial port closed while an earlier closed port's read was in flight
///   overwrote `Channel::replaced`, so that read landed after the next port's first (2852:
///   "connection 18 received position 236417 after 253427"; 2178: the late read taken for
///   a new connection's preamble);
/// - 3484: a collector's connection lost with the preamble partly sent, its queue not empty:
///   the rest was dropped uncounted and the next connection began without it ("a block
///   collector gets 6 bytes short").
const REGRESSIONS: &[u64] = &[2178, 2852, 3484];

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("SIM_SEED") {
        return vec![s.parse().expect("SIM_SEED is a number")];
    }
    let n: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut v: Vec<u64> = (1..=n).collect();
    v.extend(REGRESSIONS.iter().filter(|&&s| s > n));
    v
}

#[test]
fn simulation() {
    let seeds = seeds();
    let single = seeds.len() == 1;
    let mut failures = Vec::new();
    for &seed in &seeds {
        match std::panic::catch_unwind(|| run(seed)) {
            Ok(Ok(())) => {}
            Ok(Err(f)) => failures.push(f),
            Err(p) => {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(Failure {
                    seed,
                    what: format!("panic: {what}"),
                    trace: Vec::new(),
                });
            }
        }
        let most = std::env::var("SIM_MAX_FAILURES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        if failures.len() >= most {
            break;
        }
    }
    if !single && failures.is_empty() && seeds.len() >= 200 {
        let idle = IDLE_TIMEOUTS.load(std::sync::atomic::Ordering::Relaxed);
        let commands = COMMAND_BYTES.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "{} seeds: {idle} idle timeouts, {commands} command bytes forwarded",
            seeds.len()
        );
        assert!(
            idle > 0 && commands > 0,
            "the seeds never reach the idle watchdog or commands"
        );
    }
    for f in &failures {
        if single {
            for t in &f.trace {
                eprintln!("  {t}");
            }
        }
        eprintln!("seed {}: {}", f.seed, f.what);
        eprintln!(
            "replay: SIM_SEED={} cargo test --release --test sim",
            f.seed
        );
    }
    assert!(failures.is_empty(), "{} failing seed(s)", failures.len());
    eprintln!("simulation: {} seeds passed", seeds.len());
}
