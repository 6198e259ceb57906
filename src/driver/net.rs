//! Socket and file creation for endpoints: resolve, bind, listen, join multicast groups,
//! start non-blocking connects, open output files.
//!
//! Owns: every socket option the daemon sets. Data never passes through here: once created, a
//! descriptor is driven only through the ring. Sockets stay blocking (io_uring polls them
//! internally); only a connect in progress is non-blocking, and it is switched back once it
//! completes.

use crate::config::keepalive::{Keepalive, PROBES};
use crate::config::url::{Endpoint, Target};
use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

/// Default receive buffer asked for on UDP inputs. A privileged daemon gets it whatever
/// net.core.rmem_max says (SO_RCVBUFFORCE); otherwise the kernel caps it at rmem_max.
pub const DEFAULT_UDP_RCVBUF: usize = 4 << 20;

/// The largest receive buffer Linux grants (INT_MAX / 2).
pub const RCVBUF_MAX: usize = (i32::MAX / 2) as usize;

/// The receive buffer a socket ended up with, next to what was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RcvBuf {
    pub asked: usize,
    /// What the kernel grants, in the units of `asked` (getsockopt reports twice that: the
    /// kernel doubles the value to cover its bookkeeping).
    pub got: usize,
}

impl RcvBuf {
    pub fn short(&self) -> bool {
        self.got < self.asked
    }
}

/// Asks for an `asked`-byte receive buffer: SO_RCVBUF, then, when net.core.rmem_max capped
/// it, SO_RCVBUFFORCE (which needs CAP_NET_ADMIN and is refused without it).
/// The kernel takes an int and doubles it, so it grants at most `RCVBUF_MAX`.
pub fn set_rcvbuf(s: &Socket, asked: usize) -> RcvBuf {
    let got = |s: &Socket| s.recv_buffer_size().map(|n| n / 2).unwrap_or(0);
    let ask = asked.min(RCVBUF_MAX);
    let _ = s.set_recv_buffer_size(ask);
    if got(s) < ask {
        // Refused without CAP_NET_ADMIN; what the socket has then is what `got` reports.
        let _ = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::RcvBufForce, &ask);
    }
    RcvBuf { asked, got: got(s) }
}

/// Resolves HOST:PORT to one address (IP literals never touch the resolver).
pub fn resolve(ep: &Endpoint) -> io::Result<SocketAddr> {
    match &ep.target {
        Target::Inet { host, port } => {
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok(SocketAddr::new(ip, *port));
            }
            (host.as_str(), *port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for host"))
        }
        Target::Path(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an internet endpoint",
        )),
    }
}

fn path_of(ep: &Endpoint) -> io::Result<&Path> {
    match &ep.target {
        Target::Path(p) => Ok(p),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a path endpoint",
        )),
    }
}

fn into_fd(s: Socket) -> OwnedFd {
    // SAFETY: into_raw_fd hands over sole ownership of a valid descriptor.
    OwnedFd::from(s)
}

fn iface_index(name: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(io::Error::from)
}

/// The first IPv4 address of an interface, for IP_MULTICAST_IF by name.
fn iface_ipv4(name: &str) -> io::Result<Ipv4Addr> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    for a in addrs {
        if a.interface_name != name {
            continue;
        }
        if let Some(sin) = a.address.as_ref().and_then(|x| x.as_sockaddr_in()) {
            return Ok(sin.ip());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("interface {name} has no IPv4 address"),
    ))
}

/// Binds a UDP input, joining its multicast group if it has one.
pub fn udp_input(ep: &Endpoint) -> io::Result<(OwnedFd, SocketAddr, RcvBuf)> {
    let addr = resolve(ep)?;
    let s = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.cloexec(),
        Some(Protocol::UDP),
    )?;
    let rcv = ep
        .opts
        .rcvbuf
        .map(|n| n as usize)
        .unwrap_or(DEFAULT_UDP_RCVBUF);
    let rcvbuf = set_rcvbuf(&s, rcv);
    if let Some(group) = ep.opts.group {
        // Several listeners of one group on one host need the port shared.
        s.set_reuse_address(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.bind(&SockAddr::from(addr))?;
        match group {
            IpAddr::V4(g) => {
                let iface = match ep.opts.iface.as_deref() {
                    None => socket2::InterfaceIndexOrAddress::Index(0),
                    Some(i) => match i.parse::<Ipv4Addr>() {
                        Ok(a) => socket2::InterfaceIndexOrAddress::Address(a),
                        Err(_) => socket2::InterfaceIndexOrAddress::Index(iface_index(i)?),
                    },
                };
                s.join_multicast_v4_n(&g, &iface)?;
                // Only this socket's group, not every group any socket on the host joined.
                let _ = s.set_multicast_all_v4(false);
            }
            IpAddr::V6(g) => {
                let idx = match ep.opts.iface.as_deref() {
                    None => 0,
                    Some(i) => iface_index(i)?,
                };
                s.join_multicast_v6(&g, idx)?;
                let _ = s.set_multicast_all_v6(false);
            }
        }
    } else {
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.bind(&SockAddr::from(addr))?;
    }
    let local = s.local_addr()?.as_socket().unwrap_or(addr);
    Ok((into_fd(s), local, rcvbuf))
}

