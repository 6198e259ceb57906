//! `mqtt://` outputs against a real mosquitto: QoS 0 and QoS 1 (datagrams become messages,
//! exact payloads in order, and the published and acknowledged counts in `stat`), a broker restart under a persistent QoS 1 subscriber (nothing
//! lost, duplicates allowed), a broker that refuses the CONNECT (the reason named in the log,
//! and retried), `{channel}` topics with a user name and `password_file`, and the `check`
//! errors of MQTT outputs. Each relay scenario runs with both feature sets.
//!
//! Each test starts its own mosquitto and reads it with persistent `mosquitto_sub` sessions
//! ([`common::mqtt`]); without mosquitto the tests print a loud notice and return, unless
//! RINGRELAY_REQUIRE_MOSQUITTO=1 (CI) makes them fail.

#[macro_use]
mod common;

use common::counters::{prometheus_sample, stat_json, stat_output};
use common::mqtt::*;
use common::*;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

in_both_feature_sets!(
    mqtt_qos0_and_qos1_publish_every_datagram_in_order,
    mqtt_broker_restart_loses_nothing_at_qos1,
    mqtt_refused_connect_is_named_and_retried,
    mqtt_channel_topic_with_user_and_password_file,
);

/// A relay with one channel `name` fed by UDP and `outputs`; returns it and its input.
fn relay(
    features: Features,
    dir: &TempDir,
    name: &str,
    extra: &str,
    outputs: &[String],
) -> (Relay, SocketAddr) {
    Relay::start(features, dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let mut c = format!(
            "{}[channel {name}]\ninput = udp://{input}\n{extra}",
            dir.global_section()
        );
        for o in outputs {
            c.push_str(&format!("output = {o}\n"));
        }
        (c, input)
    })
}

fn mqtt_qos0_and_qos1_publish_every_datagram_in_order(features: Features) {
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new("mqtt-qos");
    let broker = Broker::start(&dir, "");
    broker.subscribe("s0", "t/q0", &[]);
    broker.subscribe("s1", "t/q1", &[]);
    let outs = [
        broker.url("t/q0"),
        format!("{} qos=1 max_inflight=8", broker.url("t/q1")),
    ];
    // framing = u32be: MQTT messages carry the payload without the frame.
    let (relay, input) = relay(features, &dir, "q", "framing = u32be\n", &outs);
    let want = messages("m", 2000);
    send(input, &want);
    let got0 = broker.read("s0", "t/q0", want.len(), 60, &[]);
    let got1 = broker.read("s1", "t/q1", want.len(), 60, &[]);
    assert_eq!(got0, want, "QoS 0: every datagram one message, in order");
    assert_eq!(got1, want, "QoS 1: every datagram one message, in order");
    let line = output_counters_line(&relay, &broker.url("t/q1"));
    assert_eq!(counter_in(&line, "published"), 2000, "{line}");
    wait_for("every PUBACK", Duration::from_secs(10), || {
        counter_in(
            &output_counters_line(&relay, &broker.url("t/q1")),
            "acknowledged",
        ) == 2000
    });
    let line = output_counters_line(&relay, &broker.url("t/q0"));
    assert_eq!(counter_in(&line, "published"), 2000, "{line}");
    assert_eq!(counter_in(&line, "drops"), 0, "{line}");
    // The same counters through the counters region: `stat --format json` and `prometheus`.
    let shm = dir.join("shm");
    let mut doc = serde_json::Value::Null;
    wait_for("the PUBACKs in stat", Duration::from_secs(10), || {
        doc = stat_json(&shm);
        doc["channels"][0]["outputs"][1]["mqtt"]["acknowledged"] == 2000
    });
    let outs_json = &doc["channels"][0]["outputs"];
    for (i, acked) in [(0, 0), (1, 2000)] {
        let m = &outs_json[i]["mqtt"];
        assert_eq!(m["published"], 2000, "{doc:#}");
        assert_eq!(m["acknowledged"], acked, "{doc:#}");
        assert_eq!(m["duplicates"], 0, "{doc:#}");
        assert_eq!(m["refused"], 0, "{doc:#}");
        assert_eq!(outs_json[i]["spool"], serde_json::Value::Null);
    }
    let prom = stat_output(&shm, &["--format", "prometheus"]);
    let labels = |o: &str| format!("channel=\"q\",output=\"{o}\"");
    let q1 = labels(&broker.url("t/q1"));
    for (name, want) in [
        ("ringrelay_mqtt_published_total", 2000),
        ("ringrelay_mqtt_acknowledged_total", 2000),
        ("ringrelay_mqtt_duplicates_total", 0),
        ("ringrelay_mqtt_refused_total", 0),
    ] {
        assert_eq!(
            prometheus_sample(&prom, name, &q1),
            Some(want),
            "{name}{{{q1}}}:\n{prom}"
        );
    }
    assert_eq!(
        prometheus_sample(
            &prom,
            "ringrelay_mqtt_acknowledged_total",
            &labels(&broker.url("t/q0"))
        ),
        Some(0),
        "QoS 0 has no PUBACK:\n{prom}"
    );
    relay.stop();
    let log = broker.log();
    assert!(
        log.contains("Client ringrelay-q disconnected."),
        "a clean DISCONNECT at the stop; broker log:\n{log}"
    );
}

