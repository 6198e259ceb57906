//! Daemon manners: the locked pidfile, detaching from the terminal with a readiness report to
//! the caller, and dropping root privileges.
//!
//! Owns: [`Pidfile`] (one instance per pidfile, enforced by a lock the kernel drops when the
//! process dies), [`detach`] and [`Readiness`] (fork, setsid, chdir /, stdio to /dev/null; the
//! parent stays until the daemon says "ready" or "failed" and exits 0 or 1 accordingly),
//! [`drop_privileges`] and [`check_require_user`].
//!
//! Must never: fork a process that has threads (an io_uring SQPOLL thread, a signal-hook
//! iterator thread: only the calling thread survives a fork), so [`detach`] refuses when
//! `/proc/self/status` shows more than one thread. The only `unsafe` here is the fork.
//!
//! The startup sequence of `ringrelay run` (the order matters):
//!
//! ```text
//! config parsed and validated            errors: exit 1, on stderr
//! pidfile = Pidfile::acquire(path)       a second instance is refused here, before binding
//! bind every socket                      "port in use" still reaches the caller's terminal
//! readiness = detach()                   --daemon only; Readiness::foreground() otherwise
//! pidfile.write_pid()                    the daemon's pid, not the parent's
//! create the ring (SQPOLL), shm files    still root: SQPOLL on 5.10 needs CAP_SYS_ADMIN
//! drop_privileges(user, group)           user = / group = of [global]
//! readiness.ready()                      the caller (init script) returns 0 now
//! event loop
//! ```
//! Any error after `detach` goes to `readiness.failed(msg)`, which the parent prints to its
//! stderr before exiting 1, so `service ringrelay start` shows why the start failed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::unistd::{Gid, Uid};

/// A pidfile this process holds an exclusive `flock` on.
///
/// The lock, not the file's existence, says whether an instance runs: the kernel releases it
/// when the holder dies, so a pidfile left by a crash (or by `kill -9`) does not block a start,
/// while a live instance is refused with its pid in the message. The file is removed on drop
/// when it still is the file we locked (removal fails quietly after a privilege drop to a user
/// that cannot write the directory: the next start takes the stale file over).
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    file: Flock<File>,
}

