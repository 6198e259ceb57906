//! `ringrelay check -c FILE`: every class of config error is reported as `FILE:LINE: key: message`
//! on stderr with exit code 1, all errors of a file in one run; a good file gives exit 0 and a
//! summary on stdout.
//!
//! Each case is a config that is valid but for one error, placed on a line found by its text.
//! The check runs in the config's directory with a relative FILE, so FILE is printed as given.

mod common;

use common::*;

const CONF: &str = "ringrelay.conf";

/// A valid channel to put around an error.
const GOOD_CHANNEL: &str =
    "[channel good]\ninput = udp://127.0.0.1:5000\noutput = udp://127.0.0.1:5001\n";

/// Runs `ringrelay check -c ringrelay.conf` on `text`; returns (exit code, stdout, stderr).
fn check(text: &str) -> (Option<i32>, String, String) {
    let dir = TempDir::new("check");
    std::fs::write(dir.join(CONF), text).unwrap();
    run_to_end(Features::Auto, &["check", "-c", CONF], dir.path())
}

/// The 1-based number of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with '{needle}' in:\n{text}"))
        + 1
}

/// The error lines (`FILE:LINE: ...`) of a check's stderr, as (line number, whole line).
fn error_lines(stderr: &str) -> Vec<(usize, String)> {
    let prefix = format!("{CONF}:");
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix(&prefix)?;
            let (num, _) = rest.split_once(':')?;
            Some((num.trim().parse().ok()?, l.to_string()))
        })
        .collect()
}

/// Expects an error reported on `line` naming one of `keys`.
fn expect_error_at(text: &str, stderr: &str, line: usize, keys: &[&str]) {
    let errors = error_lines(stderr);
    let at_line: Vec<&String> = errors
        .iter()
        .filter(|(n, _)| *n == line)
        .map(|(_, l)| l)
        .collect();
    assert!(
        !at_line.is_empty(),
        "no error reported at {CONF}:{line}; config:\n{text}\nstderr:\n{stderr}"
    );
    if keys.is_empty() {
        return;
    }
    assert!(
        at_line.iter().any(|l| keys.iter().any(|k| l.contains(k))),
        "the error at {CONF}:{line} names none of {keys:?}; stderr:\n{stderr}"
    );
}

/// Checks `text`, which has exactly one error: on the line containing `needle`, naming one of
/// `keys` (no key check when empty).
fn expect_one_error(text: &str, needle: &str, keys: &[&str]) {
    let (code, _out, err) = check(text);
    assert_eq!(
        code,
        Some(1),
        "exit code of check; config:\n{text}\nstderr:\n{err}"
    );
    let line = line_of(text, needle);
    expect_error_at(text, &err, line, keys);
    let errors = error_lines(&err);
    assert_eq!(
        errors.len(),
        1,
        "one error expected, got {}; config:\n{text}\nstderr:\n{err}",
        errors.len()
    );
}

fn with_global(global_line: &str) -> String {
    format!("[global]\nsqpoll = auto\n{global_line}\n\n{GOOD_CHANNEL}")
}

fn with_channel_line(channel_line: &str) -> String {
    format!("[global]\nsqpoll = off\n\n[channel odd]\ninput = udp://127.0.0.1:5000\n{channel_line}\noutput = udp://127.0.0.1:5001\n")
}

