//! The daemon under test: the binary and its `Command`, [`Relay`] (a started daemon, killed on
//! drop, with its stderr collected), one-shot runs with a deadline, and building the C example.

use super::{Features, TempDir, EXIT_TIMEOUT, READY_TIMEOUT};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The `ringrelay` binary built for this test run, or the one named by `RINGRELAY_TEST_BIN`
/// (to run the suite against another build, such as an installed release).
pub fn bin() -> String {
    std::env::var("RINGRELAY_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ringrelay").to_string())
}

/// A `Command` for the binary with the feature set chosen.
pub fn command(features: Features) -> Command {
    let mut c = Command::new(bin());
    match features {
        Features::Auto => c.env_remove("RINGRELAY_FEATURES"),
        Features::Baseline => c.env("RINGRELAY_FEATURES", "baseline"),
    };
    c
}

/// The daemon as a child process, killed on drop. Its stderr is collected by a thread.
pub struct Relay {
    child: Child,
    log: Arc<Mutex<String>>,
    log_thread: Option<JoinHandle<()>>,
    exit: Option<ExitStatus>,
    pub features: Features,
}

/// How a start attempt ended.
pub enum Started {
    Ready(Relay),
    /// The daemon exited before `ready`; its stderr is attached.
    Exited(ExitStatus, String),
}

/// Whether a daemon's stderr says a port was taken (the case a test retries with new ports).
pub fn says_address_in_use(log: &str) -> bool {
    let l = log.to_ascii_lowercase();
    l.contains("in use") || l.contains("eaddrinuse")
}

/// Whether `line` is the daemon's ready line (`ringrelay: ready: N channels`).
fn is_ready_line(line: &str) -> bool {
    line.contains("ready: ") && line.contains("channel")
}

impl Relay {
    /// Spawns `ringrelay ARGS` and waits for the ready line or for the process to exit.
    pub fn spawn(features: Features, args: &[String]) -> Started {
        Relay::spawn_with(features, args, |_| {})
    }

