//! Fixtures for the engine's unit tests: a [`FakeSys`] that hands out descriptor numbers and
//! records every call the engine makes through it, and a [`Rig`]: an [`Engine`] started from a
//! configuration text on a fixed kernel ([`caps`]: no splice, no zero-copy, no multishot
//! receive), with its pool, a [`VecMemory`] arena and the [`Effects`] it fills.
//!
//! Owns: nothing the relay runs on. Tests read what the engine asked for in `rig.fx` (or
//! [`Rig::take`]), answer with [`Rig::complete`] using the tokens found there, and look at the
//! engine's books directly (they are visible to the engine's own modules).

use super::buffers::{BufferPool, VecMemory};
use super::caps::Caps;
use super::channel::Channel;
use super::io::{
    Bound, Completion, Dialing, Effects, Fd, FileState, Op, Pipe, Publish, SpoolFiles, Submission,
    Sys,
};
use super::token::{OpKind, Token};
use super::{Engine, Io};
use crate::config::keepalive::Keepalive;
use crate::config::url::{Endpoint, Scheme};
use crate::config::{ChannelConfig, Config};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The outside world of a test: every descriptor is a fresh number, every call is recorded.
#[derive(Debug)]
pub(crate) struct FakeSys {
    next_fd: Fd,
    /// Names of the channels bound, in order.
    pub binds: Vec<String>,
    pub closes: Vec<Fd>,
    pub shutdowns: Vec<Fd>,
    /// URLs dialed (inputs and outputs).
    pub dials: Vec<String>,
    /// Whether a dial is still in progress when it returns (else connected at once).
    pub dial_in_progress: bool,
    /// The address `peer` reports for any socket.
    pub peer_ip: Option<IpAddr>,
    /// Sockets `readable` says hold data.
    pub readable: Vec<Fd>,
    /// Files opened for appending, with the descriptor each got.
    pub opens: Vec<(PathBuf, Fd)>,
    /// Opens still to fail with ENOENT (a missing directory).
    pub open_fails: u32,
    /// Rotations still to fail with ENOENT.
    pub rotate_fails: u32,
    /// What `file_state` reports for a descriptor (`Linked` when not listed).
    pub file_states: Vec<(Fd, FileState)>,
    /// Descriptors `file_state` was asked about, in order.
    pub file_checks: Vec<Fd>,
    /// Keepalives turned on: (descriptor, idle seconds).
    pub keepalives: Vec<(Fd, u32)>,
}

impl FakeSys {
    pub fn new() -> FakeSys {
        FakeSys {
            next_fd: 100,
            binds: Vec::new(),
            closes: Vec::new(),
            shutdowns: Vec::new(),
            dials: Vec::new(),
            dial_in_progress: false,
            peer_ip: Some("127.0.0.1".parse().unwrap()),
            readable: Vec::new(),
            opens: Vec::new(),
            open_fails: 0,
            rotate_fails: 0,
            file_states: Vec::new(),
            file_checks: Vec::new(),
            keepalives: Vec::new(),
        }
    }

    /// A descriptor number never handed out before (an accepted socket's).
    pub fn fd(&mut self) -> Fd {
        self.next_fd += 1;
        self.next_fd
    }
}

impl Sys for FakeSys {
    fn bind(&mut self, cfg: &ChannelConfig) -> Result<Bound, String> {
        self.binds.push(cfg.name.clone());
        let mut b = Bound::default();
        match cfg.input.scheme {
            Scheme::Udp => b.input = Some(self.fd()),
            Scheme::TcpListen | Scheme::UnixListen => b.input_listener = Some(self.fd()),
            _ => {}
        }
        for o in &cfg.outputs {
            let opened = match o.endpoint.scheme {
                Scheme::Tcp | Scheme::Unix => None,
                _ => Some((self.fd(), 0)),
            };
            b.outputs.push(opened);
        }
        Ok(b)
    }

    fn dial(&mut self, ep: &Endpoint) -> io::Result<Dialing> {
        self.dials.push(ep.url());
        Ok(Dialing {
            fd: self.fd(),
            in_progress: self.dial_in_progress,
        })
    }

