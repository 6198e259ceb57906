//! `ringrelay stat`: print the running relay's counters from its counters region
//! `<shm_dir>/ringrelay.stats`, as a table, JSON or Prometheus text, or watch their rates.
//!
//! Owns: its arguments ([`StatArgs`]), the `--watch` loop and the messages when there is nothing
//! to read. The region's format is [`crate::shm::stats`]; what the values mean and how they are
//! rendered is [`crate::metrics`]. A plain reader: never writes the region and never signals the
//! daemon. Missing or invalid region: a message on stderr, exit 1.

use crate::config::units::parse_duration;
use crate::metrics::{self, Snapshot};
use crate::shm::{ShmError, StatsReader, STATS_FILE};
use argh::FromArgs;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

/// Show the running relay's per-channel and per-output counters.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "stat")]
pub struct StatArgs {
    /// directory of the regions (the relay's shm_dir)
    #[argh(option, default = "String::from(\"/dev/shm/ringrelay\")")]
    pub shm_dir: String,
    /// table (default), json or prometheus
    #[argh(option, default = "String::from(\"table\")")]
    pub format: String,
    /// same as --format json
    #[argh(switch)]
    pub json: bool,
    /// redraw a table of rates every INTERVAL (default 1s) until Ctrl-C
    #[argh(option)]
    pub watch: Option<String>,
    /// with --watch: stop after N tables
    #[argh(option)]
    pub count: Option<u64>,
}

/// What `--watch` without a value means.
pub const DEFAULT_WATCH: &str = "1s";

/// Gives a bare `--watch` of `ringrelay stat` its default interval, so that argh (whose options
/// always take a value) accepts `stat --watch` and `stat --watch --count 3`.
pub fn default_watch_interval(args: &mut Vec<String>) {
    if args.first().map(String::as_str) != Some("stat") {
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--watch") {
        if args.get(i + 1).is_none_or(|v| v.starts_with('-')) {
            args.insert(i + 1, DEFAULT_WATCH.to_string());
        }
    }
}

enum Format {
    Table,
    Json,
    Prometheus,
}

pub fn run(a: &StatArgs) -> i32 {
    let format = match (a.json, a.format.as_str()) {
        (true, _) | (_, "json") => Format::Json,
        (_, "table") => Format::Table,
        (_, "prometheus") => Format::Prometheus,
        (_, other) => {
            eprintln!("ringrelay stat: unknown --format {other:?} (table, json or prometheus)");
            return 1;
        }
    };
    let path = Path::new(&a.shm_dir).join(STATS_FILE);
    let mut reader = match StatsReader::open(&path) {
        Ok(r) => r,
        Err(e) => return fail(&e, &a.shm_dir),
    };
    if let Some(interval) = &a.watch {
        let interval = match parse_duration(interval) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                eprintln!("ringrelay stat: --watch needs an interval above 0");
                return 1;
            }
            Err(e) => {
                eprintln!("ringrelay stat: --watch {e}");
                return 1;
            }
        };
        return watch(&mut reader, &a.shm_dir, interval, a.count);
    }
    if a.count.is_some() {
        eprintln!("ringrelay stat: --count goes with --watch");
        return 1;
    }
    let snap = match reader.snapshot() {
        Ok(s) => Snapshot::from_rows(&s),
        Err(e) => return fail(&e, &a.shm_dir),
    };
    let text = match format {
        Format::Table => metrics::table::counters(&snap),
        Format::Json => metrics::json::render(&snap),
        Format::Prometheus => metrics::prometheus::render(&snap),
    };
    print!("{text}");
    0
}

/// Says why there is nothing to show; exit status 1.
fn fail(e: &ShmError, dir: &str) -> i32 {
    match e {
        // A path through a file (ENOTDIR) is as absent as a missing one.
        ShmError::Missing(p) | ShmError::Io(p, _) if is_absent(e) => eprintln!(
            "ringrelay stat: {}: no counters region: is the relay running with shm_dir = {dir}? \
             (it publishes one at start-up, and logs a warning when it cannot)",
            p.display()
        ),
        e => eprintln!("ringrelay stat: {e}"),
    }
    1
}

fn is_absent(e: &ShmError) -> bool {
    match e {
        ShmError::Missing(_) => true,
        ShmError::Io(_, e) => e.raw_os_error() == Some(libc::ENOTDIR),
        _ => false,
    }
}

/// Redraws the rates table every `interval`, `count` times or until SIGINT (whose default
/// action ends the process; nothing here needs undoing). On a terminal each table replaces
/// the last; otherwise they follow each other, separated by a blank line.
fn watch(reader: &mut StatsReader, dir: &str, interval: Duration, count: Option<u64>) -> i32 {
    let tty = std::io::stdout().is_terminal();
    let mut base = match reader.snapshot() {
        Ok(s) => Snapshot::from_rows(&s),
        Err(e) => return fail(&e, dir),
    };
    let mut shown = 0u64;
    let mut last = None;
    while count.is_none_or(|n| shown < n) {
        std::thread::sleep(interval);
        let now = match reader.snapshot() {
            Ok(s) => Snapshot::from_rows(&s),
            Err(e) => return fail(&e, dir),
        };
        // Rates need two publications: before the daemon published again, show the last table.
        if now.daemon.updated_real_ns > base.daemon.updated_real_ns || last.is_none() {
            last = Some(metrics::table::rates(&base, &now));
            base = now;
        }
        let table = last.as_deref().unwrap_or_default();
        let mut out = std::io::stdout().lock();
        let r = if tty {
            write!(out, "\x1b[H\x1b[2J{table}")
        } else if shown > 0 {
            write!(out, "\n{table}")
        } else {
            write!(out, "{table}")
        };
        if r.and_then(|_| out.flush()).is_err() {
            // The reader of our output went away (a closed pipe): nothing left to do.
            return 0;
        }
        shown += 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        default_watch_interval(&mut v);
        v
    }

    #[test]
    fn a_bare_watch_gets_the_default_interval() {
        assert_eq!(args(&["stat", "--watch"]), ["stat", "--watch", "1s"]);
        assert_eq!(
            args(&["stat", "--watch", "--count", "2"]),
            ["stat", "--watch", "1s", "--count", "2"]
        );
        assert_eq!(
            args(&["stat", "--watch", "200ms"]),
            ["stat", "--watch", "200ms"]
        );
        assert_eq!(args(&["tail", "--watch"]), ["tail", "--watch"]);
        assert_eq!(args(&["stat"]), ["stat"]);
    }
}
