//! The values a region stores: [`ValueType`] (the little-endian types, their header codes,
//! encoding and decoding) and [`LevelShape`] (what one cascade level's output frames hold).

use crate::config::sample::SampleType;

/// A value type stored in a shared-memory region (always little-endian there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    F64,
}

impl ValueType {
    pub const ALL: [ValueType; 8] = [
        ValueType::U8,
        ValueType::I8,
        ValueType::U16,
        ValueType::I16,
        ValueType::U32,
        ValueType::I32,
        ValueType::F32,
        ValueType::F64,
    ];

    /// The code stored in the region header (see ringrelay-shm(7)).
    pub fn code(self) -> u16 {
        match self {
            ValueType::U8 => 1,
            ValueType::I8 => 2,
            ValueType::U16 => 3,
            ValueType::I16 => 4,
            ValueType::U32 => 5,
            ValueType::I32 => 6,
            ValueType::F32 => 7,
            ValueType::F64 => 8,
        }
    }

    pub fn from_code(c: u16) -> Option<ValueType> {
        ValueType::ALL.iter().copied().find(|t| t.code() == c)
    }

    pub fn width(self) -> usize {
        match self {
            ValueType::U8 | ValueType::I8 => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::F64 => "f64",
        }
    }

    /// The little-endian type that holds an input sample type exactly.
    pub fn of_input(s: SampleType) -> ValueType {
        match s {
            SampleType::U8 => ValueType::U8,
            SampleType::I8 => ValueType::I8,
            SampleType::U16Le => ValueType::U16,
            SampleType::I16Le | SampleType::I16Be => ValueType::I16,
            SampleType::U32Le => ValueType::U32,
            SampleType::I32Le | SampleType::I32Be => ValueType::I32,
            SampleType::F32Le | SampleType::F32Be => ValueType::F32,
            SampleType::F64Le => ValueType::F64,
        }
    }

    /// Appends `v` as this type, little-endian. Integer types saturate (values from `every` and
    /// `minmax` are always in range); floats round to nearest.
    pub fn encode(self, v: f64, out: &mut Vec<u8>) {
        match self {
            ValueType::U8 => out.push(v as u8),
            ValueType::I8 => out.push(v as i8 as u8),
            ValueType::U16 => out.extend_from_slice(&(v as u16).to_le_bytes()),
            ValueType::I16 => out.extend_from_slice(&(v as i16).to_le_bytes()),
            ValueType::U32 => out.extend_from_slice(&(v as u32).to_le_bytes()),
            ValueType::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
            ValueType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            ValueType::F64 => out.extend_from_slice(&v.to_le_bytes()),
        }
    }

    /// Decodes one little-endian value from exactly `width()` bytes.
    pub fn decode(self, b: &[u8]) -> f64 {
        match self {
            ValueType::U8 => b[0] as f64,
            ValueType::I8 => b[0] as i8 as f64,
            ValueType::U16 => u16::from_le_bytes([b[0], b[1]]) as f64,
            ValueType::I16 => i16::from_le_bytes([b[0], b[1]]) as f64,
            ValueType::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            ValueType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            ValueType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            ValueType::F64 => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        }
    }
}

/// The shape of one level's output frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelShape {
    /// Total factor relative to the input.
    pub factor: u32,
    pub value_type: ValueType,
    /// Sub-channels per frame.
    pub channels: u32,
    /// 1, or 2 for minmax (min then max for each sub-channel).
    pub values_per_channel: u32,
}

impl LevelShape {
    pub fn frame_bytes(&self) -> usize {
        self.value_type.width() * self.channels as usize * self.values_per_channel as usize
    }
}
