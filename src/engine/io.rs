//! The border between the engine and whatever runs it: the operations the engine asks for, the
//! completions it is handed, and the three interfaces it reaches the outside world through.
//!
//! Owns: [`Op`] (an asynchronous operation, as a value), [`Completion`] (what the kernel said
//! about one), [`Effects`] (what one call of the engine asks to submit), and the traits
//! [`Sys`] (synchronous set-up calls: sockets, files, pipes, provided-buffer rings),
//! [`Memory`] (the bytes of the buffer arena) and [`Publish`] (a channel's shared-memory
//! publisher). The real driver ([`crate::driver`]) implements them over io_uring and Linux;
//! the simulation (`tests/sim.rs`) implements them over a seeded model of the kernel. The
//! engine cannot tell the two apart.
//!
//! Must never: hold a pointer, open or close a descriptor, or read a clock. Descriptors are
//! plain numbers ([`Fd`]) that the outside world opened; the engine asks [`Sys::close`] to
//! close one once nothing is in flight on it.

use super::buffers::BufId;
use super::outq::Chunk;
use super::token::Token;
use crate::config::keepalive::Keepalive;
use crate::config::url::Endpoint as UrlEndpoint;
use crate::config::ChannelConfig;
use std::io;
use std::net::IpAddr;
use std::path::Path;

/// A descriptor number the outside world opened and owns until the engine asks to close it.
pub type Fd = i32;

/// `IORING_CQE_F_BUFFER`: the upper 16 bits of the flags name the buffer the kernel picked.
pub const CQE_F_BUFFER: u32 = 1 << 0;
/// `IORING_CQE_F_MORE`: more completions follow for the same submission.
pub const CQE_F_MORE: u32 = 1 << 1;
/// `IORING_CQE_F_NOTIF`: a zero-copy send's notification (the kernel let go of the buffer).
pub const CQE_F_NOTIF: u32 = 1 << 3;
/// Where the buffer id sits in the flags.
pub const CQE_BUFFER_SHIFT: u32 = 16;

/// One completion, as the kernel posted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub user_data: u64,
    pub res: i32,
    pub flags: u32,
}

impl Completion {
    /// More completions will follow for the same submission (multishot, zero-copy result).
    pub fn more(&self) -> bool {
        self.flags & CQE_F_MORE != 0
    }

    /// A zero-copy send's notification.
    pub fn notif(&self) -> bool {
        self.flags & CQE_F_NOTIF != 0
    }

    /// The buffer the kernel picked from a provided-buffer ring, if it picked one.
    pub fn buffer(&self) -> Option<BufId> {
        (self.flags & CQE_F_BUFFER != 0).then_some((self.flags >> CQE_BUFFER_SHIFT) as BufId)
    }
}

/// A run of chunks in [`Effects::chunks`], for an operation that names several buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub n: u32,
}

/// An asynchronous operation. Buffers are named by pool index, never by address: the driver
/// turns them into addresses and owns every iovec and msghdr until the completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Receive one datagram into `buf` at `off` (MSG_TRUNC: the result is the datagram's real
    /// length even when it did not fit).
    RecvDatagram {
        fd: Fd,
        buf: BufId,
        off: u32,
        len: u32,
    },
    /// Read the next bytes of a stream into `buf` at `off`.
    ReadStream {
        fd: Fd,
        buf: BufId,
        off: u32,
        len: u32,
    },
    /// Scattered read of the next bytes of a stream into whole buffers, in order.
    ReadvStream { fd: Fd, bufs: Span },
    /// Send a chunk on a socket (`socket`) or append it to a file.
    Write { fd: Fd, chunk: Chunk, socket: bool },
    /// Gathered write of several chunks.
    Writev { fd: Fd, chunks: Span },
    /// Zero-copy send of one chunk (Linux 6.0+): completes with its result, then (with
    /// MORE on the first) a notification.
    SendZc { fd: Fd, chunk: Chunk },
    /// One segmented UDP send (UDP_SEGMENT) of a run of datagrams of `seg` bytes (the last
    /// may be shorter).
    SendGso { fd: Fd, chunks: Span, seg: u16 },
    /// Multishot receive of datagrams into buffers picked from the ring of `group`.
    RecvMulti { fd: Fd, group: u16 },
    /// Accept a connection (multishot where the kernel has it).
    Accept { fd: Fd },
    /// Wait until `fd` is writable (a connect finished, or a splice may go on).
    PollOut { fd: Fd },
    /// Wait until `fd` is readable.
    PollIn { fd: Fd },
    /// Wait until the peer of `fd` sends bytes, hangs up or half-closes (POLLIN|POLLRDHUP).
    PollHangup { fd: Fd },
    /// Cancel the operation tagged `target`.
    Cancel { target: Token },
    /// Move up to `len` bytes from `fd_in` to `fd_out`, one of them a pipe.
    Splice { fd_in: Fd, fd_out: Fd, len: u32 },
    /// Duplicate `len` bytes from pipe `fd_in` into pipe `fd_out` without consuming them.
    Tee { fd_in: Fd, fd_out: Fd, len: u32 },
    /// Write a chunk to a file at `offset` (a spool segment or position file).
    WriteAt { fd: Fd, chunk: Chunk, offset: u64 },
    /// Gathered write of several chunks to a file at `offset` (a run of a spool's staged
    /// buffers, consecutive in the segment).
    WritevAt { fd: Fd, chunks: Span, offset: u64 },
    /// Read `len` bytes of a file at `offset` into `buf` (a spool segment, for replay).
    ReadAt {
        fd: Fd,
        buf: BufId,
        len: u32,
        offset: u64,
    },
    /// Flush a file's written bytes to its device (IORING_OP_FSYNC).
    Fsync { fd: Fd },
}

