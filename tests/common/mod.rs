//! Shared helpers for the integration tests: they spawn the real `ringrelay` binary on loopback
//! and check what comes out of it byte for byte.
//!
//! What lives here (this file keeps the constants, feature sets, deadlines, directories, ports
//! and thread helpers; the rest is in submodules, re-exported so tests name everything as
//! `common::X`):
//! * [`TempDir`]: a unique directory per test (config, output files, shm regions), removed on drop.
//! * [`Relay`] (`relay`): the daemon as a child process. It is started with a config written
//!   into a [`TempDir`], waited for until it logs `ready`, and killed when dropped so nothing leaks.
//!   Ports are picked free by binding port 0 and dropping the socket; if the daemon still finds
//!   one taken ("address in use"), the whole setup is retried with new ports.
//! * Sinks that collect what the relay sends (`streams`, `datagrams`): [`StreamSink`] (a TCP or
//!   Unix subscriber, or one connection of a [`Collector`]) and [`DatagramSink`] (a UDP
//!   destination).
//! * Data helpers (`data`): a seeded pattern generator, FNV-1a checksums and
//!   [`assert_same_bytes`], which reports length, checksum and first differing offset instead of
//!   dumping megabytes.
//! * [`in_both_feature_sets!`]: every relay scenario runs twice, once with the features this
//!   kernel offers and once with `RINGRELAY_FEATURES=baseline` (the Linux 5.10 set).
//!
//! Every wait has a deadline and panics with what it was waiting for.
#![allow(dead_code)]

pub mod counters;
mod data;
mod datagrams;
pub mod lines;
pub mod mqtt;
mod relay;
mod streams;

#[allow(unused_imports)]
pub use counters::{counter_in, output_counter, output_counters_line};
#[allow(unused_imports)]
pub use data::*;
#[allow(unused_imports)]
pub use datagrams::*;
#[allow(unused_imports)]
pub use relay::*;
#[allow(unused_imports)]
pub use streams::*;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
// Threads

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
