//! The line settings of a `serial://` input (and of `ringrelay gen` writing to a serial
//! port): `baud`, `databits`, `parity`, `stopbits` and `flow`, their defaults, and the rates a
//! Linux tty takes.
//!
//! Owns: the vocabulary and validation of these options and their printed form (every
//! effective value, so that `ringrelay check` shows what the port is set to and the line
//! parses back to itself), and the warning `ringrelay check` gives for a path that is no
//! character device yet ([`path_warning`]: a stat, no more). It never opens a device: the
//! driver applies the settings with termios (`src/driver/serial.rs`).
//!
//! Rates: only the standard Linux rates (the `B*` constants of termios, 50 to 4000000 baud).
//! A rate outside them is a FILE:LINE error that names the nearest valid rates, rather than
//! a custom rate set through `BOTHER`: USB-serial chips round custom rates silently to what
//! their divider can make, so a mistyped rate (11520 for 115200) would run and read garbage;
//! every GPS, AIS receiver, weather station and seismometer speaks a standard rate.

use crate::config::parse::quote;
use std::fmt;
use std::path::Path;

/// The rates a Linux tty takes through termios (`B50` .. `B4000000`; `B134` is 134.5 baud).
pub const BAUD_RATES: [u32; 30] = [
    50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600,
    115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000,
    3000000, 3500000, 4000000,
];

/// `baud` when the URL does not say.
pub const DEFAULT_BAUD: u32 = 9600;

/// The option names a serial URL takes.
pub const KEYS: [&str; 5] = ["baud", "databits", "parity", "stopbits", "flow"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Parity {
    None,
    Even,
    Odd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// No flow control (and CLOCAL: the modem lines are ignored).
    None,
    /// RTS/CTS hardware handshake (CRTSCTS).
    RtsCts,
}

/// The effective settings of a serial port: every field has its value (defaults filled in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SerialParams {
    /// One of [`BAUD_RATES`].
    pub baud: u32,
    /// 5 to 8.
    pub databits: u8,
    pub parity: Parity,
    /// 1 or 2.
    pub stopbits: u8,
    pub flow: Flow,
}

impl Default for SerialParams {
    fn default() -> SerialParams {
        SerialParams {
            baud: DEFAULT_BAUD,
            databits: 8,
            parity: Parity::None,
            stopbits: 1,
            flow: Flow::None,
        }
    }
}

/// The valid rates nearest to `n`: the one below and the one above (one when `n` is outside
/// the list).
fn nearest(n: u64) -> Vec<u32> {
    let below = BAUD_RATES.iter().rev().find(|&&r| u64::from(r) < n);
    let above = BAUD_RATES.iter().find(|&&r| u64::from(r) > n);
    below.into_iter().chain(above).copied().collect()
}

/// Parses a `baud` value: a rate in [`BAUD_RATES`].
pub fn parse_baud(v: &str) -> Result<u32, String> {
    let n: u64 = v
        .parse()
        .map_err(|_| format!("{} is not a rate in baud (e.g. 9600)", quote(v)))?;
    if BAUD_RATES.iter().any(|&r| u64::from(r) == n) {
        return Ok(n as u32);
    }
    let near: Vec<String> = nearest(n).iter().map(|r| r.to_string()).collect();
    let why = if !(50..=4_000_000).contains(&n) {
        "outside 50..=4000000"
    } else {
        "not a standard rate a Linux tty takes"
    };
    Err(format!(
        "{} is {why}; nearest: {} (the standard rates are {})",
        quote(v),
        near.join(" or "),
        BAUD_RATES.map(|r| r.to_string()).join(", ")
    ))
}

