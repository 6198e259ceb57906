//! Relay benchmark: ringrelay side by side with socat and a plain blocking-threads relay, on
//! loopback, in one run, printing throughput, relay CPU per GB and ratios to the peers.
//!
//! Owns: the bench cases and their measurement method. It never touches the daemon's internals:
//! every relay under test is a separate process (ringrelay, socat, or this bench binary
//! re-executed as the blocking relay), and its CPU time is what `getrusage(RUSAGE_CHILDREN)`
//! gains when that one child is reaped, so it covers every thread of the relay (io-wq and
//! SQPOLL threads included) and nothing else. Sources and sinks are threads of the bench.
//!
//! Cases:
//! * (a) TCP 1-to-1 bulk: a writer pushes `TCP_BYTES` through the relay (input `tcp-listen://`,
//!   output `tcp://` to a counting sink). Gbit/s from the source's connect to the sink's last
//!   byte; relay CPU seconds per GB (10^9 bytes).
//! * (b) UDP 1-to-4 fan-out: one sender sends `UDP_DATAGRAMS` datagrams of 1 KiB as fast as it
//!   can; four receivers count. Delivered datagrams/s (all four outputs together) and drop %.
//!   socat has no fan-out, so it sits this case out.
//! * (b2) the same fan-out with the sender paced at `UDP_PACED_RATE` datagrams/s, a load every
//!   relay should carry without drops.
//! * (c) ringrelay with `sqpoll = on` and `sqpoll = off`, both in (a) and (b).
//! * (d) a decimating channel next to a plain one: two channels of i16le x4 samples, 1-to-1
//!   each, the same UDP load into both; the decimating one also runs
//!   `decimate = minmax:10,100,1000` into regions under a temporary `shm_dir`. At max rate and
//!   paced at `DECIMATE_PACED_RATE`; delivered datagrams/s, relay CPU per datagram, and the
//!   ratio decimating / plain. A decimating cell counts as failed unless its regions hold the
//!   decimated frames.
//! * (e) TCP 1-to-1 with `buffer_size = 256KiB` next to the default 64KiB (`sqpoll = off`).
//! * (f) TCP 1-to-3 fan-out: the source pushes 1 GiB (quick: 128 MiB) into a channel with three
//!   `tcp://` outputs; ringrelay with `splice = on` (tee) and `splice = off` (buffers) against
//!   the blocking relay (a thread per output). Gbit/s per output, to the last sink's last
//!   byte; relay CPU seconds per GB of input.
//! * (i) TCP fan-out to 8 and 64 subscribers (`tcp://` outputs the relay dials): ringrelay's
//!   tee path and buffer path against the blocking relay with a thread per subscriber. Gbit/s
//!   per subscriber, relay CPU seconds per delivered GB (input × subscribers) and the ratios
//!   ([`fanout_case`]); 2 GiB delivered per run (quick) or 8 GiB (full).
//! * (h) TCP with 8 and 64 channels 1-to-1 at once: aggregate Gbit/s, relay CPU per GB, and
//!   the slowest channel's rate over the mean ([`channels_case`]); ringrelay on the splice and
//!   buffer paths against the thread-per-connection copy relay and the floor.
//! * The floor: a kernel-only relay (blocking splice(2) socket -> 1 MiB pipe -> socket, a
//!   thread per connection) is a peer in (a) and (h), the least CPU a relay can spend per byte.
//! * (l) UDP latency added at 10,000 datagrams/s of 1400 B, p50/p99/p99.9 against the direct
//!   path ([`latency_case`]); only when named in `RELAY_BENCH_CASES`.
//! * (g) a spooling `tcp://` output against the plain path: MB/s while records go to disk
//!   (collector away) and while they are replayed, and their ratios to the plain path
//!   ([`spool_case`]).
//!
//! Run: `cargo bench --bench relay` (3 runs per cell, medians) or with `RELAY_BENCH_QUICK=1`
//! (smaller volumes, 1 run: for CI). `RELAY_BENCH_CASES=a,e` runs only those cases
//! (a, b, b2, b3, d, d2, e, f, g, h, i); `RELAY_BENCH_VERBOSE=1` prints each relay's log (its counters at
//! exit). `RELAY_BENCH_TCP_OUTPUT` / `RELAY_BENCH_UDP_OUTPUT` add URL options to ringrelay's
//! tcp / udp outputs (`zerocopy=on`, `gso=off`). `RELAY_BENCH_ONLY=socat,blocking` restricts the relays by
//! name prefix while developing.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[path = "relay_cases/spool.rs"]
mod spool_case;

#[path = "relay_cases/channels.rs"]
mod channels_case;

#[path = "relay_cases/latency.rs"]
mod latency_case;

#[path = "relay_cases/fanout.rs"]
mod fanout_case;

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use socket2::{Domain, Protocol, Socket, Type};

/// Marks warm-up datagrams, which receivers ignore.
const WARMUP_SEQ: u64 = u64::MAX;
const DATAGRAM: usize = 1024;
const RCVBUF: usize = 4 << 20;

/// The receive buffer of every relay's UDP input: `RELAY_BENCH_RCVBUF` (a size such as
/// `16MiB`), or RCVBUF. Each relay asks for the same with the same privileges (SO_RCVBUF,
/// then SO_RCVBUFFORCE), so none has a larger one than another.
fn input_rcvbuf() -> usize {
    std::env::var("RELAY_BENCH_RCVBUF")
        .ok()
        .and_then(|v| ringrelay::config::units::parse_size(&v).ok())
        .map_or(RCVBUF, |n| n as usize)
}
/// Input rate of the paced UDP case, datagrams per second.
const UDP_PACED_RATE: f64 = 25_000.0;
/// Input rates of case (b3), datagrams/s.
const UDP_SWEEP_RATES: &[f64] = &[50_000.0, 100_000.0, 150_000.0, 200_000.0];
/// Input rate of the paced decimation case, datagrams per second over both channels.
const DECIMATE_PACED_RATE: f64 = 40_000.0;
/// Channels of the decimation case, and what its decimating channels run. Every datagram of
/// `DATAGRAM` bytes is 128 whole frames of i16le x4.
const DECIMATE_CHANNELS: usize = 2;
const DECIMATE_KEYS: &str = "sample = i16le\ninterleave = 4\ndecimate = minmax:10,100,1000\n";
const DECIMATE_FIRST_FACTOR: u64 = 10;
const FRAME_BYTES: u64 = 8;

/// One relay under test.
#[derive(Clone, Debug)]
enum Relay {
    /// `buffer`: `[global] buffer_size`, or the default. `decimate`: every channel runs
    /// `DECIMATE_KEYS` and publishes into the bench's `shm_dir`.
    Ringrelay {
        sqpoll: &'static str,
        buffer: Option<usize>,
        decimate: bool,
        /// `splice = on` in `[global]`: the 1-to-1 TCP channel moves its bytes through a pipe.
        splice: bool,
    },
    Socat {
        buf: usize,
    },
    Blocking {
        buf: usize,
    },
    /// The kernel-only floor: blocking splice(2) through a 1 MiB pipe, a thread per
    /// connection ([`channels_case::pairs_main`]). TCP only.
    Floor,
    /// A samplicator-style UDP loop: one thread receives a datagram, then sends it to each
    /// output in turn, blocking. UDP only.
    Loop,
}

