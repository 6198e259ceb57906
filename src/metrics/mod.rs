//! What the relay reports about itself: one [`Snapshot`] of the daemon, its buffer pool and every
//! channel's input and outputs, and the ways it is shown.
//!
//! Owns: the snapshot types, their construction from a running [`Engine`]
//! ([`Snapshot::from_engine`]), their encoding as rows of the counters region
//! `<shm_dir>/ringrelay.stats` ([`Snapshot::to_rows`], [`Snapshot::from_rows`]), and the renderers:
//! [`json`] (`ringrelay stat --format json`), [`prometheus`] (the text exposition format, for
//! `stat --format prometheus` and any HTTP endpoint serving it) and [`table`] (the plain and the
//! `--watch` tables). Renderers are pure functions from a snapshot to text: no I/O, no clock.
//!
//! # Rows of the counters region
//!
//! The region has fixed columns ([`crate::shm::STAT_COLUMNS`]); a row's `kind` says how its
//! values read:
//!
//! | kind | label | state | values |
//! |---|---|---|---|
//! | `daemon` | `ringrelay <version>` | `running`, `stopping` | start time (ns since the epoch), then zeros |
//! | `pool` | buffer class (`large`, `small`) | empty | in use, total, bytes per buffer, then zeros |
//! | `input` | `<channel>/<input url>` | `up`, `idle`, `listening`, `down` | bytes, datagrams, drops, **malformed**, reconnects, errors, **idle_timeouts**, **partial** |
//! | `output` | `<channel>/<output url>` | see `engine::output_state` | the columns as named |
//! | `spool` | as its output's | empty | spooled bytes, spooled records, replayed bytes, replayed records, dropped records, errors, spool bytes, oldest age (s) |
//! | `spool_disk` | as its output's | empty | unsynced bytes, then zeros |
//! | `mqtt` | as its output's | empty | published, acknowledged, duplicates, refused, lost, then zeros |
//!
//! An input row starts its channel: the output rows after it belong to it. A `spool` or `mqtt`
//! row follows the row of the output it belongs to (rather than widening every row), and a
//! `spool_disk` row its `spool` row (the `spool` row's slots are all taken; a reader that
//! predates a row kind skips it). Labels are cut to 63 bytes, so a long URL may be shortened.

pub mod health;
pub mod http;
pub mod json;
pub mod prometheus;
pub mod table;

use crate::engine::buffers::Class;
use crate::engine::{input_state, output_backlog, output_state, Engine};
use crate::shm::{StatRow, StatsSnapshot};

/// The daemon as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonInfo {
    pub pid: u32,
    /// The relay's version (`CARGO_PKG_VERSION`); empty when the source does not say.
    pub version: String,
    /// When the daemon started, in ns since the Unix epoch, if known.
    pub started_real_ns: Option<i64>,
    /// When these values were taken, in ns since the Unix epoch.
    pub updated_real_ns: i64,
    /// `running`, `stopping` (draining after SIGTERM) or `stopped` (these are its last values).
    pub state: String,
    /// Buffer classes of the pool; empty when the source does not say.
    pub pool: Vec<PoolClass>,
}

/// One class of the buffer pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolClass {
    /// `large` (stream reads) or `small` (datagram receives).
    pub class: String,
    pub buffer_bytes: u64,
    pub in_use: u64,
    pub total: u64,
}

/// A channel's input counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InputMetrics {
    pub url: String,
    /// `up`, `idle` (a datagram input silent for its `idle_timeout`), `listening` or `down`.
    pub state: String,
    pub bytes: u64,
    pub datagrams: u64,
    pub drops: u64,
    pub malformed: u64,
    pub reconnects: u64,
    pub errors: u64,
    /// Times the input was silent for its `idle_timeout`.
    pub idle_timeouts: u64,
    /// Bytes cut from the input that made no whole record (frames, lines, preambles).
    pub partial: u64,
}

impl InputMetrics {
    /// Receiving: a bound datagram socket (idle or not) or a connected producer.
    pub fn up(&self) -> bool {
        self.state == "up" || self.state == "idle"
    }
}

/// One output's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputMetrics {
    pub url: String,
    pub state: String,
    pub bytes: u64,
    pub datagrams: u64,
    pub drops: u64,
    pub disconnects: u64,
    pub reconnects: u64,
    pub errors: u64,
    /// Bytes queued (all subscribers' queues for a listening output).
    pub backlog: u64,
    /// Subscribers connected (0 for a pushed output).
    pub clients: u64,
    /// The output's disk spool, if it has one (`spool =`).
    pub spool: Option<SpoolMetrics>,
    /// An `mqtt://` output's session counters.
    pub mqtt: Option<MqttMetrics>,
}

