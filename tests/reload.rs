//! SIGHUP reload with the real daemon: a subscriber on a channel whose settings did not change
//! sees every byte across 20 reloads while another channel is restarted, removed and added
//! around it; an invalid file is reported with FILE:LINE and changes nothing; a removed channel's
//! port closes and a new channel's port accepts; a changed decimating channel republishes its
//! region. How a stopped channel flushes its subscribers is tested in `reload_drain.rs`.
//!
//! Each reload waits for the daemon's summary line (`reload: FILE: K unchanged, N new,
//! R restarted, S removed`) and checks its counts before the next SIGHUP (`reloading/mod.rs`,
//! shared with `reload_drain.rs`).

mod common;
mod reloading;

use common::*;
use nix::sys::signal::Signal::SIGHUP;
use reloading::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Bytes per producer write; block `k` is `pattern(BLOCK_SEED + k, BLOCK)`.
const BLOCK: usize = 32 * 1024;
const BLOCK_SEED: u64 = 0x4E10AD;
/// How far the producer may run ahead of the subscriber (far below any backlog limit).
const WINDOW: usize = 1 << 20;

// ------------------------------------------------------------------------------------------------
// The producer

/// Streams blocks into a channel's input from a thread, never more than [`WINDOW`] ahead of what
/// the subscriber received, until told to stop. Any write error or stall is kept and reported.
struct Producer {
    stop: Arc<AtomicBool>,
    blocks: Arc<AtomicUsize>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

fn block(k: usize) -> Vec<u8> {
    pattern(BLOCK_SEED.wrapping_add(k as u64), BLOCK)
}

impl Producer {
    /// `delivered` returns how many data bytes (after the pings) the subscriber holds.
    fn start(mut stream: TcpStream, delivered: impl Fn() -> usize + Send + 'static) -> Producer {
        let stop = Arc::new(AtomicBool::new(false));
        let blocks = Arc::new(AtomicUsize::new(0));
        let thread = {
            let stop = stop.clone();
            let blocks = blocks.clone();
            thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    let sent = k * BLOCK;
                    let mut done = 0;
                    if !wait_until(TRANSFER_TIMEOUT, || {
                        done = delivered();
                        done + WINDOW >= sent + BLOCK
                    }) {
                        return Err(format!(
                            "the subscriber is stuck at {done} of the {sent} bytes written"
                        ));
                    }
                    stream
                        .write_all(&block(k))
                        .map_err(|e| format!("write of block {k} (offset {sent}): {e}"))?;
                    k += 1;
                    blocks.store(k, Ordering::SeqCst);
                    // A steady stream rather than a flood: the reloads happen while it flows.
                    thread::sleep(Duration::from_millis(1));
                }
                stream.flush().map_err(|e| format!("flush: {e}"))
            })
        };
        Producer {
            stop,
            blocks,
            thread: Some(thread),
        }
    }

    /// Stops after the block being written; returns every byte written.
    fn finish(mut self) -> Vec<u8> {
        self.stop.store(true, Ordering::SeqCst);
        let t = self.thread.take().unwrap();
        if let Err(e) = join_with_timeout(t, TRANSFER_TIMEOUT, "the producer to stop") {
            panic!("the producer saw an error: {e}");
        }
        (0..self.blocks.load(Ordering::SeqCst))
            .flat_map(block)
            .collect()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ------------------------------------------------------------------------------------------------
// Reloads and ports

/// Connects a subscriber to a UDP channel's `tcp-listen` output at `out` and sends datagrams to
/// its input at `input` until the subscriber has received one: the channel is up and relaying.
fn subscribe_and_prove(input: SocketAddr, out: SocketAddr, what: &str) -> StreamSink {
    let sink = StreamSink::tcp(what, out);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let ok = wait_until(RELOAD_TIMEOUT, || {
        sock.send_to(PING_DATAGRAM, input).expect("send datagram");
        wait_until(Duration::from_millis(25), || !sink.is_empty())
    });
    assert!(
        ok,
        "{what}: nothing relayed from {input} to a subscriber of {out} within {RELOAD_TIMEOUT:?} (connection end: {:?})",
        sink.end()
    );
    sink
}

/// Sends datagrams to `input` until `sink` has more than it holds now: it still relays.
fn prove_still_relaying(input: SocketAddr, sink: &StreamSink, what: &str) {
    let before = sink.len();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let ok = wait_until(RELOAD_TIMEOUT, || {
        sock.send_to(PING_DATAGRAM, input).expect("send datagram");
        wait_until(Duration::from_millis(25), || sink.len() > before)
    });
    assert!(
        ok,
        "{what}: the subscriber got nothing more within {RELOAD_TIMEOUT:?} (connection end: {:?})",
        sink.end()
    );
}

/// Waits until `sink`'s connection ended (the daemon closed it).
fn expect_closed(sink: &StreamSink, what: &str) {
    assert!(
        sink.wait_end(RELOAD_TIMEOUT).is_some(),
        "{what}: the subscriber's connection is still open {RELOAD_TIMEOUT:?} after the reload"
    );
}

/// Waits until the subscriber holds more data bytes than `before`.
fn wait_more(sink: &StreamSink, before: usize, what: &str) {
    let ok = wait_until(TRANSFER_TIMEOUT, || {
        sink.with_data(|d| strip_pings(d).len()) > before || sink.end().is_some()
    }) && sink.end().is_none();
    assert!(
        ok,
        "{what}: no new byte reached the subscriber (connection end: {:?}; waited at most {TRANSFER_TIMEOUT:?})",
        sink.end()
    );
}

// ------------------------------------------------------------------------------------------------
// 20 reloads

/// The addresses of the reload test.
#[derive(Clone, Copy)]
struct Ports {
    keep_in: SocketAddr,
    keep_out: SocketAddr,
    churn_in: SocketAddr,
    churn_out: SocketAddr,
}

impl Ports {
    fn fresh() -> Ports {
        let tcp = || SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        Ports {
            keep_in: tcp(),
            keep_out: tcp(),
            churn_in: SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4)),
            churn_out: tcp(),
        }
    }
}

