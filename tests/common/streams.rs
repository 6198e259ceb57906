//! Stream sinks and collectors: [`StreamSink`] reads one TCP or Unix connection in a thread,
//! [`Collector`] accepts what a `tcp://` output dials; plus the ping and windowed-write helpers
//! that drive data through them.

use super::{assert_same_bytes, strip_pings, wait_for, wait_until, PING, TRANSFER_TIMEOUT};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How a stream sink's connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Orderly close (read returned 0).
    Eof,
    /// A read error such as ECONNRESET.
    Error(String),
}

#[derive(Default)]
struct StreamState {
    data: Vec<u8>,
    end: Option<End>,
}

/// Reads a stream in a thread until EOF or error, keeping every byte.
pub struct StreamSink {
    state: Arc<Mutex<StreamState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    name: String,
    tcp: Option<TcpStream>,
}

/// What a [`StreamSink`] reads from.
pub trait SinkStream: Read + Send + 'static {
    fn set_timeout(&self, d: Duration);
}
impl SinkStream for TcpStream {
    fn set_timeout(&self, d: Duration) {
        self.set_read_timeout(Some(d)).unwrap();
    }
}
impl SinkStream for UnixStream {
    fn set_timeout(&self, d: Duration) {
        self.set_read_timeout(Some(d)).unwrap();
    }
}

impl StreamSink {
    pub fn new<S: SinkStream>(name: &str, mut s: S) -> StreamSink {
        s.set_timeout(Duration::from_millis(50));
        let state = Arc::new(Mutex::new(StreamState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = state.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            state.lock().unwrap().end = Some(End::Eof);
                            return;
                        }
                        Ok(n) => state.lock().unwrap().data.extend_from_slice(&buf[..n]),
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut
                                || e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            state.lock().unwrap().end = Some(End::Error(e.to_string()));
                            return;
                        }
                    }
                }
            })
        };
        StreamSink {
            state,
            stop,
            thread: Some(thread),
            name: name.to_string(),
            tcp: None,
        }
    }

    /// Reads a TCP connection, keeping a handle on it for [`StreamSink::tcp_handle`].
    pub fn from_tcp(name: &str, s: TcpStream) -> StreamSink {
        let handle = s.try_clone().expect("clone tcp stream");
        let mut sink = StreamSink::new(name, s);
        sink.tcp = Some(handle);
        sink
    }

    /// Connects to a TCP subscriber endpoint (retrying briefly) and starts reading.
    pub fn tcp(name: &str, addr: SocketAddr) -> StreamSink {
        StreamSink::from_tcp(name, connect_tcp(addr))
    }

    /// Another handle on the TCP connection (for a half-close), if this sink reads one.
    pub fn tcp_handle(&self) -> Option<TcpStream> {
        self.tcp
            .as_ref()
            .map(|s| s.try_clone().expect("clone tcp stream"))
    }

    /// Connects to a Unix subscriber endpoint (retrying briefly) and starts reading.
    pub fn unix(name: &str, path: &Path) -> StreamSink {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match UnixStream::connect(path) {
                Ok(s) => return StreamSink::new(name, s),
                Err(e) if Instant::now() >= deadline => {
                    panic!("{name}: connect to {}: {e}", path.display())
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.state.lock().unwrap().data.len()
    }

    /// Makes room for `n` more bytes up front, so a reader thread that must keep up with a
    /// fast stream never pauses to move a large buffer.
    pub fn reserve(&self, n: usize) {
        self.state.lock().unwrap().data.reserve(n);
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn data(&self) -> Vec<u8> {
        self.state.lock().unwrap().data.clone()
    }

    /// Runs `f` on the bytes received so far without copying them.
    pub fn with_data<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.state.lock().unwrap().data)
    }

    pub fn end(&self) -> Option<End> {
        self.state.lock().unwrap().end.clone()
    }

    /// Waits until at least `n` bytes arrived; panics at the deadline.
    pub fn wait_len(&self, n: usize, timeout: Duration) {
        wait_for(
            &format!("{} to receive {n} bytes", self.name),
            timeout,
            || {
                let s = self.state.lock().unwrap();
                if s.data.len() < n {
                    if let Some(end) = &s.end {
                        panic!(
                            "{}: connection ended ({end:?}) after {} of {n} bytes",
                            self.name,
                            s.data.len()
                        );
                    }
                    false
                } else {
                    true
                }
            },
        );
    }

    /// Waits for the connection to end; `None` at the deadline.
    pub fn wait_end(&self, timeout: Duration) -> Option<End> {
        let mut end = None;
        wait_until(timeout, || {
            end = self.end();
            end.is_some()
        });
        end
    }
}

