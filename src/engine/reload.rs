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
