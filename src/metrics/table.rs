//! [`Snapshot`]s as aligned text tables: the counters (`ringrelay stat`) and the rates between
//! two snapshots (`ringrelay stat --watch`).
//!
//! Owns: the columns of both tables and how a rate is computed (the difference of two
//! snapshots over the daemon's own publication times). Pure: no clock, no terminal.

use super::Snapshot;

/// Left-aligns the first `text_cols` columns and right-aligns the rest.
fn align(table: &[Vec<String>], text_cols: usize) -> String {
    let ncol = table.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..ncol)
        .map(|c| {
            table
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut o = String::new();
    for l in table {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if c < text_cols {
                    format!("{v:<w$}", w = widths[c])
                } else {
                    format!("{v:>w$}", w = widths[c])
                }
            })
            .collect();
        o.push_str(cells.join("  ").trim_end());
        o.push('\n');
    }
    o
}

/// `# ringrelay 1.2.3, pid 42, running; pool 13/320 buffers in use`.
pub fn heading(s: &Snapshot) -> String {
    let d = &s.daemon;
    let version = if d.version.is_empty() {
        String::new()
    } else {
        format!(" {}", d.version)
    };
    let mut h = format!("# ringrelay{version}, pid {}, {}", d.pid, d.state);
    if let Some((used, total)) = s.pool_totals() {
        h.push_str(&format!("; pool {used}/{total} buffers in use"));
    }
    if d.state == "stopped" {
        h.push_str("; last counters");
    }
    h.push('\n');
    h
}

/// The counters: a heading line, then one row per input and per output.
pub fn counters(s: &Snapshot) -> String {
    let mut t = vec![[
        "channel",
        "end",
        "url",
        "state",
        "bytes",
        "datagrams",
        "drops",
        "malformed",
        "disconnects",
        "reconnects",
        "errors",
        "backlog",
        "clients",
    ]
    .map(String::from)
    .to_vec()];
    let dash = || "-".to_string();
    for ch in &s.channels {
        let i = &ch.input;
        t.push(vec![
            ch.name.clone(),
            "in".into(),
            i.url.clone(),
            i.state.clone(),
            i.bytes.to_string(),
            i.datagrams.to_string(),
            i.drops.to_string(),
            i.malformed.to_string(),
            dash(),
            i.reconnects.to_string(),
            i.errors.to_string(),
            dash(),
            dash(),
        ]);
        for o in &ch.outputs {
            t.push(vec![
                ch.name.clone(),
                "out".into(),
                o.url.clone(),
                o.state.clone(),
                o.bytes.to_string(),
                o.datagrams.to_string(),
                o.drops.to_string(),
                dash(),
                o.disconnects.to_string(),
                o.reconnects.to_string(),
                o.errors.to_string(),
                o.backlog.to_string(),
                o.clients.to_string(),
            ]);
        }
    }
    heading(s) + &align(&t, 4) + &extras(s)
}

/// Tables of the spools and the MQTT sessions, after a blank line each, when there are any.
fn extras(s: &Snapshot) -> String {
    let mut text = String::new();
    let mut spools = vec![[
        "channel",
        "spooled output",
        "spooled_bytes",
        "spooled_records",
        "replayed_bytes",
        "replayed_records",
        "dropped",
        "errors",
        "spool_bytes",
        "oldest_age_s",
        "unsynced",
    ]
    .map(String::from)
    .to_vec()];
    let mut mqtt = vec![[
        "channel",
        "mqtt output",
        "published",
        "acknowledged",
        "duplicates",
        "refused",
        "lost",
    ]
    .map(String::from)
    .to_vec()];
    for ch in &s.channels {
        for o in &ch.outputs {
            if let Some(sp) = &o.spool {
                let mut row = vec![ch.name.clone(), o.url.clone()];
                row.extend(
                    [
                        sp.spooled_bytes,
                        sp.spooled_records,
                        sp.replayed_bytes,
                        sp.replayed_records,
                        sp.dropped_records,
                        sp.errors,
                        sp.bytes,
                        sp.oldest_age_secs,
                        sp.unsynced_bytes,
                    ]
                    .map(|v| v.to_string()),
                );
                spools.push(row);
            }
            if let Some(m) = &o.mqtt {
                let mut row = vec![ch.name.clone(), o.url.clone()];
                row.extend(
                    [m.published, m.acknowledged, m.duplicates, m.refused, m.lost]
                        .map(|v| v.to_string()),
                );
                mqtt.push(row);
            }
        }
    }
    for t in [spools, mqtt] {
        if t.len() > 1 {
            text.push('\n');
            text.push_str(&align(&t, 2));
        }
    }
    text
}

/// Per-second rate of a counter between two values `secs` apart (0 when it went backwards: a
/// restarted daemon).
fn rate(now: u64, before: Option<u64>, secs: f64) -> f64 {
    match before {
        Some(b) if now >= b && secs > 0.0 => (now - b) as f64 / secs,
        _ => 0.0,
    }
}

