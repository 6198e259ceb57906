//! The `fir` mode's low-pass: the default length for a decimation ratio and the
//! Blackman-windowed sinc design (cutoff at the output Nyquist frequency, unit DC gain).

/// Default FIR length for a decimation ratio.
pub fn default_fir_taps(ratio: u32) -> u32 {
    let t = (20u64 * ratio as u64 + 1).min(4095) as u32;
    t | 1
}

/// Designs the low-pass for decimation by `ratio`: Blackman-windowed sinc, cutoff `0.5/ratio`
/// cycles per input sample, normalised to unit DC gain.
pub fn fir_design(ratio: u32, taps: u32) -> Vec<f64> {
    let n = taps.max(1) as usize;
    let fc = 0.5 / ratio.max(1) as f64;
    let mid = (n as f64 - 1.0) / 2.0;
    let mut h: Vec<f64> = (0..n)
        .map(|i| {
            let t = i as f64 - mid;
            let sinc = if t == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * t).sin() / (std::f64::consts::PI * t)
            };
            let w = if n == 1 {
                1.0
            } else {
                let x = 2.0 * std::f64::consts::PI * i as f64 / (n as f64 - 1.0);
                0.42 - 0.5 * x.cos() + 0.08 * (2.0 * x).cos()
            };
            sinc * w
        })
        .collect();
    let sum: f64 = h.iter().sum();
    if sum != 0.0 {
        h.iter_mut().for_each(|v| *v /= sum);
    }
    h
}
