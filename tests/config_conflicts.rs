//! Configurations that `ringrelay check` must refuse because `ringrelay run` could not start
//! them, or would start them wrongly: a channel named like another channel's shm region or the
//! stats file, a wildcard listener overlapping a specific one on the same port, and a UDP output
//! that sends to its own channel's input.
//!
//! Each refused case is checked twice: `check -c` exits 1 with `FILE:LINE: key:` at the line
//! found by its text, and `run -c` exits 1 printing that same error line before binding
//! anything. Each accepted neighbour (what is exactly not a conflict) passes `check`.

mod common;

use common::*;

const CONF: &str = "ringrelay.conf";

/// A config directory with `text` (after a `[global]` whose `shm_dir` is inside the directory).
fn config_dir(text: &str) -> (TempDir, String) {
    let dir = TempDir::new("conflicts");
    let text = format!(
        "[global]\nshm_dir = {}\nshutdown_timeout = 1s\n\n{text}",
        dir.join("shm").display()
    );
    std::fs::write(dir.join(CONF), &text).unwrap();
    (dir, text)
}

/// The 1-based number of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with '{needle}' in:\n{text}"))
        + 1
}

/// The stderr lines that are errors of the config file (`ringrelay.conf:LINE: ...`).
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{CONF}:")))
        .collect()
}

/// `check` and `run` both refuse `text` with exactly one error, on the line containing
/// `needle`, naming `key`, and whose message contains `says`.
fn refused(text: &str, needle: &str, key: &str, says: &str) {
    let (dir, text) = config_dir(text);
    let (code, _out, err) = run_to_end(Features::Auto, &["check", "-c", CONF], dir.path());
    assert_eq!(
        code,
        Some(1),
        "check exit code; config:\n{text}\nstderr:\n{err}"
    );
    let errors = error_lines(&err);
    assert_eq!(
        errors.len(),
        1,
        "one error expected; config:\n{text}\nstderr:\n{err}"
    );
    let want = format!("{CONF}:{}: {key}: ", line_of(&text, needle));
    assert!(
        errors[0].starts_with(&want) && errors[0].contains(says),
        "wanted '{want}...{says}...'; config:\n{text}\nstderr:\n{err}"
    );
    let (code, _out, run_err) = run_to_end(Features::Auto, &["run", "-c", CONF], dir.path());
    assert_eq!(
        code,
        Some(1),
        "run exit code; config:\n{text}\nstderr:\n{run_err}"
    );
    assert!(
        run_err.lines().any(|l| l == errors[0]),
        "run does not report '{}'; stderr:\n{run_err}",
        errors[0]
    );
}

/// `check` accepts `text`.
fn accepted(text: &str) {
    let (dir, text) = config_dir(text);
    let (code, _out, err) = run_to_end(Features::Auto, &["check", "-c", CONF], dir.path());
    assert_eq!(
        code,
        Some(0),
        "check should pass; config:\n{text}\nstderr:\n{err}"
    );
}

/// A channel publishing decimated samples to shm from a UDP input on a free port.
fn shm_channel(name: &str, decimate: &str) -> String {
    format!("[channel {name}]\ninput = udp://127.0.0.1:0\nsample = i16le\ndecimate = {decimate}\n")
}

#[test]
fn channel_named_like_a_later_level_of_another() {
    // `a` publishes regions `a` and `a.100`.
    let text = format!(
        "{}\n{}",
        shm_channel("a", "mean:10,100"),
        shm_channel("a.100", "mean:10")
    );
    refused(&text, "[channel a.100]", "[channel]", "'a.100'");
    // The other way round, the level is the second claim: reported at `decimate`.
    let text = format!(
        "{}\n{}",
        shm_channel("a.100", "mean:10"),
        shm_channel("a", "minmax:10,100")
    );
    refused(&text, "minmax:10,100", "decimate", "'a.100'");
}

#[test]
fn channel_names_that_do_not_collide() {
    // The first level is named after the channel alone: nothing is called `a.10`.
    accepted(&format!(
        "{}\n{}",
        shm_channel("a", "mean:10,100"),
        shm_channel("a.10", "mean:10")
    ));
    // A channel that does not publish claims no region name.
    accepted(&format!(
        "{}shm = off\noutput = udp://127.0.0.1:9\n\n{}",
        shm_channel("a.100", "mean:10"),
        shm_channel("a", "mean:10,100")
    ));
    accepted(&format!(
        "{}\n[channel ringrelay.stats]\ninput = udp://127.0.0.1:0\noutput = udp://127.0.0.1:9\n",
        shm_channel("a", "mean:10")
    ));
}

#[test]
fn channel_named_like_the_stats_file() {
    refused(
        &shm_channel("ringrelay.stats", "mean:10"),
        "[channel ringrelay.stats]",
        "[channel]",
        "ringrelay.stats",
    );
}

