//! Case (l) of the relay bench: the latency a relay adds to UDP datagrams at a moderate rate.
//!
//! Owns: the method. A sender thread sends `count` datagrams of 1400 bytes paced at 10,000/s,
//! each carrying the CLOCK_MONOTONIC nanoseconds at which it was sent; a sink thread busy-polls
//! a non-blocking socket (so its own wake-up is not counted) and reads the clock as each
//! arrives. The same load runs once straight from the sender to the sink (the direct path) and
//! once through each relay; a relay's added latency at a percentile is its percentile less the
//! direct path's. Datagrams lost are left out of the percentiles and counted.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{reap, Bench, Relay, Wiring};

/// Bytes per datagram and datagrams per second.
const SIZE: usize = 1400;
pub const RATE: f64 = 10_000.0;

/// Percentiles of one run, in microseconds, and the share of datagrams lost.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub lost: f64,
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sends `count` stamped datagrams to `to` (paced) while a busy-polling sink on `sink`
/// collects them; returns the latencies in microseconds and how many arrived.
fn load(to: SocketAddr, sink: UdpSocket, count: usize) -> (Vec<f64>, usize) {
    sink.set_nonblocking(true).unwrap();
    // Room for a second of datagrams: a sink descheduled for a moment delays, never drops.
    ringrelay::driver::net::set_rcvbuf(&socket2::SockRef::from(&sink), 16 << 20);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let rx = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut lat = Vec::with_capacity(count);
        while !stop2.load(Ordering::Relaxed) {
            if let Ok(n) = sink.recv(&mut buf) {
                let t = now_ns();
                if n >= 8 {
                    let sent = u64::from_be_bytes(buf[..8].try_into().unwrap());
                    lat.push(t.saturating_sub(sent) as f64 / 1e3);
                }
            }
        }
        lat
    });
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut pkt = vec![0x42u8; SIZE];
    let gap = Duration::from_secs_f64(1.0 / RATE);
    let t0 = Instant::now();
    for i in 0..count {
        // Paced by sleeping, not spinning: with a busy-polling sink, a spinning sender would
        // leave a 2-CPU machine nothing for the relay. The stamp is taken at the send, so the
        // sleep's jitter moves the send time, not the latency measured.
        let due = t0 + gap * i as u32;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        pkt[..8].copy_from_slice(&now_ns().to_be_bytes());
        let _ = tx.send_to(&pkt, to);
    }
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let lat = rx.join().unwrap();
    let got = lat.len();
    (lat, got)
}

fn percentiles(mut v: Vec<f64>, count: usize) -> Latency {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        lost: 1.0 - v.len() as f64 / count as f64,
    }
}

/// The direct path: sender to sink, no relay.
pub fn direct(count: usize) -> Result<Latency, String> {
    let sink = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let to = sink.local_addr().unwrap();
    let (lat, got) = load(to, sink, count);
    if got == 0 {
        return Err("nothing arrived".into());
    }
    Ok(percentiles(lat, count))
}

/// Through `relay`: one UDP channel, 1-to-1.
pub fn through(b: &mut Bench, relay: &Relay, count: usize) -> Result<Latency, String> {
    let sink = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let out = sink.local_addr().unwrap();
    let input = {
        let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        s.local_addr().unwrap()
    };
    let child = b
        .spawn(
            relay,
            &Wiring::Udp {
                channels: vec![(input, vec![out])],
            },
        )
        .map_err(|e| format!("spawn: {e}"))?;
    // Warm up: until one datagram comes through (the relay is bound and its output works).
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    loop {
        let _ = probe.send_to(&[0u8; 8], input);
        if sink.recv(&mut buf).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            let (_, err) = reap(child);
            return Err(format!("nothing came through; relay said: {}", err.trim()));
        }
    }
    // Drain late warm-ups, then measure.
    thread::sleep(Duration::from_millis(100));
    while sink.recv(&mut buf).is_ok() {}
    let (lat, got) = load(input, sink, count);
    let _ = reap(child);
    if got == 0 {
        return Err("nothing arrived".into());
    }
    Ok(percentiles(lat, count))
}

/// Prints the table: each relay's percentiles and what it adds over the direct path.
pub fn print(count: usize, direct: &Latency, rows: &[(String, Result<Latency, String>)]) {
    println!(
        "\n(l) UDP latency, {SIZE} B at {}k/s, {count} datagrams, busy-polling sink (us; added = relay - direct)",
        RATE / 1000.0
    );
    println!(
        "  {:<32} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10} {:>7}",
        "path", "p50", "p99", "p99.9", "+p50", "+p99", "+p99.9", "lost %"
    );
    println!(
        "  {:<32} {:>8.1} {:>8.1} {:>8.1} {:>10} {:>10} {:>10} {:>7.2}",
        "direct",
        direct.p50,
        direct.p99,
        direct.p999,
        "",
        "",
        "",
        direct.lost * 100.0
    );
    for (name, r) in rows {
        match r {
            Ok(l) => println!(
                "  {:<32} {:>8.1} {:>8.1} {:>8.1} {:>10.1} {:>10.1} {:>10.1} {:>7.2}",
                name,
                l.p50,
                l.p99,
                l.p999,
                l.p50 - direct.p50,
                l.p99 - direct.p99,
                l.p999 - direct.p999,
                l.lost * 100.0
            ),
            Err(e) => println!("  {name:<32} not measured: {e}"),
        }
    }
}
