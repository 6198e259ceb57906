//! Case (l) of the relay bench: the latency a relay adds to UDP datagrams at a moderate rate.
//!
//! Owns: the method. A sender thread sends `count` datagrams of 1400 bytes paced at 10,000/s,
//! each carrying the CLOCK_MONOTONIC nanoseconds at which it was sent; a sink thread busy-polls
//! a non-blocking socket (so its own wake-up is not counted) and reads the clock as each
//! arrives. The same load runs once straight from the sender to the sink (the direct path) and
//! once through each relay; a relay's added latency at a percentile is its percentile less the
//! direct path's. Datagrams lost are left out of the percentiles and counted.
//!
//! The TCP rows do the same with a stream: a producer connection writes 1400-byte records at
//! 10,000/s (TCP_NODELAY), each starting with its stamp; the sink busy-polls its connection and
//! reads the clock when a record's last byte is in. The relay either dials the sink (`tcp://`,
//! as every relay can) or the sink connects as a subscriber (`tcp-listen://` output).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
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

/// The sink's end of a TCP row: accepted from the relay, or a subscriber connection.
enum TcpSink {
    Listen(TcpListener),
    Connect(SocketAddr),
}

/// Keeps trying `f` for up to 10 s (a relay still starting refuses connections).
fn retry<T>(mut f: impl FnMut() -> std::io::Result<T>) -> Result<T, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Sends `count` stamped records into `input` (paced, after `warm` unstamped ones) while a
/// busy-polling sink reads them from `sink`; returns the latencies in microseconds.
fn tcp_load(input: SocketAddr, sink: TcpSink, count: usize) -> Result<Vec<f64>, String> {
    let got_warm = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (got2, stop2) = (Arc::clone(&got_warm), Arc::clone(&stop));
    let subscriber = matches!(sink, TcpSink::Connect(_));
    let connected = Arc::new(AtomicBool::new(false));
    let conn2 = Arc::clone(&connected);
    let rx = thread::spawn(move || -> Result<Vec<f64>, String> {
        let mut s = match sink {
            TcpSink::Listen(l) => {
                // Polled, so that a relay that never dials does not hang the bench.
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                loop {
                    match l.accept() {
                        Ok((s, _)) => break s,
                        Err(_) if stop2.load(Ordering::Relaxed) => {
                            return Err("the relay never connected".into())
                        }
                        Err(_) => thread::sleep(Duration::from_millis(1)),
                    }
                }
            }
            TcpSink::Connect(a) => retry(|| TcpStream::connect(a))?,
        };
        conn2.store(true, Ordering::Relaxed);
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut rec = vec![0u8; SIZE];
        let mut have = 0;
        let mut lat = Vec::with_capacity(count);
        while !stop2.load(Ordering::Relaxed) {
            match s.read(&mut rec[have..]) {
                Ok(0) => break,
                Ok(n) => have += n,
                Err(_) => continue,
            }
            if have == SIZE {
                let t = now_ns();
                have = 0;
                let sent = u64::from_be_bytes(rec[..8].try_into().unwrap());
                if sent == 0 {
                    got2.store(true, Ordering::Relaxed);
                } else {
                    lat.push(t.saturating_sub(sent) as f64 / 1e3);
                }
            }
        }
        Ok(lat)
    });
    let finish = |stop: &AtomicBool, rx: thread::JoinHandle<Result<Vec<f64>, String>>| {
        stop.store(true, Ordering::Relaxed);
        rx.join().map_err(|_| "sink panicked".to_string())?
    };
    // A subscriber joins before the producer writes, so it sees the stream from its start.
    let deadline = Instant::now() + Duration::from_secs(10);
    if subscriber {
        while !connected.load(Ordering::Relaxed) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_millis(100));
    }
    let mut tx = match retry(|| TcpStream::connect(input)) {
        Ok(t) => t,
        Err(e) => {
            finish(&stop, rx)?;
            return Err(format!("connect to the input: {e}"));
        }
    };
    tx.set_nodelay(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pkt = vec![0x42u8; SIZE];
    // Warm up: unstamped records until one is through (the relay dialed or took the sink).
    pkt[..8].fill(0);
    while !got_warm.load(Ordering::Relaxed) {
        if Instant::now() > deadline || tx.write_all(&pkt).is_err() {
            finish(&stop, rx)?;
            return Err("nothing came through".into());
        }
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(100));
    let gap = Duration::from_secs_f64(1.0 / RATE);
    let t0 = Instant::now();
    for i in 0..count {
        // Paced by sleeping, as the UDP rows.
        let due = t0 + gap * i as u32;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        pkt[..8].copy_from_slice(&now_ns().to_be_bytes());
        if tx.write_all(&pkt).is_err() {
            break;
        }
    }
    thread::sleep(Duration::from_millis(200));
    finish(&stop, rx)
}

/// The TCP direct path: producer connection straight to the sink.
pub fn tcp_direct(count: usize) -> Result<Latency, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let to = l.local_addr().unwrap();
    let lat = tcp_load(to, TcpSink::Listen(l), count)?;
    if lat.is_empty() {
        return Err("nothing arrived".into());
    }
    Ok(percentiles(lat, count))
}

/// Through `relay`: one TCP channel, the relay dialing the sink, or (`subscriber`) the sink
/// connecting to the relay's `tcp-listen://` output.
pub fn tcp_through(
    b: &mut Bench,
    relay: &Relay,
    count: usize,
    subscriber: bool,
) -> Result<Latency, String> {
    let free = || -> Result<SocketAddr, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        Ok(l.local_addr().unwrap())
    };
    let input = free()?;
    let (wiring, sink) = if subscriber {
        let output = free()?;
        (Wiring::TcpSub { input, output }, TcpSink::Connect(output))
    } else {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let output = l.local_addr().unwrap();
        (Wiring::Tcp { input, output }, TcpSink::Listen(l))
    };
    let child = b.spawn(relay, &wiring).map_err(|e| format!("spawn: {e}"))?;
    let r = tcp_load(input, sink, count);
    let (_, err) = reap(child);
    let lat = r.map_err(|e| format!("{e}; relay said: {}", err.trim()))?;
    if lat.is_empty() {
        return Err("nothing arrived".into());
    }
    Ok(percentiles(lat, count))
}

/// Prints the table: each relay's percentiles and what it adds over the direct path.
pub fn print(
    what: &str,
    count: usize,
    direct: &Latency,
    rows: &[(String, Result<Latency, String>)],
) {
    println!(
        "\n(l) {what} latency, {SIZE} B at {}k/s, {count} per run, busy-polling sink (us; added = relay - direct)",
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
