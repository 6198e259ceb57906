//! `ringrelay stat` against a running relay with no decimating channel: the counters region is
//! published all the same, and its JSON, Prometheus text and `--watch` rates agree with the
//! traffic sent. And a relay whose `shm_dir` cannot be made still relays, with a warning.

mod common;

use common::*;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

/// Datagrams sent, and their size.
const N: usize = 300;
const M: usize = 700;
const STAT_LIMIT: Duration = Duration::from_secs(20);

/// A relay with one channel `plain`: a UDP input and a UDP output to `sink`, no decimation.
fn start(
    features: Features,
    dir: &TempDir,
    shm: &ShmDir,
    sink: &DatagramSink,
) -> (Relay, SocketAddr) {
    Relay::start(features, dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel plain]\ninput = udp://{input}\noutput = udp://{}\n",
            shm.global_section(),
            sink.addr
        );
        (conf, input)
    })
}

/// `ringrelay stat ARGS --shm-dir DIR`: exit status and stdout (stderr in the panic message).
fn stat(shm: &ShmDir, args: &[&str]) -> String {
    let o = output_within(
        Command::new(bin())
            .arg("stat")
            .args(args)
            .args(["--shm-dir", shm.str()]),
        &format!("ringrelay stat {args:?}"),
        STAT_LIMIT,
    );
    assert!(
        o.status.success(),
        "ringrelay stat {args:?}: {}; stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8 output")
}

/// The JSON document, once its input and output both count `N` datagrams.
fn settled_json(shm: &ShmDir) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let done = wait_until(Duration::from_secs(10), || {
        last = serde_json::from_str(&stat(shm, &["--format", "json"])).expect("valid JSON");
        let ch = &last["channels"][0];
        ch["input"]["datagrams"] == N && ch["outputs"][0]["datagrams"] == N
    });
    assert!(done, "the counters never reached {N} datagrams:\n{last:#}");
    last
}

