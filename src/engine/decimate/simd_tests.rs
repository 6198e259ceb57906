//! Property tests of every SIMD path this CPU has against the scalar one: the kernels on
//! their own, and whole decimators on random input, packetisation, interleave (1..=16) and
//! factors, for each instruction set against [`Isa::SCALAR`] and against the `f64`
//! frame-by-frame path (the same samples fed big-endian, which never takes the `i16` kernels).

use super::simd::{self, Isa};
use super::tests::{decode_out, fir_f32_bound, max_abs_input, run_split, spec};
use super::*;
use proptest::prelude::*;

fn arb_mode() -> impl Strategy<Value = DecimateMode> {
    prop_oneof![
        Just(DecimateMode::Every),
        Just(DecimateMode::Mean),
        Just(DecimateMode::MinMax),
        Just(DecimateMode::Fir),
    ]
}

/// Samples that are mostly small, sometimes at the extremes of `i16`.
fn arb_i16s(max: usize) -> impl Strategy<Value = Vec<i16>> {
    proptest::collection::vec(
        prop_oneof![
            4 => any::<i16>(),
            1 => Just(i16::MIN),
            1 => Just(i16::MAX),
            2 => -3i16..3,
        ],
        0..max,
    )
}

fn le_bytes(v: &[i16]) -> Vec<u8> {
    v.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Runs a decimator on `isa` over `bytes` cut at `cuts`; returns each level's output bytes.
fn run(
    sample: SampleType,
    ch: usize,
    sp: &DecimateSpec,
    isa: Isa,
    bytes: &[u8],
    cuts: &[usize],
) -> (Vec<Vec<u8>>, Decimator) {
    let mut d = Decimator::with_spec(sample, ch as u32, 0, sp).unwrap();
    d.set_isa(isa);
    let mut out = vec![Vec::new(); sp.factors.len()];
    run_split(&mut d, bytes, cuts, &mut out);
    (out, d)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The window kernels equal the scalar kernels exactly, for every channel count (the
    /// SIMD ones serve 1, 2, 4, 8 and fall back otherwise) and window length.
    #[test]
    fn window_kernels_match_scalar(
        ch in 1usize..=16,
        ratio in 1usize..70,
        windows in 0usize..5,
        seed in arb_i16s(16 * 70 * 5),
    ) {
        let n = ch * ratio * windows;
        let samples: Vec<i16> = (0..n).map(|i| seed.get(i % seed.len().max(1)).copied().unwrap_or(0)
            .wrapping_add((i as i16).wrapping_mul(7919))).collect();
        let bytes = le_bytes(&samples);
        let mut want_s = vec![0; windows * ch];
        let mut want_m = vec![0; windows * 4 * ch];
        simd::sum_windows_scalar(&bytes, ch, ratio, &mut want_s);
        simd::minmax_windows_scalar(&bytes, ch, ratio, &mut want_m);
        let mut want_a = vec![0; windows * 4 * ch];
        simd::mean_windows_scalar(&bytes, ch, ratio, &mut want_a);
        // The scalar means are the sums' means, rounded once.
        let r = ratio as f64;
        let from_sums: Vec<u8> = want_s.iter()
            .flat_map(|s| ((f64::from(*s) / r) as f32).to_le_bytes()).collect();
        prop_assert_eq!(&want_a, &from_sums);
        for isa in Isa::available() {
            let mut s = vec![7; windows * ch];
            let mut m = vec![7; windows * 4 * ch];
            let mut a = vec![7; windows * 4 * ch];
            simd::sum_windows_i16(isa, &bytes, ch, ratio, &mut s);
            simd::minmax_windows_i16(isa, &bytes, ch, ratio, &mut m);
            simd::mean_windows_i16(isa, &bytes, ch, ratio, &mut a);
            prop_assert_eq!(&s, &want_s, "{} sums", isa.name());
            prop_assert_eq!(&m, &want_m, "{} extremes", isa.name());
            prop_assert_eq!(&a, &want_a, "{} means", isa.name());
        }
    }

    /// The running extremes of each set equal the scalar ones exactly, for raw frames (level
    /// 0) and (min, max) pairs (higher levels), whatever the window already holds and however
    /// the frames are split across calls.
    #[test]
    fn fold_kernel_matches_scalar(
        ch in 1usize..=16,
        ratio in 1usize..40,
        pairs in any::<bool>(),
        seed in arb_i16s(16 * 200),
        start in 0usize..40,
        cuts in proptest::collection::vec(0usize..200, 0..6),
    ) {
        let fb = if pairs { 4 * ch } else { 2 * ch };
        let bytes = le_bytes(&seed);
        let bytes = &bytes[..bytes.len() / fb * fb];
        let frames = bytes.len() / fb;
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(frames)).collect();
        cuts.push(frames);
        cuts.sort();
        // A partial window to start from: `count` frames of it folded by the scalar kernel.
        let count0 = start % ratio;
        let warm: Vec<u8> = le_bytes(&seed.iter().rev().take(count0 * fb / 2).copied().collect::<Vec<_>>());
        let warm = &warm[..warm.len() / fb * fb];
        let mut results = Vec::new();
        for isa in std::iter::once(Isa::SCALAR).chain(Isa::available()) {
            let (mut count, mut acc) = (0, [i16::MAX, i16::MIN].repeat(ch));
            let n = simd::fold_windows(warm.len() / fb, ratio, 0);
            simd::minmax_fold_scalar(warm, pairs, ch, ratio, &mut count, &mut acc, &mut vec![0; n * 4 * ch]);
            let mut out = Vec::new();
            let mut at = 0;
            for &c in &cuts {
                let part = &bytes[at * fb..c * fb];
                let mut o = vec![0x55; simd::fold_windows(c - at, ratio, count) * 4 * ch];
                simd::minmax_fold_i16(isa, part, pairs, ch, ratio, &mut count, &mut acc, &mut o);
                out.extend_from_slice(&o);
                at = c;
            }
            results.push((isa.name(), out, count, acc));
        }
        for r in &results[1..] {
            prop_assert_eq!(&r.1, &results[0].1, "{} windows", r.0);
            prop_assert_eq!((r.2, &r.3), (results[0].2, &results[0].3), "{} state", r.0);
        }
    }

    /// The interleaved `f32` dot products of each set are within the rounding bound of the
    /// exact ones, per sub-channel.
    #[test]
    fn dot_lanes_matches_reference(
        ch in prop_oneof![Just(1usize), Just(2), Just(4), Just(8)],
        pairs in proptest::collection::vec((-1.0f32..1.0, -40000.0f32..40000.0), 0..400),
    ) {
        let n = pairs.len() / ch * ch;
        let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().take(n).unzip();
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; ch];
            simd::dot_lanes_f32(isa, &a, &b, &mut got);
            for (c, g) in got.iter().enumerate() {
                let terms = || a.iter().zip(&b).skip(c).step_by(ch);
                let exact: f64 = terms().map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
                let mag: f64 = terms().map(|(x, y)| (f64::from(*x) * f64::from(*y)).abs()).sum();
                let bound = (n / ch) as f64 * f64::from(f32::EPSILON) * mag + 1e-30;
                prop_assert!((f64::from(*g) - exact).abs() <= bound,
                    "{} channel {}: {} vs {}", isa.name(), c, g, exact);
            }
        }
    }

    /// The `f32` dot product of each set is within the rounding bound of the exact one.
    #[test]
    fn dot_matches_reference(
        pairs in proptest::collection::vec((-1.0f32..1.0, -40000.0f32..40000.0), 0..300),
    ) {
        let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
        let mag: f64 = a.iter().zip(&b).map(|(x, y)| (f64::from(*x) * f64::from(*y)).abs()).sum();
        let bound = (a.len() as f64 + 1.0) * f64::from(f32::EPSILON) / 2.0 * mag + 1e-30;
        for isa in Isa::available() {
            let got = f64::from(simd::dot_f32(isa, &a, &b));
            prop_assert!((got - exact).abs() <= bound, "{}: {} vs {}", isa.name(), got, exact);
        }
    }

    /// Whole decimators of `i16` samples: every instruction set gives the same bytes as the
    /// scalar kernels and as the `f64` frame-by-frame path (`every`, `mean`, `minmax`), or
    /// stays within the `f32` bound of it (`fir`), whatever the packetisation.
    #[test]
    fn decimator_simd_matches_scalar(
        mode in arb_mode(),
        ch in 1usize..=16,
        f0 in 1u32..40,
        mults in proptest::collection::vec(2u32..5, 0..3),
        taps in proptest::option::of(3u32..64),
        samples in arb_i16s(4000),
        cuts in proptest::collection::vec(0usize..8000, 0..16),
    ) {
        let mut factors = vec![f0];
        for m in mults { let l = *factors.last().unwrap(); factors.push(l * m); }
        let taps = if mode == DecimateMode::Fir { taps } else { None };
        let sp = spec(mode, &factors, taps);
        let bytes = le_bytes(&samples);
        let mut cuts = cuts;
        cuts.sort();
        let (want, wd) = run(SampleType::I16Le, ch, &sp, Isa::SCALAR, &bytes, &cuts);
        // The same samples big-endian take the generic f64 path, never the i16 kernels.
        let be: Vec<u8> = samples.iter().flat_map(|s| s.to_be_bytes()).collect();
        let (frame_path, _) = run(SampleType::I16Be, ch, &sp, Isa::SCALAR, &be, &cuts);
        let tol = fir_f32_bound(&sp, max_abs_input(SampleType::I16Le, &bytes));
        let close = |got: &[Vec<u8>], want: &[Vec<u8>]| -> Result<(), TestCaseError> {
            for (l, shape) in wd.levels().iter().enumerate() {
                if mode == DecimateMode::Fir {
                    let (g, w) = (decode_out(shape, &got[l]), decode_out(shape, &want[l]));
                    prop_assert_eq!(g.len(), w.len());
                    for (a, b) in g.iter().flatten().zip(w.iter().flatten()) {
                        prop_assert!((a - b).abs() <= 2.0 * tol + 1e-6 * b.abs().max(1.0),
                            "level {}: {} vs {} (tol {})", l, a, b, tol);
                    }
                } else {
                    prop_assert_eq!(&got[l], &want[l], "level {}", l);
                }
            }
            Ok(())
        };
        prop_assert_eq!(&frame_path, &want);
        for isa in Isa::available() {
            let (got, d) = run(SampleType::I16Le, ch, &sp, isa, &bytes, &cuts);
            close(&got, &want)?;
            prop_assert_eq!(d.counters(), wd.counters(), "{} counters", isa.name());
            prop_assert_eq!(d.carried_bytes(), wd.carried_bytes());
        }
    }
}

