//! `ringrelay run --daemon --pidfile`: the caller learns whether the start worked (exit 0 only
//! once the relay is up and relaying; exit 1 with the reason otherwise), the pidfile holds the
//! daemon's pid and refuses a second instance, and a stale pidfile from a crash does not block
//! a start. The detached daemon is found through its pidfile and stopped with SIGTERM.

mod common;

use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs the binary to completion (a daemon start returns once the daemon reported), bounded.
fn run_bounded(args: &[&str]) -> Output {
    let child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringrelay");
    let pid = child.id() as i32;
    let waiter = std::thread::spawn(move || child.wait_with_output().expect("wait"));
    if !wait_until(Duration::from_secs(30), || waiter.is_finished()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!("ringrelay {args:?} did not return within 30s");
    }
    waiter.join().unwrap()
}

/// Whether `pid` is a live process (a zombie, exited but not yet reaped by init, is not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> i32 {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("pidfile {}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("pidfile {} holds {text:?}", path.display()))
}

/// A detached daemon, terminated (and waited for) on drop.
struct Daemon {
    pid: i32,
}

impl Daemon {
    fn terminate(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }

    fn wait_gone(&self) -> bool {
        wait_until(EXIT_TIMEOUT, || !alive(self.pid))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if alive(self.pid) {
            self.terminate();
            if !self.wait_gone() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A config relaying `input` (a UDP port) to the UDP sink at `out`.
fn write_config(dir: &TempDir, input: SocketAddr, out: SocketAddr, extra_global: &str) -> String {
    let conf = dir.join("ringrelay.conf");
    std::fs::write(
        &conf,
        format!(
            "{}{extra_global}\n[channel d]\ninput = udp://{input}\noutput = udp://{out}\n",
            dir.global_section()
        ),
    )
    .unwrap();
    conf.display().to_string()
}

/// Starts a daemon, retrying with new ports if the free port we picked was taken meanwhile.
fn start_daemon(dir: &TempDir, pidfile: &Path) -> (Daemon, SocketAddr, DatagramSink) {
    for _ in 0..5 {
        let sink = DatagramSink::bind("out", SocketAddr::new(LOCALHOST4, 0));
        let out = sink_addr(&sink);
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let conf = write_config(dir, input, out, "");
        let o = run_bounded(&[
            "run",
            "-c",
            &conf,
            "--daemon",
            "--pidfile",
            pidfile.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        if o.status.code() == Some(1) && says_address_in_use(&stderr) {
            continue;
        }
        assert_eq!(o.status.code(), Some(0), "daemon start; stderr:\n{stderr}");
        let pid = read_pid(pidfile);
        assert!(
            alive(pid),
            "daemon pid {pid} from the pidfile is not running"
        );
        return (Daemon { pid }, input, sink);
    }
    panic!("could not find free ports in 5 tries");
}

fn sink_addr(sink: &DatagramSink) -> SocketAddr {
    sink.addr
}

#[test]
fn daemon_starts_relays_and_refuses_a_second_instance() {
    let dir = TempDir::new("daemon");
    let pidfile = dir.join("ringrelay.pid");
    let (daemon, input, sink) = start_daemon(&dir, &pidfile);

    // Detached, yet bound before the caller returned: datagrams flow at once.
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ok = wait_until(Duration::from_secs(10), || {
        tx.send_to(b"hello", input).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        sink.count() > 0
    });
    assert!(ok, "the daemon relays nothing");
    assert_eq!(sink.datagrams()[0], b"hello");

    // A second instance with the same pidfile is refused and names the first one's pid.
    let conf = dir.join("ringrelay.conf");
    let o = run_bounded(&[
        "run",
        "-c",
        conf.to_str().unwrap(),
        "--daemon",
        "--pidfile",
        pidfile.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(1),
        "second instance; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", daemon.pid)),
        "the refusal does not name pid {}:\n{stderr}",
        daemon.pid
    );
    assert_eq!(read_pid(&pidfile), daemon.pid, "pidfile changed");
    assert!(alive(daemon.pid), "the first instance died");

    // SIGTERM: it exits and removes its pidfile.
    daemon.terminate();
    assert!(daemon.wait_gone(), "daemon still running after SIGTERM");
    assert!(
        wait_until(Duration::from_secs(5), || !pidfile.exists()),
        "pidfile left behind after a clean exit"
    );
}

#[test]
fn stale_pidfile_does_not_block_a_start() {
    let dir = TempDir::new("stale");
    let pidfile = dir.join("ringrelay.pid");
    // A pid that is not running any more: a short-lived child, reaped.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id() as i32;
    gone.wait().unwrap();
    std::fs::write(&pidfile, format!("{gone_pid}\n")).unwrap();
    let (daemon, _, _) = start_daemon(&dir, &pidfile);
    assert_ne!(daemon.pid, gone_pid);
    assert_eq!(read_pid(&pidfile), daemon.pid);
}

#[test]
fn failed_start_reports_to_the_caller() {
    let dir = TempDir::new("fail");
    let pidfile = dir.join("ringrelay.pid");
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = DatagramSink::bind("out", SocketAddr::new(LOCALHOST4, 0));
    let conf = write_config(&dir, taken.local_addr().unwrap(), sink_addr(&sink), "");
    let o = run_bounded(&[
        "run",
        "-c",
        &conf,
        "--daemon",
        "--pidfile",
        pidfile.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr:\n{stderr}");
    let url = format!("udp://{}", taken.local_addr().unwrap());
    assert!(
        stderr.contains(&url),
        "stderr does not name {url}:\n{stderr}"
    );
    // Nothing stays behind holding the pidfile: a new start with a free port works.
    let (daemon, _, _) = start_daemon(&dir, &pidfile);
    assert!(alive(daemon.pid));
}

#[test]
fn failure_after_detaching_reaches_the_caller() {
    // An unknown `user =` is found when privileges are dropped, after the fork: the parent
    // must still print the reason and exit 1.
    let dir = TempDir::new("late-fail");
    let pidfile = dir.join("ringrelay.pid");
    let sink = DatagramSink::bind("out", SocketAddr::new(LOCALHOST4, 0));
    let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
    let conf = write_config(
        &dir,
        input,
        sink_addr(&sink),
        "user = no-such-user-ringrelay-test",
    );
    let o = run_bounded(&[
        "run",
        "-c",
        &conf,
        "--daemon",
        "--pidfile",
        pidfile.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("no-such-user-ringrelay-test"),
        "stderr does not name the user:\n{stderr}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !pidfile.exists()),
        "pidfile left behind by a failed start"
    );
}
