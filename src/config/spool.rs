//! The `spool=` options of an output: where a collector's data waits on disk while the
//! collector is away or too slow, and how much of it.
//!
//! Owns: the option keys ([`KEYS`]), their values as written ([`SpoolOpts`], inside a URL's
//! options), the validated [`SpoolConfig`] with its defaults, the one list of output schemes
//! that may spool ([`may_spool`]), and the checks a spool directory gets from `ringrelay
//! check` (absolute; missing is fine when its parent exists, since the relay creates it at
//! start). Must never: create or change anything on disk (the driver creates the directory
//! at start, and [`crate::ops::fsperm::check_private_dir`] judges its owner and mode then).

use crate::config::parse::quote;
use crate::config::units::{format_duration, format_size, parse_duration, parse_size};
use crate::config::url::Scheme;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bytes of a spool record's header (its length and checksum): a record's payload is at most
/// `buffer_size` less these.
pub const RECORD_HEADER: u32 = 8;

/// The option keys of a spool, as written on an output line.
pub const KEYS: &[&str] = &[
    "spool",
    "spool_max",
    "spool_full",
    "spool_segment",
    "spool_sync",
];

/// Default `spool_max`: the most bytes of segments the spool keeps.
pub const DEFAULT_MAX: u64 = 1 << 30;
/// Default `spool_segment`: the size at which a segment is closed and the next begun.
pub const DEFAULT_SEGMENT: u64 = 16 << 20;
/// Default `spool_sync`: how often written records are synced (and the replay position
/// recorded).
pub const DEFAULT_SYNC: Duration = Duration::from_secs(1);
/// The smallest `spool_segment`.
pub const MIN_SEGMENT: u64 = 64 << 10;
/// The largest `spool_segment` (a segment's offsets fit a u32 with room to spare).
pub const MAX_SEGMENT: u64 = 1 << 30;
/// The shortest and longest `spool_sync`.
pub const MIN_SYNC: Duration = Duration::from_millis(10);
pub const MAX_SYNC: Duration = Duration::from_secs(3600);

/// The output schemes that may have a spool: those whose collector the relay dials and
/// whose writes it can tell were taken (an MQTT broker's: a QoS 1 message is taken at its
/// PUBACK, a QoS 0 one once written).
pub fn may_spool(scheme: Scheme) -> bool {
    matches!(scheme, Scheme::Tcp | Scheme::Unix | Scheme::Mqtt)
}

/// Whether spool options may stand on an endpoint of `scheme` (an input: never).
pub fn check_placement(input: bool, scheme: Scheme) -> Result<(), String> {
    if input {
        return Err(format!(
            "a spool keeps an output's data (spool on {} outputs)",
            spool_schemes()
        ));
    }
    if !may_spool(scheme) {
        return Err(format!(
            "option \"spool\" does not apply to {} outputs (only {})",
            scheme.name(),
            spool_schemes()
        ));
    }
    Ok(())
}

/// The schemes of [`may_spool`], for messages.
pub fn spool_schemes() -> &'static str {
    "tcp://, unix://, mqtt://"
}

/// What a full spool does with a new record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpoolFull {
    /// Delete the oldest whole segment (its records not yet replayed are dropped, counted).
    DropOldest,
    /// Refuse the new record (dropped, counted).
    DropNewest,
}

impl SpoolFull {
    pub fn name(self) -> &'static str {
        match self {
            SpoolFull::DropOldest => "drop-oldest",
            SpoolFull::DropNewest => "drop-newest",
        }
    }
}

/// The spool options as written on the URL (`None`: not given).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SpoolOpts {
    pub dir: Option<PathBuf>,
    pub max: Option<u64>,
    pub full: Option<SpoolFull>,
    pub segment: Option<u64>,
    pub sync: Option<Duration>,
}

impl SpoolOpts {
    /// Takes one `key=value` of [`KEYS`].
    pub fn set(&mut self, k: &str, v: &str) -> Result<(), String> {
        match k {
            "spool" => self.dir = Some(PathBuf::from(v)),
            "spool_max" => self.max = Some(parse_size(v)?),
            "spool_full" => {
                self.full = Some(match v {
                    "drop-oldest" => SpoolFull::DropOldest,
                    "drop-newest" => SpoolFull::DropNewest,
                    _ => {
                        return Err(format!(
                            "{} is not one of drop-oldest, drop-newest",
                            quote(v)
                        ))
                    }
                })
            }
            "spool_segment" => {
                let n = parse_size(v)?;
                if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&n) {
                    return Err(format!(
                        "{} is not a segment size in {}..={}",
                        quote(v),
                        format_size(MIN_SEGMENT),
                        format_size(MAX_SEGMENT)
                    ));
                }
                self.segment = Some(n)
            }
            "spool_sync" => {
                let d = parse_duration(v)?;
                if !(MIN_SYNC..=MAX_SYNC).contains(&d) {
                    return Err(format!("{} is not a period in 10ms..=1h", quote(v)));
                }
                self.sync = Some(d)
            }
            _ => unreachable!("only spool keys come here"),
        }
        Ok(())
    }
}

impl fmt::Display for SpoolOpts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.dir {
            write!(f, " spool={}", d.display())?;
        }
        if let Some(n) = self.max {
            write!(f, " spool_max={n}")?;
        }
        if let Some(p) = self.full {
            write!(f, " spool_full={}", p.name())?;
        }
        if let Some(n) = self.segment {
            write!(f, " spool_segment={n}")?;
        }
        if let Some(d) = self.sync {
            write!(f, " spool_sync={}", format_duration(d))?;
        }
        Ok(())
    }
}

