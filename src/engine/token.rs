//! The `user_data` tag every submission carries, and its encoding.
//!
//! Owns: the mapping between a completion and the thing that submitted it. A completion that
//! arrives after its endpoint was closed or its slot reused is recognised by its generation and
//! dropped, never misattributed.
//!
//! Encoding (u64 on every architecture, never a pointer):
//!
//! ```text
//!  63      56 55                    32 31            16 15             0
//! +----------+------------------------+----------------+----------------+
//! |  kind 8  |    generation 24       |  channel 16    |  endpoint 16   |
//! +----------+------------------------+----------------+----------------+
//! ```
//!
//! * `kind` is the operation ([`OpKind`]); 0 is reserved so that `user_data == 0` means
//!   "ignore" (cancel requests and other fire-and-forget submissions use it).
//! * `generation` is taken from a daemon-wide counter when an endpoint is created (24 bits,
//!   wrapping; 16 million endpoint lifetimes pass before a value repeats, and a slot's previous
//!   occupant's completions have all arrived long before, because a slot is only reused once its
//!   in-flight count is zero).
//! * `channel` and `endpoint` index the daemon's channel table and the channel's endpoint slab.
//!   Daemon-level operations (signal pipe, timer tick, the metrics server) use channel
//!   [`DAEMON_CHANNEL`].

/// Which operation a submission is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpKind {
    /// Read from the signal pipe.
    Signal = 1,
    /// The periodic timer.
    Tick = 2,
    /// Accept on a listening endpoint.
    Accept = 3,
    /// Receive or read input data.
    Recv = 4,
    /// Send or write output data.
    Send = 5,
    /// Wait for an outgoing connection to complete (POLLOUT).
    Connect = 6,
    /// Cancel request; its own completion is ignored.
    Cancel = 7,
    /// Watch an output stream socket for the peer's hang-up (POLLRDHUP).
    Hangup = 8,
    /// Splice from the input socket into the channel's pipe.
    SpliceIn = 9,
    /// Splice from the channel's pipe into the output link.
    SpliceOut = 10,
    /// Tee from a fan-out channel's intake pipe into one output's pipe (`endpoint` is the
    /// output index; the generation is the channel's fan-out generation).
    Tee = 11,
    /// The distribution splice of a fan-out round: intake pipe -> the last output's pipe.
    SpliceDist = 12,
    /// The multishot receive of a UDP input (endpoint = the input's slot); its buffers come
    /// from the input's provided-buffer ring and are named in each completion's flags.
    RecvMulti = 13,
    /// A zero-copy send (IORING_OP_SEND_ZC). Its generation field holds the index of the
    /// ring's record of the send (`zerocopy::ZcTable`), which holds the endpoint's generation
    /// and the buffer: the send's notification must find the buffer after the endpoint is gone.
    SendZc = 14,
    /// One datagram send of a datagram output. Its `endpoint` field is the pool buffer it
    /// sends from, and the endpoint is found by generation: sends on one socket may complete
    /// out of order (one queued behind a full send buffer is overtaken), so each completion
    /// must release its own buffer, not the oldest one.
    SendDatagram = 15,
    /// A receive of the bytes a stream output's peer sent (a subscriber's commands), into a
    /// buffer taken when its watch said readable (`endpoint` = the output endpoint's slot).
    PeerRecv = 16,
    /// A write of the commanding subscriber's bytes to the producer (`endpoint` = the input's
    /// slot; `commands = first`).
    Command = 17,
    /// Accept on the metrics server's listener (channel [`DAEMON_CHANNEL`], endpoint 0, the
    /// listener's generation).
    HttpAccept = 18,
    /// Wait until a metrics connection has bytes (channel [`DAEMON_CHANNEL`], endpoint = the
    /// connection's slot, its generation).
    HttpPoll = 19,
    /// Read a metrics connection's request bytes into a pool buffer (tagged as `HttpPoll`).
    HttpRecv = 20,
    /// Write part of a metrics response from a pool buffer (tagged as `HttpPoll`).
    HttpSend = 21,
    /// A disk operation of an output's spool (a positioned write, an fsync, or the position
    /// file's write; `endpoint` = the output index). One is in flight per spool.
    SpoolDisk = 22,
    /// A replay read of an output's spool (`endpoint` = the output index).
    SpoolRead = 23,
}

