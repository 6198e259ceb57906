//! `ringrelay stat`: print the daemon's per-channel and per-output counters from
//! `<shm_dir>/ringrelay.stats` as a table or as JSON.
//!
//! Owns: its arguments ([`StatArgs`]) and the rendering; the file format is
//! [`crate::shm::stats`]. A plain reader: never writes the file and never signals the daemon.
//! Missing or invalid file: error, exit 1.

use crate::shm::{StatsReader, StatsSnapshot, STATS_FILE};
use argh::FromArgs;
use std::path::Path;

/// Show the daemon's per-channel and per-output counters.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "stat")]
pub struct StatArgs {
    /// directory of the regions
    #[argh(option, default = "String::from(\"/dev/shm/ringrelay\")")]
    pub shm_dir: String,
    /// print JSON
    #[argh(switch)]
    pub json: bool,
}

pub fn run(a: &StatArgs) -> i32 {
    let path = Path::new(&a.shm_dir).join(STATS_FILE);
    let snap = StatsReader::open(&path).and_then(|mut r| r.snapshot());
    match snap {
        Ok(s) => {
            let text = if a.json {
                render_json(&s)
            } else {
                render_table(&s)
            };
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("ringrelay stat: {e}");
            1
        }
    }
}

/// JSON string literal with the escapes JSON requires.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// One JSON object: `{"updated_ns":…,"pid":…,"stopped":…,"rows":[{"label":…,…}]}` + newline.
pub fn render_json(s: &StatsSnapshot) -> String {
    let rows: Vec<String> = s
        .rows
        .iter()
        .map(|r| {
            let mut o = format!(
                "{{\"label\":{},\"kind\":{},\"state\":{}",
                json_str(&r.label),
                json_str(&r.kind),
                json_str(&r.state)
            );
            for (c, v) in s.columns.iter().zip(r.values.iter()) {
                o.push_str(&format!(",{}:{v}", json_str(c)));
            }
            o.push('}');
            o
        })
        .collect();
    format!(
        "{{\"updated_ns\":{},\"pid\":{},\"stopped\":{},\"rows\":[{}]}}\n",
        s.updated_real_ns,
        s.writer_pid,
        s.stopped,
        rows.join(",")
    )
}

/// An aligned table, one row per channel/input/output.
pub fn render_table(s: &StatsSnapshot) -> String {
    let mut head = vec!["label".to_string(), "kind".into(), "state".into()];
    head.extend(s.columns.iter().cloned());
    let mut table = vec![head];
    for r in &s.rows {
        let mut l = vec![r.label.clone(), r.kind.clone(), r.state.clone()];
        l.extend(r.values.iter().map(|v| v.to_string()));
        table.push(l);
    }
    let ncol = table[0].len();
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
    if s.stopped {
        o.push_str(&format!(
            "# daemon (pid {}) stopped; last counters:\n",
            s.writer_pid
        ));
    }
    for l in &table {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if c < 3 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::reader::StatsRowRead;

    fn snap() -> StatsSnapshot {
        StatsSnapshot {
            columns: crate::shm::STAT_COLUMNS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            rows: vec![StatsRowRead {
                label: "seis\"mo".into(),
                kind: "channel".into(),
                state: "up".into(),
                values: [1, 2, 3, 4, 5, 6, 7, 8],
            }],
            updated_real_ns: 5,
            writer_pid: 9,
            stopped: false,
        }
    }

    #[test]
    fn json_rendering() {
        assert_eq!(
            render_json(&snap()),
            "{\"updated_ns\":5,\"pid\":9,\"stopped\":false,\"rows\":[{\"label\":\"seis\\\"mo\",\"kind\":\"channel\",\"state\":\"up\",\"bytes\":1,\"datagrams\":2,\"drops\":3,\"disconnects\":4,\"reconnects\":5,\"errors\":6,\"backlog\":7,\"clients\":8}]}\n"
        );
    }

    #[test]
    fn table_rendering() {
        let t = render_table(&snap());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("label    kind     state  bytes"));
        assert!(lines[1].ends_with("7        8"));
    }
}
