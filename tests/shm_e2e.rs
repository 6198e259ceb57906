//! Decimation end to end, with the real daemon: `ringrelay gen` sends a known signal over UDP,
//! `ringrelay run` relays it to a UDP output and a file output and decimates it into shared
//! memory, and every reader (the Rust [`Reader`], the C example compiled here with `cc`, the
//! Python reader, `ringrelay tail --format csv`) agrees with the decimated signal this file
//! computes from the same synthesis functions `gen` uses. Also: the relayed bytes stay exact while
//! decimation runs, `ringrelay stat` shows the input counters of the running daemon, and a daemon
//! restart is followed by an attached Rust reader and by `tail --follow`.
//!
//! Expected values (see ringrelay-shm(7), DECIMATION):
//! * `every` and `minmax` store input values bit for bit: compared exactly.
//! * `mean` sums integer samples in double precision (exact), divides and rounds to f32: the
//!   reference does the same, and the tolerance is one f32 ulp of the expected value.
//! * `fir` is `Σ h[k]·x[m·N+N−1−k]` (x before the start is 0) with a Blackman-windowed sinc
//!   designed here from the man page's description; level 0 runs in f32, so the tolerance is
//!   one f32 ulp of the result plus the documented f32 bound `(T + 3)·2⁻²⁴·Σ |h[k]·x|`.
//!
//! Every reader's CSV is compared with the Rust reader's frames exactly (f32 columns are parsed
//! back to f32, which the printed forms round-trip), and the time column must be identical.
//!
//! Nothing here laps: `shm_frames` is far above the frames sent.
//!
//! The reference decimation (expected frames and tolerances) is in `decimation_reference/`.

mod common;
mod decimation_reference;

use common::*;
use decimation_reference::*;
use ringrelay::cli::gen::{synth, Signal, NOMINAL_RATE};
use ringrelay::config::sample::SampleType;
use ringrelay::shm::{Reader, WriterState};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Payload bytes per `gen` datagram: 250 frames of 2 × i16, a size no decimation factor below
/// divides, so windows straddle datagrams.
const PACKET_BYTES: usize = 1000;
const FRAME_BYTES: usize = 4;
const INTERLEAVE: usize = 2;
/// How long a helper process (gen, cc, a reader) may take.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------------------------------------
// Processes

/// Runs `cmd` and returns its stdout; panics with its stderr unless it exits 0.
fn stdout_of(cmd: &mut Command, what: &str) -> String {
    let o = output_within(cmd, what, PROCESS_TIMEOUT);
    assert!(
        o.status.success(),
        "{what} exited with {}; stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap_or_else(|e| panic!("{what}: stdout is not UTF-8: {e}"))
}

fn python_reader() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/python/ringrelay_shm.py")
}

/// How `gen` is run: the signal, the pace and the number of frames.
#[derive(Clone, Copy)]
struct GenPlan {
    signal: Signal,
    signal_arg: &'static str,
    /// `None` for `--rate max`.
    rate: Option<u32>,
    frames: usize,
}

impl GenPlan {
    /// The frame rate the waveform is computed at.
    fn synth_rate(&self) -> f64 {
        self.rate.map_or(NOMINAL_RATE, f64::from)
    }

