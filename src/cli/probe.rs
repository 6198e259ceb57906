//! `ringrelay probe`: what this kernel's io_uring offers and which paths the daemon would use.
//!
//! Owns: its arguments ([`ProbeArgs`]) and the report, nothing else. It builds a ring exactly
//! as `run` would with the default configuration (same probing, same fallbacks), prints
//! [`crate::engine::caps::Caps`], checks the decimation kernels this CPU will run against the
//! scalar ones (exit 1 if they differ), and exits.

use crate::config::{FeatureSet, Global};
use crate::driver::ring::{Ring, RingOptions};
use crate::driver::setup::available_cpus;
use crate::engine::buffers::BufferPool;
use argh::FromArgs;

/// Print which io_uring features this kernel has and which paths the daemon will use.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "probe")]
pub struct ProbeArgs {
    /// force the Linux 5.10 baseline feature set
    #[argh(switch)]
    pub baseline: bool,
}

pub fn run(a: &ProbeArgs) -> i32 {
    let g = Global::default();
    let baseline = a.baseline
        || g.features == FeatureSet::Baseline
        || std::env::var("RINGRELAY_FEATURES").is_ok_and(|v| v == "baseline");
    let opts = RingOptions {
        entries: g.ring_entries,
        sqpoll: g.sqpoll,
        sqpoll_idle_ms: g.sqpoll_idle_ms,
        sqpoll_cpu: g.sqpoll_cpu,
        baseline,
        trial_multishot: true,
    };
    let pool = BufferPool::for_global(&g);
    match Ring::new(&opts, &pool) {
        Ok(ring) => {
            print!("{}", ring.caps);
            println!("cpus available    {}", available_cpus());
            let isa = crate::engine::decimate::simd::Isa::detect();
            match crate::engine::decimate::simd::self_check(isa) {
                Ok(()) => println!("decimation        {} (checked against scalar)", isa.name()),
                Err(e) => {
                    println!("decimation        {} FAILED: {e}", isa.name());
                    return 1;
                }
            }
            let pool = u64::from(g.buffer_size) * u64::from(g.buffer_count)
                + u64::from(g.datagram_size) * u64::from(g.datagram_count);
            println!(
                "default pool      {} ({} x {} + {} x {})",
                crate::config::units::format_size(pool),
                g.buffer_count,
                crate::config::units::format_size(u64::from(g.buffer_size)),
                g.datagram_count,
                crate::config::units::format_size(u64::from(g.datagram_size))
            );
            0
        }
        Err(e) => {
            eprintln!("ringrelay: {e}");
            1
        }
    }
}
