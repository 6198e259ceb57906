//! NEON kernels (aarch64, where NEON is always present; the kernels still carry
//! `#[target_feature(enable = "neon")]` so the intrinsics are safe to call inside them). Loads
//! take fixed-size array references, so they are in bounds by type.

use super::{fold_lanes, fold_sum, short_minmax, tail_sum};
use std::arch::aarch64::*;

#[inline(always)]
fn load_s16(b: &[u8]) -> int16x8_t {
    let b: &[u8; 16] = b.try_into().expect("16-byte block");
    // SAFETY: `b` is 16 readable bytes; `vld1q` has no alignment requirement beyond the
    // element's (bytes here); aarch64 is little-endian, as the samples are.
    unsafe { vreinterpretq_s16_u8(vld1q_u8(b.as_ptr())) }
}

#[inline(always)]
fn store_s32(v: int32x4_t) -> [i32; 4] {
    let mut a = [0i32; 4];
    // SAFETY: `a` is 4 writable i32.
    unsafe { vst1q_s32(a.as_mut_ptr(), v) };
    a
}

/// The first `b.len()` (at most 16) bytes of a vector, the rest zero.
#[inline(always)]
fn load_part(b: &[u8]) -> int16x8_t {
    if b.len() == 16 {
        return load_s16(b);
    }
    let mut a = [0u8; 16];
    a[..b.len()].copy_from_slice(b);
    load_s16(&a)
}

/// Stores the first `d.len()` (at most 16) bytes of `v` into `d`.
#[inline(always)]
fn store_part(v: int16x8_t, d: &mut [u8]) {
    let mut a = [0u8; 16];
    // SAFETY: `a` is 16 writable bytes.
    unsafe { vst1q_u8(a.as_mut_ptr(), vreinterpretq_u8_s16(v)) };
    let n = d.len();
    d.copy_from_slice(&a[..n]);
}

/// Folds the lanes of `mn` and `mx` (lane `j` holds sub-channel `j % C`, `C` divides 8) to one
/// per sub-channel in vector registers, and stores them as `C` (min, max) pairs: `4·C` bytes.
#[inline]
#[target_feature(enable = "neon")]
fn store_extremes<const C: usize>(mut mn: int16x8_t, mut mx: int16x8_t, o: &mut [u8]) {
    if C <= 4 {
        mn = vminq_s16(mn, vextq_s16::<4>(mn, mn));
        mx = vmaxq_s16(mx, vextq_s16::<4>(mx, mx));
    }
    if C <= 2 {
        mn = vminq_s16(mn, vextq_s16::<2>(mn, mn));
        mx = vmaxq_s16(mx, vextq_s16::<2>(mx, mx));
    }
    if C == 1 {
        mn = vminq_s16(mn, vextq_s16::<1>(mn, mn));
        mx = vmaxq_s16(mx, vextq_s16::<1>(mx, mx));
    }
    // Lanes 0..4 (0..8) now hold sub-channels 0..4 (0..8): interleaving gives the pairs.
    store_part(vzip1q_s16(mn, mx), &mut o[..16.min(4 * C)]);
    if C == 8 {
        store_part(vzip2q_s16(mn, mx), &mut o[16..32]);
    }
}

/// Per-channel window sums: lanes 0..4 widen into `lo`, 4..8 into `hi`.
#[target_feature(enable = "neon")]
pub(super) fn sum_windows<const C: usize>(input: &[u8], ratio: usize, out: &mut [i32]) {
    for (w, o) in input
        .chunks_exact(2 * C * ratio)
        .zip(out.chunks_exact_mut(C))
    {
        let mut lo = vdupq_n_s32(0);
        let mut hi = vdupq_n_s32(0);
        let mut blocks = w.chunks_exact(16);
        for b in &mut blocks {
            let v = load_s16(b);
            lo = vaddw_s16(lo, vget_low_s16(v));
            hi = vaddw_high_s16(hi, v);
        }
        let (l, h) = (store_s32(lo), store_s32(hi));
        let lanes = [l[0], l[1], l[2], l[3], h[0], h[1], h[2], h[3]];
        let mut s = fold_sum::<8, C>(lanes);
        tail_sum(&mut s, blocks.remainder());
        o.copy_from_slice(&s);
    }
}