impl Pidfile {
    /// Creates or opens `path`, takes the lock without waiting and writes our pid.
    pub fn acquire(path: impl AsRef<Path>) -> Result<Pidfile, String> {
        let path = path.as_ref();
        // A previous holder may unlink the file between our open and our lock; then we hold a
        // lock on a deleted inode. Compare inodes after locking and retry in that case.
        for _ in 0..10 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| format!("pidfile {}: cannot open: {e}", path.display()))?;
            let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(f) => f,
                Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
                    let mut s = String::new();
                    let _ = f.read_to_string(&mut s);
                    let holder = match s.trim().parse::<u32>() {
                        Ok(pid) => format!("pid {pid}"),
                        Err(_) => "another process".to_string(),
                    };
                    return Err(format!(
                        "already running as {holder} (pidfile {} is locked)",
                        path.display()
                    ));
                }
                Err((_, e)) => return Err(format!("pidfile {}: cannot lock: {e}", path.display())),
            };
            let ours = file
                .metadata()
                .map_err(|e| format!("pidfile {}: {e}", path.display()))?;
            match std::fs::metadata(path) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {
                    let mut pidfile = Pidfile {
                        path: path.to_path_buf(),
                        file,
                    };
                    pidfile.write_pid()?;
                    return Ok(pidfile);
                }
                _ => {
                    // Unlinked or replaced under us: drop this lock and start over.
                    continue;
                }
            }
        }
        Err(format!(
            "pidfile {}: keeps changing under us; is another instance starting?",
            path.display()
        ))
    }

    /// Writes the current pid (call it again in the daemon after [`detach`]).
    pub fn write_pid(&mut self) -> Result<(), String> {
        let text = format!("{}\n", std::process::id());
        let f: &mut File = &mut self.file;
        f.set_len(0)
            .and_then(|()| f.seek(SeekFrom::Start(0)))
            .and_then(|_| f.write_all(text.as_bytes()))
            .map_err(|e| format!("pidfile {}: cannot write: {e}", self.path.display()))
    }

    /// The path this pidfile was acquired at.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Remove only our own file (same inode), then the lock goes with the descriptor.
        if let (Ok(ours), Ok(m)) = (self.file.metadata(), std::fs::metadata(&self.path)) {
            if ours.ino() == m.ino() && ours.dev() == m.dev() {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// The daemon's half of the startup report to the process that started it.
///
/// Dropping it without calling [`Readiness::ready`] or [`Readiness::failed`] (a crash, an early
/// return) closes the pipe: the parent then reports that the daemon died during startup and
/// exits 1.
#[derive(Debug)]
pub struct Readiness {
    pipe: Option<OwnedFd>,
}

impl Readiness {
    /// A readiness that reports to nobody: the foreground run, where errors go to stderr anyway.
    pub fn foreground() -> Readiness {
        Readiness { pipe: None }
    }

    /// Whether a parent is waiting for the report (that is, [`detach`] made this).
    pub fn is_detached(&self) -> bool {
        self.pipe.is_some()
    }

    /// Startup is complete: the parent exits 0.
    pub fn ready(mut self) {
        if let Some(fd) = self.pipe.take() {
            let _ = File::from(fd).write_all(b"R");
        }
    }

    /// Startup failed: the parent prints `ringrelay: MSG` to its stderr and exits 1. In the
    /// foreground the message goes to our own stderr. The caller exits 1 afterwards.
    pub fn failed(mut self, msg: &str) {
        match self.pipe.take() {
            Some(fd) => {
                let mut report = Vec::with_capacity(msg.len() + 1);
                report.push(b'E');
                report.extend_from_slice(msg.as_bytes());
                let _ = File::from(fd).write_all(&report);
            }
            None => eprintln!("ringrelay: {msg}"),
        }
    }
}

/// Number of threads of this process, when /proc tells.
fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// What the parent does with what it read from the pipe: exit code and message for stderr.
fn parent_verdict(report: &[u8]) -> (i32, Option<String>) {
    match report.split_first() {
        Some((b'R', _)) => (0, None),
        Some((b'E', msg)) => (1, Some(String::from_utf8_lossy(msg).into_owned())),
        _ => (
            1,
            Some("the daemon exited during startup without reporting why (see syslog)".into()),
        ),
    }
}

/// Detaches from the terminal: forks, and returns only in the child (the daemon).
///
/// The parent blocks until the daemon reports through the returned [`Readiness`], then exits:
/// 0 after `ready()`, 1 after `failed(msg)` (printing the message) or when the daemon died
/// first. The child becomes a session leader (`setsid`), moves to `/` and points stdin, stdout
/// and stderr to `/dev/null`; log to syslog from here on. The umask is left alone (the init
/// system sets it). Call it after every socket is bound and before the io_uring ring exists.
pub fn detach() -> Result<Readiness, String> {
    if let Some(n) = thread_count() {
        if n > 1 {
            return Err(format!(
                "cannot detach: the process has {n} threads and only one survives fork \
                 (create the io_uring ring after detaching)"
            ));
        }
    }
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // SAFETY: the process is single-threaded (checked above, where /proc is mounted; the
    // documented startup sequence creates no thread before this point), so the child is a
    // faithful copy and may run arbitrary code, including allocation, after the fork.
    let fork = unsafe { nix::unistd::fork() };
    match fork.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(wr);
            let mut report = Vec::new();
            // EOF arrives when the daemon has reported (and closed its end) or died.
            let _ = File::from(rd).read_to_end(&mut report);
            let (code, msg) = parent_verdict(&report);
            if let Some(msg) = msg {
                eprintln!("ringrelay: {msg}");
            }
            std::process::exit(code);
        }
        nix::unistd::ForkResult::Child => {
            drop(rd);
            nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
            nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
            let null = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(|e| format!("/dev/null: {e}"))?;
            nix::unistd::dup2_stdin(&null)
                .and_then(|()| nix::unistd::dup2_stdout(&null))
                .and_then(|()| nix::unistd::dup2_stderr(&null))
                .map_err(|e| format!("redirecting stdio to /dev/null: {e}"))?;
            Ok(Readiness { pipe: Some(wr) })
        }
    }
}