/// An output's disk spool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolMetrics {
    /// Bytes and records written to the spool.
    pub spooled_bytes: u64,
    pub spooled_records: u64,
    /// Bytes and records read back from the spool and handed to the output.
    pub replayed_bytes: u64,
    pub replayed_records: u64,
    /// Records dropped at `spool_max` (or with the disk far behind).
    pub dropped_records: u64,
    /// Disk faults: failed writes, syncs, reads.
    pub errors: u64,
    /// Bytes in the spool's segment files now.
    pub bytes: u64,
    /// Age of the oldest record still spooled, in seconds (0 when empty).
    pub oldest_age_secs: u64,
    /// Bytes appended to the spool that no completed fsync covers yet (a crash now could lose
    /// them); 0 from a counters region written before the `spool_disk` row.
    pub unsynced_bytes: u64,
}

/// An `mqtt://` output's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MqttMetrics {
    /// Messages written to a broker, each once.
    pub published: u64,
    /// QoS 1 messages the broker acknowledged.
    pub acknowledged: u64,
    /// QoS 1 messages written again (DUP) after a reconnect.
    pub duplicates: u64,
    /// CONNECTs the broker refused.
    pub refused: u64,
    /// QoS 0 messages lost under their write when the connection failed (in `drops` too).
    pub lost: u64,
}

impl OutputMetrics {
    /// Delivering: a connected link, or a listening socket taking subscribers.
    pub fn up(&self) -> bool {
        self.state == "up" || self.state == "listening"
    }
}

/// A channel: its input and outputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelMetrics {
    pub name: String,
    pub input: InputMetrics,
    pub outputs: Vec<OutputMetrics>,
}

/// What only the running daemon knows (the metrics server's page; the counters region does not
/// carry it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveInfo {
    /// Operations in flight on the ring.
    pub ring_in_flight: u64,
    /// `uname -r` of the running kernel.
    pub kernel: String,
    /// The io_uring features in use, comma-separated.
    pub features: String,
    /// Per decimating channel: frames written into each of its regions (level 0 first).
    pub regions: Vec<(String, Vec<u64>)>,
    /// The metrics server's own counters.
    pub http: crate::engine::metrics_server::HttpCounters,
}

/// Everything the relay reports at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub daemon: DaemonInfo,
    pub channels: Vec<ChannelMetrics>,
    /// Set for the live page only.
    pub live: Option<LiveInfo>,
}

/// The relay's version as reported.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

