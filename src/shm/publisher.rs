//! One channel's shared-memory output: the decimator feeding one region per cascade level.
//!
//! Owns: [`Publisher`] (what the engine calls, through [`crate::engine::io::Publish`], per
//! received datagram or stream segment and on its ~100 ms tick), the region file names
//! (`<dir>/<channel>` for level 0, `<dir>/<channel>.<factor>` for the others), heartbeats and
//! time anchors.
//! Must never: block, allocate per sample, or fail after creation (a publisher that exists
//! always accepts input; problems surface at `create`). No `unsafe` here: the mapping is behind
//! [`super::writer::RegionWriter`].
//!
//! # Time anchors
//!
//! Times are estimated from arrival on CLOCK_REALTIME (flag ESTIMATED): when input arrives, the
//! newest input frame is taken to have been sampled "now". The newest output frame `L` of a
//! level stands for input frame `I = L·D + offset` (window or filter centre), so its time is
//! `now − (F − I) / rate` with `F` the newest input frame. With `sample_rate` configured the
//! first anchor is written on the first output frame; later anchors only when the arrival time
//! departs from the anchored time line by more than 100 ms plus one output period (an input gap,
//! a stall, a clock step), flagged DISCONTINUITY. Without `sample_rate` the writer measures the
//! rate (flag RATE_ESTIMATED) once a second of input has arrived and re-anchors every 10 s.

use super::layout::{self, Anchor, RegionInfo, Status};
use super::writer::{monotonic_ns, realtime_ns, RegionWriter};
use crate::config::sample::{DecimateMode, SampleConfig, SampleType};
use crate::engine::decimate::Decimator;
use std::io;
use std::path::PathBuf;

/// Where and how region files are created (from `[global] shm_dir`, `shm_mode`, `shm_group`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmOptions {
    pub dir: PathBuf,
    /// File mode, e.g. 0o640.
    pub mode: u32,
    /// Group id for the files, if configured.
    pub group: Option<u32>,
    /// The uid the relay runs as after dropping root (`user =`): a `dir` it owns is trusted
    /// too (see [`crate::ops::fsperm::check_private_dir`]).
    pub run_as: Option<u32>,
}

impl Default for ShmOptions {
    fn default() -> Self {
        ShmOptions {
            dir: PathBuf::from("/dev/shm/ringrelay"),
            mode: 0o640,
            group: None,
            run_as: None,
        }
    }
}

/// Counters of one publisher.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublisherCounters {
    /// Whole input frames decimated.
    pub frames_in: u64,
    /// Output frames published at level 0.
    pub frames_out: u64,
    /// Output frames published per level.
    pub frames_out_per_level: Vec<u64>,
    /// Datagrams too short for `header_bytes` or with a partial trailing frame.
    pub malformed_datagrams: u64,
}

struct Level {
    writer: RegionWriter,
    factor: u32,
    offset: f64,
    /// CLOCK_REALTIME of the last anchor written from `tick`.
    last_reanchor_ns: i64,
}

/// Decimates one channel into its shared-memory regions.
pub struct Publisher {
    dec: Decimator,
    levels: Vec<Level>,
    out: Vec<Vec<u8>>,
    input_rate: Option<f64>,
    heartbeat: u64,
    /// (realtime ns, frames_in) at the first input and at the latest input.
    first_input: Option<(i64, u64)>,
    last_input: Option<(i64, u64)>,
}

/// The region file name of a level: `<channel>` for level 0, `<channel>.<factor>` otherwise.
pub fn region_file_name(channel: &str, level: usize, factor: u32) -> String {
    if level == 0 {
        channel.to_string()
    } else {
        format!("{channel}.{factor}")
    }
}

fn mode_code(m: DecimateMode) -> u16 {
    match m {
        DecimateMode::Every => layout::MODE_EVERY,
        DecimateMode::Mean => layout::MODE_MEAN,
        DecimateMode::MinMax => layout::MODE_MINMAX,
        DecimateMode::Fir => layout::MODE_FIR,
    }
}