    /// Like [`Relay::spawn`], with `adjust` applied to the command first (limits, environment).
    pub fn spawn_with(
        features: Features,
        args: &[String],
        adjust: impl FnOnce(&mut Command),
    ) -> Started {
        let mut cmd = command(features);
        adjust(&mut cmd);
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringrelay");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let ready = Arc::new(AtomicBool::new(false));
        let log_thread = {
            let log = log.clone();
            let ready = ready.clone();
            thread::spawn(move || {
                let mut r = BufReader::new(stderr);
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if is_ready_line(&line) {
                                ready.store(true, Ordering::SeqCst);
                            }
                            log.lock().unwrap().push_str(&line);
                        }
                    }
                }
            })
        };
        let mut relay = Relay {
            child,
            log,
            log_thread: Some(log_thread),
            exit: None,
            features,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ready.load(Ordering::SeqCst) {
                return Started::Ready(relay);
            }
            if let Some(status) = relay.child.try_wait().expect("try_wait") {
                relay.exit = Some(status);
                // Let the stderr reader see the rest of what the process wrote.
                if let Some(t) = relay.log_thread.take() {
                    let _ = t.join();
                }
                return Started::Exited(status, relay.log());
            }
            if Instant::now() >= deadline {
                panic!(
                    "ringrelay {args:?} did not log ready within {READY_TIMEOUT:?}; stderr:\n{}",
                    relay.log()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts the daemon on a config built by `make`, which picks fresh ports on each call and
    /// returns the config text plus whatever the test needs to know (the ports). Retries a few
    /// times when the daemon finds a port taken; any other early exit fails the test.
    pub fn start<T>(
        features: Features,
        dir: &TempDir,
        make: impl FnMut() -> (String, T),
    ) -> (Relay, T) {
        Relay::start_with(features, dir, make, |_| {})
    }

    /// Like [`Relay::start`], with `adjust` applied to each attempt's command.
    pub fn start_with<T>(
        features: Features,
        dir: &TempDir,
        mut make: impl FnMut() -> (String, T),
        adjust: impl Fn(&mut Command),
    ) -> (Relay, T) {
        let conf = dir.join("ringrelay.conf");
        let mut last = String::new();
        for _attempt in 0..5 {
            let (text, t) = make();
            std::fs::write(&conf, &text).expect("write config");
            let args = vec![
                "run".to_string(),
                "-c".to_string(),
                conf.display().to_string(),
            ];
            match Relay::spawn_with(features, &args, &adjust) {
                Started::Ready(r) => return (r, t),
                Started::Exited(status, log) => {
                    if says_address_in_use(&log) {
                        last = log;
                        continue;
                    }
                    panic!("ringrelay run exited early ({status}) with config:\n{text}\nstderr:\n{log}");
                }
            }
        }
        panic!("ringrelay kept finding its ports in use; last stderr:\n{last}");
    }

    /// Like [`Relay::start`] with command-line arguments instead of a config file.
    pub fn start_args<T>(
        features: Features,
        mut make: impl FnMut() -> (Vec<String>, T),
    ) -> (Relay, T) {
        let mut last = String::new();
        for _attempt in 0..5 {
            let (args, t) = make();
            match Relay::spawn(features, &args) {
                Started::Ready(r) => return (r, t),
                Started::Exited(status, log) => {
                    if says_address_in_use(&log) {
                        last = log;
                        continue;
                    }
                    panic!("ringrelay {args:?} exited early ({status}); stderr:\n{log}");
                }
            }
        }
        panic!("ringrelay kept finding its ports in use; last stderr:\n{last}");
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("kill");
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                if let Some(t) = self.log_thread.take() {
                    let _ = t.join();
                }
                return self.exit;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }

    /// Panics (with the daemon's stderr) if the process has exited.
    pub fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            self.exit = Some(status);
            if let Some(t) = self.log_thread.take() {
                let _ = t.join();
            }
            panic!(
                "ringrelay exited ({status}) {when}; stderr:\n{}",
                self.log()
            );
        }
    }

    /// SIGTERM, then asserts a clean exit (code 0) within [`EXIT_TIMEOUT`].
    pub fn stop(mut self) {
        self.terminate();
        match self.wait_exit(EXIT_TIMEOUT) {
            Some(status) if status.code() == Some(0) => {}
            Some(status) => panic!(
                "ringrelay exited with {status} after SIGTERM; stderr:\n{}",
                self.log()
            ),
            None => panic!(
                "ringrelay did not exit within {EXIT_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- ringrelay ({:?}) stderr ---\n{}--- end ---",
                self.features,
                self.log()
            );
        }
    }
}

/// Runs `ringrelay ARGS` to completion (with a deadline) and returns (exit code, stdout, stderr).
pub fn run_to_end(features: Features, args: &[&str], cwd: &Path) -> (Option<i32>, String, String) {
    let o = output_within(
        command(features).args(args).current_dir(cwd),
        &format!("ringrelay {args:?}"),
        EXIT_TIMEOUT,
    );
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs `cmd` to completion within `limit` (stdin empty, stdout and stderr collected), killing
/// it at the deadline and panicking with its stderr.
pub fn output_within(cmd: &mut Command, what: &str, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: spawn: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let e = err_t.join().unwrap_or_default();
            panic!(
                "{what}: did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&e)
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// Compiles the C reader example contrib/c/rr_tail.c into `dir` with warnings as errors.
pub fn build_c_example(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/c/rr_tail.c");
    let exe = dir.join("rr_tail");
    let o = output_within(
        Command::new("cc")
            .args([
                "-std=c11",
                "-D_DEFAULT_SOURCE",
                "-O2",
                "-Wall",
                "-Werror",
                "-o",
            ])
            .arg(&exe)
            .arg(&src)
            .arg("-lm"),
        "cc rr_tail.c",
        Duration::from_secs(60),
    );
    assert!(
        o.status.success(),
        "cc rr_tail.c failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    exe
}