    fn finish_connect(&mut self, _fd: Fd) -> io::Result<()> {
        Ok(())
    }

    fn open_serial(&mut self, ep: &Endpoint) -> io::Result<(Fd, String)> {
        self.dials.push(ep.url());
        if self.open_fails > 0 {
            self.open_fails -= 1;
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok((self.fd(), "/dev/ttyFAKE0".into()))
    }

    fn udp_output(&mut self, _ep: &Endpoint) -> io::Result<Fd> {
        Ok(self.fd())
    }

    fn open_append(&mut self, path: &Path) -> io::Result<(Fd, u64)> {
        if self.open_fails > 0 {
            self.open_fails -= 1;
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let fd = self.fd();
        self.opens.push((path.to_path_buf(), fd));
        Ok((fd, 0))
    }

    fn rotate(&mut self, _path: &Path, _keep: u32) -> io::Result<Fd> {
        if self.rotate_fails > 0 {
            self.rotate_fails -= 1;
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(self.fd())
    }

    fn fsync(&mut self, _fd: Fd) {}

    fn file_state(&mut self, fd: Fd, _path: &Path) -> FileState {
        self.file_checks.push(fd);
        self.file_states
            .iter()
            .find(|(f, _)| *f == fd)
            .map_or(FileState::Linked, |(_, s)| *s)
    }

    fn shutdown(&mut self, fd: Fd) {
        self.shutdowns.push(fd);
    }

    fn close(&mut self, fd: Fd) {
        self.closes.push(fd);
    }

    fn peer(&mut self, fd: Fd) -> (String, Option<IpAddr>) {
        (format!("peer-{fd}"), self.peer_ip)
    }

    fn set_sndbuf(&mut self, _fd: Fd, _bytes: u64) {}

    fn readable(&mut self, fd: Fd) -> bool {
        self.readable.contains(&fd)
    }

    fn rcvbuf(&mut self, _fd: Fd) -> u64 {
        212_992
    }

    fn set_keepalive(&mut self, fd: Fd, k: Keepalive) {
        self.keepalives.push((fd, k.idle));
    }

    fn set_nonblocking(&mut self, _fd: Fd) -> io::Result<()> {
        Ok(())
    }

    fn pipe(&mut self, _size: u32) -> io::Result<Pipe> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }

    fn publisher(&mut self, cfg: &ChannelConfig) -> Result<Box<dyn Publish>, String> {
        Err(format!("channel {}: no regions in unit tests", cfg.name))
    }

    fn open_buf_ring(&mut self, _group: u16, _entries: u16) -> bool {
        false
    }

    fn provide(&mut self, _group: u16, _bufs: &[u16]) {}

    fn close_buf_ring(&mut self, _group: u16) -> bool {
        true
    }

    fn cap_workers(&mut self, _n: u32) -> io::Result<()> {
        Ok(())
    }

    fn spool_open(&mut self, _dir: &Path) -> io::Result<SpoolFiles> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }

    fn spool_create(&mut self, _dir: &Path, _seq: u64) -> io::Result<Fd> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }

    fn spool_remove(&mut self, _dir: &Path, _seq: u64) {}
}

/// The kernel of every rig: no splice or tee, no zero-copy send, single-shot receives.
pub(crate) fn caps() -> Caps {
    Caps {
        multishot_recvmsg: false,
        send_zc: false,
        cq_entries: 256,
        ops: vec![("SPLICE", false), ("TEE", false)],
        ..Caps::default()
    }
}

/// The configuration in `text` (panics on an invalid one).
pub(crate) fn config(text: &str) -> Config {
    crate::config::parse_str("test.conf", text).unwrap_or_else(|e| panic!("{e:?}"))
}

/// An engine started over a [`FakeSys`], and what it talks to.
pub(crate) struct Rig {
    pub engine: Engine,
    pub sys: FakeSys,
    pub mem: VecMemory,
    pub fx: Effects,
    pub now: Instant,
}

