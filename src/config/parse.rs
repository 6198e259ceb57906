//! The line and section layer: reads the text line by line into a `[global]` section and
//! `[channel NAME]` sections, rejects unknown and repeated keys (suggesting a near name), and
//! hands each section's keys to the `global` and `channel` validators. Owns [`ConfigError`]
//! (`FILE:LINE: key: message`), [`quote`] (how every value appears in a message), [`load`],
//! [`parse_str`] and [`from_cli`]: every error of one pass is collected and sorted by line.

use crate::config::channel::{parse_channel, CHANNEL_KEYS};
use crate::config::conflicts::check_conflicts;
use crate::config::global::{parse_global, GLOBAL_KEYS};
use crate::config::read::read_text;
use crate::config::Config;
use std::fmt;

/// How many characters of a value a message shows.
const SHOWN_CHARS: usize = 80;

/// A value as every error message shows it: in single quotes, and past [`SHOWN_CHARS`]
/// characters cut with an ellipsis and followed by its whole length (`'aaaa…' (1048576
/// bytes)`), so that one huge value cannot flood the terminal or the log.
pub(crate) fn quote(v: &str) -> String {
    match v.char_indices().nth(SHOWN_CHARS) {
        None => format!("'{v}'"),
        Some((cut, _)) => format!("'{}…' ({} bytes)", &v[..cut], v.len()),
    }
}

/// A configuration error with its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    /// The key (or section) concerned; empty if none.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, self.line, self.key, self.message
            )
        }
    }
}

/// Reads and parses a file: the one way `check`, `run` and the reload at SIGHUP read their
/// configuration. A file that cannot be read as a configuration (not a regular file, over
/// 4 MiB, not UTF-8) is one error, at line 0 or at the line of its first byte that is not
/// UTF-8.
pub fn load(path: &str) -> Result<Config, Vec<ConfigError>> {
    match read_text(path) {
        Ok(text) => parse_str(path, &text),
        Err((line, message)) => Err(vec![ConfigError {
            file: path.to_string(),
            line,
            key: String::new(),
            message,
        }]),
    }
}

/// Raw channel section before validation.
pub(super) struct RawChannel {
    pub(super) name: String,
    pub(super) line: usize,
    /// Key, value and line of each key, in file order.
    pub(super) keys: Vec<(String, String, usize)>,
}

