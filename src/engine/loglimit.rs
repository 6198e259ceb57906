//! Rate limits for the log lines a peer can provoke: refused connections, failing accepts,
//! subscribers that come and go.
//!
//! Owns: the books of every limited message, keyed by its scope (a channel's endpoint, as
//! text) and its cause. The first `burst` occurrences within a window are logged as they come;
//! the rest are counted, and the window's end logs one summary ("412 more refused (max_clients=2
//! reached) in the last 60 s"). A flood thus costs two lines a minute per endpoint and cause,
//! which a syslog on an SD card can take, and what was suppressed is never hidden: its count is
//! in the summary.
//!
//! The engine reads no clock: every call is given `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a window lasts: its first occurrences are logged, the rest summed up at its end.
pub const WINDOW: Duration = Duration::from_secs(60);

struct Entry {
    since: Instant,
    logged: u32,
    suppressed: u64,
    level: log::Level,
}

/// The books of every limited message.
#[derive(Default)]
pub struct LogLimiter {
    entries: HashMap<(String, &'static str), Entry>,
}

impl LogLimiter {
    /// Whether an occurrence of `cause` in `scope` at `now` is logged (true) or only counted
    /// for the window's summary (false). `level` is the summary's.
    pub fn admit(
        &mut self,
        now: Instant,
        scope: &str,
        cause: &'static str,
        burst: u32,
        level: log::Level,
    ) -> bool {
        let e = self
            .entries
            .entry((scope.to_string(), cause))
            .or_insert(Entry {
                since: now,
                logged: 0,
                suppressed: 0,
                level,
            });
        if e.logged < burst.max(1) {
            e.logged += 1;
            true
        } else {
            e.suppressed += 1;
            false
        }
    }

    /// Ends the windows that are over at `now` (or all of them, `all`: at the end) and
    /// returns one summary line for each that suppressed anything, with its level.
    pub fn flush(&mut self, now: Instant, all: bool) -> Vec<(log::Level, String)> {
        let mut out = Vec::new();
        self.entries.retain(|(scope, cause), e| {
            let age = now.saturating_duration_since(e.since);
            if !all && age < WINDOW {
                return true;
            }
            if e.suppressed > 0 {
                out.push((
                    e.level,
                    format!(
                        "{scope}: {} more {cause} in the last {} s",
                        e.suppressed,
                        age.as_secs().max(1)
                    ),
                ));
            }
            false
        });
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    /// Logs what [`LogLimiter::flush`] returns.
    pub fn log_summaries(&mut self, now: Instant, all: bool) {
        for (level, line) in self.flush(now, all) {
            log::log!(level, "{line}");
        }
    }

    /// Messages being limited (for tests and the counters).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    #[test]
    fn a_flood_logs_its_burst_then_one_summary_per_window() {
        let t0 = Instant::now();
        let mut l = LogLimiter::default();
        let mut logged = 0;
        for i in 0..500u64 {
            let now = t0 + Duration::from_millis(i * 10);
            if l.admit(now, "channel a: output x", "refused", 1, Level::Warn) {
                logged += 1;
            }
        }
        assert_eq!(logged, 1);
        // Five seconds in: the window is not over, nothing to say yet.
        assert!(l.flush(t0 + Duration::from_secs(5), false).is_empty());
        let s = l.flush(t0 + WINDOW, false);
        assert_eq!(
            s,
            [(
                Level::Warn,
                "channel a: output x: 499 more refused in the last 60 s".to_string()
            )]
        );
        // The next occurrence starts a new window and is logged again.
        assert!(l.admit(
            t0 + WINDOW,
            "channel a: output x",
            "refused",
            1,
            Level::Warn
        ));
        assert!(l.flush(t0 + WINDOW * 3, false).is_empty());
        assert!(l.is_empty());
    }

    #[test]
    fn scopes_and_causes_are_limited_apart_and_bursts_pass() {
        let t0 = Instant::now();
        let mut l = LogLimiter::default();
        let admitted = |l: &mut LogLimiter, scope: &str, cause: &'static str| {
            (0..10)
                .filter(|_| l.admit(t0, scope, cause, 3, Level::Info))
                .count()
        };
        assert_eq!(admitted(&mut l, "a", "left"), 3);
        assert_eq!(admitted(&mut l, "a", "connected"), 3);
        assert_eq!(admitted(&mut l, "b", "left"), 3);
        assert_eq!(l.len(), 3);
        // At the end every window is closed, in a stable order.
        let s = l.flush(t0 + Duration::from_millis(1), true);
        let lines: Vec<&str> = s.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            lines,
            [
                "a: 7 more connected in the last 1 s",
                "a: 7 more left in the last 1 s",
                "b: 7 more left in the last 1 s"
            ]
        );
    }

    #[test]
    fn nothing_suppressed_means_no_summary() {
        let t0 = Instant::now();
        let mut l = LogLimiter::default();
        assert!(l.admit(t0, "a", "refused", 2, Level::Warn));
        assert!(l.admit(t0, "a", "refused", 2, Level::Warn));
        assert!(l.flush(t0 + WINDOW, false).is_empty());
    }
}