    /// The bytes gen sends, frames back to back.
    fn bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        synth(
            self.signal,
            SampleType::I16Le,
            INTERLEAVE as u32,
            0,
            self.frames,
            0.5,
            self.synth_rate(),
            &mut v,
        );
        v
    }

    /// The datagrams gen sends: the bytes cut every [`PACKET_BYTES`].
    fn datagrams(&self) -> Vec<Vec<u8>> {
        self.bytes()
            .chunks(PACKET_BYTES)
            .map(|c| c.to_vec())
            .collect()
    }

    /// Runs `ringrelay gen` to `to` and waits for it to finish.
    fn run(&self, to: SocketAddr) {
        let rate = self.rate.map_or("max".to_string(), |r| r.to_string());
        let frames = self.frames.to_string();
        let url = format!("udp://{to}");
        stdout_of(
            Command::new(bin()).args([
                "gen",
                &url,
                "--format",
                "i16le",
                "--interleave",
                "2",
                "--rate",
                &rate,
                "--signal",
                self.signal_arg,
                "--frames",
                &frames,
                "--packet-bytes",
                &PACKET_BYTES.to_string(),
            ]),
            &format!("ringrelay gen {url}"),
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Readers

/// Every frame of a region read with the Rust API, from frame 0, with each frame's time.
struct RustRead {
    frames: Vec<Vec<f64>>,
    times: Vec<Option<i64>>,
}

/// Reads frames `0..n` of an attached reader; panics on a loss or a shortfall.
fn read_all(r: &mut Reader, n: u64, what: &str) -> RustRead {
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    r.seek(0);
    while r.position() < n {
        let c = r.read(&mut buf, 4096).unwrap();
        assert_eq!(c.lost, 0, "{what}: lost frames before {}", c.start);
        assert!(c.frames > 0, "{what}: no frame at {} of {n}", r.position());
        assert_eq!(c.start, frames.len() as u64, "{what}: chunk start");
        let fb = r.info().frame_bytes as usize;
        for f in buf.chunks_exact(fb) {
            frames.push(r.info().decode_frame(f));
        }
    }
    assert_eq!(frames.len() as u64, n, "{what}: frames read");
    let times = r.times_of(0..n);
    RustRead { frames, times }
}

/// Waits until the region exists and its head reaches `n`, then checks it stops there.
fn wait_head(path: &Path, n: u64, what: &str) -> Reader {
    let mut reader = None;
    wait_for(
        &format!("{what} to appear at {}", path.display()),
        TRANSFER_TIMEOUT,
        || {
            reader = Reader::open(path).ok();
            reader.is_some()
        },
    );
    let r = reader.unwrap();
    let mut head = 0;
    if !wait_until(TRANSFER_TIMEOUT, || {
        head = r.head().unwrap();
        head >= n
    }) {
        panic!("{what}: head at {head} of {n} frames after {TRANSFER_TIMEOUT:?}");
    }
    assert_eq!(
        r.head().unwrap(),
        n,
        "{what}: more frames published than the input holds"
    );
    r
}

/// A CSV from tail, the C example or the Python reader: the column header and the rows.
struct Csv {
    header: String,
    rows: Vec<(u64, Option<i64>, Vec<f64>)>,
}

/// Parses `frame,time_ns,values...`; values of an f32 region are rounded back to f32.
fn parse_csv(text: &str, f32_values: bool, what: &str) -> Csv {
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("{what}: no output"))
        .to_string();
    let rows = lines
        .map(|l| {
            let mut cols = l.split(',');
            let frame = cols
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("{what}: bad frame column in '{l}'"));
            let time = match cols.next() {
                Some("") => None,
                Some(c) => Some(
                    c.parse()
                        .unwrap_or_else(|_| panic!("{what}: bad time column in '{l}'")),
                ),
                None => panic!("{what}: no time column in '{l}'"),
            };
            let values = cols
                .map(|c| {
                    let v: f64 = c
                        .parse()
                        .unwrap_or_else(|_| panic!("{what}: bad value '{c}' in '{l}'"));
                    if f32_values {
                        v as f32 as f64
                    } else {
                        v
                    }
                })
                .collect();
            (frame, time, values)
        })
        .collect();
    Csv { header, rows }
}

/// Asserts that a reader's CSV shows exactly the frames (and times) the Rust reader read.
fn assert_csv_agrees(what: &str, csv: &Csv, header: &str, rust: &RustRead) {
    assert_eq!(csv.header, header, "{what}: header");
    assert_eq!(
        csv.rows.len(),
        rust.frames.len(),
        "{what}: {} rows, the Rust reader read {} frames",
        csv.rows.len(),
        rust.frames.len()
    );
    for (i, (frame, time, values)) in csv.rows.iter().enumerate() {
        assert_eq!(*frame, i as u64, "{what}: row {i} frame index");
        assert_eq!(*time, rust.times[i], "{what}: frame {i} time");
        assert_eq!(values, &rust.frames[i], "{what}: frame {i} values");
    }
}

