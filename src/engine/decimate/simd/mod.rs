//! The decimator's explicit SIMD kernels, behind safe functions taking slices: whole-window
//! sums and extremes of little-endian `i16` samples (`mean`/`minmax` level 0) and the `f32`
//! dot product of the polyphase FIR.
//!
//! The `f32` kernels of `mean` and `minmax` are in `float` (re-exported here).
//!
//! Owns: choosing the instruction set once ([`Isa::detect`]: SSE2 or AVX2+FMA on x86-64 by
//! `is_x86_feature_detected!`, NEON on aarch64, where it is always present), the kernels of
//! each, and the scalar kernels that are both the fallback and the reference the SIMD ones are
//! property-tested against (`tests.rs` of the decimator).
//!
//! Must never: do I/O, allocate in a kernel, or hand out an [`Isa`] the CPU does not have.
//! [`self_check`] runs the detected set against the scalar kernels for `ringrelay probe`, so
//! a device (the arm64 smoke test) checks the path it will run.
//!
//! # Why `unsafe` lives here
//!
//! The engine has no `unsafe`; this module is the one exception outside the driver and the
//! shared-memory mapping, because explicit SIMD needs it in exactly two places: calling a
//! `#[target_feature]` function (sound only when the feature is present) and the unaligned
//! vector loads and stores (sound only for in-bounds memory). The arithmetic itself uses
//! the safe intrinsics inside `#[target_feature]` functions. An [`Isa`] can only be made by
//! [`Isa::detect`], [`Isa::available`] or [`Isa::SCALAR`], so the feature a dispatch relies on
//! has been detected; every load takes a fixed-size array reference, so it is in bounds by
//! type. Each `unsafe` block says which of the two it is.
//!
//! # Exactness
//!
//! The integer kernels are exact: the sum of at most 65,535 `i16` samples fits an `i32` lane
//! and every partial sum is an integer, so the result equals the `f64` sum in arrival order;
//! min and max are exact. The `f32` dot product adds in lanes (8 or 4 partial sums, then the
//! lanes), so it differs from the in-order scalar sum by rounding only (see the decimator's
//! module doc for the bound).

mod float;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
mod neon_f32;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_f32;

pub use float::{mean_fold_f32, mean_fold_f32_scalar, minmax_fold_f32, minmax_fold_f32_scalar};

/// An instruction set the running CPU has (only constructible by detection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isa(Kind);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Sse2,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "aarch64")]
    Neon,
}

/// Longest `mean` window the `i32` lanes sum exactly (65,535 × 32,768 < 2³¹).
pub const MAX_SUM_RATIO: usize = 65_535;

impl Isa {
    /// Plain Rust, on every target.
    pub const SCALAR: Isa = Isa(Kind::Scalar);

    /// The best instruction set of this CPU, detected on the first call and remembered.
    pub fn detect() -> Isa {
        static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| *Isa::available().last().expect("scalar is always available"))
    }

    /// Every instruction set this CPU has, scalar first, best last.
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::SCALAR];
        #[cfg(target_arch = "x86_64")]
        {
            // SSE2 is part of x86-64.
            v.push(Isa(Kind::Sse2));
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                v.push(Isa(Kind::Avx2));
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push(Isa(Kind::Neon));
        v
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            Kind::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kind::Sse2 => "sse2",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => "avx2",
            #[cfg(target_arch = "aarch64")]
            Kind::Neon => "neon",
        }
    }
}

