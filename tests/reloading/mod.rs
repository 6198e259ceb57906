//! Reload steps shared by the reload test files (`reload.rs`, `reload_drain.rs`): write a
//! config and SIGHUP the daemon, then wait for its reload summary and check the counts; wait
//! until a removed channel's port refuses connections.

use crate::common::*;
use nix::sys::signal::Signal::SIGHUP;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a reload, a port closing or a port opening may take.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// The daemon's reload summary lines so far.
pub fn summaries(relay: &Relay) -> Vec<String> {
    relay
        .log()
        .lines()
        .filter(|l| l.contains("reload: ") && l.contains(" unchanged, "))
        .map(str::to_string)
        .collect()
}

/// Writes `conf`, sends SIGHUP and waits for the reload summary, which must report these
/// counts. `done` is the number of summaries before this reload.
pub fn reload(relay: &mut Relay, dir: &TempDir, conf: &str, done: usize, want: [usize; 4]) {
    std::fs::write(dir.join("ringrelay.conf"), conf).expect("write config");
    relay.signal(SIGHUP);
    let ok = wait_until(RELOAD_TIMEOUT, || summaries(relay).len() > done);
    relay.assert_running("after SIGHUP");
    assert!(
        ok,
        "no reload summary within {RELOAD_TIMEOUT:?} of SIGHUP number {}; config:\n{conf}\nstderr:\n{}",
        done + 1,
        relay.log()
    );
    let line = summaries(relay)[done].clone();
    let [kept, new, restarted, removed] = want;
    let counts = format!("{kept} unchanged, {new} new, {restarted} restarted, {removed} removed");
    assert!(
        line.contains(&counts),
        "reload {}: the daemon says '{line}', expected '{counts}'; config:\n{conf}",
        done + 1
    );
}

/// Waits until nothing listens on `addr` any more (connections are refused).
pub fn wait_refused(addr: SocketAddr, what: &str) {
    let mut last = String::new();
    let ok = wait_until(RELOAD_TIMEOUT, || {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => true,
            Err(e) => {
                last = e.to_string();
                false
            }
            Ok(_) => {
                last = "accepted".into();
                false
            }
        }
    });
    assert!(
        ok,
        "{what}: {addr} still answers {RELOAD_TIMEOUT:?} after the reload (last: {last})"
    );
}
