//! The producers of a listening input: `producer = replace` hands the input to a newcomer (a
//! sensor that rebooted) without ever interleaving the two streams, on the buffer path and on
//! the splice path; and keepalive frees an input whose producer vanished without a FIN or a
//! reset, which would otherwise hold the channel for the kernel's two hours and have every
//! newcomer refused.
//!
//! The replaced producer writes bytes of one class (0..64) and the newcomer bytes of another
//! (64..128), so an output's stream shows at a glance whether they ever interleave: it must be
//! a prefix of the first producer's stream followed by the whole of the second's.
//!
//! The keepalive scenario needs a network it may break: it runs in a thread moved into a new
//! network namespace (`unshare(CLONE_NEWNET)`, which needs root), where it starts the relay
//! and a producer and then takes `lo` down, so the producer vanishes without a packet leaving
//! either end. Where that is not allowed it says so and passes.

#[macro_use]
mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

in_both_feature_sets!(
    producer_replace_to_subscribers,
    producer_replace_on_a_splicing_channel,
);

/// The second producer's bytes have this bit set; the first's never do.
const NEWCOMER: u8 = 0x40;

/// `len` bytes of class `class` (0 or [`NEWCOMER`]).
fn classed(seed: u64, len: usize, class: u8) -> Vec<u8> {
    pattern(seed, len)
        .into_iter()
        .map(|b| class | (b & 0x3F))
        .collect()
}

/// Where the channel's bytes go: a subscriber (after its pings) or a collector.
#[derive(Clone)]
enum Out {
    Subscriber(Arc<StreamSink>),
    Collector(Arc<Collector>),
}

impl Out {
    fn data(&self) -> Vec<u8> {
        match self {
            Out::Subscriber(s) => s.with_data(|d| strip_pings(d).to_vec()),
            Out::Collector(c) => c.concatenated(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Out::Subscriber(s) => s.with_data(|d| strip_pings(d).len()),
            Out::Collector(c) => c.total_len(),
        }
    }
}

/// Writes `data` through `w` in 16 KiB pieces, at most `window` bytes ahead of what `out`
/// received, until all is written, `stop` is set or a write fails (the relay closed the
/// connection). Returns the bytes written.
fn write_until_cut(
    mut w: TcpStream,
    data: Arc<Vec<u8>>,
    out: Out,
    stop: Arc<AtomicBool>,
) -> JoinHandle<usize> {
    const WINDOW: usize = 1 << 20;
    thread::spawn(move || {
        let mut sent = 0;
        while sent < data.len() && !stop.load(Ordering::Relaxed) {
            if sent > out.len() + WINDOW {
                thread::sleep(Duration::from_millis(1));
                continue;
            }
            let end = (sent + (16 << 10)).min(data.len());
            if w.write_all(&data[sent..end]).is_err() {
                break;
            }
            sent = end;
        }
        sent
    })
}

/// A reads-to-end check: the relay closed `s` (EOF or a reset) within 10 s.
fn assert_closed_by_relay(s: &mut TcpStream, what: &str) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{what}: {e}"),
        }
        assert!(Instant::now() < deadline, "{what}: still open after 10 s");
    }
}

/// Producer A streams; mid-stream producer B connects and replaces it. The output gets a
/// prefix of A's stream, then all of B's, never interleaved; A's connection is closed by the
/// relay; the log and the counters say it was replaced.
fn replace_scenario(relay: &Relay, input: SocketAddr, out: Out, subscriber: bool) {
    let a_data = Arc::new(classed(1, 64 << 20, 0));
    let mut a = connect_tcp(input);
    if let Out::Subscriber(s) = &out {
        ping_stream(&mut a, &[s]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let a_writer = write_until_cut(
        a.try_clone().unwrap(),
        a_data.clone(),
        out.clone(),
        stop.clone(),
    );
    wait_for(
        "1 MiB of the first producer's stream",
        TRANSFER_TIMEOUT,
        || out.len() >= 1 << 20,
    );

    // The newcomer, while the first producer is still writing.
    let mut b = connect_tcp(input);
    wait_for("the replacement to be logged", READY_TIMEOUT, || {
        relay.log().contains("replaced by")
    });
    stop.store(true, Ordering::Relaxed);
    let a_sent = a_writer.join().unwrap();
    assert_closed_by_relay(&mut a, "the replaced producer's connection");

    let b_data = classed(2, 4 << 20, NEWCOMER);
    let delivered_b = || out.data().iter().filter(|&&x| x & NEWCOMER != 0).count();
    if subscriber {
        // A subscriber that falls max_backlog behind is disconnected: keep within a window.
        write_windowed(&mut b, &b_data, 1 << 20, delivered_b, "the newcomer");
    } else {
        b.write_all(&b_data).unwrap();
    }
    wait_for("the newcomer's whole stream", TRANSFER_TIMEOUT, || {
        delivered_b() >= b_data.len()
    });
    let got = out.data();
    let split = got
        .iter()
        .position(|&x| x & NEWCOMER != 0)
        .expect("the newcomer's bytes");
    assert!(split >= 1 << 20, "the first producer's bytes come first");
    assert!(
        split <= a_sent,
        "{split} bytes of a producer that sent {a_sent}"
    );
    assert_same_bytes("the first producer's part", &got[..split], &a_data[..split]);
    assert_same_bytes("the newcomer's part", &got[split..], &b_data);

    wait_for("replaced=1 in the counters", READY_TIMEOUT, || {
        relay.signal(nix::sys::signal::Signal::SIGUSR1);
        thread::sleep(Duration::from_millis(50));
        relay.log().contains("replaced=1")
    });
    let log = relay.log();
    assert_eq!(log.matches("replaced by").count(), 1, "{log}");
    assert!(!log.contains(" refused: "), "{log}");
}

/// `producer = replace` on the buffer path, to a subscriber.
fn producer_replace_to_subscribers(features: Features) {
    let dir = TempDir::new("producer-replace");
    let (relay, (input, subs)) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel sensor]\ninput = tcp-listen://{input}\nproducer = replace\noutput = tcp-listen://{subs}\n",
            dir.global_section()
        );
        (conf, (input, subs))
    });
    let sub = Arc::new(StreamSink::tcp("subscriber", subs));
    replace_scenario(&relay, input, Out::Subscriber(sub), true);
    relay.stop();
}