/// A spool directory as found at start: its segments (oldest first) with a scan of each
/// (a torn tail already cut off), and its position file.
#[derive(Debug, Default)]
pub struct SpoolFiles {
    /// (sequence number, descriptor, bytes of whole records, records, records before the
    /// recorded position).
    pub segments: Vec<(u64, Fd, u64, u64, u64)>,
    pub position: Vec<u8>,
    pub position_fd: Fd,
    /// Torn tails cut off, for the log: (segment, bytes cut).
    pub cut: Vec<(u64, u64)>,
}

/// One submission: an operation, its tag, and whether the next submission is linked to it
/// (IOSQE_IO_LINK: it starts when this one completed; a failure cancels the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submission {
    pub op: Op,
    pub token: Token,
    pub link: bool,
}

/// What one call of the engine asks the driver to submit. A linked chain is submitted whole
/// or not at all (the driver keeps it together across a full submission queue).
#[derive(Debug, Default)]
pub struct Effects {
    pub subs: Vec<Submission>,
    /// The chunks named by the [`Span`]s of this batch's operations.
    pub chunks: Vec<Chunk>,
}

impl Effects {
    /// Forgets what was submitted (the driver calls this once it has taken everything).
    pub fn clear(&mut self) {
        self.subs.clear();
        self.chunks.clear();
    }

    /// The chunks of `span`.
    pub fn span(&self, span: Span) -> &[Chunk] {
        &self.chunks[span.start as usize..(span.start + span.n) as usize]
    }
}

/// A non-blocking connect in progress (or done at once).
#[derive(Debug)]
pub struct Dialing {
    pub fd: Fd,
    pub in_progress: bool,
}

/// A pipe and the capacity the kernel gave it.
#[derive(Clone, Copy, Debug)]
pub struct Pipe {
    pub read: Fd,
    pub write: Fd,
    pub cap: u32,
    /// The kernel refused the size asked for (EPERM) and kept a smaller one.
    pub shrunk: bool,
}

/// What binding a channel's addresses opened: the input (a UDP socket), the input's listener,
/// and per output its listener, UDP socket or file (with the file's size), or nothing (a link
/// that is dialed once the loop runs).
#[derive(Debug, Default)]
pub struct Bound {
    pub input: Option<Fd>,
    pub input_listener: Option<Fd>,
    pub outputs: Vec<Option<(Fd, u64)>>,
}

/// What became of an open output file's name, as [`Sys::file_state`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState {
    /// The path still names the open file (also when that cannot be told: a stat that failed
    /// for another reason than a missing name).
    Linked,
    /// The open file has no name left (unlinked, or its directory removed), or the path
    /// names nothing.
    Deleted,
    /// The path names another file: the open one was moved away or replaced.
    Replaced,
}

/// A channel's shared-memory publisher: decimation into the region readers attach to.
pub trait Publish {
    fn feed_datagram(&mut self, datagram: &[u8]);
    fn feed_stream(&mut self, bytes: &[u8]);
    /// Once per tick: heartbeats.
    fn tick(&mut self);
    /// The channel is gone: mark the region closed.
    fn close(self: Box<Self>);
    /// Frames written into each of the channel's regions (level 0 first); empty when unknown.
    fn frames_written(&self) -> Vec<u64> {
        Vec::new()
    }
}

/// The bytes of the buffer arena. The engine's [`super::buffers::BufferPool`] says who owns
/// each buffer; it reads only buffers that hold data and writes only buffers it holds alone.
pub trait Memory {
    fn bytes(&self, buf: BufId, off: u32, len: u32) -> &[u8];
    fn write(&mut self, buf: BufId, off: u32, data: &[u8]);
    /// Copies `len` bytes of buffer `from` at `off` into buffer `to` at `to_off` (two
    /// different buffers). The default goes through a temporary copy.
    fn copy(&mut self, from: BufId, off: u32, len: u32, to: BufId, to_off: u32) {
        let data = self.bytes(from, off, len).to_vec();
        self.write(to, to_off, &data);
    }
}

