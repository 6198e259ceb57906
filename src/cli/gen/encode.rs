//! Sample encoding for `ringrelay gen`: one synthesized value (a fraction of full scale, or a
//! raw counter) into the bytes of one sample of a [`SampleType`].
//!
//! Owns: full scale and rounding per type, the swing of unsigned types around their midpoint,
//! byte order, and how a counter wraps in each type.

use crate::config::sample::SampleType;

/// A sample before encoding: a fraction of full scale, or a raw counter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Value {
    Unit(f64),
    Count(u64),
}

/// Encodes one value in `format` into `out`, which is exactly one sample wide.
#[inline(always)]
pub(super) fn encode(format: SampleType, v: Value, out: &mut [u8]) {
    // Signed full scale, rounded; unsigned is the same swing around the midpoint.
    let signed = |v: f64, max: f64| (v * max).round().clamp(-max - 1.0, max) as i64;
    match (format, v) {
        (SampleType::U8, Value::Unit(x)) => out[0] = (128 + signed(x, 127.0)) as u8,
        (SampleType::I8, Value::Unit(x)) => out[0] = signed(x, 127.0) as i8 as u8,
        (SampleType::U16Le, Value::Unit(x)) => {
            out.copy_from_slice(&((32768 + signed(x, 32767.0)) as u16).to_le_bytes())
        }
        (SampleType::I16Le, Value::Unit(x)) => {
            out.copy_from_slice(&(signed(x, 32767.0) as i16).to_le_bytes())
        }
        (SampleType::I16Be, Value::Unit(x)) => {
            out.copy_from_slice(&(signed(x, 32767.0) as i16).to_be_bytes())
        }
        (SampleType::U32Le, Value::Unit(x)) => out
            .copy_from_slice(&((2_147_483_648 + signed(x, 2_147_483_647.0)) as u32).to_le_bytes()),
        (SampleType::I32Le, Value::Unit(x)) => {
            out.copy_from_slice(&(signed(x, 2_147_483_647.0) as i32).to_le_bytes())
        }
        (SampleType::I32Be, Value::Unit(x)) => {
            out.copy_from_slice(&(signed(x, 2_147_483_647.0) as i32).to_be_bytes())
        }
        (SampleType::F32Le, Value::Unit(x)) => out.copy_from_slice(&(x as f32).to_le_bytes()),
        (SampleType::F32Be, Value::Unit(x)) => out.copy_from_slice(&(x as f32).to_be_bytes()),
        (SampleType::F64Le, Value::Unit(x)) => out.copy_from_slice(&x.to_le_bytes()),
        (SampleType::U8 | SampleType::I8, Value::Count(c)) => out[0] = c as u8,
        (SampleType::U16Le | SampleType::I16Le, Value::Count(c)) => {
            out.copy_from_slice(&(c as u16).to_le_bytes())
        }
        (SampleType::I16Be, Value::Count(c)) => out.copy_from_slice(&(c as u16).to_be_bytes()),
        (SampleType::U32Le | SampleType::I32Le, Value::Count(c)) => {
            out.copy_from_slice(&(c as u32).to_le_bytes())
        }
        (SampleType::I32Be, Value::Count(c)) => out.copy_from_slice(&(c as u32).to_be_bytes()),
        (SampleType::F32Le, Value::Count(c)) => {
            out.copy_from_slice(&((c % (1 << 24)) as f32).to_le_bytes())
        }
        (SampleType::F32Be, Value::Count(c)) => {
            out.copy_from_slice(&((c % (1 << 24)) as f32).to_be_bytes())
        }
        (SampleType::F64Le, Value::Count(c)) => {
            out.copy_from_slice(&((c % (1 << 53)) as f64).to_le_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::signal::{synth, Signal};
    use super::*;

    fn gen(signal: Signal, format: SampleType, interleave: u32, start: u64, n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        synth(signal, format, interleave, start, n, 0.5, 48000.0, &mut v);
        v
    }

    #[test]
    fn unsigned_formats_swing_around_the_midpoint() {
        let v = gen(Signal::Square(1000.0), SampleType::U8, 1, 0, 48);
        assert_eq!(v[0], 128 + 64);
        assert_eq!(v[24], 128 - 64);
        let mut v = Vec::new();
        synth(
            Signal::Square(1000.0),
            SampleType::U16Le,
            1,
            24,
            1,
            1.0,
            48000.0,
            &mut v,
        );
        assert_eq!(u16::from_le_bytes([v[0], v[1]]), 1);
    }

    #[test]
    fn big_endian_is_byte_swapped_little_endian() {
        let le = gen(Signal::Sine(300.0), SampleType::I16Le, 1, 7, 50);
        let be = gen(Signal::Sine(300.0), SampleType::I16Be, 1, 7, 50);
        let swapped: Vec<u8> = le.chunks(2).flat_map(|c| [c[1], c[0]]).collect();
        assert_eq!(swapped, be);
    }
}
