//! The UDP runs of cases (b), (b2), (b3), (d) and (d2): [`UdpLoad`] (channels, receivers,
//! count and pace), the batched receivers, [`udp_run`] itself and the rates of the (b3) sweep.

use super::*;

/// `A,B,C` or `FROM:TO:STEP` (both ends included) as input rates.
pub fn sweep_rates(v: &str) -> Vec<f64> {
    let parts: Vec<f64> = v.split(':').filter_map(|r| r.trim().parse().ok()).collect();
    if let [from, to, step] = parts[..] {
        if step > 0.0 {
            let n = ((to - from) / step).floor() as usize;
            return (0..=n).map(|i| from + i as f64 * step).collect();
        }
    }
    v.split(',').filter_map(|r| r.trim().parse().ok()).collect()
}

/// A UDP load: `channels` relay channels, each sending every datagram to `outs` receivers;
/// `count` datagrams of `DATAGRAM` bytes in all, round-robin over the channels' inputs, paced
/// at `pace` datagrams/s or, with `None`, as fast as `send` returns.
#[derive(Clone, Copy, Debug)]
pub struct UdpLoad {
    pub channels: usize,
    pub outs: usize,
    pub count: u64,
    pub pace: Option<f64>,
    /// Bytes per datagram (at least 8: the sequence number).
    pub size: usize,
}

/// Bytes per datagram of the UDP fan-out cases (b, b2, b3): `RELAY_BENCH_DATAGRAM`, else
/// `DATAGRAM`. The decimation cases always send `DATAGRAM` (whole frames).
pub fn fan_out_datagram() -> usize {
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
pub fn udp_run(
    b: &mut Bench,
    relay: &Relay,
    load: UdpLoad,
    limit: Duration,
) -> Result<Sample, String> {
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
