//! The idle watchdog of an input (`idle_timeout=DURATION` on an input URL): the value users
//! write, its bounds, and how `check` prints it back.
//!
//! Owns: the syntax and range of `idle_timeout=` only. What the engine does when an input
//! stays silent that long (a dialed producer is closed and redialed, a listened producer is
//! disconnected, a UDP input is marked idle) is `crate::engine::idle`'s. Pure: no I/O.

use crate::config::parse::quote;
use crate::config::units::{format_duration, parse_duration};
use std::time::Duration;

/// Shortest `idle_timeout`: the watchdog runs on the engine's 100 ms tick, and a source that
/// pauses for less than a second is not silent, it is bursty.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest `idle_timeout`: a day. A source silent for longer is better watched from outside.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(86_400);

/// Parses `idle_timeout=`'s value: a duration in 1s..=1d (`30s`, `2m`, `1500ms`).
pub fn parse_idle_timeout(v: &str) -> Result<Duration, String> {
    let d =
        parse_duration(v).map_err(|_| format!("{} is not a duration (e.g. 30s, 2m)", quote(v)))?;
    if !(MIN_IDLE_TIMEOUT..=MAX_IDLE_TIMEOUT).contains(&d) {
        return Err(format!(
            "{} is not a duration in 1s..=1d (86400s)",
            quote(v)
        ));
    }
    Ok(d)
}

/// How `idle_timeout=` is written back (exactly, so that it parses to itself).
pub fn format_idle_timeout(d: Duration) -> String {
    format_duration(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::url::{Endpoint, Role};

    #[test]
    fn values_and_bounds() {
        assert_eq!(parse_idle_timeout("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_idle_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(
            parse_idle_timeout("1500ms"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(parse_idle_timeout("86400s"), Ok(MAX_IDLE_TIMEOUT));
        for bad in ["0", "999ms", "86401s", "2d", "soon", "", "off"] {
            assert!(parse_idle_timeout(bad).is_err(), "{bad}");
        }
        for d in [
            MIN_IDLE_TIMEOUT,
            Duration::from_millis(1500),
            MAX_IDLE_TIMEOUT,
        ] {
            assert_eq!(parse_idle_timeout(&format_idle_timeout(d)), Ok(d));
        }
    }

    #[test]
    fn on_every_input_and_no_output() {
        for url in [
            "udp://0.0.0.0:5000",
            "tcp://h:1",
            "tcp-listen://h:1",
            "unix:///x",
            "unix-listen:///x",
        ] {
            let s = format!("{url} idle_timeout=30s");
            let e = Endpoint::parse_for(&s, Role::Input).unwrap();
            assert_eq!(e.opts.idle_timeout, Some(Duration::from_secs(30)), "{url}");
            assert_eq!(e.to_string(), s);
            assert_eq!(Endpoint::parse(&e.to_string()).unwrap(), e);
            assert!(Endpoint::parse_for(&format!("{url} idle_timeout=0s"), Role::Input).is_err());
        }
        for url in ["udp://h:1", "tcp://h:1", "tcp-listen://h:1", "file:///x"] {
            let s = format!("{url} idle_timeout=30s");
            let e = Endpoint::parse_for(&s, Role::Output).unwrap_err();
            assert!(e.contains("idle_timeout") && e.contains("input"), "{e}");
        }
    }
}
