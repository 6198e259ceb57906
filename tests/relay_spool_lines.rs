//! `spool=DIR` on a `tcp://` output of a `framing = line` channel fed by a TCP producer: a
//! SIGKILL while the collector is away, once the spool was synced, loses no line, and the
//! collector gets whole lines after the restart. (tests/relay_spool.rs covers the u32be
//! datagram cases.) Each scenario runs with both feature sets.

#[macro_use]
mod common;

use common::counters::input_counters_line;
use common::lines::{line_numbers, lines, text, write_pieces};
use common::*;
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::time::Duration;

in_both_feature_sets!(line_spool_survives_sigkill_after_a_sync,);

/// The collector is down from the start. 50,000 lines come in pieces that end mid-line, some
/// paced, some as fast as the producer writes (so records of nearly a pool buffer are
/// spooled). Once every byte was read and the counters line says no byte of the spool waits
/// for a sync (`spool_unsynced=0`), the relay is killed (SIGKILL). After the restart 10,000
/// more lines come and the collector is up: it gets every line once, whole, in order. No
/// record was consumed before the kill (the collector never connected), so there is no
/// position to fall behind and nothing may repeat.
fn line_spool_survives_sigkill_after_a_sync(features: Features) {
    let dir = TempDir::new("spool-lines-kill");
    let spool = dir.join("spool").display().to_string();
    let collector_addr = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
    let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
    let url = format!("tcp://{collector_addr}");
    let conf = || {
        format!(
            "{}[channel ln]\ninput = tcp-listen://{input}\nframing = line\n\
             output = {url} max_backlog=256KiB spool={spool} spool_sync=100ms\n",
            dir.global_section()
        )
    };
    let (mut relay, ()) = Relay::start(features, &dir, || (conf(), ()));
    const N: usize = 50_000;
    let want = lines(0..N + 10_000);
    let first = text(&want[..N]);
    let mut producer = connect_tcp(input);
    write_pieces(&mut producer, &first[..first.len() / 2], 1009, 8);
    write_pieces(&mut producer, &first[first.len() / 2..], 1 << 20, 0);
    wait_for(
        "every byte read, spooled and synced",
        TRANSFER_TIMEOUT,
        || {
            let l = output_counters_line(&relay, &url);
            counter_in(&input_counters_line(&relay, "ln"), "bytes") == first.len() as u64
                && counter_in(&l, "spooled_bytes") == first.len() as u64
                && counter_in(&l, "spool_unsynced") == 0
        },
    );
    relay.signal(Signal::SIGKILL);
    assert!(relay.wait_exit(Duration::from_secs(10)).is_some());
    drop(relay);
    drop(producer);
    let (relay, ()) = Relay::start(features, &dir, || (conf(), ()));
    let mut producer = connect_tcp(input);
    write_pieces(&mut producer, &text(&want[N..]), 1009, 8);
    let total = text(&want).len();
    let collector = Collector::listen(collector_addr, None);
    wait_for("every line at the collector", TRANSFER_TIMEOUT, || {
        collector.total_len() >= total
    });
    std::thread::sleep(Duration::from_millis(300));
    let got = line_numbers(&collector.concatenated());
    assert_eq!(
        got,
        (0..N + 10_000).collect::<Vec<_>>(),
        "lines lost, repeated or out of order; {}",
        output_counters_line(&relay, &url)
    );
    let l = output_counters_line(&relay, &url);
    assert_eq!(counter_in(&l, "spool_dropped"), 0, "{l}");
    assert!(counter_in(&l, "replayed_records") > 0, "{l}");
    let inp = input_counters_line(&relay, "ln");
    assert_eq!(counter_in(&inp, "drops"), 0, "{inp}");
    relay.stop();
}
