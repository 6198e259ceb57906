//! The HTTP server of `metrics = HOST:PORT` against the real binary: `/metrics` parsed by a
//! real exposition-format parser (Python's prometheus_client) agrees exactly with the traffic
//! sent; `/healthz` follows a collector that goes away and comes back; 50 idle connections, a
//! 200KB header, random bytes and a slowloris at once leave a scrape answered within 1 s while
//! data flows; 404, 405, 431, HEAD, HTTP/1.0 and keep-alive; `metrics_allow` refusing; a port
//! in use is a start-up error naming the port.
//!
//! prometheus_client: CI installs it. Where it is missing the parsing test says so loudly and
//! returns, unless `RINGRELAY_REQUIRE_PROMCLIENT=1`.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A relay with channel `plain`: a UDP input and a UDP output to `sink`, and the metrics
/// server on a free loopback port. `extra` goes into `[global]`.
fn start(
    features: Features,
    dir: &TempDir,
    extra: &str,
    output: &str,
) -> (Relay, (SocketAddr, SocketAddr)) {
    Relay::start(features, dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let metrics = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}metrics = {metrics}\n{extra}\n[channel plain]\ninput = udp://{input}\noutput = {output}\n",
            dir.global_section(),
        );
        (conf, (input, metrics))
    })
}

/// One response: status, headers (lower-case names), body.
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Reads one response from `s` (Content-Length framed), within `limit`.
fn read_response(s: &mut TcpStream, limit: Duration) -> Response {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut chunk).expect("read a response head");
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    let len: usize = headers["content-length"].parse().unwrap();
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).expect("read a response body");
        assert!(n > 0, "connection closed inside a body");
        body.extend_from_slice(&chunk[..n]);
    }
    Response {
        status,
        headers,
        body,
    }
}

/// `GET path` on a fresh connection (closed after), answered within `limit`.
fn get_within(addr: SocketAddr, path: &str, limit: Duration) -> Response {
    let mut s = TcpStream::connect_timeout(&addr, limit).expect("connect to the metrics server");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_response(&mut s, limit)
}

fn get(addr: SocketAddr, path: &str) -> Response {
    get_within(addr, path, Duration::from_secs(10))
}

