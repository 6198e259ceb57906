//! SIGHUP reload with the real daemon: a subscriber on a channel whose settings did not change
//! sees every byte across 20 reloads while another channel is restarted, removed and added
//! around it; an invalid file is reported with FILE:LINE and changes nothing; a removed channel's
//! port closes and a new channel's port accepts; a stopped channel closes its ports at once and
//! flushes its subscribers for at most shutdown_timeout, and reloads during that flush apply the
//! last file.
//!
//! Each reload waits for the daemon's summary line (`reload: FILE: K unchanged, N new,
//! R restarted, S removed`) and checks its counts before the next SIGHUP.

mod common;

use common::*;
use nix::sys::signal::Signal::SIGHUP;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long a reload, a port closing or a port opening may take.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);
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

/// The daemon's reload summary lines so far.
fn summaries(relay: &Relay) -> Vec<String> {
    relay
        .log()
        .lines()
        .filter(|l| l.contains("reload: ") && l.contains(" unchanged, "))
        .map(str::to_string)
        .collect()
}

/// Writes `conf`, sends SIGHUP and waits for the reload summary, which must report these
/// counts. `done` is the number of summaries before this reload.
fn reload(relay: &mut Relay, dir: &TempDir, conf: &str, done: usize, want: [usize; 4]) {
    std::fs::write(dir.join("ringrelay.conf"), conf).expect("write config");
    relay.signal(SIGHUP);
    let ok = wait_until(RELOAD_TIMEOUT, || summaries(relay).len() > done);
    relay.assert_running("after SIGHUP");
    assert!(
        ok,
        "no reload summary within {RELOAD_TIMEOUT:?} of SIGHUP number {}; config:\n{conf}\nstderr:\n{}",
        done + 1,
        relay.log()
    );
    let line = summaries(relay)[done].clone();
    let [kept, new, restarted, removed] = want;
    let counts = format!("{kept} unchanged, {new} new, {restarted} restarted, {removed} removed");
    assert!(
        line.contains(&counts),
        "reload {}: the daemon says '{line}', expected '{counts}'; config:\n{conf}",
        done + 1
    );
}

/// Waits until nothing listens on `addr` any more (connections are refused).
fn wait_refused(addr: SocketAddr, what: &str) {
    let mut last = String::new();
    let ok = wait_until(RELOAD_TIMEOUT, || {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => true,
            Err(e) => {
                last = e.to_string();
                false
            }
            Ok(_) => {
                last = "accepted".into();
                false
            }
        }
    });
    assert!(
        ok,
        "{what}: {addr} still answers {RELOAD_TIMEOUT:?} after the reload (last: {last})"
    );
}

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

// ------------------------------------------------------------------------------------------------
// Stopped channels flush, for at most shutdown_timeout

/// A `[global]` section for the drain tests. Small buffers and many of them: a subscriber may
/// hold a quarter of the pool over the two channels, 256 buffers, so the 1 MiB these tests queue
/// would need reads averaging under 4 KiB to get it dropped as too slow (with the default
/// 256 x 64 KiB it is 32 buffers, which short reads of a loopback stream do fill).
fn drain_global(dir: &TempDir, shutdown_timeout: &str) -> String {
    format!(
        "[global]\nshm_dir = {}\nshutdown_timeout = {shutdown_timeout}\nlog_level = info\nbuffer_size = 16KiB\nbuffer_count = 2048\n\n",
        dir.join("shm").display()
    )
}

/// A `tcp-listen` output whose subscribers get a tiny send buffer: the daemon hands the kernel a
/// few KiB of what it holds for a subscriber that does not read, and keeps the rest queued.
fn stalling_output(addr: SocketAddr) -> String {
    format!("tcp-listen://{addr} sndbuf=4096 max_backlog=64MiB")
}

