//! The soak test's peers, each a thread: TCP producers that connect, send a while and leave;
//! UDP senders; subscribers that join and leave, some slow; collectors that the relay dials,
//! which hang up now and then and sometimes stop listening for a while; UDP sinks.
//!
//! Every peer checks what it receives as it arrives (`streams`) and reports the first error to
//! the shared [`Soak`], which ends the run. Every blocking call has a timeout and every loop
//! looks at the stop flags, so all threads end within a few seconds of being told.

use super::streams::{datagram, ConnLengths, FrameCheck, Gaps, Run, SeqSet, StreamCheck};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a peer may wait on the relay for anything (a connect, a write, a redial, the end
/// of a connection after its close) before it calls the relay stuck. The longest legitimate
/// wait is a `block` channel paced by a slow subscriber while a collector is away: a collector
/// stays away at most 4 s and the relay's redial backoff is then at most 6.4 s.
pub const STUCK: Duration = Duration::from_secs(30);

/// State shared by the test's threads.
#[derive(Default)]
pub struct Soak {
    /// Producers and senders stop (at a connection's end).
    pub sources_stop: AtomicBool,
    /// Subscribers stop.
    pub subscribers_stop: AtomicBool,
    /// Everything stops, collectors too.
    pub stop: AtomicBool,
    failures: Mutex<Vec<String>>,
    /// Connections the test's peers hold to the relay right now.
    pub open: AtomicUsize,
}

impl Soak {
    pub fn fail(&self, msg: String) {
        eprintln!("soak: FAIL: {msg}");
        self.failures.lock().unwrap().push(msg);
        self.stop.store(true, SeqCst);
        self.sources_stop.store(true, SeqCst);
        self.subscribers_stop.store(true, SeqCst);
    }
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
    pub fn failed(&self) -> bool {
        !self.failures.lock().unwrap().is_empty()
    }
}

/// Sleeps `d` in short steps; false if `flag` was raised meanwhile.
fn nap(flag: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if flag.load(SeqCst) {
            return false;
        }
        thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    !flag.load(SeqCst)
}

/// One connection counted in [`Soak::open`] for as long as it lives.
struct Open(Arc<Soak>);
impl Open {
    fn new(s: &Arc<Soak>) -> Open {
        s.open.fetch_add(1, SeqCst);
        Open(s.clone())
    }
}
impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, SeqCst);
    }
}

/// xorshift64*: each peer's choices come from its own seed.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(super::streams::mix(seed) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.next() % one_in == 0
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(STUCK))?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(s)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// Reads until the peer closes, passing every byte to `take`; false if `limit` passed first.
fn read_to_end(s: &mut TcpStream, limit: Duration, mut take: impl FnMut(&[u8])) -> bool {
    let end = Instant::now() + limit;
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => take(&buf[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(_) => return true,
        }
    }
    false
}

// ------------------------------------------------------------------------------------------------
// Sources

/// A TCP producer of stream `stream`: connects to `addr`, writes records (connection `c` is
/// the `c`th connection) at about `rate` bytes/s for a random length up to `max_len`, records
/// the length in `lengths`, half-closes, waits until the relay closes its end (so it has read every byte
/// and freed the input for the next producer), pauses, and connects again.
/// One TCP producer: its name, the channel input it connects to, its stream id, about how
/// many bytes per second and at most how many bytes per connection it sends, and its seed.
pub struct ProducerSpec {
    pub name: String,
    pub addr: SocketAddr,
    pub stream: u32,
    pub rate: u64,
    pub max_len: u64,
    pub lengths: Arc<ConnLengths>,
    pub seed: u64,
}

