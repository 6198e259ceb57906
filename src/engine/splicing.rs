//! The splice data path: a 1-to-1 stream channel moves its bytes input socket -> the
//! channel's pipe -> the output link without entering the pool; a fan-out channel adds a pipe
//! per output, filled by rounds of tees and one distribution splice.
//!
//! Owns: when each splice, tee and distribution splice starts and how long it is (from the
//! pipes' fill accounting, [`super::splice`]), the POLL_ADD wait of a splice on a non-blocking
//! socket that answered -EAGAIN, and what each completion means. Faults, redials, FIN,
//! shutdown and reload go through the same endpoint life as the buffer path ([`super::links`]).
//!
//! Must never: let a splice wait on an empty pipe or a full one (lengths come from the fill),
//! or close a pipe under a splice (every splice is counted on an endpoint, tees and
//! distribution splices on the channel).

use super::channel::{Channel, Link, Role};
use super::io::{Fd, Op};
use super::links::{close_all, close_ep};
use super::token::{OpKind, Token};
use super::{errno_str, input::post_reads, Cx};
use log::{debug, error, info, warn};

/// Starts the splice-in of a splicing channel (input socket -> pipe) if the input is up, the
/// pipe has room and none is in flight. Its length is the pipe's free room, never 0.
pub(crate) fn splice_in(cx: &mut Cx, ch: &mut Channel, ci: u16) {
    let Channel {
        slots,
        splice,
        input,
        draining,
        input_draining,
        ..
    } = ch;
    let stopped = *draining && !*input_draining;
    let (Some(sp), Some(slot), false) = (splice.as_mut(), *input, stopped) else {
        return;
    };
    let Some(ep) = slots.get_mut(slot as usize).and_then(|e| e.as_mut()) else {
        return;
    };
    if ep.link != Link::Up {
        return;
    }
    let Some(len) = sp.fill.next_in() else { return };
    sp.fill.start_in();
    ep.splicing = true;
    ep.in_flight += 1;
    cx.push(
        Op::Splice {
            fd_in: ep.raw_fd(),
            fd_out: sp.pipe.write,
            len,
        },
        Token::new(OpKind::SpliceIn, ci, slot, ep.gen),
    );
}

/// Starts the splice-out of a splicing channel (pipe -> link `slot`) if the link is up, the
/// pipe holds bytes and none is in flight. Its length is the pipe's fill, never 0, so it never
/// waits on an empty pipe.
pub(crate) fn splice_out(cx: &mut Cx, ch: &mut Channel, ci: u16, slot: u16) {
    let Channel {
        slots,
        outputs,
        splice,
        ..
    } = ch;
    let Some(sp) = splice.as_mut() else { return };
    let Some(ep) = slots.get_mut(slot as usize).and_then(|e| e.as_mut()) else {
        return;
    };
    let Role::Link { out } = ep.role else { return };
    if ep.link != Link::Up || outputs[out].retry_at.is_some() {
        return;
    }
    let (pipe_fd, fill) = sp.out_pipe(out);
    let Some(len) = fill.next_out() else {
        return;
    };
    fill.start_out();
    ep.splicing = true;
    ep.write_ops += 1;
    ep.in_flight += 1;
    cx.push(
        Op::Splice {
            fd_in: pipe_fd,
            fd_out: ep.raw_fd(),
            len,
        },
        Token::new(OpKind::SpliceOut, ci, slot, ep.gen),
    );
}

/// What [`splice_wait`] made of a completion.
enum Wait {
    /// Not a wait: a splice's own result.
    No,
    /// Handled: a wait armed, or a wait over and the splice submitted again.
    Handled,
    /// A wait of a closing endpoint ended: the splice is over, having moved nothing.
    Ended,
}

/// Non-blocking splice sockets: a splice that found its socket not ready (-EAGAIN) waits in a
/// POLL_ADD (POLLIN for the input, POLLOUT for the link) under the same token, and is submitted
/// again with the pipe's current room or fill when the wait ends. The splice counts as in
/// flight all along (one in-flight operation, the pipe's `filling`/`draining` held).
fn splice_wait(cx: &mut Cx, ch: &mut Channel, tok: Token, res: i32, out: bool) -> Wait {
    let Channel { splice, slots, .. } = ch;
    let Some(sp) = splice.as_mut() else {
        return Wait::No;
    };
    let Some(ep) = slots
        .get_mut(tok.ep as usize)
        .and_then(|e| e.as_mut())
        .filter(|e| e.gen == tok.gen)
    else {
        return Wait::No;
    };
    let closing = ep.link == Link::Closing;
    let fd = ep.raw_fd();
    let oi = match ep.role {
        Role::Link { out } => out,
        _ => 0,
    };
    let pipe_fd = if out {
        sp.out_pipe(oi).0
    } else {
        sp.pipe.write
    };
    if ep.splice_poll {
        ep.splice_poll = false;
        if closing {
            return Wait::Ended;
        }
        let sqe = if out {
            Op::Splice {
                fd_in: pipe_fd,
                fd_out: fd,
                len: sp.out_pipe(oi).1.retry_out(),
            }
        } else {
            Op::Splice {
                fd_in: fd,
                fd_out: pipe_fd,
                len: sp.fill.retry_in(),
            }
        };
        cx.push(sqe, tok);
        return Wait::Handled;
    }
    if res != -libc::EAGAIN || closing {
        return Wait::No;
    }
    ep.splice_poll = true;
    cx.push(
        if out {
            Op::PollOut { fd }
        } else {
            Op::PollIn { fd }
        },
        tok,
    );
    Wait::Handled
}