/// For each window of `ratio` frames of `channels` little-endian `i16` samples in `input`
/// (whole windows only), the per-channel sums, `channels` values per window into `out`.
/// `ratio` is at most [`MAX_SUM_RATIO`]. The SIMD kernels serve 1, 2, 4 and 8 sub-channels
/// (lane `j` holds sub-channel `j % channels`); other counts run the scalar kernel.
pub fn sum_windows_i16(isa: Isa, input: &[u8], channels: usize, ratio: usize, out: &mut [i32]) {
    let wb = 2 * channels * ratio;
    assert!(ratio <= MAX_SUM_RATIO && input.len() % wb == 0);
    assert_eq!(out.len(), input.len() / wb * channels);
    // Only SIMD targets dispatch through it.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_macros)
    )]
    macro_rules! by_channels {
        ($m:ident :: $f:ident) => {
            match channels {
                1 => $m::$f::<1>(input, ratio, out),
                2 => $m::$f::<2>(input, ratio, out),
                4 => $m::$f::<4>(input, ratio, out),
                8 => $m::$f::<8>(input, ratio, out),
                _ => sum_windows_scalar(input, channels, ratio, out),
            }
        };
    }
    match isa.0 {
        Kind::Scalar => sum_windows_scalar(input, channels, ratio, out),
        // SAFETY (call of a target_feature function): an Isa of this kind exists only when
        // the CPU has the feature (SSE2 is part of x86-64).
        #[cfg(target_arch = "x86_64")]
        Kind::Sse2 => unsafe { by_channels!(x86::sum_windows_sse2) },
        // SAFETY: as above, AVX2 was detected.
        #[cfg(target_arch = "x86_64")]
        Kind::Avx2 => unsafe { by_channels!(x86::sum_windows_avx2) },
        // SAFETY (call of a target_feature function): NEON is part of aarch64.
        #[cfg(target_arch = "aarch64")]
        Kind::Neon => unsafe { by_channels!(neon::sum_windows) },
    }
}

/// For each window of `ratio` frames of `channels` little-endian `i16` samples in `input`
/// (whole windows only), the per-channel means as little-endian `f32`, `4·channels` bytes per
/// window, into `out`: `(f64::from(sum) / ratio as f64) as f32`, the sum exact in `i32` (so the
/// bytes of the `f64` path). `ratio` is at most [`MAX_SUM_RATIO`]. SIMD for 1, 2, 4 and 8
/// sub-channels, scalar otherwise.
pub fn mean_windows_i16(isa: Isa, input: &[u8], channels: usize, ratio: usize, out: &mut [u8]) {
    let wb = 2 * channels * ratio;
    assert!(wb > 0 && ratio <= MAX_SUM_RATIO && input.len() % wb == 0);
    assert_eq!(out.len(), input.len() / wb * 4 * channels);
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_macros)
    )]
    macro_rules! by_channels {
        ($m:ident :: $f:ident) => {
            match channels {
                1 => $m::$f::<1>(input, ratio, out),
                2 => $m::$f::<2>(input, ratio, out),
                4 => $m::$f::<4>(input, ratio, out),
                8 => $m::$f::<8>(input, ratio, out),
                _ => mean_windows_scalar(input, channels, ratio, out),
            }
        };
    }
    match isa.0 {
        Kind::Scalar => mean_windows_scalar(input, channels, ratio, out),
        // SAFETY (call of a target_feature function): SSE2 is part of x86-64.
        #[cfg(target_arch = "x86_64")]
        Kind::Sse2 => unsafe { by_channels!(x86::mean_windows_sse2) },
        // SAFETY: an Isa of this kind exists only when AVX2 was detected.
        #[cfg(target_arch = "x86_64")]
        Kind::Avx2 => unsafe { by_channels!(x86::mean_windows_avx2) },
        // SAFETY (call of a target_feature function): NEON is part of aarch64.
        #[cfg(target_arch = "aarch64")]
        Kind::Neon => unsafe { by_channels!(neon::mean_windows) },
    }
}

/// The scalar window means: the reference of the SIMD kernels (see [`mean_windows_i16`]).
pub fn mean_windows_scalar(input: &[u8], channels: usize, ratio: usize, out: &mut [u8]) {
    let r = ratio as f64;
    for (w, o) in input
        .chunks_exact(2 * channels * ratio)
        .zip(out.chunks_exact_mut(4 * channels))
    {
        for (c, d) in o.chunks_exact_mut(4).enumerate() {
            let s: i32 = w
                .chunks_exact(2 * channels)
                .map(|f| i32::from(i16::from_le_bytes([f[2 * c], f[2 * c + 1]])))
                .sum();
            d.copy_from_slice(&((f64::from(s) / r) as f32).to_le_bytes());
        }
    }
}

