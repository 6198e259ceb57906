//! `ringrelay gen`: a test-signal generator that sends synthesized samples over UDP, TCP or a
//! Unix socket, paced at a frame rate or as fast as possible.
//!
//! Owns: its arguments ([`GenArgs`]), the signal vocabulary (`sine:HZ`, `square:HZ`, `ramp`,
//! `counter`, `noise`), the pure sample synthesis that tests and the demo use to compute the
//! bytes they expect ([`synth`] / [`Synth::fill`]), and the small blocking sender behind the
//! `gen` command. It is a client tool: it uses plain blocking std sockets and never touches the
//! daemon's ring.
//!
//! # What each signal sends
//!
//! Sub-channel `k` of `N` (`--interleave N`) always differs from the others:
//!
//! | signal | value of sub-channel `k` at frame `f` |
//! |---|---|
//! | `sine:HZ` | `A * sin(2π (HZ * f / rate + k / N))`: phase shifted by `k/N` of a period |
//! | `square:HZ` | `+A` in the first half of each period, `-A` in the second, shifted like sine |
//! | `ramp` | sawtooth from `-A` to `+A` with a period of one second (`rate` frames), shifted by `k/N` |
//! | `counter` | the integer `f + k`, wrapping in the sample type (amplitude ignored) |
//! | `noise` | uniform in `[-A, +A]`: xorshift64* output of a state mixed from `(seed, f, k)` |
//!
//! `A` is `--amplitude` (a fraction of full scale). Full scale is `2^(bits-1) - 1` for signed
//! integers, the same swing around the midpoint `2^(bits-1)` for unsigned integers, and `1.0`
//! for floats. Values are rounded to the nearest integer. `counter` wraps as raw bits (so `i16`
//! runs 0..32767, -32768..-1, 0..); for floats it counts modulo 2^24 (`f32`) or 2^53 (`f64`),
//! where every value is exact. `noise` is a function of the frame number, not of a running
//! state, so any frame range can be recomputed on its own.
//!
//! With `--rate max` the waveform is computed at a nominal rate of 48000 frames per second
//! ([`NOMINAL_RATE`]); only the pacing is dropped.
//!
//! # Packets and pacing
//!
//! Each packet (UDP datagram, or one stream write) holds whole frames: `--packet-bytes`
//! rounded down, by default 1024 bytes (64 KiB for a stream at `--rate max`). Without an explicit
//! `--packet-bytes`, a packet never spans more than 100 ms of signal. Packet `i` is due at
//! `start + frames_before_i / rate` on the monotonic clock, so the rate never drifts however
//! long the run. With `--header-bytes H` (UDP only) each datagram starts with `H` header bytes:
//! the packet counter as a big-endian u64 followed by zeros (or its low `H` bytes if `H < 8`).

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::sample::SampleType;
use crate::config::units::{parse_duration, parse_size};
use argh::FromArgs;

/// Send a test signal over UDP, TCP or a Unix socket.
#[derive(FromArgs, Debug, Clone)]
#[argh(subcommand, name = "gen")]
pub struct GenArgs {
    /// destination URL (udp://, tcp://, unix://, tcp-listen://)
    #[argh(positional)]
    pub url: String,
    /// sample format (u8 i8 u16le i16le i16be u32le i32le i32be f32le f32be f64le)
    #[argh(option, default = "String::from(\"i16le\")")]
    pub format: String,
    /// frames per second, or `max` for as fast as possible
    #[argh(option, default = "String::from(\"48000\")")]
    pub rate: String,
    /// signal: sine:HZ, square:HZ, ramp, counter, noise
    #[argh(option, default = "String::from(\"sine:440\")")]
    pub signal: String,
    /// interleaved sub-channels per frame
    #[argh(option, default = "1")]
    pub interleave: u32,
    /// how long to send (e.g. 10s); without it, until killed or --bytes/--frames is reached
    #[argh(option)]
    pub duration: Option<String>,
    /// payload bytes per packet or write (rounded down to whole frames)
    #[argh(option)]
    pub packet_bytes: Option<String>,
    /// stop after this many frames
    #[argh(option)]
    pub frames: Option<u64>,
    /// stop after this many bytes (a size such as 1GiB; rounded down to whole frames)
    #[argh(option)]
    pub bytes: Option<String>,
    /// bytes of header before each datagram's samples (a big-endian packet counter, zero-padded)
    #[argh(option, default = "0")]
    pub header_bytes: u32,
    /// amplitude as a fraction of full scale (0..1)
    #[argh(option, default = "0.5")]
    pub amplitude: f64,
    /// seed for the noise signal
    #[argh(option, default = "1")]
    pub seed: u64,
    /// print what was sent when done
    #[argh(switch)]
    pub verbose: bool,
}

