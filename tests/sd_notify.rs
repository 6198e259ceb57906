//! Notifications to systemd with the real daemon: the test plays the service manager, binding a
//! datagram socket (a path, or an abstract name) and starting the relay with `NOTIFY_SOCKET`
//! and `WATCHDOG_USEC` pointing at it.
//!
//! It checks that `READY=1` comes once the channel is bound (a datagram sent right after it is
//! relayed), that `WATCHDOG=1` comes every half `WATCHDOG_USEC`, that a `STATUS=` line with
//! rates comes every `stats_interval`, that SIGHUP gives `RELOADING=1` with `MONOTONIC_USEC`
//! and then `READY=1` (for a refused file too), that SIGTERM gives `STOPPING=1`, and that a
//! socket nobody listens on does not stop the relay.

mod common;

use common::*;
use nix::sys::signal::Signal::SIGHUP;
use std::net::{SocketAddr, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a notification may take to arrive.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// `WATCHDOG_USEC` given to the relay: 200 ms, so `WATCHDOG=1` every 100 ms.
const WATCHDOG_USEC: &str = "200000";

/// The service manager's end: a bound datagram socket and every message it received.
struct Manager {
    sock: UnixDatagram,
    /// The `NOTIFY_SOCKET` value that reaches it.
    env: String,
    got: Vec<String>,
}

impl Manager {
    fn at_path(dir: &TempDir) -> Manager {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        Manager::new(sock, path.display().to_string())
    }

    fn abstract_name() -> Manager {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "ringrelay-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
        Manager::new(sock, format!("@{name}"))
    }

    fn new(sock: UnixDatagram, env: String) -> Manager {
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        Manager {
            sock,
            env,
            got: Vec::new(),
        }
    }

    /// One message, or `None` after the read timeout.
    fn recv(&mut self) -> Option<String> {
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        self.got.push(m.clone());
        Some(m)
    }

    /// Reads until a message for which `want` holds, and returns it.
    fn until(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + NOTIFY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(m) = self.recv() {
                if want(&m) {
                    return m;
                }
            }
        }
        panic!(
            "no {what} within {NOTIFY_TIMEOUT:?}; received: {:?}",
            self.got
        );
    }

    /// Every message that arrives within `d`.
    fn during(&mut self, d: Duration) -> Vec<String> {
        let end = Instant::now() + d;
        let mut v = Vec::new();
        while Instant::now() < end {
            if let Some(m) = self.recv() {
                v.push(m);
            }
        }
        v
    }
}

/// Whether `m` holds the assignment `line` (messages are newline-separated assignments).
fn has(m: &str, line: &str) -> bool {
    m.lines().any(|l| l == line)
}

fn value<'a>(m: &'a str, key: &str) -> Option<&'a str> {
    m.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A relay with one UDP channel into `sink`, `stats_interval = 1s`, its notifications to
/// `notify_socket`; returns it with the input's address.
fn start(
    features: Features,
    dir: &TempDir,
    sink: &DatagramSink,
    notify_socket: &str,
) -> (Relay, SocketAddr) {
    let to = sink.addr;
    Relay::start_with(
        features,
        dir,
        || {
            let port = free_udp_port(LOCALHOST4);
            let text = format!(
                "{}stats_interval = 1s\n\n[channel a]\ninput = udp://{}\noutput = udp://{to}\n",
                dir.global_section().trim_end_matches('\n').to_string() + "\n",
                hostport(LOCALHOST4, port)
            );
            (text, SocketAddr::new(LOCALHOST4, port))
        },
        |cmd| {
            cmd.env("NOTIFY_SOCKET", notify_socket)
                .env("WATCHDOG_USEC", WATCHDOG_USEC)
                .env_remove("WATCHDOG_PID");
        },
    )
}

/// Sends one datagram to `input` and waits until the sink holds `n` datagrams.
fn relay_one(input: SocketAddr, sink: &DatagramSink, n: usize) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"after ready", input).unwrap();
    wait_for("the datagram relayed", NOTIFY_TIMEOUT, || sink.count() >= n);
}

fn clock_monotonic_usec() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000
}

