//! Stateful decimation of a channel's samples: `every:N`, `mean:N`, `minmax:N`, `fir:N[:taps]`,
//! each sub-channel on its own, cascaded for multi-level specs such as `minmax:10,100,1000`.
//!
//! Owns: turning the raw bytes of a channel (whole datagrams, or the next bytes of a stream) into
//! encoded output frames, one byte vector per cascade level, in the little-endian value type the
//! shared-memory region stores ([`ValueType`]). Carries partial frames (streams) and partial
//! decimation windows (both) across calls, so packetisation never changes the result.
//!
//! Must never: do I/O, read a clock, allocate per sample, or use `unsafe`. It is the pure engine
//! behind [`crate::shm::Publisher`] and is tested against straightforward references below.
//!
//! # Numbers
//!
//! * Samples are decoded to `f64` (exact for every input type), decimated in `f64`, and encoded
//!   once per output value. `every` and `minmax` therefore reproduce input values bit for bit
//!   (big-endian inputs are stored little-endian). `minmax` uses IEEE `min`/`max` (a NaN sample
//!   is ignored unless the whole window is NaN).
//! * `mean:N`: the window sum is accumulated in `f64` in arrival order, divided by N, and rounded
//!   to the nearest `f32` (ties to even). Cascaded levels average the previous level's `f64`
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
//!
//! # Windows and time
//!
//! Output frame `m` of a level with total factor D covers input frames `[m·D, (m+1)·D)`; `every`
//! keeps input frame `m·D`. [`Decimator::time_offset`] gives the input-frame index (relative to
//! `m·D`) whose instant the output frame stands for: the first input for `every`, the window
//! centre `(D−1)/2` for `mean`/`minmax`, and the filter centre for `fir`.

use crate::config::sample::{DecimateMode, DecimateSpec, SampleConfig, SampleType};

/// A value type stored in a shared-memory region (always little-endian there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    F64,
}

impl ValueType {
    pub const ALL: [ValueType; 8] = [
        ValueType::U8,
        ValueType::I8,
        ValueType::U16,
        ValueType::I16,
        ValueType::U32,
        ValueType::I32,
        ValueType::F32,
        ValueType::F64,
    ];

    /// The code stored in the region header (see ringrelay-shm(7)).
    pub fn code(self) -> u16 {
        match self {
            ValueType::U8 => 1,
            ValueType::I8 => 2,
            ValueType::U16 => 3,
            ValueType::I16 => 4,
            ValueType::U32 => 5,
            ValueType::I32 => 6,
            ValueType::F32 => 7,
            ValueType::F64 => 8,
        }
    }

    pub fn from_code(c: u16) -> Option<ValueType> {
        ValueType::ALL.iter().copied().find(|t| t.code() == c)
    }

    pub fn width(self) -> usize {
        match self {
            ValueType::U8 | ValueType::I8 => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::F64 => "f64",
        }
    }

    /// The little-endian type that holds an input sample type exactly.
    pub fn of_input(s: SampleType) -> ValueType {
        match s {
            SampleType::U8 => ValueType::U8,
            SampleType::I8 => ValueType::I8,
            SampleType::U16Le => ValueType::U16,
            SampleType::I16Le | SampleType::I16Be => ValueType::I16,
            SampleType::U32Le => ValueType::U32,
            SampleType::I32Le | SampleType::I32Be => ValueType::I32,
            SampleType::F32Le | SampleType::F32Be => ValueType::F32,
            SampleType::F64Le => ValueType::F64,
        }
    }

    /// Appends `v` as this type, little-endian. Integer types saturate (values from `every` and
    /// `minmax` are always in range); floats round to nearest.
    pub fn encode(self, v: f64, out: &mut Vec<u8>) {
        match self {
            ValueType::U8 => out.push(v as u8),
            ValueType::I8 => out.push(v as i8 as u8),
            ValueType::U16 => out.extend_from_slice(&(v as u16).to_le_bytes()),
            ValueType::I16 => out.extend_from_slice(&(v as i16).to_le_bytes()),
            ValueType::U32 => out.extend_from_slice(&(v as u32).to_le_bytes()),
            ValueType::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
            ValueType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            ValueType::F64 => out.extend_from_slice(&v.to_le_bytes()),
        }
    }