/// What `churn` looks like in one config.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Churn {
    Absent,
    A,
    /// A with another output setting: a changed channel.
    B,
}

/// The config: `churn` first (so `keep` moves down and up the file as churn comes and goes; line
/// numbers alone must not make a channel "changed"), then `keep`.
fn config(dir: &TempDir, p: &Ports, log_level: &str, churn: Churn) -> String {
    let mut c = format!(
        "[global]\nshm_dir = {}\nshutdown_timeout = 5s\nlog_level = {log_level}\n\n",
        dir.join("shm").display()
    );
    if churn != Churn::Absent {
        c.push_str(&format!(
            "# a channel that comes and goes\n[channel churn]\ninput = udp://{}\noutput = tcp-listen://{}{}\n\n",
            p.churn_in,
            p.churn_out,
            if churn == Churn::B { " max_backlog=1MiB" } else { "" }
        ));
    }
    c.push_str(&format!(
        "[channel keep]\ninput = tcp-listen://{}\noutput = tcp-listen://{}\n",
        p.keep_in, p.keep_out
    ));
    c
}

fn unchanged_channel_sees_every_byte_across_20_reloads(features: Features) {
    let dir = TempDir::new("reload20");
    let (mut relay, ports) = Relay::start(features, &dir, || {
        let p = Ports::fresh();
        (config(&dir, &p, "info", Churn::A), p)
    });

    let sub = Arc::new(StreamSink::tcp("keep subscriber", ports.keep_out));
    let mut producer = connect_tcp(ports.keep_in);
    ping_stream(&mut producer, &[&sub]);
    let delivered = {
        let sub = sub.clone();
        move || sub.with_data(|d| strip_pings(d).len())
    };
    let producer = Producer::start(producer, delivered.clone());
    let mut churn_sub = Some(subscribe_and_prove(
        ports.churn_in,
        ports.churn_out,
        "churn subscriber",
    ));

    let mut churn = Churn::A;
    for i in 0..20 {
        let what = format!("reload {}", i + 1);
        let next = match i % 4 {
            0 => Churn::B,
            1 => Churn::Absent,
            2 => Churn::A,
            _ => Churn::A,
        };
        let level = if i % 2 == 0 { "debug" } else { "info" };
        // [unchanged, new, restarted, removed]
        let want = match (churn, next) {
            (Churn::Absent, Churn::Absent) => [1, 0, 0, 0],
            (Churn::Absent, _) => [1, 1, 0, 0],
            (_, Churn::Absent) => [1, 0, 0, 1],
            (a, b) if a == b => [2, 0, 0, 0],
            _ => [1, 0, 1, 0],
        };
        let before = delivered();
        reload(
            &mut relay,
            &dir,
            &config(&dir, &ports, level, next),
            i,
            want,
        );
        match (churn, next) {
            (Churn::Absent, _) => {
                churn_sub = Some(subscribe_and_prove(
                    ports.churn_in,
                    ports.churn_out,
                    &format!("{what}: subscriber of the new churn"),
                ));
            }
            (_, Churn::Absent) => {
                expect_closed(
                    churn_sub.as_ref().unwrap(),
                    &format!("{what}: removed churn"),
                );
                churn_sub = None;
                wait_refused(ports.churn_out, &format!("{what}: removed churn"));
            }
            (a, b) if a == b => prove_still_relaying(
                ports.churn_in,
                churn_sub.as_ref().unwrap(),
                &format!("{what}: unchanged churn"),
            ),
            _ => {
                expect_closed(
                    churn_sub.as_ref().unwrap(),
                    &format!("{what}: restarted churn"),
                );
                churn_sub = Some(subscribe_and_prove(
                    ports.churn_in,
                    ports.churn_out,
                    &format!("{what}: subscriber of the restarted churn"),
                ));
            }
        }
        churn = next;
        wait_more(&sub, before, &format!("{what}: keep"));
        assert_eq!(
            sub.end(),
            None,
            "{what}: the keep subscriber was disconnected"
        );
    }

    let want = producer.finish();
    expect_after_pings(&sub, &want, TRANSFER_TIMEOUT);
    assert_eq!(
        sub.with_data(|d| fnv1a(strip_pings(d))),
        fnv1a(&want),
        "checksum of what the keep subscriber received"
    );
    assert_eq!(sub.end(), None, "the keep subscriber was disconnected");
    drop(churn_sub);
    relay.stop();
}

