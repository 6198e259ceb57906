//! The simulated world of one seed: the random configuration (channels, their inputs and
//! outputs, `ChanSpec`) and the peers around the relay (producers and UDP senders,
//! subscribers, collectors, brokers), with the steps they take on their own
//! (`World::peer_step`) during the chaos and the calm phases. The checks are `checks.rs`'s,
//! the run loop is `sim.rs`'s.

use crate::sim;
use ringrelay::config::{parse_str, Config};
use ringrelay::engine::buffers::BufferPool;
use ringrelay::engine::caps::Caps;
use sim::kernel::{talk_pos, Faults, Kernel, Pos, Who};
use sim::records::RecordSpec;
use sim::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InKind {
    Udp,
    Listen,
    Dial,
    /// A serial port (`serial://`): unplugged and plugged back in by the seed.
    Serial,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutKind {
    Subscribers,
    Collector,
    UdpDest,
    File,
    /// An `mqtt://` output and its broker (`sim/broker.rs`).
    Broker,
}

#[derive(Clone, Debug)]
pub(crate) struct OutSpec {
    pub(crate) kind: OutKind,
    pub(crate) policy: &'static str,
    pub(crate) zerocopy: bool,
    /// Subscribers: `on_fin=keep` (a FIN is a half-close; the default closes them).
    pub(crate) keep_fin: bool,
    /// A file whose directory is removed at some point and never comes back.
    pub(crate) lost: bool,
    /// An MQTT output at QoS 1.
    pub(crate) qos1: bool,
    /// A collector with a spool (`sim/spoolfs.rs`): its config keys.
    pub(crate) spool: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct ChanSpec {
    pub(crate) input: InKind,
    pub(crate) outputs: Vec<OutSpec>,
    /// `producer = replace` (listened inputs): a producer may connect while one is.
    pub(crate) replace: bool,
    /// `commands = first` (stream inputs): the first subscriber's bytes go to the producer.
    pub(crate) commands: bool,
    /// `idle_timeout=1s` on the input.
    pub(crate) idle: bool,
    /// Frames, lines or a preamble (stream inputs only; see `sim/records.rs`).
    pub(crate) records: RecordSpec,
}

/// A channel's producer or UDP sender.
#[derive(Debug, Default)]
pub(crate) struct Source {
    pub(crate) conn: Option<usize>,
    pub(crate) next: u64,
    pub(crate) total: u64,
    /// UDP: the last datagrams, sent only at the moment of SIGTERM. They wait in the input
    /// socket when the stop comes, and the stop must read them (at most its receive buffer's
    /// worth, which they stay under).
    pub(crate) held: u64,
    /// The producer (or UDP sender) is silent for a while (chaos only).
    pub(crate) silent: bool,
    /// The position at which each producer connection started.
    pub(crate) starts: Vec<Pos>,
}

pub(crate) struct World {
    pub(crate) rng: Rng,
    pub(crate) spec: Vec<ChanSpec>,
    pub(crate) cfg_text: String,
    pub(crate) kernel: Kernel,
    pub(crate) sources: Vec<Source>,
    /// Subscriber connections per (channel, output), in order.
    pub(crate) subs: Vec<Vec<Vec<usize>>>,
    /// Collectors: up (accepting dials), and their connections in order.
    pub(crate) collectors: Vec<Vec<(bool, Vec<usize>)>>,
    /// Outputs with a subscriber that never reads.
    pub(crate) stuck_block: Vec<bool>,
    pub(crate) calm: bool,
}

pub(crate) fn policy(rng: &mut Rng, kind: OutKind) -> &'static str {
    match kind {
        OutKind::Subscribers => rng.pick(&["drop", "disconnect", "block"]),
        OutKind::Collector => rng.pick(&["block", "block", "drop", "disconnect"]),
        OutKind::UdpDest => "drop",
        OutKind::File => "block",
        OutKind::Broker => rng.pick(&["block", "block", "drop"]),
    }
}

impl World {
    pub(crate) fn new(seed: u64) -> (World, Config, Caps, BufferPool) {
        let mut rng = Rng::new(seed);
        let nchan = rng.range(1, 3);
        let large = rng.pick(&[4096u32, 16384]);
        let count = rng.range(12, 40) as u32;
        let dcount = rng.range(24, 96) as u32;
        let mut text = format!(
            "[global]\nbuffer_size = {large}\nbuffer_count = {count}\ndatagram_size = 512\n\
             datagram_count = {dcount}\nshutdown_timeout = 30s\nstats_interval = 3600s\nsplice = off\n"
        );
        let mut spec = Vec::new();
        // Records come from their own generator: the rest of a seed's run stays as it was.
        let mut rrng = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5EC0);
        for c in 0..nchan {
            let input = match rng.pick(&[InKind::Udp, InKind::Listen, InKind::Dial]) {
                // One dialed input in three is a serial port instead, chosen without a draw
                // from the seed's sequence (the other seeds run as they did before).
                InKind::Dial if (seed + c as u64) % 3 == 0 => InKind::Serial,
                k => k,
            };
            let n = rng.range(1, 3);
            let mut outputs = Vec::new();
            for _ in 0..n {
                let kind = rng.pick(&[
                    OutKind::Subscribers,
                    OutKind::Collector,
                    OutKind::UdpDest,
                    OutKind::File,
                ]);
                let policy = policy(&mut rng, kind);
                let zerocopy = kind == OutKind::Collector && rng.chance(400);
                let keep_fin = kind == OutKind::Subscribers && rng.chance(250);
                let lost = kind == OutKind::File && rng.chance(170);
                outputs.push(OutSpec {
                    kind,
                    policy,
                    zerocopy,
                    keep_fin,
                    lost,
                    qos1: false,
                    spool: None,
                });
            }
            // An MQTT output on a datagram channel, from its own generator.
            let mut mrng = Rng::new(seed.wrapping_mul(0x4D51_5454).wrapping_add(c as u64 + 7));
            if input == InKind::Udp && mrng.chance(500) {
                outputs.push(OutSpec {
                    kind: OutKind::Broker,
                    policy: policy(&mut mrng, OutKind::Broker),
                    zerocopy: false,
                    keep_fin: false,
                    lost: false,
                    qos1: mrng.chance(700),
                    spool: None,
                });
            }
            let replace = input == InKind::Listen && rng.chance(400);
            // Drawn from their own generator, so that the other choices of a seed stay.
            let mut more = Rng::new(seed.wrapping_mul(0x9E37_79B9).wrapping_add(c as u64));
            let commands = input != InKind::Udp && more.chance(500);
            let idle = more.chance(400);
            // `keepalive=off` only with `replace`: a producer that vanished is then released
            // by the next one alone.
            let keepalive_off = replace && rng.chance(500);
            text += &format!("[channel c{c}]\n");
            text += &match input {
                InKind::Udp => format!("input = udp://127.0.0.1:{}", 5000 + c),
                InKind::Listen => format!(
                    "input = tcp-listen://127.0.0.1:{}{}",
                    5000 + c,
                    if keepalive_off { " keepalive=off" } else { "" }
                ),
                InKind::Dial => format!("input = tcp://127.0.0.1:{}", 5000 + c),
                InKind::Serial => {
                    format!("input = serial:///dev/serial/by-id/sim-c{c} baud=115200")
                }
            };
            text += if idle { " idle_timeout=1s\n" } else { "\n" };
            if replace {
                text += "producer = replace\n";
            }
            if commands {
                text += "commands = first\n";
            }
            let records = match input {
                InKind::Udp => RecordSpec::default(),
                _ => RecordSpec::pick(&mut rrng),
            };
            text += &records.keys();
            let stream_out = outputs.iter().any(|o| {
                matches!(
                    o.kind,
                    OutKind::Subscribers | OutKind::Collector | OutKind::File
                )
            });
            if input == InKind::Udp && stream_out {
                text += "framing = u32be\n";
            }
            for (o, os) in outputs.iter_mut().enumerate() {
                if os.kind == OutKind::Collector {
                    os.spool = sim::spoolfs::pick(seed, c, o);
                }
                let port = 6000 + c * 10 + o;
                let backlog = rng.pick(&["16KiB", "64KiB", "1MiB"]);
                text += &match os.kind {
                    OutKind::Subscribers => format!(
                        "output = tcp-listen://127.0.0.1:{port} on_slow={} max_backlog={backlog} max_clients=3{}\n",
                        os.policy,
                        if os.keep_fin { " on_fin=keep" } else { "" }
                    ),
                    OutKind::Collector => format!(
                        "output = tcp://127.0.0.1:{port} on_slow={} max_backlog={backlog}{}{}\n",
                        os.policy,
                        if os.zerocopy { " zerocopy=on" } else { "" },
                        os.spool.as_deref().unwrap_or("")
                    ),
                    OutKind::UdpDest => format!("output = udp://127.0.0.1:{port}\n"),
                    OutKind::Broker => format!(
                        "output = mqtt://127.0.0.1:{port}/sim/{{channel}} qos={} on_slow={} max_backlog={backlog} max_inflight={} keepalive={}\n",
                        u8::from(os.qos1),
                        os.policy,
                        rng.pick(&[1, 3, 64]),
                        rng.pick(&["off", "1s", "30s"]),
                    ),
                    OutKind::File => format!(
                        "output = file:///nonexistent/sim-c{c}-o{o}.raw fault_grace={}{}\n",
                        rng.pick(&["300ms", "2s", "10s"]),
                        if rng.chance(300) { " rotate=8KiB keep=2" } else { "" }
                    ),
                };
            }
            spec.push(ChanSpec {
                input,
                outputs,
                replace,
                commands,
                idle,
                records,
            });
        }
        let cfg = parse_str("sim.conf", &text).unwrap_or_else(|e| panic!("{text}\n{e:?}"));
        let caps = Caps {
            multishot_recvmsg: rng.chance(500),
            multishot_accept: true,
            send_zc: rng.chance(700),
            cq_entries: 4096,
            ops: vec![("SPLICE", false), ("TEE", false), ("SEND_ZC", true)],
            ..Caps::default()
        };
        let g = &cfg.global;
        let pool = BufferPool::for_global(g);
        let sizes = (0..pool.count() as u16).map(|i| pool.size_of(i)).collect();
        let faults = Faults {
            short_io: rng.range(0, 600) as u32,
            error: rng.range(0, 40) as u32,
            cancel_race: rng.range(0, 500) as u32,
        };
        let kernel = Kernel::new(rng.next(), faults, sizes);
        let sources = spec
            .iter()
            .map(|s| {
                let udp = s.input == InKind::Udp;
                Source {
                    total: if udp {
                        rng.range(50, 400) as u64
                    } else {
                        rng.range(20_000, 300_000) as u64
                    },
                    held: if udp { rng.range(0, 20) as u64 } else { 0 },
                    ..Source::default()
                }
            })
            .collect();
        let subs = spec
            .iter()
            .map(|s| vec![Vec::new(); s.outputs.len()])
            .collect();
        let collectors = spec
            .iter()
            .map(|s| vec![(false, Vec::new()); s.outputs.len()])
            .collect();
        let stuck_block = vec![false; spec.len()];
        (
            World {
                rng,
                spec,
                cfg_text: text,
                kernel,
                sources,
                subs,
                collectors,
                stuck_block,
                calm: false,
            },
            cfg,
            caps,
            pool,
        )
    }

    /// Sends what the UDP sources held back (see [`Source::held`]), all at once.
    pub(crate) fn send_held(&mut self) {
        for (c, s) in self.sources.iter_mut().enumerate() {
            if self.spec[c].input != InKind::Udp || self.stuck_block[c] {
                continue;
            }
            let q = self.kernel.udp_in.entry(c).or_default();
            while s.next < s.total {
                q.push_back((s.next, self.rng.range(8, 496) as u32));
                s.next += 1;
            }
        }
    }

    /// One action of a peer, chosen by the seed.
    pub(crate) fn peer_step(&mut self) {
        let c = self.rng.below(self.spec.len());
        let spec = self.spec[c].clone();
        match self.rng.below(4) {
            0 | 1 => self.source_step(c, &spec),
            _ => {
                let o = self.rng.below(spec.outputs.len());
                match spec.outputs[o].kind {
                    OutKind::Subscribers => self.subscriber_step(c, o, spec.outputs[o].policy),
                    OutKind::Collector => self.collector_step(c, o),
                    OutKind::Broker => self.broker_step(c, o),
                    OutKind::UdpDest => {
                        if !self.calm && self.rng.chance(100) {
                            let r = self.kernel.refusing.entry((c, o)).or_default();
                            *r = !*r;
                        }
                    }
                    OutKind::File => self.file_step(c, o),
                }
            }
        }
    }

    pub(crate) fn source_step(&mut self, c: usize, spec: &ChanSpec) {
        let input = spec.input;
        let s = &mut self.sources[c];
        // A source that goes silent for a while (a stuck rtl_tcp): with `idle_timeout` its
        // connection is closed (dialed inputs redial, listened ones wait for the next).
        if self.calm {
            s.silent = false;
        } else if self.rng.chance(if s.silent { 20 } else { 5 }) {
            s.silent = !s.silent;
        }
        if s.silent {
            return;
        }
        if input == InKind::Udp {
            let q = self.kernel.udp_in.entry(c).or_default();
            let burst = self.rng.range(1, 8);
            for _ in 0..burst {
                if s.next >= s.total - s.held || q.len() >= 64 {
                    break;
                }
                let len = if !self.calm && self.rng.chance(20) {
                    600
                } else {
                    self.rng.range(8, 496) as u32
                };
                q.push_back((s.next, len));
                s.next += 1;
            }
            return;
        }
        if input == InKind::Serial {
            return self.serial_step(c);
        }
        match s.conn {
            None => {
                if s.next >= s.total && self.calm {
                    return;
                }
                if input == InKind::Listen {
                    if let Some(l) = self.kernel.listener(Who::Input(c)) {
                        let ci = self.kernel.conn(Who::Input(c), 0);
                        self.kernel.backlog.entry(l).or_default().push_back(ci);
                        self.sources[c].conn = Some(ci);
                        let at = self.sources[c].next;
                        self.sources[c].starts.push(at);
                    }
                } else {
                    // Answer the relay's dial, if one waits.
                    let pending = (0..self.kernel.conns.len()).rev().find(|&i| {
                        let k = &self.kernel.conns[i];
                        k.who == Some(Who::Input(c)) && k.accepted.is_none() && !k.closed
                    });
                    if let Some(ci) = pending {
                        let ok = self.calm || !self.rng.chance(300);
                        self.kernel.conns[ci].accepted = Some(ok);
                        if ok {
                            self.sources[c].conn = Some(ci);
                            let at = self.sources[c].next;
                            self.sources[c].starts.push(at);
                        }
                    }
                }
            }
            Some(ci) => {
                let k = &mut self.kernel.conns[ci];
                if k.closed || k.shut {
                    // The relay closed it (a reload or a fault): connect again later.
                    s.conn = None;
                    return;
                }
                if !self.calm && spec.replace && self.rng.chance(30) {
                    // A producer that rebooted connects again while its old connection is
                    // still up (or half-open: it vanished).
                    k.vanished = self.rng.chance(500);
                    if let Some(l) = self.kernel.listener(Who::Input(c)) {
                        let new = self.kernel.conn(Who::Input(c), 0);
                        self.kernel.backlog.entry(l).or_default().push_back(new);
                        self.sources[c].conn = Some(new);
                        let at = self.sources[c].next;
                        self.sources[c].starts.push(at);
                    }
                    return;
                }
                if !self.calm && self.rng.chance(10) {
                    // The producer vanishes without a word: only keepalive (or, with
                    // `producer = replace`, the next producer) frees the input.
                    k.vanished = true;
                    s.conn = None;
                    return;
                }
                if !self.calm && self.rng.chance(30) {
                    // The producer goes away: a FIN, or a reset that loses what it sent.
                    if self.rng.chance(500) {
                        k.rx_eof = true;
                    } else {
                        k.rx_reset = true;
                    }
                    s.conn = None;
                    return;
                }
                let n = self.rng.range(1, 20_000) as u64;
                let room = 65_536usize.saturating_sub(k.rx.len()) as u64;
                let n = n.min(room).min(s.total - s.next);
                k.rx.extend(s.next..s.next + n);
                s.next += n;
                if s.next >= s.total && self.calm {
                    k.rx_eof = true;
                }
            }
        }
    }

    /// A serial device: plugged in or not. While it is, the port the relay opened gets bytes;
    /// unplugging it fails the port's reads (EIO, losing what the port held) or hangs it up
    /// (its bytes are read, then the end of file). It is plugged back in later, always
    /// while calm.
    pub(crate) fn serial_step(&mut self, c: usize) {
        let plugged = self.kernel.serial_plugged.get(&c) == Some(&true);
        let s = &mut self.sources[c];
        if let Some(ci) = s.conn {
            let k = &self.kernel.conns[ci];
            if k.closed || k.shut {
                // The relay closed the port (a fault, a reload): it opens it again.
                s.conn = None;
            }
        }
        let Some(ci) = s.conn else {
            if !plugged {
                if self.calm || self.rng.chance(200) {
                    self.kernel.serial_plugged.insert(c, true);
                    self.kernel.note(format!("c{c}: serial device plugged in"));
                }
                return;
            }
            s.conn = (0..self.kernel.conns.len()).rev().find(|&i| {
                let k = &self.kernel.conns[i];
                k.who == Some(Who::Input(c))
                    && k.serial
                    && !(k.closed || k.shut || k.rx_eio || k.rx_eof)
            });
            if s.conn.is_some() {
                // A port opened: its bytes are a new producer connection (frames count anew).
                let at = s.next;
                s.starts.push(at);
            }
            return;
        };
        let k = &mut self.kernel.conns[ci];
        if !self.calm && self.rng.chance(30) {
            if self.rng.chance(500) {
                k.rx_eio = true;
            } else {
                k.rx_eof = true;
            }
            s.conn = None;
            self.kernel.serial_plugged.insert(c, false);
            self.kernel.note(format!("c{c}: serial device unplugged"));
            return;
        }
        let n = self.rng.range(1, 4_000) as u64;
        let room = 65_536usize.saturating_sub(k.rx.len()) as u64;
        let n = n.min(room).min(s.total - s.next);
        k.rx.extend(s.next..s.next + n);
        s.next += n;
    }

    pub(crate) fn subscriber_step(&mut self, c: usize, o: usize, policy: &str) {
        let conns = self.subs[c][o].clone();
        let live: Vec<usize> = conns
            .iter()
            .copied()
            .filter(|&ci| !self.kernel.conns[ci].closed && !self.kernel.conns[ci].gone)
            .collect();
        if live.len() < 3 && self.rng.chance(300) {
            if let Some(l) = self.kernel.listener(Who::Output(c, o)) {
                let ci = self.kernel.conn(Who::Output(c, o), 65_536);
                // A subscriber that never reads, now and then (not on a `block` output while
                // calm: it would stall its channel for good, which is what `block` means).
                let stuck = self.rng.chance(80) && (policy != "block" || !self.calm);
                if stuck && policy == "block" {
                    self.stuck_block[c] = true;
                }
                self.kernel.conns[ci].stuck = stuck;
                self.kernel.backlog.entry(l).or_default().push_back(ci);
                self.subs[c][o].push(ci);
            }
            return;
        }
        if live.is_empty() {
            return;
        }
        let ci = live[self.rng.below(live.len())];
        let k = &mut self.kernel.conns[ci];
        if !self.calm && self.rng.chance(60) {
            if self.rng.chance(300) {
                k.half_closed = true;
            } else {
                k.gone = true;
            }
            return;
        }
        if !k.stuck {
            k.room = (k.room + self.rng.range(1, 65_536)).min(262_144);
        }
        if self.rng.chance(150) && !k.half_closed && k.rx.len() < 4096 {
            // It talks back (rtl_tcp commands): discarded, or with `commands = first` the
            // first subscriber's reach the producer.
            let n = self.rng.range(1, 600) as u64;
            let from = k.talked;
            k.rx.extend((from..from + n).map(|i| talk_pos(ci, i)));
            k.talked += n;
        }
    }

    /// Someone deletes the file of output `o`, removes or re-creates its directory, or puts
    /// another file in its place. Calm brings every directory back but a lost one's.
    pub(crate) fn file_step(&mut self, c: usize, o: usize) {
        let files = &mut self.kernel.files;
        let out = (c, o);
        if self.spec[c].outputs[o].lost {
            if !files.dir_missing.contains(&out) && self.rng.chance(50) {
                files.delete(out, true);
                self.kernel
                    .note(format!("c{c} output {o}: directory removed for good"));
            }
            return;
        }
        if self.calm {
            files.restore(out);
            return;
        }
        let what = match self.rng.below(1000) {
            0..=29 => {
                files.delete(out, false);
                "file deleted"
            }
            30..=49 => {
                files.delete(out, true);
                "directory removed"
            }
            50..=69 => {
                files.replace(out);
                "file replaced"
            }
            70..=299 if files.dir_missing.contains(&out) => {
                files.restore(out);
                "directory back"
            }
            _ => return,
        };
        self.kernel.note(format!("c{c} output {o}: {what}"));
    }

    /// A broker: accepts the relay's dials (or is down), refuses some CONNECTs, sends the
    /// PUBACKs it owes at once, late or not at all (a connection dropped before them).
    pub(crate) fn broker_step(&mut self, c: usize, o: usize) {
        let calm = self.calm;
        let (up, conns) = &mut self.collectors[c][o];
        if !calm && self.rng.chance(60) {
            *up = !*up;
            if !*up {
                if let Some(&ci) = conns.last() {
                    self.kernel.conns[ci].gone = true;
                }
            }
        }
        if calm {
            *up = true;
        }
        let up = *up;
        for ci in 0..self.kernel.conns.len() {
            let k = &mut self.kernel.conns[ci];
            if k.who == Some(Who::Output(c, o)) && k.accepted.is_none() && !k.closed {
                k.accepted = Some(up);
                if up {
                    k.room = 65_536;
                    let refuse = if !calm && self.rng.chance(150) {
                        self.rng.pick(&[2, 3, 4, 5])
                    } else {
                        0
                    };
                    let mut b = sim::broker::BrokerConn::new(refuse);
                    b.prompt = calm;
                    k.broker = Some(b);
                    self.collectors[c][o].1.push(ci);
                }
            }
        }
        if let Some(&ci) = self.collectors[c][o].1.last() {
            let n = if calm {
                usize::MAX
            } else {
                self.rng.range(0, 8)
            };
            let k = &mut self.kernel.conns[ci];
            // A connection that is over sends nothing more (what it still owed, it never
            // sends: see `BrokerConn::kept`).
            if !k.gone && !k.closed && !k.shut {
                k.room = (k.room + 65_536).min(262_144);
                if let Some(b) = k.broker.as_mut() {
                    b.release(n);
                }
            }
        }
    }

    pub(crate) fn collector_step(&mut self, c: usize, o: usize) {
        let (up, conns) = &mut self.collectors[c][o];
        if !self.calm && self.rng.chance(100) {
            *up = !*up;
            if !*up {
                if let Some(&ci) = conns.last() {
                    let k = &mut self.kernel.conns[ci];
                    if self.rng.chance(200) {
                        k.half_closed = true;
                    } else {
                        k.gone = true;
                    }
                }
            }
        }
        if self.calm {
            *up = true;
        }
        let up = *up;
        // Answer the relay's dials.
        for ci in 0..self.kernel.conns.len() {
            let k = &mut self.kernel.conns[ci];
            if k.who == Some(Who::Output(c, o)) && k.accepted.is_none() && !k.closed {
                k.accepted = Some(up);
                if up {
                    k.room = 65_536;
                    self.collectors[c][o].1.push(ci);
                }
            }
        }
        if let Some(&ci) = self.collectors[c][o].1.last() {
            let k = &mut self.kernel.conns[ci];
            if !k.gone {
                k.room = (k.room + self.rng.range(1, 65_536)).min(262_144);
            }
        }
    }
}
