//! Tests of whole configurations: the documented example, every class of error with its line
//! and key, the splice keys, sample channels and the command-line channel, and that the
//! normalized summary parses back to the same settings.

use super::*;
use crate::config::url::OnSlow;

const EXAMPLE: &str = "\
[global]
sqpoll = auto            # on | off | auto
ring_entries = 1024
buffer_size = 64KiB
buffer_count = 512
log = stderr             # stderr | syslog
log_level = info

[channel seismo]
input  = udp://0.0.0.0:5000 group=239.1.1.1 iface=eth0
output = tcp-listen://0.0.0.0:6000 max_backlog=8MiB on_slow=disconnect max_clients=64 allow=192.168.0.0/16
output = tcp://collector.example:7000 on_slow=block
output = udp://127.0.0.1:7001
output = file:///var/lib/ringrelay/seismo.raw rotate=256MiB
framing = none           # none | u32be: length-prefix each datagram on stream outputs
";

fn errs(text: &str) -> Vec<ConfigError> {
    parse_str("t.conf", text).expect_err("should fail")
}

#[test]
fn parses_the_documented_example() {
    let c = parse_str("t.conf", EXAMPLE).unwrap();
    assert_eq!(c.global.buffer_count, 512);
    assert_eq!(c.channels.len(), 1);
    let ch = &c.channels[0];
    assert_eq!(ch.outputs.len(), 4);
    assert_eq!(ch.outputs[0].on_slow, OnSlow::Disconnect);
    assert_eq!(ch.outputs[1].on_slow, OnSlow::Block);
    assert_eq!(ch.outputs[2].on_slow, OnSlow::Drop);
    assert_eq!(ch.outputs[3].on_slow, OnSlow::Block);
    assert_eq!(
        ch.outputs[3].fault_grace,
        std::time::Duration::from_secs(10)
    );
    // The normalized summary parses back to the same configuration.
    let again = parse_str("t.conf", &c.to_string()).unwrap();
    assert!(again.channels[0].same_settings(&c.channels[0]));
    assert_eq!(again.global, c.global);
}

#[test]
fn splice_keys() {
    let c = parse_str(
        "t.conf",
        "[global]\nsplice = on\npipe_size = 256KiB\n\
         [channel a]\ninput = tcp-listen://127.0.0.1:1\noutput = tcp://h:2\n\
         [channel b]\ninput = udp://127.0.0.1:3\noutput = tcp://h:4\n\
         [channel c]\ninput = tcp-listen://127.0.0.1:5\noutput = tcp://h:6\nsplice = off\n",
    )
    .unwrap();
    assert_eq!(c.global.pipe_size, 256 << 10);
    // [global] on splices the eligible channels and leaves the others on buffers.
    let modes: Vec<_> = c.channels.iter().map(|c| c.splice).collect();
    assert_eq!(modes, [SpliceMode::On, SpliceMode::Off, SpliceMode::Off]);
    let again = parse_str("t.conf", &c.to_string()).unwrap();
    assert_eq!(again.global, c.global);
    for (a, b) in again.channels.iter().zip(&c.channels) {
        assert!(a.same_settings(b));
    }
    // A channel that asks for it and cannot: an error naming why, at its line.
    let e = errs("[channel a]\ninput = udp://h:1\noutput = tcp://h:2\nsplice = on\n");
    assert_eq!((e[0].line, e[0].key.as_str()), (4, "splice"), "{e:?}");
    assert!(e[0].message.contains("not a stream"), "{e:?}");
    let e = errs("[global]\npipe_size = 1\n[channel a]\ninput = udp://h:1\noutput = udp://h:2\n");
    assert_eq!((e[0].line, e[0].key.as_str()), (2, "pipe_size"), "{e:?}");
    let e = errs("[global]\nsplice = maybe\n[channel a]\ninput = udp://h:1\noutput = udp://h:2\n");
    assert_eq!((e[0].line, e[0].key.as_str()), (2, "splice"), "{e:?}");
}

