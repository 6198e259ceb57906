//! Test data and its checks: seeded patterns and datagram sets, FNV-1a checksums, byte and
//! datagram comparisons that report where they differ, and ping/frame stripping.

use super::{Collector, StreamSink, PING, PING_DATAGRAM};

/// `len` pseudo-random bytes from `seed` (xorshift64*), reproducible across runs. The first byte
/// is never [`PING`], so a ping prefix can be stripped unambiguously.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    if let Some(b) = v.first_mut() {
        if *b == PING {
            *b = 0x55;
        }
    }
    v
}

/// A sequence of `count` datagrams: each starts with its sequence number (u32 big-endian) and is
/// at least 5 bytes (so never [`PING_DATAGRAM`]). Sizes vary from 5 bytes to `max_size`, with a
/// few at `max_size` itself.
pub fn datagrams(seed: u64, count: usize, max_size: usize) -> Vec<Vec<u8>> {
    assert!(max_size >= 5);
    let sizes = pattern(seed ^ 0xD47A, count * 4);
    (0..count)
        .map(|i| {
            let r = u32::from_le_bytes(sizes[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
            let len = match i % 97 {
                13 => max_size,
                50 => 5,
                _ => 5 + r % (max_size.min(1472) - 4),
            };
            let mut d = pattern(seed.wrapping_add(i as u64), len);
            d[..4].copy_from_slice(&(i as u32).to_be_bytes());
            d
        })
        .collect()
}

/// FNV-1a, 64 bit.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Asserts `got == want` byte for byte, reporting lengths, checksums and the first difference.
/// The stream on the connection that went away followed by the redialed collector's is
/// exactly `want`: nothing lost, nothing twice.
pub fn assert_redialed_stream(gone: &StreamSink, back: &Collector, want: &[u8]) {
    let mut got = gone.data();
    got.extend_from_slice(&back.concatenated());
    assert_same_bytes("first connection followed by the redialed one", &got, want);
}

pub fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes (fnv {:016x}), want {} bytes (fnv {:016x}); first difference at offset {first}",
        got.len(),
        fnv1a(got),
        want.len(),
        fnv1a(want)
    );
}

/// Asserts that two datagram sequences are equal, reporting the first one that differs.
pub fn assert_same_datagrams(what: &str, got: &[Vec<u8>], want: &[Vec<u8>]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            let gseq = g
                .get(..4)
                .map(|s| u32::from_be_bytes(s.try_into().unwrap()));
            panic!(
                "{what}: datagram {i} differs: got {} bytes (seq {gseq:?}, fnv {:016x}), want {} bytes (fnv {:016x})",
                g.len(),
                fnv1a(g),
                w.len(),
                fnv1a(w)
            );
        }
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: got {} datagrams, want {}",
        got.len(),
        want.len()
    );
}

/// `data` without its leading [`PING`] bytes.
pub fn strip_pings(data: &[u8]) -> &[u8] {
    let n = data.iter().take_while(|&&b| b == PING).count();
    &data[n..]
}

/// Splits a u32be length-prefixed stream into its records; the second value is the number of
/// bytes of an incomplete record at the end.
pub fn split_frames(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while data.len() - at >= 4 {
        let len = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        if data.len() - at - 4 < len {
            break;
        }
        out.push(&data[at + 4..at + 4 + len]);
        at += 4 + len;
    }
    (out, data.len() - at)
}

/// Records of a framed stream after its leading [`PING_DATAGRAM`] records.
pub fn framed_after_pings(data: &[u8]) -> Vec<Vec<u8>> {
    let (frames, _) = split_frames(data);
    frames
        .into_iter()
        .skip_while(|f| *f == PING_DATAGRAM)
        .map(|f| f.to_vec())
        .collect()
}
