//! Relay benchmark: ringrelay side by side with socat and a plain blocking-threads relay, on
//! loopback, in one run, printing throughput, relay CPU per GB and ratios to the peers.
//!
//! Owns: the bench cases and their measurement method. It never touches the daemon's internals:
//! every relay under test is a separate process (ringrelay, socat, or this bench binary
//! re-executed as the blocking relay), and its CPU time is what `getrusage(RUSAGE_CHILDREN)`
//! gains when that one child is reaped, so it covers every thread of the relay (io-wq and
//! SQPOLL threads included) and nothing else. Sources and sinks are threads of the bench.
//!
//! Cases:
//! * (a) TCP 1-to-1 bulk: a writer pushes `TCP_BYTES` through the relay (input `tcp-listen://`,
//!   output `tcp://` to a counting sink). Gbit/s from the source's connect to the sink's last
//!   byte; relay CPU seconds per GB (10^9 bytes).
//! * (b) UDP 1-to-4 fan-out: one sender sends `UDP_DATAGRAMS` datagrams of 1 KiB as fast as it
//!   can; four receivers count. Delivered datagrams/s (all four outputs together) and drop %.
//!   socat has no fan-out, so it sits this case out.
//! * (b2) the same fan-out with the sender paced at `UDP_PACED_RATE` datagrams/s, a load every
//!   relay should carry without drops.
//! * (c) ringrelay with `sqpoll = on` and `sqpoll = off`, both in (a) and (b).
//! * (d) a decimating channel next to a plain one: two channels of i16le x4 samples, 1-to-1
//!   each, the same UDP load into both; the decimating one also runs
//!   `decimate = minmax:10,100,1000` into regions under a temporary `shm_dir`. At max rate and
//!   paced at `DECIMATE_PACED_RATE`; delivered datagrams/s, relay CPU per datagram, and the
//!   ratio decimating / plain. A decimating cell counts as failed unless its regions hold the
//!   decimated frames.
//! * (e) TCP 1-to-1 with `buffer_size = 256KiB` next to the default 64KiB (`sqpoll = off`).
//! * (f) TCP 1-to-3 fan-out: the source pushes 1 GiB (quick: 128 MiB) into a channel with three
//!   `tcp://` outputs; ringrelay with `splice = on` (tee) and `splice = off` (buffers) against
//!   the blocking relay (a thread per output). Gbit/s per output, to the last sink's last
//!   byte; relay CPU seconds per GB of input.
//! * (i) TCP fan-out to 8 and 64 subscribers (`tcp://` outputs the relay dials): ringrelay's
//!   tee path and buffer path against the blocking relay with a thread per subscriber. Gbit/s
//!   per subscriber, relay CPU seconds per delivered GB (input × subscribers) and the ratios
//!   ([`fanout_case`]); 2 GiB delivered per run (quick) or 8 GiB (full).
//! * (h) TCP with 8 and 64 channels 1-to-1 at once: aggregate Gbit/s, relay CPU per GB, and
//!   the slowest channel's rate over the mean ([`channels_case`]); ringrelay on the splice and
//!   buffer paths against the thread-per-connection copy relay and the floor.
//! * The floor: a kernel-only relay (blocking splice(2) socket -> 1 MiB pipe -> socket, a
//!   thread per connection) is a peer in (a) and (h), the least CPU a relay can spend per byte.
//! * (l) UDP latency added at 10,000 datagrams/s of 1400 B, p50/p99/p99.9 against the direct
//!   path ([`latency_case`]); only when named in `RELAY_BENCH_CASES`.
//! * (g) a spooling `tcp://` output against the plain path: MB/s while records go to disk
//!   (collector away) and while they are replayed, and their ratios to the plain path
//!   ([`spool_case`]).
//!
//! Run: `cargo bench --bench relay` (3 runs per cell, medians) or with `RELAY_BENCH_QUICK=1`
//! (smaller volumes, 1 run: for CI). `RELAY_BENCH_CASES=a,e` runs only those cases
//! (a, b, b2, b3, d, d2, e, f, g, h, i); `RELAY_BENCH_VERBOSE=1` prints each relay's log (its counters at
//! exit). `RELAY_BENCH_TCP_OUTPUT` / `RELAY_BENCH_UDP_OUTPUT` add URL options to ringrelay's
//! tcp / udp outputs (`zerocopy=on`, `gso=off`). `RELAY_BENCH_ONLY=socat,blocking` restricts the relays by
//! name prefix while developing.
//!
//! Layout: this file holds the constants and `main` (which cases run, in what order); the relays
//! under test and their spawning are in `relay_cases/relays.rs`, the TCP and UDP runs in
//! `relay_cases/tcp.rs` and `relay_cases/udp.rs`, medians and tables in `relay_cases/table.rs`,
//! the blocking peer relay in `relay_cases/blocking.rs`, and cases (g), (h), (i) and (l) in their
//! own modules there.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[path = "relay_cases/spool.rs"]
mod spool_case;

