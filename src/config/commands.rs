//! The `commands` channel key: what becomes of the bytes subscribers send back toward the
//! relay (rtl_tcp clients send 5-byte tuning commands; most subscribers send nothing).
//!
//! Owns: the key's values and names only. How the bytes are read, and forwarded to the
//! producer, is `crate::engine::commands`'s. Pure.

use crate::config::parse::quote;

/// What the relay does with the bytes its subscribers send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Commands {
    /// Read and discarded (the default): a subscriber that talks never fills its socket, and
    /// its connection ends with a FIN, not a reset.
    #[default]
    Discard,
    /// The first connected subscriber's bytes (the earliest still connected, of any listening
    /// output of the channel) are written to the producer; the others' are discarded.
    First,
}

impl Commands {
    pub fn parse(v: &str) -> Result<Commands, String> {
        match v {
            "discard" => Ok(Commands::Discard),
            "first" => Ok(Commands::First),
            _ => Err(format!("{} is not one of discard, first", quote(v))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Commands::Discard => "discard",
            Commands::First => "first",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for c in [Commands::Discard, Commands::First] {
            assert_eq!(Commands::parse(c.name()), Ok(c));
        }
        assert!(Commands::parse("all").is_err());
        assert!(Commands::parse("none").is_err());
        assert_eq!(Commands::default(), Commands::Discard);
    }
}
