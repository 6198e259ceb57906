//! NEON kernels of little-endian `f32` samples: running `mean` and `minmax` windows (see
//! `super::float`), each sub-channel in its own lane in arrival order, as on x86-64. Loads take
//! fixed-size array references, so they are in bounds by type; aarch64 is little-endian, as
//! the samples are.

use std::arch::aarch64::*;

#[inline(always)]
fn load2(b: &[u8]) -> float32x2_t {
    let b: &[u8; 8] = b.try_into().expect("8-byte block");
    // SAFETY: `b` is 8 readable bytes; `vld1` needs only the element's alignment (bytes).
    unsafe { vreinterpret_f32_u8(vld1_u8(b.as_ptr())) }
}

#[inline(always)]
fn load4(b: &[u8]) -> float32x4_t {
    let b: &[u8; 16] = b.try_into().expect("16-byte block");
    // SAFETY: `b` is 16 readable bytes.
    unsafe { vreinterpretq_f32_u8(vld1q_u8(b.as_ptr())) }
}

#[inline(always)]
fn store2(v: float32x2_t, d: &mut [u8]) {
    let d: &mut [u8; 8] = d.try_into().expect("8-byte block");
    // SAFETY: `d` is 8 writable bytes.
    unsafe { vst1_u8(d.as_mut_ptr(), vreinterpret_u8_f32(v)) };
}

#[inline(always)]
fn store4(v: float32x4_t, d: &mut [u8]) {
    let d: &mut [u8; 16] = d.try_into().expect("16-byte block");
    // SAFETY: `d` is 16 writable bytes.
    unsafe { vst1q_u8(d.as_mut_ptr(), vreinterpretq_u8_f32(v)) };
}

/// Running `mean` of `C` (2, 4 or 8) sub-channels on 2-lane `f64` vectors, lane `j` of vector
/// `k` summing sub-channel `2k + j` in arrival order.
#[target_feature(enable = "neon")]
pub(super) fn mean_fold<const C: usize>(
    input: &[u8],
    ratio: usize,
    count: &mut usize,
    sums: &mut [f64],
    out: &mut [u8],
) {
    let r = vdupq_n_f64(ratio as f64);
    let zero = vdupq_n_f64(0.0);
    let mut acc = [zero; 4];
    for (k, a) in acc.iter_mut().enumerate().take(C / 2) {
        let s: &[f64; 2] = sums[2 * k..2 * k + 2].try_into().expect("2 sums");
        // SAFETY: `s` is 2 readable f64.
        *a = unsafe { vld1q_f64(s.as_ptr()) };
    }
    let mut frames = input.chunks_exact(4 * C);
    let mut windows = out.chunks_exact_mut(4 * C);
    let mut n = *count;
    loop {
        let before = frames.len();
        for f in frames.by_ref().take(ratio - n) {
            for (k, a) in acc.iter_mut().enumerate().take(C / 2) {
                *a = vaddq_f64(*a, vcvt_f64_f32(load2(&f[8 * k..8 * k + 8])));
            }
        }
        n += before - frames.len();
        if n < ratio {
            break;
        }
        n = 0;
        let o = windows.next().expect("out holds every completed window");
        for (k, a) in acc.iter_mut().enumerate().take(C / 2) {
            store2(vcvt_f32_f64(vdivq_f64(*a, r)), &mut o[8 * k..8 * k + 8]);
            *a = zero;
        }
    }
    *count = n;
    for (k, a) in acc.iter().enumerate().take(C / 2) {
        let s: &mut [f64; 2] = (&mut sums[2 * k..2 * k + 2]).try_into().expect("2 sums");
        // SAFETY: `s` is 2 writable f64.
        unsafe { vst1q_f64(s.as_mut_ptr(), *a) };
    }
}

/// The (min, max) pairs of up to 4 sub-channels (16 or 32 bytes) split into minima and
/// maxima.
#[inline]
#[target_feature(enable = "neon")]
fn split_pairs(p: &[u8]) -> (float32x4_t, float32x4_t) {
    let (a, b) = if p.len() == 32 {
        (load4(&p[..16]), load4(&p[16..]))
    } else {
        let a = load4(p);
        (a, a)
    };
    (vuzp1q_f32(a, b), vuzp2q_f32(a, b))
}

/// Stores minima and maxima of up to 4 sub-channels as (min, max) pairs (16 or 32 bytes).
#[inline]
#[target_feature(enable = "neon")]
fn store_pairs(mn: float32x4_t, mx: float32x4_t, d: &mut [u8]) {
    store4(vzip1q_f32(mn, mx), &mut d[..16]);
    if d.len() == 32 {
        store4(vzip2q_f32(mn, mx), &mut d[16..]);
    }
}

/// Running `minmax` of `C` (2, 4 or 8) sub-channels, as the SSE2 kernel: `mn = v < mn ? v :
/// mn` by compare and select (NEON's `fmin` would propagate NaN and order the zeros), a window
/// still at (+inf, −inf) stores NaN.
#[target_feature(enable = "neon")]
pub(super) fn minmax_fold<const C: usize>(
    input: &[u8],
    pairs: bool,
    ratio: usize,
    count: &mut usize,
    acc: &mut [f32],
    out: &mut [u8],
) {
    let groups = C.div_ceil(4);
    let gb = 4 * C.min(4);
    let mut a = [0u8; 64];
    for (d, v) in a.chunks_exact_mut(4).zip(acc.iter()) {
        d.copy_from_slice(&v.to_le_bytes());
    }
    let (top, bottom) = (vdupq_n_f32(f32::INFINITY), vdupq_n_f32(f32::NEG_INFINITY));
    let nan = vdupq_n_f32(f32::NAN);
    let (mut mn, mut mx) = ([top; 2], [bottom; 2]);
    for k in 0..groups {
        (mn[k], mx[k]) = split_pairs(&a[2 * gb * k..2 * gb * (k + 1)]);
    }
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
                        vcombine_f32(load2(f), vdup_n_f32(0.0))
                    } else {
                        load4(&f[16 * k..16 * k + 16])
                    };
                    (v, v)
                };
                mn[k] = vbslq_f32(vcltq_f32(lo, mn[k]), lo, mn[k]);
                mx[k] = vbslq_f32(vcgtq_f32(hi, mx[k]), hi, mx[k]);
            }
        }
        n += before - frames.len();
        if n < ratio {
            break;
        }
        n = 0;
        let o = windows.next().expect("out holds every completed window");
        for k in 0..groups {
            let none = vandq_u32(vceqq_f32(mn[k], top), vceqq_f32(mx[k], bottom));
            let lo = vbslq_f32(none, nan, mn[k]);
            let hi = vbslq_f32(none, nan, mx[k]);
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
