//! Command-line interface: argh subcommands and their dispatch.
//!
//! Owns: the names users and scripts type (`run`, `check`, `gen`, `probe`, `demo`, `tail`,
//! `stat`) and the mapping from a command's outcome to the process exit code. It holds no logic
//! of its own: each command lives in the module named after it.

pub mod demo;
pub mod gen;
pub mod probe;
pub mod stat;
pub mod tail;

use argh::FromArgs;

/// ringrelay: relay many data channels on one io_uring ring, with decimation into shared memory.
#[derive(FromArgs, Debug)]
pub struct Cli {
    #[argh(subcommand)]
    pub cmd: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Run(RunArgs),
    Check(CheckArgs),
    Gen(GenArgs),
    Probe(ProbeArgs),
    Demo(DemoArgs),
    Tail(TailArgs),
    Stat(StatArgs),
}

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

/// Validate a configuration file and print a normalized summary.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check")]
pub struct CheckArgs {
    /// configuration file
    #[argh(option, short = 'c')]
    pub config: String,
}

/// Send a test signal over UDP, TCP or a Unix socket.
#[derive(FromArgs, Debug, Clone)]
#[argh(subcommand, name = "gen")]
pub struct GenArgs {
    /// destination URL (udp://, tcp://, unix://, tcp-listen://)
    #[argh(positional)]
    pub url: String,
    /// sample format (u8 i8 u16le i16le i16be u32le i32le i32be f32le f32be f64le)
    #[argh(option, default = "String::from(\"i16le\")")]
    pub format: String,
    /// frames per second, or `max` for as fast as possible
    #[argh(option, default = "String::from(\"48000\")")]
    pub rate: String,
    /// signal: sine:HZ, square:HZ, ramp, counter, noise
    #[argh(option, default = "String::from(\"sine:440\")")]
    pub signal: String,
    /// interleaved sub-channels per frame
    #[argh(option, default = "1")]
    pub interleave: u32,
    /// how long to send (e.g. 10s); without it, until killed or --bytes/--frames is reached
    #[argh(option)]
    pub duration: Option<String>,
    /// payload bytes per packet or write (rounded down to whole frames)
    #[argh(option)]
    pub packet_bytes: Option<String>,
    /// stop after this many frames
    #[argh(option)]
    pub frames: Option<u64>,
    /// stop after this many bytes (a size such as 1GiB; rounded down to whole frames)
    #[argh(option)]
    pub bytes: Option<String>,
    /// bytes of header before each datagram's samples (a big-endian packet counter, zero-padded)
    #[argh(option, default = "0")]
    pub header_bytes: u32,
    /// amplitude as a fraction of full scale (0..1)
    #[argh(option, default = "0.5")]
    pub amplitude: f64,
    /// seed for the noise signal
    #[argh(option, default = "1")]
    pub seed: u64,
    /// print what was sent when done
    #[argh(switch)]
    pub verbose: bool,
}

/// Print which io_uring features this kernel has and which paths the daemon will use.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "probe")]
pub struct ProbeArgs {
    /// force the Linux 5.10 baseline feature set
    #[argh(switch)]
    pub baseline: bool,
}

/// Run the relay on a built-in loopback configuration fed by the built-in generator.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "demo")]
pub struct DemoArgs {
    /// stop after this long (e.g. 10s); default: until Ctrl-C
    #[argh(option)]
    pub duration: Option<String>,
    /// sqpoll mode for the demo ring: on, off or auto
    #[argh(option, default = "String::from(\"auto\")")]
    pub sqpoll: String,
}

/// Print decimated frames of a channel from shared memory.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "tail")]
pub struct TailArgs {
    /// channel name (or a path to a region file)
    #[argh(positional)]
    pub channel: String,
    /// directory of the regions
    #[argh(option, default = "String::from(\"/dev/shm/ringrelay\")")]
    pub shm_dir: String,
    /// keep printing new frames
    #[argh(switch, short = 'f')]
    pub follow: bool,
    /// print only the last N frames held now
    #[argh(option)]
    pub last: Option<u64>,
    /// text, csv or json
    #[argh(option, default = "String::from(\"text\")")]
    pub format: String,
    /// cascade level (0 is the first factor)
    #[argh(option, default = "0")]
    pub level: u32,
    /// with --follow, stop after this long (e.g. 5s)
    #[argh(option)]
    pub duration: Option<String>,
}

/// Show the daemon's per-channel and per-output counters.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "stat")]
pub struct StatArgs {
    /// directory of the regions
    #[argh(option, default = "String::from(\"/dev/shm/ringrelay\")")]
    pub shm_dir: String,
    /// print JSON
    #[argh(switch)]
    pub json: bool,
}

/// Parses the process arguments, runs the command and returns the exit code.
pub fn main() -> i32 {
    if let Ok(spec) = std::env::var(crate::cli::demo::SINK_ENV) {
        return crate::cli::demo::sink_main(&spec);
    }
    let cli: Cli = argh::from_env();
    match cli.cmd {
        Command::Run(a) => crate::driver::event_loop::run_command(a),
        Command::Check(a) => crate::config::check_command(&a.config),
        Command::Gen(a) => crate::cli::gen::run(&a),
        Command::Probe(a) => crate::cli::probe::run(a.baseline),
        Command::Demo(a) => crate::cli::demo::run(&a),
        Command::Tail(a) => crate::cli::tail::run(&a),
        Command::Stat(a) => crate::cli::stat::run(&a),
    }
}
