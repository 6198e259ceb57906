//! Telling systemd how the relay is doing: the `sd_notify(3)` protocol over the datagram socket
//! named by `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//!
//! Owns: [`Notifier`] (the socket, the watchdog period, the rate meter behind the `STATUS=`
//! line) and the pure functions that turn states and counters into messages. What is sent:
//!
//! ```text
//! READY=1 (MAINPID=pid after --daemon)   every channel bound and the loop about to run
//! RELOADING=1 MONOTONIC_USEC=...         SIGHUP received; READY=1 follows once it is applied
//! STOPPING=1                             SIGTERM or SIGINT received
//! STATUS=8 channels, in 12.3 MB/s, ...   every stats_interval, rates since the previous one
//! WATCHDOG=1                             every half WATCHDOG_USEC, from the loop's timer
//! ```
//!
//! [`Notifier::from_env`] removes `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the
//! environment, as `sd_notify(unset_environment = 1)` does, so nothing the relay might start
//! inherits them. The watchdog is off when `WATCHDOG_PID` names another process (checked at
//! [`Notifier::ready`], after any fork).
//!
//! Must never: block the loop (the socket is non-blocking: a full receiver drops the message) or
//! stop the relay. A failing send is logged once, when sends start failing, and once more when
//! they work again; the relay runs on either way.

use log::{info, warn};
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where `NOTIFY_SOCKET` points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A socket file (`/run/systemd/notify`).
    Path(PathBuf),
    /// A name in the abstract namespace (`@name`, the `@` not part of the name).
    Abstract(Vec<u8>),
}

/// Reads a `NOTIFY_SOCKET` value: an absolute path or `@name`; anything else is refused, as
/// `sd_notify(3)` refuses it.
pub fn parse_target(s: &str) -> Result<Target, String> {
    if let Some(name) = s.strip_prefix('@') {
        if name.is_empty() {
            return Err("an abstract socket name after `@` is missing".into());
        }
        Ok(Target::Abstract(name.as_bytes().to_vec()))
    } else if s.starts_with('/') {
        Ok(Target::Path(PathBuf::from(s)))
    } else {
        Err(format!(
            "`{s}` is neither an absolute path nor an abstract name (@name)"
        ))
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, or `None` when the watchdog is off
/// (no or a zero or unreadable `WATCHDOG_USEC`, or a `WATCHDOG_PID` that is not `our_pid`).
pub fn watchdog_period(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok() != Some(our_pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// The message at start-up: `READY=1`, the pid when the process systemd started has forked the
/// daemon off, and the channel count as a first status.
pub fn ready_message(mainpid: Option<u32>, channels: usize) -> String {
    let mut m = String::from("READY=1\n");
    if let Some(pid) = mainpid {
        m.push_str(&format!("MAINPID={pid}\n"));
    }
    m.push_str(&format!("STATUS={}\n", channels_text(channels)));
    m
}

/// The message at the start of a reload, with `CLOCK_MONOTONIC` in microseconds.
pub fn reloading_message(monotonic_usec: u64) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\n")
}

fn channels_text(n: usize) -> String {
    if n == 1 {
        "1 channel".into()
    } else {
        format!("{n} channels")
    }
}

/// A byte rate in decimal units with three significant digits or so: `512 B/s`, `12.3 MB/s`.
pub fn format_rate(bytes_per_sec: f64) -> String {
    let b = bytes_per_sec.max(0.0);
    if b < 1e3 {
        format!("{b:.0} B/s")
    } else if b < 1e6 {
        format!("{:.1} kB/s", b / 1e3)
    } else if b < 1e9 {
        format!("{:.1} MB/s", b / 1e6)
    } else {
        format!("{:.1} GB/s", b / 1e9)
    }
}

/// A count per second: whole numbers, one decimal below 10 so that a trickle is not shown as 0.
fn format_count_rate(per_sec: f64) -> String {
    let r = per_sec.max(0.0);
    if r == 0.0 || r >= 10.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// The `STATUS=` text: `8 channels, in 12.3 MB/s, out 24.6 MB/s, 0 drops/s`.
pub fn status_text(channels: usize, r: Rates) -> String {
    format!(
        "{}, in {}, out {}, {} drops/s",
        channels_text(channels),
        format_rate(r.in_bytes),
        format_rate(r.out_bytes),
        format_count_rate(r.drops)
    )
}

/// Counters summed over every channel: input bytes, output bytes, drops (inputs and outputs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub drops: u64,
}

/// Per-second rates of [`Totals`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub in_bytes: f64,
    pub out_bytes: f64,
    pub drops: f64,
}

/// Rates between two looks at the totals `dt` apart. A total that went down (a channel
/// removed by a reload took its counters along) counts as no traffic, not as a negative rate.
pub fn rates(before: Totals, after: Totals, dt: Duration) -> Rates {
    let secs = dt.as_secs_f64();
    if secs <= 0.0 {
        return Rates::default();
    }
    let per_sec = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
    Rates {
        in_bytes: per_sec(before.in_bytes, after.in_bytes),
        out_bytes: per_sec(before.out_bytes, after.out_bytes),
        drops: per_sec(before.drops, after.drops),
    }
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64) * 1_000_000 + (t.tv_nsec() as u64) / 1_000,
        Err(_) => 0,
    }
}

