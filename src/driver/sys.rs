//! The engine's [`Sys`] on Linux: sockets, files, pipes and provided-buffer rings, each call a
//! plain system call (or a few) through [`super::net`] and the ring.
//!
//! Owns: the descriptors the engine names while they are open. Each is created here as an
//! `OwnedFd` and handed to the engine as a number ([`Fd`]); it comes back to be closed through
//! [`Sys::close`], which the engine calls only once nothing is in flight on it. Binding a
//! channel ([`bind_channel`]) keeps its descriptors owned until the whole channel is bound, so
//! a failure half-way closes what it had opened.

use super::net;
use super::ring::RingSys;
use super::serial;
use crate::config::keepalive::Keepalive;
use crate::config::url::{Endpoint, Scheme, Target};
use crate::config::ChannelConfig;
use crate::engine::buffers::BufId;
use crate::engine::io::{Bound, Dialing, Fd, FileState, Pipe, Publish, SpoolFiles, Sys};
use crate::shm::{Publisher, ShmOptions};
use std::io;
use std::net::IpAddr;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::path::Path;

/// Binds the input and every listening output of `cfg`, creates its UDP outputs and opens its
/// files: all the work that can fail on a bad address. Errors name the channel and URL.
pub fn bind_channel(cfg: &ChannelConfig) -> Result<Bound, String> {
    let name = &cfg.name;
    let fail = |url: String, e: io::Error| format!("channel {name}: {url}: {e}");
    let mut input: Option<OwnedFd> = None;
    let mut input_listener: Option<OwnedFd> = None;
    match cfg.input.scheme {
        Scheme::Udp => {
            let (fd, _, rcv) = net::udp_input(&cfg.input).map_err(|e| fail(cfg.input.url(), e))?;
            if rcv.short() {
                let remedy = if rcv.asked > net::RCVBUF_MAX {
                    "Linux grants no more".to_string()
                } else {
                    format!(
                        "Raise net.core.rmem_max (sysctl -w net.core.rmem_max={}) or run with CAP_NET_ADMIN",
                        rcv.asked
                    )
                };
                let msg = format!(
                    "channel {name}: input {}: receive buffer is {} of the {} asked for; \
                     bursts beyond it are dropped in the kernel. {remedy}",
                    cfg.input.url(),
                    crate::config::units::format_size(rcv.got as u64),
                    crate::config::units::format_size(rcv.asked as u64),
                );
                if cfg.input.opts.rcvbuf.is_some() {
                    log::warn!("{msg}");
                } else {
                    log::info!("{msg}");
                }
            }
            input = Some(fd);
        }
        Scheme::TcpListen => {
            let (fd, _) = net::tcp_listen(&cfg.input).map_err(|e| fail(cfg.input.url(), e))?;
            input_listener = Some(fd);
        }
        Scheme::UnixListen => {
            let fd = net::unix_listen(&cfg.input).map_err(|e| fail(cfg.input.url(), e))?;
            input_listener = Some(fd);
        }
        Scheme::Tcp | Scheme::Unix => {
            // Dialed once the loop runs; an unresolvable name is an error now.
            if let Target::Inet { .. } = cfg.input.target {
                net::resolve(&cfg.input).map_err(|e| fail(cfg.input.url(), e))?;
            }
        }
        // Opened once the loop runs, and again whenever it goes away: a port that is not
        // there yet is not an error.
        Scheme::Serial => {}
        Scheme::File | Scheme::Mqtt => unreachable!("rejected by the config parser"),
    }
    let mut outputs: Vec<Option<(OwnedFd, u64)>> = Vec::new();
    for oc in &cfg.outputs {
        let ep = &oc.endpoint;
        let fd = match ep.scheme {
            Scheme::TcpListen => Some((net::tcp_listen(ep).map_err(|e| fail(ep.url(), e))?.0, 0)),
            Scheme::UnixListen => Some((net::unix_listen(ep).map_err(|e| fail(ep.url(), e))?, 0)),
            Scheme::Udp => Some((net::udp_output(ep).map_err(|e| fail(ep.url(), e))?, 0)),
            Scheme::File => {
                let Target::Path(p) = &ep.target else {
                    unreachable!()
                };
                let fd = net::open_append(p).map_err(|e| fail(ep.url(), e))?;
                let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                Some((fd, size))
            }
            Scheme::Tcp | Scheme::Unix | Scheme::Mqtt => {
                if let Target::Inet { .. } = ep.target {
                    net::resolve(ep).map_err(|e| fail(ep.url(), e))?;
                }
                None
            }
            Scheme::Serial => unreachable!("rejected by the config parser"),
        };
        outputs.push(fd);
    }
    Ok(Bound {
        input: input.map(IntoRawFd::into_raw_fd),
        input_listener: input_listener.map(IntoRawFd::into_raw_fd),
        outputs: outputs
            .into_iter()
            .map(|o| o.map(|(fd, size)| (fd.into_raw_fd(), size)))
            .collect(),
    })
}

/// A channel's shared-memory publisher as the engine sees it.
impl Publish for Publisher {
    fn feed_datagram(&mut self, datagram: &[u8]) {
        Publisher::feed_datagram(self, datagram)
    }

    fn feed_stream(&mut self, bytes: &[u8]) {
        Publisher::feed_stream(self, bytes)
    }

    fn tick(&mut self) {
        Publisher::tick(self)
    }

    fn close(self: Box<Self>) {
        Publisher::close(*self)
    }

    fn frames_written(&self) -> Vec<u64> {
        self.counters().frames_out_per_level
    }
}

