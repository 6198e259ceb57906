//! `ringrelay check`: the normalized summary of a configuration (every effective value,
//! defaults included, in a form that parses back to the same configuration) and the command
//! that prints it, or every error and their count (and, exit status 0, a warning for a serial
//! port that is not there yet).

use crate::config::units::{format_duration, format_size};
use crate::config::url::Scheme;
use crate::config::{load, Config, FeatureSet, Framing, LogDest, SqpollMode};
use std::fmt;

impl fmt::Display for Config {
    /// The normalized form `ringrelay check` prints: every effective value, defaults included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.global;
        writeln!(f, "# {} ({} channels)", self.file, self.channels.len())?;
        writeln!(f, "[global]")?;
        let sq = match g.sqpoll {
            SqpollMode::Auto => "auto",
            SqpollMode::On => "on",
            SqpollMode::Off => "off",
        };
        writeln!(f, "sqpoll = {sq}")?;
        writeln!(f, "sqpoll_idle_ms = {}", g.sqpoll_idle_ms)?;
        if let Some(c) = g.sqpoll_cpu {
            writeln!(f, "sqpoll_cpu = {c}")?;
        }
        writeln!(f, "ring_entries = {}", g.ring_entries)?;
        writeln!(
            f,
            "buffer_size = {}",
            format_size(u64::from(g.buffer_size)).replace(' ', "")
        )?;
        writeln!(f, "buffer_count = {}", g.buffer_count)?;
        writeln!(
            f,
            "datagram_size = {}",
            format_size(u64::from(g.datagram_size)).replace(' ', "")
        )?;
        writeln!(f, "datagram_count = {}", g.datagram_count)?;
        let feat = match g.features {
            FeatureSet::Auto => "auto",
            FeatureSet::Baseline => "baseline",
        };
        writeln!(f, "features = {feat}")?;
        writeln!(f, "splice = {}", g.splice.name())?;
        writeln!(
            f,
            "pipe_size = {}",
            format_size(u64::from(g.pipe_size)).replace(' ', "")
        )?;
        let log_s = match g.log {
            LogDest::Stderr => "stderr",
            LogDest::Syslog => "syslog",
        };
        writeln!(f, "log = {log_s}")?;
        writeln!(
            f,
            "log_level = {}",
            g.log_level.as_str().to_ascii_lowercase()
        )?;
        writeln!(f, "log_facility = {}", g.log_facility)?;
        if let Some(p) = &g.syslog_socket {
            writeln!(f, "syslog_socket = {}", p.display())?;
        }
        writeln!(f, "stats_interval = {}", format_duration(g.stats_interval))?;
        writeln!(
            f,
            "shutdown_timeout = {}",
            format_duration(g.shutdown_timeout)
        )?;
        writeln!(f, "shm_dir = {}", g.shm_dir.display())?;
        if let Some(s) = &g.shm_group {
            writeln!(f, "shm_group = {s}")?;
        }
        writeln!(f, "shm_mode = {:04o}", g.shm_mode)?;
        if let Some(u) = &g.user {
            writeln!(f, "user = {u}")?;
        }
        if let Some(u) = &g.group {
            writeln!(f, "group = {u}")?;
        }
        writeln!(
            f,
            "require_user = {}",
            if g.require_user { "on" } else { "off" }
        )?;
        if let Some(p) = &g.pidfile {
            writeln!(f, "pidfile = {}", p.display())?;
        }
        match g.metrics {
            Some(a) => writeln!(f, "metrics = {a}")?,
            None => writeln!(f, "metrics = off")?,
        }
        let allow: Vec<String> = g.metrics_allow.iter().map(|c| c.to_string()).collect();
        writeln!(f, "metrics_allow = {}", allow.join(","))?;
        writeln!(f, "health_grace = {}", format_duration(g.health_grace))?;
        for c in &self.channels {
            writeln!(f)?;
            writeln!(f, "[channel {}]", c.name)?;
            writeln!(f, "input = {}", c.input)?;
            for o in &c.outputs {
                write!(
                    f,
                    "output = {} on_slow={} max_backlog={}",
                    o.endpoint,
                    o.on_slow.name(),
                    o.max_backlog
                )?;
                if o.endpoint.scheme == Scheme::File {
                    write!(f, " fault_grace={}", format_duration(o.fault_grace))?;
                }
                if let Some(sp) = &o.spool {
                    write!(
                        f,
                        " spool={} spool_max={} spool_full={} spool_segment={} spool_sync={}",
                        sp.dir.display(),
                        sp.max,
                        sp.full.name(),
                        sp.segment,
                        format_duration(sp.sync)
                    )?;
                }
                writeln!(f)?;
            }
            writeln!(f, "framing = {}", c.framing.name())?;
            if c.framing == Framing::Line {
                writeln!(f, "max_line = {}", c.records.max_line)?;
            }
            if c.records.preamble > 0 {
                writeln!(f, "preamble = {}", c.records.preamble)?;
            }
            if let (Some((st, n)), None) = (c.records.frame, &c.samples) {
                writeln!(f, "sample = {st}")?;
                writeln!(f, "interleave = {n}")?;
            }
            writeln!(f, "splice = {}", c.splice.name())?;
            if c.input.scheme.is_listen() {
                writeln!(f, "producer = {}", c.producer.name())?;
            }
            if c.input.scheme.is_stream() {
                writeln!(f, "commands = {}", c.commands.name())?;
            }
            if let Some(s) = &c.samples {
                writeln!(f, "sample = {}", s.sample)?;
                writeln!(f, "interleave = {}", s.interleave)?;
                writeln!(f, "header_bytes = {}", s.header_bytes)?;
                if let Some(r) = s.sample_rate {
                    writeln!(f, "sample_rate = {r}")?;
                }
                let facs: Vec<String> = s.decimate.factors.iter().map(|x| x.to_string()).collect();
                match s.decimate.fir_taps {
                    Some(t) => writeln!(
                        f,
                        "decimate = {}:{}:{t}",
                        s.decimate.mode.name(),
                        facs.join(",")
                    )?,
                    None => writeln!(
                        f,
                        "decimate = {}:{}",
                        s.decimate.mode.name(),
                        facs.join(",")
                    )?,
                }
                writeln!(f, "shm = {}", if s.shm { "on" } else { "off" })?;
                writeln!(f, "shm_frames = {}", s.shm_frames)?;
            }
        }
        Ok(())
    }
}

