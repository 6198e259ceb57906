//! What the running kernel's io_uring offers and which paths the daemon chose.
//!
//! Owns: the record of probed features (found by the ring driver at start) and its human
//! report, printed by `ringrelay probe` and logged at start. Pure.

use std::fmt;

#[derive(Clone, Debug, Default)]
pub struct Caps {
    /// `uname -r` and `uname -m` of the running kernel.
    pub kernel: String,
    pub machine: String,
    /// The Linux 5.10 feature set was forced (`features = baseline`).
    pub baseline: bool,
    /// The ring runs with a kernel submission-polling thread.
    pub sqpoll: bool,
    /// Why SQPOLL is off, when it was wanted.
    pub sqpoll_note: Option<String>,
    /// Whether the poll thread was seen running (`iou-sqp-*` thread, Linux 5.12+).
    pub sqpoll_thread_seen: Option<bool>,
    /// The pool is registered as fixed buffers.
    pub registered_buffers: bool,
    /// Why it is not.
    pub registered_note: Option<String>,
    /// Multishot accept (5.19+), found by trial.
    pub multishot_accept: bool,
    /// UDP inputs receive by multishot RECVMSG into provided-buffer rings of pool buffers:
    /// the kernel registered a provided-buffer ring (5.19+) and ran a multishot RECVMSG (6.0+)
    /// in a trial, the kernel is not 32-bit ARM, and the baseline set is not forced.
    pub multishot_recvmsg: bool,
    /// Why not, when it was considered.
    pub multishot_recvmsg_note: Option<String>,
    /// Setup feature bits.
    pub feat_nodrop: bool,
    pub feat_submit_stable: bool,
    pub feat_fast_poll: bool,
    pub feat_sqpoll_nonfixed: bool,
    pub feat_ext_arg: bool,
    pub feat_native_workers: bool,
    pub feat_cqe_skip: bool,
    /// Opcodes by name and whether the kernel has them.
    pub ops: Vec<(&'static str, bool)>,
    /// Ring entries granted.
    pub sq_entries: u32,
    pub cq_entries: u32,
    /// RLIMIT_MEMLOCK soft limit in bytes (None: unlimited).
    pub memlock: Option<u64>,
    /// Channels that splice (set by the daemon once they are activated; 0 for `probe`).
    pub splice_channels: usize,
    /// Of those, channels that fan out with tee (set with `splice_channels`).
    pub tee_channels: usize,
    /// A splice from a non-blocking socket with nothing to read completes with -EAGAIN (found
    /// by trial), so splices can wait in POLL_ADD rather than in an io-wq worker.
    pub splice_eagain: bool,
    /// Zero-copy sends (IORING_OP_SEND_ZC, 6.0+): the kernel has them and the baseline set is
    /// not forced.
    pub send_zc: bool,
    /// Outputs that ask for zero-copy sends (`zerocopy=on`; set by the daemon).
    pub zerocopy_outputs: usize,
}

impl Caps {
    pub fn has_op(&self, name: &str) -> bool {
        self.ops.iter().any(|(n, ok)| *n == name && *ok)
    }

