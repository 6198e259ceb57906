//! Value forms shared by the `[global]` and `[channel]` keys: on/off switches and whole
//! numbers within a range, each with the message its key reports when the value is wrong.

use crate::config::parse::quote;

pub(super) fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => Err(format!("{} is not on or off", quote(v))),
    }
}

pub(super) fn parse_u32_in(v: &str, lo: u32, hi: u32) -> Result<u32, String> {
    v.parse::<u32>()
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| format!("{} is not a whole number in {lo}..={hi}", quote(v)))
}
