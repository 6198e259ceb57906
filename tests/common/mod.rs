//! Shared helpers for the integration tests: they spawn the real `ringrelay` binary on loopback
//! and check what comes out of it byte for byte.
//!
//! What lives here:
//! * [`TempDir`]: a unique directory per test (config, output files, shm regions), removed on drop.
//! * [`Relay`]: the daemon as a child process. It is started with a config written into a
//!   [`TempDir`], waited for until it logs `ready`, and killed when dropped so nothing leaks.
//!   Ports are picked free by binding port 0 and dropping the socket; if the daemon still finds
//!   one taken ("address in use"), the whole setup is retried with new ports.
//! * Sinks that collect what the relay sends: [`StreamSink`] (a TCP or Unix subscriber, or one
//!   connection of a [`Collector`]) and [`DatagramSink`] (a UDP destination).
//! * Data helpers: a seeded pattern generator, FNV-1a checksums and [`assert_same_bytes`], which
//!   reports length, checksum and first differing offset instead of dumping megabytes.
//! * [`in_both_feature_sets!`]: every relay scenario runs twice, once with the features this
//!   kernel offers and once with `RINGRELAY_FEATURES=baseline` (the Linux 5.10 set).
//!
//! Every wait has a deadline and panics with what it was waiting for.
#![allow(dead_code)]

