//! The readers agree: a region written by the Rust writer is read by the Rust API,
//! `ringrelay tail`, the C example (compiled here with `cc`) and the Python reader (with and
//! without numpy), and all of them match the expected decimated signal. Also: a restart while
//! `tail --follow` is attached, `stat`, and clear errors for missing or foreign files.

mod common;

use common::{build_c_example, ShmDir};
use ringrelay::config::sample::{DecimateSpec, SampleConfig, SampleType};
use ringrelay::shm::{Publisher, Reader, ShmOptions, StatRow, StatsWriter};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ringrelay");

/// The writer's options for a test's region directory.
fn opts(d: &ShmDir) -> ShmOptions {
    ShmOptions {
        dir: d.path().to_path_buf(),
        mode: 0o640,
        group: None,
        run_as: None,
    }
}

fn cfg(decimate: &str, frames: u64) -> SampleConfig {
    SampleConfig {
        sample: SampleType::I16Le,
        interleave: 2,
        header_bytes: 4,
        sample_rate: Some(1000.0),
        decimate: DecimateSpec::parse(decimate).unwrap(),
        shm: true,
        shm_frames: frames,
    }
}

/// Input frame i: (sine-ish integer, -i).
fn input(i: usize) -> [i16; 2] {
    [((i * 37) % 201) as i16 - 100, -(i as i16)]
}

