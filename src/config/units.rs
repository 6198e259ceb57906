//! Sizes and durations as users write them in config files and on the command line
//! (`64KiB`, `8MiB`, `1G`, `500ms`, `30s`, `2m`). Pure: no I/O.

use crate::config::parse::quote;
use std::time::Duration;

/// Parses a byte size: a whole number with an optional unit `B`, `K`/`KB`/`KiB`, `M`/`MiB`,
/// `G`/`GiB`, `T`/`TiB` (all binary: 1K = 1024). Case-insensitive; no spaces inside.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "{} is not a size (e.g. 64KiB, 8MiB, 4096)",
            quote(s)
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{} is too large a size", quote(s)))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{} has an unknown size unit {} (B, KiB, MiB, GiB, TiB)",
                quote(s),
                quote(unit)
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{} is too large a size", quote(s)))
}

/// Parses a duration: a whole number with a unit `ns`, `us`, `ms`, `s`, `m`, `h`, `d`.
/// A bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "{} is not a duration (e.g. 500ms, 30s, 2m)",
            quote(s)
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{} is too long a duration", quote(s)))?;
    let d = match unit {
        "ns" => Some(Duration::from_nanos(n)),
        "us" => Some(Duration::from_micros(n)),
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" | "min" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        "d" => n.checked_mul(86400).map(Duration::from_secs),
        _ => {
            return Err(format!(
                "{} has an unknown time unit {} (ns, us, ms, s, m, h, d)",
                quote(s),
                quote(unit)
            ))
        }
    };
    d.ok_or_else(|| format!("{} is too long a duration", quote(s)))
}

/// Formats a byte count for humans (`1.5 MiB`).
pub fn format_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else if n % (1u64 << (10 * i)) == 0 {
        format!("{}{}", n >> (10 * i), UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Formats a duration the way the config file accepts it back.
pub fn format_duration(d: Duration) -> String {
    // Exact, in the largest unit that is: what `check` prints must parse to the same value.
    let ns = d.as_nanos();
    if ns % 1_000_000_000 == 0 {
        format!("{}s", ns / 1_000_000_000)
    } else if ns % 1_000_000 == 0 {
        format!("{}ms", ns / 1_000_000)
    } else if ns % 1000 == 0 {
        format!("{}us", ns / 1000)
    } else {
        format!("{ns}ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_exactly_and_parse_back() {
        for (text, shown) in [
            ("454us", "454us"),
            ("1500ms", "1500ms"),
            ("2000ms", "2s"),
            ("7ns", "7ns"),
            ("3000us", "3ms"),
            ("2m", "120s"),
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), shown, "{text}");
            assert_eq!(parse_duration(shown).unwrap(), d, "{text}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert!(parse_size("").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("16777216T").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn formatting_round_trips() {
        for n in [0u64, 1, 1023, 1024, 65536, 8 << 20, 3 << 30] {
            let s = format_size(n).replace(' ', "");
            if !s.contains('.') {
                assert_eq!(parse_size(&s).unwrap(), n, "{s}");
            }
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
    }
}