pub mod counters;
pub mod lines;
pub mod mqtt;
#[allow(unused_imports)]
pub use counters::{counter_in, output_counter, output_counters_line};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long the daemon may take to log `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a bulk transfer of a few tens of MiB may take on a slow, busy machine (debug build).
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the daemon may take to exit after SIGTERM: its shutdown_timeout (5s) plus slack.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// The byte a producer sends, one at a time, until every subscriber has seen one (see [`ping_stream`]).
pub const PING: u8 = 0xAA;
/// The datagram sent, repeatedly, until every framed subscriber has seen one.
pub const PING_DATAGRAM: &[u8] = b"PING";

pub const LOCALHOST4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const LOCALHOST6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

// ------------------------------------------------------------------------------------------------
// Feature sets

/// Which io_uring feature set the daemon runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Features {
    /// Whatever this kernel offers (`features = auto`).
    Auto,
    /// The Linux 5.10 set, forced with `RINGRELAY_FEATURES=baseline`.
    Baseline,
}

/// Turns each named scenario `fn name(features: Features)` into two tests, `name::auto` and
/// `name::baseline`, so the same suite covers the fallback paths on a new kernel.
#[macro_export]
macro_rules! in_both_feature_sets {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn auto() {
                    super::$scenario($crate::common::Features::Auto)
                }
                #[test]
                fn baseline() {
                    super::$scenario($crate::common::Features::Baseline)
                }
            }
        )*
    };
}

// ------------------------------------------------------------------------------------------------
// Deadlines

/// The relay's log lines containing `what`.
pub fn lines_with(relay: &Relay, what: &str) -> Vec<String> {
    relay
        .log()
        .lines()
        .filter(|l| l.contains(what))
        .map(String::from)
        .collect()
}

/// Waits (10 s at most) until the relay's log holds a line containing `what`.
pub fn wait_for_log(relay: &Relay, what: &str) {
    wait_for(
        &format!("a log line with {what:?}"),
        Duration::from_secs(10),
        || relay.log().contains(what),
    );
}

/// Polls `ready` every millisecond or so until it is true; panics naming `what` at the deadline.
pub fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Like [`wait_for`] but returns false at the deadline instead of panicking.
pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

// ------------------------------------------------------------------------------------------------
// Temporary directories

static TEMP_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory unique to one test run, removed on drop (kept, and its path printed, when the test
/// panicked, so the config and output files can be looked at).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "ringrelay-test-{}-{n}-{nanos:x}-{tag}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The `[global]` section every relay test starts its config with: the shm directory inside
    /// this temp dir (so parallel daemons never share regions) and a short shutdown timeout.
    pub fn global_section(&self) -> String {
        format!(
            "[global]\nshm_dir = {}\nshutdown_timeout = 5s\nlog_level = info\n\n",
            self.join("shm").display()
        )
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A shared-memory directory for one daemon, `/dev/shm/rr-test-<pid>-<tag><n>` (a tmpfs, like
/// the default `shm_dir`), removed on drop (kept, and its path printed, when the test panicked).
pub struct ShmDir(PathBuf);

impl ShmDir {
    pub fn new(tag: &str) -> ShmDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = PathBuf::from(format!(
            "/dev/shm/rr-test-{}-{tag}{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        ShmDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as config text and command-line argument.
    pub fn str(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }

    /// A `[global]` section with this `shm_dir`, like [`TempDir::global_section`].
    pub fn global_section(&self) -> String {
        format!(
            "[global]\nshm_dir = {}\nshutdown_timeout = 5s\nlog_level = info\n\n",
            self.str()
        )
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("shm regions kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Free ports

/// A TCP port that was free on `ip` a moment ago (bound to port 0, read, dropped).
pub fn free_tcp_port(ip: IpAddr) -> u16 {
    let l = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind port 0");
    l.local_addr().unwrap().port()
}

/// A UDP port that was free on `ip` a moment ago.
pub fn free_udp_port(ip: IpAddr) -> u16 {
    let s = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind port 0");
    s.local_addr().unwrap().port()
}

/// `HOST:PORT` as written in a URL: IPv6 in brackets.
pub fn hostport(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// Whether this machine can bind `[::1]` (some containers have no IPv6 at all).
pub fn ipv6_available() -> bool {
    UdpSocket::bind("[::1]:0").is_ok() && TcpListener::bind("[::1]:0").is_ok()
}

// ------------------------------------------------------------------------------------------------
// The daemon

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

// ------------------------------------------------------------------------------------------------
// Data

/// `len` pseudo-random bytes from `seed` (xorshift64*), reproducible across runs. The first byte
/// is never [`PING`], so a ping prefix can be stripped unambiguously.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    if let Some(b) = v.first_mut() {
        if *b == PING {
            *b = 0x55;
        }
    }
    v
}

/// A sequence of `count` datagrams: each starts with its sequence number (u32 big-endian) and is
/// at least 5 bytes (so never [`PING_DATAGRAM`]). Sizes vary from 5 bytes to `max_size`, with a
/// few at `max_size` itself.
pub fn datagrams(seed: u64, count: usize, max_size: usize) -> Vec<Vec<u8>> {
    assert!(max_size >= 5);
    let sizes = pattern(seed ^ 0xD47A, count * 4);
    (0..count)
        .map(|i| {
            let r = u32::from_le_bytes(sizes[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
            let len = match i % 97 {
                13 => max_size,
                50 => 5,
                _ => 5 + r % (max_size.min(1472) - 4),
            };
            let mut d = pattern(seed.wrapping_add(i as u64), len);
            d[..4].copy_from_slice(&(i as u32).to_be_bytes());
            d
        })
        .collect()
}

/// FNV-1a, 64 bit.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Asserts `got == want` byte for byte, reporting lengths, checksums and the first difference.
/// The stream on the connection that went away followed by the redialed collector's is
/// exactly `want`: nothing lost, nothing twice.
pub fn assert_redialed_stream(gone: &StreamSink, back: &Collector, want: &[u8]) {
    let mut got = gone.data();
    got.extend_from_slice(&back.concatenated());
    assert_same_bytes("first connection followed by the redialed one", &got, want);
}

pub fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes (fnv {:016x}), want {} bytes (fnv {:016x}); first difference at offset {first}",
        got.len(),
        fnv1a(got),
        want.len(),
        fnv1a(want)
    );
}

/// Asserts that two datagram sequences are equal, reporting the first one that differs.
pub fn assert_same_datagrams(what: &str, got: &[Vec<u8>], want: &[Vec<u8>]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            let gseq = g
                .get(..4)
                .map(|s| u32::from_be_bytes(s.try_into().unwrap()));
            panic!(
                "{what}: datagram {i} differs: got {} bytes (seq {gseq:?}, fnv {:016x}), want {} bytes (fnv {:016x})",
                g.len(),
                fnv1a(g),
                w.len(),
                fnv1a(w)
            );
        }
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: got {} datagrams, want {}",
        got.len(),
        want.len()
    );
}

/// `data` without its leading [`PING`] bytes.
pub fn strip_pings(data: &[u8]) -> &[u8] {
    let n = data.iter().take_while(|&&b| b == PING).count();
    &data[n..]
}

/// Splits a u32be length-prefixed stream into its records; the second value is the number of
/// bytes of an incomplete record at the end.
pub fn split_frames(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while data.len() - at >= 4 {
        let len = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        if data.len() - at - 4 < len {
            break;
        }
        out.push(&data[at + 4..at + 4 + len]);
        at += 4 + len;
    }
    (out, data.len() - at)
}

/// Records of a framed stream after its leading [`PING_DATAGRAM`] records.
pub fn framed_after_pings(data: &[u8]) -> Vec<Vec<u8>> {
    let (frames, _) = split_frames(data);
    frames
        .into_iter()
        .skip_while(|f| *f == PING_DATAGRAM)
        .map(|f| f.to_vec())
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Stream sinks (subscribers, collector connections)

/// How a stream sink's connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Orderly close (read returned 0).
    Eof,
    /// A read error such as ECONNRESET.
    Error(String),
}

#[derive(Default)]
struct StreamState {
    data: Vec<u8>,
    end: Option<End>,
}

/// Reads a stream in a thread until EOF or error, keeping every byte.
pub struct StreamSink {
    state: Arc<Mutex<StreamState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    name: String,
    tcp: Option<TcpStream>,
}

/// What a [`StreamSink`] reads from.
pub trait SinkStream: Read + Send + 'static {
    fn set_timeout(&self, d: Duration);
}
impl SinkStream for TcpStream {
    fn set_timeout(&self, d: Duration) {
        self.set_read_timeout(Some(d)).unwrap();
    }
}
impl SinkStream for UnixStream {
    fn set_timeout(&self, d: Duration) {
        self.set_read_timeout(Some(d)).unwrap();
    }
}

impl StreamSink {
    pub fn new<S: SinkStream>(name: &str, mut s: S) -> StreamSink {
        s.set_timeout(Duration::from_millis(50));
        let state = Arc::new(Mutex::new(StreamState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = state.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            state.lock().unwrap().end = Some(End::Eof);
                            return;
                        }
                        Ok(n) => state.lock().unwrap().data.extend_from_slice(&buf[..n]),
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut
                                || e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            state.lock().unwrap().end = Some(End::Error(e.to_string()));
                            return;
                        }
                    }
                }
            })
        };
        StreamSink {
            state,
            stop,
            thread: Some(thread),
            name: name.to_string(),
            tcp: None,
        }
    }

    /// Reads a TCP connection, keeping a handle on it for [`StreamSink::tcp_handle`].
    pub fn from_tcp(name: &str, s: TcpStream) -> StreamSink {
        let handle = s.try_clone().expect("clone tcp stream");
        let mut sink = StreamSink::new(name, s);
        sink.tcp = Some(handle);
        sink
    }

    /// Connects to a TCP subscriber endpoint (retrying briefly) and starts reading.
    pub fn tcp(name: &str, addr: SocketAddr) -> StreamSink {
        StreamSink::from_tcp(name, connect_tcp(addr))
    }

    /// Another handle on the TCP connection (for a half-close), if this sink reads one.
    pub fn tcp_handle(&self) -> Option<TcpStream> {
        self.tcp
            .as_ref()
            .map(|s| s.try_clone().expect("clone tcp stream"))
    }

    /// Connects to a Unix subscriber endpoint (retrying briefly) and starts reading.
    pub fn unix(name: &str, path: &Path) -> StreamSink {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match UnixStream::connect(path) {
                Ok(s) => return StreamSink::new(name, s),
                Err(e) if Instant::now() >= deadline => {
                    panic!("{name}: connect to {}: {e}", path.display())
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.state.lock().unwrap().data.len()
    }

    /// Makes room for `n` more bytes up front, so a reader thread that must keep up with a
    /// fast stream never pauses to move a large buffer.
    pub fn reserve(&self, n: usize) {
        self.state.lock().unwrap().data.reserve(n);
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn data(&self) -> Vec<u8> {
        self.state.lock().unwrap().data.clone()
    }

    /// Runs `f` on the bytes received so far without copying them.
    pub fn with_data<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.state.lock().unwrap().data)
    }

    pub fn end(&self) -> Option<End> {
        self.state.lock().unwrap().end.clone()
    }

    /// Waits until at least `n` bytes arrived; panics at the deadline.
    pub fn wait_len(&self, n: usize, timeout: Duration) {
        wait_for(
            &format!("{} to receive {n} bytes", self.name),
            timeout,
            || {
                let s = self.state.lock().unwrap();
                if s.data.len() < n {
                    if let Some(end) = &s.end {
                        panic!(
                            "{}: connection ended ({end:?}) after {} of {n} bytes",
                            self.name,
                            s.data.len()
                        );
                    }
                    false
                } else {
                    true
                }
            },
        );
    }

    /// Waits for the connection to end; `None` at the deadline.
    pub fn wait_end(&self, timeout: Duration) -> Option<End> {
        let mut end = None;
        wait_until(timeout, || {
            end = self.end();
            end.is_some()
        });
        end
    }
}

impl Drop for StreamSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects to `addr`, retrying for up to 5 seconds.
pub fn connect_tcp(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => {
                s.set_nodelay(true).unwrap();
                // A producer whose writes block for this long fails instead of hanging.
                s.set_write_timeout(Some(TRANSFER_TIMEOUT)).unwrap();
                return s;
            }
            Err(e) if Instant::now() >= deadline => panic!("connect to {addr}: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Makes sure every sink is registered with the relay before the real data start: writes one
/// [`PING`] byte at a time through `producer` until each sink has received at least one byte.
/// A stream is in order, so a sink that saw a ping gets everything written after it; each sink
/// then holds some pings followed by the data (see [`strip_pings`]). Returns the pings written.
pub fn ping_stream(producer: &mut impl Write, sinks: &[&StreamSink]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut sent = 0;
    loop {
        producer.write_all(&[PING]).expect("write ping");
        sent += 1;
        if wait_until(Duration::from_millis(25), || {
            sinks.iter().all(|s| !s.is_empty())
        }) {
            return sent;
        }
        if Instant::now() >= deadline {
            let lens: Vec<_> = sinks.iter().map(|s| (s.name(), s.len())).collect();
            panic!("sinks saw no ping within 15s after {sent} pings: {lens:?}");
        }
    }
}

/// Waits until `sink` holds pings followed by exactly `want`, then compares byte for byte.
pub fn expect_after_pings(sink: &StreamSink, want: &[u8], timeout: Duration) {
    let ok = wait_until(timeout, || {
        sink.with_data(|d| strip_pings(d).len() >= want.len()) || sink.end().is_some()
    });
    let end = sink.end();
    let ok = ok && sink.with_data(|d| strip_pings(d).len() >= want.len());
    sink.with_data(|d| {
        let got = strip_pings(d);
        if !ok {
            panic!(
                "{}: got {} of {} bytes (connection end: {end:?}; waited at most {timeout:?})",
                sink.name(),
                got.len(),
                want.len(),
            );
        }
        assert_same_bytes(sink.name(), got, want);
    });
}

/// The fewest payload bytes (after the pings) any of `sinks` holds.
pub fn min_after_pings(sinks: &[&StreamSink]) -> usize {
    sinks
        .iter()
        .map(|s| s.with_data(|d| strip_pings(d).len()))
        .min()
        .unwrap_or(0)
}

/// Writes `data` in 64 KiB pieces, never more than `window` bytes ahead of `delivered()` (what
/// the slowest reader that must keep up has received). This keeps a reader thread that the
/// scheduler starves for a moment from falling `max_backlog` behind and being disconnected as
/// slow: these tests are about correctness, not speed. Panics if no progress is made for
/// [`TRANSFER_TIMEOUT`].
pub fn write_windowed(
    w: &mut impl Write,
    data: &[u8],
    window: usize,
    delivered: impl Fn() -> usize,
    what: &str,
) {
    const PIECE: usize = 64 * 1024;
    let mut sent = 0;
    while sent < data.len() {
        let n = PIECE.min(data.len() - sent);
        let mut done = 0;
        if !wait_until(TRANSFER_TIMEOUT, || {
            done = delivered();
            done + window >= sent + n
        }) {
            panic!("{what}: readers stuck at {done} of the {sent} bytes written so far");
        }
        w.write_all(&data[sent..sent + n])
            .unwrap_or_else(|e| panic!("{what}: write at offset {sent}: {e}"));
        sent += n;
    }
}

// ------------------------------------------------------------------------------------------------
// Collectors (what a `tcp://` output dials)