    /// A 32-bit ARM kernel, where user-allocated provided-buffer rings crashed the kernel.
    pub fn is_arm32_kernel(&self) -> bool {
        self.machine.starts_with("armv")
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> String {
        format!(
            "io_uring on {} {}: sqpoll {}, registered buffers {}, multishot accept {}, multishot udp receive {}, splice {}, zero-copy send {}{}",
            self.kernel,
            self.machine,
            on_off(self.sqpoll),
            on_off(self.registered_buffers),
            on_off(self.multishot_accept),
            on_off(self.multishot_recvmsg),
            match (self.has_op("SPLICE"), self.splice_channels) {
                (false, _) => "unavailable".to_string(),
                (true, 0) => "off".to_string(),
                (true, n) => format!(
                    "on ({n} channel{}{})",
                    if n == 1 { "" } else { "s" },
                    match self.tee_channels {
                        0 => String::new(),
                        t => format!(", {t} fan-out with tee"),
                    }
                ),
            },
            match (self.send_zc, self.zerocopy_outputs) {
                (false, _) => "unavailable".to_string(),
                (true, 0) => "off".to_string(),
                (true, n) => format!("on ({n} output{})", if n == 1 { "" } else { "s" }),
            },
            if self.baseline {
                " (baseline feature set forced)"
            } else {
                ""
            }
        )
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for Caps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel            {} {}", self.kernel, self.machine)?;
        writeln!(
            f,
            "ring              {} SQ / {} CQ entries",
            self.sq_entries, self.cq_entries
        )?;
        writeln!(
            f,
            "feature set       {}",
            if self.baseline {
                "baseline (Linux 5.10)"
            } else {
                "auto (probed)"
            }
        )?;
        writeln!(f, "setup features:")?;
        for (n, v, since) in [
            ("NODROP", self.feat_nodrop, "5.5"),
            ("SUBMIT_STABLE", self.feat_submit_stable, "5.5"),
            ("FAST_POLL", self.feat_fast_poll, "5.7"),
            ("SQPOLL_NONFIXED", self.feat_sqpoll_nonfixed, "5.11"),
            ("EXT_ARG", self.feat_ext_arg, "5.11"),
            ("NATIVE_WORKERS", self.feat_native_workers, "5.12"),
            ("CQE_SKIP", self.feat_cqe_skip, "5.17"),
        ] {
            writeln!(f, "  {n:<18} {:<4} (mainline {since})", yes_no(v))?;
        }
        writeln!(f, "opcodes:")?;
        for (n, v) in &self.ops {
            writeln!(f, "  {n:<18} {}", yes_no(*v))?;
        }
        writeln!(f, "paths the daemon uses:")?;
        let sq = if self.sqpoll {
            match self.sqpoll_thread_seen {
                Some(true) => "on (poll thread running)".to_string(),
                Some(false) => "on (poll thread not seen)".to_string(),
                None => "on".to_string(),
            }
        } else {
            format!(
                "off{}",
                self.sqpoll_note
                    .as_deref()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            )
        };
        writeln!(f, "  submission        SQPOLL {sq}")?;
        let rb = if self.registered_buffers {
            "registered (READ_FIXED / WRITE_FIXED)".to_string()
        } else {
            format!(
                "plain READ / WRITE{}",
                self.registered_note
                    .as_deref()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            )
        };
        writeln!(f, "  buffers           {rb}")?;
        writeln!(
            f,
            "  accept            {}",
            if self.multishot_accept {
                "multishot ACCEPT"
            } else {
                "single-shot ACCEPT, re-armed per connection"
            }
        )?;
        if self.multishot_recvmsg {
            writeln!(
                f,
                "  udp receive       multishot RECVMSG into a provided-buffer ring of pool buffers per input"
            )?;
        } else {
            writeln!(
                f,
                "  udp receive       linked chains of RECV with MSG_TRUNC into pool buffers{}",
                self.multishot_recvmsg_note
                    .as_deref()
                    .map(|n| format!(" (multishot: {n})"))
                    .unwrap_or_default()
            )?;
        }
        writeln!(
            f,
            "  stream receive    one read in flight per input, scattered into up to 16 pool buffers"
        )?;
        writeln!(
            f,
            "  output            one write in flight per output, short writes resubmitted"
        )?;
        writeln!(
            f,
            "  udp output        runs of equal-sized datagrams in one segmented send (UDP_SEGMENT)"
        )?;
        writeln!(
            f,
            "  connect           non-blocking connect + POLL_ADD(POLLOUT)"
        )?;
        let splice = if !self.has_op("SPLICE") {
            "unavailable (no IORING_OP_SPLICE): every channel uses pool buffers".to_string()
        } else {
            format!(
                "SPLICE socket -> pipe -> socket on 1-to-1 stream channels with splice = on{}; fan-out to stream links {}",
                if crate::config::splice::AUTO_SPLICES {
                    " or auto (the default)"
                } else {
                    " (auto: off, the buffer path measured faster)"
                },
                if !self.has_op("TEE") {
                    "on the buffer path (no IORING_OP_TEE)".to_string()
                } else {
                    format!(
                        "splices with TEE into a pipe per output with splice = on{}",
                        if crate::config::splice::AUTO_FAN_OUT_SPLICES {
                            " or auto"
                        } else {
                            " (auto: buffer path, measured faster)"
                        }
                    )
                }
            )
        };
        writeln!(f, "  stream splice     {splice}")?;
        writeln!(
            f,
            "  zero-copy send    {}",
            if self.send_zc {
                "SEND_ZC from pool buffers on tcp outputs with zerocopy=on (chunks of 16KiB and more)"
            } else if self.baseline {
                "off (baseline feature set forced)"
            } else {
                "unavailable (no IORING_OP_SEND_ZC, Linux 6.0+): sends copy"
            }
        )?;
        if self.has_op("SPLICE") {
            writeln!(
                f,
                "  splice sockets    {}",
                if self.splice_eagain {
                    "non-blocking, POLL_ADD when not ready"
                } else {
                    "blocking (this kernel does not return -EAGAIN from a splice), one io-wq worker per waiting splice"
                }
            )?;
        }
        match self.memlock {
            Some(m) => writeln!(
                f,
                "memlock limit     {}",
                crate::config::units::format_size(m)
            )?,
            None => writeln!(f, "memlock limit     unlimited")?,
        }
        Ok(())
    }
}
