//! Endpoint URLs: `udp://HOST:PORT`, `tcp://`, `tcp-listen://`, `unix://`, `unix-listen://`,
//! `file://`, `serial://`, `mqtt://HOST[:PORT]/TOPIC`, each followed by space-separated
//! `key=value` options.
//!
//! Owns: the syntax of an endpoint and the validation of its options for the role it plays
//! (input or output). It never resolves names or touches a socket: the driver does that
//! (`src/driver/net.rs`). Address ranges are [`crate::config::cidr`]'s, a serial port's line
//! settings [`crate::config::serial`]'s, an MQTT output's [`crate::config::mqtt`]'s.

pub use crate::config::cidr::Cidr;
use crate::config::idle::{format_idle_timeout, parse_idle_timeout};
use crate::config::keepalive::{format_keepalive, parse_keepalive, Keepalive, DEFAULT_IDLE_SECS};
use crate::config::mqtt::{self, MqttParams};
use crate::config::parse::quote;
use crate::config::serial::{self, SerialParams};
use crate::config::spool::{self, SpoolOpts};
use crate::config::units::{format_duration, parse_duration, parse_size};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long a faulted file output holds its data when its URL does not say (`fault_grace=`).
pub const DEFAULT_FAULT_GRACE: Duration = Duration::from_secs(10);

/// Longest `fault_grace` accepted: past a day, a file output that cannot write is simply stuck.
pub const MAX_FAULT_GRACE: Duration = Duration::from_secs(86_400);

/// The kind of endpoint a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Udp,
    Tcp,
    TcpListen,
    Unix,
    UnixListen,
    File,
    /// A serial port (an input): `serial:///dev/ttyUSB0 baud=4800`.
    Serial,
    /// An MQTT 3.1.1 broker (an output): `mqtt://broker:1883/site/{channel}`.
    Mqtt,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Udp => "udp",
            Scheme::Tcp => "tcp",
            Scheme::TcpListen => "tcp-listen",
            Scheme::Unix => "unix",
            Scheme::UnixListen => "unix-listen",
            Scheme::File => "file",
            Scheme::Serial => "serial",
            Scheme::Mqtt => "mqtt",
        }
    }

    /// Stream schemes carry bytes without datagram boundaries.
    pub fn is_stream(self) -> bool {
        !matches!(self, Scheme::Udp)
    }

    /// Listening schemes accept connections from peers.
    pub fn is_listen(self) -> bool {
        matches!(self, Scheme::TcpListen | Scheme::UnixListen)
    }

    /// Inputs the relay opens itself and opens again with backoff when they end or fail:
    /// dialed producers and serial ports.
    pub fn reopens(self) -> bool {
        matches!(self, Scheme::Tcp | Scheme::Unix | Scheme::Serial)
    }
}

/// Where an endpoint points.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A host (IP literal or name, brackets removed for IPv6) and a port.
    Inet { host: String, port: u16 },
    /// A filesystem path (Unix socket or file).
    Path(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Inet { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Inet { host, port } => write!(f, "{host}:{port}"),
            Target::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What a slow output does when its backlog exceeds `max_backlog`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OnSlow {
    /// Close the connection (subscribers' default); the peer may reconnect.
    Disconnect,
    /// Drop new data for this output and count it (the only mode for UDP outputs).
    Drop,
    /// Stop reading the input until the output drains, so nothing is lost.
    Block,
}

impl OnSlow {
    pub fn name(self) -> &'static str {
        match self {
            OnSlow::Disconnect => "disconnect",
            OnSlow::Drop => "drop",
            OnSlow::Block => "block",
        }
    }
}

/// What a stream output does when its peer closes its sending side (FIN): a collector of a
/// `tcp://` or `unix://` output, or a subscriber of a listening one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OnFin {
    /// Take the collector as gone: close and redial, keeping what the old connection has not
    /// taken (the default: a collector that restarts loses nothing the relay still holds).
    Redial,
    /// A half-close only: keep sending (collectors such as `nc -l < /dev/null` that close their
    /// sending side at once but go on reading).
    Keep,
    /// A subscriber's FIN: it left; close it and free its place (the default of listening
    /// outputs: TCP cannot tell a close from a half-close, and a subscriber that left an idle
    /// channel must not hold its descriptor and `max_clients` place until data flows).
    Close,
}