fn body(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// `/metrics` parsed by prometheus_client: `name{labels sorted}` -> value, and family types;
/// `None` when the module is missing (and not required).
fn parse_with_promclient(text: &str) -> Option<(HashMap<String, f64>, HashMap<String, String>)> {
    const SCRIPT: &str = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    print(json.dumps({"family": f.name, "type": f.type}))
    for s in f.samples:
        print(json.dumps({"name": s.name, "labels": sorted(s.labels.items()), "value": s.value}))
"#;
    let has = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        if std::env::var("RINGRELAY_REQUIRE_PROMCLIENT").is_ok_and(|v| v == "1") {
            panic!("python3 prometheus_client is required (RINGRELAY_REQUIRE_PROMCLIENT=1) but missing");
        }
        eprintln!("\n\n*** NOTICE: python3 prometheus_client is missing: /metrics NOT checked by a real parser (pip install prometheus_client) ***\n\n");
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = output_within_child(child);
    assert!(
        out.status.success(),
        "prometheus_client refused the page:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut samples = HashMap::new();
    let mut types = HashMap::new();
    for l in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if let Some(f) = v["family"].as_str() {
            types.insert(f.to_string(), v["type"].as_str().unwrap().to_string());
            continue;
        }
        let labels: Vec<String> = v["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!("{}={}", p[0].as_str().unwrap(), p[1].as_str().unwrap()))
            .collect();
        samples.insert(
            format!("{}{{{}}}", v["name"].as_str().unwrap(), labels.join(",")),
            v["value"].as_f64().unwrap(),
        );
    }
    Some((samples, types))
}

fn output_within_child(child: std::process::Child) -> std::process::Output {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("python3 finished within 30 s")
        .expect("python3 output")
}

/// Every counter of `/metrics` agrees with N datagrams of M bytes relayed, as a real parser
/// reads them; every family the issue names is there.
fn counters_match_the_traffic(features: Features) {
    const N: usize = 400;
    const M: usize = 500;
    let dir = TempDir::new("metrics-counts");
    let sink = DatagramSink::bind("udp output", "127.0.0.1:0".parse().unwrap());
    let (relay, (input, metrics)) = start(features, &dir, "", &format!("udp://{}", sink.addr));
    let dgrams: Vec<Vec<u8>> = (0..N).map(|i| vec![i as u8; M]).collect();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_windowed(&tx, input, &dgrams, || sink.count(), sink.name());
    assert_eq!(sink.count(), N);

    let r = get(metrics, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = body(&r);
    for family in [
        "ringrelay_input_bytes_total",
        "ringrelay_input_datagrams_total",
        "ringrelay_input_drops_total",
        "ringrelay_input_malformed_total",
        "ringrelay_input_reconnects_total",
        "ringrelay_input_up",
        "ringrelay_output_bytes_total",
        "ringrelay_output_datagrams_total",
        "ringrelay_output_drops_total",
        "ringrelay_output_disconnects_total",
        "ringrelay_output_reconnects_total",
        "ringrelay_output_backlog_bytes",
        "ringrelay_output_clients",
        "ringrelay_output_up",
        "ringrelay_pool_buffers",
        "ringrelay_ring_inflight",
        "ringrelay_shm_frames_written_total",
        "ringrelay_build_info",
        "process_start_time_seconds",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family}:\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no TYPE for {family}:\n{text}"
        );
    }
    let Some((s, types)) = parse_with_promclient(&text) else {
        relay.stop();
        return;
    };
    let out = format!("channel=plain,output=udp://{}", sink.addr);
    let want = [
        (
            "ringrelay_input_bytes_total{channel=plain}".to_string(),
            (N * M) as f64,
        ),
        (
            "ringrelay_input_datagrams_total{channel=plain}".into(),
            N as f64,
        ),
        ("ringrelay_input_drops_total{channel=plain}".into(), 0.0),
        ("ringrelay_input_malformed_total{channel=plain}".into(), 0.0),
        ("ringrelay_input_up{channel=plain}".into(), 1.0),
        (
            format!("ringrelay_output_bytes_total{{{out}}}"),
            (N * M) as f64,
        ),
        (
            format!("ringrelay_output_datagrams_total{{{out}}}"),
            N as f64,
        ),
        (format!("ringrelay_output_drops_total{{{out}}}"), 0.0),
        (format!("ringrelay_output_backlog_bytes{{{out}}}"), 0.0),
        (format!("ringrelay_output_up{{{out}}}"), 1.0),
    ];
    for (k, v) in want {
        assert_eq!(s.get(&k), Some(&v), "{k}; parsed:\n{s:#?}");
    }
    assert_eq!(types["ringrelay_input_bytes"], "counter");
    assert_eq!(types["ringrelay_output_backlog_bytes"], "gauge");
    assert!(s
        .keys()
        .any(|k| k.starts_with("ringrelay_build_info{features=") && k.contains("version=")));
    assert!(s["process_start_time_seconds{}"] > 1.6e9);
    assert!(
        s["ringrelay_ring_inflight{}"] >= 1.0,
        "the input's receive at least:\n{text}"
    );
    assert!(s["ringrelay_pool_buffers{class=large,state=free}"] > 0.0);
    relay.stop();
}

/// A TCP collector that can go away (listener closed, connections shut) and come back on the
/// same address.
struct Collecting {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Collecting {
    fn listen(addr: SocketAddr) -> Collecting {
        let deadline = Instant::now() + Duration::from_secs(5);
        let l = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => panic!("bind {addr}: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        };
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, conns) = (stop.clone(), conns.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((mut s, _)) = l.accept() {
                        s.set_nonblocking(false).unwrap();
                        conns.lock().unwrap().push(s.try_clone().unwrap());
                        thread::spawn(move || {
                            let mut b = [0u8; 65536];
                            while matches!(s.read(&mut b), Ok(n) if n > 0) {}
                        });
                    } else {
                        thread::sleep(Duration::from_millis(5));
                    }
                }
            })
        };
        Collecting {
            addr,
            stop,
            conns,
            thread: Some(thread),
        }
    }

    fn go_away(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Collecting {
    fn drop(&mut self) {
        self.go_away();
    }
}

/// `/healthz`: 200 while the collector is there, 503 naming the output once it has been gone
/// for longer than health_grace, 200 again once it is back.
fn healthz_follows_a_collector(features: Features) {
    let dir = TempDir::new("metrics-health");
    let mut col = Collecting::listen("127.0.0.1:0".parse().unwrap());
    let addr = col.addr;
    let (relay, (_input, metrics)) = start(
        features,
        &dir,
        "health_grace = 1s",
        &format!("tcp://{addr}"),
    );
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(10), || {
        let r = get(metrics, "/healthz");
        last = body(&r);
        r.status == 200
    });
    assert!(ok, "never healthy: {last}");
    assert_eq!(last, "ok\n");
    col.go_away();
    let sick = wait_until(Duration::from_secs(15), || {
        let r = get(metrics, "/healthz");
        last = body(&r);
        r.status == 503
    });
    assert!(
        sick,
        "never 503 with the collector gone: {last}\n{}",
        relay.log()
    );
    assert!(last.contains(&format!("output tcp://{addr}")), "{last}");
    assert_eq!(last.lines().count(), 1, "{last}");
    let _back = Collecting::listen(addr);
    let well = wait_until(Duration::from_secs(40), || {
        get(metrics, "/healthz").status == 200
    });
    assert!(well, "never healthy again\n{}", relay.log());
    relay.stop();
}

