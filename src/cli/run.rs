//! `ringrelay run`: the relay itself, in the foreground or detached with `--daemon`.
//!
//! Owns: the command's arguments ([`RunArgs`]). What the command does (load or build the
//! configuration, bind, start the event loop) is [`crate::driver::daemon::run_command`].

use argh::FromArgs;

/// Run the relay in the foreground (or as a daemon with --daemon).
#[derive(FromArgs, Debug, Default, Clone)]
#[argh(subcommand, name = "run")]
pub struct RunArgs {
    /// configuration file
    #[argh(option, short = 'c')]
    pub config: Option<String>,
    /// input URL of a single channel named `default` (no config file)
    #[argh(option)]
    pub input: Option<String>,
    /// output URL of that channel (repeatable)
    #[argh(option)]
    pub output: Vec<String>,
    /// log to syslog instead of stderr
    #[argh(switch)]
    pub syslog: bool,
    /// detach from the terminal once every socket is bound
    #[argh(switch)]
    pub daemon: bool,
    /// pidfile to create and lock
    #[argh(option)]
    pub pidfile: Option<String>,
    /// log level override (error, warn, info, debug, trace)
    #[argh(option)]
    pub log_level: Option<String>,
}
