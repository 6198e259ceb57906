//! SSE2 and AVX2(+FMA) kernels. Callers guarantee the feature (see the parent module); loads
//! take fixed-size array references, so they are in bounds by type.

use super::{fold_lanes, fold_sum, short_minmax, tail_sum};
use std::arch::x86_64::*;

#[inline(always)]
fn load128(b: &[u8]) -> __m128i {
    let b: &[u8; 16] = b.try_into().expect("16-byte block");
    // SAFETY: `b` is 16 readable bytes; `loadu` has no alignment requirement; SSE2 is part of
    // x86-64.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load256(b: &[u8]) -> __m256i {
    let b: &[u8; 32] = b.try_into().expect("32-byte block");
    // SAFETY: `b` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[inline(always)]
fn store128_i32(v: __m128i) -> [i32; 4] {
    let mut a = [0i32; 4];
    // SAFETY: `a` is 16 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm_storeu_si128(a.as_mut_ptr().cast(), v) };
    a
}

#[inline]
#[target_feature(enable = "avx2")]
fn store256_i32(v: __m256i) -> [i32; 8] {
    let mut a = [0i32; 8];
    // SAFETY: `a` is 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(a.as_mut_ptr().cast(), v) };
    a
}

/// Per-channel window sums; lane `j` of the 8 `i32` lanes holds sub-channel `j % C`.
#[target_feature(enable = "avx2")]
pub(super) fn sum_windows_avx2<const C: usize>(input: &[u8], ratio: usize, out: &mut [i32]) {
    for (w, o) in input
        .chunks_exact(2 * C * ratio)
        .zip(out.chunks_exact_mut(C))
    {
        let mut acc = _mm256_setzero_si256();
        let mut acc2 = _mm256_setzero_si256();
        let mut pairs = w.chunks_exact(32);
        for b in &mut pairs {
            acc = _mm256_add_epi32(acc, _mm256_cvtepi16_epi32(load128(&b[..16])));
            acc2 = _mm256_add_epi32(acc2, _mm256_cvtepi16_epi32(load128(&b[16..])));
        }
        let mut blocks = pairs.remainder().chunks_exact(16);
        for b in &mut blocks {
            acc = _mm256_add_epi32(acc, _mm256_cvtepi16_epi32(load128(b)));
        }
        let mut s = fold_sum::<8, C>(store256_i32(_mm256_add_epi32(acc, acc2)));
        tail_sum(&mut s, blocks.remainder());
        o.copy_from_slice(&s);
    }
}

/// Per-channel window sums; SSE2 sign-extends by unpacking and shifting.
#[target_feature(enable = "sse2")]
pub(super) fn sum_windows_sse2<const C: usize>(input: &[u8], ratio: usize, out: &mut [i32]) {
    for (w, o) in input
        .chunks_exact(2 * C * ratio)
        .zip(out.chunks_exact_mut(C))
    {
        let mut lo = _mm_setzero_si128();
        let mut hi = _mm_setzero_si128();
        let mut blocks = w.chunks_exact(16);
        for b in &mut blocks {
            let v = load128(b);
            lo = _mm_add_epi32(lo, _mm_srai_epi32::<16>(_mm_unpacklo_epi16(v, v)));
            hi = _mm_add_epi32(hi, _mm_srai_epi32::<16>(_mm_unpackhi_epi16(v, v)));
        }
        let (l, h) = (store128_i32(lo), store128_i32(hi));
        let lanes = [l[0], l[1], l[2], l[3], h[0], h[1], h[2], h[3]];
        let mut s = fold_sum::<8, C>(lanes);
        tail_sum(&mut s, blocks.remainder());
        o.copy_from_slice(&s);
    }
}

/// Stores `C` (at most 4) `f32` of `v` as little-endian bytes: `4·C` bytes of `o`.
#[inline]
#[target_feature(enable = "sse2")]
fn store_f32s<const C: usize>(v: __m128, o: &mut [u8]) {
    if C == 4 {
        let o: &mut [u8; 16] = (&mut o[..16]).try_into().expect("16-byte block");
        // SAFETY: `o` is 16 writable bytes; `storeu` has no alignment requirement.
        unsafe { _mm_storeu_ps(o.as_mut_ptr().cast(), v) };
    } else {
        store_part(_mm_castps_si128(v), &mut o[..4 * C]);
    }
}

/// Window means of `i16` samples straight to `f32` bytes: the sums as in
/// [`sum_windows_avx2`], folded to one lane per sub-channel in registers, converted to `f64`,
/// divided by `ratio` and rounded to `f32` in vector lanes (each step exact or correctly
/// rounded, as in the scalar `(f64::from(sum) / r) as f32`).
#[target_feature(enable = "avx2")]
pub(super) fn mean_windows_avx2<const C: usize>(input: &[u8], ratio: usize, out: &mut [u8]) {
    let r = _mm256_set1_pd(ratio as f64);
    for (w, o) in input
        .chunks_exact(2 * C * ratio)
        .zip(out.chunks_exact_mut(4 * C))
    {
        let mut acc = _mm256_setzero_si256();
        let mut blocks = w.chunks_exact(16);
        for b in &mut blocks {
            acc = _mm256_add_epi32(acc, _mm256_cvtepi16_epi32(load128(b)));
        }
        if !blocks.remainder().is_empty() {
            // Starts on sub-channel 0; the zero padding adds nothing.
            let part = load_part(blocks.remainder());
            acc = _mm256_add_epi32(acc, _mm256_cvtepi16_epi32(part));
        }
        if C == 8 {
            let lo = _mm256_cvtpd_ps(_mm256_div_pd(
                _mm256_cvtepi32_pd(_mm256_castsi256_si128(acc)),
                r,
            ));
            let hi = _mm256_cvtpd_ps(_mm256_div_pd(
                _mm256_cvtepi32_pd(_mm256_extracti128_si256::<1>(acc)),
                r,
            ));
            store_f32s::<4>(lo, &mut o[..16]);
            store_f32s::<4>(hi, &mut o[16..]);
        } else {
            let s = fold4_i32::<C>(_mm_add_epi32(
                _mm256_castsi256_si128(acc),
                _mm256_extracti128_si256::<1>(acc),
            ));
            let m = _mm256_cvtpd_ps(_mm256_div_pd(_mm256_cvtepi32_pd(s), r));
            store_f32s::<C>(m, o);
        }
    }
}

/// Folds 4 `i32` lanes, lane `j` holding sub-channel `j % C` (`C` of 1, 2 or 4), so that lane
/// `c < C` holds the sum of sub-channel `c`.
#[inline]
#[target_feature(enable = "sse2")]
fn fold4_i32<const C: usize>(mut s: __m128i) -> __m128i {
    if C <= 2 {
        s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    }
    if C == 1 {
        s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    }
    s
}

/// Four `i32` lanes divided by `r` and rounded to `f32`, as in [`mean_windows_avx2`].
#[inline]
#[target_feature(enable = "sse2")]
fn means4_sse2(s: __m128i, r: __m128d) -> __m128 {
    let lo = _mm_cvtpd_ps(_mm_div_pd(_mm_cvtepi32_pd(s), r));
    let hi = _mm_cvtpd_ps(_mm_div_pd(_mm_cvtepi32_pd(_mm_unpackhi_epi64(s, s)), r));
    _mm_movelh_ps(lo, hi)
}

/// Window means of `i16` samples straight to `f32` bytes on SSE2 (sums as in
/// [`sum_windows_sse2`]).
#[target_feature(enable = "sse2")]
pub(super) fn mean_windows_sse2<const C: usize>(input: &[u8], ratio: usize, out: &mut [u8]) {
    let r = _mm_set1_pd(ratio as f64);
    for (w, o) in input
        .chunks_exact(2 * C * ratio)
        .zip(out.chunks_exact_mut(4 * C))
    {
        let mut lo = _mm_setzero_si128();
        let mut hi = _mm_setzero_si128();
        let mut blocks = w.chunks_exact(16);
        for b in &mut blocks {
            let v = load128(b);
            lo = _mm_add_epi32(lo, _mm_srai_epi32::<16>(_mm_unpacklo_epi16(v, v)));
            hi = _mm_add_epi32(hi, _mm_srai_epi32::<16>(_mm_unpackhi_epi16(v, v)));
        }
        if !blocks.remainder().is_empty() {
            let v = load_part(blocks.remainder());
            lo = _mm_add_epi32(lo, _mm_srai_epi32::<16>(_mm_unpacklo_epi16(v, v)));
            hi = _mm_add_epi32(hi, _mm_srai_epi32::<16>(_mm_unpackhi_epi16(v, v)));
        }
        if C == 8 {
            store_f32s::<4>(means4_sse2(lo, r), &mut o[..16]);
            store_f32s::<4>(means4_sse2(hi, r), &mut o[16..]);
        } else {
            let s = fold4_i32::<C>(_mm_add_epi32(lo, hi));
            store_f32s::<C>(means4_sse2(s, r), o);
        }
    }
}

/// The first `b.len()` (at most 16) bytes of a vector, the rest zero.
#[inline(always)]
fn load_part(b: &[u8]) -> __m128i {
    if b.len() == 16 {
        return load128(b);
    }
    let mut a = [0u8; 16];
    a[..b.len()].copy_from_slice(b);
    load128(&a)
}

/// Stores the first `d.len()` (at most 16) bytes of `v` into `d`.
#[inline(always)]
fn store_part(v: __m128i, d: &mut [u8]) {
    let mut a = [0u8; 16];
    // SAFETY: `a` is 16 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm_storeu_si128(a.as_mut_ptr().cast(), v) };
    let n = d.len();
    d.copy_from_slice(&a[..n]);
}

/// Folds the lanes of `mn` and `mx` (lane `j` holds sub-channel `j % C`, `C` divides 8) to one
/// per sub-channel in vector registers, and stores them as `C` (min, max) pairs: `4·C` bytes.
#[inline]
#[target_feature(enable = "sse2")]
fn store_extremes<const C: usize>(mut mn: __m128i, mut mx: __m128i, o: &mut [u8]) {
    if C <= 4 {
        mn = _mm_min_epi16(mn, _mm_shuffle_epi32::<0b01_00_11_10>(mn));
        mx = _mm_max_epi16(mx, _mm_shuffle_epi32::<0b01_00_11_10>(mx));
    }
    if C <= 2 {
        mn = _mm_min_epi16(mn, _mm_shuffle_epi32::<0b10_11_00_01>(mn));
        mx = _mm_max_epi16(mx, _mm_shuffle_epi32::<0b10_11_00_01>(mx));
    }
    if C == 1 {
        mn = _mm_min_epi16(mn, _mm_shufflelo_epi16::<0b10_11_00_01>(mn));
        mx = _mm_max_epi16(mx, _mm_shufflelo_epi16::<0b10_11_00_01>(mx));
    }
    // Lanes 0..4 (0..8) now hold sub-channels 0..4 (0..8): interleaving gives the pairs.
    store_part(_mm_unpacklo_epi16(mn, mx), &mut o[..16.min(4 * C)]);
    if C == 8 {
        store_part(_mm_unpackhi_epi16(mn, mx), &mut o[16..32]);
    }
}

/// Per-channel window extremes on 16 `i16` lanes (`C` divides 8, so lanes `j` and `j + 8`
/// hold the same sub-channel). A window that is not whole vectors ends with a vector
/// overlapping the previous one, harmless for min and max.
#[target_feature(enable = "avx2")]
pub(super) fn minmax_windows_avx2<const C: usize>(input: &[u8], ratio: usize, out: &mut [u8]) {
    let wb = 2 * C * ratio;
    if wb < 32 {
        return minmax_windows_sse2::<C>(input, ratio, out);
    }
    for (w, o) in input.chunks_exact(wb).zip(out.chunks_exact_mut(4 * C)) {
        let first = load256(&w[..32]);
        let (mut mn, mut mx) = (first, first);
        let mut blocks = w[32..].chunks_exact(32);
        for b in &mut blocks {
            let v = load256(b);
            mn = _mm256_min_epi16(mn, v);
            mx = _mm256_max_epi16(mx, v);
        }
        if !blocks.remainder().is_empty() {
            // Starts at a multiple of 16 samples before the end: still sub-channel 0.
            let v = load256(&w[wb - 32..]);
            mn = _mm256_min_epi16(mn, v);
            mx = _mm256_max_epi16(mx, v);
        }
        let mn = _mm_min_epi16(
            _mm256_castsi256_si128(mn),
            _mm256_extracti128_si256::<1>(mn),
        );
        let mx = _mm_max_epi16(
            _mm256_castsi256_si128(mx),
            _mm256_extracti128_si256::<1>(mx),
        );
        store_extremes::<C>(mn, mx, o);
    }
}

/// Per-channel window extremes on 8 `i16` lanes, overlapping the last vector as above.
#[target_feature(enable = "sse2")]
pub(super) fn minmax_windows_sse2<const C: usize>(input: &[u8], ratio: usize, out: &mut [u8]) {
    let wb = 2 * C * ratio;
    for (w, o) in input.chunks_exact(wb).zip(out.chunks_exact_mut(4 * C)) {
        if wb < 16 {
            short_minmax::<C>(w, o);
            continue;
        }
        let first = load128(&w[..16]);
        let (mut mn, mut mx) = (first, first);
        let mut blocks = w[16..].chunks_exact(16);
        for b in &mut blocks {
            let v = load128(b);
            mn = _mm_min_epi16(mn, v);
            mx = _mm_max_epi16(mx, v);
        }
        if !blocks.remainder().is_empty() {
            let v = load128(&w[wb - 16..]);
            mn = _mm_min_epi16(mn, v);
            mx = _mm_max_epi16(mx, v);
        }
        store_extremes::<C>(mn, mx, o);
    }
}

/// The running extremes of `super::minmax_fold_i16` for `C` of 1, 2, 4 or 8 sub-channels:
/// the window's (min, max) pairs of sub-channels `4k..4k+4` sit in vector `k`; a frame's
/// samples `v` become the pairs `(v, v)`. `mn` takes the minimum of every lane and `mx` the
/// maximum; a finished window keeps the even (min) lanes of `mn` and the odd (max) lanes of
/// `mx`.
#[target_feature(enable = "sse2")]
pub(super) fn minmax_fold_sse2<const C: usize>(
    input: &[u8],
    pairs: bool,
    ratio: usize,
    count: &mut usize,
    acc: &mut [i16],
    out: &mut [u8],
) {
    let pb = 4 * C;
    let fb = if pairs { pb } else { 2 * C };
    let mut a = [0u8; 32];
    for (d, v) in a.chunks_exact_mut(2).zip(acc.iter()) {
        d.copy_from_slice(&v.to_le_bytes());
    }
    let lo_bytes = 16.min(pb);
    let (mut mn0, mut mn1) = (load_part(&a[..lo_bytes]), load128(&a[16..]));
    let (mut mx0, mut mx1) = (mn0, mn1);
    let evens = _mm_set1_epi32(0xffff);
    let (top, bottom) = (_mm_set1_epi16(i16::MAX), _mm_set1_epi16(i16::MIN));
    let mut windows = out.chunks_exact_mut(pb);
    let mut n = *count;
    for f in input.chunks_exact(fb) {
        let (p0, p1) = if pairs {
            (
                load_part(&f[..lo_bytes]),
                if C == 8 {
                    load128(&f[16..])
                } else {
                    p1_unused()
                },
            )
        } else {
            let v = load_part(&f[..2 * C]);
            (_mm_unpacklo_epi16(v, v), _mm_unpackhi_epi16(v, v))
        };
        mn0 = _mm_min_epi16(mn0, p0);
        mx0 = _mm_max_epi16(mx0, p0);
        if C == 8 {
            mn1 = _mm_min_epi16(mn1, p1);
            mx1 = _mm_max_epi16(mx1, p1);
        }
        n += 1;
        if n == ratio {
            n = 0;
            let o = windows.next().expect("out holds every completed window");
            let r0 = _mm_or_si128(_mm_and_si128(evens, mn0), _mm_andnot_si128(evens, mx0));
            store_part(r0, &mut o[..lo_bytes]);
            if C == 8 {
                let r1 = _mm_or_si128(_mm_and_si128(evens, mn1), _mm_andnot_si128(evens, mx1));
                store_part(r1, &mut o[16..]);
            }
            (mn0, mn1, mx0, mx1) = (top, top, bottom, bottom);
        }
    }
    *count = n;
    let r0 = _mm_or_si128(_mm_and_si128(evens, mn0), _mm_andnot_si128(evens, mx0));
    let r1 = _mm_or_si128(_mm_and_si128(evens, mn1), _mm_andnot_si128(evens, mx1));
    store_part(r0, &mut a[..16]);
    store_part(r1, &mut a[16..]);
    for (v, b) in acc.iter_mut().zip(a.chunks_exact(2)) {
        *v = i16::from_le_bytes([b[0], b[1]]);
    }
}

/// The second vector of a frame of pairs when there is none (fewer than 8 sub-channels).
#[inline]
#[target_feature(enable = "sse2")]
fn p1_unused() -> __m128i {
    _mm_setzero_si128()
}

#[inline]
#[target_feature(enable = "avx2")]
fn load256_ps(a: &[f32]) -> __m256 {
    let a: &[f32; 8] = a.try_into().expect("8-value block");
    // SAFETY: `a` is 8 readable f32; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(a.as_ptr()) }
}

#[inline(always)]
fn load128_ps(a: &[f32]) -> __m128 {
    let a: &[f32; 4] = a.try_into().expect("4-value block");
    // SAFETY: `a` is 4 readable f32; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_ps(a.as_ptr()) }
}

#[inline(always)]
fn hsum128(v: __m128) -> f32 {
    let mut a = [0f32; 4];
    // SAFETY: `a` is 4 writable f32; `storeu` has no alignment requirement.
    unsafe { _mm_storeu_ps(a.as_mut_ptr(), v) };
    (a[0] + a[1]) + (a[2] + a[3])
}

/// Dot product (equal lengths), 4 × 8 lanes of fused multiply-adds.
#[target_feature(enable = "avx2,fma")]
pub(super) fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let (mut ca, mut cb) = (a.chunks_exact(32), b.chunks_exact(32));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for (k, s) in acc.iter_mut().enumerate() {
            let r = 8 * k..8 * k + 8;
            *s = _mm256_fmadd_ps(load256_ps(&x[r.clone()]), load256_ps(&y[r]), *s);
        }
    }
    let (mut ra, mut rb) = (
        ca.remainder().chunks_exact(8),
        cb.remainder().chunks_exact(8),
    );
    for (x, y) in (&mut ra).zip(&mut rb) {
        acc[0] = _mm256_fmadd_ps(load256_ps(x), load256_ps(y), acc[0]);
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
    let mut t = hsum128(s);
    for (x, y) in ra.remainder().iter().zip(rb.remainder()) {
        t = x.mul_add(*y, t);
    }
    t
}

