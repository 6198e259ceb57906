//! `spool=DIR` on an `mqtt://` output across broker outages, against a real mosquitto: QoS 0
//! with the broker down at start (every record once, in order), `framing = line` from a TCP
//! producer across a broker restart (one message per line, whole, none lost), and a SIGKILL
//! during an outage once the spool was synced (nothing lost, the repeats bounded by what the
//! session held). Each scenario runs with both feature sets.
//!
//! Subscribers are persistent QoS 1 sessions made while the broker was up and kept by it
//! across its restarts (QoS 0 messages are queued for them too), read with one connection
//! until every distinct message came ([`Broker::read_distinct`]). Without mosquitto the tests
//! print a loud notice and return, unless RINGRELAY_REQUIRE_MOSQUITTO=1 (CI) makes them fail.

#[macro_use]
mod common;

use common::counters::{input_counters_line, stat_json};
use common::lines::{lines, text, write_pieces};
use common::mqtt::*;
use common::*;
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::time::Duration;

in_both_feature_sets!(
    mqtt_qos0_broker_down_at_start_gets_every_record_once,
    mqtt_lines_from_a_stream_cross_a_broker_restart_whole,
    mqtt_sigkill_after_a_sync_loses_nothing_spooled,
);

/// A broker that is down, with the persistent subscriber `keep` on `topic` made while it was
/// briefly up (its session outlives the restart).
fn broker_down_with_subscriber(dir: &TempDir, topic: &str) -> Broker {
    let mut broker = Broker::start(dir, "");
    broker.subscribe("keep", topic, &[]);
    broker.stop();
    broker
}

/// The spool's directory in `dir`.
fn spool_dir(dir: &TempDir) -> String {
    dir.join("spool").display().to_string()
}

/// QoS 0: the broker is down while 5,000 records come, then up. QoS 0 loses a message only
/// when its connection is lost under its write; with a healthy broker on loopback none is, so
/// the subscriber gets every record exactly once (QoS 0 is never re-sent), in order. Every
/// record went through the spool: spooled and replayed are both exactly N, and nothing was
/// dropped or lost anywhere.
fn mqtt_qos0_broker_down_at_start_gets_every_record_once(features: Features) {
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new("mqtt-q0-spool");
    let mut broker = broker_down_with_subscriber(&dir, "q0/t");
    let url = broker.url("q0/t");
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel q0]\ninput = udp://{input}\nframing = u32be\n\
             output = {url} qos=0 spool={} spool_sync=100ms\n",
            dir.global_section(),
            spool_dir(&dir)
        );
        (conf, input)
    });
    const N: usize = 5000;
    let want = messages("q0", N);
    send(input, &want);
    wait_for("every record spooled", TRANSFER_TIMEOUT, || {
        output_counter(&relay, &url, "spooled_records") >= N as u64
    });
    let line = output_counters_line(&relay, &url);
    assert_eq!(counter_in(&line, "spooled_records"), N as u64, "{line}");
    assert_eq!(counter_in(&line, "published"), 0, "{line}");
    broker.run();
    let got = broker.read_distinct("keep", "q0/t", N, 30);
    assert_all_in_order("QoS 0 from the spool", &got, &want);
    assert_eq!(got.len(), N, "QoS 0 is never sent twice");
    let shm = dir.join("shm");
    let mut doc = serde_json::Value::Null;
    wait_for("the replay counted in stat", TRANSFER_TIMEOUT, || {
        doc = stat_json(&shm);
        doc["channels"][0]["outputs"][0]["spool"]["replayed_records"] == N as u64
    });
    let o = &doc["channels"][0]["outputs"][0];
    assert_eq!(o["spool"]["spooled_records"], N as u64, "{doc:#}");
    assert_eq!(o["spool"]["dropped_records"], 0, "{doc:#}");
    assert_eq!(o["spool"]["errors"], 0, "{doc:#}");
    assert_eq!(o["mqtt"]["published"], N as u64, "{doc:#}");
    assert_eq!(o["mqtt"]["lost"], 0, "{doc:#}");
    assert_eq!(o["mqtt"]["acknowledged"], 0, "QoS 0 has no PUBACK: {doc:#}");
    assert_eq!(o["drops"], 0, "{doc:#}");
    let line = input_counters_line(&relay, "q0");
    assert_eq!(counter_in(&line, "drops"), 0, "{line}");
    relay.stop();
}

