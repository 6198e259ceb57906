//! The engine's `Sys` calls (bind, dial, open, close, the spool's files...) as the
//! simulated kernel answers them: descriptors and objects made, taken or closed at once.

use super::*;
use ringrelay::engine::buffers::BufId;
use ringrelay::engine::io::{Bound, Dialing, Fd, FileState, Op, Pipe, Publish, SpoolFiles, Sys};
use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::path::Path;

/// What the engine's `Sys` calls do in the simulated world.
impl Sys for Kernel {
    fn bind(&mut self, cfg: &ringrelay::config::ChannelConfig) -> Result<Bound, String> {
        use ringrelay::config::url::{Scheme, Target};
        let chan = cfg
            .name
            .trim_start_matches('c')
            .parse::<usize>()
            .map_err(|_| format!("channel {}: not a simulated channel", cfg.name))?;
        self.bound_channels += 1;
        let mut b = Bound::default();
        match cfg.input.scheme {
            Scheme::Udp => b.input = Some(self.fd(Obj::UdpIn(chan))),
            Scheme::TcpListen => {
                b.input_listener = Some(self.fd(Obj::Listener {
                    who: Who::Input(chan),
                    shut: false,
                }))
            }
            _ => {
                self.urls.insert(cfg.input.url(), Who::Input(chan));
            }
        }
        for (o, oc) in cfg.outputs.iter().enumerate() {
            let fd = match oc.endpoint.scheme {
                Scheme::TcpListen => Some((
                    self.fd(Obj::Listener {
                        who: Who::Output(chan, o),
                        shut: false,
                    }),
                    0,
                )),
                Scheme::Udp => Some((self.fd(Obj::UdpOut(chan, o)), 0)),
                Scheme::File => {
                    let Target::Path(p) = &oc.endpoint.target else {
                        return Err(format!("channel {}: a file without a path", cfg.name));
                    };
                    self.files.paths.insert(p.clone(), (chan, o));
                    let fd = self.fd(Obj::File(chan, o));
                    self.files.opened(fd, (chan, o));
                    Some((fd, 0))
                }
                _ => {
                    self.urls.insert(oc.endpoint.url(), Who::Output(chan, o));
                    None
                }
            };
            b.outputs.push(fd);
        }
        Ok(b)
    }

    fn dial(&mut self, ep: &ringrelay::config::url::Endpoint) -> io::Result<Dialing> {
        let Some(&who) = self.urls.get(&ep.url()) else {
            return Err(io::Error::from_raw_os_error(libc::EHOSTUNREACH));
        };
        if self.rng.chance(self.faults.error / 2) {
            return Err(io::Error::from_raw_os_error(libc::ENETUNREACH));
        }
        let ci = self.conn(who, 0);
        let fd = self.fd(Obj::Stream(ci));
        self.note(format!("dial {who:?} -> fd {fd} conn {ci}"));
        Ok(Dialing {
            fd,
            in_progress: true,
        })
    }