#[path = "relay_cases/channels.rs"]
mod channels_case;

#[path = "relay_cases/latency.rs"]
mod latency_case;

#[path = "relay_cases/fanout.rs"]
mod fanout_case;

#[path = "relay_cases/blocking.rs"]
mod blocking;

#[path = "relay_cases/relays.rs"]
mod relays;
use relays::*;

#[path = "relay_cases/table.rs"]
mod table;
use table::*;

#[path = "relay_cases/tcp.rs"]
mod tcp;
use tcp::*;

#[path = "relay_cases/udp.rs"]
mod udp;
use udp::*;

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use socket2::{Domain, Protocol, Socket, Type};

/// Marks warm-up datagrams, which receivers ignore.
const WARMUP_SEQ: u64 = u64::MAX;
const DATAGRAM: usize = 1024;
const RCVBUF: usize = 4 << 20;

/// The receive buffer of every relay's UDP input: `RELAY_BENCH_RCVBUF` (a size such as
/// `16MiB`), or RCVBUF. Each relay asks for the same with the same privileges (SO_RCVBUF,
/// then SO_RCVBUFFORCE), so none has a larger one than another.
fn input_rcvbuf() -> usize {
    std::env::var("RELAY_BENCH_RCVBUF")
        .ok()
        .and_then(|v| ringrelay::config::units::parse_size(&v).ok())
        .map_or(RCVBUF, |n| n as usize)
}
/// Input rate of the paced UDP case, datagrams per second.
const UDP_PACED_RATE: f64 = 25_000.0;
/// Input rates of case (b3), datagrams/s.
const UDP_SWEEP_RATES: &[f64] = &[50_000.0, 100_000.0, 150_000.0, 200_000.0];
/// Input rate of the paced decimation case, datagrams per second over both channels.
const DECIMATE_PACED_RATE: f64 = 40_000.0;
/// Channels of the decimation case, and what its decimating channels run. Every datagram of
/// `DATAGRAM` bytes is 128 whole frames of i16le x4.
const DECIMATE_CHANNELS: usize = 2;
const DECIMATE_KEYS: &str = "sample = i16le\ninterleave = 4\ndecimate = minmax:10,100,1000\n";
const DECIMATE_FIRST_FACTOR: u64 = 10;
const FRAME_BYTES: u64 = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--blocking-relay") {
        std::process::exit(blocking::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("--pairs-relay") {
        std::process::exit(channels_case::pairs_main(&args[2..]));
    }
    let quick = std::env::var("RELAY_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
    let only: Option<Vec<String>> = std::env::var("RELAY_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let (runs, tcp_bytes, udp_count, udp_paced_count, dec_count, dec_paced_count) = if quick {
        (1, 256u64 << 20, 50_000u64, 20_000u64, 100_000u64, 40_000u64)
    } else {
        (3, 2u64 << 30, 200_000u64, 50_000u64, 400_000u64, 120_000u64)
    };
    let limit = Duration::from_secs(if quick { 20 } else { 120 });
    // Case (f) moves this much input, three times over.
    let fan_bytes = if quick { 128u64 << 20 } else { 1u64 << 30 };
    let cases: Option<Vec<String>> = std::env::var("RELAY_BENCH_CASES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let case = |c: &str| cases.as_ref().is_none_or(|v| v.iter().any(|x| x == c));
    let selected = |r: &Relay| {
        only.as_ref()
            .is_none_or(|o| o.iter().any(|p| r.name().starts_with(p.as_str())))
    };

    let socat = have_socat();
    let ring = |sqpoll| Relay::Ringrelay {
        sqpoll,
        buffer: None,
        decimate: false,
        splice: false,
    };
    let mut relays = vec![
        ring("off"),
        ring("on"),
        Relay::Ringrelay {
            sqpoll: "off",
            buffer: Some(256 << 10),
            decimate: false,
            splice: false,
        },
        Relay::Ringrelay {
            sqpoll: "off",
            buffer: None,
            decimate: false,
            splice: true,
        },
        Relay::Socat { buf: 8192 },
        Relay::Socat { buf: 1 << 20 },
        Relay::Blocking { buf: 64 << 10 },
        Relay::Blocking { buf: 1 << 20 },
        Relay::Floor,
        Relay::Loop,
    ];
    relays.retain(selected);
    let shm_base = std::path::Path::new("/dev/shm");
    let shm_dir = if shm_base.is_dir() {
        shm_base
    } else {
        std::path::Path::new("/tmp")
    }
    .join(format!("ringrelay-bench-{}", std::process::id()));
    let pinned = std::env::var("RELAY_BENCH_PIN").is_ok_and(|v| v == "1");
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let pin_cpu = (pinned && cpus >= 2).then_some(0);
    if let Some(cpu) = pin_cpu {
        // The bench's threads (this one and all it starts) on every CPU but the relay's.
        let others: Vec<usize> = (0..cpus).filter(|&c| c != cpu).collect();
        set_affinity(Pid::from_raw(0), &others).expect("pin the bench");
    }
    let mut b = Bench {
        pin: pin_cpu,
        ringrelay: env!("CARGO_BIN_EXE_ringrelay").to_string(),
        tmp: std::env::temp_dir(),
        shm_dir,
        seq: 0,
    };

    println!(
        "ringrelay relay bench ({}), loopback",
        if quick { "quick" } else { "full" }
    );
    println!("machine: {}", machine());
    match b.pin {
        Some(cpu) => println!(
            "pinned: the relay under test on CPU {cpu} alone, sources and sinks on the others"
        ),
        None => println!("unpinned: relays, sources and sinks share every CPU"),
    }
    if fan_out_datagram() != DATAGRAM {
        println!(
            "UDP fan-out cases (b, b2, b3): {} B datagrams",
            fan_out_datagram()
        );
    }
    println!(
        "{} run(s) per cell, medians; TCP {} MiB per run, UDP {} (paced: {}) datagrams of {} B per run, \
         decimation {} (paced: {})",
        runs,
        tcp_bytes >> 20,
        udp_count,
        udp_paced_count,
        fan_out_datagram(),
        dec_count,
        dec_paced_count
    );

    let kind = |r: &Relay| match r {
        Relay::Ringrelay { .. } => "ringrelay",
        Relay::Socat { .. } => "socat",
        Relay::Blocking { .. } => "blocking",
        Relay::Floor => "floor",
        Relay::Loop => "loop",
    };
    let mut tcp_rows = Vec::new();
    // The loop relays datagrams only.
    let tcp_relays = relays.iter().filter(|r| !matches!(r, Relay::Loop));
    for r in tcp_relays.filter(|_| case("a")) {
        let result = match (r, &socat) {
            (Relay::Socat { .. }, Err(e)) => Err(e.clone()),
            _ => measure(runs, || tcp_run(&mut b, r, tcp_bytes, limit)),
        };
        tcp_rows.push(Row {
            name: r.name(),
            kind: kind(r),
            result,
        });
    }
    print_table_if(
        "(a) TCP 1-to-1 bulk",
        "Gbit/s",
        "CPU s/GB",
        false,
        &tcp_rows,
    );

    // (f): TCP 1-to-3 fan-out: ringrelay's tee splice path against its buffer path and the
    // blocking relay's thread per output.
    let mut fan_rows = Vec::new();
    let fan_relays = relays.iter().filter(|r| match r {
        Relay::Ringrelay { sqpoll, buffer, .. } => *sqpoll == "off" && buffer.is_none(),
        Relay::Blocking { .. } => true,
        Relay::Socat { .. } | Relay::Floor | Relay::Loop => false,
    });
    for r in fan_relays.filter(|_| case("f")) {
        fan_rows.push(Row {
            name: r.name(),
            kind: kind(r),
            result: measure(runs, || tcp_fan_run(&mut b, r, fan_bytes, 3, limit)),
        });
    }
    print_table_if(
        "(f) TCP 1-to-3 fan-out (Gbit/s per output; CPU s per GB of input)",
        "Gbit/s/output",
        "CPU s/GB",
        false,
        &fan_rows,
    );

    // (i): TCP fan-out to 8 and 64 subscribers: tee, buffers, and a thread per subscriber.
    let mut fanout_failed = 0;
    if case("i") {
        let fan_relays: Vec<(&Relay, &'static str)> = relays
            .iter()
            .filter(|r| match r {
                Relay::Ringrelay {
                    sqpoll,
                    buffer,
                    decimate,
                    ..
                } => *sqpoll == "off" && buffer.is_none() && !decimate,
                Relay::Blocking { buf } => *buf == 1 << 20,
                Relay::Socat { .. } | Relay::Floor | Relay::Loop => false,
            })
            .map(|r| (r, kind(r)))
            .collect();
        for n in fanout_case::COUNTS {
            fanout_failed += fanout_case::run_and_print(&mut b, &fan_relays, n, runs, quick, limit);
        }
    }

    // (h): many TCP channels at once: aggregate throughput, CPU, and the slowest channel.
    let mut channels_failed = 0;
    if case("h") {
        let total = if quick { 256u64 << 20 } else { 2u64 << 30 };
        let chan_relays: Vec<&Relay> = relays
            .iter()
            .filter(|r| match r {
                Relay::Ringrelay {
                    sqpoll,
                    buffer,
                    decimate,
                    ..
                } => *sqpoll == "off" && buffer.is_none() && !decimate,
                Relay::Blocking { buf } => *buf == 1 << 20,
                Relay::Floor => true,
                Relay::Socat { .. } | Relay::Loop => false,
            })
            .collect();
        for n in channels_case::COUNTS {
            let per = total / n as u64;
            let rows: Vec<_> = chan_relays
                .iter()
                .map(|r| {
                    let res = channels_case::measure(runs, || {
                        channels_case::run(&mut b, r, n, per, limit)
                    });
                    if r.name().starts_with("ringrelay") && res.is_err() {
                        channels_failed += 1;
                    }
                    (r.name(), kind(r), res)
                })
                .collect();
            channels_case::print(n, per, &rows);
        }
    }

    // (l): the latency a relay adds to UDP at a moderate rate (not in the default set: it
    // wants a quiet machine; RELAY_BENCH_CASES=l).
    if cases.as_ref().is_some_and(|v| v.iter().any(|x| x == "l")) {
        let count = if quick { 5_000 } else { 20_000 };
        match latency_case::direct(count) {
            Ok(direct) => {
                let rows: Vec<_> = relays
                    .iter()
                    .filter(|r| match r {
                        Relay::Ringrelay {
                            buffer, decimate, ..
                        } => buffer.is_none() && !decimate,
                        Relay::Socat { buf } => *buf == 8192 && socat.is_ok(),
                        Relay::Blocking { buf } => *buf == 64 << 10,
                        Relay::Loop => true,
                        Relay::Floor => false,
                    })
                    .filter(|r| !matches!(r, Relay::Ringrelay { splice: true, .. }))
                    .map(|r| (r.name(), latency_case::through(&mut b, r, count)))
                    .collect();
                latency_case::print("UDP", count, &direct, &rows);
            }
            Err(e) => println!("\n(l) UDP latency: the direct path failed: {e}"),
        }
        // The same with TCP: the relay dials the sink (every relay), and ringrelay's
        // tcp-listen:// output with the sink as its subscriber.
        match latency_case::tcp_direct(count) {
            Ok(direct) => {
                let mut rows = Vec::new();
                for r in relays.iter().filter(|r| match r {
                    Relay::Ringrelay {
                        buffer,
                        decimate,
                        splice,
                        ..
                    } => buffer.is_none() && !decimate && !splice,
                    Relay::Socat { buf } => *buf == 8192 && socat.is_ok(),
                    Relay::Blocking { buf } => *buf == 64 << 10,
                    Relay::Floor => true,
                    Relay::Loop => false,
                }) {
                    rows.push((r.name(), latency_case::tcp_through(&mut b, r, count, false)));
                    if matches!(r, Relay::Ringrelay { .. }) {
                        rows.push((
                            format!("{} subscriber", r.name()),
                            latency_case::tcp_through(&mut b, r, count, true),
                        ));
                    }
                }
                latency_case::print("TCP", count, &direct, &rows);
            }
            Err(e) => println!("\n(l) TCP latency: the direct path failed: {e}"),
        }
    }

    if case("g") {
        // Case (g): one run per cell set; 128 MiB (quick: 32 MiB) of 100-byte lines.
        let bytes = if quick { 32u64 << 20 } else { 128u64 << 20 };
        let mut samples = Vec::new();
        for _ in 0..runs {
            match spool_case::run(&b.ringrelay, &b.tmp, bytes, limit) {
                Ok(s) => samples.push(s),
                Err(e) => println!("(g) spool: FAILED: {e}"),
            }
        }
        if !samples.is_empty() {
            let med =
                |f: fn(&spool_case::SpoolSample) -> f64| median(samples.iter().map(f).collect());
            let (plain, spooling, replaying) =
                (med(|s| s.plain), med(|s| s.spooling), med(|s| s.replaying));
            println!(
                "\n(g) spool, TCP lines of 100 B, {} MiB (MB/s of records; ratio to plain)",
                bytes >> 20
            );
            println!("  plain (no spool)        {plain:8.1} MB/s");
            println!(
                "  spooling (to disk)      {spooling:8.1} MB/s  x{:.2}",
                spooling / plain
            );
            println!(
                "  replaying (from disk)   {replaying:8.1} MB/s  x{:.2}",
                replaying / plain
            );
            println!(
                "  records dropped by the spool while spooling (disk behind): {:.1} %",
                100.0 * med(|s| s.dropped)
            );
        }
    }

    let mut udp_rows = Vec::new();
    // socat cannot fan out; the blocking relay's buffer size does not matter for datagrams.
    let udp_relays = relays.iter().filter(|r| {
        !matches!(r, Relay::Socat { .. } | Relay::Floor)
            && !matches!(r, Relay::Blocking { buf } if *buf != 64 << 10)
            // The 256KiB and splice rows are about streams.
            && !matches!(r, Relay::Ringrelay { buffer: Some(_), .. })
            && !matches!(r, Relay::Ringrelay { splice: true, .. })
    });
    let udp_relays: Vec<&Relay> = udp_relays.collect();
    let fan_size = fan_out_datagram();
    let fan_out = |count, pace| UdpLoad {
        channels: 1,
        outs: 4,
        count,
        pace,
        size: fan_size,
    };
    for r in udp_relays.iter().filter(|_| case("b")) {
        udp_rows.push(Row {
            name: r.name(),
            kind: kind(r),
            result: measure(runs, || udp_run(&mut b, r, fan_out(udp_count, None), limit)),
        });
    }
    print_table_if(
        "(b) UDP 1-to-4 fan-out, 1 KiB datagrams at max rate (socat: no fan-out)",
        "delivered/s",
        "CPU us/dgram",
        true,
        &udp_rows,
    );
    let mut paced_rows = Vec::new();
    for r in udp_relays.iter().filter(|_| case("b2")) {
        paced_rows.push(Row {
            name: r.name(),
            kind: kind(r),
            result: measure(runs, || {
                udp_run(
                    &mut b,
                    r,
                    fan_out(udp_paced_count, Some(UDP_PACED_RATE)),
                    limit,
                )
            }),
        });
    }
    print_table_if(
        &format!(
            "(b2) the same fan-out paced at {} datagrams/s in (a sustainable load: drops should be 0)",
            UDP_PACED_RATE
        ),
        "delivered/s",
        "CPU us/dgram",
        true,
        &paced_rows,
    );
    // (b3) The same fan-out paced at rising rates: where each relay starts to lose datagrams.
    // At max rate (b) the sender takes whatever CPU the relay leaves it, so drop % there
    // mostly says how much the relay slows the sender down; a paced sweep says how much load
    // a relay carries without loss.
    let mut sweep_rows: Vec<(f64, Vec<Row>)> = Vec::new();
    if case("b3") {
        // RELAY_BENCH_SWEEP=100000,200000 replaces the rates; FROM:TO:STEP is a range.
        let rates: Vec<f64> = std::env::var("RELAY_BENCH_SWEEP")
            .ok()
            .map(|v| sweep_rates(&v))
            .unwrap_or_else(|| UDP_SWEEP_RATES.to_vec());
        for &rate in &rates {
            let count = (rate * if quick { 0.5 } else { 1.0 }) as u64;
            let mut rows = Vec::new();
            for r in &udp_relays {
                rows.push(Row {
                    name: r.name(),
                    kind: kind(r),
                    result: measure(runs, || {
                        udp_run(&mut b, r, fan_out(count, Some(rate)), limit)
                    }),
                });
            }
            sweep_rows.push((rate, rows));
        }
        println!("\n(b3) the same fan-out paced at rising rates in (1 s of load each): drop %");
        print!("  {:<32}", "relay");
        for (rate, _) in &sweep_rows {
            print!(" {:>9}", format!("{}k/s", rate / 1000.0));
        }
        println!();
        for (i, r) in udp_relays.iter().enumerate() {
            print!("  {:<32}", r.name());
            for (_, rows) in &sweep_rows {
                match &rows[i].result {
                    Ok(s) => print!(" {:>9.2}", s.drop),
                    Err(_) => print!(" {:>9}", "-"),
                }
            }
            println!();
        }
        // The highest rate each relay carried with less than 0.1% loss, below its first
        // lossy rate (item of comparison for per-core efficiency).
        for (i, r) in udp_relays.iter().enumerate() {
            let mut best = None;
            for (rate, rows) in &sweep_rows {
                match &rows[i].result {
                    Ok(s) if s.drop < 0.1 => best = Some(*rate),
                    _ => break,
                }
            }
            match best {
                Some(b) => println!("  {}: lossless up to {}k/s", r.name(), b / 1000.0),
                None => println!("  {}: lossy from the first rate", r.name()),
            }
        }
        print!("  {:<32}", "  CPU us/dgram (first relay)");
        for (_, rows) in &sweep_rows {
            match &rows[0].result {
                Ok(s) => print!(" {:>9.3}", s.cpu),
                Err(_) => print!(" {:>9}", "-"),
            }
        }
        println!();
    }
    println!(
        "\n(c) sqpoll: compare the ringrelay sqpoll=on and sqpoll=off rows above; on a 2-core box \
         the SQPOLL thread competes with the load generator."
    );

    // (d) and (e) compare ringrelay with itself, with sqpoll = off: the CPU of a spinning
    // SQPOLL thread would hide the difference being measured.
    let plain = ring("off");
    let decimating = Relay::Ringrelay {
        sqpoll: "off",
        buffer: None,
        decimate: true,
        splice: false,
    };
    let mut dec_rows = Vec::new();
    for (pace, count, title) in [
        (
            None,
            dec_count,
            format!(
                "(d) decimating channel vs plain: {DECIMATE_CHANNELS} UDP channels 1-to-1, i16le x4, \
                 1 KiB datagrams at max rate; minmax:10,100,1000 into shm"
            ),
        ),
        (
            Some(DECIMATE_PACED_RATE),
            dec_paced_count,
            format!("(d2) the same paced at {DECIMATE_PACED_RATE} datagrams/s in (drops should be 0)"),
        ),
    ] {
        let load = UdpLoad {
            channels: DECIMATE_CHANNELS,
            outs: 1,
            count,
            pace,
            size: DATAGRAM,
        };
        let mut rows = Vec::new();
        let name = if pace.is_none() { "d" } else { "d2" };
        for (r, k) in [(&plain, "reference"), (&decimating, "ringrelay")] {
            if !selected(r) || !case(name) {
                continue;
            }
            rows.push(Row {
                name: r.name(),
                kind: k,
                result: measure(runs, || udp_run(&mut b, r, load, limit)),
            });
        }
        if rows.is_empty() {
            continue;
        }
        print_table(
            &title,
            "delivered/s",
            "CPU us/dgram",
            true,
            &rows,
        );
        dec_rows.extend(rows);
    }
    let _ = std::fs::remove_dir_all(&b.shm_dir);

    let mut buf_rows = Vec::new();
    let big = Relay::Ringrelay {
        sqpoll: "off",
        buffer: Some(256 << 10),
        decimate: false,
        splice: false,
    };
    if selected(&big) && case("e") {
        // The default-buffer row is (a)'s when it was measured there.
        let reference = tcp_rows
            .iter()
            .find(|r| r.name == plain.name())
            .map(|r| r.result.clone())
            .unwrap_or_else(|| measure(runs, || tcp_run(&mut b, &plain, tcp_bytes, limit)));
        buf_rows.push(Row {
            name: format!("{} (64KiB)", plain.name()),
            kind: "reference",
            result: reference,
        });
        buf_rows.push(Row {
            name: big.name(),
            kind: "ringrelay",
            result: measure(runs, || tcp_run(&mut b, &big, tcp_bytes, limit)),
        });
        print_table(
            "(e) TCP 1-to-1 bulk, buffer_size = 256KiB vs the default 64KiB",
            "Gbit/s",
            "CPU s/GB",
            false,
            &buf_rows,
        );
    }

    // The temporary configs of this run.
    for seq in 1..=b.seq {
        let _ = std::fs::remove_file(
            b.tmp
                .join(format!("relay-bench-{}-{seq}.conf", std::process::id())),
        );
    }
    let failed = tcp_rows
        .iter()
        .chain(sweep_rows.iter().flat_map(|(_, r)| r))
        .chain(&udp_rows)
        .chain(&paced_rows)
        .chain(&dec_rows)
        .chain(&buf_rows)
        .filter(|r| r.name.starts_with("ringrelay") && r.result.is_err())
        .count()
        + channels_failed
        + fanout_failed;
    if failed > 0 {
        eprintln!("relay bench: {failed} ringrelay cell(s) could not be measured");
        std::process::exit(1);
    }
}
