//! `ringrelay tail CHANNEL`: print a channel's decimated frames from shared memory.
//!
//! Owns: its arguments ([`TailArgs`]), choosing the region file (`<shm_dir>/<channel>`,
//! `<channel>.<factor>` for `--level N`, or a path), and the text, csv and json renderings. A
//! plain reader: it uses only [`crate::shm::Reader`], never writes to the region, and never
//! talks to the daemon.
//! Must never: print a frame the reader did not validate, or mix loss notes into stdout
//! (they go to stderr so csv/json stay machine-readable).
//!
//! Without `--follow` it prints the frames held now (or the last N) oldest first and exits 0.
//! With `--follow` it keeps printing new frames, re-attaches when the daemon restarts, and stops
//! after `--duration` if given. A missing or invalid region is an error (exit 1), and so is a
//! region file cut short under it (checked before every read; the rare SIGBUS when the cut lands
//! inside a read becomes the same kind of message through [`crate::shm::reader::exit_on_sigbus`]).

use crate::engine::decimate::ValueType;
use crate::shm::layout::RegionInfo;
use crate::shm::{Reader, ShmError, WriterState};
use argh::FromArgs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Print decimated frames of a channel from shared memory.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "tail")]
pub struct TailArgs {
    /// channel name (or a path to a region file)
    #[argh(positional)]
    pub channel: String,
    /// directory of the regions
    #[argh(option, default = "String::from(\"/dev/shm/ringrelay\")")]
    pub shm_dir: String,
    /// keep printing new frames
    #[argh(switch, short = 'f')]
    pub follow: bool,
    /// print only the last N frames held now
    #[argh(option)]
    pub last: Option<u64>,
    /// text, csv or json
    #[argh(option, default = "String::from(\"text\")")]
    pub format: String,
    /// cascade level (0 is the first factor)
    #[argh(option, default = "0")]
    pub level: u32,
    /// with --follow, stop after this long (e.g. 5s)
    #[argh(option)]
    pub duration: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Csv,
    Json,
}

/// Resolves the region path for a channel (or path) and cascade level.
pub fn region_path(channel: &str, shm_dir: &str, level: u32) -> Result<PathBuf, String> {
    let base = if channel.contains('/') {
        PathBuf::from(channel)
    } else {
        Path::new(shm_dir).join(channel)
    };
    if level == 0 {
        return Ok(base);
    }
    let r = Reader::open(&base).map_err(|e| e.to_string())?;
    let f = r.info().level_factors.clone();
    match f.get(level as usize) {
        Some(factor) => Ok(PathBuf::from(format!("{}.{factor}", base.display()))),
        None => Err(format!(
            "{}: level {level} does not exist (levels 0..{} for factors {:?})",
            base.display(),
            f.len(),
            f
        )),
    }
}

pub fn run(a: &TailArgs) -> i32 {
    let format = match a.format.as_str() {
        "text" => Format::Text,
        "csv" => Format::Csv,
        "json" => Format::Json,
        other => {
            eprintln!("ringrelay tail: unknown --format '{other}' (text, csv or json)");
            return 1;
        }
    };
    let duration = match a
        .duration
        .as_deref()
        .map(crate::config::units::parse_duration)
    {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            eprintln!("ringrelay tail: --duration: {e}");
            return 1;
        }
    };
    let path = match region_path(&a.channel, &a.shm_dir, a.level) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ringrelay tail: {e}");
            return 1;
        }
    };
    let mut reader = match Reader::open(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringrelay tail: {e}");
            return 1;
        }
    };
    // Installing a handler for SIGBUS does not fail; without it we would only lose the message.
    let _ = crate::shm::reader::exit_on_sigbus(&format!(
        "ringrelay tail: region {} was truncated while it was being read: the relay restarted or \
         the file was replaced",
        path.display()
    ));
    match tail(&mut reader, a.last, a.follow, duration, format) {
        Ok(()) => 0,
        Err(TailError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("ringrelay tail: {e}");
            1
        }
    }
}

enum TailError {
    Io(io::Error),
    Shm(ShmError),
}

