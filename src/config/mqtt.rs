//! The `mqtt://HOST[:PORT]/TOPIC` output's URL and options: `qos`, `client_id`, `keepalive`,
//! `username`, `password_file`, `clean`, `retain`, `max_inflight`, `max_message`.
//!
//! Owns: their syntax and defaults ([`MqttParams`]), the topic rules checked by `check`
//! (through [`crate::engine::mqtt::check_topic`]: no `+`, `#` or NUL), the `{channel}` place
//! holder, and reading a `password_file` ([`read_password`], called by the channel parser at
//! start and at reload: the engine never opens it). Never connects to anything.

use crate::config::parse::quote;
use crate::config::units::parse_size;
use crate::engine::mqtt::{check_client_id, check_topic};
use std::fmt;
use std::path::{Path, PathBuf};

/// The port of `mqtt://HOST/TOPIC`.
pub const DEFAULT_PORT: u16 = 1883;
/// MQTT keepalive when the URL does not say (`keepalive=`; 0 turns it off).
pub const DEFAULT_KEEPALIVE_SECS: u32 = 30;
/// Unacknowledged QoS 1 messages at most (`max_inflight=`).
pub const DEFAULT_MAX_INFLIGHT: u16 = 64;
/// Largest message cut from an unframed byte stream (`max_message=`).
pub const DEFAULT_MAX_MESSAGE: u32 = 64 << 10;
/// Longest topic accepted: every PUBLISH header of a write is built in one pool buffer.
pub const MAX_TOPIC: usize = 1024;
/// The options only `mqtt://` outputs take (`keepalive` is shared with TCP endpoints: on an
/// MQTT output it is the MQTT keepalive).
pub const KEYS: [&str; 8] = [
    "qos",
    "client_id",
    "username",
    "password_file",
    "clean",
    "retain",
    "max_inflight",
    "max_message",
];

/// An MQTT output's settings. `password` is filled in from `password_file` by the channel
/// parser; it is never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MqttParams {
    /// The topic to publish to (`{channel}` replaced once the channel is known).
    pub topic: String,
    /// 0 (at most once, the default) or 1 (at least once).
    pub qos: u8,
    /// `None`: `ringrelay-<channel>`.
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password: Option<Vec<u8>>,
    /// Clean session (default on); `clean=off` keeps the broker's session across connections.
    pub clean: bool,
    pub retain: bool,
    pub max_inflight: u16,
    pub max_message: u32,
}

impl fmt::Debug for MqttParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MqttParams({self})")
    }
}

impl MqttParams {
    fn new(topic: String) -> MqttParams {
        MqttParams {
            topic,
            qos: 0,
            client_id: None,
            username: None,
            password_file: None,
            password: None,
            clean: true,
            retain: false,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_message: DEFAULT_MAX_MESSAGE,
        }
    }

    /// Sets option `k` (one of [`KEYS`]) from `v`.
    pub fn set(&mut self, k: &str, v: &str) -> Result<(), String> {
        let on_off = |v: &str| match v {
            "on" => Ok(true),
            "off" => Ok(false),
            _ => Err(format!("{} is not one of on, off", quote(v))),
        };
        match k {
            "qos" => {
                self.qos = match v {
                    "0" => 0,
                    "1" => 1,
                    _ => return Err(format!("{} is not 0 or 1 (QoS 2 is not offered)", quote(v))),
                }
            }
            "client_id" => {
                check_client_id(v)?;
                self.client_id = Some(v.to_string());
            }
            "username" => self.username = Some(v.to_string()),
            "password_file" => {
                if !v.starts_with('/') {
                    return Err(format!("{} is not an absolute path", quote(v)));
                }
                self.password_file = Some(PathBuf::from(v));
            }
            "clean" => self.clean = on_off(v)?,
            "retain" => self.retain = on_off(v)?,
            "max_inflight" => {
                self.max_inflight = v
                    .parse::<u16>()
                    .ok()
                    .filter(|&n| (1..=65000).contains(&n))
                    .ok_or_else(|| format!("{} is not a count in 1..=65000", quote(v)))?
            }
            "max_message" => {
                let n = parse_size(v)?;
                if !(16..=(256 << 20)).contains(&n) {
                    return Err(format!("{} is outside 16B..=256MiB", quote(v)));
                }
                self.max_message = n as u32;
            }
            _ => return Err(format!("unknown option {}", quote(k))),
        }
        Ok(())
    }

    /// The topic with `{channel}` replaced by `channel`, and the client id defaulted:
    /// `ringrelay-CHANNEL` for its first MQTT output (`nth` 0), `ringrelay-CHANNEL-2` for
    /// the second, and so on (a broker drops the older of two connections with one id).
    pub fn for_channel(&mut self, channel: &str, nth: usize) {
        self.topic = self.topic.replace("{channel}", channel);
        if self.client_id.is_none() {
            self.client_id = Some(match nth {
                0 => format!("ringrelay-{channel}"),
                n => format!("ringrelay-{channel}-{}", n + 1),
            });
        }
    }