/// Binds and listens on TCP.
pub fn tcp_listen(ep: &Endpoint) -> io::Result<(OwnedFd, SocketAddr)> {
    let addr = resolve(ep)?;
    let s = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if let Some(n) = ep.opts.rcvbuf {
        // Before listen, so that accepted sockets inherit it and the window scale fits it.
        set_rcvbuf(&s, n as usize);
    }
    // Accepted sockets inherit it (Linux copies the listener's options): a subscriber gets
    // each write as it is made, as a dialed output does (see `dial`), instead of a small
    // write waiting behind Nagle for the previous segment's ACK (milliseconds on loopback,
    // measured with the relay bench's case (l)).
    let _ = s.set_tcp_nodelay(true);
    s.bind(&SockAddr::from(addr))?;
    s.listen(1024)?;
    let local = s.local_addr()?.as_socket().unwrap_or(addr);
    Ok((into_fd(s), local))
}

/// Binds and listens on the metrics server's address (`metrics = HOST:PORT`).
pub fn metrics_listen(addr: SocketAddr) -> io::Result<(OwnedFd, SocketAddr)> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&SockAddr::from(addr))?;
    s.listen(64)?;
    let local = s.local_addr()?.as_socket().unwrap_or(addr);
    Ok((into_fd(s), local))
}

/// Binds and listens on a Unix stream socket, replacing a stale socket file (never any other
/// kind of file).
pub fn unix_listen(ep: &Endpoint) -> io::Result<OwnedFd> {
    let path = path_of(ep)?;
    if let Ok(md) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if md.file_type().is_socket() {
            // A live listener answers a connect; a stale file from a crash does not.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening on this socket",
                ));
            }
            std::fs::remove_file(path)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "path exists and is not a socket",
            ));
        }
    }
    let s = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    if let Some(n) = ep.opts.rcvbuf {
        set_rcvbuf(&s, n as usize);
    }
    s.bind(&SockAddr::unix(path)?)?;
    s.listen(1024)?;
    Ok(into_fd(s))
}

/// Outcome of starting a connect.
pub struct Dialing {
    pub fd: OwnedFd,
    /// The connect is in progress: wait for POLLOUT, then [`finish_connect`].
    pub in_progress: bool,
}

/// Starts a non-blocking connect to a TCP or Unix endpoint, with the endpoint's `sndbuf=` and
/// `rcvbuf=` (each only where the URL allows it).
pub fn dial(ep: &Endpoint) -> io::Result<Dialing> {
    let (s, addr) = match &ep.target {
        Target::Inet { .. } => {
            let a = resolve(ep)?;
            let s = Socket::new(Domain::for_address(a), Type::STREAM.cloexec(), None)?;
            let _ = s.set_tcp_nodelay(true);
            (s, SockAddr::from(a))
        }
        Target::Path(p) => (
            Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?,
            SockAddr::unix(p)?,
        ),
    };
    if let Some(n) = ep.opts.sndbuf {
        let _ = s.set_send_buffer_size(n as usize);
    }
    if let Some(n) = ep.opts.rcvbuf {
        set_rcvbuf(&s, n as usize);
    }
    s.set_nonblocking(true)?;
    let in_progress = match s.connect(&addr) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => true,
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => true, // Unix backlog full
        Err(e) => return Err(e),
    };
    if !in_progress {
        s.set_nonblocking(false)?;
    }
    Ok(Dialing {
        fd: into_fd(s),
        in_progress,
    })
}

/// After POLLOUT on a connecting socket: the connect's result, and the socket made blocking.
pub fn finish_connect(fd: RawFd) -> io::Result<()> {
    // SAFETY: borrow the descriptor for the duration of this call without taking ownership.
    let s = std::mem::ManuallyDrop::new(unsafe_socket(fd));
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    // A Unix connect that returned EAGAIN is not connected yet: peer_addr tells.
    s.peer_addr()?;
    s.set_nonblocking(false)?;
    Ok(())
}

