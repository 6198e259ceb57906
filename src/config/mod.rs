//! The configuration file: an INI-like text parsed by hand into validated values.
//!
//! Owns: every key's name, default and range, and the `ringrelay check` command. Errors are
//! values that carry FILE, LINE and the key; one pass reports all of them. Pure apart from
//! reading the file: no sockets, no ring, and nothing from the engine, the driver or the
//! commands (they depend on this module, never the other way round); from [`crate::shm`] it
//! takes only the names of the files a channel publishes.
//!
//! ```text
//! [global]
//! sqpoll = auto            # on | off | auto
//! buffer_size = 64KiB
//! [channel seismo]
//! input  = udp://0.0.0.0:5000 group=239.1.1.1 iface=eth0
//! output = tcp-listen://0.0.0.0:6000 max_clients=64
//! ```
//!
//! Where each part lives: `read` (the file into text: a regular file of at most 4 MiB, UTF-8,
//! a byte order mark dropped), `parse` (lines and sections into keys, FILE:LINE errors,
//! [`load`], [`parse_str`], [`from_cli`]), `global` (the `[global]` keys), `channel` (the
//! `[channel NAME]` keys), `conflicts` (the checks across endpoints and channels: binds,
//! shared-memory names, UDP loops), `values` (value forms both share),
//! [`splice`] (the splice mode and which channels may splice), `reload` (which channels a
//! reload keeps running), `check` (the normalized summary and `ringrelay check`), and the
//! value languages [`url`] (with [`cidr`] and [`serial`]), [`units`], [`keepalive`] and
//! [`sample`].

pub mod cidr;
pub mod commands;
pub mod idle;
pub mod keepalive;
pub mod mqtt;
pub mod records;
pub mod sample;
pub mod serial;
pub mod splice;
pub mod spool;
pub mod units;
pub mod url;

mod channel;
mod check;
mod conflicts;
mod global;
mod parse;
mod read;
mod reload;
mod values;

#[cfg(test)]
mod tests;

pub use channel::{
    ChannelConfig, Framing, OutputConfig, Producer, DEFAULT_MAX_BACKLOG, DEFAULT_SHM_FRAMES,
    MIN_SHM_FRAMES,
};
pub use check::check_command;
pub use global::{FeatureSet, Global, LogDest, SqpollMode, DATAGRAM_HEADROOM};
pub use parse::{from_cli, load, parse_str, ConfigError};
pub use splice::SpliceMode;

/// A whole validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it came from (or `<command line>`).
    pub file: String,
    pub global: Global,
    pub channels: Vec<ChannelConfig>,
}