// ------------------------------------------------------------------------------------------------
// End to end

/// What the decimating daemon of [`decimation_end_to_end`] listens on and writes to.
struct Setup {
    inputs: Vec<SocketAddr>,
}

/// Starts a daemon with one channel per entry of [`CHANNELS`], each with a UDP output and a file
/// output, feeds each channel `plan` with `ringrelay gen`, and checks the outputs, the regions
/// through all four readers, and `ringrelay stat`.
fn decimation_end_to_end(features: Features, plan: GenPlan) {
    let dir = TempDir::new("shm-e2e");
    let shm = ShmDir::new("e");
    let sinks: Vec<DatagramSink> = CHANNELS
        .iter()
        .map(|(name, ..)| {
            DatagramSink::bind(
                &format!("udp output of {name}"),
                "127.0.0.1:0".parse().unwrap(),
            )
        })
        .collect();
    let (relay, setup) = Relay::start(features, &dir, || {
        let mut conf = shm.global_section();
        let mut inputs = Vec::new();
        for (i, (name, decimate, ..)) in CHANNELS.iter().enumerate() {
            let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
            inputs.push(input);
            conf.push_str(&format!(
                "[channel {name}]\ninput = udp://{input}\noutput = udp://{}\noutput = file://{}\nsample = i16le\ninterleave = 2\nsample_rate = {}\ndecimate = {decimate}\nshm_frames = 65536\n\n",
                sinks[i].addr,
                dir.join(&format!("{name}.raw")).display(),
                plan.synth_rate(),
            ));
        }
        (conf, Setup { inputs })
    });

    // All channels are fed at once, each by its own gen.
    let gens: Vec<_> = setup
        .inputs
        .iter()
        .map(|&to| thread::spawn(move || plan.run(to)))
        .collect();
    for g in gens {
        join_with_timeout(g, PROCESS_TIMEOUT, "ringrelay gen");
    }

    // The relay outputs are byte-exact while decimation runs.
    let want_dgrams = plan.datagrams();
    let want_bytes = plan.bytes();
    for (i, (name, ..)) in CHANNELS.iter().enumerate() {
        let sink = &sinks[i];
        let mut n = 0;
        if !wait_until(TRANSFER_TIMEOUT, || {
            n = sink.count();
            n >= want_dgrams.len()
        }) {
            panic!(
                "{name}: the UDP output got {n} of {} datagrams",
                want_dgrams.len()
            );
        }
        assert_same_datagrams(
            &format!("{name}: UDP output"),
            &sink.datagrams(),
            &want_dgrams,
        );
        let file = dir.join(&format!("{name}.raw"));
        let mut len = 0;
        if !wait_until(TRANSFER_TIMEOUT, || {
            len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            len >= want_bytes.len() as u64
        }) {
            panic!(
                "{name}: the file output has {len} of {} bytes",
                want_bytes.len()
            );
        }
        let got = std::fs::read(&file).expect("read file output");
        assert_same_bytes(&format!("{name}: file output"), &got, &want_bytes);
    }

    // Every reader agrees with the expected decimated signal.
    let x = sub_channels(&want_bytes);
    let c_example = build_c_example(dir.path());
    for s in streams() {
        let what = s.name();
        let want = expected(&s, &x);
        let path = s.path(&shm);
        let mut r = wait_head(&path, want.len() as u64, &what);
        let info = r.info().clone();
        assert_eq!(
            info.factor as usize, s.factor,
            "{what}: factor in the header"
        );
        assert_eq!(info.channels as usize, INTERLEAVE, "{what}: channels");
        assert_eq!(info.level, s.level as u16, "{what}: level");
        let rust = read_all(&mut r, want.len() as u64, &what);
        assert_frames(&format!("{what}, Rust reader"), &rust.frames, &want);
        assert!(
            rust.times.iter().all(Option::is_some),
            "{what}: a frame without a time although sample_rate is set"
        );

        let header = format!("frame,time_ns,{}", info.column_names().join(","));
        let f32_values = matches!(s.mode, Mode::Mean | Mode::Fir);
        let mut tail = Command::new(bin());
        tail.args([
            "tail",
            s.channel,
            "--shm-dir",
            shm.str(),
            "--format",
            "csv",
            "--level",
            &s.level.to_string(),
        ]);
        for (reader, cmd) in [
            ("ringrelay tail", &mut tail),
            ("C example", Command::new(&c_example).arg(&path)),
            (
                "Python reader",
                Command::new("python3").arg(python_reader()).arg(&path),
            ),
        ] {
            let what = format!("{what}, {reader}");
            let text = stdout_of(cmd, &what);
            let csv = parse_csv(&text, f32_values, &what);
            assert_csv_agrees(&what, &csv, &header, &rust);
        }
    }

    // `stat` shows the input bytes of the running daemon (the region is refreshed every 100 ms).
    let want = (want_bytes.len() as u64, want_dgrams.len() as u64);
    let mut last = String::new();
    if !wait_until(Duration::from_secs(15), || {
        last = stdout_of(
            Command::new(bin()).args(["stat", "--shm-dir", shm.str(), "--format", "json"]),
            "ringrelay stat",
        );
        CHANNELS
            .iter()
            .all(|(name, ..)| stat_input(&last, name) == Some(want))
    }) {
        panic!("ringrelay stat --format json never showed {want:?} (bytes, datagrams) for every input; last output:\n{last}");
    }
    relay.stop();
}

