//! Process operations: detaching as a daemon (pidfile, privileges), logging to stderr or
//! syslog, the signals the daemon reacts to, and which directories it may write into.
#[allow(unsafe_code)]
pub mod daemonize;
pub mod fsperm;
pub mod logging;
pub mod signals;