/// Feeds `n` input frames as datagrams of 7 frames each (4 header bytes).
fn feed(p: &mut Publisher, from: usize, n: usize) {
    let mut i = from;
    while i < from + n {
        let k = 7.min(from + n - i);
        let mut d = vec![0xAA; 4];
        for j in i..i + k {
            for v in input(j) {
                d.extend_from_slice(&v.to_le_bytes());
            }
        }
        p.feed_datagram(&d);
        i += k;
    }
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// CSV rows with values normalised through f32 (all outputs here are f32-exact).
fn normalise(csv: &str) -> Vec<String> {
    csv.lines()
        .map(|l| {
            l.split(',')
                .enumerate()
                .map(|(i, c)| match c.parse::<f64>() {
                    Ok(v) if i >= 2 => format!("{}", v as f32),
                    _ => c.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

fn python_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/python/ringrelay_shm.py")
}

fn has_numpy() -> bool {
    Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn all_readers_agree_with_the_expected_signal() {
    let t = ShmDir::new("r");
    for (spec, name) in [("minmax:4,16", "mm"), ("mean:4", "mean"), ("every:3", "ev")] {
        let mut p = Publisher::create(&opts(&t), name, &cfg(spec, 64)).unwrap();
        feed(&mut p, 0, 1000); // 250 mean/minmax frames into 64 slots: lapped.
        p.tick();
        let c = p.counters();
        assert_eq!(c.frames_in, 1000);
        assert_eq!(c.malformed_datagrams, 0);
        p.close();

        let path = t.path().join(name);
        // Rust API against the expected signal.
        let mut r = Reader::open(&path).unwrap();
        let mut buf = Vec::new();
        let ch = r.read(&mut buf, 1000).unwrap();
        let info = r.info().clone();
        assert_eq!(ch.start + ch.frames as u64, r.head().unwrap());
        assert_eq!(ch.frames as u64, 64.min(r.head().unwrap()));
        for (k, f) in buf.chunks_exact(info.frame_bytes as usize).enumerate() {
            let m = ch.start as usize + k;
            let got = info.decode_frame(f);
            let want: Vec<f64> = match name {
                "mm" => (0..2)
                    .flat_map(|c| {
                        let w = (4 * m..4 * m + 4).map(|i| input(i)[c] as f64);
                        [
                            w.clone().fold(f64::MAX, f64::min),
                            w.fold(f64::MIN, f64::max),
                        ]
                    })
                    .collect(),
                "mean" => (0..2)
                    .map(|c| {
                        let s: f64 = (4 * m..4 * m + 4).map(|i| input(i)[c] as f64).sum();
                        (s / 4.0) as f32 as f64
                    })
                    .collect(),
                _ => input(3 * m).iter().map(|v| *v as f64).collect(),
            };
            assert_eq!(got, want, "{name} frame {m}");
        }
        // Time: frame m stands for input frame m·D + offset at 1000 Hz.
        let t0 = r.time_of(ch.start).unwrap();
        let t1 = r.time_of(ch.start + 1).unwrap();
        assert_eq!(t1 - t0, info.factor as i64 * 1_000_000);

        // tail, C and Python print the same CSV.
        let (code, tail, err) = run(Command::new(BIN)
            .args(["tail", "--format", "csv"])
            .arg(&path));
        assert_eq!(code, 0, "{err}");
        let rows = normalise(&tail);
        assert_eq!(rows.len(), 1 + ch.frames, "{tail}");
        let header = if name == "mm" {
            "frame,time_ns,c0_min,c0_max,c1_min,c1_max"
        } else {
            "frame,time_ns,c0,c1"
        };
        assert_eq!(rows[0], header);
        assert!(rows[1].starts_with(&format!("{},{t0},", ch.start)));

        let c_exe = build_c_example(t.path());
        let (code, c_out, err) = run(Command::new(&c_exe).arg(&path));
        assert_eq!(code, 0, "{err}");
        assert_eq!(normalise(&c_out), rows, "C reader disagrees for {name}");

        let (code, py, err) = run(Command::new("python3").arg(python_script()).arg(&path));
        assert_eq!(code, 0, "{err}");
        assert_eq!(normalise(&py), rows, "Python reader disagrees for {name}");

        if has_numpy() {
            let (code, py, err) = run(Command::new("python3")
                .arg(python_script())
                .arg(&path)
                .arg("--numpy"));
            assert_eq!(code, 0, "{err}");
            assert_eq!(normalise(&py), rows, "Python+numpy disagrees for {name}");
        } else {
            eprintln!(
                "note: numpy not installed; the numpy path of the Python reader was not tested"
            );
        }

        // --last
        let (_, tail3, _) = run(Command::new(BIN)
            .args(["tail", "--format", "json", "--last", "3"])
            .arg(&path));
        let lines: Vec<&str> = tail3.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[2].starts_with(&format!("{{\"frame\":{},", r.head().unwrap() - 1)));
    }
}

#[test]
fn level_selection_and_errors() {
    let t = ShmDir::new("r");
    let mut p = Publisher::create(&opts(&t), "env", &cfg("minmax:4,16", 64)).unwrap();
    feed(&mut p, 0, 160);
    let dir = t.str();
    let (code, out, err) = run(Command::new(BIN).args([
        "tail",
        "env",
        "--shm-dir",
        dir,
        "--level",
        "1",
        "--format",
        "csv",
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1 + 10, "{out}");
    let (code, _, err) =
        run(Command::new(BIN).args(["tail", "env", "--shm-dir", dir, "--level", "2"]));
    assert_eq!(code, 1);
    assert!(err.contains("level 2 does not exist"), "{err}");
    let (code, _, err) = run(Command::new(BIN).args(["tail", "nope", "--shm-dir", dir]));
    assert_eq!(code, 1);
    assert!(err.contains("no such region"), "{err}");
    std::fs::write(t.path().join("junk"), vec![1u8; 4096]).unwrap();
    let (code, _, err) = run(Command::new(BIN).args(["tail", "junk", "--shm-dir", dir]));
    assert_eq!(code, 1);
    assert!(err.contains("not a ringrelay region"), "{err}");
    let (code, _, err) = run(Command::new("python3")
        .arg(python_script())
        .arg(t.path().join("junk")));
    assert_eq!(code, 1);
    assert!(err.contains("not a ringrelay region"), "{err}");
    let c_exe = build_c_example(t.path());
    let (code, _, err) = run(Command::new(c_exe).arg(t.path().join("junk")));
    assert_eq!(code, 1);
    assert!(err.contains("not a ringrelay region"), "{err}");
    p.close();
}

#[test]
fn restart_while_tail_follows() {
    let t = ShmDir::new("r");
    let mut a = Publisher::create(&opts(&t), "rs", &cfg("every:1", 4096)).unwrap();
    feed(&mut a, 0, 5);
    let child = Command::new(BIN)
        .args([
            "tail",
            "rs",
            "--follow",
            "--format",
            "csv",
            "--duration",
            "3s",
            "--shm-dir",
        ])
        .arg(t.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = Reader::open(t.path().join("rs")).unwrap();
    let g = reader.info().generation;
    std::thread::sleep(std::time::Duration::from_millis(500));
    feed(&mut a, 5, 5);
    std::thread::sleep(std::time::Duration::from_millis(300));
    a.close();
    let mut b = Publisher::create(&opts(&t), "rs", &cfg("every:1", 4096)).unwrap();
    feed(&mut b, 100, 3);
    assert!(reader.reattach().unwrap());
    assert_eq!(reader.info().generation, g + 1);
    let mut buf = Vec::new();
    let c = reader.read(&mut buf, 100).unwrap();
    assert_eq!((c.start, c.frames), (0, 3));
    assert_eq!(
        reader.info().decode_frame(&buf[..4]),
        vec![input(100)[0] as f64, -100.0]
    );
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("generation {}", g + 1)),
        "{stderr}"
    );
    let frames: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("frame")).collect();
    assert_eq!(frames.len(), 13, "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("frame")).count(), 2);
    b.close();
}

#[test]
fn stat_prints_the_daemon_counters() {
    let t = ShmDir::new("r");
    let mut w = StatsWriter::create(&opts(&t)).unwrap();
    w.publish(&[
        StatRow {
            label: "seismo/udp://127.0.0.1:5000".into(),
            kind: "input".into(),
            state: "up".into(),
            values: [1000, 10, 1, 0, 0, 0, 0, 0],
        },
        StatRow {
            label: "seismo/tcp-listen://0.0.0.0:6000".into(),
            kind: "output".into(),
            state: "listening".into(),
            values: [990, 9, 1, 0, 0, 0, 0, 3],
        },
    ]);
    let dir = t.str();
    let (code, out, err) = run(Command::new(BIN).args(["stat", "--shm-dir", dir, "--json"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"name\":\"seismo\""), "{out}");
    assert!(out.contains("\"bytes\":1000"), "{out}");
    assert!(out.contains("\"clients\":3"), "{out}");
    let (code, out, _) = run(Command::new(BIN).args(["stat", "--shm-dir", dir]));
    assert_eq!(code, 0);
    assert!(out.lines().nth(2).unwrap().starts_with("seismo"), "{out}");
    w.close();
    let (code, _, err) = run(Command::new(BIN).args(["stat", "--shm-dir", "/nonexistent-rr"]));
    assert_eq!(code, 1);
    assert!(err.contains("no counters region"), "{err}");
    assert!(err.contains("shm_dir = /nonexistent-rr"), "{err}");
}

/// Starts `cmd` (stdout and stderr piped, stdin piped when `go` is set), waits for its first
/// line of output (the reader has the region open), truncates `region` to zero bytes, says go
/// on stdin if asked, and returns the exit code (`None`: killed by a signal) and stderr.
fn truncate_under(cmd: &mut Command, region: &Path, go: bool) -> (Option<i32>, String) {
    use std::io::{BufRead, Read, Write};
    use std::process::Stdio;
    let mut child = cmd
        .stdin(if go { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(!first.is_empty(), "the reader printed nothing");
    std::fs::OpenOptions::new()
        .write(true)
        .open(region)
        .unwrap()
        .set_len(0)
        .unwrap();
    if go {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }
    let drain = std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the reader did not stop after its region was truncated");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let _ = drain.join();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

/// A stopped region of 100 frames, for readers to lose under their feet.
fn region_to_truncate(t: &ShmDir, name: &str) -> PathBuf {
    let mut p = Publisher::create(&opts(t), name, &cfg("every:1", 4096)).unwrap();
    feed(&mut p, 0, 100);
    p.close();
    t.path().join(name)
}

#[test]
fn tail_follow_reports_a_truncated_region() {
    let t = ShmDir::new("r");
    let path = region_to_truncate(&t, "cut");
    let (code, err) = truncate_under(
        Command::new(BIN)
            .args(["tail", "--follow", "--format", "csv", "--duration", "20s"])
            .arg(&path),
        &path,
        false,
    );
    assert_eq!(code, Some(1), "tail did not exit 1; stderr:\n{err}");
    assert!(
        err.contains(&format!("region {} was truncated (0 bytes", path.display())),
        "{err}"
    );
    assert!(
        err.contains("the relay restarted or the file was replaced"),
        "{err}"
    );
}

#[test]
fn python_reader_reports_a_truncated_region() {
    let t = ShmDir::new("r");
    let path = region_to_truncate(&t, "cut");
    let script = "import sys\n\
        sys.path.insert(0, sys.argv[1])\n\
        from ringrelay_shm import Region, RegionError\n\
        r = Region(sys.argv[2])\n\
        print('open', flush=True)\n\
        sys.stdin.readline()\n\
        try:\n\
        \x20   r.read(16)\n\
        except RegionError as e:\n\
        \x20   print(e, file=sys.stderr)\n\
        \x20   sys.exit(1)\n";
    let (code, err) = truncate_under(
        Command::new("python3")
            .args(["-c", script])
            .arg(python_script().parent().unwrap())
            .arg(&path),
        &path,
        true,
    );
    assert_eq!(code, Some(1), "stderr:\n{err}");
    assert!(
        err.contains(&format!("region {} was truncated (0 bytes", path.display())),
        "{err}"
    );
}

#[test]
fn c_reader_reports_a_truncated_region() {
    let t = ShmDir::new("r");
    let path = region_to_truncate(&t, "cut");
    let src = t.path().join("cut_reader.c");
    std::fs::write(
        &src,
        r#"#include "ringrelay_shm.h"
#include <stdio.h>
int main(int argc, char **argv) {
    (void)argc;
    rr_reader r;
    int e = rr_open(&r, argv[1]);
    if (e) { fprintf(stderr, "open: %s\n", rr_strerror(e)); return 2; }
    printf("open\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 3;
    static uint8_t buf[16 * 64];
    rr_chunk c = rr_read(&r, buf, 16);
    if (c.error) {
        fprintf(stderr, "region %s was truncated: %s\n", argv[1], rr_strerror(c.error));
        return 1;
    }
    return 0;
}
"#,
    )
    .unwrap();
    let exe = t.path().join("cut_reader");
    let o = Command::new("cc")
        .args([
            "-std=c11",
            "-D_DEFAULT_SOURCE",
            "-O2",
            "-Wall",
            "-Werror",
            "-I",
        ])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/c"))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg("-lm")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, err) = truncate_under(Command::new(&exe).arg(&path), &path, true);
    assert_eq!(code, Some(1), "stderr:\n{err}");
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn tail_turns_a_sigbus_into_a_message() {
    // The cut can land between tail's size check and its read; the kernel then sends SIGBUS.
    // Sending it by hand takes the same path through the handler.
    use std::io::{BufRead, Read};
    let t = ShmDir::new("r");
    let path = region_to_truncate(&t, "bus");
    let mut child = Command::new(BIN)
        .args(["tail", "--follow", "--format", "csv", "--duration", "20s"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("frame,"), "{first}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGBUS,
    )
    .unwrap();
    let drain = std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let status = child.wait().unwrap();
    let _ = drain.join();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "stderr:\n{err}");
    assert!(
        err.contains(&format!(
            "region {} was truncated while it was being read",
            path.display()
        )),
        "{err}"
    );
}
