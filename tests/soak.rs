//! Soak test: the real release binary under mixed churn for `SOAK_MINUTES` (default 30), with
//! every byte checked and the daemon's memory and descriptors watched. Ignored by default:
//!
//! ```sh
//! SOAK_MINUTES=30 cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! `SOAK_SEED=N` replays the peers' choices (the seed is printed at the start);
//! `SOAK_FEATURES=baseline` runs the daemon with the Linux 5.10 feature set.
//!
//! Five channels on loopback, each with its own traffic (`soak/peers.rs`), every receiver
//! checking what it gets as it arrives (`soak/streams.rs`):
//! * `blk`: a TCP producer that connects, sends 1 byte to 4 MiB and leaves, over and over;
//!   `on_slow=block` subscribers (one slow) that join and leave; a collector (`block`) that
//!   hangs up now and then and sometimes stops listening. Both get the producer's bytes with no
//!   gap at all, within and across producer connections and the collector's redials.
//! * `tee`: the same producer shape into two collectors only: the splice and tee path, held to
//!   the same exactness.
//! * `lossy`: a TCP producer, `on_slow=drop` subscribers (bytes may be missing, but what
//!   arrives is in place and in order), `on_slow=disconnect` subscribers (exact until they are
//!   disconnected) and a `drop` collector that resets its connections.
//! * `dgram`: a UDP input of sequence-numbered datagrams, `framing = u32be`: subscribers that
//!   may be disconnected as slow, a `block` collector, a UDP destination and a rotating file.
//!   The collector sees every datagram the relay took in; each subscriber connection must hold
//!   an unbroken run of those.
//! * `churn`: a UDP channel that reloads add, change (an extra output) and remove.
//!
//! Meanwhile: SIGHUP every 10 s (each summary line checked), SIGUSR1 every 3 s, and once a
//! minute the daemon's RSS and descriptor count. At the end the sources stop, the collectors
//! catch up, the counters are compared with what the peers sent and received, the curves are
//! printed and written to `target/soak-curves.csv` (the daemon's log to
//! `target/soak-daemon.log`), and SIGTERM must end the daemon with exit code 0 within its
//! shutdown_timeout.

mod common;
mod soak {
    pub mod daemon;
    pub mod peers;
    pub mod streams;
}

use common::*;
use nix::sys::signal::Signal::{SIGHUP, SIGUSR1};
use soak::daemon::*;
use soak::peers::*;
use soak::streams::{ConnLengths, Gaps, SeqSet};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The daemon's shutdown_timeout in the soak config; SIGTERM must end it within this plus
/// [`EXIT_SLACK`] (process teardown on two cores shared with other builds).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
const EXIT_SLACK: Duration = Duration::from_secs(3);

/// Stream ids: what each channel's data are generated from, so a byte that strays into
/// another channel fails its check.
const BLK: u32 = 1;
const TEE: u32 = 2;
const LOSSY: u32 = 3;
const DGRAM: u32 = 4;
const CHURN: u32 = 5;

/// The test's own endpoints (fixed for the run) and the relay's (picked free at start).
#[derive(Clone, Default)]
struct Ports {
    // The relay's inputs and subscriber outputs.
    blk_in: u16,
    blk_sub: u16,
    tee_in: u16,
    lossy_in: u16,
    lossy_drop: u16,
    lossy_disc: u16,
    dgram_in: u16,
    dgram_sub: u16,
    churn_in: u16,
    churn_sub: u16,
    // The test's collectors and UDP sinks.
    blk_col: u16,
    tee_col1: u16,
    tee_col2: u16,
    lossy_col: u16,
    dgram_col: u16,
    dgram_udp: u16,
    churn_udp: u16,
}

