//! Results and their tables: a [`Sample`] per run, medians over runs, a [`Row`] per relay,
//! the printed tables with each ringrelay row's ratios to its peers, and the machine line.

use super::*;

/// One measurement.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Gbit/s (TCP) or delivered datagrams/s (UDP).
    pub rate: f64,
    /// CPU s per GB (TCP) or CPU µs per delivered datagram (UDP).
    pub cpu: f64,
    /// Drop % (UDP).
    pub drop: f64,
    /// Decimating relays: first-level frames published, as a share of the frames expected
    /// from the datagrams delivered (about 1; warm-up datagrams add a little).
    pub decimated: f64,
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Medians of a relay's runs, or why it could not run.
pub struct Row {
    pub name: String,
    /// `ringrelay` rows are compared with every other row of their table: the peers, or in
    /// (d) and (e) a `reference` ringrelay row.
    pub kind: &'static str,
    pub result: Result<Sample, String>,
}

/// The results of `runs` runs that succeeded, or the last error when none did.
pub fn successes<T>(
    runs: usize,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut ok = Vec::new();
    let mut last_err = None;
    for _ in 0..runs {
        match f() {
            Ok(s) => ok.push(s),
            Err(e) => last_err = Some(e),
        }
    }
    if ok.is_empty() {
        return Err(last_err.unwrap_or_else(|| "no runs".into()));
    }
    Ok(ok)
}

pub fn measure(runs: usize, f: impl FnMut() -> Result<Sample, String>) -> Result<Sample, String> {
    let ok = successes(runs, f)?;
    Ok(Sample {
        rate: median(ok.iter().map(|s| s.rate).collect()),
        cpu: median(ok.iter().map(|s| s.cpu).collect()),
        drop: median(ok.iter().map(|s| s.drop).collect()),
        decimated: median(ok.iter().map(|s| s.decimated).collect()),
    })
}

/// [`print_table`] for a case that ran (`RELAY_BENCH_CASES` can leave one out).
pub fn print_table_if(title: &str, rate_h: &str, cpu_h: &str, with_drop: bool, rows: &[Row]) {
    if !rows.is_empty() {
        print_table(title, rate_h, cpu_h, with_drop, rows);
    }
}

pub fn print_table(title: &str, rate_h: &str, cpu_h: &str, with_drop: bool, rows: &[Row]) {
    println!("\n{title}");
    let drop_h = if with_drop { "    drop %" } else { "" };
    println!("  {:<32} {:>14} {:>16}{drop_h}", "relay", rate_h, cpu_h);
    for r in rows {
        match &r.result {
            Ok(s) => {
                let d = if with_drop {
                    format!(" {:>9.2}", s.drop)
                } else {
                    String::new()
                };
                let shm = if s.decimated > 0.0 {
                    format!("   (shm: {:.3} of the expected frames)", s.decimated)
                } else {
                    String::new()
                };
                println!("  {:<32} {:>14.3} {:>16.3}{d}{shm}", r.name, s.rate, s.cpu);
            }
            Err(e) => println!("  {:<32} not measured: {e}", r.name),
        }
    }
    // Ratios of each ringrelay row to each peer: rate (higher is better) and CPU (lower is better).
    let ours: Vec<&Row> = rows.iter().filter(|r| r.kind == "ringrelay").collect();
    let peers: Vec<&Row> = rows.iter().filter(|r| r.kind != "ringrelay").collect();
    for o in &ours {
        let Ok(os) = &o.result else { continue };
        for p in &peers {
            let Ok(ps) = &p.result else { continue };
            let mut line = format!(
                "  {} / {}: {} x{:.2}, CPU x{:.2}",
                o.name,
                p.name,
                if with_drop {
                    "delivered/s"
                } else {
                    "throughput"
                },
                os.rate / ps.rate,
                os.cpu / ps.cpu
            );
            if with_drop {
                line += &format!(", drop {:.2}% vs {:.2}%", os.drop, ps.drop);
            }
            println!("{line}");
        }
    }
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Online CPUs, not this thread's affinity (a pinned bench runs on fewer).
    // SAFETY: sysconf reads a system value.
    let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{date}, {cpu}, {cores} cores, Linux {kernel}")
}
