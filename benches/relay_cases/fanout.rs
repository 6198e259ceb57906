//! Case (i) of the relay bench: TCP fan-out to many subscribers.
//!
//! Owns: the subscriber counts and volumes of case (i), and its table. One producer writes into a
//! channel with 8, then 64 `tcp://` outputs, each a counting sink of the bench that the relay
//! dials (the tee path splices only to dialed outputs, so every row is wired the same way).
//! Rows: ringrelay with `splice = on` (IORING_OP_TEE into a 1 MiB pipe per output), ringrelay
//! with `splice = off` (the buffer path) and the blocking relay with a thread per subscriber
//! (1 MiB reads, a bounded queue per output). The run itself is case (f)'s
//! ([`super::tcp_fan_run`]); this case reports Gbit/s per subscriber (input bytes × 8 from the
//! source's connect to the last sink's last byte) and relay CPU seconds per *delivered* GB (input
//! × subscribers), the unit the fan-out targets are set in, and the ratios of each ringrelay row to
//! the blocking relay and of the tee path to the buffer path.

use std::time::Duration;

use super::{measure, print_table, tcp_fan_run, Bench, Relay, Row, Sample};

/// The subscriber counts of case (i).
pub const COUNTS: [usize; 2] = [8, 64];

/// Input bytes per run for `n` subscribers: 2 GiB delivered in the quick mode and 8 GiB in the
/// full one, whatever `n` (at least 16 MiB of input, 16 rounds of the tee path's pipes).
pub fn input_bytes(n: usize, quick: bool) -> u64 {
    let delivered: u64 = if quick { 2 << 30 } else { 8 << 30 };
    (delivered / n as u64).max(16 << 20)
}

/// Measures every relay of `relays` (name, kind) at `n` subscribers and prints the table.
/// Returns how many ringrelay rows could not be measured.
pub fn run_and_print(
    b: &mut Bench,
    relays: &[(&Relay, &'static str)],
    n: usize,
    runs: usize,
    quick: bool,
    limit: Duration,
) -> usize {
    let total = input_bytes(n, quick);
    let rows: Vec<Row> = relays
        .iter()
        .map(|(r, kind)| {
            // CPU per GB of input over the subscribers: CPU per delivered GB.
            let result = measure(runs, || {
                tcp_fan_run(b, r, total, n, limit).map(|s| Sample {
                    cpu: s.cpu / n as f64,
                    ..s
                })
            });
            Row {
                name: r.name(),
                kind,
                result,
            }
        })
        .collect();
    print_table(
        &format!(
            "(i) TCP fan-out to {n} subscribers, {} MiB in (Gbit/s per subscriber; CPU s per delivered GB)",
            total >> 20
        ),
        "Gbit/s/sub",
        "CPU s/GB",
        false,
        &rows,
    );
    let ok = |splice: bool| {
        rows.iter()
            .zip(relays)
            .find_map(|(row, (r, _))| match (r, &row.result) {
                (Relay::Ringrelay { splice: s, .. }, Ok(v)) if *s == splice => Some(*v),
                _ => None,
            })
    };
    if let (Some(tee), Some(buf)) = (ok(true), ok(false)) {
        println!(
            "  tee / buffer path: throughput x{:.2}, CPU x{:.2}",
            tee.rate / buf.rate,
            tee.cpu / buf.cpu
        );
    }
    rows.iter()
        .filter(|r| r.kind == "ringrelay" && r.result.is_err())
        .count()
}
