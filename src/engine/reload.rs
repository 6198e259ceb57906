//! Reload planning: which channels a new configuration keeps untouched, restarts, removes or
//! adds, and which `[global]` keys may change while running.
//!
//! Owns: the decision for every channel at SIGHUP (the driver reads the file and changes the
//! logging target; an invalid file never reaches here). A channel whose settings are the same
//! keeps running untouched; a changed one drains and starts again with the new settings once
//! its old instance has closed (it may hold the same ports and its region has the same name);
//! a removed one drains and goes.

use super::{Engine, Io};
use crate::config::{self, Config};
use log::{info, warn};

/// Merging rule for reload: what may change at run time changes, the rest stays.
pub fn merge_global(old: &config::Global, new: &config::Global) -> config::Global {
    let mut g = old.clone();
    g.log_level = new.log_level;
    g.log = new.log;
    g.log_facility = new.log_facility.clone();
    g.syslog_socket = new.syslog_socket.clone();
    g.stats_interval = new.stats_interval;
    g.shutdown_timeout = new.shutdown_timeout;
    // Applies to channels started from here on; [global] splice reaches the channels'
    // own settings, so a change restarts the channels it affects.
    g.pipe_size = new.pipe_size;
    g.splice = new.splice;
    // The metrics server's peers and health rule apply to its next request.
    g.metrics_allow = new.metrics_allow.clone();
    g.health_grace = new.health_grace;
    g
}

impl Engine {
    /// SIGHUP with a valid file `path`: keep unchanged channels untouched, stop removed ones,
    /// start new ones, restart changed ones.
    pub fn reload(&mut self, new: Config, path: &str, io: &mut Io) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let old_g = &self.cfg.global;
        let g = &new.global;
        let restart_keys = [
            (
                "sqpoll",
                g.sqpoll != old_g.sqpoll
                    || g.sqpoll_idle_ms != old_g.sqpoll_idle_ms
                    || g.sqpoll_cpu != old_g.sqpoll_cpu,
            ),
            ("ring_entries", g.ring_entries != old_g.ring_entries),
            (
                "buffer_size/buffer_count",
                g.buffer_size != old_g.buffer_size || g.buffer_count != old_g.buffer_count,
            ),
            ("features", g.features != old_g.features),
            ("metrics", g.metrics != old_g.metrics),
            ("user/group", g.user != old_g.user || g.group != old_g.group),
            (
                "shm_dir/shm_group/shm_mode",
                g.shm_dir != old_g.shm_dir
                    || g.shm_group != old_g.shm_group
                    || g.shm_mode != old_g.shm_mode,
            ),
            (
                "log/log_facility/syslog_socket",
                g.log != old_g.log
                    || g.log_facility != old_g.log_facility
                    || g.syslog_socket != old_g.syslog_socket,
            ),
        ];
        for (k, changed) in restart_keys {
            if changed {
                warn!("reload: {k} changed in [global]; it takes effect at the next restart");
            }
        }
        // The new settings apply from here on (a stopped channel drains for the new
        // shutdown_timeout); keys that need a restart keep their running values.
        let mut new_cfg = new;
        new_cfg.global = merge_global(&self.cfg.global, &new_cfg.global);
        let channels = new_cfg.channels.clone();
        self.cfg = new_cfg;
        let (mut kept, mut started, mut restarted, mut stopped) = (0, 0, 0, 0);
        // Channels waiting for their old instance to close (restarted, or removed and added
        // back, by an earlier reload): they start with what this file says, if anything.
        let mut pending = std::mem::take(&mut self.pending_starts);
        pending.retain_mut(|(_, pc)| {
            let Some(nc) = channels.iter().find(|c| c.name == pc.name) else {
                stopped += 1;
                info!(
                    "reload: channel {} removed while its old instance closes: it does not start again",
                    pc.name
                );
                return false;
            };
            if nc.same_settings(pc) {
                kept += 1;
            } else {
                restarted += 1;
                info!(
                    "reload: channel {} changed again: its new instance starts with these settings once the old one is closed",
                    nc.name
                );
            }
            *pc = nc.clone();
            true
        });
        self.pending_starts = pending;
        // Removed and changed channels.
        for ci in 0..self.channels.len() {
            let Some(ch) = self.channels[ci].as_ref() else {
                continue;
            };
            if ch.draining {
                continue;
            }
            match channels.iter().find(|c| c.name == ch.cfg.name) {
                Some(nc) if nc.same_settings(&ch.cfg) => {
                    kept += 1;
                    if let Some(ch) = self.channels[ci].as_mut() {
                        ch.cfg = nc.clone();
                    }
                }
                Some(nc) => {
                    restarted += 1;
                    info!("reload: channel {} changed: restarting it", nc.name);
                    self.pending_starts.push((ci, nc.clone()));
                    self.stop_channel(ci, io);
                }
                None => {
                    stopped += 1;
                    info!(
                        "reload: channel {} removed: flushing and closing it",
                        ch.cfg.name
                    );
                    self.stop_channel(ci, io);
                }
            }
        }
        // New channels.
        for nc in &channels {
            let exists = self
                .channels
                .iter()
                .flatten()
                .any(|c| c.cfg.name == nc.name && !c.draining)
                || self.pending_starts.iter().any(|(_, c)| c.name == nc.name);
            if exists {
                continue;
            }
            started += 1;
            // A channel of this name removed earlier and still closing: the new one starts
            // once it is gone (it may hold the same ports, and its region has this name).
            let closing = self
                .channels
                .iter()
                .position(|c| c.as_ref().is_some_and(|c| c.cfg.name == nc.name));
            if let Some(ci) = closing {
                info!(
                    "reload: channel {} added back: it starts once its old instance is closed",
                    nc.name
                );
                self.pending_starts.push((ci, nc.clone()));
                continue;
            }
            let ci = self
                .channels
                .iter()
                .position(|c| c.is_none())
                .unwrap_or(self.channels.len());
            self.start_channel(ci, nc, io);
        }
        info!("reload: {path}: {kept} unchanged, {started} new, {restarted} restarted, {stopped} removed");
        // Close idle channels right away (a removed channel with nothing queued).
        self.after_batch(io);
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::io::{Fd, Op};
    use crate::engine::testkit::Rig;
    use crate::engine::token::{OpKind, Token};

