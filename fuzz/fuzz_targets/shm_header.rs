//! Fuzz target for the shm header validators: any bytes with any claimed file length either
//! fail with a `LayoutError` or decode to a header whose data region fits inside the file; they
//! never panic. A decoded region header re-encodes to a header that validates again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::shm::layout::{encode_region, validate_region, validate_stats};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u64::from_le_bytes(data[..8].try_into().unwrap()) >> (data[0] % 64);
    let bytes = &data[8..];
    if let Ok(info) = validate_region(bytes, len) {
        assert!(info.data_offset + info.capacity * info.frame_bytes as u64 <= len);
        // Re-encoding what was accepted yields a header that is accepted again.
        validate_region(&encode_region(&info), len).expect("re-encoded header");
    }
    if let Ok(s) = validate_stats(bytes, len) {
        assert!(s.rows_offset as u64 + s.row_capacity as u64 * s.row_bytes as u64 <= len);
    }
});
