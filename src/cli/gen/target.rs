//! Destinations of `ringrelay gen`: the URL vocabulary ([`Target`]), opening a plain blocking
//! std socket to it (or a serial port, set up as the relay sets up its serial inputs:
//! [`crate::driver::serial`]), and writing one packet whole.
//!
//! Owns: waiting for the one consumer of a `tcp-listen://` destination, which UDP send errors
//! count as a lost datagram (as on a network) and which end the run, and waking blocked calls
//! to look at the stop flag and the deadline.

use crate::config::serial::SerialParams;
use crate::config::url::{Endpoint, Role, Target as UrlTarget};
use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where `gen` sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `udp://HOST:PORT`: one datagram per packet.
    Udp(String),
    /// `tcp://HOST:PORT`: connect and write.
    Tcp(String),
    /// `tcp-listen://HOST:PORT`: accept one consumer and write to it.
    TcpListen(String),
    /// `unix:///path`: connect to a stream socket and write.
    Unix(String),
    /// `serial:///dev/ttyUSB0 baud=4800 ...`: open the port, set it raw, and write.
    Serial(std::path::PathBuf, SerialParams),
    /// `pty:///path`: a device that is not there: a new pseudo-terminal whose slave is linked
    /// at the path (as udev links `/dev/serial/by-id` names), written on its master, for trying
    /// a `serial://` input without hardware. Its end (the generator exits) is an unplug: the
    /// link is removed and the slave hangs up.
    Pty(std::path::PathBuf),
}

impl Target {
    /// Parses a destination URL; query-like options after a space are not accepted here.
    pub fn parse(url: &str) -> Result<Target, String> {
        if url.starts_with("serial://") {
            // The same URL and options as a serial input of the relay.
            let ep = Endpoint::parse_for(url, Role::Input)?;
            let UrlTarget::Path(p) = ep.target else {
                return Err(format!("'{url}' needs a path"));
            };
            return Ok(Target::Serial(p, ep.opts.serial.unwrap_or_default()));
        }
        if let Some(path) = url.strip_prefix("pty://") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(format!("'{url}' needs an absolute path (pty:///path)"));
            }
            return Ok(Target::Pty(path.into()));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("'{url}' is not a URL (e.g. udp://127.0.0.1:5000)"))?;
        let need_host = |r: &str| -> Result<String, String> {
            if r.is_empty() || !r.contains(':') {
                Err(format!("'{url}' needs HOST:PORT"))
            } else {
                Ok(r.to_string())
            }
        };
        match scheme {
            "udp" => Ok(Target::Udp(need_host(rest)?)),
            "tcp" => Ok(Target::Tcp(need_host(rest)?)),
            "tcp-listen" => Ok(Target::TcpListen(need_host(rest)?)),
            "unix" if rest.starts_with('/') => Ok(Target::Unix(rest.to_string())),
            "unix" => Err(format!("'{url}' needs an absolute path (unix:///path)")),
            _ => Err(format!(
                "unknown scheme '{scheme}' in '{url}' (one of: udp tcp tcp-listen unix serial pty)"
            )),
        }
    }

    pub(super) fn is_stream(&self) -> bool {
        !matches!(self, Target::Udp(_))
    }
}

fn resolve(hostport: &str) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = hostport.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no address"));
    }
    Ok(addrs)
}

/// The open destination.
pub(super) enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Unix(UnixStream),
    /// Non-blocking: a write the port cannot take yet is tried again a moment later.
    Serial(File),
    /// A pseudo-terminal's master (non-blocking too), its slave and the link to it.
    Pty {
        master: File,
        _link: PtyLink,
    },
}

/// What keeps a `pty://` device plugged in: the slave held open (set raw, so nothing written
/// echoes back) and the link at the path, removed on drop if it still names this slave.
pub(super) struct PtyLink {
    _slave: std::os::fd::OwnedFd,
    slave_path: std::path::PathBuf,
    link: std::path::PathBuf,
}

