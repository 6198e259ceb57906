//! A [`Snapshot`] in the Prometheus text exposition format, version 0.0.4
//! (`ringrelay stat --format prometheus`, and the body any `/metrics` endpoint serves with
//! `Content-Type: text/plain; version=0.0.4`).
//!
//! Owns: the metric names and their labels, a stable interface listed in ringrelay(8). Every
//! family is written whole (`# HELP`, `# TYPE`, then its samples) and only once; label values are
//! escaped as the format says (backslash, double quote, newline). Pure: snapshot in, text out.

use super::Snapshot;
use std::fmt::Write;

/// A label value, escaped for the text format: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn escape_label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// HELP text, escaped for the format: `\` → `\\`, newline → `\n`.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// One metric family being written.
struct Family<'o> {
    out: &'o mut String,
    name: &'static str,
}

impl<'o> Family<'o> {
    fn new(out: &'o mut String, name: &'static str, kind: &str, help: &str) -> Family<'o> {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

type InputField = fn(&super::InputMetrics) -> u64;
type OutputField = fn(&super::OutputMetrics) -> u64;

/// The families, in a fixed order. `up` gauges are 0 once the daemon stopped.
pub fn render(s: &Snapshot) -> String {
    let mut o = String::new();
    let live = s.daemon.state != "stopped";
    {
        let mut f = Family::new(
            &mut o,
            "ringrelay_up",
            "gauge",
            "1 while the daemon that wrote these values runs, 0 once it stopped.",
        );
        f.sample(&[], u8::from(live));
    }
    if let Some(t) = s.daemon.started_real_ns {
        let mut f = Family::new(
            &mut o,
            "ringrelay_start_time_seconds",
            "gauge",
            "When the daemon started, in seconds since the Unix epoch.",
        );
        f.sample(
            &[],
            format_args!(
                "{}.{:09}",
                t.div_euclid(1_000_000_000),
                t.rem_euclid(1_000_000_000)
            ),
        );
    }
    let inputs: [(&'static str, &str, &str, InputField); 8] = [
        (
            "ringrelay_input_bytes_total",
            "counter",
            "Bytes received by the channel's input.",
            |i| i.bytes,
        ),
        (
            "ringrelay_input_datagrams_total",
            "counter",
            "Datagrams (or stream reads) received by the channel's input.",
            |i| i.datagrams,
        ),
        (
            "ringrelay_input_drops_total",
            "counter",
            "Chunks dropped at the input: a block output was full or the pool was empty.",
            |i| i.drops,
        ),
        (
            "ringrelay_input_malformed_total",
            "counter",
            "Datagrams dropped as malformed: empty, or larger than a buffer.",
            |i| i.malformed,
        ),
        (
            "ringrelay_input_reconnects_total",
            "counter",
            "Producer connections after the first.",
            |i| i.reconnects,
        ),
        (
            "ringrelay_input_errors_total",
            "counter",
            "Input faults: refused producers, receive errors.",
            |i| i.errors,
        ),
        (
            "ringrelay_input_idle_timeouts_total",
            "counter",
            "Times the input was silent for its idle_timeout (producer redialed or disconnected, datagram input marked idle).",
            |i| i.idle_timeouts,
        ),
        (
            "ringrelay_input_partial_bytes_total",
            "counter",
            "Bytes cut from the input that made no whole record: an incomplete frame or line at the end of a producer connection, or an over-long line.",
            |i| i.partial,
        ),
    ];
    for (name, kind, help, get) in inputs {
        let mut f = Family::new(&mut o, name, kind, help);
        for ch in &s.channels {
            f.sample(&[("channel", &ch.name)], get(&ch.input));
        }
    }
    {
        let mut f = Family::new(
            &mut o,
            "ringrelay_input_up",
            "gauge",
            "1 while the input receives (a bound datagram socket or a connected producer).",
        );
        for ch in &s.channels {
            f.sample(&[("channel", &ch.name)], u8::from(live && ch.input.up()));
        }
    }
    let outputs: [(&'static str, &str, &str, OutputField); 8] = [
        (
            "ringrelay_output_bytes_total",
            "counter",
            "Bytes delivered by the output.",
            |x| x.bytes,
        ),
        (
            "ringrelay_output_datagrams_total",
            "counter",
            "Datagrams (or chunks) delivered by the output.",
            |x| x.datagrams,
        ),
        (
            "ringrelay_output_drops_total",
            "counter",
            "Chunks not delivered: on_slow = drop, output down, send errors.",
            |x| x.drops,
        ),
        (
            "ringrelay_output_disconnects_total",
            "counter",
            "Subscribers disconnected for being slow.",
            |x| x.disconnects,
        ),
        (
            "ringrelay_output_reconnects_total",
            "counter",
            "Connects of a pushed output, or subscribers accepted.",
            |x| x.reconnects,
        ),
        (
            "ringrelay_output_errors_total",
            "counter",
            "Output faults: send errors, refused subscribers, failed connects.",
            |x| x.errors,
        ),
        (
            "ringrelay_output_backlog_bytes",
            "gauge",
            "Bytes queued for the output (all its subscribers).",
            |x| x.backlog,
        ),
        (
            "ringrelay_output_clients",
            "gauge",
            "Subscribers connected to a listening output.",
            |x| x.clients,
        ),
    ];
    for (name, kind, help, get) in outputs {
        let mut f = Family::new(&mut o, name, kind, help);
        for ch in &s.channels {
            for out in &ch.outputs {
                f.sample(&[("channel", &ch.name), ("output", &out.url)], get(out));
            }
        }
    }
    {
        let mut f = Family::new(
            &mut o,
            "ringrelay_output_up",
            "gauge",
            "1 while the output delivers (a connected link, or a socket listening for subscribers).",
        );
        for ch in &s.channels {
            for out in &ch.outputs {
                f.sample(
                    &[("channel", &ch.name), ("output", &out.url)],
                    u8::from(live && out.up()),
                );
            }
        }
    }
    render_spool_and_mqtt(&mut o, s);
    if !s.daemon.pool.is_empty() {
        let mut f = Family::new(
            &mut o,
            "ringrelay_pool_buffers",
            "gauge",
            "Buffers of the pool by class, in use or free.",
        );
        for c in &s.daemon.pool {
            f.sample(&[("class", &c.class), ("state", "in_use")], c.in_use);
            f.sample(
                &[("class", &c.class), ("state", "free")],
                c.total.saturating_sub(c.in_use),
            );
        }
    }
    if let Some(t) = s.daemon.started_real_ns {
        let mut f = Family::new(
            &mut o,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
        );
        f.sample(&[], seconds(t));
    }
    if let Some(l) = &s.live {
        render_live(&mut o, s, l);
    }
    o
}

type SpoolField = fn(&super::SpoolMetrics) -> u64;
type MqttField = fn(&super::MqttMetrics) -> u64;

/// The families of spooling outputs and of `mqtt://` outputs (each written only when some
/// output has a spool, or is an MQTT output).
fn render_spool_and_mqtt(o: &mut String, s: &Snapshot) {
    let spools: [(&'static str, &str, &str, SpoolField); 9] = [
        (
            "ringrelay_spool_spooled_bytes_total",
            "counter",
            "Bytes of records written to the output's disk spool.",
            |x| x.spooled_bytes,
        ),
        (
            "ringrelay_spool_spooled_records_total",
            "counter",
            "Records written to the output's disk spool.",
            |x| x.spooled_records,
        ),
        (
            "ringrelay_spool_replayed_bytes_total",
            "counter",
            "Bytes of records read back from the spool and handed to the output.",
            |x| x.replayed_bytes,
        ),
        (
            "ringrelay_spool_replayed_records_total",
            "counter",
            "Records read back from the spool and handed to the output.",
            |x| x.replayed_records,
        ),
        (
            "ringrelay_spool_dropped_records_total",
            "counter",
            "Records dropped at spool_max by the spool_full policy (or with the disk far behind).",
            |x| x.dropped_records,
        ),
        (
            "ringrelay_spool_errors_total",
            "counter",
            "Spool disk faults: failed writes, syncs and reads.",
            |x| x.errors,
        ),
        (
            "ringrelay_spool_bytes",
            "gauge",
            "Bytes in the spool's segment files.",
            |x| x.bytes,
        ),
        (
            "ringrelay_spool_oldest_age_seconds",
            "gauge",
            "Age of the oldest record still in the spool, in seconds (0 when it is empty).",
            |x| x.oldest_age_secs,
        ),
        (
            "ringrelay_spool_unsynced_bytes",
            "gauge",
            "Bytes appended to the spool that no completed fsync covers yet (a crash now could lose them).",
            |x| x.unsynced_bytes,
        ),
    ];
    let spooling = || {
        s.channels
            .iter()
            .flat_map(|ch| ch.outputs.iter().map(move |out| (ch, out)))
            .filter_map(|(ch, out)| out.spool.as_ref().map(|sp| (ch, out, sp)))
    };
    if spooling().next().is_some() {
        for (name, kind, help, get) in spools {
            let mut f = Family::new(o, name, kind, help);
            for (ch, out, sp) in spooling() {
                f.sample(&[("channel", &ch.name), ("output", &out.url)], get(sp));
            }
        }
    }
    let mqtts: [(&'static str, &str, MqttField); 4] = [
        (
            "ringrelay_mqtt_published_total",
            "Messages written to the broker, each counted once.",
            |x| x.published,
        ),
        (
            "ringrelay_mqtt_acknowledged_total",
            "QoS 1 messages the broker acknowledged (PUBACK).",
            |x| x.acknowledged,
        ),
        (
            "ringrelay_mqtt_duplicates_total",
            "QoS 1 messages written again with DUP set after a reconnect.",
            |x| x.duplicates,
        ),
        (
            "ringrelay_mqtt_refused_total",
            "CONNECTs the broker refused (a CONNACK with a non-zero return code).",
            |x| x.refused,
        ),
    ];
    let mqtt = || {
        s.channels
            .iter()
            .flat_map(|ch| ch.outputs.iter().map(move |out| (ch, out)))
            .filter_map(|(ch, out)| out.mqtt.as_ref().map(|m| (ch, out, m)))
    };
    if mqtt().next().is_some() {
        for (name, help, get) in mqtts {
            let mut f = Family::new(o, name, "counter", help);
            for (ch, out, m) in mqtt() {
                f.sample(&[("channel", &ch.name), ("output", &out.url)], get(m));
            }
        }
    }
}

/// `ns` since the epoch as seconds with nine decimals.
fn seconds(ns: i64) -> String {
    format!(
        "{}.{:09}",
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000)
    )
}

/// What only the live page has: the ring, the regions, the build, the server itself.
fn render_live(o: &mut String, s: &Snapshot, l: &super::LiveInfo) {
    Family::new(
        o,
        "ringrelay_ring_inflight",
        "gauge",
        "Operations submitted to the io_uring ring and not yet completed.",
    )
    .sample(&[], l.ring_in_flight);
    {
        let mut f = Family::new(
            o,
            "ringrelay_shm_frames_written_total",
            "counter",
            "Frames written into a channel's shared-memory region, per decimation level.",
        );
        for (ch, levels) in &l.regions {
            for (i, n) in levels.iter().enumerate() {
                f.sample(&[("channel", ch), ("level", &i.to_string())], n);
            }
        }
    }
    Family::new(
        o,
        "ringrelay_build_info",
        "gauge",
        "Always 1; the labels say the relay's version, the kernel it runs on and the io_uring features in use.",
    )
    .sample(
        &[
            ("version", &s.daemon.version),
            ("kernel", &l.kernel),
            ("features", &l.features),
        ],
        1,
    );
    let h = &l.http;
    let http: [(&'static str, &str, u64); 6] = [
        (
            "ringrelay_http_requests_total",
            "Requests the metrics server answered, any status.",
            h.requests,
        ),
        (
            "ringrelay_http_rejected_total",
            "Malformed or too large requests (answered 400, 431 or 505, then closed).",
            h.rejected,
        ),
        (
            "ringrelay_http_denied_total",
            "Connections from outside metrics_allow, closed at once.",
            h.denied,
        ),
        (
            "ringrelay_http_refused_total",
            "Connections closed at once: every connection slot was busy answering.",
            h.refused,
        ),
        (
            "ringrelay_http_evicted_total",
            "Idle connections closed to make room for a new one.",
            h.evicted,
        ),
        (
            "ringrelay_http_timeouts_total",
            "Connections closed at their 5 s request deadline.",
            h.timeouts,
        ),
    ];
    for (name, help, v) in http {
        Family::new(o, name, "counter", help).sample(&[], v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::sample;

    #[test]
    fn label_escapes() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape_help("x\\y\nz\"q"), "x\\\\y\\nz\"q");
    }

    #[test]
    fn families_and_samples() {
        let t = render(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "# HELP ringrelay_up 1 while the daemon that wrote these values runs, 0 once it stopped.");
        assert_eq!(lines[1], "# TYPE ringrelay_up gauge");
        assert_eq!(lines[2], "ringrelay_up 1");
        for want in [
            "ringrelay_start_time_seconds 1700000000.500000000",
            "# TYPE ringrelay_input_bytes_total counter",
            "ringrelay_input_bytes_total{channel=\"seismo\"} 1000",
            "ringrelay_input_malformed_total{channel=\"seismo\"} 2",
            "ringrelay_input_up{channel=\"seismo\"} 1",
            "# TYPE ringrelay_output_backlog_bytes gauge",
            "ringrelay_output_backlog_bytes{channel=\"seismo\",output=\"tcp-listen://0.0.0.0:6000\"} 77",
            "ringrelay_output_clients{channel=\"seismo\",output=\"tcp-listen://0.0.0.0:6000\"} 2",
            "ringrelay_output_up{channel=\"seismo\",output=\"tcp-listen://0.0.0.0:6000\"} 1",
            "ringrelay_output_up{channel=\"seismo\",output=\"unix:///tmp/a\\\"b\\\\c\"} 0",
            "ringrelay_pool_buffers{class=\"large\",state=\"in_use\"} 3",
            "# TYPE ringrelay_spool_bytes gauge",
            "ringrelay_spool_bytes{channel=\"seismo\",output=\"unix:///tmp/a\\\"b\\\\c\"} 3000",
            "ringrelay_spool_oldest_age_seconds{channel=\"seismo\",output=\"unix:///tmp/a\\\"b\\\\c\"} 12",
            "# HELP ringrelay_spool_unsynced_bytes Bytes appended to the spool that no completed fsync covers yet (a crash now could lose them).",
            "# TYPE ringrelay_spool_unsynced_bytes gauge",
            "ringrelay_spool_unsynced_bytes{channel=\"seismo\",output=\"unix:///tmp/a\\\"b\\\\c\"} 512",
            "ringrelay_spool_dropped_records_total{channel=\"seismo\",output=\"unix:///tmp/a\\\"b\\\\c\"} 3",
            "# TYPE ringrelay_mqtt_acknowledged_total counter",
            "ringrelay_mqtt_acknowledged_total{channel=\"seismo\",output=\"mqtt://127.0.0.1:1883/t\"} 18",
            "ringrelay_mqtt_duplicates_total{channel=\"seismo\",output=\"mqtt://127.0.0.1:1883/t\"} 2",
            "ringrelay_pool_buffers{class=\"small\",state=\"free\"} 246",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{t}");
        }
        // Every family announced once, with HELP right before TYPE, and every sample after its
        // family's TYPE.
        let mut seen = std::collections::HashSet::new();
        let mut current = "";
        for (i, l) in lines.iter().enumerate() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(lines[i - 1].starts_with(&format!("# HELP {name} ")));
                assert!(seen.insert(name.to_string()), "{name} twice");
                current = name;
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "{l}");
            }
        }
        assert!(t.ends_with('\n'));
    }

    #[test]
    fn a_stopped_daemon_is_down() {
        let mut s = sample();
        s.daemon.state = "stopped".into();
        s.daemon.pool.clear();
        s.daemon.started_real_ns = None;
        let t = render(&s);
        assert!(t.contains("\nringrelay_up 0\n"));
        assert!(t.contains("ringrelay_input_up{channel=\"seismo\"} 0\n"));
        assert!(!t.contains("ringrelay_pool_buffers"));
        assert!(
            !t.contains("ringrelay_spool_bytes{channel=\"seismo\",output=\"tcp-listen"),
            "only spooling outputs have spool samples"
        );
        assert!(!t.contains("ringrelay_start_time_seconds"));
        // Counters stay as they were.
        assert!(t.contains("ringrelay_input_bytes_total{channel=\"seismo\"} 1000\n"));
    }
}