impl Relay {
    fn name(&self) -> String {
        match self {
            Relay::Ringrelay {
                sqpoll,
                buffer,
                decimate,
                splice,
            } => {
                let mut n = format!("ringrelay sqpoll={sqpoll}");
                if let Some(b) = buffer {
                    n += &format!(" buf={}", human(*b));
                }
                if *splice {
                    n += " splice=on";
                }
                if *decimate {
                    n += " minmax";
                }
                n
            }
            Relay::Socat { buf } => format!("socat -b {}", human(*buf)),
            Relay::Blocking { buf } => format!("blocking {}", human(*buf)),
            Relay::Floor => "floor (kernel splice)".into(),
            Relay::Loop => "loop (recv, send to each)".into(),
        }
    }
}

fn human(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{}MiB", n >> 20)
    } else {
        format!("{}KiB", n >> 10)
    }
}

/// Where a relay reads and writes.
#[derive(Clone, Debug)]
enum Wiring {
    /// The relay listens on `input` for one producer and dials `output`.
    Tcp {
        input: SocketAddr,
        output: SocketAddr,
    },
    /// The relay listens on `input` for one producer and dials every one of `outputs`.
    TcpFan {
        input: SocketAddr,
        outputs: Vec<SocketAddr>,
    },
    /// One channel per entry: the relay binds the input and sends every datagram to each of
    /// the outputs. Channel `i` is named `ch{i}`.
    Udp {
        channels: Vec<(SocketAddr, Vec<SocketAddr>)>,
    },
    /// The relay listens on `input` for one producer and on `output` for subscribers
    /// (`tcp-listen://` output; ringrelay only).
    TcpSub {
        input: SocketAddr,
        output: SocketAddr,
    },
    /// One TCP channel per pair: the relay listens on the first address for one producer
    /// and dials the second. Channel `i` is named `ch{i}`.
    TcpPairs {
        pairs: Vec<(SocketAddr, SocketAddr)>,
    },
}

struct Bench {
    /// `RELAY_BENCH_PIN=1`: the relay under test runs on this CPU, the bench's own threads
    /// (sources, sinks) on the others.
    pin: Option<usize>,
    ringrelay: String,
    tmp: std::path::PathBuf,
    /// `shm_dir` of decimating relays: a directory of this bench, removed at the end.
    shm_dir: std::path::PathBuf,
    seq: u32,
}