/// `framing = line` from a TCP producer to QoS 1 with a spool, the broker stopped mid-stream
/// and started again: every line is one message, whole (no two run together, none cut in
/// two, also after replay from the spool), none lost, first seen in order. The producer
/// writes in pieces that end mid-line and, without pauses, fills whole pool buffers, so
/// records of nearly a pool buffer go through the spool.
fn mqtt_lines_from_a_stream_cross_a_broker_restart_whole(features: Features) {
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new("mqtt-lines-spool");
    let mut broker = Broker::start(&dir, "");
    broker.subscribe("keep", "ln/t", &[]);
    let url = broker.url("ln/t");
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel ln]\ninput = tcp-listen://{input}\nframing = line\n\
             output = {url} qos=1 clean=off client_id=rr-lines max_inflight=32 \
             max_backlog=64KiB spool={} spool_sync=100ms\n",
            dir.global_section(),
            spool_dir(&dir)
        );
        (conf, input)
    });
    const N: usize = 60_000;
    let want = lines(0..N);
    let mut producer = connect_tcp(input);
    let mut written = 0u64;
    let mut put = |p: &mut std::net::TcpStream, part: &[String], piece, pause| {
        let t = text(part);
        written += t.len() as u64;
        write_pieces(p, &t, piece, pause);
        written
    };
    let read_all = |upto: u64| {
        wait_for(
            "the input to read every byte written",
            TRANSFER_TIMEOUT,
            || counter_in(&input_counters_line(&relay, "ln"), "bytes") >= upto,
        )
    };
    // Live, paced: the broker takes them as they come.
    let upto = put(&mut producer, &want[..10_000], 997, 4);
    read_all(upto);
    // The broker goes while messages may wait for their PUBACK; a burst then goes to disk.
    broker.stop();
    let upto = put(&mut producer, &want[10_000..40_000], 1 << 20, 0);
    read_all(upto);
    wait_for("records spooled in the outage", TRANSFER_TIMEOUT, || {
        output_counter(&relay, &url, "spooled_records") > 0
    });
    broker.run();
    let upto = put(&mut producer, &want[40_000..], 1 << 20, 0);
    read_all(upto);
    let got = broker.read_distinct_exact("keep", "ln/t", N, 30);
    let dups = assert_all_in_order("lines across a broker restart", &got, &want);
    let l = output_counters_line(&relay, &url);
    assert!(counter_in(&l, "replayed_records") > 0, "{l}");
    assert_eq!(counter_in(&l, "spool_dropped"), 0, "{l}");
    assert_eq!(counter_in(&l, "drops"), 0, "{l}");
    assert_eq!(
        counter_in(&l, "published"),
        N as u64,
        "each line published once, repeats counted as duplicates: {l}"
    );
    let inp = input_counters_line(&relay, "ln");
    assert_eq!(counter_in(&inp, "drops"), 0, "{inp}");
    assert_eq!(counter_in(&inp, "bytes"), written, "{inp}");
    eprintln!("lines across a broker restart: {dups} duplicates; {l}");
    relay.stop();
}

/// QoS 1, a broker that stops answering with messages unacknowledged (the keepalive ends the
/// connection; the session's messages are copied to the spool) and then goes; the records of
/// the outage are spooled. Once the counters line says no byte of the spool waits for a sync
/// (`spool_unsynced=0`, with `spool_sync=100ms`), the relay is killed (SIGKILL). The next start,
/// with the broker back, finds every record of the outage in the spool and delivers them: none
/// lost, first seen in order, and repeats only of the messages that waited for their PUBACK
/// (at most `max_inflight`).
fn mqtt_sigkill_after_a_sync_loses_nothing_spooled(features: Features) {
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new("mqtt-spool-kill");
    let mut broker = Broker::start(&dir, "");
    broker.subscribe("keep", "k/t", &[]);
    let url = broker.url("k/t");
    let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
    const INFLIGHT: usize = 64;
    let conf = || {
        format!(
            "{}[channel mk]\ninput = udp://{input}\nframing = u32be\n\
             output = {url} qos=1 clean=off client_id=rr-kill keepalive=1s \
             max_inflight={INFLIGHT} max_backlog=64KiB spool={} spool_sync=100ms\n",
            dir.global_section(),
            spool_dir(&dir)
        )
    };
    let (mut relay, ()) = Relay::start(features, &dir, || (conf(), ()));
    let want = messages("k", 4000);
    send(input, &want[..1000]);
    wait_for("the first records acknowledged", TRANSFER_TIMEOUT, || {
        counter_in(&output_counters_line(&relay, &url), "acknowledged") == 1000
    });
    broker.signal(Signal::SIGSTOP);
    send(input, &want[1000..3500]);
    wait_for(
        "the keepalive to end the connection",
        TRANSFER_TIMEOUT,
        || relay.log().contains("no PINGRESP"),
    );
    broker.signal(Signal::SIGCONT);
    broker.stop();
    // Every record of the outage is in the spool (the session's unacknowledged ones as
    // copies), and a completed sync covers all of it.
    wait_for(
        "the outage's records spooled and synced",
        TRANSFER_TIMEOUT,
        || {
            let l = output_counters_line(&relay, &url);
            counter_in(&l, "spooled_records") >= 2500 && counter_in(&l, "spool_unsynced") == 0
        },
    );
    let l = output_counters_line(&relay, &url);
    assert_eq!(counter_in(&l, "spooled_records"), 2500, "{l}");
    assert_eq!(counter_in(&l, "spool_unsynced"), 0, "{l}");
    relay.signal(Signal::SIGKILL);
    assert!(relay.wait_exit(Duration::from_secs(10)).is_some());
    drop(relay);
    broker.run();
    let (relay, ()) = Relay::start(features, &dir, || (conf(), ()));
    // The start names what the spool holds: every record of the outage, none consumed.
    wait_for_log(&relay, "holds 2500 records");
    send(input, &want[3500..]);
    let got = broker.read_distinct("keep", "k/t", want.len(), 30);
    let dups = assert_all_in_order("across a SIGKILL during an outage", &got, &want);
    assert!(
        dups <= INFLIGHT,
        "{dups} repeats: more than the {INFLIGHT} messages that could wait for a PUBACK"
    );
    // Every record of the outage, and those that came after the restart while the spool was
    // replayed (queued on disk behind it).
    let l = output_counters_line(&relay, &url);
    assert_eq!(
        counter_in(&l, "replayed_records"),
        2500 + counter_in(&l, "spooled_records"),
        "{l}"
    );
    assert_eq!(counter_in(&l, "drops"), 0, "{l}");
    assert_eq!(counter_in(&l, "spool_dropped"), 0, "{l}");
    eprintln!("SIGKILL after a sync: {dups} duplicates seen by the subscriber; {l}");
    relay.stop();
}