impl Drop for StreamSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects to `addr`, retrying for up to 5 seconds.
pub fn connect_tcp(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => {
                s.set_nodelay(true).unwrap();
                // A producer whose writes block for this long fails instead of hanging.
                s.set_write_timeout(Some(TRANSFER_TIMEOUT)).unwrap();
                return s;
            }
            Err(e) if Instant::now() >= deadline => panic!("connect to {addr}: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Makes sure every sink is registered with the relay before the real data start: writes one
/// [`PING`] byte at a time through `producer` until each sink has received at least one byte.
/// A stream is in order, so a sink that saw a ping gets everything written after it; each sink
/// then holds some pings followed by the data (see [`strip_pings`]). Returns the pings written.
pub fn ping_stream(producer: &mut impl Write, sinks: &[&StreamSink]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut sent = 0;
    loop {
        producer.write_all(&[PING]).expect("write ping");
        sent += 1;
        if wait_until(Duration::from_millis(25), || {
            sinks.iter().all(|s| !s.is_empty())
        }) {
            return sent;
        }
        if Instant::now() >= deadline {
            let lens: Vec<_> = sinks.iter().map(|s| (s.name(), s.len())).collect();
            panic!("sinks saw no ping within 15s after {sent} pings: {lens:?}");
        }
    }
}

/// Waits until `sink` holds pings followed by exactly `want`, then compares byte for byte.
pub fn expect_after_pings(sink: &StreamSink, want: &[u8], timeout: Duration) {
    let ok = wait_until(timeout, || {
        sink.with_data(|d| strip_pings(d).len() >= want.len()) || sink.end().is_some()
    });
    let end = sink.end();
    let ok = ok && sink.with_data(|d| strip_pings(d).len() >= want.len());
    sink.with_data(|d| {
        let got = strip_pings(d);
        if !ok {
            panic!(
                "{}: got {} of {} bytes (connection end: {end:?}; waited at most {timeout:?})",
                sink.name(),
                got.len(),
                want.len(),
            );
        }
        assert_same_bytes(sink.name(), got, want);
    });
}

/// The fewest payload bytes (after the pings) any of `sinks` holds.
pub fn min_after_pings(sinks: &[&StreamSink]) -> usize {
    sinks
        .iter()
        .map(|s| s.with_data(|d| strip_pings(d).len()))
        .min()
        .unwrap_or(0)
}

/// Writes `data` in 64 KiB pieces, never more than `window` bytes ahead of `delivered()` (what
/// the slowest reader that must keep up has received). This keeps a reader thread that the
/// scheduler starves for a moment from falling `max_backlog` behind and being disconnected as
/// slow: these tests are about correctness, not speed. Panics if no progress is made for
/// [`TRANSFER_TIMEOUT`].
pub fn write_windowed(
    w: &mut impl Write,
    data: &[u8],
    window: usize,
    delivered: impl Fn() -> usize,
    what: &str,
) {
    const PIECE: usize = 64 * 1024;
    let mut sent = 0;
    while sent < data.len() {
        let n = PIECE.min(data.len() - sent);
        let mut done = 0;
        if !wait_until(TRANSFER_TIMEOUT, || {
            done = delivered();
            done + window >= sent + n
        }) {
            panic!("{what}: readers stuck at {done} of the {sent} bytes written so far");
        }
        w.write_all(&data[sent..sent + n])
            .unwrap_or_else(|e| panic!("{what}: write at offset {sent}: {e}"));
        sent += n;
    }
}

// ------------------------------------------------------------------------------------------------
// Collectors (what a `tcp://` output dials)

/// A listener that accepts every connection and reads each into its own [`StreamSink`].
pub struct Collector {
    conns: Arc<Mutex<Vec<Arc<StreamSink>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Collector {
    /// Listens on `addr` (port 0 picks one), retrying the bind for a few seconds (the port may
    /// have been ours a moment ago). `rcvbuf` fixes the accepted sockets' receive buffer.
    pub fn listen(addr: SocketAddr, rcvbuf: Option<usize>) -> Collector {
        use socket2::{Domain, Socket, Type};
        let deadline = Instant::now() + Duration::from_secs(5);
        let sock = loop {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
            s.set_reuse_address(true).unwrap();
            if let Some(n) = rcvbuf {
                s.set_recv_buffer_size(n).unwrap();
            }
            match s.bind(&addr.into()).and_then(|_| s.listen(16)) {
                Ok(()) => break s,
                Err(e) if Instant::now() >= deadline => panic!("collector bind {addr}: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        };
        let listener: TcpListener = sock.into();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Arc<StreamSink>>>> = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let conns = conns.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(false).unwrap();
                            let mut c = conns.lock().unwrap();
                            let name = format!("collector connection {}", c.len() + 1);
                            c.push(Arc::new(StreamSink::from_tcp(&name, s)));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
                // The listener closes here: new connections are refused from now on.
            })
        };
        Collector {
            conns,
            stop,
            thread: Some(thread),
            addr,
        }
    }

    /// The connections accepted so far, in order.
    pub fn connections(&self) -> Vec<Arc<StreamSink>> {
        self.conns.lock().unwrap().clone()
    }

    /// Bytes received over all connections so far.
    pub fn total_len(&self) -> usize {
        self.connections().iter().map(|c| c.len()).sum()
    }

    /// Every connection's bytes, concatenated in accept order.
    pub fn concatenated(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for c in self.connections() {
            v.extend_from_slice(&c.data());
        }
        v
    }

    /// The collector goes away mid-stream: once its first connection holds `after` bytes it
    /// stops listening and half-closes that connection, reading on until the relay closes its
    /// end (so every byte the relay wrote there is seen). Returns that connection; the relay
    /// must not have handed it the whole `total`, or there is no redial left to test.
    pub fn leave_mid_stream(&mut self, after: usize, total: usize) -> Arc<StreamSink> {
        wait_for("the relay to dial the collector", TRANSFER_TIMEOUT, || {
            !self.connections().is_empty()
        });
        let conn = self.connections()[0].clone();
        conn.wait_len(after, TRANSFER_TIMEOUT);
        self.stop_listening();
        let raw = conn.tcp_handle().expect("a tcp connection");
        raw.shutdown(std::net::Shutdown::Write).expect("half-close");
        drop(raw);
        let end = conn.wait_end(TRANSFER_TIMEOUT);
        assert!(
            end.is_some(),
            "the relay never closed its connection after the collector's FIN (it read {} of {total} bytes on it)",
            conn.len()
        );
        assert!(
            conn.len() < total,
            "the whole stream went to the first connection: nothing left to test the redial with"
        );
        conn
    }

    /// After [`Collector::leave_mid_stream`]: a second away, then back on the same port. Waits
    /// until the old connection and the new collector carry `total` bytes between them.
    pub fn come_back(gone: &Arc<StreamSink>, addr: SocketAddr, total: usize) -> Collector {
        thread::sleep(Duration::from_secs(1));
        let back = Collector::listen(addr, None);
        wait_for(
            "the two connections to carry the whole stream",
            TRANSFER_TIMEOUT,
            || gone.len() + back.total_len() >= total,
        );
        back
    }

    /// Closes the listening socket (accepted connections stay open).
    pub fn stop_listening(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop_listening();
    }
}