/// The waveform rate used for synthesis when frames are sent as fast as possible.
pub const NOMINAL_RATE: f64 = 48000.0;

/// Default payload bytes per packet (and per paced stream write).
pub const DEFAULT_PACKET_BYTES: usize = 1024;

/// Default payload bytes per write for a stream at `--rate max`.
pub const DEFAULT_STREAM_MAX_BYTES: usize = 64 * 1024;

/// Largest UDP payload over IPv4/IPv6 that the kernel accepts in one datagram.
const MAX_DATAGRAM: usize = 65507;

/// A test signal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// A sine wave of this frequency in Hz.
    Sine(f64),
    /// A square wave of this frequency in Hz.
    Square(f64),
    /// A sawtooth with a period of one second.
    Ramp,
    /// The frame number, wrapping in the sample type.
    Counter,
    /// Uniform noise from this seed.
    Noise(u64),
}

impl Signal {
    /// Parses `sine:HZ`, `square:HZ`, `ramp`, `counter` or `noise` (seeded by `seed`).
    pub fn parse(s: &str, seed: u64) -> Result<Signal, String> {
        let hz = |v: &str| -> Result<f64, String> {
            let f: f64 = v
                .parse()
                .map_err(|_| format!("signal '{s}': '{v}' is not a frequency in Hz"))?;
            if !f.is_finite() || f < 0.0 {
                return Err(format!("signal '{s}': frequency must be >= 0"));
            }
            Ok(f)
        };
        match s.split_once(':') {
            Some(("sine", v)) => Ok(Signal::Sine(hz(v)?)),
            Some(("square", v)) => Ok(Signal::Square(hz(v)?)),
            None if s == "sine" => Ok(Signal::Sine(440.0)),
            None if s == "square" => Ok(Signal::Square(440.0)),
            None if s == "ramp" => Ok(Signal::Ramp),
            None if s == "counter" => Ok(Signal::Counter),
            None if s == "noise" => Ok(Signal::Noise(seed)),
            _ => Err(format!(
                "unknown signal '{s}' (one of: sine:HZ square:HZ ramp counter noise)"
            )),
        }
    }
}

/// A sample before encoding: a fraction of full scale, or a raw counter.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    Unit(f64),
    Count(u64),
}

/// Everything that fixes the bytes of a signal: synthesis is a pure function of these and the
/// frame range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Synth {
    pub signal: Signal,
    pub format: SampleType,
    /// Interleaved sub-channels per frame (>= 1).
    pub interleave: u32,
    /// Fraction of full scale, clamped to 0..=1.
    pub amplitude: f64,
    /// Frames per second the waveform is computed at (> 0).
    pub rate: f64,
}

impl Synth {
    /// Bytes per frame.
    pub fn frame_bytes(&self) -> usize {
        self.format.width() * self.interleave.max(1) as usize
    }

    /// Appends frames `start_frame .. start_frame + n_frames` to `out`.
    pub fn fill(&self, start_frame: u64, n_frames: usize, out: &mut Vec<u8>) {
        let n = self.interleave.max(1);
        let a = self.amplitude.clamp(0.0, 1.0);
        let rate = if self.rate > 0.0 && self.rate.is_finite() {
            self.rate
        } else {
            NOMINAL_RATE
        };
        let base = out.len();
        out.resize(base + n_frames * self.frame_bytes(), 0);
        let dst = &mut out[base..];
        // Sub-channel k is shifted by k/N of a period.
        let shifts: Vec<f64> = (0..n).map(|k| k as f64 / n as f64).collect();
        // The signal is chosen once per call so each loop below is monomorphic.
        match self.signal {
            Signal::Sine(hz) => self.fill_with(dst, start_frame, |f, k| {
                let cycles = (f as f64 * hz / rate).fract() + shifts[k as usize];
                Value::Unit(a * (std::f64::consts::TAU * cycles).sin())
            }),
            Signal::Square(hz) => self.fill_with(dst, start_frame, |f, k| {
                let cycles = ((f as f64 * hz / rate).fract() + shifts[k as usize]).fract();
                Value::Unit(if cycles < 0.5 { a } else { -a })
            }),
            Signal::Ramp => self.fill_with(dst, start_frame, |f, k| {
                let cycles = ((f as f64 / rate).fract() + shifts[k as usize]).fract();
                Value::Unit(a * (2.0 * cycles - 1.0))
            }),
            Signal::Counter => self.fill_with(dst, start_frame, |f, k| {
                Value::Count(f.wrapping_add(k as u64))
            }),
            Signal::Noise(seed) => self.fill_with(dst, start_frame, |f, k| {
                let u = (noise_bits(seed, f, k) >> 11) as f64 / (1u64 << 53) as f64;
                Value::Unit(a * (2.0 * u - 1.0))
            }),
        }
    }