    const GLOBAL: &str = "[global]\nbuffer_size = 4KiB\nbuffer_count = 8\ndatagram_count = 0\n";
    const A: &str = "[channel a]\ninput = tcp-listen://127.0.0.1:5000\n\
        output = tcp-listen://127.0.0.1:6000\n";
    const A_CHANGED: &str = "[channel a]\ninput = tcp-listen://127.0.0.1:5000\n\
        output = tcp-listen://127.0.0.1:6000 max_backlog=1MiB\n";
    const B: &str = "[channel b]\ninput = tcp-listen://127.0.0.1:5001\n\
        output = tcp-listen://127.0.0.1:6001\n";

    fn conf(channels: &[&str]) -> String {
        format!("{GLOBAL}{}", channels.concat())
    }

    /// Per channel slot: its name, whether it drains, and its open endpoints (fd, generation).
    type Snapshot = Vec<Option<(String, bool, Vec<(Fd, u32)>)>>;

    fn snapshot(rig: &Rig) -> Snapshot {
        rig.engine
            .channels()
            .iter()
            .map(|c| {
                c.as_ref().map(|c| {
                    let eps = c.slots.iter().flatten().map(|e| (e.fd, e.gen)).collect();
                    (c.cfg.name.clone(), c.draining, eps)
                })
            })
            .collect()
    }

    /// The accepts armed on channel `ci`'s listeners: (listener fd, token).
    fn accepts(rig: &Rig, ci: usize) -> Vec<(Fd, Token)> {
        let ch = rig.chan(ci);
        let fds = [ch.input_listener, ch.outputs[0].listener].map(|s| rig.fd(ci, s));
        fds.iter().map(|&fd| (fd, rig.accept_token(fd))).collect()
    }

    /// The cancels submitted since the last take, by target.
    fn cancels(rig: &Rig) -> Vec<Token> {
        let t = rig.fx.subs.iter().map(|s| match s.op {
            Op::Cancel { target } => target,
            op => panic!("only cancels expected, got {op:?}"),
        });
        sorted(t.collect())
    }

    fn sorted(mut t: Vec<Token>) -> Vec<Token> {
        t.sort_by_key(|t| t.encode());
        t
    }

    /// The accepts of a stopped channel come back cancelled; the batch ends.
    fn cancel_completions(rig: &mut Rig, accepts: &[(Fd, Token)]) {
        for &(_, tok) in accepts {
            rig.complete(tok, -libc::ECANCELED);
        }
        rig.after_batch();
    }

    #[test]
    fn same_config_keeps_every_channel_untouched() {
        let text = conf(&[A, B]);
        let mut rig = Rig::new(&text);
        let before = snapshot(&rig);
        rig.take();
        rig.reload(&text);
        assert_eq!(snapshot(&rig), before);
        assert_eq!(rig.sys.binds, ["a", "b"]);
        assert_eq!(rig.sys.closes, []);
        assert_eq!(rig.sys.shutdowns, []);
        assert_eq!(rig.fx.subs, []);
    }