fn l(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The config: the four steady channels always, the `churn` channel in `variant` 1 (one
/// output) and 2 (a UDP output more); 0 has no `churn`.
fn config(dir: &TempDir, p: &Ports, variant: u8) -> String {
    let mut c = format!(
        "[global]\nshm_dir = {}\nshutdown_timeout = {}s\nlog_level = info\n\n",
        dir.join("shm").display(),
        SHUTDOWN_TIMEOUT.as_secs()
    );
    c += &format!(
        "[channel blk]\ninput = tcp-listen://127.0.0.1:{}\n\
         output = tcp-listen://127.0.0.1:{} on_slow=block\noutput = tcp://127.0.0.1:{}\n\n",
        p.blk_in, p.blk_sub, p.blk_col
    );
    c += &format!(
        "[channel tee]\ninput = tcp-listen://127.0.0.1:{}\n\
         output = tcp://127.0.0.1:{}\noutput = tcp://127.0.0.1:{}\n\n",
        p.tee_in, p.tee_col1, p.tee_col2
    );
    c += &format!(
        "[channel lossy]\ninput = tcp-listen://127.0.0.1:{}\n\
         output = tcp-listen://127.0.0.1:{} on_slow=drop max_backlog=256KiB\n\
         output = tcp-listen://127.0.0.1:{} on_slow=disconnect max_backlog=512KiB\n\
         output = tcp://127.0.0.1:{} on_slow=drop max_backlog=1MiB\n\n",
        p.lossy_in, p.lossy_drop, p.lossy_disc, p.lossy_col
    );
    c += &format!(
        "[channel dgram]\ninput = udp://127.0.0.1:{}\nframing = u32be\n\
         output = tcp-listen://127.0.0.1:{} max_backlog=256KiB\n\
         output = tcp://127.0.0.1:{}\noutput = udp://127.0.0.1:{}\n\
         output = file://{} rotate=4MiB keep=2\n\n",
        p.dgram_in,
        p.dgram_sub,
        p.dgram_col,
        p.dgram_udp,
        dir.join("dgram.raw").display()
    );
    if variant > 0 {
        c += &format!(
            "[channel churn]\ninput = udp://127.0.0.1:{}\nframing = u32be\n\
             output = tcp-listen://127.0.0.1:{}\n",
            p.churn_in, p.churn_sub
        );
    }
    if variant == 2 {
        c += &format!("output = udp://127.0.0.1:{}\n", p.churn_udp);
    }
    c
}

/// Writes the config of `to`, sends SIGHUP and checks the summary against the change from
/// `from`: the four steady channels must always be unchanged.
fn reload(relay: &Relay, dir: &TempDir, p: &Ports, from: u8, to: u8) -> Result<(), String> {
    std::fs::write(dir.join("ringrelay.conf"), config(dir, p, to)).expect("write config");
    let done = summaries(relay);
    relay.signal(SIGHUP);
    if !wait_until(SETTLE, || summaries(relay) > done) {
        return Err(format!("no reload summary within {SETTLE:?} of SIGHUP"));
    }
    let want = match (from, to) {
        (a, b) if a == b => format!(
            "{} unchanged, 0 new, 0 restarted, 0 removed",
            4 + (a > 0) as u8
        ),
        (0, _) => "4 unchanged, 1 new, 0 restarted, 0 removed".into(),
        (_, 0) => "4 unchanged, 0 new, 0 restarted, 1 removed".into(),
        _ => "4 unchanged, 0 new, 1 restarted, 0 removed".into(),
    };
    let log = relay.log();
    let line = log
        .lines()
        .filter(|l| l.contains("reload: ") && l.contains(" unchanged, "))
        .nth(done)
        .unwrap_or_default();
    if line.contains(&want) {
        Ok(())
    } else {
        Err(format!(
            "reload {from} -> {to}: '{line}', expected '{want}'"
        ))
    }
}

// ------------------------------------------------------------------------------------------------
// The run

fn join_all(threads: Vec<(String, JoinHandle<()>)>, limit: Duration) -> Vec<String> {
    let end = Instant::now() + limit;
    let mut stuck = Vec::new();
    for (name, t) in threads {
        if wait_until(end.saturating_duration_since(Instant::now()), || {
            t.is_finished()
        }) {
            if t.join().is_err() {
                stuck.push(format!("{name} panicked"));
            }
        } else {
            stuck.push(format!("{name} did not stop within {limit:?}"));
        }
    }
    stuck
}

/// Ends the run early if a peer reported a failure, with everything the peers said.
fn assert_no_failures(soak: &Soak, when: &str) {
    let f = soak.failures();
    assert!(f.is_empty(), "soak failed {when}:\n  {}", f.join("\n  "));
}

#[test]
#[ignore]
fn soak() {
    let minutes: u64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .max(1);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64);
    let features = match std::env::var("SOAK_FEATURES").as_deref() {
        Ok("baseline") => Features::Baseline,
        _ => Features::Auto,
    };
    eprintln!("soak: {minutes} minutes, SOAK_SEED={seed}, features {features:?}");
    let dir = TempDir::new("soak");
    let soak = Arc::new(Soak::default());

    // The test's own endpoints first: the relay dials and sends to them.
    let listener = || TcpListener::bind("127.0.0.1:0").expect("bind collector");
    let (blk_col, tee_col1, tee_col2, lossy_col, dgram_col) =
        (listener(), listener(), listener(), listener(), listener());
    let dgram_udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp sink");
    let churn_udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp sink");
    let port = |l: &TcpListener| l.local_addr().unwrap().port();
    let fixed = Ports {
        blk_col: port(&blk_col),
        tee_col1: port(&tee_col1),
        tee_col2: port(&tee_col2),
        lossy_col: port(&lossy_col),
        dgram_col: port(&dgram_col),
        dgram_udp: dgram_udp.local_addr().unwrap().port(),
        churn_udp: churn_udp.local_addr().unwrap().port(),
        ..Ports::default()
    };
    let (mut relay, p) = Relay::start(features, &dir, || {
        let t = || free_tcp_port(LOCALHOST4);
        let u = || free_udp_port(LOCALHOST4);
        let p = Ports {
            blk_in: t(),
            blk_sub: t(),
            tee_in: t(),
            lossy_in: t(),
            lossy_drop: t(),
            lossy_disc: t(),
            dgram_in: u(),
            dgram_sub: t(),
            churn_in: u(),
            churn_sub: t(),
            ..fixed.clone()
        };
        (config(&dir, &p, 0), p)
    });
    let pid = relay.pid();

    // Collectors and sinks. The producers' lengths exist before the producers: the collectors
    // of blk and tee check their streams exactly from the first byte.
    let (blk_len, tee_len, lossy_len): (Arc<ConnLengths>, Arc<ConnLengths>, Arc<ConnLengths>) =
        Default::default();
    let exact = |l: &Arc<ConnLengths>| Gaps::Exact(l.clone());
    let mut sinks = Vec::new();
    let mut collector_of = |name: &str, l: TcpListener, check: Check, graceful: bool| {
        let n = seed ^ (sinks.len() as u64) << 8;
        let (t, seen) = collector(soak.clone(), name.into(), l, check, graceful, n);
        sinks.push((name.to_string(), t));
        seen
    };
    let blk_c = collector_of(
        "blk collector",
        blk_col,
        Check::Stream(BLK, exact(&blk_len)),
        true,
    );
    let tee_c1 = collector_of(
        "tee collector 1",
        tee_col1,
        Check::Stream(TEE, exact(&tee_len)),
        true,
    );
    let tee_c2 = collector_of(
        "tee collector 2",
        tee_col2,
        Check::Stream(TEE, exact(&tee_len)),
        true,
    );
    let lossy_c = collector_of(
        "lossy collector",
        lossy_col,
        Check::Stream(LOSSY, Gaps::Forward),
        false,
    );
    let dgram_c = collector_of("dgram collector", dgram_col, Check::Framed(DGRAM), true);
    let (t, dgram_u) = udp_sink(soak.clone(), "dgram udp sink".into(), dgram_udp, DGRAM);
    sinks.push(("dgram udp sink".into(), t));
    let (t, _) = udp_sink(soak.clone(), "churn udp sink".into(), churn_udp, CHURN);
    sinks.push(("churn udp sink".into(), t));
    // The start: every collector dialed, nothing else connected.
    let ok = wait_until(SETTLE, || soak.open.load(SeqCst) == 5);
    assert!(
        ok,
        "the relay dialed {} of 5 collectors within {SETTLE:?}",
        soak.open.load(SeqCst)
    );
    thread::sleep(Duration::from_secs(1));
    let start = Instant::now();
    let kinds_at_start = fd_kinds(pid);
    let mut samples = vec![Sample {
        minute: 0,
        rss_kib: rss_kib(pid),
        fds: fd_count(pid),
        conns: soak.open.load(SeqCst),
    }];

    // Sources: (name, input, stream, bytes/s, longest connection, lengths).
    let mut sources = Vec::new();
    for (name, port, stream, rate, max_len, lengths) in [
        ("blk producer", p.blk_in, BLK, 3 << 20, 4 << 20, &blk_len),
        ("tee producer", p.tee_in, TEE, 3 << 20, 8 << 20, &tee_len),
        (
            "lossy producer",
            p.lossy_in,
            LOSSY,
            2 << 20,
            4 << 20,
            &lossy_len,
        ),
    ] {
        let spec = ProducerSpec {
            name: name.into(),
            addr: l(port),
            stream,
            rate,
            max_len,
            lengths: Arc::clone(lengths),
            seed: seed + sources.len() as u64 + 1,
        };
        let t = producer(soak.clone(), spec);
        sources.push((name.to_string(), t));
    }
    let (t, dgram_sent) = udp_sender(soak.clone(), l(p.dgram_in), DGRAM, 1500);
    sources.push(("dgram sender".to_string(), t));
    let (t, _) = udp_sender(soak.clone(), l(p.churn_in), CHURN, 300);
    sources.push(("churn sender".to_string(), t));

    // Subscribers: (name, output, check, slow, may be closed by the relay, may be absent).
    let subs = vec![
        (
            "blk subscriber",
            p.blk_sub,
            Check::Stream(BLK, exact(&blk_len)),
            false,
            false,
            false,
        ),
        (
            "blk subscriber 2",
            p.blk_sub,
            Check::Stream(BLK, exact(&blk_len)),
            false,
            false,
            false,
        ),
        (
            "blk slow subscriber",
            p.blk_sub,
            Check::Stream(BLK, exact(&blk_len)),
            true,
            false,
            false,
        ),
        (
            "lossy drop subscriber",
            p.lossy_drop,
            Check::Stream(LOSSY, Gaps::Forward),
            false,
            false,
            false,
        ),
        (
            "lossy slow drop subscriber",
            p.lossy_drop,
            Check::Stream(LOSSY, Gaps::Forward),
            true,
            false,
            false,
        ),
        (
            "lossy subscriber",
            p.lossy_disc,
            Check::Stream(LOSSY, exact(&lossy_len)),
            false,
            true,
            false,
        ),
        (
            "lossy slow subscriber",
            p.lossy_disc,
            Check::Stream(LOSSY, exact(&lossy_len)),
            true,
            true,
            false,
        ),
        (
            "dgram subscriber",
            p.dgram_sub,
            Check::Framed(DGRAM),
            false,
            true,
            false,
        ),
        (
            "dgram slow subscriber",
            p.dgram_sub,
            Check::Framed(DGRAM),
            true,
            true,
            false,
        ),
        (
            "churn subscriber",
            p.churn_sub,
            Check::Framed(CHURN),
            false,
            true,
            true,
        ),
    ];
    let mut subscribers = Vec::new();
    let mut seen_by = Vec::new();
    for (i, (name, port, check, slow, may_be_closed, may_be_absent)) in subs.into_iter().enumerate()
    {
        let kind = SubscriberKind {
            slow,
            may_be_closed,
            may_be_absent,
        };
        let n = seed + 100 + i as u64;
        let (t, seen) = subscriber(soak.clone(), name.into(), l(port), check, kind, n);
        subscribers.push((name.to_string(), t));
        seen_by.push((name, port, seen));
    }

    // The churn.
    let mut variant = 0u8;
    let mut reloads = 0u64;
    let (mut next_hup, mut next_usr1) = (Duration::from_secs(10), Duration::from_secs(3));
    while !soak.failed() {
        relay.assert_running("during the soak");
        let now = start.elapsed();
        if now >= Duration::from_secs(60 * samples.len() as u64) {
            let s = Sample {
                minute: samples.len() as u64,
                rss_kib: rss_kib(pid),
                fds: fd_count(pid),
                conns: soak.open.load(SeqCst),
            };
            eprintln!(
                "soak: minute {}: rss {} KiB, {} fds, {} connections",
                s.minute, s.rss_kib, s.fds, s.conns
            );
            samples.push(s);
            if samples.len() as u64 > minutes {
                break;
            }
        }
        if now >= next_hup {
            next_hup += Duration::from_secs(10);
            let to = [1, 1, 2, 2, 0, 0][(reloads % 6) as usize];
            if let Err(e) = reload(&relay, &dir, &p, variant, to) {
                soak.fail(e);
            }
            variant = to;
            reloads += 1;
        }
        if now >= next_usr1 {
            next_usr1 += Duration::from_secs(3);
            relay.signal(SIGUSR1);
        }
        thread::sleep(Duration::from_millis(100));
    }
    let stuck = |t, what: &str| {
        let s = join_all(t, Duration::from_secs(2 * STUCK.as_secs() + 10));
        assert!(s.is_empty(), "{what}: {s:?}");
    };
    if soak.failed() {
        soak.stop.store(true, SeqCst);
        for t in [sources, subscribers, sinks] {
            join_all(t, Duration::from_secs(10));
        }
        panic!(
            "soak failed during the churn:\n  {}",
            soak.failures().join("\n  ")
        );
    }

    // The end. Subscribers leave first, while data still flow: a subscriber may half-close,
    // so the relay learns that one has gone only when a write to it fails, and with the
    // sources running every one is found out. Then the sources finish their connections, the
    // config goes back to the start's and the collectors catch up with everything the relay
    // took in.
    soak.subscribers_stop.store(true, SeqCst);
    stuck(subscribers, "subscribers");
    let sub_rows = [
        ("blk", p.blk_sub),
        ("lossy", p.lossy_drop),
        ("lossy", p.lossy_disc),
        ("dgram", p.dgram_sub),
    ];
    let mut c = counters(&relay);
    let gone = wait_until(SETTLE, || {
        c = counters(&relay);
        thread::sleep(Duration::from_millis(200));
        sub_rows
            .iter()
            .all(|(ch, port)| get(&c, ch, &format!(":{port}"), "clients") == 0)
    });
    assert!(
        gone,
        "subscribers the relay still counts {SETTLE:?} after the last left: {c:?}"
    );
    soak.sources_stop.store(true, SeqCst);
    stuck(sources, "sources");
    if variant != 0 {
        if let Err(e) = reload(&relay, &dir, &p, variant, 0) {
            soak.fail(e);
        }
    }
    let caught_up = wait_until(SETTLE, || {
        c = counters(&relay);
        let blk = get(&c, "blk", "input", "bytes");
        let tee = get(&c, "tee", "input", "bytes");
        let dg = get(&c, "dgram", "input", "datagrams") - get(&c, "dgram", "input", "drops");
        thread::sleep(Duration::from_millis(200));
        blk_c.bytes.load(SeqCst) == blk
            && tee_c1.bytes.load(SeqCst) == tee
            && tee_c2.bytes.load(SeqCst) == tee
            && dgram_c.datagrams.load(SeqCst) == dg
            || soak.failed()
    });
    assert_no_failures(&soak, "while the collectors caught up");
    let stream_checks = [
        ("blk", &blk_len, vec![&blk_c]),
        ("tee", &tee_len, vec![&tee_c1, &tee_c2]),
    ];
    for (ch, lens, cols) in &stream_checks {
        let input = get(&c, ch, "input", "bytes");
        assert_eq!(
            input,
            lens.total(),
            "{ch}: bytes the relay read and the producer wrote"
        );
        let last = lens.count() as u32 - 1;
        for col in cols {
            let at = *col.position.lock().unwrap();
            assert!(
                caught_up && at == Some((last, lens.get(last).unwrap())),
                "{ch}: a collector has {} of {input} bytes and stands at {at:?}; the producer's last connection {last} has {:?} bytes",
                col.bytes.load(SeqCst),
                lens.get(last)
            );
        }
    }
    assert!(
        caught_up,
        "the dgram collector has {} datagrams: {c:?}",
        dgram_c.datagrams.load(SeqCst)
    );

    // Descriptors with only the collectors connected, as at the start. Every connection costs
    // the daemon one descriptor and nothing else should: the count may exceed the start's by
    // the connections open beyond the start's, and no more. The daemon may still be closing
    // the subscribers' connections, so it gets a few seconds to come down to that.
    let fd_limit = |s: &Sample| samples[0].fds + s.conns.saturating_sub(samples[0].conns);
    let mut end = Sample {
        minute: minutes,
        rss_kib: 0,
        fds: 0,
        conns: 0,
    };
    wait_until(Duration::from_secs(10), || {
        end = Sample {
            minute: minutes,
            rss_kib: rss_kib(pid),
            fds: fd_count(pid),
            conns: soak.open.load(SeqCst),
        };
        end.fds <= fd_limit(&end)
    });
    let kinds_at_end = fd_kinds(pid);
    let c = counters(&relay);
    soak.stop.store(true, SeqCst);
    stuck(sinks, "collectors and sinks");
    assert_no_failures(&soak, "at the end");

    // Counters against what the peers did.
    let mut report = Vec::new();
    for (ch, lens, _) in &stream_checks {
        let n = lens.count() as u64;
        assert_eq!(
            get(&c, ch, "input", "refused"),
            0,
            "{ch}: producers refused: {c:?}"
        );
        assert_eq!(
            get(&c, ch, "input", "reconnects"),
            n - 1,
            "{ch}: {n} producer connections: {c:?}"
        );
        report.push(format!(
            "{ch}: {n} producer connections, {} bytes",
            lens.total()
        ));
    }
    for (ch, s, port) in [
        ("blk", &blk_c, p.blk_col),
        ("tee", &tee_c1, p.tee_col1),
        ("tee", &tee_c2, p.tee_col2),
        ("dgram", &dgram_c, p.dgram_col),
    ] {
        // A link's `reconnects` counts the connections after its first.
        let n = s.connections.load(SeqCst);
        let relay_n = get(&c, ch, &format!(":{port}"), "reconnects");
        assert_eq!(
            relay_n,
            n - 1,
            "{ch}: the collector on {port} accepted {n} connections, the relay counts {relay_n} reconnects"
        );
        assert_eq!(
            get(&c, ch, &format!(":{port}"), "drops"),
            0,
            "{ch}: drops to a block collector"
        );
        report.push(format!(
            "{ch}: collector on {port}: {n} connections, {} bytes",
            s.bytes.load(SeqCst)
        ));
    }
    let lossy_n = lossy_c.connections.load(SeqCst);
    let lossy_drops = get(&c, "lossy", &format!(":{}", p.lossy_col), "drops");
    report.push(format!(
        "lossy: collector (resets): {lossy_n} connections, {lossy_drops} chunks dropped"
    ));
    for (ch, port) in sub_rows {
        let mine: u64 = seen_by
            .iter()
            .filter(|(_, p, _)| *p == port)
            .map(|(_, _, s)| s.connections.load(SeqCst))
            .sum();
        let closed: u64 = seen_by
            .iter()
            .filter(|(_, p, _)| *p == port)
            .map(|(_, _, s)| s.closed_by_relay.load(SeqCst))
            .sum();
        let row = format!(":{port}");
        let relay_n = get(&c, ch, &row, "reconnects");
        assert_eq!(
            relay_n, mine,
            "{ch}: subscribers of {port} connected {mine} times, the relay accepted {relay_n}"
        );
        let disc = get(&c, ch, &row, "disconnects");
        assert!(
            closed <= disc,
            "{ch}: {closed} subscribers of {port} closed by the relay, {disc} counted"
        );
        let drops = get(&c, ch, &row, "drops");
        report.push(format!("{ch}: subscribers of {port}: {mine} connections, {disc} disconnected as slow, {drops} chunks dropped"));
    }
    assert_eq!(
        get(&c, "blk", &format!(":{}", p.blk_sub), "disconnects"),
        0,
        "blk: a block subscriber was disconnected"
    );

    // Datagrams: every one sent is taken in by the relay or dropped by the kernel at its socket;
    // the block collector saw every one the relay took in and did not drop; each subscriber
    // connection an unbroken run of those; the UDP destination some of them, in order.
    let sent = dgram_sent.load(SeqCst);
    let (taken, in_drops) = (
        get(&c, "dgram", "input", "datagrams"),
        get(&c, "dgram", "input", "drops"),
    );
    let kdrops = kernel_udp_drops(p.dgram_in);
    assert_eq!(
        taken + kdrops,
        sent,
        "dgram: {sent} sent, the relay took {taken}, the kernel dropped {kdrops}"
    );
    let all: SeqSet = dgram_c.seqs.lock().unwrap().clone();
    assert_eq!(
        all.count,
        taken - in_drops,
        "dgram: the block collector's datagrams"
    );
    let mut runs = 0;
    for (name, _, seen) in seen_by.iter().filter(|(_, p_, _)| *p_ == p.dgram_sub) {
        for r in seen.runs.lock().unwrap().iter() {
            let want = all.count_range(r.first, r.last);
            assert_eq!(
                r.count, want,
                "{name}: datagrams {}..={}: got {}, the relay relayed {want}",
                r.first, r.last, r.count
            );
            runs += 1;
        }
    }
    let to_udp = dgram_u.seqs.lock().unwrap().clone();
    let out_udp = get(&c, "dgram", &format!(":{}", p.dgram_udp), "datagrams");
    let udp_drops = get(&c, "dgram", &format!(":{}", p.dgram_udp), "drops");
    assert!(
        to_udp.count <= out_udp,
        "dgram: the UDP sink got {} datagrams, the relay sent {out_udp}",
        to_udp.count
    );
    report.push(format!(
        "dgram: {sent} datagrams sent, {kdrops} dropped by the kernel, {in_drops} at the input; {runs} subscriber runs checked; UDP sink {} of the {out_udp} sent ({udp_drops} dropped at that output)",
        to_udp.count
    ));
    let unplaced: u64 = seen_by
        .iter()
        .map(|(_, _, s)| s.unplaced.load(SeqCst))
        .sum::<u64>()
        + lossy_c.unplaced.load(SeqCst);
    report.push(format!(
        "lossy: {unplaced} bytes not placeable after drops; {reloads} reloads"
    ));

    // The daemon is alive and stops cleanly.
    relay.assert_running("at the end of the soak");
    let t0 = Instant::now();
    relay.terminate();
    let status = relay.wait_exit(SHUTDOWN_TIMEOUT + EXIT_SLACK);
    let took = t0.elapsed();

    // The curves.
    let (end_fds, end_conns, fd_max) = (end.fds, end.conns, fd_limit(&end));
    samples.push(end);
    let mut csv = String::from("minute,rss_kib,fds,conns\n");
    for s in &samples {
        csv += &format!("{},{},{},{}\n", s.minute, s.rss_kib, s.fds, s.conns);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").to_string());
    let path = std::path::Path::new(&target).join("soak-curves.csv");
    std::fs::write(&path, &csv).expect("write soak-curves.csv");
    let log_path = path.with_file_name("soak-daemon.log");
    std::fs::write(&log_path, relay.log()).expect("write soak-daemon.log");
    eprintln!("\nsoak: {}", report.join("\nsoak: "));
    eprintln!("\n minute   rss_kib   fds  conns   (the last row: after the peers left)");
    for s in &samples {
        eprintln!(
            "{:>7} {:>9} {:>5} {:>6}",
            s.minute, s.rss_kib, s.fds, s.conns
        );
    }
    eprintln!(
        "written to {}, the daemon's log to {}; SIGTERM took {took:?}",
        path.display(),
        log_path.display()
    );

    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit after SIGTERM ({took:?})"
    );
    // Memory: the buffer pool is allocated and locked at start and queues hold pool buffers, so
    // after warming up the heap holds only per-connection and per-channel state, bounded by the
    // config. Minute 2 (minute 1 in shorter runs) is warm; 20% of a 20-30 MB daemon is several
    // MB, far above allocator jitter and far below what a leak per connection or reload
    // (thousands of each in 30 minutes) would add.
    let warm_minute = if minutes >= 3 { 2 } else { 1 };
    let warm = samples[warm_minute].rss_kib;
    let last = samples[samples.len() - 2].rss_kib;
    assert!(
        last * 100 <= warm * 120,
        "RSS grew from {warm} KiB at minute {warm_minute} to {last} KiB at the end"
    );
    assert!(
        end_fds <= fd_max,
        "{end_fds} descriptors at the end with {end_conns} connections, {} at the start with {}:\n  start {kinds_at_start:?}\n  end   {kinds_at_end:?}",
        samples[0].fds,
        samples[0].conns
    );
}