impl Conn {
    /// A `pty://` device stays plugged in until its reader took every byte written (or `stop`,
    /// or a minute without progress: longer than the relay's longest backoff between two
    /// opens): unplugging it with bytes still queued would lose them.
    pub(super) fn settle(&self, stop: &AtomicBool) {
        let Conn::Pty { _link: l, .. } = self else {
            return;
        };
        let mut last = usize::MAX;
        let mut since = Instant::now();
        // Empty for 100 ms: bytes on their way from the master to the slave's queue are
        // counted there only a moment later.
        let mut empty_since: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) && since.elapsed() < Duration::from_secs(60) {
            match crate::driver::serial::queued_input(&l._slave) {
                Err(_) => return,
                Ok(0) => {
                    let t = *empty_since.get_or_insert_with(Instant::now);
                    if t.elapsed() >= Duration::from_millis(100) {
                        return;
                    }
                }
                Ok(n) if n != last => {
                    empty_since = None;
                    last = n;
                    since = Instant::now();
                }
                Ok(_) => {}
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for PtyLink {
    fn drop(&mut self) {
        if std::fs::read_link(&self.link).is_ok_and(|t| t == self.slave_path) {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}

/// A new pseudo-terminal with its slave linked at `link` (a new link renamed over whatever
/// was there, so a reader never finds the name missing).
fn open_pty(link: &std::path::Path) -> io::Result<Conn> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let slave_path = std::path::PathBuf::from(nix::pty::ptsname_r(&master)?);
    let slave = crate::driver::serial::open(&slave_path, &SerialParams::default(), true)?;
    let master = File::from(std::os::fd::OwnedFd::from(master));
    let fl = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL)?;
    let fl = OFlag::from_bits_retain(fl) | OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(fl))?;
    let mut tmp = link.as_os_str().to_owned();
    tmp.push(".ringrelay-new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&slave_path, &tmp)?;
    std::fs::rename(&tmp, link)?;
    eprintln!(
        "ringrelay gen: pseudo-terminal {} at {}",
        slave_path.display(),
        link.display()
    );
    Ok(Conn::Pty {
        master,
        _link: PtyLink {
            _slave: slave,
            slave_path,
            link: link.to_path_buf(),
        },
    })
}

/// How often blocked calls wake up to look at the stop flag and the deadline.
pub(super) const POLL: Duration = Duration::from_millis(50);

pub(super) fn open(
    target: &Target,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> io::Result<Conn> {
    match target {
        Target::Udp(hp) => {
            let addrs = resolve(hp)?;
            let mut last = None;
            for a in addrs {
                let bind: SocketAddr = if a.is_ipv4() {
                    "0.0.0.0:0".parse().unwrap()
                } else {
                    "[::]:0".parse().unwrap()
                };
                match UdpSocket::bind(bind).and_then(|s| s.connect(a).map(|_| s)) {
                    Ok(s) => return Ok(Conn::Udp(s)),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap())
        }
        Target::Tcp(hp) => {
            let s = TcpStream::connect(resolve(hp)?.as_slice())?;
            s.set_nodelay(true)?;
            s.set_write_timeout(Some(POLL))?;
            Ok(Conn::Tcp(s))
        }
        Target::TcpListen(hp) => {
            let l = TcpListener::bind(resolve(hp)?.as_slice())?;
            eprintln!("ringrelay gen: listening on {}", l.local_addr()?);
            l.set_nonblocking(true)?;
            loop {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false)?;
                        s.set_nodelay(true)?;
                        s.set_write_timeout(Some(POLL))?;
                        return Ok(Conn::Tcp(s));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if stop.load(Ordering::Relaxed)
                            || deadline.is_some_and(|d| Instant::now() >= d)
                        {
                            return Err(io::Error::new(
                                io::ErrorKind::Interrupted,
                                "stopped before a consumer connected",
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Target::Unix(path) => {
            let s = UnixStream::connect(path)?;
            s.set_write_timeout(Some(POLL))?;
            Ok(Conn::Unix(s))
        }
        Target::Serial(path, params) => {
            let fd = crate::driver::serial::open(path, params, true)?;
            Ok(Conn::Serial(File::from(fd)))
        }
        Target::Pty(link) => open_pty(link),
    }
}

/// Why a send loop ended early.
pub(super) enum Halt {
    Stopped,
    Failed(io::Error),
}

impl Conn {
    /// Sends one packet; a stream write blocks (waking up to look at `stop` and `deadline`)
    /// until all of it is written. Returns `Halt::Stopped` when told to stop midway.
    pub(super) fn send(
        &mut self,
        buf: &[u8],
        stop: &AtomicBool,
        deadline: Option<Instant>,
    ) -> Result<(), Halt> {
        let serial = matches!(self, Conn::Serial(_) | Conn::Pty { .. });
        let w: &mut dyn Write = match self {
            Conn::Udp(s) => loop {
                match s.send(buf) {
                    Ok(_) => return Ok(()),
                    // Nobody listens yet (ICMP port unreachable) or the queue is full: UDP
                    // loses the datagram, exactly as it would on a network.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionRefused | io::ErrorKind::Interrupted
                        ) =>
                    {
                        return Ok(())
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        std::thread::yield_now();
                        if stop.load(Ordering::Relaxed) {
                            return Err(Halt::Stopped);
                        }
                    }
                    Err(e) => return Err(Halt::Failed(e)),
                }
            },
            Conn::Tcp(s) => s,
            Conn::Unix(s) => s,
            Conn::Serial(f) | Conn::Pty { master: f, .. } => f,
        };
        let mut off = 0;
        while off < buf.len() {
            match w.write(&buf[off..]) {
                Ok(0) => return Err(Halt::Failed(io::ErrorKind::WriteZero.into())),
                Ok(n) => off += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        return Err(Halt::Stopped);
                    }
                    if serial {
                        // The port's output buffer is full: it drains at the line rate.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                Err(e) => return Err(Halt::Failed(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            Target::parse("udp://127.0.0.1:5000").unwrap(),
            Target::Udp("127.0.0.1:5000".into())
        );
        assert_eq!(
            Target::parse("tcp://[::1]:7000").unwrap(),
            Target::Tcp("[::1]:7000".into())
        );
        assert_eq!(
            Target::parse("tcp-listen://127.0.0.1:0").unwrap(),
            Target::TcpListen("127.0.0.1:0".into())
        );
        assert_eq!(
            Target::parse("unix:///tmp/x.sock").unwrap(),
            Target::Unix("/tmp/x.sock".into())
        );
        assert!(Target::parse("unix://rel").is_err());
        assert!(Target::parse("sctp://1.2.3.4:5").is_err());
        assert!(Target::parse("udp://nohost").is_err());
        assert!(Target::parse("127.0.0.1:5").is_err());
        match Target::parse("serial:///dev/ttyUSB0 baud=4800 parity=even").unwrap() {
            Target::Serial(p, s) => {
                assert_eq!(p, std::path::Path::new("/dev/ttyUSB0"));
                assert_eq!((s.baud, s.databits), (4800, 8));
            }
            t => panic!("{t:?}"),
        }
        assert!(Target::parse("serial:///dev/ttyUSB0 baud=4801").is_err());
        assert!(Target::parse("serial://ttyUSB0").is_err());
        assert_eq!(
            Target::parse("pty:///tmp/ttyGPS").unwrap(),
            Target::Pty("/tmp/ttyGPS".into())
        );
        assert!(Target::parse("pty://tmp").is_err());
    }
}
