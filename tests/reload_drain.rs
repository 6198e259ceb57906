//! SIGHUP reload of stopped channels with the real daemon: a removed or restarted channel closes
//! its ports at once and flushes what it queued for its subscribers for at most
//! shutdown_timeout, then cuts them off; reloads during that flush apply the last file.
//!
//! The reload steps (SIGHUP, the summary line and its counts) are shared with `reload.rs`, in
//! `reloading/mod.rs`.

mod common;
mod reloading;

use common::*;
use reloading::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

// ------------------------------------------------------------------------------------------------
// Stopped channels flush, for at most shutdown_timeout

/// A `[global]` section for the drain tests. Small buffers and many of them: a subscriber may
/// hold a quarter of the pool over the two channels, 256 buffers, so the 1 MiB these tests queue
/// would need reads averaging under 4 KiB to get it dropped as too slow (with the default
/// 256 x 64 KiB it is 32 buffers, which short reads of a loopback stream do fill).
fn drain_global(dir: &TempDir, shutdown_timeout: &str) -> String {
    format!(
        "[global]\nshm_dir = {}\nshutdown_timeout = {shutdown_timeout}\nlog_level = info\nbuffer_size = 16KiB\nbuffer_count = 2048\n\n",
        dir.join("shm").display()
    )
}

/// A `tcp-listen` output whose subscribers get a tiny send buffer: the daemon hands the kernel a
/// few KiB of what it holds for a subscriber that does not read, and keeps the rest queued.
fn stalling_output(addr: SocketAddr) -> String {
    format!("tcp-listen://{addr} sndbuf=4096 max_backlog=64MiB")
}

/// Connects a subscriber that does not read (and has a tiny receive buffer) to `addr`, a
/// tcp-listen output of `channel`, and waits until the daemon has accepted it.
fn stalled_subscriber(relay: &Relay, channel: &str, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).expect("connect subscriber");
    let sub = TcpStream::from(s);
    let accepted = format!(
        "channel {channel}: subscriber {}",
        sub.local_addr().unwrap()
    );
    wait_for(
        "the daemon to accept the subscriber",
        RELOAD_TIMEOUT,
        || relay.log().contains(&accepted),
    );
    sub
}

/// Writes `total` bytes of `pattern(seed)` into `channel`'s tcp-listen input at `input` and
/// waits until the channel has read all of them. Returns the bytes.
fn feed(relay: &Relay, channel: &str, input: SocketAddr, seed: u64, total: usize) -> Arc<Vec<u8>> {
    use nix::sys::signal::Signal::SIGUSR1;
    let data = Arc::new(pattern(seed, total));
    let producer = write_in_thread(connect_tcp(input), data.clone(), 64 * 1024);
    let counters = format!("counters: channel {channel} input");
    let read_all = format!("bytes={total} ");
    wait_for("the channel to read everything", TRANSFER_TIMEOUT, || {
        relay.signal(SIGUSR1);
        thread::sleep(Duration::from_millis(50));
        relay
            .log()
            .lines()
            .any(|l| l.contains(&counters) && l.contains(&read_all))
    });
    // The producer's end closes here: the channel sees its producer leave, nothing more.
    join_with_timeout(producer, TRANSFER_TIMEOUT, "the producer").expect("write");
    data
}

/// The index of the first line of `log` at or after line `from` that contains `what`.
fn line_index(log: &str, from: usize, what: &str) -> Option<usize> {
    log.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.contains(what))
        .map(|(i, _)| i)
}

