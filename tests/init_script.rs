//! contrib/ringrelay.init run for real (with start-stop-daemon) against the built binary, with
//! a temporary config and pidfile passed through the environment overrides the script honours
//! (DAEMON, CONFIG, PIDFILE, DAEMON_ARGS, SHMDIR, DEFAULTS). It checks the LSB exit codes of
//! status, start, reload, a second start, restart, stop, and of a reload with a broken file.

mod common;

use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

struct Init {
    script: PathBuf,
    dir: TempDir,
}

impl Init {
    fn new(tag: &str) -> Init {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ringrelay.init");
        assert!(script.exists(), "{} missing", script.display());
        assert!(
            Command::new("start-stop-daemon")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "start-stop-daemon (package dpkg) is needed to test the init script"
        );
        Init {
            script,
            dir: TempDir::new(tag),
        }
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("run/ringrelay.pid")
    }

    fn config(&self) -> PathBuf {
        self.dir.join("ringrelay.conf")
    }

    /// Runs `sh ringrelay.init ACTION`, bounded; returns (exit code, stdout + stderr).
    fn run(&self, action: &str) -> (i32, String) {
        let child = Command::new("sh")
            .arg(&self.script)
            .arg(action)
            .env("DAEMON", bin())
            .env("CONFIG", self.config())
            .env("PIDFILE", self.pidfile())
            .env("DAEMON_ARGS", "")
            .env("SHMDIR", self.dir.join("shm"))
            .env("RUNUSER", "no-such-user-ringrelay-test")
            .env("DEFAULTS", self.dir.join("no-defaults"))
            .env("STOP_RETRY", "TERM/15/KILL/5")
            // Keep Debian's init-functions from handing the action to systemctl.
            .env("_SYSTEMCTL_SKIP_REDIRECT", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the init script");
        let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
        assert!(
            wait_until(Duration::from_secs(60), || waiter.is_finished()),
            "init script {action} did not return within 60s"
        );
        let out = waiter.join().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    fn expect(&self, action: &str, code: i32) -> String {
        let (got, text) = self.run(action);
        assert_eq!(
            got, code,
            "`ringrelay.init {action}` exit code; output:\n{text}"
        );
        text
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(self.pidfile())
            .expect("pidfile")
            .trim()
            .parse()
            .expect("pid in pidfile")
    }

    /// A config relaying a fresh UDP port to `out`; returns the input address.
    fn write_config(&self, out: SocketAddr) -> SocketAddr {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        std::fs::write(
            self.config(),
            format!(
                "{}[channel init]\ninput = udp://{input}\noutput = udp://{out}\n",
                self.dir.global_section()
            ),
        )
        .unwrap();
        input
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        // Never leave a daemon behind, whatever failed.
        if self.pidfile().exists() {
            let _ = self.run("stop");
        }
    }
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
}

/// Sends datagrams to `input` until `sink` got one more than `before`.
fn flows(input: SocketAddr, sink: &DatagramSink, before: usize) -> bool {
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    wait_until(Duration::from_secs(10), || {
        tx.send_to(b"through the init script", input).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        sink.count() > before
    })
}

#[test]
fn lifecycle_with_lsb_exit_codes() {
    let init = Init::new("init");
    let sink = DatagramSink::bind("out", SocketAddr::new(LOCALHOST4, 0));
    let input = init.write_config(sink.addr);

    init.expect("status", 3);
    init.expect("start", 0);
    let pid = init.pid();
    assert!(alive(pid), "daemon {pid} not running after start");
    assert!(flows(input, &sink, 0), "no data through the started daemon");
    let text = init.expect("status", 0);
    assert!(text.contains(&pid.to_string()), "status output: {text}");

    // reload: HUP after a successful check; same process, still relaying.
    init.expect("reload", 0);
    init.expect("force-reload", 0);
    assert_eq!(init.pid(), pid, "reload must not restart the daemon");
    let n = sink.count();
    assert!(flows(input, &sink, n), "no data after reload");

    // A broken file: reload fails and the daemon keeps running the old configuration.
    let good = std::fs::read_to_string(init.config()).unwrap();
    std::fs::write(init.config(), format!("{good}\nno_such_key = 1\n")).unwrap();
    init.expect("reload", 1);
    assert!(alive(pid), "daemon died on a broken reload");
    let n = sink.count();
    assert!(flows(input, &sink, n), "no data after a refused reload");
    std::fs::write(init.config(), &good).unwrap();

    // Starting a running service succeeds without a second instance (LSB).
    init.expect("start", 0);
    assert_eq!(init.pid(), pid);

    // restart: a new process on the same configuration.
    init.expect("restart", 0);
    let pid2 = init.pid();
    assert_ne!(pid2, pid, "restart kept the old process");
    assert!(
        wait_until(EXIT_TIMEOUT, || !alive(pid)),
        "old daemon still there"
    );
    let n = sink.count();
    assert!(flows(input, &sink, n), "no data after restart");

    init.expect("stop", 0);
    assert!(
        wait_until(EXIT_TIMEOUT, || !alive(pid2)),
        "daemon still running after stop"
    );
    assert!(!init.pidfile().exists(), "pidfile left after stop");
    init.expect("status", 3);
    // Stopping a stopped service succeeds (LSB).
    init.expect("stop", 0);
    init.expect("reload", 7);
    init.expect("bogus", 2);
}

#[test]
fn failed_start_and_stale_pidfile() {
    let init = Init::new("init-fail");
    // The input port is taken: start must fail with 1 and say why.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = DatagramSink::bind("out", SocketAddr::new(LOCALHOST4, 0));
    std::fs::write(
        init.config(),
        format!(
            "{}[channel busy]\ninput = udp://{}\noutput = udp://{}\n",
            init.dir.global_section(),
            taken.local_addr().unwrap(),
            sink.addr
        ),
    )
    .unwrap();
    let text = init.expect("start", 1);
    assert!(
        text.contains(&taken.local_addr().unwrap().to_string()),
        "start does not say which address failed:\n{text}"
    );
    init.expect("status", 3);

    // A pidfile naming a dead process: status says 1, and start takes over.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    std::fs::create_dir_all(init.pidfile().parent().unwrap()).unwrap();
    std::fs::write(init.pidfile(), format!("{gone_pid}\n")).unwrap();
    init.expect("status", 1);
    drop(taken);
    let input = init.write_config(sink.addr);
    init.expect("start", 0);
    assert!(
        flows(input, &sink, 0),
        "no data after a start over a stale pidfile"
    );
    init.expect("stop", 0);

    // No configuration file: LSB 6 (not configured).
    std::fs::remove_file(init.config()).unwrap();
    init.expect("start", 6);
}