/// Statuses and connection handling of odd requests.
fn statuses_and_keep_alive(features: Features) {
    let dir = TempDir::new("metrics-statuses");
    let sink = DatagramSink::bind("udp output", "127.0.0.1:0".parse().unwrap());
    let (relay, (_input, metrics)) = start(features, &dir, "", &format!("udp://{}", sink.addr));
    assert_eq!(get(metrics, "/nowhere").status, 404);
    let mut s = TcpStream::connect(metrics).unwrap();
    s.write_all(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, Duration::from_secs(10));
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET, HEAD");
    // Keep-alive: three requests on one connection, two of them pipelined.
    let mut s = TcpStream::connect(metrics).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, Duration::from_secs(10)).status, 200);
    s.write_all(b"HEAD /metrics HTTP/1.1\r\n\r\nGET /metrics?x HTTP/1.1\r\n\r\n")
        .unwrap();
    let head = read_response_head_only(&mut s);
    assert!(
        head.contains("200 OK") && head.contains("version=0.0.4"),
        "{head}"
    );
    let r = read_response(&mut s, Duration::from_secs(10));
    assert_eq!(r.status, 200);
    assert!(body(&r).contains("ringrelay_input_bytes_total"));
    // HTTP/1.0: answered, then closed.
    let mut s = TcpStream::connect(metrics).unwrap();
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let r = read_response(&mut s, Duration::from_secs(10));
    assert_eq!(r.headers["connection"], "close");
    assert_eq!(
        s.read(&mut [0u8; 16]).unwrap(),
        0,
        "HTTP/1.0 closes after the response"
    );
    // More than 8KiB of head: 431 and closed.
    let mut s = TcpStream::connect(metrics).unwrap();
    let mut req = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    req.resize(9000, b'a');
    let _ = s.write_all(&req);
    let r = read_response(&mut s, Duration::from_secs(10));
    assert_eq!(r.status, 431);
    // Garbage: 400 and closed.
    let mut s = TcpStream::connect(metrics).unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s, Duration::from_secs(10)).status, 400);
    let t = body(&get(metrics, "/metrics"));
    assert!(t.contains("\nringrelay_http_rejected_total 2\n"), "{t}");
    relay.stop();
}

/// The head of a HEAD response (no body follows).
fn read_response_head_only(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1);
        buf.push(b[0]);
    }
    String::from_utf8(buf).unwrap()
}

