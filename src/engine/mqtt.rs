//! MQTT 3.1.1 on the wire: the packets an `mqtt://` output sends and the ones it reads back.
//!
//! Owns: encoding CONNECT, the fixed and variable header of a PUBLISH (its payload stays in the
//! pool buffer it arrived in, sent after the header by a gathered write), PINGREQ and
//! DISCONNECT; decoding what a broker sends a publishing client (CONNACK, PUBACK, PINGRESP),
//! incrementally, from whatever bytes a read returned; and the checks on a topic and a client
//! id. Pure: no I/O, no clock. The decoder is fuzzed (`fuzz/fuzz_targets/mqtt.rs`).
//!
//! A broker that sends anything else, a malformed length, or a packet larger than a client
//! that never subscribes can receive, is a protocol error: the caller drops the connection.

use std::fmt;

/// Packet types (the high nibble of the first byte).
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;

/// The largest remaining length the format can express (four length bytes).
pub const MAX_REMAINING: usize = 268_435_455;
/// The longest header a PUBLISH of this client takes: one type byte, four length bytes, the
/// topic's two length bytes and up to 65,535 topic bytes, and a packet id.
pub const MAX_PUBLISH_HEADER: usize = 1 + 4 + 2 + 65_535 + 2;

/// Quality of service of the messages an output publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    /// At most once: nothing comes back.
    AtMostOnce,
    /// At least once: each message is held until its PUBACK.
    AtLeastOnce,
}

/// What a CONNECT says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect<'a> {
    pub client_id: &'a str,
    pub keepalive_secs: u16,
    pub clean_session: bool,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
}

/// A packet a broker sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// The answer to CONNECT: `code` 0 is accepted.
    ConnAck { session_present: bool, code: u8 },
    /// A QoS 1 PUBLISH was stored by the broker.
    PubAck { id: u16 },
    /// The answer to PINGREQ.
    PingResp,
}

/// Why the broker's bytes cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// A remaining length over four bytes.
    BadLength,
    /// A packet type a publishing client never receives, with its first byte.
    Unexpected(u8),
    /// A packet of a known type with the wrong flags or length.
    Malformed(&'static str),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadLength => write!(f, "a packet length longer than four bytes"),
            ProtocolError::Unexpected(b) => {
                write!(
                    f,
                    "an unexpected packet (type {}, first byte {b:#04x})",
                    b >> 4
                )
            }
            ProtocolError::Malformed(what) => write!(f, "a malformed {what}"),
        }
    }
}

/// Why a CONNECT was refused, from its return code.
pub fn connack_reason(code: u8) -> &'static str {
    match code {
        0 => "accepted",
        1 => "unacceptable protocol version (the broker does not speak MQTT 3.1.1)",
        2 => "client id rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown return code",
    }
}

/// Appends the remaining-length encoding of `n` (1 to 4 bytes).
fn put_len(out: &mut Vec<u8>, mut n: usize) {
    debug_assert!(n <= MAX_REMAINING);
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Checks a topic to publish to: 1 to 65,535 bytes of UTF-8, no wildcard (`+`, `#`) and no
/// NUL. A topic starting with `$` is reserved for the broker.
pub fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("the topic is empty".into());
    }
    if t.len() > 65_535 {
        return Err(format!("the topic is {} bytes, over 65535", t.len()));
    }
    if let Some(c) = t.chars().find(|&c| c == '+' || c == '#' || c == '\0') {
        return Err(format!(
            "the topic holds {c:?}: wildcards and NUL are for subscribers, not publishers"
        ));
    }
    if t.starts_with('$') {
        return Err("topics starting with '$' are the broker's".into());
    }
    Ok(())
}

/// Checks a client id: at most 65,535 bytes and no NUL. Every broker must take 1 to 23
/// letters and digits (MQTT 3.1.1, 3.1.3.1); most take more, and one that does not answers
/// CONNACK code 2, which the output logs by name. An empty id asks the broker to choose one
/// and needs a clean session: the caller checks that.
pub fn check_client_id(id: &str) -> Result<(), String> {
    if id.len() > 65_535 {
        return Err(format!("client_id is {} bytes, over 65535", id.len()));
    }
    if id.contains('\0') {
        return Err("client_id holds a NUL".into());
    }
    Ok(())
}

