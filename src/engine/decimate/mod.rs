//! Stateful decimation of a channel's samples: `every:N`, `mean:N`, `minmax:N`, `fir:N[:taps]`,
//! each sub-channel on its own, cascaded for multi-level specs such as `minmax:10,100,1000`.
//!
//! Owns: turning the raw bytes of a channel (whole datagrams, or the next bytes of a stream) into
//! encoded output frames, one byte vector per cascade level, in the little-endian value type the
//! shared-memory region stores ([`ValueType`]). Carries partial frames (streams) and partial
//! decimation windows (both) across calls, so packetisation never changes the result.
//!
//! Must never: do I/O, read a clock, allocate per sample, or use `unsafe` (the SIMD kernels in
//! [`simd`] are the one place with `unsafe` in the engine; see there why). It is the pure
//! engine behind [`crate::shm::Publisher`] and is tested against straightforward references
//! (`tests.rs`), each SIMD path against the scalar one (`simd_tests.rs`).
//!
//! # Numbers
//!
//! * Samples are decoded to `f64` (exact for every input type), decimated in `f64`, and encoded
//!   once per output value. `every` and `minmax` therefore reproduce input values bit for bit
//!   (big-endian inputs are stored little-endian). `minmax` uses IEEE `min`/`max` (a NaN sample
//!   is ignored unless the whole window is NaN).
//! * `mean:N`: the window sum is accumulated in `f64` in arrival order, divided by N, and rounded
//!   to the nearest `f32` (ties to even). Level 0 of little-endian `i16` input sums whole
//!   windows in `i32` SIMD lanes ([`simd`]), divides and rounds in vector lanes too, and keeps
//!   the frames of a partial window raw until a later call completes it; every partial sum is
//!   an exactly representable integer, so that is the same sum and the same output bytes.
//!   Little-endian `f32` input with one level sums each sub-channel in its own `f64` vector
//!   lane in arrival order ([`simd::mean_fold_f32`]): the same operations, so the same bytes.
//!   `minmax` of little-endian `f32` runs every level in `f32` lanes the same way
//!   ([`simd::minmax_fold_f32`]): the same values, except that of `-0.0` and `+0.0` in one
//!   window the first one stays (the `f64` path leaves that open) and a window of nothing
//!   but NaN stores the quiet NaN `0x7fc00000`. `minmax` of `i16` likewise
//!   takes min and max in `i16` lanes, at every level (exact, so the same bytes as `f64`). Cascaded levels average the previous level's `f64`
//!   means (not the rounded `f32` values), so level k equals the mean of `factor_k` inputs up to
//!   `f64` rounding.
//! * `fir:N[:taps]`: linear-phase low-pass, Blackman-windowed sinc, cutoff (−6 dB) at the output
//!   Nyquist frequency `0.5/N` cycles per input sample, taps normalised to unit DC gain. Default
//!   taps `min(20·N + 1, 4095)` (odd). Stop band: at least 74 dB down from `0.5/N + 3/taps`
//!   upward (checked by a test), so with the default taps every frequency that aliases into the
//!   lower 70 % of the output band is attenuated by 74 dB or more. Only kept outputs are computed
//!   (the polyphase saving: `taps` multiply-adds per output frame, one history store per dropped input).
//!   Output `m` is `Σ h[k]·x[m·N + N − 1 − k]` with `x[<0] = 0` (the filter starts from silence).
//!   Cascaded FIR levels run one such filter per stage on the previous stage's `f64` output, each
//!   designed for that stage's ratio (explicit taps apply to every stage).
//! * Level 0 of `fir`, where all the input rate is, runs in `f32` (`polyphase`): taps and
//!   samples rounded to `f32`, the `T` products summed in SIMD lanes in no fixed order. Its
//!   output differs from the `f64` sum above by at most `(T + 3)·2⁻²⁴·Σ|h|·max|x|` (the
//!   rounding of a `T`-term sum in any order plus rounding taps and inputs; `Σ|h|` is 1.5 to
//!   1.7 for the default taps), and a later level multiplies that by its own `Σ|h|`. For
//!   `fir:10` on 16-bit input at full scale that bound is 0.67 of an input step (6.6 steps
//!   for `fir:100`, 4,021 taps); actual errors, of random sign, grow with `√T` and are far
//!   smaller. The tests check against the `f64` reference with this bound. Different
//!   instruction sets may differ in the last bits.
//!
//! # Windows and time
//!
//! Output frame `m` of a level with total factor D covers input frames `[m·D, (m+1)·D)`; `every`
//! keeps input frame `m·D`. [`Decimator::time_offset`] gives the input-frame index (relative to
//! `m·D`) whose instant the output frame stands for: the first input for `every`, the window
//! centre `(D−1)/2` for `mean`/`minmax`, and the filter centre for `fir`.
//!
//! # Files
//!
//! This file holds the [`Decimator`] itself: building the cascade from a spec, taking whole
//! datagrams or stream bytes, and the per-sample-type fast paths of level 0. `value` is the
//! stored value types and level shapes, `fir` the low-pass design, `stage` one cascade level's
//! windowing state, `polyphase` the `f32` FIR of level 0, `simd` the kernels (SSE2/AVX2 chosen
//! at run time on x86-64, NEON on aarch64, scalar elsewhere), `float_paths` the decimator's
//! side of the `f32` kernels, and `tests`/`simd_tests` the
//! reference implementations the decimator is checked against.

