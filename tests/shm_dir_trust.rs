//! The relay publishes only into a `shm_dir` it can trust, as sshd's StrictModes trusts a home
//! directory: owned by root, by the relay's own user or by the user it runs as (`user =`), and
//! not writable by group or others (unless sticky). Anything else fails the start with a
//! message naming the directory, its owner and the rule.
//!
//! Changing a directory's owner needs root: as another user these tests print a note and pass.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;

/// uid and gid of `nobody` on Debian and most other systems.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A config with one decimating channel published into `shm`, plus `extra` global lines.
fn config(shm: &ShmDir, extra: &str) -> String {
    let input = free_udp_port(LOCALHOST4);
    format!(
        "{}{extra}\n[channel dec]\ninput = udp://127.0.0.1:{input}\nsample = i16le\n\
         decimate = every:2\nshm_frames = 64\n",
        shm.global_section()
    )
}

/// Creates `shm`'s directory with `mode`, owned by `uid`.
fn make_dir(shm: &ShmDir, mode: u32, uid: u32) {
    std::fs::create_dir(shm.path()).unwrap();
    std::fs::set_permissions(shm.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    std::os::unix::fs::chown(shm.path(), Some(uid), Some(uid)).unwrap();
}

fn start_fails(text: &str, what: &str) -> String {
    let dir = TempDir::new("shm-trust");
    std::fs::write(dir.join("ringrelay.conf"), text).unwrap();
    let (code, _, stderr) =
        run_to_end(Features::Auto, &["run", "-c", "ringrelay.conf"], dir.path());
    assert_eq!(
        code,
        Some(1),
        "{what}: the relay did not refuse; stderr:\n{stderr}"
    );
    stderr
}

#[test]
fn shm_dir_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("note: not root: cannot chown a directory to nobody; test skipped");
        return;
    }
    let shm = ShmDir::new("own");
    make_dir(&shm, 0o755, NOBODY);
    let err = start_fails(&config(&shm, ""), "shm_dir owned by nobody");
    assert!(
        err.contains(&format!("shm_dir {} is owned by uid {NOBODY}", shm.str())),
        "{err}"
    );
    assert!(
        err.contains("must belong to root or to the user the relay runs as"),
        "{err}"
    );
    assert!(
        !shm.path().join("dec").exists(),
        "a region was published anyway"
    );
}

#[test]
fn group_writable_shm_dir_is_refused() {
    let shm = ShmDir::new("grp");
    make_dir(&shm, 0o775, nix::unistd::geteuid().as_raw());
    let err = start_fails(&config(&shm, ""), "group-writable shm_dir");
    assert!(
        err.contains(&format!(
            "shm_dir {} is writable by group or others",
            shm.str()
        )),
        "{err}"
    );
}

#[test]
fn shm_dir_owned_by_the_configured_user_is_accepted() {
    // The packaged set-up: tmpfiles.d makes /dev/shm/ringrelay for the `ringrelay` user, and
    // the relay starts as root with `user = ringrelay`.
    if !is_root() {
        eprintln!("note: not root: cannot start the relay with user = nobody; test skipped");
        return;
    }
    let shm = ShmDir::new("run");
    make_dir(&shm, 0o755, NOBODY);
    let dir = TempDir::new("shm-trust");
    let (relay, ()) = Relay::start(Features::Auto, &dir, || {
        (
            config(&shm, &format!("user = {NOBODY}\ngroup = {NOBODY}")),
            (),
        )
    });
    assert!(shm.path().join("dec").exists(), "no region published");
    relay.stop();
}