impl OpKind {
    fn from_u8(v: u8) -> Option<OpKind> {
        Some(match v {
            1 => OpKind::Signal,
            2 => OpKind::Tick,
            3 => OpKind::Accept,
            4 => OpKind::Recv,
            5 => OpKind::Send,
            6 => OpKind::Connect,
            7 => OpKind::Cancel,
            8 => OpKind::Hangup,
            9 => OpKind::SpliceIn,
            10 => OpKind::SpliceOut,
            11 => OpKind::Tee,
            12 => OpKind::SpliceDist,
            13 => OpKind::RecvMulti,
            14 => OpKind::SendZc,
            15 => OpKind::SendDatagram,
            16 => OpKind::PeerRecv,
            17 => OpKind::Command,
            18 => OpKind::HttpAccept,
            19 => OpKind::HttpPoll,
            20 => OpKind::HttpRecv,
            21 => OpKind::HttpSend,
            22 => OpKind::SpoolDisk,
            23 => OpKind::SpoolRead,
            _ => return None,
        })
    }
}

/// Channel index used for daemon-level operations.
pub const DAEMON_CHANNEL: u16 = u16::MAX;
/// Generations are 24 bits.
pub const GEN_MASK: u32 = 0x00FF_FFFF;

/// A decoded `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token {
    pub kind: OpKind,
    pub gen: u32,
    pub chan: u16,
    pub ep: u16,
}

impl Token {
    pub fn new(kind: OpKind, chan: u16, ep: u16, gen: u32) -> Token {
        Token {
            kind,
            gen: gen & GEN_MASK,
            chan,
            ep,
        }
    }

    /// A daemon-level token (signal pipe, tick).
    pub fn daemon(kind: OpKind) -> Token {
        Token::new(kind, DAEMON_CHANNEL, 0, 0)
    }

    pub fn encode(self) -> u64 {
        (self.kind as u64) << 56
            | u64::from(self.gen & GEN_MASK) << 32
            | u64::from(self.chan) << 16
            | u64::from(self.ep)
    }

    /// Decodes a completion's `user_data`; `None` for 0 and for unknown kinds.
    pub fn decode(v: u64) -> Option<Token> {
        let kind = OpKind::from_u8((v >> 56) as u8)?;
        Some(Token {
            kind,
            gen: ((v >> 32) as u32) & GEN_MASK,
            chan: (v >> 16) as u16,
            ep: v as u16,
        })
    }
}

/// Hands out endpoint generations.
#[derive(Debug, Default)]
pub struct Generations {
    next: u32,
}

impl Generations {
    pub fn fresh(&mut self) -> u32 {
        self.next = (self.next + 1) & GEN_MASK;
        if self.next == 0 {
            self.next = 1;
        }
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_is_ignored() {
        assert_eq!(Token::decode(0), None);
        assert_eq!(Token::decode(0xFF << 56), None);
    }

    #[test]
    fn edges_round_trip() {
        for t in [
            Token::new(OpKind::Signal, 0, 0, 0),
            Token::new(OpKind::Cancel, u16::MAX, u16::MAX, GEN_MASK),
            Token::daemon(OpKind::Tick),
            Token::new(OpKind::Tee, 3, 1, 7),
            Token::new(OpKind::SpliceDist, 3, 2, GEN_MASK),
        ] {
            assert_eq!(Token::decode(t.encode()), Some(t));
            assert_ne!(t.encode(), 0);
        }
        // Generations wrap within 24 bits and never hand out 0.
        let mut g = Generations { next: GEN_MASK - 1 };
        assert_eq!(g.fresh(), GEN_MASK);
        assert_eq!(g.fresh(), 1);
    }

    proptest! {
        #[test]
        fn round_trip(k in 1u8..=23, gen in any::<u32>(), chan in any::<u16>(), ep in any::<u16>()) {
            let t = Token::new(OpKind::from_u8(k).unwrap(), chan, ep, gen);
            prop_assert_eq!(Token::decode(t.encode()), Some(t));
            prop_assert_eq!(t.gen, gen & GEN_MASK);
        }
    }
}