mod fir;
mod float_paths;
mod polyphase;
#[allow(unsafe_code)]
pub mod simd;
mod stage;
mod value;

#[cfg(test)]
mod simd_tests;
#[cfg(test)]
mod tests;

pub use fir::{default_fir_taps, fir_design};
pub use value::{LevelShape, ValueType};

use crate::config::sample::{DecimateMode, DecimateSpec, SampleConfig, SampleType};
use simd::Isa;
use stage::Stage;

/// Whole windows handed to a SIMD kernel at once (bounds the kernel's output buffer).
const WINDOW_BATCH: usize = 256;

/// Largest level-0 window (bytes) whose partial frames wait raw for the window kernels;
/// longer `mean` windows of `i16` add up frame by frame.
const MAX_PENDING: usize = 64 * 1024;

/// Counters a decimator keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecimatorCounters {
    /// Whole input frames consumed.
    pub frames_in: u64,
    /// Datagrams shorter than `header_bytes` or whose payload is not whole frames.
    pub malformed_datagrams: u64,
    /// Output frames produced, per level.
    pub frames_out: Vec<u64>,
}

/// The decimator of one channel: all cascade levels, with carry-over state.
#[derive(Clone, Debug)]
pub struct Decimator {
    sample: SampleType,
    width: usize,
    frame_bytes: usize,
    header_bytes: usize,
    mode: DecimateMode,
    carry: Vec<u8>,
    stages: Vec<Stage>,
    shapes: Vec<LevelShape>,
    time_offsets: Vec<f64>,
    counters: DecimatorCounters,
    frame: Vec<f64>,
    scratch: Vec<f64>,
    isa: Isa,
    /// Kernel outputs of the `i16` `mean` window path: per-channel window sums.
    win_sums: Vec<i32>,
    /// `mean` of `i16` input: the raw frames of level 0's partial window (its `Stage` is not
    /// used then).
    mean_pending: Vec<u8>,
    /// `minmax` of `i16` input, which runs every level in `i16` (`minmax_i16`): per level,
    /// frames of the current window, and its (min, max) pairs (`i16::MAX`, `i16::MIN` while
    /// empty). The `f64` stages are not used then.
    mm_counts: Vec<usize>,
    mm_acc: Vec<i16>,
    /// The same for `minmax` of `f32` input (`minmax_f32`): (+inf, −inf) while empty.
    mmf_acc: Vec<f32>,
    /// Output frames of the `f32` FIR's last batch.
    fir_out: Vec<f64>,
}

impl Decimator {
    /// Builds the decimator of a validated channel config.
    pub fn new(cfg: &SampleConfig) -> Result<Decimator, String> {
        Decimator::with_spec(cfg.sample, cfg.interleave, cfg.header_bytes, &cfg.decimate)
    }