#[test]
fn every_error_names_line_and_key() {
    let e = errs("[global]\nsqpol = on\nbuffer_size = 12 parsecs\n[channel a]\ninput = udp://h:1\noutput = udp://h:2\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!((e[0].line, e[0].key.as_str()), (2, "sqpol"));
    assert!(e[0].message.contains("did you mean 'sqpoll'"));
    assert_eq!((e[1].line, e[1].key.as_str()), (3, "buffer_size"));
    assert!(e[0].to_string().starts_with("t.conf:2: sqpol: "));
}

#[test]
fn error_classes() {
    let cases: &[(&str, usize, &str)] = &[
        ("input = udp://h:1\n", 1, "input"),
        ("[bogus]\n", 1, ""),
        ("[channel a]\noutput = udp://h:2\n", 1, "input"),
        ("[channel a]\ninput = udp://h:1\n", 1, "output"),
        ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\n[channel a]\n", 4, "[channel]"),
        ("[channel a]\ninput = ftp://h:1\n", 2, "input"),
        ("[channel a b]\n", 1, ""),
        ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\nframing = json\n", 4, "framing"),
        ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\ndecimate = mean:10\n", 4, "decimate"),
        ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\nsample = i24\n", 4, "sample"),
        ("[channel a]\ninput = tcp://h:1\noutput = udp://h:2\nframing = u32be\n", 4, "framing"),
        ("[global]\nring_entries = 1000\n[channel a]\ninput = udp://h:1\noutput = udp://h:2\n", 2, "ring_entries"),
        ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\nbuffer_size = 1\n", 4, "buffer_size"),
        ("[channel a]\ninput = udp://h:1\ninput = udp://h:3\noutput = udp://h:2\n", 3, "input"),
        ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\nsample = i16le\ndecimate = mean:10\nshm_frames = 3\n", 6, "shm_frames"),
        ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\nsample = i16le\ndecimate = mean:10\ninterleave = 0\n", 6, "interleave"),
        ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\nsample = i16le\ndecimate = mean:0\n", 5, "decimate"),
        ("[channel a]\ninput = udp://h:1\noutput = udp://h:2\nsample = i16le\ndecimate = mean:2\nheader_bytes = 70000\n", 6, "header_bytes"),
        ("[channel a]\ninput = udp://h:5\noutput = file:///x\n[channel b]\ninput = udp://h:5\noutput = file:///y\n", 5, "input"),
        ("[channel a]\ninput = udp://h:5\nthis is not a key\n", 3, ""),
        ("[channel a]\ninput = udp://h:1\noutput = tcp://h:2 fault_grace=1s\n", 3, "output"),
        ("[channel a]\ninput = udp://h:1\n\noutput = file:///x fault_grace=soon\n", 4, "output"),
    ];
    for (text, line, key) in cases {
        let e = errs(text);
        assert!(
            e.iter().any(|e| e.line == *line && e.key == *key),
            "{text:?} gave {e:?}, wanted line {line} key {key:?}"
        );
    }
}

#[test]
fn samples_and_cli_channels() {
    let c = parse_str(
        "t",
        "[channel s]\ninput = udp://127.0.0.1:5000\nsample = i16le\ninterleave = 3\nheader_bytes = 16\nsample_rate = 100\ndecimate = minmax:10,100\n",
    )
    .unwrap();
    let s = c.channels[0].samples.as_ref().unwrap();
    assert!(s.shm);
    assert_eq!(s.interleave, 3);
    assert_eq!(s.decimate.factors, vec![10, 100]);
    let c = from_cli("tcp-listen://127.0.0.1:0", &["udp://127.0.0.1:9".into()]).unwrap();
    assert_eq!(c.channels[0].name, "default");
    assert!(from_cli("udp://h:1", &[]).is_err());
}

#[test]
fn values_in_messages_are_cut_at_80_characters() {
    use crate::config::parse::quote;
    assert_eq!(quote("on"), "'on'");
    let at_limit = "x".repeat(80);
    assert_eq!(quote(&at_limit), format!("'{at_limit}'"));
    assert_eq!(
        quote(&"a".repeat(1 << 20)),
        format!("'{}…' (1048576 bytes)", "a".repeat(80))
    );
    // Cut at a character, not a byte: 81 two-byte characters.
    assert_eq!(
        quote(&"é".repeat(81)),
        format!("'{}…' (162 bytes)", "é".repeat(80))
    );
    // Through a whole parse: the value, and a key too long to be one.
    let huge = "b".repeat(5000);
    let e = errs(&format!(
        "[global]\nlog = {huge}\n{huge} = 1\n[channel a]\ninput = udp://h:1\noutput = udp://h:2 ttl={huge}\noutput = udp://h:3\n"
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    for e in &e {
        let shown = e.to_string();
        assert!(shown.len() < 400, "{shown}");
        assert!(shown.contains("…' (5000 bytes)"), "{shown}");
    }
}

#[test]
fn conflicts_name_line_and_key() {
    let shm = |name: &str, dec: &str| {
        format!("[channel {name}]\ninput = udp://h:0\nsample = i16le\ndecimate = {dec}\n")
    };
    let cases: &[(String, usize, &str)] = &[
        (shm("a", "mean:10,100") + &shm("a.100", "mean:10"), 5, "[channel]"),
        (shm("a.100", "mean:10") + &shm("a", "mean:10,100"), 8, "decimate"),
        (shm("a", "mean:10,100") + &shm("a", "mean:10"), 5, "[channel]"),
        (shm("ringrelay.stats", "every:1"), 1, "[channel]"),
        (
            "[channel a]\ninput = tcp-listen://0.0.0.0:5\noutput = tcp-listen://127.0.0.1:5\n".into(),
            3,
            "output",
        ),
        (
            "[channel a]\ninput = udp://[::1]:5\noutput = udp://h:9\n[channel b]\ninput = udp://[::]:5\noutput = udp://h:9\n".into(),
            5,
            "input",
        ),
        (
            "[channel a]\ninput = udp://0.0.0.0:5\noutput = udp://h:9\noutput = udp://127.0.0.1:5\n".into(),
            4,
            "output",
        ),
    ];
    for (text, line, key) in cases {
        let e = errs(text);
        assert!(
            e.iter().any(|e| e.line == *line && e.key == *key),
            "{text:?} gave {e:?}, wanted line {line} key {key:?}"
        );
    }
    // Exactly the names that are published: `a` with mean:10,100 makes `a` and `a.100`.
    parse_str("t", &(shm("a", "mean:10,100") + &shm("a.10", "mean:10"))).unwrap();
    parse_str(
        "t",
        &(shm("a", "mean:10,100") + &shm("a.100", "mean:10") + "shm = off\noutput = udp://h:1\n"),
    )
    .unwrap();
}

#[test]
fn fault_grace_is_a_file_outputs_and_reload_sees_it_change() {
    let text = |g: &str| {
        format!("[channel a]\ninput = udp://127.0.0.1:1\noutput = file:///tmp/a.raw{g}\n")
    };
    let c = parse_str("t", &text(" fault_grace=1500ms")).unwrap();
    assert_eq!(
        c.channels[0].outputs[0].fault_grace,
        std::time::Duration::from_millis(1500)
    );
    let again = parse_str("t", &c.to_string()).unwrap();
    assert!(again.channels[0].same_settings(&c.channels[0]));
    let default = parse_str("t", &text("")).unwrap();
    assert!(!default.channels[0].same_settings(&c.channels[0]));
    assert!(c.to_string().contains("fault_grace=1500ms"), "{c}");
    assert!(default.to_string().contains("fault_grace=10s"), "{default}");
}

#[test]
fn a_spooled_channels_records_fit_one_spool_record() {
    // A spool record holds buffer_size - 8 = 2040 bytes here.
    let refused = |global: &str, channel: &str| {
        let text = format!(
            "[global]\nbuffer_size = 2KiB\n{global}[channel a]\n{channel}output = tcp://h:2\n"
        );
        let spooled = text.replace("tcp://h:2", "tcp://h:2 spool=/tmp/rr-spool");
        assert!(parse_str("t.conf", &text).is_ok(), "{text}");
        match parse_str("t.conf", &spooled) {
            Ok(_) => None,
            Err(e) => {
                assert_eq!((e.len(), e[0].key.as_str()), (1, "spool"), "{e:?}");
                assert_eq!(e[0].line, spooled.lines().count(), "{e:?}");
                Some(e[0].message.clone())
            }
        }
    };
    let lines = "input = tcp-listen://127.0.0.1:1\nframing = line\n";
    assert_eq!(refused("", &format!("{lines}max_line = 2040\n")), None);
    let e = refused("", &format!("{lines}max_line = 2041\n")).expect("refused");
    assert!(
        e.contains("at most 2040 bytes") && e.contains("reach 2041"),
        "{e}"
    );
    // u32be: a datagram of datagram_size - 16 bytes and its 4-byte prefix.
    let udp = "input = udp://127.0.0.1:1\nframing = u32be\n";
    assert_eq!(refused("datagram_size = 2052\n", udp), None);
    assert!(refused("datagram_size = 2053\n", udp).is_some());
    // Without datagram slots a datagram is read into a pool buffer after 16 bytes: it fits.
    assert_eq!(
        refused("datagram_size = 9KiB\ndatagram_count = 0\n", udp),
        None
    );
    // A declared frame of a stream input: 2 x 1021 bytes is too long, 2 x 1020 is not.
    let frames = "input = tcp-listen://127.0.0.1:1\nsample = i16le\ninterleave = ";
    assert_eq!(refused("", &format!("{frames}1020\n")), None);
    assert!(refused("", &format!("{frames}1021\n")).is_some());
    // Unframed bytes and datagrams may be cut anywhere for a stream collector...
    assert_eq!(refused("", "input = tcp-listen://127.0.0.1:1\n"), None);
    assert_eq!(
        refused("datagram_size = 9KiB\n", "input = udp://127.0.0.1:1\n"),
        None
    );
    // ...but an MQTT output publishes each datagram as one message.
    let mqtt = |dsize: u32| {
        let text = format!(
            "[global]\nbuffer_size = 2KiB\ndatagram_size = {dsize}\n[channel a]\n\
             input = udp://127.0.0.1:1\noutput = mqtt://h/t spool=/tmp/rr-spool\n"
        );
        parse_str("t.conf", &text).err()
    };
    assert!(mqtt(2056).is_none());
    let e = mqtt(2057).expect("refused");
    assert!(e[0].message.contains("one message"), "{e:?}");
}
