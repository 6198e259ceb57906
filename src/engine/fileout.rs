//! File outputs (`file://`): rotation, noticing a file or directory that went away, and how a
//! faulted file output gives way to its channel.
//!
//! Owns: [`FileOut`] (the path, size and rotation of one output file, and its fault state),
//! the periodic check of the open file against its path ([`Sys::file_state`] every
//! [`FILE_CHECK`]), rotation before a write (`rotate_if_due`), and the file's fault life:
//!
//! - A fault (a write or a rotation that failed, the file deleted or its directory removed,
//!   the path naming another file) is counted and logged once ([`Output::fault`]); the file
//!   is closed at once (its writes in flight complete first) and opened again by the timer
//!   with backoff. Opening creates the file, never a missing directory: an output whose
//!   directory is gone stays faulted until someone creates the directory again.
//! - For `fault_grace` the output holds what arrives (a `block` output blocks its channel,
//!   as when it is slow). Then it drops, counted, until it recovers: the other outputs of a
//!   `block` channel keep flowing. Both transitions are logged once.
//! - It recovers at the first write into the reopened file (or at the reopen, when nothing
//!   waits to be written).
//!
//! Bytes written into a file after it was deleted and before the check noticed (at most
//! about [`FILE_CHECK`]) go into the deleted file: the kernel accepts them.
//!
//! Must never: create a directory, or drop a chunk a write in flight still carries (the
//! drops begin only once no write is in flight on the output).
//!
//! [`Sys::file_state`]: super::io::Sys::file_state

use super::channel::{Channel, Link, Output, Role};
use super::input::post_reads;
use super::io::FileState;
use super::links::close_ep;
use super::Cx;
use crate::config::units::format_duration;
use crate::config::url::Endpoint;
use log::{info, warn};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often an open output file is checked against its path.
pub const FILE_CHECK: Duration = Duration::from_secs(1);

/// An output file: where it is, how big, its rotation, and its fault state.
#[derive(Debug)]
pub struct FileOut {
    pub path: PathBuf,
    pub size: u64,
    pub rotate: Option<u64>,
    pub keep: u32,
    /// When the open file is checked against its path next (`None`: at the next tick).
    pub check_at: Option<Instant>,
    /// Dropping since `fault_grace` ran out: the output's drop count when it began.
    pub dropping: Option<u64>,
}

impl FileOut {
    /// The file of output `ep` (a `file://` URL), `size` bytes long when opened.
    pub fn new(path: PathBuf, size: u64, ep: &Endpoint) -> FileOut {
        FileOut {
            path,
            size,
            rotate: ep.opts.rotate,
            keep: ep.opts.keep.unwrap_or(10),
            check_at: None,
            dropping: None,
        }
    }
}

/// Whether output `o` is a faulted file output past its `fault_grace`: it drops what
/// arrives until it is open again.
pub(crate) fn dropping(o: &Output) -> bool {
    o.file.as_ref().is_some_and(|f| f.dropping.is_some())
}

/// Whether a write of output `oi` is in flight, on its file or on one it closed: a closed
/// file's write still carries chunks at the front of the queue, so the file is not opened
/// again (which would write them a second time) and nothing is dropped until it completes.
pub(crate) fn writing(ch: &Channel, oi: usize) -> bool {
    ch.slots
        .iter()
        .flatten()
        .any(|e| e.role == (Role::Link { out: oi }) && e.write_ops > 0)
}

/// A fault of file output `oi`: counted, logged once per fault episode (`what` gets the URL),
/// its file closed and opened again by the timer after the backoff delay. What it holds stays
/// queued.
pub(crate) fn fault(
    cx: &mut Cx,
    ch: &mut Channel,
    ci: u16,
    oi: usize,
    what: impl FnOnce(&str) -> String,
) {
    let o = &mut ch.outputs[oi];
    let grace = format_duration(o.cfg.fault_grace);
    o.fault(cx.now, log::Level::Error, |url| {
        format!(
            "{}; reopening with backoff (data held for fault_grace={grace}, then dropped)",
            what(url)
        )
    });
    if let Some(slot) = o.link {
        close_ep(cx, ch, ci, slot);
    }
}

/// The file of output `oi` was opened (at start, or again after a fault). It recovers now if
/// nothing waits to be written; else its first write decides ([`recovered`]).
pub(crate) fn opened(ch: &mut Channel, oi: usize) {
    let name = &ch.cfg.name;
    let o = &mut ch.outputs[oi];
    if o.connected_once {
        o.stats.reconnects += 1;
        info!("channel {name}: output {} reopened", o.url());
    } else {
        info!("channel {name}: output {} opened", o.url());
    }
    o.connected_once = true;
    if let Some(f) = o.file.as_mut() {
        f.check_at = None;
    }
    if o.faulted && o.queue.is_empty() {
        recovered(name, o);
    }
}

