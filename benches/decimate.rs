//! Decimation cost: decimated input samples per second on one core for each mode, next to a
//! plain memcpy of the same bytes, printed as ratios (of bytes per second), for `i16` and
//! `f32` input. Run: `cargo bench --bench decimate`. `DECIMATE_BENCH_ONLY=i16:minmax:10` runs
//! that one row only; with `DECIMATE_BENCH_PASSES=N` it feeds the 1 MiB input N times instead
//! of timing (for instruction counts under `valgrind --tool=callgrind`).
//! (The relay throughput of a decimating channel next to a plain one belongs to the relay bench
//! once the daemon feeds `Publisher`.)

use ringrelay::config::sample::{DecimateSpec, SampleType};
use ringrelay::engine::decimate::Decimator;
use std::hint::black_box;
use std::time::{Duration, Instant};

const CHANNELS: u32 = 4;
const PACKET: usize = 1400 / 16 * 16; // bytes per fed segment, whole i16 and f32 x4 frames

fn measure(mut f: impl FnMut() -> usize) -> f64 {
    // Warm up, then run for at least 0.5 s; returns bytes per second.
    f();
    let start = Instant::now();
    let mut bytes = 0usize;
    while start.elapsed() < Duration::from_millis(500) {
        bytes += f();
    }
    bytes as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let only = std::env::var("DECIMATE_BENCH_ONLY").ok();
    let passes: Option<usize> = std::env::var("DECIMATE_BENCH_PASSES")
        .ok()
        .and_then(|p| p.parse().ok());
    let input: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut dst = vec![0u8; input.len()];
    let memcpy = measure(|| {
        for (s, d) in input.chunks(PACKET).zip(dst.chunks_mut(PACKET)) {
            d.copy_from_slice(black_box(s));
        }
        black_box(&dst);
        input.len()
    });
    println!(
        "decimate bench: x{CHANNELS} sub-channels, {PACKET}-byte segments; memcpy {:.0} MB/s",
        memcpy / 1e6
    );
    println!(
        "{:<6} {:<22} {:>14} {:>16}",
        "input", "mode", "Msamples/s", "vs memcpy"
    );
    // f32 input: the same samples as the i16 input, scaled to full scale 1.0 (random bit
    // patterns would be mostly subnormal or huge, not a signal).
    let floats: Vec<u8> = input
        .chunks_exact(2)
        .flat_map(|b| (f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).to_le_bytes())
        .take(input.len())
        .collect();
    for (name, sample, data) in [
        ("i16", SampleType::I16Le, &input),
        ("f32", SampleType::F32Le, &floats),
    ] {
        let sample_bytes = sample.width() as f64;
        for spec in [
            "every:10",
            "mean:10",
            "minmax:10",
            "minmax:10,100,1000",
            "fir:10",
            "fir:4:31",
        ] {
            if only
                .as_ref()
                .is_some_and(|o| *o != format!("{name}:{spec}"))
            {
                continue;
            }
            let sp = DecimateSpec::parse(spec).unwrap();
            let mut d = Decimator::with_spec(sample, CHANNELS, 0, &sp).unwrap();
            let mut out = vec![Vec::new(); sp.factors.len()];
            let mut pass = || {
                for seg in data.chunks(PACKET) {
                    d.feed_stream(black_box(seg), &mut out);
                }
                for o in out.iter_mut() {
                    black_box(&o);
                    o.clear();
                }
                data.len()
            };
            if let Some(n) = passes {
                for _ in 0..n {
                    pass();
                }
                println!("{name} {spec}: fed {n} passes");
                continue;
            }
            let rate = measure(pass);
            println!(
                "{:<6} {:<22} {:>14.1} {:>15.3}x",
                name,
                spec,
                rate / sample_bytes / 1e6,
                rate / memcpy
            );
        }
    }
    println!("memcpy of i16: {:.0} Msamples/s", memcpy / 2.0 / 1e6);
}