pub fn producer(soak: Arc<Soak>, spec: ProducerSpec) -> JoinHandle<()> {
    let ProducerSpec {
        name,
        addr,
        stream,
        rate,
        max_len,
        lengths,
        seed,
    } = spec;
    thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let mut buf = vec![0u8; 32 * 1024];
        for conn in 0u32.. {
            if soak.sources_stop.load(SeqCst) {
                return;
            }
            let t0 = Instant::now();
            let mut s = loop {
                match connect(addr) {
                    Ok(s) => break s,
                    Err(e) if t0.elapsed() > STUCK => {
                        return soak.fail(format!("{name}: connect {addr}: {e}"))
                    }
                    Err(_) if !nap(&soak.sources_stop, Duration::from_millis(100)) => return,
                    Err(_) => {}
                }
            };
            let _open = Open::new(&soak);
            let len = rng.range(1, max_len);
            let start = Instant::now();
            let mut off = 0u64;
            while off < len && !soak.sources_stop.load(SeqCst) {
                let n = (rng.range(1, buf.len() as u64)).min(len - off) as usize;
                super::streams::fill(stream, conn, off, &mut buf[..n]);
                if let Err(e) = s.write_all(&buf[..n]) {
                    return soak.fail(format!(
                        "{name}: connection {conn}: write at offset {off}: {e}"
                    ));
                }
                off += n as u64;
                // Paced: never ahead of `rate` since the connection started.
                let due = Duration::from_secs_f64(off as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    thread::sleep(wait.min(Duration::from_millis(200)));
                }
            }
            lengths.set(conn, off);
            let _ = s.shutdown(Shutdown::Write);
            if !read_to_end(&mut s, STUCK * 2, |_| {}) {
                return soak.fail(format!(
                    "{name}: connection {conn}: the relay did not close its end within {:?} of the producer's FIN ({off} bytes written)",
                    STUCK * 2
                ));
            }
            drop(s);
            if !nap(&soak.sources_stop, rng.millis(0, 300)) {
                return;
            }
        }
    })
}

/// Sends datagrams `0, 1, 2, ...` of `stream` to `addr` at about `rate` per second; returns how
/// many were sent so far.
pub fn udp_sender(
    soak: Arc<Soak>,
    addr: SocketAddr,
    stream: u32,
    rate: u64,
) -> (JoinHandle<()>, Arc<AtomicU64>) {
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let t = thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp sender");
        let start = Instant::now();
        let mut seq = 0u64;
        while !soak.sources_stop.load(SeqCst) {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while seq < due {
                // Nobody listening (a channel removed by a reload) is not an error here.
                let _ = sock.send_to(&datagram(stream, seq), addr);
                seq += 1;
                counter.store(seq, SeqCst);
            }
            thread::sleep(Duration::from_millis(5));
        }
    });
    (t, sent)
}

// ------------------------------------------------------------------------------------------------
// Receivers

/// How a receiver checks what it gets.
#[derive(Clone)]
pub enum Check {
    /// Records of a TCP stream.
    Stream(u32, Gaps),
    /// A `framing = u32be` stream of datagrams.
    Framed(u32),
}

enum Checker {
    Stream(StreamCheck),
    Framed(FrameCheck),
}

impl Checker {
    fn new(c: &Check) -> Checker {
        match c {
            Check::Stream(s, g) => Checker::Stream(StreamCheck::new(*s, g.clone())),
            Check::Framed(s) => Checker::Framed(FrameCheck::new(*s)),
        }
    }
    fn feed(&mut self, d: &[u8]) -> Result<(), String> {
        match self {
            Checker::Stream(c) => c.feed(d),
            Checker::Framed(c) => c.feed(d),
        }
    }
    fn bytes(&self) -> u64 {
        match self {
            Checker::Stream(c) => c.bytes,
            Checker::Framed(c) => c.bytes,
        }
    }
}

/// What a receiver saw, for the checks at the end.
#[derive(Default)]
pub struct Seen {
    pub bytes: AtomicU64,
    /// Connections made (subscribers) or accepted (collectors).
    pub connections: AtomicU64,
    /// Connections the relay ended (a subscriber disconnected as slow, a channel removed).
    pub closed_by_relay: AtomicU64,
    /// Datagram runs, one per connection (framed subscribers).
    pub runs: Mutex<Vec<Run>>,
    /// Datagrams seen so far (framed collectors).
    pub datagrams: AtomicU64,
    /// Every datagram seen (framed collectors, UDP sinks), filled in when the thread ends.
    pub seqs: Mutex<SeqSet>,
    /// Where a record stream stands: (connection, offset) of the next byte expected.
    pub position: Mutex<Option<(u32, u64)>>,
    /// Bytes a dropping stream could not place.
    pub unplaced: AtomicU64,
}

