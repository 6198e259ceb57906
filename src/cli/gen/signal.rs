//! Signal synthesis for `ringrelay gen`: the signal vocabulary ([`Signal`]) and the pure
//! function from a signal, a sample format and a frame range to bytes ([`Synth`], [`synth`]).
//!
//! Owns: the value of each signal on each sub-channel at each frame (the table in the
//! [`gen`](super) documentation) and the noise generator. Must stay a pure function of its
//! inputs and the frame numbers, so any frame range can be recomputed on its own: tests compute
//! the bytes they expect with it. Turning a value into sample bytes is
//! [`encode`](super::encode)'s.

use super::encode::{encode, Value};
use crate::config::sample::SampleType;

/// The waveform rate used for synthesis when frames are sent as fast as possible.
pub const NOMINAL_RATE: f64 = 48000.0;

/// A test signal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// A sine wave of this frequency in Hz.
    Sine(f64),
    /// A square wave of this frequency in Hz.
    Square(f64),
    /// A sawtooth with a period of one second.
    Ramp,
    /// The frame number, wrapping in the sample type.
    Counter,
    /// Uniform noise from this seed.
    Noise(u64),
}

impl Signal {
    /// Parses `sine:HZ`, `square:HZ`, `ramp`, `counter` or `noise` (seeded by `seed`).
    pub fn parse(s: &str, seed: u64) -> Result<Signal, String> {
        let hz = |v: &str| -> Result<f64, String> {
            let f: f64 = v
                .parse()
                .map_err(|_| format!("signal '{s}': '{v}' is not a frequency in Hz"))?;
            if !f.is_finite() || f < 0.0 {
                return Err(format!("signal '{s}': frequency must be >= 0"));
            }
            Ok(f)
        };
        match s.split_once(':') {
            Some(("sine", v)) => Ok(Signal::Sine(hz(v)?)),
            Some(("square", v)) => Ok(Signal::Square(hz(v)?)),
            None if s == "sine" => Ok(Signal::Sine(440.0)),
            None if s == "square" => Ok(Signal::Square(440.0)),
            None if s == "ramp" => Ok(Signal::Ramp),
            None if s == "counter" => Ok(Signal::Counter),
            None if s == "noise" => Ok(Signal::Noise(seed)),
            _ => Err(format!(
                "unknown signal '{s}' (one of: sine:HZ square:HZ ramp counter noise)"
            )),
        }
    }
}

/// Everything that fixes the bytes of a signal: synthesis is a pure function of these and the
/// frame range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Synth {
    pub signal: Signal,
    pub format: SampleType,
    /// Interleaved sub-channels per frame (>= 1).
    pub interleave: u32,
    /// Fraction of full scale, clamped to 0..=1.
    pub amplitude: f64,
    /// Frames per second the waveform is computed at (> 0).
    pub rate: f64,
}

impl Synth {
    /// Bytes per frame.
    pub fn frame_bytes(&self) -> usize {
        self.format.width() * self.interleave.max(1) as usize
    }