    pub fn with_spec(
        sample: SampleType,
        interleave: u32,
        header_bytes: u32,
        spec: &DecimateSpec,
    ) -> Result<Decimator, String> {
        if interleave == 0 || interleave > 4096 {
            return Err(format!("interleave {interleave} out of range 1..=4096"));
        }
        if spec.factors.is_empty() || spec.factors.len() > 8 {
            return Err("decimate needs 1 to 8 factors".into());
        }
        let channels = interleave as usize;
        let mut stages = Vec::new();
        let mut shapes = Vec::new();
        let mut time_offsets = Vec::new();
        let mut prev = 1u32;
        // Input-frame offset (relative to the window start) that the previous level's frame 0
        // stands for, for the cascaded FIR group delay.
        let mut prev_off = 0.0f64;
        for &f in &spec.factors {
            if f == 0 || f % prev != 0 || f < prev {
                return Err(format!(
                    "cascaded factors must increase and each divide the next ({prev} then {f})"
                ));
            }
            let ratio = f / prev;
            let stage = if spec.mode == DecimateMode::Fir && stages.is_empty() {
                Stage::new_fir_f32(ratio, channels, spec.fir_taps)
            } else {
                Stage::new(spec.mode, ratio, channels, spec.fir_taps)
            };
            let fir_len = match &stage {
                Stage::Fir { taps, .. } => Some(taps.len()),
                Stage::FirF32(f) => Some(f.taps()),
                _ => None,
            };
            let off = match (fir_len, spec.mode) {
                (_, DecimateMode::Every) => 0.0,
                (_, DecimateMode::Mean | DecimateMode::MinMax) => (f as f64 - 1.0) / 2.0,
                (Some(taps), _) => {
                    // y[m] = Σ h[k] x'[m·r + r − 1 − k]; x'[i] stands for input frame
                    // i·prev + prev_off. Centre tap k = (T−1)/2.
                    let t = taps as f64;
                    let centre = ratio as f64 - 1.0 - (t - 1.0) / 2.0;
                    centre * prev as f64 + prev_off
                }
                _ => 0.0,
            };
            prev_off = off;
            time_offsets.push(off);
            shapes.push(LevelShape {
                factor: f,
                value_type: match spec.mode {
                    DecimateMode::Every | DecimateMode::MinMax => ValueType::of_input(sample),
                    DecimateMode::Mean | DecimateMode::Fir => ValueType::F32,
                },
                channels: interleave,
                values_per_channel: if spec.mode == DecimateMode::MinMax {
                    2
                } else {
                    1
                },
            });
            stages.push(stage);
            prev = f;
        }
        let levels = stages.len();
        Ok(Decimator {
            sample,
            width: sample.width(),
            frame_bytes: sample.width() * channels,
            header_bytes: header_bytes as usize,
            mode: spec.mode,
            carry: Vec::new(),
            stages,
            shapes,
            time_offsets,
            counters: DecimatorCounters {
                frames_out: vec![0; levels],
                ..Default::default()
            },
            frame: Vec::with_capacity(2 * channels),
            scratch: Vec::with_capacity(2 * channels),
            isa: Isa::detect(),
            win_sums: Vec::new(),
            mean_pending: Vec::new(),
            mm_counts: vec![0; levels],
            mm_acc: [i16::MAX, i16::MIN].repeat(levels * channels),
            mmf_acc: [f32::INFINITY, f32::NEG_INFINITY].repeat(levels * channels),
            fir_out: Vec::new(),
        })
    }

    /// The instruction set the kernels run on (detected at construction).
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Runs the kernels on `isa` instead (an [`Isa`] exists only for sets this CPU has): for
    /// checking each SIMD path against the scalar one.
    pub fn set_isa(&mut self, isa: Isa) {
        self.isa = isa;
    }

    /// Output shape of each level.
    pub fn levels(&self) -> &[LevelShape] {
        &self.shapes
    }

    /// For level `l`, the input-frame offset from `m·factor` that output frame `m` stands for
    /// (window centre, filter centre, or 0 for `every`). Negative for a FIR filling from silence.
    pub fn time_offset(&self, level: usize) -> f64 {
        self.time_offsets[level]
    }

    pub fn counters(&self) -> &DecimatorCounters {
        &self.counters
    }

    /// Input frame size in bytes.
    pub fn input_frame_bytes(&self) -> usize {
        self.frame_bytes
    }

