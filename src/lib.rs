//! ringrelay: a single-process Linux daemon that relays many independent data channels on one
//! io_uring ring, fans each out to many outputs, and publishes decimated samples into shared
//! memory that external readers attach to.
//!
//! ```text
//!                 +-------------------- one io_uring ring (SQPOLL, registered buffers) -------+
//!  udp/tcp/unix   |                                                                           |
//!  input ------>  | Source --read into pool buffer--> Channel --same buffer--> Output (tcp)   |
//!                 |                                     |      \-----------> Output (udp)   |
//!                 |                                     |       \----------> Output (file)  |
//!                 |                                     +--> Decimator --> ShmWriter        |
//!                 +---------------------------------------------------------------------------+
//!                                                                   /dev/shm/ringrelay/<channel>
//!                                                                   <- readers (C, Python, Rust)
//! ```
//!
//! The crate has a hard border between a pure engine and a thin driver:
//!
//! * Engine (no `unsafe`, no syscalls, time passed in): [`config`], [`url`], [`units`],
//!   [`sample`], [`token`], [`backoff`], [`outq`] (per-output queue and slow-output policy),
//!   [`stats`], [`decimate`], [`shm::layout`], [`splice`] (which channels move their bytes
//!   through a pipe, and that pipe's fill accounting).
//! * Driver (the only `unsafe`): [`ring`] (the one io_uring ring: setup, probing, the one place
//!   SQEs are pushed), [`pool`] (the registered buffer arena), [`bufring`] (provided-buffer
//!   rings that multishot UDP receives pick pool buffers from), [`shm::writer`]/[`shm::reader`]
//!   (the mapped region).
//! * The event loop [`daemon`] owns the ring, the pool and every [`channel::Channel`]: it turns
//!   completions into engine calls and engine decisions into submissions.
//! * Commands: [`cli`] dispatches to [`daemon`] (`run`), [`config`] (`check`), [`gen`], [`probe`],
//!   [`demo`], [`tail`] and [`stat`].
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod driver;
pub mod engine;
pub mod ops;
pub mod shm;
