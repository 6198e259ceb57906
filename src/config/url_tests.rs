//! Tests of [`super`]: endpoint URLs and their options, per scheme and role.

use super::*;

#[test]
fn parses_the_issue_examples() {
    let e =
        Endpoint::parse_for("udp://0.0.0.0:5000 group=239.1.1.1 iface=eth0", Role::Input).unwrap();
    assert_eq!(e.scheme, Scheme::Udp);
    assert_eq!(e.opts.group, Some("239.1.1.1".parse().unwrap()));
    let e = Endpoint::parse_for(
        "tcp-listen://0.0.0.0:6000 max_backlog=8MiB on_slow=disconnect max_clients=64 allow=192.168.0.0/16",
        Role::Output,
    )
    .unwrap();
    assert_eq!(e.opts.max_backlog, Some(8 << 20));
    assert_eq!(e.opts.max_clients, Some(64));
    assert!(e.opts.allow[0].contains("192.168.3.4".parse().unwrap()));
    assert!(!e.opts.allow[0].contains("10.0.0.1".parse().unwrap()));
    let e =
        Endpoint::parse_for("tcp://collector.example:7000 on_slow=block", Role::Output).unwrap();
    assert_eq!(
        e.target,
        Target::Inet {
            host: "collector.example".into(),
            port: 7000
        }
    );
    let e = Endpoint::parse_for(
        "file:///var/lib/ringrelay/seismo.raw rotate=256MiB",
        Role::Output,
    )
    .unwrap();
    assert_eq!(e.opts.rotate, Some(256 << 20));
    let e = Endpoint::parse_for("udp://[::1]:5000", Role::Input).unwrap();
    assert_eq!(e.url(), "udp://[::1]:5000");
}

#[test]
fn rejects_misuse() {
    assert!(Endpoint::parse("http://x:1").is_err());
    assert!(Endpoint::parse("udp://::1:5000").is_err());
    assert!(Endpoint::parse("udp://host").is_err());
    assert!(Endpoint::parse("udp://h:99999").is_err());
    assert!(Endpoint::parse("unix://relative").is_err());
    assert!(Endpoint::parse("udp://h:1 bogus=1").is_err());
    assert!(Endpoint::parse("udp://h:1 group=10.0.0.1").is_err());
    assert!(Endpoint::parse_for("file:///x", Role::Input).is_err());
    assert!(Endpoint::parse_for("udp://h:1 on_slow=block", Role::Output).is_err());
    assert!(Endpoint::parse_for("udp://h:1 rotate=1MiB", Role::Output).is_err());
    assert!(Endpoint::parse_for("tcp://h:0", Role::Output).is_err());
    assert!(Endpoint::parse_for("unix-listen:///x allow=1.2.3.4", Role::Output).is_err());
    assert!(Endpoint::parse_for("tcp-listen://h:1 on_fin=keep", Role::Output).is_ok());
    assert!(Endpoint::parse_for("unix-listen:///x on_fin=close", Role::Output).is_ok());
    assert!(Endpoint::parse_for("tcp-listen://h:1 on_fin=redial", Role::Output).is_err());
    assert!(Endpoint::parse_for("tcp://h:1 on_fin=close", Role::Output).is_err());
    assert!(Endpoint::parse_for("tcp-listen://h:1 on_fin=keep", Role::Input).is_err());
    assert!(Endpoint::parse_for("tcp://h:1 on_fin=maybe", Role::Output).is_err());
    assert!(Endpoint::parse_for("unix:///x on_fin=keep", Role::Output).is_ok());
    // Zero-copy sends are for TCP outputs only.
    for ok in ["tcp://h:1 zerocopy=on", "tcp-listen://h:1 zerocopy=off"] {
        assert!(Endpoint::parse_for(ok, Role::Output).is_ok(), "{ok}");
    }
    for bad in [
        "unix:///x zerocopy=on",
        "unix-listen:///x zerocopy=on",
        "udp://h:1 zerocopy=on",
        "file:///x zerocopy=on",
        "tcp://h:1 zerocopy=maybe",
    ] {
        assert!(Endpoint::parse_for(bad, Role::Output).is_err(), "{bad}");
    }
    assert!(Endpoint::parse_for("tcp-listen://h:1 zerocopy=on", Role::Input).is_err());
    // fault_grace is a file output's.
    let e = Endpoint::parse_for("file:///x fault_grace=2s", Role::Output).unwrap();
    assert_eq!(e.opts.fault_grace, Some(Duration::from_secs(2)));
    assert!(Endpoint::parse_for("file:///x fault_grace=0", Role::Output).is_ok());
    for bad in [
        "tcp://h:1 fault_grace=2s",
        "tcp-listen://h:1 fault_grace=2s",
        "file:///x fault_grace=2 s",
        "file:///x fault_grace=2y",
        "file:///x fault_grace=25h",
    ] {
        assert!(Endpoint::parse_for(bad, Role::Output).is_err(), "{bad}");
    }
}

