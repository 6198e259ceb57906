//! `ringrelay gen`: a test-signal generator that sends synthesized samples over UDP, TCP, a
//! Unix socket or a serial port, paced at a frame rate or as fast as possible.
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
//!
//! # Layout
//!
//! `signal` synthesizes the frames and `encode` turns each value into sample bytes; `target`
//! opens the destination and writes a packet whole; `pace` builds the packets and sends each
//! when it is due. This module parses the arguments into a plan and runs it.

mod encode;
mod pace;
mod signal;
mod target;

pub use pace::{packet_header, Sent};
pub use signal::{synth, Signal, Synth, NOMINAL_RATE};
pub use target::Target;

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use crate::config::sample::SampleType;
use crate::config::units::{parse_duration, parse_size};
use argh::FromArgs;
use pace::{send_loop, Plan};
use target::{open, Conn};

/// Send a test signal over UDP, TCP, a Unix socket or a serial port.
#[derive(FromArgs, Debug, Clone)]
#[argh(subcommand, name = "gen")]
pub struct GenArgs {
    /// destination URL (udp://, tcp://, unix://, tcp-listen://, serial:///dev/ttyUSB0 with
    /// its options in the same argument: "serial:///dev/ttyUSB0 baud=4800", or pty:///PATH: a
    /// new pseudo-terminal linked at PATH, a serial device for a serial:// input to read)
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

/// Default payload bytes per packet (and per paced stream write).
pub const DEFAULT_PACKET_BYTES: usize = 1024;

/// Default payload bytes per write for a stream at `--rate max`.
pub const DEFAULT_STREAM_MAX_BYTES: usize = 64 * 1024;

/// Largest UDP payload over IPv4/IPv6 that the kernel accepts in one datagram.
const MAX_DATAGRAM: usize = 65507;

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
            let verb = match target {
                Target::Serial(..) | Target::Pty(..) => "open",
                _ => "connect to",
            };
            eprintln!("ringrelay gen: cannot {verb} {}: {e}", a.url);
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
    conn.settle(&stop);
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
    use std::net::{TcpListener, UdpSocket};
    use std::time::Duration;

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