/// A listener that accepts every connection and reads each into its own [`StreamSink`].
pub struct Collector {
    conns: Arc<Mutex<Vec<Arc<StreamSink>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Collector {
    /// Listens on `addr` (port 0 picks one), retrying the bind for a few seconds (the port may
    /// have been ours a moment ago). `rcvbuf` fixes the accepted sockets' receive buffer.
    pub fn listen(addr: SocketAddr, rcvbuf: Option<usize>) -> Collector {
        use socket2::{Domain, Socket, Type};
        let deadline = Instant::now() + Duration::from_secs(5);
        let sock = loop {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
            s.set_reuse_address(true).unwrap();
            if let Some(n) = rcvbuf {
                s.set_recv_buffer_size(n).unwrap();
            }
            match s.bind(&addr.into()).and_then(|_| s.listen(16)) {
                Ok(()) => break s,
                Err(e) if Instant::now() >= deadline => panic!("collector bind {addr}: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        };
        let listener: TcpListener = sock.into();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Arc<StreamSink>>>> = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let conns = conns.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(false).unwrap();
                            let mut c = conns.lock().unwrap();
                            let name = format!("collector connection {}", c.len() + 1);
                            c.push(Arc::new(StreamSink::from_tcp(&name, s)));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
                // The listener closes here: new connections are refused from now on.
            })
        };
        Collector {
            conns,
            stop,
            thread: Some(thread),
            addr,
        }
    }

    /// The connections accepted so far, in order.
    pub fn connections(&self) -> Vec<Arc<StreamSink>> {
        self.conns.lock().unwrap().clone()
    }

    /// Bytes received over all connections so far.
    pub fn total_len(&self) -> usize {
        self.connections().iter().map(|c| c.len()).sum()
    }

    /// Every connection's bytes, concatenated in accept order.
    pub fn concatenated(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for c in self.connections() {
            v.extend_from_slice(&c.data());
        }
        v
    }

    /// The collector goes away mid-stream: once its first connection holds `after` bytes it
    /// stops listening and half-closes that connection, reading on until the relay closes its
    /// end (so every byte the relay wrote there is seen). Returns that connection; the relay
    /// must not have handed it the whole `total`, or there is no redial left to test.
    pub fn leave_mid_stream(&mut self, after: usize, total: usize) -> Arc<StreamSink> {
        wait_for("the relay to dial the collector", TRANSFER_TIMEOUT, || {
            !self.connections().is_empty()
        });
        let conn = self.connections()[0].clone();
        conn.wait_len(after, TRANSFER_TIMEOUT);
        self.stop_listening();
        let raw = conn.tcp_handle().expect("a tcp connection");
        raw.shutdown(std::net::Shutdown::Write).expect("half-close");
        drop(raw);
        let end = conn.wait_end(TRANSFER_TIMEOUT);
        assert!(
            end.is_some(),
            "the relay never closed its connection after the collector's FIN (it read {} of {total} bytes on it)",
            conn.len()
        );
        assert!(
            conn.len() < total,
            "the whole stream went to the first connection: nothing left to test the redial with"
        );
        conn
    }

    /// After [`Collector::leave_mid_stream`]: a second away, then back on the same port. Waits
    /// until the old connection and the new collector carry `total` bytes between them.
    pub fn come_back(gone: &Arc<StreamSink>, addr: SocketAddr, total: usize) -> Collector {
        thread::sleep(Duration::from_secs(1));
        let back = Collector::listen(addr, None);
        wait_for(
            "the two connections to carry the whole stream",
            TRANSFER_TIMEOUT,
            || gone.len() + back.total_len() >= total,
        );
        back
    }

    /// Closes the listening socket (accepted connections stay open).
    pub fn stop_listening(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop_listening();
    }
}

// ------------------------------------------------------------------------------------------------
// Datagram sinks (UDP destinations)

/// A bound UDP socket whose datagrams a thread collects.
pub struct DatagramSink {
    dgrams: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
    name: String,
}

impl DatagramSink {
    /// Binds `addr` (port 0 picks one) with a large receive buffer.
    pub fn bind(name: &str, addr: SocketAddr) -> DatagramSink {
        let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("{name}: bind {addr}: {e}"));
        DatagramSink::from_socket(name, s)
    }