/// `ringrelay check -c FILE`: exit 0 and the normalized summary, or exit 1 and every error.
pub fn check_command(path: &str) -> i32 {
    match load(path) {
        Ok(cfg) => {
            print!("{cfg}");
            for c in cfg
                .channels
                .iter()
                .filter(|c| c.input.scheme == Scheme::Serial)
            {
                if let crate::config::url::Target::Path(p) = &c.input.target {
                    if let Some(w) = crate::config::serial::path_warning(p) {
                        eprintln!("{}:{}: input: warning: {w}", cfg.file, c.input_line);
                    }
                }
            }
            for o in cfg.channels.iter().flat_map(|c| c.outputs.iter()) {
                let file = o
                    .endpoint
                    .opts
                    .mqtt
                    .as_ref()
                    .and_then(|m| m.password_file.as_ref());
                if let Some(Ok((_, Some(w)))) = file.map(|p| crate::config::mqtt::read_password(p))
                {
                    eprintln!("{}:{}: output: warning: {w}", cfg.file, o.line);
                }
            }
            0
        }
        Err(errs) => {
            for e in &errs {
                eprintln!("{e}");
            }
            eprintln!(
                "ringrelay: {path}: {} error{}",
                errs.len(),
                if errs.len() == 1 { "" } else { "s" }
            );
            1
        }
    }
}
