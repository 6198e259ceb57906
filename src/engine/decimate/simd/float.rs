//! The kernels of little-endian `f32` samples: running `mean` and `minmax` windows that carry
//! their state across calls, so one kernel serves whole windows, the partial windows at either
//! end of a batch, and (for `minmax`) every cascade level. Dispatch, the scalar references, and
//! their part of the self-check.
//!
//! # Exactness
//!
//! With 2, 4 or 8 sub-channels each sub-channel has its own vector lane, fed frame by frame in
//! arrival order, so the SIMD kernels do exactly the scalar reference's operations and give
//! the same bytes. `mean` sums in `f64` in arrival order, divides by the window length and
//! rounds to `f32` once, as the `f64` frame-by-frame path does (NaN and infinities propagate
//! as IEEE addition does). `minmax` compares in `f32`: a sample `v` replaces the minimum when
//! `v < min` and the maximum when `v > max`, so a NaN sample is ignored and, of `-0.0` and
//! `+0.0`, the one that came first in the window stays; a window of nothing but NaN stores
//! the quiet NaN `0x7fc00000` as both values. One sub-channel (and counts other than 1, 2, 4,
//! 8) runs the scalar kernel: lanes would have to take a window's samples out of order.

use super::{Isa, Kind};

/// Running `mean` over `ratio`-frame windows of `channels` little-endian `f32` samples:
/// `count` frames of the current window are summed in `sums` (`f64`, one per sub-channel,
/// zero when `count` is 0). Each completed window's means, `(sum / ratio) as f32`
/// little-endian, go to `out` (`out.len()` must be `4·channels` times
/// [`super::fold_windows`]), and the sums restart from zero.
pub fn mean_fold_f32(
    isa: Isa,
    input: &[u8],
    channels: usize,
    ratio: usize,
    count: &mut usize,
    sums: &mut [f64],
    out: &mut [u8],
) {
    let fb = 4 * channels;
    assert!(ratio > 0 && *count < ratio && input.len() % fb == 0 && sums.len() == channels);
    assert_eq!(
        out.len(),
        super::fold_windows(input.len() / fb, ratio, *count) * fb
    );
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_macros)
    )]
    macro_rules! by_channels {
        ($m:ident :: $f:ident, $($c:literal),*) => {
            match channels {
                $($c => $m::$f::<$c>(input, ratio, count, sums, out),)*
                _ => mean_fold_f32_scalar(input, channels, ratio, count, sums, out),
            }
        };
    }
    match isa.0 {
        Kind::Scalar => mean_fold_f32_scalar(input, channels, ratio, count, sums, out),
        // SAFETY (call of a target_feature function): SSE2 is part of x86-64.
        #[cfg(target_arch = "x86_64")]
        Kind::Sse2 => unsafe { by_channels!(x86_f32::mean_fold_sse2, 2, 4, 8) },
        // SAFETY: an Isa of this kind exists only when AVX2 was detected (SSE2 for 2
        // sub-channels, which fill one 2-lane vector).
        #[cfg(target_arch = "x86_64")]
        Kind::Avx2 => unsafe {
            match channels {
                2 => x86_f32::mean_fold_sse2::<2>(input, ratio, count, sums, out),
                _ => by_channels!(x86_f32::mean_fold_avx2, 4, 8),
            }
        },
        // SAFETY (call of a target_feature function): NEON is part of aarch64.
        #[cfg(target_arch = "aarch64")]
        Kind::Neon => unsafe { by_channels!(neon_f32::mean_fold, 2, 4, 8) },
    }
}

/// Running `minmax` over `ratio`-frame windows, as `super::minmax_fold_i16` but of `f32`:
/// frames of `channels` little-endian samples (`pairs == false`) or of `channels` (min, max)
/// pairs (`pairs == true`, a lower level's output); `acc` holds the window's (min, max) per
/// sub-channel, (+inf, −inf) while empty. Completed windows go to `out` as little-endian
/// pairs, `8·channels` bytes each. See the module doc for NaN and signed zeros.
#[allow(clippy::too_many_arguments)]
pub fn minmax_fold_f32(
    isa: Isa,
    input: &[u8],
    pairs: bool,
    channels: usize,
    ratio: usize,
    count: &mut usize,
    acc: &mut [f32],
    out: &mut [u8],
) {
    let fb = if pairs { 8 * channels } else { 4 * channels };
    assert!(ratio > 0 && *count < ratio && input.len() % fb == 0 && acc.len() == 2 * channels);
    assert_eq!(
        out.len(),
        super::fold_windows(input.len() / fb, ratio, *count) * 8 * channels
    );
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_macros)
    )]
    macro_rules! by_channels {
        ($m:ident :: $f:ident) => {
            match channels {
                2 => $m::$f::<2>(input, pairs, ratio, count, acc, out),
                4 => $m::$f::<4>(input, pairs, ratio, count, acc, out),
                8 => $m::$f::<8>(input, pairs, ratio, count, acc, out),
                _ => minmax_fold_f32_scalar(input, pairs, channels, ratio, count, acc, out),
            }
        };
    }
    match isa.0 {
        Kind::Scalar => minmax_fold_f32_scalar(input, pairs, channels, ratio, count, acc, out),
        // SAFETY (call of a target_feature function): SSE2 is part of x86-64 (a frame of at
        // most 8 sub-channels is two 4-lane vectors, so AVX2 has little to add).
        #[cfg(target_arch = "x86_64")]
        Kind::Sse2 | Kind::Avx2 => unsafe { by_channels!(x86_f32::minmax_fold_sse2) },
        // SAFETY (call of a target_feature function): NEON is part of aarch64.
        #[cfg(target_arch = "aarch64")]
        Kind::Neon => unsafe { by_channels!(neon_f32::minmax_fold) },
    }
}

