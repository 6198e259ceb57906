//! ringrelay: a single-process Linux daemon that relays many independent data channels on one
//! io_uring ring, fans each out to many outputs, and publishes decimated samples into shared
//! memory that external readers attach to.
//!
//! ```text
//!                +---------------- driver: one io_uring ring, registered arena ----------------+
//!  udp/tcp/unix  |                                                                             |
//!  input ------> | input --recv into buffer--> deliver --same buffer--> outq -> output (tcp)   |
//!                |                             |     \----------------> outq -> output (udp)   |
//!                |                             |      \---------------> outq -> output (file)  |
//!                |                             +--> Publish: decimate -> shm::writer           |
//!                +-----------------------------------------------------------------------------+
//!                                                                   /dev/shm/ringrelay/<channel>
//!                                                                   <- readers (C, Python, Rust)
//! ```
//!
//! Inside the ring, the names are engine steps (`engine::input` and its `deliver`,
//! [`engine::outq`], `engine::output`): each decides, and the driver submits the reads and
//! sends between them. The decimation branch ([`engine::io::Publish`], [`engine::decimate`])
//! writes into the mapped region ([`shm::writer`]) directly, not through the ring.
//!
//! The crate has a hard border between a pure engine and a thin driver:
//!
//! * [`engine`]: every relay decision, with no `unsafe`, no system call and no clock (`now` is
//!   passed in). Driven by completions, ticks and signals ([`engine::Engine`]), it returns the
//!   operations to submit as values ([`engine::io::Effects`]) and reaches the world only through
//!   the traits [`engine::io::Sys`], [`engine::io::Memory`] and [`engine::io::Publish`]. Reading
//!   and writing (`engine::input`, `engine::output`), endpoint life (`engine::links`), the
//!   splice path (`engine::splicing`, [`engine::splice`]), per-output queues and the
//!   slow-output policy ([`engine::outq`]), the buffer books ([`engine::buffers`],
//!   [`engine::rings`]), tags ([`engine::token`]) and decimation ([`engine::decimate`]).
//! * [`driver`]: the one io_uring ring ([`driver::ring`], the one place SQEs are written; built
//!   by [`driver::setup`]), the registered buffer arena ([`driver::arena`]), provided-buffer
//!   rings ([`driver::bufring`]), sockets and the [`engine::io::Sys`] impl ([`driver::net`],
//!   [`driver::sys`]), and the loop ([`driver::event_loop`]) that hands completions to the
//!   engine and submits what it asked for.
//! * [`config`]: the configuration file, URLs, sizes and sample formats, parsed and validated;
//!   pure apart from reading the file.
//! * [`shm`]: the shared-memory regions (layout, writer, reader, publisher, stats file).
//! * [`metrics`]: what the relay reports about itself (a [`metrics::Snapshot`] of every
//!   counter, written into the counters region) and its renderings: table, JSON, Prometheus.
//! * [`ops`]: detaching as a daemon, logging, signals.
//! * [`cli`]: one module per command: [`cli::run`] (start-up, then the driver's loop),
//!   [`cli::check`], [`cli::gen`], [`cli::probe`], [`cli::demo`], [`cli::tail`], [`cli::stat`].
//!
//! The border: the engine imports nothing from the driver (only [`config`] and plain [`shm`]
//! types), so the real driver and the simulation (`tests/sim.rs`) run the same engine.
//! `#![deny(unsafe_code)]` holds at the crate root; `unsafe` is allowed only in the driver
//! modules that touch the kernel ([`driver::ring`], [`driver::setup`], [`driver::bufring`],
//! [`driver::net`]), in [`shm::writer`] and [`shm::reader`], and in [`ops::daemonize`], each
//! block with its safety argument.
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod driver;
pub mod engine;
pub mod metrics;
pub mod ops;
pub mod shm;
