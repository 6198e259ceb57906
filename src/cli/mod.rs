//! Command-line interface: the list of subcommands and their dispatch.
//!
//! Owns: the names users and scripts type (`run`, `check`, `gen`, `probe`, `demo`, `tail`,
//! `stat`) and the mapping from a command's outcome to the process exit code. It holds no logic
//! and no arguments of its own: each command lives in the module named after it, together with
//! the argh struct of its arguments.

pub mod check;
pub mod demo;
pub mod gen;
pub mod probe;
pub mod run;
pub mod stat;
pub mod tail;

pub use run::RunArgs;

use argh::FromArgs;
use std::path::Path;

/// ringrelay: relay many data channels on one io_uring ring, with decimation into shared memory.
#[derive(FromArgs, Debug)]
pub struct Cli {
    #[argh(subcommand)]
    pub cmd: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Run(run::RunArgs),
    Check(check::CheckArgs),
    Gen(gen::GenArgs),
    Probe(probe::ProbeArgs),
    Demo(demo::DemoArgs),
    Tail(tail::TailArgs),
    Stat(stat::StatArgs),
}

/// Parses the process arguments, runs the command and returns the exit code.
pub fn main() -> i32 {
    if let Ok(spec) = std::env::var(demo::SINK_ENV) {
        return demo::sink_main(&spec);
    }
    let cli = parse_args();
    match cli.cmd {
        Command::Run(a) => run::run(a),
        Command::Check(a) => check::run(&a),
        Command::Gen(a) => gen::run(&a),
        Command::Probe(a) => probe::run(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Tail(a) => tail::run(&a),
        Command::Stat(a) => stat::run(&a),
    }
}

/// `argh::from_env`, with the one adjustment argh cannot express: `stat --watch` without a value
/// (see [`stat::default_watch_interval`]). Exits on `--help` and on errors, as argh does.
fn parse_args() -> Cli {
    let mut args: Vec<String> = match std::env::args_os().map(|s| s.into_string()).collect() {
        Ok(v) => v,
        Err(a) => {
            eprintln!("invalid UTF-8 in an argument: {}", a.to_string_lossy());
            std::process::exit(1)
        }
    };
    if args.is_empty() {
        eprintln!("no program name: argv is empty");
        std::process::exit(1)
    }
    let program = args.remove(0);
    stat::default_watch_interval(&mut args);
    let name = Path::new(&program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(&program);
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    Cli::from_args(&[name], &strs).unwrap_or_else(|early| {
        std::process::exit(match early.status {
            Ok(()) => {
                println!("{}", early.output);
                0
            }
            Err(()) => {
                eprintln!("{}\nRun {name} --help for more information.", early.output);
                1
            }
        })
    })
}
