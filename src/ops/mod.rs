//! Process operations: detaching as a daemon (pidfile, privileges), logging to stderr or
//! syslog, and the signals the daemon reacts to.
#[allow(unsafe_code)]
pub mod daemonize;
pub mod logging;
pub mod signals;
