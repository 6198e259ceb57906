//! Bytes subscribers send back toward the relay, with the real binary: read and discarded by
//! default, so a subscriber that talks while it receives still gets everything and a clean
//! FIN (not a reset) at the end; with `commands = first`, the first connected subscriber's
//! bytes reach the producer byte for byte, and the next one's once it leaves.

mod common;

use common::counters::counter_in;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

in_both_feature_sets!(
    a_talking_subscriber_gets_everything_and_a_fin,
    commands_first_forwards_the_first_subscribers_bytes,
);

/// How a reader's connection ended.
#[derive(Debug, PartialEq)]
enum Ending {
    Eof,
    Error(ErrorKind),
}

/// Reads `s` to its end once `go` is set; returns what it read and how it ended.
fn read_to_end_after(
    mut s: TcpStream,
    go: Arc<AtomicBool>,
) -> thread::JoinHandle<(Vec<u8>, Ending)> {
    thread::spawn(move || {
        while !go.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(5));
        }
        s.set_read_timeout(Some(TRANSFER_TIMEOUT)).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return (got, Ending::Eof),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return (got, Ending::Error(e.kind())),
            }
        }
    })
}

/// A subscriber writes 1 MiB while the producer's stream flows to it; it reads only once the
/// relay is stopping with data still to flush. The relay read (and discarded) its bytes, so
/// it closes with a FIN after the last byte: the subscriber reads the whole stream and a
/// clean end. (Unread bytes in the relay's socket would make its close a reset instead, which
/// destroys what the subscriber had not read yet.)
fn a_talking_subscriber_gets_everything_and_a_fin(features: Features) {
    let dir = TempDir::new("commands-discard");
    let (mut relay, (input, subs)) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel sdr]\ninput = tcp-listen://{input}\noutput = tcp-listen://{subs}\n",
            dir.global_section()
        );
        (conf, (input, subs))
    });
    let sub = connect_tcp(subs);
    wait_for("the subscriber to be accepted", READY_TIMEOUT, || {
        relay.log().contains("subscriber ")
    });
    let go = Arc::new(AtomicBool::new(false));
    let reader = read_to_end_after(sub.try_clone().unwrap(), go.clone());
    let sent = Arc::new(AtomicBool::new(false));
    let talker = {
        let mut s = sub.try_clone().unwrap();
        let sent = sent.clone();
        thread::spawn(move || {
            s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
            if s.write_all(&pattern(3, 1 << 20)).is_ok() {
                sent.store(true, Ordering::SeqCst);
            }
        })
    };
    let mut producer = connect_tcp(input);
    let data = pattern(4, 1 << 20);
    producer.write_all(&data).unwrap();
    drop(producer);
    let took = wait_until(Duration::from_secs(10), || sent.load(Ordering::SeqCst));
    // Every byte the subscriber sent is taken before the stop (the relay reads as they come).
    let discarded = took
        && wait_until(Duration::from_secs(10), || {
            relay.signal(nix::sys::signal::Signal::SIGUSR1);
            thread::sleep(Duration::from_millis(50));
            relay
                .log()
                .lines()
                .rev()
                .find(|l| l.contains("counters: channel sdr input"))
                .is_some_and(|l| l.contains(&format!("discarded={}", 1 << 20)))
        });
    thread::sleep(Duration::from_millis(200));
    relay.terminate();
    // The relay flushes what it holds for the subscriber, which starts reading only now.
    thread::sleep(Duration::from_millis(300));
    go.store(true, Ordering::SeqCst);
    let (got, ending) = reader.join().unwrap();
    assert!(relay.wait_exit(EXIT_TIMEOUT).is_some(), "the relay exits");
    let _ = sub.shutdown(Shutdown::Both);
    talker.join().unwrap();
    assert!(
        took,
        "the relay did not take the subscriber's 1 MiB within 10 s"
    );
    assert_eq!(
        ending,
        Ending::Eof,
        "after {} of {} bytes",
        got.len(),
        data.len()
    );
    assert_same_bytes("the talking subscriber", &got, &data);
    assert!(
        discarded,
        "the relay read and discarded the subscriber's 1 MiB"
    );
}

/// Collects what the relay writes to the producer.
fn collect(mut s: TcpStream) -> Arc<Mutex<Vec<u8>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            g.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    got
}

/// `commands = first`: the producer receives the first subscriber's bytes exactly, not the
/// second's; once the first leaves, the second commands and its bytes follow.
fn commands_first_forwards_the_first_subscribers_bytes(features: Features) {
    let dir = TempDir::new("commands-first");
    let (relay, (input, subs)) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel sdr]\ninput = tcp-listen://{input}\ncommands = first\noutput = tcp-listen://{subs}\n",
            dir.global_section()
        );
        (conf, (input, subs))
    });
    let producer = connect_tcp(input);
    wait_for("the producer to be accepted", READY_TIMEOUT, || {
        relay.log().contains("producer 127.0.0.1")
    });
    let to_producer = collect(producer.try_clone().unwrap());
    let got = || to_producer.lock().unwrap().clone();

    let mut first = connect_tcp(subs);
    wait_for("the first subscriber to command", READY_TIMEOUT, || {
        relay
            .log()
            .contains("commands the producer (commands = first)")
    });
    let mut second = connect_tcp(subs);
    wait_for("the second subscriber", READY_TIMEOUT, || {
        relay.log().matches("subscriber 127.0.0.1").count() >= 2
    });
    // rtl_tcp commands are 5 bytes; send many, interleaved between the two.
    let a: Vec<u8> = pattern(5, 64 << 10).iter().map(|b| b & 0x7F).collect();
    let b: Vec<u8> = pattern(6, 16 << 10).iter().map(|b| b | 0x80).collect();
    for (ca, cb) in a.chunks(5 << 8).zip(b.chunks(5 << 6)) {
        first.write_all(ca).unwrap();
        second.write_all(cb).unwrap();
    }
    wait_for(
        "the first subscriber's bytes at the producer",
        TRANSFER_TIMEOUT,
        || got().len() >= a.len(),
    );
    thread::sleep(Duration::from_millis(300));
    assert_same_bytes("the producer (first subscriber's commands)", &got(), &a);

    drop(first);
    wait_for("the second subscriber to take over", READY_TIMEOUT, || {
        relay.log().contains("commands the producer now")
    });
    let c: Vec<u8> = pattern(7, 16 << 10).iter().map(|b| b & 0x7F).collect();
    second.write_all(&c).unwrap();
    let want: Vec<u8> = a.iter().chain(&c).copied().collect();
    let deadline = Instant::now() + TRANSFER_TIMEOUT;
    while got().len() < want.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_same_bytes("the producer (after the takeover)", &got(), &want);

    relay.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_for("the commands counters", READY_TIMEOUT, || {
        relay.log().contains("commands_dropped=")
    });
    let log = relay.log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("counters: channel sdr input"))
        .unwrap();
    assert_eq!(counter_in(line, "commands"), want.len() as u64, "{line}");
    assert_eq!(counter_in(line, "commands_dropped"), 0, "{line}");
    assert_eq!(counter_in(line, "discarded"), b.len() as u64, "{line}");
    assert_eq!(log.matches("commands the producer now").count(), 1, "{log}");
    drop(second);
    drop(producer);
    relay.stop();
}