/// Window means of `i16` samples straight to `f32` bytes: the sums as in [`sum_windows`],
/// folded to one lane per sub-channel, converted to `f64`, divided by `ratio` and rounded to
/// `f32` in vector lanes (each step exact or correctly rounded, as the scalar path).
#[target_feature(enable = "neon")]
pub(super) fn mean_windows<const C: usize>(input: &[u8], ratio: usize, out: &mut [u8]) {
    let r = vdupq_n_f64(ratio as f64);
    let means = |s: int32x4_t| -> [f32; 4] {
        let lo = vdivq_f64(vcvtq_f64_s64(vmovl_s32(vget_low_s32(s))), r);
        let hi = vdivq_f64(vcvtq_f64_s64(vmovl_high_s32(s)), r);
        let mut m = [0f32; 4];
        // SAFETY: `m` is 4 writable f32.
        unsafe {
            vst1q_f32(
                m.as_mut_ptr(),
                vcombine_f32(vcvt_f32_f64(lo), vcvt_f32_f64(hi)),
            )
        };
        m
    };
    for (w, o) in input
        .chunks_exact(2 * C * ratio)
        .zip(out.chunks_exact_mut(4 * C))
    {
        let mut lo = vdupq_n_s32(0);
        let mut hi = vdupq_n_s32(0);
        let mut blocks = w.chunks_exact(16);
        for b in &mut blocks {
            let v = load_s16(b);
            lo = vaddw_s16(lo, vget_low_s16(v));
            hi = vaddw_high_s16(hi, v);
        }
        if !blocks.remainder().is_empty() {
            // Starts on sub-channel 0; the zero padding adds nothing.
            let v = load_part(blocks.remainder());
            lo = vaddw_s16(lo, vget_low_s16(v));
            hi = vaddw_high_s16(hi, v);
        }
        let m = if C == 8 {
            let (a, b) = (means(lo), means(hi));
            [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
        } else {
            let mut s = vaddq_s32(lo, hi);
            if C <= 2 {
                s = vaddq_s32(s, vextq_s32::<2>(s, s));
            }
            if C == 1 {
                s = vaddq_s32(s, vextq_s32::<1>(s, s));
            }
            let a = means(s);
            [a[0], a[1], a[2], a[3], 0.0, 0.0, 0.0, 0.0]
        };
        for (d, v) in o.chunks_exact_mut(4).zip(m) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Per-channel window extremes on 8 lanes, the last vector overlapping when the window is not
/// whole vectors (harmless for min and max).
#[target_feature(enable = "neon")]
pub(super) fn minmax_windows<const C: usize>(input: &[u8], ratio: usize, out: &mut [u8]) {
    let wb = 2 * C * ratio;
    for (w, o) in input.chunks_exact(wb).zip(out.chunks_exact_mut(4 * C)) {
        if wb < 16 {
            short_minmax::<C>(w, o);
            continue;
        }
        let first = load_s16(&w[..16]);
        let (mut mn, mut mx) = (first, first);
        let mut blocks = w[16..].chunks_exact(16);
        for b in &mut blocks {
            let v = load_s16(b);
            mn = vminq_s16(mn, v);
            mx = vmaxq_s16(mx, v);
        }
        if !blocks.remainder().is_empty() {
            let v = load_s16(&w[wb - 16..]);
            mn = vminq_s16(mn, v);
            mx = vmaxq_s16(mx, v);
        }
        store_extremes::<C>(mn, mx, o);
    }
}

/// The running extremes of `super::minmax_fold_i16` for `C` of 1, 2, 4 or 8 sub-channels, as
/// on x86-64: the pairs of sub-channels `4k..4k+4` in vector `k`, a sample `v` as the pair
/// `(v, v)`, the minimum of every lane in `mn` and the maximum in `mx`; a finished window keeps
/// the even lanes of `mn` and the odd lanes of `mx`.
#[target_feature(enable = "neon")]
pub(super) fn minmax_fold<const C: usize>(
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
    let (mut mn0, mut mn1) = (load_part(&a[..lo_bytes]), load_s16(&a[16..]));
    let (mut mx0, mut mx1) = (mn0, mn1);
    let evens = vreinterpretq_u16_u32(vdupq_n_u32(0xffff));
    let (top, bottom) = (vdupq_n_s16(i16::MAX), vdupq_n_s16(i16::MIN));
    let mut windows = out.chunks_exact_mut(pb);
    let mut n = *count;
    for f in input.chunks_exact(fb) {
        let (p0, p1) = if pairs {
            (
                load_part(&f[..lo_bytes]),
                if C == 8 { load_s16(&f[16..]) } else { top },
            )
        } else {
            let v = load_part(&f[..2 * C]);
            (vzip1q_s16(v, v), vzip2q_s16(v, v))
        };
        mn0 = vminq_s16(mn0, p0);
        mx0 = vmaxq_s16(mx0, p0);
        if C == 8 {
            mn1 = vminq_s16(mn1, p1);
            mx1 = vmaxq_s16(mx1, p1);
        }
        n += 1;
        if n == ratio {
            n = 0;
            let o = windows.next().expect("out holds every completed window");
            store_part(vbslq_s16(evens, mn0, mx0), &mut o[..lo_bytes]);
            if C == 8 {
                store_part(vbslq_s16(evens, mn1, mx1), &mut o[16..]);
            }
            (mn0, mn1, mx0, mx1) = (top, top, bottom, bottom);
        }
    }
    *count = n;
    store_part(vbslq_s16(evens, mn0, mx0), &mut a[..16]);
    store_part(vbslq_s16(evens, mn1, mx1), &mut a[16..]);
    for (v, b) in acc.iter_mut().zip(a.chunks_exact(2)) {
        *v = i16::from_le_bytes([b[0], b[1]]);
    }
}

#[inline(always)]
fn load_f32(a: &[f32]) -> float32x4_t {
    let a: &[f32; 4] = a.try_into().expect("4-value block");
    // SAFETY: `a` is 4 readable f32.
    unsafe { vld1q_f32(a.as_ptr()) }
}

/// Dot product (equal lengths), 4 × 4 lanes of fused multiply-adds.
#[target_feature(enable = "neon")]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 4];
    let (mut ca, mut cb) = (a.chunks_exact(16), b.chunks_exact(16));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for (k, s) in acc.iter_mut().enumerate() {
            let r = 4 * k..4 * k + 4;
            *s = vfmaq_f32(*s, load_f32(&x[r.clone()]), load_f32(&y[r]));
        }
    }
    let (mut ra, mut rb) = (
        ca.remainder().chunks_exact(4),
        cb.remainder().chunks_exact(4),
    );
    for (x, y) in (&mut ra).zip(&mut rb) {
        acc[0] = vfmaq_f32(acc[0], load_f32(x), load_f32(y));
    }
    let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    let mut t = vaddvq_f32(s);
    for (x, y) in ra.remainder().iter().zip(rb.remainder()) {
        t = x.mul_add(*y, t);
    }
    t
}

/// Interleaved dot products (see `super::dot_lanes_f32`) on 4-lane vectors taken in pairs:
/// `lo` holds the lanes at offsets 0..4 of every 8, `hi` those at 4..8.
#[target_feature(enable = "neon")]
pub(super) fn dot_lanes<const C: usize>(a: &[f32], b: &[f32], out: &mut [f32]) {
    let mut acc = [vdupq_n_f32(0.0); 4];
    let (mut ca, mut cb) = (a.chunks_exact(16), b.chunks_exact(16));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for (k, s) in acc.iter_mut().enumerate() {
            let r = 4 * k..4 * k + 4;
            *s = vfmaq_f32(*s, load_f32(&x[r.clone()]), load_f32(&y[r]));
        }
    }
    let (mut ra, mut rb) = (
        ca.remainder().chunks_exact(8),
        cb.remainder().chunks_exact(8),
    );
    for (x, y) in (&mut ra).zip(&mut rb) {
        acc[0] = vfmaq_f32(acc[0], load_f32(&x[..4]), load_f32(&y[..4]));
        acc[1] = vfmaq_f32(acc[1], load_f32(&x[4..]), load_f32(&y[4..]));
    }
    let (lo, hi) = (vaddq_f32(acc[0], acc[2]), vaddq_f32(acc[1], acc[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` is 8 writable f32.
    unsafe {
        vst1q_f32(lanes.as_mut_ptr(), lo);
        vst1q_f32(lanes.as_mut_ptr().add(4), hi);
    }
    fold_lanes::<C>(lanes, ra.remainder(), rb.remainder(), out);
}