    /// Decodes one little-endian value from exactly `width()` bytes.
    pub fn decode(self, b: &[u8]) -> f64 {
        match self {
            ValueType::U8 => b[0] as f64,
            ValueType::I8 => b[0] as i8 as f64,
            ValueType::U16 => u16::from_le_bytes([b[0], b[1]]) as f64,
            ValueType::I16 => i16::from_le_bytes([b[0], b[1]]) as f64,
            ValueType::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            ValueType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            ValueType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            ValueType::F64 => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        }
    }
}

/// The shape of one level's output frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelShape {
    /// Total factor relative to the input.
    pub factor: u32,
    pub value_type: ValueType,
    /// Sub-channels per frame.
    pub channels: u32,
    /// 1, or 2 for minmax (min then max for each sub-channel).
    pub values_per_channel: u32,
}

impl LevelShape {
    pub fn frame_bytes(&self) -> usize {
        self.value_type.width() * self.channels as usize * self.values_per_channel as usize
    }
}

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

/// Default FIR length for a decimation ratio.
pub fn default_fir_taps(ratio: u32) -> u32 {
    let t = (20u64 * ratio as u64 + 1).min(4095) as u32;
    t | 1
}

/// Designs the low-pass for decimation by `ratio`: Blackman-windowed sinc, cutoff `0.5/ratio`
/// cycles per input sample, normalised to unit DC gain.
pub fn fir_design(ratio: u32, taps: u32) -> Vec<f64> {
    let n = taps.max(1) as usize;
    let fc = 0.5 / ratio.max(1) as f64;
    let mid = (n as f64 - 1.0) / 2.0;
    let mut h: Vec<f64> = (0..n)
        .map(|i| {
            let t = i as f64 - mid;
            let sinc = if t == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * t).sin() / (std::f64::consts::PI * t)
            };
            let w = if n == 1 {
                1.0
            } else {
                let x = 2.0 * std::f64::consts::PI * i as f64 / (n as f64 - 1.0);
                0.42 - 0.5 * x.cos() + 0.08 * (2.0 * x).cos()
            };
            sinc * w
        })
        .collect();
    let sum: f64 = h.iter().sum();
    if sum != 0.0 {
        h.iter_mut().for_each(|v| *v /= sum);
    }
    h
}

/// One cascade stage: consumes frames of `channels × vpc_in` f64 values, produces one output
/// frame every `ratio` input frames.
#[derive(Clone, Debug)]
enum Stage {
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
}