#[test]
fn good_config_passes_with_a_summary() {
    let text = format!(
        "# a comment\n[global]\nsqpoll = auto   # trailing comment\nbuffer_size = 64KiB\nbuffer_count = 256\nstats_interval = 60s\nshutdown_timeout = 5s\n\n{GOOD_CHANNEL}\n[channel second]\ninput = tcp-listen://[::1]:6000\noutput = tcp-listen://127.0.0.1:6001 max_backlog=256KiB on_slow=disconnect max_clients=8 allow=127.0.0.0/8,::1/128\noutput = tcp://127.0.0.1:6002 on_slow=block\noutput = file:///tmp/ringrelay-check-example.raw rotate=1MiB keep=3\n\n[channel framed]\ninput = udp://[::1]:5003 rcvbuf=1MiB\nframing = u32be\noutput = unix-listen:///tmp/ringrelay-check-example.sock\noutput = udp://239.1.2.3:5004 ttl=1 iface=127.0.0.1\n"
    );
    let (code, out, err) = check(&text);
    assert_eq!(code, Some(0), "check of a good config; stderr:\n{err}");
    assert!(
        error_lines(&err).is_empty(),
        "errors for a good config:\n{err}"
    );
    assert!(
        out.contains("good"),
        "summary does not name channel 'good':\n{out}"
    );
    assert!(
        out.contains("second"),
        "summary does not name channel 'second':\n{out}"
    );
    assert!(
        out.contains("6002"),
        "summary does not show the tcp:// output:\n{out}"
    );
}

#[test]
fn missing_file_is_an_error() {
    let dir = TempDir::new("check-missing");
    let (code, _out, err) = run_to_end(Features::Auto, &["check", "-c", "absent.conf"], dir.path());
    assert_eq!(code, Some(1), "stderr:\n{err}");
    assert!(
        err.contains("absent.conf"),
        "stderr does not name the file:\n{err}"
    );
}

#[test]
fn unknown_key_in_global() {
    expect_one_error(&with_global("bogus_key = 1"), "bogus_key", &["bogus_key"]);
}

#[test]
fn unknown_key_in_channel() {
    expect_one_error(&with_channel_line("colour = blue"), "colour", &["colour"]);
}

#[test]
fn bad_enum_value() {
    expect_one_error(&with_global("log = papyrus"), "papyrus", &["log"]);
    expect_one_error(
        &format!("[global]\nsqpoll = sometimes\n\n{GOOD_CHANNEL}"),
        "sometimes",
        &["sqpoll"],
    );
    expect_one_error(
        &with_global("features = futuristic"),
        "futuristic",
        &["features"],
    );
    expect_one_error(&with_global("log_level = loud"), "loud", &["log_level"]);
    expect_one_error(&with_channel_line("framing = u16le"), "u16le", &["framing"]);
}

/// `framing` length-prefixes datagrams: a stream input has none.
#[test]
fn framing_on_a_stream_input() {
    let text = "[channel streamy]\ninput = tcp-listen://127.0.0.1:5000\nframing = u32be\noutput = tcp-listen://127.0.0.1:5001\n";
    expect_one_error(text, "framing", &["framing"]);
}

#[test]
fn bad_number() {
    expect_one_error(
        &with_global("ring_entries = many"),
        "many",
        &["ring_entries"],
    );
    expect_one_error(&with_global("buffer_count = -3"), "-3", &["buffer_count"]);
}

#[test]
fn bad_size() {
    expect_one_error(
        &with_global("buffer_size = 64QiB"),
        "64QiB",
        &["buffer_size"],
    );
    expect_one_error(
        &with_channel_line("output = tcp-listen://127.0.0.1:6000 max_backlog=lots"),
        "lots",
        &["output", "max_backlog"],
    );
}

#[test]
fn bad_duration() {
    expect_one_error(
        &with_global("stats_interval = soon"),
        "soon",
        &["stats_interval"],
    );
    expect_one_error(
        &with_global("shutdown_timeout = 5 parsecs"),
        "parsecs",
        &["shutdown_timeout"],
    );
}

#[test]
fn missing_input() {
    let text = "[global]\nsqpoll = off\n\n[channel lonely]\noutput = udp://127.0.0.1:5001\n";
    expect_one_error(text, "[channel lonely]", &["input"]);
}

#[test]
fn duplicate_input() {
    let text = "[channel twice]\ninput = udp://127.0.0.1:5000\ninput = udp://127.0.0.1:5002\noutput = udp://127.0.0.1:5001\n";
    let (code, _out, err) = check(text);
    assert_eq!(code, Some(1), "stderr:\n{err}");
    expect_error_at(text, &err, 3, &["input"]);
}