/// A removed channel flushes what it queued for a subscriber before closing it: the subscriber
/// stalls (a tiny receive buffer, not reading) while the channel reads 1 MiB, nearly all of which
/// stays queued in the daemon; the channel is removed, its ports close at once, and only then does
/// the subscriber read: it must get every byte, then EOF.
#[test]
fn removed_channel_flushes_its_subscribers() {
    let dir = TempDir::new("reload-flush");
    let total = 1 << 20;
    let conf = |churn: Option<(SocketAddr, SocketAddr)>, keep: (SocketAddr, SocketAddr)| {
        let mut c = drain_global(&dir, "5s");
        if let Some((i, o)) = churn {
            c.push_str(&format!(
                "[channel churn]\ninput = tcp-listen://{i}\noutput = {}\n\n",
                stalling_output(o)
            ));
        }
        c.push_str(&format!(
            "[channel keep]\ninput = tcp-listen://{}\noutput = tcp-listen://{}\n",
            keep.0, keep.1
        ));
        c
    };
    let (mut relay, (churn, keep)) = Relay::start(Features::Auto, &dir, || {
        let tcp = || SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let (churn, keep) = ((tcp(), tcp()), (tcp(), tcp()));
        (conf(Some(churn), keep), (churn, keep))
    });

    let sub = stalled_subscriber(&relay, "churn", churn.1);
    let data = feed(&relay, "churn", churn.0, 7, total);

    reload(&mut relay, &dir, &conf(None, keep), 0, [1, 0, 0, 1]);
    // The listeners close at once; only the subscriber is kept, to flush (it cannot finish
    // before the subscriber reads, and shutdown_timeout is far off).
    wait_refused(churn.1, "the removed channel's output, while it flushes");
    wait_refused(churn.0, "the removed channel's input, while it flushes");
    let log = relay.log();
    assert!(
        !log.contains("channel churn: closed") && !log.contains("shutdown_timeout reached"),
        "the removed channel closed before its subscriber read anything:\n{log}"
    );

    let sink = StreamSink::new("stalled subscriber of the removed channel", sub);
    let end = sink.wait_end(TRANSFER_TIMEOUT);
    assert_eq!(
        end,
        Some(End::Eof),
        "the subscriber's connection did not end cleanly"
    );
    assert_same_bytes("the subscriber of the removed channel", &sink.data(), &data);
    wait_for("the removed channel to close", RELOAD_TIMEOUT, || {
        relay.log().contains("channel churn: closed")
    });
    relay.stop();
}

/// A subscriber that never reads holds a changed channel's old instance for shutdown_timeout and
/// no longer: then its outputs close, the bytes dropped are reported once (exactly those the
/// subscriber did not get), and the new instance starts on the same ports and relays.
#[test]
fn stalled_subscriber_is_cut_off_at_shutdown_timeout() {
    let dir = TempDir::new("reload-drain-timeout");
    let total = 1 << 20;
    let conf = |churn: (SocketAddr, SocketAddr), backlog: &str, keep: (SocketAddr, SocketAddr)| {
        format!(
            "{}[channel churn]\ninput = tcp-listen://{}\noutput = tcp-listen://{} sndbuf=4096 max_backlog={backlog}\n\n[channel keep]\ninput = tcp-listen://{}\noutput = tcp-listen://{}\n",
            drain_global(&dir, "2s"),
            churn.0,
            churn.1,
            keep.0,
            keep.1
        )
    };
    let (mut relay, (churn, keep)) = Relay::start(Features::Auto, &dir, || {
        let tcp = || SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let (churn, keep) = ((tcp(), tcp()), (tcp(), tcp()));
        (conf(churn, "32MiB", keep), (churn, keep))
    });

    let stalled = stalled_subscriber(&relay, "churn", churn.1);
    let data = feed(&relay, "churn", churn.0, 11, total);

    // Another max_backlog: churn restarts, and its old instance waits for the subscriber.
    reload(
        &mut relay,
        &dir,
        &conf(churn, "48MiB", keep),
        0,
        [1, 0, 1, 0],
    );
    let summary = line_index(&relay.log(), 0, " restarted, ").unwrap();
    let cut = "channel churn: shutdown_timeout reached while flushing its outputs";
    wait_for("the drain to be cut off", RELOAD_TIMEOUT, || {
        relay.log().contains(cut)
    });
    wait_for("the new churn to start", RELOAD_TIMEOUT, || {
        relay.log().contains("channel churn: started")
    });
    relay.assert_running("after the drain was cut off");
    let log = relay.log();
    // In order: reload, cut off, old instance closed, new one started; each once.
    let at_cut = line_index(&log, summary, cut).expect("cut-off line after the reload");
    let at_closed = line_index(&log, at_cut, "channel churn: closed")
        .unwrap_or_else(|| panic!("no 'closed' after the cut-off:\n{log}"));
    let at_started = line_index(&log, at_closed, "channel churn: started")
        .unwrap_or_else(|| panic!("no 'started' after 'closed':\n{log}"));
    for what in [cut, "channel churn: closed", "channel churn: started"] {
        assert_eq!(
            log.matches(what).count(),
            1,
            "'{what}' logged more than once:\n{log}"
        );
    }
    let cut_line = log.lines().nth(at_cut).unwrap();
    let dropped: usize = cut_line
        .split(" queued bytes dropped")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in '{cut_line}'"));
    assert!(
        dropped > 0,
        "the cut-off reports no dropped bytes: '{cut_line}'"
    );
    assert!(at_started > at_closed);

    // The stalled subscriber was closed: it gets what the kernel held for it, then the end; with
    // what was reported dropped, that is everything.
    let sink = StreamSink::new("stalled subscriber", stalled);
    assert!(
        sink.wait_end(TRANSFER_TIMEOUT).is_some(),
        "the stalled subscriber's connection is still open after the cut-off"
    );
    let got = sink.data();
    assert_same_bytes(
        "what the stalled subscriber got",
        &got,
        &data[..got.len().min(total)],
    );
    assert_eq!(
        got.len() + dropped,
        total,
        "received {} + reported dropped {dropped} != written {total}",
        got.len()
    );

    // The new instance relays on the same ports.
    let sub = StreamSink::tcp("subscriber of the new churn", churn.1);
    let mut producer = connect_tcp(churn.0);
    ping_stream(&mut producer, &[&sub]);
    let more = pattern(12, 64 * 1024);
    producer.write_all(&more).expect("write to the new churn");
    expect_after_pings(&sub, &more, TRANSFER_TIMEOUT);
    drop(producer);
    relay.stop();
}