/// 50 idle connections, a 200KB header, random bytes and a slowloris at once, while data flows:
/// a scrape is still answered within 1 s, and the slowloris is closed at its deadline.
fn abuse_leaves_scrapes_answered(features: Features) {
    let dir = TempDir::new("metrics-abuse");
    let sink = DatagramSink::bind("udp output", "127.0.0.1:0".parse().unwrap());
    let (relay, (input, metrics)) = start(features, &dir, "", &format!("udp://{}", sink.addr));
    let stop = Arc::new(AtomicBool::new(false));
    let flow = {
        let stop = stop.clone();
        thread::spawn(move || {
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let d = vec![7u8; 1000];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = tx.send_to(&d, input);
                n += 1;
                if n % 50 == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    let idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(metrics).unwrap())
        .collect();
    let big = thread::spawn(move || {
        let mut s = TcpStream::connect(metrics).unwrap();
        let mut req = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        req.resize(200 * 1024, b'b');
        let _ = s.write_all(&req); // the server may close before taking it all
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    let mut random = TcpStream::connect(metrics).unwrap();
    random.write_all(&pattern(12345, 3000)).unwrap();
    let loris = thread::spawn(move || {
        let mut s = TcpStream::connect(metrics).unwrap();
        let started = Instant::now();
        for b in b"GET /metrics HTTP/1.1\r\nX-Slow: "
            .iter()
            .chain([b'z'; 200].iter())
        {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
            if started.elapsed() > Duration::from_secs(15) {
                break;
            }
        }
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let closed = matches!(s.read(&mut [0u8; 16]), Ok(0) | Err(_));
        (closed, started.elapsed())
    });
    thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let t = Instant::now();
        let r = get_within(metrics, "/metrics", Duration::from_secs(1));
        assert_eq!(r.status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "scrape took {:?}",
            t.elapsed()
        );
        thread::sleep(Duration::from_millis(200));
    }
    let got = big.join().unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let (closed, after) = loris.join().unwrap();
    assert!(closed, "the slowloris was never closed");
    assert!(
        after < Duration::from_secs(15),
        "the slowloris lasted {after:?}"
    );
    stop.store(true, Ordering::Relaxed);
    flow.join().unwrap();
    drop(idle);
    drop(random);
    let t = body(&get(metrics, "/metrics"));
    let count = |name: &str| -> u64 {
        t.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name}:\n{t}"))
            .parse()
            .unwrap()
    };
    assert!(count("ringrelay_http_timeouts_total") >= 1, "{t}");
    // 50 idle connections and the others do not fit in 16: the rest were evicted (or, while
    // evicted ones were still closing, refused).
    assert!(
        count("ringrelay_http_evicted_total") + count("ringrelay_http_refused_total") >= 34,
        "{t}"
    );
    assert!(sink.count() > 0);
    relay.stop();
}

/// A peer outside metrics_allow is closed at once, and counted.
fn allow_list_refuses(features: Features) {
    let dir = TempDir::new("metrics-allow");
    let sink = DatagramSink::bind("udp output", "127.0.0.1:0".parse().unwrap());
    let (relay, (_input, metrics)) = start(
        features,
        &dir,
        "metrics_allow = 127.0.0.2/32",
        &format!("udp://{}", sink.addr),
    );
    let mut s = TcpStream::connect(metrics).unwrap();
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "a refused peer got {:?}",
        String::from_utf8_lossy(&got)
    );
    // From 127.0.0.2 it answers, and counts the refusal.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    sock.connect(&metrics.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let r = read_response(&mut s, Duration::from_secs(10));
    assert_eq!(r.status, 200);
    assert!(
        body(&r).contains("\nringrelay_http_denied_total 1\n"),
        "{}",
        body(&r)
    );
    relay.stop();
}

/// `metrics` on a port another process listens on: the daemon does not start, and says which
/// port.
fn port_in_use_is_a_startup_error(features: Features) {
    let dir = TempDir::new("metrics-inuse");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
    let conf = dir.join("ringrelay.conf");
    std::fs::write(
        &conf,
        format!(
            "{}metrics = 127.0.0.1:{port}\n\n[channel plain]\ninput = udp://{input}\noutput = udp://127.0.0.1:9\n",
            dir.global_section()
        ),
    )
    .unwrap();
    let args = vec![
        "run".to_string(),
        "-c".to_string(),
        conf.display().to_string(),
    ];
    match Relay::spawn(features, &args) {
        Started::Ready(r) => {
            r.stop();
            panic!("started with its metrics port taken");
        }
        Started::Exited(status, log) => {
            assert_eq!(status.code(), Some(1), "{log}");
            assert!(log.contains(&format!("port {port} is in use")), "{log}");
        }
    }
    drop(taken);
}

in_both_feature_sets!(
    counters_match_the_traffic,
    healthz_follows_a_collector,
    statuses_and_keep_alive,
    abuse_leaves_scrapes_answered,
    allow_list_refuses,
    port_in_use_is_a_startup_error
);