impl Bench {
    fn spawn(&mut self, relay: &Relay, w: &Wiring) -> io::Result<Child> {
        let mut cmd = match relay {
            Relay::Ringrelay {
                sqpoll,
                buffer,
                decimate,
                splice,
            } => {
                self.seq += 1;
                let path = self.tmp.join(format!(
                    "relay-bench-{}-{}.conf",
                    std::process::id(),
                    self.seq
                ));
                let mut conf = format!("[global]\nsqpoll = {sqpoll}\n");
                if let Some(b) = buffer {
                    conf += &format!("buffer_size = {}\n", human(*b));
                }
                conf += if *splice {
                    "splice = on\n"
                } else {
                    "splice = off\n"
                };
                if *decimate {
                    conf += &format!("shm_dir = {}\n", self.shm_dir.display());
                }
                let extra = if *decimate { DECIMATE_KEYS } else { "" };
                match w {
                    Wiring::Tcp { input, output } => {
                        let opts = std::env::var("RELAY_BENCH_TCP_OUTPUT").unwrap_or_default();
                        conf += &format!(
                        "\n[channel ch0]\ninput = tcp-listen://{input}\noutput = tcp://{output} {opts}\n"
                    )
                    }
                    Wiring::TcpSub { input, output } => {
                        let opts = std::env::var("RELAY_BENCH_TCP_OUTPUT").unwrap_or_default();
                        conf += &format!(
                            "\n[channel ch0]\ninput = tcp-listen://{input}\noutput = tcp-listen://{output} {opts}\n"
                        )
                    }
                    Wiring::TcpFan { input, outputs } => {
                        let opts = std::env::var("RELAY_BENCH_TCP_OUTPUT").unwrap_or_default();
                        conf += &format!("\n[channel ch0]\ninput = tcp-listen://{input}\n");
                        for o in outputs {
                            conf += &format!("output = tcp://{o} {opts}\n");
                        }
                    }
                    Wiring::TcpPairs { pairs } => {
                        let opts = std::env::var("RELAY_BENCH_TCP_OUTPUT").unwrap_or_default();
                        for (i, (input, output)) in pairs.iter().enumerate() {
                            conf += &format!(
                                "\n[channel ch{i}]\ninput = tcp-listen://{input}\noutput = tcp://{output} {opts}\n"
                            );
                        }
                    }
                    Wiring::Udp { channels } => {
                        for (i, (input, outputs)) in channels.iter().enumerate() {
                            conf += &format!(
                                "\n[channel ch{i}]\ninput = udp://{input} rcvbuf={}\n{extra}",
                                input_rcvbuf()
                            );
                            let opts = std::env::var("RELAY_BENCH_UDP_OUTPUT").unwrap_or_default();
                            for o in outputs {
                                conf += &format!("output = udp://{o} {opts}\n");
                            }
                        }
                    }
                }
                std::fs::write(&path, conf)?;
                let mut c = Command::new(&self.ringrelay);
                c.arg("run").arg("-c").arg(&path);
                let verbose = std::env::var_os("RELAY_BENCH_VERBOSE").is_some();
                c.arg("--log-level")
                    .arg(if verbose { "info" } else { "warn" });
                c
            }
            Relay::Socat { .. } if matches!(w, Wiring::Udp { .. }) => {
                let Wiring::Udp { channels } = w else {
                    unreachable!()
                };
                let [(input, outputs)] = &channels[..] else {
                    return Err(io::Error::other("socat runs one channel"));
                };
                let [output] = &outputs[..] else {
                    return Err(io::Error::other("socat has no fan-out"));
                };
                let mut c = Command::new("socat");
                c.arg("-u")
                    .arg(format!("UDP-RECV:{},bind={}", input.port(), input.ip()));
                c.arg(format!("UDP-SENDTO:{}:{}", output.ip(), output.port()));
                c
            }
            Relay::Socat { buf } => {
                let Wiring::Tcp { input, output } = w else {
                    return Err(io::Error::other("socat runs one 1-to-1 channel"));
                };
                let mut c = Command::new("socat");
                c.arg("-b").arg(buf.to_string());
                c.arg(format!(
                    "TCP-LISTEN:{},bind={},reuseaddr",
                    input.port(),
                    input.ip()
                ));
                c.arg(format!("TCP:{}:{}", output.ip(), output.port()));
                c
            }
            Relay::Floor => {
                let pairs = match w {
                    Wiring::Tcp { input, output } => vec![(*input, *output)],
                    Wiring::TcpPairs { pairs } => pairs.clone(),
                    _ => return Err(io::Error::other("the floor relays TCP 1-to-1 only")),
                };
                pairs_command("splice", FLOOR_PIPE, &pairs)?
            }
            Relay::Loop => {
                let Wiring::Udp { channels } = w else {
                    return Err(io::Error::other("the loop relays UDP only"));
                };
                let [(input, outputs)] = &channels[..] else {
                    return Err(io::Error::other("the loop runs one channel"));
                };
                let mut c = Command::new(std::env::current_exe()?);
                c.arg("--blocking-relay")
                    .arg("65536")
                    .arg("udploop")
                    .arg(input.to_string());
                c.args(outputs.iter().map(|o| o.to_string()));
                c
            }
            Relay::Blocking { buf } if matches!(w, Wiring::TcpPairs { .. }) => {
                let Wiring::TcpPairs { pairs } = w else {
                    unreachable!()
                };
                pairs_command("copy", *buf, pairs)?
            }
            Relay::Blocking { buf } => {
                let mut c = Command::new(std::env::current_exe()?);
                c.arg("--blocking-relay").arg(buf.to_string());
                match w {
                    Wiring::Tcp { input, output } => {
                        c.arg("tcp").arg(input.to_string()).arg(output.to_string());
                    }
                    Wiring::TcpFan { input, outputs } => {
                        c.arg("tcp").arg(input.to_string());
                        c.args(outputs.iter().map(|o| o.to_string()));
                    }
                    Wiring::Udp { channels } => {
                        let [(input, outputs)] = &channels[..] else {
                            return Err(io::Error::other("the blocking relay runs one channel"));
                        };
                        c.arg("udp").arg(input.to_string());
                        c.args(outputs.iter().map(|o| o.to_string()));
                    }
                    Wiring::TcpSub { .. } => {
                        return Err(io::Error::other("the blocking relay has no subscribers"))
                    }
                    Wiring::TcpPairs { .. } => unreachable!("matched above"),
                }
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn()?;
        if let Some(cpu) = self.pin {
            // Before the relay makes its ring or any thread: they inherit the mask.
            pin(Pid::from_raw(child.id() as i32), cpu)?;
        }
        Ok(child)
    }

    /// Decimated frames published so far at the first level of channels `ch0..ch{n}`, read
    /// from their regions with the crate's reader.
    fn published_frames(&self, channels: usize) -> Result<u64, String> {
        let mut total = 0;
        for i in 0..channels {
            let path = self.shm_dir.join(format!("ch{i}"));
            let r = ringrelay::shm::Reader::open(&path)
                .map_err(|e| format!("region {}: {e}", path.display()))?;
            total += r.head().map_err(|e| e.to_string())?;
        }
        Ok(total)
    }
}

/// `A,B,C` or `FROM:TO:STEP` (both ends included) as input rates.
fn sweep_rates(v: &str) -> Vec<f64> {
    let parts: Vec<f64> = v.split(':').filter_map(|r| r.trim().parse().ok()).collect();
    if let [from, to, step] = parts[..] {
        if step > 0.0 {
            let n = ((to - from) / step).floor() as usize;
            return (0..=n).map(|i| from + i as f64 * step).collect();
        }
    }
    v.split(',').filter_map(|r| r.trim().parse().ok()).collect()
}

/// Puts process `pid` (a relay just spawned) on CPU `cpu` alone.
fn pin(pid: Pid, cpu: usize) -> io::Result<()> {
    set_affinity(pid, &[cpu])
}

/// Sets the CPU affinity of `pid` (0: the calling thread) to `cpus`.
fn set_affinity(pid: Pid, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain bytes; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: CPU_SET writes one bit of `set`; `c` is below the CPU count, far below
        // the set's 1024 bits.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed, read by the call only.
    let r = unsafe {
        libc::sched_setaffinity(pid.as_raw(), std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pipe size of the floor relay.
const FLOOR_PIPE: usize = 1 << 20;

/// This bench binary as the pairs relay (`--pairs-relay MODE BUF IN OUT...`).
fn pairs_command(
    mode: &str,
    buf: usize,
    pairs: &[(SocketAddr, SocketAddr)],
) -> io::Result<Command> {
    let mut c = Command::new(std::env::current_exe()?);
    c.arg("--pairs-relay").arg(mode).arg(buf.to_string());
    for (i, o) in pairs {
        c.arg(i.to_string()).arg(o.to_string());
    }
    Ok(c)
}

/// Stops a relay (if it has not exited by itself) and returns its CPU seconds: user + system of
/// all its threads, from the growth of RUSAGE_CHILDREN across reaping it.
fn reap(mut child: Child) -> (f64, String) {
    let before = cpu_children();
    let pid = Pid::from_raw(child.id() as i32);
    if matches!(child.try_wait(), Ok(None)) {
        let _ = kill(pid, Signal::SIGTERM);
        let t = Instant::now();
        while matches!(child.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(8) {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if std::env::var_os("RELAY_BENCH_VERBOSE").is_some() {
        // The relay's own log (its counters at exit), for finding where drops happen.
        eprint!("{err}");
    }
    (cpu_children() - before, err)
}

fn cpu_children() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
    tv(u.user_time()) + tv(u.system_time())
}

fn free_port_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn free_port_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One measurement.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    /// Gbit/s (TCP) or delivered datagrams/s (UDP).
    rate: f64,
    /// CPU s per GB (TCP) or CPU µs per delivered datagram (UDP).
    cpu: f64,
    /// Drop % (UDP).
    drop: f64,
    /// Decimating relays: first-level frames published, as a share of the frames expected
    /// from the datagrams delivered (about 1; warm-up datagrams add a little).
    decimated: f64,
}

/// Case (a): pushes `total` bytes through the relay; `Err` names what went wrong.
fn tcp_run(b: &mut Bench, relay: &Relay, total: u64, limit: Duration) -> Result<Sample, String> {
    tcp_fan_run(b, relay, total, 1, limit)
}

/// Cases (a) and (f): pushes `total` bytes through the relay to `fan` sinks (each gets all of
/// them). Gbit/s is per output, from the source's connect to the last sink's last byte; CPU
/// s/GB is per GB of input.
fn tcp_fan_run(
    b: &mut Bench,
    relay: &Relay,
    total: u64,
    fan: usize,
    limit: Duration,
) -> Result<Sample, String> {
    let sinks: Vec<TcpListener> = (0..fan)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let outputs: Vec<SocketAddr> = sinks.iter().map(|s| s.local_addr().unwrap()).collect();
    let input = free_port_tcp();
    let w = if fan == 1 {
        Wiring::Tcp {
            input,
            output: outputs[0],
        }
    } else {
        Wiring::TcpFan { input, outputs }
    };
    let child = b.spawn(relay, &w).map_err(|e| format!("spawn: {e}"))?;
    let deadline = Instant::now() + limit;

    let gots: Vec<Arc<AtomicU64>> = (0..fan).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let end = Arc::new(Mutex::new(None::<Instant>));
    let abort = Arc::new(AtomicBool::new(false));
    let mut sink_threads = Vec::new();
    for (sink, got) in sinks.into_iter().zip(&gots) {
        let (got, end, abort) = (Arc::clone(got), Arc::clone(&end), Arc::clone(&abort));
        sink_threads.push(thread::spawn(move || {
            sink.set_nonblocking(true).unwrap();
            let mut s = loop {
                match sink.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if Instant::now() < deadline && !abort.load(Ordering::Relaxed) => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => return,
                }
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0u64;
            while n < total && Instant::now() < deadline && !abort.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        n += k as u64;
                        got.store(n, Ordering::Relaxed);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            let mut e = end.lock().unwrap();
            if e.is_none_or(|t| t < now) {
                *e = Some(now);
            }
        }));
    }

    // The source: connect once the relay listens, then write as fast as the relay takes it.
    let connect_by = Instant::now() + Duration::from_secs(10);
    let mut src = loop {
        match TcpStream::connect(input) {
            Ok(s) => break s,
            Err(_)
                if Instant::now() < connect_by && !matches!(child_exited(&child), Ok(Some(_))) =>
            {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                let (_, err) = reap(child);
                abort.store(true, Ordering::Relaxed);
                sink_threads.into_iter().for_each(|t| {
                    let _ = t.join();
                });
                return Err(format!(
                    "cannot connect to the relay: {e}; relay said: {}",
                    err.trim()
                ));
            }
        }
    };
    let _ = src.set_write_timeout(Some(Duration::from_millis(200)));
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 + 3) as u8).collect();
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut fail = None;
    while sent < total && Instant::now() < deadline {
        let n = ((total - sent) as usize).min(chunk.len());
        match src.write(&chunk[..n]) {
            Ok(k) => sent += k as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                fail = Some(format!("source write: {e}"));
                break;
            }
        }
    }
    let _ = src.shutdown(Shutdown::Write);
    sink_threads.into_iter().for_each(|t| {
        let _ = t.join();
    });
    drop(src);
    let (cpu, err) = reap(child);
    let n = gots
        .iter()
        .map(|g| g.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0);
    if n != total {
        return Err(format!(
            "a sink got {n} of {total} bytes{}{}",
            fail.map(|f| format!(" ({f})")).unwrap_or_default(),
            if err.is_empty() {
                String::new()
            } else {
                format!("; relay said: {}", err.trim())
            }
        ));
    }
    let secs = end
        .lock()
        .unwrap()
        .unwrap()
        .duration_since(t0)
        .as_secs_f64();
    Ok(Sample {
        rate: total as f64 * 8.0 / secs / 1e9,
        cpu: cpu / (total as f64 / 1e9),
        ..Sample::default()
    })
}

fn child_exited(c: &Child) -> io::Result<Option<()>> {
    // `try_wait` needs `&mut`; peek at /proc instead so the child is reaped only by `reap`.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", c.id()))?;
    Ok(stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next())
        .filter(|s| *s == "Z" || *s == "X")
        .map(|_| ()))
}

/// A UDP load: `channels` relay channels, each sending every datagram to `outs` receivers;
/// `count` datagrams of `DATAGRAM` bytes in all, round-robin over the channels' inputs, paced
/// at `pace` datagrams/s or, with `None`, as fast as `send` returns.
#[derive(Clone, Copy, Debug)]
struct UdpLoad {
    channels: usize,
    outs: usize,
    count: u64,
    pace: Option<f64>,
    /// Bytes per datagram (at least 8: the sequence number).
    size: usize,
}

/// Bytes per datagram of the UDP fan-out cases (b, b2, b3): `RELAY_BENCH_DATAGRAM`, else
/// `DATAGRAM`. The decimation cases always send `DATAGRAM` (whole frames).
fn fan_out_datagram() -> usize {
    std::env::var("RELAY_BENCH_DATAGRAM")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(DATAGRAM, |n: usize| n.clamp(8, RECV_SLOT))
}

/// Datagrams received RECV_BATCH at a time with one `recvmmsg`: the bench's sinks share the
/// two cores with the relay under test, so each costs it as little CPU as it can.
struct RecvBatch {
    bufs: Vec<[u8; RECV_SLOT]>,
    iov: Vec<nix::libc::iovec>,
    hdrs: Vec<nix::libc::mmsghdr>,
}

const RECV_BATCH: usize = 64;
const RECV_SLOT: usize = 2048;

impl RecvBatch {
    fn new() -> Box<Self> {
        let mut b = Box::new(RecvBatch {
            bufs: vec![[0u8; RECV_SLOT]; RECV_BATCH],
            iov: Vec::with_capacity(RECV_BATCH),
            hdrs: Vec::with_capacity(RECV_BATCH),
        });
        for i in 0..RECV_BATCH {
            let base = b.bufs[i].as_mut_ptr().cast();
            b.iov.push(nix::libc::iovec {
                iov_base: base,
                iov_len: RECV_SLOT,
            });
        }
        for i in 0..RECV_BATCH {
            // SAFETY: an all-zero mmsghdr is a valid empty header; its iovec points into
            // `bufs`, which lives (unmoved, on the heap) as long as `self`.
            let mut h: nix::libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = &mut b.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            b.hdrs.push(h);
        }
        b
    }

    /// Waits (up to the socket's read timeout) for one datagram, then takes what else is
    /// queued, up to RECV_BATCH; returns how many arrived.
    fn recv(&mut self, s: &UdpSocket) -> usize {
        use std::os::fd::AsRawFd;
        // SAFETY: `hdrs` holds RECV_BATCH headers whose buffers are ours and RECV_SLOT long.
        let n = unsafe {
            nix::libc::recvmmsg(
                s.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                RECV_BATCH as u32,
                nix::libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        n.max(0) as usize
    }

    /// The first `n` datagrams of the last `recv`.
    fn datagrams(&self, n: usize) -> impl Iterator<Item = &[u8]> {
        self.hdrs[..n]
            .iter()
            .zip(&self.bufs)
            .map(|(h, b)| &b[..(h.msg_len as usize).min(RECV_SLOT)])
    }
}

/// Cases (b) and (d): `load` through the relay. Delivered/s counts every output.
fn udp_run(b: &mut Bench, relay: &Relay, load: UdpLoad, limit: Duration) -> Result<Sample, String> {
    let n_rx = load.channels * load.outs;
    assert!(n_rx > 0 && n_rx <= 64, "one warm-up bit per receiver");
    let mut socks = Vec::new();
    for _ in 0..n_rx {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        let _ = s.set_recv_buffer_size(RCVBUF);
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let s: UdpSocket = s.into();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        socks.push(s);
    }
    let outputs: Vec<SocketAddr> = socks.iter().map(|s| s.local_addr().unwrap()).collect();
    let inputs: Vec<SocketAddr> = (0..load.channels).map(|_| free_port_udp()).collect();
    let w = Wiring::Udp {
        channels: inputs
            .iter()
            .zip(outputs.chunks(load.outs))
            .map(|(i, o)| (*i, o.to_vec()))
            .collect(),
    };
    let child = b.spawn(relay, &w).map_err(|e| format!("spawn: {e}"))?;
    let deadline = Instant::now() + limit;

    let done = Arc::new(AtomicBool::new(false));
    let warm = Arc::new(AtomicU64::new(0));
    let last = Arc::new(Mutex::new(Instant::now()));
    let mut rx = Vec::new();
    for (i, s) in socks.into_iter().enumerate() {
        let (done, warm, last) = (Arc::clone(&done), Arc::clone(&warm), Arc::clone(&last));
        rx.push(thread::spawn(move || {
            let mut batch = RecvBatch::new();
            let mut n = 0u64;
            let mut seen_warm = false;
            while !done.load(Ordering::Relaxed) {
                let got = batch.recv(&s);
                let before = n;
                for d in batch.datagrams(got) {
                    if d.len() < 8 {
                        continue;
                    }
                    if u64::from_be_bytes(d[..8].try_into().unwrap()) == WARMUP_SEQ {
                        if !seen_warm {
                            seen_warm = true;
                            warm.fetch_or(1 << i, Ordering::Relaxed);
                        }
                    } else {
                        n += 1;
                    }
                }
                if n / 64 != before / 64 {
                    *last.lock().unwrap() = Instant::now();
                }
            }
            n
        }));
    }
    let txs: Vec<UdpSocket> = inputs
        .iter()
        .map(|i| {
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            tx.connect(i).unwrap();
            tx
        })
        .collect();
    // A varying payload (whole i16le x4 frames for the decimation case) after the sequence.
    let mut pkt: Vec<u8> = (0..load.size).map(|i| (i * 37 + 11) as u8).collect();
    // Warm up until every receiver has heard from the relay: it is bound and its outputs work.
    pkt[..8].copy_from_slice(&WARMUP_SEQ.to_be_bytes());
    let all = if n_rx == 64 {
        u64::MAX
    } else {
        (1u64 << n_rx) - 1
    };
    let mut warmups = 0u64;
    let ready = loop {
        if warm.load(Ordering::Relaxed) == all {
            break true;
        }
        if Instant::now() >= deadline || matches!(child_exited(&child), Ok(Some(_))) {
            break false;
        }
        for tx in &txs {
            let _ = tx.send(&pkt);
        }
        warmups += 1;
        thread::sleep(Duration::from_millis(20));
    };
    if !ready {
        done.store(true, Ordering::Relaxed);
        rx.into_iter().for_each(|t| {
            let _ = t.join();
        });
        let (_, err) = reap(child);
        return Err(format!(
            "relay never delivered to all outputs: {}",
            err.trim()
        ));
    }
    thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    *last.lock().unwrap() = t0;
    for seq in 0..load.count {
        if let Some(r) = load.pace {
            // Paced in bursts of 16 against the monotonic clock.
            if seq % 16 == 0 {
                let due = t0 + Duration::from_secs_f64(seq as f64 / r);
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
            }
        }
        pkt[..8].copy_from_slice(&seq.to_be_bytes());
        let tx = &txs[seq as usize % txs.len()];
        loop {
            match tx.send(&pkt) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => thread::yield_now(),
                Err(_) => break,
            }
        }
    }
    let t_sent = t0.elapsed().as_secs_f64();
    // Wait until the receivers have been quiet for 300 ms.
    loop {
        thread::sleep(Duration::from_millis(50));
        let quiet = last.lock().unwrap().elapsed();
        if quiet > Duration::from_millis(300) || Instant::now() >= deadline {
            break;
        }
    }
    // The relay has gone quiet, so its regions hold everything it decimated.
    let published = match relay {
        Relay::Ringrelay { decimate: true, .. } => Some(b.published_frames(load.channels)),
        _ => None,
    };
    let (cpu, err) = reap(child);
    // The relay is gone: take what is left in the receive queues, then stop.
    thread::sleep(Duration::from_millis(100));
    done.store(true, Ordering::Relaxed);
    let got: u64 = rx.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    let secs = last
        .lock()
        .unwrap()
        .duration_since(t0)
        .as_secs_f64()
        .max(t_sent);
    let want = load.count * load.outs as u64;
    let decimated = match published {
        None => 0.0,
        Some(Err(e)) => return Err(format!("{e}; relay said: {}", err.trim())),
        Some(Ok(0)) => {
            return Err(format!(
                "no decimated frames in {}; relay said: {}",
                b.shm_dir.display(),
                err.trim()
            ))
        }
        Some(Ok(frames)) => {
            // Each channel's input carried its share of `got / outs` datagrams plus warm-ups.
            let dgrams = got / load.outs as u64 + warmups * load.channels as u64;
            let expected = dgrams * (DATAGRAM as u64 / FRAME_BYTES) / DECIMATE_FIRST_FACTOR;
            frames as f64 / expected.max(1) as f64
        }
    };
    Ok(Sample {
        rate: got as f64 / secs,
        cpu: if got > 0 {
            cpu * 1e6 / got as f64
        } else {
            f64::NAN
        },
        drop: 100.0 * (want - got.min(want)) as f64 / want as f64,
        decimated,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Medians of a relay's runs, or why it could not run.
struct Row {
    name: String,
    /// `ringrelay` rows are compared with every other row of their table: the peers, or in
    /// (d) and (e) a `reference` ringrelay row.
    kind: &'static str,
    result: Result<Sample, String>,
}

/// The results of `runs` runs that succeeded, or the last error when none did.
fn successes<T>(runs: usize, mut f: impl FnMut() -> Result<T, String>) -> Result<Vec<T>, String> {
    let mut ok = Vec::new();
    let mut last_err = None;
    for _ in 0..runs {
        match f() {
            Ok(s) => ok.push(s),
            Err(e) => last_err = Some(e),
        }
    }
    if ok.is_empty() {
        return Err(last_err.unwrap_or_else(|| "no runs".into()));
    }
    Ok(ok)
}

fn measure(runs: usize, f: impl FnMut() -> Result<Sample, String>) -> Result<Sample, String> {
    let ok = successes(runs, f)?;
    Ok(Sample {
        rate: median(ok.iter().map(|s| s.rate).collect()),
        cpu: median(ok.iter().map(|s| s.cpu).collect()),
        drop: median(ok.iter().map(|s| s.drop).collect()),
        decimated: median(ok.iter().map(|s| s.decimated).collect()),
    })
}

/// [`print_table`] for a case that ran (`RELAY_BENCH_CASES` can leave one out).
fn print_table_if(title: &str, rate_h: &str, cpu_h: &str, with_drop: bool, rows: &[Row]) {
    if !rows.is_empty() {
        print_table(title, rate_h, cpu_h, with_drop, rows);
    }
}

fn print_table(title: &str, rate_h: &str, cpu_h: &str, with_drop: bool, rows: &[Row]) {
    println!("\n{title}");
    let drop_h = if with_drop { "    drop %" } else { "" };
    println!("  {:<32} {:>14} {:>16}{drop_h}", "relay", rate_h, cpu_h);
    for r in rows {
        match &r.result {
            Ok(s) => {
                let d = if with_drop {
                    format!(" {:>9.2}", s.drop)
                } else {
                    String::new()
                };
                let shm = if s.decimated > 0.0 {
                    format!("   (shm: {:.3} of the expected frames)", s.decimated)
                } else {
                    String::new()
                };
                println!("  {:<32} {:>14.3} {:>16.3}{d}{shm}", r.name, s.rate, s.cpu);
            }
            Err(e) => println!("  {:<32} not measured: {e}", r.name),
        }
    }
    // Ratios of each ringrelay row to each peer: rate (higher is better) and CPU (lower is better).
    let ours: Vec<&Row> = rows.iter().filter(|r| r.kind == "ringrelay").collect();
    let peers: Vec<&Row> = rows.iter().filter(|r| r.kind != "ringrelay").collect();
    for o in &ours {
        let Ok(os) = &o.result else { continue };
        for p in &peers {
            let Ok(ps) = &p.result else { continue };
            let mut line = format!(
                "  {} / {}: {} x{:.2}, CPU x{:.2}",
                o.name,
                p.name,
                if with_drop {
                    "delivered/s"
                } else {
                    "throughput"
                },
                os.rate / ps.rate,
                os.cpu / ps.cpu
            );
            if with_drop {
                line += &format!(", drop {:.2}% vs {:.2}%", os.drop, ps.drop);
            }
            println!("{line}");
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Online CPUs, not this thread's affinity (a pinned bench runs on fewer).
    // SAFETY: sysconf reads a system value.
    let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{date}, {cpu}, {cores} cores, Linux {kernel}")
}

fn have_socat() -> Result<(), String> {
    let found = || {
        Command::new("socat")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found() {
        return Ok(());
    }
    eprintln!("relay bench: socat not found, trying apt-get install -y socat");
    let _ = Command::new("timeout")
        .args(["180", "apt-get", "install", "-y", "socat"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if found() {
        Ok(())
    } else {
        Err("socat is not installed and apt-get install socat failed".into())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--blocking-relay") {
        std::process::exit(blocking::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("--pairs-relay") {
        std::process::exit(channels_case::pairs_main(&args[2..]));
    }
    let quick = std::env::var("RELAY_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
    let only: Option<Vec<String>> = std::env::var("RELAY_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let (runs, tcp_bytes, udp_count, udp_paced_count, dec_count, dec_paced_count) = if quick {
        (1, 256u64 << 20, 50_000u64, 20_000u64, 100_000u64, 40_000u64)
    } else {
        (3, 2u64 << 30, 200_000u64, 50_000u64, 400_000u64, 120_000u64)
    };
    let limit = Duration::from_secs(if quick { 20 } else { 120 });
    // Case (f) moves this much input, three times over.
    let fan_bytes = if quick { 128u64 << 20 } else { 1u64 << 30 };
    let cases: Option<Vec<String>> = std::env::var("RELAY_BENCH_CASES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let case = |c: &str| cases.as_ref().is_none_or(|v| v.iter().any(|x| x == c));
    let selected = |r: &Relay| {
        only.as_ref()
            .is_none_or(|o| o.iter().any(|p| r.name().starts_with(p.as_str())))
    };

    let socat = have_socat();
    let ring = |sqpoll| Relay::Ringrelay {
        sqpoll,
        buffer: None,
        decimate: false,
        splice: false,
    };
    let mut relays = vec![
        ring("off"),
        ring("on"),
        Relay::Ringrelay {
            sqpoll: "off",
            buffer: Some(256 << 10),
            decimate: false,
            splice: false,
        },
        Relay::Ringrelay {
            sqpoll: "off",
            buffer: None,
            decimate: false,
            splice: true,
        },
        Relay::Socat { buf: 8192 },
        Relay::Socat { buf: 1 << 20 },
        Relay::Blocking { buf: 64 << 10 },
        Relay::Blocking { buf: 1 << 20 },
        Relay::Floor,
        Relay::Loop,
    ];
    relays.retain(selected);
    let shm_base = std::path::Path::new("/dev/shm");
    let shm_dir = if shm_base.is_dir() {
        shm_base
    } else {
        std::path::Path::new("/tmp")
    }
    .join(format!("ringrelay-bench-{}", std::process::id()));
    let pinned = std::env::var("RELAY_BENCH_PIN").is_ok_and(|v| v == "1");
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let pin_cpu = (pinned && cpus >= 2).then_some(0);
    if let Some(cpu) = pin_cpu {
        // The bench's threads (this one and all it starts) on every CPU but the relay's.
        let others: Vec<usize> = (0..cpus).filter(|&c| c != cpu).collect();
        set_affinity(Pid::from_raw(0), &others).expect("pin the bench");
    }
    let mut b = Bench {
        pin: pin_cpu,
        ringrelay: env!("CARGO_BIN_EXE_ringrelay").to_string(),
        tmp: std::env::temp_dir(),
        shm_dir,
        seq: 0,
    };

    println!(
        "ringrelay relay bench ({}), loopback",
        if quick { "quick" } else { "full" }
    );
    println!("machine: {}", machine());
    match b.pin {
        Some(cpu) => println!(
            "pinned: the relay under test on CPU {cpu} alone, sources and sinks on the others"
        ),
        None => println!("unpinned: relays, sources and sinks share every CPU"),
    }
    if fan_out_datagram() != DATAGRAM {
        println!(
            "UDP fan-out cases (b, b2, b3): {} B datagrams",
            fan_out_datagram()
        );
    }
    println!(
        "{} run(s) per cell, medians; TCP {} MiB per run, UDP {} (paced: {}) datagrams of {} B per run, \
         decimation {} (paced: {})",
        runs,
        tcp_bytes >> 20,
        udp_count,
        udp_paced_count,
        fan_out_datagram(),
        dec_count,
        dec_paced_count
    );

    let kind = |r: &Relay| match r {
        Relay::Ringrelay { .. } => "ringrelay",
        Relay::Socat { .. } => "socat",
        Relay::Blocking { .. } => "blocking",
        Relay::Floor => "floor",
        Relay::Loop => "loop",
    };
    let mut tcp_rows = Vec::new();
    // The loop relays datagrams only.
    let tcp_relays = relays.iter().filter(|r| !matches!(r, Relay::Loop));
    for r in tcp_relays.filter(|_| case("a")) {
        let result = match (r, &socat) {
            (Relay::Socat { .. }, Err(e)) => Err(e.clone()),
            _ => measure(runs, || tcp_run(&mut b, r, tcp_bytes, limit)),
        };
        tcp_rows.push(Row {
            name: r.name(),
            kind: kind(r),
            result,
        });
    }
    print_table_if(
        "(a) TCP 1-to-1 bulk",
        "Gbit/s",
        "CPU s/GB",
        false,
        &tcp_rows,
    );

    // (f): TCP 1-to-3 fan-out: ringrelay's tee splice path against its buffer path and the
    // blocking relay's thread per output.
    let mut fan_rows = Vec::new();
    let fan_relays = relays.iter().filter(|r| match r {
        Relay::Ringrelay { sqpoll, buffer, .. } => *sqpoll == "off" && buffer.is_none(),
        Relay::Blocking { .. } => true,
        Relay::Socat { .. } | Relay::Floor | Relay::Loop => false,
    });
    for r in fan_relays.filter(|_| case("f")) {
        fan_rows.push(Row {
            name: r.name(),
            kind: kind(r),
            result: measure(runs, || tcp_fan_run(&mut b, r, fan_bytes, 3, limit)),
        });
    }
    print_table_if(
        "(f) TCP 1-to-3 fan-out (Gbit/s per output; CPU s per GB of input)",
        "Gbit/s/output",
        "CPU s/GB",
        false,
        &fan_rows,
    );

    // (i): TCP fan-out to 8 and 64 subscribers: tee, buffers, and a thread per subscriber.
    let mut fanout_failed = 0;
    if case("i") {
        let fan_relays: Vec<(&Relay, &'static str)> = relays
            .iter()
            .filter(|r| match r {
                Relay::Ringrelay {
                    sqpoll,
                    buffer,
                    decimate,
                    ..
                } => *sqpoll == "off" && buffer.is_none() && !decimate,
                Relay::Blocking { buf } => *buf == 1 << 20,
                Relay::Socat { .. } | Relay::Floor | Relay::Loop => false,
            })
            .map(|r| (r, kind(r)))
            .collect();
        for n in fanout_case::COUNTS {
            fanout_failed += fanout_case::run_and_print(&mut b, &fan_relays, n, runs, quick, limit);
        }
    }

    // (h): many TCP channels at once: aggregate throughput, CPU, and the slowest channel.
    let mut channels_failed = 0;
    if case("h") {
        let total = if quick { 256u64 << 20 } else { 2u64 << 30 };
        let chan_relays: Vec<&Relay> = relays
            .iter()
            .filter(|r| match r {
                Relay::Ringrelay {
                    sqpoll,
                    buffer,
                    decimate,
                    ..
                } => *sqpoll == "off" && buffer.is_none() && !decimate,
                Relay::Blocking { buf } => *buf == 1 << 20,
                Relay::Floor => true,
                Relay::Socat { .. } | Relay::Loop => false,
            })
            .collect();
        for n in channels_case::COUNTS {
            let per = total / n as u64;
            let rows: Vec<_> = chan_relays
                .iter()
                .map(|r| {
                    let res = channels_case::measure(runs, || {
                        channels_case::run(&mut b, r, n, per, limit)
                    });
                    if r.name().starts_with("ringrelay") && res.is_err() {
                        channels_failed += 1;
                    }
                    (r.name(), kind(r), res)
                })
                .collect();
            channels_case::print(n, per, &rows);
        }
    }

    // (l): the latency a relay adds to UDP at a moderate rate (not in the default set: it
    // wants a quiet machine; RELAY_BENCH_CASES=l).
    if cases.as_ref().is_some_and(|v| v.iter().any(|x| x == "l")) {
        let count = if quick { 5_000 } else { 20_000 };
        match latency_case::direct(count) {
            Ok(direct) => {
                let rows: Vec<_> = relays
                    .iter()
                    .filter(|r| match r {
                        Relay::Ringrelay {
                            buffer, decimate, ..
                        } => buffer.is_none() && !decimate,
                        Relay::Socat { buf } => *buf == 8192 && socat.is_ok(),
                        Relay::Blocking { buf } => *buf == 64 << 10,
                        Relay::Loop => true,
                        Relay::Floor => false,
                    })
                    .filter(|r| !matches!(r, Relay::Ringrelay { splice: true, .. }))
                    .map(|r| (r.name(), latency_case::through(&mut b, r, count)))
                    .collect();
                latency_case::print("UDP", count, &direct, &rows);
            }
            Err(e) => println!("\n(l) UDP latency: the direct path failed: {e}"),
        }
        // The same with TCP: the relay dials the sink (every relay), and ringrelay's
        // tcp-listen:// output with the sink as its subscriber.
        match latency_case::tcp_direct(count) {
            Ok(direct) => {
                let mut rows = Vec::new();
                for r in relays.iter().filter(|r| match r {
                    Relay::Ringrelay {
                        buffer,
                        decimate,
                        splice,
                        ..
                    } => buffer.is_none() && !decimate && !splice,
                    Relay::Socat { buf } => *buf == 8192 && socat.is_ok(),
                    Relay::Blocking { buf } => *buf == 64 << 10,
                    Relay::Floor => true,
                    Relay::Loop => false,
                }) {
                    rows.push((r.name(), latency_case::tcp_through(&mut b, r, count, false)));
                    if matches!(r, Relay::Ringrelay { .. }) {
                        rows.push((
                            format!("{} subscriber", r.name()),
                            latency_case::tcp_through(&mut b, r, count, true),
                        ));
                    }
                }
                latency_case::print("TCP", count, &direct, &rows);
            }
            Err(e) => println!("\n(l) TCP latency: the direct path failed: {e}"),
        }
    }

    if case("g") {
        // Case (g): one run per cell set; 128 MiB (quick: 32 MiB) of 100-byte lines.
        let bytes = if quick { 32u64 << 20 } else { 128u64 << 20 };
        let mut samples = Vec::new();
        for _ in 0..runs {
            match spool_case::run(&b.ringrelay, &b.tmp, bytes, limit) {
                Ok(s) => samples.push(s),
                Err(e) => println!("(g) spool: FAILED: {e}"),
            }
        }
        if !samples.is_empty() {
            let med =
                |f: fn(&spool_case::SpoolSample) -> f64| median(samples.iter().map(f).collect());
            let (plain, spooling, replaying) =
                (med(|s| s.plain), med(|s| s.spooling), med(|s| s.replaying));
            println!(
                "\n(g) spool, TCP lines of 100 B, {} MiB (MB/s of records; ratio to plain)",
                bytes >> 20
            );
            println!("  plain (no spool)        {plain:8.1} MB/s");
            println!(
                "  spooling (to disk)      {spooling:8.1} MB/s  x{:.2}",
                spooling / plain
            );
            println!(
                "  replaying (from disk)   {replaying:8.1} MB/s  x{:.2}",
                replaying / plain
            );
            println!(
                "  records dropped by the spool while spooling (disk behind): {:.1} %",
                100.0 * med(|s| s.dropped)
            );
        }
    }

    let mut udp_rows = Vec::new();
    // socat cannot fan out; the blocking relay's buffer size does not matter for datagrams.
    let udp_relays = relays.iter().filter(|r| {
        !matches!(r, Relay::Socat { .. } | Relay::Floor)
            && !matches!(r, Relay::Blocking { buf } if *buf != 64 << 10)
            // The 256KiB and splice rows are about streams.
            && !matches!(r, Relay::Ringrelay { buffer: Some(_), .. })
            && !matches!(r, Relay::Ringrelay { splice: true, .. })
    });
    let udp_relays: Vec<&Relay> = udp_relays.collect();
    let fan_size = fan_out_datagram();
    let fan_out = |count, pace| UdpLoad {
        channels: 1,
        outs: 4,
        count,
        pace,
        size: fan_size,
    };
    for r in udp_relays.iter().filter(|_| case("b")) {
        udp_rows.push(Row {
            name: r.name(),
            kind: kind(r),
            result: measure(runs, || udp_run(&mut b, r, fan_out(udp_count, None), limit)),
        });
    }
    print_table_if(
        "(b) UDP 1-to-4 fan-out, 1 KiB datagrams at max rate (socat: no fan-out)",
        "delivered/s",
        "CPU us/dgram",
        true,
        &udp_rows,
    );
    let mut paced_rows = Vec::new();
    for r in udp_relays.iter().filter(|_| case("b2")) {
        paced_rows.push(Row {
            name: r.name(),
            kind: kind(r),
            result: measure(runs, || {
                udp_run(
                    &mut b,
                    r,
                    fan_out(udp_paced_count, Some(UDP_PACED_RATE)),
                    limit,
                )
            }),
        });
    }
    print_table_if(
        &format!(
            "(b2) the same fan-out paced at {} datagrams/s in (a sustainable load: drops should be 0)",
            UDP_PACED_RATE
        ),
        "delivered/s",
        "CPU us/dgram",
        true,
        &paced_rows,
    );
    // (b3) The same fan-out paced at rising rates: where each relay starts to lose datagrams.
    // At max rate (b) the sender takes whatever CPU the relay leaves it, so drop % there
    // mostly says how much the relay slows the sender down; a paced sweep says how much load
    // a relay carries without loss.
    let mut sweep_rows: Vec<(f64, Vec<Row>)> = Vec::new();
    if case("b3") {
        // RELAY_BENCH_SWEEP=100000,200000 replaces the rates; FROM:TO:STEP is a range.
        let rates: Vec<f64> = std::env::var("RELAY_BENCH_SWEEP")
            .ok()
            .map(|v| sweep_rates(&v))
            .unwrap_or_else(|| UDP_SWEEP_RATES.to_vec());
        for &rate in &rates {
            let count = (rate * if quick { 0.5 } else { 1.0 }) as u64;
            let mut rows = Vec::new();
            for r in &udp_relays {
                rows.push(Row {
                    name: r.name(),
                    kind: kind(r),
                    result: measure(runs, || {
                        udp_run(&mut b, r, fan_out(count, Some(rate)), limit)
                    }),
                });
            }
            sweep_rows.push((rate, rows));
        }
        println!("\n(b3) the same fan-out paced at rising rates in (1 s of load each): drop %");
        print!("  {:<32}", "relay");
        for (rate, _) in &sweep_rows {
            print!(" {:>9}", format!("{}k/s", rate / 1000.0));
        }
        println!();
        for (i, r) in udp_relays.iter().enumerate() {
            print!("  {:<32}", r.name());
            for (_, rows) in &sweep_rows {
                match &rows[i].result {
                    Ok(s) => print!(" {:>9.2}", s.drop),
                    Err(_) => print!(" {:>9}", "-"),
                }
            }
            println!();
        }
        // The highest rate each relay carried with less than 0.1% loss, below its first
        // lossy rate (item of comparison for per-core efficiency).
        for (i, r) in udp_relays.iter().enumerate() {
            let mut best = None;
            for (rate, rows) in &sweep_rows {
                match &rows[i].result {
                    Ok(s) if s.drop < 0.1 => best = Some(*rate),
                    _ => break,
                }
            }
            match best {
                Some(b) => println!("  {}: lossless up to {}k/s", r.name(), b / 1000.0),
                None => println!("  {}: lossy from the first rate", r.name()),
            }
        }
        print!("  {:<32}", "  CPU us/dgram (first relay)");
        for (_, rows) in &sweep_rows {
            match &rows[0].result {
                Ok(s) => print!(" {:>9.3}", s.cpu),
                Err(_) => print!(" {:>9}", "-"),
            }
        }
        println!();
    }
    println!(
        "\n(c) sqpoll: compare the ringrelay sqpoll=on and sqpoll=off rows above; on a 2-core box \
         the SQPOLL thread competes with the load generator."
    );

    // (d) and (e) compare ringrelay with itself, with sqpoll = off: the CPU of a spinning
    // SQPOLL thread would hide the difference being measured.
    let plain = ring("off");
    let decimating = Relay::Ringrelay {
        sqpoll: "off",
        buffer: None,
        decimate: true,
        splice: false,
    };
    let mut dec_rows = Vec::new();
    for (pace, count, title) in [
        (
            None,
            dec_count,
            format!(
                "(d) decimating channel vs plain: {DECIMATE_CHANNELS} UDP channels 1-to-1, i16le x4, \
                 1 KiB datagrams at max rate; minmax:10,100,1000 into shm"
            ),
        ),
        (
            Some(DECIMATE_PACED_RATE),
            dec_paced_count,
            format!("(d2) the same paced at {DECIMATE_PACED_RATE} datagrams/s in (drops should be 0)"),
        ),
    ] {
        let load = UdpLoad {
            channels: DECIMATE_CHANNELS,
            outs: 1,
            count,
            pace,
            size: DATAGRAM,
        };
        let mut rows = Vec::new();
        let name = if pace.is_none() { "d" } else { "d2" };
        for (r, k) in [(&plain, "reference"), (&decimating, "ringrelay")] {
            if !selected(r) || !case(name) {
                continue;
            }
            rows.push(Row {
                name: r.name(),
                kind: k,
                result: measure(runs, || udp_run(&mut b, r, load, limit)),
            });
        }
        if rows.is_empty() {
            continue;
        }
        print_table(
            &title,
            "delivered/s",
            "CPU us/dgram",
            true,
            &rows,
        );
        dec_rows.extend(rows);
    }
    let _ = std::fs::remove_dir_all(&b.shm_dir);

    let mut buf_rows = Vec::new();
    let big = Relay::Ringrelay {
        sqpoll: "off",
        buffer: Some(256 << 10),
        decimate: false,
        splice: false,
    };
    if selected(&big) && case("e") {
        // The default-buffer row is (a)'s when it was measured there.
        let reference = tcp_rows
            .iter()
            .find(|r| r.name == plain.name())
            .map(|r| r.result.clone())
            .unwrap_or_else(|| measure(runs, || tcp_run(&mut b, &plain, tcp_bytes, limit)));
        buf_rows.push(Row {
            name: format!("{} (64KiB)", plain.name()),
            kind: "reference",
            result: reference,
        });
        buf_rows.push(Row {
            name: big.name(),
            kind: "ringrelay",
            result: measure(runs, || tcp_run(&mut b, &big, tcp_bytes, limit)),
        });
        print_table(
            "(e) TCP 1-to-1 bulk, buffer_size = 256KiB vs the default 64KiB",
            "Gbit/s",
            "CPU s/GB",
            false,
            &buf_rows,
        );
    }

    // The temporary configs of this run.
    for seq in 1..=b.seq {
        let _ = std::fs::remove_file(
            b.tmp
                .join(format!("relay-bench-{}-{seq}.conf", std::process::id())),
        );
    }
    let failed = tcp_rows
        .iter()
        .chain(sweep_rows.iter().flat_map(|(_, r)| r))
        .chain(&udp_rows)
        .chain(&paced_rows)
        .chain(&dec_rows)
        .chain(&buf_rows)
        .filter(|r| r.name.starts_with("ringrelay") && r.result.is_err())
        .count()
        + channels_failed
        + fanout_failed;
    if failed > 0 {
        eprintln!("relay bench: {failed} ringrelay cell(s) could not be measured");
        std::process::exit(1);
    }
}

/// The plain blocking-threads relay the bench compares with: std blocking sockets, one thread
/// per output when fanning out, a fixed buffer size. Run as `BENCH --blocking-relay BUF tcp IN
/// OUT` or `BENCH --blocking-relay BUF udp IN OUT...`.
mod blocking {
    use super::*;

    pub fn main(args: &[String]) -> i32 {
        let run = || -> io::Result<()> {
            let buf: usize = args[0].parse().map_err(io::Error::other)?;
            let addr = |s: &String| s.parse::<SocketAddr>().map_err(io::Error::other);
            let input = addr(&args[2])?;
            let outputs: Vec<SocketAddr> = args[3..].iter().map(addr).collect::<Result<_, _>>()?;
            match args[1].as_str() {
                "tcp" => tcp(buf, input, &outputs),
                "udp" => udp(buf, input, &outputs),
                "udploop" => udp_loop(buf, input, &outputs),
                k => Err(io::Error::other(format!("unknown kind {k}"))),
            }
        };
        match run() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("blocking relay: {e}");
                1
            }
        }
    }

    fn tcp(buf: usize, input: SocketAddr, outputs: &[SocketAddr]) -> io::Result<()> {
        let l = TcpListener::bind(input)?;
        let (mut src, _) = l.accept()?;
        let mut outs: Vec<TcpStream> = outputs
            .iter()
            .map(TcpStream::connect)
            .collect::<Result<_, _>>()?;
        let mut b = vec![0u8; buf];
        if outs.len() == 1 {
            // 1-to-1: one thread, read then write.
            let out = &mut outs[0];
            loop {
                let n = src.read(&mut b)?;
                if n == 0 {
                    break;
                }
                out.write_all(&b[..n])?;
            }
            out.shutdown(Shutdown::Write)?;
            return Ok(());
        }
        let mut txs: Vec<SyncSender<Arc<[u8]>>> = Vec::new();
        let mut joins = Vec::new();
        for mut o in outs {
            let (tx, rx) = sync_channel::<Arc<[u8]>>(16);
            txs.push(tx);
            joins.push(thread::spawn(move || {
                for chunk in rx {
                    if o.write_all(&chunk).is_err() {
                        return;
                    }
                }
                let _ = o.shutdown(Shutdown::Write);
            }));
        }
        loop {
            let n = src.read(&mut b)?;
            if n == 0 {
                break;
            }
            let chunk: Arc<[u8]> = Arc::from(&b[..n]);
            for tx in &txs {
                let _ = tx.send(Arc::clone(&chunk));
            }
        }
        drop(txs);
        joins.into_iter().for_each(|j| {
            let _ = j.join();
        });
        Ok(())
    }

    /// Samplicator's shape: one thread, receive, then send to each output in turn.
    fn udp_loop(buf: usize, input: SocketAddr, outputs: &[SocketAddr]) -> io::Result<()> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        ringrelay::driver::net::set_rcvbuf(&s, input_rcvbuf());
        s.bind(&input.into())?;
        let s: UdpSocket = s.into();
        let out = UdpSocket::bind("127.0.0.1:0")?;
        let mut b = vec![0u8; buf.min(65536)];
        loop {
            let n = s.recv(&mut b)?;
            for o in outputs {
                let _ = out.send_to(&b[..n], o);
            }
        }
    }

    fn udp(buf: usize, input: SocketAddr, outputs: &[SocketAddr]) -> io::Result<()> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        ringrelay::driver::net::set_rcvbuf(&s, input_rcvbuf());
        s.bind(&input.into())?;
        let s: UdpSocket = s.into();
        let mut txs: Vec<SyncSender<Arc<[u8]>>> = Vec::new();
        for o in outputs {
            let (tx, rx) = sync_channel::<Arc<[u8]>>(4096);
            let out = UdpSocket::bind("127.0.0.1:0")?;
            out.connect(o)?;
            txs.push(tx);
            thread::spawn(move || {
                for d in rx {
                    let _ = out.send(&d);
                }
            });
        }
        let mut b = vec![0u8; buf.min(65536)];
        loop {
            let n = s.recv(&mut b)?;
            let d: Arc<[u8]> = Arc::from(&b[..n]);
            for tx in &txs {
                // A full queue drops, as a UDP relay must rather than stall the input.
                if let Err(TrySendError::Disconnected(_)) = tx.try_send(Arc::clone(&d)) {
                    return Ok(());
                }
            }
        }
    }
}