#[test]
fn keepalive_on_tcp_endpoints_only() {
    for (url, role) in [
        ("tcp-listen://h:1", Role::Input),
        ("tcp://h:1", Role::Input),
        ("tcp-listen://h:1", Role::Output),
        ("tcp://h:1", Role::Output),
    ] {
        let e = Endpoint::parse_for(url, role).unwrap();
        assert_eq!(e.keepalive(), Some(Keepalive { idle: 60 }), "{url}");
        let e = Endpoint::parse_for(&format!("{url} keepalive=2s"), role).unwrap();
        assert_eq!(e.keepalive(), Some(Keepalive { idle: 2 }), "{url}");
        let e = Endpoint::parse_for(&format!("{url} keepalive=off"), role).unwrap();
        assert_eq!(e.keepalive(), None, "{url}");
        assert!(Endpoint::parse_for(&format!("{url} keepalive=bogus"), role).is_err());
    }
    for (url, role) in [
        ("unix-listen:///x", Role::Input),
        ("unix:///x", Role::Output),
        ("udp://h:1", Role::Input),
        ("udp://h:1", Role::Output),
        ("file:///x", Role::Output),
    ] {
        let e = Endpoint::parse_for(url, role).unwrap();
        assert_eq!(e.keepalive(), None, "{url}");
        let with = format!("{url} keepalive=60s");
        assert!(Endpoint::parse_for(&with, role).is_err(), "{with}");
    }
}

#[test]
fn serial_inputs_only_with_their_options() {
    let e = Endpoint::parse_for("serial:///dev/ttyUSB0 baud=4800", Role::Input).unwrap();
    assert_eq!(e.scheme, Scheme::Serial);
    assert_eq!(e.opts.serial.unwrap().baud, 4800);
    assert_eq!(
        e.to_string(),
        "serial:///dev/ttyUSB0 baud=4800 databits=8 parity=none stopbits=1 flow=none"
    );
    for (bad, role) in [
        ("serial:///dev/ttyUSB0", Role::Output),
        ("serial://ttyUSB0", Role::Input),
        ("serial:///dev/ttyUSB0 baud=4801", Role::Input),
        ("serial:///dev/ttyUSB0 rcvbuf=1MiB", Role::Input),
        ("serial:///dev/ttyUSB0 keepalive=10s", Role::Input),
        ("tcp://h:1 baud=9600", Role::Input),
        ("udp://h:1 parity=even", Role::Output),
    ] {
        assert!(Endpoint::parse_for(bad, role).is_err(), "{bad}");
    }
    assert_eq!(Endpoint::parse("serial:///x").unwrap().keepalive(), None);
}

#[test]
fn display_round_trips() {
    for s in [
        "tcp-listen://127.0.0.1:6000 allow=10.0.0.0/8 max_clients=3 max_backlog=1024 on_slow=drop",
        "udp://[::1]:7000 ttl=4",
        "file:///tmp/x.raw rotate=65536 keep=3",
        "file:///tmp/x.raw fault_grace=1500ms",
        "tcp://127.0.0.1:7000 on_slow=block on_fin=keep",
        "tcp://127.0.0.1:7000 zerocopy=on",
        "tcp://127.0.0.1:7000 keepalive=90s",
        "tcp-listen://127.0.0.1:7000 keepalive=off",
        "serial:///dev/ttyUSB0",
        "serial:///dev/serial/by-id/usb-u-blox-if00 baud=4800 parity=odd flow=rtscts",
    ] {
        let e = Endpoint::parse(s).unwrap();
        assert_eq!(Endpoint::parse(&e.to_string()).unwrap(), e);
    }
}

#[test]
fn mqtt_outputs() {
    let e = Endpoint::parse_for(
        "mqtt://127.0.0.1/site/{channel} qos=1 max_inflight=8 keepalive=10s on_slow=drop",
        Role::Output,
    )
    .unwrap();
    assert_eq!(e.scheme, Scheme::Mqtt);
    assert_eq!(e.url(), "mqtt://127.0.0.1:1883/site/{channel}");
    let m = e.opts.mqtt.as_ref().unwrap();
    assert_eq!((m.qos, m.max_inflight), (1, 8));
    assert_eq!(e.keepalive(), None, "no TCP keepalive: MQTT pings");
    assert_eq!(Endpoint::parse(&e.to_string()).unwrap(), e);
    for (bad, role) in [
        ("mqtt://h/t", Role::Input),
        ("mqtt://h/a/+/b", Role::Output),
        ("mqtt://h/a/#", Role::Output),
        ("mqtt://h/t qos=2", Role::Output),
        ("mqtt://h/t zerocopy=on", Role::Output),
        ("mqtt://h/t password_file=/x", Role::Output),
        ("mqtt://h/t keepalive=70000s", Role::Output),
        ("tcp://h:1 qos=1", Role::Output),
    ] {
        assert!(Endpoint::parse_for(bad, role).is_err(), "{bad}");
    }
}
