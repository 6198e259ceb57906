//! The configuration file: an INI-like text parsed by hand into validated values.
//!
//! Owns: every key's name, default and range, and the `ringrelay check` command. Errors are
//! values that carry FILE, LINE and the key; one pass reports all of them. Pure apart from
//! reading the file: no sockets, no ring, and nothing from the engine, the driver or the
//! commands (they depend on this module, never the other way round).
//!
//! ```text
//! [global]
//! sqpoll = auto            # on | off | auto
//! buffer_size = 64KiB
//! [channel seismo]
//! input  = udp://0.0.0.0:5000 group=239.1.1.1 iface=eth0
//! output = tcp-listen://0.0.0.0:6000 max_clients=64
//! ```

pub mod sample;
pub mod splice;
pub mod units;
pub mod url;

use crate::config::sample::{DecimateSpec, SampleConfig, SampleType};
pub use crate::config::splice::SpliceMode;
use crate::config::units::{format_duration, format_size, parse_duration, parse_size};
use crate::config::url::{Endpoint, OnSlow, Role, Scheme, Target};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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

/// How datagrams are written to stream outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Datagram payloads back to back.
    None,
    /// Each datagram prefixed with its length as a big-endian u32.
    U32Be,
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
            pipe_size: crate::config::splice::DEFAULT_PIPE_SIZE,
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
        }
    }
}

/// One output of a channel, with its effective slow-output policy.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputConfig {
    pub endpoint: Endpoint,
    pub on_slow: OnSlow,
    pub max_backlog: u64,
    pub line: usize,
}

/// One `[channel NAME]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelConfig {
    pub name: String,
    pub line: usize,
    pub input: Endpoint,
    pub input_line: usize,
    pub outputs: Vec<OutputConfig>,
    pub framing: Framing,
    pub samples: Option<SampleConfig>,
    /// The channel's effective splice mode: its own `splice` key, or `[global]`'s when that
    /// is `on` or `off` and the channel is eligible, and `off` for an ineligible channel that
    /// did not ask for it.
    pub splice: SpliceMode,
}

impl ChannelConfig {
    /// Whether two channel configurations would behave the same (line numbers aside): a
    /// reload keeps such a channel running untouched.
    pub fn same_settings(&self, other: &ChannelConfig) -> bool {
        self.name == other.name
            && self.input == other.input
            && self.framing == other.framing
            && self.samples == other.samples
            && self.splice == other.splice
            && self.outputs.len() == other.outputs.len()
            && self.outputs.iter().zip(&other.outputs).all(|(a, b)| {
                a.endpoint == b.endpoint && a.on_slow == b.on_slow && a.max_backlog == b.max_backlog
            })
    }
}

/// A whole validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it came from (or `<command line>`).
    pub file: String,
    pub global: Global,
    pub channels: Vec<ChannelConfig>,
}

/// A configuration error with its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    /// The key (or section) concerned; empty if none.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, self.line, self.key, self.message
            )
        }
    }
}

/// Bytes of a datagram slot in front of the payload, on every receive path: a multishot
/// receive's kernel header (16 bytes, io_uring_recvmsg_out) whose last 4 bytes then take the
/// length prefix; the chain path leaves the same room, so that the largest datagram relayed
/// whole is `datagram_size - DATAGRAM_HEADROOM` whichever path this kernel gets.
pub const DATAGRAM_HEADROOM: u32 = 16;

/// Default `max_backlog` per output.
pub const DEFAULT_MAX_BACKLOG: u64 = 8 << 20;
/// Default decimated frames kept in a region.
pub const DEFAULT_SHM_FRAMES: u64 = 65536;
/// Smallest `shm_frames` accepted.
pub const MIN_SHM_FRAMES: u64 = 64;

const GLOBAL_KEYS: &[&str] = &[
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
];

const CHANNEL_KEYS: &[&str] = &[
    "input",
    "output",
    "framing",
    "sample",
    "interleave",
    "header_bytes",
    "sample_rate",
    "decimate",
    "shm",
    "shm_frames",
    "splice",
];

/// Reads and parses a file. An unreadable file is one error at line 0.
pub fn load(path: &str) -> Result<Config, Vec<ConfigError>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_str(path, &text),
        Err(e) => Err(vec![ConfigError {
            file: path.to_string(),
            line: 0,
            key: String::new(),
            message: format!("cannot read: {e}"),
        }]),
    }
}