impl Rig {
    /// Parses `text`, books the pool it asks for and starts every channel.
    pub fn new(text: &str) -> Rig {
        Rig::with_sys(text, FakeSys::new())
    }

    /// [`Rig::new`] over a prepared `sys` (say, dials that stay in progress).
    pub fn with_sys(text: &str, mut sys: FakeSys) -> Rig {
        let cfg = config(text);
        let g = &cfg.global;
        let pool = BufferPool::for_global(g);
        let mem = VecMemory::new(&pool);
        let bound: Vec<Bound> = cfg.channels.iter().map(|c| sys.bind(c).unwrap()).collect();
        let now = Instant::now();
        let mut rig = Rig {
            engine: Engine::new(cfg, caps(), pool, 1, now),
            sys,
            mem,
            fx: Effects::default(),
            now,
        };
        rig.io(|e, io| e.start(bound, io)).expect("start");
        rig
    }

    /// Runs `f` with the engine and an [`Io`] over this rig.
    pub fn io<R>(&mut self, f: impl FnOnce(&mut Engine, &mut Io) -> R) -> R {
        let mut io = Io {
            now: self.now,
            fx: &mut self.fx,
            sys: &mut self.sys,
            mem: &mut self.mem,
        };
        f(&mut self.engine, &mut io)
    }

    /// Hands the engine the completion of `tok` (flags 0: final, no buffer).
    pub fn complete(&mut self, tok: Token, res: i32) {
        let c = Completion {
            user_data: tok.encode(),
            res,
            flags: 0,
        };
        self.io(|e, io| e.complete(c, io));
    }

    pub fn after_batch(&mut self) {
        self.io(|e, io| e.after_batch(io));
    }

    /// Lets `d` pass and runs the timer as the driver does (a tick, then the batch's end).
    pub fn tick(&mut self, d: std::time::Duration) {
        self.now += d;
        self.io(|e, io| {
            e.tick(io, 0);
            e.after_batch(io);
        });
    }

    /// Reloads with the configuration in `text`.
    pub fn reload(&mut self, text: &str) {
        let cfg = config(text);
        self.io(|e, io| e.reload(cfg, "test.conf", io));
    }

    /// Takes everything submitted so far (the driver's part).
    pub fn take(&mut self) -> Effects {
        std::mem::take(&mut self.fx)
    }

    /// The token of the one submission (since the last [`Rig::take`]) that matches `pred`.
    pub fn token_of(&self, pred: impl Fn(&Submission) -> bool) -> Token {
        let mut found = self.fx.subs.iter().filter(|s| pred(s));
        let s = found.next().expect("no such submission");
        assert!(found.next().is_none(), "more than one such submission");
        s.token
    }

    /// The submissions of `kind` since the last [`Rig::take`].
    pub fn subs_of(&self, kind: OpKind) -> Vec<Submission> {
        self.fx
            .subs
            .iter()
            .filter(|s| s.token.kind == kind)
            .copied()
            .collect()
    }

    /// Channel `ci` (panics on a free slot).
    pub fn chan(&self, ci: usize) -> &Channel {
        self.engine.channels()[ci]
            .as_ref()
            .expect("channel slot is free")
    }

    /// The descriptor of endpoint `slot` of channel `ci`.
    pub fn fd(&self, ci: usize, slot: Option<u16>) -> Fd {
        self.chan(ci)
            .ep(slot.expect("no endpoint"))
            .expect("slot is free")
            .fd
    }

    /// The token of the accept armed on listener `fd`.
    pub fn accept_token(&self, fd: Fd) -> Token {
        self.token_of(|s| s.op == Op::Accept { fd } && s.token.kind == OpKind::Accept)
    }

    /// Completes the accept `tok` with a new connection from `ip`; returns its descriptor.
    pub fn accept_from(&mut self, tok: Token, ip: Option<IpAddr>) -> Fd {
        self.sys.peer_ip = ip;
        let fd = self.sys.fd();
        self.complete(tok, fd);
        fd
    }
}