    /// Appends frames `start_frame .. start_frame + n_frames` to `out`.
    pub fn fill(&self, start_frame: u64, n_frames: usize, out: &mut Vec<u8>) {
        let n = self.interleave.max(1);
        let a = self.amplitude.clamp(0.0, 1.0);
        let rate = if self.rate > 0.0 && self.rate.is_finite() {
            self.rate
        } else {
            NOMINAL_RATE
        };
        let base = out.len();
        out.resize(base + n_frames * self.frame_bytes(), 0);
        let dst = &mut out[base..];
        // Sub-channel k is shifted by k/N of a period.
        let shifts: Vec<f64> = (0..n).map(|k| k as f64 / n as f64).collect();
        // The signal is chosen once per call so each loop below is monomorphic.
        match self.signal {
            Signal::Sine(hz) => self.fill_with(dst, start_frame, |f, k| {
                let cycles = (f as f64 * hz / rate).fract() + shifts[k as usize];
                Value::Unit(a * (std::f64::consts::TAU * cycles).sin())
            }),
            Signal::Square(hz) => self.fill_with(dst, start_frame, |f, k| {
                let cycles = ((f as f64 * hz / rate).fract() + shifts[k as usize]).fract();
                Value::Unit(if cycles < 0.5 { a } else { -a })
            }),
            Signal::Ramp => self.fill_with(dst, start_frame, |f, k| {
                let cycles = ((f as f64 / rate).fract() + shifts[k as usize]).fract();
                Value::Unit(a * (2.0 * cycles - 1.0))
            }),
            Signal::Counter => self.fill_with(dst, start_frame, |f, k| {
                Value::Count(f.wrapping_add(k as u64))
            }),
            Signal::Noise(seed) => self.fill_with(dst, start_frame, |f, k| {
                let u = (noise_bits(seed, f, k) >> 11) as f64 / (1u64 << 53) as f64;
                Value::Unit(a * (2.0 * u - 1.0))
            }),
        }
    }

    /// Encodes `value(frame, sub_channel)` for every sample of `dst` (whole frames).
    #[inline(always)]
    fn fill_with(&self, dst: &mut [u8], start_frame: u64, value: impl Fn(u64, u32) -> Value) {
        let n = self.interleave.max(1);
        let w = self.format.width();
        let format = self.format;
        for (i, frame) in dst.chunks_exact_mut(w * n as usize).enumerate() {
            let f = start_frame.wrapping_add(i as u64);
            for (k, d) in frame.chunks_exact_mut(w).enumerate() {
                encode(format, value(f, k as u32), d);
            }
        }
    }
}

/// Appends frames `start_frame .. start_frame + n_frames` of `signal` to `out`; see the
/// [`gen`](super) documentation for what each signal and sub-channel holds.
#[allow(clippy::too_many_arguments)]
pub fn synth(
    signal: Signal,
    format: SampleType,
    interleave: u32,
    start_frame: u64,
    n_frames: usize,
    amplitude: f64,
    rate: f64,
    out: &mut Vec<u8>,
) {
    Synth {
        signal,
        format,
        interleave,
        amplitude,
        rate,
    }
    .fill(start_frame, n_frames, out)
}