/// Raw channel section before validation.
struct RawChannel {
    name: String,
    line: usize,
    keys: Vec<(String, String, usize)>,
}

/// Parses configuration text; `file` names it in errors.
pub fn parse_str(file: &str, text: &str) -> Result<Config, Vec<ConfigError>> {
    let mut errs: Vec<ConfigError> = Vec::new();
    let err = |errs: &mut Vec<ConfigError>, line: usize, key: &str, msg: String| {
        errs.push(ConfigError {
            file: file.to_string(),
            line,
            key: key.to_string(),
            message: msg,
        })
    };
    enum Section {
        None,
        Global,
        Channel(usize),
        Skip,
    }
    let mut section = Section::None;
    let mut global_keys: Vec<(String, String, usize)> = Vec::new();
    let mut seen_global = false;
    let mut channels: Vec<RawChannel> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        if let Some(inner) = content.strip_prefix('[') {
            let Some(inner) = inner.strip_suffix(']') else {
                err(
                    &mut errs,
                    line,
                    "",
                    format!("section header '{content}' lacks ']'"),
                );
                section = Section::Skip;
                continue;
            };
            let mut words = inner.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("global"), None, _) => {
                    if seen_global {
                        err(
                            &mut errs,
                            line,
                            "[global]",
                            "a second [global] section".into(),
                        );
                    }
                    seen_global = true;
                    section = Section::Global;
                }
                (Some("channel"), Some(name), None) => {
                    if !valid_channel_name(name) {
                        err(
                            &mut errs,
                            line,
                            "[channel]",
                            format!(
                                "channel name '{name}' must be 1-64 of A-Z a-z 0-9 _ . - and not start with '.'"
                            ),
                        );
                        section = Section::Skip;
                    } else if let Some(prev) = channels.iter().find(|c| c.name == name) {
                        err(
                            &mut errs,
                            line,
                            "[channel]",
                            format!("channel '{name}' is already defined at line {}", prev.line),
                        );
                        section = Section::Skip;
                    } else {
                        channels.push(RawChannel {
                            name: name.to_string(),
                            line,
                            keys: Vec::new(),
                        });
                        section = Section::Channel(channels.len() - 1);
                    }
                }
                (Some("channel"), None, _) => {
                    err(
                        &mut errs,
                        line,
                        "[channel]",
                        "a channel needs a name: [channel NAME]".into(),
                    );
                    section = Section::Skip;
                }
                _ => {
                    err(
                        &mut errs,
                        line,
                        "",
                        format!("unknown section [{inner}] (sections: [global], [channel NAME])"),
                    );
                    section = Section::Skip;
                }
            }
            continue;
        }
        let Some((k, v)) = content.split_once('=') else {
            err(
                &mut errs,
                line,
                "",
                format!("expected 'key = value', found '{content}'"),
            );
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            err(&mut errs, line, "", "missing key before '='".into());
            continue;
        }
        match section {
            Section::None => err(
                &mut errs,
                line,
                k,
                "key outside any section (start with [global] or [channel NAME])".into(),
            ),
            Section::Skip => {}
            Section::Global => {
                if !GLOBAL_KEYS.contains(&k) {
                    let hint = if CHANNEL_KEYS.contains(&k) {
                        " (it belongs in a [channel] section)".to_string()
                    } else {
                        suggest(k, GLOBAL_KEYS)
                    };
                    err(&mut errs, line, k, format!("unknown key in [global]{hint}"));
                } else if let Some((_, _, l)) = global_keys.iter().find(|(gk, _, _)| gk == k) {
                    err(&mut errs, line, k, format!("set twice (first at line {l})"));
                } else {
                    global_keys.push((k.to_string(), v.to_string(), line));
                }
            }
            Section::Channel(ci) => {
                let ch = &mut channels[ci];
                if !CHANNEL_KEYS.contains(&k) {
                    let hint = if GLOBAL_KEYS.contains(&k) {
                        " (it belongs in [global])".to_string()
                    } else {
                        suggest(k, CHANNEL_KEYS)
                    };
                    err(
                        &mut errs,
                        line,
                        k,
                        format!("unknown key in [channel {}]{hint}", ch.name),
                    );
                } else if k != "output" && ch.keys.iter().any(|(ck, _, _)| ck == k) {
                    let l = ch
                        .keys
                        .iter()
                        .find(|(ck, _, _)| ck == k)
                        .map(|x| x.2)
                        .unwrap_or(0);
                    err(&mut errs, line, k, format!("set twice (first at line {l})"));
                } else {
                    ch.keys.push((k.to_string(), v.to_string(), line));
                }
            }
        }
    }

    let global = parse_global(&global_keys, &mut |line, key, msg| {
        err(&mut errs, line, key, msg)
    });
    let mut out_channels = Vec::new();
    for rc in &channels {
        if let Some(c) = parse_channel(rc, &global, &mut |line, key, msg| {
            err(&mut errs, line, key, msg)
        }) {
            out_channels.push(c);
        }
    }
    if channels.is_empty() && errs.is_empty() {
        err(
            &mut errs,
            text.lines().count().max(1),
            "",
            "no [channel NAME] section: nothing to relay".into(),
        );
    }
    check_conflicts(&out_channels, &mut |line, key, msg| {
        err(&mut errs, line, key, msg)
    });
    if errs.is_empty() {
        Ok(Config {
            file: file.to_string(),
            global,
            channels: out_channels,
        })
    } else {
        errs.sort_by_key(|e| e.line);
        Err(errs)
    }
}

