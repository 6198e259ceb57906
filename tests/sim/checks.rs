//! The invariants of the simulation (see `sim.rs`): the per-step checks (every buffer an
//! operation holds is held in the engine's books, no descriptor closed under an operation),
//! the drain test of the calm phase and its liveness report, and the end checks on the
//! engine's final counters: the pool whole, outputs received what they must (bytes, records,
//! messages, commands) and every loss counted.

use crate::sim;
use crate::sim::world::*;
use ringrelay::engine::buffers::State;
use ringrelay::engine::Engine;
use sim::kernel::{pattern, talker_of, Obj, Pos, Who};
use sim::records::check_runs;
use std::collections::BTreeSet;

/// Every buffer an operation holds is held in the engine's books.
pub(crate) fn check_step(w: &World, engine: &Engine) -> Result<(), String> {
    let pool = engine.pool();
    let mut writes = std::collections::BTreeMap::new();
    for (buf, kind, op) in w.kernel.held_buffers() {
        match (kind, pool.state(buf)) {
            ("read", State::Kernel) => {}
            ("write", State::Shared(_)) => *writes.entry(buf).or_insert(0u32) += 1,
            (k, s) => {
                return Err(format!(
                    "buffer {buf} held by {k} op #{op} is {s:?} in the pool"
                ))
            }
        }
    }
    for (buf, n) in writes {
        if let State::Shared(refs) = pool.state(buf) {
            if refs < n {
                return Err(format!(
                    "buffer {buf} held by {n} writes in flight has only {refs} references"
                ));
            }
        }
    }
    for (g, bufs) in &w.kernel.groups {
        for &b in bufs {
            if pool.state(b) != State::Provided {
                return Err(format!(
                    "buffer {b} in ring {g} is {:?} in the pool",
                    pool.state(b)
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn quiet(w: &World, engine: &Engine) -> bool {
    for (c, s) in w.sources.iter().enumerate() {
        if w.stuck_block[c] {
            continue;
        }
        if s.next < s.total - s.held {
            return false;
        }
        if w.kernel.udp_in.get(&c).is_some_and(|q| !q.is_empty()) {
            return false;
        }
        if let Some(ci) = s.conn {
            if !w.kernel.conns[ci].rx.is_empty() {
                return false;
            }
        }
        let Some(Some(ch)) = engine.channels().get(c) else {
            return false;
        };
        // Drained, but for what waits for a subscriber that never reads (its queue is kept
        // while under its limit: nothing more arrives to push it over), and for a lost file
        // (it keeps the rest of a chunk it had begun to write).
        let lost = |o: usize| w.spec[c].outputs[o].lost;
        if ch
            .outputs
            .iter()
            .enumerate()
            .any(|(o, q)| (!q.queue.is_empty() || sim::spoolfs::holds(q)) && !lost(o))
        {
            return false;
        }
        // A subscriber whose peer left is released even when nothing flows to it (unless its
        // output keeps half-closed subscribers): otherwise its descriptor and its
        // `max_clients` place are held until the next write, which an idle channel never makes.
        for (o, spec) in w.spec[c].outputs.iter().enumerate() {
            if spec.kind != OutKind::Subscribers || spec.keep_fin {
                continue;
            }
            let held = ch.outputs[o].subscribers.iter().any(|&s| {
                ch.ep(s).is_some_and(|e| match w.kernel.objs.get(&e.fd) {
                    Some(Obj::Stream(ci)) => {
                        let k = &w.kernel.conns[*ci];
                        k.gone || k.half_closed || k.shut
                    }
                    _ => false,
                })
            });
            if held {
                return false;
            }
        }
        let busy = ch.slots.iter().flatten().any(|e| {
            let pending = e.write_ops > 0 || e.queue.as_ref().is_some_and(|q| !q.is_empty());
            pending && !stuck_fd(w, e.fd)
        });
        if busy {
            return false;
        }
    }
    w.kernel.cq.is_empty()
}

/// Whether `fd` is a connection to a subscriber that never reads.
pub(crate) fn stuck_fd(w: &World, fd: i32) -> bool {
    match w.kernel.objs.get(&fd) {
        Some(Obj::Stream(ci)) => w.kernel.conns[*ci].stuck,
        _ => false,
    }
}

pub(crate) fn drain_report(w: &World, engine: &Engine) -> String {
    let mut s = String::new();
    for (c, src) in w.sources.iter().enumerate() {
        s += &format!(
            "c{c}: sent {}/{} stuck_block={} ",
            src.next, src.total, w.stuck_block[c]
        );
        if let Some(Some(ch)) = engine.channels().get(c) {
            s += &format!(
                "drained={} queued={} blocked={} starved={} replaced={:?} retry={:?} pool_free={}\n",
                ch.drained(),
                ch.queued_bytes(),
                ch.blocked,
                ch.input_starved,
                ch.replaced,
                ch.input_retry_at.is_some(),
                engine.pool().free_count()
            );
        } else {
            s += "gone\n";
        }
    }
    for (c, ch) in engine.channels().iter().enumerate() {
        let Some(ch) = ch else { continue };
        for (i, e) in ch.slots.iter().enumerate() {
            if let Some(e) = e {
                s += &format!(
                    "  c{c} slot {i}: {:?} {:?} in_flight={} write_ops={} fd={} queue={:?} reading={}\n",
                    e.role, e.link, e.in_flight, e.write_ops, e.fd, e.queue.as_ref().map(|q| q.len()), e.reading.len()
                );
            }
        }
        for (oi, o) in ch.outputs.iter().enumerate() {
            if let Some(d) = sim::spoolfs::describe(o) {
                s += &format!("  c{c} output {oi} queue={} {d}\n", o.queue.len());
            }
        }
    }
    s += &format!("pending ops: {}\n", w.kernel.pending.len());
    for p in w.kernel.pending.iter().take(20) {
        s += &format!(
            "  #{} {:?} executed={} owed={}\n",
            p.id, p.op, p.executed, p.owed
        );
    }
    s
}

/// An output's drops, datagrams sent and disconnects.
pub(crate) type OutCounters = (u64, u64, u64);

/// Per channel: input datagrams delivered, input drops, and each output's counters; and the
/// bytes the input cut and did not deliver (`partial`, and what a carry still held).
pub(crate) struct Counters {
    pub(crate) chans: Vec<(u64, u64, Vec<OutCounters>)>,
    /// Per channel: command bytes written to producers, idle timeouts.
    pub(crate) talk: Vec<(u64, u64)>,
    pub(crate) partial: Vec<u64>,
    /// Per channel, each output's bytes skipped to align (`skipped=`).
    pub(crate) skipped: Vec<Vec<u64>>,
    /// Per channel, each output's spool records lost (dropped: also counted in its drops, or
    /// at `spool_max` by `drop-oldest`) and kept on disk at the end.
    pub(crate) spooled: Vec<Vec<u64>>,
}

/// Seeds' totals: idle timeouts fired, command bytes forwarded (the run shows the simulation
/// reaches both).
pub(crate) static IDLE_TIMEOUTS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);
pub(crate) static COMMAND_BYTES: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

pub(crate) fn final_counters(engine: &Engine) -> Counters {
    Counters {
        chans: engine
            .channels()
            .iter()
            .map(|c| match c {
                Some(ch) => (
                    ch.stats.datagrams,
                    ch.stats.drops,
                    ch.outputs
                        .iter()
                        .map(|o| (o.stats.drops, o.stats.datagrams, o.stats.disconnects))
                        .collect(),
                ),
                None => (0, 0, Vec::new()),
            })
            .collect(),
        talk: engine
            .channels()
            .iter()
            .map(|c| {
                c.as_ref()
                    .map_or((0, 0), |ch| (ch.stats.commands, ch.stats.idle_timeouts))
            })
            .collect(),
        skipped: engine
            .channels()
            .iter()
            .map(|c| {
                c.as_ref().map_or(Vec::new(), |ch| {
                    ch.outputs.iter().map(|o| o.stats.skipped).collect()
                })
            })
            .collect(),
        spooled: engine
            .channels()
            .iter()
            .map(|c| {
                c.as_ref().map_or(Vec::new(), |ch| {
                    ch.outputs.iter().map(sim::spoolfs::lost_or_kept).collect()
                })
            })
            .collect(),
        partial: engine
            .channels()
            .iter()
            .map(|c| {
                c.as_ref().map_or(0, |ch| {
                    ch.stats.partial + ch.framed.as_ref().map_or(0, |f| u64::from(f.carried()))
                })
            })
            .collect(),
    }
}

/// The records (datagram sequence numbers) whole in `pos`, a framed stream.
pub(crate) fn records(pos: &[Pos]) -> Vec<u64> {
    let mut seqs: Vec<u64> = pos.iter().map(|p| p >> 20).collect();
    seqs.dedup();
    seqs
}

pub(crate) fn check_end(w: &World, engine: &Engine, counters: &Counters) -> Result<(), String> {
    if !engine.pool().is_whole() {
        return Err(format!(
            "the pool is not whole at the end: {} of {} in use",
            engine.pool().in_use(),
            engine.pool().count()
        ));
    }
    if !w.kernel.pending.is_empty() || !w.kernel.cq.is_empty() {
        return Err(format!(
            "{} operations still in flight at the end (first: {:?})",
            w.kernel.pending.len(),
            w.kernel.pending.first().map(|p| p.op)
        ));
    }
    if let Some((fd, o)) = w.kernel.objs.iter().find(|(_, o)| !matches!(o, Obj::Pipe)) {
        return Err(format!("fd {fd} ({o:?}) still open at the end"));
    }
    if engine.zerocopy_in_flight() != 0 {
        return Err("zero-copy records left at the end".into());
    }
    check_commands(w, counters)?;
    for (c, spec) in w.spec.iter().enumerate() {
        if w.stuck_block[c] {
            continue;
        }
        if let Some(q) = w.kernel.udp_in.get(&c).filter(|q| !q.is_empty()) {
            return Err(format!(
                "c{c}: {} datagrams were left in the input socket at the end: a stop reads what the kernel accepted",
                q.len()
            ));
        }
        let (datagrams, in_drops, outs) = &counters.chans[c];
        let offered = datagrams - in_drops;
        if spec.records.is_framed() {
            check_records(w, c, spec, counters)?;
            continue;
        }
        for (o, os) in spec.outputs.iter().enumerate() {
            let (drops, sent, _disc) = outs[o];
            let received: Vec<Pos> = match os.kind {
                OutKind::Collector => w.collectors[c][o]
                    .1
                    .iter()
                    .flat_map(|&ci| w.kernel.conns[ci].received.iter().copied())
                    .collect(),
                OutKind::UdpDest | OutKind::File => w
                    .kernel
                    .sinks
                    .get(&(c, o))
                    .map(|d| d.iter().flatten().copied().collect())
                    .unwrap_or_default(),
                OutKind::Subscribers => continue,
                OutKind::Broker => {
                    check_broker(w, c, o, os, offered, drops)?;
                    continue;
                }
            };
            let lost = drops + counters.spooled[c][o];
            if os.spool.is_some() {
                sim::spoolfs::check_order_across(&received)
                    .map_err(|e| format!("c{c} output {o} (spool): {e}"))?;
            }
            if spec.input == InKind::Udp {
                let recs = records(&received);
                let got = if os.kind == OutKind::UdpDest {
                    w.kernel.sinks.get(&(c, o)).map_or(0, |d| d.len() as u64)
                } else {
                    recs.len() as u64
                };
                // A file drops (counted) once faulted past its fault_grace; until then, and
                // when it never was, it holds everything as any `block` output.
                if os.spool.is_some() {
                    // Spool losses are counted by record; none at all: every record came.
                    if got + lost < offered || (lost == 0 && got != offered) {
                        return Err(format!(
                            "c{c} output {o} (spool, {}): {got} records of {offered} delivered, {drops} drops, {} lost or kept in the spool",
                            os.policy, counters.spooled[c][o]
                        ));
                    }
                    continue;
                }
                let exact = os.policy == "drop" || (os.kind == OutKind::File && drops > 0);
                if os.policy == "block" && !exact && (got != offered || drops != 0) {
                    return Err(format!(
                        "c{c} output {o} (block): {got} records of {offered} delivered, {drops} drops"
                    ));
                }
                // A `disconnect` link drops its backlog as it redials, and counts it whole;
                // a chunk a write still carried may reach the old connection all the same.
                if (os.policy != "block" || exact)
                    && (got + drops < offered || (exact && got + drops != offered))
                {
                    return Err(format!(
                        "c{c} output {o} ({:?} {}): {got} received + {drops} drops != {offered} delivered (sent {sent})",
                        os.kind, os.policy
                    ));
                }
            } else {
                let chunks = stream_chunks(w, c);
                let set: BTreeSet<u64> = received.iter().copied().collect();
                let missing = chunks
                    .iter()
                    .filter(|&&(start, len)| !(start..start + len).any(|p| set.contains(&p)))
                    .count() as u64;
                let all: u64 = chunks.iter().map(|c| c.1).sum();
                if os.spool.is_some() {
                    if missing > lost || (lost == 0 && received.len() as u64 != all) {
                        return Err(format!(
                            "c{c} output {o} (spool, {}): received {} of {all} bytes, {missing} chunks missing, {drops} drops, {} lost or kept in the spool",
                            os.policy, received.len(), counters.spooled[c][o]
                        ));
                    }
                    continue;
                }
                let exact = os.policy == "drop" || (os.kind == OutKind::File && drops > 0);
                if os.policy == "block" && !exact && (missing != 0 || received.len() as u64 != all)
                {
                    let first = chunks
                        .iter()
                        .find(|&&(start, len)| !(start..start + len).any(|p| set.contains(&p)));
                    return Err(format!(
                        "c{c} output {o} (block): received {} of {all} bytes, {missing} chunks missing, the first {first:?}",
                        received.len()
                    ));
                }
                if (os.policy != "block" || exact)
                    && (missing > drops || (exact && missing != drops))
                {
                    return Err(format!(
                        "c{c} output {o} ({:?} {}): {missing} chunks missing, {drops} drops counted",
                        os.kind, os.policy
                    ));
                }
            }
        }
    }
    Ok(())
}

/// An MQTT output's messages, over all its broker connections: each one whole datagram, new
/// ones in the order the channel delivered them, a message seen again only as a re-send with
/// DUP; a QoS 1 `block` output lost none, and every other loss is counted as a drop.
pub(crate) fn check_broker(
    w: &World,
    c: usize,
    o: usize,
    os: &OutSpec,
    offered: u64,
    drops: u64,
) -> Result<(), String> {
    let what = format!(
        "c{c} output {o} (mqtt qos {} {})",
        u8::from(os.qos1),
        os.policy
    );
    let mut seen = BTreeSet::new();
    let mut last: Option<u64> = None;
    for &ci in &w.collectors[c][o].1 {
        let Some(b) = w.kernel.conns[ci].broker.as_ref() else {
            continue;
        };
        // What of the unacknowledged rest reached the broker (see `BrokerConn::kept`): most
        // connections lost all of it, others a part, chosen by the connection's number.
        let h = (ci as u64 ^ 0x5bd1_e995).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let forget = if h % 3 == 0 {
            (h >> 2) as usize % (b.acks.len() + 1)
        } else {
            usize::MAX
        };
        for (m, (pos, dup)) in b.kept(forget).iter().enumerate() {
            let seq = pos[0] >> 20;
            let whole = pos
                .iter()
                .enumerate()
                .all(|(k, &p)| p == (seq << 20) | (4 + k as u64));
            if !whole {
                return Err(format!(
                    "{what}: message {m} of connection {ci} is not one whole datagram"
                ));
            }
            if !seen.insert(seq) {
                if !dup {
                    return Err(format!(
                        "{what}: datagram {seq} published twice, the second time without DUP"
                    ));
                }
                continue;
            }
            if last.is_some_and(|l| seq <= l) {
                return Err(format!(
                    "{what}: datagram {seq} first published after {}",
                    last.unwrap()
                ));
            }
            last = Some(seq);
        }
    }
    let got = seen.len() as u64;
    if os.qos1 && os.policy == "block" && (got != offered || drops != 0) {
        // (Datagrams the input dropped are among those never seen.)
        let unseen: Vec<u64> = (0..offered).filter(|s| !seen.contains(s)).take(5).collect();
        return Err(format!(
            "{what}: {got} messages of {offered} delivered, {drops} drops (first never seen: {unseen:?})"
        ));
    }
    if got + drops < offered {
        return Err(format!(
            "{what}: {got} received + {drops} drops < {offered} delivered"
        ));
    }
    Ok(())
}

/// Subscribers' bytes toward the producer, and the idle watchdog: a channel's producers
/// received only its own subscribers' bytes, each subscriber's in order (checked as they
/// arrive), exactly as many as the relay counts as forwarded, nothing without
/// `commands = first`, and from one commander after another: once another subscriber's bytes
/// came, an earlier commander's never come again. No idle timeout without `idle_timeout`.
pub(crate) fn check_commands(w: &World, counters: &Counters) -> Result<(), String> {
    for (c, spec) in w.spec.iter().enumerate() {
        let (commands, idle_timeouts) = counters.talk[c];
        IDLE_TIMEOUTS.fetch_add(idle_timeouts, std::sync::atomic::Ordering::Relaxed);
        COMMAND_BYTES.fetch_add(commands, std::sync::atomic::Ordering::Relaxed);
        if !spec.idle && idle_timeouts != 0 {
            return Err(format!(
                "c{c}: {idle_timeouts} idle timeouts without idle_timeout"
            ));
        }
        let got: Vec<Pos> = w
            .kernel
            .conns
            .iter()
            .filter(|k| k.who == Some(Who::Input(c)))
            .flat_map(|k| k.received.iter().copied())
            .collect();
        if !spec.commands && !got.is_empty() {
            return Err(format!(
                "c{c}: producers received {} bytes without commands = first",
                got.len()
            ));
        }
        if got.len() as u64 != commands {
            return Err(format!(
                "c{c}: producers received {} command bytes, the relay counts {commands}",
                got.len()
            ));
        }
        let mut seen: Vec<usize> = Vec::new();
        for p in got {
            let from = talker_of(p).expect("checked by the kernel");
            if !matches!(w.kernel.conns[from].who, Some(Who::Output(oc, _)) if oc == c) {
                return Err(format!(
                    "c{c}: a producer received connection {from}'s bytes, not a subscriber of c{c}"
                ));
            }
            if seen.last() != Some(&from) {
                if seen.contains(&from) {
                    return Err(format!(
                        "c{c}: connection {from} commanded again after {:?}",
                        seen.last()
                    ));
                }
                seen.push(from);
            }
        }
    }
    Ok(())
}

/// A channel that cuts records: every output connection's stream, and every datagram, is
/// whole records from a boundary; a `block` collector got every byte the input read but those
/// it counted as partial.
pub(crate) fn check_records(
    w: &World,
    c: usize,
    spec: &ChanSpec,
    counters: &Counters,
) -> Result<(), String> {
    let r = &spec.records;
    let starts = &w.sources[c].starts;
    let chunks = stream_chunks(w, c);
    let all: u64 = chunks.iter().map(|x| x.1).sum();
    // Where the input's reading of a producer connection ended (no read went on from there).
    let begun: BTreeSet<Pos> = chunks.iter().map(|x| x.0).collect();
    let stops: BTreeSet<Pos> = chunks
        .iter()
        .map(|x| x.0 + x.1)
        .filter(|e| !begun.contains(e))
        .collect();
    for (o, os) in spec.outputs.iter().enumerate() {
        let conns: &[usize] = match os.kind {
            OutKind::Subscribers => &w.subs[c][o],
            OutKind::Collector => &w.collectors[c][o].1,
            OutKind::UdpDest => {
                for (i, d) in w
                    .kernel
                    .sinks
                    .get(&(c, o))
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let what = format!("c{c} output {o} datagram {i}");
                    if d.iter().all(|&p| r.in_preamble(starts, p)) {
                        continue;
                    }
                    check_runs(r, starts, &stops, d, false, &what)?;
                    let lines = d.iter().filter(|&&p| pattern(p) == b'\n').count();
                    if r.line.is_some() && lines != 1 {
                        return Err(format!("{what}: {lines} lines in one datagram"));
                    }
                }
                continue;
            }
            // MQTT outputs are on datagram channels only.
            OutKind::File | OutKind::Broker => continue,
        };
        let mut set = BTreeSet::new();
        if os.spool.is_some() {
            let all: Vec<Pos> = conns
                .iter()
                .flat_map(|&ci| w.kernel.conns[ci].received.iter().copied())
                .filter(|&p| !r.in_preamble(starts, p))
                .collect();
            // (Every connection begins with the preamble again.)
            sim::spoolfs::check_order_across(&all)
                .map_err(|e| format!("c{c} output {o} (spool): {e}"))?;
        }
        for &ci in conns {
            let got = &w.kernel.conns[ci].received;
            check_runs(
                r,
                starts,
                &stops,
                got,
                true,
                &format!("c{c} output {o} connection {ci}"),
            )?;
            // A subscriber gets the preamble first, whenever it joins.
            if let (OutKind::Subscribers, true, Some(&first)) =
                (os.kind, r.preamble > 0, got.first())
            {
                if !starts.contains(&first) {
                    return Err(format!(
                        "c{c} output {o} connection {ci}: a subscriber's first byte is position {first}, not a preamble (connections started at {starts:?})"
                    ));
                }
            }
            set.extend(got.iter().copied());
        }
        let partial = counters.partial[c];
        let skipped = counters.skipped[c][o];
        let spool_lost =
            os.spool.is_some() && counters.spooled[c][o] + counters.chans[c].2[o].0 > 0;
        if os.kind == OutKind::Collector
            && (os.policy == "block" || os.spool.is_some())
            && !spool_lost
            && set.len() as u64 + partial + skipped != all
        {
            let miss: Vec<Pos> = chunks
                .iter()
                .flat_map(|&(s, n)| s..s + n)
                .filter(|p| !set.contains(p))
                .take(8)
                .collect();
            return Err(format!(
                "c{c} output {o} (block collector): {} bytes received + {partial} partial + {skipped} skipped != {all} read (the first missing: {miss:?})",
                set.len()
            ));
        }
    }
    Ok(())
}

/// The chunks (start position, bytes) a stream channel's input read, one per buffer filled.
pub(crate) fn stream_chunks(w: &World, c: usize) -> Vec<(u64, u64)> {
    w.kernel
        .chunks
        .iter()
        .filter(|(ch, _, _)| *ch == c)
        .map(|&(_, s, n)| (s, n))
        .collect()
}