/// Where messages go: the socket, or a list in unit tests.
enum Sink {
    Socket {
        sock: UnixDatagram,
        addr: SocketAddr,
    },
    #[cfg(test)]
    Memory(Vec<String>),
}

/// The relay's side of the notification socket; see the module documentation.
pub struct Notifier {
    sink: Sink,
    /// `NOTIFY_SOCKET` as given, for log lines.
    shown: String,
    watchdog_usec: Option<String>,
    watchdog_pid: Option<String>,
    /// Half of `WATCHDOG_USEC`, once [`Notifier::ready`] found the watchdog meant for us.
    watchdog: Option<Duration>,
    last_watchdog: Instant,
    /// When the last `STATUS=` went out and the totals it was computed from.
    last_status: (Instant, Totals),
    failing: bool,
    stopping_sent: bool,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` (and the watchdog's variables), removes them from the environment
    /// and opens a socket to send with. `None` when not run by a service manager that listens,
    /// or when the value is unusable (logged).
    ///
    /// Call it while the process has one thread: it changes the environment.
    pub fn from_env() -> Option<Notifier> {
        let target = std::env::var("NOTIFY_SOCKET").ok();
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        for v in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(v);
        }
        let shown = target.filter(|t| !t.is_empty())?;
        let addr = parse_target(&shown).and_then(|t| {
            match t {
                Target::Path(p) => SocketAddr::from_pathname(p),
                Target::Abstract(n) => SocketAddr::from_abstract_name(n),
            }
            .map_err(|e| format!("`{shown}`: {e}"))
        });
        let addr = match addr {
            Ok(a) => a,
            Err(e) => {
                warn!("NOTIFY_SOCKET: {e}; systemd is not notified");
                return None;
            }
        };
        let sock = match UnixDatagram::unbound().and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                warn!("NOTIFY_SOCKET: cannot create a socket: {e}; systemd is not notified");
                return None;
            }
        };
        Some(Notifier::new(Sink::Socket { sock, addr }, shown, usec, pid))
    }

    fn new(sink: Sink, shown: String, usec: Option<String>, pid: Option<String>) -> Notifier {
        let now = Instant::now();
        Notifier {
            sink,
            shown,
            watchdog_usec: usec,
            watchdog_pid: pid,
            watchdog: None,
            last_watchdog: now,
            last_status: (now, Totals::default()),
            failing: false,
            stopping_sent: false,
        }
    }

    /// Every channel is bound: `READY=1`. `mainpid` is this process's pid when it is not the
    /// one the service manager started (after `--daemon` forked). Arms the watchdog.
    pub fn ready(&mut self, now: Instant, mainpid: Option<u32>, channels: usize, totals: Totals) {
        self.watchdog = watchdog_period(
            self.watchdog_usec.as_deref(),
            self.watchdog_pid.as_deref(),
            std::process::id(),
        );
        if let Some(p) = self.watchdog {
            info!("systemd watchdog: WATCHDOG=1 every {} ms", p.as_millis());
        }
        self.last_watchdog = now;
        self.last_status = (now, totals);
        self.send(&ready_message(mainpid, channels));
    }

    /// A reload begins (SIGHUP).
    pub fn reloading(&mut self) {
        self.send(&reloading_message(monotonic_usec()));
    }

    /// The reload is applied, or the file was refused and the running configuration stays.
    pub fn reloaded(&mut self) {
        self.send("READY=1\n");
    }

    /// Shutdown begins; said once however many SIGTERMs arrive.
    pub fn stopping(&mut self) {
        if !self.stopping_sent {
            self.stopping_sent = true;
            self.send("STOPPING=1\n");
        }
    }

    /// The loop's timer: `WATCHDOG=1` when half the watchdog period passed, `STATUS=` when
    /// `stats_interval` passed. Sent from the loop itself, so a loop that stops turning stops
    /// feeding the watchdog.
    pub fn tick(
        &mut self,
        now: Instant,
        stats_interval: Duration,
        channels: usize,
        totals: Totals,
    ) {
        if let Some(p) = self.watchdog {
            if now.duration_since(self.last_watchdog) >= p {
                self.last_watchdog = now;
                self.send("WATCHDOG=1\n");
            }
        }
        let (then, before) = self.last_status;
        let dt = now.duration_since(then);
        if dt >= stats_interval {
            self.last_status = (now, totals);
            let line = status_text(channels, rates(before, totals, dt));
            self.send(&format!("STATUS={line}\n"));
        }
    }

    fn send(&mut self, msg: &str) {
        let r: io::Result<()> = match &mut self.sink {
            Sink::Socket { sock, addr } => sock.send_to_addr(msg.as_bytes(), addr).map(|_| ()),
            #[cfg(test)]
            Sink::Memory(v) => {
                v.push(msg.to_string());
                Ok(())
            }
        };
        match r {
            Ok(()) if self.failing => {
                self.failing = false;
                info!("systemd notifications reach {} again", self.shown);
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                warn!(
                    "cannot notify systemd at {}: {e}; the relay runs on (said once until it works again)",
                    self.shown
                );
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(usec: Option<&str>, pid: Option<&str>) -> Notifier {
        Notifier::new(
            Sink::Memory(Vec::new()),
            "@test".into(),
            usec.map(str::to_string),
            pid.map(str::to_string),
        )
    }

    fn sent(n: &mut Notifier) -> Vec<String> {
        match &mut n.sink {
            Sink::Memory(v) => std::mem::take(v),
            Sink::Socket { .. } => unreachable!(),
        }
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("/run/systemd/notify"),
            Ok(Target::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            parse_target("@ringrelay-1"),
            Ok(Target::Abstract(b"ringrelay-1".to_vec()))
        );
        assert!(parse_target("@").is_err());
        assert!(parse_target("relative/path").is_err());
        assert!(parse_target("").is_err());
    }

    #[test]
    fn watchdog_is_half_the_period_and_only_for_us() {
        let half = Some(Duration::from_millis(100));
        assert_eq!(watchdog_period(Some("200000"), None, 7), half);
        assert_eq!(watchdog_period(Some("200000"), Some("7"), 7), half);
        assert_eq!(watchdog_period(Some("200000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("200000"), Some("x"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("soon"), None, 7), None);
        assert_eq!(watchdog_period(None, Some("7"), 7), None);
    }

    #[test]
    fn messages() {
        assert_eq!(ready_message(None, 8), "READY=1\nSTATUS=8 channels\n");
        assert_eq!(
            ready_message(Some(42), 1),
            "READY=1\nMAINPID=42\nSTATUS=1 channel\n"
        );
        assert_eq!(
            reloading_message(123_456),
            "RELOADING=1\nMONOTONIC_USEC=123456\n"
        );
        let r = Rates {
            in_bytes: 12.3e6,
            out_bytes: 24.6e6,
            drops: 0.0,
        };
        assert_eq!(
            status_text(8, r),
            "8 channels, in 12.3 MB/s, out 24.6 MB/s, 0 drops/s"
        );
    }

    #[test]
    fn rate_units() {
        assert_eq!(format_rate(0.0), "0 B/s");
        assert_eq!(format_rate(999.0), "999 B/s");
        assert_eq!(format_rate(1500.0), "1.5 kB/s");
        assert_eq!(format_rate(12_345_678.0), "12.3 MB/s");
        assert_eq!(format_rate(2.5e9), "2.5 GB/s");
        assert_eq!(format_count_rate(0.5), "0.5");
        assert_eq!(format_count_rate(12.4), "12");
    }

    #[test]
    fn rates_between_two_looks() {
        let a = Totals {
            in_bytes: 1000,
            out_bytes: 2000,
            drops: 5,
        };
        let b = Totals {
            in_bytes: 3000,
            out_bytes: 1000, // a reload removed a channel
            drops: 9,
        };
        let r = rates(a, b, Duration::from_secs(2));
        assert_eq!(r.in_bytes, 1000.0);
        assert_eq!(r.out_bytes, 0.0);
        assert_eq!(r.drops, 2.0);
        assert_eq!(rates(a, b, Duration::ZERO), Rates::default());
    }

    #[test]
    fn timer_feeds_watchdog_and_status() {
        let pid = std::process::id().to_string();
        let mut n = memory(Some("200000"), Some(&pid));
        let t0 = Instant::now();
        n.ready(t0, None, 2, Totals::default());
        assert_eq!(sent(&mut n), ["READY=1\nSTATUS=2 channels\n"]);
        let interval = Duration::from_secs(1);
        let ms = Duration::from_millis;
        n.tick(t0 + ms(50), interval, 2, Totals::default());
        assert!(sent(&mut n).is_empty());
        n.tick(t0 + ms(100), interval, 2, Totals::default());
        n.tick(t0 + ms(150), interval, 2, Totals::default());
        n.tick(t0 + ms(200), interval, 2, Totals::default());
        assert_eq!(sent(&mut n), ["WATCHDOG=1\n", "WATCHDOG=1\n"]);
        let t = Totals {
            in_bytes: 2_000_000,
            out_bytes: 4_000_000,
            drops: 3,
        };
        n.tick(t0 + ms(1000), interval, 2, t);
        assert_eq!(
            sent(&mut n),
            [
                "WATCHDOG=1\n",
                "STATUS=2 channels, in 2.0 MB/s, out 4.0 MB/s, 3.0 drops/s\n"
            ]
        );
    }

    #[test]
    fn no_watchdog_for_another_pid_and_one_stopping() {
        let mut n = memory(Some("200000"), Some("1"));
        let t0 = Instant::now();
        n.ready(t0, Some(9), 0, Totals::default());
        n.tick(
            t0 + Duration::from_millis(500),
            Duration::from_secs(60),
            0,
            Totals::default(),
        );
        n.reloading();
        n.reloaded();
        n.stopping();
        n.stopping();
        let s = sent(&mut n);
        assert_eq!(s.len(), 4, "{s:?}");
        assert_eq!(s[0], "READY=1\nMAINPID=9\nSTATUS=0 channels\n");
        assert!(s[1].starts_with("RELOADING=1\nMONOTONIC_USEC="));
        assert!(
            s[1].trim_end()
                .rsplit('=')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0
        );
        assert_eq!(s[2], "READY=1\n");
        assert_eq!(s[3], "STOPPING=1\n");
    }
}