/// Builds the one-channel configuration of `ringrelay run --input URL --output URL...`.
pub fn from_cli(input: &str, outputs: &[String]) -> Result<Config, Vec<ConfigError>> {
    let mut text = String::from("[channel default]\n");
    text.push_str(&format!("input = {input}\n"));
    for o in outputs {
        text.push_str(&format!("output = {o}\n"));
    }
    parse_str("<command line>", &text)
}

fn valid_channel_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && !n.starts_with('.')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn suggest(k: &str, keys: &[&str]) -> String {
    let close = keys.iter().find(|cand| {
        let d = edit_distance(k, cand);
        d <= 2 && d < cand.len()
    });
    match close {
        Some(c) => format!(" (did you mean '{c}'?)"),
        None => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => Err(format!("'{v}' is not on or off")),
    }
}

fn parse_u32_in(v: &str, lo: u32, hi: u32) -> Result<u32, String> {
    v.parse::<u32>()
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| format!("'{v}' is not a whole number in {lo}..={hi}"))
}

fn parse_global(
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
                        _ => return Err(format!("'{v}' is not one of auto, on, off")),
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
                        return Err(format!("{v} is outside 2KiB..=16MiB"));
                    }
                    g.buffer_size = n as u32
                }
                "buffer_count" => g.buffer_count = parse_u32_in(v, 8, 16384)?,
                "datagram_size" => {
                    let n = parse_size(v)?;
                    if !(256..=65536).contains(&n) {
                        return Err(format!("{v} is outside 256B..=64KiB"));
                    }
                    g.datagram_size = n as u32
                }
                "datagram_count" => g.datagram_count = parse_u32_in(v, 0, 16384)?,
                "features" => {
                    g.features = match v.as_str() {
                        "auto" => FeatureSet::Auto,
                        "baseline" => FeatureSet::Baseline,
                        _ => return Err(format!("'{v}' is not one of auto, baseline")),
                    }
                }
                "splice" => g.splice = SpliceMode::parse(v)?,
                "pipe_size" => {
                    let n = parse_size(v)?;
                    if !(4096..=(1 << 30)).contains(&n) {
                        return Err(format!("{v} is outside 4KiB..=1GiB"));
                    }
                    g.pipe_size = n as u32
                }
                "log" => {
                    g.log = match v.as_str() {
                        "stderr" => LogDest::Stderr,
                        "syslog" => LogDest::Syslog,
                        _ => return Err(format!("'{v}' is not one of stderr, syslog")),
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
                                "'{v}' is not one of error, warn, info, debug, trace"
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
                        return Err(format!("'{v}' is not one of {}", F.join(", ")));
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
                        .ok_or_else(|| format!("'{v}' is not an octal mode such as 0640"))?;
                    if m & 0o002 != 0 {
                        return Err("regions must not be world-writable".into());
                    }
                    g.shm_mode = m
                }
                "user" => g.user = Some(name_value(v)?),
                "group" => g.group = Some(name_value(v)?),
                "require_user" => g.require_user = parse_bool(v)?,
                "pidfile" => g.pidfile = Some(abs_path(v)?),
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

fn abs_path(v: &str) -> Result<PathBuf, String> {
    if !v.starts_with('/') {
        return Err(format!("'{v}' must be an absolute path"));
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
        return Err(format!("'{v}' is not a user or group name"));
    }
    Ok(v.to_string())
}

fn parse_channel(
    rc: &RawChannel,
    g: &Global,
    err: &mut dyn FnMut(usize, &str, String),
) -> Option<ChannelConfig> {
    let mut ok = true;
    let mut input: Option<Endpoint> = None;
    let mut input_line = rc.line;
    let mut outputs = Vec::new();
    let mut framing = Framing::None;
    let mut sample: Option<(SampleType, usize)> = None;
    let mut interleave: (u32, usize) = (1, 0);
    let mut header_bytes: (u32, usize) = (0, 0);
    let mut sample_rate: Option<f64> = None;
    let mut decimate: Option<(DecimateSpec, usize)> = None;
    let mut shm: Option<(bool, usize)> = None;
    let mut shm_frames: (u64, usize) = (DEFAULT_SHM_FRAMES, 0);
    let mut sample_lines: Vec<(&str, usize)> = Vec::new();
    let mut splice: Option<(SpliceMode, usize)> = None;
    for (k, v, line) in &rc.keys {
        let line = *line;
        let r: Result<(), String> = (|| {
            match k.as_str() {
                "input" => {
                    input = Some(Endpoint::parse_for(v, Role::Input)?);
                    input_line = line;
                }
                "output" => {
                    let mut ep = Endpoint::parse_for(v, Role::Output)?;
                    let on_slow = ep
                        .opts
                        .on_slow
                        .take()
                        .unwrap_or_else(|| ep.default_on_slow());
                    let max_backlog = ep.opts.max_backlog.take().unwrap_or(DEFAULT_MAX_BACKLOG);
                    if max_backlog < u64::from(g.buffer_size) {
                        return Err(format!(
                            "max_backlog {} is smaller than one buffer ({})",
                            format_size(max_backlog),
                            format_size(u64::from(g.buffer_size))
                        ));
                    }
                    outputs.push(OutputConfig {
                        endpoint: ep,
                        on_slow,
                        max_backlog,
                        line,
                    });
                }
                "framing" => {
                    framing = match v.as_str() {
                        "none" => Framing::None,
                        "u32be" => Framing::U32Be,
                        _ => return Err(format!("'{v}' is not one of none, u32be")),
                    }
                }
                "sample" => {
                    sample = Some((SampleType::parse(v)?, line));
                }
                "interleave" => {
                    interleave = (parse_u32_in(v, 1, 1024)?, line);
                    sample_lines.push(("interleave", line));
                }
                "header_bytes" => {
                    header_bytes = (parse_u32_in(v, 0, 65507)?, line);
                    sample_lines.push(("header_bytes", line));
                }
                "sample_rate" => {
                    let r: f64 = v
                        .parse()
                        .ok()
                        .filter(|r: &f64| r.is_finite() && *r > 0.0 && *r < 1e12)
                        .ok_or_else(|| format!("'{v}' is not a positive rate in Hz"))?;
                    sample_rate = Some(r);
                    sample_lines.push(("sample_rate", line));
                }
                "decimate" => decimate = Some((DecimateSpec::parse(v)?, line)),
                "splice" => splice = Some((SpliceMode::parse(v)?, line)),
                "shm" => shm = Some((parse_bool(v)?, line)),
                "shm_frames" => {
                    let n: u64 = v
                        .parse()
                        .map_err(|_| format!("'{v}' is not a whole number of frames"))?;
                    if n < MIN_SHM_FRAMES {
                        return Err(format!("shm_frames must be at least {MIN_SHM_FRAMES}"));
                    }
                    if n > 1 << 28 {
                        return Err("shm_frames must be at most 268435456".into());
                    }
                    shm_frames = (n, line);
                    sample_lines.push(("shm_frames", line));
                }
                _ => unreachable!("key list checked before"),
            }
            Ok(())
        })();
        if let Err(m) = r {
            err(line, k, m);
            ok = false;
        }
    }
    let Some(input) = input else {
        if ok {
            err(
                rc.line,
                "input",
                format!("channel '{}' has no input", rc.name),
            );
        }
        return None;
    };
    // Sample and decimation keys hang together.
    let samples = match (&sample, &decimate) {
        (Some((st, _)), Some((spec, dline))) => {
            let want_shm = shm.map(|s| s.0).unwrap_or(true);
            if header_bytes.0 > 0 && input.scheme.is_stream() {
                err(
                    header_bytes.1,
                    "header_bytes",
                    "only datagram (udp) inputs have per-datagram headers".into(),
                );
                ok = false;
            }
            let frame = st.width() as u64 * u64::from(interleave.0);
            let largest = if input.scheme.is_stream() || g.datagram_count == 0 {
                g.buffer_size
            } else {
                g.datagram_size - DATAGRAM_HEADROOM
            };
            if u64::from(header_bytes.0) + frame > u64::from(largest) {
                err(
                    header_bytes.1.max(*dline),
                    "header_bytes",
                    format!(
                        "header_bytes {} plus one frame ({frame} bytes) exceeds the largest datagram relayed ({largest} bytes)",
                        header_bytes.0
                    ),
                );
                ok = false;
            }
            Some(SampleConfig {
                sample: *st,
                interleave: interleave.0,
                header_bytes: header_bytes.0,
                sample_rate,
                decimate: spec.clone(),
                shm: want_shm,
                shm_frames: shm_frames.0,
            })
        }
        (None, Some((_, dline))) => {
            err(*dline, "decimate", "decimate needs sample = TYPE".into());
            ok = false;
            None
        }
        (Some((_, sline)), None) => {
            err(
                *sline,
                "sample",
                "sample is set but decimate is not (e.g. decimate = mean:10)".into(),
            );
            ok = false;
            None
        }
        (None, None) => {
            for (k, l) in &sample_lines {
                err(*l, k, "only meaningful with sample and decimate".into());
                ok = false;
            }
            if let Some((true, l)) = shm {
                err(l, "shm", "shm = on needs sample and decimate".into());
                ok = false;
            }
            None
        }
    };
    let publishes = samples.as_ref().is_some_and(|s| s.shm);
    if outputs.is_empty() && !publishes {
        err(
            rc.line,
            "output",
            format!(
                "channel '{}' has no output (and publishes nothing to shm)",
                rc.name
            ),
        );
        ok = false;
    }
    if framing == Framing::U32Be && input.scheme.is_stream() {
        let line = rc
            .keys
            .iter()
            .find(|(k, _, _)| k == "framing")
            .map(|x| x.2)
            .unwrap_or(rc.line);
        err(
            line,
            "framing",
            "framing applies to datagram (udp) inputs only: a stream has no boundaries to keep"
                .into(),
        );
        ok = false;
    }
    let mut c = ChannelConfig {
        name: rc.name.clone(),
        line: rc.line,
        input,
        input_line,
        outputs,
        framing,
        samples,
        splice: SpliceMode::Off,
    };
    let why_not = crate::config::splice::ineligible_reason(&c);
    c.splice = match (splice, why_not) {
        (Some((SpliceMode::On, line)), Some(why)) => {
            err(line, "splice", format!("splice = on, but {why}"));
            ok = false;
            SpliceMode::Off
        }
        (Some((m, _)), None) => m,
        (None, None) => g.splice,
        (_, Some(_)) => SpliceMode::Off,
    };
    ok.then_some(c)
}

/// Two endpoints that would bind the same address or write the same file.
fn check_conflicts(chans: &[ChannelConfig], err: &mut dyn FnMut(usize, &str, String)) {
    let mut seen: Vec<(String, usize, String)> = Vec::new();
    for c in chans {
        let mut eps: Vec<(&Endpoint, usize, &str)> = vec![(&c.input, c.input_line, "input")];
        eps.extend(c.outputs.iter().map(|o| (&o.endpoint, o.line, "output")));
        for (ep, line, key) in eps {
            let claim = match (&ep.scheme, &ep.target, key) {
                (Scheme::TcpListen, Target::Inet { host, port }, _) if *port != 0 => {
                    Some(format!("tcp {host}:{port}"))
                }
                (Scheme::Udp, Target::Inet { host, port }, "input") if *port != 0 => {
                    Some(format!("udp {host}:{port}"))
                }
                (Scheme::UnixListen, Target::Path(p), _) => Some(format!("unix {}", p.display())),
                (Scheme::File, Target::Path(p), _) => Some(format!("file {}", p.display())),
                _ => None,
            };
            if let Some(claim) = claim {
                if let Some((_, l, ch)) = seen.iter().find(|(s, _, _)| *s == claim) {
                    err(
                        line,
                        key,
                        format!("{} is already used by channel '{ch}' at line {l}", ep.url()),
                    );
                } else {
                    seen.push((claim, line, c.name.clone()));
                }
            }
        }
    }
}

impl fmt::Display for Config {
    /// The normalized form `ringrelay check` prints: every effective value, defaults included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.global;
        writeln!(f, "# {} ({} channels)", self.file, self.channels.len())?;
        writeln!(f, "[global]")?;
        let sq = match g.sqpoll {
            SqpollMode::Auto => "auto",
            SqpollMode::On => "on",
            SqpollMode::Off => "off",
        };
        writeln!(f, "sqpoll = {sq}")?;
        writeln!(f, "sqpoll_idle_ms = {}", g.sqpoll_idle_ms)?;
        if let Some(c) = g.sqpoll_cpu {
            writeln!(f, "sqpoll_cpu = {c}")?;
        }
        writeln!(f, "ring_entries = {}", g.ring_entries)?;
        writeln!(
            f,
            "buffer_size = {}",
            format_size(u64::from(g.buffer_size)).replace(' ', "")
        )?;
        writeln!(f, "buffer_count = {}", g.buffer_count)?;
        writeln!(
            f,
            "datagram_size = {}",
            format_size(u64::from(g.datagram_size)).replace(' ', "")
        )?;
        writeln!(f, "datagram_count = {}", g.datagram_count)?;
        let feat = match g.features {
            FeatureSet::Auto => "auto",
            FeatureSet::Baseline => "baseline",
        };
        writeln!(f, "features = {feat}")?;
        writeln!(f, "splice = {}", g.splice.name())?;
        writeln!(
            f,
            "pipe_size = {}",
            format_size(u64::from(g.pipe_size)).replace(' ', "")
        )?;
        let log_s = match g.log {
            LogDest::Stderr => "stderr",
            LogDest::Syslog => "syslog",
        };
        writeln!(f, "log = {log_s}")?;
        writeln!(
            f,
            "log_level = {}",
            g.log_level.as_str().to_ascii_lowercase()
        )?;
        writeln!(f, "log_facility = {}", g.log_facility)?;
        if let Some(p) = &g.syslog_socket {
            writeln!(f, "syslog_socket = {}", p.display())?;
        }
        writeln!(f, "stats_interval = {}", format_duration(g.stats_interval))?;
        writeln!(
            f,
            "shutdown_timeout = {}",
            format_duration(g.shutdown_timeout)
        )?;
        writeln!(f, "shm_dir = {}", g.shm_dir.display())?;
        if let Some(s) = &g.shm_group {
            writeln!(f, "shm_group = {s}")?;
        }
        writeln!(f, "shm_mode = {:04o}", g.shm_mode)?;
        if let Some(u) = &g.user {
            writeln!(f, "user = {u}")?;
        }
        if let Some(u) = &g.group {
            writeln!(f, "group = {u}")?;
        }
        writeln!(
            f,
            "require_user = {}",
            if g.require_user { "on" } else { "off" }
        )?;
        if let Some(p) = &g.pidfile {
            writeln!(f, "pidfile = {}", p.display())?;
        }
        for c in &self.channels {
            writeln!(f)?;
            writeln!(f, "[channel {}]", c.name)?;
            writeln!(f, "input = {}", c.input)?;
            for o in &c.outputs {
                writeln!(
                    f,
                    "output = {} on_slow={} max_backlog={}",
                    o.endpoint,
                    o.on_slow.name(),
                    o.max_backlog
                )?;
            }
            let fr = match c.framing {
                Framing::None => "none",
                Framing::U32Be => "u32be",
            };
            writeln!(f, "framing = {fr}")?;
            writeln!(f, "splice = {}", c.splice.name())?;
            if let Some(s) = &c.samples {
                writeln!(f, "sample = {}", s.sample)?;
                writeln!(f, "interleave = {}", s.interleave)?;
                writeln!(f, "header_bytes = {}", s.header_bytes)?;
                if let Some(r) = s.sample_rate {
                    writeln!(f, "sample_rate = {r}")?;
                }
                let facs: Vec<String> = s.decimate.factors.iter().map(|x| x.to_string()).collect();
                match s.decimate.fir_taps {
                    Some(t) => writeln!(
                        f,
                        "decimate = {}:{}:{t}",
                        s.decimate.mode.name(),
                        facs.join(",")
                    )?,
                    None => writeln!(
                        f,
                        "decimate = {}:{}",
                        s.decimate.mode.name(),
                        facs.join(",")
                    )?,
                }
                writeln!(f, "shm = {}", if s.shm { "on" } else { "off" })?;
                writeln!(f, "shm_frames = {}", s.shm_frames)?;
            }
        }
        Ok(())
    }
}

