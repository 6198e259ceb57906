//! Case (h) of the relay bench, many TCP channels at once, and the kernel-only floor relay.
//!
//! Owns: the floor (a relay that moves each connection's bytes with blocking `splice(2)`,
//! socket -> 1 MiB pipe -> socket, one thread per connection: the least CPU a relay can spend
//! per byte, so every TCP row is also reported against it) and the thread-per-connection copy
//! relay, both run as `BENCH --pairs-relay splice|copy BUF IN OUT [IN OUT]...`; and case (h):
//! `n` TCP channels 1-to-1, each with its own writer and counting sink, all started together.
//!
//! Case (h) reports the aggregate Gbit/s (all bytes, to the last sink's last byte), relay CPU
//! seconds per GB, and fairness: each channel's rate is its bytes over the time to its own
//! sink's last byte, and `slowest / mean` is the slowest channel's rate over the mean of all.
//! A starved channel shows as a low `slowest / mean` even when the aggregate looks fine.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use super::{reap, Bench, Relay, Wiring};

/// The channel counts of case (h).
pub const COUNTS: [usize; 2] = [8, 64];

/// One run of case (h).
#[derive(Clone, Copy, Debug, Default)]
pub struct ChannelsSample {
    /// Aggregate Gbit/s.
    pub rate: f64,
    /// Relay CPU seconds per GB of input.
    pub cpu: f64,
    /// The slowest channel's rate over the mean channel rate.
    pub fairness: f64,
}

/// `BENCH --pairs-relay MODE BUF IN OUT [IN OUT]...`: for each pair, a thread accepts one
/// producer on IN, dials OUT, and moves every byte (`splice`: through a pipe of BUF bytes,
/// never into user memory; `copy`: read and write with a buffer of BUF bytes), then closes.
pub fn pairs_main(args: &[String]) -> i32 {
    let run = || -> io::Result<()> {
        let splice = match args.first().map(String::as_str) {
            Some("splice") => true,
            Some("copy") => false,
            m => return Err(io::Error::other(format!("unknown mode {m:?}"))),
        };
        let buf: usize = args
            .get(1)
            .ok_or_else(|| io::Error::other("no BUF"))?
            .parse()
            .map_err(io::Error::other)?;
        let addrs: Vec<SocketAddr> = args[2..]
            .iter()
            .map(|s| s.parse().map_err(io::Error::other))
            .collect::<io::Result<_>>()?;
        if addrs.is_empty() || addrs.len() % 2 != 0 {
            return Err(io::Error::other("IN OUT pairs expected"));
        }
        // Bind every input before accepting any, so producers can connect in any order.
        let listeners: Vec<(TcpListener, SocketAddr)> = addrs
            .chunks(2)
            .map(|p| Ok((TcpListener::bind(p[0])?, p[1])))
            .collect::<io::Result<_>>()?;
        let threads: Vec<_> = listeners
            .into_iter()
            .map(|(l, out)| {
                thread::spawn(move || -> io::Result<()> {
                    let (src, _) = l.accept()?;
                    let dst = TcpStream::connect(out)?;
                    if splice {
                        splice_loop(&src, &dst, buf)?;
                    } else {
                        copy_loop(src, &dst, buf)?;
                    }
                    dst.shutdown(std::net::Shutdown::Write)
                })
            })
            .collect();
        for t in threads {
            t.join()
                .map_err(|_| io::Error::other("a pair panicked"))??;
        }
        Ok(())
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pairs relay: {e}");
            1
        }
    }
}

fn copy_loop(mut src: TcpStream, mut dst: &TcpStream, buf: usize) -> io::Result<()> {
    let mut b = vec![0u8; buf];
    loop {
        let n = src.read(&mut b)?;
        if n == 0 {
            return Ok(());
        }
        dst.write_all(&b[..n])?;
    }
}

/// socket -> pipe -> socket with blocking splice(2), until the source's end of stream.
fn splice_loop(src: &TcpStream, dst: &TcpStream, pipe_size: usize) -> io::Result<()> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let (r, w) = (fds[0], fds[1]);
    // SAFETY: `w` is the pipe just created; F_SETPIPE_SZ takes an int size (failure only
    // leaves the default size).
    unsafe { libc::fcntl(w, libc::F_SETPIPE_SZ, pipe_size as libc::c_int) };
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE;
    let result = (|| loop {
        // SAFETY: plain descriptors owned by this function or borrowed for its duration; null
        // offsets because neither end is seekable.
        let n = unsafe {
            libc::splice(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                w,
                std::ptr::null_mut(),
                pipe_size,
                flags,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(());
        }
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: as above.
            let m = unsafe {
                libc::splice(
                    r,
                    std::ptr::null_mut(),
                    dst.as_raw_fd(),
                    std::ptr::null_mut(),
                    left,
                    flags,
                )
            };
            if m <= 0 {
                return Err(io::Error::last_os_error());
            }
            left -= m as usize;
        }
    })();
    // SAFETY: closing the two pipe descriptors this function created, once.
    unsafe {
        libc::close(r);
        libc::close(w);
    }
    result
}

