//! The `[global]` section: its keys ([`GLOBAL_KEYS`]), their values and defaults
//! ([`Global`]), each key's range, and the limits that span keys (registered buffers, pool
//! size), the metrics server's address and peers. Also the datagram slot headroom ([`DATAGRAM_HEADROOM`]) that, with `datagram_size`,
//! bounds the largest datagram relayed whole.

use crate::config::cidr::Cidr;
use crate::config::parse::quote;
use crate::config::splice::{SpliceMode, DEFAULT_PIPE_SIZE};
use crate::config::units::{parse_duration, parse_size};
use crate::config::values::{parse_bool, parse_u32_in};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Bytes of a datagram slot in front of the payload, on every receive path: a multishot
/// receive's kernel header (16 bytes, io_uring_recvmsg_out) whose last 4 bytes then take the
/// length prefix; the chain path leaves the same room, so that the largest datagram relayed
/// whole is `datagram_size - DATAGRAM_HEADROOM` whichever path this kernel gets.
pub const DATAGRAM_HEADROOM: u32 = 16;

/// Whether the ring uses a kernel submission-polling thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqpollMode {
    /// Use SQPOLL where the kernel allows it; otherwise a plain ring and one warning.
    Auto,
    /// Insist on SQPOLL: fail if the kernel refuses.
    On,
    Off,
}

/// Which io_uring features the daemon may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureSet {
    /// Whatever the kernel offers, found by probing.
    Auto,
    /// The Linux 5.10 set only: single-shot ops, no provided-buffer rings.
    Baseline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogDest {
    Stderr,
    Syslog,
}

/// `[global]` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Global {
    pub sqpoll: SqpollMode,
    pub sqpoll_idle_ms: u32,
    pub sqpoll_cpu: Option<u32>,
    pub ring_entries: u32,
    pub buffer_size: u32,
    pub buffer_count: u32,
    /// Slot size for datagram receives: the largest datagram relayed whole.
    pub datagram_size: u32,
    /// Number of datagram slots.
    pub datagram_count: u32,
    pub features: FeatureSet,
    /// Whether eligible stream channels move their bytes through a pipe (channels may say
    /// otherwise).
    pub splice: SpliceMode,
    /// Requested size of each splicing channel's pipe (F_SETPIPE_SZ).
    pub pipe_size: u32,
    pub log: LogDest,
    pub log_level: log::LevelFilter,
    pub log_facility: String,
    pub syslog_socket: Option<PathBuf>,
    pub stats_interval: Duration,
    pub shutdown_timeout: Duration,
    pub shm_dir: PathBuf,
    pub shm_group: Option<String>,
    pub shm_mode: u32,
    pub user: Option<String>,
    pub group: Option<String>,
    pub require_user: bool,
    pub pidfile: Option<PathBuf>,
    /// Where the HTTP `/metrics` and `/healthz` server listens (off when `None`).
    pub metrics: Option<SocketAddr>,
    /// Peers the metrics server answers; others are closed at once.
    pub metrics_allow: Vec<Cidr>,
    /// How long an output may be down (or an input without its producer) before `/healthz`
    /// says 503.
    pub health_grace: Duration,
}

/// The default `metrics_allow`: loopback only.
pub fn loopback_only() -> Vec<Cidr> {
    vec![
        Cidr::parse("127.0.0.0/8").expect("literal"),
        Cidr::parse("::1").expect("literal"),
    ]
}

impl Default for Global {
    fn default() -> Self {
        Global {
            sqpoll: SqpollMode::Auto,
            sqpoll_idle_ms: 10,
            sqpoll_cpu: None,
            ring_entries: 1024,
            buffer_size: 64 * 1024,
            buffer_count: 256,
            datagram_size: 2048,
            datagram_count: 2048,
            features: FeatureSet::Auto,
            splice: SpliceMode::Auto,
            pipe_size: DEFAULT_PIPE_SIZE,
            log: LogDest::Stderr,
            log_level: log::LevelFilter::Info,
            log_facility: "daemon".into(),
            syslog_socket: None,
            stats_interval: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(5),
            shm_dir: PathBuf::from("/dev/shm/ringrelay"),
            shm_group: None,
            shm_mode: 0o640,
            user: None,
            group: None,
            require_user: false,
            pidfile: None,
            metrics: None,
            metrics_allow: loopback_only(),
            health_grace: Duration::from_secs(60),
        }
    }
}