/// The rates table between `before` and `now`: bytes/s, datagrams/s and drops/s per input and
/// output, with its backlog, clients and state now. Rows are matched by channel name and URL;
/// one new in `now` shows no rate yet (0). The interval is the daemon's: the difference of the
/// two snapshots' publication times.
pub fn rates(before: &Snapshot, now: &Snapshot) -> String {
    let secs = (now.daemon.updated_real_ns - before.daemon.updated_real_ns) as f64 / 1e9;
    let mut t = vec![[
        "channel", "end", "url", "state", "bytes/s", "dgram/s", "drops/s", "backlog", "clients",
    ]
    .map(String::from)
    .to_vec()];
    let fmt_rate = |v: f64| format!("{v:.1}");
    for ch in &now.channels {
        let old = before.channels.iter().find(|c| c.name == ch.name);
        let i = &ch.input;
        let oi = old.map(|c| &c.input);
        t.push(vec![
            ch.name.clone(),
            "in".into(),
            i.url.clone(),
            i.state.clone(),
            fmt_rate(rate(i.bytes, oi.map(|x| x.bytes), secs)),
            fmt_rate(rate(i.datagrams, oi.map(|x| x.datagrams), secs)),
            fmt_rate(rate(i.drops, oi.map(|x| x.drops), secs)),
            "-".into(),
            "-".into(),
        ]);
        for o in &ch.outputs {
            let oo = old.and_then(|c| c.outputs.iter().find(|x| x.url == o.url));
            t.push(vec![
                ch.name.clone(),
                "out".into(),
                o.url.clone(),
                o.state.clone(),
                fmt_rate(rate(o.bytes, oo.map(|x| x.bytes), secs)),
                fmt_rate(rate(o.datagrams, oo.map(|x| x.datagrams), secs)),
                fmt_rate(rate(o.drops, oo.map(|x| x.drops), secs)),
                o.backlog.to_string(),
                o.clients.to_string(),
            ]);
        }
    }
    let mut h = heading(now);
    h.pop();
    h.push_str(&format!("; rates over {secs:.3} s\n"));
    h + &align(&t, 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::sample;

    #[test]
    fn counters_table() {
        let t = counters(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "# ringrelay 1.2.3, pid 42, running; pool 13/320 buffers in use"
        );
        assert!(lines[1].starts_with("channel  end  url "), "{t}");
        assert!(
            lines[2].starts_with("seismo   in   udp://127.0.0.1:5000 "),
            "{t}"
        );
        assert!(
            lines[2].ends_with("2            -           0       3        -        -"),
            "{t}"
        );
        assert!(lines[3].ends_with("77        2"), "{t}");
        assert_eq!(lines[6], "");
        assert!(lines[7].starts_with("channel  spooled output "), "{t}");
        let spool: Vec<&str> = lines[8].split_whitespace().collect();
        assert_eq!(
            spool[2..],
            ["4000", "40", "1000", "10", "3", "1", "3000", "12", "512"],
            "{t}"
        );
        assert_eq!(lines[9], "");
        let mqtt: Vec<&str> = lines[11].split_whitespace().collect();
        assert_eq!(
            mqtt,
            [
                "seismo",
                "mqtt://127.0.0.1:1883/t",
                "20",
                "18",
                "2",
                "1",
                "0"
            ],
            "{t}"
        );
        assert_eq!(lines.len(), 12);
    }

    #[test]
    fn rates_between_two_snapshots() {
        let before = sample();
        let mut now = sample();
        now.daemon.updated_real_ns += 500_000_000;
        now.channels[0].input.bytes += 1000;
        now.channels[0].input.datagrams += 10;
        now.channels[0].outputs[0].drops += 1;
        now.channels[0].outputs[1].url = "udp://new".into();
        now.channels[0].outputs[1].bytes = 99;
        let t = rates(&before, &now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("; rates over 0.500 s"), "{t}");
        let cells: Vec<Vec<&str>> = lines[1..]
            .iter()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            cells[0],
            [
                "channel", "end", "url", "state", "bytes/s", "dgram/s", "drops/s", "backlog",
                "clients"
            ]
        );
        assert_eq!(cells[1][4..7], ["2000.0", "20.0", "0.0"]);
        assert_eq!(cells[2][4..], ["0.0", "0.0", "2.0", "77", "2"]);
        assert_eq!(
            cells[3][4..7],
            ["0.0", "0.0", "0.0"],
            "a new output has no rate yet"
        );
        // A counter that went backwards (a restart) is no negative rate.
        assert_eq!(rate(5, Some(10), 1.0), 0.0);
        assert_eq!(rate(5, Some(1), 0.0), 0.0);
    }
}