/// For each window of `ratio` frames of `channels` little-endian `i16` samples in `input`
/// (whole windows only), the per-channel (min, max) as little-endian `i16` pairs, `4·channels`
/// bytes per window, into `out` (the layout a `minmax` level stores, so no conversion follows).
pub fn minmax_windows_i16(isa: Isa, input: &[u8], channels: usize, ratio: usize, out: &mut [u8]) {
    let wb = 2 * channels * ratio;
    assert!(wb > 0 && input.len() % wb == 0);
    assert_eq!(out.len(), input.len() / wb * 4 * channels);
    // Only SIMD targets dispatch through it.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_macros)
    )]
    macro_rules! by_channels {
        ($m:ident :: $f:ident) => {
            match channels {
                1 => $m::$f::<1>(input, ratio, out),
                2 => $m::$f::<2>(input, ratio, out),
                4 => $m::$f::<4>(input, ratio, out),
                8 => $m::$f::<8>(input, ratio, out),
                _ => minmax_windows_scalar(input, channels, ratio, out),
            }
        };
    }
    match isa.0 {
        Kind::Scalar => minmax_windows_scalar(input, channels, ratio, out),
        // SAFETY (call of a target_feature function): SSE2 is part of x86-64.
        #[cfg(target_arch = "x86_64")]
        Kind::Sse2 => unsafe { by_channels!(x86::minmax_windows_sse2) },
        // SAFETY: an Isa of this kind exists only when AVX2 was detected.
        #[cfg(target_arch = "x86_64")]
        Kind::Avx2 => unsafe { by_channels!(x86::minmax_windows_avx2) },
        // SAFETY (call of a target_feature function): NEON is part of aarch64.
        #[cfg(target_arch = "aarch64")]
        Kind::Neon => unsafe { by_channels!(neon::minmax_windows) },
    }
}

/// Windows a [`minmax_fold_i16`] call completes: `(count + frames) / ratio`.
pub fn fold_windows(frames: usize, ratio: usize, count: usize) -> usize {
    (count + frames) / ratio
}

/// Folds the whole frames of `input` into a running `minmax` window of `ratio` frames, frame
/// by frame: frames of `channels` little-endian `i16` samples (`pairs == false`: level 0), or of
/// `channels` (min, max) pairs (`pairs == true`: the output of the level below). `count` frames
/// of the current window are already folded into `acc`, (min, max) per sub-channel, which is
/// `(i16::MAX, i16::MIN)` while `count` is 0. Each completed window's pairs go to `out` as
/// little-endian bytes, `4·channels` per window (`out.len()` must be exactly that times
/// [`fold_windows`]), and `acc` restarts. This serves the partial windows at either end of a
/// batch and every level above 0, where a window is a few frames and carries across calls.
#[allow(clippy::too_many_arguments)]
pub fn minmax_fold_i16(
    isa: Isa,
    input: &[u8],
    pairs: bool,
    channels: usize,
    ratio: usize,
    count: &mut usize,
    acc: &mut [i16],
    out: &mut [u8],
) {
    let fb = if pairs { 4 * channels } else { 2 * channels };
    assert!(ratio > 0 && *count < ratio && input.len() % fb == 0 && acc.len() == 2 * channels);
    assert_eq!(
        out.len(),
        fold_windows(input.len() / fb, ratio, *count) * 4 * channels
    );
    // Only SIMD targets dispatch through it.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_macros)
    )]
    macro_rules! by_channels {
        ($m:ident :: $f:ident) => {
            match channels {
                1 => $m::$f::<1>(input, pairs, ratio, count, acc, out),
                2 => $m::$f::<2>(input, pairs, ratio, count, acc, out),
                4 => $m::$f::<4>(input, pairs, ratio, count, acc, out),
                8 => $m::$f::<8>(input, pairs, ratio, count, acc, out),
                _ => minmax_fold_scalar(input, pairs, channels, ratio, count, acc, out),
            }
        };
    }
    match isa.0 {
        Kind::Scalar => minmax_fold_scalar(input, pairs, channels, ratio, count, acc, out),
        // SAFETY (call of a target_feature function): SSE2 is part of x86-64 (the fold works
        // on one frame at a time, so AVX2 has nothing to add).
        #[cfg(target_arch = "x86_64")]
        Kind::Sse2 | Kind::Avx2 => unsafe { by_channels!(x86::minmax_fold_sse2) },
        // SAFETY (call of a target_feature function): NEON is part of aarch64.
        #[cfg(target_arch = "aarch64")]
        Kind::Neon => unsafe { by_channels!(neon::minmax_fold) },
    }
}