    /// Feeds one whole datagram (including its `header_bytes`). Appends encoded output frames of
    /// level `l` to `out[l]` (`out.len()` must equal the number of levels). A datagram shorter
    /// than the header or with a partial trailing frame is counted malformed; its whole frames
    /// are still used and the tail is ignored.
    pub fn feed_datagram(&mut self, datagram: &[u8], out: &mut [Vec<u8>]) {
        if datagram.len() < self.header_bytes {
            self.counters.malformed_datagrams += 1;
            return;
        }
        let payload = &datagram[self.header_bytes..];
        let whole = payload.len() - payload.len() % self.frame_bytes;
        if whole != payload.len() {
            self.counters.malformed_datagrams += 1;
        }
        self.feed_frames(&payload[..whole], out);
    }

    /// Feeds the next bytes of a stream; a partial trailing frame is kept for the next call.
    pub fn feed_stream(&mut self, mut bytes: &[u8], out: &mut [Vec<u8>]) {
        if !self.carry.is_empty() {
            let need = self.frame_bytes - self.carry.len();
            let take = need.min(bytes.len());
            self.carry.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.carry.len() < self.frame_bytes {
                return;
            }
            let carry = std::mem::take(&mut self.carry);
            self.feed_frames(&carry, out);
            self.carry = carry;
            self.carry.clear();
        }
        let whole = bytes.len() - bytes.len() % self.frame_bytes;
        self.feed_frames(&bytes[..whole], out);
        self.carry.extend_from_slice(&bytes[whole..]);
    }

    /// Bytes of a partial frame held from the last `feed_stream`.
    pub fn carried_bytes(&self) -> usize {
        self.carry.len()
    }

    fn feed_frames(&mut self, bytes: &[u8], out: &mut [Vec<u8>]) {
        debug_assert_eq!(bytes.len() % self.frame_bytes, 0);
        debug_assert_eq!(out.len(), self.stages.len());
        if self.mode == DecimateMode::Every {
            return self.feed_every(bytes, out);
        }
        if matches!(self.mode, DecimateMode::Mean | DecimateMode::MinMax) {
            // Level 0 straight from the raw bytes, one loop per sample type (the decode
            // inlined, no per-frame vector): the same arithmetic in the same order as
            // `Stage::push`, so the results are identical.
            use SampleType as S;
            if self.sample == S::I16Le && self.mode == DecimateMode::MinMax {
                return self.minmax_i16(bytes, out);
            }
            if self.sample == S::F32Le && self.mode == DecimateMode::MinMax {
                return self.minmax_f32(bytes, out);
            }
            if self.sample == S::F32Le && self.stages.len() == 1 {
                return self.mean_f32(bytes, out);
            }
            let ratio = self.stages[0].ratio() as usize;
            if self.sample == S::I16Le
                && ratio <= simd::MAX_SUM_RATIO
                && ratio * self.frame_bytes <= MAX_PENDING
            {
                return self.level0_i16_windows(bytes, out);
            }
            return match self.sample {
                S::U8 => self.level0(bytes, out, |b: [u8; 1]| b[0] as f64),
                S::I8 => self.level0(bytes, out, |b: [u8; 1]| b[0] as i8 as f64),
                S::U16Le => self.level0(bytes, out, |b| u16::from_le_bytes(b) as f64),
                S::I16Le => self.level0(bytes, out, |b| i16::from_le_bytes(b) as f64),
                S::I16Be => self.level0(bytes, out, |b| i16::from_be_bytes(b) as f64),
                S::U32Le => self.level0(bytes, out, |b| u32::from_le_bytes(b) as f64),
                S::I32Le => self.level0(bytes, out, |b| i32::from_le_bytes(b) as f64),
                S::I32Be => self.level0(bytes, out, |b| i32::from_be_bytes(b) as f64),
                S::F32Le => self.level0(bytes, out, |b| f32::from_le_bytes(b) as f64),
                S::F32Be => self.level0(bytes, out, |b| f32::from_be_bytes(b) as f64),
                S::F64Le => self.level0(bytes, out, f64::from_le_bytes),
            };
        }
        if self.mode == DecimateMode::Fir {
            use SampleType as S;
            return match self.sample {
                S::U8 => self.fir0(bytes, out, |b: [u8; 1]| f32::from(b[0])),
                S::I8 => self.fir0(bytes, out, |b: [u8; 1]| f32::from(b[0] as i8)),
                S::U16Le => self.fir0(bytes, out, |b| f32::from(u16::from_le_bytes(b))),
                S::I16Le => self.fir0(bytes, out, |b| f32::from(i16::from_le_bytes(b))),
                S::I16Be => self.fir0(bytes, out, |b| f32::from(i16::from_be_bytes(b))),
                S::U32Le => self.fir0(bytes, out, |b| u32::from_le_bytes(b) as f32),
                S::I32Le => self.fir0(bytes, out, |b| i32::from_le_bytes(b) as f32),
                S::I32Be => self.fir0(bytes, out, |b| i32::from_be_bytes(b) as f32),
                S::F32Le => self.fir0(bytes, out, f32::from_le_bytes),
                S::F32Be => self.fir0(bytes, out, f32::from_be_bytes),
                S::F64Le => self.fir0(bytes, out, |b| f64::from_le_bytes(b) as f32),
            };
        }
        let minmax = self.mode == DecimateMode::MinMax;
        for raw in bytes.chunks_exact(self.frame_bytes) {
            self.counters.frames_in += 1;
            let mut input = std::mem::take(&mut self.frame);
            input.clear();
            for s in raw.chunks_exact(self.width) {
                let v = self.sample.decode(s);
                input.push(v);
                if minmax {
                    input.push(v);
                }
            }
            for (level, stage) in self.stages.iter_mut().enumerate() {
                if !stage.push(&input, &mut self.scratch) {
                    break;
                }
                let vt = self.shapes[level].value_type;
                for v in &self.scratch {
                    vt.encode(*v, &mut out[level]);
                }
                self.counters.frames_out[level] += 1;
                // This level's output is the next level's input.
                std::mem::swap(&mut input, &mut self.scratch);
            }
            self.frame = input;
        }
    }

