//! Which channels move their bytes through a pipe without userspace ever seeing them: the
//! `splice = auto | on | off` setting ([`SpliceMode`]), what `auto` decides ([`AUTO_SPLICES`],
//! [`AUTO_FAN_OUT_SPLICES`]), the default pipe size, and the eligibility rule
//! ([`ineligible_reason`]) that validation applies to every channel.
//!
//! The pipes themselves and their fill accounting belong to the engine (its `splice` module),
//! which reads these from here.

use crate::config::parse::quote;
use crate::config::url::{OnSlow, Scheme};
use crate::config::ChannelConfig;

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
            _ => Err(format!("{} is not one of auto, on, off", quote(v))),
        }
    }

    /// Whether an eligible 1-to-1 channel with this mode splices.
    pub fn splices(self) -> bool {
        self.splices_for(1)
    }

    /// Whether an eligible channel with `outputs` outputs and this mode splices (two or more
    /// fan out with tee).
    pub fn splices_for(self, outputs: usize) -> bool {
        match self {
            SpliceMode::Auto if outputs >= 2 => AUTO_FAN_OUT_SPLICES,
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

/// What `splice = auto` does on an eligible fan-out channel (two or more stream links):
/// splice with tee. Decided from the relay bench, case (f), TCP 1-to-3, on the same 2-vCPU box
/// (benches/README.md): the tee row delivered 8.8 and 7.3 Gbit/s per output at 0.67 and 0.62
/// CPU-s per GB of input in two runs, against 5.7 and 6.1 Gbit/s at 1.35 and 1.05 for the
/// fixed-buffer path.
pub const AUTO_FAN_OUT_SPLICES: bool = true;

/// Default `pipe_size`: 1 MiB measured twice the throughput of the 64 KiB default pipe at 40%
/// of the CPU (and is the unprivileged `fs.pipe-max-size`).
pub const DEFAULT_PIPE_SIZE: u32 = 1 << 20;

/// Why a channel cannot splice, or `None` when it can: a stream input, no sample decimation or
/// publishing (those read the bytes), and outputs that are all stream links (`tcp://`,
/// `unix://`) with `on_slow = block` (a pipe can only push back on its producer; it cannot drop
/// or disconnect). One output splices 1-to-1; two or more fan out with tee (the engine's
/// `Fanout`).
/// Subscribers of `tcp-listen://` outputs come and go and need disconnect semantics: they stay
/// on the buffer path.
pub fn ineligible_reason(c: &ChannelConfig) -> Option<String> {
    if !matches!(
        c.input.scheme,
        Scheme::Tcp | Scheme::TcpListen | Scheme::Unix | Scheme::UnixListen
    ) {
        return Some(format!(
            "input {} is not a stream (splice needs tcp-listen://, tcp://, unix-listen:// or unix://)",
            quote(&c.input.url())
        ));
    }
    if c.samples.is_some() {
        return Some("the channel decimates samples, which needs its bytes in userspace".into());
    }
    if c.is_framed_stream() {
        return Some(
            "the channel cuts its stream into records (sample, framing = line or preamble), which needs its bytes in userspace"
                .into(),
        );
    }
    if c.outputs.is_empty() {
        return Some("the channel has no output".into());
    }
    for o in &c.outputs {
        if !matches!(o.endpoint.scheme, Scheme::Tcp | Scheme::Unix) {
            return Some(format!(
                "output {} is not a stream link (splice needs tcp:// or unix://)",
                quote(&o.endpoint.url())
            ));
        }
        if o.spool.is_some() {
            return Some(format!(
                "output {} has a spool, which needs its records in userspace",
                quote(&o.endpoint.url())
            ));
        }
        if o.on_slow != OnSlow::Block {
            return Some(format!(
                "output {} has on_slow={}, and a pipe can only push back on the producer (on_slow=block)",
                quote(&o.endpoint.url()),
                o.on_slow.name()
            ));
        }
    }
    None
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
                "input = tcp-listen://127.0.0.1:5000\noutput = tcp://h:1\noutput = tcp-listen://127.0.0.1:6000\n",
                "not a stream link",
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
                "input = tcp-listen://127.0.0.1:5000\noutput = tcp://h:1\noutput = tcp://h:2 on_slow=drop\n",
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
    fn stream_fan_out_to_links_is_eligible() {
        let c = channel(
            "input = tcp-listen://127.0.0.1:5000\noutput = tcp://h:1\noutput = unix:///run/o.sock\noutput = tcp://h:3 on_slow=block\n",
        );
        assert_eq!(ineligible_reason(&c), None);
    }
}
