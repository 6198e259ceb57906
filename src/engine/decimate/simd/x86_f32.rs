//! SSE2 and AVX2 kernels of little-endian `f32` samples: running `mean` and `minmax` windows
//! (see `super::float`). Each sub-channel keeps its own vector lane, fed frame by frame in
//! arrival order, so the lanes do exactly the scalar reference's operations. Callers guarantee
//! the feature; loads and stores take fixed-size array references, so they are in bounds by
//! type.

use std::arch::x86_64::*;

/// Two `f32` (8 bytes) widened to `f64`.
#[inline]
#[target_feature(enable = "sse2")]
fn load2_pd(b: &[u8]) -> __m128d {
    let b: &[u8; 8] = b.try_into().expect("8-byte block");
    // SAFETY: `b` is 8 readable bytes; `loadl_epi64` reads 8 bytes with no alignment
    // requirement.
    let v = unsafe { _mm_loadl_epi64(b.as_ptr().cast()) };
    _mm_cvtps_pd(_mm_castsi128_ps(v))
}

/// Four `f32` (16 bytes).
#[inline]
#[target_feature(enable = "sse2")]
fn load4_ps(b: &[u8]) -> __m128 {
    let b: &[u8; 16] = b.try_into().expect("16-byte block");
    // SAFETY: `b` is 16 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_ps(b.as_ptr().cast()) }
}

/// Two `f32` (8 bytes) in the low lanes, zero above.
#[inline]
#[target_feature(enable = "sse2")]
fn load2_ps(b: &[u8]) -> __m128 {
    let b: &[u8; 8] = b.try_into().expect("8-byte block");
    // SAFETY: `b` is 8 readable bytes; `loadl_epi64` has no alignment requirement.
    _mm_castsi128_ps(unsafe { _mm_loadl_epi64(b.as_ptr().cast()) })
}

/// Stores the low `d.len()` bytes (8 or 16) of `v`.
#[inline]
#[target_feature(enable = "sse2")]
fn store_ps(v: __m128, d: &mut [u8]) {
    if d.len() == 16 {
        let d: &mut [u8; 16] = d.try_into().expect("16-byte block");
        // SAFETY: `d` is 16 writable bytes; `storeu` has no alignment requirement.
        unsafe { _mm_storeu_ps(d.as_mut_ptr().cast(), v) };
    } else {
        let d: &mut [u8; 8] = d.try_into().expect("8-byte block");
        // SAFETY: `d` is 8 writable bytes; `storel_epi64` writes 8 bytes, unaligned.
        unsafe { _mm_storel_epi64(d.as_mut_ptr().cast(), _mm_castps_si128(v)) };
    }
}

#[inline]
#[target_feature(enable = "sse2")]
fn load_sums(s: &[f64]) -> __m128d {
    _mm_set_pd(s[1], s[0])
}

#[inline]
#[target_feature(enable = "sse2")]
fn store_sums(v: __m128d, s: &mut [f64]) {
    let s: &mut [f64; 2] = s.try_into().expect("2 sums");
    // SAFETY: `s` is 2 writable f64; `storeu` has no alignment requirement.
    unsafe { _mm_storeu_pd(s.as_mut_ptr(), v) };
}

/// Running `mean` of `C` (2, 4 or 8) sub-channels on 2-lane `f64` vectors: `C / 2` of them,
/// lane `j` of vector `k` summing sub-channel `2k + j` in arrival order.
#[target_feature(enable = "sse2")]
pub(super) fn mean_fold_sse2<const C: usize>(
    input: &[u8],
    ratio: usize,
    count: &mut usize,
    sums: &mut [f64],
    out: &mut [u8],
) {
    let r = _mm_set1_pd(ratio as f64);
    let mut acc = [_mm_setzero_pd(); 4];
    for (k, a) in acc.iter_mut().enumerate().take(C / 2) {
        *a = load_sums(&sums[2 * k..]);
    }
    let mut frames = input.chunks_exact(4 * C);
    let mut windows = out.chunks_exact_mut(4 * C);
    let mut n = *count;
    loop {
        let before = frames.len();
        for f in frames.by_ref().take(ratio - n) {
            for (k, a) in acc.iter_mut().enumerate().take(C / 2) {
                *a = _mm_add_pd(*a, load2_pd(&f[8 * k..8 * k + 8]));
            }
        }
        n += before - frames.len();
        if n < ratio {
            break;
        }
        n = 0;
        let o = windows.next().expect("out holds every completed window");
        for (k, a) in acc.iter_mut().enumerate().take(C / 2) {
            store_ps(_mm_cvtpd_ps(_mm_div_pd(*a, r)), &mut o[8 * k..8 * k + 8]);
            *a = _mm_setzero_pd();
        }
    }
    *count = n;
    for (k, a) in acc.iter().enumerate().take(C / 2) {
        store_sums(*a, &mut sums[2 * k..2 * k + 2]);
    }
}