#[test]
fn duplicate_channel() {
    let text = format!("{GOOD_CHANNEL}\n[channel twin]\ninput = udp://127.0.0.1:5100\noutput = udp://127.0.0.1:5101\n\n[channel twin]\ninput = udp://127.0.0.1:5200\noutput = udp://127.0.0.1:5201\n");
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("[channel twin]"))
        .nth(1)
        .unwrap()
        .0
        + 1;
    let (code, _out, err) = check(&text);
    assert_eq!(code, Some(1), "stderr:\n{err}");
    expect_error_at(&text, &err, second, &["twin"]);
}

#[test]
fn bad_url() {
    expect_one_error(
        &with_channel_line("output = gopher://127.0.0.1:70"),
        "gopher",
        &["output"],
    );
    expect_one_error(
        &with_channel_line("output = udp://127.0.0.1:99999"),
        "99999",
        &["output"],
    );
    expect_one_error(
        &with_channel_line("output = udp://127.0.0.1"),
        "output = udp://127.0.0.1",
        &["output"],
    );
    expect_one_error(
        &with_channel_line("output = tcp-listen://[::1:6000"),
        "[::1:6000",
        &["output"],
    );
    let text = "[channel badin]\ninput = udpx://127.0.0.1:5000\noutput = udp://127.0.0.1:5001\n";
    expect_one_error(text, "udpx", &["input"]);
}

#[test]
fn url_not_allowed_in_its_role() {
    // A file is an output only.
    let text = "[channel fileinput]\ninput = file:///tmp/x.raw\noutput = udp://127.0.0.1:5001\n";
    expect_one_error(text, "file://", &["input"]);
}

#[test]
fn bad_url_option() {
    expect_one_error(
        &with_channel_line("output = udp://127.0.0.1:6000 colour=blue"),
        "colour",
        &["output", "colour"],
    );
    expect_one_error(
        &with_channel_line("output = tcp-listen://127.0.0.1:6000 on_slow=sometimes"),
        "sometimes",
        &["output", "on_slow"],
    );
    expect_one_error(
        &with_channel_line("output = tcp-listen://127.0.0.1:6000 allow=300.1.1.1/8"),
        "300.1.1.1",
        &["output", "allow"],
    );
}

/// `producer` chooses between two producers of a listening stream input: any other input has
/// one producer by nature.
#[test]
fn producer_on_an_input_that_does_not_listen() {
    expect_one_error(
        &with_channel_line("producer = replace"),
        "producer",
        &["producer"],
    );
    let dialed = "[channel dialed]\ninput = tcp://127.0.0.1:5000\nproducer = replace\noutput = tcp-listen://127.0.0.1:5001\n";
    expect_one_error(dialed, "producer", &["producer"]);
    let odd = "[channel odd]\ninput = tcp-listen://127.0.0.1:5000\nproducer = sometimes\noutput = tcp-listen://127.0.0.1:5001\n";
    expect_one_error(odd, "sometimes", &["producer"]);
}

#[test]
fn bad_keepalive() {
    expect_one_error(
        &with_channel_line("output = tcp-listen://127.0.0.1:6000 keepalive=bogus"),
        "bogus",
        &["output", "keepalive"],
    );
    expect_one_error(
        &with_channel_line("output = tcp://127.0.0.1:6000 keepalive=500ms"),
        "500ms",
        &["output", "keepalive"],
    );
    // Keepalive is TCP's: not on a UDP endpoint or a Unix socket.
    expect_one_error(
        &with_channel_line("output = udp://127.0.0.1:6000 keepalive=60s"),
        "keepalive",
        &["output", "keepalive"],
    );
    let unix = "[channel unixy]\ninput = unix-listen:///tmp/rr-unixy.sock keepalive=60s\noutput = udp://127.0.0.1:5001\n";
    expect_one_error(unix, "keepalive", &["input", "keepalive"]);
}

