//! TCP keepalive of a relay's connections (`keepalive=DURATION|off` on `tcp://` and
//! `tcp-listen://` endpoints): the value users write and the probe schedule it stands for.
//!
//! Owns: the one formula from the idle time users give to the socket options the driver sets
//! (`src/driver/net.rs`), so that the manual page, the engine and the driver agree. A peer
//! that vanishes without a FIN or a reset (power loss, a cable pulled, a NAT that forgot the
//! flow) is declared dead after about twice the idle time:
//!
//! ```text
//! TCP_KEEPIDLE     = N                      first probe after N s of silence
//! TCP_KEEPINTVL    = max(1, ceil(N / 3))    then a probe every interval
//! TCP_KEEPCNT      = 3                      dead after 3 unanswered probes
//! TCP_USER_TIMEOUT = N + 3 * TCP_KEEPINTVL  (in ms) also for data sent and not acknowledged
//! ```
//!
//! N = 60 (the default): dead after 120 s; N = 2: after 5 s. The user timeout makes a
//! connection whose sent data goes unacknowledged (a collector or subscriber that vanished
//! while the relay was sending, when keepalive probes do not run) fail after the same time
//! instead of the kernel's retransmission limit of about 15 minutes. A live peer that only
//! stopped reading answers the kernel's window probes and is not cut (Linux 5.11 and later;
//! older kernels cut it too once its window stays closed that long, which the manual says).
//! Pure: no I/O.

use crate::config::parse::quote;
use crate::config::units::parse_duration;
use std::time::Duration;

/// Probes sent before a silent peer is declared dead.
pub const PROBES: u32 = 3;

/// The default idle time (seconds) of every TCP endpoint.
pub const DEFAULT_IDLE_SECS: u32 = 60;

/// The largest idle time the kernel takes (MAX_TCP_KEEPIDLE).
pub const MAX_IDLE_SECS: u32 = 32767;

/// A connection's keepalive schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Keepalive {
    /// Seconds of silence before the first probe (TCP_KEEPIDLE).
    pub idle: u32,
}

impl Keepalive {
    /// Seconds between probes (TCP_KEEPINTVL).
    pub fn interval(&self) -> u32 {
        self.idle.div_ceil(PROBES).max(1)
    }

    /// How long a silent peer (or unacknowledged data) lasts before the connection fails with
    /// ETIMEDOUT: the first probe, then every probe unanswered (also TCP_USER_TIMEOUT).
    pub fn dead_after(&self) -> Duration {
        Duration::from_secs(u64::from(self.idle) + u64::from(PROBES * self.interval()))
    }
}

/// Parses `keepalive=`'s value: `off` (0) or a whole number of seconds in 1..=32767, written
/// as any duration (`60s`, `2m`, `90`).
pub fn parse_keepalive(v: &str) -> Result<u32, String> {
    if v == "off" {
        return Ok(0);
    }
    let d = parse_duration(v).map_err(|_| {
        format!(
            "{} is neither a duration in whole seconds nor off (e.g. 60s, 2m, off)",
            quote(v)
        )
    })?;
    if d.subsec_nanos() != 0 || d.as_secs() == 0 || d.as_secs() > u64::from(MAX_IDLE_SECS) {
        return Err(format!(
            "{} is not a whole number of seconds in 1s..={MAX_IDLE_SECS}s",
            quote(v)
        ));
    }
    Ok(d.as_secs() as u32)
}

/// How `keepalive=` is written back (0: `off`).
pub fn format_keepalive(secs: u32) -> String {
    if secs == 0 {
        "off".into()
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_peer_is_dead_after_about_twice_the_idle_time() {
        let k = |idle| Keepalive { idle };
        assert_eq!(k(60).interval(), 20);
        assert_eq!(k(60).dead_after(), Duration::from_secs(120));
        assert_eq!(k(2).interval(), 1);
        assert_eq!(k(2).dead_after(), Duration::from_secs(5));
        assert_eq!(k(1).dead_after(), Duration::from_secs(4));
        assert_eq!(k(10).dead_after(), Duration::from_secs(22));
        let max = k(MAX_IDLE_SECS);
        assert_eq!(max.interval(), 10923);
        assert_eq!(max.dead_after(), Duration::from_secs(32767 + 3 * 10923));
    }

    #[test]
    fn values() {
        assert_eq!(parse_keepalive("off"), Ok(0));
        assert_eq!(parse_keepalive("60s"), Ok(60));
        assert_eq!(parse_keepalive("2m"), Ok(120));
        assert_eq!(parse_keepalive("90"), Ok(90));
        assert_eq!(parse_keepalive("32767s"), Ok(32767));
        for bad in ["bogus", "0s", "500ms", "1500ms", "32768s", "10h", "on", ""] {
            assert!(parse_keepalive(bad).is_err(), "{bad}");
        }
        for s in [1, 60, 32767, 0] {
            assert_eq!(parse_keepalive(&format_keepalive(s)), Ok(s));
        }
    }
}