/// The input bytes and datagrams of channel `name` in `ringrelay stat --format json`.
fn stat_input(json: &str, name: &str) -> Option<(u64, u64)> {
    let doc: serde_json::Value = serde_json::from_str(json).ok()?;
    let ch = doc["channels"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)?;
    Some((
        ch["input"]["bytes"].as_u64()?,
        ch["input"]["datagrams"].as_u64()?,
    ))
}

/// A counter at full speed: exact values, and the i16 counter wraps (frame 32768) inside the run.
fn counter_at_full_speed(features: Features) {
    decimation_end_to_end(
        features,
        GenPlan {
            signal: Signal::Counter,
            signal_arg: "counter",
            rate: None,
            frames: 40_000,
        },
    );
}

/// A sawtooth paced at 8000 frames/s over two seconds: it wraps twice.
fn ramp_paced(features: Features) {
    decimation_end_to_end(
        features,
        GenPlan {
            signal: Signal::Ramp,
            signal_arg: "ramp",
            rate: Some(8000),
            frames: 16_000,
        },
    );
}

in_both_feature_sets!(counter_at_full_speed, ramp_paced);

// ------------------------------------------------------------------------------------------------
// Restart

/// The lines a child prints on stdout, collected by a thread.
struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Lines {
    fn collect(r: impl Read + Send + 'static) -> Lines {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let lines = lines.clone();
            thread::spawn(move || {
                for l in BufReader::new(r).lines() {
                    match l {
                        Ok(l) => lines.lock().unwrap().push(l),
                        Err(_) => break,
                    }
                }
            })
        };
        Lines {
            lines,
            thread: Some(thread),
        }
    }

    fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Everything, once the stream has ended.
    fn finish(mut self) -> Vec<String> {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.lines.lock().unwrap().clone()
    }
}

const RESTART_FACTOR: usize = 5;