/// Encodes a CONNECT (protocol level 4, no will).
pub fn encode_connect(c: &Connect, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(32 + c.client_id.len());
    put_str(&mut body, b"MQTT");
    body.push(4);
    let mut flags = 0u8;
    if c.clean_session {
        flags |= 0x02;
    }
    if c.username.is_some() {
        flags |= 0x80;
        if c.password.is_some() {
            flags |= 0x40;
        }
    }
    body.push(flags);
    body.extend_from_slice(&c.keepalive_secs.to_be_bytes());
    put_str(&mut body, c.client_id.as_bytes());
    if let Some(u) = c.username {
        put_str(&mut body, u.as_bytes());
        if let Some(p) = c.password {
            put_str(&mut body, p);
        }
    }
    out.push(CONNECT << 4);
    put_len(out, body.len());
    out.extend_from_slice(&body);
}

/// Encodes everything of a PUBLISH before its payload of `payload_len` bytes; `id` is the
/// packet id of a QoS 1 message (never 0). Returns `None` when the packet would be longer
/// than the format allows.
pub fn encode_publish_header(
    topic: &str,
    qos: Qos,
    retain: bool,
    dup: bool,
    id: u16,
    payload_len: usize,
    out: &mut Vec<u8>,
) -> Option<()> {
    let id_len = if qos == Qos::AtLeastOnce { 2 } else { 0 };
    let remaining = 2 + topic.len() + id_len + payload_len;
    if remaining > MAX_REMAINING {
        return None;
    }
    let mut b0 = PUBLISH << 4;
    if qos == Qos::AtLeastOnce {
        debug_assert!(id != 0);
        b0 |= 0x02;
        if dup {
            b0 |= 0x08;
        }
    }
    if retain {
        b0 |= 0x01;
    }
    out.push(b0);
    put_len(out, remaining);
    put_str(out, topic.as_bytes());
    if qos == Qos::AtLeastOnce {
        out.extend_from_slice(&id.to_be_bytes());
    }
    Some(())
}

/// A PINGREQ.
pub const PINGREQ_BYTES: [u8; 2] = [PINGREQ << 4, 0];
/// A DISCONNECT.
pub const DISCONNECT_BYTES: [u8; 2] = [DISCONNECT << 4, 0];