/// `Σ a[k]·b[k]` in `f32` over the shorter length.
pub fn dot_f32(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    match isa.0 {
        Kind::Scalar => dot_scalar(a, b),
        // SAFETY (call of a target_feature function): SSE2 is part of x86-64.
        #[cfg(target_arch = "x86_64")]
        Kind::Sse2 => unsafe { x86::dot_sse2(a, b) },
        // SAFETY: an Isa of this kind exists only when AVX2 and FMA were detected.
        #[cfg(target_arch = "x86_64")]
        Kind::Avx2 => unsafe { x86::dot_avx2(a, b) },
        // SAFETY (call of a target_feature function): NEON is part of aarch64.
        #[cfg(target_arch = "aarch64")]
        Kind::Neon => unsafe { neon::dot(a, b) },
    }
}

/// Whether [`dot_lanes_f32`] serves `channels` sub-channels (it needs them to divide 8).
pub fn dot_lanes_serves(channels: usize) -> bool {
    matches!(channels, 1 | 2 | 4 | 8)
}

/// The dot products of interleaved sub-channels: `out[c] = Σ a[i]·b[i]` over the `i` with
/// `i % channels == c`, `channels` of 1, 2, 4 or 8 (`out.len()`), `a` and `b` of equal length, a
/// multiple of `channels`. The FIR runs it on an interleaved history and taps repeated per
/// sub-channel, so it never de-interleaves the input: each vector lane keeps one sub-channel.
pub fn dot_lanes_f32(isa: Isa, a: &[f32], b: &[f32], out: &mut [f32]) {
    let channels = out.len();
    assert!(dot_lanes_serves(channels) && a.len() == b.len() && a.len() % channels == 0);
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_macros)
    )]
    macro_rules! by_channels {
        ($m:ident :: $f:ident) => {
            match channels {
                1 => $m::$f::<1>(a, b, out),
                2 => $m::$f::<2>(a, b, out),
                4 => $m::$f::<4>(a, b, out),
                _ => $m::$f::<8>(a, b, out),
            }
        };
    }
    match isa.0 {
        Kind::Scalar => dot_lanes_scalar(a, b, out),
        // SAFETY (call of a target_feature function): SSE2 is part of x86-64.
        #[cfg(target_arch = "x86_64")]
        Kind::Sse2 => unsafe { by_channels!(x86::dot_lanes_sse2) },
        // SAFETY: an Isa of this kind exists only when AVX2 and FMA were detected.
        #[cfg(target_arch = "x86_64")]
        Kind::Avx2 => unsafe { by_channels!(x86::dot_lanes_avx2) },
        // SAFETY (call of a target_feature function): NEON is part of aarch64.
        #[cfg(target_arch = "aarch64")]
        Kind::Neon => unsafe { by_channels!(neon::dot_lanes) },
    }
}

/// The scalar interleaved dot products, each sub-channel in order: the reference of the SIMD
/// kernels.
pub fn dot_lanes_scalar(a: &[f32], b: &[f32], out: &mut [f32]) {
    let c = out.len();
    out.fill(0.0);
    for (x, y) in a.chunks_exact(c).zip(b.chunks_exact(c)) {
        for ((o, x), y) in out.iter_mut().zip(x).zip(y) {
            *o = x.mul_add(*y, *o);
        }
    }
}

/// Folds 8 lanes, lane `j` holding sub-channel `j % C`, into `out` (`C` values), then adds the
/// products of the tails `a`, `b` (starting on sub-channel 0).
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
#[inline(always)]
fn fold_lanes<const C: usize>(lanes: [f32; 8], a: &[f32], b: &[f32], out: &mut [f32]) {
    let mut s = [0f32; C];
    for (j, l) in lanes.iter().enumerate() {
        s[j % C] += l;
    }
    for (j, (x, y)) in a.iter().zip(b).enumerate() {
        s[j % C] = x.mul_add(*y, s[j % C]);
    }
    out.copy_from_slice(&s);
}

