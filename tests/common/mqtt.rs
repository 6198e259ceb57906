//! A real mosquitto for the tests of `mqtt://` outputs: started on a free loopback port with
//! a generated config (persistence on, QoS 0 messages queued for offline persistent
//! subscribers) in a temp dir, stopped and started again on the same port, and read with
//! `mosquitto_sub`.
//!
//! Subscribers have a persistent session (`-c -i ID -q 1`): the session is made first (`-E`:
//! exit once subscribed), then read with `-C COUNT -W TIMEOUT`, so no message published in
//! between can be missed. Without mosquitto, [`have_mosquitto`] prints a loud notice and the
//! test returns, unless RINGRELAY_REQUIRE_MOSQUITTO=1 (CI) makes it fail.

use super::*;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Whether mosquitto and its clients are here; without them, a loud notice (or, with
/// RINGRELAY_REQUIRE_MOSQUITTO=1, a failure).
pub fn have_mosquitto() -> bool {
    let sub = Command::new("mosquitto_sub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if std::path::Path::new(MOSQUITTO).exists() && sub {
        return true;
    }
    if std::env::var("RINGRELAY_REQUIRE_MOSQUITTO").as_deref() == Ok("1") {
        panic!("mosquitto or mosquitto_sub is missing and RINGRELAY_REQUIRE_MOSQUITTO=1");
    }
    eprintln!("\n*** NOTICE: mosquitto (Debian packages mosquitto, mosquitto-clients) is not installed: MQTT test SKIPPED ***\n");
    false
}

/// The user running the tests: mosquitto started as root drops to user `mosquitto` unless
/// told to stay, and that user could not write its log and store in the temp dir.
pub fn whoami() -> String {
    let o = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A mosquitto on a free loopback port, killed on drop.
pub struct Broker {
    pub child: Option<Child>,
    pub port: u16,
    conf: PathBuf,
    log: PathBuf,
}

impl Broker {
    /// Starts one in `dir`; `extra` goes into its config (password files and the like).
    pub fn start(dir: &TempDir, extra: &str) -> Broker {
        let mut b = Broker::reserve(dir, extra);
        b.run();
        b
    }

    /// Its config on a free port, not started (a broker that is down until [`Broker::run`]).
    pub fn reserve(dir: &TempDir, extra: &str) -> Broker {
        let port = free_tcp_port(LOCALHOST4);
        let conf = dir.join("mosquitto.conf");
        let log = dir.join("mosquitto.log");
        let data = dir.join("mosquitto-data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            &conf,
            format!(
                "user {}\nlistener {port} 127.0.0.1\npersistence true\npersistence_location {}/\n\
                 queue_qos0_messages true\nmax_queued_messages 100000\n\
                 log_dest file {}\nlog_type all\n{}",
                whoami(),
                data.display(),
                log.display(),
                if extra.is_empty() {
                    "allow_anonymous true\n"
                } else {
                    extra
                }
            ),
        )
        .unwrap();
        Broker {
            child: None,
            port,
            conf,
            log,
        }
    }

    pub fn run(&mut self) {
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let port = self.port;
        wait_for("mosquitto to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Stops it with SIGTERM (it saves its persistent sessions) and waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    /// Sends `sig` to the running broker (SIGSTOP: a broker that no longer answers).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let c = self.child.as_ref().expect("a running broker");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig).unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, topic: &str) -> String {
        format!("mqtt://127.0.0.1:{}/{topic}", self.port)
    }

    /// Makes a persistent QoS 1 session `id` subscribed to `topic` (returns once subscribed).
    pub fn subscribe(&self, id: &str, topic: &str, auth: &[&str]) {
        let st = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-c", "-i", id, "-q", "1", "-t", topic, "-E"])
            .args(auth)
            .stdout(Stdio::null())
            .status()
            .expect("mosquitto_sub -E");
        assert!(st.success(), "mosquitto_sub -E failed: {st}");
    }

    /// Reads `count` messages of session `id` (at most `secs` seconds): one line each.
    pub fn read(
        &self,
        id: &str,
        topic: &str,
        count: usize,
        secs: u32,
        auth: &[&str],
    ) -> Vec<String> {
        let out = output_within(
            Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-c", "-i", id, "-q", "1", "-t", topic])
                .args(["-C", &count.to_string(), "-W", &secs.to_string()])
                .args(auth),
            "mosquitto_sub -C",
            Duration::from_secs(u64::from(secs) + 10),
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Broker {
    /// Reads session `id` until `want` distinct messages came, or none came for `quiet_secs`
    /// (at most a minute past that): one subscriber that stays connected, so the broker's
    /// re-sends of QoS 1 messages (duplicates) cannot crowd out the rest, as they could in
    /// reads of a fixed count.
    pub fn read_distinct(
        &self,
        id: &str,
        topic: &str,
        want: usize,
        quiet_secs: u64,
    ) -> Vec<String> {
        self.read_distinct_with(id, topic, want, quiet_secs, &[])
    }

    /// Like [`Broker::read_distinct`], each message's payload exactly: printed in hex by
    /// `mosquitto_sub` and decoded here, so a payload holding a line end (two lines run
    /// together) cannot pass for two messages.
    pub fn read_distinct_exact(
        &self,
        id: &str,
        topic: &str,
        want: usize,
        quiet_secs: u64,
    ) -> Vec<String> {
        self.read_distinct_with(id, topic, want, quiet_secs, &["-F", "%x"])
            .iter()
            .map(|h| unhex(h))
            .collect()
    }

    fn read_distinct_with(
        &self,
        id: &str,
        topic: &str,
        want: usize,
        quiet_secs: u64,
        extra: &[&str],
    ) -> Vec<String> {
        use std::io::BufRead;
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-c", "-i", id, "-q", "1", "-t", topic])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto_sub");
        let out = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut got = Vec::new();
        let mut distinct = std::collections::HashSet::new();
        let end = std::time::Instant::now() + Duration::from_secs(quiet_secs + 60);
        while distinct.len() < want && std::time::Instant::now() < end {
            match rx.recv_timeout(Duration::from_secs(quiet_secs)) {
                Ok(line) => {
                    distinct.insert(line.clone());
                    got.push(line);
                }
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        got
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends `msgs` as datagrams to `to`, paced so that loopback loses none.
pub fn send(to: SocketAddr, msgs: &[String]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, m) in msgs.iter().enumerate() {
        s.send_to(m.as_bytes(), to).unwrap();
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

pub fn messages(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{tag}-{i:06}-{}", "x".repeat(i % 50)))
        .collect()
}

/// Every message of `want` is in `got`, first seen in order; returns the duplicates.
pub fn assert_all_in_order(what: &str, got: &[String], want: &[String]) -> usize {
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<&String> = got.iter().filter(|m| seen.insert(m.as_str())).collect();
    let want_refs: Vec<&String> = want.iter().collect();
    if firsts != want_refs {
        let at = firsts.iter().zip(&want_refs).position(|(a, b)| a != b);
        let around = |v: &[&String], i: usize| -> Vec<String> {
            v[i.saturating_sub(2)..(i + 3).min(v.len())]
                .iter()
                .map(|m| format!("{m:?}"))
                .collect()
        };
        let near = at.map_or(String::new(), |i| {
            format!(
                "; got there {:?}, wanted {:?}",
                around(&firsts, i),
                around(&want_refs, i)
            )
        });
        panic!(
            "{what}: {} distinct messages of {} wanted; first difference at {at:?}{near}",
            firsts.len(),
            want.len()
        );
    }
    got.len() - firsts.len()
}

/// The text whose bytes `hex` spells (as `mosquitto_sub -F %x` prints a payload).
pub fn unhex(hex: &str) -> String {
    assert!(hex.len() % 2 == 0, "odd hex payload {hex:?}");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("a hex payload"))
        .collect();
    String::from_utf8(bytes).expect("a UTF-8 payload")
}
