//! The reference decimation of `shm_e2e.rs`: the decimating channels of its end-to-end test,
//! the streams they publish, and the frames each mode must produce from the input, computed here
//! independently of the daemon, with how far a correct implementation may be from each value
//! (see ringrelay-shm(7), DECIMATION); plus the comparison of published frames with them.

use crate::common::ShmDir;
use crate::{FRAME_BYTES, INTERLEAVE};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Every,
    Mean,
    MinMax,
    Fir,
}

/// One published stream: a channel's level with its total factor.
#[derive(Clone, Debug)]
pub struct Stream {
    pub channel: &'static str,
    pub level: u32,
    pub mode: Mode,
    pub factor: usize,
}

impl Stream {
    /// The region file (`<channel>` or `<channel>.<factor>`).
    pub fn path(&self, shm: &ShmDir) -> PathBuf {
        if self.level == 0 {
            shm.path().join(self.channel)
        } else {
            shm.path().join(format!("{}.{}", self.channel, self.factor))
        }
    }

    pub fn name(&self) -> String {
        format!(
            "{} level {} ({:?}:{})",
            self.channel, self.level, self.mode, self.factor
        )
    }
}

/// The decimating channels of the end-to-end test: (name, `decimate =`, mode, total factors).
pub const CHANNELS: [(&str, &str, Mode, &[usize]); 5] = [
    ("every", "every:7", Mode::Every, &[7]),
    ("mean", "mean:10", Mode::Mean, &[10]),
    ("minmax", "minmax:6", Mode::MinMax, &[6]),
    ("cascade", "minmax:4,16", Mode::MinMax, &[4, 16]),
    ("fir", "fir:8", Mode::Fir, &[8]),
];

pub fn streams() -> Vec<Stream> {
    CHANNELS
        .iter()
        .flat_map(|&(channel, _, mode, factors)| {
            factors
                .iter()
                .enumerate()
                .map(move |(level, &factor)| Stream {
                    channel,
                    level: level as u32,
                    mode,
                    factor,
                })
        })
        .collect()
}

/// The samples of each sub-channel.
pub fn sub_channels(bytes: &[u8]) -> Vec<Vec<f64>> {
    let mut subs = vec![Vec::new(); INTERLEAVE];
    for frame in bytes.chunks_exact(FRAME_BYTES) {
        for (k, s) in frame.chunks_exact(2).enumerate() {
            subs[k].push(i16::from_le_bytes([s[0], s[1]]) as f64);
        }
    }
    subs
}

/// Blackman-windowed sinc, cutoff 0.5/ratio cycles per sample, unit DC gain (ringrelay-shm(7)).
fn fir_taps(ratio: usize) -> Vec<f64> {
    let n = (20 * ratio + 1).min(4095) | 1;
    let fc = 0.5 / ratio as f64;
    let mid = (n - 1) as f64 / 2.0;
    let pi = std::f64::consts::PI;
    let h: Vec<f64> = (0..n)
        .map(|i| {
            let t = i as f64 - mid;
            let sinc = if t == 0.0 {
                2.0 * fc
            } else {
                (2.0 * pi * fc * t).sin() / (pi * t)
            };
            let x = 2.0 * pi * i as f64 / (n - 1) as f64;
            sinc * (0.42 - 0.5 * x.cos() + 0.08 * (2.0 * x).cos())
        })
        .collect();
    let sum: f64 = h.iter().sum();
    h.into_iter().map(|v| v / sum).collect()
}

/// One expected output frame: its values (columns in region order) and, per value, how far a
/// correct implementation may be from it.
pub struct Expected {
    pub values: Vec<f64>,
    pub tolerance: Vec<f64>,
}

/// One ulp of `v` as an f32.
fn f32_ulp(v: f64) -> f64 {
    let f = (v as f32).abs();
    (f32::from_bits(f.to_bits() + 1) - f) as f64
}

/// The frames a stream must hold after `x` (per sub-channel) went in.
pub fn expected(s: &Stream, x: &[Vec<f64>]) -> Vec<Expected> {
    let d = s.factor;
    let len = x[0].len();
    // `every` keeps the first frame of a window, the other modes need the whole window.
    let n = if s.mode == Mode::Every {
        len.div_ceil(d)
    } else {
        len / d
    };
    let taps = if s.mode == Mode::Fir {
        fir_taps(d)
    } else {
        Vec::new()
    };
    (0..n)
        .map(|m| {
            let mut values = Vec::new();
            let mut tolerance = Vec::new();
            for xs in x {
                let w = &xs[m * d..((m + 1) * d).min(len)];
                match s.mode {
                    Mode::Every => {
                        values.push(w[0]);
                        tolerance.push(0.0);
                    }
                    Mode::MinMax => {
                        values.push(w.iter().copied().fold(f64::INFINITY, f64::min));
                        values.push(w.iter().copied().fold(f64::NEG_INFINITY, f64::max));
                        tolerance.extend([0.0, 0.0]);
                    }
                    Mode::Mean => {
                        let v = w.iter().sum::<f64>() / d as f64;
                        values.push(v);
                        tolerance.push(f32_ulp(v));
                    }
                    Mode::Fir => {
                        let last = m * d + d - 1;
                        let (mut v, mut scale) = (0.0, 0.0);
                        for (k, h) in taps.iter().enumerate() {
                            if k <= last {
                                v += h * xs[last - k];
                                scale += (h * xs[last - k]).abs();
                            }
                        }
                        values.push(v);
                        let f32_sum = (taps.len() as f64 + 3.0) * f64::from(f32::EPSILON) / 2.0;
                        tolerance.push(f32_ulp(v) + f32_sum * scale);
                    }
                }
            }
            Expected { values, tolerance }
        })
        .collect()
}

/// Asserts that the frames read (from frame 0 on) are the expected ones.
pub fn assert_frames(what: &str, got: &[Vec<f64>], want: &[Expected]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} frames read, {} expected",
        got.len(),
        want.len()
    );
    for (m, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = g.len() == w.values.len()
            && g.iter()
                .zip(&w.values)
                .zip(&w.tolerance)
                .all(|((g, w), t)| (g - w).abs() <= *t);
        assert!(
            ok,
            "{what}: frame {m} is {g:?}, expected {:?} (tolerance {:?})",
            w.values, w.tolerance
        );
    }
}
