//! A spooling output's counters outside the SIGUSR1 line: `ringrelay stat --format json` and
//! `--format prometheus` (from the counters region) and `GET /metrics` show the records that
//! went to disk while the collector was away, the spool's size, oldest age and unsynced bytes
//! as gauges, and the replay once it is back; all agree with the counters line. Runs with both
//! feature sets.

#[macro_use]
mod common;

use common::counters::{output_counter, prometheus_sample, stat_json, stat_output};
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

in_both_feature_sets!(spool_counters_in_stat_and_metrics);
in_both_feature_sets!(unsynced_bytes_wait_for_a_sync);

/// Records sent while the collector is away.
const N: u32 = 3000;

/// Datagram `i`: its sequence number and `i % 100` more bytes.
fn record(i: u32) -> Vec<u8> {
    let mut d = i.to_be_bytes().to_vec();
    d.extend(std::iter::repeat_n(7u8, (i % 100) as usize));
    d
}

/// `GET /metrics` from the relay's metrics server: the body.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a Content-Length");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            if body.len() >= len {
                return body[..len].to_string();
            }
        }
        let n = s.read(&mut buf).expect("the response within 10 s");
        assert!(n > 0, "the server closed before the whole response");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// A relay with one UDP channel whose `tcp://` output (no collector yet) spools with
/// `spool_sync`: (relay, input, metrics server, collector's address).
fn start(
    features: Features,
    dir: &TempDir,
    sync: &str,
) -> (Relay, SocketAddr, SocketAddr, SocketAddr) {
    let spool = dir.join("spool").display().to_string();
    let collector_addr = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
    let (relay, (input, metrics)) = Relay::start(features, dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let metrics = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}metrics = {metrics}\n[channel sp]\ninput = udp://{input}\nframing = u32be\noutput = tcp://{collector_addr} max_backlog=64KiB spool={spool} spool_sync={sync}\n",
            dir.global_section()
        );
        (conf, (input, metrics))
    });
    (relay, input, metrics, collector_addr)
}

/// Sends records `0..n` to `input`, paced so the input's socket keeps up.
fn send(input: SocketAddr, n: u32) {
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..n {
        tx.send_to(&record(i), input).unwrap();
        if i % 16 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn spool_counters_in_stat_and_metrics(features: Features) {
    let dir = TempDir::new("metrics-spool");
    let shm = dir.join("shm");
    let (relay, input, metrics, collector_addr) = start(features, &dir, "200ms");
    let url = format!("tcp://{collector_addr}");
    let labels = format!("channel=\"sp\",output=\"{url}\"");
    send(input, N);

    // The collector is away: every record is on disk, as the counters region says.
    let mut doc = serde_json::Value::Null;
    wait_for("every record spooled, in stat", TRANSFER_TIMEOUT, || {
        doc = stat_json(&shm);
        doc["channels"][0]["outputs"][0]["spool"]["spooled_records"] == N
    });
    let sp = doc["channels"][0]["outputs"][0]["spool"].clone();
    assert_eq!(
        doc["channels"][0]["outputs"][0]["mqtt"],
        serde_json::Value::Null
    );
    assert_eq!(doc["channels"][0]["input"]["drops"], 0, "{doc:#}");
    assert_eq!(sp["replayed_records"], 0, "{sp}");
    assert_eq!(sp["dropped_records"], 0, "{sp}");
    assert_eq!(sp["errors"], 0, "{sp}");
    let spooled_bytes = sp["spooled_bytes"].as_u64().unwrap();
    let payload: u64 = (0..N).map(|i| record(i).len() as u64).sum();
    assert!(
        spooled_bytes >= payload,
        "spooled_bytes {spooled_bytes} below the records' {payload} bytes"
    );
    assert_eq!(output_counter(&relay, &url, "spooled_bytes"), spooled_bytes);
    assert_eq!(
        output_counter(&relay, &url, "spooled_records"),
        u64::from(N)
    );
    let size = sp["bytes"].as_u64().unwrap();
    assert!(size >= payload, "the spool holds {size} bytes: {sp}");

    // The oldest record ages; nothing else moves while the collector stays away.
    std::thread::sleep(Duration::from_millis(1500));
    wait_for("the oldest age in stat", Duration::from_secs(10), || {
        doc = stat_json(&shm);
        doc["channels"][0]["outputs"][0]["spool"]["oldest_age_seconds"]
            .as_u64()
            .unwrap()
            >= 1
    });
    // Synced every 200 ms, and nothing new: no byte waits for an fsync.
    wait_for(
        "every spooled byte synced, in stat",
        Duration::from_secs(10),
        || {
            doc = stat_json(&shm);
            doc["channels"][0]["outputs"][0]["spool"]["unsynced_bytes"] == 0
        },
    );
    let text = scrape(metrics);
    for family in [
        "ringrelay_spool_spooled_bytes_total",
        "ringrelay_spool_spooled_records_total",
        "ringrelay_spool_replayed_bytes_total",
        "ringrelay_spool_replayed_records_total",
        "ringrelay_spool_dropped_records_total",
        "ringrelay_spool_errors_total",
        "ringrelay_spool_bytes",
        "ringrelay_spool_oldest_age_seconds",
        "ringrelay_spool_unsynced_bytes",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family}:\n{text}"
        );
    }
    assert!(
        !text.contains("ringrelay_mqtt_"),
        "no MQTT output here:\n{text}"
    );
    let sample = |text: &str, name: &str| {
        prometheus_sample(text, name, &labels).unwrap_or_else(|| panic!("no {name}:\n{text}"))
    };
    assert_eq!(
        sample(&text, "ringrelay_spool_spooled_records_total"),
        u64::from(N)
    );
    assert_eq!(
        sample(&text, "ringrelay_spool_spooled_bytes_total"),
        spooled_bytes
    );
    assert_eq!(sample(&text, "ringrelay_spool_bytes"), size);
    assert!(
        sample(&text, "ringrelay_spool_oldest_age_seconds") >= 1,
        "{text}"
    );
    assert_eq!(sample(&text, "ringrelay_spool_replayed_records_total"), 0);
    assert_eq!(sample(&text, "ringrelay_spool_unsynced_bytes"), 0);
    assert_eq!(output_counter(&relay, &url, "spool_unsynced"), 0);

    // The collector comes: the spool is replayed, in order, and the gauges fall.
    let collector = Collector::listen(collector_addr, None);
    wait_for("every record at the collector", TRANSFER_TIMEOUT, || {
        split_frames(&collector.concatenated()).0.len() >= N as usize
    });
    let data = collector.concatenated();
    let (frames, rest) = split_frames(&data);
    assert_eq!(rest, 0);
    let got: Vec<u32> = frames
        .iter()
        .map(|f| u32::from_be_bytes(f[..4].try_into().unwrap()))
        .collect();
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "records out of order, lost or repeated"
    );
    wait_for("the replay in stat", TRANSFER_TIMEOUT, || {
        doc = stat_json(&shm);
        let sp = &doc["channels"][0]["outputs"][0]["spool"];
        sp["replayed_records"] == N && sp["oldest_age_seconds"] == 0
    });
    let sp = &doc["channels"][0]["outputs"][0]["spool"];
    assert_eq!(sp["replayed_bytes"], spooled_bytes, "{sp}");
    assert_eq!(
        output_counter(&relay, &url, "replayed_records"),
        u64::from(N)
    );
    let prom = stat_output(&shm, &["--format", "prometheus"]);
    assert_eq!(
        sample(&prom, "ringrelay_spool_replayed_records_total"),
        u64::from(N)
    );
    assert_eq!(
        sample(&prom, "ringrelay_spool_replayed_bytes_total"),
        spooled_bytes
    );
    assert_eq!(sample(&prom, "ringrelay_spool_dropped_records_total"), 0);
    let table = stat_output(&shm, &[]);
    assert!(table.contains("spooled output"), "{table}");
    let text = scrape(metrics);
    assert_eq!(
        sample(&text, "ringrelay_spool_replayed_records_total"),
        u64::from(N)
    );
    assert_eq!(sample(&text, "ringrelay_spool_oldest_age_seconds"), 0);
    relay.stop();
}

