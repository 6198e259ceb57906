//! The idle watchdog (`idle_timeout=` on an input), with the real binary: a silent dialed
//! producer is closed and redialed, a silent accepted producer is disconnected while the
//! listener stays, and a silent UDP input is marked idle until datagrams come again. Each is
//! logged once per state change and counted (`idle_timeouts`).

mod common;

use common::counters::{counter_in, input_counters_line};
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

in_both_feature_sets!(
    a_silent_dialed_producer_is_redialed,
    a_silent_accepted_producer_is_disconnected,
    a_silent_udp_input_is_marked_idle_until_data_comes_again,
);

/// Accepts one connection within `limit`.
fn accept_within(l: &TcpListener, limit: Duration) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("no connection from the relay within {limit:?}: {e}"),
        }
    }
}

/// Reads from `s` until the relay closes it (EOF), within `limit`; returns when that was.
fn wait_closed_by_relay(s: &mut TcpStream, limit: Duration, what: &str) -> Instant {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Instant::now(),
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Instant::now(),
            Err(e) => panic!("{what}: not closed by the relay within {limit:?}: {e}"),
        }
    }
}

fn idle_timeouts(line: &str) -> u64 {
    if line.contains("idle_timeouts=") {
        counter_in(line, "idle_timeouts")
    } else {
        0
    }
}

/// `tcp://` input with `idle_timeout=1s`: the test's producer accepts the relay's connection
/// and sends nothing; about a second later the relay closes it and dials again, and what the
/// second connection sends reaches the subscriber.
fn a_silent_dialed_producer_is_redialed(features: Features) {
    let dir = TempDir::new("idle-dialed");
    let producer = TcpListener::bind("127.0.0.1:0").unwrap();
    let paddr = producer.local_addr().unwrap();
    let (relay, subs) = Relay::start(features, &dir, || {
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel radio]\ninput = tcp://{paddr} idle_timeout=1s\noutput = tcp-listen://{subs}\n",
            dir.global_section()
        );
        (conf, subs)
    });
    let mut first = accept_within(&producer, READY_TIMEOUT);
    let up = Instant::now();
    let sub = StreamSink::tcp("subscriber", subs);
    wait_for("the subscriber to be accepted", READY_TIMEOUT, || {
        relay.log().contains("subscriber ")
    });
    let closed = wait_closed_by_relay(&mut first, Duration::from_secs(10), "the silent producer");
    let waited = closed - up;
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?} for idle_timeout=1s"
    );
    let mut second = accept_within(&producer, Duration::from_secs(10));
    let data = pattern(7, 256 << 10);
    second.write_all(&data).unwrap();
    sub.wait_len(data.len(), TRANSFER_TIMEOUT);
    assert_same_bytes("the subscriber", &sub.data(), &data);
    let line = input_counters_line(&relay, "radio");
    assert_eq!(idle_timeouts(&line), 1, "{line}");
    let log = relay.log();
    assert_eq!(
        log.matches("sent nothing for 1s: closing it and opening it again (idle_timeout)")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains("connected to producer"), "{log}");
    drop(second);
    relay.stop();
}

/// `tcp-listen://` input with `idle_timeout=1s`: a producer that connects and sends nothing is
/// disconnected (it reads EOF); the listener stays, and a new producer relays.
fn a_silent_accepted_producer_is_disconnected(features: Features) {
    let dir = TempDir::new("idle-accepted");
    let (relay, (input, subs)) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel radio]\ninput = tcp-listen://{input} idle_timeout=1s\noutput = tcp-listen://{subs}\n",
            dir.global_section()
        );
        (conf, (input, subs))
    });
    let mut silent = connect_tcp(input);
    let up = Instant::now();
    let closed = wait_closed_by_relay(&mut silent, Duration::from_secs(10), "the silent producer");
    let waited = closed - up;
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "disconnected after {waited:?} for idle_timeout=1s"
    );
    let sub = StreamSink::tcp("subscriber", subs);
    let mut talker = connect_tcp(input);
    ping_stream(&mut talker, &[&sub]);
    let data = pattern(8, 256 << 10);
    talker.write_all(&data).unwrap();
    expect_after_pings(&sub, &data, TRANSFER_TIMEOUT);
    let line = input_counters_line(&relay, "radio");
    assert_eq!(idle_timeouts(&line), 1, "{line}");
    assert!(line.contains(" [up]: "), "{line}");
    let log = relay.log();
    assert_eq!(
        log.matches("(idle_timeout); waiting for a producer")
            .count(),
        1,
        "{log}"
    );
    drop(talker);
    relay.stop();
}

/// `udp://` input with `idle_timeout=1s`: a second without datagrams marks it idle (logged
/// once, state `idle` in the counters line and in `ringrelay stat`), the next datagram marks
/// it active again (logged once).
fn a_silent_udp_input_is_marked_idle_until_data_comes_again(features: Features) {
    let dir = TempDir::new("idle-udp");
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let saddr = sink.local_addr().unwrap();
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel gps]\ninput = udp://{input} idle_timeout=1s\noutput = udp://{saddr}\n",
            dir.global_section()
        );
        (conf, input)
    });
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = [0u8; 64];
    tx.send_to(b"$GPGGA,1", input).unwrap();
    assert_eq!(sink.recv(&mut buf).unwrap(), 8);
    wait_for(
        "the input to be marked idle",
        Duration::from_secs(10),
        || relay.log().contains("idle (idle_timeout)"),
    );
    let line = input_counters_line(&relay, "gps");
    assert!(line.contains(" [idle]: "), "{line}");
    assert_eq!(idle_timeouts(&line), 1, "{line}");
    let json = stat_json(&dir);
    assert!(json.contains("\"state\":\"idle\""), "{json}");
    assert!(json.contains("\"idle_timeouts\":1"), "{json}");

    tx.send_to(b"$GPGGA,2", input).unwrap();
    assert_eq!(sink.recv(&mut buf).unwrap(), 8);
    wait_for("data again to be logged", READY_TIMEOUT, || {
        relay.log().contains("data again")
    });
    let line = input_counters_line(&relay, "gps");
    assert!(line.contains(" [up]: "), "{line}");
    let log = relay.log();
    assert_eq!(log.matches("idle (idle_timeout)").count(), 1, "{log}");
    assert_eq!(log.matches("data again").count(), 1, "{log}");
    relay.stop();
}

/// `ringrelay stat --format json` of the relay whose shm_dir is in `dir`.
fn stat_json(dir: &TempDir) -> String {
    let shm = dir.join("shm");
    let mut last = String::new();
    for _ in 0..20 {
        let o = output_within(
            Command::new(bin())
                .args(["stat", "--format", "json", "--shm-dir"])
                .arg(&shm),
            "ringrelay stat",
            Duration::from_secs(10),
        );
        last = String::from_utf8_lossy(&o.stdout).into_owned();
        if last.contains("\"idle_timeouts\":1") {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    last
}