/// `producer = replace` on a splicing channel: the replaced producer's bytes already in the
/// pipe go out first, then the newcomer's.
fn producer_replace_on_a_splicing_channel(features: Features) {
    let dir = TempDir::new("producer-replace-splice");
    let collector = Arc::new(Collector::listen("127.0.0.1:0".parse().unwrap(), None));
    let caddr = collector.addr;
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel sensor]\ninput = tcp-listen://{input}\nproducer = replace\noutput = tcp://{caddr}\nsplice = on\n",
            dir.global_section()
        );
        (conf, input)
    });
    let log = relay.log();
    assert!(log.contains("splice on (1 channel)"), "{log}");
    replace_scenario(&relay, input, Out::Collector(collector), false);
    relay.stop();
}

/// Runs `cmd` to its end; its failure is the test's.
fn run(cmd: &mut Command) {
    let out = output_within(cmd, "ip", Duration::from_secs(10));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// Moves this thread into a new network namespace with `lo` up. False (with a note) where the
/// test may not: no privilege, or no `ip`.
fn private_network() -> bool {
    // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only the calling thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        eprintln!("note: keepalive scenario skipped: unshare(CLONE_NEWNET): {e} (needs root)");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("note: keepalive scenario skipped: no `ip` (iproute2) to bring lo up");
        return false;
    }
    run(Command::new("ip").args(["link", "set", "lo", "up"]));
    true
}

/// A producer vanishes without a FIN or a reset (its network goes down); with `keepalive=2s`
/// the relay notices within 5 s (2 s idle, 3 probes 1 s apart), logs it once and frees the
/// input, and a second producer is accepted rather than refused once the network is back.
fn vanished_producer_scenario() {
    if !private_network() {
        return;
    }
    let dir = TempDir::new("keepalive");
    let (relay, (input, subs)) = Relay::start(Features::Auto, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel sensor]\ninput = tcp-listen://{input} keepalive=2s\noutput = tcp-listen://{subs}\n",
            dir.global_section()
        );
        (conf, (input, subs))
    });
    let sub = StreamSink::tcp("subscriber", subs);
    let mut first = connect_tcp(input);
    ping_stream(&mut first, &[&sub]);

    run(Command::new("ip").args(["link", "set", "lo", "down"]));
    let down = Instant::now();
    let noticed = wait_until(Duration::from_secs(10), || {
        relay.log().contains("no answer to keepalive probes")
    });
    let took = down.elapsed();
    run(Command::new("ip").args(["link", "set", "lo", "up"]));
    assert!(
        noticed,
        "the vanished producer still holds the input after 10 s; stderr:\n{}",
        relay.log()
    );
    eprintln!("keepalive=2s: the vanished producer was cut {took:?} after the network went down");

    let mut second = connect_tcp(input);
    wait_for("the second producer to be accepted", READY_TIMEOUT, || {
        relay.log().matches("connected").count() >= 2
    });
    second.write_all(b"after").unwrap();
    wait_for("the second producer's bytes", READY_TIMEOUT, || {
        sub.with_data(|d| strip_pings(d) == b"after")
    });
    let log = relay.log();
    assert!(!log.contains(" refused: "), "{log}");
    assert_eq!(
        log.matches("no answer to keepalive probes").count(),
        1,
        "{log}"
    );
    drop(first);
    relay.stop();
}

#[test]
fn keepalive_frees_the_input_of_a_vanished_producer() {
    // Its own thread: the network namespace is the thread's, and the processes it spawns
    // inherit it; the rest of the test binary keeps the host's.
    if let Err(p) = thread::spawn(vanished_producer_scenario).join() {
        std::panic::resume_unwind(p);
    }
}
