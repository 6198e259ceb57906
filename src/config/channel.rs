//! The `[channel NAME]` section: its keys ([`CHANNEL_KEYS`]), the validated [`ChannelConfig`]
//! and its outputs, and the checks that span keys (sample and decimate go together, a header
//! and one frame fit the largest datagram relayed, framing only on datagram inputs,
//! `producer` only on listening stream inputs, `commands = first` only on stream inputs,
//! `splice = on` only where the channel is
//! eligible). The checks across channels are in
//! `conflicts`.

use crate::config::commands::Commands;
use crate::config::global::{Global, DATAGRAM_HEADROOM};
use crate::config::parse::{quote, RawChannel};
use crate::config::records::{self, RecordLines, Records};
use crate::config::sample::{DecimateSpec, SampleConfig, SampleType};
use crate::config::splice::{ineligible_reason, SpliceMode};
use crate::config::spool::SpoolConfig;
use crate::config::units::format_size;
use crate::config::url::{Endpoint, OnSlow, Role, Scheme, DEFAULT_FAULT_GRACE};
use crate::config::values::{parse_bool, parse_u32_in};
use std::time::Duration;

/// How datagrams are written to stream outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Datagram payloads back to back.
    None,
    /// Each datagram prefixed with its length as a big-endian u32.
    U32Be,
    /// Records are lines ending in `\n`: a datagram output sends one datagram per line, stream
    /// outputs get whole lines (see the engine's `records` module).
    Line,
}

impl Framing {
    pub fn name(self) -> &'static str {
        match self {
            Framing::None => "none",
            Framing::U32Be => "u32be",
            Framing::Line => "line",
        }
    }
}

/// What a listening stream input does with a producer that connects while one is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Producer {
    /// Refuse the newcomer (the default): the connected producer keeps the input.
    Refuse,
    /// Close the connected producer and take the newcomer (a sensor that rebooted, whose old
    /// connection is half-open and would otherwise hold the input until keepalive cuts it).
    Replace,
}

impl Producer {
    pub fn name(self) -> &'static str {
        match self {
            Producer::Refuse => "refuse",
            Producer::Replace => "replace",
        }
    }
}

/// One output of a channel, with its effective slow-output policy.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputConfig {
    pub endpoint: Endpoint,
    pub on_slow: OnSlow,
    pub max_backlog: u64,
    /// How long a faulted file output holds its data before it drops (file outputs only).
    pub fault_grace: Duration,
    /// Where the output's data waits while its collector is away or slow (`spool=`).
    pub spool: Option<SpoolConfig>,
    pub line: usize,
}

/// One `[channel NAME]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelConfig {
    pub name: String,
    pub line: usize,
    pub input: Endpoint,
    pub input_line: usize,
    pub outputs: Vec<OutputConfig>,
    pub framing: Framing,
    pub samples: Option<SampleConfig>,
    /// The line of `decimate` (0 without one), where the regions after the first are named.
    pub decimate_line: usize,
    /// The channel's effective splice mode: its own `splice` key, or `[global]`'s when that
    /// is `on` or `off` and the channel is eligible, and `off` for an ineligible channel that
    /// did not ask for it.
    pub splice: SpliceMode,
    /// A second producer on a listening stream input: refused, or it replaces the first.
    pub producer: Producer,
    /// Subscribers' bytes: discarded, or the first subscriber's forwarded to the producer.
    pub commands: Commands,
    /// The declared frame, the preamble and `max_line`.
    pub records: Records,
}

impl ChannelConfig {
    /// Whether the input's bytes are cut into records before the outputs see them: a stream
    /// input with a declared frame, `framing = line` or a preamble. Such a channel takes the
    /// buffer path (never splice).
    pub fn is_framed_stream(&self) -> bool {
        self.input.scheme.is_stream()
            && (self.records.frame.is_some()
                || self.framing == Framing::Line
                || self.records.preamble > 0)
    }
}

/// Default `max_backlog` per output.
pub const DEFAULT_MAX_BACKLOG: u64 = 8 << 20;
/// Default decimated frames kept in a region.
pub const DEFAULT_SHM_FRAMES: u64 = 65536;
/// Smallest `shm_frames` accepted.
pub const MIN_SHM_FRAMES: u64 = 64;