/// JSON and Prometheus text of a relay that has relayed exactly N datagrams of M bytes.
fn stat_counts_the_traffic(features: Features) {
    let dir = TempDir::new("stat");
    let shm = ShmDir::new("stat");
    let sink = DatagramSink::bind("udp output", "127.0.0.1:0".parse().unwrap());
    let (relay, input) = start(features, &dir, &shm, &sink);
    let dgrams: Vec<Vec<u8>> = (0..N).map(|i| vec![i as u8; M]).collect();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_windowed(&tx, input, &dgrams, || sink.count(), sink.name());
    assert_eq!(sink.count(), N);

    let doc = settled_json(&shm);
    let d = &doc["daemon"];
    assert_eq!(d["pid"], relay.pid(), "{doc:#}");
    assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(d["state"], "running");
    let started = d["started_ns"].as_i64().expect("started_ns");
    assert!(started > 1_600_000_000_000_000_000 && started <= d["updated_ns"].as_i64().unwrap());
    let pool = &d["pool"];
    assert!(pool["buffers_total"].as_u64().unwrap() > 0, "{doc:#}");
    assert!(pool["buffers_in_use"].as_u64().unwrap() <= pool["buffers_total"].as_u64().unwrap());
    let chans = doc["channels"].as_array().unwrap();
    assert_eq!(chans.len(), 1);
    let ch = &chans[0];
    assert_eq!(ch["name"], "plain");
    let inp = &ch["input"];
    assert_eq!(inp["url"], format!("udp://{input}"));
    assert_eq!(inp["state"], "up");
    assert_eq!(inp["up"], true);
    assert_eq!(inp["bytes"], N * M, "{doc:#}");
    assert_eq!(inp["datagrams"], N);
    for k in ["drops", "malformed", "reconnects", "errors"] {
        assert_eq!(inp[k], 0, "input {k}: {doc:#}");
    }
    let out = &ch["outputs"][0];
    assert_eq!(out["url"], format!("udp://{}", sink.addr));
    assert_eq!(out["state"], "up");
    assert_eq!(out["bytes"], N * M, "{doc:#}");
    assert_eq!(out["datagrams"], N);
    for k in ["drops", "disconnects", "errors", "backlog", "clients"] {
        assert_eq!(out[k], 0, "output {k}: {doc:#}");
    }

    let text = stat(&shm, &["--format", "prometheus"]);
    let m = parse_prometheus(&text);
    let ch = [("channel", "plain")];
    let url = format!("udp://{}", sink.addr);
    let out = [("channel", "plain"), ("output", url.as_str())];
    for (name, labels, want) in [
        ("ringrelay_input_bytes_total", &ch[..], (N * M) as f64),
        ("ringrelay_input_datagrams_total", &ch, N as f64),
        ("ringrelay_input_drops_total", &ch, 0.0),
        ("ringrelay_input_malformed_total", &ch, 0.0),
        ("ringrelay_input_reconnects_total", &ch, 0.0),
        ("ringrelay_input_up", &ch, 1.0),
        ("ringrelay_output_bytes_total", &out[..], (N * M) as f64),
        ("ringrelay_output_datagrams_total", &out, N as f64),
        ("ringrelay_output_drops_total", &out, 0.0),
        ("ringrelay_output_disconnects_total", &out, 0.0),
        ("ringrelay_output_reconnects_total", &out, 0.0),
        ("ringrelay_output_backlog_bytes", &out, 0.0),
        ("ringrelay_output_clients", &out, 0.0),
        ("ringrelay_output_up", &out, 1.0),
        ("ringrelay_up", &[], 1.0),
    ] {
        assert_eq!(
            m.value(name, labels),
            Some(want),
            "{name}{labels:?} in\n{text}"
        );
    }
    for (family, kind) in [
        ("ringrelay_input_bytes_total", "counter"),
        ("ringrelay_output_backlog_bytes", "gauge"),
        ("ringrelay_pool_buffers", "gauge"),
    ] {
        assert_eq!(
            m.types.get(family).map(String::as_str),
            Some(kind),
            "{text}"
        );
    }
    let pool_total: f64 = m
        .samples
        .iter()
        .filter(|s| s.name == "ringrelay_pool_buffers")
        .map(|s| s.value)
        .sum();
    assert_eq!(
        pool_total,
        doc["daemon"]["pool"]["buffers_total"].as_u64().unwrap() as f64
    );

    let table = stat(&shm, &[]);
    let row = table
        .lines()
        .find(|l| l.starts_with("plain") && l.contains(" in "))
        .unwrap_or_else(|| panic!("no input row:\n{table}"));
    assert!(row.contains(&format!(" {} ", N * M)), "{table}");
    relay.stop();
}

/// `--watch 200ms --count 3` while datagrams flow: three tables, with rates.
fn stat_watch_shows_rates(features: Features) {
    let dir = TempDir::new("stat-watch");
    let shm = ShmDir::new("watch");
    let sink = DatagramSink::bind("udp output", "127.0.0.1:0".parse().unwrap());
    let (relay, input) = start(features, &dir, &shm, &sink);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tx.send_to(&[7u8; M], input).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // The traffic has begun before the first of the two snapshots is taken.
    wait_for(
        "datagrams through the relay",
        Duration::from_secs(10),
        || sink.count() > 10,
    );
    let text = stat(&shm, &["--watch", "200ms", "--count", "3"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    join_with_timeout(sender, Duration::from_secs(5), "sender");

    let tables: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(
        tables.len(),
        3,
        "three tables, plain (stdout is a pipe):\n{text}"
    );
    assert!(
        !text.contains('\x1b'),
        "no terminal codes into a pipe:\n{text}"
    );
    for t in &tables {
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("# ringrelay ") && lines[0].contains("; rates over "),
            "{t}"
        );
        let head: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            head,
            [
                "channel", "end", "url", "state", "bytes/s", "dgram/s", "drops/s", "backlog",
                "clients"
            ]
        );
        assert_eq!(lines.len(), 4, "input and output rows:\n{t}");
    }
    // At one datagram per 2 ms (fewer under load), the last table shows traffic in and out.
    let last: Vec<Vec<&str>> = tables[2]
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    for row in &last {
        let bytes: f64 = row[4].parse().unwrap();
        let dgrams: f64 = row[5].parse().unwrap();
        assert!(dgrams > 10.0 && dgrams < 1000.0, "{row:?} in\n{text}");
        assert!(
            // dgram/s is printed to 0.1, so the product is exact to 0.05 × M.
            (bytes - dgrams * M as f64).abs() <= 0.05 * M as f64 + 0.1,
            "{row:?}: bytes/s = {M} × dgram/s"
        );
        assert_eq!(row[6], "0.0", "no drops: {row:?}");
    }
    relay.stop();
}

