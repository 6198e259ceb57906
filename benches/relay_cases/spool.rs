//! Case (g) of the relay bench: a spooling output against the plain path, in one run.
//!
//! Owns: the three cells of one channel (a `tcp-listen://` producer writing lines, `framing =
//! line`, one `tcp://` collector), each timed from the first byte written:
//! * plain: no `spool`, the collector listening; until the collector has every byte;
//! * spooling: `spool = DIR`, the collector away; until `ringrelay stat --format json` shows
//!   the input read every byte and the spool's counts stopped moving (polled every 10 ms);
//! * replaying: the same relay, the collector now listening; from the relay's connect to the
//!   collector's last byte (once `stat` shows every spooled record replayed).
//!
//! MB/s of spooled bytes (10^6) and the ratios spooling / plain and replaying / plain; and the
//! share of records the spool dropped while spooling (the disk behind the input: counted). Never
//! touches the daemon's internals: counters come from `ringrelay stat`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// One line record: 99 bytes and its `\n`.
const LINE: usize = 100;

/// MB/s of the three cells, and the share of the input the spool dropped (records the disk
/// could not keep up with, counted by the relay).
pub struct SpoolSample {
    pub plain: f64,
    pub spooling: f64,
    pub replaying: f64,
    pub dropped: f64,
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `total` bytes of line records.
fn lines(total: u64) -> Vec<u8> {
    let mut line = [b'r'; LINE];
    line[LINE - 1] = b'\n';
    line.repeat((total as usize) / LINE)
}

struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Daemon {
    fn start(
        ringrelay: &str,
        dir: &Path,
        input: SocketAddr,
        output: &str,
    ) -> Result<Daemon, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let conf = dir.join("bench.conf");
        let text = format!(
            "[global]\nshm_dir = {}\nlog_level = warn\nshutdown_timeout = 1s\n\n[channel s]\ninput = tcp-listen://{input}\nframing = line\noutput = {output}\n",
            dir.join("shm").display()
        );
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        let child = Command::new(ringrelay)
            .arg("run")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{ringrelay}: {e}"))?;
        Ok(Daemon {
            child,
            dir: dir.to_path_buf(),
        })
    }

    /// The producer's connection, once the relay listens.
    fn connect(&self, input: SocketAddr) -> Result<TcpStream, String> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = TcpStream::connect(input) {
                return Ok(s);
            }
            if Instant::now() > until {
                return Err("the relay never listened".into());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `stat --format json`: (input bytes, the output's bytes, its spool object).
    fn counters(&self, ringrelay: &str) -> (u64, u64, serde_json::Value) {
        let out = Command::new(ringrelay)
            .args(["stat", "--format", "json", "--shm-dir"])
            .arg(self.dir.join("shm"))
            .output();
        let v = out
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .unwrap_or_default();
        let ch = &v["channels"][0];
        (
            ch["input"]["bytes"].as_u64().unwrap_or(0),
            ch["outputs"][0]["bytes"].as_u64().unwrap_or(0),
            ch["outputs"][0]["spool"].clone(),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A collector on `l` counting bytes until `want`: when it accepted the relay, and when it had
/// every byte.
type Collected = Result<(Instant, Instant), String>;

fn collect(l: TcpListener, want: u64, limit: Duration) -> thread::JoinHandle<Collected> {
    thread::spawn(move || {
        let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
        let accepted = Instant::now();
        s.set_read_timeout(Some(limit)).ok();
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        while got < want {
            match s.read(&mut buf) {
                Ok(0) => return Err(format!("the collector got {got} of {want} bytes")),
                Ok(n) => got += n as u64,
                Err(e) => return Err(format!("after {got} of {want} bytes: {e}")),
            }
        }
        Ok((accepted, Instant::now()))
    })
}

/// MB/s of `bytes` over `d`.
fn mbs(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// One run of the three cells with `total` bytes of records.
pub fn run(
    ringrelay: &str,
    tmp: &Path,
    total: u64,
    limit: Duration,
) -> Result<SpoolSample, String> {
    let data = lines(total);
    let total = data.len() as u64;
    let base = tmp.join(format!("ringrelay-bench-spool-{}", std::process::id()));

    // Plain: no spool, the collector listening.
    let plain = {
        let (input, collector) = (free_port(), TcpListener::bind("127.0.0.1:0").unwrap());
        let caddr = collector.local_addr().unwrap();
        let d = Daemon::start(
            ringrelay,
            &base.join("plain"),
            input,
            &format!("tcp://{caddr}"),
        )?;
        let done = collect(collector, total, limit);
        let mut s = d.connect(input)?;
        let t0 = Instant::now();
        s.write_all(&data).map_err(|e| e.to_string())?;
        let (_, end) = done.join().map_err(|_| "collector panicked")??;
        mbs(total, end - t0)
    };

    // Spooling, then replaying, on one relay.
    let (input, caddr) = (free_port(), free_port());
    let spool = base.join("spool-dir");
    let d = Daemon::start(
        ringrelay,
        &base.join("spool"),
        input,
        &format!("tcp://{caddr} spool={} spool_max=4GiB", spool.display()),
    )?;
    let mut s = d.connect(input)?;
    let t0 = Instant::now();
    s.write_all(&data).map_err(|e| e.to_string())?;
    // Spooled: the input read everything and the spool's books stopped moving.
    let mut last = (0, 0);
    let (spooled, records, dropped, t_spooled) = loop {
        let (inb, _, sp) = d.counters(ringrelay);
        let n = (
            sp["spooled_records"].as_u64().unwrap_or(0),
            sp["dropped_records"].as_u64().unwrap_or(0),
        );
        if inb >= total && n == last && n.0 > 0 {
            break (
                sp["spooled_bytes"].as_u64().unwrap_or(0),
                n.0,
                n.1,
                Instant::now() - Duration::from_millis(10),
            );
        }
        last = n;
        if t0.elapsed() > limit {
            return Err(format!("the spool never settled: {sp}"));
        }
        thread::sleep(Duration::from_millis(10));
    };
    let spooling = mbs(spooled, t_spooled - t0);
    let collector = TcpListener::bind(caddr).map_err(|e| e.to_string())?;
    let accepted = thread::spawn(move || {
        let (mut c, _) = collector.accept().map_err(|e| e.to_string())?;
        let at = Instant::now();
        let mut last = at;
        let mut buf = vec![0u8; 1 << 20];
        while c.read(&mut buf).map_err(|e| e.to_string())? > 0 {
            last = Instant::now();
        }
        Ok::<(Instant, Instant), String>((at, last))
    });
    // Replayed: every spooled record handed back and the output's bytes stopped moving.
    let mut last = 0;
    loop {
        let (_, outb, sp) = d.counters(ringrelay);
        if sp["replayed_records"].as_u64().unwrap_or(0) >= records && outb == last {
            break;
        }
        last = outb;
        if t_spooled.elapsed() > limit {
            return Err(format!("the replay never finished: {sp}"));
        }
        thread::sleep(Duration::from_millis(10));
    }
    drop(d);
    // From the relay's connect to the collector's last byte (the relay's redial backoff before
    // the connect is no part of replay).
    let (t1, t_replayed) = accepted.join().map_err(|_| "collector panicked")??;
    let replaying = mbs(spooled, t_replayed - t1);
    let dropped = dropped as f64 / (records + dropped) as f64;
    drop(s);
    let _ = std::fs::remove_dir_all(&spool);
    let _ = std::fs::remove_dir_all(&base);
    Ok(SpoolSample {
        plain,
        spooling,
        replaying,
        dropped,
    })
}