#[test]
fn producer_replace_and_keepalive_pass_check() {
    let text = "[channel sensor]\ninput = tcp-listen://127.0.0.1:5000 keepalive=2s\nproducer = replace\noutput = tcp-listen://127.0.0.1:5001 keepalive=off\noutput = tcp://127.0.0.1:5002 keepalive=5m\n\n[channel pipe]\ninput = unix-listen:///tmp/rr-check-pipe.sock\nproducer = refuse\noutput = udp://127.0.0.1:5003\n";
    let (code, out, err) = check(text);
    assert_eq!(code, Some(0), "stderr:\n{err}");
    for want in [
        "keepalive=2s",
        "producer = replace",
        "keepalive=off",
        "keepalive=300s",
        "producer = refuse",
    ] {
        assert!(out.contains(want), "summary lacks {want:?}:\n{out}");
    }
}

#[test]
fn unknown_section() {
    let text = format!("[global]\nsqpoll = off\n\n[servers]\nname = x\n\n{GOOD_CHANNEL}");
    let (code, _out, err) = check(&text);
    assert_eq!(code, Some(1), "stderr:\n{err}");
    expect_error_at(&text, &err, line_of(&text, "[servers]"), &["servers"]);
}

#[test]
fn key_outside_section() {
    let text = format!("sqpoll = on\n\n[global]\nbuffer_count = 256\n\n{GOOD_CHANNEL}");
    expect_one_error(&text, "sqpoll = on", &["sqpoll"]);
}

#[test]
fn malformed_line() {
    expect_one_error(
        &with_global("this line has no equals sign"),
        "no equals sign",
        &[],
    );
    let text = format!("[global\nsqpoll = off\n\n{GOOD_CHANNEL}");
    let (code, _out, err) = check(&text);
    assert_eq!(code, Some(1), "stderr:\n{err}");
    expect_error_at(&text, &err, 1, &[]);
}

/// Every error of a file comes out in one run, each at its own line.
#[test]
fn all_errors_in_one_run() {
    let text = "\
sqpoll = on
[global]
bogus_key = 1
buffer_size = 64QiB
stats_interval = soon

[channel a]
input = udpx://127.0.0.1:5000
output = udp://127.0.0.1:5001
colour = blue

[channel b]
output = udp://127.0.0.1:5002

[servers]
x = 1
";
    let (code, _out, err) = check(text);
    assert_eq!(code, Some(1), "stderr:\n{err}");
    let expected: &[(&str, &[&str])] = &[
        ("sqpoll = on", &["sqpoll"]),
        ("bogus_key", &["bogus_key"]),
        ("64QiB", &["buffer_size"]),
        ("soon", &["stats_interval"]),
        ("udpx", &["input"]),
        ("colour", &["colour"]),
        ("[channel b]", &["input"]),
        ("[servers]", &["servers"]),
    ];
    for (needle, keys) in expected {
        expect_error_at(text, &err, line_of(text, needle), keys);
    }
}

/// Runs `ringrelay check -c FILE` and `ringrelay run -c FILE` in `dir`: both exit 1 and print the
/// same first line on stderr, which is returned.
fn refused_by_check_and_run(dir: &TempDir, file: &str) -> String {
    let (code, _out, err) = run_to_end(Features::Auto, &["check", "-c", file], dir.path());
    assert_eq!(code, Some(1), "check -c {file}; stderr:\n{err}");
    let first = err.lines().next().unwrap_or_default().to_string();
    let (code, _out, run_err) = run_to_end(Features::Auto, &["run", "-c", file], dir.path());
    assert_eq!(code, Some(1), "run -c {file}; stderr:\n{run_err}");
    assert!(
        run_err.lines().any(|l| l == first),
        "run -c {file} does not report '{first}'; stderr:\n{run_err}"
    );
    first
}