/// Runs every kernel of `isa` against the scalar one on pseudo-random `i16` samples (with the
/// extremes), for 1 to 16 sub-channels and window lengths around the vector widths; the dot
/// product against an `f64` sum within its rounding bound. The first difference, if any.
pub fn self_check(isa: Isa) -> Result<(), String> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let samples: Vec<u8> = (0..16 * 67 * 3)
        .flat_map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = match i % 97 {
                0 => i16::MIN,
                1 => i16::MAX,
                _ => x as i16,
            };
            v.to_le_bytes()
        })
        .collect();
    for channels in 1..=16 {
        for ratio in (1..=20).chain([31, 32, 33, 67]) {
            let wb = 2 * channels * ratio;
            let n = samples.len() / wb;
            let input = &samples[..n * wb];
            let (mut a, mut b) = (vec![0; n * channels], vec![0; n * channels]);
            sum_windows_scalar(input, channels, ratio, &mut a);
            sum_windows_i16(isa, input, channels, ratio, &mut b);
            if a != b {
                return Err(format!(
                    "{} sums differ: {channels} channels, ratio {ratio}",
                    isa.name()
                ));
            }
            let (mut a, mut b) = (vec![0; 4 * n * channels], vec![0; 4 * n * channels]);
            mean_windows_scalar(input, channels, ratio, &mut a);
            mean_windows_i16(isa, input, channels, ratio, &mut b);
            if a != b {
                return Err(format!(
                    "{} means differ: {channels} channels, ratio {ratio}",
                    isa.name()
                ));
            }
            let (mut a, mut b) = (vec![0; 4 * n * channels], vec![0; 4 * n * channels]);
            minmax_windows_scalar(input, channels, ratio, &mut a);
            minmax_windows_i16(isa, input, channels, ratio, &mut b);
            if a != b {
                return Err(format!(
                    "{} extremes differ: {channels} channels, ratio {ratio}",
                    isa.name()
                ));
            }
            for pairs in [false, true] {
                let fb = if pairs { 4 * channels } else { 2 * channels };
                let input = &samples[..samples.len() / fb * fb];
                let mut res = Vec::new();
                for i in [Isa::SCALAR, isa] {
                    let (mut count, mut acc) = (ratio / 2, vec![0i16; 2 * channels]);
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a = [-5, 7][c % 2];
                    }
                    let mut o =
                        vec![0; fold_windows(input.len() / fb, ratio, count) * 4 * channels];
                    minmax_fold_i16(
                        i, input, pairs, channels, ratio, &mut count, &mut acc, &mut o,
                    );
                    res.push((o, count, acc));
                }
                if res[0] != res[1] {
                    return Err(format!(
                        "{} running extremes differ: {channels} channels, ratio {ratio}, pairs {pairs}",
                        isa.name()
                    ));
                }
            }
        }
    }
    let mut special = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        f32::MAX,
        f32::MIN,
        f32::from_bits(0x7fa0_0001),
    ]
    .into_iter()
    .cycle();
    let floats: Vec<f32> = samples
        .chunks_exact(2)
        .enumerate()
        .map(|(i, b)| match i % 13 {
            0 => special.next().expect("cycle"),
            _ => f32::from(i16::from_le_bytes([b[0], b[1]])) / 64.0,
        })
        .collect();
    float::self_check_f32(isa, &floats)?;
    let f: Vec<f32> = samples
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    for len in (0..70).chain([201, 401, 1001]) {
        let (a, b) = (&f[..len], &f[len..2 * len]);
        let exact: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let mag: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) * f64::from(*y)).abs())
            .sum();
        let got = f64::from(dot_f32(isa, a, b));
        if (got - exact).abs() > (len as f64 + 1.0) * f64::from(f32::EPSILON) / 2.0 * mag {
            return Err(format!(
                "{} dot product of {len} off: {got} vs {exact}",
                isa.name()
            ));
        }
    }
    Ok(())
}

/// The scalar sums: the reference of the SIMD kernels.
pub fn sum_windows_scalar(input: &[u8], channels: usize, ratio: usize, out: &mut [i32]) {
    let wb = 2 * channels * ratio;
    for (w, o) in input.chunks_exact(wb).zip(out.chunks_exact_mut(channels)) {
        o.fill(0);
        for f in w.chunks_exact(2 * channels) {
            for (s, b) in o.iter_mut().zip(f.chunks_exact(2)) {
                *s += i32::from(i16::from_le_bytes([b[0], b[1]]));
            }
        }
    }
}