    /// `mean` and `minmax` level 0 on whole frames of `W`-byte samples decoded by `dec`; each
    /// output frame then cascades through the higher levels.
    fn level0<const W: usize>(
        &mut self,
        bytes: &[u8],
        out: &mut [Vec<u8>],
        dec: impl Fn([u8; W]) -> f64,
    ) {
        debug_assert_eq!(self.width, W);
        let dec = &dec;
        for raw in bytes.chunks_exact(self.frame_bytes) {
            self.counters.frames_in += 1;
            let emitted = match &mut self.stages[0] {
                Stage::MinMax { ratio, count, acc } => {
                    if *count == 0 {
                        for (a, v) in acc.chunks_exact_mut(2).zip(samples::<W>(raw, dec)) {
                            a[0] = v;
                            a[1] = v;
                        }
                    } else {
                        for (a, v) in acc.chunks_exact_mut(2).zip(samples::<W>(raw, dec)) {
                            a[0] = a[0].min(v);
                            a[1] = a[1].max(v);
                        }
                    }
                    *count += 1;
                    if *count < *ratio {
                        false
                    } else {
                        *count = 0;
                        self.scratch.clear();
                        self.scratch.extend_from_slice(acc);
                        true
                    }
                }
                Stage::Mean { ratio, count, sums } => {
                    for (s, v) in sums.iter_mut().zip(samples::<W>(raw, dec)) {
                        *s += v;
                    }
                    *count += 1;
                    if *count < *ratio {
                        false
                    } else {
                        *count = 0;
                        self.scratch.clear();
                        let r = *ratio as f64;
                        for s in sums.iter_mut() {
                            self.scratch.push(*s / r);
                            *s = 0.0;
                        }
                        true
                    }
                }
                _ => unreachable!("level0 serves mean and minmax only"),
            };
            if emitted {
                self.cascade(out);
            }
        }
    }
}