/// A byte that is not UTF-8, even in a comment, is reported at its line and byte column.
#[test]
fn invalid_utf8_names_line_and_column() {
    let dir = TempDir::new("check-utf8");
    let mut bytes = format!("{GOOD_CHANNEL}# caf").into_bytes();
    bytes.extend_from_slice(b"\xe9 au lait\n");
    std::fs::write(dir.join(CONF), &bytes).unwrap();
    let first = refused_by_check_and_run(&dir, CONF);
    assert!(
        first.starts_with(&format!("{CONF}:4: ")) && first.contains("byte column 6"),
        "wanted line 4, byte column 6: {first}"
    );
}

/// A UTF-8 byte order mark (as some Windows editors write) is not part of the first line.
#[test]
fn byte_order_mark_is_accepted() {
    let (code, _out, err) = check(&format!("\u{feff}[global]\nsqpoll = off\n\n{GOOD_CHANNEL}"));
    assert_eq!(code, Some(0), "stderr:\n{err}");
}

/// A huge value is cut in the message, which says how long it was.
#[test]
fn huge_value_is_cut_in_the_message() {
    let value = "a".repeat(1 << 20);
    let (code, _out, err) = check(&with_global(&format!("log = {value}")));
    assert_eq!(code, Some(1));
    assert!(err.len() < 1000, "stderr is {} bytes", err.len());
    assert!(
        err.contains(&format!("'{}…' (1048576 bytes)", "a".repeat(80))),
        "stderr:\n{err}"
    );
}

/// More than 4 MiB is refused before it is parsed.
#[test]
fn file_over_4mib_is_refused() {
    let dir = TempDir::new("check-big");
    let mut text = GOOD_CHANNEL.to_string();
    while text.len() <= 4 << 20 {
        text.push_str(&format!("# {}\n", "x".repeat(1000)));
    }
    std::fs::write(dir.join(CONF), &text).unwrap();
    let first = refused_by_check_and_run(&dir, CONF);
    assert!(
        first.starts_with(CONF) && first.contains("4 MiB"),
        "stderr: {first}"
    );
}

/// Directories, character devices and fifos are refused at once, naming the file.
#[test]
fn not_a_regular_file_is_refused() {
    let dir = TempDir::new("check-kinds");
    std::fs::create_dir(dir.join("conf.d")).unwrap();
    nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    for (file, kind) in [
        ("conf.d", "a directory"),
        ("/dev/zero", "a character device"),
        ("fifo", "a fifo"),
    ] {
        let first = refused_by_check_and_run(&dir, file);
        assert!(
            first.starts_with(file) && first.contains("not a regular file") && first.contains(kind),
            "stderr: {first}"
        );
    }
}

#[test]
fn bad_idle_timeout_and_commands() {
    let input = |opts: &str| {
        format!("[channel radio]\ninput = tcp://127.0.0.1:5000 {opts}\noutput = tcp-listen://127.0.0.1:5001\n")
    };
    expect_one_error(
        &input("idle_timeout=500ms"),
        "500ms",
        &["input", "idle_timeout"],
    );
    expect_one_error(&input("idle_timeout=2d"), "2d", &["input", "idle_timeout"]);
    expect_one_error(
        &input("idle_timeout=soon"),
        "soon",
        &["input", "idle_timeout"],
    );
    // It watches an input: not an option of an output.
    expect_one_error(
        &with_channel_line("output = tcp-listen://127.0.0.1:6000 idle_timeout=30s"),
        "idle_timeout",
        &["output", "idle_timeout"],
    );
    // commands = first writes to a stream producer: a UDP input has none.
    expect_one_error(
        &with_channel_line("commands = first"),
        "commands",
        &["commands"],
    );
    let odd = "[channel radio]\ninput = tcp-listen://127.0.0.1:5000\ncommands = all\noutput = tcp-listen://127.0.0.1:5001\n";
    expect_one_error(odd, "commands = all", &["commands"]);
}

