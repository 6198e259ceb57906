//! The signals the daemon reacts to: SIGTERM and SIGINT (stop), SIGHUP (reload), SIGUSR1 (log
//! the counters). A handler only sets a flag and writes a byte into a pipe whose other end the
//! ring reads, so the loop notices a signal as a completion like any other.
//!
//! Must never: do anything in a handler but set a flag and write to the pipe.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Signals the loop reacts to, set by signal handlers and noticed through the pipe.
pub struct Signals {
    read_end: OwnedFd,
    _write_end: OwnedFd,
    term: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
    usr1: Arc<AtomicBool>,
}

/// What arrived since the last look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub term: bool,
    pub hup: bool,
    pub usr1: bool,
}

impl Signals {
    /// Installs the handlers and the pipe.
    pub fn install() -> Result<Signals, String> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("signal pipe: {e}"))?;
        // The handler's end must never block; the ring reads the other end.
        nix::fcntl::fcntl(
            &w,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| format!("signal pipe: {e}"))?;
        let term = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        let usr1 = Arc::new(AtomicBool::new(false));
        let reg = |sig: i32, flag: &Arc<AtomicBool>| -> Result<(), String> {
            signal_hook::flag::register(sig, Arc::clone(flag))
                .map_err(|e| format!("signal {sig}: {e}"))?;
            let w2 = w.try_clone().map_err(|e| format!("signal pipe: {e}"))?;
            signal_hook::low_level::pipe::register_raw(sig, w2)
                .map_err(|e| format!("signal {sig}: {e}"))?;
            Ok(())
        };
        reg(SIGTERM, &term)?;
        reg(SIGINT, &term)?;
        reg(SIGHUP, &hup)?;
        reg(SIGUSR1, &usr1)?;
        Ok(Signals {
            read_end: r,
            _write_end: w,
            term,
            hup,
            usr1,
        })
    }

    /// The pipe's read end, for the ring.
    pub fn fd(&self) -> RawFd {
        self.read_end.as_raw_fd()
    }

    /// Takes the flags that were set.
    pub fn take(&self) -> Pending {
        Pending {
            term: self.term.swap(false, Ordering::Relaxed),
            hup: self.hup.swap(false, Ordering::Relaxed),
            usr1: self.usr1.swap(false, Ordering::Relaxed),
        }
    }
}