/// Reloads while a stopped channel still flushes apply the last file: a restart that is still
/// waiting is cancelled when the channel is then removed, and a channel added back while its
/// old instance flushes starts, with the settings of the file that added it, once that instance
/// is gone. Each churn config uses its own output port, so which one runs is plain to see.
#[test]
fn reloads_during_a_drain_apply_the_last_file() {
    let dir = TempDir::new("reload-during-drain");
    let total = 1 << 20;
    #[derive(Clone, Copy)]
    struct P {
        churn_in: SocketAddr,
        out: [SocketAddr; 3],
        keep: (SocketAddr, SocketAddr),
    }
    let conf = |p: &P, churn: Option<usize>| {
        // Long enough for the three reloads below to happen while the first churn flushes.
        let mut c = drain_global(&dir, "4s");
        if let Some(k) = churn {
            c.push_str(&format!(
                "[channel churn]\ninput = tcp-listen://{}\noutput = {}\n\n",
                p.churn_in,
                stalling_output(p.out[k])
            ));
        }
        c.push_str(&format!(
            "[channel keep]\ninput = tcp-listen://{}\noutput = tcp-listen://{}\n",
            p.keep.0, p.keep.1
        ));
        c
    };
    let (mut relay, p) = Relay::start(Features::Auto, &dir, || {
        let tcp = || SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let p = P {
            churn_in: tcp(),
            out: [tcp(), tcp(), tcp()],
            keep: (tcp(), tcp()),
        };
        (conf(&p, Some(0)), p)
    });
    let stalled = stalled_subscriber(&relay, "churn", p.out[0]);
    feed(&relay, "churn", p.churn_in, 13, total);

    // Changed (its restart waits for the old instance), removed (the restart is cancelled),
    // added back with a third output.
    reload(&mut relay, &dir, &conf(&p, Some(1)), 0, [1, 0, 1, 0]);
    reload(&mut relay, &dir, &conf(&p, None), 1, [1, 0, 0, 1]);
    reload(&mut relay, &dir, &conf(&p, Some(2)), 2, [1, 1, 0, 0]);
    wait_for("churn to start again", RELOAD_TIMEOUT, || {
        relay.log().contains("channel churn: started")
    });
    let sub = subscribe_and_prove_tcp(p.churn_in, p.out[2], "subscriber of the last churn");
    wait_refused(p.out[0], "the first churn's output");
    wait_refused(p.out[1], "the cancelled churn's output");
    let log = relay.log();
    let summary = line_index(&log, 0, " 1 new, ").unwrap();
    let at_closed = line_index(&log, summary, "channel churn: closed").unwrap_or_else(|| {
        panic!("the old churn did not close after the reload that added churn back:\n{log}")
    });
    assert!(
        line_index(&log, at_closed, "channel churn: started").is_some(),
        "churn started before its old instance closed:\n{log}"
    );
    assert_eq!(
        log.matches("channel churn: started").count(),
        1,
        "churn started more than once:\n{log}"
    );
    assert_eq!(sub.end(), None);
    drop(stalled);
    relay.stop();
}

/// Connects a subscriber to a tcp-listen output at `out` and writes pings into the tcp-listen
/// input at `input` until it has one: the channel is up and relaying.
fn subscribe_and_prove_tcp(input: SocketAddr, out: SocketAddr, what: &str) -> StreamSink {
    let sink = StreamSink::tcp(what, out);
    let mut producer = connect_tcp(input);
    ping_stream(&mut producer, &[&sink]);
    sink
}
