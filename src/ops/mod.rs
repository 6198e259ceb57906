//! Process operations: detaching as a daemon (pidfile, privileges), logging to stderr or
//! syslog, the signals the daemon reacts to, which directories it may write into, and the
//! notifications to systemd.
#[allow(unsafe_code)]
pub mod daemonize;
pub mod fsperm;
pub mod logging;
pub mod notify;
pub mod signals;