    /// A serial port opens while its device is plugged in (and the seed does not make it
    /// busy), as a stream the relay reads.
    fn open_serial(&mut self, ep: &ringrelay::config::url::Endpoint) -> io::Result<(Fd, String)> {
        let chan = match self.urls.get(&ep.url()) {
            Some(&Who::Input(c)) if self.serial_plugged.get(&c) == Some(&true) => c,
            _ => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
        };
        if self.rng.chance(self.faults.error / 2) {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        let ci = self.conn(Who::Input(chan), 0);
        self.conns[ci].serial = true;
        self.conns[ci].accepted = Some(true);
        let fd = self.fd(Obj::Stream(ci));
        self.note(format!("open serial of c{chan} -> fd {fd} conn {ci}"));
        Ok((fd, format!("/dev/ttySIM{ci}")))
    }

    fn finish_connect(&mut self, fd: Fd) -> io::Result<()> {
        let Some(ci) = self.stream(fd) else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        if self.conns[ci].accepted == Some(true) && !self.conns[ci].shut {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::ECONNREFUSED))
        }
    }

    fn udp_output(&mut self, _ep: &ringrelay::config::url::Endpoint) -> io::Result<Fd> {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }

    fn open_append(&mut self, path: &Path) -> io::Result<(Fd, u64)> {
        let (c, o) = self.files.may_open(path)?;
        if self.rng.chance(self.faults.error / 2) {
            // Out of descriptors, or the directory went and came back between two calls.
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        let fd = self.fd(Obj::File(c, o));
        self.files.opened(fd, (c, o));
        self.note(format!("open {} -> fd {fd}", path.display()));
        Ok((fd, 0))
    }

    fn rotate(&mut self, path: &Path, _keep: u32) -> io::Result<Fd> {
        // The file is renamed (its sink goes on: it is the same output) and a new one opened.
        let (c, o) = self.files.may_open(path)?;
        if self.rng.chance(self.faults.error / 2) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let fd = self.fd(Obj::File(c, o));
        self.files.opened(fd, (c, o));
        self.note(format!("rotate {} -> fd {fd}", path.display()));
        Ok(fd)
    }

    fn file_state(&mut self, fd: Fd, path: &Path) -> FileState {
        let out = self.files.out_of(path).ok();
        match self.objs.get(&fd) {
            Some(&Obj::File(c, o)) if out == Some((c, o)) => self.files.state(fd),
            // A serial port: its device unplugged, and maybe another one plugged in since.
            Some(&Obj::Stream(ci)) if self.conns[ci].serial => {
                let k = &self.conns[ci];
                let plugged = matches!(k.who, Some(Who::Input(c)) if self.serial_plugged.get(&c) == Some(&true));
                match (k.rx_eio || k.rx_eof, plugged) {
                    (false, _) => FileState::Linked,
                    (true, false) => FileState::Deleted,
                    (true, true) => FileState::Replaced,
                }
            }
            obj => {
                let s = format!("file_state of fd {fd} ({obj:?}) for {}", path.display());
                self.violation(s);
                FileState::Linked
            }
        }
    }

    fn fsync(&mut self, fd: Fd) {
        if !self.objs.contains_key(&fd) {
            self.violation(format!("fsync of fd {fd}, not open"));
        }
    }

    fn shutdown(&mut self, fd: Fd) {
        self.note(format!("shutdown fd {fd}"));
        match self.objs.get_mut(&fd) {
            Some(Obj::Stream(ci)) => {
                let ci = *ci;
                self.conns[ci].shut = true;
            }
            Some(Obj::Listener { shut, .. }) => *shut = true,
            Some(_) => {}
            None => self.violation(format!("shutdown of fd {fd}, not open")),
        }
    }

    fn close(&mut self, fd: Fd) {
        self.note(format!("close fd {fd}"));
        if let Some(p) = self
            .pending
            .iter()
            .find(|p| Self::op_fd(&p.op) == Some(fd) && !(p.final_queued && p.owed == 0))
        {
            let s = format!(
                "fd {fd} closed while #{} {:?} is in flight on it",
                p.id, p.op
            );
            self.violation(s);
        }
        match self.objs.remove(&fd) {
            Some(Obj::Stream(ci)) => {
                let c = &mut self.conns[ci];
                c.closed = true;
                c.shut = true;
            }
            Some(Obj::Listener { .. }) => {
                // Connections waiting in its backlog are reset.
                if let Some(q) = self.backlog.remove(&fd) {
                    for ci in q {
                        self.conns[ci].gone = true;
                        self.conns[ci].closed = true;
                    }
                }
            }
            Some(Obj::File(..)) => self.files.closed(fd),
            Some(_) => {}
            None => self.violation(format!("close of fd {fd}, not open")),
        }
        self.closed_fds += 1;
    }

    fn peer(&mut self, fd: Fd) -> (String, Option<IpAddr>) {
        (format!("peer-of-{fd}"), Some(IpAddr::from([127, 0, 0, 1])))
    }

    fn set_sndbuf(&mut self, _fd: Fd, _bytes: u64) {}

    fn readable(&mut self, fd: Fd) -> bool {
        self.udp_chan(fd)
            .is_some_and(|c| self.udp_in.get(&c).is_some_and(|q| !q.is_empty()))
    }

    fn rcvbuf(&mut self, _fd: Fd) -> u64 {
        // A few dozen of the simulation's datagrams: a drain that never ends is caught.
        16_384
    }

    fn set_keepalive(&mut self, fd: Fd, _k: ringrelay::config::keepalive::Keepalive) {
        match self.stream(fd) {
            Some(ci) => self.conns[ci].keepalive = true,
            None => self.violation(format!("keepalive on fd {fd}: not a stream")),
        }
    }

    fn set_nonblocking(&mut self, _fd: Fd) -> io::Result<()> {
        Ok(())
    }

    fn pipe(&mut self, _size: u32) -> io::Result<Pipe> {
        let read = self.fd(Obj::Pipe);
        let write = self.fd(Obj::Pipe);
        Ok(Pipe {
            read,
            write,
            cap: 65536,
            shrunk: false,
        })
    }

    fn publisher(
        &mut self,
        cfg: &ringrelay::config::ChannelConfig,
    ) -> Result<Box<dyn Publish>, String> {
        Err(format!("channel {}: no shared memory here", cfg.name))
    }

    fn open_buf_ring(&mut self, group: u16, _entries: u16) -> bool {
        if self.groups.contains_key(&group) {
            self.violation(format!("buffer group {group} opened twice"));
        }
        self.groups.insert(group, VecDeque::new());
        true
    }

    fn provide(&mut self, group: u16, bufs: &[BufId]) {
        match self.groups.get_mut(&group) {
            Some(g) => g.extend(bufs.iter().copied()),
            None => self.violation(format!("buffers provided to closed group {group}")),
        }
    }

    fn close_buf_ring(&mut self, group: u16) -> bool {
        let armed = self.pending.iter().any(|p| {
            matches!(p.op, Op::RecvMulti { group: g, .. } if g == group)
                && !(p.final_queued && p.owed == 0)
        });
        if armed {
            self.violation(format!(
                "buffer group {group} closed while its multishot receive is in flight"
            ));
        }
        self.groups.remove(&group);
        true
    }

    fn cap_workers(&mut self, _n: u32) -> io::Result<()> {
        Ok(())
    }

    fn spool_open(&mut self, dir: &Path) -> io::Result<SpoolFiles> {
        self.spool_open_sim(dir)
    }

    fn spool_create(&mut self, dir: &Path, seq: u64) -> io::Result<Fd> {
        self.spool_create_sim(dir, seq)
    }

    fn spool_remove(&mut self, dir: &Path, seq: u64) {
        self.spool_remove_sim(dir, seq)
    }
}
