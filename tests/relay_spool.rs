//! `spool=DIR` on a `tcp://` output: while the collector is away its records wait on disk,
//! and when it is back they arrive first, in order, before live data; a stop during an
//! outage keeps them for the next start. Each scenario runs with both feature sets.
//!
//! The input is UDP with `framing = u32be`: every datagram carries its sequence number, so the
//! collector's stream shows exactly which records arrived, in which order, how many times.

#[macro_use]
mod common;

use common::counters::input_counters_line;
use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

in_both_feature_sets!(
    collector_down_at_start_gets_every_record_in_order,
    sigterm_during_an_outage_keeps_records_for_the_next_start,
    spool_max_drops_are_counted,
    sigkill_during_an_outage_loses_nothing_synced,
    collector_away_and_back_twice,
);

/// Datagram `i`: its sequence number and a body of `i % 200` bytes.
fn record(i: u32) -> Vec<u8> {
    let mut d = i.to_be_bytes().to_vec();
    d.extend(std::iter::repeat_n((i % 251) as u8, (i % 200) as usize));
    d
}

/// Sends records `range` to `to`, sixteen per millisecond pause (the relay reads them
/// all; the pace keeps the test's own socket buffers from overflowing).
fn send(range: std::ops::Range<u32>, to: SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in range {
        s.send_to(&record(i), to).unwrap();
        if i % 16 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The sequence numbers of the u32be records of `stream` (each checked against its body).
fn seqs(stream: &[u8]) -> Vec<u32> {
    let (frames, rest) = split_frames(stream);
    assert_eq!(rest, 0, "the stream ends mid-record");
    whole_seqs(&frames)
}

fn whole_seqs(frames: &[&[u8]]) -> Vec<u32> {
    frames
        .iter()
        .map(|f| {
            let i = u32::from_be_bytes(f[..4].try_into().unwrap());
            assert_eq!(*f, record(i).as_slice(), "record {i} is damaged");
            i
        })
        .collect()
}

fn config(dir: &TempDir, input: SocketAddr, collector: SocketAddr, spool: &str) -> String {
    format!(
        "{}[channel sp]\ninput = udp://{input}\nframing = u32be\noutput = tcp://{collector} max_backlog=256KiB spool={spool} spool_sync=200ms\n",
        dir.global_section()
    )
}

/// The collector is not listening while 20,000 records come; it comes up afterwards and gets
/// every one, in order; the input dropped nothing.
fn collector_down_at_start_gets_every_record_in_order(features: Features) {
    let dir = TempDir::new("spool-late");
    let spool = dir.join("spool").display().to_string();
    let collector_addr = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        (config(&dir, input, collector_addr, &spool), input)
    });
    const N: u32 = 20_000;
    send(0..N, input);
    let url = format!("tcp://{collector_addr}");
    wait_for("every record spooled", TRANSFER_TIMEOUT, || {
        output_counter(&relay, &url, "spooled_records") >= u64::from(N)
    });
    let mode = std::fs::metadata(&spool).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the spool directory's mode");
    let collector = Collector::listen(collector_addr, None);
    wait_for("every record at the collector", TRANSFER_TIMEOUT, || {
        split_frames(&collector.concatenated()).0.len() >= N as usize
    });
    let got = seqs(&collector.concatenated());
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "records out of order, lost or repeated"
    );
    let line = input_counters_line(&relay, "sp");
    assert_eq!(counter_in(&line, "drops"), 0, "{line}");
    assert_eq!(output_counter(&relay, &url, "spool_dropped"), 0);
    // Replayed and consumed: the segments went.
    wait_for("the consumed segments removed", TRANSFER_TIMEOUT, || {
        std::fs::read_dir(&spool)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .ends_with(".seg")
            })
            .count()
            <= 1
    });
    relay.stop();
}