/// The result a splice completion stands for, or `None` when there is nothing more to do: a
/// stale completion (dropped untouched), or one [`splice_wait`] handled (a wait in POLL_ADD
/// armed, or over and the splice submitted again). The wait of a closing endpoint that ended
/// reads as -ECANCELED: the splice is over, having moved nothing.
fn splice_result(cx: &mut Cx, ch: &mut Channel, tok: Token, res: i32, out: bool) -> Option<i32> {
    if ch.ep_gen(tok.ep, tok.gen).is_none() {
        // Cannot happen (a slot lives until its last completion): drop it untouched.
        debug!("stale splice completion {tok:?}");
        return None;
    }
    match splice_wait(cx, ch, tok, res, out) {
        Wait::Handled => None,
        Wait::Ended => Some(-libc::ECANCELED),
        Wait::No => Some(res),
    }
}

/// A splice-in completed. Whatever it moved is in the pipe and counts, even when the input
/// is closing; a FIN (0) or an error ends this producer exactly as on the buffer path, and the
/// pipe's bytes still go out.
pub(crate) fn on_splice_in(cx: &mut Cx, ch: &mut Channel, tok: Token, res: i32) {
    let (ci, slot) = (tok.chan, tok.ep);
    let Some(res) = splice_result(cx, ch, tok, res, false) else {
        return;
    };
    let Some(sp) = ch.splice.as_mut() else {
        return;
    };
    let moved = sp.fill.done_in(res);
    ch.stats.bytes += u64::from(moved);
    if moved > 0 {
        ch.watchdog.fed(cx.now);
    }
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        // Cannot happen: the slot lives until this completion.
        return;
    };
    ep.in_flight -= 1;
    ep.splicing = false;
    let closing = ep.link == Link::Closing;
    let peer = ep.peer.clone();
    if moved > 0 {
        if ch.splice.as_ref().is_some_and(|s| s.fan.is_some()) {
            distribute(cx, ch, ci);
        } else if let Some(l) = ch.outputs.first().and_then(|o| o.link) {
            splice_out(cx, ch, ci, l);
        }
    }
    if !closing && res <= 0 && res != -libc::EINTR {
        if res == 0 {
            info!("channel {}: producer {} closed the stream", ch.name(), peer);
        } else {
            ch.stats.errors += 1;
            warn!(
                "channel {}: producer {peer} lost: input splice failed: {}{}",
                ch.name(),
                errno_str(res),
                super::timed_out_hint(res)
            );
        }
        close_ep(cx, ch, ci, slot);
        if ch.cfg.input.scheme.reopens() {
            let d = ch.input_backoff.next_delay();
            ch.input_retry_at = Some(cx.now + d);
        }
    }
    ch.reap_if_idle(slot, cx.sys);
    // The same input again, or a producer that connected while this splice was still in
    // flight on the old one.
    post_reads(cx, ch, ci);
}

/// A splice-out completed: what it moved left the pipe for the link. On a fault the link is
/// closed and redialed as on the buffer path; the bytes still in the pipe go to the next
/// connection.
pub(crate) fn on_splice_out(cx: &mut Cx, ch: &mut Channel, tok: Token, res: i32) {
    let (ci, slot) = (tok.chan, tok.ep);
    let Some(res) = splice_result(cx, ch, tok, res, true) else {
        return;
    };
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        return;
    };
    let Role::Link { out } = ep.role else {
        return;
    };
    let Some(sp) = ch.splice.as_mut() else {
        return;
    };
    let moved = sp.out_pipe(out).1.done_out(res);
    let Some(ep) = ch.ep_gen(slot, tok.gen) else {
        return;
    };
    ep.in_flight -= 1;
    ep.write_ops -= 1;
    ep.splicing = false;
    let closing = ep.link == Link::Closing;
    let name = ch.cfg.name.clone();
    let o = &mut ch.outputs[out];
    o.stats.bytes += u64::from(moved);
    if moved > 0 && o.faulted && !closing {
        o.faulted = false;
        o.backoff.reset();
        info!("channel {name}: output {} recovered", o.url());
    }
    if !closing && res <= 0 && res != -libc::EINTR {
        let err = if res == 0 {
            std::io::Error::from_raw_os_error(libc::EPIPE)
        } else {
            errno_str(res)
        };
        o.fault(cx.now, log::Level::Warn, |url| {
            format!(
            "channel {name}: output {} lost: {err}; reconnecting (data still in the pipe is kept)",
            url
            )
        });
        close_ep(cx, ch, ci, slot);
    }
    ch.reap_if_idle(slot, cx.sys);
    // The pipe has room again (or, fanning out, this output's pipe may be the last one a round
    // waited for); and a link that connected while this splice was in flight on the old one
    // can start.
    post_reads(cx, ch, ci);
    distribute(cx, ch, ci);
    if let Some(l) = ch.outputs[out].link {
        splice_out(cx, ch, ci, l);
    }
}