/// Decodes the next packet from the front of `buf`: `Ok(None)` when more bytes are needed,
/// else the packet and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Incoming, usize)>, ProtocolError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    // Reject a type this client never receives at its first byte, before its length: a
    // stream of junk is refused at once rather than after megabytes of "body".
    match b0 >> 4 {
        CONNACK | PUBACK | PINGRESP => {}
        _ => return Err(ProtocolError::Unexpected(b0)),
    }
    let mut len = 0usize;
    let mut mult = 1usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len += usize::from(b & 0x7f) * mult;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i == 5 {
            return Err(ProtocolError::BadLength);
        }
        mult *= 128;
    }
    let (want, name) = match b0 >> 4 {
        CONNACK => (2, "CONNACK"),
        PUBACK => (2, "PUBACK"),
        _ => (0, "PINGRESP"),
    };
    // Fixed flags are 0 for all three, and each has a fixed length.
    if b0 & 0x0f != 0 || len != want {
        return Err(ProtocolError::Malformed(name));
    }
    if buf.len() < i + len {
        return Ok(None);
    }
    let body = &buf[i..i + len];
    let p = match b0 >> 4 {
        CONNACK => {
            if body[0] & 0xfe != 0 {
                return Err(ProtocolError::Malformed("CONNACK"));
            }
            Incoming::ConnAck {
                session_present: body[0] & 1 == 1,
                code: body[1],
            }
        }
        PUBACK => Incoming::PubAck {
            id: u16::from_be_bytes([body[0], body[1]]),
        },
        _ => Incoming::PingResp,
    };
    Ok(Some((p, i + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_of(n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        put_len(&mut v, n);
        v
    }

    #[test]
    fn remaining_length_matches_the_spec_table() {
        // MQTT 3.1.1, 2.2.3: the boundaries of one to four length bytes.
        assert_eq!(len_of(0), [0x00]);
        assert_eq!(len_of(127), [0x7f]);
        assert_eq!(len_of(128), [0x80, 0x01]);
        assert_eq!(len_of(16_383), [0xff, 0x7f]);
        assert_eq!(len_of(16_384), [0x80, 0x80, 0x01]);
        assert_eq!(len_of(2_097_151), [0xff, 0xff, 0x7f]);
        assert_eq!(len_of(2_097_152), [0x80, 0x80, 0x80, 0x01]);
        assert_eq!(len_of(MAX_REMAINING), [0xff, 0xff, 0xff, 0x7f]);
    }

    #[test]
    fn connect_with_user_and_password() {
        let mut out = Vec::new();
        encode_connect(
            &Connect {
                client_id: "pi7",
                keepalive_secs: 30,
                clean_session: true,
                username: Some("u"),
                password: Some(b"pw"),
            },
            &mut out,
        );
        let want: Vec<u8> = [
            &[0x10, 22][..],
            &[0, 4, b'M', b'Q', b'T', b'T', 4, 0xc2, 0, 30],
            &[0, 3, b'p', b'i', b'7'],
            &[0, 1, b'u'],
            &[0, 2, b'p', b'w'],
        ]
        .concat();
        assert_eq!(out, want);
    }

    #[test]
    fn connect_without_credentials_keeps_the_session() {
        let mut out = Vec::new();
        let c = Connect {
            client_id: "a",
            keepalive_secs: 0,
            clean_session: false,
            username: None,
            password: None,
        };
        encode_connect(&c, &mut out);
        assert_eq!(out[9], 0x00, "no flags");
        assert_eq!(out.len(), 2 + 10 + 3);
    }

    #[test]
    fn publish_header_qos0_and_qos1() {
        let mut h = Vec::new();
        encode_publish_header("a/b", Qos::AtMostOnce, false, false, 0, 5, &mut h).unwrap();
        assert_eq!(h, [0x30, 10, 0, 3, b'a', b'/', b'b']);
        h.clear();
        encode_publish_header("a/b", Qos::AtLeastOnce, true, true, 0x1234, 200, &mut h).unwrap();
        assert_eq!(h, [0x3b, 0xcf, 0x01, 0, 3, b'a', b'/', b'b', 0x12, 0x34]);
        h.clear();
        assert!(encode_publish_header(
            "t",
            Qos::AtMostOnce,
            false,
            false,
            0,
            MAX_REMAINING,
            &mut h
        )
        .is_none());
        assert!(h.len() <= MAX_PUBLISH_HEADER);
    }

    #[test]
    fn decodes_what_a_broker_sends_in_any_split() {
        let stream = [0x20, 2, 1, 0, 0x40, 2, 0xab, 0xcd, 0xd0, 0];
        let want = [
            Incoming::ConnAck {
                session_present: true,
                code: 0,
            },
            Incoming::PubAck { id: 0xabcd },
            Incoming::PingResp,
        ];
        // Fed one byte more at a time, the decoder waits and then takes each packet whole.
        let mut got = Vec::new();
        let mut have: Vec<u8> = Vec::new();
        for &b in &stream {
            have.push(b);
            while let Some((p, n)) = decode(&have).unwrap() {
                got.push(p);
                have.drain(..n);
            }
        }
        assert_eq!(got, want);
        assert!(have.is_empty());
    }

    #[test]
    fn refuses_what_a_publisher_never_receives() {
        assert_eq!(decode(&[0x30, 0]), Err(ProtocolError::Unexpected(0x30)));
        assert_eq!(decode(&[0x00]), Err(ProtocolError::Unexpected(0)));
        assert_eq!(
            decode(&[0x21, 2, 0, 0]),
            Err(ProtocolError::Malformed("CONNACK"))
        );
        assert_eq!(
            decode(&[0x20, 3, 0, 0, 0]),
            Err(ProtocolError::Malformed("CONNACK"))
        );
        assert_eq!(
            decode(&[0x20, 2, 2, 0]),
            Err(ProtocolError::Malformed("CONNACK"))
        );
        assert_eq!(
            decode(&[0xd0, 1, 0]),
            Err(ProtocolError::Malformed("PINGRESP"))
        );
        assert_eq!(
            decode(&[0x40, 0xff, 0xff, 0xff, 0xff, 1]),
            Err(ProtocolError::BadLength)
        );
        assert_eq!(decode(&[0x40, 0x80]), Ok(None));
    }

    #[test]
    fn topic_and_client_id_rules() {
        assert!(check_topic("site/pi7/gps").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("a/+/b").is_err());
        assert!(check_topic("a/#").is_err());
        assert!(check_topic("$SYS/x").is_err());
        assert!(check_topic("a\0b").is_err());
        assert!(check_client_id("ringrelay-pi7").is_ok());
        assert!(check_client_id("").is_ok());
        assert!(check_client_id("a-client-id-longer-than-23-bytes").is_ok());
        assert!(check_client_id("a\0b").is_err());
    }

    #[test]
    fn constants_are_the_spec_bytes() {
        assert_eq!(PINGREQ_BYTES, [0xc0, 0]);
        assert_eq!(DISCONNECT_BYTES, [0xe0, 0]);
    }
}
