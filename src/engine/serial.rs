//! A `serial://` input's life: the port opened through [`super::io::Sys::open_serial`] (as a
//! dialed producer is dialed, with the same backoff and counters), read through the ring as a
//! stream ([`super::input::post_reads`]), and opened again when the device goes away.
//!
//! Owns: what counts as "gone" and the log lines of each change, once per change:
//! - a read that ends (EIO or ENODEV when a USB adapter is pulled or a pty's master closed, the
//!   end of file a hung-up tty reads) closes the port ([`gone`] names why);
//! - on every tick, the path is checked against the open port ([`tick`]): when it names
//!   nothing, or another device or inode than the one open (the adapter came back as a new
//!   node behind the same `/dev/serial/by-id` link), the port is closed;
//! - the port is then opened again with the input's backoff, the path followed anew at every
//!   open; failed opens after the first are logged at debug level only.
//!
//! Nothing else of the channel changes: its outputs and subscribers stay connected and get the
//! bytes of the next open. Must never: shut a tty down as a socket at a stop (a serial port
//! has no end of stream to wait for: it is closed at once, see
//! [`super::links::close_intake`]).

use super::channel::{Channel, Endpoint, Link, Role};
use super::io::FileState;
use super::links::close_ep;
use super::{errno_str, input::post_reads, Cx};
use crate::config::url::{Scheme, Target};
use log::{debug, info, warn};
use std::time::Instant;

/// What an error opening the port usually means, for its log line.
fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => " (not plugged in yet?)",
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (the relay's user needs the port's group, usually dialout)"
        }
        Some(libc::ENOTTY) => " (not a terminal: the path is no serial port)",
        Some(libc::EBUSY) => " (another program holds it)",
        _ => "",
    }
}

/// Opens the serial port of channel `ci`'s input, or schedules the next attempt.
pub(crate) fn open_input(cx: &mut Cx, ch: &mut Channel, ci: u16, now: Instant) {
    ch.input_retry_at = None;
    let url = ch.cfg.input.url();
    match cx.sys.open_serial(&ch.cfg.input) {
        Ok((fd, device)) => {
            let mut ep = Endpoint::new(cx.gens.fresh(), Role::Input, fd, Link::Up);
            ep.peer = device.clone();
            let slot = ch.insert(ep);
            ch.input = Some(slot);
            ch.input_backoff.reset();
            if ch.input_faulted {
                ch.stats.reconnects += 1;
                info!(
                    "channel {}: serial port {url} reopened ({device})",
                    ch.name()
                );
            } else {
                let params = ch.cfg.input.opts.serial.unwrap_or_default();
                info!(
                    "channel {}: serial port {url} opened ({device}, {params})",
                    ch.name()
                );
            }
            ch.input_faulted = true;
            post_reads(cx, ch, ci);
        }
        Err(e) => {
            ch.stats.errors += 1;
            let d = ch.input_backoff.next_delay();
            if ch.input_backoff.failures() == 1 {
                warn!(
                    "channel {}: cannot open serial port {url}: {e}{}; retrying with backoff",
                    ch.name(),
                    hint(&e)
                );
            } else {
                debug!(
                    "channel {}: cannot open serial port {url}: {e}; next try in {d:?}",
                    ch.name()
                );
            }
            ch.input_retry_at = Some(now + d);
        }
    }
}

/// The log line of a serial input whose read ended with `res` (0: end of file, a hung-up
/// tty; else an errno). The caller closes it and schedules the reopen.
pub(crate) fn gone(ch: &Channel, device: &str, res: i32) {
    let why = if res == 0 {
        "hang-up".to_string()
    } else {
        format!("read failed: {}", errno_str(res))
    };
    warn!(
        "channel {}: serial port {} ({device}) gone ({why}); reopening with backoff once it is back",
        ch.name(),
        ch.cfg.input.url()
    );
}