/// A `shm_dir` that cannot be made (its parent is a file): the relay starts and relays with a
/// warning, and `stat` says there is no counters region and why it may be.
fn relay_runs_without_a_counters_region(features: Features) {
    let dir = TempDir::new("stat-noshm");
    std::fs::write(dir.join("file"), b"").unwrap();
    let shm_dir = dir.join("file").join("shm");
    let sink = DatagramSink::bind("udp output", "127.0.0.1:0".parse().unwrap());
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let conf = format!(
            "[global]\nshm_dir = {}\nshutdown_timeout = 5s\nlog_level = info\n\n[channel plain]\ninput = udp://{input}\noutput = udp://{}\n",
            shm_dir.display(),
            sink.addr
        );
        (conf, input)
    });
    let log = relay.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("cannot create the counters region")),
        "{log}"
    );
    let dgrams: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; 100]).collect();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_windowed(&tx, input, &dgrams, || sink.count(), sink.name());
    let o = output_within(
        Command::new(bin()).args(["stat", "--shm-dir", shm_dir.to_str().unwrap()]),
        "ringrelay stat",
        STAT_LIMIT,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no counters region"), "{err}");
    relay.stop();
}

in_both_feature_sets!(
    stat_counts_the_traffic,
    stat_watch_shows_rates,
    relay_runs_without_a_counters_region
);

// ------------------------------------------------------------------------------------------------
// A strict reader of the Prometheus text format 0.0.4 (what this test needs of it)

struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
            })
            .collect();
        assert!(found.len() <= 1, "{name}{labels:?} twice");
        found.first().map(|s| s.value)
    }
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Panics on anything the format does not allow: a sample before its family's HELP and TYPE,
/// a family announced twice or interleaved with another, a bad name, label or escape.
fn parse_prometheus(text: &str) -> Exposition {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut helps = HashMap::new();
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    let mut current: Option<String> = None;
    let mut finished = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(valid_name(name), "{line}");
            assert!(
                helps.insert(name.to_string(), help.to_string()).is_none(),
                "HELP twice: {line}"
            );
            if let Some(c) = current.replace(name.to_string()) {
                finished.insert(c);
            }
            assert!(!finished.contains(name), "family {name} interleaved");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert_eq!(
                current.as_deref(),
                Some(name),
                "TYPE right after its HELP: {line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice: {line}"
            );
        } else {
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "unexpected line {line:?}"
            );
            let (name, labels, rest) = match line.find('{') {
                Some(b) => {
                    let (labels, rest) = parse_labels(&line[b + 1..], line);
                    (&line[..b], labels, rest)
                }
                None => {
                    let (n, r) = line.split_once(' ').expect("name value");
                    (n, Vec::new(), r)
                }
            };
            assert!(valid_name(name), "{line}");
            assert_eq!(
                current.as_deref(),
                Some(name),
                "sample after its family's TYPE: {line}"
            );
            assert!(types.contains_key(name), "{line}");
            let value: f64 = rest
                .trim_start_matches(' ')
                .parse()
                .unwrap_or_else(|_| panic!("value: {line}"));
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
    }
    Exposition { types, samples }
}

/// `k="v",...}` then ` value`: the labels (unescaped) and what follows the brace.
fn parse_labels<'a>(mut s: &'a str, line: &str) -> (Vec<(String, String)>, &'a str) {
    let mut labels = Vec::new();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            assert!(rest.starts_with(' '), "{line}");
            return (labels, rest);
        }
        let eq = s.find("=\"").unwrap_or_else(|| panic!("label: {line}"));
        let key = &s[..eq];
        assert!(
            valid_name(key) && !key.contains(':'),
            "label name {key:?}: {line}"
        );
        let mut value = String::new();
        let mut chars = s[eq + 2..].char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break eq + 2 + i + 1,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => panic!("bad escape {other:?}: {line}"),
                },
                Some((_, '\n')) | None => panic!("unterminated label value: {line}"),
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = &s[end..];
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        }
    }
}