/// Every key a `[global]` section may set.
pub(super) const GLOBAL_KEYS: &[&str] = &[
    "sqpoll",
    "sqpoll_idle_ms",
    "sqpoll_cpu",
    "ring_entries",
    "buffer_size",
    "buffer_count",
    "datagram_size",
    "datagram_count",
    "features",
    "splice",
    "pipe_size",
    "log",
    "log_level",
    "log_facility",
    "syslog_socket",
    "stats_interval",
    "shutdown_timeout",
    "shm_dir",
    "shm_group",
    "shm_mode",
    "user",
    "group",
    "require_user",
    "pidfile",
    "metrics",
    "metrics_allow",
    "health_grace",
];

/// Validates the `[global]` keys (name, value, line) into a [`Global`], reporting each bad
/// value at its line through `err`.
pub(super) fn parse_global(
    keys: &[(String, String, usize)],
    err: &mut dyn FnMut(usize, &str, String),
) -> Global {
    let mut g = Global::default();
    for (k, v, line) in keys {
        let line = *line;
        let r: Result<(), String> = (|| {
            match k.as_str() {
                "sqpoll" => {
                    g.sqpoll = match v.as_str() {
                        "auto" => SqpollMode::Auto,
                        "on" => SqpollMode::On,
                        "off" => SqpollMode::Off,
                        _ => return Err(format!("{} is not one of auto, on, off", quote(v))),
                    }
                }
                "sqpoll_idle_ms" => g.sqpoll_idle_ms = parse_u32_in(v, 1, 60_000)?,
                "sqpoll_cpu" => g.sqpoll_cpu = Some(parse_u32_in(v, 0, 4095)?),
                "ring_entries" => {
                    let n = parse_u32_in(v, 8, 32768)?;
                    if !n.is_power_of_two() {
                        return Err(format!("{n} is not a power of two"));
                    }
                    g.ring_entries = n
                }
                "buffer_size" => {
                    let n = parse_size(v)?;
                    if !(2048..=(16 << 20)).contains(&n) {
                        return Err(format!("{} is outside 2KiB..=16MiB", quote(v)));
                    }
                    g.buffer_size = n as u32
                }
                "buffer_count" => g.buffer_count = parse_u32_in(v, 8, 16384)?,
                "datagram_size" => {
                    let n = parse_size(v)?;
                    if !(256..=65536).contains(&n) {
                        return Err(format!("{} is outside 256B..=64KiB", quote(v)));
                    }
                    g.datagram_size = n as u32
                }
                "datagram_count" => g.datagram_count = parse_u32_in(v, 0, 16384)?,
                "features" => {
                    g.features = match v.as_str() {
                        "auto" => FeatureSet::Auto,
                        "baseline" => FeatureSet::Baseline,
                        _ => return Err(format!("{} is not one of auto, baseline", quote(v))),
                    }
                }
                "splice" => g.splice = SpliceMode::parse(v)?,
                "pipe_size" => {
                    let n = parse_size(v)?;
                    if !(4096..=(1 << 30)).contains(&n) {
                        return Err(format!("{} is outside 4KiB..=1GiB", quote(v)));
                    }
                    g.pipe_size = n as u32
                }
                "log" => {
                    g.log = match v.as_str() {
                        "stderr" => LogDest::Stderr,
                        "syslog" => LogDest::Syslog,
                        _ => return Err(format!("{} is not one of stderr, syslog", quote(v))),
                    }
                }
                "log_level" => {
                    g.log_level = match v.as_str() {
                        "error" => log::LevelFilter::Error,
                        "warn" | "warning" => log::LevelFilter::Warn,
                        "info" => log::LevelFilter::Info,
                        "debug" => log::LevelFilter::Debug,
                        "trace" => log::LevelFilter::Trace,
                        _ => {
                            return Err(format!(
                                "{} is not one of error, warn, info, debug, trace",
                                quote(v)
                            ))
                        }
                    }
                }
                "log_facility" => {
                    const F: &[&str] = &[
                        "daemon", "user", "local0", "local1", "local2", "local3", "local4",
                        "local5", "local6", "local7", "syslog",
                    ];
                    if !F.contains(&v.as_str()) {
                        return Err(format!("{} is not one of {}", quote(v), F.join(", ")));
                    }
                    g.log_facility = v.clone()
                }
                "syslog_socket" => g.syslog_socket = Some(abs_path(v)?),
                "stats_interval" => {
                    let d = parse_duration(v)?;
                    if d < Duration::from_millis(100) {
                        return Err("must be at least 100ms".into());
                    }
                    g.stats_interval = d
                }
                "shutdown_timeout" => g.shutdown_timeout = parse_duration(v)?,
                "shm_dir" => g.shm_dir = abs_path(v)?,
                "shm_group" => g.shm_group = Some(name_value(v)?),
                "shm_mode" => {
                    let m = u32::from_str_radix(v.trim_start_matches("0o"), 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| format!("{} is not an octal mode such as 0640", quote(v)))?;
                    if m & 0o002 != 0 {
                        return Err("regions must not be world-writable".into());
                    }
                    g.shm_mode = m
                }
                "user" => g.user = Some(name_value(v)?),
                "group" => g.group = Some(name_value(v)?),
                "require_user" => g.require_user = parse_bool(v)?,
                "pidfile" => g.pidfile = Some(abs_path(v)?),
                "metrics" => g.metrics = parse_metrics_addr(v)?,
                "metrics_allow" => g.metrics_allow = parse_allow_list(v)?,
                "health_grace" => g.health_grace = parse_duration(v)?,
                _ => unreachable!("key list checked before"),
            }
            Ok(())
        })();
        if let Err(m) = r {
            err(line, k, m);
        }
    }
    if g.buffer_count + g.datagram_count > 16384 {
        let line = keys
            .iter()
            .find(|(k, _, _)| k == "buffer_count" || k == "datagram_count")
            .map(|x| x.2)
            .unwrap_or(1);
        err(
            line,
            "datagram_count",
            "buffer_count + datagram_count exceeds 16384 registered buffers".into(),
        );
    }
    if u64::from(g.buffer_size) * u64::from(g.buffer_count) > 1 << 30 {
        let line = keys
            .iter()
            .find(|(k, _, _)| k == "buffer_count" || k == "buffer_size")
            .map(|x| x.2)
            .unwrap_or(1);
        err(
            line,
            "buffer_count",
            "buffer_size x buffer_count exceeds 1GiB".into(),
        );
    }
    g
}

/// `metrics = HOST:PORT` with a numeric host (`127.0.0.1:9100`, `[::1]:9100`), or `off`.
fn parse_metrics_addr(v: &str) -> Result<Option<SocketAddr>, String> {
    if v == "off" {
        return Ok(None);
    }
    v.parse::<SocketAddr>().map(Some).map_err(|_| {
        format!(
            "{} is not HOST:PORT with a numeric address (e.g. 127.0.0.1:9100 or [::1]:9100)",
            quote(v)
        )
    })
}

/// `metrics_allow = CIDR,...` (at least one range).
fn parse_allow_list(v: &str) -> Result<Vec<Cidr>, String> {
    let list: Vec<Cidr> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Cidr::parse)
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Err("needs at least one address range (e.g. 127.0.0.0/8)".into());
    }
    Ok(list)
}

fn abs_path(v: &str) -> Result<PathBuf, String> {
    if !v.starts_with('/') {
        return Err(format!("{} must be an absolute path", quote(v)));
    }
    Ok(PathBuf::from(v))
}

fn name_value(v: &str) -> Result<String, String> {
    if v.is_empty()
        || v.len() > 32
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(format!("{} is not a user or group name", quote(v)));
    }
    Ok(v.to_string())
}