/// A read or write on a socket with a timeout: `Ok(None)` when the timeout passed.
fn timed_out_is_none(r: io::Result<usize>) -> io::Result<Option<usize>> {
    match r {
        Ok(n) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Case (h): `n` channels, `per` bytes each, through `relay`.
pub fn run(
    b: &mut Bench,
    relay: &Relay,
    n: usize,
    per: u64,
    limit: Duration,
) -> Result<ChannelsSample, String> {
    let sinks: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    // Inputs: held while choosing so that no two are the same.
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let inputs: Vec<SocketAddr> = held.iter().map(|l| l.local_addr().unwrap()).collect();
    drop(held);
    let pairs: Vec<(SocketAddr, SocketAddr)> = inputs
        .iter()
        .zip(&sinks)
        .map(|(i, s)| (*i, s.local_addr().unwrap()))
        .collect();
    let child = b
        .spawn(relay, &Wiring::TcpPairs { pairs })
        .map_err(|e| format!("spawn: {e}"))?;
    let deadline = Instant::now() + limit;
    // Every producer connects first; then all start writing at once.
    let mut producers = Vec::new();
    for input in &inputs {
        let connect_by = Instant::now() + Duration::from_secs(10);
        let s = loop {
            match TcpStream::connect(input) {
                Ok(s) => break s,
                Err(_) if Instant::now() < connect_by => thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    let (_, err) = reap(child);
                    return Err(format!("cannot connect: {e}; relay said: {}", err.trim()));
                }
            }
        };
        producers.push(s);
    }
    let start = Arc::new(Barrier::new(n + 1));
    let mut writers = Vec::new();
    for mut s in producers {
        let start = Arc::clone(&start);
        writers.push(thread::spawn(move || {
            let chunk = vec![0x3cu8; 256 << 10];
            let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
            start.wait();
            let mut sent = 0u64;
            while sent < per && Instant::now() < deadline {
                let k = ((per - sent) as usize).min(chunk.len());
                match timed_out_is_none(s.write(&chunk[..k])) {
                    Ok(w) => sent += w.unwrap_or(0) as u64,
                    Err(_) => break,
                }
            }
        }));
    }
    let mut readers = Vec::new();
    for sink in sinks {
        readers.push(thread::spawn(move || -> (u64, Instant) {
            sink.set_nonblocking(true).unwrap();
            let mut s = loop {
                match sink.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
                    Err(_) => return (0, Instant::now()),
                }
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut got = 0u64;
            while got < per && Instant::now() < deadline {
                match timed_out_is_none(s.read(&mut buf)) {
                    Ok(Some(0)) | Err(_) => break,
                    Ok(k) => got += k.unwrap_or(0) as u64,
                }
            }
            (got, Instant::now())
        }));
    }
    start.wait();
    let t0 = Instant::now();
    for w in writers {
        let _ = w.join();
    }
    let ends: Vec<(u64, Instant)> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let (cpu, err) = reap(child);
    if let Some((got, _)) = ends.iter().find(|(g, _)| *g != per) {
        return Err(format!(
            "a sink got {got} of {per} bytes; relay said: {}",
            err.trim()
        ));
    }
    let rates: Vec<f64> = ends
        .iter()
        .map(|(g, t)| *g as f64 * 8.0 / t.duration_since(t0).as_secs_f64() / 1e9)
        .collect();
    let last = ends.iter().map(|(_, t)| *t).max().unwrap();
    let total = per as f64 * n as f64;
    let mean = rates.iter().sum::<f64>() / n as f64;
    let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(ChannelsSample {
        rate: total * 8.0 / last.duration_since(t0).as_secs_f64() / 1e9,
        cpu: cpu / (total / 1e9),
        fairness: slowest / mean,
    })
}

/// Medians of case (h)'s runs of one relay, or why it could not run.
pub fn measure(
    runs: usize,
    f: impl FnMut() -> Result<ChannelsSample, String>,
) -> Result<ChannelsSample, String> {
    let ok = super::successes(runs, f)?;
    let med = |g: fn(&ChannelsSample) -> f64| super::median(ok.iter().map(g).collect());
    Ok(ChannelsSample {
        rate: med(|s| s.rate),
        cpu: med(|s| s.cpu),
        fairness: med(|s| s.fairness),
    })
}

/// Prints case (h)'s table for `n` channels, and each ringrelay row against each peer.
pub fn print(n: usize, per: u64, rows: &[(String, &'static str, Result<ChannelsSample, String>)]) {
    println!(
        "\n(h) TCP {n} channels 1-to-1, {} MiB each (aggregate Gbit/s; slowest channel / mean)",
        per >> 20
    );
    println!(
        "  {:<32} {:>14} {:>16} {:>16}",
        "relay", "Gbit/s", "CPU s/GB", "slowest/mean"
    );
    for (name, _, r) in rows {
        match r {
            Ok(s) => println!(
                "  {:<32} {:>14.3} {:>16.3} {:>16.2}",
                name, s.rate, s.cpu, s.fairness
            ),
            Err(e) => println!("  {name:<32} not measured: {e}"),
        }
    }
    for (on, ok, or) in rows {
        let (true, Ok(o)) = (*ok == "ringrelay", or) else {
            continue;
        };
        for (pn, pk, pr) in rows {
            let (false, Ok(p)) = (*pk == "ringrelay", pr) else {
                continue;
            };
            println!(
                "  {on} / {pn}: throughput x{:.2}, CPU x{:.2}",
                o.rate / p.rate,
                o.cpu / p.cpu
            );
        }
    }
}