/// How a subscriber behaves.
#[derive(Clone, Copy)]
pub struct SubscriberKind {
    /// Reads 4 KiB every few milliseconds (about 0.5–1 MB/s).
    pub slow: bool,
    /// The relay may close it (`on_slow = disconnect`, a channel a reload restarts or removes).
    pub may_be_closed: bool,
    /// The output may be absent (a channel a reload removes): refused connects are retried.
    pub may_be_absent: bool,
}

/// A subscriber that connects to `addr`, reads for 1–15 s, checks every byte, leaves, pauses
/// and comes back.
pub fn subscriber(
    soak: Arc<Soak>,
    name: String,
    addr: SocketAddr,
    check: Check,
    kind: SubscriberKind,
    seed: u64,
) -> (JoinHandle<()>, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let out = seen.clone();
    let t = thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let mut buf = vec![0u8; if kind.slow { 4096 } else { 64 * 1024 }];
        let quit = &soak.subscribers_stop;
        while !quit.load(SeqCst) {
            let t0 = Instant::now();
            let mut s = loop {
                match connect(addr) {
                    Ok(s) => break s,
                    Err(e) if t0.elapsed() > STUCK && !kind.may_be_absent => {
                        return soak.fail(format!("{name}: connect {addr}: {e}"))
                    }
                    Err(_) if !nap(quit, Duration::from_millis(200)) => return,
                    Err(_) => {}
                }
            };
            let _open = Open::new(&soak);
            seen.connections.fetch_add(1, SeqCst);
            let mut checker = Checker::new(&check);
            let life = Instant::now() + rng.millis(1000, 15000);
            let mut ended = None;
            while Instant::now() < life && !quit.load(SeqCst) {
                match s.read(&mut buf) {
                    Ok(0) => ended = Some("EOF".to_string()),
                    Ok(n) => {
                        if let Err(e) = checker.feed(&buf[..n]) {
                            return soak.fail(format!(
                                "{name}: connection {}: {e}",
                                seen.connections.load(SeqCst)
                            ));
                        }
                        if kind.slow {
                            thread::sleep(rng.millis(2, 8));
                        }
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(e) => ended = Some(e.to_string()),
                }
                if ended.is_some() {
                    break;
                }
            }
            seen.bytes.fetch_add(checker.bytes(), SeqCst);
            match &checker {
                Checker::Framed(f) => seen.runs.lock().unwrap().extend(f.run),
                Checker::Stream(c) => {
                    seen.unplaced.fetch_add(c.unplaced, SeqCst);
                }
            }
            if let Some(how) = ended {
                seen.closed_by_relay.fetch_add(1, SeqCst);
                if !kind.may_be_closed {
                    return soak.fail(format!(
                        "{name}: the relay ended connection {} ({how}) after {} bytes",
                        seen.connections.load(SeqCst),
                        checker.bytes()
                    ));
                }
            }
            drop(s);
            if !nap(quit, rng.millis(0, 2000)) {
                return;
            }
        }
    });
    (t, out)
}

