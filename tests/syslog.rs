//! Logging to syslog: the test owns a Unix datagram socket and points the daemon at it with
//! `syslog_socket`, then checks what arrives: RFC 3164 messages with the configured facility,
//! ident `ringrelay` and the daemon's pid (the detached daemon's, not its parent's), the ready
//! message, the counters on SIGUSR1, and nothing on stderr. Without a syslog socket the relay
//! starts anyway, logs to stderr, and moves to syslog once the socket appears.

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The test's syslog daemon: a bound datagram socket.
struct LogSocket {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl LogSocket {
    fn bind(path: &Path) -> LogSocket {
        let sock = UnixDatagram::bind(path).expect("bind log socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        LogSocket {
            sock,
            seen: Vec::new(),
        }
    }

    /// Collects messages until one satisfies `want`; panics with all it saw at the deadline.
    fn wait_for(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut buf = vec![0u8; 8192];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if want(&msg) {
                    return msg;
                }
            }
        }
        panic!(
            "no syslog message {what} within {READY_TIMEOUT:?}; received:\n{}",
            self.seen.join("\n")
        );
    }
}

/// Splits `<PRI>Mmm dd hh:mm:ss ringrelay[PID]: text` into (PRI, PID, text).
fn parse_3164(msg: &str) -> Option<(u32, i32, &str)> {
    let rest = msg.strip_prefix('<')?;
    let (pri, rest) = rest.split_once('>')?;
    let at = rest.find("ringrelay[")?;
    let rest = &rest[at + "ringrelay[".len()..];
    let (pid, text) = rest.split_once("]: ")?;
    Some((pri.parse().ok()?, pid.parse().ok()?, text))
}

fn write_config(dir: &TempDir, sock: &Path, extra: &str) -> String {
    let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
    let out = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
    let conf = dir.join("ringrelay.conf");
    std::fs::write(
        &conf,
        format!(
            "{}log_facility = local3\nsyslog_socket = {}\n{extra}\n\
             [channel logged]\ninput = udp://{input}\noutput = udp://{out}\n",
            dir.global_section(),
            sock.display()
        ),
    )
    .unwrap();
    conf.display().to_string()
}

use std::net::SocketAddr;

#[test]
fn foreground_syslog_messages_carry_facility_ident_and_pid() {
    let dir = TempDir::new("syslog-fg");
    let path = dir.join("log.sock");
    let mut log = LogSocket::bind(&path);
    let conf = write_config(&dir, &path, "log = syslog");
    let mut child = Command::new(bin())
        .args(["run", "-c", &conf])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let ready = log.wait_for("saying ready", |m| m.contains("ready: "));
    let (pri, got_pid, _) = parse_3164(&ready).unwrap_or_else(|| panic!("not RFC 3164: {ready}"));
    // local3 is facility 19; info is severity 6.
    assert_eq!(pri, 19 * 8 + 6, "priority of {ready}");
    assert_eq!(got_pid, pid, "pid in {ready}");

    // SIGUSR1 logs the counters (they name the channel).
    let before = log.seen.len();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    log.wait_for("with counters after SIGUSR1", |m| m.contains("logged"));
    assert!(log.seen.len() > before);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let ok = wait_until(EXIT_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_))));
    if !ok {
        let _ = child.kill();
        panic!("no exit after SIGTERM");
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    // Everything went to syslog: stderr stays empty.
    assert!(stderr.trim().is_empty(), "stderr is not empty:\n{stderr}");
    for m in &log.seen {
        let (pri, p, _) = parse_3164(m).unwrap_or_else(|| panic!("not RFC 3164: {m}"));
        assert_eq!(pri / 8, 19, "facility of {m}");
        assert_eq!(p, pid, "pid of {m}");
    }
}

#[test]
fn syslog_flag_and_daemon_pid() {
    // log = stderr in the file, --syslog on the command line wins; detached, the messages carry
    // the daemon's pid from the pidfile, not the pid of the process we started.
    let dir = TempDir::new("syslog-daemon");
    let path = dir.join("log.sock");
    let pidfile = dir.join("ringrelay.pid");
    let mut log = LogSocket::bind(&path);
    let conf = write_config(&dir, &path, "log = stderr");
    let child = Command::new(bin())
        .args(["run", "-c", &conf, "--syslog", "--daemon", "--pidfile"])
        .arg(&pidfile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let parent = child.id() as i32;
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    assert!(
        wait_until(Duration::from_secs(30), || waiter.is_finished()),
        "daemon start did not return"
    );
    let out = waiter.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let daemon: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ready = log.wait_for("saying ready", |m| m.contains("ready: "));
    let (_, got, _) = parse_3164(&ready).unwrap();
    assert_eq!(got, daemon, "pid in {ready}");
    assert_ne!(got, parent);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        wait_until(EXIT_TIMEOUT, || !pidfile.exists()),
        "daemon did not exit after SIGTERM"
    );
}

