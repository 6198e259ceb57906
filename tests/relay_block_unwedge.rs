//! A channel blocked by an `on_slow=block` subscriber reads again once that subscriber leaves.
//!
//! A `block` output that fills up stops the channel's input. Its queue also empties when the
//! subscriber goes away (its queue is dropped with it), not only when a write completes; the
//! channel must notice that too, or it stays blocked forever: the input is never read again
//! and every later subscriber gets nothing. Runs with both feature sets.

#[macro_use]
mod common;

use common::*;
use socket2::{Domain, SockAddr, Socket, Type};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

in_both_feature_sets!(blocked_channel_resumes_when_the_blocking_subscriber_leaves);

/// The `max_backlog` of the `block` output, in bytes.
const BACKLOG: u64 = 64 * 1024;
/// What the producer writes at most while waiting for the relay to block.
const FILL_LIMIT: u64 = 64 << 20;
/// How long the producer's writes must make no progress to count as stalled.
const STALL: Duration = Duration::from_secs(1);
/// What the second subscriber must receive once the first one has left.
const WANT_AFTER: usize = 1 << 20;
/// How long the second subscriber may take to receive it.
const AFTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Byte `n` of the producer's stream: a little-endian u64 counter, 0, 1, 2, ...
fn stream_byte(n: u64) -> u8 {
    (n / 8).to_le_bytes()[(n % 8) as usize]
}

/// Fills `buf` with the stream from offset `at` on.
fn fill_stream(buf: &mut [u8], at: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = stream_byte(at + i as u64);
    }
}

/// The stream offset `got` starts at, if `got` is a contiguous piece of the producer's stream
/// (whatever its alignment to the 8-byte counters).
fn offset_in_stream(got: &[u8]) -> Option<u64> {
    if got.len() < 16 {
        return None;
    }
    (0..8u64).find_map(|phase| {
        let p = phase as usize;
        let word = u64::from_le_bytes(got[p..p + 8].try_into().unwrap());
        let start = word.checked_mul(8)?.checked_sub(phase)?;
        got.iter()
            .enumerate()
            .all(|(i, &b)| b == stream_byte(start + i as u64))
            .then_some(start)
    })
}

/// A producer on a non-blocking socket that writes the counter stream and remembers how far
/// it got.
struct Producer {
    sock: TcpStream,
    sent: u64,
    buf: Vec<u8>,
}

impl Producer {
    fn connect(addr: SocketAddr) -> Producer {
        let sock = connect_tcp(addr);
        sock.set_nonblocking(true).expect("non-blocking producer");
        Producer {
            sock,
            sent: 0,
            buf: vec![0; 64 * 1024],
        }
    }