impl Stage {
    fn new(mode: DecimateMode, ratio: u32, channels: usize, taps: Option<u32>) -> Stage {
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

    /// Feeds one frame; returns true when `out` holds a new output frame.
    fn push(&mut self, frame: &[f64], out: &mut Vec<f64>) -> bool {
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
        }
    }
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
            let stage = Stage::new(spec.mode, ratio, channels, spec.fir_taps);
            let off = match (&stage, spec.mode) {
                (_, DecimateMode::Every) => 0.0,
                (_, DecimateMode::Mean | DecimateMode::MinMax) => (f as f64 - 1.0) / 2.0,
                (Stage::Fir { taps, .. }, _) => {
                    // y[m] = Σ h[k] x'[m·r + r − 1 − k]; x'[i] stands for input frame
                    // i·prev + prev_off. Centre tap k = (T−1)/2.
                    let t = taps.len() as f64;
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
        })
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
        let mut input = std::mem::take(&mut self.frame);
        for (level, o) in out.iter_mut().enumerate().take(self.stages.len()) {
            if level > 0 && !self.stages[level].push(&input, &mut self.scratch) {
                break;
            }
            let vt = self.shapes[level].value_type;
            for v in &self.scratch {
                vt.encode(*v, o);
            }
            self.counters.frames_out[level] += 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(mode: DecimateMode, factors: &[u32], taps: Option<u32>) -> DecimateSpec {
        DecimateSpec {
            mode,
            factors: factors.to_vec(),
            fir_taps: taps,
        }
    }

    /// Straightforward reference: decode everything, then compute each level directly from the
    /// input with its total factor (FIR: cascade of direct-form convolutions).
    fn reference(
        sample: SampleType,
        ch: usize,
        spec: &DecimateSpec,
        input: &[u8],
    ) -> Vec<Vec<Vec<f64>>> {
        let w = sample.width();
        let frames: Vec<Vec<f64>> = input
            .chunks_exact(w * ch)
            .map(|f| f.chunks_exact(w).map(|s| sample.decode(s)).collect())
            .collect();
        let mut levels = Vec::new();
        let mut fir_in = frames.clone();
        let mut prev = 1u32;
        for &d in &spec.factors {
            let d_us = d as usize;
            let out: Vec<Vec<f64>> = match spec.mode {
                DecimateMode::Every => frames.iter().step_by(d_us).cloned().collect(),
                DecimateMode::Mean => frames
                    .chunks_exact(d_us)
                    .map(|win| {
                        (0..ch)
                            .map(|c| win.iter().map(|f| f[c]).sum::<f64>() / d as f64)
                            .collect()
                    })
                    .collect(),
                DecimateMode::MinMax => frames
                    .chunks_exact(d_us)
                    .map(|win| {
                        (0..ch)
                            .flat_map(|c| {
                                let mn = win.iter().map(|f| f[c]).fold(f64::NAN, f64::min);
                                let mx = win.iter().map(|f| f[c]).fold(f64::NAN, f64::max);
                                [mn, mx]
                            })
                            .collect()
                    })
                    .collect(),
                DecimateMode::Fir => {
                    let r = (d / prev) as usize;
                    let t = spec.fir_taps.unwrap_or_else(|| default_fir_taps(r as u32));
                    let h = fir_design(r as u32, t);
                    let n_out = fir_in.len() / r;
                    let o: Vec<Vec<f64>> = (0..n_out)
                        .map(|m| {
                            let n = m * r + r - 1;
                            (0..ch)
                                .map(|c| {
                                    let mut y = 0.0;
                                    for (k, hk) in h.iter().enumerate() {
                                        if n >= k {
                                            y += hk * fir_in[n - k][c];
                                        } else {
                                            y += hk * 0.0;
                                        }
                                    }
                                    y
                                })
                                .collect()
                        })
                        .collect();
                    fir_in = o.clone();
                    o
                }
            };
            prev = d;
            levels.push(out);
        }
        levels
    }

    fn decode_out(shape: &LevelShape, bytes: &[u8]) -> Vec<Vec<f64>> {
        let w = shape.value_type.width();
        bytes
            .chunks_exact(shape.frame_bytes())
            .map(|f| {
                f.chunks_exact(w)
                    .map(|s| shape.value_type.decode(s))
                    .collect()
            })
            .collect()
    }

    fn check_close(mode: DecimateMode, got: &[Vec<f64>], want: &[Vec<f64>]) {
        assert_eq!(got.len(), want.len(), "frame count");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            for (a, b) in g.iter().zip(w) {
                let ok = match mode {
                    DecimateMode::Every | DecimateMode::MinMax => a.to_bits() == b.to_bits(),
                    _ => {
                        let bf = *b as f32 as f64;
                        (a - bf).abs() <= 1e-5 * bf.abs().max(1.0)
                    }
                };
                assert!(ok, "frame {i}: got {a}, want {b}");
            }
        }
    }

    fn run_split(d: &mut Decimator, input: &[u8], cuts: &[usize], out: &mut [Vec<u8>]) {
        let mut start = 0;
        for &c in cuts {
            let c = c.min(input.len()).max(start);
            d.feed_stream(&input[start..c], out);
            start = c;
        }
        d.feed_stream(&input[start..], out);
    }

