//! The decimator's `f32` paths: `mean` (one level) and `minmax` (every level) of
//! little-endian `f32` samples through the running-window kernels of [`simd`], which carry
//! partial windows across calls themselves, so nothing here works frame by frame.

use super::simd;
use super::stage::Stage;
use super::Decimator;

impl Decimator {
    /// `mean` of little-endian `f32` samples with one level: the kernel sums in `f64` in
    /// arrival order in the level's own `Stage` state, so the output is the bytes of the
    /// frame-by-frame path.
    pub(super) fn mean_f32(&mut self, bytes: &[u8], out: &mut [Vec<u8>]) {
        let fb = self.frame_bytes;
        let frames = bytes.len() / fb;
        self.counters.frames_in += frames as u64;
        let Stage::Mean { ratio, count, sums } = &mut self.stages[0] else {
            unreachable!("mean level 0 is a mean stage")
        };
        let r = *ratio as usize;
        let mut n = *count as usize;
        let windows = simd::fold_windows(frames, r, n);
        let o = &mut out[0];
        let at = o.len();
        o.resize(at + windows * fb, 0);
        simd::mean_fold_f32(self.isa, bytes, fb / 4, r, &mut n, sums, &mut o[at..]);
        *count = n as u32;
        self.counters.frames_out[0] += windows as u64;
    }

    /// `minmax` of little-endian `f32` samples, every level in `f32` (min and max are exact,
    /// so the values of the `f64` path; see [`simd::minmax_fold_f32`] for NaN and signed
    /// zeros): level 0 folds the raw frames, each higher level the pairs the level below
    /// appended in this call, straight into `out`.
    pub(super) fn minmax_f32(&mut self, bytes: &[u8], out: &mut [Vec<u8>]) {
        let (isa, fb) = (self.isa, self.frame_bytes);
        let ch = fb / 4;
        let pb = 8 * ch;
        self.counters.frames_in += (bytes.len() / fb) as u64;
        let mut start = out[0].len();
        for level in 0..self.stages.len() {
            let ratio = self.stages[level].ratio() as usize;
            let mut count = self.mm_counts[level];
            let acc = &mut self.mmf_acc[level * 2 * ch..(level + 1) * 2 * ch];
            let (lower, upper) = out.split_at_mut(level);
            let (input, pairs, in_fb) = match level {
                0 => (bytes, false, fb),
                _ => (&lower[level - 1][start..], true, pb),
            };
            let o = &mut upper[0];
            let at = o.len();
            let n = simd::fold_windows(input.len() / in_fb, ratio, count);
            o.resize(at + n * pb, 0);
            simd::minmax_fold_f32(isa, input, pairs, ch, ratio, &mut count, acc, &mut o[at..]);
            self.mm_counts[level] = count;
            self.counters.frames_out[level] += n as u64;
            start = at;
        }
    }
}