/// A validated spool of one output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolConfig {
    /// An absolute directory, owned by this output alone.
    pub dir: PathBuf,
    pub max: u64,
    pub full: SpoolFull,
    pub segment: u64,
    pub sync: Duration,
}

impl SpoolConfig {
    /// Validates the options of an output of `scheme` whose records are at most
    /// `largest_record` bytes (a pool buffer). `None` without `spool=`. `exists` answers
    /// whether a directory exists (the file system at check time; a closure in tests).
    pub fn from_opts(
        o: &SpoolOpts,
        scheme: Scheme,
        largest_record: u64,
        exists: &dyn Fn(&Path) -> bool,
    ) -> Result<Option<SpoolConfig>, String> {
        let Some(dir) = o.dir.clone() else {
            if o != &SpoolOpts::default() {
                return Err(
                    "spool_max, spool_full, spool_segment and spool_sync need spool=DIR".into(),
                );
            }
            return Ok(None);
        };
        if !may_spool(scheme) {
            return Err(format!(
                "option \"spool\" does not apply to {} outputs (only {})",
                scheme.name(),
                spool_schemes()
            ));
        }
        if !dir.is_absolute() {
            return Err(format!(
                "spool directory {} is relative: give an absolute path",
                quote(&dir.display().to_string())
            ));
        }
        if !exists(&dir) {
            let parent = dir.parent().unwrap_or(Path::new("/"));
            if !exists(parent) {
                return Err(format!(
                    "spool directory {} is missing and so is its parent {} (the relay creates \
                     only the last component)",
                    dir.display(),
                    parent.display()
                ));
            }
        }
        let segment = o.segment.unwrap_or(DEFAULT_SEGMENT);
        let max = o.max.unwrap_or(DEFAULT_MAX);
        if segment < largest_record + 8 {
            return Err(format!(
                "spool_segment {} is smaller than one record of a pool buffer ({})",
                format_size(segment),
                format_size(largest_record)
            ));
        }
        if max < segment {
            return Err(format!(
                "spool_max {} is smaller than one segment (spool_segment {})",
                format_size(max),
                format_size(segment)
            ));
        }
        Ok(Some(SpoolConfig {
            dir,
            max,
            full: o.full.unwrap_or(SpoolFull::DropOldest),
            segment,
            sync: o.sync.unwrap_or(DEFAULT_SYNC),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Result<SpoolOpts, String> {
        let mut o = SpoolOpts::default();
        for (k, v) in pairs {
            o.set(k, v)?;
        }
        Ok(o)
    }

    fn everything_exists(_: &Path) -> bool {
        true
    }

    #[test]
    fn defaults_fill_in_and_only_dialed_stream_outputs_spool() {
        let o = opts(&[("spool", "/var/spool/rr")]).unwrap();
        let c = SpoolConfig::from_opts(&o, Scheme::Tcp, 65536, &everything_exists)
            .unwrap()
            .unwrap();
        assert_eq!(c.max, DEFAULT_MAX);
        assert_eq!(c.segment, DEFAULT_SEGMENT);
        assert_eq!(c.full, SpoolFull::DropOldest);
        assert_eq!(c.sync, DEFAULT_SYNC);
        for s in [
            Scheme::Udp,
            Scheme::File,
            Scheme::TcpListen,
            Scheme::UnixListen,
        ] {
            let e = SpoolConfig::from_opts(&o, s, 65536, &everything_exists).unwrap_err();
            assert!(e.contains("does not apply"), "{e}");
        }
        for s in [Scheme::Unix, Scheme::Mqtt] {
            assert!(SpoolConfig::from_opts(&o, s, 65536, &everything_exists).is_ok());
        }
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        assert!(opts(&[("spool_full", "drop-all")]).is_err());
        assert!(opts(&[("spool_segment", "1KiB")]).is_err());
        assert!(opts(&[("spool_sync", "2h")]).is_err());
        let o = opts(&[("spool", "rel/dir")]).unwrap();
        let e = SpoolConfig::from_opts(&o, Scheme::Tcp, 65536, &everything_exists).unwrap_err();
        assert!(e.contains("relative"), "{e}");
        let o = opts(&[
            ("spool", "/s"),
            ("spool_max", "1MiB"),
            ("spool_segment", "2MiB"),
        ])
        .unwrap();
        let e = SpoolConfig::from_opts(&o, Scheme::Tcp, 65536, &everything_exists).unwrap_err();
        assert!(e.contains("smaller than one segment"), "{e}");
        let o = opts(&[("spool_max", "1MiB")]).unwrap();
        let e = SpoolConfig::from_opts(&o, Scheme::Tcp, 65536, &everything_exists).unwrap_err();
        assert!(e.contains("need spool=DIR"), "{e}");
    }

    #[test]
    fn a_missing_dir_needs_its_parent() {
        let o = opts(&[("spool", "/a/b")]).unwrap();
        let only_a = |p: &Path| p == Path::new("/a");
        assert!(SpoolConfig::from_opts(&o, Scheme::Tcp, 65536, &only_a).is_ok());
        let nothing = |_: &Path| false;
        let e = SpoolConfig::from_opts(&o, Scheme::Tcp, 65536, &nothing).unwrap_err();
        assert!(e.contains("its parent"), "{e}");
    }
}
