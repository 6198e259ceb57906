//! Logging: the one `log` logger of the process, writing to stderr or to syslog.
//!
//! Owns: the choice of log destination ([`LogTarget`]), the line format, the syslog connection
//! (ident `ringrelay`, pid included, facility by name, socket path overridable for tests) and
//! the level filter. [`init`] may be called again at any time (SIGHUP reload) to switch the
//! destination; [`set_level`] changes the level alone.
//!
//! Must never: block the event loop, or stop the daemon (at start or later) because syslog is
//! not there. The syslog socket is a non-blocking Unix datagram socket: when the syslog daemon is
//! slow (its socket buffer full), a message is dropped and counted ([`dropped`]). Stderr writes
//! are plain blocking writes (a terminal or a pipe the operator chose). Must never panic while
//! logging.
//!
//! # Syslog not there (yet)
//!
//! Like syslog(3), the logger does not need the syslog daemon to be up: with no socket at the
//! path (at boot, before the syslog daemon; a syslog daemon restarting), messages go to stderr,
//! and one line on stderr says so when it starts (`syslog unavailable at /dev/log (...)`) or
//! when a running connection breaks. A log call tries to connect again at most every
//! [`RECONNECT_INTERVAL`] (a clock read when down, no syscall per message); once connected,
//! the first syslog message says how many messages went to stderr meanwhile. Only a message
//! that went nowhere (syslog busy, or stderr failing too) counts as dropped. A detached daemon's
//! stderr is `/dev/null`: those messages are lost, but the daemon keeps running.
//!
//! Foreground line format, one line per record:
//! `ringrelay[1234]: INFO channel seismo: input up`.
//! Syslog messages are RFC 3164: `<PRI>Mmm dd hh:mm:ss ringrelay[1234]: channel seismo: ...`;
//! the pid is read at each message, so a logger installed before [`crate::ops::daemonize::detach`]
//! reports the daemon's pid, not the parent's.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};
use syslog::{Facility, Formatter3164, LogFormat, Severity};

/// The identifier every line and every syslog message carries.
pub const IDENT: &str = "ringrelay";

/// The syslog socket used when none is configured.
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

/// While syslog is unreachable, how often a log call tries to connect again.
pub const RECONNECT_INTERVAL: Duration = Duration::from_secs(2);

/// Where log records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// `ringrelay[pid]: LEVEL message` lines on standard error (foreground runs).
    Stderr,
    /// The local syslog daemon through a Unix datagram socket.
    Syslog {
        /// Facility name as in syslog.conf: `daemon`, `user`, `local0`..`local7`, ...
        facility: String,
        /// Socket path; `None` means [`DEFAULT_SYSLOG_SOCKET`].
        socket: Option<PathBuf>,
    },
}

/// Parses a facility name (`daemon`, `local3`, `LOG_LOCAL3`, case-insensitive).
pub fn parse_facility(name: &str) -> Result<Facility, String> {
    name.trim().parse::<Facility>().map_err(|()| {
        format!(
            "unknown syslog facility `{name}` (expected daemon, user, syslog, local0..local7, \
             auth, authpriv, cron, ftp, kern, lpr, mail, news, ntp, uucp)"
        )
    })
}

/// Parses a level name (`error`, `warn`, `info`, `debug`, `trace`, or `off`), case-insensitive.
pub fn parse_level(name: &str) -> Result<LevelFilter, String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "off" => Ok(LevelFilter::Off),
        "error" => Ok(LevelFilter::Error),
        "warn" | "warning" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        _ => Err(format!(
            "unknown log level `{name}` (expected error, warn, info, debug or trace)"
        )),
    }
}

/// The syslog severity a `log` level maps to.
fn severity(level: Level) -> Severity {
    match level {
        Level::Error => Severity::LOG_ERR,
        Level::Warn => Severity::LOG_WARNING,
        Level::Info => Severity::LOG_INFO,
        Level::Debug | Level::Trace => Severity::LOG_DEBUG,
    }
}

/// A connection to the syslog daemon, re-established on demand, with stderr standing in while
/// there is none (see the module docs).
struct SyslogSink {
    path: PathBuf,
    formatter: Formatter3164,
    sock: Option<UnixDatagram>,
    /// No connection: messages go to stderr; the next attempt is due at `retry_at`.
    down: Option<Down>,
}