/// Expects `RELOADING=1` with a `MONOTONIC_USEC` from around now, then `READY=1`.
fn expect_reload(m: &mut Manager) {
    let before = clock_monotonic_usec();
    let r = m.until("RELOADING=1", |s| has(s, "RELOADING=1"));
    let usec: u64 = value(&r, "MONOTONIC_USEC")
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {r:?}"))
        .parse()
        .unwrap();
    let after = clock_monotonic_usec();
    assert!(
        usec + 5_000_000 >= before && usec <= after,
        "MONOTONIC_USEC={usec} is not between {before} and {after}"
    );
    m.until("READY=1 after the reload", |s| has(s, "READY=1"));
}

fn notifies_systemd(features: Features) {
    let dir = TempDir::new("sdnotify");
    let mut m = Manager::at_path(&dir);
    let sink = DatagramSink::bind("out", "127.0.0.1:0".parse().unwrap());
    let (mut relay, input) = start(features, &dir, &sink, &m.env.clone());

    let ready = m.until("READY=1", |s| has(s, "READY=1"));
    assert!(
        value(&ready, "MAINPID").is_none(),
        "MAINPID in the foreground: {ready:?}"
    );
    relay_one(input, &sink, 1);

    let dogs = m
        .during(Duration::from_secs(1))
        .iter()
        .filter(|s| has(s, "WATCHDOG=1"))
        .count();
    assert!(dogs >= 2, "{dogs} WATCHDOG=1 in 1 s; received: {:?}", m.got);

    let status = m.until("a STATUS= line with rates", |s| {
        value(s, "STATUS").is_some_and(|v| v.contains("/s"))
    });
    let status = value(&status, "STATUS").unwrap();
    assert!(
        status.starts_with("1 channel, in ")
            && status.contains(", out ")
            && status.ends_with(" drops/s"),
        "STATUS={status}"
    );

    relay.signal(SIGHUP);
    expect_reload(&mut m);
    relay_one(input, &sink, 2);

    // A refused file ends the reload as well: the running configuration stays.
    let conf = dir.join("ringrelay.conf");
    let good = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        format!("{good}\n[channel broken]\ninput = nonsense\n"),
    )
    .unwrap();
    relay.signal(SIGHUP);
    expect_reload(&mut m);
    relay_one(input, &sink, 3);
    relay.assert_running("after a refused reload");

    relay.terminate();
    m.until("STOPPING=1", |s| has(s, "STOPPING=1"));
    match relay.wait_exit(EXIT_TIMEOUT) {
        Some(s) if s.code() == Some(0) => {}
        other => panic!("exit after SIGTERM: {other:?}; stderr:\n{}", relay.log()),
    }
    assert!(
        !relay.log().contains("cannot notify systemd"),
        "a send failed:\n{}",
        relay.log()
    );
}

fn notifies_an_abstract_socket(features: Features) {
    let dir = TempDir::new("sdnotify-abstract");
    let mut m = Manager::abstract_name();
    let sink = DatagramSink::bind("out", "127.0.0.1:0".parse().unwrap());
    let (mut relay, input) = start(features, &dir, &sink, &m.env.clone());
    m.until("READY=1", |s| has(s, "READY=1"));
    relay_one(input, &sink, 1);
    m.until("WATCHDOG=1", |s| has(s, "WATCHDOG=1"));
    relay.signal(SIGHUP);
    expect_reload(&mut m);
    relay.terminate();
    m.until("STOPPING=1", |s| has(s, "STOPPING=1"));
    assert_eq!(
        relay.wait_exit(EXIT_TIMEOUT).and_then(|s| s.code()),
        Some(0)
    );
}

fn runs_on_when_nobody_listens(features: Features) {
    let dir = TempDir::new("sdnotify-missing");
    let sink = DatagramSink::bind("out", "127.0.0.1:0".parse().unwrap());
    let missing = dir.join("nobody-listens.sock").display().to_string();
    let (mut relay, input) = start(features, &dir, &sink, &missing);
    // Ten watchdog periods and a status interval, every send failing.
    std::thread::sleep(Duration::from_millis(1200));
    relay.assert_running("with an unreachable NOTIFY_SOCKET");
    relay_one(input, &sink, 1);
    relay.signal(SIGHUP);
    wait_for("the reload", NOTIFY_TIMEOUT, || {
        relay.log().contains("reload: ")
    });
    relay.assert_running("after a reload with an unreachable NOTIFY_SOCKET");
    let log = relay.log();
    assert_eq!(
        log.matches("cannot notify systemd").count(),
        1,
        "the failure is said exactly once:\n{log}"
    );
    relay.stop();
}

in_both_feature_sets!(
    notifies_systemd,
    notifies_an_abstract_socket,
    runs_on_when_nobody_listens
);
