//! What `/healthz` says: the problems of a [`Snapshot`], given how long each endpoint has been
//! down.
//!
//! Owns: the health rule. Healthy when every channel's input is up (a datagram input silent for
//! less than its `idle_timeout` counts as up) and no output has been down for longer than
//! `health_grace`. An input that is `idle` (silent past its `idle_timeout`) is a problem at
//! once; an input without its producer (`listening`, `down`) or an output that does not
//! deliver becomes one after `health_grace`. Also [`DownSince`], the book of when each endpoint
//! went down, kept by the engine's tick. Pure: time is passed in.

use super::Snapshot;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// When each endpoint (a channel's input, index 0, or its output `i`, index `i + 1`) was first
/// seen down; `None` while it is up.
#[derive(Debug, Default)]
pub struct DownSince {
    by_channel: HashMap<String, Vec<Option<Instant>>>,
}

impl DownSince {
    /// Records endpoint `idx` of `channel` as `down` (or up) at `now`.
    pub fn observe(&mut self, now: Instant, channel: &str, idx: usize, down: bool) {
        if !down && !self.by_channel.contains_key(channel) {
            return;
        }
        if !self.by_channel.contains_key(channel) {
            self.by_channel.insert(channel.to_string(), Vec::new());
        }
        let v = self.by_channel.get_mut(channel).expect("inserted above");
        if v.len() <= idx {
            v.resize(idx + 1, None);
        }
        match (&mut v[idx], down) {
            (s @ None, true) => *s = Some(now),
            (s, false) => *s = None,
            _ => {}
        }
    }

    /// Forgets channels `keep` says are gone.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.by_channel.retain(|k, _| keep(k));
    }

    /// How long endpoint `idx` of `channel` has been down at `now` (zero when not seen down).
    pub fn down_for(&self, channel: &str, idx: usize, now: Instant) -> Duration {
        self.by_channel
            .get(channel)
            .and_then(|v| v.get(idx).copied().flatten())
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }
}

/// Whether an input in `state` is down (waiting for its producer, or closed).
pub fn input_down(state: &str) -> bool {
    state == "listening" || state == "down"
}

/// Whether an output in `state` does not deliver.
pub fn output_down(state: &str) -> bool {
    state != "up" && state != "listening"
}

/// One line per problem; empty when healthy.
pub fn problems(s: &Snapshot, book: &DownSince, now: Instant, grace: Duration) -> Vec<String> {
    let mut out = Vec::new();
    for ch in &s.channels {
        let i = &ch.input;
        if i.state == "idle" {
            out.push(format!(
                "channel {}: input {} idle: silent for longer than its idle_timeout",
                ch.name, i.url
            ));
        } else if input_down(&i.state) {
            let d = book.down_for(&ch.name, 0, now);
            if d > grace {
                out.push(format!(
                    "channel {}: input {} {} for {}s (health_grace {}s)",
                    ch.name,
                    i.url,
                    i.state,
                    d.as_secs(),
                    grace.as_secs_f64()
                ));
            }
        }
        for (k, o) in ch.outputs.iter().enumerate() {
            if !output_down(&o.state) {
                continue;
            }
            let d = book.down_for(&ch.name, k + 1, now);
            if d > grace {
                out.push(format!(
                    "channel {}: output {} {} for {}s (health_grace {}s)",
                    ch.name,
                    o.url,
                    o.state,
                    d.as_secs(),
                    grace.as_secs_f64()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::sample;

    #[test]
    fn grace_then_problem_then_recovered() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(2);
        let mut s = sample();
        s.channels[0].input.state = "up".into();
        for o in &mut s.channels[0].outputs {
            o.state = "up".into();
        }
        let mut book = DownSince::default();
        assert!(problems(&s, &book, t0, grace).is_empty());
        s.channels[0].outputs[0].state = "connecting".into();
        book.observe(t0, "seismo", 1, true);
        assert!(problems(&s, &book, t0 + Duration::from_secs(2), grace).is_empty());
        book.observe(t0 + Duration::from_secs(1), "seismo", 1, true);
        let p = problems(&s, &book, t0 + Duration::from_secs(3), grace);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("connecting for 3s"), "{p:?}");
        book.observe(t0 + Duration::from_secs(4), "seismo", 1, false);
        s.channels[0].outputs[0].state = "up".into();
        assert!(problems(&s, &book, t0 + Duration::from_secs(5), grace).is_empty());
        s.channels[0].input.state = "idle".into();
        assert_eq!(problems(&s, &book, t0, grace).len(), 1);
        book.retain(|_| false);
        assert_eq!(book.down_for("seismo", 1, t0), Duration::ZERO);
    }
}
