//! A [`Snapshot`] as one JSON document (`ringrelay stat --format json`).
//!
//! Owns: the key names, which are a stable interface documented in ringrelay(8); add keys, never
//! rename or remove one. Written by hand (no serialisation crate): every string goes through
//! [`json_str`].

use super::Snapshot;
use std::fmt::Write;

/// A JSON string literal, with the escapes JSON requires (quote, backslash, control characters).
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `"key":value` pairs of integers, comma-separated.
fn ints(o: &mut String, pairs: &[(&str, u64)]) {
    for (k, v) in pairs {
        let _ = write!(o, ",\"{k}\":{v}");
    }
}

/// The document, followed by a newline:
///
/// ```text
/// {"daemon":{"pid":…,"version":…,"state":…,"started_ns":…|null,"updated_ns":…,
///            "pool":{"buffers_in_use":…,"buffers_total":…,"classes":[{"class":…,
///            "buffer_bytes":…,"in_use":…,"total":…}]}|null},
///  "channels":[{"name":…,"input":{"url":…,"state":…,"up":…,"bytes":…,"datagrams":…,
///            "drops":…,"malformed":…,"reconnects":…,"errors":…,"idle_timeouts":…,
///            "partial":…},
///            "outputs":[{"url":…,"state":…,"up":…,"bytes":…,"datagrams":…,"drops":…,
///            "disconnects":…,"reconnects":…,"errors":…,"backlog":…,"clients":…,
///            "spool":{"spooled_bytes":…,"spooled_records":…,"replayed_bytes":…,
///            "replayed_records":…,"dropped_records":…,"errors":…,"bytes":…,
///            "oldest_age_seconds":…,"unsynced_bytes":…}|null,
///            "mqtt":{"published":…,"acknowledged":…,"duplicates":…,"refused":…,"lost":…}|null}]}]}
/// ```
pub fn render(s: &Snapshot) -> String {
    let d = &s.daemon;
    let mut o = String::new();
    let _ = write!(
        o,
        "{{\"daemon\":{{\"pid\":{},\"version\":{},\"state\":{},\"started_ns\":{},\"updated_ns\":{},\"pool\":",
        d.pid,
        json_str(&d.version),
        json_str(&d.state),
        d.started_real_ns
            .map_or_else(|| "null".to_string(), |t| t.to_string()),
        d.updated_real_ns
    );
    match s.pool_totals() {
        None => o.push_str("null"),
        Some((used, total)) => {
            let _ = write!(
                o,
                "{{\"buffers_in_use\":{used},\"buffers_total\":{total},\"classes\":["
            );
            for (i, c) in d.pool.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                let _ = write!(o, "{{\"class\":{}", json_str(&c.class));
                ints(
                    &mut o,
                    &[
                        ("buffer_bytes", c.buffer_bytes),
                        ("in_use", c.in_use),
                        ("total", c.total),
                    ],
                );
                o.push('}');
            }
            o.push_str("]}");
        }
    }
    o.push_str("},\"channels\":[");
    for (i, ch) in s.channels.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let inp = &ch.input;
        let _ = write!(
            o,
            "{{\"name\":{},\"input\":{{\"url\":{},\"state\":{},\"up\":{}",
            json_str(&ch.name),
            json_str(&inp.url),
            json_str(&inp.state),
            inp.up()
        );
        ints(
            &mut o,
            &[
                ("bytes", inp.bytes),
                ("datagrams", inp.datagrams),
                ("drops", inp.drops),
                ("malformed", inp.malformed),
                ("reconnects", inp.reconnects),
                ("errors", inp.errors),
                ("idle_timeouts", inp.idle_timeouts),
                ("partial", inp.partial),
            ],
        );
        o.push_str("},\"outputs\":[");
        for (j, out) in ch.outputs.iter().enumerate() {
            if j > 0 {
                o.push(',');
            }
            let _ = write!(
                o,
                "{{\"url\":{},\"state\":{},\"up\":{}",
                json_str(&out.url),
                json_str(&out.state),
                out.up()
            );
            ints(
                &mut o,
                &[
                    ("bytes", out.bytes),
                    ("datagrams", out.datagrams),
                    ("drops", out.drops),
                    ("disconnects", out.disconnects),
                    ("reconnects", out.reconnects),
                    ("errors", out.errors),
                    ("backlog", out.backlog),
                    ("clients", out.clients),
                ],
            );
            o.push_str(",\"spool\":");
            match &out.spool {
                None => o.push_str("null"),
                Some(sp) => {
                    let _ = write!(o, "{{\"spooled_bytes\":{}", sp.spooled_bytes);
                    ints(
                        &mut o,
                        &[
                            ("spooled_records", sp.spooled_records),
                            ("replayed_bytes", sp.replayed_bytes),
                            ("replayed_records", sp.replayed_records),
                            ("dropped_records", sp.dropped_records),
                            ("errors", sp.errors),
                            ("bytes", sp.bytes),
                            ("oldest_age_seconds", sp.oldest_age_secs),
                            ("unsynced_bytes", sp.unsynced_bytes),
                        ],
                    );
                    o.push('}');
                }
            }
            o.push_str(",\"mqtt\":");
            match &out.mqtt {
                None => o.push_str("null"),
                Some(m) => {
                    let _ = write!(o, "{{\"published\":{}", m.published);
                    ints(
                        &mut o,
                        &[
                            ("acknowledged", m.acknowledged),
                            ("duplicates", m.duplicates),
                            ("refused", m.refused),
                            ("lost", m.lost),
                        ],
                    );
                    o.push('}');
                }
            }
            o.push('}');
        }
        o.push_str("]}");
    }
    o.push_str("]}\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::sample;

    #[test]
    fn escapes() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }

    #[test]
    fn document() {
        let j = render(&sample());
        assert!(j.ends_with("]}\n"));
        assert!(j.starts_with(
            "{\"daemon\":{\"pid\":42,\"version\":\"1.2.3\",\"state\":\"running\",\
             \"started_ns\":1700000000500000000,\"updated_ns\":1700000001000000000,\
             \"pool\":{\"buffers_in_use\":13,\"buffers_total\":320,\"classes\":[{\"class\":\"large\",\
             \"buffer_bytes\":65536,\"in_use\":3,\"total\":64}"
        ), "{j}");
        assert!(
            j.contains(
                "\"channels\":[{\"name\":\"seismo\",\"input\":{\"url\":\"udp://127.0.0.1:5000\",\
             \"state\":\"up\",\"up\":true,\"bytes\":1000,\"datagrams\":10,\"drops\":1,\
             \"malformed\":2,\"reconnects\":0,\"errors\":3,\"idle_timeouts\":4,\"partial\":5},\
             \"outputs\":[{\"url\":\
             \"tcp-listen://0.0.0.0:6000\",\"state\":\"listening\",\"up\":true,\"bytes\":900,\
             \"datagrams\":9,\"drops\":1,\"disconnects\":4,\"reconnects\":5,\"errors\":6,\
             \"backlog\":77,\"clients\":2,\"spool\":null,\"mqtt\":null},{\"url\":\"unix:///tmp/a\\\"b\\\\c\",\"state\":\"down\",\
             \"up\":false,"
            ),
            "{j}"
        );
    }

    #[test]
    fn spool_and_mqtt_objects() {
        let j = render(&sample());
        assert!(
            j.contains(
                "\"clients\":0,\"spool\":{\"spooled_bytes\":4000,\"spooled_records\":40,\
                 \"replayed_bytes\":1000,\"replayed_records\":10,\"dropped_records\":3,\
                 \"errors\":1,\"bytes\":3000,\"oldest_age_seconds\":12,\"unsynced_bytes\":512},\
                 \"mqtt\":null}"
            ),
            "{j}"
        );
        assert!(
            j.contains(
                "\"spool\":null,\"mqtt\":{\"published\":20,\"acknowledged\":18,\
                 \"duplicates\":2,\"refused\":1,\"lost\":0}}]}]}"
            ),
            "{j}"
        );
    }

    #[test]
    fn unknowns_are_null() {
        let mut s = sample();
        s.daemon.pool.clear();
        s.daemon.started_real_ns = None;
        s.channels.clear();
        let j = render(&s);
        assert!(j.contains("\"started_ns\":null,"), "{j}");
        assert!(j.ends_with("\"pool\":null},\"channels\":[]}\n"), "{j}");
    }
}
