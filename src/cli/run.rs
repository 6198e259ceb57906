//! `ringrelay run`: the relay itself, in the foreground or detached with `--daemon`.
//!
//! Owns: the command's arguments ([`RunArgs`]) and its start-up order: load or build the
//! configuration, set up logging, check the user, take the pidfile, bind every channel
//! (failing before detaching on a bad address), detach, start the loop
//! ([`crate::driver::event_loop::Daemon`]), drop privileges, report ready (to the waiting
//! parent, and to systemd when `NOTIFY_SOCKET` is set), run.

use crate::config::{self, LogDest};
use crate::driver::event_loop::{bind_all, bind_metrics, Daemon};
use crate::ops::notify::Notifier;
use crate::ops::{daemonize, logging};
use argh::FromArgs;
use log::{error, info};

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

/// Reports a start-up failure once: to the log, and to the waiting parent when detached.
fn fail_start(readiness: daemonize::Readiness, e: &str) {
    if readiness.is_detached() {
        error!("{e}");
    }
    readiness.failed(e);
}

/// `ringrelay run`.
pub fn run(a: RunArgs) -> i32 {
    let (cfg, path) = match (&a.config, &a.input) {
        (Some(_), Some(_)) => {
            eprintln!("ringrelay: run takes either -c FILE or --input/--output, not both");
            return 2;
        }
        (Some(p), None) => (config::load(p), Some(p.clone())),
        (None, Some(i)) => (config::from_cli(i, &a.output), None),
        (None, None) => {
            eprintln!("ringrelay: run needs -c FILE or --input URL --output URL");
            return 2;
        }
    };
    let mut cfg = match cfg {
        Ok(c) => c,
        Err(errs) => {
            for e in &errs {
                eprintln!("{e}");
            }
            return 1;
        }
    };
    if let Some(l) = &a.log_level {
        match logging::parse_level(l) {
            Ok(l) => cfg.global.log_level = l,
            Err(e) => {
                eprintln!("ringrelay: --log-level: {e}");
                return 2;
            }
        }
    }
    let asked_syslog = a.syslog || cfg.global.log == LogDest::Syslog;
    let syslog_target = logging::LogTarget::Syslog {
        facility: cfg.global.log_facility.clone(),
        socket: cfg.global.syslog_socket.clone(),
    };
    let mut target = if asked_syslog {
        syslog_target.clone()
    } else {
        logging::LogTarget::Stderr
    };
    // Syslog that is not up yet is no error: the logger stands in with stderr and connects
    // later by itself (see `ops::logging`). Only a bad facility fails here.
    if let Err(e) = logging::init(&target, cfg.global.log_level) {
        eprintln!("ringrelay: {e}");
        return 1;
    }
    // Read and removed from the environment now, while there is one thread; its problems are
    // logged, never fatal.
    let notifier = Notifier::from_env();
    if a.daemon && !asked_syslog {
        // A detached daemon's stderr is /dev/null: log to syslog, now or once it appears.
        match logging::init(&syslog_target, cfg.global.log_level) {
            Ok(()) => {
                if logging::syslog_up() {
                    eprintln!(
                        "ringrelay: --daemon: logging to syslog (stderr closes once detached)"
                    );
                } else {
                    eprintln!("ringrelay: --daemon: logging to syslog once it appears (stderr closes once detached)");
                }
                target = syslog_target;
            }
            Err(e) => {
                let _ = logging::init(&target, cfg.global.log_level);
                eprintln!("ringrelay: --daemon without syslog ({e}): the log is discarded once detached; set log = syslog");
            }
        }
    }
    let use_syslog = matches!(target, logging::LogTarget::Syslog { .. });
    if let Err(e) =
        daemonize::check_require_user(cfg.global.require_user, cfg.global.user.as_deref())
    {
        eprintln!("ringrelay: {e}");
        return 1;
    }
    let pidpath = a
        .pidfile
        .clone()
        .map(std::path::PathBuf::from)
        .or_else(|| cfg.global.pidfile.clone());
    let mut pidfile = match pidpath.as_ref().map(daemonize::Pidfile::acquire) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            eprintln!("ringrelay: {e}");
            return 1;
        }
        None => None,
    };
    let bound = bind_all(&cfg).and_then(|c| Ok((c, bind_metrics(&cfg)?)));
    let (channels, metrics) = match bound {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            // Said on the terminal too, unless the logger already wrote it there.
            if use_syslog && logging::syslog_up() {
                eprintln!("ringrelay: {e}");
            }
            return 1;
        }
    };
    let readiness = if a.daemon {
        match daemonize::detach() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("ringrelay: {e}");
                return 1;
            }
        }
    } else {
        daemonize::Readiness::foreground()
    };
    if a.daemon {
        // The pid in syslog lines is the daemon's, not the parent's.
        let _ = logging::init(&target, cfg.global.log_level);
    }
    if let Some(p) = pidfile.as_mut() {
        if let Err(e) = p.write_pid() {
            readiness.failed(&e);
            return 1;
        }
    }
    let n = cfg.channels.len();
    let user = cfg.global.user.clone();
    let group = cfg.global.group.clone();
    let mut d = match Daemon::start(cfg, channels, path) {
        Ok(d) => d,
        Err(e) => {
            fail_start(readiness, &e);
            return 1;
        }
    };
    if let Some((fd, addr)) = metrics {
        d.serve_metrics(fd, addr);
    }
    if user.is_some() || group.is_some() {
        if let Err(e) = daemonize::drop_privileges(user.as_deref(), group.as_deref()) {
            fail_start(readiness, &e);
            return 1;
        }
    }
    info!("ready: {n} channels");
    // Before the parent exits: systemd learns the daemon's pid while its main process lives.
    let mainpid = readiness.is_detached().then(std::process::id);
    d.notify_ready(notifier, mainpid);
    readiness.ready();
    let code = d.run();
    drop(d);
    drop(pidfile);
    code
}