/// The detected set is the best this CPU has, and the same on every call.
#[test]
fn detect_is_best_available() {
    assert_eq!(Isa::detect(), *Isa::available().last().unwrap());
    assert_eq!(Isa::detect(), Isa::detect());
    let d = Decimator::with_spec(
        SampleType::I16Le,
        4,
        0,
        &spec(DecimateMode::Mean, &[10], None),
    )
    .unwrap();
    assert_eq!(d.isa(), Isa::detect());
}

/// The probe's self-check passes on every set this CPU has.
#[test]
fn self_check_passes() {
    for isa in Isa::available() {
        assert_eq!(simd::self_check(isa), Ok(()), "{}", isa.name());
    }
}

/// `f32` samples: mostly ordinary values, often the special ones (NaN of both kinds,
/// infinities, signed zeros, the extremes).
fn arb_f32s(max: usize) -> impl Strategy<Value = Vec<f32>> {
    proptest::collection::vec(
        prop_oneof![
            8 => -1000.0f32..1000.0,
            1 => Just(f32::NAN),
            1 => Just(f32::from_bits(0xffa0_0001)),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(0.0f32),
            1 => Just(-0.0f32),
            1 => Just(f32::MAX),
            1 => Just(f32::MIN),
        ],
        0..max,
    )
}

