//! `ringrelay demo`: the relay on a built-in loopback configuration, fed by the built-in
//! generator, with live per-channel throughput.
//!
//! Owns: its arguments ([`DemoArgs`]), the demo's configuration and its helper processes. Two
//! channels:
//!
//! * `sine`: a 2-channel i16 sine at 48 kHz over UDP, relayed to a subscriber, a UDP
//!   destination and a file, and decimated (`minmax:48,480`) into shared memory, where
//!   `ringrelay tail sine --shm-dir DIR` can read it while the demo runs;
//! * `bulk`: a byte counter over TCP as fast as the machine goes, relayed to two subscribers.
//!
//! Producers are `ringrelay gen` child processes; consumers are child processes of this same
//! binary that read and discard (see [`sink_main`]). Everything listens on 127.0.0.1 ports
//! picked free at start, and the files go to a temporary directory that is removed at exit.

use crate::driver::event_loop::Daemon;
use argh::FromArgs;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Run the relay on a built-in loopback configuration fed by the built-in generator.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "demo")]
pub struct DemoArgs {
    /// stop after this long (e.g. 10s); default: until Ctrl-C
    #[argh(option)]
    pub duration: Option<String>,
    /// sqpoll mode for the demo ring: on, off or auto
    #[argh(option, default = "String::from(\"auto\")")]
    pub sqpoll: String,
}