/// Starts a distribution round of a fan-out channel if one may start
/// ([`super::splice::Fanout::start_round`]): a tee of the intake pipe's fill into each output's
/// pipe but the last.
pub(crate) fn distribute(cx: &mut Cx, ch: &mut Channel, ci: u16) {
    let Some(sp) = ch.splice.as_mut() else { return };
    let Some(fan) = sp.fan.as_mut() else { return };
    let Some(len) = fan.state.start_round(&mut sp.fill) else {
        return;
    };
    let fd_in = sp.pipe.read;
    for (i, q) in fan.pipes[..fan.pipes.len() - 1].iter().enumerate() {
        cx.push(
            Op::Tee {
                fd_in,
                fd_out: q.write,
                len,
            },
            Token::new(OpKind::Tee, ci, i as u16, fan.gen),
        );
    }
}

/// The fan-out state of channel `ch` if `tok` (a tee or distribution splice) belongs to it.
fn fan_of(
    ch: &mut Channel,
    tok: Token,
) -> Option<(&mut super::splice::PipeFill, &mut super::channel::FanPipes)> {
    let sp = ch.splice.as_mut()?;
    let fan = sp.fan.as_mut().filter(|f| f.gen == tok.gen)?;
    Some((&mut sp.fill, fan))
}

/// A fan-out's tee or distribution splice did not move exactly its round's length: the output
/// pipes no longer hold what they should, so the channel stops at once, like a fault that
/// cannot be retried (nothing more is delivered from its pipes).
pub(crate) fn fail_fanout(cx: &mut Cx, ch: &mut Channel, ci: u16, why: &str, first: bool) {
    if first {
        ch.stats.errors += 1;
        error!(
            "channel {}: fan-out invariant broken ({why}); closing the channel",
            ch.name()
        );
    }
    ch.draining = true;
    ch.drain_deadline = None;
    close_all(cx, ch, ci);
}

/// A tee into output `tok.ep`'s pipe completed: that output may start sending, and once every
/// tee of the round is in, the distribution splice moves the round's bytes into the last pipe.
pub(crate) fn on_tee(cx: &mut Cx, ch: &mut Channel, tok: Token, res: i32) {
    let ci = tok.chan;
    let Some((_, fan)) = fan_of(ch, tok) else {
        debug!("stale tee completion {tok:?}");
        return;
    };
    let first = !fan.state.failed();
    match fan.state.done_tee(tok.ep as usize, res) {
        Ok(next) => {
            if let Some(len) = next {
                let sp = ch.splice.as_ref().expect("fan-out channel splices");
                let fan = sp.fan.as_ref().expect("fan-out");
                let last = fan.pipes.len() - 1;
                cx.push(
                    Op::Splice {
                        fd_in: sp.pipe.read,
                        fd_out: fan.pipes[last].write,
                        len,
                    },
                    Token::new(OpKind::SpliceDist, ci, last as u16, fan.gen),
                );
            }
            if let Some(l) = ch.outputs[tok.ep as usize].link {
                splice_out(cx, ch, ci, l);
            }
        }
        Err(why) => fail_fanout(cx, ch, ci, &why, first),
    }
}

/// The distribution splice of a round completed: the round is over, the intake pipe has room
/// again and the last output may send.
pub(crate) fn on_splice_dist(cx: &mut Cx, ch: &mut Channel, tok: Token, res: i32) {
    let ci = tok.chan;
    let Some((p0, fan)) = fan_of(ch, tok) else {
        debug!("stale distribution splice completion {tok:?}");
        return;
    };
    let first = !fan.state.failed();
    match fan.state.done_final(p0, res) {
        Ok(_) => {
            post_reads(cx, ch, ci);
            if let Some(l) = ch.outputs[tok.ep as usize].link {
                splice_out(cx, ch, ci, l);
            }
            distribute(cx, ch, ci);
        }
        Err(why) => fail_fanout(cx, ch, ci, &why, first),
    }
}

/// Makes a splicing channel's socket non-blocking when the channel splices that way.
pub(crate) fn splice_socket(cx: &mut Cx, ch: &Channel, fd: Fd) {
    if ch.splice.as_ref().is_some_and(|s| s.nonblocking) {
        if let Err(e) = cx.sys.set_nonblocking(fd) {
            warn!("channel {}: O_NONBLOCK: {e}", ch.name());
        }
    }
}