/// Every key a `[channel NAME]` section may set (`output` may repeat).
pub(super) const CHANNEL_KEYS: &[&str] = &[
    "input",
    "output",
    "framing",
    "sample",
    "interleave",
    "header_bytes",
    "sample_rate",
    "decimate",
    "shm",
    "shm_frames",
    "splice",
    "producer",
    "commands",
    "preamble",
    "max_line",
];

/// Validates one channel section against the effective `[global]`; `None` after reporting
/// its errors through `err`.
pub(super) fn parse_channel(
    rc: &RawChannel,
    g: &Global,
    err: &mut dyn FnMut(usize, &str, String),
) -> Option<ChannelConfig> {
    let mut ok = true;
    let mut input: Option<Endpoint> = None;
    let mut input_line = rc.line;
    let mut outputs = Vec::new();
    let mut framing = Framing::None;
    let mut sample: Option<(SampleType, usize)> = None;
    let mut interleave: (u32, usize) = (1, 0);
    let mut header_bytes: (u32, usize) = (0, 0);
    let mut sample_rate: Option<f64> = None;
    let mut decimate: Option<(DecimateSpec, usize)> = None;
    let mut shm: Option<(bool, usize)> = None;
    let mut shm_frames: (u64, usize) = (DEFAULT_SHM_FRAMES, 0);
    let mut sample_lines: Vec<(&str, usize)> = Vec::new();
    let mut splice: Option<(SpliceMode, usize)> = None;
    let mut producer: Option<(Producer, usize)> = None;
    let mut commands: Option<(Commands, usize)> = None;
    let mut recs = Records::default();
    let mut at = RecordLines::default();
    for (k, v, line) in &rc.keys {
        let line = *line;
        let r: Result<(), String> = (|| {
            match k.as_str() {
                "input" => {
                    input = Some(Endpoint::parse_for(v, Role::Input)?);
                    input_line = line;
                }
                "output" => {
                    let mut ep = Endpoint::parse_for(v, Role::Output)?;
                    if let Some(m) = ep.opts.mqtt.as_mut() {
                        // Read here, at start and at every reload; never by the engine.
                        let nth = outputs
                            .iter()
                            .filter(|o: &&OutputConfig| o.endpoint.opts.mqtt.is_some())
                            .count();
                        m.for_channel(&rc.name, nth);
                        if let Some(p) = m.password_file.clone() {
                            m.password = Some(crate::config::mqtt::read_password(&p)?.0);
                        }
                    }
                    let on_slow = ep
                        .opts
                        .on_slow
                        .take()
                        .unwrap_or_else(|| ep.default_on_slow());
                    let max_backlog = ep.opts.max_backlog.take().unwrap_or(DEFAULT_MAX_BACKLOG);
                    let fault_grace = ep.opts.fault_grace.take().unwrap_or(DEFAULT_FAULT_GRACE);
                    if max_backlog < u64::from(g.buffer_size) {
                        return Err(format!(
                            "max_backlog {} is smaller than one buffer ({})",
                            format_size(max_backlog),
                            format_size(u64::from(g.buffer_size))
                        ));
                    }
                    let spool = match ep.opts.spool.take() {
                        Some(o) => {
                            SpoolConfig::from_opts(&o, ep.scheme, u64::from(g.buffer_size), &|p| {
                                p.is_dir()
                            })?
                        }
                        None => None,
                    };
                    outputs.push(OutputConfig {
                        endpoint: ep,
                        on_slow,
                        max_backlog,
                        fault_grace,
                        spool,
                        line,
                    });
                }
                "framing" => {
                    at.framing = line;
                    framing = match v.as_str() {
                        "none" => Framing::None,
                        "u32be" => Framing::U32Be,
                        "line" => Framing::Line,
                        _ => return Err(format!("{} is not one of none, u32be, line", quote(v))),
                    }
                }
                "sample" => {
                    at.sample = line;
                    sample = Some((SampleType::parse(v)?, line));
                }
                "interleave" => {
                    at.interleave = line;
                    interleave = (parse_u32_in(v, 1, 1024)?, line);
                }
                "preamble" => {
                    at.preamble = line;
                    recs.preamble = records::parse_preamble(v)?;
                }
                "max_line" => {
                    at.max_line = line;
                    recs.max_line = records::parse_max_line(v)?;
                }
                "header_bytes" => {
                    header_bytes = (parse_u32_in(v, 0, 65507)?, line);
                    sample_lines.push(("header_bytes", line));
                }
                "sample_rate" => {
                    let r: f64 = v
                        .parse()
                        .ok()
                        .filter(|r: &f64| r.is_finite() && *r > 0.0 && *r < 1e12)
                        .ok_or_else(|| format!("{} is not a positive rate in Hz", quote(v)))?;
                    sample_rate = Some(r);
                    sample_lines.push(("sample_rate", line));
                }
                "decimate" => decimate = Some((DecimateSpec::parse(v)?, line)),
                "splice" => splice = Some((SpliceMode::parse(v)?, line)),
                "producer" => {
                    let p = match v.as_str() {
                        "refuse" => Producer::Refuse,
                        "replace" => Producer::Replace,
                        _ => return Err(format!("{} is not one of refuse, replace", quote(v))),
                    };
                    producer = Some((p, line));
                }
                "commands" => commands = Some((Commands::parse(v)?, line)),
                "shm" => shm = Some((parse_bool(v)?, line)),
                "shm_frames" => {
                    let n: u64 = v
                        .parse()
                        .map_err(|_| format!("{} is not a whole number of frames", quote(v)))?;
                    if n < MIN_SHM_FRAMES {
                        return Err(format!("shm_frames must be at least {MIN_SHM_FRAMES}"));
                    }
                    if n > 1 << 28 {
                        return Err("shm_frames must be at most 268435456".into());
                    }
                    shm_frames = (n, line);
                    sample_lines.push(("shm_frames", line));
                }
                _ => unreachable!("key list checked before"),
            }
            Ok(())
        })();
        if let Err(m) = r {
            err(line, k, m);
            ok = false;
        }
    }
    let Some(input) = input else {
        if ok {
            err(
                rc.line,
                "input",
                format!("channel {} has no input", quote(&rc.name)),
            );
        }
        return None;
    };
    // Sample and decimation keys hang together.
    let samples = match (&sample, &decimate) {
        (Some((st, _)), Some((spec, dline))) => {
            let want_shm = shm.map(|s| s.0).unwrap_or(true);
            if header_bytes.0 > 0 && input.scheme.is_stream() {
                err(
                    header_bytes.1,
                    "header_bytes",
                    "only datagram (udp) inputs have per-datagram headers".into(),
                );
                ok = false;
            }
            let frame = st.width() as u64 * u64::from(interleave.0);
            let largest = if input.scheme.is_stream() || g.datagram_count == 0 {
                g.buffer_size
            } else {
                g.datagram_size - DATAGRAM_HEADROOM
            };
            if u64::from(header_bytes.0) + frame > u64::from(largest) {
                err(
                    header_bytes.1.max(*dline),
                    "header_bytes",
                    format!(
                        "header_bytes {} plus one frame ({frame} bytes) exceeds the largest datagram relayed ({largest} bytes)",
                        header_bytes.0
                    ),
                );
                ok = false;
            }
            Some(SampleConfig {
                sample: *st,
                interleave: interleave.0,
                header_bytes: header_bytes.0,
                sample_rate,
                decimate: spec.clone(),
                shm: want_shm,
                shm_frames: shm_frames.0,
            })
        }
        (None, Some((_, dline))) => {
            err(*dline, "decimate", "decimate needs sample = TYPE".into());
            ok = false;
            None
        }
        (Some(_), None) => {
            // A declared frame only: the decimation keys have nothing to act on.
            for (k, l) in &sample_lines {
                err(*l, k, "only meaningful with decimate".into());
                ok = false;
            }
            if let Some((true, l)) = shm {
                err(l, "shm", "shm = on needs sample and decimate".into());
                ok = false;
            }
            None
        }
        (None, None) => {
            if at.interleave > 0 {
                err(
                    at.interleave,
                    "interleave",
                    "interleave needs sample = TYPE".into(),
                );
                ok = false;
            }
            for (k, l) in &sample_lines {
                err(*l, k, "only meaningful with sample and decimate".into());
                ok = false;
            }
            if let Some((true, l)) = shm {
                err(l, "shm", "shm = on needs sample and decimate".into());
                ok = false;
            }
            None
        }
    };
    let publishes = samples.as_ref().is_some_and(|s| s.shm);
    if outputs.is_empty() && !publishes {
        err(
            rc.line,
            "output",
            format!(
                "channel {} has no output (and publishes nothing to shm)",
                quote(&rc.name)
            ),
        );
        ok = false;
    }
    recs.frame = sample.map(|(st, _)| (st, interleave.0));
    if !records::check(
        &recs,
        framing,
        input.scheme.is_stream(),
        g.buffer_size,
        at,
        err,
    ) {
        ok = false;
    }
    // A spooled record is one spool record (`spool=`): it must fit the payload of one. The
    // largest datagram is the receive's room in a datagram slot, or in a pool buffer when
    // there are no slots (`input::post_reads`).
    let datagram = if g.datagram_count == 0 {
        g.buffer_size
    } else {
        g.datagram_size
    }
    .saturating_sub(DATAGRAM_HEADROOM);
    let largest = match framing {
        Framing::Line => recs.max_line,
        Framing::U32Be if !input.scheme.is_stream() => datagram + 4,
        _ if input.scheme.is_stream() => recs.frame_bytes().unwrap_or(0),
        _ => 0,
    };
    let most = g.buffer_size - crate::config::spool::RECORD_HEADER;
    for o in outputs.iter().filter(|o| o.spool.is_some()) {
        if largest > most {
            err(
                o.line,
                "spool",
                format!(
                    "a spool keeps each record whole in one spool record of at most {most} bytes (buffer_size less 8); this channel's records reach {largest} bytes (raise buffer_size)"
                ),
            );
            ok = false;
        } else if o.endpoint.scheme == Scheme::Mqtt
            && !input.scheme.is_stream()
            && framing == Framing::None
            && datagram > most
        {
            // Bytes of a stream collector may be cut anywhere, but an MQTT message is one
            // datagram: replayed in two pieces, it would be published as two messages.
            err(
                o.line,
                "spool",
                format!(
                    "an mqtt:// output publishes each datagram as one message, and a spool keeps each whole in one spool record of at most {most} bytes (buffer_size less 8); this channel's datagrams reach {datagram} bytes (datagram_size less 16; raise buffer_size)"
                ),
            );
            ok = false;
        }
    }
    if framing == Framing::U32Be && input.scheme.is_stream() {
        let line = rc
            .keys
            .iter()
            .find(|(k, _, _)| k == "framing")
            .map(|x| x.2)
            .unwrap_or(rc.line);
        err(
            line,
            "framing",
            "framing = u32be applies to datagram (udp) inputs only: a stream has no boundaries to keep"
                .into(),
        );
        ok = false;
    }
    if let Some((_, line)) = producer {
        if !(input.scheme.is_stream() && input.scheme.is_listen()) {
            err(
                line,
                "producer",
                format!(
                    "producer applies to listening stream inputs (tcp-listen, unix-listen) only, not to {}",
                    input.url()
                ),
            );
            ok = false;
        }
    }
    if let Some((Commands::First, line)) = commands {
        if !input.scheme.is_stream() {
            err(
                line,
                "commands",
                format!(
                    "commands = first forwards subscribers' bytes to a stream producer; {} has none to write to",
                    input.url()
                ),
            );
            ok = false;
        }
    }
    let mut c = ChannelConfig {
        name: rc.name.clone(),
        line: rc.line,
        input,
        input_line,
        outputs,
        framing,
        samples,
        decimate_line: decimate.as_ref().map_or(0, |d| d.1),
        splice: SpliceMode::Off,
        producer: producer.map_or(Producer::Refuse, |p| p.0),
        commands: commands.map_or(Commands::Discard, |c| c.0),
        records: recs,
    };
    let why_not = ineligible_reason(&c);
    c.splice = match (splice, why_not) {
        (Some((SpliceMode::On, line)), Some(why)) => {
            err(line, "splice", format!("splice = on, but {why}"));
            ok = false;
            SpliceMode::Off
        }
        (Some((m, _)), None) => m,
        (None, None) => g.splice,
        (_, Some(_)) => SpliceMode::Off,
    };
    ok.then_some(c)
}