impl Publisher {
    /// Creates the directory if missing and one region per cascade level, each atomically.
    pub fn create(opts: &ShmOptions, channel: &str, cfg: &SampleConfig) -> io::Result<Publisher> {
        if channel.is_empty() || channel.starts_with('.') || channel.contains('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("channel name '{channel}' cannot name a shm region"),
            ));
        }
        let dec =
            Decimator::new(cfg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let factors: Vec<u32> = dec.levels().iter().map(|l| l.factor).collect();
        let input_rate = cfg.sample_rate.filter(|r| *r > 0.0 && r.is_finite());
        let mut levels = Vec::new();
        for (i, shape) in dec.levels().iter().enumerate() {
            let info = RegionInfo {
                minor: layout::LAYOUT_MINOR,
                file_bytes: 0,
                generation: 0,
                writer_pid: 0,
                heartbeat_ms: 100,
                created_real_ns: 0,
                data_offset: 0,
                capacity: cfg.shm_frames,
                frame_bytes: shape.frame_bytes() as u32,
                max_batch: 0,
                value_type: shape.value_type,
                channels: shape.channels,
                values_per_channel: shape.values_per_channel,
                mode: mode_code(cfg.decimate.mode),
                input_sample: SampleType::ALL
                    .iter()
                    .position(|t| *t == cfg.sample)
                    .map_or(0, |p| p as u16 + 1),
                factor: shape.factor,
                input_rate: input_rate.unwrap_or(0.0),
                time_offset: dec.time_offset(i),
                fir_taps: if cfg.decimate.mode == DecimateMode::Fir {
                    cfg.decimate
                        .fir_taps
                        .unwrap_or_else(|| crate::engine::decimate::default_fir_taps(shape.factor))
                } else {
                    0
                },
                level: i as u16,
                level_factors: factors.clone(),
                name: channel.to_string(),
            };
            let name = region_file_name(channel, i, shape.factor);
            let writer = RegionWriter::create(opts, &name, info)?;
            levels.push(Level {
                writer,
                factor: shape.factor,
                offset: dec.time_offset(i),
                last_reanchor_ns: 0,
            });
        }
        let n = levels.len();
        let mut p = Publisher {
            dec,
            levels,
            out: vec![Vec::new(); n],
            input_rate,
            heartbeat: 0,
            first_input: None,
            last_input: None,
        };
        p.tick();
        Ok(p)
    }

    /// The region files, level 0 first.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.levels
            .iter()
            .map(|l| l.writer.path().to_path_buf())
            .collect()
    }

    /// UDP input: one whole datagram including its `header_bytes`.
    pub fn feed_datagram(&mut self, datagram: &[u8]) {
        self.dec.feed_datagram(datagram, &mut self.out);
        self.flush();
    }

    /// Stream input: the next bytes of the stream.
    pub fn feed_stream(&mut self, bytes: &[u8]) {
        self.dec.feed_stream(bytes, &mut self.out);
        self.flush();
    }

    fn flush(&mut self) {
        let frames_in = self.dec.counters().frames_in;
        if self.last_input.map(|l| l.1) != Some(frames_in) && frames_in > 0 {
            let now = realtime_ns();
            self.first_input.get_or_insert((now, frames_in));
            self.last_input = Some((now, frames_in));
        }
        for (i, level) in self.levels.iter_mut().enumerate() {
            if self.out[i].is_empty() {
                continue;
            }
            level.writer.publish(&self.out[i]);
            self.out[i].clear();
            if level.writer.last_anchor().is_none() {
                if let (Some(rate), Some(last)) = (self.input_rate, self.last_input) {
                    let a = anchor_now(level, rate, last, layout::ANCHOR_DISCONTINUITY);
                    level.writer.add_anchor(&a);
                }
            }
        }
    }

    /// Called about every 100 ms: heartbeat, counters, anchors.
    pub fn tick(&mut self) {
        self.heartbeat += 1;
        let now = realtime_ns();
        let mono = monotonic_ns();
        let c = self.dec.counters().clone();
        let rate = self.input_rate.or_else(|| self.measured_rate());
        for (i, level) in self.levels.iter_mut().enumerate() {
            level.writer.write_status(&Status {
                heartbeat_count: self.heartbeat,
                heartbeat_real_ns: now,
                heartbeat_mono_ns: mono,
                input_frames: c.frames_in,
                output_frames: c.frames_out[i],
                malformed_datagrams: c.malformed_datagrams,
                last_input_real_ns: self.last_input.map_or(0, |l| l.0),
            });
            let (Some(rate), Some(last)) = (rate, self.last_input) else {
                continue;
            };
            if level.writer.head() == 0 {
                continue;
            }
            let extra = if self.input_rate.is_none() {
                layout::ANCHOR_RATE_ESTIMATED
            } else {
                0
            };
            let candidate = anchor_now(level, rate, last, extra);
            let need = match level.writer.last_anchor() {
                None => true,
                Some(a) => {
                    let predicted = a.time_of(candidate.frame).unwrap_or(i64::MIN);
                    let tolerance = 100_000_000 + (1e9 / candidate.rate_hz) as i64;
                    let drift = (predicted.saturating_sub(candidate.real_ns)).abs();
                    let remeasure = extra != 0 && now - level.last_reanchor_ns > 10_000_000_000;
                    drift > tolerance || remeasure
                }
            };
            if need {
                let mut a = candidate;
                if level.writer.last_anchor().is_none() || extra == 0 {
                    a.flags |= layout::ANCHOR_DISCONTINUITY;
                }
                level.writer.add_anchor(&a);
                level.last_reanchor_ns = now;
            }
        }
    }

    /// Input frames per second measured since the first input (after one second of input).
    fn measured_rate(&self) -> Option<f64> {
        let (t0, f0) = self.first_input?;
        let (t1, f1) = self.last_input?;
        if t1 - t0 < 1_000_000_000 || f1 <= f0 {
            return None;
        }
        Some((f1 - f0) as f64 * 1e9 / (t1 - t0) as f64)
    }

    pub fn counters(&self) -> PublisherCounters {
        let c = self.dec.counters();
        PublisherCounters {
            frames_in: c.frames_in,
            frames_out: c.frames_out.first().copied().unwrap_or(0),
            frames_out_per_level: c.frames_out.clone(),
            malformed_datagrams: c.malformed_datagrams,
        }
    }

    /// Final heartbeat and counters, `state = STOPPED`; the files stay for readers to drain.
    pub fn close(mut self) {
        self.tick();
        // Dropping the writers stores STOPPED and releases the single-writer locks.
    }
}

/// The anchor for the newest published frame of `level`, from the newest input arrival.
fn anchor_now(level: &Level, rate: f64, last: (i64, u64), extra_flags: u32) -> Anchor {
    let l = level.writer.head() - 1;
    let instant = l as f64 * level.factor as f64 + level.offset;
    let newest_input = last.1 as f64 - 1.0;
    let back_ns = (newest_input - instant) * 1e9 / rate;
    Anchor {
        flags: layout::ANCHOR_ESTIMATED | extra_flags,
        frame: l,
        real_ns: last.0 - back_ns.round() as i64,
        rate_hz: rate / level.factor as f64,
    }
}