in_both_feature_sets!(unchanged_channel_sees_every_byte_across_20_reloads);

// ------------------------------------------------------------------------------------------------
// An invalid file, then a valid one

/// An invalid file on SIGHUP is reported with FILE:LINE for each error and the running config
/// stays: data still flows, the old channels still accept subscribers, and the channel the
/// invalid file adds does not appear. A valid file then removes `old` (its port closes, its
/// subscriber is closed) and adds `new` (its port accepts and relays).
#[test]
fn invalid_config_keeps_the_running_one() {
    let dir = TempDir::new("reload-invalid");
    let conf_path = dir.join("ringrelay.conf").display().to_string();
    #[derive(Clone, Copy)]
    struct P {
        keep_in: SocketAddr,
        keep_out: SocketAddr,
        old_in: SocketAddr,
        old_out: SocketAddr,
        new_in: SocketAddr,
        new_out: SocketAddr,
    }
    let section = |name: &str, input: SocketAddr, out: SocketAddr| {
        format!("[channel {name}]\ninput = udp://{input}\noutput = tcp-listen://{out}\n")
    };
    let global = format!(
        "[global]\nshm_dir = {}\nshutdown_timeout = 5s\nlog_level = info\n",
        dir.join("shm").display()
    );
    let keep = |p: &P| {
        format!(
            "[channel keep]\ninput = tcp-listen://{}\noutput = tcp-listen://{}\n",
            p.keep_in, p.keep_out
        )
    };
    let (mut relay, p) = Relay::start(Features::Auto, &dir, || {
        let tcp = || SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let udp = || SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let p = P {
            keep_in: tcp(),
            keep_out: tcp(),
            old_in: udp(),
            old_out: tcp(),
            new_in: udp(),
            new_out: tcp(),
        };
        let conf = format!(
            "{global}{}{}",
            keep(&p),
            section("old", p.old_in, p.old_out)
        );
        (conf, p)
    });

    let sub1 = StreamSink::tcp("keep subscriber 1", p.keep_out);
    let mut producer = connect_tcp(p.keep_in);
    ping_stream(&mut producer, &[&sub1]);
    let data1 = pattern(1, 256 * 1024);
    write_windowed(&mut producer, &data1, WINDOW, || sub1.len(), "data 1");
    expect_after_pings(&sub1, &data1, TRANSFER_TIMEOUT);
    let old_sub = subscribe_and_prove(p.old_in, p.old_out, "old subscriber");

    // The invalid file: it would remove `old` and add `new`, and has two errors.
    let mut bad = format!("{global}{}", keep(&p));
    bad.push_str("bogus_key = 1\n");
    let line_of_bogus = bad.lines().count();
    bad.push_str(&section("new", p.new_in, p.new_out));
    bad.push_str("decimate = avg:3\nsample = i16le\n");
    let line_of_decimate = bad.lines().count() - 1;
    std::fs::write(dir.join("ringrelay.conf"), &bad).expect("write config");
    relay.signal(SIGHUP);
    let stays = "the running configuration stays";
    let ok = wait_until(RELOAD_TIMEOUT, || relay.log().contains(stays));
    relay.assert_running("after SIGHUP with an invalid file");
    assert!(
        ok,
        "no '{stays}' within {RELOAD_TIMEOUT:?} of SIGHUP; stderr:\n{}",
        relay.log()
    );
    let log = relay.log();
    for line in [line_of_bogus, line_of_decimate] {
        let at = format!("{conf_path}:{line}:");
        assert!(
            log.lines()
                .any(|l| l.contains("reload: ") && l.contains(&at)),
            "the error at {at} was not logged; config:\n{bad}\nstderr:\n{log}"
        );
    }
    assert!(
        summaries(&relay).is_empty(),
        "an invalid file was applied:\n{log}"
    );

    // Nothing changed: keep relays to its subscriber and accepts a new one, old still relays
    // and accepts, and new does not exist.
    let sub2 = StreamSink::tcp("keep subscriber 2", p.keep_out);
    ping_stream(&mut producer, &[&sub2]);
    let data2 = pattern(2, 256 * 1024);
    write_windowed(
        &mut producer,
        &data2,
        WINDOW,
        || sub2.len().min(sub1.len().saturating_sub(data1.len())),
        "data 2",
    );
    expect_after_pings(&sub2, &data2, TRANSFER_TIMEOUT);
    let whole = data1.len() + data2.len();
    wait_for("keep subscriber 1 to get data 2", TRANSFER_TIMEOUT, || {
        sub1.with_data(|d| strip_pings(d).len()) >= whole
    });
    sub1.with_data(|d| {
        let d = strip_pings(d);
        assert_same_bytes("keep subscriber 1, data 1", &d[..data1.len()], &data1);
        assert_same_bytes(
            "keep subscriber 1, data 2",
            strip_pings(&d[data1.len()..]),
            &data2,
        );
    });
    prove_still_relaying(p.old_in, &old_sub, "old after the invalid file");
    let old_sub2 = subscribe_and_prove(p.old_in, p.old_out, "second old subscriber");
    assert!(
        TcpStream::connect_timeout(&p.new_out, Duration::from_secs(1)).is_err(),
        "the channel of the invalid file listens on {}",
        p.new_out
    );

    // A valid file: old removed, new added, keep unchanged.
    let good = format!(
        "{global}{}{}",
        section("new", p.new_in, p.new_out),
        keep(&p)
    );
    reload(&mut relay, &dir, &good, 0, [1, 1, 0, 1]);
    expect_closed(&old_sub, "removed old");
    expect_closed(&old_sub2, "removed old, second subscriber");
    wait_refused(p.old_out, "removed old");
    let _new_sub = subscribe_and_prove(p.new_in, p.new_out, "new subscriber");
    let before = sub1.len();
    producer.write_all(&pattern(3, 4096)).expect("write data 3");
    wait_for("keep subscriber 1 to get data 3", TRANSFER_TIMEOUT, || {
        sub1.len() >= before + 4096
    });
    assert_eq!(sub1.end(), None);
    assert_eq!(sub2.end(), None);
    drop(producer);
    relay.stop();
}