impl Decimator {
    /// `mean` level 0 of little-endian `i16` samples, whole windows only, through the SIMD
    /// kernels: the frames of a partial window wait as raw bytes in `mean_pending` until a
    /// later call completes it, so no window is summed frame by frame. Exact (integer sums),
    /// so the output is the same bytes as the frame-by-frame path.
    fn level0_i16_windows(&mut self, mut bytes: &[u8], out: &mut [Vec<u8>]) {
        let wb = self.stages[0].ratio() as usize * self.frame_bytes;
        self.counters.frames_in += (bytes.len() / self.frame_bytes) as u64;
        if !self.mean_pending.is_empty() {
            let take = (wb - self.mean_pending.len()).min(bytes.len());
            self.mean_pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.mean_pending.len() < wb {
                return;
            }
            let window = std::mem::take(&mut self.mean_pending);
            self.mean_i16_windows(&window, out);
            self.mean_pending = window;
            self.mean_pending.clear();
        }
        let whole = bytes.len() / wb * wb;
        self.mean_i16_windows(&bytes[..whole], out);
        self.mean_pending.extend_from_slice(&bytes[whole..]);
    }

    /// Level 0's output frames of the whole `mean` windows of `i16` samples in `bytes`:
    /// straight to `f32` bytes when there is one level, else each cascades.
    fn mean_i16_windows(&mut self, bytes: &[u8], out: &mut [Vec<u8>]) {
        let fb = self.frame_bytes;
        let channels = fb / 2;
        let ratio = self.stages[0].ratio() as usize;
        let wb = ratio * fb;
        let n = bytes.len() / wb;
        if n == 0 {
            return;
        }
        if self.stages.len() == 1 {
            let o = &mut out[0];
            let at = o.len();
            o.resize(at + n * 4 * channels, 0);
            simd::mean_windows_i16(self.isa, bytes, channels, ratio, &mut o[at..]);
            self.counters.frames_out[0] += n as u64;
            return;
        }
        for batch in bytes.chunks(wb * WINDOW_BATCH) {
            let n = batch.len() / wb;
            let mut sums = std::mem::take(&mut self.win_sums);
            sums.resize(n * channels, 0);
            simd::sum_windows_i16(self.isa, batch, channels, ratio, &mut sums);
            let r = ratio as f64;
            for w in sums.chunks_exact(channels) {
                self.scratch.clear();
                self.scratch.extend(w.iter().map(|s| f64::from(*s) / r));
                self.cascade(out);
            }
            self.win_sums = sums;
        }
    }
}

impl Decimator {
    /// `minmax` of little-endian `i16` samples, every level in `i16` (min and max are exact, so
    /// the output is the same bytes as the `f64` path): level 0's partial windows at either end
    /// fold frame by frame and its whole windows go to the window kernel; each higher level
    /// folds the pairs the level below appended in this call. Writes straight into `out`, with
    /// no per-window work outside the kernels.
    fn minmax_i16(&mut self, bytes: &[u8], out: &mut [Vec<u8>]) {
        let (isa, fb) = (self.isa, self.frame_bytes);
        let (ch, frames) = (fb / 2, bytes.len() / fb);
        let pb = 4 * ch;
        self.counters.frames_in += frames as u64;
        let ratio = self.stages[0].ratio() as usize;
        let mut count = self.mm_counts[0];
        let acc = &mut self.mm_acc[..2 * ch];
        let head = if count == 0 {
            0
        } else {
            (ratio - count).min(frames)
        };
        let (head, rest) = bytes.split_at(head * fb);
        let (body, tail) = rest.split_at(rest.len() / (ratio * fb) * (ratio * fb));
        let n_head = simd::fold_windows(head.len() / fb, ratio, count);
        let n = n_head + body.len() / (ratio * fb);
        let mut start = out[0].len();
        out[0].resize(start + n * pb, 0);
        let (o_head, o_body) = out[0][start..].split_at_mut(n_head * pb);
        simd::minmax_fold_i16(isa, head, false, ch, ratio, &mut count, acc, o_head);
        simd::minmax_windows_i16(isa, body, ch, ratio, o_body);
        // Fewer than `ratio` frames, from an empty window: completes none.
        simd::minmax_fold_i16(isa, tail, false, ch, ratio, &mut count, acc, &mut []);
        self.mm_counts[0] = count;
        self.counters.frames_out[0] += n as u64;
        for level in 1..self.stages.len() {
            let (lower, upper) = out.split_at_mut(level);
            let input = &lower[level - 1][start..];
            let o = &mut upper[0];
            start = o.len();
            let ratio = self.stages[level].ratio() as usize;
            let mut count = self.mm_counts[level];
            let n = simd::fold_windows(input.len() / pb, ratio, count);
            o.resize(start + n * pb, 0);
            let acc = &mut self.mm_acc[level * 2 * ch..(level + 1) * 2 * ch];
            simd::minmax_fold_i16(
                isa,
                input,
                true,
                ch,
                ratio,
                &mut count,
                acc,
                &mut o[start..],
            );
            self.mm_counts[level] = count;
            self.counters.frames_out[level] += n as u64;
        }
    }