    #[test]
    fn changed_channel_restarts_once_its_old_instance_is_closed() {
        let mut rig = Rig::new(&conf(&[A, B]));
        let old_a = accepts(&rig, 0);
        let b_before = snapshot(&rig)[1].clone();
        rig.take();
        rig.reload(&conf(&[A_CHANGED, B]));
        let now = snapshot(&rig);
        assert_eq!(
            now[0].as_ref().map(|c| (c.0.as_str(), c.1)),
            Some(("a", true))
        );
        assert_eq!(now[1], b_before, "b is untouched");
        // Its listeners are shut down and their accepts cancelled; nothing is bound yet.
        assert_eq!(
            rig.sys.shutdowns,
            old_a.iter().map(|a| a.0).collect::<Vec<_>>()
        );
        assert_eq!(cancels(&rig), sorted(old_a.iter().map(|a| a.1).collect()));
        assert_eq!(rig.sys.binds, ["a", "b"]);
        assert_eq!(rig.sys.closes, []);
        rig.take();

        // One accept back: one listener closed, the other still in flight, no start.
        rig.complete(old_a[0].1, -libc::ECANCELED);
        rig.after_batch();
        assert_eq!(rig.sys.closes, [old_a[0].0]);
        assert!(rig.chan(0).draining);
        assert_eq!(rig.sys.binds, ["a", "b"]);

        // The last one back: the old instance goes and the new one starts in its slot.
        rig.complete(old_a[1].1, -libc::ECANCELED);
        assert_eq!(rig.sys.binds, ["a", "b"], "starts only after the batch");
        rig.after_batch();
        assert_eq!(rig.sys.closes, [old_a[0].0, old_a[1].0]);
        assert_eq!(rig.sys.binds, ["a", "b", "a"]);
        assert_eq!(rig.engine.channels().len(), 2);
        let a = rig.chan(0);
        assert!(!a.draining);
        assert_eq!(a.cfg.outputs[0].max_backlog, 1 << 20);
        let new_a = accepts(&rig, 0);
        assert!(new_a.iter().all(|n| old_a.iter().all(|o| o.0 != n.0)));
        assert_eq!(rig.subs_of(OpKind::Accept).len(), 2);
        assert_eq!(snapshot(&rig)[1], b_before);
    }

    #[test]
    fn removed_channel_stops_and_its_slot_is_freed() {
        let mut rig = Rig::new(&conf(&[A, B]));
        let a_before = snapshot(&rig)[0].clone();
        let old_b = accepts(&rig, 1);
        rig.take();
        rig.reload(&conf(&[A]));
        assert_eq!(snapshot(&rig)[0], a_before);
        assert!(rig.chan(1).draining);
        assert_eq!(
            rig.sys.shutdowns,
            old_b.iter().map(|b| b.0).collect::<Vec<_>>()
        );
        assert_eq!(cancels(&rig), sorted(old_b.iter().map(|b| b.1).collect()));
        rig.take();
        cancel_completions(&mut rig, &old_b);
        assert!(rig.engine.channels()[1].is_none());
        assert_eq!(
            rig.sys.closes,
            old_b.iter().map(|b| b.0).collect::<Vec<_>>()
        );
        assert_eq!(rig.sys.binds, ["a", "b"]);
        assert_eq!(rig.fx.subs, []);
        assert_eq!(snapshot(&rig)[0], a_before);
    }

    #[test]
    fn channel_added_back_while_closing_starts_once_it_is_gone() {
        let mut rig = Rig::new(&conf(&[A, B]));
        let old_b = accepts(&rig, 1);
        rig.take();
        rig.reload(&conf(&[A]));
        let closing = snapshot(&rig);
        assert!(rig.chan(1).draining);
        rig.take();

        // Back in the file while its old instance still waits for its accepts.
        rig.reload(&conf(&[A, B]));
        assert_eq!(snapshot(&rig), closing, "nothing starts yet");
        assert_eq!(rig.sys.binds, ["a", "b"]);
        assert_eq!(rig.fx.subs, []);

        cancel_completions(&mut rig, &old_b);
        assert_eq!(rig.sys.binds, ["a", "b", "b"]);
        assert_eq!(rig.engine.channels().len(), 2);
        let b = rig.chan(1);
        assert_eq!((b.cfg.name.as_str(), b.draining), ("b", false));
        let new_b = accepts(&rig, 1);
        assert!(new_b.iter().all(|n| old_b.iter().all(|o| o.0 != n.0)));
        assert_eq!(rig.subs_of(OpKind::Accept).len(), 2);
    }
}