    /// Writes as much as the socket takes right now; returns the bytes written.
    fn write_some(&mut self) -> u64 {
        let mut wrote = 0;
        loop {
            fill_stream(&mut self.buf, self.sent);
            match self.sock.write(&self.buf) {
                Ok(0) => panic!("producer: write returned 0 at offset {}", self.sent),
                Ok(n) => {
                    self.sent += n as u64;
                    wrote += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return wrote,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("producer: write at offset {}: {e}", self.sent),
            }
        }
    }

    /// Writes until nothing has gone out for [`STALL`]; panics if [`FILL_LIMIT`] bytes or
    /// `timeout` go by first (the relay never pushed back).
    fn write_until_stalled(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last_progress = Instant::now();
        loop {
            if self.write_some() > 0 {
                last_progress = Instant::now();
            } else if last_progress.elapsed() >= STALL {
                return;
            }
            assert!(
                self.sent < FILL_LIMIT && Instant::now() < deadline,
                "producer wrote {} bytes in {timeout:?} without its writes stalling: the relay never blocked",
                self.sent
            );
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A subscriber that never reads, with a small receive buffer so it fills up fast.
fn connect_non_reader(addr: SocketAddr) -> Socket {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        match s.connect_timeout(&SockAddr::from(addr), Duration::from_secs(2)) {
            Ok(()) => return s,
            Err(e) if Instant::now() >= deadline => panic!("subscriber A: connect {addr}: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The `backlog=` and `clients=` of a fresh counters line for output `url`.
fn output_counters(relay: &Relay, url: &str) -> (u64, u64) {
    let line = output_counters_line(relay, url);
    (counter_in(&line, "backlog"), counter_in(&line, "clients"))
}

/// Subscriber A never reads until the `block` output's backlog fills and the relay stops
/// reading the producer; then A resets its connection and the relay closes it. Subscriber B,
/// connecting afterwards, must get the producer's new bytes: 1 MiB within 10 s, a contiguous
/// piece of the producer's stream.
fn blocked_channel_resumes_when_the_blocking_subscriber_leaves(features: Features) {
    let dir = TempDir::new("block-unwedge");
    let (relay, ch) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}buffer_size = 4KiB\nbuffer_count = 64\nsplice = off\n\n[channel blk]\ninput = tcp-listen://{input}\noutput = tcp-listen://{subs} on_slow=block max_backlog=64KiB\n",
            dir.global_section()
        );
        (conf, (input, subs))
    });
    let (input, subs) = ch;
    let url = format!("tcp-listen://{subs}");
    let connected = |peer: SocketAddr| format!("subscriber {peer} connected to {url}");

    // A connects and is registered before any data flow, so everything is offered to it.
    let a = connect_non_reader(subs);
    let a_addr = a.local_addr().unwrap().as_socket().unwrap();
    wait_for("the relay to accept subscriber A", READY_TIMEOUT, || {
        relay.log().contains(&connected(a_addr))
    });

    // The producer writes until the relay stops reading it: A's backlog is full.
    let mut producer = Producer::connect(input);
    producer.write_until_stalled(TRANSFER_TIMEOUT);
    let (backlog, clients) = output_counters(&relay, &url);
    assert!(
        clients == 1 && backlog > BACKLOG / 2,
        "after the producer stalled at {} bytes, the block output holds {backlog} bytes for {clients} clients (want 1 client over half of {BACKLOG} bytes: blocked)",
        producer.sent
    );

    // A leaves abruptly: a reset fails the relay's pending write to it, and the relay closes it.
    a.set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
    drop(a);
    let left = format!("subscriber {a_addr} of {url} left");
    wait_for(
        "the relay to close subscriber A",
        Duration::from_secs(10),
        || relay.log().contains(&left),
    );

    // B joins; the producer goes on writing, and B must get the new bytes.
    let b = StreamSink::tcp("subscriber B", subs);
    b.reserve(WANT_AFTER * 4);
    let b_addr = b.tcp_handle().unwrap().local_addr().unwrap();
    wait_for("the relay to accept subscriber B", READY_TIMEOUT, || {
        relay.log().contains(&connected(b_addr))
    });
    let sent_before_b = producer.sent;
    let deadline = Instant::now() + AFTER_TIMEOUT;
    while b.len() < WANT_AFTER {
        if Instant::now() >= deadline {
            let (backlog, clients) = output_counters(&relay, &url);
            panic!(
                "subscriber B got {} of {WANT_AFTER} bytes within {AFTER_TIMEOUT:?} of joining (producer wrote {} more bytes, {} in all; output backlog={backlog} clients={clients}): the channel stayed blocked after subscriber A left",
                b.len(),
                producer.sent - sent_before_b,
                producer.sent
            );
        }
        if let Some(end) = b.end() {
            panic!(
                "subscriber B: connection ended ({end:?}) after {} bytes",
                b.len()
            );
        }
        if producer.write_some() == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }

    // What B got is one contiguous piece of the producer's stream, none of it past what was sent.
    b.with_data(|got| {
        let start = offset_in_stream(got).unwrap_or_else(|| {
            panic!(
                "subscriber B's {} bytes are not a contiguous piece of the producer's counter stream",
                got.len()
            )
        });
        assert!(
            start + got.len() as u64 <= producer.sent,
            "subscriber B got stream bytes {start}..{} but the producer only sent {}",
            start + got.len() as u64,
            producer.sent
        );
    });
    assert_eq!(b.end(), None, "subscriber B's connection ended");

    drop(producer);
    drop(b);
    relay.stop();
}
