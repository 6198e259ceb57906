//! Level 0 of `fir` in `f32`: [`FirF32`] keeps the last `T − 1` input frames in a linear
//! buffer, appends a batch of samples, and computes only the kept outputs, each one contiguous
//! dot product of the reversed taps with the newest `T` samples (the polyphase saving: `T`
//! multiply-adds per output, one store per input). With 1, 2, 4 or 8 sub-channels the buffer
//! stays interleaved, as the samples arrive, and one [`simd::dot_lanes_f32`] against the taps
//! repeated per sub-channel gives every sub-channel's output (de-interleaving cost more than
//! the filter); other counts keep one buffer per sub-channel.
//!
//! Must never allocate per sample: the buffers grow to the largest batch once.

use super::fir::{default_fir_taps, fir_design};
use super::simd::{self, Isa};

/// Input frames de-interleaved per batch (bounds the buffers).
const BATCH_FRAMES: usize = 4096;

#[derive(Clone, Debug)]
pub(super) struct FirF32 {
    pub(super) ratio: u32,
    /// Input frames since the last output.
    pub(super) count: u32,
    /// `h[T − 1 − k]`, so output `y[n] = Σ_j taps_rev[j]·x[n − T + 1 + j]`.
    taps_rev: Vec<f32>,
    /// Interleaved: each of `taps_rev` repeated `channels` times.
    taps_wide: Vec<f32>,
    channels: usize,
    /// Interleaved: one buffer of whole frames; otherwise one per sub-channel. Consumed
    /// frames before `start`, then the last `T − 1` frames (zeros at the start: silence), then
    /// the batch.
    bufs: Vec<Vec<f32>>,
    /// Consumed samples at the front of each buffer, dropped once there are many (moving the
    /// kept `T − 1` samples after every datagram cost more than the filter).
    start: usize,
}

impl FirF32 {
    pub(super) fn new(ratio: u32, channels: usize, taps: Option<u32>) -> FirF32 {
        let t = taps.unwrap_or_else(|| default_fir_taps(ratio)) as usize;
        let mut taps_rev: Vec<f32> = fir_design(ratio, t as u32)
            .iter()
            .map(|h| *h as f32)
            .collect();
        taps_rev.reverse();
        let interleaved = simd::dot_lanes_serves(channels);
        FirF32 {
            ratio,
            count: 0,
            taps_wide: if interleaved {
                taps_rev.iter().flat_map(|h| vec![*h; channels]).collect()
            } else {
                Vec::new()
            },
            taps_rev,
            channels,
            bufs: if interleaved {
                vec![vec![0.0; (t - 1) * channels]]
            } else {
                vec![vec![0.0; t - 1]; channels]
            },
            start: 0,
        }
    }

    pub(super) fn taps(&self) -> usize {
        self.taps_rev.len()
    }

    /// Feeds whole frames of `W`-byte samples decoded by `dec`; appends each output frame's
    /// `channels` values to `outs` (cleared first).
    pub(super) fn feed<const W: usize>(
        &mut self,
        frames: &[u8],
        isa: Isa,
        dec: impl Fn([u8; W]) -> f32,
        outs: &mut Vec<f64>,
    ) {
        outs.clear();
        if !self.taps_wide.is_empty() {
            return self.feed_interleaved(frames, isa, dec, outs);
        }
        let channels = self.bufs.len();
        let fb = W * channels;
        let t = self.taps_rev.len();
        for batch in frames.chunks(fb * BATCH_FRAMES) {
            let k = batch.len() / fb;
            for (c, buf) in self.bufs.iter_mut().enumerate() {
                buf.extend(
                    batch
                        .chunks_exact(fb)
                        .map(|f| dec(f[c * W..c * W + W].try_into().expect("W bytes"))),
                );
            }
            let ratio = self.ratio as usize;
            // New frame i (buffer index T − 1 + i) completes a window when
            // (count + i + 1) % ratio == 0; its window is buf[start + i..start + i + T].
            let mut i = ratio - 1 - self.count as usize;
            while i < k {
                let w = self.start + i;
                for buf in &self.bufs {
                    outs.push(f64::from(simd::dot_f32(
                        isa,
                        &self.taps_rev,
                        &buf[w..w + t],
                    )));
                }
                i += ratio;
            }
            self.count = ((self.count as usize + k) % ratio) as u32;
            self.start += k;
            if self.start >= BATCH_FRAMES {
                for buf in &mut self.bufs {
                    buf.drain(..self.start);
                }
                self.start = 0;
            }
        }
    }

    /// [`FirF32::feed`] on the interleaved buffer: samples appended as they come, each kept
    /// output frame one interleaved dot product.
    fn feed_interleaved<const W: usize>(
        &mut self,
        frames: &[u8],
        isa: Isa,
        dec: impl Fn([u8; W]) -> f32,
        outs: &mut Vec<f64>,
    ) {
        let c = self.channels;
        let fb = W * c;
        let tw = self.taps_wide.len();
        let ratio = self.ratio as usize;
        let buf = &mut self.bufs[0];
        let mut y = [0f32; 8];
        for batch in frames.chunks(fb * BATCH_FRAMES) {
            let k = batch.len() / fb;
            buf.extend(
                batch
                    .chunks_exact(W)
                    .map(|s| dec(s.try_into().expect("W bytes"))),
            );
            let mut i = ratio - 1 - self.count as usize;
            while i < k {
                let w = (self.start + i) * c;
                simd::dot_lanes_f32(isa, &self.taps_wide, &buf[w..w + tw], &mut y[..c]);
                outs.extend(y[..c].iter().map(|v| f64::from(*v)));
                i += ratio;
            }
            self.count = ((self.count as usize + k) % ratio) as u32;
            self.start += k;
            if self.start >= BATCH_FRAMES {
                buf.drain(..self.start * c);
                self.start = 0;
            }
        }
    }
}
