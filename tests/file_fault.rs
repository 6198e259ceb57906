//! A `file://` output whose file or directory goes away: it notices, holds its data for
//! `fault_grace`, then drops (counted) so the channel's other outputs keep flowing, and opens
//! the file again by itself once its directory is back.
//!
//! Each test runs a UDP channel with a file output in a temporary directory and a
//! `tcp-listen://` subscriber, with a sender thread feeding the input at about 1 MB/s.

mod common;

use common::*;
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A thread sending 1000-byte datagrams to the relay's input every millisecond until dropped.
struct Sender {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    fn start(to: SocketAddr) -> Sender {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                let s = UdpSocket::bind("127.0.0.1:0").expect("sender socket");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut d = vec![0u8; 1000];
                    d[..8].copy_from_slice(&n.to_le_bytes());
                    let _ = s.send_to(&d, to);
                    n += 1;
                    thread::sleep(Duration::from_millis(1));
                }
            })
        };
        Sender {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A relay with channel `f`: a UDP input, the file output `file` with `file_opts`, and a
/// subscriber output. `global` is the `[global]` section.
fn start(
    dir: &TempDir,
    global: &str,
    file: &Path,
    file_opts: &str,
) -> (Relay, SocketAddr, SocketAddr) {
    let (relay, (input, subs)) = Relay::start(Features::Auto, dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let text = format!(
            "{global}[channel f]\ninput = udp://{input}\n\
             output = file://{} {file_opts}\noutput = tcp-listen://{subs}\n",
            file.display()
        );
        (text, (input, subs))
    });
    (relay, input, subs)
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Waits until the subscriber and the file both got data.
fn wait_flowing(sub: &StreamSink, file: &Path) {
    wait_for(
        "data in the file and at the subscriber",
        Duration::from_secs(10),
        || file_len(file) > 0 && !sub.is_empty(),
    );
}

/// Bytes the subscriber receives over `d`.
fn received_over(sub: &StreamSink, d: Duration) -> usize {
    let a = sub.len();
    thread::sleep(d);
    sub.len() - a
}

#[test]
fn removed_directory_with_rotate_drops_after_fault_grace_then_resumes_in_a_new_file() {
    let dir = TempDir::new("file-fault-dir");
    let out: PathBuf = dir.join("out");
    fs::create_dir(&out).unwrap();
    let file = out.join("data.raw");
    let (mut relay, input, subs) = start(
        &dir,
        &dir.global_section(),
        &file,
        "rotate=256KiB keep=2 max_backlog=64KiB fault_grace=1s",
    );
    let sub = StreamSink::tcp("subscriber", subs);
    let sender = Sender::start(input);
    wait_flowing(&sub, &file);

    fs::remove_dir_all(&out).unwrap();
    // Noticed within a second or so, held for fault_grace (1s), then dropped: the subscriber
    // of the same `block` channel keeps receiving.
    thread::sleep(Duration::from_secs(3));
    relay.assert_running("after the directory was removed");
    let got = received_over(&sub, Duration::from_secs(2));
    assert!(
        got > 200_000,
        "the subscriber received {got} bytes in 2s while the file's directory was missing; log:\n{}",
        relay.log()
    );
    let dropping = lines_with(&relay, "dropping its data");
    assert_eq!(
        dropping.len(),
        1,
        "one line when it starts dropping:\n{}",
        relay.log()
    );
    assert!(
        dropping[0].contains(&file.display().to_string()),
        "{dropping:?}"
    );
    assert!(!file.exists());

    // The directory is back: the output opens a new file and writes into it.
    fs::create_dir(&out).unwrap();
    wait_for("a new data.raw with data", Duration::from_secs(40), || {
        file_len(&file) > 0
    });
    wait_for("the recovery line", Duration::from_secs(5), || {
        !lines_with(&relay, "recovered").is_empty()
    });
    let grown = file_len(&file);
    wait_for("the new file to grow", Duration::from_secs(5), || {
        file_len(&file) > grown
    });
    assert!(received_over(&sub, Duration::from_millis(500)) > 0);
    assert_eq!(lines_with(&relay, "dropping its data").len(), 1);
    assert_eq!(
        lines_with(&relay, "recovered").len(),
        1,
        "one line when it recovers:\n{}",
        relay.log()
    );
    drop(sender);
    relay.stop();
}

#[test]
fn deleted_file_without_rotate_is_noticed_and_created_again() {
    let dir = TempDir::new("file-fault-unlink");
    let file = dir.join("data.raw");
    let (relay, input, subs) = start(&dir, &dir.global_section(), &file, "");
    let sub = StreamSink::tcp("subscriber", subs);
    let sender = Sender::start(input);
    wait_flowing(&sub, &file);

    fs::remove_file(&file).unwrap();
    wait_for(
        "data.raw created again, with data",
        Duration::from_secs(10),
        || file_len(&file) > 0,
    );
    let gone = lines_with(&relay, "deleted");
    assert_eq!(
        gone.len(),
        1,
        "the deletion is logged once:\n{}",
        relay.log()
    );
    assert!(gone[0].contains(&file.display().to_string()), "{gone:?}");
    assert!(received_over(&sub, Duration::from_millis(500)) > 0);
    drop(sender);
    relay.stop();
}

#[test]
fn sigterm_names_the_output_still_holding_data_and_its_bytes() {
    let dir = TempDir::new("file-fault-term");
    let out = dir.join("out");
    fs::create_dir(&out).unwrap();
    let file = out.join("data.raw");
    let global = format!(
        "[global]\nshm_dir = {}\nshutdown_timeout = 1s\nlog_level = info\n\n",
        dir.join("shm").display()
    );
    // fault_grace is long: the file output holds what it cannot write until the end.
    let (mut relay, input, subs) = start(&dir, &global, &file, "max_backlog=64KiB fault_grace=1h");
    let sub = StreamSink::tcp("subscriber", subs);
    let sender = Sender::start(input);
    wait_flowing(&sub, &file);
    fs::remove_dir_all(&out).unwrap();
    thread::sleep(Duration::from_secs(2));
    drop(sender);
    relay.terminate();
    let status = relay.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", relay.log());
    let url = format!("file://{}", file.display());
    let warned: Vec<String> = lines_with(&relay, "shutdown timeout reached")
        .into_iter()
        .filter(|l| l.contains(&url))
        .collect();
    assert_eq!(
        warned.len(),
        1,
        "the warning names the output:\n{}",
        relay.log()
    );
    let bytes: u64 = warned[0]
        .split_whitespace()
        .zip(warned[0].split_whitespace().skip(1))
        .find(|(_, unit)| unit.starts_with("bytes"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {:?}", warned[0]));
    assert!(bytes > 0, "{:?}", warned[0]);
    // And what it gave up is counted: the last counters line shows the output's drops.
    let last = lines_with(&relay, "counters: channel")
        .into_iter()
        .rfind(|l| l.contains(&format!("output {url}")))
        .unwrap_or_else(|| panic!("no final counters line:\n{}", relay.log()));
    let drops: u64 = last
        .split_whitespace()
        .find_map(|w| w.strip_prefix("drops=")?.parse().ok())
        .unwrap_or_else(|| panic!("no drops in {last:?}"));
    assert!(drops > 0, "the chunks given up count as drops: {last:?}");
}
