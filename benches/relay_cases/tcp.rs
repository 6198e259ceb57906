//! The TCP bulk runs of cases (a), (e) and (f): a source pushes bytes through the relay to one
//! or more counting sinks; Gbit/s per output and relay CPU seconds per GB of input.

use super::*;

/// Case (a): pushes `total` bytes through the relay; `Err` names what went wrong.
pub fn tcp_run(
    b: &mut Bench,
    relay: &Relay,
    total: u64,
    limit: Duration,
) -> Result<Sample, String> {
    tcp_fan_run(b, relay, total, 1, limit)
}

/// Cases (a) and (f): pushes `total` bytes through the relay to `fan` sinks (each gets all of
/// them). Gbit/s is per output, from the source's connect to the last sink's last byte; CPU
/// s/GB is per GB of input.
pub fn tcp_fan_run(
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

pub fn child_exited(c: &Child) -> io::Result<Option<()>> {
    // `try_wait` needs `&mut`; peek at /proc instead so the child is reaped only by `reap`.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", c.id()))?;
    Ok(stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next())
        .filter(|s| *s == "Z" || *s == "X")
        .map(|_| ()))
}