/// Running `mean` of `C` (4 or 8) sub-channels on 4-lane `f64` vectors, as
/// [`mean_fold_sse2`].
#[target_feature(enable = "avx2")]
pub(super) fn mean_fold_avx2<const C: usize>(
    input: &[u8],
    ratio: usize,
    count: &mut usize,
    sums: &mut [f64],
    out: &mut [u8],
) {
    let r = _mm256_set1_pd(ratio as f64);
    let mut acc = [_mm256_setzero_pd(); 2];
    for (k, a) in acc.iter_mut().enumerate().take(C / 4) {
        *a = _mm256_set_pd(
            sums[4 * k + 3],
            sums[4 * k + 2],
            sums[4 * k + 1],
            sums[4 * k],
        );
    }
    let mut frames = input.chunks_exact(4 * C);
    let mut windows = out.chunks_exact_mut(4 * C);
    let mut n = *count;
    loop {
        let before = frames.len();
        for f in frames.by_ref().take(ratio - n) {
            for (k, a) in acc.iter_mut().enumerate().take(C / 4) {
                *a = _mm256_add_pd(*a, _mm256_cvtps_pd(load4_ps(&f[16 * k..16 * k + 16])));
            }
        }
        n += before - frames.len();
        if n < ratio {
            break;
        }
        n = 0;
        let o = windows.next().expect("out holds every completed window");
        for (k, a) in acc.iter_mut().enumerate().take(C / 4) {
            store_ps(
                _mm256_cvtpd_ps(_mm256_div_pd(*a, r)),
                &mut o[16 * k..16 * k + 16],
            );
            *a = _mm256_setzero_pd();
        }
    }
    *count = n;
    for (k, a) in acc.iter().enumerate().take(C / 4) {
        store_sums(_mm256_castpd256_pd128(*a), &mut sums[4 * k..4 * k + 2]);
        store_sums(
            _mm256_extractf128_pd::<1>(*a),
            &mut sums[4 * k + 2..4 * k + 4],
        );
    }
}

/// The (min, max) pairs of up to 4 sub-channels (`4·C'` bytes, `C'` of 2 or 4) split into a
/// vector of minima and one of maxima.
#[inline]
#[target_feature(enable = "sse2")]
fn split_pairs(p: &[u8]) -> (__m128, __m128) {
    let (a, b) = if p.len() == 32 {
        (load4_ps(&p[..16]), load4_ps(&p[16..]))
    } else {
        let a = load4_ps(p);
        (a, a)
    };
    (
        _mm_shuffle_ps::<0b10_00_10_00>(a, b),
        _mm_shuffle_ps::<0b11_01_11_01>(a, b),
    )
}

/// Stores minima and maxima of up to 4 sub-channels as (min, max) pairs: `d.len()` of 16 or
/// 32 bytes.
#[inline]
#[target_feature(enable = "sse2")]
fn store_pairs(mn: __m128, mx: __m128, d: &mut [u8]) {
    store_ps(_mm_unpacklo_ps(mn, mx), &mut d[..16]);
    if d.len() == 32 {
        store_ps(_mm_unpackhi_ps(mn, mx), &mut d[16..]);
    }
}

/// Running `minmax` of `C` (2, 4 or 8) sub-channels: vector `k` holds sub-channels
/// `4k..4k+4` (the low 2 lanes when `C` is 2), minima in `mn`, maxima in `mx`. A sample `v`
/// updates `mn = v < mn ? v : mn` (`minps` with `v` first, so a NaN sample is ignored) and
/// likewise `mx`; a finished window still at (+inf, −inf) saw only NaN and stores NaN.
#[target_feature(enable = "sse2")]
pub(super) fn minmax_fold_sse2<const C: usize>(
    input: &[u8],
    pairs: bool,
    ratio: usize,
    count: &mut usize,
    acc: &mut [f32],
    out: &mut [u8],
) {
    const V: usize = 2;
    let groups = C.div_ceil(4);
    let gb = 4 * C.min(4); // input bytes of one group of raw samples
    let mut a = [0u8; 64];
    for (d, v) in a.chunks_exact_mut(4).zip(acc.iter()) {
        d.copy_from_slice(&v.to_le_bytes());
    }
    let (mut mn, mut mx) = ([_mm_setzero_ps(); V], [_mm_setzero_ps(); V]);
    for k in 0..groups {
        (mn[k], mx[k]) = split_pairs(&a[2 * gb * k..2 * gb * (k + 1)]);
    }
    let (top, bottom) = (_mm_set1_ps(f32::INFINITY), _mm_set1_ps(f32::NEG_INFINITY));
    let nan = _mm_set1_ps(f32::NAN);
    let fb = if pairs { 8 * C } else { 4 * C };
    let mut frames = input.chunks_exact(fb);
    let mut windows = out.chunks_exact_mut(8 * C);
    let mut n = *count;
    loop {
        let before = frames.len();
        for f in frames.by_ref().take(ratio - n) {
            for k in 0..groups {
                let (lo, hi) = if pairs {
                    split_pairs(&f[2 * gb * k..2 * gb * (k + 1)])
                } else {
                    let v = if C == 2 {
                        load2_ps(f)
                    } else {
                        load4_ps(&f[16 * k..16 * k + 16])
                    };
                    (v, v)
                };
                mn[k] = _mm_min_ps(lo, mn[k]);
                mx[k] = _mm_max_ps(hi, mx[k]);
            }
        }
        n += before - frames.len();
        if n < ratio {
            break;
        }
        n = 0;
        let o = windows.next().expect("out holds every completed window");
        for k in 0..groups {
            let none = _mm_and_ps(_mm_cmpeq_ps(mn[k], top), _mm_cmpeq_ps(mx[k], bottom));
            let lo = _mm_or_ps(_mm_andnot_ps(none, mn[k]), _mm_and_ps(none, nan));
            let hi = _mm_or_ps(_mm_andnot_ps(none, mx[k]), _mm_and_ps(none, nan));
            store_pairs(lo, hi, &mut o[2 * gb * k..2 * gb * (k + 1)]);
            (mn[k], mx[k]) = (top, bottom);
        }
    }
    *count = n;
    for k in 0..groups {
        store_pairs(mn[k], mx[k], &mut a[2 * gb * k..2 * gb * (k + 1)]);
    }
    for (v, b) in acc.iter_mut().zip(a.chunks_exact(4)) {
        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}