/// Environment variable that turns this binary into a demo consumer.
pub const SINK_ENV: &str = "RINGRELAY_DEMO_SINK";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A demo consumer: `tcp:PORT` connects and reads until end of stream, `udp:PORT` receives
/// until the demo ends. Returns the exit code.
pub fn sink_main(spec: &str) -> i32 {
    let mut buf = vec![0u8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    match spec.split_once(':') {
        Some(("tcp", port)) => {
            let addr = format!("127.0.0.1:{port}");
            let mut s = loop {
                match std::net::TcpStream::connect(&addr) {
                    Ok(s) => break s,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(_) => return 1,
                }
            };
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            0
        }
        Some(("udp", port)) => {
            let Ok(s) = std::net::UdpSocket::bind(format!("127.0.0.1:{port}")) else {
                return 1;
            };
            while s.recv(&mut buf).is_ok() {}
            0
        }
        _ => 2,
    }
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn run(a: &DemoArgs) -> i32 {
    let duration = match a
        .duration
        .as_deref()
        .map(crate::config::units::parse_duration)
    {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            eprintln!("ringrelay demo: --duration: {e}");
            return 2;
        }
    };
    let dir = std::env::temp_dir().join(format!("ringrelay-demo-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("ringrelay demo: cannot create {}: {e}", dir.display());
        return 1;
    }
    let code = run_in(a, duration, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    code
}

fn run_in(a: &DemoArgs, duration: Option<Duration>, dir: &std::path::Path) -> i32 {
    let (p_sine, p_sub, p_udp, p_bulk, p_bsub) = (
        free_udp_port(),
        free_port(),
        free_udp_port(),
        free_port(),
        free_port(),
    );
    let shm = dir.join("shm");
    let text = format!(
        "[global]\n\
         sqpoll = {sq}\n\
         log_level = warn\n\
         shm_dir = {shm}\n\
         shutdown_timeout = 2s\n\
         [channel sine]\n\
         input = udp://127.0.0.1:{p_sine}\n\
         output = tcp-listen://127.0.0.1:{p_sub}\n\
         output = udp://127.0.0.1:{p_udp}\n\
         output = file://{file} rotate=16MiB keep=2\n\
         sample = i16le\n\
         interleave = 2\n\
         sample_rate = 48000\n\
         decimate = minmax:48,480\n\
         shm_frames = 4096\n\
         [channel bulk]\n\
         input = tcp-listen://127.0.0.1:{p_bulk}\n\
         output = tcp-listen://127.0.0.1:{p_bsub}\n",
        sq = a.sqpoll,
        shm = shm.display(),
        file = dir.join("sine.raw").display(),
    );
    let cfg = match crate::config::parse_str("<demo>", &text) {
        Ok(c) => c,
        Err(errs) => {
            for e in errs {
                eprintln!("{e}");
            }
            return 1;
        }
    };
    let _ = crate::ops::logging::init(
        &crate::ops::logging::LogTarget::Stderr,
        cfg.global.log_level,
    );
    let channels = match crate::driver::event_loop::bind_all(&cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringrelay demo: {e}");
            return 1;
        }
    };
    let mut d = match Daemon::start(cfg, channels, None) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("ringrelay demo: {e}");
            return 1;
        }
    };
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("ringrelay demo: cannot find my own executable");
        return 1;
    };
    let spawn = |args: &[&str], sink: Option<String>| {
        let mut c = Command::new(&exe);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(s) = sink {
            c.env(SINK_ENV, s);
        }
        c.spawn()
    };
    let mut kids = Children(Vec::new());
    let plan: Vec<(Vec<String>, Option<String>)> = vec![
        (vec![], Some(format!("tcp:{p_sub}"))),
        (vec![], Some(format!("udp:{p_udp}"))),
        (vec![], Some(format!("tcp:{p_bsub}"))),
        (vec![], Some(format!("tcp:{p_bsub}"))),
        (
            [
                "gen",
                &format!("udp://127.0.0.1:{p_sine}"),
                "--format",
                "i16le",
                "--interleave",
                "2",
                "--rate",
                "48000",
                "--signal",
                "sine:5",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            None,
        ),
        (
            [
                "gen",
                &format!("tcp://127.0.0.1:{p_bulk}"),
                "--format",
                "u8",
                "--rate",
                "max",
                "--signal",
                "counter",
                "--packet-bytes",
                "65536",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            None,
        ),
    ];
    for (args, sink) in plan {
        let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        match spawn(&argv, sink) {
            Ok(c) => kids.0.push(c),
            Err(e) => {
                eprintln!("ringrelay demo: cannot start a helper process: {e}");
                return 1;
            }
        }
    }
    println!("{}", d.caps().summary());
    println!(
        "demo: channel sine (udp 48 kHz x2 i16 -> subscriber, udp, file, shm minmax:48,480) and bulk (tcp, as fast as possible -> 2 subscribers)"
    );
    println!(
        "demo: while it runs, try: ringrelay tail sine --shm-dir {} --last 5",
        shm.display()
    );
    println!(
        "{:>6}  {:<8} {:>12} {:>12} {:>14} {:>10}",
        "time", "channel", "in Mbit/s", "in dgram/s", "out Mbit/s", "drops"
    );
    let mut rates: Vec<(crate::engine::stats::Rate, crate::engine::stats::Rate, u64)> = Vec::new();
    d.stop_at = duration.map(|t| Instant::now() + t);
    d.monitor = Some(Box::new(move |chans, t| {
        if rates.len() < chans.len() {
            rates.resize_with(chans.len(), Default::default);
        }
        for (i, ch) in chans.iter().enumerate() {
            let Some(ch) = ch else { continue };
            let out_bytes: u64 = ch.outputs.iter().map(|o| o.stats.bytes).sum();
            let drops: u64 = ch.stats.drops + ch.outputs.iter().map(|o| o.stats.drops).sum::<u64>();
            let r = &mut rates[i];
            let inr = r.0.bits_per_sec(ch.stats.bytes, t) / 1e6;
            let outr = r.1.bits_per_sec(out_bytes, t) / 1e6;
            let dg = ch.stats.datagrams.saturating_sub(r.2);
            r.2 = ch.stats.datagrams;
            println!(
                "{:>5.0}s  {:<8} {:>12.1} {:>12} {:>14.1} {:>10}",
                t,
                ch.name(),
                inr,
                dg,
                outr,
                drops
            );
        }
    }));
    let code = d.run();
    drop(d);
    drop(kids);
    println!("demo: stopped");
    code
}