/// Parses configuration text; `file` names it in errors.
pub fn parse_str(file: &str, text: &str) -> Result<Config, Vec<ConfigError>> {
    let mut errs: Vec<ConfigError> = Vec::new();
    let err = |errs: &mut Vec<ConfigError>, line: usize, key: &str, msg: String| {
        errs.push(ConfigError {
            file: file.to_string(),
            line,
            // No key is this long: an unknown one is cut like a value.
            key: if key.chars().count() > SHOWN_CHARS {
                quote(key)
            } else {
                key.to_string()
            },
            message: msg,
        })
    };
    enum Section {
        None,
        Global,
        Channel(usize),
        Skip,
    }
    let mut section = Section::None;
    let mut global_keys: Vec<(String, String, usize)> = Vec::new();
    let mut seen_global = false;
    let mut channels: Vec<RawChannel> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        if let Some(inner) = content.strip_prefix('[') {
            let Some(inner) = inner.strip_suffix(']') else {
                err(
                    &mut errs,
                    line,
                    "",
                    format!("section header {} lacks ']'", quote(content)),
                );
                section = Section::Skip;
                continue;
            };
            let mut words = inner.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("global"), None, _) => {
                    if seen_global {
                        err(
                            &mut errs,
                            line,
                            "[global]",
                            "a second [global] section".into(),
                        );
                    }
                    seen_global = true;
                    section = Section::Global;
                }
                (Some("channel"), Some(name), None) => {
                    if !valid_channel_name(name) {
                        err(
                            &mut errs,
                            line,
                            "[channel]",
                            format!(
                                "channel name {} must be 1-64 of A-Z a-z 0-9 _ . - and not start with '.'",
                                quote(name)
                            ),
                        );
                        section = Section::Skip;
                    } else if let Some(prev) = channels.iter().find(|c| c.name == name) {
                        err(
                            &mut errs,
                            line,
                            "[channel]",
                            format!(
                                "channel {} is already defined at line {}",
                                quote(name),
                                prev.line
                            ),
                        );
                        section = Section::Skip;
                    } else {
                        channels.push(RawChannel {
                            name: name.to_string(),
                            line,
                            keys: Vec::new(),
                        });
                        section = Section::Channel(channels.len() - 1);
                    }
                }
                (Some("channel"), None, _) => {
                    err(
                        &mut errs,
                        line,
                        "[channel]",
                        "a channel needs a name: [channel NAME]".into(),
                    );
                    section = Section::Skip;
                }
                _ => {
                    err(
                        &mut errs,
                        line,
                        "",
                        format!(
                            "unknown section {} (sections: [global], [channel NAME])",
                            quote(&format!("[{inner}]"))
                        ),
                    );
                    section = Section::Skip;
                }
            }
            continue;
        }
        let Some((k, v)) = content.split_once('=') else {
            err(
                &mut errs,
                line,
                "",
                format!("expected 'key = value', found {}", quote(content)),
            );
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            err(&mut errs, line, "", "missing key before '='".into());
            continue;
        }
        match section {
            Section::None => err(
                &mut errs,
                line,
                k,
                "key outside any section (start with [global] or [channel NAME])".into(),
            ),
            Section::Skip => {}
            Section::Global => {
                if !GLOBAL_KEYS.contains(&k) {
                    let hint = if CHANNEL_KEYS.contains(&k) {
                        " (it belongs in a [channel] section)".to_string()
                    } else {
                        suggest(k, GLOBAL_KEYS)
                    };
                    err(&mut errs, line, k, format!("unknown key in [global]{hint}"));
                } else if let Some((_, _, l)) = global_keys.iter().find(|(gk, _, _)| gk == k) {
                    err(&mut errs, line, k, format!("set twice (first at line {l})"));
                } else {
                    global_keys.push((k.to_string(), v.to_string(), line));
                }
            }
            Section::Channel(ci) => {
                let ch = &mut channels[ci];
                if !CHANNEL_KEYS.contains(&k) {
                    let hint = if GLOBAL_KEYS.contains(&k) {
                        " (it belongs in [global])".to_string()
                    } else {
                        suggest(k, CHANNEL_KEYS)
                    };
                    err(
                        &mut errs,
                        line,
                        k,
                        format!("unknown key in [channel {}]{hint}", ch.name),
                    );
                } else if k != "output" && ch.keys.iter().any(|(ck, _, _)| ck == k) {
                    let l = ch
                        .keys
                        .iter()
                        .find(|(ck, _, _)| ck == k)
                        .map(|x| x.2)
                        .unwrap_or(0);
                    err(&mut errs, line, k, format!("set twice (first at line {l})"));
                } else {
                    ch.keys.push((k.to_string(), v.to_string(), line));
                }
            }
        }
    }

    let global = parse_global(&global_keys, &mut |line, key, msg| {
        err(&mut errs, line, key, msg)
    });
    let mut out_channels = Vec::new();
    for rc in &channels {
        if let Some(c) = parse_channel(rc, &global, &mut |line, key, msg| {
            err(&mut errs, line, key, msg)
        }) {
            out_channels.push(c);
        }
    }
    if channels.is_empty() && errs.is_empty() {
        err(
            &mut errs,
            text.lines().count().max(1),
            "",
            "no [channel NAME] section: nothing to relay".into(),
        );
    }
    check_conflicts(&out_channels, &mut |line, key, msg| {
        err(&mut errs, line, key, msg)
    });
    if errs.is_empty() {
        Ok(Config {
            file: file.to_string(),
            global,
            channels: out_channels,
        })
    } else {
        errs.sort_by_key(|e| e.line);
        Err(errs)
    }
}

/// Builds the one-channel configuration of `ringrelay run --input URL --output URL...`.
pub fn from_cli(input: &str, outputs: &[String]) -> Result<Config, Vec<ConfigError>> {
    let mut text = String::from("[channel default]\n");
    text.push_str(&format!("input = {input}\n"));
    for o in outputs {
        text.push_str(&format!("output = {o}\n"));
    }
    parse_str("<command line>", &text)
}

fn valid_channel_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && !n.starts_with('.')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn suggest(k: &str, keys: &[&str]) -> String {
    let close = keys.iter().find(|cand| {
        let d = edit_distance(k, cand);
        d <= 2 && d < cand.len()
    });
    match close {
        Some(c) => format!(" (did you mean {}?)", quote(c)),
        None => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