#[cfg(target_arch = "x86_64")]
use super::x86_f32;

#[cfg(target_arch = "aarch64")]
use super::neon_f32;

fn rd(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The scalar running mean: the reference of the SIMD kernels (see [`mean_fold_f32`]).
pub fn mean_fold_f32_scalar(
    input: &[u8],
    channels: usize,
    ratio: usize,
    count: &mut usize,
    sums: &mut [f64],
    out: &mut [u8],
) {
    let r = ratio as f64;
    let mut windows = out.chunks_exact_mut(4 * channels);
    for f in input.chunks_exact(4 * channels) {
        for (c, s) in sums.iter_mut().enumerate() {
            *s += f64::from(rd(f, 4 * c));
        }
        *count += 1;
        if *count == ratio {
            *count = 0;
            let o = windows.next().expect("out holds every completed window");
            for (d, s) in o.chunks_exact_mut(4).zip(sums.iter_mut()) {
                d.copy_from_slice(&((*s / r) as f32).to_le_bytes());
                *s = 0.0;
            }
        }
    }
}

/// The scalar running extremes: the reference of the SIMD kernels (see [`minmax_fold_f32`]).
pub fn minmax_fold_f32_scalar(
    input: &[u8],
    pairs: bool,
    channels: usize,
    ratio: usize,
    count: &mut usize,
    acc: &mut [f32],
    out: &mut [u8],
) {
    let fb = if pairs { 8 * channels } else { 4 * channels };
    let mut windows = out.chunks_exact_mut(8 * channels);
    for f in input.chunks_exact(fb) {
        for (c, a) in acc.chunks_exact_mut(2).enumerate() {
            let (lo, hi) = if pairs {
                (rd(f, 8 * c), rd(f, 8 * c + 4))
            } else {
                (rd(f, 4 * c), rd(f, 4 * c))
            };
            if lo < a[0] {
                a[0] = lo;
            }
            if hi > a[1] {
                a[1] = hi;
            }
        }
        *count += 1;
        if *count == ratio {
            *count = 0;
            let o = windows.next().expect("out holds every completed window");
            for (d, a) in o.chunks_exact_mut(8).zip(acc.chunks_exact_mut(2)) {
                let none = a[0] == f32::INFINITY && a[1] == f32::NEG_INFINITY;
                let (lo, hi) = if none {
                    (f32::NAN, f32::NAN)
                } else {
                    (a[0], a[1])
                };
                d[..4].copy_from_slice(&lo.to_le_bytes());
                d[4..].copy_from_slice(&hi.to_le_bytes());
                a[0] = f32::INFINITY;
                a[1] = f32::NEG_INFINITY;
            }
        }
    }
}

/// The `f32` kernels of `isa` against the scalar ones on `samples` (which should hold NaN,
/// infinities and signed zeros), for 1 to 9 sub-channels, raw frames and pairs, windows
/// starting part-filled. The first difference, if any.
pub(super) fn self_check_f32(isa: Isa, samples: &[f32]) -> Result<(), String> {
    let bytes: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
    // Equal bytes, any NaN equal to any other (which NaN an addition of two returns is up to
    // the instruction the compiler picked).
    let same = |a: &[u8], b: &[u8]| {
        let norm = |x: &[u8]| -> Vec<u32> {
            x.chunks_exact(4)
                .map(|b| rd(b, 0))
                .map(|v| if v.is_nan() { 0x7fc0_0000 } else { v.to_bits() })
                .collect()
        };
        norm(a) == norm(b)
    };
    for channels in 1..=9 {
        for ratio in [1, 2, 3, 5, 10, 17] {
            let fb = 4 * channels;
            let input = &bytes[..bytes.len() / (2 * fb) * (2 * fb)];
            let mut res = Vec::new();
            for i in [Isa::SCALAR, isa] {
                let mut count = ratio / 2;
                let mut sums: Vec<f64> = (0..channels).map(|c| c as f64 * 0.25).collect();
                let mut o = vec![0; super::fold_windows(input.len() / fb, ratio, count) * fb];
                mean_fold_f32(i, input, channels, ratio, &mut count, &mut sums, &mut o);
                let sums: Vec<u64> = sums
                    .iter()
                    .map(|s| if s.is_nan() { 1 } else { s.to_bits() })
                    .collect();
                res.push((o, count, sums));
            }
            if !same(&res[0].0, &res[1].0) || res[0].1 != res[1].1 || res[0].2 != res[1].2 {
                return Err(format!(
                    "{} f32 means differ: {channels} channels, ratio {ratio}",
                    isa.name()
                ));
            }
            for pairs in [false, true] {
                let fb = if pairs { 8 * channels } else { 4 * channels };
                let input = &bytes[..bytes.len() / fb * fb];
                let mut res = Vec::new();
                for i in [Isa::SCALAR, isa] {
                    let mut count = ratio / 2;
                    let mut acc: Vec<f32> = (0..2 * channels)
                        .map(|j| if j % 2 == 0 { 0.5 } else { -0.5 })
                        .collect();
                    let mut o =
                        vec![0; super::fold_windows(input.len() / fb, ratio, count) * 8 * channels];
                    minmax_fold_f32(
                        i, input, pairs, channels, ratio, &mut count, &mut acc, &mut o,
                    );
                    let acc: Vec<u32> = acc.iter().map(|v| v.to_bits()).collect();
                    res.push((o, count, acc));
                }
                if res[0] != res[1] {
                    return Err(format!(
                        "{} f32 extremes differ: {channels} channels, ratio {ratio}, pairs {pairs}",
                        isa.name()
                    ));
                }
            }
        }
    }
    Ok(())
}