    /// Checks the settings together (after every option was set).
    pub fn check(&self) -> Result<(), String> {
        if self.password_file.is_some() && self.username.is_none() {
            return Err(
                "password_file needs username= (MQTT 3.1.1 sends no password alone)".into(),
            );
        }
        if self.client_id.as_deref() == Some("") && !self.clean {
            return Err(
                "an empty client_id needs clean=on (the broker picks one per connection)".into(),
            );
        }
        Ok(())
    }
}

impl fmt::Display for MqttParams {
    /// The options that differ from the defaults (the topic is part of the URL).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut put = |f: &mut fmt::Formatter<'_>, s: String| -> fmt::Result {
            let r = write!(f, "{sep}{s}");
            sep = " ";
            r
        };
        if self.qos != 0 {
            put(f, format!("qos={}", self.qos))?;
        }
        if let Some(c) = &self.client_id {
            put(f, format!("client_id={c}"))?;
        }
        if let Some(u) = &self.username {
            put(f, format!("username={u}"))?;
        }
        if let Some(p) = &self.password_file {
            put(f, format!("password_file={}", p.display()))?;
        }
        if !self.clean {
            put(f, "clean=off".into())?;
        }
        if self.retain {
            put(f, "retain=on".into())?;
        }
        if self.max_inflight != DEFAULT_MAX_INFLIGHT {
            put(f, format!("max_inflight={}", self.max_inflight))?;
        }
        if self.max_message != DEFAULT_MAX_MESSAGE {
            put(f, format!("max_message={}", self.max_message))?;
        }
        Ok(())
    }
}

/// Splits what follows `mqtt://` into the broker's host and port (default
/// [`DEFAULT_PORT`]) and the topic, which is checked with `{channel}` standing for a name.
pub fn parse_target(rest: &str) -> Result<(String, u16, MqttParams), String> {
    let (hostport, topic) = rest
        .split_once('/')
        .ok_or("needs a topic: mqtt://HOST[:PORT]/TOPIC")?;
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        let (h, p) = r.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{} is not an IPv6 address", quote(h)));
        }
        let port = match p {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or("IPv6 address and port: [::1]:1883")?,
            ),
        };
        (h, port)
    } else {
        let (h, p) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        if h.contains(':') {
            return Err("IPv6 addresses go in brackets: [::1]:1883".into());
        }
        if !h
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(format!("{} is not a host name or address", quote(h)));
        }
        (h, p)
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{} is not a port number (1-65535)", quote(p)))?,
    };
    if topic.len() > MAX_TOPIC {
        return Err(format!(
            "the topic is {} bytes, over {MAX_TOPIC}",
            topic.len()
        ));
    }
    check_topic(&topic.replace("{channel}", "c"))?;
    Ok((host.to_string(), port, MqttParams::new(topic.to_string())))
}

/// Reads a `password_file`: its first line (without the line end) is the password. Returns
/// it and a warning when others than the owner may read the file.
pub fn read_password(path: &Path) -> Result<(Vec<u8>, Option<String>), String> {
    use std::os::unix::fs::PermissionsExt;
    let bytes = std::fs::read(path)
        .map_err(|e| format!("password_file {}: cannot read it: {e}", path.display()))?;
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
    if line.len() > 65_535 {
        return Err(format!(
            "password_file {}: over 65535 bytes",
            path.display()
        ));
    }
    let warn = std::fs::metadata(path)
        .ok()
        .filter(|m| m.permissions().mode() & 0o044 != 0)
        .map(|m| {
            format!(
                "password_file {} is readable by others (mode {:o}): chmod 600 it",
                path.display(),
                m.permissions().mode() & 0o777
            )
        });
    Ok((line, warn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_defaults() {
        let (h, p, m) = parse_target("broker.lan/site/{channel}/raw").unwrap();
        assert_eq!((h.as_str(), p), ("broker.lan", 1883));
        assert_eq!(m.topic, "site/{channel}/raw");
        assert_eq!((m.qos, m.clean, m.retain), (0, true, false));
        let (h, p, _) = parse_target("[::1]:1884/t").unwrap();
        assert_eq!((h.as_str(), p), ("::1", 1884));
        for bad in [
            "h",
            "h/",
            "h/a/+",
            "h/#",
            ":1/t",
            "h:0/t",
            "h:x/t",
            "h/$SYS/x",
            // Hosts as the other URLs take them: a name or address, IPv6 in brackets.
            "a:b:1/t",
            "[x]:1/t",
            "[::1]1/t",
            "h t/x",
            "\u{10}>t[dp]i0:5.0.0.0:500//0",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options() {
        let mut m = parse_target("h/t").unwrap().2;
        m.set("qos", "1").unwrap();
        m.set("clean", "off").unwrap();
        m.set("max_message", "1KiB").unwrap();
        assert!(m.set("qos", "2").is_err());
        assert!(m.set("max_inflight", "0").is_err());
        assert!(m.set("password_file", "rel").is_err());
        m.set("password_file", "/p").unwrap();
        assert!(m.check().is_err(), "a password needs a user name");
        m.set("username", "u").unwrap();
        m.for_channel("gps", 0);
        assert!(m.check().is_ok());
        assert_eq!(m.client_id.as_deref(), Some("ringrelay-gps"));
        assert_eq!(
            m.to_string(),
            "qos=1 client_id=ringrelay-gps username=u password_file=/p clean=off max_message=1024"
        );
    }
}