/// xorshift64* over a state mixed from the seed, the frame and the sub-channel.
fn noise_bits(seed: u64, frame: u64, k: u32) -> u64 {
    let mut x = seed
        ^ frame.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (k as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    // A splitmix-style finalizer first, so neighbouring frames start far apart.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    if x == 0 {
        x = 0x2545_F491_4F6C_DD1D;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(signal: Signal, format: SampleType, interleave: u32, start: u64, n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        synth(signal, format, interleave, start, n, 0.5, 48000.0, &mut v);
        v
    }

    #[test]
    fn parses_signals() {
        assert_eq!(Signal::parse("sine:440", 1).unwrap(), Signal::Sine(440.0));
        assert_eq!(Signal::parse("square:1.5", 1).unwrap(), Signal::Square(1.5));
        assert_eq!(Signal::parse("ramp", 1).unwrap(), Signal::Ramp);
        assert_eq!(Signal::parse("counter", 1).unwrap(), Signal::Counter);
        assert_eq!(Signal::parse("noise", 7).unwrap(), Signal::Noise(7));
        assert!(Signal::parse("sine:abc", 1).is_err());
        assert!(Signal::parse("triangle", 1).is_err());
        assert!(Signal::parse("sine:-3", 1).is_err());
    }

    #[test]
    fn counter_is_frame_plus_subchannel_wrapping() {
        let v = gen(Signal::Counter, SampleType::I16Le, 2, 65535, 2);
        // frame 65535: ch0 = 65535 (-1), ch1 = 65536 -> 0; frame 65536: 0, 1
        assert_eq!(v, vec![0xff, 0xff, 0, 0, 0, 0, 1, 0]);
        let v = gen(Signal::Counter, SampleType::I32Be, 1, 0x0102_0304, 1);
        assert_eq!(v, vec![1, 2, 3, 4]);
        let v = gen(Signal::Counter, SampleType::U8, 1, 254, 3);
        assert_eq!(v, vec![254, 255, 0]);
        let v = gen(Signal::Counter, SampleType::F32Le, 1, (1 << 24) + 5, 1);
        assert_eq!(f32::from_le_bytes(v[..4].try_into().unwrap()), 5.0);
        let v = gen(Signal::Counter, SampleType::F64Le, 1, 12345, 1);
        assert_eq!(f64::from_le_bytes(v[..8].try_into().unwrap()), 12345.0);
    }

    #[test]
    fn sizes_are_whole_frames_for_every_format() {
        for t in SampleType::ALL {
            for sig in [
                Signal::Sine(440.0),
                Signal::Square(10.0),
                Signal::Ramp,
                Signal::Counter,
                Signal::Noise(3),
            ] {
                let v = gen(sig, t, 3, 100, 17);
                assert_eq!(v.len(), 17 * 3 * t.width(), "{t} {sig:?}");
            }
        }
    }

    #[test]
    fn chunking_does_not_change_the_bytes() {
        for sig in [
            Signal::Sine(440.0),
            Signal::Square(3.0),
            Signal::Ramp,
            Signal::Counter,
            Signal::Noise(9),
        ] {
            let whole = gen(sig, SampleType::F32Le, 2, 1000, 300);
            let mut parts = gen(sig, SampleType::F32Le, 2, 1000, 100);
            parts.extend(gen(sig, SampleType::F32Le, 2, 1100, 1));
            parts.extend(gen(sig, SampleType::F32Le, 2, 1101, 199));
            assert_eq!(whole, parts, "{sig:?}");
        }
    }

    #[test]
    fn sine_has_amplitude_and_phase_shift_per_subchannel() {
        let v = gen(Signal::Sine(1000.0), SampleType::I16Le, 4, 0, 48);
        let s: Vec<i16> = v
            .chunks(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        let max = s.iter().step_by(4).copied().max().unwrap();
        assert!((16380..=16384).contains(&max), "{max}");
        // Frame 0: sub-channels at phase 0, 1/4, 1/2, 3/4 of a period.
        assert_eq!(&s[..4], &[0, 16384, 0, -16384]);
        // A 1 kHz sine at 48 kHz repeats every 48 frames.
        let w = gen(Signal::Sine(1000.0), SampleType::I16Le, 4, 48, 48);
        assert_eq!(v, w);
    }

    #[test]
    fn square_ramp_and_noise_stay_within_amplitude() {
        let v = gen(Signal::Square(1000.0), SampleType::I8, 1, 0, 48);
        assert!(v.iter().all(|&b| b as i8 == 64 || b as i8 == -64));
        assert_eq!(v[0] as i8, 64);
        assert_eq!(v[24] as i8, -64);
        let v = gen(Signal::Ramp, SampleType::F64Le, 1, 0, 48000);
        let r: Vec<f64> = v
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(r[0], -0.5);
        assert!(r.windows(2).all(|w| w[1] > w[0]));
        assert!(*r.last().unwrap() < 0.5);
        let v = gen(Signal::Noise(1), SampleType::F32Le, 2, 0, 5000);
        let n: Vec<f32> = v
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert!(n.iter().all(|x| x.abs() <= 0.5));
        let mean = n.iter().map(|&x| x as f64).sum::<f64>() / n.len() as f64;
        assert!(mean.abs() < 0.02, "{mean}");
        assert!(n.iter().any(|&x| x > 0.45) && n.iter().any(|&x| x < -0.45));
        // Sub-channels and seeds differ.
        assert_ne!(n[0], n[1]);
        assert_ne!(
            gen(Signal::Noise(1), SampleType::I16Le, 1, 0, 16),
            gen(Signal::Noise(2), SampleType::I16Le, 1, 0, 16)
        );
    }
}
