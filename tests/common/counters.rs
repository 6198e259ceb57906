//! Reading the daemon's counters lines (SIGUSR1) from its stderr.

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