impl OnFin {
    pub fn name(self) -> &'static str {
        match self {
            OnFin::Redial => "redial",
            OnFin::Keep => "keep",
            OnFin::Close => "close",
        }
    }
}

/// Typed options; `None` means "the default for this role".
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Options {
    /// Multicast group to join (udp input).
    pub group: Option<IpAddr>,
    /// Interface name or address for multicast.
    pub iface: Option<String>,
    /// SO_RCVBUF for udp inputs.
    pub rcvbuf: Option<u64>,
    /// SO_SNDBUF for outputs.
    pub sndbuf: Option<u64>,
    /// Peers allowed to connect to a listening endpoint (empty: everyone).
    pub allow: Vec<Cidr>,
    pub max_clients: Option<u32>,
    pub max_backlog: Option<u64>,
    pub on_slow: Option<OnSlow>,
    /// A collector's FIN: redial (default) or keep sending.
    pub on_fin: Option<OnFin>,
    /// File rotation size.
    pub rotate: Option<u64>,
    /// Rotated files kept.
    pub keep: Option<u32>,
    /// How long a faulted file output holds its data (blocking its channel) before it drops.
    pub fault_grace: Option<Duration>,
    /// Multicast TTL / unicast hop limit for udp outputs.
    pub ttl: Option<u32>,
    /// UDP segmentation offload for udp outputs: runs of equal-sized datagrams leave in one
    /// send (default on; `gso=off` sends one datagram per send).
    pub gso: Option<bool>,
    /// Zero-copy sends (IORING_OP_SEND_ZC) on tcp and tcp-listen outputs: the kernel sends
    /// from the pool buffer itself and says when it is done with it (default off).
    pub zerocopy: Option<bool>,
    /// TCP keepalive idle seconds of tcp and tcp-listen endpoints' connections (0: off;
    /// default [`DEFAULT_IDLE_SECS`]); see [`crate::config::keepalive`].
    pub keepalive: Option<u32>,
    /// An input silent this long is redialed, disconnected or marked idle (`idle_timeout=`;
    /// none by default); see [`crate::config::idle`].
    pub idle_timeout: Option<Duration>,
    /// A serial port's line settings (filled in with the defaults on every `serial://` URL).
    pub serial: Option<SerialParams>,
    /// The spool options as written (`spool=`, `spool_max=`, ...; see [`crate::config::spool`]).
    pub spool: Option<SpoolOpts>,
    /// An MQTT output's topic and options (present on every `mqtt://` URL).
    pub mqtt: Option<MqttParams>,
}

/// A parsed endpoint URL with its options.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub target: Target,
    pub opts: Options,
}

/// Whether an endpoint is a channel's input or one of its outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Input,
    Output,
}