    /// Encodes `value(frame, sub_channel)` for every sample of `dst` (whole frames).
    #[inline(always)]
    fn fill_with(&self, dst: &mut [u8], start_frame: u64, value: impl Fn(u64, u32) -> Value) {
        let n = self.interleave.max(1);
        let w = self.format.width();
        let format = self.format;
        for (i, frame) in dst.chunks_exact_mut(w * n as usize).enumerate() {
            let f = start_frame.wrapping_add(i as u64);
            for (k, d) in frame.chunks_exact_mut(w).enumerate() {
                encode(format, value(f, k as u32), d);
            }
        }
    }
}

/// Appends frames `start_frame .. start_frame + n_frames` of `signal` to `out`; see the module
/// documentation for what each signal and sub-channel holds.
#[allow(clippy::too_many_arguments)]
pub fn synth(
    signal: Signal,
    format: SampleType,
    interleave: u32,
    start_frame: u64,
    n_frames: usize,
    amplitude: f64,
    rate: f64,
    out: &mut Vec<u8>,
) {
    Synth {
        signal,
        format,
        interleave,
        amplitude,
        rate,
    }
    .fill(start_frame, n_frames, out)
}

/// xorshift64* over a state mixed from the seed, the frame and the sub-channel.
fn noise_bits(seed: u64, frame: u64, k: u32) -> u64 {
    let mut x = seed
        ^ frame.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (k as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    // A splitmix-style finalizer first, so neighbouring frames start far apart.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    if x == 0 {
        x = 0x2545_F491_4F6C_DD1D;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Encodes one value in `format` into `out`, which is exactly one sample wide.
#[inline(always)]
fn encode(format: SampleType, v: Value, out: &mut [u8]) {
    // Signed full scale, rounded; unsigned is the same swing around the midpoint.
    let signed = |v: f64, max: f64| (v * max).round().clamp(-max - 1.0, max) as i64;
    match (format, v) {
        (SampleType::U8, Value::Unit(x)) => out[0] = (128 + signed(x, 127.0)) as u8,
        (SampleType::I8, Value::Unit(x)) => out[0] = signed(x, 127.0) as i8 as u8,
        (SampleType::U16Le, Value::Unit(x)) => {
            out.copy_from_slice(&((32768 + signed(x, 32767.0)) as u16).to_le_bytes())
        }
        (SampleType::I16Le, Value::Unit(x)) => {
            out.copy_from_slice(&(signed(x, 32767.0) as i16).to_le_bytes())
        }
        (SampleType::I16Be, Value::Unit(x)) => {
            out.copy_from_slice(&(signed(x, 32767.0) as i16).to_be_bytes())
        }
        (SampleType::U32Le, Value::Unit(x)) => out
            .copy_from_slice(&((2_147_483_648 + signed(x, 2_147_483_647.0)) as u32).to_le_bytes()),
        (SampleType::I32Le, Value::Unit(x)) => {
            out.copy_from_slice(&(signed(x, 2_147_483_647.0) as i32).to_le_bytes())
        }
        (SampleType::I32Be, Value::Unit(x)) => {
            out.copy_from_slice(&(signed(x, 2_147_483_647.0) as i32).to_be_bytes())
        }
        (SampleType::F32Le, Value::Unit(x)) => out.copy_from_slice(&(x as f32).to_le_bytes()),
        (SampleType::F32Be, Value::Unit(x)) => out.copy_from_slice(&(x as f32).to_be_bytes()),
        (SampleType::F64Le, Value::Unit(x)) => out.copy_from_slice(&x.to_le_bytes()),
        (SampleType::U8 | SampleType::I8, Value::Count(c)) => out[0] = c as u8,
        (SampleType::U16Le | SampleType::I16Le, Value::Count(c)) => {
            out.copy_from_slice(&(c as u16).to_le_bytes())
        }
        (SampleType::I16Be, Value::Count(c)) => out.copy_from_slice(&(c as u16).to_be_bytes()),
        (SampleType::U32Le | SampleType::I32Le, Value::Count(c)) => {
            out.copy_from_slice(&(c as u32).to_le_bytes())
        }
        (SampleType::I32Be, Value::Count(c)) => out.copy_from_slice(&(c as u32).to_be_bytes()),
        (SampleType::F32Le, Value::Count(c)) => {
            out.copy_from_slice(&((c % (1 << 24)) as f32).to_le_bytes())
        }
        (SampleType::F32Be, Value::Count(c)) => {
            out.copy_from_slice(&((c % (1 << 24)) as f32).to_be_bytes())
        }
        (SampleType::F64Le, Value::Count(c)) => {
            out.copy_from_slice(&((c % (1 << 53)) as f64).to_le_bytes())
        }
    }
}

/// Writes the `header_bytes`-long header of packet `counter`: the big-endian counter, then
/// zeros (or only its low bytes when the header is shorter than 8 bytes).
pub fn packet_header(counter: u64, header_bytes: usize, out: &mut Vec<u8>) {
    let be = counter.to_be_bytes();
    if header_bytes < 8 {
        out.extend_from_slice(&be[8 - header_bytes..]);
    } else {
        out.extend_from_slice(&be);
        out.resize(out.len() + header_bytes - 8, 0);
    }
}

/// Where `gen` sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `udp://HOST:PORT`: one datagram per packet.
    Udp(String),
    /// `tcp://HOST:PORT`: connect and write.
    Tcp(String),
    /// `tcp-listen://HOST:PORT`: accept one consumer and write to it.
    TcpListen(String),
    /// `unix:///path`: connect to a stream socket and write.
    Unix(String),
}

impl Target {
    /// Parses a destination URL; query-like options after a space are not accepted here.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("'{url}' is not a URL (e.g. udp://127.0.0.1:5000)"))?;
        let need_host = |r: &str| -> Result<String, String> {
            if r.is_empty() || !r.contains(':') {
                Err(format!("'{url}' needs HOST:PORT"))
            } else {
                Ok(r.to_string())
            }
        };
        match scheme {
            "udp" => Ok(Target::Udp(need_host(rest)?)),
            "tcp" => Ok(Target::Tcp(need_host(rest)?)),
            "tcp-listen" => Ok(Target::TcpListen(need_host(rest)?)),
            "unix" if rest.starts_with('/') => Ok(Target::Unix(rest.to_string())),
            "unix" => Err(format!("'{url}' needs an absolute path (unix:///path)")),
            _ => Err(format!(
                "unknown scheme '{scheme}' in '{url}' (one of: udp tcp tcp-listen unix)"
            )),
        }
    }

    fn is_stream(&self) -> bool {
        !matches!(self, Target::Udp(_))
    }
}

/// Counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub frames: u64,
    /// Bytes handed to the socket, headers included.
    pub bytes: u64,
    pub packets: u64,
}

/// The validated plan of a run.
struct Plan {
    synth: Synth,
    /// Frames per second, `None` for as fast as possible.
    pace: Option<f64>,
    frames_per_packet: usize,
    header_bytes: usize,
    max_frames: Option<u64>,
    duration: Option<Duration>,
}

fn resolve(hostport: &str) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = hostport.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no address"));
    }
    Ok(addrs)
}

/// The open destination.
enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// How often blocked calls wake up to look at the stop flag and the deadline.
const POLL: Duration = Duration::from_millis(50);

fn open(target: &Target, stop: &AtomicBool, deadline: Option<Instant>) -> io::Result<Conn> {
    match target {
        Target::Udp(hp) => {
            let addrs = resolve(hp)?;
            let mut last = None;
            for a in addrs {
                let bind: SocketAddr = if a.is_ipv4() {
                    "0.0.0.0:0".parse().unwrap()
                } else {
                    "[::]:0".parse().unwrap()
                };
                match UdpSocket::bind(bind).and_then(|s| s.connect(a).map(|_| s)) {
                    Ok(s) => return Ok(Conn::Udp(s)),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap())
        }
        Target::Tcp(hp) => {
            let s = TcpStream::connect(resolve(hp)?.as_slice())?;
            s.set_nodelay(true)?;
            s.set_write_timeout(Some(POLL))?;
            Ok(Conn::Tcp(s))
        }
        Target::TcpListen(hp) => {
            let l = TcpListener::bind(resolve(hp)?.as_slice())?;
            eprintln!("ringrelay gen: listening on {}", l.local_addr()?);
            l.set_nonblocking(true)?;
            loop {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false)?;
                        s.set_nodelay(true)?;
                        s.set_write_timeout(Some(POLL))?;
                        return Ok(Conn::Tcp(s));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if stop.load(Ordering::Relaxed)
                            || deadline.is_some_and(|d| Instant::now() >= d)
                        {
                            return Err(io::Error::new(
                                io::ErrorKind::Interrupted,
                                "stopped before a consumer connected",
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Target::Unix(path) => {
            let s = UnixStream::connect(path)?;
            s.set_write_timeout(Some(POLL))?;
            Ok(Conn::Unix(s))
        }
    }
}

/// Why a send loop ended early.
enum Halt {
    Stopped,
    Failed(io::Error),
}

impl Conn {
    /// Sends one packet; a stream write blocks (waking up to look at `stop` and `deadline`)
    /// until all of it is written. Returns `Halt::Stopped` when told to stop midway.
    fn send(
        &mut self,
        buf: &[u8],
        stop: &AtomicBool,
        deadline: Option<Instant>,
    ) -> Result<(), Halt> {
        let w: &mut dyn Write = match self {
            Conn::Udp(s) => loop {
                match s.send(buf) {
                    Ok(_) => return Ok(()),
                    // Nobody listens yet (ICMP port unreachable) or the queue is full: UDP
                    // loses the datagram, exactly as it would on a network.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionRefused | io::ErrorKind::Interrupted
                        ) =>
                    {
                        return Ok(())
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        std::thread::yield_now();
                        if stop.load(Ordering::Relaxed) {
                            return Err(Halt::Stopped);
                        }
                    }
                    Err(e) => return Err(Halt::Failed(e)),
                }
            },
            Conn::Tcp(s) => s,
            Conn::Unix(s) => s,
        };
        let mut off = 0;
        while off < buf.len() {
            match w.write(&buf[off..]) {
                Ok(0) => return Err(Halt::Failed(io::ErrorKind::WriteZero.into())),
                Ok(n) => off += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        return Err(Halt::Stopped);
                    }
                }
                Err(e) => return Err(Halt::Failed(e)),
            }
        }
        Ok(())
    }
}

/// Turns the command-line arguments into a plan, or a message for the user.
fn plan(a: &GenArgs, target: &Target) -> Result<Plan, String> {
    let format = SampleType::parse(&a.format)?;
    let signal = Signal::parse(&a.signal, a.seed)?;
    if a.interleave == 0 {
        return Err("--interleave must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&a.amplitude) {
        return Err(format!("--amplitude {} is outside 0..1", a.amplitude));
    }
    let pace = if a.rate == "max" {
        None
    } else {
        let r: f64 = a.rate.parse().map_err(|_| {
            format!(
                "--rate '{}' is not a number of frames per second or max",
                a.rate
            )
        })?;
        if !(r.is_finite() && r > 0.0) {
            return Err(format!("--rate {} must be positive", a.rate));
        }
        Some(r)
    };
    let synth = Synth {
        signal,
        format,
        interleave: a.interleave,
        amplitude: a.amplitude,
        rate: pace.unwrap_or(NOMINAL_RATE),
    };
    let fb = synth.frame_bytes();
    let header_bytes = a.header_bytes as usize;
    if header_bytes > 0 && target.is_stream() {
        return Err("--header-bytes applies to udp:// destinations only".into());
    }
    let explicit = a.packet_bytes.as_deref().map(parse_size).transpose()?;
    let payload = match explicit {
        Some(n) => n as usize,
        None if target.is_stream() && pace.is_none() => DEFAULT_STREAM_MAX_BYTES,
        None => DEFAULT_PACKET_BYTES,
    };
    let mut frames_per_packet = payload / fb;
    if frames_per_packet == 0 {
        return Err(format!(
            "--packet-bytes {payload} is smaller than one frame ({fb} bytes)"
        ));
    }
    if let (None, Some(r)) = (explicit, pace) {
        // Keep a packet within 100 ms of signal so slow rates still flow smoothly.
        frames_per_packet = frames_per_packet.min(((r / 10.0).floor() as usize).max(1));
    }
    if !target.is_stream() && header_bytes + frames_per_packet * fb > MAX_DATAGRAM {
        return Err(format!(
            "a datagram of {} bytes is larger than UDP allows ({MAX_DATAGRAM})",
            header_bytes + frames_per_packet * fb
        ));
    }
    let by_bytes = a
        .bytes
        .as_deref()
        .map(parse_size)
        .transpose()?
        .map(|b| b / fb as u64);
    let max_frames = match (a.frames, by_bytes) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    let duration = a.duration.as_deref().map(parse_duration).transpose()?;
    Ok(Plan {
        synth,
        pace,
        frames_per_packet,
        header_bytes,
        max_frames,
        duration,
    })
}

/// Sends packets until a limit is reached or `stop` is set.
fn send_loop(
    p: &Plan,
    conn: &mut Conn,
    stop: &AtomicBool,
    start: Instant,
) -> Result<Sent, io::Error> {
    let deadline = p.duration.map(|d| start + d);
    let mut sent = Sent::default();
    let mut buf = Vec::with_capacity(p.header_bytes + p.frames_per_packet * p.synth.frame_bytes());
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut n = p.frames_per_packet as u64;
        if let Some(m) = p.max_frames {
            n = n.min(m - sent.frames);
        }
        if n == 0 {
            break;
        }
        let now = Instant::now();
        if let Some(r) = p.pace {
            let due = start + Duration::from_secs_f64(sent.frames as f64 / r);
            if deadline.is_some_and(|d| due >= d) {
                break;
            }
            if due > now {
                // Sleep in short steps so a signal stops us promptly.
                std::thread::sleep((due - now).min(POLL));
                continue;
            }
        } else if deadline.is_some_and(|d| now >= d) {
            break;
        }
        buf.clear();
        if p.header_bytes > 0 {
            packet_header(sent.packets, p.header_bytes, &mut buf);
        }
        p.synth.fill(sent.frames, n as usize, &mut buf);
        match conn.send(&buf, stop, deadline) {
            Ok(()) => {}
            Err(Halt::Stopped) => break,
            Err(Halt::Failed(e)) => return Err(e),
        }
        sent.frames += n;
        sent.bytes += buf.len() as u64;
        sent.packets += 1;
    }
    Ok(sent)
}

/// Runs `ringrelay gen`: 0 when a limit or a signal ended the run, 1 when the destination
/// cannot be reached or fails, 2 for bad arguments.
pub fn run(a: &GenArgs) -> i32 {
    let target = match Target::parse(&a.url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ringrelay gen: {e}");
            return 2;
        }
    };
    let p = match plan(a, &target) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ringrelay gen: {e}");
            return 2;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("ringrelay gen: cannot install a signal handler: {e}");
            return 1;
        }
    }
    let start = Instant::now();
    let deadline = p.duration.map(|d| start + d);
    let mut conn = match open(&target, &stop, deadline) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return 0,
        Err(e) => {
            eprintln!("ringrelay gen: cannot connect to {}: {e}", a.url);
            return 1;
        }
    };
    // Pacing starts when the destination is ready, not while waiting for a consumer.
    let start = Instant::now();
    let sent = match send_loop(&p, &mut conn, &stop, start) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringrelay gen: sending to {} failed: {e}", a.url);
            return 1;
        }
    };
    if let Conn::Tcp(s) = &conn {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    if a.verbose {
        eprintln!(
            "sent {} frames, {} bytes, {} packets in {:.3} s",
            sent.frames,
            sent.bytes,
            sent.packets,
            start.elapsed().as_secs_f64()
        );
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(signal: Signal, format: SampleType, interleave: u32, start: u64, n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        synth(signal, format, interleave, start, n, 0.5, 48000.0, &mut v);
        v
    }

    #[test]
    fn parses_signals() {
        assert_eq!(Signal::parse("sine:440", 1).unwrap(), Signal::Sine(440.0));
        assert_eq!(Signal::parse("square:1.5", 1).unwrap(), Signal::Square(1.5));
        assert_eq!(Signal::parse("ramp", 1).unwrap(), Signal::Ramp);
        assert_eq!(Signal::parse("counter", 1).unwrap(), Signal::Counter);
        assert_eq!(Signal::parse("noise", 7).unwrap(), Signal::Noise(7));
        assert!(Signal::parse("sine:abc", 1).is_err());
        assert!(Signal::parse("triangle", 1).is_err());
        assert!(Signal::parse("sine:-3", 1).is_err());
    }

    #[test]
    fn parses_targets() {
        assert_eq!(
            Target::parse("udp://127.0.0.1:5000").unwrap(),
            Target::Udp("127.0.0.1:5000".into())
        );
        assert_eq!(
            Target::parse("tcp://[::1]:7000").unwrap(),
            Target::Tcp("[::1]:7000".into())
        );
        assert_eq!(
            Target::parse("tcp-listen://127.0.0.1:0").unwrap(),
            Target::TcpListen("127.0.0.1:0".into())
        );
        assert_eq!(
            Target::parse("unix:///tmp/x.sock").unwrap(),
            Target::Unix("/tmp/x.sock".into())
        );
        assert!(Target::parse("unix://rel").is_err());
        assert!(Target::parse("sctp://1.2.3.4:5").is_err());
        assert!(Target::parse("udp://nohost").is_err());
        assert!(Target::parse("127.0.0.1:5").is_err());
    }

    #[test]
    fn counter_is_frame_plus_subchannel_wrapping() {
        let v = gen(Signal::Counter, SampleType::I16Le, 2, 65535, 2);
        // frame 65535: ch0 = 65535 (-1), ch1 = 65536 -> 0; frame 65536: 0, 1
        assert_eq!(v, vec![0xff, 0xff, 0, 0, 0, 0, 1, 0]);
        let v = gen(Signal::Counter, SampleType::I32Be, 1, 0x0102_0304, 1);
        assert_eq!(v, vec![1, 2, 3, 4]);
        let v = gen(Signal::Counter, SampleType::U8, 1, 254, 3);
        assert_eq!(v, vec![254, 255, 0]);
        let v = gen(Signal::Counter, SampleType::F32Le, 1, (1 << 24) + 5, 1);
        assert_eq!(f32::from_le_bytes(v[..4].try_into().unwrap()), 5.0);
        let v = gen(Signal::Counter, SampleType::F64Le, 1, 12345, 1);
        assert_eq!(f64::from_le_bytes(v[..8].try_into().unwrap()), 12345.0);
    }

    #[test]
    fn sizes_are_whole_frames_for_every_format() {
        for t in SampleType::ALL {
            for sig in [
                Signal::Sine(440.0),
                Signal::Square(10.0),
                Signal::Ramp,
                Signal::Counter,
                Signal::Noise(3),
            ] {
                let v = gen(sig, t, 3, 100, 17);
                assert_eq!(v.len(), 17 * 3 * t.width(), "{t} {sig:?}");
            }
        }
    }

    #[test]
    fn chunking_does_not_change_the_bytes() {
        for sig in [
            Signal::Sine(440.0),
            Signal::Square(3.0),
            Signal::Ramp,
            Signal::Counter,
            Signal::Noise(9),
        ] {
            let whole = gen(sig, SampleType::F32Le, 2, 1000, 300);
            let mut parts = gen(sig, SampleType::F32Le, 2, 1000, 100);
            parts.extend(gen(sig, SampleType::F32Le, 2, 1100, 1));
            parts.extend(gen(sig, SampleType::F32Le, 2, 1101, 199));
            assert_eq!(whole, parts, "{sig:?}");
        }
    }

    #[test]
    fn sine_has_amplitude_and_phase_shift_per_subchannel() {
        let v = gen(Signal::Sine(1000.0), SampleType::I16Le, 4, 0, 48);
        let s: Vec<i16> = v
            .chunks(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        let max = s.iter().step_by(4).copied().max().unwrap();
        assert!((16380..=16384).contains(&max), "{max}");
        // Frame 0: sub-channels at phase 0, 1/4, 1/2, 3/4 of a period.
        assert_eq!(&s[..4], &[0, 16384, 0, -16384]);
        // A 1 kHz sine at 48 kHz repeats every 48 frames.
        let w = gen(Signal::Sine(1000.0), SampleType::I16Le, 4, 48, 48);
        assert_eq!(v, w);
    }

    #[test]
    fn square_ramp_and_noise_stay_within_amplitude() {
        let v = gen(Signal::Square(1000.0), SampleType::I8, 1, 0, 48);
        assert!(v.iter().all(|&b| b as i8 == 64 || b as i8 == -64));
        assert_eq!(v[0] as i8, 64);
        assert_eq!(v[24] as i8, -64);
        let v = gen(Signal::Ramp, SampleType::F64Le, 1, 0, 48000);
        let r: Vec<f64> = v
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(r[0], -0.5);
        assert!(r.windows(2).all(|w| w[1] > w[0]));
        assert!(*r.last().unwrap() < 0.5);
        let v = gen(Signal::Noise(1), SampleType::F32Le, 2, 0, 5000);
        let n: Vec<f32> = v
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert!(n.iter().all(|x| x.abs() <= 0.5));
        let mean = n.iter().map(|&x| x as f64).sum::<f64>() / n.len() as f64;
        assert!(mean.abs() < 0.02, "{mean}");
        assert!(n.iter().any(|&x| x > 0.45) && n.iter().any(|&x| x < -0.45));
        // Sub-channels and seeds differ.
        assert_ne!(n[0], n[1]);
        assert_ne!(
            gen(Signal::Noise(1), SampleType::I16Le, 1, 0, 16),
            gen(Signal::Noise(2), SampleType::I16Le, 1, 0, 16)
        );
    }

    #[test]
    fn unsigned_formats_swing_around_the_midpoint() {
        let v = gen(Signal::Square(1000.0), SampleType::U8, 1, 0, 48);
        assert_eq!(v[0], 128 + 64);
        assert_eq!(v[24], 128 - 64);
        let mut v = Vec::new();
        synth(
            Signal::Square(1000.0),
            SampleType::U16Le,
            1,
            24,
            1,
            1.0,
            48000.0,
            &mut v,
        );
        assert_eq!(u16::from_le_bytes([v[0], v[1]]), 1);
    }

    #[test]
    fn big_endian_is_byte_swapped_little_endian() {
        let le = gen(Signal::Sine(300.0), SampleType::I16Le, 1, 7, 50);
        let be = gen(Signal::Sine(300.0), SampleType::I16Be, 1, 7, 50);
        let swapped: Vec<u8> = le.chunks(2).flat_map(|c| [c[1], c[0]]).collect();
        assert_eq!(swapped, be);
    }

    #[test]
    fn headers_carry_a_big_endian_counter() {
        let mut h = Vec::new();
        packet_header(0x0102, 12, &mut h);
        assert_eq!(h, vec![0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0]);
        h.clear();
        packet_header(0x0102_0304, 2, &mut h);
        assert_eq!(h, vec![3, 4]);
    }

    fn args(url: &str) -> GenArgs {
        GenArgs {
            url: url.into(),
            format: "i16le".into(),
            rate: "48000".into(),
            signal: "counter".into(),
            interleave: 1,
            duration: None,
            packet_bytes: None,
            frames: None,
            bytes: None,
            header_bytes: 0,
            amplitude: 0.5,
            seed: 1,
            verbose: false,
        }
    }

    #[test]
    fn plans_packets_in_whole_frames() {
        let mut a = args("udp://127.0.0.1:9");
        a.interleave = 3;
        let t = Target::parse(&a.url).unwrap();
        let p = plan(&a, &t).unwrap();
        assert_eq!(p.frames_per_packet, 1024 / 6);
        a.rate = "10".into();
        assert_eq!(plan(&a, &t).unwrap().frames_per_packet, 1);
        a.packet_bytes = Some("100".into());
        assert_eq!(plan(&a, &t).unwrap().frames_per_packet, 16);
        a.bytes = Some("1000".into());
        assert_eq!(plan(&a, &t).unwrap().max_frames, Some(166));
        a.frames = Some(5);
        assert_eq!(plan(&a, &t).unwrap().max_frames, Some(5));
        a.packet_bytes = Some("70000".into());
        assert!(plan(&a, &t).is_err());
        let mut s = args("tcp://127.0.0.1:9");
        s.rate = "max".into();
        let st = Target::parse(&s.url).unwrap();
        assert_eq!(plan(&s, &st).unwrap().frames_per_packet, 32768);
        s.header_bytes = 8;
        assert!(plan(&s, &st).is_err());
        s.header_bytes = 0;
        s.format = "i24le".into();
        assert!(plan(&s, &st).is_err());
    }

    #[test]
    fn sends_exact_counter_bytes_over_tcp() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = args(&format!("tcp://{}", l.local_addr().unwrap()));
        a.rate = "max".into();
        a.bytes = Some("100001".into());
        a.packet_bytes = Some("4KiB".into());
        let reader = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut v = Vec::new();
            io::Read::read_to_end(&mut s, &mut v).unwrap();
            v
        });
        assert_eq!(run(&a), 0);
        let got = reader.join().unwrap();
        let mut want = Vec::new();
        synth(
            Signal::Counter,
            SampleType::I16Le,
            1,
            0,
            50000,
            0.5,
            48000.0,
            &mut want,
        );
        assert_eq!(got, want);
    }

    #[test]
    fn sends_numbered_datagrams_paced() {
        let r = UdpSocket::bind("127.0.0.1:0").unwrap();
        r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut a = args(&format!("udp://{}", r.local_addr().unwrap()));
        a.header_bytes = 8;
        a.packet_bytes = Some("200".into());
        a.frames = Some(1000);
        a.rate = "20000".into();
        let t0 = Instant::now();
        assert_eq!(run(&a), 0);
        let took = t0.elapsed();
        // 10 packets of 100 frames at 20 kHz: the last is due at 45 ms.
        assert!(took >= Duration::from_millis(44), "{took:?}");
        let mut buf = [0u8; 2048];
        for i in 0..10u64 {
            let n = r.recv(&mut buf).unwrap();
            assert_eq!(n, 208);
            assert_eq!(u64::from_be_bytes(buf[..8].try_into().unwrap()), i);
            let mut want = Vec::new();
            synth(
                Signal::Counter,
                SampleType::I16Le,
                1,
                i * 100,
                100,
                0.5,
                20000.0,
                &mut want,
            );
            assert_eq!(&buf[8..n], &want[..]);
        }
    }

    #[test]
    fn unreachable_destination_exits_1() {
        // Bind and drop to find a port that nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let a = args(&format!("tcp://127.0.0.1:{port}"));
        assert_eq!(run(&a), 1);
        assert_eq!(run(&args("unix:///nonexistent/dir/sock")), 1);
        assert_eq!(run(&args("bogus://x")), 2);
    }
}
