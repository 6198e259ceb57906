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
