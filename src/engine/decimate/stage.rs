//! One cascade level's windowing state: [`Stage`] keeps a partial window (`every` count,
//! `mean` sums, `minmax` extremes, `fir` history) across calls and emits one output frame per
//! `ratio` input frames. The FIR of level 0 runs in `f32` ([`Stage::FirF32`]) on the SIMD dot
//! product; the other stages in `f64`.

use super::fir::{default_fir_taps, fir_design};
use super::polyphase::FirF32;
use crate::config::sample::DecimateMode;

/// One cascade stage: consumes frames of `channels × vpc_in` f64 values, produces one output
/// frame every `ratio` input frames.
#[derive(Clone, Debug)]
pub(super) enum Stage {
    Every {
        ratio: u32,
        count: u32,
    },
    Mean {
        ratio: u32,
        count: u32,
        sums: Vec<f64>,
    },
    /// Input is always (min, max) pairs; level 0 feeds (v, v).
    MinMax {
        ratio: u32,
        count: u32,
        acc: Vec<f64>,
    },
    Fir {
        ratio: u32,
        count: u32,
        taps: Vec<f64>,
        /// Per sub-channel, `2·T` values: each sample is written at `pos` and `pos + T`, so the
        /// newest T samples are always the contiguous slice `[pos+1, pos+1+T)` (newest last).
        hist: Vec<f64>,
        pos: usize,
    },
    /// The same filter in `f32`: level 0 of `fir`, where all the input rate is.
    FirF32(FirF32),
}

impl Stage {
    pub(super) fn new(mode: DecimateMode, ratio: u32, channels: usize, taps: Option<u32>) -> Stage {
        match mode {
            DecimateMode::Every => Stage::Every { ratio, count: 0 },
            DecimateMode::Mean => Stage::Mean {
                ratio,
                count: 0,
                sums: vec![0.0; channels],
            },
            DecimateMode::MinMax => Stage::MinMax {
                ratio,
                count: 0,
                acc: vec![0.0; 2 * channels],
            },
            DecimateMode::Fir => {
                let t = taps.unwrap_or_else(|| default_fir_taps(ratio)) as usize;
                Stage::Fir {
                    ratio,
                    count: 0,
                    taps: fir_design(ratio, t as u32),
                    hist: vec![0.0; 2 * t * channels],
                    pos: 0,
                }
            }
        }
    }

    /// Level 0 of `fir`: the filter of [`Stage::new`] in `f32`.
    pub(super) fn new_fir_f32(ratio: u32, channels: usize, taps: Option<u32>) -> Stage {
        Stage::FirF32(FirF32::new(ratio, channels, taps))
    }

    /// Input frames per output frame.
    pub(super) fn ratio(&self) -> u32 {
        match self {
            Stage::Every { ratio, .. }
            | Stage::Mean { ratio, .. }
            | Stage::MinMax { ratio, .. }
            | Stage::Fir { ratio, .. } => *ratio,
            Stage::FirF32(f) => f.ratio,
        }
    }

    /// Feeds one frame; returns true when `out` holds a new output frame.
    pub(super) fn push(&mut self, frame: &[f64], out: &mut Vec<f64>) -> bool {
        match self {
            Stage::Every { ratio, count } => {
                let keep = *count == 0;
                *count += 1;
                if *count == *ratio {
                    *count = 0;
                }
                if keep {
                    out.clear();
                    out.extend_from_slice(frame);
                }
                keep
            }
            Stage::Mean { ratio, count, sums } => {
                for (s, v) in sums.iter_mut().zip(frame) {
                    *s += *v;
                }
                *count += 1;
                if *count < *ratio {
                    return false;
                }
                *count = 0;
                out.clear();
                let r = *ratio as f64;
                for s in sums.iter_mut() {
                    out.push(*s / r);
                    *s = 0.0;
                }
                true
            }
            Stage::MinMax { ratio, count, acc } => {
                if *count == 0 {
                    acc.copy_from_slice(frame);
                } else {
                    for (a, v) in acc.chunks_exact_mut(2).zip(frame.chunks_exact(2)) {
                        a[0] = a[0].min(v[0]);
                        a[1] = a[1].max(v[1]);
                    }
                }
                *count += 1;
                if *count < *ratio {
                    return false;
                }
                *count = 0;
                out.clear();
                out.extend_from_slice(acc);
                true
            }
            Stage::Fir {
                ratio,
                count,
                taps,
                hist,
                pos,
            } => {
                let t = taps.len();
                *pos = if *pos == 0 { t - 1 } else { *pos - 1 };
                // Newest sample at index `pos` of the window [pos, pos+T): window[k] = x[n-k].
                for (c, v) in frame.iter().enumerate() {
                    let h = &mut hist[c * 2 * t..(c + 1) * 2 * t];
                    h[*pos] = *v;
                    h[*pos + t] = *v;
                }
                *count += 1;
                if *count < *ratio {
                    return false;
                }
                *count = 0;
                out.clear();
                for c in 0..frame.len() {
                    let w = &hist[c * 2 * t + *pos..c * 2 * t + *pos + t];
                    let y: f64 = taps.iter().zip(w).map(|(a, b)| a * b).sum();
                    out.push(y);
                }
                true
            }
            Stage::FirF32(_) => unreachable!("fir level 0 is fed whole batches by the decimator"),
        }
    }
}