#[test]
fn wildcard_listener_overlaps_a_specific_one() {
    let p = free_tcp_port(LOCALHOST4);
    let text = format!(
        "[channel a]\ninput = tcp-listen://0.0.0.0:{p}\noutput = udp://127.0.0.1:9\n\n\
         [channel b]\ninput = udp://127.0.0.1:0\noutput = tcp-listen://127.0.0.1:{p}\n"
    );
    refused(&text, "tcp-listen://127.0.0.1", "output", "0.0.0.0");
    // The specific one first: the wildcard is the second claim.
    let text = format!(
        "[channel a]\ninput = tcp-listen://127.0.0.1:{p}\noutput = udp://127.0.0.1:9\n\
         output = tcp-listen://0.0.0.0:{p}\n"
    );
    refused(&text, "tcp-listen://0.0.0.0", "output", "127.0.0.1");
    let u = free_udp_port(LOCALHOST4);
    let text = format!(
        "[channel a]\ninput = udp://127.0.0.1:{u}\noutput = udp://127.0.0.1:9\n\n\
         [channel b]\ninput = udp://0.0.0.0:{u}\noutput = udp://127.0.0.1:9\n"
    );
    refused(&text, "udp://0.0.0.0", "input", "127.0.0.1");
}

#[test]
fn ipv6_wildcard_overlaps_only_ipv6() {
    // Only `check` here: the machine may have no IPv6 to run with.
    let text = "[channel a]\ninput = tcp-listen://[::]:7400\noutput = udp://127.0.0.1:9\n\n\
                [channel b]\ninput = udp://127.0.0.1:0\noutput = tcp-listen://[::1]:7400\n";
    let (dir, text) = config_dir(text);
    let (code, _out, err) = run_to_end(Features::Auto, &["check", "-c", CONF], dir.path());
    assert_eq!(code, Some(1), "config:\n{text}\nstderr:\n{err}");
    let want = format!("{CONF}:{}: output: ", line_of(&text, "[::1]:7400"));
    assert!(err.contains(&want), "wanted '{want}'; stderr:\n{err}");
    // IPv6 listeners are IPv6-only: [::] leaves 0.0.0.0 and 127.0.0.1 free.
    accepted(
        "[channel a]\ninput = tcp-listen://[::]:7400\noutput = tcp-listen://127.0.0.1:7400\n\
         output = tcp-listen://0.0.0.0:7401\n\n\
         [channel b]\ninput = udp://[::]:7401\noutput = tcp-listen://[::1]:7402\n",
    );
}

#[test]
fn overlaps_that_are_not_conflicts() {
    accepted(
        // Port 0 never conflicts; tcp and udp are separate; two specific addresses are separate.
        "[channel a]\ninput = tcp-listen://0.0.0.0:0\noutput = tcp-listen://127.0.0.1:0\n\
         output = tcp-listen://127.0.0.1:7500\noutput = tcp-listen://127.0.0.2:7500\n\n\
         [channel b]\ninput = udp://0.0.0.0:7500\noutput = udp://192.0.2.1:7500\n\n\
         [channel c]\ninput = udp://0.0.0.0:0\noutput = udp://127.0.0.1:9\n\n\
         [channel d]\ninput = udp://127.0.0.1:0\noutput = udp://127.0.0.1:9\n",
    );
    // Multicast inputs share their port (SO_REUSEADDR): a group address beside a wildcard.
    accepted(
        "[channel a]\ninput = udp://0.0.0.0:7600 group=239.1.1.1\noutput = udp://127.0.0.1:9\n\n\
         [channel b]\ninput = udp://239.1.1.2:7600 group=239.1.1.2\noutput = udp://127.0.0.1:9\n",
    );
}

#[test]
fn udp_output_to_its_own_input() {
    let u = free_udp_port(LOCALHOST4);
    refused(
        &format!("[channel a]\ninput = udp://127.0.0.1:{u}\noutput = udp://127.0.0.1:{u}\n"),
        "output =",
        "output",
        "loop",
    );
    refused(
        &format!("[channel a]\ninput = udp://0.0.0.0:{u}\noutput = udp://127.0.0.7:{u}\n"),
        "output =",
        "output",
        "loop",
    );
    // Multicast loopback is on: a group the input joined comes back to it.
    refused(
        &format!(
            "[channel a]\ninput = udp://0.0.0.0:{u} group=239.1.1.9\noutput = udp://239.1.1.9:{u}\n"
        ),
        "output =",
        "output",
        "loop",
    );
    let text = "[channel a]\ninput = udp://[::]:7700\noutput = udp://[::1]:7700\n";
    let (dir, text) = config_dir(text);
    let (code, _out, err) = run_to_end(Features::Auto, &["check", "-c", CONF], dir.path());
    assert_eq!(code, Some(1), "config:\n{text}\nstderr:\n{err}");
    assert!(err.contains("loop"), "stderr:\n{err}");
}

#[test]
fn udp_outputs_that_are_not_loops() {
    accepted(
        "[channel a]\ninput = udp://127.0.0.1:7800\noutput = udp://127.0.0.2:7800\n\
         output = udp://127.0.0.1:7801\noutput = udp://192.0.2.1:7800\n\n\
         [channel b]\ninput = udp://[::]:7802\noutput = udp://127.0.0.1:7802\n\n\
         [channel c]\ninput = udp://0.0.0.0:7803 group=239.1.1.9\noutput = udp://239.1.1.8:7803\n",
    );
}