impl std::fmt::Display for TailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TailError::Io(e) => write!(f, "{e}"),
            TailError::Shm(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for TailError {
    fn from(e: io::Error) -> Self {
        TailError::Io(e)
    }
}

impl From<ShmError> for TailError {
    fn from(e: ShmError) -> Self {
        TailError::Shm(e)
    }
}

fn tail(
    r: &mut Reader,
    last: Option<u64>,
    follow: bool,
    duration: Option<Duration>,
    format: Format,
) -> Result<(), TailError> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let started = Instant::now();
    match last {
        Some(n) => r.seek_last(n)?,
        None => r.seek_oldest()?,
    }
    let end = r.head()?;
    header(&mut out, r.info(), format)?;
    let mut buf = Vec::new();
    loop {
        let want = if follow {
            4096
        } else {
            end.saturating_sub(r.position()).min(4096) as usize
        };
        let c = if want == 0 {
            Default::default()
        } else {
            r.read(&mut buf, want)?
        };
        if c.lost > 0 {
            out.flush()?;
            eprintln!(
                "ringrelay tail: lost {} frames before frame {} (overwritten before they were read)",
                c.lost, c.start
            );
        }
        if c.frames > 0 {
            let info = r.info().clone();
            let times = r.times_of(c.start..c.start + c.frames as u64);
            for (k, frame) in buf.chunks_exact(info.frame_bytes as usize).enumerate() {
                line(&mut out, &info, c.start + k as u64, times[k], frame, format)?;
            }
            continue;
        }
        if !follow {
            break;
        }
        out.flush()?;
        if duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if r.writer_state() == WriterState::Replaced {
            match r.reattach() {
                Ok(true) => {
                    eprintln!(
                        "ringrelay tail: region replaced (daemon restart), generation {}",
                        r.info().generation
                    );
                    header(&mut out, r.info(), format)?;
                }
                Ok(false) => {}
                Err(ShmError::Missing(_)) => {}
                Err(e) => return Err(TailError::Shm(e)),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    out.flush()?;
    Ok(())
}

fn header(out: &mut impl Write, info: &RegionInfo, format: Format) -> io::Result<()> {
    match format {
        Format::Csv => {
            writeln!(out, "frame,time_ns,{}", info.column_names().join(","))
        }
        Format::Text => writeln!(
            out,
            "# {} {}:{} {} x{}, {} frames, generation {}",
            info.name,
            info.mode_name(),
            info.factor,
            info.value_type.name(),
            info.channels,
            info.capacity,
            info.generation
        ),
        Format::Json => Ok(()),
    }
}

/// Formats one value: integers as integers, f32 by its shortest f32 representation.
pub fn fmt_value(t: ValueType, v: f64) -> String {
    match t {
        ValueType::F32 => format!("{}", v as f32),
        _ => format!("{v}"),
    }
}

fn line(
    out: &mut impl Write,
    info: &RegionInfo,
    frame: u64,
    time: Option<i64>,
    bytes: &[u8],
    format: Format,
) -> io::Result<()> {
    let vals = info.decode_frame(bytes);
    let t = info.value_type;
    match format {
        Format::Csv => {
            write!(out, "{frame},")?;
            if let Some(ns) = time {
                write!(out, "{ns}")?;
            }
            for v in &vals {
                write!(out, ",{}", fmt_value(t, *v))?;
            }
            writeln!(out)
        }
        Format::Json => {
            write!(out, "{{\"frame\":{frame},\"time_ns\":")?;
            match time {
                Some(ns) => write!(out, "{ns}")?,
                None => write!(out, "null")?,
            }
            for (name, v) in info.column_names().iter().zip(&vals) {
                if v.is_finite() {
                    write!(out, ",\"{name}\":{}", fmt_value(t, *v))?;
                } else {
                    write!(out, ",\"{name}\":null")?;
                }
            }
            writeln!(out, "}}")
        }
        Format::Text => {
            let ts = time.map_or_else(|| "-".to_string(), format_utc);
            write!(out, "{frame:>10} {ts}")?;
            for v in &vals {
                write!(out, " {:>12}", fmt_value(t, *v))?;
            }
            writeln!(out)
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from Unix nanoseconds.
pub fn format_utc(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let ms = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_utc(1_709_251_199_999_000_000),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(format_utc(-1_000_000), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn value_formatting() {
        assert_eq!(fmt_value(ValueType::F32, 0.1f32 as f64), "0.1");
        assert_eq!(fmt_value(ValueType::I16, -5.0), "-5");
    }
}