/// A write into file output `o` went through: if it was faulted, it has recovered.
pub(crate) fn recovered(channel: &str, o: &mut Output) {
    if !o.faulted {
        return;
    }
    o.faulted = false;
    o.backoff.reset();
    let dropped = o
        .file
        .as_mut()
        .and_then(|f| f.dropping.take())
        .map(|at| o.stats.drops - at);
    match dropped {
        Some(n) => warn!(
            "channel {channel}: output {} recovered: writing again, no longer dropping ({n} chunks dropped while it was faulted)",
            o.url()
        ),
        None => info!(
            "channel {channel}: output {} recovered: writing again, nothing dropped",
            o.url()
        ),
    }
}

/// Before a write of file output `oi` on endpoint `slot`: rotates the file when the next
/// chunk would take it past `rotate=`. Returns false when the rotation failed (the output is
/// faulted and its file closed: nothing may be written now).
pub(crate) fn rotate_if_due(cx: &mut Cx, ch: &mut Channel, ci: u16, slot: u16, oi: usize) -> bool {
    let Channel { slots, outputs, .. } = &mut *ch;
    let o = &mut outputs[oi];
    let (Some(f), Some(front)) = (o.file.as_mut(), o.queue.front()) else {
        return true;
    };
    let Some(limit) = f.rotate else { return true };
    if f.size == 0 || f.size + u64::from(front.len) <= limit {
        return true;
    }
    let Some(ep) = slots.get_mut(slot as usize).and_then(|e| e.as_mut()) else {
        return true;
    };
    match cx.sys.rotate(&f.path, f.keep) {
        Ok(new_fd) => {
            // Nothing is in flight on the old file: a file output has no operation but its
            // writes, and none is (the caller checked write_ops).
            cx.sys.fsync(ep.fd);
            cx.sys.close(ep.fd);
            ep.fd = new_fd;
            f.size = 0;
            f.check_at = None;
            info!("output {}: rotated", o.url());
            true
        }
        Err(e) => {
            let name = ch.cfg.name.clone();
            fault(cx, ch, ci, oi, |url| {
                format!("channel {name}: output {url}: rotation failed: {e}")
            });
            false
        }
    }
}

/// The timer's work for the file outputs of a channel: check each open file against its
/// path, and start dropping for those faulted longer than their `fault_grace`.
pub(crate) fn tick(cx: &mut Cx, ch: &mut Channel, ci: u16, now: Instant) {
    for oi in 0..ch.outputs.len() {
        if ch.outputs[oi].file.is_none() {
            continue;
        }
        check(cx, ch, ci, oi, now);
        begin_dropping(cx, ch, ci, oi, now);
    }
}

/// Checks the open file of output `oi` against its path, once per [`FILE_CHECK`].
fn check(cx: &mut Cx, ch: &mut Channel, ci: u16, oi: usize, now: Instant) {
    let Channel { slots, outputs, .. } = &mut *ch;
    let o = &mut outputs[oi];
    let Some(slot) = o.link else { return };
    let Some(ep) = slots.get(slot as usize).and_then(|e| e.as_ref()) else {
        return;
    };
    let Some(f) = o.file.as_mut() else { return };
    if ep.link != Link::Up || f.check_at.is_some_and(|t| now < t) {
        return;
    }
    f.check_at = Some(now + FILE_CHECK);
    let path = f.path.display().to_string();
    let why = match cx.sys.file_state(ep.fd, &f.path) {
        FileState::Linked => return,
        FileState::Deleted => "the file was deleted (or its directory removed)".to_string(),
        FileState::Replaced => format!("{path} names another file now (moved or replaced)"),
    };
    let name = ch.cfg.name.clone();
    fault(cx, ch, ci, oi, |url| {
        format!("channel {name}: output {url}: {why}")
    });
}