#[allow(unsafe_code)]
fn unsafe_socket(fd: RawFd) -> Socket {
    // SAFETY: callers wrap the result in ManuallyDrop, so the descriptor (owned elsewhere) is
    // only borrowed.
    unsafe { Socket::from_raw_fd(fd) }
}

/// Creates a connected UDP socket for an output (unicast or multicast).
pub fn udp_output(ep: &Endpoint) -> io::Result<OwnedFd> {
    let addr = resolve(ep)?;
    let s = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.cloexec(),
        Some(Protocol::UDP),
    )?;
    if let Some(n) = ep.opts.sndbuf {
        let _ = s.set_send_buffer_size(n as usize);
    }
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_multicast() => {
            s.set_multicast_ttl_v4(ep.opts.ttl.unwrap_or(1))?;
            s.set_multicast_loop_v4(true)?;
            if let Some(i) = ep.opts.iface.as_deref() {
                match i.parse::<Ipv4Addr>() {
                    Ok(a) => s.set_multicast_if_v4(&a)?,
                    Err(_) => s.set_multicast_if_v4(&iface_ipv4(i)?)?,
                }
            }
        }
        IpAddr::V6(ip) if ip.is_multicast() => {
            s.set_multicast_hops_v6(ep.opts.ttl.unwrap_or(1))?;
            s.set_multicast_loop_v6(true)?;
            if let Some(i) = ep.opts.iface.as_deref() {
                s.set_multicast_if_v6(iface_index(i)?)?;
            }
        }
        IpAddr::V4(_) => {
            if let Some(t) = ep.opts.ttl {
                s.set_ttl_v4(t)?;
            }
        }
        IpAddr::V6(_) => {
            if let Some(t) = ep.opts.ttl {
                s.set_unicast_hops_v6(t)?;
            }
        }
    }
    s.connect(&SockAddr::from(addr))?;
    Ok(into_fd(s))
}

/// Opens an output file for appending (created 0644 if missing).
pub fn open_append(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    Ok(OwnedFd::from(f))
}

/// The peer address of an accepted socket, if it has an IP one.
pub fn peer_ip(fd: RawFd) -> Option<IpAddr> {
    let s = std::mem::ManuallyDrop::new(unsafe_socket(fd));
    s.peer_addr().ok()?.as_socket().map(|a| a.ip())
}

/// The peer of an accepted socket, for logs.
pub fn peer_name(fd: RawFd) -> String {
    let s = std::mem::ManuallyDrop::new(unsafe_socket(fd));
    match s.peer_addr() {
        Ok(a) => match a.as_socket() {
            Some(sa) => sa.to_string(),
            None => "unix peer".into(),
        },
        Err(_) => "unknown peer".into(),
    }
}

/// Shuts a socket down in both directions: wakes any pending receive with 0 and sends FIN.
pub fn shutdown(fd: RawFd) {
    let s = std::mem::ManuallyDrop::new(unsafe_socket(fd));
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// Shuts the sending side of `fd` down (the peer reads the end of the stream).
pub fn shutdown_write(fd: RawFd) {
    let s = std::mem::ManuallyDrop::new(unsafe_socket(fd));
    let _ = s.shutdown(std::net::Shutdown::Write);
}

/// Whether data wait to be read on `fd` (poll with a zero timeout; errors count as "no").
#[allow(unsafe_code)]
pub fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the duration of the call; a zero timeout never
    // waits. A closed descriptor only yields POLLNVAL.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLIN != 0
}

/// The receive buffer of a socket in bytes (0 when it cannot be read).
pub fn rcvbuf(fd: RawFd) -> u64 {
    let s = std::mem::ManuallyDrop::new(unsafe_socket(fd));
    s.recv_buffer_size().map_or(0, |n| n as u64)
}

/// Sets the send buffer of an accepted socket.
pub fn set_sndbuf(fd: RawFd, n: u64) {
    let s = std::mem::ManuallyDrop::new(unsafe_socket(fd));
    let _ = s.set_send_buffer_size(n as usize);
}

/// Turns TCP keepalive on with `k`'s schedule, and a user timeout as long as it, so that
/// data sent and never acknowledged fails the connection as soon as silence does.
pub fn set_keepalive(fd: RawFd, k: Keepalive) -> io::Result<()> {
    let s = std::mem::ManuallyDrop::new(unsafe_socket(fd));
    let params = TcpKeepalive::new()
        .with_time(Duration::from_secs(u64::from(k.idle)))
        .with_interval(Duration::from_secs(u64::from(k.interval())))
        .with_retries(PROBES);
    s.set_tcp_keepalive(&params)?;
    s.set_tcp_user_timeout(Some(k.dead_after()))
}