#[test]
fn idle_timeout_and_commands_print_and_parse_back() {
    let text = "[channel radio]\ninput = tcp://127.0.0.1:5000 idle_timeout=1500ms\ncommands = first\noutput = tcp-listen://127.0.0.1:5001\n\n[channel gps]\ninput = udp://127.0.0.1:5002 idle_timeout=1m\noutput = udp://127.0.0.1:5003\n";
    let (code, out, err) = check(text);
    assert_eq!(code, Some(0), "stderr:\n{err}");
    assert!(
        out.contains("input = tcp://127.0.0.1:5000 idle_timeout=1500ms\n"),
        "{out}"
    );
    assert!(out.contains("commands = first\n"), "{out}");
    assert!(
        out.contains("input = udp://127.0.0.1:5002 idle_timeout=60s\n"),
        "{out}"
    );
    let (code, again, err) = check(&out);
    assert_eq!(
        code,
        Some(0),
        "the printed config checks too; stderr:\n{err}"
    );
    assert_eq!(again, out, "printed config parses back to itself");
}

/// The record keys (frames, lines, preambles): a preamble on a datagram input, `framing = line`
/// with `sample`, and out-of-range `preamble` and `max_line`, each at its line.
#[test]
fn record_key_errors() {
    let stream = "[channel rec]\ninput = tcp-listen://127.0.0.1:5000\noutput = tcp-listen://127.0.0.1:5001\n";
    expect_one_error(
        &with_channel_line("preamble = 12"),
        "preamble",
        &["preamble"],
    );
    expect_one_error(
        &format!("{stream}sample = i16le\nframing = line\n"),
        "framing = line",
        &["framing"],
    );
    expect_one_error(
        &format!("{stream}preamble = 4097\n"),
        "preamble",
        &["preamble"],
    );
    expect_one_error(
        &format!("{stream}framing = line\nmax_line = 15\n"),
        "max_line",
        &["max_line"],
    );
    expect_one_error(
        &format!("{stream}framing = line\nmax_line = 65537\n"),
        "max_line",
        &["max_line"],
    );
    // The same keys in range pass, and `check` prints them.
    let good = format!(
        "{stream}preamble = 12\nsample = u8\ninterleave = 2\n\n[channel nmea]\ninput = udp://127.0.0.1:5002\noutput = udp://127.0.0.1:5003\nframing = line\nmax_line = 1KiB\n"
    );
    let (code, out, err) = check(&good);
    assert_eq!(code, Some(0), "stderr:\n{err}");
    for want in [
        "preamble = 12",
        "sample = u8",
        "interleave = 2",
        "framing = line",
        "max_line = 1024",
    ] {
        assert!(out.contains(want), "summary lacks {want}:\n{out}");
    }
}

/// A serial input's line settings: each bad value is an error on the input's line; a rate a
/// tty cannot take names the nearest ones. A serial port as an output is an error too.
#[test]
fn bad_serial_settings() {
    let serial = |opts: &str| {
        format!(
            "[global]\nsqpoll = off\n\n[channel gps]\ninput = serial:///dev/ttyUSB0 {opts}\noutput = udp://127.0.0.1:5001\n"
        )
    };
    for (opts, says) in [
        ("baud=4801", "nearest: 4800 or 9600"),
        ("baud=11520", "nearest: 9600 or 19200"),
        ("baud=5000000", "outside 50..=4000000"),
        ("baud=fast", "not a rate"),
        ("databits=9", "5, 6, 7, 8"),
        ("parity=mark", "none, even, odd"),
        ("stopbits=1.5", "1, 2"),
        ("flow=xonxoff", "none, rtscts"),
        ("rcvbuf=1MiB", "does not apply"),
    ] {
        let text = serial(opts);
        expect_one_error(&text, "input = serial", &["input"]);
        let (_, _, err) = check(&text);
        assert!(err.contains(says), "{opts}: {err}");
    }
    expect_one_error(
        &with_channel_line("output = serial:///dev/ttyUSB1 baud=9600"),
        "ttyUSB1",
        &["output"],
    );
    expect_one_error(
        &with_channel_line("output = udp://127.0.0.1:5002 baud=9600"),
        "5002",
        &["output"],
    );
    let two = "[channel a]\ninput = serial:///dev/ttyAMA0\noutput = udp://127.0.0.1:5001\n\
               [channel b]\ninput = serial:///dev/ttyAMA0 baud=4800\noutput = udp://127.0.0.1:5002\n";
    expect_one_error(two, "baud=4800", &["input"]);
}

