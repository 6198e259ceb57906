//! What the soak test reads from the daemon: its footprint in /proc, the counters it logs at
//! SIGUSR1, the kernel's drops at its UDP sockets, and its reload summaries.

use crate::common::{wait_until, Relay};
use nix::sys::signal::Signal::SIGUSR1;
use std::collections::HashMap;
use std::time::Duration;

/// How long a reload summary, a counters dump or the collectors' catching up may take.
pub const SETTLE: Duration = Duration::from_secs(60);

/// One sample of the daemon's footprint.
pub struct Sample {
    pub minute: u64,
    pub rss_kib: u64,
    pub fds: usize,
    /// Connections the test held to the daemon at that moment.
    pub conns: usize,
}

pub fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Counters from one SIGUSR1 dump: "CHANNEL input" or "CHANNEL URL" -> name -> value.
pub type Counters = HashMap<String, HashMap<String, u64>>;

pub fn dumps(log: &str) -> usize {
    log.matches("counters: pool ").count()
}

/// Sends SIGUSR1 and parses the counter lines it logs.
pub fn counters(relay: &Relay) -> Counters {
    let before = dumps(&relay.log());
    relay.signal(SIGUSR1);
    let ok = wait_until(SETTLE, || dumps(&relay.log()) > before);
    assert!(ok, "no counters logged within {SETTLE:?} of SIGUSR1");
    let log = relay.log();
    let last = log.rfind("counters: pool ").unwrap();
    let mut out = Counters::new();
    for line in log[last..].lines().skip(1) {
        let Some(at) = line.find("counters: channel ") else {
            continue;
        };
        let rest = &line[at + "counters: channel ".len()..];
        let Some(kv) = rest.find(": bytes=") else {
            continue;
        };
        let mut head = rest[..kv].split_whitespace();
        let (ch, kind, url) = (head.next().unwrap(), head.next().unwrap(), head.next());
        let key = match kind {
            "input" => format!("{ch} input"),
            _ => format!("{ch} {}", url.unwrap_or("?")),
        };
        let vals = rest[kv + 2..]
            .split_whitespace()
            .filter_map(|p| p.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect();
        out.insert(key, vals);
    }
    out
}

/// Counter `name` of the row whose key starts with `channel` and contains `what` (`input`, or
/// `:PORT` for an output).
pub fn get(c: &Counters, channel: &str, what: &str, name: &str) -> u64 {
    let row = c
        .iter()
        .find(|(k, _)| k.starts_with(&format!("{channel} ")) && k.contains(what))
        .unwrap_or_else(|| panic!("no counters for {channel} {what} in {c:?}"))
        .1;
    *row.get(name)
        .unwrap_or_else(|| panic!("no counter {name} in {channel} {what}: {row:?}"))
}

/// Datagrams the kernel dropped at the relay's UDP socket on `port` (its receive buffer was
/// full), from /proc/net/udp.
pub fn kernel_udp_drops(port: u16) -> u64 {
    let t = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let want = format!("0100007F:{port:04X}");
    t.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.get(1) == Some(&want.as_str()))
        .filter_map(|f| f.last()?.parse::<u64>().ok())
        .sum()
}

/// The daemon's reload summary lines so far.
pub fn summaries(relay: &Relay) -> usize {
    relay
        .log()
        .lines()
        .filter(|l| l.contains("reload: ") && l.contains(" unchanged, "))
        .count()
}

/// The daemon's descriptors by what they are (`socket`, `pipe`, `anon_inode:[io_uring]`, a
/// path), to say what a count that grew is made of.
pub fn fd_kinds(pid: i32) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let t = std::fs::read_link(e.path()).map_or("?".into(), |t| t.display().to_string());
        let kind = match t.split_once(":[") {
            Some((k, _)) if k == "socket" || k == "pipe" => k.to_string(),
            _ => t,
        };
        *m.entry(kind).or_insert(0) += 1;
    }
    m
}