/// SIGTERM while the collector is away; the next start replays the spool before anything
/// new: each record exactly once.
fn sigterm_during_an_outage_keeps_records_for_the_next_start(features: Features) {
    let dir = TempDir::new("spool-term");
    let spool = dir.join("spool").display().to_string();
    let collector_addr = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
    let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
    let url = format!("tcp://{collector_addr}");
    let (relay, ()) = Relay::start(features, &dir, || {
        (config(&dir, input, collector_addr, &spool), ())
    });
    send(0..5000, input);
    wait_for("the records spooled", TRANSFER_TIMEOUT, || {
        output_counter(&relay, &url, "spooled_records") >= 5000
    });
    relay.stop();
    let (relay, ()) = Relay::start(features, &dir, || {
        (config(&dir, input, collector_addr, &spool), ())
    });
    send(5000..6000, input);
    let collector = Collector::listen(collector_addr, None);
    wait_for("every record at the collector", TRANSFER_TIMEOUT, || {
        split_frames(&collector.concatenated()).0.len() >= 6000
    });
    std::thread::sleep(Duration::from_millis(300));
    let got = seqs(&collector.concatenated());
    assert_eq!(
        got,
        (0..6000).collect::<Vec<_>>(),
        "not exactly once, in order"
    );
    relay.stop();
}

/// A spool of two small segments with the collector away: each policy keeps at most
/// `spool_max` and counts every record it drops.
fn spool_max_drops_are_counted(features: Features) {
    for full in ["drop-newest", "drop-oldest"] {
        let dir = TempDir::new("spool-full");
        let spool = dir.join("spool").display().to_string();
        let collector_addr = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let url = format!("tcp://{collector_addr}");
        let (relay, input) = Relay::start(features, &dir, || {
            let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
            let conf = format!(
                "{}[channel sp]\ninput = udp://{input}\nframing = u32be\noutput = tcp://{collector_addr} max_backlog=256KiB spool={spool} spool_max=256KiB spool_segment=128KiB spool_full={full}\n",
                dir.global_section()
            );
            (conf, input)
        });
        const N: u32 = 10_000;
        send(0..N, input);
        let spooled = |r: &Relay| {
            let line = output_counters_line(r, &url);
            (
                counter_in(&line, "spooled_records"),
                counter_in(&line, "spool_dropped"),
                counter_in(&line, "spool_bytes"),
            )
        };
        wait_for("every record spooled or dropped", TRANSFER_TIMEOUT, || {
            let (s, d, _) = spooled(&relay);
            s + d >= u64::from(N) || (full == "drop-oldest" && s >= u64::from(N))
        });
        let (s, d, bytes) = spooled(&relay);
        assert!(d > 0, "{full}: nothing dropped");
        assert!(bytes <= 256 << 10, "{full}: spool of {bytes} bytes");
        let collector = Collector::listen(collector_addr, None);
        wait_for("the spool replayed", TRANSFER_TIMEOUT, || {
            split_frames(&collector.concatenated()).0.len() as u64 + d >= u64::from(N)
        });
        std::thread::sleep(Duration::from_millis(300));
        let got = seqs(&collector.concatenated());
        assert_eq!(
            got.len() as u64 + output_counter(&relay, &url, "spool_dropped"),
            u64::from(N),
            "{full}: every record arrives or is counted dropped (spooled {s}, dropped {d}, {bytes} bytes; {}; input: {})",
            output_counters_line(&relay, &url),
            input_counters_line(&relay, "sp")
        );
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{full}: out of order");
        if full == "drop-newest" {
            assert_eq!(got[0], 0, "drop-newest keeps the oldest");
        } else {
            assert_eq!(*got.last().unwrap(), N - 1, "drop-oldest keeps the newest");
        }
        relay.stop();
    }
}

/// A spool directory others can write to is refused at start.
#[test]
fn a_spool_dir_others_can_write_is_refused() {
    let dir = TempDir::new("spool-perm");
    let spool = dir.join("spool");
    std::fs::create_dir(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o777)).unwrap();
    let conf = config(
        &dir,
        SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4)),
        SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4)),
        &spool.display().to_string(),
    );
    std::fs::write(dir.join("r.conf"), conf).unwrap();
    let (code, _out, err) = run_to_end(
        Features::Auto,
        &["run", "-c", &dir.join("r.conf").display().to_string()],
        dir.path(),
    );
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("writable by group or others"), "{err}");
}