impl Endpoint {
    /// Parses a URL with options, accepting any known option (see [`Endpoint::parse_for`]).
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let mut words = s.split_ascii_whitespace();
        let url = words.next().ok_or("empty endpoint URL")?;
        let (scheme_s, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{} is not a URL (e.g. udp://0.0.0.0:5000)", quote(url)))?;
        let scheme = match scheme_s {
            "udp" => Scheme::Udp,
            "tcp" => Scheme::Tcp,
            "tcp-listen" => Scheme::TcpListen,
            "unix" => Scheme::Unix,
            "unix-listen" => Scheme::UnixListen,
            "file" => Scheme::File,
            "serial" => Scheme::Serial,
            "mqtt" => Scheme::Mqtt,
            other => {
                return Err(format!(
                "unknown scheme {} (udp, tcp, tcp-listen, unix, unix-listen, file, serial, mqtt)",
                quote(&format!("{other}://"))
            ))
            }
        };
        let mut mqtt_params = None;
        let target = match scheme {
            Scheme::Mqtt => {
                let (host, port, m) =
                    mqtt::parse_target(rest).map_err(|e| format!("{}: {e}", quote(url)))?;
                mqtt_params = Some(m);
                Target::Inet { host, port }
            }
            Scheme::Unix | Scheme::UnixListen | Scheme::File | Scheme::Serial => {
                if !rest.starts_with('/') {
                    return Err(format!(
                        "{} needs an absolute path ({}:///path)",
                        quote(url),
                        scheme.name()
                    ));
                }
                if rest.len() > 1 && rest.ends_with('/') {
                    return Err(format!("{} names a directory, not a file", quote(url)));
                }
                if matches!(scheme, Scheme::Unix | Scheme::UnixListen) && rest.len() > 107 {
                    return Err(format!(
                        "{}: a Unix socket path is at most 107 bytes",
                        quote(url)
                    ));
                }
                Target::Path(PathBuf::from(rest))
            }
            _ => parse_host_port(rest).map_err(|e| format!("{}: {e}", quote(url)))?,
        };
        let mut opts = Options {
            mqtt: mqtt_params,
            ..Options::default()
        };
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("option {} must be key=value", quote(w)))?;
            if v.is_empty() {
                return Err(format!("option {} has no value", quote(k)));
            }
            let bad = |e: String| format!("option {k}: {e}");
            match k {
                "group" => {
                    let ip: IpAddr = v
                        .parse()
                        .map_err(|_| bad(format!("{} is not an IP address", quote(v))))?;
                    if !ip.is_multicast() {
                        return Err(bad(format!("{} is not a multicast address", quote(v))));
                    }
                    opts.group = Some(ip);
                }
                "iface" => opts.iface = Some(v.to_string()),
                "rcvbuf" => opts.rcvbuf = Some(parse_size(v).map_err(bad)?),
                "sndbuf" => opts.sndbuf = Some(parse_size(v).map_err(bad)?),
                "allow" => {
                    for c in v.split(',') {
                        opts.allow.push(Cidr::parse(c).map_err(bad)?);
                    }
                }
                "max_clients" => {
                    opts.max_clients = Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|&n| (1..=65000).contains(&n))
                            .ok_or_else(|| {
                                bad(format!("{} is not a count in 1..=65000", quote(v)))
                            })?,
                    )
                }
                "max_backlog" => {
                    let n = parse_size(v).map_err(bad)?;
                    if n == 0 {
                        return Err(bad("must be more than 0".into()));
                    }
                    opts.max_backlog = Some(n)
                }
                "on_slow" => {
                    opts.on_slow = Some(match v {
                        "disconnect" => OnSlow::Disconnect,
                        "drop" => OnSlow::Drop,
                        "block" => OnSlow::Block,
                        _ => {
                            return Err(bad(format!(
                                "{} is not one of disconnect, drop, block",
                                quote(v)
                            )))
                        }
                    })
                }
                "gso" => {
                    opts.gso = Some(match v {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad(format!("{} is not one of on, off", quote(v)))),
                    })
                }
                "zerocopy" => {
                    opts.zerocopy = Some(match v {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad(format!("{} is not one of on, off", quote(v)))),
                    })
                }
                "on_fin" => {
                    opts.on_fin = Some(match v {
                        "redial" => OnFin::Redial,
                        "keep" => OnFin::Keep,
                        "close" => OnFin::Close,
                        _ => {
                            return Err(bad(format!(
                                "{} is not one of redial, close, keep",
                                quote(v)
                            )))
                        }
                    })
                }
                "rotate" => {
                    let n = parse_size(v).map_err(bad)?;
                    if n < 4096 {
                        return Err(bad("rotation size must be at least 4KiB".into()));
                    }
                    opts.rotate = Some(n)
                }
                "keep" => {
                    opts.keep = Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|&n| (1..=1000).contains(&n))
                            .ok_or_else(|| {
                                bad(format!("{} is not a count in 1..=1000", quote(v)))
                            })?,
                    )
                }
                "fault_grace" => {
                    let d = parse_duration(v).map_err(bad)?;
                    if d > MAX_FAULT_GRACE {
                        return Err(bad(format!("{} is longer than a day", quote(v))));
                    }
                    opts.fault_grace = Some(d)
                }
                "keepalive" => opts.keepalive = Some(parse_keepalive(v).map_err(bad)?),
                "idle_timeout" => opts.idle_timeout = Some(parse_idle_timeout(v).map_err(bad)?),
                k if spool::KEYS.contains(&k) => opts
                    .spool
                    .get_or_insert_with(SpoolOpts::default)
                    .set(k, v)
                    .map_err(bad)?,
                k if serial::KEYS.contains(&k) => opts
                    .serial
                    .get_or_insert_with(SerialParams::default)
                    .set(k, v)
                    .map_err(bad)?,
                k if mqtt::KEYS.contains(&k) => match opts.mqtt.as_mut() {
                    Some(m) => m.set(k, v).map_err(bad)?,
                    None => return Err(format!("option {k} applies to mqtt:// outputs only")),
                },
                "ttl" => {
                    opts.ttl = Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|&n| n <= 255)
                            .ok_or_else(|| bad(format!("{} is not a TTL in 0..=255", quote(v))))?,
                    )
                }
                _ => return Err(format!("unknown option {}", quote(k))),
            }
        }
        if scheme == Scheme::Serial {
            opts.serial.get_or_insert_with(SerialParams::default);
        }
        Ok(Endpoint {
            scheme,
            target,
            opts,
        })
    }

    /// Parses and checks that every option makes sense for `role` and this scheme.
    pub fn parse_for(s: &str, role: Role) -> Result<Endpoint, String> {
        let ep = Endpoint::parse(s)?;
        let o = &ep.opts;
        let sc = ep.scheme;
        let mut allowed: Vec<&str> = Vec::new();
        match (role, sc) {
            (Role::Input, Scheme::File) => return Err(
                "file:// is an output; inputs are udp, tcp, tcp-listen, unix, unix-listen, serial"
                    .into(),
            ),
            (Role::Output, Scheme::Serial) => {
                return Err(
                    "serial:// is an input (ringrelay gen can write to a serial port)".into(),
                )
            }
            (Role::Input, Scheme::Serial) => {}
            (Role::Input, Scheme::Mqtt) => {
                return Err(
                    "mqtt:// is an output (the relay publishes; it does not subscribe)".into(),
                )
            }
            (Role::Output, Scheme::Mqtt) => {
                allowed.extend(["max_backlog", "on_slow", "sndbuf", "keepalive"])
            }
            (Role::Input, Scheme::Udp) => allowed.extend(["group", "iface", "rcvbuf"]),
            (Role::Input, Scheme::TcpListen) => allowed.extend(["allow", "rcvbuf", "keepalive"]),
            (Role::Input, Scheme::Tcp) => allowed.extend(["rcvbuf", "keepalive"]),
            (Role::Input, _) => allowed.extend(["rcvbuf"]),
            (Role::Output, Scheme::Udp) => {
                allowed.extend(["ttl", "iface", "sndbuf", "on_slow", "max_backlog", "gso"])
            }
            (Role::Output, Scheme::TcpListen | Scheme::UnixListen) => {
                allowed.extend([
                    "max_clients",
                    "allow",
                    "max_backlog",
                    "on_slow",
                    "sndbuf",
                    "on_fin",
                ]);
                if sc == Scheme::TcpListen {
                    allowed.extend(["zerocopy", "keepalive"]);
                }
            }
            (Role::Output, Scheme::File) => {
                allowed.extend(["rotate", "keep", "max_backlog", "on_slow", "fault_grace"])
            }
            (Role::Output, _) => {
                allowed.extend(["max_backlog", "on_slow", "on_fin", "sndbuf"]);
                if sc == Scheme::Tcp {
                    allowed.extend(["zerocopy", "keepalive"]);
                }
            }
        }
        if sc == Scheme::UnixListen {
            allowed.retain(|k| *k != "allow");
        }
        if o.idle_timeout.is_some() && role == Role::Output {
            return Err("idle_timeout watches an input; outputs have on_slow and keepalive".into());
        }
        if o.spool.is_some() {
            spool::check_placement(role == Role::Input, sc)?;
        }
        if sc != Scheme::Serial && o.serial.is_some() {
            return Err(format!(
                "options {} apply to serial:// inputs only",
                serial::KEYS.join(", ")
            ));
        }
        let set: [(&str, bool); 16] = [
            ("group", o.group.is_some()),
            ("iface", o.iface.is_some()),
            ("rcvbuf", o.rcvbuf.is_some()),
            ("sndbuf", o.sndbuf.is_some()),
            ("allow", !o.allow.is_empty()),
            ("max_clients", o.max_clients.is_some()),
            ("max_backlog", o.max_backlog.is_some()),
            ("on_slow", o.on_slow.is_some()),
            ("on_fin", o.on_fin.is_some()),
            ("rotate", o.rotate.is_some()),
            ("keep", o.keep.is_some()),
            ("fault_grace", o.fault_grace.is_some()),
            ("ttl", o.ttl.is_some()),
            ("gso", o.gso.is_some()),
            ("zerocopy", o.zerocopy.is_some()),
            ("keepalive", o.keepalive.is_some()),
        ];
        for (k, present) in set {
            if present && !allowed.contains(&k) {
                let role_s = match role {
                    Role::Input => "an input",
                    Role::Output => "an output",
                };
                return Err(format!(
                    "option {} does not apply to {} {role_s}",
                    quote(k),
                    sc.name()
                ));
            }
        }
        if role == Role::Output && sc == Scheme::Udp && o.on_slow.is_some_and(|m| m != OnSlow::Drop)
        {
            return Err("udp outputs always drop when slow (on_slow=drop)".into());
        }
        match (o.on_fin, sc.is_listen()) {
            (Some(OnFin::Redial), true) => {
                return Err(
                    "on_fin=redial is for outputs that dial; a subscriber's FIN: close or keep"
                        .into(),
                )
            }
            (Some(OnFin::Close), false) => {
                return Err(
                    "on_fin=close is for listening outputs; a collector's FIN: redial or keep"
                        .into(),
                )
            }
            _ => {}
        }
        if sc == Scheme::Udp && role == Role::Input && o.iface.is_some() && o.group.is_none() {
            return Err("iface= needs group= on a udp input".into());
        }
        if let Some(m) = &o.mqtt {
            m.check()?;
            if o.on_slow == Some(OnSlow::Disconnect) {
                return Err("an mqtt:// output keeps its session: on_slow=block or drop".into());
            }
            if o.keepalive.is_some_and(|k| k > 65_535) {
                return Err("keepalive on an mqtt:// output is at most 65535s".into());
            }
        }
        if let Target::Inet { port: 0, .. } = ep.target {
            if !(sc.is_listen() || sc == Scheme::Udp || role == Role::Output && sc == Scheme::Tcp) {
                return Err("port 0 is only valid for listening or udp input endpoints".into());
            }
            if role == Role::Output && matches!(sc, Scheme::Udp | Scheme::Tcp) {
                return Err("an output needs a destination port other than 0".into());
            }
            if role == Role::Input && sc == Scheme::Tcp {
                return Err("tcp:// input dials a producer: it needs a port other than 0".into());
            }
        }
        Ok(ep)
    }

    /// The default slow-output policy for this output scheme.
    pub fn default_on_slow(&self) -> OnSlow {
        match self.scheme {
            Scheme::Udp => OnSlow::Drop,
            Scheme::TcpListen | Scheme::UnixListen => OnSlow::Disconnect,
            Scheme::Tcp | Scheme::Unix | Scheme::File | Scheme::Serial | Scheme::Mqtt => {
                OnSlow::Block
            }
        }
    }

    /// The keepalive its TCP connections get: `keepalive=`, or the default on `tcp://` and
    /// `tcp-listen://`; none on other schemes or with `keepalive=off`.
    pub fn keepalive(&self) -> Option<Keepalive> {
        if !matches!(self.scheme, Scheme::Tcp | Scheme::TcpListen) {
            return None;
        }
        match self.opts.keepalive.unwrap_or(DEFAULT_IDLE_SECS) {
            0 => None,
            idle => Some(Keepalive { idle }),
        }
    }

    /// The URL without options.
    pub fn url(&self) -> String {
        match &self.opts.mqtt {
            Some(m) => format!("mqtt://{}/{}", self.target, m.topic),
            None => format!("{}://{}", self.scheme.name(), self.target),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())?;
        let o = &self.opts;
        if let Some(g) = o.group {
            write!(f, " group={g}")?;
        }
        if let Some(i) = &o.iface {
            write!(f, " iface={i}")?;
        }
        if let Some(n) = o.rcvbuf {
            write!(f, " rcvbuf={n}")?;
        }
        if let Some(n) = o.sndbuf {
            write!(f, " sndbuf={n}")?;
        }
        if !o.allow.is_empty() {
            let v: Vec<String> = o.allow.iter().map(|c| c.to_string()).collect();
            write!(f, " allow={}", v.join(","))?;
        }
        if let Some(n) = o.max_clients {
            write!(f, " max_clients={n}")?;
        }
        if let Some(n) = o.max_backlog {
            write!(f, " max_backlog={n}")?;
        }
        if let Some(m) = o.on_slow {
            write!(f, " on_slow={}", m.name())?;
        }
        if let Some(m) = o.on_fin {
            write!(f, " on_fin={}", m.name())?;
        }
        if let Some(n) = o.rotate {
            write!(f, " rotate={n}")?;
        }
        if let Some(n) = o.keep {
            write!(f, " keep={n}")?;
        }
        if let Some(d) = o.fault_grace {
            write!(f, " fault_grace={}", format_duration(d))?;
        }
        if let Some(n) = o.ttl {
            write!(f, " ttl={n}")?;
        }
        if let Some(g) = o.gso {
            write!(f, " gso={}", if g { "on" } else { "off" })?;
        }
        if let Some(z) = o.zerocopy {
            write!(f, " zerocopy={}", if z { "on" } else { "off" })?;
        }
        if let Some(k) = o.keepalive {
            write!(f, " keepalive={}", format_keepalive(k))?;
        }
        if let Some(d) = o.idle_timeout {
            write!(f, " idle_timeout={}", format_idle_timeout(d))?;
        }
        if let Some(s) = &o.serial {
            write!(f, " {s}")?;
        }
        if let Some(s) = &o.spool {
            write!(f, "{s}")?;
        }
        if let Some(m) = o
            .mqtt
            .as_ref()
            .map(|m| m.to_string())
            .filter(|m| !m.is_empty())
        {
            write!(f, " {m}")?;
        }
        Ok(())
    }
}

fn parse_host_port(s: &str) -> Result<Target, String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        let p = p
            .strip_prefix(':')
            .ok_or("IPv6 address needs a port: [::1]:5000")?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{} is not an IPv6 address", quote(h)));
        }
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or("needs HOST:PORT")?;
        if h.contains(':') {
            return Err("IPv6 addresses go in brackets: [::1]:5000".into());
        }
        (h, p)
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'))
    {
        return Err(format!("{} is not a host name or address", quote(host)));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{} is not a port number (0-65535)", quote(port)))?;
    Ok(Target::Inet {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
#[path = "url_tests.rs"]
mod tests;