impl Snapshot {
    /// The running engine's counters. `started_real_ns` and `now_real_ns` come from the caller
    /// (the engine reads no clock).
    pub fn from_engine(engine: &Engine, started_real_ns: i64, now_real_ns: i64) -> Snapshot {
        let pool = engine.pool();
        let pool = [(Class::Large, "large"), (Class::Small, "small")]
            .into_iter()
            .map(|(c, name)| {
                let (free, total) = pool.free_of(c);
                PoolClass {
                    class: name.into(),
                    buffer_bytes: u64::from(pool.class_size(c)),
                    in_use: (total - free) as u64,
                    total: total as u64,
                }
            })
            .filter(|c| c.total > 0)
            .collect();
        let channels = engine
            .channels()
            .iter()
            .flatten()
            .map(|ch| {
                let s = &ch.stats;
                let state = input_state(ch);
                ChannelMetrics {
                    name: ch.name().to_string(),
                    input: InputMetrics {
                        url: ch.cfg.input.url(),
                        state: state.into(),
                        bytes: s.bytes,
                        datagrams: s.datagrams,
                        drops: s.drops,
                        malformed: s.malformed,
                        reconnects: s.reconnects,
                        errors: s.errors,
                        idle_timeouts: s.idle_timeouts,
                        partial: s.partial,
                    },
                    outputs: ch
                        .outputs
                        .iter()
                        .map(|o| {
                            let (backlog, clients) = output_backlog(ch, o);
                            let st = &o.stats;
                            OutputMetrics {
                                url: o.url(),
                                state: output_state(ch, o).into(),
                                bytes: st.bytes,
                                datagrams: st.datagrams,
                                drops: st.drops,
                                disconnects: st.disconnects,
                                reconnects: st.reconnects,
                                errors: st.errors,
                                backlog,
                                clients,
                                spool: o.spool.as_ref().map(|sp| {
                                    let x = sp.stats;
                                    SpoolMetrics {
                                        spooled_bytes: x.spooled_bytes,
                                        spooled_records: x.spooled_records,
                                        replayed_bytes: x.replayed_bytes,
                                        replayed_records: x.replayed_records,
                                        dropped_records: x.dropped,
                                        errors: x.errors,
                                        bytes: sp.size(),
                                        oldest_age_secs: engine.spool_oldest_age_secs(sp),
                                        unsynced_bytes: sp.unsynced(),
                                    }
                                }),
                                mqtt: o.mqtt.as_ref().map(|m| {
                                    let x = m.stats;
                                    MqttMetrics {
                                        published: x.published,
                                        acknowledged: x.acknowledged,
                                        duplicates: x.duplicates,
                                        refused: x.refused,
                                        lost: x.lost,
                                    }
                                }),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        Snapshot {
            daemon: DaemonInfo {
                pid: std::process::id(),
                version: VERSION.into(),
                started_real_ns: Some(started_real_ns),
                updated_real_ns: now_real_ns,
                state: if engine.stopping() {
                    "stopping"
                } else {
                    "running"
                }
                .into(),
                pool,
            },
            channels,
            live: None,
        }
    }

    /// The rows of the counters region (see the module docs).
    pub fn to_rows(&self) -> Vec<StatRow> {
        let d = &self.daemon;
        let mut rows = vec![StatRow {
            label: format!("ringrelay {}", d.version),
            kind: "daemon".into(),
            state: d.state.clone(),
            values: [d.started_real_ns.unwrap_or(0) as u64, 0, 0, 0, 0, 0, 0, 0],
        }];
        for c in &d.pool {
            rows.push(StatRow {
                label: c.class.clone(),
                kind: "pool".into(),
                state: String::new(),
                values: [c.in_use, c.total, c.buffer_bytes, 0, 0, 0, 0, 0],
            });
        }
        for ch in &self.channels {
            let i = &ch.input;
            rows.push(StatRow {
                label: format!("{}/{}", ch.name, i.url),
                kind: "input".into(),
                state: i.state.clone(),
                values: [
                    i.bytes,
                    i.datagrams,
                    i.drops,
                    i.malformed,
                    i.reconnects,
                    i.errors,
                    i.idle_timeouts,
                    i.partial,
                ],
            });
            for o in &ch.outputs {
                rows.push(StatRow {
                    label: format!("{}/{}", ch.name, o.url),
                    kind: "output".into(),
                    state: o.state.clone(),
                    values: [
                        o.bytes,
                        o.datagrams,
                        o.drops,
                        o.disconnects,
                        o.reconnects,
                        o.errors,
                        o.backlog,
                        o.clients,
                    ],
                });
                let label = format!("{}/{}", ch.name, o.url);
                if let Some(sp) = &o.spool {
                    rows.push(StatRow {
                        label: label.clone(),
                        kind: "spool".into(),
                        state: String::new(),
                        values: [
                            sp.spooled_bytes,
                            sp.spooled_records,
                            sp.replayed_bytes,
                            sp.replayed_records,
                            sp.dropped_records,
                            sp.errors,
                            sp.bytes,
                            sp.oldest_age_secs,
                        ],
                    });
                    rows.push(StatRow {
                        label: label.clone(),
                        kind: "spool_disk".into(),
                        state: String::new(),
                        values: [sp.unsynced_bytes, 0, 0, 0, 0, 0, 0, 0],
                    });
                }
                if let Some(m) = &o.mqtt {
                    rows.push(StatRow {
                        label,
                        kind: "mqtt".into(),
                        state: String::new(),
                        values: [
                            m.published,
                            m.acknowledged,
                            m.duplicates,
                            m.refused,
                            m.lost,
                            0,
                            0,
                            0,
                        ],
                    });
                }
            }
        }
        rows
    }

    /// The snapshot a reader of the counters region sees. Rows of unknown kinds are skipped, and
    /// output rows before any input row too (and `spool` or `mqtt` rows before any output row,
    /// `spool_disk` rows before any `spool` row of their output).
    pub fn from_rows(s: &StatsSnapshot) -> Snapshot {
        let mut snap = Snapshot {
            daemon: DaemonInfo {
                pid: s.writer_pid,
                updated_real_ns: s.updated_real_ns,
                state: if s.stopped { "stopped" } else { "running" }.into(),
                ..DaemonInfo::default()
            },
            channels: Vec::new(),
            live: None,
        };
        for r in &s.rows {
            let v = &r.values;
            match r.kind.as_str() {
                "daemon" => {
                    snap.daemon.version = r
                        .label
                        .strip_prefix("ringrelay ")
                        .unwrap_or(&r.label)
                        .to_string();
                    snap.daemon.started_real_ns = (v[0] > 0).then_some(v[0] as i64);
                    if !s.stopped && !r.state.is_empty() {
                        snap.daemon.state = r.state.clone();
                    }
                }
                "pool" => snap.daemon.pool.push(PoolClass {
                    class: r.label.clone(),
                    in_use: v[0],
                    total: v[1],
                    buffer_bytes: v[2],
                }),
                "input" => {
                    let (name, url) = split_label(&r.label);
                    snap.channels.push(ChannelMetrics {
                        name: name.into(),
                        input: InputMetrics {
                            url: url.into(),
                            state: r.state.clone(),
                            bytes: v[0],
                            datagrams: v[1],
                            drops: v[2],
                            malformed: v[3],
                            reconnects: v[4],
                            errors: v[5],
                            idle_timeouts: v[6],
                            partial: v[7],
                        },
                        outputs: Vec::new(),
                    });
                }
                "output" => {
                    let Some(ch) = snap.channels.last_mut() else {
                        continue;
                    };
                    let (_, url) = split_label(&r.label);
                    ch.outputs.push(OutputMetrics {
                        url: url.into(),
                        state: r.state.clone(),
                        bytes: v[0],
                        datagrams: v[1],
                        drops: v[2],
                        disconnects: v[3],
                        reconnects: v[4],
                        errors: v[5],
                        backlog: v[6],
                        clients: v[7],
                        spool: None,
                        mqtt: None,
                    });
                }
                "spool" => {
                    if let Some(out) = snap.channels.last_mut().and_then(|c| c.outputs.last_mut()) {
                        out.spool = Some(SpoolMetrics {
                            spooled_bytes: v[0],
                            spooled_records: v[1],
                            replayed_bytes: v[2],
                            replayed_records: v[3],
                            dropped_records: v[4],
                            errors: v[5],
                            bytes: v[6],
                            oldest_age_secs: v[7],
                            unsynced_bytes: 0,
                        });
                    }
                }
                "spool_disk" => {
                    let out = snap.channels.last_mut().and_then(|c| c.outputs.last_mut());
                    if let Some(sp) = out.and_then(|o| o.spool.as_mut()) {
                        sp.unsynced_bytes = v[0];
                    }
                }
                "mqtt" => {
                    if let Some(out) = snap.channels.last_mut().and_then(|c| c.outputs.last_mut()) {
                        out.mqtt = Some(MqttMetrics {
                            published: v[0],
                            acknowledged: v[1],
                            duplicates: v[2],
                            refused: v[3],
                            lost: v[4],
                        });
                    }
                }
                _ => {}
            }
        }
        snap
    }

    /// Buffers in use and in all, over every class; `None` when the source does not say.
    pub fn pool_totals(&self) -> Option<(u64, u64)> {
        let p = &self.daemon.pool;
        (!p.is_empty()).then(|| {
            (
                p.iter().map(|c| c.in_use).sum(),
                p.iter().map(|c| c.total).sum(),
            )
        })
    }
}

/// `channel/url` split at the first `/` (channel names never hold one).
fn split_label(l: &str) -> (&str, &str) {
    l.split_once('/').unwrap_or((l, ""))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A daemon with a pool, one channel with two outputs (one with a quote in its URL).
    pub fn sample() -> Snapshot {
        Snapshot {
            daemon: DaemonInfo {
                pid: 42,
                version: "1.2.3".into(),
                started_real_ns: Some(1_700_000_000_500_000_000),
                updated_real_ns: 1_700_000_001_000_000_000,
                state: "running".into(),
                pool: vec![
                    PoolClass {
                        class: "large".into(),
                        buffer_bytes: 65536,
                        in_use: 3,
                        total: 64,
                    },
                    PoolClass {
                        class: "small".into(),
                        buffer_bytes: 2048,
                        in_use: 10,
                        total: 256,
                    },
                ],
            },
            channels: vec![ChannelMetrics {
                name: "seismo".into(),
                input: InputMetrics {
                    url: "udp://127.0.0.1:5000".into(),
                    state: "up".into(),
                    bytes: 1000,
                    datagrams: 10,
                    drops: 1,
                    malformed: 2,
                    reconnects: 0,
                    errors: 3,
                    idle_timeouts: 4,
                    partial: 5,
                },
                outputs: vec![
                    OutputMetrics {
                        url: "tcp-listen://0.0.0.0:6000".into(),
                        state: "listening".into(),
                        bytes: 900,
                        datagrams: 9,
                        drops: 1,
                        disconnects: 4,
                        reconnects: 5,
                        errors: 6,
                        backlog: 77,
                        clients: 2,
                        spool: None,
                        mqtt: None,
                    },
                    OutputMetrics {
                        url: "unix:///tmp/a\"b\\c".into(),
                        state: "down".into(),
                        spool: Some(SpoolMetrics {
                            spooled_bytes: 4000,
                            spooled_records: 40,
                            replayed_bytes: 1000,
                            replayed_records: 10,
                            dropped_records: 3,
                            errors: 1,
                            bytes: 3000,
                            oldest_age_secs: 12,
                            unsynced_bytes: 512,
                        }),
                        ..OutputMetrics::default()
                    },
                    OutputMetrics {
                        url: "mqtt://127.0.0.1:1883/t".into(),
                        state: "up".into(),
                        mqtt: Some(MqttMetrics {
                            published: 20,
                            acknowledged: 18,
                            duplicates: 2,
                            refused: 1,
                            lost: 0,
                        }),
                        ..OutputMetrics::default()
                    },
                ],
            }],
            live: None,
        }
    }

    #[test]
    fn rows_round_trip() {
        let s = sample();
        let rows = s.to_rows();
        assert_eq!(rows.len(), 1 + 2 + 1 + 3 + 3);
        assert_eq!(
            (rows[6].kind.as_str(), rows[6].values[6], rows[6].values[7]),
            ("spool", 3000, 12),
            "the spool row right after its output's"
        );
        assert_eq!(
            (
                rows[7].kind.as_str(),
                rows[7].label.as_str(),
                rows[7].values
            ),
            (
                "spool_disk",
                rows[6].label.as_str(),
                [512, 0, 0, 0, 0, 0, 0, 0]
            ),
            "the spool_disk row right after its spool row"
        );
        assert_eq!((rows[9].kind.as_str(), rows[9].values[1]), ("mqtt", 18));
        assert_eq!(rows[3].label, "seismo/udp://127.0.0.1:5000");
        assert_eq!(rows[3].values[3], 2, "malformed in the fourth column");
        let read = StatsSnapshot {
            columns: crate::shm::STAT_COLUMNS
                .iter()
                .map(|c| c.to_string())
                .collect(),
            rows: rows
                .iter()
                .map(|r| crate::shm::reader::StatsRowRead {
                    label: r.label.clone(),
                    kind: r.kind.clone(),
                    state: r.state.clone(),
                    values: r.values,
                })
                .collect(),
            updated_real_ns: s.daemon.updated_real_ns,
            writer_pid: 42,
            stopped: false,
        };
        assert_eq!(Snapshot::from_rows(&read), s);
        assert_eq!(s.pool_totals(), Some((13, 320)));
        // Rows of a writer that predates `spool_disk`: the same, but nothing unsynced known.
        let mut older = read.clone();
        older.rows.retain(|r| r.kind != "spool_disk");
        let mut want = s.clone();
        want.channels[0].outputs[1]
            .spool
            .as_mut()
            .unwrap()
            .unsynced_bytes = 0;
        assert_eq!(Snapshot::from_rows(&older), want);
        let mut stopping = s.clone();
        stopping.daemon.state = "stopping".into();
        let rows = stopping.to_rows();
        assert_eq!(
            (rows[0].label.as_str(), rows[0].state.as_str()),
            ("ringrelay 1.2.3", "stopping")
        );
    }

    #[test]
    fn outputs_before_any_input_and_unknown_kinds_are_skipped() {
        let row = |kind: &str, label: &str| crate::shm::reader::StatsRowRead {
            label: label.into(),
            kind: kind.into(),
            state: "up".into(),
            values: [1; 8],
        };
        let read = StatsSnapshot {
            columns: Vec::new(),
            rows: vec![
                row("output", "x/udp://a"),
                row("channel", "y"),
                row("input", "z"),
            ],
            updated_real_ns: 0,
            writer_pid: 1,
            stopped: true,
        };
        let s = Snapshot::from_rows(&read);
        assert_eq!(s.channels.len(), 1);
        assert_eq!(
            (
                s.channels[0].name.as_str(),
                s.channels[0].input.url.as_str()
            ),
            ("z", "")
        );
        assert!(s.channels[0].outputs.is_empty());
        assert_eq!(s.daemon.started_real_ns, None);
        assert_eq!(s.pool_totals(), None);
        assert_eq!(s.daemon.state, "stopped");
    }
}