fn mqtt_broker_restart_loses_nothing_at_qos1(features: Features) {
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new("mqtt-restart");
    let mut broker = Broker::start(&dir, "");
    broker.subscribe("keep", "r/t", &[]);
    let url = broker.url("r/t");
    let (relay, input) = relay(
        features,
        &dir,
        "r",
        "",
        &[format!(
            "{url} qos=1 clean=off keepalive=1s max_inflight=16"
        )],
    );
    let want = messages("r", 1500);
    send(input, &want[..500]);
    wait_for(
        "the first messages acknowledged",
        Duration::from_secs(20),
        || counter_in(&output_counters_line(&relay, &url), "acknowledged") == 500,
    );
    // A broker that stops answering: the relay's messages wait unacknowledged until the
    // keepalive gives up on the connection; they are re-sent (DUP) on the next one.
    let pid = nix::unistd::Pid::from_raw(broker.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    send(input, &want[500..800]);
    wait_for(
        "the keepalive to end the connection",
        Duration::from_secs(20),
        || relay.log().contains("no PINGRESP"),
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    // Then a restart: while the broker is down, the output keeps its messages
    // (on_slow = block).
    broker.stop();
    send(input, &want[800..1100]);
    std::thread::sleep(Duration::from_millis(500));
    broker.run();
    send(input, &want[1100..]);
    let got = broker.read_distinct("keep", "r/t", want.len(), 30);
    let dups = assert_all_in_order("QoS 1 across a broker restart", &got, &want);
    let line = output_counters_line(&relay, &url);
    assert!(counter_in(&line, "reconnects") >= 1, "{line}");
    if dups > 0 {
        assert!(
            counter_in(&line, "duplicates") > 0,
            "re-sent with DUP, counted: {line}"
        );
    }
    eprintln!("broker restart: {dups} duplicates seen by the subscriber; {line}");
    relay.stop();
}

fn mqtt_refused_connect_is_named_and_retried(features: Features) {
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new("mqtt-refused");
    let pw = dir.join("broker.passwd");
    let st = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&pw)
        .args(["relay", "secret"])
        .status()
        .expect("mosquitto_passwd");
    assert!(st.success());
    let broker = Broker::start(
        &dir,
        &format!("allow_anonymous false\npassword_file {}\n", pw.display()),
    );
    let url = broker.url("x");
    let (relay, _input) = relay(features, &dir, "f", "", std::slice::from_ref(&url));
    wait_for("two refusals", Duration::from_secs(30), || {
        counter_in(&output_counters_line(&relay, &url), "refused") >= 2
    });
    let log = relay.log();
    let named: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused the connection"))
        .collect();
    assert!(
        named
            .iter()
            .any(|l| l.contains("not authorized") || l.contains("bad user name or password")),
        "the return code is named; log:\n{log}"
    );
    assert_eq!(named.len(), 1, "logged once per state change; log:\n{log}");
    relay.stop();
}

fn mqtt_channel_topic_with_user_and_password_file(features: Features) {
    if !have_mosquitto() {
        return;
    }
    let dir = TempDir::new("mqtt-auth");
    let pw = dir.join("broker.passwd");
    let st = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&pw)
        .args(["relay", "s3cret word"])
        .status()
        .expect("mosquitto_passwd");
    assert!(st.success());
    let secret = dir.join("relay.secret");
    std::fs::write(&secret, "s3cret word\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let broker = Broker::start(
        &dir,
        &format!("allow_anonymous false\npassword_file {}\n", pw.display()),
    );
    let auth = ["-u", "relay", "-P", "s3cret word"];
    broker.subscribe("a", "site/gps/nmea", &auth);
    let out = format!(
        "{} qos=1 username=relay password_file={}",
        broker.url("site/{channel}/nmea"),
        secret.display()
    );
    let (relay, input) = relay(features, &dir, "gps", "framing = line\n", &[out]);
    // Lines: one message each, without their line end.
    let want: Vec<String> = (0..300).map(|i| format!("$GPGGA,{i:04},A*00")).collect();
    let datagrams: Vec<String> = want
        .chunks(3)
        .map(|c| c.iter().map(|l| format!("{l}\r\n")).collect())
        .collect();
    send(input, &datagrams);
    let got = broker.read("a", "site/gps/nmea", want.len(), 60, &auth);
    assert_eq!(got, want);
    relay.stop();
}

/// `check` names MQTT mistakes with FILE:LINE and warns of a password file others can read.
#[test]
fn mqtt_check_errors_and_warning() {
    let dir = TempDir::new("mqtt-check");
    let secret = dir.join("open.secret");
    std::fs::write(&secret, "pw\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let conf = dir.join("bad.conf");
    std::fs::write(
        &conf,
        format!(
            "[channel a]\ninput = udp://127.0.0.1:7000\n\
             output = mqtt://127.0.0.1/site/+/raw\n\
             output = mqtt://127.0.0.1/x username=u password_file={}\n\
             output = mqtt://127.0.0.1/y qos=2\n",
            dir.join("missing").display()
        ),
    )
    .unwrap();
    let (code, _out, err) = run_to_end(
        Features::Auto,
        &["check", "-c", conf.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, Some(1), "{err}");
    let f = conf.display().to_string();
    for (line, what) in [(3, "'+'"), (4, "cannot read"), (5, "not 0 or 1")] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("{f}:{line}: output: ")) && l.contains(what)),
            "no {what} at line {line}:\n{err}"
        );
    }
    let good = dir.join("good.conf");
    std::fs::write(
        &good,
        format!(
            "[channel a]\ninput = udp://127.0.0.1:7000\noutput = mqtt://127.0.0.1/x username=u password_file={}\n",
            secret.display()
        ),
    )
    .unwrap();
    let (code, _out, err) = run_to_end(
        Features::Auto,
        &["check", "-c", good.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "{}:3: output: warning: password_file",
            good.display()
        )),
        "{err}"
    );
}
