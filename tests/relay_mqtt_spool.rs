//! `spool=DIR` on an `mqtt://` output against a real mosquitto: while the broker is away the
//! records wait on disk, one message each when they are replayed, in order and before live
//! ones; with QoS 1 a record leaves the spool only once its PUBACK came, so a broker restart
//! and a relay stop during an outage lose nothing (QoS 1 may repeat a message: duplicates are
//! allowed, and counted). Each scenario runs with both feature sets.
//!
//! The input is UDP with `framing = u32be`: every datagram is one record, and one message
//! (see [`common::mqtt::messages`]). The subscriber is a persistent QoS 1 session made while
//! the broker was up and kept by it across its restarts, so nothing published while nobody
//! reads is missed. Without mosquitto the tests print a loud notice and return, unless
//! RINGRELAY_REQUIRE_MOSQUITTO=1 (CI) makes them fail.

#[macro_use]
mod common;

use common::counters::{input_counters_line, stat_json};
use common::mqtt::*;
use common::*;
use nix::sys::signal::Signal;
use std::net::SocketAddr;

in_both_feature_sets!(
    mqtt_broker_down_at_start_gets_every_record_from_the_spool,
    mqtt_broker_restart_with_a_spool_loses_nothing,
    mqtt_sigterm_while_the_broker_is_away_keeps_every_record,
);

/// The relay's config: channel `ms` from UDP `input` to `url` with QoS 1 and a spool in `dir`.
fn config(dir: &TempDir, input: SocketAddr, url: &str, opts: &str) -> String {
    format!(
        "{}[channel ms]\ninput = udp://{input}\nframing = u32be\n\
         output = {url} qos=1 clean=off client_id=rr-spool spool={} spool_sync=200ms {opts}\n",
        dir.global_section(),
        dir.join("spool").display()
    )
}

/// A broker that is down, with the persistent subscriber `keep` on `s/t` made while it was
/// briefly up (its session outlives the restart).
fn broker_down_with_subscriber(dir: &TempDir) -> Broker {
    let mut broker = Broker::start(dir, "");
    broker.subscribe("keep", "s/t", &[]);
    broker.stop();
    broker
}

/// The spool's counters in `stat --format json`, once `ok` says they are what is wanted.
fn spool_stat(dir: &TempDir, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let shm = dir.join("shm");
    let mut sp = serde_json::Value::Null;
    wait_for("the spool counters in stat", TRANSFER_TIMEOUT, || {
        sp = stat_json(&shm)["channels"][0]["outputs"][0]["spool"].clone();
        ok(&sp)
    });
    sp
}

/// The broker is down while 5,000 records come: they wait in the spool; once it is up, the
/// subscriber gets every one in order, and the counters show them spooled and replayed.
fn mqtt_broker_down_at_start_gets_every_record_from_the_spool(features: Features) {
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new("mqtt-spool-late");
    let mut broker = broker_down_with_subscriber(&dir);
    let url = broker.url("s/t");
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        (config(&dir, input, &url, ""), input)
    });
    const N: usize = 5000;
    let want = messages("late", N);
    send(input, &want);
    wait_for("every record spooled", TRANSFER_TIMEOUT, || {
        output_counter(&relay, &url, "spooled_records") >= N as u64
    });
    broker.run();
    let got = broker.read_distinct("keep", "s/t", N, 30);
    let dups = assert_all_in_order("from the spool", &got, &want);
    assert_eq!(
        dups, 0,
        "the broker was never up for these: nothing to repeat"
    );
    wait_for("every PUBACK", TRANSFER_TIMEOUT, || {
        counter_in(&output_counters_line(&relay, &url), "acknowledged") == N as u64
    });
    let line = output_counters_line(&relay, &url);
    assert_eq!(counter_in(&line, "replayed_records"), N as u64, "{line}");
    assert_eq!(counter_in(&line, "spool_dropped"), 0, "{line}");
    assert_eq!(counter_in(&line, "drops"), 0, "{line}");
    let line = input_counters_line(&relay, "ms");
    assert_eq!(counter_in(&line, "drops"), 0, "{line}");
    let sp = spool_stat(&dir, |sp| sp["replayed_records"] == N as u64);
    assert_eq!(sp["spooled_records"], N as u64, "{sp:#}");
    relay.stop();
}

