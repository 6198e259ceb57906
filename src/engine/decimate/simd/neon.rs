//! NEON kernels (aarch64, where NEON is always present; the kernels still carry
//! `#[target_feature(enable = "neon")]` so the intrinsics are safe to call inside them). Loads
//! take fixed-size array references, so they are in bounds by type.

use super::{fold_minmax, fold_sum, tail_sum};
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

#[inline(always)]
fn store_s16(v: int16x8_t) -> [i16; 8] {
    let mut a = [0i16; 8];
    // SAFETY: `a` is 8 writable i16.
    unsafe { vst1q_s16(a.as_mut_ptr(), v) };
    a
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

/// Per-channel window extremes on 8 lanes, the last vector overlapping when the window is not
/// whole vectors (harmless for min and max).
#[target_feature(enable = "neon")]
pub(super) fn minmax_windows<const C: usize>(input: &[u8], ratio: usize, out: &mut [i16]) {
    let wb = 2 * C * ratio;
    for (w, o) in input.chunks_exact(wb).zip(out.chunks_exact_mut(2 * C)) {
        if wb < 16 {
            fold_minmax::<8, C>([i16::MAX; 8], [i16::MIN; 8], w, o);
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
        fold_minmax::<8, C>(store_s16(mn), store_s16(mx), &[], o);
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
