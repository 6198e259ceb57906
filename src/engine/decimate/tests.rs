//! Tests of the decimator against straightforward references: each level computed directly
//! from the whole input (FIR as direct-form convolutions), for every mode, sample type and
//! packetisation; plus the FIR's stop band, time offsets and value type codes.

use super::*;
use proptest::prelude::*;

pub(super) fn spec(mode: DecimateMode, factors: &[u32], taps: Option<u32>) -> DecimateSpec {
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

pub(super) fn decode_out(shape: &LevelShape, bytes: &[u8]) -> Vec<Vec<f64>> {
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

/// Bound on the error of the `f32` level-0 FIR against the `f64` reference, carried through
/// the later levels: `(T + 3)·2⁻²⁴·Σ|h|·max|x|` (the rounding of a `T`-term sum in any order,
/// plus rounding the taps and the input to `f32`), times `Σ|h|` of each later stage.
pub(super) fn fir_f32_bound(sp: &DecimateSpec, max_abs: f64) -> f64 {
    let mut bound = 0.0;
    let mut prev = 1;
    for (l, &f) in sp.factors.iter().enumerate() {
        let r = f / prev;
        let t = sp.fir_taps.unwrap_or_else(|| default_fir_taps(r));
        let gain: f64 = fir_design(r, t).iter().map(|h| h.abs()).sum();
        bound = if l == 0 {
            (t as f64 + 3.0) * f64::from(f32::EPSILON) / 2.0 * gain * max_abs
        } else {
            bound * gain
        };
        prev = f;
    }
    bound
}

pub(super) fn max_abs_input(sample: SampleType, input: &[u8]) -> f64 {
    input
        .chunks_exact(sample.width())
        .map(|s| sample.decode(s).abs())
        .fold(0.0, f64::max)
}

fn check_close(mode: DecimateMode, got: &[Vec<f64>], want: &[Vec<f64>], fir_tol: f64) {
    assert_eq!(got.len(), want.len(), "frame count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        for (a, b) in g.iter().zip(w) {
            let ok = match mode {
                DecimateMode::Every | DecimateMode::MinMax => a.to_bits() == b.to_bits(),
                _ => {
                    let bf = *b as f32 as f64;
                    (a - bf).abs() <= 1e-5 * bf.abs().max(1.0) + fir_tol
                }
            };
            assert!(ok, "frame {i}: got {a}, want {b}");
        }
    }
}

pub(super) fn run_split(d: &mut Decimator, input: &[u8], cuts: &[usize], out: &mut [Vec<u8>]) {
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
        let tol = fir_f32_bound(&sp, max_abs_input(sample, &bytes));
        for (l, shape) in d.levels().to_vec().iter().enumerate() {
            check_close(mode, &decode_out(shape, &out[l]), &want[l], tol);
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
        let tol = fir_f32_bound(&sp, max_abs_input(sample, &whole_input));
        for (l, shape) in d.levels().to_vec().iter().enumerate() {
            check_close(mode, &decode_out(shape, &out[l]), &want[l], tol);
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
