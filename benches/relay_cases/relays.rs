//! The relays under test and how the bench runs them: [`Relay`] (ringrelay in its
//! configurations, socat, the blocking relay, the floor, the loop), [`Wiring`] (what a relay reads
//! and writes), [`Bench`] spawning each as a child process with its config, CPU pinning, reaping a
//! relay for its CPU seconds, free loopback ports, and finding socat.

use super::*;

/// One relay under test.
#[derive(Clone, Debug)]
pub enum Relay {
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
    /// connection ([`super::channels_case::pairs_main`]). TCP only.
    Floor,
    /// A samplicator-style UDP loop: one thread receives a datagram, then sends it to each
    /// output in turn, blocking. UDP only.
    Loop,
}

impl Relay {
    pub fn name(&self) -> String {
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
pub enum Wiring {
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

pub struct Bench {
    /// `RELAY_BENCH_PIN=1`: the relay under test runs on this CPU, the bench's own threads
    /// (sources, sinks) on the others.
    pub pin: Option<usize>,
    pub ringrelay: String,
    pub tmp: std::path::PathBuf,
    /// `shm_dir` of decimating relays: a directory of this bench, removed at the end.
    pub shm_dir: std::path::PathBuf,
    pub seq: u32,
}

impl Bench {
    pub fn spawn(&mut self, relay: &Relay, w: &Wiring) -> io::Result<Child> {
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
    pub fn published_frames(&self, channels: usize) -> Result<u64, String> {
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

/// Puts process `pid` (a relay just spawned) on CPU `cpu` alone.
pub fn pin(pid: Pid, cpu: usize) -> io::Result<()> {
    set_affinity(pid, &[cpu])
}

/// Sets the CPU affinity of `pid` (0: the calling thread) to `cpus`.
pub fn set_affinity(pid: Pid, cpus: &[usize]) -> io::Result<()> {
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
pub fn reap(mut child: Child) -> (f64, String) {
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

pub fn free_port_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn free_port_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn have_socat() -> Result<(), String> {
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