// ------------------------------------------------------------------------------------------------
// A decimating channel across reloads

/// A decimating channel whose `decimate` changes is restarted: its region is replaced by one with
/// the new factor and a new generation, which an attached reader follows; once the channel is
/// removed its region stays, marked stopped, for readers to drain.
#[test]
fn changed_decimating_channel_republishes_its_region() {
    use ringrelay::shm::{Reader, WriterState};
    let dir = TempDir::new("reload-shm");
    let shm = ShmDir::new("h");
    let other = |p: SocketAddr| {
        format!(
            "[channel other]\ninput = udp://{p}\noutput = file://{}\n",
            dir.join("other.raw").display()
        )
    };
    let dec = |p: SocketAddr, factor: u32| {
        format!(
            "[channel dec]\ninput = udp://{p}\nsample = i16le\nsample_rate = 100\ndecimate = every:{factor}\nshm_frames = 1024\n\n"
        )
    };
    let (mut relay, (dec_in, other_in)) = Relay::start(Features::Auto, &dir, || {
        let udp = || SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let (d, o) = (udp(), udp());
        (
            format!("{}{}{}", shm.global_section(), dec(d, 2), other(o)),
            (d, o),
        )
    });
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    // Samples from..from+n, one datagram.
    let send = |from: i16, n: i16| {
        let d: Vec<u8> = (from..from + n).flat_map(i16::to_le_bytes).collect();
        sock.send_to(&d, dec_in).expect("send datagram");
    };
    let path = shm.path().join("dec");
    let frames = |r: &mut Reader, n: u64, what: &str| -> Vec<f64> {
        wait_for(&format!("{what}: {n} frames"), TRANSFER_TIMEOUT, || {
            r.head().unwrap() >= n
        });
        let mut buf = Vec::new();
        let c = r.read(&mut buf, 1000).unwrap();
        assert_eq!((c.start, c.lost), (0, 0), "{what}");
        assert!(c.frames as u64 >= n, "{what}: {} frames", c.frames);
        buf.chunks_exact(r.info().frame_bytes as usize)
            .flat_map(|f| r.info().decode_frame(f))
            .collect()
    };

    send(0, 10);
    let mut reader = None;
    wait_for("the region of dec", RELOAD_TIMEOUT, || {
        reader = Reader::open(&path).ok();
        reader.is_some()
    });
    let mut reader = reader.unwrap();
    let generation = reader.info().generation;
    assert_eq!(reader.info().factor, 2);
    assert_eq!(
        frames(&mut reader, 5, "every:2"),
        vec![0.0, 2.0, 4.0, 6.0, 8.0]
    );

    // every:2 -> every:4: dec restarts; the region is replaced.
    let conf = format!(
        "{}{}{}",
        shm.global_section(),
        dec(dec_in, 4),
        other(other_in)
    );
    reload(&mut relay, &dir, &conf, 0, [1, 0, 1, 0]);
    wait_for("the region of dec to be replaced", RELOAD_TIMEOUT, || {
        reader.writer_state() == WriterState::Replaced
    });
    assert!(reader.reattach().expect("reattach"));
    assert!(
        reader.info().generation > generation,
        "generation {} after a restart from generation {generation}",
        reader.info().generation
    );
    assert_eq!(reader.info().factor, 4);
    let ok = wait_until(RELOAD_TIMEOUT, || {
        send(100, 16);
        wait_until(Duration::from_millis(50), || reader.head().unwrap() > 0)
    });
    assert!(ok, "the restarted dec publishes nothing");
    // Each datagram that got through (some may have arrived before the new socket was bound)
    // gives the same 4 frames.
    let got = frames(&mut reader, 4, "every:4");
    assert!(
        got.len() % 4 == 0 && got.chunks(4).all(|c| c == [100.0, 104.0, 108.0, 112.0]),
        "every:4 frames {got:?}"
    );

    // dec removed: the region stays, stopped.
    let conf = format!("{}{}", shm.global_section(), other(other_in));
    reload(&mut relay, &dir, &conf, 1, [1, 0, 0, 1]);
    wait_for(
        "the region of dec to be marked stopped",
        RELOAD_TIMEOUT,
        || reader.writer_state() == WriterState::Stopped,
    );
    relay.stop();
}
