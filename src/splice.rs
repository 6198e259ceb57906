//! The splice path's pure part: which channels may move their bytes through a pipe without
//! userspace ever seeing them, what `splice = auto | on | off` decides, and the fill
//! accounting of one channel's pipe.
//!
//! Owns: the eligibility rule ([`ineligible_reason`]), the mode ([`SpliceMode`]) and the
//! [`PipeFill`] state machine that says how many bytes the next splice-in (socket -> pipe) and
//! splice-out (pipe -> socket) may move. It never touches a descriptor or the ring: the event
//! loop in [`crate::daemon`] submits `IORING_OP_SPLICE` through [`crate::ring`] and reports
//! each completion here.
//!
//! Why a fill counter: a splice of an empty pipe into a socket blocks its io-wq worker until
//! something arrives, and a splice from a socket into a full pipe blocks until the pipe drains.
//! Asking for exactly `cap - fill` in and `fill` out, with one of each in flight and never a
//! length of 0, means neither splice ever waits on the pipe, only on its socket. The two are
//! never linked (IOSQE_IO_LINK): a short splice-in would cancel the linked splice-out.
//!
//! Only 1-to-1 channels splice for now; fan-out with tee(2) is not done (the buffer path
//! serves it).

use crate::config::ChannelConfig;
use crate::url::{OnSlow, Scheme};

/// `splice = auto | on | off`, in `[global]` and per `[channel]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpliceMode {
    /// Splice where the channel is eligible and the measurements say it is faster
    /// ([`AUTO_SPLICES`]).
    Auto,
    /// Splice; a `[channel]` that says `on` and is not eligible is a configuration error.
    On,
    /// Always the fixed-buffer path.
    Off,
}

impl SpliceMode {
    pub fn name(self) -> &'static str {
        match self {
            SpliceMode::Auto => "auto",
            SpliceMode::On => "on",
            SpliceMode::Off => "off",
        }
    }

    pub fn parse(v: &str) -> Result<SpliceMode, String> {
        match v {
            "auto" => Ok(SpliceMode::Auto),
            "on" => Ok(SpliceMode::On),
            "off" => Ok(SpliceMode::Off),
            _ => Err(format!("'{v}' is not one of auto, on, off")),
        }
    }

    /// Whether an eligible channel with this mode splices.
    pub fn splices(self) -> bool {
        match self {
            SpliceMode::Auto => AUTO_SPLICES,
            SpliceMode::On => true,
            SpliceMode::Off => false,
        }
    }
}

/// What `splice = auto` does on an eligible channel: splice. Decided from the relay bench,
/// case (a), on the 2-vCPU loopback box (benches/README.md has the numbers): the splice row
/// moved 2 GiB at 11.6 Gbit/s and 0.34 CPU-s/GB against 6.7 Gbit/s and 0.43 CPU-s/GB for the
/// fixed-buffer path (64 KiB buffers; 7.9 and 0.47 with 256 KiB).
pub const AUTO_SPLICES: bool = true;

/// Default `pipe_size`: 1 MiB measured twice the throughput of the 64 KiB default pipe at 40%
/// of the CPU (and is the unprivileged `fs.pipe-max-size`).
pub const DEFAULT_PIPE_SIZE: u32 = 1 << 20;

/// Why a channel cannot splice, or `None` when it can: a stream input, no sample decimation or
/// publishing (those read the bytes), and exactly one output, a stream link (`tcp://`,
/// `unix://`) with `on_slow = block` (a pipe can only push back on its producer; it cannot drop
/// or disconnect).
pub fn ineligible_reason(c: &ChannelConfig) -> Option<String> {
    if !matches!(
        c.input.scheme,
        Scheme::Tcp | Scheme::TcpListen | Scheme::Unix | Scheme::UnixListen
    ) {
        return Some(format!(
            "input {} is not a stream (splice needs tcp-listen://, tcp://, unix-listen:// or unix://)",
            c.input.url()
        ));
    }
    if c.samples.is_some() {
        return Some("the channel decimates samples, which needs its bytes in userspace".into());
    }
    let [o] = &c.outputs[..] else {
        return Some(format!(
            "splice relays to exactly one output and this channel has {} (fan-out uses the buffer path)",
            c.outputs.len()
        ));
    };
    if !matches!(o.endpoint.scheme, Scheme::Tcp | Scheme::Unix) {
        return Some(format!(
            "output {} is not a stream link (splice needs tcp:// or unix://)",
            o.endpoint.url()
        ));
    }
    if o.on_slow != OnSlow::Block {
        return Some(format!(
            "output {} has on_slow={}, and a pipe can only push back on the producer (on_slow=block)",
            o.endpoint.url(),
            o.on_slow.name()
        ));
    }
    None
}