    /// `fir` level 0 (`f32`, polyphase) on whole frames of `W`-byte samples decoded by `dec`;
    /// each output frame then cascades through the higher levels.
    fn fir0<const W: usize>(
        &mut self,
        bytes: &[u8],
        out: &mut [Vec<u8>],
        dec: impl Fn([u8; W]) -> f32,
    ) {
        let Stage::FirF32(fir) = &mut self.stages[0] else {
            unreachable!("fir level 0 is FirF32")
        };
        self.counters.frames_in += (bytes.len() / self.frame_bytes) as u64;
        let mut outs = std::mem::take(&mut self.fir_out);
        fir.feed(bytes, self.isa, dec, &mut outs);
        let channels = self.frame_bytes / W;
        if self.stages.len() == 1 {
            // Encoded as `cascade` would (`f32`), without its per-frame work.
            let o = &mut out[0];
            o.reserve(outs.len() * 4);
            for v in &outs {
                o.extend_from_slice(&(*v as f32).to_le_bytes());
            }
            self.counters.frames_out[0] += (outs.len() / channels) as u64;
        } else {
            for f in outs.chunks_exact(channels) {
                self.scratch.clear();
                self.scratch.extend_from_slice(f);
                self.cascade(out);
            }
        }
        self.fir_out = outs;
    }
}

/// The samples of one raw frame, decoded.
#[inline(always)]
fn samples<'a, const W: usize>(
    raw: &'a [u8],
    dec: &'a impl Fn([u8; W]) -> f64,
) -> impl Iterator<Item = f64> + 'a {
    raw.chunks_exact(W)
        .map(move |s| dec(s.try_into().expect("W-byte chunk")))
}

impl Decimator {
    /// Encodes level 0's new output frame (in `scratch`) and feeds it up the cascade.
    fn cascade(&mut self, out: &mut [Vec<u8>]) {
        self.cascade_at(0, out);
    }

    /// Encodes level `first`'s new output frame (in `scratch`) and feeds it up the cascade.
    fn cascade_at(&mut self, first: usize, out: &mut [Vec<u8>]) {
        let mut input = std::mem::take(&mut self.frame);
        for (level, o) in out
            .iter_mut()
            .enumerate()
            .take(self.stages.len())
            .skip(first)
        {
            if level > first && !self.stages[level].push(&input, &mut self.scratch) {
                break;
            }
            let vt = self.shapes[level].value_type;
            for v in &self.scratch {
                vt.encode(*v, o);
            }
            self.counters.frames_out[level] += 1;
            // This level's output is the next level's input.
            std::mem::swap(&mut input, &mut self.scratch);
        }
        self.frame = input;
    }

    /// `every`: kept frames are copied as raw samples (byte-swapped to little-endian where the
    /// input is big-endian), so values are reproduced bit for bit, NaN payloads included.
    fn feed_every(&mut self, bytes: &[u8], out: &mut [Vec<u8>]) {
        let swap = matches!(
            self.sample,
            SampleType::I16Be | SampleType::I32Be | SampleType::F32Be
        );
        for raw in bytes.chunks_exact(self.frame_bytes) {
            self.counters.frames_in += 1;
            for (level, stage) in self.stages.iter_mut().enumerate() {
                let Stage::Every { ratio, count } = stage else {
                    unreachable!("every mode has only every stages")
                };
                let keep = *count == 0;
                *count += 1;
                if *count == *ratio {
                    *count = 0;
                }
                if !keep {
                    break;
                }
                let o = &mut out[level];
                if swap {
                    for s in raw.chunks_exact(self.width) {
                        o.extend(s.iter().rev());
                    }
                } else {
                    o.extend_from_slice(raw);
                }
                self.counters.frames_out[level] += 1;
            }
        }
    }
}
