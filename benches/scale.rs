//! Memory and scale: the relay's resident memory and start-up time with 1, 16, 256 and 1,024
//! channels, at the default buffer pool and at a small Pi's, each next to what the README's
//! formula predicts; and one relay per CPU against one relay for the same channels.
//!
//! Owns: these two measurements and their method. Like the relay bench it never looks inside
//! the daemon: every relay is the release binary run as a child process with a generated
//! config, its memory is read from `/proc/PID/status`, and its CPU time from
//! `getrusage(RUSAGE_CHILDREN)` when it is reaped.
//!
//! * **Memory.** Each channel is a sensor channel: a UDP input, a `tcp-listen://` output for
//!   subscribers and a `udp://` destination (a socket of the bench that nobody reads). The
//!   relay starts; start-up time is from the spawn to its `ready: N channels` line. Then
//!   every channel carries 32 datagrams of 1 KiB, so the buffers and queues it uses are
//!   touched, and RSS is read half a second later. `SCALE_BENCH_DECIMATE=1` adds
//!   `decimate = minmax:10,100,1000` (i16le x4) to every channel, whose regions then count.
//! * **One relay per CPU.** Two TCP channels, 1-to-1, each pushed as fast as a writer thread
//!   can: once through one relay holding both channels (unpinned), once through two relays
//!   holding one channel each, pinned to CPU 0 and CPU 1 with `taskset`. Aggregate Gbit/s
//!   and relay CPU seconds per GB, and the ratio two / one.
//!
//! Run: `cargo bench --bench scale` (`SCALE_BENCH_QUICK=1`: 1,024 channels skipped from the
//! start-up medians, smaller TCP volume).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const RELAY: &str = env!("CARGO_BIN_EXE_ringrelay");
const CHANNEL_COUNTS: [usize; 4] = [1, 16, 256, 1024];

/// A buffer pool: `buffer_count` x `buffer_size` + `datagram_count` x `datagram_size`.
#[derive(Clone, Copy)]
struct Pool {
    name: &'static str,
    buffers: u64,
    buffer_size: u64,
    datagrams: u64,
    datagram_size: u64,
}

const DEFAULT_POOL: Pool = Pool {
    name: "default",
    buffers: 256,
    buffer_size: 64 << 10,
    datagrams: 2048,
    datagram_size: 2 << 10,
};
const PI_POOL: Pool = Pool {
    name: "small Pi",
    buffers: 64,
    buffer_size: 64 << 10,
    datagrams: 512,
    datagram_size: 2 << 10,
};

impl Pool {
    fn bytes(&self) -> u64 {
        self.buffers * self.buffer_size + self.datagrams * self.datagram_size
    }

    fn global(&self) -> String {
        format!(
            "buffer_count = {}\nbuffer_size = {}\ndatagram_count = {}\ndatagram_size = {}\n",
            self.buffers, self.buffer_size, self.datagrams, self.datagram_size
        )
    }
}

/// The README's formula (section "Memory and scale"), in bytes: a fixed part (the binary's
/// pages, the ring, the allocator), the pool (allocated, registered and so resident at start),
/// a part per channel, and the regions of decimating channels. The per-channel part was fitted
/// to this bench's sensor channels: 12 KiB of tables and queues, plus 2 bytes per datagram slot
/// of the pool for the provided-buffer ring its UDP input maps (sized from the free slots).
/// A decimating channel adds 3 KiB of decimator state, and its regions' pages as they fill.
fn predicted(pool: &Pool, channels: usize, decimate: bool, regions: u64) -> u64 {
    const FIXED: u64 = 3_900 << 10;
    let per_channel = (12 << 10) + 2 * pool.datagrams + if decimate { 3 << 10 } else { 0 };
    FIXED + pool.bytes() + channels as u64 * per_channel + regions
}

struct Workdir(PathBuf);