/// With `spool_sync=1h` nothing spooled is synced while the relay runs: every byte of the
/// spool is unsynced, and stat (json, prometheus, table), `/metrics` and the counters line say
/// the same number.
fn unsynced_bytes_wait_for_a_sync(features: Features) {
    const M: u32 = 200;
    let dir = TempDir::new("metrics-unsynced");
    let shm = dir.join("shm");
    let (relay, input, metrics, collector_addr) = start(features, &dir, "1h");
    let url = format!("tcp://{collector_addr}");
    let labels = format!("channel=\"sp\",output=\"{url}\"");
    send(input, M);
    let mut doc = serde_json::Value::Null;
    wait_for("every record spooled, in stat", TRANSFER_TIMEOUT, || {
        doc = stat_json(&shm);
        doc["channels"][0]["outputs"][0]["spool"]["spooled_records"] == M
    });
    let sp = &doc["channels"][0]["outputs"][0]["spool"];
    let unsynced = sp["unsynced_bytes"].as_u64().unwrap();
    let payload: u64 = (0..M).map(|i| record(i).len() as u64).sum();
    assert!(unsynced >= payload, "{sp}");
    assert_eq!(unsynced, sp["bytes"].as_u64().unwrap(), "{sp}");
    assert_eq!(output_counter(&relay, &url, "spool_unsynced"), unsynced);
    let sample = |text: &str| {
        prometheus_sample(text, "ringrelay_spool_unsynced_bytes", &labels)
            .unwrap_or_else(|| panic!("no ringrelay_spool_unsynced_bytes:\n{text}"))
    };
    assert_eq!(sample(&scrape(metrics)), unsynced);
    let prom = stat_output(&shm, &["--format", "prometheus"]);
    assert!(
        prom.contains("# TYPE ringrelay_spool_unsynced_bytes gauge"),
        "{prom}"
    );
    assert_eq!(sample(&prom), unsynced);
    let table = stat_output(&shm, &[]);
    let row = table
        .lines()
        .skip_while(|l| !l.contains("spooled output"))
        .nth(1)
        .unwrap_or_else(|| panic!("no spool table:\n{table}"));
    assert!(table.contains(" unsynced"), "{table}");
    assert_eq!(
        row.split_whitespace().last(),
        Some(unsynced.to_string().as_str()),
        "{table}"
    );
    relay.stop();
}