/// Synchronous calls into the outside world: set-up and tear-down, never data.
pub trait Sys {
    /// Binds a channel's input and listening outputs, creates its UDP outputs and opens its
    /// files. An error names the channel and URL.
    fn bind(&mut self, cfg: &ChannelConfig) -> Result<Bound, String>;
    /// Starts a non-blocking connect to a `tcp://` or `unix://` endpoint.
    fn dial(&mut self, ep: &UrlEndpoint) -> io::Result<Dialing>;
    /// The outcome of a connect whose socket became writable.
    fn finish_connect(&mut self, fd: Fd) -> io::Result<()>;
    /// Opens the serial port of a `serial://` input (its path followed if it is a symlink, at
    /// every call) and sets it raw with the URL's line settings; returns it and the device
    /// node it names, for log lines. Not a terminal, missing or refused: an error.
    fn open_serial(&mut self, ep: &UrlEndpoint) -> io::Result<(Fd, String)>;
    /// A connected UDP socket for a `udp://` output.
    fn udp_output(&mut self, ep: &UrlEndpoint) -> io::Result<Fd>;
    /// Opens `path` for appending; returns it and its size.
    fn open_append(&mut self, path: &Path) -> io::Result<(Fd, u64)>;
    /// Rotates `path` (NAME -> NAME.1 -> ... keeping `keep`) and opens a fresh NAME.
    fn rotate(&mut self, path: &Path, keep: u32) -> io::Result<Fd>;
    fn fsync(&mut self, fd: Fd);
    /// Whether `path` still names the file open as `fd` (an output file's periodic check:
    /// fstat's link count, and stat of the path against the descriptor's device and inode).
    fn file_state(&mut self, fd: Fd, path: &Path) -> FileState;
    /// Shuts a socket down both ways (its operations in flight then complete).
    fn shutdown(&mut self, fd: Fd);
    /// Shuts the sending side of a socket down: the peer reads the end of the stream and may
    /// still send. A model that cannot half-close may ignore it (the metrics server then
    /// closes the connection at its linger deadline).
    fn shutdown_write(&mut self, fd: Fd) {
        let _ = fd;
    }
    /// Closes a descriptor nothing is in flight on any more.
    fn close(&mut self, fd: Fd);
    /// The peer of a connected socket: a printable name and its IP address.
    fn peer(&mut self, fd: Fd) -> (String, Option<IpAddr>);
    fn set_sndbuf(&mut self, fd: Fd, bytes: u64);
    /// Whether a datagram waits in an input socket (a poll that does not wait). At SIGTERM a
    /// datagram input is read until this says no.
    fn readable(&mut self, fd: Fd) -> bool;
    /// The receive buffer of an input socket, in bytes (what a SIGTERM drain reads at most).
    fn rcvbuf(&mut self, fd: Fd) -> u64;
    /// Turns TCP keepalive on for a connected (or connecting) TCP socket, with the probe
    /// schedule of `k` and a user timeout to match ([`crate::config::keepalive`]): a peer that
    /// vanished makes the socket's next operation fail with ETIMEDOUT.
    fn set_keepalive(&mut self, fd: Fd, k: Keepalive);
    fn set_nonblocking(&mut self, fd: Fd) -> io::Result<()>;
    /// A pipe of about `size` bytes.
    fn pipe(&mut self, size: u32) -> io::Result<Pipe>;
    /// The shared-memory publisher of channel `cfg`.
    fn publisher(&mut self, cfg: &ChannelConfig) -> Result<Box<dyn Publish>, String>;
    /// Maps and registers a provided-buffer ring of `entries` slots as buffer group `group`.
    fn open_buf_ring(&mut self, group: u16, entries: u16) -> bool;
    /// Publishes `bufs` in the ring of `group` (the kernel may pick them from now on).
    fn provide(&mut self, group: u16, bufs: &[BufId]);
    /// Unregisters the ring of `group`; false when the kernel refused (its buffers stay lent).
    fn close_buf_ring(&mut self, group: u16) -> bool;
    /// Caps the ring's unbounded io-wq workers (those socket splices block in).
    fn cap_workers(&mut self, n: u32) -> io::Result<()>;
    /// Opens the spool directory `dir` (created 0700 when missing; refused when others may
    /// write to it), scans its segments and cuts a torn tail, opens its position file.
    fn spool_open(&mut self, dir: &Path) -> io::Result<SpoolFiles>;
    /// Creates segment `seq` of the spool in `dir` (0600).
    fn spool_create(&mut self, dir: &Path, seq: u64) -> io::Result<Fd>;
    /// Removes segment `seq` of the spool in `dir` (its descriptor is closed by the caller).
    fn spool_remove(&mut self, dir: &Path, seq: u64);
}