/// What the sink remembers while syslog is unreachable.
struct Down {
    retry_at: Instant,
    /// Messages written to stderr instead, reported once syslog is back.
    to_stderr: u64,
}

/// How one datagram send ended.
enum Sent {
    Done,
    /// The socket buffer is full: syslog is slow, not gone.
    Busy,
    Gone(std::io::Error),
}

impl SyslogSink {
    fn connect(path: &Path) -> std::io::Result<UnixDatagram> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(path)?;
        sock.set_nonblocking(true)?;
        Ok(sock)
    }

    /// A sink for `path`, connected if the socket is there; else down, with the line that says
    /// so written to `stderr`.
    fn open(path: PathBuf, facility: Facility, now: Instant, stderr: &mut dyn Write) -> SyslogSink {
        let mut sink = SyslogSink {
            path,
            formatter: Formatter3164 {
                facility,
                // Local syslog daemons add the host name themselves.
                hostname: None,
                process: IDENT.to_string(),
                pid: std::process::id(),
            },
            sock: None,
            down: None,
        };
        match Self::connect(&sink.path) {
            Ok(s) => sink.sock = Some(s),
            Err(e) => sink.go_down(now, "unavailable", &e, "appears", stderr),
        }
        sink
    }

    fn go_down(
        &mut self,
        now: Instant,
        how: &str,
        e: &std::io::Error,
        until: &str,
        stderr: &mut dyn Write,
    ) {
        self.sock = None;
        self.down = Some(Down {
            retry_at: now + RECONNECT_INTERVAL,
            to_stderr: 0,
        });
        let _ = writeln!(
            stderr,
            "{IDENT}: syslog {how} at {} ({e}): logging to stderr until it {until}",
            self.path.display()
        );
    }

    /// One RFC 3164 message (the pid read now: the logger may have been installed before the
    /// fork), or `None` if it cannot be formatted.
    fn format(&mut self, level: Level, msg: &std::fmt::Arguments<'_>) -> Option<Vec<u8>> {
        self.formatter.pid = std::process::id();
        let mut buf = Vec::with_capacity(128);
        self.formatter
            .format(&mut buf, severity(level), msg)
            .ok()
            .map(|()| buf)
    }

    /// Sends one formatted message on the current connection.
    fn send(&self, buf: &[u8]) -> Sent {
        let Some(sock) = &self.sock else {
            return Sent::Gone(std::io::ErrorKind::NotConnected.into());
        };
        match sock.send(buf) {
            Ok(_) => Sent::Done,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Sent::Busy,
            Err(e) => Sent::Gone(e),
        }
    }

    /// Connects again if syslog is down and the next attempt is due; once connected, says in
    /// syslog how many messages went to stderr meanwhile.
    fn reconnect_if_due(&mut self, now: Instant) {
        let Some(d) = &mut self.down else {
            return;
        };
        if now < d.retry_at {
            return;
        }
        match Self::connect(&self.path) {
            Ok(s) => {
                let missed = d.to_stderr;
                self.sock = Some(s);
                self.down = None;
                let back = format!(
                    "syslog at {} reachable again; {missed} messages went to stderr meanwhile",
                    self.path.display()
                );
                if let Some(buf) = self.format(Level::Info, &format_args!("{back}")) {
                    let _ = self.send(&buf);
                }
            }
            Err(_) => d.retry_at = now + RECONNECT_INTERVAL,
        }
    }

    /// Logs one record: to syslog when connected (reconnecting when due), else to `stderr`.
    fn log(
        &mut self,
        level: Level,
        msg: &std::fmt::Arguments<'_>,
        now: Instant,
        stderr: &mut dyn Write,
    ) {
        self.reconnect_if_due(now);
        if self.sock.is_some() {
            let Some(buf) = self.format(level, msg) else {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let sent = match self.send(&buf) {
                // One retry with a fresh connection covers a restarted syslog daemon.
                Sent::Gone(_) => match Self::connect(&self.path) {
                    Ok(s) => {
                        self.sock = Some(s);
                        self.send(&buf)
                    }
                    Err(e) => Sent::Gone(e),
                },
                sent => sent,
            };
            match sent {
                Sent::Done => return,
                Sent::Busy => {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Sent::Gone(e) => self.go_down(now, "unreachable", &e, "is back", stderr),
            }
        }
        if let Some(d) = &mut self.down {
            d.to_stderr += 1;
        }
        let line = format_stderr_line(std::process::id(), level, msg);
        if stderr.write_all(line.as_bytes()).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

enum Sink {
    Stderr,
    Syslog(SyslogSink),
}

struct RelayLogger {
    sink: Mutex<Sink>,
}

static LOGGER: RelayLogger = RelayLogger {
    sink: Mutex::new(Sink::Stderr),
};

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Messages that went nowhere since start: the syslog daemon was slow (its socket buffer full),
/// or it was unreachable and stderr failed too.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

impl Log for RelayLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // A poisoned lock only means a panic elsewhere while logging: keep logging.
        let mut sink = match self.sink.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match &mut *sink {
            Sink::Stderr => {
                let line = format_stderr_line(std::process::id(), record.level(), record.args());
                // Ignore errors: a closed stderr must not take the daemon down.
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Sink::Syslog(s) => s.log(
                record.level(),
                record.args(),
                Instant::now(),
                &mut std::io::stderr().lock(),
            ),
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// One foreground line: `ringrelay[pid]: LEVEL message\n`.
fn format_stderr_line(pid: u32, level: Level, args: &std::fmt::Arguments<'_>) -> String {
    format!("{IDENT}[{pid}]: {level} {args}\n")
}

/// Installs the logger (first call) or switches its destination (later calls, e.g. on reload),
/// and sets the level.
///
/// A syslog target connects at once; when the socket is missing or refuses, one line on stderr
/// says so and messages go to stderr until a later log call connects (see the module docs).
/// Fails only on an unknown facility.
pub fn init(target: &LogTarget, level: LevelFilter) -> Result<(), String> {
    let sink = match target {
        LogTarget::Stderr => Sink::Stderr,
        LogTarget::Syslog { facility, socket } => {
            let facility = parse_facility(facility)?;
            let path = socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SYSLOG_SOCKET));
            Sink::Syslog(SyslogSink::open(
                path,
                facility,
                Instant::now(),
                &mut std::io::stderr().lock(),
            ))
        }
    };
    {
        let mut guard = match LOGGER.sink.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *guard = sink;
    }
    // Fails only when a logger is already installed: ours (a re-init) or, in a test harness,
    // someone else's. Either way the level below still applies.
    let _ = log::set_logger(&LOGGER);
    set_level(level);
    Ok(())
}

/// Whether log records reach syslog now (a syslog target, connected).
pub fn syslog_up() -> bool {
    let sink = match LOGGER.sink.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    matches!(&*sink, Sink::Syslog(s) if s.sock.is_some())
}

/// Changes the level of records that are written (reload, `--log-level`).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facility_names() {
        assert_eq!(parse_facility("daemon").unwrap() as u8, 3 << 3);
        assert_eq!(parse_facility("DAEMON").unwrap() as u8, 3 << 3);
        assert_eq!(parse_facility("log_local3").unwrap() as u8, 19 << 3);
        assert_eq!(parse_facility(" local7 ").unwrap() as u8, 23 << 3);
        assert_eq!(parse_facility("user").unwrap() as u8, 1 << 3);
    }

    #[test]
    fn facility_errors_name_the_input() {
        let e = parse_facility("local8").unwrap_err();
        assert!(e.contains("`local8`"), "{e}");
        assert!(parse_facility("").is_err());
    }

    #[test]
    fn level_names() {
        assert_eq!(parse_level("info").unwrap(), LevelFilter::Info);
        assert_eq!(parse_level("WARN").unwrap(), LevelFilter::Warn);
        assert_eq!(parse_level("warning").unwrap(), LevelFilter::Warn);
        assert_eq!(parse_level("trace").unwrap(), LevelFilter::Trace);
        assert!(parse_level("verbose").unwrap_err().contains("verbose"));
    }

    #[test]
    fn stderr_line_format() {
        let line = format_stderr_line(42, Level::Warn, &format_args!("channel {}: down", "a"));
        assert_eq!(line, "ringrelay[42]: WARN channel a: down\n");
    }

    #[test]
    fn syslog_reaches_a_datagram_socket_and_switches_back() {
        let dir = std::env::temp_dir().join(format!("ringrelay-logtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let target = LogTarget::Syslog {
            facility: "local2".into(),
            socket: Some(path.clone()),
        };
        init(&target, LevelFilter::Info).unwrap();
        log::debug!("filtered out");
        log::warn!("hello {}", 7);
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        // local2 = 18, warning = 4: PRI 18*8+4 = 148.
        assert!(msg.starts_with("<148>"), "{msg}");
        let tail = format!("ringrelay[{}]: hello 7", std::process::id());
        assert!(msg.ends_with(&tail), "{msg}");
        init(&LogTarget::Stderr, LevelFilter::Info).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // (Here, not in a test of its own: the logger is one per process.) A missing socket is
        // no error; an unknown facility is.
        let missing = LogTarget::Syslog {
            facility: "daemon".into(),
            socket: Some(dir.join("nope")),
        };
        assert_eq!(init(&missing, LevelFilter::Info), Ok(()));
        assert!(!syslog_up());
        init(&LogTarget::Stderr, LevelFilter::Info).unwrap();
        let bad = LogTarget::Syslog {
            facility: "local9".into(),
            socket: None,
        };
        assert!(init(&bad, LevelFilter::Info)
            .unwrap_err()
            .contains("local9"));
    }

    /// A fresh directory for a socket standing in for the syslog daemon.
    fn log_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ringrelay-logtest-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn recv(server: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn without_syslog_the_console_stands_in_until_it_appears() {
        let dir = log_dir("late");
        let path = dir.join("log");
        let t0 = Instant::now();
        let mut err = Vec::new();
        let mut sink = SyslogSink::open(path.clone(), Facility::LOG_DAEMON, t0, &mut err);
        let said = String::from_utf8(std::mem::take(&mut err)).unwrap();
        assert!(
            said.starts_with(&format!(
                "ringrelay: syslog unavailable at {}",
                path.display()
            )),
            "{said}"
        );
        assert_eq!(said.lines().count(), 1, "{said}");
        let dropped_before = dropped();
        sink.log(Level::Warn, &format_args!("first"), t0, &mut err);
        // Syslog appears, but the next attempt is not due yet: still stderr, no connect.
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_nonblocking(true).unwrap();
        let t1 = t0 + RECONNECT_INTERVAL / 2;
        sink.log(Level::Warn, &format_args!("second"), t1, &mut err);
        let console = String::from_utf8(std::mem::take(&mut err)).unwrap();
        let pid = std::process::id();
        assert_eq!(
            console,
            format!("ringrelay[{pid}]: WARN first\nringrelay[{pid}]: WARN second\n")
        );
        assert!(server.recv(&mut [0u8; 64]).is_err(), "sent before due");
        // Due: reconnects, says so once in syslog, then logs there.
        let t2 = t0 + RECONNECT_INTERVAL;
        sink.log(Level::Warn, &format_args!("third"), t2, &mut err);
        server.set_nonblocking(false).unwrap();
        let back = recv(&server);
        assert!(
            back.ends_with(&format!(
                "syslog at {} reachable again; 2 messages went to stderr meanwhile",
                path.display()
            )),
            "{back}"
        );
        let third = recv(&server);
        assert!(
            third.ends_with(&format!("ringrelay[{pid}]: third")),
            "{third}"
        );
        assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
        // Syslog goes away: one line on stderr, the message there too, nothing dropped.
        drop(server);
        std::fs::remove_file(&path).unwrap();
        sink.log(Level::Error, &format_args!("fourth"), t2, &mut err);
        let console = String::from_utf8(std::mem::take(&mut err)).unwrap();
        assert!(
            console.starts_with(&format!(
                "ringrelay: syslog unreachable at {}",
                path.display()
            )),
            "{console}"
        );
        assert!(
            console.ends_with(&format!("ringrelay[{pid}]: ERROR fourth\n")),
            "{console}"
        );
        assert_eq!(console.lines().count(), 2, "{console}");
        assert_eq!(dropped(), dropped_before);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
