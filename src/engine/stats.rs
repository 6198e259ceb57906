//! Counters per channel and per output, and how they are shown.
//!
//! Owns: the names of the counters users see in logs (`SIGUSR1`, `stats_interval`) and in
//! `ringrelay stat`. Pure: plain integers, bumped by the engine's handlers.

use std::fmt;

/// Counters of a channel's input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InputStats {
    pub bytes: u64,
    pub datagrams: u64,
    /// Datagrams dropped at the input: a `block` output was full, or the pool was empty.
    pub drops: u64,
    /// Datagrams larger than a buffer (truncated, MSG_TRUNC) or empty.
    pub malformed: u64,
    /// Producer connections accepted or dialed after the first.
    pub reconnects: u64,
    /// Producer connections refused (a producer was already connected, or `allow=`).
    pub refused: u64,
    /// Producers closed because a new one replaced them (`producer = replace`).
    pub replaced: u64,
    pub errors: u64,
    /// Bytes cut from the input and not delivered because they made no whole record: an
    /// incomplete frame or line at the end of a producer connection, a line longer than
    /// `max_line`, or a record with no free buffer to carry it across reads.
    pub partial: u64,
    /// Times a multishot receive ended and was armed again (its buffer ring ran dry, -ENOBUFS,
    /// or the kernel ended it); 0 on the single-shot path.
    pub rearms: u64,
    /// Times the input was silent for its `idle_timeout` (a producer closed and redialed or
    /// disconnected, a datagram input marked idle).
    pub idle_timeouts: u64,
    /// Bytes the peers of stream outputs sent that were read and discarded.
    pub discarded: u64,
    /// Bytes of the commanding subscriber written to the producer (`commands = first`).
    pub commands: u64,
    /// Bytes of the commanding subscriber dropped: no producer, or too many waiting.
    pub commands_dropped: u64,
}

/// Counters of one output (all its subscribers together for a listening output).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputStats {
    pub bytes: u64,
    pub datagrams: u64,
    /// Chunks not delivered: `on_slow = drop`, output down, send errors on UDP.
    pub drops: u64,
    /// Subscribers disconnected for being slow.
    pub disconnects: u64,
    /// Successful (re)connects of a pushed output, or subscribers accepted.
    pub reconnects: u64,
    /// Faults (send errors, refused subscribers, failed connects).
    pub errors: u64,
    /// Sends that left by zero-copy send (`zerocopy=on`): shown only when some did.
    pub zerocopy: u64,
    /// Bytes skipped to begin a new connection at a record boundary (a framed channel's
    /// collector that lost its connection mid-chunk): shown only when some were.
    pub skipped: u64,
}

impl fmt::Display for InputStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bytes={} datagrams={} drops={} malformed={} reconnects={} refused={} errors={} rearms={}",
            self.bytes,
            self.datagrams,
            self.drops,
            self.malformed,
            self.reconnects,
            self.refused,
            self.errors,
            self.rearms
        )?;
        if self.replaced > 0 {
            write!(f, " replaced={}", self.replaced)?;
        }
        if self.idle_timeouts > 0 {
            write!(f, " idle_timeouts={}", self.idle_timeouts)?;
        }
        if self.discarded > 0 {
            write!(f, " discarded={}", self.discarded)?;
        }
        if self.commands > 0 || self.commands_dropped > 0 {
            write!(
                f,
                " commands={} commands_dropped={}",
                self.commands, self.commands_dropped
            )?;
        }
        if self.partial > 0 {
            write!(f, " partial={}", self.partial)?;
        }
        Ok(())
    }
}

impl fmt::Display for OutputStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bytes={} datagrams={} drops={} disconnects={} reconnects={} errors={}",
            self.bytes, self.datagrams, self.drops, self.disconnects, self.reconnects, self.errors
        )?;
        if self.zerocopy > 0 {
            write!(f, " zerocopy={}", self.zerocopy)?;
        }
        if self.skipped > 0 {
            write!(f, " skipped={}", self.skipped)?;
        }
        Ok(())
    }
}

/// A throughput meter: bytes between two looks.
#[derive(Clone, Debug, Default)]
pub struct Rate {
    last_bytes: u64,
    last_secs: f64,
}

impl Rate {
    /// Bits per second since the previous call.
    pub fn bits_per_sec(&mut self, bytes: u64, now_secs: f64) -> f64 {
        let dt = now_secs - self.last_secs;
        let db = bytes.saturating_sub(self.last_bytes);
        self.last_bytes = bytes;
        self.last_secs = now_secs;
        if dt <= 0.0 {
            0.0
        } else {
            db as f64 * 8.0 / dt
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_display() {
        let mut r = Rate::default();
        r.bits_per_sec(0, 0.0);
        assert_eq!(r.bits_per_sec(1000, 1.0), 8000.0);
        assert_eq!(r.bits_per_sec(1000, 1.0), 0.0);
        let s = OutputStats {
            bytes: 5,
            ..Default::default()
        };
        assert!(s.to_string().starts_with("bytes=5 "));
        assert!(!s.to_string().contains("zerocopy"));
        let z = OutputStats {
            zerocopy: 3,
            ..Default::default()
        };
        assert!(z.to_string().ends_with(" errors=0 zerocopy=3"));
    }
}
