//! Cross-process lapping stress test of the shared-memory protocol.
//!
//! The test process writes self-verifying frames (every word derived from the frame's absolute
//! index) as fast as it can into a small ring through the real `Publisher`, while reader
//! *processes* (this test executable re-executed with `RR_LAP_ROLE`) read with random sizes and
//! random sleeps, and the test stops and resumes them with SIGSTOP/SIGCONT. Checked readers must
//! accept no corrupt frame and account for every index exactly (accepted + lost = span, chunks
//! contiguous). The negative control, a reader with the post-copy lap check switched off, must
//! be caught accepting corrupt frames by the same checks: otherwise the test has no teeth.

use ringrelay::config::sample::{DecimateSpec, SampleConfig, SampleType};
use ringrelay::shm::{Publisher, Reader, ShmOptions, WriterState};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WORDS: usize = 16;
const CAPACITY: u64 = 1024;
const WRITE_FOR: Duration = Duration::from_millis(2500);

fn expected(j: u64, k: usize) -> u32 {
    match k {
        0 => j as u32,
        1 => (j >> 32) as u32,
        _ => {
            (j as u32).wrapping_mul(0x9E37_79B1).rotate_left(k as u32)
                ^ (k as u32).wrapping_mul(0x85EB_CA6B)
        }
    }
}

/// Removes the region directory even when an assertion fails: /dev/shm is memory.
struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Reader role: runs inside a child process.
fn reader_role(dir: PathBuf, checked: bool) {
    let path = dir.join("lap");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut r = loop {
        match Reader::open(&path) {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("{e}"),
        }
    };
    r.set_lap_check(checked);
    let mut rng = Rng((std::process::id() as u64).wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let start = r.position();
    let (mut accepted, mut lost, mut corrupt, mut broken_chain) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    loop {
        let before = r.position();
        let n = 1 + rng.below(CAPACITY) as usize;
        let c = r.read(&mut buf, n).unwrap();
        if c.start != before + c.lost {
            broken_chain += 1;
        }
        lost += c.lost;
        for (i, f) in buf.chunks_exact(4 * WORDS).enumerate() {
            let j = c.start + i as u64;
            let ok = (0..WORDS).all(|k| {
                u32::from_le_bytes(f[4 * k..4 * k + 4].try_into().unwrap()) == expected(j, k)
            });
            if !ok {
                corrupt += 1;
            }
        }
        accepted += c.frames as u64;
        if c.frames == 0 && c.lost == 0 {
            if r.writer_state() == WriterState::Stopped && r.position() == r.head().unwrap() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        } else if rng.below(8) == 0 {
            std::thread::sleep(Duration::from_micros(rng.below(2000)));
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let span = r.position() - start;
    println!(
        "RESULT accepted={accepted} lost={lost} corrupt={corrupt} span={span} broken_chain={broken_chain}"
    );
}

/// Entry point of the reader processes; does nothing in a normal test run.
#[test]
fn lap_role() {
    let Ok(role) = std::env::var("RR_LAP_ROLE") else {
        return;
    };
    let dir = PathBuf::from(std::env::var("RR_LAP_DIR").unwrap());
    reader_role(dir, role == "checked");
}

fn spawn_reader(dir: &PathBuf, role: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lap_role", "--nocapture", "--test-threads=1"])
        .env("RR_LAP_ROLE", role)
        .env("RR_LAP_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

#[derive(Debug, Default)]
struct Report {
    accepted: u64,
    lost: u64,
    corrupt: u64,
    span: u64,
    broken_chain: u64,
}

fn parse(out: &str) -> Report {
    let line = out
        .lines()
        .find_map(|l| l.find("RESULT ").map(|i| &l[i + 7..]))
        .unwrap_or_else(|| panic!("reader printed no RESULT:\n{out}"));
    let mut r = Report::default();
    for kv in line.split_whitespace() {
        let (k, v) = kv.split_once('=').unwrap();
        let v: u64 = v.parse().unwrap();
        match k {
            "accepted" => r.accepted = v,
            "lost" => r.lost = v,
            "corrupt" => r.corrupt = v,
            "span" => r.span = v,
            "broken_chain" => r.broken_chain = v,
            _ => {}
        }
    }
    r
}

#[test]
fn lapping_is_reported_exactly_and_never_torn() {
    let dir = PathBuf::from(format!("/dev/shm/rr-test-{}-lap", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _cleanup = RemoveOnDrop(dir.clone());
    let opts = ShmOptions {
        dir: dir.clone(),
        mode: 0o640,
        group: None,
        run_as: None,
    };
    let cfg = SampleConfig {
        sample: SampleType::U32Le,
        interleave: WORDS as u32,
        header_bytes: 0,
        sample_rate: None,
        decimate: DecimateSpec::parse("every:1").unwrap(),
        shm: true,
        shm_frames: CAPACITY,
    };
    let mut publisher = Publisher::create(&opts, "lap", &cfg).unwrap();
    let roles = ["checked", "checked", "checked", "unchecked", "unchecked"];
    let mut kids: Vec<Child> = roles.iter().map(|r| spawn_reader(&dir, r)).collect();
    let pids: Vec<i32> = kids.iter().map(|k| k.id() as i32).collect();

    // Stop and resume readers at random moments while writing.
    let stopper = std::thread::spawn(move || {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let end = Instant::now() + WRITE_FOR;
        while Instant::now() < end {
            let pid = pids[rng.below(pids.len() as u64) as usize];
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGSTOP,
            );
            std::thread::sleep(Duration::from_micros(100 + rng.below(20_000)));
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGCONT,
            );
            std::thread::sleep(Duration::from_micros(rng.below(5_000)));
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    });

    let mut rng = Rng(0xfeed_beef_cafe_f00d);
    let mut j = 0u64;
    let mut buf = Vec::new();
    let end = Instant::now() + WRITE_FOR;
    while Instant::now() < end {
        let n = 1 + rng.below(300);
        buf.clear();
        for _ in 0..n {
            for k in 0..WORDS {
                buf.extend_from_slice(&expected(j, k).to_le_bytes());
            }
            j += 1;
        }
        // Random stream segmentation, cutting through frames.
        let cut = rng.below(buf.len() as u64) as usize;
        publisher.feed_stream(&buf[..cut]);
        publisher.feed_stream(&buf[cut..]);
        if rng.below(64) == 0 {
            publisher.tick();
        }
    }
    stopper.join().unwrap();
    publisher.close();
    let written = j;

    let mut reports = Vec::new();
    for (k, role) in kids.iter_mut().zip(roles) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if k.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = k.kill();
                panic!("reader did not finish");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut out = String::new();
        use std::io::Read;
        k.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        reports.push((role, parse(&out)));
    }
    eprintln!("written {written} frames into a {CAPACITY}-frame ring");
    for (role, r) in &reports {
        eprintln!("{role:>9}: {r:?}");
    }
    for (role, r) in &reports {
        assert_eq!(r.broken_chain, 0, "{role}: chunk chain broken");
        assert_eq!(r.accepted + r.lost, r.span, "{role}: loss not exact");
        assert!(r.lost > 0, "{role}: never lapped: the test did not stress");
        assert!(r.accepted > 0, "{role}: read nothing");
        if *role == "checked" {
            assert_eq!(r.corrupt, 0, "checked reader accepted corrupt frames");
        }
    }
    let caught: u64 = reports
        .iter()
        .filter(|(r, _)| *r == "unchecked")
        .map(|(_, r)| r.corrupt)
        .sum();
    assert!(
        caught > 0,
        "negative control: readers without the lap check returned no corrupt frame, so this test would not catch a broken check"
    );
}