/// Connects a subscriber that does not read (and has a tiny receive buffer) to `addr`, a
/// tcp-listen output of `channel`, and waits until the daemon has accepted it.
fn stalled_subscriber(relay: &Relay, channel: &str, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).expect("connect subscriber");
    let sub = TcpStream::from(s);
    let accepted = format!(
        "channel {channel}: subscriber {}",
        sub.local_addr().unwrap()
    );
    wait_for(
        "the daemon to accept the subscriber",
        RELOAD_TIMEOUT,
        || relay.log().contains(&accepted),
    );
    sub
}

/// Writes `total` bytes of `pattern(seed)` into `channel`'s tcp-listen input at `input` and
/// waits until the channel has read all of them. Returns the bytes.
fn feed(relay: &Relay, channel: &str, input: SocketAddr, seed: u64, total: usize) -> Arc<Vec<u8>> {
    use nix::sys::signal::Signal::SIGUSR1;
    let data = Arc::new(pattern(seed, total));
    let producer = write_in_thread(connect_tcp(input), data.clone(), 64 * 1024);
    let counters = format!("counters: channel {channel} input");
    let read_all = format!("bytes={total} ");
    wait_for("the channel to read everything", TRANSFER_TIMEOUT, || {
        relay.signal(SIGUSR1);
        thread::sleep(Duration::from_millis(50));
        relay
            .log()
            .lines()
            .any(|l| l.contains(&counters) && l.contains(&read_all))
    });
    // The producer's end closes here: the channel sees its producer leave, nothing more.
    join_with_timeout(producer, TRANSFER_TIMEOUT, "the producer").expect("write");
    data
}

/// The index of the first line of `log` at or after line `from` that contains `what`.
fn line_index(log: &str, from: usize, what: &str) -> Option<usize> {
    log.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.contains(what))
        .map(|(i, _)| i)
}

/// A removed channel flushes what it queued for a subscriber before closing it: the subscriber
/// stalls (a tiny receive buffer, not reading) while the channel reads 1 MiB, nearly all of which
/// stays queued in the daemon; the channel is removed, its ports close at once, and only then does
/// the subscriber read: it must get every byte, then EOF.
#[test]
fn removed_channel_flushes_its_subscribers() {
    let dir = TempDir::new("reload-flush");
    let total = 1 << 20;
    let conf = |churn: Option<(SocketAddr, SocketAddr)>, keep: (SocketAddr, SocketAddr)| {
        let mut c = drain_global(&dir, "5s");
        if let Some((i, o)) = churn {
            c.push_str(&format!(
                "[channel churn]\ninput = tcp-listen://{i}\noutput = {}\n\n",
                stalling_output(o)
            ));
        }
        c.push_str(&format!(
            "[channel keep]\ninput = tcp-listen://{}\noutput = tcp-listen://{}\n",
            keep.0, keep.1
        ));
        c
    };
    let (mut relay, (churn, keep)) = Relay::start(Features::Auto, &dir, || {
        let tcp = || SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let (churn, keep) = ((tcp(), tcp()), (tcp(), tcp()));
        (conf(Some(churn), keep), (churn, keep))
    });

    let sub = stalled_subscriber(&relay, "churn", churn.1);
    let data = feed(&relay, "churn", churn.0, 7, total);

    reload(&mut relay, &dir, &conf(None, keep), 0, [1, 0, 0, 1]);
    // The listeners close at once; only the subscriber is kept, to flush (it cannot finish
    // before the subscriber reads, and shutdown_timeout is far off).
    wait_refused(churn.1, "the removed channel's output, while it flushes");
    wait_refused(churn.0, "the removed channel's input, while it flushes");
    let log = relay.log();
    assert!(
        !log.contains("channel churn: closed") && !log.contains("shutdown_timeout reached"),
        "the removed channel closed before its subscriber read anything:\n{log}"
    );

    let sink = StreamSink::new("stalled subscriber of the removed channel", sub);
    let end = sink.wait_end(TRANSFER_TIMEOUT);
    assert_eq!(
        end,
        Some(End::Eof),
        "the subscriber's connection did not end cleanly"
    );
    assert_same_bytes("the subscriber of the removed channel", &sink.data(), &data);
    wait_for("the removed channel to close", RELOAD_TIMEOUT, || {
        relay.log().contains("channel churn: closed")
    });
    relay.stop();
}