/// Checks an open serial input against its path: a path that names nothing or another
/// device than the open one means the adapter was unplugged (or replugged as a new node).
pub(crate) fn tick(cx: &mut Cx, ch: &mut Channel, ci: u16, now: Instant) {
    if ch.cfg.input.scheme != Scheme::Serial {
        return;
    }
    let Target::Path(path) = &ch.cfg.input.target else {
        return;
    };
    let Some(slot) = ch.input else { return };
    let Some(ep) = ch.ep(slot) else { return };
    if ep.link != Link::Up {
        return;
    }
    let why = match cx.sys.file_state(ep.fd, path) {
        FileState::Linked => return,
        FileState::Deleted => "its path names nothing now (unplugged)",
        FileState::Replaced => "its path names another device now (replugged)",
    };
    warn!(
        "channel {}: serial port {} ({}) gone: {why}; reopening with backoff",
        ch.name(),
        ch.cfg.input.url(),
        ep.peer
    );
    let gen = ep.gen;
    ch.stats.errors += 1;
    // Its read is cancelled, but may still complete with bytes the old device held: the
    // next port's first read waits for it, so the two never interleave on the outputs.
    ch.mark_replaced(slot, gen);
    close_ep(cx, ch, ci, slot);
    let d = ch.input_backoff.next_delay();
    ch.input_retry_at = Some(now + d);
}

#[cfg(test)]
mod tests {
    use crate::engine::io::{FileState, Op};
    use crate::engine::testkit::{FakeSys, Rig};
    use crate::engine::token::OpKind;
    use std::time::Duration;

    const CONF: &str = "[global]\nbuffer_size = 4KiB\nbuffer_count = 16\ndatagram_count = 0\n\
        [channel s]\ninput = serial:///dev/serial/by-id/gps baud=4800\n\
        output = tcp-listen://127.0.0.1:6000\n";

    /// The one stream read in flight on `fd` since the last take, and its token.
    fn read_on(rig: &Rig, fd: i32) -> crate::engine::token::Token {
        rig.token_of(|s| {
            s.token.kind == OpKind::Recv
                && matches!(s.op, Op::ReadStream { fd: f, .. } | Op::ReadvStream { fd: f, .. } if f == fd)
        })
    }

    #[test]
    fn a_missing_port_is_retried_then_read_as_a_stream() {
        let mut sys = FakeSys::new();
        sys.open_fails = 3;
        let mut rig = Rig::with_sys(CONF, sys);
        assert_eq!(rig.sys.dials, ["serial:///dev/serial/by-id/gps"]);
        assert!(rig.chan(0).input.is_none());
        for _ in 0..100 {
            rig.tick(Duration::from_millis(100));
            if rig.chan(0).input.is_some() {
                break;
            }
        }
        assert_eq!(rig.sys.dials.len(), 4, "three failures, then the open");
        let fd = rig.fd(0, rig.chan(0).input);
        read_on(&rig, fd);
        assert_eq!(rig.chan(0).stats.errors, 3);
        assert_eq!(rig.chan(0).stats.reconnects, 0);
    }

    #[test]
    fn eio_closes_and_reopens_counting_a_reconnect() {
        let mut rig = Rig::new(CONF);
        let fd = rig.fd(0, rig.chan(0).input);
        let tok = read_on(&rig, fd);
        rig.take();
        rig.complete(tok, -libc::EIO);
        assert!(rig.chan(0).input.is_none());
        assert!(rig.sys.closes.contains(&fd));
        assert!(
            rig.chan(0).input_retry_at.is_some(),
            "reopened after a backoff"
        );
        for _ in 0..100 {
            rig.tick(Duration::from_millis(100));
            if rig.chan(0).input.is_some() {
                break;
            }
        }
        let fd2 = rig.fd(0, rig.chan(0).input);
        assert_ne!(fd, fd2);
        read_on(&rig, fd2);
        assert_eq!(rig.chan(0).stats.reconnects, 1);
        // The output's listener was never touched.
        assert!(rig.chan(0).outputs[0].listener.is_some());
    }

    #[test]
    fn a_path_naming_another_device_closes_the_port() {
        let mut rig = Rig::new(CONF);
        let fd = rig.fd(0, rig.chan(0).input);
        rig.tick(Duration::from_millis(100));
        assert_eq!(rig.chan(0).input.map(|s| rig.fd(0, Some(s))), Some(fd));
        assert!(rig.sys.file_checks.contains(&fd));
        rig.sys.file_states.push((fd, FileState::Replaced));
        rig.take();
        rig.tick(Duration::from_millis(100));
        // Closing: its read is cancelled; the slot goes when the read completes.
        let cancels = rig.subs_of(OpKind::Cancel);
        assert!(
            cancels
                .iter()
                .any(|c| matches!(c.op, Op::Cancel { target } if target.kind == OpKind::Recv)),
            "{:?}",
            rig.fx.subs
        );
        assert!(rig.chan(0).input.is_none());
        assert!(rig.chan(0).input_retry_at.is_some());
    }
}