/// The scalar extremes: the reference of the SIMD kernels.
pub fn minmax_windows_scalar(input: &[u8], channels: usize, ratio: usize, out: &mut [u8]) {
    let wb = 2 * channels * ratio;
    for (w, o) in input
        .chunks_exact(wb)
        .zip(out.chunks_exact_mut(4 * channels))
    {
        let mut lo = vec![i16::MAX; channels];
        let mut hi = vec![i16::MIN; channels];
        for f in w.chunks_exact(2 * channels) {
            for (c, b) in f.chunks_exact(2).enumerate() {
                let v = i16::from_le_bytes([b[0], b[1]]);
                lo[c] = lo[c].min(v);
                hi[c] = hi[c].max(v);
            }
        }
        for (c, p) in o.chunks_exact_mut(4).enumerate() {
            p[..2].copy_from_slice(&lo[c].to_le_bytes());
            p[2..].copy_from_slice(&hi[c].to_le_bytes());
        }
    }
}

/// The scalar running extremes: the reference of the SIMD kernels (see [`minmax_fold_i16`]).
pub fn minmax_fold_scalar(
    input: &[u8],
    pairs: bool,
    channels: usize,
    ratio: usize,
    count: &mut usize,
    acc: &mut [i16],
    out: &mut [u8],
) {
    let fb = if pairs { 4 * channels } else { 2 * channels };
    let rd = |b: &[u8], at: usize| i16::from_le_bytes([b[at], b[at + 1]]);
    let mut windows = out.chunks_exact_mut(4 * channels);
    for f in input.chunks_exact(fb) {
        for (c, a) in acc.chunks_exact_mut(2).enumerate() {
            let (lo, hi) = if pairs {
                (rd(f, 4 * c), rd(f, 4 * c + 2))
            } else {
                (rd(f, 2 * c), rd(f, 2 * c))
            };
            a[0] = a[0].min(lo);
            a[1] = a[1].max(hi);
        }
        *count += 1;
        if *count == ratio {
            *count = 0;
            let o = windows.next().expect("out holds every completed window");
            for (d, a) in o.chunks_exact_mut(2).zip(acc.iter()) {
                d.copy_from_slice(&a.to_le_bytes());
            }
            for a in acc.chunks_exact_mut(2) {
                a[0] = i16::MAX;
                a[1] = i16::MIN;
            }
        }
    }
}

/// The scalar dot product, in order: the reference of the SIMD kernels.
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |s, (x, y)| x.mul_add(*y, s))
}

/// Folds `L` lanes, lane `j` holding sub-channel `j % C`, into `C` sums.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
#[inline(always)]
fn fold_sum<const L: usize, const C: usize>(lanes: [i32; L]) -> [i32; C] {
    let mut s = [0i32; C];
    for (j, l) in lanes.iter().enumerate() {
        s[j % C] += l;
    }
    s
}

/// Adds the samples of a partial block (starting on sub-channel 0) to per-channel sums.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
#[inline(always)]
fn tail_sum<const C: usize>(s: &mut [i32; C], tail: &[u8]) {
    for (j, b) in tail.chunks_exact(2).enumerate() {
        s[j % C] += i32::from(i16::from_le_bytes([b[0], b[1]]));
    }
}

/// Writes the per-channel extremes of the samples of `w` (whole frames, starting on
/// sub-channel 0) as little-endian (min, max) pairs: windows shorter than one vector.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
#[inline(always)]
fn short_minmax<const C: usize>(w: &[u8], o: &mut [u8]) {
    let mut lo = [i16::MAX; C];
    let mut hi = [i16::MIN; C];
    for (j, b) in w.chunks_exact(2).enumerate() {
        let v = i16::from_le_bytes([b[0], b[1]]);
        lo[j % C] = lo[j % C].min(v);
        hi[j % C] = hi[j % C].max(v);
    }
    for (c, p) in o.chunks_exact_mut(4).enumerate() {
        p[..2].copy_from_slice(&lo[c].to_le_bytes());
        p[2..].copy_from_slice(&hi[c].to_le_bytes());
    }
}
