//! A spooling output's counters outside the SIGUSR1 line: `ringrelay stat --format json` and
//! `--format prometheus` (from the counters region) and `GET /metrics` show the records that
//! went to disk while the collector was away, the spool's size and oldest age as gauges, and
//! the replay once it is back; all agree with the counters line. Runs with both feature sets.

#[macro_use]
mod common;

use common::counters::{output_counter, prometheus_sample, stat_json, stat_output};
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

in_both_feature_sets!(spool_counters_in_stat_and_metrics);

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

fn spool_counters_in_stat_and_metrics(features: Features) {
    let dir = TempDir::new("metrics-spool");
    let shm = dir.join("shm");
    let spool = dir.join("spool").display().to_string();
    let collector_addr = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
    let (relay, (input, metrics)) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let metrics = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}metrics = {metrics}\n[channel sp]\ninput = udp://{input}\nframing = u32be\noutput = tcp://{collector_addr} max_backlog=64KiB spool={spool} spool_sync=200ms\n",
            dir.global_section()
        );
        (conf, (input, metrics))
    });
    let url = format!("tcp://{collector_addr}");
    let labels = format!("channel=\"sp\",output=\"{url}\"");
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..N {
        tx.send_to(&record(i), input).unwrap();
        if i % 16 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

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