/// Dot product (equal lengths), 4 × 4 lanes.
#[target_feature(enable = "sse2")]
pub(super) fn dot_sse2(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [_mm_setzero_ps(); 4];
    let (mut ca, mut cb) = (a.chunks_exact(16), b.chunks_exact(16));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for (k, s) in acc.iter_mut().enumerate() {
            let r = 4 * k..4 * k + 4;
            *s = _mm_add_ps(*s, _mm_mul_ps(load128_ps(&x[r.clone()]), load128_ps(&y[r])));
        }
    }
    let (mut ra, mut rb) = (
        ca.remainder().chunks_exact(4),
        cb.remainder().chunks_exact(4),
    );
    for (x, y) in (&mut ra).zip(&mut rb) {
        acc[0] = _mm_add_ps(acc[0], _mm_mul_ps(load128_ps(x), load128_ps(y)));
    }
    let s = _mm_add_ps(_mm_add_ps(acc[0], acc[1]), _mm_add_ps(acc[2], acc[3]));
    let mut t = hsum128(s);
    for (x, y) in ra.remainder().iter().zip(rb.remainder()) {
        t += x * y;
    }
    t
}

/// Interleaved dot products (see `super::dot_lanes_f32`), 4 × 8 lanes of fused multiply-adds;
/// every vector starts at a multiple of 8, so lane `j` is sub-channel `j % C`.
#[target_feature(enable = "avx2,fma")]
pub(super) fn dot_lanes_avx2<const C: usize>(a: &[f32], b: &[f32], out: &mut [f32]) {
    let mut acc = [_mm256_setzero_ps(); 4];
    let (mut ca, mut cb) = (a.chunks_exact(32), b.chunks_exact(32));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for (k, s) in acc.iter_mut().enumerate() {
            let r = 8 * k..8 * k + 8;
            *s = _mm256_fmadd_ps(load256_ps(&x[r.clone()]), load256_ps(&y[r]), *s);
        }
    }
    let (mut ra, mut rb) = (
        ca.remainder().chunks_exact(8),
        cb.remainder().chunks_exact(8),
    );
    for (k, (x, y)) in (&mut ra).zip(&mut rb).enumerate() {
        acc[k] = _mm256_fmadd_ps(load256_ps(x), load256_ps(y), acc[k]);
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` is 8 writable f32; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
    fold_lanes::<C>(lanes, ra.remainder(), rb.remainder(), out);
}

/// Interleaved dot products on 4-lane vectors taken in pairs: `lo` holds the lanes at offsets
/// 0..4 of every 8, `hi` those at 4..8, so lane `j` of the pair is sub-channel `j % C`.
#[target_feature(enable = "sse2")]
pub(super) fn dot_lanes_sse2<const C: usize>(a: &[f32], b: &[f32], out: &mut [f32]) {
    let mut acc = [_mm_setzero_ps(); 4];
    let (mut ca, mut cb) = (a.chunks_exact(16), b.chunks_exact(16));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for (k, s) in acc.iter_mut().enumerate() {
            let r = 4 * k..4 * k + 4;
            *s = _mm_add_ps(*s, _mm_mul_ps(load128_ps(&x[r.clone()]), load128_ps(&y[r])));
        }
    }
    let (mut ra, mut rb) = (
        ca.remainder().chunks_exact(8),
        cb.remainder().chunks_exact(8),
    );
    for (x, y) in (&mut ra).zip(&mut rb) {
        acc[0] = _mm_add_ps(acc[0], _mm_mul_ps(load128_ps(&x[..4]), load128_ps(&y[..4])));
        acc[1] = _mm_add_ps(acc[1], _mm_mul_ps(load128_ps(&x[4..]), load128_ps(&y[4..])));
    }
    let (lo, hi) = (_mm_add_ps(acc[0], acc[2]), _mm_add_ps(acc[1], acc[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` is 8 writable f32; `storeu` has no alignment requirement.
    unsafe {
        _mm_storeu_ps(lanes.as_mut_ptr(), lo);
        _mm_storeu_ps(lanes.as_mut_ptr().add(4), hi);
    }
    fold_lanes::<C>(lanes, ra.remainder(), rb.remainder(), out);
}