/// Little-endian `f32` values as bits, every NaN as the same one (which NaN an addition of two
/// NaN returns depends on the operand order the compiler picked).
fn f32_bits(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .map(|v| if v.is_nan() { 0x7fc0_0000 } else { v.to_bits() })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The running `f32` windows of each set equal the scalar ones exactly (`mean` and
    /// `minmax`, raw frames and pairs), whatever the window already holds and however the
    /// frames are split across calls.
    #[test]
    fn f32_fold_kernels_match_scalar(
        ch in prop_oneof![Just(1usize), Just(2), Just(4), Just(8), 1usize..=9],
        ratio in 1usize..40,
        pairs in any::<bool>(),
        vals in arb_f32s(9 * 300),
        start in 0usize..40,
        cuts in proptest::collection::vec(0usize..300, 0..6),
    ) {
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        for mean in [true, false] {
            let fb = if mean || !pairs { 4 * ch } else { 8 * ch };
            let bytes = &bytes[..bytes.len() / fb * fb];
            let frames = bytes.len() / fb;
            let mut cuts: Vec<usize> = cuts.iter().map(|c| (*c).min(frames)).collect();
            cuts.push(frames);
            cuts.sort();
            let count0 = start % ratio;
            let mut results = Vec::new();
            for isa in std::iter::once(Isa::SCALAR).chain(Isa::available()) {
                // A part-filled window to start from, from the input's first values.
                let mut count = count0;
                let mut sums: Vec<f64> = (0..ch)
                    .map(|c| if count0 == 0 { 0.0 } else { f64::from(vals.get(c).copied().unwrap_or(1.5)) })
                    .map(|v| if v.is_nan() { 0.5 } else { v })
                    .collect();
                let mut acc: Vec<f32> = (0..2 * ch)
                    .map(|j| if count0 == 0 { [f32::INFINITY, f32::NEG_INFINITY][j % 2] } else { [-0.0, 3.5][j % 2] })
                    .collect();
                let mut out = Vec::new();
                let mut at = 0;
                for &c in &cuts {
                    let part = &bytes[at * fb..c * fb];
                    let n = simd::fold_windows(c - at, ratio, count);
                    if mean {
                        let mut o = vec![0x55; n * 4 * ch];
                        simd::mean_fold_f32(isa, part, ch, ratio, &mut count, &mut sums, &mut o);
                        out.extend_from_slice(&o);
                    } else {
                        let mut o = vec![0x55; n * 8 * ch];
                        simd::minmax_fold_f32(isa, part, pairs, ch, ratio, &mut count, &mut acc, &mut o);
                        out.extend_from_slice(&o);
                    }
                    at = c;
                }
                let state: Vec<u64> = sums.iter()
                    .map(|s| if s.is_nan() { 1 } else { s.to_bits() })
                    .chain(acc.iter().map(|a| u64::from(a.to_bits())))
                    .collect();
                results.push((isa.name(), f32_bits(&out), out, count, state));
            }
            for r in &results[1..] {
                if mean {
                    prop_assert_eq!(&r.1, &results[0].1, "{} means", r.0);
                } else {
                    // No arithmetic: the very bytes.
                    prop_assert_eq!(&r.2, &results[0].2, "{} extremes", r.0);
                }
                prop_assert_eq!((r.3, &r.4), (results[0].3, &results[0].4), "{} state", r.0);
            }
        }
    }

    /// Whole decimators of `f32` samples (`mean` of one level, `minmax` of 1 to 3 levels):
    /// every instruction set gives the bytes of the scalar kernels, and the values of the `f64`
    /// frame-by-frame path (the same samples fed big-endian), `-0.0` equal to `+0.0` and NaN
    /// to NaN, whatever the packetisation.
    #[test]
    fn f32_decimator_matches_frame_path(
        minmax in any::<bool>(),
        ch in prop_oneof![Just(1usize), Just(2), Just(4), Just(8), 1usize..=9],
        f0 in 1u32..30,
        mults in proptest::collection::vec(2u32..5, 0..3),
        vals in arb_f32s(3000),
        cuts in proptest::collection::vec(0usize..12000, 0..16),
    ) {
        let mode = if minmax { DecimateMode::MinMax } else { DecimateMode::Mean };
        let mut factors = vec![f0];
        if minmax {
            for m in mults { let l = *factors.last().unwrap(); factors.push(l * m); }
        }
        let sp = spec(mode, &factors, None);
        let le: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let be: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
        let mut cuts = cuts;
        cuts.sort();
        let (want, wd) = run(SampleType::F32Le, ch, &sp, Isa::SCALAR, &le, &cuts);
        let (frame_path, _) = run(SampleType::F32Be, ch, &sp, Isa::SCALAR, &be, &cuts);
        let value = |b: &[u8]| -> Vec<u32> {
            f32_bits(b).into_iter().map(|v| if v == 0x8000_0000 { 0 } else { v }).collect()
        };
        for l in 0..factors.len() {
            prop_assert_eq!(value(&want[l]), value(&frame_path[l]), "level {} vs f64 path", l);
        }
        for isa in Isa::available() {
            let (got, d) = run(SampleType::F32Le, ch, &sp, isa, &le, &cuts);
            for l in 0..factors.len() {
                prop_assert_eq!(f32_bits(&got[l]), f32_bits(&want[l]), "{} level {}", isa.name(), l);
            }
            prop_assert_eq!(d.counters(), wd.counters(), "{} counters", isa.name());
            prop_assert_eq!(d.carried_bytes(), wd.carried_bytes());
        }
    }
}
