//! Exponential backoff with jitter for reconnects and retried faults.
//!
//! Owns: when the next attempt happens. Pure: time and randomness are passed in.
//! Delays start at 100 ms, double per failure up to 30 s, and each is jittered to a random
//! point in [delay/2, delay] so that many endpoints that failed together do not retry together.

use std::time::Duration;

pub const INITIAL: Duration = Duration::from_millis(100);
pub const MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Backoff {
    failures: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            failures: 0,
            rng: seed | 1,
        }
    }

    /// Resets after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let base = INITIAL.saturating_mul(1u32 << exp).min(MAX);
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = base / 2;
        let jitter_ns = (self.rng % (half.as_nanos() as u64 + 1)) as u32;
        half + Duration::from_nanos(u64::from(jitter_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_within_bounds_and_resets() {
        let mut b = Backoff::new(42);
        let mut prev_cap = Duration::ZERO;
        for i in 0..40 {
            let d = b.next_delay();
            let cap = INITIAL.saturating_mul(1 << i.min(16)).min(MAX);
            assert!(
                d <= cap && d >= cap / 2,
                "{i}: {d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
            assert!(cap >= prev_cap);
            prev_cap = cap;
        }
        assert_eq!(b.failures(), 40);
        b.reset();
        assert!(b.next_delay() <= INITIAL);
    }

    #[test]
    fn jitter_spreads_endpoints() {
        let delays: Vec<Duration> = (1..20u64)
            .map(|s| {
                let mut b = Backoff::new(s * 7919);
                b.next_delay();
                b.next_delay();
                b.next_delay()
            })
            .collect();
        let first = delays[0];
        assert!(delays.iter().any(|d| *d != first));
    }
}
