//! `ringrelay check -c FILE`: validate a configuration file and print it normalized.
//!
//! Owns: the command's arguments ([`CheckArgs`]). Loading, validation, the normalized summary
//! and the error report live in [`crate::config::check_command`].

use argh::FromArgs;

/// Validate a configuration file and print a normalized summary.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check")]
pub struct CheckArgs {
    /// configuration file
    #[argh(option, short = 'c')]
    pub config: String,
}

/// Runs `ringrelay check`: 0 when the file is valid, 1 (with every error printed) otherwise.
pub fn run(a: &CheckArgs) -> i32 {
    crate::config::check_command(&a.config)
}