#[test]
fn bad_metrics_keys() {
    for (line, key) in [
        ("metrics = localhost:9100", "metrics"),
        ("metrics = 127.0.0.1", "metrics"),
        ("metrics = 127.0.0.1:99999", "metrics"),
        ("metrics_allow = 10.0.0.0/33", "metrics_allow"),
        ("metrics_allow = 127.0.0.1, nonsense", "metrics_allow"),
        ("metrics_allow = ,", "metrics_allow"),
        ("health_grace = soon", "health_grace"),
    ] {
        expect_one_error(&with_global(line), line, &[key]);
    }
    // All three wrong at once: three errors, one run.
    let text = with_global("metrics = x\nmetrics_allow = ::1/129\nhealth_grace = -1s");
    let (code, _out, err) = check(&text);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(error_lines(&err).len(), 3, "{err}");
    // And good values pass.
    let text = with_global(
        "metrics = [::1]:9100\nmetrics_allow = 127.0.0.0/8, ::1, 192.168.0.0/16\nhealth_grace = 30s",
    );
    let (code, _out, err) = check(&text);
    assert_eq!(code, Some(0), "{err}");
}

/// A spool belongs to a dialed stream output, in an absolute directory that exists or whose
/// parent does, of at least one segment, and to that output alone; every error in one run.
#[test]
fn spool_errors() {
    let dir = TempDir::new("spoolcheck");
    let d = dir.path().display().to_string();
    for (line, says) in [
        (
            "output = udp://127.0.0.1:6000 spool=/var/spool/x",
            "does not apply",
        ),
        (
            "output = file:///tmp/x6000.raw spool=/var/spool/x",
            "does not apply",
        ),
        (
            "output = tcp-listen://127.0.0.1:6000 spool=/var/spool/x",
            "only tcp://, unix://, mqtt://",
        ),
        ("output = tcp://127.0.0.1:6000 spool=spool/x", "relative"),
        (
            "output = tcp://127.0.0.1:6000 spool=/nonexistent-rr/a/b",
            "parent",
        ),
        (
            &format!("output = tcp://127.0.0.1:6000 spool={d}/s spool_max=1MiB spool_segment=2MiB"),
            "smaller than one segment",
        ),
        (
            "output = tcp://127.0.0.1:6000 spool_max=1GiB",
            "need spool=DIR",
        ),
        (
            "output = tcp://127.0.0.1:6000 spool=/s spool_full=later",
            "drop-oldest",
        ),
    ] {
        let text = with_channel_line(line);
        expect_one_error(&text, "6000", &["output"]);
        let (_, _, err) = check(&text);
        assert!(err.contains(says), "{line}: {err}");
    }
    let text = format!(
        "[channel a]\ninput = udp://127.0.0.1:5000\noutput = tcp://127.0.0.1:6000 spool={d}\n\
         [channel b]\ninput = udp://127.0.0.1:5002\noutput = unix:///tmp/rr.sock spool={d}\n"
    );
    expect_one_error(&text, "unix://", &["output"]);
    let text = format!(
        "[channel a]\ninput = udp://127.0.0.1:5000\noutput = tcp://127.0.0.1:6000 spool={d}/new spool_max=64MiB spool_full=drop-newest spool_segment=1MiB spool_sync=200ms\n"
    );
    let (code, out, err) = check(&text);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("spool_full=drop-newest"), "{out}");
    // An MQTT output spools too, with its own options beside the spool's.
    let text = format!(
        "[channel a]\ninput = udp://127.0.0.1:5000\noutput = mqtt://127.0.0.1:1883/rr/a qos=1 clean=off client_id=rr-a spool={d}/m\n"
    );
    let (code, out, err) = check(&text);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("spool="), "{out}");
}
