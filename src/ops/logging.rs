//! Logging: the one `log` logger of the process, writing to stderr or to syslog.
//!
//! Owns: the choice of log destination ([`LogTarget`]), the line format, the syslog connection
//! (ident `ringrelay`, pid included, facility by name, socket path overridable for tests) and
//! the level filter. [`init`] may be called again at any time (SIGHUP reload) to switch the
//! destination; [`set_level`] changes the level alone.
//!
//! Must never: block the event loop. The syslog socket is a non-blocking Unix datagram socket:
//! when the syslog daemon is slow or gone, a message is dropped and counted ([`dropped`]), and
//! the connection is retried on the next message. Stderr writes are plain blocking writes (a
//! terminal or a pipe the operator chose). Must never panic while logging.
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

use log::{Level, LevelFilter, Log, Metadata, Record};
use syslog::{Facility, Formatter3164, LogFormat, Severity};

/// The identifier every line and every syslog message carries.
pub const IDENT: &str = "ringrelay";

/// The syslog socket used when none is configured.
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

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

/// A connection to the syslog daemon, re-established on demand.
struct SyslogSink {
    path: PathBuf,
    formatter: Formatter3164,
    sock: Option<UnixDatagram>,
}

impl SyslogSink {
    fn connect(path: &Path) -> std::io::Result<UnixDatagram> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(path)?;
        sock.set_nonblocking(true)?;
        Ok(sock)
    }

    fn send(&mut self, level: Level, msg: &std::fmt::Arguments<'_>) {
        // The pid is read per message: the logger may have been installed before the fork.
        self.formatter.pid = std::process::id();
        let mut buf = Vec::with_capacity(128);
        if self
            .formatter
            .format(&mut buf, severity(level), msg)
            .is_err()
        {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // One retry with a fresh connection covers a restarted syslog daemon.
        for _ in 0..2 {
            if self.sock.is_none() {
                self.sock = Self::connect(&self.path).ok();
            }
            match &self.sock {
                Some(s) => match s.send(&buf) {
                    Ok(_) => return,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => self.sock = None,
                },
                None => break,
            }
        }
        DROPPED.fetch_add(1, Ordering::Relaxed);
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

/// Messages dropped because the syslog daemon was slow or unreachable, since start.
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
            Sink::Syslog(s) => s.send(record.level(), record.args()),
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
/// A syslog target connects at once, so a missing or refused socket is reported here, at
/// startup, with the path in the message. Later outages drop and count (see [`dropped`]).
pub fn init(target: &LogTarget, level: LevelFilter) -> Result<(), String> {
    let sink = match target {
        LogTarget::Stderr => Sink::Stderr,
        LogTarget::Syslog { facility, socket } => {
            let facility = parse_facility(facility)?;
            let path = socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SYSLOG_SOCKET));
            let sock = SyslogSink::connect(&path)
                .map_err(|e| format!("cannot connect to syslog at {}: {e}", path.display()))?;
            Sink::Syslog(SyslogSink {
                path,
                formatter: Formatter3164 {
                    facility,
                    // Local syslog daemons add the host name themselves.
                    hostname: None,
                    process: IDENT.to_string(),
                    pid: std::process::id(),
                },
                sock: Some(sock),
            })
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
        let missing = LogTarget::Syslog {
            facility: "daemon".into(),
            socket: Some(dir.join("nope")),
        };
        assert!(init(&missing, LevelFilter::Info)
            .unwrap_err()
            .contains("nope"));
    }
}