/// A broker restart mid-stream: what comes while it is down is spooled, what it had not
/// acknowledged is sent again; the subscriber gets every record, first seen in order.
fn mqtt_broker_restart_with_a_spool_loses_nothing(features: Features) {
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new("mqtt-spool-restart");
    let mut broker = Broker::start(&dir, "");
    broker.subscribe("keep", "s/t", &[]);
    let url = broker.url("s/t");
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        (config(&dir, input, &url, "max_inflight=32"), input)
    });
    let want = messages("rs", 5000);
    send(input, &want[..1500]);
    // Stopped while messages may still wait for their PUBACK.
    broker.stop();
    send(input, &want[1500..3500]);
    wait_for(
        "records spooled while the broker is down",
        TRANSFER_TIMEOUT,
        || output_counter(&relay, &url, "spooled_records") >= 1000,
    );
    broker.run();
    send(input, &want[3500..]);
    let got = broker.read_distinct("keep", "s/t", want.len(), 30);
    let dups = assert_all_in_order("across a broker restart", &got, &want);
    wait_for("the spool replayed", TRANSFER_TIMEOUT, || {
        relay.log().contains("spool replayed")
    });
    let line = output_counters_line(&relay, &url);
    assert!(counter_in(&line, "replayed_records") > 0, "{line}");
    assert!(counter_in(&line, "reconnects") >= 1, "{line}");
    assert_eq!(counter_in(&line, "drops"), 0, "{line}");
    if dups > 0 {
        assert!(
            counter_in(&line, "duplicates") > 0,
            "re-sent with DUP, counted: {line}"
        );
    }
    eprintln!("broker restart with a spool: {dups} duplicates seen by the subscriber; {line}");
    relay.stop();
}

/// The broker stops answering with messages unacknowledged, then goes; the relay is stopped
/// (SIGTERM) during the outage. The next start, with the broker back, delivers every record:
/// the unacknowledged ones too (at least once), first seen in order.
fn mqtt_sigterm_while_the_broker_is_away_keeps_every_record(features: Features) {
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new("mqtt-spool-term");
    let mut broker = Broker::start(&dir, "");
    broker.subscribe("keep", "s/t", &[]);
    let url = broker.url("s/t");
    let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
    let opts = "keepalive=1s max_inflight=64 max_backlog=64KiB";
    let (relay, ()) = Relay::start(features, &dir, || (config(&dir, input, &url, opts), ()));
    let want = messages("st", 4000);
    send(input, &want[..1000]);
    wait_for("the first records acknowledged", TRANSFER_TIMEOUT, || {
        counter_in(&output_counters_line(&relay, &url), "acknowledged") == 1000
    });
    // A broker that no longer answers: published messages wait for their PUBACK while the
    // rest fills the queue and goes to the spool; the keepalive then ends the connection.
    broker.signal(Signal::SIGSTOP);
    send(input, &want[1000..3500]);
    wait_for(
        "the keepalive to end the connection",
        TRANSFER_TIMEOUT,
        || relay.log().contains("no PINGRESP"),
    );
    broker.signal(Signal::SIGCONT);
    broker.stop();
    let line = output_counters_line(&relay, &url);
    assert!(counter_in(&line, "spooled_records") > 0, "{line}");
    relay.stop();
    broker.run();
    let (relay, ()) = Relay::start(features, &dir, || (config(&dir, input, &url, opts), ()));
    send(input, &want[3500..]);
    let got = broker.read_distinct("keep", "s/t", want.len(), 30);
    let dups = assert_all_in_order("across a relay stop during an outage", &got, &want);
    let line = output_counters_line(&relay, &url);
    assert!(counter_in(&line, "replayed_records") > 0, "{line}");
    assert_eq!(counter_in(&line, "drops"), 0, "{line}");
    eprintln!("SIGTERM during an outage: {dups} duplicates seen by the subscriber; {line}");
    relay.stop();
}