/// A subscriber that never reads holds a changed channel's old instance for shutdown_timeout and
/// no longer: then its outputs close, the bytes dropped are reported once (exactly those the
/// subscriber did not get), and the new instance starts on the same ports and relays.
#[test]
fn stalled_subscriber_is_cut_off_at_shutdown_timeout() {
    let dir = TempDir::new("reload-drain-timeout");
    let total = 1 << 20;
    let conf = |churn: (SocketAddr, SocketAddr), backlog: &str, keep: (SocketAddr, SocketAddr)| {
        format!(
            "{}[channel churn]\ninput = tcp-listen://{}\noutput = tcp-listen://{} sndbuf=4096 max_backlog={backlog}\n\n[channel keep]\ninput = tcp-listen://{}\noutput = tcp-listen://{}\n",
            drain_global(&dir, "2s"),
            churn.0,
            churn.1,
            keep.0,
            keep.1
        )
    };
    let (mut relay, (churn, keep)) = Relay::start(Features::Auto, &dir, || {
        let tcp = || SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let (churn, keep) = ((tcp(), tcp()), (tcp(), tcp()));
        (conf(churn, "32MiB", keep), (churn, keep))
    });

    let stalled = stalled_subscriber(&relay, "churn", churn.1);
    let data = feed(&relay, "churn", churn.0, 11, total);

    // Another max_backlog: churn restarts, and its old instance waits for the subscriber.
    reload(
        &mut relay,
        &dir,
        &conf(churn, "48MiB", keep),
        0,
        [1, 0, 1, 0],
    );
    let summary = line_index(&relay.log(), 0, " restarted, ").unwrap();
    let cut = "channel churn: shutdown_timeout reached while flushing its outputs";
    wait_for("the drain to be cut off", RELOAD_TIMEOUT, || {
        relay.log().contains(cut)
    });
    wait_for("the new churn to start", RELOAD_TIMEOUT, || {
        relay.log().contains("channel churn: started")
    });
    relay.assert_running("after the drain was cut off");
    let log = relay.log();
    // In order: reload, cut off, old instance closed, new one started; each once.
    let at_cut = line_index(&log, summary, cut).expect("cut-off line after the reload");
    let at_closed = line_index(&log, at_cut, "channel churn: closed")
        .unwrap_or_else(|| panic!("no 'closed' after the cut-off:\n{log}"));
    let at_started = line_index(&log, at_closed, "channel churn: started")
        .unwrap_or_else(|| panic!("no 'started' after 'closed':\n{log}"));
    for what in [cut, "channel churn: closed", "channel churn: started"] {
        assert_eq!(
            log.matches(what).count(),
            1,
            "'{what}' logged more than once:\n{log}"
        );
    }
    let cut_line = log.lines().nth(at_cut).unwrap();
    let dropped: usize = cut_line
        .split(" queued bytes dropped")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in '{cut_line}'"));
    assert!(
        dropped > 0,
        "the cut-off reports no dropped bytes: '{cut_line}'"
    );
    assert!(at_started > at_closed);

    // The stalled subscriber was closed: it gets what the kernel held for it, then the end; with
    // what was reported dropped, that is everything.
    let sink = StreamSink::new("stalled subscriber", stalled);
    assert!(
        sink.wait_end(TRANSFER_TIMEOUT).is_some(),
        "the stalled subscriber's connection is still open after the cut-off"
    );
    let got = sink.data();
    assert_same_bytes(
        "what the stalled subscriber got",
        &got,
        &data[..got.len().min(total)],
    );
    assert_eq!(
        got.len() + dropped,
        total,
        "received {} + reported dropped {dropped} != written {total}",
        got.len()
    );

    // The new instance relays on the same ports.
    let sub = StreamSink::tcp("subscriber of the new churn", churn.1);
    let mut producer = connect_tcp(churn.0);
    ping_stream(&mut producer, &[&sub]);
    let more = pattern(12, 64 * 1024);
    producer.write_all(&more).expect("write to the new churn");
    expect_after_pings(&sub, &more, TRANSFER_TIMEOUT);
    drop(producer);
    relay.stop();
}

