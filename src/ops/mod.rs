//! Process operations: detaching as a daemon (pidfile, privileges), and logging to stderr or
//! syslog.
#[allow(unsafe_code)]
pub mod daemonize;
pub mod logging;