/// A collector: listens on `addr` (the relay's `tcp://` output dials it) and reads each
/// connection in turn with one checker, so the stream must continue exactly across the
/// relay's redials. Now and then it hangs up: `graceful` half-closes and reads until the relay
/// closes (every byte the relay wrote is seen), otherwise it resets the connection (bytes in
/// flight are lost: only for outputs that drop). Sometimes it also stops listening for 1–4 s.
/// Once `sources_stop` is set it stops hanging up, so the test can wait for it to catch up.
pub fn collector(
    soak: Arc<Soak>,
    name: String,
    listener: TcpListener,
    check: Check,
    graceful: bool,
    seed: u64,
) -> (JoinHandle<()>, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let out = seen.clone();
    let addr = listener.local_addr().unwrap();
    let t = thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let mut checker = Checker::new(&check);
        let mut listener = Some(listener);
        let calm = || soak.sources_stop.load(SeqCst);
        // What the main thread may look at while this runs; the datagrams seen only at the end.
        let publish = |c: &Checker| {
            seen.bytes.store(c.bytes(), SeqCst);
            match c {
                Checker::Stream(s) => {
                    *seen.position.lock().unwrap() = s.position();
                    seen.unplaced.store(s.unplaced, SeqCst);
                }
                Checker::Framed(f) => seen.datagrams.store(f.seen.count, SeqCst),
            }
        };
        'run: while !soak.stop.load(SeqCst) {
            let l = match listener.take() {
                Some(l) => l,
                None => match common_listen(addr) {
                    Ok(l) => l,
                    Err(e) => return soak.fail(format!("{name}: listen again on {addr}: {e}")),
                },
            };
            l.set_nonblocking(true).unwrap();
            let t0 = Instant::now();
            let mut s = loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if t0.elapsed() > STUCK => {
                        return soak.fail(format!(
                            "{name}: the relay did not dial {addr} within {STUCK:?}"
                        ))
                    }
                    Err(_) if !nap(&soak.stop, Duration::from_millis(10)) => break 'run,
                    Err(_) => {}
                }
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let _open = Open::new(&soak);
            seen.connections.fetch_add(1, SeqCst);
            if let Checker::Framed(f) = &checker {
                if f.partial() != 0 {
                    return soak.fail(format!(
                        "{name}: the previous connection ended inside a frame ({} bytes of it)",
                        f.partial()
                    ));
                }
            }
            let life = Instant::now() + rng.millis(3000, 20000);
            let mut buf = vec![0u8; 64 * 1024];
            let mut failed = None;
            let mut relay_closed = false;
            while (calm() || Instant::now() < life) && !soak.stop.load(SeqCst) {
                match s.read(&mut buf) {
                    Ok(0) => relay_closed = true,
                    Ok(n) => {
                        if let Err(e) = checker.feed(&buf[..n]) {
                            failed = Some(e);
                            break;
                        }
                        publish(&checker);
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => relay_closed = true,
                }
                if relay_closed {
                    break;
                }
            }
            if let Some(e) = failed {
                return soak.fail(format!(
                    "{name}: connection {}: {e}",
                    seen.connections.load(SeqCst)
                ));
            }
            if relay_closed {
                seen.closed_by_relay.fetch_add(1, SeqCst);
                return soak.fail(format!(
                    "{name}: the relay closed connection {} by itself",
                    seen.connections.load(SeqCst)
                ));
            }
            if soak.stop.load(SeqCst) {
                break;
            }
            if graceful {
                let _ = s.shutdown(Shutdown::Write);
                let mut bad = None;
                let done = read_to_end(&mut s, STUCK, |d| {
                    if bad.is_none() {
                        bad = checker.feed(d).err();
                    }
                });
                publish(&checker);
                if let Some(e) = bad {
                    return soak.fail(format!("{name}: while hanging up: {e}"));
                }
                if !done {
                    return soak.fail(format!(
                        "{name}: the relay did not close within {STUCK:?} of the collector's FIN"
                    ));
                }
            } else {
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            }
            drop(s);
            if rng.chance(3) {
                drop(l);
                nap(&soak.stop, rng.millis(1000, 4000));
            } else {
                listener = Some(l);
            }
        }
        if let Checker::Framed(f) = &checker {
            *seen.seqs.lock().unwrap() = f.seen.clone();
        }
    });
    (t, out)
}

/// A listening socket on `addr` with SO_REUSEADDR, retrying for a few seconds.
pub fn common_listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let t0 = Instant::now();
    loop {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        match s.bind(&addr.into()).and_then(|_| s.listen(16)) {
            Ok(()) => return Ok(s.into()),
            Err(e) if t0.elapsed() > Duration::from_secs(5) => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A UDP destination: checks each datagram and that sequence numbers rise.
pub fn udp_sink(
    soak: Arc<Soak>,
    name: String,
    sock: UdpSocket,
    stream: u32,
) -> (JoinHandle<()>, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let out = seen.clone();
    let t = thread::spawn(move || {
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(4 << 20);
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut check = FrameCheck::new(stream);
        let mut buf = vec![0u8; 70 * 1024];
        while !soak.stop.load(SeqCst) {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    if let Err(e) = check.datagram(&buf[..n]) {
                        return soak.fail(format!("{name}: {e}"));
                    }
                    seen.bytes.fetch_add(n as u64, SeqCst);
                }
                Err(e) if is_timeout(&e) => {}
                Err(e) => return soak.fail(format!("{name}: recv: {e}")),
            }
        }
        *seen.seqs.lock().unwrap() = check.seen.clone();
    });
    (t, out)
}
