//! The idle watchdog of a channel's input (`idle_timeout=` on the input URL): a source that
//! stays connected but sends nothing (a half-dead modem link, a stuck rtl_tcp) must not hold
//! the input for good.
//!
//! Owns: [`Watchdog`] (when the input last brought bytes, and whether a datagram input is
//! marked idle) and [`tick`], which acts once the input has been silent for `idle_timeout`:
//!
//! | input | on timeout |
//! |---|---|
//! | dialed or reopened (`tcp://`, `unix://`, and any input the relay opens itself) | closed and opened again on the input's backoff ([`close_for_reopen`]) |
//! | a listened producer (`tcp-listen://`, `unix-listen://`) | disconnected; the listener stays and a new producer may connect |
//! | `udp://` | marked idle (state `idle` in the counters) until a datagram comes again |
//!
//! Each is logged once per state change and counted (`idle_timeouts`).
//!
//! Cost: [`Watchdog::fed`] is one `Instant` store per delivered buffer (called by
//! `input::deliver` and `splicing::on_splice_in`); the check runs on the 100 ms tick. The
//! watch starts when the input comes up (the tick sees a new input endpoint generation: a
//! connect, an accept, a bind), so an input that comes up and never sends is caught too. It
//! does not run down while the relay itself stops reading (a `block` output is full, or the
//! pool has no buffer for the read): that silence is the relay's, not the producer's.
//!
//! A new kind of input the relay opens itself (a serial port) gets the watchdog by being the
//! channel's `input` endpoint and by taking the dialed row of the table: [`tick`] picks the
//! action by scheme, and every scheme that is neither listened nor UDP is reopened.

use super::channel::{Channel, Link};
use super::links::close_ep;
use super::Cx;
use crate::config::units::format_duration;
use crate::config::url::Scheme;
use log::{info, warn};
use std::time::{Duration, Instant};

/// The watchdog state of one channel's input.
#[derive(Clone, Debug, Default)]
pub struct Watchdog {
    /// `idle_timeout`; `None`: no watchdog (the default).
    pub timeout: Option<Duration>,
    /// The generation of the input endpoint being watched (`None`: no input is up).
    watching: Option<u32>,
    /// The last input byte, or when the watched input came up.
    last: Option<Instant>,
    /// A datagram input marked idle (shown as the input's state).
    pub idle: bool,
}

impl Watchdog {
    pub fn new(timeout: Option<Duration>) -> Watchdog {
        Watchdog {
            timeout,
            ..Watchdog::default()
        }
    }

    /// Input bytes arrived at `now`. Returns whether the input was marked idle (the caller
    /// logs that data flows again, see [`data_again`]).
    #[inline]
    pub fn fed(&mut self, now: Instant) -> bool {
        self.last = Some(now);
        std::mem::take(&mut self.idle)
    }
}

/// A datagram input marked idle got data again: logged once.
#[cold]
pub(crate) fn data_again(ch: &Channel) {
    info!(
        "channel {}: input {}: data again after being idle",
        ch.name(),
        ch.cfg.input.url()
    );
}

/// The tick's check of one channel's input (see the module docs).
pub(crate) fn tick(cx: &mut Cx, ch: &mut Channel, ci: u16, now: Instant) {
    let Some(timeout) = ch.watchdog.timeout else {
        return;
    };
    let up = ch
        .input
        .and_then(|s| ch.ep(s).map(|e| (s, e)))
        .filter(|(_, e)| e.link == Link::Up)
        .map(|(s, e)| (s, e.gen, e.peer.clone()));
    let Some((slot, gen, peer)) = up.filter(|_| !ch.draining) else {
        ch.watchdog.watching = None;
        return;
    };
    let w = &mut ch.watchdog;
    if w.watching != Some(gen) {
        // A new input came up: the watch starts now.
        w.watching = Some(gen);
        w.last = Some(now);
        w.idle = false;
        return;
    }
    let datagram = ch.input_is_datagram();
    let paused = (ch.blocked && !datagram) || ch.input_starved || ch.input_retry_at.is_some();
    if paused {
        // The relay is not reading: not the source's silence.
        ch.watchdog.last = Some(now);
        return;
    }
    let w = &mut ch.watchdog;
    let since = w.last.unwrap_or(now);
    if w.idle || now.duration_since(since) < timeout {
        return;
    }
    let t = format_duration(timeout);
    ch.stats.idle_timeouts += 1;
    match ch.cfg.input.scheme {
        Scheme::Udp => {
            ch.watchdog.idle = true;
            warn!(
                "channel {}: input {}: no datagram for {t}: idle (idle_timeout)",
                ch.name(),
                ch.cfg.input.url()
            );
        }
        s if s.is_listen() => {
            warn!(
                "channel {}: producer {peer} sent nothing for {t}: disconnected (idle_timeout); waiting for a producer on {}",
                ch.name(),
                ch.cfg.input.url()
            );
            // As below: the next producer's first read waits for this one's last.
            ch.mark_replaced(slot, gen);
            close_ep(cx, ch, ci, slot);
        }
        _ => {
            warn!(
                "channel {}: producer {} sent nothing for {t}: closing it and opening it again (idle_timeout)",
                ch.name(),
                ch.cfg.input.url()
            );
            // The cancelled read may still return bytes: the next input's first read
            // waits for it, so the two streams never interleave on the outputs.
            ch.mark_replaced(slot, gen);
            close_for_reopen(cx, ch, ci, slot);
        }
    }
}

/// Closes an input the relay opens itself (a dialed producer) and schedules its reopening on
/// the input's backoff: the same path as a producer that closed the stream.
pub(crate) fn close_for_reopen(cx: &mut Cx, ch: &mut Channel, ci: u16, slot: u16) {
    close_ep(cx, ch, ci, slot);
    let d = ch.input_backoff.next_delay();
    ch.input_retry_at = Some(cx.now + d);
}