/// Takes ownership of a descriptor the kernel returned (accept).
#[allow(unsafe_code)]
pub fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by accept through the ring and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Flushes a file to its device (errors are the next write's to report).
#[allow(unsafe_code)]
pub fn fsync(fd: RawFd) {
    // SAFETY: the descriptor is open (its owner asked for this call) and is only borrowed for
    // the duration of the call.
    let f = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let _ = nix::unistd::fsync(f);
}

/// The device, inode and link count of an open file.
#[allow(unsafe_code)]
#[allow(clippy::unnecessary_cast)] // the stat field types differ between targets
pub fn file_identity(fd: RawFd) -> io::Result<(u64, u64, u64)> {
    // SAFETY: the descriptor is open (its owner asked for this call) and is only borrowed for
    // the duration of the call.
    let f = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let st = nix::sys::stat::fstat(f).map_err(io::Error::from)?;
    Ok((st.st_dev as u64, st.st_ino as u64, st.st_nlink as u64))
}

/// Releases an OwnedFd into a raw descriptor (for handing to a child process, etc.).
pub fn into_raw(fd: OwnedFd) -> RawFd {
    fd.into_raw_fd()
}

/// Raw descriptor of an owned one.
pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}

/// Sets or clears O_NONBLOCK on a socket.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    let s = std::mem::ManuallyDrop::new(unsafe_socket(fd));
    s.set_nonblocking(on)
}

/// A splicing channel's pipe: both ends, close-on-exec, and what it holds.
#[derive(Debug)]
pub struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
    /// Capacity in bytes as the kernel reports it (F_GETPIPE_SZ).
    pub cap: u32,
    /// F_SETPIPE_SZ to the requested size was refused with EPERM (`fs.pipe-user-pages-soft`
    /// or `fs.pipe-max-size` reached): the pipe runs at `cap`.
    pub shrunk: bool,
}

/// Creates a pipe pair (pipe2 O_CLOEXEC) and asks for `size` bytes of capacity.
pub fn pipe(size: u32) -> io::Result<Pipe> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let mut shrunk = false;
    match fcntl(&write, FcntlArg::F_SETPIPE_SZ(size as libc::c_int)) {
        Ok(_) => {}
        Err(nix::errno::Errno::EPERM) => {
            shrunk = true;
            // Above fs.pipe-max-size without CAP_SYS_RESOURCE: take the largest pipe allowed
            // rather than the 64 KiB default, which costs the splice path about twice the CPU
            // per GB (ten times the splices; benches/README.md). Refused again when the user's
            // pipes are past fs.pipe-user-pages-soft: then the default stays.
            if let Some(max) = pipe_max_size().filter(|&m| m < size) {
                let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(max as libc::c_int));
            }
        }
        Err(e) => return Err(e.into()),
    }
    let cap = fcntl(&write, FcntlArg::F_GETPIPE_SZ).map_err(io::Error::from)?;
    Ok(Pipe {
        read,
        write,
        cap: cap.max(1) as u32,
        shrunk,
    })
}

/// `fs.pipe-max-size`: the largest pipe an unprivileged process may ask for.
fn pipe_max_size() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_above_the_limit_gets_the_limit_not_the_default() {
        let Some(max) = pipe_max_size() else { return };
        let p = pipe(max.saturating_mul(4)).unwrap();
        if !p.shrunk {
            // CAP_SYS_RESOURCE: the kernel granted the size asked for.
            assert!(p.cap >= max.saturating_mul(4), "{p:?}");
            return;
        }
        // The user's pipes past fs.pipe-user-pages-soft refuse any growth: only then may the
        // pipe stay at the 64 KiB default.
        let probe = pipe(max).unwrap();
        if !probe.shrunk {
            assert_eq!(p.cap, max, "{p:?}");
        }
    }

    fn udp() -> Socket {
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap()
    }

    #[test]
    fn a_small_receive_buffer_is_granted() {
        // 64 KiB is below every rmem_max Linux ships with.
        let r = set_rcvbuf(&udp(), 64 << 10);
        assert!(!r.short(), "{r:?}");
        assert!(r.got >= 64 << 10, "{r:?}");
    }

    #[test]
    fn an_impossible_receive_buffer_is_reported_short() {
        // Larger than the kernel's int can hold: clamped, never wrapped to a negative value.
        let r = set_rcvbuf(&udp(), usize::MAX);
        assert!(r.short(), "{r:?}");
        assert!(r.got <= RCVBUF_MAX, "{r:?}");
        assert!(
            r.got >= 2048,
            "a wrapped value would leave the minimum buffer: {r:?}"
        );
    }
}
