//! The deterministic simulation: the real engine (`ringrelay::engine::Engine`) driven by a
//! simulated kernel (`sim/kernel.rs`) and simulated peers, all chosen by one seed, with the
//! invariants checked after every step and at the end.
//!
//! `SIM_SEEDS=N` runs seeds 1..=N (2,000 by default); `SIM_SEED=S` replays seed S alone and
//! prints its trace. A failing seed prints the one line that replays it.
//!
//! This file runs the seeds (the step loop, `run`, and the test); the random configuration
//! and the peers are `sim/world.rs`'s, the invariants `sim/checks.rs`'s, the kernel
//! `sim/kernel.rs`'s.
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
//!     16 and 17 planted again after the simulation was split into modules (2026-12-03):
//!     the same first seeds and messages.
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
    pub mod checks;
    pub mod files;
    pub mod kernel;
    pub mod memory;
    pub mod records;
    pub mod rng;
    pub mod spoolfs;
    pub mod world;
}

use ringrelay::config::parse_str;
use ringrelay::engine::io::Effects;
use ringrelay::engine::{Engine, Io};
use sim::checks::*;
use sim::kernel::Kernel;
use sim::memory::SimMemory;
use sim::world::*;
use std::time::{Duration, Instant};

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