/// One `/etc/passwd` entry's ids, or `None` when the line is not for `name`.
fn passwd_line_ids(line: &str, name: &str) -> Option<(u32, u32)> {
    let mut f = line.split(':');
    if f.next()? != name {
        return None;
    }
    let _password = f.next()?;
    let uid = f.next()?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    Some((uid, gid))
}

/// One `/etc/group` entry's gid, or `None` when the line is not for `name`.
fn group_line_id(line: &str, name: &str) -> Option<u32> {
    let mut f = line.split(':');
    if f.next()? != name {
        return None;
    }
    let _password = f.next()?;
    f.next()?.parse().ok()
}

/// Resolves a user name (or a numeric uid) to its uid and primary gid.
///
/// The C library comes first; `/etc/passwd` is read directly when it finds nothing, because a
/// static binary's name service lookups can fail on a system with another C library version.
pub fn lookup_user(name: &str) -> Result<(Uid, Gid), String> {
    if let Ok(Some(u)) = nix::unistd::User::from_name(name) {
        return Ok((u.uid, u.gid));
    }
    if let Ok(text) = std::fs::read_to_string("/etc/passwd") {
        if let Some((uid, gid)) = text.lines().find_map(|l| passwd_line_ids(l, name)) {
            return Ok((Uid::from_raw(uid), Gid::from_raw(gid)));
        }
    }
    if let Ok(uid) = name.parse::<u32>() {
        let gid = nix::unistd::User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.gid)
            .unwrap_or(Gid::from_raw(uid));
        return Ok((Uid::from_raw(uid), gid));
    }
    Err(format!("unknown user `{name}`"))
}

/// Resolves a group name (or a numeric gid).
pub fn lookup_group(name: &str) -> Result<Gid, String> {
    if let Ok(Some(g)) = nix::unistd::Group::from_name(name) {
        return Ok(g.gid);
    }
    if let Ok(text) = std::fs::read_to_string("/etc/group") {
        if let Some(gid) = text.lines().find_map(|l| group_line_id(l, name)) {
            return Ok(Gid::from_raw(gid));
        }
    }
    name.parse::<u32>()
        .map(Gid::from_raw)
        .map_err(|_| format!("unknown group `{name}`"))
}

/// Drops root to `user` (and `group`, else the user's primary group) for good.
///
/// Supplementary groups become the user's own from the group database (initgroups(3): `adduser
/// ringrelay dialout` gives the relay its serial ports), or only the one group when no user is
/// named or the user is no name the database knows; then the gid and the uid are
/// set, and the result is verified, including that root cannot be regained. With neither name
/// given nothing changes. Run as a non-root user, it succeeds only when that user already is
/// the one asked for.
pub fn drop_privileges(user: Option<&str>, group: Option<&str>) -> Result<(), String> {
    if user.is_none() && group.is_none() {
        return Ok(());
    }
    let (uid, user_gid) = match user {
        Some(u) => {
            let (uid, gid) = lookup_user(u)?;
            (Some(uid), gid)
        }
        None => (None, nix::unistd::getgid()),
    };
    let gid = match group {
        Some(g) => lookup_group(g)?,
        None => user_gid,
    };
    let who = format!("user {} group {}", user.unwrap_or("(unchanged)"), gid);
    if !nix::unistd::geteuid().is_root() {
        let same_user = uid.is_none_or(|u| u == nix::unistd::geteuid());
        if same_user && gid == nix::unistd::getegid() {
            return Ok(());
        }
        return Err(format!(
            "cannot switch to {who}: not running as root (uid {})",
            nix::unistd::geteuid()
        ));
    }
    let by_name = user
        .and_then(|u| std::ffi::CString::new(u).ok())
        .filter(|u| nix::unistd::User::from_name(&u.to_string_lossy()).is_ok_and(|p| p.is_some()));
    match by_name {
        Some(u) => {
            nix::unistd::initgroups(&u, gid).map_err(|e| format!("initgroups for {who}: {e}"))?
        }
        None => nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups for {who}: {e}"))?,
    }
    nix::unistd::setgid(gid).map_err(|e| format!("setgid for {who}: {e}"))?;
    if let Some(uid) = uid {
        nix::unistd::setuid(uid).map_err(|e| format!("setuid for {who}: {e}"))?;
    }
    // Verify that it stuck.
    if nix::unistd::getgid() != gid || nix::unistd::getegid() != gid {
        return Err(format!("group change to {gid} did not stick"));
    }
    if let Some(uid) = uid {
        if nix::unistd::getuid() != uid || nix::unistd::geteuid() != uid {
            return Err(format!("user change to {uid} did not stick"));
        }
        if !uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err("root privileges could be regained after the drop".into());
        }
    }
    Ok(())
}