/// The fill accounting of one channel's pipe: bytes in it, and which of the two splices is in
/// flight. `cap` is what F_GETPIPE_SZ reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipeFill {
    cap: u32,
    fill: u32,
    filling: bool,
    draining: bool,
}

impl PipeFill {
    pub fn new(cap: u32) -> PipeFill {
        assert!(cap > 0, "a pipe holds at least one page");
        PipeFill {
            cap,
            fill: 0,
            filling: false,
            draining: false,
        }
    }

    pub fn cap(&self) -> u32 {
        self.cap
    }

    /// Bytes in the pipe.
    pub fn fill(&self) -> u32 {
        self.fill
    }

    pub fn is_empty(&self) -> bool {
        self.fill == 0
    }

    /// Neither splice is in flight: the pipe may be closed.
    pub fn idle(&self) -> bool {
        !self.filling && !self.draining
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    /// The length of the next splice-in, if one may start now: none in flight and room.
    pub fn next_in(&self) -> Option<u32> {
        (!self.filling && self.fill < self.cap).then(|| self.cap - self.fill)
    }

    /// The length of the next splice-out, if one may start now: none in flight and bytes.
    pub fn next_out(&self) -> Option<u32> {
        (!self.draining && self.fill > 0).then_some(self.fill)
    }

    /// The length to submit again for the splice-in in flight after it found its socket not
    /// ready (-EAGAIN on a non-blocking socket): the room now.
    pub fn retry_in(&self) -> u32 {
        assert!(self.filling, "no splice-in to retry");
        self.cap - self.fill
    }

    /// The same for the splice-out in flight: the fill now.
    pub fn retry_out(&self) -> u32 {
        assert!(self.draining, "no splice-out to retry");
        self.fill
    }

    /// A splice-in of [`Self::next_in`] bytes was submitted.
    pub fn start_in(&mut self) {
        assert!(self.next_in().is_some(), "splice-in started without room");
        self.filling = true;
    }

    /// A splice-out of [`Self::next_out`] bytes was submitted.
    pub fn start_out(&mut self) {
        assert!(
            self.next_out().is_some(),
            "splice-out started without bytes"
        );
        self.draining = true;
    }

    /// The splice-in completed with `res`: returns the bytes it moved into the pipe (0 for an
    /// error or the producer's FIN). The bytes count whether or not the input is still wanted:
    /// they are in the pipe.
    pub fn done_in(&mut self, res: i32) -> u32 {
        assert!(self.filling, "splice-in completion without one in flight");
        self.filling = false;
        let n = res.max(0) as u32;
        assert!(n <= self.cap - self.fill, "splice-in moved more than asked");
        self.fill += n;
        n
    }

    /// The splice-out completed with `res`: returns the bytes it took out of the pipe.
    pub fn done_out(&mut self, res: i32) -> u32 {
        assert!(self.draining, "splice-out completion without one in flight");
        self.draining = false;
        let n = res.max(0) as u32;
        assert!(n <= self.fill, "splice-out moved more than the pipe held");
        self.fill -= n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn channel(keys: &str) -> ChannelConfig {
        let text = format!("[channel c]\n{keys}");
        parse_str("t", &text).expect("valid").channels.remove(0)
    }

    #[test]
    fn stream_one_to_one_is_eligible() {
        for (i, o) in [
            ("tcp-listen://127.0.0.1:5000", "tcp://127.0.0.1:6000"),
            ("tcp://127.0.0.1:5000", "unix:///run/x.sock"),
            ("unix-listen:///run/i.sock", "tcp://h:1 on_slow=block"),
            ("unix:///run/i.sock", "unix:///run/o.sock"),
        ] {
            let c = channel(&format!("input = {i}\noutput = {o}\n"));
            assert_eq!(ineligible_reason(&c), None, "{i} -> {o}");
        }
    }

    #[test]
    fn ineligible_channels_say_why() {
        let cases = [
            ("input = udp://127.0.0.1:5000\noutput = tcp://h:1\n", "not a stream"),
            (
                "input = tcp-listen://127.0.0.1:5000\noutput = tcp://h:1\noutput = tcp://h:2\n",
                "exactly one output",
            ),
            ("input = tcp-listen://127.0.0.1:5000\noutput = udp://h:1\n", "not a stream link"),
            (
                "input = tcp-listen://127.0.0.1:5000\noutput = tcp-listen://127.0.0.1:6000\n",
                "not a stream link",
            ),
            (
                "input = tcp-listen://127.0.0.1:5000\noutput = file:///tmp/x\n",
                "not a stream link",
            ),
            (
                "input = tcp-listen://127.0.0.1:5000\noutput = tcp://h:1 on_slow=drop\n",
                "on_slow=drop",
            ),
            (
                "input = tcp-listen://127.0.0.1:5000\noutput = tcp://h:1\nsample = i16le\ndecimate = mean:10\nshm = off\n",
                "decimates",
            ),
        ];
        for (keys, why) in cases {
            let r = ineligible_reason(&channel(keys)).unwrap_or_default();
            assert!(r.contains(why), "{keys:?}: {r:?} lacks {why:?}");
        }
    }

    #[test]
    fn modes() {
        assert!(SpliceMode::On.splices());
        assert!(!SpliceMode::Off.splices());
        assert_eq!(SpliceMode::Auto.splices(), AUTO_SPLICES);
        for m in [SpliceMode::Auto, SpliceMode::On, SpliceMode::Off] {
            assert_eq!(SpliceMode::parse(m.name()), Ok(m));
        }
        assert!(SpliceMode::parse("yes").is_err());
    }

    #[test]
    fn fill_asks_for_room_in_and_bytes_out() {
        let mut p = PipeFill::new(100);
        assert_eq!(p.next_out(), None, "never splice out of an empty pipe");
        assert_eq!(p.next_in(), Some(100));
        p.start_in();
        assert_eq!(p.next_in(), None, "one splice-in in flight");
        assert_eq!(p.done_in(60), 60);
        assert_eq!(
            (p.fill(), p.next_in(), p.next_out()),
            (60, Some(40), Some(60))
        );
        p.start_out();
        p.start_in();
        assert!(!p.idle());
        assert_eq!(p.next_out(), None, "one splice-out in flight");
        // The in-flight out asked for 60; the in may add its 40 meanwhile.
        assert_eq!(p.done_in(40), 40);
        assert_eq!(p.next_in(), None, "full: no splice-in of length 0");
        assert_eq!(p.done_out(25), 25);
        assert_eq!(
            (p.fill(), p.next_in(), p.next_out()),
            (75, Some(25), Some(75))
        );
        assert!(p.idle());
    }

    #[test]
    fn errors_and_fin_move_nothing() {
        let mut p = PipeFill::new(10);
        p.start_in();
        assert_eq!(p.done_in(0), 0, "FIN");
        p.start_in();
        assert_eq!(p.done_in(-libc::ECANCELED), 0);
        p.start_in();
        assert_eq!(p.done_in(7), 7);
        p.start_out();
        assert_eq!(
            p.done_out(-libc::EPIPE),
            0,
            "bytes stay for the next connection"
        );
        assert_eq!(p.fill(), 7);
        p.start_out();
        assert_eq!(p.done_out(7), 7);
        assert!(p.is_empty() && p.idle());
    }

    #[test]
    #[should_panic(expected = "more than the pipe held")]
    fn a_splice_out_past_the_fill_is_a_broken_invariant() {
        let mut p = PipeFill::new(10);
        p.start_in();
        p.done_in(4);
        p.start_out();
        p.done_out(5);
    }

    proptest::proptest! {
        /// Over any interleaving of starts and completions of the two splices, bytes in =
        /// bytes out + fill, and fill never leaves 0..=cap.
        #[test]
        fn conserves_bytes(
            cap in 1u32..5000,
            steps in proptest::collection::vec((0u8..4, 0u32..6000), 1..300),
        ) {
            let mut p = PipeFill::new(cap);
            let (mut moved_in, mut moved_out) = (0u64, 0u64);
            let (mut asked_in, mut asked_out) = (None, None);
            for (op, r) in steps {
                match op {
                    0 => if let Some(n) = p.next_in() { p.start_in(); asked_in = Some(n); },
                    1 => if let Some(n) = p.next_out() { p.start_out(); asked_out = Some(n); },
                    2 => if let Some(n) = asked_in.take() {
                        moved_in += u64::from(p.done_in((r % (n + 1)) as i32));
                    },
                    _ => if let Some(n) = asked_out.take() {
                        moved_out += u64::from(p.done_out((r % (n + 1)) as i32));
                    },
                }
                proptest::prop_assert!(p.fill() <= cap);
                proptest::prop_assert_eq!(moved_in, moved_out + u64::from(p.fill()));
            }
        }
    }
}