impl SerialParams {
    /// Sets option `k` (one of [`KEYS`]) from `v`.
    pub fn set(&mut self, k: &str, v: &str) -> Result<(), String> {
        match k {
            "baud" => self.baud = parse_baud(v)?,
            "databits" => {
                self.databits = match v {
                    "5" => 5,
                    "6" => 6,
                    "7" => 7,
                    "8" => 8,
                    _ => return Err(format!("{} is not one of 5, 6, 7, 8", quote(v))),
                }
            }
            "parity" => {
                self.parity = match v {
                    "none" => Parity::None,
                    "even" => Parity::Even,
                    "odd" => Parity::Odd,
                    _ => return Err(format!("{} is not one of none, even, odd", quote(v))),
                }
            }
            "stopbits" => {
                self.stopbits = match v {
                    "1" => 1,
                    "2" => 2,
                    _ => return Err(format!("{} is not one of 1, 2", quote(v))),
                }
            }
            "flow" => {
                self.flow = match v {
                    "none" => Flow::None,
                    "rtscts" => Flow::RtsCts,
                    _ => return Err(format!("{} is not one of none, rtscts", quote(v))),
                }
            }
            _ => return Err(format!("unknown serial option {}", quote(k))),
        }
        Ok(())
    }
}

/// What `ringrelay check` says about a serial port's path that is not a character device now:
/// a warning, not an error (the relay opens it when it appears, and a USB adapter may simply
/// not be plugged in yet). `None` for a character device.
pub fn path_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let what = match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_char_device() => return None,
        Ok(_) => "is not a character device".to_string(),
        Err(e) => match e.raw_os_error() {
            Some(n) => format!(
                "is not there now ({})",
                nix::errno::Errno::from_raw(n).desc()
            ),
            None => format!("is not there now ({e})"),
        },
    };
    Some(format!(
        "serial port {} {what}; the relay retries with backoff until it can open it",
        path.display()
    ))
}

impl fmt::Display for SerialParams {
    /// Every setting, defaults included: `baud=9600 databits=8 parity=none stopbits=1
    /// flow=none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parity = match self.parity {
            Parity::None => "none",
            Parity::Even => "even",
            Parity::Odd => "odd",
        };
        let flow = match self.flow {
            Flow::None => "none",
            Flow::RtsCts => "rtscts",
        };
        write!(
            f,
            "baud={} databits={} parity={parity} stopbits={} flow={flow}",
            self.baud, self.databits, self.stopbits
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_standard_rate_and_nothing_else() {
        for r in BAUD_RATES {
            assert_eq!(parse_baud(&r.to_string()), Ok(r));
        }
        assert!(BAUD_RATES.windows(2).all(|w| w[0] < w[1]));
        let e = parse_baud("4801").unwrap_err();
        assert!(e.contains("nearest: 4800 or 9600"), "{e}");
        assert!(e.contains("not a standard rate"), "{e}");
        let e = parse_baud("11520").unwrap_err();
        assert!(e.contains("9600 or 19200"), "{e}");
        let e = parse_baud("49").unwrap_err();
        assert!(e.contains("outside") && e.contains("nearest: 50 ("), "{e}");
        let e = parse_baud("5000000").unwrap_err();
        assert!(e.contains("nearest: 4000000 ("), "{e}");
        for bad in ["", "fast", "-9600", "9600.0", "0"] {
            assert!(parse_baud(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_set_and_print_back() {
        let mut p = SerialParams::default();
        assert_eq!(
            p.to_string(),
            "baud=9600 databits=8 parity=none stopbits=1 flow=none"
        );
        for (k, v) in [
            ("baud", "115200"),
            ("databits", "7"),
            ("parity", "even"),
            ("stopbits", "2"),
            ("flow", "rtscts"),
        ] {
            p.set(k, v).unwrap();
        }
        assert_eq!(
            p.to_string(),
            "baud=115200 databits=7 parity=even stopbits=2 flow=rtscts"
        );
        for (k, v) in [
            ("databits", "9"),
            ("databits", "4"),
            ("parity", "mark"),
            ("stopbits", "1.5"),
            ("flow", "xonxoff"),
            ("speed", "9600"),
        ] {
            assert!(p.set(k, v).is_err(), "{k}={v}");
        }
    }
}