/// SIGKILL while the collector is away, after a sync point: the next start replays every
/// record spooled before it (some may come twice; none is missing), then the new ones.
fn sigkill_during_an_outage_loses_nothing_synced(features: Features) {
    let dir = TempDir::new("spool-kill");
    let spool = dir.join("spool").display().to_string();
    let collector_addr = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
    let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
    let url = format!("tcp://{collector_addr}");
    let (mut relay, ()) = Relay::start(features, &dir, || {
        (config(&dir, input, collector_addr, &spool), ())
    });
    send(0..5000, input);
    wait_for("the records spooled", TRANSFER_TIMEOUT, || {
        output_counter(&relay, &url, "spooled_records") >= 5000
    });
    // Longer than spool_sync (200ms): a sync point came after the last record.
    std::thread::sleep(Duration::from_millis(600));
    relay.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(relay.wait_exit(Duration::from_secs(10)).is_some());
    drop(relay);
    let (relay, ()) = Relay::start(features, &dir, || {
        (config(&dir, input, collector_addr, &spool), ())
    });
    send(5000..6000, input);
    let collector = Collector::listen(collector_addr, None);
    wait_for("every record at the collector", TRANSFER_TIMEOUT, || {
        split_frames(&collector.concatenated()).0.len() >= 6000
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut got = seqs(&collector.concatenated());
    let n = got.len();
    got.dedup();
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order");
    assert_eq!(
        got,
        (0..6000).collect::<Vec<_>>(),
        "records lost ({n} received)"
    );
    relay.stop();
}

/// The collector goes away (FIN) and comes back, twice, while 30,000 records flow at the
/// sender's pace (16 datagrams, then a 1ms pause: at most 16,000 records/s, about 1.7MB/s):
/// the connections together carry every record once, in order; none is dropped, and the
/// spool's and the input's drop counters stay at zero.
fn collector_away_and_back_twice(features: Features) {
    let dir = TempDir::new("spool-twice");
    let spool = dir.join("spool").display().to_string();
    let mut first = Collector::listen("127.0.0.1:0".parse().unwrap(), Some(64 * 1024));
    let collector_addr = first.addr;
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        (config(&dir, input, collector_addr, &spool), input)
    });
    const N: u32 = 30_000;
    let sender = std::thread::spawn(move || send(0..N, input));
    let total = |c: &[&common::StreamSink]| {
        c.iter()
            .map(|s| split_frames(&s.data()).0.len())
            .sum::<usize>()
    };
    let conn1 = first.leave_mid_stream(100_000, usize::MAX);
    std::thread::sleep(Duration::from_millis(500));
    let mut second = Collector::listen(collector_addr, Some(64 * 1024));
    let conn2 = second.leave_mid_stream(conn1.len().min(100_000), usize::MAX);
    std::thread::sleep(Duration::from_millis(500));
    let third = Collector::listen(collector_addr, None);
    join_with_timeout(sender, TRANSFER_TIMEOUT, "the sender");
    let url = format!("tcp://{collector_addr}");
    let arrived = wait_until(Duration::from_secs(20), || {
        let conns = third.connections();
        let mut all: Vec<&common::StreamSink> = vec![&conn1, &conn2];
        all.extend(conns.iter().map(|c| &**c));
        total(&all) as u64 >= u64::from(N)
    });
    if !arrived {
        let per: Vec<(usize, usize)> = [&conn1, &conn2]
            .into_iter()
            .chain(third.connections().iter())
            .map(|c| {
                let d = c.data();
                let (f, rest) = split_frames(&d);
                (f.len(), rest)
            })
            .collect();
        panic!(
            "records missing: per connection (records, trailing bytes) {per:?}; {}",
            output_counters_line(&relay, &format!("tcp://{collector_addr}"))
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut got = Vec::new();
    let conns3 = third.connections();
    for c in [&conn1, &conn2].into_iter().chain(conns3.iter()) {
        got.extend(whole_seqs(&split_frames(&c.data()).0));
    }
    // A loopback disk keeps up with this rate: every record arrives once, in order.
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "records out of order, lost or repeated; {}",
        output_counters_line(&relay, &url)
    );
    assert_eq!(output_counter(&relay, &url, "spool_dropped"), 0);
    assert!(
        output_counter(&relay, &url, "spooled_records") > 0,
        "nothing was spooled"
    );
    let line = input_counters_line(&relay, "sp");
    assert_eq!(counter_in(&line, "drops"), 0, "{line}");
    relay.stop();
}