/// The daemon is stopped and started again on the same shm_dir while a Rust reader and a
/// `tail --follow` are attached: the reader sees the new generation and reads the new frames;
/// tail prints the frames of both runs and exits 0.
#[test]
fn restart_while_readers_are_attached() {
    let dir = TempDir::new("shm-restart");
    let shm = ShmDir::new("e");
    let start = |dir: &TempDir| {
        Relay::start(Features::Auto, dir, || {
            let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
            let conf = format!(
                "{}[channel rs]\ninput = udp://{input}\nsample = i16le\ninterleave = 2\nsample_rate = 1000\ndecimate = every:{RESTART_FACTOR}\nshm_frames = 65536\n",
                shm.global_section()
            );
            (conf, input)
        })
    };
    // Two runs with different signals, so the frames of each run are told apart.
    let runs = [
        GenPlan {
            signal: Signal::Counter,
            signal_arg: "counter",
            rate: None,
            frames: 4000,
        },
        GenPlan {
            signal: Signal::Ramp,
            signal_arg: "ramp",
            rate: None,
            frames: 3000,
        },
    ];
    let stream = Stream {
        channel: "rs",
        level: 0,
        mode: Mode::Every,
        factor: RESTART_FACTOR,
    };
    let want: Vec<Vec<Expected>> = runs
        .iter()
        .map(|p| expected(&stream, &sub_channels(&p.bytes())))
        .collect();
    let path = stream.path(&shm);

    // Run 1, read by the Rust reader.
    let (first, input) = start(&dir);
    runs[0].run(input);
    let mut reader = wait_head(&path, want[0].len() as u64, "run 1");
    let generation = reader.info().generation;
    let got = read_all(&mut reader, want[0].len() as u64, "run 1");
    assert_frames("run 1, Rust reader", &got.frames, &want[0]);

    // tail --follow attaches and prints run 1 before the restart.
    let mut tail = Command::new(bin())
        .args([
            "tail",
            "rs",
            "--follow",
            "--duration",
            "10s",
            "--format",
            "csv",
            "--shm-dir",
            shm.str(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringrelay tail");
    let tail_out = Lines::collect(tail.stdout.take().unwrap());
    let tail_err = Lines::collect(tail.stderr.take().unwrap());
    wait_for(
        "tail --follow to print the frames of run 1",
        PROCESS_TIMEOUT,
        || tail_out.len() > want[0].len(),
    );

    first.stop();
    assert_eq!(
        reader.writer_state(),
        WriterState::Stopped,
        "a stopped daemon marks its region stopped"
    );

    // Run 2 on the same shm_dir.
    let (second, input) = start(&dir);
    assert_eq!(reader.writer_state(), WriterState::Replaced);
    assert!(reader.reattach().expect("reattach"), "reattach");
    assert!(
        reader.info().generation > generation,
        "generation {} after a restart from generation {generation}",
        reader.info().generation
    );
    runs[1].run(input);
    let mut reader2 = wait_head(&path, want[1].len() as u64, "run 2");
    assert_eq!(reader2.info().generation, reader.info().generation);
    let got = read_all(
        &mut reader,
        want[1].len() as u64,
        "run 2, reattached reader",
    );
    assert_frames("run 2, reattached Rust reader", &got.frames, &want[1]);
    let fresh = read_all(&mut reader2, want[1].len() as u64, "run 2, new reader");
    assert_eq!(fresh.frames, got.frames);

    // tail exits on its own after --duration, with both runs printed.
    let mut status = None;
    wait_for(
        "tail --follow to exit after --duration",
        PROCESS_TIMEOUT,
        || {
            status = tail.try_wait().expect("try_wait");
            status.is_some()
        },
    );
    let out = tail_out.finish();
    let err = tail_err.finish().join("\n");
    assert!(
        status.unwrap().success(),
        "tail exited with {status:?}; stderr:\n{err}"
    );
    assert!(
        err.contains(&format!("generation {}", reader.info().generation)),
        "tail did not report the new generation; stderr:\n{err}"
    );
    let text = out.join("\n");
    let header = "frame,time_ns,c0,c1";
    let sections: Vec<&str> = text
        .split(header)
        .map(|s| s.trim_matches('\n'))
        .filter(|s| !s.is_empty())
        .collect();
    assert!(
        text.starts_with(header) && sections.len() == 2,
        "tail printed {} sections (want a header and frames per run); stdout:\n{text}",
        sections.len()
    );
    for (i, section) in sections.iter().enumerate() {
        let csv = parse_csv(&format!("{header}\n{section}"), false, "tail --follow");
        let frames: Vec<Vec<f64>> = csv.rows.iter().map(|r| r.2.clone()).collect();
        assert!(
            csv.rows.iter().enumerate().all(|(k, r)| r.0 == k as u64),
            "tail --follow, run {}: frame indices do not count from 0",
            i + 1
        );
        assert_frames(&format!("tail --follow, run {}", i + 1), &frames, &want[i]);
    }
    second.stop();
}