/// The engine's outside world on this machine.
pub struct Kernel<'a> {
    pub ring: RingSys<'a>,
    pub shm: &'a ShmOptions,
}

impl Sys for Kernel<'_> {
    fn bind(&mut self, cfg: &ChannelConfig) -> Result<Bound, String> {
        bind_channel(cfg)
    }

    fn dial(&mut self, ep: &Endpoint) -> io::Result<Dialing> {
        net::dial(ep).map(|d| Dialing {
            fd: d.fd.into_raw_fd(),
            in_progress: d.in_progress,
        })
    }

    fn finish_connect(&mut self, fd: Fd) -> io::Result<()> {
        net::finish_connect(fd)
    }

    fn open_serial(&mut self, ep: &Endpoint) -> io::Result<(Fd, String)> {
        let (Target::Path(p), Some(params)) = (&ep.target, ep.opts.serial) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let fd = serial::open(p, &params, false)?;
        let dev = serial::device_of(&fd, p);
        Ok((fd.into_raw_fd(), dev))
    }

    fn udp_output(&mut self, ep: &Endpoint) -> io::Result<Fd> {
        net::udp_output(ep).map(IntoRawFd::into_raw_fd)
    }

    fn open_append(&mut self, path: &Path) -> io::Result<(Fd, u64)> {
        let fd = net::open_append(path)?;
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Ok((fd.into_raw_fd(), size))
    }

    fn rotate(&mut self, path: &Path, keep: u32) -> io::Result<Fd> {
        let name = |k: u32| {
            let mut p = path.to_path_buf().into_os_string();
            p.push(format!(".{k}"));
            std::path::PathBuf::from(p)
        };
        let _ = std::fs::remove_file(name(keep));
        for k in (1..keep).rev() {
            let _ = std::fs::rename(name(k), name(k + 1));
        }
        std::fs::rename(path, name(1))?;
        net::open_append(path).map(IntoRawFd::into_raw_fd)
    }

    fn fsync(&mut self, fd: Fd) {
        net::fsync(fd);
    }

    fn file_state(&mut self, fd: Fd, path: &Path) -> FileState {
        use std::os::unix::fs::MetadataExt;
        let Ok((dev, ino, nlink)) = net::file_identity(fd) else {
            return FileState::Linked;
        };
        if nlink == 0 {
            return FileState::Deleted;
        }
        match std::fs::metadata(path) {
            Ok(m) if (m.dev(), m.ino()) == (dev, ino) => FileState::Linked,
            Ok(_) => FileState::Replaced,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                FileState::Deleted
            }
            Err(_) => FileState::Linked,
        }
    }

    fn shutdown(&mut self, fd: Fd) {
        net::shutdown(fd);
    }

    fn shutdown_write(&mut self, fd: Fd) {
        net::shutdown_write(fd)
    }

    fn close(&mut self, fd: Fd) {
        if fd >= 0 {
            drop(net::own_fd(fd));
        }
    }

    fn peer(&mut self, fd: Fd) -> (String, Option<IpAddr>) {
        (net::peer_name(fd), net::peer_ip(fd))
    }

    fn set_sndbuf(&mut self, fd: Fd, bytes: u64) {
        net::set_sndbuf(fd, bytes);
    }

    fn readable(&mut self, fd: Fd) -> bool {
        net::readable(fd)
    }

    fn rcvbuf(&mut self, fd: Fd) -> u64 {
        net::rcvbuf(fd)
    }

    fn set_keepalive(&mut self, fd: Fd, k: Keepalive) {
        if let Err(e) = net::set_keepalive(fd, k) {
            log::warn!("TCP keepalive on a connection: {e}; a peer that vanishes is noticed late");
        }
    }

    fn set_nonblocking(&mut self, fd: Fd) -> io::Result<()> {
        net::set_nonblocking(fd, true)
    }

    fn pipe(&mut self, size: u32) -> io::Result<Pipe> {
        net::pipe(size).map(|p| Pipe {
            read: p.read.into_raw_fd(),
            write: p.write.into_raw_fd(),
            cap: p.cap,
            shrunk: p.shrunk,
        })
    }

    fn publisher(&mut self, cfg: &ChannelConfig) -> Result<Box<dyn Publish>, String> {
        let Some(s) = cfg.samples.as_ref() else {
            return Err(format!("channel {}: no samples to publish", cfg.name));
        };
        Publisher::create(self.shm, &cfg.name, s)
            .map(|p| Box::new(p) as Box<dyn Publish>)
            .map_err(|e| {
                format!(
                    "channel {}: cannot create its region in {}: {e}",
                    cfg.name,
                    self.shm.dir.display()
                )
            })
    }

    fn open_buf_ring(&mut self, group: u16, entries: u16) -> bool {
        self.ring.open_buf_ring(group, entries)
    }

    fn provide(&mut self, group: u16, bufs: &[BufId]) {
        self.ring.provide(group, bufs)
    }

    fn close_buf_ring(&mut self, group: u16) -> bool {
        self.ring.close_buf_ring(group)
    }

    fn cap_workers(&mut self, n: u32) -> io::Result<()> {
        self.ring.cap_unbounded_workers(n)
    }

    fn spool_open(&mut self, dir: &Path) -> io::Result<SpoolFiles> {
        super::spoolfs::open(dir, self.shm.run_as)
    }

    fn spool_create(&mut self, dir: &Path, seq: u64) -> io::Result<Fd> {
        super::spoolfs::create(dir, seq)
    }

    fn spool_remove(&mut self, dir: &Path, seq: u64) {
        super::spoolfs::remove(dir, seq)
    }
}