    fn arb_mode() -> impl Strategy<Value = DecimateMode> {
        prop_oneof![
            Just(DecimateMode::Every),
            Just(DecimateMode::Mean),
            Just(DecimateMode::MinMax),
            Just(DecimateMode::Fir),
        ]
    }

    fn arb_sample() -> impl Strategy<Value = SampleType> {
        proptest::sample::select(SampleType::ALL.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Every mode, every sample type, 1-3 cascade levels, random stream packetisation:
        /// equals the reference computed on the whole input at once.
        #[test]
        fn stream_matches_reference(
            mode in arb_mode(),
            sample in arb_sample(),
            ch in 1usize..4,
            f0 in 1u32..6,
            mults in proptest::collection::vec(2u32..4, 0..3),
            taps in proptest::option::of(3u32..40),
            bytes in proptest::collection::vec(any::<u8>(), 0..1500),
            cuts in proptest::collection::vec(0usize..1500, 0..12),
        ) {
            let mut factors = vec![f0];
            for m in mults { let l = *factors.last().unwrap(); factors.push(l * m); }
            let taps = if mode == DecimateMode::Fir { taps } else { None };
            let sp = spec(mode, &factors, taps);
            // Floats from random bytes may be NaN/inf; keep them finite for mean/fir so the
            // comparison is meaningful (minmax/every compare bit patterns and take any value).
            let mut bytes = bytes;
            if matches!(sample, SampleType::F32Le | SampleType::F32Be | SampleType::F64Le)
                && matches!(mode, DecimateMode::Mean | DecimateMode::Fir | DecimateMode::MinMax)
            {
                for b in bytes.iter_mut() { *b &= 0x3f; }
            }
            let mut d = Decimator::with_spec(sample, ch as u32, 0, &sp).unwrap();
            let mut out = vec![Vec::new(); factors.len()];
            let mut cuts = cuts; cuts.sort();
            run_split(&mut d, &bytes, &cuts, &mut out);
            let want = reference(sample, ch, &sp, &bytes);
            for (l, shape) in d.levels().to_vec().iter().enumerate() {
                check_close(mode, &decode_out(shape, &out[l]), &want[l]);
            }
            prop_assert_eq!(d.counters().frames_in as usize, bytes.len() / (sample.width() * ch));
            prop_assert_eq!(d.carried_bytes(), bytes.len() % (sample.width() * ch));
        }

        /// Datagrams: header skipped, partial tails counted malformed and ignored, windows
        /// carried across datagrams.
        #[test]
        fn datagrams_match_reference(
            mode in arb_mode(),
            ch in 1usize..4,
            f0 in 1u32..7,
            hdr in 0usize..5,
            grams in proptest::collection::vec(
                (proptest::collection::vec(any::<i16>(), 0..40), 0usize..2), 0..20),
        ) {
            let sample = SampleType::I16Le;
            let sp = spec(mode, &[f0, f0 * 3], None);
            let mut d = Decimator::with_spec(sample, ch as u32, hdr as u32, &sp).unwrap();
            let mut out = vec![Vec::new(); 2];
            let mut whole_input = Vec::new();
            let mut malformed = 0;
            for (vals, extra) in &grams {
                let mut g = vec![0xEE; hdr];
                let mut payload: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
                let fb = 2 * ch;
                let whole = payload.len() - payload.len() % fb;
                whole_input.extend_from_slice(&payload[..whole]);
                payload.truncate(whole);
                payload.extend(std::iter::repeat_n(0x55, *extra));
                if payload.len() % fb != 0 { malformed += 1; }
                g.extend_from_slice(&payload);
                d.feed_datagram(&g, &mut out);
            }
            d.feed_datagram(&vec![0; hdr.saturating_sub(1)], &mut out);
            if hdr > 0 { malformed += 1; }
            prop_assert_eq!(d.counters().malformed_datagrams, malformed);
            let want = reference(sample, ch, &sp, &whole_input);
            for (l, shape) in d.levels().to_vec().iter().enumerate() {
                check_close(mode, &decode_out(shape, &out[l]), &want[l]);
            }
        }
    }

    #[test]
    fn fir_stop_band_attenuation() {
        for &(r, taps) in &[(2u32, None), (10, None), (4, Some(63u32)), (100, None)] {
            let t = taps.unwrap_or_else(|| default_fir_taps(r));
            let h = fir_design(r, t);
            let edge = 0.5 / r as f64 + 3.0 / t as f64;
            let mut worst = f64::NEG_INFINITY;
            let steps = 4000;
            for i in 0..=steps {
                let f = edge + (0.5 - edge) * i as f64 / steps as f64;
                let (mut re, mut im) = (0.0, 0.0);
                for (k, hk) in h.iter().enumerate() {
                    let ph = 2.0 * std::f64::consts::PI * f * k as f64;
                    re += hk * ph.cos();
                    im -= hk * ph.sin();
                }
                worst = worst.max(20.0 * (re * re + im * im).sqrt().log10());
            }
            assert!(
                worst < -74.0,
                "ratio {r} taps {t}: stop band only {worst:.1} dB"
            );
            // Pass band: DC exact, and flat within 0.1 dB up to 0.3/r.
            let dc: f64 = h.iter().sum();
            assert!((dc - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn fir_rejects_alias_tone() {
        // A tone above the stop-band edge must vanish (amplitude from RMS); a tone well inside
        // the pass band must survive with unit gain.
        let r = 8u32;
        let sp = spec(DecimateMode::Fir, &[r], None);
        let run = |freq: f64| {
            let mut d = Decimator::with_spec(SampleType::F64Le, 1, 0, &sp).unwrap();
            let input: Vec<u8> = (0..20000)
                .flat_map(|n| {
                    (2.0 * std::f64::consts::PI * freq * n as f64)
                        .sin()
                        .to_le_bytes()
                })
                .collect();
            let mut out = vec![Vec::new()];
            d.feed_stream(&input, &mut out);
            let v = decode_out(&d.levels()[0], &out[0]);
            let tail = &v[400..];
            (2.0 * tail.iter().map(|f| f[0] * f[0]).sum::<f64>() / tail.len() as f64).sqrt()
        };
        assert!(run(0.9 / r as f64) < 3e-4, "alias tone leaked");
        let pass = run(0.1 / r as f64);
        assert!((pass - 1.0).abs() < 0.01, "pass band gain {pass}");
    }

    #[test]
    fn time_offsets() {
        let d = Decimator::with_spec(
            SampleType::I16Le,
            1,
            0,
            &spec(DecimateMode::Mean, &[10, 100], None),
        )
        .unwrap();
        assert_eq!(d.time_offset(0), 4.5);
        assert_eq!(d.time_offset(1), 49.5);
        let d = Decimator::with_spec(
            SampleType::I16Le,
            1,
            0,
            &spec(DecimateMode::Fir, &[4], Some(9)),
        )
        .unwrap();
        assert_eq!(d.time_offset(0), -1.0); // window ends at 3, centre tap 4 back
    }

    #[test]
    fn value_type_codes_round_trip() {
        for t in ValueType::ALL {
            assert_eq!(ValueType::from_code(t.code()), Some(t));
        }
        assert_eq!(ValueType::from_code(0), None);
        assert_eq!(ValueType::of_input(SampleType::I16Be), ValueType::I16);
    }

    #[test]
    fn big_endian_every_keeps_value() {
        let sp = spec(DecimateMode::Every, &[2], None);
        let mut d = Decimator::with_spec(SampleType::I16Be, 1, 0, &sp).unwrap();
        let mut out = vec![Vec::new()];
        d.feed_stream(&[0x12, 0x34, 0, 0, 0xff, 0xfe], &mut out);
        assert_eq!(out[0], vec![0x34, 0x12, 0xfe, 0xff]);
    }
}