#[test]
fn relay_starts_without_syslog_and_connects_when_it_appears() {
    // At boot the relay may start before the syslog daemon: it must start anyway, say once on
    // stderr that syslog is missing, log to stderr meanwhile, and move to syslog by itself.
    let dir = TempDir::new("syslog-late");
    let path = dir.join("log");
    let out = std::net::UdpSocket::bind((LOCALHOST4, 0)).unwrap();
    out.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let out_addr = out.local_addr().unwrap();
    let (relay, input) = Relay::start(Features::Auto, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let conf = format!(
            "{}log = syslog\nsyslog_socket = {}\n\n\
             [channel late]\ninput = udp://{input}\noutput = udp://{out_addr}\n",
            dir.global_section(),
            path.display()
        );
        (conf, input)
    });
    let unavailable = format!("syslog unavailable at {}", path.display());
    assert_eq!(
        relay.log().matches(&unavailable).count(),
        1,
        "stderr:\n{}",
        relay.log()
    );
    // It relays.
    let send = std::net::UdpSocket::bind((LOCALHOST4, 0)).unwrap();
    let mut buf = [0u8; 64];
    let relayed = wait_until(TRANSFER_TIMEOUT, || {
        send.send_to(b"hello", input).unwrap();
        matches!(out.recv(&mut buf), Ok(5))
    });
    assert!(relayed, "nothing relayed; stderr:\n{}", relay.log());

    // Syslog appears; the next messages (counters on SIGUSR1) reach it, after one line that
    // says it is back.
    let mut log = LogSocket::bind(&path);
    let back = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !back.load(std::sync::atomic::Ordering::Relaxed) {
                relay.signal(nix::sys::signal::Signal::SIGUSR1);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        let first = log.wait_for("after syslog appeared", |_| true);
        back.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(
            first.contains(&format!("syslog at {} reachable again", path.display())),
            "first message once back: {first}"
        );
    });
    log.wait_for("with counters after SIGUSR1", |m| m.contains("late"));
    let pid = relay.pid();
    for m in &log.seen {
        let (pri, p, _) = parse_3164(m).unwrap_or_else(|| panic!("not RFC 3164: {m}"));
        assert_eq!(pri / 8, 3, "facility daemon of {m}");
        assert_eq!(p, pid, "pid of {m}");
    }
    let stderr = relay.log();
    relay.stop();
    assert_eq!(stderr.matches(&unavailable).count(), 1, "stderr:\n{stderr}");
    assert!(stderr.contains("ready: 1 channels"), "stderr:\n{stderr}");
}

#[test]
fn daemon_starts_before_syslog_and_finds_it_later() {
    // The init script's case at boot: `run --daemon --syslog` while /dev/log is not there yet.
    let dir = TempDir::new("syslog-daemon-late");
    let path = dir.join("log");
    let pidfile = dir.join("ringrelay.pid");
    let conf = write_config(&dir, &path, "log = stderr");
    let o = output_within(
        Command::new(bin())
            .args(["run", "-c", &conf, "--syslog", "--daemon", "--pidfile"])
            .arg(&pidfile),
        "ringrelay run --daemon",
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(
        stderr
            .matches(&format!("syslog unavailable at {}", path.display()))
            .count(),
        1,
        "stderr:\n{stderr}"
    );
    let daemon: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(daemon);
    let mut log = LogSocket::bind(&path);
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
        if let Ok(n) = log.sock.recv(&mut [0u8; 8192]) {
            got = Some(n);
        }
    }
    assert!(
        got.is_some(),
        "the daemon never logged to syslog once it appeared"
    );
    log.wait_for("with counters", |m| m.contains("logged"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(
        wait_until(EXIT_TIMEOUT, || !pidfile.exists()),
        "daemon did not exit after SIGTERM"
    );
}