/// `require_user = on`: refuses to run as root unless `user =` is set.
pub fn check_require_user(require_user: bool, user: Option<&str>) -> Result<(), String> {
    require_user_verdict(require_user, user, nix::unistd::geteuid().is_root())
}

fn require_user_verdict(require: bool, user: Option<&str>, is_root: bool) -> Result<(), String> {
    if require && is_root && user.is_none() {
        return Err(
            "refusing to run as root: require_user = on and no `user =` in [global] \
                    (set user = ringrelay, or run as an unprivileged user)"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ringrelay-daemonize-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("ringrelay.pid")
    }

    #[test]
    fn pidfile_holds_our_pid_and_refuses_a_second_holder() {
        let path = temp("second");
        let first = Pidfile::acquire(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        // flock locks belong to open file descriptions: a second open is refused even in the
        // same process, exactly as in a second instance.
        let err = Pidfile::acquire(&path).unwrap_err();
        assert!(
            err.contains(&format!("already running as pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(!path.exists(), "pidfile removed on drop");
        let again = Pidfile::acquire(&path).unwrap();
        drop(again);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn stale_pidfile_is_taken_over() {
        let path = temp("stale");
        std::fs::write(&path, "999999\nleftover text\n").unwrap();
        let p = Pidfile::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(p);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn pidfile_in_missing_directory_names_the_path() {
        let err = Pidfile::acquire("/nonexistent-ringrelay-dir/x.pid").unwrap_err();
        assert!(err.contains("/nonexistent-ringrelay-dir/x.pid"), "{err}");
    }

    #[test]
    fn parent_verdicts() {
        assert_eq!(parent_verdict(b"R"), (0, None));
        assert_eq!(
            parent_verdict(b"Eport in use"),
            (1, Some("port in use".to_string()))
        );
        let (code, msg) = parent_verdict(b"");
        assert_eq!(code, 1);
        assert!(msg.unwrap().contains("exited during startup"));
    }

    #[test]
    fn passwd_and_group_lines() {
        let l = "ringrelay:x:998:997:ringrelay daemon:/nonexistent:/usr/sbin/nologin";
        assert_eq!(passwd_line_ids(l, "ringrelay"), Some((998, 997)));
        assert_eq!(passwd_line_ids(l, "ringrela"), None);
        assert_eq!(passwd_line_ids("broken", "broken"), None);
        assert_eq!(group_line_id("ringrelay:x:997:", "ringrelay"), Some(997));
        assert_eq!(group_line_id("shm:x:abc:", "shm"), None);
    }

    #[test]
    fn lookups() {
        assert_eq!(lookup_user("root").unwrap().0, Uid::from_raw(0));
        assert_eq!(lookup_group("0").unwrap(), Gid::from_raw(0));
        assert!(lookup_user("no-such-user-ringrelay")
            .unwrap_err()
            .contains("no-such-user-ringrelay"));
    }

    #[test]
    fn require_user_rules() {
        assert!(require_user_verdict(true, None, true).is_err());
        assert!(require_user_verdict(true, Some("ringrelay"), true).is_ok());
        assert!(require_user_verdict(true, None, false).is_ok());
        assert!(require_user_verdict(false, None, true).is_ok());
    }

    #[test]
    fn no_names_change_nothing() {
        assert!(drop_privileges(None, None).is_ok());
    }
}