/// Output `oi` has been faulted for its `fault_grace`: from now on it drops what arrives
/// until it is open again, beginning with what it holds (but for a chunk already partly
/// written, whose rest goes first into the next file), and its channel reads again if it
/// alone blocked it. Waits while a write of the output is still in flight.
fn begin_dropping(cx: &mut Cx, ch: &mut Channel, ci: u16, oi: usize, now: Instant) {
    let o = &ch.outputs[oi];
    let due = o.faulted
        && o.link.is_none()
        && o.fault_since.is_some_and(|t| now >= t + o.cfg.fault_grace)
        && o.file.as_ref().is_some_and(|f| f.dropping.is_none());
    if !due {
        return;
    }
    if writing(ch, oi) {
        return;
    }
    let o = &mut ch.outputs[oi];
    let at = o.stats.drops;
    let before = o.queue.backlog();
    let dropped = o.queue.drop_unsent();
    let held = before - o.queue.backlog();
    o.stats.drops += dropped.len() as u64;
    for b in dropped {
        cx.pool.release(b);
    }
    if let Some(f) = o.file.as_mut() {
        f.dropping = Some(at);
    }
    warn!(
        "channel {}: output {}: faulted for fault_grace={}: dropping its data until it recovers ({held} bytes held dropped)",
        ch.cfg.name,
        o.url(),
        format_duration(o.cfg.fault_grace)
    );
    if ch.blocked && ch.may_unblock() {
        ch.blocked = false;
        post_reads(cx, ch, ci);
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::io::FileState;
    use crate::engine::testkit::Rig;
    use crate::engine::token::OpKind;
    use std::path::PathBuf;
    use std::time::Duration;

    /// A producer's stream to a file that holds at most one buffer (`block`, the file's
    /// default) and to subscribers.
    const CONF: &str = "[global]\nbuffer_size = 4KiB\nbuffer_count = 32\ndatagram_count = 0\n\
        [channel f]\ninput = tcp-listen://127.0.0.1:5000\n\
        output = file:///srv/f.raw max_backlog=4KiB fault_grace=1s\n\
        output = tcp-listen://127.0.0.1:6000\n";

    #[test]
    fn a_deleted_file_is_reopened_and_gives_way_after_fault_grace() {
        let mut rig = Rig::new(CONF);
        let file_fd = rig.fd(0, rig.chan(0).outputs[0].link);
        let accept = rig.accept_token(rig.fd(0, rig.chan(0).input_listener));
        rig.take();
        rig.accept_from(accept, None);
        let read = rig.subs_of(OpKind::Recv)[0].token;
        rig.take();

        // The file is deleted and its directory with it: the next check notices, the file is
        // closed and reopening fails until the directory is back.
        rig.sys.file_states.push((file_fd, FileState::Deleted));
        rig.sys.open_fails = u32::MAX;
        rig.tick(Duration::from_millis(100));
        assert_eq!(rig.sys.file_checks, [file_fd]);
        assert_eq!(rig.sys.closes, [file_fd]);
        let o = &rig.chan(0).outputs[0];
        assert!(o.faulted && o.link.is_none());
        assert_eq!(o.stats.errors, 1);

        // What arrives meanwhile is held (block): over the limit, the input stops.
        rig.complete(read, 3 * 4096);
        assert!(rig.chan(0).blocked);
        assert_eq!(rig.chan(0).outputs[0].queue.len(), 3);
        assert!(rig.subs_of(OpKind::Recv).is_empty());
        rig.take();

        // fault_grace (1s) later it drops what it holds, counted, and the input reads again.
        for _ in 0..5 {
            rig.tick(Duration::from_millis(100));
        }
        assert!(rig.chan(0).blocked, "still within fault_grace");
        for _ in 0..6 {
            rig.tick(Duration::from_millis(100));
        }
        let o = &rig.chan(0).outputs[0];
        assert!(super::dropping(o));
        assert!(o.queue.is_empty());
        assert_eq!(o.stats.drops, 3);
        assert!(!rig.chan(0).blocked);
        let read = rig.subs_of(OpKind::Recv)[0].token;
        rig.take();
        // While it cannot open its file, what arrives is dropped at once.
        rig.complete(read, 4096);
        assert_eq!(rig.chan(0).outputs[0].stats.drops, 4);
        assert!(rig.chan(0).outputs[0].queue.is_empty());
        assert!(rig.sys.opens.is_empty());

        // The directory is back: the file is created again within the backoff (at most 30s)
        // and, with nothing waiting, the output has recovered.
        rig.sys.open_fails = 0;
        for _ in 0..300 {
            rig.tick(Duration::from_millis(100));
            if !rig.sys.opens.is_empty() {
                break;
            }
        }
        assert_eq!(rig.sys.opens.len(), 1);
        assert_eq!(rig.sys.opens[0].0, PathBuf::from("/srv/f.raw"));
        let o = &rig.chan(0).outputs[0];
        assert!(!o.faulted && !super::dropping(o));
        assert_eq!(rig.fd(0, o.link), rig.sys.opens[0].1);
        // The deletion, and each open that failed.
        assert!(o.stats.errors > 1, "{:?}", o.stats);
    }
}