/// `ringrelay check -c FILE`: exit 0 and the normalized summary, or exit 1 and every error.
pub fn check_command(path: &str) -> i32 {
    match load(path) {
        Ok(cfg) => {
            print!("{cfg}");
            0
        }
        Err(errs) => {
            for e in &errs {
                eprintln!("{e}");
            }
            eprintln!(
                "ringrelay: {path}: {} error{}",
                errs.len(),
                if errs.len() == 1 { "" } else { "s" }
            );
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
[global]
sqpoll = auto            # on | off | auto
ring_entries = 1024
buffer_size = 64KiB
buffer_count = 512
log = stderr             # stderr | syslog
log_level = info

[channel seismo]
input  = udp://0.0.0.0:5000 group=239.1.1.1 iface=eth0
output = tcp-listen://0.0.0.0:6000 max_backlog=8MiB on_slow=disconnect max_clients=64 allow=192.168.0.0/16
output = tcp://collector.example:7000 on_slow=block
output = udp://127.0.0.1:7001
output = file:///var/lib/ringrelay/seismo.raw rotate=256MiB
framing = none           # none | u32be: length-prefix each datagram on stream outputs
";

    fn errs(text: &str) -> Vec<ConfigError> {
        parse_str("t.conf", text).expect_err("should fail")
    }

    #[test]
    fn parses_the_documented_example() {
        let c = parse_str("t.conf", EXAMPLE).unwrap();
        assert_eq!(c.global.buffer_count, 512);
        assert_eq!(c.channels.len(), 1);
        let ch = &c.channels[0];
        assert_eq!(ch.outputs.len(), 4);
        assert_eq!(ch.outputs[0].on_slow, OnSlow::Disconnect);
        assert_eq!(ch.outputs[1].on_slow, OnSlow::Block);
        assert_eq!(ch.outputs[2].on_slow, OnSlow::Drop);
        assert_eq!(ch.outputs[3].on_slow, OnSlow::Block);
        // The normalized summary parses back to the same configuration.
        let again = parse_str("t.conf", &c.to_string()).unwrap();
        assert!(again.channels[0].same_settings(&c.channels[0]));
        assert_eq!(again.global, c.global);
    }

    #[test]
    fn splice_keys() {
        let c = parse_str(
            "t.conf",
            "[global]\nsplice = on\npipe_size = 256KiB\n\
             [channel a]\ninput = tcp-listen://127.0.0.1:1\noutput = tcp://h:2\n\
             [channel b]\ninput = udp://127.0.0.1:3\noutput = tcp://h:4\n\
             [channel c]\ninput = tcp-listen://127.0.0.1:5\noutput = tcp://h:6\nsplice = off\n",
        )
        .unwrap();
        assert_eq!(c.global.pipe_size, 256 << 10);
        // [global] on splices the eligible channels and leaves the others on buffers.
        let modes: Vec<_> = c.channels.iter().map(|c| c.splice).collect();
        assert_eq!(modes, [SpliceMode::On, SpliceMode::Off, SpliceMode::Off]);
        let again = parse_str("t.conf", &c.to_string()).unwrap();
        assert_eq!(again.global, c.global);
        for (a, b) in again.channels.iter().zip(&c.channels) {
            assert!(a.same_settings(b));
        }
        // A channel that asks for it and cannot: an error naming why, at its line.
        let e = errs("[channel a]\ninput = udp://h:1\noutput = tcp://h:2\nsplice = on\n");
        assert_eq!((e[0].line, e[0].key.as_str()), (4, "splice"), "{e:?}");
        assert!(e[0].message.contains("not a stream"), "{e:?}");
        let e =
            errs("[global]\npipe_size = 1\n[channel a]\ninput = udp://h:1\noutput = udp://h:2\n");
        assert_eq!((e[0].line, e[0].key.as_str()), (2, "pipe_size"), "{e:?}");
        let e =
            errs("[global]\nsplice = maybe\n[channel a]\ninput = udp://h:1\noutput = udp://h:2\n");
        assert_eq!((e[0].line, e[0].key.as_str()), (2, "splice"), "{e:?}");
    }

    #[test]
    fn every_error_names_line_and_key() {
        let e = errs("[global]\nsqpol = on\nbuffer_size = 12 parsecs\n[channel a]\ninput = udp://h:1\noutput = udp://h:2\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!((e[0].line, e[0].key.as_str()), (2, "sqpol"));
        assert!(e[0].message.contains("did you mean 'sqpoll'"));
        assert_eq!((e[1].line, e[1].key.as_str()), (3, "buffer_size"));
        assert!(e[0].to_string().starts_with("t.conf:2: sqpol: "));
    }

    #[test]
    fn error_classes() {
        let cases: &[(&str, usize, &str)] = &[
            ("input = udp://h:1\n", 1, "input"),
            ("[bogus]\n", 1, ""),
            ("[channel a]\noutput = udp://h:2\n", 1, "input"),
            ("[channel a]\ninput = udp://h:1\n", 1, "output"),
            ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\n[channel a]\n", 4, "[channel]"),
            ("[channel a]\ninput = ftp://h:1\n", 2, "input"),
            ("[channel a b]\n", 1, ""),
            ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\nframing = json\n", 4, "framing"),
            ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\ndecimate = mean:10\n", 4, "decimate"),
            ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\nsample = i24\n", 4, "sample"),
            ("[channel a]\ninput = tcp://h:1\noutput = udp://h:2\nframing = u32be\n", 4, "framing"),
            ("[global]\nring_entries = 1000\n[channel a]\ninput = udp://h:1\noutput = udp://h:2\n", 2, "ring_entries"),
            ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\nbuffer_size = 1\n", 4, "buffer_size"),
            ("[channel a]\ninput = udp://h:1\ninput = udp://h:3\noutput = udp://h:2\n", 3, "input"),
            ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\nsample = i16le\ndecimate = mean:10\nshm_frames = 3\n", 6, "shm_frames"),
            ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\nsample = i16le\ndecimate = mean:10\ninterleave = 0\n", 6, "interleave"),
            ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\nsample = i16le\ndecimate = mean:0\n", 5, "decimate"),
            ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\nsample = i16le\ndecimate = mean:2\nheader_bytes = 70000\n", 6, "header_bytes"),
            ("[channel a]\ninput = udp://h:5\noutput = file:///x\n[channel b]\ninput = udp://h:5\noutput = file:///y\n", 5, "input"),
            ("[channel a]\ninput = udp://h:5\nthis is not a key\n", 3, ""),
        ];
        for (text, line, key) in cases {
            let e = errs(text);
            assert!(
                e.iter().any(|e| e.line == *line && e.key == *key),
                "{text:?} gave {e:?}, wanted line {line} key {key:?}"
            );
        }
    }

    #[test]
    fn samples_and_cli_channels() {
        let c = parse_str(
            "t",
            "[channel s]\ninput = udp://127.0.0.1:5000\nsample = i16le\ninterleave = 3\nheader_bytes = 16\nsample_rate = 100\ndecimate = minmax:10,100\n",
        )
        .unwrap();
        let s = c.channels[0].samples.as_ref().unwrap();
        assert!(s.shm);
        assert_eq!(s.interleave, 3);
        assert_eq!(s.decimate.factors, vec![10, 100]);
        let c = from_cli("tcp-listen://127.0.0.1:0", &["udp://127.0.0.1:9".into()]).unwrap();
        assert_eq!(c.channels[0].name, "default");
        assert!(from_cli("udp://h:1", &[]).is_err());
    }
}