    /// Binds `0.0.0.0:port` and joins `group` on the interface with address `iface`. `None` if
    /// the kernel refuses the join.
    pub fn multicast(name: &str, group: Ipv4Addr, iface: Ipv4Addr) -> Option<DatagramSink> {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).into())
            .unwrap();
        if let Err(e) = s.join_multicast_v4(&group, &iface) {
            eprintln!("{name}: the kernel refuses to join {group} on {iface}: {e}");
            return None;
        }
        Some(DatagramSink::from_socket(name, s.into()))
    }

    pub fn from_socket(name: &str, s: UdpSocket) -> DatagramSink {
        let sock = socket2::SockRef::from(&s);
        let _ = sock.set_recv_buffer_size(4 << 20);
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = s.local_addr().unwrap();
        let dgrams = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let dgrams = dgrams.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; 70 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = s.recv(&mut buf) {
                        dgrams.lock().unwrap().push(buf[..n].to_vec());
                    }
                }
            })
        };
        DatagramSink {
            dgrams,
            stop,
            thread: Some(thread),
            addr,
            name: name.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn count(&self) -> usize {
        self.dgrams.lock().unwrap().len()
    }

    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.dgrams.lock().unwrap().clone()
    }
}

impl Drop for DatagramSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `dgrams` from `sock` to `to`, never more than a window ahead of the slowest receiver
/// (`delivered()` returns how many of `dgrams` the slowest one has got). Loopback UDP loses
/// datagrams only when a receive buffer overflows; keeping at most 16 datagrams and 128 KiB in
/// flight keeps every buffer on the way far from full, so a datagram that goes missing is the
/// relay's doing and shows up as a timeout here.
pub fn send_windowed(
    sock: &UdpSocket,
    to: SocketAddr,
    dgrams: &[Vec<u8>],
    delivered: impl Fn() -> usize,
    what: &str,
) {
    const MAX_DGRAMS: usize = 16;
    const MAX_BYTES: usize = 128 * 1024;
    let mut ends = Vec::with_capacity(dgrams.len() + 1);
    ends.push(0usize);
    for d in dgrams {
        ends.push(ends.last().unwrap() + d.len());
    }
    for (i, d) in dgrams.iter().enumerate() {
        let mut done = 0;
        let ok = wait_until(TRANSFER_TIMEOUT, || {
            done = delivered();
            done >= i || (i - done < MAX_DGRAMS && ends[i + 1] - ends[done] <= MAX_BYTES)
        });
        if !ok {
            panic!(
                "{what}: the slowest receiver has {done} of the {i} datagrams sent so far after {TRANSFER_TIMEOUT:?} (a datagram was lost or the relay stalled)"
            );
        }
        sock.send_to(d, to).expect("send datagram");
    }
    let mut done = 0;
    if !wait_until(TRANSFER_TIMEOUT, || {
        done = delivered();
        done >= dgrams.len()
    }) {
        panic!(
            "{what}: the slowest receiver has {done} of {} datagrams after {TRANSFER_TIMEOUT:?}",
            dgrams.len()
        );
    }
}

/// Writes `data` from a thread in chunks of `chunk` bytes (a producer that may block under
/// back-pressure). The thread returns the stream when done, or the error.
pub fn write_in_thread<W: Write + Send + 'static>(
    mut w: W,
    data: Arc<Vec<u8>>,
    chunk: usize,
) -> JoinHandle<std::io::Result<W>> {
    thread::spawn(move || {
        for c in data.chunks(chunk) {
            w.write_all(c)?;
        }
        w.flush()?;
        Ok(w)
    })
}

/// Joins a thread with a deadline; panics naming `what` at the deadline.
pub fn join_with_timeout<T>(h: JoinHandle<T>, timeout: Duration, what: &str) -> T {
    wait_for(what, timeout, || h.is_finished());
    match h.join() {
        Ok(t) => t,
        Err(e) => std::panic::resume_unwind(e),
    }
}