/// Reloads while a stopped channel still flushes apply the last file: a restart that is still
/// waiting is cancelled when the channel is then removed, and a channel added back while its
/// old instance flushes starts, with the settings of the file that added it, once that instance
/// is gone. Each churn config uses its own output port, so which one runs is plain to see.
#[test]
fn reloads_during_a_drain_apply_the_last_file() {
    let dir = TempDir::new("reload-during-drain");
    let total = 1 << 20;
    #[derive(Clone, Copy)]
    struct P {
        churn_in: SocketAddr,
        out: [SocketAddr; 3],
        keep: (SocketAddr, SocketAddr),
    }
    let conf = |p: &P, churn: Option<usize>| {
        // Long enough for the three reloads below to happen while the first churn flushes.
        let mut c = drain_global(&dir, "4s");
        if let Some(k) = churn {
            c.push_str(&format!(
                "[channel churn]\ninput = tcp-listen://{}\noutput = {}\n\n",
                p.churn_in,
                stalling_output(p.out[k])
            ));
        }
        c.push_str(&format!(
            "[channel keep]\ninput = tcp-listen://{}\noutput = tcp-listen://{}\n",
            p.keep.0, p.keep.1
        ));
        c
    };
    let (mut relay, p) = Relay::start(Features::Auto, &dir, || {
        let tcp = || SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let p = P {
            churn_in: tcp(),
            out: [tcp(), tcp(), tcp()],
            keep: (tcp(), tcp()),
        };
        (conf(&p, Some(0)), p)
    });
    let stalled = stalled_subscriber(&relay, "churn", p.out[0]);
    feed(&relay, "churn", p.churn_in, 13, total);

    // Changed (its restart waits for the old instance), removed (the restart is cancelled),
    // added back with a third output.
    reload(&mut relay, &dir, &conf(&p, Some(1)), 0, [1, 0, 1, 0]);
    reload(&mut relay, &dir, &conf(&p, None), 1, [1, 0, 0, 1]);
    reload(&mut relay, &dir, &conf(&p, Some(2)), 2, [1, 1, 0, 0]);
    wait_for("churn to start again", RELOAD_TIMEOUT, || {
        relay.log().contains("channel churn: started")
    });
    let sub = subscribe_and_prove_tcp(p.churn_in, p.out[2], "subscriber of the last churn");
    wait_refused(p.out[0], "the first churn's output");
    wait_refused(p.out[1], "the cancelled churn's output");
    let log = relay.log();
    let summary = line_index(&log, 0, " 1 new, ").unwrap();
    let at_closed = line_index(&log, summary, "channel churn: closed").unwrap_or_else(|| {
        panic!("the old churn did not close after the reload that added churn back:\n{log}")
    });
    assert!(
        line_index(&log, at_closed, "channel churn: started").is_some(),
        "churn started before its old instance closed:\n{log}"
    );
    assert_eq!(
        log.matches("channel churn: started").count(),
        1,
        "churn started more than once:\n{log}"
    );
    assert_eq!(sub.end(), None);
    drop(stalled);
    relay.stop();
}

/// Connects a subscriber to a tcp-listen output at `out` and writes pings into the tcp-listen
/// input at `input` until it has one: the channel is up and relaying.
fn subscribe_and_prove_tcp(input: SocketAddr, out: SocketAddr, what: &str) -> StreamSink {
    let sink = StreamSink::tcp(what, out);
    let mut producer = connect_tcp(input);
    ping_stream(&mut producer, &[&sink]);
    sink
}
