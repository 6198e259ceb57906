//! Datagram sinks: [`DatagramSink`] collects what a UDP destination receives, and
//! [`send_windowed`] paces datagrams so no receiver falls too far behind.

use super::{wait_until, TRANSFER_TIMEOUT};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A bound UDP socket whose datagrams a thread collects.
pub struct DatagramSink {
    dgrams: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
    name: String,
}

impl DatagramSink {
    /// Binds `addr` (port 0 picks one) with a large receive buffer.
    pub fn bind(name: &str, addr: SocketAddr) -> DatagramSink {
        let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("{name}: bind {addr}: {e}"));
        DatagramSink::from_socket(name, s)
    }

    /// Binds `0.0.0.0:port` and joins `group` on the interface with address `iface`. `None` if
    /// the kernel refuses the join.
    pub fn multicast(name: &str, group: Ipv4Addr, iface: Ipv4Addr) -> Option<DatagramSink> {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).into())
            .unwrap();
        if let Err(e) = s.join_multicast_v4(&group, &iface) {
            eprintln!("{name}: the kernel refuses to join {group} on {iface}: {e}");
            return None;
        }
        Some(DatagramSink::from_socket(name, s.into()))
    }

    pub fn from_socket(name: &str, s: UdpSocket) -> DatagramSink {
        let sock = socket2::SockRef::from(&s);
        let _ = sock.set_recv_buffer_size(4 << 20);
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = s.local_addr().unwrap();
        let dgrams = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let dgrams = dgrams.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; 70 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = s.recv(&mut buf) {
                        dgrams.lock().unwrap().push(buf[..n].to_vec());
                    }
                }
            })
        };
        DatagramSink {
            dgrams,
            stop,
            thread: Some(thread),
            addr,
            name: name.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn count(&self) -> usize {
        self.dgrams.lock().unwrap().len()
    }

    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.dgrams.lock().unwrap().clone()
    }
}

impl Drop for DatagramSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `dgrams` from `sock` to `to`, never more than a window ahead of the slowest receiver
/// (`delivered()` returns how many of `dgrams` the slowest one has got). Loopback UDP loses
/// datagrams only when a receive buffer overflows; keeping at most 16 datagrams and 128 KiB in
/// flight keeps every buffer on the way far from full, so a datagram that goes missing is the
/// relay's doing and shows up as a timeout here.
pub fn send_windowed(
    sock: &UdpSocket,
    to: SocketAddr,
    dgrams: &[Vec<u8>],
    delivered: impl Fn() -> usize,
    what: &str,
) {
    const MAX_DGRAMS: usize = 16;
    const MAX_BYTES: usize = 128 * 1024;
    let mut ends = Vec::with_capacity(dgrams.len() + 1);
    ends.push(0usize);
    for d in dgrams {
        ends.push(ends.last().unwrap() + d.len());
    }
    for (i, d) in dgrams.iter().enumerate() {
        let mut done = 0;
        let ok = wait_until(TRANSFER_TIMEOUT, || {
            done = delivered();
            done >= i || (i - done < MAX_DGRAMS && ends[i + 1] - ends[done] <= MAX_BYTES)
        });
        if !ok {
            panic!(
                "{what}: the slowest receiver has {done} of the {i} datagrams sent so far after {TRANSFER_TIMEOUT:?} (a datagram was lost or the relay stalled)"
            );
        }
        sock.send_to(d, to).expect("send datagram");
    }
    let mut done = 0;
    if !wait_until(TRANSFER_TIMEOUT, || {
        done = delivered();
        done >= dgrams.len()
    }) {
        panic!(
            "{what}: the slowest receiver has {done} of {} datagrams after {TRANSFER_TIMEOUT:?}",
            dgrams.len()
        );
    }
}
