//! Decimation cost: decimated input samples per second on one core for each mode, next to a
//! plain memcpy of the same bytes, printed as ratios. Run: `cargo bench --bench decimate`.
//! (The relay throughput of a decimating channel next to a plain one belongs to the relay bench
//! once the daemon feeds `Publisher`.)

use ringrelay::config::sample::{DecimateSpec, SampleType};
use ringrelay::engine::decimate::Decimator;
use std::hint::black_box;
use std::time::{Duration, Instant};

const CHANNELS: u32 = 4;
const PACKET: usize = 1400 / 8 * 8; // bytes per fed segment, whole i16 x4 frames

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
    let sample_bytes = 2.0;
    println!(
        "decimate bench: i16le x{CHANNELS}, {PACKET}-byte segments; memcpy {:.0} Msamples/s",
        memcpy / sample_bytes / 1e6
    );
    println!("{:<22} {:>14} {:>16}", "mode", "Msamples/s", "vs memcpy");
    for spec in [
        "every:10",
        "mean:10",
        "minmax:10",
        "minmax:10,100,1000",
        "fir:10",
        "fir:4:31",
    ] {
        let sp = DecimateSpec::parse(spec).unwrap();
        let mut d = Decimator::with_spec(SampleType::I16Le, CHANNELS, 0, &sp).unwrap();
        let mut out = vec![Vec::new(); sp.factors.len()];
        let rate = measure(|| {
            for seg in input.chunks(PACKET) {
                d.feed_stream(black_box(seg), &mut out);
            }
            for o in out.iter_mut() {
                black_box(&o);
                o.clear();
            }
            input.len()
        });
        println!(
            "{:<22} {:>14.1} {:>15.3}x",
            spec,
            rate / sample_bytes / 1e6,
            rate / memcpy
        );
    }
}