impl Workdir {
    /// Under /dev/shm where it exists, as a relay's `shm_dir` would be (the regions are then
    /// tmpfs pages, as in the field), else the temporary directory.
    fn new() -> Workdir {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let p = base.join(format!("ringrelay-scale-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(p.join("shm")).expect("work dir");
        set_mode(&p.join("shm"), 0o700);
        Workdir(p)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `n` ports free for both UDP and TCP on 127.0.0.1, below the ephemeral range: the relay's
/// own sockets (UDP destinations, dialed collectors) take ephemeral ports as it starts, and
/// one of them could otherwise land on a port picked here for a later channel.
fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 10_000 + (std::process::id() % 50) as u16 * 400;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + (base - 10_000 + k) % 22_000;
        let a = SocketAddr::from(([127, 0, 0, 1], port));
        if UdpSocket::bind(a).is_ok() && TcpListener::bind(a).is_ok() {
            out.push(port);
        }
    }
    out
}

fn free_udp(n: usize) -> Vec<SocketAddr> {
    free_ports(n)
        .into_iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect()
}

fn free_tcp(n: usize) -> Vec<SocketAddr> {
    free_udp(n)
}

/// A running relay: the child, and the file its stderr goes to.
struct Relay {
    child: Option<Child>,
    log: PathBuf,
}

impl Relay {
    /// Starts a relay and waits for its `ready` line. Ports are picked free by binding port 0
    /// and releasing it, so another process may take one first: the caller retries on `Err`.
    fn start(
        dir: &Path,
        name: &str,
        config: &str,
        cpu: Option<usize>,
    ) -> Result<(Relay, Duration), String> {
        let conf = dir.join(format!("{name}.conf"));
        let log = dir.join(format!("{name}.log"));
        fs::write(&conf, config).expect("config");
        let err = fs::File::create(&log).expect("log");
        let mut cmd = match cpu {
            Some(c) => {
                let mut t = Command::new("taskset");
                t.args(["-c", &c.to_string(), RELAY]);
                t
            }
            None => Command::new(RELAY),
        };
        cmd.args(["run", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        let t0 = Instant::now();
        let child = cmd.spawn().expect("spawn ringrelay");
        let mut relay = Relay {
            child: Some(child),
            log,
        };
        loop {
            let text = fs::read_to_string(&relay.log).unwrap_or_default();
            if text.contains("ready: ") {
                break;
            }
            let exited = relay.child.as_mut().expect("running").try_wait();
            if !matches!(exited, Ok(None)) || t0.elapsed() > Duration::from_secs(60) {
                return Err(format!("{name}: not ready:\n{text}"));
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok((relay, t0.elapsed()))
    }

    /// [`Relay::start`] with new ports on each of up to five tries.
    fn start_retrying(
        dir: &Path,
        name: &str,
        mut config: impl FnMut() -> String,
        cpu: Option<usize>,
    ) -> (Relay, Duration) {
        let mut last = String::new();
        for _ in 0..5 {
            match Relay::start(dir, name, &config(), cpu) {
                Ok(r) => return r,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Stops the relay; returns the CPU seconds it used.
    fn stop(mut self) -> f64 {
        let mut child = self.child.take().expect("running");
        let before = cpu_children();
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let _ = child.wait();
        cpu_children() - before
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn cpu_children() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    tv(u.user_time()) + tv(u.system_time())
}

/// `VmRSS`, `RssAnon`, `RssFile` and `RssShmem` of a process, in bytes.
fn rss(pid: u32) -> [u64; 4] {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib << 10)
    };
    [
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("RssShmem:"),
    ]
}

/// The bytes of region files a relay made under `shm`.
fn region_bytes(shm: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = fs::read_dir(p) else { return 0 };
        rd.flatten()
            .map(|e| {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    walk(&e.path())
                } else {
                    m.len()
                }
            })
            .sum()
    }
    walk(shm)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn memory_case(dir: &Workdir, pool: &Pool, channels: usize, decimate: bool, runs: usize) {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("sink");
    let sink_addr = sink.local_addr().unwrap();
    let mut starts = Vec::new();
    let mut last = None;
    for run in 0..runs {
        let shm = dir.0.join("shm").join(format!("r{channels}-{run}"));
        fs::create_dir_all(&shm).unwrap();
        set_mode(&shm, 0o700);
        let mut inputs = Vec::new();
        let config = || {
            inputs = free_udp(channels);
            let listens = free_tcp(channels);
            let mut config = format!(
                "[global]\nshm_dir = {}\nlog_level = info\nstats_interval = 3600s\n{}\n",
                shm.display(),
                pool.global()
            );
            for (i, (inp, lis)) in inputs.iter().zip(&listens).enumerate() {
                config += &format!(
                    "[channel c{i}]\ninput = udp://{inp}\noutput = tcp-listen://{lis}\noutput = udp://{sink_addr}\n"
                );
                if decimate {
                    config += "sample = i16le\ninterleave = 4\ndecimate = minmax:10,100,1000\n";
                }
            }
            config
        };
        let (relay, took) = Relay::start_retrying(&dir.0, "mem", config, None);
        starts.push(took.as_secs_f64());
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let payload = [0x5au8; 1024];
        for _ in 0..32 {
            for a in &inputs {
                let _ = tx.send_to(&payload, a);
            }
            thread::sleep(Duration::from_micros(200));
        }
        thread::sleep(Duration::from_millis(500));
        let r = rss(relay.pid());
        let regions = region_bytes(&shm);
        relay.stop();
        let _ = fs::remove_dir_all(&shm);
        last = Some((r, regions));
    }
    let (r, regions) = last.expect("a run");
    // The regions' pages become resident as frames are written into them, up to their size
    // once they wrapped: the formula is checked on the rest (RSS less shmem), and the regions'
    // size is printed beside it.
    let p = predicted(pool, channels, decimate, 0);
    println!(
        "{:<9} {:>8} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.1} {:>+7.1}% {:>9.0} ms",
        pool.name,
        channels,
        mib(r[0]),
        mib(r[1]),
        mib(r[2]),
        mib(r[3]),
        mib(regions),
        mib(pool.bytes()),
        mib(p),
        (p as f64 / (r[0] - r[3]) as f64 - 1.0) * 100.0,
        median(starts) * 1e3
    );
}

/// A writer pushing `bytes` into `input`, and a sink listening on `output` counting them:
/// returns when the sink has all of them.
fn tcp_stream(input: SocketAddr, sink: TcpListener, bytes: u64) -> thread::JoinHandle<()> {
    let writer = thread::spawn(move || {
        let mut s = loop {
            match TcpStream::connect(input) {
                Ok(s) => break s,
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        };
        let block = vec![0xa5u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            s.write_all(&block[..n]).expect("write");
            left -= n as u64;
        }
    });
    thread::spawn(move || {
        let (mut c, _) = sink.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while got < bytes {
            match c.read(&mut buf) {
                Ok(0) => panic!("sink: end of stream after {got} of {bytes} bytes"),
                Ok(n) => got += n as u64,
                Err(e) => panic!("sink: {e}"),
            }
        }
        writer.join().expect("writer");
    })
}

fn channel_config(name: &str, input: SocketAddr, output: SocketAddr) -> String {
    format!("[channel {name}]\ninput = tcp-listen://{input}\noutput = tcp://{output}\n")
}

fn per_cpu_case(dir: &Workdir, bytes: u64) -> (f64, f64) {
    let global = |shm: &str| {
        let d = dir.0.join("shm").join(shm);
        fs::create_dir_all(&d).unwrap();
        set_mode(&d, 0o700);
        format!("[global]\nshm_dir = {}\nlog_level = info\n\n", d.display())
    };
    let inputs = free_tcp(2);
    let sinks: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let outs: Vec<SocketAddr> = sinks.iter().map(|s| s.local_addr().unwrap()).collect();
    let mut one = global("one");
    for i in 0..2 {
        one += &channel_config(&format!("t{i}"), inputs[i], outs[i]);
    }
    let measure = |relays: Vec<Relay>, sinks: Vec<TcpListener>| {
        let t0 = Instant::now();
        let flows: Vec<_> = sinks
            .into_iter()
            .enumerate()
            .map(|(i, s)| tcp_stream(inputs[i], s, bytes))
            .collect();
        for f in flows {
            f.join().expect("flow");
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu: f64 = relays.into_iter().map(Relay::stop).sum();
        let total = 2.0 * bytes as f64;
        (total * 8.0 / secs / 1e9, cpu / (total / 1e9))
    };
    let (r, _) = Relay::start_retrying(&dir.0, "one", || one.clone(), None);
    let single = measure(vec![r], sinks);
    let sinks: Vec<TcpListener> = outs
        .iter()
        .map(|a| TcpListener::bind(a).expect("rebind sink"))
        .collect();
    let mut relays = Vec::new();
    for i in 0..2 {
        let cfg =
            global(&format!("cpu{i}")) + &channel_config(&format!("t{i}"), inputs[i], outs[i]);
        relays.push(Relay::start_retrying(&dir.0, &format!("cpu{i}"), || cfg.clone(), Some(i)).0);
    }
    let pair = measure(relays, sinks);
    println!(
        "{:<34} {:>10.2} {:>14.3}",
        "one relay, both channels", single.0, single.1
    );
    println!(
        "{:<34} {:>10.2} {:>14.3}",
        "two relays, one per CPU (taskset)", pair.0, pair.1
    );
    (pair.0 / single.0, pair.1 / single.1)
}

fn main() {
    let quick = std::env::var_os("SCALE_BENCH_QUICK").is_some();
    let decimate = std::env::var_os("SCALE_BENCH_DECIMATE").is_some();
    let dir = Workdir::new();
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "scale bench: {} CPUs; sensor channels (UDP in, tcp-listen + udp out){}",
        cpus,
        if decimate {
            ", minmax:10,100,1000 i16le x4"
        } else {
            ""
        }
    );
    println!(
        "{:<9} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>8} {:>12}",
        "pool",
        "channels",
        "RSS MiB",
        "anon",
        "file",
        "shmem",
        "regions",
        "pool",
        "formula",
        "error",
        "start-up"
    );
    for pool in [DEFAULT_POOL, PI_POOL] {
        for n in CHANNEL_COUNTS {
            let runs = if quick || n >= 1024 { 1 } else { 3 };
            memory_case(&dir, &pool, n, decimate, runs);
        }
    }
    if cpus < 2 {
        println!("one relay per CPU: skipped, {cpus} CPU");
        return;
    }
    let bytes = if quick { 256 << 20 } else { 2 << 30 };
    println!();
    println!(
        "one relay per CPU: 2 TCP channels 1-to-1, {} MiB each, writers and sinks unpinned",
        bytes >> 20
    );
    println!("{:<34} {:>10} {:>14}", "", "Gbit/s", "CPU s/GB");
    let (rate, cpu) = per_cpu_case(&dir, bytes);
    println!("two / one: throughput x{rate:.2}, CPU per GB x{cpu:.2}");
}
