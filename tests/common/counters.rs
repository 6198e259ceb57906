//! Reading the daemon's counters: its counters lines (SIGUSR1) from its stderr, and the counters
//! region through `ringrelay stat`.

use super::{wait_for, Relay, READY_TIMEOUT};

/// The latest counters line for output `url`, after SIGUSR1 asks for a fresh one.
pub fn output_counters_line(relay: &Relay, url: &str) -> String {
    let prefix = format!("output {url} ");
    let count = |log: &str| {
        log.lines()
            .filter(|l| l.contains("counters: ") && l.contains(&prefix))
            .count()
    };
    let before = count(&relay.log());
    relay.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_for("a counters line after SIGUSR1", READY_TIMEOUT, || {
        count(&relay.log()) > before
    });
    let log = relay.log();
    log.lines()
        .rev()
        .find(|l| l.contains("counters: ") && l.contains(&prefix))
        .unwrap()
        .to_string()
}

/// The latest counters line of channel `channel`'s input, after SIGUSR1 asks for a fresh one.
pub fn input_counters_line(relay: &Relay, channel: &str) -> String {
    let prefix = format!("counters: channel {channel} input ");
    let count = |log: &str| log.lines().filter(|l| l.contains(&prefix)).count();
    let before = count(&relay.log());
    relay.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_for("an input counters line", READY_TIMEOUT, || {
        count(&relay.log()) > before
    });
    relay
        .log()
        .lines()
        .rev()
        .find(|l| l.contains(&prefix))
        .unwrap()
        .to_string()
}

/// Counter `name` (as `name=`) of a fresh counters line for output `url`.
pub fn output_counter(relay: &Relay, url: &str, name: &str) -> u64 {
    counter_in(&output_counters_line(relay, url), name)
}

/// Counter `name` (as `name=`) in counters line `line`.
pub fn counter_in(line: &str, name: &str) -> u64 {
    let key = format!("{name}=");
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key.as_str()))
        .unwrap_or_else(|| panic!("no {key} in counters line: {line}"));
    v.parse()
        .unwrap_or_else(|_| panic!("{key}{v} is not a number in: {line}"))
}

/// `ringrelay stat --shm-dir SHM ARGS`: its stdout (a failure panics with its stderr).
pub fn stat_output(shm: &std::path::Path, args: &[&str]) -> String {
    let o = super::output_within(
        std::process::Command::new(super::bin())
            .arg("stat")
            .args(args)
            .arg("--shm-dir")
            .arg(shm),
        &format!("ringrelay stat {args:?}"),
        std::time::Duration::from_secs(20),
    );
    assert!(
        o.status.success(),
        "ringrelay stat {args:?}: {}; stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8 output")
}

/// `ringrelay stat --format json` parsed.
pub fn stat_json(shm: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&stat_output(shm, &["--format", "json"])).expect("valid JSON")
}

/// The sample `name{labels}` of a Prometheus text (labels written in the relay's order, as
/// `channel="c",output="u"`), if present.
pub fn prometheus_sample(text: &str, name: &str, labels: &str) -> Option<u64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.trim().parse().expect("an integer sample"))
}
