//! Sample formats and decimation specifications as the config file names them.
//!
//! Owns: the vocabulary shared by the config parser, the decimator and the shared-memory layout
//! (`i16le`, `mean:10`, `minmax:10,100,1000`). Pure: no I/O, no unsafe.

use crate::config::parse::quote;
use std::fmt;

/// How a channel's bytes are read as samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SampleType {
    U8,
    I8,
    U16Le,
    I16Le,
    I16Be,
    U32Le,
    I32Le,
    I32Be,
    F32Le,
    F32Be,
    F64Le,
}

impl SampleType {
    pub const ALL: [SampleType; 11] = [
        SampleType::U8,
        SampleType::I8,
        SampleType::U16Le,
        SampleType::I16Le,
        SampleType::I16Be,
        SampleType::U32Le,
        SampleType::I32Le,
        SampleType::I32Be,
        SampleType::F32Le,
        SampleType::F32Be,
        SampleType::F64Le,
    ];

    /// Parses a config name such as `i16le`.
    pub fn parse(s: &str) -> Result<SampleType, String> {
        SampleType::ALL
            .iter()
            .copied()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = SampleType::ALL.iter().map(|t| t.name()).collect();
                format!(
                    "unknown sample type {} (one of: {})",
                    quote(s),
                    names.join(" ")
                )
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            SampleType::U8 => "u8",
            SampleType::I8 => "i8",
            SampleType::U16Le => "u16le",
            SampleType::I16Le => "i16le",
            SampleType::I16Be => "i16be",
            SampleType::U32Le => "u32le",
            SampleType::I32Le => "i32le",
            SampleType::I32Be => "i32be",
            SampleType::F32Le => "f32le",
            SampleType::F32Be => "f32be",
            SampleType::F64Le => "f64le",
        }
    }

    /// Bytes per sample.
    pub fn width(self) -> usize {
        match self {
            SampleType::U8 | SampleType::I8 => 1,
            SampleType::U16Le | SampleType::I16Le | SampleType::I16Be => 2,
            SampleType::U32Le
            | SampleType::I32Le
            | SampleType::I32Be
            | SampleType::F32Le
            | SampleType::F32Be => 4,
            SampleType::F64Le => 8,
        }
    }

    /// Decodes one sample from exactly `width()` bytes as f64 (exact for every type).
    pub fn decode(self, b: &[u8]) -> f64 {
        match self {
            SampleType::U8 => b[0] as f64,
            SampleType::I8 => b[0] as i8 as f64,
            SampleType::U16Le => u16::from_le_bytes([b[0], b[1]]) as f64,
            SampleType::I16Le => i16::from_le_bytes([b[0], b[1]]) as f64,
            SampleType::I16Be => i16::from_be_bytes([b[0], b[1]]) as f64,
            SampleType::U32Le => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            SampleType::I32Le => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            SampleType::I32Be => i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64,
            SampleType::F32Le => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            SampleType::F32Be => f32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64,
            SampleType::F64Le => {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
        }
    }
}

impl fmt::Display for SampleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Decimation modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecimateMode {
    /// Keep every Nth frame, in the input type.
    Every,
    /// Mean of N frames, as f32.
    Mean,
    /// (min, max) of N frames, in the input type: the envelope a scope draws.
    MinMax,
    /// Windowed-sinc low-pass FIR, polyphase, as f32.
    Fir,
}

impl DecimateMode {
    pub fn name(self) -> &'static str {
        match self {
            DecimateMode::Every => "every",
            DecimateMode::Mean => "mean",
            DecimateMode::MinMax => "minmax",
            DecimateMode::Fir => "fir",
        }
    }
}

/// A parsed `decimate =` value: a mode, one or more cascaded factors (each relative to the
/// input, strictly increasing and each a multiple of the previous), and FIR taps if given.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DecimateSpec {
    pub mode: DecimateMode,
    /// Total factors relative to the input rate, e.g. `[10, 100, 1000]`.
    pub factors: Vec<u32>,
    /// `fir:N:taps`; `None` means the documented default for the factor.
    pub fir_taps: Option<u32>,
}

impl DecimateSpec {
    /// Parses `every:N`, `mean:N`, `minmax:N[,N2,...]`, `fir:N[:taps]`.
    pub fn parse(s: &str) -> Result<DecimateSpec, String> {
        let (mode, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("decimate {} needs MODE:FACTOR (e.g. mean:10)", quote(s)))?;
        let mode = match mode {
            "every" => DecimateMode::Every,
            "mean" => DecimateMode::Mean,
            "minmax" => DecimateMode::MinMax,
            "fir" => DecimateMode::Fir,
            other => {
                return Err(format!(
                    "unknown decimation mode {} (one of: every mean minmax fir)",
                    quote(other)
                ))
            }
        };
        let (factors_s, taps_s) = match (mode, rest.split_once(':')) {
            (DecimateMode::Fir, Some((f, t))) => (f, Some(t)),
            (_, Some(_)) => {
                return Err(format!(
                    "decimate {}: only fir takes a taps count",
                    quote(s)
                ))
            }
            (_, None) => (rest, None),
        };
        let mut factors = Vec::new();
        for part in factors_s.split(',') {
            let f: u32 = part
                .trim()
                .parse()
                .map_err(|_| format!("decimation factor {} is not a whole number", quote(part)))?;
            if f == 0 {
                return Err("decimation factor must be at least 1".into());
            }
            if let Some(&prev) = factors.last() {
                if f <= prev || f % prev != 0 {
                    return Err(format!(
                        "cascaded factors must increase and each divide the next ({prev} then {f})"
                    ));
                }
            }
            factors.push(f);
        }
        if factors.len() > 8 {
            return Err("at most 8 cascaded decimation levels".into());
        }
        let fir_taps = match taps_s {
            None => None,
            Some(t) => {
                let n: u32 = t
                    .parse()
                    .map_err(|_| format!("fir taps {} is not a whole number", quote(t)))?;
                if !(3..=4095).contains(&n) {
                    return Err(format!("fir taps {n} out of range 3..=4095"));
                }
                Some(n)
            }
        };
        Ok(DecimateSpec {
            mode,
            factors,
            fir_taps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_types_round_trip_names() {
        for t in SampleType::ALL {
            assert_eq!(SampleType::parse(t.name()).unwrap(), t);
        }
        assert!(SampleType::parse("i24le").is_err());
    }

    #[test]
    fn decimate_specs() {
        let s = DecimateSpec::parse("minmax:10,100,1000").unwrap();
        assert_eq!(s.mode, DecimateMode::MinMax);
        assert_eq!(s.factors, vec![10, 100, 1000]);
        assert_eq!(DecimateSpec::parse("fir:4:63").unwrap().fir_taps, Some(63));
        assert!(DecimateSpec::parse("mean:0").is_err());
        assert!(DecimateSpec::parse("avg:3").is_err());
        assert!(DecimateSpec::parse("mean:10,15").is_err());
        assert!(DecimateSpec::parse("mean:4:3").is_err());
    }
}

/// The sample and decimation keys of one channel, validated: what the decimator and the
/// shared-memory writer need to know about a channel.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleConfig {
    pub sample: SampleType,
    /// Interleaved sub-channels per input frame (>= 1).
    pub interleave: u32,
    /// Bytes skipped at the start of every datagram (stream inputs: 0).
    pub header_bytes: u32,
    /// Input frames per second, if known.
    pub sample_rate: Option<f64>,
    pub decimate: DecimateSpec,
    /// Whether to publish into shared memory.
    pub shm: bool,
    /// Decimated frames kept per published stream.
    pub shm_frames: u64,
}
