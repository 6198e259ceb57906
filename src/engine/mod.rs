//! The engine: every decision the relay makes, with no file descriptor of its own, no system
//! call, no clock and no `unsafe`.
pub mod backoff;
pub mod caps;
pub mod channel;
pub mod decimate;
pub mod outq;
pub mod splice;
pub mod stats;
pub mod token;
pub mod zerocopy;
